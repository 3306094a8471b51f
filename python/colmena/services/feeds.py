"""The candle feeds of the ingest service (``colmena serve ingest``): candle files replayed
(:class:`ReplayFeed`) or an exchange polled through ccxt (:class:`ExchangeFeed`), each candle
published once on the bus as a :class:`colmena.live.wire.CandleMessage`.

Once only: at start a feed reads back the newest candle of each symbol already in the stream and
publishes only candles that open after it, so a restarted feed resumes where it stopped and
publishes nothing twice; every publish also carries the candle's idempotency key
(``Nats-Msg-Id``), so the stream's duplicate window drops a second copy (the second guard).

Replay: each ``[[symbols]]`` entry's ``candles`` file (``[feed] path`` for a single symbol),
checked by :func:`colmena.data.load_ohlcv` and against ``bar_seconds``; the candles of all
symbols are published merged in time order (open time, then the symbols' order in the file), so
every symbol advances together, waiting ``bar_seconds / speed`` seconds from one open time to
the next (``speed`` 0: no waiting; a gap in the files counts as one bar). The feed ends when the
files are done.

Exchange: the design documents' micro-polling (``seeds/``: "Micro-Polling (cada 60s)",
"OHLCV de los últimos 1000 minutos"; SPEC "Ingestion": every 60 s, the last 1000 one-minute
candles). Every ``poll_seconds`` the feed asks ccxt's ``fetch_ohlcv`` for the last ``limit``
candles of each symbol and publishes, oldest first, those that

- are closed: a candle opening at ``ts`` closes at ``ts + bar_seconds``; one that closes after
  the feed's clock is still forming and waits for a later poll;
- open after the newest candle published for the symbol (a repeated open time in one answer is
  dropped, with a warning);
- pass the OHLCV rules of :func:`colmena._core.find_invalid_ohlcv` (finite prices > 0, volume
  >= 0, low <= open, close <= high, a time in the core's range) and lie on the bar grid: a bad
  candle is skipped with a warning naming the symbol, its open time and the rule, never
  published.

Each candle carries ``received_ns``, the feed's clock when the answer came: a candle that arrives
more than ``stale_after_seconds`` after its close (an exchange that was silent, slow or down, and
the catch-up after it) makes the risk service's decision at that bar reduce-only, with a
``data_feed_silent`` alert, until a fresh candle comes (:meth:`RiskStage.close`).

A gap between published candles is logged with the number of bars missing; when the oldest
fetched candle already lies beyond it (the feed was down for longer than ``limit`` bars), the
log says it cannot be filled. Gaps are never filled. Requests time out after ``timeout_seconds``;
network errors, timeouts, HTTP 5xx and rate limiting are retried with exponential backoff and
full jitter (tenacity, as :func:`colmena.data.exchange.download_ohlcv` does), ``max_attempts``
tries in all; a request that keeps failing, or any other exchange error, is logged and that
symbol waits for the next poll: the service stays up (its supervisor sees no crash for a flaky
exchange). The stop event ends the loop promptly, a request in flight included.

Every request goes through the exchange's circuit breaker
(:class:`colmena.data.exchange.ExchangeCircuitBreaker`, under the retries: each try is one call
through it), with the design documents' numbers (SPEC "Resilience"): 3 consecutive failed
requests (network errors, timeouts, HTTP 5xx, rate limits; not an answer such as an unknown
symbol) open it; while open, requests fail fast without calling the exchange (no retries: a
poll skips every symbol, logged once per poll); 2 s after opening (on the feed's clock) the next
request is the one trial call (half-open): a success closes the breaker, a failure opens it
again. Every change of state is logged. :attr:`ExchangeFeed.breaker` shows the state.

Time is injectable: ``clock()`` is now, in ns since the epoch (UTC); ``sleep(seconds)`` waits
(by default until the stop event or the time, whichever comes first), so tests drive polls
without waiting. :meth:`ExchangeFeed.poll` runs one poll and returns its :class:`PollReport`.

Units: ``ts`` in ns since the epoch (UTC), a candle's open time; durations in seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import math
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final, TypeAlias, TypeVar

import nats.errors
import nats.js.errors
import numpy as np

from colmena import _core
from colmena.data.exchange import CircuitOpenError, ExchangeCircuitBreaker
from colmena.data.ohlcv import (
    MAX_TIMESTAMP_NS,
    MIN_TIMESTAMP_NS,
    Candles,
    DataValidationError,
    load_ohlcv,
)
from colmena.execution.trading_loop import Bar
from colmena.live import wire
from colmena.services.bus import STREAM, Bus
from colmena.services.config import LiveConfig
from colmena.units import NS_PER_MS, NS_PER_SECOND

__all__ = [
    "Clock",
    "ExchangeFeed",
    "FeedError",
    "PollReport",
    "ReplayFeed",
    "Screened",
    "Sleep",
    "SymbolPoll",
    "make_feed",
    "newest_published_ts",
    "screen_candles",
]

log = logging.getLogger(__name__)

#: Now, in ns since the epoch (UTC).
Clock: TypeAlias = Callable[[], int]
#: Waits the given number of seconds (or less: the default one returns when the feed stops).
Sleep: TypeAlias = Callable[[float], Awaitable[None]]

_T = TypeVar("_T")
#: Longest backoff between two tries of one request, in seconds.
MAX_BACKOFF_SECONDS: Final = 30.0


class FeedError(ValueError):
    """A feed that cannot run with this configuration; one line naming every bad field."""


class _StopRequestedError(Exception):
    """The stop event was set while the feed waited for the exchange."""


async def newest_published_ts(bus: Bus, symbol: str) -> int | None:
    """Open time (ns since the epoch, UTC) of the newest candle of ``symbol`` in the stream, or
    None when it holds none."""
    try:
        raw = await bus.jetstream.get_last_msg(STREAM, wire.subject("candle", symbol))
    except nats.js.errors.NotFoundError:
        return None
    return wire.decode("candle", raw.data or b"").ts


def _stop_aware_sleep(stop: asyncio.Event) -> Sleep:
    async def sleep(seconds: float) -> None:
        if seconds <= 0:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=seconds)

    return sleep


def _utc(ts: int) -> str:
    """An open time (ns since the epoch) as ISO 8601 UTC, for log lines."""
    return f"{np.datetime64(ts, 'ns').astype('datetime64[s]')}Z"


def _one_line(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---------------------------------------------------------------- replay


class ReplayFeed:
    """Candle files of several symbols published merged in time order.

    Parameters
    ----------
    config : LiveConfig
        ``[[symbols]]`` (each with its ``candles`` file, or ``[feed] path`` for a single
        symbol), ``bar_seconds`` and ``[feed] speed``.
    sleep : callable, optional
        ``await sleep(seconds)`` between bars when ``speed`` > 0 (default: ``asyncio`` time,
        cut short by the stop event).

    Raises
    ------
    FeedError
        One line naming every problem: a symbol without a candle file, a file that does not
        load (the :class:`colmena.data.DataValidationError` text, with the file and row), a
        file whose bar length is not ``bar_seconds``.
    """

    def __init__(self, config: LiveConfig, *, sleep: Sleep | None = None) -> None:
        if not config.symbols:
            raise FeedError("no [[symbols]] in the configuration: nothing to replay")
        problems: list[str] = []
        self._candles: dict[str, Candles] = {}
        single = len(config.symbols) == 1
        for i, entry in enumerate(config.symbols):
            name = f"symbols[{i}].candles ({entry.symbol})"
            path = entry.candles
            if path is None and single and config.feed.path is not None:
                name, path = "feed.path", config.feed.path
            if path is None:
                hint = ' (or [feed] path = "FILE")' if single else ""
                problems.append(f'{name}: no candle file to replay: give candles = "FILE"{hint}')
                continue
            try:
                candles = load_ohlcv(path)
            except DataValidationError as exc:
                problems.append(f"{name}: {exc}")
                continue
            if (
                candles.interval_seconds is not None
                and candles.interval_seconds != config.bar_seconds
            ):
                problems.append(
                    f"{name}: {path}: {candles.interval_seconds:g} s candles, but bar_seconds "
                    f"is {config.bar_seconds}"
                )
                continue
            self._candles[entry.symbol] = candles
        if problems:
            raise FeedError("; ".join(problems))
        self._bar_seconds = config.bar_seconds
        self._speed = config.feed.speed
        self._sleep = sleep

    @property
    def symbols(self) -> tuple[str, ...]:
        """The symbols replayed, in the configuration's order."""
        return tuple(self._candles)

    def _rows(self, k: int, candles: Candles, after: int | None) -> Iterator[tuple[Any, ...]]:
        start = 0 if after is None else int(np.searchsorted(candles.ts, after, side="right"))
        columns = (candles.ts, candles.open, candles.high, candles.low, candles.close,
                   candles.volume)  # fmt: skip
        for ts, o, h, lo, c, v in zip(*(col[start:].tolist() for col in columns), strict=True):
            yield ts, k, o, h, lo, c, v

    async def run(self, bus: Bus, stop: asyncio.Event) -> int:
        """Publish every candle after the stream's newest of its symbol, in time order, until
        the files are done or ``stop`` is set; returns the number published (those the stream
        dropped as duplicates left out)."""
        sleep = self._sleep or _stop_aware_sleep(stop)
        symbols = self.symbols
        resume = {s: await newest_published_ts(bus, s) for s in symbols}
        merged = heapq.merge(
            *(self._rows(k, self._candles[s], resume[s]) for k, s in enumerate(symbols))
        )
        published = dict.fromkeys(symbols, 0)
        previous: int | None = None
        for ts, k, o, h, lo, c, v in merged:
            if stop.is_set():
                break
            if self._speed > 0 and previous is not None and ts > previous:
                await sleep(self._bar_seconds / self._speed)
                if stop.is_set():
                    break
            previous = ts
            symbol = symbols[k]
            bar = Bar(ts=ts, open=o, high=h, low=lo, close=c, volume=v)
            result = await bus.publish(
                wire.CandleMessage(symbol=symbol, ts=ts, bar_seconds=self._bar_seconds, bar=bar)
            )
            published[symbol] += not result.duplicate  # the stream held it already: not new
        for symbol, count in published.items():
            log.info("ingest: %d candles of %s published", count, symbol)
        return sum(published.values())

    async def close(self) -> None:
        """Nothing to release (for symmetry with :class:`ExchangeFeed`)."""


