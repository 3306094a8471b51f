#include "colmena/trading_loop.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

#include "colmena/parallel.hpp"

namespace colmena {
namespace {

constexpr double kNsPerDay = 86'400'000'000'000.0;
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

/// Base units that move the position to `target` (fraction of equity) at `price`.
double order_quantity(double target, double equity, double price, double position) noexcept {
  if (target == 0.0) return -position;
  return target * equity / price - position;
}

/// Exposure as a signed fraction of equity; with no equity left a position still counts as one
/// (unit exposure), so that a halt, a stop or the end of a run flattens it.
double exposure(double position, double price, double equity) noexcept {
  if (equity > 0.0) return position * price / equity;
  return position != 0.0 ? std::copysign(1.0, position) : 0.0;
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

TradingLoop::TradingLoop(const ExecutionConfig& execution, const RiskConfig& risk,
                         std::int64_t bar_ns)
    : execution_(execution),
      risk_(std::in_place, risk),
      min_trade_fraction_(risk.min_trade_fraction),
      bar_ns_(bar_ns),
      executor_(execution),
      shadow_(shadow_config()) {
  if (bar_ns <= 0) throw std::invalid_argument("TradingLoop: bar length must be > 0");
}

TradingLoop::TradingLoop(const ExecutionConfig& execution, double min_trade_fraction,
                         std::int64_t bar_ns)
    : execution_(execution),
      min_trade_fraction_(min_trade_fraction),
      bar_ns_(bar_ns),
      executor_(execution),
      shadow_(shadow_config()) {
  if (bar_ns <= 0) throw std::invalid_argument("TradingLoop: bar length must be > 0");
  if (!(min_trade_fraction >= 0.0 && std::isfinite(min_trade_fraction))) {
    throw std::invalid_argument("TradingLoop: min_trade_fraction must be >= 0");
  }
}

ExecutionConfig TradingLoop::shadow_config() const {
  ExecutionConfig c = execution_;
  c.initial_cash = 1.0;
  c.impact_bps = 0.0;
  c.max_participation = 1.0;
  return c;
}

double TradingLoop::clamp_signal(double signal) const noexcept {
  const double lo = execution_.allow_short ? -1.0 : 0.0;
  return std::clamp(signal, lo, 1.0);
}

void TradingLoop::fill_pending(const Bar& bar, std::vector<RiskEvent>& events,
                               std::vector<ClosedTrade>& closed) {
  const double allowed = risk_ ? risk_->allowed_quantity(pending_, executor_.position())
                               : pending_;
  const double market = executor_.clip_to_market(allowed);
  ErrorCode error{};
  const std::size_t first_closed = closed.size();
  result_.fill = executor_.execute(bar.ts, market, bar.open, bar.volume, closed, &error);
  for (std::size_t i = first_closed; i < closed.size(); ++i)
    closed[i].exit_origin = static_cast<std::uint8_t>(pending_origin_);
  if (result_.fill) {
    remainder_ = market - result_.fill->quantity;  // volume-limited part
    events.push_back({bar.ts, EventType::trade_executed, 0, result_.fill->quantity});
  } else if (market != 0.0) {
    events.push_back({bar.ts, EventType::error, static_cast<std::uint8_t>(error), market});
    remainder_ = error == ErrorCode::no_volume ? market : 0.0;
  } else {
    remainder_ = 0.0;
  }
  pending_ = 0.0;
}

void TradingLoop::decide_shadow(Action action, double signal, double close) {
  const double equity = shadow_.equity(close);
  const double position = shadow_.position();
  const double current = exposure(position, close, equity);
  const Decision d = pass_through_decision(action, signal, current, min_trade_fraction_);
  if (!d.place_order || (!(equity > 0.0) && d.target != 0.0)) return;
  shadow_pending_ = order_quantity(d.target, equity, close, position);
}

const StepResult& TradingLoop::step(const Bar& bar, Action action, double signal, bool new_model,
                                    bool can_order, std::vector<RiskEvent>& events,
                                    std::vector<ClosedTrade>& closed) {
  if (bars_ > 0 && bar.ts <= last_ts_) {
    throw std::invalid_argument("TradingLoop.step: timestamps must increase (" +
                                std::to_string(bar.ts) + " after " + std::to_string(last_ts_) +
                                ")");
  }
  result_.fill.reset();
  result_.order.reset();
  // 1. The open of bar t.
  if (risk_ && bars_ > 0) risk_->observe_data_age(bar.ts, last_ts_ + bar_ns_, events);
  if (new_model && risk_) {
    risk_->reset_model_estimates();
    shadow_ = PaperExecutor(shadow_config());
    shadow_pending_ = 0.0;
  }
  if (pending_ != 0.0) fill_pending(bar, events, closed);
  if (shadow_pending_ != 0.0) {
    shadow_closed_.clear();
    shadow_.execute(bar.ts, shadow_pending_, bar.open, std::numeric_limits<double>::infinity(),
                    shadow_closed_, nullptr);
    shadow_pending_ = 0.0;
    for (const ClosedTrade& trade : shadow_closed_) risk_->record_trade(trade.pnl);
  }
  // 2. The close of bar t.
  const std::int64_t close_ts = bar.ts + bar_ns_;
  const double held_days =
      static_cast<double>(bars_ > 0 ? bar.ts - last_ts_ : bar_ns_) / kNsPerDay;
  executor_.accrue_borrow(bar.close, held_days);
  if (risk_) shadow_.accrue_borrow(bar.close, held_days);
  const double equity = executor_.equity(bar.close);
  if (risk_) {
    const double bar_return = bars_ > 0 ? std::log(bar.close / last_close_) : kNaN;
    risk_->observe_data_age(close_ts, close_ts, events);
    risk_->observe(close_ts, equity, bar_return, events);
  }
  // 3. The decision for bar t + 1.
  const double position = executor_.position();
  const double current = exposure(position, bar.close, equity);
  const double clamped = std::isfinite(signal) ? clamp_signal(signal) : kNaN;
  Decision decision;
  if (risk_) {
    // A drawdown stop flattens until the position is flat: a volume-limited flatten keeps
    // ordering bar after bar, whatever the bar's action.
    if (risk_->flatten_requested() && position == 0.0) risk_->clear_flatten();
    decision = risk_->decide(action, clamped, current);
    result_.kelly = risk_->kelly_fraction();
    result_.state = risk_->state();
    decide_shadow(action, clamped, bar.close);
  } else {
    result_.kelly = kNaN;
    decision = pass_through_decision(action, clamped, current, min_trade_fraction_);
  }
  result_.decision = decision;
  if (can_order) {
    double quantity = 0.0;
    OrderOrigin origin = OrderOrigin::decision;
    if (decision.place_order) {
      quantity = order_quantity(decision.target, equity, bar.close, position);
      if (decision.verdict == Verdict::flatten_halted || decision.verdict == Verdict::flatten_stop)
        origin = OrderOrigin::risk;
      else if (decision.verdict == Verdict::end_of_run)
        origin = OrderOrigin::end_of_run;
    } else if (decision.verdict == Verdict::hold && remainder_ != 0.0) {
      const double allowed = risk_ ? risk_->allowed_quantity(remainder_, position) : remainder_;
      if (executor_.clip_to_market(allowed) != 0.0) {
        quantity = remainder_;
        origin = OrderOrigin::remainder;
      }
    }
    if (quantity != 0.0 && std::isfinite(quantity)) {
      pending_ = quantity;
      if (origin != OrderOrigin::remainder) pending_origin_ = origin;  // why the order exists
      result_.order = Order{bars_, quantity, decision.target, 0.0, origin};
    }
    remainder_ = 0.0;  // replaced by the new order, or nothing left to work
  }
  result_.cash = executor_.cash();
  result_.position = executor_.position();
  result_.equity = equity;
  last_ts_ = bar.ts;
  last_close_ = bar.close;
  ++bars_;
  return result_;
}

BacktestResult run_backtest(const BacktestInput& in, const RiskConfig& risk_config,
                            const ExecutionConfig& execution) {
  if (in.n == 0) throw std::invalid_argument("run_backtest: no bars");
  if (in.bar_ns <= 0) throw std::invalid_argument("run_backtest: bar length must be > 0");
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
    const StepResult& r =
        loop.step(bar, action, in.signal[t], new_model, t + 1 < n, out.events, out.trades);
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
  if (in.bar_ns <= 0) throw std::invalid_argument("simulate_targets: bar length must be > 0");
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
        signal = static_cast<double>(signals[decision++]);
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
