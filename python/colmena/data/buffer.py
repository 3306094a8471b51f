"""MarketBuffer: a fixed-capacity ring of OHLCV candles with zero-copy newest-n windows.

The ring lives in the compiled core (``cpp/include/colmena/market_buffer.hpp``); this module
converts inputs (array-likes, Arrow tables) and documents the behaviour.

Units: timestamps are candle open times in nanoseconds since the Unix epoch (UTC); prices are in
the quote currency; volume is in the base currency.
"""

from __future__ import annotations

from typing import Any, Final, Literal, NamedTuple, cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import ArrayLike, NDArray

from colmena import _core

__all__ = ["ARROW_TIMESTAMP_COLUMNS", "CandleWindow", "MarketBuffer", "StorageKind"]

#: Storage of the ring: "mirrored" (memfd mapped twice back to back) or "double_write".
StorageKind = Literal["mirrored", "double_write"]

#: Timestamp column names accepted by :meth:`MarketBuffer.extend_arrow`, in order of preference.
ARROW_TIMESTAMP_COLUMNS: Final[tuple[str, ...]] = ("ts", "timestamp", "open_time")

_PRICE_FIELDS: Final[tuple[str, ...]] = ("open", "high", "low", "close", "volume")
_INT64_MAX: Final = int(np.iinfo(np.int64).max)


class CandleWindow(NamedTuple):
    """The newest candles of a :class:`MarketBuffer`, oldest first, one array per field.

    A tuple of six arrays, so ``ts, open, high, low, close, volume = window`` works;
    ``len(window)`` is 6, the number of rows is ``window.ts.shape[0]``.

    Attributes
    ----------
    ts : numpy.ndarray of int64, shape [n_rows]
        Candle open times, ns since epoch UTC.
    open, high, low, close : numpy.ndarray of float64, shape [n_rows]
        Prices in the quote currency.
    volume : numpy.ndarray of float64, shape [n_rows]
        Volume in the base currency.
    """

    ts: NDArray[np.int64]
    open: NDArray[np.float64]
    high: NDArray[np.float64]
    low: NDArray[np.float64]
    close: NDArray[np.float64]
    volume: NDArray[np.float64]

    def to_arrow(self) -> pa.Table:
        """Copy the window into an Arrow table.

        Always a copy: Arrow arrays are immutable by contract, and a view of the ring would
        change as the buffer wraps.

        Returns
        -------
        pyarrow.Table
            Columns ``ts`` (timestamp[ns, tz=UTC]) and ``open``, ``high``, ``low``, ``close``,
            ``volume`` (float64), n_rows rows.
        """
        columns: dict[str, pa.Array] = {
            "ts": pa.array(np.array(self.ts)).cast(pa.timestamp("ns", tz="UTC"))
        }
        for name in _PRICE_FIELDS:
            columns[name] = pa.array(np.array(getattr(self, name)))
        return pa.table(columns)