# ---------------------------------------------------------------- exchange


@dataclass
class SymbolPoll:
    """What one poll did for one symbol (counts of candles).

    Attributes
    ----------
    symbol : str
    attempts : int
        Requests sent (1 without retries; 0 when the feed stopped first).
    fetched : int
        Candles in the exchange's answer.
    published : int
        Candles published.
    forming : int
        Candles not closed by the clock, left for a later poll.
    already_published : int
        Candles at or before the newest one published for the symbol.
    duplicates : int
        Candles whose open time repeats an earlier one of the same answer (dropped).
    invalid : int
        Candles that broke a rule (skipped, with a warning).
    missing_bars : int
        Bars missing in the gaps found before or between the candles published.
    stream_duplicates : int
        Candles sent that the stream already held (its ``Nats-Msg-Id`` duplicate window, the
        second guard: another feed published them first); not counted in ``published``.
    error : str or None
        Why the poll gave up on this symbol (the exchange kept failing, the circuit breaker is
        open, or a publish failed).
    circuit_open : bool
        The circuit breaker was open: the exchange was not asked (``attempts`` counts only the
        requests sent before it opened).
    """

    symbol: str
    attempts: int = 0
    fetched: int = 0
    published: int = 0
    forming: int = 0
    already_published: int = 0
    duplicates: int = 0
    invalid: int = 0
    missing_bars: int = 0
    stream_duplicates: int = 0
    error: str | None = None
    circuit_open: bool = False


