#pragma once
/// The execution half of the trading loop: what the live (paper) execution service runs.
///
/// Holds the account (a PaperExecutor) and the pending order. It never sizes or decides: it fills
/// what the RiskStage sent (trading_messages.hpp) and reports the account back.
///
/// Per bar t (timestamps must increase; calls out of this order throw std::logic_error):
///  - open(bar, state): the pending order, decided at the close of bar t - 1, fills at the open
///    of bar t: first the reduce-only clip when the order says so or the risk `state` at this open
///    is not ACTIVE (PAUSED, REDUCING, HALTED: only the part that moves the position toward zero),
///    then the spot rule (allow_short false: a sell stops at a flat position), then the bar's
///    volume (max_participation) in PaperExecutor::execute. Returns the ExecutionReport when an
///    order was pending (also when nothing filled); appends a trade_executed event (value: the
///    signed quantity filled) or an error event (code: ErrorCode, value: the attempted quantity)
///    and the closed round trips, each with the exit origin of the order that caused it (a
///    remainder keeps the origin of the order it continues).
///  - close(bar): the borrow cost of a short position for the time since the previous bar (one
///    bar length for the first), then the mark at the bar's close. Returns the AccountSnapshot.
///  - submit(order): the order for the next open, decided at this close; one at a time.
///
/// Each call checks its input before it changes anything: a call that throws leaves the stage as
/// it was. Sources: paper_executor.hpp for fills, fees, slippage and borrow; the design
/// documents' execution layer (seeds/001, "OrderExecutor: gestión de órdenes, slippage").
///
/// Thread safety: as TradingLoop (trading_loop.hpp): sequential state for one thread; from
/// Python every call keeps the GIL, so concurrent calls are serialised whole.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <vector>

#include "colmena/paper_executor.hpp"
#include "colmena/risk_manager.hpp"
#include "colmena/trading_messages.hpp"

namespace colmena {

/// Everything of an ExecutionStage that its future behaviour depends on (ExecutionStage::snapshot
/// / restore), with the configuration it was taken under. Field names are those of the Python
/// snapshot (colmena.execution.trading_loop.ExecutionStageSnapshot).
struct ExecutionStageState {
  std::int64_t version = kStageStateVersion;
  // The configuration, compared field by field on restore.
  ExecutionConfig execution;
  std::int64_t bar_ns = 0;  ///< bar length, ns
  // The state.
  PaperExecutorState executor;   ///< the account
  std::size_t bars = 0;          ///< bars closed
  bool is_open = false;          ///< a bar was opened and not yet closed
  std::int64_t open_ts = 0;      ///< open time of the bar opened last (0 before the first)
  std::int64_t last_ts = 0;      ///< open time of the bar closed last (0 before the first)
  std::optional<Order> pending;  ///< waiting for the next open
  /// Origin of the last order that was no remainder: the exit origin a remainder's fill gives
  /// the round trips it closes.
  OrderOrigin cause = OrderOrigin::decision;
  AccountSnapshot account;  ///< the account at the last close (zeros before the first)
};

class ExecutionStage {
 public:
  /// Throws std::invalid_argument on an invalid config or bar_ns <= 0.
  ExecutionStage(const ExecutionConfig& execution, std::int64_t bar_ns);

  /// The open of `bar` with the risk state at this open (see the file comment). Throws
  /// std::invalid_argument when bar.ts does not increase.
  std::optional<ExecutionReport> open(const Bar& bar, TradingState state,
                                      std::vector<RiskEvent>& events,
                                      std::vector<ClosedTrade>& closed);

  /// The close of the opened bar. Throws std::invalid_argument when `bar` is not the opened bar.
  const AccountSnapshot& close(const Bar& bar);

  /// Queue `order` for the next open. Throws std::invalid_argument when an order is already
  /// pending, when the order was not decided at the close of the last bar, or when its quantity
  /// is not finite and nonzero.
  void submit(const Order& order);

  /// The state and the configuration it was taken under (ExecutionStageState). Allowed at any
  /// point, also between open and close.
  ExecutionStageState snapshot() const;
  /// Continue from `state`. Everything is checked before anything changes: on a throw
  /// (std::invalid_argument "ExecutionStage.restore: <field> ...", naming the snapshot's field)
  /// the stage is as it was. Refused: another version; a configuration that differs from this
  /// stage's in any field (execution.*, bar_ns); a state the stage could not have reached (the
  /// checks of PaperExecutor::check_state, times outside the time range, an open bar not after
  /// the last closed one, a pending order while a bar is open or not decided at the last close,
  /// an unknown cause, an account snapshot that is not the last close's).
  void restore(const ExecutionStageState& state);

  const PaperExecutor& executor() const noexcept { return executor_; }
  const std::optional<Order>& pending() const noexcept { return pending_; }
  /// The account at the last close.
  const AccountSnapshot& account() const noexcept { return account_; }
  /// Bars closed so far.
  std::size_t bars() const noexcept { return bars_; }
  /// Open time of the last bar opened (0 before the first).
  std::int64_t last_open_ts() const noexcept { return open_ts_; }
  bool is_open() const noexcept { return opened_; }
  std::int64_t bar_ns() const noexcept { return bar_ns_; }

 private:
  PaperExecutor executor_;
  std::int64_t bar_ns_ = 0;
  std::size_t bars_ = 0;
  bool opened_ = false;
  std::int64_t open_ts_ = 0;  // the bar opened last
  std::int64_t last_ts_ = 0;  // the bar closed last
  std::optional<Order> pending_;
  OrderOrigin cause_ = OrderOrigin::decision;  // origin of the last order that was no remainder
  AccountSnapshot account_;
};

}  // namespace colmena
