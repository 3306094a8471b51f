"""The recorder service against a real PostgreSQL (pgserver) and a real nats-server: every message
of a session recorded once, with its columns equal to the message and its bytes decoding back to
it; duplicates delivered again insert nothing; a failed batch keeps nothing; a recorder that
dies between commit and acknowledgement records nothing twice on restart."""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from colmena.live import wire
from colmena.services.bus import Bus
from colmena.services.nats_server import EmbeddedNatsServer
from colmena.services.recorder import TABLES, Recorded, Recorder, rows_of
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


class _Scripted:
    """A consumer whose fetches follow a script: an exception to raise, or messages to give;
    then nothing (a poll that times out)."""

    def __init__(self, script: list[object]) -> None:
        self.script = list(script)
        self.fetches = 0

    async def fetch(self, batch: int, timeout: float) -> list[object]:
        self.fetches += 1
        if self.script:
            step = self.script.pop(0)
            if isinstance(step, BaseException):
                raise step
            return step  # type: ignore[return-value]
        await asyncio.sleep(min(timeout, 0.01))
        return []


class _ScriptedBus:
    def __init__(self, scripts: dict[str, list[object]]) -> None:
        self.consumers = {k: _Scripted(scripts.get(k, [])) for k in wire.MESSAGE_TYPES}

    async def consumer(self, kind: str, durable: str, **_: object) -> _Scripted:
        return self.consumers[kind]


class _FlakyRecorder(Recorder):
    """Records into a list; its first ``failures`` transactions fail as a restarting
    PostgreSQL does."""

    def __init__(self, failures: int) -> None:
        super().__init__(pool=None)
        self.failures = failures
        self.recorded: list[object] = []

    async def record_deliveries(self, deliveries: Sequence[Any]) -> Recorded:  # type: ignore[override]
        if self.failures:
            self.failures -= 1
            raise psycopg.OperationalError("server closed the connection unexpectedly")
        self.recorded.extend(deliveries)
        return Recorded(messages=len(deliveries), rows={})


def test_the_recorder_waits_out_nats_and_postgresql_outages() -> None:
    """A NATS restart (fetches fail) and a PostgreSQL restart (transactions fail): the recorder
    keeps going, records each batch once, and stops when asked."""
    import nats.js.errors

    async def run() -> tuple[int, _FlakyRecorder, _ScriptedBus]:
        bus = _ScriptedBus({
            "candle": [nats.js.errors.ServiceUnavailableError(), ConnectionError("reconnecting"),
                       ["c1", "c2"]],
            "order": [["o1"]],
        })  # fmt: skip
        recorder = _FlakyRecorder(failures=3)
        stop = asyncio.Event()

        async def stop_when_done() -> None:
            while len(recorder.recorded) < 3:
                await asyncio.sleep(0.01)
            stop.set()

        stopper = asyncio.create_task(stop_when_done())
        total = await asyncio.wait_for(
            recorder.run(bus, stop, max_backoff_seconds=0.05),
            timeout=30.0,  # type: ignore[arg-type]
        )  # hang detection
        await stopper
        return total, recorder, bus

    total, recorder, bus = asyncio.run(run())
    assert total == 3
    assert sorted(recorder.recorded) == ["c1", "c2", "o1"]  # type: ignore[type-var]
    assert recorder.failures == 0
    assert bus.consumers["candle"].fetches >= 3


def test_the_recorder_stops_every_kind_on_an_error_even_if_a_cancellation_is_lost() -> None:
    """A kind that fails for good stops the recorder (the supervisor restarts it), and a drain
    that swallows its cancellation (asyncio.wait_for before Python 3.12 can) still ends at its
    next fetch: found by the fault harness."""
    lost: list[str] = []

    class Swallowing(_Scripted):
        async def fetch(self, batch: int, timeout: float) -> list[object]:
            try:
                await asyncio.sleep(timeout)
            except asyncio.CancelledError:
                if lost:
                    raise
                lost.append("order")
            return []

    class Failing(_Scripted):
        async def fetch(self, batch: int, timeout: float) -> list[object]:
            await asyncio.sleep(0.05)  # the other drains are waiting in their fetch by then
            raise ValueError("a bug")

    async def run() -> None:
        bus = _ScriptedBus({})
        bus.consumers["candle"] = Failing([])
        bus.consumers["order"] = Swallowing([])
        await asyncio.wait_for(
            _FlakyRecorder(0).run(bus, asyncio.Event()),
            timeout=10.0,  # type: ignore[arg-type]
        )  # hang detection

    with pytest.raises(ValueError, match="a bug"):
        asyncio.run(run())
    assert lost == ["order"]
