"""One candle in, one decision out: the live path of a trained swarm.

:class:`SwarmTrader` takes closed candles one at a time, as a live feed delivers them, and runs
every stage of the pipeline for that candle only:

1. the streaming market state (:class:`colmena.features.market_state_stream.MarketStateStream`,
   the per-window kernel that the batch :func:`colmena.features.compute_market_state` runs);
2. at a decision bar (the first close of each decision interval, :func:`decision_bars`) with a
   complete state: the VAE encoding of that one window, the swarm on that one state, the regime
   of the bar and the fixed-order consensus of the validated voters, all in the compiled core;
3. the trading loop (:class:`colmena.execution.TradingLoop`): the order decided at the previous
   close fills at this candle's open, the account is marked at its close, the risk manager
   observes and sizes the new signal into the order for the next candle.

Nothing here is written a second time: each stage is the object the batch backtest uses, and the
core's kernels give the same bits for one row as inside a series (state, VAE, swarm and consensus
are row-invariant by construction; the trading loop is the one ``run_backtest`` steps). So a
replay of a candle file through :meth:`SwarmTrader.on_candle` gives the batch backtest's
decisions, orders, fills and equity bit for bit; ``tests/test_live_replay.py`` checks it on every
real file.

Source of the pipeline: the design documents (seeds/001, "flujo de datos": candle -> buffer ->
FracDiff -> VAE -> swarm -> consensus -> RiskManager -> OrderExecutor).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from colmena.execution.simulation import ExecutionSettings
from colmena.execution.trading_loop import Action, Bar, StepResult, TradingLoop
from colmena.features.market_state_stream import CandleLike, MarketStateStream
from colmena.features.regime import UNKNOWN_REGIME
from colmena.model.decision import interval_seconds
from colmena.model.swarm import SwarmModel
from colmena.risk.config import RiskConfig
from colmena.units import NS_PER_SECOND

__all__ = ["CandleResult", "SignalResult", "SignalStage", "SwarmTrader"]


_NO_AGENTS = np.zeros(0, dtype=np.float32)
_NO_AGENTS.setflags(write=False)  # shared by every result without agent signals


@dataclass(frozen=True)
class SignalResult:
    """What the strategy made of one candle (:meth:`SignalStage.on_candle`).

    Attributes
    ----------
    bar : Bar
        The candle.
    valid : bool
        The market state at this candle is complete (warm-up done, no large gap).
    decision_bar : bool
        This candle closes a decision interval.
    regime : int
        The regime measured at this candle when it is a decision bar with a valid state (codes
        index :data:`colmena.features.REGIME_NAMES`), else -1.
    agent_signals : numpy.ndarray of float32, shape [n_agents] or [0]
        Every agent's signal in [-1, 1] at a decision bar with a valid state; empty otherwise.
    signal : float or None
        The voters' consensus in [-1, 1] handed to the risk manager; None when there is none
        (not a decision bar, an incomplete state, a gated model, or winding down).
    action : str
        What the trading loop is asked: ``decide``, ``hold``, ``gated_flat`` or ``end_of_run``.
    """

    bar: Bar
    valid: bool
    decision_bar: bool
    regime: int
    agent_signals: NDArray[np.float32]
    signal: float | None
    action: Action

    @property
    def ts(self) -> int:
        """The candle's open time, ns since the epoch (UTC); its decision (if any) is stamped at
        the close, ``ts + bar_ns``."""
        return self.bar.ts


@dataclass(frozen=True)
class CandleResult(SignalResult):
    """What one candle did (:meth:`SwarmTrader.on_candle`): the :class:`SignalResult` of the
    candle and the trading loop's step.

    Attributes
    ----------
    step : StepResult
        The trading loop's result for this candle: the fill at its open, the account at its
        close, the risk decision, the order for the next open, events and closed round trips.
    """

    step: StepResult


class SignalStage:
    """The strategy half of the live path: candles in, consensus signals out (what the live
    strategy service runs; :class:`SwarmTrader` composes it with the trading loop).

    Parameters
    ----------
    model : SwarmModel
        The trained, validated model. A model whose validation gate did not pass asks for
        ``gated_flat`` at every decision bar, as in the backtest.
    bar_seconds : float, default 60.0
        Candle length in seconds.

    Raises
    ------
    ValueError
        If the model's decision interval is shorter than one candle.

    Notes
    -----
    Not thread-safe: one stage per feed, fed from one thread.
    """

    def __init__(self, model: SwarmModel, *, bar_seconds: float = 60.0) -> None:
        step = interval_seconds(model.decision.interval)
        if step < bar_seconds:
            raise ValueError(
                f"decision interval {model.decision.interval!r} is shorter than the "
                f"{bar_seconds:g} s candles"
            )
        self._model = model
        self._bar_ns = round(bar_seconds * NS_PER_SECOND)
        self._interval_ns = step * NS_PER_SECOND
        self._stream = MarketStateStream(
            model.feature_spec,
            model.normalization,
            interval_seconds=bar_seconds,
            regime_lookback=model.regime.config.lookback_bars,
        )
        self._trades = model.gate is not None and model.gate.passed
        self._previous_close: int | None = None
        n_inputs = int(model.swarm.n_features)
        self._inputs = np.zeros((1, n_inputs), dtype=np.float32)
        self._regime = np.zeros(1, dtype=np.int64)

    @property
    def model(self) -> SwarmModel:
        return self._model

    @property
    def market_state(self) -> MarketStateStream:
        return self._stream

    @property
    def bar_ns(self) -> int:
        """Candle length in ns."""
        return self._bar_ns

    def on_candle(self, candle: CandleLike, *, flatten: bool = False) -> SignalResult:
        """Update the market state with one closed candle and decide at a decision bar.

        Parameters
        ----------
        candle : CandleLike
            As :meth:`SwarmTrader.on_candle`.
        flatten : bool, default False
            Ask for a flat position (``end_of_run``) whatever the signal.

        Raises
        ------
        ValueError
            If the candle breaks the OHLCV rules or is not after the previous candle; nothing
            changes.
        """
        bar = Bar(
            ts=int(candle.ts),
            open=float(candle.open),
            high=float(candle.high),
            low=float(candle.low),
            close=float(candle.close),
            volume=float(candle.volume),
        )
        # The market state checks the candle (OHLCV rules, time after the previous candle)
        # before anything moves: all or nothing.
        valid = self._stream.update_candle(bar)
        close_ts = bar.ts + self._bar_ns
        if self._previous_close is None:
            decision_bar = close_ts % self._interval_ns == 0
        else:
            decision_bar = close_ts // self._interval_ns > self._previous_close // self._interval_ns
        self._previous_close = close_ts

        regime = UNKNOWN_REGIME
        agents = _NO_AGENTS
        signal: float | None = None
        if flatten:
            action: Action = "end_of_run"
        elif not decision_bar:
            action = "hold"
        elif not self._trades:
            action = "gated_flat"
        else:
            action = "decide"
            if valid:
                agents, signal, regime = self._decide()
        return SignalResult(bar, valid, decision_bar, regime, agents, signal, action)

    def _decide(self) -> tuple[NDArray[np.float32], float, int]:
        """Agent signals, consensus and regime at the newest candle (a valid decision bar)."""
        model = self._model
        stream = self._stream
        latent = model.encoder.encode(stream.window[None, :])  # [1, latent_dim]
        inputs = self._inputs  # [1, latent_dim + n_features]: the latent, then the current row
        inputs[0, : latent.shape[1]] = latent[0]
        inputs[0, latent.shape[1] :] = stream.current
        agents = model.swarm.forward(inputs)  # [n_agents, 1]
        trend, volatility = stream.regime_features
        regime = model.regime.classify_one(trend, volatility)
        consensus = model.consensus_of(agents, self._regime_row(regime))
        return agents[:, 0], float(consensus[0]), regime

    def _regime_row(self, regime: int) -> NDArray[np.int64]:
        self._regime[0] = regime
        return self._regime


class SwarmTrader:
    """A trained swarm trading a live candle feed, one candle at a time: the
    :class:`SignalStage` and the trading loop in one process.

    Parameters
    ----------
    model : SwarmModel
        The trained, validated model (``TrainingState.to_model()``). A model whose validation
        gate did not pass trades nothing: its decisions are ``gated_flat``, as in the backtest.
    risk : RiskConfig
        Sizing, limits and circuit breakers of the account.
    execution : ExecutionSettings
        Fees, slippage, market impact, volume limit, spot or margin.
    bar_seconds : float, default 60.0
        Candle length in seconds (one-minute candles by default).

    Raises
    ------
    ValueError
        If the model's decision interval is shorter than one candle, or a setting is invalid.

    Notes
    -----
    Not thread-safe: one trader per feed, fed from one thread. Costs per candle: the market
    state's O(window) update and one trading-loop step; at a decision bar also the VAE on one
    window, the swarm on one state and the regime over its look-back (``bench/`` measures it).
    """

    def __init__(
        self,
        model: SwarmModel,
        risk: RiskConfig,
        execution: ExecutionSettings,
        *,
        bar_seconds: float = 60.0,
    ) -> None:
        self._signals = SignalStage(model, bar_seconds=bar_seconds)
        self._loop = TradingLoop(execution, risk, bar_seconds=bar_seconds)

    @property
    def model(self) -> SwarmModel:
        return self._signals.model

    @property
    def loop(self) -> TradingLoop:
        """The trading loop (its executor holds the account)."""
        return self._loop

    @property
    def market_state(self) -> MarketStateStream:
        return self._signals.market_state

    def on_candle(
        self, candle: CandleLike, *, flatten: bool = False, last: bool = False
    ) -> CandleResult:
        """Process one closed candle: market state, decision (at a decision bar), trading step.

        Parameters
        ----------
        candle : CandleLike
            Open time ``ts`` (ns since the epoch, UTC, after the previous candle's), ``open``,
            ``high``, ``low``, ``close`` (quote currency) and ``volume`` (base units).
        flatten : bool, default False
            Target a flat position at this candle's close whatever the signal (``end_of_run``:
            the wind-down at the end of a backtest, or an operator's flatten).
        last : bool, default False
            No order follows this candle (the end of a replay): nothing is submitted.

        Returns
        -------
        CandleResult

        Raises
        ------
        ValueError
            If the candle breaks the OHLCV rules or is not after the previous candle; nothing
            changes (neither the market state nor the account).
        """
        # The signal stage checks the candle before anything moves, and the trading loop
        # accepts what it accepts: all or nothing.
        s = self._signals.on_candle(candle, flatten=flatten)
        step = self._loop.step(s.bar, s.action, s.signal, can_order=not last)
        return CandleResult(
            s.bar, s.valid, s.decision_bar, s.regime, s.agent_signals, s.signal, s.action, step
        )
