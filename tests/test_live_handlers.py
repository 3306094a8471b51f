"""The services' handlers (colmena.live.handlers) give the one-process trader's decisions, orders,
fills and accounts bit for bit, whatever order their inputs arrive in and however often."""

from __future__ import annotations

import math
import random
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from colmena.data import Candles, load_ohlcv
from colmena.execution import ExecutionSettings
from colmena.execution.trading_loop import Bar, Decision, RiskManagerSnapshot
from colmena.live import CandleResult, SwarmTrader, wire
from colmena.live.handlers import (
    ExecutionHandler,
    RiskHandler,
    SequenceError,
    StrategyHandler,
    route,
)
from colmena.model.swarm import SwarmModel
from colmena.risk import RiskConfig

pytest.importorskip("torch")
sys.path.insert(0, str(Path(__file__).parent))
from helpers import synthetic_candles
from test_live_replay import RISK, trained

SYMBOL = "BTC/USDT"
SHA = "cd" * 32
EXECUTION = ExecutionSettings(market="margin", max_participation=0.05)


@pytest.fixture(scope="module")
def candles(tmp_path_factory: pytest.TempPathFactory) -> Candles:
    folder = tmp_path_factory.mktemp("candles")
    return load_ohlcv(synthetic_candles(folder, n=14 * 1_440 + 3 * 1_440, seed=5))


@pytest.fixture(scope="module")
def model(candles: Candles) -> SwarmModel:
    return trained(candles).to_model()


def _bars(candles: Candles, start: int) -> list[Bar]:
    cols = [c.tolist() for c in (candles.ts, candles.open, candles.high, candles.low,
                                 candles.close, candles.volume)]  # fmt: skip
    return [Bar(*row) for row in list(zip(*cols, strict=True))[start:]]


def _reference(model: SwarmModel, bars: list[Bar]) -> list[CandleResult]:
    trader = SwarmTrader(model, RISK, EXECUTION)
    return [trader.on_candle(b) for b in bars]


def _handlers(model: SwarmModel) -> tuple[StrategyHandler, RiskHandler, ExecutionHandler]:
    return (
        StrategyHandler(model, SYMBOL, SHA),
        RiskHandler(SYMBOL, RISK, EXECUTION),
        ExecutionHandler(SYMBOL, EXECUTION),
    )


def _candle(bar: Bar) -> wire.CandleMessage:
    return wire.CandleMessage(symbol=SYMBOL, ts=bar.ts, bar_seconds=60, bar=bar)


def _compare(
    reference: list[CandleResult], produced: list[wire.WireMessage], min_fills: int = 10
) -> None:
    orders = {m.ts: m for m in produced if isinstance(m, wire.OrderMessage)}
    fills = {m.ts: m for m in produced if isinstance(m, wire.ExecutionMessage)}
    accounts = {m.ts: m for m in produced if isinstance(m, wire.AccountMessage)}
    audits = {m.ts: m for m in produced if isinstance(m, wire.DecisionAudit)}
    risk_states = {m.ts: m for m in produced if isinstance(m, wire.RiskStateMessage)}
    events: dict[int, list[wire.EventMessage]] = {}
    for m in produced:
        if isinstance(m, wire.EventMessage):
            events.setdefault(m.ts, []).append(m)
    assert len(orders) == len(accounts) == len(audits) == len(risk_states) == len(reference)
    traded = 0
    for r in reference:
        step = r.step
        assert orders[r.ts].decided.decision == step.decision
        assert orders[r.ts].decided.order == step.order
        report = fills.get(r.ts)
        assert (None if report is None else report.report.fill) == step.fill
        traded += step.fill is not None
        account = accounts[r.ts].snapshot
        assert (account.cash, account.position, account.equity) == (
            step.cash,
            step.position,
            step.equity,
        )
        assert [e.event for e in events.get(r.ts, [])] == list(step.events)
        audit = audits[r.ts]
        assert audit.signal == r.signal
        assert audit.agent_signals == tuple(float(x) for x in r.agent_signals)
        risk_state = risk_states[r.ts]
        assert (risk_state.state, risk_state.kelly_fraction, risk_state.equity) == (
            step.decision.state,
            step.decision.kelly,
            step.equity,
        )
        assert risk_state.halted == (step.decision.state == "HALTED")
    assert traded >= min_fills, "the model must trade for the comparison to mean something"


