#include "colmena/log_returns.hpp"

#include <cmath>
#include <limits>

namespace colmena {

bool log_returns(const double* close, std::size_t n, double* r, std::size_t* bad_row) noexcept {
  for (std::size_t t = 0; t < n; ++t) {
    if (close[t] <= 0.0) {
      *bad_row = t;
      return false;
    }
  }
  const double nan = std::numeric_limits<double>::quiet_NaN();
  for (std::size_t t = 0; t + 1 < n; ++t) {
    const double a = close[t], b = close[t + 1];
    // log1p of the simple return keeps precision for the small moves of minute bars.
    r[t] = std::isfinite(a) && std::isfinite(b) ? std::log1p((b - a) / a) : nan;
  }
  return true;
}

}  // namespace colmena
