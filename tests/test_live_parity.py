"""The same trades as the backtest: the live services, as `colmena serve` processes on a real
nats-server with the recorder writing to a real PostgreSQL, paper-trade a replay of real candles;
every decision, order, fill and account they recorded equals `colmena backtest --checkpoint` on
the same candles (its decisions.parquet, orders.parquet, fills.parquet and equity.parquet), bit
for bit; and `colmena replay-audit` finds the records identical to their reproduction.

Excluded by design, and only that: the backtest winds down at the end of its file (the last
``WIND_DOWN_BARS`` bars before the last one target a flat position, ``end_of_run``, and the last
bar places no order), while a live feed is open-ended and never knows a bar is its last. So the
comparison stops before the wind-down: decisions and orders made before its first bar, fills
and accounts up to that bar's open (the fill at its open is the order decided before it).
"""

from __future__ import annotations

import asyncio
import math
import signal
import sys
import time
from pathlib import Path
from typing import Any

import msgspec
import nats.js.errors
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from colmena.backtest import BacktestConfig
from colmena.backtest.engine import VERDICTS
from colmena.cli import main
from colmena.data import Candles, load_ohlcv
from colmena.execution.simulation import WIND_DOWN_BARS
from colmena.live import wire
from colmena.persistence import checkpoint as checkpoints
from colmena.services.bus import STREAM, Bus
from colmena.services.nats_server import EmbeddedNatsServer
from colmena.services.runner import ROLE_INPUTS, durable_name
from colmena.training import train

pytest.importorskip("torch")
pytest.importorskip("psycopg")
sys.path.insert(0, str(Path(__file__).parent))
import psycopg

from conftest import fresh_database
from helpers import every_agent_votes, run_cli, tiny_training
from test_live_handlers import EXECUTION, RISK, SYMBOL
from test_live_replay import OPEN_GATE
from test_serve_cli import CONFIG, _last_order_ts, _start

#: The model trains on the first ten days of March 2023 and trades the candles after them.
TRAIN_BARS = 10 * 1_440
#: Live candles: the market state's look-back (71 bars for this model) and a few hundred more.
LIVE_BARS = 500
BAR_NS = 60 * 10**9
TABLES = ("live_candles", "live_signals", "live_gates", "live_orders", "live_fills",
          "live_accounts", "live_audit", "live_events", "live_risk_state")  # fmt: skip


def _write_inputs(tmp_path: Path, candles: Candles) -> tuple[Path, Path]:
    """A checkpoint trained on the first ten days (every agent voting, its gate open, deciding
    every 5 minutes so that a few hundred bars hold many decisions) and the live candle file."""
    result = train(candles.slice(0, TRAIN_BARS), tiny_training(interval="5m"))
    folder = tmp_path / "checkpoints"
    checkpoints.save(folder, every_agent_votes(result.state, gate=OPEN_GATE))
    live = slice(TRAIN_BARS, TRAIN_BARS + LIVE_BARS)
    feed = tmp_path / "live.parquet"
    pq.write_table(
        pa.table({
            "ts": pa.array(candles.ts[live], pa.timestamp("ns")),
            "open": candles.open[live], "high": candles.high[live], "low": candles.low[live],
            "close": candles.close[live], "volume": candles.volume[live],
        }),
        feed,
    )  # fmt: skip
    return folder, feed


async def _settled(url: str) -> int | None:
    """The number of messages in the stream once every trading service has handled and
    acknowledged every input (a service acknowledges an input after publishing all its outputs),
    with nothing published while that was checked; None while not settled."""
    bus = await Bus.connect(url)
    try:
        before = await bus.stream_messages()
        for role, kinds in ROLE_INPUTS.items():
            for kind in kinds:
                try:
                    info = await bus.jetstream.consumer_info(
                        STREAM, durable_name(role, kind, SYMBOL)
                    )
                except nats.js.errors.NotFoundError:
                    return None  # not started yet
                if info.num_pending or info.num_ack_pending:
                    return None
        return before if await bus.stream_messages() == before else None
    finally:
        await bus.close()


