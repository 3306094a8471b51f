#include "colmena/fft.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <numbers>
#include <stdexcept>

#include "colmena/aligned_buffer.hpp"
#include "colmena/parallel.hpp"
#include "colmena/simd_kernels.hpp"

namespace colmena {
namespace {

constexpr std::size_t L = simd::kLanes;

std::size_t next_pow2(std::size_t v) {
  std::size_t p = 1;
  while (p < v) p <<= 1;
  return p;
}

std::size_t log2_exact(std::size_t v) {
  std::size_t r = 0;
  while ((std::size_t{1} << r) < v) ++r;
  return r;
}

// Per-thread panels, reused across calls.
struct Scratch {
  AlignedBuffer re, im;
  void ensure(std::size_t rows) {
    re.resize(rows * L);
    im.resize(rows * L);
  }
};
Scratch& thread_scratch() {
  thread_local Scratch scratch;
  return scratch;
}

bool all_finite(const double* x, std::size_t n) {
  // Branch-free accumulation so the loop vectorises; x - x is 0 for finite x and NaN otherwise.
  double acc = 0.0;
  for (std::size_t i = 0; i < n; ++i) acc += x[i] - x[i];
  return acc == 0.0;
}

// When x holds non-finite values, returns a copy with them replaced by zero (and fills `bad` with
// their positions); otherwise returns x itself.
const double* sanitized(const double* x, std::size_t n, std::vector<double>& copy,
                        std::vector<std::size_t>& bad) {
  if (all_finite(x, n)) return x;
  copy.assign(x, x + n);
  for (std::size_t i = 0; i < n; ++i) {
    if (!std::isfinite(copy[i])) {
      bad.push_back(i);
      copy[i] = 0.0;
    }
  }
  return copy.data();
}

// y[t] covers inputs [t + offset - (window - 1), t + offset]; NaN where that range holds a bad
// index.
void mask_windows(const std::vector<std::size_t>& bad, std::size_t window, std::ptrdiff_t offset,
                  double* y, std::size_t n_out) {
  if (bad.empty()) return;
  const double nan = std::numeric_limits<double>::quiet_NaN();
  // `bad` is ascending, so the NaN ranges come in order; each output is written at most once.
  std::ptrdiff_t done = -1;  // outputs [0, done] already handled
  for (std::size_t i : bad) {
    // outputs t with t + offset - (window - 1) <= i <= t + offset
    const std::ptrdiff_t lo = static_cast<std::ptrdiff_t>(i) - offset;
    const std::ptrdiff_t hi = lo + static_cast<std::ptrdiff_t>(window) - 1;
    const std::ptrdiff_t a = std::max<std::ptrdiff_t>(std::max<std::ptrdiff_t>(lo, 0), done + 1);
    const std::ptrdiff_t b = std::min<std::ptrdiff_t>(hi, static_cast<std::ptrdiff_t>(n_out) - 1);
    for (std::ptrdiff_t t = a; t <= b; ++t) y[t] = nan;
    done = std::max(done, b);
  }
}

}  // namespace

const TwiddleTable& twiddles(std::size_t n) {
  static std::mutex mutex;
  static std::map<std::size_t, std::unique_ptr<TwiddleTable>> cache;
  std::lock_guard<std::mutex> lock(mutex);
  auto& slot = cache[n];
  if (!slot) {
    auto table = std::make_unique<TwiddleTable>();
    table->re.resize(n);
    table->im.resize(n);
    for (std::size_t k = 0; k < n; ++k) {
      const double angle =
          -2.0 * std::numbers::pi * static_cast<double>(k) / static_cast<double>(n);
      table->re[k] = std::cos(angle);
      table->im[k] = std::sin(angle);
    }
    slot = std::move(table);
  }
  return *slot;
}

std::vector<std::size_t> fft_output_frequencies(std::size_t n) {
  std::vector<std::size_t> freq(n);
  for (std::size_t pos = 0; pos < n; ++pos) {
    std::size_t rest = pos, k = 0, mult = 1, m = n;
    while (m >= 2) {
      const std::size_t radix = m >= 4 ? 4 : 2;
      const std::size_t q = m / radix;
      k += (rest / q) * mult;
      rest %= q;
      mult *= radix;
      m = q;
    }
    freq[pos] = k;
  }
  return freq;
}

// ------------------------------------------------------------------------------------ direct

void convolve_valid_direct(const double* x, std::size_t n, const double* w, std::size_t window,
                           double* y) {
  if (window == 0 || window > n)
    throw std::invalid_argument("convolve_valid_direct: need 1 <= window <= n");
  std::vector<double> copy;
  std::vector<std::size_t> bad;
  const double* xs = sanitized(x, n, copy, bad);
  std::vector<double> reversed(w, w + window);
  std::reverse(reversed.begin(), reversed.end());
  const std::size_t n_out = n - window + 1;
  const auto& kernels = simd::kernels();
  // Chunks of about 2^22 multiply-adds, at least 1024 outputs each.
  const std::size_t chunk = std::max<std::size_t>(1024, (std::size_t{1} << 22) / window);
  const std::size_t n_chunks = (n_out + chunk - 1) / chunk;
  parallel_for(n_chunks, [&](std::size_t c) {
    const std::size_t t0 = c * chunk;
    const std::size_t count = std::min(chunk, n_out - t0);
    kernels.correlate_valid(xs + t0, count, reversed.data(), window, y + t0);
  });
  mask_windows(bad, window, static_cast<std::ptrdiff_t>(window) - 1, y, n_out);
}

// ------------------------------------------------------------------------------- overlap-save

std::size_t overlap_save_fft_size(std::size_t window, std::size_t n) {
  // Cost per output of a block transform ~ N log2 N / (N - window + 1); panels larger than about
  // half of a 1 MiB L2 cache pay for leaving it. Never larger than the series needs.
  const std::size_t smallest = std::max<std::size_t>(next_pow2(window + 1), 16);
  const std::size_t largest = std::max(smallest, std::min(next_pow2(n + 1), smallest << 5));
  std::size_t best = smallest;
  double best_cost = std::numeric_limits<double>::infinity();
  for (std::size_t size = smallest; size <= largest; size <<= 1) {
    double cost = static_cast<double>(size) * static_cast<double>(log2_exact(size)) /
                  static_cast<double>(size - window + 1);
    if (size * L * 2 * sizeof(double) > (std::size_t{1} << 19)) cost *= 1.12;
    if (cost < best_cost) {
      best_cost = cost;
      best = size;
    }
  }
  return best;
}

namespace {

// Spectrum of the zero-padded filter in panel row order, scaled by 1/size. The last one is kept:
// a series of calls with the same weights (a feature pipeline) computes it once.
struct FilterSpectrum {
  std::size_t size = 0;
  std::vector<double> weights;
  std::vector<double> re, im;
};

std::shared_ptr<const FilterSpectrum> filter_spectrum(const double* w, std::size_t window,
                                                      std::size_t size) {
  static std::mutex mutex;
  static std::shared_ptr<const FilterSpectrum> last;
  {
    std::lock_guard<std::mutex> lock(mutex);
    if (last && last->size == size && last->weights.size() == window &&
        std::equal(w, w + window, last->weights.begin())) {
      return last;
    }
  }
  auto spectrum = std::make_shared<FilterSpectrum>();
  spectrum->size = size;
  spectrum->weights.assign(w, w + window);
  spectrum->re.resize(size);
  spectrum->im.resize(size);
  const TwiddleTable& tw = twiddles(size);
  AlignedBuffer pr(size * L), pi(size * L);
  std::fill(pr.data(), pr.data() + size * L, 0.0);
  std::fill(pi.data(), pi.data() + size * L, 0.0);
  for (std::size_t k = 0; k < window; ++k) pr.data()[k * L] = w[k];
  simd::kernels().fft_forward(pr.data(), pi.data(), size, tw.re.data(), tw.im.data());
  const double scale = 1.0 / static_cast<double>(size);
  for (std::size_t p = 0; p < size; ++p) {
    spectrum->re[p] = pr.data()[p * L] * scale;
    spectrum->im[p] = pi.data()[p * L] * scale;
  }
  std::lock_guard<std::mutex> lock(mutex);
  last = spectrum;
  return spectrum;
}

}  // namespace

void convolve_valid_fft(const double* x, std::size_t n, const double* w, std::size_t window,
                        double* y) {
  if (window == 0 || window > n)
    throw std::invalid_argument("convolve_valid_fft: need 1 <= window <= n");
  const std::size_t n_out = n - window + 1;
  const std::size_t size = overlap_save_fft_size(window, n);
  const std::size_t per_block = size - window + 1;
  const TwiddleTable& tw = twiddles(size);
  const auto& kernels = simd::kernels();
  const std::shared_ptr<const FilterSpectrum> h = filter_spectrum(w, window, size);

  const std::size_t n_blocks = (n_out + per_block - 1) / per_block;
  const std::size_t n_pairs = (n_blocks + 1) / 2;
  const std::size_t n_batches = (n_pairs + L - 1) / L;
  std::atomic<bool> saw_non_finite{false};

  parallel_for(n_batches, [&](std::size_t batch) {
    Scratch& s = thread_scratch();
    s.ensure(size);
    double* pr = s.re.data();
    double* pi = s.im.data();
    // Gather: lane l holds block 2p in its real part and block 2p + 1 in its imaginary part.
    // Non-finite inputs are replaced by zero on the way in (v - v is 0 only for finite v).
    unsigned bad = 0;
    for (std::size_t l = 0; l < L; ++l) {
      const std::size_t pair = batch * L + l;
      for (int half = 0; half < 2; ++half) {
        double* dst = half == 0 ? pr : pi;
        const std::size_t block = 2 * pair + static_cast<std::size_t>(half);
        const std::size_t start = block * per_block;
        const std::size_t avail = block < n_blocks ? std::min(size, n - std::min(n, start)) : 0;
        const double* src = x + start;
        for (std::size_t p = 0; p < avail; ++p) {
          const double v = src[p];
          const bool finite = v - v == 0.0;
          bad |= static_cast<unsigned>(!finite);
          dst[p * L + l] = finite ? v : 0.0;
        }
        for (std::size_t p = avail; p < size; ++p) dst[p * L + l] = 0.0;
      }
    }
    if (bad != 0) saw_non_finite.store(true, std::memory_order_relaxed);
    kernels.fft_forward(pr, pi, size, tw.re.data(), tw.im.data());
    kernels.multiply_rows(pr, pi, size, h->re.data(), h->im.data());
    kernels.fft_inverse(pr, pi, size, tw.re.data(), tw.im.data());
    // Scatter: circular outputs [window - 1, size) are the linear 'valid' outputs of the block.
    for (std::size_t l = 0; l < L; ++l) {
      const std::size_t pair = batch * L + l;
      for (int half = 0; half < 2; ++half) {
        const double* src = half == 0 ? pr : pi;
        const std::size_t block = 2 * pair + static_cast<std::size_t>(half);
        if (block >= n_blocks) continue;
        const std::size_t t0 = block * per_block;
        const std::size_t count = std::min(per_block, n_out - t0);
        for (std::size_t j = 0; j < count; ++j) y[t0 + j] = src[(window - 1 + j) * L + l];
      }
    }
  });
  if (saw_non_finite.load()) {
    std::vector<std::size_t> positions;
    for (std::size_t i = 0; i < n; ++i) {
      if (!std::isfinite(x[i])) positions.push_back(i);
    }
    mask_windows(positions, window, static_cast<std::ptrdiff_t>(window) - 1, y, n_out);
  }
}

// --------------------------------------------------------------------------------- four-step

namespace {

// The four-step transform of size M = n1 * n2 on a row-major [n1, n2] matrix (index i1 * n2 + i2)
// leaves, for row strip r (rows r*L .. r*L+L-1) the panel [n2, L] of its row transforms stored
// contiguously in place of those rows; the spectrum layout is therefore fixed by (n1, n2) alone
// and two signals transformed the same way can be multiplied element by element.
class FourStep {
 public:
  explicit FourStep(std::size_t size) : size_(size) {
    const std::size_t p = log2_exact(size);
    n1_ = std::size_t{1} << ((p + 1) / 2);
    n2_ = size / n1_;
    freq1_ = fft_output_frequencies(n1_);
    // exp(-2 pi i e / M) = lo[e mod n1] * hi[e / n1] for e = i2 * k1 < M.
    lo_re_.resize(n1_);
    lo_im_.resize(n1_);
    hi_re_.resize(n2_);
    hi_im_.resize(n2_);
    const double two_pi = 2.0 * std::numbers::pi;
    for (std::size_t e = 0; e < n1_; ++e) {
      const double a = -two_pi * static_cast<double>(e) / static_cast<double>(size_);
      lo_re_[e] = std::cos(a);
      lo_im_[e] = std::sin(a);
    }
    for (std::size_t e = 0; e < n2_; ++e) {
      const double a = -two_pi * static_cast<double>(e) / static_cast<double>(n2_);
      hi_re_[e] = std::cos(a);
      hi_im_[e] = std::sin(a);
    }
  }

