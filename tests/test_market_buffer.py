"""MarketBuffer: model-based (hypothesis) test against a deque, views, conversions, Arrow, fork."""

from __future__ import annotations

import gc
import inspect
import math
import os
import threading
from collections import deque

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from colmena import _core
from colmena.data.buffer import CandleWindow, MarketBuffer

T0 = 1_677_628_800_000_000_000  # 2023-03-01T00:00:00Z in ns
MINUTE = 60_000_000_000
FIELDS = ("ts", "open", "high", "low", "close", "volume")

Row = tuple[int, float, float, float, float, float]


def mirrored_available() -> bool:
    return MarketBuffer(1).storage == "mirrored"


STORAGES = [
    pytest.param(
        "mirrored",
        marks=pytest.mark.skipif(
            not mirrored_available(), reason="mirrored storage needs Linux memfd_create and mmap"
        ),
    ),
    "double_write",
]


def make_rows(n: int, first_ts: int, seed: int) -> dict[str, np.ndarray]:
    """n valid candles starting at first_ts with random positive steps."""
    rng = np.random.default_rng(seed)
    steps = rng.integers(1, 5 * MINUTE, size=n, dtype=np.int64)
    steps[:1] = 0
    close = 100.0 * np.exp(np.cumsum(rng.standard_normal(n)) * 1e-3)
    open_ = close * np.exp(rng.standard_normal(n) * 1e-3)
    return {
        "ts": first_ts + np.cumsum(steps),
        "open": open_,
        "high": np.maximum(open_, close) * (1 + rng.random(n) * 1e-3),
        "low": np.minimum(open_, close) * (1 - rng.random(n) * 1e-3),
        "close": close,
        "volume": rng.random(n) * 5,
    }


def as_rows(columns: dict[str, np.ndarray]) -> list[Row]:
    return [
        (int(t), float(o), float(h), float(lo), float(c), float(v))
        for t, o, h, lo, c, v in zip(*(columns[f] for f in FIELDS), strict=True)
    ]


def assert_window_equals(window: CandleWindow, rows: list[Row]) -> None:
    assert window.ts.dtype == np.int64
    assert window.ts.tolist() == [r[0] for r in rows]
    for k, name in enumerate(FIELDS[1:], start=1):
        array = getattr(window, name)
        assert array.dtype == np.float64
        assert array.flags.c_contiguous
        np.testing.assert_array_equal(array, np.array([r[k] for r in rows], dtype=np.float64))


def fill(buffer: MarketBuffer, n: int, first_ts: int = T0, seed: int = 0) -> list[Row]:
    columns = make_rows(n, first_ts, seed)
    buffer.extend(*(columns[f] for f in FIELDS))
    return as_rows(columns)


# ---------------------------------------------------------------- model-based test


# (field named in the message, how to break a valid candle)
BAD_CANDLES = {
    "ts_stale": "ts",
    "open_nan": "open",
    "high_inf": "high",
    "low_zero": "low",
    "close_negative": "close",
    "volume_negative": "volume",
    "volume_nan": "volume",
    "high_below_low": "high",
    "open_above_high": "open",
    "close_below_low": "close",
}


def corrupt(row: Row, kind: str, newest: int | None) -> Row:
    ts, o, h, lo, c, v = row
    if kind == "ts_stale":
        assert newest is not None
        return (newest, o, h, lo, c, v)
    return {
        "open_nan": (ts, math.nan, h, lo, c, v),
        "high_inf": (ts, o, math.inf, lo, c, v),
        "low_zero": (ts, o, h, 0.0, c, v),
        "close_negative": (ts, o, h, lo, -c, v),
        "volume_negative": (ts, o, h, lo, c, -1.0),
        "volume_nan": (ts, o, h, lo, c, math.nan),
        "high_below_low": (ts, o, lo * 0.5, lo, c, v),
        "open_above_high": (ts, h * 2, h, lo, c, v),
        "close_below_low": (ts, o, h, lo, lo * 0.5, v),
    }[kind]


