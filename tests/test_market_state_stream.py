"""Streaming market state: bit for bit equal to the batch, and the batch against plain NumPy.

The references below are the NumPy formulas ``colmena.features.market_state`` and
``colmena.features.regime`` used before the market state moved into the core (sliding-window std and
means, ``np.log``, ``np.convolve``, the gap rule through ``GapReport``): independent code, so they
are compared within a tight tolerance. Stream against batch, and FracDiffStream against the batch
direct FFD, are compared bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.lib.stride_tricks import sliding_window_view

import colmena
from colmena import _core
from colmena.data.ohlcv import Candles, GapReport, load_ohlcv
from colmena.features.market_state import FeatureSpec, Normalization, compute_market_state
from colmena.features.market_state_stream import MarketStateStream
from colmena.features.regime import RegimeConfig, _features

MINUTE_NS = 60_000_000_000
SMALL = FeatureSpec(ffd_window=20, volatility_bars=5, volume_bars=7, state_bars=4, max_gap_bars=2)


# ------------------------------------------------------------------ data


def make_candles(n: int, seed: int = 0, drop: tuple[int, ...] | np.ndarray = ()) -> Candles:
    """A one-minute random walk with the minutes in ``drop`` missing (gaps), NaN-free."""
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 1e-3, size=n)))
    open_ = np.concatenate([[close[0]], close[:-1]])
    volume = rng.uniform(0, 10, size=n)
    volume[rng.random(n) < 0.05] = 0.0  # minutes without trades
    keep = np.setdiff1d(np.arange(n), np.asarray(drop, dtype=np.int64))
    ts = np.arange(n, dtype=np.int64)[keep] * MINUTE_NS
    return Candles(
        ts=ts,
        open=open_[keep],
        high=np.maximum(open_, close)[keep] * 1.001,
        low=np.minimum(open_, close)[keep] * 0.999,
        close=close[keep],
        volume=volume[keep],
        source=Path("synthetic"),
        interval_seconds=60.0,
        gaps=GapReport.from_timestamps(ts, 60.0),
    )


def gappy_candles(n: int, seed: int) -> Candles:
    """Small gaps (1-2 missing bars, within SMALL.max_gap_bars) and large ones (3 to 300)."""
    rng = np.random.default_rng(seed)
    drop: list[int] = []
    for start in rng.choice(np.arange(50, n - 400), size=n // 150, replace=False):
        length = int(rng.choice([1, 2, 3, 7, 40, 300], p=[0.35, 0.25, 0.15, 0.1, 0.1, 0.05]))
        drop.extend(range(int(start), int(start) + length))
    return make_candles(n, seed, drop=np.unique(drop))


@pytest.fixture(scope="module")
def btc_2018(shared_data_dir: Path) -> Candles:
    """BTC/USD 2018, one-minute bars (520,499 rows, 3,992 gaps up to 67 missing minutes)."""
    return load_ohlcv(shared_data_dir / "btcusd_bitfinex_1m_2018.parquet")


@pytest.fixture(scope="module")
def btc_2023_log_close(btc_2023_close: np.ndarray) -> np.ndarray:
    return np.log(btc_2023_close)


# ------------------------------------------------------------------ NumPy references


def reference_market_state(candles: Candles, spec: FeatureSpec) -> tuple[np.ndarray, np.ndarray]:
    """The pre-core market-state formulas, in plain NumPy."""
    n = len(candles)
    close = np.asarray(candles.close, dtype=np.float64)
    features = np.full((n, 4), np.nan)
    returns = np.log(close[1:] / close[:-1])
    features[1:, 0] = returns
    weights = colmena.fracdiff_weights(spec.ffd_d, window=spec.ffd_window)
    features[spec.ffd_window - 1 :, 1] = np.convolve(np.log(close), weights, mode="valid")
    if returns.size >= spec.volatility_bars:
        std = sliding_window_view(returns, spec.volatility_bars).std(axis=1)
        features[spec.volatility_bars :, 2] = std
    log_volume = np.log1p(np.asarray(candles.volume, dtype=np.float64))
    mean = np.full(n, np.nan)
    mean[spec.volume_bars - 1 :] = sliding_window_view(log_volume, spec.volume_bars).mean(axis=1)
    features[:, 3] = log_volume - mean
    valid = np.all(np.isfinite(features), axis=1)
    valid[: spec.lookback_bars - 1] = False
    gaps = candles.gaps
    for g in gaps.rows[gaps.missing_per_gap > spec.max_gap_bars]:
        valid[g : g + spec.lookback_bars - 1] = False
    return features, valid


def assert_close_to_reference(got: np.ndarray, ref: np.ndarray) -> None:
    """rtol 1e-12; atol a 1e-12 share of each column's typical size (values near 0)."""
    assert np.array_equal(np.isnan(got), np.isnan(ref))
    for f in range(4):
        scale = float(np.nanmedian(np.abs(ref[:, f])))
        np.testing.assert_allclose(
            got[:, f], ref[:, f], rtol=1e-12, atol=1e-12 * scale, err_msg=f"feature {f}"
        )


