#include "colmena/risk_manager.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

#include "colmena/risk.hpp"

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

void RiskConfig::validate() const {
  std::string errors;
  auto check = [&](bool ok, const char* what) {
    if (!ok) errors += std::string(errors.empty() ? "" : "; ") + what;
  };
  check(kelly_multiplier >= 0.0 && kelly_multiplier <= 1.0, "kelly_multiplier must be in [0, 1]");
  check(kelly_window >= 1, "kelly_window must be >= 1");
  check(kelly_min_trades <= kelly_window, "kelly_min_trades must be <= kelly_window");
  check(kelly_prior >= 0.0 && kelly_prior <= 1.0, "kelly_prior must be in [0, 1]");
  check(max_leverage > 0.0 && std::isfinite(max_leverage), "max_leverage must be > 0");
  check(var_budget > 0.0 && std::isfinite(var_budget), "var_budget must be > 0");
  check(var_confidence > 0.5 && var_confidence < 1.0, "var_confidence must be in (0.5, 1)");
  check(var_horizon_bars >= 1.0, "var_horizon_bars must be >= 1");
  check(ewma_lambda > 0.0 && ewma_lambda < 1.0, "ewma_lambda must be in (0, 1)");
  check(min_trade_fraction >= 0.0, "min_trade_fraction must be >= 0");
  check(halt_drawdown > 0.0 && halt_drawdown < 1.0, "halt_drawdown must be in (0, 1)");
  check(halt_window_ns > 0, "halt_window must be > 0");
  check(ladder_drawdown[0] > 0.0 && ladder_drawdown[0] < ladder_drawdown[1] &&
            ladder_drawdown[1] < ladder_drawdown[2] && ladder_drawdown[2] < 1.0,
        "ladder drawdowns must increase within (0, 1)");
  check(ladder_pause_ns[0] >= 0 && ladder_pause_ns[1] >= 0 && ladder_pause_ns[2] >= 0,
        "ladder pauses must be >= 0");
  check(stale_after_ns > 0, "stale_after must be > 0");
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

  const std::int64_t day = floor_div(ts, kNsPerDay);
  if (!started_ || day != day_) {
    day_ = day;
    day_start_equity_ = equity;
    day_warned_ = day_critical_ = false;
  } else if (day_start_equity_ > 0.0) {
    const double pnl = equity / day_start_equity_ - 1.0;
    if (pnl < config_.alert_daily_pnl_warning && !day_warned_) {
      day_warned_ = true;
      events.push_back(
          {ts, EventType::alert, static_cast<std::uint8_t>(AlertCode::daily_pnl_warning), pnl});
    }
    if (pnl < config_.alert_daily_pnl_critical && !day_critical_) {
      day_critical_ = true;
      events.push_back(
          {ts, EventType::alert, static_cast<std::uint8_t>(AlertCode::daily_pnl_critical), pnl});
    }
  }

  if (state_ == TradingState::paused && ts >= paused_until_) {
    set_state(stale_ ? TradingState::reducing : TradingState::active, ts, events);
  }

  // Kill switch: drop from the maximum equity of the trailing window.
  while (!hour_max_.empty() && hour_max_.back().second <= equity) hour_max_.pop_back();
  hour_max_.emplace_back(ts, equity);
  while (hour_max_.front().first < ts - config_.halt_window_ns) hour_max_.pop_front();
  const double window_max = hour_max_.front().second;
  if (state_ != TradingState::halted && window_max > 0.0 &&
      (equity <= 0.0 || (window_max - equity) / window_max > config_.halt_drawdown)) {
    const double dd = equity <= 0.0 ? 1.0 : (window_max - equity) / window_max;
    events.push_back({ts, EventType::drawdown_threshold, 4, dd});
    set_state(TradingState::halted, ts, events);
  }

  // Circuit-breaker ladder on the drawdown from peak equity.
  if (!started_ || equity > peak_) {
    peak_ = equity;
    ladder_level_ = 0;
    dd_warned_ = dd_critical_ = false;
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
      paused_until_ = std::max(paused_until_, ts + config_.ladder_pause_ns[level - 1]);
      if (level == 3) flatten_ = true;
      set_state(TradingState::paused, ts, events);
    }
  }
  if (drawdown_ > config_.alert_drawdown_warning && !dd_warned_) {
    dd_warned_ = true;
    events.push_back(
        {ts, EventType::alert, static_cast<std::uint8_t>(AlertCode::drawdown_warning), drawdown_});
  }
  if (drawdown_ > config_.alert_drawdown_critical && !dd_critical_) {
    dd_critical_ = true;
    events.push_back(
        {ts, EventType::alert, static_cast<std::uint8_t>(AlertCode::drawdown_critical), drawdown_});
  }
  started_ = true;
}

