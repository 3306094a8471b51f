// The CUDA neural backend (neural_backend.hpp): weights in device memory, forward passes as
// fused kernels (every layer of a network in one kernel, after tiny-cuda-nn's fully fused MLP).
//
// Two kernels, the same arithmetic:
// - rows: one thread per (network, row), the network's weights staged in shared memory, the
//   row's activations in thread-local arrays; for series (n_rows large) with every width
//   <= kMaxFusedWidth;
// - state: one block per (network, row), one thread per output unit, the activations in shared
//   memory; for one state or a few (the live path) and for wider networks.
// Each output is computed by one thread with the operations of the CPU kernels (mlp.hpp,
// "Determinism"): wide layers (n_out >= 8) b[j], then fma(a[k], W[k, j], acc) for k in order;
// narrow layers 16 partial fused sums (partial l over k = l, l + 16, ..., zero-padded to a
// multiple of 16), the halving tree l + 8, + 4, + 2, + 1, then + b[j]; the activation formulas
// of activations.cuh. So the CPU backend's bits are expected (device_ops.hpp, tolerances).
#include <cuda_runtime.h>

#include <algorithm>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "activations.cuh"
#include "colmena/cuda_backend.hpp"
#include "colmena/neural_backend.hpp"
#include "common.cuh"

