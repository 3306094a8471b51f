#pragma once
/// Bar-by-bar risk control: trading state machine, drawdown circuit breakers, position sizing.
///
/// Thresholds follow the design documents (all configurable):
///  - kill switch: equity falls more than `halt_drawdown` (20%) below its maximum of the last
///    `halt_window_ns` (1 h): HALTED, flatten, stay halted until reset_halt() (a person);
///  - circuit-breaker ladder on the drawdown from the ladder's reference equity: over 5% PAUSED
///    1 h, over 10% PAUSED 4 h, over 15% PAUSED 24 h and flatten (the drawdown stop). A level
///    fires once per excursion. The reference equity is the highest equity since the ladder was
///    last armed; the ladder re-arms (reference = equity at that moment, levels cleared) at a new
///    high and when the pause of a drawdown stop ends, so a slow bleed after a stop is caught
///    again instead of never firing until a new all-time high;
///  - daily loss: the UTC-day PnL (equity against the last close of the previous UTC day) below
///    `daily_loss_pause` (-3%) pauses until the next UTC midnight (reduce-only, no flatten);
///  - stale data (newest candle older than `stale_after_ns`, 5 min): REDUCING until fresh.
/// While PAUSED or REDUCING only exposure-reducing orders pass; while HALTED only flattening.
///
/// Sizing (Kelly 1956; Thorp, "The Kelly criterion in blackjack, sports betting and the stock
/// market", 2006): f_hat = W - (1 - W) / R from the last `kelly_window` closed round trips, W the
/// share of winning trades and R = mean win / mean loss. The estimate is shrunk toward the prior
/// (a Bayesian-style weighted mean with `kelly_prior_trades` pseudo-trades of fraction
/// `kelly_prior`): f = (n f_hat + m f0) / (n + m); before `kelly_min_trades` trades f = f0. The
/// trades are recorded by the caller from the signal's own unit-exposure book (see RiskStage),
/// not from the sized position, so a zero fraction never stops the estimate from updating: there
/// is no absorbing state, and with m > 0 and f0 > 0 the fraction never reaches 0 at all
/// (f >= m f0 / (kelly_window + m)).
/// Target exposure (signed fraction of equity) = signal * kelly_multiplier * f, then capped by
/// `max_leverage` and by the VaR budget: the position's parametric VaR at `var_confidence` over
/// `var_horizon_bars` bars, from a RiskMetrics EWMA volatility of bar log returns (J.P. Morgan,
/// RiskMetrics Technical Document, 1996), may not exceed `var_budget` of equity.
///
/// Thread safety: none inside (sequential state of one account). From Python every call keeps
/// the GIL, so concurrent calls are serialised whole.
#include <cstddef>
#include <cstdint>
#include <deque>
#include <string>
#include <vector>

#include "colmena/state_check.hpp"

