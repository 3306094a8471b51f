"""The services' handlers (colmena.live.handlers) give the one-process trader's decisions, orders,
fills and accounts bit for bit, whatever order their inputs arrive in and however often."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import numpy as np
import pytest

from colmena.data import Candles, load_ohlcv
from colmena.execution import ExecutionSettings
from colmena.execution.trading_loop import Bar
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
    events: dict[int, list[wire.EventMessage]] = {}
    for m in produced:
        if isinstance(m, wire.EventMessage):
            events.setdefault(m.ts, []).append(m)
    assert len(orders) == len(accounts) == len(audits) == len(reference)
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
