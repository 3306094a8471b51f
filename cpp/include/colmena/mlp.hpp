#pragma once
/// Forward pass of small dense networks on float32: one MLP, the VAE encoder, and a stack of
/// same-shaped networks with their own weights (the swarm's agents).
///
/// Dimension names: n_nets (networks in a stack; the swarm's n_agents), n_rows (input rows: a
/// batch, or the time steps of a series), n_in / n_out (widths of one layer).
///
/// A layer computes y = act(x @ W + b) with W [n_in, n_out] and b [n_out] (torch's nn.Linear
/// weight, transposed). A network is a trunk of layers followed by one or more heads: layers that
/// all read the trunk's output. An MLP or a swarm agent has one head (its output layer); the VAE
/// encoder has the mu head and optionally the logvar head.
///
/// Weights are copied into 64-byte aligned storage in the layout the kernels want (columns padded
/// to 16 floats; very narrow layers stored transposed) and replaced in place; the storage is
/// allocated once by the constructor. Activations: tanh and gelu (exact erf form, as torch's
/// default) are vectorised to within 2e-7 * max(1, |f(x)|) of the exact function.
///
/// Determinism. Every output is computed by one fixed sequence of float32 operations, so the
/// same weights and the same input row give the same bits at every SIMD level (baseline, avx2,
/// avx512), whatever the number of rows in the call (one live state or a million-row backtest),
/// the row stride, the thread count and the order in which threads take the work:
/// - wide layers (n_out >= 8): y[j] = b[j], then y[j] = fma(x[k], W[k, j], y[j]) for
///   k = 0 .. n_in - 1 in order, each a fused multiply-add rounded once;
/// - narrow layers (n_out < 8): 16 partial sums (partial l: fused multiply-adds over
///   k = l, l + 16, ..., zero-padded to a multiple of 16), added by the fixed halving tree
///   (l + 8, + 4, + 2, + 1), then + b[j];
/// - activations: one lane-wise formula built from IEEE operations, the same at every width.
/// Fused multiply-adds are hardware instructions on AVX2 and AVX-512 and an exact emulation on
/// the SSE2 baseline (CPUs without FMA), which is exact but 10 to 20 times slower there. NaN
/// inputs give NaN outputs whose payload bits may differ between levels.
#include <atomic>
#include <cstddef>
#include <memory>
#include <optional>
#include <string_view>
#include <vector>

namespace colmena {

enum class Activation { identity = 0, tanh = 1, relu = 2, gelu = 3 };

/// "identity", "tanh", "relu" or "gelu".
const char* activation_name(Activation activation) noexcept;
/// The activation called `name`, or nullopt for an unknown name.
std::optional<Activation> parse_activation(std::string_view name) noexcept;

/// Where and how one layer of one network lives in packed storage (offsets in floats from the
/// network's base). Wide layers store W as [n_in, ld] with ld = n_out rounded up to 16 (zero
/// padding); narrow layers (n_out < kNarrowWidth) store W transposed, [n_out, ld] with
/// ld = n_in rounded up to 16. b is stored as [round_up(n_out, 16)] (zero padding).
struct DenseLayout {
  static constexpr std::size_t kNarrowWidth = 8;
  static constexpr std::size_t kPad = 16;  ///< ld is a multiple of this (one AVX-512 vector)
  std::size_t n_in = 0;
  std::size_t n_out = 0;
  std::size_t ld = 0;
  bool narrow = false;
  Activation activation = Activation::identity;
  std::size_t w_offset = 0;
  std::size_t b_offset = 0;
};

/// One head of a network: its output width and activation.
struct HeadSpec {
  std::size_t n_out;
  Activation activation;
};

/// Weights of n_nets networks of identical shape and their forward pass.
///
/// Layer indices: 0 .. n_trunk-1 are the trunk, n_trunk .. n_trunk+n_heads-1 the heads.
/// Not synchronised: a set_* call must not overlap a forward on the same object. forward is
/// const and may run concurrently with other forward calls. Internal to the CPU backend
/// (neural_backend.hpp); the thread-safe models are in networks.hpp.
class MlpStack {
 public:
  /// trunk_sizes: [n_trunk + 1] widths, the input width first (a single width means no trunk:
  /// the heads read the input); trunk_activations: [n_trunk]; heads: at least one.
  /// Throws std::invalid_argument for a zero width, mismatched lengths or no head. The weights
  /// start at zero.
  MlpStack(std::size_t n_nets, std::vector<std::size_t> trunk_sizes,
           std::vector<Activation> trunk_activations, std::vector<HeadSpec> heads);
  MlpStack(const MlpStack&) = delete;
  MlpStack& operator=(const MlpStack&) = delete;

  std::size_t n_nets() const noexcept { return n_nets_; }
  std::size_t n_inputs() const noexcept { return layouts_.front().n_in; }
  std::size_t n_trunk() const noexcept { return n_trunk_; }
  std::size_t n_layers() const noexcept { return layouts_.size(); }
  const DenseLayout& layer(std::size_t index) const { return layouts_.at(index); }
  /// Multiply-adds per input row per network (all layers, all heads).
  std::size_t macs_per_row() const noexcept { return macs_per_row_; }

  /// Copy layer `index` of every network from w [n_nets, n_in, n_out] and b [n_nets, n_out]
  /// (C-contiguous). Values are copied as they are: callers check them (networks.hpp).
  void set_layer(std::size_t index, const float* w, const float* b);
  /// Copy layer `index` of network `net` from w [n_in, n_out] and b [n_out].
  void set_layer(std::size_t index, std::size_t net, const float* w, const float* b);
  /// Copy layer `index` of every network out to w [n_nets, n_in, n_out], b [n_nets, n_out].
  void get_layer(std::size_t index, float* w, float* b) const;
  /// Copy layer `index` of network `net` out to w [n_in, n_out], b [n_out].
  void get_layer(std::size_t index, std::size_t net, float* w, float* b) const;

  /// Evaluate every network on the same input rows x [n_rows, n_in] (row stride ldx >= n_in
  /// floats). outputs[h] receives head h as [n_nets, n_rows, n_out_h] (C order); a null
  /// outputs[h] skips that head. NaN or infinite inputs give NaN or infinite outputs in the rows
  /// they reach; nothing is checked here. Uses the thread pool for large enough work.
  void forward(const float* x, std::size_t n_rows, std::size_t ldx, float* const* outputs) const;

  /// Address of the packed weight storage; never changes after construction.
  const void* storage_address() const noexcept { return storage_.get(); }

 private:
  void run_nets(std::size_t net_begin, std::size_t net_end, bool reverse, const float* x,
                std::size_t row_begin, std::size_t row_end, std::size_t n_rows, std::size_t ldx,
                float* const* outputs) const;
  const float* net_base(std::size_t net) const noexcept { return storage_.get() + net * stride_; }
  float* net_base(std::size_t net) noexcept { return storage_.get() + net * stride_; }

  struct Free {
    void operator()(float* p) const noexcept;
  };
  std::size_t n_nets_ = 0;
  std::size_t n_trunk_ = 0;
  std::vector<DenseLayout> layouts_;
  std::size_t stride_ = 0;        // floats per network, a multiple of 16
  std::size_t tile_rows_ = 0;     // rows per tile of the series path
  std::size_t scratch_cols_ = 0;  // widest padded trunk or head output
  std::size_t macs_per_row_ = 0;  // multiply-adds per input row per network
  std::unique_ptr<float[], Free> storage_;
  mutable std::atomic<unsigned> calls_{0};  // parity flips the network order (see forward)
};

}  // namespace colmena
