"""Snapshots of the trading loop's halves (RiskStage, ExecutionStage): what the live risk and
execution services keep in their key-value bucket to resume after a restart.

(a) A service pair run over bars, signals and actions, snapshotted at any point (between any two
calls of a bar, also between open and close), the snapshots sent through MessagePack and restored
into a fresh pair that continues, gives the same bytes for every message and event as the run that
was never interrupted (the reference), and the same final snapshots. Property-tested over random
markets (spot and margin, thin volume and partial fills, bars without volume, data gaps, gated
models, operator halts and resets, pass-through mode), and on a built market at the moments that
matter: HALTED by the kill switch with the flatten still under way, PAUSED by the drawdown ladder,
an unfilled remainder of a partial fill outstanding.
(b) Every corrupted field kind (non-finite, negative, unknown enum, lengths that differ, times
outside the range, an order that is not the last one, another version, other settings) is refused
with a ValueError naming the field, and the stage is left as it was. Strict decoding refuses
unknown fields.
(c) The operator's HALT flattens and stays halted until a person resets it, also across a
snapshot and restore.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from colmena import _core
from colmena.execution import ExecutionSettings
from colmena.execution.trading_loop import (
    SNAPSHOT_VERSION,
    AccountSnapshot,
    Action,
    Bar,
    ExecutionReport,
    ExecutionStage,
    ExecutionStageSnapshot,
    RiskGate,
    RiskStage,
    RiskStageSnapshot,
)
from colmena.risk import RiskConfig

sys.path.insert(0, str(Path(__file__).parent))
from fuzzing import fuzz_settings

MIN = 60_000_000_000
START = 1_514_764_800_000_000_000  # 2018-01-01T00:00:00Z
ACTIONS: tuple[Action, ...] = ("hold", "decide", "gated_flat", "end_of_run")

#: Full Kelly from a prior of 1, hardly any VaR cap, a tight ladder with short pauses: the
#: breakers fire and their pauses end within a few hundred bars.
LEVERAGED = RiskConfig(
    kelly_prior=1.0,
    kelly_multiplier=1.0,
    max_leverage=3.0,
    var_budget=5.0,
    kelly_min_trades=3,
    kelly_window=6,
    halt_drawdown=0.25,
    halt_window_seconds=3600.0,
    ladder_drawdown=(0.03, 0.06, 0.12),
    ladder_pause_seconds=(600.0, 1200.0, 3000.0),
)


# ---------------------------------------------------------------- a run as a list of calls


@dataclass(frozen=True)
class Step:
    """The inputs of one bar."""

    bar: Bar
    action: Action
    signal: float | None
    new_model: bool
    can_order: bool
    halt: bool = False  # the operator halts after the bar's close
    reset: bool = False  # a person resets a HALT before the bar's open


@dataclass
class Pair:
    """A risk and an execution service: the two stages and the messages in flight between them
    (on the bus in a live system, so they outlive a restart of either service)."""

    risk: RiskStage
    execution: ExecutionStage
    gate: RiskGate | None = None
    report: ExecutionReport | None = None
    account: AccountSnapshot | None = None
    order: Any = None
    log: list[bytes] = field(default_factory=list)

    def note(self, message: Any) -> None:
        self.log.append(msgspec.msgpack.encode(message))


Call = Callable[[Pair], None]


def calls(step: Step) -> list[Call]:
    """The bar's calls in the order the services make them (see trading_loop's docstring)."""
    bar = step.bar

    def reset(p: Pair) -> None:
        manager = p.risk.risk_manager
        assert manager is not None
        p.note(manager.reset_halt(bar.ts, p.execution.account.equity))

    def risk_open(p: Pair) -> None:
        p.gate = p.risk.open(bar, new_model=step.new_model)
        p.note(p.gate)

    def execution_open(p: Pair) -> None:
        assert p.gate is not None
        p.report = p.execution.open(bar, p.gate.state)
        p.note(p.report)

    def risk_report(p: Pair) -> None:
        if p.report is not None:
            p.risk.on_execution(p.report)

    def execution_close(p: Pair) -> None:
        p.account = p.execution.close(bar)
        p.note(p.account)

    def risk_close(p: Pair) -> None:
        assert p.account is not None
        decided = p.risk.close(bar, p.account, step.action, step.signal, can_order=step.can_order)
        p.order = decided.order
        p.note(decided)

    def submit(p: Pair) -> None:
        if p.order is not None:
            p.execution.submit(p.order)

    def halt(p: Pair) -> None:
        p.note(p.risk.halt(bar.ts + MIN))

    out: list[Call] = [reset] if step.reset else []
    out += [risk_open, execution_open, risk_report, execution_close, risk_close, submit]
    return out + ([halt] if step.halt else [])


@dataclass(frozen=True)
class Market:
    """The settings and the bars of one run."""

    execution: ExecutionSettings
    risk: RiskConfig | None
    steps: tuple[Step, ...]

    def pair(self) -> Pair:
        if self.risk is None:
            risk = RiskStage.pass_through(self.execution, min_trade_fraction=0.02)
        else:
            risk = RiskStage(self.execution, self.risk)
        return Pair(risk, ExecutionStage(self.execution))

    def calls(self) -> list[Call]:
        return [c for step in self.steps for c in calls(step)]


def wire(snapshot: Any) -> Any:
    """Through MessagePack and back, decoded strictly (as from the key-value bucket)."""
    return msgspec.msgpack.decode(msgspec.msgpack.encode(snapshot), type=type(snapshot))


def snapshots(p: Pair) -> tuple[bytes, bytes]:
    return (
        msgspec.msgpack.encode(p.risk.snapshot()),
        msgspec.msgpack.encode(p.execution.snapshot()),
    )


def run_through(market: Market) -> tuple[Pair, list[tuple[RiskStageSnapshot, Any]]]:
    """The uninterrupted run, and both stages' snapshots before each call."""
    pair = market.pair()
    seen = []
    for call in market.calls():
        seen.append((pair.risk.snapshot(), pair.execution.snapshot()))
        call(pair)
    return pair, seen


