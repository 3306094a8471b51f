"""Replay audit: a recorded period's decisions reproduced from the records alone and compared with
what was recorded, bit for bit (``colmena replay-audit``).

What the recorder keeps (:mod:`colmena.services.recorder`) is enough to rebuild every decision:
the candles (``live_candles``, each with the exact message bytes), the checkpoint every signal
names by its SHA-256 and the settings it traded under (``live_strategies``). :func:`replay_audit`
runs the services' own handlers (:func:`colmena.live.handlers.route` over a
:class:`~colmena.live.handlers.StrategyHandler`, :class:`~colmena.live.handlers.RiskHandler` and
:class:`~colmena.live.handlers.ExecutionHandler`: the code the services run, not a second
implementation) over the symbol's recorded candles (their message bytes; in the period their
columns are checked against the bytes), and compares every recorded signal, gate,
decision (order, with its verdict and reason code), decision audit, execution report (and the
round trips it closed), account, event and risk state of the period with the reproduction:
every column and the message bytes, floats by their bits.

The state at ``T0`` depends on history (the market state's look-back, the Kelly window, the
drawdown ladder, the account), so the replay starts at the symbol's first recorded candle and
runs to ``T1``; only the messages of bars in ``[T0, T1]`` are compared. Assumptions: the records
hold every candle since the services started (a service restarted after the stream's retention
dropped older candles rebuilds from less, and its decisions can differ from the replay: the
audit reports that as differences), and one checkpoint traded the symbol over the whole replay
(a change of checkpoint is refused, naming them). Each symbol runs on its recorded sleeve of the
account; a halt by the account's kill switch over several symbols
(:class:`colmena.live.account.AccountGuard`) is taken from the recorded events as an input and
applied where the services applied it (before the bar its event belongs to), so the audit checks
everything that followed from it; the guard's own rule is tested in ``tests/test_account.py``.
The recorded control actions (``live_control``: ``colmena ctl``, the reconciliation's pauses) are
inputs too, applied by their own rule (the open of the first bar at or after their ``ts``).
"""

from __future__ import annotations

import hashlib
import struct
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Final

import msgspec

from colmena.execution.simulation import ExecutionSettings
from colmena.live import wire
from colmena.live.handlers import ExecutionHandler, RiskHandler, StrategyHandler, route
from colmena.persistence import checkpoint as checkpoints
from colmena.risk.config import RiskConfig
from colmena.services.recorder import TABLES, rows_of
from colmena.training.state import TrainingState

__all__ = [
    "KINDS",
    "AuditError",
    "AuditResult",
    "DatabaseUnreachableError",
    "Difference",
    "SymbolAudit",
    "format_ns",
    "parse_time",
    "replay_audit",
]

#: The tables compared and the kind each is reported as (candles are the input, not compared).
KINDS: Final[dict[str, str]] = {
    "live_signals": "signal",
    "live_gates": "gate",
    "live_orders": "order",
    "live_audit": "audit",
    "live_fills": "execution",
    "live_trades": "trade",
    "live_accounts": "account",
    "live_events": "event",
    "live_risk_state": "risk_state",
}
#: Columns not compared: the stream's sequence number belongs to the bus, not to the decision.
_NOT_COMPARED: Final = frozenset({"stream_seq"})
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=timezone.utc)


class AuditError(ValueError):
    """The audit cannot run on these records (no such period, no candles, several checkpoints,
    a checkpoint missing from the records); the message says which, in one line."""


class DatabaseUnreachableError(ConnectionError):
    """PostgreSQL cannot be reached (the message names the host, never the password)."""


@dataclass(frozen=True)
class Difference:
    """One value that differs between the records and the reproduction.

    Attributes
    ----------
    kind : str
        The message kind (:data:`KINDS`): ``signal``, ``order``, ``account``, ...
    ts : int
        Open time of the bar, ns since the epoch (UTC).
    key : str
        The message's idempotency key (``msg_key``; with ``#seq`` for a round trip).
    field : str
        The column (``verdict``, ``equity``), ``payload.<path>`` for a field of the message's
        bytes (``payload.decided.decision.verdict``), or ``row`` when the whole row is in one
        and not the other.
    recorded, reproduced : object
        The two values (``row``: ``"present"`` or ``"absent"``).
    """

    kind: str
    ts: int
    key: str
    field: str
    recorded: Any
    reproduced: Any


@dataclass(frozen=True)
class SymbolAudit:
    """The audit of one symbol.

    Attributes
    ----------
    symbol : str
    model_sha256 : str
        The checkpoint the recorded signals name, replayed from ``live_strategies``.
    replay_from : int
        Open time (ns) of the first recorded candle: where the replay started.
    candles : int
        Candles replayed (from ``replay_from`` to ``T1``).
    compared : dict of str to int
        Recorded rows compared per kind.
    differences : list of Difference
    """

    symbol: str
    model_sha256: str
    replay_from: int
    candles: int
    compared: dict[str, int]
    differences: list[Difference] = field(default_factory=list)


