#include "colmena/risk_stage.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

#include "colmena/ohlcv_validation.hpp"
#include "colmena/time_range.hpp"

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

std::string where_prefix(const char* where) { return std::string(where) + ": "; }

}  // namespace

void check_signal(double signal, const char* where) {
  if (std::isnan(signal) || (signal >= -1.0 && signal <= 1.0)) return;
  throw std::invalid_argument(where_prefix(where) +
                              "signal must be in [-1, 1] (NaN: no signal), got " +
                              format_double(signal));
}

void check_action(Action action, const char* where) {
  if (static_cast<std::uint8_t>(action) <= static_cast<std::uint8_t>(Action::end_of_run)) return;
  throw std::invalid_argument(where_prefix(where) + "unknown action " +
                              std::to_string(static_cast<int>(action)));
}

double series_signal(double signal) noexcept {
  return std::isfinite(signal) ? std::clamp(signal, -1.0, 1.0) : kNaN;
}

RiskStage::RiskStage(const ExecutionConfig& execution, const RiskConfig& risk, std::int64_t bar_ns)
    : execution_(execution),
      risk_(std::in_place, risk),
      min_trade_fraction_(risk.min_trade_fraction),
      bar_ns_(bar_ns),
      shadow_(shadow_config()) {
  check_duration(bar_ns, "RiskStage", "bar length bar_ns", false);
}

RiskStage::RiskStage(const ExecutionConfig& execution, double min_trade_fraction,
                     std::int64_t bar_ns)
    : execution_(execution),
      min_trade_fraction_(min_trade_fraction),
      bar_ns_(bar_ns),
      shadow_(shadow_config()) {
  check_duration(bar_ns, "RiskStage", "bar length bar_ns", false);
  if (!(min_trade_fraction >= 0.0 && std::isfinite(min_trade_fraction))) {
    throw std::invalid_argument("RiskStage: min_trade_fraction must be >= 0");
  }
}

ExecutionConfig RiskStage::shadow_config() const {
  ExecutionConfig c = execution_;
  c.initial_cash = 1.0;
  c.impact_bps = 0.0;
  c.max_participation = 1.0;
  return c;
}

double RiskStage::clamp_signal(double signal) const noexcept {
  const double lo = execution_.allow_short ? -1.0 : 0.0;
  return std::clamp(signal, lo, 1.0);
}

TradingState RiskStage::open(const Bar& bar, bool new_model, std::vector<RiskEvent>& events,
                             std::int64_t received_ts) {
  if (opened_) {
    throw std::logic_error("RiskStage.open: bar " + format_timestamp_ns(open_ts_) +
                           " was opened but not closed");
  }
  check_timestamp(bar.ts, "RiskStage.open", "bar time");
  if (bars_ > 0 && bar.ts <= last_ts_) {
    throw std::invalid_argument("RiskStage.open: timestamps must increase (" +
                                format_timestamp_ns(bar.ts) + " after " +
                                format_timestamp_ns(last_ts_) + ")");
  }
  if (risk_ && bars_ > 0) {
    // At receipt the newest candle before this one closed at last_ts_ + bar_ns_ (bar.ts when
    // the bars are contiguous); the open is processed when this candle arrives, a bar later.
    const std::int64_t now =
        received_ts > bar_ns_ ? std::max(bar.ts, received_ts - bar_ns_) : bar.ts;
    risk_->observe_data_age(now, last_ts_ + bar_ns_, events);
  }
  if (new_model && risk_) {
    risk_->reset_model_estimates();
    shadow_ = PaperExecutor(shadow_config());
    shadow_pending_ = 0.0;
  }
  if (shadow_pending_ != 0.0) {
    shadow_closed_.clear();
    shadow_.execute(bar.ts, shadow_pending_, bar.open, std::numeric_limits<double>::infinity(),
                    shadow_closed_, nullptr);
    shadow_pending_ = 0.0;
    for (const ClosedTrade& trade : shadow_closed_) risk_->record_trade(trade.pnl);
  }
  open_ts_ = bar.ts;
  opened_ = true;
  return risk_ ? risk_->state() : TradingState::active;
}

