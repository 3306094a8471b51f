"""Encoding of the wire messages: MessagePack (the contract's choice) next to JSON.

Run: ``pytest bench/test_bench_wire.py --benchmark-only``. One bar's messages of one symbol, as the
services exchange them (candle, risk gate, execution report with a fill, account, signal, order
with its decision, and the decision audit with 100 agent signals), produced by the real trading
loop halves; each round encodes all of them and decodes them back with the typed decoders.
``extra_info`` gives the encoded size of the bar's messages in bytes, so the choice of
:mod:`colmena.live.wire` (MessagePack) can be checked on both speed and size.
"""

from __future__ import annotations

from typing import Any

import msgspec
import numpy as np
import pytest

from colmena.execution import ExecutionSettings
from colmena.execution.trading_loop import Bar, ExecutionStage, RiskStage
from colmena.live import wire
from colmena.risk import RiskConfig

MINUTE_NS = 60_000_000_000


def _one_bar_of_messages() -> list[wire.WireMessage]:
    settings = ExecutionSettings(market="margin", max_participation=0.5)
    risk = RiskStage(
        settings,
        RiskConfig(kelly_prior=1.0, kelly_multiplier=1.0, var_budget=1e9, min_trade_fraction=0.0),
    )
    execution = ExecutionStage(settings)
    rng = np.random.default_rng(3)
    sym = "BTC/USDT"
    price = 20_000.0
    for i in range(2_000):  # until a bar fills an order decided at the previous close
        ts = (27_000_000 + i) * MINUTE_NS
        close = price * float(np.exp(rng.normal(0.0, 2e-3)))
        bar = Bar(ts, price, max(price, close) * 1.001, min(price, close) * 0.999, close, 12.5)
        gate = risk.open(bar)
        report = execution.open(bar, gate.state)
        if report is not None:
            risk.on_execution(report)
        account = execution.close(bar)
        signal = float(np.tanh(rng.normal()))
        decided = risk.close(bar, account, "decide", signal)
        if decided.order is not None:
            execution.submit(decided.order)
        if report is not None and report.fill is not None:
            agents = tuple(float(x) for x in np.tanh(rng.normal(size=100)))
            return [
                wire.CandleMessage(symbol=sym, ts=ts, bar_seconds=60, bar=bar),
                wire.GateMessage(symbol=sym, ts=ts, gate=gate),
                wire.ExecutionMessage(symbol=sym, ts=ts, report=report),
                wire.AccountMessage(symbol=sym, ts=ts, snapshot=account),
                wire.SignalMessage(symbol=sym, ts=ts, action="decide", signal=signal, valid=True,
                                   regime=1, model_sha256="ab" * 32),
                wire.OrderMessage(symbol=sym, ts=ts, decided=decided),
                wire.DecisionAudit(symbol=sym, ts=ts, model_sha256="ab" * 32, candle=bar,
                                   agent_signals=agents, regime=1, action="decide",
                                   signal=signal, decision=decided.decision,
                                   order=decided.order),
            ]  # fmt: skip
        price = close
    raise AssertionError("no fill in 2,000 bars")


@pytest.fixture(scope="module")
def messages() -> list[wire.WireMessage]:
    return _one_bar_of_messages()


def _kinds(messages: list[wire.WireMessage]) -> list[Any]:
    return [m.__struct_config__.tag for m in messages]


@pytest.mark.benchmark(group="wire: encode + decode one bar's messages")
def test_colmena_msgpack(benchmark: Any, messages: list[wire.WireMessage]) -> None:
    kinds = _kinds(messages)

    def run() -> int:
        size = 0
        for kind, message in zip(kinds, messages, strict=True):
            data = wire.encode(message)
            size += len(data)
            wire.decode(kind, data)
        return size

    benchmark.extra_info["bytes_per_bar"] = run()
    benchmark(run)


@pytest.mark.benchmark(group="wire: encode + decode one bar's messages")
def test_peer_json(benchmark: Any, messages: list[wire.WireMessage]) -> None:
    encoder = msgspec.json.Encoder()
    decoders = {k: msgspec.json.Decoder(t) for k, t in wire.MESSAGE_TYPES.items()}
    kinds = _kinds(messages)

    def run() -> int:
        size = 0
        for kind, message in zip(kinds, messages, strict=True):
            data = encoder.encode(message)
            size += len(data)
            decoders[kind].decode(data)
        return size

    benchmark.extra_info["bytes_per_bar"] = run()
    benchmark(run)
