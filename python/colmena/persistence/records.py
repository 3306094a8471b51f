"""PostgreSQL records of backtest runs (psycopg 3), with the schema migrations the package ships.

Migrations are the ``NNNN_*.sql`` files in :mod:`colmena.persistence.migrations`, applied in order
inside one transaction under an advisory lock and recorded in ``colmena_schema_migrations``;
running them again is a no-op. A run is recorded once: its idempotency key is the SHA-256 of its
report's config, seed, data checksum and metrics, so recording the same run twice returns the same
id.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from colmena.backtest.engine import BacktestRun

__all__ = ["apply_migrations", "record_run"]

_LOCK_KEY = 0x636F6C6D656E61  # "colmena"


def _migrations() -> list[tuple[int, str, str]]:
    files = importlib.resources.files("colmena.persistence.migrations")
    out = []
    for entry in files.iterdir():
        name = entry.name
        if name.endswith(".sql") and name[:4].isdigit():
            out.append((int(name[:4]), name, entry.read_text(encoding="utf-8")))
    return sorted(out)


def apply_migrations(conn: Any) -> list[str]:
    """Bring the schema up to date; returns the names of the migrations applied now.

    Parameters
    ----------
    conn : psycopg.Connection
        An open connection (autocommit off); committed on success, rolled back on error.
    """
    applied: list[str] = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS colmena_schema_migrations ("
            " version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
            " applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        done = {row[0] for row in conn.execute("SELECT version FROM colmena_schema_migrations")}
        for version, name, sql in _migrations():
            if version in done:
                continue
            conn.execute(sql)
            conn.execute(
                "INSERT INTO colmena_schema_migrations (version, name) VALUES (%s, %s)",
                (version, name),
            )
            applied.append(name)
    return applied


def idempotency_key(report: dict[str, Any]) -> str:
    """SHA-256 over the parts of a report that identify a run."""
    ident = {k: report[k] for k in ("config", "seed", "metrics", "mode")}
    ident["data_sha256"] = report["data"]["sha256"]
    ident["first"] = report["data"]["first"]
    ident["last"] = report["data"]["last"]
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()


def record_run(dsn: str, run: BacktestRun) -> int:
    """Record a backtest (config, metrics, fills) in PostgreSQL; returns the run id.

    All or nothing: one transaction. Recording the same run again returns the existing id.

    Raises
    ------
    psycopg.Error
        On connection or SQL failure (nothing is written).
    """
    import psycopg
    from psycopg.types.json import Jsonb

    report = run.report
    key = idempotency_key(report)
    with psycopg.connect(dsn, connect_timeout=10) as conn:
        apply_migrations(conn)
        with conn.transaction():
            row = conn.execute(
                "INSERT INTO backtest_runs (idempotency_key, mode, out_of_sample, seed, data_file,"
                " data_sha256, first_bar, last_bar, config, metrics, buy_and_hold, report)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (idempotency_key) DO NOTHING RETURNING id",
                (
                    key,
                    report["mode"],
                    report["out_of_sample"],
                    report["seed"],
                    report["data"]["file"],
                    report["data"]["sha256"],
                    report["data"]["first"],
                    report["data"]["last"],
                    Jsonb(report["config"]),
                    Jsonb(report["metrics"]),
                    Jsonb(report["baselines"]["buy_and_hold"]),
                    Jsonb(report),
                ),
            ).fetchone()
            if row is None:
                existing = conn.execute(
                    "SELECT id FROM backtest_runs WHERE idempotency_key = %s", (key,)
                ).fetchone()
                assert existing is not None
                return int(existing[0])
            run_id = int(row[0])
            fills = run.fills.to_pydict()
            with conn.cursor().copy(
                "COPY backtest_fills (run_id, seq, ts, side, quantity, price, fee, slippage_cost)"
                " FROM STDIN"
            ) as copy:
                for i, ts in enumerate(fills["fill_time"]):
                    copy.write_row(
                        (
                            run_id,
                            i,
                            ts,
                            fills["side"][i],
                            fills["quantity"][i],
                            fills["price"][i],
                            fills["fee"][i],
                            fills["slippage_cost"][i],
                        )
                    )
    return run_id
