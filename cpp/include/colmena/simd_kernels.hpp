#pragma once
/// Hot loops compiled once per instruction-set level (cpp/src/simd/*.cpp) and picked at run time.
///
/// Internal header: the public operations live in fft.hpp and fracdiff.hpp.
///
/// FFT layout. A "panel" is a [n, kLanes] matrix of complex float64 stored as two row-major arrays
/// (re, im): row p, lane l at index p * kLanes + l. Transforms run along axis 0 (length n, a power
/// of two) for every lane at once, so each butterfly is one vertical SIMD operation over the lanes
/// and no shuffles are needed. The forward transform is an in-place radix-4 decimation in frequency
/// (one radix-2 stage last when log2(n) is odd) that leaves the spectrum in digit-reversed row
/// order; the inverse is the matching decimation in time that takes that order back to natural
/// order (unnormalised: forward then inverse multiplies by n). Convolution never needs the
/// permutation; fft.hpp exposes it for the four-step transform.
#include <cstddef>

namespace colmena::simd {

inline constexpr std::size_t kLanes = 8;

struct KernelTable {
  /// Forward DFT (sign -1) of every lane of a [n, kLanes] panel; `twiddle_re/im` hold
  /// exp(-2 pi i k / n) for k in [0, n).
  void (*fft_forward)(double* re, double* im, std::size_t n, const double* twiddle_re,
                      const double* twiddle_im);
  /// Inverse DFT (sign +1, unnormalised) of a panel left by fft_forward.
  void (*fft_inverse)(double* re, double* im, std::size_t n, const double* twiddle_re,
                      const double* twiddle_im);
  /// panel[p, l] *= h[p] for a spectrum h of n complex values (one per row, broadcast over lanes).
  void (*multiply_rows)(double* re, double* im, std::size_t n, const double* h_re,
                        const double* h_im);
  /// panel[p, l] *= h[p, l] for a full [n, kLanes] spectrum panel.
  void (*multiply_panel)(double* re, double* im, std::size_t n, const double* h_re,
                         const double* h_im);
  /// y[t] = sum_{j < window} reversed_weights[j] * x[t + j] for t in [0, n_out): 'valid'
  /// correlation with reversed weights, i.e. convolution with the weights. Every y[t] is summed
  /// in the order of `dot` (below), so y[t] == dot(reversed_weights, x + t, window) bit for bit.
  void (*correlate_valid)(const double* x, std::size_t n_out, const double* reversed_weights,
                          std::size_t window, double* y);
  /// sum_k a[k] * b[k] in one fixed order, the same at every SIMD level: term k is fused
  /// (std::fma) into chain k % 4 in ascending k from 0.0, and the result is
  /// (chain0 + chain1) + (chain2 + chain3).
  double (*dot)(const double* a, const double* b, std::size_t n);
};

/// The table for the active SIMD level (see cpu_features.hpp).
const KernelTable& kernels() noexcept;

namespace baseline {
extern const KernelTable table;
}
namespace avx2 {
extern const KernelTable table;
}
namespace avx512 {
extern const KernelTable table;
}

}  // namespace colmena::simd
