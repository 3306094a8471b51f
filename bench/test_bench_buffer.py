"""MarketBuffer benchmarks, each next to a plain-Python / NumPy peer in the same group.

Run: ``pytest bench/test_bench_buffer.py --benchmark-only``. Throughputs are in each row's
``extra_info`` (ns per candle, GB/s).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from colmena.data.buffer import MarketBuffer

T0 = 1_514_764_800_000  # 2018-01-01T00:00:00Z in ms
PUSHES = 10_000
BULK_ROWS = 1_000_000
WINDOW = 1_000
FIELDS = ("ts", "open", "high", "low", "close", "volume")


def candle_columns(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """n valid one-minute candles; ts in ms since epoch (like the Parquet files)."""
    rng = np.random.default_rng(seed)
    close = 10_000.0 * np.exp(np.cumsum(rng.standard_normal(n)) * 1e-3)
    open_ = np.concatenate([[10_000.0], close[:-1]])
    return {
        "ts": T0 + np.arange(n, dtype=np.int64) * 60_000,
        "open": open_,
        "high": np.maximum(open_, close) * 1.001,
        "low": np.minimum(open_, close) * 0.999,
        "close": close,
        "volume": rng.random(n) * 10,
    }


def pedantic(benchmark: Any, run: Callable[[], object], setup: Callable[[], object]) -> None:
    benchmark.pedantic(run, setup=setup, rounds=30, iterations=1, warmup_rounds=2)


def record(benchmark: Any, key: str, from_mean_seconds: Callable[[float], float]) -> None:
    """Store a throughput derived from the mean time (absent under --benchmark-disable)."""
    if benchmark.stats is not None:
        benchmark.extra_info[key] = round(from_mean_seconds(benchmark.stats.stats.mean), 3)


# ---------------------------------------------------------------- push, one candle at a time


@pytest.fixture(scope="module")
def push_rows() -> list[tuple[int, float, float, float, float, float]]:
    c = candle_columns(PUSHES)
    ts_ns = (c["ts"] * 1_000_000).tolist()
    return list(zip(ts_ns, *(c[f].tolist() for f in FIELDS[1:]), strict=True))


def test_colmena_push(benchmark: Any, push_rows: list[tuple[Any, ...]]) -> None:
    benchmark.group = "push: 10k candles from Python"
    buffer = MarketBuffer(1_000)
    push = buffer.push

    def run() -> None:
        for t, o, h, lo, c, v in push_rows:
            push(t, o, h, lo, c, v)

    pedantic(benchmark, run, buffer.clear)
    record(benchmark, "ns_per_candle", lambda mean: mean / PUSHES * 1e9)
    assert len(buffer) == 1_000


def test_peer_deque_append_tuple(benchmark: Any, push_rows: list[tuple[Any, ...]]) -> None:
    benchmark.group = "push: 10k candles from Python"
    ring: deque[tuple[Any, ...]] = deque(maxlen=1_000)
    append = ring.append

    def run() -> None:
        for t, o, h, lo, c, v in push_rows:
            append((t, o, h, lo, c, v))

    pedantic(benchmark, run, ring.clear)
    record(benchmark, "ns_per_candle", lambda mean: mean / PUSHES * 1e9)


# ---------------------------------------------------------------- bulk extend, 1M candles


@pytest.fixture(scope="module")
def bulk() -> dict[str, np.ndarray]:
    return candle_columns(BULK_ROWS, seed=1)


def test_colmena_extend_arrow_1m(benchmark: Any, bulk: dict[str, np.ndarray]) -> None:
    """Arrow table as stored in the Parquet files (ts timestamp[ms, UTC]): cast, validate, copy."""
    benchmark.group = "extend: 1M candles"
    table = pa.table(
        {
            "ts": pa.array(bulk["ts"]).cast(pa.timestamp("ms", tz="UTC")),
            **{f: pa.array(bulk[f]) for f in FIELDS[1:]},
        }
    )
    buffer = MarketBuffer(BULK_ROWS)
    pedantic(benchmark, lambda: buffer.extend_arrow(table), buffer.clear)
    record(benchmark, "GB_per_s", lambda mean: BULK_ROWS * len(FIELDS) * 8 / mean / 1e9)
    assert len(buffer) == BULK_ROWS


def test_colmena_extend_numpy_1m(benchmark: Any, bulk: dict[str, np.ndarray]) -> None:
    """NumPy columns already in the buffer's dtypes (ts int64 ns): validate, copy."""
    benchmark.group = "extend: 1M candles"
    columns = [bulk["ts"] * 1_000_000, *(bulk[f] for f in FIELDS[1:])]
    buffer = MarketBuffer(BULK_ROWS)
    pedantic(benchmark, lambda: buffer.extend(*columns), buffer.clear)
    record(benchmark, "GB_per_s", lambda mean: BULK_ROWS * len(FIELDS) * 8 / mean / 1e9)


def test_peer_numpy_copyto_same_bytes(benchmark: Any, bulk: dict[str, np.ndarray]) -> None:
    """The floor: copy the same 48 MB into preallocated arrays, no checks."""
    benchmark.group = "extend: 1M candles"
    sources = [bulk[f] for f in FIELDS]
    targets = [np.empty_like(s) for s in sources]

    def run() -> None:
        for target, source in zip(targets, sources, strict=True):
            np.copyto(target, source)

    pedantic(benchmark, run, lambda: None)
    record(benchmark, "GB_per_s", lambda mean: BULK_ROWS * len(FIELDS) * 8 / mean / 1e9)


# ---------------------------------------------------------------- newest-1000 window


@pytest.fixture(scope="module")
def filled() -> tuple[MarketBuffer, list[np.ndarray]]:
    columns = candle_columns(100_000, seed=2)
    buffer = MarketBuffer(10_000)
    buffer.extend(columns["ts"] * 1_000_000, *(columns[f] for f in FIELDS[1:]))
    plain = [np.ascontiguousarray(columns[f][-10_000:]) for f in FIELDS]
    return buffer, plain


def test_colmena_last_1000_views(
    benchmark: Any, filled: tuple[MarketBuffer, list[np.ndarray]]
) -> None:
    benchmark.group = "last: newest 1000 candles"
    buffer, _ = filled
    window = benchmark(buffer.last, WINDOW)
    assert window.close.shape == (WINDOW,)


def test_colmena_last_1000_copy(
    benchmark: Any, filled: tuple[MarketBuffer, list[np.ndarray]]
) -> None:
    benchmark.group = "last: newest 1000 candles"
    buffer, _ = filled
    window = benchmark(lambda: buffer.last(WINDOW, copy=True))
    assert window.close.flags.owndata


def test_peer_numpy_slice_copy_1000(
    benchmark: Any, filled: tuple[MarketBuffer, list[np.ndarray]]
) -> None:
    benchmark.group = "last: newest 1000 candles"
    _, plain = filled
    window = benchmark(lambda: [column[-WINDOW:].copy() for column in plain])
    assert window[0].shape == (WINDOW,)
