#pragma once
/// The messages between the two halves of the trading loop (RiskStage and ExecutionStage).
///
/// Plain values, no pointers or containers, so that the same messages can cross a process
/// boundary: the live risk service and the live execution service exchange them over NATS, and
/// TradingLoop passes them between the halves in one process. Per bar t, in this order
/// (TradingLoop::step is exactly this sequence):
///
///   1. RiskStage::open(bar)                     -> TradingState at the open (the reduce-only
///                                                  gate; the live risk service keeps it in KV)
///   2. ExecutionStage::open(bar, state)         -> ExecutionReport, when an Order was pending
///   3. RiskStage::on_execution(report)
///   4. ExecutionStage::close(bar)               -> AccountSnapshot (borrow charged, marked)
///   5. RiskStage::close(bar, account, action, signal) -> RiskDecision, with an Order for the
///                                                  open of bar t + 1 when one is needed
///   6. ExecutionStage::submit(order)
///
/// Units everywhere: timestamps in ns since the epoch (UTC); prices in quote currency per base
/// unit; quantities in signed base units (> 0 buys); cash and equity in quote currency; targets
/// as signed fractions of equity.
#include <cstddef>
#include <cstdint>
#include <optional>

#include "colmena/paper_executor.hpp"
#include "colmena/risk_manager.hpp"
#include "colmena/state_check.hpp"

namespace colmena {

/// One OHLCV bar; `ts` is its open time, ns since the epoch, UTC.
struct Bar {
  std::int64_t ts = 0;
  double open = 0.0;
  double high = 0.0;
  double low = 0.0;
  double close = 0.0;
  double volume = 0.0;
};

/// Why an order exists.
enum class OrderOrigin : std::uint8_t {
  decision = 0,    ///< a decision's target
  remainder = 1,   ///< the unfilled rest of the previous order, resubmitted
  risk = 2,        ///< forced by the risk state (halt or drawdown stop: flatten)
  end_of_run = 3,  ///< the final flattening of a run
};

const char* order_origin_name(OrderOrigin origin) noexcept;

/// Risk -> execution, at the close of the decision bar: a market order for the next bar's open.
struct Order {
  std::uint64_t id = 0;   ///< 1, 2, ... in the order the RiskStage issued them
  std::size_t bar = 0;    ///< decision bar, counted from 0 in the stage's bar stream
  std::int64_t ts = 0;    ///< decision time: the close of the decision bar (its ts + bar length)
  double quantity = 0.0;  ///< signed base units requested (finite, nonzero)
  double target = 0.0;    ///< target exposure the quantity moves to (signed fraction of equity)
  OrderOrigin origin = OrderOrigin::decision;
  /// The risk state at the decision was not ACTIVE: the fill may only reduce the position.
  bool reduce_only = false;
  /// Signed base units filled at the next open. Not part of the message: run_backtest records
  /// it when the execution report arrives; 0 until then.
  double filled = 0.0;
};

/// Execution -> risk, at the open of the bar after the order's decision bar: what became of the
/// pending order. Sent for every order, filled or not.
struct ExecutionReport {
  std::uint64_t order_id = 0;  ///< Order::id it answers
  std::int64_t ts = 0;         ///< open time of the fill bar
  /// Quantity sent to the market: the order's quantity after the reduce-only clip and, on a spot
  /// market, the clip at a flat position (signed base units; 0 when clipped away).
  double attempted = 0.0;
  std::optional<Fill> fill;  ///< what filled (at most max_participation of the bar's volume)
  /// Why nothing filled when `attempted` is nonzero; empty otherwise.
  std::optional<ErrorCode> error;
  double cash = 0.0;      ///< account cash after the fill, quote currency
  double position = 0.0;  ///< account position after the fill, signed base units
};

/// Execution -> risk, at the close of a bar: the account after the borrow charge, marked at the
/// bar's close.
struct AccountSnapshot {
  std::int64_t ts = 0;    ///< mark time: the bar's close (its ts + bar length)
  double mark = 0.0;      ///< the bar's close price
  double cash = 0.0;      ///< quote currency
  double position = 0.0;  ///< signed base units
  double equity = 0.0;    ///< cash + position * mark, quote currency
};

/// Layout version of RiskStageState and ExecutionStageState (and of their Python snapshots);
/// restore refuses any other.
inline constexpr std::int64_t kStageStateVersion = 1;

/// Restore checks shared by the stages (state_check.hpp): every field of `snapshot` equals
/// `own` ("<field> differs: ...").
void check_execution_config(const ExecutionConfig& snapshot, const ExecutionConfig& own,
                            const StateCheck& check);
/// An order waiting for the open after the last closed bar (`bars` closed, the last opening at
/// `last_ts`): decided at that close, finite nonzero quantity, finite target, a known origin.
void check_order(const Order& order, std::size_t bars, std::int64_t last_ts, std::int64_t bar_ns,
                 const StateCheck& check);

}  // namespace colmena
