#include "colmena/fracdiff.hpp"

#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

#include "colmena/fft.hpp"
#include "colmena/ohlcv_validation.hpp"
#include "colmena/simd_kernels.hpp"

namespace colmena {

std::vector<double> fracdiff_weights(double d, double threshold, std::size_t max_window) {
  if (!(d >= 0.0 && d <= 2.0)) {
    throw std::invalid_argument("fracdiff_weights: d must be in [0, 2], got " + std::to_string(d));
  }
  if (!(threshold >= 0.0) || !std::isfinite(threshold)) {
    throw std::invalid_argument("fracdiff_weights: threshold must be finite and >= 0");
  }
  if (threshold == 0.0 && max_window == 0) {
    throw std::invalid_argument("fracdiff_weights: give a threshold > 0 or a window >= 1");
  }
  if (max_window > kMaxFracDiffWeights) {
    throw std::invalid_argument("fracdiff_weights: window must be at most " +
                                std::to_string(kMaxFracDiffWeights) + " weights, got " +
                                std::to_string(max_window));
  }
  std::vector<double> w{1.0};
  if (max_window > 0) w.reserve(max_window);
  for (std::size_t k = 1; max_window == 0 || k < max_window; ++k) {
    const double next = -w.back() * (d - static_cast<double>(k) + 1.0) / static_cast<double>(k);
    if (threshold > 0.0 && std::abs(next) < threshold) break;
    if (max_window == 0 && w.size() == kMaxFracDiffWeights) {
      throw std::invalid_argument(
          "fracdiff_weights: the threshold " + format_double(threshold) + " keeps more than " +
          std::to_string(kMaxFracDiffWeights) + " weights at d = " + format_double(d) +
          " (|w_k| falls like k^-(1+d)); use a larger threshold or a fixed window");
    }
    w.push_back(next);
  }
  return w;
}

std::size_t fracdiff_fft_crossover() noexcept {
  // Window length where the overlap-save FFT overtakes the register-blocked direct loop:
  // bench/test_bench_fracdiff.py::test_crossover on 1e6 points (2 threads, AVX-512) measured them
  // equal at 16 weights and the FFT 2.2x faster at 32.
  return 24;
}

ConvolutionMethod resolve_method(ConvolutionMethod method, std::size_t window) noexcept {
  if (method != ConvolutionMethod::automatic) return method;
  return window >= fracdiff_fft_crossover() ? ConvolutionMethod::fft : ConvolutionMethod::direct;
}

void fracdiff_ffd(const double* x, std::size_t n, const double* w, std::size_t window, double* y,
                  ConvolutionMethod method) {
  if (window == 0 || window > n) {
    throw std::invalid_argument("fracdiff_ffd: window (" + std::to_string(window) +
                                ") must be in [1, len(x) = " + std::to_string(n) + "]");
  }
  if (resolve_method(method, window) == ConvolutionMethod::fft) {
    convolve_valid_fft(x, n, w, window, y);
  } else {
    convolve_valid_direct(x, n, w, window, y);
  }
}

std::size_t expanding_skip(const double* w, std::size_t n, double threshold) {
  // Same summation order as the cumulative sums below, so the full sum divided by itself is 1.
  double total = 0.0;
  for (std::size_t k = n; k-- > 0;) total += std::abs(w[k]);
  // AFML: w_ = cumsum(|w| oldest lag first) / total; skip = count(w_ > threshold). The cumulative
  // sum from the oldest lag up to lag s is the tail sum_{k >= s} |w_k|.
  std::size_t skip = 0;
  double tail = 0.0;
  for (std::size_t s = n; s-- > 0;) {
    tail += std::abs(w[s]);
    if (tail / total > threshold) ++skip;
  }
  return skip;
}

void fracdiff_expanding(const double* x, std::size_t n, double d, double threshold, double* y,
                        ConvolutionMethod method) {
  if (n == 0) return;
  if (!(threshold >= 0.0 && threshold <= 1.0)) {
    throw std::invalid_argument("fracdiff_expanding: threshold must be in [0, 1]");
  }
  const std::vector<double> full = fracdiff_weights(d, 0.0, n);  // exactly n weights
  // Direct: y = 'valid' convolution of [0]*(n-1) + x with the n weights.
  const bool use_fft =
      method == ConvolutionMethod::fft ||
      (method == ConvolutionMethod::automatic && n >= 4 * fracdiff_fft_crossover());
  if (use_fft) {
    convolve_causal_fft(x, n, full.data(), n, y);
  } else {
    std::vector<double> padded(2 * n - 1, 0.0);
    std::copy(x, x + n, padded.begin() + static_cast<std::ptrdiff_t>(n - 1));
    convolve_valid_direct(padded.data(), padded.size(), full.data(), n, y);
  }
  const std::size_t skip = expanding_skip(full.data(), n, threshold);
  for (std::size_t t = 0; t < skip && t < n; ++t) y[t] = std::numeric_limits<double>::quiet_NaN();
}

FracDiffStream::FracDiffStream(std::vector<double> weights)
    : weights_(std::move(weights)), window_(weights_.size()) {
  if (window_ == 0) throw std::invalid_argument("FracDiffStream: need at least one weight");
  reversed_.assign(weights_.rbegin(), weights_.rend());
  ring_.assign(2 * window_, 0.0);
}

double FracDiffStream::update(double x) {
  std::lock_guard<ObjectMutex> lock(mutex_);
  return update_locked(x);
}

void FracDiffStream::update_many(const double* x, std::size_t n, double* out) {
  std::lock_guard<ObjectMutex> lock(mutex_);
  for (std::size_t i = 0; i < n; ++i) out[i] = update_locked(x[i]);
}

std::size_t FracDiffStream::count() const {
  std::lock_guard<ObjectMutex> lock(mutex_);
  return count_;
}

double FracDiffStream::update_locked(double x) noexcept {
  ring_[head_] = x;
  ring_[head_ + window_] = x;
  ++count_;
  if (!std::isfinite(x)) last_bad_ = count_;
  // The window, oldest first, is ring_[head_ + 1 .. head_ + window_].
  const double* window_start = ring_.data() + head_ + 1;
  head_ = head_ + 1 == window_ ? 0 : head_ + 1;
  if (count_ < window_ || (last_bad_ != 0 && count_ - last_bad_ < window_)) {
    return std::numeric_limits<double>::quiet_NaN();
  }
  return simd::kernels().dot(reversed_.data(), window_start, window_);
}

void FracDiffStream::reset() {
  std::lock_guard<ObjectMutex> lock(mutex_);
  std::fill(ring_.begin(), ring_.end(), 0.0);
  head_ = 0;
  count_ = 0;
  last_bad_ = 0;
}

}  // namespace colmena
