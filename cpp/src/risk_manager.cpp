#include "colmena/risk_manager.hpp"

#include <algorithm>
#include <cmath>
#include <iterator>
#include <limits>
#include <stdexcept>
#include <string>
#include <utility>

#include "colmena/risk.hpp"
#include "colmena/time_range.hpp"

namespace colmena {
namespace {

constexpr std::int64_t kNsPerDay = 86'400'000'000'000;
constexpr std::size_t kMinVolatilityBars = 30;

double sign(double x) noexcept { return (x > 0.0) - (x < 0.0); }

std::int64_t floor_div(std::int64_t a, std::int64_t b) noexcept {
  return a / b - ((a % b != 0) && ((a < 0) != (b < 0)));
}

}  // namespace

const char* trading_state_name(TradingState state) noexcept {
  switch (state) {
    case TradingState::active:
      return "ACTIVE";
    case TradingState::reducing:
      return "REDUCING";
    case TradingState::paused:
      return "PAUSED";
    case TradingState::halted:
      return "HALTED";
  }
  return "UNKNOWN";
}

const char* verdict_name(Verdict verdict) noexcept {
  switch (verdict) {
    case Verdict::accepted:
      return "accepted";
    case Verdict::resized_leverage:
      return "resized_leverage";
    case Verdict::resized_var:
      return "resized_var";
    case Verdict::reduce_only_paused:
      return "reduce_only_paused";
    case Verdict::reduce_only_stale:
      return "reduce_only_stale";
    case Verdict::flatten_halted:
      return "flatten_halted";
    case Verdict::flatten_stop:
      return "flatten_stop";
    case Verdict::rejected_halted:
      return "rejected_halted";
    case Verdict::no_signal:
      return "no_signal";
    case Verdict::skipped_small_change:
      return "skipped_small_change";
    case Verdict::zero_kelly:
      return "zero_kelly";
    case Verdict::hold:
      return "hold";
    case Verdict::gated_flat:
      return "gated_flat";
    case Verdict::end_of_run:
      return "end_of_run";
  }
  return "unknown";
}

const char* event_type_name(EventType type) noexcept {
  switch (type) {
    case EventType::trade_executed:
      return "trade_executed";
    case EventType::regime_changed:
      return "regime_changed";
    case EventType::drawdown_threshold:
      return "drawdown_threshold";
    case EventType::alert:
      return "alert";
    case EventType::error:
      return "error";
  }
  return "unknown";
}

const char* action_name(Action action) noexcept {
  switch (action) {
    case Action::hold:
      return "hold";
    case Action::decide:
      return "decide";
    case Action::gated_flat:
      return "gated_flat";
    case Action::end_of_run:
      return "end_of_run";
  }
  return "unknown";
}

const char* error_code_name(ErrorCode code) noexcept {
  switch (code) {
    case ErrorCode::no_volume:
      return "no_volume";
    case ErrorCode::non_finite_price:
      return "non_finite_price";
  }
  return "unknown";
}

const char* event_code_name(EventType type, std::uint8_t code) noexcept {
  switch (type) {
    case EventType::trade_executed:
      return "";
    case EventType::regime_changed:
      return code <= static_cast<std::uint8_t>(TradingState::halted)
                 ? trading_state_name(static_cast<TradingState>(code))
                 : "unknown";
    case EventType::drawdown_threshold:
      switch (static_cast<DrawdownCode>(code)) {
        case DrawdownCode::ladder_pause_1:
          return "ladder_pause_1";
        case DrawdownCode::ladder_pause_2:
          return "ladder_pause_2";
        case DrawdownCode::ladder_stop:
          return "ladder_stop";
        case DrawdownCode::kill_switch:
          return "kill_switch";
        case DrawdownCode::daily_loss:
          return "daily_loss";
        case DrawdownCode::ladder_rearmed:
          return "ladder_rearmed";
        case DrawdownCode::halted_by_operator:
          return "halted_by_operator";
        case DrawdownCode::account_kill_switch:
          return "account_kill_switch";
        case DrawdownCode::paused_by_operator:
          return "paused_by_operator";
        case DrawdownCode::resumed_by_operator:
          return "resumed_by_operator";
        case DrawdownCode::flatten_by_operator:
          return "flatten_by_operator";
        case DrawdownCode::halt_reset:
          return "halt_reset";
      }
      return "unknown";
    case EventType::alert:
      switch (static_cast<AlertCode>(code)) {
        case AlertCode::drawdown_warning:
          return "drawdown_warning";
        case AlertCode::drawdown_critical:
          return "drawdown_critical";
        case AlertCode::daily_pnl_warning:
          return "daily_pnl_warning";
        case AlertCode::daily_pnl_critical:
          return "daily_pnl_critical";
        case AlertCode::data_feed_silent:
          return "data_feed_silent";
      }
      return "unknown";
    case EventType::error:
      return code <= static_cast<std::uint8_t>(ErrorCode::non_finite_price)
                 ? error_code_name(static_cast<ErrorCode>(code))
                 : "unknown";
  }
  return "unknown";
}

void RiskConfig::validate() const {
  std::string errors;
  auto check = [&](bool ok, const char* what) {
    if (!ok) errors += std::string(errors.empty() ? "" : "; ") + what;
  };
  check(kelly_multiplier >= 0.0 && kelly_multiplier <= 1.0, "kelly_multiplier must be in [0, 1]");
  check(kelly_window >= 1, "kelly_window must be >= 1");
  check(kelly_min_trades <= kelly_window, "kelly_min_trades must be <= kelly_window");
  check(kelly_prior >= 0.0 && kelly_prior <= 1.0, "kelly_prior must be in [0, 1]");
  check(kelly_prior_trades >= 0.0 && std::isfinite(kelly_prior_trades),
        "kelly_prior_trades must be >= 0");
  check(max_leverage > 0.0 && std::isfinite(max_leverage), "max_leverage must be > 0");
  check(var_budget > 0.0 && std::isfinite(var_budget), "var_budget must be > 0");
  check(var_confidence > 0.5 && var_confidence < 1.0, "var_confidence must be in (0.5, 1)");
  check(var_horizon_bars >= 1.0 && var_horizon_bars <= kMaxVarHorizonBars,
        "var_horizon_bars must be in [1, 315360000] (10 years of one-second bars)");
  check(ewma_lambda > 0.0 && ewma_lambda < 1.0, "ewma_lambda must be in (0, 1)");
  check(min_trade_fraction >= 0.0, "min_trade_fraction must be >= 0");
  check(halt_drawdown > 0.0 && halt_drawdown < 1.0, "halt_drawdown must be in (0, 1)");
  check(halt_window_ns > 0 && halt_window_ns <= kMaxDurationNs,
        "halt_window_ns must be in (0, 315360000000000000] (10 years)");
  check(ladder_drawdown[0] > 0.0 && ladder_drawdown[0] < ladder_drawdown[1] &&
            ladder_drawdown[1] < ladder_drawdown[2] && ladder_drawdown[2] < 1.0,
        "ladder drawdowns must increase within (0, 1)");
  check(std::all_of(std::begin(ladder_pause_ns), std::end(ladder_pause_ns),
                    [](std::int64_t p) { return p >= 0 && p <= kMaxDurationNs; }),
        "ladder_pause_ns must each be in [0, 315360000000000000] (10 years)");
  check(stale_after_ns > 0 && stale_after_ns <= kMaxDurationNs,
        "stale_after_ns must be in (0, 315360000000000000] (10 years)");
  check(daily_loss_pause >= -1.0 && daily_loss_pause < 0.0, "daily_loss_pause must be in [-1, 0)");
  if (!errors.empty()) throw std::invalid_argument("RiskConfig: " + errors);
}

RiskManager::RiskManager(const RiskConfig& config) : config_(config) { config_.validate(); }

void RiskManager::set_state(TradingState next, std::int64_t ts, std::vector<RiskEvent>& events) {
  if (next == state_) return;
  state_ = next;
  events.push_back({ts, EventType::regime_changed, static_cast<std::uint8_t>(next), drawdown_});
}

void RiskManager::observe(std::int64_t ts, double equity, double bar_log_return,
                          std::vector<RiskEvent>& events) {
  check_timestamp(ts, "RiskManager.observe", "timestamp", kMaxObservationNs);
  if (started_ && ts < last_ts_) {
    throw std::invalid_argument("RiskManager.observe: time went backwards (" + std::to_string(ts) +
                                " < " + std::to_string(last_ts_) + ")");
  }
  if (std::isnan(equity)) throw std::invalid_argument("RiskManager.observe: equity is NaN");
  last_ts_ = ts;

  if (std::isfinite(bar_log_return)) {
    const double r2 = bar_log_return * bar_log_return;
    ewma_var_ =
        ewma_count_ == 0 ? r2 : config_.ewma_lambda * ewma_var_ + (1.0 - config_.ewma_lambda) * r2;
    ++ewma_count_;
  }

  // The UTC day's PnL against the last equity of the previous day.
  const std::int64_t day = floor_div(ts, kNsPerDay);
  if (!started_ || day != day_) {
    day_start_equity_ = started_ ? last_equity_ : equity;
    day_ = day;
    day_warned_ = day_critical_ = day_paused_ = false;
  }
  last_equity_ = equity;
  daily_pnl_ = day_start_equity_ > 0.0 ? equity / day_start_equity_ - 1.0 : 0.0;
  if (daily_pnl_ < config_.alert_daily_pnl_warning && !day_warned_) {
    day_warned_ = true;
    events.push_back({ts, EventType::alert,
                      static_cast<std::uint8_t>(AlertCode::daily_pnl_warning), daily_pnl_});
  }
  if (daily_pnl_ < config_.alert_daily_pnl_critical && !day_critical_) {
    day_critical_ = true;
    events.push_back({ts, EventType::alert,
                      static_cast<std::uint8_t>(AlertCode::daily_pnl_critical), daily_pnl_});
  }

  if (state_ == TradingState::paused && !operator_paused_ && ts >= paused_until_) {
    if (stopped_) {  // the drawdown stop is over: re-arm the ladder from here
      stopped_ = false;
      peak_ = equity;
      ladder_level_ = 0;
      events.push_back({ts, EventType::drawdown_threshold,
                        static_cast<std::uint8_t>(DrawdownCode::ladder_rearmed), equity});
    }
    set_state(stale_ ? TradingState::reducing : TradingState::active, ts, events);
  }

  // Kill switch: drop from the maximum equity of the trailing window.
  while (!hour_max_.empty() && hour_max_.back().second <= equity) hour_max_.pop_back();
  hour_max_.emplace_back(ts, equity);
  const std::int64_t window_start = saturating_sub(ts, config_.halt_window_ns);
  while (hour_max_.size() > 1 && hour_max_.front().first < window_start) hour_max_.pop_front();
  const double window_max = hour_max_.front().second;
  if (state_ != TradingState::halted && window_max > 0.0 &&
      (equity <= 0.0 || (window_max - equity) / window_max > config_.halt_drawdown)) {
    const double dd = equity <= 0.0 ? 1.0 : (window_max - equity) / window_max;
    events.push_back(
        {ts, EventType::drawdown_threshold, static_cast<std::uint8_t>(DrawdownCode::kill_switch),
         dd});
    set_state(TradingState::halted, ts, events);
  }

  // Circuit-breaker ladder on the drawdown from the reference equity.
  if (!started_ || equity > peak_) {
    peak_ = equity;
    ladder_level_ = 0;
  }
  drawdown_ = peak_ > 0.0 ? std::max(0.0, 1.0 - equity / peak_) : 0.0;
  int level = 0;
  for (int i = 0; i < 3; ++i) {
    if (drawdown_ > config_.ladder_drawdown[i]) level = i + 1;
  }
  if (level > ladder_level_) {
    for (int l = ladder_level_ + 1; l <= level; ++l) {
      events.push_back(
          {ts, EventType::drawdown_threshold, static_cast<std::uint8_t>(l), drawdown_});
    }
    ladder_level_ = level;
    if (state_ != TradingState::halted) {
      paused_until_ = std::max(paused_until_, saturating_add(ts, config_.ladder_pause_ns[level - 1]));
      if (level == 3) {
        flatten_ = true;
        stopped_ = true;
      }
      set_state(TradingState::paused, ts, events);
    }
  }

  // Daily loss limit: pause until the next UTC midnight.
  if (daily_pnl_ < config_.daily_loss_pause && !day_paused_) {
    day_paused_ = true;
    events.push_back({ts, EventType::drawdown_threshold,
                      static_cast<std::uint8_t>(DrawdownCode::daily_loss), daily_pnl_});
    if (state_ != TradingState::halted) {
      paused_until_ = std::max(paused_until_, (day + 1) * kNsPerDay);
      set_state(TradingState::paused, ts, events);
    }
  }

  // Alerts on the drawdown from the all-time high.
  if (!started_ || equity > high_) {
    high_ = equity;
    dd_warned_ = dd_critical_ = false;
  }
  high_drawdown_ = high_ > 0.0 ? std::max(0.0, 1.0 - equity / high_) : 0.0;
  if (high_drawdown_ > config_.alert_drawdown_warning && !dd_warned_) {
    dd_warned_ = true;
    events.push_back({ts, EventType::alert,
                      static_cast<std::uint8_t>(AlertCode::drawdown_warning), high_drawdown_});
  }
  if (high_drawdown_ > config_.alert_drawdown_critical && !dd_critical_) {
    dd_critical_ = true;
    events.push_back({ts, EventType::alert,
                      static_cast<std::uint8_t>(AlertCode::drawdown_critical), high_drawdown_});
  }
  started_ = true;
}

void RiskManager::observe_data_age(std::int64_t ts, std::int64_t newest_candle_ts,
                                   std::vector<RiskEvent>& events) {
  check_timestamp(ts, "RiskManager.observe_data_age", "timestamp", kMaxObservationNs);
  check_timestamp(newest_candle_ts, "RiskManager.observe_data_age", "newest candle timestamp",
                  kMaxObservationNs);
  const std::int64_t age = saturating_sub(ts, newest_candle_ts);
  const bool stale = age > config_.stale_after_ns;
  if (stale && !stale_) {
    events.push_back({ts, EventType::alert, static_cast<std::uint8_t>(AlertCode::data_feed_silent),
                      static_cast<double>(age) / 1e9});
    if (state_ == TradingState::active) set_state(TradingState::reducing, ts, events);
  } else if (!stale && stale_ && state_ == TradingState::reducing) {
    set_state(TradingState::active, ts, events);
  }
  stale_ = stale;
}

double RiskManager::kelly_fraction() const noexcept {
  const std::size_t n = trades_.size();
  if (n == 0 || n < config_.kelly_min_trades) return config_.kelly_prior;
  double win_sum = 0.0, loss_sum = 0.0;
  std::size_t wins = 0, losses = 0;
  for (double pnl : trades_) {
    if (pnl > 0.0) {
      win_sum += pnl;
      ++wins;
    } else if (pnl < 0.0) {
      loss_sum -= pnl;
      ++losses;
    }
  }
  double estimate = 0.0;
  if (losses == 0) {
    estimate = wins > 0 ? 1.0 : 0.0;
  } else if (wins > 0) {
    const double w = static_cast<double>(wins) / static_cast<double>(n);
    const double payoff =
        (win_sum / static_cast<double>(wins)) / (loss_sum / static_cast<double>(losses));
    estimate = std::clamp(w - (1.0 - w) / payoff, 0.0, 1.0);
  }
  const double m = config_.kelly_prior_trades;
  const double nn = static_cast<double>(n);
  return (nn * estimate + m * config_.kelly_prior) / (nn + m);
}

double RiskManager::bar_volatility() const noexcept {
  return ewma_count_ >= kMinVolatilityBars ? std::sqrt(ewma_var_)
                                           : std::numeric_limits<double>::quiet_NaN();
}

Decision RiskManager::decide(double signal, double current) const {
  return decide(Action::decide, signal, current);
}

Decision RiskManager::decide(Action action, double signal, double current) const {
  Decision d;
  if (state_ == TradingState::halted) {
    d.verdict = current != 0.0 ? Verdict::flatten_halted : Verdict::rejected_halted;
    d.place_order = current != 0.0;
    return d;
  }
  if (flatten_) {
    d.verdict = Verdict::flatten_stop;
    d.place_order = current != 0.0;
    return d;
  }
  if (action == Action::hold) {
    d.verdict = Verdict::hold;
    d.target = current;
    return d;
  }
  if (action == Action::gated_flat || action == Action::end_of_run) {
    d.verdict = action == Action::gated_flat ? Verdict::gated_flat : Verdict::end_of_run;
    d.place_order = current != 0.0;
    return d;
  }
  if (!std::isfinite(signal)) {
    d.verdict = Verdict::no_signal;
    d.target = current;
    return d;
  }
  const double kelly = kelly_fraction();
  d.requested = std::clamp(signal, -1.0, 1.0) * config_.kelly_multiplier * kelly;
  double target = d.requested;
  d.verdict = kelly > 0.0 ? Verdict::accepted : Verdict::zero_kelly;
  if (std::abs(target) > config_.max_leverage) {
    target = sign(target) * config_.max_leverage;
    d.verdict = Verdict::resized_leverage;
  }
  const double vol = bar_volatility();
  const double unit_var = std::isfinite(vol) ? -normal_quantile(1.0 - config_.var_confidence) *
                                                   vol * std::sqrt(config_.var_horizon_bars)
                                             : std::numeric_limits<double>::infinity();
  if (target != 0.0 && (std::abs(target) * unit_var > config_.var_budget || !std::isfinite(unit_var))) {
    target = std::isfinite(unit_var) && unit_var > 0.0
                 ? sign(target) * config_.var_budget / unit_var
                 : 0.0;
    d.verdict = Verdict::resized_var;
  }
  if (state_ == TradingState::paused || state_ == TradingState::reducing) {
    double allowed = target;
    if (current == 0.0) {
      allowed = 0.0;
    } else if (sign(target) != sign(current)) {
      allowed = 0.0;
    } else if (std::abs(target) > std::abs(current)) {
      allowed = current;
    }
    if (allowed != target) {
      target = allowed;
      d.verdict =
          state_ == TradingState::paused ? Verdict::reduce_only_paused : Verdict::reduce_only_stale;
    }
  }
  settle_target(d, target, current, config_.min_trade_fraction);
  return d;
}

void settle_target(Decision& d, double target, double current,
                   double min_trade_fraction) noexcept {
  const bool closing = target == 0.0 && current != 0.0;
  if (std::abs(target - current) < min_trade_fraction && !closing) {
    if (d.verdict == Verdict::accepted) d.verdict = Verdict::skipped_small_change;
    d.target = current;
    d.place_order = false;
    return;
  }
  d.target = target;
  d.place_order = true;
}

Decision pass_through_decision(Action action, double signal, double current,
                               double min_trade_fraction) noexcept {
  Decision d;
  if (action == Action::hold || (action == Action::decide && !std::isfinite(signal))) {
    d.verdict = action == Action::hold ? Verdict::hold : Verdict::no_signal;
    d.target = current;
    return d;
  }
  if (action == Action::gated_flat || action == Action::end_of_run) {
    d.verdict = action == Action::gated_flat ? Verdict::gated_flat : Verdict::end_of_run;
    d.place_order = current != 0.0;
    return d;
  }
  d.requested = signal;
  d.verdict = Verdict::accepted;
  settle_target(d, signal, current, min_trade_fraction);
  return d;
}

double reduce_only_quantity(double quantity, double position) noexcept {
  if (position == 0.0 || sign(quantity) == sign(position)) return 0.0;
  return sign(quantity) * std::min(std::abs(quantity), std::abs(position));
}

double RiskManager::allowed_quantity(double quantity, double position) const noexcept {
  if (state_ == TradingState::active) return quantity;
  return reduce_only_quantity(quantity, position);
}

void RiskManager::record_trade(double pnl) {
  if (!std::isfinite(pnl)) return;
  trades_.push_back(pnl);
  while (trades_.size() > config_.kelly_window) trades_.pop_front();
}

void RiskManager::halt(std::int64_t ts, std::vector<RiskEvent>& events, DrawdownCode reason,
                       double value) {
  check_timestamp(ts, "RiskManager.halt", "timestamp", kMaxObservationNs);
  if (reason != DrawdownCode::halted_by_operator && reason != DrawdownCode::account_kill_switch)
    throw std::invalid_argument("RiskManager.halt: reason must be halted_by_operator or "
                                "account_kill_switch");
  if (reason == DrawdownCode::account_kill_switch && !std::isfinite(value))
    throw std::invalid_argument("RiskManager.halt: the account's drawdown must be finite");
  if (state_ == TradingState::halted) return;
  events.push_back({ts, EventType::drawdown_threshold, static_cast<std::uint8_t>(reason),
                    reason == DrawdownCode::account_kill_switch ? value : drawdown_});
  set_state(TradingState::halted, ts, events);
}

void RiskManager::reset_halt(std::int64_t ts, double equity, std::vector<RiskEvent>& events) {
  check_timestamp(ts, "RiskManager.reset_halt", "timestamp", kMaxObservationNs);
  if (state_ != TradingState::halted) return;
  hour_max_.clear();
  hour_max_.emplace_back(ts, equity);
  peak_ = equity;
  drawdown_ = 0.0;
  ladder_level_ = 0;
  paused_until_ = 0;
  flatten_ = false;
  stopped_ = false;
  events.push_back(
      {ts, EventType::drawdown_threshold, static_cast<std::uint8_t>(DrawdownCode::halt_reset),
       equity});
  set_state(operator_paused_ ? TradingState::paused
                             : (stale_ ? TradingState::reducing : TradingState::active),
            ts, events);
}

void RiskManager::pause(std::int64_t ts, std::vector<RiskEvent>& events) {
  check_timestamp(ts, "RiskManager.pause", "timestamp", kMaxObservationNs);
  if (operator_paused_) return;
  operator_paused_ = true;
  events.push_back({ts, EventType::drawdown_threshold,
                    static_cast<std::uint8_t>(DrawdownCode::paused_by_operator), drawdown_});
  if (state_ != TradingState::halted) set_state(TradingState::paused, ts, events);
}

void RiskManager::resume(std::int64_t ts, std::vector<RiskEvent>& events) {
  check_timestamp(ts, "RiskManager.resume", "timestamp", kMaxObservationNs);
  if (!operator_paused_) return;
  operator_paused_ = false;
  events.push_back({ts, EventType::drawdown_threshold,
                    static_cast<std::uint8_t>(DrawdownCode::resumed_by_operator), drawdown_});
  if (state_ != TradingState::paused) return;  // HALTED stays HALTED
  if (ts < paused_until_) return;              // a ladder or daily-loss pause still runs
  if (stopped_) {  // the drawdown stop's pause ended under the person's: re-arm the ladder now
    stopped_ = false;
    peak_ = last_equity_;
    ladder_level_ = 0;
    events.push_back({ts, EventType::drawdown_threshold,
                      static_cast<std::uint8_t>(DrawdownCode::ladder_rearmed), last_equity_});
  }
  set_state(stale_ ? TradingState::reducing : TradingState::active, ts, events);
}

void RiskManager::flatten(std::int64_t ts, std::vector<RiskEvent>& events) {
  check_timestamp(ts, "RiskManager.flatten", "timestamp", kMaxObservationNs);
  events.push_back({ts, EventType::drawdown_threshold,
                    static_cast<std::uint8_t>(DrawdownCode::flatten_by_operator), drawdown_});
  if (state_ == TradingState::halted) {
    operator_paused_ = true;
    return;
  }
  flatten_ = true;
  if (!operator_paused_) {
    operator_paused_ = true;
    set_state(TradingState::paused, ts, events);
  }
}

RiskManagerState RiskManager::snapshot() const {
  RiskManagerState s;
  s.state = state_;
  s.stale = stale_;
  s.flatten_requested = flatten_;
  s.started = started_;
  s.peak_equity = peak_;
  s.drawdown = drawdown_;
  s.high_equity = high_;
  s.drawdown_from_high = high_drawdown_;
  s.ladder_level = ladder_level_;
  s.stopped = stopped_;
  s.drawdown_warned = dd_warned_;
  s.drawdown_critical = dd_critical_;
  s.paused_until = paused_until_;
  s.last_ts = last_ts_;
  s.day = day_;
  s.day_start_equity = day_start_equity_;
  s.last_equity = last_equity_;
  s.daily_pnl = daily_pnl_;
  s.daily_pnl_warned = day_warned_;
  s.daily_pnl_critical = day_critical_;
  s.daily_loss_paused = day_paused_;
  s.window_ts.reserve(hour_max_.size());
  s.window_equity.reserve(hour_max_.size());
  for (const auto& [ts, equity] : hour_max_) {
    s.window_ts.push_back(ts);
    s.window_equity.push_back(equity);
  }
  s.ewma_variance = ewma_var_;
  s.ewma_count = ewma_count_;
  s.kelly_trades.assign(trades_.begin(), trades_.end());
  s.operator_paused = operator_paused_;
  return s;
}

void RiskManager::check_state(const RiskManagerState& s, const StateCheck& check) const {
  check.require(
      static_cast<std::uint8_t>(s.state) <= static_cast<std::uint8_t>(TradingState::halted),
      "state", "is not a trading state (code " + std::to_string(static_cast<int>(s.state)) + ")");
  check.require(s.state != TradingState::reducing || s.stale, "state",
                "is REDUCING, which only stale data leads to, but stale is false");
  check.require(!s.operator_paused || s.state == TradingState::paused ||
                    s.state == TradingState::halted,
                "state", "must be PAUSED or HALTED while operator_paused is true");
  check.require(s.ladder_level >= 0 && s.ladder_level <= 3, "ladder_level",
                "must be in 0..3, got " + std::to_string(s.ladder_level));
  check.not_nan(s.peak_equity, "peak_equity");
  check.not_nan(s.high_equity, "high_equity");
  check.require(s.drawdown >= 0.0, "drawdown", "must be >= 0, got " + format_double(s.drawdown));
  check.require(s.drawdown_from_high >= 0.0, "drawdown_from_high",
                "must be >= 0, got " + format_double(s.drawdown_from_high));
  check.not_nan(s.day_start_equity, "day_start_equity");
  check.not_nan(s.last_equity, "last_equity");
  check.not_nan(s.daily_pnl, "daily_pnl");
  check.require(s.paused_until >= 0, "paused_until",
                "must be >= 0, got " + std::to_string(s.paused_until));
  check.non_negative(s.ewma_variance, "ewma_variance");
  check.require(s.window_ts.size() == s.window_equity.size(), "window_equity",
                "has " + std::to_string(s.window_equity.size()) + " entries, window_ts has " +
                    std::to_string(s.window_ts.size()));
  for (std::size_t i = 0; i < s.window_ts.size(); ++i) {  // names built only on a failure
    if (!timestamp_in_range(s.window_ts[i], kMaxObservationNs))
      check.timestamp(s.window_ts[i], StateCheck::at("window_ts", i), kMaxObservationNs);
    if (std::isnan(s.window_equity[i]))
      check.not_nan(s.window_equity[i], StateCheck::at("window_equity", i));
    if (i > 0 && !(s.window_equity[i] < s.window_equity[i - 1])) {
      check.refuse(StateCheck::at("window_equity", i),
                   "must be below the entry before it (the window holds decreasing maxima)");
    }
  }
  if (s.started) {
    check.timestamp(s.last_ts, "last_ts", kMaxObservationNs);
    check.require(!s.window_ts.empty(), "window_ts", "is empty after an observe");
    check.require(s.day == floor_div(s.last_ts, kNsPerDay), "day",
                  "must be the UTC day of last_ts (" +
                      std::to_string(floor_div(s.last_ts, kNsPerDay)) + "), got " +
                      std::to_string(s.day));
  }
  check.require(s.kelly_trades.size() <= config_.kelly_window, "kelly_trades",
                "holds " + std::to_string(s.kelly_trades.size()) +
                    " trades, more than kelly_window (" + std::to_string(config_.kelly_window) +
                    ")");
  for (std::size_t i = 0; i < s.kelly_trades.size(); ++i) {
    if (!std::isfinite(s.kelly_trades[i]))
      check.finite(s.kelly_trades[i], StateCheck::at("kelly_trades", i));
  }
}

void RiskManager::restore(const RiskManagerState& s) {
  check_state(s, StateCheck("RiskManager.restore", ""));
  RiskManager next(*this);  // built aside: a failed allocation leaves this one as it was
  next.state_ = s.state;
  next.stale_ = s.stale;
  next.flatten_ = s.flatten_requested;
  next.started_ = s.started;
  next.peak_ = s.peak_equity;
  next.drawdown_ = s.drawdown;
  next.high_ = s.high_equity;
  next.high_drawdown_ = s.drawdown_from_high;
  next.ladder_level_ = static_cast<int>(s.ladder_level);
  next.stopped_ = s.stopped;
  next.dd_warned_ = s.drawdown_warned;
  next.dd_critical_ = s.drawdown_critical;
  next.paused_until_ = s.paused_until;
  next.last_ts_ = s.last_ts;
  next.day_ = s.day;
  next.day_start_equity_ = s.day_start_equity;
  next.last_equity_ = s.last_equity;
  next.daily_pnl_ = s.daily_pnl;
  next.day_warned_ = s.daily_pnl_warned;
  next.day_critical_ = s.daily_pnl_critical;
  next.day_paused_ = s.daily_loss_paused;
  next.hour_max_.clear();
  for (std::size_t i = 0; i < s.window_ts.size(); ++i)
    next.hour_max_.emplace_back(s.window_ts[i], s.window_equity[i]);
  next.ewma_var_ = s.ewma_variance;
  next.ewma_count_ = s.ewma_count;
  next.trades_.assign(s.kelly_trades.begin(), s.kelly_trades.end());
  next.operator_paused_ = s.operator_paused;
  *this = std::move(next);
}

}  // namespace colmena