namespace colmena {

enum class TradingState : std::uint8_t { active = 0, reducing = 1, paused = 2, halted = 3 };

/// Why a target came out as it did.
enum class Verdict : std::uint8_t {
  accepted = 0,              ///< sized target passed every limit
  resized_leverage = 1,      ///< cut to max_leverage
  resized_var = 2,           ///< cut to the VaR budget
  reduce_only_paused = 3,    ///< PAUSED: the part that would add exposure was dropped
  reduce_only_stale = 4,     ///< REDUCING (stale data): the part that would add exposure dropped
  flatten_halted = 5,        ///< HALTED: flatten
  flatten_stop = 6,          ///< a requested flatten (the 15% drawdown stop, or an operator's)
  rejected_halted = 7,       ///< HALTED and already flat: nothing to do
  no_signal = 8,             ///< no valid market state / signal at this bar: hold
  skipped_small_change = 9,  ///< change below min_trade_fraction: hold
  zero_kelly = 10,           ///< the Kelly fraction is 0: target flat
  hold = 11,                 ///< between decisions (decision interval): hold
  gated_flat = 12,           ///< the model failed validation (gated fold): stay flat
  end_of_run = 13,           ///< last decision of the run: close the position, costs charged
};

/// What the caller asks of decide() at a bar.
enum class Action : std::uint8_t {
  hold = 0,        ///< not a decision bar: hold (risk-driven flattening still happens)
  decide = 1,      ///< a decision bar: size the signal
  gated_flat = 2,  ///< a decision bar of a gated model: target flat
  end_of_run = 3,  ///< the last bar an order can fill after: target flat
};

/// Codes of EventType::drawdown_threshold events.
enum class DrawdownCode : std::uint8_t {
  ladder_pause_1 = 1,      ///< first ladder level (5%)
  ladder_pause_2 = 2,      ///< second level (10%)
  ladder_stop = 3,         ///< third level (15%): pause and flatten
  kill_switch = 4,         ///< over 20% within the window: HALTED
  daily_loss = 5,          ///< UTC-day PnL below daily_loss_pause: paused until the next UTC day
  ladder_rearmed = 6,      ///< the ladder re-armed after a drawdown stop (value: reference equity)
  halted_by_operator = 7,  ///< a person halted trading (RiskManager::halt): HALTED, flatten
  account_kill_switch = 8,  ///< the account's total equity (every symbol) over the kill switch
  paused_by_operator = 9,    ///< a person paused trading (RiskManager::pause): PAUSED
  resumed_by_operator = 10,  ///< a person ended their pause (RiskManager::resume)
  flatten_by_operator = 11,  ///< a person asked to flatten (RiskManager::flatten): PAUSED
  halt_reset = 12,           ///< a person ended a HALT (RiskManager::reset_halt); value: equity
};

enum class EventType : std::uint8_t {
  trade_executed = 0,      ///< value: signed quantity filled
  regime_changed = 1,      ///< code: new TradingState; value: drawdown at the time
  drawdown_threshold = 2,  ///< code: DrawdownCode; value: the drawdown (or equity)
  alert = 3,               ///< code: AlertCode; value: the measured quantity
  error = 4,               ///< code: ErrorCode; value: context
};

enum class AlertCode : std::uint8_t {
  drawdown_warning = 0,     ///< drawdown from the all-time high over 10%
  drawdown_critical = 1,    ///< over 15%
  daily_pnl_warning = 2,    ///< UTC-day PnL below -2%
  daily_pnl_critical = 3,   ///< below -3%
  data_feed_silent = 4,     ///< no candle for more than 5 min (value: seconds)
};

enum class ErrorCode : std::uint8_t {
  no_volume = 0,         ///< order not filled: the fill bar traded no volume
  non_finite_price = 1,  ///< order not filled: bad price
};

const char* trading_state_name(TradingState state) noexcept;
const char* verdict_name(Verdict verdict) noexcept;
const char* event_type_name(EventType type) noexcept;
const char* action_name(Action action) noexcept;
const char* error_code_name(ErrorCode code) noexcept;
/// Name of a RiskEvent's code for its type: the TradingState of regime_changed, the DrawdownCode
/// of drawdown_threshold ("ladder_pause_1", ...), the AlertCode of alert, the ErrorCode of error;
/// "" for trade_executed; "unknown" for a code the type does not define.
const char* event_code_name(EventType type, std::uint8_t code) noexcept;

/// Longest VaR horizon, bars: 10 years of one-second bars.
inline constexpr double kMaxVarHorizonBars = 315'360'000.0;

struct RiskConfig {
  double kelly_multiplier = 0.25;
  std::size_t kelly_window = 50;
  std::size_t kelly_min_trades = 20;
  double kelly_prior = 0.5;
  double kelly_prior_trades = 10.0;  ///< weight of the prior, in pseudo-trades (>= 0)
  double max_leverage = 1.0;
  double var_budget = 0.02;
  double var_confidence = 0.99;
  double var_horizon_bars = 1440.0;  ///< in [1, kMaxVarHorizonBars]
  double ewma_lambda = 0.999;
  double min_trade_fraction = 0.01;
  double halt_drawdown = 0.20;
  /// Durations, ns: the window in (0, kMaxDurationNs], the pauses in [0, kMaxDurationNs], the
  /// stale limit in (0, kMaxDurationNs] (10 years, time_range.hpp), so that `ts +- duration`
  /// never overflows.
  std::int64_t halt_window_ns = 3'600'000'000'000;
  double ladder_drawdown[3] = {0.05, 0.10, 0.15};
  std::int64_t ladder_pause_ns[3] = {3'600'000'000'000, 14'400'000'000'000, 86'400'000'000'000};
  std::int64_t stale_after_ns = 300'000'000'000;
  double daily_loss_pause = -0.03;  ///< UTC-day PnL below this pauses until the next UTC day
  double alert_drawdown_warning = 0.10;
  double alert_drawdown_critical = 0.15;
  double alert_daily_pnl_warning = -0.02;
  double alert_daily_pnl_critical = -0.03;

