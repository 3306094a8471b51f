"""Health and metrics of every daemon: ``/health`` and ``/metrics`` over HTTP.

Every ``colmena serve ROLE`` serves, on ``[health] host`` (127.0.0.1 by default) and its port
(:class:`colmena.services.config.HealthSettings`; :func:`role_port`):

- ``GET /health/live``: 200 while the daemon's event loop answers (liveness).
- ``GET /health``: readiness as JSON, status 200 when ready and 503 when not. Ready means: the
  NATS connection is up, every durable consumer of the daemon has at most ``max_consumer_lag``
  messages pending, and (with the exchange feed) the newest candle of every symbol in the stream
  closed at most ``max_candle_age_seconds`` ago. The body lists each figure and every reason it
  is not ready.
- ``GET /metrics``: the Prometheus text format, written by ``prometheus-client`` from the
  daemon's own registry (:class:`ServiceMetrics`, names below).

The HTTP side is aiohttp's server on the daemon's own event loop, so a daemon whose loop is stuck
stops answering (what a liveness probe is for). The figures read from NATS (connection, consumer
lag, newest candle) are read when ``/health`` or ``/metrics`` is asked for.

Metrics (``colmena_`` prefix, units in the names, Prometheus conventions); all are fed from points
the services already have, nothing of the trading logic is computed again here:

- ``colmena_drawdown_ratio{symbol}`` (gauge): ``RiskStateMessage.drawdown_from_high``, the
  drawdown from the all-time high of equity (the drawdown alerts' reference), fraction.
- ``colmena_ladder_drawdown_ratio{symbol}`` (gauge): ``RiskStateMessage.drawdown``, from the
  circuit-breaker ladder's peak, fraction.
- ``colmena_daily_pnl_ratio{symbol}`` (gauge): ``RiskStateMessage.daily_pnl``, fraction.
- ``colmena_equity_quote{symbol}`` (gauge): ``RiskStateMessage.equity``, quote currency.
- ``colmena_trading_state{symbol,state}`` (gauge): 1 for the current one of ACTIVE, REDUCING,
  PAUSED, HALTED (``RiskStateMessage.state``), 0 for the others.
- ``colmena_newest_candle_timestamp_seconds{symbol}`` (gauge): close time of the newest candle
  in the stream, s since the epoch.
- ``colmena_exchange_connected{exchange}`` (gauge, ingest): 1 when the last exchange call got
  an answer, 0 after a network error.
- ``colmena_exchange_api_latency_seconds{exchange}`` (histogram, ingest): each exchange call.
- ``colmena_decision_latency_seconds{role}`` (histogram): one message from its delivery to its
  ack (handler, outputs published, state saved).
- ``colmena_consumer_lag_messages{role,kind,symbol}`` (gauge): messages not yet delivered to
  the daemon's durable consumers (symbol ``*`` for the recorder's).
- ``colmena_messages_handled_total{role,kind}``, ``colmena_messages_published_total{role,kind}``
  (counters).
- ``colmena_nats_connected``, ``colmena_ready`` (gauges): 1 while the NATS connection is up;
  1 when ``/health`` last said ready.

plus the ``process_*`` and ``python_*`` collectors of prometheus-client. The alert rules on these
and a Grafana dashboard ship in the package, in ``colmena/services/monitoring/``
(``prometheus/colmena-alerts.yml``, ``grafana/colmena-dashboard.json``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import nats.errors
import nats.js.errors
from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

from colmena.live import wire
from colmena.services.bus import STREAM, Bus
from colmena.services.config import HealthSettings
from colmena.services.feeds import PollReport, newest_published_ts
from colmena.services.runner import ROLE_INPUTS, durable_name

__all__ = [
    "TRADING_STATES",
    "Health",
    "HealthError",
    "HealthReport",
    "ServiceMetrics",
    "instrument_exchange_client",
    "role_port",
]

log = logging.getLogger(__name__)

#: The trading states :data:`colmena_trading_state` has a series of.
TRADING_STATES: Final = ("ACTIVE", "REDUCING", "PAUSED", "HALTED")
#: Offset of each role's port from ``[health] port`` (strategy instance I: 3 + I).
_PORT_OFFSETS: Final = {"ingest": 0, "risk": 1, "execution": 2, "recorder": 3, "strategy": 3}
#: Limit of each NATS request made for a health figure, s (hang detection).
_NATS_TIMEOUT_SECONDS: Final = 2.0
_LATENCY_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_API_BUCKETS: Final = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class HealthError(RuntimeError):
    """The health server cannot start (its address cannot be bound); the message says which."""


def role_port(settings: HealthSettings, role: str, instance: int = 1) -> int:
    """The port ``role`` (instance ``instance`` of a partitioned strategy) listens on: 0 when
    ``settings.port`` is 0 (a free port, picked when binding), else the base port plus the
    role's offset (ingest 0, risk 1, execution 2, recorder 3, strategy 3 + instance).

    Raises
    ------
    HealthError
        An unknown role, or a port past 65535.
    """
    if role not in _PORT_OFFSETS:
        raise HealthError(f"unknown role {role!r}; expected one of {sorted(_PORT_OFFSETS)}")
    if settings.port == 0:
        return 0
    port = settings.port + _PORT_OFFSETS[role] + (instance if role == "strategy" else 0)
    if port > 65_535:
        raise HealthError(
            f"health.port {settings.port}: {role} (instance {instance}) would listen on {port}, "
            "past 65535; choose a lower base port"
        )
    return port


class ServiceMetrics:
    """The Prometheus metrics of one daemon, in a registry of their own (module text: names).

    Parameters
    ----------
    role : str
        The daemon's role (the ``role`` label).
    registry : prometheus_client.CollectorRegistry, optional
        Where the metrics are registered (default: a new one, with the process and platform
        collectors).
    """

    def __init__(self, role: str, *, registry: CollectorRegistry | None = None) -> None:
        self.role = role
        if registry is None:
            registry = CollectorRegistry()
            ProcessCollector(registry=registry)
            PlatformCollector(registry=registry)
            GCCollector(registry=registry)
        self.registry = registry
        r = registry
        self.drawdown = Gauge(
            "colmena_drawdown_ratio",
            "Drawdown from the all-time high of equity at the last close (fraction)",
            ["symbol"],
            registry=r,
        )
        self.ladder_drawdown = Gauge(
            "colmena_ladder_drawdown_ratio",
            "Drawdown from the circuit-breaker ladder's peak equity at the last close (fraction)",
            ["symbol"],
            registry=r,
        )
        self.daily_pnl = Gauge("colmena_daily_pnl_ratio", "PnL of the UTC day so far (fraction "
                               "of the day's starting equity)", ["symbol"], registry=r)  # fmt: skip
        self.equity = Gauge("colmena_equity_quote", "Equity at the last close (quote currency)",
                            ["symbol"], registry=r)  # fmt: skip
        self.trading_state = Gauge(
            "colmena_trading_state",
            "1 for the current trading state of the symbol, else 0",
            ["symbol", "state"],
            registry=r,
        )
        self.newest_candle = Gauge(
            "colmena_newest_candle_timestamp_seconds",
            "Close time of the newest candle in the stream (s since the epoch)",
            ["symbol"],
            registry=r,
        )
        self.exchange_connected = Gauge(
            "colmena_exchange_connected",
            "1 when the last exchange call got an answer, 0 after a network error",
            ["exchange"],
            registry=r,
        )
        self.api_latency = Histogram(
            "colmena_exchange_api_latency_seconds",
            "Duration of each exchange API call (s)",
            ["exchange"],
            buckets=_API_BUCKETS,
            registry=r,
        )
        self.decision_latency = Histogram(
            "colmena_decision_latency_seconds",
            "Handling of one message: handler, outputs published, state saved, ack (s)",
            ["role"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.consumer_lag = Gauge(
            "colmena_consumer_lag_messages",
            "Messages pending in the daemon's durable consumers",
            ["role", "kind", "symbol"],
            registry=r,
        )
        self.handled = Counter("colmena_messages_handled", "Messages handled",
                               ["role", "kind"], registry=r)  # fmt: skip
        self.published = Counter("colmena_messages_published", "Messages published",
                                 ["role", "kind"], registry=r)  # fmt: skip
        self.nats_connected = Gauge("colmena_nats_connected", "1 while the NATS connection is up",
                                    registry=r)  # fmt: skip
        self.ready = Gauge("colmena_ready", "1 when /health says ready", registry=r)

    def on_handled(self, message: wire.WireMessage, outputs: Sequence[wire.WireMessage]) -> None:
        """Count a handled message and its outputs, and take the risk state from any
        :class:`~colmena.live.wire.RiskStateMessage` among them (the ``on_handled`` callback
        of :func:`colmena.services.runner.serve`)."""
        self.handled.labels(self.role, message.__struct_config__.tag).inc()
        for out in outputs:
            self.published.labels(self.role, out.__struct_config__.tag).inc()
            if isinstance(out, wire.RiskStateMessage):
                self.observe_risk_state(out)

    def observe_risk_state(self, state: wire.RiskStateMessage) -> None:
        """Set the risk gauges of ``state.symbol`` from the risk service's state message."""
        symbol = state.symbol
        self.drawdown.labels(symbol).set(state.drawdown_from_high)
        self.ladder_drawdown.labels(symbol).set(state.drawdown)
        self.daily_pnl.labels(symbol).set(state.daily_pnl)
        self.equity.labels(symbol).set(state.equity)
        for name in TRADING_STATES:
            self.trading_state.labels(symbol, name).set(1.0 if name == state.state else 0.0)

    def on_latency(self, message: wire.WireMessage, seconds: float) -> None:
        """Observe the handling time of one message (the ``on_latency`` callback of
        :func:`colmena.services.runner.serve`), in seconds."""
        self.decision_latency.labels(self.role).observe(seconds)

    def on_poll(self, report: PollReport) -> None:
        """Count the candles one poll of the exchange feed published (its ``on_poll``)."""
        published = report.published
        if published:
            self.published.labels(self.role, "candle").inc(published)

    def exchange_call(self, exchange: str, seconds: float, *, connected: bool) -> None:
        """Record one exchange call: its duration (s) and whether it got an answer."""
        self.api_latency.labels(exchange).observe(seconds)
        self.exchange_connected.labels(exchange).set(1.0 if connected else 0.0)


