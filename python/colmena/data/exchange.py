"""Candles from an exchange through ccxt: paged, rate-limited, retried, cached as Parquet.

``download_ohlcv`` fetches closed OHLCV candles with ccxt's ``fetch_ohlcv`` (any exchange ccxt
supports), page by page (``limit`` candles per request) with ccxt's built-in rate limiter, retrying
transient failures (network errors, timeouts, HTTP 5xx, rate-limit answers) with exponential
backoff and full jitter (tenacity). Candles are validated by the core validator and cached in the
user's cache directory as ``{exchange}_{symbol}_{timeframe}.parquet``; the next call reads the
cache and fetches only what is missing (resume). Gaps the exchange publishes (minutes without
trades) stay gaps. Without a network the first request fails fast with
:class:`ExchangeUnavailableError`, which says to pass a file instead.

:class:`ExchangeCircuitBreaker` is the design documents' circuit breaker on an exchange's calls
(closed / open / half-open; 3 consecutive failures open it, a trial call after 2 s), shared by
every caller that talks to a venue; the live feed (:class:`colmena.services.feeds.ExchangeFeed`)
puts it under its retries.

Needs the ``exchange`` extra: ``pip install 'colmena-swarm[exchange]'``.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Final, Literal, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from numpy.typing import NDArray

from colmena import _core
from colmena.atomic_write import write_parquet_atomically
from colmena.units import SECONDS_PER_DAY

__all__ = [
    "BREAKER_FAILURES",
    "BREAKER_RESET_SECONDS",
    "CircuitOpenError",
    "ExchangeCircuitBreaker",
    "ExchangeUnavailableError",
    "api_url_problem",
    "cache_path",
    "download_ohlcv",
    "make_async_client",
    "make_client",
]

MS = 1_000_000  # ns per ms


class ExchangeUnavailableError(RuntimeError):
    """The exchange could not be reached (offline, DNS, refused) or kept failing."""


class CircuitOpenError(ExchangeUnavailableError):
    """A call refused without being made: the exchange's circuit breaker is open (the message
    names the exchange, the failures that opened it and when the trial call comes)."""


#: Consecutive failed calls that open the breaker (the design documents: "3 fallos").
BREAKER_FAILURES: Final = 3
#: Seconds an open breaker waits before it lets one trial call through (half-open).
BREAKER_RESET_SECONDS: Final = 2.0

_T = TypeVar("_T")
BreakerState = Literal["closed", "open", "half-open"]


class ExchangeCircuitBreaker:
    """Closed / open / half-open circuit breaker on the calls to one exchange.

    Closed: calls go through; ``failures`` consecutive failed calls (those ``is_failure``
    accepts; any other outcome, a success or an error that is not the exchange's fault, resets
    the count) open it. Open: calls fail fast with :class:`CircuitOpenError`, the exchange is not
    called. Once ``reset_seconds`` have passed on ``clock`` the next call is the trial
    (half-open): a success closes the breaker, a failure opens it again for ``reset_seconds``.
    The defaults are the design documents' numbers (SPEC "Resilience").

    The state machine is pybreaker's (``pybreaker.CircuitBreaker``, Nygard's pattern, BSD). Its
    own reset timer reads the wall clock (``datetime.now``) and cannot be given another, so it
    is set out of reach and the move to half-open is made here on ``clock``, through
    pybreaker's public ``half_open()``: the caller's clock (a test's, or the live feed's) decides,
    and tests need not sleep. Not for concurrent callers: a half-open breaker lets through what
    comes before the trial's answer (the live feed polls one call at a time).

    Parameters
    ----------
    name : str
        The exchange, for messages.
    clock : callable, default time.monotonic_ns
        Now, in ns (any origin: only differences are used).
    failures : int, default 3
        Consecutive failures that open the breaker (>= 1).
    reset_seconds : float, default 2.0
        Seconds from opening to the trial call (> 0).
    is_failure : callable, default every exception
        ``is_failure(exc)``: whether an exception a call raised counts as a failure of the
        exchange (e.g. ``ccxt.NetworkError``: timeouts, HTTP 5xx, rate limits).
    on_change : callable, optional
        ``on_change(old, new)`` after every change of state (``"closed"``, ``"open"``,
        ``"half-open"``), e.g. to log it.

    Raises
    ------
    ImportError
        pybreaker is not installed (the ``exchange`` extra).
    ValueError
        ``failures`` < 1 or ``reset_seconds`` <= 0.
    """

    #: pybreaker's own (wall-clock) reset timeout, out of reach: this class half-opens.
    _NEVER: Final = 10 * 365 * 86_400.0

    def __init__(
        self,
        name: str,
        *,
        clock: Callable[[], int] = time.monotonic_ns,
        failures: int = BREAKER_FAILURES,
        reset_seconds: float = BREAKER_RESET_SECONDS,
        is_failure: Callable[[BaseException], bool] = lambda exc: True,
        on_change: Callable[[str, str], None] | None = None,
    ) -> None:
        try:
            import pybreaker
        except ImportError as exc:
            raise ImportError(
                "the exchange circuit breaker needs pybreaker: pip install "
                "'colmena-swarm[exchange]'"
            ) from exc
        if failures < 1:
            raise ValueError(f"failures={failures} must be >= 1")
        if not reset_seconds > 0:
            raise ValueError(f"reset_seconds={reset_seconds} must be > 0")
        self.name = name
        self.failures = failures
        self.reset_seconds = reset_seconds
        self._clock = clock
        self._opened_ns = 0
        self._on_change = on_change
        self._last_failure: str | None = None
        self._pybreaker = pybreaker
        breaker = self

        class Listener(pybreaker.CircuitBreakerListener):
            def state_change(self, cb: Any, old_state: Any, new_state: Any) -> None:
                breaker._changed(
                    None if old_state is None else str(old_state.name), str(new_state.name)
                )

            def failure(self, cb: Any, exc: BaseException) -> None:
                breaker._last_failure = f"{type(exc).__name__}: {exc}"[:200]

        self._breaker = pybreaker.CircuitBreaker(
            fail_max=failures,
            reset_timeout=self._NEVER,
            exclude=[lambda exc: not is_failure(exc)],
            listeners=[Listener()],
            name=name,
            throw_new_error_on_trip=False,  # the error that tripped it propagates as it was
        )

    def _changed(self, old: str | None, new: str) -> None:
        if new == "open":
            self._opened_ns = self._clock()
        if self._on_change is not None and old is not None and old != new:
            self._on_change(old, new)

    def _elapsed(self) -> float:
        return (self._clock() - self._opened_ns) / 1e9

    @property
    def state(self) -> BreakerState:
        """``"closed"``, ``"open"`` or ``"half-open"`` (also once the reset time has passed
        and the trial call is due)."""
        state = str(self._breaker.current_state)
        if state == "open" and self._elapsed() >= self.reset_seconds:
            return "half-open"
        return "open" if state == "open" else "half-open" if state == "half-open" else "closed"

    @property
    def consecutive_failures(self) -> int:
        """Failed calls since the last success (or since the breaker closed)."""
        return int(self._breaker.fail_counter)

    @property
    def seconds_to_trial(self) -> float:
        """Seconds until an open breaker lets the trial call through (0 when not open)."""
        if str(self._breaker.current_state) != "open":
            return 0.0
        return max(0.0, self.reset_seconds - self._elapsed())

    async def call(self, call: Callable[..., Awaitable[_T]], *args: Any, **kwargs: Any) -> _T:
        """``await call(*args, **kwargs)`` through the breaker.

        Raises
        ------
        CircuitOpenError
            The breaker is open and the trial is not due: ``call`` is not made.
        Exception
            Whatever ``call`` raises (counted as a failure when ``is_failure`` says so).
        """
        if str(self._breaker.current_state) == "open":
            if self._elapsed() < self.reset_seconds:
                raise CircuitOpenError(
                    f"{self.name}: circuit breaker open after {self.failures} consecutive "
                    f"failures (last: {self._last_failure}); not called, trial call in "
                    f"{self.seconds_to_trial:.1f} s"
                )
            self._breaker.half_open()
        with self._breaker.calling():
            return await call(*args, **kwargs)


def cache_path(exchange: str, symbol: str, timeframe: str, cache_dir: Path | None = None) -> Path:
    """Where the candles of one market are cached."""
    if cache_dir is None:
        import platformdirs

        cache_dir = Path(platformdirs.user_cache_dir("colmena")) / "candles"
    safe = symbol.replace("/", "").replace(":", "_")
    return Path(cache_dir) / f"{exchange}_{safe}_{timeframe}.parquet"


def api_url_problem(api_url: str) -> str | None:
    """What is wrong with an ``api_url`` setting (the base URL every REST call of a ccxt client
    goes to instead of the exchange's: a proxy, a local test server), or None when it is a valid
    ``http(s)://host[:port]`` without credentials (secrets never go in a settings file)."""
    from urllib.parse import urlsplit

    try:
        url = urlsplit(api_url)
        url.port  # noqa: B018 (raises ValueError for a port that is not a number)
    except ValueError:
        url = urlsplit("")
    if url.username is not None or url.password is not None:
        return "api_url carries credentials: never put secrets in this file"
    if url.scheme not in ("http", "https") or not url.hostname:
        return "api_url must be http(s)://host[:port] (a base URL, no path needed)"
    return None


def _override_host(client: Any, base_url: str) -> None:
    """Send every REST call of ``client`` to ``base_url`` (scheme and host), keeping the paths."""
    from urllib.parse import urlsplit, urlunsplit

    new = urlsplit(base_url)

    def swap(url: Any) -> Any:
        if isinstance(url, str) and url.startswith("http"):
            parts = urlsplit(url)
            return urlunsplit((new.scheme, new.netloc, parts.path, parts.query, parts.fragment))
        if isinstance(url, dict):
            return {k: swap(v) for k, v in url.items()}
        return url

    client.urls["api"] = swap(client.urls["api"])


def make_client(exchange: str, *, timeout_ms: int = 10_000, api_url: str | None = None) -> Any:
    """A ccxt client for ``exchange`` with rate limiting on, spot markets only, and optionally
    every REST call sent to ``api_url`` (a proxy or a local test server)."""
    client = _client(exchange, timeout_ms)
    if api_url:
        _override_host(client, api_url)
    return client


def make_async_client(
    exchange: str, *, timeout_ms: int = 10_000, api_url: str | None = None
) -> Any:
    """The asyncio twin of :func:`make_client` (``ccxt.async_support``, on aiohttp), for the
    live feed; close it with ``await client.close()``.

    Raises
    ------
    ImportError
        ccxt is not installed (the ``exchange`` extra).
    ValueError
        ccxt does not know ``exchange``.
    """
    client = _client(exchange, timeout_ms, asynchronous=True)
    if api_url:
        _override_host(client, api_url)
    return client


def _client(exchange: str, timeout_ms: int, *, asynchronous: bool = False) -> Any:
    try:
        import ccxt

        if asynchronous:
            import ccxt.async_support
    except ImportError as exc:
        raise ImportError(
            "downloading candles needs ccxt: pip install 'colmena-swarm[exchange]'"
        ) from exc
    if exchange not in ccxt.exchanges:
        raise ValueError(f"unknown exchange {exchange!r} (ccxt knows {len(ccxt.exchanges)})")
    module = ccxt.async_support if asynchronous else ccxt
    return getattr(module, exchange)(
        {
            "enableRateLimit": True,
            "timeout": timeout_ms,
            "options": {"fetchMarkets": {"types": ["spot"]}},
        }
    )


def _read_cache(path: Path) -> pa.Table | None:
    if not path.exists():
        return None
    try:
        return pq.read_table(path)
    except (OSError, pa.ArrowInvalid):
        return None  # a damaged cache is refetched, never trusted


def download_ohlcv(
    exchange: str,
    symbol: str,
    timeframe: str = "1m",
    days: float = 30.0,
    *,
    until_ms: int | None = None,
    cache_dir: Path | None = None,
    limit: int = 1000,
    timeout_ms: int = 10_000,
    max_attempts: int = 6,
    backoff_seconds: float = 1.0,
    client: Any = None,
    on_page: Callable[[int, int], None] | None = None,
) -> Path:
    """Fetch (or resume) the closed candles of the last ``days`` and return the cached file.

    Parameters
    ----------
    exchange : str
        A ccxt exchange id, e.g. ``"binance"``.
    symbol : str
        Unified market symbol, e.g. ``"BTC/USDT"``.
    timeframe : str
        Candle length, e.g. ``"1m"``.
    days : float
        How far back from ``until_ms`` to fetch (> 0).
    until_ms : int, optional
        End of the window, ms since epoch UTC (default: now). Candles not closed by then are
        left out.
    cache_dir : pathlib.Path, optional
        Defaults to the user's cache directory (platformdirs).
    limit : int
        Candles per request.
    timeout_ms : int
        Timeout of every request.
    max_attempts : int
        Attempts per page before giving up (transient errors only).
    backoff_seconds : float
        Base of the exponential backoff (full jitter, capped at 30 s).
    client : ccxt.Exchange, optional
        A configured ccxt client (tests point one at a local server).
    on_page : callable, optional
        ``on_page(candles_so_far, candles_expected)`` after every page (progress bars).

    Returns
    -------
    pathlib.Path
        The Parquet cache: ``ts`` timestamp[ms, UTC], open, high, low, close, volume float64.

    Raises
    ------
    ExchangeUnavailableError
        If the exchange cannot be reached (fails fast on the first request) or a page keeps
        failing after ``max_attempts``.
    ValueError
        For bad arguments or candles that fail validation (nothing is written then).
    """
    import ccxt
    from tenacity import (
        Retrying,
        retry_if_exception_type,
        stop_after_attempt,
        wait_random_exponential,
    )

    if days <= 0:
        raise ValueError(f"days must be > 0, got {days}")
    ex = client if client is not None else _client(exchange, timeout_ms)
    tf_ms = int(ex.parse_timeframe(timeframe) * 1000)
    end = int(until_ms if until_ms is not None else time.time() * 1000)
    end -= end % tf_ms  # the candle opening at `end` is not closed yet
    start = end - int(days * SECONDS_PER_DAY * 1_000)  # ms
    start -= start % tf_ms
    path = cache_path(exchange, symbol, timeframe, cache_dir)

    try:
        ex.load_markets()
    except (ccxt.NetworkError, ccxt.ExchangeNotAvailable) as exc:
        raise ExchangeUnavailableError(
            f"cannot reach {exchange}: {exc}. Offline? Pass a candle file instead, e.g. "
            "`colmena backtest ../shared/data/btcusd_bitfinex_1m_2018.parquet`"
        ) from exc
    if symbol not in ex.markets:
        raise ValueError(f"{exchange} has no market {symbol!r}")

    cached = _read_cache(path)
    have = (
        np.asarray(cached.column("ts").cast(pa.int64()).to_numpy())
        if cached is not None and cached.num_rows
        else np.zeros(0, dtype=np.int64)
    )
    # Ranges still missing: before the cache and after it.
    ranges: list[tuple[int, int]] = []
    if have.size == 0:
        ranges.append((start, end))
    else:
        if start < have[0]:
            ranges.append((start, int(have[0])))
        if int(have[-1]) + tf_ms < end:
            ranges.append((int(have[-1]) + tf_ms, end))
    expected = sum(max(0, (b - a) // tf_ms) for a, b in ranges)

    transient = (
        ccxt.NetworkError,  # includes RequestTimeout, ExchangeNotAvailable, DDoSProtection
        ccxt.RateLimitExceeded,
    )
    rows: list[list[float]] = []
    for a, b in ranges:
        since = a
        while since < b:
            retrying = Retrying(
                stop=stop_after_attempt(max_attempts),
                wait=wait_random_exponential(multiplier=backoff_seconds, max=30),
                retry=retry_if_exception_type(transient),
                reraise=True,
            )
            try:
                page = retrying(ex.fetch_ohlcv, symbol, timeframe, since=since, limit=limit)
            except transient as exc:
                raise ExchangeUnavailableError(
                    f"{exchange} kept failing after {max_attempts} attempts at "
                    f"{np.datetime64(since, 'ms')}: {exc}"
                ) from exc
            page = [c for c in page if a <= c[0] < b]
            if not page:
                break  # nothing more published in this range
            rows.extend(page)
            since = int(page[-1][0]) + tf_ms
            if on_page is not None:
                on_page(len(rows), expected)

    new = np.asarray(rows, dtype=np.float64).reshape(-1, 6)
    ts_new = new[:, 0].astype(np.int64)
    columns: dict[str, NDArray[Any]] = {"ts": ts_new}
    for i, name in enumerate(("open", "high", "low", "close", "volume"), start=1):
        columns[name] = new[:, i]
    if cached is not None and cached.num_rows:
        old: dict[str, NDArray[Any]] = {
            "ts": have,
            **{n: np.asarray(cached.column(n).to_numpy(), dtype=np.float64)
               for n in ("open", "high", "low", "close", "volume")},
        }  # fmt: skip
        columns = {k: np.concatenate([old[k], columns[k]]) for k in old}
    order = np.argsort(columns["ts"], kind="stable")
    columns = {k: v[order] for k, v in columns.items()}
    keep = np.concatenate([[True], np.diff(columns["ts"]) > 0])[: columns["ts"].size]
    columns = {k: np.ascontiguousarray(v[keep]) for k, v in columns.items()}
    violation = _core.find_invalid_ohlcv(
        columns["ts"] * MS, columns["open"], columns["high"], columns["low"], columns["close"],
        columns["volume"],
    )  # fmt: skip
    if violation is not None:
        raise ValueError(
            f"{exchange} {symbol}: invalid candle from the exchange: {violation.message}"
        )
    table = pa.table(
        {
            "ts": pa.array(columns["ts"]).cast(pa.timestamp("ms", tz="UTC")),
            **{n: pa.array(columns[n]) for n in ("open", "high", "low", "close", "volume")},
        }
    )
    write_parquet_atomically(table, path)
    return path