@dataclass(frozen=True)
class PollReport:
    """One poll of the exchange feed.

    Attributes
    ----------
    started_ns : int
        The clock at the start of the poll, ns since the epoch (UTC).
    symbols : tuple of SymbolPoll
        One per symbol, in the configuration's order.
    """

    started_ns: int
    symbols: tuple[SymbolPoll, ...] = field(default_factory=tuple)

    @property
    def published(self) -> int:
        """Candles published by this poll, all symbols."""
        return sum(s.published for s in self.symbols)

    def of(self, symbol: str) -> SymbolPoll:
        """The report of ``symbol``.

        Raises
        ------
        KeyError
            Not a symbol of the feed.
        """
        for s in self.symbols:
            if s.symbol == symbol:
                return s
        raise KeyError(symbol)


@dataclass(frozen=True)
class Screened:
    """One exchange answer sorted out by :func:`screen_candles`.

    Attributes
    ----------
    bars : tuple of Bar
        The candles to publish, oldest first: closed, after the newest published, unique,
        valid.
    fetched : int
        Rows in the answer.
    oldest_ts : int or None
        Open time of the oldest readable row, ns since the epoch (UTC); None when none is.
    forming : int
        Candles not closed at ``now_ns``.
    already_published : int
        Candles at or before ``newest_ts``.
    duplicates : tuple of int
        Open times (ns) that came again after their first copy (each later copy dropped).
    rejected : tuple of (str, str)
        For each bad candle: the candle (its open time in ISO 8601 UTC, or the row as sent
        when it cannot be read) and the rule it breaks.
    """

    bars: tuple[Bar, ...]
    fetched: int
    oldest_ts: int | None
    forming: int
    already_published: int
    duplicates: tuple[int, ...]
    rejected: tuple[tuple[str, str], ...]


