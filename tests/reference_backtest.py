"""A plain-Python model of the core's trading loop (TradingLoop over RiskManager + PaperExecutor).

Written from the documented rules (cpp/include/colmena/trading_loop.hpp, risk_manager.hpp and
paper_executor.hpp), line by line and without NumPy in the loop, as an independent reference:
tests compare the compiled loop with it bar for bar, and bench/ times it as the plain peer.

Pieces, each named after the core class it models:

- :class:`PlainRisk` (RiskManager): the ACTIVE / REDUCING / PAUSED / HALTED state machine with
  the kill switch, the circuit-breaker ladder (re-armed when a drawdown stop's pause ends), the
  daily-loss pause until the next UTC midnight, alerts on the all-time high, the RiskMetrics EWMA
  volatility, the Kelly fraction shrunk toward its prior, ``decide`` for every action and
  ``allowed_quantity``;
- :class:`PlainExecutor` (PaperExecutor): market orders at the next open with volume-limited
  partial fills, slippage with linear impact, fees, the spot clip (``allow_short`` false), the
  borrow cost of a short position and round-trip PnL net of fees and borrow;
- :class:`PlainLoop` (TradingLoop): one ``step`` per bar, with the shadow book that feeds the
  Kelly estimate, remainder resubmission on hold bars and resets when a new model takes over;
- :func:`plain_backtest` (run_backtest) and :func:`plain_simulate_targets` (simulate_targets for
  one signal row).

Every number is a plain Python float or int; operations are written in the core's order so the
results agree to the last bit where the arithmetic is the same.
"""

from __future__ import annotations

import dataclasses
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any, NamedTuple

NS_PER_DAY = 86_400_000_000_000
#: Bar returns the EWMA volatility needs before the VaR cap trusts it.
MIN_VOLATILITY_BARS = 30

# Action codes (colmena::Action).
HOLD, DECIDE, GATED_FLAT, END_OF_RUN = 0, 1, 2, 3
#: TradingState names by code.
STATES = ("ACTIVE", "REDUCING", "PAUSED", "HALTED")
#: OrderOrigin names by code.
ORIGINS = ("decision", "remainder", "risk", "end_of_run")
# Codes of drawdown_threshold events (colmena::DrawdownCode); 1-3 are the ladder levels.
LADDER_STOP, KILL_SWITCH, DAILY_LOSS, LADDER_REARMED = 3, 4, 5, 6
# Alert codes (colmena::AlertCode).
DRAWDOWN_WARNING, DRAWDOWN_CRITICAL, DAILY_PNL_WARNING, DAILY_PNL_CRITICAL = 0, 1, 2, 3
DATA_FEED_SILENT = 4
# Error codes (colmena::ErrorCode).
NO_VOLUME, NON_FINITE_PRICE = 0, 1

#: (ts, event type name, code, value), as the core's RiskEvent.
Event = tuple[int, str, int, float]
#: (open_ts, close_ts, side, pnl), as the core's ClosedTrade.
Trade = tuple[int, int, int, float]


def _sign(x: float) -> int:
    return (x > 0) - (x < 0)


def _clamp(x: float, lo: float, hi: float) -> float:
    """std::clamp: lo if x < lo, hi if hi < x, else x."""
    if x < lo:
        return lo
    if hi < x:
        return hi
    return x


class Decision(NamedTuple):
    requested: float
    target: float
    verdict: str
    place_order: bool


