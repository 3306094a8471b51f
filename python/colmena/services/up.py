"""``colmena up``: the whole live system on one machine, supervised.

Starts what is not given: an embedded NATS server with JetStream
(:mod:`colmena.services.nats_server`) unless ``--nats`` or ``[nats] url`` names one, and an
embedded PostgreSQL (the ``pgserver`` package) for the recorder unless ``--db``, ``[database] dsn``
or ``$COLMENA_DB_DSN`` names one. Then every service as its own process (``colmena serve ROLE``),
each restarted when it dies, with a growing delay (0.5 s doubling to 30 s, reset after a minute of
running); the ingest feed is not restarted once it finished its file. The addresses are written to
``DATA_DIR/endpoints.json`` (atomically) once everything is started, and each service's output goes
to ``DATA_DIR/logs/ROLE.log``. Stopping (Ctrl-C or SIGTERM) sends SIGTERM to every service, waits
for them, then stops the embedded servers: their data stay in ``DATA_DIR`` for the next start.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final

from colmena.atomic_write import write_atomically
from colmena.services.config import DB_DSN_ENV, LiveConfig
from colmena.services.nats_server import EmbeddedNatsServer

__all__ = ["ENDPOINTS_FILE", "Supervisor", "run_up"]

#: File in the data folder with the addresses of the running system.
ENDPOINTS_FILE: Final = "endpoints.json"
_MIN_DELAY: Final = 0.5
_MAX_DELAY: Final = 30.0
_STABLE_SECONDS: Final = 60.0


@dataclass
class _Child:
    role: str
    command: list[str]
    log: Path
    restart_on_success: bool
    process: subprocess.Popen[bytes] | None = None
    log_file: IO[bytes] | None = None
    started_at: float = 0.0
    delay: float = _MIN_DELAY
    next_start: float = 0.0
    restarts: int = 0
    finished: bool = False
    exits: list[int] = field(default_factory=list)


class Supervisor:
    """Starts the service processes and restarts the ones that die.

    Parameters
    ----------
    commands : dict
        Role -> command line. ``ingest`` is not restarted after it exits with status 0.
    log_dir : Path
        Each role's stdout and stderr are appended to ``log_dir/ROLE.log``.
    env : dict, optional
        The services' environment (secrets such as the database DSN travel here, never on a
        command line that ``ps`` shows).
    clock : callable
        Monotonic seconds (tests may pass their own).
    """

    def __init__(
        self,
        commands: dict[str, list[str]],
        log_dir: Path,
        *,
        env: dict[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        log_dir.mkdir(parents=True, exist_ok=True)
        self._clock = clock
        self._env = env
        self.children = {
            role: _Child(role, cmd, log_dir / f"{role}.log", restart_on_success=role != "ingest")
            for role, cmd in commands.items()
        }

    def _spawn(self, child: _Child) -> None:
        if child.log_file is None:
            child.log_file = child.log.open("ab")
        child.process = subprocess.Popen(
            child.command, stdout=child.log_file, stderr=subprocess.STDOUT, env=self._env
        )
        child.started_at = self._clock()

    def start(self) -> None:
        """Start every service."""
        for child in self.children.values():
            self._spawn(child)

    def poll(self) -> list[str]:
        """Restart the services that died and whose delay has passed; returns the roles that
        exited since the last call."""
        now = self._clock()
        exited = []
        for child in self.children.values():
            if child.finished:
                continue
            process = child.process
            if process is not None and process.poll() is not None:
                code = int(process.returncode)
                child.exits.append(code)
                child.process = None
                exited.append(child.role)
                if code == 0 and not child.restart_on_success:
                    child.finished = True
                    continue
                ran = now - child.started_at
                child.delay = (
                    _MIN_DELAY
                    if ran >= _STABLE_SECONDS
                    else min(_MAX_DELAY, child.delay * 2 if child.restarts else _MIN_DELAY)
                )
                child.next_start = now + child.delay
            if child.process is None and not child.finished and now >= child.next_start:
                child.restarts += 1
                self._spawn(child)
        return exited

    def pids(self) -> dict[str, int | None]:
        """Process id of each running service."""
        return {r: (c.process.pid if c.process else None) for r, c in self.children.items()}

    def stop(self, timeout: float = 30.0) -> dict[str, int | None]:
        """SIGTERM every service, wait up to ``timeout`` seconds, SIGKILL the rest; returns the
        exit status of each."""
        for child in self.children.values():
            if child.process is not None and child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)
        deadline = self._clock() + timeout
        codes: dict[str, int | None] = {}
        for role, child in self.children.items():
            if child.process is not None:
                try:
                    child.process.wait(max(0.0, deadline - self._clock()))
                except subprocess.TimeoutExpired:
                    child.process.kill()
                    child.process.wait()
                codes[role] = child.process.returncode
            else:
                codes[role] = child.exits[-1] if child.exits else None
            if child.log_file is not None:
                child.log_file.close()
        return codes


def _serve_command(
    role: str, config_path: Path, nats_url: str, partition: tuple[int, int] = (1, 1)
) -> list[str]:
    return [sys.executable, "-c", "from colmena.cli import main; main(prog_name='colmena')",
            "serve", role, "--config", str(config_path), "--nats", nats_url,
            "--partition", f"{partition[0]}/{partition[1]}"]  # fmt: skip


def _commands(config: LiveConfig, config_path: Path, url: str) -> dict[str, list[str]]:
    """Every service's command line, by child name (``strategy-I`` for each of
    ``strategy_instances`` > 1)."""
    n = config.strategy_instances
    commands = {"ingest": _serve_command("ingest", config_path, url)}
    if n == 1:
        commands["strategy"] = _serve_command("strategy", config_path, url)
    for i in range(1, n + 1 if n > 1 else 1):
        commands[f"strategy-{i}"] = _serve_command("strategy", config_path, url, (i, n))
    for role in ("risk", "execution", "recorder"):
        commands[role] = _serve_command(role, config_path, url)
    return commands


def run_up(
    config: LiveConfig,
    config_path: Path,
    data_dir: Path,
    *,
    nats_url: str | None = None,
    db: str | None = None,
    on_tick: Callable[[Supervisor, dict[str, Any]], None] | None = None,
    tick_seconds: float = 1.0,
) -> dict[str, int | None]:
    """Start the system and supervise it until SIGINT or SIGTERM; returns each service's exit
    status. ``on_tick(supervisor, endpoints)`` runs every ``tick_seconds`` (the console).

    Raises
    ------
    colmena.services.nats_server.NatsServerError
        The embedded NATS server cannot start (the message has the end of its log).
    OSError
        ``data_dir`` cannot be created, or a service cannot be started.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    stopping = False

    def request_stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    previous = {s: signal.signal(s, request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    nats_server: EmbeddedNatsServer | None = None
    pg_server: Any = None
    supervisor: Supervisor | None = None
    try:
        url = nats_url or config.nats.url
        if url is None:
            nats_server = EmbeddedNatsServer(data_dir / "nats")
            url = nats_server.start()
        dsn = db or config.database_dsn()
        if dsn is None:
            from pgserver import get_server  # type: ignore[attr-defined]

            pg_server = get_server(data_dir / "postgres", cleanup_mode="stop")
            dsn = pg_server.get_uri()
        supervisor = Supervisor(
            _commands(config, config_path, url),
            data_dir / "logs",
            env={**os.environ, DB_DSN_ENV: dsn},
        )
        supervisor.start()
        endpoints: dict[str, Any] = {"nats": url, "pid": os.getpid()}
        if pg_server is not None:
            endpoints["db"] = dsn  # the embedded server's local DSN (no password)
        data = json.dumps(endpoints, indent=2).encode()
        write_atomically(data_dir / ENDPOINTS_FILE, lambda fh: fh.write(data))
        while not stopping:
            supervisor.poll()
            if on_tick is not None:
                on_tick(supervisor, endpoints)
            time.sleep(tick_seconds)
        return supervisor.stop()
    finally:
        if supervisor is not None and not stopping:
            supervisor.stop()
        if nats_server is not None:
            nats_server.stop()
        if pg_server is not None:
            pg_server.cleanup()
        for s, handler in previous.items():
            signal.signal(s, handler)


@dataclass(frozen=True)
class SymbolStatus:
    """The newest state of one symbol, read from the stream (the console's row).

    Attributes
    ----------
    symbol : str
    candle_ts : int or None
        Open time of the newest candle, ns since the epoch.
    equity, position : float or None
        The newest account snapshot (quote currency; signed base units).
    verdict, trading_state : str or None
        The newest risk decision.
    lag_bars : int or None
        Candles published but not yet decided by the risk service.
    """

    symbol: str
    candle_ts: int | None
    equity: float | None
    position: float | None
    verdict: str | None
    trading_state: str | None
    lag_bars: int | None


async def symbol_status(url: str, symbols: list[str], bar_seconds: int) -> list[SymbolStatus]:
    """The newest candle, account and decision of each symbol (:class:`SymbolStatus`)."""
    import nats.js.errors

    from colmena.live import wire
    from colmena.services.bus import STREAM, Bus

    bus = await Bus.connect(url, name="colmena-console")
    out = []
    try:
        for symbol in symbols:
            newest: dict[str, Any] = {}
            for kind in ("candle", "account", "order"):
                try:
                    raw = await bus.jetstream.get_last_msg(STREAM, wire.subject(kind, symbol))
                except nats.js.errors.NotFoundError:
                    continue
                newest[kind] = wire.decode(kind, raw.data or b"")
            candle, account, order = (
                newest.get("candle"),
                newest.get("account"),
                newest.get("order"),
            )
            lag = None
            if candle is not None:
                decided = order.ts if order is not None else candle.ts - bar_seconds * 10**9
                lag = max(0, (candle.ts - decided) // (bar_seconds * 10**9))
            out.append(
                SymbolStatus(
                    symbol=symbol,
                    candle_ts=None if candle is None else candle.ts,
                    equity=None if account is None else account.snapshot.equity,
                    position=None if account is None else account.snapshot.position,
                    verdict=None if order is None else order.decided.decision.verdict,
                    trading_state=None if order is None else order.decided.decision.state,
                    lag_bars=lag,
                )
            )
    finally:
        await bus.close()
    return out
