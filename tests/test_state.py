"""Market-state features: causality, gaps, and values against plain references."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import colmena
from colmena.data.ohlcv import Candles, GapReport
from colmena.features.market_state import FeatureSpec, Normalization, compute_market_state

SPEC = FeatureSpec(ffd_window=20, volatility_bars=5, volume_bars=7, state_bars=4, max_gap_bars=2)


def make_candles(n: int, seed: int = 0, drop: tuple[int, ...] = ()) -> Candles:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 1e-3, size=n)))
    open_ = np.concatenate([[close[0]], close[:-1]])
    high = np.maximum(open_, close) * 1.001
    low = np.minimum(open_, close) * 0.999
    volume = rng.uniform(1, 10, size=n)
    ts = np.arange(n, dtype=np.int64) * 60_000_000_000
    keep = np.setdiff1d(np.arange(n), np.array(drop, dtype=np.int64))
    ts = ts[keep]
    return Candles(
        ts=ts,
        open=open_[keep],
        high=high[keep],
        low=low[keep],
        close=close[keep],
        volume=volume[keep],
        source=Path("synthetic"),
        interval_seconds=60.0,
        gaps=GapReport.from_timestamps(ts, 60.0),
    )


def test_features_match_plain_definitions() -> None:
    c = make_candles(200)
    state = compute_market_state(c, SPEC)
    f = state.features
    t = 150
    assert f[t, 0] == pytest.approx(np.log(c.close[t] / c.close[t - 1]))
    w = colmena.fracdiff_weights(SPEC.ffd_d, window=SPEC.ffd_window)
    assert f[t, 1] == pytest.approx(float(np.dot(w, np.log(c.close[t - np.arange(20)]))))
    r = np.log(c.close[t - 4 : t + 1] / c.close[t - 5 : t])
    assert f[t, 2] == pytest.approx(np.std(r))
    lv = np.log1p(c.volume)
    assert f[t, 3] == pytest.approx(lv[t] - lv[t - 6 : t + 1].mean())
    assert not state.valid[: SPEC.lookback_bars - 1].any()
    assert state.valid[SPEC.lookback_bars - 1 :].all()


def test_state_at_t_ignores_everything_after_t() -> None:
    c = make_candles(300, seed=1)
    base = compute_market_state(c, SPEC)
    t = 180
    rng = np.random.default_rng(2)
    scale = np.ones(300)
    scale[t + 1 :] = rng.uniform(0.5, 2.0, size=300 - t - 1)
    changed = Candles(
        ts=c.ts,
        open=c.open * scale,
        high=c.high * scale,
        low=c.low * scale,
        close=c.close * scale,
        volume=c.volume * scale,
        source=c.source,
        interval_seconds=60.0,
        gaps=c.gaps,
    )
    other = compute_market_state(changed, SPEC)
    np.testing.assert_array_equal(base.features[: t + 1], other.features[: t + 1])
    norm = Normalization.fit(base.features[: t + 1], base.valid[: t + 1])
    np.testing.assert_array_equal(base.windows(norm)[: t + 1], other.windows(norm)[: t + 1])
    assert not np.array_equal(base.features[t + 1 :], other.features[t + 1 :])


def test_large_gap_invalidates_windows_that_span_it_small_gap_does_not() -> None:
    c = make_candles(300, drop=(100, 101, 102, 200))  # a 3-bar gap before row 100, 1-bar later
    state = compute_market_state(c, SPEC)
    g = int(np.searchsorted(c.ts, 103 * 60_000_000_000))
    lookback = SPEC.lookback_bars
    assert state.valid[g - 1]
    assert not state.valid[g : g + lookback - 1].any()
    assert state.valid[g + lookback - 1 :].all()


def test_windows_are_standardized_history_oldest_first() -> None:
    c = make_candles(120)
    state = compute_market_state(c, SPEC)
    norm = Normalization.fit(state.features, state.valid)
    win = state.windows(norm)
    assert win.shape == (120, SPEC.state_size)
    assert win.dtype == np.float32
    t = 100
    z = (state.features - norm.mean) / norm.std
    np.testing.assert_allclose(win[t], z[t - 3 : t + 1].ravel(), rtol=1e-6)
    assert np.all(win[~state.valid] == 0)


def test_too_short_data_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="fewer than the"):
        compute_market_state(make_candles(20), SPEC)
