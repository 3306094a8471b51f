"""Fuzzing the checkpoint decoder (issue 10: hostile input never crashes, hangs, loses data or
bypasses a limit).

Hypothesis mutates the bytes of valid checkpoint files: flipped bits, truncations, splices,
inserted and overwritten bytes, a mutated JSON header (offsets, shapes, dtypes, keys, nesting),
and, with the checksum signed again so that the semantic layer is reached, mutated metadata
values, types and nesting and mutated tensors (values, shapes, dtypes, missing, extra). Whatever
the bytes, :func:`check` holds:

* decoding raises :class:`CheckpointError` naming the file, and nothing else; or
* it returns a state that :meth:`TrainingState.validate` accepts, and that state trades: a
  finished one runs a backtest on 300 synthetic candles to the end, an unfinished one is refused
  by :meth:`TrainingState.to_model` with its one clear ValueError.

The default run tries ``fuzz_settings()`` inputs per fuzzer; ``COLMENA_FUZZ_EXAMPLES`` raises
the budget. ``-m fuzz_long`` also runs the fuzzers in a child process with limited memory and
time, so that a memory bomb or a hang fails a test instead of taking the machine down.
"""

from __future__ import annotations

import dataclasses
import json
from functools import cache
from pathlib import Path
from typing import Any

import hypothesis
import msgspec
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from checkpoint_forge import frame, parts, signed, split, synthetic_candles
from colmena.backtest.engine import IncompatibleCheckpointError, backtest
from colmena.features.market_state import compute_market_state
from colmena.model.decision import DecisionConfig
from colmena.persistence.checkpoint import CheckpointError, _decode, _encode
from colmena.training.state import LineageRecord, TrainingState
from fuzzing import fuzz_examples, fuzz_settings
from helpers import make_state, run_python

#: The name every decoded input carries (nothing is written: the bytes are decoded in memory,
#: as :func:`colmena.persistence.checkpoint.load` does once it has read them).
PATH = Path("fuzzed/checkpoint-00000001-gen000001.safetensors")


def small(**kwargs: Any) -> TrainingState:
    """A small state (2 agents, widths [5, 2, 1], a [4, 2] encoder: a 7 kB file) deciding every
    5 minutes, so that 300 candles give 60 decisions."""
    state = make_state(
        1 if kwargs.get("finished") else 2, agents=2, hidden=(2,), latent=1, encoder=(2,),
        state_bars=1, **kwargs,
    )  # fmt: skip
    config = msgspec.structs.replace(state.config, decision=DecisionConfig(interval="5m"))
    return dataclasses.replace(state, config=config)


BASES: dict[str, TrainingState] = {
    "running": small(
        lineage=(LineageRecord(0, (), 0, "init", 1.0), LineageRecord(1, (0,), 1, "mutation", None))
    ),
    "finished": small(finished=True),
    "per_regime": small(finished=True, per_regime=True, finetune=False),
    "no_logvar": dataclasses.replace(
        small(finished=True), vae=dataclasses.replace(small(finished=True).vae, logvar=None)
    ),
}


@cache
def base_file(name: str) -> bytes:
    return _encode(BASES[name])


@cache
def candles() -> Any:
    return synthetic_candles(300)


def event(label: str) -> None:
    """Count ``label`` in the statistics (``--hypothesis-show-statistics``) of a fuzzer."""
    if hypothesis.currently_in_test_context():
        hypothesis.event(label)


def check(data: bytes) -> TrainingState | None:
    """The property every fuzzer asserts (module docstring); the decoded state or None."""
    try:
        state = _decode(data, PATH)
    except CheckpointError as exc:
        refused = exc
    else:
        state.validate()
        trade(state)
        return state
    assert refused.path == PATH
    assert str(refused).startswith(f"{PATH}: ")
    event(f"refused: {refused.reason.split(':')[0].split('(')[0].strip()[:40]}")
    return None


