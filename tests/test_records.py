"""PostgreSQL records against a real server (pgserver from PyPI, or $COLMENA_TEST_POSTGRES_DSN)."""

from __future__ import annotations

import dataclasses
import math
import uuid
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
from colmena.persistence.records import (  # noqa: E402
    NonFiniteMetricWarning,
    apply_migrations,
    record_run,
)
from colmena.persistence.run_folder import read_run_id, write_run  # noqa: E402
from colmena.training.evolution import EvolutionConfig  # noqa: E402
from colmena.training.trainer import TrainConfig, train  # noqa: E402
from conftest import fresh_database  # noqa: E402


@pytest.fixture(scope="module")
def dsn(postgres_server: str) -> str:
    return fresh_database(postgres_server, "colmena_test")


@pytest.fixture(scope="module")
def candles(shared_data_dir: Path):  # type: ignore[no-untyped-def]
    return load_ohlcv(shared_data_dir / "binanceus_btcusdt_1m_2023-03-01_2023-03-21.csv").slice(
        0, 3_000
    )


@pytest.fixture(scope="module")
def state(candles):  # type: ignore[no-untyped-def]
    config = TrainConfig(
        features=FeatureSpec(ffd_window=32, state_bars=4),
        vae=VAEConfig(hidden=(8,), latent_dim=2, epochs=1, max_samples_per_epoch=1_000),
        evolution=EvolutionConfig(agents=4, hidden=(4,), generations=1, eval_days=1, elite=1),
        decision=DecisionConfig(interval="5m"),
        regime=RegimeConfig(lookback_bars=60),
        gate=False,
    )
    return train(candles.slice(0, 1_500), config).state


@pytest.fixture(scope="module")
def run(candles, state):  # type: ignore[no-untyped-def]
    return backtest(candles, state=state)


def rows_of(dsn: str, run_uuid: uuid.UUID) -> list[tuple[int, int]]:
    """(row id, number of fills) of every row recorded for ``run_uuid``."""
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT r.id, (SELECT count(*) FROM backtest_fills f WHERE f.run_id = r.id)"
            " FROM backtest_runs r WHERE r.run_uuid = %s",
            (run_uuid,),
        ).fetchall()


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
    assert first in (
        [],
        [
            "0001_backtest_runs.sql",
            "0002_run_uuid.sql",
            "0003_live_records.sql",
            "0004_live_strategies.sql",
            "0005_live_risk_state.sql",
            "0006_live_control.sql",
        ],
    )
    assert {"backtest_runs", "backtest_fills", "colmena_schema_migrations"} <= tables


