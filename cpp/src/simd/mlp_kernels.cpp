// Dense-layer kernels of the MLP forward pass: a register-blocked float32 micro-kernel for wide
// layers (rows x 16-float column vectors, one broadcast of the input and one FMA per weight
// vector), dot products for narrow ones, and vectorised activations. This file is compiled once
// per SIMD level (COLMENA_SIMD_LEVEL = baseline | avx2 | avx512) with that level's flags; the
// vector width and register blocking follow from the instruction set the compiler targets.
//
// Every level computes every output with the same operations in the same order, so all levels,
// all row counts and all thread counts give the same bits (the contract in mlp.hpp):
// - wide layers: acc = b[j]; acc = fma(a[k], W[k, j], acc) for k = 0, 1, ..., n_in - 1, one
//   rounding per step; row and column blocking only choose which outputs run side by side;
// - narrow layers: 16 partial sums whatever the vector width (partial l takes k = l, l + 16, ...,
//   fused, zero-padded to a multiple of 16), added by one fixed tree (l + 8, then + 4, + 2, + 1),
//   then + b[j];
// - activations: one lane-wise formula (IEEE add, mul, div, fma, min, max, exponent scaling),
//   identical in every lane and at every width;
// - fma is a fused multiply-add with one rounding at every level: an instruction on AVX2 and
//   AVX-512, an exact emulation on the SSE2 baseline (fma_exact below), std::fma elsewhere. The
//   file is compiled with -ffp-contract=off so the compiler fuses nothing on its own.
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

#if defined(__SSE2__) || defined(_M_X64)
#include <immintrin.h>
#endif

#include "colmena/mlp_kernels.hpp"

#ifndef COLMENA_SIMD_LEVEL
#error "COLMENA_SIMD_LEVEL must name the instruction-set level this file is compiled for"
#endif

#if defined(__GNUC__)
#define COLMENA_UNROLL _Pragma("GCC unroll 16")
#else
#define COLMENA_UNROLL
#endif

namespace colmena::simd::COLMENA_SIMD_LEVEL {
namespace {

// ---------------------------------------------------------------- vector type of this level
// min(a, b) / max(a, b) return b when either is NaN (the x86 rule); callers put the value that
// must propagate NaN second.
#if defined(__AVX512F__)
using V = __m512;
constexpr std::size_t kW = 16;  // floats per vector
constexpr int kBlockRows = 6;   // rows of a micro-kernel block
constexpr int kBlockVecs = 4;   // column vectors of a micro-kernel block (6 x 4 accumulators)
inline V load(const float* p) { return _mm512_loadu_ps(p); }
inline void store(float* p, V v) { _mm512_storeu_ps(p, v); }
inline V set1(float x) { return _mm512_set1_ps(x); }
inline V zero() { return _mm512_setzero_ps(); }
inline V add(V a, V b) { return _mm512_add_ps(a, b); }
inline V sub(V a, V b) { return _mm512_sub_ps(a, b); }
inline V mul(V a, V b) { return _mm512_mul_ps(a, b); }
inline V div(V a, V b) { return _mm512_div_ps(a, b); }
inline V fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
inline V min(V a, V b) { return _mm512_min_ps(a, b); }
inline V max(V a, V b) { return _mm512_max_ps(a, b); }
inline V abs(V a) { return _mm512_abs_ps(a); }
inline V copy_sign(V magnitude, V sign) {
  const __m512i mask = _mm512_set1_epi32(static_cast<int>(0x80000000u));
  return _mm512_castsi512_ps(_mm512_or_epi32(_mm512_castps_si512(magnitude),
                                             _mm512_and_epi32(_mm512_castps_si512(sign), mask)));
}
inline V select_less(V x, V limit, V if_less, V otherwise) {
  return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, limit, _CMP_LT_OQ), otherwise, if_less);
}
using VI = __m512i;
// Rounds t to the nearest integer n: *n_out = n as float, *n_int = n as integer; pow2(n) = 2^n
// for n in [-126, 127].
inline V round_log2(V t, V* n_out, VI* n_int) {
  *n_int = _mm512_cvtps_epi32(t);
  *n_out = _mm512_cvtepi32_ps(*n_int);
  return *n_out;
}
inline V pow2(VI n) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(n, _mm512_set1_epi32(127)), 23));
}
// Halving tree: lanes l + l + 8, then + 4, + 2, + 1 (the order of every level).
inline float reduce_add(V v) {
  const __m256 h = _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}
