#include "colmena/trading_loop.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

#include "colmena/ohlcv_validation.hpp"
#include "colmena/parallel.hpp"
#include "colmena/time_range.hpp"

namespace colmena {
namespace {
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// Every bar time in the core's range (time_range.hpp), before any bar is stepped; the error
// names the first row outside it.
void check_timestamps(const std::int64_t* ts, std::size_t n, const char* where) {
  for (std::size_t t = 0; t < n; ++t) {
    if (!timestamp_in_range(ts[t])) {
      check_timestamp(ts[t], (std::string(where) + ": row " + std::to_string(t)).c_str(),
                      "bar time");
    }
  }
}
}  // namespace

const char* order_origin_name(OrderOrigin origin) noexcept {
  switch (origin) {
    case OrderOrigin::decision:
      return "decision";
    case OrderOrigin::remainder:
      return "remainder";
    case OrderOrigin::risk:
      return "risk";
    case OrderOrigin::end_of_run:
      return "end_of_run";
  }
  return "unknown";
}

void check_execution_config(const ExecutionConfig& snapshot, const ExecutionConfig& own,
                            const StateCheck& check) {
  check.same_config(snapshot.allow_short, own.allow_short, "allow_short");
  check.same_config(snapshot.initial_cash, own.initial_cash, "initial_cash");
  check.same_config(snapshot.fee_bps, own.fee_bps, "fee_bps");
  check.same_config(snapshot.slippage_bps, own.slippage_bps, "slippage_bps");
  check.same_config(snapshot.impact_bps, own.impact_bps, "impact_bps");
  check.same_config(snapshot.max_participation, own.max_participation, "max_participation");
  check.same_config(snapshot.borrow_bps_per_day, own.borrow_bps_per_day, "borrow_bps_per_day");
}

void check_order(const Order& order, std::size_t bars, std::int64_t last_ts, std::int64_t bar_ns,
                 const StateCheck& check) {
  check.require(bars > 0, "bar", "belongs to no closed bar (no bar was closed)");
  check.require(order.bar == bars - 1, "bar",
                "must be the last closed bar (" + std::to_string(bars - 1) + "), got " +
                    std::to_string(order.bar));
  check.require(order.ts == last_ts + bar_ns, "ts",
                "must be the last close (" + std::to_string(last_ts + bar_ns) + "), got " +
                    std::to_string(order.ts));
  check.require(std::isfinite(order.quantity) && order.quantity != 0.0, "quantity",
                "must be finite and nonzero, got " + format_double(order.quantity));
  check.finite(order.target, "target");
  check.require(
      static_cast<std::uint8_t>(order.origin) <= static_cast<std::uint8_t>(OrderOrigin::end_of_run),
      "origin",
      "is not an order origin (code " + std::to_string(static_cast<int>(order.origin)) + ")");
}

TradingLoop::TradingLoop(const ExecutionConfig& execution, const RiskConfig& risk,
                         std::int64_t bar_ns)
    : risk_(execution, risk, bar_ns), execution_(execution, bar_ns) {}

TradingLoop::TradingLoop(const ExecutionConfig& execution, double min_trade_fraction,
                         std::int64_t bar_ns)
    : risk_(execution, min_trade_fraction, bar_ns), execution_(execution, bar_ns) {}

const StepResult& TradingLoop::step(const Bar& bar, Action action, double signal, bool new_model,
                                    bool can_order, std::vector<RiskEvent>& events,
                                    std::vector<ClosedTrade>& closed) {
  // Everything RiskStage::close would reject, checked before either half changes.
  check_action(action, "TradingLoop.step");
  check_signal(signal, "TradingLoop.step");
  check_timestamp(bar.ts, "TradingLoop.step", "bar time");
  if (risk_.bars() > 0 && bar.ts <= risk_.last_open_ts()) {
    throw std::invalid_argument("TradingLoop.step: timestamps must increase (" +
                                format_timestamp_ns(bar.ts) + " after " +
                                format_timestamp_ns(risk_.last_open_ts()) + ")");
  }
  // 1. The open of bar t: the risk state at the open gates the fill of the pending order.
  const TradingState state = risk_.open(bar, new_model, events);
  result_.fill.reset();
  if (std::optional<ExecutionReport> report = execution_.open(bar, state, events, closed)) {
    risk_.on_execution(*report);
    result_.fill = report->fill;
  }
  // 2. The close of bar t, and 3. the decision for bar t + 1.
  const AccountSnapshot& account = execution_.close(bar);
  const RiskDecision& decided = risk_.close(bar, account, action, signal, can_order, events);
  if (decided.order) execution_.submit(*decided.order);
  result_.cash = account.cash;
  result_.position = account.position;
  result_.equity = account.equity;
  result_.decision = decided.decision;
  result_.kelly = decided.kelly;
  result_.state = decided.state;
  result_.order = decided.order;
  return result_;
}

BacktestResult run_backtest(const BacktestInput& in, const RiskConfig& risk_config,
                            const ExecutionConfig& execution) {
  if (in.n == 0) throw std::invalid_argument("run_backtest: no bars");
  check_duration(in.bar_ns, "run_backtest", "bar length bar_ns", false);
  check_timestamps(in.ts, in.n, "run_backtest");
  TradingLoop loop(execution, risk_config, in.bar_ns);
  BacktestResult out;
  const std::size_t n = in.n;
  for (auto* v : {&out.cash, &out.position, &out.equity, &out.requested, &out.target, &out.kelly})
    v->resize(n);
  out.state.resize(n);
  out.verdict.resize(n);

  std::size_t pending_order = 0;
  bool pending = false;
  for (std::size_t t = 0; t < n; ++t) {
    if (t > 0 && in.ts[t] <= in.ts[t - 1]) {
      throw std::invalid_argument("run_backtest: timestamps must increase (row " +
                                  std::to_string(t) + ")");
    }
    const Bar bar{in.ts[t], in.open[t], in.high[t], in.low[t], in.close[t], in.volume[t]};
    const auto action = in.action ? static_cast<Action>(in.action[t]) : Action::decide;
    if (in.action && in.action[t] > static_cast<std::uint8_t>(Action::end_of_run)) {
      throw std::invalid_argument("run_backtest: unknown action " +
                                  std::to_string(in.action[t]) + " at row " + std::to_string(t));
    }
    const bool new_model = in.model && t > 0 && in.model[t] != in.model[t - 1];
    const StepResult& r = loop.step(bar, action, series_signal(in.signal[t]), new_model, t + 1 < n,
                                    out.events, out.trades);
    if (pending) {
      out.orders[pending_order].filled = r.fill ? r.fill->quantity : 0.0;
      pending = false;
    }
    if (r.fill) {
      out.fills.push_back(*r.fill);
      out.fill_bar.push_back(t);
    }
    if (r.order) {
      out.orders.push_back(*r.order);
      pending_order = out.orders.size() - 1;
      pending = true;
    }
    out.cash[t] = r.cash;
    out.position[t] = r.position;
    out.equity[t] = r.equity;
    out.requested[t] = r.decision.requested;
    out.target[t] = r.decision.target;
    out.kelly[t] = r.kelly;
    out.verdict[t] = static_cast<std::uint8_t>(r.decision.verdict);
    out.state[t] = static_cast<std::uint8_t>(r.state);
  }
  out.fees_paid = loop.executor().fees_paid();
  out.slippage_paid = loop.executor().slippage_paid();
  out.borrow_paid = loop.executor().borrow_paid();
  return out;
}

TargetSimulationResult simulate_targets(const TargetSimulationInput& in,
                                        const ExecutionConfig& execution) {
  if (in.n == 0) throw std::invalid_argument("simulate_targets: no bars");
  check_duration(in.bar_ns, "simulate_targets", "bar length bar_ns", false);
  check_timestamps(in.ts, in.n, "simulate_targets");
  std::size_t decisions = 0;
  for (std::size_t t = 0; t < in.n; ++t) {
    if (in.decide[t]) ++decisions;
    if (t > 0 && in.ts[t] <= in.ts[t - 1]) {
      throw std::invalid_argument("simulate_targets: timestamps must increase (row " +
                                  std::to_string(t) + ")");
    }
  }
  if (decisions != in.d) {
    throw std::invalid_argument("simulate_targets: " + std::to_string(decisions) +
                                " decision bars but signals for " + std::to_string(in.d));
  }
  for (std::size_t j = 0; j < in.m; ++j) {
    if (in.mark_rows[j] < 0 || static_cast<std::size_t>(in.mark_rows[j]) >= in.n ||
        (j > 0 && in.mark_rows[j] <= in.mark_rows[j - 1])) {
      throw std::invalid_argument("simulate_targets: mark rows must increase within [0, n)");
    }
  }
  execution.validate();
  TargetSimulationResult out;
  out.equity.assign(in.k * in.m, 0.0);
  out.position.assign(in.k * in.m, 0.0);
  for (auto* v : {&out.fees, &out.slippage, &out.borrow, &out.traded_notional,
                  &out.final_position})
    v->assign(in.k, 0.0);
  out.n_fills.assign(in.k, 0);
  parallel_for(in.k, [&](std::size_t row) {
    TradingLoop loop(execution, in.min_trade_fraction, in.bar_ns);
    std::vector<RiskEvent> events;
    std::vector<ClosedTrade> closed;
    const float* signals = in.signals + row * in.d;
    double* marks = out.equity.data() + row * in.m;
    double* held = out.position.data() + row * in.m;
    std::size_t decision = 0, mark = 0;
    const std::size_t wind_down = std::min(in.wind_down_bars, in.n > 0 ? in.n - 1 : 0);
    const std::size_t wind_down_from = in.n - 1 - wind_down;  // first end_of_run bar
    for (std::size_t t = 0; t < in.n; ++t) {
      Action action = Action::hold;
      double signal = kNaN;
      if (in.decide[t]) {
        action = Action::decide;
        signal = series_signal(static_cast<double>(signals[decision++]));
      }
      if (wind_down > 0 && t >= wind_down_from && t + 1 < in.n) action = Action::end_of_run;
      const Bar bar{in.ts[t], in.open[t], in.open[t], in.open[t], in.close[t], in.volume[t]};
      const StepResult& r = loop.step(bar, action, signal, false, t + 1 < in.n, events, closed);
      if (mark < in.m && static_cast<std::size_t>(in.mark_rows[mark]) == t) {
        held[mark] = r.position;
        marks[mark++] = r.equity;
      }
      events.clear();
      closed.clear();
    }
    const PaperExecutor& ex = loop.executor();
    out.fees[row] = ex.fees_paid();
    out.slippage[row] = ex.slippage_paid();
    out.borrow[row] = ex.borrow_paid();
    out.traded_notional[row] = ex.traded_notional();
    out.final_position[row] = ex.position();
    out.n_fills[row] = static_cast<std::int64_t>(ex.n_fills());
  });
  return out;
}

}  // namespace colmena
