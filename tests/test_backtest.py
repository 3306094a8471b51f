"""The backtest: no lookahead, next-bar fills, accounting against NumPy, run directory, errors."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from colmena import _core
from colmena.backtest.engine import BacktestConfig, ExecutionSettings, backtest
from colmena.cli import main
from colmena.data.ohlcv import Candles, GapReport, load_ohlcv
from colmena.model.decision import DecisionConfig
from colmena.persistence.run_folder import write_run
from colmena.risk import RiskConfig
from colmena.training.trainer import train

pytest.importorskip("torch")

sys.path.insert(0, str(Path(__file__).parent))
from helpers import every_agent_votes, tiny_training

BTC_2023 = "binanceus_btcusdt_1m_2023-03-01_2023-03-21.csv"
MIN = 60_000_000_000
# A small model that decides every 5 minutes and trades whatever its gate says (gate=False), so
# that the accounting tests have trades to check; the gate has its own tests.
TRAINING = tiny_training(interval="5m", eval_days=1, decision=DecisionConfig(interval="5m",
                         no_trade_band=0.0), gate=False)  # fmt: skip
# Permissive risk so that the signal drives the position (accounting tests).
LOOSE = RiskConfig(kelly_prior=1.0, kelly_multiplier=1.0, var_budget=1e9, min_trade_fraction=0.0)


@pytest.fixture(scope="module")
def candles(shared_data_dir: Path) -> Candles:
    return load_ohlcv(shared_data_dir / BTC_2023).slice(0, 5_000)


@pytest.fixture(scope="module")
def checkpoint(candles: Candles):  # type: ignore[no-untyped-def]
    """A trained swarm in which every agent votes with weight 1 (whatever the selection found),
    so that the accounting tests have trades to check."""
    return every_agent_votes(train(candles.slice(0, 2_500), TRAINING).state)


def same(a, b) -> bool:  # type: ignore[no-untyped-def]
    """Tables equal column by column, NaN equal to NaN, bit for bit otherwise."""
    if a.column_names != b.column_names or a.num_rows != b.num_rows:
        return False
    for name in a.column_names:
        x = a.column(name).to_numpy(zero_copy_only=False)
        y = b.column(name).to_numpy(zero_copy_only=False)
        if x.dtype.kind == "f":
            if not np.array_equal(x, y, equal_nan=True):
                return False
        elif not np.array_equal(x, y):
            return False
    return True


def decided_up_to(table, bar_open_ns: int):  # type: ignore[no-untyped-def]
    """Rows of decisions.parquet decided at or before the close of the bar opening at
    ``bar_open_ns`` (the table holds decision bars only)."""
    opens = table.column("bar_open_time").cast("int64").to_numpy()
    return table.slice(0, int(np.searchsorted(opens, bar_open_ns, side="right")))


def perturbed_after(c: Candles, t: int, seed: int = 0) -> Candles:
    rng = np.random.default_rng(seed)
    scale = np.ones(len(c))
    scale[t + 1 :] = rng.uniform(0.8, 1.25, size=len(c) - t - 1)
    vol = np.ones(len(c))
    vol[t + 1 :] = rng.uniform(0.1, 10, size=len(c) - t - 1)
    return Candles(
        ts=c.ts, open=c.open * scale, high=c.high * scale, low=c.low * scale,
        close=c.close * scale, volume=c.volume * vol, source=c.source,
        interval_seconds=c.interval_seconds, gaps=c.gaps,
    )  # fmt: skip


def test_decisions_up_to_t_ignore_every_price_after_t(candles: Candles, checkpoint) -> None:  # type: ignore[no-untyped-def]
    config = BacktestConfig(risk=LOOSE)
    base = backtest(candles, config, state=checkpoint)
    t = 3_000
    other = backtest(perturbed_after(candles, t), config, state=checkpoint)
    cut = int(candles.ts[t])
    a = decided_up_to(base.decisions, cut)
    b = decided_up_to(other.decisions, cut)
    assert a.num_rows > 100
    assert same(a, b)
    # The swarm's account (the baseline columns are benchmarks: the exposure-matched one holds the
    # swarm's mean exposure over the whole period by definition).
    account = ["mark_time", "cash", "position", "equity", "trading_state"]
    assert same(base.equity.select(account).slice(0, t + 1),
                other.equity.select(account).slice(0, t + 1))  # fmt: skip
    assert same(base.bars.slice(0, t + 1), other.bars.slice(0, t + 1))  # features too
    assert not same(base.decisions.slice(a.num_rows), other.decisions.slice(a.num_rows))


def test_walk_forward_decisions_ignore_the_future_too(candles: Candles) -> None:
    config = BacktestConfig(train_fraction=0.5, training=TRAINING, risk=LOOSE)
    base = backtest(candles, config)
    t = 4_000
    other = backtest(perturbed_after(candles, t, seed=3), config)
    cut = int(candles.ts[t])
    a = decided_up_to(base.decisions, cut)
    assert a.num_rows > 100
    assert same(a, decided_up_to(other.decisions, cut))
    n = t + 1 - 2_500  # bars start at the first test bar
    assert same(base.bars.slice(0, n), other.bars.slice(0, n))


def test_same_inputs_same_trades_bit_for_bit(candles: Candles, checkpoint) -> None:  # type: ignore[no-untyped-def]
    a = backtest(candles, state=checkpoint)
    b = backtest(candles, state=checkpoint)
    for name in ("bars", "decisions", "orders", "fills", "equity", "events"):
        assert same(getattr(a, name), getattr(b, name))


def test_orders_fill_at_the_next_open_with_costs(candles: Candles, checkpoint) -> None:  # type: ignore[no-untyped-def]
    execution = ExecutionSettings(fee_bps=7.0, slippage_bps=3.0, impact_bps=20.0, market="margin")
    run = backtest(candles, BacktestConfig(risk=LOOSE, execution=execution), state=checkpoint)
    fills = run.fills.to_pydict()
    assert len(fills["price"]) > 10
    opens = dict(zip(candles.ts.tolist(), candles.open.tolist(), strict=True))
    volumes = dict(zip(candles.ts.tolist(), candles.volume.tolist(), strict=True))
    decided = set((run.orders.column("decision_time").cast("int64").to_numpy()).tolist())
    for ts, side, qty, price, fee in zip(
        run.fills.column("fill_time").cast("int64").to_numpy(),
        fills["side"], fills["quantity"], fills["price"], fills["fee"], strict=True,
    ):  # fmt: skip
        assert int(ts) in decided  # the fill bar opens when the decision bar closes
        sign = 1 if side == "buy" else -1
        slip = 3.0 + 20.0 * qty / volumes[int(ts)]
        assert price == pytest.approx(opens[int(ts)] * (1 + sign * slip / 1e4), rel=1e-12)
        assert fee == pytest.approx(qty * price * 7e-4, rel=1e-12)
        assert qty <= 0.1 * volumes[int(ts)] * (1 + 1e-12)


def test_equity_equals_an_independent_numpy_ledger(candles: Candles) -> None:
    n = len(candles)
    rng = np.random.default_rng(4)
    signal = np.repeat(rng.uniform(-1, 1, size=n // 50 + 1), 50)[:n]
    execution = ExecutionSettings(max_participation=1.0)
    raw = _core.run_backtest(
        np.ascontiguousarray(candles.ts), *(np.ascontiguousarray(getattr(candles, c))
        for c in ("open", "high", "low", "close", "volume")),
        signal, MIN, LOOSE.to_core(), execution.to_core(),
    )  # fmt: skip
    # Ledger from the fills alone, in NumPy.
    q = np.zeros(n)
    cash_flow = np.zeros(n)
    np.add.at(q, raw["fill_bar"], raw["fill_quantity"])
    np.add.at(
        cash_flow, raw["fill_bar"], -(raw["fill_quantity"] * raw["fill_price"] + raw["fill_fee"])
    )
    position = np.cumsum(q)
    cash = 100_000.0 + np.cumsum(cash_flow)
    equity = cash + position * candles.close
    np.testing.assert_allclose(raw["position"], position, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(raw["equity"], equity, rtol=1e-12)
    # Exposure follows the target: after each fill, position * price / equity ~ the target.
    filled = raw["order_filled"] != 0
    assert filled.sum() > 50
    bars = raw["order_bar"][filled]
    np.testing.assert_allclose(
        raw["order_target"][filled],
        raw["target"][bars],
    )


def test_partial_fill_when_order_exceeds_the_volume_share() -> None:
    executor = _core.PaperExecutor(
        ExecutionSettings(max_participation=0.1, market="margin").to_core()
    )
    fill, trades = executor.execute(0, 50.0, 100.0, 200.0)
    assert fill is not None
    assert fill["quantity"] == pytest.approx(20.0)
    assert fill["requested"] == 50.0
    assert trades == []
    fill, trades = executor.execute(MIN, -30.0, 110.0, 1_000.0)
    assert fill["quantity"] == pytest.approx(-30.0)
    assert len(trades) == 1
    assert trades[0][2] == 1  # the long closed (and a short opened)
    assert executor.position == pytest.approx(-10.0)
    none, _ = executor.execute(2 * MIN, 5.0, 100.0, 0.0)
    assert none is None  # no volume: no fill


def test_run_directory_has_the_promised_files_and_columns(
    candles: Candles,
    checkpoint,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    run = backtest(candles, state=checkpoint)
    out = write_run(run, tmp_path / "run")
    names = {p.name for p in out.iterdir()}
    assert {"bars.parquet", "decisions.parquet", "orders.parquet", "fills.parquet",
            "equity.parquet", "report.json", "report.html"} <= names  # fmt: skip
    assert {"bar_open_time", "open", "close", "signal", "ffd"} <= set(
        pq.read_schema(out / "bars.parquet").names
    )
    assert {
        "decision_time",
        "bar_open_time",
        "target",
        "verdict",
        "reason",
        "trading_state",
    } <= set(pq.read_schema(out / "decisions.parquet").names)
    assert {"fill_time", "side", "quantity", "price", "fee"} <= set(
        pq.read_schema(out / "fills.parquet").names
    )
    assert {"mark_time", "cash", "position", "equity"} <= set(
        pq.read_schema(out / "equity.parquet").names
    )
    assert {"origin", "status", "filled_quantity"} <= set(
        pq.read_schema(out / "orders.parquet").names
    )
    assert {"decision", "regime", "fold"} <= set(pq.read_schema(out / "bars.parquet").names)
    assert {"kelly_fraction", "fold", "regime"} <= set(
        pq.read_schema(out / "decisions.parquet").names
    )
    report = json.loads((out / "report.json").read_text())
    baselines = ("flat", "buy_and_hold", "buy_and_hold_exposure_matched", "momentum")
    assert set(report["baselines"]) == set(baselines)
    for key in ("sharpe", "sortino", "max_drawdown", "total_return", "cagr", "gross_pnl",
                "net_pnl", "fees_paid", "slippage_paid", "borrow_paid", "turnover"):  # fmt: skip
        assert key in report["metrics"]
        for name in baselines:
            assert key in report["baselines"][name]
    for key in ("time_in_market", "mean_gross_exposure", "win_rate", "profit_factor"):
        assert key in report["metrics"]
    assert report["data"]["sha256"]
    assert report["seed"] == 0
    assert report["out_of_sample"] is False  # the checkpoint saw the first half of this data
    assert any("NOT out of sample" in w for w in report["warnings"])
    assert report["decision_interval"] == "5m"
    assert [r["regime"] for r in report["regimes"]]
    assert "trades.parquet" in names
    assert {"entry_time", "exit_time", "side", "quantity", "entry_price", "exit_price", "pnl",
            "fees", "holding_hours", "exit_reason"} <= set(
        pq.read_schema(out / "trades.parquet").names
    )  # fmt: skip
    sheet = report["tear_sheet"]
    assert {"monthly_returns", "drawdown_periods", "benchmark", "trades", "costs"} <= set(sheet)
    assert sheet["trades"]["count"] == pq.read_table(out / "trades.parquet").num_rows
    assert report["value_at_risk_horizon"] == "1 day"
    html = (out / "report.html").read_text()
    assert html.count('class="plotly-graph-div"') == 7  # 3 days: too short for a rolling Sharpe
    for title in ("Equity, net of every cost", "Price with every fill", "Drawdown",
                  "Exposure over time", "Trading state and risk verdicts",
                  "Distribution of daily returns", "Swarm fitness and entropy per generation",
                  "Read this first", "Monthly returns", "Round trips", "Deepest drawdowns",
                  "Walk-forward folds", "By market regime", "Against buy-and-hold",
                  "Stress tests", "Events"):  # fmt: skip
        assert title in html, title
    # Self-contained: no external script, style sheet or image.
    import re

    assert not re.findall(r"<(?:script|link|img)[^>]*(?:src|href)=", html)
    # The run folder reads back, and `colmena report` renders it again from the files alone.
    from colmena.persistence.run_folder import load_run

    again = load_run(out)
    assert set(again.baseline_equity) == set(baselines)
    for name in baselines:
        np.testing.assert_array_equal(again.baseline_equity[name], run.baseline_equity[name])
    (out / "report.html").unlink()
    result = CliRunner().invoke(main, ["report", str(out)])
    assert result.exit_code == 0, result.output
    rendered = (out / "report.html").read_text()
    assert rendered.count('class="plotly-graph-div"') == 7
    assert "Read this first" in rendered
    bad = CliRunner().invoke(main, ["report", str(tmp_path)])
    assert bad.exit_code == 2
    assert "not a colmena run folder" in bad.output


def test_failed_write_leaves_no_directory(
    candles: Candles, checkpoint, tmp_path: Path, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    import colmena.persistence.run_folder

    run = backtest(candles, state=checkpoint)

    def broken(_: object) -> str:
        raise RuntimeError("disk full")

    monkeypatch.setattr(colmena.persistence.run_folder, "render_html", broken)
    with pytest.raises(RuntimeError):
        write_run(run, tmp_path / "run")
    assert list(tmp_path.iterdir()) == []


def test_checkpoint_from_another_feature_set_is_rejected(candles: Candles, checkpoint) -> None:  # type: ignore[no-untyped-def]
    from colmena.backtest.engine import IncompatibleCheckpointError

    other = dataclasses.replace(checkpoint, feature_names=("log_return", "rsi"))
    with pytest.raises(IncompatibleCheckpointError, match="rsi"):
        backtest(candles, state=other)


def test_an_unfinished_state_has_no_model_to_trade(candles: Candles, checkpoint) -> None:  # type: ignore[no-untyped-def]
    running = dataclasses.replace(checkpoint, consensus_weights=None, validation=None)
    with pytest.raises(ValueError, match=r"before selection and the gate.*--resume"):
        backtest(candles, state=running)


def test_no_trading_after_a_long_gap_until_features_are_valid(checkpoint) -> None:  # type: ignore[no-untyped-def]
    n = 3_000
    rng = np.random.default_rng(0)
    close = 20_000 * np.exp(np.cumsum(rng.normal(0, 1e-3, n)))
    ts = np.arange(n, dtype=np.int64) * MIN
    ts[2_000:] += 30 * MIN  # a 30-minute hole
    c = Candles(ts=ts, open=close, high=close * 1.001, low=close * 0.999, close=close,
                volume=np.full(n, 5.0), source=Path("synthetic"), interval_seconds=60.0,
                gaps=GapReport.from_timestamps(ts, 60.0))  # fmt: skip
    run = backtest(c, BacktestConfig(risk=LOOSE), state=checkpoint)
    table = run.decisions
    opens = table.column("bar_open_time").cast("int64").to_numpy()
    reasons = np.array(table.column("reason").to_pylist())
    states = np.array(table.column("trading_state").to_pylist())
    lookback = TRAINING.features.lookback_bars
    after = (opens >= ts[2_000]) & (opens < ts[2_000 + lookback - 1])
    assert after.sum() >= 5
    assert set(reasons[after]) == {"no_valid_market_state"}
    later = (opens >= ts[2_000 + lookback]) & (opens < ts[2_500])
    assert "no_valid_market_state" not in set(reasons[later])
    assert set(states[after]) == {"ACTIVE"}  # the stale-data state lasted until the fresh candle
    assert not np.any(run.bars.column("valid").to_numpy()[2_000 : 2_000 + lookback - 1])


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("open_time,open,high,low,close\n2023-03-01 00:00:00+00:00,1,1,1,1\n", "volume"),
        ("open_time,open,high,low,close,volume\n", "no data rows"),
    ],
)
def test_cli_bad_data_fails_cleanly(tmp_path: Path, content: str, message: str) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text(content)
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["backtest", str(bad), "--out", str(out)])
    assert result.exit_code != 0
    assert message in result.output.lower()
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["bad.csv"]


def test_cli_too_little_data_fails_cleanly(candles: Candles, tmp_path: Path) -> None:
    small = tmp_path / "small.parquet"
    pq.write_table(candles.slice(0, 200).to_arrow(), small)
    result = CliRunner().invoke(main, ["backtest", str(small), "--out", str(tmp_path / "run")])
    assert result.exit_code != 0
    assert "too few" in result.output
    assert not (tmp_path / "run").exists()


def test_cli_walk_forward_end_to_end(candles: Candles, tmp_path: Path) -> None:
    data = tmp_path / "c.parquet"
    pq.write_table(candles.to_arrow(), data)
    out = tmp_path / "run"
    args = ["backtest", str(data), "--out", str(out), "--agents", "6", "--generations", "2",
            "--vae-epochs", "1", "--folds", "2", "--seed", "5",
            "--decision-interval", "15m"]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["mode"] == "walk_forward"
    assert report["out_of_sample"] is True
    assert len(report["folds"]) == 2
    assert report["folds"][0]["test"]["rows"][1] == report["folds"][1]["test"]["rows"][0]
    assert report["decision_interval"] == "15m"
    for fold in report["folds"]:
        assert fold["gate"]["reason"]
        assert fold["traded"] is fold["gate"]["passed"]
        assert fold["test"]["first"] < fold["test"]["last"]
        assert "total_return" in fold["metrics"]
    assert "report.html" in result.output


def test_cli_trades_a_checkpoint_file_or_folder(
    candles: Candles, checkpoint, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    from colmena.persistence import checkpoint as checkpoints

    data = tmp_path / "c.parquet"
    pq.write_table(candles.to_arrow(), data)
    folder = tmp_path / "ckpt"
    path = checkpoints.save(folder, checkpoint)
    direct = backtest(candles, state=checkpoint).report
    for source in (folder, path):
        out = tmp_path / f"run-{source.name}"
        result = CliRunner().invoke(
            main, ["backtest", str(data), "--checkpoint", str(source), "--out", str(out)]
        )
        assert result.exit_code == 0, result.output
        report = json.loads((out / "report.json").read_text())
        assert report["mode"] == "checkpoint"
        assert report["out_of_sample"] is False  # it was trained on the first half
        assert report["metrics"]["n_fills"] == direct["metrics"]["n_fills"] > 0
        assert report["folds"][0]["validation"] == checkpoint.validation.to_dict()
        assert [g["window_start"] for g in report["folds"][0]["generations"]] == [
            h.window_start for h in checkpoint.history
        ]


def test_cli_config_file_sets_risk_and_costs(candles: Candles, tmp_path: Path) -> None:
    import msgspec

    data = tmp_path / "c.parquet"
    pq.write_table(candles.to_arrow(), data)
    config = BacktestConfig(
        train_fraction=0.5,
        training=TRAINING,
        execution=ExecutionSettings(fee_bps=25.0),
        risk=RiskConfig(max_leverage=0.5, halt_drawdown=0.3),
    )
    path = tmp_path / "config.json"
    path.write_bytes(msgspec.json.encode(config))
    out = tmp_path / "run"
    result = CliRunner().invoke(
        main, ["backtest", str(data), "--config", str(path), "--out", str(out), "--seed", "9"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["config"]["execution"]["fee_bps"] == 25.0
    assert report["config"]["risk"]["max_leverage"] == 0.5
    assert report["seed"] == 9
    assert report["config"]["training"]["evolution"]["agents"] == 8


def test_cli_config_file_with_a_bad_field_is_a_usage_error(tmp_path: Path) -> None:
    data = tmp_path / "c.csv"
    data.write_text("open_time,open,high,low,close,volume\n")
    path = tmp_path / "config.json"
    path.write_text('{"risk": {"var_budget": -1}, "folds": 2}')
    result = CliRunner().invoke(main, ["backtest", str(data), "--config", str(path)])
    assert result.exit_code == 2
    assert "var_budget" in result.output
    assert "config.json" in result.output


def test_round_trips_carry_size_prices_fees_and_exit_reason() -> None:
    """Built in two partial fills, closed in two: entry and exit are the volume-weighted fill
    prices, quantity the largest position, fees the fills' fees, pnl the difference net of fees
    (independent arithmetic on the fills)."""
    n = 60
    ts = np.arange(n, dtype=np.int64) * MIN
    price = 100.0 + np.maximum(np.arange(n) - 40, 0)  # flat while the volatility warms up
    volume = np.full(n, 10.0)  # 10% participation: 1 unit per bar
    signal = np.full(n, np.nan)
    action = np.zeros(n, dtype=np.uint8)
    action[40], signal[40] = 1, 1.0  # buy ~2 units of 100: two bars of fills
    action[45] = 3  # end_of_run: sell everything, two bars again
    risk = RiskConfig(kelly_prior=1.0, kelly_multiplier=1.0, var_budget=1e9,
                      min_trade_fraction=0.0).to_core()  # fmt: skip
    execution = ExecutionSettings(initial_cash=200.0, impact_bps=0.0).to_core()
    raw = _core.run_backtest(ts, price, price, price, price, volume, signal, MIN, risk,
                             execution, action, None)  # fmt: skip
    fq, fp, ff = raw["fill_quantity"], raw["fill_price"], raw["fill_fee"]
    buys, sells = fq > 0, fq < 0
    assert buys.sum() == 2
    assert sells.sum() == 2
    assert raw["trade_pnl"].size == 1
    entry = np.sum(fq[buys] * fp[buys]) / np.sum(fq[buys])
    exit_ = np.sum(fq[sells] * fp[sells]) / np.sum(fq[sells])
    qty = np.sum(fq[buys])
    assert raw["trade_quantity"][0] == pytest.approx(qty, rel=1e-12)
    assert raw["trade_entry_price"][0] == pytest.approx(entry, rel=1e-12)
    assert raw["trade_exit_price"][0] == pytest.approx(exit_, rel=1e-12)
    assert raw["trade_fees"][0] == pytest.approx(ff.sum(), rel=1e-12)
    assert raw["trade_pnl"][0] == pytest.approx((exit_ - entry) * qty - ff.sum(), rel=1e-9)
    origins = _core.order_origin_names()
    assert origins[raw["trade_exit_origin"][0]] == "end_of_run"  # the remainder keeps the reason


def test_time_columns_are_named_for_what_they_are(  # type: ignore[no-untyped-def]
    candles: Candles, checkpoint, tmp_path: Path
) -> None:
    """No table has a bare ``timestamp``: every time column says whether it is a bar's open, a
    decision at a bar's close, a fill or a mark, carries that meaning in its Parquet metadata,
    and the joins between tables line up on the documented bar."""
    from colmena.backtest.engine import TIME_COLUMNS

    run = backtest(candles, BacktestConfig(risk=LOOSE), state=checkpoint)
    out = write_run(run, tmp_path / "run")
    bar_ns = 60 * 10**9
    for name in ("bars", "decisions", "orders", "fills", "equity", "events"):
        schema = pq.read_schema(out / f"{name}.parquet")
        times = [f for f in schema if pa.types.is_timestamp(f.type)]
        assert times, name
        for field in times:
            assert field.name in TIME_COLUMNS, (name, field.name)
            assert field.metadata[b"description"].decode() == TIME_COLUMNS[field.name]

    def ns(table: pa.Table, column: str) -> np.ndarray:
        return np.asarray(table.column(column).cast("int64").to_numpy(), dtype=np.int64)

    # a decision is stamped at its bar's close; the bar is the row with its bar_open_time
    assert np.array_equal(
        ns(run.decisions, "decision_time"), ns(run.decisions, "bar_open_time") + bar_ns
    )
    assert set(ns(run.decisions, "bar_open_time")) <= set(ns(run.bars, "bar_open_time"))
    # an order fills at the open of the next bar (its decision bar's close, or later after a gap),
    # and a fill happens at that open
    assert np.all(ns(run.orders, "fill_bar_open_time") >= ns(run.orders, "decision_time"))
    assert set(ns(run.orders, "fill_bar_open_time")) <= set(ns(run.bars, "bar_open_time"))
    filled = np.asarray(run.orders.column("filled_quantity").to_numpy()) > 0
    assert set(ns(run.fills, "fill_time")) == set(ns(run.orders, "fill_bar_open_time")[filled])
    # the account is marked at every bar's close
    assert np.array_equal(ns(run.equity, "mark_time"), ns(run.bars, "bar_open_time") + bar_ns)
