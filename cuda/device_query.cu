// Minimal device query for the CUDA backend: how many devices, and what they are.
#include <cuda_runtime.h>

#include "colmena/cuda_backend.hpp"

namespace colmena::cuda {

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

}  // namespace colmena::cuda
