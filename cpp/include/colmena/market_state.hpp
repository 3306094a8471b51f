#pragma once
/// Market state: the per-bar features the VAE and the agents see (python/colmena/state.py) and
/// the regime features (python/colmena/regime.py), computed by ONE per-window kernel that both
/// the batch functions and the streaming MarketStateStream call, so that they agree bit for bit
/// by construction.
///
/// Units: ts is the candle's open time in ns since the Unix epoch (UTC); close is a price in the
/// quote currency (> 0); volume is in the base currency (>= 0).
///
/// Features of bar t, in this column order (kMarketFeatures = 4), NaN while a window is
/// incomplete:
///   0 log_return       log(close[t] / close[t-1]) as colmena::log_return (log1p of the simple
///                      return); NaN at t = 0.
///   1 ffd              sum_k w_k log(close[t-k]) for k < W: fixed-width-window fractional
///                      differentiation of log close (Lopez de Prado, AFML ch. 5, snippet 5.3),
///                      summed in the order of simd::KernelTable::dot, so it also equals
///                      fracdiff_ffd(log close, w, direct) bit for bit. Needs t >= W - 1.
///   2 volatility       population standard deviation of the V log returns of bars t-V+1..t
///                      (two passes: mean, mean squared deviation, sqrt). Needs t >= V.
///   3 relative_volume  log1p(volume[t]) - mean(log1p(volume[t-M+1..t])). Needs t >= M - 1.
///
/// Validity of bar t: warm-up done (t >= lookback_bars() - 1), all four features finite, and no
/// large gap in the look-back. A gap lies between rows g-1 and g when ts[g] - ts[g-1] > bar_ns;
/// it misses (ts[g] - ts[g-1] - 1) / bar_ns bars (python/colmena/data.py GapReport), and is
/// large when that exceeds max_gap_bars. A large gap at row g makes bars g .. g + lookback - 2
/// invalid. Features are computed across gaps (nothing is filled), exactly as the batch does.
///
/// Regime features of bar t for a lookback L (python/colmena/regime.py): with lc = log close,
///   volatility = sqrt(sum_{j=1..L} (lc[t-L+j] - lc[t-L+j-1])^2 / L)
///   trend      = (lc[t] - lc[t-L]) / (volatility * sqrt(L)), 0 when volatility is not > 0,
/// both NaN when t < L.
///
/// Every sum above runs in one fixed order: 4 interleaved chains (term k into chain k % 4, in
/// ascending k from 0.0, the chains added as (c0 + c1) + (c2 + c3)); the FFD chains fuse each
/// term with std::fma (simd::KernelTable::dot), the others add rounded terms.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <vector>

#include "colmena/object_mutex.hpp"
#include "colmena/ohlcv_validation.hpp"

namespace colmena {

inline constexpr std::size_t kMarketFeatures = 4;

/// How the market state is computed (python/colmena/state.py FeatureSpec, plus the bar length
/// and the regime lookback).
struct MarketStateSpec {
  std::vector<double> ffd_weights;  ///< w_0..w_{W-1}, w_0 on the newest log close; W >= 1
  std::size_t volatility_bars = 30;  ///< V, log returns in the volatility window, >= 2
  std::size_t volume_bars = 60;      ///< M, bars in the relative-volume mean, >= 1
  std::size_t state_bars = 16;       ///< S, feature rows in one VAE input window, >= 1
  std::size_t max_gap_bars = 5;      ///< largest gap (missing bars) a look-back may span
  std::int64_t bar_ns = 60'000'000'000;  ///< bar length in ns, >= 0; 0: no gap detection
  std::size_t regime_lookback = 0;   ///< L for the regime features; 0: none

