"""Training end to end on real candles: determinism, checkpoint round trip, CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from colmena import checkpoint as checkpoints
from colmena.cli import main
from colmena.data import Candles, load_ohlcv
from colmena.evolution import EvolutionConfig
from colmena.state import FeatureSpec
from colmena.swarm import SwarmModel
from colmena.training import TrainConfig, train
from colmena.vae import VAEConfig

pytest.importorskip("torch")

BTC_2023 = "binanceus_btcusdt_1m_2023-03-01_2023-03-21.csv"
SMALL = TrainConfig(
    seed=7,
    features=FeatureSpec(ffd_window=64, state_bars=8),
    vae=VAEConfig(hidden=(32,), latent_dim=4, epochs=2, max_samples_per_epoch=2_000),
    evolution=EvolutionConfig(
        agents=10, hidden=(8,), generations=3, eval_bars=1_500, elite=2, finetune_steps=1
    ),
)


@pytest.fixture(scope="module")
def candles(shared_data_dir: Path) -> Candles:
    full = load_ohlcv(shared_data_dir / BTC_2023)
    return full.slice(0, 6_000)


@pytest.fixture(scope="module")
def trained(candles: Candles):  # type: ignore[no-untyped-def]
    return train(candles, SMALL)


def test_training_is_deterministic_under_a_seed(candles: Candles, trained) -> None:  # type: ignore[no-untyped-def]
    again = train(candles, SMALL)
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
    assert np.all(np.abs(a.consensus) <= 1.0)
    assert np.all(a.agent_signals[:, ~a.valid] == 0)


def test_core_encoder_equals_the_trained_torch_encoder(trained, candles: Candles) -> None:  # type: ignore[no-untyped-def]
    import torch

    from colmena.state import compute_market_state

    state = compute_market_state(candles, SMALL.features)
    x = state.windows(trained.model.normalization)[state.valid][:500]
    module = trained.vae.module
    with torch.no_grad():
        expected = module.mu(module.encoder(torch.from_numpy(x))).numpy()
    np.testing.assert_allclose(trained.model.encoder.encode(x), expected, atol=1e-5)


def test_train_cli_writes_a_checkpoint(shared_data_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "head.parquet"
    import pyarrow.parquet as pq

    pq.write_table(load_ohlcv(shared_data_dir / BTC_2023).slice(0, 4_000).to_arrow(), data)
    out = tmp_path / "ckpt"
    args = ["train", str(data), "--out", str(out), "--agents", "6", "--generations", "2"]
    args += ["--eval-bars", "1000", "--vae-epochs", "1", "--seed", "3"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    loaded = checkpoints.load_latest(out)
    assert loaded.generation == 2
    assert loaded.tensors["fitness"].shape == (6,)


def test_train_cli_rejects_bad_data(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("open_time,open,high,low,close,volume\n2023-03-01 00:00:00+00:00,1,1,1,nan,1\n")
    out = tmp_path / "ckpt"
    result = CliRunner().invoke(main, ["train", str(bad), "--out", str(out)])
    assert result.exit_code != 0
    assert "bad.csv" in result.output
    assert not out.exists()