def test_handlers_in_publication_order_equal_the_trader(
    model: SwarmModel, candles: Candles
) -> None:
    bars = _bars(candles, 14 * 1_440)
    produced = route(_handlers(model), [_candle(b) for b in bars])
    _compare(_reference(model, bars), produced)
    # Every message of the session is a valid wire message with a unique key.
    keys = [wire.idempotency_key(m) for m in produced]
    assert len(set(keys)) == len(keys)
    for m in produced[:500]:
        assert wire.decode_any(wire.encode(m)) == m


def test_handlers_take_inputs_in_any_order_and_twice(model: SwarmModel, candles: Candles) -> None:
    """Delivery as the bus does it: each service reads one ordered consumer per kind, so the
    kinds interleave in any order while each kind stays in order, and a message not yet
    acknowledged can come again. A random scheduler picks which consumer delivers next."""
    bars = _bars(candles, 14 * 1_440)[:1_500]
    reference = _reference(model, bars)
    handlers = dict(zip(("strategy", "risk", "execution"), _handlers(model), strict=True))
    takes = {
        name: tuple(wire.MESSAGE_TYPES[kind] for kind in handler.INPUTS)
        for name, handler in handlers.items()
    }
    queues: dict[tuple[str, type], list[wire.WireMessage]] = {
        (name, kind): [] for name, kinds in takes.items() for kind in kinds
    }
    rng = random.Random(3)
    produced: list[wire.WireMessage] = []

    def publish(message: wire.WireMessage) -> None:
        for name, kinds in takes.items():
            if isinstance(message, kinds):
                queue = queues[(name, type(message))]
                queue.append(message)
                if rng.random() < 0.1:
                    queue.append(message)  # redelivered before it was acknowledged

    feed = [_candle(b) for b in bars]
    while feed or any(queues.values()):
        ready = [key for key, queue in queues.items() if queue]
        if feed and (not ready or rng.random() < 0.3):
            publish(feed.pop(0))
            continue
        name, kind = rng.choice(ready)
        message = queues[(name, kind)].pop(0)
        for out in handlers[name].handle(message):
            produced.append(out)
            publish(out)
    _compare(reference, produced)


def test_sequence_errors(model: SwarmModel, candles: Candles) -> None:
    strategy, risk, execution = _handlers(model)
    bars = _bars(candles, 14 * 1_440)[:3]
    other = wire.CandleMessage(symbol="ETH/USDT", ts=bars[0].ts, bar_seconds=60, bar=bars[0])
    with pytest.raises(SequenceError, match=r"'ETH/USDT' reached the handler of 'BTC/USDT'"):
        strategy.handle(other)
    assert len(strategy.handle(_candle(bars[1]))) == 1
    assert strategy.handle(_candle(bars[1])) == []  # again: nothing
    with pytest.raises(SequenceError, match=r"older than the newest candle"):
        strategy.handle(_candle(bars[0]))
    with pytest.raises(SequenceError, match=r"a 300 s candle"):
        strategy.handle(wire.CandleMessage(symbol=SYMBOL, ts=bars[2].ts, bar_seconds=300,
                                           bar=bars[2]))  # fmt: skip
    gate = risk.handle(_candle(bars[0]))
    assert [type(m) for m in gate] == [wire.GateMessage]
    with pytest.raises(SequenceError, match=r"does not take GateMessage"):
        risk.handle(gate[0])
    with pytest.raises(SequenceError, match=r"does not take SignalMessage"):
        execution.handle(strategy.handle(_candle(bars[2]))[0])
    bad = Bar(bars[1].ts, 100.0, 99.0, 101.0, 100.0, 1.0)  # high below low
    with pytest.raises(ValueError, match=r"high"):
        RiskHandler(SYMBOL, RISK, EXECUTION).handle(_candle(bad))
    assert np.isfinite(execution.account.equity)
    handler = ExecutionHandler(SYMBOL, EXECUTION)
    assert handler.handle(_candle(bad)) == []  # waits for its gate
    with pytest.raises(ValueError, match=r"high"):
        handler.handle(wire.GateMessage(symbol=SYMBOL, ts=bad.ts, gate=gate[0].gate))


def test_risk_config_differences_show(model: SwarmModel, candles: Candles) -> None:
    """The comparison is not vacuous: a different risk configuration gives other orders."""
    bars = _bars(candles, 14 * 1_440)[:2_000]
    tighter = RiskConfig(kelly_prior=0.5, kelly_multiplier=0.25, var_budget=1e9,
                         min_trade_fraction=0.0)  # fmt: skip
    handlers = (
        StrategyHandler(model, SYMBOL, SHA),
        RiskHandler(SYMBOL, tighter, EXECUTION),
        ExecutionHandler(SYMBOL, EXECUTION),
    )
    produced = route(handlers, [_candle(b) for b in bars])
    with pytest.raises(AssertionError):
        _compare(_reference(model, bars), produced)