def _read_row(row: Any) -> Bar:
    """A ccxt OHLCV row ``[open time ms, open, high, low, close, volume]`` as a Bar.

    Raises
    ------
    TypeError, ValueError, OverflowError, LookupError
        Not such a row (the message says why).
    """
    if len(row) != 6:
        raise ValueError(f"{len(row)} fields, expected 6")
    ms = row[0]
    if isinstance(ms, bool) or not isinstance(ms, int | float) or ms != int(ms):
        raise ValueError(f"open time {ms!r} is not a whole number of ms")
    ts = int(ms) * NS_PER_MS
    if not MIN_TIMESTAMP_NS <= ts <= MAX_TIMESTAMP_NS:
        raise ValueError(f"open time {int(ms)} ms is outside 1970..2200")
    if any(isinstance(x, bool) for x in row[1:]):
        raise ValueError("a price or volume is a boolean")
    o, h, lo, c, v = (float(x) for x in row[1:])
    return Bar(ts, o, h, lo, c, v)


def _broken_rule(bar: Bar, bar_ns: int) -> str | None:
    """Why ``bar`` breaks a candle rule (the core validator, the bar grid), or None."""
    violation = _core.find_invalid_ohlcv(
        np.array([bar.ts], dtype=np.int64), np.array([bar.open]), np.array([bar.high]),
        np.array([bar.low]), np.array([bar.close]), np.array([bar.volume]),
    )  # fmt: skip
    if violation is not None:
        return str(violation.detail)
    if bar.ts % bar_ns:
        return f"open time is not on the {bar_ns // NS_PER_SECOND} s bar grid"
    return None


def screen_candles(
    rows: Iterable[Any], *, newest_ts: int | None, now_ns: int, bar_seconds: int
) -> Screened:
    """Sort out an exchange's answer: which candles to publish, and why the others are not.

    Parameters
    ----------
    rows : iterable of sequences
        ccxt OHLCV rows ``[open time ms, open, high, low, close, volume]``, in any order.
    newest_ts : int or None
        Open time of the newest candle already published, ns since the epoch (UTC).
    now_ns : int
        The clock, ns since the epoch (UTC): a candle opening at ``ts`` is closed when
        ``ts + bar_seconds`` <= ``now_ns``.
    bar_seconds : int
        Candle length in seconds (> 0).

    Returns
    -------
    Screened
        The candles to publish, oldest first: readable rows, sorted by open time (stable),
        after ``newest_ts``, the first copy of each open time, closed, and valid by the rules
        of :func:`colmena._core.find_invalid_ohlcv` with an open time on the bar grid; and the
        count or list of the rest by reason.
    """
    rows = list(rows)
    bar_ns = bar_seconds * NS_PER_SECOND
    readable: list[Bar] = []
    rejected: list[tuple[str, str]] = []
    for row in rows:
        try:
            readable.append(_read_row(row))
        except (TypeError, ValueError, OverflowError, LookupError) as exc:
            rejected.append((repr(row)[:200], _one_line(exc)))
    readable.sort(key=lambda b: b.ts)
    bars: list[Bar] = []
    seen: set[int] = set()
    duplicates: list[int] = []
    forming = already = 0
    for bar in readable:
        if newest_ts is not None and bar.ts <= newest_ts:
            already += 1
        elif bar.ts in seen:
            duplicates.append(bar.ts)
        else:
            seen.add(bar.ts)
            if bar.ts + bar_ns > now_ns:
                forming += 1  # still forming: a later poll publishes it closed
            elif (rule := _broken_rule(bar, bar_ns)) is not None:
                rejected.append((_utc(bar.ts), rule))
            else:
                bars.append(bar)
    return Screened(
        bars=tuple(bars),
        fetched=len(rows),
        oldest_ts=readable[0].ts if readable else None,
        forming=forming,
        already_published=already,
        duplicates=tuple(duplicates),
        rejected=tuple(rejected),
    )