void RiskManager::observe_data_age(std::int64_t ts, std::int64_t newest_candle_ts,
                                   std::vector<RiskEvent>& events) {
  const std::int64_t age = ts - newest_candle_ts;
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
  if (trades_.size() < config_.kelly_min_trades || trades_.empty()) return config_.kelly_prior;
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
  const double w = static_cast<double>(wins) / static_cast<double>(trades_.size());
  if (losses == 0) return wins > 0 ? 1.0 : 0.0;
  if (wins == 0) return 0.0;
  const double payoff =
      (win_sum / static_cast<double>(wins)) / (loss_sum / static_cast<double>(losses));
  return std::clamp(w - (1.0 - w) / payoff, 0.0, 1.0);
}

double RiskManager::bar_volatility() const noexcept {
  return ewma_count_ >= kMinVolatilityBars ? std::sqrt(ewma_var_)
                                           : std::numeric_limits<double>::quiet_NaN();
}

Decision RiskManager::decide(double signal, double current) const {
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
  if (!std::isfinite(signal)) {
    d.verdict = Verdict::no_signal;
    d.target = current;
    return d;
  }
  d.requested = std::clamp(signal, -1.0, 1.0) * config_.kelly_multiplier * kelly_fraction();
  double target = d.requested;
  d.verdict = Verdict::accepted;
  if (std::abs(target) > config_.max_leverage) {
    target = sign(target) * config_.max_leverage;
    d.verdict = Verdict::resized_leverage;
  }
  const double vol = bar_volatility();
  const double unit_var = std::isfinite(vol) ? -normal_quantile(1.0 - config_.var_confidence) *
                                                   vol * std::sqrt(config_.var_horizon_bars)
                                             : std::numeric_limits<double>::infinity();
  if (std::abs(target) * unit_var > config_.var_budget || !std::isfinite(unit_var)) {
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
  d.target = target;
  const bool closing = target == 0.0 && current != 0.0;
  if (std::abs(target - current) < config_.min_trade_fraction && !closing) {
    if (d.verdict == Verdict::accepted) d.verdict = Verdict::skipped_small_change;
    d.target = current;
    return d;
  }
  d.place_order = true;
  return d;
}

double RiskManager::allowed_quantity(double quantity, double position) const noexcept {
  if (state_ == TradingState::active) return quantity;
  if (position == 0.0 || sign(quantity) == sign(position)) return 0.0;
  return sign(quantity) * std::min(std::abs(quantity), std::abs(position));
}

void RiskManager::record_trade(double pnl) {
  if (!std::isfinite(pnl)) return;
  trades_.push_back(pnl);
  while (trades_.size() > config_.kelly_window) trades_.pop_front();
}

void RiskManager::reset_halt(std::int64_t ts, double equity, std::vector<RiskEvent>& events) {
  if (state_ != TradingState::halted) return;
  hour_max_.clear();
  hour_max_.emplace_back(ts, equity);
  peak_ = equity;
  drawdown_ = 0.0;
  ladder_level_ = 0;
  paused_until_ = 0;
  flatten_ = false;
  set_state(stale_ ? TradingState::reducing : TradingState::active, ts, events);
}

}  // namespace colmena