def assert_restart_continues_bit_for_bit(market: Market, cut: int, reference: Pair) -> None:
    """Run the calls before `cut`, restart both services from their snapshots (through
    MessagePack) into fresh stages, run the rest: every message and the final state as in
    `reference`, the uninterrupted run."""
    run = market.calls()
    first = market.pair()
    for call in run[:cut]:
        call(first)
    risk_snapshot, execution_snapshot = (
        wire(first.risk.snapshot()),
        wire(first.execution.snapshot()),
    )
    second = market.pair()
    second.risk.restore(risk_snapshot)
    second.execution.restore(execution_snapshot)
    assert snapshots(second) == snapshots(first)
    # The messages in flight on the bus survive the restart; the stages are new.
    second.gate, second.report, second.account, second.order = (
        first.gate, first.report, first.account, first.order
    )  # fmt: skip
    for call in run[cut:]:
        call(second)
    log = first.log + second.log
    assert len(log) == len(reference.log)
    for i, (ours, theirs) in enumerate(zip(log, reference.log, strict=True)):
        assert ours == theirs, f"message {i} differs after a restart at call {cut}"
    assert snapshots(second) == snapshots(reference)


# ---------------------------------------------------------------- markets


def random_market(
    seed: int,
    n: int,
    *,
    market: str,
    mode: str,
    volatility: float,
    volume_scale: float,
) -> Market:
    """Random bars (a log-normal walk with jumps, gaps of 10 minutes, bars without volume),
    a tanh random-walk signal with gaps, mixed actions, model changes, operator halts and
    resets."""
    rng = np.random.default_rng(seed)
    ts = START + MIN * np.cumsum(np.where(rng.random(n) < 0.05, 10, 1))
    returns = rng.normal(0.0, volatility, n)
    jumps = rng.random(n) < 0.04
    returns[jumps] += rng.choice([-1.0, 1.0], int(jumps.sum())) * rng.uniform(
        0.03, 0.2, int(jumps.sum())
    )
    close = 100.0 * np.exp(np.cumsum(returns))
    open_ = np.concatenate([[100.0], close[:-1]]) * np.exp(rng.normal(0.0, volatility / 4, n))
    high = np.maximum(open_, close) * (1.0 + rng.uniform(0.0, 0.01, n))
    low = np.minimum(open_, close) * (1.0 - rng.uniform(0.0, 0.01, n))
    volume = rng.lognormal(0.0, 1.0, n) * volume_scale
    volume[rng.random(n) < 0.04] = 0.0
    signal = np.tanh(np.cumsum(rng.normal(0.0, 0.5, n)))
    signal[rng.random(n) < 0.05] = np.nan
    action = rng.choice(4, n, p=[0.3, 0.6, 0.05, 0.05])
    action[n - 3 : n] = 3
    model = np.cumsum(rng.random(n) < 0.02)
    risk = {
        "default": RiskConfig(),
        "leveraged": LEVERAGED,
        "fragile": msgspec.structs.replace(LEVERAGED, halt_drawdown=0.04),  # kill switch
        "pass_through": None,
    }[mode]
    halts = rng.random(n) < (0.03 if risk is not None else 0.0)
    resets = np.zeros(n, dtype=bool)
    if risk is not None:
        resets[1:] = (rng.random(n - 1) < 0.5) & np.maximum.accumulate(halts)[:-1]
    steps = tuple(
        Step(
            Bar(
                int(ts[t]),
                float(open_[t]),
                float(high[t]),
                float(low[t]),
                float(close[t]),
                float(volume[t]),
            ),
            ACTIONS[int(action[t])],
            None if math.isnan(signal[t]) else float(signal[t]),
            bool(t > 0 and model[t] != model[t - 1]),
            t + 1 < n,
            halt=bool(halts[t]),
            reset=bool(resets[t]),
        )
        for t in range(n)
    )
    borrow = 20.0 if market == "margin" else 0.0
    execution = ExecutionSettings(
        market=market,  # type: ignore[arg-type]
        borrow_bps_per_day=borrow,
        max_participation=0.1,
    )
    return Market(execution, risk, steps)


