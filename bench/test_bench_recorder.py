"""Recorder throughput: the live services' messages into PostgreSQL, next to a plain psycopg
``executemany`` of the same rows.

Run: ``pytest bench/test_bench_recorder.py --benchmark-only`` (starts its own PostgreSQL from
the ``pgserver`` package, or uses ``$COLMENA_TEST_POSTGRES_DSN``). One round records the
messages of 500 bars of one symbol (candle, gate, execution report, account, signal, order with
its decision, decision audit with 100 agent signals, risk state, events: the real trading-loop
halves' output) into empty tables: :meth:`colmena.services.recorder.Recorder.record` (one
transaction, idempotent inserts, pipelined ``executemany``) against the peer, psycopg's
``executemany`` of the same rows with plain ``INSERT`` statements in one transaction.
``extra_info`` gives rows per second.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

psycopg = pytest.importorskip("psycopg")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from colmena.live import wire  # noqa: E402
from colmena.persistence.records import apply_migrations  # noqa: E402
from colmena.services.recorder import TABLES, Recorder, rows_of  # noqa: E402
from test_wire import _session  # noqa: E402

BARS = 500


@pytest.fixture(scope="module")
def dsn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A PostgreSQL with the package's migrations applied."""
    env = os.environ.get("COLMENA_TEST_POSTGRES_DSN")
    server = None
    if env:
        uri = env
    else:
        pgserver = pytest.importorskip("pgserver")
        server = pgserver.get_server(tmp_path_factory.mktemp("pg"), cleanup_mode="stop")
        uri = server.get_uri()
    try:
        with psycopg.connect(uri) as conn:
            apply_migrations(conn)
        yield uri
    finally:
        if server is not None:
            server.cleanup()


@pytest.fixture(scope="module")
def batch() -> list[tuple[wire.WireMessage, str, int, bytes]]:
    messages = _session(BARS)
    return [(m, wire.idempotency_key(m), i + 1, wire.encode(m)) for i, m in enumerate(messages)]


def _rows(batch: list[tuple[wire.WireMessage, str, int, bytes]]) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {t: [] for t in TABLES}
    for message, key, seq, payload in batch:
        for table, rows in rows_of(message, key, seq, payload).items():
            out[table].extend(rows)
    return out


def _truncate(dsn: str) -> None:
    with psycopg.connect(dsn) as conn:
        conn.execute(f"TRUNCATE {', '.join(TABLES)}")


@pytest.mark.benchmark(group="recorder: one symbol's messages of 500 bars into PostgreSQL")
def test_colmena_recorder(benchmark: Any, dsn: str, batch: list[Any]) -> None:
    loop = asyncio.new_event_loop()
    recorder = loop.run_until_complete(Recorder.connect(dsn))
    rows = sum(len(r) for r in _rows(batch).values())

    def record() -> None:
        recorded = loop.run_until_complete(recorder.record(batch))
        assert sum(recorded.rows.values()) == rows

    try:
        benchmark.pedantic(record, setup=lambda: _truncate(dsn), rounds=10, iterations=1)
    finally:
        loop.run_until_complete(recorder.close())
        loop.close()
    if benchmark.stats is not None:
        benchmark.extra_info["rows_per_s"] = round(rows / benchmark.stats.stats.median)


@pytest.mark.benchmark(group="recorder: one symbol's messages of 500 bars into PostgreSQL")
def test_peer_psycopg_executemany(benchmark: Any, dsn: str, batch: list[Any]) -> None:
    by_table = _rows(batch)
    rows = sum(len(r) for r in by_table.values())
    sql = {
        t: f"INSERT INTO {t} ({', '.join(c)}) VALUES ({', '.join(['%s'] * len(c))})"
        for t, c in TABLES.items()
    }
    with psycopg.connect(dsn) as conn:

        def insert() -> None:
            with conn.transaction(), conn.cursor() as cur:
                for table, table_rows in by_table.items():
                    if table_rows:
                        cur.executemany(sql[table], table_rows)

        benchmark.pedantic(insert, setup=lambda: _truncate(dsn), rounds=10, iterations=1)
    if benchmark.stats is not None:
        benchmark.extra_info["rows_per_s"] = round(rows / benchmark.stats.stats.median)
