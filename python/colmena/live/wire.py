"""The wire contract of the live system: every NATS subject and its message, version 1.

The live services (SPEC "The live system": ingest, strategy, risk, execution, recorder) talk only
through the messages below, one per subject kind. Each is a frozen :class:`msgspec.Struct`
defined once here, wrapping the trading loop's own messages (:mod:`colmena.execution.trading_loop`)
so that what crosses the bus is exactly what the stepped backtest exchanges between its halves.

Subjects: ``colmena.v1.<kind>.<symbol>``, for example ``colmena.v1.candle.BTC/USDT``. The version
is part of the subject, so a breaking change is a new subject (``v2``) that old consumers never
see. The language-neutral contract (an AsyncAPI 3.0 document with JSON Schemas) is generated from
these Structs into ``proto/`` by :mod:`colmena.live.contract`; CI regenerates it and fails on any
difference.

Compatibility rule: within a version, fields are only added, each with a default, at the end of a
message; nothing is removed, renamed, retyped or made required. Decoders therefore ignore unknown
fields of a newer producer (``forbid_unknown_fields=False``); anything else is a new version.

Encoding: MessagePack (``application/msgpack``; :func:`encode` / :func:`decode`): 0.57 of the
size of the JSON encoding of the same messages at the same speed (2,449 against 4,310 bytes for
one bar's messages of one symbol; ``bench/test_bench_wire.py`` measures both). Every
message carries its kind in the field ``kind``, so a recorder can decode any of them with one
decoder (:func:`decode_any`).

Idempotency: every message has a key (:func:`idempotency_key`), sent as the JetStream
``Nats-Msg-Id`` header. It is derived from the symbol and the bar's open time (and the order id or
event sequence where one bar has several), never from the wall clock, so a message re-published
after a crash is dropped by the stream's duplicate window, and a recorder that sees a key twice
writes one row.

Units: timestamps ``ts`` in ns since the epoch (UTC), the open time of the bar a message belongs
to; prices in the quote currency; quantities in signed base units; signals in [-1, 1]; bar lengths
in seconds.
"""

from __future__ import annotations

import math
import re
from typing import Final, Literal, TypeAlias, get_args

import msgspec

from colmena.execution.trading_loop import (
    AccountSnapshot,
    Action,
    Bar,
    Decision,
    ExecutionReport,
    Order,
    RiskDecision,
    RiskEvent,
    RiskGate,
    RiskManagerSnapshot,
    TradingStateName,
)

__all__ = [
    "CONTROL_ACTIONS",
    "MESSAGE_TYPES",
    "SUBJECT_ROOT",
    "WIRE_VERSION",
    "AccountMessage",
    "CandleMessage",
    "ControlAction",
    "ControlMessage",
    "DecisionAudit",
    "EventMessage",
    "ExecutionMessage",
    "GateMessage",
    "MessageKind",
    "OrderMessage",
    "ReconciliationMessage",
    "RiskStateMessage",
    "SignalMessage",
    "WireError",
    "WireMessage",
    "check_symbol",
    "decode",
    "decode_any",
    "encode",
    "idempotency_key",
    "risk_state_message",
    "subject",
    "subject_filter",
]

#: Version of the contract; part of every subject (``colmena.v1.…``).
WIRE_VERSION: Final = 1
#: First token of every subject.
SUBJECT_ROOT: Final = "colmena"

MessageKind = Literal[
    "candle",
    "signal",
    "gate",
    "execution",
    "account",
    "order",
    "audit",
    "event",
    "risk_state",
    "control",
    "reconciliation",
]
#: What an operator (or the reconciliation) can ask of the risk service: ``pause`` (reduce-only
#: until ``resume``), ``resume``, ``flatten`` (close the position at the next decision and pause),
#: ``halt`` (HALTED: flatten, stay halted until ``reset``) and ``reset`` (end a HALT; needs a
#: reason).
ControlAction = Literal["pause", "resume", "flatten", "halt", "reset"]
CONTROL_ACTIONS: Final[tuple[ControlAction, ...]] = get_args(ControlAction)

