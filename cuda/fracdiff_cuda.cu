// FracDiff on the device (fracdiff.hpp's contract, device_ops.hpp's tolerance):
// - direct: one thread per output, the window's terms fused in order k = 0 .. window - 1;
// - overlap-save through cuFFT (COLMENA_WITH_CUFFT): blocks of N = 2^m >= 4 * window inputs
//   (L = N - window + 1 outputs each), a batch of blocks per D2Z / Z2D pair, the filter's
//   spectrum computed once;
// - expanding window: the 'valid' FFD of the series after n - 1 zeros with all n weights (as the
//   CPU's direct path), then NaN over the skipped head.
// Non-finite inputs never enter a sum or a transform: they count as zero, and every output whose
// window holds one is set to NaN afterwards (a prefix count of the bad inputs), as on the CPU.
#include <cuda_runtime.h>

#include <cub/device/device_scan.cuh>

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#ifdef COLMENA_WITH_CUFFT
#include <cufft.h>
#endif

#include "colmena/cuda_backend.hpp"
#include "colmena/fracdiff.hpp"
#include "common.cuh"

namespace colmena::cuda {
namespace {

using detail::blocks_for;
using detail::check;
using detail::check_launch;
using detail::DeviceBuffer;

constexpr unsigned kThreads = 256;

__global__ void ffd_direct_kernel(const double* __restrict__ x, const double* __restrict__ w,
                                  long long window, long long n_out, double* __restrict__ y) {
  const long long t = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= n_out) return;
  const double* xt = x + t + window - 1;
  double acc = 0.0;
  for (long long k = 0; k < window; ++k) {
    const double v = xt[-k];
    acc = fma(w[k], isfinite(v) ? v : 0.0, acc);
  }
  y[t] = acc;
}

// bad[i] = 1 for a non-finite x[i].
__global__ void bad_flags_kernel(const double* __restrict__ x, long long n, int* __restrict__ bad) {
  const long long i = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) bad[i] = isfinite(x[i]) ? 0 : 1;
}

// y[t] = NaN where inputs [t, t + window - 1] hold a bad one; count = inclusive prefix sum of bad.
__global__ void mask_kernel(const int* __restrict__ count, long long window, long long n_out,
                            double* __restrict__ y) {
  const long long t = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= n_out) return;
  const int before = t > 0 ? count[t - 1] : 0;
  if (count[t + window - 1] - before > 0) y[t] = __longlong_as_double(0x7ff8000000000000LL);
}

__global__ void fill_nan_kernel(double* __restrict__ y, long long n) {
  const long long t = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t < n) y[t] = __longlong_as_double(0x7ff8000000000000LL);
}

// Sets y[t] to NaN wherever the window of inputs of output t holds a non-finite x.
void mask_bad_windows(const double* x, std::size_t n, std::size_t window, double* y) {
  const cudaStream_t stream = detail::stream();
  const std::size_t n_out = n - window + 1;
  DeviceBuffer<int> bad(n);
  DeviceBuffer<int> count(n);
  bad_flags_kernel<<<blocks_for(n, kThreads), kThreads, 0, stream>>>(x, static_cast<long long>(n),
                                                                     bad.get());
  check_launch("bad_flags_kernel");
  std::size_t temp_bytes = 0;
  check(cub::DeviceScan::InclusiveSum(nullptr, temp_bytes, bad.get(), count.get(),
                                      static_cast<int>(n), stream),
        "cub::DeviceScan::InclusiveSum (size)");
  DeviceBuffer<unsigned char> temp(std::max<std::size_t>(temp_bytes, 1));
  check(cub::DeviceScan::InclusiveSum(temp.get(), temp_bytes, bad.get(), count.get(),
                                      static_cast<int>(n), stream),
        "cub::DeviceScan::InclusiveSum");
  mask_kernel<<<blocks_for(n_out, kThreads), kThreads, 0, stream>>>(
      count.get(), static_cast<long long>(window), static_cast<long long>(n_out), y);
  check_launch("mask_kernel");
}

void copy_weights(const double* w, std::size_t window, DeviceBuffer<double>& dw) {
  check(cudaMemcpyAsync(dw.get(), w, window * sizeof(double), cudaMemcpyHostToDevice,
                        detail::stream()),
        "cudaMemcpyAsync (weights)");
}

#ifdef COLMENA_WITH_CUFFT
void check_fft(cufftResult status, const char* what) {
  if (status != CUFFT_SUCCESS) {
    throw std::runtime_error(std::string("cuFFT error in ") + what + ": code " +
                             std::to_string(static_cast<int>(status)));
  }
}

