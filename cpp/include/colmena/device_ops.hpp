#pragma once
/// One declaration per operation, a CPU and a CUDA implementation, chosen by where the data
/// lives (after faiss's Index / GpuIndex and ggml's backends). The CPU path is the core's own
/// (fracdiff.hpp, neural_backend.hpp) and stays the default; the CUDA path (cuda/, built with
/// COLMENA_CUDA) runs on the device that holds the arrays, on the calling thread's current
/// stream (cuda_backend.hpp, StreamScope).
///
/// `where` names the memory every pointer argument of the call lives in; the CUDA path checks
/// each pointer (cudaPointerGetAttributes) and refuses one that lives elsewhere. Errors:
/// std::invalid_argument for a bad argument or a pointer on the wrong device, CudaUnavailable
/// for a CUDA call in a build without COLMENA_CUDA (or without a device), std::runtime_error
/// for a CUDA failure.
///
/// Tolerances of the CUDA twins against the CPU path on the same inputs (stated here, tested by
/// tests/test_cuda_*.py on a device):
/// - neural forward passes (swarm, MLP, VAE encoder): the same float32 operations in the same
///   order as mlp.hpp (fused multiply-adds, the 16-partial narrow sums and their halving tree,
///   the activation formulas of cpp/src/simd/mlp_kernels.cpp), so the same bits are expected;
///   tests hold them to 0 ulp, and the stated contract is |gpu - cpu| <= 2e-6 absolute;
/// - FracDiff: float64, the terms of each output summed in another order (direct) or through
///   cuFFT: |gpu - cpu| <= 1e-9 * sum_k |w_k| * max|x| (the CPU FFT path's own tolerance);
/// - proxy scores: float64 reductions in another order: relative 1e-9.
#include <cstddef>
#include <memory>
#include <stdexcept>
#include <string>

#include "colmena/fracdiff.hpp"
#include "colmena/neural_backend.hpp"

namespace colmena {

/// Thrown for a CUDA operation this build or machine cannot run; what() says which is missing
/// ("colmena was built without CUDA (COLMENA_CUDA=OFF) ...", "no CUDA device is visible").
class CudaUnavailable : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// True when this build has the CUDA backend (COLMENA_CUDA=ON).
bool cuda_built() noexcept;
/// Throws CudaUnavailable unless the build has CUDA and device `device` exists; `what` names
/// the caller in the message.
void require_cuda(const std::string& what, int device = 0);

/// Throws std::invalid_argument "<what>: <name> is host memory, expected memory of CUDA device
/// 0" unless p (when not null) is memory of CUDA device `device`; CudaUnavailable without CUDA.
void check_device_pointer(const void* p, int device, const std::string& what, const char* name);

/// The neural backend for `where`: cpu_neural_backend() or the CUDA backend of that device.
std::shared_ptr<const NeuralBackend> neural_backend_for(Device where);

/// fracdiff_ffd (fracdiff.hpp) on host or device x [n] and y [n - window + 1]; w [window] is
/// always host memory.
void fracdiff_ffd(Device where, const double* x, std::size_t n, const double* w,
                  std::size_t window, double* y, ConvolutionMethod method);
/// fracdiff_expanding (fracdiff.hpp) on host or device x [n] and y [n].
void fracdiff_expanding(Device where, const double* x, std::size_t n, double d, double threshold,
                        double* y, ConvolutionMethod method);

/// Proxy fitness of a population (the smooth objective of the evolution's fine-tuning,
/// python/colmena/training/evolution.py, finetune_adam), for every agent a of
/// signals [n_agents, n_steps] (float32, the agents' targets at consecutive decisions):
///   p_k = tradable_k ? (long_only ? max(s_k, 0) : s_k) : 0   (float64)
///   g_k = p_k r_k - cost |p_k - p_{k-1}|, p_{-1} = 0
///   score = sqrt(periods_per_year) * mean(g) / sqrt(var(g, ddof 1) + 1e-12)
/// with r = returns [n_steps] (float64 log returns to the next decision) and cost the one-way
/// cost as a fraction. n_steps < 2 gives 0. scores [n_agents] float64. A NaN signal gives a NaN
/// score. The CPU implementation sums in index order; the CUDA one by a block reduction.
void proxy_scores(Device where, const float* signals, std::size_t n_agents, std::size_t n_steps,
                  const double* returns, const unsigned char* tradable, double cost,
                  bool long_only, double periods_per_year, double* scores);

}  // namespace colmena