class BufferMachine(RuleBasedStateMachine):
    """MarketBuffer against collections.deque(maxlen=capacity)."""

    storage = "auto"

    def __init__(self) -> None:
        super().__init__()
        self.buffer: MarketBuffer | None = None
        self.model: deque[Row] = deque()
        self.next_ts = T0
        self.seed = 0

    # Capacities around the page rounding of the mirrored storage (512 slots per 4 KiB page).
    @initialize(capacity=st.sampled_from([1, 2, 3, 7, 64, 511, 512, 513, 1000, 1025]))
    def create(self, capacity: int) -> None:
        self.buffer = MarketBuffer(capacity, storage=self.storage)  # type: ignore[arg-type]
        if self.storage != "auto":
            assert self.buffer.storage == self.storage
        self.model = deque(maxlen=capacity)

    def fresh(self, n: int) -> dict[str, np.ndarray]:
        self.seed += 1
        columns = make_rows(n, self.next_ts, self.seed)
        return columns

    def advance(self, columns: dict[str, np.ndarray]) -> None:
        if len(columns["ts"]):
            self.next_ts = int(columns["ts"][-1]) + 1 + self.seed % 7

    @property
    def newest(self) -> int | None:
        return self.model[-1][0] if self.model else None

    @rule()
    def push(self) -> None:
        assert self.buffer is not None
        columns = self.fresh(1)
        (row,) = as_rows(columns)
        self.buffer.push(*row)
        self.model.append(row)
        self.advance(columns)

    @rule(n=st.integers(0, 2600))
    def extend(self, n: int) -> None:
        assert self.buffer is not None
        columns = self.fresh(n)
        self.buffer.extend(*(columns[f] for f in FIELDS))
        self.model.extend(as_rows(columns))
        self.advance(columns)

    @rule(n=st.integers(0, 1100), copy=st.booleans())
    def last(self, n: int, copy: bool) -> None:
        assert self.buffer is not None
        window = self.buffer.last(n, copy=copy)
        expected = list(self.model)[-n:] if n else []
        assert_window_equals(window, expected)
        assert window.ts.flags.writeable == copy

    @rule()
    def clear(self) -> None:
        assert self.buffer is not None
        self.buffer.clear()
        self.model.clear()

    @rule(kind=st.sampled_from(sorted(BAD_CANDLES)))
    def invalid_push(self, kind: str) -> None:
        assert self.buffer is not None
        if kind == "ts_stale" and self.newest is None:
            kind = "open_nan"
        (row,) = as_rows(self.fresh(1))
        bad = corrupt(row, kind, self.newest)
        with pytest.raises(ValueError, match=rf"^MarketBuffer\.push: {BAD_CANDLES[kind]} ") as info:
            self.buffer.push(*bad)
        assert "row" not in str(info.value)

    @rule(n=st.integers(1, 2600), where=st.floats(0, 1), kind=st.sampled_from(sorted(BAD_CANDLES)))
    def invalid_extend(self, n: int, where: float, kind: str) -> None:
        assert self.buffer is not None
        columns = self.fresh(n)
        bad_row = min(int(where * n), n - 1)
        if kind == "ts_stale":
            if bad_row == 0 and self.newest is None:
                kind = "open_nan"
            else:
                previous = self.newest if bad_row == 0 else int(columns["ts"][bad_row - 1])
                columns["ts"][bad_row] = previous
        if kind != "ts_stale":
            row = as_rows({f: columns[f][bad_row : bad_row + 1] for f in FIELDS})[0]
            for k, value in enumerate(corrupt(row, kind, None)):
                columns[FIELDS[k]][bad_row] = value
        field = BAD_CANDLES[kind]
        with pytest.raises(ValueError, match=rf"^MarketBuffer\.extend: row {bad_row}: {field} "):
            self.buffer.extend(*(columns[f] for f in FIELDS))

    @invariant()
    def state_matches_model(self) -> None:
        if self.buffer is None:
            return
        assert len(self.buffer) == len(self.model)
        assert self.buffer.newest_timestamp == self.newest
        assert self.buffer.is_full == (len(self.model) == self.model.maxlen)
        assert_window_equals(self.buffer.last(), list(self.model))

    @precondition(lambda self: self.buffer is not None and len(self.buffer) > 0)
    @invariant()
    def windows_are_zero_copy_views(self) -> None:
        assert self.buffer is not None
        a = self.buffer.last()
        b = self.buffer.last(1)
        assert a.close[-1:].ctypes.data == b.close.ctypes.data
        assert not a.close.flags.writeable


