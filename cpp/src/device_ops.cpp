// The dispatch of device_ops.hpp: the CPU path is the core's own; the CUDA path (cuda/) exists
// only in builds with COLMENA_CUDA, and every CUDA call of a build without it throws
// CudaUnavailable naming what is missing.
#include "colmena/device_ops.hpp"

#include <cmath>
#include <string>

#include "colmena/build_info.hpp"

#ifdef COLMENA_WITH_CUDA
#include "colmena/cuda_backend.hpp"
#endif

namespace colmena {
namespace {

#ifdef COLMENA_WITH_CUDA
// Throws std::invalid_argument unless p (when not null) is memory of device `device`.
void check_on_device(const void* p, int device, const std::string& what, const char* name) {
  if (p == nullptr) return;
  const int at = cuda::pointer_device(p);
  if (at == device) return;
  throw std::invalid_argument(what + ": " + name + " is " +
                              (at < 0 ? std::string("host memory")
                                      : "memory of CUDA device " + std::to_string(at)) +
                              ", expected memory of CUDA device " + std::to_string(device));
}
#endif

void proxy_scores_cpu(const float* signals, std::size_t n_agents, std::size_t n_steps,
                      const double* returns, const unsigned char* tradable, double cost,
                      bool long_only, double periods_per_year, double* scores) {
  const double scale = std::sqrt(periods_per_year);
  for (std::size_t a = 0; a < n_agents; ++a) {
    if (n_steps < 2) {
      scores[a] = 0.0;
      continue;
    }
    const float* s = signals + a * n_steps;
    auto position = [&](std::size_t k) {
      if (tradable[k] == 0) return 0.0;
      const double v = s[k];
      return long_only ? (v > 0.0 ? v : (std::isnan(v) ? v : 0.0)) : v;
    };
    double sum = 0.0;
    double previous = 0.0;
    for (std::size_t k = 0; k < n_steps; ++k) {
      const double p = position(k);
      sum += p * returns[k] - cost * std::abs(p - previous);
      previous = p;
    }
    const double mean = sum / static_cast<double>(n_steps);
    double squares = 0.0;
    previous = 0.0;
    for (std::size_t k = 0; k < n_steps; ++k) {
      const double p = position(k);
      const double g = p * returns[k] - cost * std::abs(p - previous);
      squares += (g - mean) * (g - mean);
      previous = p;
    }
    const double var = squares / static_cast<double>(n_steps - 1);
    scores[a] = scale * mean / std::sqrt(var + 1e-12);
  }
}

}  // namespace

bool cuda_built() noexcept {
#ifdef COLMENA_WITH_CUDA
  return true;
#else
  return false;
#endif
}

void require_cuda(const std::string& what, int device) {
#ifdef COLMENA_WITH_CUDA
  const int count = cuda::device_count();
  if (count == 0) {
    throw CudaUnavailable(what + ": no CUDA device is visible (this build has the CUDA backend; "
                                 "check the driver and CUDA_VISIBLE_DEVICES)");
  }
  if (device < 0 || device >= count) {
    throw CudaUnavailable(what + ": CUDA device " + std::to_string(device) +
                          " does not exist (" + std::to_string(count) + " visible)");
  }
#else
  (void)device;
  throw CudaUnavailable(what +
                        ": colmena was built without CUDA (COLMENA_CUDA=OFF); rebuild with "
                        "COLMENA_CUDA=ON and a CUDA toolkit to use a GPU");
#endif
}

void check_device_pointer(const void* p, int device, const std::string& what, const char* name) {
  require_cuda(what, device);
#ifdef COLMENA_WITH_CUDA
  check_on_device(p, device, what, name);
#else
  (void)p;
  (void)name;
#endif
}

std::shared_ptr<const NeuralBackend> neural_backend_for(Device where) {
  if (where.type == DeviceType::cpu) return cpu_neural_backend();
  require_cuda("neural_backend_for", where.index);
#ifdef COLMENA_WITH_CUDA
  return cuda::neural_backend(where.index);
#else
  return nullptr;  // not reached: require_cuda threw
#endif
}

void fracdiff_ffd(Device where, const double* x, std::size_t n, const double* w,
                  std::size_t window, double* y, ConvolutionMethod method) {
  if (where.type == DeviceType::cpu) {
    colmena::fracdiff_ffd(x, n, w, window, y, method);
    return;
  }
  require_cuda("fracdiff_ffd", where.index);
#ifdef COLMENA_WITH_CUDA
  check_on_device(x, where.index, "fracdiff_ffd", "x");
  check_on_device(y, where.index, "fracdiff_ffd", "y");
  cuda::fracdiff_ffd(x, n, w, window, y, method);
#endif
}

void fracdiff_expanding(Device where, const double* x, std::size_t n, double d, double threshold,
                        double* y, ConvolutionMethod method) {
  if (where.type == DeviceType::cpu) {
    colmena::fracdiff_expanding(x, n, d, threshold, y, method);
    return;
  }
  require_cuda("fracdiff_expanding", where.index);
#ifdef COLMENA_WITH_CUDA
  check_on_device(x, where.index, "fracdiff_expanding", "x");
  check_on_device(y, where.index, "fracdiff_expanding", "y");
  cuda::fracdiff_expanding(x, n, d, threshold, y, method);
#endif
}

void proxy_scores(Device where, const float* signals, std::size_t n_agents, std::size_t n_steps,
                  const double* returns, const unsigned char* tradable, double cost,
                  bool long_only, double periods_per_year, double* scores) {
  if (!(cost >= 0.0) || !std::isfinite(cost)) {
    throw std::invalid_argument("proxy_scores: cost must be finite and >= 0");
  }
  if (!(periods_per_year > 0.0) || !std::isfinite(periods_per_year)) {
    throw std::invalid_argument("proxy_scores: periods_per_year must be finite and > 0");
  }
  if (where.type == DeviceType::cpu) {
    proxy_scores_cpu(signals, n_agents, n_steps, returns, tradable, cost, long_only,
                     periods_per_year, scores);
    return;
  }
  require_cuda("proxy_scores", where.index);
#ifdef COLMENA_WITH_CUDA
  for (auto [p, name] : {std::pair<const void*, const char*>{signals, "signals"},
                         {returns, "returns"}, {tradable, "tradable"}, {scores, "scores"}}) {
    check_on_device(p, where.index, "proxy_scores", name);
  }
  cuda::proxy_scores(signals, n_agents, n_steps, returns, tradable, cost, long_only,
                     periods_per_year, scores);
#endif
}

}  // namespace colmena