void RiskStage::on_execution(const ExecutionReport& report) {
  if (!opened_) throw std::logic_error("RiskStage.on_execution: no bar is open");
  if (!outstanding_) {
    throw std::invalid_argument("RiskStage.on_execution: report for unknown order " +
                                std::to_string(report.order_id) + ": no order is outstanding");
  }
  if (report.order_id != outstanding_->id) {
    throw std::invalid_argument("RiskStage.on_execution: report for unknown order " +
                                std::to_string(report.order_id) + ": the outstanding order is " +
                                std::to_string(outstanding_->id));
  }
  if (report.ts != open_ts_) {
    throw std::invalid_argument(
        "RiskStage.on_execution: report for order " + std::to_string(report.order_id) + " at " +
        format_timestamp_ns(report.ts) + ", but the open bar is " + format_timestamp_ns(open_ts_));
  }
  if (!std::isfinite(report.attempted) || (report.fill && !std::isfinite(report.fill->quantity))) {
    throw std::invalid_argument("RiskStage.on_execution: report for order " +
                                std::to_string(report.order_id) +
                                ": attempted and filled quantities must be finite");
  }
  if (!report.fill && report.attempted != 0.0 && !report.error) {
    throw std::invalid_argument("RiskStage.on_execution: report for order " +
                                std::to_string(report.order_id) +
                                ": nothing filled of a nonzero attempted quantity, and no error");
  }
  if (report.fill) {
    remainder_ = report.attempted - report.fill->quantity;  // volume-limited part
  } else if (report.attempted != 0.0) {
    remainder_ = *report.error == ErrorCode::no_volume ? report.attempted : 0.0;
  } else {
    remainder_ = 0.0;
  }
  outstanding_.reset();
}

void RiskStage::decide_shadow(Action action, double signal, double close) {
  const double equity = shadow_.equity(close);
  const double position = shadow_.position();
  const double current = exposure(position, close, equity);
  const Decision d = pass_through_decision(action, signal, current, min_trade_fraction_);
  if (!d.place_order || (!(equity > 0.0) && d.target != 0.0)) return;
  shadow_pending_ = order_quantity(d.target, equity, close, position);
}

const RiskDecision& RiskStage::close(const Bar& bar, const AccountSnapshot& account, Action action,
                                     double signal, bool can_order,
                                     std::vector<RiskEvent>& events, std::int64_t received_ts) {
  if (!opened_) throw std::logic_error("RiskStage.close: no bar is open");
  if (bar.ts != open_ts_) {
    throw std::invalid_argument("RiskStage.close: bar " + format_timestamp_ns(bar.ts) +
                                " is not the open bar " + format_timestamp_ns(open_ts_));
  }
  const std::int64_t close_ts = bar.ts + bar_ns_;
  if (account.ts != close_ts) {
    throw std::invalid_argument("RiskStage.close: account marked at " +
                                format_timestamp_ns(account.ts) + ", but the bar closes at " +
                                format_timestamp_ns(close_ts));
  }
  check_action(action, "RiskStage.close");
  check_signal(signal, "RiskStage.close");
  if (outstanding_) {
    throw std::invalid_argument("RiskStage.close: order " + std::to_string(outstanding_->id) +
                                " has no execution report (on_execution) at this bar's open");
  }
  if (risk_ && std::isnan(account.equity)) {
    throw std::invalid_argument("RiskStage.close: account equity is NaN");
  }
  // The close of bar t.
  if (risk_) {
    const double held_days =
        static_cast<double>(bars_ > 0 ? bar.ts - last_ts_ : bar_ns_) / kNsPerDay;
    shadow_.accrue_borrow(bar.close, held_days);
    const double bar_return = bars_ > 0 ? std::log(bar.close / last_close_) : kNaN;
    // The decision is taken when the candle arrives: its data is as old as that delay.
    risk_->observe_data_age(std::max(close_ts, received_ts), close_ts, events);
    risk_->observe(close_ts, account.equity, bar_return, events);
  }
  // The decision for bar t + 1.
  const double equity = account.equity;
  const double position = account.position;
  const double current = exposure(position, bar.close, equity);
  const double clamped = std::isfinite(signal) ? clamp_signal(signal) : kNaN;
  RiskDecision& out = result_;
  if (risk_) {
    // A drawdown stop flattens until the position is flat: a volume-limited flatten keeps
    // ordering bar after bar, whatever the bar's action.
    if (risk_->flatten_requested() && position == 0.0) risk_->clear_flatten();
    out.decision = risk_->decide(action, clamped, current);
    out.kelly = risk_->kelly_fraction();
    out.state = risk_->state();
    decide_shadow(action, clamped, bar.close);
  } else {
    out.kelly = kNaN;
    out.state = TradingState::active;
    out.decision = pass_through_decision(action, clamped, current, min_trade_fraction_);
  }
  const Decision& decision = out.decision;
  out.order.reset();
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
      if (clip_to_market(allowed, position, execution_.allow_short) != 0.0) {
        quantity = remainder_;
        origin = OrderOrigin::remainder;
      }
    }
    if (quantity != 0.0 && std::isfinite(quantity)) {
      const bool reduce_only = out.state != TradingState::active;
      out.order =
          Order{++last_id_, bars_, close_ts, quantity, decision.target, origin, reduce_only, 0.0};
      outstanding_ = out.order;
    }
    remainder_ = 0.0;  // replaced by the new order, or nothing left to work
  }
  last_ts_ = bar.ts;
  last_close_ = bar.close;
  ++bars_;
  opened_ = false;
  return out;
}

