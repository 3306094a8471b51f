"""The trained swarm as one inference pipeline: candles -> market state -> VAE latent -> agents
-> consensus.

Everything numeric runs in the compiled core (FracDiff, the VAE encoder, the batched agent
forward pass); this module only wires the stages. The same object serves the backtest (a whole
series at once, batched over time) and live use (one new state per candle).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec
import numpy as np
from numpy.typing import NDArray

from colmena.data import Candles
from colmena.state import FeatureSpec, MarketState, Normalization, compute_market_state

__all__ = ["SwarmModel", "SwarmSignals", "consensus"]


def consensus(signals: NDArray[np.float32], weights: NDArray[np.float64]) -> NDArray[np.float64]:
    """Fitness-weighted mean of agent signals: ``sum(w_i * s_i) / sum(|w_i|)``.

    An agent with negative fitness counts against its own signal. With all weights zero the
    consensus is 0 (no position).

    Parameters
    ----------
    signals : numpy.ndarray, shape [n_agents] or [n_agents, n_bars]
        Agent signals in [-1, 1].
    weights : numpy.ndarray of float64, shape [n_agents]
        Agent fitness (finite).

    Returns
    -------
    numpy.ndarray of float64, shape [] or [n_bars]
        Consensus signal in [-1, 1].

    Raises
    ------
    ValueError
        On mismatched shapes or non-finite weights.
    """
    s = np.asarray(signals)
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 1 or s.shape[0] != w.shape[0]:
        raise ValueError(f"weights {w.shape} do not match signals {s.shape} on the agent axis")
    if not np.all(np.isfinite(w)):
        raise ValueError("consensus weights (fitness) must be finite")
    total = np.abs(w).sum()
    if total == 0.0:
        return np.zeros(s.shape[1:], dtype=np.float64)
    if s.ndim == 1:
        return np.asarray(np.dot(w, s.astype(np.float64)) / total)
    # float64 accumulation, a block of bars at a time (no [n_agents, n_bars] float64 copy).
    out = np.empty(s.shape[1], dtype=np.float64)
    block = 1 << 15
    for start in range(0, s.shape[1], block):
        out[start : start + block] = w @ s[:, start : start + block].astype(np.float64)
    out /= total
    return out


@dataclass(frozen=True)
class SwarmSignals:
    """Output of :meth:`SwarmModel.signals` for a candle series.

    Attributes
    ----------
    agent_signals : numpy.ndarray of float32, shape [n_agents, n_bars]
        Each agent's signal at each bar's close (0 where the state is not valid).
    consensus : numpy.ndarray of float64, shape [n_bars]
        Fitness-weighted consensus (0 where the state is not valid).
    valid : numpy.ndarray of bool, shape [n_bars]
        Bars with a complete, gap-free market state.
    state : MarketState
    """

    agent_signals: NDArray[np.float32]
    consensus: NDArray[np.float64]
    valid: NDArray[np.bool_]
    state: MarketState


@dataclass(frozen=True)
class SwarmModel:
    """A trained swarm ready for inference (built by training or from a checkpoint).

    Attributes
    ----------
    feature_spec : FeatureSpec
    normalization : Normalization
    encoder : colmena.VAEEncoder
        Core VAE encoder; its ``mu`` is the latent state.
    swarm : colmena.Swarm
        Core swarm of agent MLPs; inputs are ``[latent, standardized current features]``.
    weights : numpy.ndarray of float64, shape [n_agents]
        Consensus weights (the agents' fitness).
    """

    feature_spec: FeatureSpec
    normalization: Normalization
    encoder: Any
    swarm: Any
    weights: NDArray[np.float64]

    @property
    def n_agents(self) -> int:
        return int(self.swarm.n_agents)

    def agent_inputs(self, state: MarketState) -> NDArray[np.float32]:
        """Agent inputs at every bar, float32 [n_bars, latent_dim + n_features]."""
        latent = self.encoder.encode(state.windows(self.normalization))
        return np.ascontiguousarray(
            np.concatenate([latent, state.current(self.normalization)], axis=1),
            dtype=np.float32,
        )

    def signals(self, candles: Candles) -> SwarmSignals:
        """Agent signals and consensus at the close of every bar of ``candles``.

        Each value at bar ``t`` depends only on candles up to ``t``.
        """
        state = compute_market_state(candles, self.feature_spec)
        agent = self.swarm.forward(self.agent_inputs(state))
        np.multiply(agent, state.valid[None, :], out=agent)  # 0 where the state is not valid
        return SwarmSignals(
            agent_signals=agent,
            consensus=consensus(agent, self.weights),
            valid=state.valid,
            state=state,
        )

    @classmethod
    def from_checkpoint(cls, checkpoint: Any) -> SwarmModel:
        """Rebuild the model from a :class:`colmena.checkpoint.Checkpoint` written by training.

        Raises
        ------
        ValueError
            If the checkpoint lacks the swarm, the VAE encoder or the feature specification.
        """
        from colmena.nn import Swarm, VAEEncoder

        tensors = checkpoint.tensors
        config = checkpoint.config

        def pairs(prefix: str) -> list[tuple[NDArray[np.float32], NDArray[np.float32]]]:
            out = []
            i = 0
            while f"{prefix}/layer{i}/weight" in tensors:
                out.append(
                    (tensors[f"{prefix}/layer{i}/weight"], tensors[f"{prefix}/layer{i}/bias"])
                )
                i += 1
            return out

        swarm_layers = pairs("swarm")
        encoder_layers = pairs("vae/encoder")
        if not swarm_layers or "vae/mu/weight" not in tensors:
            raise ValueError("checkpoint holds no trained swarm and VAE encoder")
        try:
            spec = msgspec.convert(config["train"]["features"], FeatureSpec)
            activation = config["train"]["evolution"]["activation"]
        except (KeyError, TypeError, msgspec.ValidationError) as exc:
            raise ValueError(
                f"checkpoint config lacks a valid feature specification: {exc}"
            ) from exc
        encoder = VAEEncoder(
            encoder_layers,
            (tensors["vae/mu/weight"], tensors["vae/mu/bias"]),
            (tensors["vae/logvar/weight"], tensors["vae/logvar/bias"]),
            activation="relu",
        )
        return cls(
            feature_spec=spec,
            normalization=Normalization(
                mean=np.asarray(tensors["normalization/mean"], dtype=np.float64),
                std=np.asarray(tensors["normalization/std"], dtype=np.float64),
            ),
            encoder=encoder,
            swarm=Swarm(swarm_layers, activation=activation),
            weights=np.asarray(tensors["fitness"], dtype=np.float64),
        )