def reference_regime(
    close: np.ndarray, rows: np.ndarray, lookback: int
) -> tuple[np.ndarray, np.ndarray]:
    """The pre-core regime._features, in plain NumPy."""
    log_close = np.log(close)
    trend = np.full(rows.size, np.nan)
    volatility = np.full(rows.size, np.nan)
    ok = rows >= lookback
    if log_close.size > lookback and ok.any():
        r = rows[ok]
        windows = sliding_window_view(np.diff(log_close) ** 2, lookback)
        vol = np.sqrt(windows[r - lookback].sum(axis=1) / lookback)
        move = log_close[r] - log_close[r - lookback]
        with np.errstate(divide="ignore", invalid="ignore"):
            trend[ok] = np.where(vol > 0, move / (vol * np.sqrt(lookback)), 0.0)
        volatility[ok] = vol
    return trend, volatility


def core_spec_small() -> _core.MarketStateSpec:
    """SMALL in core terms, one-minute bars."""
    w = colmena.fracdiff_weights(SMALL.ffd_d, window=SMALL.ffd_window)
    return _core.MarketStateSpec(w, 5, 7, 4, 2, MINUTE_NS)


def simd_levels() -> list[str]:
    return list(colmena.build_info()["simd_supported"])


class _Level:
    """Context: run with one SIMD level, then restore the selected one."""

    def __init__(self, level: str) -> None:
        self.level = level

    def __enter__(self) -> None:
        _core.set_simd_level(self.level)

    def __exit__(self, *exc: object) -> None:
        _core.set_simd_level(colmena.build_info()["simd_selected"])


# ------------------------------------------------------------------ (a) stream == batch


def per_candle(stream: MarketStateStream, candles: Candles) -> Iterator[int]:
    for t in range(len(candles)):
        stream.update(
            int(candles.ts[t]),
            float(candles.open[t]),
            float(candles.high[t]),
            float(candles.low[t]),
            float(candles.close[t]),
            float(candles.volume[t]),
        )
        yield t


def test_stream_equals_batch_on_a_year_of_real_candles(btc_2018: Candles) -> None:
    spec = FeatureSpec()
    state = compute_market_state(btc_2018, spec)
    stream = MarketStateStream(spec)
    features, valid = stream.extend(btc_2018)
    assert np.array_equal(features, state.features, equal_nan=True)
    assert np.array_equal(valid, state.valid)
    assert stream.count == len(btc_2018)
    assert stream.newest_timestamp == int(btc_2018.ts[-1])
    # the gaps of the file do invalidate bars, and most bars are valid
    assert 0.5 < valid.mean() < 1.0
    assert not valid[spec.lookback_bars - 1 :].all()


