"""The execution service against a real spot venue: market orders through ccxt, placed once.

:class:`VenueExecutionHandler` takes the inputs of :class:`colmena.live.handlers.ExecutionHandler`
(candle, gate, order) and gives the same outputs (an :class:`~colmena.live.wire.ExecutionMessage`
on the pending order at each candle, an :class:`~colmena.live.wire.AccountMessage` at its close),
so the risk service, the recorder and the replay-audit are the same in both modes. What differs:

- An order message is placed at once (the decision at the close of bar ``t`` is sent at the
  open of ``t + 1``, SPEC "Honesty rules") as a spot market order, clipped as the paper account
  clips it: reduce-only when the order says so, never below a flat position, the quantity cut
  to the market's lot step (nothing placed when that leaves 0). The gate of the fill bar is not
  awaited (it comes a bar later, with the bar's candle): the order's own ``reduce_only`` is the
  clip. The report on it goes out with the next candle, as in paper mode.
- Exactly once: the client order id is :func:`client_order_id` of the order message's idempotency
  key (:func:`colmena.live.wire.idempotency_key`), so every delivery of the same decision, in any
  life of the service, names the same order. Before placing, and again after any error or
  timeout, the order is looked up by that id: an order that exists (a reply that was lost, a
  message delivered again, a replay after a restart) is taken as it is and never placed again;
  the venue's own "duplicate order" refusal means the same.
- The report: the venue's filled quantity and average price (``Fill.price``), its fee
  (``Fill.fee`` in the quote currency; a fee charged in the base asset is converted at the fill
  price and taken off the position; a fee the venue did not report, as after a lost reply, is
  estimated at ``fee_bps`` of the notional), ``Fill.slippage_cost`` against the fill bar's open.
  An order still open at its report (a market order the book could not fill) is cancelled first:
  its unfilled part is the report's ``attempted - fill.quantity``, which the risk stage resubmits
  as the remainder. A rejected order (insufficient balance, minimum notional, any refusal that is
  not a network failure) reports ``attempted = 0`` (nothing goes on as a remainder) with an
  ``error`` event naming the reason (:data:`VENUE_EVENT_CODES`); so does an order not placed
  (too old, below the lot step, held by reconciliation) and one whose fate the venue could not
  tell (unreachable: it is looked up again at every reconciliation).
- The account (documented mapping): ``position`` is the venue's total balance (free + locked) of
  the base asset less ``reserves[base]`` (base units at the venue that are not this sleeve's; one
  sleeve per base asset); ``cash`` is the sleeve's own record (its starting capital plus the
  quote flows of its fills, fees included), because the quote balance is shared by every sleeve
  of the account; ``mark`` the bar's close. When the balance cannot be read the recorded position
  is used and the failure logged; so it is, without a request, for a bar that closed longer than
  ``max_order_age_seconds`` ago (a replay after a restart).

The records (:attr:`VenueExecutionHandler.records`): the position and cash this handler's fills
add up to, and the orders it knows open at the venue; :mod:`colmena.services.reconcile` compares
them with the venue at start and periodically.

Every venue call has the client's timeout, is retried for transient errors only (ccxt's
``OperationFailed``: timeouts, lost connections, HTTP 5xx, rate limits, and Binance's
"internal error, execution status unknown" answers, but no refusal of the request) with
exponential backoff and full jitter (tenacity), and goes through a circuit breaker (pybreaker;
3 consecutive failures open it, a trial call after 2 s, the design documents' numbers, as the
feed's). API keys are read from
the environment variables the settings name, never from a file, and never logged.

The handler's calls block (HTTP): :attr:`VenueExecutionHandler.BLOCKING` asks the runner to call
it off the event loop. Its state is rebuilt on a restart by the runner's replay of its inputs
(it is not kept in the state bucket): every replayed order is looked up by its client order id,
never placed twice, and an order older than ``max_order_age_seconds`` that the venue does not
have is not placed any more. A replay costs one request per order (and one balance request per
bar younger than ``max_order_age_seconds``). The report's ``closed_trades`` stays empty (the
venue keeps no round trips of a sleeve).

Needs the ``exchange`` extra (ccxt, tenacity, pybreaker).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Final, Literal

import msgspec

from colmena.data.exchange import (
    BREAKER_FAILURES,
    BREAKER_RESET_SECONDS,
    CircuitOpenError,
    ExchangeUnavailableError,
    api_url_problem,
)
from colmena.execution.simulation import ExecutionSettings
from colmena.execution.trading_loop import (
    AccountSnapshot,
    Bar,
    ExecutionReport,
    Fill,
    Order,
    RiskEvent,
    RiskGate,
)
from colmena.live import wire
from colmena.live.handlers import ExecutionSequencer
from colmena.units import NS_PER_SECOND

__all__ = [
    "CLIENT_ID_MAX",
    "VENUE_EVENT_CODES",
    "VenueClient",
    "VenueExecutionHandler",
    "VenueRecords",
    "VenueSettings",
    "VenueUnavailableError",
    "client_order_id",
    "make_venue_client",
]

log = logging.getLogger(__name__)

#: Longest client order id Binance takes (``newClientOrderId``: ``^[.A-Z:/a-z0-9_-]{1,36}$``).
CLIENT_ID_MAX: Final = 36
_CLIENT_ID: Final = re.compile(r"[.A-Z:/a-z0-9_-]{1,36}")
_PREFIX: Final = re.compile(r"[A-Za-z0-9_-]{1,10}")
_ENV_NAME: Final = re.compile(r"[A-Z_][A-Z0-9_]{0,127}")
_EXCHANGE_ID: Final = re.compile(r"[a-z][a-z0-9_]{0,63}")
#: Longest backoff between two tries of one call, seconds.
MAX_BACKOFF_SECONDS: Final = 30.0

#: The codes of the venue's events (``RiskEvent.code`` / ``code_name``), apart from the core's:
#: ``error`` events for an order that did not reach the book (rejected by the venue, its fate
#: unknown, too old to place, below the lot step, held by a reconciliation difference) and an
#: ``alert`` for a partial fill (``value``: the unfilled base units).
VENUE_EVENT_CODES: Final[dict[str, int]] = {
    "venue_rejected": 100,
    "venue_unreachable": 101,
    "order_expired": 102,
    "below_lot_step": 103,
    "reconciliation_hold": 104,
    "partial_fill": 105,
}
_OPEN_STATUS: Final = ("open",)  # ccxt's unified status of NEW and PARTIALLY_FILLED orders


class VenueUnavailableError(ExchangeUnavailableError):
    """The venue could not be reached (retries spent or its circuit breaker open); the message
    names the call."""


class VenueSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``[venue]``: where the execution service trades.

    Attributes
    ----------
    mode : {"paper", "exchange"}
        ``paper`` (default): the simulated account of :class:`~colmena.live.handlers.
        ExecutionHandler`; ``exchange``: real orders at ``exchange`` (this module).
    exchange : str
        ccxt's exchange id (spot markets).
    sandbox : bool
        Trade on the exchange's testnet (ccxt's sandbox mode) where it has one.
    api_url : str or None
        ``http(s)://host[:port]`` every REST call goes to instead (a proxy, a local test
        server); no credentials in it.
    api_key_env, api_secret_env : str
        Names of the environment variables holding the API key and secret (never the file).
    timeout_seconds : float
        Limit of each request, in (0, 120].
    max_attempts : int
        Tries of one call on transient errors, in [1, 20].
    backoff_seconds : float
        Base of the exponential backoff with full jitter between tries, in [0, 60] (capped at
        30 s).
    client_id_prefix : str
        Start of every client order id (1-10 of ``[A-Za-z0-9_-]``): tells this deployment's
        orders apart at the venue.
    reserves : dict of str to float
        Balances of base assets at the venue that are not the sleeves' (``{"BTC" = 0.5}``):
        taken off the venue's balance to give a sleeve's position; base units, >= 0.
    reconcile_seconds : float
        Seconds between two reconciliations with the venue, in [1, 86400].
    position_tolerance : float
        Largest difference between the venue's and the recorded position that is not a
        reconciliation difference, base units, >= 0.
    max_order_age_seconds : float or None
        An order decided longer ago than this (wall clock) and not at the venue is not placed
        (a replay after a long outage); None: no limit.
    """

    mode: Literal["paper", "exchange"] = "paper"
    exchange: str = "binance"
    sandbox: bool = False
    api_url: str | None = None
    api_key_env: str = "COLMENA_VENUE_API_KEY"
    api_secret_env: str = "COLMENA_VENUE_API_SECRET"
    timeout_seconds: Annotated[float, msgspec.Meta(gt=0.0, le=120.0)] = 10.0
    max_attempts: Annotated[int, msgspec.Meta(ge=1, le=20)] = 5
    backoff_seconds: Annotated[float, msgspec.Meta(ge=0.0, le=60.0)] = 0.5
    client_id_prefix: str = "colmena"
    reserves: dict[str, Annotated[float, msgspec.Meta(ge=0.0)]] = msgspec.field(
        default_factory=dict
    )
    reconcile_seconds: Annotated[float, msgspec.Meta(ge=1.0, le=86_400.0)] = 60.0
    position_tolerance: Annotated[float, msgspec.Meta(ge=0.0)] = 1e-8
    max_order_age_seconds: Annotated[float, msgspec.Meta(gt=0.0)] | None = 300.0

    def __post_init__(self) -> None:
        problems = []
        if _EXCHANGE_ID.fullmatch(self.exchange) is None:
            problems.append(f"exchange {self.exchange!r} is not a ccxt exchange id")
        for name in ("api_key_env", "api_secret_env"):
            if _ENV_NAME.fullmatch(getattr(self, name)) is None:
                problems.append(
                    f"{name} must name an environment variable ([A-Z_][A-Z0-9_]*), not hold a "
                    "secret"
                )
        if _PREFIX.fullmatch(self.client_id_prefix) is None:
            problems.append("client_id_prefix must be 1-10 of [A-Za-z0-9_-]")
        if self.api_url is not None and (problem := api_url_problem(self.api_url)):
            problems.append(problem)
        if self.sandbox and self.api_url is not None:
            problems.append("sandbox and api_url both move the venue's host: give one")
        if any(not math.isfinite(v) for v in self.reserves.values()):
            problems.append("reserves must be finite")
        if problems:
            raise ValueError("; ".join(problems))


