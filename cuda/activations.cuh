#pragma once
// The activations of the CPU kernels (cpp/src/simd/mlp_kernels.cpp), one lane of them: the same
// IEEE operations in the same order, each spelled as an intrinsic that rounds once
// (__fmul_rn, __fadd_rn, __fdiv_rn, __fmaf_rn), so nvcc contracts nothing (the files are also
// built with -fmad=false) and every float equals the CPU's bit for bit. min / max follow the x86
// rule the CPU kernels rely on: min(a, b) = a < b ? a : b, max(a, b) = a > b ? a : b.
#include <cuda_runtime.h>

#include "colmena/mlp.hpp"

namespace colmena::cuda::detail {

__device__ __forceinline__ float x86_min(float a, float b) { return a < b ? a : b; }
__device__ __forceinline__ float x86_max(float a, float b) { return a > b ? a : b; }
__device__ __forceinline__ float select_less(float x, float limit, float if_less, float other) {
  return x < limit ? if_less : other;
}

// exp(y) for y in [-87, 0]: Cephes expf (the CPU's exp_nonpositive).
__device__ __forceinline__ float exp_nonpositive(float y) {
  const int n_int = __float2int_rn(__fmul_rn(y, 1.44269504088896341f));  // cvtps2dq, to nearest
  const float n = __int2float_rn(n_int);
  float r = __fmaf_rn(n, -0.693359375f, y);
  r = __fmaf_rn(n, 2.12194440e-4f, r);
  float p = 1.9875691500e-4f;
  p = __fmaf_rn(p, r, 1.3981999507e-3f);
  p = __fmaf_rn(p, r, 8.3334519073e-3f);
  p = __fmaf_rn(p, r, 4.1665795894e-2f);
  p = __fmaf_rn(p, r, 1.6666665459e-1f);
  p = __fmaf_rn(p, r, 5.0000001201e-1f);
  p = __fmaf_rn(p, __fmul_rn(r, r), __fadd_rn(r, 1.0f));
  return __fmul_rn(p, __int_as_float((n_int + 127) << 23));
}

__device__ __forceinline__ float tanh_lane(float x) {
  const float a = x86_min(9.0f, fabsf(x));
  const float e = exp_nonpositive(__fmul_rn(a, -2.0f));
  return copysignf(__fdiv_rn(__fsub_rn(1.0f, e), __fadd_rn(1.0f, e)), x);
}

__device__ __forceinline__ float gelu_lane(float x) {
  const float z = __fmul_rn(fabsf(x), 0.70710678118654752f);
  const float za = x86_min(1.0f, z);
  const float t = __fmul_rn(za, za);
  float pa = -0.0005457043298520148f;
  pa = __fmaf_rn(pa, t, 0.004869085270911455f);
  pa = __fmaf_rn(pa, t, -0.0266621932387352f);
  pa = __fmaf_rn(pa, t, 0.11277993768453598f);
  pa = __fmaf_rn(pa, t, -0.3761192560195923f);
  pa = __fmaf_rn(pa, t, 1.1283788681030273f);
  const float erf_small = __fmul_rn(za, pa);
  const float zb = x86_max(1.0f, x86_min(4.0f, z));
  float q = 3.8777062627559644e-07f;
  q = __fmaf_rn(q, zb, -2.722088720474858e-05f);
  q = __fmaf_rn(q, zb, 0.0004751997475977987f);
  q = __fmaf_rn(q, zb, -0.004320641979575157f);
  q = __fmaf_rn(q, zb, 0.025452157482504845f);
  q = __fmaf_rn(q, zb, -0.10874038189649582f);
  q = __fmaf_rn(q, zb, -0.6329593658447266f);
  q = __fmaf_rn(q, zb, -1.1296968460083008f);
  q = __fmaf_rn(q, zb, 0.00021116554853506386f);
  const float erfc_large = select_less(z, 4.0f, exp_nonpositive(q), 0.0f);
  const float lower_tail = select_less(z, 1.0f, __fmaf_rn(erf_small, -0.5f, 0.5f),
                                       __fmul_rn(erfc_large, 0.5f));
  return __fmul_rn(x, select_less(x, 0.0f, lower_tail, __fsub_rn(1.0f, lower_tail)));
}

__device__ __forceinline__ float activate(int activation, float x) {
  switch (activation) {
    case static_cast<int>(Activation::tanh):
      return tanh_lane(x);
    case static_cast<int>(Activation::relu):
      return x86_max(0.0f, x);
    case static_cast<int>(Activation::gelu):
      return gelu_lane(x);
    default:
      return x;
  }
}

}  // namespace colmena::cuda::detail
