"""Small building blocks the test files share (imported with the tests folder on sys.path)."""

from __future__ import annotations

import dataclasses
import itertools
import subprocess
import sys
from typing import Any

import msgspec
import numpy as np

from colmena.execution.simulation import ExecutionSettings
from colmena.features.market_state import FEATURE_NAMES, FeatureSpec, Normalization
from colmena.features.regime import REGIME_NAMES, RegimeClassifier, RegimeConfig
from colmena.model.decision import DecisionConfig
from colmena.model.swarm import GateResult
from colmena.model.vae import VAEConfig
from colmena.risk import RiskConfig
from colmena.training.config import EvolutionConfig, TrainConfig
from colmena.training.state import (
    AdamMoments,
    DataProvenance,
    GenerationStats,
    LineageRecord,
    RegimeVoters,
    RNGState,
    SelectionResult,
    TrainingState,
    VAEEpoch,
    VAEState,
    ValidationResult,
)


def run_python(
    args: list[str], *, timeout: float = 120.0, memory_bytes: int = 2 * 2**30, cwd: Any = None
) -> subprocess.CompletedProcess[str]:
    """``python ARGS`` in a child process with at most ``memory_bytes`` of address space and
    ``timeout`` seconds: a crash, a memory bomb or a hang of the code under test fails one test
    (a negative return code, a MemoryError, subprocess.TimeoutExpired) instead of taking pytest
    or the machine down with it."""
    import os
    import resource

    def limit() -> None:
        # Under AddressSanitizer (the sanitizer CI run preloads it) the cap is left out: ASan
        # reserves terabytes of address space for its shadow memory and could not start.
        if "asan" not in os.environ.get("LD_PRELOAD", ""):
            resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))

    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=timeout,
        preexec_fn=limit, cwd=cwd, check=False,
    )  # fmt: skip


