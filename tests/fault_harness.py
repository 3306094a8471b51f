"""The fault harness: the live system of ``colmena up`` (every service its own ``colmena serve``
process under :class:`colmena.services.up.Supervisor`, a real ``nats-server`` with JetStream, a
real PostgreSQL from ``pgserver``) replaying real candles, disturbed by a schedule of faults;
then its PostgreSQL records compared with an undisturbed run of the same inputs (imported with
the tests folder on sys.path by ``tests/test_faults.py`` and ``bench/faults.py``).

Faults (:data:`FAULT_KINDS`): ``kill:ROLE`` sends SIGKILL to the ``colmena serve ROLE`` process
(the supervisor starts it again); ``restart:nats`` stops the NATS server and starts a new one on
the same port and store folder; ``restart:postgres`` stops PostgreSQL and starts it again on the
same data folder. Each fault is injected at a point the system reports, never after a guessed
delay: once the recorder holds ``at`` decisions (rows of ``live_orders``), ``at`` drawn from a
seeded RNG (:func:`schedule`). The only waits with a limit are hang detection.

After a run (:meth:`FaultRun.run`) the records are read table by table, every column but the
stream position and the wall-clock ones (``stream_seq``, ``recorded_at``, ``first_recorded``);
:func:`compare` counts the rows compared and lists the differences; :func:`duplicates` counts
the rows sharing a natural key (symbol and bar, plus the event's or trade's number) or the same
bytes under two idempotency keys. A run that stops making progress is a hang
(:class:`FaultRunError`, with the logs' tails), never retried.

The exchange feed (:func:`exchange_run`) polls the local Binance-format server of
``tests/fake_exchange.py`` on a clock the harness holds (every wait of the feed moves it on),
publishing on a real NATS server; its faults (:data:`EXCHANGE_FAULTS`: answers slower than usual
but within the timeout, HTTP 5xx, HTTP 429, no answer within the timeout; and ``stall``, candles
that stop coming) start and end at polls the feed reports. :func:`check_exchange_events` checks
the circuit breaker, the backoff and the timeouts from the outside, on every request.

:func:`campaign` is the long version (``bench/faults.py``, ``pytest -m faults_long``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import msgspec

from colmena.services.bus import Bus
from colmena.services.config import DB_DSN_ENV, LiveConfig
from colmena.services.nats_server import EmbeddedNatsServer
from colmena.services.recorder import TABLES
from colmena.services.up import Supervisor

#: The roles of ``colmena serve``, each a process of its own.
ROLES: Final = ("ingest", "strategy", "risk", "execution", "recorder")
#: Every kind of fault the harness injects.
FAULT_KINDS: Final = (
    *(f"kill:{role}" for role in ROLES),
    "restart:nats",
    "restart:postgres",
)
#: Columns never compared: the stream position and the wall-clock times of the recorder.
NOT_COMPARED: Final = frozenset({"stream_seq", "recorded_at", "first_recorded"})
#: Natural key of each table: one row per symbol and bar (and per event or closed trade).
NATURAL_KEYS: Final = {
    **{t: ("symbol", "ts_ns") for t in TABLES},
    "live_events": ("symbol", "ts_ns", "seq"),
    "live_trades": ("symbol", "open_ts_ns", "close_ts_ns", "side", "quantity"),
}
SYMBOL: Final = "BTC/USDT"
#: The candle file replayed (in ``$COLMENA_DATA_DIR``).
CANDLE_FILE: Final = "binanceus_btcusdt_1m_2023-03-01_2023-03-21.csv"
#: pgserver's start and stop are not thread-safe (one process-wide lock file): runs side by
#: side in threads take turns.
_PGSERVER_LOCK: Final = threading.Lock()


class FaultRunError(RuntimeError):
    """A run did not finish: the system hung (the message has the counts and the logs' tails)."""


@dataclass(frozen=True)
class Fault:
    """One fault: ``kind`` (:data:`FAULT_KINDS`) injected once the recorder holds ``at``
    decisions."""

    kind: str
    at: int


def schedule(
    seed: int,
    count: int,
    bars: int,
    kinds: tuple[str, ...] = FAULT_KINDS,
    *,
    window: int | None = None,
) -> list[Fault]:
    """``count`` faults at points drawn from ``random.Random(seed)`` in [1, ``window``)
    (default ``bars`` - 10; the replay feed's kill in the first half of that, at most
    ``bars`` / 2, while it runs), in order of their point; the kinds taken in turn from a
    shuffled ``kinds`` (each kind as often as the others, up to one).

    A daemon killed with a message in hand gets it again only after the consumer's ack wait
    (30 s): a run lasts about its last fault's point plus that, so a short run draws its
    points from an early ``window``."""
    rng = random.Random(seed)
    order = list(kinds)
    rng.shuffle(order)
    faults = []
    for i in range(count):
        kind = order[i % len(order)]
        # The replay feed finishes its file a little ahead of the decisions: its kill is
        # drawn in the first half, while it runs.
        last = window or bars - 10
        if kind == "kill:ingest":
            last = min(last, bars // 2)
        faults.append(Fault(kind, rng.randrange(1, max(2, last))))
    return sorted(faults, key=lambda f: f.at)


@dataclass
class RunResult:
    """What one run recorded and what was done to it.

    Attributes
    ----------
    records : dict
        Table -> its rows (compared columns only), sorted.
    injected : Counter
        Faults injected, by kind.
    stream_messages : int
        Messages in the stream at the end (each recorded once: none lost).
    seconds : float
        Wall time of the run (start to every message recorded).
    restarts : dict
        Role -> times the supervisor started it again.
    timeline : list of (float, int, str, int)
        Seconds since the start, decisions recorded then, what happened (a fault injected, the
        first decision recorded after it), and HALTED decisions recorded then.
    duplicates : dict
        Table -> duplicate rows found (:meth:`FaultRun.duplicates`).
    """

    records: dict[str, list[tuple[Any, ...]]]
    injected: Counter[str] = field(default_factory=Counter)
    stream_messages: int = 0
    seconds: float = 0.0
    restarts: dict[str, int] = field(default_factory=dict)
    timeline: list[tuple[float, int, str, int]] = field(default_factory=list)
    duplicates: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Inputs:
    """The inputs of a run: the configuration file's text and how many bars it replays."""

    config_text: str
    bars: int


def make_inputs(
    folder: Path,
    data_dir: Path,
    *,
    bars: int,
    halt_drawdown: float = 0.20,
    speed: float = 0.0,
    lease_seconds: float = 3.0,
) -> Inputs:
    """Write the checkpoint and the candle file of a run into ``folder``; return the
    configuration (one symbol, ``bars`` real one-minute BTC/USDT candles of March 2023 from
    ``data_dir``; a small swarm with every agent voting, deciding every 5 minutes; the kill
    switch at ``halt_drawdown``)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from colmena.data import load_ohlcv
    from colmena.model.decision import DecisionConfig
    from colmena.persistence import checkpoint as checkpoints
    from helpers import make_state

    state = make_state(finished=True, seed=3)
    config = msgspec.structs.replace(state.config, decision=DecisionConfig(interval="5m"))
    checkpoint = folder / "checkpoints"
    checkpoints.save(checkpoint, dataclasses.replace(state, config=config))
    candles = load_ohlcv(data_dir / CANDLE_FILE)
    path = folder / "candles.parquet"
    pq.write_table(
        pa.table({
            "ts": pa.array(candles.ts[:bars], pa.timestamp("ns")),
            **{c: getattr(candles, c)[:bars] for c in ("open", "high", "low", "close", "volume")},
        }),
        path,
    )  # fmt: skip
    text = f"""
bar_seconds = 60
lease_seconds = {lease_seconds}

[[symbols]]
symbol = "{SYMBOL}"
checkpoint = "{checkpoint}"
candles = "{path}"

[feed]
kind = "replay"
speed = {speed}

[health]
enabled = false

[risk]
kelly_prior = 1.0
kelly_multiplier = 1.0
var_budget = 1e9
min_trade_fraction = 0.0
halt_drawdown = {halt_drawdown}

[execution]
market = "margin"
max_participation = 0.05
"""
    return Inputs(text, bars)


def _serve(role: str, config: Path, url: str) -> list[str]:
    return [sys.executable, "-c", "from colmena.cli import main; main(prog_name='colmena')",
            "serve", role, "--config", str(config), "--nats", url]  # fmt: skip


class FaultRun:
    """One run of the system in ``folder``: its own NATS server, PostgreSQL and services.

    Parameters
    ----------
    folder : Path
        Where the NATS server keeps its data and the services their logs (``logs/ROLE.log``).
        PostgreSQL's data folder is a fresh temporary folder of its own, removed by
        :meth:`stop` (pgserver run as root hands it to a system user, who must be able to
        reach it: a folder under pytest's ``/tmp/pytest-of-USER``, which every new pytest
        session makes private again, would lock it out).
    inputs : Inputs
        What the system replays.
    hang_seconds : float
        Hang detection: the longest a run may take.
    stall_seconds : float
        Hang detection: the longest the records may stay as they are (a daemon killed with a
        message in hand gets it again after the consumer's ack wait, 30 s, and the supervisor
        waits up to 30 s before a restart).
    """

    def __init__(
        self,
        folder: Path,
        inputs: Inputs,
        *,
        hang_seconds: float = 1_200.0,
        stall_seconds: float = 150.0,
    ) -> None:
        self.folder = folder
        self.inputs = inputs
        self.hang_seconds = hang_seconds
        self.stall_seconds = stall_seconds
        folder.mkdir(parents=True, exist_ok=True)
        self.config = folder / "colmena.toml"
        self.config.write_text(inputs.config_text)
        self.nats: EmbeddedNatsServer | None = None
        self.pg: Any = None
        self._pg_root = Path(tempfile.mkdtemp(prefix="colmena-faults-"))
        self.dsn = ""
        self.url = ""
        self.port = -1
        self.supervisor: Supervisor | None = None

    # ---------------------------------------------------------------- servers

    def _start_nats(self) -> None:
        self.nats = EmbeddedNatsServer(self.folder / "nats", port=self.port)
        self.url = self.nats.start()
        self.port = int(self.url.rsplit(":", 1)[1])

    def _start_postgres(self) -> None:
        with _PGSERVER_LOCK, warnings.catch_warnings():
            warnings.filterwarnings("ignore", "XDG_RUNTIME_DIR is not set", UserWarning)
            from pgserver import get_server

            self.pg = get_server(self._pg_root / "postgres", cleanup_mode="stop")
        dsn = str(self.pg.get_uri())
        assert not self.dsn or dsn == self.dsn, "PostgreSQL came back at another address"
        self.dsn = dsn

    def restart_nats(self) -> None:
        """Stop the NATS server and start a new one on the same port and store folder."""
        assert self.nats is not None
        self.nats.stop()
        self._start_nats()

    def restart_postgres(self) -> None:
        """Stop PostgreSQL (its fast shutdown: clients cut off) and start it on the same data
        folder."""
        with _PGSERVER_LOCK:
            self.pg.cleanup()
        self._start_postgres()

    def kill(self, role: str) -> bool:
        """SIGKILL the ``colmena serve ROLE`` process; False when it is not running (the replay
        feed finished its file)."""
        assert self.supervisor is not None
        pid = self.supervisor.pids()[role]
        if pid is None:
            return False
        os.kill(pid, signal.SIGKILL)
        return True

    def inject(self, fault: Fault) -> bool:
        """Inject ``fault``; False when there was nothing to inject it into."""
        what, _, target = fault.kind.partition(":")
        if what == "kill":
            return self.kill(target)
        if target == "nats":
            self.restart_nats()
        elif target == "postgres":
            self.restart_postgres()
        else:
            raise ValueError(f"unknown fault {fault.kind!r}")
        return True

    # ---------------------------------------------------------------- what the system reports

    def _query(self, sql: str) -> list[tuple[Any, ...]] | None:
        """Rows of ``sql``, or None when PostgreSQL or the tables are not there (yet)."""
        import psycopg

        try:
            with psycopg.connect(self.dsn, connect_timeout=5) as conn:
                return list(conn.execute(sql).fetchall())  # type: ignore[arg-type]
        except (psycopg.OperationalError, psycopg.errors.UndefinedTable):
            return None

    def decisions(self) -> int | None:
        """Decisions recorded (rows of ``live_orders``), None when they cannot be read."""
        rows = self._query("SELECT count(*) FROM live_orders")
        return None if rows is None else int(rows[0][0])

    def recorded_messages(self) -> int | None:
        """Messages recorded: rows of every message table (trades are part of a fill's)."""
        union = " UNION ALL ".join(f"SELECT count(*) FROM {t}" for t in TABLES
                                   if t != "live_trades")  # fmt: skip
        rows = self._query(f"SELECT sum(n) FROM ({union.replace('count(*)', 'count(*) AS n')}) s")
        return None if rows is None else int(rows[0][0])

    def stream_messages(self) -> int | None:
        """Messages in the stream, None while NATS cannot be reached."""

        async def count() -> int:
            bus = await Bus.connect(self.url, connect_timeout=2.0)
            try:
                return await bus.stream_messages()
            finally:
                await bus.close()

        try:
            return asyncio.run(count())
        except Exception:  # down, restarting, or the stream not made yet
            return None

    def records(self) -> dict[str, list[tuple[Any, ...]]]:
        """Every table's rows (compared columns), sorted."""
        out = {}
        for table, columns in {**TABLES, "live_strategies": _STRATEGY_COLUMNS}.items():
            kept = [c for c in columns if c not in NOT_COMPARED]
            rows = self._query(f"SELECT {', '.join(kept)} FROM {table}")
            assert rows is not None, table
            out[table] = sorted(rows, key=repr)
        return out

    def duplicates(self) -> dict[str, int]:
        """Per table: rows beyond the first sharing a natural key, plus rows whose bytes
        (``payload``) were recorded under two idempotency keys."""
        out = {}
        for table, key in NATURAL_KEYS.items():
            cols = ", ".join(key)
            sql = (f"SELECT coalesce(sum(n - 1), 0) FROM (SELECT count(*) AS n FROM {table} "
                   f"GROUP BY {cols} HAVING count(*) > 1) d")  # fmt: skip
            rows = self._query(sql)
            assert rows is not None
            found = int(rows[0][0])
            if "payload" in TABLES[table]:
                rows = self._query(
                    f"SELECT coalesce(sum(n - 1), 0) FROM (SELECT count(*) AS n FROM {table} "
                    "GROUP BY payload HAVING count(*) > 1) d"
                )
                assert rows is not None
                found += int(rows[0][0])
            out[table] = found
        return out

    # ---------------------------------------------------------------- the run

    def _tail(self) -> str:
        logs = sorted((self.folder / "logs").glob("*.log"))
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-1500:]}" for p in logs)

    def run(self, faults: list[Fault] | tuple[Fault, ...] = ()) -> RunResult:
        """Start everything, inject ``faults`` (in order of their point), wait until every
        decision and every message of the stream is recorded, stop; the records.

        Raises
        ------
        FaultRunError
            Not everything recorded within ``hang_seconds`` (hang detection).
        """
        started = time.monotonic()
        pending = sorted(faults, key=lambda f: f.at)
        injected: Counter[str] = Counter()
        timeline: list[tuple[float, int, str, int]] = []
        waiting_since: int | None = None  # decisions when the last fault was injected
        progress: tuple[int | None, int | None] = (None, None)
        progressed = started
        try:
            self._start_nats()
            self._start_postgres()
            self.supervisor = Supervisor(
                {role: _serve(role, self.config, self.url) for role in ROLES},
                self.folder / "logs",
                env={**os.environ, DB_DSN_ENV: self.dsn},
            )
            self.supervisor.start()
            while True:
                self.supervisor.poll()
                decided = self.decisions()
                if waiting_since is not None and decided is not None and decided > waiting_since:
                    timeline.append((time.monotonic() - started, decided, "progress again", -1))
                    waiting_since = None
                while pending and decided is not None and decided >= pending[0].at:
                    fault = pending.pop(0)
                    halted = self._query(
                        "SELECT count(*) FROM live_orders WHERE trading_state = 'HALTED'"
                    )
                    if self.inject(fault):
                        injected[fault.kind] += 1
                        timeline.append(
                            (
                                time.monotonic() - started,
                                decided,
                                fault.kind,
                                -1 if halted is None else int(halted[0][0]),
                            )
                        )
                        waiting_since = decided
                    decided = self.decisions()
                if decided == self.inputs.bars and not pending:
                    stream = self.stream_messages()
                    if stream is not None and self.recorded_messages() == stream:
                        break
                now = (decided, self.recorded_messages())
                if now != progress:
                    progress, progressed = now, time.monotonic()
                stalled = time.monotonic() - progressed > self.stall_seconds
                if stalled or time.monotonic() - started > self.hang_seconds:
                    why = f"nothing recorded for {self.stall_seconds:g} s" if stalled else (
                        f"not done after {self.hang_seconds:g} s")  # fmt: skip
                    raise FaultRunError(
                        f"hang: {why}: {decided} of {self.inputs.bars} decisions and "
                        f"{now[1]} messages recorded; injected {dict(injected)}, left "
                        f"{pending}\n{self._tail()}"
                    )
                time.sleep(0.2)  # the poll interval of the supervisor loop, not a fault point
            seconds = time.monotonic() - started
            records = self.records()
            restarts = {r: c.restarts for r, c in self.supervisor.children.items()}
            return RunResult(
                records, injected, stream or 0, seconds, restarts, timeline, self.duplicates()
            )
        finally:
            self.stop()

    def stop(self) -> None:
        """Stop the services and the servers (idempotent)."""
        if self.supervisor is not None:
            self.supervisor.stop(timeout=30.0)
            self.supervisor = None
        if self.nats is not None:
            self.nats.stop()
            self.nats = None
        if self.pg is not None:
            with _PGSERVER_LOCK, contextlib.suppress(Exception):
                self.pg.cleanup()
            self.pg = None
        shutil.rmtree(self._pg_root, ignore_errors=True)


_STRATEGY_COLUMNS: Final = ("model_sha256", "checkpoint", "symbols", "settings", "validation")


def compare(
    reference: dict[str, list[tuple[Any, ...]]], disturbed: dict[str, list[tuple[Any, ...]]]
) -> tuple[int, list[str]]:
    """Rows compared (of the reference) and one line per difference (table, row)."""
    compared = 0
    differences = []
    for table, rows in reference.items():
        other = disturbed.get(table, [])
        compared += len(rows)
        if len(other) != len(rows):
            differences.append(f"{table}: {len(rows)} rows undisturbed, {len(other)} disturbed")
        for i, (a, b) in enumerate(zip(rows, other, strict=False)):
            if a != b:
                differences.append(f"{table} row {i}: {a!r} != {b!r}")
                break
    return compared, differences


# ---------------------------------------------------------------- the exchange feed

#: The exchange's faults: answers late but within the client's timeout, HTTP 5xx (a body
#: without a Binance error code, as a proxy in front of the exchange sends), HTTP 429 with
#: Binance's rate limit code -1003, no answer within the timeout.
EXCHANGE_FAULTS: Final = ("slow", "5xx", "429", "silent")
#: Each request of the feed times out after this many seconds (``[feed] timeout_seconds``).
EXCHANGE_TIMEOUT_SECONDS: Final = 1.0
#: The slow exchange's delay, and the silent one's (past the timeout).
SLOW_SECONDS: Final = 0.3
SILENT_SECONDS: Final = EXCHANGE_TIMEOUT_SECONDS + 2.0
EXCHANGE_SYMBOLS: Final = ("BTC/USDT", "ETH/USDT")
BACKOFF_SECONDS: Final = 0.5
MAX_ATTEMPTS: Final = 3


@dataclass(frozen=True)
class ExchangeFault:
    """``kind`` (:data:`EXCHANGE_FAULTS`, or ``"stall"``: the exchange answers but its candles
    stop, its clock held while the feed's goes on) from poll ``poll`` (0-based) for ``polls``
    polls; a 5xx fault answers with ``status``."""

    kind: str
    poll: int
    polls: int
    status: int = 0


def exchange_schedule(seed: int, count: int, polls: int) -> list[ExchangeFault]:
    """``count`` faults of the kinds in turn (shuffled by ``random.Random(seed)``), each at a
    drawn poll of [1, ``polls`` - 4) for 1 to 3 polls, not overlapping."""
    rng = random.Random(seed)
    kinds = list(EXCHANGE_FAULTS)
    rng.shuffle(kinds)
    out: list[ExchangeFault] = []
    free = set(range(1, polls - 4))
    for i in range(count):
        kind = kinds[i % len(kinds)]
        length = rng.randint(1, 3)
        starts = sorted(p for p in free if all(q in free for q in range(p, p + length + 1)))
        if not starts:
            break
        start = rng.choice(starts)
        free -= set(range(start - 1, start + length + 1))
        status = rng.choice((500, 502, 503, 504)) if kind == "5xx" else 0
        out.append(ExchangeFault(kind, start, length, status))
    return sorted(out, key=lambda f: f.poll)


@dataclass
class ExchangeRunResult:
    """What an exchange feed run published and what it went through.

    Attributes
    ----------
    candles : dict
        Symbol -> the candles in the stream, in stream order, as ``(ts, o, h, l, c, v)``.
    received_ns : dict
        Symbol -> each of those candles' ``received_ns`` stamp (the feed's clock).
    poll_ns : list of int
        The feed's clock at the start of each poll.
    injected : Counter
        Faults injected, by kind (each counted once, however many polls it lasted).
    events : list
        In order: ``("request", clock_ns, error type name or "", real seconds)`` for every
        kline request that reached the client, ``("wait", clock_ns, seconds)`` for every wait
        of the feed, ``("log", clock_ns, text)`` for every breaker and retry log line.
    client_timeout_ms : float
        The ccxt client's timeout.
    reports : list of PollReport
    """

    candles: dict[str, list[tuple[Any, ...]]]
    received_ns: dict[str, list[int]]
    poll_ns: list[int]
    injected: Counter[str]
    events: list[tuple[Any, ...]]
    client_timeout_ms: float
    reports: list[Any]


def exchange_market(data_dir: Path, minutes: int) -> dict[str, list[list[object]]]:
    """Binance klines of :data:`EXCHANGE_SYMBOLS`: the real BTC/USDT minutes of March 2023, and
    for ETH/USDT the real ETH/USD minutes of 2018 (Bitfinex) put on the same times."""
    from colmena.data import load_ohlcv
    from fake_exchange import kline

    btc = load_ohlcv(data_dir / CANDLE_FILE)
    eth = load_ohlcv(data_dir / "ethusd_bitfinex_1m_2018.parquet")
    out = {}
    for symbol, candles in zip(EXCHANGE_SYMBOLS, (btc, eth), strict=True):
        rows = zip(*(getattr(candles, c)[:minutes].tolist()
                     for c in ("open", "high", "low", "close", "volume")), strict=True)  # fmt: skip
        out[symbol] = [kline(int(btc.ts[i]) // 1_000_000, *row) for i, row in enumerate(rows)]
    return out


async def exchange_run(
    url: str, fake: Any, faults: list[ExchangeFault], polls: int, *, first_minute: int = 60
) -> ExchangeRunResult:
    """The exchange feed against ``fake`` (:class:`fake_exchange.FakeBinance`) on the NATS
    server at ``url`` (a fresh stream) for ``polls`` polls, one a minute on the test's clock
    from ``first_minute`` minutes after the first kline, with ``faults``; each fault set when
    the poll before it reported and cleared when its last poll reported. The feed's clock is
    the test's: every wait of the feed moves it on by the time asked for."""
    from colmena.live import wire
    from colmena.services.bus import STREAM
    from colmena.services.feeds import ExchangeFeed, PollReport

    t0_ms = int(next(iter(fake.markets.values()))[0][0])
    now = {"ms": t0_ms + first_minute * 60_000 + 1_000}
    fake.now_ms = now["ms"]
    events: list[tuple[Any, ...]] = []
    reports: list[PollReport] = []
    injected: Counter[str] = Counter()
    stop = asyncio.Event()

    def clock() -> int:
        return now["ms"] * 1_000_000

    stalled = {"now": False}

    async def sleep(seconds: float) -> None:
        events.append(("wait", clock(), seconds))
        now["ms"] += round(seconds * 1_000)
        if not stalled["now"]:
            fake.now_ms = now["ms"]

    def apply(poll: int) -> None:
        """The exchange as the faults make it for poll ``poll``."""
        fake.delay_seconds, fake.fail_always, stalled["now"] = 0.0, False, False
        for f in faults:
            if f.poll <= poll < f.poll + f.polls:
                if poll == f.poll:
                    injected[f.kind] += 1
                if f.kind == "slow":
                    fake.delay_seconds = SLOW_SECONDS
                elif f.kind == "silent":
                    fake.delay_seconds = SILENT_SECONDS
                elif f.kind == "stall":
                    stalled["now"] = True
                elif f.kind == "429":
                    fake.fail_always, fake.fail_status, fake.fail_code = True, 429, -1003
                else:
                    fake.fail_always, fake.fail_status, fake.fail_code = True, f.status, 0

    def on_poll(report: PollReport) -> None:
        reports.append(report)
        if len(reports) == polls:
            stop.set()
        apply(len(reports))
        if not stalled["now"]:
            fake.now_ms = now["ms"]

    class LogEvents(logging.Handler):
        def emit(self, record: Any) -> None:
            text = record.getMessage()
            if "circuit breaker" in text or " failed (" in text:
                events.append(("log", clock(), text))

    config = exchange_config(fake.url)
    feed = ExchangeFeed(config, clock=clock, sleep=sleep, on_poll=on_poll)
    fetch = feed.client.fetch_ohlcv

    async def timed_fetch(*args: Any, **kwargs: Any) -> Any:
        began = time.monotonic()
        try:
            rows = await fetch(*args, **kwargs)
        except Exception as exc:
            events.append(("request", clock(), type(exc).__name__, time.monotonic() - began))
            raise
        events.append(("request", clock(), "", time.monotonic() - began))
        return rows

    feed.client.fetch_ohlcv = timed_fetch
    handler = LogEvents()
    feed_log = logging.getLogger("colmena.services.feeds")
    feed_log.addHandler(handler)
    level = feed_log.level
    feed_log.setLevel(logging.INFO)  # the breaker's half-open and closed lines are INFO
    timeout_ms = float(feed.client.timeout)
    apply(0)
    bus = await Bus.connect(url)
    try:
        await asyncio.wait_for(feed.run(bus, stop), timeout=600.0)  # hang detection
        sub = await bus.jetstream.pull_subscribe(wire.subject_filter("candle"), stream=STREAM)
        total = await bus.stream_messages()
        candles: dict[str, list[tuple[Any, ...]]] = {s: [] for s in EXCHANGE_SYMBOLS}
        received: dict[str, list[int]] = {s: [] for s in EXCHANGE_SYMBOLS}
        seen = 0
        while seen < total:
            for raw in await sub.fetch(1_000, timeout=10.0):
                m = wire.decode("candle", raw.data)
                assert isinstance(m, wire.CandleMessage)
                b = m.bar
                candles[m.symbol].append((m.ts, b.open, b.high, b.low, b.close, b.volume))
                received[m.symbol].append(m.received_ns)
                seen += 1
                await raw.ack()
    finally:
        feed_log.removeHandler(handler)
        feed_log.setLevel(level)
        await bus.close()
    polled = [r.started_ns for r in reports]
    return ExchangeRunResult(candles, received, polled, injected, events, timeout_ms, reports)


@dataclass
class ExchangeChecks:
    """What :func:`check_exchange_events` found in a run's events (every list empty: all
    held)."""

    breaker_opened: int = 0
    half_opened: int = 0
    closed_again: int = 0
    backoff_waits: list[tuple[int, float]] = field(default_factory=list)
    timeouts: list[float] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def check_exchange_events(events: list[tuple[Any, ...]]) -> ExchangeChecks:
    """Walk a run's events and check, independently of the breaker's own code: the breaker
    opens exactly when 3 requests in a row failed (or its trial failed); no request reaches
    the exchange while it is open until 2 s have passed on the feed's clock; then the first
    request is the trial (half-open logged before it); a success closes it. Every retry's wait
    lies in [0, backoff * 2**(try - 1)] (exponential backoff with full jitter). Every request
    that timed out took about the timeout."""
    out = ExchangeChecks()
    state, failures, opened_ns = "closed", 0, 0
    retry: int | None = None
    for event in events:
        kind, at = event[0], event[1]
        if kind == "log":
            text = event[2]
            if "circuit breaker open (3 consecutive failures)" in text:
                out.breaker_opened += 1
                if state != "closed" or failures != 3:
                    out.problems.append(f"opened at {at} after {failures} failures in {state}")
                state, opened_ns = "open", at
            elif "circuit breaker open (the trial call failed)" in text:
                if state != "half-open":
                    out.problems.append(f"trial failure at {at} in state {state}")
                state, opened_ns = "open", at
            elif "circuit breaker half-open" in text:
                out.half_opened += 1
                if state != "open" or at - opened_ns < 2_000_000_000:
                    out.problems.append(f"half-open at {at}, {(at - opened_ns) / 1e9} s open")
                state = "half-open"
            elif "circuit breaker closed" in text:
                out.closed_again += 1
                state, failures = "closed", 0
            elif " failed (" in text and "try " in text:
                retry = int(text.split("try ")[1].split(" ")[0])
        elif kind == "wait":
            if retry is not None:
                out.backoff_waits.append((retry, event[2]))
                if not 0 <= event[2] <= BACKOFF_SECONDS * 2 ** (retry - 1):
                    out.problems.append(f"backoff {event[2]} s after try {retry}")
            retry = None
        elif kind == "request":
            error, seconds = event[2], event[3]
            if state == "open":
                out.problems.append(f"a request at {at} while the breaker was open")
            if error == "RequestTimeout":
                out.timeouts.append(seconds)
            if error:
                failures += 1
            elif state != "half-open":  # (a success in half-open is followed by 'closed')
                failures = 0
    return out


def count_duplicates(result: RunResult) -> int:
    """Duplicate rows a run's records hold, all tables."""
    return sum(result.duplicates.values())


def halted_from(records: dict[str, list[tuple[Any, ...]]]) -> tuple[int, int] | None:
    """(index of the first HALTED decision in time order, HALTED decisions), None when the kill
    switch never tripped."""
    columns = [c for c in TABLES["live_orders"] if c not in NOT_COMPARED]
    ts, state = columns.index("ts_ns"), columns.index("trading_state")
    states = [row[state] for row in sorted(records["live_orders"], key=lambda r: r[ts])]
    if "HALTED" not in states:
        return None
    return states.index("HALTED"), states.count("HALTED")


def exchange_config(url: str, *, symbols: tuple[str, ...] = EXCHANGE_SYMBOLS) -> LiveConfig:
    """The exchange feed's configuration against the fake exchange at ``url``."""
    return msgspec.convert(
        {"bar_seconds": 60, "symbols": [{"symbol": s, "checkpoint": "unused"} for s in symbols],
         "feed": {"kind": "exchange", "exchange": "binance", "api_url": url, "limit": 50,
                  "poll_seconds": 60.0, "timeout_seconds": EXCHANGE_TIMEOUT_SECONDS,
                  "backoff_seconds": BACKOFF_SECONDS, "max_attempts": MAX_ATTEMPTS}},
        LiveConfig,
    )  # fmt: skip


def campaign(
    folder: Path,
    data_dir: Path,
    *,
    runs: int = 5,
    faults_per_run: int = 14,
    bars: int = 600,
    halt_drawdown: float = 0.002,
    exchange_runs: int = 3,
    exchange_faults: int = 8,
    polls: int = 60,
    seed: int = 2026,
) -> dict[str, Any]:
    """The long fault campaign: ``runs`` runs of the system, each with ``faults_per_run``
    faults (every kind in turn) at seeded points of a replay of ``bars`` real candles, each
    compared with one undisturbed run; ``exchange_runs`` runs of the exchange feed with
    ``exchange_faults`` faults over ``polls`` polls, each compared with an undisturbed one.

    Returns the figures: faults injected (in all and by kind, in the runs that finished), runs,
    records compared, duplicates found, lost messages, the runs that hung (one line each: a
    hang is a finding, never retried), differences (one line each), the exchange checks'
    counts, and the seconds each part took.
    """
    from fake_exchange import FakeBinance

    started = time.monotonic()
    inputs = make_inputs(folder, data_dir, bars=bars, halt_drawdown=halt_drawdown, speed=1_500.0)
    reference = FaultRun(folder / "undisturbed", inputs).run()
    by_kind: Counter[str] = Counter()
    compared = duplicates = lost = 0
    differences: list[str] = []
    after_halt = 0
    run_seconds = []
    hung: list[str] = []
    for i in range(runs):
        faults = schedule(seed + i, faults_per_run, bars)
        try:
            result = FaultRun(folder / f"disturbed-{i}", inputs).run(faults)
        except FaultRunError as exc:
            log = folder / f"disturbed-{i}" / "logs" / "recorder.log"
            tail = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
            hung.append(f"run {i}: {str(exc).splitlines()[0]}; the recorder's log ends: "
                        + " | ".join(tail[-3:]))  # fmt: skip
            continue
        by_kind.update(result.injected)
        n, diff = compare(reference.records, result.records)
        compared += n
        differences += [f"run {i}: {d}" for d in diff]
        duplicates += count_duplicates(result)
        lost += sum(max(0, len(rows) - len(result.records.get(t, [])))
                    for t, rows in reference.records.items())  # fmt: skip
        lost += max(0, reference.stream_messages - result.stream_messages)
        after_halt += sum(1 for e in result.timeline if e[2] in FAULT_KINDS and e[3] > 0)
        run_seconds.append(round(result.seconds, 1))
    system_seconds = time.monotonic() - started

    started = time.monotonic()
    market = exchange_market(data_dir, 60 + polls + 5)
    exchange_by_kind: Counter[str] = Counter()
    opened = half_opened = closed = timeouts = backoffs = 0
    exchange_compared = 0
    for i in range(-1, exchange_runs):  # -1: the undisturbed run
        fake = FakeBinance(market)
        try:
            with EmbeddedNatsServer(folder / f"exchange-{i}") as server:
                faults_x = [] if i < 0 else exchange_schedule(seed + i, exchange_faults, polls)
                result_x = asyncio.run(exchange_run(server.url, fake, faults_x, polls))
        finally:
            fake.close()
        if i < 0:
            undisturbed_x = result_x
            continue
        exchange_by_kind.update(result_x.injected)
        exchange_compared += sum(len(c) for c in undisturbed_x.candles.values())
        if result_x.candles != undisturbed_x.candles:
            differences.append(f"exchange run {i}: the candles published differ")
        checks = check_exchange_events(result_x.events)
        differences += [f"exchange run {i}: {p}" for p in checks.problems]
        opened += checks.breaker_opened
        half_opened += checks.half_opened
        closed += checks.closed_again
        timeouts += len(checks.timeouts)
        backoffs += len(checks.backoff_waits)
        duplicates += sum(len(c) - len({x[0] for x in c}) for c in result_x.candles.values())
    exchange_seconds = time.monotonic() - started
    return {
        "faults_injected": sum(by_kind.values()) + sum(exchange_by_kind.values()),
        "faults_by_kind": {
            **dict(sorted(by_kind.items())),
            **{f"exchange:{k}": v for k, v in sorted(exchange_by_kind.items())},
        },
        "faults_after_halt": after_halt,
        "runs": runs + exchange_runs,
        "undisturbed_runs": 2,
        "records_compared": compared + exchange_compared,
        "duplicates_found": duplicates,
        "lost_messages": lost,
        "hung_runs": hung,
        "differences": differences,
        "bars_per_run": bars,
        "polls_per_exchange_run": polls,
        "breaker_opened": opened,
        "breaker_half_opened": half_opened,
        "breaker_closed_again": closed,
        "request_timeouts": timeouts,
        "backoff_waits": backoffs,
        "system_run_seconds": run_seconds,
        "system_seconds": round(system_seconds, 1),
        "exchange_seconds": round(exchange_seconds, 1),
    }