def client_order_id(prefix: str, key: str) -> str:
    """The client order id of the order message whose idempotency key is ``key``:
    ``<prefix>-<BLAKE2b of the key, 96 bits, hex>``, at most 35 characters of Binance's
    ``[.A-Z:/a-z0-9_-]`` (a function of the key only: every delivery names the same order).

    Raises
    ------
    ValueError
        A prefix outside 1-10 of ``[A-Za-z0-9_-]``.
    """
    if _PREFIX.fullmatch(prefix) is None:
        raise ValueError(f"client order id prefix {prefix!r}: need 1-10 of [A-Za-z0-9_-]")
    digest = hashlib.blake2b(key.encode(), digest_size=12).hexdigest()
    out = f"{prefix}-{digest}"
    assert _CLIENT_ID.fullmatch(out) is not None
    return out


def make_venue_client(settings: VenueSettings, *, environ: dict[str, str] | None = None) -> Any:
    """A synchronous ccxt client of ``settings.exchange`` (spot, rate-limited, the settings'
    timeout, testnet when ``sandbox``), its keys read from the environment.

    Raises
    ------
    ImportError
        ccxt is not installed (the ``exchange`` extra).
    ValueError
        An exchange ccxt does not know, or an API key or secret variable that is unset or empty
        (the message names the variable, never its value).
    """
    from colmena.data.exchange import make_client

    env = os.environ if environ is None else environ
    missing = [n for n in (settings.api_key_env, settings.api_secret_env) if not env.get(n)]
    if missing:
        raise ValueError(
            f"venue: the API credentials are read from ${' and $'.join(missing)}, which "
            f"{'is' if len(missing) == 1 else 'are'} not set"
        )
    client = make_client(
        settings.exchange,
        timeout_ms=math.ceil(settings.timeout_seconds * 1e3),
        api_url=settings.api_url,
    )
    if settings.sandbox:
        client.set_sandbox_mode(True)
    client.apiKey = env[settings.api_key_env]
    client.secret = env[settings.api_secret_env]
    # Spot only: no margin pairs, no wallet endpoints at load time.
    client.options["fetchMargins"] = False
    client.has["fetchCurrencies"] = False
    return client


