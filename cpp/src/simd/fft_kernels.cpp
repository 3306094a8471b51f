// Hot loops of the FFT, the convolution and the dot product. This file is compiled once per SIMD
// level (COLMENA_SIMD_LEVEL = baseline | avx2 | avx512) with that level's flags; the loops are
// written so that the compiler turns the innermost one (over the kLanes lanes of a panel, or over
// a block of outputs) into vertical vector operations, with no intrinsics and no shuffles.
#include <algorithm>
#include <cmath>
#include <cstddef>

#include "colmena/simd_kernels.hpp"

#ifndef COLMENA_SIMD_LEVEL
#error "COLMENA_SIMD_LEVEL must name the instruction-set level this file is compiled for"
#endif

namespace colmena::simd::COLMENA_SIMD_LEVEL {
namespace {

constexpr std::size_t L = kLanes;
// Once a block of rows fits in L1 (kDepthFirstRows * kLanes * 16 bytes = 32 KiB), all remaining
// stages run on that block before moving on.
constexpr std::size_t kDepthFirstRows = 256;
constexpr std::size_t kMaxStages = 64;

struct StagePlan {
  std::size_t size[kMaxStages];  // block size m of each stage, largest first
  std::size_t count = 0;
  std::size_t first_depth_first = 0;  // index of the first stage run block by block
};

StagePlan plan_stages(std::size_t n) {
  StagePlan plan;
  std::size_t m = n;
  while (m >= 4) {
    plan.size[plan.count++] = m;
    m /= 4;
  }
  if (m == 2) plan.size[plan.count++] = 2;
  plan.first_depth_first = plan.count;
  for (std::size_t s = 0; s < plan.count; ++s) {
    if (plan.size[s] <= kDepthFirstRows) {
      plan.first_depth_first = s;
      break;
    }
  }
  return plan;
}

// Forward radix-4 DIF butterflies of one block of m rows starting at row `base`.
inline void dif4(double* re, double* im, std::size_t base, std::size_t m, std::size_t stride,
                 const double* twr, const double* twi) {
  const std::size_t q = m / 4;
  for (std::size_t j = 0; j < q; ++j) {
    const std::size_t e = j * stride;
    const double w1r = twr[e], w1i = twi[e];
    const double w2r = twr[2 * e], w2i = twi[2 * e];
    const double w3r = twr[3 * e], w3i = twi[3 * e];
    double* __restrict r0 = re + (base + j) * L;
    double* __restrict r1 = r0 + q * L;
    double* __restrict r2 = r1 + q * L;
    double* __restrict r3 = r2 + q * L;
    double* __restrict i0 = im + (base + j) * L;
    double* __restrict i1 = i0 + q * L;
    double* __restrict i2 = i1 + q * L;
    double* __restrict i3 = i2 + q * L;
#pragma GCC ivdep
    for (std::size_t l = 0; l < L; ++l) {
      const double t0r = r0[l] + r2[l], t0i = i0[l] + i2[l];
      const double t1r = r0[l] - r2[l], t1i = i0[l] - i2[l];
      const double t2r = r1[l] + r3[l], t2i = i1[l] + i3[l];
      const double t3r = r1[l] - r3[l], t3i = i1[l] - i3[l];
      const double y1r = t1r + t3i, y1i = t1i - t3r;  // t1 - i t3
      const double y2r = t0r - t2r, y2i = t0i - t2i;
      const double y3r = t1r - t3i, y3i = t1i + t3r;  // t1 + i t3
      r0[l] = t0r + t2r;
      i0[l] = t0i + t2i;
      r1[l] = y1r * w1r - y1i * w1i;
      i1[l] = y1r * w1i + y1i * w1r;
      r2[l] = y2r * w2r - y2i * w2i;
      i2[l] = y2r * w2i + y2i * w2r;
      r3[l] = y3r * w3r - y3i * w3i;
      i3[l] = y3r * w3i + y3i * w3r;
    }
  }
}

// Inverse radix-4 DIT butterflies (conjugate twiddles first, then the inverse 4-point DFT).
inline void dit4_inverse(double* re, double* im, std::size_t base, std::size_t m,
                         std::size_t stride, const double* twr, const double* twi) {
  const std::size_t q = m / 4;
  for (std::size_t j = 0; j < q; ++j) {
    const std::size_t e = j * stride;
    const double w1r = twr[e], w1i = twi[e];
    const double w2r = twr[2 * e], w2i = twi[2 * e];
    const double w3r = twr[3 * e], w3i = twi[3 * e];
    double* __restrict r0 = re + (base + j) * L;
    double* __restrict r1 = r0 + q * L;
    double* __restrict r2 = r1 + q * L;
    double* __restrict r3 = r2 + q * L;
    double* __restrict i0 = im + (base + j) * L;
    double* __restrict i1 = i0 + q * L;
    double* __restrict i2 = i1 + q * L;
    double* __restrict i3 = i2 + q * L;
#pragma GCC ivdep
    for (std::size_t l = 0; l < L; ++l) {
      const double x0r = r0[l], x0i = i0[l];
      const double x1r = r1[l] * w1r + i1[l] * w1i, x1i = i1[l] * w1r - r1[l] * w1i;
      const double x2r = r2[l] * w2r + i2[l] * w2i, x2i = i2[l] * w2r - r2[l] * w2i;
      const double x3r = r3[l] * w3r + i3[l] * w3i, x3i = i3[l] * w3r - r3[l] * w3i;
      const double t0r = x0r + x2r, t0i = x0i + x2i;
      const double t1r = x0r - x2r, t1i = x0i - x2i;
      const double t2r = x1r + x3r, t2i = x1i + x3i;
      const double t3r = x1r - x3r, t3i = x1i - x3i;
      r0[l] = t0r + t2r;
      i0[l] = t0i + t2i;
      r2[l] = t0r - t2r;
      i2[l] = t0i - t2i;
      r1[l] = t1r - t3i;  // t1 + i t3
      i1[l] = t1i + t3r;
      r3[l] = t1r + t3i;  // t1 - i t3
      i3[l] = t1i - t3r;
    }
  }
}

// Radix-2 butterflies on a block of 2 rows (the last forward / first inverse stage).
inline void radix2(double* re, double* im, std::size_t base) {
  double* __restrict r0 = re + base * L;
  double* __restrict r1 = r0 + L;
  double* __restrict i0 = im + base * L;
  double* __restrict i1 = i0 + L;
#pragma GCC ivdep
  for (std::size_t l = 0; l < L; ++l) {
    const double ar = r0[l], ai = i0[l], br = r1[l], bi = i1[l];
    r0[l] = ar + br;
    i0[l] = ai + bi;
    r1[l] = ar - br;
    i1[l] = ai - bi;
  }
}

inline void forward_stage(double* re, double* im, std::size_t n, std::size_t m, std::size_t lo,
                          std::size_t hi, const double* twr, const double* twi) {
  if (m == 2) {
    for (std::size_t b = lo; b < hi; b += 2) radix2(re, im, b);
  } else {
    for (std::size_t b = lo; b < hi; b += m) dif4(re, im, b, m, n / m, twr, twi);
  }
}

inline void inverse_stage(double* re, double* im, std::size_t n, std::size_t m, std::size_t lo,
                          std::size_t hi, const double* twr, const double* twi) {
  if (m == 2) {
    for (std::size_t b = lo; b < hi; b += 2) radix2(re, im, b);
  } else {
    for (std::size_t b = lo; b < hi; b += m) dit4_inverse(re, im, b, m, n / m, twr, twi);
  }
}

void fft_forward(double* re, double* im, std::size_t n, const double* twr, const double* twi) {
  if (n < 2) return;
  const StagePlan plan = plan_stages(n);
  const std::size_t df = plan.first_depth_first;
  for (std::size_t s = 0; s < df; ++s) forward_stage(re, im, n, plan.size[s], 0, n, twr, twi);
  if (df == plan.count) return;
  const std::size_t block = plan.size[df];
  for (std::size_t base = 0; base < n; base += block) {
    for (std::size_t s = df; s < plan.count; ++s) {
      forward_stage(re, im, n, plan.size[s], base, base + block, twr, twi);
    }
  }
}

void fft_inverse(double* re, double* im, std::size_t n, const double* twr, const double* twi) {
  if (n < 2) return;
  const StagePlan plan = plan_stages(n);
  const std::size_t df = plan.first_depth_first;
  if (df < plan.count) {
    const std::size_t block = plan.size[df];
    for (std::size_t base = 0; base < n; base += block) {
      for (std::size_t s = plan.count; s-- > df;) {
        inverse_stage(re, im, n, plan.size[s], base, base + block, twr, twi);
      }
    }
  }
  for (std::size_t s = df; s-- > 0;) inverse_stage(re, im, n, plan.size[s], 0, n, twr, twi);
}

void multiply_rows(double* re, double* im, std::size_t n, const double* hr, const double* hi) {
  for (std::size_t p = 0; p < n; ++p) {
    const double a = hr[p], b = hi[p];
    double* __restrict r = re + p * L;
    double* __restrict i = im + p * L;
#pragma GCC ivdep
    for (std::size_t l = 0; l < L; ++l) {
      const double zr = r[l], zi = i[l];
      r[l] = zr * a - zi * b;
      i[l] = zr * b + zi * a;
    }
  }
}

void multiply_panel(double* re, double* im, std::size_t n, const double* hr, const double* hi) {
  double* __restrict r = re;
  double* __restrict i = im;
  const double* __restrict a = hr;
  const double* __restrict b = hi;
  const std::size_t total = n * L;
#pragma GCC ivdep
  for (std::size_t k = 0; k < total; ++k) {
    const double zr = r[k], zi = i[k];
    r[k] = zr * a[k] - zi * b[k];
    i[k] = zr * b[k] + zi * a[k];
  }
}

// One summation order per output for the direct convolution and the dot product, so that an
// output computed alone (dot: FracDiffStream, the market-state kernel) equals the same output
// computed in a block (correlate_valid: the batch direct FFD) bit for bit, at every SIMD level:
// term j goes to chain j % kChains, each chain is a fused multiply-add chain in ascending j
// starting from 0.0, and the chains are added as (c0 + c1) + (c2 + c3). std::fma everywhere (a
// vfmadd where the level has FMA, libm's correctly rounded fma in the baseline), so the compiler
// never has to choose whether to contract a multiply and an add.
constexpr std::size_t kChains = 4;
// Outputs per block of correlate_valid (any block size gives the same bits): 4 chains x 2 vector
// accumulators hide the fma latency (measured against 12, 24 and 32 on AVX2 and AVX-512).
#if defined(__AVX512F__)
constexpr std::size_t kBlock = 16;
#else
constexpr std::size_t kBlock = 8;
#endif

inline double combine_chains(double c0, double c1, double c2, double c3) {
  return (c0 + c1) + (c2 + c3);
}

double dot(const double* a, const double* b, std::size_t n) {
  double c[kChains] = {};
  std::size_t k = 0;
  for (; k + kChains <= n; k += kChains) {
    for (std::size_t i = 0; i < kChains; ++i) c[i] = std::fma(a[k + i], b[k + i], c[i]);
  }
  for (std::size_t i = 0; k < n; ++k, ++i) c[i] = std::fma(a[k], b[k], c[i]);
  return combine_chains(c[0], c[1], c[2], c[3]);
}

void correlate_valid(const double* x, std::size_t n_out, const double* rw, std::size_t window,
                     double* y) {
  constexpr std::size_t B = kBlock;  // outputs kept in registers while the weights stream by
  std::size_t t = 0;
  for (; t + B <= n_out; t += B) {
    double a0[B] = {}, a1[B] = {}, a2[B] = {}, a3[B] = {};
    const double* __restrict xp = x + t;
    std::size_t j = 0;
    for (; j + kChains <= window; j += kChains) {
      const double c0 = rw[j], c1 = rw[j + 1], c2 = rw[j + 2], c3 = rw[j + 3];
#pragma GCC unroll 32
      for (std::size_t i = 0; i < B; ++i) a0[i] = std::fma(c0, xp[j + i], a0[i]);
#pragma GCC unroll 32
      for (std::size_t i = 0; i < B; ++i) a1[i] = std::fma(c1, xp[j + 1 + i], a1[i]);
#pragma GCC unroll 32
      for (std::size_t i = 0; i < B; ++i) a2[i] = std::fma(c2, xp[j + 2 + i], a2[i]);
#pragma GCC unroll 32
      for (std::size_t i = 0; i < B; ++i) a3[i] = std::fma(c3, xp[j + 3 + i], a3[i]);
    }
    // window % kChains leftover terms go to chains 0, 1, 2.
    if (j < window) {
      const double c0 = rw[j];
#pragma GCC unroll 32
      for (std::size_t i = 0; i < B; ++i) a0[i] = std::fma(c0, xp[j + i], a0[i]);
    }
    if (j + 1 < window) {
      const double c1 = rw[j + 1];
#pragma GCC unroll 32
      for (std::size_t i = 0; i < B; ++i) a1[i] = std::fma(c1, xp[j + 1 + i], a1[i]);
    }
    if (j + 2 < window) {
      const double c2 = rw[j + 2];
#pragma GCC unroll 32
      for (std::size_t i = 0; i < B; ++i) a2[i] = std::fma(c2, xp[j + 2 + i], a2[i]);
    }
#pragma GCC unroll 32
    for (std::size_t i = 0; i < B; ++i) y[t + i] = combine_chains(a0[i], a1[i], a2[i], a3[i]);
  }
  for (; t < n_out; ++t) y[t] = dot(rw, x + t, window);
}

}  // namespace

const KernelTable table = {&fft_forward,    &fft_inverse,     &multiply_rows,
                           &multiply_panel, &correlate_valid, &dot};

}  // namespace colmena::simd::COLMENA_SIMD_LEVEL
