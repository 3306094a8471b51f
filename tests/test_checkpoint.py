"""Checkpoints: the codec of the typed training state (exact round trips, strict decoding),
atomic rotation, crash safety, corruption detection."""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import re
import selectors
import signal
import subprocess
import sys
import tempfile
import textwrap
from collections import deque
from collections.abc import Callable
from functools import partial
from operator import ne
from pathlib import Path
from typing import Any

import hypothesis.extra.numpy as hnp
import msgspec
import numpy as np
import pytest
import safetensors.numpy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import checkpoint_writer
from checkpoint_forge import forge, frame, parts, split
from colmena.features.regime import RegimeConfig
from colmena.persistence import checkpoint as checkpoint_module
from colmena.persistence.checkpoint import (
    FORMAT_VERSION,
    SAVE_STEPS,
    CheckpointError,
    CheckpointSkippedWarning,
    LoadReport,
    NoCheckpointError,
    _decode,
    _encode,
    list_checkpoints,
    load,
    load_latest,
    load_path,
    save,
)
from colmena.training.state import (
    OPERATORS,
    AdamMoments,
    LineageRecord,
    RNGState,
    TrainingState,
)
from helpers import make_state

WRITER = Path(checkpoint_writer.__file__)
f32 = np.float32


def header_and_payload(path: Path) -> tuple[dict[str, Any], bytes]:
    data = path.read_bytes()
    size = int.from_bytes(data[:8], "little")
    return json.loads(data[8 : 8 + size]), data[8 + size :]


# --------------------------------------------------------------------------------------------
# Round trips and equality
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kind",
    ["running", "finished", "per_regime", "no_adam", "generation_0"],
)
def test_round_trip_is_exact_and_saving_a_loaded_state_changes_no_byte(
    tmp_path: Path, kind: str
) -> None:
    original = {
        "running": lambda: make_state(),
        "finished": lambda: make_state(finished=True),
        "per_regime": lambda: make_state(finished=True, per_regime=True),
        "no_adam": lambda: make_state(finetune=False),
        "generation_0": lambda: make_state(0),
    }[kind]()
    first = save(tmp_path, original)
    loaded = load(first)
    assert loaded == original
    assert loaded.differences(original) == []
    second = save(tmp_path, loaded)
    assert load(second) == original
    assert first.read_bytes() == second.read_bytes()


def test_loaded_state_matches_every_field(tmp_path: Path) -> None:
    original = make_state(finished=True)
    loaded = load(save(tmp_path, original))
    assert (loaded.generation, loaded.n_agents, loaded.finished) == (3, 4, True)
    assert loaded.config == original.config
    assert (loaded.execution, loaded.risk) == (original.execution, original.risk)
    assert loaded.data == original.data
    assert loaded.validation == original.validation
    assert loaded.rng == original.rng
    assert loaded.regime == original.regime
    assert dict(loaded.versions) == dict(original.versions)
    assert loaded.lineage == original.lineage
    assert np.isnan(loaded.lineage[5].fitness or 0.0)
    assert loaded.lineage[4].fitness == original.lineage[4].fitness
    assert loaded.lineage[7].parent_ids == (5, 6)
    assert loaded.history == original.history
    assert loaded.vae == original.vae
    assert np.isnan(loaded.vae.history[1].train_loss)
    assert loaded.adam is not None
    assert original.adam is not None
    arrays = [
        (loaded.agent_ids, original.agent_ids),
        (loaded.fitness, original.fitness),
        (loaded.normalization.mean, original.normalization.mean),
        (loaded.consensus_weights, original.consensus_weights),
        (loaded.adam.step, original.adam.step),
    ]
    for layer, expected in zip(loaded.layers, original.layers, strict=True):
        arrays += list(zip(layer, expected, strict=True))
    for moment in ("exp_avg", "exp_avg_sq"):
        for layer, expected in zip(
            getattr(loaded.adam, moment), getattr(original.adam, moment), strict=True
        ):
            arrays += list(zip(layer, expected, strict=True))
    for a, b in arrays:
        assert isinstance(a, np.ndarray)
        assert isinstance(b, np.ndarray)
        assert (a.dtype, a.shape) == (b.dtype, b.shape)
        assert a.tobytes() == b.tobytes()
        assert not a.flags.writeable
    # the generator goes on exactly where the saved one stopped
    expected_draws = original.rng.generator().integers(0, 2**62, size=5)
    np.testing.assert_array_equal(loaded.rng.generator().integers(0, 2**62, size=5), expected_draws)


@st.composite
def lineages(draw: st.DrawFn, agents: int) -> tuple[LineageRecord, ...]:
    """Every current agent 0..agents-1 first, then random children with unique ids."""
    records = [
        LineageRecord(i, (), 0, "init", draw(st.none() | st.floats())) for i in range(agents)
    ]
    ids = draw(st.lists(st.integers(agents, 2**62), unique=True, max_size=6))
    for agent_id in ids:
        op = draw(st.sampled_from(OPERATORS))
        parents: tuple[int, ...] = ()
        if op != "init":
            parents = tuple(
                draw(
                    st.lists(
                        st.integers(0, 2**62).filter(partial(ne, agent_id)), min_size=1, max_size=3
                    )
                )
            )
        fitness = draw(st.none() | st.floats())
        records.append(LineageRecord(agent_id, parents, draw(st.integers(0, 2**40)), op, fitness))
    return tuple(records)