class MirroredMachine(BufferMachine):
    storage = "mirrored"


class DoubleWriteMachine(BufferMachine):
    storage = "double_write"


MODEL_SETTINGS = settings(max_examples=60, stateful_step_count=50, deadline=None)


@pytest.mark.skipif(
    not mirrored_available(), reason="mirrored storage needs Linux memfd_create and mmap"
)
class TestMirroredAgainstDeque(MirroredMachine.TestCase):  # type: ignore[name-defined]
    settings = MODEL_SETTINGS


class TestDoubleWriteAgainstDeque(DoubleWriteMachine.TestCase):  # type: ignore[name-defined]
    settings = MODEL_SETTINGS


# ---------------------------------------------------------------- construction


@pytest.mark.parametrize("capacity", [0, -1, -(2**40)])
def test_capacity_below_one_is_a_value_error(capacity: int) -> None:
    with pytest.raises(ValueError, match=f"capacity must be >= 1, got {capacity}"):
        MarketBuffer(capacity)


@pytest.mark.parametrize("capacity", [1.5, "10", True, None])
def test_capacity_must_be_an_int(capacity: object) -> None:
    with pytest.raises(TypeError, match="capacity must be an int"):
        MarketBuffer(capacity)  # type: ignore[arg-type]


@pytest.mark.parametrize("storage", ["auto", "double_write"])
def test_capacity_beyond_physical_memory_is_refused_before_allocating(storage: str) -> None:
    with pytest.raises(ValueError, match="more than this machine's memory"):
        MarketBuffer(2**50, storage=storage)  # type: ignore[arg-type]


def test_unknown_storage_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="storage must be 'auto', 'mirrored' or 'double_write'"):
        MarketBuffer(10, storage="fast")  # type: ignore[arg-type]


@pytest.mark.skipif(not mirrored_available(), reason="mirrored storage unavailable here")
def test_auto_picks_mirrored_and_rounds_slots_to_whole_pages() -> None:
    page_slots = os.sysconf("SC_PAGESIZE") // 8
    for capacity in (1, page_slots - 1, page_slots, page_slots + 1, 100_000):
        buffer = MarketBuffer(capacity)
        assert buffer.storage == "mirrored"
        assert buffer.capacity == capacity
        assert buffer.ring_slots >= capacity
        assert buffer.ring_slots % page_slots == 0
        assert buffer.ring_slots - capacity < page_slots


def test_double_write_uses_exactly_capacity_slots() -> None:
    buffer = MarketBuffer(1000, storage="double_write")
    assert buffer.storage == "double_write"
    assert buffer.ring_slots == 1000


def test_storage_is_read_only() -> None:
    buffer = MarketBuffer(4)
    with pytest.raises(AttributeError):
        buffer.storage = "double_write"  # type: ignore[misc]


def test_empty_buffer_state() -> None:
    buffer = MarketBuffer(3)
    assert len(buffer) == 0
    assert not buffer
    assert buffer.newest_timestamp is None
    assert not buffer.is_full
    window = buffer.last(5)
    assert window.ts.shape == (0,)
    assert window.ts.dtype == np.int64
    assert repr(buffer) == (
        f"MarketBuffer(capacity=3, len=0, storage={buffer.storage!r}, newest=None)"
    )


