// Market state: one per-window kernel for the batch and the stream (see market_state.hpp).
//
// This file is compiled with -ffp-contract=off (CMakeLists.txt): no multiply and add is fused
// behind the code's back, whatever the flags (COLMENA_NATIVE), so every number below is the
// plain IEEE sequence written here. The FFD dot product is the SIMD table's `dot`, whose order
// is fixed and the same at every level.
#include "colmena/market_state.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

#include "colmena/log_returns.hpp"
#include "colmena/parallel.hpp"
#include "colmena/simd_kernels.hpp"
#include "colmena/time_range.hpp"

namespace colmena {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr std::size_t kChunk = 8192;  // bars per parallel task

std::size_t chunks(std::size_t n) { return (n + kChunk - 1) / kChunk; }

// The rules a market-state candle must meet (ts, close, volume: rules 1-3 of
// ohlcv_validation.hpp); nullopt when it meets them.
std::optional<OhlcvViolation> find_invalid(std::int64_t ts, double close, double volume,
                                           std::size_t row, std::optional<std::int64_t> previous,
                                           bool previous_is_stored) noexcept {
  OhlcvViolation v;
  v.row = row;
  v.candle = Candle{ts, close, close, close, close, volume};
  v.previous_ts = previous.value_or(0);
  auto fail = [&](OhlcvField field, OhlcvRule rule) {
    v.field = field;
    v.rule = rule;
    return std::optional<OhlcvViolation>(v);
  };
  constexpr double inf = std::numeric_limits<double>::infinity();
  if (previous && !(ts > *previous)) {
    return fail(OhlcvField::ts,
                previous_is_stored ? OhlcvRule::ts_not_after_stored : OhlcvRule::ts_not_increasing);
  }
  if (!(close > -inf && close < inf)) return fail(OhlcvField::close, OhlcvRule::price_not_finite);
  if (!(close > 0.0)) return fail(OhlcvField::close, OhlcvRule::price_not_positive);
  if (!(volume > -inf && volume < inf)) {
    return fail(OhlcvField::volume, OhlcvRule::volume_not_finite);
  }
  if (!(volume >= 0.0)) return fail(OhlcvField::volume, OhlcvRule::volume_negative);
  return std::nullopt;
}

// sum_{k < n} term(k) in one fixed order: term k into chain k % 4 (ascending k, from 0.0), the
// chains added as (c0 + c1) + (c2 + c3). Four chains hide the latency of the adds.
template <typename Term>
inline double chained_sum(std::size_t n, Term term) noexcept {
  double c[4] = {0.0, 0.0, 0.0, 0.0};
  std::size_t k = 0;
  for (; k + 4 <= n; k += 4) {
    for (std::size_t i = 0; i < 4; ++i) c[i] += term(k + i);
  }
  for (std::size_t i = 0; k < n; ++k, ++i) c[i] += term(k);
  return (c[0] + c[1]) + (c[2] + c[3]);
}

// The per-bar inputs of the kernel, from one candle: identical calls in the batch and the
// stream.
inline double log_close_of(double close) noexcept { return std::log(close); }
inline double log_volume_of(double volume) noexcept { return std::log1p(volume); }

}  // namespace

// ------------------------------------------------------------------------------------ spec

std::size_t MarketStateSpec::lookback_bars() const noexcept {
  const std::size_t per_bar = std::max({ffd_weights.size(), volatility_bars + 1, volume_bars});
  return per_bar + state_bars - 1;
}

void MarketStateSpec::validate() const {
  if (ffd_weights.empty()) throw std::invalid_argument("MarketStateSpec: need at least 1 FFD weight");
  for (std::size_t k = 0; k < ffd_weights.size(); ++k) {
    if (!std::isfinite(ffd_weights[k])) {
      throw std::invalid_argument("MarketStateSpec: ffd_weights[" + std::to_string(k) +
                                  "] is not finite");
    }
  }
  if (volatility_bars < 2) {
    throw std::invalid_argument("MarketStateSpec: volatility_bars must be >= 2, got " +
                                std::to_string(volatility_bars));
  }
  if (volume_bars < 1) throw std::invalid_argument("MarketStateSpec: volume_bars must be >= 1");
  if (state_bars < 1) throw std::invalid_argument("MarketStateSpec: state_bars must be >= 1");
  if (bar_ns < 0) {
    throw std::invalid_argument("MarketStateSpec: bar_ns must be >= 0, got " +
                                std::to_string(bar_ns));
  }
}

