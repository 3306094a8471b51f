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

The configuration can come from options instead of a file (:class:`UpOptions`,
:func:`resolve_config`): ``colmena up --checkpoint PATH --symbol BTC/USDT --exchange binance``
builds the :class:`~colmena.services.config.LiveConfig` a file with those ``[[symbols]]`` and
``[feed]`` settings would give (everything else the library's defaults), checked the same way;
given with ``--config FILE`` they override that file's settings. :func:`check_config` then loads
every checkpoint and builds the feed before anything starts, and :func:`write_config` writes the
result to ``DATA_DIR/colmena.toml`` (atomically), the file the services are started with and the
user can edit and pass back with ``--config``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final
from urllib.parse import urlsplit

import msgspec

from colmena.atomic_write import write_atomically
from colmena.persistence import checkpoint as checkpoints
from colmena.services.config import DB_DSN_ENV, ConfigError, LiveConfig, load_config
from colmena.services.nats_server import EmbeddedNatsServer

__all__ = [
    "CONFIG_FILE",
    "ENDPOINTS_FILE",
    "Supervisor",
    "SymbolStatus",
    "UpNotRunningError",
    "UpOptions",
    "check_config",
    "config_toml",
    "resolve_config",
    "run_up",
    "stop_up",
    "symbol_status",
    "write_config",
]

#: File in the data folder with the addresses of the running system.
ENDPOINTS_FILE: Final = "endpoints.json"
#: File in the data folder with the configuration ``colmena up`` built from its options.
CONFIG_FILE: Final = "colmena.toml"
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


# ---------------------------------------------------------------- configuration from options


@dataclass(frozen=True)
class UpOptions:
    """The options of ``colmena up`` that build its configuration, or change a file's.

    Attributes
    ----------
    checkpoint : str or None
        ``--checkpoint``: the checkpoint file or folder (its newest valid checkpoint) of every
        symbol (``[[symbols]] checkpoint``).
    symbols : tuple of str
        ``--symbol``, repeated: the markets traded, in order (ccxt's unified symbols,
        ``BTC/USDT``); they replace a file's ``[[symbols]]``.
    exchange : str or None
        ``--exchange``: poll this ccxt exchange (``[feed] kind = "exchange"``, ``exchange``).
    replay : tuple of str
        ``--replay``, one per symbol in the symbols' order: each symbol's candle file
        (``[feed] kind = "replay"``, ``[[symbols]] candles``).
    speed : float or None
        ``--speed``: the replay's pace, times real time (``[feed] speed``).
    """

    checkpoint: str | None = None
    symbols: tuple[str, ...] = ()
    exchange: str | None = None
    replay: tuple[str, ...] = ()
    speed: float | None = None

    def given(self) -> bool:
        """Whether any option was given."""
        return bool(
            self.checkpoint is not None
            or self.symbols
            or self.exchange is not None
            or self.replay
            or self.speed is not None
        )


def _option_of(path: str, options: UpOptions) -> str:
    """The option behind a field of the configuration (a msgspec error path, ``$.feed.speed``)."""
    if path.startswith("$.feed.speed"):
        return f" (--speed {options.speed!r})"
    if path.startswith("$.feed") and options.exchange is not None:
        return f" (--exchange {options.exchange!r})"
    if path.startswith("$.symbols[") and options.symbols:
        i = int(path[len("$.symbols[") :].split("]")[0])
        if i < len(options.symbols):
            return f" (--symbol {options.symbols[i]!r})"
    return ""


def resolve_config(
    options: UpOptions, base: LiveConfig | None = None, *, base_name: str = "--config"
) -> LiveConfig:
    """The configuration ``colmena up`` runs: ``base`` (a file's, or the defaults) changed by the
    options.

    Without ``base``, ``checkpoint``, ``symbols`` and a feed (``exchange`` or ``replay``) are
    needed; the rest is the library's defaults (:class:`~colmena.services.config.LiveConfig`).
    With ``base``, each option given replaces one thing and every other setting of the file is
    kept: ``symbols`` the list of ``[[symbols]]`` (a symbol the file has keeps its checkpoint and
    candle file unless ``checkpoint`` or ``replay`` is given); ``checkpoint`` every symbol's
    checkpoint; ``replay`` every symbol's candle file and ``[feed] kind`` (``[feed] path``, the
    file of a single symbol, is dropped); ``exchange`` ``[feed] kind`` and ``exchange`` (the
    file's ``api_url``, ``poll_seconds``... are kept); ``speed`` ``[feed] speed``.

    Parameters
    ----------
    options : UpOptions
        The options given.
    base : LiveConfig, optional
        The ``--config`` file's configuration (:func:`~colmena.services.config.load_config`).
    base_name : str
        How errors name the file.

    Returns
    -------
    LiveConfig
        Decoded with ``msgspec.convert`` into the same frozen Structs as a file, so equal to the
        configuration of a file with the same settings.

    Raises
    ------
    ConfigError
        One line naming every problem: a missing option (no ``base``: ``checkpoint``,
        ``symbols``, a feed), ``exchange`` and ``replay`` both given, ``speed`` with an exchange
        feed, not one ``replay`` per symbol, a symbol with no checkpoint or (replay) no candle
        file, a ``checkpoint`` or ``replay`` path that does not exist, or a value the
        configuration refuses (named as for a file, ``$.feed.speed``, and by its option).
    """
    if options.exchange is not None and options.replay:
        raise ConfigError(
            "--exchange and --replay both name the feed: give one (live candles polled from an "
            "exchange, or candle files to replay)"
        )
    if base is None:
        missing = []
        if options.checkpoint is None:
            missing.append("--checkpoint PATH (a checkpoint file or folder)")
        if not options.symbols:
            missing.append("--symbol BASE/QUOTE (e.g. BTC/USDT)")
        if options.exchange is None and not options.replay:
            missing.append("--exchange ID (live candles, e.g. binance) or --replay FILE")
        if missing:
            given = (
                ", ".join(missing[:-1]) + " and " + missing[-1] if len(missing) > 1 else missing[0]
            )
            raise ConfigError(f"no --config FILE, so give {given}")
    data: dict[str, Any] = msgspec.to_builtins(base) if base is not None else {}
    feed: dict[str, Any] = dict(data.get("feed", {}))
    entries: list[dict[str, Any]] = [dict(e) for e in data.get("symbols", ())]
    problems = []
    if (options.symbols or options.replay) and feed.get("path") is not None and len(entries) == 1:
        # [feed] path is the candle file of the file's only symbol: make it that entry's own.
        entries[0]["candles"], feed["path"] = feed["path"], None
    if options.symbols:
        known = {e["symbol"]: e for e in entries}
        entries = [dict(known.get(s, {"symbol": s})) for s in options.symbols]
    if not entries:
        raise ConfigError(f"{base_name} has no [[symbols]]: give --symbol (e.g. BTC/USDT)")
    if options.checkpoint is not None:
        if not Path(options.checkpoint).exists():
            problems.append(f"--checkpoint {options.checkpoint}: no such file or folder")
        for entry in entries:
            entry["checkpoint"] = options.checkpoint
    lacking = [e["symbol"] for e in entries if "checkpoint" not in e]
    if lacking:
        problems.append(
            f"--symbol {', '.join(lacking)}: no checkpoint ({base_name} has none for it): "
            "give --checkpoint PATH"
        )
    if options.replay:
        if len(options.replay) != len(entries):
            problems.append(
                f"{len(options.replay)} --replay files for {len(entries)} symbols: give one "
                "--replay FILE per symbol, in the order of the symbols"
            )
        problems += [
            f"--replay {f}: {'not a file' if Path(f).exists() else 'no such file'}"
            for f in options.replay
            if not Path(f).is_file()
        ]
        for entry, file in zip(entries, options.replay, strict=False):
            entry["candles"] = file
        feed["kind"], feed["path"] = "replay", None
    if options.exchange is not None:
        feed["kind"], feed["exchange"] = "exchange", options.exchange
    if options.speed is not None:
        if feed.get("kind") == "exchange":
            source = "--exchange" if options.exchange is not None else f"{base_name} [feed] kind"
            problems.append(
                f"--speed is the pace of a replay, and the feed is an exchange ({source})"
            )
        feed["speed"] = options.speed
    if feed.get("kind", "replay") == "replay" and not options.replay:
        single_path = len(entries) == 1 and feed.get("path") is not None
        no_file = [e["symbol"] for e in entries if e.get("candles") is None and not single_path]
        if no_file:
            problems.append(
                f"--symbol {', '.join(no_file)}: no candle file to replay: give --replay FILE "
                "once per symbol, or --exchange ID"
            )
    if problems:
        raise ConfigError("; ".join(problems))
    data["symbols"], data["feed"] = entries, feed
    try:
        return msgspec.convert(data, LiveConfig)
    except msgspec.ValidationError as exc:
        at = str(exc).rpartition(" - at `")[2].rstrip("`")
        where = "options" if base is None else f"{base_name} with the options"
        raise ConfigError(f"{where}: {exc}{_option_of(at, options)}") from None


def check_config(config: LiveConfig) -> None:
    """Before anything starts: every symbol's checkpoint loads and the feed can be built (a
    replay's candle files are read and checked; an exchange feed's client is made, without a
    request, and every symbol is ccxt's ``BASE/QUOTE``).

    Raises
    ------
    ConfigError
        One line naming every problem (the symbol, the field, the path).
    """
    from colmena.services.feeds import FeedError, make_feed

    if not config.symbols:
        raise ConfigError("no [[symbols]]: nothing to trade")
    problems = []
    loaded: set[str] = set()
    for i, entry in enumerate(config.symbols):
        if entry.checkpoint in loaded:
            continue
        loaded.add(entry.checkpoint)
        try:
            checkpoints.load_path(entry.checkpoint)
        except checkpoints.CheckpointError as exc:
            problems.append(f"symbols[{i}].checkpoint ({entry.symbol}): {exc}")
        except OSError as exc:
            reason = exc.strerror or str(exc)
            problems.append(
                f"symbols[{i}].checkpoint ({entry.symbol}): {entry.checkpoint}: {reason}"
            )
    if config.feed.kind == "exchange":
        problems += [
            f"symbols[{i}].symbol {entry.symbol!r}: the exchange feed needs ccxt's unified symbol "
            "BASE/QUOTE (e.g. BTC/USDT)"
            for i, entry in enumerate(config.symbols)
            if "/" not in entry.symbol
        ]

    async def build_feed() -> None:
        feed = make_feed(config)
        await feed.close()

    try:
        asyncio.run(build_feed())
    except FeedError as exc:
        problems.append(str(exc))
    if problems:
        raise ConfigError("; ".join(problems))


def _without_defaults(value: dict[str, Any], default: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, item in value.items():
        if isinstance(item, dict):
            inner = _without_defaults(item, default.get(key, {}))
            if inner:
                out[key] = inner
        elif isinstance(item, (list, tuple)) and item and isinstance(item[0], dict):
            out[key] = [{k: v for k, v in e.items() if v is not None} for e in item]
        elif item is not None and item != default.get(key):
            out[key] = item
    return out


def config_toml(config: LiveConfig, path: Path | None = None) -> str:
    """``config`` as the TOML text of a configuration file that :func:`load_config` reads back
    equal: the settings that differ from the library's defaults (the rest follow the installed
    version's defaults), ``[[symbols]]`` and ``[feed] kind`` always; ``path`` (where it is
    written) goes into the opening comment.

    Raises
    ------
    ConfigError
        ``[nats] url`` carries a password (a secret never goes into the file: give that URL with
        ``--nats``).
    """
    import tomli_w

    if config.nats.url is not None and urlsplit(config.nats.url).password is not None:
        raise ConfigError(
            "[nats] url carries a password, which would be written to the configuration "
            "colmena up writes: give that URL with --nats instead"
        )
    default = msgspec.to_builtins(LiveConfig())
    del default["feed"]["kind"]  # always written: says which feed runs
    tables = _without_defaults(msgspec.to_builtins(config), default)
    # [[symbols]] blocks, as the documentation shows them (tomli_w would write a short array of
    # tables inline), between the tables before them and those after.
    keys = list(tables)
    cut = keys.index("symbols") if "symbols" in keys else len(keys)
    before = {k: tables[k] for k in keys[:cut]}
    after = {k: tables[k] for k in keys[cut + 1 :]}
    symbols = "".join(f"[[symbols]]\n{tomli_w.dumps(e)}\n" for e in tables.get("symbols", ()))
    again = f"colmena up --config {path}" if path is not None else "colmena up --config FILE"
    header = (
        "# The configuration colmena up built from its options; the services run with it.\n"
        f"# Edit it and start again with: {again}\n"
        "# Settings left out take the library's defaults (colmena.services.config). No secret is\n"
        "# written here: the PostgreSQL DSN comes from $COLMENA_DB_DSN or --db.\n\n"
    )
    first = tomli_w.dumps(before)
    return header + (first + "\n" if first else "") + symbols + tomli_w.dumps(after)


def write_config(config: LiveConfig, data_dir: Path, *, source: Path | None = None) -> Path:
    """Write ``config`` (:func:`config_toml`) to ``data_dir/colmena.toml`` atomically, and
    return that path.

    An existing file there is replaced only if it holds the same configuration or is ``source``
    (the ``--config`` file the options changed: its settings are in ``config``, its comments are
    not kept); another one is the user's (edited, or of another start) and is kept.

    Raises
    ------
    ConfigError
        The file exists with another configuration, or is no configuration (nothing written);
        ``config`` has a secret (:func:`config_toml`).
    OSError
        The file cannot be written (nothing left behind; an existing file untouched).
    """
    target = data_dir / CONFIG_FILE
    text = config_toml(config, target).encode()
    if target.exists() and not (
        source is not None and source.exists() and os.path.samefile(source, target)
    ):
        move = f"start from it with --config {target} (the options override it), or move it away"
        try:
            existing = load_config(target)
        except ConfigError as exc:
            raise ConfigError(f"{exc}: it is kept; {move}") from None
        if existing != config:
            raise ConfigError(f"{target} holds another configuration, which is kept: {move}")
    return write_atomically(target, lambda fh: fh.write(text))


# ---------------------------------------------------------------- the system


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
            with warnings.catch_warnings():
                # pgserver asks platformdirs for a runtime folder it does not use here; a machine
                # without $XDG_RUNTIME_DIR (a container, a CI job) would print a warning.
                warnings.filterwarnings("ignore", "XDG_RUNTIME_DIR is not set", UserWarning)
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


class UpNotRunningError(RuntimeError):
    """No ``colmena up`` runs on the data folder (the message says why)."""


def _is_colmena(pid: int) -> bool:
    """The process ``pid`` runs colmena (Linux: its command line; elsewhere: assumed)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return not Path("/proc/self").exists()
    except OSError:
        return False
    return b"colmena" in cmdline


def _alive(pid: int) -> bool:
    """The process exists and has not exited (an exited child not yet reaped by its parent, a
    zombie, has)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc (macOS): the signal check is all there is
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def stop_up(
    data_dir: Path, *, timeout: float = 120.0, sleep: Callable[[float], None] = time.sleep
) -> int:
    """Stop the ``colmena up`` of ``data_dir`` (``colmena down``): SIGTERM to its process
    (named in ``DATA_DIR/endpoints.json``), then wait until it has stopped its services and
    servers (its own graceful stop: each service finishes the message in hand and saves its
    state). Returns the pid stopped.

    Raises
    ------
    UpNotRunningError
        No endpoints file, or its process is gone or is not colmena's.
    TimeoutError
        Still running after ``timeout`` seconds (it keeps stopping; nothing is killed).
    """
    path = data_dir / ENDPOINTS_FILE
    try:
        pid = int(json.loads(path.read_text())["pid"])
    except FileNotFoundError:
        raise UpNotRunningError(f"{path} not found: no `colmena up` ran on {data_dir}") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UpNotRunningError(f"{path}: not a `colmena up` endpoints file ({exc})") from None
    if pid <= 0 or not _alive(pid) or not _is_colmena(pid):
        raise UpNotRunningError(f"the `colmena up` of {data_dir} (pid {pid}) is not running")
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            raise TimeoutError(f"`colmena up` (pid {pid}) still stopping after {timeout:g} s")
        sleep(0.2)
    return pid


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
