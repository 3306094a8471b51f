#include "colmena/networks.hpp"

#include <cmath>
#include <initializer_list>
#include <mutex>
#include <stdexcept>
#include <string>
#include <utility>

namespace colmena {
namespace {

// Index of the first non-finite value of x[0, n); n if none.
std::size_t first_non_finite(const float* x, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) {
    if (!std::isfinite(x[i])) return i;
  }
  return n;
}

std::string describe(float v) {
  if (std::isnan(v)) return "nan";
  return v > 0 ? "inf" : "-inf";
}

std::string index_text(std::initializer_list<std::size_t> idx) {
  std::string s = "[";
  bool first = true;
  for (std::size_t i : idx) {
    if (!first) s += ", ";
    s += std::to_string(i);
    first = false;
  }
  return s + "]";
}

// Throws std::invalid_argument "<name> W[net, i, j] is nan; ..." when w [n_nets, n_in, n_out]
// or b [n_nets, n_out] holds a non-finite value; with `stacked` false, one network and no net
// index in the message.
void check_finite(const std::string& name, bool stacked, std::size_t n_nets, std::size_t n_in,
                  std::size_t n_out, const float* w, const float* b) {
  const std::size_t n_w = n_nets * n_in * n_out;
  if (const std::size_t i = first_non_finite(w, n_w); i < n_w) {
    const std::size_t net = i / (n_in * n_out), row = i / n_out % n_in, col = i % n_out;
    throw std::invalid_argument(name + " W" +
                                (stacked ? index_text({net, row, col}) : index_text({row, col})) +
                                " is " + describe(w[i]) + "; weights must be finite");
  }
  const std::size_t n_b = n_nets * n_out;
  if (const std::size_t j = first_non_finite(b, n_b); j < n_b) {
    throw std::invalid_argument(
        name + " b" + (stacked ? index_text({j / n_out, j % n_out}) : index_text({j % n_out})) +
        " is " + describe(b[j]) + "; biases must be finite");
  }
}

void check_index(std::size_t index, std::size_t n, const char* what) {
  if (index >= n) {
    throw std::out_of_range(std::string(what) + " index " + std::to_string(index) +
                            " is outside [0, " + std::to_string(n) + ")");
  }
}

void check_widths(const std::vector<std::size_t>& sizes, std::size_t at_least, const char* what) {
  if (sizes.size() < at_least) {
    throw std::invalid_argument(std::string(what) + " needs at least " + std::to_string(at_least) +
                                " widths, got " + std::to_string(sizes.size()));
  }
  for (std::size_t width : sizes) {
    if (width == 0) throw std::invalid_argument("layer widths must be >= 1");
  }
}

std::string layer_name(std::size_t i) { return "layers[" + std::to_string(i) + "]"; }

// Trunk: every layer but the last, all with `activation`; head: the last layer.
NetworkShape chain_shape(std::size_t n_nets, const std::vector<std::size_t>& sizes,
                         Activation activation, Activation output_activation) {
  NetworkShape shape;
  shape.n_nets = n_nets;
  shape.trunk_sizes.assign(sizes.begin(), sizes.end() - 1);
  shape.trunk_activations.assign(sizes.size() - 2, activation);
  shape.heads = {{sizes.back(), output_activation}};
  return shape;
}

NetworkShape swarm_shape(std::size_t n_agents, const std::vector<std::size_t>& sizes,
                         Activation activation) {
  if (n_agents == 0) throw std::invalid_argument("a swarm needs at least one agent");
  check_widths(sizes, 2, "a swarm");
  if (sizes.back() != 1) {
    throw std::invalid_argument("the output layer " + layer_name(sizes.size() - 2) +
                                " must have n_out = 1 (one signal per agent), got " +
                                std::to_string(sizes.back()));
  }
  return chain_shape(n_agents, sizes, activation, Activation::tanh);
}

NetworkShape mlp_shape(const std::vector<std::size_t>& sizes, Activation activation,
                       Activation output_activation) {
  check_widths(sizes, 2, "an MLP");
  return chain_shape(1, sizes, activation, output_activation);
}

NetworkShape vae_shape(const std::vector<std::size_t>& trunk_sizes, std::size_t latent_size,
                       bool has_logvar, Activation activation) {
  check_widths(trunk_sizes, 1, "a VAE encoder trunk");
  if (latent_size == 0) throw std::invalid_argument("the latent size must be >= 1");
  NetworkShape shape;
  shape.trunk_sizes = trunk_sizes;
  shape.trunk_activations.assign(trunk_sizes.size() - 1, activation);
  shape.heads = {{latent_size, Activation::identity}};
  if (has_logvar) shape.heads.push_back({latent_size, Activation::identity});
  return shape;
}

void check_count(std::size_t got, std::size_t expected) {
  if (got != expected) {
    throw std::invalid_argument("need " + std::to_string(expected) + " layers, got " +
                                std::to_string(got));
  }
}

}  // namespace

