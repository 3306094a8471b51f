"""Training: the VAE on market states, then the genetic evolution of the swarm on its latent.

``train(candles, config)`` is what ``colmena train`` runs. Given the same candles, the same
configuration and the same seed it produces the same checkpoint, bit for bit, on the same machine
and thread count (torch is seeded, every random draw of the evolution comes from one
``numpy.random.Generator(seed)``, and the core's forward passes have a fixed summation order).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import msgspec
import numpy as np
from numpy.typing import NDArray

from colmena.checkpoint import Checkpoint, library_versions
from colmena.data import Candles
from colmena.evolution import (
    EvolutionConfig,
    GenerationStats,
    Population,
    behavioural_entropy,
    finetune_adam,
    fitness_scores,
)
from colmena.state import FEATURE_NAMES, FeatureSpec, Normalization, compute_market_state
from colmena.swarm import SwarmModel
from colmena.vae import TrainedVAE, VAEConfig, encoder_tensors, train_vae

__all__ = ["TrainConfig", "TrainResult", "market_targets", "train"]

SECONDS_PER_YEAR = 365.0 * 24.0 * 3600.0


class TrainConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Everything that determines a training run (stored in the checkpoint)."""

    seed: int = 0
    features: FeatureSpec = msgspec.field(default_factory=FeatureSpec)
    vae: VAEConfig = msgspec.field(default_factory=VAEConfig)
    evolution: EvolutionConfig = msgspec.field(default_factory=EvolutionConfig)


@dataclass(frozen=True)
class TrainResult:
    """A finished training run: the model, its checkpoint and the records behind it."""

    model: SwarmModel
    checkpoint: Checkpoint
    population: Population
    vae: TrainedVAE


def market_targets(
    candles: Candles, valid: NDArray[np.bool_], max_gap_bars: int
) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """Next-bar log returns and where a position may be held, for the fitness.

    Returns
    -------
    next_returns : numpy.ndarray of float64, shape [n_bars]
        ``log(close[t + 1] / close[t])``; 0 on the last bar.
    tradable : numpy.ndarray of bool, shape [n_bars]
        ``valid[t]``, not the last bar, and no gap of more than ``max_gap_bars`` bars between
        ``t`` and ``t + 1``.
    """
    close = np.asarray(candles.close, dtype=np.float64)
    next_returns = np.zeros(close.size)
    next_returns[:-1] = np.diff(np.log(close))
    tradable = valid.copy()
    tradable[-1] = False
    gaps = candles.gaps
    large = gaps.rows[gaps.missing_per_gap > max_gap_bars]
    tradable[large - 1] = False
    return next_returns, tradable