std::uint64_t missing_bars(std::int64_t previous_ts, std::int64_t ts,
                           std::int64_t bar_ns) noexcept {
  if (bar_ns <= 0) return 0;
  // Exact for any previous_ts < ts (the difference of two int64 fits in uint64).
  const std::uint64_t step = static_cast<std::uint64_t>(ts) - static_cast<std::uint64_t>(previous_ts);
  const auto bar = static_cast<std::uint64_t>(bar_ns);
  return step > bar ? (step - 1) / bar : 0;
}

// ---------------------------------------------------------------------------------- kernel

MarketStateKernel::MarketStateKernel(const MarketStateSpec& spec) : spec_(spec) {
  spec_.validate();
  reversed_.assign(spec_.ffd_weights.rbegin(), spec_.ffd_weights.rend());
  lookback_ = spec_.lookback_bars();
}

void MarketStateKernel::features(std::size_t t, const double* log_close, const double* returns,
                                 const double* log_volume, double* out) const noexcept {
  const std::size_t w = reversed_.size();
  const std::size_t v = spec_.volatility_bars;
  const std::size_t m = spec_.volume_bars;
  out[0] = t >= 1 ? returns[0] : kNaN;
  out[1] = t + 1 >= w ? simd::kernels().dot(reversed_.data(), log_close - (w - 1), w) : kNaN;
  if (t >= v) {
    const double* r = returns - (v - 1);
    const double mean = chained_sum(v, [r](std::size_t k) { return r[k]; }) / static_cast<double>(v);
    const double squares = chained_sum(v, [r, mean](std::size_t k) {
      const double d = r[k] - mean;
      return d * d;
    });
    out[2] = std::sqrt(squares / static_cast<double>(v));
  } else {
    out[2] = kNaN;
  }
  if (t + 1 >= m) {
    const double* lv = log_volume - (m - 1);
    const double sum = chained_sum(m, [lv](std::size_t k) { return lv[k]; });
    out[3] = log_volume[0] - sum / static_cast<double>(m);
  } else {
    out[3] = kNaN;
  }
}

bool MarketStateKernel::valid(std::size_t t, const double* features,
                              std::size_t last_large_gap_row) const noexcept {
  // A gap at row g spoils bars g .. g + lookback - 2; with g = 0 (no gap) this is the warm-up.
  if (t - last_large_gap_row + 1 < lookback_) return false;
  for (std::size_t f = 0; f < kMarketFeatures; ++f) {
    if (!std::isfinite(features[f])) return false;
  }
  return true;
}

void regime_features(std::size_t t, const double* log_close, std::size_t lookback, double* trend,
                     double* volatility) noexcept {
  if (lookback == 0 || t < lookback) {
    *trend = kNaN;
    *volatility = kNaN;
    return;
  }
  const double* w = log_close - lookback;  // w[0 .. lookback]: bars t - lookback .. t
  const double sum = chained_sum(lookback, [w](std::size_t j) {
    const double d = w[j + 1] - w[j];
    return d * d;
  });
  const double vol = std::sqrt(sum / static_cast<double>(lookback));
  const double move = log_close[0] - w[0];
  *volatility = vol;
  *trend = vol > 0.0 ? move / (vol * std::sqrt(static_cast<double>(lookback))) : 0.0;
}

void standardize_rows(const double* x, std::size_t n_rows, const double* mean, const double* std,
                      float* out) noexcept {
  for (std::size_t r = 0; r < n_rows; ++r) {
    for (std::size_t f = 0; f < kMarketFeatures; ++f) {
      const std::size_t i = r * kMarketFeatures + f;
      out[i] = static_cast<float>((x[i] - mean[f]) / std[f]);
    }
  }
}

// ----------------------------------------------------------------------------------- batch

