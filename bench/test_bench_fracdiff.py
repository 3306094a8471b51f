"""FracDiff speed against SciPy / NumPy peers, same inputs, same run (ratios in the README)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from scipy import signal

import colmena

D = 0.4
WINDOW = 1_000


def _close(got: np.ndarray, expected: np.ndarray, rtol: float) -> None:
    scale = np.max(np.abs(expected))
    assert np.max(np.abs(got - expected)) <= rtol * scale


# ------------------------------------------------------------------ FFD, 1M points, window 1000
@pytest.mark.benchmark(group="ffd 1e6 points, window 1000")
def test_colmena_fracdiff_ffd(benchmark: Any, random_series: np.ndarray) -> None:
    got = benchmark(colmena.fracdiff, random_series, D, window=WINDOW)
    w = colmena.fracdiff_weights(D, window=WINDOW)
    _close(got, signal.oaconvolve(random_series, w, mode="valid"), 1e-9)


@pytest.mark.benchmark(group="ffd 1e6 points, window 1000")
def test_peer_scipy_oaconvolve(benchmark: Any, random_series: np.ndarray) -> None:
    w = colmena.fracdiff_weights(D, window=WINDOW)
    benchmark(signal.oaconvolve, random_series, w, mode="valid")


@pytest.mark.benchmark(group="ffd 1e6 points, window 1000")
def test_peer_scipy_fftconvolve(benchmark: Any, random_series: np.ndarray) -> None:
    w = colmena.fracdiff_weights(D, window=WINDOW)
    benchmark(signal.fftconvolve, random_series, w, mode="valid")


@pytest.mark.benchmark(group="ffd 1e6 points, window 1000")
def test_peer_numpy_convolve(benchmark: Any, random_series: np.ndarray) -> None:
    w = colmena.fracdiff_weights(D, window=WINDOW)
    benchmark.pedantic(np.convolve, args=(random_series, w, "valid"), rounds=3, iterations=1)


# ------------------------------------------------------------------ expanding window, 1M points
@pytest.mark.benchmark(group="expanding 1e6 points")
def test_colmena_fracdiff_expanding(benchmark: Any, random_series: np.ndarray) -> None:
    got = benchmark.pedantic(
        colmena.fracdiff_expanding,
        args=(random_series, D),
        kwargs={"threshold": 1.0, "method": "fft"},
        rounds=5,
        iterations=1,
        warmup_rounds=1,
    )
    w = colmena.fracdiff_weights(D, window=random_series.size)
    _close(got, signal.fftconvolve(random_series, w)[: random_series.size], 1e-9)


@pytest.mark.benchmark(group="expanding 1e6 points")
def test_peer_scipy_fftconvolve_full(benchmark: Any, random_series: np.ndarray) -> None:
    w = colmena.fracdiff_weights(D, window=random_series.size)

    def full_causal() -> np.ndarray:
        return signal.fftconvolve(random_series, w)[: random_series.size]

    benchmark.pedantic(full_causal, rounds=5, iterations=1, warmup_rounds=1)


# ------------------------------------------------------------------ streaming update, window 1000
class NumpyRingFFD:
    """The peer: a NumPy ring of the newest values and one np.dot per update."""

    def __init__(self, weights: np.ndarray) -> None:
        self.reversed = weights[::-1].copy()
        self.window = weights.size
        self.ring = np.zeros(2 * self.window)
        self.head = 0

    def update(self, x: float) -> float:
        h, w = self.head, self.window
        self.ring[h] = x
        self.ring[h + w] = x
        self.head = (h + 1) % w
        return float(np.dot(self.reversed, self.ring[h + 1 : h + 1 + w]))


@pytest.mark.benchmark(group="stream update, window 1000")
def test_colmena_stream_update(benchmark: Any) -> None:
    stream = colmena.FracDiffStream(D, window=WINDOW)
    stream.update_many(np.ones(WINDOW))
    benchmark(stream.update, 0.5)


@pytest.mark.benchmark(group="stream update, window 1000")
def test_peer_numpy_ring_dot(benchmark: Any) -> None:
    ring = NumpyRingFFD(colmena.fracdiff_weights(D, window=WINDOW))
    for _ in range(WINDOW):
        ring.update(1.0)
    benchmark(ring.update, 0.5)


# ------------------------------------------------------------------ direct / FFT crossover
@pytest.mark.parametrize("window", [16, 32, 64, 96, 128, 192, 256])
@pytest.mark.parametrize("method", ["direct", "fft"])
def test_crossover(benchmark: Any, random_series: np.ndarray, window: int, method: str) -> None:
    """Where "auto" switches: compare the two methods per window (fracdiff_fft_crossover)."""
    benchmark.group = f"crossover window {window}"
    benchmark(colmena.fracdiff, random_series, D, window=window, method=method)
