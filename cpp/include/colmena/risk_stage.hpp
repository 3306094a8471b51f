#pragma once
/// The sizing-and-risk half of the trading loop: what the live risk service runs.
///
/// Holds the RiskManager (risk mode), the shadow book that feeds its Kelly estimate and the
/// bookkeeping of the last order's unfilled remainder. It never touches the account: it reads the
/// account from the messages of the ExecutionStage (trading_messages.hpp) and answers each bar
/// with a Decision and, when the position has to move, an Order for the next bar's open.
///
/// Per bar t (timestamps must increase; calls out of this order throw std::logic_error):
///  - open(bar):  the data age at the open of bar t (a gap longer than stale_after turns ACTIVE
///    into REDUCING); when a new model takes over, the model-bound estimators restart (the Kelly
///    window and the shadow book); the shadow book's order fills at the bar's open. Returns the
///    trading state at the open: the ExecutionStage's reduce-only clip reads it (the open can only
///    turn ACTIVE into REDUCING, so an Order's own reduce_only flag is never looser).
///  - on_execution(report): required when an order was outstanding, before close: the unfilled
///    part of the order (volume-limited, or all of it on a bar without volume) becomes the
///    remainder; a report for another order is rejected.
///  - close(bar, account, action, signal): the shadow book's borrow; the risk manager observes the
///    account's equity at the close, the drawdowns and the bar's log return; then the decision for
///    bar t + 1: `decide` sizes the signal (quarter Kelly, leverage and VaR caps, breakers);
///    `hold` keeps the position and resubmits the remainder while the risk state lets it through;
///    `gated_flat` and `end_of_run` target flat; a halt or a drawdown stop flattens whatever the
///    action. The Order (when the target moves the position and `can_order`) fills at the next
///    open, never earlier.
///
/// The shadow book: a PaperExecutor with unit starting equity follows the signal at unit
/// exposure (target = the clamped signal, the same fees, slippage and borrow, no volume limit),
/// whatever the sizing did. Its closed round trips feed the Kelly estimate, so the estimate never
/// depends on the position it sizes: a Kelly fraction of zero closes the real position but the
/// estimate keeps learning (no absorbing state; SPEC "Honesty rules").
///
/// Pass-through mode (no RiskManager; the evolution's fitness and the baselines): the target is
/// the clamped signal itself, changes below `min_trade_fraction` are skipped, no breaker, pause or
/// Kelly sizing applies and the state stays ACTIVE.
///
/// Each call checks its input before it changes anything: a call that throws leaves the stage as
/// it was. Sources: the design documents' execution layer (seeds/001, "RiskManager: Kelly 1/4,
/// VaR, CVaR"; the thresholds in SPEC.md) and risk_manager.hpp for the rules themselves.
///
/// Thread safety: as TradingLoop (trading_loop.hpp): sequential state for one thread; from
/// Python every call keeps the GIL, so concurrent calls are serialised whole.
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <vector>

#include "colmena/paper_executor.hpp"
#include "colmena/risk_manager.hpp"
#include "colmena/trading_messages.hpp"