def train(
    candles: Candles,
    config: TrainConfig | None = None,
    *,
    on_vae_epoch: Callable[[int, dict[str, float]], None] | None = None,
    on_generation: Callable[[GenerationStats], None] | None = None,
) -> TrainResult:
    """Train the VAE and evolve the swarm on ``candles``.

    Steps: market state (:mod:`colmena.state`), normalization fitted on these candles only, beta-VAE
    on the valid state windows (:mod:`colmena.vae`), latent of every bar through the core encoder,
    then ``config.evolution.generations`` generations: score every agent on a fresh random window
    of ``eval_bars`` bars (:func:`colmena.evolution.fitness_scores`), record best / median fitness
    and entropy, optionally fine-tune with Adam, and breed the next generation (not after the
    last). The consensus weights are the final fitness.

    Parameters
    ----------
    candles : Candles
        Training candles only (a walk-forward caller passes the in-sample part).
    config : TrainConfig, optional
    on_vae_epoch, on_generation : callable, optional
        Progress callbacks.

    Returns
    -------
    TrainResult

    Raises
    ------
    ValueError
        If the candles are too short for the feature warm-up, or leave fewer than
        ``2 * state_bars`` valid bars.
    """
    from colmena.nn import Swarm

    config = config or TrainConfig()
    evo = config.evolution
    spec = config.features
    state = compute_market_state(candles, spec)
    valid = state.valid
    n_valid = int(valid.sum())
    if n_valid < max(20, 2 * spec.state_bars):
        raise ValueError(
            f"{candles.source}: only {n_valid} of {len(candles)} bars have a complete, gap-free "
            "market state; training needs more data"
        )
    normalization = Normalization.fit(state.features, valid)
    windows = state.windows(normalization)
    vae = train_vae(windows[valid], config.vae, seed=config.seed, on_epoch=on_vae_epoch)
    encoder = vae.encoder()
    model_inputs = np.ascontiguousarray(
        np.concatenate([encoder.encode(windows), state.current(normalization)], axis=1),
        dtype=np.float32,
    )
    next_returns, tradable = market_targets(candles, valid, spec.max_gap_bars)
    interval = candles.interval_seconds or 60.0
    bars_per_year = SECONDS_PER_YEAR / interval

    rng = np.random.default_rng(config.seed)
    population = Population.initial(model_inputs.shape[1], evo, rng)
    swarm = Swarm(population.layers, activation=evo.activation)
    n_bars = len(candles)
    window = min(evo.eval_bars, n_bars)
    for g in range(evo.generations):
        start = int(rng.integers(0, n_bars - window + 1))
        stop = start + window
        x = model_inputs[start:stop]

        def score(
            swarm_signals: NDArray[np.float32], a: int = start, b: int = stop
        ) -> NDArray[np.float64]:
            return fitness_scores(
                swarm_signals,
                next_returns[a:b],
                tradable[a:b],
                fee_bps=evo.fee_bps,
                turnover_penalty=evo.turnover_penalty,
                bars_per_year=bars_per_year,
            )

        signals = swarm.forward(x)
        fitness = score(signals)
        if evo.finetune_steps > 0:
            finetune_adam(
                population, x, next_returns[start:stop], tradable[start:stop], evo, bars_per_year
            )
            swarm.set_weights(population.layers)
            signals = swarm.forward(x)
            fitness = score(signals)
        population.record_fitness(fitness)
        stats = GenerationStats(
            generation=g + 1,
            best_fitness=float(np.max(fitness)),
            median_fitness=float(np.median(fitness)),
            entropy=behavioural_entropy(signals[:, tradable[start:stop]]),
            window_start=start,
            window_stop=stop,
        )
        population.history.append(stats)
        if on_generation is not None:
            on_generation(stats)
        if g + 1 < evo.generations:
            population.reproduce(evo, rng)
            swarm.set_weights(population.layers)

    model = SwarmModel(
        feature_spec=spec,
        normalization=normalization,
        encoder=encoder,
        swarm=swarm,
        weights=population.fitness.copy(),
    )
    tensors: dict[str, NDArray[np.generic]] = {}
    tensors.update(population.swarm_tensors())
    if population.adam is not None:
        tensors.update(population.adam.tensors())
    tensors["fitness"] = population.fitness.astype(np.float64)
    tensors["agent_ids"] = population.ids.astype(np.int64)
    tensors.update(encoder_tensors(vae))
    tensors["normalization/mean"] = normalization.mean.astype(np.float64)
    tensors["normalization/std"] = normalization.std.astype(np.float64)
    history = population.history
    tensors["history/entropy"] = np.array([h.entropy for h in history], dtype=np.float64)
    tensors["history/best_fitness"] = np.array([h.best_fitness for h in history])
    tensors["history/median_fitness"] = np.array([h.median_fitness for h in history])
    digest = hashlib.sha256()
    for column in (
        candles.ts,
        candles.open,
        candles.high,
        candles.low,
        candles.close,
        candles.volume,
    ):
        digest.update(np.ascontiguousarray(column).tobytes())
    checkpoint = Checkpoint(
        generation=len(history),
        epoch=vae.epochs_run,
        tensors=tensors,
        lineage=tuple(population.lineage),
        config={
            "train": msgspec.to_builtins(config),
            "feature_names": list(FEATURE_NAMES),
            "n_inputs": int(model_inputs.shape[1]),
            "data": {
                "source": str(candles.source),
                "rows": len(candles),
                "first_ts": int(candles.ts[0]),
                "last_ts": int(candles.ts[-1]),
                "candles_sha256": digest.hexdigest(),
            },
            "vae": {"best_epoch": vae.best_epoch, "history": vae.history},
        },
        versions=library_versions(),
    )
    return TrainResult(model=model, checkpoint=checkpoint, population=population, vae=vae)
