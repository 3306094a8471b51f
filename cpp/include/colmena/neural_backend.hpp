#pragma once
/// The neural backend interface: where a network's weights live and what runs its forward pass.
///
/// One interface, several implementations chosen at construction (after faiss's Index and
/// GpuIndex, and ggml's backends, each tested against the CPU): cpu_neural_backend() is the
/// implementation in cpp/ (the kernels of mlp.hpp); a CUDA twin in cuda/ (built with
/// COLMENA_CUDA) implements the same class. The model facades of networks.hpp (SwarmNet, MlpNet,
/// VaeEncoder) take a backend when they are built and never look at which one they hold, so a
/// new backend plugs in without touching them or their callers.
///
/// Dimension names as in mlp.hpp: n_nets (networks in a stack; the swarm's n_agents), n_rows
/// (input rows: a batch, or the steps of a series), n_in / n_out (widths of one layer).
///
/// What every implementation promises:
/// - allocate() returns zeroed weights for exactly one NetworkShape; their storage address never
///   changes; write_layer / read_layer copy host arrays in and out as they are (the facades
///   check the values first).
/// - swarm_forward and vae_encode are const and may run concurrently on the same weights, from
///   any number of threads, as long as no write_layer overlaps them (NetworkWeights is not
///   synchronised; the facades hold the lock).
/// - x and the outputs are memory the backend's device reads and writes directly: host memory
///   for the CPU backend; a device backend says which pointers it takes.
/// - Results follow the reference operation order of mlp.hpp. The CPU backend gives the same
///   bits at every SIMD level, batch size and thread count; a device backend states its
///   tolerance against the CPU backend and is tested against it on the same inputs.
/// - Errors are std::invalid_argument (a bad shape, weights of another backend, a head the
///   network does not have); a forward pass on valid arguments does not throw (except
///   std::bad_alloc).
#include <cstddef>
#include <memory>
#include <vector>

#include "colmena/mlp.hpp"

namespace colmena {

enum class DeviceType { cpu = 0, cuda = 1 };

/// "cpu" or "cuda".
const char* device_type_name(DeviceType type) noexcept;

/// The device a backend computes on: the host (index 0) or one GPU.
struct Device {
  DeviceType type = DeviceType::cpu;
  int index = 0;
};

/// A stack of n_nets networks of identical shape: a trunk of dense layers, then one or more
/// heads that all read the trunk's output (mlp.hpp). Layer l < n_trunk is trunk layer l; layer
/// n_trunk + h is head h.
struct NetworkShape {
  std::size_t n_nets = 1;
  std::vector<std::size_t> trunk_sizes;       ///< [n_trunk + 1] widths, the input width first
  std::vector<Activation> trunk_activations;  ///< [n_trunk]
  std::vector<HeadSpec> heads;                ///< at least one

  std::size_t n_trunk() const noexcept { return trunk_activations.size(); }
  std::size_t n_layers() const noexcept { return n_trunk() + heads.size(); }
  std::size_t n_inputs() const { return trunk_sizes.at(0); }
  /// Input and output widths of layer `layer` (< n_layers()).
  std::size_t n_in(std::size_t layer) const;
  std::size_t n_out(std::size_t layer) const;
  /// Throws std::invalid_argument for n_nets == 0, no input width, a zero width, one
  /// activation too many or too few, or no head.
  void validate() const;
};

/// Weights of one NetworkShape in a backend's memory and layout. Not synchronised: a write must
/// not overlap a forward pass or another write on the same object.
class NetworkWeights {
 public:
  virtual ~NetworkWeights() = default;
  virtual const NetworkShape& shape() const noexcept = 0;
  /// Copy layer `layer` of every network from host w [n_nets, n_in, n_out] and
  /// b [n_nets, n_out] (C order).
  virtual void write_layer(std::size_t layer, const float* w, const float* b) = 0;
  /// Copy layer `layer` of network `net` from host w [n_in, n_out] and b [n_out].
  virtual void write_layer(std::size_t layer, std::size_t net, const float* w, const float* b) = 0;
  /// Copy layer `layer` of every network out to host w [n_nets, n_in, n_out], b [n_nets, n_out].
  virtual void read_layer(std::size_t layer, float* w, float* b) const = 0;
  /// Copy layer `layer` of network `net` out to host w [n_in, n_out], b [n_out].
  virtual void read_layer(std::size_t layer, std::size_t net, float* w, float* b) const = 0;
  /// Address of the weight storage (host or device memory); constant for the object's life.
  virtual const void* storage_address() const noexcept = 0;
};

/// The operations a backend implements. Implementations are stateless apart from their device
/// and may be shared by any number of networks and threads.
class NeuralBackend {
 public:
  virtual ~NeuralBackend() = default;
  /// Short name: "cpu", "cuda".
  virtual const char* name() const noexcept = 0;
  virtual Device device() const noexcept = 0;
  /// Zeroed weights for `shape` in this backend's memory. Throws std::invalid_argument when the
  /// shape is not valid (NetworkShape::validate).
  virtual std::unique_ptr<NetworkWeights> allocate(const NetworkShape& shape) const = 0;
  /// Every network of a stack with one head, on the same rows: x [n_rows, n_in] with row stride
  /// ldx >= n_in floats, out [n_nets, n_rows, n_out] (C order). The swarm (n_out = 1, one
  /// network per agent) and a single MLP (n_nets = 1) both run here. Throws
  /// std::invalid_argument for weights of another backend or a shape with several heads.
  virtual void swarm_forward(const NetworkWeights& weights, const float* x, std::size_t n_rows,
                             std::size_t ldx, float* out) const = 0;
  /// One network with the mu head (head 0) and optionally the logvar head (head 1):
  /// x [n_rows, n_in] (row stride ldx), mu [n_rows, n_latent], logvar [n_rows, n_latent] or
  /// null to skip it. Throws std::invalid_argument for weights of another backend, n_nets > 1,
  /// or a logvar output without the logvar head.
  virtual void vae_encode(const NetworkWeights& weights, const float* x, std::size_t n_rows,
                          std::size_t ldx, float* mu, float* logvar) const = 0;
};

/// The CPU backend (one shared instance). It runs at the process-wide SIMD level
/// (cpu_features.hpp) on the core's thread pool (parallel.hpp).
std::shared_ptr<const NeuralBackend> cpu_neural_backend();

}  // namespace colmena