# A symbol is one subject token: letters, digits and the separators of ccxt's unified symbols
# ("BTC/USDT", "BTC/USDT:USDT", "BTC-PERP"); never ".", "*", ">" or whitespace (NATS syntax).
_SYMBOL = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-/:]{0,63}")


class WireError(ValueError):
    """A message, subject or symbol that breaks the wire contract; the message says which."""


class _Message(
    msgspec.Struct, frozen=True, kw_only=True, tag_field="kind", forbid_unknown_fields=False
):
    """Common fields: the market symbol (ccxt's unified form) and the bar's open time (ns)."""

    symbol: str
    ts: int


class CandleMessage(_Message, tag="candle", frozen=True):
    """A closed candle, published once by the ingest service.

    Attributes
    ----------
    symbol : str
    ts : int
        Open time of the candle, ns since the epoch (UTC); equals ``bar.ts``.
    bar_seconds : int
        Candle length in seconds (60 for one-minute candles).
    bar : Bar
        Open, high, low, close (quote currency) and volume (base units).
    received_ns : int, default 0
        When the feed received the closed candle from the exchange, ns since the epoch (UTC,
        the feed's clock); 0 for replayed and ingested history. The risk service's stale-data
        rule reads it: a candle received more than ``stale_after_seconds`` after its close
        makes that bar's decision reduce-only (REDUCING) with a ``data_feed_silent`` alert, and
        the first fresh candle ends it (:meth:`RiskStage.close`).
    """

    bar_seconds: int
    bar: Bar
    received_ns: int = 0


class SignalMessage(_Message, tag="signal", frozen=True):
    """The strategy's output at the close of one candle (published for every candle, so the risk
    service steps every bar).

    Attributes
    ----------
    ts : int
        Open time of the candle the signal was computed at; the decision is stamped at its close.
    action : {"hold", "decide", "gated_flat", "end_of_run"}
        What the trading loop is asked (:data:`colmena.execution.trading_loop.Action`).
    signal : float or None
        The voters' consensus in [-1, 1]; None when there is none.
    valid : bool
        The market state at this candle is complete.
    regime : int
        Regime code (index of :data:`colmena.features.REGIME_NAMES`), -1 when none was measured.
    model_sha256 : str
        SHA-256 of the checkpoint the strategy runs (hex), so every decision names its model.
    agent_signals : tuple of float
        Every agent's signal in [-1, 1] at a decision bar with a valid state; empty otherwise
        (for the decision audit).
    """

    action: Action
    signal: float | None
    valid: bool
    regime: int
    model_sha256: str
    agent_signals: tuple[float, ...] = ()


class GateMessage(_Message, tag="gate", frozen=True):
    """The risk state at a candle's open (:class:`RiskGate`), risk service to execution."""

    gate: RiskGate


class ExecutionMessage(_Message, tag="execution", frozen=True):
    """The execution's report on the pending order at a candle's open: the fill (or why none),
    the account after it, risk events and closed round trips (:class:`ExecutionReport`)."""

    report: ExecutionReport


class AccountMessage(_Message, tag="account", frozen=True):
    """The account marked at a candle's close (:class:`AccountSnapshot`), execution to risk."""

    snapshot: AccountSnapshot


class OrderMessage(_Message, tag="order", frozen=True):
    """The risk service's decision at a candle's close: verdict, target, Kelly fraction, the
    order for the next open (None when nothing is to be traded) and the risk events that decided
    it (:class:`RiskDecision`)."""

    decided: RiskDecision


class DecisionAudit(_Message, tag="audit", frozen=True):
    """Everything one decision was made from, so that an incident can be replayed.

    Attributes
    ----------
    model_sha256 : str
        SHA-256 of the checkpoint (hex).
    candle : Bar
        The candle the decision was made at.
    agent_signals : tuple of float
        Every agent's signal in [-1, 1] (empty when the swarm did not run).
    regime : int
    action : Action
    signal : float or None
    decision : Decision
        The risk decision (requested and target fractions of equity, verdict, Kelly fraction).
    order : Order or None
    """

    model_sha256: str
    candle: Bar
    agent_signals: tuple[float, ...]
    regime: int
    action: Action
    signal: float | None
    decision: Decision
    order: Order | None


