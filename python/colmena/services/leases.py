"""Ownership of a symbol by one service instance: leases in a JetStream key-value bucket.

A trading service keeps per-symbol state (the market state, the risk manager, the account), so
each symbol must be handled by exactly one instance of each role at a time, whatever the
deployment does (two instances started with overlapping partitions, a restart that overlaps the
old process, a second machine). Before it handles a symbol, a service takes the symbol's lease:
the key ``<role>.<symbol token>`` of the bucket :data:`LEASE_BUCKET`, created only when absent
(JetStream's compare-and-set on the key's revision). The holder renews it every third of the
lease time with a compare-and-set on its own revision; the bucket's time to live removes a lease
that was not renewed (its holder died) after ``lease_seconds``, and a clean stop deletes it at
once. A service that finds a lease held waits for it (logging the holder), and a service that
finds its own lease gone or taken (it stalled longer than the lease) stops with
:class:`LeaseLostError` rather than handle the symbol next to its new owner.

The pattern is the key-value "leader election / lock" of JetStream (compare-and-set with a
revision, a bucket TTL for the dead holder): https://docs.nats.io/nats-concepts/jetstream/key-value-store.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import socket
import uuid
from collections.abc import Callable, Iterable
from typing import Final

import nats.errors
import nats.js.errors
from nats.js import api
from nats.js.kv import KeyValue

from colmena.services.bus import Bus

__all__ = ["LEASE_BUCKET", "LeaseLostError", "Leases", "holder_id", "symbol_key"]

log = logging.getLogger(__name__)

#: The key-value bucket of the leases.
LEASE_BUCKET: Final = "colmena_leases"


class LeaseLostError(RuntimeError):
    """A service's lease on a symbol expired or was taken by another instance; the service
    must stop (its supervisor restarts it, and it waits for the lease again)."""


def holder_id() -> str:
    """This process's name in a lease: host, pid and a random suffix (a pid reused after a
    restart is another holder)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def symbol_key(role: str, symbol: str) -> str:
    """A role's key for a symbol in a key-value bucket (its lease, its saved state):
    ``<role>.<readable symbol>_<8 hex digits of its SHA-256>`` (a key holds only letters,
    digits, ``-_=/.``, so ``BTC/USDT:USDT`` needs the hash to stay unique)."""
    readable = "".join(c if c.isalnum() else "_" for c in symbol)
    digest = hashlib.sha256(symbol.encode()).hexdigest()[:8]
    return f"{role}.{readable}_{digest}"


