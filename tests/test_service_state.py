"""The services' state in the JetStream key-value bucket: a kill-switch HALT survives the restart
of every service and of the NATS server, after the stream lost the history the services would
otherwise rebuild from; the restarted services continue bit for bit as the one-process trader;
handler states round-trip and bad ones are refused."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import msgspec
import pytest

from colmena.data import Candles, load_ohlcv
from colmena.execution.trading_loop import Bar
from colmena.live import wire
from colmena.live.account import AccountGuard, AccountGuardState
from colmena.live.handlers import (
    ExecutionHandler,
    HandlerState,
    RiskHandler,
    StrategyHandler,
    route,
)
from colmena.model.swarm import SwarmModel
from colmena.risk import RiskConfig
from colmena.services.bus import STREAM, Bus
from colmena.services.leases import symbol_key
from colmena.services.nats_server import EmbeddedNatsServer
from colmena.services.runner import serve
from colmena.services.state import STATE_BUCKET, StateError, StateStore

pytest.importorskip("torch")
sys.path.insert(0, str(Path(__file__).parent))
from colmena.live import SwarmTrader
from helpers import synthetic_candles
from test_live_handlers import EXECUTION, SHA, SYMBOL, _bars, _candle, _compare
from test_live_replay import trained
from test_services import _stream_contents

TRAIN = 14 * 1_440
BARS = 600
FIRST = 450  # bars before the restart (the kill switch trips at about 400)
# A kill switch that trips on an ordinary hour: a fall of 0.02% from the hour's high.
RISK = RiskConfig(kelly_prior=1.0, kelly_multiplier=1.0, var_budget=1e9, min_trade_fraction=0.0,
                  halt_drawdown=0.0002)  # fmt: skip


@pytest.fixture(scope="module")
def candles(tmp_path_factory: pytest.TempPathFactory) -> Candles:
    folder = tmp_path_factory.mktemp("candles")
    return load_ohlcv(synthetic_candles(folder, n=TRAIN + BARS, seed=5))


@pytest.fixture(scope="module")
def model(candles: Candles) -> SwarmModel:
    return trained(candles).to_model()


async def _services(url: str, model: SwarmModel, stop: asyncio.Event, last: Bar) -> None:
    """Strategy, risk and execution with the state bucket until ``last`` is decided."""
    done = asyncio.Event()

    def on_risk(_: wire.WireMessage, outputs: list[wire.WireMessage]) -> None:
        if any(isinstance(m, wire.OrderMessage) and m.ts == last.ts for m in outputs):
            done.set()  # the last bar decided: a point the service reports

    async def role(name: str, handler: object, on: object = None) -> int:
        bus = await Bus.connect(url, name=name)
        try:
            store = await StateStore.open(bus)
            return await serve(bus, name, {SYMBOL: handler}, stop, on_handled=on,  # type: ignore[arg-type,dict-item]
                               state=store)  # fmt: skip
        finally:
            await bus.close()

    tasks = [
        asyncio.create_task(role("strategy", StrategyHandler(model, SYMBOL, SHA))),
        asyncio.create_task(role("risk", RiskHandler(SYMBOL, RISK, EXECUTION), on_risk)),
        asyncio.create_task(role("execution", ExecutionHandler(SYMBOL, EXECUTION))),
    ]
    try:
        await asyncio.wait_for(done.wait(), timeout=300.0)  # hang detection
    finally:
        stop.set()
        await asyncio.gather(*tasks)


async def _publish(url: str, bars: list[Bar]) -> None:
    bus = await Bus.connect(url, name="ingest")
    try:
        for bar in bars:
            await bus.publish(_candle(bar))
    finally:
        await bus.close()


async def _saved(url: str, role: str) -> HandlerState:
    bus = await Bus.connect(url)
    try:
        saved = await (await StateStore.open(bus)).load(role, SYMBOL)
        assert saved is not None
        return saved.handler
    finally:
        await bus.close()


async def _forget_history(url: str) -> None:
    """What the stream's retention does to a long-stopped system: every message but the
    candles is gone (the strategy still rebuilds its market state from the candles)."""
    bus = await Bus.connect(url)
    try:
        for kind in wire.MESSAGE_TYPES:
            if kind != "candle":
                await bus.jetstream.purge_stream(STREAM, subject=wire.subject(kind, SYMBOL))
    finally:
        await bus.close()


def test_a_halt_survives_the_restart_of_everything_after_the_stream_forgot(
    model: SwarmModel, candles: Candles, tmp_path: Path
) -> None:
    bars = _bars(candles, TRAIN)
    trader = SwarmTrader(model, RISK, EXECUTION)
    reference = [trader.on_candle(b) for b in bars]
    halted_at = next(i for i, r in enumerate(reference) if r.step.decision.state == "HALTED")
    assert halted_at < FIRST - 10, "the kill switch must trip before the restart"
    assert all(r.step.decision.state == "HALTED" for r in reference[halted_at:])

    store = tmp_path / "nats"
    with EmbeddedNatsServer(store) as server:
        asyncio.run(_publish(server.url, bars[:FIRST]))
        asyncio.run(_services(server.url, model, asyncio.Event(), bars[FIRST - 1]))
        risk = asyncio.run(_saved(server.url, "risk"))
        execution = asyncio.run(_saved(server.url, "execution"))
        first = [m for m in asyncio.run(_stream_contents(server.url))
                 if not isinstance(m, wire.CandleMessage)]  # fmt: skip
        asyncio.run(_forget_history(server.url))
    # Saved at the last bar, halted.
    assert risk.done_ts == execution.done_ts == bars[FIRST - 1].ts
    assert risk.risk is not None
    assert risk.risk.risk_manager is not None
    assert risk.risk.risk_manager.state == "HALTED"

    # A new NATS server process on the same storage; every service new.
    with EmbeddedNatsServer(store) as server:
        asyncio.run(_publish(server.url, bars[FIRST:]))
        asyncio.run(_services(server.url, model, asyncio.Event(), bars[-1]))
        second = [m for m in asyncio.run(_stream_contents(server.url))
                  if not isinstance(m, wire.CandleMessage)]  # fmt: skip
    assert not [m for m in second if m.ts <= bars[FIRST - 1].ts]  # the history is gone
    produced = first + second
    _compare(reference, produced, min_fills=1)
    audits = [m for m in second if isinstance(m, wire.DecisionAudit)]
    assert len(audits) == BARS - FIRST
    assert all(
        m.decided.decision.state == "HALTED" for m in second if isinstance(m, wire.OrderMessage)
    )


def test_without_the_saved_state_the_restart_could_not_continue(
    model: SwarmModel, candles: Candles, tmp_path: Path
) -> None:
    """The control: the same restart with the state bucket deleted leaves the risk service
    waiting for signals and accounts of bars the stream no longer has (it decides nothing)."""
    bars = _bars(candles, TRAIN)[:120]

    async def run(url: str) -> int:
        await _publish(url, bars[:60])
        await _services(url, model, asyncio.Event(), bars[59])
        await _forget_history(url)
        bus = await Bus.connect(url)
        try:
            await bus.jetstream.delete_key_value(STATE_BUCKET)
            store = await StateStore.open(bus)
            assert await store.load("risk", SYMBOL) is None
            handler = RiskHandler(SYMBOL, RISK, EXECUTION)
            stop = asyncio.Event()
            stop.set()  # replay only: serve rebuilds, then stops at once
            await serve(bus, "risk", {SYMBOL: handler}, stop, state=store)
            return handler.stage.bars
        finally:
            await bus.close()

    with EmbeddedNatsServer(tmp_path / "nats") as server:
        assert asyncio.run(run(server.url)) == 0


def test_handler_state_round_trips_and_refuses_what_does_not_fit(
    model: SwarmModel, candles: Candles
) -> None:
    bars = _bars(candles, TRAIN)[:200]
    handlers = [StrategyHandler(model, SYMBOL, SHA), RiskHandler(SYMBOL, RISK, EXECUTION),
                ExecutionHandler(SYMBOL, EXECUTION)]  # fmt: skip
    handlers[1].keep_state = True  # type: ignore[union-attr]
    handlers[2].keep_state = True  # type: ignore[union-attr]
    route(handlers, [_candle(b) for b in bars])
    risk = handlers[1].state()  # type: ignore[union-attr]
    execution = handlers[2].state()  # type: ignore[union-attr]
    assert risk is not None
    assert execution is not None
    assert risk.done_ts == execution.done_ts == bars[-1].ts
    # MessagePack keeps every bit.
    for state in (risk, execution):
        again = msgspec.msgpack.decode(msgspec.msgpack.encode(state), type=HandlerState)
        assert again == state
    restored = RiskHandler(SYMBOL, RISK, EXECUTION)
    restored.restore(risk)
    assert restored.stage.snapshot() == handlers[1].stage.snapshot()  # type: ignore[union-attr]
    # A message of a bar already finished is a duplicate after the restore.
    assert restored.handle(_candle(bars[-1])) == []

    cases = [
        (RiskHandler(SYMBOL, RISK, EXECUTION), msgspec.structs.replace(risk, version=99),
         "version: a saved state of layout 99"),
        (RiskHandler("ETH/USDT", RISK, EXECUTION), risk, "role/symbol"),
        (ExecutionHandler(SYMBOL, EXECUTION), risk, "role/symbol"),
        (RiskHandler(SYMBOL, RISK, EXECUTION), msgspec.structs.replace(risk, risk=None),
         "no risk stage snapshot"),
        (RiskHandler(SYMBOL, msgspec.structs.replace(RISK, halt_drawdown=0.3), EXECUTION), risk,
         "halt"),
        (restored, risk, "already taken messages"),
    ]  # fmt: skip
    for handler, state, message in cases:
        before = handler.stage.snapshot()
        with pytest.raises(ValueError, match=message):
            handler.restore(state)
        assert handler.stage.snapshot() == before  # nothing changed


def test_a_saved_state_that_does_not_decode_is_refused_by_name(tmp_path: Path) -> None:
    async def run(url: str) -> None:
        bus = await Bus.connect(url)
        try:
            store = await StateStore.open(bus)
            kv = await bus.jetstream.key_value(STATE_BUCKET)
            await kv.put(symbol_key("risk", SYMBOL), b"\x93not a state")
            with pytest.raises(StateError, match=r"colmena_state/risk\.BTC_USDT_.*not a saved"):
                await store.load("risk", SYMBOL)
        finally:
            await bus.close()

    with EmbeddedNatsServer(tmp_path / "nats") as server:
        asyncio.run(run(server.url))


ACCOUNT_SYMBOLS = ("BTC/USDT", "ETH/USDT")
SLEEVE_RISK = RiskConfig(kelly_prior=1.0, kelly_multiplier=1.0, var_budget=1e9,
                         min_trade_fraction=0.0)  # fmt: skip
# The account's kill switch alone trips (at about bar 400): 0.02% from the hour's high.
ACCOUNT_RISK = msgspec.structs.replace(SLEEVE_RISK, halt_drawdown=0.0002)
HALF = msgspec.structs.replace(EXECUTION, initial_cash=EXECUTION.initial_cash / 2)


async def _account_services(
    url: str, model: SwarmModel, markets: dict[str, list[Bar]], upto: int
) -> None:
    """Strategy, risk (with the account guard) and execution over both symbols, with the state
    bucket, until bar ``upto - 1`` of every symbol is decided."""
    stop = asyncio.Event()
    done = asyncio.Event()
    last = {s: bars[upto - 1].ts for s, bars in markets.items()}
    decided: set[str] = set()

    def on_risk(_: wire.WireMessage, outputs: list[wire.WireMessage]) -> None:
        for m in outputs:
            if isinstance(m, wire.OrderMessage) and m.ts == last[m.symbol]:
                decided.add(m.symbol)
        if decided == set(markets):
            done.set()

    async def role(name: str, handlers: dict[str, object], on: object = None) -> int:
        bus = await Bus.connect(url, name=name)
        try:
            store = await StateStore.open(bus)
            guard = None
            if name == "risk":
                guard = AccountGuard(list(markets), ACCOUNT_RISK,
                                     {s: HALF.initial_cash for s in markets}, 0.0)  # fmt: skip
            return await serve(bus, name, handlers, stop, on_handled=on, state=store,  # type: ignore[arg-type]
                               account=guard)  # fmt: skip
        finally:
            await bus.close()

    tasks = [
        asyncio.create_task(role("strategy", {s: StrategyHandler(model, s, SHA) for s in markets})),
        asyncio.create_task(
            role("risk", {s: RiskHandler(s, SLEEVE_RISK, HALF) for s in markets}, on_risk)
        ),
        asyncio.create_task(role("execution", {s: ExecutionHandler(s, HALF) for s in markets})),
    ]
    try:
        await asyncio.wait_for(done.wait(), timeout=300.0)  # hang detection
    finally:
        stop.set()
        await asyncio.gather(*tasks)


async def _publish_markets(url: str, markets: dict[str, list[Bar]], start: int, stop: int) -> None:
    bus = await Bus.connect(url, name="ingest")
    try:
        for i in range(start, stop):
            for symbol, bars in markets.items():
                await bus.publish(wire.CandleMessage(symbol=symbol, ts=bars[i].ts, bar_seconds=60,
                                                     bar=bars[i]))  # fmt: skip
    finally:
        await bus.close()


def test_the_accounts_kill_switch_halts_every_symbol_and_survives_a_restart(
    model: SwarmModel, candles: Candles, tmp_path: Path
) -> None:
    other = load_ohlcv(synthetic_candles(tmp_path, n=TRAIN + BARS, seed=12))
    markets = {"BTC/USDT": _bars(candles, TRAIN), "ETH/USDT": _bars(other, TRAIN)}
    store = tmp_path / "nats"
    with EmbeddedNatsServer(store) as server:
        asyncio.run(_publish_markets(server.url, markets, 0, FIRST))
        asyncio.run(_account_services(server.url, model, markets, FIRST))
        first = asyncio.run(_stream_contents(server.url))
        account = asyncio.run(_saved_account(server.url))
    assert account.halted_ts != 0, "the account's kill switch must trip before the restart"
    assert account.halted_drawdown > 0.0002
    trips = [m for m in first if isinstance(m, wire.EventMessage)
             and m.event.code_name == "account_kill_switch"]  # fmt: skip
    assert sorted(m.symbol for m in trips) == sorted(markets)  # every symbol, once
    assert all(m.event.value == account.halted_drawdown for m in trips)
    # No sleeve tripped its own kill switch: the account's halted them.
    assert not [m for m in first if isinstance(m, wire.EventMessage)
                and m.event.code_name == "kill_switch"]  # fmt: skip
    halt_bar = max(m.ts for m in trips)
    orders = [m for m in first if isinstance(m, wire.OrderMessage)]
    assert all(m.decided.decision.state == "HALTED" for m in orders if m.ts >= halt_bar)

    with EmbeddedNatsServer(store) as server:  # everything restarted
        asyncio.run(_publish_markets(server.url, markets, FIRST, BARS))
        asyncio.run(_account_services(server.url, model, markets, BARS))
        second = [m for m in asyncio.run(_stream_contents(server.url)) if m.ts >= bars_ts(markets)]
    later = [m for m in second if isinstance(m, wire.OrderMessage)]
    assert len(later) == 2 * (BARS - FIRST)
    assert all(m.decided.decision.state == "HALTED" for m in later)
    assert not [m for m in second if isinstance(m, wire.EventMessage)
                and m.event.code_name == "account_kill_switch"]  # fmt: skip


def bars_ts(markets: dict[str, list[Bar]]) -> int:
    """Open time of the first bar after the restart."""
    return next(iter(markets.values()))[FIRST].ts


async def _saved_account(url: str) -> AccountGuardState:
    bus = await Bus.connect(url)
    try:
        saved = await (await StateStore.open(bus)).load_account()
        assert saved is not None
        return saved
    finally:
        await bus.close()


def test_a_lost_account_state_does_not_hold_the_symbols_back(
    model: SwarmModel, candles: Candles, tmp_path: Path
) -> None:
    """The account's state is saved apart from the symbols' (at most every second): when it is
    older than theirs, or gone, the restarted risk service gives the account each symbol's last
    close from the symbol's own state, and the symbols go on in lock-step (no wait for a
    stale-data timeout)."""
    other = load_ohlcv(synthetic_candles(tmp_path, n=TRAIN + BARS, seed=12))
    markets = {"BTC/USDT": _bars(candles, TRAIN)[:120], "ETH/USDT": _bars(other, TRAIN)[:120]}

    async def forget_account(url: str) -> None:
        bus = await Bus.connect(url)
        try:
            kv = await bus.jetstream.key_value(STATE_BUCKET)
            await kv.purge("risk.account")
        finally:
            await bus.close()

    with EmbeddedNatsServer(tmp_path / "nats") as server:
        asyncio.run(_publish_markets(server.url, markets, 0, 60))
        asyncio.run(_account_services(server.url, model, markets, 60))
        asyncio.run(forget_account(server.url))
        asyncio.run(_publish_markets(server.url, markets, 60, 120))
        asyncio.run(_account_services(server.url, model, markets, 120))  # hang detection inside
        orders = [m for m in asyncio.run(_stream_contents(server.url))
                  if isinstance(m, wire.OrderMessage)]  # fmt: skip
        account = asyncio.run(_saved_account(server.url))
    assert len(orders) == 2 * 120
    assert account.evaluated_ts == markets["BTC/USDT"][119].ts
