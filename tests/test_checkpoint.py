"""Checkpoints: exact round trips, atomic rotation, crash safety, corruption detection."""

from __future__ import annotations

import dataclasses
import itertools
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
import numpy as np
import pytest
import safetensors.numpy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import checkpoint_writer
from colmena.persistence.checkpoint import (
    FORMAT_VERSION,
    OPERATORS,
    SAVE_STEPS,
    Checkpoint,
    CheckpointError,
    CheckpointSkippedWarning,
    LineageRecord,
    LoadReport,
    NoCheckpointError,
    _encode,
    list_checkpoints,
    load,
    load_latest,
    save,
)

WRITER = Path(checkpoint_writer.__file__)


def make_checkpoint(
    generation: int = 3,
    *,
    n_agents: int = 4,
    widths: tuple[int, ...] = (5, 8, 3),
    latent: int = 2,
    seed: int = 0,
    **overrides: Any,
) -> Checkpoint:
    """A valid checkpoint with every documented tensor family, random values."""
    rng = np.random.default_rng(seed)
    t: dict[str, np.ndarray] = {}
    for i, (n_in, n_out) in enumerate(itertools.pairwise(widths)):
        t[f"swarm/layer{i}/weight"] = rng.standard_normal((n_agents, n_in, n_out), np.float32)
        t[f"swarm/layer{i}/bias"] = rng.standard_normal((n_agents, n_out), np.float32)
        for kind in ("weight", "bias"):
            param = t[f"swarm/layer{i}/{kind}"]
            t[f"adam/layer{i}/{kind}/exp_avg"] = rng.standard_normal(param.shape, np.float32)
            t[f"adam/layer{i}/{kind}/exp_avg_sq"] = rng.random(param.shape, np.float32)
    t["adam/step"] = rng.integers(0, 1000, n_agents).astype(np.int64)
    t["fitness"] = rng.standard_normal(n_agents)
    features = 6
    t["vae/encoder/layer0/weight"] = rng.standard_normal((features, 7), np.float32)
    t["vae/encoder/layer0/bias"] = rng.standard_normal(7, np.float32)
    for head in ("mu", "logvar"):
        t[f"vae/{head}/weight"] = rng.standard_normal((7, latent), np.float32)
        t[f"vae/{head}/bias"] = rng.standard_normal(latent, np.float32)
    t["normalization/mean"] = rng.standard_normal(features)
    t["normalization/std"] = rng.random(features) + 0.5
    for name in ("entropy", "best_fitness", "median_fitness"):
        t[f"history/{name}"] = rng.standard_normal(generation)
    t["extra/notes"] = np.frombuffer(b"free-form", dtype=np.uint8).copy()
    lineage = [LineageRecord(i, (), 0, "init", float(rng.standard_normal())) for i in range(4)]
    lineage += [
        LineageRecord(4, (0,), 1, "elite", None),
        LineageRecord(5, (0, 1), 1, "crossover", float("nan")),
        LineageRecord(6, (2,), 2, "mutation", float("-inf")),
        LineageRecord(7, (5, 6), 3, "crossover+mutation", -0.0),
    ]
    fields: dict[str, Any] = {
        "generation": generation,
        "epoch": 11,
        "tensors": t,
        "lineage": lineage,
        "config": {"population": n_agents, "widths": list(widths), "lr": 1e-3, "tag": "ñ"},
        "versions": {"colmena": "0.1.0", "numpy": np.__version__},
    }
    fields.update(overrides)
    return Checkpoint(**fields)


def with_tensors(checkpoint: Checkpoint, **changes: np.ndarray | None) -> Checkpoint:
    """``checkpoint`` with tensors replaced (None deletes); names use ``__`` for ``/``."""
    tensors = dict(checkpoint.tensors)
    for key, value in changes.items():
        name = key.replace("__", "/")
        if value is None:
            del tensors[name]
        else:
            tensors[name] = value
    return dataclasses.replace(checkpoint, tensors=tensors)


def header_and_payload(path: Path) -> tuple[dict[str, Any], bytes]:
    data = path.read_bytes()
    size = int.from_bytes(data[:8], "little")
    return json.loads(data[8 : 8 + size]), data[8 + size :]


# --------------------------------------------------------------------------------------------
# Round trips and equality
# --------------------------------------------------------------------------------------------