@st.composite
def states(draw: st.DrawFn) -> TrainingState:
    """Random valid states: sizes, Adam or not, finished or not, any float values (NaN, inf,
    signed zeros) except in the weights (finite: the core refuses others), random lineages and
    generator states."""
    agents = draw(st.integers(2, 4))
    finished = draw(st.booleans())
    base = make_state(
        draw(st.integers(1 if finished else 0, 4)),
        agents=agents,
        hidden=tuple(draw(st.lists(st.integers(1, 4), min_size=1, max_size=3))),
        latent=draw(st.integers(1, 3)),
        encoder=tuple(draw(st.lists(st.integers(1, 4), min_size=1, max_size=3))),
        state_bars=draw(st.integers(1, 3)),
        finetune=draw(st.booleans()),
        finished=finished,
        lineage=draw(lineages(agents)),
        seed=draw(st.integers(0, 2**32 - 1)),
    )

    def same_shape(a: np.ndarray) -> np.ndarray:
        return draw(hnp.arrays(a.dtype, a.shape))

    def finite(a: np.ndarray) -> np.ndarray:
        elements = st.floats(width=32, allow_nan=False, allow_infinity=False)
        return draw(hnp.arrays(a.dtype, a.shape, elements=elements))

    layers = tuple((finite(w), finite(b)) for w, b in base.layers)
    adam = base.adam
    if adam is not None:
        adam = AdamMoments(
            exp_avg=tuple((same_shape(w), same_shape(b)) for w, b in layers),
            exp_avg_sq=tuple((same_shape(w), same_shape(b)) for w, b in layers),
            step=draw(hnp.arrays(np.int64, agents, elements=st.integers(0, 2**62))),
        )
    rng = RNGState(
        draw(st.integers(0, 2**128 - 1)), draw(st.integers(0, 2**128 - 1)) | 1,
        draw(st.integers(0, 1)), draw(st.integers(0, 2**32 - 1)),
    )  # fmt: skip
    return dataclasses.replace(
        base,
        layers=layers,
        adam=adam,
        fitness=same_shape(base.fitness),
        rng=rng,
        history=tuple(
            dataclasses.replace(h, best_fitness=draw(st.floats()), entropy=draw(st.floats()))
            for h in base.history
        ),
        versions=draw(st.dictionaries(st.text(max_size=6), st.text(max_size=6), max_size=3)),
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(original=states())
def test_random_states_round_trip_exactly(original: TrainingState) -> None:
    original.validate()
    with tempfile.TemporaryDirectory() as folder:
        loaded = load(save(folder, original))
        assert loaded == original, loaded.differences(original)
        assert load(save(folder, loaded)) == original


def test_construction_copies_into_read_only_native_arrays() -> None:
    base = make_state()
    weight = np.array(base.layers[0][0])
    big_endian = np.asarray(base.fitness, dtype=">f8")
    state = dataclasses.replace(
        base, layers=((weight, base.layers[0][1]), *base.layers[1:]), fitness=big_endian
    )
    weight[:] = 7  # the caller's array changes; the state must not
    assert np.all(state.layers[0][0] == base.layers[0][0])
    assert state.fitness.dtype.isnative
    assert state.fitness.dtype == np.float64
    assert not state.fitness.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        state.layers[0][0][0, 0, 0] = 2
    with pytest.raises(dataclasses.FrozenInstanceError):
        state.generation = 4  # type: ignore[misc]
    state.validate()


def test_equality_is_exact_and_differences_name_the_field() -> None:
    base = make_state(finished=True)
    assert make_state(finished=True) == base
    w = np.array(base.layers[0][0])
    w_zero, w_negzero, w_nan = w.copy(), w.copy(), w.copy()
    w_zero[0, 0, 0], w_negzero[0, 0, 0], w_nan[0, 0, 0] = 0.0, -0.0, np.nan

    def with_weight(a: np.ndarray) -> TrainingState:
        return dataclasses.replace(base, layers=((a, base.layers[0][1]), *base.layers[1:]))

    assert with_weight(w_nan) == with_weight(w_nan.copy())
    assert with_weight(w_zero) != with_weight(w_negzero)
    assert with_weight(w_zero).differences(with_weight(w_negzero)) == ["layers[0][0]"]
    rng = dataclasses.replace(base.rng, state=base.rng.state + 1)
    assert dataclasses.replace(base, rng=rng).differences(base) == ["rng.state"]
    lineage = (*base.lineage[:-1], dataclasses.replace(base.lineage[-1], fitness=1.0))
    assert dataclasses.replace(base, lineage=lineage).differences(base) == ["lineage[7].fitness"]
    assert dataclasses.replace(base, lineage=base.lineage[:-1]).differences(base) == [
        "lineage (length 7 != 8)"
    ]
    last = dataclasses.replace(base.history[-1], entropy=-0.0)
    changed = dataclasses.replace(base, history=(*base.history[:-1], last))
    assert changed.differences(base) == ["history[2].entropy"]
    assert base != "not a state"
    with pytest.raises(TypeError):
        hash(base)


def test_lineage_records_compare_by_value_with_nan_fitness_equal() -> None:
    a = LineageRecord(3, [1, 2], 2, "crossover", float("nan"))  # type: ignore[arg-type]
    b = LineageRecord(np.int64(3), (1, 2), np.int64(2), "crossover", np.float64("nan"))
    assert a == b
    assert hash(a) == hash(b)
    assert a.parent_ids == (1, 2)
    assert (type(b.agent_id), type(b.generation), type(b.fitness)) == (int, int, float)
    assert a != LineageRecord(3, (1, 2), 2, "crossover", 1.0)
    assert a != LineageRecord(3, (1, 2), 2, "crossover", None)


# --------------------------------------------------------------------------------------------
# Validation before writing
# --------------------------------------------------------------------------------------------


def replace(**changes: Any) -> Callable[[TrainingState], TrainingState]:
    return lambda s: dataclasses.replace(s, **changes)


def layer(i: int, weight: np.ndarray | None = None, bias: np.ndarray | None = None):  # type: ignore[no-untyped-def]
    def apply(s: TrainingState) -> TrainingState:
        layers = list(s.layers)
        w, b = layers[i]
        layers[i] = (w if weight is None else weight, b if bias is None else bias)
        return dataclasses.replace(s, layers=tuple(layers))

    return apply


def record(index: int, **changes: Any) -> Callable[[TrainingState], TrainingState]:
    def apply(s: TrainingState) -> TrainingState:
        lineage = list(s.lineage)
        lineage[index] = dataclasses.replace(lineage[index], **changes)
        return dataclasses.replace(s, lineage=tuple(lineage))

    return apply


def adam(**changes: Any) -> Callable[[TrainingState], TrainingState]:
    def apply(s: TrainingState) -> TrainingState:
        assert s.adam is not None
        return dataclasses.replace(s, adam=dataclasses.replace(s.adam, **changes))

    return apply


def vae(**changes: Any) -> Callable[[TrainingState], TrainingState]:
    return lambda s: dataclasses.replace(s, vae=dataclasses.replace(s.vae, **changes))


def finished(s: TrainingState) -> TrainingState:
    return make_state(finished=True)


def normalization(**changes: np.ndarray) -> Callable[[TrainingState], TrainingState]:
    return lambda s: dataclasses.replace(
        s, normalization=dataclasses.replace(s.normalization, **changes)
    )


def features(**changes: Any) -> Callable[[TrainingState], TrainingState]:
    def apply(s: TrainingState) -> TrainingState:
        spec = msgspec.structs.replace(s.config.features, **changes)
        return dataclasses.replace(s, config=msgspec.structs.replace(s.config, features=spec))

    return apply


def selection(per_regime: bool = False, **changes: Any) -> Callable[[TrainingState], TrainingState]:
    """The finished state (per-regime consensus or not) with its selection result changed."""

    def apply(s: TrainingState) -> TrainingState:
        done = make_state(finished=True, per_regime=per_regime)
        assert done.validation is not None
        chosen = dataclasses.replace(done.validation.selection, **changes)
        return dataclasses.replace(
            done, validation=dataclasses.replace(done.validation, selection=chosen)
        )

    return apply


def gate(**changes: Any) -> Callable[[TrainingState], TrainingState]:
    def apply(s: TrainingState) -> TrainingState:
        done = make_state(finished=True)
        assert done.validation is not None
        result = dataclasses.replace(done.validation.gate, **changes)
        return dataclasses.replace(
            done, validation=dataclasses.replace(done.validation, gate=result)
        )

    return apply


def empty_vae_width(s: TrainingState) -> TrainingState:
    """An encoder layer of width 0 (a config cannot ask for one: VAEConfig refuses widths
    below 1, so the file's layers disagree with its config as well)."""
    empty = (np.ones((0, 2), f32), np.ones(2, f32))
    encoder = dataclasses.replace(
        s.vae, layers=((np.ones((8, 0), f32), np.ones(0, f32)),), mu=empty, logvar=empty
    )
    return dataclasses.replace(s, vae=encoder)


# The base state (make_state()): 4 agents, widths [6, 8, 1], a [8, 7] encoder, latent 2, F = 4,
# state_bars 2, generation 3 of 8, with Adam, not finished.
INVALID: dict[str, tuple[Callable[[TrainingState], TrainingState], str]] = {
    "weight not 3-D": (layer(0, weight=np.ones((6, 8), f32)), r"layers\[0\] weight must be a 3-D"),
    "weight float64": (layer(0, weight=np.ones((4, 6, 8))), r"3-D float32 array, got float64"),
    "layers do not chain": (
        layer(1, weight=np.ones((4, 7, 1), f32)),
        r"layers\[1\] weight has 7 inputs but layers\[0\] has 8 outputs",
    ),
    "bias shape": (layer(1, bias=np.ones((4, 2), f32)), r"layers\[1\] bias has shape \[4, 2\]"),
    "widths differ from config": (
        replace(layers=make_state(hidden=(5,)).layers, adam=make_state(hidden=(5,)).adam),
        r"layers have widths \[6, 5, 1\], expected \[6, 8, 1\]",
    ),
    "agent count differs": (replace(fitness=np.ones(5)), r"fitness has 5 entries for 4 agents"),
    "fitness float32": (replace(fitness=np.ones(4, f32)), r"fitness must be a 1-D float64"),
    "ids repeat": (replace(agent_ids=np.array([0, 1, 1, 2])), r"agent_ids must be unique"),
    "agent without lineage": (
        replace(agent_ids=np.array([0, 1, 2, 99])),
        r"agent_ids \[99\] have no lineage record",
    ),
    "adam moment shape": (
        adam(exp_avg=((np.ones((4, 6, 8), f32), np.ones((4, 9), f32)), make_state().layers[1])),
        r"adam.exp_avg\[0\] bias is float32\[4, 9\] but its parameter layers\[0\] bias",
    ),
    "adam missing": (replace(adam=None), r"adam is missing but config.evolution.finetune_steps"),
    "adam without fine-tuning": (
        lambda s: dataclasses.replace(make_state(finetune=False), adam=s.adam),
        r"adam is present but config.evolution.finetune_steps is 0",
    ),
    "adam step dtype": (adam(step=np.ones(4)), r"adam.step must be a 1-D int64"),
    "vae head does not chain": (
        vae(
            mu=(np.ones((6, 2), f32), np.ones(2, f32)),
            logvar=(np.ones((6, 2), f32), np.ones(2, f32)),
        ),
        r"vae.mu weight has 6 inputs but vae.layers\[0\] has 7 outputs",
    ),
    "vae logvar shape": (
        vae(logvar=(np.ones((7, 3), f32), np.ones(3, f32))),
        r"vae.logvar weight is \[7, 3\] but vae.mu weight is \[7, 2\]",
    ),
    "vae input": (
        vae(layers=((np.ones((9, 7), f32), np.ones(7, f32)),)),
        r"vae.layers\[0\] takes 9 inputs, expected state_bars \* F = 8",
    ),
    "vae history": (vae(epochs_run=4), r"vae.history has 3 epochs but epochs_run is 4"),
    "normalization width": (
        lambda s: dataclasses.replace(
            s, normalization=dataclasses.replace(s.normalization, std=np.ones(5))
        ),
        r"normalization.std has 5 features but feature_names has 4",
    ),
    "history length": (
        lambda s: dataclasses.replace(s, history=s.history[:2]),
        r"history has 2 entries but generation is 3",
    ),
    "history numbering": (
        lambda s: dataclasses.replace(s, history=(s.history[0], s.history[0], s.history[2])),
        r"history\[1\].generation must be 2, got 1",
    ),
    "window outside the data": (
        lambda s: dataclasses.replace(
            s, history=(*s.history[:2], dataclasses.replace(s.history[2], window_stop=2_000))
        ),
        r"history\[2\] window \[2, 2000\) is not inside the 1000 training candles",
    ),
    "generation beyond the plan": (replace(generation=9), r"generation 9 exceeds config"),
    "negative generation": (replace(generation=-1), r"generation must be an int >= 0"),
    "weights without validation": (
        replace(consensus_weights=np.ones((1, 4))),
        r"consensus_weights and validation must both be present",
    ),
    "negative weights": (
        lambda s: dataclasses.replace(finished(s), consensus_weights=-np.ones((1, 4))),
        r"consensus_weights must be finite and non-negative",
    ),
    "weight sets": (
        lambda s: dataclasses.replace(finished(s), consensus_weights=np.ones((5, 4))),
        r"consensus_weights has 5 weight sets, expected 1",
    ),
    "finished early": (
        lambda s: dataclasses.replace(finished(s), config=s.config),
        r"a finished run must have evolved every generation",
    ),
    "rng out of range": (
        lambda s: dataclasses.replace(s, rng=dataclasses.replace(s.rng, state=2**128)),
        r"rng.state must be an int in \[0, 2\*\*128\)",
    ),
    "regime config": (
        lambda s: dataclasses.replace(
            s, regime=dataclasses.replace(s.regime, config=RegimeConfig(lookback_bars=31))
        ),
        r"regime.config differs from config.regime",
    ),
    "bad digest": (
        lambda s: dataclasses.replace(s, data=dataclasses.replace(s.data, candles_sha256="x")),
        r"data.candles_sha256 must be 64 lowercase hex digits",
    ),
    "config type": (replace(config={"seed": 1}), r"config must be a TrainConfig, got dict"),
    "versions not str": (replace(versions={"numpy": 2}), r"versions must map str to str"),
    "next id too small": (replace(next_agent_id=5), r"next_agent_id 5 is not above every"),
    "duplicate agent": (record(5, agent_id=0), r"lineage\[5\].agent_id 0 repeats lineage\[0\]"),
    "unknown operator": (record(5, operator="cloning"), r"lineage\[5\].operator must be one of"),
    "init with parents": (record(0, parent_ids=(3,)), r"lineage\[0\]: an 'init' agent has no"),
    "mutation without parent": (
        record(6, parent_ids=()),
        r"lineage\[6\]: a 'mutation' agent needs at least one parent",
    ),
    "own parent": (record(6, parent_ids=(6,)), r"agent 6 lists itself as a parent"),
    "fitness not float": (record(1, fitness="high"), r"lineage\[1\].fitness must be a float"),
    "negative agent id": (record(1, agent_id=-1), r"lineage\[1\].agent_id must be an int"),
    # what a backtest cannot use (issue 10): validate refuses it, so load does too
    "zero std": (
        normalization(std=np.zeros(4)),
        r"normalization.std\[0\] is 0.0; it must be finite and at least 1e-12 \(else the "
        r"standardized features, float32 model inputs, are NaN or infinite, and so is every "
        r"signal\)",
    ),
    "std below the floor": (
        normalization(std=np.array([1.0, 1.0, 1e-13, 1.0])),
        r"normalization.std\[2\] is 1e-13",
    ),
    "negative std": (normalization(std=-np.ones(4)), r"normalization.std\[0\] is -1.0"),
    "NaN mean": (
        normalization(mean=np.array([0.0, np.nan, 0.0, 0.0])),
        r"normalization.mean\[1\] is nan; it must be finite",
    ),
    "infinite mean": (normalization(mean=np.full(4, np.inf)), r"normalization.mean\[0\] is inf"),
    "huge mean": (
        normalization(mean=np.array([0.0, 0.0, 0.0, 3e38])),
        r"normalization.mean\[3\] is 3e\+38; it must be finite and within ±1e\+06",
    ),
    "NaN swarm weight": (
        layer(1, weight=np.full((4, 8, 1), np.nan, f32)),
        r"layers\[1\] weight holds NaN or infinity \(the weights must be finite\)",
    ),
    "infinite VAE head bias": (
        vae(mu=(np.ones((7, 2), f32), np.array([1.0, np.inf], f32))),
        r"vae.mu bias holds NaN or infinity",
    ),
    "empty VAE width": (empty_vae_width, r"vae.layers\[0\] weight \[8, 0\] has an empty dimension"),
    "logvar not a pair": (
        vae(logvar="none"),
        r"vae.logvar must be a \(weight, bias\) pair or None",
    ),
    "look-back beyond the data": (
        lambda s: dataclasses.replace(
            s, data=dataclasses.replace(s.data, rows=50), history=s.history[:0], generation=0
        ),
        r"the look-back of config.features and config.regime \(61 bars\) is longer than the 50 "
        r"training candles",
    ),
    "max gap beyond int64": (
        features(max_gap_bars=2**63),
        r"config.features.max_gap_bars is 9223372036854775808, more than the limit",
    ),
    "data rows beyond int64": (
        lambda s: dataclasses.replace(s, data=dataclasses.replace(s.data, rows=2**64)),
        r"data.rows must be an int in \[1, 2\*\*63\)",
    ),
    "next id beyond int64": (replace(next_agent_id=2**63 + 1), r"next_agent_id must be an int in"),
    "regime names": (
        lambda s: (
            lambda done: selection(
                True,
                regimes=tuple(
                    dataclasses.replace(r, regime="sideways")
                    for r in done.validation.selection.regimes  # type: ignore[union-attr]
                ),
            )(s)
        )(make_state(finished=True, per_regime=True)),
        r"validation.selection.regimes must be one RegimeVoters per regime of",
    ),
    "one regime missing": (
        lambda s: (
            lambda done: selection(
                True,
                regimes=done.validation.selection.regimes[1:],  # type: ignore[union-attr]
            )(s)
        )(make_state(finished=True, per_regime=True)),
        r"validation.selection.regimes must be one RegimeVoters per regime",
    ),
    "voters beyond agents": (
        selection(voters=5),
        r"validation.selection.voters must be an int in \[0, agents\], got 5",
    ),
    "selection agents": (selection(agents=7), r"validation.selection.agents is 7, agent_ids has 4"),
    "selection times reversed": (
        selection(first_ts=10, last_ts=5),
        r"validation.selection.first_ts and last_ts must be int64 times, first <= last",
    ),
    "gate time in market": (
        gate(time_in_market=1.5),
        r"validation.gate.time_in_market must be in \[0, 1\], got 1.5",
    ),
    "gate fills negative": (gate(n_fills=-1), r"validation.gate.n_fills must be an int >= 0"),
    "gate times reversed": (
        gate(start_ts=10, stop_ts=5),
        r"validation.gate.start_ts and stop_ts must be int64 times, start <= stop",
    ),
    "weights sum to infinity": (
        lambda s: dataclasses.replace(finished(s), consensus_weights=np.full((1, 4), 1e308)),
        r"consensus_weights: a weight set sums to infinity",
    ),
}


@pytest.mark.parametrize("case", sorted(INVALID))
def test_save_refuses_an_invalid_state_and_writes_nothing(tmp_path: Path, case: str) -> None:
    make_bad, message = INVALID[case]
    state = make_bad(make_state())
    save(tmp_path, make_state(seed=1))
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(ValueError, match=message):
        save(tmp_path, state)
    assert sorted(os.listdir(tmp_path)) == before


def test_validate_reports_every_problem_at_once() -> None:
    state = dataclasses.replace(
        make_state(), fitness=np.ones(4, f32), next_agent_id=2, history=make_state().history[:1]
    )
    with pytest.raises(ValueError, match=r"invalid training state \(3 problems\)") as info:
        state.validate()
    for part in ("fitness", "next_agent_id", "history"):
        assert part in str(info.value)


def test_save_rejects_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="keep must be an int >= 1"):
        save(tmp_path, make_state(), keep=0)
    with pytest.raises(TypeError, match="must be a TrainingState"):
        save(tmp_path, {"generation": 1})  # type: ignore[arg-type]
    assert os.listdir(tmp_path) == []


