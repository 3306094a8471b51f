"""Several symbols on a real nats-server, and the strategy split over instances: two strategy
instances over four symbols (``partition``) give the stream the same records as one instance,
and so do two strategy processes under `colmena up` (four symbols of one account replayed from
four files, PostgreSQL records compared row for row); a symbol's lease keeps a second instance
off it until the first stops."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import nats.js.errors
import pytest
from hypothesis import given
from hypothesis import strategies as st

from colmena.data import Candles, load_ohlcv
from colmena.execution.trading_loop import Bar
from colmena.live import wire
from colmena.live.handlers import ExecutionHandler, RiskHandler, StrategyHandler
from colmena.model.swarm import SwarmModel
from colmena.services.bus import Bus
from colmena.services.leases import LeaseLostError, Leases, symbol_key
from colmena.services.nats_server import EmbeddedNatsServer
from colmena.services.runner import partition, serve
from colmena.training import TrainingState

pytest.importorskip("torch")
sys.path.insert(0, str(Path(__file__).parent))
from helpers import synthetic_candles
from test_live_handlers import EXECUTION, RISK, SHA, _bars
from test_live_replay import trained
from test_services import _stream_contents

TRAIN = 14 * 1_440
BARS = 300
SYMBOLS = ["BTC/USDT", "ETH/USDT", "SOL/USDT", "XRP/USDT"]


@pytest.fixture(scope="module")
def candles(tmp_path_factory: pytest.TempPathFactory) -> Candles:
    folder = tmp_path_factory.mktemp("candles")
    return load_ohlcv(synthetic_candles(folder, n=TRAIN + BARS, seed=5))


@pytest.fixture(scope="module")
def state(candles: Candles) -> TrainingState:
    return trained(candles)


@pytest.fixture(scope="module")
def model(state: TrainingState) -> SwarmModel:
    return state.to_model()


@pytest.fixture(scope="module")
def markets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Bar]]:
    """Each symbol its own random walk over the same minutes."""
    out = {}
    for seed, symbol in enumerate(SYMBOLS, start=11):
        folder = tmp_path_factory.mktemp(f"market{seed}")
        out[symbol] = _bars(load_ohlcv(synthetic_candles(folder, n=TRAIN + BARS, seed=seed)), TRAIN)
    return out


@given(
    symbols=st.lists(st.text("ABCXYZ/", min_size=1, max_size=6), unique=True, max_size=20),
    count=st.integers(1, 8),
)
def test_partition_deals_every_symbol_to_exactly_one_instance(
    symbols: list[str], count: int
) -> None:
    shares = [partition(symbols, i, count) for i in range(1, count + 1)]
    dealt = sorted(s for share in shares for s in share)
    assert dealt == sorted(symbols)
    assert max(map(len, shares)) - min(map(len, shares)) <= 1  # balanced
    with pytest.raises(ValueError, match="partition 0/2"):
        partition(symbols, 0, 2)


async def _run(
    url: str,
    model: SwarmModel,
    markets: dict[str, list[Bar]],
    strategy_shares: list[list[str]],
) -> dict[int, set[str]]:
    """The three roles over every symbol, the strategy split into ``strategy_shares``; returns
    the symbols each strategy instance handled."""
    stop = asyncio.Event()
    decided: set[tuple[str, int]] = set()
    everything = {(s, bars[-1].ts) for s, bars in markets.items()}
    done = asyncio.Event()
    handled_by: dict[int, set[str]] = defaultdict(set)

    def on_order(_: wire.WireMessage, outputs: list[wire.WireMessage]) -> None:
        decided.update((m.symbol, m.ts) for m in outputs if isinstance(m, wire.OrderMessage))
        if everything <= decided:
            done.set()  # the last bar of every symbol decided: a point the service reports

    async def role(name: str, handlers: dict[str, object], instance: int = 0) -> int:
        def seen(message: wire.WireMessage, outputs: list[wire.WireMessage]) -> None:
            handled_by[instance].add(message.symbol)
            if name == "risk":
                on_order(message, outputs)

        bus = await Bus.connect(url, name=f"{name}-{instance}")
        try:
            return await serve(bus, name, handlers, stop, on_handled=seen)  # type: ignore[arg-type]
        finally:
            await bus.close()

    services = [
        asyncio.create_task(role("strategy", {s: StrategyHandler(model, s, SHA) for s in share}, i))
        for i, share in enumerate(strategy_shares, start=1)
    ]
    services.append(asyncio.create_task(role("risk", {s: RiskHandler(s, RISK, EXECUTION)
                                                       for s in markets})))  # fmt: skip
    services.append(asyncio.create_task(role("execution", {s: ExecutionHandler(s, EXECUTION)
                                                            for s in markets})))  # fmt: skip
    feed = await Bus.connect(url, name="ingest")
    for i in range(BARS):  # every symbol's candle of a minute, then the next minute
        for symbol, bars in markets.items():
            candle = wire.CandleMessage(symbol=symbol, ts=bars[i].ts, bar_seconds=60, bar=bars[i])
            await feed.publish(candle)
    await feed.close()
    try:
        await asyncio.wait_for(done.wait(), timeout=600.0)  # hang detection
    finally:
        stop.set()
        await asyncio.gather(*services)
    return {i: handled_by[i] for i in range(1, len(strategy_shares) + 1)}


def _by_subject(messages: list[wire.WireMessage]) -> dict[str, list[bytes]]:
    out: dict[str, list[bytes]] = defaultdict(list)
    for m in messages:
        out[wire.subject(m.__struct_config__.tag, m.symbol)].append(wire.encode(m))  # type: ignore[arg-type]
    return dict(out)


def test_two_strategy_instances_over_four_symbols_equal_one(
    model: SwarmModel, markets: dict[str, list[Bar]], tmp_path: Path
) -> None:
    with EmbeddedNatsServer(tmp_path / "one") as server:
        asyncio.run(_run(server.url, model, markets, [SYMBOLS]))
        one = _by_subject(asyncio.run(_stream_contents(server.url)))
    shares = [partition(SYMBOLS, 1, 2), partition(SYMBOLS, 2, 2)]
    with EmbeddedNatsServer(tmp_path / "two") as server:
        handled = asyncio.run(_run(server.url, model, markets, shares))
        two = _by_subject(asyncio.run(_stream_contents(server.url)))
    # Each instance took only its share of the symbols, and together all of them.
    assert handled == {1: set(shares[0]), 2: set(shares[1])}
    assert sorted(one) == sorted(two)
    for subject, messages in one.items():
        assert two[subject] == messages, subject  # same messages, same order, bit for bit
    orders = [s for s in one if ".order." in s]
    assert len(orders) == len(SYMBOLS)
    assert all(len(one[s]) == BARS for s in orders)


def test_a_symbols_lease_keeps_a_second_instance_off_until_the_first_stops(
    tmp_path: Path,
) -> None:
    async def run(url: str) -> None:
        first_bus = await Bus.connect(url, name="first")
        second_bus = await Bus.connect(url, name="second")
        try:
            first = await Leases.open(first_bus, "strategy", SYMBOLS[:2], holder="first")
            assert await first.acquire(asyncio.Event())
            second = await Leases.open(second_bus, "strategy", SYMBOLS[1:3], holder="second")
            waits: list[tuple[str, str]] = []
            released = asyncio.Event()

            def on_wait(symbol: str, holder: str) -> None:
                waits.append((symbol, holder))
                released.set()

            taking = asyncio.create_task(second.acquire(asyncio.Event(), on_wait=on_wait))
            await asyncio.wait_for(released.wait(), timeout=60.0)  # hang detection
            assert waits[0] == (SYMBOLS[1], "first")
            assert not taking.done()
            await first.release()
            assert await asyncio.wait_for(taking, timeout=60.0)
            kv = await second_bus.jetstream.key_value("colmena_leases")
            for symbol in SYMBOLS[1:3]:
                entry = await kv.get(symbol_key("strategy", symbol))
                assert entry.value == b"second"
            # The first instance comes back and renews a lease it no longer holds: it stops.
            first._revisions = {symbol_key("strategy", SYMBOLS[1]): 1}
            first.lease_seconds = 1.0
            with pytest.raises(LeaseLostError, match="taken by another instance"):
                await asyncio.wait_for(first.keep(), timeout=60.0)
            # A stop while waiting gives up and holds nothing.
            third = await Leases.open(first_bus, "strategy", SYMBOLS[2:], holder="third")
            stop = asyncio.Event()
            stop.set()
            assert not await third.acquire(stop)
            with pytest.raises(nats.js.errors.KeyNotFoundError):
                await kv.get(symbol_key("strategy", SYMBOLS[3]))
            await second.release()
        finally:
            await first_bus.close()
            await second_bus.close()

    with EmbeddedNatsServer(tmp_path / "nats") as server:
        asyncio.run(run(server.url))


def test_the_lease_time_must_agree(tmp_path: Path) -> None:
    async def run(url: str) -> None:
        bus = await Bus.connect(url)
        try:
            await Leases.open(bus, "risk", SYMBOLS, lease_seconds=10.0)
            with pytest.raises(ValueError, match="time to live of 10 s"):
                await Leases.open(bus, "risk", SYMBOLS, lease_seconds=20.0)
        finally:
            await bus.close()

    with EmbeddedNatsServer(tmp_path / "nats") as server:
        asyncio.run(run(server.url))


UP_CONFIG = """
bar_seconds = 60
strategy_instances = {instances}
{symbols}
[feed]
kind = "replay"