def run_cli(args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """``colmena ARGS`` through :func:`run_python`."""
    return run_python(
        ["-c", "from colmena.cli import main; main(prog_name='colmena')", *args], **kwargs
    )


def synthetic_candles(folder: Any, n: int = 3_000, seed: int = 0) -> Any:
    """Write ``folder/candles.parquet``: ``n`` one-minute candles from 2023-03-01 00:00 UTC on,
    a random walk around 100; returns its path."""
    from pathlib import Path

    import pyarrow as pa
    import pyarrow.parquet as pq

    close = 100 * np.exp(np.cumsum(np.random.default_rng(seed).normal(0, 0.001, n)))
    ts = 1_677_628_800 * 10**9 + 60 * 10**9 * np.arange(n, dtype=np.int64)
    path = Path(folder) / "candles.parquet"
    pq.write_table(pa.table({"ts": pa.array(ts, pa.timestamp("ns")), "open": close,
                             "high": close * 1.001, "low": close * 0.999, "close": close,
                             "volume": np.ones(n)}), path)  # fmt: skip
    return path


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


def every_agent_votes(state: TrainingState, gate: GateResult | None = None) -> TrainingState:
    """The finished state with every agent voting with weight 1 (whatever its selection found),
    so that accounting tests have trades to check; ``gate`` replaces its gate result."""
    assert state.consensus_weights is not None
    assert state.validation is not None
    validation = state.validation
    if gate is not None:
        validation = dataclasses.replace(validation, gate=gate)
    return dataclasses.replace(
        state, consensus_weights=np.ones_like(state.consensus_weights), validation=validation
    )


def make_state(
    generation: int = 3,
    *,
    agents: int = 4,
    hidden: tuple[int, ...] = (8,),
    latent: int = 2,
    encoder: tuple[int, ...] = (7,),
    state_bars: int = 2,
    finetune: bool = True,
    finished: bool = False,
    per_regime: bool = False,
    lineage: tuple[LineageRecord, ...] | None = None,
    fill: float | None = None,
    seed: int = 0,
) -> TrainingState:
    """A valid training state without training: random values (or every number ``fill``).

    ``generation`` generations evolved (the config plans ``generation`` of them when
    ``finished``, ``generation + 5`` otherwise); N = ``agents``; swarm widths
    ``[latent + F, *hidden, 1]``; a VAE encoder of widths ``encoder``. The lineage holds every
    current agent plus a few children, one with NaN fitness, one never evaluated.
    """
    rng = np.random.default_rng(seed)
    n_features = len(FEATURE_NAMES)

    def f32(*shape: int) -> np.ndarray:
        if fill is not None:
            return np.full(shape, fill, dtype=np.float32)
        return rng.standard_normal(shape, dtype=np.float32)

    def f64(*shape: int) -> np.ndarray:
        return np.full(shape, fill) if fill is not None else rng.standard_normal(shape)

    planned = max(generation, 1) if finished else generation + 5
    config = TrainConfig(
        seed=seed,
        features=FeatureSpec(ffd_window=16, state_bars=state_bars),
        vae=VAEConfig(hidden=encoder, latent_dim=latent, epochs=5),
        evolution=EvolutionConfig(
            agents=agents, hidden=hidden, generations=planned, elite=1,
            tournament_size=min(2, agents), finetune_steps=1 if finetune else 0,
        ),
        regime=RegimeConfig(lookback_bars=30),
        regime_consensus=per_regime,
    )  # fmt: skip
    widths = [latent + n_features, *hidden, 1]
    layers = tuple((f32(agents, a, b), f32(agents, b)) for a, b in itertools.pairwise(widths))
    adam = None
    if finetune:
        adam = AdamMoments(
            exp_avg=tuple((f32(*w.shape), f32(*b.shape)) for w, b in layers),
            exp_avg_sq=tuple((f32(*w.shape), f32(*b.shape)) for w, b in layers),
            step=np.full(agents, 7 if fill is None else int(fill), dtype=np.int64),
        )
    value = None if fill is None else float(fill)
    if lineage is None:
        records = [
            LineageRecord(i, (), 0, "init", float(rng.standard_normal()) if fill is None else value)
            for i in range(agents)
        ]
        odd = (float("nan"), float("-inf"), -0.0) if fill is None else (value, value, value)
        records += [
            LineageRecord(agents, (0,), 1, "elite", value),
            LineageRecord(agents + 1, (0, 1), 1, "crossover", odd[0]),
            LineageRecord(agents + 2, (1,), 2, "mutation", odd[1]),
            LineageRecord(agents + 3, (agents + 1, agents + 2), 3, "crossover+mutation", odd[2]),
        ]
        lineage = tuple(records)
    ids = [r.agent_id for r in lineage]
    history = tuple(
        GenerationStats(
            generation=g + 1,
            best_fitness=float(f64(1)[0]),
            median_fitness=float(f64(1)[0]),
            entropy=float(f64(1)[0]),
            window_start=g,
            window_stop=g + 100,
        )
        for g in range(generation)
    )
    gen = np.random.default_rng(seed)
    gen.integers(0, 100, size=seed % 5 + 1)
    encoder_widths = [state_bars * n_features, *encoder]
    vae = VAEState(
        layers=tuple((f32(a, b), f32(b)) for a, b in itertools.pairwise(encoder_widths)),
        mu=(f32(encoder[-1], latent), f32(latent)),
        logvar=(f32(encoder[-1], latent), f32(latent)),
        epochs_run=3,
        best_epoch=2,
        history=tuple(
            VAEEpoch(*(float(x) for x in f64(4))) if e != 1 or fill is not None
            else VAEEpoch(float("nan"), 1.5, 1.0, 0.5)
            for e in range(3)
        ),
    )  # fmt: skip
    weights = validation = None
    if finished:
        sets = 1 + len(REGIME_NAMES) if per_regime else 1
        weights = np.abs(f64(sets, agents))
        regimes = None
        if per_regime:
            regimes = tuple(RegimeVoters(name, 30, 2) for name in REGIME_NAMES)
        validation = ValidationResult(
            fit_first_ts=0,
            fit_last_ts=699 * 60_000_000_000,
            selection=SelectionResult(
                700 * 60_000_000_000, 849 * 60_000_000_000, agents, 2, 1.25, -0.5, regimes
            ),
            gate=GateResult(True, "beat_flat_on_validation", 850, 999, 0.01, 0.02, 4, 2, 0.5),
            regime_consensus=per_regime,
        )
    return TrainingState(
        generation=generation,
        layers=layers,
        agent_ids=np.arange(agents, dtype=np.int64),
        fitness=f64(agents),
        next_agent_id=max(ids, default=-1) + 1,
        adam=adam,
        lineage=lineage,
        history=history,
        rng=RNGState.of(gen),
        feature_names=tuple(FEATURE_NAMES),
        normalization=Normalization(mean=f64(n_features), std=np.abs(f64(n_features)) + 0.5),
        regime=RegimeClassifier(config.regime, 0.001, 0.75),
        vae=vae,
        consensus_weights=weights,
        validation=validation,
        config=config,
        execution=ExecutionSettings(market="margin"),
        risk=RiskConfig(),
        data=DataProvenance("candles.csv", 1_000, 0, 999 * 60_000_000_000, "ab" * 32),
        versions={"colmena": "0.1.0", "numpy": np.__version__, "tag": "ñ"},
    )


def fresh_database(server_dsn: str, name: str) -> str:
    """Create (or re-create) database ``name`` on the server of ``server_dsn``; its DSN."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    with psycopg.connect(server_dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    params = conninfo_to_dict(server_dsn)
    params["dbname"] = name
    return make_conninfo(**params)
