#pragma once
/// The swarm's consensus: a weighted mean of agent signals with a fixed summation order.
///
/// out[t] = sum_i w[s_t, i] * x[i, t] / sum_i |w[s_t, i]| over agents i = 0 .. n_agents - 1 in
/// index order, in float64, where s_t picks one of `n_sets` weight vectors per bar (one global set,
/// or one per market regime). The order of the sum never depends on the number of bars, so a bar's
/// consensus is the same bit for bit whether it is computed alone (live, one state) or inside a
/// series of any length, and appending bars never changes an earlier value. A set whose weights
/// are all zero gives 0 (flat); a negative set index gives NaN (no signal).
#include <cstddef>
#include <cstdint>

namespace colmena {

/// signals float32 [n_agents, n_bars] row-major; weights float64 [n_sets, n_agents], finite;
/// set_of_bar int64 [n_bars] in [-1, n_sets) or nullptr (set 0 everywhere); out float64 [n_bars].
/// Throws std::invalid_argument on a set index out of range or non-finite weights.
void consensus(const float* signals, std::size_t n_agents, std::size_t n_bars,
               const double* weights, std::size_t n_sets, const std::int64_t* set_of_bar,
               double* out);

}  // namespace colmena