  std::size_t ffd_window() const noexcept { return ffd_weights.size(); }
  /// Bars of history one valid state needs, bar t included: max(W, V + 1, M) + S - 1.
  std::size_t lookback_bars() const noexcept;
  /// Throws std::invalid_argument naming the field for W == 0, a non-finite weight, V < 2,
  /// M == 0, S == 0 or bar_ns < 0.
  void validate() const;
};

/// Bars missing between two consecutive open times (GapReport rule): 0 when
/// ts - previous_ts <= bar_ns or bar_ns <= 0, else (ts - previous_ts - 1) / bar_ns.
/// Requires previous_ts < ts.
std::uint64_t missing_bars(std::int64_t previous_ts, std::int64_t ts,
                           std::int64_t bar_ns) noexcept;

/// The per-window kernel: features and validity of one bar from its trailing windows.
///
/// Thread safety: immutable after construction (every member is const), so one kernel may be
/// used from any number of threads at once (market_state_batch runs it on the pool's threads).
class MarketStateKernel {
 public:
  /// Validates the spec (see MarketStateSpec::validate).
  explicit MarketStateKernel(const MarketStateSpec& spec);

  /// Features of bar t into out[kMarketFeatures]. Every pointer addresses bar t's own value
  /// in its series and is read backwards only as far as the window needs and exists:
  /// log_close[-k] = log(close[t-k]) for k < min(t + 1, W); returns[-k] = log_return of bar
  /// t-k for k < min(t, V) (returns[0] is read only when t >= 1); log_volume[-k] =
  /// log1p(volume[t-k]) for k < min(t + 1, M). No allocation.
  void features(std::size_t t, const double* log_close, const double* returns,
                const double* log_volume, double* out) const noexcept;

  /// Validity of bar t with these features, given the row g of the newest large gap at or
  /// before t (0 when there is none: a gap row is always >= 1).
  bool valid(std::size_t t, const double* features, std::size_t last_large_gap_row) const noexcept;

  const MarketStateSpec& spec() const noexcept { return spec_; }
  std::size_t lookback_bars() const noexcept { return lookback_; }

 private:
  MarketStateSpec spec_;
  std::vector<double> reversed_;  // ffd weights, oldest value's weight first
  std::size_t lookback_;
};

/// Regime trend score and volatility of bar t (see the file comment) into *trend and
/// *volatility; log_close[-k] = log(close[t-k]) is read for k <= lookback when t >= lookback,
/// else both are NaN. lookback >= 1.
void regime_features(std::size_t t, const double* log_close, std::size_t lookback, double* trend,
                     double* volatility) noexcept;

/// Regime code of one bar from its features (python/colmena/features/regime.py, design document
/// BOT8000): 3 (high volatility) when volatility >= volatility_threshold, else 1 (trend down)
/// when trend <= -trend_threshold, else 0 (trend up) when trend >= trend_threshold, else 2
/// (range); -1 (unknown) when either feature is not finite. The one rule by which the batch and
/// the live path classify.
int regime_code(double trend, double volatility, double trend_threshold,
                double volatility_threshold) noexcept;

/// z = float((x - mean[f]) / std[f]) for n_rows rows of kMarketFeatures values (float64
/// arithmetic, then rounded to float32: python/colmena/state.py MarketState.windows).
void standardize_rows(const double* x, std::size_t n_rows, const double* mean, const double* std,
                      float* out) noexcept;

/// Features [n, kMarketFeatures] (row-major) and validity [n] of every bar of a candle series,
/// oldest first: the kernel on every bar, in parallel over bars. ts [n] strictly increasing,
/// close [n] finite and > 0, volume [n] finite and >= 0; otherwise throws OhlcvValidationError
/// (a std::invalid_argument) naming the first bad row, before writing anything.
void market_state_batch(const std::int64_t* ts, const double* close, const double* volume,
                        std::size_t n, const MarketStateSpec& spec, double* features,
                        bool* valid);

/// Regime trend score and volatility [n_rows] at bars rows [n_rows] of close [n] (> 0), NaN
/// for rows < lookback (negative rows included). Throws std::invalid_argument for lookback == 0
/// or a row >= n. Parallel over rows.
void regime_features_batch(const double* close, std::size_t n, const std::int64_t* rows,
                           std::size_t n_rows, std::size_t lookback, double* trend,
                           double* volatility);

/// One bar's output of MarketStateStream::update.
struct MarketBar {
  double features[kMarketFeatures];
  bool valid = false;
};

/// Streaming market state: one candle in, the bar's features and validity out, equal bit for
/// bit to market_state_batch over the same candles (the same kernel on the same windows, kept
/// in rings). O(W + V + M) per update, no allocation after construction.
///
/// Thread safety: the members take no lock themselves (the per-candle path stays lock-free in
/// C++). An object shared between threads must be used under mutex(): the Python binding holds
/// it around every call (update_many for its whole batch, without the GIL), so from Python one
/// stream may be shared and concurrent batches land whole, one after the other. Never create
/// Python objects while holding it (that may run other threads' code, which may wait for it).
class MarketStateStream {
 public:
  /// The lock that callers sharing this object hold around every call (see above).
  ObjectMutex& mutex() const noexcept { return mutex_; }