@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(5, 100),
    market=st.sampled_from(["spot", "margin"]),
    mode=st.sampled_from(["default", "leveraged", "fragile", "pass_through"]),
    volatility=st.sampled_from([0.002, 0.01, 0.03]),
    volume_scale=st.sampled_from([30.0, 300.0, 1e6]),
    where=st.floats(0.0, 1.0),
)
@fuzz_settings(40)
@pytest.mark.fuzz
def test_restart_from_snapshots_continues_bit_for_bit(
    seed: int, n: int, market: str, mode: str, volatility: float, volume_scale: float, where: float
) -> None:
    m = random_market(seed, n, market=market, mode=mode, volatility=volatility,
                      volume_scale=volume_scale)  # fmt: skip
    reference, _ = run_through(m)
    cut = min(int(where * (len(m.calls()) + 1)), len(m.calls()))
    assert_restart_continues_bit_for_bit(m, cut, reference)


def built_market() -> Market:
    """Leveraged long on margin over thin volume (every order fills in parts): a rise, a dip of
    the ladder (PAUSED), a recovery, then a crash through the kill switch (HALTED) whose
    flatten takes several bars, then trading on while HALTED."""
    pieces = [
        np.full(60, 0.002),  # rise: trading starts once the volatility is known (30 bars)
        np.array([-0.03, -0.02]),  # the dip: the ladder's first level, PAUSED
        np.full(40, 0.001),  # the pause ends
        np.array([-0.3]),  # the crash: kill switch
        np.full(40, 0.0005),
    ]
    returns = np.concatenate(pieces)
    n = len(returns)
    close = 100.0 * np.exp(np.cumsum(returns))
    open_ = np.concatenate([[100.0], close[:-1]])
    steps = tuple(
        Step(
            Bar(
                START + t * MIN,
                float(open_[t]),
                float(max(open_[t], close[t]) * 1.001),
                float(min(open_[t], close[t]) * 0.999),
                float(close[t]),
                4_000.0,
            ),
            "decide",
            1.0,
            False,
            t + 1 < n,
        )
        for t in range(n)
    )
    execution = ExecutionSettings(market="margin", borrow_bps_per_day=10.0, max_participation=0.1)
    return Market(execution, LEVERAGED, steps)