  std::size_t size() const { return size_; }

  /// Forward transform of the real sequence src[0:count) zero-padded to M, into (re, im) [M].
  void forward_real(const double* src, std::size_t count, double* re, double* im) const {
    const auto& k = simd::kernels();
    const TwiddleTable& tw1 = twiddles(n1_);
    const TwiddleTable& tw2 = twiddles(n2_);
    // Step 1: column transforms (length n1), column strips of L, times the twiddles.
    parallel_for(n2_ / L, [&](std::size_t strip) {
      Scratch& s = thread_scratch();
      s.ensure(n1_);
      double* pr = s.re.data();
      double* pi = s.im.data();
      const std::size_t c0 = strip * L;
      for (std::size_t i1 = 0; i1 < n1_; ++i1) {
        for (std::size_t l = 0; l < L; ++l) {
          const std::size_t idx = i1 * n2_ + c0 + l;
          pr[i1 * L + l] = idx < count ? src[idx] : 0.0;
          pi[i1 * L + l] = 0.0;
        }
      }
      k.fft_forward(pr, pi, n1_, tw1.re.data(), tw1.im.data());
      twiddle(pr, pi, c0, false);
      for (std::size_t r = 0; r < n1_; ++r) {
        for (std::size_t l = 0; l < L; ++l) {
          re[r * n2_ + c0 + l] = pr[r * L + l];
          im[r * n2_ + c0 + l] = pi[r * L + l];
        }
      }
    });
    // Step 2: row transforms (length n2), row strips of L, stored as panels in place.
    parallel_for(n1_ / L, [&](std::size_t strip) {
      Scratch& s = thread_scratch();
      s.ensure(n2_);
      double* pr = s.re.data();
      double* pi = s.im.data();
      gather_rows(re, im, strip, pr, pi);
      k.fft_forward(pr, pi, n2_, tw2.re.data(), tw2.im.data());
      const std::size_t offset = strip * L * n2_;
      std::copy(pr, pr + n2_ * L, re + offset);
      std::copy(pi, pi + n2_ * L, im + offset);
    });
  }

