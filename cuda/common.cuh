#pragma once
// Shared by the CUDA sources: error checks that throw, the device guard, the current stream.
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "colmena/cuda_backend.hpp"

namespace colmena::cuda::detail {

// Throws std::runtime_error "<what>: <CUDA error string>" for an error code.
inline void check(cudaError_t status, const char* what) {
  if (status != cudaSuccess) {
    cudaGetLastError();  // clear a non-sticky error so the next call starts clean
    throw std::runtime_error(std::string("CUDA error in ") + what + ": " +
                             cudaGetErrorName(status) + " (" + cudaGetErrorString(status) + ")");
  }
}

// After a kernel launch: a launch error (bad configuration, no kernel image for this GPU).
inline void check_launch(const char* kernel) { check(cudaGetLastError(), kernel); }

inline cudaStream_t stream() { return static_cast<cudaStream_t>(current_stream()); }

// Makes `device` current for its lifetime and restores the previous device after.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    check(cudaGetDevice(&previous_), "cudaGetDevice");
    if (previous_ != device) check(cudaSetDevice(device), "cudaSetDevice");
  }
  ~DeviceGuard() { cudaSetDevice(previous_); }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = 0;
};

// The device whose memory holds p (the current device for host memory, which the dispatch of
// device_ops.hpp has already refused).
inline int device_of(const void* p) {
  const int device = pointer_device(p);
  if (device >= 0) return device;
  int current = 0;
  check(cudaGetDevice(&current), "cudaGetDevice");
  return current;
}

// Device memory freed on scope exit (stream-ordered allocation on the current stream).
template <class T>
class DeviceBuffer {
 public:
  explicit DeviceBuffer(std::size_t count) : count_(count) {
    if (count == 0) return;
    check(cudaMallocAsync(reinterpret_cast<void**>(&data_), count * sizeof(T), stream()),
          "cudaMallocAsync");
  }
  ~DeviceBuffer() {
    if (data_ != nullptr) cudaFreeAsync(data_, stream());
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  T* get() const noexcept { return data_; }
  std::size_t size() const noexcept { return count_; }

 private:
  T* data_ = nullptr;
  std::size_t count_ = 0;
};

inline unsigned blocks_for(std::size_t n, unsigned threads) {
  const std::size_t b = (n + threads - 1) / threads;
  return static_cast<unsigned>(b < 1 ? 1 : (b > 0x7fffffffu ? 0x7fffffffu : b));
}

}  // namespace colmena::cuda::detail