@dataclass
class PlainRisk:
    """The risk manager: state machine, breakers, Kelly sizing and limits (see risk_manager.hpp)."""

    kelly_multiplier: float = 0.25
    kelly_window: int = 50
    kelly_min_trades: int = 20
    kelly_prior: float = 0.5
    kelly_prior_trades: float = 10.0
    max_leverage: float = 1.0
    var_budget: float = 0.02
    var_confidence: float = 0.99
    var_horizon_bars: float = 1440.0
    ewma_lambda: float = 0.999
    min_trade_fraction: float = 0.01
    halt_drawdown: float = 0.20
    halt_window_ns: int = 3_600_000_000_000
    ladder_drawdown: tuple[float, float, float] = (0.05, 0.10, 0.15)
    ladder_pause_ns: tuple[int, int, int] = (3_600 * 10**9, 4 * 3_600 * 10**9, 24 * 3_600 * 10**9)
    stale_after_ns: int = 300 * 10**9
    daily_loss_pause: float = -0.03
    alert_drawdown_warning: float = 0.10
    alert_drawdown_critical: float = 0.15
    alert_daily_pnl_warning: float = -0.02
    alert_daily_pnl_critical: float = -0.03
    # state
    state: str = field(default="ACTIVE", init=False)
    stale: bool = field(default=False, init=False)
    flatten: bool = field(default=False, init=False)
    started: bool = field(default=False, init=False)
    peak: float = field(default=0.0, init=False)  # the ladder's reference equity
    drawdown: float = field(default=0.0, init=False)  # from the reference equity
    high: float = field(default=0.0, init=False)  # all-time high (alerts)
    high_drawdown: float = field(default=0.0, init=False)
    ladder_level: int = field(default=0, init=False)
    stopped: bool = field(default=False, init=False)  # a drawdown stop's pause is running
    dd_warned: bool = field(default=False, init=False)
    dd_critical: bool = field(default=False, init=False)
    paused_until: int = field(default=0, init=False)
    last_ts: int = field(default=0, init=False)
    day: int = field(default=0, init=False)
    day_start_equity: float = field(default=0.0, init=False)
    last_equity: float = field(default=0.0, init=False)
    daily_pnl: float = field(default=0.0, init=False)
    day_warned: bool = field(default=False, init=False)
    day_critical: bool = field(default=False, init=False)
    day_paused: bool = field(default=False, init=False)
    window: deque[tuple[int, float]] = field(default_factory=deque, init=False)
    ewma_var: float = field(default=0.0, init=False)
    ewma_count: int = field(default=0, init=False)
    trades: deque[float] = field(default_factory=deque, init=False)

    @classmethod
    def from_config(cls, config: Any) -> PlainRisk:
        """The same limits as `config` (a colmena._core.RiskConfig or anything with its fields)."""
        values = {f.name: getattr(config, f.name) for f in dataclasses.fields(cls) if f.init}
        values["ladder_drawdown"] = tuple(values["ladder_drawdown"])
        values["ladder_pause_ns"] = tuple(values["ladder_pause_ns"])
        return cls(**values)

    def _set_state(self, state: str, ts: int, events: list[Event]) -> None:
        if state == self.state:
            return
        self.state = state
        events.append((ts, "regime_changed", STATES.index(state), self.drawdown))

    def observe(self, ts: int, equity: float, bar_log_return: float, events: list[Event]) -> None:
        """Mark to market at the close `ts`: volatility, daily PnL, pauses, breakers, alerts."""
        if self.started and ts < self.last_ts:
            raise ValueError("time went backwards")
        if math.isnan(equity):
            raise ValueError("equity is NaN")
        self.last_ts = ts
        r = bar_log_return
        if math.isfinite(r):
            if self.ewma_count == 0:
                self.ewma_var = r * r
            else:
                self.ewma_var = self.ewma_lambda * self.ewma_var + (1.0 - self.ewma_lambda) * (
                    r * r
                )
            self.ewma_count += 1

        # The UTC day's PnL against the last equity of the previous day.
        day = ts // NS_PER_DAY
        if not self.started or day != self.day:
            self.day_start_equity = self.last_equity if self.started else equity
            self.day = day
            self.day_warned = self.day_critical = self.day_paused = False
        self.last_equity = equity
        self.daily_pnl = (
            equity / self.day_start_equity - 1.0 if self.day_start_equity > 0.0 else 0.0
        )
        if self.daily_pnl < self.alert_daily_pnl_warning and not self.day_warned:
            self.day_warned = True
            events.append((ts, "alert", DAILY_PNL_WARNING, self.daily_pnl))
        if self.daily_pnl < self.alert_daily_pnl_critical and not self.day_critical:
            self.day_critical = True
            events.append((ts, "alert", DAILY_PNL_CRITICAL, self.daily_pnl))

        # A pause that has run out; the end of a drawdown stop's pause re-arms the ladder.
        if self.state == "PAUSED" and ts >= self.paused_until:
            if self.stopped:
                self.stopped = False
                self.peak = equity
                self.ladder_level = 0
                events.append((ts, "drawdown_threshold", LADDER_REARMED, equity))
            self._set_state("REDUCING" if self.stale else "ACTIVE", ts, events)

        # Kill switch: the fall from the highest equity of the trailing window.
        self.window.append((ts, equity))
        while self.window[0][0] < ts - self.halt_window_ns:
            self.window.popleft()
        top = max(e for _, e in self.window)
        if (
            self.state != "HALTED"
            and top > 0.0
            and (equity <= 0.0 or (top - equity) / top > self.halt_drawdown)
        ):
            dd = 1.0 if equity <= 0.0 else (top - equity) / top
            events.append((ts, "drawdown_threshold", KILL_SWITCH, dd))
            self._set_state("HALTED", ts, events)

        # The ladder, on the drawdown from its reference equity.
        if not self.started or equity > self.peak:
            self.peak = equity
            self.ladder_level = 0
        self.drawdown = max(0.0, 1.0 - equity / self.peak) if self.peak > 0.0 else 0.0
        level = 0
        for i, threshold in enumerate(self.ladder_drawdown):
            if self.drawdown > threshold:
                level = i + 1
        if level > self.ladder_level:
            for code in range(self.ladder_level + 1, level + 1):
                events.append((ts, "drawdown_threshold", code, self.drawdown))
            self.ladder_level = level
            if self.state != "HALTED":
                self.paused_until = max(self.paused_until, ts + self.ladder_pause_ns[level - 1])
                if level == 3:
                    self.flatten = True
                    self.stopped = True
                self._set_state("PAUSED", ts, events)

        # Daily loss: paused (reduce-only, no flatten) until the next UTC midnight.
        if self.daily_pnl < self.daily_loss_pause and not self.day_paused:
            self.day_paused = True
            events.append((ts, "drawdown_threshold", DAILY_LOSS, self.daily_pnl))
            if self.state != "HALTED":
                self.paused_until = max(self.paused_until, (day + 1) * NS_PER_DAY)
                self._set_state("PAUSED", ts, events)

        # Alerts on the drawdown from the all-time high.
        if not self.started or equity > self.high:
            self.high = equity
            self.dd_warned = self.dd_critical = False
        self.high_drawdown = max(0.0, 1.0 - equity / self.high) if self.high > 0.0 else 0.0
        if self.high_drawdown > self.alert_drawdown_warning and not self.dd_warned:
            self.dd_warned = True
            events.append((ts, "alert", DRAWDOWN_WARNING, self.high_drawdown))
        if self.high_drawdown > self.alert_drawdown_critical and not self.dd_critical:
            self.dd_critical = True
            events.append((ts, "alert", DRAWDOWN_CRITICAL, self.high_drawdown))
        self.started = True

    def observe_data_age(self, ts: int, newest_candle_ts: int, events: list[Event]) -> None:
        """Stale data (newest candle older than stale_after): REDUCING until a fresh candle."""
        age = ts - newest_candle_ts
        stale = age > self.stale_after_ns
        if stale and not self.stale:
            events.append((ts, "alert", DATA_FEED_SILENT, float(age) / 1e9))
            if self.state == "ACTIVE":
                self._set_state("REDUCING", ts, events)
        elif not stale and self.stale and self.state == "REDUCING":
            self._set_state("ACTIVE", ts, events)
        self.stale = stale

    def kelly(self) -> float:
        """f = (n f_hat + m f0) / (n + m) from the last closed trades; f0 before min trades."""
        n = len(self.trades)
        if n == 0 or n < self.kelly_min_trades:
            return self.kelly_prior
        win_sum = loss_sum = 0.0
        wins = losses = 0
        for pnl in self.trades:
            if pnl > 0.0:
                win_sum += pnl
                wins += 1
            elif pnl < 0.0:
                loss_sum -= pnl
                losses += 1
        estimate = 0.0
        if losses == 0:
            estimate = 1.0 if wins > 0 else 0.0
        elif wins > 0:
            w = wins / n
            payoff = (win_sum / wins) / (loss_sum / losses)
            estimate = _clamp(w - (1.0 - w) / payoff, 0.0, 1.0)
        m = self.kelly_prior_trades
        return (n * estimate + m * self.kelly_prior) / (n + m)

    def bar_volatility(self) -> float:
        if self.ewma_count < MIN_VOLATILITY_BARS:
            return math.nan
        return math.sqrt(self.ewma_var)

    def record_trade(self, pnl: float) -> None:
        if not math.isfinite(pnl):
            return
        self.trades.append(pnl)
        while len(self.trades) > self.kelly_window:
            self.trades.popleft()

    def reset_model_estimates(self) -> None:
        """A new model takes over: forget the Kelly window (account state carries over)."""
        self.trades.clear()

    def decide(self, action: int, signal: float, current: float) -> Decision:
        """The target exposure for `action` given the current exposure (fraction of equity)."""
        if self.state == "HALTED":
            verdict = "flatten_halted" if current != 0.0 else "rejected_halted"
            return Decision(0.0, 0.0, verdict, current != 0.0)
        if self.flatten:
            return Decision(0.0, 0.0, "flatten_stop", current != 0.0)
        if action == HOLD:
            return Decision(0.0, current, "hold", False)
        if action in (GATED_FLAT, END_OF_RUN):
            verdict = "gated_flat" if action == GATED_FLAT else "end_of_run"
            return Decision(0.0, 0.0, verdict, current != 0.0)
        if not math.isfinite(signal):
            return Decision(0.0, current, "no_signal", False)
        kelly = self.kelly()
        requested = _clamp(signal, -1.0, 1.0) * self.kelly_multiplier * kelly
        target = requested
        verdict = "accepted" if kelly > 0.0 else "zero_kelly"
        if abs(target) > self.max_leverage:
            target = _sign(target) * self.max_leverage
            verdict = "resized_leverage"
        vol = self.bar_volatility()
        if math.isfinite(vol):
            z = -NormalDist().inv_cdf(1.0 - self.var_confidence)
            unit_var = z * vol * math.sqrt(self.var_horizon_bars)
        else:
            unit_var = math.inf
        # The VaR cap applies to a nonzero target only.
        if target != 0.0 and (
            abs(target) * unit_var > self.var_budget or not math.isfinite(unit_var)
        ):
            if math.isfinite(unit_var) and unit_var > 0.0:
                target = _sign(target) * self.var_budget / unit_var
            else:
                target = 0.0
            verdict = "resized_var"
        if self.state in ("PAUSED", "REDUCING"):
            allowed = target
            if current == 0.0 or _sign(target) != _sign(current):
                allowed = 0.0
            elif abs(target) > abs(current):
                allowed = current
            if allowed != target:
                target = allowed
                verdict = "reduce_only_paused" if self.state == "PAUSED" else "reduce_only_stale"
        closing = target == 0.0 and current != 0.0
        if abs(target - current) < self.min_trade_fraction and not closing:
            if verdict == "accepted":
                verdict = "skipped_small_change"
            return Decision(requested, current, verdict, False)
        return Decision(requested, target, verdict, True)

    def allowed_quantity(self, quantity: float, position: float) -> float:
        """Reduce-only outside ACTIVE: the part of an order that does not add exposure."""
        if self.state == "ACTIVE":
            return quantity
        if position == 0.0 or _sign(quantity) == _sign(position):
            return 0.0
        return _sign(quantity) * min(abs(quantity), abs(position))


