"""The service processes of ``colmena serve ROLE``: each role built from the configuration file
(:mod:`colmena.services.config`) and run on the bus until it is told to stop.

- ``ingest``: the candle feed of :mod:`colmena.services.feeds`. ``kind = "replay"`` publishes
  the candle files of every symbol merged in time order at ``speed`` times real time (0: as fast
  as the stream takes them) and exits when the files are done; ``kind = "exchange"`` polls the
  exchange through ccxt every ``poll_seconds`` for the closed candles until it is told to stop.
  Both resume after the newest candle of each symbol already in the stream.
- ``strategy``, ``risk``, ``execution``: the handlers of :mod:`colmena.live.handlers` for every
  configured symbol, on :func:`colmena.services.runner.serve`. With ``[venue] mode =
  "exchange"`` the execution service places real orders (:mod:`colmena.live.venue`) and
  reconciles with the venue at start and every ``reconcile_seconds``
  (:mod:`colmena.services.reconcile`), publishing each result.
- ``recorder``: :class:`colmena.services.recorder.Recorder`.

Every role serves ``/health`` and ``/metrics`` (:mod:`colmena.services.health`, ``[health]``).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from pathlib import Path
from typing import Final

import msgspec

from colmena.live import wire
from colmena.live.account import AccountGuard
from colmena.live.handlers import ExecutionHandler, RiskHandler, StrategyHandler
from colmena.live.venue import (
    VenueClient,
    VenueExecutionHandler,
    VenueUnavailableError,
    make_venue_client,
)
from colmena.persistence import checkpoint as checkpoints
from colmena.services import runner
from colmena.services.bus import Bus, StreamLimits
from colmena.services.config import LiveConfig
from colmena.services.feeds import ExchangeFeed, FeedError, ReplayFeed, make_feed
from colmena.services.health import Health, HealthError, instrument_exchange_client
from colmena.services.reconcile import Reconciler, ReconciliationMetrics
from colmena.services.recorder import Recorder, StrategyRecordError
from colmena.services.runner import Handler, SavedStateMismatchError
from colmena.services.state import StateError, StateStore

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


def _feed(config: LiveConfig, health: Health | None) -> ReplayFeed | ExchangeFeed:
    try:
        if health is None or config.feed.kind != "exchange":
            return make_feed(config)
        feed = make_feed(config, on_poll=health.metrics.on_poll)
    except FeedError as exc:
        raise ServiceError(str(exc)) from None
    # The feed's ccxt client, timed for the metrics.
    assert isinstance(feed, ExchangeFeed)
    instrument_exchange_client(feed.client, health.metrics, config.feed.exchange)
    return feed


def _health(role: str, config: LiveConfig, symbols: list[str], instance: int) -> Health | None:
    """The role's health server as ``[health]`` sets it (None: disabled)."""
    if not config.health.enabled:
        return None
    try:
        return Health(role, config.health, symbols, bar_seconds=config.bar_seconds,
                      check_candle_age=config.feed.kind == "exchange",
                      instance=instance)  # fmt: skip
    except HealthError as exc:
        raise ServiceError(str(exc)) from None


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
    """The role's handlers of ``symbols``; the risk and execution stages of each symbol run on
    its sleeve of the account (:meth:`LiveConfig.sleeve`)."""
    if role == "strategy":
        return _strategy_handlers(
            msgspec.structs.replace(
                config, symbols=tuple(s for s in config.symbols if s.symbol in symbols)
            )
        )
    if role == "risk":
        return {
            s: RiskHandler(s, config.risk, config.sleeve(s), bar_seconds=config.bar_seconds)
            for s in symbols
        }
    return {
        s: ExecutionHandler(s, config.sleeve(s), bar_seconds=config.bar_seconds) for s in symbols
    }


def _venue_handlers(
    config: LiveConfig, symbols: list[str], health: Health | None
) -> dict[str, VenueExecutionHandler]:
    """The execution handlers of ``symbols`` at the real venue of ``[venue]`` (its markets
    loaded: blocking calls)."""
    settings = config.venue
    try:
        client = make_venue_client(settings)
    except (ValueError, ImportError) as exc:
        raise ServiceError(f"venue: {exc}") from None
    on_call = None
    if health is not None:
        metrics = health.metrics

        def on_call(name: str, seconds: float, ok: bool) -> None:
            metrics.exchange_call(settings.exchange, seconds, connected=ok)

    venue = VenueClient(
        client,
        max_attempts=settings.max_attempts,
        backoff_seconds=settings.backoff_seconds,
        on_call=on_call,
    )
    try:
        return {
            s: VenueExecutionHandler(
                s, config.sleeve(s), venue, settings, bar_seconds=config.bar_seconds
            )
            for s in symbols
        }
    except (ValueError, VenueUnavailableError) as exc:
        raise ServiceError(f"venue: {exc}") from None


