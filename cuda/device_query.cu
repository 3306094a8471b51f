// Device query for the CUDA backend (how many devices, what they are, where a pointer lives)
// and the calling thread's current stream.
#include <cuda_runtime.h>

#include <new>
#include <stdexcept>
#include <string>

#include "colmena/cuda_backend.hpp"

namespace colmena::cuda {

namespace {
thread_local void* g_stream = nullptr;
}  // namespace

int device_count() noexcept {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky error (e.g. no driver) so later calls start clean
    return 0;
  }
  return count;
}

std::vector<CudaDeviceInfo> devices() {
  std::vector<CudaDeviceInfo> out;
  const int count = device_count();
  for (int i = 0; i < count; ++i) {
    cudaDeviceProp prop{};
    if (cudaGetDeviceProperties(&prop, i) != cudaSuccess) continue;
    CudaDeviceInfo info;
    info.index = i;
    info.name = prop.name;
    info.compute_capability_major = prop.major;
    info.compute_capability_minor = prop.minor;
    info.total_memory_bytes = prop.totalGlobalMem;
    info.multiprocessor_count = prop.multiProcessorCount;
    out.push_back(info);
  }
  return out;
}

bool has_cufft() noexcept {
#ifdef COLMENA_WITH_CUFFT
  return true;
#else
  return false;
#endif
}

int pointer_device(const void* p) noexcept {
  cudaPointerAttributes attributes{};
  if (cudaPointerGetAttributes(&attributes, p) != cudaSuccess) {
    cudaGetLastError();
    return -1;
  }
  switch (attributes.type) {
    case cudaMemoryTypeDevice:
    case cudaMemoryTypeManaged:
      return attributes.device;
    default:
      return -1;  // unregistered or pinned host memory
  }
}

StreamScope::StreamScope(void* stream) noexcept : previous_(g_stream) { g_stream = stream; }
StreamScope::~StreamScope() { g_stream = previous_; }
void* current_stream() noexcept { return g_stream; }

void synchronize_stream() {
  const cudaError_t status = cudaStreamSynchronize(static_cast<cudaStream_t>(g_stream));
  if (status != cudaSuccess) {
    cudaGetLastError();
    throw std::runtime_error(std::string("CUDA error in cudaStreamSynchronize: ") +
                             cudaGetErrorString(status));
  }
}

}  // namespace colmena::cuda

namespace colmena::cuda {

DeviceMemory::DeviceMemory(std::size_t bytes, int device) : bytes_(bytes), device_(device) {
  if (bytes == 0) return;
  int previous = 0;
  cudaGetDevice(&previous);
  cudaSetDevice(device);
  const cudaError_t status = cudaMalloc(&data_, bytes);
  cudaSetDevice(previous);
  if (status == cudaErrorMemoryAllocation) {
    cudaGetLastError();
    throw std::bad_alloc();
  }
  if (status != cudaSuccess) {
    cudaGetLastError();
    throw std::runtime_error(std::string("CUDA error in cudaMalloc: ") +
                             cudaGetErrorString(status));
  }
}

DeviceMemory::~DeviceMemory() {
  if (data_ != nullptr) {
    // Work enqueued on the stream may still read the block.
    cudaStreamSynchronize(static_cast<cudaStream_t>(current_stream()));
    cudaFree(data_);
  }
}

void DeviceMemory::upload(const void* src, std::size_t bytes) {
  if (bytes > bytes_) throw std::invalid_argument("DeviceMemory::upload: more bytes than the block");
  if (bytes == 0) return;
  const auto stream = static_cast<cudaStream_t>(current_stream());
  cudaError_t status = cudaMemcpyAsync(data_, src, bytes, cudaMemcpyHostToDevice, stream);
  if (status == cudaSuccess) status = cudaStreamSynchronize(stream);
  if (status != cudaSuccess) {
    cudaGetLastError();
    throw std::runtime_error(std::string("CUDA error in the copy to the device: ") +
                             cudaGetErrorString(status));
  }
}

void DeviceMemory::download(void* dst, std::size_t bytes) const {
  if (bytes > bytes_) {
    throw std::invalid_argument("DeviceMemory::download: more bytes than the block");
  }
  if (bytes == 0) return;
  const auto stream = static_cast<cudaStream_t>(current_stream());
  cudaError_t status = cudaMemcpyAsync(dst, data_, bytes, cudaMemcpyDeviceToHost, stream);
  if (status == cudaSuccess) status = cudaStreamSynchronize(stream);
  if (status != cudaSuccess) {
    cudaGetLastError();
    throw std::runtime_error(std::string("CUDA error in the copy to the host: ") +
                             cudaGetErrorString(status));
  }
}

}  // namespace colmena::cuda
