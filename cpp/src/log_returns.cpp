#include "colmena/log_returns.hpp"

namespace colmena {

bool log_returns(const double* close, std::size_t n, double* r, std::size_t* bad_row) noexcept {
  for (std::size_t t = 0; t < n; ++t) {
    if (close[t] <= 0.0) {
      *bad_row = t;
      return false;
    }
  }
  for (std::size_t t = 0; t + 1 < n; ++t) r[t] = log_return(close[t], close[t + 1]);
  return true;
}

}  // namespace colmena