@dataclass
class Fill:
    ts: int
    quantity: float  # signed base units filled
    price: float
    fee: float
    slippage_cost: float
    requested: float


@dataclass
class PlainExecutor:
    """Paper execution with fees, slippage, partial fills and borrow (see paper_executor.hpp)."""

    initial_cash: float = 100_000.0
    fee_bps: float = 10.0
    slippage_bps: float = 2.0
    impact_bps: float = 10.0
    max_participation: float = 0.1
    borrow_bps_per_day: float = 0.0
    allow_short: bool = True
    # state
    cash: float = field(default=0.0, init=False)
    position: float = field(default=0.0, init=False)
    avg_price: float = field(default=0.0, init=False)
    realized: float = field(default=0.0, init=False)
    fees: float = field(default=0.0, init=False)
    slippage: float = field(default=0.0, init=False)
    borrow: float = field(default=0.0, init=False)
    traded: float = field(default=0.0, init=False)
    n_fills: int = field(default=0, init=False)
    trade_pnl: float = field(default=0.0, init=False)
    trade_open_ts: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self.cash = self.initial_cash

    @classmethod
    def from_config(cls, config: Any) -> PlainExecutor:
        """The same rules as `config` (a colmena._core.ExecutionConfig or alike), a new book."""
        return cls(**{f.name: getattr(config, f.name) for f in dataclasses.fields(cls) if f.init})

    def fresh(self, **changes: Any) -> PlainExecutor:
        """A new, empty book with these rules (state is not copied), with `changes` applied."""
        return dataclasses.replace(self, **changes)

    def equity(self, mark: float) -> float:
        return self.cash + self.position * mark

    def clip_to_market(self, quantity: float) -> float:
        """Spot (allow_short false): a sell may take the position to flat, not below."""
        if self.allow_short or quantity >= 0.0:
            return quantity
        return max(quantity, -max(self.position, 0.0))

    def accrue_borrow(self, mark: float, days: float) -> float:
        """Charge the borrow cost of a short position held `days` days, valued at `mark`."""
        if not (self.position < 0.0) or not (self.borrow_bps_per_day > 0.0) or not (days > 0.0):
            return 0.0
        if not (math.isfinite(mark) and mark > 0.0):
            return 0.0
        cost = -self.position * mark * self.borrow_bps_per_day / 1e4 * days
        self.cash -= cost
        self.borrow += cost
        self.trade_pnl -= cost
        return cost

    def execute(
        self, ts: int, quantity: float, open_price: float, volume: float, closed: list[Trade]
    ) -> tuple[Fill | None, int | None]:
        """Fill at the open of a bar: (the fill or None, the error code or None)."""
        if not math.isfinite(quantity):
            return None, None
        quantity = self.clip_to_market(quantity)
        if quantity == 0.0:
            return None, None
        if not (math.isfinite(open_price) and open_price > 0.0):
            return None, NON_FINITE_PRICE
        if not (volume > 0.0):
            return None, NO_VOLUME
        side = _sign(quantity)
        size = min(abs(quantity), self.max_participation * volume)
        q = side * size
        participation = size / volume
        slip_bps = self.slippage_bps + self.impact_bps * participation
        price = open_price * (1.0 + side * slip_bps / 1e4)
        fee = size * price * self.fee_bps / 1e4
        fill = Fill(ts, q, price, fee, size * open_price * slip_bps / 1e4, quantity)
        pos = self.position
        if pos == 0.0 or _sign(pos) == side:
            if pos == 0.0:  # a round trip opens
                self.trade_open_ts = ts
                self.trade_pnl = 0.0
            self.avg_price = (self.avg_price * abs(pos) + price * size) / (abs(pos) + size)
            self.trade_pnl -= fee
            self.position = pos + q
        else:
            closing = min(size, abs(pos))
            realized = closing * (price - self.avg_price) * _sign(pos)
            self.realized += realized
            closing_fee = fee * closing / size
            self.trade_pnl += realized - closing_fee
            if size >= abs(pos):  # the round trip closes
                closed.append((self.trade_open_ts, ts, _sign(pos), self.trade_pnl))
                rest = size - abs(pos)
                if rest > 0.0:  # flip: a new round trip opens with the rest
                    self.position = side * rest
                    self.avg_price = price
                    self.trade_open_ts = ts
                    self.trade_pnl = -(fee - closing_fee)
                else:
                    self.position = 0.0
                    self.avg_price = 0.0
                    self.trade_pnl = 0.0
            else:
                self.position = pos + q
        self.cash -= q * price + fee
        self.fees += fee
        self.slippage += fill.slippage_cost
        self.traded += size * price
        self.n_fills += 1
        return fill, None