def account_guard(config: LiveConfig) -> AccountGuard:
    """The account's kill switch over every configured symbol's sleeve."""
    symbols = [s.symbol for s in config.symbols]
    return AccountGuard(
        symbols,
        config.risk,
        {s: config.sleeve(s).initial_cash for s in symbols},
        config.unallocated_cash(),
        bar_seconds=config.bar_seconds,
    )


async def run_role(
    role: str,
    config: LiveConfig,
    nats_url: str,
    stop: asyncio.Event,
    *,
    db_dsn: str | None = None,
    partition: tuple[int, int] = (1, 1),
    health: Health | None = None,
) -> int:
    """Run ``role`` until ``stop`` is set (``ingest`` with a replay feed: until its files are
    done); returns the number of messages it published (ingest) or handled.

    ``partition=(i, n)``: a trading role handles only the symbols of instance ``i`` of ``n``
    (:func:`colmena.services.runner.partition`); the others run in other processes.

    ``health``: a health server the caller started and stops (this function gives it the bus
    and the metrics); None: one made from ``[health]``, serving while the role runs.

    Raises
    ------
    ServiceError
        A configuration this role cannot run (no symbols, a bad checkpoint, no database for the
        recorder, a feed that cannot run: a missing or bad candle file, an exchange without
        these symbols).
    ConnectionError
        NATS (or PostgreSQL) cannot be reached.
    """
    if role not in ROLES:
        raise ServiceError(f"unknown role {role!r}; expected one of {', '.join(ROLES)}")
    if role != "recorder" and not config.symbols:
        raise ServiceError("no [[symbols]] in the configuration: nothing to run")
    trading = role in ("strategy", "risk", "execution")
    if partition != (1, 1) and role not in ("strategy", "execution"):
        raise ServiceError(
            f"--partition splits the symbols of the strategy or execution service, not {role}"
            + (" (it holds the account's kill switch over every symbol: run one)"
               if role == "risk" else "")
        )  # fmt: skip
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
    owned = health is None
    if health is None:
        watched = mine if trading else [s.symbol for s in config.symbols]
        health = _health(role, config, watched, partition[0])
    feed = _feed(config, health) if role == "ingest" else None  # checked before connecting
    try:
        if owned and health is not None:
            try:
                await health.start()
            except HealthError as exc:
                raise ServiceError(str(exc)) from None
        bus = await Bus.connect(
            nats_url,
            limits=_limits(config),
            name=f"colmena-{role}",
            credentials=config.nats.credentials_path(),
        )
    except BaseException:
        if feed is not None:
            await feed.close()
        if owned and health is not None:
            await health.stop()
        raise
    if health is not None:
        health.attach(bus)
    try:
        if feed is not None:
            try:
                return await feed.run(bus, stop)
            except FeedError as exc:
                raise ServiceError(str(exc)) from None
            finally:
                await feed.close()
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
        # The risk and execution state is kept in the state bucket (a HALT survives anything).
        store = await StateStore.open(bus) if role in ("risk", "execution") else None
        reconciler: Reconciler | None = None
        if role == "execution" and config.venue.mode == "exchange":
            venue_handlers = await asyncio.to_thread(_venue_handlers, config, mine, health)
            handlers = dict(venue_handlers)

            async def publish(result: wire.ReconciliationMessage) -> None:
                await bus.publish(result)

            reconciler = Reconciler(
                venue_handlers,
                publish,
                interval_seconds=config.venue.reconcile_seconds,
                metrics=ReconciliationMetrics.of(health.metrics.registry) if health else None,
            )
        periodic = asyncio.create_task(reconciler.run(stop)) if reconciler else None
        try:
            return await runner.serve(
                bus,
                role,
                handlers,
                stop,
                lease_seconds=config.lease_seconds,
                state=store,
                # One symbol: its sleeve's own kill switch is the account's.
                account=account_guard(config)
                if role == "risk" and len(config.symbols) > 1
                else None,
                on_handled=health.metrics.on_handled if health is not None else None,
                on_latency=health.metrics.on_latency if health is not None else None,
                # The venue's reconciliation at start: the records rebuilt, no order placed.
                on_ready=reconciler.run_once if reconciler is not None else None,
            )
        except (StateError, SavedStateMismatchError) as exc:
            raise ServiceError(str(exc)) from None
        finally:
            if periodic is not None:
                periodic.cancel()
                await asyncio.gather(periodic, return_exceptions=True)
    finally:
        if health is not None:
            health.attach(None)
            if owned:
                await health.stop()
        await bus.close()