  /// Throws std::invalid_argument naming every bad field.
  void validate() const;
};

/// Everything of a RiskManager that its future behaviour depends on, besides its RiskConfig
/// (RiskManager::snapshot / restore). Field names are those of the Python snapshot
/// (colmena.execution.trading_loop.RiskManagerSnapshot); units as in the class.
struct RiskManagerState {
  TradingState state = TradingState::active;
  bool stale = false;               ///< the data was stale at the last data-age check
  bool flatten_requested = false;   ///< a drawdown stop waits for the position to be flat
  bool started = false;             ///< observe() has run at least once
  double peak_equity = 0.0;         ///< the ladder's reference equity (quote currency)
  double drawdown = 0.0;            ///< drawdown from peak_equity at the last observe (fraction)
  double high_equity = 0.0;         ///< all-time high of equity (quote currency)
  double drawdown_from_high = 0.0;  ///< drawdown from high_equity (fraction)
  std::int64_t ladder_level = 0;    ///< ladder levels fired in this excursion, 0..3
  bool stopped = false;          ///< a drawdown stop's pause runs: the ladder re-arms when it ends
  bool drawdown_warned = false;  ///< drawdown_warning alert given since the last high
  bool drawdown_critical = false;   ///< drawdown_critical alert given since the last high
  std::int64_t paused_until = 0;    ///< end of the pause, ns since the epoch (0: none yet)
  std::int64_t last_ts = 0;         ///< time of the last observe, ns
  std::int64_t day = 0;             ///< UTC day of the last observe (days since the epoch)
  double day_start_equity = 0.0;    ///< the previous UTC day's last equity (quote currency)
  double last_equity = 0.0;         ///< equity at the last observe (quote currency)
  double daily_pnl = 0.0;           ///< UTC-day PnL at the last observe (fraction)
  bool daily_pnl_warned = false;    ///< daily_pnl_warning alert given this UTC day
  bool daily_pnl_critical = false;  ///< daily_pnl_critical alert given this UTC day
  bool daily_loss_paused = false;   ///< the daily-loss pause fired this UTC day
  /// The kill switch's window, oldest first: the times (ns) and equities of the running maxima
  /// of the last halt_window_ns (equities strictly decreasing; the front is the window maximum).
  std::vector<std::int64_t> window_ts;
  std::vector<double> window_equity;
  double ewma_variance = 0.0;        ///< RiskMetrics EWMA variance of bar log returns
  std::size_t ewma_count = 0;        ///< finite bar log returns seen
  std::vector<double> kelly_trades;  ///< net PnL of the Kelly window's round trips, oldest first
  bool operator_paused = false;  ///< a person's pause holds (PAUSED, or HALTED under it)
};

struct RiskEvent {
  std::int64_t ts = 0;
  EventType type = EventType::alert;
  std::uint8_t code = 0;
  double value = 0.0;
};

struct Decision {
  double requested = 0.0;  ///< signal * Kelly fraction, before limits (fraction of equity)
  double target = 0.0;     ///< final target exposure, signed fraction of equity
  Verdict verdict = Verdict::no_signal;
  bool place_order = false;  ///< false: hold the current position
};

/// Settle a sized `target` against the `current` exposure (both signed fractions of equity): a
/// change under `min_trade_fraction` holds the position (verdict accepted becomes
/// skipped_small_change), except that closing a position is always traded.
void settle_target(Decision& decision, double target, double current,
                   double min_trade_fraction) noexcept;

/// The decision without risk sizing, limits or breakers (the fitness, the baselines and the
/// shadow book): the target is `signal` itself (already clamped by the caller); `hold` keeps the
/// position, `gated_flat` and `end_of_run` target flat, a NaN signal decides nothing.
Decision pass_through_decision(Action action, double signal, double current,
                               double min_trade_fraction) noexcept;

/// The reduce-only clip (PAUSED, REDUCING, HALTED): the part of an order of `quantity` that
/// moves `position` toward zero without crossing it (both signed base units); 0 when the order
/// would add exposure or the position is flat.
double reduce_only_quantity(double quantity, double position) noexcept;

class RiskManager {
 public:
  explicit RiskManager(const RiskConfig& config);