class ExchangeFeed:
    """Closed candles of every symbol, polled from an exchange through ccxt.

    Parameters
    ----------
    config : LiveConfig
        ``[[symbols]]``, ``bar_seconds`` and the ``[feed]`` settings ``exchange``,
        ``poll_seconds``, ``limit``, ``api_url``, ``timeout_seconds``, ``max_attempts``,
        ``backoff_seconds``.
    client : ccxt.async_support.Exchange, optional
        A configured asyncio ccxt client (default: one made from ``config``, closed by
        :meth:`close`; a client passed in is left open).
    clock : callable, default time.time_ns
        Now, ns since the epoch (UTC): decides which candles are closed and when the next poll
        starts.
    sleep : callable, optional
        ``await sleep(seconds)`` before the next poll and between tries of a request (default:
        ``asyncio`` time, cut short by the stop event).
    on_poll : callable, optional
        ``on_poll(report)`` after every poll of :meth:`run`.

    Raises
    ------
    FeedError
        No symbols, ccxt, tenacity or pybreaker not installed, an exchange ccxt does not
        know, or one without candles of ``bar_seconds``.
    """

    def __init__(
        self,
        config: LiveConfig,
        *,
        client: Any = None,
        clock: Clock = time.time_ns,
        sleep: Sleep | None = None,
        on_poll: Callable[[PollReport], None] | None = None,
    ) -> None:
        if not config.symbols:
            raise FeedError("no [[symbols]] in the configuration: nothing to poll")
        settings = config.feed
        try:
            import ccxt
            import pybreaker  # noqa: F401 (the circuit breaker's state machine)
            import tenacity  # noqa: F401 (the retries, imported where they run)
        except ImportError as exc:
            raise FeedError(
                f"the exchange feed needs {exc.name}: pip install 'colmena-swarm[exchange]'"
            ) from None
        self._ccxt = ccxt
        if client is None:
            from colmena.data.exchange import make_async_client

            try:
                client = make_async_client(
                    settings.exchange,
                    timeout_ms=math.ceil(settings.timeout_seconds * 1_000),
                    api_url=settings.api_url,
                )
            except ValueError as exc:
                raise FeedError(f"feed.exchange: {exc}") from None
            self._owns_client = True
        else:
            self._owns_client = False
        self._client = client
        self._name = str(getattr(client, "id", settings.exchange))
        self._symbols = tuple(s.symbol for s in config.symbols)
        self._bar_seconds = config.bar_seconds
        self._bar_ns = config.bar_seconds * NS_PER_SECOND
        self._settings = settings
        self._clock = clock
        self._sleep_given = sleep
        self._sleep: Sleep = sleep or (lambda seconds: asyncio.sleep(seconds))
        self._on_poll = on_poll
        self._timeframe = self._find_timeframe()
        self._breaker = ExchangeCircuitBreaker(
            self._name,
            clock=clock,
            is_failure=lambda exc: isinstance(exc, ccxt.OperationFailed),
            on_change=self._breaker_changed,
        )
        self._newest: dict[str, int | None] = dict.fromkeys(self._symbols)
        self._bus: Bus | None = None
        self._stop = asyncio.Event()

    def _find_timeframe(self) -> str:
        timeframes = getattr(self._client, "timeframes", None) or {}
        for timeframe in timeframes:
            try:
                seconds = self._client.parse_timeframe(timeframe)
            except Exception:  # a timeframe ccxt itself cannot read: not ours
                continue
            if seconds == self._bar_seconds:
                return str(timeframe)
        raise FeedError(
            f"feed.exchange: {self._name} has no {self._bar_seconds} s candles (bar_seconds); "
            f"it has {', '.join(timeframes) or 'none'}"
        )

    def _breaker_changed(self, old: str, new: str) -> None:
        breaker = self._breaker
        if new == "open":
            log.warning(
                "ingest: %s: circuit breaker open (%s): requests fail fast without calling the "
                "exchange; one trial call in %g s", self._name,
                "the trial call failed" if old == "half-open"
                else f"{breaker.failures} consecutive failures",
                breaker.reset_seconds,
            )  # fmt: skip
        elif new == "half-open":
            log.info("ingest: %s: circuit breaker half-open: one trial call", self._name)
        else:
            log.info("ingest: %s: circuit breaker closed: the exchange answers again", self._name)

    @property
    def client(self) -> Any:
        """The ccxt async client the feed polls (the health metrics time its calls)."""
        return self._client

    @property
    def breaker(self) -> ExchangeCircuitBreaker:
        """The exchange's circuit breaker (:class:`colmena.data.exchange.ExchangeCircuitBreaker`):
        its ``state`` (``"closed"``, ``"open"``, ``"half-open"``), ``consecutive_failures`` and
        ``seconds_to_trial``."""
        return self._breaker

    @property
    def timeframe(self) -> str:
        """ccxt's name of the candle length polled (``"1m"`` for ``bar_seconds = 60``)."""
        return self._timeframe

    def newest(self, symbol: str) -> int | None:
        """Open time (ns since the epoch, UTC) of the newest candle published for ``symbol``
        (read from the stream at start), or None."""
        return self._newest[symbol]

    async def start(self, bus: Bus, stop: asyncio.Event) -> None:
        """Read back the newest candle of each symbol in the stream and check that the exchange
        lists every symbol (when it can be reached: if not, the polls try again).

        Raises
        ------
        FeedError
            The exchange answered and does not list some symbols (all named).
        """
        self._bus = bus
        self._stop = stop
        if self._sleep_given is None:
            self._sleep = _stop_aware_sleep(stop)
        for symbol in self._symbols:
            self._newest[symbol] = await newest_published_ts(bus, symbol)
            if self._newest[symbol] is not None:
                log.info("ingest: %s resumes after %s", symbol, _utc(self._newest[symbol] or 0))
        try:
            await self._retrying(self._client.load_markets, SymbolPoll(""))
        except _StopRequestedError:
            return
        except Exception as exc:  # the exchange is down: the polls go on trying
            log.warning(
                "ingest: %s: cannot load its markets (%s); polling anyway", self._name,
                _one_line(exc),
            )  # fmt: skip
            return
        markets = getattr(self._client, "markets", None) or {}
        unknown = [s for s in self._symbols if s not in markets]
        if unknown:
            raise FeedError(
                f"symbols: {self._name} has no market {', '.join(unknown)} "
                f"(it lists {len(markets)} markets)"
            )

    async def _unless_stopped(self, awaitable: Coroutine[Any, Any, _T]) -> _T:
        """``await awaitable``, or raise :class:`_StopRequestedError` (cancelling it) when the
        stop event comes first."""
        if self._stop.is_set():
            awaitable.close()
            raise _StopRequestedError
        task = asyncio.ensure_future(awaitable)
        stopped = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if task.cancelled():
            raise _StopRequestedError
        return task.result()

    async def _retrying(
        self, call: Callable[..., Coroutine[Any, Any, _T]], report: SymbolPoll, *args: Any,
        **kwargs: Any,
    ) -> _T:  # fmt: skip
        """``await call(*args, **kwargs)`` with retries of transient errors (tenacity)."""
        from tenacity import (
            AsyncRetrying,
            RetryCallState,
            retry_if_exception,
            stop_after_attempt,
            wait_random_exponential,
        )
        from tenacity.stop import stop_base

        settings = self._settings
        stop_event = self._stop

        class stop_when_stopped(stop_base):  # noqa: N801 (tenacity's naming)
            def __call__(self, retry_state: RetryCallState) -> bool:
                return stop_event.is_set()

        async def guarded() -> _T:
            report.attempts += 1  # the breaker let it through: a request is sent
            return await call(*args, **kwargs)

        async def attempt() -> _T:
            return await self._unless_stopped(self._breaker.call(guarded))

        def transient(exc: BaseException) -> bool:
            # Timeouts, 5xx, 429 (ccxt's NetworkError) and the exchange's "internal error, try
            # again" answers (OperationFailed: Binance's -1000, -1001, -1006 with a 5xx); not
            # once the breaker is open (it fails fast).
            return isinstance(exc, self._ccxt.OperationFailed) and self._breaker.state != "open"

        def before_sleep(state: RetryCallState) -> None:
            outcome = state.outcome
            error = outcome.exception() if outcome is not None else None
            log.warning(
                "ingest: %s %s: try %d of %d failed (%s); again in %.2f s", self._name,
                report.symbol or "markets", state.attempt_number, settings.max_attempts,
                _one_line(error) if error is not None else "?",
                state.upcoming_sleep,
            )  # fmt: skip

        retrying = AsyncRetrying(
            stop=stop_after_attempt(settings.max_attempts) | stop_when_stopped(),
            wait=wait_random_exponential(
                multiplier=settings.backoff_seconds, max=MAX_BACKOFF_SECONDS
            ),
            retry=retry_if_exception(transient),
            sleep=self._sleep,
            before_sleep=before_sleep,
            reraise=True,
        )
        return await retrying(attempt)

    async def poll(self) -> PollReport:
        """One poll: fetch the last ``limit`` candles of every symbol and publish the new closed
        valid ones (see the module's text). Failures are logged and reported, never raised.

        Raises
        ------
        RuntimeError
            :meth:`start` was not called.
        """
        if self._bus is None:
            raise RuntimeError("ExchangeFeed.poll before start")
        started = self._clock()
        reports = []
        not_called: list[str] = []
        for symbol in self._symbols:
            if self._stop.is_set():
                break
            report = SymbolPoll(symbol)
            reports.append(report)
            try:
                rows = await self._retrying(
                    self._client.fetch_ohlcv, report, symbol, self._timeframe,
                    limit=self._settings.limit,
                )  # fmt: skip
            except _StopRequestedError:
                break
            except CircuitOpenError as exc:
                report.error, report.circuit_open = _one_line(exc), True
                not_called.append(symbol)
                continue
            except Exception as exc:  # a flaky or broken exchange never stops the service
                if self._stop.is_set():
                    break  # told to stop during the backoff: not a failure
                report.error = _one_line(exc)
                log.error(
                    "ingest: %s %s: poll failed after %d tries: %s; next poll in %g s",
                    self._name, symbol, report.attempts, report.error,
                    self._settings.poll_seconds,
                )  # fmt: skip
                continue
            received = self._clock()
            bars = self._screen(symbol, rows, received, report)
            await self._publish(symbol, bars, report, received)
        if not_called:
            log.warning(
                "ingest: %s: circuit breaker open: %s not polled (the exchange was not called); "
                "trial call in %.1f s", self._name, ", ".join(not_called),
                self._breaker.seconds_to_trial,
            )  # fmt: skip
        return PollReport(started_ns=started, symbols=tuple(reports))

    def _screen(self, symbol: str, rows: Any, now: int, report: SymbolPoll) -> list[Bar]:
        """The candles of an answer to publish (:func:`screen_candles`), the rest counted in
        ``report`` and the bad ones logged."""
        if not isinstance(rows, list | tuple):
            log.warning("ingest: %s %s: answer is not a list of candles", self._name, symbol)
            rows = []
        screened = screen_candles(
            rows, newest_ts=self._newest[symbol], now_ns=now, bar_seconds=self._bar_seconds
        )
        report.fetched = screened.fetched
        report.forming = screened.forming
        report.already_published = screened.already_published
        report.duplicates = len(screened.duplicates)
        report.invalid = len(screened.rejected)
        for ts in screened.duplicates:
            log.warning(
                "ingest: %s %s: candle %s repeated in one answer: the later copy dropped",
                self._name, symbol, _utc(ts),
            )  # fmt: skip
        for what, why in screened.rejected:
            log.warning("ingest: %s %s: candle %s skipped: %s", self._name, symbol, what, why)
        self._report_gaps(symbol, screened.oldest_ts, screened.bars, report)
        return list(screened.bars)

    def _report_gaps(
        self, symbol: str, oldest: int | None, bars: tuple[Bar, ...], report: SymbolPoll
    ) -> None:
        """Log the gaps before and between the candles about to be published (never filled);
        ``oldest``: open time of the oldest candle of the answer."""
        previous = self._newest[symbol]
        for i, bar in enumerate(bars):
            if previous is not None and bar.ts - previous > self._bar_ns:
                missing = (bar.ts - previous - 1) // self._bar_ns
                report.missing_bars += missing
                if i == 0 and oldest is not None and oldest > previous + self._bar_ns:
                    # The answer starts after the newest published candle: what lies between
                    # is older than the window asked for.
                    log.warning(
                        "ingest: %s %s: %d bars missing between %s (the newest published) and "
                        "%s (the oldest fetched): longer than the window of %d candles, the "
                        "gap cannot be filled", self._name, symbol, missing, _utc(previous),
                        _utc(bar.ts), self._settings.limit,
                    )  # fmt: skip
                else:
                    log.warning(
                        "ingest: %s %s: gap of %d bars between %s and %s", self._name, symbol,
                        missing, _utc(previous), _utc(bar.ts),
                    )  # fmt: skip
            previous = bar.ts

    async def _publish(
        self, symbol: str, bars: list[Bar], report: SymbolPoll, received_ns: int
    ) -> None:
        """Publish ``bars`` stamped with ``received_ns``, when the exchange's answer came (the
        risk service's stale-data rule reads it)."""
        assert self._bus is not None
        for bar in bars:
            message = wire.CandleMessage(
                symbol=symbol,
                ts=bar.ts,
                bar_seconds=self._bar_seconds,
                bar=bar,
                received_ns=received_ns,
            )
            try:
                result = await self._bus.publish(message)
            except (TimeoutError, nats.errors.Error) as exc:
                report.error = f"publishing {_utc(bar.ts)}: {_one_line(exc)}"
                log.error("ingest: %s: %s; the next poll tries again", symbol, report.error)
                return
            self._newest[symbol] = bar.ts
            if result.duplicate:
                report.stream_duplicates += 1  # another copy of this feed published it
            else:
                report.published += 1

    async def run(self, bus: Bus, stop: asyncio.Event) -> int:
        """:meth:`start`, then poll every ``poll_seconds`` (from the start of one poll to the
        start of the next) until ``stop`` is set; returns the number of candles published.
        Closes the client it made.

        Raises
        ------
        FeedError
            As :meth:`start`.
        """
        total = 0
        try:
            await self.start(bus, stop)
            while not stop.is_set():
                report = await self.poll()
                total += report.published
                if self._on_poll is not None:
                    self._on_poll(report)
                if stop.is_set():
                    break
                elapsed = (self._clock() - report.started_ns) / NS_PER_SECOND
                await self._sleep(max(0.0, self._settings.poll_seconds - elapsed))
        finally:
            await self.close()
        log.info("ingest: %d candles published from %s", total, self._name)
        return total

    async def close(self) -> None:
        """Close the ccxt client if this feed made it (idempotent)."""
        if self._owns_client:
            self._owns_client = False
            await self._client.close()


def make_feed(config: LiveConfig, **options: Any) -> ReplayFeed | ExchangeFeed:
    """The feed ``[feed] kind`` names, built and checked (``options`` go to its constructor:
    ``sleep``; and for the exchange feed ``client``, ``clock``, ``on_poll``).

    Raises
    ------
    FeedError
        A configuration the feed cannot run (the message names every bad field).
    """
    if config.feed.kind == "exchange":
        return ExchangeFeed(config, **options)
    return ReplayFeed(config, **options)