def _halted_flattening(r: RiskStageSnapshot, x: ExecutionStageSnapshot) -> bool:
    return (
        r.risk_manager is not None
        and r.risk_manager.state == "HALTED"
        and x.executor.position != 0.0
        and r.outstanding is not None
    )


def _paused(r: RiskStageSnapshot, x: ExecutionStageSnapshot) -> bool:
    m = r.risk_manager
    return m is not None and m.state == "PAUSED" and m.paused_until > m.last_ts


def _partial_fill_outstanding(r: RiskStageSnapshot, x: ExecutionStageSnapshot) -> bool:
    return r.remainder != 0.0


@pytest.mark.parametrize(
    ("moment", "reached"),
    [
        ("kill switch, flatten under way", _halted_flattening),
        ("drawdown pause", _paused),
        ("unfilled remainder of a partial fill", _partial_fill_outstanding),
    ],
)
def test_restart_at_the_moments_that_matter_continues_bit_for_bit(
    moment: str, reached: Callable[[RiskStageSnapshot, ExecutionStageSnapshot], bool]
) -> None:
    m = built_market()
    reference, seen = run_through(m)
    cuts = [i for i, (r, x) in enumerate(seen) if reached(r, x)]
    assert cuts, f"the built market never reached: {moment}"
    # The first such moment, one in the middle of a bar, and the last.
    mid_bar = [i for i in cuts if seen[i][0].is_open] or cuts
    for cut in sorted({cuts[0], mid_bar[len(mid_bar) // 2], cuts[-1]}):
        assert_restart_continues_bit_for_bit(m, cut, reference)
    events = b"".join(reference.log)
    assert b"kill_switch" in events
    assert b"ladder_pause_1" in events


# ---------------------------------------------------------------- (b) refused snapshots


def replace(snapshot: Any, path: str, value: Any) -> Any:
    """`snapshot` with the field at the dotted `path` set to `value`."""
    head, _, rest = path.partition(".")
    if rest:
        value = replace(getattr(snapshot, head), rest, value)
    return msgspec.structs.replace(snapshot, **{head: value})


@pytest.fixture(scope="module")
def mid_run() -> tuple[Market, int]:
    """The built market, and a call at which the stages hold a bit of everything: a window of
    several maxima, an outstanding order, a pending order, a position."""
    m = built_market()
    _, seen = run_through(m)
    for i, (r, x) in enumerate(seen):
        manager = r.risk_manager
        if (
            manager is not None
            and len(manager.window_ts) >= 2
            and r.outstanding is not None
            and x.pending is not None
            and x.executor.position != 0.0
        ):
            return m, i
    raise AssertionError("the built market never held all of it at once")


def stages_at(m: Market, cut: int) -> Pair:
    pair = m.pair()
    for call in m.calls()[:cut]:
        call(pair)
    return pair


def risk_corruptions(s: RiskStageSnapshot) -> list[tuple[str, Any, str]]:
    """(field, bad value, what the error says) for every kind of damage."""
    manager = s.risk_manager
    assert manager is not None
    assert s.outstanding is not None
    window, window_ts = manager.window_equity, manager.window_ts
    return [
        ("version", SNAPSHOT_VERSION + 1, r"version is 2; this build reads version 1"),
        ("version", 0, r"version is 0"),
        ("execution.fee_bps", 11.0, r"execution\.fee_bps differs"),
        ("execution.market", "spot", r"execution\.allow_short differs"),
        ("risk.kelly_window", 7, r"risk\.kelly_window differs"),
        ("risk.halt_window_seconds", 1800.0, r"risk\.halt_window_ns differs"),
        ("risk.ladder_drawdown", (0.03, 0.06, 0.13), r"risk\.ladder_drawdown\[2\] differs"),
        ("risk", None, r"risk differs: the snapshot was taken in pass-through mode"),
        ("min_trade_fraction", 0.5, r"min_trade_fraction differs"),
        ("bar_ns", 2 * MIN, r"bar_ns differs"),
        ("risk_manager", None, r"risk_manager is missing in risk mode"),
        ("risk_manager.state", "CALM", r"state must be one of"),
        ("risk_manager.state", "REDUCING", r"risk_manager\.state is REDUCING"),
        ("risk_manager.peak_equity", math.nan, r"risk_manager\.peak_equity must not be NaN"),
        ("risk_manager.drawdown", -0.1, r"risk_manager\.drawdown must be >= 0"),
        ("risk_manager.ladder_level", 4, r"risk_manager\.ladder_level must be in 0\.\.3"),
        ("risk_manager.daily_pnl", math.nan, r"risk_manager\.daily_pnl must not be NaN"),
        ("risk_manager.window_equity", window[:-1], r"risk_manager\.window_equity has"),
        ("risk_manager.window_equity", window[::-1], r"window_equity\[1\] must be below"),
        ("risk_manager.window_ts", (-1, *window_ts[1:]), r"risk_manager\.window_ts\[0\] must lie"),
        ("risk_manager.kelly_trades", (0.1,) * 7, r"risk_manager\.kelly_trades holds 7 trades"),
        ("risk_manager.kelly_trades", (math.inf,), r"kelly_trades\[0\] must be finite"),
        ("risk_manager.ewma_variance", -1.0, r"risk_manager\.ewma_variance must be finite and >="),
        ("risk_manager.ewma_count", -1, r"ewma_count must be >= 0"),
        ("risk_manager.day", manager.day + 1, r"risk_manager\.day must be the UTC day"),
        ("risk_manager.paused_until", -5, r"risk_manager\.paused_until must be >= 0"),
        ("shadow.cash", math.inf, r"shadow\.cash must be finite"),
        ("shadow.fees_paid", -1.0, r"shadow\.fees_paid must be finite and >= 0"),
        ("shadow.average_price", 0.0, r"shadow\.average_price must be finite and > 0"),
        ("shadow.n_fills", -1, r"n_fills must be >= 0"),
        ("bars", -1, r"bars must be >= 0"),
        ("last_close", 0.0, r"last_close must be finite and > 0"),
        ("last_ts", -MIN, r"last_ts must lie in"),
        ("is_open", True, r"open_ts must be after last_ts"),
        ("outstanding.id", s.outstanding.id + 1, r"outstanding\.id must be the last id issued"),
        ("outstanding.quantity", math.nan, r"outstanding\.quantity must be finite and nonzero"),
        ("outstanding.bar", s.outstanding.bar - 1, r"outstanding\.bar must be the last closed bar"),
        ("outstanding.ts", s.outstanding.ts + MIN, r"outstanding\.ts must be the last close"),
        ("outstanding.origin", "whim", r"origin must be one of"),
        ("remainder", math.nan, r"remainder must be finite"),
        ("shadow_pending", math.inf, r"shadow_pending must be finite"),
    ]  # fmt: skip


def execution_corruptions(s: ExecutionStageSnapshot) -> list[tuple[str, Any, str]]:
    assert s.pending is not None
    return [
        ("version", SNAPSHOT_VERSION + 1, r"version is 2"),
        ("execution.max_participation", 0.2, r"execution\.max_participation differs"),
        ("execution.initial_cash", 1.0, r"execution\.initial_cash differs"),
        ("bar_ns", 5 * MIN, r"bar_ns differs"),
        ("executor.cash", math.nan, r"executor\.cash must be finite"),
        ("executor.borrow_paid", -1.0, r"executor\.borrow_paid must be finite and >= 0"),
        ("executor.average_price", -2.0, r"executor\.average_price must be finite and > 0"),
        ("executor.trade_open_ts", -1, r"executor\.trade_open_ts must lie in"),
        ("executor.n_fills", -3, r"n_fills must be >= 0"),
        ("is_open", True, r"open_ts must be after last_ts"),
        ("pending.ts", s.pending.ts - MIN, r"pending\.ts must be the last close"),
        ("pending.quantity", 0.0, r"pending\.quantity must be finite and nonzero"),
        ("pending.target", math.inf, r"pending\.target must be finite"),
        ("cause", "remainder", r"cause must be decision, risk or end_of_run"),
        ("cause", "whim", r"origin must be one of"),
        ("account.ts", s.account.ts + MIN, r"account\.ts must be the last close"),
        ("account.mark", math.nan, r"account\.mark must be finite and > 0"),
        ("account.equity", math.nan, r"account\.equity must not be NaN"),
        ("last_ts", 8 * 10**18, r"last_ts must lie in"),
    ]


def test_corrupted_snapshots_are_refused_naming_the_field_and_change_nothing(
    mid_run: tuple[Market, int],
) -> None:
    m, cut = mid_run
    source = stages_at(m, cut)
    risk_snapshot, execution_snapshot = source.risk.snapshot(), source.execution.snapshot()
    # A stage with a life of its own (a few bars in), whose state must survive every refusal.
    target = stages_at(m, 20)
    before = snapshots(target)
    risk_cases, execution_cases = (
        risk_corruptions(risk_snapshot), execution_corruptions(execution_snapshot)
    )  # fmt: skip
    checked = 0
    for path, value, message in risk_cases:
        with pytest.raises(ValueError, match=message):
            target.risk.restore(replace(risk_snapshot, path, value))
        assert snapshots(target) == before, path
        checked += 1
    for path, value, message in execution_cases:
        with pytest.raises(ValueError, match=message):
            target.execution.restore(replace(execution_snapshot, path, value))
        assert snapshots(target) == before, path
        checked += 1
    assert checked == len(risk_cases) + len(execution_cases) > 50
    # The untouched snapshots still restore, and the stages go on as the source does.
    target.risk.restore(risk_snapshot)
    target.execution.restore(execution_snapshot)
    assert snapshots(target) == snapshots(source)


def test_snapshots_of_another_mode_or_market_are_refused() -> None:
    m = built_market()
    pair = stages_at(m, 30)
    risk_snapshot = pair.risk.snapshot()
    passing = RiskStage.pass_through(m.execution, min_trade_fraction=LEVERAGED.min_trade_fraction)
    with pytest.raises(ValueError, match="risk differs: the snapshot was taken in risk mode"):
        passing.restore(risk_snapshot)
    pass_snapshot = passing.snapshot()
    assert pass_snapshot.risk_manager is None
    with pytest.raises(ValueError, match="shadow_pending must be 0 in pass-through mode"):
        passing.restore(msgspec.structs.replace(pass_snapshot, shadow_pending=1.0))
    with pytest.raises(ValueError, match="risk_manager is present in pass-through mode"):
        passing.restore(
            msgspec.structs.replace(pass_snapshot, risk_manager=risk_snapshot.risk_manager)
        )
    spot = ExecutionSettings(market="spot")
    stage = ExecutionStage(spot)
    short = replace(stage.snapshot(), "executor.position", -1.0)
    with pytest.raises(ValueError, match=r"executor\.position is short \(-1\.0\) on a spot market"):
        stage.restore(replace(short, "executor.average_price", 100.0))
    with pytest.raises(ValueError, match=r"account\.ts and the other fields must be 0"):
        stage.restore(replace(stage.snapshot(), "account.cash", 5.0))


def test_decoding_is_strict() -> None:
    m = built_market()
    pair = stages_at(m, 30)
    raw = msgspec.to_builtins(pair.risk.snapshot())
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(raw), type=RiskStageSnapshot) == (
        pair.risk.snapshot()
    )
    with pytest.raises(msgspec.ValidationError, match=r"unknown field `extra`"):
        msgspec.msgpack.decode(msgspec.msgpack.encode({**raw, "extra": 1}), type=RiskStageSnapshot)
    del raw["remainder"]
    with pytest.raises(msgspec.ValidationError, match=r"missing required field `remainder`"):
        msgspec.msgpack.decode(msgspec.msgpack.encode(raw), type=RiskStageSnapshot)
    # The core's state objects refuse what the Structs' types would not let through.
    state = _core.RiskStageState()
    with pytest.raises(TypeError, match=r"RiskStageState\.bars must be an int"):
        state.bars = True
    with pytest.raises(ValueError, match=r"RiskStageState\.last_order_id must be >= 0"):
        state.last_order_id = -1
    with pytest.raises(ValueError, match="state must be one of"):
        _core.RiskManagerState().state = "CALM"
    raw = msgspec.to_builtins(pair.execution.snapshot())
    raw["bars"] = -1
    with pytest.raises(ValueError, match=r"`\$\.bars`"):
        msgspec.msgpack.decode(msgspec.msgpack.encode(raw), type=ExecutionStageSnapshot)


# ---------------------------------------------------------------- (c) the operator's HALT


def test_operator_halt_flattens_stays_halted_and_survives_a_restart() -> None:
    m = built_market()
    n = len(m.steps)
    halt_bar = 45  # long, over thin volume
    steps = list(m.steps)
    steps[halt_bar] = dataclasses.replace(steps[halt_bar], halt=True)
    market = Market(m.execution, m.risk, tuple(steps))
    reference, seen = run_through(market)
    run = market.calls()
    # Run up to the HALT and look at it.
    pair = market.pair()
    cut = sum(len(calls(s)) for s in market.steps[:halt_bar]) + 6  # after the bar's submit
    for call in run[:cut]:
        call(pair)
    assert pair.execution.executor.position > 0.0
    events = pair.risk.halt(steps[halt_bar].bar.ts + MIN)
    assert [(e.type, e.code, e.code_name) for e in events] == [
        ("drawdown_threshold", 7, "halted_by_operator"),
        ("regime_changed", 3, "HALTED"),
    ]
    assert pair.risk.halt(steps[halt_bar].bar.ts + MIN) == ()  # already HALTED: nothing
    manager = pair.risk.risk_manager
    assert manager is not None
    assert manager.state == "HALTED"
    # The same through the risk manager itself.
    alone = _core.RiskManager(LEVERAGED.to_core())
    assert [e[1:3] for e in alone.halt(START)] == [("drawdown_threshold", 7), ("regime_changed", 3)]
    # Restart at once: the HALT is part of the snapshot.
    restarted = market.pair()
    restarted.risk.restore(wire(pair.risk.snapshot()))
    restarted.execution.restore(wire(pair.execution.snapshot()))
    restarted_manager = restarted.risk.risk_manager
    assert restarted_manager is not None
    assert restarted_manager.state == "HALTED"
    # Every later bar asks for full long exposure; the stage only flattens, then stays flat.
    verdicts, positions = [], []
    for t in range(halt_bar + 1, n):
        step = market.steps[t]
        gate = restarted.risk.open(step.bar)
        assert gate.state == "HALTED"
        report = restarted.execution.open(step.bar, gate.state)
        if report is not None:
            assert report.fill is None or report.fill.quantity < 0.0  # only reducing fills
            restarted.risk.on_execution(report)
        account = restarted.execution.close(step.bar)
        decided = restarted.risk.close(bar=step.bar, account=account, action="decide",
                                       signal=1.0, can_order=step.can_order)  # fmt: skip
        assert decided.decision.state == "HALTED"
        if decided.order is not None:
            assert decided.order.origin == "risk"
            assert decided.order.quantity < 0.0
            restarted.execution.submit(decided.order)
        verdicts.append(decided.decision.verdict)
        positions.append(account.position)
    flat = positions.index(0.0)
    assert flat > 1  # thin volume: the flatten took several bars
    assert set(verdicts[:flat]) == {"flatten_halted"}
    assert set(verdicts[flat:]) == {"rejected_halted"}
    assert all(p == 0.0 for p in positions[flat:])
    # The uninterrupted run with the same HALT matches the restarted one bit for bit.
    assert snapshots(restarted) == snapshots(reference)
    after_halt = seen[cut + 1][0].risk_manager
    assert after_halt is not None
    assert after_halt.state == "HALTED"
    # A person's reset ends it.
    reset = restarted_manager.reset_halt(steps[-1].bar.ts + MIN, account.equity)
    assert [e[1:3] for e in reset] == [("drawdown_threshold", 12), ("regime_changed", 0)]
    assert restarted_manager.state == "ACTIVE"


def test_halt_needs_a_risk_manager_and_a_valid_time() -> None:
    stage = RiskStage.pass_through(ExecutionSettings())
    with pytest.raises(RuntimeError, match="pass-through stage has no risk manager to halt"):
        stage.halt(START)
    stage = RiskStage(ExecutionSettings(), RiskConfig())
    before = stage.snapshot()
    with pytest.raises(ValueError, match=r"RiskManager\.halt: timestamp"):
        stage.halt(-1)
    assert stage.snapshot() == before