#elif defined(__AVX2__) && defined(__FMA__)
using V = __m256;
constexpr std::size_t kW = 8;
constexpr int kBlockRows = 6;  // 6 x 2 accumulators of 16 registers
constexpr int kBlockVecs = 2;
inline V load(const float* p) { return _mm256_loadu_ps(p); }
inline void store(float* p, V v) { _mm256_storeu_ps(p, v); }
inline V set1(float x) { return _mm256_set1_ps(x); }
inline V zero() { return _mm256_setzero_ps(); }
inline V add(V a, V b) { return _mm256_add_ps(a, b); }
inline V sub(V a, V b) { return _mm256_sub_ps(a, b); }
inline V mul(V a, V b) { return _mm256_mul_ps(a, b); }
inline V div(V a, V b) { return _mm256_div_ps(a, b); }
inline V fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
inline V min(V a, V b) { return _mm256_min_ps(a, b); }
inline V max(V a, V b) { return _mm256_max_ps(a, b); }
inline V abs(V a) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), a); }
inline V copy_sign(V magnitude, V sign) {
  return _mm256_or_ps(magnitude, _mm256_and_ps(sign, _mm256_set1_ps(-0.0f)));
}
inline V select_less(V x, V limit, V if_less, V otherwise) {
  return _mm256_blendv_ps(otherwise, if_less, _mm256_cmp_ps(x, limit, _CMP_LT_OQ));
}
using VI = __m256i;
inline V round_log2(V t, V* n_out, VI* n_int) {
  *n_int = _mm256_cvtps_epi32(t);
  *n_out = _mm256_cvtepi32_ps(*n_int);
  return *n_out;
}
inline V pow2(VI n) {
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n, _mm256_set1_epi32(127)), 23));
}
inline float reduce_add(V v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}
#elif defined(__SSE2__) || defined(_M_X64)
#define COLMENA_MLP_EMULATED_FMA 1
using V = __m128;
constexpr std::size_t kW = 4;
constexpr int kBlockRows = 6;  // 6 x 2 accumulators of 16 registers
constexpr int kBlockVecs = 2;
inline V load(const float* p) { return _mm_loadu_ps(p); }
inline void store(float* p, V v) { _mm_storeu_ps(p, v); }
inline V set1(float x) { return _mm_set1_ps(x); }
inline V zero() { return _mm_setzero_ps(); }
inline V add(V a, V b) { return _mm_add_ps(a, b); }
inline V sub(V a, V b) { return _mm_sub_ps(a, b); }
inline V mul(V a, V b) { return _mm_mul_ps(a, b); }
inline V div(V a, V b) { return _mm_div_ps(a, b); }
inline V fma(V a, V b, V c);  // exact emulation, defined after the portable fallback
inline V min(V a, V b) { return _mm_min_ps(a, b); }
inline V max(V a, V b) { return _mm_max_ps(a, b); }
inline V abs(V a) { return _mm_andnot_ps(_mm_set1_ps(-0.0f), a); }
inline V copy_sign(V magnitude, V sign) {
  return _mm_or_ps(magnitude, _mm_and_ps(sign, _mm_set1_ps(-0.0f)));
}
inline V select_less(V x, V limit, V if_less, V otherwise) {
  const V m = _mm_cmplt_ps(x, limit);
  return _mm_or_ps(_mm_and_ps(m, if_less), _mm_andnot_ps(m, otherwise));
}
using VI = __m128i;
inline V round_log2(V t, V* n_out, VI* n_int) {
  *n_int = _mm_cvtps_epi32(t);
  *n_out = _mm_cvtepi32_ps(*n_int);
  return *n_out;
}
inline V pow2(VI n) {
  return _mm_castsi128_ps(_mm_slli_epi32(_mm_add_epi32(n, _mm_set1_epi32(127)), 23));
}
inline float reduce_add(V v) {
  V s = _mm_add_ps(v, _mm_movehl_ps(v, v));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}
