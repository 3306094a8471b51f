#include "colmena/execution_stage.hpp"

#include <cmath>
#include <stdexcept>
#include <string>

#include "colmena/ohlcv_validation.hpp"
#include "colmena/time_range.hpp"

namespace colmena {
namespace {
constexpr double kNsPerDay = 86'400'000'000'000.0;
}  // namespace

ExecutionStage::ExecutionStage(const ExecutionConfig& execution, std::int64_t bar_ns)
    : executor_(execution), bar_ns_(bar_ns) {
  check_duration(bar_ns, "ExecutionStage", "bar length bar_ns", false);
}

std::optional<ExecutionReport> ExecutionStage::open(const Bar& bar, TradingState state,
                                                    std::vector<RiskEvent>& events,
                                                    std::vector<ClosedTrade>& closed) {
  if (opened_) {
    throw std::logic_error("ExecutionStage.open: bar " + format_timestamp_ns(open_ts_) +
                           " was opened but not closed");
  }
  check_timestamp(bar.ts, "ExecutionStage.open", "bar time");
  if (bars_ > 0 && bar.ts <= last_ts_) {
    throw std::invalid_argument("ExecutionStage.open: timestamps must increase (" +
                                format_timestamp_ns(bar.ts) + " after " +
                                format_timestamp_ns(last_ts_) + ")");
  }
  open_ts_ = bar.ts;
  opened_ = true;
  if (!pending_) return std::nullopt;
  const Order& order = *pending_;
  const bool reduce_only = order.reduce_only || state != TradingState::active;
  const double allowed =
      reduce_only ? reduce_only_quantity(order.quantity, executor_.position()) : order.quantity;
  const double market = executor_.clip_to_market(allowed);
  std::optional<ExecutionReport> report(std::in_place);
  report->order_id = order.id;
  report->ts = bar.ts;
  report->attempted = market;
  ErrorCode error{};
  const std::size_t first_closed = closed.size();
  report->fill = executor_.execute(bar.ts, market, bar.open, bar.volume, closed, &error);
  for (std::size_t i = first_closed; i < closed.size(); ++i)
    closed[i].exit_origin = static_cast<std::uint8_t>(cause_);
  if (report->fill) {
    events.push_back({bar.ts, EventType::trade_executed, 0, report->fill->quantity});
  } else if (market != 0.0) {
    events.push_back({bar.ts, EventType::error, static_cast<std::uint8_t>(error), market});
    report->error = error;
  }
  report->cash = executor_.cash();
  report->position = executor_.position();
  pending_.reset();
  return report;
}

const AccountSnapshot& ExecutionStage::close(const Bar& bar) {
  if (!opened_) throw std::logic_error("ExecutionStage.close: no bar is open");
  if (bar.ts != open_ts_) {
    throw std::invalid_argument("ExecutionStage.close: bar " + format_timestamp_ns(bar.ts) +
                                " is not the open bar " + format_timestamp_ns(open_ts_));
  }
  const double held_days = static_cast<double>(bars_ > 0 ? bar.ts - last_ts_ : bar_ns_) / kNsPerDay;
  executor_.accrue_borrow(bar.close, held_days);
  account_.ts = bar.ts + bar_ns_;
  account_.mark = bar.close;
  account_.cash = executor_.cash();
  account_.position = executor_.position();
  account_.equity = executor_.equity(bar.close);
  last_ts_ = bar.ts;
  ++bars_;
  opened_ = false;
  return account_;
}

void ExecutionStage::submit(const Order& order) {
  if (opened_) {
    throw std::logic_error("ExecutionStage.submit: bar " + format_timestamp_ns(open_ts_) +
                           " is open; orders are submitted after a close");
  }
  if (pending_) {
    throw std::invalid_argument("ExecutionStage.submit: order " + std::to_string(order.id) +
                                " while order " + std::to_string(pending_->id) +
                                " is still pending");
  }
  if (bars_ == 0 || order.ts != last_ts_ + bar_ns_) {
    throw std::invalid_argument(
        "ExecutionStage.submit: order " + std::to_string(order.id) + " decided at " +
        format_timestamp_ns(order.ts) + ", but the last close was " +
        (bars_ == 0 ? std::string("none") : format_timestamp_ns(last_ts_ + bar_ns_)));
  }
  if (!(std::isfinite(order.quantity) && order.quantity != 0.0)) {
    throw std::invalid_argument("ExecutionStage.submit: order " + std::to_string(order.id) +
                                ": quantity must be finite and nonzero, got " +
                                format_double(order.quantity));
  }
  if (static_cast<std::uint8_t>(order.origin) >
      static_cast<std::uint8_t>(OrderOrigin::end_of_run)) {
    throw std::invalid_argument("ExecutionStage.submit: order " + std::to_string(order.id) +
                                ": unknown origin " +
                                std::to_string(static_cast<int>(order.origin)));
  }
  pending_ = order;
  if (order.origin != OrderOrigin::remainder) cause_ = order.origin;  // why the order exists
}

ExecutionStageState ExecutionStage::snapshot() const {
  ExecutionStageState s;
  s.version = kStageStateVersion;
  s.execution = executor_.config();
  s.bar_ns = bar_ns_;
  s.executor = executor_.snapshot();
  s.bars = bars_;
  s.is_open = opened_;
  s.open_ts = open_ts_;
  s.last_ts = last_ts_;
  s.pending = pending_;
  s.cause = cause_;
  s.account = account_;
  return s;
}

void ExecutionStage::restore(const ExecutionStageState& s) {
  const StateCheck check("ExecutionStage.restore", "");
  check.require(s.version == kStageStateVersion, "version",
                "is " + std::to_string(s.version) + "; this build reads version " +
                    std::to_string(kStageStateVersion));
  check_execution_config(s.execution, executor_.config(), check.sub("execution"));
  check.same_config(s.bar_ns, bar_ns_, "bar_ns");
  executor_.check_state(s.executor, check.sub("executor"));
  if (s.bars > 0) {
    check.timestamp(s.last_ts, "last_ts");
  } else {
    check.require(s.last_ts == 0, "last_ts", "must be 0 before the first close");
  }
  if (s.is_open) {
    check.timestamp(s.open_ts, "open_ts");
    check.require(s.bars == 0 || s.open_ts > s.last_ts, "open_ts",
                  "must be after last_ts (" + std::to_string(s.last_ts) + "), got " +
                      std::to_string(s.open_ts));
    check.require(!s.pending, "pending",
                  "must be empty while a bar is open (it filled at the open)");
  } else {
    check.require(s.open_ts == s.last_ts, "open_ts",
                  "must equal last_ts between bars (" + std::to_string(s.last_ts) + "), got " +
                      std::to_string(s.open_ts));
  }
  if (s.pending) check_order(*s.pending, s.bars, s.last_ts, bar_ns_, check.sub("pending"));
  check.require(
      s.cause != OrderOrigin::remainder &&
          static_cast<std::uint8_t>(s.cause) <= static_cast<std::uint8_t>(OrderOrigin::end_of_run),
      "cause",
      "must be decision, risk or end_of_run (code " + std::to_string(static_cast<int>(s.cause)) +
          ")");
  const StateCheck account = check.sub("account");
  if (s.bars > 0) {
    account.require(s.account.ts == s.last_ts + bar_ns_, "ts",
                    "must be the last close (" + std::to_string(s.last_ts + bar_ns_) + "), got " +
                        std::to_string(s.account.ts));
    account.require(std::isfinite(s.account.mark) && s.account.mark > 0.0, "mark",
                    "must be finite and > 0, got " + format_double(s.account.mark));
    account.finite(s.account.cash, "cash");
    account.finite(s.account.position, "position");
    account.not_nan(s.account.equity, "equity");
  } else {
    account.require(s.account.ts == 0 && s.account.mark == 0.0 && s.account.cash == 0.0 &&
                        s.account.position == 0.0 && s.account.equity == 0.0,
                    "ts", "and the other fields must be 0 before the first close");
  }
  // Everything checked: take it over.
  executor_.restore(s.executor);
  bars_ = s.bars;
  opened_ = s.is_open;
  open_ts_ = s.open_ts;
  last_ts_ = s.last_ts;
  pending_ = s.pending;
  if (pending_) pending_->filled = 0.0;
  cause_ = s.cause;
  account_ = s.account;
}

}  // namespace colmena
