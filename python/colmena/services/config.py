"""The live system's one configuration file: TOML decoded strictly into frozen msgspec Structs.

Every field has a default, so an empty file is a valid configuration (paper trading the embedded
defaults); a wrong type, a value out of range or an unknown key is an error that names the file
and the field (``$.risk.kelly_window``). Secrets never come from the file: the PostgreSQL DSN is
read from ``$COLMENA_DB_DSN`` when the file names none, and a DSN in the file that carries a
password is refused (put it in the environment, or in a ``~/.pgpass`` file).

The feed (``[feed]``, :class:`FeedSettings`, run by :mod:`colmena.services.feeds`):

- ``kind = "replay"`` publishes candle files: each ``[[symbols]]`` entry's ``candles`` file (or,
  for a single symbol, ``[feed] path``), all symbols merged in time order, at ``speed`` times
  real time (0: as fast as the stream takes them).
- ``kind = "exchange"`` polls ``exchange`` through ccxt every ``poll_seconds`` seconds (default
  60) for the last ``limit`` candles (default 1000) of every symbol and publishes the closed ones
  it has not published yet. ``timeout_seconds`` bounds each request; a failed request is tried
  ``max_attempts`` times in all, with exponential backoff and full jitter from
  ``backoff_seconds``. ``api_url`` sends every REST call to another host (a proxy or a local test
  server). The public candle endpoints need no credentials, and none are read from this file.

Example::

    bar_seconds = 60
    strategy_instances = 1             # colmena up: strategy processes the symbols are split over

    [nats]
    url = "nats://127.0.0.1:4222"      # omitted: colmena up starts an embedded server

    [stream]
    max_age_seconds = 604800

    [[symbols]]
    symbol = "BTC/USDT"
    checkpoint = "colmena-run/checkpoints"
    candles = "btc.parquet"            # the replay feed's file of this symbol

    [[symbols]]
    symbol = "ETH/USDT"
    checkpoint = "colmena-run-eth/checkpoints"
    candles = "eth.parquet"

    [feed]
    kind = "replay"                    # or "exchange"
    speed = 0.0                        # replay: 0 = as fast as the services go
    exchange = "binance"               # exchange: the ccxt exchange id
    poll_seconds = 60.0                # exchange: one poll a minute ...
    limit = 1000                       # ... for the last 1000 candles (the design documents)

    [risk]
    max_leverage = 1.0

    [execution]
    fee_bps = 10.0

    [health]
    host = "127.0.0.1"                 # /health and /metrics of every daemon (the default)
    port = 9400                        # base port (0, the default: each picks a free one)

The ``[venue]`` section (:class:`colmena.live.venue.VenueSettings`): ``mode = "exchange"``
makes the execution service place real spot orders through ccxt
(:class:`colmena.live.venue.VenueExecutionHandler`) instead of paper trading, and reconcile with
the venue every ``reconcile_seconds`` (:mod:`colmena.services.reconcile`). The API key and secret
are read from the environment variables it names, never from this file::

    [venue]
    mode = "exchange"
    exchange = "binance"
    sandbox = true                     # the exchange's testnet
    api_key_env = "COLMENA_VENUE_API_KEY"
    api_secret_env = "COLMENA_VENUE_API_SECRET"
    reserves = { BTC = 0.0 }           # base units at the venue that are not the sleeves'
    reconcile_seconds = 60.0

The ``[health]`` section (:class:`HealthSettings`, served by :mod:`colmena.services.health`):
with ``port = P`` the daemons listen on P (ingest), P+1 (risk), P+2 (execution), P+3
(recorder) and P+3+I (strategy instance I of ``--partition I/N``); ``port = 0`` lets each
daemon pick a free port, which it logs.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from pathlib import Path
from typing import Annotated, Final, Literal

import msgspec

from colmena.data.exchange import api_url_problem
from colmena.execution.simulation import ExecutionSettings
from colmena.live import wire
from colmena.live.venue import VenueSettings
from colmena.risk.config import RiskConfig

__all__ = [
    "DB_DSN_ENV",
    "MAX_CONFIG_BYTES",
    "ConfigError",
    "DatabaseSettings",
    "FeedSettings",
    "HealthSettings",
    "LiveConfig",
    "NatsSettings",
    "StreamSettings",
    "SymbolSettings",
    "load_config",
]

#: Environment variable with the PostgreSQL DSN (the only place a password may be).
DB_DSN_ENV: Final = "COLMENA_DB_DSN"
#: Largest configuration file read, in bytes.
MAX_CONFIG_BYTES: Final = 1 << 20
# ccxt's exchange ids: "binance", "kraken", "gateio", "coinbase_advanced"...
_EXCHANGE_ID: Final = re.compile(r"[a-z][a-z0-9_]{0,63}")


class ConfigError(ValueError):
    """A configuration file that cannot be used; the message names the file and the field."""


class NatsSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``[nats]``: ``url`` of the server (``nats://host:port``); None: ``colmena up`` starts an
    embedded one. ``credentials``: the path of the service's NATS credentials file
    (:mod:`colmena.services.access`; ``colmena serve --credentials`` overrides it, and
    ``colmena up`` gives each service its own); None: ``$COLMENA_NATS_CREDENTIALS``, else none
    (a server without authorization). The file holds a secret: it is named here, never
    copied here."""

    url: str | None = None
    credentials: str | None = None

    def __post_init__(self) -> None:
        if self.url is not None and not self.url.startswith(("nats://", "tls://")):
            raise ValueError(f"url must start with nats:// or tls://, got {self.url!r}")
        if self.credentials is not None and not self.credentials:
            raise ValueError("credentials must name a credentials file (or be left out)")

    def credentials_path(self) -> Path | None:
        """The credentials file to use: ``credentials``, else ``$COLMENA_NATS_CREDENTIALS``,
        else None."""
        from colmena.services.access import CREDENTIALS_ENV

        named = self.credentials or os.environ.get(CREDENTIALS_ENV)
        return Path(named) if named else None


class DatabaseSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``[database]``: ``dsn`` of PostgreSQL without a password (None: ``$COLMENA_DB_DSN``, or
    an embedded server under ``colmena up``)."""

    dsn: str | None = None

    def __post_init__(self) -> None:
        if self.dsn is None:
            return
        try:
            from psycopg.conninfo import conninfo_to_dict
        except ImportError:
            raise ValueError(
                "dsn needs psycopg to be checked: pip install 'colmena-swarm[live]'"
            ) from None

        try:
            params = conninfo_to_dict(self.dsn)
        except Exception as exc:  # psycopg.ProgrammingError: a DSN it cannot parse
            raise ValueError(f"dsn is not a PostgreSQL connection string: {exc}") from None
        if params.get("password"):
            raise ValueError(
                f"dsn carries a password: put the DSN in ${DB_DSN_ENV} (or the password in "
                "~/.pgpass), never in the configuration file"
            )


class StreamSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``[stream]``: retention of the JetStream stream (see
    :class:`colmena.services.bus.StreamLimits`)."""

    max_age_seconds: Annotated[float, msgspec.Meta(gt=0.0, le=365 * 86_400.0)] = 7 * 86_400.0
    max_bytes: Annotated[int, msgspec.Meta(ge=1 << 20, le=1 << 44)] = 1 << 30
    duplicate_window_seconds: Annotated[float, msgspec.Meta(gt=0.0, le=7 * 86_400.0)] = 600.0


class SymbolSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One ``[[symbols]]`` entry: the market (ccxt's unified symbol), the checkpoint (file or
    folder: the newest valid checkpoint in it) its strategy runs, ``candles``: the candle
    file the replay feed publishes for it (None: ``[feed] path`` when this is the only symbol),
    and ``weight``: its sleeve, the fraction of the account's capital (``execution.initial_cash``)
    it trades, in (0, 1] (None: an equal share; give every symbol's or none;
    :mod:`colmena.live.account`)."""

    symbol: str
    checkpoint: str
    candles: str | None = None
    weight: Annotated[float, msgspec.Meta(gt=0.0, le=1.0)] | None = None

    def __post_init__(self) -> None:
        problems = []
        try:
            wire.check_symbol(self.symbol)
        except wire.WireError as exc:
            problems.append(str(exc))
        if not self.checkpoint:
            problems.append("checkpoint must name a checkpoint file or folder")
        if self.candles is not None and not self.candles:
            problems.append("candles must name a candle file (or be left out)")
        if problems:
            raise ValueError("; ".join(problems))


class FeedSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``[feed]``: where candles come from (:mod:`colmena.services.feeds`).

    Attributes
    ----------
    kind : {"replay", "exchange"}
        ``replay``: candle files; ``exchange``: ccxt polling.
    path : str or None
        Replay: the candle file of the only ``[[symbols]]`` entry (several symbols name theirs
        with ``candles``).
    speed : float
        Replay: times real time, in [0, 1e6]; one bar is ``bar_seconds / speed`` seconds of
        waiting (0: no waiting, as fast as the stream takes the candles).
    exchange : str
        Exchange: ccxt's exchange id (``binance``, ``kraken``...).
    poll_seconds : float
        Exchange: seconds from the start of one poll to the start of the next, in [1, 3600]
        (default 60, the design documents' micro-polling).
    limit : int
        Exchange: candles asked for per symbol and poll, in [2, 1000] (default 1000: the last
        1000 minutes of one-minute candles). A feed down for longer loses candles it cannot
        fetch back; the log says how many.
    api_url : str or None
        Exchange: ``http(s)://host[:port]`` every REST call goes to instead of the exchange's own
        host (a proxy, a local test server); no credentials in it.
    timeout_seconds : float
        Exchange: limit of each request in seconds, in (0, 120].
    max_attempts : int
        Exchange: tries of one request (network errors, timeouts, HTTP 5xx, rate limiting)
        before the poll gives up on that symbol until the next poll, in [1, 20].
    backoff_seconds : float
        Exchange: base of the exponential backoff between tries, with full jitter, capped at
        30 s, in [0, 60].
    """

    kind: Literal["replay", "exchange"] = "replay"
    path: str | None = None
    speed: Annotated[float, msgspec.Meta(ge=0.0, le=1e6)] = 0.0
    exchange: str = "binance"
    poll_seconds: Annotated[float, msgspec.Meta(ge=1.0, le=3_600.0)] = 60.0
    limit: Annotated[int, msgspec.Meta(ge=2, le=1_000)] = 1_000
    api_url: str | None = None
    timeout_seconds: Annotated[float, msgspec.Meta(gt=0.0, le=120.0)] = 10.0
    max_attempts: Annotated[int, msgspec.Meta(ge=1, le=20)] = 5
    backoff_seconds: Annotated[float, msgspec.Meta(ge=0.0, le=60.0)] = 1.0

    def __post_init__(self) -> None:
        problems = []
        if self.path is not None and not self.path:
            problems.append("path must name a candle file (or be left out)")
        if _EXCHANGE_ID.fullmatch(self.exchange) is None:
            problems.append(
                f"exchange {self.exchange!r} is not a ccxt exchange id (lower-case letters, "
                "digits and '_', e.g. 'binance')"
            )
        if self.api_url is not None and (problem := api_url_problem(self.api_url)):
            problems.append(problem)
        if problems:
            raise ValueError("; ".join(problems))


class HealthSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``[health]``: the HTTP endpoints ``/health`` and ``/metrics`` of every daemon
    (:mod:`colmena.services.health`).

    Attributes
    ----------
    enabled : bool
        Serve them (default True).
    host : str
        IP address to listen on (default ``127.0.0.1``: reachable from this machine only; a
        wider address such as ``0.0.0.0`` must be asked for).
    port : int
        Base port in [0, 65535]; the roles take fixed offsets from it (the module's text).
        0 (default): every daemon picks a free port and logs it.
    max_consumer_lag : int
        Ready only while every durable consumer of the daemon has at most this many messages
        pending, in [0, 1e9] (default 1000).
    max_candle_age_seconds : float
        With the exchange feed, ready only while the newest candle in the stream closed at most
        this many seconds ago, in (0, 86400] (default 300, the design documents' "no candle for
        5 minutes"); a replay's candles are old by nature and not checked.
    """

    enabled: bool = True
    host: str = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=0, le=65_535)] = 0
    max_consumer_lag: Annotated[int, msgspec.Meta(ge=0, le=1_000_000_000)] = 1_000
    max_candle_age_seconds: Annotated[float, msgspec.Meta(gt=0.0, le=86_400.0)] = 300.0

    def __post_init__(self) -> None:
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            raise ValueError(
                f"host must be an IP address to listen on (127.0.0.1, ::1, 0.0.0.0), "
                f"got {self.host!r}"
            ) from None


class LiveConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The whole file. ``bar_seconds``: candle length (60: one-minute candles).
    ``strategy_instances``: how many strategy processes ``colmena up`` splits the symbols over
    (``colmena serve strategy --partition I/N``). ``lease_seconds``: how long a dead service's
    hold on its symbols outlives it (:mod:`colmena.services.leases`; the same for every
    instance)."""

    bar_seconds: Annotated[int, msgspec.Meta(ge=1, le=86_400)] = 60
    strategy_instances: Annotated[int, msgspec.Meta(ge=1, le=1_024)] = 1
    lease_seconds: Annotated[float, msgspec.Meta(ge=1.0, le=3_600.0)] = 10.0
    nats: NatsSettings = msgspec.field(default_factory=NatsSettings)
    database: DatabaseSettings = msgspec.field(default_factory=DatabaseSettings)
    stream: StreamSettings = msgspec.field(default_factory=StreamSettings)
    symbols: tuple[SymbolSettings, ...] = ()
    feed: FeedSettings = msgspec.field(default_factory=FeedSettings)
    risk: RiskConfig = msgspec.field(default_factory=RiskConfig)
    execution: ExecutionSettings = msgspec.field(default_factory=ExecutionSettings)
    health: HealthSettings = msgspec.field(default_factory=HealthSettings)
    venue: VenueSettings = msgspec.field(default_factory=VenueSettings)

    def __post_init__(self) -> None:
        problems = []
        names = [s.symbol for s in self.symbols]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            problems.append(f"symbols repeated: {', '.join(repeated)}")
        if self.feed.kind == "replay" and self.feed.path is not None:
            if len(self.symbols) > 1:
                problems.append(
                    f"feed.path names the candle file of a single symbol, and there are "
                    f"{len(self.symbols)}: give each [[symbols]] entry its own candles"
                )
            elif self.symbols and self.symbols[0].candles is not None:
                problems.append(
                    "feed.path and symbols[0].candles both name a candle file: give one"
                )
        weights = [s.weight for s in self.symbols]
        if any(w is None for w in weights) and any(w is not None for w in weights):
            problems.append("symbols: give every symbol's weight or none (none: equal sleeves)")
        elif weights and all(w is not None for w in weights):
            total = math.fsum(w for w in weights if w is not None)
            if total > 1.0 + 1e-12:
                problems.append(f"symbols: the weights add up to {total:g}, more than 1")
        if self.symbols and self.strategy_instances > len(self.symbols):
            problems.append(
                f"strategy_instances={self.strategy_instances} is more than the "
                f"{len(self.symbols)} symbols: an instance would have nothing to run"
            )
        if problems:
            raise ValueError("; ".join(problems))

    def weight(self, symbol: str) -> float:
        """``symbol``'s share of the account's capital (its ``weight``, or an equal share).

        Raises
        ------
        KeyError
            A symbol not in the configuration.
        """
        for s in self.symbols:
            if s.symbol == symbol:
                return s.weight if s.weight is not None else 1.0 / len(self.symbols)
        raise KeyError(symbol)

    def sleeve(self, symbol: str) -> ExecutionSettings:
        """The execution settings ``symbol`` trades under: the account's, with its sleeve of
        the starting capital (``initial_cash`` times :meth:`weight`)."""
        return msgspec.structs.replace(
            self.execution, initial_cash=self.execution.initial_cash * self.weight(symbol)
        )

    def unallocated_cash(self) -> float:
        """Starting capital no sleeve holds (quote currency; 0 with equal sleeves)."""
        held = math.fsum(self.execution.initial_cash * self.weight(s.symbol) for s in self.symbols)
        return max(0.0, self.execution.initial_cash - held)

    def database_dsn(self) -> str | None:
        """The DSN to use: the file's, else ``$COLMENA_DB_DSN``, else None (embedded)."""
        return self.database.dsn or os.environ.get(DB_DSN_ENV) or None


def load_config(path: str | os.PathLike[str]) -> LiveConfig:
    """Read and check the configuration file at ``path``.

    Raises
    ------
    ConfigError
        Not a regular file, larger than :data:`MAX_CONFIG_BYTES`, not UTF-8 TOML, or a field
        that is wrong (the message names the file and the field, ``$.risk.kelly_window``).
    """
    file = Path(path)
    try:
        if not file.is_file():
            raise ConfigError(f"{file}: not a regular file")
        if file.stat().st_size > MAX_CONFIG_BYTES:
            raise ConfigError(f"{file}: larger than {MAX_CONFIG_BYTES} bytes")
        data = file.read_bytes()[: MAX_CONFIG_BYTES + 1]
    except OSError as exc:
        raise ConfigError(f"{file}: cannot be read: {exc.strerror or exc}") from None
    try:
        return msgspec.toml.decode(data, type=LiveConfig)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{file}: {exc}") from None
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{file}: not valid TOML: {exc}") from None