#else  // portable scalar fallback (non-x86 baseline)
using V = float;
constexpr std::size_t kW = 1;
constexpr int kBlockRows = 4;
constexpr int kBlockVecs = 4;
inline V load(const float* p) { return *p; }
inline void store(float* p, V v) { *p = v; }
inline V set1(float x) { return x; }
inline V zero() { return 0.0f; }
inline V add(V a, V b) { return a + b; }
inline V sub(V a, V b) { return a - b; }
inline V mul(V a, V b) { return a * b; }
inline V div(V a, V b) { return a / b; }
inline V fma(V a, V b, V c) { return std::fma(a, b, c); }
inline V min(V a, V b) { return a < b ? a : b; }
inline V max(V a, V b) { return a > b ? a : b; }
inline V abs(V a) { return std::fabs(a); }
inline V copy_sign(V magnitude, V sign) { return std::copysign(magnitude, sign); }
inline V select_less(V x, V limit, V if_less, V otherwise) {
  return x < limit ? if_less : otherwise;
}
using VI = int;
inline V round_log2(V t, V* n_out, VI* n_int) {
  *n_out = std::nearbyint(t);
  *n_int = std::isfinite(*n_out) ? static_cast<int>(*n_out) : 0;
  return *n_out;
}
inline V pow2(VI n) { return std::ldexp(1.0f, n); }
inline float reduce_add(V v) { return v; }
#endif

// fma(a, b, c) rounded once, from double arithmetic (for the SSE2 baseline, which has no FMA
// instruction). a * b is exact in double (24 + 24 bits <= 53); s = a * b + c rounded to double;
// round to odd (Boldo and Melquiond, 2008: move s one double ulp towards the exact sum when the
// addition was inexact and s is even), then to float: the correctly rounded float result.
[[maybe_unused]] inline float fma_exact(float a, float b, float c) {
  const double p = static_cast<double>(a) * static_cast<double>(b);
  const double cd = c;
  const double s = p + cd;
  if (!std::isfinite(s)) return static_cast<float>(s);
  const double bv = s - p;  // TwoSum (Knuth): s + e == p + c exactly
  const double e = (p - (s - bv)) + (cd - bv);
  std::uint64_t bits = std::bit_cast<std::uint64_t>(s);
  if (e != 0.0 && (bits & 1u) == 0) {
    if (std::signbit(s) == std::signbit(e)) {
      ++bits;
    } else {
      --bits;
    }
  }
  return static_cast<float>(std::bit_cast<double>(bits));
}

#ifdef COLMENA_MLP_EMULATED_FMA
// Nonzero when a lane of s (two doubles, each a * b + c rounded to double) may not round to
// fma(a, b, c) by a plain conversion: s exactly halfway between two floats (low 29 mantissa bits
// 1 << 28; the addition may have been inexact, and the tie would be broken the wrong way), or s
// in float's subnormal range. Otherwise s and the exact sum lie strictly between the same two
// float rounding boundaries, which are doubles, and round to the same float.
inline int needs_exact(__m128d s) {
  const __m128i low =
      _mm_and_si128(_mm_castpd_si128(s), _mm_set_epi32(0, 0x1FFFFFFF, 0, 0x1FFFFFFF));
  const __m128i halfway = _mm_cmpeq_epi32(low, _mm_set_epi32(0, 0x10000000, 0, 0x10000000));
  const __m128d magnitude = _mm_andnot_pd(_mm_set1_pd(-0.0), s);
  const __m128d tiny = _mm_and_pd(_mm_cmplt_pd(magnitude, _mm_set1_pd(0x1p-126)),
                                  _mm_cmpgt_pd(magnitude, _mm_setzero_pd()));
  return (_mm_movemask_ps(_mm_castsi128_ps(halfway)) & 0x5) | _mm_movemask_pd(tiny);
}

// The bits of _mm_fmadd_ps: two doubles at a time, fma_exact on the rare lanes that need it.
inline V fma(V a, V b, V c) {
  const __m128d s0 = _mm_add_pd(_mm_mul_pd(_mm_cvtps_pd(a), _mm_cvtps_pd(b)), _mm_cvtps_pd(c));
  const __m128d s1 =
      _mm_add_pd(_mm_mul_pd(_mm_cvtps_pd(_mm_movehl_ps(a, a)), _mm_cvtps_pd(_mm_movehl_ps(b, b))),
                 _mm_cvtps_pd(_mm_movehl_ps(c, c)));
  if ((needs_exact(s0) | needs_exact(s1)) != 0) [[unlikely]] {
    alignas(16) float fa[4], fb[4], fc[4];
    _mm_store_ps(fa, a);
    _mm_store_ps(fb, b);
    _mm_store_ps(fc, c);
    for (int i = 0; i < 4; ++i) fa[i] = fma_exact(fa[i], fb[i], fc[i]);
    return _mm_load_ps(fa);
  }
  return _mm_movelh_ps(_mm_cvtpd_ps(s0), _mm_cvtpd_ps(s1));
}
#endif

