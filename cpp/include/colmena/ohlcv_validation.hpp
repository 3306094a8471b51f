#pragma once
/// Validation rules for OHLCV candles, shared by MarketBuffer and the file loaders.
///
/// Units everywhere: ts is the candle's open time in nanoseconds since the Unix epoch (UTC);
/// open, high, low and close are prices in the quote currency; volume is in the base currency.
///
/// Rules, checked per row in this order (the first failing rule of the first failing row is
/// reported):
///   1. ts strictly greater than the previous row's ts; for row 0, strictly greater than the
///      newest timestamp already stored (when there is one).
///   2. open, high, low, close finite and > 0.
///   3. volume finite and >= 0.
///   4. high >= low.
///   5. low <= open <= high.
///   6. low <= close <= high.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>

namespace colmena {

/// One candle. Units as in the file comment.
struct Candle {
  std::int64_t ts = 0;  ///< open time, ns since epoch UTC
  double open = 0.0;    ///< quote currency
  double high = 0.0;    ///< quote currency
  double low = 0.0;     ///< quote currency
  double close = 0.0;   ///< quote currency
  double volume = 0.0;  ///< base currency
};

/// Borrowed column-wise candles: every pointer addresses `size` contiguous elements
/// ([n_rows]); pointers may be null only when size == 0. Nothing is owned.
struct OhlcvColumns {
  const std::int64_t* ts = nullptr;  ///< [n_rows] ns since epoch UTC
  const double* open = nullptr;      ///< [n_rows] quote currency
  const double* high = nullptr;      ///< [n_rows] quote currency
  const double* low = nullptr;       ///< [n_rows] quote currency
  const double* close = nullptr;     ///< [n_rows] quote currency
  const double* volume = nullptr;    ///< [n_rows] base currency
  std::size_t size = 0;              ///< n_rows

  /// Row i as a Candle (i < size).
  Candle row(std::size_t i) const noexcept {
    return Candle{ts[i], open[i], high[i], low[i], close[i], volume[i]};
  }
};

/// The field a violation is about.
enum class OhlcvField : std::uint8_t { ts, open, high, low, close, volume };

/// The rule a violation breaks (see the file comment for the order).
enum class OhlcvRule : std::uint8_t {
  ts_not_increasing,    ///< ts <= previous row's ts
  ts_not_after_stored,  ///< row 0's ts <= newest timestamp already stored
  price_not_finite,     ///< a price is NaN or infinite
  price_not_positive,   ///< a price is <= 0
  volume_not_finite,    ///< volume is NaN or infinite
  volume_negative,      ///< volume < 0
  high_below_low,       ///< high < low
  open_outside_range,   ///< open outside [low, high]
  close_outside_range,  ///< close outside [low, high]
};

/// The first bad row of a batch and why it is bad.
struct OhlcvViolation {
  std::size_t row = 0;  ///< 0-based row index within the batch
  OhlcvField field = OhlcvField::ts;
  OhlcvRule rule = OhlcvRule::ts_not_increasing;
  Candle candle;                 ///< the whole offending row
  std::int64_t previous_ts = 0;  ///< ts it had to exceed (ts rules only)

  /// The offending value as a double (ts converted; exact for |ts| < 2^53).
  double value() const noexcept;
  /// "row 17: high (101.5) < low (102.0)"; without the "row N: " prefix when with_row is false.
  std::string describe(bool with_row = true) const;
};

/// Lower-case field name: "ts", "open", "high", "low", "close", "volume".
const char* field_name(OhlcvField field) noexcept;
/// Rule name in snake case, e.g. "high_below_low".
const char* rule_name(OhlcvRule rule) noexcept;

/// Find the first row of `columns` that breaks a rule, in one pass over the data.
///
/// `newest_stored` is the newest timestamp already stored before this batch (ns since epoch
/// UTC), or nullopt when nothing is stored. Returns nullopt when every row is valid. Runs at
/// memory speed: blocks of rows are checked with branch-free, vectorisable code and only a
/// block that contains a bad row is rescanned row by row.
std::optional<OhlcvViolation> find_invalid_ohlcv(
    const OhlcvColumns& columns, std::optional<std::int64_t> newest_stored) noexcept;

/// Check a single candle against the same rules (the push path).
std::optional<OhlcvViolation> find_invalid_candle(
    const Candle& candle, std::optional<std::int64_t> newest_stored) noexcept;

/// Thrown for invalid candles (a std::invalid_argument, so Python sees a ValueError).
class OhlcvValidationError : public std::invalid_argument {
 public:
  /// what() is `context + ": " + violation.describe(with_row)`.
  OhlcvValidationError(const std::string& context, const OhlcvViolation& violation, bool with_row);
  const OhlcvViolation& violation() const noexcept { return violation_; }

 private:
  OhlcvViolation violation_;
};

/// Shortest text that reads back as the same double, Python-style ("102.0", "1e+22", "nan").
std::string format_double(double value);
/// "1677628800000000000 (2023-03-01T00:00:00Z)": ns since epoch with the UTC time.
std::string format_timestamp_ns(std::int64_t ts);

}  // namespace colmena
