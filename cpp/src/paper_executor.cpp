#include "colmena/paper_executor.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include "colmena/ohlcv_validation.hpp"

namespace colmena {
namespace {
double sign(double x) noexcept { return (x > 0.0) - (x < 0.0); }
}  // namespace

void ExecutionConfig::validate() const {
  std::string errors;
  auto check = [&](bool ok, const char* what) {
    if (!ok) errors += std::string(errors.empty() ? "" : "; ") + what;
  };
  auto cost = [](double bps) { return bps >= 0.0 && bps <= kMaxCostBps; };
  check(initial_cash > 0.0 && initial_cash <= kMaxInitialCash,
        "initial_cash must be in (0, 1e15]");
  check(cost(fee_bps), "fee_bps must be in [0, 1000]");
  check(cost(slippage_bps), "slippage_bps must be in [0, 1000]");
  check(cost(impact_bps), "impact_bps must be in [0, 1000]");
  check(max_participation > 0.0 && max_participation <= 1.0, "max_participation must be in (0, 1]");
  check(cost(borrow_bps_per_day), "borrow_bps_per_day must be in [0, 1000]");
  if (!errors.empty()) throw std::invalid_argument("ExecutionConfig: " + errors);
}

PaperExecutor::PaperExecutor(const ExecutionConfig& config)
    : config_(config), cash_(config.initial_cash) {
  config_.validate();
}

std::optional<Fill> PaperExecutor::execute(std::int64_t ts, double quantity, double open_price,
                                           double volume, std::vector<ClosedTrade>& closed,
                                           ErrorCode* error) {
  if (!std::isfinite(quantity)) return std::nullopt;
  quantity = clip_to_market(quantity);
  if (quantity == 0.0) return std::nullopt;
  if (!(std::isfinite(open_price) && open_price > 0.0)) {
    if (error) *error = ErrorCode::non_finite_price;
    return std::nullopt;
  }
  if (!(volume > 0.0)) {
    if (error) *error = ErrorCode::no_volume;
    return std::nullopt;
  }
  const double side = sign(quantity);
  const double size = std::min(std::abs(quantity), config_.max_participation * volume);
  const double q = side * size;
  const double participation = size / volume;
  const double slip_bps = config_.slippage_bps + config_.impact_bps * participation;
  const double price = open_price * (1.0 + side * slip_bps / 1e4);
  const double fee = size * price * config_.fee_bps / 1e4;

  Fill fill{ts, q, price, fee, size * open_price * slip_bps / 1e4, quantity};
  const double pos = position_;
  if (pos == 0.0 || sign(pos) == side) {
    if (pos == 0.0) start_trade(ts, 0.0);
    avg_price_ = (avg_price_ * std::abs(pos) + price * size) / (std::abs(pos) + size);
    trade_pnl_ -= fee;
    trade_fees_ += fee;
    position_ = pos + q;
    trade_size_ = std::max(trade_size_, std::abs(position_));
  } else {
    const double closing = std::min(size, std::abs(pos));
    const double realized = closing * (price - avg_price_) * sign(pos);
    realized_ += realized;
    const double closing_fee = fee * closing / size;
    trade_pnl_ += realized - closing_fee;
    trade_fees_ += closing_fee;
    trade_exit_notional_ += closing * price;
    trade_exit_size_ += closing;
    if (size >= std::abs(pos)) {
      ClosedTrade trade;
      trade.open_ts = trade_open_ts_;
      trade.close_ts = ts;
      trade.side = static_cast<int>(sign(pos));
      trade.pnl = trade_pnl_;
      trade.quantity = trade_size_;
      trade.entry_price = avg_price_;
      trade.exit_price = trade_exit_notional_ / trade_exit_size_;
      trade.fees = trade_fees_;
      trade.borrow = trade_borrow_;
      closed.push_back(trade);
      const double rest = size - std::abs(pos);
      if (rest > 0.0) {  // flip: a new trade opens with the remainder
        start_trade(ts, fee - closing_fee);
        position_ = side * rest;
        avg_price_ = price;
        trade_size_ = rest;
      } else {
        start_trade(ts, 0.0);
        position_ = 0.0;
        avg_price_ = 0.0;
      }
    } else {
      position_ = pos + q;
    }
  }
  cash_ -= q * price + fee;
  fees_ += fee;
  slippage_ += fill.slippage_cost;
  traded_ += size * price;
  ++n_fills_;
  return fill;
}

void PaperExecutor::start_trade(std::int64_t ts, double opening_fee) noexcept {
  trade_open_ts_ = ts;
  trade_pnl_ = -opening_fee;
  trade_fees_ = opening_fee;
  trade_size_ = 0.0;
  trade_borrow_ = 0.0;
  trade_exit_notional_ = 0.0;
  trade_exit_size_ = 0.0;
}

double PaperExecutor::clip_to_market(double quantity) const noexcept {
  return colmena::clip_to_market(quantity, position_, config_.allow_short);
}

double PaperExecutor::accrue_borrow(double mark, double days) noexcept {
  if (!(position_ < 0.0) || !(config_.borrow_bps_per_day > 0.0) || !(days > 0.0)) return 0.0;
  if (!(std::isfinite(mark) && mark > 0.0)) return 0.0;
  const double cost = -position_ * mark * config_.borrow_bps_per_day / 1e4 * days;
  cash_ -= cost;
  borrow_ += cost;
  trade_pnl_ -= cost;
  trade_borrow_ += cost;
  return cost;
}

PaperExecutorState PaperExecutor::snapshot() const {
  PaperExecutorState s;
  s.cash = cash_;
  s.position = position_;
  s.average_price = avg_price_;
  s.realized_pnl = realized_;
  s.fees_paid = fees_;
  s.slippage_paid = slippage_;
  s.borrow_paid = borrow_;
  s.traded_notional = traded_;
  s.n_fills = n_fills_;
  s.trade_open_ts = trade_open_ts_;
  s.trade_pnl = trade_pnl_;
  s.trade_size = trade_size_;
  s.trade_fees = trade_fees_;
  s.trade_borrow = trade_borrow_;
  s.trade_exit_notional = trade_exit_notional_;
  s.trade_exit_size = trade_exit_size_;
  return s;
}

void PaperExecutor::check_state(const PaperExecutorState& s, const StateCheck& check) const {
  check.finite(s.cash, "cash");
  check.finite(s.position, "position");
  check.finite(s.realized_pnl, "realized_pnl");
  check.non_negative(s.fees_paid, "fees_paid");
  check.non_negative(s.slippage_paid, "slippage_paid");
  check.non_negative(s.borrow_paid, "borrow_paid");
  check.non_negative(s.traded_notional, "traded_notional");
  check.require(config_.allow_short || s.position >= 0.0, "position",
                "is short (" + format_double(s.position) + ") on a spot market");
  if (s.position != 0.0) {
    check.require(
        std::isfinite(s.average_price) && s.average_price > 0.0, "average_price",
        "must be finite and > 0 while a position is held, got " + format_double(s.average_price));
  } else {
    check.require(s.average_price == 0.0, "average_price",
                  "must be 0 while flat, got " + format_double(s.average_price));
  }
  check.timestamp(s.trade_open_ts, "trade_open_ts");
  check.finite(s.trade_pnl, "trade_pnl");
  check.non_negative(s.trade_size, "trade_size");
  check.non_negative(s.trade_fees, "trade_fees");
  check.non_negative(s.trade_borrow, "trade_borrow");
  check.non_negative(s.trade_exit_notional, "trade_exit_notional");
  check.non_negative(s.trade_exit_size, "trade_exit_size");
}

void PaperExecutor::restore(const PaperExecutorState& s) {
  check_state(s, StateCheck("PaperExecutor.restore", ""));
  cash_ = s.cash;
  position_ = s.position;
  avg_price_ = s.average_price;
  realized_ = s.realized_pnl;
  fees_ = s.fees_paid;
  slippage_ = s.slippage_paid;
  borrow_ = s.borrow_paid;
  traded_ = s.traded_notional;
  n_fills_ = s.n_fills;
  trade_open_ts_ = s.trade_open_ts;
  trade_pnl_ = s.trade_pnl;
  trade_size_ = s.trade_size;
  trade_fees_ = s.trade_fees;
  trade_borrow_ = s.trade_borrow;
  trade_exit_notional_ = s.trade_exit_notional;
  trade_exit_size_ = s.trade_exit_size;
}

}  // namespace colmena
