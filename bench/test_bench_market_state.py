"""Market state: the core's batch and per-candle stream against the NumPy formulas they replace.

Run: ``pytest bench/test_bench_market_state.py --benchmark-only``. A year of one-minute candles
(525,600 bars, default FeatureSpec: FFD window 256). The batch peer is the NumPy
``compute_market_state`` of before the core kernel (``colmena.fracdiff`` direct plus NumPy
sliding windows); the stream peer is what a live loop did without a stream: that NumPy
computation over the last ``lookback_bars`` candles for every new candle.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

import colmena
from colmena import _core
from colmena.data.ohlcv import Candles, GapReport
from colmena.features.market_state import FeatureSpec, compute_market_state
from colmena.features.market_state_stream import MarketStateStream

BARS = 525_600
MINUTE_NS = 60_000_000_000
SPEC = FeatureSpec()
UPDATES = 50_000  # candles pushed by the stream benchmarks (rounds * iterations)


@pytest.fixture(scope="module")
def year() -> Candles:
    """525,600 one-minute candles minus 0.5% of the minutes (gaps of 1 to 30 bars)."""
    rng = np.random.default_rng(7)
    n = BARS + BARS // 200
    close = 20_000.0 * np.exp(np.cumsum(rng.normal(0, 1e-3, n)))
    open_ = np.concatenate([[close[0]], close[:-1]])
    keep = np.ones(n, dtype=bool)
    for start in rng.choice(n - 40, size=300, replace=False):
        keep[start : start + rng.integers(1, 31)] = False
    keep = np.flatnonzero(keep)[:BARS]
    ts = keep.astype(np.int64) * MINUTE_NS
    return Candles(
        ts=ts,
        open=open_[keep],
        high=np.maximum(open_, close)[keep] * 1.001,
        low=np.minimum(open_, close)[keep] * 0.999,
        close=close[keep],
        volume=rng.uniform(0, 20, n)[keep],
        source=Path("synthetic"),
        interval_seconds=60.0,
        gaps=GapReport.from_timestamps(ts, 60.0),
    )


def numpy_market_state(candles: Candles, spec: FeatureSpec) -> tuple[np.ndarray, np.ndarray]:
    """The peer: compute_market_state as it was before the core kernel (NumPy)."""
    n = len(candles)
    close = np.asarray(candles.close, dtype=np.float64)
    features = np.full((n, 4), np.nan)
    returns = colmena.log_returns(close)
    features[1:, 0] = returns
    features[spec.ffd_window - 1 :, 1] = colmena.fracdiff(
        np.log(close), spec.ffd_d, window=spec.ffd_window, method="direct"
    )
    vol = np.full(n, np.nan)
    if returns.size >= spec.volatility_bars:
        vol[spec.volatility_bars :] = sliding_window_view(returns, spec.volatility_bars).std(axis=1)
    features[:, 2] = vol
    log_volume = np.log1p(np.asarray(candles.volume, dtype=np.float64))
    mean = np.full(n, np.nan)
    if n >= spec.volume_bars:
        mean[spec.volume_bars - 1 :] = sliding_window_view(log_volume, spec.volume_bars).mean(1)
    features[:, 3] = log_volume - mean
    valid = np.all(np.isfinite(features), axis=1)
    valid[: spec.lookback_bars - 1] = False
    gaps = candles.gaps
    large = gaps.rows[gaps.missing_per_gap > spec.max_gap_bars]
    if large.size:
        spoiled = np.zeros(n + 1, dtype=np.int64)
        np.add.at(spoiled, large, 1)
        np.add.at(spoiled, np.minimum(large + spec.lookback_bars - 1, n), -1)
        valid &= np.cumsum(spoiled)[:n] == 0
    return features, valid


def per_bar(benchmark: Any) -> None:
    if benchmark.stats is not None:
        benchmark.extra_info["ns per bar"] = round(benchmark.stats.stats.median / BARS * 1e9, 1)


# ------------------------------------------------------------------ batch, a year of bars


@pytest.mark.benchmark(group="market state batch, 525,600 bars, ffd window 256")
def test_colmena_market_state_batch(benchmark: Any, year: Candles) -> None:
    state = benchmark.pedantic(
        compute_market_state, args=(year, SPEC), rounds=10, iterations=1, warmup_rounds=1
    )
    per_bar(benchmark)
    features, valid = numpy_market_state(year, SPEC)
    assert np.array_equal(state.valid, valid)
    np.testing.assert_allclose(state.features, features, rtol=1e-9, atol=1e-12)


@pytest.mark.benchmark(group="market state batch, 525,600 bars, ffd window 256")
def test_peer_numpy_market_state(benchmark: Any, year: Candles) -> None:
    benchmark.pedantic(
        numpy_market_state, args=(year, SPEC), rounds=10, iterations=1, warmup_rounds=1
    )
    per_bar(benchmark)


# ------------------------------------------------------------------ one candle at a time


def candle_feed(
    candles: Candles, start: int
) -> Iterator[tuple[int, float, float, float, float, float]]:
    rows = zip(
        candles.ts[start:].tolist(),
        candles.open[start:].tolist(),
        candles.high[start:].tolist(),
        candles.low[start:].tolist(),
        candles.close[start:].tolist(),
        candles.volume[start:].tolist(),
        strict=True,
    )
    yield from rows


def run_updates(benchmark: Any, step: Callable[[], object]) -> None:
    benchmark.pedantic(step, rounds=UPDATES // 10, iterations=10, warmup_rounds=0)


@pytest.mark.benchmark(group="market state, one new candle (ffd window 256)")
def test_colmena_stream_update(benchmark: Any, year: Candles) -> None:
    warm = 2 * SPEC.lookback_bars
    stream = MarketStateStream(SPEC)
    stream.extend(year.slice(0, warm))
    feed = candle_feed(year, warm)
    run_updates(benchmark, lambda: stream.update(*next(feed)))
    assert stream.count >= warm + UPDATES
    state = compute_market_state(year.slice(0, stream.count), SPEC)
    assert np.array_equal(stream.features, state.features[-1], equal_nan=True)


@pytest.mark.benchmark(group="market state, one new candle (ffd window 256)")
def test_colmena_stream_update_core(benchmark: Any, year: Candles) -> None:
    """The compiled stream without the Python wrapper (ts, close, volume only)."""
    warm = 2 * SPEC.lookback_bars
    stream = MarketStateStream(SPEC)
    core: _core.MarketStateStream = stream._core
    stream.extend(year.slice(0, warm))
    feed = candle_feed(year, warm)

    def step() -> bool:
        ts, _, _, _, close, volume = next(feed)
        return core.update(ts, close, volume)

    run_updates(benchmark, step)


@pytest.mark.benchmark(group="market state, one new candle (ffd window 256)")
def test_peer_numpy_recompute_last_lookback(benchmark: Any, year: Candles) -> None:
    """Without a stream: the NumPy batch over the last lookback_bars candles per new candle."""
    lookback = SPEC.lookback_bars
    position = iter(range(lookback, len(year)))

    def step() -> bool:
        t = next(position)
        _, valid = numpy_market_state(year.slice(t - lookback + 1, t + 1), SPEC)
        return bool(valid[-1])

    benchmark.pedantic(step, rounds=300, iterations=10, warmup_rounds=1)