// ---------------------------------------------------------------- GuardedWeights
namespace detail {

GuardedWeights::GuardedWeights(const NetworkShape& shape,
                               std::shared_ptr<const NeuralBackend> backend)
    : backend_(std::move(backend)) {
  if (!backend_) throw std::invalid_argument("no neural backend given");
  weights_ = backend_->allocate(shape);
  for (std::size_t l = 0; l < shape.n_layers(); ++l) {
    macs_per_row_ += shape.n_nets * shape.n_in(l) * shape.n_out(l);
  }
}

void GuardedWeights::write(const std::vector<Write>& writes, std::optional<std::size_t> net) {
  const NetworkShape& s = shape();
  if (net) check_index(*net, s.n_nets, "network");
  const std::size_t n_nets = net ? 1 : s.n_nets;
  for (const Write& item : writes) {
    check_index(item.layer, s.n_layers(), "layer");
    check_finite(item.name, !net, n_nets, s.n_in(item.layer), s.n_out(item.layer), item.view.w,
                 item.view.b);
  }
  std::unique_lock lock(mutex_);
  for (const Write& item : writes) {
    if (net) {
      weights_->write_layer(item.layer, *net, item.view.w, item.view.b);
    } else {
      weights_->write_layer(item.layer, item.view.w, item.view.b);
    }
  }
}

void GuardedWeights::read(std::size_t layer, std::optional<std::size_t> net, float* w,
                          float* b) const {
  check_index(layer, shape().n_layers(), "layer");
  if (net) check_index(*net, shape().n_nets, "network");
  std::shared_lock lock(mutex_);
  if (net) {
    weights_->read_layer(layer, *net, w, b);
  } else {
    weights_->read_layer(layer, w, b);
  }
}

void GuardedWeights::read_all(std::span<const LayerOut> out,
                              std::optional<std::size_t> net) const {
  check_count(out.size(), shape().n_layers());
  if (net) check_index(*net, shape().n_nets, "network");
  std::shared_lock lock(mutex_);
  for (std::size_t layer = 0; layer < out.size(); ++layer) {
    if (net) {
      weights_->read_layer(layer, *net, out[layer].w, out[layer].b);
    } else {
      weights_->read_layer(layer, out[layer].w, out[layer].b);
    }
  }
}

}  // namespace detail

// ---------------------------------------------------------------- SwarmNet
SwarmNet::SwarmNet(std::size_t n_agents, std::vector<std::size_t> layer_sizes,
                   Activation activation, std::shared_ptr<const NeuralBackend> backend)
    : layer_sizes_(std::move(layer_sizes)),
      activation_(activation),
      net_(swarm_shape(n_agents, layer_sizes_, activation), std::move(backend)) {}

void SwarmNet::forward(const float* x, std::size_t n_rows, std::size_t ldx, float* out) const {
  net_.run([&](const NeuralBackend& backend, const NetworkWeights& weights) {
    backend.swarm_forward(weights, x, n_rows, ldx, out);
  });
}

void SwarmNet::set_weights(std::span<const LayerView> layers) {
  check_count(layers.size(), n_layers());
  std::vector<detail::GuardedWeights::Write> writes;
  for (std::size_t i = 0; i < layers.size(); ++i) writes.push_back({i, layers[i], layer_name(i)});
  net_.write(writes, std::nullopt);
}

void SwarmNet::set_layer(std::size_t index, LayerView layer) {
  check_index(index, n_layers(), "layer");
  net_.write({{index, layer, layer_name(index)}}, std::nullopt);
}

