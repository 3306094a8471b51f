"""Market features: log returns and fractional differentiation (FFD and expanding window).

Fractional differentiation follows Lopez de Prado, *Advances in Financial Machine Learning*
(AFML), 2018, chapter 5: weights ``w_0 = 1``, ``w_k = -w_{k-1} (d - k + 1) / k`` (the binomial
series of ``(1 - B)^d``, ``w_k = (-1)^k binom(d, k)``). The arithmetic runs in the compiled core
(``colmena._core``); this module checks arguments, documents them and picks defaults.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from colmena import _core

FloatArray = NDArray[np.float64]
Method = Literal["auto", "direct", "fft"]

FracDiffStream = _core.FracDiffStream

#: Most FFD weights (the core's ``MAX_FRACDIFF_WEIGHTS``, 1,000,000: 8 MB, about two years of
#: one-minute bars): a threshold that would keep more, or a longer window, is refused.
#: ``|w_k|`` falls like ``k**-(1 + d)``, so a tiny threshold (1e-300 at d = 0.4 would need some
#: 1e214 weights) would otherwise exhaust memory.
MAX_FFD_WEIGHTS: Final[int] = _core.MAX_FRACDIFF_WEIGHTS

__all__ = [
    "MAX_FFD_WEIGHTS",
    "FracDiffStream",
    "MinFfdResult",
    "adf_test",
    "fracdiff",
    "fracdiff_expanding",
    "fracdiff_fft_crossover",
    "fracdiff_weights",
    "log_returns",
    "min_ffd_d",
]


def _as_series(values: ArrayLike, name: str) -> FloatArray:
    """A 1-D C-contiguous float64 copy-or-view of ``values``; ValueError/TypeError naming it."""
    try:
        arr = np.asarray(values)
    except (TypeError, ValueError) as exc:  # ragged input and the like
        raise TypeError(f"{name} must be a 1-D array of numbers: {exc}") from exc
    if arr.dtype.kind not in "fiu":
        raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    return np.ascontiguousarray(arr, dtype=np.float64)


def _check_d(d: float) -> float:
    d = float(d)
    if not (0.0 <= d <= 2.0):
        raise ValueError(f"d must be in [0, 2], got {d}")
    return d


def log_returns(close: ArrayLike) -> FloatArray:
    """Log returns ``r[t] = log(close[t + 1] / close[t])``.

    Parameters
    ----------
    close : array_like, float64 [n_bars]
        Close prices in the quote currency, > 0, oldest first.

    Returns
    -------
    numpy.ndarray, float64 [n_bars - 1]
        ``r[t]`` is the return from bar ``t`` to bar ``t + 1`` (natural log, a fraction, not
        percent). A non-finite price gives NaN in the two returns that use it.

    Raises
    ------
    ValueError
        If ``close`` is not 1-D or a price is <= 0 (the message names the row).
    TypeError
        If ``close`` does not hold real numbers.
    """
    return _core.log_returns(_as_series(close, "close"))


def fracdiff_weights(
    d: float, *, threshold: float | None = None, window: int | None = None
) -> FloatArray:
    """Fractional-differentiation weights ``w_0 .. w_{K-1}`` (AFML snippets 5.1 and 5.3).

    Parameters
    ----------
    d : float
        Order of differentiation in [0, 2]; 0 returns the series, 1 the first difference.
    threshold : float, optional
        Keep weights while ``|w_k| >= threshold`` (AFML's fixed-width window, snippet 5.3).
    window : int, optional
        Keep exactly ``window`` weights, in [1, :data:`MAX_FFD_WEIGHTS`]. Give exactly one of
        the two.

    Returns
    -------
    numpy.ndarray, float64 [K]
        ``w_0 = 1`` applies to the newest value, ``w_k`` to the value ``k`` bars back;
        ``K <= MAX_FFD_WEIGHTS``.

    Raises
    ------
    ValueError
        For ``d`` outside [0, 2], both or neither of ``threshold`` and ``window``,
        ``threshold <= 0``, a threshold that would keep more than :data:`MAX_FFD_WEIGHTS`
        weights, or ``window`` outside [1, :data:`MAX_FFD_WEIGHTS`].
    """
    d = _check_d(d)
    if (threshold is None) == (window is None):
        raise ValueError("give exactly one of threshold and window")
    if threshold is not None:
        threshold = float(threshold)
        if not (np.isfinite(threshold) and threshold > 0.0):
            raise ValueError(f"threshold must be finite and > 0, got {threshold}")
        return _core.fracdiff_weights(d, threshold, 0)
    assert window is not None
    if int(window) != window or window < 1:
        raise ValueError(f"window must be an integer >= 1, got {window}")
    if window > MAX_FFD_WEIGHTS:
        raise ValueError(f"window must be at most {MAX_FFD_WEIGHTS} weights, got {window}")
    return _core.fracdiff_weights(d, 0.0, int(window))


def fracdiff(
    x: ArrayLike,
    d: float,
    *,
    threshold: float | None = None,
    window: int | None = None,
    method: Method = "auto",
) -> FloatArray:
    """Fixed-width-window fractional differentiation, FFD (AFML section 5.5, snippet 5.3).

    ``y[t] = sum_{k < W} w_k * x[t + W - 1 - k]`` with the ``W`` weights of
    :func:`fracdiff_weights`. Output uses 'valid' alignment (as ``numpy.convolve(x, w,
    mode="valid")``): it has ``n - W + 1`` values and ``y[t]`` belongs to input position
    ``t + W - 1``, the newest value its window reads; nothing reads the future.

    Parameters
    ----------
    x : array_like, float64 [n]
        The series, oldest first, usually log prices.
    d : float
        Order in [0, 2].
    threshold, window
        The weight cut, exactly one of them (see :func:`fracdiff_weights`).
    method : {"auto", "direct", "fft"}
        "direct" is a register-blocked dot product per output, O(n W); "fft" is overlap-save
        with a radix-4 FFT in the core, O(n log W); "auto" uses the FFT from
        :func:`fracdiff_fft_crossover` weights on (the crossover measured in
        ``bench/test_bench_fracdiff.py``). Both agree to about 1e-15 relative; "direct" sums
        every output in one fixed order at every SIMD level, so it equals
        :class:`FracDiffStream` bit for bit (the FFT path does not).

    Returns
    -------
    numpy.ndarray, float64 [n - W + 1]
        A non-finite ``x[i]`` makes exactly the outputs whose window contains ``i`` NaN; all
        other outputs are unaffected (non-finite values never enter a transform).

    Raises
    ------
    ValueError
        For a bad ``d``/``threshold``/``window``/``method``, a non-1-D ``x``, or ``n < W``.
    """
    weights = fracdiff_weights(d, threshold=threshold, window=window)
    series = _as_series(x, "x")
    if series.size < weights.size:
        raise ValueError(
            f"x has {series.size} values, fewer than the FFD window of {weights.size} weights "
            f"(d={d}); pass a longer series or a larger threshold / smaller window"
        )
    return _core.fracdiff_ffd(series, weights, method)


def fracdiff_expanding(
    x: ArrayLike, d: float, *, threshold: float = 0.01, method: Method = "auto"
) -> FloatArray:
    """Expanding-window fractional differentiation (AFML snippet 5.2).

    ``y[t] = sum_{k <= t} w_k * x[t - k]``: every output uses the whole history, with weights
    for all ``n`` lags. As in AFML the first ``skip`` outputs, whose relative weight loss
    ``sum_{k > t} |w_k| / sum_k |w_k|`` exceeds ``threshold``, are not reported (NaN here).
    ``skip`` is AFML's count of cumulative relative weights above ``threshold``.

    Parameters
    ----------
    x : array_like, float64 [n]
        The series, oldest first.
    d : float
        Order in [0, 2].
    threshold : float
        Tolerated weight loss in [0, 1] (AFML default 0.01).
    method : {"auto", "direct", "fft"}
        "fft" computes the full causal convolution with one four-step FFT of size
        ``>= 2n - 1`` in O(n log n); "direct" is the O(n^2) sum (small inputs, references).

    Returns
    -------
    numpy.ndarray, float64 [n]
        Aligned with ``x``; NaN for ``t < skip``, and from the first non-finite ``x[i]`` on
        (every later window contains it).

    Raises
    ------
    ValueError
        For ``d`` outside [0, 2], ``threshold`` outside [0, 1] or a non-1-D ``x``.
    """
    d = _check_d(d)
    threshold = float(threshold)
    if not (0.0 <= threshold <= 1.0):
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    return _core.fracdiff_expanding(_as_series(x, "x"), d, threshold, method)


def fracdiff_fft_crossover() -> int:
    """Number of weights from which ``method="auto"`` uses the FFT path."""
    return int(_core.fracdiff_fft_crossover())


@dataclass(frozen=True)
class MinFfdResult:
    """Outcome of :func:`min_ffd_d`.

    Attributes
    ----------
    d : float
        Smallest order found whose FFD series passes the ADF test.
    adf_statistic, p_value : float
        ADF test of the FFD series at ``d`` (MacKinnon p-value).
    confidence : float
        Required confidence (the test passes when ``p_value < 1 - confidence``).
    window : int
        Number of FFD weights at ``d``.
    n_obs : int
        Length of the FFD series that was tested.
    correlation : float
        Correlation of the FFD series with the input over the same positions (memory kept).
    trials : tuple of (d, adf_statistic, p_value)
        Every order tried, in the order tried.
    """

    d: float
    adf_statistic: float
    p_value: float
    confidence: float
    window: int
    n_obs: int
    correlation: float
    trials: tuple[tuple[float, float, float], ...]


def adf_test(y: FloatArray, max_lag: int) -> tuple[float, float]:
    """Augmented Dickey-Fuller test with a constant and a fixed lag order (as in AFML 5.6).

    Returns ``(statistic, p_value)`` from ``statsmodels.tsa.stattools.adfuller(y,
    maxlag=max_lag, regression="c", autolag=None)``; the p-value is MacKinnon's (1994, 2010).
    """
    import inspect

    from statsmodels.tsa.stattools import adfuller

    kwargs: dict[str, object] = {"maxlag": max_lag, "regression": "c", "autolag": None}
    if "result_object" in inspect.signature(adfuller).parameters:
        kwargs["result_object"] = False  # statsmodels >= 0.15: keep the plain tuple
    result = adfuller(y, **kwargs)
    return float(result[0]), float(result[1])


def min_ffd_d(
    series: ArrayLike,
    *,
    confidence: float = 0.95,
    threshold: float | None = 1e-4,
    window: int | None = None,
    d_max: float = 1.0,
    grid_step: float = 0.1,
    tolerance: float = 0.01,
    max_lag: int = 1,
) -> MinFfdResult:
    """Smallest ``d`` whose FFD series is stationary by an ADF test (AFML section 5.6).

    AFML snippet 5.4 scans ``d`` on a grid and reads off the first order whose augmented
    Dickey-Fuller statistic passes; here the grid (step ``grid_step`` on ``[0, d_max]``) is
    followed by bisection between the last failing and the first passing order until the bracket
    is narrower than ``tolerance``. The ADF test is ``statsmodels.tsa.stattools.adfuller`` with
    a constant, ``maxlag=max_lag`` and no automatic lag selection, as in AFML.

    Parameters
    ----------
    series : array_like, float64 [n]
        The series to make stationary, usually log prices (not returns), oldest first.
    confidence : float
        In (0, 1); the test passes when the p-value is below ``1 - confidence``.
    threshold, window
        FFD weight cut (exactly one), as in :func:`fracdiff`.
    d_max : float
        Largest order tried, in (0, 2].
    grid_step, tolerance : float
        Coarse grid step and final bracket width, both > 0.
    max_lag : int
        ADF lag order (>= 0).

    Returns
    -------
    MinFfdResult

    Raises
    ------
    ValueError
        For bad arguments, a series too short for the FFD window plus the ADF regression, or
        when no ``d <= d_max`` passes (the message gives the last statistic).
    """
    x = _as_series(series, "series")
    if not (0.0 < confidence < 1.0):
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if not (0.0 < d_max <= 2.0):
        raise ValueError(f"d_max must be in (0, 2], got {d_max}")
    if grid_step <= 0 or tolerance <= 0:
        raise ValueError("grid_step and tolerance must be > 0")
    if max_lag < 0:
        raise ValueError(f"max_lag must be >= 0, got {max_lag}")
    if not np.all(np.isfinite(x)):
        bad = int(np.flatnonzero(~np.isfinite(x))[0])
        raise ValueError(
            f"series has a non-finite value at row {bad}; the ADF test needs clean data"
        )
    alpha = 1.0 - confidence
    trials: list[tuple[float, float, float]] = []
    cache: dict[float, tuple[float, float, FloatArray]] = {}

    def test(d: float) -> bool:
        d = round(d, 10)
        if d not in cache:
            y = fracdiff(x, d, threshold=threshold, window=window, method="auto")
            if y.size < 10 + 2 * max_lag:
                raise ValueError(
                    f"series of {x.size} values leaves {y.size} FFD values at d={d}: too few "
                    "for the ADF test; pass a longer series or a coarser threshold"
                )
            stat, p_value = adf_test(y, max_lag)
            cache[d] = (float(stat), float(p_value), y)
            trials.append((d, float(stat), float(p_value)))
        return cache[d][1] < alpha

    grid = np.round(np.arange(0.0, d_max + grid_step / 2, grid_step), 10)
    grid[-1] = min(grid[-1], d_max)
    lo: float | None = None
    hi: float | None = None
    for d in grid:
        if test(float(d)):
            hi = float(d)
            break
        lo = float(d)
    if hi is None:
        last = trials[-1]
        raise ValueError(
            f"no d <= {d_max} makes the series stationary at {confidence:.0%} confidence "
            f"(ADF statistic {last[1]:.3f}, p-value {last[2]:.3g} at d={last[0]})"
        )
    if lo is not None:
        while hi - lo > tolerance:
            mid = (lo + hi) / 2
            if test(mid):
                hi = mid
            else:
                lo = mid
    stat, p_value, y = cache[round(hi, 10)]
    aligned = x[x.size - y.size :]
    correlation = float(np.corrcoef(aligned, y)[0, 1]) if np.std(y) > 0 else float("nan")
    return MinFfdResult(
        d=hi,
        adf_statistic=stat,
        p_value=p_value,
        confidence=confidence,
        window=int(x.size - y.size + 1),
        n_obs=int(y.size),
        correlation=correlation,
        trials=tuple(trials),
    )