def _recorded_total(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        return sum(conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES)


def _run_services(tmp_path: Path, folder: Path, feed: Path, dsn: str) -> float:
    """Ingest the feed, run strategy, risk, execution and the recorder as `colmena serve`
    processes until every message is recorded, stop them; returns the seconds it took."""
    started = time.perf_counter()
    with EmbeddedNatsServer(tmp_path / "nats") as server:
        config = tmp_path / "colmena.toml"
        config.write_text(CONFIG.format(url=server.url, checkpoints=folder, feed=feed))
        ingest = run_cli(["serve", "ingest", "--config", str(config)], timeout=120)
        assert ingest.returncode == 0, ingest.stderr
        services = [_start(["serve", role, "--config", str(config)])
                    for role in ("strategy", "risk", "execution")]  # fmt: skip
        services.append(_start(["serve", "recorder", "--config", str(config), "--db", dsn]))
        last_ts = int(load_ohlcv(feed).ts[-1])
        try:
            for _ in range(3_000):  # hang detection: until the last bar is decided and recorded
                if asyncio.run(_last_order_ts(server.url)) == last_ts:
                    settled = asyncio.run(_settled(server.url))
                    if settled is not None and settled == _recorded_total(dsn):
                        break
                assert all(p.poll() is None for p in services), [
                    p.communicate()[1] for p in services if p.poll() is not None
                ]
                time.sleep(0.1)
            else:
                pytest.fail("the services did not decide and record every bar")
        finally:
            for p in services:
                p.send_signal(signal.SIGTERM)
            outcomes = [p.communicate(timeout=60) for p in services]
        for p, (_, err) in zip(services, outcomes, strict=True):
            assert p.returncode == 0, err
    return time.perf_counter() - started


def _ns(table: pa.Table, column: str) -> list[int]:
    return [int(x) for x in table.column(column).cast(pa.int64()).to_pylist()]


def _same(a: list[Any], b: list[Any]) -> bool:
    """Equal element by element, floats by their bits (NaN equal to NaN)."""
    return len(a) == len(b) and all(
        np.float64(x).tobytes() == np.float64(y).tobytes() if isinstance(x, float) else x == y
        for x, y in zip(a, b, strict=True)
    )


def _payloads(conn: Any, table: str) -> list[Any]:
    rows = conn.execute(f"SELECT payload FROM {table} ORDER BY ts_ns").fetchall()
    return [wire.decode_any(bytes(p)) for (p,) in rows]


def test_recorded_live_trades_equal_the_backtest(
    tmp_path: Path, shared_data_dir: Path, postgres_server: str
) -> None:
    candles = load_ohlcv(shared_data_dir / "binanceus_btcusdt_1m_2023-03-01_2023-03-21.csv")
    folder, feed = _write_inputs(tmp_path, candles)
    dsn = fresh_database(postgres_server, "colmena_live_parity")
    live_seconds = _run_services(tmp_path, folder, feed, dsn)

    started = time.perf_counter()
    settings = tmp_path / "backtest.json"
    settings.write_bytes(msgspec.json.encode(BacktestConfig(risk=RISK, execution=EXECUTION)))
    run = tmp_path / "run"
    done = CliRunner().invoke(main, ["backtest", str(feed), "--checkpoint", str(folder),
                                     "--config", str(settings), "--out", str(run)])  # fmt: skip
    assert done.exit_code == 0, done.output
    backtest_seconds = time.perf_counter() - started
    decisions, orders, fills, equity = (
        pq.read_table(run / f"{name}.parquet")
        for name in ("decisions", "orders", "fills", "equity")
    )

    with psycopg.connect(dsn) as conn:
        signals = _payloads(conn, "live_signals")
        decided = _payloads(conn, "live_orders")
        reports = _payloads(conn, "live_fills")
        accounts = _payloads(conn, "live_accounts")
    assert len(signals) == len(decided) == len(accounts) == LIVE_BARS
    bars = [m.ts for m in accounts]
    # The wind-down's first bar: every decision before it is compared, every fill and account
    # up to its open (the module docstring says why the rest differs by design).
    end = bars[LIVE_BARS - 1 - WIND_DOWN_BARS]
    assert LIVE_BARS - 1 - WIND_DOWN_BARS > 300

    # Decisions: the backtest writes a row for every bar that decided, was forced or ordered.
    action = {m.ts: m for m in signals}
    rows = [m for m in decided if m.ts < end and (
        action[m.ts].action != "hold" or m.decided.decision.verdict != "hold"
        or m.decided.order is not None)]  # fmt: skip
    kept = [i for i, t in enumerate(_ns(decisions, "bar_open_time")) if t < end]
    table = decisions.take(kept).to_pydict()
    assert _ns(decisions.take(kept), "decision_time") == [m.ts + BAR_NS for m in rows]
    d = [m.decided.decision for m in rows]
    assert table["code"] == [x.verdict for x in d]
    assert table["verdict"] == [VERDICTS[x.verdict][0] for x in d]
    assert table["reason"] == [VERDICTS[x.verdict][1] for x in d]
    assert table["trading_state"] == [x.state for x in d]
    assert _same(table["requested"], [x.requested for x in d])
    assert _same(table["target"], [x.target for x in d])
    assert _same(table["kelly_fraction"], [math.nan if x.kelly is None else x.kelly for x in d])
    decide = [action[m.ts].action == "decide" for m in rows]
    assert _same([s for s, k in zip(table["signal"], decide, strict=True) if k],
                 [action[m.ts].signal if action[m.ts].signal is not None else math.nan
                  for m, k in zip(rows, decide, strict=True) if k])  # fmt: skip
    assert sum(decide) > 50
    assert {x.verdict for x in d} >= {"accepted", "hold"}

    # Orders: when, why, how much, and how much of each filled at the next open.
    placed = [m for m in decided if m.ts < end and m.decided.order is not None]
    kept = [i for i, t in enumerate(_ns(orders, "decision_time")) if t - BAR_NS < end]
    table = orders.take(kept).to_pydict()
    assert _ns(orders.take(kept), "decision_time") == [m.ts + BAR_NS for m in placed]
    o = [m.decided.order for m in placed]
    assert table["origin"] == [x.origin for x in o]
    assert table["side"] == ["buy" if x.quantity > 0 else "sell" for x in o]
    assert _same(table["quantity"], [abs(x.quantity) for x in o])
    assert _same(table["target"], [x.target for x in o])
    filled = {m.report.order_id: m.report.fill for m in reports}
    assert _same(table["filled_quantity"], [
        0.0 if filled.get(x.id) is None else abs(filled[x.id].quantity) for x in o])  # fmt: skip
    assert len(o) > 20

    # Fills: time, side, size, price and costs.
    made = [m.report.fill for m in reports if m.ts <= end and m.report.fill is not None]
    kept = [i for i, t in enumerate(_ns(fills, "fill_time")) if t <= end]
    table = fills.take(kept).to_pydict()
    assert _ns(fills.take(kept), "fill_time") == [f.ts for f in made]
    assert table["side"] == ["buy" if f.quantity > 0 else "sell" for f in made]
    for column in ("quantity", "price", "fee", "slippage_cost"):
        values = [abs(f.quantity) if column == "quantity" else getattr(f, column) for f in made]
        assert _same(table[column], values), column
    assert len(made) > 20

    # Accounts at every close up to the wind-down's first bar.
    marked = [m.snapshot for m in accounts if m.ts <= end]
    kept = [i for i, t in enumerate(_ns(equity, "mark_time")) if t - BAR_NS <= end]
    table = equity.take(kept).to_pydict()
    for column in ("cash", "position", "equity"):
        assert _same(table[column], [getattr(a, column) for a in marked]), column

    # The records reproduce themselves (replay-audit), over the whole session.
    started = time.perf_counter()
    period = ["--from", "2023-03-11T00:00Z", "--to", "2023-03-12T00:00Z"]
    audit = CliRunner().invoke(main, ["replay-audit", "--db", dsn, *period])
    audit_seconds = time.perf_counter() - started
    assert audit.exit_code == 0, audit.output
    assert "replay-audit: identical" in audit.stderr
    print(f"compared {len(rows)} decisions, {len(o)} orders, {len(made)} fills, "
          f"{len(marked)} accounts; live services {live_seconds:.1f} s, "
          f"backtest {backtest_seconds:.1f} s, replay-audit {audit_seconds:.1f} s")  # fmt: skip
