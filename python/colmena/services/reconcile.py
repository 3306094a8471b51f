"""Reconciliation of the execution service's records with a real venue, at start and periodically.

The design documents' runbook for a reconciliation difference (seeds/004, 6.5 "Discrepancia en
Reconciliación"): pause at once, get the venue's positions, compare with the records, find the
difference, correct the records when it is a synchronisation error, else look for lost trades.
This module does the automatic part, for each symbol of a
:class:`~colmena.live.venue.VenueExecutionHandler`:

- compare (:func:`reconcile`): first the orders whose fate the venue could not tell are looked up
  again; then the sleeve's position at the venue (the base asset's total balance less its
  ``reserves``, :meth:`VenueExecutionHandler.venue_position`) against the recorded position
  (what the handler's fills add up to), with ``position_tolerance`` base units of slack, and the
  number of open orders of the symbol at the venue (any client's) against the orders the
  records hold open;
- on a difference: the handler stops placing orders that add exposure until a reconciliation
  finds none (:attr:`VenueExecutionHandler.hold_reason`), an alert (a log line at error level and
  the metrics ``colmena_reconciliation_difference{symbol}`` = 1 and
  ``colmena_reconciliation_differences_total{symbol}``), and the result as a
  :class:`~colmena.live.wire.ReconciliationMessage`: the risk service turns a difference into a
  PAUSE of the symbol and the recorder writes every result to the audit (``live_reconciliation``).

:class:`Reconciler` runs it for the execution service: once at start, after the handlers were
rebuilt and before any new order (:func:`colmena.services.runner.serve`'s ``on_ready``), then
every ``reconcile_seconds``. A venue that cannot be reached is not a difference: it is logged and
tried again at the next period.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, ClassVar

from colmena.live import wire
from colmena.live.venue import VenueExecutionHandler, VenueUnavailableError

__all__ = ["Reconciler", "ReconciliationMetrics", "reconcile"]

log = logging.getLogger(__name__)


def reconcile(
    handler: VenueExecutionHandler, *, clock: Callable[[], int] = time.time_ns
) -> wire.ReconciliationMessage:
    """Compare ``handler``'s records with the venue (module text); returns the result as the
    message the execution service publishes. A difference sets the handler's ``hold_reason``;
    a result without one clears it. Holds the handler's lock: no order is placed meanwhile.

    Parameters
    ----------
    handler : VenueExecutionHandler
    clock : callable, default time.time_ns
        Wall clock, ns since the epoch: the result's ``checked_ns``.

    Raises
    ------
    VenueUnavailableError
        The venue could not be asked (nothing changes).
    """
    tolerance = handler.settings.position_tolerance
    with handler.lock:
        records = handler.records
        found_late = []
        for client_id in sorted(records.unresolved):
            order = handler.venue.lookup(handler.symbol, client_id)
            if order is not None:
                handler.learn(client_id, order)
                found_late.append(client_id)
        venue_position = handler.venue_position()
        venue_open = len(handler.venue.open_orders(handler.symbol))
        recorded_open = records.open_orders
        problems = []
        if abs(venue_position - records.position) > tolerance:
            problems.append(
                f"position: the venue holds {venue_position:.10g} {handler.base} for this "
                f"sleeve, the records {records.position:.10g} (tolerance {tolerance:g})"
            )
        if venue_open != recorded_open:
            problems.append(
                f"open orders: {venue_open} at the venue, {recorded_open} in the records"
            )
        if found_late:
            problems.append(
                f"orders the venue could not be asked about were found there: "
                f"{', '.join(found_late)}"
            )
        detail = "; ".join(problems)
        handler.hold_reason = detail or None
        return wire.ReconciliationMessage(
            symbol=handler.symbol,
            ts=handler.newest_ts or 0,
            checked_ns=clock(),
            venue_position=venue_position,
            recorded_position=records.position,
            venue_open_orders=venue_open,
            recorded_open_orders=recorded_open,
            difference=bool(problems),
            detail=detail,
        )


class ReconciliationMetrics:
    """The reconciliation's Prometheus metrics in ``registry`` (a daemon's,
    :attr:`colmena.services.health.ServiceMetrics.registry`): the gauge
    ``colmena_reconciliation_difference{symbol}`` (1 while the last reconciliation found a
    difference) and the counter ``colmena_reconciliation_differences_total{symbol}``.

    Raises
    ------
    ImportError
        prometheus-client is not installed (the ``live`` extra).
    """

    _of: ClassVar[weakref.WeakKeyDictionary[Any, ReconciliationMetrics]] = (
        weakref.WeakKeyDictionary()
    )

    @classmethod
    def of(cls, registry: Any) -> ReconciliationMetrics:
        """The metrics in ``registry``, made once (a service run again with the same health
        server finds them there)."""
        metrics = cls._of.get(registry)
        if metrics is None:
            metrics = cls._of[registry] = cls(registry)
        return metrics

    def __init__(self, registry: Any) -> None:
        from prometheus_client import Counter, Gauge

        self.difference = Gauge(
            "colmena_reconciliation_difference",
            "1 while the last reconciliation with the venue found a difference",
            ["symbol"],
            registry=registry,
        )
        self.differences = Counter(
            "colmena_reconciliation_differences",
            "Reconciliations with the venue that found a difference",
            ["symbol"],
            registry=registry,
        )

    def observe(self, result: wire.ReconciliationMessage) -> None:
        """Record one result."""
        self.difference.labels(symbol=result.symbol).set(1.0 if result.difference else 0.0)
        if result.difference:
            self.differences.labels(symbol=result.symbol).inc()


class Reconciler:
    """Reconciliation of every venue handler of an execution service (module text).

    Parameters
    ----------
    handlers : mapping of str to VenueExecutionHandler
    publish : callable
        ``await publish(result)`` for every result (the service publishes it on the bus).
    interval_seconds : float
        Between two rounds.
    metrics : ReconciliationMetrics, optional
    clock : callable, default time.time_ns
    """

    def __init__(
        self,
        handlers: Mapping[str, VenueExecutionHandler],
        publish: Callable[[wire.ReconciliationMessage], Awaitable[None]],
        *,
        interval_seconds: float,
        metrics: ReconciliationMetrics | None = None,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.handlers = dict(handlers)
        self.interval_seconds = interval_seconds
        self._publish = publish
        self._metrics = metrics
        self._clock = clock
        #: Rounds run and differences found.
        self.rounds = 0
        self.differences = 0

    async def run_once(self) -> list[wire.ReconciliationMessage]:
        """One round over every symbol (each in a worker thread: the venue's calls block);
        returns the results (a symbol whose venue could not be asked has none)."""
        results = []
        for symbol, handler in self.handlers.items():
            try:
                result = await asyncio.to_thread(reconcile, handler, clock=self._clock)
            except VenueUnavailableError as exc:
                log.error("reconciliation %s: the venue could not be asked: %s", symbol, exc)
                continue
            if result.difference:
                self.differences += 1
                log.error(
                    "reconciliation %s: DIFFERENCE with the venue: %s; orders adding exposure "
                    "are held and the risk service pauses the symbol (runbook: reconciliation "
                    "difference)", symbol, result.detail,
                )  # fmt: skip
            if self._metrics is not None:
                self._metrics.observe(result)
            await self._publish(result)
            results.append(result)
        self.rounds += 1
        return results

    async def run(self, stop: asyncio.Event) -> None:
        """A round every ``interval_seconds`` until ``stop`` is set (the first one after one
        interval: the one at start is :meth:`run_once`, called by the service)."""
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=self.interval_seconds)
            except asyncio.TimeoutError:  # the period passed (3.10: not the builtin)
                await self.run_once()