// ---------------------------------------------------------------- activations
// exp(y) for y in [-87, 0] (Cephes expf: round to n * ln 2, degree-5 polynomial on the
// remainder, scale by 2^n); relative error under 1e-7. NaN in, NaN out.
inline V exp_nonpositive(V y) {
  V n;
  VI n_int;
  round_log2(mul(y, set1(1.44269504088896341f)), &n, &n_int);
  V r = fma(n, set1(-0.693359375f), y);
  r = fma(n, set1(2.12194440e-4f), r);
  V p = set1(1.9875691500e-4f);
  p = fma(p, r, set1(1.3981999507e-3f));
  p = fma(p, r, set1(8.3334519073e-3f));
  p = fma(p, r, set1(4.1665795894e-2f));
  p = fma(p, r, set1(1.6666665459e-1f));
  p = fma(p, r, set1(5.0000001201e-1f));
  p = fma(p, mul(r, r), add(r, set1(1.0f)));
  return mul(p, pow2(n_int));
}

// tanh(x) = sign(x) (1 - e) / (1 + e) with e = exp(-2 |x|); |x| is capped at 9, past which
// float32 tanh is +-1. Absolute error under 1e-7.
inline V tanh_v(V x) {
  const V a = min(set1(9.0f), abs(x));
  const V e = exp_nonpositive(mul(a, set1(-2.0f)));
  const V one = set1(1.0f);
  return copy_sign(div(sub(one, e), add(one, e)), x);
}

// gelu(x) = x Phi(x), Phi the standard normal CDF, through erf(z), z = |x| / sqrt(2):
// z < 1: erf(z) = z P(z^2) (degree 5); 1 <= z < 4: erfc(z) = exp(Q(z)) (Q of degree 8 fitted to
// log erfc); z >= 4: erfc(z) = 0. Phi(-|x|) = erfc(z) / 2 keeps the negative tail accurate.
// Absolute error under 2e-7 of max(|gelu(x)|, 1).
inline V gelu_v(V x) {
  const V one = set1(1.0f);
  const V half = set1(0.5f);
  const V four = set1(4.0f);
  const V z = mul(abs(x), set1(0.70710678118654752f));
  const V za = min(one, z);
  const V t = mul(za, za);
  V pa = set1(-0.0005457043298520148f);
  pa = fma(pa, t, set1(0.004869085270911455f));
  pa = fma(pa, t, set1(-0.0266621932387352f));
  pa = fma(pa, t, set1(0.11277993768453598f));
  pa = fma(pa, t, set1(-0.3761192560195923f));
  pa = fma(pa, t, set1(1.1283788681030273f));
  const V erf_small = mul(za, pa);
  const V zb = max(one, min(four, z));
  V q = set1(3.8777062627559644e-07f);
  q = fma(q, zb, set1(-2.722088720474858e-05f));
  q = fma(q, zb, set1(0.0004751997475977987f));
  q = fma(q, zb, set1(-0.004320641979575157f));
  q = fma(q, zb, set1(0.025452157482504845f));
  q = fma(q, zb, set1(-0.10874038189649582f));
  q = fma(q, zb, set1(-0.6329593658447266f));
  q = fma(q, zb, set1(-1.1296968460083008f));
  q = fma(q, zb, set1(0.00021116554853506386f));
  const V erfc_large = select_less(z, four, exp_nonpositive(q), zero());
  const V lower_tail =  // Phi(-|x|)
      select_less(z, one, fma(erf_small, set1(-0.5f), half), mul(erfc_large, half));
  return mul(x, select_less(x, zero(), lower_tail, sub(one, lower_tail)));
}

