#pragma once
/// Fractional differentiation of a float64 series (Lopez de Prado, "Advances in Financial Machine
/// Learning" (AFML), 2018, ch. 5).
///
/// Weights follow the recursion w_0 = 1, w_k = -w_{k-1} (d - k + 1) / k, i.e. the binomial series
/// of (1 - B)^d with w_k = (-1)^k binom(d, k).
#include <cstddef>
#include <vector>

#include "colmena/object_mutex.hpp"

namespace colmena {

/// Most weights a threshold alone may select (8 MB of doubles); the Python API bounds explicit
/// FFD windows by the same number. |w_k| falls like k^-(1+d), so a
/// tiny threshold would otherwise grow the weights without bound (1e-300 at d = 0.4: ~1e214).
inline constexpr std::size_t kMaxFracDiffWeights = 1'000'000;

/// FFD weights w_0..w_{K-1}: the recursion runs until |w_k| < threshold (that weight excluded,
/// AFML snippet 5.3) when threshold > 0, and stops after max_window weights when max_window > 0.
/// At least one limit must be given. Throws std::invalid_argument for d outside [0, 2], no limit,
/// a non-finite / negative threshold, a max_window above kMaxFracDiffWeights, or a threshold
/// alone (max_window 0) that would keep more than kMaxFracDiffWeights weights.
std::vector<double> fracdiff_weights(double d, double threshold, std::size_t max_window);

enum class ConvolutionMethod { automatic, direct, fft };

/// Window length from which method "automatic" uses the FFT (measured in bench/).
std::size_t fracdiff_fft_crossover() noexcept;
/// The method "automatic" resolves to for this window.
ConvolutionMethod resolve_method(ConvolutionMethod method, std::size_t window) noexcept;

/// Fixed-width-window FFD (AFML snippet 5.3), 'valid' alignment:
/// y[t] = sum_{k < window} w[k] * x[t + window - 1 - k] for t in [0, n - window + 1), so y[t] is
/// the value at input index t + window - 1. x [n], w [window], y [n - window + 1].
/// A non-finite x[i] makes every y[t] whose window holds i NaN and touches nothing else.
void fracdiff_ffd(const double* x, std::size_t n, const double* w, std::size_t window, double* y,
                  ConvolutionMethod method);

/// Number of leading outputs AFML snippet 5.2 drops: the count of s in [0, n) whose relative
/// tail weight sum_{k >= s} |w_k| / sum_k |w_k| exceeds `threshold`. w [n].
std::size_t expanding_skip(const double* w, std::size_t n, double threshold);

/// Expanding-window fractional differentiation (AFML snippet 5.2): weights over the whole history,
/// y[t] = sum_{k <= t} w_k x[t - k] for t >= skip, NaN for t < skip, where w = weights of d for
/// n lags and skip = expanding_skip(w, n, threshold). x [n], y [n]. A non-finite x[i] makes
/// y[t] NaN for every t >= i. The FFT path costs O(n log n).
void fracdiff_expanding(const double* x, std::size_t n, double d, double threshold, double* y,
                        ConvolutionMethod method);

/// Streaming FFD: one new value in, one output out, O(window) per update, equal bit for bit to
/// the batch fracdiff_ffd with the direct method on the same values, at every SIMD level (both
/// sum each output in the order of simd::KernelTable::dot). The FFT method agrees to about
/// 1e-15 relative, not bit for bit. Returns NaN until `window` values have arrived and while a
/// non-finite value is inside the window.
///
/// Thread safety: every member takes the object's lock, so one stream may be shared between
/// threads; update_many holds it for the whole batch, so concurrent batches never interleave
/// (each lands as one run, in some order) and no update is lost.
class FracDiffStream {
 public:
  explicit FracDiffStream(std::vector<double> weights);
  double update(double x);
  /// update() on x[0..n), out[i] its output, under one hold of the lock.
  void update_many(const double* x, std::size_t n, double* out);
  void reset();
  std::size_t window() const noexcept { return window_; }
  /// Values received since construction or the last reset.
  std::size_t count() const;
  const std::vector<double>& weights() const noexcept { return weights_; }

 private:
  std::vector<double> weights_;
  std::vector<double> reversed_;  // [window], oldest value's weight first
  std::vector<double> ring_;      // [2 * window], each value stored at slot s and s + window
  std::size_t window_;
  std::size_t head_ = 0;  // slot of the next value
  std::size_t count_ = 0;
  std::size_t last_bad_ = 0;  // 1 + index of the newest non-finite value (0: none)
  mutable ObjectMutex mutex_;

  double update_locked(double x) noexcept;
};

}  // namespace colmena
