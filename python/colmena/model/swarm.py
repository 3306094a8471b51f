"""The trained swarm as one inference pipeline: candles -> market state -> VAE latent -> agents
-> consensus.

Everything numeric runs in the compiled core (FracDiff, the VAE encoder, the batched agent
forward pass, the fixed-order consensus); this module only wires the stages. The same object
serves the backtest (a whole series at once, batched over time) and live use (one new state per
candle).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from colmena import _core
from colmena.data.ohlcv import Candles
from colmena.features.market_state import (
    FeatureSpec,
    MarketState,
    Normalization,
    compute_market_state,
)
from colmena.features.regime import REGIME_NAMES, RegimeClassifier
from colmena.model.decision import DecisionConfig, decision_bars

__all__ = ["GateResult", "SwarmModel", "SwarmSignals", "consensus"]


def consensus(
    signals: NDArray[np.float32],
    weights: NDArray[np.float64],
    weight_set: NDArray[np.int64] | None = None,
) -> NDArray[np.float64]:
    """Weighted mean of agent signals: ``sum(w_i * s_i) / sum(|w_i|)``, in a fixed order.

    The sum runs over agents in index order in float64 for every bar, whatever the number of
    bars, so one state (live) and the same state inside a series (backtest) give the same value
    bit for bit, and appending bars never changes an earlier one. The trained swarm's weights
    are non-negative (only agents that beat flat on validation vote); with all weights zero the
    consensus is 0 (no position).

    Parameters
    ----------
    signals : numpy.ndarray, shape [n_agents] or [n_agents, n_bars]
        Agent signals in [-1, 1] (converted to float32).
    weights : numpy.ndarray of float64, shape [n_agents] or [n_sets, n_agents]
        Finite weights; several sets (e.g. one per market regime) are chosen per bar by
        ``weight_set``.
    weight_set : numpy.ndarray of int64, shape [n_bars], optional
        Row of ``weights`` for each bar (default 0); -1 gives NaN (no signal).

    Returns
    -------
    numpy.ndarray of float64, shape [] or [n_bars]
        Consensus signal in [-1, 1].

    Raises
    ------
    ValueError
        On mismatched shapes, non-finite weights or a set index out of range.
    """
    s = np.asarray(signals, dtype=np.float32)
    w = np.asarray(weights, dtype=np.float64)
    w2 = w[None, :] if w.ndim == 1 else w
    if w2.ndim != 2 or s.ndim not in (1, 2) or s.shape[0] != w2.shape[1]:
        raise ValueError(f"weights {w.shape} do not match signals {s.shape} on the agent axis")
    if not np.all(np.isfinite(w2)):
        raise ValueError("consensus weights must be finite")
    columns = np.ascontiguousarray(s[:, None] if s.ndim == 1 else s)
    sets = None if weight_set is None else np.ascontiguousarray(weight_set, dtype=np.int64)
    out: NDArray[np.float64] = _core.consensus(columns, np.ascontiguousarray(w2), sets)
    return out.reshape(()) if s.ndim == 1 else out


@dataclass(frozen=True)
class GateResult:
    """The validation gate of a trained model: did the voted swarm beat flat on the gate bars?

    Attributes
    ----------
    passed : bool
        True when the model may trade.
    reason : str
        ``beat_flat_on_validation``, ``no_agent_beat_flat``, ``no_trades_on_validation``,
        ``did_not_beat_flat_on_validation``, or ``gate_disabled (...)``.
    start_ts, stop_ts : int
        First and last gate bar (open time, ns since the epoch UTC).
    net_return : float
        The swarm's net return on the gate bars through the full engine (fraction).
    buy_and_hold_return : float
        Close-to-close price change over the same bars, for context (fraction).
    n_fills, n_trades : int
        Fills and closed round trips on the gate bars.
    time_in_market : float
        Share of gate bars holding a position.
    """

    passed: bool
    reason: str
    start_ts: int
    stop_ts: int
    net_return: float
    buy_and_hold_return: float
    n_fills: int
    n_trades: int
    time_in_market: float

    def to_dict(self) -> dict[str, Any]:
        """JSON form (checkpoints, report.json)."""
        return dict(vars(self))

    @classmethod
    def from_dict(cls, data: Any) -> GateResult:
        """Inverse of :meth:`to_dict`.

        Raises
        ------
        ValueError
            If a field is missing or has the wrong type.
        """
        try:
            return cls(
                passed=bool(data["passed"]),
                reason=str(data["reason"]),
                start_ts=int(data["start_ts"]),
                stop_ts=int(data["stop_ts"]),
                net_return=float(data["net_return"]),
                buy_and_hold_return=float(data["buy_and_hold_return"]),
                n_fills=int(data["n_fills"]),
                n_trades=int(data["n_trades"]),
                time_in_market=float(data["time_in_market"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"invalid gate record: {exc}") from exc


@dataclass(frozen=True)
class SwarmSignals:
    """Output of :meth:`SwarmModel.signals` for a candle series.

    The agents only act at decision bars, so their networks run only there.

    Attributes
    ----------
    decision_rows : numpy.ndarray of int64, shape [n_decisions]
        Decision bars with a complete market state, increasing.
    agent_signals : numpy.ndarray of float32, shape [n_agents, n_decisions]
        Each agent's signal at the close of each of ``decision_rows``.
    consensus : numpy.ndarray of float64, shape [n_bars]
        The voters' consensus at the decision bars with a valid state, NaN at every other bar.
    valid : numpy.ndarray of bool, shape [n_bars]
        Bars with a complete, gap-free market state.
    decision : numpy.ndarray of bool, shape [n_bars]
        Decision bars at the model's decision interval, valid or not (an invalid one decides
        nothing: the backtest records it as ``no_signal``).
    regime : numpy.ndarray of int64, shape [n_bars]
        Market regime in force at each bar: the regime measured at the last decision bar with a
        valid state up to it (-1 before the first, or without a full regime look-back); codes
        index :data:`colmena.regime.REGIME_NAMES`.
    state : MarketState
    """

    decision_rows: NDArray[np.int64]
    agent_signals: NDArray[np.float32]
    consensus: NDArray[np.float64]
    valid: NDArray[np.bool_]
    decision: NDArray[np.bool_]
    regime: NDArray[np.int64]
    state: MarketState


@dataclass(frozen=True)
class SwarmModel:
    """A trained swarm ready for inference (built by training, or from a training state with
    :meth:`colmena.training.TrainingState.to_model`).

    Attributes
    ----------
    feature_spec : FeatureSpec
    normalization : Normalization
    encoder : colmena.VAEEncoder
        Core VAE encoder; its ``mu`` is the latent state.
    swarm : colmena.Swarm
        Core swarm of agent MLPs; inputs are ``[latent, standardized current features]``.
    weights : numpy.ndarray of float64, shape [n_sets, n_agents]
        Consensus weights, non-negative: one row for all bars, or (per-regime consensus) row 0
        global and row ``1 + k`` for regime ``k``.
    decision : DecisionConfig
        When the model decides.
    regime : RegimeClassifier
        The market-regime classifier fitted on the training bars.
    gate : GateResult or None
        The validation gate (None before it ran).

    Raises
    ------
    ValueError
        On construction, if ``weights`` is not [1 or 1 + number of regimes, n_agents] or holds a
        negative or non-finite value (checked once, so the consensus need not check again).
    """

    feature_spec: FeatureSpec
    normalization: Normalization
    encoder: Any
    swarm: Any
    weights: NDArray[np.float64]
    decision: DecisionConfig
    regime: RegimeClassifier
    gate: GateResult | None = None

    def __post_init__(self) -> None:
        weights = np.ascontiguousarray(self.weights, dtype=np.float64)
        if (
            weights.ndim != 2
            or weights.shape[1] != self.n_agents
            or weights.shape[0]
            not in (
                1,
                1 + len(REGIME_NAMES),
            )
        ):
            raise ValueError(
                f"consensus weights have shape {weights.shape}; expected [1 or "
                f"{1 + len(REGIME_NAMES)}, {self.n_agents}]"
            )
        if not np.all(np.isfinite(weights)) or np.any(weights < 0):
            raise ValueError("consensus weights must be finite and non-negative")
        object.__setattr__(self, "weights", weights)

    @property
    def n_agents(self) -> int:
        return int(self.swarm.n_agents)

    @property
    def lookback_bars(self) -> int:
        """Bars of history a decision needs: the market state's and the regime's look-back."""
        return max(self.feature_spec.lookback_bars, self.regime.config.lookback_bars + 1)

    @property
    def per_regime(self) -> bool:
        """True when the consensus has one weight set per regime."""
        return int(self.weights.shape[0]) > 1

    def with_gate(self, gate: GateResult) -> SwarmModel:
        """The same model with its gate result."""
        return replace(self, gate=gate)

    def consensus_of(
        self, agent_signals: NDArray[np.float32], regimes: NDArray[np.int64]
    ) -> NDArray[np.float64]:
        """Consensus of agent signals [n_agents, n_bars] given the regime in force at each bar
        [n_bars] (the global weights where it is unknown or the consensus is global)."""
        signals = np.ascontiguousarray(agent_signals, dtype=np.float32)
        if signals.ndim != 2 or signals.shape[0] != self.weights.shape[1]:
            raise ValueError(
                f"agent signals {signals.shape} do not match the {self.weights.shape[1]} agents"
            )
        sets = None
        if self.per_regime:
            sets = np.where(np.asarray(regimes) >= 0, np.asarray(regimes) + 1, 0).astype(np.int64)
        # the weights were checked once, in __post_init__: the core's fixed-order sum directly
        out: NDArray[np.float64] = _core.consensus(signals, self.weights, sets)
        return out

    def agent_inputs(
        self, state: MarketState, rows: NDArray[np.int64] | None = None
    ) -> NDArray[np.float32]:
        """Agent inputs, float32 [n_rows, latent_dim + n_features], at ``rows`` (all bars by
        default): the VAE latent of the state window and the standardized current features."""
        latent = self.encoder.encode(state.windows(self.normalization, rows))
        return np.ascontiguousarray(
            np.concatenate([latent, state.current(self.normalization, rows)], axis=1),
            dtype=np.float32,
        )

    def signals(self, candles: Candles) -> SwarmSignals:
        """Agent signals and consensus at the close of every decision bar of ``candles``.

        Each value at bar ``t`` depends only on candles up to ``t``; appending candles never
        changes an earlier value, not even in the last bit.
        """
        state = compute_market_state(candles, self.feature_spec)
        bar_seconds = float(candles.interval_seconds or 60.0)
        decide = decision_bars(candles.ts, bar_seconds, self.decision.interval)
        rows = np.flatnonzero(decide & state.valid).astype(np.int64)
        n_agents = self.n_agents
        agent = (
            self.swarm.forward(self.agent_inputs(state, rows))
            if rows.size
            else np.zeros((n_agents, 0), dtype=np.float32)
        )
        at_decisions = self.regime.classify(candles.close, rows)
        in_force = np.full(len(candles), -1, dtype=np.int64)
        if rows.size:
            last = np.searchsorted(rows, np.arange(len(candles)), side="right") - 1
            has = last >= 0
            in_force[has] = at_decisions[last[has]]
        consensus = np.full(len(candles), np.nan)
        if rows.size:
            consensus[rows] = self.consensus_of(agent, at_decisions)
        return SwarmSignals(
            decision_rows=rows,
            agent_signals=agent,
            consensus=consensus,
            valid=state.valid,
            decision=decide,
            regime=in_force,
            state=state,
        )