void RiskStage::halt(std::int64_t ts, std::vector<RiskEvent>& events, DrawdownCode reason,
                     double value) {
  if (!risk_) {
    throw std::logic_error("RiskStage.halt: a pass-through stage has no risk manager to halt");
  }
  risk_->halt(ts, events, reason, value);
}

RiskManager& RiskStage::checked_risk(const char* where) {
  if (!risk_) {
    throw std::logic_error(std::string(where) +
                           ": a pass-through stage has no risk manager to control");
  }
  return *risk_;
}

void RiskStage::pause(std::int64_t ts, std::vector<RiskEvent>& events) {
  checked_risk("RiskStage.pause").pause(ts, events);
}

void RiskStage::resume(std::int64_t ts, std::vector<RiskEvent>& events) {
  checked_risk("RiskStage.resume").resume(ts, events);
}

void RiskStage::flatten(std::int64_t ts, std::vector<RiskEvent>& events) {
  checked_risk("RiskStage.flatten").flatten(ts, events);
}

void RiskStage::reset_halt(std::int64_t ts, std::vector<RiskEvent>& events) {
  RiskManager& risk = checked_risk("RiskStage.reset_halt");
  risk.reset_halt(ts, risk.last_equity(), events);
}

RiskStageState RiskStage::snapshot() const {
  RiskStageState s;
  s.execution = execution_;
  if (risk_) {
    s.risk = risk_->config();
    s.risk_manager = risk_->snapshot();
  }
  s.min_trade_fraction = min_trade_fraction_;
  s.bar_ns = bar_ns_;
  s.shadow = shadow_.snapshot();
  s.bars = bars_;
  s.is_open = opened_;
  s.open_ts = open_ts_;
  s.last_ts = last_ts_;
  s.last_close = last_close_;
  s.last_order_id = last_id_;
  s.outstanding = outstanding_;
  s.remainder = remainder_;
  s.shadow_pending = shadow_pending_;
  return s;
}

namespace {

void check_risk_config(const RiskConfig& a, const RiskConfig& b, const StateCheck& check) {
  check.same_config(a.kelly_multiplier, b.kelly_multiplier, "kelly_multiplier");
  check.same_config(a.kelly_window, b.kelly_window, "kelly_window");
  check.same_config(a.kelly_min_trades, b.kelly_min_trades, "kelly_min_trades");
  check.same_config(a.kelly_prior, b.kelly_prior, "kelly_prior");
  check.same_config(a.kelly_prior_trades, b.kelly_prior_trades, "kelly_prior_trades");
  check.same_config(a.max_leverage, b.max_leverage, "max_leverage");
  check.same_config(a.var_budget, b.var_budget, "var_budget");
  check.same_config(a.var_confidence, b.var_confidence, "var_confidence");
  check.same_config(a.var_horizon_bars, b.var_horizon_bars, "var_horizon_bars");
  check.same_config(a.ewma_lambda, b.ewma_lambda, "ewma_lambda");
  check.same_config(a.min_trade_fraction, b.min_trade_fraction, "min_trade_fraction");
  check.same_config(a.halt_drawdown, b.halt_drawdown, "halt_drawdown");
  check.same_config(a.halt_window_ns, b.halt_window_ns, "halt_window_ns");
  for (std::size_t i = 0; i < 3; ++i) {
    check.same_config(a.ladder_drawdown[i], b.ladder_drawdown[i],
                      StateCheck::at("ladder_drawdown", i));
    check.same_config(a.ladder_pause_ns[i], b.ladder_pause_ns[i],
                      StateCheck::at("ladder_pause_ns", i));
  }
  check.same_config(a.stale_after_ns, b.stale_after_ns, "stale_after_ns");
  check.same_config(a.daily_loss_pause, b.daily_loss_pause, "daily_loss_pause");
  check.same_config(a.alert_drawdown_warning, b.alert_drawdown_warning, "alert_drawdown_warning");
  check.same_config(a.alert_drawdown_critical, b.alert_drawdown_critical,
                    "alert_drawdown_critical");
  check.same_config(a.alert_daily_pnl_warning, b.alert_daily_pnl_warning,
                    "alert_daily_pnl_warning");
  check.same_config(a.alert_daily_pnl_critical, b.alert_daily_pnl_critical,
                    "alert_daily_pnl_critical");
}

}  // namespace