template <Activation A>
inline V apply(V x) {
  if constexpr (A == Activation::identity) {
    return x;
  } else if constexpr (A == Activation::relu) {
    return max(zero(), x);
  } else if constexpr (A == Activation::tanh) {
    return tanh_v(x);
  } else {
    return gelu_v(x);
  }
}

template <Activation A>
void activate_span(float* x, std::size_t n) {
  if constexpr (A == Activation::identity) return;
  std::size_t i = 0;
  for (; i + kW <= n; i += kW) store(x + i, apply<A>(load(x + i)));
  if (i < n) {
    alignas(64) float tail[kW] = {};
    std::memcpy(tail, x + i, (n - i) * sizeof(float));
    store(tail, apply<A>(load(tail)));
    std::memcpy(x + i, tail, (n - i) * sizeof(float));
  }
}

// ---------------------------------------------------------------- wide layers
// c[r, j] = act(b[j] + sum_k a[r, k] w[k, j]) for R rows and NV column vectors.
template <int R, int NV, Activation A>
inline void wide_block(const float* __restrict a, std::size_t lda, const float* __restrict w,
                       std::size_t ldw, std::size_t k_count, const float* __restrict b,
                       float* __restrict c, std::size_t ldc) {
  V acc[R][NV];
  COLMENA_UNROLL
  for (int j = 0; j < NV; ++j) {
    const V bj = load(b + j * kW);
    COLMENA_UNROLL
    for (int r = 0; r < R; ++r) acc[r][j] = bj;
  }
  for (std::size_t k = 0; k < k_count; ++k) {
    const float* wk = w + k * ldw;
    V wv[NV];
    COLMENA_UNROLL
    for (int j = 0; j < NV; ++j) wv[j] = load(wk + j * kW);
    COLMENA_UNROLL
    for (int r = 0; r < R; ++r) {
      const V ar = set1(a[r * lda + k]);
      COLMENA_UNROLL
      for (int j = 0; j < NV; ++j) acc[r][j] = fma(ar, wv[j], acc[r][j]);
    }
  }
  COLMENA_UNROLL
  for (int r = 0; r < R; ++r) {
    COLMENA_UNROLL
    for (int j = 0; j < NV; ++j) store(c + r * ldc + j * kW, apply<A>(acc[r][j]));
  }
}

template <int R, int NV, Activation A>
inline void wide_columns_tail(std::size_t vecs, const float* a, std::size_t lda, const float* w,
                              std::size_t ldw, std::size_t k_count, const float* b, float* c,
                              std::size_t ldc) {
  if constexpr (NV > 0) {
    if (vecs == NV) {
      wide_block<R, NV, A>(a, lda, w, ldw, k_count, b, c, ldc);
    } else {
      wide_columns_tail<R, NV - 1, A>(vecs, a, lda, w, ldw, k_count, b, c, ldc);
    }
  }
}

template <int R, Activation A>
void wide_rows(const float* a, std::size_t lda, const float* w, std::size_t ldw,
               std::size_t k_count, const float* b, float* c, std::size_t ldc, std::size_t vecs) {
  std::size_t v = 0;
  for (; v + kBlockVecs <= vecs; v += kBlockVecs) {
    wide_block<R, kBlockVecs, A>(a, lda, w + v * kW, ldw, k_count, b + v * kW, c + v * kW, ldc);
  }
  if (v < vecs) {
    wide_columns_tail<R, kBlockVecs - 1, A>(vecs - v, a, lda, w + v * kW, ldw, k_count, b + v * kW,
                                            c + v * kW, ldc);
  }
}

template <int R, Activation A>
inline void wide_rows_tail(std::size_t rows, const float* a, std::size_t lda, const float* w,
                           std::size_t ldw, std::size_t k_count, const float* b, float* c,
                           std::size_t ldc, std::size_t vecs) {
  if constexpr (R > 0) {
    if (rows == R) {
      wide_rows<R, A>(a, lda, w, ldw, k_count, b, c, ldc, vecs);
    } else {
      wide_rows_tail<R - 1, A>(rows, a, lda, w, ldw, k_count, b, c, ldc, vecs);
    }
  }
}

