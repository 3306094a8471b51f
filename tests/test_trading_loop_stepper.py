"""The trading loop stepped from Python (colmena.execution.trading_loop), whole and in halves.

(a) Stepping :class:`TradingLoop` bar by bar over real candles gives exactly what
``_core.run_backtest`` gives: cash, position, equity, targets, Kelly fractions, verdicts, states,
orders, fills, events and closed trades, compared with ``==``. (b) The two halves run apart, with
only their messages between them, encoded and decoded as msgpack on the way (as a service pair
over NATS would), give the same. (c) On scenarios with a drawdown stop and a halt, the stepper
agrees with the plain-Python reference model (tests/reference_backtest.py) bar for bar.
(d) Bad input raises a ValueError naming what is wrong and leaves the object as it was: the
following valid steps still reproduce run_backtest exactly.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest

from colmena import _core
from colmena.data import Candles, load_ohlcv
from colmena.execution import ExecutionSettings
from colmena.execution.trading_loop import (
    AccountSnapshot,
    Action,
    Bar,
    ExecutionReport,
    ExecutionStage,
    Order,
    RiskDecision,
    RiskGate,
    RiskStage,
    StepResult,
    TradingLoop,
)
from colmena.risk import RiskConfig

sys.path.insert(0, str(Path(__file__).parent))
from reference_backtest import PlainExecutor, PlainLoop, PlainRisk

MIN = 60_000_000_000
HOUR = 60 * MIN
ACTIONS: tuple[Action, ...] = ("hold", "decide", "gated_flat", "end_of_run")
HOLD, DECIDE, GATED_FLAT, END_OF_RUN = 0, 1, 2, 3

#: Full Kelly from a prior of 1 and hardly any VaR cap: exposures near 1, the breakers fire.
LEVERAGED: dict[str, Any] = {
    "kelly_prior": 1.0,
    "kelly_multiplier": 1.0,
    "max_leverage": 3.0,
    "var_budget": 5.0,
    "kelly_min_trades": 5,
    "kelly_window": 10,
}


@pytest.fixture(scope="module")
def btc_2018(shared_data_dir: Path) -> Candles:
    return load_ohlcv(shared_data_dir / "btcusd_bitfinex_1m_2018.parquet")


# ---------------------------------------------------------------- scenarios


@dataclass(frozen=True)
class Scenario:
    """Bars, a deterministic signal and the per-bar actions and model ids of one run."""

    candles: Candles
    signal: Any  # float64 [n_bars], NaN: no signal
    action: Any  # uint8 [n_bars] (Action codes)
    model: Any  # int64 [n_bars]
    risk: RiskConfig
    execution: ExecutionSettings

    @property
    def n(self) -> int:
        return len(self.candles)

    def bar(self, t: int) -> Bar:
        c = self.candles
        return Bar(
            int(c.ts[t]),
            float(c.open[t]),
            float(c.high[t]),
            float(c.low[t]),
            float(c.close[t]),
            float(c.volume[t]),
        )

    def inputs(self, t: int) -> tuple[Action, float | None, bool, bool]:
        """(action, signal or None, new_model, can_order) at bar t, as run_backtest reads them."""
        s = float(self.signal[t])
        new_model = t > 0 and self.model[t] != self.model[t - 1]
        signal = None if math.isnan(s) else s
        return ACTIONS[self.action[t]], signal, bool(new_model), t + 1 < self.n


def random_signal(n: int, seed: int, nan_share: float = 0.02, phi: float = 1.0) -> Any:
    """tanh of a Gaussian AR(1) walk x_t = phi x_(t-1) + e_t (phi 1: a random walk), NaN (no
    valid market state) at a share of the bars."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(0.0, 0.15, n)
    x = np.empty(n)
    level = 0.0
    for t in range(n):
        level = phi * level + noise[t]
        x[t] = level
    signal = np.tanh(x)
    signal[rng.random(n) < nan_share] = np.nan
    return signal


