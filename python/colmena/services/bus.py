"""The message bus of the live services: one JetStream stream, idempotent publishes, durable pull
consumers with explicit acknowledgements (nats-py, https://github.com/nats-io/nats.py).

Stream: :data:`STREAM` holds every subject of the wire contract (``colmena.v1.>``,
:mod:`colmena.live.wire`) in file storage, with limits retention (:class:`StreamLimits`): old
messages go when the stream is older than ``max_age_seconds`` or larger than ``max_bytes``. The
records of what happened live in PostgreSQL; the stream keeps enough for a restarted service to
rebuild its state from the candles (a week by default, far more than the longest look-back).
Messages of one symbol keep their order: one subject per kind and symbol, one stream.

Exactly-once effects: a publish carries the message's idempotency key as ``Nats-Msg-Id``
(:func:`colmena.live.wire.idempotency_key`); JetStream drops a second publish with the same key
inside ``duplicate_window_seconds`` (:attr:`PublishResult.duplicate`), so a service that crashes
after publishing and publishes again on restart adds nothing. Consumers are durable, pull-based,
with explicit acks: a handler acknowledges (:meth:`Delivery.ack`, confirmed by the server) only
after its effect is durable, so a crash before the ack gets the message redelivered after
``ack_wait_seconds``, and handlers are idempotent on the message key. A message that does not
decode under the contract is terminated (never redelivered) and logged.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, Final

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api
from nats.js.kv import KeyValue

from colmena.live import wire

__all__ = [
    "STREAM",
    "Bus",
    "Consumer",
    "Delivery",
    "PublishResult",
    "StreamLimits",
]

log = logging.getLogger(__name__)

#: Name of the JetStream stream of wire version 1.
STREAM: Final = f"COLMENA_V{wire.WIRE_VERSION}"
#: Header that carries the idempotency key.
MSG_ID_HEADER: Final = "Nats-Msg-Id"


@dataclass(frozen=True)
class StreamLimits:
    """Retention of :data:`STREAM`.

    Attributes
    ----------
    max_age_seconds : float
        Messages older than this are removed (default 7 days).
    max_bytes : int
        The stream's size limit in bytes; the oldest messages go first (default 1 GiB).
    duplicate_window_seconds : float
        How long a ``Nats-Msg-Id`` is remembered for deduplication (default 10 minutes: longer
        than a service takes to restart).
    """

    max_age_seconds: float = 7 * 86_400.0
    max_bytes: int = 2**30
    duplicate_window_seconds: float = 600.0

    def __post_init__(self) -> None:
        if not 0 < self.duplicate_window_seconds <= self.max_age_seconds:
            raise ValueError(
                f"duplicate_window_seconds={self.duplicate_window_seconds} must be in "
                f"(0, max_age_seconds={self.max_age_seconds}]"
            )
        if self.max_bytes < 2**20:
            raise ValueError(f"max_bytes={self.max_bytes} is below 1 MiB")


@dataclass(frozen=True)
class PublishResult:
    """The server's acknowledgement of a publish.

    Attributes
    ----------
    sequence : int
        The message's sequence number in the stream (that of the first copy for a duplicate).
    duplicate : bool
        The key was already in the stream's duplicate window: nothing was added.
    """

    sequence: int
    duplicate: bool


class Delivery:
    """One message delivered to a consumer: the decoded message, how often it was delivered,
    and the acknowledgement calls."""

    def __init__(self, raw: Msg, message: wire.WireMessage) -> None:
        self._raw = raw
        #: The decoded message.
        self.message = message

    @property
    def num_delivered(self) -> int:
        """1 on the first delivery, more on redeliveries."""
        return int(self._raw.metadata.num_delivered)

    @property
    def stream_sequence(self) -> int:
        """The message's sequence number in the stream."""
        return int(self._raw.metadata.sequence.stream)

    @property
    def subject(self) -> str:
        return str(self._raw.subject)

    @property
    def payload(self) -> bytes:
        """The message's MessagePack bytes as published."""
        return bytes(self._raw.data)

    @property
    def idempotency_key(self) -> str | None:
        """The ``Nats-Msg-Id`` header it was published with."""
        headers = self._raw.headers or {}
        value = headers.get(MSG_ID_HEADER)
        return None if value is None else str(value)

    async def ack(self, *, confirm: bool = True) -> None:
        """Acknowledge (call after the effect is durable).

        ``confirm``: wait for the server to confirm the ack. Without it the ack is sent and not
        waited for: a lost ack only means the message is delivered again, which an idempotent
        handler (whose outputs the stream dedupes) turns into nothing."""
        if confirm:
            await self._raw.ack_sync()
        else:
            await self._raw.ack()

    async def nak(self, delay_seconds: float | None = None) -> None:
        """Ask for redelivery (after ``delay_seconds``, or at once)."""
        await self._raw.nak(delay=delay_seconds)