# ---------------------------------------------------------------- the risk state of every close


def _expected_risk_state(manager: RiskManagerSnapshot, decision: Decision) -> dict[str, Any]:
    """The risk state message's fields, written out from the stage's snapshot and decision."""
    return {
        "state": manager.state,
        "halted": manager.state == "HALTED",
        "peak_equity": manager.peak_equity,
        "drawdown": manager.drawdown,
        "high_equity": manager.high_equity,
        "drawdown_from_high": manager.drawdown_from_high,
        "ladder_level": manager.ladder_level,
        "paused_until": manager.paused_until,
        "daily_pnl": manager.daily_pnl,
        "day_start_equity": manager.day_start_equity,
        "equity": manager.last_equity,
        "bar_volatility": math.sqrt(manager.ewma_variance),
        "volatility_returns": manager.ewma_count,
        "kelly_fraction": decision.kelly,
        "kelly_round_trips": len(manager.kelly_trades),
    }


def _fields(message: wire.RiskStateMessage) -> dict[str, Any]:
    return {f: getattr(message, f) for f in message.__struct_fields__ if f not in ("symbol", "ts")}


def _close_outputs(outputs: Sequence[wire.WireMessage]) -> list[type]:
    """The kinds of a close's outputs, in order (gates of the next bar left out)."""
    return [type(m) for m in outputs if not isinstance(m, wire.GateMessage)]


def test_the_risk_state_of_every_close_is_the_stages(model: SwarmModel, candles: Candles) -> None:
    """One risk state per close, published with the order and the audit, equal to the stage's
    snapshot at that close (the handler's saved state) and the decision."""
    bars = _bars(candles, 14 * 1_440)
    strategy, risk, execution = _handlers(model)
    risk.keep_state = True
    handlers = (strategy, risk, execution)
    queue: list[wire.WireMessage] = [_candle(b) for b in bars]
    seen: list[wire.RiskStateMessage] = []
    i = 0
    while i < len(queue):  # colmena.live.handlers.route, checking after each risk handler call
        message = queue[i]
        i += 1
        for handler in handlers:
            takes = tuple(wire.MESSAGE_TYPES[kind] for kind in handler.INPUTS)
            if not isinstance(message, takes):
                continue
            new = handler.handle(message)
            queue.extend(new)
            states = [m for m in new if isinstance(m, wire.RiskStateMessage)]
            if handler is not risk or not states:
                continue
            (state,) = states  # one close per delivery in publication order
            (order,) = [m for m in new if isinstance(m, wire.OrderMessage)]
            kinds = _close_outputs(new)
            assert kinds[:3] == [wire.OrderMessage, wire.DecisionAudit, wire.RiskStateMessage]
            assert set(kinds[3:]) <= {wire.EventMessage}
            saved = risk.state()
            assert saved is not None
            assert saved.risk is not None
            assert saved.risk.risk_manager is not None
            assert (state.symbol, state.ts, saved.done_ts) == (SYMBOL, order.ts, order.ts)
            expected = _expected_risk_state(saved.risk.risk_manager, order.decided.decision)
            assert _fields(state) == expected
            assert wire.idempotency_key(state) == f"v1.risk_state.{SYMBOL}.{state.ts}"
            seen.append(state)
    assert [m.ts for m in seen] == [b.ts for b in bars]
    # The session reaches a warm volatility (the model's signal keeps its sign here, so the
    # Kelly window stays empty: the operator test below fills it).
    assert seen[-1].volatility_returns >= 30
    assert seen[-1].bar_volatility > 0.0


T0 = 60_000_000_000 * 27_000_000  # a minute boundary, ns


def _crash_bars(n_flat: int, n_fall: int, fall: float) -> list[Bar]:
    """``n_flat`` bars wiggling around 100, then ``n_fall`` bars falling ``fall`` each."""
    bars = []
    previous = 100.0
    for i in range(n_flat + n_fall):
        close = previous * (1.0 - fall) if i >= n_flat else 100.0 * (1.0 + 0.001 * (i % 3 - 1))
        high, low = max(previous, close) * 1.0005, min(previous, close) * 0.9995
        bars.append(Bar(T0 + 60_000_000_000 * i, previous, high, low, close, 1e6))
        previous = close
    return bars


