"""RegimeClassifier against a plain-NumPy reference of the rules in its module docstring.

Trailing volatility: sqrt(mean of the squared one-bar log returns over the last L returns); trend
score: log(c_t / c_{t-L}) / (vol * sqrt(L)); high_volatility (vol >= threshold) takes precedence;
thresholds are quantiles of the training rows only; bars without a full window are -1.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from colmena.data.ohlcv import load_ohlcv
from colmena.features.regime import (
    REGIME_NAMES,
    UNKNOWN_REGIME,
    RegimeClassifier,
    RegimeConfig,
    _features,
)

TREND_UP, TREND_DOWN, RANGE, HIGH_VOL = 0, 1, 2, 3


# ------------------------------------------------------------------ plain references


def reference_features(close: np.ndarray, lookback: int) -> tuple[np.ndarray, np.ndarray]:
    """Trend score and volatility of every bar, one window at a time (NaN without a window)."""
    log_close = np.log(close)
    trend = np.full(close.size, np.nan)
    vol = np.full(close.size, np.nan)
    for t in range(lookback, close.size):
        window = log_close[t - lookback : t + 1]
        returns = np.diff(window)
        v = math.sqrt(np.mean(returns**2))
        vol[t] = v
        if v > 0:
            trend[t] = (log_close[t] - log_close[t - lookback]) / (v * math.sqrt(lookback))
    return trend, vol


def reference_thresholds(
    close: np.ndarray, rows: np.ndarray, config: RegimeConfig
) -> tuple[float, float]:
    trend, vol = reference_features(close, config.lookback_bars)
    trend, vol = trend[rows], vol[rows]
    ok = np.isfinite(vol) & np.isfinite(trend)
    vol_threshold = np.quantile(vol[ok], config.volatility_quantile)
    calm = ok & (vol < vol_threshold)
    return float(vol_threshold), float(np.quantile(np.abs(trend[calm]), config.trend_quantile))


def reference_codes(
    trend: np.ndarray, vol: np.ndarray, vol_threshold: float, trend_threshold: float
) -> np.ndarray:
    out = np.full(trend.size, -1, dtype=np.int64)
    for i, (s, v) in enumerate(zip(trend, vol, strict=True)):
        if not (np.isfinite(s) and np.isfinite(v)):
            continue
        if v >= vol_threshold:
            out[i] = HIGH_VOL
        elif s >= trend_threshold:
            out[i] = TREND_UP
        elif s <= -trend_threshold:
            out[i] = TREND_DOWN
        else:
            out[i] = RANGE
    return out


def assert_codes_match_reference(
    model: RegimeClassifier, close: np.ndarray, codes: np.ndarray
) -> None:
    """Codes equal the reference except where a feature ties a threshold to rounding."""
    trend, vol = reference_features(close, model.config.lookback_bars)
    ref = reference_codes(trend, vol, model.volatility_threshold, model.trend_threshold)
    near = np.isclose(vol, model.volatility_threshold, rtol=1e-9, atol=0) | np.isclose(
        np.abs(trend), model.trend_threshold, rtol=1e-9, atol=0
    )
    comparable = np.isfinite(trend)  # windows with zero volatility have no defined score
    mismatch = (codes != ref) & comparable
    assert not np.any(mismatch & ~near), np.flatnonzero(mismatch & ~near)[:10]
    assert near.sum() <= 3
    assert np.all(codes[: model.config.lookback_bars] == UNKNOWN_REGIME)


def random_walk(n: int, seed: int, sigma: float = 0.001, drift: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 100.0 * np.exp(np.cumsum(rng.normal(drift, sigma, n)))


@pytest.fixture(scope="module")
def btc_slice(shared_data_dir: Path) -> np.ndarray:
    """20,000 one-minute closes of BTC/USD 2018 (from late February), gaps as published."""
    candles = load_ohlcv(shared_data_dir / "btcusd_bitfinex_1m_2018.parquet")
    return np.array(candles.close[80_000:100_000], dtype=np.float64)


# ------------------------------------------------------------------ names and config


def test_regime_names_and_unknown_code() -> None:
    assert REGIME_NAMES == ("trend_up", "trend_down", "range", "high_volatility")
    assert UNKNOWN_REGIME == -1


def test_config_defaults_and_validation() -> None:
    config = RegimeConfig()
    assert (config.lookback_bars, config.volatility_quantile, config.trend_quantile) == (
        1_440,
        0.8,
        0.5,
    )
    for field, bad in [
        ("lookback_bars", 1),
        ("lookback_bars", 0),
        ("volatility_quantile", 0.0),
        ("volatility_quantile", 1.0),
        ("trend_quantile", 0.0),
        ("trend_quantile", 1.0),
    ]:
        with pytest.raises(msgspec.ValidationError, match=field):
            msgspec.convert({field: bad}, RegimeConfig)
    with pytest.raises(msgspec.ValidationError, match="lookback"):
        msgspec.convert({"lookback": 10}, RegimeConfig)
    assert msgspec.convert({"lookback_bars": 2}, RegimeConfig).lookback_bars == 2


# ------------------------------------------------------------------ fit and classify vs reference


def test_real_candles_fit_and_classify_equal_reference(btc_slice: np.ndarray) -> None:
    config = RegimeConfig(lookback_bars=60)
    train = np.arange(0, 10_000)  # includes the first 60 bars, which have no window
    model = RegimeClassifier.fit(btc_slice, train, config)
    vol_threshold, trend_threshold = reference_thresholds(btc_slice, train, config)
    assert model.volatility_threshold == pytest.approx(vol_threshold, rel=1e-9)
    assert model.trend_threshold == pytest.approx(trend_threshold, rel=1e-9)
    assert model.config == config

    codes = model.classify(btc_slice)
    assert codes.dtype == np.int64
    assert codes.shape == btc_slice.shape
    assert_codes_match_reference(model, btc_slice, codes)
    # all four regimes occur on real prices
    assert set(np.unique(codes)) == {-1, 0, 1, 2, 3}


def test_real_candles_fit_on_a_subset_of_rows(btc_slice: np.ndarray) -> None:
    config = RegimeConfig(lookback_bars=30, volatility_quantile=0.9, trend_quantile=0.7)
    rows = np.arange(5, 15_000, 15)  # e.g. decision bars only
    model = RegimeClassifier.fit(btc_slice, rows, config)
    vol_threshold, trend_threshold = reference_thresholds(btc_slice, rows, config)
    assert model.volatility_threshold == pytest.approx(vol_threshold, rel=1e-9)
    assert model.trend_threshold == pytest.approx(trend_threshold, rel=1e-9)
    # classify with rows equals classify of all bars, indexed
    everything = model.classify(btc_slice)
    np.testing.assert_array_equal(model.classify(btc_slice, rows), everything[rows])
    assert_codes_match_reference(model, btc_slice, everything)


@pytest.mark.parametrize(
    ("lookback", "vq", "tq", "seed"), [(20, 0.8, 0.5, 1), (45, 0.7, 0.3, 2), (2, 0.95, 0.6, 3)]
)
def test_synthetic_fit_and_classify_equal_reference(
    lookback: int, vq: float, tq: float, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    sigma = np.repeat(rng.uniform(0.0005, 0.003, 40), 100)  # volatility changes every 100 bars
    drift = np.repeat(rng.normal(0.0, 0.0005, 40), 100)
    close = 50.0 * np.exp(np.cumsum(rng.normal(drift, sigma)))
    config = RegimeConfig(lookback_bars=lookback, volatility_quantile=vq, trend_quantile=tq)
    rows = np.arange(2_500)
    model = RegimeClassifier.fit(close, rows, config)
    vol_threshold, trend_threshold = reference_thresholds(close, rows, config)
    assert model.volatility_threshold == pytest.approx(vol_threshold, rel=1e-9)
    assert model.trend_threshold == pytest.approx(trend_threshold, rel=1e-9)
    assert_codes_match_reference(model, close, model.classify(close))


def test_shares_on_the_training_rows_follow_the_quantiles() -> None:
    close = random_walk(20_000, seed=4)
    config = RegimeConfig(lookback_bars=50, volatility_quantile=0.8, trend_quantile=0.5)
    rows = np.arange(50, 20_000)
    model = RegimeClassifier.fit(close, rows, config)
    codes = model.classify(close, rows)
    assert np.mean(codes == HIGH_VOL) == pytest.approx(0.2, abs=2 / rows.size)
    calm = codes != HIGH_VOL
    assert np.mean(codes[calm] == RANGE) == pytest.approx(0.5, abs=2 / calm.sum())
    # a driftless walk: up and down trends about as frequent
    up, down = np.sum(codes == TREND_UP), np.sum(codes == TREND_DOWN)
    assert 0.6 < up / down < 1.6


def test_thresholds_compare_at_or_above() -> None:
    close = random_walk(600, seed=5)
    config = RegimeConfig(lookback_bars=20)
    ref_trend, ref_vol = reference_features(close, 20)
    up, down = np.flatnonzero(ref_trend > 0.1), np.flatnonzero(ref_trend < -0.1)
    rows = np.array([20, up[0], up[-1], down[0], down[-1], 599])
    # the classifier's own feature values (private helper), to put thresholds exactly on them
    trend, vol = _features(close, rows, 20)
    np.testing.assert_allclose(trend, ref_trend[rows], rtol=1e-12)
    np.testing.assert_allclose(vol, ref_vol[rows], rtol=1e-12)
    for i, t in enumerate(rows):
        one = np.array([t])
        at_vol = RegimeClassifier(config, volatility_threshold=vol[i], trend_threshold=1e9)
        assert at_vol.classify(close, one)[0] == HIGH_VOL
        over = RegimeClassifier(config, np.nextafter(vol[i], np.inf), trend_threshold=1e9)
        assert over.classify(close, one)[0] == RANGE
        at_trend = RegimeClassifier(config, np.inf, trend_threshold=abs(trend[i]))
        assert at_trend.classify(close, one)[0] == (TREND_UP if trend[i] > 0 else TREND_DOWN)
        over = RegimeClassifier(config, np.inf, np.nextafter(abs(trend[i]), np.inf))
        assert over.classify(close, one)[0] == RANGE


def test_high_volatility_takes_precedence_over_trend() -> None:
    close = random_walk(3_000, seed=6, sigma=0.002, drift=0.003)  # strong trend everywhere
    config = RegimeConfig(lookback_bars=30)
    trend, vol = reference_features(close, 30)
    low_vol = float(np.nanmin(vol)) / 2
    model = RegimeClassifier(config, volatility_threshold=low_vol, trend_threshold=0.1)
    codes = model.classify(close)
    assert np.all(codes[30:] == HIGH_VOL)
    calm_model = RegimeClassifier(config, volatility_threshold=np.inf, trend_threshold=0.1)
    assert np.all(calm_model.classify(close)[30:] == TREND_UP)
    assert np.all(trend[30:] > 0.1)


# ------------------------------------------------------------------ training rows only


def test_thresholds_depend_only_on_the_training_rows(btc_slice: np.ndarray) -> None:
    config = RegimeConfig(lookback_bars=60)
    rows = np.arange(0, 8_000)
    model = RegimeClassifier.fit(btc_slice, rows, config)
    rng = np.random.default_rng(7)
    altered = btc_slice.copy()
    altered[8_000:] *= np.exp(rng.normal(0.0, 0.05, altered.size - 8_000))  # the test part
    again = RegimeClassifier.fit(altered, rows, config)
    assert again.volatility_threshold == model.volatility_threshold
    assert again.trend_threshold == model.trend_threshold
    # and fitting on the truncated array gives the same thresholds
    short = RegimeClassifier.fit(btc_slice[:8_000], rows, config)
    assert short == model
    # whereas more rows do change them
    more = RegimeClassifier.fit(altered, np.arange(0, 12_000), config)
    assert more.volatility_threshold != model.volatility_threshold


def test_rows_outside_the_training_set_are_ignored() -> None:
    close = random_walk(4_000, seed=8)
    config = RegimeConfig(lookback_bars=10)
    rows = np.arange(100, 2_000, 3)
    model = RegimeClassifier.fit(close, rows, config)
    # bars in no training window: before the first one (bars 90 .. 100) and after the last row
    altered = close.copy()
    altered[2_000:] *= 3.0
    altered[:90] *= np.exp(np.random.default_rng(20).normal(0.0, 0.1, 90))
    assert RegimeClassifier.fit(altered, rows, config) == model
    # one bar inside a training window does change them
    altered[1_000] *= 1.05
    assert RegimeClassifier.fit(altered, rows, config) != model


# ------------------------------------------------------------------ causality


def test_classify_at_t_ignores_every_later_close(btc_slice: np.ndarray) -> None:
    close = btc_slice[:6_000]
    config = RegimeConfig(lookback_bars=60)
    model = RegimeClassifier.fit(close, np.arange(3_000), config)
    full = model.classify(close)
    rng = np.random.default_rng(9)
    for t in (59, 60, 61, 1_000, 3_333, 5_998):
        altered = close.copy()
        altered[t + 1 :] *= np.exp(rng.normal(0.0, 0.1, close.size - t - 1))
        np.testing.assert_array_equal(model.classify(altered)[: t + 1], full[: t + 1])
        np.testing.assert_array_equal(model.classify(close[: t + 1]), full[: t + 1])


def test_classify_at_t_ignores_bars_before_its_window(btc_slice: np.ndarray) -> None:
    close = btc_slice[:6_000]
    lookback = 60
    model = RegimeClassifier.fit(close, np.arange(3_000), RegimeConfig(lookback_bars=lookback))
    full = model.classify(close)
    rng = np.random.default_rng(10)
    for k in (1, 500, 4_000):
        altered = close.copy()
        altered[:k] *= np.exp(rng.normal(0.0, 0.1, k))  # bars 0 .. k-1
        got = model.classify(altered)
        # bar t reads bars t-L .. t: from t = k + L on, nothing it reads was altered
        np.testing.assert_array_equal(got[k + lookback :], full[k + lookback :])
    # each bar reads its own window: classifying the window alone gives the same code
    for t in (60, 777, 5_999):
        window = close[t - lookback : t + 1]
        assert model.classify(window)[-1] == full[t]


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    lookback=st.integers(2, 40),
    t=st.integers(0, 299),
    scale=st.floats(0.5, 2.0),
)
def test_causality_property_on_random_paths(seed: int, lookback: int, t: int, scale: float) -> None:
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, 300)))
    model = RegimeClassifier(
        RegimeConfig(lookback_bars=lookback),
        volatility_threshold=float(rng.uniform(0.005, 0.015)),
        trend_threshold=float(rng.uniform(0.1, 1.5)),
    )
    full = model.classify(close)
    later = close.copy()
    later[t + 1 :] *= scale * np.exp(rng.normal(0.0, 0.05, close.size - t - 1))
    assert model.classify(later)[t] == full[t]
    earlier = close.copy()
    start = max(t - lookback, 0)
    earlier[:start] *= scale * np.exp(rng.normal(0.0, 0.05, start))
    assert model.classify(earlier)[t] == full[t]
    expected = -1 if t < lookback else model.classify(close[t - lookback : t + 1])[-1]
    assert full[t] == expected


# ------------------------------------------------------------------ incomplete windows


def test_bars_without_a_full_window_are_unknown() -> None:
    close = random_walk(200, seed=11)
    model = RegimeClassifier(RegimeConfig(lookback_bars=50), 0.001, 0.5)
    codes = model.classify(close)
    assert np.all(codes[:50] == UNKNOWN_REGIME)
    assert np.all(codes[50:] >= 0)
    np.testing.assert_array_equal(
        model.classify(close, np.array([0, 49, 50, 199])), [-1, -1, codes[50], codes[199]]
    )
    assert np.all(model.classify(close[:50]) == UNKNOWN_REGIME)
    assert model.classify(close[:0]).shape == (0,)


# ------------------------------------------------------------------ synthetic regimes


@pytest.fixture(scope="module")
def mixed_model() -> RegimeClassifier:
    """Fitted on a driftless walk at one-minute-like volatility."""
    close = random_walk(10_000, seed=12, sigma=0.001)
    return RegimeClassifier.fit(close, np.arange(10_000), RegimeConfig(lookback_bars=60))


def test_steady_up_trend_is_trend_up(mixed_model: RegimeClassifier) -> None:
    close = random_walk(3_000, seed=13, sigma=0.0005, drift=0.0005)
    codes = mixed_model.classify(close)[60:]
    assert np.mean(codes == TREND_UP) > 0.9


def test_steady_down_trend_is_trend_down(mixed_model: RegimeClassifier) -> None:
    close = random_walk(3_000, seed=14, sigma=0.0005, drift=-0.0005)
    codes = mixed_model.classify(close)[60:]
    assert np.mean(codes == TREND_DOWN) > 0.9


def test_volatility_burst_is_high_volatility(mixed_model: RegimeClassifier) -> None:
    rng = np.random.default_rng(15)
    sigma = np.full(3_000, 0.0005)
    sigma[1_500:1_800] = 0.01  # the burst
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, sigma)))
    codes = mixed_model.classify(close)
    # returns 1500..1799 are the burst; bar t's window holds returns t-59 .. t
    assert np.all(codes[1_520:1_840] == HIGH_VOL)  # while enough of the burst is in the window
    assert not np.any(codes[60:1_480] == HIGH_VOL)  # calm before it
    assert not np.any(codes[2_200:] == HIGH_VOL)  # calm once it left the window


def test_flat_prices_are_range(mixed_model: RegimeClassifier) -> None:
    rng = np.random.default_rng(16)
    close = 100.0 * np.exp(0.0002 * np.sin(np.arange(2_000)) + rng.normal(0, 1e-6, 2_000))
    codes = mixed_model.classify(close)[60:]
    assert np.mean(codes == RANGE) > 0.9


# ------------------------------------------------------------------ fit errors


def test_fit_needs_ten_rows_with_a_full_window() -> None:
    close = random_walk(500, seed=17)
    config = RegimeConfig(lookback_bars=100)
    with pytest.raises(ValueError, match="only 9 training bars") as info:
        RegimeClassifier.fit(close, np.arange(0, 109), config)
    assert "100" in str(info.value)
    assert "lookback_bars" in str(info.value)
    RegimeClassifier.fit(close, np.arange(0, 110), config)  # ten rows: fine
    with pytest.raises(ValueError, match="only 0 training bars"):
        RegimeClassifier.fit(close, np.arange(0, 100), config)
    with pytest.raises(ValueError, match="only 0 training bars"):
        RegimeClassifier.fit(close[:100], np.arange(0, 100), config)
    with pytest.raises(ValueError, match="training bars"):
        RegimeClassifier.fit(close, np.zeros(0, dtype=np.int64), config)


def test_fit_default_config_is_one_day_of_minutes() -> None:
    close = random_walk(1_500, seed=18)
    model = RegimeClassifier.fit(close, np.arange(1_500))
    assert model.config == RegimeConfig()
    vol_threshold, trend_threshold = reference_thresholds(close, np.arange(1_500), RegimeConfig())
    assert model.volatility_threshold == pytest.approx(vol_threshold, rel=1e-9)
    assert model.trend_threshold == pytest.approx(trend_threshold, rel=1e-9)


# ------------------------------------------------------------------ serialisation


def test_to_dict_from_dict_round_trip() -> None:
    close = random_walk(2_000, seed=19)
    config = RegimeConfig(lookback_bars=33, volatility_quantile=0.75, trend_quantile=0.4)
    model = RegimeClassifier.fit(close, np.arange(2_000), config)
    data = model.to_dict()
    assert data == {
        "config": {"lookback_bars": 33, "volatility_quantile": 0.75, "trend_quantile": 0.4},
        "volatility_threshold": model.volatility_threshold,
        "trend_threshold": model.trend_threshold,
    }
    back = RegimeClassifier.from_dict(json.loads(json.dumps(data)))
    assert back == model
    np.testing.assert_array_equal(back.classify(close), model.classify(close))


@pytest.mark.parametrize("missing", ["config", "volatility_threshold", "trend_threshold"])
def test_from_dict_missing_field_raises(missing: str) -> None:
    data = RegimeClassifier(RegimeConfig(), 0.001, 0.5).to_dict()
    del data[missing]
    with pytest.raises(ValueError, match=f"invalid regime classifier.*{missing}"):
        RegimeClassifier.from_dict(data)


@pytest.mark.parametrize(
    "data",
    [
        None,
        [],
        "text",
        {"config": {"lookback_bars": 1}, "volatility_threshold": 0.1, "trend_threshold": 0.5},
        {"config": {"lookback": 60}, "volatility_threshold": 0.1, "trend_threshold": 0.5},
        {"config": {}, "volatility_threshold": "high", "trend_threshold": 0.5},
        {"config": {}, "volatility_threshold": 0.1, "trend_threshold": None},
    ],
    ids=["none", "list", "text", "short-lookback", "unknown-field", "text-threshold", "null"],
)
def test_from_dict_invalid_raises(data: object) -> None:
    with pytest.raises(ValueError, match="invalid regime classifier"):
        RegimeClassifier.from_dict(data)
