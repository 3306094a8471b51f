// Features: log returns and fractional differentiation.
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <cmath>
#include <optional>
#include <stdexcept>
#include <string>

#include "array_checks.hpp"
#include "colmena/fracdiff.hpp"
#include "colmena/log_returns.hpp"
#include "core_call.hpp"
#include "register.hpp"

namespace py = pybind11;

namespace colmena::bindings {
namespace {

ConvolutionMethod parse_method(const std::string& method) {
  if (method == "auto") return ConvolutionMethod::automatic;
  if (method == "direct") return ConvolutionMethod::direct;
  if (method == "fft") return ConvolutionMethod::fft;
  throw py::value_error("method must be 'auto', 'direct' or 'fft', got '" + method + "'");
}

py::array_t<double> to_array(const std::vector<double>& v) {
  py::array_t<double> out(static_cast<py::ssize_t>(v.size()));
  std::copy(v.begin(), v.end(), out.mutable_data());
  return out;
}

}  // namespace

void register_features(py::module_& m) {
  m.def(
      "log_returns",
      [](const py::handle& close_obj) {
        DoubleArray close = require_1d_float64(close_obj, "close");
        const auto n = static_cast<std::size_t>(close.size());
        py::array_t<double> out(static_cast<py::ssize_t>(n > 0 ? n - 1 : 0));
        std::size_t bad_row = 0;
        bool ok = true;
        {
          CoreCall call;
          ok = colmena::log_returns(close.data(), n, out.mutable_data(), &bad_row);
        }
        if (!ok) {
          throw py::value_error("close: price at row " + std::to_string(bad_row) + " is " +
                                std::to_string(close.data()[bad_row]) + "; prices must be > 0");
        }
        return out;
      },
      py::arg("close"));

  m.attr("MAX_FRACDIFF_WEIGHTS") = kMaxFracDiffWeights;
  m.def(
      "fracdiff_weights",
      [](double d, double threshold, const py::handle& window_obj) {
        const std::int64_t window = int_arg(window_obj, "fracdiff_weights: window");
        if (window < 0) throw py::value_error("fracdiff_weights: window must be >= 0");
        try {
          return to_array(
              colmena::fracdiff_weights(d, threshold, static_cast<std::size_t>(window)));
        } catch (const std::invalid_argument& e) {
          throw py::value_error(e.what());
        }
      },
      py::arg("d"), py::arg("threshold"), py::arg("window"));

  m.def(
      "fracdiff_ffd",
      [](const py::handle& x_obj, const py::handle& w_obj, const std::string& method) {
        DoubleArray x = require_1d_float64(x_obj, "x");
        DoubleArray w = require_1d_float64(w_obj, "weights");
        const auto n = static_cast<std::size_t>(x.size());
        const auto window = static_cast<std::size_t>(w.size());
        if (window == 0 || window > n) {
          throw py::value_error("window (" + std::to_string(window) +
                                " weights) must be in [1, len(x) = " + std::to_string(n) + "]");
        }
        const ConvolutionMethod how = parse_method(method);
        py::array_t<double> out(static_cast<py::ssize_t>(n - window + 1));
        {
          CoreCall call;
          colmena::fracdiff_ffd(x.data(), n, w.data(), window, out.mutable_data(), how);
        }
        return out;
      },
      py::arg("x"), py::arg("weights"), py::arg("method") = "auto");

  m.def(
      "fracdiff_expanding",
      [](const py::handle& x_obj, double d, double threshold, const std::string& method) {
        DoubleArray x = require_1d_float64(x_obj, "x");
        const ConvolutionMethod how = parse_method(method);
        if (!(d >= 0.0 && d <= 2.0))
          throw py::value_error("d must be in [0, 2], got " + std::to_string(d));
        if (!(threshold >= 0.0 && threshold <= 1.0)) {
          throw py::value_error("threshold must be in [0, 1], got " + std::to_string(threshold));
        }
        const auto n = static_cast<std::size_t>(x.size());
        py::array_t<double> out(static_cast<py::ssize_t>(n));
        {
          CoreCall call;
          colmena::fracdiff_expanding(x.data(), n, d, threshold, out.mutable_data(), how);
        }
        return out;
      },
      py::arg("x"), py::arg("d"), py::arg("threshold"), py::arg("method") = "auto");

  m.def(
      "expanding_skip",
      [](const py::handle& w_obj, double threshold) {
        DoubleArray w = require_1d_float64(w_obj, "weights");
        return colmena::expanding_skip(w.data(), static_cast<std::size_t>(w.size()), threshold);
      },
      py::arg("weights"), py::arg("threshold"));

  m.def("fracdiff_fft_crossover", &colmena::fracdiff_fft_crossover);

  py::class_<FracDiffStream>(m, "FracDiffStream", R"doc(
Streaming fixed-width-window fractional differentiation (FFD, AFML ch. 5, snippet 5.3).

FracDiffStream(d, *, threshold=None, window=None) keeps the newest ``window`` values in a ring and
returns, for every new value, ``sum_k w_k * x[t - k]``: the same number, bit for bit, that the
batch ``colmena.fracdiff(..., method="direct")`` gives at that position (the FFT method agrees to
about 1e-15 relative), in O(window) per update. Exactly one of ``threshold``
(drop weights once |w_k| < threshold) and ``window`` (number of weights) is required.

update(x) returns NaN until ``window`` values have arrived and while a non-finite value is inside
the window. Thread-safe: every call holds the stream's lock, and update_many holds it for the
whole batch (without the GIL), so batches from several threads never interleave and no update
is lost; the order in which they land is unspecified.

Raises ValueError for d outside [0, 2], both or neither of threshold/window, threshold <= 0, a
threshold that keeps more than MAX_FRACDIFF_WEIGHTS (1,000,000) weights, or window outside
[1, MAX_FRACDIFF_WEIGHTS].
)doc")
      .def(py::init([](double d, std::optional<double> threshold, const py::handle& window_obj) {
             std::optional<long long> window;
             if (!window_obj.is_none()) window = int_arg(window_obj, "FracDiffStream: window");
             if (threshold.has_value() == window.has_value()) {
               throw py::value_error("give exactly one of threshold and window");
             }
             if (threshold && !(*threshold > 0.0 && std::isfinite(*threshold))) {
               throw py::value_error("threshold must be finite and > 0, got " +
                                     std::to_string(*threshold));
             }
             if (window && *window < 1)
               throw py::value_error("window must be >= 1, got " + std::to_string(*window));
             if (window && static_cast<std::size_t>(*window) > kMaxFracDiffWeights)
               throw py::value_error("window must be at most " +
                                     std::to_string(kMaxFracDiffWeights) + " weights, got " +
                                     std::to_string(*window));
             try {
               return FracDiffStream(colmena::fracdiff_weights(
                   d, threshold.value_or(0.0), static_cast<std::size_t>(window.value_or(0))));
             } catch (const std::invalid_argument& e) {
               throw py::value_error(e.what());
             }
           }),
           py::arg("d"), py::kw_only(), py::arg("threshold") = py::none(),
           py::arg("window") = py::none())
      .def_static(
          "from_weights",
          [](const py::handle& w_obj) {
            DoubleArray w = require_1d_float64(w_obj, "weights");
            if (w.size() == 0) throw py::value_error("weights must not be empty");
            for (py::ssize_t i = 0; i < w.size(); ++i) {
              if (!std::isfinite(w.data()[i]))
                throw py::value_error("weights[" + std::to_string(i) + "] is not finite");
            }
            return FracDiffStream(std::vector<double>(w.data(), w.data() + w.size()));
          },
          py::arg("weights"),
          "Stream with explicit weights w_0..w_{W-1} (float64 [W], w_0 applies to the newest "
          "value).")
      .def(
          "update",
          [](FracDiffStream& self, const py::handle& x) {
            return self.update(float_arg(x, "FracDiffStream.update: x"));
          },
          py::arg("x"),
           "Add one value; returns the FFD value at it (NaN while the window is incomplete).")
      .def(
          "update_many",
          [](FracDiffStream& self, const py::handle& x_obj) {
            DoubleArray x = require_1d_float64(x_obj, "x");
            py::array_t<double> out(x.size());
            const double* src = x.data();
            double* dst = out.mutable_data();
            const auto n = static_cast<std::size_t>(x.size());
            {
              CoreCall call;
              self.update_many(src, n, dst);
            }
            return out;
          },
          py::arg("x"))
      .def("reset", &FracDiffStream::reset)
      .def_property_readonly("window", &FracDiffStream::window)
      .def_property_readonly("count", &FracDiffStream::count)
      .def_property_readonly("weights",
                             [](const FracDiffStream& self) { return to_array(self.weights()); });
}

}  // namespace colmena::bindings
