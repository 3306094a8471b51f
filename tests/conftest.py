"""Shared fixtures: the real candles in ../shared/data (never copied into the repository)."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_data_path() -> Path:
    """The real-candle folder: $COLMENA_DATA_DIR, else ../shared/data beside the repository."""
    env = os.environ.get("COLMENA_DATA_DIR")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    path = shared_data_path()
    if not path.is_dir():
        pytest.skip(f"real candle data not found at {path} (set COLMENA_DATA_DIR)")
    return path


@pytest.fixture(scope="session")
def btc_2023_close(shared_data_dir: Path) -> np.ndarray:
    """Close prices of the Binance.US BTC/USDT 1-minute candles, March 2023 (30,240 rows)."""
    path = shared_data_dir / "binanceus_btcusdt_1m_2023-03-01_2023-03-21.csv"
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    return np.array([float(r["close"]) for r in rows])