def test_round_trip_is_exact_and_saving_a_loaded_checkpoint_changes_nothing(
    tmp_path: Path,
) -> None:
    original = make_checkpoint()
    first = save(tmp_path, original)
    loaded = load(first)
    assert loaded == original
    second = save(tmp_path, loaded)
    assert load(second) == original
    # Same content, same checksum and byte-identical payload (the header's metadata is a
    # string map whose key order the safetensors writer does not fix).
    (h1, p1), (h2, p2) = header_and_payload(first), header_and_payload(second)
    assert h1 == h2
    assert p1 == p2


def test_loaded_checkpoint_matches_every_field(tmp_path: Path) -> None:
    original = make_checkpoint()
    loaded = load(save(tmp_path, original))
    assert (loaded.generation, loaded.epoch, loaded.format_version) == (3, 11, FORMAT_VERSION)
    assert dict(loaded.config) == dict(original.config)
    assert dict(loaded.versions) == dict(original.versions)
    assert loaded.lineage == original.lineage
    assert np.isnan(loaded.lineage[5].fitness or 0.0)
    assert loaded.lineage[4].fitness is None
    assert loaded.lineage[7].parent_ids == (5, 6)
    assert sorted(loaded.tensors) == sorted(original.tensors)
    for name, a in original.tensors.items():
        b = loaded.tensors[name]
        assert (b.dtype, b.shape) == (a.dtype, a.shape), name
        assert b.tobytes() == a.tobytes(), name
        assert not b.flags.writeable, name


DTYPES: list[np.dtype[Any]] = [
    np.dtype(t)
    for t in (
        np.bool_,
        np.int8,
        np.int16,
        np.int32,
        np.int64,
        np.uint8,
        np.uint16,
        np.uint32,
        np.uint64,
        np.float16,
        np.float32,
        np.float64,
        ">f8",
        ">i4",
    )
]

other_tensors = st.dictionaries(
    st.text(min_size=1, max_size=10).map(lambda s: "extra/" + s),
    hnp.arrays(
        dtype=st.sampled_from(DTYPES),
        shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4),
    ),
    max_size=4,
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=12,
)


@st.composite
def lineages(draw: st.DrawFn) -> list[LineageRecord]:
    ids = draw(st.lists(st.integers(0, 2**63 - 1), unique=True, max_size=8))
    records = []
    for agent_id in ids:
        op = draw(st.sampled_from(OPERATORS))
        parents: tuple[int, ...] = ()
        if op != "init":
            parents = tuple(
                draw(
                    st.lists(
                        st.integers(0, 2**63 - 1).filter(partial(ne, agent_id)),
                        min_size=1,
                        max_size=3,
                    )
                )
            )
        fitness = draw(st.none() | st.floats())
        records.append(LineageRecord(agent_id, parents, draw(st.integers(0, 2**40)), op, fitness))
    return records


@st.composite
def checkpoints(draw: st.DrawFn) -> Checkpoint:
    """Random valid checkpoints: a swarm (maybe with Adam), a VAE or not, odd extra tensors."""
    generation = draw(st.integers(0, 5))
    n_agents = draw(st.integers(1, 3))
    widths = draw(st.lists(st.integers(1, 4), min_size=1, max_size=4))

    def f32(shape: tuple[int, ...]) -> np.ndarray:
        return draw(hnp.arrays(np.float32, shape))

    t: dict[str, np.ndarray] = {}
    adam = draw(st.booleans())
    for i, (n_in, n_out) in enumerate(itertools.pairwise(widths)):
        for kind, shape in (("weight", (n_agents, n_in, n_out)), ("bias", (n_agents, n_out))):
            t[f"swarm/layer{i}/{kind}"] = f32(shape)
            if adam:
                t[f"adam/layer{i}/{kind}/exp_avg"] = f32(shape)
                t[f"adam/layer{i}/{kind}/exp_avg_sq"] = f32(shape)
    if adam:
        t["adam/step"] = draw(hnp.arrays(np.int64, n_agents))
    if draw(st.booleans()):
        t["fitness"] = draw(hnp.arrays(np.float64, n_agents))
    if draw(st.booleans()):
        encoder = draw(st.lists(st.integers(1, 3), min_size=1, max_size=3))
        for i, (n_in, n_out) in enumerate(itertools.pairwise(encoder)):
            t[f"vae/encoder/layer{i}/weight"] = f32((n_in, n_out))
            t[f"vae/encoder/layer{i}/bias"] = f32((n_out,))
        latent = draw(st.integers(1, 3))
        for head in ("mu", "logvar") if draw(st.booleans()) else ("mu",):
            t[f"vae/{head}/weight"] = f32((encoder[-1], latent))
            t[f"vae/{head}/bias"] = f32((latent,))
        if len(encoder) > 1:
            t["normalization/mean"] = draw(hnp.arrays(np.float64, encoder[0]))
            t["normalization/std"] = draw(hnp.arrays(np.float64, encoder[0]))
    for name in draw(st.lists(st.sampled_from(["entropy", "best_fitness", "other"]))):
        t[f"history/{name}"] = draw(hnp.arrays(np.float64, generation))
    t.update(draw(other_tensors))
    return Checkpoint(
        generation=generation,
        epoch=draw(st.integers(0, 2**40)),
        tensors=t,
        lineage=tuple(draw(lineages())),
        config=draw(st.dictionaries(st.text(max_size=6), json_values, max_size=4)),
        versions=draw(st.dictionaries(st.text(max_size=6), st.text(max_size=6), max_size=3)),
    )


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(original=checkpoints())
def test_random_checkpoints_round_trip_exactly(original: Checkpoint) -> None:
    original.validate()
    with tempfile.TemporaryDirectory() as folder:
        loaded = load(save(folder, original))
        assert loaded == original
        assert load(save(folder, loaded)) == original


