"""Reproducibility: the same candles, options and seed give the same checkpoints, byte for byte,
in separate processes, a resumed run included; the consensus is a fixed-order reduction, so
appending bars never changes an earlier value, not even in the last bit."""

from __future__ import annotations

import itertools
import json
import os
import struct
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from numpy.typing import NDArray

from colmena.data.ohlcv import Candles, load_ohlcv
from colmena.model.swarm import SwarmModel, consensus
from colmena.persistence import checkpoint as checkpoints
from colmena.training.trainer import train

sys.path.insert(0, str(Path(__file__).parent))
from helpers import tiny_training

BTC_2023 = "binanceus_btcusdt_1m_2023-03-01_2023-03-21.csv"
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "COLMENA_NUM_THREADS")
# cli.py has no ``if __name__ == "__main__"`` guard, so ``python -m colmena.cli`` would not run it.
CLI = [sys.executable, "-c", "from colmena.cli import main; main()"]


def assert_bitwise_equal(actual: NDArray[np.generic], expected: NDArray[np.generic]) -> None:
    """Same shape, dtype and bytes (NaN payloads and signed zeros included)."""
    assert actual.shape == expected.shape
    assert actual.dtype == expected.dtype
    if actual.tobytes() != expected.tobytes():
        a = np.atleast_1d(actual).ravel()
        b = np.atleast_1d(expected).ravel()
        bits_a = a.view(np.uint8).reshape(a.size, -1)
        bits_b = b.view(np.uint8).reshape(b.size, -1)
        bad = np.flatnonzero((bits_a != bits_b).any(axis=1))
        pytest.fail(
            f"{bad.size} of {a.size} values differ in their bits, first at {bad[:5].tolist()}: "
            f"{a[bad[:5]].tolist()} != {b[bad[:5]].tolist()}"
        )


@pytest.fixture(scope="module")
def btc_2023(shared_data_dir: Path) -> Candles:
    return load_ohlcv(shared_data_dir / BTC_2023)


# --- 1. the same checkpoint, byte for byte, from two processes ---------------------------------


def _safetensors_parts(data: bytes) -> tuple[dict[str, object], bytes]:
    """The JSON header (parsed) and the tensor bytes of a safetensors file."""
    n = struct.unpack("<Q", data[:8])[0]
    return json.loads(data[8 : 8 + n]), data[8 + n :]


def _where_they_differ(a: bytes, b: bytes) -> str:
    """A diagnosis for the failure message: header order, header content or tensor bytes."""
    try:
        header_a, body_a = _safetensors_parts(a)
        header_b, body_b = _safetensors_parts(b)
    except (ValueError, struct.error) as exc:
        return f"not readable as safetensors ({exc})"
    if body_a != body_b:
        return "the tensor bytes differ"
    if header_a != header_b:
        return "the headers differ in content (the tensor bytes are equal)"
    order_a = list(header_a.get("__metadata__", {}))  # type: ignore[call-overload]
    order_b = list(header_b.get("__metadata__", {}))  # type: ignore[call-overload]
    return (
        "only the order of keys in the safetensors header differs (the same content and tensor "
        f"bytes; __metadata__ keys {order_a} vs {order_b}): the header is not serialised in a "
        "canonical order"
    )


