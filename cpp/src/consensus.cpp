#include "colmena/consensus.hpp"

#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

namespace colmena {

void consensus(const float* signals, std::size_t n_agents, std::size_t n_bars,
               const double* weights, std::size_t n_sets, const std::int64_t* set_of_bar,
               double* out) {
  if (n_sets == 0) throw std::invalid_argument("consensus: no weight set");
  std::vector<double> total(n_sets, 0.0);
  for (std::size_t s = 0; s < n_sets; ++s) {
    for (std::size_t i = 0; i < n_agents; ++i) {
      const double w = weights[s * n_agents + i];
      if (!std::isfinite(w)) {
        throw std::invalid_argument("consensus: weight " + std::to_string(i) + " of set " +
                                    std::to_string(s) + " is not finite");
      }
      total[s] += std::abs(w);
    }
  }
  if (set_of_bar != nullptr) {
    for (std::size_t t = 0; t < n_bars; ++t) {
      if (set_of_bar[t] >= static_cast<std::int64_t>(n_sets) || set_of_bar[t] < -1) {
        throw std::invalid_argument("consensus: weight set " + std::to_string(set_of_bar[t]) +
                                    " at bar " + std::to_string(t) + " outside [-1, " +
                                    std::to_string(n_sets) + ")");
      }
    }
  }
  for (std::size_t t = 0; t < n_bars; ++t) out[t] = 0.0;
  // Agents outer, bars inner: each bar's sum runs over agents in index order.
  for (std::size_t i = 0; i < n_agents; ++i) {
    const float* x = signals + i * n_bars;
    if (set_of_bar == nullptr) {
      const double w = weights[i];
      for (std::size_t t = 0; t < n_bars; ++t) out[t] += w * static_cast<double>(x[t]);
    } else {
      for (std::size_t t = 0; t < n_bars; ++t) {
        const std::int64_t s = set_of_bar[t] < 0 ? 0 : set_of_bar[t];
        out[t] += weights[static_cast<std::size_t>(s) * n_agents + i] * static_cast<double>(x[t]);
      }
    }
  }
  for (std::size_t t = 0; t < n_bars; ++t) {
    const std::int64_t s = set_of_bar == nullptr ? 0 : set_of_bar[t];
    if (s < 0) {
      out[t] = std::numeric_limits<double>::quiet_NaN();
      continue;
    }
    const double sum = total[static_cast<std::size_t>(s)];
    out[t] = sum > 0.0 ? out[t] / sum : 0.0;
  }
}

}  // namespace colmena