class Leases:
    """The leases one service holds: :meth:`acquire` them all, :meth:`keep` them (a task that
    renews them until it fails), :meth:`release` them at the end.

    Parameters
    ----------
    kv : nats.js.kv.KeyValue
        The bucket (:meth:`open`).
    role : str
    symbols : iterable of str
    holder : str
        This process's name (:func:`holder_id`).
    lease_seconds : float
        The bucket's time to live: how long a lease outlives a dead holder.
    """

    def __init__(
        self, kv: KeyValue, role: str, symbols: Iterable[str], holder: str, lease_seconds: float
    ) -> None:
        self._kv = kv
        self.role = role
        self.symbols = tuple(symbols)
        self.holder = holder
        self.lease_seconds = lease_seconds
        self._revisions: dict[str, int] = {}

    @classmethod
    async def open(
        cls,
        bus: Bus,
        role: str,
        symbols: Iterable[str],
        *,
        holder: str | None = None,
        lease_seconds: float = 10.0,
    ) -> Leases:
        """The lease bucket on ``bus`` (created with ``lease_seconds`` as its time to live when
        absent).

        Raises
        ------
        ValueError
            ``lease_seconds`` below 1 s or above an hour, or a bucket that exists with another
            time to live (every instance must use the same lease time).
        """
        if not 1.0 <= lease_seconds <= 3_600.0:
            raise ValueError(f"lease_seconds={lease_seconds} must be in [1, 3600]")
        kv = await bus.key_value(
            api.KeyValueConfig(
                bucket=LEASE_BUCKET,
                description="colmena: which service instance handles which symbol",
                history=1,
                ttl=lease_seconds,
                storage=api.StorageType.FILE,
            )
        )
        ttl = (await kv.status()).ttl
        if ttl is not None and abs(float(ttl) - lease_seconds) > 1e-3:
            raise ValueError(
                f"the lease bucket {LEASE_BUCKET!r} has a time to live of {float(ttl):g} s, "
                f"this service asks for {lease_seconds:g} s: every instance must use the same"
            )
        return cls(kv, role, symbols, holder or holder_id(), lease_seconds)

    async def _try_take(self, key: str) -> str | None:
        """Take ``key``; None when taken, else the current holder's name."""
        try:
            self._revisions[key] = await self._kv.create(key, self.holder.encode())
            return None
        except nats.js.errors.KeyWrongLastSequenceError:
            pass
        try:
            entry = await self._kv.get(key)
        except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
            return "(released just now)"
        return (entry.value or b"").decode(errors="replace") or "(unknown)"

    async def acquire(
        self,
        stop: asyncio.Event,
        *,
        poll_seconds: float = 0.5,
        on_wait: Callable[[str, str], None] | None = None,
    ) -> bool:
        """Take every symbol's lease, waiting for the ones held by others; returns False when
        ``stop`` was set first (the leases taken so far are released).

        ``on_wait(symbol, holder)`` is called each time a held lease is found (a point tests
        observe)."""
        for symbol in self.symbols:
            key = symbol_key(self.role, symbol)
            warned = False
            while True:
                held_by = await self._try_take(key)
                if held_by is None:
                    break
                if on_wait is not None:
                    on_wait(symbol, held_by)
                if not warned:
                    log.warning(
                        "%s %s: waiting for the lease held by %s (it ends when that instance "
                        "stops, or %g s after it died)",
                        self.role,
                        symbol,
                        held_by,
                        self.lease_seconds,
                    )
                    warned = True
                try:
                    await asyncio.wait_for(stop.wait(), timeout=poll_seconds)
                except asyncio.TimeoutError:
                    continue
                await self.release()
                return False
        return True

    async def keep(self) -> None:
        """Renew every lease each third of the lease time; returns never.

        Raises
        ------
        LeaseLostError
            A lease was taken by another holder or expired (no renewal got through for a whole
            lease time, e.g. the NATS server was unreachable).
        """
        loop = asyncio.get_running_loop()
        renewed = {key: loop.time() for key in self._revisions}
        while True:
            await asyncio.sleep(self.lease_seconds / 3.0)
            for key, revision in list(self._revisions.items()):
                try:
                    self._revisions[key] = await self._kv.update(
                        key, self.holder.encode(), last=revision
                    )
                    renewed[key] = loop.time()
                except nats.js.errors.KeyWrongLastSequenceError:
                    del self._revisions[key]
                    raise LeaseLostError(
                        f"{self.role}: the lease {key} was taken by another instance"
                    ) from None
                except (nats.errors.Error, asyncio.TimeoutError) as exc:
                    if loop.time() - renewed[key] >= self.lease_seconds:
                        del self._revisions[key]
                        raise LeaseLostError(
                            f"{self.role}: the lease {key} could not be renewed for "
                            f"{self.lease_seconds:g} s ({exc or type(exc).__name__})"
                        ) from None
                    log.warning("%s: renewing the lease %s failed: %s", self.role, key, exc)

    async def release(self) -> None:
        """Delete the leases this holder still has (best effort: one that cannot be deleted
        expires after the lease time)."""
        for key, revision in list(self._revisions.items()):
            try:
                await self._kv.delete(key, last=revision)
            except (nats.errors.Error, nats.js.errors.Error, asyncio.TimeoutError) as exc:
                log.warning("%s: the lease %s was not released: %s", self.role, key, exc)
            del self._revisions[key]