# ---------------------------------------------------------------- push and extend


@pytest.mark.parametrize("storage", STORAGES)
def test_push_keeps_the_newest_capacity_candles(storage: str) -> None:
    buffer = MarketBuffer(5, storage=storage)  # type: ignore[arg-type]
    rows = as_rows(make_rows(1500, T0, 1))
    for row in rows:
        buffer.push(*row)
    assert len(buffer) == 5
    assert buffer.is_full
    assert buffer.newest_timestamp == rows[-1][0]
    assert_window_equals(buffer.last(), rows[-5:])
    assert "newest=2023-03-0" in repr(buffer)


def test_push_error_message_names_field_and_values() -> None:
    buffer = MarketBuffer(5)
    with pytest.raises(ValueError, match=r"^MarketBuffer\.push: high \(101\.5\) < low \(102\.0\)$"):
        buffer.push(T0, 101.0, 101.5, 102.0, 101.0, 1.0)
    buffer.push(T0, 101.0, 102.0, 100.0, 101.0, 1.0)
    with pytest.raises(ValueError, match=r"duplicates|is not after the newest stored ts"):
        buffer.push(T0, 101.0, 102.0, 100.0, 101.0, 1.0)
    assert len(buffer) == 1


def test_push_rejects_non_numbers() -> None:
    buffer = MarketBuffer(5)
    with pytest.raises(TypeError):
        buffer.push(float(T0), 1.0, 1.0, 1.0, 1.0, 1.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        buffer.push(T0, "1", 1.0, 1.0, 1.0, 1.0)  # type: ignore[arg-type]


def test_push_accepts_keywords_and_numpy_scalars() -> None:
    buffer = MarketBuffer(5)
    buffer.push(ts=T0, open=100.0, high=101.0, low=99.0, close=100.5, volume=2)
    buffer.push(np.int64(T0 + 1), np.float32(100.0), 101, np.float64(99.0), 100.5, volume=0.0)
    assert buffer.last().ts.tolist() == [T0, T0 + 1]
    assert buffer.last().high.tolist() == [101.0, 101.0]


def test_core_push_argument_errors() -> None:
    core = _core.MarketBuffer(5)
    with pytest.raises(TypeError, match="missing argument 'volume'"):
        core.push(T0, 1.0, 1.0, 1.0, 1.0)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="takes 6 arguments"):
        core.push(T0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="unexpected keyword argument 'price'"):
        core.push(T0, 1.0, 1.0, 1.0, 1.0, price=1.0)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="repeated keyword argument 'open'"):
        core.push(T0, 1.0, 1.0, 1.0, 1.0, open=1.0)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match=r"ts must be an int .* got float"):
        core.push(float(T0), 1.0, 1.0, 1.0, 1.0, 1.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="low must be a number, got str"):
        core.push(T0, 1.0, 1.0, "1", 1.0, 1.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        core.push(T0, 1.0, 1.0, None, 1.0, 1.0)  # type: ignore[arg-type]
    with pytest.raises(OverflowError):
        core.push(2**63, 1.0, 1.0, 1.0, 1.0, 1.0)
    with pytest.raises(TypeError):
        _core.MarketBuffer.push(object(), T0, 1.0, 1.0, 1.0, 1.0, 1.0)  # type: ignore[arg-type]
    assert len(core) == 0
    assert str(inspect.signature(core.push)) == "(ts, open, high, low, close, volume)"


def test_extend_error_message_matches_the_documented_form() -> None:
    buffer = MarketBuffer(100)
    columns = make_rows(30, T0, 2)
    columns["high"][17], columns["low"][17] = 101.5, 102.0
    columns["open"][17] = columns["close"][17] = 101.75
    with pytest.raises(ValueError, match="row 17") as info:
        buffer.extend(*(columns[f] for f in FIELDS))
    assert str(info.value) == "MarketBuffer.extend: row 17: high (101.5) < low (102.0)"


@pytest.mark.parametrize("storage", STORAGES)
def test_extend_is_all_or_nothing(storage: str) -> None:
    buffer = MarketBuffer(700, storage=storage)  # type: ignore[arg-type]
    before = fill(buffer, 650)
    newest = buffer.newest_timestamp
    # Larger than the capacity, bad only in its very last row: nothing may be written.
    columns = make_rows(5000, newest + MINUTE, 3)  # type: ignore[operator]
    columns["volume"][-1] = -1.0
    with pytest.raises(ValueError, match=r"row 4999: volume \(-1\.0\) is < 0"):
        buffer.extend(*(columns[f] for f in FIELDS))
    assert len(buffer) == 650
    assert buffer.newest_timestamp == newest
    assert_window_equals(buffer.last(), before)


@pytest.mark.parametrize("storage", STORAGES)
def test_extend_larger_than_capacity_keeps_the_newest_rows(storage: str) -> None:
    buffer = MarketBuffer(1000, storage=storage)  # type: ignore[arg-type]
    fill(buffer, 300)
    rows = fill(buffer, 12_345, first_ts=T0 + 10**15, seed=4)
    assert len(buffer) == 1000
    assert_window_equals(buffer.last(), rows[-1000:])


def test_extend_converts_array_likes() -> None:
    buffer = MarketBuffer(10)
    buffer.extend([T0, T0 + MINUTE], [10, 11], [12, 12], [9, 10], [11, 11], [0, 3])
    buffer.extend(
        np.array([T0 + 2 * MINUTE], dtype=np.uint64),
        np.array([11.0], dtype=np.float32),
        np.array([12], dtype=np.int16),
        [10.5],
        (11.5,),
        [1],
    )
    buffer.extend(
        np.array(["2023-03-01T00:03"], dtype="datetime64[m]"), [11.0], [12.0], [10.0], [11.0], [1.0]
    )
    window = buffer.last()
    assert window.ts.tolist() == [T0 + k * MINUTE for k in range(4)]
    np.testing.assert_array_equal(window.open, [10, 11, 11, 11])


@pytest.mark.parametrize(
    ("ts", "error", "pattern"),
    [
        (np.array([1.0, 2.0]), TypeError, "ts must be integers .* got dtype float64"),
        (np.array(["a", "b"]), TypeError, "ts must be integers"),
        (np.array([[1, 2]]), ValueError, r"ts must be 1-D, got shape \(1, 2\)"),
        (np.array(["NaT", "2023-01-01"], dtype="datetime64[ns]"), ValueError, "row 0: ts is NaT"),
        (np.array([1, 2**63], dtype=np.uint64), ValueError, "row 1: ts .* does not fit in int64"),
    ],
)
def test_extend_rejects_bad_timestamps(
    ts: np.ndarray, error: type[Exception], pattern: str
) -> None:
    buffer = MarketBuffer(10)
    with pytest.raises(error, match=pattern):
        buffer.extend(ts, [1.0, 1.0], [1.0, 1.0], [1.0, 1.0], [1.0, 1.0], [1.0, 1.0])
    assert len(buffer) == 0


def test_extend_rejects_bad_price_arrays() -> None:
    buffer = MarketBuffer(10)
    ts = [T0, T0 + 1]
    ones = [1.0, 1.0]
    with pytest.raises(TypeError, match="high must be real numbers, got dtype object"):
        buffer.extend(ts, ones, [object(), 1.0], ones, ones, ones)
    with pytest.raises(TypeError, match="volume must be real numbers, got dtype bool"):
        buffer.extend(ts, ones, ones, ones, ones, [True, False])
    with pytest.raises(ValueError, match="ts has 2 rows, close has 3"):
        buffer.extend(ts, ones, ones, ones, [1.0, 1.0, 1.0], ones)
    with pytest.raises(ValueError, match="low must be 1-D"):
        buffer.extend(ts, ones, ones, [ones], ones, ones)
    assert len(buffer) == 0


def test_empty_extend_changes_nothing() -> None:
    buffer = MarketBuffer(10)
    fill(buffer, 3)
    newest = buffer.newest_timestamp
    buffer.extend([], [], [], [], [], [])
    assert len(buffer) == 3
    assert buffer.newest_timestamp == newest


def test_clear_forgets_candles_and_the_newest_timestamp() -> None:
    buffer = MarketBuffer(10)
    fill(buffer, 8, first_ts=T0 + 10**12)
    buffer.clear()
    assert len(buffer) == 0
    assert buffer.newest_timestamp is None
    rows = fill(buffer, 2, first_ts=T0)  # older than before the clear: allowed now
    assert_window_equals(buffer.last(), rows)


@pytest.mark.parametrize("storage", STORAGES)
def test_extend_from_its_own_windows_after_clear(storage: str) -> None:
    buffer = MarketBuffer(600, storage=storage)  # type: ignore[arg-type]
    fill(buffer, 900)
    rows = as_rows({f: getattr(buffer.last(), f).copy() for f in FIELDS})
    window = buffer.last()  # views into the ring itself
    buffer.clear()
    buffer.extend(*window)
    assert_window_equals(buffer.last(), rows)


# ---------------------------------------------------------------- windows


@pytest.mark.parametrize("storage", STORAGES)
def test_last_returns_zero_copy_read_only_views(storage: str) -> None:
    buffer = MarketBuffer(1000, storage=storage)  # type: ignore[arg-type]
    fill(buffer, 2500)  # wrapped: the window spans the end of the ring
    a = buffer.last(1000)
    b = buffer.last(10)
    for name in FIELDS:
        x, y = getattr(a, name), getattr(b, name)
        assert np.shares_memory(x, y)
        assert y.ctypes.data == x.ctypes.data + 990 * 8
        assert x.flags.c_contiguous
        assert not x.flags.owndata
        assert not x.flags.writeable
        assert isinstance(x.base, _core.MarketBuffer)
    with pytest.raises(ValueError, match="read-only"):
        a.close[0] = 1.0
    with pytest.raises(ValueError, match="WRITEABLE"):
        a.close.flags.writeable = True


def test_last_copy_returns_independent_writable_arrays() -> None:
    buffer = MarketBuffer(100)
    rows = fill(buffer, 50)
    window = buffer.last(20, copy=True)
    assert window.close.flags.writeable
    assert window.close.flags.owndata
    assert not np.shares_memory(window.close, buffer.last(20).close)
    fill(buffer, 500, first_ts=T0 + 10**15)
    assert_window_equals(window, rows[-20:])


def test_last_clamps_to_len_and_rejects_negative_n() -> None:
    buffer = MarketBuffer(100)
    rows = fill(buffer, 30)
    assert_window_equals(buffer.last(1000), rows)
    assert_window_equals(buffer.last(), rows)
    assert buffer.last(0).close.shape == (0,)
    with pytest.raises(ValueError, match="n must be >= 0"):
        buffer.last(-1)


def test_window_unpacks_and_keeps_the_ring_alive() -> None:
    buffer = MarketBuffer(64)
    rows = fill(buffer, 40)
    window = buffer.last()
    del buffer
    gc.collect()
    ts, open_, high, low, close, volume = window
    for k, column in enumerate((ts, open_, high, low, close, volume)):
        assert column.tolist() == [r[k] for r in rows]


@pytest.mark.parametrize("storage", STORAGES)
def test_views_show_newer_candles_once_the_ring_wraps_past_them(storage: str) -> None:
    buffer = MarketBuffer(10, storage=storage)  # type: ignore[arg-type]
    rows = fill(buffer, 10)
    view = buffer.last(1)
    assert view.ts[0] == rows[-1][0]
    # The slot is reused once the physical ring (ring_slots >= capacity) has wrapped.
    more = as_rows(make_rows(buffer.ring_slots, T0 + 10**15, seed=9))
    for row in more[:-1]:
        buffer.push(*row)
    assert view.ts[0] == rows[-1][0]
    buffer.push(*more[-1])
    assert view.ts[0] == more[-1][0]


# ---------------------------------------------------------------- Arrow


def arrow_columns(rows: int, seed: int = 5) -> dict[str, np.ndarray]:
    return make_rows(rows, T0, seed)


@pytest.mark.parametrize(
    ("arrow_type", "unit_ns"),
    [
        (pa.timestamp("ms", tz="UTC"), 10**6),
        (pa.timestamp("s"), 10**9),
        (pa.timestamp("us", tz="America/New_York"), 10**3),
        (pa.timestamp("ns", tz="UTC"), 1),
        (pa.int64(), 1),
    ],
)
def test_extend_arrow_converts_timestamps_to_ns_utc(arrow_type: pa.DataType, unit_ns: int) -> None:
    columns = arrow_columns(50)
    columns["ts"] = T0 + np.arange(50, dtype=np.int64) * MINUTE  # exact in every unit
    ts_units = columns["ts"] // unit_ns
    table = pa.table(
        {
            "ts": pa.array(ts_units).cast(arrow_type),
            **{f: pa.array(columns[f]) for f in FIELDS[1:]},
        }
    )
    buffer = MarketBuffer(100)
    buffer.extend_arrow(table)
    window = buffer.last()
    assert window.ts.tolist() == (ts_units * unit_ns).tolist()
    np.testing.assert_array_equal(window.close, columns["close"])


@pytest.mark.parametrize("name", ["ts", "timestamp", "open_time"])
def test_extend_arrow_accepts_record_batches_and_column_names(name: str) -> None:
    columns = arrow_columns(20)
    batch = pa.record_batch(
        {
            "symbol": pa.array(["BTC"] * 20),
            name: pa.array(columns["ts"]).cast(pa.timestamp("ns", tz="UTC")),
            "open": pa.array(columns["open"]),
            "high": pa.array(columns["high"]),
            "low": pa.array(columns["low"]),
            "close": pa.array(columns["close"]),
            "volume": pa.array((columns["volume"] * 100).astype(np.int64)),
        }
    )
    buffer = MarketBuffer(100)
    buffer.extend_arrow(batch)
    assert buffer.last().ts.tolist() == columns["ts"].tolist()
    np.testing.assert_array_equal(buffer.last().volume, (columns["volume"] * 100).astype(np.int64))


def test_extend_arrow_combines_chunks() -> None:
    columns = arrow_columns(30)
    table = pa.concat_tables(
        [
            pa.table({f: pa.array(columns[f][a:b]) for f in FIELDS})
            for a, b in [(0, 10), (10, 25), (25, 30)]
        ]
    )
    assert table.column("ts").num_chunks == 3
    buffer = MarketBuffer(100)
    buffer.extend_arrow(table)
    assert_window_equals(buffer.last(), as_rows(columns))


def test_extend_arrow_reads_ns_and_float64_columns_without_copying() -> None:
    from colmena.data.buffer import _arrow_float64, _arrow_timestamps_ns

    ts = pa.array(np.arange(5, dtype=np.int64)).cast(pa.timestamp("ns", tz="UTC"))
    close = pa.array(np.linspace(1.0, 2.0, 5))
    assert _arrow_timestamps_ns(ts, "ts", "t").ctypes.data == ts.buffers()[1].address
    assert _arrow_float64(close, "close", "t").ctypes.data == close.buffers()[1].address


def test_extend_arrow_errors() -> None:
    columns = arrow_columns(10)
    good = {f: pa.array(columns[f]) for f in FIELDS}
    buffer = MarketBuffer(100)
    with pytest.raises(
        TypeError, match=r"expected a pyarrow\.Table or pyarrow\.RecordBatch, got dict"
    ):
        buffer.extend_arrow(good)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="missing the timestamp column"):
        buffer.extend_arrow(pa.table({k: v for k, v in good.items() if k != "ts"}))
    with pytest.raises(ValueError, match="missing column 'low'"):
        buffer.extend_arrow(pa.table({k: v for k, v in good.items() if k != "low"}))
    with pytest.raises(TypeError, match="column 'ts' must be an Arrow timestamp or an integer"):
        buffer.extend_arrow(pa.table({**good, "ts": pa.array([str(t) for t in columns["ts"]])}))
    with pytest.raises(TypeError, match="column 'open' must be numeric, got string"):
        buffer.extend_arrow(pa.table({**good, "open": pa.array(["1"] * 10)}))
    with_null = pa.array([*columns["high"][:4], None, *columns["high"][5:]], pa.float64())
    with pytest.raises(ValueError, match="row 4: column 'high' is null"):
        buffer.extend_arrow(pa.table({**good, "high": with_null}))
    far = pa.array([32_503_680_000 + k for k in range(10)]).cast(pa.timestamp("s"))  # year 3000
    with pytest.raises(ValueError, match="column 'ts'"):
        buffer.extend_arrow(pa.table({**good, "ts": far}))
    bad_close = columns["close"].copy()
    bad_close[6] = math.nan
    with pytest.raises(ValueError, match=r"^MarketBuffer\.extend_arrow: row 6: close \(nan\)"):
        buffer.extend_arrow(pa.table({**good, "close": pa.array(bad_close)}))
    assert len(buffer) == 0


