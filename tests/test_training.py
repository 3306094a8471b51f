"""Training end to end on real candles: determinism, checkpoint round trip, CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from colmena import _core
from colmena.cli import main
from colmena.data.ohlcv import Candles, load_ohlcv
from colmena.execution.simulation import ExecutionSettings, day_end_rows, simulate_targets
from colmena.features.market_state import FeatureSpec, compute_market_state
from colmena.features.regime import RegimeConfig
from colmena.model.decision import DecisionConfig, decision_bars
from colmena.model.swarm import SwarmModel
from colmena.model.vae import VAEConfig
from colmena.persistence import checkpoint as checkpoints
from colmena.risk import RiskConfig
from colmena.training.evolution import EvolutionConfig, daily_sharpe
from colmena.training.trainer import MIN_REGIME_DECISIONS, TrainConfig, train

pytest.importorskip("torch")

BTC_2023 = "binanceus_btcusdt_1m_2023-03-01_2023-03-21.csv"
SMALL = TrainConfig(
    seed=8,
    features=FeatureSpec(ffd_window=64, state_bars=8),
    vae=VAEConfig(hidden=(32,), latent_dim=4, epochs=2, max_samples_per_epoch=2_000),
    evolution=EvolutionConfig(
        agents=10, hidden=(8,), generations=3, eval_days=4, elite=2, finetune_steps=1
    ),
    decision=DecisionConfig(interval="15m"),
    regime=RegimeConfig(lookback_bars=60),
)
MARGIN = ExecutionSettings(market="margin")


@pytest.fixture(scope="module")
def candles(shared_data_dir: Path) -> Candles:
    """Three weeks of minute candles: selection and gate hold three days each."""
    return load_ohlcv(shared_data_dir / BTC_2023)


@pytest.fixture(scope="module")
def trained(candles: Candles):  # type: ignore[no-untyped-def]
    return train(candles, SMALL, execution=MARGIN)


def test_training_is_deterministic_under_a_seed(candles: Candles, trained) -> None:  # type: ignore[no-untyped-def]
    again = train(candles, SMALL, execution=MARGIN)
    assert again.checkpoint == trained.checkpoint


def test_checkpoint_holds_the_run(trained, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ckpt = trained.checkpoint
    assert ckpt.generation == 3
    assert ckpt.tensors["swarm/layer0/weight"].shape == (10, 4 + 4, 8)
    assert ckpt.tensors["history/entropy"].shape == (3,)
    assert ckpt.tensors["adam/step"].dtype == np.int64
    assert len(ckpt.lineage) == 10 + 2 * 8
    assert np.all(np.isfinite(ckpt.tensors["fitness"]))
    path = checkpoints.save(tmp_path, ckpt)
    loaded = checkpoints.load_latest(tmp_path)
    assert loaded == ckpt
    checkpoints.save(tmp_path, loaded)
    assert checkpoints.load_latest(tmp_path) == ckpt
    assert path.exists()


def test_model_from_checkpoint_gives_the_same_signals(trained, candles: Candles) -> None:  # type: ignore[no-untyped-def]
    rebuilt = SwarmModel.from_checkpoint(trained.checkpoint)
    a = trained.model.signals(candles)
    b = rebuilt.signals(candles)
    np.testing.assert_array_equal(a.agent_signals, b.agent_signals)
    np.testing.assert_array_equal(a.consensus, b.consensus)
    np.testing.assert_array_equal(a.decision_rows, np.flatnonzero(a.decision & a.valid))
    decided = a.consensus[a.decision_rows]
    assert np.all(np.abs(decided) <= 1.0)
    assert np.all(np.isnan(np.delete(a.consensus, a.decision_rows)))  # no decision elsewhere


def test_core_encoder_equals_the_trained_torch_encoder(trained, candles: Candles) -> None:  # type: ignore[no-untyped-def]
    import torch

    from colmena.features.market_state import compute_market_state

    state = compute_market_state(candles, SMALL.features)
    x = state.windows(trained.model.normalization)[state.valid][:500]
    module = trained.vae.module
    with torch.no_grad():
        expected = module.mu(module.encoder(torch.from_numpy(x))).numpy()
    np.testing.assert_allclose(trained.model.encoder.encode(x), expected, atol=1e-5)


def test_train_cli_writes_a_checkpoint(shared_data_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "head.parquet"
    import pyarrow.parquet as pq

    out = tmp_path / "ckpt"
    pq.write_table(load_ohlcv(shared_data_dir / BTC_2023).slice(0, 6_000).to_arrow(), data)
    args = ["train", str(data), "--out", str(out), "--agents", "6", "--generations", "2"]
    args += ["--eval-days", "1", "--vae-epochs", "1", "--seed", "3", "--decision-interval", "15m"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "validation gate" in result.output
    loaded = checkpoints.load_latest(out)
    assert loaded.generation == 2
    assert loaded.tensors["fitness"].shape == (6,)
    assert loaded.config["train"]["decision"]["interval"] == "15m"
    assert loaded.config["validation"]["gate"]["reason"]


def test_train_cli_rejects_bad_data(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("open_time,open,high,low,close,volume\n2023-03-01 00:00:00+00:00,1,1,1,nan,1\n")
    out = tmp_path / "ckpt"
    result = CliRunner().invoke(main, ["train", str(bad), "--out", str(out)])
    assert result.exit_code != 0
    assert "bad.csv" in result.output
    assert not out.exists()


# ------------------------------------------------------------------ validation, selection, gate


def parts(candles: Candles, config: TrainConfig) -> tuple[int, int, int]:
    """The documented split: fit [0, a), selection [a, b), gate [b, n)."""
    n = len(candles)
    a = int(n * (1.0 - config.validation_fraction))
    return a, a + (n - a) // 2, n


def test_only_agents_that_beat_flat_on_selection_vote_with_their_sharpe(
    trained, candles: Candles
) -> None:  # type: ignore[no-untyped-def]
    """Re-score the final population on the selection bars with the executor and NumPy, and
    compare with the weights training chose."""
    a, b, _ = parts(candles, SMALL)
    model = trained.model
    sig = model.signals(candles)
    decide = sig.decision & sig.valid
    sel = slice(a, b)
    inside = (sig.decision_rows >= a) & (sig.decision_rows < b)
    agent = np.ascontiguousarray(sig.agent_signals[:, inside])
    days = day_end_rows(candles.ts[sel] + 60_000_000_000)
    sim = simulate_targets(
        candles.ts[sel], candles.open[sel], candles.close[sel], candles.volume[sel], decide[sel],
        agent, days, bar_seconds=60, execution=MARGIN, no_trade_band=SMALL.decision.no_trade_band,
    )  # fmt: skip
    sharpe = daily_sharpe(sim.equity, MARGIN.initial_cash)
    beats = (sim.equity[:, -1] > MARGIN.initial_cash) & (sharpe > 0)
    weights = model.weights
    assert weights.shape == (1, 10)
    assert 0 < beats.sum() < 10  # some agents vote, some do not
    assert np.all(weights >= 0)
    np.testing.assert_allclose(weights[0], np.where(beats, sharpe, 0.0), rtol=1e-12)
    validation = trained.checkpoint.config["validation"]
    assert validation["selection"]["voters"] == int(beats.sum())
    np.testing.assert_array_equal(trained.checkpoint.tensors["consensus/weights"], weights)


def test_gate_trades_the_voted_swarm_through_the_engine_on_later_bars(
    trained, candles: Candles
) -> None:  # type: ignore[no-untyped-def]
    _, b, n = parts(candles, SMALL)
    model = trained.model
    gate = model.gate
    assert gate is not None
    sig = model.signals(candles)
    part = slice(b, n)
    action = np.where(sig.decision[part] & sig.valid[part], 1, 0).astype(np.uint8)
    action[n - b - 31 : n - b - 1] = 3
    signal = np.where(action == 1, sig.consensus[part], np.nan)
    raw = _core.run_backtest(
        *(np.ascontiguousarray(getattr(candles, c)[part])
          for c in ("ts", "open", "high", "low", "close", "volume")),
        np.ascontiguousarray(signal), 60_000_000_000, RiskConfig().to_core(), MARGIN.to_core(),
        action, None,
    )  # fmt: skip
    net = raw["equity"][-1] / MARGIN.initial_cash - 1
    assert gate.net_return == pytest.approx(net, rel=1e-12, abs=1e-15)
    assert gate.start_ts == int(candles.ts[b])
    voters = model.weights.any()
    assert gate.passed == (voters and net > 0 and raw["fill_bar"].size > 0)
    expected = (
        "no_agent_beat_flat" if not voters
        else "beat_flat_on_validation" if gate.passed
        else "no_trades_on_validation" if raw["fill_bar"].size == 0
        else "did_not_beat_flat_on_validation"
    )  # fmt: skip
    assert gate.reason == expected
    assert raw["position"][-1] == 0.0  # closed at the end, costs charged


def test_no_agent_beats_flat_when_costs_are_prohibitive(candles: Candles) -> None:
    dear = ExecutionSettings(fee_bps=500.0, market="margin")
    result = train(candles, SMALL, execution=dear)
    assert not result.model.weights.any()
    assert result.model.gate is not None
    assert result.model.gate.passed is False
    assert result.model.gate.reason == "no_agent_beat_flat"
    sig = result.model.signals(candles)
    assert np.all(sig.consensus[sig.decision_rows] == 0.0)  # no voter: flat


def test_per_regime_consensus_has_a_weight_set_per_regime(candles: Candles) -> None:
    config = TrainConfig(**{**{f: getattr(SMALL, f) for f in SMALL.__struct_fields__},
                            "regime_consensus": True})  # fmt: skip
    result = train(candles, config, execution=MARGIN)
    weights = result.model.weights
    assert weights.shape == (5, 10)
    assert np.all(weights >= 0)
    info = result.checkpoint.config["validation"]["selection"]["regimes"]
    assert [r["regime"] for r in info] == ["trend_up", "trend_down", "range", "high_volatility"]
    for k, r in enumerate(info):
        if r["decisions"] < MIN_REGIME_DECISIONS:
            np.testing.assert_array_equal(weights[1 + k], weights[0])  # too few: global weights
    rebuilt = SwarmModel.from_checkpoint(result.checkpoint)
    np.testing.assert_array_equal(rebuilt.signals(candles).consensus,
                                  result.model.signals(candles).consensus)  # fmt: skip


def test_training_reads_nothing_after_its_window(candles: Candles) -> None:
    """Selection and the gate use held-back bars of the training window only: a model trained
    on the first 5,000 bars is the same whatever follows them."""
    head = train(candles.slice(0, 5_000), SMALL, execution=MARGIN)
    state = compute_market_state(candles, SMALL.features)
    assert state.valid[4_999]
    again = train(candles.slice(0, 5_000), SMALL, execution=MARGIN)
    assert head.checkpoint == again.checkpoint
    decide = decision_bars(candles.ts[:5_000], 60, "15m")
    assert head.checkpoint.config["validation"]["gate"]["stop_ts"] == int(candles.ts[4_999])
    assert decide.sum() > 30


def test_too_few_decision_bars_is_a_clear_error(candles: Candles) -> None:
    config = TrainConfig(**{**{f: getattr(SMALL, f) for f in SMALL.__struct_fields__},
                            "decision": DecisionConfig(interval="1d")})  # fmt: skip
    with pytest.raises(ValueError, match="decision bars"):
        train(candles, config)