  /// y[0:count) = real part of the inverse transform of (x_re, x_im) * (h_re, h_im), divided by
  /// M. (x_re, x_im) is overwritten.
  void multiply_inverse_real(double* x_re, double* x_im, const double* h_re, const double* h_im,
                             double* y, std::size_t count) const {
    const auto& k = simd::kernels();
    const TwiddleTable& tw1 = twiddles(n1_);
    const TwiddleTable& tw2 = twiddles(n2_);
    parallel_for(n1_ / L, [&](std::size_t strip) {
      Scratch& s = thread_scratch();
      s.ensure(n2_);
      double* pr = s.re.data();
      double* pi = s.im.data();
      const std::size_t offset = strip * L * n2_;
      std::copy(x_re + offset, x_re + offset + n2_ * L, pr);
      std::copy(x_im + offset, x_im + offset + n2_ * L, pi);
      k.multiply_panel(pr, pi, n2_, h_re + offset, h_im + offset);
      k.fft_inverse(pr, pi, n2_, tw2.re.data(), tw2.im.data());
      scatter_rows(pr, pi, strip, x_re, x_im);
    });
    const double scale = 1.0 / static_cast<double>(size_);
    parallel_for(n2_ / L, [&](std::size_t strip) {
      Scratch& s = thread_scratch();
      s.ensure(n1_);
      double* pr = s.re.data();
      double* pi = s.im.data();
      const std::size_t c0 = strip * L;
      for (std::size_t r = 0; r < n1_; ++r) {
        for (std::size_t l = 0; l < L; ++l) {
          pr[r * L + l] = x_re[r * n2_ + c0 + l];
          pi[r * L + l] = x_im[r * n2_ + c0 + l];
        }
      }
      twiddle(pr, pi, c0, true);
      k.fft_inverse(pr, pi, n1_, tw1.re.data(), tw1.im.data());
      for (std::size_t i1 = 0; i1 < n1_; ++i1) {
        for (std::size_t l = 0; l < L; ++l) {
          const std::size_t idx = i1 * n2_ + c0 + l;
          if (idx < count) y[idx] = pr[i1 * L + l] * scale;
        }
      }
    });
  }