# --------------------------------------------------------------------------------------------
# Directory: numbering, rotation, temporary files
# --------------------------------------------------------------------------------------------


def test_keeps_the_newest_k_with_increasing_sequence_numbers(tmp_path: Path) -> None:
    paths = [save(tmp_path / "run", make_state(g), keep=3) for g in range(8)]
    assert [p.name for p in paths[:2]] == [
        "checkpoint-00000001-gen000000.safetensors",
        "checkpoint-00000002-gen000001.safetensors",
    ]
    assert list_checkpoints(tmp_path / "run") == paths[-3:]
    assert load_latest(tmp_path / "run").generation == 7
    # Numbering continues above what rotation deleted, and above what is there.
    assert save(tmp_path / "run", make_state(2), keep=3).name.startswith(
        "checkpoint-00000009-gen000002"
    )
    assert load_latest(tmp_path / "run").generation == 2  # newest by sequence, not generation


def test_newest_is_decided_by_sequence_not_modification_time(tmp_path: Path) -> None:
    for g in range(3):
        save(tmp_path, make_state(g))
    newest = list_checkpoints(tmp_path)[-1]
    os.utime(newest, (1_000_000, 1_000_000))  # 1970: the oldest mtime in the folder
    report = LoadReport()
    assert load_latest(tmp_path, report=report).generation == 2
    assert (report.path, report.skipped) == (newest, [])