void RiskStage::restore(const RiskStageState& s) {
  const StateCheck check("RiskStage.restore", "");
  check.require(s.version == kStageStateVersion, "version",
                "is " + std::to_string(s.version) + "; this build reads version " +
                    std::to_string(kStageStateVersion));
  // The configuration it was taken under.
  check_execution_config(s.execution, execution_, check.sub("execution"));
  check.require(s.risk.has_value() == risk_.has_value(), "risk",
                std::string("differs: the snapshot was taken in ") +
                    (s.risk ? "risk mode" : "pass-through mode") + ", this stage runs in " +
                    (risk_ ? "risk mode" : "pass-through mode"));
  if (risk_) check_risk_config(*s.risk, risk_->config(), check.sub("risk"));
  check.same_config(s.min_trade_fraction, min_trade_fraction_, "min_trade_fraction");
  check.same_config(s.bar_ns, bar_ns_, "bar_ns");
  // The state.
  check.require(s.risk_manager.has_value() == risk_.has_value(), "risk_manager",
                risk_ ? "is missing in risk mode" : "is present in pass-through mode");
  if (risk_) risk_->check_state(*s.risk_manager, check.sub("risk_manager"));
  shadow_.check_state(s.shadow, check.sub("shadow"));
  if (s.bars > 0) {
    check.timestamp(s.last_ts, "last_ts");
    check.require(std::isfinite(s.last_close) && s.last_close > 0.0, "last_close",
                  "must be finite and > 0, got " + format_double(s.last_close));
  } else {
    check.require(s.last_ts == 0, "last_ts", "must be 0 before the first close");
    check.require(s.last_close == 0.0, "last_close", "must be 0 before the first close");
  }
  if (s.is_open) {
    check.timestamp(s.open_ts, "open_ts");
    check.require(s.bars == 0 || s.open_ts > s.last_ts, "open_ts",
                  "must be after last_ts (" + std::to_string(s.last_ts) + "), got " +
                      std::to_string(s.open_ts));
  } else {
    check.require(s.open_ts == s.last_ts, "open_ts",
                  "must equal last_ts between bars (" + std::to_string(s.last_ts) + "), got " +
                      std::to_string(s.open_ts));
  }
  if (s.outstanding) {
    const StateCheck order = check.sub("outstanding");
    check_order(*s.outstanding, s.bars, s.last_ts, bar_ns_, order);
    order.require(s.outstanding->id == s.last_order_id, "id",
                  "must be the last id issued (last_order_id " + std::to_string(s.last_order_id) +
                      "), got " + std::to_string(s.outstanding->id));
  }
  check.finite(s.remainder, "remainder");
  check.finite(s.shadow_pending, "shadow_pending");
  check.require(risk_ || s.shadow_pending == 0.0, "shadow_pending",
                "must be 0 in pass-through mode (no shadow book)");
  // Everything checked: take it over. The copies are made aside, so that a failed allocation
  // leaves the stage as it was.
  std::optional<RiskManager> risk = risk_;
  if (risk) risk->restore(*s.risk_manager);
  PaperExecutor shadow = shadow_;
  shadow.restore(s.shadow);
  risk_ = std::move(risk);
  shadow_ = std::move(shadow);
  bars_ = s.bars;
  opened_ = s.is_open;
  open_ts_ = s.open_ts;
  last_ts_ = s.last_ts;
  last_close_ = s.last_close;
  last_id_ = s.last_order_id;
  outstanding_ = s.outstanding;
  if (outstanding_) outstanding_->filled = 0.0;
  remainder_ = s.remainder;
  shadow_pending_ = s.shadow_pending;
  shadow_closed_.clear();
}

}  // namespace colmena