class MarketBuffer:
    """Fixed-capacity ring of OHLCV candles, stored column-wise, with zero-copy windows.

    Holds the newest ``capacity`` candles; pushing into a full buffer drops the oldest. Every
    write is validated (rules below) and all-or-nothing. ``last(n)`` returns the newest n
    candles as contiguous read-only NumPy arrays without copying: each field's ring is mapped
    twice back to back in virtual memory ("mirrored" storage, Linux memfd_create + mmap), so a
    window that wraps around the end of the ring is still one contiguous run. Where that is
    unavailable, a portable "double_write" storage writes every element twice (at slot i and
    i + capacity) to the same effect. ``storage`` says which one is in use.

    Costs: ``push`` is O(1) with no allocation and no page faults (all memory is committed at
    construction); ``extend`` of n rows validates all n and copies only the newest
    ``min(n, capacity)``, one memcpy per field (mirrored), with the GIL released; ``last`` is
    O(1).

    Validation (the compiled ``find_invalid_ohlcv``): ts strictly increasing and after
    ``newest_timestamp``; open, high, low, close finite and > 0; volume finite and >= 0;
    high >= low; open and close within [low, high]. A bad candle raises ValueError naming the
    row, field and value, e.g. ``MarketBuffer.extend: row 17: high (101.5) < low (102.0)``,
    and changes nothing.

    Parameters
    ----------
    capacity : int
        Most candles held (>= 1). The storage may be rounded up internally to whole pages;
        the logical capacity stays exactly this.
    storage : {"auto", "mirrored", "double_write"}, default "auto"
        "auto" uses "mirrored" when the system allows and falls back to "double_write";
        "mirrored" raises when it is unavailable; "double_write" forces the fallback.

    Raises
    ------
    ValueError
        capacity < 1, an unknown storage name, or a capacity whose committed storage exceeds
        the machine's physical memory (48 bytes a candle mirrored, 96 double_write; the
        message names the largest capacity that fits). Checked before anything is allocated.
    TypeError
        capacity is not an integer (a bool is refused too).
    RuntimeError
        storage="mirrored" and the system cannot provide it.
    MemoryError
        The storage cannot be allocated.

    Notes
    -----
    Windows share memory with the ring: once later writes wrap past the rows a window shows,
    its contents change (they show newer candles). Take ``last(n, copy=True)`` to keep data.
    A window keeps the ring's memory alive, even after the buffer object is gone.

    Thread safety: not designed for concurrent writers. Calls are serialised by an internal
    lock, so concurrent calls cannot corrupt the ring, but the order in which concurrent writes
    land is unspecified, and a window read while another thread writes can show rows being
    overwritten. Use one writer, or your own lock.

    After ``os.fork()`` the child gets its own private copy of the ring at the same addresses:
    writes in one process never show in the other. Forking while another thread is inside
    ``extend`` is safe: the fork waits for the call to finish (``cpp/include/colmena/parallel.hpp``,
    "Fork"). At interpreter exit, core calls still running in daemon threads are waited for
    (up to ``_core.CORE_EXIT_WAIT_S`` seconds) and new ones raise RuntimeError.

    Source: ``cpp/src/market_buffer.cpp``, ``bindings/register_buffer.cpp``.

    Examples
    --------
    >>> buf = MarketBuffer(3)
    >>> buf.push(1_700_000_000_000_000_000, 100.0, 101.0, 99.5, 100.5, 12.0)
    >>> len(buf), buf.newest_timestamp
    (1, 1700000000000000000)
    """

    __slots__ = ("_core",)

    def __init__(
        self, capacity: int, *, storage: Literal["auto", "mirrored", "double_write"] = "auto"
    ) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int | np.integer):
            raise TypeError(f"MarketBuffer: capacity must be an int, got {type(capacity).__name__}")
        self._core = _core.MarketBuffer(int(capacity), storage)

    # ------------------------------------------------------------------ properties

    @property
    def capacity(self) -> int:
        """Most candles held (as given at construction)."""
        return self._core.capacity

    @property
    def is_full(self) -> bool:
        """True when ``len(self) == capacity``: the next write drops the oldest candle."""
        return self._core.is_full

    @property
    def storage(self) -> StorageKind:
        """The storage in use: "mirrored" or "double_write" (read-only)."""
        return cast(StorageKind, self._core.storage)

    @property
    def ring_slots(self) -> int:
        """Physical slots per field (>= capacity; mirrored storage rounds up to whole pages)."""
        return self._core.ring_slots

    @property
    def newest_timestamp(self) -> int | None:
        """Open time of the newest candle, ns since epoch UTC; None when empty."""
        return self._core.newest_timestamp

    def __len__(self) -> int:
        """Candles held now (<= capacity)."""
        return len(self._core)

    def __repr__(self) -> str:
        newest = self.newest_timestamp
        shown = "None" if newest is None else str(np.datetime64(newest, "ns")) + "Z"
        return (
            f"MarketBuffer(capacity={self.capacity}, len={len(self)}, "
            f"storage={self.storage!r}, newest={shown})"
        )

    # ------------------------------------------------------------------ writing

    def push(
        self, ts: int, open: float, high: float, low: float, close: float, volume: float
    ) -> None:
        """Append one candle; when full, the oldest candle is dropped. O(1).

        Parameters
        ----------
        ts : int
            Open time, ns since epoch UTC; must be after ``newest_timestamp``.
        open, high, low, close : float
            Prices in the quote currency, finite and > 0, with low <= open, close <= high.
        volume : float
            Volume in the base currency, finite and >= 0.

        Raises
        ------
        ValueError
            The candle breaks a rule, e.g. ``MarketBuffer.push: high (101.5) < low (102.0)``;
            nothing is written.
        TypeError
            An argument is not a number (ts must be an int).
        """
        self._core.push(ts, open, high, low, close, volume)

    def extend(
        self,
        ts: ArrayLike,
        open: ArrayLike,
        high: ArrayLike,
        low: ArrayLike,
        close: ArrayLike,
        volume: ArrayLike,
    ) -> None:
        """Append candles, oldest first; all-or-nothing.

        Every row is validated before anything is written. Only the newest
        ``min(n_rows, capacity)`` rows are copied; validation and copies run without the GIL.

        Parameters
        ----------
        ts : array_like of int, shape [n_rows]
            Open times, ns since epoch UTC: any integer dtype (converted to int64) or
            datetime64 (converted to ns). Strictly increasing, the first after
            ``newest_timestamp``.
        open, high, low, close : array_like of float, shape [n_rows]
            Prices in the quote currency: any real (float or integer) dtype, converted to
            float64.
        volume : array_like of float, shape [n_rows]
            Volume in the base currency, converted to float64.

        Raises
        ------
        ValueError
            A row breaks a rule (``MarketBuffer.extend: row 17: high (101.5) < low (102.0)``),
            the arrays are not 1-D or differ in length, or ts holds NaT / does not fit int64.
        TypeError
            A dtype cannot be converted safely (e.g. float timestamps, strings, objects).
        """
        context = "MarketBuffer.extend"
        values = (open, high, low, close, volume)
        prices = [_prices(v, name, context) for name, v in zip(_PRICE_FIELDS, values, strict=True)]
        self._core.extend(_timestamps(ts, context), *prices)

    def extend_arrow(self, data: pa.Table | pa.RecordBatch) -> None:
        """Append candles from an Arrow table or record batch; all-or-nothing.

        Parameters
        ----------
        data : pyarrow.Table or pyarrow.RecordBatch
            n_rows rows, oldest first, with columns:

            - the timestamp, the first of ``ts``, ``timestamp``, ``open_time`` present: an
              Arrow timestamp of any unit and time zone (Arrow stores UTC instants; a
              zone-less timestamp is taken as UTC), converted to int64 ns; or an integer
              column, taken as ns since epoch UTC;
            - ``open``, ``high``, ``low``, ``close`` (quote currency), ``volume`` (base
              currency): floating, integer or decimal, converted to float64.

            Other columns are ignored. A single-chunk float64 / int64 / timestamp[ns] column is
            used without a copy.

        Raises
        ------
        ValueError
            A column is missing or has a null, a timestamp does not fit int64 ns, or a row
            breaks a rule (``MarketBuffer.extend_arrow: row 17: ...``); nothing is written.
        TypeError
            ``data`` is not a Table or RecordBatch, or a column has an unusable type.
        """
        context = "MarketBuffer.extend_arrow"
        if not isinstance(data, pa.Table | pa.RecordBatch):
            raise TypeError(
                f"{context}: expected a pyarrow.Table or pyarrow.RecordBatch, "
                f"got {type(data).__name__}"
            )
        names = data.schema.names
        ts_name = next((n for n in ARROW_TIMESTAMP_COLUMNS if n in names), None)
        if ts_name is None:
            raise ValueError(
                f"{context}: missing the timestamp column: expected one of "
                f"{', '.join(ARROW_TIMESTAMP_COLUMNS)}; got columns {', '.join(names)}"
            )
        for name in _PRICE_FIELDS:
            if name not in names:
                raise ValueError(
                    f"{context}: missing column {name!r}; got columns {', '.join(names)}"
                )
        ts = _arrow_timestamps_ns(_arrow_column(data, ts_name, context), ts_name, context)
        values = [
            _arrow_float64(_arrow_column(data, name, context), name, context)
            for name in _PRICE_FIELDS
        ]
        self._core.extend(ts, *values, caller=context)

    def clear(self) -> None:
        """Forget every candle (O(1)). ``newest_timestamp`` becomes None; memory is kept."""
        self._core.clear()

    # ------------------------------------------------------------------ reading

    def last(self, n: int | None = None, *, copy: bool = False) -> CandleWindow:
        """The newest ``min(n, len(self))`` candles, oldest first.

        Parameters
        ----------
        n : int, optional
            Number of candles wanted (>= 0); default: all held.
        copy : bool, default False
            False: read-only views into the ring, no copy (O(1)). True: fresh, writable arrays
            that later writes do not touch.

        Returns
        -------
        CandleWindow
            Six contiguous arrays of shape [min(n, len(self))]: ts int64 ns since epoch UTC,
            open/high/low/close float64 quote currency, volume float64 base currency. Views
            (copy=False) have the buffer's storage as their ``base`` and keep it alive; later
            writes overwrite what they show once the ring wraps past them.

        Raises
        ------
        ValueError
            n < 0.
        """
        return CandleWindow._make(self._core.last(len(self._core) if n is None else n, copy))

    def last_table(self, n: int | None = None) -> pa.Table:
        """The newest ``min(n, len(self))`` candles as an Arrow table (a copy).

        Parameters
        ----------
        n : int, optional
            Number of candles wanted (>= 0); default: all held.

        Returns
        -------
        pyarrow.Table
            Columns ``ts`` (timestamp[ns, tz=UTC]) and ``open``, ``high``, ``low``, ``close``,
            ``volume`` (float64), oldest first.
        """
        return self.last(n, copy=True).to_arrow()

    def to_arrow(self) -> pa.Table:
        """Every candle held as an Arrow table (a copy); see :meth:`last_table`."""
        return self.last_table()