[risk]
kelly_prior = 1.0
kelly_multiplier = 1.0
var_budget = 1e9
min_trade_fraction = 0.0

[execution]
market = "margin"
max_participation = 0.05
"""
UP_BARS = 200


def _records(config: Path, data_dir: Path, expected_orders: int) -> dict[str, list[Any]]:
    """``colmena up --config CONFIG`` until the recorder holds ``expected_orders`` orders and
    every other message of the stream; then Ctrl-C. Every recorded row but the stream
    positions and record times, by table, in key order."""
    import psycopg

    from colmena.services.recorder import TABLES
    from colmena.services.up import ENDPOINTS_FILE

    up = subprocess.Popen(
        [sys.executable, "-c", "from colmena.cli import main; main(prog_name='colmena')",
         "up", "--config", str(config), "--data-dir", str(data_dir), "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        endpoints_file = data_dir / ENDPOINTS_FILE
        for _ in range(1_200):  # hang detection: until the system reports its addresses
            if endpoints_file.exists():
                break
            assert up.poll() is None, up.communicate()
            time.sleep(0.1)
        endpoints = json.loads(endpoints_file.read_text())
        orders = 0
        for _ in range(3_000):  # hang detection: until every decision and message is recorded
            try:
                with psycopg.connect(endpoints["db"]) as conn:
                    counts = [conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                              for t in TABLES if t != "live_trades"]  # fmt: skip
                    orders = conn.execute("SELECT count(*) FROM live_orders").fetchone()[0]
            except psycopg.errors.UndefinedTable:  # the recorder has not created them yet
                time.sleep(0.2)
                continue
            operator = Path(endpoints["operator_credentials"])  # NATS access is on
            in_stream = asyncio.run(_stream_count(endpoints["nats"], operator))
            if orders == expected_orders and sum(counts) == in_stream:
                break
            assert up.poll() is None, up.communicate()
            time.sleep(0.2)
        else:
            pytest.fail(f"not everything was recorded: {orders} orders")
        out: dict[str, list[Any]] = {}
        with psycopg.connect(endpoints["db"]) as conn:
            for table, columns in TABLES.items():
                kept = [c for c in columns if c != "stream_seq"]
                out[table] = conn.execute(
                    f"SELECT {', '.join(kept)} FROM {table} ORDER BY {', '.join(kept[:2])}"
                ).fetchall()
    finally:
        up.send_signal(signal.SIGINT)
        _, err = up.communicate(timeout=120)
    assert up.returncode == 0, err
    return out


async def _stream_count(url: str, credentials: Path | None = None) -> int:
    bus = await Bus.connect(url, credentials=credentials)
    try:
        return await bus.stream_messages()
    finally:
        await bus.close()


def test_colmena_up_with_two_strategy_processes_records_what_one_records(
    state: TrainingState, markets: dict[str, list[Bar]], tmp_path: Path
) -> None:
    """Four symbols on one account, replayed from four files through `colmena up`: the
    PostgreSQL records with two strategy processes (each its half of the symbols) are those of
    one process, row for row and byte for byte."""
    pytest.importorskip("pgserver")
    import pyarrow as pa
    import pyarrow.parquet as pq

    from colmena.persistence import checkpoint as checkpoints

    checkpoint = tmp_path / "checkpoints"
    checkpoints.save(checkpoint, state)
    entries = []
    for symbol, bars in markets.items():
        path = tmp_path / f"{symbol.replace('/', '_')}.parquet"
        rows = bars[:UP_BARS]
        pq.write_table(pa.table({
            "ts": pa.array([b.ts for b in rows], pa.timestamp("ns")),
            "open": [b.open for b in rows], "high": [b.high for b in rows],
            "low": [b.low for b in rows], "close": [b.close for b in rows],
            "volume": [b.volume for b in rows],
        }), path)  # fmt: skip
        entries.append(f'[[symbols]]\nsymbol = "{symbol}"\ncheckpoint = "{checkpoint}"\n'
                       f'candles = "{path}"\n')  # fmt: skip
    runs = []
    for instances in (1, 2):
        config = tmp_path / f"colmena-{instances}.toml"
        config.write_text(UP_CONFIG.format(instances=instances, symbols="\n".join(entries)))
        runs.append(_records(config, tmp_path / f"live-{instances}", UP_BARS * len(markets)))
    one, two = runs
    assert len(one["live_orders"]) == UP_BARS * len(markets)
    assert len(one["live_risk_state"]) == UP_BARS * len(markets)
    assert len(one["live_fills"]) > 0
    for table in one:
        assert two[table] == one[table], table
