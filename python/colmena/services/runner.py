"""A service's loop on the bus: its handlers (:mod:`colmena.live.handlers`) fed from durable
consumers, their output published, the input acknowledged after.

A role takes some message kinds (:data:`ROLE_INPUTS`); for each symbol and kind the service reads
one ordered durable consumer (``<role>-<kind>-<symbol token>``), so each kind of each symbol comes
in stream order while the kinds interleave, which the handlers accept. One message at a time
per symbol: handle, publish every output (each confirmed by the stream, with its idempotency
key), then acknowledge the input. A crash anywhere in between delivers the input again, and the
outputs it re-creates are dropped by the stream's duplicate window.

Ownership: before it handles anything, a service takes the lease of each of its symbols
(:mod:`colmena.services.leases`), so one symbol is handled by one instance of a role at a time
even when instances overlap; it waits for a lease held by another instance and stops with
:class:`~colmena.services.leases.LeaseLostError` when it loses one.

Scale-out: the symbols of a role can be split over instances (:func:`partition`, ``colmena serve
ROLE --partition I/N``): each instance reads only its symbols' subjects, so the messages of a
symbol stay in order in one instance. (A queue group would spread one symbol's messages over
instances and break the per-symbol state.)

Restart: a service rebuilds its handlers by replaying, from the stream, every input it had
acknowledged (outputs discarded: they were published before), then goes on with the durable
consumers. The state is therefore whatever the retained stream can rebuild (a week by default).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Final, Protocol

import nats.errors
import nats.js.errors
from nats.js import api

from colmena.live import wire
from colmena.live.account import AccountGuard
from colmena.live.handlers import ROLE_HANDLERS, ExecutionHandler, HandlerState, RiskHandler
from colmena.services.bus import STREAM, Bus, Consumer
from colmena.services.control import ControlResponder
from colmena.services.leases import Leases
from colmena.services.state import SavedState, StateStore

__all__ = [
    "ROLE_INPUTS",
    "Handler",
    "SavedStateMismatchError",
    "durable_name",
    "partition",
    "serve",
]

log = logging.getLogger(__name__)

#: How long a stopping service waits for the messages in hand.
_STOP_GRACE_SECONDS: Final = 10.0
#: Longest time between two saves of a handler's state that did not change trading state.
_SAVE_SECONDS: Final = 1.0

#: The kinds each role takes (the ``INPUTS`` of its handler class).
ROLE_INPUTS: Final[dict[str, tuple[wire.MessageKind, ...]]] = {
    role: cls.INPUTS for role, cls in ROLE_HANDLERS.items()
}


class SavedStateMismatchError(ValueError):
    """The saved state does not fit the service as configured (other settings, another
    layout); the message names the field."""


class Handler(Protocol):
    """What :func:`serve` runs: a handler of :mod:`colmena.live.handlers` for one ``symbol``,
    whose ``handle(message)`` returns the messages it made ready (see there)."""

    symbol: str

    def handle(self, message: wire.WireMessage) -> list[wire.WireMessage]: ...


def durable_name(role: str, kind: str, symbol: str) -> str:
    """The durable consumer's name: readable, and unique per symbol (a short hash of it, since
    a consumer name cannot hold ``/`` or ``.``)."""
    readable = "".join(c if c.isalnum() else "_" for c in symbol)
    digest = hashlib.sha256(symbol.encode()).hexdigest()[:8]
    return f"{role}-{kind}-{readable}-{digest}"


def partition(symbols: Sequence[str], index: int, count: int) -> list[str]:
    """The symbols instance ``index`` (1-based) of ``count`` handles: the sorted symbols dealt
    round-robin, so every instance given the same symbol list takes its share and no symbol is
    left out or taken twice (the leases guard against instances given different lists).

    Raises
    ------
    ValueError
        ``count`` < 1 or ``index`` outside [1, count].
    """
    if count < 1 or not 1 <= index <= count:
        raise ValueError(f"partition {index}/{count}: need 1 <= index <= count")
    return sorted(symbols)[index - 1 :: count]


async def _ack_floor(bus: Bus, durable: str) -> int:
    """Stream sequence up to which the durable consumer acknowledged everything (0: none, or no
    consumer yet)."""
    try:
        info = await bus.jetstream.consumer_info(STREAM, durable)
    except nats.js.errors.NotFoundError:
        return 0
    return int(info.ack_floor.stream_seq or 0) if info.ack_floor else 0


async def _replay(
    bus: Bus,
    handler: Handler,
    kinds: tuple[wire.MessageKind, ...],
    role: str,
    *,
    after_sequence: int = 0,
    on_message: Callable[[wire.WireMessage, int], None] | None = None,
) -> int:
    """Feed ``handler`` every input its durable consumers acknowledged after stream sequence
    ``after_sequence``: each kind in stream order, kind after kind (the handlers accept the
    kinds in any interleaving). ``on_message(message, sequence)`` sees each one before the
    handler does."""
    replayed = 0
    for kind in kinds:
        floor = await _ack_floor(bus, durable_name(role, kind, handler.symbol))
        if floor <= after_sequence:
            continue
        subject = wire.subject(kind, handler.symbol)
        if after_sequence:
            start = {"deliver_policy": api.DeliverPolicy.BY_START_SEQUENCE,
                     "opt_start_seq": after_sequence + 1}  # fmt: skip
        else:
            start = {"deliver_policy": api.DeliverPolicy.ALL}
        subscription = await bus.jetstream.pull_subscribe(
            subject,
            stream=STREAM,
            config=api.ConsumerConfig(
                ack_policy=api.AckPolicy.NONE,
                filter_subject=subject,
                inactive_threshold=60.0,
                **start,  # type: ignore[arg-type]
            ),
        )
        try:
            # The messages of this kind after the start: their count is known up front, so a
            # kind whose messages are gone (retention, a purge) ends at once, never by timeout.
            remaining = int((await subscription.consumer_info()).num_pending or 0)
            while remaining > 0:
                raws = await subscription.fetch(min(remaining, 1_000), timeout=10.0)
                for raw in raws:
                    remaining -= 1
                    sequence = int(raw.metadata.sequence.stream)
                    if sequence > floor:
                        remaining = 0
                        break
                    message = wire.decode(kind, raw.data)
                    if on_message is not None:
                        on_message(message, sequence)
                    handler.handle(message)
                    replayed += 1
        finally:
            await subscription.unsubscribe()
    return replayed


async def serve(
    bus: Bus,
    role: str,
    handlers: Mapping[str, Handler],
    stop: asyncio.Event,
    *,
    on_handled: Callable[[wire.WireMessage, list[wire.WireMessage]], None] | None = None,
    ack_wait_seconds: float = 30.0,
    lease_seconds: float | None = 10.0,
    holder: str | None = None,
    on_lease_wait: Callable[[str, str], None] | None = None,
    state: StateStore | None = None,
    account: AccountGuard | None = None,
    on_latency: Callable[[wire.WireMessage, float], None] | None = None,
) -> int:
    """Run ``role`` for every symbol of ``handlers`` until ``stop`` is set; returns the number
    of messages handled (replay excluded).

    ``on_handled(message, outputs)`` is called after each message is handled, its outputs
    published and the message acknowledged (a point tests and the console observe); with an
    ``account``, what a message released in other symbols is reported in a call of its own.
    ``ack_wait_seconds``: how long a message delivered to a dead service waits before it is
    delivered again. ``lease_seconds``: the symbols' leases (None: no leases, for a service
    that is alone by construction); ``holder`` names this instance in them;
    ``on_lease_wait(symbol, holder)`` is called when a lease is held by another instance.
    ``state``: where the risk and execution handlers' state is saved at each finished bar and
    restored from at the start (:mod:`colmena.services.state`); None: rebuilt from the stream.
    ``account`` (the risk role): the account's kill switch over every symbol of ``handlers``;
    when it trips, every symbol is halted (its state kept with ``state``).
    ``on_latency(message, seconds)``: the time one message took, from its delivery to its ack
    (handler, outputs published, state saved), for the metrics (:mod:`colmena.services.health`).

    Raises
    ------
    ValueError
        An unknown role.
    SequenceError, ValueError
        A handler refused a message (the service stops; the message stays unacknowledged).
    SavedStateMismatchError
        The saved state does not fit the handler (other settings; the message names the field).
    colmena.services.state.StateError
        A saved state that cannot be read.
    colmena.services.leases.LeaseLostError
        Another instance took a symbol's lease (this one stalled longer than the lease).
    """
    if role not in ROLE_INPUTS:
        raise ValueError(f"unknown role {role!r}; expected one of {sorted(ROLE_INPUTS)}")
    leases: Leases | None = None
    if lease_seconds is not None:
        leases = await Leases.open(bus, role, handlers, holder=holder, lease_seconds=lease_seconds)
        if not await leases.acquire(stop, on_wait=on_lease_wait):
            return 0
    # The leases are renewed from now on, through the replay too.
    keeper = asyncio.create_task(leases.keep()) if leases is not None else None
    try:
        return await _serve_owned(
            bus, role, handlers, stop, keeper, on_handled, ack_wait_seconds, state, account,
            on_latency,
        )  # fmt: skip
    finally:
        if keeper is not None:
            keeper.cancel()
            await asyncio.gather(keeper, return_exceptions=True)
        if leases is not None:
            await leases.release()


async def _serve_owned(
    bus: Bus,
    role: str,
    handlers: Mapping[str, Handler],
    stop: asyncio.Event,
    keeper: asyncio.Task[None] | None,
    on_handled: Callable[[wire.WireMessage, list[wire.WireMessage]], None] | None,
    ack_wait_seconds: float,
    store: StateStore | None,
    account: AccountGuard | None,
    on_latency: Callable[[wire.WireMessage, float], None] | None = None,
) -> int:
    kinds = ROLE_INPUTS[role]
    if account is not None and (role != "risk" or set(account.symbols) != set(handlers)):
        raise ValueError("the account guard belongs to a risk service holding all its symbols")

    def halt_all() -> None:
        assert account is not None
        for h in handlers.values():
            if isinstance(h, RiskHandler):
                h.halt(account.halted_ts, account_drawdown=account.halted_drawdown)

    if account is not None:
        for h in handlers.values():
            if isinstance(h, RiskHandler):
                # A bar opens once the account has seen the total of the symbol's last close.
                h.may_open = lambda closed: closed is None or account.evaluated_ts >= closed

    def on_account_close(message: wire.WireMessage) -> bool:
        """Give the account guard a sleeve's close; True when the account's state moved."""
        if account is None or not isinstance(message, wire.AccountMessage):
            return False
        before = account.evaluated_ts
        if account.on_close(message.symbol, message.ts, message.snapshot.equity) is not None:
            log.error("the account's kill switch tripped (drawdown %.4f): every symbol HALTED",
                      account.halted_drawdown)  # fmt: skip
            halt_all()
        return account.evaluated_ts != before

    # Stream sequence of each candle not yet part of a saved state, per symbol.
    candles: dict[str, dict[int, int]] = {symbol: {} for symbol in handlers}
    saved_ts: dict[str, int | None] = {symbol: None for symbol in handlers}
    if account is not None and store is not None:
        saved_account = await store.load_account()
        if saved_account is not None:
            try:
                account.restore(saved_account)
            except ValueError as exc:
                raise SavedStateMismatchError(
                    f"the saved account state cannot be used: {exc}"
                ) from None
    for symbol, handler in handlers.items():
        after = 0
        if store is not None and isinstance(handler, RiskHandler | ExecutionHandler):
            handler.keep_state = True
            saved = await store.load(role, symbol)
            if saved is not None:
                try:
                    handler.restore(saved.handler)
                except ValueError as exc:
                    raise SavedStateMismatchError(
                        f"the saved state of {role} {symbol!r} cannot be used: {exc} (the "
                        "service's settings must be those it ran under; a HALT or an open "
                        "position is never dropped silently)"
                    ) from None
                after = saved.candle_sequence
                saved_ts[symbol] = saved.handler.done_ts
                manager = saved.handler.risk.risk_manager if saved.handler.risk else None
                # The account saved before this symbol did: give it the symbol's last close,
                # which its replay (from after that close) will not repeat.
                tripped = (
                    account is not None
                    and manager is not None
                    and manager.started
                    and account.on_close(symbol, saved.handler.done_ts, manager.last_equity)
                )
                if tripped:
                    halt_all()
        if account is not None and account.halted and isinstance(handler, RiskHandler):
            # A trip saved before this symbol's own state was: halt it again (idempotent).
            handler.halt(account.halted_ts, account_drawdown=account.halted_drawdown)

        def replayed_one(message: wire.WireMessage, sequence: int, symbol: str = symbol) -> None:
            if isinstance(message, wire.CandleMessage):
                candles[symbol][message.ts] = sequence
            on_account_close(message)

        replayed = await _replay(
            bus, handler, kinds, role, after_sequence=after, on_message=replayed_one
        )
        if after or replayed:
            log.info("%s %s: %s, then %d messages from the stream", role, symbol,
                     "restored its saved state" if after else "rebuilt", replayed)  # fmt: skip
    handled = 0
    # One message at a time per symbol; with an account, one at a time for the whole service
    # (a message of one symbol can move every symbol).
    shared = asyncio.Lock()
    locks = {symbol: shared if account is not None else asyncio.Lock() for symbol in handlers}
    finishing = asyncio.Event()  # the service is stopping (asked to, or a pump failed)

    loop = asyncio.get_running_loop()
    saved_at: dict[str, float] = dict.fromkeys(handlers, -1e18)  # loop time of the last save
    saved_mode: dict[str, str | None] = dict.fromkeys(handlers)  # its trading state

    def _mode(state: HandlerState) -> str | None:
        manager = state.risk.risk_manager if state.risk is not None else None
        return manager.state if manager is not None else None

    async def save_state(symbol: str, handler: Handler, *, force: bool = False) -> None:
        """Save the handler's state when it finished a bar since the last save: at once when
        its trading state changed (a HALT is never left to a replay), else at most every
        :data:`_SAVE_SECONDS` (a restart replays the inputs since the last save, so saving
        every bar of a fast replay would only cost time)."""
        if store is None or not isinstance(handler, RiskHandler | ExecutionHandler):
            return
        current = handler.state()
        if current is None or current.done_ts == saved_ts[symbol]:
            return
        due = loop.time() - saved_at[symbol] >= _SAVE_SECONDS
        if not (force or due or _mode(current) != saved_mode[symbol]):
            return
        sequence = candles[symbol].get(current.done_ts)
        if sequence is None:  # not reached: a bar is finished only after its candle
            return
        await store.save(role, symbol, SavedState(handler=current, candle_sequence=sequence))
        saved_ts[symbol] = current.done_ts
        saved_at[symbol] = loop.time()
        saved_mode[symbol] = _mode(current)
        for ts in [ts for ts in candles[symbol] if ts <= current.done_ts]:
            del candles[symbol][ts]

    account_saved_at = -1e18

    async def resume_all(message: wire.WireMessage | None) -> list[wire.WireMessage]:
        """The account moved: let every held symbol go on; publish and save what that made
        (held bars are closed under the account lock, so nothing runs in between)."""
        nonlocal account_saved_at
        out: list[wire.WireMessage] = []
        for symbol, h in handlers.items():
            if isinstance(h, RiskHandler):
                more = h.resume()
                if more:
                    await asyncio.gather(*(bus.publish(m) for m in more))
                    await save_state(symbol, h)
                    out.extend(more)
        due = loop.time() - account_saved_at >= _SAVE_SECONDS
        if store is not None and account is not None and (account.halted or due):
            await store.save_account(account.state())
            account_saved_at = loop.time()
        if out and on_handled is not None and message is not None:
            on_handled(message, out)  # what the message released in other symbols
        return out

    async def pump(symbol: str, consumer: Consumer) -> None:
        nonlocal handled
        handler = handlers[symbol]
        while not (stop.is_set() or finishing.is_set()):
            for delivery in await consumer.fetch(1, timeout=0.25):
                received = loop.time()
                async with locks[symbol]:
                    message = delivery.message
                    if isinstance(message, wire.CandleMessage):
                        candles[symbol][message.ts] = delivery.stream_sequence
                    account_moved = on_account_close(message)  # the account first
                    outputs = handler.handle(message)
                    # Every output confirmed by the stream (published together), then the
                    # state saved, then the ack.
                    await asyncio.gather(*(bus.publish(out) for out in outputs))
                    await save_state(symbol, handler)
                    released = await resume_all(message) if account_moved else []
                    await delivery.ack(confirm=False)
                    handled += 1
                    if on_latency is not None:
                        on_latency(message, loop.time() - received)
                    if on_handled is not None and (outputs or not released):
                        on_handled(delivery.message, outputs)

    async def watch_account() -> None:
        """Every second: the bars a silent symbol no longer holds back."""
        assert account is not None
        while True:
            await asyncio.sleep(1.0)
            async with shared:
                before = account.evaluated_ts
                if account.refresh() is not None:
                    log.error("the account's kill switch tripped (drawdown %.4f): every "
                              "symbol HALTED", account.halted_drawdown)  # fmt: skip
                    halt_all()
                if account.evaluated_ts != before:
                    await resume_all(None)

    tasks = [
        asyncio.create_task(
            pump(
                symbol,
                await bus.consumer(
                    kind,
                    durable_name(role, kind, symbol),
                    symbol=symbol,
                    ack_wait_seconds=ack_wait_seconds,
                ),
            )
        )
        for symbol in handlers
        for kind in kinds
    ]
    if account is not None:
        async with shared:
            await resume_all(None)  # what the replay held (published again: the stream dedupes)
    watcher = asyncio.create_task(watch_account()) if account is not None else None
    responder: ControlResponder | None = None
    if role == "risk":  # `colmena ctl`: the operator's actions, between two messages

        async def account_reset() -> None:
            if store is not None and account is not None:
                await store.save_account(account.state())

        responder = ControlResponder(
            bus.client,
            {s: h for s, h in handlers.items() if isinstance(h, RiskHandler)},
            locks,
            bus.publish,
            account=account,
            on_account_reset=account_reset,
        )
        await responder.start()
    stopped = asyncio.create_task(stop.wait())
    watched = [stopped, *tasks, *(t for t in (keeper, watcher) if t is not None)]
    try:
        done, _ = await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task is not stopped:
                task.result()  # a handler's error stops the service with it
    finally:
        # A clean stop: each pump finishes the message in hand (outputs published, state
        # saved, input acknowledged) and sees the stop; only one stuck past the grace time is
        # cancelled (its message is delivered again after a restart).
        finishing.set()
        if responder is not None:
            try:
                await responder.stop()
            except nats.errors.Error as exc:  # the connection is already gone
                log.info("control: unsubscribing failed: %s", exc)
        pumps = [t for t in tasks if not t.done()]
        stuck: set[asyncio.Task[None]] = set()
        if pumps:
            _, stuck = await asyncio.wait(pumps, timeout=_STOP_GRACE_SECONDS)
            for task in stuck:
                task.cancel()
        stopped.cancel()
        if watcher is not None:
            async with shared:  # never in the middle of releasing bars
                watcher.cancel()
        clean = not stuck and all(t.done() and t.exception() is None for t in tasks)
        if clean:  # every message in hand finished: save what is not saved yet
            for symbol, h in handlers.items():
                await save_state(symbol, h, force=True)
            if store is not None and account is not None:
                await store.save_account(account.state())
        await asyncio.gather(stopped, *tasks, *([watcher] if watcher else []),
                             return_exceptions=True)  # fmt: skip
    return handled