def test_construction_copies_into_read_only_native_arrays() -> None:
    weight = np.ones((2, 3, 4), dtype=np.float32)
    big_endian = np.arange(4, dtype=">f8")
    checkpoint = make_checkpoint(
        tensors={
            "swarm/layer0/weight": weight,
            "swarm/layer0/bias": np.ones((2, 4), np.float32)[:, ::1],
            "extra/big_endian": big_endian,
            "extra/strided": np.arange(10, dtype=np.int16)[::2],
        }
    )
    weight[:] = 7  # the caller's array changes; the checkpoint must not
    assert np.all(checkpoint.tensors["swarm/layer0/weight"] == 1)
    assert all(not a.flags.writeable for a in checkpoint.tensors.values())
    assert checkpoint.tensors["extra/big_endian"].dtype.isnative
    assert checkpoint.tensors["extra/strided"].flags.c_contiguous
    with pytest.raises(ValueError, match="read-only"):
        checkpoint.tensors["swarm/layer0/weight"][0, 0, 0] = 2
    with pytest.raises(TypeError):
        checkpoint.tensors["extra/x"] = np.zeros(1)  # type: ignore[index]


def test_equality_compares_dtype_shape_and_exact_bytes() -> None:
    base = make_checkpoint()
    w = np.array(base.tensors["swarm/layer0/weight"])
    assert make_checkpoint() == base
    assert with_tensors(base, swarm__layer0__weight=w) == base
    w_nan = w.copy()
    w_nan[0, 0, 0] = np.nan
    assert with_tensors(base, swarm__layer0__weight=w_nan) == with_tensors(
        base, swarm__layer0__weight=w_nan.copy()
    )
    w_zero, w_negzero = w.copy(), w.copy()
    w_zero[0, 0, 0], w_negzero[0, 0, 0] = 0.0, -0.0
    assert with_tensors(base, swarm__layer0__weight=w_zero) != with_tensors(
        base, swarm__layer0__weight=w_negzero
    )
    notes = base.tensors["extra/notes"]
    assert with_tensors(base, extra__notes=notes.astype(np.int8)) != base
    assert with_tensors(base, extra__notes=notes.reshape(1, -1)) != base
    assert with_tensors(base, extra__more=np.zeros(0)) != base
    assert dataclasses.replace(base, epoch=12) != base
    assert dataclasses.replace(base, config={**base.config, "lr": 2e-3}) != base
    assert dataclasses.replace(base, lineage=base.lineage[:-1]) != base
    assert dataclasses.replace(base, config={**base.config, "widths": (5, 8, 3)}) == base
    assert base != "not a checkpoint"
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