@dataclass
class Order:
    bar: int  # decision bar (fills at bar + 1)
    quantity: float
    target: float
    filled: float
    origin: str


@dataclass
class StepResult:
    fill: Fill | None
    cash: float
    position: float
    equity: float
    decision: Decision
    kelly: float
    state: str
    order: Order | None


def _order_quantity(target: float, equity: float, price: float, position: float) -> float:
    """Base units that move the position to `target` (fraction of equity) at `price`."""
    if target == 0.0:
        return -position
    return target * equity / price - position


class PlainLoop:
    """The trading loop: fill at the open, borrow and mark at the close, decide for the next open.

    With `risk` (risk mode) targets are sized and limited by it and a shadow book at unit exposure
    feeds its Kelly estimate; without (pass-through mode) the target is the clamped signal and
    changes below `min_trade_fraction` are skipped.
    """

    def __init__(
        self,
        execution: PlainExecutor,
        risk: PlainRisk | None,
        bar_ns: int,
        min_trade_fraction: float = 0.0,
    ) -> None:
        if bar_ns <= 0:
            raise ValueError("bar length must be > 0")
        self.executor = execution
        self.risk = risk
        self.min_trade_fraction = (
            risk.min_trade_fraction if risk is not None else min_trade_fraction
        )
        self.bar_ns = bar_ns
        self.shadow = self._new_shadow()
        self.bars = 0
        self.last_ts = 0
        self.last_close = 0.0
        self.pending = 0.0  # order quantity for the next open
        self.remainder = 0.0  # unfilled part of the last order
        self.shadow_pending = 0.0

    def _new_shadow(self) -> PlainExecutor:
        # Unit starting equity, no impact, no volume limit; the same fees, slippage and borrow.
        return self.executor.fresh(initial_cash=1.0, impact_bps=0.0, max_participation=1.0)

    def _clamp_signal(self, signal: float) -> float:
        return _clamp(signal, -1.0 if self.executor.allow_short else 0.0, 1.0)

    def _fill_pending(
        self, ts: int, open_price: float, volume: float, events: list[Event], closed: list[Trade]
    ) -> Fill | None:
        ex = self.executor
        allowed = (
            self.risk.allowed_quantity(self.pending, ex.position)
            if self.risk is not None
            else self.pending
        )
        market = ex.clip_to_market(allowed)
        fill, error = ex.execute(ts, market, open_price, volume, closed)
        if fill is not None:
            self.remainder = market - fill.quantity  # the volume-limited part
            events.append((ts, "trade_executed", 0, fill.quantity))
        elif market != 0.0:
            code = NO_VOLUME if error is None else error
            events.append((ts, "error", code, market))
            self.remainder = market if code == NO_VOLUME else 0.0
        else:
            self.remainder = 0.0
        self.pending = 0.0
        return fill

    def _decide_shadow(self, action: int, signal: float, close: float) -> None:
        if action == DECIDE:
            if not math.isfinite(signal):
                return
            unit = self._clamp_signal(signal)
        elif action == HOLD:
            return
        else:  # gated_flat, end_of_run: flat
            unit = 0.0
        equity = self.shadow.equity(close)
        position = self.shadow.position
        current = position * close / equity if equity > 0.0 else 0.0
        closing = unit == 0.0 and position != 0.0
        if not closing and abs(unit - current) < self.min_trade_fraction:
            return
        if not (equity > 0.0) and unit != 0.0:
            return
        self.shadow_pending = _order_quantity(unit, equity, close, position)

    def _pass_through(
        self, action: int, clamped: float, current: float, position: float
    ) -> Decision:
        if action == HOLD:
            return Decision(0.0, current, "hold", False)
        if action in (GATED_FLAT, END_OF_RUN):
            verdict = "gated_flat" if action == GATED_FLAT else "end_of_run"
            return Decision(0.0, 0.0, verdict, position != 0.0)
        if not math.isfinite(clamped):
            return Decision(0.0, current, "no_signal", False)
        closing = clamped == 0.0 and position != 0.0
        if not closing and abs(clamped - current) < self.min_trade_fraction:
            return Decision(clamped, current, "skipped_small_change", False)
        return Decision(clamped, clamped, "accepted", True)

    def step(
        self,
        ts: int,
        open_price: float,
        close: float,
        volume: float,
        action: int,
        signal: float,
        new_model: bool,
        can_order: bool,
        events: list[Event],
        closed: list[Trade],
    ) -> StepResult:
        """Bar `ts` (its open time): fill, borrow, mark, observe, decide (see the class doc)."""
        if self.bars > 0 and ts <= self.last_ts:
            raise ValueError("timestamps must increase")
        risk, ex = self.risk, self.executor
        # 1. The open of the bar.
        if risk is not None and self.bars > 0:
            risk.observe_data_age(ts, self.last_ts + self.bar_ns, events)
        if new_model and risk is not None:
            risk.reset_model_estimates()
            self.shadow = self._new_shadow()
            self.shadow_pending = 0.0
        fill = None
        if self.pending != 0.0:
            fill = self._fill_pending(ts, open_price, volume, events, closed)
        if self.shadow_pending != 0.0:
            shadow_closed: list[Trade] = []
            self.shadow.execute(ts, self.shadow_pending, open_price, math.inf, shadow_closed)
            self.shadow_pending = 0.0
            for trade in shadow_closed:
                assert risk is not None
                risk.record_trade(trade[3])
        # 2. The close of the bar: borrow for the time since the previous close, mark, observe.
        close_ts = ts + self.bar_ns
        held_ns = ts - self.last_ts if self.bars > 0 else self.bar_ns
        held_days = float(held_ns) / float(NS_PER_DAY)
        ex.accrue_borrow(close, held_days)
        if risk is not None:
            self.shadow.accrue_borrow(close, held_days)
        equity = ex.equity(close)
        if risk is not None:
            bar_return = math.log(close / self.last_close) if self.bars > 0 else math.nan
            risk.observe_data_age(close_ts, close_ts, events)
            risk.observe(close_ts, equity, bar_return, events)
        # 3. The decision for the next open.
        position = ex.position
        if equity > 0.0:
            current = position * close / equity
        else:  # no equity left: a position still counts, so that a halt flattens it
            current = math.copysign(1.0, position) if position != 0.0 else 0.0
        clamped = self._clamp_signal(signal) if math.isfinite(signal) else math.nan
        if risk is not None:
            if risk.flatten and position == 0.0:  # the stop flattens until flat
                risk.flatten = False
            decision = risk.decide(action, clamped, current)
            kelly = risk.kelly()
            state = risk.state
            self._decide_shadow(action, clamped, close)
        else:
            decision = self._pass_through(action, clamped, current, position)
            kelly = math.nan
            state = "ACTIVE"
        order = None
        if can_order:
            quantity = 0.0
            origin = "decision"
            if decision.place_order:
                quantity = _order_quantity(decision.target, equity, close, position)
                if decision.verdict in ("flatten_halted", "flatten_stop"):
                    origin = "risk"
                elif decision.verdict == "end_of_run":
                    origin = "end_of_run"
            elif decision.verdict == "hold" and self.remainder != 0.0:
                allowed = (
                    risk.allowed_quantity(self.remainder, position)
                    if risk is not None
                    else self.remainder
                )
                if ex.clip_to_market(allowed) != 0.0:
                    quantity = self.remainder
                    origin = "remainder"
            if quantity != 0.0 and math.isfinite(quantity):
                self.pending = quantity
                order = Order(self.bars, quantity, decision.target, 0.0, origin)
            self.remainder = 0.0  # replaced by the new order, or nothing left to work
        self.last_ts = ts
        self.last_close = close
        self.bars += 1
        return StepResult(fill, ex.cash, ex.position, equity, decision, kelly, state, order)


