// Host build of the CUDA kernels' arithmetic (cuda/activations.cuh, compiled here by a plain C++
// compiler with -ffp-contract=off) for tests/test_cuda_emulation.py: the rows kernel's
// per-thread code (forward_row, with the register path of wide_layer and dense_unit), so the
// operation order of the GPU twins is checked against the CPU core bit for bit on a machine
// without a GPU.
#include <cstddef>

#include "activations.cuh"

using colmena::cuda::detail::activate;
using colmena::cuda::detail::forward_row;
using colmena::cuda::detail::LayerDesc;

extern "C" {

// y[i] = activation(x[i]) (the activation codes of colmena::Activation).
void emu_activate(int activation, const float* x, float* y, long long n) {
  for (long long i = 0; i < n; ++i) y[i] = activate(activation, x[i]);
}

// The rows kernel's per-thread code (forward_row) on the host. Layer l: n_in[l], n_out[l],
// act[l], head[l] (-1 for the trunk), w[l] = W [n_nets, n_in, n_out], b[l] = b [n_nets, n_out];
// x [n_rows, n_in[0]]; out[h] = [n_nets, n_rows, n_out of head h]. Trunk widths up to 1024,
// at most 16 layers.
int emu_forward(int n_layers, const int* n_in, const int* n_out, const int* act, const int* head,
                const float* const* w, const float* const* b, int n_nets, const float* x,
                long long n_rows, float* const* out) {
  constexpr int kMax = 1024;
  constexpr int kMaxLayers = 16;
  static float act0[kMax], act1[kMax];
  if (n_layers > kMaxLayers) return 1;
  LayerDesc layers[kMaxLayers];
  for (int l = 0; l < n_layers; ++l) {
    if (head[l] < 0 && n_out[l] > kMax) return 1;
    layers[l] = LayerDesc{n_in[l], n_out[l], act[l], head[l], 0, 0};
  }
  const float* wl[kMaxLayers];
  const float* bl[kMaxLayers];
  float* head_out[kMaxLayers];
  for (int net = 0; net < n_nets; ++net) {
    for (int l = 0; l < n_layers; ++l) {
      wl[l] = w[l] + static_cast<long long>(net) * n_in[l] * n_out[l];
      bl[l] = b[l] + static_cast<long long>(net) * n_out[l];
    }
    for (long long row = 0; row < n_rows; ++row) {
      for (int l = 0; l < n_layers; ++l) {
        if (head[l] >= 0) {
          head_out[head[l]] = out[head[l]] + (static_cast<long long>(net) * n_rows + row) * n_out[l];
        }
      }
      forward_row(layers, n_layers, wl, bl, false, x + row * n_in[0], act0, act1, 1, head_out);
    }
  }
  return 0;
}

}  // extern "C"