class EventMessage(_Message, tag="event", frozen=True):
    """One risk or system event (:class:`RiskEvent`): a trade, a regime change, a drawdown
    threshold, an alert, an error. ``seq`` numbers the events of one bar from 0."""

    seq: int
    event: RiskEvent


class RiskStateMessage(_Message, tag="risk_state", frozen=True):
    """The account's risk state after a candle's close, published by the risk service at every
    close next to the decision (for dashboards, alerts and the records).

    A public view of the risk manager's state (:class:`RiskManagerSnapshot`, taken by
    :meth:`RiskStage.snapshot` right after :meth:`RiskStage.close`) and of the decision: every
    value is the stage's own, none is computed again here (:func:`risk_state_message`). Added to
    version 1 of the contract; like every message, later fields come only with defaults.

    Attributes
    ----------
    symbol : str
    ts : int
        Open time of the candle, ns since the epoch (UTC); the state is the one after its close
        (``ts`` plus the bar length).
    state : {"ACTIVE", "REDUCING", "PAUSED", "HALTED"}
        The trading state after the close (the decision's ``state``).
    halted : bool
        The kill switch (a fall of more than ``halt_drawdown`` within ``halt_window_seconds``)
        or an operator (:meth:`RiskStage.halt`) HALTED trading: ``state == "HALTED"``, which
        only a person's reset ends.
    peak_equity : float
        The circuit-breaker ladder's reference equity (highest since the ladder was last
        armed), quote currency.
    drawdown : float
        Drawdown from ``peak_equity`` at the close, fraction (>= 0; 0.05 is 5 %).
    high_equity : float
        All-time high of equity (the drawdown alerts' reference), quote currency.
    drawdown_from_high : float
        Drawdown from ``high_equity`` at the close, fraction (>= 0).
    ladder_level : int
        Ladder levels fired in this excursion, 0..3.
    paused_until : int
        End of the current or last pause, ns since the epoch (UTC); 0: no pause yet (a
        pause is running while ``state`` is PAUSED).
    daily_pnl : float
        PnL of the UTC day so far, fraction of ``day_start_equity`` (-0.02 is a 2 % loss).
    day_start_equity : float
        The previous UTC day's last equity (the daily PnL's reference), quote currency.
    equity : float
        Equity at the close, quote currency (the account's, as the risk manager observed it).
    bar_volatility : float
        EWMA volatility of the bar log returns: ``sqrt(ewma_variance)`` of the risk manager's
        RiskMetrics EWMA variance (``ewma_lambda``), per bar, not annualized (>= 0; 0 before
        the first return).
    volatility_returns : int
        Bar log returns in that estimate (the risk manager sizes with the volatility from 30
        returns on).
    kelly_fraction : float or None
        The Kelly fraction the decision at this close used, in [0, 1] (the decision's
        ``kelly``); None when there is none (pass-through mode).
    kelly_round_trips : int
        Round trips in the Kelly window (the shadow book's; at most ``kelly_window``).
    """

    state: TradingStateName
    halted: bool
    peak_equity: float
    drawdown: float
    high_equity: float
    drawdown_from_high: float
    ladder_level: int
    paused_until: int
    daily_pnl: float
    day_start_equity: float
    equity: float
    bar_volatility: float
    volatility_returns: int
    kelly_fraction: float | None
    kelly_round_trips: int


class ControlMessage(_Message, tag="control", frozen=True):
    """A control action on one symbol, accepted by the risk service (``colmena ctl``, or a
    pause the reconciliation asked for) and recorded before it is applied: the risk service
    publishes it, takes it back from the stream and applies it at the open of the first bar
    whose open time is at or after ``ts`` (:meth:`colmena.live.handlers.RiskHandler.handle`), so
    a restart, a replay and the replay-audit apply it at the same bar.

    Attributes
    ----------
    ts : int
        Open time of the first bar the action applies to, ns since the epoch (UTC): the bar
        after the newest one the risk service had closed when it accepted the request.
    action : {"pause", "resume", "flatten", "halt", "reset"}
        :data:`ControlAction`.
    request_id : str
        The request's id (the same for every symbol of one request); part of the idempotency
        key, so a retried request is applied once.
    operator : str
        Who asked (the ``--operator`` of ``colmena ctl``; ``reconciliation`` for a pause the
        reconciliation asked for).
    reason : str
        Why (required for ``reset``).
    requested_ns : int
        When the request was made, ns since the epoch (UTC, the requester's clock).
    account : bool, default False
        ``reset`` of the account's kill switch over every symbol (the request named no symbol).
    """

    action: ControlAction
    request_id: str
    operator: str
    reason: str
    requested_ns: int
    account: bool = False


