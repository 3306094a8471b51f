#pragma once
// The dense-layer arithmetic of the CUDA kernels, host-compilable: nvcc compiles it for the
// device; a plain C++ compiler (with -ffp-contract=off) compiles the same source for the host,
// which is how tests/test_cuda_emulation.py checks it against the CPU core bit for bit on a
// machine without a GPU.
//
// The activations of the CPU kernels (cpp/src/simd/mlp_kernels.cpp), one lane of them: the same
// IEEE operations in the same order, each spelled as an intrinsic that rounds once
// (__fmul_rn, __fadd_rn, __fdiv_rn, __fmaf_rn), so nvcc contracts nothing (the files are also
// built with -fmad=false) and every float equals the CPU's bit for bit. min / max follow the x86
// rule the CPU kernels rely on: min(a, b) = a < b ? a : b, max(a, b) = a > b ? a : b.
#include <cmath>
#include <cstdint>
#include <cstring>

#include "colmena/mlp.hpp"

#if defined(__CUDACC__)
#include <cuda_runtime.h>
#define COLMENA_HD __host__ __device__ __forceinline__
#else
#define COLMENA_HD inline
#endif

namespace colmena::cuda::detail {

// One rounding each: the device intrinsics, or IEEE float operations on the host (the file is
// compiled there with -ffp-contract=off).
COLMENA_HD float f_mul(float a, float b) {
#if defined(__CUDA_ARCH__)
  return f_mul(a, b);
#else
  return a * b;
#endif
}
COLMENA_HD float f_add(float a, float b) {
#if defined(__CUDA_ARCH__)
  return f_add(a, b);
#else
  return a + b;
#endif
}
COLMENA_HD float f_sub(float a, float b) {
#if defined(__CUDA_ARCH__)
  return f_sub(a, b);
#else
  return a - b;
#endif
}
COLMENA_HD float f_div(float a, float b) {
#if defined(__CUDA_ARCH__)
  return f_div(a, b);
#else
  return a / b;
#endif
}
COLMENA_HD float f_fma(float a, float b, float c) {
#if defined(__CUDA_ARCH__)
  return f_fma(a, b, c);
#else
  return std::fma(a, b, c);
#endif
}
// Round to the nearest integer, ties to even (cvtps2dq under the default MXCSR). Out of range
// or NaN: the device saturates, x86 gives INT_MIN; only NaN inputs get there, and their results
// are NaN either way.
COLMENA_HD int f_round_int(float x) {
#if defined(__CUDA_ARCH__)
  return __float2int_rn(x);
#else
  return std::isfinite(x) && std::fabs(x) < 2147483520.0f ? static_cast<int>(std::nearbyint(x))
                                                          : INT32_MIN;
#endif
}
COLMENA_HD float f_pow2(int n) {  // 2^n for n in [-126, 127], built from the exponent bits
  const std::uint32_t bits = static_cast<std::uint32_t>(n + 127) << 23;
#if defined(__CUDA_ARCH__)
  return __uint_as_float(bits);
#else
  float out;
  std::memcpy(&out, &bits, sizeof out);
  return out;
#endif
}

COLMENA_HD float x86_min(float a, float b) { return a < b ? a : b; }
COLMENA_HD float x86_max(float a, float b) { return a > b ? a : b; }
COLMENA_HD float select_less(float x, float limit, float if_less, float other) {
  return x < limit ? if_less : other;
}

// exp(y) for y in [-87, 0]: Cephes expf (the CPU's exp_nonpositive).
COLMENA_HD float exp_nonpositive(float y) {
  const int n_int = f_round_int(f_mul(y, 1.44269504088896341f));
  const float n = static_cast<float>(n_int);
  float r = f_fma(n, -0.693359375f, y);
  r = f_fma(n, 2.12194440e-4f, r);
  float p = 1.9875691500e-4f;
  p = f_fma(p, r, 1.3981999507e-3f);
  p = f_fma(p, r, 8.3334519073e-3f);
  p = f_fma(p, r, 4.1665795894e-2f);
  p = f_fma(p, r, 1.6666665459e-1f);
  p = f_fma(p, r, 5.0000001201e-1f);
  p = f_fma(p, f_mul(r, r), f_add(r, 1.0f));
  return f_mul(p, f_pow2(n_int));
}

COLMENA_HD float tanh_lane(float x) {
  const float a = x86_min(9.0f, std::fabs(x));
  const float e = exp_nonpositive(f_mul(a, -2.0f));
  return std::copysign(f_div(f_sub(1.0f, e), f_add(1.0f, e)), x);
}

COLMENA_HD float gelu_lane(float x) {
  const float z = f_mul(std::fabs(x), 0.70710678118654752f);
  const float za = x86_min(1.0f, z);
  const float t = f_mul(za, za);
  float pa = -0.0005457043298520148f;
  pa = f_fma(pa, t, 0.004869085270911455f);
  pa = f_fma(pa, t, -0.0266621932387352f);
  pa = f_fma(pa, t, 0.11277993768453598f);
  pa = f_fma(pa, t, -0.3761192560195923f);
  pa = f_fma(pa, t, 1.1283788681030273f);
  const float erf_small = f_mul(za, pa);
  const float zb = x86_max(1.0f, x86_min(4.0f, z));
  float q = 3.8777062627559644e-07f;
  q = f_fma(q, zb, -2.722088720474858e-05f);
  q = f_fma(q, zb, 0.0004751997475977987f);
  q = f_fma(q, zb, -0.004320641979575157f);
  q = f_fma(q, zb, 0.025452157482504845f);
  q = f_fma(q, zb, -0.10874038189649582f);
  q = f_fma(q, zb, -0.6329593658447266f);
  q = f_fma(q, zb, -1.1296968460083008f);
  q = f_fma(q, zb, 0.00021116554853506386f);
  const float erfc_large = select_less(z, 4.0f, exp_nonpositive(q), 0.0f);
  const float lower_tail = select_less(z, 1.0f, f_fma(erf_small, -0.5f, 0.5f),
                                       f_mul(erfc_large, 0.5f));
  return f_mul(x, select_less(x, 0.0f, lower_tail, f_sub(1.0f, lower_tail)));
}

COLMENA_HD float activate(int activation, float x) {
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

// One dense layer of one network, as the kernels see it.
struct LayerDesc {
  int n_in;
  int n_out;
  int activation;
  int head;            // -1 for a trunk layer, else the head's index
  long long w_offset;  // floats from the storage base: W [n_nets, n_in, n_out]
  long long b_offset;  // b [n_nets, n_out]
};

inline constexpr int kSplit = 16;  // partial sums of a narrow layer (mlp.hpp)
inline constexpr int kNarrowWidth = static_cast<int>(DenseLayout::kNarrowWidth);

// Output unit j of a dense layer for one input vector a (n_in values, a[k] at a[k * as]):
// W [n_in, n_out] at w, b [n_out] at b, in the CPU kernels' order (mlp.hpp, "Determinism").
COLMENA_HD float dense_unit(const LayerDesc& L, const float* __restrict__ w,
                            const float* __restrict__ b, const float* a, int as, int j) {
  if (L.n_out >= kNarrowWidth) {  // wide: b[j], then fused multiply-adds in k order
    float acc = b[j];
    for (int k = 0; k < L.n_in; ++k) acc = f_fma(a[k * as], w[k * L.n_out + j], acc);
    return activate(L.activation, acc);
  }
  // narrow: 16 partials over k = l, l + 16, ... (zero-padded), the halving tree, then + b[j]
  float s[kSplit];
  for (int l = 0; l < kSplit; ++l) s[l] = 0.0f;
  const int padded = (L.n_in + kSplit - 1) / kSplit * kSplit;
  for (int k0 = 0; k0 < padded; k0 += kSplit) {
    for (int l = 0; l < kSplit; ++l) {
      const int k = k0 + l;
      const float av = k < L.n_in ? a[k * as] : 0.0f;
      const float wv = k < L.n_in ? w[k * L.n_out + j] : 0.0f;
      s[l] = f_fma(av, wv, s[l]);
    }
  }
  for (int half = kSplit / 2; half >= 1; half /= 2) {
    for (int l = 0; l < half; ++l) s[l] = f_add(s[l], s[l + half]);
  }
  return activate(L.activation, f_add(s[0], b[j]));
}

// A wide layer of exactly H outputs with its H accumulators in registers: for each k in order,
// a[k] once, then acc[j] = fma(a[k], W[k, j], acc[j]) for every j. Each output sees the same
// operations in the same order as dense_unit (b[j], then k = 0, 1, ...), so the same bits; the
// loop order only lets one a[k] and one row of W feed H accumulators. out[j * os]; out may be
// the input buffer (every a[k] is read before any output is written). When W lives in shared
// memory 16-byte aligned (w4), its rows are read four floats at a time.
template <int H>
COLMENA_HD void wide_layer(const LayerDesc& L, const float* __restrict__ w,
                           const float* __restrict__ b, const float* a, int as, float* out,
                           int os, bool w_aligned) {
  float acc[H];
#pragma unroll
  for (int j = 0; j < H; ++j) acc[j] = b[j];
  for (int k = 0; k < L.n_in; ++k) {
    const float ak = a[k * as];
    const float* wk = w + k * H;
#if defined(__CUDA_ARCH__)
    if (w_aligned) {
      const float4* wk4 = reinterpret_cast<const float4*>(wk);
#pragma unroll
      for (int q = 0; q < H / 4; ++q) {
        const float4 v = wk4[q];
        acc[4 * q] = f_fma(ak, v.x, acc[4 * q]);
        acc[4 * q + 1] = f_fma(ak, v.y, acc[4 * q + 1]);
        acc[4 * q + 2] = f_fma(ak, v.z, acc[4 * q + 2]);
        acc[4 * q + 3] = f_fma(ak, v.w, acc[4 * q + 3]);
      }
      continue;
    }
#endif
#pragma unroll
    for (int j = 0; j < H; ++j) acc[j] = f_fma(ak, wk[j], acc[j]);
  }
#pragma unroll
  for (int j = 0; j < H; ++j) out[j * os] = activate(L.activation, acc[j]);
}

// One dense layer for one input vector: the register path for the widths it is compiled for,
// else one dense_unit per output (out must not alias a there).
COLMENA_HD void dense_layer(const LayerDesc& L, const float* __restrict__ w,
                            const float* __restrict__ b, const float* a, int as, float* out,
                            int os, bool w_aligned) {
  switch (L.n_out) {
    case 8:
      return wide_layer<8>(L, w, b, a, as, out, os, w_aligned);
    case 16:
      return wide_layer<16>(L, w, b, a, as, out, os, w_aligned);
    case 32:
      return wide_layer<32>(L, w, b, a, as, out, os, w_aligned);
    case 64:
      return wide_layer<64>(L, w, b, a, as, out, os, w_aligned);
    case 128:
      return wide_layer<128>(L, w, b, a, as, out, os, w_aligned);
    default:
      for (int j = 0; j < L.n_out; ++j) out[j * os] = dense_unit(L, w, b, a, as, j);
  }
}

// Every layer of one network for one input row x (x[k], k < n_in of layer 0): the trunk into
// the ping-pong buffers act0 / act1 (element k at [k * stride]), each head h into
// head_out[h][0 .. n_out) (skipped when null). w[l], b[l]: layer l's weights of this network.
// The rows kernel runs this per thread; tests/cuda_emulation.cpp runs it on the host.
COLMENA_HD void forward_row(const LayerDesc* layers, int n_layers, const float* const* w,
                            const float* const* b, bool w_aligned, const float* x, float* act0,
                            float* act1, int stride, float* const* head_out) {
  const float* a = x;
  int as = 1;
  float* next = act0;
  for (int l = 0; l < n_layers; ++l) {
    const LayerDesc& L = layers[l];
    if (L.head < 0) {
      dense_layer(L, w[l], b[l], a, as, next, stride, w_aligned);
      a = next;
      as = stride;
      next = next == act0 ? act1 : act0;
    } else if (head_out[L.head] != nullptr) {
      dense_layer(L, w[l], b[l], a, as, head_out[L.head], 1, w_aligned);
    }
  }
}

}  // namespace colmena::cuda::detail