class Consumer:
    """A durable pull consumer of one message kind (all symbols, or one)."""

    def __init__(
        self, subscription: JetStreamContext.PullSubscription, kind: str, max_in_flight: int
    ) -> None:
        self._subscription = subscription
        self._kind = kind
        self._max_in_flight = max_in_flight

    async def fetch(self, batch: int = 100, timeout: float = 1.0) -> list[Delivery]:
        """Up to ``batch`` messages, waiting at most ``timeout`` seconds for the first; [] when
        none came. An ordered consumer returns one message per call (the server holds the next
        until this one is acknowledged). Messages that break the contract are terminated and
        logged, not returned (the wait goes on for a valid one within ``timeout``)."""
        batch = max(1, min(batch, self._max_in_flight))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                raws = await self._subscription.fetch(
                    batch, timeout=max(deadline - loop.time(), 0.001)
                )
            except (nats.errors.TimeoutError, asyncio.TimeoutError):
                return []
            out = await self._decode(raws)
            if out or loop.time() >= deadline:
                return out

    async def _decode(self, raws: list[Msg]) -> list[Delivery]:
        out = []
        for raw in raws:
            try:
                message = wire.decode(self._kind, raw.data)  # type: ignore[arg-type]
            except wire.WireError as exc:
                log.warning(
                    "terminated message %s on %s: %s",
                    raw.metadata.sequence.stream,
                    raw.subject,
                    exc,
                )
                await raw.term()
                continue
            out.append(Delivery(raw, message))
        return out

    async def unsubscribe(self) -> None:
        """Stop fetching (the durable consumer and its position stay on the server)."""
        await self._subscription.unsubscribe()