@dataclass(frozen=True)
class AuditResult:
    """What :func:`replay_audit` found, per symbol (``t0``, ``t1``: the period, ns)."""

    t0: int
    t1: int
    symbols: list[SymbolAudit]

    @property
    def differences(self) -> list[Difference]:
        """Every symbol's differences, symbol by symbol."""
        return [d for s in self.symbols for d in s.differences]

    @property
    def identical(self) -> bool:
        """No difference in any symbol (the exit status 0 of ``colmena replay-audit``)."""
        return not self.differences


def parse_time(text: str, what: str = "time") -> int:
    """ISO-8601 time (``2023-03-01``, ``2023-03-01T12:00``, ``…Z``, ``…+02:00``; no offset:
    UTC) as ns since the epoch.

    Raises
    ------
    AuditError
        Not an ISO-8601 time (the message names ``what``).
    """
    clean = text.strip()
    if clean[-1:] in ("Z", "z"):  # Python 3.10's fromisoformat takes no Z
        clean = clean[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(clean)
    except ValueError:
        raise AuditError(f"{what}: not an ISO-8601 time: {text!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return ((moment - _EPOCH) // timedelta(microseconds=1)) * 1_000


def format_ns(ts: int) -> str:
    """``ts`` (ns since the epoch) as ISO-8601 UTC, to the second (``2023-03-01T12:00:00Z``)."""
    moment = _EPOCH + timedelta(microseconds=ts // 1_000)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _same(a: Any, b: Any) -> bool:
    """Equal, floats by their bits (so -0.0 is not 0.0, and a NaN equals the same NaN)."""
    if isinstance(a, float) and isinstance(b, float):
        return struct.pack("<d", a) == struct.pack("<d", b)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, memoryview) or isinstance(b, memoryview):
        return bytes(a) == bytes(b)
    return type(a) is type(b) and bool(a == b)


def _leaves(value: Any, path: str) -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _leaves(v, f"{path}.{k}")
    elif isinstance(value, list) and value and isinstance(value[0], (dict, list)):
        for i, v in enumerate(value):
            yield from _leaves(v, f"{path}[{i}]")
    else:
        yield path, value


def _payload_differences(
    recorded: bytes, reproduced: wire.WireMessage
) -> list[tuple[str, Any, Any]]:
    """The fields of the recorded message bytes that differ from ``reproduced``."""
    expected = wire.encode(reproduced)
    if recorded == expected:
        return []
    try:
        message = wire.decode_any(recorded)
    except wire.WireError as exc:
        return [("payload", f"undecodable ({exc})", "the message")]
    left = dict(_leaves(msgspec.to_builtins(message), "payload"))
    right = dict(_leaves(msgspec.to_builtins(reproduced), "payload"))
    out = [
        (name, left.get(name, "absent"), right.get(name, "absent"))
        for name in sorted(left.keys() | right.keys(), key=lambda n: (n not in right, n))
        if not (name in left and name in right and _same(left[name], right[name]))
    ]
    return out or [("payload", "other bytes", "these bytes")]


def _connect(dsn: str) -> Any:
    import psycopg

    try:
        return psycopg.connect(dsn, connect_timeout=10)
    except psycopg.OperationalError as exc:
        reason = " ".join(str(exc).split())
        raise DatabaseUnreachableError(f"cannot connect to PostgreSQL: {reason}") from None


def _select(table: str, columns: tuple[str, ...]) -> str:
    listed = ", ".join(f"{table}.{c}" for c in columns)
    if table == "live_trades":
        return (
            f"SELECT {listed}, f.ts_ns FROM live_trades JOIN live_fills f USING (msg_key) "
            "WHERE f.symbol = %s AND f.ts_ns BETWEEN %s AND %s"
        )
    return f"SELECT {listed}, ts_ns FROM {table} WHERE symbol = %s AND ts_ns BETWEEN %s AND %s"


def _row_key(table: str, row: tuple[Any, ...]) -> str:
    return f"{row[0]}#{row[1]}" if table == "live_trades" else str(row[0])


def _load_strategy(
    conn: Any, symbol: str, t1: int
) -> tuple[str, TrainingState, RiskConfig, ExecutionSettings, int]:
    shas = [
        row[0]
        for row in conn.execute(
            "SELECT DISTINCT model_sha256 FROM live_signals WHERE symbol = %s AND ts_ns <= %s "
            "ORDER BY 1",
            (symbol, t1),
        )
    ]
    if not shas:
        raise AuditError(
            f"{symbol}: no recorded signal up to {format_ns(t1)}: the checkpoint it traded is "
            "not in the records"
        )
    if len(shas) > 1:
        raise AuditError(
            f"{symbol}: several checkpoints traded between the first recorded candle and "
            f"{format_ns(t1)} ({', '.join(shas)}): audit a period traded by one of them"
        )
    (sha,) = shas
    present = conn.execute("SELECT to_regclass('live_strategies')").fetchone()[0]
    row = None
    if present is not None:
        row = conn.execute(
            "SELECT checkpoint, settings FROM live_strategies WHERE model_sha256 = %s", (sha,)
        ).fetchone()
    if row is None:
        raise AuditError(
            f"{symbol}: checkpoint {sha} of the recorded signals is missing from the records "
            "(live_strategies)"
        )
    data, settings = bytes(row[0]), row[1]
    if hashlib.sha256(data).hexdigest() != sha:
        raise AuditError(f"checkpoint {sha}: the recorded bytes have another SHA-256")
    with tempfile.TemporaryDirectory(prefix="colmena-audit-") as folder:
        path = Path(folder) / f"{sha}.safetensors"
        path.write_bytes(data)
        try:
            state = checkpoints.load(path)
        except checkpoints.CheckpointError as exc:
            raise AuditError(f"checkpoint {sha} in the records: {exc}") from None
    try:
        risk = msgspec.convert(settings["risk"], RiskConfig)
        execution = msgspec.convert(settings["execution"], ExecutionSettings)
        bar_seconds = int(settings["bar_seconds"])
        sleeve = settings.get("sleeves", {}).get(symbol)
        if sleeve is not None:  # the symbol's share of the account
            execution = msgspec.structs.replace(execution, initial_cash=float(sleeve))
    except (KeyError, TypeError, ValueError, msgspec.ValidationError) as exc:
        raise AuditError(f"checkpoint {sha}: the recorded settings are not valid: {exc}") from None
    return sha, state, risk, execution, bar_seconds


def _audit_symbol(conn: Any, symbol: str, t0: int, t1: int) -> SymbolAudit:
    sha, state, risk, execution, bar_seconds = _load_strategy(conn, symbol, t1)
    # The replay takes each candle's message bytes; in the period, its columns must say the same.
    columns = TABLES["live_candles"]
    candles: list[wire.WireMessage] = []
    differences: list[Difference] = []
    compared: dict[str, int] = {"candle": 0}
    for row in conn.execute(
        f"SELECT {', '.join(columns)} FROM live_candles WHERE symbol = %s AND ts_ns <= %s "
        "ORDER BY ts_ns",
        (symbol, t1),
    ):
        candle = wire.decode("candle", bytes(row[-1]))
        candles.append(candle)
        if candle.ts < t0:
            continue
        compared["candle"] += 1
        (ours,) = rows_of(candle, row[0], 0, b"")["live_candles"]
        for name, a, b in zip(columns, row, ours, strict=True):
            if name not in _NOT_COMPARED and name != "payload" and not _same(a, b):
                differences.append(Difference("candle", candle.ts, row[0], name, a, b))
    risk_handler = RiskHandler(symbol, risk, execution, bar_seconds=bar_seconds)
    handlers = (
        StrategyHandler(state.to_model(), symbol, sha, bar_seconds=bar_seconds),
        risk_handler,
        ExecutionHandler(symbol, execution, bar_seconds=bar_seconds),
    )
    # The account's kill switch over several symbols (AccountGuard) is an input here: its
    # recorded halts are applied where the services applied them, between the close of the bar
    # before and the open of the bar the event belongs to (the services move in lock-step).
    halts: dict[int, tuple[int, float]] = {}
    for (payload,) in conn.execute(
        "SELECT payload FROM live_events "
        "WHERE symbol = %s AND code_name = 'account_kill_switch' AND ts_ns <= %s",
        (symbol, t1),
    ):
        event = wire.decode("event", bytes(payload))
        assert isinstance(event, wire.EventMessage)
        halts[event.ts] = (event.event.ts, event.event.value)
    # The recorded control actions (colmena ctl, the reconciliation's pauses) apply by their
    # own rule: at the open of the first bar at or after their ts (RiskHandler.take_control).
    for (payload,) in conn.execute(
        "SELECT payload FROM live_control WHERE symbol = %s AND ts_ns <= %s "
        "ORDER BY requested_ns, request_id",
        (symbol, t1),
    ):
        control = wire.decode("control", bytes(payload))
        assert isinstance(control, wire.ControlMessage)
        risk_handler.take_control(control)
    produced: list[wire.WireMessage] = []
    for candle in candles:
        if candle.ts in halts:
            when, drawdown = halts[candle.ts]
            risk_handler.halt(when, account_drawdown=drawdown)
        produced.extend(route(handlers, [candle]))

    # What the reproduction would have recorded: by table and key, the row, the message (None
    # for a round trip: its bytes are its execution report's) and the bar.
    expected: dict[str, dict[str, tuple[tuple[Any, ...], wire.WireMessage | None, int]]] = {
        t: {} for t in KINDS
    }
    for m in produced:
        if not t0 <= m.ts <= t1:
            continue
        key = wire.idempotency_key(m)
        for table, rows in rows_of(m, key, 0, wire.encode(m)).items():
            for row in rows:
                message = None if table == "live_trades" else m
                expected[table][_row_key(table, row)] = (row, message, m.ts)

    for table, kind in KINDS.items():
        columns = TABLES[table]
        mine = expected[table]
        recorded = {
            _row_key(table, row): (tuple(row[:-1]), int(row[-1]))
            for row in conn.execute(_select(table, columns), (symbol, t0, t1))
        }
        compared[kind] = len(recorded)
        bar = {k: v[1] for k, v in recorded.items()} | {k: v[2] for k, v in mine.items()}
        for key in sorted(bar, key=lambda k: (bar[k], k)):
            if key not in mine:
                differences.append(Difference(kind, bar[key], key, "row", "present", "absent"))
                continue
            if key not in recorded:
                differences.append(Difference(kind, bar[key], key, "row", "absent", "present"))
                continue
            theirs = recorded[key][0]
            ours, message, ts = mine[key]
            for name, a, b in zip(columns, theirs, ours, strict=True):
                if name in _NOT_COMPARED:
                    continue
                if name == "payload":
                    assert message is not None
                    for path, x, y in _payload_differences(bytes(a), message):
                        differences.append(Difference(kind, ts, key, path, x, y))
                elif not _same(_plain(a), _plain(b)):
                    differences.append(Difference(kind, ts, key, name, a, b))
    return SymbolAudit(symbol, sha, candles[0].ts, len(candles), compared, differences)


def _plain(value: Any) -> Any:
    """A database value in the form :func:`rows_of` builds (tuples as lists)."""
    return list(value) if isinstance(value, tuple) else value


def replay_audit(dsn: str, t0: int, t1: int, *, symbol: str | None = None) -> AuditResult:
    """Reproduce the decisions of ``[t0, t1]`` (bar open times, ns, inclusive) from the records
    in ``dsn`` and compare them with the records (module docstring).

    Parameters
    ----------
    dsn : str
        libpq connection string of the recorder's database (only read).
    t0, t1 : int
        The period: bar open times in ns since the epoch (UTC), inclusive.
    symbol : str, optional
        Audit this symbol only; None: every symbol with a recorded candle in the period.

    Returns
    -------
    AuditResult
        Every difference (an empty list: identical) and how many rows were compared.

    Raises
    ------
    AuditError
        ``t0`` after ``t1``, no records of the live services, no recorded candle of the symbol
        (or of any symbol) in the period, several checkpoints in the replayed period, or a
        checkpoint missing from ``live_strategies``.
    DatabaseUnreachableError
        PostgreSQL cannot be reached.
    """
    if t0 > t1:
        raise AuditError(f"the period is empty: {format_ns(t0)} is after {format_ns(t1)}")
    with _connect(dsn) as conn:
        if conn.execute("SELECT to_regclass('live_candles')").fetchone()[0] is None:
            raise AuditError("no records of the live services in this database (no live_candles)")
        where = f"between {format_ns(t0)} and {format_ns(t1)}"
        if symbol is not None:
            symbols = [symbol]
            if conn.execute("SELECT 1 FROM live_candles WHERE symbol = %s LIMIT 1",
                            (symbol,)).fetchone() is None:  # fmt: skip
                raise AuditError(f"{symbol}: no recorded candles")
            if (
                conn.execute(
                    "SELECT 1 FROM live_candles WHERE symbol = %s AND ts_ns BETWEEN %s AND %s "
                    "LIMIT 1",
                    (symbol, t0, t1),
                ).fetchone()
                is None
            ):
                raise AuditError(f"{symbol}: no recorded candle {where}: no such period")
        else:
            symbols = [
                row[0]
                for row in conn.execute(
                    "SELECT DISTINCT symbol FROM live_candles WHERE ts_ns BETWEEN %s AND %s "
                    "ORDER BY 1",
                    (t0, t1),
                )
            ]
            if not symbols:
                raise AuditError(f"no recorded candle {where}: no such period")
        return AuditResult(t0, t1, [_audit_symbol(conn, s, t0, t1) for s in symbols])
