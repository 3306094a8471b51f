"""The trading state that must survive restarts, in a JetStream key-value bucket.

The risk and execution services keep, for each symbol, their handler's state at the newest bar
they finished (:class:`colmena.live.handlers.HandlerState`: the trading state, HALT, pause
deadlines, peak and day-start equity, the kill switch's window, the Kelly window, the
outstanding order and remainder; the account, its position and pending order) in the bucket
:data:`STATE_BUCKET` (file storage, so it survives the NATS server's restart too), key
``<role>.<symbol token>``, with the stream sequence of that bar's candle. A restarted service
restores it and replays from the stream only the messages after that candle, so its state no
longer depends on the stream's retention (a week by default): a HALT stays a HALT however long
the system was down. The risk service also keeps the account's kill switch over every symbol
(:class:`colmena.live.account.AccountGuard`) under :data:`ACCOUNT_KEY`. The decisions
themselves, and every event (a HALT included), are also recorded in PostgreSQL by the recorder.
A saved state is written after the bar's outputs are confirmed by the stream and before the
input that finished the bar is acknowledged, so every acknowledged input is either in the saved
state or in the stream after its candle. Values are MessagePack of :class:`SavedState`, decoded
strictly (unknown fields refused); the bucket keeps the last :data:`HISTORY` revisions of each
key for inspection.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec
import nats.js.errors
from nats.js import api
from nats.js.kv import KeyValue

from colmena.live.account import AccountGuardState
from colmena.live.handlers import HandlerState
from colmena.services.bus import Bus
from colmena.services.leases import symbol_key

__all__ = ["ACCOUNT_KEY", "HISTORY", "STATE_BUCKET", "SavedState", "StateError", "StateStore"]

#: The key-value bucket of the services' state.
STATE_BUCKET: Final = "colmena_state"
#: Revisions kept per key.
HISTORY: Final = 8


class StateError(ValueError):
    """A saved state that cannot be read; the message names the bucket and key."""


class SavedState(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One handler's saved state.

    Attributes
    ----------
    handler : HandlerState
        The state once bar ``handler.done_ts`` was finished.
    candle_sequence : int
        Stream sequence of that bar's candle: a restart replays the inputs after it.
    """

    handler: HandlerState
    candle_sequence: int


_decoder = msgspec.msgpack.Decoder(SavedState)
_account_decoder = msgspec.msgpack.Decoder(AccountGuardState)
#: Key of the account's kill-switch state (one account per stream).
ACCOUNT_KEY: Final = "risk.account"


class StateStore:
    """The state bucket on a bus: :meth:`load` and :meth:`save` one role's state of a symbol.

    Create with ``await StateStore.open(bus)``.
    """

    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv

    @classmethod
    async def open(cls, bus: Bus) -> StateStore:
        """The bucket :data:`STATE_BUCKET` (created when absent)."""
        kv = await bus.key_value(
            api.KeyValueConfig(
                bucket=STATE_BUCKET,
                description="colmena: the risk and execution services' state per symbol",
                history=HISTORY,
                storage=api.StorageType.FILE,
            )
        )
        return cls(kv)

    async def _get(self, key: str, decoder: msgspec.msgpack.Decoder[Any], what: str) -> Any:
        try:
            entry = await self._kv.get(key)
        except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
            return None
        try:
            return decoder.decode(entry.value or b"")
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise StateError(
                f"{STATE_BUCKET}/{key} (revision {entry.revision}): not {what}: {exc}"
            ) from None

    async def load(self, role: str, symbol: str) -> SavedState | None:
        """The saved state of ``role`` for ``symbol``; None when there is none.

        Raises
        ------
        StateError
            A value that does not decode as a :class:`SavedState` (the message names the key;
            the service must not start from a guess).
        """
        state: SavedState | None = await self._get(
            symbol_key(role, symbol), _decoder, "a saved state"
        )
        return state

    async def load_account(self) -> AccountGuardState | None:
        """The account guard's saved state (:class:`colmena.live.account.AccountGuard`); None
        when there is none.

        Raises
        ------
        StateError
            A value that does not decode (the message names the key).
        """
        state: AccountGuardState | None = await self._get(
            ACCOUNT_KEY, _account_decoder, "an account state"
        )
        return state

    async def save_account(self, state: AccountGuardState) -> int:
        """Write the account guard's state; returns the key's new revision."""
        return await self._kv.put(ACCOUNT_KEY, msgspec.msgpack.encode(state))

    async def save(self, role: str, symbol: str, state: SavedState) -> int:
        """Write ``state`` (confirmed by the server); returns the key's new revision."""
        return await self._kv.put(symbol_key(role, symbol), msgspec.msgpack.encode(state))