def test_save_removes_stale_temporary_files_and_leaves_other_files(tmp_path: Path) -> None:
    save(tmp_path, make_state(1))
    stale = tmp_path / ".checkpoint-00000002-gen000002.safetensors.4242.tmp"
    stale.write_bytes(b"half a checkpoint")
    other = tmp_path / "notes.txt"
    other.write_text("keep me")
    assert load_latest(tmp_path).generation == 1  # readers ignore the temporary file
    path = save(tmp_path, make_state(2))
    assert path.name == "checkpoint-00000002-gen000002.safetensors"
    assert not stale.exists()
    assert other.read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == [
        "checkpoint-00000001-gen000001.safetensors",
        "checkpoint-00000002-gen000002.safetensors",
        "notes.txt",
    ]


def test_list_checkpoints_of_a_missing_folder_is_empty(tmp_path: Path) -> None:
    assert list_checkpoints(tmp_path / "absent") == []


# --------------------------------------------------------------------------------------------
# Power cut: a writer killed at random moments never leaves a broken newest checkpoint
# --------------------------------------------------------------------------------------------


def _read_line(proc: subprocess.Popen[str], timeout: float = 30.0) -> str:
    assert proc.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        if not selector.select(timeout):
            raise AssertionError(f"writer {proc.pid} said nothing for {timeout} s")
    line = proc.stdout.readline()
    if not line:
        stderr = proc.stderr.read() if proc.stderr else ""
        raise AssertionError(f"writer {proc.pid} exited early:\n{stderr}")
    return line.strip()


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL (POSIX)")
def test_writer_killed_at_every_step_of_the_save_always_leaves_a_complete_checkpoint(
    tmp_path: Path,
) -> None:
    """A power cut (SIGKILL) at each step of the save protocol, twice over: the writer reports
    its steps and waits at the chosen one, so every step is hit on any machine, busy or not."""
    keep, ahead = 1, 3
    folder = tmp_path / "run"
    folder.mkdir()
    visible_from = SAVE_STEPS.index("renamed")
    plan = [step for _ in range(2) for step in SAVE_STEPS]

    def spawn() -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, str(WRITER), str(folder), str(keep)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    pool: deque[subprocess.Popen[str]] = deque(spawn() for _ in range(ahead))
    generation = 0
    try:
        for step in plan:
            writer = pool.popleft()
            pool.append(spawn())  # imports while this one runs
            assert _read_line(writer) == "imported"
            assert writer.stdin is not None
            writer.stdin.write(f"{step}\n")
            writer.stdin.flush()
            # The writer resumes from exactly what the parent sees as the latest checkpoint.
            assert _read_line(writer) == f"resumed {generation}"
            assert _read_line(writer) == f"at {step}"
            writer.send_signal(signal.SIGKILL)
            writer.wait(timeout=30)
            assert writer.returncode == -signal.SIGKILL
            for stream in (writer.stdin, writer.stdout, writer.stderr):
                if stream is not None:
                    stream.close()

            temporaries = [n for n in os.listdir(folder) if n.endswith(".tmp")]
            in_flight = SAVE_STEPS.index("temporary_opened") <= SAVE_STEPS.index(step)
            assert bool(temporaries) == (in_flight and SAVE_STEPS.index(step) < visible_from)
            # Every file under a checkpoint name is complete (no warning is raised: strict
            # pytest would turn one into an error); the newest is the new generation exactly
            # when the kill came after the rename, and the previous one before it.
            files = list_checkpoints(folder)
            for path in files:
                checkpoint_writer.check_generation(load(path))
            expected = generation + 1 if SAVE_STEPS.index(step) >= visible_from else generation
            if expected == 0:
                assert files == []
            else:
                assert checkpoint_writer.check_generation(load_latest(folder)) == expected
                # kills between the rename and the pruning leave older files: never fewer
                assert files
            generation = expected
    finally:
        for proc in pool:
            proc.kill()
            proc.communicate()

    assert generation == 2 * (len(SAVE_STEPS) - visible_from)
    # Saving continues from there; the next save clears what the last kill left behind.
    path = save(folder, checkpoint_writer.make_generation(generation + 1), keep=keep)
    assert checkpoint_writer.check_generation(load_latest(folder)) == generation + 1
    assert list_checkpoints(folder)[-1] == path
    assert len(list_checkpoints(folder)) == keep
    assert not [n for n in os.listdir(folder) if n.endswith(".tmp")]


def test_save_reports_every_step_in_order(tmp_path: Path) -> None:
    steps: list[str] = []
    save(tmp_path, checkpoint_writer.make_generation(1), on_step=steps.append)
    assert tuple(steps) == SAVE_STEPS


# --------------------------------------------------------------------------------------------
# Corrupt files: a CheckpointError naming the file and the problem; load_latest skips them
# --------------------------------------------------------------------------------------------


@pytest.fixture
def small_state() -> TrainingState:
    """A state small enough that flipping every bit of its file is quick (about 5 kB)."""
    return make_state(
        1, agents=2, hidden=(1,), latent=1, encoder=(1,), state_bars=1, finetune=False,
        lineage=(LineageRecord(0, (), 0, "init", 1.0), LineageRecord(1, (0,), 1, "mutation", None)),
    )  # fmt: skip


@pytest.fixture
def small_file(tmp_path: Path, small_state: TrainingState) -> Path:
    return save(tmp_path / "small", small_state)


def expect_error(path: Path, reason: str) -> CheckpointError:
    with pytest.raises(CheckpointError, match=reason) as info:
        load(path)
    assert str(path) in str(info.value)
    assert info.value.path == path
    return info.value


def test_every_single_bit_flip_is_detected(small_file: Path) -> None:
    """Every bit of the file flipped in turn (decoded in memory, as :func:`load` does after
    reading the bytes): each one is a CheckpointError naming the file."""
    data = small_file.read_bytes()
    assert len(data) < 6000
    undetected = []
    for offset in range(len(data)):
        for bit in range(8):
            corrupt = bytearray(data)
            corrupt[offset] ^= 1 << bit
            try:
                _decode(bytes(corrupt), small_file)
            except CheckpointError as exc:
                if exc.path != small_file:
                    undetected.append((offset, bit))
            else:
                undetected.append((offset, bit))
    assert undetected == []