class Plan {
 public:
  Plan(int n, int batch, cufftType type) {
    int dims[1] = {n};
    check_fft(cufftPlanMany(&plan_, 1, dims, nullptr, 1, 0, nullptr, 1, 0, type, batch),
              "cufftPlanMany");
    check_fft(cufftSetStream(plan_, detail::stream()), "cufftSetStream");
  }
  ~Plan() { cufftDestroy(plan_); }
  Plan(const Plan&) = delete;
  Plan& operator=(const Plan&) = delete;
  cufftHandle get() const noexcept { return plan_; }

 private:
  cufftHandle plan_ = 0;
};

// blocks[b, i] = x[(first + b) * L + i] (0 past the end or where not finite), b < batch, i < N.
__global__ void gather_kernel(const double* __restrict__ x, long long n, long long first,
                              long long L, long long N, long long batch,
                              double* __restrict__ blocks) {
  const long long idx = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= batch * N) return;
  const long long b = idx / N, i = idx % N;
  const long long src = (first + b) * L + i;
  const double v = src < n ? x[src] : 0.0;
  blocks[idx] = isfinite(v) ? v : 0.0;
}

__global__ void spectrum_product_kernel(cufftDoubleComplex* __restrict__ spectra,
                                        const cufftDoubleComplex* __restrict__ filter,
                                        long long bins, long long batch) {
  const long long idx = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= batch * bins) return;
  const cufftDoubleComplex a = spectra[idx];
  const cufftDoubleComplex f = filter[idx % bins];
  spectra[idx] = make_cuDoubleComplex(a.x * f.x - a.y * f.y, a.x * f.y + a.y * f.x);
}

// y[(first + b) * L + i] = blocks[b, i + window - 1] / N for outputs that exist.
__global__ void scatter_kernel(const double* __restrict__ blocks, long long first, long long L,
                               long long N, long long window, long long batch, long long n_out,
                               double* __restrict__ y) {
  const long long idx = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= batch * L) return;
  const long long b = idx / L, i = idx % L;
  const long long t = (first + b) * L + i;
  if (t < n_out) y[t] = blocks[b * N + i + window - 1] / static_cast<double>(N);
}

void ffd_overlap_save(const double* x, std::size_t n, const double* w, std::size_t window,
                      double* y) {
  const cudaStream_t stream = detail::stream();
  std::size_t N = 1024;
  while (N < 4 * window) N *= 2;
  const std::size_t L = N - window + 1;
  const std::size_t n_out = n - window + 1;
  const std::size_t n_blocks = (n_out + L - 1) / L;
  const std::size_t bins = N / 2 + 1;
  // Batches of at most 2^25 doubles of input (256 MiB) at a time.
  const std::size_t batch = std::max<std::size_t>(1, std::min(n_blocks, (std::size_t{1} << 25) / N));
  // The filter's spectrum.
  DeviceBuffer<double> filter_time(N);
  DeviceBuffer<cufftDoubleComplex> filter(bins);
  check(cudaMemsetAsync(filter_time.get(), 0, N * sizeof(double), stream), "cudaMemsetAsync");
  check(cudaMemcpyAsync(filter_time.get(), w, window * sizeof(double), cudaMemcpyHostToDevice,
                        stream),
        "cudaMemcpyAsync (weights)");
  {
    Plan plan(static_cast<int>(N), 1, CUFFT_D2Z);
    check_fft(cufftExecD2Z(plan.get(), filter_time.get(), filter.get()), "cufftExecD2Z (filter)");
  }
  DeviceBuffer<double> blocks(batch * N);
  DeviceBuffer<cufftDoubleComplex> spectra(batch * bins);
  Plan forward(static_cast<int>(N), static_cast<int>(batch), CUFFT_D2Z);
  Plan inverse(static_cast<int>(N), static_cast<int>(batch), CUFFT_Z2D);
  for (std::size_t first = 0; first < n_blocks; first += batch) {
    // The last batch runs at full size; blocks past the end are zeros and are not scattered.
    gather_kernel<<<blocks_for(batch * N, kThreads), kThreads, 0, stream>>>(
        x, static_cast<long long>(n), static_cast<long long>(first), static_cast<long long>(L),
        static_cast<long long>(N), static_cast<long long>(batch), blocks.get());
    check_launch("gather_kernel");
    check_fft(cufftExecD2Z(forward.get(), blocks.get(), spectra.get()), "cufftExecD2Z");
    spectrum_product_kernel<<<blocks_for(batch * bins, kThreads), kThreads, 0, stream>>>(
        spectra.get(), filter.get(), static_cast<long long>(bins), static_cast<long long>(batch));
    check_launch("spectrum_product_kernel");
    check_fft(cufftExecZ2D(inverse.get(), spectra.get(), blocks.get()), "cufftExecZ2D");
    scatter_kernel<<<blocks_for(batch * L, kThreads), kThreads, 0, stream>>>(
        blocks.get(), static_cast<long long>(first), static_cast<long long>(L),
        static_cast<long long>(N), static_cast<long long>(window), static_cast<long long>(batch),
        static_cast<long long>(n_out), y);
    check_launch("scatter_kernel");
  }
}
#endif

