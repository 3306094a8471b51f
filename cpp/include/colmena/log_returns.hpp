#pragma once
#include <cmath>
#include <cstddef>
#include <limits>

namespace colmena {

/// The one-bar log return log(close / previous): log1p of the simple return, which keeps the
/// precision of the small moves of minute bars. NaN unless both prices are finite.
inline double log_return(double previous, double close) noexcept {
  return std::isfinite(previous) && std::isfinite(close)
             ? std::log1p((close - previous) / previous)
             : std::numeric_limits<double>::quiet_NaN();
}

/// Log returns r[t] = log(close[t + 1] / close[t]) for t in [0, n - 1). close [n] (price, > 0),
/// r [max(n - 1, 0)]. A non-finite price gives NaN in the returns that use it. Returns false and
/// sets *bad_row to the first row whose price is <= 0 (r is then unspecified).
bool log_returns(const double* close, std::size_t n, double* r, std::size_t* bad_row) noexcept;

}  // namespace colmena