def test_payload_bit_flip_is_a_checksum_mismatch(small_file: Path) -> None:
    data = bytearray(small_file.read_bytes())
    data[-3] ^= 0x10  # inside the last tensor's bytes
    small_file.write_bytes(data)
    expect_error(small_file, r"checksum mismatch .*: the file is corrupt")


def test_header_bit_flip_in_the_state_is_a_checksum_mismatch(small_file: Path) -> None:
    data = small_file.read_bytes()
    at = data.index(b'\\"rows\\":1000') + len(b'\\"rows\\":')
    corrupt = bytearray(data)
    corrupt[at] ^= 0x02  # 1000 -> 3000
    small_file.write_bytes(corrupt)
    expect_error(small_file, r"checksum mismatch")


@pytest.mark.parametrize(
    ("cut", "reason"),
    [
        (lambda n, h: 0, r"empty file \(0 bytes\)"),
        (lambda n, h: 5, r"truncated or not a safetensors file: 5 bytes"),
        (lambda n, h: 8, r"truncated or not a safetensors file: the header needs"),
        (lambda n, h: 8 + h // 2, r"truncated or not a safetensors file: the header needs"),
        (lambda n, h: 8 + h, r"truncated: the header describes"),
        (lambda n, h: (8 + h + n) // 2, r"truncated: the header describes"),
        (lambda n, h: n - 1, r"truncated: the header describes"),
    ],
    ids=["empty", "5 bytes", "length only", "half header", "header only", "half data", "-1"],
)
def test_truncated_file_is_reported_as_truncated(
    small_file: Path, cut: Callable[[int, int], int], reason: str
) -> None:
    data = small_file.read_bytes()
    header_size = int.from_bytes(data[:8], "little")
    small_file.write_bytes(data[: cut(len(data), header_size)])
    expect_error(small_file, reason)


def test_appended_bytes_are_rejected(small_file: Path) -> None:
    small_file.write_bytes(small_file.read_bytes() + b"\0")
    expect_error(small_file, r"not a valid safetensors file")


def rewrite_metadata(path: Path, **changes: str) -> None:
    """Change entries of the header's ``__metadata__`` in place (the checksum is not updated)."""
    header, payload = header_and_payload(path)
    header["__metadata__"].update(changes)
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(len(text).to_bytes(8, "little") + text + payload)


def test_an_older_format_says_to_retrain(small_file: Path) -> None:
    assert FORMAT_VERSION == 2
    rewrite_metadata(small_file, format_version="1", checkpoint="{}")
    error = expect_error(small_file, r"format version 1: a checkpoint of an older colmena")
    assert "retrain with `colmena train`" in error.reason
    with (
        pytest.warns(CheckpointSkippedWarning, match="retrain"),
        pytest.raises(NoCheckpointError, match="retrain"),
    ):
        load_latest(small_file.parent)


def test_a_newer_format_version_is_rejected(small_file: Path) -> None:
    rewrite_metadata(small_file, format_version="3")
    expect_error(small_file, r"format version '3' is not supported \(this colmena reads version 2")


def drop(name: str) -> Callable[[dict[str, Any]], None]:
    return lambda d: d.pop(name)


def set_to(name: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda d: d.__setitem__(name, value)


FORGED: dict[str, tuple[dict[str, Any], str]] = {
    "missing tensor": (
        {"tensors": drop("swarm/layer1/bias")},
        r"invalid state: tensor 'swarm/layer1/bias' is missing",
    ),
    "mistyped tensor": (
        {
            "tensors": lambda t: t.__setitem__(
                "swarm/layer0/weight", t["swarm/layer0/weight"].astype(np.float64)
            )
        },
        r"tensor 'swarm/layer0/weight' must be a 3-D float32 array, got float64\[4, 6, 8\]",
    ),
    "mistyped history": (
        {"tensors": set_to("history/window_start", np.zeros(3))},
        r"tensor 'history/window_start' must be a 1-D int64 array",
    ),
    "unexpected tensor": (
        {"tensors": set_to("extra/notes", np.zeros(3))},
        r"unexpected tensors \['extra/notes'\]",
    ),
    "missing adam tensor": (
        {"tensors": drop("adam/step")},
        r"tensor 'adam/step' is missing",
    ),
    "missing field": (
        {"meta": drop("generation")},
        r"invalid state metadata: Object missing required field `generation`",
    ),
    "mistyped field": (
        {"meta": lambda m: m["config"].__setitem__("seed", "0")},
        r"invalid state metadata: Expected `int`, got `str` - at `\$.config.seed`",
    ),
    "invalid setting": (
        {"meta": lambda m: m["config"]["evolution"].__setitem__("agents", 1)},
        r"invalid state metadata: Expected `int` >= 2 - at `\$.config.evolution.agents`",
    ),
    "unknown field": (
        {"meta": set_to("epoch", 3)},
        r"invalid state metadata: Object contains unknown field `epoch`",
    ),
    "bad rng": (
        {"meta": lambda m: m["rng"].__setitem__("state", "0x12")},
        r"rng.state and rng.inc must be decimal integers",
    ),
    "inconsistent": (
        {"meta": set_to("generation", 2)},
        r"inconsistent training state: history has 3 entries but generation is 2",
    ),
    "lineage columns": (
        {"tensors": set_to("lineage/parent_offsets", np.zeros(3, np.int64))},
        r"lineage/parent_offsets do not index lineage/parent_ids",
    ),
    # issue 10: checksum-valid files that used to load and then crash or mislead a backtest
    "zero std": (
        {"tensors": set_to("normalization/std", np.zeros(4))},
        r"inconsistent training state: normalization.std\[0\] is 0.0",
    ),
    "NaN mean": (
        {"tensors": set_to("normalization/mean", np.full(4, np.nan))},
        r"inconsistent training state: normalization.mean\[0\] is nan",
    ),
    "max gap beyond int64": (
        {"meta": lambda m: m["config"]["features"].__setitem__("max_gap_bars", 2**63)},
        r"config.features.max_gap_bars is 9223372036854775808, more than the limit",
    ),
    "regime look-back beyond int64": (
        {
            "meta": lambda m: (
                m["config"]["regime"].__setitem__("lookback_bars", 2**64 - 1),
                m["regime"]["config"].__setitem__("lookback_bars", 2**64 - 1),
            )
        },
        r"config.regime.lookback_bars is 18446744073709551615, more than the limit",
    ),
    "half a logvar head": (
        {"tensors": drop("vae/logvar/bias")},
        r"invalid state: tensor 'vae/logvar/bias' is missing",
    ),
    "rng with thousands of digits": (
        {"meta": lambda m: m["rng"].__setitem__("state", "7" * 5000)},
        r"rng.state and rng.inc must be at most 39 digits",
    ),
    "deeply nested metadata": (
        {
            "meta_json": lambda j: j.replace(
                '"data":{', '"data":{"x":' + "[" * 5000 + "]" * 5000 + ","
            )
        },
        r"invalid state metadata: it nests 5002 levels deep, more than the limit of 16",
    ),
}


@pytest.mark.parametrize("case", sorted(FORGED))
def test_a_checksum_valid_file_with_a_missing_or_mistyped_field_is_refused_and_skipped(
    tmp_path: Path, case: str
) -> None:
    changes, reason = FORGED[case]
    good = save(tmp_path, make_state())
    assert load(forge(tmp_path / "same.safetensors", make_state())) == make_state()
    bad = forge(tmp_path / "checkpoint-00000002-gen000003.safetensors", make_state(), **changes)
    expect_error(bad, reason)
    report = LoadReport()
    with pytest.warns(CheckpointSkippedWarning, match=reason):
        loaded = load_latest(tmp_path, report=report)
    assert loaded == make_state()
    assert (report.path, [s.path for s in report.skipped]) == (good, [bad])


def test_encode_does_not_validate_but_load_does(tmp_path: Path) -> None:
    path = tmp_path / "shapes.safetensors"
    path.write_bytes(_encode(dataclasses.replace(make_state(), fitness=np.ones(9))))
    expect_error(path, r"inconsistent training state: fitness has 9 entries for 4 agents")


def test_load_path_takes_a_file_or_a_folder(tmp_path: Path) -> None:
    first = save(tmp_path, make_state(1))
    save(tmp_path, make_state(2))
    assert load_path(first).generation == 1
    report = LoadReport()
    assert load_path(tmp_path, report=report).generation == 2
    assert report.path == list_checkpoints(tmp_path)[-1]
    with pytest.raises(FileNotFoundError):
        load_path(tmp_path / "absent")


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", r"empty file"),
        (b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4, r"not a safetensors file"),
        (b"generation: 3\nepoch: 7\n", r"not a safetensors file"),
        (
            (8).to_bytes(8, "little") + b"[1,2,3] ",
            r"not a safetensors file: the header is not a JSON object",
        ),
        (
            safetensors.numpy.save({"w": np.ones(3, f32)}),
            r"missing metadata: the header has no __metadata__",
        ),
        (
            safetensors.numpy.save({"w": np.ones(3, f32)}, metadata={"format": "pt"}),
            r"not a colmena checkpoint",
        ),
    ],
    ids=["empty", "binary garbage", "text", "json array", "no metadata", "foreign metadata"],
)
def test_foreign_files_are_rejected(tmp_path: Path, content: bytes, reason: str) -> None:
    path = tmp_path / "checkpoint-00000001-gen000001.safetensors"
    path.write_bytes(content)
    expect_error(path, reason)


def test_load_of_a_missing_file_is_an_os_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "absent.safetensors")


