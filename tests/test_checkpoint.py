"""Checkpoints: the codec of the typed training state (exact round trips, strict decoding),
atomic rotation, crash safety, corruption detection."""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
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


def forge(
    path: Path,
    state: TrainingState,
    *,
    tensors: Callable[[dict[str, np.ndarray]], None] = lambda t: None,
    meta: Callable[[dict[str, Any]], None] = lambda m: None,
) -> Path:
    """Write ``state`` with its tensors or metadata changed and a VALID checksum: only the
    codec's own checks can catch what is wrong."""
    t = checkpoint_module._state_tensors(state)
    m = msgspec.to_builtins(checkpoint_module._state_meta(state))
    tensors(t)
    meta(m)
    t = {k: np.ascontiguousarray(a) for k, a in t.items()}
    meta_json = checkpoint_module._canonical_json(m)
    header = {
        "format": "colmena-checkpoint",
        "format_version": "2",
        "state": meta_json,
        "sha256": checkpoint_module._digest("2", meta_json, t),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(safetensors.numpy.save(t, metadata=header))
    return path


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