namespace colmena {

/// What RiskStage::close decided at a bar's close.
struct RiskDecision {
  Decision decision;  ///< requested and final target, verdict (the reason), place_order
  double kelly = std::numeric_limits<double>::quiet_NaN();  ///< fraction used; NaN: pass-through
  TradingState state = TradingState::active;                ///< after observing the close
  std::optional<Order> order;                               ///< for the next bar's open
};

/// Everything of a RiskStage that its future behaviour depends on (RiskStage::snapshot /
/// restore), with the configuration it was taken under. Field names are those of the Python
/// snapshot (colmena.execution.trading_loop.RiskStageSnapshot). Left out as per-call scratch:
/// the shadow book's closed trades of the last open (recorded into the Kelly window within that
/// open) and the last RiskDecision (returned by close, rewritten by the next).
struct RiskStageState {
  std::int64_t version = kStageStateVersion;
  // The configuration, compared field by field on restore.
  ExecutionConfig execution;        ///< the market type and the shadow book's costs
  std::optional<RiskConfig> risk;   ///< empty: pass-through mode
  double min_trade_fraction = 0.0;  ///< pass-through band (risk mode: risk->min_trade_fraction)
  std::int64_t bar_ns = 0;          ///< bar length, ns
  // The state.
  std::optional<RiskManagerState> risk_manager;  ///< present exactly in risk mode
  PaperExecutorState shadow;                     ///< the shadow book (unit starting cash)
  std::size_t bars = 0;                          ///< bars closed
  bool is_open = false;                          ///< a bar was opened and not yet closed
  std::int64_t open_ts = 0;          ///< open time of the bar opened last (0 before the first)
  std::int64_t last_ts = 0;          ///< open time of the bar closed last (0 before the first)
  double last_close = 0.0;           ///< close price of the bar closed last (0 before the first)
  std::uint64_t last_order_id = 0;   ///< ids issued so far (the next order gets this + 1)
  std::optional<Order> outstanding;  ///< sent, not yet reported on
  double remainder = 0.0;            ///< unfilled part of the last order, signed base units
  double shadow_pending = 0.0;       ///< the shadow book's order for the next open, base units
};

/// Throws std::invalid_argument naming `where` unless `signal` is NaN (no signal) or in [-1, 1].
void check_signal(double signal, const char* where);
/// Throws std::invalid_argument naming `where` unless `action` is a defined Action.
void check_action(Action action, const char* where);
/// The signal as the loop reads it from a series: non-finite -> NaN (none), else clamped to
/// [-1, 1] (run_backtest and simulate_targets).
double series_signal(double signal) noexcept;

class RiskStage {
 public:
  /// Risk mode: sizing, limits and breakers of `risk`; `execution` gives the market type (spot
  /// clamps signals to [0, 1]) and the shadow book's costs. Throws std::invalid_argument on an
  /// invalid config or bar_ns <= 0.
  RiskStage(const ExecutionConfig& execution, const RiskConfig& risk, std::int64_t bar_ns);
  /// Pass-through mode: changes below `min_trade_fraction` (fraction of equity, >= 0) are skipped.
  RiskStage(const ExecutionConfig& execution, double min_trade_fraction, std::int64_t bar_ns);

  /// The open of `bar` (see the file comment). `new_model` restarts the model-bound estimators
  /// (ignored in pass-through mode). Events are appended. Returns the trading state at the open.
  /// Throws std::invalid_argument when bar.ts does not increase.
  /// `received_ts` (ns; 0: not known) as in close(): the data age at the open is the later of
  /// the gap since the previous bar and the candle's delay after its close.
  TradingState open(const Bar& bar, bool new_model, std::vector<RiskEvent>& events,
                    std::int64_t received_ts = 0);

  /// The execution of the outstanding order. Throws std::invalid_argument when no order is
  /// outstanding, when the report is for another order or another bar, or when it is
  /// inconsistent (non-finite, or nothing filled without an error).
  void on_execution(const ExecutionReport& report);

  /// The close of the opened bar and the decision for the next open (see the file comment).
  /// `account` is the ExecutionStage's snapshot at this close; `signal` is NaN (none) or in
  /// [-1, 1] and read only for Action::decide; `can_order` false (the last bar) submits nothing.
  /// Events are appended. Throws std::invalid_argument when the bar or the account is not the
  /// opened bar's, the signal or action is invalid, an outstanding order was not reported, or
  /// (risk mode) the account's equity is NaN.
  /// `received_ts` (ns; 0: not known, as in a backtest) is when the candle was received: more
  /// than the risk config's stale_after after the bar's close makes the data stale at this
  /// decision (RiskManager::observe_data_age: REDUCING, a data_feed_silent alert), and a fresh
  /// candle ends it.
  const RiskDecision& close(const Bar& bar, const AccountSnapshot& account, Action action,
                            double signal, bool can_order, std::vector<RiskEvent>& events,
                            std::int64_t received_ts = 0);

