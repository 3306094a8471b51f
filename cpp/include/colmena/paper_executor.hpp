#pragma once
/// Paper execution of market orders against OHLCV bars, with fees, slippage and partial fills.
///
/// A market order decided at the close of bar t fills at the open of bar t + 1 (never earlier):
///  - quantity: at most `max_participation` of that bar's volume; the rest is cancelled (the
///    next decision re-sizes from the new position);
///  - price: open * (1 + side * (slippage_bps + impact_bps * participation) / 1e4), where
///    participation = |filled| / bar volume in [0, max_participation] (a linear
///    volume-participation impact term, Almgren et al., "Direct estimation of equity market
///    impact", 2005, simplified to linear);
///  - fee: fee_bps / 1e4 of the filled notional, in the quote currency.
/// Positions may be long or short (margin), or long only (spot: `allow_short` false, a sell is
/// clipped at a flat position); cash includes short-sale proceeds, so equity = cash +
/// position * mark. A short position pays `borrow_bps_per_day` of its notional per day held
/// (accrue_borrow; margin borrow or perpetual funding). Realized PnL uses the average-cost method. A round-trip trade opens when the
/// position leaves zero (or flips) and closes when it returns to zero (or flips); its PnL is net
/// of the fees and borrow cost paid while it was open.
///
/// Thread safety: none inside (sequential state of one account). From Python every call keeps
/// the GIL, so concurrent calls are serialised whole.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <vector>

#include "colmena/risk_manager.hpp"
#include "colmena/state_check.hpp"

namespace colmena {

/// Largest fee, slippage, impact or borrow rate, basis points (10%). Slippage plus impact is then
/// at most 2000 bps, so a sell's fill price stays >= 80% of the open (always > 0).
inline constexpr double kMaxCostBps = 1'000.0;
/// Largest starting cash, quote currency.
inline constexpr double kMaxInitialCash = 1e15;

struct ExecutionConfig {
  double initial_cash = 100'000.0;  ///< quote currency, in (0, kMaxInitialCash]
  double fee_bps = 10.0;            ///< in [0, kMaxCostBps]
  double slippage_bps = 2.0;        ///< in [0, kMaxCostBps]
  double impact_bps = 10.0;        ///< extra slippage at 100% participation, in [0, kMaxCostBps]
  double max_participation = 0.1;  ///< share of a bar's volume one order may take, in (0, 1]
  double borrow_bps_per_day = 0.0;  ///< short position cost, bps of notional/day, [0, kMaxCostBps]
  bool allow_short = true;          ///< false: spot, long only
  /// Throws std::invalid_argument naming every field outside its range (NaN included).
  void validate() const;
};

struct Fill {
  std::int64_t ts = 0;
  double quantity = 0.0;       ///< signed base units (> 0 buy)
  double price = 0.0;          ///< quote per base, slippage included
  double fee = 0.0;            ///< quote currency
  double slippage_cost = 0.0;  ///< quote currency paid over the open price
  double requested = 0.0;      ///< signed quantity asked for
};

struct ClosedTrade {
  std::int64_t open_ts = 0;   ///< first fill of the round trip
  std::int64_t close_ts = 0;  ///< the fill that brought the position back to zero (or flipped it)
  int side = 0;               ///< +1 long, -1 short
  double pnl = 0.0;           ///< realized, net of fees and borrow, quote currency
  double quantity = 0.0;      ///< largest absolute position held during the trade, base units
  double entry_price = 0.0;   ///< average entry price (average-cost basis), quote per base
  double exit_price = 0.0;    ///< average price of the closing fills, quote per base
  double fees = 0.0;          ///< fees paid while the trade was open, quote currency
  double borrow = 0.0;        ///< borrow cost paid while the trade was open, quote currency
  std::uint8_t exit_origin = 0;  ///< OrderOrigin of the closing order (set by the ExecutionStage)
};

/// Everything of a PaperExecutor that its future fills depend on, besides its ExecutionConfig
/// (PaperExecutor::snapshot / restore). Field names are those of the Python snapshot
/// (colmena.execution.trading_loop.PaperExecutorSnapshot).
struct PaperExecutorState {
  double cash = 0.0;             ///< quote currency
  double position = 0.0;         ///< signed base units
  double average_price = 0.0;    ///< average-cost entry price, quote per base (0 when flat)
  double realized_pnl = 0.0;     ///< quote currency, gross of fees
  double fees_paid = 0.0;        ///< quote currency
  double slippage_paid = 0.0;    ///< quote currency
  double borrow_paid = 0.0;      ///< quote currency
  double traded_notional = 0.0;  ///< quote currency
  std::size_t n_fills = 0;
  /// The open round trip (the one the position belongs to, or the next one when flat):
  std::int64_t trade_open_ts = 0;    ///< its first fill, ns since the epoch
  double trade_pnl = 0.0;            ///< net PnL so far, quote currency
  double trade_size = 0.0;           ///< largest |position| so far, base units
  double trade_fees = 0.0;           ///< fees so far, quote currency
  double trade_borrow = 0.0;         ///< borrow so far, quote currency
  double trade_exit_notional = 0.0;  ///< closing fills so far: sum of price * size, quote
  double trade_exit_size = 0.0;      ///< and of size, base units
};

/// The spot rule (`allow_short` false): a sell of `quantity` may take `position` to flat, not
/// below it (signed base units). On a margin market the quantity is returned unchanged.
inline double clip_to_market(double quantity, double position, bool allow_short) noexcept {
  if (allow_short || quantity >= 0.0) return quantity;
  return std::max(quantity, -std::max(position, 0.0));
}

class PaperExecutor {
 public:
  explicit PaperExecutor(const ExecutionConfig& config);

