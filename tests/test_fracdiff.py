"""Fractional differentiation against independent references (NumPy, SciPy, plain Python)."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import binom

import colmena
from colmena import _core

METHODS = ["direct", "fft"]


def afml_expanding_reference(x: np.ndarray, d: float, threshold: float) -> np.ndarray:
    """AFML snippet 5.2 written plainly: O(n^2) dot products over the whole history."""
    n = x.size
    w = [1.0]
    for k in range(1, n):
        w.append(-w[-1] / k * (d - k + 1))
    w_oldest_first = np.array(w[::-1])
    cum = np.cumsum(np.abs(w_oldest_first))
    cum /= cum[-1]
    skip = int((cum > threshold).sum())
    out = np.full(n, np.nan)
    for iloc in range(skip, n):
        out[iloc] = float(np.dot(w_oldest_first[-(iloc + 1) :], x[: iloc + 1]))
    return out


@given(d=st.floats(0.0, 2.0), window=st.integers(1, 300))
def test_weights_equal_closed_form_binomial(d: float, window: int) -> None:
    w = colmena.fracdiff_weights(d, window=window)
    k = np.arange(window)
    expected = (-1.0) ** k * binom(d, k)
    np.testing.assert_allclose(w, expected, rtol=1e-10, atol=1e-14)


@given(d=st.floats(0.05, 1.95).filter(lambda v: abs(v - 1.0) > 1e-3), exponent=st.integers(2, 6))
def test_threshold_keeps_weights_until_first_below_threshold(d: float, exponent: int) -> None:
    threshold = 10.0**-exponent
    w = colmena.fracdiff_weights(d, threshold=threshold)
    assert np.all(np.abs(w) >= threshold)
    k = w.size
    next_weight = -w[-1] / k * (d - k + 1)
    assert abs(next_weight) < threshold


def test_integer_orders_give_identity_and_first_difference() -> None:
    x = np.cumsum(np.random.default_rng(0).standard_normal(50))
    np.testing.assert_array_equal(colmena.fracdiff_weights(0.0, threshold=1e-5), [1.0])
    np.testing.assert_array_equal(colmena.fracdiff_weights(1.0, threshold=1e-5), [1.0, -1.0])
    np.testing.assert_allclose(colmena.fracdiff(x, 1.0, threshold=1e-5), np.diff(x), atol=1e-12)


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 3000),
    window=st.integers(1, 1200),
    d=st.floats(0.0, 2.0),
    method=st.sampled_from(METHODS),
    seed=st.integers(0, 2**32 - 1),
)
def test_fracdiff_equals_numpy_convolve(
    n: int, window: int, d: float, method: str, seed: int
) -> None:
    window = min(window, n)
    x = np.random.default_rng(seed).standard_normal(n) * 100 + 1000
    w = colmena.fracdiff_weights(d, window=window)
    got = colmena.fracdiff(x, d, window=window, method=method)  # type: ignore[arg-type]
    expected = np.convolve(x, w, mode="valid")
    assert got.shape == expected.shape == (n - window + 1,)
    scale = np.max(np.abs(x)) * np.sum(np.abs(w))
    assert np.max(np.abs(got - expected)) <= 1e-10 * scale


def test_fft_and_direct_agree_on_real_log_prices(btc_2023_close: np.ndarray) -> None:
    x = np.log(btc_2023_close)
    direct = colmena.fracdiff(x, 0.4, window=1000, method="direct")
    fft = colmena.fracdiff(x, 0.4, window=1000, method="fft")
    np.testing.assert_allclose(fft, direct, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("method", METHODS)
def test_nan_spoils_only_windows_that_contain_it(method: str) -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal(20_000)
    bad = np.sort(rng.choice(x.size, size=5, replace=False))
    x[bad] = np.nan
    window = 700
    got = colmena.fracdiff(x, 0.4, window=window, method=method)  # type: ignore[arg-type]
    expected = np.convolve(x, colmena.fracdiff_weights(0.4, window=window), mode="valid")
    # np.convolve is a plain sum per output: NaN exactly where the window holds a NaN.
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    ok = ~np.isnan(expected)
    np.testing.assert_allclose(got[ok], expected[ok], rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("method", METHODS)
def test_infinity_spoils_only_its_windows(method: str) -> None:
    x = np.random.default_rng(2).standard_normal(5_000)
    x[2_500] = np.inf
    got = colmena.fracdiff(x, 0.4, window=100, method=method)  # type: ignore[arg-type]
    spoiled = np.zeros(got.size, dtype=bool)
    spoiled[2_500 - 99 : 2_500 + 1] = True
    assert np.all(np.isnan(got[spoiled]))
    assert np.all(np.isfinite(got[~spoiled]))


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(1, 400),
    d=st.floats(0.0, 2.0),
    threshold=st.sampled_from([0.0, 1e-3, 0.01, 0.1, 1.0]),
    method=st.sampled_from(METHODS),
    seed=st.integers(0, 2**32 - 1),
)
def test_expanding_equals_plain_quadratic_reference(
    n: int, d: float, threshold: float, method: str, seed: int
) -> None:
    x = np.random.default_rng(seed).standard_normal(n)
    got = colmena.fracdiff_expanding(x, d, threshold=threshold, method=method)  # type: ignore[arg-type]
    expected = afml_expanding_reference(x, d, threshold)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    ok = ~np.isnan(expected)
    scale = max(1.0, float(np.max(np.abs(x), initial=0.0)))
    np.testing.assert_allclose(got[ok], expected[ok], rtol=1e-9, atol=1e-10 * scale * n)


def test_expanding_fft_on_long_series_matches_scipy_fftconvolve() -> None:
    from scipy.signal import fftconvolve

    x = np.random.default_rng(3).standard_normal(200_003)
    w = colmena.fracdiff_weights(0.3, window=x.size)
    got = colmena.fracdiff_expanding(x, 0.3, threshold=0.0 + 1.0, method="fft")
    expected = fftconvolve(x, w)[: x.size]
    np.testing.assert_allclose(got, expected, rtol=1e-8, atol=1e-9)


def test_expanding_nan_spoils_everything_after_it() -> None:
    x = np.random.default_rng(4).standard_normal(3_000)
    x[1_000] = np.nan
    got = colmena.fracdiff_expanding(x, 0.5, threshold=1.0, method="fft")
    assert np.all(np.isfinite(got[:1_000]))
    assert np.all(np.isnan(got[1_000:]))


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 2_000),
    window=st.integers(1, 300),
    d=st.floats(0.0, 2.0),
    seed=st.integers(0, 2**32 - 1),
)
def test_stream_equals_batch(n: int, window: int, d: float, seed: int) -> None:
    x = np.random.default_rng(seed).standard_normal(n)
    stream = colmena.FracDiffStream(d, window=window)
    online = np.array([stream.update(float(v)) for v in x])
    assert stream.count == n
    assert np.all(np.isnan(online[: min(window - 1, n)]))
    if n >= window:
        batch = colmena.fracdiff(x, d, window=window, method="direct")
        np.testing.assert_array_equal(online[window - 1 :], batch, strict=True)  # bit for bit
    stream.reset()
    np.testing.assert_array_equal(stream.update_many(x), online, strict=True)


def test_stream_recovers_after_nan_leaves_window() -> None:
    stream = colmena.FracDiffStream(0.4, window=10)
    x = np.random.default_rng(5).standard_normal(40)
    x[15] = np.nan
    out = stream.update_many(x)
    assert np.all(np.isnan(out[15:25]))
    assert np.all(np.isfinite(out[25:]))
    np.testing.assert_allclose(
        out[25:], np.convolve(x, stream.weights, mode="valid")[16:], rtol=1e-12
    )


def test_stream_from_threshold_uses_same_weights_as_batch() -> None:
    stream = colmena.FracDiffStream(0.6, threshold=1e-4)
    np.testing.assert_array_equal(stream.weights, colmena.fracdiff_weights(0.6, threshold=1e-4))
    assert stream.window == stream.weights.size


def test_log_returns_equal_numpy() -> None:
    close = np.exp(np.cumsum(np.random.default_rng(6).standard_normal(10_000) * 1e-3)) * 30_000
    np.testing.assert_allclose(colmena.log_returns(close), np.diff(np.log(close)), atol=1e-15)
    assert colmena.log_returns(close[:1]).shape == (0,)


def test_log_returns_reject_non_positive_price_naming_row() -> None:
    with pytest.raises(ValueError, match="row 2"):
        colmena.log_returns(np.array([1.0, 2.0, 0.0, 3.0]))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"d": 2.5, "window": 3}, "d must be in"),
        ({"d": -0.1, "window": 3}, "d must be in"),
        ({"d": 0.4}, "exactly one"),
        ({"d": 0.4, "window": 3, "threshold": 1e-3}, "exactly one"),
        ({"d": 0.4, "window": 0}, "window must be"),
        ({"d": 0.4, "threshold": -1.0}, "threshold must be"),
        ({"d": 0.4, "threshold": float("nan")}, "threshold must be"),
        ({"d": 0.4, "window": 100}, "fewer than the FFD window"),
        ({"d": 0.4, "window": 3, "method": "magic"}, "method must be"),
    ],
)
def test_bad_arguments_raise_value_error(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        colmena.fracdiff(np.arange(1.0, 11.0), **kwargs)  # type: ignore[arg-type]


def test_bad_arrays_raise_clear_errors() -> None:
    with pytest.raises(ValueError, match="1-D"):
        colmena.fracdiff(np.ones((4, 4)), 0.4, window=2)
    with pytest.raises(TypeError, match="real numbers"):
        colmena.fracdiff(np.array(["a", "b"]), 0.4, window=1)
    with pytest.raises(TypeError, match="float64"):
        _core.fracdiff_ffd(np.ones(4, dtype=np.float32), np.ones(2), "auto")
    with pytest.raises(ValueError, match="C-contiguous"):
        _core.fracdiff_ffd(np.ones(8)[::2], np.ones(2), "auto")


def test_min_ffd_d_finds_smallest_passing_order_on_random_walk() -> None:
    from statsmodels.tsa.stattools import adfuller

    log_price = np.cumsum(np.random.default_rng(8).standard_normal(20_000) * 1e-3) + 10
    assert colmena.features.adf_test(log_price, 1)[1] > 0.5  # the walk itself is not stationary
    result = colmena.min_ffd_d(log_price, threshold=1e-3, tolerance=0.02)
    assert 0.0 < result.d <= 1.0
    assert result.p_value < 0.05
    # Independent re-check of the reported order with statsmodels directly.
    y = colmena.fracdiff(log_price, result.d, threshold=1e-3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # statsmodels 0.15 tuple-return notice
        stat, p_value = adfuller(y, maxlag=1, regression="c", autolag=None)[:2]
    assert stat == pytest.approx(result.adf_statistic)
    assert p_value == pytest.approx(result.p_value)
    # Every order tried below the answer by more than the tolerance failed the test.
    failed_below = [d for d, _, p in result.trials if d < result.d]
    assert failed_below
    assert all(p >= 0.05 for d, _, p in result.trials if d < result.d)
    assert result.d - max(failed_below) <= 0.02 + 1e-12


def test_min_ffd_d_on_stationary_series_is_zero() -> None:
    noise = np.random.default_rng(8).standard_normal(5_000)
    assert colmena.min_ffd_d(noise, threshold=1e-3).d == 0.0


def test_min_ffd_d_on_real_btc_minutes(btc_2023_close: np.ndarray) -> None:
    result = colmena.min_ffd_d(np.log(btc_2023_close), threshold=1e-4)
    assert 0.0 < result.d < 1.0
    assert result.p_value < 0.05
    assert result.correlation > 0.0


def test_min_ffd_d_rejects_non_finite_series() -> None:
    x = np.arange(1.0, 100.0)
    x[5] = np.nan
    with pytest.raises(ValueError, match="row 5"):
        colmena.min_ffd_d(x)


# ---------------------------------------------------------------- bounded work (issue 10)


def _bounded(script: str) -> str:
    """Run ``script`` in a child process with 2 GiB of address space and a minute: on a
    regression the unbounded weights fail one test instead of exhausting the machine."""
    sys.path.insert(0, str(Path(__file__).parent))
    from helpers import run_python

    done = run_python(["-c", script], timeout=60)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    return output


def test_a_tiny_threshold_is_refused_instead_of_exhausting_memory() -> None:
    output = _bounded(
        "import colmena\n"
        "try:\n"
        "    colmena.fracdiff_weights(0.4, threshold=1e-300)\n"
        "except ValueError as exc:\n"
        "    print(exc)\n"
    )
    assert "threshold 1e-300 keeps more than 1000000 weights at d = 0.4" in output


@pytest.mark.parametrize(
    "call",
    [
        "colmena.fracdiff(np.ones(10), 0.4, threshold=1e-300)",
        "colmena.fracdiff_weights(0.4, window=10**12)",
        "_core.FracDiffStream(0.4, threshold=1e-300)",
        "_core.FracDiffStream(0.4, window=10**12)",
        "colmena.min_ffd_d(np.cumsum(np.random.default_rng(0).normal(size=500)), threshold=1e-300)",
    ],
)
def test_every_way_to_ask_for_unbounded_weights_is_a_value_error(call: str) -> None:
    output = _bounded(
        "import numpy as np\nimport colmena\nfrom colmena import _core\n"
        f"try:\n    {call}\nexcept ValueError as exc:\n    print('ValueError:', exc)\n"
    )
    assert output.startswith("ValueError:"), output
    assert "1000000" in output, output


def test_the_weight_limit_is_exact() -> None:
    from colmena.features.fractional_diff import MAX_FFD_WEIGHTS

    assert MAX_FFD_WEIGHTS == _core.MAX_FRACDIFF_WEIGHTS == 1_000_000
    assert colmena.fracdiff_weights(0.4, window=MAX_FFD_WEIGHTS).size == MAX_FFD_WEIGHTS
    # |w_k| at d = 1.5 falls like k^-2.5: a threshold just above the millionth weight passes
    last = abs(colmena.fracdiff_weights(1.5, window=MAX_FFD_WEIGHTS)[-1])
    assert colmena.fracdiff_weights(1.5, threshold=last).size == MAX_FFD_WEIGHTS
    with pytest.raises(ValueError, match="keeps more than 1000000 weights"):
        colmena.fracdiff_weights(1.5, threshold=last * 0.999)