# ---------------------------------------------------------------- input conversion


def _one_dimensional(values: ArrayLike, name: str, context: str) -> NDArray[Any]:
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{context}: {name} must be 1-D, got shape {array.shape}")
    return array


def _timestamps(values: ArrayLike, context: str) -> NDArray[np.int64]:
    array = _one_dimensional(values, "ts", context)
    kind = array.dtype.kind
    if array.size == 0 and kind in "fiu":  # np.asarray([]) is float64
        return np.zeros(0, dtype=np.int64)
    if kind == "M":
        if np.isnat(array).any():
            row = int(np.flatnonzero(np.isnat(array))[0])
            raise ValueError(f"{context}: row {row}: ts is NaT")
        array = array.astype("datetime64[ns]").view(np.int64)
    elif kind == "u":
        if array.size and int(array.max()) > _INT64_MAX:
            row = int(np.argmax(array > _INT64_MAX))
            raise ValueError(f"{context}: row {row}: ts ({array[row]}) does not fit in int64")
        array = array.astype(np.int64)
    elif kind == "i":
        array = array.astype(np.int64, copy=False)
    else:
        raise TypeError(
            f"{context}: ts must be integers (ns since epoch UTC) or datetime64, "
            f"got dtype {array.dtype}"
        )
    return np.ascontiguousarray(array)


