#pragma once
/// The trading loop: the one implementation of the bar-by-bar path from a decision signal to
/// fills. The backtest (run_backtest), the fitness and baseline evaluation (simulate_targets) and,
/// candle by candle, the live services all step it.
///
/// It is the composition of two halves that the live services run apart, exchanging the messages
/// of trading_messages.hpp: the RiskStage (sizing, limits, breakers, the shadow book, the
/// remainder; risk_stage.hpp) and the ExecutionStage (the account and the pending order;
/// execution_stage.hpp). One call to step() per bar t, oldest first, is exactly:
///  1. open of bar t: RiskStage::open (the data age; when a new model takes over at this bar, the
///     model-bound estimators restart: the Kelly window and the shadow book), then
///     ExecutionStage::open with the risk state at this open: the pending order, decided at the
///     close of bar t - 1, fills at the open of bar t, clipped by the risk state (reduce-only
///     while PAUSED, REDUCING or HALTED), by the bar's volume (max_participation) and, on a spot
///     market, at a flat position. Never earlier. Its report goes to RiskStage::on_execution.
///  2. close of bar t: ExecutionStage::close (the borrow cost of a short position for the time
///     since the previous close; mark to market), then RiskStage::close: the risk manager
///     observes equity, drawdowns and volatility, and
///  3. decides at the close of bar t (Action): `decide` sizes the signal; `hold` keeps the
///     position and resubmits the unfilled remainder of the last order (a volume-limited partial
///     fill or a bar without volume) while the risk state lets it through; `gated_flat` and
///     `end_of_run` target flat. The order goes to ExecutionStage::submit and fills at the next
///     step's open.
///
/// Without a RiskManager (pass-through mode, for fitness and baselines) the target is the clamped
/// signal itself and no breaker, pause or Kelly sizing applies.
///
/// Thread safety: none inside; a TradingLoop is one account's sequential state and is meant to
/// be driven by one thread. From Python every method keeps the GIL for its whole call (none
/// releases it), so calls from several Python threads are serialised whole and cannot tear its
/// state; their order is the callers' business (out-of-order bars throw std::logic_error).
#include <cstddef>
#include <cstdint>
#include <optional>
#include <vector>

#include "colmena/execution_stage.hpp"
#include "colmena/paper_executor.hpp"
#include "colmena/risk_manager.hpp"
#include "colmena/risk_stage.hpp"
#include "colmena/trading_messages.hpp"

namespace colmena {

/// What one step did.
struct StepResult {
  std::optional<Fill> fill;  ///< the fill at this bar's open, if any
  double cash = 0.0;         ///< after the bar, quote currency
  double position = 0.0;     ///< after the bar, signed base units
  double equity = 0.0;       ///< at the bar's close
  Decision decision;         ///< the decision at the bar's close
  double kelly = 0.0;        ///< Kelly fraction used (NaN in pass-through mode)
  TradingState state = TradingState::active;
  std::optional<Order> order;  ///< the order submitted for the next bar's open
};

class TradingLoop {
 public:
  /// Risk mode: sizing, limits and breakers of `risk`.
  TradingLoop(const ExecutionConfig& execution, const RiskConfig& risk, std::int64_t bar_ns);
  /// Pass-through mode: the target is the clamped signal; changes below `min_trade_fraction`
  /// (fraction of equity) are skipped.
  TradingLoop(const ExecutionConfig& execution, double min_trade_fraction, std::int64_t bar_ns);

  /// Process bar `bar` (timestamps must increase): fill, mark, observe, decide (see the file
  /// comment). `signal` is NaN (none) or in [-1, 1] and is read only for Action::decide (a series
  /// with other values goes through series_signal first). `new_model` restarts the model-bound
  /// estimators before the fill. `can_order` false (the last bar) submits nothing. Events and the
  /// real position's closed round trips are appended.
  /// Throws std::invalid_argument, before anything changes, when time does not increase or the
  /// signal or action is invalid; in risk mode also when the close gives a NaN equity (then after
  /// the fill: check bars with find_invalid_candle first where that matters).
  const StepResult& step(const Bar& bar, Action action, double signal, bool new_model,
                         bool can_order, std::vector<RiskEvent>& events,
                         std::vector<ClosedTrade>& closed);

