"""PostgreSQL records of backtest runs (psycopg 3), with the schema migrations the package ships.

Migrations are the ``NNNN_*.sql`` files in :mod:`colmena.persistence.migrations`, applied in order
inside one transaction under an advisory lock and recorded in ``colmena_schema_migrations``;
running them again is a no-op. A run is recorded once, by the unique id its run folder was
written with (:func:`colmena.persistence.run_folder.read_run_id`, column ``run_uuid`` since
migration 0002): recording the same run again returns the same row id, and two different runs
are two rows even when every number in them is equal.

JSON has no Infinity or NaN, and PostgreSQL's JSONB refuses them: a non-finite number in a
report (a metric, a baseline, a setting) is stored as ``null``, with a
:class:`NonFiniteMetricWarning` naming each one.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import json
import math
import uuid
import warnings
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from colmena.backtest.engine import BacktestRun

__all__ = ["NonFiniteMetricWarning", "apply_migrations", "finite_json", "record_run"]


class NonFiniteMetricWarning(UserWarning):
    """A non-finite number (inf, -inf, NaN) of a run was recorded as SQL/JSON null."""


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
    """SHA-256 over the parts of a report that identified a run before migration 0002 (equal
    for two runs with equal results; kept to document the rows recorded with it)."""
    ident = {k: report[k] for k in ("config", "seed", "metrics", "mode")}
    ident["data_sha256"] = report["data"]["sha256"]
    ident["first"] = report["data"]["first"]
    ident["last"] = report["data"]["last"]
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()


def finite_json(value: Any, where: str = "") -> tuple[Any, list[str]]:
    """``value`` (JSON-like: dicts, lists, numbers, ...) with every non-finite float replaced by
    ``None``; also the paths of those replaced, e.g. ``["metrics.sortino"]``."""
    found: list[str] = []

    def clean(v: Any, path: str) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            found.append(f"{path} = {v}")
            return None
        if isinstance(v, dict):
            return {k: clean(x, f"{path}.{k}" if path else str(k)) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x, f"{path}[{i}]") for i, x in enumerate(v)]
        return v

    return clean(value, where), found


def record_run(dsn: str, run: BacktestRun, *, run_id: uuid.UUID | str) -> int:
    """Record a backtest (config, metrics, fills) in PostgreSQL; returns the row id.

    All or nothing: one transaction. Recording the same ``run_id`` again returns the existing
    row id and writes nothing.

    Parameters
    ----------
    dsn : str
        A libpq connection string or URI.
    run : BacktestRun
        The run (its report and fills are recorded).
    run_id : uuid.UUID or str
        The run's unique id: :func:`colmena.persistence.run_folder.read_run_id` of the run
        folder it was written to.

    Warns
    -----
    NonFiniteMetricWarning
        For non-finite numbers in the report, stored as null (one warning naming them all).

    Raises
    ------
    ValueError
        If ``run_id`` is not a UUID.
    psycopg.Error
        On connection or SQL failure (nothing is written).
    """
    import psycopg
    from psycopg.types.json import Jsonb

    key = uuid.UUID(str(run_id))
    report, non_finite = finite_json(run.report)
    if non_finite:
        warnings.warn(
            f"run {key}: JSON has no Infinity or NaN; recorded as null: {', '.join(non_finite)}",
            NonFiniteMetricWarning,
            stacklevel=2,
        )
    with psycopg.connect(dsn, connect_timeout=10) as conn:
        apply_migrations(conn)
        with conn.transaction():
            row = conn.execute(
                "INSERT INTO backtest_runs (run_uuid, mode, out_of_sample, seed, data_file,"
                " data_sha256, first_bar, last_bar, config, metrics, buy_and_hold, report)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (run_uuid) DO NOTHING RETURNING id",
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
                    "SELECT id FROM backtest_runs WHERE run_uuid = %s", (key,)
                ).fetchone()
                assert existing is not None
                return int(existing[0])
            row_id = int(row[0])
            fills = run.fills.to_pydict()
            with conn.cursor().copy(
                "COPY backtest_fills (run_id, seq, ts, side, quantity, price, fee, slippage_cost)"
                " FROM STDIN"
            ) as copy:
                for i, ts in enumerate(fills["fill_time"]):
                    copy.write_row(
                        (
                            row_id,
                            i,
                            ts,
                            fills["side"][i],
                            fills["quantity"][i],
                            fills["price"][i],
                            fills["fee"][i],
                            fills["slippage_cost"][i],
                        )
                    )
    return row_id
