#pragma once
#include <cstddef>

namespace colmena {

/// Log returns r[t] = log(close[t + 1] / close[t]) for t in [0, n - 1). close [n] (price, > 0),
/// r [max(n - 1, 0)]. A non-finite price gives NaN in the returns that use it. Returns false and
/// sets *bad_row to the first row whose price is <= 0 (r is then unspecified).
bool log_returns(const double* close, std::size_t n, double* r, std::size_t* bad_row) noexcept;

}  // namespace colmena