def instrument_exchange_client(client: Any, metrics: ServiceMetrics, exchange: str) -> None:
    """Time every HTTP call of a ccxt asyncio client: ``client.fetch`` (ccxt's one request
    method, under every public call) is wrapped so that each call is observed in
    ``colmena_exchange_api_latency_seconds`` and sets ``colmena_exchange_connected`` (0 after a
    ``ccxt.NetworkError``: a timeout, an unreachable host, HTTP 5xx or 429; 1 after any answer).
    The call's result or error passes through unchanged."""
    import ccxt

    call = client.fetch
    clock = time.perf_counter

    async def fetch(*args: Any, **kwargs: Any) -> Any:
        started = clock()
        try:
            result = await call(*args, **kwargs)
        except ccxt.NetworkError:
            metrics.exchange_call(exchange, clock() - started, connected=False)
            raise
        except ccxt.BaseError:  # the exchange answered (an API error)
            metrics.exchange_call(exchange, clock() - started, connected=True)
            raise
        metrics.exchange_call(exchange, clock() - started, connected=True)
        return result

    client.fetch = fetch


@dataclass
class HealthReport:
    """What ``/health`` answers.

    Attributes
    ----------
    role : str
    ready : bool
        Every check passed.
    nats_connected : bool
    consumer_lag : dict of str to int
        Messages in the stream not yet delivered to each durable consumer (by name); a consumer
        not created yet is left out.
    newest_candle_age_seconds : dict of str to float or None
        Per symbol: seconds since the newest candle in the stream closed (None: none yet).
    problems : list of str
        Why it is not ready (empty when ready).
    """

    role: str
    ready: bool = False
    nats_connected: bool = False
    consumer_lag: dict[str, int] = field(default_factory=dict)
    newest_candle_age_seconds: dict[str, float | None] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