void market_state_batch(const std::int64_t* ts, const double* close, const double* volume,
                        std::size_t n, const MarketStateSpec& spec, double* features,
                        bool* valid) {
  const MarketStateKernel kernel(spec);
  for (std::size_t t = 0; t < n; ++t) {
    const std::optional<std::int64_t> previous =
        t > 0 ? std::optional<std::int64_t>(ts[t - 1]) : std::nullopt;
    if (auto bad = find_invalid(ts[t], close[t], volume[t], t, previous, false)) {
      throw OhlcvValidationError("market_state_batch", *bad, true);
    }
  }
  std::vector<double> log_close(n), returns(n), log_volume(n);
  parallel_for(chunks(n), [&](std::size_t c) {
    const std::size_t end = std::min(n, (c + 1) * kChunk);
    for (std::size_t t = c * kChunk; t < end; ++t) {
      log_close[t] = log_close_of(close[t]);
      returns[t] = t >= 1 ? log_return(close[t - 1], close[t]) : kNaN;
      log_volume[t] = log_volume_of(volume[t]);
    }
  });
  parallel_for(chunks(n), [&](std::size_t c) {
    const std::size_t end = std::min(n, (c + 1) * kChunk);
    for (std::size_t t = c * kChunk; t < end; ++t) {
      kernel.features(t, log_close.data() + t, returns.data() + t, log_volume.data() + t,
                      features + t * kMarketFeatures);
    }
  });
  std::size_t last_gap = 0;
  for (std::size_t t = 0; t < n; ++t) {
    if (t >= 1 && missing_bars(ts[t - 1], ts[t], spec.bar_ns) > spec.max_gap_bars) last_gap = t;
    valid[t] = kernel.valid(t, features + t * kMarketFeatures, last_gap);
  }
}

int regime_code(double trend, double volatility, double trend_threshold,
                double volatility_threshold) noexcept {
  if (!std::isfinite(trend) || !std::isfinite(volatility)) return -1;
  if (volatility >= volatility_threshold) return 3;
  if (trend <= -trend_threshold) return 1;  // before "up": with a zero threshold, 0 is "down"
  if (trend >= trend_threshold) return 0;
  return 2;
}

void regime_features_batch(const double* close, std::size_t n, const std::int64_t* rows,
                           std::size_t n_rows, std::size_t lookback, double* trend,
                           double* volatility) {
  if (lookback == 0) throw std::invalid_argument("regime_features: lookback must be >= 1");
  for (std::size_t i = 0; i < n_rows; ++i) {
    if (rows[i] >= 0 && static_cast<std::uint64_t>(rows[i]) >= n) {
      throw std::invalid_argument("regime_features: rows[" + std::to_string(i) + "] = " +
                                  std::to_string(rows[i]) + " is outside [0, " +
                                  std::to_string(n) + ")");
    }
  }
  std::vector<double> log_close(n);
  parallel_for(chunks(n), [&](std::size_t c) {
    const std::size_t end = std::min(n, (c + 1) * kChunk);
    for (std::size_t t = c * kChunk; t < end; ++t) log_close[t] = log_close_of(close[t]);
  });
  const std::size_t rows_per_task = std::max<std::size_t>(64, (std::size_t{1} << 20) / lookback);
  parallel_for((n_rows + rows_per_task - 1) / rows_per_task, [&](std::size_t c) {
    const std::size_t end = std::min(n_rows, (c + 1) * rows_per_task);
    for (std::size_t i = c * rows_per_task; i < end; ++i) {
      if (rows[i] < 0 || static_cast<std::size_t>(rows[i]) < lookback) {
        trend[i] = kNaN;
        volatility[i] = kNaN;
        continue;
      }
      const auto t = static_cast<std::size_t>(rows[i]);
      regime_features(t, log_close.data() + t, lookback, trend + i, volatility + i);
    }
  });
}

// ---------------------------------------------------------------------------------- stream

void MarketStateStream::Ring::init(std::size_t capacity, std::size_t stride) {
  capacity_ = std::max<std::size_t>(capacity, 1);
  stride_ = stride;
  data_.assign(2 * capacity_ * stride_, kNaN);
  newest_ = capacity_ - 1;
}

void MarketStateStream::Ring::push(const double* row) noexcept {
  newest_ = newest_ + 1 == capacity_ ? 0 : newest_ + 1;
  std::copy(row, row + stride_, data_.data() + newest_ * stride_);
  std::copy(row, row + stride_, data_.data() + (newest_ + capacity_) * stride_);
}

void MarketStateStream::Ring::clear() noexcept {
  std::fill(data_.begin(), data_.end(), kNaN);
  newest_ = capacity_ - 1;
}

MarketStateStream::MarketStateStream(MarketStateSpec spec) : kernel_(spec) {
  const MarketStateSpec& s = kernel_.spec();
  log_close_.init(std::max(s.ffd_window(), s.regime_lookback + 1), 1);
  returns_.init(s.volatility_bars, 1);
  log_volume_.init(s.volume_bars, 1);
  rows_.init(s.state_bars, kMarketFeatures);
  reset();
}