def trade(state: TrainingState) -> None:
    """Whatever validate() accepts, a backtest runs (or says, for an unfinished run, why not)."""
    if not state.finished:
        with pytest.raises(ValueError, match="before selection and the gate"):
            state.to_model()
        event("decoded: unfinished")
        return
    try:
        run = backtest(candles(), state=state)
    except IncompatibleCheckpointError:
        event("decoded: other feature names")  # a clear error; nothing to trade with
        return
    except ValueError as exc:
        too_short = str(exc)
    else:
        assert run.report["mode"] == "checkpoint"
        assert len(run.equity) > 0
        # the normalization every signal goes through is usable: finite standardized features
        # wherever the market state is valid (a zero std or a NaN mean made every signal NaN)
        market = compute_market_state(candles(), state.feature_spec)
        with np.errstate(all="ignore"):
            standardized = state.normalization.apply(market.features[market.valid])
            assert np.isfinite(standardized.astype(np.float32)).all(), state.normalization
        event("decoded and traded")
        return
    # windows mutated beyond these 300 candles: the data is too short, and it says so
    assert "bars of history" in too_short, too_short
    event("decoded: windows longer than the candles")


# --------------------------------------------------------------------------------------------
# Bytes: bit flips, truncation, splices (no re-signing: the checksum catches the payload)
# --------------------------------------------------------------------------------------------

bases = st.sampled_from(sorted(BASES))


@pytest.mark.fuzz
@fuzz_settings()
@given(name=bases, flips=st.lists(st.tuples(st.integers(0), st.integers(0, 7)), min_size=1))
def test_flipped_bits_are_refused(name: str, flips: list[tuple[int, int]]) -> None:
    data = bytearray(base_file(name))
    for at, bit in flips:
        data[at % len(data)] ^= 1 << bit
    state = check(bytes(data))
    assert state is None or bytes(data) == base_file(name)  # flips that undo each other


@st.composite
def spliced(draw: st.DrawFn) -> bytes:
    """A base file cut, spliced with another, with bytes inserted, deleted, overwritten or
    repeated, or with another header length."""
    data = base_file(draw(bases))
    n = len(data)
    i, j = sorted((draw(st.integers(0, n)), draw(st.integers(0, n))))
    other = base_file(draw(bases))
    noise = draw(st.binary(max_size=64))
    kind = draw(
        st.sampled_from(
            ["truncate", "splice", "insert", "delete", "overwrite", "repeat", "length", "append"]
        )
    )
    event(f"bytes: {kind}")
    if kind == "truncate":
        return data[:i]
    if kind == "splice":
        return data[:i] + other[draw(st.integers(0, len(other))) :]
    if kind == "insert":
        return data[:i] + noise + data[i:]
    if kind == "delete":
        return data[:i] + data[j:]
    if kind == "overwrite":
        return data[:i] + noise + data[i + len(noise) :]
    if kind == "repeat":
        return data[:j] + data[i:j] + data[j:]
    if kind == "length":
        length = draw(st.integers(0, 2**64 - 1) | st.integers(0, n))
        return length.to_bytes(8, "little") + data[8:]
    return data + noise


@pytest.mark.fuzz
@fuzz_settings()
@given(data=spliced())
def test_truncated_spliced_and_overwritten_files_are_refused(data: bytes) -> None:
    check(data)


# --------------------------------------------------------------------------------------------
# The JSON header: offsets, shapes, dtypes, keys, nesting (the framing layer)
# --------------------------------------------------------------------------------------------

#: Raw JSON for a header field: what a hostile writer would put there.
HOSTILE_LITERALS = {
    "data_offsets": [
        "[0, 1e999]", "[-1e999, 0]", "[0, NaN]", "[0, Infinity]", "[0, 8.0]", "[0.5, 8]",
        "[-1, 7]", "[8, 0]", "[0, 0]", f"[0, {2**63}]", f"[0, {2**64}]", f"[0, {2**70}]",
        "[0, " + "9" * 400 + "]", '["0", "8"]', "[0]", "[0, 8, 16]", "[true, 8]", "null", "1e999",
    ],
    "shape": [
        "[]", "[0]", "[1e999]", "[-1]", "[1.5]", f"[{2**63}]", f"[0, {2**40}]", f"[{2**32}, 0]",
        "[1, 1, 1, 1, 1]", "[NaN]", '["2"]', "[null]", "{}", "7",
    ],
    "dtype": [
        '"F16"', '"I32"', '"U8"', '"BOOL"', '"F64"', '"I64"', '"f32"', "null", "7", '"\\ud800"',
    ],
}  # fmt: skip