  const PaperExecutor& executor() const noexcept { return execution_.executor(); }
  const PaperExecutor& shadow() const noexcept { return risk_.shadow(); }
  /// The risk manager (nullptr in pass-through mode).
  const RiskManager* risk() const noexcept { return risk_.risk(); }
  RiskManager* risk() noexcept { return risk_.risk(); }
  const RiskStage& risk_stage() const noexcept { return risk_; }
  const ExecutionStage& execution_stage() const noexcept { return execution_; }
  std::size_t bars() const noexcept { return risk_.bars(); }

 private:
  RiskStage risk_;
  ExecutionStage execution_;
  StepResult result_;
};

/// Inputs of a backtest, all [n_bars] and oldest first.
struct BacktestInput {
  const std::int64_t* ts = nullptr;  ///< bar open time, ns since epoch UTC, increasing
  const double* open = nullptr;
  const double* high = nullptr;
  const double* low = nullptr;
  const double* close = nullptr;
  const double* volume = nullptr;
  const double* signal = nullptr;  ///< decision signal at each bar's close, [-1, 1] (clamped);
                                   ///< NaN or infinite = none (series_signal)
  const std::uint8_t* action = nullptr;   ///< Action per bar; nullptr: decide at every bar
  const std::int64_t* model = nullptr;    ///< model (fold) id per bar; a change restarts estimators
  std::size_t n = 0;
  std::int64_t bar_ns = 60'000'000'000;  ///< bar length
};

struct BacktestResult {
  // per bar [n]
  std::vector<double> cash, position, equity, requested, target, kelly;
  std::vector<std::uint8_t> state, verdict;
  std::vector<Order> orders;
  std::vector<Fill> fills;
  std::vector<std::size_t> fill_bar;
  std::vector<ClosedTrade> trades;
  std::vector<RiskEvent> events;
  double fees_paid = 0.0;
  double slippage_paid = 0.0;
  double borrow_paid = 0.0;
};

/// The backtest: TradingLoop::step over every bar in risk mode, recording everything.
/// Deterministic; no input after bar t is read before the decision at bar t.
BacktestResult run_backtest(const BacktestInput& input, const RiskConfig& risk,
                            const ExecutionConfig& execution);

/// Inputs of simulate_targets: the bars, plus K signal rows given at the decision bars only.
struct TargetSimulationInput {
  const std::int64_t* ts = nullptr;
  const double* open = nullptr;
  const double* close = nullptr;
  const double* volume = nullptr;
  std::size_t n = 0;
  std::int64_t bar_ns = 60'000'000'000;
  const std::uint8_t* decide = nullptr;  ///< [n] nonzero: a decision bar
  const float* signals = nullptr;        ///< [K, D] row-major, D = number of decision bars
  std::size_t k = 0;
  std::size_t d = 0;
  const std::int64_t* mark_rows = nullptr;  ///< [M] increasing bar indices to record equity at
  std::size_t m = 0;
  double min_trade_fraction = 0.0;
  /// Wind down: target flat (Action::end_of_run) at each of the last `wind_down_bars` bars an
  /// order can follow (bars n - 1 - wind_down_bars .. n - 2), so a volume-limited position
  /// closes over several bars; 0 keeps the position open at the end.
  std::size_t wind_down_bars = 30;
};

/// Per signal row: equity at the mark rows and the cost totals.
struct TargetSimulationResult {
  std::vector<double> equity;    ///< [K, M] row-major, quote currency
  std::vector<double> position;  ///< [K, M] row-major, base units held after each mark bar
  std::vector<double> fees, slippage, borrow, traded_notional, final_position;  ///< [K]
  std::vector<std::int64_t> n_fills;                                            ///< [K]
};

/// Each of K signal rows through its own pass-through TradingLoop (same fills, fees, slippage,
/// partial fills, borrow and decision bars as the backtest, no risk sizing), in parallel over
/// rows. Used for the evolution's fitness and the report's baselines.
/// Throws std::invalid_argument on inconsistent sizes.
TargetSimulationResult simulate_targets(const TargetSimulationInput& input,
                                        const ExecutionConfig& execution);

}  // namespace colmena