def test_load_latest_skips_corrupt_newer_files_with_a_warning(tmp_path: Path) -> None:
    for g in (1, 2, 3):
        save(tmp_path, make_state(g))
    newest = list_checkpoints(tmp_path)[-1]
    newest.write_bytes(newest.read_bytes()[:-100])  # the newest is truncated
    garbage = tmp_path / "checkpoint-00000009-gen000009.safetensors"
    garbage.write_bytes(os.urandom(300))
    report = LoadReport()
    with pytest.warns(CheckpointSkippedWarning) as caught:
        checkpoint = load_latest(tmp_path, report=report)
    assert checkpoint == make_state(2)
    assert report.path == list_checkpoints(tmp_path)[1]
    assert [s.path for s in report.skipped] == [garbage, newest]
    assert "truncated" in report.skipped[1].reason
    messages = [str(w.message) for w in caught]
    assert len(messages) == 2
    assert str(garbage) in messages[0]
    assert str(newest) in messages[1]
    assert "truncated: the header describes" in messages[1]
    warning = caught[1].message
    assert isinstance(warning, CheckpointSkippedWarning)
    assert warning.path == newest
    # Saving goes on above the corrupt files; the new one is then the latest.
    path = save(tmp_path, checkpoint, keep=10)
    assert path.name == "checkpoint-00000010-gen000002.safetensors"
    assert load_latest(tmp_path) == checkpoint


def test_load_latest_with_no_valid_file_raises(tmp_path: Path) -> None:
    with pytest.raises(NoCheckpointError, match="no such directory"):
        load_latest(tmp_path / "absent")
    with pytest.raises(NoCheckpointError, match="no checkpoint files in the directory"):
        load_latest(tmp_path)
    (tmp_path / "checkpoint-00000001-gen000001.safetensors").write_bytes(b"")
    (tmp_path / "checkpoint-00000002-gen000002.safetensors").write_bytes(b"junk junk junk")
    with (
        pytest.warns(CheckpointSkippedWarning),
        pytest.raises(NoCheckpointError, match=r"none of the 2 checkpoint files is valid") as info,
    ):
        load_latest(tmp_path)
    names = [s.path.name[:20] for s in info.value.skipped]
    assert names == ["checkpoint-00000002-", "checkpoint-00000001-"]
    assert info.value.path == tmp_path
    assert isinstance(info.value, ValueError)


def test_errors_survive_pickling() -> None:
    error = CheckpointError("checksum mismatch", path=Path("a.safetensors"))
    again = pickle.loads(pickle.dumps(error))
    assert (type(again), str(again), again.path, again.reason) == (
        CheckpointError,
        str(error),
        error.path,
        error.reason,
    )
    none = pickle.loads(pickle.dumps(NoCheckpointError("empty", path=Path("d"))))
    assert isinstance(none, NoCheckpointError)
    assert none.skipped == ()


# --------------------------------------------------------------------------------------------
# Loading needs neither torch nor pickle
# --------------------------------------------------------------------------------------------

NO_TORCH_NO_PICKLE = textwrap.dedent(
    """
    import importlib.abc
    import pickle
    import sys

    class BlockTorch(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch."):
                raise ImportError("the test forbids importing torch")
            return None

    def refuse(*args, **kwargs):
        raise AssertionError("pickle was used while loading a checkpoint")

    sys.meta_path.insert(0, BlockTorch())
    pickle.load = pickle.loads = pickle.Unpickler = refuse

    from colmena.persistence.checkpoint import load, load_latest

    checkpoint = load_latest(sys.argv[1])
    load(sys.argv[2])
    assert "torch" not in sys.modules
    assert not any(m.startswith("safetensors.torch") for m in sys.modules)
    print(checkpoint.generation, checkpoint.n_agents)
    """
)


