"""PostgreSQL records against a real server (pgserver from PyPI, or $COLMENA_TEST_POSTGRES_DSN)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

psycopg = pytest.importorskip("psycopg")
pytest.importorskip("torch")

from colmena.backtest.engine import backtest  # noqa: E402
from colmena.data.ohlcv import load_ohlcv  # noqa: E402
from colmena.features.market_state import FeatureSpec  # noqa: E402
from colmena.features.regime import RegimeConfig  # noqa: E402
from colmena.model.decision import DecisionConfig  # noqa: E402
from colmena.model.vae import VAEConfig  # noqa: E402
from colmena.persistence.records import apply_migrations, record_run  # noqa: E402
from colmena.training.evolution import EvolutionConfig  # noqa: E402
from colmena.training.trainer import TrainConfig, train  # noqa: E402


@pytest.fixture(scope="module")
def dsn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    env = os.environ.get("COLMENA_TEST_POSTGRES_DSN")
    if env:
        yield env
        return
    pgserver = pytest.importorskip("pgserver")
    server = pgserver.get_server(tmp_path_factory.mktemp("pg"), cleanup_mode="stop")
    try:
        uri = server.get_uri()
        with psycopg.connect(uri, autocommit=True) as conn:
            conn.execute("DROP DATABASE IF EXISTS colmena_test")
            conn.execute("CREATE DATABASE colmena_test")
        yield uri.replace("/postgres?", "/colmena_test?")
    finally:
        server.cleanup()


@pytest.fixture(scope="module")
def run(shared_data_dir: Path):  # type: ignore[no-untyped-def]
    candles = load_ohlcv(shared_data_dir / "binanceus_btcusdt_1m_2023-03-01_2023-03-21.csv").slice(
        0, 3_000
    )
    config = TrainConfig(
        features=FeatureSpec(ffd_window=32, state_bars=4),
        vae=VAEConfig(hidden=(8,), latent_dim=2, epochs=1, max_samples_per_epoch=1_000),
        evolution=EvolutionConfig(agents=4, hidden=(4,), generations=1, eval_days=1, elite=1),
        decision=DecisionConfig(interval="5m"),
        regime=RegimeConfig(lookback_bars=60),
        gate=False,
    )
    state = train(candles.slice(0, 1_500), config).state
    return backtest(candles, state=state)


def test_migrations_apply_once(dsn: str) -> None:
    with psycopg.connect(dsn) as conn:
        first = apply_migrations(conn)
        again = apply_migrations(conn)
        tables = {
            r[0]
            for r in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
            )
        }
    assert again == []
    assert first in ([], ["0001_backtest_runs.sql"])
    assert {"backtest_runs", "backtest_fills", "colmena_schema_migrations"} <= tables


def test_run_is_recorded_once_with_its_fills(dsn: str, run) -> None:  # type: ignore[no-untyped-def]
    run_id = record_run(dsn, run)
    assert record_run(dsn, run) == run_id  # idempotent
    with psycopg.connect(dsn) as conn:
        count = conn.execute("SELECT count(*) FROM backtest_runs").fetchone()[0]
        metrics, seed = conn.execute(
            "SELECT metrics, seed FROM backtest_runs WHERE id = %s", (run_id,)
        ).fetchone()
        fills = conn.execute(
            "SELECT quantity, price, fee FROM backtest_fills WHERE run_id = %s ORDER BY seq",
            (run_id,),
        ).fetchall()
    assert count == 1
    assert seed == run.report["seed"]
    assert metrics["sharpe"] == pytest.approx(run.report["metrics"]["sharpe"])
    expected = run.fills.to_pydict()
    assert len(fills) == len(expected["price"])
    np.testing.assert_allclose([f[1] for f in fills], expected["price"])


def test_unreachable_database_raises_and_writes_nothing(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(psycopg.OperationalError):
        record_run(f"postgresql://nobody@/none?host={tmp_path}&connect_timeout=2", run)