@st.composite
def mutated_headers(draw: st.DrawFn) -> bytes:
    header, payload = split(base_file(draw(bases)))
    names = sorted(k for k in header if k != "__metadata__")
    for _ in range(draw(st.integers(1, 3))):
        name = draw(st.sampled_from(names))
        kind = draw(
            st.sampled_from(
                ["field", "field", "field", "delete field", "delete", "rename", "extra", "meta"]
            )
        )
        event(f"header: {kind}")
        entry = header.get(name)
        if not isinstance(entry, dict):
            continue
        if kind == "field":
            field = draw(st.sampled_from(sorted(HOSTILE_LITERALS)))
            entry[field] = "@" + draw(st.sampled_from(HOSTILE_LITERALS[field]))
        elif kind == "delete field":
            entry.pop(draw(st.sampled_from(sorted(entry))), None)
        elif kind == "delete":
            del header[name]
        elif kind == "rename":
            header[name + draw(st.sampled_from(["", "x", "/weight"]))] = header.pop(name)
        elif kind == "extra":
            header[f"extra/{len(header)}"] = dict(entry)
        else:
            key = draw(st.sampled_from(["format", "format_version", "state", "sha256", "other"]))
            header["__metadata__"][key] = draw(st.sampled_from(["2", "1", "", "{}", "x" * 70]))
    text = json.dumps(header)
    for value in [v for e in header.values() if isinstance(e, dict) for v in e.values()]:
        if isinstance(value, str) and value.startswith("@"):
            literal = value[1:]
            text = text.replace(json.dumps(value), literal, 1)
    if draw(st.booleans()):
        depth = draw(st.integers(1, 100_000))
        text = text[:-1] + ',"deep":' + "[" * depth + "]" * depth + "}"
    return frame(text, payload)


@pytest.mark.fuzz
@fuzz_settings()
@given(data=mutated_headers())
def test_mutated_headers_are_refused(data: bytes) -> None:
    check(data)


# --------------------------------------------------------------------------------------------
# Re-signed files: the checksum matches, so the metadata and tensor checks must catch it
# --------------------------------------------------------------------------------------------


def json_values(depth: int = 3) -> st.SearchStrategy[Any]:
    scalars = (
        st.none()
        | st.booleans()
        | st.integers()
        | st.sampled_from([0, -1, 1, 2, 2**31, 2**53 + 1, 2**63 - 1, 2**63, 2**64 - 1, -(2**63)])
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.sampled_from([0.0, -0.0, 1e-300, 1e308, -1e308, 0.5, 1.5])
        | st.text(max_size=8)
        | st.sampled_from(["", "init", "trend", "1m", "5m", "0m", "PCG64", "relu", "margin", "7"])
    )
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner),
        max_leaves=8,
    )