def test_to_arrow_and_last_table_are_copies() -> None:
    buffer = MarketBuffer(100)
    rows = fill(buffer, 60)
    table = buffer.last_table(25)
    assert table.schema == pa.schema(
        [("ts", pa.timestamp("ns", tz="UTC"))] + [(f, pa.float64()) for f in FIELDS[1:]]
    )
    assert table.num_rows == 25
    everything = buffer.to_arrow()
    fill(buffer, 300, first_ts=T0 + 10**15)
    assert table.column("ts").cast(pa.int64()).to_pylist() == [r[0] for r in rows[-25:]]
    assert everything.column("close").to_pylist() == [r[4] for r in rows]
    round_trip = MarketBuffer(100)
    round_trip.extend_arrow(everything)
    assert_window_equals(round_trip.last(), rows)


# ---------------------------------------------------------------- processes and threads


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.parametrize("storage", STORAGES)
def test_forked_child_writes_do_not_reach_the_parent(storage: str) -> None:
    buffer = MarketBuffer(1000, storage=storage)  # type: ignore[arg-type]
    rows = fill(buffer, 1000)
    parent_view = buffer.last()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: overwrite the whole ring, check it sees its own data
        code = 1
        try:
            os.close(read_end)
            child_rows = fill(buffer, 1000, first_ts=T0 + 10**15, seed=8)
            ok = buffer.last().ts.tolist() == [r[0] for r in child_rows]
            os.write(write_end, b"ok" if ok else b"bad")
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        answer = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert answer == b"ok"
    assert_window_equals(buffer.last(), rows)
    assert parent_view.ts.tolist() == [r[0] for r in rows]


def test_concurrent_readers_and_a_bulk_writer_stay_consistent() -> None:
    buffer = MarketBuffer(50_000)
    blocks = [make_rows(200_000, T0 + k * 10**17, k) for k in range(4)]
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            for block in blocks:
                buffer.extend(*(block[f] for f in FIELDS))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    thread = threading.Thread(target=writer)
    thread.start()
    while thread.is_alive():
        window = buffer.last(100, copy=True)
        assert np.all(np.diff(window.ts) > 0) or len(window.ts) < 2
        assert len(buffer) <= 50_000
    thread.join()
    assert not errors
    assert buffer.last().ts.tolist() == blocks[-1]["ts"][-50_000:].tolist()
