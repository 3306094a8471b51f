// Host build of the CUDA kernels' arithmetic (cuda/activations.cuh, compiled here by a plain C++
// compiler with -ffp-contract=off) for tests/test_cuda_emulation.py: the per-row loop of the
// fused swarm kernel over the same dense_unit the device runs, so the operation order of the GPU
// twins is checked against the CPU core bit for bit on a machine without a GPU.
#include <cstddef>

#include "activations.cuh"

using colmena::cuda::detail::activate;
using colmena::cuda::detail::dense_unit;
using colmena::cuda::detail::LayerDesc;

extern "C" {

// y[i] = activation(x[i]) (the activation codes of colmena::Activation).
void emu_activate(int activation, const float* x, float* y, long long n) {
  for (long long i = 0; i < n; ++i) y[i] = activate(activation, x[i]);
}

// The rows kernel's loop on the host. Layer l: n_in[l], n_out[l], act[l], head[l] (-1 for the
// trunk), w[l] = W [n_nets, n_in, n_out], b[l] = b [n_nets, n_out]; x [n_rows, n_in[0]];
// out[h] = [n_nets, n_rows, n_out of head h]. Widths up to 1024.
int emu_forward(int n_layers, const int* n_in, const int* n_out, const int* act, const int* head,
                const float* const* w, const float* const* b, int n_nets, const float* x,
                long long n_rows, float* const* out) {
  constexpr int kMax = 1024;
  static float buf[2][kMax];
  for (int l = 0; l < n_layers; ++l) {
    if (n_in[l] > kMax || n_out[l] > kMax) return 1;
  }
  for (int net = 0; net < n_nets; ++net) {
    for (long long row = 0; row < n_rows; ++row) {
      for (int k = 0; k < n_in[0]; ++k) buf[0][k] = x[row * n_in[0] + k];
      int cur = 0;
      for (int l = 0; l < n_layers; ++l) {
        const LayerDesc L{n_in[l], n_out[l], act[l], head[l], 0, 0};
        const float* wl = w[l] + static_cast<long long>(net) * n_in[l] * n_out[l];
        const float* bl = b[l] + static_cast<long long>(net) * n_out[l];
        if (head[l] < 0) {
          for (int j = 0; j < n_out[l]; ++j) buf[cur ^ 1][j] = dense_unit(L, wl, bl, buf[cur], j);
          cur ^= 1;
        } else {
          float* y = out[head[l]] + (static_cast<long long>(net) * n_rows + row) * n_out[l];
          for (int j = 0; j < n_out[l]; ++j) y[j] = dense_unit(L, wl, bl, buf[cur], j);
        }
      }
    }
  }
  return 0;
}

}  // extern "C"