def test_loading_imports_no_torch_and_calls_no_pickle(tmp_path: Path) -> None:
    path = save(tmp_path, make_state(5))
    result = subprocess.run(
        [sys.executable, "-c", NO_TORCH_NO_PICKLE, str(tmp_path), str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["5", "4"]


# --------------------------------------------------------------------------------------------
# Hostile files (issue 10): whatever the bytes or the file type, a CheckpointError naming the
# file and the limit, never a hang, a memory bomb or another exception; load_latest skips them
# --------------------------------------------------------------------------------------------

HOSTILE_FILES = textwrap.dedent(
    """
    import json
    import os
    import socket
    import sys
    import warnings
    from pathlib import Path

    from colmena.persistence import checkpoint as checkpoint_module
    from colmena.persistence.checkpoint import CheckpointError, LoadReport, load, load_latest

    folder = Path(sys.argv[1])
    os.chdir(folder)  # a short relative name for the socket (sun_path is ~100 bytes)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind("checkpoint-00000007-gen000001.safetensors")
    report = LoadReport()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        state = load_latest(folder, report=report)
    direct = {}
    for skipped in report.skipped:
        try:
            load(skipped.path)
        except CheckpointError as exc:
            direct[skipped.path.name] = exc.reason
    # A FIFO swapped in between the stat and the open: the open must not block (O_NONBLOCK),
    # and fstat on the opened file refuses it.
    real, calls = checkpoint_module._check_file, []

    def stat_saw_a_regular_file(info, path):
        calls.append(path)
        if len(calls) > 1:
            real(info, path)

    checkpoint_module._check_file = stat_saw_a_regular_file
    try:
        load(folder / "checkpoint-00000004-gen000001.safetensors")
    except CheckpointError as exc:
        direct["swapped"] = exc.reason
    print(json.dumps({
        "generation": state.generation,
        "loaded": report.path.name,
        "skipped": [[s.path.name, s.reason] for s in report.skipped],
        "warnings": [str(w.message) for w in caught],
        "direct": direct,
    }))
    """
)


@pytest.mark.skipif(sys.platform == "win32", reason="FIFOs, /dev/zero and Unix sockets: POSIX")
def test_fifo_device_socket_directory_and_huge_sparse_file_are_refused_without_reading(
    tmp_path: Path,
) -> None:
    """Files named like newer checkpoints that are not regular files, or are too large, are
    skipped with a warning naming the kind or the limit, without being read: the child process
    gets 60 s (hang detection: a FIFO opened without O_NONBLOCK waits forever for a writer) and
    2 GiB of address space (reading /dev/zero or the 6 GB file would need more)."""
    from helpers import run_python

    good = save(tmp_path, make_state(1))
    link = tmp_path / "checkpoint-00000002-gen000001.safetensors"
    link.symlink_to(good.name)  # a symbolic link to a regular file is read
    (tmp_path / "checkpoint-00000008-gen000001.safetensors").symlink_to("absent.safetensors")
    (tmp_path / "checkpoint-00000003-gen000001.safetensors").mkdir()
    os.mkfifo(tmp_path / "checkpoint-00000004-gen000001.safetensors")
    (tmp_path / "checkpoint-00000005-gen000001.safetensors").symlink_to("/dev/zero")
    sparse = tmp_path / "checkpoint-00000006-gen000001.safetensors"
    with sparse.open("wb") as fh:
        fh.truncate(6 * 2**30)  # sparse: no disk used
    # checkpoint-00000007: the child binds a Unix socket there
    result = run_python(["-c", HOSTILE_FILES, str(tmp_path)], timeout=60, memory_bytes=2 * 2**30)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert (out["generation"], out["loaded"]) == (1, link.name)
    expected = {
        8: r"a symbolic link to a missing file \(absent.safetensors\)",
        7: r"a socket, not a regular file: only regular files are read as checkpoints",
        6: r"6442450944 bytes, more than the limit of 2147483648 bytes for a checkpoint file",
        5: r"a character device, not a regular file",
        4: r"a FIFO \(named pipe\), not a regular file",
        3: r"a directory, not a regular file",
    }
    names = [f"checkpoint-0000000{k}-gen000001.safetensors" for k in expected]
    assert [name for name, _ in out["skipped"]] == names
    for (name, reason), pattern in zip(out["skipped"], expected.values(), strict=True):
        assert re.fullmatch(pattern + ".*", reason), reason
        assert out["direct"][name] == reason
    assert len(out["warnings"]) == len(expected)
    for message, name in zip(out["warnings"], names, strict=True):
        assert name in message
    assert re.fullmatch(r"a FIFO \(named pipe\), not a regular file.*", out["direct"]["swapped"])


@pytest.mark.skipif(sys.platform == "win32", reason="address-space limits: POSIX")
def test_a_file_larger_than_the_memory_left_is_a_checkpoint_error(tmp_path: Path) -> None:
    """A sparse 1.5 GB file (under MAX_FILE_BYTES) in a child limited to 1 GiB of address space:
    the buffer cannot be allocated, and that is a CheckpointError that load_latest skips, not a
    MemoryError."""
    from helpers import run_python

    path = tmp_path / "checkpoint-00000002-gen000001.safetensors"
    with path.open("wb") as fh:
        fh.truncate(1536 * 2**20)
    script = (
        "import sys\n"
        "from colmena.persistence.checkpoint import CheckpointError, load\n"
        "try:\n"
        "    load(sys.argv[1])\n"
        "except CheckpointError as exc:\n"
        "    print(exc.reason)\n"
    )
    result = run_python(["-c", script, str(path)], timeout=60, memory_bytes=2**30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "1610612736 bytes: not enough memory to read the file"


def test_a_file_over_the_size_limit_is_refused_by_load_and_never_written_by_save(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = save(tmp_path, make_state())
    size = path.stat().st_size
    monkeypatch.setattr(checkpoint_module, "MAX_FILE_BYTES", size - 1)
    expect_error(path, rf"{size} bytes, more than the limit of {size - 1} bytes")
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(ValueError, match=rf"than the limits of .* and {size - 1} bytes"):
        save(tmp_path, make_state())
    assert sorted(os.listdir(tmp_path)) == before


def small_header(small_file: Path) -> tuple[dict[str, Any], bytes]:
    header, payload = split(small_file.read_bytes())
    return header, payload


def first_tensor(header: dict[str, Any]) -> str:
    return min((k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"])


def with_entry(field: str, literal: str) -> Callable[[dict[str, Any], bytes], bytes]:
    """The file with one field of its first tensor's entry replaced by raw JSON text."""

    def build(header: dict[str, Any], payload: bytes) -> bytes:
        header[first_tensor(header)][field] = "@@"
        return frame(json.dumps(header).replace('"@@"', literal), payload)

    return build


def with_header(
    change: Callable[[dict[str, Any]], object],
) -> Callable[[dict[str, Any], bytes], bytes]:
    def build(header: dict[str, Any], payload: bytes) -> bytes:
        change(header)
        return frame(header, payload)

    return build


def second_entry_overlaps(header: dict[str, Any]) -> None:
    names = sorted(
        (k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"]
    )
    begin, end = header[names[1]]["data_offsets"]
    header[names[1]]["data_offsets"] = [begin - 1, end - 1]


HOSTILE_HEADERS: dict[str, tuple[Callable[[dict[str, Any], bytes], bytes], str]] = {
    "infinite offset": (
        with_entry("data_offsets", "[0, 1e999]"),
        r"corrupt header: tensor '.*' has no valid data_offsets \(two integers >= 0\), got "
        r"\[0, inf\]",
    ),
    "negative infinite offset": (
        with_entry("data_offsets", "[-1e999, 8]"),
        r"no valid data_offsets",
    ),
    "float offset": (with_entry("data_offsets", "[0, 8.0]"), r"no valid data_offsets"),
    "negative offset": (with_entry("data_offsets", "[-8, 8]"), r"no valid data_offsets"),
    "string offset": (with_entry("data_offsets", '["0", "8"]'), r"no valid data_offsets"),
    "three offsets": (with_entry("data_offsets", "[0, 8, 16]"), r"no valid data_offsets"),
    "huge offset": (
        with_entry("data_offsets", f"[0, {2**70}]"),
        rf"truncated: the header describes {2**70 + 8}\d* bytes|truncated: the header describes",
    ),
    "offset with 5000 digits": (
        with_entry("data_offsets", "[0, " + "9" * 5000 + "]"),
        r"not a safetensors file \(or a corrupt header\): the header is not valid JSON",
    ),
    "reversed offsets": (with_entry("data_offsets", "[8, 0]"), r"a gap or an overlap"),
    "overlapping tensors": (with_header(second_entry_overlaps), r"a gap or an overlap"),
    "NaN dimension": (with_entry("shape", "[NaN]"), r"NaN is not a JSON number"),
    "float dimension": (with_entry("shape", "[1.0]"), r"has no valid shape \(integers >= 0\)"),
    "five dimensions": (
        with_entry("shape", "[1, 1, 1, 1, 1]"),
        r"has 5 dimensions, more than the limit of 4",
    ),
    "a huge dimension of an empty tensor": (
        with_entry("shape", f"[0, {2**40}]"),
        rf"has the shape \[0, {2**40}\], more than the limit of 2147483648 elements",
    ),
    "unsupported dtype": (with_entry("dtype", '"F16"'), r"has the unsupported dtype 'F16'"),
    "dtype not a string": (with_entry("dtype", "[]"), r"has the unsupported dtype \[\]"),
    "extra entry key": (
        with_header(lambda h: h[first_tensor(h)].__setitem__("note", 1)),
        r"must have exactly dtype, shape and data_offsets",
    ),
    "repeated tensor": (
        lambda h, p: frame(
            json.dumps(h)[:-1] + f',"{first_tensor(h)}":' + json.dumps(h[first_tensor(h)]) + "}", p
        ),
        r"the key '.*' appears twice in one object",
    ),
    "deeply nested header": (
        lambda h, p: frame('{"x":' + "[" * 100_000 + "]" * 100_000 + "}", p),
        r"the header nests 100001 levels deep, more than the limit of 16",
    ),
    "header size over the limit": (
        lambda h, p: (2**20 + 1).to_bytes(8, "little") + b"{" + b" " * (2**20),
        r"header size 1048577 is out of range \(more than the 1048576 byte limit",
    ),
    "extra metadata": (
        with_header(lambda h: h["__metadata__"].__setitem__("note", "hi")),
        r"unexpected metadata entries \['note'\]",
    ),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_HEADERS))
def test_a_hostile_header_is_a_checkpoint_error_and_skipped(small_file: Path, case: str) -> None:
    build, reason = HOSTILE_HEADERS[case]
    header, payload = small_header(small_file)
    bad = small_file.parent / "checkpoint-00000002-gen000001.safetensors"
    bad.write_bytes(build(header, payload))
    expect_error(bad, reason)
    with pytest.warns(CheckpointSkippedWarning, match=str(bad)):
        assert load_latest(small_file.parent).generation == 1


def test_too_many_tensors_are_refused_before_they_are_read(
    small_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    header, _ = small_header(small_file)
    count = len(header) - 1
    monkeypatch.setattr(checkpoint_module, "MAX_TENSORS", count - 1)
    expect_error(
        small_file, rf"the header lists {count} tensors, more than the limit of {count - 1}"
    )


@pytest.mark.parametrize(
    ("limit", "reason"),
    [
        ("MAX_LINEAGE_RECORDS", r"the lineage has 8 records, more than the limit of 7"),
        ("MAX_LINEAGE_PARENTS", r"the lineage lists 6 parent ids, more than the limit of 5"),
        ("MAX_GENERATIONS", r"the history has 3 generations, more than the limit of 2"),
        ("MAX_VAE_EPOCHS", r"the VAE history has 3 epochs, more than the limit of 2"),
    ],
)
def test_lineage_and_history_limits_are_checked_before_the_records_are_built(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, limit: str, reason: str
) -> None:
    """make_state(): 8 lineage records with 6 parent ids, 3 generations, 3 VAE epochs. The
    decoder checks the column lengths before it builds a record (a crafted lineage of
    100 million rows would otherwise decode into tens of gigabytes), and save refuses to write
    what load would refuse."""
    from colmena.training import state as state_module

    path = save(tmp_path, make_state())
    value = {"MAX_LINEAGE_RECORDS": 7, "MAX_LINEAGE_PARENTS": 5}.get(limit, 2)
    monkeypatch.setattr(checkpoint_module, limit, value)

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a record was built before the limit was checked")

    if limit.startswith("MAX_LINEAGE"):
        monkeypatch.setattr(checkpoint_module, "LineageRecord", refuse)
    expect_error(path, r"invalid state: " + reason)
    monkeypatch.undo()
    monkeypatch.setattr(state_module, limit, value)
    with pytest.raises(ValueError, match=r"more than the limit of"):
        save(tmp_path, make_state())


def test_a_huge_lineage_file_is_refused_by_its_limit(tmp_path: Path) -> None:
    """The reproducer at the real limit: MAX_LINEAGE_RECORDS + 1 records, re-signed (a 60 MB
    file that would decode into 0.6 GB of records)."""
    from colmena.training.state import MAX_LINEAGE_RECORDS

    n = MAX_LINEAGE_RECORDS + 1

    def huge(t: dict[str, np.ndarray]) -> None:
        t["lineage/agent_id"] = np.arange(n, dtype=np.int64)
        t["lineage/generation"] = np.zeros(n, np.int64)
        t["lineage/operator"] = np.zeros(n, np.uint8)
        t["lineage/fitness"] = np.zeros(n)
        t["lineage/has_fitness"] = np.zeros(n, np.bool_)
        t["lineage/parent_offsets"] = np.zeros(n + 1, np.int64)
        t["lineage/parent_ids"] = np.zeros(0, np.int64)

    path = forge(tmp_path / "huge.safetensors", make_state(), tensors=huge)
    expect_error(path, rf"the lineage has {n} records, more than the limit of {n - 1}")


@pytest.mark.parametrize("depth", [1, 2, 15, 16, 17, 1000])
def test_nesting_depth_limit_of_the_state_json(tmp_path: Path, depth: int) -> None:
    """An unknown field of the data provenance (a dataclass: msgspec skips unknown fields
    there, recursively) nested ``depth`` levels inside the state JSON, which is itself at
    depth 2: up to the limit it is skipped, beyond it the depth is named before any parse."""
    nested = "[" * depth + "]" * depth
    path = forge(
        tmp_path / "nested.safetensors",
        make_state(),
        meta_json=lambda j: j.replace('"data":{', f'"data":{{"x":{nested},', 1),
    )
    if depth + 2 <= 16:
        assert load(path) == make_state()
    else:
        expect_error(path, rf"it nests {depth + 2} levels deep, more than the limit of 16")


def json_values() -> st.SearchStrategy[Any]:
    scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
        max_leaves=30,
    )


def reference_depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max(map(reference_depth, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(reference_depth, value.values()), default=0)
    return 0


@settings(max_examples=300, deadline=None)
@given(value=json_values(), ascii_only=st.booleans())
def test_json_depth_matches_the_parsed_structure(value: Any, ascii_only: bool) -> None:
    """The bracket count that guards the parsers ignores brackets, quotes and backslashes inside
    strings: it equals the depth of the parsed value."""
    text = json.dumps(value, ensure_ascii=ascii_only).encode()
    assert checkpoint_module._json_depth(text) == reference_depth(value)


def metadata_paths() -> list[tuple[str | int, ...]]:
    """Every key and list item of the metadata of a finished per-regime state, at every level."""
    _, meta = parts(make_state(finished=True, per_regime=True))
    found: list[tuple[str | int, ...]] = []

    def walk(node: Any, at: tuple[str | int, ...]) -> None:
        if isinstance(node, dict):
            items: Any = node.items()
        elif isinstance(node, list):
            items = enumerate(node)
        else:
            return
        for key, child in items:
            found.append((*at, key))
            walk(child, (*at, key))

    walk(meta, ())
    return found


def wrong_type(value: Any) -> Any:
    """A JSON value of another type than ``value``."""
    if isinstance(value, bool):
        return "yes"
    if isinstance(value, (int, float)):
        return "7"
    if isinstance(value, str):
        return 7
    if isinstance(value, (list, dict)):
        return 7.5
    return [1]  # None


def json_path(at: tuple[str | int, ...]) -> str:
    return "$" + "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in at)


@pytest.mark.parametrize("at", metadata_paths(), ids=json_path)
def test_every_metadata_field_missing_or_mistyped_is_named(
    tmp_path: Path, at: tuple[str | int, ...]
) -> None:
    """Each field of the state JSON (re-signed, so only the decoder can object): of a wrong
    type, a CheckpointError naming its path; missing, one naming the field, unless it has a
    default (then the file decodes into a state that validates). Never another exception."""
    state = make_state(finished=True, per_regime=True)

    def at_parent(m: dict[str, Any]) -> Any:
        node: Any = m
        for key in at[:-1]:
            node = node[key]
        return node

    def mistype(m: dict[str, Any]) -> None:
        parent = at_parent(m)
        parent[at[-1]] = wrong_type(parent[at[-1]])

    def remove(m: dict[str, Any]) -> None:
        parent = at_parent(m)
        if isinstance(parent, dict):
            del parent[at[-1]]
        else:
            parent.pop(at[-1])

    path = forge(tmp_path / "mistyped.safetensors", state, meta=mistype)
    with pytest.raises(CheckpointError) as info:
        load(path)
    reason = info.value.reason
    # msgspec names a struct field .name, a list item [i] and a map value [...]
    named = [json_path(at), json_path(at[:-1]) + "[...]"]
    assert any(f"at `{where}`" in reason or f"at `{where}[" in reason for where in named) or (
        FIELD_CHECK.match(reason)
    ), reason
    path = forge(tmp_path / "missing.safetensors", state, meta=remove)
    try:
        loaded = load(path)
    except CheckpointError as exc:
        missing = exc.reason
    else:  # a field with a default, or a list one item shorter: a state that validates
        loaded.validate()
        return
    # missing, or a default that breaks a rule of its struct or of the state
    assert f"missing required field `{at[-1]}`" in missing or re.match(
        r"invalid state metadata: |invalid state: |inconsistent training state: ", missing
    ), missing


#: Reasons of the checks after the type check (a value of the right type that is wrong).
FIELD_CHECK = re.compile(r"invalid state: |inconsistent training state: ")


def test_a_checkpoint_without_logvar_trades_exactly_like_one_with_it(tmp_path: Path) -> None:
    """The documented optional layout: no vae/logvar tensors. It round-trips, validates, and a
    backtest from it (inference reads only mu) gives the same signals and trades, through the
    library and through `colmena backtest --checkpoint` (exit 0, a report written)."""
    from checkpoint_forge import candle_csv, synthetic_candles
    from colmena.backtest.engine import backtest
    from helpers import run_cli

    with_logvar = make_state(finished=True)
    without = dataclasses.replace(
        with_logvar, vae=dataclasses.replace(with_logvar.vae, logvar=None)
    )
    path = save(tmp_path / "run", without)
    header, _ = split(path.read_bytes())
    assert not [name for name in header if name.startswith("vae/logvar")]
    loaded = load(path)
    assert loaded == without
    assert loaded.vae.logvar is None
    candles = synthetic_candles(400)
    a = backtest(candles, state=with_logvar)
    b = backtest(candles, state=loaded)
    assert a.report["metrics"] == b.report["metrics"]
    assert a.trades.equals(b.trades)
    csv = candle_csv(tmp_path / "candles.csv", candles)
    result = run_cli(
        ["backtest", str(csv), "--checkpoint", str(path), "--out", str(tmp_path / "out")],
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "out" / "report.json").is_file()


@pytest.mark.parametrize(
    "bad",
    [
        normalization(std=np.zeros(4)),
        normalization(mean=np.full(4, np.nan)),
    ],
    ids=["zero std", "NaN mean"],
)
def test_a_normalization_that_makes_every_signal_nan_is_refused_before_trading(
    bad: Callable[[TrainingState], TrainingState],
) -> None:
    """It used to run to the end with every signal NaN (and exit 0)."""
    from checkpoint_forge import synthetic_candles
    from colmena.backtest.engine import backtest

    state = bad(make_state(finished=True))
    with pytest.raises(ValueError, match=r"normalization.(std|mean)\[0\] is (0.0|nan)"):
        backtest(synthetic_candles(400), state=state)