def test_stream_per_candle_equals_batch_with_windows_and_current_rows(btc_2018: Candles) -> None:
    spec = FeatureSpec(ffd_window=64, state_bars=8)
    candles = btc_2018.slice(40_000, 52_000)  # holds gaps of more than max_gap_bars
    state = compute_market_state(candles, spec)
    norm = Normalization.fit(state.features, state.valid)
    stream = MarketStateStream(spec, norm)
    windows = state.windows(norm)
    current = state.current(norm)
    for t in per_candle(stream, candles):
        assert np.array_equal(stream.features, state.features[t], equal_nan=True), t
        assert stream.valid == state.valid[t], t
        assert np.array_equal(stream.window, windows[t]), t
        assert np.array_equal(stream.current, current[t]), t
    assert stream.window.dtype == np.float32
    assert stream.window.shape == (spec.state_size,)
    assert not state.valid.all()
    assert state.valid.any()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_stream_equals_batch_on_synthetic_gaps(seed: int) -> None:
    candles = gappy_candles(6_000, seed)
    assert (candles.gaps.missing_per_gap <= SMALL.max_gap_bars).any()
    assert (candles.gaps.missing_per_gap > SMALL.max_gap_bars).any()
    state = compute_market_state(candles, SMALL)
    stream = MarketStateStream(SMALL)
    online = np.array([stream.features for _ in per_candle(stream, candles)])
    assert np.array_equal(online, state.features, equal_nan=True)
    bulk_stream = MarketStateStream(SMALL)
    features, valid = bulk_stream.extend(candles)
    assert np.array_equal(features, state.features, equal_nan=True)
    assert np.array_equal(valid, state.valid)


def test_small_gaps_keep_bars_valid_and_large_gaps_spoil_the_look_back() -> None:
    spec = SMALL
    lookback = spec.lookback_bars
    candles = make_candles(400, drop=(100, 101, 250, 251, 252))  # 2 missing, then 3 missing
    g_small = int(np.searchsorted(candles.ts, 102 * MINUTE_NS))
    g_large = int(np.searchsorted(candles.ts, 253 * MINUTE_NS))
    stream = MarketStateStream(spec)
    _, valid = stream.extend(candles)
    assert valid[lookback - 1 : g_large].all()  # the 2-bar gap is within max_gap_bars
    assert g_small < g_large
    assert not valid[g_large : g_large + lookback - 1].any()
    assert valid[g_large + lookback - 1 :].all()


def test_a_gap_is_not_a_gap_without_a_bar_length() -> None:
    candles = make_candles(300, drop=tuple(range(150, 170)))
    stream = MarketStateStream(SMALL, interval_seconds=None)
    _, valid = stream.extend(candles)
    assert valid[SMALL.lookback_bars - 1 :].all()


# ------------------------------------------------------------------ (b) batch vs NumPy


def test_batch_matches_numpy_reference_on_real_candles(btc_2018: Candles) -> None:
    candles = btc_2018.slice(0, 150_000)
    spec = FeatureSpec()
    state = compute_market_state(candles, spec)
    ref_features, ref_valid = reference_market_state(candles, spec)
    assert_close_to_reference(state.features, ref_features)
    assert np.array_equal(state.valid, ref_valid)


@pytest.mark.parametrize("seed", [3, 4])
@pytest.mark.parametrize(
    "spec", [SMALL, FeatureSpec(ffd_d=0.7, ffd_window=3, volatility_bars=40, volume_bars=1)]
)
def test_batch_matches_numpy_reference_with_gaps(seed: int, spec: FeatureSpec) -> None:
    candles = gappy_candles(5_000, seed)
    state = compute_market_state(candles, spec)
    ref_features, ref_valid = reference_market_state(candles, spec)
    assert_close_to_reference(state.features, ref_features)
    assert np.array_equal(state.valid, ref_valid)


def test_ffd_column_is_the_batch_direct_fracdiff_of_log_close() -> None:
    candles = make_candles(3_000, seed=6)
    state = compute_market_state(candles, SMALL)
    log_close = np.array([math.log(c) for c in candles.close])  # the C library's log, as the core
    ffd = colmena.fracdiff(log_close, SMALL.ffd_d, window=SMALL.ffd_window, method="direct")
    assert np.array_equal(state.features[SMALL.ffd_window - 1 :, 1], ffd)
    assert np.array_equal(state.features[1:, 0], colmena.log_returns(candles.close))


# ------------------------------------------------------------------ (c) FFD bit for bit


@pytest.mark.parametrize("window", [1, 3, 24, 256, 1000])
def test_fracdiff_stream_equals_batch_direct_at_every_simd_level(
    btc_2023_log_close: np.ndarray, window: int
) -> None:
    x = btc_2023_log_close
    results = []
    for level in simd_levels():
        with _Level(level):
            batch = colmena.fracdiff(x, 0.4, window=window, method="direct")
            stream = colmena.FracDiffStream(0.4, window=window)
            online = stream.update_many(x)
        np.testing.assert_array_equal(online[window - 1 :], batch, strict=True)
        results.append(batch)
    for other in results[1:]:
        np.testing.assert_array_equal(other, results[0], strict=True)