def test_accessors_and_summary_describe_the_run() -> None:
    checkpoint = make_checkpoint(n_agents=4, widths=(5, 8, 3))
    assert checkpoint.n_agents == 4
    layers = checkpoint.swarm_layers()
    assert [(w.shape, b.shape) for w, b in layers] == [((4, 5, 8), (4, 8)), ((4, 8, 3), (4, 3))]
    adam = checkpoint.adam_state()
    assert adam is not None
    assert adam.step.dtype == np.dtype(np.int64)
    assert adam.step.shape == (4,)
    assert [w.shape for w, _ in adam.exp_avg_sq] == [(4, 5, 8), (4, 8, 3)]
    assert [w.shape for w, _ in checkpoint.vae_layers()] == [(6, 7)]
    assert sorted(checkpoint.vae_heads()) == ["logvar", "mu"]
    assert sorted(checkpoint.history()) == ["best_fitness", "entropy", "median_fitness"]
    text = checkpoint.summary()
    assert "generation 3, epoch 11" in text
    assert "4 agents, layers 5-8-3" in text
    assert "8 agents ever created" in text
    assert "tensors=<" in repr(checkpoint)
    bare = Checkpoint(generation=0, epoch=0, tensors={}, lineage=(), config={})
    bare.validate()
    assert (bare.n_agents, bare.adam_state(), bare.swarm_layers()) == (0, None, [])
    assert {"colmena", "numpy", "python", "safetensors"} <= set(bare.versions)


# --------------------------------------------------------------------------------------------
# Validation before writing
# --------------------------------------------------------------------------------------------

f32 = np.float32


def bad(**changes: Any) -> Callable[[Checkpoint], Checkpoint]:
    return lambda c: with_tensors(c, **changes)


def field(**changes: Any) -> Callable[[Checkpoint], Checkpoint]:
    return lambda c: dataclasses.replace(c, **changes)


def record(index: int, **changes: Any) -> Callable[[Checkpoint], Checkpoint]:
    def apply(c: Checkpoint) -> Checkpoint:
        lineage = list(c.lineage)
        lineage[index] = dataclasses.replace(lineage[index], **changes)
        return dataclasses.replace(c, lineage=tuple(lineage))

    return apply


