"""Small building blocks the test files share (imported with the tests folder on sys.path)."""

from __future__ import annotations

from typing import Any

import msgspec
import numpy as np

from colmena.features.market_state import FeatureSpec
from colmena.features.regime import RegimeConfig
from colmena.model.decision import DecisionConfig
from colmena.model.vae import VAEConfig
from colmena.persistence import checkpoint as checkpoints
from colmena.training.evolution import EvolutionConfig
from colmena.training.trainer import TrainConfig


def tiny_training(
    *, seed: int = 1, interval: str = "15m", eval_days: float = 2.0, **changes: Any
) -> TrainConfig:
    """A TrainConfig that trains in about a second: 8 agents of 8 units, 2 generations, a
    one-epoch VAE, a 60-bar regime look-back; ``changes`` replace any other field."""
    config = TrainConfig(
        seed=seed,
        features=FeatureSpec(ffd_window=64, state_bars=8),
        vae=VAEConfig(hidden=(16,), latent_dim=4, epochs=1, max_samples_per_epoch=2_000),
        evolution=EvolutionConfig(
            agents=8, hidden=(8,), generations=2, eval_days=eval_days, elite=2
        ),
        decision=DecisionConfig(interval=interval),
        regime=RegimeConfig(lookback_bars=60),
    )
    return msgspec.structs.replace(config, **changes)


def every_agent_votes(
    ckpt: checkpoints.Checkpoint, config: dict[str, Any] | None = None
) -> checkpoints.Checkpoint:
    """The checkpoint with every agent voting with weight 1 (whatever its selection found), so
    that accounting tests have trades to check; ``config`` replaces the checkpoint's config."""
    tensors = dict(ckpt.tensors)
    tensors["consensus/weights"] = np.ones_like(tensors["consensus/weights"])
    return checkpoints.Checkpoint(
        generation=ckpt.generation, epoch=ckpt.epoch, tensors=tensors, lineage=ckpt.lineage,
        config=ckpt.config if config is None else config, versions=ckpt.versions,
    )  # fmt: skip