  /// Validates the spec; throws std::invalid_argument.
  explicit MarketStateStream(MarketStateSpec spec);

  /// Appends one candle (ts ns since epoch UTC, close in the quote currency, volume in the
  /// base currency) and returns the bar's features and validity. Throws OhlcvValidationError
  /// (std::invalid_argument) when ts is not after the newest ts, close is not finite and > 0 or
  /// volume is not finite and >= 0, and std::invalid_argument when ts is outside the core's time
  /// range (1970..2200, time_range.hpp: the trading loop that follows the stream live would
  /// refuse it); nothing changes then.
  const MarketBar& update(std::int64_t ts, double close, double volume);
  /// Same, after checking every OHLCV rule of ohlcv_validation.hpp on the whole candle.
  const MarketBar& update(const Candle& candle);
  /// Appends n candles (columns as in update); every row is checked before any is applied.
  /// features [n, kMarketFeatures] and valid [n] receive each bar's output (either may be null).
  void update_many(const std::int64_t* ts, const double* close, const double* volume,
                   std::size_t n, double* features, bool* valid);
  /// Back to the state after construction.
  void reset() noexcept;

  /// The newest bar (NaN features, not valid, before the first update).
  const MarketBar& last() const noexcept { return last_; }
  /// Bars received since construction or the last reset.
  std::size_t count() const noexcept { return count_; }
  std::optional<std::int64_t> newest_timestamp() const noexcept;
  const MarketStateSpec& spec() const noexcept { return kernel_.spec(); }
  std::size_t lookback_bars() const noexcept { return kernel_.lookback_bars(); }

  /// Regime trend score and volatility of the newest bar (NaN without a full window);
  /// throws std::logic_error when the spec has no regime lookback.
  void regime(double* trend, double* volatility) const;
  /// The last S feature rows, oldest first, [S * kMarketFeatures] (NaN rows before the first
  /// bars).
  void raw_window(double* out) const noexcept;
  /// The VAE input: the last S rows standardized with mean/std [kMarketFeatures], oldest
  /// first, [S * kMarketFeatures] float32 (python MarketState.windows); zeros when the newest
  /// bar is not valid.
  void window(const double* mean, const double* std, float* out) const noexcept;
  /// The newest row standardized, [kMarketFeatures] float32 (python MarketState.current);
  /// zeros when it is not valid.
  void current(const double* mean, const double* std, float* out) const noexcept;

 private:
  // Ring of rows of `stride` values; every row is stored twice (slot s and s + capacity), so
  // the newest k <= capacity rows are contiguous, ending at newest().
  class Ring {
   public:
    void init(std::size_t capacity, std::size_t stride);
    void push(const double* row) noexcept;
    void clear() noexcept;
    const double* newest() const noexcept { return data_.data() + (newest_ + capacity_) * stride_; }

   private:
    std::vector<double> data_;
    std::size_t capacity_ = 1, stride_ = 1;
    std::size_t newest_ = 0;
  };

  void apply(std::int64_t ts, double close, double volume) noexcept;

  MarketStateKernel kernel_;
  Ring log_close_, returns_, log_volume_, rows_;
  double previous_close_ = 0.0;
  std::int64_t newest_ts_ = 0;
  std::size_t count_ = 0;
  std::size_t last_large_gap_row_ = 0;
  MarketBar last_;
  mutable ObjectMutex mutex_;
};

}  // namespace colmena