def test_migration_0002_keeps_the_rows_recorded_before_it(postgres_server: str) -> None:
    """A database at migration 0001 with a row keyed by its report hash: 0002 alone is applied,
    the row stays (without a run id), and new rows are keyed by run id."""
    import importlib.resources

    sql = (
        importlib.resources.files("colmena.persistence.migrations") / "0001_backtest_runs.sql"
    ).read_text()
    old = fresh_database(postgres_server, "colmena_v1")
    with psycopg.connect(old) as conn:
        conn.execute(sql)
        conn.execute(
            "CREATE TABLE colmena_schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT"
            " NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        conn.execute("INSERT INTO colmena_schema_migrations VALUES (1, '0001_backtest_runs.sql')")
        conn.execute(
            "INSERT INTO backtest_runs (idempotency_key, mode, out_of_sample, seed, data_file,"
            " first_bar, last_bar, config, metrics, buy_and_hold, report) VALUES ('k', 'm', true,"
            " 0, 'f', now(), now(), '{}', '{}', '{}', '{}')"
        )
        conn.commit()
        assert apply_migrations(conn) == [
            "0002_run_uuid.sql",
            "0003_live_records.sql",
            "0004_live_strategies.sql",
            "0005_live_risk_state.sql",
            "0006_live_control.sql",
        ]
        rows = conn.execute("SELECT idempotency_key, run_uuid FROM backtest_runs").fetchall()
        assert rows == [("k", None)]
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute(
                "INSERT INTO backtest_runs (mode, out_of_sample, seed, data_file, first_bar,"
                " last_bar, config, metrics, buy_and_hold, report) VALUES ('m', true, 0, 'f',"
                " now(), now(), '{}', '{}', '{}', '{}')"
            )


def test_run_is_recorded_once_with_its_fills(dsn: str, run) -> None:  # type: ignore[no-untyped-def]
    key = uuid.uuid4()
    run_id = record_run(dsn, run, run_id=key)
    assert record_run(dsn, run, run_id=str(key)) == run_id  # idempotent
    with psycopg.connect(dsn) as conn:
        count = conn.execute(
            "SELECT count(*) FROM backtest_runs WHERE run_uuid = %s", (key,)
        ).fetchone()[0]
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


def test_two_runs_with_equal_metrics_are_two_rows_and_a_folder_is_recorded_once(
    dsn: str, run, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """The same numbers twice (the same data, checkpoint and seed) are two runs: two folders,
    two ids, two rows, each with its fills. Recording a folder again adds nothing."""
    a = read_run_id(write_run(run, tmp_path / "a", html=False))
    b = read_run_id(write_run(run, tmp_path / "b", html=False))
    id_a, id_b = record_run(dsn, run, run_id=a), record_run(dsn, run, run_id=b)
    assert id_a != id_b
    assert record_run(dsn, run, run_id=read_run_id(tmp_path / "a")) == id_a
    n_fills = run.fills.num_rows
    assert rows_of(dsn, a) == [(id_a, n_fills)]
    assert rows_of(dsn, b) == [(id_b, n_fills)]


def test_non_finite_metrics_are_stored_as_null_with_a_warning_naming_them(dsn: str, run) -> None:  # type: ignore[no-untyped-def]
    report = dict(run.report)
    report["metrics"] = {**report["metrics"], "sortino": math.inf, "profit_factor": math.nan}
    baselines = dict(report["baselines"])
    baselines["buy_and_hold"] = {**baselines["buy_and_hold"], "calmar": -math.inf}
    report["baselines"] = baselines
    odd = dataclasses.replace(run, report=report)
    key = uuid.uuid4()
    with pytest.warns(NonFiniteMetricWarning) as caught:
        run_id = record_run(dsn, odd, run_id=key)
    assert len(caught) == 1
    message = str(caught[0].message)
    for name in ("metrics.sortino = inf", "metrics.profit_factor = nan",
                 "baselines.buy_and_hold.calmar = -inf"):  # fmt: skip
        assert name in message, message
    assert str(key) in message
    with psycopg.connect(dsn) as conn:
        metrics, hold, stored = conn.execute(
            "SELECT metrics, buy_and_hold, report FROM backtest_runs WHERE id = %s", (run_id,)
        ).fetchone()
    assert metrics["sortino"] is None
    assert metrics["profit_factor"] is None
    assert hold["calmar"] is None
    assert stored["metrics"]["sortino"] is None
    assert metrics["net_pnl"] == pytest.approx(run.report["metrics"]["net_pnl"])
    assert run.report["metrics"].get("sortino") != math.inf  # the run itself is unchanged


def test_record_run_needs_a_uuid(dsn: str, run) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="badly formed"):
        record_run(dsn, run, run_id="not-a-uuid")


def test_unreachable_database_raises_and_writes_nothing(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(psycopg.OperationalError):
        record_run(
            f"postgresql://nobody@/none?host={tmp_path}&connect_timeout=2",
            run,
            run_id=uuid.uuid4(),
        )


def test_backtest_cli_records_each_run_once_even_with_equal_results(
    dsn: str, candles, state, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """``colmena backtest --db`` twice with the same inputs: two run folders, two rows."""
    import pyarrow.parquet as pq
    from click.testing import CliRunner

    from colmena.cli import main
    from colmena.persistence import checkpoint as checkpoints

    data = tmp_path / "candles.parquet"
    pq.write_table(candles.to_arrow(), data)
    ck = checkpoints.save(tmp_path / "ck", state)
    ids = []
    for name in ("a", "b"):
        result = CliRunner().invoke(main, ["backtest", str(data), "--checkpoint", str(ck),
                                           "--out", str(tmp_path / name), "--db", dsn])  # fmt: skip
        assert result.exit_code == 0, result.output
        ids.append(int(result.output.split("recorded in PostgreSQL as run ")[1].split()[0]))
        assert rows_of(dsn, read_run_id(tmp_path / name)) == [(ids[-1], fills_in(tmp_path / name))]
    assert ids[0] != ids[1]


def fills_in(folder: Path) -> int:
    """Rows of the run folder's fills.parquet."""
    import pyarrow.parquet as pq

    return pq.read_metadata(folder / "fills.parquet").num_rows


def _json_values():  # type: ignore[no-untyped-def]
    from hypothesis import strategies as st

    leaves = st.none() | st.booleans() | st.integers() | st.text(max_size=5) | st.floats()
    return st.recursive(
        leaves,
        lambda inner: (
            st.lists(inner, max_size=4)
            | st.dictionaries(st.text("abc_", min_size=1, max_size=4), inner, max_size=4)
        ),
        max_leaves=20,
    )


def _paths(value, where: str = ""):  # type: ignore[no-untyped-def]
    """Every (path, leaf) of a JSON-like value, in the order finite_json names them."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, f"{where}.{k}" if where else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, f"{where}[{i}]")
    else:
        yield where, value


def test_finite_json_nulls_exactly_the_non_finite_numbers() -> None:
    """Property: the result has the same shape, every finite leaf unchanged, every non-finite
    float replaced by None and named with its path, and it encodes as strict JSON."""
    import json

    from hypothesis import given

    from colmena.persistence.records import finite_json

    @given(_json_values())
    def check(value) -> None:  # type: ignore[no-untyped-def]
        cleaned, found = finite_json(value)
        before, after = list(_paths(value)), list(_paths(cleaned))
        assert [p for p, _ in before] == [p for p, _ in after]
        expected = []
        for (path, leaf), (_, new) in zip(before, after, strict=True):
            if isinstance(leaf, float) and not math.isfinite(leaf):
                assert new is None
                expected.append(f"{path} = {leaf}")
            else:
                assert new is leaf or new == leaf
        assert found == expected
        json.dumps(cleaned, allow_nan=False)  # strict JSON: what JSONB accepts

    check()