namespace colmena::cuda {
namespace {

using detail::check;
using detail::check_launch;
using detail::dense_unit;
using detail::LayerDesc;

constexpr int kMaxLayers = 16;        // trunk and heads together
constexpr int kMaxFusedWidth = 256;   // widest trunk layer of the rows kernel
constexpr int kRowsThreads = 64;      // threads per block of the rows kernel
constexpr int kStateThreads = 128;    // threads per block of the state kernel
constexpr std::size_t kRowsMinRows = 64;  // fewer rows: the state kernel


struct NetDesc {
  int n_layers;
  int n_trunk;
  int n_nets;
  int max_width;          // widest layer, the input included (the state kernel's buffers)
  int max_trunk;          // widest trunk output, at least 1 (the rows kernel's buffers)
  long long smem_floats;  // one network's weights, each layer's W and b padded to 4 floats
  LayerDesc layer[kMaxLayers];
};

struct Outputs {
  float* head[kMaxLayers];
};

// Rows kernel: grid (row blocks, n_nets); thread = one row of one network (forward_row). Shared
// memory: the trunk's ping-pong activations [2][max_trunk][blockDim.x] (element k of thread t
// at [k * blockDim.x + t]: no bank conflicts), then, with kShared, this network's weights, each
// layer's W and b 16-byte aligned (rows of W read four floats at a time).
template <bool kShared>
__global__ void swarm_rows_kernel(NetDesc desc, const float* __restrict__ storage,
                                  const float* __restrict__ x, long long n_rows, long long ldx,
                                  Outputs out) {
  extern __shared__ __align__(16) float smem[];
  const int net = blockIdx.y;
  const int threads = blockDim.x;
  float* act0 = smem;
  float* act1 = smem + static_cast<long long>(desc.max_trunk) * threads;
  float* wsm = smem + 2LL * desc.max_trunk * threads;
  const float* w[kMaxLayers];
  const float* b[kMaxLayers];
  long long offset = 0;
  for (int l = 0; l < desc.n_layers; ++l) {
    const LayerDesc& L = desc.layer[l];
    const long long nw = static_cast<long long>(L.n_in) * L.n_out;
    const float* gw = storage + L.w_offset + net * nw;
    const float* gb = storage + L.b_offset + static_cast<long long>(net) * L.n_out;
    if (kShared) {
      float* sw = wsm + offset;
      offset += (nw + 3) / 4 * 4;
      float* sb = wsm + offset;
      offset += (L.n_out + 3) / 4 * 4;
      for (long long i = threadIdx.x; i < nw; i += threads) sw[i] = gw[i];
      for (long long i = threadIdx.x; i < L.n_out; i += threads) sb[i] = gb[i];
      w[l] = sw;
      b[l] = sb;
    } else {
      w[l] = gw;
      b[l] = gb;
    }
  }
  if (kShared) __syncthreads();
  const long long row = static_cast<long long>(blockIdx.x) * threads + threadIdx.x;
  if (row >= n_rows) return;
  float* head_out[kMaxLayers];
  for (int l = 0; l < desc.n_layers; ++l) {
    const LayerDesc& L = desc.layer[l];
    if (L.head < 0) continue;
    float* base = out.head[L.head];
    head_out[L.head] =
        base == nullptr ? nullptr : base + (static_cast<long long>(net) * n_rows + row) * L.n_out;
  }
  detail::forward_row(desc.layer, desc.n_layers, w, b, kShared, x + row * ldx,
                      act0 + threadIdx.x, act1 + threadIdx.x, threads, head_out);
}

// State kernel: grid (n_nets, row slots); block = one (network, row), thread = output units.
__global__ void swarm_state_kernel(NetDesc desc, const float* __restrict__ storage,
                                   const float* __restrict__ x, long long n_rows, long long ldx,
                                   Outputs out) {
  extern __shared__ float act[];  // [2][max_width]
  const int net = blockIdx.x;
  for (long long row = blockIdx.y; row < n_rows; row += gridDim.y) {
    float* a0 = act;
    float* a1 = act + desc.max_width;
    const float* xr = x + row * ldx;
    for (int k = threadIdx.x; k < desc.layer[0].n_in; k += blockDim.x) a0[k] = xr[k];
    __syncthreads();
    for (int l = 0; l < desc.n_layers; ++l) {
      const LayerDesc& L = desc.layer[l];
      const float* w = storage + L.w_offset + static_cast<long long>(net) * L.n_in * L.n_out;
      const float* b = storage + L.b_offset + static_cast<long long>(net) * L.n_out;
      if (L.head < 0) {
        for (int j = threadIdx.x; j < L.n_out; j += blockDim.x) a1[j] = dense_unit(L, w, b, a0, 1, j);
        __syncthreads();
        float* t = a0;
        a0 = a1;
        a1 = t;
      } else if (out.head[L.head] != nullptr) {
        float* y = out.head[L.head] + (static_cast<long long>(net) * n_rows + row) * L.n_out;
        for (int j = threadIdx.x; j < L.n_out; j += blockDim.x) y[j] = dense_unit(L, w, b, a0, 1, j);
      }
    }
    __syncthreads();  // a0 is rewritten by the next row
  }
}

class CudaNetworkWeights final : public NetworkWeights {
 public:
  CudaNetworkWeights(const NeuralBackend* owner, int device, NetworkShape shape)
      : owner_(owner), device_(device), shape_(std::move(shape)) {
    if (shape_.n_layers() > static_cast<std::size_t>(kMaxLayers)) {
      throw std::invalid_argument("the CUDA backend takes at most " + std::to_string(kMaxLayers) +
                                  " layers (trunk and heads), got " +
                                  std::to_string(shape_.n_layers()));
    }
    desc_.n_layers = static_cast<int>(shape_.n_layers());
    desc_.n_trunk = static_cast<int>(shape_.n_trunk());
    desc_.n_nets = static_cast<int>(shape_.n_nets);
    desc_.max_width = static_cast<int>(shape_.n_inputs());
    desc_.max_trunk = 1;
    long long offset = 0;
    long long per_net = 0;
    for (std::size_t l = 0; l < shape_.n_layers(); ++l) {
      LayerDesc& L = desc_.layer[l];
      L.n_in = static_cast<int>(shape_.n_in(l));
      L.n_out = static_cast<int>(shape_.n_out(l));
      L.head = l < shape_.n_trunk() ? -1 : static_cast<int>(l - shape_.n_trunk());
      L.activation = static_cast<int>(l < shape_.n_trunk() ? shape_.trunk_activations[l]
                                                            : shape_.heads[l - shape_.n_trunk()].activation);
      L.w_offset = offset;
      offset += static_cast<long long>(shape_.n_nets) * L.n_in * L.n_out;
      L.b_offset = offset;
      offset += static_cast<long long>(shape_.n_nets) * L.n_out;
      per_net += (static_cast<long long>(L.n_in) * L.n_out + 3) / 4 * 4 + (L.n_out + 3) / 4 * 4;
      desc_.max_width = std::max(desc_.max_width, L.n_out);
      if (L.head < 0) desc_.max_trunk = std::max(desc_.max_trunk, L.n_out);
    }
    desc_.smem_floats = per_net;
    floats_ = static_cast<std::size_t>(offset);
    detail::DeviceGuard guard(device_);
    void* p = nullptr;
    const cudaError_t status = cudaMalloc(&p, floats_ * sizeof(float));
    if (status == cudaErrorMemoryAllocation) {
      cudaGetLastError();
      throw std::bad_alloc();
    }
    check(status, "cudaMalloc (network weights)");
    storage_ = static_cast<float*>(p);
    check(cudaMemset(storage_, 0, floats_ * sizeof(float)), "cudaMemset");
  }
  ~CudaNetworkWeights() override {
    if (storage_ != nullptr) {
      cudaSetDevice(device_);
      cudaFree(storage_);
    }
  }