def test_fracdiff_stream_equals_batch_direct_around_nan() -> None:
    x = np.random.default_rng(8).standard_normal(500)
    x[[100, 101, 350]] = [np.nan, np.inf, np.nan]
    for level in simd_levels():
        with _Level(level):
            batch = colmena.fracdiff(x, 0.6, window=30, method="direct")
            online = colmena.FracDiffStream(0.6, window=30).update_many(x)
        np.testing.assert_array_equal(online[29:], batch, strict=True)
        assert np.isnan(batch[100 - 29 : 101 + 1]).all()
        assert np.isfinite(batch[102:321]).all()


def test_market_state_is_the_same_at_every_simd_level(btc_2018: Candles) -> None:
    candles = btc_2018.slice(0, 60_000)
    outputs = []
    for level in simd_levels():
        with _Level(level):
            state = compute_market_state(candles)
            stream = MarketStateStream(FeatureSpec())
            features, valid = stream.extend(candles)
        assert np.array_equal(features, state.features, equal_nan=True)
        outputs.append((state.features, state.valid))
    for features, valid in outputs[1:]:
        assert np.array_equal(features, outputs[0][0], equal_nan=True)
        assert np.array_equal(valid, outputs[0][1])


# ------------------------------------------------------------------ (d) regime features


def test_regime_features_match_numpy_reference_on_real_candles(btc_2018: Candles) -> None:
    close = np.asarray(btc_2018.close[:100_000])
    rows = np.arange(close.size, dtype=np.int64)
    lookback = RegimeConfig().lookback_bars
    trend, vol = _features(close, rows, lookback)
    ref_trend, ref_vol = reference_regime(close, rows, lookback)
    assert np.array_equal(np.isnan(trend), np.isnan(ref_trend))
    np.testing.assert_allclose(vol, ref_vol, rtol=1e-12)
    np.testing.assert_allclose(trend, ref_trend, rtol=1e-12, atol=1e-12)
    assert np.isnan(trend[:lookback]).all()
    assert np.isfinite(trend[lookback:]).all()


def test_regime_features_at_chosen_rows_and_edges() -> None:
    close = 100 * np.exp(np.cumsum(np.random.default_rng(9).normal(0, 1e-3, 300)))
    close[150:200] = close[150]  # flat: volatility 0 gives a trend score of 0
    rows = np.array([-5, 0, 29, 30, 31, 199, 299], dtype=np.int64)
    trend, vol = _features(close, rows, 30)
    ref_trend, ref_vol = reference_regime(close, rows, 30)
    np.testing.assert_allclose(trend, ref_trend, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(vol, ref_vol, rtol=1e-12)
    assert trend[5] == 0.0
    assert vol[5] == 0.0
    with pytest.raises(ValueError, match=r"rows\[0\] = 300 is outside \[0, 300\)"):
        _features(close, np.array([300]), 30)


def test_stream_regime_features_equal_the_batch(btc_2018: Candles) -> None:
    candles = btc_2018.slice(200_000, 205_000)
    lookback = 1_440
    stream = MarketStateStream(FeatureSpec(), regime_lookback=lookback)
    trend, vol = _features(candles.close, np.arange(len(candles)), lookback)
    online = np.array([stream.regime_features for _ in per_candle(stream, candles)])
    assert np.array_equal(online[:, 0], trend, equal_nan=True)
    assert np.array_equal(online[:, 1], vol, equal_nan=True)
    with pytest.raises(ValueError, match="no regime lookback"):
        _ = MarketStateStream(FeatureSpec()).regime_features


# ------------------------------------------------------------------ (e) validation


def test_timestamps_not_increasing_raise_and_change_nothing() -> None:
    candles = make_candles(100)
    stream = MarketStateStream(SMALL)
    stream.extend(candles.slice(0, 50))
    before = stream.features
    last = int(candles.ts[49])
    for ts in (last, last - MINUTE_NS):
        with pytest.raises(ValueError, match=r"MarketStateStream.update: ts .* is not after the "):
            stream.update(ts, 100.0, 101.0, 99.0, 100.0, 1.0)
    with pytest.raises(ValueError, match=r"update_many: row 0: ts .* is not after the newest"):
        stream.extend(candles.slice(49, 60))
    shuffled = candles.slice(50, 60)
    ts = shuffled.ts.copy()
    ts[[3, 4]] = ts[[4, 3]]
    with pytest.raises(ValueError, match=r"row 4: ts .* is not after the previous row's ts"):
        _core.MarketStateStream(core_spec_small()).update_many(ts, shuffled.close, shuffled.volume)
    assert stream.count == 50
    assert np.array_equal(stream.features, before, equal_nan=True)
    stream.update(int(candles.ts[50]), *(float(v[50]) for v in _ohlcv(candles)))
    assert stream.count == 51


def _ohlcv(c: Candles) -> tuple[np.ndarray, ...]:
    return (c.open, c.high, c.low, c.close, c.volume)


def test_batch_rejects_timestamps_not_increasing() -> None:
    c = make_candles(50)
    ts = c.ts.copy()
    ts[10] = ts[9]
    spec = core_spec_small()
    with pytest.raises(ValueError, match=r"market_state_batch: row 10: ts .* duplicates"):
        _core.market_state_batch(ts, c.close, c.volume, spec)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ((100.0, 101.0, 99.0, -1.0, 1.0), "close"),
        ((100.0, 101.0, 99.0, 100.0, float("nan")), "volume"),
        ((100.0, 99.0, 101.0, 100.0, 1.0), r"high \(99.0\) < low \(101.0\)"),
    ],
)
def test_bad_candles_raise_value_error(fields: tuple[float, ...], message: str) -> None:
    stream = MarketStateStream(SMALL)
    with pytest.raises(ValueError, match=message):
        stream.update(0, *fields)
    assert stream.count == 0