class VenueClient:
    """The venue's calls for one account: timeouts (the client's), retries of transient errors
    with backoff and jitter, a circuit breaker, and the place-once protocol.

    Thread-safe: the handlers of several symbols may share one (and its breaker); their
    requests go one at a time.

    Parameters
    ----------
    client : ccxt.Exchange
        A synchronous ccxt client with credentials (:func:`make_venue_client`).
    max_attempts, backoff_seconds
        As :class:`VenueSettings`.
    sleep : callable, default time.sleep
        Waits between tries (tests pass one that does not wait).
    on_call : callable, optional
        ``on_call(name, seconds, ok)`` after every request (metrics: API latency, connected).

    Raises
    ------
    ImportError
        ccxt, tenacity or pybreaker not installed.
    """

    def __init__(
        self,
        client: Any,
        *,
        max_attempts: int = 5,
        backoff_seconds: float = 0.5,
        sleep: Callable[[float], None] = time.sleep,
        on_call: Callable[[str, float, bool], None] | None = None,
    ) -> None:
        try:
            import ccxt
            import pybreaker
            import tenacity  # noqa: F401 (the retries)
        except ImportError as exc:
            raise ImportError(
                f"the venue needs {exc.name}: pip install 'colmena-swarm[exchange]'"
            ) from exc
        self.client = client
        self.name = str(getattr(client, "id", "venue"))
        self.max_attempts = max_attempts
        self.backoff_seconds = backoff_seconds
        self._sleep = sleep
        self._on_call = on_call
        self._ccxt = ccxt
        self._pybreaker = pybreaker
        self.breaker = pybreaker.CircuitBreaker(
            fail_max=BREAKER_FAILURES,
            reset_timeout=BREAKER_RESET_SECONDS,
            exclude=[lambda exc: not isinstance(exc, ccxt.OperationFailed)],
            throw_new_error_on_trip=False,
            name=self.name,
        )
        #: Requests sent (each try counts).
        self.requests = 0
        self._serial = threading.Lock()
        self._markets_loaded = False

    # -- plumbing

    def _timed(self, name: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        ok = False
        try:
            with self._serial:  # one request at a time on the shared ccxt client
                self.requests += 1
                out = fn(*args, **kwargs)
            ok = True
            return out
        except self._ccxt.OperationFailed:
            raise
        except self._ccxt.BaseError:
            ok = True  # the venue answered (a refusal is not a connection problem)
            raise
        finally:
            if self._on_call is not None:
                self._on_call(name, time.perf_counter() - started, ok)

    def _once(self, name: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """One request through the circuit breaker."""
        try:
            return self.breaker.call(self._timed, name, fn, *args, **kwargs)
        except self._pybreaker.CircuitBreakerError:
            raise CircuitOpenError(
                f"{self.name}: circuit breaker open after {BREAKER_FAILURES} consecutive "
                f"failures; {name} not called"
            ) from None

    def _retrying(self, name: str, attempt: Callable[[], Any]) -> Any:
        from tenacity import (
            RetryCallState,
            Retrying,
            retry_if_exception,
            stop_after_attempt,
            wait_random_exponential,
        )

        ccxt = self._ccxt

        def transient(exc: BaseException) -> bool:
            return isinstance(exc, ccxt.OperationFailed) and self.breaker.current_state != "open"

        def before_sleep(state: RetryCallState) -> None:
            outcome = state.outcome
            error = outcome.exception() if outcome is not None else None
            log.warning(
                "execution: %s %s: try %d of %d failed (%s); again in %.2f s", self.name, name,
                state.attempt_number, self.max_attempts,
                f"{type(error).__name__}: {error}"[:300] if error else "?", state.upcoming_sleep,
            )  # fmt: skip

        retrying = Retrying(
            stop=stop_after_attempt(self.max_attempts),
            wait=wait_random_exponential(multiplier=self.backoff_seconds, max=MAX_BACKOFF_SECONDS),
            retry=retry_if_exception(transient),
            sleep=self._sleep,
            before_sleep=before_sleep,
            reraise=True,
        )
        try:
            return retrying(attempt)
        except CircuitOpenError as exc:
            raise VenueUnavailableError(str(exc)) from None
        except ccxt.OperationFailed as exc:
            raise VenueUnavailableError(
                f"{self.name}: {name} failed {self.max_attempts} times: "
                f"{type(exc).__name__}: {exc}"[:500]
            ) from None

    def call(self, name: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)`` with the breaker and the retries.

        Raises
        ------
        VenueUnavailableError
            The tries were spent on transient errors, or the breaker is open.
        ccxt.ExchangeError
            The venue refused the call (not retried).
        """
        return self._retrying(name, lambda: self._once(name, fn, *args, **kwargs))

    # -- the venue's calls

    def market(self, symbol: str) -> dict[str, Any]:
        """ccxt's market of ``symbol`` (the markets loaded once).

        Raises
        ------
        VenueUnavailableError
            The markets could not be loaded.
        ValueError
            The venue has no spot market ``symbol``.
        """
        if not self._markets_loaded:
            self.call("load_markets", self.client.load_markets)
            self._markets_loaded = True
        markets = self.client.markets or {}
        if symbol not in markets:
            raise ValueError(f"venue {self.name}: no market {symbol!r}")
        market: dict[str, Any] = markets[symbol]
        return market

    def _lookup_once(self, symbol: str, client_id: str) -> dict[str, Any] | None:
        try:
            found: dict[str, Any] = self._once(
                "fetch_order",
                self.client.fetch_order,
                None,
                symbol,
                {"origClientOrderId": client_id},
            )
        except self._ccxt.OrderNotFound:
            return None
        return found

    def lookup(self, symbol: str, client_id: str) -> dict[str, Any] | None:
        """The order ``client_id`` as ccxt parses it, or None when the venue has none.

        Raises
        ------
        VenueUnavailableError
        """
        return self._retrying("fetch_order", lambda: self._lookup_once(symbol, client_id))  # type: ignore[no-any-return]

    def place_market(
        self, symbol: str, quantity: float, client_id: str, *, may_place: bool = True
    ) -> tuple[dict[str, Any] | None, bool]:
        """Make sure the market order ``client_id`` of ``quantity`` signed base units exists, once.

        Every try first looks the order up by ``client_id``: an order the venue has is returned
        as it is (a lost reply, a second delivery, a restart); else it is placed. A "duplicate
        order" refusal is looked up the same way. ``may_place=False`` only looks it up.

        Returns
        -------
        (order or None, placed)
            ccxt's order (None: not at the venue and not placed), and whether this call
            placed it.

        Raises
        ------
        VenueUnavailableError
            The tries were spent, or the breaker is open (the order may or may not exist).
        ccxt.ExchangeError
            The venue refused the order (insufficient balance, minimum notional...).
        """
        ccxt = self._ccxt
        side = "buy" if quantity > 0 else "sell"
        amount = abs(quantity)

        def attempt() -> tuple[dict[str, Any] | None, bool]:
            found = self._lookup_once(symbol, client_id)
            if found is not None or not may_place:
                return found, False
            try:
                placed: dict[str, Any] = self._once(
                    "create_order", self.client.create_order, symbol, "market", side, amount,
                    None, {"newClientOrderId": client_id},
                )  # fmt: skip
            except ccxt.InvalidOrder as exc:
                if "duplicate order" not in str(exc).lower():
                    raise
                found = self._lookup_once(symbol, client_id)
                if found is None:
                    raise
                return found, False
            return placed, True

        return self._retrying("create_order", attempt)  # type: ignore[no-any-return]

    def cancel(self, symbol: str, client_id: str) -> dict[str, Any] | None:
        """Cancel the open order ``client_id``; returns the order as the venue then has it
        (None: unknown to the venue). An order already closed is returned as it is.

        Raises
        ------
        VenueUnavailableError
        """
        ccxt = self._ccxt

        def attempt() -> dict[str, Any] | None:
            with contextlib.suppress(ccxt.OrderNotFound):  # closed meanwhile: the lookup tells
                self._once(
                    "cancel_order", self.client.cancel_order, None, symbol,
                    {"origClientOrderId": client_id},
                )  # fmt: skip
            return self._lookup_once(symbol, client_id)

        return self._retrying("cancel_order", attempt)  # type: ignore[no-any-return]

    def base_balance(self, asset: str) -> float:
        """Total (free + locked) balance of ``asset``.

        Raises
        ------
        VenueUnavailableError
        """
        balance = self.call("fetch_balance", self.client.fetch_balance)
        entry = balance.get(asset) or {}
        return float(entry.get("total") or 0.0)

    def open_orders(self, symbol: str) -> list[dict[str, Any]]:
        """The open orders of ``symbol`` (ccxt's orders).

        Raises
        ------
        VenueUnavailableError
        """
        orders: list[dict[str, Any]] = self.call(
            "fetch_open_orders", self.client.fetch_open_orders, symbol
        )
        return orders


@dataclass
class _Known:
    """What the records took from one order so far."""

    sign: int
    filled: float = 0.0
    cost: float = 0.0
    fee_quote: float = 0.0
    fee_base: float = 0.0
    open: bool = True


@dataclass
class VenueRecords:
    """The sleeve as this handler's own fills make it up (compared with the venue by
    :mod:`colmena.services.reconcile`).

    Attributes
    ----------
    position : float
        Base units the fills add up to (less fees paid in the base asset).
    cash : float
        The starting capital plus the quote flows of the fills, fees included, quote currency.
    orders : dict of str to _Known
        Every order taken, by client order id.
    unresolved : set of str
        Client order ids whose fate the venue could not tell (looked up again at every
        reconciliation).
    """

    position: float
    cash: float
    orders: dict[str, _Known] = field(default_factory=dict)
    unresolved: set[str] = field(default_factory=set)

    @property
    def open_orders(self) -> int:
        """Orders recorded as open at the venue."""
        return sum(1 for k in self.orders.values() if k.open)


@dataclass
class _Placed:
    """The order waiting for its report."""

    order: Order
    client_id: str
    attempted: float
    reason: str | None = None  # why nothing reached the book (an event code name)
    detail: str = ""


class VenueExecutionHandler(ExecutionSequencer):
    """The execution service of one symbol against a real venue (see the module text).

    Parameters
    ----------
    symbol : str
        ccxt's unified spot symbol (``BTC/USDT``).
    execution : ExecutionSettings
        The sleeve: ``initial_cash`` starts the recorded cash; ``fee_bps`` estimates a fee the
        venue did not report.
    venue : VenueClient
    settings : VenueSettings
    bar_seconds : int, default 60
    clock : callable, default time.time_ns
        Wall clock (ns since the epoch) for ``max_order_age_seconds``.

    Raises
    ------
    ValueError
        A symbol the venue does not list, or not a spot market.
    VenueUnavailableError
        The venue's markets could not be loaded.
    """

    #: ``handle`` makes network calls: the runner calls it off the event loop.
    BLOCKING: ClassVar[bool] = True

    def __init__(
        self,
        symbol: str,
        execution: ExecutionSettings,
        venue: VenueClient,
        settings: VenueSettings,
        *,
        bar_seconds: int = 60,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        super().__init__(symbol)
        self.venue = venue
        self.settings = settings
        self.bar_seconds = bar_seconds
        self._bar_ns = bar_seconds * NS_PER_SECOND
        self._fee_bps = execution.fee_bps
        self._clock = clock
        market = venue.market(symbol)
        if not market.get("spot", False):
            raise ValueError(f"venue {venue.name}: {symbol!r} is not a spot market")
        self.base: str = market["base"]
        self.quote: str = market["quote"]
        self.reserve = float(settings.reserves.get(self.base, 0.0))
        #: The sleeve by this handler's fills.
        self.records = VenueRecords(position=0.0, cash=execution.initial_cash)
        #: Set by a reconciliation difference (:mod:`colmena.services.reconcile`): while it is
        #: not None no order that adds exposure is placed.
        self.hold_reason: str | None = None
        self.lock = threading.RLock()  # one call at a time: handle, reconcile
        self._pending: _Placed | None = None
        self._position_seen = 0.0  # the position of the last account message

    # -- the records

    def learn(self, client_id: str, order: dict[str, Any]) -> None:
        """Take what the venue says of order ``client_id`` into the records (the increments
        since it was last seen)."""
        known = self.records.orders.get(client_id)
        side = order.get("side")
        if known is None:
            known = _Known(sign=1 if side == "buy" else -1)
            self.records.orders[client_id] = known
        filled = float(order.get("filled") or 0.0)
        cost = order.get("cost")
        average = order.get("average")
        if cost is None:
            cost = filled * float(average or 0.0)
        cost = float(cost)
        fee_quote, fee_base = known.fee_quote, known.fee_base
        fees = order.get("fees") or ([order["fee"]] if order.get("fee") else [])
        reported = [f for f in fees if f and f.get("cost") is not None]
        if reported:
            fee_quote = sum(float(f["cost"]) for f in reported if f.get("currency") != self.base)
            fee_base = sum(float(f["cost"]) for f in reported if f.get("currency") == self.base)
        elif filled > known.filled:  # not reported (a lookup after a lost reply): estimated
            fee_quote = known.fee_quote + (cost - known.cost) * self._fee_bps / 1e4
        d_filled, d_cost = filled - known.filled, cost - known.cost
        self.records.position += known.sign * d_filled - (fee_base - known.fee_base)
        self.records.cash -= known.sign * d_cost + (fee_quote - known.fee_quote)
        known.filled, known.cost, known.fee_quote, known.fee_base = (
            filled,
            cost,
            fee_quote,
            fee_base,
        )
        known.open = order.get("status") in _OPEN_STATUS
        self.records.unresolved.discard(client_id)

    def venue_position(self) -> float:
        """The sleeve's position at the venue: the base asset's total balance less the reserve.

        Raises
        ------
        VenueUnavailableError
        """
        return self.venue.base_balance(self.base) - self.reserve

    # -- messages

    def handle(self, message: wire.WireMessage) -> list[wire.WireMessage]:
        """Take a candle, gate or order; return the execution reports and accounts it made
        ready (as :meth:`colmena.live.handlers.ExecutionHandler.handle`). An order is placed
        when its message comes.

        Raises
        ------
        SequenceError
            Another symbol, or a kind the execution service does not take.
        """
        with self.lock:
            return self._sequence(message)

    def _take_order(self, ts: int, message: wire.OrderMessage) -> None:
        order = message.decided.order
        if order is not None:
            self._pending = self._place(message, order)

    def _open_and_close(self, ts: int, candle: Bar, gate: RiskGate) -> list[wire.WireMessage]:
        # The order went to the venue when it came (a market order fills at once), clipped by
        # its own reduce_only flag (:meth:`_clip`; the risk stage set it from the state at the
        # decision); the gate at this open is not applied again: the report and the account.
        out: list[wire.WireMessage] = []
        if self._pending is not None:
            report = self._report(self._pending, candle)
            self._pending = None
            out.append(wire.ExecutionMessage(symbol=self.symbol, ts=ts, report=report))
        account = self._account(candle)
        out.append(wire.AccountMessage(symbol=self.symbol, ts=ts, snapshot=account))
        return out

    def _place(self, message: wire.OrderMessage, order: Order) -> _Placed:
        client_id = client_order_id(self.settings.client_id_prefix, wire.idempotency_key(message))
        quantity = self._clip(order)
        placed = _Placed(order=order, client_id=client_id, attempted=0.0)
        if quantity != 0.0:
            try:
                amount = float(self.venue.client.amount_to_precision(self.symbol, abs(quantity)))
            except self.venue._ccxt.BaseError:  # below the precision: ccxt refuses
                amount = 0.0
            placed.attempted = math.copysign(amount, quantity)
        too_old = self.settings.max_order_age_seconds is not None and (
            self._clock() - order.ts > self.settings.max_order_age_seconds * NS_PER_SECOND
        )
        # A reconciliation difference holds orders that add exposure (spot: buys).
        held = self.hold_reason is not None and placed.attempted > 0.0
        may_place = placed.attempted != 0.0 and not held and not too_old
        try:
            # Looked up even when it is not to be placed: a replay after a restart finds the
            # orders of an earlier life whatever the position is now.
            found, _ = self.venue.place_market(
                self.symbol, placed.attempted or order.quantity, client_id, may_place=may_place
            )
        except VenueUnavailableError as exc:
            log.error("execution %s: order %d (%s): %s", self.symbol, order.id, client_id, exc)
            if may_place:
                self.records.unresolved.add(client_id)
                placed.reason, placed.detail = "venue_unreachable", str(exc)
            return placed
        except self.venue._ccxt.ExchangeError as exc:
            log.warning("execution %s: order %d rejected: %s", self.symbol, order.id, exc)
            placed.reason, placed.detail = "venue_rejected", str(exc)[:300]
            return placed
        if found is not None:
            self.learn(client_id, found)
            amount = float(found.get("amount") or abs(placed.attempted))
            placed.attempted = amount if found.get("side") == "buy" else -amount
        elif quantity != 0.0 and placed.attempted == 0.0:
            placed.reason = "below_lot_step"
        elif placed.attempted != 0.0:  # not at the venue, and not to be placed
            placed.reason = "reconciliation_hold" if held else "order_expired"
        return placed

    def _clip(self, order: Order) -> float:
        """The order's quantity clipped as the paper account clips it (spot: never below flat;
        reduce-only: only toward flat), against the position of the last account message."""
        q, pos = order.quantity, max(self._position_seen, 0.0)
        if q < 0:
            q = max(q, -pos)
        if order.reduce_only and not (pos > 0 and q < 0):
            q = 0.0
        return q

    def _event(self, ts: int, name: str, value: float) -> RiskEvent:
        kind: Literal["alert", "error"] = "alert" if name == "partial_fill" else "error"
        return RiskEvent(
            ts=ts, type=kind, code=VENUE_EVENT_CODES[name], code_name=name, value=value
        )

    def _report(self, placed: _Placed, candle: Bar) -> ExecutionReport:
        ts = candle.ts
        order = placed.order
        events: list[RiskEvent] = []
        known = self.records.orders.get(placed.client_id)
        if placed.reason is None and known is not None and known.open:
            try:  # a market order still on the book: the rest is cancelled
                final = self.venue.cancel(self.symbol, placed.client_id)
                if final is not None:
                    self.learn(placed.client_id, final)
            except VenueUnavailableError as exc:
                log.error("execution %s: cancel of %s: %s", self.symbol, placed.client_id, exc)
        elif placed.reason == "venue_unreachable":
            try:  # its fate, now
                found, _ = self.venue.place_market(
                    self.symbol, placed.attempted, placed.client_id, may_place=False
                )
            except VenueUnavailableError:
                found = None
            if found is not None:
                self.learn(placed.client_id, found)
                placed.reason = None
                known = self.records.orders[placed.client_id]
                if known.open:
                    return self._report(placed, candle)
        if placed.reason is not None:
            events.append(self._event(ts, placed.reason, placed.attempted))
            if placed.detail:
                log.info("execution %s: order %d: %s (%s)", self.symbol, order.id, placed.reason,
                         placed.detail)  # fmt: skip
            return ExecutionReport(
                order_id=order.id, ts=ts, attempted=0.0, fill=None, error=None,
                cash=self.records.cash, position=self.records.position, events=tuple(events),
            )  # fmt: skip
        known = self.records.orders.get(placed.client_id)
        fill = None
        if known is not None and known.filled > 0.0:
            quantity = known.sign * known.filled
            price = known.cost / known.filled
            fee = known.fee_quote + known.fee_base * price
            fill = Fill(
                ts=ts, quantity=quantity, price=price, fee=fee,
                slippage_cost=quantity * (price - candle.open), requested=placed.attempted,
            )  # fmt: skip
            events.append(
                RiskEvent(ts=ts, type="trade_executed", code=0, code_name="", value=quantity)
            )
            unfilled = abs(placed.attempted) - known.filled
            if unfilled > 0.0:
                events.append(self._event(ts, "partial_fill", unfilled))
        error: Literal["no_volume"] | None = None
        if fill is None and placed.attempted != 0.0:
            error = "no_volume"  # nothing filled: the whole order stays as the remainder
        return ExecutionReport(
            order_id=order.id, ts=ts, attempted=placed.attempted, fill=fill, error=error,
            cash=self.records.cash, position=self.records.position, events=tuple(events),
        )  # fmt: skip

    def _account(self, candle: Bar) -> AccountSnapshot:
        close_ts = candle.ts + self._bar_ns
        age = self.settings.max_order_age_seconds
        if age is not None and self._clock() - close_ts > age * NS_PER_SECOND:
            # A bar long closed (a replay): its account is the records', no request.
            position = self.records.position
        else:
            position = self._venue_position_or_records()
        self._position_seen = position
        cash = self.records.cash
        return AccountSnapshot(
            ts=close_ts,
            mark=candle.close,
            cash=cash,
            position=position,
            equity=cash + position * candle.close,
        )

    def _venue_position_or_records(self) -> float:
        try:
            return self.venue_position()
        except VenueUnavailableError as exc:
            log.error("execution %s: the venue's balance could not be read (%s): the account "
                      "uses the recorded position", self.symbol, exc)  # fmt: skip
            return self.records.position

    @property
    def newest_ts(self) -> int | None:
        """Open time of the newest bar whose order was taken (None before the first)."""
        return self._done_ts
