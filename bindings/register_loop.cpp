// The trading loop stepped from Python: TradingLoop, its two halves (RiskStage, ExecutionStage),
// the messages between them and the typed results. Conversions and errors only: enums cross as
// their names, every bar is checked with the core's candle rules before it reaches a stage, and
// the stages' std::invalid_argument becomes ValueError (std::logic_error, a call out of order,
// RuntimeError).
#include <pybind11/stl.h>

#include <cstdint>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "colmena/execution_stage.hpp"
#include "colmena/ohlcv_validation.hpp"
#include "colmena/paper_executor.hpp"
#include "colmena/risk_manager.hpp"
#include "colmena/risk_stage.hpp"
#include "colmena/trading_loop.hpp"
#include "colmena/trading_messages.hpp"
#include "array_checks.hpp"
#include "register.hpp"

namespace py = pybind11;
using namespace pybind11::literals;

namespace colmena::bindings {
namespace {

/// The enum value whose name is `name` among 0..last; ValueError listing the names otherwise.
template <typename E>
E parse_enum(const std::string& name, const char* (*name_of)(E), int last, const char* what) {
  std::string names;
  for (int i = 0; i <= last; ++i) {
    const E value = static_cast<E>(i);
    if (name == name_of(value)) return value;
    names += std::string(i ? ", " : "") + "'" + name_of(value) + "'";
  }
  throw py::value_error(std::string(what) + " must be one of " + names + ", got '" + name + "'");
}

Action parse_action(const std::string& name) {
  return parse_enum(name, action_name, static_cast<int>(Action::end_of_run), "action");
}
TradingState parse_state(const std::string& name) {
  return parse_enum(name, trading_state_name, static_cast<int>(TradingState::halted), "state");
}
OrderOrigin parse_origin(const std::string& name) {
  return parse_enum(name, order_origin_name, static_cast<int>(OrderOrigin::end_of_run), "origin");
}
ErrorCode parse_error(const std::string& name) {
  return parse_enum(name, error_code_name, static_cast<int>(ErrorCode::non_finite_price), "error");
}

/// The candle rules of ohlcv_validation.hpp (time after `newest`, finite positive prices,
/// volume >= 0, low <= open, close <= high); ValueError naming `where` and the rule.
void check_bar(const Bar& bar, std::optional<std::int64_t> newest, const char* where) {
  const Candle candle{bar.ts, bar.open, bar.high, bar.low, bar.close, bar.volume};
  if (const auto violation = find_invalid_candle(candle, newest))
    throw OhlcvValidationError(where, *violation, false);
}

std::optional<std::int64_t> newest(std::size_t bars, std::int64_t last_open_ts) {
  return bars > 0 ? std::optional<std::int64_t>(last_open_ts) : std::nullopt;
}

const char* optional_name(const std::optional<ErrorCode>& e) {
  return e ? error_code_name(*e) : nullptr;
}

}  // namespace

void register_loop(py::module_& m) {
  py::class_<Bar>(m, "Bar")
      .def(py::init([](const py::handle& ts, const py::handle& open, const py::handle& high,
                       const py::handle& low, const py::handle& close, const py::handle& volume) {
             return Bar{int_arg(ts, "Bar: ts"),       float_arg(open, "Bar: open"),
                        float_arg(high, "Bar: high"), float_arg(low, "Bar: low"),
                        float_arg(close, "Bar: close"), float_arg(volume, "Bar: volume")};
           }),
           "ts"_a, "open"_a, "high"_a, "low"_a, "close"_a, "volume"_a)
      .def_readonly("ts", &Bar::ts)
      .def_readonly("open", &Bar::open)
      .def_readonly("high", &Bar::high)
      .def_readonly("low", &Bar::low)
      .def_readonly("close", &Bar::close)
      .def_readonly("volume", &Bar::volume);

  py::class_<Fill>(m, "Fill")
      .def(py::init([](const py::handle& ts, const py::handle& quantity, const py::handle& price,
                       const py::handle& fee, const py::handle& slippage_cost,
                       const py::handle& requested) {
             return Fill{int_arg(ts, "Fill: ts"),
                         float_arg(quantity, "Fill: quantity"),
                         float_arg(price, "Fill: price"),
                         float_arg(fee, "Fill: fee"),
                         float_arg(slippage_cost, "Fill: slippage_cost"),
                         float_arg(requested, "Fill: requested")};
           }),
           "ts"_a, "quantity"_a, "price"_a, "fee"_a, "slippage_cost"_a, "requested"_a)
      .def_readonly("ts", &Fill::ts)
      .def_readonly("quantity", &Fill::quantity)
      .def_readonly("price", &Fill::price)
      .def_readonly("fee", &Fill::fee)
      .def_readonly("slippage_cost", &Fill::slippage_cost)
      .def_readonly("requested", &Fill::requested);

  py::class_<Order>(m, "Order")
      .def(py::init([](std::uint64_t id, const py::handle& bar, const py::handle& ts,
                       const py::handle& quantity, const py::handle& target,
                       const std::string& origin, bool reduce_only) {
             const std::int64_t bar_index = int_arg(bar, "Order: bar");
             if (bar_index < 0) {
               throw py::value_error("Order: bar must be >= 0, got " + std::to_string(bar_index));
             }
             return Order{id,
                          static_cast<std::size_t>(bar_index),
                          int_arg(ts, "Order: ts"),
                          float_arg(quantity, "Order: quantity"),
                          float_arg(target, "Order: target"),
                          parse_origin(origin),
                          reduce_only,
                          0.0};
           }),
           "id"_a, "bar"_a, "ts"_a, "quantity"_a, "target"_a, "origin"_a, "reduce_only"_a)
      .def_readonly("id", &Order::id)
      .def_readonly("bar", &Order::bar)
      .def_readonly("ts", &Order::ts)
      .def_readonly("quantity", &Order::quantity)
      .def_readonly("target", &Order::target)
      .def_property_readonly("origin", [](const Order& o) { return order_origin_name(o.origin); })
      .def_readonly("reduce_only", &Order::reduce_only);

  py::class_<Decision>(m, "Decision")
      .def_readonly("requested", &Decision::requested)
      .def_readonly("target", &Decision::target)
      .def_property_readonly("verdict", [](const Decision& d) { return verdict_name(d.verdict); })
      .def_readonly("place_order", &Decision::place_order);

  py::class_<RiskEvent>(m, "RiskEvent")
      .def_readonly("ts", &RiskEvent::ts)
      .def_property_readonly("type", [](const RiskEvent& e) { return event_type_name(e.type); })
      .def_readonly("code", &RiskEvent::code)
      .def_property_readonly("code_name",
                             [](const RiskEvent& e) { return event_code_name(e.type, e.code); })
      .def_readonly("value", &RiskEvent::value);

  py::class_<ClosedTrade>(m, "ClosedTrade")
      .def_readonly("open_ts", &ClosedTrade::open_ts)
      .def_readonly("close_ts", &ClosedTrade::close_ts)
      .def_readonly("side", &ClosedTrade::side)
      .def_readonly("pnl", &ClosedTrade::pnl)
      .def_readonly("quantity", &ClosedTrade::quantity)
      .def_readonly("entry_price", &ClosedTrade::entry_price)
      .def_readonly("exit_price", &ClosedTrade::exit_price)
      .def_readonly("fees", &ClosedTrade::fees)
      .def_readonly("borrow", &ClosedTrade::borrow)
      .def_property_readonly("exit_origin", [](const ClosedTrade& t) {
        return order_origin_name(static_cast<OrderOrigin>(t.exit_origin));
      });

  py::class_<StepResult>(m, "StepResult")
      .def_readonly("fill", &StepResult::fill)
      .def_readonly("cash", &StepResult::cash)
      .def_readonly("position", &StepResult::position)
      .def_readonly("equity", &StepResult::equity)
      .def_readonly("decision", &StepResult::decision)
      .def_readonly("kelly", &StepResult::kelly)
      .def_property_readonly("state",
                             [](const StepResult& r) { return trading_state_name(r.state); })
      .def_readonly("order", &StepResult::order);

  py::class_<ExecutionReport>(m, "ExecutionReport")
      .def(py::init([](std::uint64_t order_id, std::int64_t ts, double attempted,
                       std::optional<Fill> fill, std::optional<std::string> error, double cash,
                       double position) {
             ExecutionReport r;
             r.order_id = order_id;
             r.ts = ts;
             r.attempted = attempted;
             r.fill = fill;
             if (error) r.error = parse_error(*error);
             r.cash = cash;
             r.position = position;
             return r;
           }),
           "order_id"_a, "ts"_a, "attempted"_a, "fill"_a, "error"_a, "cash"_a, "position"_a)
      .def_readonly("order_id", &ExecutionReport::order_id)
      .def_readonly("ts", &ExecutionReport::ts)
      .def_readonly("attempted", &ExecutionReport::attempted)
      .def_readonly("fill", &ExecutionReport::fill)
      .def_property_readonly("error",
                             [](const ExecutionReport& r) { return optional_name(r.error); })
      .def_readonly("cash", &ExecutionReport::cash)
      .def_readonly("position", &ExecutionReport::position);

  py::class_<AccountSnapshot>(m, "AccountSnapshot")
      .def(py::init([](const py::handle& ts, const py::handle& mark, const py::handle& cash,
                       const py::handle& position, const py::handle& equity) {
             return AccountSnapshot{
                 int_arg(ts, "AccountSnapshot: ts"), float_arg(mark, "AccountSnapshot: mark"),
                 float_arg(cash, "AccountSnapshot: cash"),
                 float_arg(position, "AccountSnapshot: position"),
                 float_arg(equity, "AccountSnapshot: equity")};
           }),
           "ts"_a, "mark"_a, "cash"_a, "position"_a, "equity"_a)
      .def_readonly("ts", &AccountSnapshot::ts)
      .def_readonly("mark", &AccountSnapshot::mark)
      .def_readonly("cash", &AccountSnapshot::cash)
      .def_readonly("position", &AccountSnapshot::position)
      .def_readonly("equity", &AccountSnapshot::equity);

  py::class_<RiskDecision>(m, "RiskDecision")
      .def_readonly("decision", &RiskDecision::decision)
      .def_readonly("kelly", &RiskDecision::kelly)
      .def_property_readonly("state",
                             [](const RiskDecision& r) { return trading_state_name(r.state); })
      .def_readonly("order", &RiskDecision::order);

  // Snapshots of the two halves (RiskStage::snapshot / restore): plain values, read-write, so
  // that Python builds them from its msgspec snapshots; numbers refuse bools and negative counts
  // (number_field), enums cross as names.
  py::class_<RiskManagerState> manager_state(m, "RiskManagerState");
  manager_state.def(py::init<>())
      .def_property(
          "state", [](const RiskManagerState& s) { return trading_state_name(s.state); },
          [](RiskManagerState& s, const std::string& name) { s.state = parse_state(name); })
      .def_readwrite("stale", &RiskManagerState::stale)
      .def_readwrite("flatten_requested", &RiskManagerState::flatten_requested)
      .def_readwrite("started", &RiskManagerState::started)
      .def_readwrite("stopped", &RiskManagerState::stopped)
      .def_readwrite("drawdown_warned", &RiskManagerState::drawdown_warned)
      .def_readwrite("drawdown_critical", &RiskManagerState::drawdown_critical)
      .def_readwrite("daily_pnl_warned", &RiskManagerState::daily_pnl_warned)
      .def_readwrite("daily_pnl_critical", &RiskManagerState::daily_pnl_critical)
      .def_readwrite("daily_loss_paused", &RiskManagerState::daily_loss_paused)
      .def_readwrite("window_ts", &RiskManagerState::window_ts)
      .def_readwrite("window_equity", &RiskManagerState::window_equity)
      .def_readwrite("kelly_trades", &RiskManagerState::kelly_trades)
      .def_readwrite("operator_paused", &RiskManagerState::operator_paused);
  const char* ms = "RiskManagerState";
  number_field(manager_state, ms, "peak_equity", &RiskManagerState::peak_equity);
  number_field(manager_state, ms, "drawdown", &RiskManagerState::drawdown);
  number_field(manager_state, ms, "high_equity", &RiskManagerState::high_equity);
  number_field(manager_state, ms, "drawdown_from_high", &RiskManagerState::drawdown_from_high);
  number_field(manager_state, ms, "ladder_level", &RiskManagerState::ladder_level);
  number_field(manager_state, ms, "paused_until", &RiskManagerState::paused_until);
  number_field(manager_state, ms, "last_ts", &RiskManagerState::last_ts);
  number_field(manager_state, ms, "day", &RiskManagerState::day);
  number_field(manager_state, ms, "day_start_equity", &RiskManagerState::day_start_equity);
  number_field(manager_state, ms, "last_equity", &RiskManagerState::last_equity);
  number_field(manager_state, ms, "daily_pnl", &RiskManagerState::daily_pnl);
  number_field(manager_state, ms, "ewma_variance", &RiskManagerState::ewma_variance);
  number_field(manager_state, ms, "ewma_count", &RiskManagerState::ewma_count);

  py::class_<PaperExecutorState> executor_state(m, "PaperExecutorState");
  executor_state.def(py::init<>());
  const char* es = "PaperExecutorState";
  number_field(executor_state, es, "cash", &PaperExecutorState::cash);
  number_field(executor_state, es, "position", &PaperExecutorState::position);
  number_field(executor_state, es, "average_price", &PaperExecutorState::average_price);
  number_field(executor_state, es, "realized_pnl", &PaperExecutorState::realized_pnl);
  number_field(executor_state, es, "fees_paid", &PaperExecutorState::fees_paid);
  number_field(executor_state, es, "slippage_paid", &PaperExecutorState::slippage_paid);
  number_field(executor_state, es, "borrow_paid", &PaperExecutorState::borrow_paid);
  number_field(executor_state, es, "traded_notional", &PaperExecutorState::traded_notional);
  number_field(executor_state, es, "n_fills", &PaperExecutorState::n_fills);
  number_field(executor_state, es, "trade_open_ts", &PaperExecutorState::trade_open_ts);
  number_field(executor_state, es, "trade_pnl", &PaperExecutorState::trade_pnl);
  number_field(executor_state, es, "trade_size", &PaperExecutorState::trade_size);
  number_field(executor_state, es, "trade_fees", &PaperExecutorState::trade_fees);
  number_field(executor_state, es, "trade_borrow", &PaperExecutorState::trade_borrow);
  number_field(executor_state, es, "trade_exit_notional", &PaperExecutorState::trade_exit_notional);
  number_field(executor_state, es, "trade_exit_size", &PaperExecutorState::trade_exit_size);

  py::class_<RiskStageState> risk_state(m, "RiskStageState");
  risk_state.def(py::init<>())
      .def_readwrite("execution", &RiskStageState::execution)
      .def_readwrite("risk", &RiskStageState::risk)
      .def_readwrite("risk_manager", &RiskStageState::risk_manager)
      .def_readwrite("shadow", &RiskStageState::shadow)
      .def_readwrite("is_open", &RiskStageState::is_open)
      .def_readwrite("outstanding", &RiskStageState::outstanding);
  const char* rs = "RiskStageState";
  number_field(risk_state, rs, "version", &RiskStageState::version);
  number_field(risk_state, rs, "min_trade_fraction", &RiskStageState::min_trade_fraction);
  number_field(risk_state, rs, "bar_ns", &RiskStageState::bar_ns);
  number_field(risk_state, rs, "bars", &RiskStageState::bars);
  number_field(risk_state, rs, "open_ts", &RiskStageState::open_ts);
  number_field(risk_state, rs, "last_ts", &RiskStageState::last_ts);
  number_field(risk_state, rs, "last_close", &RiskStageState::last_close);
  number_field(risk_state, rs, "last_order_id", &RiskStageState::last_order_id);
  number_field(risk_state, rs, "remainder", &RiskStageState::remainder);
  number_field(risk_state, rs, "shadow_pending", &RiskStageState::shadow_pending);

  py::class_<ExecutionStageState> execution_state(m, "ExecutionStageState");
  execution_state.def(py::init<>())
      .def_readwrite("execution", &ExecutionStageState::execution)
      .def_readwrite("executor", &ExecutionStageState::executor)
      .def_readwrite("is_open", &ExecutionStageState::is_open)
      .def_readwrite("pending", &ExecutionStageState::pending)
      .def_property(
          "cause", [](const ExecutionStageState& s) { return order_origin_name(s.cause); },
          [](ExecutionStageState& s, const std::string& name) { s.cause = parse_origin(name); })
      .def_readwrite("account", &ExecutionStageState::account);
  const char* xs = "ExecutionStageState";
  number_field(execution_state, xs, "version", &ExecutionStageState::version);
  number_field(execution_state, xs, "bar_ns", &ExecutionStageState::bar_ns);
  number_field(execution_state, xs, "bars", &ExecutionStageState::bars);
  number_field(execution_state, xs, "open_ts", &ExecutionStageState::open_ts);
  number_field(execution_state, xs, "last_ts", &ExecutionStageState::last_ts);
  m.attr("STAGE_STATE_VERSION") = kStageStateVersion;

  py::class_<TradingLoop>(m, "TradingLoop")
      .def(py::init([](const ExecutionConfig& execution, const RiskConfig& risk,
                       const py::handle& bar_ns) {
             return TradingLoop(execution, risk, int_arg(bar_ns, "TradingLoop: bar_ns"));
           }),
           "execution"_a, "risk"_a, "bar_ns"_a)
      .def_static(
          "pass_through",
          [](const ExecutionConfig& execution, const py::handle& min_trade_fraction,
             const py::handle& bar_ns) {
            return TradingLoop(
                execution,
                float_arg(min_trade_fraction, "TradingLoop.pass_through: min_trade_fraction"),
                int_arg(bar_ns, "TradingLoop.pass_through: bar_ns"));
          },
          "execution"_a, "min_trade_fraction"_a, "bar_ns"_a)
      .def(
          "step",
          [](TradingLoop& self, const Bar& bar, const std::string& action, double signal,
             bool new_model, bool can_order) {
            const RiskStage& stage = self.risk_stage();
            check_bar(bar, newest(stage.bars(), stage.last_open_ts()), "TradingLoop.step");
            const Action a = parse_action(action);
            std::vector<RiskEvent> events;
            std::vector<ClosedTrade> closed;
            const StepResult& r = self.step(bar, a, signal, new_model, can_order, events, closed);
            return std::make_tuple(r, std::move(events), std::move(closed));
          },
          "bar"_a, "action"_a, "signal"_a, "new_model"_a = false, "can_order"_a = true)
      .def_property_readonly(
          "executor",
          [](const TradingLoop& self) -> const PaperExecutor& { return self.executor(); },
          py::return_value_policy::reference_internal)
      .def_property_readonly(
          "risk_manager", [](TradingLoop& self) { return self.risk(); },
          py::return_value_policy::reference_internal)
      .def_property_readonly("bars", &TradingLoop::bars);

  py::class_<RiskStage>(m, "RiskStage")
      .def(py::init([](const ExecutionConfig& execution, const RiskConfig& risk,
                       const py::handle& bar_ns) {
             return RiskStage(execution, risk, int_arg(bar_ns, "RiskStage: bar_ns"));
           }),
           "execution"_a, "risk"_a, "bar_ns"_a)
      .def_static(
          "pass_through",
          [](const ExecutionConfig& execution, const py::handle& min_trade_fraction,
             const py::handle& bar_ns) {
            return RiskStage(
                execution,
                float_arg(min_trade_fraction, "RiskStage.pass_through: min_trade_fraction"),
                int_arg(bar_ns, "RiskStage.pass_through: bar_ns"));
          },
          "execution"_a, "min_trade_fraction"_a, "bar_ns"_a)
      .def(
          "open",
          [](RiskStage& self, const Bar& bar, bool new_model, const py::handle& received_ts) {
            check_bar(bar, newest(self.bars(), self.last_open_ts()), "RiskStage.open");
            const std::int64_t received = int_arg(received_ts, "RiskStage.open: received_ts");
            if (received < 0) {
              throw py::value_error("RiskStage.open: received_ts must be >= 0 (0: unknown), got " +
                                    std::to_string(received));
            }
            std::vector<RiskEvent> events;
            const TradingState state = self.open(bar, new_model, events, received);
            return std::make_tuple(trading_state_name(state), std::move(events));
          },
          "bar"_a, "new_model"_a = false, "received_ts"_a = 0)
      .def("on_execution", &RiskStage::on_execution, "report"_a)
      .def(
          "close",
          [](RiskStage& self, const Bar& bar, const AccountSnapshot& account,
             const std::string& action, double signal, bool can_order,
             const py::handle& received_ts) {
            check_bar(bar, std::nullopt, "RiskStage.close");
            const Action a = parse_action(action);
            const std::int64_t received = int_arg(received_ts, "RiskStage.close: received_ts");
            if (received < 0) {
              throw py::value_error("RiskStage.close: received_ts must be >= 0 (0: unknown), got " +
                                    std::to_string(received));
            }
            std::vector<RiskEvent> events;
            const RiskDecision& d =
                self.close(bar, account, a, signal, can_order, events, received);
            return std::make_tuple(d, std::move(events));
          },
          "bar"_a, "account"_a, "action"_a, "signal"_a, "can_order"_a = true,
          "received_ts"_a = 0)
      .def(
          "control",
          [](RiskStage& self, const std::string& action, const py::handle& ts) {
            std::vector<RiskEvent> events;
            const std::int64_t when = int_arg(ts, "RiskStage.control: ts");
            try {
              if (action == "pause")
                self.pause(when, events);
              else if (action == "resume")
                self.resume(when, events);
              else if (action == "flatten")
                self.flatten(when, events);
              else if (action == "halt")
                self.halt(when, events);
              else if (action == "reset")
                self.reset_halt(when, events);
              else
                throw py::value_error("RiskStage.control: unknown action '" + action +
                                      "'; expected pause, resume, flatten, halt or reset");
            } catch (const std::invalid_argument& e) {
              throw py::value_error(e.what());
            }
            return events;
          },
          "action"_a, "ts"_a)
      .def(
          "halt",
          [](RiskStage& self, const py::handle& ts, const py::object& account_drawdown) {
            std::vector<RiskEvent> events;
            const std::int64_t when = int_arg(ts, "RiskStage.halt: ts");
            try {
              if (account_drawdown.is_none())
                self.halt(when, events);
              else
                self.halt(when, events, DrawdownCode::account_kill_switch,
                          account_drawdown.cast<double>());
            } catch (const std::invalid_argument& e) {
              throw py::value_error(e.what());
            }
            return events;
          },
          "ts"_a, "account_drawdown"_a = py::none())
      .def("snapshot", &RiskStage::snapshot)
      .def("restore", &RiskStage::restore, "state"_a)
      .def_property_readonly(
          "risk_manager", [](RiskStage& self) { return self.risk(); },
          py::return_value_policy::reference_internal)
      .def_property_readonly(
          "shadow", [](const RiskStage& self) -> const PaperExecutor& { return self.shadow(); },
          py::return_value_policy::reference_internal)
      .def_property_readonly(  // copies: the stage's own order is replaced as it trades
          "outstanding",
          [](const RiskStage& self) { return std::optional<Order>(self.outstanding()); })
      .def_property_readonly("remainder", &RiskStage::remainder)
      .def_property_readonly("bars", &RiskStage::bars)
      .def_property_readonly("is_open", &RiskStage::is_open);

  py::class_<ExecutionStage>(m, "ExecutionStage")
      .def(py::init([](const ExecutionConfig& execution, const py::handle& bar_ns) {
             return ExecutionStage(execution, int_arg(bar_ns, "ExecutionStage: bar_ns"));
           }),
           "execution"_a, "bar_ns"_a)
      .def(
          "open",
          [](ExecutionStage& self, const Bar& bar, const std::string& state) {
            check_bar(bar, newest(self.bars(), self.last_open_ts()), "ExecutionStage.open");
            const TradingState s = parse_state(state);
            std::vector<RiskEvent> events;
            std::vector<ClosedTrade> closed;
            std::optional<ExecutionReport> report = self.open(bar, s, events, closed);
            return std::make_tuple(std::move(report), std::move(events), std::move(closed));
          },
          "bar"_a, "state"_a)
      .def(
          "close",
          [](ExecutionStage& self, const Bar& bar) {
            check_bar(bar, std::nullopt, "ExecutionStage.close");
            return AccountSnapshot(self.close(bar));  // a copy
          },
          "bar"_a)
      .def("submit", &ExecutionStage::submit, "order"_a)
      .def("snapshot", &ExecutionStage::snapshot)
      .def("restore", &ExecutionStage::restore, "state"_a)
      .def_property_readonly(
          "executor",
          [](const ExecutionStage& self) -> const PaperExecutor& { return self.executor(); },
          py::return_value_policy::reference_internal)
      .def_property_readonly(  // copies: the stage's own values change as it trades
          "pending",
          [](const ExecutionStage& self) { return std::optional<Order>(self.pending()); })
      .def_property_readonly(
          "account", [](const ExecutionStage& self) { return AccountSnapshot(self.account()); })
      .def_property_readonly("bars", &ExecutionStage::bars)
      .def_property_readonly("is_open", &ExecutionStage::is_open);

  m.def("action_names", [] {
    py::list out;
    for (int i = 0; i <= static_cast<int>(Action::end_of_run); ++i)
      out.append(action_name(static_cast<Action>(i)));
    return out;
  });
}

}  // namespace colmena::bindings