template <Activation A>
void dense_wide(const DenseLayout& layout, const float* w, const float* b, const float* a,
                std::size_t lda, std::size_t n_rows, float* c, std::size_t ldc) {
  const std::size_t vecs = layout.ld / kW;
  std::size_t r = 0;
  for (; r + kBlockRows <= n_rows; r += kBlockRows) {
    wide_rows<kBlockRows, A>(a + r * lda, lda, w, layout.ld, layout.n_in, b, c + r * ldc, ldc,
                             vecs);
  }
  if (r < n_rows) {
    wide_rows_tail<kBlockRows - 1, A>(n_rows - r, a + r * lda, lda, w, layout.ld, layout.n_in, b,
                                      c + r * ldc, ldc, vecs);
  }
}

// ---------------------------------------------------------------- narrow layers
// W is stored transposed, [n_out, ld] with ld = n_in rounded up to kSplit (zero padding): each
// output is a dot product along the input row, split into kSplit partial sums whatever the
// vector width, so that every level adds the same terms in the same order.
constexpr std::size_t kSplit = 16;
static_assert(DenseLayout::kPad % kSplit == 0, "narrow rows must hold whole partial blocks");
constexpr std::size_t kSplitVecs = kSplit / kW;
static_assert(kSplit % kW == 0, "a vector must divide the partial sums");

// Sum of the kSplit partials in s[0 .. kSplitVecs) (partial v * kW + l in lane l of s[v]): the
// halving tree l + l + 8, + 4, + 2, + 1, across vectors first, then inside the last one.
inline float sum_partials(V* s) {
  COLMENA_UNROLL
  for (std::size_t n = kSplitVecs; n > 1; n /= 2) {
    COLMENA_UNROLL
    for (std::size_t v = 0; v < n / 2; ++v) s[v] = add(s[v], s[v + n / 2]);
  }
  return reduce_add(s[0]);
}

template <Activation A>
void dense_narrow(const DenseLayout& layout, const float* w, const float* b, const float* a,
                  std::size_t lda, std::size_t n_rows, float* c, std::size_t ldc) {
  const std::size_t n_in = layout.n_in;
  const std::size_t full = n_in / kSplit * kSplit;
  alignas(64) float tail[kSplit];  // the row's last partial block, zero-padded
  for (std::size_t r = 0; r < n_rows; ++r) {
    const float* ar = a + r * lda;
    float* cr = c + r * ldc;
    if (full < n_in) {
      std::memset(tail, 0, sizeof(tail));
      std::memcpy(tail, ar + full, (n_in - full) * sizeof(float));
    }
    for (std::size_t j = 0; j < layout.n_out; ++j) {
      const float* wj = w + j * layout.ld;
      V s[kSplitVecs];
      COLMENA_UNROLL
      for (std::size_t v = 0; v < kSplitVecs; ++v) s[v] = zero();
      for (std::size_t k = 0; k < full; k += kSplit) {
        COLMENA_UNROLL
        for (std::size_t v = 0; v < kSplitVecs; ++v) {
          s[v] = fma(load(ar + k + v * kW), load(wj + k + v * kW), s[v]);
        }
      }
      if (full < n_in) {
        COLMENA_UNROLL
        for (std::size_t v = 0; v < kSplitVecs; ++v) {
          s[v] = fma(load(tail + v * kW), load(wj + full + v * kW), s[v]);
        }
      }
      cr[j] = sum_partials(s) + b[j];
    }
  }
  if constexpr (A != Activation::identity) {
    if (ldc == layout.n_out) {
      activate_span<A>(c, n_rows * ldc);
    } else {
      for (std::size_t r = 0; r < n_rows; ++r) activate_span<A>(c + r * ldc, layout.n_out);
    }
  }
}

// ---------------------------------------------------------------- one row, several networks
template <int G, int NV, Activation A>
inline void nets_block(const float* const* a, const float* const* w, std::size_t ldw,
                       std::size_t k_count, const float* const* b, float* const* c,
                       std::size_t col) {
  V acc[G][NV];
  COLMENA_UNROLL
  for (int g = 0; g < G; ++g) {
    COLMENA_UNROLL
    for (int j = 0; j < NV; ++j) acc[g][j] = load(b[g] + col + j * kW);
  }
  for (std::size_t k = 0; k < k_count; ++k) {
    COLMENA_UNROLL
    for (int g = 0; g < G; ++g) {
      const V ag = set1(a[g][k]);
      const float* wk = w[g] + k * ldw + col;
      COLMENA_UNROLL
      for (int j = 0; j < NV; ++j) acc[g][j] = fma(ag, load(wk + j * kW), acc[g][j]);
    }
  }
  COLMENA_UNROLL
  for (int g = 0; g < G; ++g) {
    COLMENA_UNROLL
    for (int j = 0; j < NV; ++j) store(c[g] + col + j * kW, apply<A>(acc[g][j]));
  }
}