INVALID: dict[str, tuple[Callable[[Checkpoint], Checkpoint], str]] = {
    "weight not 3-D": (
        bad(swarm__layer0__weight=np.ones((5, 8), f32)),
        r"swarm/layer0/weight must be 3-D",
    ),
    "weight float64": (
        bad(swarm__layer0__weight=np.ones((4, 5, 8))),
        r"swarm/layer0/weight must be float32",
    ),
    "layers do not chain": (
        bad(
            swarm__layer1__weight=np.ones((4, 7, 3), f32),
            adam__layer1__weight__exp_avg=np.ones((4, 7, 3), f32),
            adam__layer1__weight__exp_avg_sq=np.ones((4, 7, 3), f32),
        ),
        r"swarm/layer1/weight has 7 inputs but swarm/layer0/weight has 8 outputs",
    ),
    "missing bias": (bad(swarm__layer1__bias=None), r"swarm/layer1/bias is missing"),
    "bias shape": (
        bad(swarm__layer1__bias=np.ones((4, 2), f32)),
        r"swarm/layer1/bias must have shape \[N, out\] = \[4, 3\]",
    ),
    "layer gap": (
        bad(
            swarm__layer2__weight=np.ones((4, 3, 1), f32),
            swarm__layer2__bias=np.ones((4, 1), f32),
            swarm__layer1__weight=None,
            swarm__layer1__bias=None,
        ),
        r"swarm layers must be numbered 0\.\.1 without gaps, got \[0, 2\]",
    ),
    "agent count differs": (
        bad(fitness=np.ones(5)),
        r"fitness is for 5 agents, other tensors for 4",
    ),
    "fitness float32": (bad(fitness=np.ones(4, f32)), r"fitness must be float64"),
    "adam moment shape": (
        bad(adam__layer0__bias__exp_avg=np.ones((4, 9), f32)),
        r"adam/layer0/bias/exp_avg is float32\[4, 9\] but its parameter swarm/layer0/bias",
    ),
    "adam partial": (
        bad(adam__layer1__weight__exp_avg_sq=None),
        r"adam/layer1/weight/exp_avg_sq is missing \(Adam state is all or nothing\)",
    ),
    "adam step dtype": (bad(adam__step=np.ones(4)), r"adam/step must be int64"),
    "adam step missing": (bad(adam__step=None), r"adam/step is missing"),
    "adam without parameter": (
        bad(adam__layer5__weight__exp_avg=np.ones((4, 1, 1), f32)),
        r"adam/layer5/weight/exp_avg has no parameter swarm/layer5/weight",
    ),
    "vae head does not chain": (
        bad(vae__mu__weight=np.ones((6, 2), f32), vae__logvar__weight=np.ones((6, 2), f32)),
        r"vae/mu/weight has 6 inputs but vae/encoder/layer0/weight has 7 outputs",
    ),
    "vae logvar shape": (
        bad(vae__logvar__weight=np.ones((7, 3), f32)),
        r"vae/logvar/weight has shape \[7, 3\] but vae/mu/weight has \[7, 2\]",
    ),
    "vae without mu": (
        bad(vae__mu__weight=None, vae__mu__bias=None),
        r"vae/mu/weight is missing",
    ),
    "normalization width": (
        bad(normalization__mean=np.zeros(5), normalization__std=np.ones(5)),
        r"normalization/mean has 5 features but the VAE encoder takes 6 inputs",
    ),
    "normalization pair": (
        bad(normalization__std=None),
        r"normalization/mean is present without its pair",
    ),
    "history length": (
        bad(history__entropy=np.zeros(2)),
        r"history/entropy has 2 entries but generation is 3",
    ),
    "history other 2-D": (bad(history__loss=np.zeros((3, 1))), r"history/loss must be 1-D"),
    "reserved name": (
        lambda c: dataclasses.replace(c, tensors={**c.tensors, "__lineage__/x": np.zeros(1)}),
        r"'__lineage__/x': names starting with '__' are reserved",
    ),
    "not an array": (bad(extra__list=[1.0, 2.0]), r"tensor 'extra/list' must be a numpy.ndarray"),
    "complex dtype": (bad(extra__z=np.zeros(2, np.complex128)), r"'extra/z' has dtype complex128"),
    "object dtype": (bad(extra__o=np.array([None])), r"'extra/o' has dtype object"),
    "negative generation": (field(generation=-1), r"generation must be an int >= 0"),
    "bool epoch": (field(epoch=True), r"epoch must be an int >= 0, got True"),
    "future format": (field(format_version=2), r"format_version must be 1"),
    "nan in config": (field(config={"lr": float("nan")}), r"config\['lr'\] is nan"),
    "numpy int in config": (
        field(config={"n": [np.int64(3)]}),
        r"config\['n'\]\[0\] is a numpy.int64, which is not JSON",
    ),
    "int key in config": (field(config={1: "a"}), r"config has the key 1"),
    "versions not str": (field(versions={"numpy": 2}), r"versions must map str to str"),
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
def test_save_refuses_an_invalid_checkpoint_and_writes_nothing(tmp_path: Path, case: str) -> None:
    make_bad, message = INVALID[case]
    checkpoint = make_bad(make_checkpoint())
    save(tmp_path, make_checkpoint(generation=3, seed=1))
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(ValueError, match=message):
        save(tmp_path, checkpoint)
    assert sorted(os.listdir(tmp_path)) == before


def test_validate_reports_every_problem_at_once() -> None:
    checkpoint = with_tensors(
        dataclasses.replace(make_checkpoint(), epoch=-1),
        fitness=np.ones(4, f32),
        history__entropy=np.zeros(1),
    )
    with pytest.raises(ValueError, match=r"invalid checkpoint \(3 problems\)") as info:
        checkpoint.validate()
    for part in ("epoch", "fitness", "history/entropy"):
        assert part in str(info.value)


def test_save_rejects_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="keep must be an int >= 1"):
        save(tmp_path, make_checkpoint(), keep=0)
    with pytest.raises(TypeError, match="must be a Checkpoint"):
        save(tmp_path, {"generation": 1})  # type: ignore[arg-type]
    assert os.listdir(tmp_path) == []


# --------------------------------------------------------------------------------------------
# Directory: numbering, rotation, temporary files
# --------------------------------------------------------------------------------------------


def test_keeps_the_newest_k_with_increasing_sequence_numbers(tmp_path: Path) -> None:
    paths = [save(tmp_path / "run", make_checkpoint(generation=g), keep=3) for g in range(8)]
    assert [p.name for p in paths[:2]] == [
        "checkpoint-00000001-gen000000.safetensors",
        "checkpoint-00000002-gen000001.safetensors",
    ]
    assert list_checkpoints(tmp_path / "run") == paths[-3:]
    assert load_latest(tmp_path / "run").generation == 7
    # Numbering continues above what rotation deleted, and above what is there.
    assert save(tmp_path / "run", make_checkpoint(generation=2), keep=3).name.startswith(
        "checkpoint-00000009-gen000002"
    )
    assert load_latest(tmp_path / "run").generation == 2  # newest by sequence, not generation


def test_newest_is_decided_by_sequence_not_modification_time(tmp_path: Path) -> None:
    for g in range(3):
        save(tmp_path, make_checkpoint(generation=g))
    newest = list_checkpoints(tmp_path)[-1]
    os.utime(newest, (1_000_000, 1_000_000))  # 1970: the oldest mtime in the folder
    report = LoadReport()
    assert load_latest(tmp_path, report=report).generation == 2
    assert (report.path, report.skipped) == (newest, [])


