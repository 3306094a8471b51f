"""The service processes of ``colmena serve ROLE``: each role built from the configuration file
(:mod:`colmena.services.config`) and run on the bus until it is told to stop.

- ``ingest``: the candle feed. ``kind = "replay"`` publishes the candle file's candles (checked
  by :func:`colmena.data.load_ohlcv`) at ``speed`` times real time (0: as fast as the stream
  takes them), resuming after the newest candle already in the stream, and exits when the file is
  done. (``kind = "exchange"``, polling through ccxt, is not built yet: a clear error.)
- ``strategy``, ``risk``, ``execution``: the handlers of :mod:`colmena.live.handlers` for every
  configured symbol, on :func:`colmena.services.runner.serve`.
- ``recorder``: :class:`colmena.services.recorder.Recorder`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from pathlib import Path
from typing import Final

import msgspec
import nats.js.errors

from colmena.data.ohlcv import load_ohlcv
from colmena.execution.trading_loop import Bar
from colmena.live import wire
from colmena.live.handlers import ExecutionHandler, RiskHandler, StrategyHandler
from colmena.persistence import checkpoint as checkpoints
from colmena.services import runner
from colmena.services.bus import STREAM, Bus, StreamLimits
from colmena.services.config import LiveConfig
from colmena.services.recorder import Recorder, StrategyRecordError
from colmena.services.runner import Handler

__all__ = ["ROLES", "ServiceError", "run_role"]

log = logging.getLogger(__name__)

#: Every role ``colmena serve`` runs.
ROLES: Final = ("ingest", "strategy", "risk", "execution", "recorder")


class ServiceError(RuntimeError):
    """A service cannot start with this configuration; the message says why."""


def _limits(config: LiveConfig) -> StreamLimits:
    s = config.stream
    return StreamLimits(
        max_age_seconds=s.max_age_seconds,
        max_bytes=s.max_bytes,
        duplicate_window_seconds=s.duplicate_window_seconds,
    )


async def _newest_candle_ts(bus: Bus, symbol: str) -> int | None:
    try:
        raw = await bus.jetstream.get_last_msg(STREAM, wire.subject("candle", symbol))
    except nats.js.errors.NotFoundError:
        return None
    message = wire.decode("candle", raw.data or b"")
    return message.ts


async def _ingest(bus: Bus, config: LiveConfig, stop: asyncio.Event) -> int:
    feed = config.feed
    if feed.kind != "replay":
        raise ServiceError('the exchange feed is not built yet: use [feed] kind = "replay"')
    if feed.path is None:
        raise ServiceError("[feed] path: no candle file to replay")
    if len(config.symbols) != 1:
        raise ServiceError("a replay feeds one symbol: give exactly one [[symbols]] entry")
    symbol = config.symbols[0].symbol
    candles = load_ohlcv(feed.path)
    if candles.interval_seconds != config.bar_seconds:
        raise ServiceError(
            f"{feed.path}: {candles.interval_seconds:g} s candles, but bar_seconds is "
            f"{config.bar_seconds}"
        )
    after = await _newest_candle_ts(bus, symbol)
    columns = [c.tolist() for c in (candles.ts, candles.open, candles.high, candles.low,
                                    candles.close, candles.volume)]  # fmt: skip
    published = 0
    for ts, o, h, lo, c, v in zip(*columns, strict=True):
        if stop.is_set():
            break
        if after is not None and ts <= after:
            continue  # already in the stream: a restarted feed resumes after it
        bar = Bar(ts=ts, open=o, high=h, low=lo, close=c, volume=v)
        await bus.publish(
            wire.CandleMessage(symbol=symbol, ts=ts, bar_seconds=config.bar_seconds, bar=bar)
        )
        published += 1
        if feed.speed > 0:
            await asyncio.sleep(config.bar_seconds / feed.speed)
    log.info("ingest: %d candles of %s published", published, symbol)
    return published


def _strategy_handlers(config: LiveConfig) -> dict[str, Handler]:
    handlers: dict[str, Handler] = {}
    for entry in config.symbols:
        report = checkpoints.LoadReport()
        try:
            state = checkpoints.load_path(entry.checkpoint, report=report)
        except (checkpoints.CheckpointError, OSError) as exc:
            raise ServiceError(f"{entry.symbol}: checkpoint {entry.checkpoint}: {exc}") from None
        assert report.path is not None
        digest = hashlib.sha256(Path(report.path).read_bytes()).hexdigest()
        handlers[entry.symbol] = StrategyHandler(
            state.to_model(), entry.symbol, digest, bar_seconds=config.bar_seconds
        )
    return handlers


def _handlers(role: str, config: LiveConfig, symbols: list[str]) -> dict[str, Handler]:
    config = msgspec.structs.replace(
        config, symbols=tuple(s for s in config.symbols if s.symbol in symbols)
    )
    if role == "strategy":
        return _strategy_handlers(config)
    if role == "risk":
        return {
            s.symbol: RiskHandler(
                s.symbol, config.risk, config.execution, bar_seconds=config.bar_seconds
            )
            for s in config.symbols
        }
    return {
        s.symbol: ExecutionHandler(s.symbol, config.execution, bar_seconds=config.bar_seconds)
        for s in config.symbols
    }


async def run_role(
    role: str,
    config: LiveConfig,
    nats_url: str,
    stop: asyncio.Event,
    *,
    db_dsn: str | None = None,
    partition: tuple[int, int] = (1, 1),
) -> int:
    """Run ``role`` until ``stop`` is set (``ingest``: until its file is done); returns the
    number of messages it published (ingest) or handled.

    ``partition=(i, n)``: a trading role handles only the symbols of instance ``i`` of ``n``
    (:func:`colmena.services.runner.partition`); the others run in other processes.

    Raises
    ------
    ServiceError
        A configuration this role cannot run (no symbols, a bad checkpoint, no database for the
        recorder, a feed that is not built).
    ConnectionError
        NATS (or PostgreSQL) cannot be reached.
    """
    if role not in ROLES:
        raise ServiceError(f"unknown role {role!r}; expected one of {', '.join(ROLES)}")
    if role != "recorder" and not config.symbols:
        raise ServiceError("no [[symbols]] in the configuration: nothing to run")
    trading = role in ("strategy", "risk", "execution")
    if partition != (1, 1) and not trading:
        raise ServiceError(f"--partition splits the symbols of a trading role, not {role}")
    try:
        mine = runner.partition([s.symbol for s in config.symbols], *partition)
    except ValueError as exc:
        raise ServiceError(str(exc)) from None
    if trading and not mine:
        raise ServiceError(
            f"partition {partition[0]}/{partition[1]} of {len(config.symbols)} symbols is empty: "
            "run fewer instances"
        )
    handlers = _handlers(role, config, mine) if trading else {}
    bus = await Bus.connect(nats_url, limits=_limits(config), name=f"colmena-{role}")
    try:
        if role == "ingest":
            return await _ingest(bus, config, stop)
        if role == "recorder":
            dsn = db_dsn or config.database_dsn()
            if dsn is None:
                raise ServiceError("the recorder needs a database: --db DSN or $COLMENA_DB_DSN")
            recorder = await Recorder.connect(dsn)
            try:
                try:  # the checkpoints and settings traded, for replay-audit
                    await recorder.record_strategies(config)
                except StrategyRecordError as exc:
                    raise ServiceError(str(exc)) from None
                return await recorder.run(bus, stop)
            finally:
                await recorder.close()
        return await runner.serve(bus, role, handlers, stop, lease_seconds=config.lease_seconds)
    finally:
        await bus.close()