  /// The operator's HALT at `ts_ns` (RiskManager::halt): the next open's state is HALTED (only
  /// reducing fills) and every close flattens until the risk manager's reset_halt. Callable
  /// between any two calls. Events are appended. Throws std::logic_error in pass-through mode,
  /// std::invalid_argument for a time outside the time range.
  /// `reason` and `value` as RiskManager::halt (the account's kill switch over several symbols).
  void halt(std::int64_t ts_ns, std::vector<RiskEvent>& events,
            DrawdownCode reason = DrawdownCode::halted_by_operator,
            double value = std::numeric_limits<double>::quiet_NaN());

  /// A person's control action between any two calls (RiskManager::pause, resume, flatten,
  /// reset_halt at the last observed equity); events appended. Throws std::logic_error in
  /// pass-through mode, std::invalid_argument for a time outside the time range.
  void pause(std::int64_t ts_ns, std::vector<RiskEvent>& events);
  void resume(std::int64_t ts_ns, std::vector<RiskEvent>& events);
  void flatten(std::int64_t ts_ns, std::vector<RiskEvent>& events);
  void reset_halt(std::int64_t ts_ns, std::vector<RiskEvent>& events);

  /// The state and the configuration it was taken under (RiskStageState). Allowed at any point,
  /// also between open and close: a stage restored there continues with on_execution or close.
  RiskStageState snapshot() const;
  /// Continue from `state`. Everything is checked before anything changes: on a throw
  /// (std::invalid_argument "RiskStage.restore: <field> ...", naming the snapshot's field) the
  /// stage is as it was. Refused: another version; a configuration that differs from this
  /// stage's in any field (execution.*, risk.*, min_trade_fraction, bar_ns; the snapshot must
  /// come from a stage built with the same settings); a risk manager in pass-through mode or
  /// none in risk mode; a state the stage could not have reached (see the checks of
  /// RiskManager::check_state and PaperExecutor::check_state, times outside the time range, an
  /// open bar not after the last closed one, an outstanding order that is not the last one
  /// issued at the last close, non-finite quantities, a shadow order in pass-through mode).
  void restore(const RiskStageState& state);

  /// The risk manager (nullptr in pass-through mode).
  const RiskManager* risk() const noexcept { return risk_ ? &*risk_ : nullptr; }
  RiskManager* risk() noexcept { return risk_ ? &*risk_ : nullptr; }
  const PaperExecutor& shadow() const noexcept { return shadow_; }
  /// The order sent and not yet reported on.
  const std::optional<Order>& outstanding() const noexcept { return outstanding_; }
  /// Unfilled part of the last order, signed base units (resubmitted on a hold bar).
  double remainder() const noexcept { return remainder_; }
  /// Bars closed so far.
  std::size_t bars() const noexcept { return bars_; }
  /// Open time of the last bar opened (0 before the first).
  std::int64_t last_open_ts() const noexcept { return open_ts_; }
  bool is_open() const noexcept { return opened_; }
  std::int64_t bar_ns() const noexcept { return bar_ns_; }

 private:
  RiskManager& checked_risk(const char* where);
  ExecutionConfig shadow_config() const;
  double clamp_signal(double signal) const noexcept;
  void decide_shadow(Action action, double signal, double close);

  ExecutionConfig execution_;
  std::optional<RiskManager> risk_;
  double min_trade_fraction_ = 0.0;
  std::int64_t bar_ns_ = 0;
  PaperExecutor shadow_;
  std::size_t bars_ = 0;
  bool opened_ = false;
  std::int64_t open_ts_ = 0;  // the bar opened last
  std::int64_t last_ts_ = 0;  // the bar closed last
  double last_close_ = 0.0;
  std::uint64_t last_id_ = 0;  // ids issued so far
  std::optional<Order> outstanding_;
  double remainder_ = 0.0;       // unfilled part of the last order
  double shadow_pending_ = 0.0;  // shadow book's order for the next open
  std::vector<ClosedTrade> shadow_closed_;
  RiskDecision result_;
};

}  // namespace colmena