def test_window_needs_a_normalization() -> None:
    stream = MarketStateStream(SMALL)
    with pytest.raises(RuntimeError, match="without a normalization"):
        _ = stream.window
    with pytest.raises(ValueError, match="shape"):
        MarketStateStream(SMALL, Normalization(mean=np.zeros(3), std=np.ones(3)))


class _Candle(NamedTuple):
    ts: int
    open: float
    high: float
    low: float
    close: float
    volume: float


def test_update_candle_and_reset() -> None:
    candles = make_candles(60)
    stream = MarketStateStream(SMALL)
    for t in range(60):
        stream.update_candle(_Candle(int(candles.ts[t]), *(float(v[t]) for v in _ohlcv(candles))))
    features = stream.features
    stream.reset()
    assert stream.count == 0
    assert stream.newest_timestamp is None
    assert np.isnan(stream.features).all()
    assert not stream.valid
    stream.extend(candles)
    assert np.array_equal(stream.features, features, equal_nan=True)


# ------------------------------------------------------------------ (f) causality property


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(2, 400),
    cut=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**32 - 1),
    gap_share=st.floats(0.0, 0.3),
)
def test_appending_candles_never_changes_earlier_features(
    n: int, cut: float, seed: int, gap_share: float
) -> None:
    rng = np.random.default_rng(seed)
    drop = np.flatnonzero(rng.random(n) < gap_share)
    candles = make_candles(n, seed % 1000, drop=drop)
    ts, close, volume = candles.ts, candles.close, candles.volume
    k = int(cut * ts.size)
    spec = core_spec_small()
    full_f, full_v = _core.market_state_batch(ts, close, volume, spec)
    head_f, head_v = _core.market_state_batch(ts[:k], close[:k], volume[:k], spec)
    assert np.array_equal(head_f, full_f[:k], equal_nan=True)
    assert np.array_equal(head_v, full_v[:k])
    stream = _core.MarketStateStream(spec)
    first_f, first_v = stream.update_many(ts[:k], close[:k], volume[:k])
    rest_f, rest_v = stream.update_many(ts[k:], close[k:], volume[k:])
    assert np.array_equal(np.concatenate([first_f, rest_f]), full_f, equal_nan=True)
    assert np.array_equal(np.concatenate([first_v, rest_v]), full_v)


def test_market_state_windows_match_stream_raw_window() -> None:
    candles = make_candles(200, seed=12)
    state = compute_market_state(candles, SMALL)
    stream = _core.MarketStateStream(core_spec_small())
    stream.update_many(candles.ts, candles.close, candles.volume)
    assert np.array_equal(stream.raw_window(), state.features[-SMALL.state_bars :])
