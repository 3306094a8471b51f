#pragma once
/// Entry points of the CUDA backend (cuda/). Declared here, in plain C++, so the core can call
/// them without CUDA headers; defined only in builds with COLMENA_CUDA (the dispatch of
/// device_ops.hpp is the one caller outside cuda/).
///
/// Pointers named "device" below are CUDA device memory of the current device (or managed
/// memory); the host arrays are named so. Every operation is enqueued on the calling thread's
/// current stream (StreamScope; the legacy default stream when none is set) and returns without
/// waiting for it, except where it says it synchronises. Errors: std::invalid_argument for bad
/// arguments, std::runtime_error naming the CUDA call and its error string for a CUDA failure.
#include <cstddef>
#include <memory>
#include <vector>

#include "colmena/build_info.hpp"
#include "colmena/fracdiff.hpp"
#include "colmena/neural_backend.hpp"

namespace colmena::cuda {

/// Visible devices; 0 when the driver is missing or reports an error (never throws).
int device_count() noexcept;
/// Properties of every visible device.
std::vector<CudaDeviceInfo> devices();
/// True when this build links cuFFT (the FFT path of the FracDiff twins).
bool has_cufft() noexcept;

/// The device whose memory holds `p`: its index, or -1 for host memory that is not
/// registered with CUDA (a plain numpy buffer). Never throws.
int pointer_device(const void* p) noexcept;

/// Sets the calling thread's current stream (a cudaStream_t, null for the legacy default
/// stream) for its lifetime, and restores the previous one after.
class StreamScope {
 public:
  explicit StreamScope(void* stream) noexcept;
  ~StreamScope();
  StreamScope(const StreamScope&) = delete;
  StreamScope& operator=(const StreamScope&) = delete;

 private:
  void* previous_;
};
/// The calling thread's current stream (null: the legacy default stream).
void* current_stream() noexcept;
/// Waits for the current stream; throws std::runtime_error on a CUDA error.
void synchronize_stream();

/// A block of device memory on one device (freed with the object), and synchronous copies
/// to and from host memory on the current stream.
class DeviceMemory {
 public:
  /// Throws std::bad_alloc when the device is out of memory.
  DeviceMemory(std::size_t bytes, int device);
  ~DeviceMemory();
  DeviceMemory(const DeviceMemory&) = delete;
  DeviceMemory& operator=(const DeviceMemory&) = delete;
  void* data() const noexcept { return data_; }
  /// Copies `bytes` (<= the size) from host src, then waits for the stream.
  void upload(const void* src, std::size_t bytes);
  /// Copies `bytes` (<= the size) to host dst, after the work enqueued on the stream.
  void download(void* dst, std::size_t bytes) const;

 private:
  void* data_ = nullptr;
  std::size_t bytes_ = 0;
  int device_ = 0;
};

/// The CUDA neural backend on device `device` (one shared instance per device). Its weights
/// live in device memory in torch's layout (W [n_nets, n_in, n_out], b [n_nets, n_out] per
/// layer); swarm_forward and vae_encode take device pointers x and outputs. write_layer waits
/// for the device first, so a forward pass already enqueued reads the weights from before it.
/// Throws std::invalid_argument for a device index out of range.
std::shared_ptr<const NeuralBackend> neural_backend(int device);

/// FFD with device x [n], y [n - window + 1] and host weights w [window]; the same contract
/// as colmena::fracdiff_ffd (fracdiff.hpp). method fft needs cuFFT (has_cufft()); automatic
/// takes the FFT from fft_crossover() weights on when cuFFT is there.
void fracdiff_ffd(const double* x, std::size_t n, const double* w, std::size_t window, double* y,
                  ConvolutionMethod method);
/// Expanding-window FracDiff with device x [n], y [n]; contract of colmena::fracdiff_expanding.
void fracdiff_expanding(const double* x, std::size_t n, double d, double threshold, double* y,
                        ConvolutionMethod method);
/// Window length from which method automatic uses cuFFT on the device (a first guess: the
/// crossover is measured by bench/bench_cuda_fracdiff.py).
std::size_t fft_crossover() noexcept;

/// The population's proxy fitness (device_ops.hpp, proxy_scores) with device signals
/// [n_agents, n_steps] float32, returns [n_steps] float64, tradable [n_steps] (0 or 1) and
/// scores [n_agents] float64.
void proxy_scores(const float* signals, std::size_t n_agents, std::size_t n_steps,
                  const double* returns, const unsigned char* tradable, double cost,
                  bool long_only, double periods_per_year, double* scores);

}  // namespace colmena::cuda
