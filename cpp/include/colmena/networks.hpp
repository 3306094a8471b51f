#pragma once
/// The neural models of the pipeline, as thread-safe facades over a NeuralBackend:
/// - SwarmNet: the swarm's agents, n_agents MLPs of one shape with their own weights; hidden
///   layers use the chosen activation, the output layer (n_out = 1) tanh, so each agent gives a
///   signal in [-1, 1].
/// - MlpNet: one dense network, with a hidden activation and an output activation.
/// - VaeEncoder: the encoder of a VAE: a trunk with the chosen activation, then the linear mu
///   head and optionally the linear logvar head, both reading the trunk's output.
/// A layer computes y = act(x @ W + b) with W [n_in, n_out] (torch's nn.Linear weight,
/// transposed) and b [n_out]; dimension names as in mlp.hpp (n_agents, n_rows, n_features).
///
/// Thread safety (all three classes):
/// - Shapes, activations and the backend are fixed at construction; the weights start at zero.
/// - forward / encode and the get_* accessors are const and safe to call from any number of
///   threads at once. get_weights / get_agent copy every layer under one shared lock, so what
///   they return is always one whole set of weights (never layers from before and after a
///   set_*); get_layer alone is consistent only within its layer.
/// - set_* may be called from any thread at any time. It checks every value first and writes
///   nothing when it throws; then it takes the object's exclusive lock, so it waits for the
///   forward passes already running, and every forward pass sees the weights entirely from
///   before or entirely from after it.
/// - The lock is internal: callers (the Python bindings included) hold no lock and need none.
///   It is held only around the backend's copy or forward pass, never while calling out.
/// - The weight storage never moves (updates copy in place): storage_address() is constant.
/// - The CPU backend runs a forward pass on the core's thread pool (parallel.hpp); concurrent
///   forward passes are safe (a pool busy with one runs the other in its calling thread).
///
/// Numbers: the CPU backend gives the same bits at every SIMD level, for a row alone or inside
/// any batch, and for any thread count (mlp.hpp, "Determinism").
///
/// Errors: std::invalid_argument for a bad shape or a non-finite weight, naming the layer as the
/// Python API does ("layers[1] W[2, 6, 0] is inf; weights must be finite", "mu b[2] is nan;
/// biases must be finite"); std::out_of_range for a layer or agent index out of range.
#include <cstddef>
#include <memory>
#include <optional>
#include <shared_mutex>
#include <span>
#include <string>
#include <vector>

#include "colmena/mlp.hpp"
#include "colmena/neural_backend.hpp"

namespace colmena {

/// One dense layer in host memory, C-contiguous float32: W [n_in, n_out] and b [n_out] for one
/// network, W [n_nets, n_in, n_out] and b [n_nets, n_out] for every network of a stack.
struct LayerView {
  const float* w = nullptr;
  const float* b = nullptr;
};

/// Where to copy one dense layer out to (same layouts as LayerView).
struct LayerOut {
  float* w = nullptr;
  float* b = nullptr;
};

namespace detail {

/// A backend's weights behind a reader/writer lock, with the all-or-nothing write the facades
/// share.
class GuardedWeights {
 public:
  GuardedWeights(const NetworkShape& shape, std::shared_ptr<const NeuralBackend> backend);

  const NetworkShape& shape() const noexcept { return weights_->shape(); }
  const NeuralBackend& backend() const noexcept { return *backend_; }
  const void* storage_address() const noexcept { return weights_->storage_address(); }
  /// Multiply-adds per input row, all networks and heads.
  std::size_t macs_per_row() const noexcept { return macs_per_row_; }

  struct Write {
    std::size_t layer;
    LayerView view;
    std::string name;  ///< "layers[1]", "mu", ... for error messages
  };
  /// Check every write (finite values), then apply them all under the exclusive lock: to every
  /// network (arrays [n_nets, ...]) or, with `net`, to that network only.
  void write(const std::vector<Write>& writes, std::optional<std::size_t> net);
  /// Copy a layer out under the shared lock.
  void read(std::size_t layer, std::optional<std::size_t> net, float* w, float* b) const;
  /// Copy every layer out (out[i] for layer i, n_layers of them) under one shared lock.
  void read_all(std::span<const LayerOut> out, std::optional<std::size_t> net) const;

  /// Run fn(backend, weights) under the shared lock.
  template <class Fn>
  void run(Fn&& fn) const {
    std::shared_lock lock(mutex_);
    fn(*backend_, *weights_);
  }

 private:
  std::shared_ptr<const NeuralBackend> backend_;
  std::unique_ptr<NetworkWeights> weights_;
  std::size_t macs_per_row_ = 0;
  mutable std::shared_mutex mutex_;
};

}  // namespace detail

/// The swarm's agents (see the top of this file for the contract).
class SwarmNet {
 public:
  /// layer_sizes: (n_features, hidden..., 1), at least two widths, all >= 1, the last 1.
  /// Throws std::invalid_argument otherwise or for n_agents == 0.
  SwarmNet(std::size_t n_agents, std::vector<std::size_t> layer_sizes, Activation activation,
           std::shared_ptr<const NeuralBackend> backend = cpu_neural_backend());

  std::size_t n_agents() const noexcept { return net_.shape().n_nets; }
  std::size_t n_features() const noexcept { return layer_sizes_.front(); }
  /// Dense layers, the output layer included: layer_sizes().size() - 1.
  std::size_t n_layers() const noexcept { return layer_sizes_.size() - 1; }
  const std::vector<std::size_t>& layer_sizes() const noexcept { return layer_sizes_; }
  Activation activation() const noexcept { return activation_; }
  const NeuralBackend& backend() const noexcept { return net_.backend(); }
  const void* storage_address() const noexcept { return net_.storage_address(); }
  /// Multiply-adds per input row, all agents.
  std::size_t macs_per_row() const noexcept { return net_.macs_per_row(); }

