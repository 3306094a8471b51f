"""The trading logic of the live services as message handlers: wire messages in, wire messages out.

Each handler is a deterministic state machine for one symbol that wraps one stage of the
one-candle path, so the services (strategy, risk, execution) run exactly the objects the backtest
steps, and the messages they exchange are :mod:`colmena.live.wire`'s:

- :class:`StrategyHandler` (:class:`~colmena.live.trader.SignalStage`): a candle in, its signal
  out (every candle, so the risk service steps every bar);
- :class:`RiskHandler` (:class:`~colmena.execution.trading_loop.RiskStage`): at a candle, the risk
  gate of its open; once the bar's signal, account and (when an order was outstanding) execution
  report are in, the decision with its order, the decision audit and the bar's events;
- :class:`ExecutionHandler` (:class:`~colmena.execution.trading_loop.ExecutionStage`): at a candle
  and its gate, the fill of the pending order and the account at the close; then the bar's order.

Per bar ``t`` the messages flow (the order of :meth:`TradingLoop.step`)::

    candle(t) -> strategy -> signal(t)
    candle(t) -> risk -> gate(t)
    candle(t) + gate(t) -> execution -> execution(t) [when an order was pending], account(t)
    signal(t) + account(t) [+ execution(t)] -> risk -> order(t), audit(t), risk_state(t),
                                                      event(t, i)...
    order(t) -> execution (submit) -> ready for candle(t + 1)

Handlers accept their inputs in any order within and across bars (a message for a later bar
waits until its bar comes), and are idempotent: a message delivered again (same bar and kind) or
one for a bar already closed returns nothing. A message that breaks the sequence (a candle older
than the newest, an order for an unknown bar) raises :class:`SequenceError`.

State: the risk and execution handlers give their state at the newest bar they finished
(:meth:`RiskHandler.state`, a :class:`HandlerState` with the stage's snapshot) and a fresh handler
continues from one (:meth:`RiskHandler.restore`); the services keep it in a JetStream key-value
bucket (:mod:`colmena.services.state`) so a restart does not depend on the stream's retention.
The strategy handler's state (the market state) is rebuilt from the retained candles.
"""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Final

import msgspec

from colmena.execution.simulation import ExecutionSettings
from colmena.execution.trading_loop import (
    AccountSnapshot,
    Bar,
    ExecutionStage,
    ExecutionStageSnapshot,
    RiskEvent,
    RiskGate,
    RiskStage,
    RiskStageSnapshot,
)
from colmena.live import wire
from colmena.live.trader import SignalStage
from colmena.model.swarm import SwarmModel
from colmena.risk.config import RiskConfig

__all__ = [
    "HANDLER_STATE_VERSION",
    "ROLE_HANDLERS",
    "ExecutionHandler",
    "ExecutionSequencer",
    "HandlerState",
    "RiskHandler",
    "SequenceError",
    "StrategyHandler",
    "route",
]


class SequenceError(ValueError):
    """A message out of the bar sequence the handler is in; the message says which."""


#: Layout version of :class:`HandlerState`.
HANDLER_STATE_VERSION: Final = 1


