"""A plain-Python model of the core's backtest loop (RiskManager + PaperExecutor).

Written from the documented rules, line by line and without NumPy in the loop, as an independent
reference: tests compare the compiled loop with it, and bench/ times it as the plain peer.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from statistics import NormalDist

NS_PER_DAY = 86_400_000_000_000


def _sign(x: float) -> float:
    return (x > 0) - (x < 0)


@dataclass
class PlainRisk:
    kelly_multiplier: float = 0.25
    kelly_window: int = 50
    kelly_min_trades: int = 20
    kelly_prior: float = 0.5
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
    # state
    state: str = "ACTIVE"
    stale: bool = False
    flatten: bool = False
    started: bool = False
    peak: float = 0.0
    drawdown: float = 0.0
    ladder_level: int = 0
    paused_until: int = 0
    window: deque = field(default_factory=deque)  # type: ignore[type-arg]
    ewma_var: float = 0.0
    ewma_count: int = 0
    trades: deque = field(default_factory=deque)  # type: ignore[type-arg]

    def observe(self, ts: int, equity: float, r: float) -> None:
        if math.isfinite(r):
            self.ewma_var = (
                r * r
                if self.ewma_count == 0
                else self.ewma_lambda * self.ewma_var + (1 - self.ewma_lambda) * r * r
            )
            self.ewma_count += 1
        if self.state == "PAUSED" and ts >= self.paused_until:
            self.state = "REDUCING" if self.stale else "ACTIVE"
        self.window.append((ts, equity))
        while self.window[0][0] < ts - self.halt_window_ns:
            self.window.popleft()
        top = max(e for _, e in self.window)
        if (
            self.state != "HALTED"
            and top > 0
            and (equity <= 0 or (top - equity) / top > self.halt_drawdown)
        ):
            self.state = "HALTED"
        if not self.started or equity > self.peak:
            self.peak = equity
            self.ladder_level = 0
        self.drawdown = max(0.0, 1 - equity / self.peak) if self.peak > 0 else 0.0
        level = sum(1 for d in self.ladder_drawdown if self.drawdown > d)
        if level > self.ladder_level:
            self.ladder_level = level
            if self.state != "HALTED":
                self.paused_until = max(self.paused_until, ts + self.ladder_pause_ns[level - 1])
                if level == 3:
                    self.flatten = True
                self.state = "PAUSED"
        self.started = True

    def observe_data_age(self, ts: int, newest: int) -> None:
        stale = ts - newest > self.stale_after_ns
        if stale and not self.stale and self.state == "ACTIVE":
            self.state = "REDUCING"
        elif not stale and self.stale and self.state == "REDUCING":
            self.state = "ACTIVE"
        self.stale = stale

    def kelly(self) -> float:
        if len(self.trades) < self.kelly_min_trades or not self.trades:
            return self.kelly_prior
        wins = [p for p in self.trades if p > 0]
        losses = [-p for p in self.trades if p < 0]
        if not losses:
            return 1.0 if wins else 0.0
        if not wins:
            return 0.0
        w = len(wins) / len(self.trades)
        payoff = (sum(wins) / len(wins)) / (sum(losses) / len(losses))
        return min(max(w - (1 - w) / payoff, 0.0), 1.0)

    def decide(self, signal: float, current: float) -> tuple[float, float, str, bool]:
        if self.state == "HALTED":
            return 0.0, 0.0, "flatten_halted" if current != 0 else "rejected_halted", current != 0
        if self.flatten:
            return 0.0, 0.0, "flatten_stop", current != 0
        if not math.isfinite(signal):
            return 0.0, current, "no_signal", False
        requested = min(max(signal, -1.0), 1.0) * self.kelly_multiplier * self.kelly()
        target, verdict = requested, "accepted"
        if abs(target) > self.max_leverage:
            target, verdict = _sign(target) * self.max_leverage, "resized_leverage"
        vol = math.sqrt(self.ewma_var) if self.ewma_count >= 30 else math.nan
        z = -NormalDist().inv_cdf(1 - self.var_confidence)
        unit = z * vol * math.sqrt(self.var_horizon_bars) if math.isfinite(vol) else math.inf
        if abs(target) * unit > self.var_budget or not math.isfinite(unit):
            target = (
                _sign(target) * self.var_budget / unit if math.isfinite(unit) and unit > 0 else 0.0
            )
            verdict = "resized_var"
        if self.state in ("PAUSED", "REDUCING"):
            allowed = target
            if current == 0 or _sign(target) != _sign(current):
                allowed = 0.0
            elif abs(target) > abs(current):
                allowed = current
            if allowed != target:
                target = allowed
                verdict = "reduce_only_paused" if self.state == "PAUSED" else "reduce_only_stale"
        closing = target == 0 and current != 0
        if abs(target - current) < self.min_trade_fraction and not closing:
            return (
                requested,
                current,
                "skipped_small_change" if verdict == "accepted" else verdict,
                False,
            )
        return requested, target, verdict, True

    def allowed(self, q: float, pos: float) -> float:
        if self.state == "ACTIVE":
            return q
        if pos == 0 or _sign(q) == _sign(pos):
            return 0.0
        return _sign(q) * min(abs(q), abs(pos))


@dataclass
class PlainExecutor:
    cash: float = 100_000.0
    fee_bps: float = 10.0
    slippage_bps: float = 2.0
    impact_bps: float = 10.0
    max_participation: float = 0.1
    position: float = 0.0
    avg: float = 0.0
    trade_pnl: float = 0.0

    def execute(
        self, q: float, open_: float, volume: float
    ) -> tuple[float, float, float, list[float]]:
        closed: list[float] = []
        if q == 0 or volume <= 0:
            return 0.0, 0.0, 0.0, closed
        side = _sign(q)
        size = min(abs(q), self.max_participation * volume)
        q = side * size
        slip = self.slippage_bps + self.impact_bps * size / volume
        price = open_ * (1 + side * slip / 1e4)
        fee = size * price * self.fee_bps / 1e4
        pos = self.position
        if pos == 0 or _sign(pos) == side:
            if pos == 0:
                self.trade_pnl = 0.0
            self.avg = (self.avg * abs(pos) + price * size) / (abs(pos) + size)
            self.trade_pnl -= fee
            self.position = pos + q
        else:
            closing = min(size, abs(pos))
            realized = closing * (price - self.avg) * _sign(pos)
            closing_fee = fee * closing / size
            self.trade_pnl += realized - closing_fee
            if size >= abs(pos):
                closed.append(self.trade_pnl)
                rest = size - abs(pos)
                if rest > 0:
                    self.position, self.avg, self.trade_pnl = (
                        side * rest,
                        price,
                        -(fee - closing_fee),
                    )
                else:
                    self.position, self.avg, self.trade_pnl = 0.0, 0.0, 0.0
            else:
                self.position = pos + q
        self.cash -= q * price + fee
        return q, price, fee, closed


def plain_backtest(ts, open_, close, volume, signal, bar_ns, risk=None, execution=None):  # type: ignore[no-untyped-def]
    """The loop of colmena._core.run_backtest, in plain Python. Returns per-bar equity, position,
    target, verdict, state and the fills as (bar, quantity, price, fee)."""
    risk = risk or PlainRisk()
    ex = execution or PlainExecutor()
    n = len(ts)
    equity_out, position_out, target_out, verdict_out, state_out, fills = [], [], [], [], [], []
    pending = None
    for t in range(n):
        if t > 0:
            risk.observe_data_age(ts[t], ts[t - 1] + bar_ns)
        if pending is not None:
            q = risk.allowed(pending, ex.position)
            filled, price, fee, closed = ex.execute(q, open_[t], volume[t])
            if filled != 0:
                fills.append((t, filled, price, fee))
                for pnl in closed:
                    risk.trades.append(pnl)
                    while len(risk.trades) > risk.kelly_window:
                        risk.trades.popleft()
            pending = None
        close_ts = ts[t] + bar_ns
        equity = ex.cash + ex.position * close[t]
        r = math.log(close[t] / close[t - 1]) if t > 0 else math.nan
        risk.observe_data_age(close_ts, close_ts)
        risk.observe(close_ts, equity, r)
        current = ex.position * close[t] / equity if equity > 0 else 0.0
        _, target, verdict, place = risk.decide(signal[t], current)
        if verdict == "flatten_stop":
            risk.flatten = False
        if place and t + 1 < n:
            q = -ex.position if target == 0 else target * equity / close[t] - ex.position
            if q != 0:
                pending = q
        equity_out.append(equity)
        position_out.append(ex.position)
        target_out.append(target)
        verdict_out.append(verdict)
        state_out.append(risk.state)
    return {
        "equity": equity_out, "position": position_out, "target": target_out,
        "verdict": verdict_out, "state": state_out, "fills": fills,
    }  # fmt: skip