  /// Fill `quantity` at a bar opening at `ts` with `open_price` and `volume`. Returns nothing
  /// (and sets *error) when the bar cannot fill: no volume or a bad price; nothing when the
  /// quantity is 0. Closed trades are appended to `closed`.
  std::optional<Fill> execute(std::int64_t ts, double quantity, double open_price, double volume,
                              std::vector<ClosedTrade>& closed, ErrorCode* error);

  /// Charge the borrow cost of a short position held for `days` days, valued at `mark`;
  /// returns the cost (quote currency, >= 0). Nothing for a flat or long position.
  double accrue_borrow(double mark, double days) noexcept;

  /// The quantity a sell may take without shorting (spot): `quantity` clipped at a flat position.
  double clip_to_market(double quantity) const noexcept;

  double cash() const noexcept { return cash_; }
  double position() const noexcept { return position_; }
  double average_price() const noexcept { return avg_price_; }
  double realized_pnl() const noexcept { return realized_; }
  double fees_paid() const noexcept { return fees_; }
  double slippage_paid() const noexcept { return slippage_; }
  double borrow_paid() const noexcept { return borrow_; }
  double traded_notional() const noexcept { return traded_; }
  std::size_t n_fills() const noexcept { return n_fills_; }
  double equity(double mark) const noexcept { return cash_ + position_ * mark; }
  double unrealized_pnl(double mark) const noexcept { return position_ * (mark - avg_price_); }
  const ExecutionConfig& config() const noexcept { return config_; }

  /// The account and the open round trip's bookkeeping (PaperExecutorState).
  PaperExecutorState snapshot() const;
  /// Throws std::invalid_argument "<where>: <path><field> ..." naming the first field of `state`
  /// this account could not hold under its config: a non-finite amount, a negative cost total,
  /// fill count or trade size, a short position on a spot market, an average price that is not
  /// > 0 while a position is held or not 0 while flat, a trade start outside the time range.
  void check_state(const PaperExecutorState& state, const StateCheck& check) const;
  /// Continue from `state` (checked first with check_state; on a throw nothing changes).
  void restore(const PaperExecutorState& state);

 private:
  void start_trade(std::int64_t ts, double opening_fee) noexcept;

  ExecutionConfig config_;
  double cash_;
  double position_ = 0.0;
  double avg_price_ = 0.0;
  double realized_ = 0.0;
  double fees_ = 0.0;
  double slippage_ = 0.0;
  double borrow_ = 0.0;
  double traded_ = 0.0;
  std::size_t n_fills_ = 0;
  double trade_pnl_ = 0.0;
  std::int64_t trade_open_ts_ = 0;
  double trade_size_ = 0.0;           // largest |position| of the open trade
  double trade_fees_ = 0.0;           // fees of the open trade
  double trade_borrow_ = 0.0;         // borrow of the open trade
  double trade_exit_notional_ = 0.0;  // closing fills so far: sum of price * size
  double trade_exit_size_ = 0.0;      // and of size
};

}  // namespace colmena
