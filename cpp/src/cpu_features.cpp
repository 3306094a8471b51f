#include "colmena/cpu_features.hpp"

#include <atomic>
#include <cstdlib>
#include <cstring>

namespace colmena {
namespace {

bool cpu_supports(SimdLevel level) noexcept {
#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
  switch (level) {
    case SimdLevel::baseline:
      return true;
    case SimdLevel::avx2:
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case SimdLevel::avx512:
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
             __builtin_cpu_supports("avx512vl");
  }
  return false;
#else
  return level == SimdLevel::baseline;
#endif
}

SimdLevel detect() noexcept {
  SimdLevel best = SimdLevel::baseline;
  for (SimdLevel level : {SimdLevel::avx2, SimdLevel::avx512}) {
    if (simd_level_usable(level)) best = level;
  }
  if (const char* cap = std::getenv("COLMENA_SIMD")) {
    SimdLevel wanted = best;
    if (std::strcmp(cap, "baseline") == 0) wanted = SimdLevel::baseline;
    if (std::strcmp(cap, "avx2") == 0) wanted = SimdLevel::avx2;
    if (std::strcmp(cap, "avx512") == 0) wanted = SimdLevel::avx512;
    if (static_cast<int>(wanted) < static_cast<int>(best) && simd_level_usable(wanted))
      best = wanted;
  }
  return best;
}

std::atomic<int> g_level{-1};

}  // namespace

bool simd_level_compiled(SimdLevel level) noexcept {
  switch (level) {
    case SimdLevel::baseline:
      return true;
    case SimdLevel::avx2:
#ifdef COLMENA_HAVE_SIMD_avx2
      return true;
#else
      return false;
#endif
    case SimdLevel::avx512:
#ifdef COLMENA_HAVE_SIMD_avx512
      return true;
#else
      return false;
#endif
  }
  return false;
}

bool simd_level_usable(SimdLevel level) noexcept {
  return simd_level_compiled(level) && cpu_supports(level);
}

SimdLevel active_simd_level() noexcept {
  int level = g_level.load(std::memory_order_relaxed);
  if (level < 0) {
    level = static_cast<int>(detect());
    g_level.store(level, std::memory_order_relaxed);
  }
  return static_cast<SimdLevel>(level);
}

bool set_simd_level(SimdLevel level) noexcept {
  if (!simd_level_usable(level)) return false;
  g_level.store(static_cast<int>(level), std::memory_order_relaxed);
  return true;
}

const char* simd_level_name(SimdLevel level) noexcept {
  switch (level) {
    case SimdLevel::baseline:
      return "baseline";
    case SimdLevel::avx2:
      return "avx2";
    case SimdLevel::avx512:
      return "avx512";
  }
  return "unknown";
}

}  // namespace colmena

#include "colmena/simd_kernels.hpp"

namespace colmena::simd {

const KernelTable& kernels() noexcept {
  switch (active_simd_level()) {
#ifdef COLMENA_HAVE_SIMD_avx512
    case SimdLevel::avx512:
      return avx512::table;
#endif
#ifdef COLMENA_HAVE_SIMD_avx2
    case SimdLevel::avx2:
      return avx2::table;
#endif
    default:
      return baseline::table;
  }
}

}  // namespace colmena::simd
