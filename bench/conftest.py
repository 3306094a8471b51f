"""Benchmarks: every colmena row sits in a pytest-benchmark group next to its peer.

Run: ``pytest bench --benchmark-only --benchmark-json=bench/results.json`` then
``python bench/report.py bench/results.json`` for the table of ratios in the README.
Names: the colmena row of a group is named ``test_colmena_*``; peers ``test_peer_*``.
"""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="session")
def random_series() -> np.ndarray:
    """1,000,000 float64 points of a Gaussian random walk (log-price-like), fixed seed."""
    return np.cumsum(np.random.default_rng(42).standard_normal(1_000_000)) * 1e-3 + 10.0