class ReconciliationMessage(_Message, tag="reconciliation", frozen=True):
    """The outcome of one reconciliation of a symbol's records with the venue, published by the
    execution service of a real venue (at its start and periodically); a difference makes the
    risk service pause the symbol (a :class:`ControlMessage` with operator ``reconciliation``).

    Attributes
    ----------
    ts : int
        Open time of the newest bar the execution service had finished, ns since the epoch.
    checked_ns : int
        When the venue was asked, ns since the epoch (UTC, wall clock).
    venue_position, recorded_position : float
        The position at the venue and in the records, signed base units.
    venue_open_orders, recorded_open_orders : int
        Open orders at the venue and in the records.
    difference : bool
        The two disagree beyond the tolerance.
    detail : str
        What differs, for the audit and the alert (empty when nothing does).
    """

    checked_ns: int
    venue_position: float
    recorded_position: float
    venue_open_orders: int
    recorded_open_orders: int
    difference: bool
    detail: str = ""


WireMessage: TypeAlias = (
    CandleMessage
    | SignalMessage
    | GateMessage
    | ExecutionMessage
    | AccountMessage
    | OrderMessage
    | DecisionAudit
    | EventMessage
    | RiskStateMessage
    | ControlMessage
    | ReconciliationMessage
)

#: The message of every subject kind.
MESSAGE_TYPES: Final[dict[MessageKind, type[WireMessage]]] = {
    "candle": CandleMessage,
    "signal": SignalMessage,
    "gate": GateMessage,
    "execution": ExecutionMessage,
    "account": AccountMessage,
    "order": OrderMessage,
    "audit": DecisionAudit,
    "event": EventMessage,
    "risk_state": RiskStateMessage,
    "control": ControlMessage,
    "reconciliation": ReconciliationMessage,
}
assert set(MESSAGE_TYPES) == set(get_args(MessageKind))

_KIND_OF: Final[dict[type[WireMessage], MessageKind]] = {t: k for k, t in MESSAGE_TYPES.items()}
_ENCODER = msgspec.msgpack.Encoder()
_DECODERS: Final = {k: msgspec.msgpack.Decoder(t) for k, t in MESSAGE_TYPES.items()}
_ANY_DECODER = msgspec.msgpack.Decoder(WireMessage)


def risk_state_message(
    symbol: str, ts: int, manager: RiskManagerSnapshot, decision: Decision
) -> RiskStateMessage:
    """The :class:`RiskStateMessage` of the close of bar ``ts``: the risk manager's state and
    the decision taken at that close, field for field (only ``bar_volatility`` is derived, as
    the square root of ``ewma_variance``, and ``kelly_round_trips`` as the number of
    ``kelly_trades``).

    Parameters
    ----------
    symbol : str
    ts : int
        Open time of the bar, ns since the epoch (UTC).
    manager : RiskManagerSnapshot
        ``RiskStage.snapshot().risk_manager`` right after ``RiskStage.close`` of that bar.
    decision : Decision
        The decision of that close (``RiskDecision.decision``).

    Raises
    ------
    WireError
        A symbol that cannot be a subject token.
    """
    return RiskStateMessage(
        symbol=check_symbol(symbol),
        ts=ts,
        state=decision.state,
        halted=decision.state == "HALTED",
        peak_equity=manager.peak_equity,
        drawdown=manager.drawdown,
        high_equity=manager.high_equity,
        drawdown_from_high=manager.drawdown_from_high,
        ladder_level=manager.ladder_level,
        paused_until=manager.paused_until,
        daily_pnl=manager.daily_pnl,
        day_start_equity=manager.day_start_equity,
        equity=manager.last_equity,
        bar_volatility=math.sqrt(manager.ewma_variance),
        volatility_returns=manager.ewma_count,
        kelly_fraction=decision.kelly,
        kelly_round_trips=len(manager.kelly_trades),
    )


