#include "colmena/mlp.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>
#include <stdexcept>
#include <string>

#include "colmena/cpu_features.hpp"
#include "colmena/mlp_kernels.hpp"
#include "colmena/parallel.hpp"

namespace colmena {

namespace simd {

const MlpKernelTable& mlp_kernels() noexcept {
  switch (active_simd_level()) {
#ifdef COLMENA_HAVE_SIMD_avx512
    case SimdLevel::avx512:
      return avx512::mlp_table;
#endif
#ifdef COLMENA_HAVE_SIMD_avx2
    case SimdLevel::avx2:
      return avx2::mlp_table;
#endif
    default:
      return baseline::mlp_table;
  }
}

}  // namespace simd

namespace {

constexpr std::size_t kPad = DenseLayout::kPad;  // floats: one cache line, one AVX-512 vector
// Below this many multiply-adds a call runs in the calling thread: waking the pool costs more.
constexpr std::size_t kParallelWork = 96 * 1024;
// One state (the live path) is split over the cores only when its weights outgrow one core's L2
// (256k multiply-adds: 1 MB of float32 weights). Below that, one thread is faster: a decision
// comes once per interval, when the pool's workers have gone to sleep, and waking one costs tens
// of microseconds (measured: a 100-agent 20-32-32-1 swarm, 170k multiply-adds, decided in 33 us
// p50 on one thread against 89 us on two). Above it, two cores' caches and memory bandwidth win
// (100 x 32-64-64-1, 620k multiply-adds: 17 us on two threads, 47 us on one).
constexpr std::size_t kParallelWorkOneRow = 256 * 1024;
// Rows per tile of the series path: the trunk's two ping-pong tiles fill about 32 KiB (L1).
constexpr std::size_t kTileBytes = 32 * 1024;

std::size_t round_up(std::size_t n, std::size_t m) { return (n + m - 1) / m * m; }

float* allocate_floats(std::size_t count) {
  const std::size_t bytes = round_up(std::max<std::size_t>(count, 1) * sizeof(float), 64);
  void* p = std::aligned_alloc(64, bytes);
  if (p == nullptr) throw std::bad_alloc();
  return static_cast<float*>(p);
}

// Per-thread scratch for the layer outputs of one tile; grows, never shrinks.
float* thread_scratch(std::size_t count) {
  struct Scratch {
    float* data = nullptr;
    std::size_t capacity = 0;
    ~Scratch() { std::free(data); }
  };
  thread_local Scratch scratch;
  if (count > scratch.capacity) {
    float* fresh = allocate_floats(count);
    std::free(scratch.data);
    scratch.data = fresh;
    scratch.capacity = count;
  }
  return scratch.data;
}

void pack(const DenseLayout& layout, float* base, const float* w, const float* b) {
  float* dst = base + layout.w_offset;
  if (layout.narrow) {
    for (std::size_t i = 0; i < layout.n_in; ++i) {
      for (std::size_t j = 0; j < layout.n_out; ++j)
        dst[j * layout.ld + i] = w[i * layout.n_out + j];
    }
  } else {
    for (std::size_t i = 0; i < layout.n_in; ++i) {
      std::memcpy(dst + i * layout.ld, w + i * layout.n_out, layout.n_out * sizeof(float));
    }
  }
  std::memcpy(base + layout.b_offset, b, layout.n_out * sizeof(float));
}

void unpack(const DenseLayout& layout, const float* base, float* w, float* b) {
  const float* src = base + layout.w_offset;
  if (layout.narrow) {
    for (std::size_t i = 0; i < layout.n_in; ++i) {
      for (std::size_t j = 0; j < layout.n_out; ++j)
        w[i * layout.n_out + j] = src[j * layout.ld + i];
    }
  } else {
    for (std::size_t i = 0; i < layout.n_in; ++i) {
      std::memcpy(w + i * layout.n_out, src + i * layout.ld, layout.n_out * sizeof(float));
    }
  }
  std::memcpy(b, base + layout.b_offset, layout.n_out * sizeof(float));
}

}  // namespace

const char* activation_name(Activation activation) noexcept {
  switch (activation) {
    case Activation::identity:
      return "identity";
    case Activation::tanh:
      return "tanh";
    case Activation::relu:
      return "relu";
    case Activation::gelu:
      return "gelu";
  }
  return "unknown";
}

std::optional<Activation> parse_activation(std::string_view name) noexcept {
  for (Activation a :
       {Activation::identity, Activation::tanh, Activation::relu, Activation::gelu}) {
    if (name == activation_name(a)) return a;
  }
  return std::nullopt;
}

void MlpStack::Free::operator()(float* p) const noexcept { std::free(p); }

MlpStack::MlpStack(std::size_t n_nets, std::vector<std::size_t> trunk_sizes,
                   std::vector<Activation> trunk_activations, std::vector<HeadSpec> heads)
    : n_nets_(n_nets) {
  if (n_nets == 0) throw std::invalid_argument("the number of networks must be >= 1");
  if (trunk_sizes.empty()) throw std::invalid_argument("the input width is missing");
  if (trunk_activations.size() + 1 != trunk_sizes.size()) {
    throw std::invalid_argument("need one activation per trunk layer");
  }
  if (heads.empty()) throw std::invalid_argument("a network needs at least one head");
  for (std::size_t width : trunk_sizes) {
    if (width == 0) throw std::invalid_argument("layer widths must be >= 1");
  }
  for (const HeadSpec& head : heads) {
    if (head.n_out == 0) throw std::invalid_argument("layer widths must be >= 1");
  }
  n_trunk_ = trunk_activations.size();
  std::size_t offset = 0;
  auto add_layer = [&](std::size_t n_in, std::size_t n_out, Activation activation) {
    DenseLayout layout;
    layout.n_in = n_in;
    layout.n_out = n_out;
    layout.narrow = n_out < DenseLayout::kNarrowWidth;
    layout.ld = round_up(layout.narrow ? n_in : n_out, kPad);
    layout.activation = activation;
    layout.w_offset = offset;
    offset += (layout.narrow ? n_out : n_in) * layout.ld;
    layout.b_offset = offset;
    offset += round_up(n_out, kPad);
    layouts_.push_back(layout);
    macs_per_row_ += n_in * n_out;
  };
  for (std::size_t l = 0; l < n_trunk_; ++l) {
    add_layer(trunk_sizes[l], trunk_sizes[l + 1], trunk_activations[l]);
  }
  for (const HeadSpec& head : heads) add_layer(trunk_sizes.back(), head.n_out, head.activation);
  stride_ = offset;
  for (const DenseLayout& layout : layouts_) {
    scratch_cols_ = std::max(scratch_cols_, round_up(layout.n_out, kPad));
  }
  tile_rows_ = kTileBytes / (2 * scratch_cols_ * sizeof(float)) / 12 * 12;
  tile_rows_ = std::clamp<std::size_t>(tile_rows_, 12, 240);
  storage_.reset(allocate_floats(n_nets_ * stride_));
  std::memset(storage_.get(), 0, n_nets_ * stride_ * sizeof(float));
}

void MlpStack::set_layer(std::size_t index, const float* w, const float* b) {
  const DenseLayout& layout = layouts_.at(index);
  const std::size_t w_size = layout.n_in * layout.n_out;
  for (std::size_t net = 0; net < n_nets_; ++net) {
    pack(layout, net_base(net), w + net * w_size, b + net * layout.n_out);
  }
}

void MlpStack::set_layer(std::size_t index, std::size_t net, const float* w, const float* b) {
  const DenseLayout& layout = layouts_.at(index);
  if (net >= n_nets_) throw std::out_of_range("network index out of range");
  pack(layout, net_base(net), w, b);
}

void MlpStack::get_layer(std::size_t index, float* w, float* b) const {
  const DenseLayout& layout = layouts_.at(index);
  const std::size_t w_size = layout.n_in * layout.n_out;
  for (std::size_t net = 0; net < n_nets_; ++net) {
    unpack(layout, net_base(net), w + net * w_size, b + net * layout.n_out);
  }
}

void MlpStack::get_layer(std::size_t index, std::size_t net, float* w, float* b) const {
  const DenseLayout& layout = layouts_.at(index);
  if (net >= n_nets_) throw std::out_of_range("network index out of range");
  unpack(layout, net_base(net), w, b);
}

void MlpStack::run_nets(std::size_t net_begin, std::size_t net_end, bool reverse, const float* x,
                        std::size_t row_begin, std::size_t row_end, std::size_t n_rows,
                        std::size_t ldx, float* const* outputs) const {
  const simd::MlpKernelTable& kernels = simd::mlp_kernels();
  const std::size_t tile = tile_rows_;
  const std::size_t ld = scratch_cols_;
  float* scratch = thread_scratch(3 * tile * ld);
  float* buffers[3] = {scratch, scratch + tile * ld, scratch + 2 * tile * ld};
  const std::size_t n_heads = layouts_.size() - n_trunk_;
  if (row_end - row_begin == 1) {
    // One row (a live tick): up to kMaxNets networks side by side, layer by layer, so that the
    // FMA chains of one network do not wait on each other. Rows of network g live at
    // buffers[i] + g * ld (tile >= 12 >= kMaxNets rows).
    constexpr std::size_t G = simd::kMaxNets;
    const std::size_t count_all = net_end - net_begin;
    for (std::size_t first = 0; first < count_all; first += G) {
      const std::size_t count = std::min(G, count_all - first);
      const float* bases[G];
      const float* a[G];
      const float* w[G];
      const float* b[G];
      float* c[G];
      for (std::size_t g = 0; g < count; ++g) {
        const std::size_t step = first + g;
        bases[g] = net_base(reverse ? net_end - 1 - step : net_begin + step);
        a[g] = x + row_begin * ldx;
      }
      for (std::size_t l = 0; l < n_trunk_; ++l) {
        const DenseLayout& layout = layouts_[l];
        for (std::size_t g = 0; g < count; ++g) {
          w[g] = bases[g] + layout.w_offset;
          b[g] = bases[g] + layout.b_offset;
          c[g] = buffers[l & 1] + g * ld;
        }
        kernels.dense_nets(layout, count, w, b, a, c);
        for (std::size_t g = 0; g < count; ++g) a[g] = c[g];
      }
      for (std::size_t h = 0; h < n_heads; ++h) {
        if (outputs[h] == nullptr) continue;
        const DenseLayout& layout = layouts_[n_trunk_ + h];
        const std::size_t n_out = layout.n_out;
        const bool direct = layout.narrow || layout.ld == n_out;
        for (std::size_t g = 0; g < count; ++g) {
          w[g] = bases[g] + layout.w_offset;
          b[g] = bases[g] + layout.b_offset;
          c[g] = direct ? outputs[h] +
                              (static_cast<std::size_t>(bases[g] - net_base(0)) / stride_ * n_rows +
                               row_begin) *
                                  n_out
                        : buffers[2] + g * ld;
        }
        kernels.dense_nets(layout, count, w, b, a, c);
        if (!direct) {
          for (std::size_t g = 0; g < count; ++g) {
            const std::size_t net = static_cast<std::size_t>(bases[g] - net_base(0)) / stride_;
            std::memcpy(outputs[h] + (net * n_rows + row_begin) * n_out, c[g],
                        n_out * sizeof(float));
          }
        }
      }
    }
    return;
  }
  for (std::size_t step = 0; step < net_end - net_begin; ++step) {
    const std::size_t net = reverse ? net_end - 1 - step : net_begin + step;
    const float* base = net_base(net);
    for (std::size_t t0 = row_begin; t0 < row_end; t0 += tile) {
      const std::size_t rows = std::min(tile, row_end - t0);
      const float* a = x + t0 * ldx;
      std::size_t lda = ldx;
      for (std::size_t l = 0; l < n_trunk_; ++l) {
        const DenseLayout& layout = layouts_[l];
        float* c = buffers[l & 1];
        kernels.dense(layout, base + layout.w_offset, base + layout.b_offset, a, lda, rows, c, ld);
        a = c;
        lda = ld;
      }
      for (std::size_t h = 0; h < n_heads; ++h) {
        if (outputs[h] == nullptr) continue;
        const DenseLayout& layout = layouts_[n_trunk_ + h];
        const std::size_t n_out = layout.n_out;
        float* y = outputs[h] + (net * n_rows + t0) * n_out;
        const float* w = base + layout.w_offset;
        const float* b = base + layout.b_offset;
        if (layout.narrow || layout.ld == n_out) {
          kernels.dense(layout, w, b, a, lda, rows, y, n_out);
        } else {  // padded columns: compute into scratch, copy the real ones
          float* c = buffers[2];
          kernels.dense(layout, w, b, a, lda, rows, c, ld);
          for (std::size_t r = 0; r < rows; ++r) {
            std::memcpy(y + r * n_out, c + r * ld, n_out * sizeof(float));
          }
        }
      }
    }
  }
}

void MlpStack::forward(const float* x, std::size_t n_rows, std::size_t ldx,
                       float* const* outputs) const {
  if (n_rows == 0) return;
  // Alternating the order in which a thread walks its networks makes the weights it read last
  // (still in its L2 cache) the first it reads next call.
  const bool reverse = (calls_.fetch_add(1, std::memory_order_relaxed) & 1u) != 0;
  const std::size_t threads = max_threads();
  const std::size_t work = n_nets_ * n_rows * macs_per_row_;
  if (threads <= 1 || work < kParallelWork || (n_rows == 1 && work < kParallelWorkOneRow)) {
    run_nets(0, n_nets_, reverse, x, 0, n_rows, n_rows, ldx, outputs);
    return;
  }
  if (n_nets_ >= threads && n_rows == 1) {
    // One contiguous block of networks per thread, and the same block for the same thread on
    // every call while it can get it: a block's weights stay in that core's L2 between ticks.
    // Every call of the loop body takes exactly one untaken block, so all blocks are done even
    // when a worker does not show up and the caller takes its block.
    std::vector<std::atomic<bool>> taken(threads);
    parallel_for(threads, [&](std::size_t) {
      std::size_t c = current_thread_slot() % threads;
      while (taken[c].exchange(true, std::memory_order_acq_rel)) c = (c + 1) % threads;
      run_nets(c * n_nets_ / threads, (c + 1) * n_nets_ / threads, reverse, x, 0, 1, 1, ldx,
               outputs);
    });
    return;
  }
  if (n_nets_ >= threads) {
    // Blocks of networks, several per thread to balance threads that start late.
    const std::size_t chunks = std::min(n_nets_, 4 * threads);
    parallel_for(chunks, [&](std::size_t c) {
      run_nets(c * n_nets_ / chunks, (c + 1) * n_nets_ / chunks, reverse, x, 0, n_rows, n_rows, ldx,
               outputs);
    });
    return;
  }
  const std::size_t tiles = (n_rows + tile_rows_ - 1) / tile_rows_;
  const std::size_t chunks = std::min(tiles, 4 * threads);
  parallel_for(chunks, [&](std::size_t c) {
    const std::size_t t_begin = c * tiles / chunks, t_end = (c + 1) * tiles / chunks;
    run_nets(0, n_nets_, false, x, t_begin * tile_rows_, std::min(n_rows, t_end * tile_rows_),
             n_rows, ldx, outputs);
  });
}

}  // namespace colmena