def plain_backtest(
    ts: Sequence[int],
    open_: Sequence[float],
    close: Sequence[float],
    volume: Sequence[float],
    signal: Sequence[float],
    bar_ns: int,
    risk: PlainRisk | None = None,
    execution: PlainExecutor | None = None,
    action: Sequence[int] | None = None,
    model: Sequence[int] | None = None,
) -> dict[str, Any]:
    """colmena._core.run_backtest in plain Python (risk mode, every bar through the loop).

    `action` (codes HOLD, DECIDE, GATED_FLAT, END_OF_RUN per bar; None: decide everywhere) and
    `model` (id per bar; a change restarts the Kelly window and the shadow book) as in the core.
    Returns per-bar lists (equity, position, cash, target, requested, kelly, verdict, state), the
    orders, the fills as (bar, quantity, price, fee, slippage_cost, requested), the real book's
    closed trades, the events and the cost totals.
    """
    risk = risk if risk is not None else PlainRisk()
    ex = execution if execution is not None else PlainExecutor()
    loop = PlainLoop(ex, risk, bar_ns)
    n = len(ts)
    if n == 0:
        raise ValueError("no bars")
    out: dict[str, Any] = {
        k: []
        for k in ("equity", "position", "cash", "target", "requested", "kelly", "verdict", "state")
    }
    orders: list[Order] = []
    fills: list[tuple[int, float, float, float, float, float]] = []
    trades: list[Trade] = []
    events: list[Event] = []
    waiting: Order | None = None  # the order that fills (or not) at this bar's open
    for t in range(n):
        a = DECIDE if action is None else int(action[t])
        if a not in (HOLD, DECIDE, GATED_FLAT, END_OF_RUN):
            raise ValueError(f"unknown action {a} at row {t}")
        new_model = model is not None and t > 0 and model[t] != model[t - 1]
        r = loop.step(
            ts[t], open_[t], close[t], volume[t], a, signal[t], new_model, t + 1 < n, events,
            trades,
        )  # fmt: skip
        if waiting is not None:
            waiting.filled = r.fill.quantity if r.fill else 0.0
            waiting = None
        if r.fill:
            f = r.fill
            fills.append((t, f.quantity, f.price, f.fee, f.slippage_cost, f.requested))
        if r.order:
            orders.append(r.order)
            waiting = r.order
        out["equity"].append(r.equity)
        out["position"].append(r.position)
        out["cash"].append(r.cash)
        out["target"].append(r.decision.target)
        out["requested"].append(r.decision.requested)
        out["kelly"].append(r.kelly)
        out["verdict"].append(r.decision.verdict)
        out["state"].append(r.state)
    out.update(
        orders=orders, fills=fills, trades=trades, events=events, fees_paid=ex.fees,
        slippage_paid=ex.slippage, borrow_paid=ex.borrow,
    )  # fmt: skip
    return out


