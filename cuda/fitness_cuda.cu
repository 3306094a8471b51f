// The population's proxy fitness on the device (device_ops.hpp, proxy_scores): one block per
// agent, two passes over its steps (the mean, then the squared deviations), each a block
// reduction in float64.
#include <cuda_runtime.h>

#include <cmath>

#include "colmena/cuda_backend.hpp"
#include "common.cuh"

namespace colmena::cuda {
namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ double position(const float* s, const unsigned char* tradable,
                                           long long k, bool long_only) {
  if (tradable[k] == 0) return 0.0;
  const double v = s[k];
  return long_only ? (v > 0.0 ? v : (isnan(v) ? v : 0.0)) : v;
}

__device__ __forceinline__ double net_return(const float* s, const double* r,
                                             const unsigned char* tradable, long long k,
                                             double cost, bool long_only) {
  const double p = position(s, tradable, k, long_only);
  const double previous = k > 0 ? position(s, tradable, k - 1, long_only) : 0.0;
  return p * r[k] - cost * fabs(p - previous);
}

__device__ double block_sum(double v, double* shared) {
  shared[threadIdx.x] = v;
  __syncthreads();
  for (int half = blockDim.x / 2; half > 0; half /= 2) {
    if (threadIdx.x < half) shared[threadIdx.x] += shared[threadIdx.x + half];
    __syncthreads();
  }
  const double total = shared[0];
  __syncthreads();
  return total;
}

__global__ void proxy_scores_kernel(const float* __restrict__ signals, long long n_steps,
                                    const double* __restrict__ returns,
                                    const unsigned char* __restrict__ tradable, double cost,
                                    bool long_only, double scale, double* __restrict__ scores) {
  __shared__ double shared[kThreads];
  const float* s = signals + static_cast<long long>(blockIdx.x) * n_steps;
  double part = 0.0;
  for (long long k = threadIdx.x; k < n_steps; k += blockDim.x) {
    part += net_return(s, returns, tradable, k, cost, long_only);
  }
  const double mean = block_sum(part, shared) / static_cast<double>(n_steps);
  part = 0.0;
  for (long long k = threadIdx.x; k < n_steps; k += blockDim.x) {
    const double g = net_return(s, returns, tradable, k, cost, long_only) - mean;
    part += g * g;
  }
  const double var = block_sum(part, shared) / static_cast<double>(n_steps - 1);
  if (threadIdx.x == 0) scores[blockIdx.x] = scale * mean / sqrt(var + 1e-12);
}

}  // namespace

void proxy_scores(const float* signals, std::size_t n_agents, std::size_t n_steps,
                  const double* returns, const unsigned char* tradable, double cost,
                  bool long_only, double periods_per_year, double* scores) {
  if (n_agents == 0) return;
  const detail::DeviceGuard guard(detail::device_of(signals));
  const cudaStream_t stream = detail::stream();
  if (n_steps < 2) {
    detail::check(cudaMemsetAsync(scores, 0, n_agents * sizeof(double), stream),
                  "cudaMemsetAsync (scores)");
    return;
  }
  proxy_scores_kernel<<<static_cast<unsigned>(n_agents), kThreads, 0, stream>>>(
      signals, static_cast<long long>(n_steps), returns, tradable, cost, long_only,
      std::sqrt(periods_per_year), scores);
  detail::check_launch("proxy_scores_kernel");
}

}  // namespace colmena::cuda