 private:
  // panel[pos, l] *= exp(-+2 pi i (c0 + l) k1(pos) / M)
  void twiddle(double* pr, double* pi, std::size_t c0, bool conjugate) const {
    const std::size_t mask = n1_ - 1;
    const std::size_t shift = log2_exact(n1_);
    for (std::size_t pos = 0; pos < n1_; ++pos) {
      const std::size_t k1 = freq1_[pos];
      for (std::size_t l = 0; l < L; ++l) {
        const std::size_t e = (c0 + l) * k1;
        const double ar = lo_re_[e & mask], ai = lo_im_[e & mask];
        const double br = hi_re_[e >> shift], bi = hi_im_[e >> shift];
        const double wr = ar * br - ai * bi;
        const double wi = conjugate ? -(ar * bi + ai * br) : ar * bi + ai * br;
        const double zr = pr[pos * L + l], zi = pi[pos * L + l];
        pr[pos * L + l] = zr * wr - zi * wi;
        pi[pos * L + l] = zr * wi + zi * wr;
      }
    }
  }

  void gather_rows(const double* re, const double* im, std::size_t strip, double* pr,
                   double* pi) const {
    for (std::size_t l = 0; l < L; ++l) {
      const double* rr = re + (strip * L + l) * n2_;
      const double* ri = im + (strip * L + l) * n2_;
      for (std::size_t c = 0; c < n2_; ++c) {
        pr[c * L + l] = rr[c];
        pi[c * L + l] = ri[c];
      }
    }
  }

