"""The recorder service: every message of the wire contract into PostgreSQL, once.

Tables (migration ``0003_live_records.sql``): ``live_candles``, ``live_signals``, ``live_gates``,
``live_orders`` (each decision with its verdict, the reason, and its order), ``live_fills`` with
``live_trades`` (the round trips a fill closed), ``live_accounts``, ``live_audit`` and
``live_events``; ``live_risk_state`` (the account's risk state after every close, migration
``0005_live_risk_state.sql``); ``live_control`` (the audit of every control action: who, when,
why, from which bar) and ``live_reconciliation`` (migration ``0006_live_control.sql``); and, at
its start, the checkpoint of every configured symbol with the settings it trades under
(``live_strategies``, migration ``0004_live_strategies.sql``: :meth:`Recorder.record_strategies`),
so that a recorded period can be replayed and audited from
the records alone (:mod:`colmena.services.audit`). Every message row is keyed by the message's
idempotency key (``msg_key``, the ``Nats-Msg-Id`` it was published with) and keeps the message's
bytes (``payload``), so an incident can be replayed from exactly what was sent.

Exactly-once effect: the recorder consumes every kind with unordered durable consumers
(:mod:`colmena.services.bus`), inserts a batch in one transaction with ``ON CONFLICT (msg_key) DO
NOTHING``, commits, and only then acknowledges the batch. A crash before the commit leaves
nothing and the messages come again; a crash between commit and ack brings them again and the
inserts do nothing. Throughput comes from batching: up to ``batch`` messages per transaction,
sent with psycopg's pipelined ``executemany`` (``bench/`` compares it with a plain one).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import msgspec

from colmena.live import wire
from colmena.persistence import checkpoint as checkpoints
from colmena.persistence.records import apply_migrations, finite_json
from colmena.services.bus import Bus, Consumer, Delivery
from colmena.services.config import LiveConfig

__all__ = [
    "TABLES",
    "Recorded",
    "Recorder",
    "StrategyRecord",
    "StrategyRecordError",
    "live_settings",
    "rows_of",
    "strategy_records",
]

log = logging.getLogger(__name__)

# Column lists of each table, in the order rows_of builds them.
TABLES: Final[dict[str, tuple[str, ...]]] = {
    "live_candles": ("msg_key", "symbol", "ts_ns", "bar_seconds", "open", "high", "low", "close",
                     "volume", "stream_seq", "payload"),
    "live_signals": ("msg_key", "symbol", "ts_ns", "action", "signal", "valid", "regime",
                     "model_sha256", "stream_seq", "payload"),
    "live_gates": ("msg_key", "symbol", "ts_ns", "trading_state", "stream_seq", "payload"),
    "live_orders": ("msg_key", "symbol", "ts_ns", "verdict", "trading_state", "requested",
                    "target", "kelly", "place_order", "order_id", "order_quantity",
                    "order_origin", "reduce_only", "stream_seq", "payload"),
    "live_fills": ("msg_key", "symbol", "ts_ns", "order_id", "attempted", "quantity", "price",
                   "fee", "slippage_cost", "error", "cash", "position", "stream_seq", "payload"),
    "live_trades": ("msg_key", "seq", "symbol", "open_ts_ns", "close_ts_ns", "side", "pnl",
                    "quantity", "entry_price", "exit_price", "fees", "borrow", "exit_origin"),
    "live_accounts": ("msg_key", "symbol", "ts_ns", "mark", "cash", "position", "equity",
                      "stream_seq", "payload"),
    "live_audit": ("msg_key", "symbol", "ts_ns", "model_sha256", "action", "signal", "regime",
                   "agent_signals", "verdict", "stream_seq", "payload"),
    "live_events": ("msg_key", "symbol", "ts_ns", "seq", "event_type", "code", "code_name",
                    "value", "stream_seq", "payload"),
    "live_risk_state": ("msg_key", "symbol", "ts_ns", "trading_state", "halted", "equity",
                        "peak_equity", "drawdown", "high_equity", "drawdown_from_high",
                        "ladder_level", "paused_until_ns", "daily_pnl", "day_start_equity",
                        "bar_volatility", "volatility_returns", "kelly_fraction",
                        "kelly_round_trips", "stream_seq", "payload"),
    "live_control": ("msg_key", "symbol", "ts_ns", "action", "request_id", "operator", "reason",
                     "requested_ns", "account", "stream_seq", "payload"),
    "live_reconciliation": ("msg_key", "symbol", "ts_ns", "checked_ns", "venue_position",
                            "recorded_position", "venue_open_orders", "recorded_open_orders",
                            "difference", "detail", "stream_seq", "payload"),
}  # fmt: skip

# Children are inserted after their parents (live_trades references live_fills).
_ORDER: Final = tuple(TABLES)

_SQL: Final = {
    table: (
        f"INSERT INTO {table} ({', '.join(columns)}) "
        f"VALUES ({', '.join(['%s'] * len(columns))}) "
        + ("ON CONFLICT (msg_key, seq) DO NOTHING" if table == "live_trades"
           else "ON CONFLICT (msg_key) DO NOTHING")
    )
    for table, columns in TABLES.items()
}  # fmt: skip


def rows_of(
    message: wire.WireMessage, key: str, stream_seq: int, payload: bytes
) -> dict[str, list[tuple[Any, ...]]]:
    """The rows one message becomes, by table (columns as :data:`TABLES`)."""
    m = message
    base = (key, m.symbol, m.ts)
    out: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
    if isinstance(m, wire.CandleMessage):
        b = m.bar
        out["live_candles"].append(
            (*base, m.bar_seconds, b.open, b.high, b.low, b.close, b.volume, stream_seq, payload)
        )
    elif isinstance(m, wire.SignalMessage):
        out["live_signals"].append(
            (*base, m.action, m.signal, m.valid, m.regime, m.model_sha256, stream_seq,
             payload)
        )  # fmt: skip
    elif isinstance(m, wire.GateMessage):
        out["live_gates"].append((*base, m.gate.state, stream_seq, payload))
    elif isinstance(m, wire.OrderMessage):
        d, o = m.decided.decision, m.decided.order
        out["live_orders"].append(
            (*base, d.verdict, d.state, d.requested, d.target, d.kelly, d.place_order,
             None if o is None else o.id, None if o is None else o.quantity,
             None if o is None else o.origin, None if o is None else o.reduce_only,
             stream_seq, payload)
        )  # fmt: skip
    elif isinstance(m, wire.ExecutionMessage):
        r, f = m.report, m.report.fill
        out["live_fills"].append(
            (*base, r.order_id, r.attempted, None if f is None else f.quantity,
             None if f is None else f.price, None if f is None else f.fee,
             None if f is None else f.slippage_cost, r.error, r.cash, r.position, stream_seq,
             payload)
        )  # fmt: skip
        for seq, t in enumerate(r.closed_trades):
            out["live_trades"].append(
                (key, seq, m.symbol, t.open_ts, t.close_ts, t.side, t.pnl, t.quantity,
                 t.entry_price, t.exit_price, t.fees, t.borrow, t.exit_origin)
            )  # fmt: skip
    elif isinstance(m, wire.AccountMessage):
        a = m.snapshot
        out["live_accounts"].append(
            (*base, a.mark, a.cash, a.position, a.equity, stream_seq, payload)
        )
    elif isinstance(m, wire.DecisionAudit):
        out["live_audit"].append(
            (*base, m.model_sha256, m.action, m.signal, m.regime, list(m.agent_signals),
             m.decision.verdict, stream_seq, payload)
        )  # fmt: skip
    elif isinstance(m, wire.EventMessage):
        e = m.event
        out["live_events"].append(
            (*base, m.seq, e.type, e.code, e.code_name, e.value, stream_seq, payload)
        )
    elif isinstance(m, wire.RiskStateMessage):
        out["live_risk_state"].append(
            (*base, m.state, m.halted, m.equity, m.peak_equity, m.drawdown, m.high_equity,
             m.drawdown_from_high, m.ladder_level, m.paused_until, m.daily_pnl,
             m.day_start_equity, m.bar_volatility, m.volatility_returns, m.kelly_fraction,
             m.kelly_round_trips, stream_seq, payload)
        )  # fmt: skip
    elif isinstance(m, wire.ControlMessage):
        out["live_control"].append(
            (*base, m.action, m.request_id, m.operator, m.reason, m.requested_ns, m.account,
             stream_seq, payload)
        )  # fmt: skip
    elif isinstance(m, wire.ReconciliationMessage):
        out["live_reconciliation"].append(
            (*base, m.checked_ns, m.venue_position, m.recorded_position, m.venue_open_orders,
             m.recorded_open_orders, m.difference, m.detail, stream_seq, payload)
        )  # fmt: skip
    else:  # pragma: no cover - every kind of the contract is handled above
        raise TypeError(f"no table for {type(m).__name__}")
    return out


class StrategyRecordError(ValueError):
    """A configured checkpoint that cannot be recorded (missing, unreadable or invalid); the
    message names the symbol and the checkpoint."""


@dataclass(frozen=True)
class StrategyRecord:
    """One row of ``live_strategies``: a checkpoint the live services trade.

    Attributes
    ----------
    model_sha256 : str
        SHA-256 (hex) of the checkpoint file's bytes: the digest the strategy service stamps on
        every signal (:class:`colmena.live.handlers.StrategyHandler`).
    checkpoint : bytes
        The checkpoint file.
    symbols : tuple of str
        The configured symbols that trade it, sorted.
    settings : dict
        :func:`live_settings` of the configuration.
    validation : dict
        The checkpoint's validation (``ValidationResult.to_dict()``: fit bars, selection, gate;
        non-finite numbers as None), ``{}`` when it has none.
    """

    model_sha256: str
    checkpoint: bytes
    symbols: tuple[str, ...]
    settings: dict[str, Any]
    validation: dict[str, Any]


def live_settings(config: LiveConfig) -> dict[str, Any]:
    """The settings the trading services run under, as JSON values: ``risk``
    (:class:`~colmena.risk.RiskConfig`), ``execution``
    (:class:`~colmena.execution.ExecutionSettings`), ``bar_seconds`` and ``sleeves`` (each
    symbol's starting capital, :meth:`~colmena.services.config.LiveConfig.sleeve`)."""
    settings: dict[str, Any] = msgspec.json.decode(
        msgspec.json.encode(
            {
                "risk": config.risk,
                "execution": config.execution,
                "bar_seconds": config.bar_seconds,
                # Each symbol's sleeve of the account's starting capital (quote currency).
                "sleeves": {s.symbol: config.sleeve(s.symbol).initial_cash for s in config.symbols},
            }
        )
    )
    return settings


def strategy_records(config: LiveConfig) -> list[StrategyRecord]:
    """The ``live_strategies`` rows of ``config``: each configured symbol's checkpoint (a file,
    or a folder's newest valid one, as the strategy service loads it), one row per distinct
    file.

    Raises
    ------
    StrategyRecordError
        A checkpoint that cannot be loaded (the message names the symbol and the path).
    """
    found: dict[str, tuple[bytes, list[str], dict[str, Any]]] = {}
    settings = live_settings(config)
    for entry in config.symbols:
        report = checkpoints.LoadReport()
        try:
            state = checkpoints.load_path(entry.checkpoint, report=report)
            assert report.path is not None
            data = Path(report.path).read_bytes()
        except (checkpoints.CheckpointError, OSError) as exc:
            raise StrategyRecordError(
                f"{entry.symbol}: checkpoint {entry.checkpoint}: {exc}"
            ) from None
        digest = hashlib.sha256(data).hexdigest()
        validation = {} if state.validation is None else state.validation.to_dict()
        found.setdefault(digest, (data, [], finite_json(validation)[0]))[1].append(entry.symbol)
    return [
        StrategyRecord(digest, data, tuple(sorted(symbols)), settings, validation)
        for digest, (data, symbols, validation) in found.items()
    ]


_STRATEGY_SQL: Final = (
    "INSERT INTO live_strategies (model_sha256, checkpoint, symbols, settings, validation) "
    "VALUES (%s, %s, %s, %s, %s) "
    "ON CONFLICT (model_sha256) DO UPDATE SET symbols = ARRAY("
    "SELECT DISTINCT s FROM unnest(live_strategies.symbols || EXCLUDED.symbols) AS s ORDER BY s) "
    "WHERE NOT live_strategies.symbols @> EXCLUDED.symbols"
)


@dataclass(frozen=True)
class Recorded:
    """What one :meth:`Recorder.record` call did.

    Attributes
    ----------
    messages : int
        Messages in the batch.
    rows : dict
        Rows inserted per table (duplicates not counted).
    """

    messages: int
    rows: dict[str, int]


class Recorder:
    """Writes wire messages to PostgreSQL, idempotently (see the module docstring).

    Create with ``await Recorder.connect(dsn)`` (applies the migrations); :meth:`record` a batch;
    :meth:`run` is the service loop on a :class:`~colmena.services.bus.Bus`. Its connections
    come from a pool (``psycopg_pool``): each message kind is recorded by its own task, up to
    ``max_connections`` transactions at a time, and a connection the server dropped is replaced
    (a restarted PostgreSQL is found again; what was not committed is delivered again).
    """

    def __init__(self, pool: Any) -> None:
        self._pool = pool

    @classmethod
    async def connect(
        cls, dsn: str, *, max_connections: int = 4, timeout_seconds: float = 30.0
    ) -> Recorder:
        """Connect to ``dsn`` and bring the schema up to date.

        Parameters
        ----------
        max_connections : int
            Largest number of connections in the pool (>= 1).
        timeout_seconds : float
            How long to wait for the first connection, and later for a free one.

        Raises
        ------
        ConnectionError
            The database cannot be reached (the message names the host, not the password).
        """
        import psycopg
        from psycopg_pool import AsyncConnectionPool, PoolTimeout

        if max_connections < 1:
            raise ValueError(f"max_connections={max_connections} must be >= 1")
        try:
            with psycopg.connect(dsn) as sync_conn:
                apply_migrations(sync_conn)
        except psycopg.OperationalError as exc:
            raise ConnectionError(f"cannot connect to PostgreSQL: {exc}".strip()) from None
        pool = AsyncConnectionPool(
            dsn, min_size=1, max_size=max_connections, timeout=timeout_seconds, open=False
        )
        try:
            await pool.open(wait=True, timeout=timeout_seconds)
        except PoolTimeout:
            await pool.close()
            raise ConnectionError(
                f"cannot connect to PostgreSQL within {timeout_seconds:g} s"
            ) from None
        return cls(pool)

    async def record_strategies(self, config: LiveConfig) -> list[StrategyRecord]:
        """Record every configured symbol's checkpoint and the settings it trades under in
        ``live_strategies``, idempotently (one transaction); returns the records.

        A checkpoint already recorded keeps its row and gains any new symbol; when its recorded
        settings differ from ``config``'s, a warning is logged and the first ones are kept (the
        audit replays with those: restart with a new checkpoint to change the settings
        auditably).

        Raises
        ------
        StrategyRecordError
            A checkpoint that cannot be loaded; nothing is recorded.
        """
        from psycopg.types.json import Jsonb

        records = strategy_records(config)
        async with self._pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            for r in records:
                await cur.execute(
                    _STRATEGY_SQL,
                    (r.model_sha256, r.checkpoint, list(r.symbols), Jsonb(r.settings),
                     Jsonb(r.validation)),
                )  # fmt: skip
                await cur.execute(
                    "SELECT settings FROM live_strategies WHERE model_sha256 = %s",
                    (r.model_sha256,),
                )
                row = await cur.fetchone()
                if row is not None and row[0] != r.settings:
                    log.warning(
                        "checkpoint %s was first recorded with other settings; the records keep "
                        "those (replay-audit uses them)",
                        r.model_sha256,
                    )
        return records

    async def record(self, batch: Iterable[tuple[wire.WireMessage, str, int, bytes]]) -> Recorded:
        """Insert ``(message, key, stream_seq, payload)`` tuples in one transaction.

        Returns the rows inserted per table; a message whose key is already recorded inserts
        nothing. On any error nothing of the batch is kept and the error propagates.
        """
        by_table: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
        count = 0
        for message, key, seq, payload in batch:
            count += 1
            for table, rows in rows_of(message, key, seq, payload).items():
                by_table[table].extend(rows)
        inserted: dict[str, int] = {}
        async with self._pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            for table in _ORDER:
                table_rows = by_table.get(table)
                if not table_rows:
                    continue
                await cur.executemany(_SQL[table], table_rows, returning=False)
                inserted[table] = max(cur.rowcount, 0)
        return Recorded(messages=count, rows=inserted)

    async def record_deliveries(self, deliveries: Sequence[Delivery]) -> Recorded:
        """Record deliveries, then acknowledge them (only after the commit; unconfirmed)."""
        recorded = await self.record(
            (d.message, d.idempotency_key or wire.idempotency_key(d.message), d.stream_sequence,
             d.payload)
            for d in deliveries
        )  # fmt: skip
        # Unconfirmed acks: a lost one only delivers the message again, whose insert is a no-op
        # (the table's key), so the recorder does not wait a round trip per message.
        for d in deliveries:
            await d.ack(confirm=False)
        return recorded

    async def run(
        self, bus: Bus, stop: asyncio.Event, *, batch: int = 500, poll_seconds: float = 0.2
    ) -> int:
        """Record every kind of message until ``stop`` is set; returns the messages recorded.

        Durable consumers ``recorder-<kind>``: a restarted recorder resumes where it stopped.
        """
        consumers: list[Consumer] = [
            await bus.consumer(kind, f"recorder-{kind}", ordered=False)
            for kind in wire.MESSAGE_TYPES
        ]
        total = 0

        async def drain(consumer: Consumer) -> None:
            nonlocal total
            while not stop.is_set():
                deliveries = await consumer.fetch(batch, timeout=poll_seconds)
                if deliveries:
                    total += (await self.record_deliveries(deliveries)).messages

        # One task per kind; the first error stops the others (the messages not yet committed
        # are delivered again to the restarted recorder).
        tasks = [asyncio.create_task(drain(c)) for c in consumers]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        return total

    async def close(self) -> None:
        """Close the pool's connections."""
        await self._pool.close()