class Bus:
    """A connection to NATS with the colmena stream.

    Use ``bus = await Bus.connect(url)``; then :meth:`publish` and :meth:`consumer`; ``await
    bus.close()`` at the end.
    """

    def __init__(self, client: Client, limits: StreamLimits) -> None:
        self._client = client
        self._js = client.jetstream()
        self.limits = limits

    @property
    def jetstream(self) -> JetStreamContext:
        """The JetStream context (for stream and consumer information)."""
        return self._js

    @property
    def client(self) -> Client:
        """The NATS connection (core NATS request/reply, such as the control subjects)."""
        return self._client

    @property
    def connected(self) -> bool:
        """The connection to the server is up (False while reconnecting, and once closed)."""
        return bool(self._client.is_connected)

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        limits: StreamLimits | None = None,
        name: str = "colmena",
        connect_timeout: float = 5.0,
    ) -> Bus:
        """Connect to ``url`` and create (or update) :data:`STREAM`.

        Raises
        ------
        ConnectionError
            The server cannot be reached within ``connect_timeout`` seconds or has no JetStream.
        """

        async def on_error(exc: Exception) -> None:
            log.warning("NATS connection to %s: %s", url, exc)

        # Once connected, the client reconnects without limit (a restarted server is found
        # again); the first connection is bounded by connect_timeout.
        try:
            client = await asyncio.wait_for(
                nats.connect(
                    url,
                    name=name,
                    connect_timeout=connect_timeout,
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.5,
                    error_cb=on_error,
                ),
                timeout=connect_timeout,
            )
        except (OSError, nats.errors.Error, asyncio.TimeoutError) as exc:
            reason = str(exc) or type(exc).__name__
            raise ConnectionError(f"cannot connect to NATS at {url}: {reason}") from None
        bus = cls(client, limits or StreamLimits())
        try:
            await bus._ensure_stream()
        except Exception:
            await client.close()
            raise
        return bus

    def _stream_config(self) -> api.StreamConfig:
        return api.StreamConfig(
            name=STREAM,
            description="colmena live services, wire version 1 (colmena.live.wire)",
            subjects=[wire.subject_filter()],
            retention=api.RetentionPolicy.LIMITS,
            storage=api.StorageType.FILE,
            discard=api.DiscardPolicy.OLD,
            max_age=self.limits.max_age_seconds,
            max_bytes=self.limits.max_bytes,
            duplicate_window=self.limits.duplicate_window_seconds,
        )

    async def _ensure_stream(self) -> None:
        config = self._stream_config()
        try:
            await self._js.stream_info(STREAM)
        except nats.js.errors.NotFoundError:
            await self._js.add_stream(config)
            return
        except nats.errors.NoRespondersError:
            raise ConnectionError("the NATS server has no JetStream (start it with -js)") from None
        await self._js.update_stream(config)

    async def publish(self, message: wire.WireMessage, *, timeout: float = 5.0) -> PublishResult:
        """Publish ``message`` on its subject with its idempotency key.

        Raises
        ------
        colmena.live.wire.WireError
            A message that breaks the contract (nothing is sent).
        TimeoutError
            No acknowledgement from the stream within ``timeout`` seconds.
        """
        kind = message.__struct_config__.tag
        payload = wire.encode(message)
        subject = wire.subject(kind, message.symbol)  # type: ignore[arg-type]
        try:
            ack = await self._js.publish(
                subject,
                payload,
                timeout=timeout,
                stream=STREAM,
                headers={MSG_ID_HEADER: wire.idempotency_key(message)},
            )
        except nats.errors.TimeoutError:
            raise TimeoutError(f"no acknowledgement of {subject} within {timeout} s") from None
        return PublishResult(sequence=int(ack.seq), duplicate=bool(ack.duplicate))

    async def consumer(
        self,
        kind: wire.MessageKind,
        durable: str,
        *,
        symbol: str | None = None,
        ordered: bool = True,
        ack_wait_seconds: float = 30.0,
        max_deliver: int = -1,
    ) -> Consumer:
        """A durable pull consumer of ``kind`` messages (of ``symbol``, or all symbols).

        Parameters
        ----------
        durable : str
            The consumer's name; a restarted service with the same name resumes after the last
            acknowledged message.
        ordered : bool, default True
            Deliver one message at a time (``max_ack_pending`` 1): the next only after this one
            is acknowledged, so a message that was not acknowledged (a crash) is delivered again
            before any later one and every handler sees the stream in order (what a trading
            service needs). False lets up to 1,000 messages be in flight, for handlers whose
            effect does not depend on order (the recorder: idempotent inserts).
        ack_wait_seconds : float
            A message not acknowledged within this time is delivered again.
        max_deliver : int
            Deliveries before the server gives up on a message (-1: no limit).
        """
        subject = wire.subject(kind, symbol) if symbol is not None else wire.subject_filter(kind)
        max_in_flight = 1 if ordered else 1_000
        config = api.ConsumerConfig(
            durable_name=durable,
            ack_policy=api.AckPolicy.EXPLICIT,
            deliver_policy=api.DeliverPolicy.ALL,
            ack_wait=ack_wait_seconds,
            max_deliver=max_deliver,
            max_ack_pending=max_in_flight,
            filter_subject=subject,
        )
        subscription = await self._js.pull_subscribe(
            subject, durable=durable, stream=STREAM, config=config
        )
        return Consumer(subscription, kind, max_in_flight)

    async def key_value(self, config: api.KeyValueConfig) -> KeyValue:
        """The key-value bucket ``config.bucket``, created with ``config`` when absent (an
        existing bucket keeps its own settings)."""
        try:
            return await self._js.key_value(config.bucket)
        except nats.js.errors.BucketNotFoundError:
            return await self._js.create_key_value(config)

    async def stream_messages(self) -> int:
        """Number of messages in :data:`STREAM`."""
        info = await self._js.stream_info(STREAM)
        return int(info.state.messages)

    async def publish_raw(self, subject: str, payload: bytes, headers: dict[str, Any]) -> None:
        """Publish bytes as they are (for tests of consumers facing a bad producer)."""
        await self._js.publish(subject, payload, stream=STREAM, headers=headers)

    async def close(self) -> None:
        """Flush and close the connection. Publishes and acks are confirmed by the server
        before they return, so closing loses nothing; messages fetched and not acknowledged are
        delivered again after their ``ack_wait``."""
        if not self._client.is_closed:
            await self._client.flush()
            await self._client.close()