template <int G, int NV, Activation A>
inline void nets_columns_tail(std::size_t vecs, const float* const* a, const float* const* w,
                              std::size_t ldw, std::size_t k_count, const float* const* b,
                              float* const* c, std::size_t col) {
  if constexpr (NV > 0) {
    if (vecs == NV) {
      nets_block<G, NV, A>(a, w, ldw, k_count, b, c, col);
    } else {
      nets_columns_tail<G, NV - 1, A>(vecs, a, w, ldw, k_count, b, c, col);
    }
  }
}

template <int G, Activation A>
void nets_wide(const DenseLayout& layout, const float* const* w, const float* const* b,
               const float* const* a, float* const* c) {
  const std::size_t vecs = layout.ld / kW;
  std::size_t v = 0;
  for (; v + kBlockVecs <= vecs; v += kBlockVecs) {
    nets_block<G, kBlockVecs, A>(a, w, layout.ld, layout.n_in, b, c, v * kW);
  }
  if (v < vecs) {
    nets_columns_tail<G, kBlockVecs - 1, A>(vecs - v, a, w, layout.ld, layout.n_in, b, c, v * kW);
  }
}

template <Activation A>
void nets_wide_count(const DenseLayout& layout, std::size_t count, const float* const* w,
                     const float* const* b, const float* const* a, float* const* c) {
  static_assert(kMaxNets == 4);
  switch (count) {
    case 1:
      return nets_wide<1, A>(layout, w, b, a, c);
    case 2:
      return nets_wide<2, A>(layout, w, b, a, c);
    case 3:
      return nets_wide<3, A>(layout, w, b, a, c);
    default:
      return nets_wide<4, A>(layout, w, b, a, c);
  }
}

template <Activation A>
void dense_as(const DenseLayout& layout, const float* w, const float* b, const float* a,
              std::size_t lda, std::size_t n_rows, float* c, std::size_t ldc) {
  if (layout.narrow) {
    dense_narrow<A>(layout, w, b, a, lda, n_rows, c, ldc);
  } else {
    dense_wide<A>(layout, w, b, a, lda, n_rows, c, ldc);
  }
}

void dense(const DenseLayout& layout, const float* w, const float* b, const float* a,
           std::size_t lda, std::size_t n_rows, float* c, std::size_t ldc) {
  switch (layout.activation) {
    case Activation::identity:
      return dense_as<Activation::identity>(layout, w, b, a, lda, n_rows, c, ldc);
    case Activation::tanh:
      return dense_as<Activation::tanh>(layout, w, b, a, lda, n_rows, c, ldc);
    case Activation::relu:
      return dense_as<Activation::relu>(layout, w, b, a, lda, n_rows, c, ldc);
    case Activation::gelu:
      return dense_as<Activation::gelu>(layout, w, b, a, lda, n_rows, c, ldc);
  }
}

void dense_nets(const DenseLayout& layout, std::size_t count, const float* const* w,
                const float* const* b, const float* const* a, float* const* c) {
  if (layout.narrow) {  // dot products: already independent per output
    for (std::size_t g = 0; g < count; ++g) dense(layout, w[g], b[g], a[g], 0, 1, c[g], 0);
    return;
  }
  switch (layout.activation) {
    case Activation::identity:
      return nets_wide_count<Activation::identity>(layout, count, w, b, a, c);
    case Activation::tanh:
      return nets_wide_count<Activation::tanh>(layout, count, w, b, a, c);
    case Activation::relu:
      return nets_wide_count<Activation::relu>(layout, count, w, b, a, c);
    case Activation::gelu:
      return nets_wide_count<Activation::gelu>(layout, count, w, b, a, c);
  }
}

}  // namespace

const MlpKernelTable mlp_table = {&dense, &dense_nets};

}  // namespace colmena::simd::COLMENA_SIMD_LEVEL