class Health:
    """The ``/health`` and ``/metrics`` endpoints of one daemon.

    Parameters
    ----------
    role : str
        The daemon's role (``ingest``, ``strategy``, ``risk``, ``execution``, ``recorder``).
    settings : HealthSettings
        ``[health]``: address, port (:func:`role_port`), readiness limits.
    symbols : sequence of str
        The symbols whose consumers and candles this daemon watches.
    bar_seconds : int
        Candle length (s): a candle closes ``bar_seconds`` after its open time.
    check_candle_age : bool
        Whether readiness asks for fresh candles (True with the exchange feed; a replay's
        candles are old by nature).
    instance : int
        Instance of a partitioned strategy (its port).
    metrics : ServiceMetrics, optional
        Default: new ones for ``role``.
    clock : callable, default time.time
        Now, s since the epoch (candle age).

    Use ``async with health: ...`` (or :meth:`start` / :meth:`stop`); give it the bus
    with :meth:`attach` once connected.
    """

    def __init__(
        self,
        role: str,
        settings: HealthSettings,
        symbols: Sequence[str],
        *,
        bar_seconds: int = 60,
        check_candle_age: bool = False,
        instance: int = 1,
        metrics: ServiceMetrics | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.role = role
        self.settings = settings
        self.symbols = tuple(symbols)
        self.bar_seconds = bar_seconds
        self.check_candle_age = check_candle_age
        self.metrics = metrics or ServiceMetrics(role)
        self._requested_port = role_port(settings, role, instance)
        self._clock = clock
        self._bus: Bus | None = None
        self._runner: web.AppRunner | None = None
        self.port: int | None = None  #: The port listened on, once started.
        self.address: tuple[str, int] | None = None  #: (host, port) listened on, once started.

    def attach(self, bus: Bus | None) -> None:
        """The daemon's bus (None: detached, not ready)."""
        self._bus = bus

    def _durables(self) -> list[tuple[str, str, str]]:
        """(durable name, kind, symbol label) of every consumer of the role."""
        if self.role == "recorder":
            return [(f"recorder-{kind}", kind, "*") for kind in wire.MESSAGE_TYPES]
        kinds = ROLE_INPUTS.get(self.role, ())
        return [(durable_name(self.role, k, s), k, s) for s in self.symbols for k in kinds]

    async def check(self) -> HealthReport:
        """Read the figures from NATS, update the gauges and say whether the daemon is ready."""
        report = HealthReport(role=self.role)
        bus = self._bus
        report.nats_connected = bus is not None and bus.connected
        self.metrics.nats_connected.set(1.0 if report.nats_connected else 0.0)
        if bus is None or not report.nats_connected:
            report.problems.append("not connected to NATS")
        else:
            await self._read_nats(bus, report)
        report.ready = not report.problems
        self.metrics.ready.set(1.0 if report.ready else 0.0)
        return report

    async def _read_nats(self, bus: Bus, report: HealthReport) -> None:
        limit = self.settings.max_consumer_lag
        try:
            for durable, kind, symbol in self._durables():
                try:
                    info = await bus.jetstream.consumer_info(
                        STREAM, durable, timeout=_NATS_TIMEOUT_SECONDS
                    )
                except nats.js.errors.NotFoundError:
                    continue  # not created yet: nothing pending for it
                lag = int(info.num_pending or 0)
                report.consumer_lag[durable] = lag
                self.metrics.consumer_lag.labels(self.role, kind, symbol).set(lag)
                if lag > limit:
                    report.problems.append(f"consumer {durable}: {lag} messages pending > {limit}")
            now = self._clock()
            for symbol in self.symbols:
                ts = await asyncio.wait_for(
                    newest_published_ts(bus, symbol), timeout=_NATS_TIMEOUT_SECONDS
                )
                if ts is None:
                    report.newest_candle_age_seconds[symbol] = None
                    if self.check_candle_age:
                        report.problems.append(f"{symbol}: no candle in the stream")
                    continue
                closed = ts / 1e9 + self.bar_seconds
                self.metrics.newest_candle.labels(symbol).set(closed)
                age = max(0.0, now - closed)
                report.newest_candle_age_seconds[symbol] = age
                if self.check_candle_age and age > self.settings.max_candle_age_seconds:
                    report.problems.append(
                        f"{symbol}: newest candle closed {age:.0f} s ago > "
                        f"{self.settings.max_candle_age_seconds:g} s"
                    )
        except (nats.errors.Error, TimeoutError, asyncio.TimeoutError) as exc:
            report.problems.append(f"NATS did not answer: {exc or type(exc).__name__}")

    async def _health(self, request: web.Request) -> web.Response:
        report = await self.check()
        body = json.dumps(report.__dict__)
        return web.Response(
            text=body, status=200 if report.ready else 503, content_type="application/json"
        )

    async def _live(self, request: web.Request) -> web.Response:
        return web.json_response({"role": self.role, "live": True})

    async def _metrics(self, request: web.Request) -> web.Response:
        await self.check()
        return web.Response(
            body=generate_latest(self.metrics.registry),
            headers={"Content-Type": CONTENT_TYPE_LATEST},
        )

    async def start(self) -> int:
        """Listen on ``[health] host`` and the role's port; returns the port (the one picked
        when the port is 0), also logged.

        Raises
        ------
        HealthError
            The address cannot be bound (in use, not this machine's).
        """
        if self._runner is not None:
            raise RuntimeError("the health server is already running")
        app = web.Application()
        app.router.add_get("/health", self._health)
        app.router.add_get("/health/live", self._live)
        app.router.add_get("/metrics", self._metrics)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        host = self.settings.host
        try:
            await web.TCPSite(runner, host, self._requested_port).start()
        except OSError as exc:
            await runner.cleanup()
            raise HealthError(
                f"health: cannot listen on {host} port {self._requested_port}: "
                f"{exc.strerror or exc} (change [health] port)"
            ) from None
        self._runner = runner
        host_bound, port = runner.addresses[0][:2]
        self.address = (str(host_bound), int(port))
        self.port = int(port)
        log.info("%s: /health and /metrics on http://%s:%d", self.role,
                 f"[{host}]" if ":" in host else host, self.port)  # fmt: skip
        return self.port

    async def stop(self) -> None:
        """Stop listening (idempotent)."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> Health:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
