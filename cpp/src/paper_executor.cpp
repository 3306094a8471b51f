#include "colmena/paper_executor.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

namespace colmena {
namespace {
double sign(double x) noexcept { return (x > 0.0) - (x < 0.0); }
}  // namespace

void ExecutionConfig::validate() const {
  std::string errors;
  auto check = [&](bool ok, const char* what) {
    if (!ok) errors += std::string(errors.empty() ? "" : "; ") + what;
  };
  check(initial_cash > 0.0 && std::isfinite(initial_cash), "initial_cash must be > 0");
  check(fee_bps >= 0.0 && std::isfinite(fee_bps), "fee_bps must be >= 0");
  check(slippage_bps >= 0.0 && std::isfinite(slippage_bps), "slippage_bps must be >= 0");
  check(impact_bps >= 0.0 && std::isfinite(impact_bps), "impact_bps must be >= 0");
  check(max_participation > 0.0 && max_participation <= 1.0, "max_participation must be in (0, 1]");
  if (!errors.empty()) throw std::invalid_argument("ExecutionConfig: " + errors);
}

PaperExecutor::PaperExecutor(const ExecutionConfig& config)
    : config_(config), cash_(config.initial_cash) {
  config_.validate();
}

std::optional<Fill> PaperExecutor::execute(std::int64_t ts, double quantity, double open_price,
                                           double volume, std::vector<ClosedTrade>& closed,
                                           ErrorCode* error) {
  if (quantity == 0.0 || !std::isfinite(quantity)) return std::nullopt;
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
    if (pos == 0.0) {
      trade_open_ts_ = ts;
      trade_pnl_ = 0.0;
    }
    avg_price_ = (avg_price_ * std::abs(pos) + price * size) / (std::abs(pos) + size);
    trade_pnl_ -= fee;
    position_ = pos + q;
  } else {
    const double closing = std::min(size, std::abs(pos));
    const double realized = closing * (price - avg_price_) * sign(pos);
    realized_ += realized;
    const double closing_fee = fee * closing / size;
    trade_pnl_ += realized - closing_fee;
    if (size >= std::abs(pos)) {
      closed.push_back({trade_open_ts_, ts, static_cast<int>(sign(pos)), trade_pnl_});
      const double rest = size - std::abs(pos);
      if (rest > 0.0) {  // flip: a new trade opens with the remainder
        position_ = side * rest;
        avg_price_ = price;
        trade_open_ts_ = ts;
        trade_pnl_ = -(fee - closing_fee);
      } else {
        position_ = 0.0;
        avg_price_ = 0.0;
        trade_pnl_ = 0.0;
      }
    } else {
      position_ = pos + q;
    }
  }
  cash_ -= q * price + fee;
  fees_ += fee;
  return fill;
}

BacktestResult run_backtest(const BacktestInput& in, const RiskConfig& risk_config,
                            const ExecutionConfig& execution) {
  if (in.n == 0) throw std::invalid_argument("run_backtest: no bars");
  if (in.bar_ns <= 0) throw std::invalid_argument("run_backtest: bar length must be > 0");
  RiskManager risk(risk_config);
  PaperExecutor exec(execution);
  BacktestResult out;
  const std::size_t n = in.n;
  for (auto* v : {&out.cash, &out.position, &out.equity, &out.requested, &out.target}) v->resize(n);
  out.state.resize(n);
  out.verdict.resize(n);

  bool pending = false;
  std::size_t pending_order = 0;
  std::vector<ClosedTrade> closed;
  for (std::size_t t = 0; t < n; ++t) {
    const std::int64_t ts = in.ts[t];
    if (t > 0 && ts <= in.ts[t - 1]) {
      throw std::invalid_argument("run_backtest: timestamps must increase (row " +
                                  std::to_string(t) + ")");
    }
    // 1. The open of bar t: data age first (the newest candle closed at ts[t-1] + bar), then fill.
    if (t > 0) risk.observe_data_age(ts, in.ts[t - 1] + in.bar_ns, out.events);
    if (pending) {
      Order& order = out.orders[pending_order];
      const double allowed = risk.allowed_quantity(order.quantity, exec.position());
      ErrorCode error{};
      closed.clear();
      const auto fill = exec.execute(ts, allowed, in.open[t], in.volume[t], closed, &error);
      if (fill) {
        order.filled = fill->quantity;
        out.fills.push_back(*fill);
        out.fill_bar.push_back(t);
        out.events.push_back({ts, EventType::trade_executed, 0, fill->quantity});
        for (const ClosedTrade& trade : closed) {
          risk.record_trade(trade.pnl);
          out.trades.push_back(trade);
        }
      } else if (allowed != 0.0) {
        out.events.push_back({ts, EventType::error, static_cast<std::uint8_t>(error), allowed});
      }
      pending = false;
    }
    // 2. The close of bar t: mark to market, then the risk state.
    const std::int64_t close_ts = ts + in.bar_ns;
    const double equity = exec.equity(in.close[t]);
    const double bar_return =
        t > 0 ? std::log(in.close[t] / in.close[t - 1]) : std::numeric_limits<double>::quiet_NaN();
    risk.observe_data_age(close_ts, close_ts, out.events);
    risk.observe(close_ts, equity, bar_return, out.events);
    // 3. The decision for bar t + 1.
    const double current = equity > 0.0 ? exec.position() * in.close[t] / equity : 0.0;
    Decision decision = risk.decide(in.signal[t], current);
    if (decision.verdict == Verdict::flatten_stop) risk.clear_flatten();
    out.requested[t] = decision.requested;
    out.target[t] = decision.target;
    out.verdict[t] = static_cast<std::uint8_t>(decision.verdict);
    out.state[t] = static_cast<std::uint8_t>(risk.state());
    if (decision.place_order && t + 1 < n) {
      const double quantity = decision.target == 0.0
                                  ? -exec.position()
                                  : decision.target * equity / in.close[t] - exec.position();
      if (quantity != 0.0) {
        out.orders.push_back({t, quantity, decision.target, 0.0});
        pending_order = out.orders.size() - 1;
        pending = true;
      }
    }
    out.cash[t] = exec.cash();
    out.position[t] = exec.position();
    out.equity[t] = equity;
  }
  out.fees_paid = exec.fees_paid();
  return out;
}

}  // namespace colmena