bool use_fft(ConvolutionMethod method, std::size_t window, const char* caller) {
  if (method == ConvolutionMethod::fft && !has_cufft()) {
    throw std::invalid_argument(std::string(caller) +
                                ": method 'fft' on the GPU needs cuFFT, and this CUDA build has "
                                "none (it was built without the cuFFT library); use 'direct' or "
                                "'auto'");
  }
  if (method == ConvolutionMethod::fft) return true;
  return method == ConvolutionMethod::automatic && has_cufft() && window >= fft_crossover();
}

void ffd(const double* x, std::size_t n, const double* w, std::size_t window, double* y,
         bool fft) {
  const cudaStream_t stream = detail::stream();
  const std::size_t n_out = n - window + 1;
  if (fft) {
#ifdef COLMENA_WITH_CUFFT
    ffd_overlap_save(x, n, w, window, y);
#endif
  } else {
    DeviceBuffer<double> dw(window);
    copy_weights(w, window, dw);
    ffd_direct_kernel<<<blocks_for(n_out, kThreads), kThreads, 0, stream>>>(
        x, dw.get(), static_cast<long long>(window), static_cast<long long>(n_out), y);
    check_launch("ffd_direct_kernel");
  }
  mask_bad_windows(x, n, window, y);
}

}  // namespace

std::size_t fft_crossover() noexcept { return 64; }

void fracdiff_ffd(const double* x, std::size_t n, const double* w, std::size_t window, double* y,
                  ConvolutionMethod method) {
  if (window == 0 || window > n) {
    throw std::invalid_argument("fracdiff_ffd: window (" + std::to_string(window) +
                                ") must be in [1, len(x) = " + std::to_string(n) + "]");
  }
  if (n > static_cast<std::size_t>(std::numeric_limits<int>::max())) {
    throw std::invalid_argument("fracdiff_ffd: the GPU path takes at most 2**31 - 1 values");
  }
  const detail::DeviceGuard guard(detail::device_of(x));
  ffd(x, n, w, window, y, use_fft(method, window, "fracdiff_ffd"));
}

void fracdiff_expanding(const double* x, std::size_t n, double d, double threshold, double* y,
                        ConvolutionMethod method) {
  if (n == 0) return;
  if (!(threshold >= 0.0 && threshold <= 1.0)) {
    throw std::invalid_argument("fracdiff_expanding: threshold must be in [0, 1]");
  }
  if (2 * n - 1 > static_cast<std::size_t>(std::numeric_limits<int>::max())) {
    throw std::invalid_argument("fracdiff_expanding: the series is too long for the GPU path");
  }
  const std::vector<double> full = fracdiff_weights(d, 0.0, n);  // exactly n weights
  const detail::DeviceGuard guard(detail::device_of(x));
  const bool fft = use_fft(method, n, "fracdiff_expanding");
  const cudaStream_t stream = detail::stream();
  DeviceBuffer<double> padded(2 * n - 1);
  check(cudaMemsetAsync(padded.get(), 0, (n - 1) * sizeof(double), stream), "cudaMemsetAsync");
  check(cudaMemcpyAsync(padded.get() + (n - 1), x, n * sizeof(double), cudaMemcpyDeviceToDevice,
                        stream),
        "cudaMemcpyAsync (series)");
  ffd(padded.get(), 2 * n - 1, full.data(), n, y, fft);
  const std::size_t skip = std::min(n, expanding_skip(full.data(), n, threshold));
  if (skip > 0) {
    fill_nan_kernel<<<blocks_for(skip, kThreads), kThreads, 0, stream>>>(
        y, static_cast<long long>(skip));
    check_launch("fill_nan_kernel");
  }
}

}  // namespace colmena::cuda