  const NetworkShape& shape() const noexcept override { return shape_; }

  void write_layer(std::size_t layer, const float* w, const float* b) override {
    const LayerDesc& L = desc_.layer[checked(layer)];
    copy_in(L.w_offset, w, shape_.n_nets * L.n_in * L.n_out);
    copy_in(L.b_offset, b, shape_.n_nets * L.n_out);
  }
  void write_layer(std::size_t layer, std::size_t net, const float* w, const float* b) override {
    const LayerDesc& L = desc_.layer[checked(layer)];
    check_net(net);
    const std::size_t nw = static_cast<std::size_t>(L.n_in) * L.n_out;
    copy_in(L.w_offset + static_cast<long long>(net * nw), w, nw);
    copy_in(L.b_offset + static_cast<long long>(net * L.n_out), b, L.n_out);
  }
  void read_layer(std::size_t layer, float* w, float* b) const override {
    const LayerDesc& L = desc_.layer[checked(layer)];
    copy_out(L.w_offset, w, shape_.n_nets * L.n_in * L.n_out);
    copy_out(L.b_offset, b, shape_.n_nets * L.n_out);
  }
  void read_layer(std::size_t layer, std::size_t net, float* w, float* b) const override {
    const LayerDesc& L = desc_.layer[checked(layer)];
    check_net(net);
    const std::size_t nw = static_cast<std::size_t>(L.n_in) * L.n_out;
    copy_out(L.w_offset + static_cast<long long>(net * nw), w, nw);
    copy_out(L.b_offset + static_cast<long long>(net * L.n_out), b, L.n_out);
  }
  const void* storage_address() const noexcept override { return storage_; }

  const NeuralBackend* owner() const noexcept { return owner_; }
  const NetDesc& desc() const noexcept { return desc_; }
  const float* storage() const noexcept { return storage_; }

 private:
  std::size_t checked(std::size_t layer) const {
    if (layer >= shape_.n_layers()) throw std::out_of_range("layer index out of range");
    return layer;
  }
  void check_net(std::size_t net) const {
    if (net >= shape_.n_nets) throw std::out_of_range("network index out of range");
  }
  // Host to device; waits for the device first so no forward pass in flight reads a layer
  // half written.
  void copy_in(long long offset, const float* src, std::size_t count) {
    detail::DeviceGuard guard(device_);
    check(cudaDeviceSynchronize(), "cudaDeviceSynchronize (before a weight write)");
    check(cudaMemcpy(storage_ + offset, src, count * sizeof(float), cudaMemcpyHostToDevice),
          "cudaMemcpy (weights to the device)");
  }
  void copy_out(long long offset, float* dst, std::size_t count) const {
    detail::DeviceGuard guard(device_);
    check(cudaMemcpy(dst, storage_ + offset, count * sizeof(float), cudaMemcpyDeviceToHost),
          "cudaMemcpy (weights to the host)");
  }

  const NeuralBackend* owner_;
  int device_;
  NetworkShape shape_;
  NetDesc desc_{};
  float* storage_ = nullptr;
  std::size_t floats_ = 0;
};

class CudaNeuralBackend final : public NeuralBackend {
 public:
  explicit CudaNeuralBackend(int device) : device_(device) {}

  const char* name() const noexcept override { return "cuda"; }
  Device device() const noexcept override { return {DeviceType::cuda, device_}; }

  std::unique_ptr<NetworkWeights> allocate(const NetworkShape& shape) const override {
    shape.validate();
    return std::make_unique<CudaNetworkWeights>(this, device_, shape);
  }

  void swarm_forward(const NetworkWeights& weights, const float* x, std::size_t n_rows,
                     std::size_t ldx, float* out) const override {
    const CudaNetworkWeights& own_weights = own(weights);
    if (weights.shape().heads.size() != 1) {
      throw std::invalid_argument("swarm_forward needs a network with exactly one head");
    }
    Outputs outputs{};
    outputs.head[0] = out;
    run(own_weights, x, n_rows, ldx, outputs);
  }

