#pragma once
/// FFT-based linear convolution of float64 series, built on the panel kernels of simd_kernels.hpp.
///
/// Two engines:
///  - overlap-save (Oppenheim & Schafer, "Discrete-Time Signal Processing", 3rd ed., sec. 8.7.3)
///    for a short filter against a long series: blocks of the series are packed two per complex
///    lane (real part one block, imaginary part the next; the filter is real, so the two
///    convolutions separate exactly) and kLanes lanes are transformed at once;
///  - a four-step transform (Bailey, "FFTs in external or hierarchical memory", 1990) for a filter
///    as long as the series (expanding-window fractional differentiation).
/// Non-finite inputs never enter a transform: they are replaced by zero and every output whose
/// window contains one is set to NaN, so one NaN spoils only its own windows.
#include <cstddef>
#include <vector>

namespace colmena {

/// exp(-2 pi i k / n) for k in [0, n), cached per n (thread-safe; entries are never freed).
struct TwiddleTable {
  std::vector<double> re;  ///< [n]
  std::vector<double> im;  ///< [n]
};
const TwiddleTable& twiddles(std::size_t n);

/// Row order of a panel after simd forward FFT: frequency of each row position, [n].
std::vector<std::size_t> fft_output_frequencies(std::size_t n);

/// 'valid' convolution: y[t] = sum_{k < window} w[k] * x[t + window - 1 - k],
/// t in [0, n - window + 1). x [n], w [window], y [n - window + 1]; requires 1 <= window <= n.
/// Equals numpy.convolve(x, w, mode="valid").
void convolve_valid_direct(const double* x, std::size_t n, const double* w, std::size_t window,
                           double* y);
void convolve_valid_fft(const double* x, std::size_t n, const double* w, std::size_t window,
                        double* y);
/// FFT size the overlap-save engine uses for this window (a power of two >= window).
std::size_t overlap_save_fft_size(std::size_t window, std::size_t n);

/// Causal full-length convolution: y[t] = sum_{k <= min(t, window - 1)} w[k] * x[t - k],
/// t in [0, n). x [n], w [window] with window <= n, y [n]. Uses one four-step transform of size
/// >= n + window - 1.
void convolve_causal_fft(const double* x, std::size_t n, const double* w, std::size_t window,
                         double* y);

}  // namespace colmena
