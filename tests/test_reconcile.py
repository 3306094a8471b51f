"""Reconciliation with the venue (colmena.services.reconcile) through a real ccxt client against
the local Binance-format server: at start and periodically, a position or open-order difference
injected at the venue is found, reported (the wire message the risk service pauses on and the
recorder audits), alerted (error log, metrics) and holds orders that add exposure."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from colmena.execution.trading_loop import RiskGate
from colmena.live import wire
from colmena.live.handlers import RiskHandler
from colmena.live.venue import VenueExecutionHandler, VenueUnavailableError, make_venue_client
from colmena.services.bus import STREAM, Bus
from colmena.services.nats_server import EmbeddedNatsServer
from colmena.services.reconcile import Reconciler, ReconciliationMetrics, reconcile
from colmena.services.runner import serve

pytest.importorskip("ccxt")
prometheus_client = pytest.importorskip("prometheus_client")

from fake_exchange import FakeBinance  # noqa: E402
from test_venue import (  # noqa: E402
    ENV,
    EXECUTION,
    NS,
    SYMBOL,
    bar_messages,
    candle,
    fake_venue,
    feed,
    gate,
    handler,
    order,
    reports,
    settings,
)


@pytest.fixture
def fx() -> Iterator[FakeBinance]:
    yield from fake_venue()


def test_at_start_records_and_venue_agree(fx: FakeBinance) -> None:
    fx.balances["BTC"] = [0.7, 0.0]
    h = handler(fx, reserves={"BTC": 0.7})  # the 0.7 BTC are not the sleeve's
    result = reconcile(h, clock=lambda: 42)
    assert not result.difference
    assert result.detail == ""
    assert (result.venue_position, result.recorded_position) == (0.0, 0.0)
    assert (result.venue_open_orders, result.recorded_open_orders) == (0, 0)
    assert result.checked_ns == 42
    assert result.symbol == SYMBOL
    assert result.ts == 0
    assert h.hold_reason is None


def test_after_trading_the_fills_match_the_venue(fx: FakeBinance) -> None:
    h = handler(fx)
    feed(h, bar_messages(0, 1.25) + bar_messages(1, -0.5) + [candle(2), gate(2)])
    result = reconcile(h)
    assert not result.difference
    assert result.venue_position == pytest.approx(0.75)
    assert result.recorded_position == pytest.approx(0.75)
    assert result.ts == NS  # the newest bar whose order was taken


def test_a_position_difference_is_reported_and_holds_buys(fx: FakeBinance) -> None:
    h = handler(fx)
    feed(h, [*bar_messages(0, 1.0), candle(1), gate(1)])
    fx.balances["BTC"][0] += 0.3  # someone else traded the sleeve's asset
    result = reconcile(h)
    assert result.difference
    assert result.venue_position == pytest.approx(1.3)
    assert result.recorded_position == pytest.approx(1.0)
    assert result.detail.startswith("position:")
    assert "1.3" in result.detail
    assert h.hold_reason == result.detail
    # Held: a buy is not placed (reported with the reason); a sell still is.
    placed = len(fx.placed)
    out = feed(h, [order(1, 0.5), candle(2), gate(2)])
    (report,) = reports(out)
    assert [e.code_name for e in report.report.events] == ["reconciliation_hold"]
    assert len(fx.placed) == placed
    out = feed(h, [order(2, -0.5), candle(3), gate(3)])
    assert reports(out)[0].report.fill is not None
    assert len(fx.placed) == placed + 1
    # The venue put right: the next reconciliation finds nothing and lets orders go.
    fx.balances["BTC"][0] -= 0.3
    assert not reconcile(h).difference
    assert h.hold_reason is None


def test_an_open_order_difference_is_reported(fx: FakeBinance) -> None:
    h = handler(fx)
    # An order nobody recorded, resting at the venue (placed by another client).
    other = make_venue_client(settings(fx), environ=ENV)
    other.enableRateLimit = False
    fx.fill_ratio, fx.leave_open = 0.0, True
    other.create_order(SYMBOL, "market", "buy", 1.0, None, {"newClientOrderId": "manual-1"})
    result = reconcile(h)
    assert result.difference
    assert (result.venue_open_orders, result.recorded_open_orders) == (1, 0)
    assert result.detail == "open orders: 1 at the venue, 0 in the records"


def test_an_order_the_venue_could_not_be_asked_about_is_resolved(fx: FakeBinance) -> None:
    h = handler(fx, max_attempts=1)
    feed(h, [candle(0), gate(0)])
    fx.lose_next = 1
    feed(h, [order(0, 1.0)])  # placed, reply lost, no second try: unknown
    (client_id,) = h.records.unresolved
    result = reconcile(h)
    assert result.difference
    assert client_id in result.detail
    assert result.recorded_position == pytest.approx(1.0) == result.venue_position
    assert not h.records.unresolved
    assert not reconcile(h).difference


def test_an_unreachable_venue_is_not_a_difference(fx: FakeBinance) -> None:
    h = handler(fx, max_attempts=2)
    fx.fail_orders_next = 1_000
    with pytest.raises(VenueUnavailableError):
        reconcile(h)
    assert h.hold_reason is None


def test_the_reconciler_at_start_and_periodically(
    fx: FakeBinance, caplog: pytest.LogCaptureFixture
) -> None:
    h = handler(fx)
    published: list[wire.ReconciliationMessage] = []
    registry = prometheus_client.CollectorRegistry()
    metrics = ReconciliationMetrics(registry)

    async def publish(result: wire.ReconciliationMessage) -> None:
        published.append(result)
        if len(published) == 2:
            fx.balances["BTC"][0] += 0.2  # a difference appears between two rounds
        if len(published) == 4:
            stop.set()

    stop = asyncio.Event()
    reconciler = Reconciler({SYMBOL: h}, publish, interval_seconds=0.01, metrics=metrics)

    async def main() -> None:
        await reconciler.run_once()  # at start
        await asyncio.wait_for(reconciler.run(stop), timeout=30.0)  # hang detection only

    with caplog.at_level(logging.ERROR, logger="colmena.services.reconcile"):
        asyncio.run(main())
    assert [r.difference for r in published] == [False, False, True, True]
    assert reconciler.rounds == 4
    assert reconciler.differences == 2
    assert "DIFFERENCE" in caplog.text
    assert "position" in caplog.text
    value = registry.get_sample_value("colmena_reconciliation_difference", {"symbol": SYMBOL})
    total = registry.get_sample_value(
        "colmena_reconciliation_differences_total", {"symbol": SYMBOL}
    )
    assert (value, total) == (1.0, 2.0)


def test_the_reconciler_skips_a_venue_it_cannot_reach(
    fx: FakeBinance, caplog: pytest.LogCaptureFixture
) -> None:
    h = handler(fx, max_attempts=1)
    published: list[wire.ReconciliationMessage] = []

    async def publish(result: wire.ReconciliationMessage) -> None:
        published.append(result)

    fx.fail_orders_next = 1_000
    with caplog.at_level(logging.ERROR, logger="colmena.services.reconcile"):
        assert asyncio.run(Reconciler({SYMBOL: h}, publish, interval_seconds=1.0).run_once()) == []
    assert not published
    assert "could not be asked" in caplog.text


def test_a_difference_pauses_the_symbol_at_the_risk_service(fx: FakeBinance) -> None:
    from test_live_replay import RISK

    h = handler(fx)
    fx.balances["BTC"][0] = 0.5
    result = reconcile(h)
    assert wire.decode("reconciliation", wire.encode(result)) == result  # on the wire as is
    risk = RiskHandler(SYMBOL, RISK, EXECUTION)
    (control,) = risk.handle(result)
    assert isinstance(control, wire.ControlMessage)
    assert (control.action, control.operator) == ("pause", "reconciliation")
    assert result.detail in control.reason
    # At the next open the symbol is PAUSED (reduce-only).
    (gate_message,) = [m for m in risk.handle(candle(0)) if isinstance(m, wire.GateMessage)]
    assert isinstance(gate_message.gate, RiskGate)
    assert gate_message.gate.state == "PAUSED"


# ---------------------------------------------------------------- on a real nats-server


async def _read(bus: Bus) -> list[wire.WireMessage]:
    """Every message in the stream, in order (a fresh ephemeral consumer)."""
    sub = await bus.jetstream.pull_subscribe(wire.subject_filter(), stream=STREAM)
    try:
        out: list[wire.WireMessage] = []
        total = await bus.stream_messages()
        while len(out) < total:
            for raw in await sub.fetch(1_000, timeout=10.0):
                out.append(wire.decode_any(raw.data))
                await raw.ack()
        return out
    finally:
        await sub.unsubscribe()


def _stream(url: str) -> list[wire.WireMessage]:
    async def read() -> list[wire.WireMessage]:
        bus = await Bus.connect(url)
        try:
            return await _read(bus)
        finally:
            await bus.close()

    return asyncio.run(read())


def test_the_execution_service_at_the_venue_on_the_bus(fx: FakeBinance, tmp_path: Path) -> None:
    """The runner drives the venue handler (off the event loop), reconciles at start before any
    new order, publishes every result; a restarted service replays its inputs from the stream
    and places nothing again; a difference found at the second start is in the stream."""
    pytest.importorskip("nats")
    inputs = [
        *bar_messages(0, 1.0), *bar_messages(1, -0.25), *bar_messages(2, 0.5), candle(3), gate(3)
    ]  # fmt: skip

    async def life(url: str, publish_inputs: bool) -> VenueExecutionHandler:
        h = handler(fx)
        bus = await Bus.connect(url, name="execution")
        stop = asyncio.Event()
        reports_seen = 0

        def handled(message: wire.WireMessage, outputs: list[wire.WireMessage]) -> None:
            nonlocal reports_seen
            reports_seen += sum(isinstance(m, wire.ExecutionMessage) for m in outputs)
            if reports_seen == 3:
                stop.set()  # every order reported: a point the service reports

        async def publish(result: wire.ReconciliationMessage) -> None:
            await bus.publish(result)

        reconciler = Reconciler({SYMBOL: h}, publish, interval_seconds=3_600.0)
        ready = asyncio.Event()

        async def at_start() -> None:
            await reconciler.run_once()
            ready.set()

        try:
            service = asyncio.create_task(
                serve(bus, "execution", {SYMBOL: h}, stop, on_handled=handled,
                      ack_wait_seconds=1.0, lease_seconds=None, on_ready=at_start)
            )  # fmt: skip
            await asyncio.wait_for(ready.wait(), timeout=60.0)  # hang detection
            if publish_inputs:
                assert not fx.placed  # the reconciliation came before any order
                feeder = await Bus.connect(url, name="risk")
                for m in inputs:
                    await feeder.publish(m)
                await feeder.close()
                await asyncio.wait_for(service, timeout=60.0)  # hang detection
            else:
                stop.set()
                await service
        finally:
            await bus.close()
        return h

    with EmbeddedNatsServer(tmp_path / "nats") as server:
        first = asyncio.run(life(server.url, publish_inputs=True))
        assert len(fx.placed) == 3
        assert fx.balance("BTC") == pytest.approx(1.25) == first.records.position
        posts = fx.order_posts
        fx.balances["BTC"][0] += 0.1  # a difference while the service was down
        second = asyncio.run(life(server.url, publish_inputs=False))
        assert fx.order_posts == posts
        assert len(fx.placed) == 3
        assert second.records.position == pytest.approx(1.25)  # rebuilt from the venue
        stream = _stream(server.url)
    results = [m for m in stream if isinstance(m, wire.ReconciliationMessage)]
    assert [r.difference for r in results] == [False, True]
    assert results[1].venue_position == pytest.approx(1.35)
    assert results[1].recorded_position == pytest.approx(1.25)
    assert results[1].ts == 2 * NS  # the newest bar the replay finished
    reports_in_stream = [m for m in stream if isinstance(m, wire.ExecutionMessage)]
    assert len(reports_in_stream) == 3  # each once


def test_the_execution_role_in_venue_mode(
    fx: FakeBinance, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``colmena serve execution`` with ``[venue] mode = "exchange"``: keys from the
    environment, the reconciliation at start published, orders placed at the venue."""
    pytest.importorskip("nats")
    from colmena.services.config import HealthSettings, LiveConfig, SymbolSettings
    from colmena.services.daemons import ServiceError, run_role

    config = LiveConfig(
        symbols=(SymbolSettings(symbol=SYMBOL, checkpoint="unused"),),
        execution=EXECUTION,
        health=HealthSettings(enabled=False),
        venue=settings(fx, reconcile_seconds=3_600.0),
    )
    with EmbeddedNatsServer(tmp_path / "nats") as server:
        stop = asyncio.Event()
        with pytest.raises(ServiceError, match=r"COLMENA_VENUE_API_KEY"):
            asyncio.run(run_role("execution", config, server.url, stop))
        for name, value in ENV.items():
            monkeypatch.setenv(name, value)

        async def count(bus: Bus, kind: type) -> int:
            return sum(isinstance(m, kind) for m in await _read(bus))

        async def main() -> None:
            service = asyncio.create_task(run_role("execution", config, server.url, stop))
            bus = await Bus.connect(server.url)
            try:

                async def until(kind: type, n: int) -> None:
                    while await count(bus, kind) < n:  # the service's own output
                        await asyncio.sleep(0.05)

                await asyncio.wait_for(until(wire.ReconciliationMessage, 1), 60.0)  # hang det.
                for m in [*bar_messages(0, 1.0), candle(1), gate(1)]:
                    await bus.publish(m)
                await asyncio.wait_for(until(wire.ExecutionMessage, 1), 60.0)  # hang detection
            finally:
                stop.set()
                await bus.close()
                await service

        asyncio.run(main())
        stream = _stream(server.url)
    (result,) = [m for m in stream if isinstance(m, wire.ReconciliationMessage)]
    assert not result.difference
    assert len(fx.placed) == 1
    assert fx.balance("BTC") == pytest.approx(1.0)