def hourly_models_spot(btc_2018: Candles) -> Scenario:
    """Decisions on the hour, holds between (volume-limited remainders worked), the longest data
    gap of the year (stale data), three models of which the second is gated, a wind-down."""
    c = btc_2018.slice(205_000, 230_000)
    n = len(c)
    action = np.where((c.ts + MIN) % HOUR == 0, DECIDE, HOLD).astype(np.uint8)
    action[n - 31 : n - 1] = END_OF_RUN
    model = np.zeros(n, dtype=np.int64)
    model[n // 3 :] = 1
    model[2 * n // 3 :] = 2
    action[(model == 1) & (action == DECIDE)] = GATED_FLAT
    signal = random_signal(n, 3, phi=0.995)
    # Around each gap longer than the stale limit: flat over the 4 hours before it, full long at
    # the close before it. The buy meets REDUCING (stale data) at the open after the gap, where
    # the reduce-only clip stops it.
    before_gap = np.flatnonzero(np.diff(c.ts) > 6 * MIN)
    before_gap = before_gap[(model[before_gap] == 2) & (before_gap < n - 32)]
    for t in before_gap:
        action[t - 240 : t] = DECIDE
        signal[t - 240 : t] = 0.0
    action[before_gap] = DECIDE
    signal[before_gap] = 1.0
    risk = RiskConfig(
        kelly_prior=0.6,
        kelly_multiplier=1.0,
        max_leverage=2.0,
        var_budget=5.0,
        kelly_min_trades=5,
        kelly_window=20,
    )
    execution = ExecutionSettings(max_participation=0.02)
    return Scenario(c, signal, action, model, risk, execution)


def every_bar_leveraged_margin(btc_2018: Candles) -> Scenario:
    """A decision at every bar, leveraged, on margin with borrow: breakers and daily-loss pauses."""
    c = btc_2018.slice(0, 20_000)
    n = len(c)
    action = np.full(n, DECIDE, dtype=np.uint8)
    risk = RiskConfig(**LEVERAGED)
    execution = ExecutionSettings(market="margin", borrow_bps_per_day=5.0, max_participation=0.05)
    return Scenario(c, random_signal(n, 0, 0.0), action, np.zeros(n, np.int64), risk, execution)


SCENARIOS: dict[str, Callable[[Candles], Scenario]] = {
    "hourly_models_spot": hourly_models_spot,
    "every_bar_leveraged_margin": every_bar_leveraged_margin,
}


def run_backtest(s: Scenario) -> dict[str, Any]:
    c = s.candles
    cols = [np.ascontiguousarray(getattr(c, k)) for k in ("ts", "open", "high", "low", "close")]
    return _core.run_backtest(
        *cols,
        np.ascontiguousarray(c.volume),
        s.signal,
        MIN,
        s.risk.to_core(),
        s.execution.to_core(),
        s.action,
        s.model,
    )


# ---------------------------------------------------------------- in run_backtest's layout


class Recorder:
    """Collects step results in the layout of run_backtest's dict, for a comparison with ==."""

    def __init__(self) -> None:
        self.rows: dict[str, list[Any]] = {
            k: [] for k in ("cash", "position", "equity", "requested", "target", "kelly")
        }
        self.rows.update(state=[], verdict=[])
        self.orders: list[list[Any]] = []  # [bar, quantity, target, origin, filled]
        self.fills: list[tuple[Any, ...]] = []
        self.events: list[tuple[Any, ...]] = []
        self.trades: list[tuple[Any, ...]] = []
        self.waiting: list[Any] | None = None

    def record(self, t: int, r: StepResult) -> None:
        if self.waiting is not None:
            self.waiting[4] = r.fill.quantity if r.fill else 0.0
            self.waiting = None
        if r.fill:
            f = r.fill
            self.fills.append((t, f.quantity, f.price, f.fee, f.slippage_cost, f.requested))
        if r.order:
            o = r.order
            assert o.bar == t
            self.orders.append([o.bar, o.quantity, o.target, o.origin, 0.0])
            self.waiting = self.orders[-1]
        d = r.decision
        for name, value in (
            ("cash", r.cash),
            ("position", r.position),
            ("equity", r.equity),
            ("requested", d.requested),
            ("target", d.target),
            ("kelly", d.kelly),
            ("state", d.state),
            ("verdict", d.verdict),
        ):
            self.rows[name].append(value)
        self.events += [(e.ts, e.type, e.code, e.value) for e in r.events]
        self.trades += [
            (x.open_ts, x.close_ts, x.side, x.pnl, x.quantity, x.entry_price, x.exit_price,
             x.fees, x.borrow, x.exit_origin)
            for x in r.closed_trades
        ]  # fmt: skip


def assert_bit_equal(rec: Recorder, core: dict[str, Any]) -> None:
    """Every recorded value equals run_backtest's exactly (floats with ==, names by code)."""

    def equal(name: str, ours: list[Any], theirs: Any) -> None:
        a, b = np.asarray(ours), np.asarray(theirs)
        assert a.shape == b.shape, f"{name}: {a.shape} != {b.shape}"
        same = a == b
        if a.dtype.kind == "f":
            same |= np.isnan(a) & np.isnan(b)
        if not np.all(same):
            i = int(np.argmin(same))
            pytest.fail(f"{name}: first difference at {i}: stepper {a[i]!r}, core {b[i]!r}")

    states, verdicts = _core.trading_state_names(), _core.verdict_names()
    origins, types = _core.order_origin_names(), _core.event_type_names()
    for name in ("cash", "position", "equity", "requested", "target", "kelly"):
        equal(name, rec.rows[name], core[name])
    equal("state", rec.rows["state"], [states[s] for s in core["state"]])
    equal("verdict", rec.rows["verdict"], [verdicts[v] for v in core["verdict"]])
    columns = list(zip(*rec.orders, strict=True)) if rec.orders else [[]] * 5
    for i, name in enumerate(("bar", "quantity", "target")):
        equal(f"order_{name}", list(columns[i]), core[f"order_{name}"])
    equal("order_origin", list(columns[3]), [origins[o] for o in core["order_origin"]])
    equal("order_filled", list(columns[4]), core["order_filled"])
    fills = list(zip(*rec.fills, strict=True)) if rec.fills else [[]] * 6
    for i, name in enumerate(("bar", "quantity", "price", "fee", "slippage_cost", "requested")):
        equal(f"fill_{name}", list(fills[i]), core[f"fill_{name}"])
    events = list(zip(*rec.events, strict=True)) if rec.events else [[]] * 4
    equal("event_ts", list(events[0]), core["event_ts"])
    equal("event_type", list(events[1]), [types[e] for e in core["event_type"]])
    equal("event_code", list(events[2]), core["event_code"])
    equal("event_value", list(events[3]), core["event_value"])
    trades = list(zip(*rec.trades, strict=True)) if rec.trades else [[]] * 10
    names = ("open_ts", "close_ts", "side", "pnl", "quantity", "entry_price", "exit_price")
    for i, name in enumerate((*names, "fees", "borrow")):
        equal(f"trade_{name}", list(trades[i]), core[f"trade_{name}"])
    equal("trade_exit_origin", list(trades[9]), [origins[o] for o in core["trade_exit_origin"]])


# ---------------------------------------------------------------- the halves as a service pair


def wire(message: Any) -> Any:
    """Through msgpack and back, as over a message bus; the type is kept, bits are kept."""
    return msgspec.msgpack.decode(msgspec.msgpack.encode(message), type=type(message))


class ServicePair:
    """A RiskStage and an ExecutionStage that share nothing but the messages between them."""

    def __init__(self, s: Scenario) -> None:
        self.risk = RiskStage(s.execution, s.risk)
        self.execution = ExecutionStage(s.execution)
        #: (risk state at the open, order quantity, quantity attempted) of each pending order
        self.fills_at_gate: list[tuple[str, float, float]] = []

    def step(
        self, bar: Bar, action: Action, signal: float | None, new_model: bool, can_order: bool
    ) -> StepResult:
        gate: RiskGate = wire(self.risk.open(bar, new_model=new_model))
        pending = self.execution.pending
        report = self.execution.open(bar, gate.state)
        if report is not None:
            report = wire(report)
            self.risk.on_execution(report)
            assert pending is not None
            self.fills_at_gate.append((gate.state, pending.quantity, report.attempted))
        account: AccountSnapshot = wire(self.execution.close(bar))
        decided: RiskDecision = wire(
            self.risk.close(bar, account, action, signal, can_order=can_order)
        )
        if decided.order is not None:
            self.execution.submit(decided.order)
        # What the recorder service would store, put together in step order.
        return StepResult(
            fill=report.fill if report else None,
            cash=account.cash,
            position=account.position,
            equity=account.equity,
            decision=decided.decision,
            order=decided.order,
            events=gate.events + (report.events if report else ()) + decided.events,
            closed_trades=report.closed_trades if report else (),
        )


def steps(s: Scenario, stepper: Any) -> Iterator[tuple[int, StepResult]]:
    for t in range(s.n):
        yield t, stepper.step(s.bar(t), *s.inputs(t))


# ---------------------------------------------------------------- (a) and (b)


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_stepping_bar_by_bar_equals_run_backtest_bit_for_bit(
    btc_2018: Candles, scenario: str
) -> None:
    s = SCENARIOS[scenario](btc_2018)
    core = run_backtest(s)
    loop = TradingLoop(s.execution, s.risk)
    rec = Recorder()
    for t, r in steps(s, loop):
        rec.record(t, r)
    assert_bit_equal(rec, core)
    assert loop.bars == s.n
    assert loop.executor.fees_paid == core["fees_paid"]
    assert loop.executor.borrow_paid == core["borrow_paid"]
    # The scenario exercised what it is about.
    assert len(rec.fills) > 50
    assert len(rec.trades) > 3
    if scenario == "hourly_models_spot":
        assert {"decision", "remainder", "end_of_run"} <= {o[3] for o in rec.orders}
        assert "gated_flat" in rec.rows["verdict"]
        assert any(e[1] == "regime_changed" and e[2] == 1 for e in rec.events)  # REDUCING
    else:
        assert core["borrow_paid"] > 0.0
        assert {"ACTIVE", "PAUSED"} <= set(rec.rows["state"])
        assert {"reduce_only_paused", "accepted"} <= set(rec.rows["verdict"])


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_halves_apart_passing_only_messages_equal_run_backtest(
    btc_2018: Candles, scenario: str
) -> None:
    s = SCENARIOS[scenario](btc_2018)
    core = run_backtest(s)
    pair = ServicePair(s)
    rec = Recorder()
    for t, r in steps(s, pair):
        rec.record(t, r)
    assert_bit_equal(rec, core)
    assert pair.execution.executor.fees_paid == core["fees_paid"]
    assert pair.risk.outstanding is None
    assert pair.execution.pending is None  # the last bar submits nothing
    assert len(pair.fills_at_gate) == len(core["order_bar"])
    if scenario == "hourly_models_spot":
        # Orders met the open after a gap: the risk state there (REDUCING, stale data) crossed
        # over to the execution, whose reduce-only clip stopped the buys.
        stale = [(q, a) for state, q, a in pair.fills_at_gate if state == "REDUCING"]
        assert stale
        assert any(q > 0.0 and a == 0.0 for q, a in stale)


def test_pass_through_stepping_equals_simulate_targets(btc_2018: Candles) -> None:
    c = btc_2018.slice(100_000, 110_000)
    n = len(c)
    ts = np.ascontiguousarray(c.ts)
    decide = ((ts + MIN) % (30 * MIN) == 0).astype(np.uint8)
    rng = np.random.default_rng(6)
    row = np.tanh(np.cumsum(rng.normal(0.0, 0.4, int(decide.sum())))).astype(np.float32)
    marks = np.arange(0, n, 7, dtype=np.int64)
    execution = ExecutionSettings(market="margin", max_participation=0.02)
    wind_down = 30
    core = _core.simulate_targets(
        ts, np.ascontiguousarray(c.open), np.ascontiguousarray(c.close),
        np.ascontiguousarray(c.volume), decide, row[None, :], marks, MIN, execution.to_core(),
        min_trade_fraction=0.01, wind_down_bars=wind_down,
    )  # fmt: skip
    loop = TradingLoop.pass_through(execution, min_trade_fraction=0.01)
    equity, decision = [], 0
    for t in range(n):
        action: Action = "hold"
        signal = None
        if decide[t]:
            action, signal = "decide", float(row[decision])
            decision += 1
        if t >= n - 1 - wind_down and t + 1 < n:
            action = "end_of_run"
        # simulate_targets reads open for high and low: the same fills, marks and decisions.
        o = float(c.open[t])
        bar = Bar(int(ts[t]), o, max(o, c.close[t]), min(o, c.close[t]), c.close[t], c.volume[t])
        r = loop.step(bar, action, signal, can_order=t + 1 < n)
        assert r.decision.kelly is None
        assert r.decision.state == "ACTIVE"
        equity.append(r.equity)
    assert np.array_equal(np.asarray(equity)[marks], core["equity"][0])
    assert loop.executor.fees_paid == core["fees"][0]
    assert loop.executor.position == core["final_position"][0]


# ---------------------------------------------------------------- (c) the reference model


@pytest.mark.parametrize(
    ("case", "extra"),
    [("drawdown_stop", {}), ("halt", {"halt_drawdown": 0.04})],
)
def test_agrees_with_reference_model_through_stop_and_halt(
    btc_2018: Candles, case: str, extra: dict[str, Any]
) -> None:
    """Full-Kelly sizing on margin: the ladder's drawdown stop (pause 24 h and flatten, then the
    re-arm) or the kill switch (HALTED until a person resets it), stepped side by side with the
    plain model of tests/reference_backtest.py."""
    c = btc_2018.slice(0, 30_000)
    n = len(c)
    risk = RiskConfig(**LEVERAGED, **extra)
    execution = ExecutionSettings(market="margin", borrow_bps_per_day=0.0)
    s = Scenario(c, random_signal(n, 0, 0.0), np.full(n, DECIDE, np.uint8), np.zeros(n), risk,
                 execution)  # fmt: skip
    loop = TradingLoop(execution, risk)
    plain = PlainLoop(
        PlainExecutor.from_config(execution.to_core()),
        PlainRisk.from_config(risk.to_core()),
        MIN,
    )
    seen_codes: set[str] = set()
    verdicts: set[str] = set()

    def close(a: float, b: float, atol: float = 0.0) -> bool:
        """Within the reference's tolerance (assert_matches_core: rtol 1e-12)."""
        return math.isclose(a, b, rel_tol=1e-12, abs_tol=atol)

    for t in range(n):
        bar = s.bar(t)
        action, signal, new_model, can_order = s.inputs(t)
        r = loop.step(bar, action, signal, new_model, can_order)
        plain_events: list[tuple[int, str, int, float]] = []
        plain_trades: list[tuple[int, int, int, float]] = []
        p = plain.step(bar.ts, bar.open, bar.close, bar.volume, DECIDE,
                       math.nan if signal is None else signal, new_model, can_order,
                       plain_events, plain_trades)  # fmt: skip
        where = f"bar {t}"
        assert r.decision.verdict == p.decision.verdict, where
        assert r.decision.state == p.state, where
        assert r.decision.place_order == p.decision.place_order, where
        assert close(r.equity, p.equity), where
        assert close(r.cash, p.cash, 1e-9), where
        assert close(r.position, p.position, 1e-12), where
        assert close(r.decision.target, p.decision.target), where
        assert r.decision.kelly is not None, where
        assert close(r.decision.kelly, p.kelly), where
        assert (r.fill is None) == (p.fill is None), where
        if r.fill is not None and p.fill is not None:
            assert close(r.fill.quantity, p.fill.quantity, 1e-12), where
            assert close(r.fill.price, p.fill.price), where
        assert (r.order is None) == (p.order is None), where
        if r.order is not None and p.order is not None:
            assert r.order.origin == p.order.origin, where
            assert close(r.order.quantity, p.order.quantity, 1e-12), where
        assert [(e.ts, e.type, e.code) for e in r.events] == [e[:3] for e in plain_events], where
        for e, pe in zip(r.events, plain_events, strict=True):
            assert close(e.value, pe[3], 1e-15), where
        assert [x.side for x in r.closed_trades] == [x[2] for x in plain_trades], where
        for x, px in zip(r.closed_trades, plain_trades, strict=True):
            assert (x.open_ts, x.close_ts) == px[:2], where
            assert close(x.pnl, px[3], 1e-9), where
        seen_codes |= {e.code_name for e in r.events}
        verdicts.add(r.decision.verdict)
    if case == "halt":
        assert "kill_switch" in seen_codes
        assert {"flatten_halted", "rejected_halted"} <= verdicts
        assert loop.risk_manager is not None
        assert loop.risk_manager.state == "HALTED"
    else:
        assert {"ladder_pause_1", "ladder_stop", "ladder_rearmed", "daily_loss"} <= seen_codes
        assert "kill_switch" not in seen_codes
        assert "flatten_stop" in verdicts


# ---------------------------------------------------------------- (d) bad input


def pending_bars(core: dict[str, Any], count: int) -> list[int]:
    """The first `count` bars at whose open an order fills (the interesting moment to fail)."""
    return [int(b) + 1 for b in core["order_bar"][:count]]


def test_bad_step_raises_and_leaves_the_loop_unchanged(btc_2018: Candles) -> None:
    s = hourly_models_spot(btc_2018)
    core = run_backtest(s)
    targets = set(pending_bars(core, 6))
    decide_bar = int(np.argmax(s.action == DECIDE))
    targets.add(decide_bar)
    loop = TradingLoop(s.execution, s.risk)
    rec = Recorder()
    checked = 0
    for t in range(s.n):
        bar = s.bar(t)
        action, signal, new_model, can_order = s.inputs(t)
        if t in targets and t > 0:
            previous = s.bar(t - 1)
            bad_steps: list[tuple[Any, str]] = [
                ((previous, action, signal), "not after"),  # the same ts again
                ((msgspec.structs.replace(bar, ts=previous.ts - MIN), action, signal), "not after"),
                ((bar, action, 1.5), r"signal must be in \[-1, 1\]"),
                ((bar, action, -math.inf), r"signal must be in \[-1, 1\]"),
                ((bar, action, math.nan), "signal is NaN; pass None"),
                ((bar, "buy", signal), "action must be one of"),
                ((msgspec.structs.replace(bar, close=bar.high * 2), action, signal), "close"),
                ((msgspec.structs.replace(bar, open=math.nan), action, signal), "open"),
                ((msgspec.structs.replace(bar, volume=-1.0), action, signal), "volume"),
            ]
            for args, message in bad_steps:
                with pytest.raises(ValueError, match=message):
                    loop.step(*args, new_model, can_order)
            checked += 1
        rec.record(t, loop.step(bar, action, signal, new_model, can_order))
    assert checked == len(targets)
    assert_bit_equal(rec, core)


def test_bad_messages_to_the_halves_raise_and_change_nothing(btc_2018: Candles) -> None:
    s = hourly_models_spot(btc_2018)
    core = run_backtest(s)
    targets = set(pending_bars(core, 6))
    pair = ServicePair(s)
    risk, execution = pair.risk, pair.execution
    rec = Recorder()
    checked = 0
    for t in range(s.n):
        bar = s.bar(t)
        action, signal, new_model, can_order = s.inputs(t)
        if t not in targets:
            rec.record(t, pair.step(bar, action, signal, new_model, can_order))
            continue
        # A report before the bar is open; an execution before the bar is open.
        order = execution.pending
        assert order is not None
        with pytest.raises(RuntimeError, match="no bar is open"):
            risk.on_execution(ExecutionReport(order.id, bar.ts, 0.0, None, None, 0.0, 0.0))
        with pytest.raises(ValueError, match="not after"):
            risk.open(s.bar(t - 1))
        gate = risk.open(bar, new_model=new_model)
        with pytest.raises(ValueError, match="state must be one of"):
            execution.open(bar, "CALM")  # type: ignore[arg-type]
        report = execution.open(bar, gate.state)
        assert report is not None
        assert report.order_id == order.id
        # The risk stage must not close the bar before it hears of its order.
        account = execution.close(bar)
        with pytest.raises(ValueError, match=f"order {order.id} has no execution report"):
            risk.close(bar, account, action, signal, can_order=can_order)
        # Reports for an unknown order, for another bar, inconsistent: rejected.
        for bad, message in (
            (msgspec.structs.replace(report, order_id=order.id + 1), "unknown order"),
            (msgspec.structs.replace(report, order_id=0), "unknown order"),
            (msgspec.structs.replace(report, ts=bar.ts + MIN), "but the open bar is"),
            (msgspec.structs.replace(report, attempted=math.nan), "must be finite"),
            (
                msgspec.structs.replace(report, fill=None, error=None, attempted=1.0),
                "no error",
            ),
        ):
            with pytest.raises(ValueError, match=message):
                risk.on_execution(bad)
        risk.on_execution(report)
        with pytest.raises(ValueError, match="no order is outstanding"):
            risk.on_execution(report)  # a duplicate
        # Closing with a bad signal, the wrong bar or the wrong account: rejected.
        for args, message in (
            ((bar, account, action, 2.0), r"signal must be in \[-1, 1\]"),
            ((bar, account, action, math.nan), "signal is NaN"),
            ((s.bar(t + 1), account, action, signal), "is not the open bar"),
            ((bar, msgspec.structs.replace(account, ts=account.ts + MIN), action, signal),
             "account marked at"),
        ):  # fmt: skip
            with pytest.raises(ValueError, match=message):
                risk.close(*args, can_order=can_order)
        decided = risk.close(bar, account, action, signal, can_order=can_order)
        if decided.order is not None:
            with pytest.raises(ValueError, match="decided at"):
                execution.submit(msgspec.structs.replace(decided.order, ts=decided.order.ts - MIN))
            with pytest.raises(ValueError, match="quantity must be finite and nonzero"):
                execution.submit(msgspec.structs.replace(decided.order, quantity=0.0))
            execution.submit(decided.order)
            with pytest.raises(ValueError, match="still pending"):
                execution.submit(decided.order)
        rec.record(
            t,
            StepResult(
                fill=report.fill, cash=account.cash, position=account.position,
                equity=account.equity, decision=decided.decision, order=decided.order,
                events=gate.events + report.events + decided.events,
                closed_trades=report.closed_trades,
            ),
        )  # fmt: skip
        checked += 1
    assert checked == len(targets)
    assert_bit_equal(rec, core)


def test_calls_out_of_order_are_runtime_errors() -> None:
    execution = ExecutionSettings()
    bar = Bar(1_514_764_800_000_000_000, 100.0, 101.0, 99.0, 100.5, 10.0)
    risk = RiskStage(execution, RiskConfig())
    stage = ExecutionStage(execution)
    with pytest.raises(RuntimeError, match="no bar is open"):
        risk.close(bar, AccountSnapshot(bar.ts + MIN, 100.5, 1.0, 0.0, 1.0), "hold", None)
    with pytest.raises(RuntimeError, match="no bar is open"):
        stage.close(bar)
    risk.open(bar)
    with pytest.raises(RuntimeError, match="was opened but not closed"):
        risk.open(msgspec.structs.replace(bar, ts=bar.ts + MIN))
    assert stage.open(bar, "ACTIVE") is None
    order = Order(1, 0, bar.ts + MIN, 1.0, 0.001, "decision", False)
    with pytest.raises(RuntimeError, match="orders are submitted after a close"):
        stage.submit(order)
    account = stage.close(bar)
    assert account == AccountSnapshot(bar.ts + MIN, 100.5, 100_000.0, 0.0, 100_000.0)
    with pytest.raises(ValueError, match="origin must be one of"):
        stage.submit(msgspec.structs.replace(order, origin="whim"))  # type: ignore[arg-type]
    stage.submit(order)
    assert stage.pending == order
    with pytest.raises(ValueError, match="min_trade_fraction is for pass-through mode"):
        TradingLoop(execution, RiskConfig(), min_trade_fraction=0.1)
    with pytest.raises(ValueError, match="bar_seconds must be > 0"):
        TradingLoop(execution, RiskConfig(), bar_seconds=0.0)