def check_symbol(symbol: str) -> str:
    """Return ``symbol`` when it can be one subject token, else raise :class:`WireError`.

    Allowed: 1 to 64 characters, letters, digits, ``_ - / :``, starting with a letter or digit
    (ccxt's unified symbols such as ``BTC/USDT`` or ``BTC/USDT:USDT``).
    """
    if not isinstance(symbol, str) or _SYMBOL.fullmatch(symbol) is None:
        raise WireError(
            f"symbol {symbol!r} cannot be a subject token: use 1-64 letters, digits, '_', '-', "
            "'/' or ':', starting with a letter or digit"
        )
    return symbol


def _kind(kind: str) -> MessageKind:
    if kind not in MESSAGE_TYPES:
        raise WireError(f"unknown message kind {kind!r}; expected one of {sorted(MESSAGE_TYPES)}")
    return kind


def subject(kind: MessageKind, symbol: str) -> str:
    """The subject a message of ``kind`` for ``symbol`` is published on:
    ``colmena.v1.<kind>.<symbol>``.

    Raises
    ------
    WireError
        Unknown kind, or a symbol that cannot be a subject token (:func:`check_symbol`).
    """
    return f"{SUBJECT_ROOT}.v{WIRE_VERSION}.{_kind(kind)}.{check_symbol(symbol)}"


def subject_filter(kind: MessageKind | None = None) -> str:
    """A subscription filter: every symbol of ``kind`` (``colmena.v1.<kind>.*``), or every
    message of this version when ``kind`` is None (``colmena.v1.>``)."""
    if kind is None:
        return f"{SUBJECT_ROOT}.v{WIRE_VERSION}.>"
    return f"{SUBJECT_ROOT}.v{WIRE_VERSION}.{_kind(kind)}.*"


def idempotency_key(message: WireMessage) -> str:
    """The message's idempotency key (the JetStream ``Nats-Msg-Id`` header).

    ``v1.<kind>.<symbol>.<ts>``, with the order id for execution reports, the sequence number
    for events (several of them can share a bar) and the check time for reconciliations; a
    control action is ``v1.control.<symbol>.<request_id>`` (a retried request is the same
    action, whichever bar it would start at). A function of the message's content only, so the
    same message re-published after a restart has the same key.
    """
    kind = _KIND_OF[type(message)]
    if isinstance(message, ControlMessage):
        return f"v{WIRE_VERSION}.{kind}.{message.symbol}.{message.request_id}"
    key = f"v{WIRE_VERSION}.{kind}.{message.symbol}.{message.ts}"
    if isinstance(message, ReconciliationMessage):
        key += f".{message.checked_ns}"
    elif isinstance(message, ExecutionMessage):
        key += f".{message.report.order_id}"
    elif isinstance(message, EventMessage):
        key += f".{message.seq}"
    return key


def encode(message: WireMessage) -> bytes:
    """MessagePack bytes of ``message`` (its ``kind`` included).

    Raises
    ------
    WireError
        A symbol that cannot be a subject token.
    """
    check_symbol(message.symbol)
    return _ENCODER.encode(message)


def decode(kind: MessageKind, data: bytes) -> WireMessage:
    """Decode a message of ``kind`` (the subject's kind token) from MessagePack bytes.

    Raises
    ------
    WireError
        The bytes are not a valid message of that kind (the message names the field), or the
        symbol is not a valid subject token.
    """
    try:
        message = _DECODERS[_kind(kind)].decode(data)
    except msgspec.DecodeError as exc:
        raise WireError(f"bad {kind} message: {exc}") from None
    check_symbol(message.symbol)
    return message


def decode_any(data: bytes) -> WireMessage:
    """Decode any message of this version, by its ``kind`` field (what a recorder does).

    Raises
    ------
    WireError
        As :func:`decode`, or an unknown ``kind``.
    """
    try:
        message = _ANY_DECODER.decode(data)
    except msgspec.DecodeError as exc:
        raise WireError(f"bad message: {exc}") from None
    check_symbol(message.symbol)
    return message
