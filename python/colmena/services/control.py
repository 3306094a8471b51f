"""Control of the running system: ``colmena ctl status | pause | resume | flatten | halt | reset``
over NATS request/reply, answered by the risk service and audited in PostgreSQL.

The design documents' runbook asks for a kill switch, a safe mode and a manual reset; the
operator's actions go where the decisions are made, the risk service:

- ``pause``: the safe mode. PAUSED, only exposure-reducing orders, until ``resume``.
- ``resume``: ends the person's pause (a running ladder or daily-loss pause still holds).
- ``flatten``: pause and close the position at the next decision.
- ``halt``: HALTED (the kill switch's state): flatten and stay halted until ``reset``.
- ``reset``: ends a HALT; an explicit reason is required. Without ``--symbol`` it resets every
  symbol and the account's kill switch over all of them; a symbol alone cannot be reset while
  the account's kill switch holds every symbol.
- ``status``: every symbol's trading state, pause, HALT, newest decided bar, equity, drawdown,
  the actions accepted and not yet applied, and the account's kill switch.

Protocol: a :class:`ControlRequest` (JSON) on ``colmena.control.v1.<action>`` (core NATS, not
the stream: a request is answered now or not at all); the risk service (:class:`ControlResponder`,
one queue group) answers with a :class:`ControlReply`. An accepted action becomes one
:class:`colmena.live.wire.ControlMessage` per symbol, published to the stream (so the recorder
writes it to ``live_control``: who, when, why, from which bar) and confirmed there before the
reply; the risk handler applies it at the open of its next bar
(:meth:`colmena.live.handlers.RiskHandler.take_control`). A request is identified by its
``request_id``: the client retries a request that got no answer with the same id, and the
stream's duplicate window and the handler drop the second copy, so an action is applied once.

Only the operator's NATS identity may publish on the control subjects
(:mod:`colmena.services.access`).
"""

from __future__ import annotations

import asyncio
import getpass
import logging
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final, Literal, get_args

import msgspec
import nats
import nats.errors
import tenacity
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from colmena.live import wire
from colmena.live.account import AccountGuard
from colmena.live.handlers import RiskHandler

__all__ = [
    "CONTROL_SUBJECT_ROOT",
    "REQUESTS",
    "AccountControlStatus",
    "ControlError",
    "ControlReply",
    "ControlRequest",
    "ControlResponder",
    "ControlUnavailableError",
    "SymbolControlStatus",
    "control_subject",
    "default_operator",
    "send_control",
]

log = logging.getLogger(__name__)

#: Root of the control subjects: ``colmena.control.v1.<action>``.
CONTROL_SUBJECT_ROOT: Final = f"colmena.control.v{wire.WIRE_VERSION}"
#: What ``colmena ctl`` can ask.
RequestName = Literal["status", "pause", "resume", "flatten", "halt", "reset"]
REQUESTS: Final[tuple[str, ...]] = get_args(RequestName)
#: The queue group of the risk services' responders (one answers each request).
_QUEUE: Final = "colmena-risk-control"
_MAX_TEXT: Final = 1_000


class _NoAnswerError(Exception):
    """One attempt got no answer in time (retried)."""


class ControlError(ValueError):
    """A control request the risk service refused (the message says why)."""


class ControlUnavailableError(ConnectionError):
    """No risk service answered (none running, or NATS unreachable)."""


class ControlRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What ``colmena ctl`` asks (JSON on :func:`control_subject`).

    Attributes
    ----------
    action : {"status", "pause", "resume", "flatten", "halt", "reset"}
    request_id : str
        Unique per request (a UUID); a retry sends the same id.
    operator : str
        Who asks (1-200 characters).
    reason : str
        Why; required for ``reset``.
    symbol : str or None
        One symbol; None: every symbol of the risk service (and, for ``reset``, the account's
        kill switch).
    requested_ns : int
        When, ns since the epoch (UTC, the requester's clock).
    """

    action: RequestName
    request_id: str
    operator: str
    reason: str = ""
    symbol: str | None = None
    requested_ns: int = 0


class SymbolControlStatus(msgspec.Struct, frozen=True):
    """One symbol as the risk service sees it.

    Attributes
    ----------
    symbol : str
    trading_state : {"ACTIVE", "REDUCING", "PAUSED", "HALTED"}
    operator_paused : bool
        A person's pause holds.
    closed_ts : int or None
        Open time of the newest bar decided, ns since the epoch (None before the first).
    equity : float
        Equity at that close, quote currency (0 before the first).
    drawdown : float
        Drawdown from the circuit-breaker ladder's reference equity, fraction.
    pending : tuple of str
        Actions accepted and not yet applied (they apply at the next bar's open).
    applies_from_ts : int or None
        For an accepted action: the open time from which it applies (the next bar).
    open_order : float
        The order sent to execution and not yet reported on, signed base units (0: none);
        it fills or is cancelled at the next bar's open.
    """

    symbol: str
    trading_state: str
    operator_paused: bool
    closed_ts: int | None
    equity: float
    drawdown: float
    pending: tuple[str, ...] = ()
    applies_from_ts: int | None = None
    open_order: float = 0.0


class AccountControlStatus(msgspec.Struct, frozen=True):
    """The account's kill switch over every symbol (:class:`AccountGuard`).

    Attributes
    ----------
    halted : bool
    halted_ts : int
        When it tripped, ns since the epoch (0: it has not).
    drawdown : float
        The account's drawdown when it tripped, fraction.
    evaluated_ts : int
        Open time of the newest bar whose total was observed.
    """

    halted: bool
    halted_ts: int
    drawdown: float
    evaluated_ts: int


class ControlReply(msgspec.Struct, frozen=True):
    """The risk service's answer.

    Attributes
    ----------
    ok : bool
        False: refused, ``error`` says why and nothing changed.
    request_id : str
    error : str
    accepted : bool
        The action was new (False for a status, a refusal, or a retry of an accepted request).
    symbols : tuple of SymbolControlStatus
    account : AccountControlStatus or None
        None when the risk service has no account guard.
    """

    ok: bool
    request_id: str
    error: str = ""
    accepted: bool = False
    symbols: tuple[SymbolControlStatus, ...] = ()
    account: AccountControlStatus | None = None


_REQUEST_DECODER: Final = msgspec.json.Decoder(ControlRequest)
_REPLY_DECODER: Final = msgspec.json.Decoder(ControlReply)


def control_subject(action: str) -> str:
    """The subject of a request: ``colmena.control.v1.<action>``.

    Raises
    ------
    ValueError
        An action other than :data:`REQUESTS`.
    """
    if action not in REQUESTS:
        raise ValueError(f"unknown control action {action!r}; expected one of {REQUESTS}")
    return f"{CONTROL_SUBJECT_ROOT}.{action}"


def default_operator() -> str:
    """``user@host`` of this process: who asks when ``--operator`` is not given."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def _check_request(request: ControlRequest) -> None:
    """Raise :class:`ControlError` for a request no risk service would accept."""
    if not 0 < len(request.request_id) <= 100 or not request.request_id.isascii():
        raise ControlError("request_id: 1-100 ASCII characters")
    if not 0 < len(request.operator.strip()) <= 200:
        raise ControlError("operator: say who asks (1-200 characters)")
    if len(request.reason) > _MAX_TEXT:
        raise ControlError(f"reason: at most {_MAX_TEXT} characters")
    if request.action == "reset" and not request.reason.strip():
        raise ControlError("reset: a HALT is reset only with a reason (--reason)")
    if request.symbol is not None:
        try:
            wire.check_symbol(request.symbol)
        except wire.WireError as exc:
            raise ControlError(str(exc)) from None


class ControlResponder:
    """The risk service's side: answers control requests for its symbols.

    Parameters
    ----------
    client : nats.aio.client.Client
        The service's NATS connection.
    handlers : mapping of str to RiskHandler
        The service's risk handlers, by symbol.
    locks : mapping of str to asyncio.Lock
        The lock each symbol's messages are handled under (an action is accepted between two
        messages).
    publish : callable
        ``await publish(message)``: publish to the stream and wait for its confirmation
        (:meth:`colmena.services.bus.Bus.publish`).
    account : AccountGuard or None
        The account's kill switch over every symbol, when the service holds one.
    on_account_reset : callable, optional
        ``await on_account_reset()`` after the account's kill switch was reset (the service
        saves the guard's state).
    """

    def __init__(
        self,
        client: Client,
        handlers: Mapping[str, RiskHandler],
        locks: Mapping[str, asyncio.Lock],
        publish: Callable[[wire.WireMessage], Awaitable[Any]],
        *,
        account: AccountGuard | None = None,
        on_account_reset: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._client = client
        self._handlers = dict(handlers)
        self._locks = dict(locks)
        self._publish = publish
        self._account = account
        self._on_account_reset = on_account_reset
        self._subscription: Subscription | None = None

    async def start(self) -> None:
        """Subscribe to the control subjects (one queue group over every risk service)."""
        self._subscription = await self._client.subscribe(
            f"{CONTROL_SUBJECT_ROOT}.*", queue=_QUEUE, cb=self._on_message
        )

    async def stop(self) -> None:
        """Stop answering."""
        if self._subscription is not None:
            await self._subscription.unsubscribe()
            self._subscription = None

    async def _on_message(self, msg: Msg) -> None:
        reply = await self.answer(msg.data)
        if msg.reply:
            try:
                await msg.respond(msgspec.json.encode(reply))
            except nats.errors.Error as exc:  # the requester is gone: it retries with the id
                log.warning("control: reply to %s not sent: %s", reply.request_id, exc)

    async def answer(self, data: bytes) -> ControlReply:
        """The reply to one request's bytes (never raises: a refusal is ``ok=False``)."""
        try:
            request = _REQUEST_DECODER.decode(data)
        except msgspec.DecodeError as exc:
            return ControlReply(ok=False, request_id="", error=f"bad request: {exc}")
        try:
            _check_request(request)
            return await self._answer(request)
        except ControlError as exc:
            log.warning("control: %s by %s refused: %s", request.action, request.operator, exc)
            return ControlReply(ok=False, request_id=request.request_id, error=str(exc))

    def _symbols(self, request: ControlRequest) -> list[str]:
        if request.symbol is None:
            return sorted(self._handlers)
        if request.symbol not in self._handlers:
            raise ControlError(
                f"symbol {request.symbol!r} is not traded here (this risk service trades "
                f"{', '.join(sorted(self._handlers))})"
            )
        return [request.symbol]

    def _status(self, symbol: str, applies_from: int | None = None) -> SymbolControlStatus:
        handler = self._handlers[symbol]
        manager = handler.stage.risk_manager
        assert manager is not None  # a live risk handler always has one
        outstanding = handler.stage.outstanding
        return SymbolControlStatus(
            symbol=symbol,
            trading_state=manager.state,
            operator_paused=manager.operator_paused,
            closed_ts=handler.closed_ts,
            equity=manager.snapshot().last_equity,
            drawdown=manager.drawdown,
            pending=tuple(c.action for c in handler.pending_controls),
            applies_from_ts=applies_from,
            open_order=0.0 if outstanding is None else outstanding.quantity,
        )

    def _account_status(self) -> AccountControlStatus | None:
        a = self._account
        if a is None:
            return None
        return AccountControlStatus(
            halted=a.halted,
            halted_ts=a.halted_ts,
            drawdown=a.halted_drawdown,
            evaluated_ts=a.evaluated_ts,
        )

    async def _answer(self, request: ControlRequest) -> ControlReply:
        symbols = self._symbols(request)
        if request.action == "status":
            return ControlReply(
                ok=True,
                request_id=request.request_id,
                symbols=tuple(self._status(s) for s in symbols),
                account=self._account_status(),
            )
        account_reset = request.action == "reset" and request.symbol is None
        if (
            request.action == "reset"
            and not account_reset
            and self._account is not None
            and self._account.halted
        ):
            raise ControlError(
                "reset: the account's kill switch halted every symbol; reset the whole "
                "account (no --symbol)"
            )
        accepted = False
        statuses = []
        locks = list({id(self._locks[s]): self._locks[s] for s in symbols}.values())
        for lock in locks:
            await lock.acquire()
        try:
            for symbol in symbols:
                handler = self._handlers[symbol]
                message = wire.ControlMessage(
                    symbol=symbol,
                    ts=handler.next_open_ts(),
                    action=request.action,
                    request_id=request.request_id,
                    operator=request.operator,
                    reason=request.reason,
                    requested_ns=request.requested_ns,
                    account=account_reset,
                )
                # Recorded before it is applied: the stream confirms it, then the handler
                # takes it (a crash in between: the restarted service takes it from the
                # stream).
                await self._publish(message)
                accepted = handler.take_control(message) or accepted
                statuses.append(self._status(symbol, message.ts))
            if account_reset and self._account is not None and self._account.reset():
                accepted = True
                log.warning("control: the account's kill switch was reset by %s: %s",
                            request.operator, request.reason)  # fmt: skip
                if self._on_account_reset is not None:
                    await self._on_account_reset()
        finally:
            for lock in locks:
                lock.release()
        if accepted:
            log.warning(
                "control: %s of %s by %s accepted (%s); applies from the next bar",
                request.action, ", ".join(symbols), request.operator, request.reason or "-",
            )  # fmt: skip
        return ControlReply(
            ok=True,
            request_id=request.request_id,
            accepted=accepted,
            symbols=tuple(statuses),
            account=self._account_status(),
        )


async def send_control(
    url: str,
    action: str,
    *,
    symbol: str | None = None,
    reason: str = "",
    operator: str | None = None,
    timeout: float = 5.0,
    attempts: int = 3,
    connect: Callable[..., Awaitable[Client]] = nats.connect,
    connect_options: Mapping[str, Any] | None = None,
) -> ControlReply:
    """Ask the risk service (what ``colmena ctl`` does).

    Parameters
    ----------
    url : str
        The NATS server.
    action : {"status", "pause", "resume", "flatten", "halt", "reset"}
    symbol : str, optional
        One symbol; None: every symbol.
    reason : str
        Why (required for ``reset``).
    operator : str, optional
        Who asks (default :func:`default_operator`).
    timeout : float
        Seconds to wait for each attempt's answer.
    attempts : int
        Attempts in all; each retry sends the same ``request_id`` (applied once).
    connect, connect_options
        How to connect (``nats.connect`` and its keyword arguments, e.g. the operator's
        credentials).

    Returns
    -------
    ControlReply
        ``ok`` True; a refusal raises.

    Raises
    ------
    ControlError
        A request that cannot be valid (checked before sending) or one the risk service
        refused (its reason).
    ControlUnavailableError
        NATS cannot be reached, or no risk service answered in ``attempts`` tries.
    """
    request = ControlRequest(
        action=action,  # type: ignore[arg-type]  # checked by control_subject
        request_id=uuid.uuid4().hex,
        operator=operator if operator is not None else default_operator(),
        reason=reason,
        symbol=symbol,
        requested_ns=time.time_ns(),
    )
    subject = control_subject(action)
    _check_request(request)
    try:
        client = await asyncio.wait_for(
            connect(url, connect_timeout=timeout, allow_reconnect=False,
                    **dict(connect_options or {})),
            timeout=timeout + 1.0,
        )  # fmt: skip
    except (OSError, nats.errors.Error, asyncio.TimeoutError) as exc:
        raise ControlUnavailableError(
            f"cannot connect to NATS at {url}: {str(exc) or type(exc).__name__}"
        ) from None
    try:
        payload = msgspec.json.encode(request)
        retrying = tenacity.AsyncRetrying(
            retry=tenacity.retry_if_exception_type(_NoAnswerError),
            stop=tenacity.stop_after_attempt(attempts),
            wait=tenacity.wait_exponential_jitter(max=4.0),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    try:
                        msg = await client.request(subject, payload, timeout=timeout)
                    except nats.errors.NoRespondersError:
                        raise ControlUnavailableError(
                            f"no risk service is listening on {url} (is `colmena up` running?)"
                        ) from None
                    except (nats.errors.TimeoutError, asyncio.TimeoutError):
                        log.warning("control: no answer in %g s", timeout)
                        raise _NoAnswerError from None
        except _NoAnswerError:
            raise ControlUnavailableError(
                f"no risk service answered {action} on {url} in {attempts} tries of {timeout:g} s"
            ) from None
        reply = _REPLY_DECODER.decode(msg.data)
        if not reply.ok:
            raise ControlError(reply.error)
        return reply
    finally:
        await client.close()
