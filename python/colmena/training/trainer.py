"""Training: the VAE on market states, the evolution of the swarm, then validation and the gate.

``train(candles, config)`` is what ``colmena train`` runs, and what every walk-forward fold of
``colmena backtest`` runs on its training window. The window is split in time order:

1. **fit** (the first ``1 - validation_fraction``): the feature normalisation, the VAE, the regime
   classifier's thresholds and the evolution (every generation scores the agents with the
   executor's own accounting on a fresh window of these bars, :mod:`colmena.training.evolution`);
2. **selection** (the first half of the held-back part): every agent of the final population is
   scored there with the same executor; only agents that beat flat (a positive net result and a
   positive daily Sharpe ratio) vote, with weights equal to that Sharpe ratio (non-negative by
   construction). With ``regime_consensus``, each regime gets its own voters and weights from the
   decision intervals that started in it (falling back to the global weights for a regime with
   fewer than ``MIN_REGIME_DECISIONS`` selection decisions); no voter means flat;
3. **gate** (the second half): the voted swarm trades these bars through the full engine (risk
   sizing, limits, breakers, execution: :func:`colmena._core.run_backtest`). The model is traded
   only if it beats flat there (a positive net return); otherwise every decision it would make
   says ``gated_flat`` with the reason.

Selection and gate use different bars, so the gate judges the voted swarm on data that chose
neither its agents nor their weights. Nothing after the training window is read.

Reproducible end to end: the same candles, configuration and seed give the same training state
(and checkpoint file), byte for byte, in separate processes whatever their thread counts (torch
runs single-threaded and in deterministic mode while the VAE trains and the agents fine-tune,
every random draw of the evolution comes from one ``numpy.random.Generator(seed)``, the core's
forward passes and consensus have a fixed summation order).

Where the forward passes run: ``device`` ("cpu", the default, or "cuda" / "cuda:N", or a
:class:`colmena.model.device.ForwardBackend`) chooses the implementation of the VAE encoder that
builds the agents' inputs and of the swarm that every generation, the selection and the gate
run (:func:`colmena.model.device.forward_backend`, built once per run). Everything else (the
fitness through the executor, the genetic operators, Adam fine-tuning in torch, selection,
consensus, the gate's trading loop) is the same code on the CPU whatever the device, and the
returned model and state hold host weights only. The CUDA forward passes give the CPU's bits,
so a CUDA run gives the same state, byte for byte (tests/test_cuda_pipeline.py).

Resumable: after every generation ``on_generation`` receives the typed
:class:`colmena.training.state.TrainingState` (``colmena train`` checkpoints it), and
``train(candles, resume=state)`` continues from it: the VAE, normalization and regime classifier
are reused, the population, Adam moments, lineage, history and the generator's state go on from
there, and the result equals that of the uninterrupted run, bit for bit. Training never writes
files; :mod:`colmena.persistence.checkpoint` does.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import msgspec
import numpy as np
from numpy.typing import NDArray

from colmena import _core
from colmena.data.ohlcv import Candles
from colmena.execution.simulation import (
    WIND_DOWN_BARS,
    ExecutionSettings,
    day_end_rows,
    simulate_targets,
)
from colmena.features.market_state import FEATURE_NAMES, Normalization, compute_market_state
from colmena.features.regime import REGIME_NAMES, RegimeClassifier
from colmena.model.decision import decision_bars
from colmena.model.device import ForwardBackend, forward_backend
from colmena.model.swarm import GateResult, SwarmModel
from colmena.model.vae import TrainedVAE, train_vae
from colmena.risk import RiskConfig
from colmena.training.config import TrainConfig
from colmena.training.evolution import (
    Population,
    behavioural_entropy,
    daily_sharpe,
    finetune_adam,
)
from colmena.training.state import (
    DataProvenance,
    GenerationStats,
    RegimeVoters,
    RNGState,
    SelectionResult,
    TrainingState,
    VAEEpoch,
    VAEState,
    ValidationResult,
)
from colmena.units import NS_PER_SECOND, SECONDS_PER_DAY, SECONDS_PER_YEAR
from colmena.versions import library_versions

__all__ = ["MIN_REGIME_DECISIONS", "ResumeError", "TrainConfig", "TrainResult", "train"]

#: A regime with fewer selection decisions than this uses the global weights.
MIN_REGIME_DECISIONS: Final = 24


class ResumeError(ValueError):
    """A training state cannot be continued with these candles or settings (the message names
    the field that differs)."""


@dataclass(frozen=True)
class TrainResult:
    """A finished training run.

    Attributes
    ----------
    model : SwarmModel
        The voted, gated swarm (``state.to_model()``, already built).
    state : TrainingState
        The final, finished state (what ``colmena train`` checkpoints).
    population : Population
        The final population (working copy).
    vae : TrainedVAE
        The VAE (``module`` is None when the run was resumed: the torch model is not stored).
    """

    model: SwarmModel
    state: TrainingState
    population: Population
    vae: TrainedVAE


def _bar_seconds(candles: Candles) -> float:
    return float(candles.interval_seconds or 60.0)


def _close_ts(candles: Candles) -> NDArray[np.int64]:
    return np.asarray(candles.ts, dtype=np.int64) + round(_bar_seconds(candles) * NS_PER_SECOND)


def _segment_equity(
    market: Candles,
    decide: NDArray[np.bool_],
    signals: NDArray[np.float32],
    start: int,
    stop: int,
    execution: ExecutionSettings,
    band: float,
    extra_marks: NDArray[np.int64] | None = None,
) -> tuple[NDArray[np.float64], NDArray[np.int64], NDArray[np.bool_]]:
    """Equity of each signal row over bars [start, stop) at the day ends (and ``extra_marks``,
    local indices), through the executor. Returns (equity [K, M], the mark rows (local), which
    marks are day ends [M])."""
    days = day_end_rows(_close_ts(market)[start:stop])
    marks = days if extra_marks is None else np.union1d(days, extra_marks).astype(np.int64)
    sim = simulate_targets(
        market.ts[start:stop], market.open[start:stop], market.close[start:stop],
        market.volume[start:stop], decide[start:stop], signals, marks,
        bar_seconds=_bar_seconds(market), execution=execution, no_trade_band=band,
    )  # fmt: skip
    return sim.equity, marks, np.isin(marks, days)


def _fitness(
    market: Candles,
    decide: NDArray[np.bool_],
    signals: NDArray[np.float32],
    start: int,
    stop: int,
    execution: ExecutionSettings,
    band: float,
) -> NDArray[np.float64]:
    equity, _, _ = _segment_equity(market, decide, signals, start, stop, execution, band)
    return daily_sharpe(equity, execution.initial_cash)


def _select_voters(
    market: Candles,
    decide: NDArray[np.bool_],
    signals: NDArray[np.float32],
    regimes: NDArray[np.int64],
    start: int,
    stop: int,
    execution: ExecutionSettings,
    band: float,
    per_regime: bool,
) -> tuple[NDArray[np.float64], SelectionResult]:
    """Consensus weights [n_sets, n_agents] from the selection bars (module docstring)."""
    local_decisions = np.flatnonzero(decide[start:stop]).astype(np.int64)
    equity, marks, days = _segment_equity(
        market, decide, signals, start, stop, execution, band, extra_marks=local_decisions
    )
    sharpe = daily_sharpe(equity[:, days], execution.initial_cash)
    net = equity[:, -1] / execution.initial_cash - 1.0
    beats = (net > 0.0) & (sharpe > 0.0)
    global_weights = np.where(beats, sharpe, 0.0)
    selection = SelectionResult(
        first_ts=int(market.ts[start]),
        last_ts=int(market.ts[stop - 1]),
        agents=int(signals.shape[0]),
        voters=int(beats.sum()),
        best_sharpe=float(sharpe.max()) if sharpe.size else None,
        median_sharpe=float(np.median(sharpe)) if sharpe.size else None,
    )
    if not per_regime:
        return global_weights[None, :], selection
    # Per regime: the decision intervals that started in it (equity from one decision mark to the
    # next), scored by mean / std of their returns.
    at_decision = np.isin(marks, local_decisions)
    e = equity[:, at_decision]
    start_equity = np.concatenate([np.full((e.shape[0], 1), execution.initial_cash), e], axis=1)
    interval = np.diff(start_equity, axis=1) / start_equity[:, :-1]
    # interval[:, j] is the return up to decision j; it was decided at decision j - 1
    decided_in = np.concatenate([[-1], regimes[:-1]]) if regimes.size else regimes
    weights = np.zeros((1 + len(REGIME_NAMES), signals.shape[0]))
    weights[0] = global_weights
    per: list[RegimeVoters] = []
    for k, name in enumerate(REGIME_NAMES):
        cols = decided_in == k
        n_decisions = int(cols.sum())
        if n_decisions < MIN_REGIME_DECISIONS:
            weights[1 + k] = global_weights
            per.append(RegimeVoters(regime=name, decisions=n_decisions, voters=None))
            continue
        x = interval[:, cols]
        mean = x.mean(axis=1)
        std = x.std(axis=1, ddof=1)
        score = np.where(std > 1e-12, mean / np.where(std > 1e-12, std, 1.0), 0.0)
        ok = (np.log1p(x).sum(axis=1) > 0.0) & (score > 0.0)
        weights[1 + k] = np.where(ok, score, 0.0)
        per.append(RegimeVoters(regime=name, decisions=n_decisions, voters=int(ok.sum())))
    return weights, dataclasses.replace(selection, regimes=tuple(per))


def _gate(
    market: Candles,
    decide: NDArray[np.bool_],
    consensus: NDArray[np.float64],
    start: int,
    stop: int,
    execution: ExecutionSettings,
    risk: RiskConfig,
    voters: int,
    enabled: bool,
) -> GateResult:
    """Trade the voted swarm on bars [start, stop) through the full engine; beat flat or gate."""
    rows = slice(start, stop)
    n = stop - start
    action = np.where(decide[rows], 1, 0).astype(np.uint8)
    wind_down = min(WIND_DOWN_BARS, n - 1)
    action[n - 1 - wind_down : n - 1] = 3  # end_of_run: close at the end, costs charged
    signal = np.where(decide[rows], consensus[rows], np.nan)
    raw = _core.run_backtest(
        market.ts[rows], market.open[rows], market.high[rows], market.low[rows],
        market.close[rows], market.volume[rows], np.ascontiguousarray(signal),
        round(_bar_seconds(market) * NS_PER_SECOND), risk.to_core(), execution.to_core(), action,
        None,
    )  # fmt: skip
    equity = raw["equity"]
    net = float(equity[-1] / execution.initial_cash - 1.0)
    trades = int(raw["trade_pnl"].size)
    fills = int(raw["fill_bar"].size)
    buy_and_hold = float(market.close[stop - 1] / market.close[start] - 1.0)
    if voters == 0:
        passed, reason = False, "no_agent_beat_flat"
    elif fills == 0:
        passed, reason = False, "no_trades_on_validation"
    elif net <= 0.0:
        passed, reason = False, "did_not_beat_flat_on_validation"
    else:
        passed, reason = True, "beat_flat_on_validation"
    if not enabled:
        passed, reason = True, f"gate_disabled ({reason})"
    return GateResult(
        passed=passed,
        reason=reason,
        start_ts=int(market.ts[start]),
        stop_ts=int(market.ts[stop - 1]),
        net_return=net,
        buy_and_hold_return=buy_and_hold,
        n_fills=fills,
        n_trades=trades,
        time_in_market=float(np.mean(raw["position"] != 0.0)),
    )


def _deterministic_torch() -> Callable[[], None]:
    """Single-threaded, deterministic torch while the VAE trains; returns the restorer."""
    try:
        import torch
    except ImportError:
        return lambda: None
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)

    def restore() -> None:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)

    return restore


def _first_difference(old: Any, new: Any, path: str, skip: frozenset[str]) -> str | None:
    """The first path where two JSON-like values differ, with both values; None if equal."""
    if path in skip:
        return None
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new)):
            found = _first_difference(old.get(key), new.get(key), f"{path}.{key}", skip)
            if found:
                return found
        return None
    if old != new:
        return f"{path}: the checkpoint has {old!r}, this run {new!r}"
    return None


def _check_resumable(
    state: TrainingState,
    data: DataProvenance,
    config: TrainConfig,
    execution: ExecutionSettings,
    risk: RiskConfig,
) -> None:
    """Refuse (ResumeError naming the field) to continue ``state`` with other data or settings."""
    try:
        state.validate()
    except ValueError as exc:
        raise ResumeError(f"cannot resume: {exc}") from exc
    if state.feature_names != tuple(FEATURE_NAMES):
        raise ResumeError(
            f"cannot resume: feature_names: the checkpoint has {list(state.feature_names)}, this "
            f"version computes {list(FEATURE_NAMES)}; retrain with `colmena train`"
        )
    old = state.data
    if (old.candles_sha256, old.rows) != (data.candles_sha256, data.rows):
        raise ResumeError(
            f"cannot resume: data: the checkpoint was trained on {old.rows} candles from "
            f"{old.source} (sha256 {old.candles_sha256[:12]}...), these are {data.rows} candles "
            f"from {data.source} (sha256 {data.candles_sha256[:12]}...): resume on the same data"
        )
    skip = frozenset({"config.evolution.generations"})
    for name, before, now in (
        ("config", state.config, config),
        ("execution", state.execution, execution),
        ("risk", state.risk, risk),
    ):
        found = _first_difference(msgspec.to_builtins(before), msgspec.to_builtins(now), name, skip)
        if found:
            raise ResumeError(
                f"cannot resume: {found}; a resumed run keeps the checkpoint's settings (only "
                "evolution.generations may change)"
            )
    if state.generation > config.evolution.generations:
        raise ResumeError(
            f"cannot resume: config.evolution.generations: the checkpoint has already evolved "
            f"{state.generation} generations, more than the {config.evolution.generations} asked"
        )


def _vae_state(vae: TrainedVAE) -> VAEState:
    return VAEState(
        layers=tuple((w, b) for w, b in vae.layers),
        mu=vae.mu,
        logvar=vae.logvar,
        epochs_run=vae.epochs_run,
        best_epoch=vae.best_epoch,
        history=tuple(
            VAEEpoch(
                train_loss=float(h["train_loss"]),
                val_loss=float(h["val_loss"]),
                reconstruction=float(h["reconstruction"]),
                kl=float(h["kl"]),
            )
            for h in vae.history
        ),
    )


def _trained_vae(state: VAEState) -> TrainedVAE:
    """The VAE of a resumed run (no torch module: only the encoder was stored)."""
    return TrainedVAE(
        layers=[(w, b) for w, b in state.layers],
        mu=state.mu,
        logvar=state.logvar,
        epochs_run=state.epochs_run,
        best_epoch=state.best_epoch,
        history=[dataclasses.asdict(e) for e in state.history],
        module=None,
    )


def train(
    candles: Candles,
    config: TrainConfig | None = None,
    *,
    execution: ExecutionSettings | None = None,
    risk: RiskConfig | None = None,
    resume: TrainingState | None = None,
    on_vae_epoch: Callable[[int, dict[str, float]], None] | None = None,
    on_generation: Callable[[TrainingState], None] | None = None,
    device: str | ForwardBackend = "cpu",
) -> TrainResult:
    """Train the VAE, evolve the swarm, select its voters and gate it (module docstring).

    Parameters
    ----------
    candles : Candles
        Training candles only (a walk-forward caller passes the in-sample window).
    config : TrainConfig, optional
        Default: ``resume.config`` when resuming, else ``TrainConfig()``.
    execution : ExecutionSettings, optional
        Costs and market type the fitness, the selection and the gate trade with (the
        backtest passes its own). Default: ``resume.execution`` when resuming.
    risk : RiskConfig, optional
        Risk limits the gate trades with. Default: ``resume.risk`` when resuming.
    resume : TrainingState, optional
        Continue this run (a state passed to ``on_generation``, or a finished one, e.g. loaded
        from a checkpoint) instead of starting afresh: the VAE, the normalization and the
        regime classifier are taken from it, and the evolution goes on from its generation with
        its population, Adam moments, lineage and random generator, up to
        ``config.evolution.generations``. The result equals, bit for bit, that of one
        uninterrupted run with the same candles and settings.
    on_vae_epoch : callable, optional
        Called with (epoch, losses) after every VAE epoch (not when resuming).
    on_generation : callable, optional
        Called with the :class:`TrainingState` after every evolved generation (before the
        population reproduces): what ``colmena train`` checkpoints, and what ``resume`` takes.
    device : str or ForwardBackend
        Where the encoder's and the swarm's forward passes run: "cpu" (default), "cuda",
        "cuda:N" (module docstring); the result does not depend on it.

    Returns
    -------
    TrainResult

    Raises
    ------
    ResumeError
        If ``resume`` was trained on other candles, with other settings (only
        ``evolution.generations`` may differ, and not below the generations already evolved),
        another feature set, or is invalid; the message names the field.
    colmena.model.device.CudaUnavailableError
        For a CUDA ``device`` without a CUDA build or a visible device (before any work).
    ValueError
        For an unknown ``device``; if the candles are too short for the feature warm-up, the
        regime look-back, or leave too few decision bars in one of the three parts.
    ImportError
        Without torch (the VAE trains in torch; a resumed run needs torch only to fine-tune).
    """
    from colmena.model.nn import Swarm

    backend = forward_backend(device)
    if config is None:
        config = resume.config if resume is not None else TrainConfig()
    if execution is None:
        execution = resume.execution if resume is not None else ExecutionSettings()
    if risk is None:
        risk = resume.risk if resume is not None else RiskConfig()
    evo = config.evolution
    spec = config.features
    n = len(candles)
    provenance = DataProvenance.of(candles) if n else None
    if resume is not None:
        if provenance is None:
            raise ResumeError("cannot resume: data: no candles")
        _check_resumable(resume, provenance, config, execution, risk)
    state = compute_market_state(candles, spec)
    valid = state.valid
    market = candles
    decide = decision_bars(market.ts, _bar_seconds(market), config.decision.interval) & valid
    fit_stop = int(n * (1.0 - config.validation_fraction))
    gate_start = fit_stop + (n - fit_stop) // 2
    index = np.arange(n)
    parts = {
        "fit": (0, fit_stop),
        "selection": (fit_stop, gate_start),
        "gate": (gate_start, n),
    }
    for name, (a, b) in parts.items():
        count = int(decide[a:b].sum())
        if count < 10:
            raise ValueError(
                f"the {name} part of the training window (bars {a}-{b}) has "
                f"{count} decision bars with a complete market state at a "
                f"{config.decision.interval} interval; training needs at least 10 in each part "
                "(more data, a shorter interval or a smaller validation_fraction)"
            )
    assert provenance is not None
    fit_rows = valid & (index < fit_stop)
    decision_rows = np.flatnonzero(decide).astype(np.int64)
    if resume is None:
        normalization = Normalization.fit(state.features, fit_rows)
        windows = state.windows(normalization)
        restore = _deterministic_torch()
        try:
            vae = train_vae(windows[fit_rows], config.vae, seed=config.seed, on_epoch=on_vae_epoch)
        finally:
            restore()
        regime = RegimeClassifier.fit(
            market.close, decision_rows[decision_rows < fit_stop], config.regime
        )
    else:
        normalization = resume.normalization
        windows = state.windows(normalization)
        vae = _trained_vae(resume.vae)
        regime = resume.regime
    vae_state = resume.vae if resume is not None else _vae_state(vae)
    # The forward passes run on ``backend``; the model keeps host weights (CPU core objects).
    encoder = vae.encoder()
    latent = backend.encoder(vae.layers, vae.mu, vae.logvar).encode(windows[decision_rows])
    model_inputs = np.ascontiguousarray(
        np.concatenate(
            [latent, state.current(normalization, decision_rows)],
            axis=1,
        ),
        dtype=np.float32,
    )
    regimes = regime.classify(market.close, decision_rows)

    if resume is None:
        rng = np.random.default_rng(config.seed)
        population = Population.initial(model_inputs.shape[1], evo, rng)
    else:
        rng = resume.rng.generator()
        population = Population.from_state(resume)
        if 0 < resume.generation < evo.generations:
            population.reproduce(evo, rng)  # what the interrupted run did next
    versions = library_versions()

    def snapshot() -> TrainingState:
        return TrainingState(
            generation=len(population.history),
            layers=tuple((w, b) for w, b in population.layers),
            agent_ids=population.ids,
            fitness=population.fitness,
            next_agent_id=population.next_id,
            adam=None if population.adam is None else population.adam.moments(),
            lineage=tuple(population.lineage),
            history=tuple(population.history),
            rng=RNGState.of(rng),
            feature_names=tuple(FEATURE_NAMES),
            normalization=normalization,
            regime=regime,
            vae=vae_state,
            consensus_weights=None,
            validation=None,
            config=config,
            execution=execution,
            risk=risk,
            data=provenance,
            versions=versions,
        )

    swarm = backend.swarm(population.layers, evo.activation)
    window = min(fit_stop, max(2, round(evo.eval_days * SECONDS_PER_DAY / _bar_seconds(market))))
    band = config.decision.no_trade_band
    periods_per_year = SECONDS_PER_YEAR / config.decision.seconds
    for g in range(len(population.history), evo.generations):
        start = int(rng.integers(0, fit_stop - window + 1))
        stop = start + window
        lo, hi = np.searchsorted(decision_rows, [start, stop])
        x = model_inputs[lo:hi]
        signals = swarm.forward(x) if hi > lo else np.zeros((evo.agents, 0), np.float32)
        fitness = _fitness(market, decide, signals, start, stop, execution, band)
        if evo.finetune_steps > 0 and hi - lo > 2:
            rows = decision_rows[lo:hi]
            next_close = market.close[np.append(rows[1:], stop - 1)]
            restore = _deterministic_torch()  # the same moments whatever the thread count
            try:
                finetune_adam(
                    population, x, np.log(next_close / market.close[rows]),
                    np.ones(rows.size, dtype=bool), evo, periods_per_year,
                    cost_bps=execution.fee_bps + execution.slippage_bps,
                    long_only=not execution.allow_short,
                )  # fmt: skip
            finally:
                restore()
            swarm.set_weights(population.layers)
            signals = swarm.forward(x)
            fitness = _fitness(market, decide, signals, start, stop, execution, band)
        population.record_fitness(fitness)
        population.history.append(
            GenerationStats(
                generation=g + 1,
                best_fitness=float(np.max(fitness)),
                median_fitness=float(np.median(fitness)),
                entropy=behavioural_entropy(signals) if signals.size else 0.0,
                window_start=start,
                window_stop=stop,
            )
        )
        if on_generation is not None:
            on_generation(snapshot())
        if g + 1 < evo.generations:
            population.reproduce(evo, rng)
            swarm.set_weights(population.layers)

    # Selection on the first held-back half, the gate on the second.
    sel_lo, sel_hi = np.searchsorted(decision_rows, [fit_stop, gate_start])
    selection_signals = swarm.forward(model_inputs[sel_lo:sel_hi])
    weights, selection = _select_voters(
        market, decide, selection_signals, regimes[sel_lo:sel_hi], fit_stop, gate_start,
        execution, band, config.regime_consensus,
    )  # fmt: skip
    model = SwarmModel(
        feature_spec=spec,
        normalization=normalization,
        encoder=encoder,
        swarm=Swarm(population.layers, activation=evo.activation),
        weights=weights,
        decision=config.decision,
        regime=regime,
        gate=None,
    )
    gate_lo = int(np.searchsorted(decision_rows, gate_start))
    consensus = np.full(n, np.nan)
    gate_rows = decision_rows[gate_lo:]
    gate_agent = swarm.forward(model_inputs[gate_lo:])
    consensus[gate_rows] = model.consensus_of(gate_agent, regimes[gate_lo:])
    voters = int(np.count_nonzero(weights.any(axis=0)))
    gate = _gate(market, decide, consensus, gate_start, n, execution, risk, voters, config.gate)
    model = model.with_gate(gate)
    validation = ValidationResult(
        fit_first_ts=int(market.ts[0]),
        fit_last_ts=int(market.ts[fit_stop - 1]),
        selection=selection,
        gate=gate,
        regime_consensus=config.regime_consensus,
    )
    final = dataclasses.replace(snapshot(), consensus_weights=weights, validation=validation)
    return TrainResult(model=model, state=final, population=population, vae=vae)
