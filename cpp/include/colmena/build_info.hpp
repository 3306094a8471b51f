#pragma once
/// What this build of the core contains and what the running machine offers.
#include <string>
#include <vector>

namespace colmena {

struct BuildInfo {
  std::string version;                ///< package version, from pyproject.toml
  std::string compiler;               ///< e.g. "GNU 12.2.0"
  std::string build_type;             ///< CMake build type, e.g. "Release"
  std::vector<std::string> backends;  ///< "cpu", and "cuda" when built with COLMENA_CUDA
  std::vector<std::string>
      simd_compiled;  ///< kernel variants compiled in: "baseline", "avx2", "avx512"
  std::vector<std::string> simd_supported;  ///< of those, the ones this CPU can run
  std::string simd_selected;                ///< the variant the dispatcher uses now
  bool native_build = false;                ///< built with COLMENA_NATIVE (-march=native)
  std::string cuda_toolkit;                 ///< toolkit version, empty without CUDA
  std::string cuda_architectures;           ///< CMAKE_CUDA_ARCHITECTURES, empty without CUDA
  unsigned hardware_threads = 1;            ///< std::thread::hardware_concurrency()
};

BuildInfo build_info();

/// Number of CUDA devices visible at run time; 0 when built without CUDA or without a usable
/// driver.
int cuda_device_count() noexcept;

struct CudaDeviceInfo {
  int index = 0;
  std::string name;
  int compute_capability_major = 0;
  int compute_capability_minor = 0;
  unsigned long long total_memory_bytes = 0;
  int multiprocessor_count = 0;
};

/// Properties of every visible CUDA device (empty without CUDA or devices).
std::vector<CudaDeviceInfo> cuda_devices();

}  // namespace colmena
