"""Shared fixtures: the real candle files, located outside the repository."""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from helpers import fresh_database  # noqa: F401  (re-exported: tests import it from here)

#: Environment variable that overrides where the real candle files are.
DATA_DIR_ENV = "COLMENA_DATA_DIR"


def shared_data_path() -> Path:
    """``$COLMENA_DATA_DIR``, or ``shared/data`` next to the repository root."""
    override = os.environ.get(DATA_DIR_ENV)
    if override:
        return Path(override)
    return Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """Folder with the real candle files (see its README); skips when it is missing."""
    folder = shared_data_path()
    if not folder.is_dir():
        pytest.skip(
            f"real candle files not found at {folder}; set {DATA_DIR_ENV} to the folder that "
            "holds them (the data are not in the repository)"
        )
    return folder


@pytest.fixture(scope="session")
def btc_2023_close(shared_data_dir: Path) -> np.ndarray:
    """Close prices of the Binance.US BTC/USDT 1-minute candles, March 2023 (30,240 rows)."""
    path = shared_data_dir / "binanceus_btcusdt_1m_2023-03-01_2023-03-21.csv"
    with path.open(newline="") as fh:
        return np.array([float(row["close"]) for row in csv.DictReader(fh)])


#: Environment variable that runs the ``fuzz_long`` tests in a plain run.
FUZZ_LONG_ENV = "COLMENA_FUZZ_LONG"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip ``fuzz_long`` tests unless asked for: ``-m fuzz_long`` or ``COLMENA_FUZZ_LONG=1``."""
    asked = "fuzz_long" in (config.getoption("markexpr") or "") or os.environ.get(
        FUZZ_LONG_ENV, ""
    ) not in ("", "0")
    if asked:
        return
    skip = pytest.mark.skip(
        reason=f"long fuzzer: run with -m fuzz_long or {FUZZ_LONG_ENV}=1 (tests/fuzzing.py)"
    )
    for item in items:
        if "fuzz_long" in item.keywords:
            item.add_marker(skip)


#: Environment variable naming a PostgreSQL server (a DSN with rights to create databases) that
#: the tests use instead of starting their own.
POSTGRES_DSN_ENV = "COLMENA_TEST_POSTGRES_DSN"


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """DSN of a real PostgreSQL server: ``$COLMENA_TEST_POSTGRES_DSN``, or one started for the
    session from the ``pgserver`` package (skips when neither is available)."""
    env = os.environ.get(POSTGRES_DSN_ENV)
    if env:
        yield env
        return
    pgserver = pytest.importorskip("pgserver")
    server = pgserver.get_server(tmp_path_factory.mktemp("pg"), cleanup_mode="stop")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()


@pytest.fixture(autouse=True)
def _colmena_loggers_enabled() -> None:
    """A library that configures logging with ``logging.config`` (``disable_existing_loggers``)
    disables the loggers that exist by then; a test that reads colmena's log records
    (``caplog``) must not depend on which tests ran before it."""
    for name, logger in logging.Logger.manager.loggerDict.items():
        if name.startswith("colmena") and isinstance(logger, logging.Logger):
            logger.disabled = False
