"""One account over several symbols: the sleeves of the configuration, and the account's kill
switch on the total equity (AccountGuard) against the core's risk manager fed the totals in
time order, whatever the order in which the symbols' closes arrive."""

from __future__ import annotations

import math

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from colmena import _core
from colmena.live.account import AccountGuard, AccountGuardState
from colmena.risk import RiskConfig
from colmena.services.config import LiveConfig
from fuzzing import fuzz_settings

T0 = 1_700_000_040 * 10**9 // 60_000_000_000 * 60_000_000_000  # a minute boundary
MINUTE = 60 * 10**9
RISK = RiskConfig(halt_drawdown=0.02, halt_window_seconds=3_600.0, stale_after_seconds=300.0)
SYMBOLS = ("A/USD", "B/USD", "C/USD")
SLEEVES = {"A/USD": 50_000.0, "B/USD": 30_000.0, "C/USD": 20_000.0}


def _reference(paths: dict[str, list[float]], bars: int) -> tuple[int, float] | None:
    """The core's risk manager fed the account's total at each bar's close, in time order."""
    manager = _core.RiskManager(RISK.to_core())
    for i in range(bars):
        total = math.fsum(paths[s][i] for s in SYMBOLS)
        for _ts, kind, code, value in manager.observe(T0 + (i + 1) * MINUTE, total):
            if kind == "drawdown_threshold" and code == 4:
                return T0 + (i + 1) * MINUTE, value
    return None


@st.composite
def _market(draw: st.DrawFn) -> tuple[dict[str, list[float]], list[tuple[str, int]]]:
    bars = draw(st.integers(2, 40))
    paths = {}
    for s in SYMBOLS:
        steps = draw(st.lists(st.floats(-0.03, 0.02), min_size=bars, max_size=bars))
        equity, path = SLEEVES[s], []
        for r in steps:
            equity *= 1.0 + r
            path.append(equity)
        paths[s] = path
    # An arrival order that keeps each symbol's closes in order: a random merge.
    order: list[tuple[str, int]] = []
    next_bar = dict.fromkeys(SYMBOLS, 0)
    picks = draw(st.lists(st.sampled_from(SYMBOLS), min_size=3 * bars, max_size=3 * bars))
    for s in picks + [s for s in SYMBOLS for _ in range(bars)]:
        if next_bar[s] < bars:
            order.append((s, next_bar[s]))
            next_bar[s] += 1
    return paths, order


@pytest.mark.fuzz
@fuzz_settings(150)
@given(_market(), st.data())
def test_the_account_trips_as_the_rule_on_the_total_whatever_the_arrival_order(
    market: tuple[dict[str, list[float]], list[tuple[str, int]]], data: st.DataObject
) -> None:
    paths, order = market
    bars = len(paths[SYMBOLS[0]])
    guard = AccountGuard(SYMBOLS, RISK, SLEEVES, 0.0, clock=lambda: 0.0)
    cut = data.draw(st.integers(0, len(order)))
    trips = []
    for k, (symbol, i) in enumerate(order):
        if k == cut:  # a restart: the state through MessagePack into a new guard
            saved = msgspec.msgpack.encode(guard.state())
            guard = AccountGuard(SYMBOLS, RISK, SLEEVES, 0.0, clock=lambda: 0.0)
            guard.restore(msgspec.msgpack.decode(saved, type=AccountGuardState))
        tripped = guard.on_close(symbol, T0 + i * MINUTE, paths[symbol][i])
        if tripped is not None:
            trips.append(tripped)
        assert guard.on_close(symbol, T0 + i * MINUTE, paths[symbol][i]) is None  # again
    assert guard.evaluated_ts == T0 + (bars - 1) * MINUTE
    expected = _reference(paths, bars)
    assert trips == ([expected] if expected is not None else [])
    assert guard.halted == (expected is not None)