def _step(
    risk: RiskHandler, execution: ExecutionHandler, bar: Bar, signal: float
) -> tuple[wire.RiskStateMessage, list[wire.EventMessage]]:
    """One bar through the risk and execution handlers with a given signal; its risk state,
    checked against the risk manager's own accessors (the core's, not the snapshot), and
    events."""
    signal_message = wire.SignalMessage(symbol=SYMBOL, ts=bar.ts, action="decide",
                                        signal=signal, valid=True, regime=0,
                                        model_sha256=SHA)  # fmt: skip
    produced = route((risk, execution), [_candle(bar), signal_message])
    (state,) = [m for m in produced if isinstance(m, wire.RiskStateMessage)]
    manager = risk.stage.risk_manager
    assert manager is not None
    assert (state.state, state.halted) == (manager.state, manager.state == "HALTED")
    assert (state.peak_equity, state.drawdown, state.drawdown_from_high) == (
        manager.peak_equity,
        manager.drawdown,
        manager.drawdown_from_high,
    )
    assert (state.daily_pnl, state.paused_until) == (manager.daily_pnl, manager.paused_until)
    assert (state.kelly_fraction, state.kelly_round_trips) == (
        manager.kelly_fraction,
        manager.kelly_trades,
    )
    # The core's volatility: the same square root, used from 30 returns on (NaN before).
    if state.volatility_returns >= 30:
        assert state.bar_volatility == manager.bar_volatility
    else:
        assert math.isnan(manager.bar_volatility)
    assert state.equity == execution.account.equity
    saved = risk.stage.snapshot().risk_manager
    assert saved is not None
    (order,) = [m for m in produced if isinstance(m, wire.OrderMessage)]
    assert _fields(state) == _expected_risk_state(saved, order.decided.decision)
    return state, [m for m in produced if isinstance(m, wire.EventMessage)]


#: Sized at full exposure; only the kill switch can stop it (the ladder and the daily loss
#: pause are set out of reach).
CRASH_RISK = RiskConfig(kelly_prior=1.0, kelly_multiplier=1.0, var_budget=1e9,
                        min_trade_fraction=0.0, halt_drawdown=0.03,
                        ladder_drawdown=(0.5, 0.6, 0.7), daily_loss_pause=-0.9,
                        alert_drawdown_warning=0.5, alert_drawdown_critical=0.6,
                        alert_daily_pnl_warning=-0.5, alert_daily_pnl_critical=-0.6)  # fmt: skip


def test_a_kill_switch_halt_shows_in_the_risk_state() -> None:
    risk = RiskHandler(SYMBOL, CRASH_RISK, EXECUTION)
    execution = ExecutionHandler(SYMBOL, EXECUTION)
    states: list[wire.RiskStateMessage] = []
    fired: list[int] = []
    for bar in _crash_bars(40, 12, 0.01):
        state, events = _step(risk, execution, bar, 1.0)
        states.append(state)
        if any(e.event.code_name == "kill_switch" for e in events):
            fired.append(state.ts)
    assert len(fired) == 1, "the crash must trip the kill switch exactly once"
    halted = [s.ts for s in states if s.halted]
    assert halted == [s.ts for s in states if s.ts >= fired[0]]  # from that close on
    first = next(s for s in states if s.halted)
    assert first.state == "HALTED"
    assert first.drawdown_from_high > CRASH_RISK.halt_drawdown
    assert first.ladder_level == 0  # the kill switch, not the ladder
    assert all(s.state == "ACTIVE" for s in states if not s.halted)


def test_an_operators_halt_shows_in_the_next_risk_state() -> None:
    risk = RiskHandler(SYMBOL, CRASH_RISK, EXECUTION)
    execution = ExecutionHandler(SYMBOL, EXECUTION)
    bars = _crash_bars(10, 0, 0.0)
    signals = [0.5 if i % 2 else -0.5 for i in range(len(bars))]  # round trips for Kelly
    states = [_step(risk, execution, b, x)[0] for b, x in zip(bars[:5], signals, strict=False)]
    events = risk.stage.halt(bars[4].ts + 30_000_000_000)  # a person halts between bars
    assert [e.code_name for e in events] == ["halted_by_operator", "HALTED"]
    states += [_step(risk, execution, b, x)[0] for b, x in zip(bars[5:], signals[5:], strict=True)]
    assert [s.halted for s in states] == [False] * 5 + [True] * 5
    assert {s.state for s in states[5:]} == {"HALTED"}
    assert states[4].kelly_round_trips > 0
