#pragma once
/// Dense-layer kernels compiled once per SIMD level (cpp/src/simd/mlp_kernels.cpp) and picked at
/// run time, like the FFT kernels (simd_kernels.hpp).
///
/// Internal header: the public operations live in mlp.hpp.
#include <cstddef>

#include "colmena/mlp.hpp"

namespace colmena::simd {

inline constexpr std::size_t kMaxNets = 4;

struct MlpKernelTable {
  /// c[r, :] = act(a[r, :n_in] @ W + b) for r < n_rows, with W and b at w, b in the packed
  /// layout described by `layout` (see DenseLayout). a has row stride lda (only the first n_in
  /// values of a row are read). Wide layers write layout.ld columns of every row of c (the
  /// padding columns get act(0) = 0 for finite input); narrow layers write n_out columns. ldc is
  /// c's row stride in floats.
  void (*dense)(const DenseLayout& layout, const float* w, const float* b, const float* a,
                std::size_t lda, std::size_t n_rows, float* c, std::size_t ldc);
  /// One row through the same layer of `count` (1 .. kMaxNets) networks at once:
  /// c[g][:] = act(a[g][:n_in] @ W_g + b_g) with W_g, b_g at w[g], b[g]. Independent networks
  /// give the FMA units independent chains; each output is summed in the same order as by
  /// `dense`, so the results are bit for bit those of `dense` on each network.
  void (*dense_nets)(const DenseLayout& layout, std::size_t count, const float* const* w,
                     const float* const* b, const float* const* a, float* const* c);
};

/// The table for the active SIMD level (see cpu_features.hpp).
const MlpKernelTable& mlp_kernels() noexcept;

namespace baseline {
extern const MlpKernelTable mlp_table;
}
namespace avx2 {
extern const MlpKernelTable mlp_table;
}
namespace avx512 {
extern const MlpKernelTable mlp_table;
}

}  // namespace colmena::simd
