"""The live system's one configuration file: TOML decoded strictly into frozen msgspec Structs.

Every field has a default, so an empty file is a valid configuration (paper trading the embedded
defaults); a wrong type, a value out of range or an unknown key is an error that names the file
and the field (``$.risk.kelly_window``). Secrets never come from the file: the PostgreSQL DSN is
read from ``$COLMENA_DB_DSN`` when the file names none, and a DSN in the file that carries a
password is refused (put it in the environment, or in a ``~/.pgpass`` file).

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

    [feed]
    kind = "replay"
    path = "candles.parquet"
    speed = 0.0                        # 0: as fast as the services go

    [risk]
    max_leverage = 1.0

    [execution]
    fee_bps = 10.0
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Final, Literal

import msgspec

from colmena.execution.simulation import ExecutionSettings
from colmena.live import wire
from colmena.risk.config import RiskConfig

__all__ = [
    "DB_DSN_ENV",
    "MAX_CONFIG_BYTES",
    "ConfigError",
    "DatabaseSettings",
    "FeedSettings",
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


class ConfigError(ValueError):
    """A configuration file that cannot be used; the message names the file and the field."""


class NatsSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``[nats]``: ``url`` of the server (``nats://host:port``); None: ``colmena up`` starts an
    embedded one."""

    url: str | None = None

    def __post_init__(self) -> None:
        if self.url is not None and not self.url.startswith(("nats://", "tls://")):
            raise ValueError(f"url must start with nats:// or tls://, got {self.url!r}")


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
    """One ``[[symbols]]`` entry: the market (ccxt's unified symbol) and the checkpoint (file or
    folder: the newest valid checkpoint in it) its strategy runs."""

    symbol: str
    checkpoint: str

    def __post_init__(self) -> None:
        wire.check_symbol(self.symbol)
        if not self.checkpoint:
            raise ValueError("checkpoint must name a checkpoint file or folder")


class FeedSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``[feed]``: where candles come from.

    ``kind = "replay"``: the candle file ``path`` (None: the bundled sample), at ``speed`` times
    real time (0: as fast as the services take them). ``kind = "exchange"``: ccxt's
    ``exchange``, polled every ``poll_seconds`` for the last ``limit`` candles (the design
    documents: every 60 s, the last 1000), deduplicated by open time.
    """

    kind: Literal["replay", "exchange"] = "replay"
    path: str | None = None
    speed: Annotated[float, msgspec.Meta(ge=0.0, le=1e6)] = 0.0
    exchange: str = "binance"
    poll_seconds: Annotated[float, msgspec.Meta(ge=1.0, le=3_600.0)] = 60.0
    limit: Annotated[int, msgspec.Meta(ge=1, le=1_000)] = 1_000


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

    def __post_init__(self) -> None:
        names = [s.symbol for s in self.symbols]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"symbols repeated: {', '.join(repeated)}")
        if self.symbols and self.strategy_instances > len(self.symbols):
            raise ValueError(
                f"strategy_instances={self.strategy_instances} is more than the "
                f"{len(self.symbols)} symbols: an instance would have nothing to run"
            )

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