void MarketStateStream::reset() noexcept {
  log_close_.clear();
  returns_.clear();
  log_volume_.clear();
  rows_.clear();
  previous_close_ = 0.0;
  newest_ts_ = 0;
  count_ = 0;
  last_large_gap_row_ = 0;
  std::fill(last_.features, last_.features + kMarketFeatures, kNaN);
  last_.valid = false;
}

std::optional<std::int64_t> MarketStateStream::newest_timestamp() const noexcept {
  return count_ > 0 ? std::optional<std::int64_t>(newest_ts_) : std::nullopt;
}

void MarketStateStream::apply(std::int64_t ts, double close, double volume) noexcept {
  const std::size_t t = count_;
  const MarketStateSpec& s = kernel_.spec();
  const double lc = log_close_of(close);
  const double r = t >= 1 ? log_return(previous_close_, close) : kNaN;
  const double lv = log_volume_of(volume);
  if (t >= 1 && missing_bars(newest_ts_, ts, s.bar_ns) > s.max_gap_bars) last_large_gap_row_ = t;
  log_close_.push(&lc);
  returns_.push(&r);
  log_volume_.push(&lv);
  kernel_.features(t, log_close_.newest(), returns_.newest(), log_volume_.newest(),
                   last_.features);
  last_.valid = kernel_.valid(t, last_.features, last_large_gap_row_);
  rows_.push(last_.features);
  previous_close_ = close;
  newest_ts_ = ts;
  ++count_;
}

const MarketBar& MarketStateStream::update(std::int64_t ts, double close, double volume) {
  check_timestamp(ts, "MarketStateStream.update", "candle time");
  if (auto bad = find_invalid(ts, close, volume, 0, newest_timestamp(), true)) {
    throw OhlcvValidationError("MarketStateStream.update", *bad, false);
  }
  apply(ts, close, volume);
  return last_;
}

const MarketBar& MarketStateStream::update(const Candle& candle) {
  check_timestamp(candle.ts, "MarketStateStream.update", "candle time");
  if (auto bad = find_invalid_candle(candle, newest_timestamp())) {
    throw OhlcvValidationError("MarketStateStream.update", *bad, false);
  }
  apply(candle.ts, candle.close, candle.volume);
  return last_;
}

void MarketStateStream::update_many(const std::int64_t* ts, const double* close,
                                    const double* volume, std::size_t n, double* features,
                                    bool* valid) {
  for (std::size_t i = 0; i < n; ++i) {
    const std::optional<std::int64_t> previous =
        i > 0 ? std::optional<std::int64_t>(ts[i - 1]) : newest_timestamp();
    if (auto bad = find_invalid(ts[i], close[i], volume[i], i, previous, i == 0)) {
      throw OhlcvValidationError("MarketStateStream.update_many", *bad, true);
    }
    if (!timestamp_in_range(ts[i])) {
      check_timestamp(ts[i], ("MarketStateStream.update_many: row " + std::to_string(i)).c_str(),
                      "candle time");
    }
  }
  for (std::size_t i = 0; i < n; ++i) {
    apply(ts[i], close[i], volume[i]);
    if (features) std::copy(last_.features, last_.features + kMarketFeatures, features + i * kMarketFeatures);
    if (valid) valid[i] = last_.valid;
  }
}

void MarketStateStream::regime(double* trend, double* volatility) const {
  const std::size_t lookback = kernel_.spec().regime_lookback;
  if (lookback == 0) {
    throw std::logic_error("MarketStateStream: no regime lookback was given at construction");
  }
  if (count_ == 0) {
    *trend = kNaN;
    *volatility = kNaN;
    return;
  }
  regime_features(count_ - 1, log_close_.newest(), lookback, trend, volatility);
}

void MarketStateStream::raw_window(double* out) const noexcept {
  const std::size_t s = kernel_.spec().state_bars;
  const double* first = rows_.newest() - (s - 1) * kMarketFeatures;
  std::copy(first, first + s * kMarketFeatures, out);
}

void MarketStateStream::window(const double* mean, const double* std, float* out) const noexcept {
  const std::size_t s = kernel_.spec().state_bars;
  if (!last_.valid) {
    std::fill(out, out + s * kMarketFeatures, 0.0f);
    return;
  }
  standardize_rows(rows_.newest() - (s - 1) * kMarketFeatures, s, mean, std, out);
}

void MarketStateStream::current(const double* mean, const double* std, float* out) const noexcept {
  if (!last_.valid) {
    std::fill(out, out + kMarketFeatures, 0.0f);
    return;
  }
  standardize_rows(last_.features, 1, mean, std, out);
}

}  // namespace colmena
