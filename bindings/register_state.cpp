// Market state: the batch per-bar features, the regime features and the streaming market state.
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "array_checks.hpp"
#include "colmena/market_state.hpp"
#include "core_call.hpp"
#include "register.hpp"

namespace py = pybind11;

namespace colmena::bindings {
namespace {

using Int64Array = py::array_t<std::int64_t, py::array::c_style>;
constexpr auto F = static_cast<py::ssize_t>(kMarketFeatures);

Int64Array require_1d_int64(const py::handle& obj, const char* name) {
  if (!py::isinstance<py::array>(obj)) {
    throw py::type_error(std::string(name) + " must be a numpy.ndarray of int64");
  }
  auto arr = py::reinterpret_borrow<py::array>(obj);
  if (!arr.dtype().is(py::dtype::of<std::int64_t>())) {
    throw py::type_error(std::string(name) + " must have dtype int64, got " +
                         std::string(py::str(arr.dtype())));
  }
  if (arr.ndim() != 1) {
    throw py::value_error(std::string(name) + " must be 1-D, got " + std::to_string(arr.ndim()) +
                          " dimensions");
  }
  if (!(arr.flags() & py::array::c_style)) {
    throw py::value_error(std::string(name) + " must be C-contiguous");
  }
  return py::reinterpret_borrow<Int64Array>(arr);
}

std::size_t non_negative(long long value, const char* name) {
  if (value < 0) throw py::value_error(std::string(name) + " must be >= 0, got " + std::to_string(value));
  return static_cast<std::size_t>(value);
}

// mean or std of a normalization: float64 [4].
DoubleArray require_features(const py::handle& obj, const char* name) {
  DoubleArray a = require_1d_float64(obj, name);
  if (a.size() != F) {
    throw py::value_error(std::string(name) + " must have " + std::to_string(F) +
                          " values (one per feature), got " + std::to_string(a.size()));
  }
  return a;
}

py::array_t<double> to_array(const std::vector<double>& v) {
  py::array_t<double> out(static_cast<py::ssize_t>(v.size()));
  std::copy(v.begin(), v.end(), out.mutable_data());
  return out;
}

template <typename Fn>
auto as_value_error(Fn&& fn) -> decltype(fn()) {
  try {
    return fn();
  } catch (const std::invalid_argument& e) {
    throw py::value_error(e.what());
  }
}

}  // namespace

void register_state(py::module_& m) {
  py::class_<MarketStateSpec>(m, "MarketStateSpec", R"doc(
How the market state is computed (colmena.state.FeatureSpec in core terms).

MarketStateSpec(ffd_weights, volatility_bars, volume_bars, state_bars, max_gap_bars, bar_ns,
regime_lookback=0): ffd_weights float64 [W] (w_0 on the newest log close, AFML ch. 5 FFD
weights), volatility_bars >= 2 log returns, volume_bars >= 1, state_bars >= 1 rows per VAE
window, max_gap_bars >= 0 missing bars a look-back may span, bar_ns >= 0 bar length in ns (0: no
gap detection), regime_lookback >= 0 bars (0: no regime features). Raises ValueError for a value
out of range or a non-finite weight.
)doc")
      .def(py::init([](const py::handle& w_obj, const py::handle& volatility_bars,
                       const py::handle& volume_bars, const py::handle& state_bars,
                       const py::handle& max_gap_bars, const py::handle& bar_ns,
                       const py::handle& regime_lookback) {
             DoubleArray w = require_1d_float64(w_obj, "ffd_weights");
             // Integers, never bools or floats (int_arg: TypeError naming the argument).
             auto count = [](const py::handle& obj, const char* name) {
               return non_negative(int_arg(obj, name), name);
             };
             MarketStateSpec s;
             s.ffd_weights.assign(w.data(), w.data() + w.size());
             s.volatility_bars = count(volatility_bars, "volatility_bars");
             s.volume_bars = count(volume_bars, "volume_bars");
             s.state_bars = count(state_bars, "state_bars");
             s.max_gap_bars = count(max_gap_bars, "max_gap_bars");
             s.bar_ns = static_cast<std::int64_t>(count(bar_ns, "bar_ns"));
             s.regime_lookback = count(regime_lookback, "regime_lookback");
             as_value_error([&] {
               s.validate();
               return 0;
             });
             return s;
           }),
           py::arg("ffd_weights"), py::arg("volatility_bars"), py::arg("volume_bars"),
           py::arg("state_bars"), py::arg("max_gap_bars"), py::arg("bar_ns"),
           py::arg("regime_lookback") = py::int_(0))
      .def_property_readonly("ffd_weights",
                             [](const MarketStateSpec& s) { return to_array(s.ffd_weights); })
      .def_property_readonly("volatility_bars",
                             [](const MarketStateSpec& s) { return s.volatility_bars; })
      .def_property_readonly("volume_bars", [](const MarketStateSpec& s) { return s.volume_bars; })
      .def_property_readonly("state_bars", [](const MarketStateSpec& s) { return s.state_bars; })
      .def_property_readonly("max_gap_bars",
                             [](const MarketStateSpec& s) { return s.max_gap_bars; })
      .def_property_readonly("bar_ns", [](const MarketStateSpec& s) { return s.bar_ns; })
      .def_property_readonly("regime_lookback",
                             [](const MarketStateSpec& s) { return s.regime_lookback; })
      .def_property_readonly("lookback_bars", &MarketStateSpec::lookback_bars);

  m.def(
      "market_state_batch",
      [](const py::handle& ts_obj, const py::handle& close_obj, const py::handle& volume_obj,
         const MarketStateSpec& spec) {
        Int64Array ts = require_1d_int64(ts_obj, "ts");
        DoubleArray close = require_1d_float64(close_obj, "close");
        DoubleArray volume = require_1d_float64(volume_obj, "volume");
        if (close.size() != ts.size() || volume.size() != ts.size()) {
          throw py::value_error("ts, close and volume must have the same length, got " +
                                std::to_string(ts.size()) + ", " + std::to_string(close.size()) +
                                " and " + std::to_string(volume.size()));
        }
        const auto n = static_cast<std::size_t>(ts.size());
        py::array_t<double> features({ts.size(), F});
        py::array_t<bool> valid(ts.size());
        as_value_error([&] {
          CoreCall call;
          market_state_batch(ts.data(), close.data(), volume.data(), n, spec,
                             features.mutable_data(), valid.mutable_data());
          return 0;
        });
        return py::make_tuple(features, valid);
      },
      py::arg("ts"), py::arg("close"), py::arg("volume"), py::arg("spec"), R"doc(
Features float64 [n, 4] (log_return, ffd, volatility, relative_volume; NaN during warm-up) and
validity bool [n] of every bar: the per-window kernel of MarketStateStream on every bar, in
parallel, so both give the same bits. ts int64 [n] open times in ns since epoch UTC, strictly
increasing; close float64 [n] quote currency, finite and > 0; volume float64 [n] base currency,
finite and >= 0. Raises ValueError naming the first bad row (nothing is computed), TypeError for
a wrong dtype. FFD: AFML ch. 5, snippet 5.3.
)doc");

  m.def("regime_code", &regime_code, py::arg("trend"), py::arg("volatility"),
        py::arg("trend_threshold"), py::arg("volatility_threshold"), R"doc(
Regime code of one bar from its trend score and volatility: 3 (high volatility) when volatility
>= volatility_threshold, else 1 (trend down) when trend <= -trend_threshold, else 0 (trend up)
when trend >= trend_threshold, else 2 (range); -1 when either is not finite.
)doc");

  m.def(
      "regime_codes",
      [](const py::handle& trend_obj, const py::handle& vol_obj, double trend_threshold,
         double volatility_threshold) {
        DoubleArray trend = require_1d_float64(trend_obj, "trend");
        DoubleArray vol = require_1d_float64(vol_obj, "volatility");
        if (trend.size() != vol.size()) {
          throw py::value_error("trend and volatility must have the same length, got " +
                                std::to_string(trend.size()) + " and " +
                                std::to_string(vol.size()));
        }
        py::array_t<std::int64_t> out(trend.size());
        auto* o = out.mutable_data();
        for (py::ssize_t i = 0; i < trend.size(); ++i) {
          o[i] = regime_code(trend.data()[i], vol.data()[i], trend_threshold, volatility_threshold);
        }
        return out;
      },
      py::arg("trend"), py::arg("volatility"), py::arg("trend_threshold"),
      py::arg("volatility_threshold"), R"doc(
regime_code of every bar: trend and volatility float64 [n]; returns int64 [n].
Raises ValueError for arrays of different lengths, TypeError for a wrong dtype.
)doc");

  m.def(
      "regime_features",
      [](const py::handle& close_obj, const py::handle& rows_obj, long long lookback) {
        DoubleArray close = require_1d_float64(close_obj, "close");
        Int64Array rows = require_1d_int64(rows_obj, "rows");
        if (lookback < 1) {
          throw py::value_error("lookback must be >= 1, got " + std::to_string(lookback));
        }
        py::array_t<double> trend(rows.size()), volatility(rows.size());
        as_value_error([&] {
          CoreCall call;
          regime_features_batch(close.data(), static_cast<std::size_t>(close.size()), rows.data(),
                                static_cast<std::size_t>(rows.size()),
                                static_cast<std::size_t>(lookback), trend.mutable_data(),
                                volatility.mutable_data());
          return 0;
        });
        return py::make_tuple(trend, volatility);
      },
      py::arg("close"), py::arg("rows"), py::arg("lookback"), R"doc(
Regime trend score and volatility, float64 [n_rows] each, at bars rows (int64 [n_rows]) of
close (float64 [n], quote currency, > 0): volatility = sqrt(sum of the squared one-bar log-close
differences over the last lookback bars / lookback), trend = (log close[t] - log close[t -
lookback]) / (volatility * sqrt(lookback)), 0 when volatility is 0; both NaN for rows < lookback.
Raises ValueError for lookback < 1 or a row >= n.
)doc");

  py::class_<MarketStateStream>(m, "MarketStateStream", R"doc(
Streaming market state: one candle in, the bar's four features and validity out, equal bit for
bit to market_state_batch over the same candles (same per-window kernel, windows kept in rings).
O(ffd window + volatility_bars + volume_bars) per update, no allocation. Thread-safe: every
call holds the stream's lock (update_many for its whole batch).

update(ts, close, volume) / update_candle(ts, open, high, low, close, volume) return the bar's
validity; ts is the open time in ns since epoch UTC and must be after the newest one, prices
finite and > 0 (update_candle checks every OHLCV rule), volume finite and >= 0. A bad candle
raises ValueError and changes nothing.
)doc")
      .def(py::init([](const MarketStateSpec& spec) {
             return as_value_error([&] { return MarketStateStream(spec); });
           }),
           py::arg("spec"))
      .def(
          "update",
          [](MarketStateStream& self, const py::handle& ts_obj, const py::handle& close_obj,
             const py::handle& volume_obj) {
            const std::int64_t ts = int_arg(ts_obj, "MarketStateStream.update: ts");
            const double close = float_arg(close_obj, "MarketStateStream.update: close");
            const double volume = float_arg(volume_obj, "MarketStateStream.update: volume");
            std::lock_guard<ObjectMutex> lock(self.mutex());
            return as_value_error([&] { return self.update(ts, close, volume).valid; });
          },
          py::arg("ts"), py::arg("close"), py::arg("volume"),
          "Append one candle; returns whether the bar's state is valid.")
      .def(
          "update_candle",
          [](MarketStateStream& self, const py::handle& ts, const py::handle& open,
             const py::handle& high, const py::handle& low, const py::handle& close,
             const py::handle& volume) {
            const Candle candle{int_arg(ts, "MarketStateStream.update_candle: ts"),
                                float_arg(open, "MarketStateStream.update_candle: open"),
                                float_arg(high, "MarketStateStream.update_candle: high"),
                                float_arg(low, "MarketStateStream.update_candle: low"),
                                float_arg(close, "MarketStateStream.update_candle: close"),
                                float_arg(volume, "MarketStateStream.update_candle: volume")};
            std::lock_guard<ObjectMutex> lock(self.mutex());
            return as_value_error([&] { return self.update(candle).valid; });
          },
          py::arg("ts"), py::arg("open"), py::arg("high"), py::arg("low"), py::arg("close"),
          py::arg("volume"),
          "Append one candle after checking every OHLCV rule; returns the bar's validity.")
      .def(
          "update_many",
          [](MarketStateStream& self, const py::handle& ts_obj, const py::handle& close_obj,
             const py::handle& volume_obj) {
            Int64Array ts = require_1d_int64(ts_obj, "ts");
            DoubleArray close = require_1d_float64(close_obj, "close");
            DoubleArray volume = require_1d_float64(volume_obj, "volume");
            if (close.size() != ts.size() || volume.size() != ts.size()) {
              throw py::value_error("ts, close and volume must have the same length");
            }
            py::array_t<double> features({ts.size(), F});
            py::array_t<bool> valid(ts.size());
            as_value_error([&] {
              CoreCall call;
              std::lock_guard<ObjectMutex> lock(self.mutex());
              self.update_many(ts.data(), close.data(), volume.data(),
                               static_cast<std::size_t>(ts.size()), features.mutable_data(),
                               valid.mutable_data());
              return 0;
            });
            return py::make_tuple(features, valid);
          },
          py::arg("ts"), py::arg("close"), py::arg("volume"),
          "Append candles (int64/float64/float64 [n]); every row is checked first. Returns "
          "(features float64 [n, 4], valid bool [n]).")
      .def("reset",
           [](MarketStateStream& self) {
             std::lock_guard<ObjectMutex> lock(self.mutex());
             self.reset();
           })
      .def_property_readonly("features",
                             [](const MarketStateStream& self) {
                               py::array_t<double> out(F);  // before the lock (see the header)
                               std::lock_guard<ObjectMutex> lock(self.mutex());
                               std::copy(self.last().features, self.last().features + F,
                                         out.mutable_data());
                               return out;
                             })
      .def_property_readonly("valid",
                             [](const MarketStateStream& self) {
                               std::lock_guard<ObjectMutex> lock(self.mutex());
                               return self.last().valid;
                             })
      .def_property_readonly("count",
                             [](const MarketStateStream& self) {
                               std::lock_guard<ObjectMutex> lock(self.mutex());
                               return self.count();
                             })
      .def_property_readonly("newest_timestamp",
                             [](const MarketStateStream& self) {
                               std::lock_guard<ObjectMutex> lock(self.mutex());
                               return self.newest_timestamp();
                             })
      .def_property_readonly("lookback_bars", &MarketStateStream::lookback_bars)
      .def_property_readonly("spec", [](const MarketStateStream& self) { return self.spec(); })
      .def(
          "regime",
          [](const MarketStateStream& self) {
            double trend = 0.0, volatility = 0.0;
            try {
              std::lock_guard<ObjectMutex> lock(self.mutex());
              self.regime(&trend, &volatility);
            } catch (const std::logic_error& e) {
              throw py::value_error(e.what());
            }
            return py::make_tuple(trend, volatility);
          },
          "(trend score, volatility) of the newest bar; NaN without a full window. ValueError "
          "when the spec has no regime lookback.")
      .def(
          "raw_window",
          [](const MarketStateStream& self) {
            const auto s = static_cast<py::ssize_t>(self.spec().state_bars);
            py::array_t<double> out({s, F});
            {
              std::lock_guard<ObjectMutex> lock(self.mutex());
              self.raw_window(out.mutable_data());
            }
            return out;
          },
          "The last state_bars feature rows, oldest first, float64 [state_bars, 4] (NaN rows "
          "before the first bars).")
      .def(
          "window",
          [](const MarketStateStream& self, const py::handle& mean_obj, const py::handle& std_obj) {
            DoubleArray mean = require_features(mean_obj, "mean");
            DoubleArray sd = require_features(std_obj, "std");
            py::array_t<float> out(static_cast<py::ssize_t>(self.spec().state_bars) * F);
            {
              std::lock_guard<ObjectMutex> lock(self.mutex());
              self.window(mean.data(), sd.data(), out.mutable_data());
            }
            return out;
          },
          py::arg("mean"), py::arg("std"),
          "VAE input: the last state_bars rows standardized ((x - mean) / std in float64, then "
          "float32), oldest first, float32 [state_bars * 4]; zeros when the newest bar is not "
          "valid.")
      .def(
          "current",
          [](const MarketStateStream& self, const py::handle& mean_obj, const py::handle& std_obj) {
            DoubleArray mean = require_features(mean_obj, "mean");
            DoubleArray sd = require_features(std_obj, "std");
            py::array_t<float> out(F);
            {
              std::lock_guard<ObjectMutex> lock(self.mutex());
              self.current(mean.data(), sd.data(), out.mutable_data());
            }
            return out;
          },
          py::arg("mean"), py::arg("std"),
          "The newest row standardized, float32 [4]; zeros when it is not valid.");
}

}  // namespace colmena::bindings