def meta_paths(meta: Any, at: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in the metadata: the root, each key and each list item."""
    found = [at]
    if isinstance(meta, dict):
        for key, value in meta.items():
            found += meta_paths(value, (*at, key))
    elif isinstance(meta, list):
        for i, value in enumerate(meta):
            found += meta_paths(value, (*at, i))
    return found


def nearby(value: Any) -> st.SearchStrategy[Any]:
    """Values of the same kind close to ``value``: the mutations that pass a type check."""
    if isinstance(value, bool):
        return st.just(not value)
    if isinstance(value, int):
        return st.sampled_from(
            [value + 1, value - 1, 0, -1, 2 * value + 1, 2**63 - 1, 2**63, 2**64 - 1, -(2**63)]
        )
    if isinstance(value, float):
        return st.sampled_from([value * 10, -value, 0.0, 1e-13, 1e308, value + 1.0])
    if isinstance(value, str):
        return st.sampled_from([value + "x", "", value.upper(), "9" * 39, "-1", "1" * 60])
    return json_values()


#: Stands for deep nesting in the metadata until it is JSON text.
DEEP = "@@deep@@"


@st.composite
def mutated_metadata(draw: st.DrawFn, meta: dict[str, Any]) -> str:
    """The metadata JSON with 1 to 3 places changed (a nearby value, any JSON value, a deleted
    or an unknown key, an unknown key holding up to 100,000 nested arrays)."""
    for _ in range(draw(st.integers(1, 3))):
        paths = meta_paths(meta)  # again: the last change may have removed some
        leaves = [at for at in paths if at and not isinstance(_get(meta, at), (dict, list))]
        at = draw(st.sampled_from(leaves) | st.sampled_from(paths))
        parent: Any = meta
        for key in at[:-1]:
            parent = parent[key]
        kind = draw(st.sampled_from(["nearby", "nearby", "any", "delete", "unknown key", "deep"]))
        event(f"metadata: {kind}")
        if not at:
            continue
        if kind == "deep":  # an unknown key: msgspec skips it (dataclasses), recursively
            holder = parent if isinstance(parent, dict) else meta
            holder["zz"] = DEEP
            continue
        if kind == "nearby":
            parent[at[-1]] = draw(nearby(parent[at[-1]]))
        elif kind == "any":
            parent[at[-1]] = draw(json_values())
        elif kind == "delete":
            del parent[at[-1]]
        elif kind == "unknown key" and isinstance(parent, dict):
            parent[draw(st.sampled_from(["zz", "x", "note"]))] = draw(json_values())
    text = json.dumps(meta, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    if DEEP in text:
        depth = draw(st.sampled_from([1, 14, 15, 16, 17, 1000, 100_000]))
        text = text.replace(json.dumps(DEEP), "[" * depth + "]" * depth)
    return text


def _get(meta: Any, at: tuple[Any, ...]) -> Any:
    for key in at:
        meta = meta[key]
    return meta


FILE_DTYPES = [np.bool_, np.uint8, np.int64, np.float32, np.float64]
SPECIAL_VALUES = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-300, 3e38, -3e38, 1e308, -1.0, 2.0**63]


@st.composite
def mutated_tensors(draw: st.DrawFn, tensors: dict[str, np.ndarray]) -> None:
    """1 to 3 tensors changed in place: special values, another shape or dtype, deleted, an
    extra one, or two swapped."""
    for _ in range(draw(st.integers(1, 3))):
        name = draw(st.sampled_from(sorted(tensors)))
        a = tensors[name]
        kind = draw(
            st.sampled_from(
                ["values", "values", "fill", "shape", "dtype", "delete", "extra", "swap"]
            )
        )
        event(f"tensor: {kind}")
        if kind == "values" and a.size:
            a = np.array(a)
            k = draw(st.integers(0, a.size - 1))
            special = draw(st.sampled_from(SPECIAL_VALUES))
            with np.errstate(all="ignore"):
                a.reshape(-1)[k] = a.dtype.type(special) if a.dtype.kind == "f" else (
                    draw(st.sampled_from([0, 1, 2, 255, -1, 2**62, -(2**62)])) % 256
                    if a.dtype.kind in "ub" else draw(st.sampled_from([0, 1, -1, 2**62, -(2**62)]))
                )  # fmt: skip
            tensors[name] = a
        elif kind == "fill":
            with np.errstate(all="ignore"):
                tensors[name] = np.full_like(a, draw(st.sampled_from(SPECIAL_VALUES)))
        elif kind == "shape":
            shape = list(a.shape)
            choice = draw(st.sampled_from(["drop", "add", "resize", "empty"]))
            if choice == "drop" and shape:
                shape.pop()
            elif choice == "add":
                shape.append(draw(st.integers(0, 3)))
            elif choice == "empty" and shape:
                shape[draw(st.integers(0, len(shape) - 1))] = 0
            elif shape:
                shape[draw(st.integers(0, len(shape) - 1))] += draw(st.sampled_from([-1, 1, 2]))
            shape = [max(d, 0) for d in shape]
            flat = np.resize(a.reshape(-1), int(np.prod(shape))) if a.size else np.zeros(
                int(np.prod(shape)), a.dtype
            )  # fmt: skip
            tensors[name] = flat.reshape(shape)
        elif kind == "dtype":
            with np.errstate(all="ignore"):
                tensors[name] = a.astype(draw(st.sampled_from(FILE_DTYPES)))
        elif kind == "delete":
            del tensors[name]
        elif kind == "extra":
            tensors[f"{name}/extra"] = a
        else:
            other = draw(st.sampled_from(sorted(tensors)))
            tensors[name], tensors[other] = tensors[other], a


@pytest.mark.fuzz
@fuzz_settings()
@given(data=st.data(), name=bases)
def test_resigned_metadata_mutations_are_refused_or_trade(data: st.DataObject, name: str) -> None:
    tensors, meta = parts(BASES[name])
    check(signed(tensors, data.draw(mutated_metadata(meta))))


@pytest.mark.fuzz
@fuzz_settings()
@given(data=st.data(), name=bases, with_metadata=st.booleans())
def test_resigned_tensor_mutations_are_refused_or_trade(
    data: st.DataObject, name: str, with_metadata: bool
) -> None:
    tensors, meta = parts(BASES[name])
    data.draw(mutated_tensors(tensors))
    text = data.draw(mutated_metadata(meta)) if with_metadata else json.dumps(
        meta, sort_keys=True, separators=(",", ":")
    )  # fmt: skip
    check(signed(tensors, text))


# --------------------------------------------------------------------------------------------
# Exhaustive sweeps: every number of the metadata at the int64 / float extremes, every tensor
# filled with each special value (re-signed); the random fuzzers above reach each only rarely
# --------------------------------------------------------------------------------------------

INT_EXTREMES = [0, -1, 2**63, 2**64 - 1]
FLOAT_EXTREMES = [-1.0, 1e-300, 1e308]
SWEPT_VALUES = [np.nan, np.inf, 0.0, -1.0, 3e38]


def number_places(name: str) -> list[tuple[Any, ...]]:
    _, meta = parts(BASES[name])
    return [
        at
        for at in meta_paths(meta)
        if at and isinstance(_get(meta, at), (int, float)) and not isinstance(_get(meta, at), bool)
    ]


@pytest.mark.fuzz
def test_every_metadata_number_at_its_extremes() -> None:
    tensors, meta = parts(BASES["per_regime"])  # every field of the others and the regimes
    for at in number_places("per_regime"):
        original = _get(meta, at)
        for value in INT_EXTREMES if isinstance(original, int) else FLOAT_EXTREMES:
            _get(meta, at[:-1])[at[-1]] = value
            check(signed(tensors, meta))
        _get(meta, at[:-1])[at[-1]] = original


@pytest.mark.fuzz
def test_every_tensor_filled_with_each_special_value() -> None:
    tensors, meta = parts(BASES["finished"])
    for tensor in sorted(tensors):
        original = tensors[tensor]
        for value in SWEPT_VALUES:
            with np.errstate(all="ignore"):
                tensors[tensor] = np.full_like(original, value)
            check(signed(tensors, meta))
        tensors[tensor] = original


# --------------------------------------------------------------------------------------------
# The same fuzzers with a bigger budget in a child process: a hang or a memory bomb fails here
# --------------------------------------------------------------------------------------------


@pytest.mark.fuzz
@pytest.mark.fuzz_long
def test_fuzzers_in_a_child_with_limited_memory_and_time(tmp_path: Path) -> None:
    """Every fuzzer above with 5 times the budget, in a child process with 4 GiB of address
    space and 20 minutes: no input may exhaust either (each one decodes in milliseconds)."""
    examples = fuzz_examples() * 5
    args = [
        "-c",
        "import os, sys, pytest; "
        f"os.environ['COLMENA_FUZZ_EXAMPLES'] = '{examples}'; "
        "sys.exit(pytest.main(sys.argv[1:]))",
        __file__, "-q", "-m", "fuzz and not fuzz_long", "-p", "no:cacheprovider",
        "-x", f"--basetemp={tmp_path / 'child'}",
    ]  # fmt: skip
    result = run_python(args, timeout=1200, memory_bytes=4 * 2**30, cwd=Path(__file__).parent)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