  /// Mark-to-market at time `ts_ns` (bar close): updates peaks, the 1-h window, the ladder, pause
  /// expiry, the EWMA volatility (from `bar_log_return`, ignored when not finite) and alerts.
  /// Events are appended to `events`. Timestamps must not decrease and must lie in
  /// [kMinTimestampNs, kMaxObservationNs] (time_range.hpp; std::invalid_argument otherwise).
  void observe(std::int64_t ts_ns, double equity, double bar_log_return,
               std::vector<RiskEvent>& events);

  /// Data freshness at `ts_ns`: `newest_candle_ts_ns` older than stale_after -> REDUCING until a
  /// fresh candle (unless PAUSED or HALTED, which take precedence). Both timestamps must lie in
  /// [kMinTimestampNs, kMaxObservationNs] (time_range.hpp; std::invalid_argument otherwise).
  void observe_data_age(std::int64_t ts_ns, std::int64_t newest_candle_ts_ns,
                        std::vector<RiskEvent>& events);

  /// Target for a signal in [-1, 1] (NaN: no valid signal) given the current exposure (signed
  /// fraction of equity). Same as decide(Action::decide, signal, current_fraction).
  Decision decide(double signal, double current_fraction) const;

  /// The decision for `action` at a bar. HALTED (flatten) and a pending drawdown stop take
  /// precedence over every action; `hold` keeps the position; `gated_flat` and `end_of_run`
  /// target flat.
  Decision decide(Action action, double signal, double current_fraction) const;

  /// Clip an order of `quantity` against position `position` to what the state allows now
  /// (reduce-only in PAUSED / REDUCING / HALTED).
  double allowed_quantity(double quantity, double position) const noexcept;

  /// A closed round-trip trade's net PnL (any currency unit), for the Kelly estimate.
  void record_trade(double pnl);

  /// A new model takes over (a walk-forward fold): forget the trades of the Kelly window. The
  /// account state (equity peaks, ladder, pauses, a HALT) and the market's EWMA volatility
  /// carry over.
  void reset_model_estimates() noexcept { trades_.clear(); }
  std::size_t kelly_trades() const noexcept { return trades_.size(); }

  /// A person halts trading (the operator's HALT): HALTED exactly as the kill switch leaves it
  /// (every decision flattens, only reducing fills pass, until reset_halt), with a
  /// drawdown_threshold event of code halted_by_operator (value: the drawdown from the ladder's
  /// reference equity) and the regime change. Nothing happens when already HALTED. `ts_ns` in
  /// [kMinTimestampNs, kMaxObservationNs] (std::invalid_argument otherwise).
  /// `reason` account_kill_switch: the halt of the account's kill switch on its total equity over
  /// several symbols (the event's value is then `value`, the account's drawdown); any other
  /// reason than these two is std::invalid_argument.
  void halt(std::int64_t ts_ns, std::vector<RiskEvent>& events,
            DrawdownCode reason = DrawdownCode::halted_by_operator,
            double value = std::numeric_limits<double>::quiet_NaN());

  /// Manual reset of a HALT by a person: back to ACTIVE (PAUSED under a person's pause,
  /// REDUCING on stale data), peaks restart at `equity`, with a drawdown_threshold event of code
  /// halt_reset (value: `equity`). Nothing happens when not HALTED.
  /// `ts_ns` in [kMinTimestampNs, kMaxObservationNs] (std::invalid_argument otherwise).
  void reset_halt(std::int64_t ts_ns, double equity, std::vector<RiskEvent>& events);

  /// A person pauses trading (the operator's PAUSE, the design documents' safe mode): PAUSED,
  /// only exposure-reducing orders pass, until resume(), whatever the end of a ladder or
  /// daily-loss pause. Under a HALT the pause is kept for after the reset. A drawdown_threshold
  /// event of code paused_by_operator (value: the drawdown from the ladder's reference) and the
  /// regime change; nothing happens when already paused by a person.
  /// `ts_ns` in [kMinTimestampNs, kMaxObservationNs] (std::invalid_argument otherwise).
  void pause(std::int64_t ts_ns, std::vector<RiskEvent>& events);