def plain_simulate_targets(
    ts: Sequence[int],
    open_: Sequence[float],
    close: Sequence[float],
    volume: Sequence[float],
    decide: Sequence[int],
    signals: Sequence[float],
    mark_rows: Sequence[int],
    bar_ns: int,
    execution: PlainExecutor,
    min_trade_fraction: float = 0.0,
    wind_down_bars: int = 30,
) -> dict[str, Any]:
    """colmena._core.simulate_targets for one signal row, in plain Python (pass-through mode).

    `signals` holds one value per decision bar (nonzero `decide`), as float32 values in the core.
    The last `wind_down_bars` bars an order can follow (n - 1 - wind_down_bars .. n - 2) target
    flat (end_of_run); 0 keeps the position open at the end.
    Returns the equity at `mark_rows`, the cost totals of the row and the origins of its orders.
    """
    n = len(ts)
    loop = PlainLoop(execution, None, bar_ns, min_trade_fraction)
    events: list[Event] = []
    closed: list[Trade] = []
    marks: list[float] = []
    origins: list[str] = []  # of the orders submitted (not in the core's result)
    decision = mark = 0
    wind_down = min(wind_down_bars, n - 1 if n > 0 else 0)
    wind_down_from = n - 1 - wind_down  # the first end_of_run bar
    for t in range(n):
        a, s = HOLD, math.nan
        if decide[t]:
            a, s = DECIDE, float(signals[decision])
            decision += 1
        if wind_down > 0 and t >= wind_down_from and t + 1 < n:
            a = END_OF_RUN
        r = loop.step(ts[t], open_[t], close[t], volume[t], a, s, False, t + 1 < n, events, closed)
        if r.order:
            origins.append(r.order.origin)
        if mark < len(mark_rows) and mark_rows[mark] == t:
            marks.append(r.equity)
            mark += 1
        events.clear()
        closed.clear()
    ex = loop.executor
    return {
        "equity": marks, "fees": ex.fees, "slippage": ex.slippage, "borrow": ex.borrow,
        "traded_notional": ex.traded, "final_position": ex.position, "n_fills": ex.n_fills,
        "origins": origins,
    }  # fmt: skip


