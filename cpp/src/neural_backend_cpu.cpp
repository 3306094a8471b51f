// The CPU neural backend: NetworkWeights held in an MlpStack (packed, 64-byte aligned host
// memory) and forward passes through its SIMD-dispatched kernels (mlp.hpp).
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>

#include "colmena/mlp.hpp"
#include "colmena/neural_backend.hpp"

namespace colmena {

const char* device_type_name(DeviceType type) noexcept {
  switch (type) {
    case DeviceType::cpu:
      return "cpu";
    case DeviceType::cuda:
      return "cuda";
  }
  return "unknown";
}

std::size_t NetworkShape::n_in(std::size_t layer) const {
  if (layer >= n_layers()) throw std::out_of_range("layer index out of range");
  return layer < n_trunk() ? trunk_sizes.at(layer) : trunk_sizes.back();
}

std::size_t NetworkShape::n_out(std::size_t layer) const {
  if (layer >= n_layers()) throw std::out_of_range("layer index out of range");
  return layer < n_trunk() ? trunk_sizes.at(layer + 1) : heads[layer - n_trunk()].n_out;
}

void NetworkShape::validate() const {
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
}

namespace {

class CpuNetworkWeights final : public NetworkWeights {
 public:
  CpuNetworkWeights(const NeuralBackend* owner, NetworkShape shape)
      : owner_(owner),
        shape_(std::move(shape)),
        stack_(shape_.n_nets, shape_.trunk_sizes, shape_.trunk_activations, shape_.heads) {}

  const NetworkShape& shape() const noexcept override { return shape_; }
  void write_layer(std::size_t layer, const float* w, const float* b) override {
    stack_.set_layer(layer, w, b);
  }
  void write_layer(std::size_t layer, std::size_t net, const float* w, const float* b) override {
    stack_.set_layer(layer, net, w, b);
  }
  void read_layer(std::size_t layer, float* w, float* b) const override {
    stack_.get_layer(layer, w, b);
  }
  void read_layer(std::size_t layer, std::size_t net, float* w, float* b) const override {
    stack_.get_layer(layer, net, w, b);
  }
  const void* storage_address() const noexcept override { return stack_.storage_address(); }

  const NeuralBackend* owner() const noexcept { return owner_; }
  const MlpStack& stack() const noexcept { return stack_; }

 private:
  const NeuralBackend* owner_;
  NetworkShape shape_;
  MlpStack stack_;
};

class CpuNeuralBackend final : public NeuralBackend {
 public:
  const char* name() const noexcept override { return "cpu"; }
  Device device() const noexcept override { return {DeviceType::cpu, 0}; }

  std::unique_ptr<NetworkWeights> allocate(const NetworkShape& shape) const override {
    shape.validate();
    return std::make_unique<CpuNetworkWeights>(this, shape);
  }

  void swarm_forward(const NetworkWeights& weights, const float* x, std::size_t n_rows,
                     std::size_t ldx, float* out) const override {
    const MlpStack& stack = own(weights).stack();
    if (weights.shape().heads.size() != 1) {
      throw std::invalid_argument("swarm_forward needs a network with exactly one head");
    }
    float* outputs[1] = {out};
    stack.forward(x, n_rows, ldx, outputs);
  }

  void vae_encode(const NetworkWeights& weights, const float* x, std::size_t n_rows,
                  std::size_t ldx, float* mu, float* logvar) const override {
    const MlpStack& stack = own(weights).stack();
    const NetworkShape& shape = weights.shape();
    if (shape.n_nets != 1) throw std::invalid_argument("vae_encode needs a single network");
    if (shape.heads.size() > 2) throw std::invalid_argument("vae_encode needs one or two heads");
    if (logvar != nullptr && shape.heads.size() < 2) {
      throw std::invalid_argument("the logvar output needs the logvar head");
    }
    float* outputs[2] = {mu, logvar};
    stack.forward(x, n_rows, ldx, outputs);
  }

 private:
  const CpuNetworkWeights& own(const NetworkWeights& weights) const {
    const auto* cpu = dynamic_cast<const CpuNetworkWeights*>(&weights);
    if (cpu == nullptr || cpu->owner() != this) {
      throw std::invalid_argument("the weights were allocated by another backend");
    }
    return *cpu;
  }
};

}  // namespace

std::shared_ptr<const NeuralBackend> cpu_neural_backend() {
  static const std::shared_ptr<const NeuralBackend> backend =
      std::make_shared<const CpuNeuralBackend>();
  return backend;
}

}  // namespace colmena