void SwarmNet::set_agent(std::size_t agent, std::span<const LayerView> layers) {
  check_index(agent, n_agents(), "agent");
  check_count(layers.size(), n_layers());
  std::vector<detail::GuardedWeights::Write> writes;
  for (std::size_t i = 0; i < layers.size(); ++i) writes.push_back({i, layers[i], layer_name(i)});
  net_.write(writes, agent);
}

void SwarmNet::get_layer(std::size_t index, float* w, float* b) const {
  net_.read(index, std::nullopt, w, b);
}

void SwarmNet::get_agent_layer(std::size_t agent, std::size_t index, float* w, float* b) const {
  check_index(agent, n_agents(), "agent");
  net_.read(index, agent, w, b);
}

void SwarmNet::get_weights(std::span<const LayerOut> layers) const {
  net_.read_all(layers, std::nullopt);
}

void SwarmNet::get_agent(std::size_t agent, std::span<const LayerOut> layers) const {
  check_index(agent, n_agents(), "agent");
  net_.read_all(layers, agent);
}

// ---------------------------------------------------------------- MlpNet
MlpNet::MlpNet(std::vector<std::size_t> layer_sizes, Activation activation,
               Activation output_activation, std::shared_ptr<const NeuralBackend> backend)
    : layer_sizes_(std::move(layer_sizes)),
      activation_(activation),
      output_activation_(output_activation),
      net_(mlp_shape(layer_sizes_, activation, output_activation), std::move(backend)) {}

void MlpNet::forward(const float* x, std::size_t n_rows, std::size_t ldx, float* out) const {
  net_.run([&](const NeuralBackend& backend, const NetworkWeights& weights) {
    backend.swarm_forward(weights, x, n_rows, ldx, out);
  });
}

void MlpNet::set_weights(std::span<const LayerView> layers) {
  check_count(layers.size(), n_layers());
  std::vector<detail::GuardedWeights::Write> writes;
  for (std::size_t i = 0; i < layers.size(); ++i) writes.push_back({i, layers[i], layer_name(i)});
  net_.write(writes, 0);
}

void MlpNet::set_layer(std::size_t index, LayerView layer) {
  check_index(index, n_layers(), "layer");
  net_.write({{index, layer, layer_name(index)}}, 0);
}

void MlpNet::get_layer(std::size_t index, float* w, float* b) const { net_.read(index, 0, w, b); }

void MlpNet::get_weights(std::span<const LayerOut> layers) const { net_.read_all(layers, 0); }

// ---------------------------------------------------------------- VaeEncoder
VaeEncoder::VaeEncoder(std::vector<std::size_t> trunk_sizes, std::size_t latent_size,
                       bool has_logvar, Activation activation,
                       std::shared_ptr<const NeuralBackend> backend)
    : trunk_sizes_(std::move(trunk_sizes)),
      latent_size_(latent_size),
      has_logvar_(has_logvar),
      activation_(activation),
      net_(vae_shape(trunk_sizes_, latent_size, has_logvar, activation), std::move(backend)) {}

void VaeEncoder::encode(const float* x, std::size_t n_rows, std::size_t ldx, float* mu,
                        float* logvar) const {
  if (logvar != nullptr && !has_logvar_) {
    throw std::invalid_argument("the logvar output needs the logvar head");
  }
  net_.run([&](const NeuralBackend& backend, const NetworkWeights& weights) {
    backend.vae_encode(weights, x, n_rows, ldx, mu, logvar);
  });
}

void VaeEncoder::set_weights(std::span<const LayerView> trunk, LayerView mu,
                             std::optional<LayerView> logvar) {
  check_count(trunk.size(), n_trunk());
  if (logvar.has_value() != has_logvar_) {
    throw std::invalid_argument(has_logvar_ ? "the logvar head's weights are missing"
                                            : "this encoder has no logvar head");
  }
  std::vector<detail::GuardedWeights::Write> writes;
  for (std::size_t i = 0; i < trunk.size(); ++i) writes.push_back({i, trunk[i], layer_name(i)});
  writes.push_back({n_trunk(), mu, "mu"});
  if (logvar) writes.push_back({n_trunk() + 1, *logvar, "logvar"});
  net_.write(writes, 0);
}

void VaeEncoder::get_layer(std::size_t index, float* w, float* b) const {
  net_.read(index, 0, w, b);
}

}  // namespace colmena