def _first_difference(a: Sequence[Any], b: Sequence[Any]) -> str:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return f"first difference at {i}: core {x!r}, plain {y!r}"
    return f"lengths differ: core {len(a)}, plain {len(b)}"


def assert_matches_core(core: dict[str, Any], ref: dict[str, Any], rtol: float = 1e-12) -> None:
    """Assert that a colmena._core.run_backtest result equals plain_backtest's, bar for bar.

    Names (verdicts, states, order origins, event types), bars, codes and sides must be equal;
    numbers agree to `rtol` (absolute slack only where a value can be near zero).
    """
    import numpy as np  # only for the comparison, never in the model

    from colmena import _core

    def close(name: str, a: Any, b: Any, atol: float = 0.0) -> None:
        np.testing.assert_allclose(
            np.asarray(a, dtype=float), np.asarray(b, dtype=float), rtol=rtol, atol=atol,
            err_msg=name,
        )  # fmt: skip

    def equal(name: str, a: Sequence[Any], b: Sequence[Any]) -> None:
        assert list(a) == list(b), f"{name}: {_first_difference(list(a), list(b))}"

    verdicts, states = _core.verdict_names(), _core.trading_state_names()
    origins, types = _core.order_origin_names(), _core.event_type_names()
    equal("verdict", [verdicts[v] for v in core["verdict"]], ref["verdict"])
    equal("state", [states[s] for s in core["state"]], ref["state"])
    close("equity", core["equity"], ref["equity"])
    close("cash", core["cash"], ref["cash"], atol=1e-9)
    close("position", core["position"], ref["position"], atol=1e-12)
    close("kelly", core["kelly"], ref["kelly"])
    close("target", core["target"], ref["target"], atol=1e-15)
    close("requested", core["requested"], ref["requested"], atol=1e-15)

    orders = ref["orders"]
    equal("order_bar", core["order_bar"].tolist(), [o.bar for o in orders])
    equal("order_origin", [origins[o] for o in core["order_origin"]], [o.origin for o in orders])
    close("order_quantity", core["order_quantity"], [o.quantity for o in orders], atol=1e-12)
    close("order_target", core["order_target"], [o.target for o in orders], atol=1e-15)
    close("order_filled", core["order_filled"], [o.filled for o in orders], atol=1e-12)

    fills = ref["fills"]
    equal("fill_bar", core["fill_bar"].tolist(), [f[0] for f in fills])
    for i, name in enumerate(("quantity", "price", "fee", "slippage_cost", "requested"), 1):
        close(f"fill_{name}", core[f"fill_{name}"], [f[i] for f in fills], atol=1e-12)

    trades = ref["trades"]
    equal("trade_open_ts", core["trade_open_ts"].tolist(), [t[0] for t in trades])
    equal("trade_close_ts", core["trade_close_ts"].tolist(), [t[1] for t in trades])
    equal("trade_side", core["trade_side"].tolist(), [t[2] for t in trades])
    close("trade_pnl", core["trade_pnl"], [t[3] for t in trades], atol=1e-9)

    events = ref["events"]
    equal("event_ts", core["event_ts"].tolist(), [e[0] for e in events])
    equal("event_type", [types[e] for e in core["event_type"]], [e[1] for e in events])
    equal("event_code", core["event_code"].tolist(), [e[2] for e in events])
    close("event_value", core["event_value"], [e[3] for e in events], atol=1e-15)

    for name in ("fees_paid", "slippage_paid", "borrow_paid"):
        close(name, core[name], ref[name], atol=1e-12)
