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
/// Positions may be long or short; cash includes short-sale proceeds, so equity = cash +
/// position * mark. Realized PnL uses the average-cost method. A round-trip trade opens when the
/// position leaves zero (or flips) and closes when it returns to zero (or flips); its PnL is net
/// of the fees paid while it was open.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <vector>

#include "colmena/risk_manager.hpp"

namespace colmena {

struct ExecutionConfig {
  double initial_cash = 100'000.0;  ///< quote currency
  double fee_bps = 10.0;
  double slippage_bps = 2.0;
  double impact_bps = 10.0;        ///< extra slippage at 100% participation
  double max_participation = 0.1;  ///< share of a bar's volume one order may take
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
  std::int64_t open_ts = 0;
  std::int64_t close_ts = 0;
  int side = 0;      ///< +1 long, -1 short
  double pnl = 0.0;  ///< realized, net of fees, quote currency
};

class PaperExecutor {
 public:
  explicit PaperExecutor(const ExecutionConfig& config);

  /// Fill `quantity` at a bar opening at `ts` with `open_price` and `volume`. Returns nothing
  /// (and sets *error) when the bar cannot fill: no volume or a bad price; nothing when the
  /// quantity is 0. Closed trades are appended to `closed`.
  std::optional<Fill> execute(std::int64_t ts, double quantity, double open_price, double volume,
                              std::vector<ClosedTrade>& closed, ErrorCode* error);

  double cash() const noexcept { return cash_; }
  double position() const noexcept { return position_; }
  double average_price() const noexcept { return avg_price_; }
  double realized_pnl() const noexcept { return realized_; }
  double fees_paid() const noexcept { return fees_; }
  double equity(double mark) const noexcept { return cash_ + position_ * mark; }
  double unrealized_pnl(double mark) const noexcept { return position_ * (mark - avg_price_); }
  const ExecutionConfig& config() const noexcept { return config_; }

 private:
  ExecutionConfig config_;
  double cash_;
  double position_ = 0.0;
  double avg_price_ = 0.0;
  double realized_ = 0.0;
  double fees_ = 0.0;
  double trade_pnl_ = 0.0;
  std::int64_t trade_open_ts_ = 0;
};

/// Inputs of a backtest, all [n_bars] and oldest first.
struct BacktestInput {
  const std::int64_t* ts = nullptr;  ///< bar open time, ns since epoch UTC, increasing
  const double* open = nullptr;
  const double* high = nullptr;
  const double* low = nullptr;
  const double* close = nullptr;
  const double* volume = nullptr;
  const double* signal = nullptr;  ///< decision signal at each bar's close, [-1, 1]; NaN = none
  std::size_t n = 0;
  std::int64_t bar_ns = 60'000'000'000;  ///< bar length
};

struct Order {
  std::size_t bar = 0;    ///< decision bar (fills at bar + 1)
  double quantity = 0.0;  ///< signed base units requested
  double target = 0.0;    ///< target exposure (fraction of equity)
  double filled = 0.0;    ///< signed base units filled at bar + 1
};

struct BacktestResult {
  // per bar [n]
  std::vector<double> cash, position, equity, requested, target;
  std::vector<std::uint8_t> state, verdict;
  std::vector<Order> orders;
  std::vector<Fill> fills;
  std::vector<std::size_t> fill_bar;
  std::vector<ClosedTrade> trades;
  std::vector<RiskEvent> events;
  double fees_paid = 0.0;
};

/// The backtest loop: at each bar, fill the pending order at the open (risk-clipped: stale data
/// or PAUSED/HALTED make it reduce-only), mark to market at the close, update the risk manager,
/// then decide the next target from the bar's signal. Deterministic; no input after bar t is read
/// before the decision at bar t.
BacktestResult run_backtest(const BacktestInput& input, const RiskConfig& risk,
                            const ExecutionConfig& execution);

}  // namespace colmena