def test_a_silent_symbol_stops_holding_the_account_back_after_stale_after() -> None:
    now = [0.0]  # wall time, seconds
    guard = AccountGuard(SYMBOLS, RISK, SLEEVES, 10_000.0, clock=lambda: now[0])
    for i in range(3):
        for s in SYMBOLS:
            guard.on_close(s, T0 + i * MINUTE, SLEEVES[s])
    assert guard.evaluated_ts == T0 + 2 * MINUTE
    # C goes silent; A and B go on, a minute of wall time per bar: the account waits for C
    # until C has been silent for stale_after_seconds (300 s).
    for i in range(3, 12):
        now[0] += 60.0
        for s in SYMBOLS[:2]:
            guard.on_close(s, T0 + i * MINUTE, SLEEVES[s])
        silent = now[0] - 0.0
        expected = T0 + (2 if silent <= 300.0 else i) * MINUTE
        assert guard.evaluated_ts == expected, i
    # C's last equity counts: the total is every sleeve plus the cash.
    assert guard.total_equity(T0 + 11 * MINUTE) == 110_000.0
    # A crash of A and B (C unchanged) trips the account.
    tripped = [guard.on_close(s, T0 + 12 * MINUTE, SLEEVES[s] * 0.9) for s in SYMBOLS[:2]]
    assert tripped[0] is None  # B's close of that bar not in yet
    assert tripped[1] is not None
    assert tripped[1][1] == pytest.approx(8_000.0 / 110_000.0)
    # A fast replay: bars far ahead in bar time, no wall time passing: C is waited for.
    fast = AccountGuard(SYMBOLS, RISK, SLEEVES, 0.0, clock=lambda: 0.0)
    for i in range(100):
        for s in SYMBOLS[:2]:
            fast.on_close(s, T0 + i * MINUTE, SLEEVES[s])
    assert fast.evaluated_ts == 0
    fast.on_close("C/USD", T0 + 99 * MINUTE, SLEEVES["C/USD"])
    assert fast.evaluated_ts == T0 + 99 * MINUTE


def test_guard_refusals() -> None:
    with pytest.raises(ValueError, match="no sleeve for C/USD"):
        AccountGuard(SYMBOLS, RISK, {"A/USD": 1.0, "B/USD": 1.0}, 0.0)
    with pytest.raises(ValueError, match="at least one symbol"):
        AccountGuard((), RISK, {}, 0.0)
    guard = AccountGuard(SYMBOLS, RISK, SLEEVES, 0.0)
    with pytest.raises(ValueError, match="'X/USD' is not a symbol"):
        guard.on_close("X/USD", T0, 1.0)
    with pytest.raises(ValueError, match="not finite"):
        guard.on_close("A/USD", T0, math.nan)
    state = guard.state()
    other = AccountGuard(SYMBOLS[:2], RISK, SLEEVES, 0.0)
    with pytest.raises(ValueError, match="symbols: the saved account holds"):
        other.restore(state)
    stricter = AccountGuard(SYMBOLS, msgspec.structs.replace(RISK, halt_drawdown=0.1), SLEEVES, 0)
    with pytest.raises(ValueError, match="risk: the saved account ran under other"):
        stricter.restore(state)
    with pytest.raises(ValueError, match="version"):
        guard.restore(msgspec.structs.replace(state, version=2))


def test_sleeves_split_the_account() -> None:
    def config(**weights: float | None) -> LiveConfig:
        symbols = [{"symbol": s, "checkpoint": "c", **({"weight": w} if w is not None else {})}
                   for s, w in zip(SYMBOLS, weights.values(), strict=False)]  # fmt: skip
        return msgspec.convert({"symbols": symbols}, LiveConfig)

    equal = config(a=None, b=None, c=None)
    cash = equal.execution.initial_cash
    assert [equal.sleeve(s).initial_cash for s in SYMBOLS] == pytest.approx([cash / 3] * 3)
    assert equal.unallocated_cash() == pytest.approx(0.0, abs=1e-6)
    weighted = config(a=0.5, b=0.3, c=0.1)
    assert weighted.sleeve("B/USD").initial_cash == pytest.approx(0.3 * cash)
    assert weighted.unallocated_cash() == pytest.approx(0.1 * cash)
    assert weighted.sleeve("B/USD").fee_bps == weighted.execution.fee_bps
    with pytest.raises(msgspec.ValidationError, match=r"add up to 1\.2, more than 1"):
        config(a=0.5, b=0.5, c=0.2)
    with pytest.raises(msgspec.ValidationError, match="every symbol's weight or none"):
        config(a=0.5, b=None, c=0.2)
    with pytest.raises(msgspec.ValidationError, match="weight"):
        config(a=0.0, b=0.5, c=0.2)


def test_the_accounts_halt_of_a_sleeve() -> None:
    from colmena.execution import ExecutionSettings
    from colmena.execution.trading_loop import RiskStage

    stage = RiskStage(ExecutionSettings(), RISK)
    with pytest.raises(ValueError, match="the account's drawdown must be finite"):
        stage.halt(T0, account_drawdown=math.nan)
    events = stage.halt(T0, account_drawdown=0.25)
    assert [(e.code_name, e.value) for e in events] == [("account_kill_switch", 0.25),
                                                        ("HALTED", 0.0)]  # fmt: skip
    assert stage.halt(T0 + MINUTE, account_drawdown=0.3) == ()  # already HALTED
    assert stage.snapshot().risk_manager.state == "HALTED"  # type: ignore[union-attr]