def test_save_removes_stale_temporary_files_and_leaves_other_files(tmp_path: Path) -> None:
    save(tmp_path, make_checkpoint(generation=1))
    stale = tmp_path / ".checkpoint-00000002-gen000002.safetensors.4242.tmp"
    stale.write_bytes(b"half a checkpoint")
    other = tmp_path / "notes.txt"
    other.write_text("keep me")
    assert load_latest(tmp_path).generation == 1  # readers ignore the temporary file
    path = save(tmp_path, make_checkpoint(generation=2))
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
def small_file(tmp_path: Path) -> Path:
    """A complete but small checkpoint file (about 1.5 kB)."""
    checkpoint = Checkpoint(
        generation=1,
        epoch=0,
        tensors={
            "swarm/layer0/weight": np.arange(12, dtype=f32).reshape(2, 3, 2),
            "swarm/layer0/bias": np.ones((2, 2), f32),
            "fitness": np.array([0.5, -1.0]),
            "history/entropy": np.array([0.25]),
        },
        lineage=(
            LineageRecord(0, (), 0, "init", 1.0),
            LineageRecord(1, (0,), 1, "mutation", None),
        ),
        config={"lr": 0.1},
        versions={"colmena": "0.1.0"},
    )
    return save(tmp_path / "small", checkpoint)


def expect_error(path: Path, reason: str) -> CheckpointError:
    with pytest.raises(CheckpointError, match=reason) as info:
        load(path)
    assert str(path) in str(info.value)
    assert info.value.path == path
    return info.value


def test_every_single_bit_flip_is_detected(small_file: Path) -> None:
    data = small_file.read_bytes()
    assert len(data) < 2000
    undetected = []
    for offset in range(len(data)):
        for bit in range(8):
            corrupt = bytearray(data)
            corrupt[offset] ^= 1 << bit
            small_file.write_bytes(corrupt)
            try:
                load(small_file)
            except CheckpointError as exc:
                wrong_path = exc.path != small_file
            else:
                undetected.append((offset, bit))
                continue
            if wrong_path:
                undetected.append((offset, bit))
    assert undetected == []


def test_payload_bit_flip_is_a_checksum_mismatch(small_file: Path) -> None:
    data = bytearray(small_file.read_bytes())
    data[-3] ^= 0x10  # inside the last tensor's bytes
    small_file.write_bytes(data)
    expect_error(small_file, r"checksum mismatch .*: the file is corrupt")


def test_header_bit_flip_in_the_metadata_is_a_checksum_mismatch(small_file: Path) -> None:
    data = small_file.read_bytes()
    at = data.index(b'\\"lr\\":0.1') + len(b'\\"lr\\":0.')
    corrupt = bytearray(data)
    corrupt[at] ^= 0x02  # 0.1 -> 0.3
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


def test_other_format_version_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "v2.safetensors"
    # A consistent file (valid checksum) from a hypothetical future version.
    path.write_bytes(_encode(dataclasses.replace(make_checkpoint(), format_version=2)))
    expect_error(path, r"format version '2' is not supported \(this colmena reads version 1")


def test_inconsistent_shapes_with_a_valid_checksum_are_rejected(tmp_path: Path) -> None:
    path = tmp_path / "shapes.safetensors"
    inconsistent = with_tensors(make_checkpoint(), fitness=np.ones(9))
    path.write_bytes(_encode(inconsistent))  # _encode does not validate; save would refuse
    expect_error(path, r"inconsistent checkpoint: fitness is for 9 agents, other tensors for 4")


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
        save(tmp_path, make_checkpoint(generation=g))
    newest = list_checkpoints(tmp_path)[-1]
    newest.write_bytes(newest.read_bytes()[:-100])  # the newest is truncated
    garbage = tmp_path / "checkpoint-00000009-gen000009.safetensors"
    garbage.write_bytes(os.urandom(300))
    report = LoadReport()
    with pytest.warns(CheckpointSkippedWarning) as caught:
        checkpoint = load_latest(tmp_path, report=report)
    assert checkpoint == make_checkpoint(generation=2)
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
    path = save(tmp_path, make_checkpoint(generation=5))
    result = subprocess.run(
        [sys.executable, "-c", NO_TORCH_NO_PICKLE, str(tmp_path), str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["5", "4"]