  /// Every agent's signal for each row: x [n_rows, n_features] with row stride
  /// ldx >= n_features floats -> out [n_agents, n_rows]. NaN in x[t] gives NaN in out[:, t].
  void forward(const float* x, std::size_t n_rows, std::size_t ldx, float* out) const;

  /// Every layer of every agent: layers[i] = (W [n_agents, n_in, n_out], b [n_agents, n_out]),
  /// n_layers() of them.
  void set_weights(std::span<const LayerView> layers);
  /// Layer `index` of every agent.
  void set_layer(std::size_t index, LayerView layer);
  /// Every layer of agent `agent`: layers[i] = (W [n_in, n_out], b [n_out]).
  void set_agent(std::size_t agent, std::span<const LayerView> layers);
  /// Layer `index` of every agent, out to w [n_agents, n_in, n_out], b [n_agents, n_out].
  void get_layer(std::size_t index, float* w, float* b) const;
  /// Layer `index` of agent `agent`, out to w [n_in, n_out], b [n_out].
  void get_agent_layer(std::size_t agent, std::size_t index, float* w, float* b) const;
  /// Every layer of every agent (layouts as get_layer), n_layers() of them, as one snapshot.
  void get_weights(std::span<const LayerOut> layers) const;
  /// Every layer of agent `agent` (layouts as get_agent_layer), as one snapshot.
  void get_agent(std::size_t agent, std::span<const LayerOut> layers) const;

 private:
  std::vector<std::size_t> layer_sizes_;
  Activation activation_;
  detail::GuardedWeights net_;
};

/// One dense network (see the top of this file for the contract).
class MlpNet {
 public:
  /// layer_sizes: (n_features, hidden..., n_out), at least two widths, all >= 1.
  MlpNet(std::vector<std::size_t> layer_sizes, Activation activation, Activation output_activation,
         std::shared_ptr<const NeuralBackend> backend = cpu_neural_backend());

  std::size_t n_features() const noexcept { return layer_sizes_.front(); }
  std::size_t n_outputs() const noexcept { return layer_sizes_.back(); }
  std::size_t n_layers() const noexcept { return layer_sizes_.size() - 1; }
  const std::vector<std::size_t>& layer_sizes() const noexcept { return layer_sizes_; }
  Activation activation() const noexcept { return activation_; }
  Activation output_activation() const noexcept { return output_activation_; }
  const NeuralBackend& backend() const noexcept { return net_.backend(); }
  const void* storage_address() const noexcept { return net_.storage_address(); }
  std::size_t macs_per_row() const noexcept { return net_.macs_per_row(); }

  /// x [n_rows, n_features] (row stride ldx) -> out [n_rows, n_outputs].
  void forward(const float* x, std::size_t n_rows, std::size_t ldx, float* out) const;

  /// layers[i] = (W [n_in, n_out], b [n_out]), n_layers() of them.
  void set_weights(std::span<const LayerView> layers);
  void set_layer(std::size_t index, LayerView layer);
  void get_layer(std::size_t index, float* w, float* b) const;
  /// Every layer, n_layers() of them, as one snapshot.
  void get_weights(std::span<const LayerOut> layers) const;

 private:
  std::vector<std::size_t> layer_sizes_;
  Activation activation_;
  Activation output_activation_;
  detail::GuardedWeights net_;
};

/// The encoder of a VAE (see the top of this file for the contract). Layers: the trunk
/// (n_trunk() of them), then mu, then logvar when present.
class VaeEncoder {
 public:
  /// trunk_sizes: (n_features, hidden...): one width means no trunk (the heads read the
  /// input). latent_size: width of mu and logvar.
  VaeEncoder(std::vector<std::size_t> trunk_sizes, std::size_t latent_size, bool has_logvar,
             Activation activation,
             std::shared_ptr<const NeuralBackend> backend = cpu_neural_backend());

  std::size_t n_features() const noexcept { return trunk_sizes_.front(); }
  std::size_t n_trunk() const noexcept { return trunk_sizes_.size() - 1; }
  const std::vector<std::size_t>& trunk_sizes() const noexcept { return trunk_sizes_; }
  std::size_t latent_size() const noexcept { return latent_size_; }
  bool has_logvar() const noexcept { return has_logvar_; }
  Activation activation() const noexcept { return activation_; }
  const NeuralBackend& backend() const noexcept { return net_.backend(); }
  const void* storage_address() const noexcept { return net_.storage_address(); }
  std::size_t macs_per_row() const noexcept { return net_.macs_per_row(); }

  /// x [n_rows, n_features] (row stride ldx) -> mu [n_rows, latent_size] and, unless null,
  /// logvar [n_rows, latent_size]. Throws std::invalid_argument for a logvar output without
  /// the logvar head.
  void encode(const float* x, std::size_t n_rows, std::size_t ldx, float* mu, float* logvar) const;

  /// trunk[i] = (W [n_in, n_out], b [n_out]), n_trunk() of them; mu and logvar
  /// (W [trunk_out, latent_size], b [latent_size]); logvar given exactly when has_logvar().
  void set_weights(std::span<const LayerView> trunk, LayerView mu, std::optional<LayerView> logvar);
  /// Layer `index`: trunk layers, then mu, then logvar.
  void get_layer(std::size_t index, float* w, float* b) const;

 private:
  std::vector<std::size_t> trunk_sizes_;
  std::size_t latent_size_;
  bool has_logvar_;
  Activation activation_;
  detail::GuardedWeights net_;
};

}  // namespace colmena
