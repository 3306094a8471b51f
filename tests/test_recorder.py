"""The recorder service against a real PostgreSQL (pgserver) and a real nats-server: every message
of a session recorded once, with its columns equal to the message and its bytes decoding back to
it; duplicates delivered again insert nothing; a failed batch keeps nothing; a recorder that
dies between commit and acknowledgement records nothing twice on restart."""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from pathlib import Path

import pytest

from colmena.live import wire
from colmena.services.bus import Bus
from colmena.services.nats_server import EmbeddedNatsServer
from colmena.services.recorder import TABLES, Recorder, rows_of
from conftest import fresh_database
from test_wire import _session

psycopg = pytest.importorskip("psycopg")


@pytest.fixture
def dsn(postgres_server: str, request: pytest.FixtureRequest) -> str:
    return fresh_database(postgres_server, f"colmena_rec_{request.node.name[:40].lower()}")


@pytest.fixture(scope="module")
def session() -> list[wire.WireMessage]:
    return _session(60)


def _batch(messages: list[wire.WireMessage]) -> list[tuple[wire.WireMessage, str, int, bytes]]:
    return [(m, wire.idempotency_key(m), i + 1, wire.encode(m)) for i, m in enumerate(messages)]


def _expected_rows(messages: list[wire.WireMessage]) -> Counter[str]:
    counts: Counter[str] = Counter()
    for m, key, seq, payload in _batch(messages):
        for table, rows in rows_of(m, key, seq, payload).items():
            counts[table] += len(rows)
    return counts


def _table_counts(dsn: str) -> Counter[str]:
    with psycopg.connect(dsn) as conn:
        return Counter({t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES})


def test_every_message_is_recorded_once_and_replays_exactly(
    dsn: str, session: list[wire.WireMessage]
) -> None:
    expected = _expected_rows(session)
    assert expected["live_trades"] > 0

    async def run() -> None:
        recorder = await Recorder.connect(dsn)
        try:
            first = await recorder.record(_batch(session))
            assert first.messages == len(session)
            assert Counter(first.rows) == +expected
            again = await recorder.record(_batch(session))  # delivered twice
            assert sum(again.rows.values()) == 0
        finally:
            await recorder.close()

    asyncio.run(run())
    assert _table_counts(dsn) == expected | Counter({t: 0 for t in TABLES if t not in expected})
    with psycopg.connect(dsn) as conn:
        # Every payload decodes to the message recorded under its key.
        by_key = {wire.idempotency_key(m): m for m in session}
        for table in TABLES:
            if table == "live_trades":
                continue
            for key, payload in conn.execute(f"SELECT msg_key, payload FROM {table}"):
                assert wire.decode_any(bytes(payload)) == by_key[key]
        # Columns equal the messages' fields (orders: verdict, Kelly, order quantity).
        orders = [m for m in session if isinstance(m, wire.OrderMessage)]
        rows = conn.execute(
            "SELECT msg_key, verdict, kelly, order_quantity, bar_open_time, ts_ns "
            "FROM live_orders ORDER BY ts_ns"
        ).fetchall()
        assert len(rows) == len(orders)
        for (key, verdict, kelly, quantity, opened, ts), m in zip(rows, orders, strict=True):
            assert key == wire.idempotency_key(m)
            assert verdict == m.decided.decision.verdict
            d_kelly = m.decided.decision.kelly
            assert (kelly is None and d_kelly is None) or kelly == d_kelly
            order = m.decided.order
            assert quantity == (None if order is None else order.quantity)
            assert ts == m.ts
            assert math.isclose(opened.timestamp(), m.ts / 1e9, abs_tol=1e-6)
        # Risk states: one row per close, every column the message's field of that name.
        states = [m for m in session if isinstance(m, wire.RiskStateMessage)]
        assert len(states) == len(orders)
        columns = {"trading_state": "state", "paused_until_ns": "paused_until"}
        names = [c for c in TABLES["live_risk_state"] if c not in ("stream_seq", "payload")]
        rows = conn.execute(
            f"SELECT {', '.join(names)}, bar_open_time FROM live_risk_state ORDER BY ts_ns"
        ).fetchall()
        assert len(rows) == len(states)
        for row, m in zip(rows, states, strict=True):
            recorded = dict(zip(names, row[:-1], strict=True))
            assert recorded.pop("msg_key") == wire.idempotency_key(m)
            assert recorded.pop("ts_ns") == m.ts
            assert recorded == {c: getattr(m, columns.get(c, c)) for c in recorded}
            assert math.isclose(row[-1].timestamp(), m.ts / 1e9, abs_tol=1e-6)
        assert {r[names.index("trading_state")] for r in rows} <= {"ACTIVE", "REDUCING",
                                                                   "PAUSED", "HALTED"}  # fmt: skip


def test_a_failed_batch_keeps_nothing(dsn: str, session: list[wire.WireMessage]) -> None:
    candle = next(m for m in session if isinstance(m, wire.CandleMessage))
    # Same symbol and bar under another key: the UNIQUE (symbol, ts_ns) of live_candles refuses it
    # after the rest of the batch was inserted in the same transaction.
    clash = (candle, "another-key", 999, wire.encode(candle))

    async def run() -> None:
        recorder = await Recorder.connect(dsn)
        try:
            with pytest.raises(psycopg.errors.UniqueViolation):
                await recorder.record([*_batch(session), clash])
        finally:
            await recorder.close()

    asyncio.run(run())
    assert sum(_table_counts(dsn).values()) == 0


def test_recorder_service_over_the_bus_survives_a_crash_between_commit_and_ack(
    dsn: str, session: list[wire.WireMessage], tmp_path: Path
) -> None:
    expected = _expected_rows(session)

    async def run(url: str) -> None:
        bus = await Bus.connect(url)
        for m in session:
            await bus.publish(m)
        recorder = await Recorder.connect(dsn)
        # First life: commits one batch of orders and dies before acknowledging it.
        consumer = await bus.consumer("order", "recorder-order", ordered=False)
        deliveries = await consumer.fetch(1000, timeout=5.0)
        assert deliveries
        await recorder.record(
            (d.message, d.idempotency_key or "", d.stream_sequence, d.payload) for d in deliveries
        )
        await bus.close()
        await recorder.close()

        # Second life: the service loop; the unacknowledged orders come again, insert nothing.
        bus = await Bus.connect(url)
        recorder = await Recorder.connect(dsn)
        stop = asyncio.Event()
        task = asyncio.create_task(recorder.run(bus, stop, poll_seconds=0.1))
        for _ in range(3000):  # hang detection: until every row is there
            if _table_counts(dsn) >= expected:
                break
            await asyncio.sleep(0.01)
        stop.set()
        await task
        await recorder.close()
        await bus.close()

    with EmbeddedNatsServer(tmp_path / "nats") as server:
        asyncio.run(run(server.url))
    counts = _table_counts(dsn)
    assert +counts == +expected


def test_unreachable_database_is_a_connection_error() -> None:
    async def run() -> None:
        with pytest.raises(ConnectionError, match=r"cannot connect to PostgreSQL"):
            await Recorder.connect("postgresql://nobody@127.0.0.1:9/none?connect_timeout=2")

    asyncio.run(run())