class HandlerState(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A risk or execution handler's state once bar ``done_ts`` is finished: everything it
    continues from, given the messages of later bars again.

    Attributes
    ----------
    version : int
        :data:`HANDLER_STATE_VERSION`.
    role : {"risk", "execution"}
    symbol : str
    done_ts : int
        Open time of the newest finished bar, ns since the epoch (UTC): for the risk handler
        the newest bar decided (its order published), for the execution handler the newest
        bar whose order was taken. Messages of bars up to it are duplicates from then on.
    risk : RiskStageSnapshot or None
        The risk stage (the risk handler's state).
    execution : ExecutionStageSnapshot or None
        The execution stage (the execution handler's state).
    """

    version: int
    role: str
    symbol: str
    done_ts: int
    risk: RiskStageSnapshot | None = None
    execution: ExecutionStageSnapshot | None = None


def _check_restorable(state: HandlerState, role: str, symbol: str, fresh: bool) -> None:
    if state.version != HANDLER_STATE_VERSION:
        raise ValueError(
            f"version: a saved state of layout {state.version}, this build reads "
            f"{HANDLER_STATE_VERSION}"
        )
    if state.role != role or state.symbol != symbol:
        raise ValueError(
            f"role/symbol: the saved state of {state.role} {state.symbol!r} given to the "
            f"{role} handler of {symbol!r}"
        )
    if not fresh:
        raise ValueError("restore: the handler has already taken messages; use a new one")


def _check_symbol(handler_symbol: str, message: wire.WireMessage) -> None:
    if message.symbol != handler_symbol:
        raise SequenceError(
            f"a {type(message).__name__} for {message.symbol!r} reached the handler of "
            f"{handler_symbol!r}"
        )


class StrategyHandler:
    """Candles in, signals out, for one symbol (the strategy service).

    Parameters
    ----------
    model : SwarmModel
    symbol : str
    model_sha256 : str
        SHA-256 of the checkpoint (hex), stamped on every signal.
    bar_seconds : int, default 60
    """

    #: The message kinds this handler takes.
    INPUTS: ClassVar[tuple[wire.MessageKind, ...]] = ("candle",)

    def __init__(
        self, model: SwarmModel, symbol: str, model_sha256: str, *, bar_seconds: int = 60
    ) -> None:
        self.symbol = wire.check_symbol(symbol)
        self.model_sha256 = model_sha256
        self.bar_seconds = bar_seconds
        self._stage = SignalStage(model, bar_seconds=bar_seconds)
        self._last_ts: int | None = None

    def handle(self, message: wire.WireMessage) -> list[wire.WireMessage]:
        """A :class:`~colmena.live.wire.CandleMessage` gives its
        :class:`~colmena.live.wire.SignalMessage`; a repeated candle gives nothing.

        Raises
        ------
        SequenceError
            Another symbol, another candle length, a candle older than the newest, or a
            message kind this handler does not take.
        ValueError
            A candle that breaks the OHLCV rules (nothing changes).
        """
        _check_symbol(self.symbol, message)
        if not isinstance(message, wire.CandleMessage):
            raise SequenceError(f"the strategy takes candles, not {type(message).__name__}")
        if message.bar_seconds != self.bar_seconds:
            raise SequenceError(
                f"a {message.bar_seconds} s candle reached the strategy of {self.bar_seconds} s "
                "candles"
            )
        if self._last_ts is not None and message.ts <= self._last_ts:
            if message.ts == self._last_ts:
                return []  # delivered again
            raise SequenceError(
                f"candle at {message.ts} is older than the newest candle ({self._last_ts})"
            )
        result = self._stage.on_candle(message.bar)
        self._last_ts = message.ts
        return [
            wire.SignalMessage(
                symbol=self.symbol,
                ts=message.ts,
                action=result.action,
                signal=result.signal,
                valid=result.valid,
                regime=result.regime,
                model_sha256=self.model_sha256,
                agent_signals=tuple(float(x) for x in result.agent_signals),
            )
        ]


@dataclass
class _RiskBar:
    candle: wire.CandleMessage | None = None
    signal: wire.SignalMessage | None = None
    account: wire.AccountMessage | None = None
    execution: wire.ExecutionMessage | None = None
    gate: RiskGate | None = None
    expects_report: bool = False
    events: list[RiskEvent] = field(default_factory=list)


class RiskHandler:
    """The risk stage of one symbol's sleeve of the account (the risk service): at each close
    the order, the decision audit, the risk state and the bar's events.

    Parameters
    ----------
    symbol : str
    risk : RiskConfig
    execution : ExecutionSettings
        The market type, the sleeve's starting capital and the shadow book's costs (as
        :class:`RiskStage`).
    bar_seconds : int, default 60
    """

    #: The message kinds this handler takes.
    INPUTS: ClassVar[tuple[wire.MessageKind, ...]] = (
        "control",  # first: a restarted service replays kind after kind, in this order
        "candle",
        "signal",
        "account",
        "execution",
        "reconciliation",
    )

    def __init__(
        self,
        symbol: str,
        risk: RiskConfig,
        execution: ExecutionSettings,
        *,
        bar_seconds: int = 60,
    ) -> None:
        self.symbol = wire.check_symbol(symbol)
        self._bar_ns = bar_seconds * 1_000_000_000
        self._stage = RiskStage(execution, risk, bar_seconds=bar_seconds)
        self._bars: dict[int, _RiskBar] = {}
        self._candles: list[int] = []  # heap: bars with their candle, waiting to be opened
        self._open_ts: int | None = None  # the bar opened and not yet closed
        self._closed_ts: int | None = None  # the newest bar closed
        self._taken = False  # a message was taken (restore is for a fresh handler only)
        self._halt_events: list[RiskEvent] = []  # of a halt between bars: the next bar's
        self._controls: list[wire.ControlMessage] = []  # accepted, applied at the next open
        self._control_ids: set[str] = set()  # request ids taken (pending or applied)
        #: Asked before a bar opens, with the open time of the newest bar closed (None before
        #: the first): False holds the bar until :meth:`resume`. The risk service of an account
        #: over several symbols opens a bar only once the account's kill switch has seen the
        #: total of the bar before (:mod:`colmena.live.account`).
        self.may_open: Callable[[int | None], bool] | None = None
        #: Take the stage's snapshot at each close (:meth:`state`); the services set it.
        self.keep_state = False
        self._state: HandlerState | None = None

    @property
    def stage(self) -> RiskStage:
        """The risk stage this handler steps (its risk manager, snapshot and halt)."""
        return self._stage

    def state(self) -> HandlerState | None:
        """The state at the newest close (None before the first close, or when
        :attr:`keep_state` is off)."""
        return self._state

    def restore(self, state: HandlerState) -> None:
        """Continue from ``state`` (:meth:`state` of an earlier life); a fresh handler only.

        Raises
        ------
        ValueError
            Another version, role or symbol, a handler that already took messages, no risk
            snapshot, or a snapshot the stage refuses (other settings; the message names the
            field). Nothing changes.
        """
        _check_restorable(state, "risk", self.symbol, not self._taken)
        if state.risk is None:
            raise ValueError("risk: the saved state has no risk stage snapshot")
        self._stage.restore(state.risk)
        self._closed_ts = state.done_ts
        self._state = state

    def resume(self) -> list[wire.WireMessage]:
        """Go on where :attr:`may_open` held the handler; returns what that made ready."""
        return self._advance()

    def halt(self, ts: int, *, account_drawdown: float | None = None) -> None:
        """HALT this symbol (:meth:`RiskStage.halt`): from its next open, reduce-only fills and
        flatten at every close until a person resets it. ``account_drawdown`` given: the
        account's kill switch over several symbols (:class:`colmena.live.account.AccountGuard`).
        The events go out with the bar open now, or else with the next bar. Nothing happens when
        already HALTED.

        Raises
        ------
        ValueError
            ``ts`` outside the time range or a non-finite ``account_drawdown``.
        """
        events = self._stage.halt(ts, account_drawdown=account_drawdown)
        if self._open_ts is not None:
            self._bars[self._open_ts].events.extend(events)
        else:
            self._halt_events.extend(events)

    @property
    def closed_ts(self) -> int | None:
        """Open time of the newest bar closed (None before the first)."""
        return self._closed_ts

    @property
    def pending_controls(self) -> tuple[wire.ControlMessage, ...]:
        """Control actions taken and not yet applied (they apply at the next open)."""
        return tuple(self._controls)

    def next_open_ts(self) -> int:
        """The ``ts`` a control action accepted now gets: the open time after the bar open
        now, or after the newest closed bar (0 before the first bar). The next bar to open is
        the first at or after it."""
        newest = self._open_ts if self._open_ts is not None else self._closed_ts
        return 0 if newest is None else newest + self._bar_ns

    def take_control(self, message: wire.ControlMessage) -> bool:
        """Accept a control action: it applies at the open of the first bar whose open time is
        at or after ``message.ts`` (:meth:`next_open_ts` when it was accepted: the next bar to
        open), before that bar's gate, with the other actions pending there in the order they
        were requested (``requested_ns``, then ``request_id``). The rule reads only the
        message, so a restart, a replay and the replay-audit apply it at the same bar (its
        events belong to that bar). Already taken (the same ``request_id``, from the service's
        reply path and again from the stream) or for a bar already closed (applied before the
        saved state this handler continues from): ignored. Returns whether it was new.

        Raises
        ------
        SequenceError
            Another symbol.
        ValueError
            A ``reset`` without a reason.
        """
        _check_symbol(self.symbol, message)
        if message.action == "reset" and not message.reason.strip():
            raise ValueError("reset: a HALT is reset only with a reason")
        if message.request_id in self._control_ids:
            return False
        if self._closed_ts is not None and message.ts <= self._closed_ts:
            return False
        self._control_ids.add(message.request_id)
        self._controls.append(message)
        return True

    def _reconciliation(self, message: wire.ReconciliationMessage) -> list[wire.WireMessage]:
        """A difference at the venue pauses the symbol (the design documents' runbook): the
        pause is a control action of operator ``reconciliation``, published for the record."""
        if not message.difference:
            return []
        request_id = (
            "reconciliation-"
            + hashlib.sha256(wire.idempotency_key(message).encode()).hexdigest()[:24]
        )
        control = wire.ControlMessage(
            symbol=self.symbol,
            ts=self.next_open_ts(),
            action="pause",
            request_id=request_id,
            operator="reconciliation",
            reason=f"reconciliation difference: {message.detail}",
            requested_ns=message.checked_ns,
        )
        return [control] if self.take_control(control) else []

    def _apply_controls(self, ts: int) -> list[RiskEvent]:
        """Apply the pending control actions due at the open of bar ``ts`` (their events go
        with it)."""
        due = [c for c in self._controls if c.ts <= ts]
        if not due:
            return []
        self._controls = [c for c in self._controls if c.ts > ts]
        events: list[RiskEvent] = []
        for control in sorted(due, key=lambda c: (c.requested_ns, c.request_id)):
            events.extend(self._stage.control(control.action, ts))
        return events

    def handle(self, message: wire.WireMessage) -> list[wire.WireMessage]:
        """Take a candle, signal, account or execution report; return what it made ready.

        A :class:`~colmena.live.wire.ControlMessage` is accepted (:meth:`take_control`) and
        returns nothing; a :class:`~colmena.live.wire.ReconciliationMessage` that reports a
        difference returns the pause it asks for (a control message, accepted too).

        Raises
        ------
        SequenceError
            Another symbol, a kind the risk service does not take, or a message for a bar
            before the newest closed one that was never part of the sequence.
        ValueError
            The stage refused the input (as :class:`RiskStage`); nothing changes.
        """
        _check_symbol(self.symbol, message)
        if isinstance(message, wire.ControlMessage):
            self._taken = True
            self.take_control(message)
            return []
        if isinstance(message, wire.ReconciliationMessage):
            self._taken = True
            return self._reconciliation(message)
        if not isinstance(
            message,
            wire.CandleMessage | wire.SignalMessage | wire.AccountMessage | wire.ExecutionMessage,
        ):
            raise SequenceError(f"the risk service does not take {type(message).__name__}")
        self._taken = True
        if self._closed_ts is not None and message.ts <= self._closed_ts:
            return []  # a bar already closed: delivered again
        slot = self._bars.setdefault(message.ts, _RiskBar())
        if isinstance(message, wire.CandleMessage):
            if slot.candle is not None:
                return []
            slot.candle = message
            heapq.heappush(self._candles, message.ts)
        elif isinstance(message, wire.SignalMessage):
            if slot.signal is not None:
                return []
            slot.signal = message
        elif isinstance(message, wire.AccountMessage):
            if slot.account is not None:
                return []
            slot.account = message
        else:
            if slot.execution is not None:
                return []
            slot.execution = message
        return self._advance()

    def _advance(self) -> list[wire.WireMessage]:
        out: list[wire.WireMessage] = []
        while True:
            if self._open_ts is None:
                # Open the oldest bar with its candle, when every earlier bar is closed.
                if not self._candles:
                    return out
                if self.may_open is not None and not self.may_open(self._closed_ts):
                    return out
                ts = heapq.heappop(self._candles)
                slot = self._bars[ts]
                assert slot.candle is not None
                slot.expects_report = self._stage.outstanding is not None
                slot.events.extend(self._halt_events)
                self._halt_events.clear()
                slot.events.extend(self._apply_controls(ts))
                gate = self._stage.open(slot.candle.bar, received_ts=slot.candle.received_ns)
                slot.gate = gate
                slot.events.extend(gate.events)
                self._open_ts = ts
                out.append(wire.GateMessage(symbol=self.symbol, ts=ts, gate=gate))
            slot = self._bars[self._open_ts]
            if slot.signal is None or slot.account is None:
                return out
            if slot.expects_report and slot.execution is None:
                return out
            out.extend(self._close(self._open_ts, slot))

    def _close(self, ts: int, slot: _RiskBar) -> list[wire.WireMessage]:
        assert slot.candle is not None
        assert slot.signal is not None
        assert slot.account is not None
        if slot.execution is not None:
            report = slot.execution.report
            self._stage.on_execution(report)
            slot.events.extend(report.events)
        signal = slot.signal
        decided = self._stage.close(
            slot.candle.bar,
            slot.account.snapshot,
            signal.action,
            signal.signal,
            received_ts=slot.candle.received_ns,
        )
        slot.events.extend(decided.events)
        del self._bars[ts]
        self._open_ts = None
        self._closed_ts = ts
        snapshot = self._stage.snapshot()  # the state after this close
        if self.keep_state:
            self._state = HandlerState(
                version=HANDLER_STATE_VERSION,
                role="risk",
                symbol=self.symbol,
                done_ts=ts,
                risk=snapshot,
            )
        # The handler's stage always runs in risk mode (a RiskConfig), so it has a manager.
        assert snapshot.risk_manager is not None
        out: list[wire.WireMessage] = [
            wire.OrderMessage(symbol=self.symbol, ts=ts, decided=decided),
            wire.DecisionAudit(
                symbol=self.symbol,
                ts=ts,
                model_sha256=signal.model_sha256,
                candle=slot.candle.bar,
                agent_signals=signal.agent_signals,
                regime=signal.regime,
                action=signal.action,
                signal=signal.signal,
                decision=decided.decision,
                order=decided.order,
            ),
            wire.risk_state_message(self.symbol, ts, snapshot.risk_manager, decided.decision),
        ]
        out.extend(
            wire.EventMessage(symbol=self.symbol, ts=ts, seq=i, event=e)
            for i, e in enumerate(slot.events)
        )
        return out


@dataclass
class _ExecutionBar:
    candle: Bar | None = None
    gate: RiskGate | None = None
    order: wire.OrderMessage | None = None


class ExecutionSequencer:
    """The bar sequence of an execution service, for the paper account
    (:class:`ExecutionHandler`) and a real venue
    (:class:`colmena.live.venue.VenueExecutionHandler`): candles, gates and orders of one
    symbol in any order; per bar ``t``, once its candle and gate are in and the order of the
    bar before was taken, :meth:`_open_and_close` (the fill of the pending order at the open,
    the account at the close); then, once bar ``t``'s order is in, :meth:`_take_order`. A
    message delivered again, or one for a bar whose order was taken, gives nothing.

    Subclasses set ``symbol`` (through ``__init__``) and implement the two steps.
    """

    #: The message kinds an execution service takes.
    INPUTS: ClassVar[tuple[wire.MessageKind, ...]] = ("candle", "gate", "order")

    def __init__(self, symbol: str) -> None:
        self.symbol = wire.check_symbol(symbol)
        self._bars: dict[int, _ExecutionBar] = {}
        self._ready: list[int] = []  # heap: bars with their candle and gate, not yet filled
        self._waiting_order: int | None = None  # a bar marked whose order has not come
        self._done_ts: int | None = None  # the newest bar whose order was taken
        self._taken = False

    def _sequence(self, message: wire.WireMessage) -> list[wire.WireMessage]:
        """Take one message (the body of ``handle``)."""
        _check_symbol(self.symbol, message)
        if not isinstance(message, wire.CandleMessage | wire.GateMessage | wire.OrderMessage):
            raise SequenceError(f"the execution service does not take {type(message).__name__}")
        self._taken = True
        if self._done_ts is not None and message.ts <= self._done_ts:
            return []  # delivered again
        slot = self._bars.setdefault(message.ts, _ExecutionBar())
        if isinstance(message, wire.CandleMessage):
            if slot.candle is not None:
                return []
            slot.candle = message.bar
        elif isinstance(message, wire.GateMessage):
            if slot.gate is not None:
                return []
            slot.gate = message.gate
        else:
            if slot.order is not None:
                return []
            slot.order = message
        completes = not isinstance(message, wire.OrderMessage)
        if completes and slot.candle is not None and slot.gate is not None:
            heapq.heappush(self._ready, message.ts)  # its candle and gate are both in
        return self._advance()

    def _advance(self) -> list[wire.WireMessage]:
        out: list[wire.WireMessage] = []
        while True:
            if self._waiting_order is not None:
                ts = self._waiting_order
                slot = self._bars[ts]
                if slot.order is None:
                    return out
                self._take_order(ts, slot.order)  # a refusal (it raises) changes nothing here
                del self._bars[ts]
                self._waiting_order = None
                self._done_ts = ts
            if not self._ready:
                return out
            ts = heapq.heappop(self._ready)
            slot = self._bars[ts]
            assert slot.candle is not None
            assert slot.gate is not None
            out.extend(self._open_and_close(ts, slot.candle, slot.gate))
            self._waiting_order = ts

    def _open_and_close(self, ts: int, candle: Bar, gate: RiskGate) -> list[wire.WireMessage]:
        """Bar ``ts``: the pending order's execution report (if any) and the account."""
        raise NotImplementedError

    def _take_order(self, ts: int, message: wire.OrderMessage) -> None:
        """Bar ``ts``'s order (``message.decided.order``, None when nothing is to trade)."""
        raise NotImplementedError


class ExecutionHandler(ExecutionSequencer):
    """The paper account for one symbol (the execution service).

    Parameters
    ----------
    symbol : str
    execution : ExecutionSettings
    bar_seconds : int, default 60
    """

    def __init__(self, symbol: str, execution: ExecutionSettings, *, bar_seconds: int = 60) -> None:
        super().__init__(symbol)
        self._stage = ExecutionStage(execution, bar_seconds=bar_seconds)
        #: Take the stage's snapshot as each bar's order is taken (:meth:`state`).
        self.keep_state = False
        self._state: HandlerState | None = None

    @property
    def stage(self) -> ExecutionStage:
        """The execution stage this handler steps (its paper account)."""
        return self._stage

    @property
    def account(self) -> AccountSnapshot:
        """The account as of the newest close."""
        return self._stage.account

    def state(self) -> HandlerState | None:
        """The state once the newest bar's order was taken (None before, or when
        :attr:`keep_state` is off)."""
        return self._state

    def restore(self, state: HandlerState) -> None:
        """Continue from ``state``; a fresh handler only (see :meth:`RiskHandler.restore`).

        Raises
        ------
        ValueError
            As :meth:`RiskHandler.restore`; nothing changes.
        """
        _check_restorable(state, "execution", self.symbol, not self._taken)
        if state.execution is None:
            raise ValueError("execution: the saved state has no execution stage snapshot")
        self._stage.restore(state.execution)
        self._done_ts = state.done_ts
        self._state = state

    def handle(self, message: wire.WireMessage) -> list[wire.WireMessage]:
        """Take a candle, gate or order; return the execution reports and accounts it made
        ready.

        Raises
        ------
        SequenceError
            Another symbol, or a kind the execution service does not take.
        ValueError
            The stage refused the input (as :class:`ExecutionStage`); nothing changes.
        """
        return self._sequence(message)

    def _take_order(self, ts: int, message: wire.OrderMessage) -> None:
        order = message.decided.order
        if order is not None:
            self._stage.submit(order)
        if self.keep_state:
            self._state = HandlerState(
                version=HANDLER_STATE_VERSION,
                role="execution",
                symbol=self.symbol,
                done_ts=ts,
                execution=self._stage.snapshot(),
            )

    def _open_and_close(self, ts: int, candle: Bar, gate: RiskGate) -> list[wire.WireMessage]:
        out: list[wire.WireMessage] = []
        report = self._stage.open(candle, gate.state)
        if report is not None:
            out.append(wire.ExecutionMessage(symbol=self.symbol, ts=ts, report=report))
        account = self._stage.close(candle)
        out.append(wire.AccountMessage(symbol=self.symbol, ts=ts, snapshot=account))
        return out


def route(
    handlers: Sequence[StrategyHandler | RiskHandler | ExecutionHandler],
    messages: Sequence[wire.WireMessage],
) -> list[wire.WireMessage]:
    """Deliver ``messages`` and everything they cause to every handler that takes them, in
    publication order, in one process (what the bus does across processes); returns every
    message produced, in the order produced. For tests and single-process replays."""
    produced: list[wire.WireMessage] = []
    queue = list(messages)
    i = 0
    while i < len(queue):
        message = queue[i]
        i += 1
        for handler in handlers:
            takes = tuple(wire.MESSAGE_TYPES[kind] for kind in handler.INPUTS)
            if isinstance(message, takes) and message.symbol == handler.symbol:
                new = handler.handle(message)
                produced.extend(new)
                queue.extend(new)
    return produced


#: The handler class of each trading service.
ROLE_HANDLERS: dict[str, type[StrategyHandler | RiskHandler | ExecutionHandler]] = {
    "strategy": StrategyHandler,
    "risk": RiskHandler,
    "execution": ExecutionHandler,
}
