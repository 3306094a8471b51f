#include "colmena/ohlcv_validation.hpp"

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <limits>
#include <system_error>
#include <utility>

namespace colmena {
namespace {

constexpr double kInfinity = std::numeric_limits<double>::infinity();
// Rows per block of the fast pass: 6 columns x 1024 rows x 8 bytes = 48 KiB, about L1/L2 size.
constexpr std::size_t kBlockRows = 1024;

// Branch-free per-row predicates: every comparison with NaN is false, so NaN fails them all.
inline bool price_ok(double x) noexcept { return (x > 0.0) & (x < kInfinity); }

inline bool values_ok(double o, double h, double l, double c, double v) noexcept {
  return price_ok(o) & price_ok(h) & price_ok(l) & price_ok(c) & (v >= 0.0) & (v < kInfinity) &
         (h >= l) & (o >= l) & (o <= h) & (c >= l) & (c <= h);
}

// The slow, ordered check of one row; defines which rule is reported when several fail.
std::optional<OhlcvViolation> check_row(const Candle& c, std::size_t row, bool has_previous,
                                        std::int64_t previous_ts,
                                        bool previous_is_stored) noexcept {
  OhlcvViolation v;
  v.row = row;
  v.candle = c;
  v.previous_ts = previous_ts;
  auto fail = [&](OhlcvField field, OhlcvRule rule) {
    v.field = field;
    v.rule = rule;
    return std::optional<OhlcvViolation>(v);
  };
  if (has_previous && !(c.ts > previous_ts)) {
    return fail(OhlcvField::ts,
                previous_is_stored ? OhlcvRule::ts_not_after_stored : OhlcvRule::ts_not_increasing);
  }
  const std::pair<OhlcvField, double> prices[] = {{OhlcvField::open, c.open},
                                                  {OhlcvField::high, c.high},
                                                  {OhlcvField::low, c.low},
                                                  {OhlcvField::close, c.close}};
  for (const auto& [field, x] : prices) {
    if (!(x > -kInfinity && x < kInfinity)) return fail(field, OhlcvRule::price_not_finite);
    if (!(x > 0.0)) return fail(field, OhlcvRule::price_not_positive);
  }
  if (!(c.volume > -kInfinity && c.volume < kInfinity)) {
    return fail(OhlcvField::volume, OhlcvRule::volume_not_finite);
  }
  if (!(c.volume >= 0.0)) return fail(OhlcvField::volume, OhlcvRule::volume_negative);
  if (!(c.high >= c.low)) return fail(OhlcvField::high, OhlcvRule::high_below_low);
  if (!(c.open >= c.low && c.open <= c.high)) {
    return fail(OhlcvField::open, OhlcvRule::open_outside_range);
  }
  if (!(c.close >= c.low && c.close <= c.high)) {
    return fail(OhlcvField::close, OhlcvRule::close_outside_range);
  }
  return std::nullopt;
}

// True when every row in [begin, end) passes; rows >= 1 compare ts with the row before. Two flat
// loops with no branches: the price/volume loop vectorises on the SSE2 baseline (an accumulator
// of doubles selected by the mask); the ts loop stays scalar (SSE2 has no 64-bit integer compare)
// and re-reads the block from cache.
bool block_ok(const OhlcvColumns& c, std::size_t begin, std::size_t end) noexcept {
  const std::int64_t* __restrict ts = c.ts;
  const double* __restrict open = c.open;
  const double* __restrict high = c.high;
  const double* __restrict low = c.low;
  const double* __restrict close = c.close;
  const double* __restrict volume = c.volume;
  double bad_values = 0.0;
  for (std::size_t i = begin; i < end; ++i) {
    bad_values = values_ok(open[i], high[i], low[i], close[i], volume[i]) ? bad_values : 1.0;
  }
  std::uint64_t bad_ts = 0;
  for (std::size_t i = begin; i < end; ++i) {
    bad_ts |= static_cast<std::uint64_t>(ts[i] <= ts[i - 1]);
  }
  return (bad_values == 0.0) & (bad_ts == 0);
}

// Civil date from days since 1970-01-01 (H. Hinnant's algorithm, proleptic Gregorian).
void civil_from_days(std::int64_t z, std::int64_t& y, unsigned& m, unsigned& d) noexcept {
  z += 719468;
  const std::int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  const auto doe = static_cast<unsigned>(z - era * 146097);
  const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const unsigned mp = (5 * doy + 2) / 153;
  d = doy - (153 * mp + 2) / 5 + 1;
  m = mp < 10 ? mp + 3 : mp - 9;
  y = static_cast<std::int64_t>(yoe) + era * 400 + (m <= 2 ? 1 : 0);
}

}  // namespace

std::optional<OhlcvViolation> find_invalid_ohlcv(
    const OhlcvColumns& columns, std::optional<std::int64_t> newest_stored) noexcept {
  const std::size_t n = columns.size;
  if (n == 0) return std::nullopt;
  if (auto v = check_row(columns.row(0), 0, newest_stored.has_value(), newest_stored.value_or(0),
                         true)) {
    return v;
  }
  for (std::size_t begin = 1; begin < n; begin += kBlockRows) {
    const std::size_t end = std::min(n, begin + kBlockRows);
    if (block_ok(columns, begin, end)) continue;
    for (std::size_t i = begin; i < end; ++i) {
      if (auto v = check_row(columns.row(i), i, true, columns.ts[i - 1], false)) return v;
    }
  }
  return std::nullopt;
}

std::optional<OhlcvViolation> find_invalid_candle(
    const Candle& candle, std::optional<std::int64_t> newest_stored) noexcept {
  const bool ts_ok = !newest_stored || candle.ts > *newest_stored;
  if (ts_ok & values_ok(candle.open, candle.high, candle.low, candle.close, candle.volume)) {
    return std::nullopt;
  }
  return check_row(candle, 0, newest_stored.has_value(), newest_stored.value_or(0), true);
}

const char* field_name(OhlcvField field) noexcept {
  switch (field) {
    case OhlcvField::ts:
      return "ts";
    case OhlcvField::open:
      return "open";
    case OhlcvField::high:
      return "high";
    case OhlcvField::low:
      return "low";
    case OhlcvField::close:
      return "close";
    case OhlcvField::volume:
      return "volume";
  }
  return "unknown";
}

const char* rule_name(OhlcvRule rule) noexcept {
  switch (rule) {
    case OhlcvRule::ts_not_increasing:
      return "ts_not_increasing";
    case OhlcvRule::ts_not_after_stored:
      return "ts_not_after_stored";
    case OhlcvRule::price_not_finite:
      return "price_not_finite";
    case OhlcvRule::price_not_positive:
      return "price_not_positive";
    case OhlcvRule::volume_not_finite:
      return "volume_not_finite";
    case OhlcvRule::volume_negative:
      return "volume_negative";
    case OhlcvRule::high_below_low:
      return "high_below_low";
    case OhlcvRule::open_outside_range:
      return "open_outside_range";
    case OhlcvRule::close_outside_range:
      return "close_outside_range";
  }
  return "unknown";
}

double OhlcvViolation::value() const noexcept {
  switch (field) {
    case OhlcvField::ts:
      return static_cast<double>(candle.ts);
    case OhlcvField::open:
      return candle.open;
    case OhlcvField::high:
      return candle.high;
    case OhlcvField::low:
      return candle.low;
    case OhlcvField::close:
      return candle.close;
    case OhlcvField::volume:
      return candle.volume;
  }
  return 0.0;
}

std::string format_double(double value) {
  char buf[64];
  const auto result = std::to_chars(buf, buf + sizeof(buf), value);
  std::string text(buf, result.ptr);
  // Python writes integral doubles with a trailing ".0"; to_chars does not.
  if (text.find_first_not_of("-0123456789") == std::string::npos) text += ".0";
  return text;
}

std::string format_timestamp_ns(std::int64_t ts) {
  constexpr std::int64_t kNsPerSecond = 1'000'000'000;
  constexpr std::int64_t kSecondsPerDay = 86'400;
  std::int64_t seconds = ts / kNsPerSecond;
  std::int64_t nanos = ts % kNsPerSecond;
  if (nanos < 0) {
    nanos += kNsPerSecond;
    seconds -= 1;
  }
  std::int64_t days = seconds / kSecondsPerDay;
  std::int64_t second_of_day = seconds % kSecondsPerDay;
  if (second_of_day < 0) {
    second_of_day += kSecondsPerDay;
    days -= 1;
  }
  std::int64_t year = 0;
  unsigned month = 0;
  unsigned day = 0;
  civil_from_days(days, year, month, day);
  char buf[96];
  int len = std::snprintf(
      buf, sizeof(buf), "%lld (%04lld-%02u-%02uT%02lld:%02lld:%02lld", static_cast<long long>(ts),
      static_cast<long long>(year), month, day, static_cast<long long>(second_of_day / 3600),
      static_cast<long long>(second_of_day / 60 % 60), static_cast<long long>(second_of_day % 60));
  std::string text(buf, static_cast<std::size_t>(std::max(len, 0)));
  if (nanos != 0) {
    std::snprintf(buf, sizeof(buf), ".%09lld", static_cast<long long>(nanos));
    std::string fraction(buf);
    fraction.erase(fraction.find_last_not_of('0') + 1);
    text += fraction;
  }
  text += "Z)";
  return text;
}

std::string OhlcvViolation::describe(bool with_row) const {
  std::string text = with_row ? "row " + std::to_string(row) + ": " : std::string();
  const std::string name = field_name(field);
  const std::string shown = field == OhlcvField::ts ? "" : " (" + format_double(value()) + ")";
  switch (rule) {
    case OhlcvRule::ts_not_increasing:
      text += "ts " + format_timestamp_ns(candle.ts) +
              (candle.ts == previous_ts ? " duplicates" : " is not after") +
              " the previous row's ts " + format_timestamp_ns(previous_ts);
      break;
    case OhlcvRule::ts_not_after_stored:
      text += "ts " + format_timestamp_ns(candle.ts) + " is not after the newest stored ts " +
              format_timestamp_ns(previous_ts);
      break;
    case OhlcvRule::price_not_finite:
    case OhlcvRule::volume_not_finite:
      text += name + shown + " is not finite";
      break;
    case OhlcvRule::price_not_positive:
      text += name + shown + " is not > 0";
      break;
    case OhlcvRule::volume_negative:
      text += name + shown + " is < 0";
      break;
    case OhlcvRule::high_below_low:
      text += name + shown + " < low (" + format_double(candle.low) + ")";
      break;
    case OhlcvRule::open_outside_range:
    case OhlcvRule::close_outside_range:
      text += name + shown + " is outside [low (" + format_double(candle.low) + "), high (" +
              format_double(candle.high) + ")]";
      break;
  }
  return text;
}

OhlcvValidationError::OhlcvValidationError(const std::string& context,
                                           const OhlcvViolation& violation, bool with_row)
    : std::invalid_argument(context + ": " + violation.describe(with_row)), violation_(violation) {}

}  // namespace colmena
