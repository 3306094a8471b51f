"""Training end to end on real candles: determinism, the typed state and its checkpoint round
trip, resume (bit for bit equal to an uninterrupted run), CLI."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import msgspec
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
from colmena.model.vae import VAEConfig
from colmena.persistence import checkpoint as checkpoints
from colmena.risk import RiskConfig
from colmena.training.evolution import EvolutionConfig, daily_sharpe
from colmena.training.state import TrainingState
from colmena.training.trainer import MIN_REGIME_DECISIONS, ResumeError, TrainConfig, train

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
    assert again.state == trained.state


def test_the_state_holds_the_run(trained, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    state = trained.state
    state.validate()
    assert state.finished
    assert state.generation == 3
    assert state.layers[0][0].shape == (10, 4 + 4, 8)
    assert [h.generation for h in state.history] == [1, 2, 3]
    assert all(0 <= h.window_start < h.window_stop <= state.data.rows for h in state.history)
    assert state.adam is not None
    assert state.adam.step.dtype == np.int64
    assert np.all(state.adam.step > 0)  # elites carry their steps, children start at 0
    assert len(state.lineage) == 10 + 2 * 8
    assert np.all(np.isfinite(state.fitness))
    assert state.vae.epochs_run == len(state.vae.history) == 2
    assert state.execution == MARGIN
    path = checkpoints.save(tmp_path, state)
    loaded = checkpoints.load_latest(tmp_path)
    assert loaded == state
    checkpoints.save(tmp_path, loaded)
    assert checkpoints.load_latest(tmp_path) == state
    assert path.exists()


def test_model_from_the_state_gives_the_same_signals(
    trained, candles: Candles, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    rebuilt = checkpoints.load(checkpoints.save(tmp_path, trained.state)).to_model()
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
    # one checkpoint per generation, then the finished run
    assert [p.name for p in checkpoints.list_checkpoints(out)] == [
        "checkpoint-00000001-gen000001.safetensors",
        "checkpoint-00000002-gen000002.safetensors",
        "checkpoint-00000003-gen000002.safetensors",
    ]
    loaded = checkpoints.load_latest(out)
    assert loaded.finished
    assert loaded.generation == 2
    assert loaded.fitness.shape == (6,)
    assert loaded.config.decision.interval == "15m"
    assert loaded.validation is not None
    assert loaded.validation.gate.reason
    assert loaded.data.source == str(data)


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
    validation = trained.state.validation
    assert validation.selection.voters == int(beats.sum())
    np.testing.assert_array_equal(trained.state.consensus_weights, weights)


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
    info = result.state.validation.selection.regimes
    assert [r.regime for r in info] == ["trend_up", "trend_down", "range", "high_volatility"]
    for k, r in enumerate(info):
        if r.decisions < MIN_REGIME_DECISIONS:
            np.testing.assert_array_equal(weights[1 + k], weights[0])  # too few: global weights
    rebuilt = result.state.to_model()
    np.testing.assert_array_equal(rebuilt.signals(candles).consensus,
                                  result.model.signals(candles).consensus)  # fmt: skip


def test_training_reads_nothing_after_its_window(candles: Candles) -> None:
    """Selection and the gate use held-back bars of the training window only: a model trained
    on the first 5,000 bars is the same whatever follows them."""
    head = train(candles.slice(0, 5_000), SMALL, execution=MARGIN)
    state = compute_market_state(candles, SMALL.features)
    assert state.valid[4_999]
    again = train(candles.slice(0, 5_000), SMALL, execution=MARGIN)
    assert head.state == again.state
    decide = decision_bars(candles.ts[:5_000], 60, "15m")
    assert head.state.validation.gate.stop_ts == int(candles.ts[4_999])
    assert decide.sum() > 30


def test_too_few_decision_bars_is_a_clear_error(candles: Candles) -> None:
    config = TrainConfig(**{**{f: getattr(SMALL, f) for f in SMALL.__struct_fields__},
                            "decision": DecisionConfig(interval="1d")})  # fmt: skip
    with pytest.raises(ValueError, match="decision bars"):
        train(candles, config)


# ------------------------------------------------------------------ resume


class SimulatedKill(Exception):  # noqa: N818 (not an error: a stand-in for SIGKILL)
    """Stands for a killed process in the tests below."""


def train_until(candles: Candles, generation: int, folder: Path) -> TrainingState:
    """Run SMALL, checkpointing every generation into ``folder`` as ``colmena train`` does, and
    die right after the checkpoint of ``generation``; return that state read back from disk."""

    def save_then_maybe_die(state: TrainingState) -> None:
        checkpoints.save(folder, state)
        if state.generation == generation:
            raise SimulatedKill

    with pytest.raises(SimulatedKill):
        train(candles, SMALL, execution=MARGIN, on_generation=save_then_maybe_die)
    names = [p.name for p in checkpoints.list_checkpoints(folder)]
    assert names == [f"checkpoint-{g:08d}-gen{g:06d}.safetensors" for g in range(1, generation + 1)]
    return checkpoints.load_latest(folder)


def assert_identical(resumed: TrainingState, straight: TrainingState) -> None:
    """The same state in every field, bit for bit (named for a readable failure)."""
    assert resumed.differences(straight) == []
    for (w, b), (w0, b0) in zip(resumed.layers, straight.layers, strict=True):
        assert w.tobytes() == w0.tobytes()
        assert b.tobytes() == b0.tobytes()
    assert resumed.adam is not None
    assert straight.adam is not None
    np.testing.assert_array_equal(resumed.adam.step, straight.adam.step)
    for moment in ("exp_avg", "exp_avg_sq"):
        for (m, mb), (m0, mb0) in zip(
            getattr(resumed.adam, moment), getattr(straight.adam, moment), strict=True
        ):
            assert m.tobytes() == m0.tobytes()
            assert mb.tobytes() == mb0.tobytes()
    assert resumed.lineage == straight.lineage
    assert resumed.history == straight.history
    assert resumed.rng == straight.rng
    assert resumed.agent_ids.tobytes() == straight.agent_ids.tobytes()
    assert resumed.fitness.tobytes() == straight.fitness.tobytes()
    assert resumed.validation == straight.validation
    assert resumed == straight


def test_a_killed_run_resumed_from_its_checkpoint_equals_the_uninterrupted_run(
    candles: Candles, trained, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """N = 3 generations straight (the fixture) against K = 1, killed, then resumed from the
    checkpoint on disk to N: identical final states (weights, Adam moments, lineage, history,
    generator, selection and gate), identical checkpoint files, identical signals."""
    state = train_until(candles, 1, tmp_path / "run")
    assert (state.generation, state.finished) == (1, False)
    assert state.adam is not None
    resumed = train(candles, resume=state)  # settings, costs and risk come from the state
    assert resumed.vae.module is None  # the VAE was not trained again
    assert_identical(resumed.state, trained.state)
    a = checkpoints.save(tmp_path / "a", resumed.state).read_bytes()
    assert a == checkpoints.save(tmp_path / "b", trained.state).read_bytes()
    np.testing.assert_array_equal(
        resumed.model.signals(candles).consensus, trained.model.signals(candles).consensus
    )


def test_a_finished_run_extended_by_more_generations_equals_the_longer_run(
    candles: Candles, trained, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    shorter = msgspec.structs.replace(
        SMALL, evolution=msgspec.structs.replace(SMALL.evolution, generations=2)
    )
    first = train(candles, shorter, execution=MARGIN)
    assert first.state.finished
    on_disk = checkpoints.load(checkpoints.save(tmp_path, first.state))
    seen: list[int] = []
    extended = train(
        candles, SMALL, execution=MARGIN, resume=on_disk,
        on_generation=lambda s: seen.append(s.generation),
    )  # fmt: skip
    assert seen == [3]
    assert_identical(extended.state, trained.state)


def test_resume_with_other_data_or_settings_is_refused_naming_the_field(
    candles: Candles, tmp_path: Path
) -> None:
    state = train_until(candles, 1, tmp_path / "run")
    evolution = SMALL.evolution
    refused = {
        r"data: the checkpoint was trained on 30240 candles .* these are 30000": (
            candles.slice(0, 30_000), SMALL, MARGIN),
        r"config\.evolution\.agents: the checkpoint has 10, this run 12": (
            candles, msgspec.structs.replace(
                SMALL, evolution=msgspec.structs.replace(evolution, agents=12)), MARGIN),
        r"config\.seed: the checkpoint has 8, this run 9": (
            candles, msgspec.structs.replace(SMALL, seed=9), MARGIN),
        r"execution\.fee_bps: the checkpoint has 10\.0, this run 20\.0": (
            candles, SMALL, msgspec.structs.replace(MARGIN, fee_bps=20.0)),
        r"config\.evolution\.generations: the checkpoint has already evolved 3 generations": (
            candles, msgspec.structs.replace(
                SMALL, evolution=msgspec.structs.replace(evolution, generations=2)), MARGIN),
    }  # fmt: skip
    finished = train(candles, resume=state).state
    for message, (data, config, execution) in refused.items():
        resume = finished if "generations" in message else state
        with pytest.raises(ResumeError, match=message):
            train(data, config, execution=execution, resume=resume)
    with pytest.raises(ResumeError, match="feature_names"):
        train(candles, resume=dataclasses.replace(state, feature_names=("a", "b", "c", "d")))


def test_train_cli_checkpoints_every_generation_and_resumes_a_killed_run(
    shared_data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`colmena train` saves a checkpoint after generation 1 of a 3-generation run (the process
    dies right after that save); `colmena train --resume` finishes it, equal to a run that was
    never interrupted. A resume on other data or with another option is refused."""
    import pyarrow.parquet as pq

    data = tmp_path / "head.parquet"
    candles = load_ohlcv(shared_data_dir / BTC_2023)
    pq.write_table(candles.slice(0, 6_000).to_arrow(), data)
    options = ["--agents", "6", "--generations", "3", "--eval-days", "1", "--vae-epochs", "1",
               "--seed", "3", "--decision-interval", "15m", "--finetune-steps", "1"]  # fmt: skip
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    result = CliRunner().invoke(main, ["train", str(data), "--out", str(straight), *options])
    assert result.exit_code == 0, result.output

    real_save = checkpoints.save

    def save_then_die(directory: Path, state: TrainingState, **kwargs: object) -> Path:
        path = real_save(directory, state, **kwargs)  # type: ignore[arg-type]
        raise SimulatedKill(path)

    monkeypatch.setattr(checkpoints, "save", save_then_die)
    result = CliRunner().invoke(main, ["train", str(data), "--out", str(killed), *options])
    monkeypatch.undo()
    assert isinstance(result.exception, SimulatedKill)
    files = checkpoints.list_checkpoints(killed)
    assert [p.name for p in files] == ["checkpoint-00000001-gen000001.safetensors"]
    first = checkpoints.load(files[0])
    assert (first.generation, first.finished, first.config.evolution.generations) == (1, False, 3)

    other = tmp_path / "other.parquet"
    pq.write_table(candles.slice(1, 6_001).to_arrow(), other)
    for args, message in (
        ([str(other), "--resume", str(killed)], "data: the checkpoint was trained on"),
        ([str(data), "--resume", str(killed), "--agents", "7"], "config.evolution.agents"),
    ):
        result = CliRunner().invoke(main, ["train", *args, "--out", str(killed)])
        assert result.exit_code != 0
        assert message in result.output
        assert len(checkpoints.list_checkpoints(killed)) == 1  # nothing written

    # Options not given come from the checkpoint.
    result = CliRunner().invoke(main, ["train", str(data), "--out", str(killed), "--resume",
                                       str(killed)])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "resumed" in result.output
    names = [p.name for p in checkpoints.list_checkpoints(killed)]
    assert names[-1] == "checkpoint-00000004-gen000003.safetensors"
    last_straight = checkpoints.list_checkpoints(straight)[-1]
    last_resumed = checkpoints.list_checkpoints(killed)[-1]
    assert checkpoints.load(last_resumed) == checkpoints.load(last_straight)
    assert last_resumed.read_bytes() == last_straight.read_bytes()
