// Risk: VaR / expected shortfall, the risk manager, paper execution and the backtest loop.
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <cstring>
#include <stdexcept>
#include <string>

#include "array_checks.hpp"
#include "colmena/paper_executor.hpp"
#include "colmena/risk.hpp"
#include "colmena/risk_manager.hpp"
#include "colmena/time_range.hpp"
#include "colmena/trading_loop.hpp"
#include "core_call.hpp"
#include "register.hpp"

namespace py = pybind11;

namespace colmena::bindings {
namespace {

template <typename T>
py::array_t<T> to_numpy(const std::vector<T>& v) {
  py::array_t<T> out(static_cast<py::ssize_t>(v.size()));
  if (!v.empty()) std::memcpy(out.mutable_data(), v.data(), v.size() * sizeof(T));
  return out;
}

py::list events_to_list(const std::vector<RiskEvent>& events) {
  py::list out;
  for (const auto& e : events)
    out.append(py::make_tuple(e.ts, event_type_name(e.type), e.code, e.value));
  return out;
}

TailRisk tail_risk(const py::handle& returns_obj, double confidence, const std::string& method,
                   std::size_t horizon, std::size_t paths, std::uint64_t seed) {
  DoubleArray r = require_1d_float64(returns_obj, "returns");
  const auto n = static_cast<std::size_t>(r.size());
  try {
    if (method == "historical") return historical_tail_risk(r.data(), n, confidence);
    if (method == "gaussian") return gaussian_tail_risk(r.data(), n, confidence);
    if (method == "cornish_fisher") return cornish_fisher_tail_risk(r.data(), n, confidence);
    if (method == "monte_carlo") {
      CoreCall call;
      return monte_carlo_tail_risk(r.data(), n, confidence, horizon, paths, seed);
    }
  } catch (const std::invalid_argument& e) {
    throw py::value_error(e.what());
  }
  throw py::value_error(
      "method must be 'historical', 'gaussian', 'cornish_fisher' or 'monte_carlo', got '" + method +
      "'");
}

Action parse_action(const std::string& name) {
  if (name == "hold") return Action::hold;
  if (name == "decide") return Action::decide;
  if (name == "gated_flat") return Action::gated_flat;
  if (name == "end_of_run") return Action::end_of_run;
  throw py::value_error("action must be 'hold', 'decide', 'gated_flat' or 'end_of_run', got '" +
                        name + "'");
}

template <typename T>
py::array_t<T, py::array::c_style> require_1d(const py::handle& obj, const char* name,
                                              const char* dtype) {
  if (!py::isinstance<py::array>(obj) ||
      !py::reinterpret_borrow<py::array>(obj).dtype().is(py::dtype::of<T>())) {
    throw py::type_error(std::string(name) + " must be a numpy.ndarray of " + dtype);
  }
  auto arr = py::reinterpret_borrow<py::array>(obj);
  if (arr.ndim() != 1) throw py::value_error(std::string(name) + " must be 1-D");
  if (!(arr.flags() & py::array::c_style))
    throw py::value_error(std::string(name) + " must be C-contiguous");
  return py::reinterpret_borrow<py::array_t<T, py::array::c_style>>(arr);
}

}  // namespace

void register_risk(py::module_& m) {
  // The core's accepted time range and longest duration (time_range.hpp) and cost bounds
  // (paper_executor.hpp), so that Python validates against the same numbers.
  m.attr("MIN_TIMESTAMP_NS") = kMinTimestampNs;
  m.attr("MAX_TIMESTAMP_NS") = kMaxTimestampNs;
  m.attr("MAX_DURATION_NS") = kMaxDurationNs;
  m.attr("MAX_VAR_HORIZON_BARS") = kMaxVarHorizonBars;
  m.attr("MAX_COST_BPS") = kMaxCostBps;
  m.attr("MAX_INITIAL_CASH") = kMaxInitialCash;
  m.attr("MAX_MONTE_CARLO_HORIZON") = kMaxMonteCarloHorizon;
  m.attr("MAX_MONTE_CARLO_PATHS") = kMaxMonteCarloPaths;
  m.attr("MAX_MONTE_CARLO_DRAWS") = kMaxMonteCarloDraws;
  m.def(
      "tail_risk",
      [](const py::handle& returns, double confidence, const std::string& method,
         const py::handle& horizon_obj, const py::handle& paths_obj, std::uint64_t seed) {
        const std::int64_t horizon = int_arg(horizon_obj, "tail_risk: horizon");
        const std::int64_t paths = int_arg(paths_obj, "tail_risk: paths");
        if (horizon < 0 || paths < 0) {
          throw py::value_error("tail_risk: horizon and paths must be >= 0");
        }
        const TailRisk t = tail_risk(returns, confidence, method,
                                     static_cast<std::size_t>(horizon),
                                     static_cast<std::size_t>(paths), seed);
        return py::make_tuple(t.var, t.expected_shortfall);
      },
      py::arg("returns"), py::arg("confidence"), py::arg("method"), py::arg("horizon") = 1,
      py::arg("paths") = 10000, py::arg("seed") = 0);
  m.def("normal_quantile", [](double p) {
    try {
      return normal_quantile(p);
    } catch (const std::invalid_argument& e) {
      throw py::value_error(e.what());
    }
  });
  m.def("sample_moments", [](const py::handle& returns_obj) {
    DoubleArray r = require_1d_float64(returns_obj, "returns");
    try {
      const SampleMoments s = sample_moments(r.data(), static_cast<std::size_t>(r.size()));
      return py::make_tuple(s.mean, s.std, s.skewness, s.excess_kurtosis, s.count);
    } catch (const std::invalid_argument& e) {
      throw py::value_error(e.what());
    }
  });

  py::class_<RiskConfig> risk_config(m, "RiskConfig");
  number_field(risk_config, "RiskConfig", "kelly_multiplier", &RiskConfig::kelly_multiplier);
  number_field(risk_config, "RiskConfig", "kelly_window", &RiskConfig::kelly_window);
  number_field(risk_config, "RiskConfig", "kelly_min_trades", &RiskConfig::kelly_min_trades);
  number_field(risk_config, "RiskConfig", "kelly_prior", &RiskConfig::kelly_prior);
  number_field(risk_config, "RiskConfig", "kelly_prior_trades", &RiskConfig::kelly_prior_trades);
  number_field(risk_config, "RiskConfig", "max_leverage", &RiskConfig::max_leverage);
  number_field(risk_config, "RiskConfig", "var_budget", &RiskConfig::var_budget);
  number_field(risk_config, "RiskConfig", "var_confidence", &RiskConfig::var_confidence);
  number_field(risk_config, "RiskConfig", "var_horizon_bars", &RiskConfig::var_horizon_bars);
  number_field(risk_config, "RiskConfig", "ewma_lambda", &RiskConfig::ewma_lambda);
  number_field(risk_config, "RiskConfig", "min_trade_fraction", &RiskConfig::min_trade_fraction);
  number_field(risk_config, "RiskConfig", "halt_drawdown", &RiskConfig::halt_drawdown);
  number_field(risk_config, "RiskConfig", "halt_window_ns", &RiskConfig::halt_window_ns);
  number_field(risk_config, "RiskConfig", "stale_after_ns", &RiskConfig::stale_after_ns);
  number_field(risk_config, "RiskConfig", "daily_loss_pause", &RiskConfig::daily_loss_pause);
  number_field(risk_config, "RiskConfig", "alert_drawdown_warning",
               &RiskConfig::alert_drawdown_warning);
  number_field(risk_config, "RiskConfig", "alert_drawdown_critical",
               &RiskConfig::alert_drawdown_critical);
  number_field(risk_config, "RiskConfig", "alert_daily_pnl_warning",
               &RiskConfig::alert_daily_pnl_warning);
  number_field(risk_config, "RiskConfig", "alert_daily_pnl_critical",
               &RiskConfig::alert_daily_pnl_critical);
  risk_config
      .def(py::init<>())
      .def_property(
          "ladder_drawdown",
          [](const RiskConfig& c) {
            return py::make_tuple(c.ladder_drawdown[0], c.ladder_drawdown[1], c.ladder_drawdown[2]);
          },
          [](RiskConfig& c, const std::array<double, 3>& v) {
            std::copy(v.begin(), v.end(), c.ladder_drawdown);
          })
      .def_property(
          "ladder_pause_ns",
          [](const RiskConfig& c) {
            return py::make_tuple(c.ladder_pause_ns[0], c.ladder_pause_ns[1], c.ladder_pause_ns[2]);
          },
          [](RiskConfig& c, const std::array<std::int64_t, 3>& v) {
            std::copy(v.begin(), v.end(), c.ladder_pause_ns);
          })
      .def("validate", [](const RiskConfig& c) {
        try {
          c.validate();
        } catch (const std::invalid_argument& e) {
          throw py::value_error(e.what());
        }
      });

  py::class_<ExecutionConfig> execution_config(m, "ExecutionConfig");
  number_field(execution_config, "ExecutionConfig", "initial_cash", &ExecutionConfig::initial_cash);
  number_field(execution_config, "ExecutionConfig", "fee_bps", &ExecutionConfig::fee_bps);
  number_field(execution_config, "ExecutionConfig", "slippage_bps", &ExecutionConfig::slippage_bps);
  number_field(execution_config, "ExecutionConfig", "impact_bps", &ExecutionConfig::impact_bps);
  number_field(execution_config, "ExecutionConfig", "max_participation",
               &ExecutionConfig::max_participation);
  number_field(execution_config, "ExecutionConfig", "borrow_bps_per_day",
               &ExecutionConfig::borrow_bps_per_day);
  execution_config
      .def(py::init<>())
      .def_readwrite("allow_short", &ExecutionConfig::allow_short)
      .def("validate", [](const ExecutionConfig& c) {
        try {
          c.validate();
        } catch (const std::invalid_argument& e) {
          throw py::value_error(e.what());
        }
      });

  py::class_<RiskManager>(m, "RiskManager")
      .def(py::init([](const RiskConfig& config) {
             try {
               return RiskManager(config);
             } catch (const std::invalid_argument& e) {
               throw py::value_error(e.what());
             }
           }),
           py::arg("config"))
      .def(
          "observe",
          [](RiskManager& self, const py::handle& ts_obj, double equity, double bar_log_return) {
            const std::int64_t ts = int_arg(ts_obj, "RiskManager.observe: ts");
            std::vector<RiskEvent> events;
            try {
              self.observe(ts, equity, bar_log_return, events);
            } catch (const std::invalid_argument& e) {
              throw py::value_error(e.what());
            }
            return events_to_list(events);
          },
          py::arg("ts"), py::arg("equity"),
          py::arg("bar_log_return") = std::numeric_limits<double>::quiet_NaN())
      .def(
          "observe_data_age",
          [](RiskManager& self, std::int64_t ts, std::int64_t newest_candle_ts) {
            std::vector<RiskEvent> events;
            self.observe_data_age(ts, newest_candle_ts, events);
            return events_to_list(events);
          },
          py::arg("ts"), py::arg("newest_candle_ts"))
      .def(
          "decide",
          [](const RiskManager& self, double signal, double current_fraction) {
            const Decision d = self.decide(signal, current_fraction);
            return py::make_tuple(d.requested, d.target, verdict_name(d.verdict), d.place_order);
          },
          py::arg("signal"), py::arg("current_fraction"))
      .def(
          "decide_action",
          [](const RiskManager& self, const std::string& action, double signal,
             double current_fraction) {
            const Decision d = self.decide(parse_action(action), signal, current_fraction);
            return py::make_tuple(d.requested, d.target, verdict_name(d.verdict), d.place_order);
          },
          py::arg("action"), py::arg("signal"), py::arg("current_fraction"))
      .def("reset_model_estimates", &RiskManager::reset_model_estimates)
      .def("allowed_quantity", &RiskManager::allowed_quantity, py::arg("quantity"),
           py::arg("position"))
      .def("record_trade", &RiskManager::record_trade, py::arg("pnl"))
      .def(
          "halt",
          [](RiskManager& self, const py::handle& ts_obj) {
            const std::int64_t ts = int_arg(ts_obj, "RiskManager.halt: ts");
            std::vector<RiskEvent> events;
            self.halt(ts, events);
            return events_to_list(events);
          },
          py::arg("ts"))
      .def(
          "reset_halt",
          [](RiskManager& self, std::int64_t ts, double equity) {
            std::vector<RiskEvent> events;
            self.reset_halt(ts, equity, events);
            return events_to_list(events);
          },
          py::arg("ts"), py::arg("equity"))
      .def(
          "pause",
          [](RiskManager& self, const py::handle& ts_obj) {
            std::vector<RiskEvent> events;
            self.pause(int_arg(ts_obj, "RiskManager.pause: ts"), events);
            return events_to_list(events);
          },
          py::arg("ts"))
      .def(
          "resume",
          [](RiskManager& self, const py::handle& ts_obj) {
            std::vector<RiskEvent> events;
            self.resume(int_arg(ts_obj, "RiskManager.resume: ts"), events);
            return events_to_list(events);
          },
          py::arg("ts"))
      .def(
          "flatten",
          [](RiskManager& self, const py::handle& ts_obj) {
            std::vector<RiskEvent> events;
            self.flatten(int_arg(ts_obj, "RiskManager.flatten: ts"), events);
            return events_to_list(events);
          },
          py::arg("ts"))
      .def_property_readonly("operator_paused", &RiskManager::operator_paused)
      .def("clear_flatten", &RiskManager::clear_flatten)
      .def("snapshot", &RiskManager::snapshot)
      .def(
          "restore",
          [](RiskManager& self, const RiskManagerState& state) {
            try {
              self.restore(state);
            } catch (const std::invalid_argument& e) {
              throw py::value_error(e.what());
            }
          },
          py::arg("state"))
      .def_property_readonly("state",
                             [](const RiskManager& s) { return trading_state_name(s.state()); })
      .def_property_readonly("drawdown", &RiskManager::drawdown)
      .def_property_readonly("peak_equity", &RiskManager::peak_equity)
      .def_property_readonly("drawdown_from_high", &RiskManager::drawdown_from_high)
      .def_property_readonly("daily_pnl", &RiskManager::daily_pnl)
      .def_property_readonly("kelly_trades", &RiskManager::kelly_trades)
      .def_property_readonly("kelly_fraction", &RiskManager::kelly_fraction)
      .def_property_readonly("bar_volatility", &RiskManager::bar_volatility)
      .def_property_readonly("paused_until", &RiskManager::paused_until)
      .def_property_readonly("flatten_requested", &RiskManager::flatten_requested);

  py::class_<PaperExecutor>(m, "PaperExecutor")
      .def(py::init([](const ExecutionConfig& config) {
             try {
               return PaperExecutor(config);
             } catch (const std::invalid_argument& e) {
               throw py::value_error(e.what());
             }
           }),
           py::arg("config"))
      .def(
          "execute",
          [](PaperExecutor& self, const py::handle& ts_obj, double quantity, double open_price,
             double volume) {
            const std::int64_t ts = int_arg(ts_obj, "PaperExecutor.execute: ts");
            std::vector<ClosedTrade> closed;
            ErrorCode error{};
            const auto fill = self.execute(ts, quantity, open_price, volume, closed, &error);
            py::list trades;
            for (const auto& t : closed)
              trades.append(py::make_tuple(t.open_ts, t.close_ts, t.side, t.pnl));
            py::object f = py::none();
            if (fill) {
              py::dict d;
              d["ts"] = fill->ts;
              d["quantity"] = fill->quantity;
              d["price"] = fill->price;
              d["fee"] = fill->fee;
              d["slippage_cost"] = fill->slippage_cost;
              d["requested"] = fill->requested;
              f = d;
            }
            return py::make_tuple(f, trades);
          },
          py::arg("ts"), py::arg("quantity"), py::arg("open_price"), py::arg("volume"))
      .def_property_readonly("cash", &PaperExecutor::cash)
      .def_property_readonly("position", &PaperExecutor::position)
      .def_property_readonly("average_price", &PaperExecutor::average_price)
      .def_property_readonly("realized_pnl", &PaperExecutor::realized_pnl)
      .def_property_readonly("fees_paid", &PaperExecutor::fees_paid)
      .def_property_readonly("slippage_paid", &PaperExecutor::slippage_paid)
      .def_property_readonly("borrow_paid", &PaperExecutor::borrow_paid)
      .def("accrue_borrow", &PaperExecutor::accrue_borrow, py::arg("mark"), py::arg("days"))
      .def("equity", &PaperExecutor::equity, py::arg("mark"))
      .def("unrealized_pnl", &PaperExecutor::unrealized_pnl, py::arg("mark"));

  m.def(
      "run_backtest",
      [](const py::handle& ts_obj, const py::handle& open, const py::handle& high,
         const py::handle& low, const py::handle& close, const py::handle& volume,
         const py::handle& signal, std::int64_t bar_ns, const RiskConfig& risk,
         const ExecutionConfig& execution, const py::object& action_obj,
         const py::object& model_obj) {
        auto ts = require_1d<std::int64_t>(ts_obj, "ts", "int64");
        DoubleArray o = require_1d_float64(open, "open"), h = require_1d_float64(high, "high"),
                    l = require_1d_float64(low, "low"), c = require_1d_float64(close, "close"),
                    v = require_1d_float64(volume, "volume"),
                    s = require_1d_float64(signal, "signal");
        const auto n = static_cast<std::size_t>(ts.size());
        for (const DoubleArray* a : {&o, &h, &l, &c, &v, &s}) {
          if (static_cast<std::size_t>(a->size()) != n)
            throw py::value_error("all columns must have the same length as ts");
        }
        BacktestInput input{ts.data(), o.data(), h.data(), l.data(), c.data(),
                            v.data(),  s.data(), nullptr,  nullptr,  n,
                            bar_ns};
        py::array_t<std::uint8_t, py::array::c_style> action;
        py::array_t<std::int64_t, py::array::c_style> model;
        if (!action_obj.is_none()) {
          action = require_1d<std::uint8_t>(action_obj, "action", "uint8");
          if (static_cast<std::size_t>(action.size()) != n)
            throw py::value_error("action must have the same length as ts");
          input.action = action.data();
        }
        if (!model_obj.is_none()) {
          model = require_1d<std::int64_t>(model_obj, "model", "int64");
          if (static_cast<std::size_t>(model.size()) != n)
            throw py::value_error("model must have the same length as ts");
          input.model = model.data();
        }
        BacktestResult r;
        try {
          CoreCall call;  // dropped (GIL retaken) before the catch below
          r = run_backtest(input, risk, execution);
        } catch (const std::invalid_argument& e) {
          throw py::value_error(e.what());
        }
        py::dict out;
        out["cash"] = to_numpy(r.cash);
        out["position"] = to_numpy(r.position);
        out["equity"] = to_numpy(r.equity);
        out["requested"] = to_numpy(r.requested);
        out["target"] = to_numpy(r.target);
        out["kelly"] = to_numpy(r.kelly);
        out["state"] = to_numpy(r.state);
        out["verdict"] = to_numpy(r.verdict);
        std::vector<std::int64_t> ob, fb, ets, tot, tct;
        std::vector<double> oq, ot, of, fq, fp, ff, fs, fr, ev, tp;
        std::vector<std::uint8_t> etype, ecode, oorigin;
        std::vector<std::int8_t> tside;
        for (const auto& x : r.orders) {
          ob.push_back(static_cast<std::int64_t>(x.bar));
          oq.push_back(x.quantity);
          ot.push_back(x.target);
          of.push_back(x.filled);
          oorigin.push_back(static_cast<std::uint8_t>(x.origin));
        }
        for (std::size_t i = 0; i < r.fills.size(); ++i) {
          fb.push_back(static_cast<std::int64_t>(r.fill_bar[i]));
          fq.push_back(r.fills[i].quantity);
          fp.push_back(r.fills[i].price);
          ff.push_back(r.fills[i].fee);
          fs.push_back(r.fills[i].slippage_cost);
          fr.push_back(r.fills[i].requested);
        }
        for (const auto& e : r.events) {
          ets.push_back(e.ts);
          etype.push_back(static_cast<std::uint8_t>(e.type));
          ecode.push_back(e.code);
          ev.push_back(e.value);
        }
        std::vector<double> tq, tentry, texit, tfees, tborrow;
        std::vector<std::uint8_t> torigin;
        for (const auto& t : r.trades) {
          tot.push_back(t.open_ts);
          tct.push_back(t.close_ts);
          tside.push_back(static_cast<std::int8_t>(t.side));
          tp.push_back(t.pnl);
          tq.push_back(t.quantity);
          tentry.push_back(t.entry_price);
          texit.push_back(t.exit_price);
          tfees.push_back(t.fees);
          tborrow.push_back(t.borrow);
          torigin.push_back(t.exit_origin);
        }
        out["order_bar"] = to_numpy(ob);
        out["order_quantity"] = to_numpy(oq);
        out["order_target"] = to_numpy(ot);
        out["order_filled"] = to_numpy(of);
        out["order_origin"] = to_numpy(oorigin);
        out["fill_bar"] = to_numpy(fb);
        out["fill_quantity"] = to_numpy(fq);
        out["fill_price"] = to_numpy(fp);
        out["fill_fee"] = to_numpy(ff);
        out["fill_slippage_cost"] = to_numpy(fs);
        out["fill_requested"] = to_numpy(fr);
        out["event_ts"] = to_numpy(ets);
        out["event_type"] = to_numpy(etype);
        out["event_code"] = to_numpy(ecode);
        out["event_value"] = to_numpy(ev);
        out["trade_open_ts"] = to_numpy(tot);
        out["trade_close_ts"] = to_numpy(tct);
        out["trade_side"] = to_numpy(tside);
        out["trade_pnl"] = to_numpy(tp);
        out["trade_quantity"] = to_numpy(tq);
        out["trade_entry_price"] = to_numpy(tentry);
        out["trade_exit_price"] = to_numpy(texit);
        out["trade_fees"] = to_numpy(tfees);
        out["trade_borrow"] = to_numpy(tborrow);
        out["trade_exit_origin"] = to_numpy(torigin);
        out["fees_paid"] = r.fees_paid;
        out["slippage_paid"] = r.slippage_paid;
        out["borrow_paid"] = r.borrow_paid;
        return out;
      },
      py::arg("ts"), py::arg("open"), py::arg("high"), py::arg("low"), py::arg("close"),
      py::arg("volume"), py::arg("signal"), py::arg("bar_ns"), py::arg("risk"),
      py::arg("execution"), py::arg("action") = py::none(), py::arg("model") = py::none());

  m.def(
      "simulate_targets",
      [](const py::handle& ts_obj, const py::handle& open, const py::handle& close,
         const py::handle& volume, const py::handle& decide_obj, const py::handle& signals_obj,
         const py::handle& marks_obj, std::int64_t bar_ns, const ExecutionConfig& execution,
         double min_trade_fraction, std::size_t wind_down_bars) {
        auto ts = require_1d<std::int64_t>(ts_obj, "ts", "int64");
        DoubleArray o = require_1d_float64(open, "open"), c = require_1d_float64(close, "close"),
                    v = require_1d_float64(volume, "volume");
        auto decide = require_1d<std::uint8_t>(decide_obj, "decide", "uint8");
        auto marks = require_1d<std::int64_t>(marks_obj, "mark_rows", "int64");
        if (!py::isinstance<py::array>(signals_obj) ||
            !py::reinterpret_borrow<py::array>(signals_obj).dtype().is(py::dtype::of<float>()))
          throw py::type_error("signals must be a numpy.ndarray of float32");
        auto sig = py::reinterpret_borrow<py::array>(signals_obj);
        if (sig.ndim() != 2 || !(sig.flags() & py::array::c_style))
          throw py::value_error("signals must be a C-contiguous 2-D array [rows, decisions]");
        const auto n = static_cast<std::size_t>(ts.size());
        for (const DoubleArray* a : {&o, &c, &v}) {
          if (static_cast<std::size_t>(a->size()) != n)
            throw py::value_error("all columns must have the same length as ts");
        }
        if (static_cast<std::size_t>(decide.size()) != n)
          throw py::value_error("decide must have the same length as ts");
        TargetSimulationInput input;
        input.ts = ts.data();
        input.open = o.data();
        input.close = c.data();
        input.volume = v.data();
        input.n = n;
        input.bar_ns = bar_ns;
        input.decide = decide.data();
        input.signals = static_cast<const float*>(sig.data());
        input.k = static_cast<std::size_t>(sig.shape(0));
        input.d = static_cast<std::size_t>(sig.shape(1));
        input.mark_rows = marks.data();
        input.m = static_cast<std::size_t>(marks.size());
        input.min_trade_fraction = min_trade_fraction;
        input.wind_down_bars = wind_down_bars;
        TargetSimulationResult r;
        try {
          CoreCall call;  // dropped (GIL retaken) before the catch below
          r = simulate_targets(input, execution);
        } catch (const std::invalid_argument& e) {
          throw py::value_error(e.what());
        }
        auto matrix = [&](const std::vector<double>& v) {
          py::array_t<double> a({static_cast<py::ssize_t>(input.k),
                                 static_cast<py::ssize_t>(input.m)});
          if (!v.empty()) std::memcpy(a.mutable_data(), v.data(), v.size() * sizeof(double));
          return a;
        };
        py::dict out;
        out["equity"] = matrix(r.equity);
        out["position"] = matrix(r.position);
        out["fees"] = to_numpy(r.fees);
        out["slippage"] = to_numpy(r.slippage);
        out["borrow"] = to_numpy(r.borrow);
        out["traded_notional"] = to_numpy(r.traded_notional);
        out["final_position"] = to_numpy(r.final_position);
        out["n_fills"] = to_numpy(r.n_fills);
        return out;
      },
      py::arg("ts"), py::arg("open"), py::arg("close"), py::arg("volume"), py::arg("decide"),
      py::arg("signals"), py::arg("mark_rows"), py::arg("bar_ns"), py::arg("execution"),
      py::arg("min_trade_fraction") = 0.0, py::arg("wind_down_bars") = 30);

  m.def("order_origin_names", [] {
    py::list out;
    for (int i = 0; i <= static_cast<int>(OrderOrigin::end_of_run); ++i)
      out.append(order_origin_name(static_cast<OrderOrigin>(i)));
    return out;
  });

  m.def("verdict_names", [] {
    py::list out;
    for (int i = 0; i <= static_cast<int>(Verdict::end_of_run); ++i)
      out.append(verdict_name(static_cast<Verdict>(i)));
    return out;
  });
  m.def("trading_state_names", [] {
    py::list out;
    for (int i = 0; i <= 3; ++i) out.append(trading_state_name(static_cast<TradingState>(i)));
    return out;
  });
  m.def("event_type_names", [] {
    py::list out;
    for (int i = 0; i <= static_cast<int>(EventType::error); ++i)
      out.append(event_type_name(static_cast<EventType>(i)));
    return out;
  });
}

}  // namespace colmena::bindings