def _prices(values: ArrayLike, name: str, context: str) -> NDArray[np.float64]:
    array = _one_dimensional(values, name, context)
    if array.dtype.kind not in "fiu":
        raise TypeError(f"{context}: {name} must be real numbers, got dtype {array.dtype}")
    return np.ascontiguousarray(array, dtype=np.float64)


def _arrow_column(data: pa.Table | pa.RecordBatch, name: str, context: str) -> pa.Array:
    column = data.column(name)
    if isinstance(column, pa.ChunkedArray):
        column = column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
    if column.null_count:
        row = int(np.argmax(pc.is_null(column).to_numpy(zero_copy_only=False)))
        raise ValueError(f"{context}: row {row}: column {name!r} is null")
    return column


def _arrow_timestamps_ns(column: pa.Array, name: str, context: str) -> NDArray[np.int64]:
    kind = column.type
    if pa.types.is_timestamp(kind):
        try:
            column = pc.cast(column, pa.timestamp("ns", tz=kind.tz))
        except pa.ArrowInvalid as exc:
            raise ValueError(f"{context}: column {name!r}: {exc}") from None
    elif pa.types.is_integer(kind):
        try:
            column = pc.cast(column, pa.int64())
        except pa.ArrowInvalid as exc:
            raise ValueError(f"{context}: column {name!r}: {exc}") from None
    else:
        raise TypeError(
            f"{context}: column {name!r} must be an Arrow timestamp or an integer (ns since "
            f"epoch UTC), got {kind}"
        )
    return np.ascontiguousarray(
        pc.cast(column, pa.int64()).to_numpy(zero_copy_only=False), dtype=np.int64
    )


def _arrow_float64(column: pa.Array, name: str, context: str) -> NDArray[np.float64]:
    kind = column.type
    if not (pa.types.is_floating(kind) or pa.types.is_integer(kind) or pa.types.is_decimal(kind)):
        raise TypeError(f"{context}: column {name!r} must be numeric, got {kind}")
    if kind != pa.float64():
        column = pc.cast(column, pa.float64(), safe=False)
    return np.ascontiguousarray(column.to_numpy(zero_copy_only=False), dtype=np.float64)