  /// A person ends their pause: back to ACTIVE (REDUCING on stale data), or still PAUSED while a
  /// ladder or daily-loss pause runs (until its end, as without the person's pause); HALTED
  /// stays HALTED. An event of code resumed_by_operator; nothing happens without their pause.
  void resume(std::int64_t ts_ns, std::vector<RiskEvent>& events);

  /// A person asks to flatten: the person's pause (pause()) and a flatten at the next decision
  /// (verdict flatten_stop, kept until the position is flat, as the drawdown stop's), with an
  /// event of code flatten_by_operator. Under a HALT the HALT flattens already (event only).
  void flatten(std::int64_t ts_ns, std::vector<RiskEvent>& events);

  /// Equity at the last observe (quote currency; 0 before the first).
  double last_equity() const noexcept { return last_equity_; }
  /// A person's pause holds (pause() or flatten() without resume() since).
  bool operator_paused() const noexcept { return operator_paused_; }

  TradingState state() const noexcept { return state_; }
  /// Drawdown from the ladder's reference equity (fraction).
  double drawdown() const noexcept { return drawdown_; }
  /// Reference equity of the ladder (the highest equity since it was last armed).
  double peak_equity() const noexcept { return peak_; }
  /// Drawdown from the all-time high of equity (fraction); the drawdown alerts use it.
  double drawdown_from_high() const noexcept { return high_drawdown_; }
  /// UTC-day PnL at the last observe (fraction of the previous day's last equity).
  double daily_pnl() const noexcept { return daily_pnl_; }
  double kelly_fraction() const noexcept;
  double bar_volatility() const noexcept;
  std::int64_t paused_until() const noexcept { return paused_until_; }
  /// True once after the 15% ladder level fired (flatten at the next decision).
  bool flatten_requested() const noexcept { return flatten_; }
  void clear_flatten() noexcept { flatten_ = false; }
  const RiskConfig& config() const noexcept { return config_; }

  /// The state (RiskManagerState) that, with the config, determines everything it does next.
  RiskManagerState snapshot() const;
  /// Throws std::invalid_argument "<where>: <path><field> ..." naming the first field of `state`
  /// that this manager could not have reached under its config: a NaN equity or drawdown, a
  /// non-finite volatility or trade PnL, an unknown trading state, a ladder level outside 0..3,
  /// REDUCING without stale data, a window whose lengths differ, which is empty after an
  /// observe, whose equities do not strictly decrease or whose times lie outside the time range,
  /// more Kelly trades than kelly_window, a day that is not the last observe's UTC day.
  void check_state(const RiskManagerState& state, const StateCheck& check) const;
  /// Continue from `state` (checked first with check_state; on a throw nothing changes).
  void restore(const RiskManagerState& state);

 private:
  void set_state(TradingState next, std::int64_t ts, std::vector<RiskEvent>& events);

  RiskConfig config_;
  TradingState state_ = TradingState::active;
  bool stale_ = false;
  bool flatten_ = false;
  bool started_ = false;
  double peak_ = 0.0;
  double drawdown_ = 0.0;
  double high_ = 0.0;
  double high_drawdown_ = 0.0;
  int ladder_level_ = 0;
  bool stopped_ = false;  // a drawdown stop's pause is running: re-arm the ladder when it ends
  bool dd_warned_ = false, dd_critical_ = false;
  std::int64_t paused_until_ = 0;
  std::int64_t last_ts_ = 0;
  std::int64_t day_ = 0;
  double day_start_equity_ = 0.0;
  double last_equity_ = 0.0;
  double daily_pnl_ = 0.0;
  bool day_warned_ = false, day_critical_ = false, day_paused_ = false;
  std::deque<std::pair<std::int64_t, double>> hour_max_;  // monotonic: decreasing equity
  double ewma_var_ = 0.0;
  std::size_t ewma_count_ = 0;
  std::deque<double> trades_;
  bool operator_paused_ = false;
};

}  // namespace colmena