def _train_in_subprocess(
    data: Path,
    out: Path,
    cwd: Path,
    env_changes: dict[str, str | None],
    generations: int = 2,
    resume: Path | None = None,
) -> subprocess.Popen[str]:
    env = dict(os.environ)
    for key, value in env_changes.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    args = [
        *CLI, "train", str(data), "--out", str(out), "--agents", "8",
        "--generations", str(generations), "--vae-epochs", "2", "--eval-days", "1",
        "--decision-interval", "5m", "--seed", "11", "--finetune-steps", "1",
    ]  # fmt: skip
    if resume is not None:
        args += ["--resume", str(resume)]
    return subprocess.Popen(
        args, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def _finish(runs: dict[str, subprocess.Popen[str]]) -> None:
    for name, proc in runs.items():
        output, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"run {name} failed:\n{output}"


def test_train_cli_gives_the_same_checkpoints_byte_for_byte_in_separate_processes(
    btc_2023: Candles, tmp_path: Path
) -> None:
    """Run a trains 2 generations single-threaded; run b the same with default thread counts
    and another hash seed; run c trains 1 generation (a third setting), then a fresh process
    resumes it to 2. Every checkpoint of a and b (one per generation, then the finished run)
    is identical byte for byte, and so is c's final one."""
    pytest.importorskip("torch")
    data = tmp_path / "btc.parquet"
    pq.write_table(btc_2023.slice(0, 8_000).to_arrow(), data)
    # No set order or thread count may leak into the file. All three run at once.
    single: dict[str, str | None] = {key: "1" for key in THREAD_VARIABLES}
    default: dict[str, str | None] = dict.fromkeys(THREAD_VARIABLES)
    two = {key: "2" for key in THREAD_VARIABLES}
    _finish({
        "a": _train_in_subprocess(data, tmp_path / "a", tmp_path, single | {"PYTHONHASHSEED": "1"}),
        "b": _train_in_subprocess(
            data, tmp_path / "b", tmp_path, default | {"PYTHONHASHSEED": "2"}
        ),
        "c": _train_in_subprocess(
            data, tmp_path / "c", tmp_path, two | {"PYTHONHASHSEED": "3"}, generations=1
        ),
    })  # fmt: skip
    _finish({
        "c resumed": _train_in_subprocess(
            data, tmp_path / "c", tmp_path, single | {"PYTHONHASHSEED": "4"}, resume=tmp_path / "c"
        )
    })  # fmt: skip
    files = {name: checkpoints.list_checkpoints(tmp_path / name) for name in "abc"}
    assert [p.name for p in files["a"]] == [
        "checkpoint-00000001-gen000001.safetensors",
        "checkpoint-00000002-gen000002.safetensors",
        "checkpoint-00000003-gen000002.safetensors",  # the finished run
    ]
    assert [p.name for p in files["b"]] == [p.name for p in files["a"]]
    assert [p.name for p in files["c"]] == [
        "checkpoint-00000001-gen000001.safetensors",
        "checkpoint-00000002-gen000001.safetensors",  # c's finished 1-generation run
        "checkpoint-00000003-gen000002.safetensors",  # resumed in a new process
        "checkpoint-00000004-gen000002.safetensors",
    ]
    pairs = [*zip(files["a"], files["b"], strict=True), (files["a"][-1], files["c"][-1])]
    for path_a, path_b in pairs:
        loaded_a, loaded_b = checkpoints.load(path_a), checkpoints.load(path_b)
        assert loaded_a.differences(loaded_b) == []
        assert loaded_a == loaded_b
        bytes_a, bytes_b = path_a.read_bytes(), path_b.read_bytes()
        if bytes_a != bytes_b:
            pytest.fail(f"{path_a} and {path_b}: {_where_they_differ(bytes_a, bytes_b)}")


# --- 2. consensus: fixed-order reduction --------------------------------------------------------

N_AGENTS = 100
N_BARS = 40_000
PREFIXES = (1, 7, 1_000, 32_769, N_BARS)


@pytest.fixture(scope="module")
def agent_signals() -> NDArray[np.float32]:
    rng = np.random.default_rng(20230301)
    return rng.uniform(-1.0, 1.0, size=(N_AGENTS, N_BARS)).astype(np.float32)


@pytest.fixture(scope="module")
def weight_sets() -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """Weights [5, n_agents] (some zero, none negative) and a set per bar in [-1, 5)."""
    rng = np.random.default_rng(7)
    weights = rng.exponential(1.0, size=(5, N_AGENTS))
    weights[rng.random(weights.shape) < 0.3] = 0.0
    weights[3] = 0.0  # a set where no agent votes: consensus 0
    return weights, rng.integers(-1, 5, size=N_BARS).astype(np.int64)


def _reference(
    signals: NDArray[np.float32], weights: NDArray[np.float64], sets: NDArray[np.int64]
) -> NDArray[np.float64]:
    """Weighted mean per bar, summed over agents in index order in float64."""
    rows = weights[np.maximum(sets, 0)]  # [n_bars, n_agents]
    total = np.zeros(sets.size)
    weighted = np.zeros(sets.size)
    for i in range(signals.shape[0]):
        total += np.abs(rows[:, i])
        weighted += rows[:, i] * signals[i].astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(total > 0.0, weighted / total, 0.0)
    return np.where(sets < 0, np.nan, out)


def test_consensus_of_a_prefix_equals_the_prefix_of_the_consensus(
    agent_signals: NDArray[np.float32],
) -> None:
    weights = np.random.default_rng(3).exponential(1.0, size=N_AGENTS)
    full = consensus(agent_signals, weights)
    assert full.dtype == np.float64
    assert full.shape == (N_BARS,)
    np.testing.assert_allclose(
        full, _reference(agent_signals, weights[None, :], np.zeros(N_BARS, np.int64)), rtol=1e-12
    )
    for k in PREFIXES:
        assert_bitwise_equal(consensus(agent_signals[:, :k], weights), full[:k])
        assert_bitwise_equal(
            consensus(np.ascontiguousarray(agent_signals[:, :k]), weights), full[:k]
        )
    # The same as a 2-D weight array with one set, and in arbitrary chunks of bars.
    assert_bitwise_equal(consensus(agent_signals, weights[None, :]), full)
    bounds = [0, 1, 8, 1_008, 32_769, 32_770, N_BARS]
    chunks = [consensus(agent_signals[:, a:b], weights) for a, b in itertools.pairwise(bounds)]
    assert_bitwise_equal(np.concatenate(chunks), full)


def test_consensus_of_one_state_equals_its_column_in_a_series(
    agent_signals: NDArray[np.float32],
) -> None:
    weights = np.random.default_rng(4).exponential(1.0, size=N_AGENTS)
    full = consensus(agent_signals, weights)
    for t in (0, 1, 6, 999, 32_768, N_BARS - 1):
        one = consensus(agent_signals[:, t], weights)
        assert one.shape == ()
        assert one.dtype == np.float64
        assert_bitwise_equal(one, full[t])  # 0-d array against a 0-d element


def test_consensus_with_weight_sets_is_append_invariant(
    agent_signals: NDArray[np.float32],
    weight_sets: tuple[NDArray[np.float64], NDArray[np.int64]],
) -> None:
    weights, sets = weight_sets
    full = consensus(agent_signals, weights, sets)
    assert np.array_equal(np.isnan(full), sets < 0)
    assert np.all(full[sets == 3] == 0.0)
    np.testing.assert_allclose(full, _reference(agent_signals, weights, sets), rtol=1e-12)
    for k in PREFIXES:
        assert_bitwise_equal(consensus(agent_signals[:, :k], weights, sets[:k]), full[:k])
    for t in (0, 6, 999, 32_768, N_BARS - 1):
        one = consensus(agent_signals[:, t], weights, sets[t : t + 1])
        assert_bitwise_equal(np.atleast_1d(one), full[t : t + 1])


# --- 3. SwarmModel.signals end to end ------------------------------------------------------------

TINY = tiny_training(seed=5, interval="5m", eval_days=1)


@pytest.fixture(scope="module")
def tiny_model(btc_2023: Candles) -> SwarmModel:
    pytest.importorskip("torch")
    return train(btc_2023.slice(0, 6_000), TINY).model


@pytest.mark.parametrize("per_regime", [False, True], ids=["global", "per_regime"])
def test_swarm_signals_are_append_invariant(
    tiny_model: SwarmModel, btc_2023: Candles, per_regime: bool
) -> None:
    # Positive weights for every agent (the trained ones may all be zero when no agent beat
    # flat): the consensus then depends on every agent's signal.
    rng = np.random.default_rng(9)
    weights = rng.uniform(0.1, 2.0, size=(5 if per_regime else 1, tiny_model.n_agents))
    model = replace(tiny_model, weights=weights)
    n = 7_000  # past the training bars too
    full = model.signals(btc_2023.slice(0, n))
    assert full.valid.sum() > n // 2
    assert np.any(full.agent_signals != 0.0)
    assert np.unique(full.consensus[full.decision_rows]).size > 100
    if per_regime:
        assert np.unique(full.regime[full.regime >= 0]).size > 1
    shortest = model.feature_spec.lookback_bars  # fewer candles cannot make one state
    for k in (shortest, shortest + 6, 1_000, 4_097, 6_001, n - 1):
        part = model.signals(btc_2023.slice(0, k))
        d = part.decision_rows.size
        assert_bitwise_equal(part.decision_rows, full.decision_rows[:d])
        assert_bitwise_equal(part.agent_signals, full.agent_signals[:, :d])
        assert_bitwise_equal(part.consensus, full.consensus[:k])
        assert_bitwise_equal(part.valid, full.valid[:k])
        assert_bitwise_equal(part.decision, full.decision[:k])
        assert_bitwise_equal(part.regime, full.regime[:k])


def test_trained_model_signals_are_append_invariant(
    tiny_model: SwarmModel, btc_2023: Candles
) -> None:
    full = tiny_model.signals(btc_2023.slice(0, 6_500))
    for k in (3_001, 6_000):
        part = tiny_model.signals(btc_2023.slice(0, k))
        d = part.decision_rows.size
        assert_bitwise_equal(part.agent_signals, full.agent_signals[:, :d])
        assert_bitwise_equal(part.consensus, full.consensus[:k])