  void vae_encode(const NetworkWeights& weights, const float* x, std::size_t n_rows,
                  std::size_t ldx, float* mu, float* logvar) const override {
    const CudaNetworkWeights& own_weights = own(weights);
    const NetworkShape& shape = weights.shape();
    if (shape.n_nets != 1) throw std::invalid_argument("vae_encode needs a single network");
    if (shape.heads.size() > 2) throw std::invalid_argument("vae_encode needs one or two heads");
    if (logvar != nullptr && shape.heads.size() < 2) {
      throw std::invalid_argument("the logvar output needs the logvar head");
    }
    Outputs outputs{};
    outputs.head[0] = mu;
    outputs.head[1] = logvar;
    run(own_weights, x, n_rows, ldx, outputs);
  }

 private:
  const CudaNetworkWeights& own(const NetworkWeights& weights) const {
    const auto* cuda = dynamic_cast<const CudaNetworkWeights*>(&weights);
    if (cuda == nullptr || cuda->owner() != this) {
      throw std::invalid_argument("the weights were allocated by another backend");
    }
    return *cuda;
  }

  void run(const CudaNetworkWeights& weights, const float* x, std::size_t n_rows,
           std::size_t ldx, const Outputs& outputs) const {
    if (n_rows == 0) return;
    const NetDesc& desc = weights.desc();
    if (ldx < static_cast<std::size_t>(desc.layer[0].n_in)) {
      throw std::invalid_argument("the row stride ldx is smaller than the input width");
    }
    detail::DeviceGuard guard(device_);
    int smem_optin = 0;
    check(cudaDeviceGetAttribute(&smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device_),
          "cudaDeviceGetAttribute");
    const auto smem_limit = static_cast<std::size_t>(smem_optin);
    const auto rows = static_cast<long long>(n_rows);
    const auto stride = static_cast<long long>(ldx);
    const cudaStream_t stream = detail::stream();
    const std::size_t act_bytes =
        2 * static_cast<std::size_t>(desc.max_trunk) * kRowsThreads * sizeof(float);
    if (n_rows >= kRowsMinRows && desc.max_trunk <= kMaxFusedWidth && desc.n_nets <= 65535 &&
        act_bytes <= smem_limit) {
      const dim3 grid(detail::blocks_for(n_rows, kRowsThreads), static_cast<unsigned>(desc.n_nets));
      const std::size_t weight_bytes = static_cast<std::size_t>(desc.smem_floats) * sizeof(float);
      const bool shared = act_bytes + weight_bytes <= smem_limit;
      const std::size_t smem = act_bytes + (shared ? weight_bytes : 0);
      auto kernel = shared ? swarm_rows_kernel<true> : swarm_rows_kernel<false>;
      if (smem > 48 * 1024) {
        check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                   static_cast<int>(smem)),
              "cudaFuncSetAttribute");
      }
      kernel<<<grid, kRowsThreads, smem, stream>>>(desc, weights.storage(), x, rows, stride,
                                                   outputs);
      check_launch("swarm_rows_kernel");
      return;
    }
    const std::size_t smem = 2 * static_cast<std::size_t>(desc.max_width) * sizeof(float);
    if (smem > smem_limit) {
      throw std::invalid_argument("a layer of " + std::to_string(desc.max_width) +
                                  " units is too wide for the CUDA backend");
    }
    if (smem > 48 * 1024) {
      check(cudaFuncSetAttribute(swarm_state_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                 static_cast<int>(smem)),
            "cudaFuncSetAttribute");
    }
    const dim3 grid(static_cast<unsigned>(desc.n_nets),
                    static_cast<unsigned>(std::min<std::size_t>(n_rows, 65535)));
    swarm_state_kernel<<<grid, kStateThreads, smem, stream>>>(desc, weights.storage(), x, rows,
                                                              stride, outputs);
    check_launch("swarm_state_kernel");
  }

  int device_;
};

}  // namespace

std::shared_ptr<const NeuralBackend> neural_backend(int device) {
  const int count = device_count();
  if (device < 0 || device >= count) {
    throw std::invalid_argument("CUDA device " + std::to_string(device) + " does not exist (" +
                                std::to_string(count) + " visible)");
  }
  static std::mutex mutex;
  static std::map<int, std::shared_ptr<const NeuralBackend>> backends;
  std::lock_guard<std::mutex> lock(mutex);
  auto& slot = backends[device];
  if (!slot) slot = std::make_shared<const CudaNeuralBackend>(device);
  return slot;
}

}  // namespace colmena::cuda
