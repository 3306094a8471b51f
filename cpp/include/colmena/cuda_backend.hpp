#pragma once
/// Entry points of the CUDA backend (cuda/). Declared here, in plain C++, so the core can call
/// them without CUDA headers; only built with COLMENA_CUDA.
#include <vector>

#include "colmena/build_info.hpp"

namespace colmena::cuda {

/// Visible devices; 0 when the driver is missing or reports an error (never throws).
int device_count() noexcept;
/// Properties of every visible device.
std::vector<CudaDeviceInfo> devices();

}  // namespace colmena::cuda