  void scatter_rows(const double* pr, const double* pi, std::size_t strip, double* re,
                    double* im) const {
    for (std::size_t l = 0; l < L; ++l) {
      double* rr = re + (strip * L + l) * n2_;
      double* ri = im + (strip * L + l) * n2_;
      for (std::size_t c = 0; c < n2_; ++c) {
        rr[c] = pr[c * L + l];
        ri[c] = pi[c * L + l];
      }
    }
  }

  std::size_t size_, n1_, n2_;
  std::vector<std::size_t> freq1_;
  std::vector<double> lo_re_, lo_im_, hi_re_, hi_im_;
};

}  // namespace

void convolve_causal_fft(const double* x, std::size_t n, const double* w, std::size_t window,
                         double* y) {
  if (window == 0 || window > n)
    throw std::invalid_argument("convolve_causal_fft: need 1 <= window <= n");
  std::vector<double> copy;
  std::vector<std::size_t> bad;
  const double* xs = sanitized(x, n, copy, bad);
  const std::size_t size = std::max<std::size_t>(next_pow2(n + window - 1), L * L);
  const FourStep plan(size);
  // Kept per thread between calls: page-faulting tens of MiB anew costs as much as the transform.
  thread_local AlignedBuffer x_re, x_im, h_re, h_im;
  for (AlignedBuffer* b : {&x_re, &x_im, &h_re, &h_im}) b->resize(size);
  plan.forward_real(w, window, h_re.data(), h_im.data());
  plan.forward_real(xs, n, x_re.data(), x_im.data());
  plan.multiply_inverse_real(x_re.data(), x_im.data(), h_re.data(), h_im.data(), y, n);
  mask_windows(bad, window, 0, y, n);
}

}  // namespace colmena
