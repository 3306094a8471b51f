#pragma once
/// Run-time choice of the instruction-set variant of the hot loops.
///
/// Kernels in cpp/src/simd/ are compiled once per level (portable baseline, AVX2+FMA, AVX-512)
/// with their own flags; the rest of the library stays on the x86-64 baseline. The dispatcher
/// picks the widest level that both was compiled in and is supported by the running CPU. The
/// environment variable COLMENA_SIMD=baseline|avx2|avx512 caps the choice (tests, benchmarks).
#include <string>

namespace colmena {

enum class SimdLevel { baseline = 0, avx2 = 1, avx512 = 2 };

/// Level the kernels run at (cached after the first call).
SimdLevel active_simd_level() noexcept;
/// True when the level was compiled in and the CPU supports it.
bool simd_level_usable(SimdLevel level) noexcept;
/// True when the level was compiled into this build.
bool simd_level_compiled(SimdLevel level) noexcept;
/// Force a level (must be usable); returns false and changes nothing otherwise.
bool set_simd_level(SimdLevel level) noexcept;
const char* simd_level_name(SimdLevel level) noexcept;

}  // namespace colmena
