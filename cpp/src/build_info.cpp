#include "colmena/build_info.hpp"

#include <algorithm>
#include <thread>

#include "colmena/cpu_features.hpp"

#ifdef COLMENA_WITH_CUDA
#include "colmena/cuda_backend.hpp"
#endif

namespace colmena {

BuildInfo build_info() {
  BuildInfo info;
  info.version = COLMENA_VERSION;
  info.compiler = COLMENA_COMPILER;
  info.build_type = COLMENA_BUILD_TYPE;
  info.backends.push_back("cpu");
#ifdef COLMENA_WITH_CUDA
  info.backends.push_back("cuda");
  info.cuda_toolkit = COLMENA_CUDA_TOOLKIT;
  info.cuda_architectures = COLMENA_CUDA_ARCHITECTURES;
#endif
#ifdef COLMENA_NATIVE_BUILD
  info.native_build = true;
#endif
  for (SimdLevel level : {SimdLevel::baseline, SimdLevel::avx2, SimdLevel::avx512}) {
    if (simd_level_compiled(level)) info.simd_compiled.emplace_back(simd_level_name(level));
    if (simd_level_usable(level)) info.simd_supported.emplace_back(simd_level_name(level));
  }
  info.simd_selected = simd_level_name(active_simd_level());
  info.hardware_threads = std::max(1u, std::thread::hardware_concurrency());
  return info;
}

int cuda_device_count() noexcept {
#ifdef COLMENA_WITH_CUDA
  return cuda::device_count();
#else
  return 0;
#endif
}

std::vector<CudaDeviceInfo> cuda_devices() {
#ifdef COLMENA_WITH_CUDA
  return cuda::devices();
#else
  return {};
#endif
}

}  // namespace colmena
