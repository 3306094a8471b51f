"""The strategy, risk and execution services on a real nats-server: candles published on the bus
give, in the stream, the one-process trader's decisions, orders, fills and accounts bit for bit;
a risk service killed mid-run and restarted rebuilds its state and the stream holds each message
once."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from colmena.data import Candles, load_ohlcv
from colmena.live import wire
from colmena.live.handlers import ExecutionHandler, RiskHandler, StrategyHandler
from colmena.model.swarm import SwarmModel
from colmena.services.bus import STREAM, Bus
from colmena.services.nats_server import EmbeddedNatsServer
from colmena.services.runner import serve

pytest.importorskip("torch")
sys.path.insert(0, str(Path(__file__).parent))
from helpers import synthetic_candles
from test_live_handlers import EXECUTION, RISK, SHA, SYMBOL, _bars, _candle, _compare, _reference
from test_live_replay import trained

BARS = 600


@pytest.fixture(scope="module")
def candles(tmp_path_factory: pytest.TempPathFactory) -> Candles:
    folder = tmp_path_factory.mktemp("candles")
    return load_ohlcv(synthetic_candles(folder, n=14 * 1_440 + BARS, seed=5))


@pytest.fixture(scope="module")
def model(candles: Candles) -> SwarmModel:
    return trained(candles).to_model()


async def _stream_contents(url: str) -> list[wire.WireMessage]:
    """Every message in the stream, in order (a fresh ephemeral consumer)."""
    bus = await Bus.connect(url)
    try:
        sub = await bus.jetstream.pull_subscribe(wire.subject_filter(), stream=STREAM)
        out: list[wire.WireMessage] = []
        total = await bus.stream_messages()
        while len(out) < total:
            for raw in await sub.fetch(1_000, timeout=10.0):
                out.append(wire.decode_any(raw.data))
                await raw.ack()
        return out
    finally:
        await bus.close()


async def _run_role(
    url: str,
    role: str,
    make: Callable[[], object],
    stop: asyncio.Event,
    on_handled: Callable[[wire.WireMessage, list[wire.WireMessage]], None] | None = None,
) -> int:
    bus = await Bus.connect(url, name=role)
    try:
        handler = make()
        return await serve(
            bus,
            role,
            {SYMBOL: handler},
            stop,
            on_handled=on_handled,
            ack_wait_seconds=1.0,  # type: ignore[dict-item]
        )
    finally:
        await bus.close()


def test_services_on_the_bus_equal_the_trader(
    model: SwarmModel, candles: Candles, tmp_path: Path
) -> None:
    bars = _bars(candles, 14 * 1_440)
    reference = _reference(model, bars)

    async def run(url: str) -> None:
        feed = await Bus.connect(url, name="ingest")
        closed = asyncio.Event()
        orders = 0

        def count(_: wire.WireMessage, outputs: list[wire.WireMessage]) -> None:
            nonlocal orders
            orders += sum(isinstance(m, wire.OrderMessage) for m in outputs)
            if orders == len(bars):
                closed.set()  # every bar decided: a point the service reports

        stop = asyncio.Event()
        services = [
            asyncio.create_task(
                _run_role(url, "strategy", lambda: StrategyHandler(model, SYMBOL, SHA), stop)
            ),
            asyncio.create_task(
                _run_role(url, "risk", lambda: RiskHandler(SYMBOL, RISK, EXECUTION), stop, count)
            ),
            asyncio.create_task(
                _run_role(url, "execution", lambda: ExecutionHandler(SYMBOL, EXECUTION), stop)
            ),
        ]
        for bar in bars:
            await feed.publish(_candle(bar))
        await feed.close()
        await asyncio.wait_for(closed.wait(), timeout=300.0)  # hang detection
        stop.set()
        await asyncio.gather(*services)

    with EmbeddedNatsServer(tmp_path / "nats") as server:
        asyncio.run(run(server.url))
        produced = [m for m in asyncio.run(_stream_contents(server.url))
                    if not isinstance(m, wire.CandleMessage)]  # fmt: skip
    _compare(reference, produced, min_fills=3)
    keys = [wire.idempotency_key(m) for m in produced]
    assert len(keys) == len(set(keys))


def test_a_restarted_risk_service_rebuilds_its_state(
    model: SwarmModel, candles: Candles, tmp_path: Path
) -> None:
    bars = _bars(candles, 14 * 1_440)
    reference = _reference(model, bars)

    async def run(url: str) -> None:
        feed = await Bus.connect(url, name="ingest")
        for bar in bars:
            await feed.publish(_candle(bar))
        await feed.close()
        stop_all = asyncio.Event()
        others = [
            asyncio.create_task(
                _run_role(url, "strategy", lambda: StrategyHandler(model, SYMBOL, SHA), stop_all)
            ),
            asyncio.create_task(
                _run_role(url, "execution", lambda: ExecutionHandler(SYMBOL, EXECUTION), stop_all)
            ),
        ]
        # First life of the risk service: it stops after deciding 120 bars (a reported point).
        first_stop = asyncio.Event()
        decided = 0

        def count_first(_: wire.WireMessage, outputs: list[wire.WireMessage]) -> None:
            nonlocal decided
            decided += sum(isinstance(m, wire.OrderMessage) for m in outputs)
            if decided >= 120:
                first_stop.set()

        await _run_role(url, "risk", lambda: RiskHandler(SYMBOL, RISK, EXECUTION), first_stop,
                        count_first)  # fmt: skip
        assert decided >= 120
        # Second life: a new process's handler, rebuilt from the stream, decides the rest.
        done = asyncio.Event()
        seen: set[int] = set()

        def count_second(_: wire.WireMessage, outputs: list[wire.WireMessage]) -> None:
            seen.update(m.ts for m in outputs if isinstance(m, wire.OrderMessage))
            if bars[-1].ts in seen:
                done.set()

        second = asyncio.create_task(
            _run_role(url, "risk", lambda: RiskHandler(SYMBOL, RISK, EXECUTION), done, count_second)
        )
        await asyncio.wait_for(second, timeout=300.0)  # hang detection
        stop_all.set()
        await asyncio.gather(*others)

    with EmbeddedNatsServer(tmp_path / "nats") as server:
        asyncio.run(run(server.url))
        produced = [m for m in asyncio.run(_stream_contents(server.url))
                    if not isinstance(m, wire.CandleMessage)]  # fmt: skip
    _compare(reference, produced, min_fills=3)
    keys = [wire.idempotency_key(m) for m in produced]
    assert len(keys) == len(set(keys))  # nothing published twice across the restart
