"""Training checkpoints: a :class:`colmena.training.TrainingState` in one crash-safe file.

This module is the codec of the typed training state (:mod:`colmena.training.state`, which
documents every field): :func:`save` encodes a state atomically into a directory of numbered
files, :func:`load` decodes one file back into an equal state, and :func:`load_latest` returns the
newest file that passes every check, skipping (with a :class:`CheckpointSkippedWarning`) any that
do not. :func:`load_path` takes either a file or a directory.

File format (version 2)
-----------------------
One `safetensors <https://github.com/huggingface/safetensors>`_ file per checkpoint, so one
rename publishes it atomically. Loading parses a length-prefixed JSON header and reads raw
little-endian bytes: no pickle, nothing in the file can run code, and torch is never imported.
The header's ``__metadata__`` (string to string) holds:

``format``
    ``"colmena-checkpoint"``.
``format_version``
    ``"2"`` (:data:`FORMAT_VERSION`), checked before anything else is interpreted. Version 1
    files (a generic tensor bag, before the typed state) are refused: retrain.
``state``
    Canonical JSON (sorted keys, no spaces, ASCII) of every non-array field: the counters, the
    random generator's state (128-bit integers as decimal strings), feature names, regime
    classifier, VAE record, validation results, the train, execution and risk settings, the
    data provenance and the library versions, plus the layer counts and the lineage operator
    names the tensors below need.
``sha256``
    SHA-256, in hex, over the format name, the version, the ``state`` JSON and every tensor
    (sorted by name: name, dtype, shape, bytes, each length-prefixed). Any change to the header or
    the payload, a single flipped bit included, fails the check.

Tensors (N agents, L swarm layers, K encoder layers, F features, G generations, E VAE epochs):

==============================================================  =================  =======
name                                                            shape              dtype
==============================================================  =================  =======
``swarm/layer{i}/weight``, ``swarm/layer{i}/bias``              [N, in, out], [N, out]  f32
``adam/layer{i}/{weight,bias}/{exp_avg,exp_avg_sq}``            as the parameter   f32
``adam/step`` (both only with fine-tuning)                      [N]                i64
``agents/id``, ``agents/fitness``                               [N]                i64, f64
``lineage/{agent_id,generation,parent_offsets,parent_ids}``     [R], [R + 1], [P]  i64
``lineage/operator``, ``lineage/fitness``, ``lineage/has_fitness``  [R]            u8, f64, bool
``history/{best_fitness,median_fitness,entropy}``               [G]                f64
``history/{window_start,window_stop}``                          [G]                i64
``normalization/{mean,std}``                                    [F]                f64
``vae/encoder/layer{k}/{weight,bias}``                          [in, out], [out]   f32
``vae/mu/{weight,bias}``                                        [hidden, latent]   f32
``vae/logvar/{weight,bias}`` (optional: both or neither)        [hidden, latent]   f32
``vae/history/{train_loss,val_loss,reconstruction,kl}``         [E]                f64
``consensus/weights`` (only in a finished run)                  [S, N]             f64
==============================================================  =================  =======

The lineage is stored column-wise (parents as ``parent_offsets`` into ``parent_ids``) rather than
in the JSON header: a run creates N agents per generation and the header is small and capped.
The ``vae/logvar`` head is optional (:attr:`colmena.training.VAEState.logvar` None):
inference reads only ``mu``, and a file without it trades and resumes like one with it.

Decoding is strict: a missing, unexpected or mistyped tensor, a missing or mistyped metadata
field, or a state that fails :meth:`TrainingState.validate` is a :class:`CheckpointError` naming
it, even when the checksum is valid. Whatever :meth:`TrainingState.validate` accepts can be
traded (:meth:`TrainingState.to_model`): finite weights without empty dimensions, a finite
normalization (``|mean|`` within its limit, ``std`` at least its floor), shapes that agree
between the VAE, the swarm and the feature spec, look-back windows within the training candles,
consistent selection, gate and regime records.

Limits
------
A file is hostile until checked: :func:`load` reads only regular files (a symbolic link to one
is followed; a FIFO, a device such as ``/dev/zero``, a socket or a directory is refused without
being read, and a FIFO never blocks the reader), and every limit below is checked, in integer
arithmetic, before the memory it guards is allocated. Each is a :class:`CheckpointError` naming
the file and the limit; :func:`save` refuses to write a state that would break one.

========================================  ==========================================
:data:`MAX_FILE_BYTES`                    file size (2 GiB), by ``fstat`` before reading
:data:`MAX_HEADER_BYTES`                  JSON header (1 MiB)
:data:`MAX_JSON_DEPTH`                    nesting of the header and of its ``state`` (16)
:data:`MAX_TENSORS`                       tensors in the file (4096)
:data:`MAX_TENSOR_DIMENSIONS`             dimensions of a tensor (4)
:data:`MAX_TENSOR_ELEMENTS`               each dimension and the element count (2**31)
``training.state.MAX_LINEAGE_RECORDS``    lineage records (2,000,000; about 0.6 GB decoded)
``training.state.MAX_LINEAGE_PARENTS``    parent ids over all records (4,000,000)
``training.state.MAX_GENERATIONS``        ``history`` entries (1,000,000)
``training.state.MAX_VAE_EPOCHS``         ``vae/history`` entries (1,000,000)
========================================  ==========================================

Tensor offsets must be JSON integers (a float or ``1e999`` is refused, never converted), and the
tensors must tile the bytes after the header exactly: no gap, no overlap, nothing after the last.

Directory layout and the atomic-write protocol
----------------------------------------------
Files are named ``checkpoint-{sequence:08d}-gen{generation:06d}.safetensors``. The sequence number
grows by one with every save in the directory, so "newest" is decided by the name, never by
modification times. :func:`save`:

1. validates the state and encodes it in memory (a bad state writes nothing);
2. takes an exclusive ``flock`` on ``.checkpoint.lock`` in the directory (one writer at a time;
   the kernel releases it if the writer dies), and deletes temporary files left by a writer that
   died mid-save;
3. writes ``.checkpoint-....safetensors.{pid}.tmp`` in the same directory, flushes it and calls
   ``os.fsync`` on it (:func:`colmena.atomic_write.write_atomically`);
4. renames it onto the final name with ``os.replace``: readers see either no file or the complete
   file;
5. calls ``os.fsync`` on the directory, so the rename itself survives a power cut;
6. only then deletes checkpoints older than the newest ``keep``.

A crash at any step leaves the previous checkpoints intact and at most a stray temporary file,
which readers ignore and the next save deletes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import stat
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Final

import msgspec
import numpy as np
import safetensors.numpy
from numpy.typing import NDArray

from colmena.atomic_write import fsync_directory, write_atomically
from colmena.execution.simulation import ExecutionSettings
from colmena.features.market_state import Normalization
from colmena.features.regime import RegimeClassifier, RegimeConfig
from colmena.risk import RiskConfig
from colmena.training.config import TrainConfig
from colmena.training.state import (
    MAX_GENERATIONS,
    MAX_LINEAGE_PARENTS,
    MAX_LINEAGE_RECORDS,
    MAX_VAE_EPOCHS,
    OPERATORS,
    AdamMoments,
    DataProvenance,
    GenerationStats,
    LineageRecord,
    RNGState,
    TrainingState,
    VAEEpoch,
    VAEState,
    ValidationResult,
)

if sys.platform != "win32":
    import fcntl

__all__ = [
    "FORMAT_VERSION",
    "MAX_FILE_BYTES",
    "MAX_HEADER_BYTES",
    "MAX_JSON_DEPTH",
    "MAX_TENSORS",
    "MAX_TENSOR_DIMENSIONS",
    "MAX_TENSOR_ELEMENTS",
    "SAVE_STEPS",
    "CheckpointError",
    "CheckpointSkippedWarning",
    "LoadReport",
    "NoCheckpointError",
    "SkippedCheckpoint",
    "list_checkpoints",
    "load",
    "load_latest",
    "load_path",
    "save",
]

#: Version of the file layout this module writes and reads.
FORMAT_VERSION: Final = 2

FORMAT_NAME: Final = "colmena-checkpoint"

_FILE_RE: Final = re.compile(r"^checkpoint-([0-9]{8,})-gen([0-9]+)\.safetensors$")
_TEMP_RE: Final = re.compile(r"^\.checkpoint-.*\.tmp$")
_LOCK_NAME: Final = ".checkpoint.lock"

#: Largest checkpoint file read or written, in bytes (2 GiB; checked with ``fstat`` before any
#: byte is read). The default swarm's checkpoint is about 1 MB.
MAX_FILE_BYTES: Final = 2 * 2**30
#: Largest JSON header, in bytes (1 MiB; a real header is a few kilobytes: the lineage and every
#: other array are tensors).
MAX_HEADER_BYTES: Final = 2**20
#: Deepest nesting of arrays and objects in the header and in its ``state`` JSON (a real file
#: nests 5 levels), checked before either is parsed.
MAX_JSON_DEPTH: Final = 16
#: Most tensors in one file (a real file has 6 L + 2 K + 26).
MAX_TENSORS: Final = 4096
#: Most dimensions of one tensor (the format uses at most 3).
MAX_TENSOR_DIMENSIONS: Final = 4
#: Largest dimension, and largest element count, of one tensor.
MAX_TENSOR_ELEMENTS: Final = MAX_FILE_BYTES
#: The longest decimal string of a 128-bit generator state.
_MAX_RNG_DIGITS: Final = 39

# The brackets of JSON text as +1 (opening) and -1 (closing); everything else deleted.
_BRACKET_STEPS: Final = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")
_NOT_BRACKETS: Final = bytes(c for c in range(256) if c not in b"[{]}")

#: dtypes a tensor may have, by the name the safetensors file uses.
_FILE_DTYPES: Final[Mapping[str, np.dtype[Any]]] = {
    "BOOL": np.dtype(np.bool_),
    "U8": np.dtype("<u1"),
    "I64": np.dtype("<i8"),
    "F32": np.dtype("<f4"),
    "F64": np.dtype("<f8"),
}
_HISTORY_FLOAT: Final = ("best_fitness", "median_fitness", "entropy")
_HISTORY_INT: Final = ("window_start", "window_stop")
_VAE_LOSSES: Final = ("train_loss", "val_loss", "reconstruction", "kl")
_MOMENTS: Final = ("exp_avg", "exp_avg_sq")

Array = NDArray[Any]


# --------------------------------------------------------------------------------------------
# Errors and warnings
# --------------------------------------------------------------------------------------------


class CheckpointError(ValueError):
    """A checkpoint file cannot be used: corrupt, truncated, foreign, older or inconsistent.

    The message is ``"{path}: {reason}"``, e.g. ``ckpt/checkpoint-00000007-gen000070.safetensors:
    checksum mismatch (...): the file is corrupt``.

    Attributes
    ----------
    path : pathlib.Path
        The file (or, for :class:`NoCheckpointError`, the directory).
    reason : str
        What is wrong, without the path.
    """

    def __init__(self, reason: str, *, path: Path) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason

    def __reduce__(self) -> tuple[object, ...]:
        # Keyword-only arguments need help to survive pickling (multiprocessing).
        return (_rebuild_error, (type(self), self.reason, self.path))


def _rebuild_error(cls: type[CheckpointError], reason: str, path: Path) -> CheckpointError:
    return cls(reason, path=path)


class NoCheckpointError(CheckpointError):
    """:func:`load_latest` found no valid checkpoint: missing or empty directory, or all corrupt.

    ``path`` is the directory; ``skipped`` (tuple of :class:`SkippedCheckpoint`) lists the files
    that were tried and why each failed.
    """

    def __init__(
        self, reason: str, *, path: Path, skipped: tuple[SkippedCheckpoint, ...] = ()
    ) -> None:
        super().__init__(reason, path=path)
        self.skipped = skipped

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild_no_checkpoint, (self.reason, self.path, self.skipped))


def _rebuild_no_checkpoint(
    reason: str, path: Path, skipped: tuple[SkippedCheckpoint, ...]
) -> NoCheckpointError:
    return NoCheckpointError(reason, path=path, skipped=skipped)


class CheckpointSkippedWarning(UserWarning):
    """:func:`load_latest` passed over a corrupt or unreadable checkpoint for an older one.

    One warning per skipped file; the message names the file and the reason. Daemons can route
    these to their logs with ``logging.captureWarnings(True)``.

    Attributes
    ----------
    path : pathlib.Path
        The skipped file.
    reason : str
        Why it was skipped (the :class:`CheckpointError` reason, or the OS error).
    """

    def __init__(self, message: str, *, path: Path, reason: str) -> None:
        super().__init__(message)
        self.path = path
        self.reason = reason


@dataclass(frozen=True)
class SkippedCheckpoint:
    """A file :func:`load_latest` tried and passed over: its ``path`` and the ``reason``."""

    path: Path
    reason: str


@dataclass
class LoadReport:
    """Filled in by :func:`load_latest` when passed as ``report=``.

    Attributes
    ----------
    path : pathlib.Path or None
        The file that was loaded (None when none was valid).
    skipped : list of SkippedCheckpoint
        Newer files that were tried first and failed, newest first.
    """

    path: Path | None = None
    skipped: list[SkippedCheckpoint] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# The metadata: every non-array field of the state, decoded with type checks
# --------------------------------------------------------------------------------------------


class _RNG(msgspec.Struct, forbid_unknown_fields=True):
    bit_generator: str
    state: str  # 128-bit integers do not fit JSON numbers that every reader accepts
    inc: str
    has_uint32: int
    uinteger: int


class _Regime(msgspec.Struct, forbid_unknown_fields=True):
    config: RegimeConfig
    volatility_threshold: float
    trend_threshold: float


class _VAE(msgspec.Struct, forbid_unknown_fields=True):
    hidden_layers: int
    epochs_run: int
    best_epoch: int


class _Meta(msgspec.Struct, forbid_unknown_fields=True):
    generation: int
    swarm_layers: int
    adam: bool
    next_agent_id: int
    lineage_operators: list[str]
    rng: _RNG
    feature_names: tuple[str, ...]
    regime: _Regime
    vae: _VAE
    validation: ValidationResult | None
    config: TrainConfig
    execution: ExecutionSettings
    risk: RiskConfig
    data: DataProvenance
    versions: dict[str, str]


def _canonical_json(value: object) -> str:
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    )


# --------------------------------------------------------------------------------------------
# Encoding
# --------------------------------------------------------------------------------------------


def _little_endian(a: Array) -> Array:
    # Not np.ascontiguousarray: it turns a 0-d array into shape (1,).
    return np.asarray(a, dtype=a.dtype.newbyteorder("<"), order="C")


def _state_tensors(state: TrainingState) -> dict[str, Array]:
    t: dict[str, Array] = {}
    for i, (w, b) in enumerate(state.layers):
        t[f"swarm/layer{i}/weight"], t[f"swarm/layer{i}/bias"] = w, b
    if state.adam is not None:
        t["adam/step"] = state.adam.step
        for moment in _MOMENTS:
            for i, (w, b) in enumerate(getattr(state.adam, moment)):
                t[f"adam/layer{i}/weight/{moment}"], t[f"adam/layer{i}/bias/{moment}"] = w, b
    t["agents/id"], t["agents/fitness"] = state.agent_ids, state.fitness
    lineage = state.lineage
    codes = {op: i for i, op in enumerate(OPERATORS)}
    offsets = np.zeros(len(lineage) + 1, dtype=np.int64)
    np.cumsum([len(r.parent_ids) for r in lineage], out=offsets[1:])
    t["lineage/agent_id"] = np.array([r.agent_id for r in lineage], dtype=np.int64)
    t["lineage/generation"] = np.array([r.generation for r in lineage], dtype=np.int64)
    t["lineage/operator"] = np.array([codes[r.operator] for r in lineage], dtype=np.uint8)
    t["lineage/fitness"] = np.array(
        [math.nan if r.fitness is None else r.fitness for r in lineage], dtype=np.float64
    )
    t["lineage/has_fitness"] = np.array([r.fitness is not None for r in lineage], dtype=np.bool_)
    t["lineage/parent_offsets"] = offsets
    t["lineage/parent_ids"] = np.array([p for r in lineage for p in r.parent_ids], dtype=np.int64)
    for name in (*_HISTORY_FLOAT, *_HISTORY_INT):
        dtype = np.float64 if name in _HISTORY_FLOAT else np.int64
        t[f"history/{name}"] = np.array([getattr(h, name) for h in state.history], dtype=dtype)
    t["normalization/mean"] = state.normalization.mean
    t["normalization/std"] = state.normalization.std
    for k, (w, b) in enumerate(state.vae.layers):
        t[f"vae/encoder/layer{k}/weight"], t[f"vae/encoder/layer{k}/bias"] = w, b
    t["vae/mu/weight"], t["vae/mu/bias"] = state.vae.mu
    if state.vae.logvar is not None:
        t["vae/logvar/weight"], t["vae/logvar/bias"] = state.vae.logvar
    for name in _VAE_LOSSES:
        t[f"vae/history/{name}"] = np.array(
            [getattr(e, name) for e in state.vae.history], dtype=np.float64
        )
    if state.consensus_weights is not None:
        t["consensus/weights"] = state.consensus_weights
    return t


def _state_meta(state: TrainingState) -> _Meta:
    rng, regime, vae = state.rng, state.regime, state.vae
    return _Meta(
        generation=state.generation,
        swarm_layers=len(state.layers),
        adam=state.adam is not None,
        next_agent_id=state.next_agent_id,
        lineage_operators=list(OPERATORS),
        rng=_RNG("PCG64", str(rng.state), str(rng.inc), rng.has_uint32, rng.uinteger),
        feature_names=state.feature_names,
        regime=_Regime(regime.config, regime.volatility_threshold, regime.trend_threshold),
        vae=_VAE(len(vae.layers), vae.epochs_run, vae.best_epoch),
        validation=state.validation,
        config=state.config,
        execution=state.execution,
        risk=state.risk,
        data=state.data,
        versions=dict(sorted(state.versions.items())),
    )


def _digest(version: str, meta_json: str, tensors: Mapping[str, Array]) -> str:
    """SHA-256 over the format name, version, metadata JSON and every tensor (name, dtype,
    shape, little-endian bytes), each part length-prefixed."""
    h = hashlib.sha256()

    def frame(data: bytes | memoryview) -> None:
        view = memoryview(data)
        h.update(view.nbytes.to_bytes(8, "little"))
        h.update(view)

    frame(FORMAT_NAME.encode())
    frame(version.encode())
    frame(meta_json.encode())
    for name in sorted(tensors):
        a = tensors[name]
        if a.dtype.byteorder == ">" or not a.flags.c_contiguous:
            a = _little_endian(a)
        frame(f"{name}\0{a.dtype.str}\0{a.shape}".encode())
        frame(a.data if a.ndim else a.tobytes())
    return h.hexdigest()


def _encode(state: TrainingState) -> bytes:
    """The file's bytes for ``state`` (no validation: :func:`save` validates first)."""
    tensors = {name: _little_endian(a) for name, a in _state_tensors(state).items()}
    meta_json = _canonical_json(msgspec.to_builtins(_state_meta(state)))
    version = str(FORMAT_VERSION)
    header = {
        "format": FORMAT_NAME,
        "format_version": version,
        "state": meta_json,
        "sha256": _digest(version, meta_json, tensors),
    }
    return _canonical_header(bytes(safetensors.numpy.save(tensors, metadata=header)))


def _canonical_header(data: bytes) -> bytes:
    """The same safetensors file with its JSON header's keys sorted at every level.

    safetensors writes the ``__metadata__`` entries in a per-process hash order, so the same
    state would differ byte for byte between processes; sorting the keys (the payload and every
    offset are unchanged, the header stays padded with spaces to a multiple of 8 bytes) makes the
    file a function of the state alone.
    """
    size = int.from_bytes(data[:8], "little")
    head = json.loads(data[8 : 8 + size])
    text = json.dumps(head, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + data[8 + size :]


# --------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------


def _json_depth(text: bytes) -> int:
    """How deeply arrays and objects nest in the JSON ``text``, counted without parsing it (so
    that a deeply nested header is refused before a recursive parser sees it), in linear time:
    escaped backslashes and then escaped quotes are dropped (every JSON escape is a backslash
    and one character), the strings between the remaining quotes are dropped, and the brackets
    left are summed."""
    unescaped = text.replace(b"\\\\", b"").replace(b'\\"', b"")
    outside = b"".join(unescaped.split(b'"')[0::2])
    steps = np.frombuffer(outside.translate(_BRACKET_STEPS, _NOT_BRACKETS), dtype=np.int8)
    return int(np.cumsum(steps, dtype=np.int64).max(initial=0)) if steps.size else 0


def _parse_json(text: bytes, what: str, fail: Callable[[str], CheckpointError]) -> object:
    """``text`` parsed strictly: UTF-8, nesting at most :data:`MAX_JSON_DEPTH`, no repeated
    key, no NaN or Infinity; a CheckpointError naming ``what`` otherwise."""
    depth = _json_depth(text)
    if depth > MAX_JSON_DEPTH:
        raise fail(
            f"{what} nests {depth} levels deep, more than the limit of {MAX_JSON_DEPTH}: "
            "a corrupt or crafted file"
        )
    try:
        return json.loads(
            text.decode("utf-8"),
            object_pairs_hook=_unique_keys,
            parse_constant=_no_constant,
        )
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise fail(f"{what} is not valid JSON: {exc}") from None


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"the key {_short(key)} appears twice in one object")
        out[key] = value
    return out


def _is_count(value: object) -> bool:
    """An integer >= 0 (a JSON number without fraction or exponent; not a bool)."""
    return type(value) is int and value >= 0


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not a JSON number")


def _framing(
    data: memoryview, fail: Callable[[str], CheckpointError]
) -> tuple[dict[str, Any], int]:
    """The safetensors framing checked with integer arithmetic: the header (its size, nesting
    and JSON) and the offset where the tensor bytes begin."""
    size = data.nbytes
    if size == 0:
        raise fail("empty file (0 bytes)")
    if size < 8:
        raise fail(f"truncated or not a safetensors file: {size} bytes, less than the header size")
    header_size = int.from_bytes(data[:8], "little")
    if header_size > MAX_HEADER_BYTES:
        raise fail(
            f"not a safetensors file: header size {header_size} is out of range (more than the "
            f"{MAX_HEADER_BYTES} byte limit of a checkpoint header)"
        )
    if 8 + header_size > size:
        raise fail(
            f"truncated or not a safetensors file: the header needs {8 + header_size} bytes, "
            f"the file has {size}"
        )
    text = bytes(data[8 : 8 + header_size])
    try:
        header = _parse_json(text, "the header", fail)
    except CheckpointError as exc:
        raise fail(f"not a safetensors file (or a corrupt header): {exc.reason}") from None
    if not isinstance(header, dict):
        raise fail("not a safetensors file: the header is not a JSON object")
    return header, 8 + header_size


def _tensor_entries(
    header: dict[str, Any], start: int, size: int, fail: Callable[[str], CheckpointError]
) -> list[tuple[str, np.dtype[Any], tuple[int, ...], int, int]]:
    """Every tensor entry of the header as (name, dtype, shape, begin, end), checked against
    the limits and the bytes from ``start`` (after the header) to ``size`` (the end of the
    file): integer offsets and dimensions only, byte counts that match the shapes, and tensors
    that tile the payload exactly (the safetensors rules: no gap, no overlap, nothing after the
    last one). Names are shortened in messages (a hostile one may be a megabyte long)."""
    payload = size - start
    names = [k for k in header if k != "__metadata__"]
    if len(names) > MAX_TENSORS:
        raise fail(f"the header lists {len(names)} tensors, more than the limit of {MAX_TENSORS}")
    entries = []
    end_of_all = 0
    for name in names:
        entry = header[name]
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
            raise fail(
                f"corrupt header: tensor {_short(name)} must have exactly dtype, shape and "
                "data_offsets"
            )
        offsets, shape, dtype_name = entry["data_offsets"], entry["shape"], entry["dtype"]
        if not (
            isinstance(offsets, list) and len(offsets) == 2 and all(_is_count(v) for v in offsets)
        ):
            raise fail(
                f"corrupt header: tensor {_short(name)} has no valid data_offsets (two "
                f"integers >= 0), got {_short(offsets)}"
            )
        begin, end = offsets
        end_of_all = max(end_of_all, end)
        if not (isinstance(shape, list) and all(_is_count(v) for v in shape)):
            raise fail(
                f"corrupt header: tensor {_short(name)} has no valid shape (integers >= 0), got "
                f"{_short(shape)}"
            )
        if len(shape) > MAX_TENSOR_DIMENSIONS:
            raise fail(
                f"tensor {_short(name)} has {len(shape)} dimensions, more than the limit of "
                f"{MAX_TENSOR_DIMENSIONS}"
            )
        if any(d > MAX_TENSOR_ELEMENTS for d in shape) or math.prod(shape) > MAX_TENSOR_ELEMENTS:
            raise fail(
                f"tensor {_short(name)} has the shape {_short(shape)}, more than the limit of "
                f"{MAX_TENSOR_ELEMENTS} elements"
            )
        dtype = _FILE_DTYPES.get(dtype_name) if isinstance(dtype_name, str) else None
        if dtype is None:
            raise fail(f"tensor {_short(name)} has the unsupported dtype {_short(dtype_name)}")
        entries.append((name, dtype, tuple(shape), begin, end))
    if end_of_all > payload:
        raise fail(
            f"truncated: the header describes {start + end_of_all} bytes, the file has {size}"
        )
    position = 0
    for name, dtype, shape, begin, end in sorted(entries, key=lambda e: (e[3], e[4])):
        if begin != position or end < begin:
            raise fail(
                f"not a valid safetensors file: tensor {_short(name)} occupies bytes "
                f"[{begin}, {end}) of the data, expected to start at {position} (a gap or an "
                "overlap)"
            )
        if end - begin != math.prod(shape) * dtype.itemsize:
            raise fail(
                f"tensor {_short(name)} does not match its shape: {end - begin} bytes for "
                f"{list(shape)} {dtype.name}"
            )
        position = end
    if position != payload:
        raise fail(
            f"not a valid safetensors file: {payload - position} bytes after the last tensor"
        )
    return entries


def _read_tensors(
    data: bytes | bytearray | memoryview, fail: Callable[[str], CheckpointError]
) -> tuple[str, dict[str, Array]]:
    """Check the framing, the limits, the metadata and the checksum; the ``state`` JSON and the
    tensors (read-only views of ``data`` where aligned, copies otherwise)."""
    view = memoryview(data).cast("B")
    header, start = _framing(view, fail)
    meta = header.get("__metadata__")
    if meta is None:
        raise fail("missing metadata: the header has no __metadata__; not a colmena checkpoint")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise fail(f"not a colmena checkpoint: the metadata format is not {FORMAT_NAME!r}")
    version = meta.get("format_version")
    if version is None:
        raise fail("missing metadata: the header has no format_version")
    if version == "1":
        raise fail(
            "format version 1: a checkpoint of an older colmena (a generic tensor bag, before "
            f"the typed training state of version {FORMAT_VERSION}); it cannot be read or "
            "resumed: retrain with `colmena train`"
        )
    if version != str(FORMAT_VERSION):
        raise fail(
            f"format version {_short(version)} is not supported (this colmena reads version "
            f"{FORMAT_VERSION}; the file is newer or corrupt)"
        )
    stored, meta_json = meta.get("sha256"), meta.get("state")
    if not isinstance(stored, str) or not isinstance(meta_json, str):
        raise fail("missing metadata: 'sha256' or 'state' is absent from the header")
    extra = sorted(set(meta) - {"format", "format_version", "state", "sha256"})
    if extra:
        raise fail(f"unexpected metadata entries {_short(extra)}: a corrupt or foreign file")

    tensors: dict[str, Array] = {}
    for name, dtype, shape, begin, end in _tensor_entries(header, start, view.nbytes, fail):
        count = (end - begin) // dtype.itemsize
        a = np.frombuffer(view, dtype=dtype, count=count, offset=start + begin).reshape(shape)
        if not a.flags.aligned:
            a = a.copy()
        a = a.astype(a.dtype.newbyteorder("="), copy=False)
        a.setflags(write=False)
        tensors[name] = a

    computed = _digest(version, meta_json, tensors)
    if computed != stored:
        raise fail(
            f"checksum mismatch (stored sha256 {stored[:16]}..., computed {computed[:16]}...): "
            "the file is corrupt"
        )
    return meta_json, tensors


class _Tensors:
    """Takes the expected tensors by name, dtype and ndim; ValueError naming the first wrong."""

    def __init__(self, tensors: dict[str, Array]) -> None:
        self.left = dict(tensors)

    def take(self, name: str, dtype: type[np.generic], ndim: int) -> Array:
        a = self.left.pop(name, None)
        if a is None:
            raise ValueError(f"tensor {name!r} is missing")
        if a.dtype != np.dtype(dtype) or a.ndim != ndim:
            raise ValueError(
                f"tensor {name!r} must be a {ndim}-D {np.dtype(dtype).name} array, got "
                f"{a.dtype.name}{list(a.shape)}"
            )
        return a

    def pair(self, prefix: str, ndim: int) -> tuple[Array, Array]:
        return (
            self.take(f"{prefix}/weight", np.float32, ndim),
            self.take(f"{prefix}/bias", np.float32, ndim - 1),
        )

    def done(self) -> None:
        if self.left:
            names = ", ".join(_short(name) for name in sorted(self.left)[:5])
            raise ValueError(f"unexpected tensors [{names}]")


def _lineage(t: _Tensors, vocabulary: list[str]) -> tuple[LineageRecord, ...]:
    ids = t.take("lineage/agent_id", np.int64, 1)
    gens = t.take("lineage/generation", np.int64, 1)
    ops = t.take("lineage/operator", np.uint8, 1)
    fitness = t.take("lineage/fitness", np.float64, 1)
    known = t.take("lineage/has_fitness", np.bool_, 1)
    offsets = t.take("lineage/parent_offsets", np.int64, 1)
    parents = t.take("lineage/parent_ids", np.int64, 1)
    n = ids.shape[0]
    if n > MAX_LINEAGE_RECORDS:
        raise ValueError(
            f"the lineage has {n} records, more than the limit of {MAX_LINEAGE_RECORDS}"
        )
    if parents.shape[0] > MAX_LINEAGE_PARENTS:
        raise ValueError(
            f"the lineage lists {parents.shape[0]} parent ids, more than the limit of "
            f"{MAX_LINEAGE_PARENTS}"
        )
    if any(c.shape[0] != n for c in (gens, ops, fitness, known)):
        raise ValueError("the lineage columns differ in length")
    if (
        offsets.shape[0] != n + 1
        or offsets[0] != 0
        or offsets[-1] != parents.shape[0]
        or bool(np.any(np.diff(offsets) < 0))
    ):
        raise ValueError("lineage/parent_offsets do not index lineage/parent_ids")
    if n and int(ops.max()) >= len(vocabulary):
        raise ValueError("a lineage operator code is outside lineage_operators")
    id_list, gen_list, op_list = ids.tolist(), gens.tolist(), ops.tolist()
    fit_list, known_list = fitness.tolist(), known.tolist()
    parent_list, bounds = parents.tolist(), offsets.tolist()
    return tuple(
        LineageRecord(
            agent_id=id_list[i],
            parent_ids=tuple(parent_list[bounds[i] : bounds[i + 1]]),
            generation=gen_list[i],
            operator=vocabulary[op_list[i]],
            fitness=fit_list[i] if known_list[i] else None,
        )
        for i in range(n)
    )


def _state(meta: _Meta, tensors: dict[str, Array]) -> TrainingState:
    """Build the state from decoded metadata and tensors; ValueError naming what is wrong."""
    t = _Tensors(tensors)
    if meta.rng.bit_generator != "PCG64":
        raise ValueError(f"rng.bit_generator must be 'PCG64', got {meta.rng.bit_generator!r}")
    if max(len(meta.rng.state), len(meta.rng.inc)) > _MAX_RNG_DIGITS:
        raise ValueError(f"rng.state and rng.inc must be at most {_MAX_RNG_DIGITS} digits")
    try:
        rng = RNGState(
            state=int(meta.rng.state),
            inc=int(meta.rng.inc),
            has_uint32=meta.rng.has_uint32,
            uinteger=meta.rng.uinteger,
        )
    except ValueError:
        raise ValueError("rng.state and rng.inc must be decimal integers") from None
    layers = tuple(t.pair(f"swarm/layer{i}", 3) for i in range(meta.swarm_layers))
    adam = None
    if meta.adam:
        moments = {
            m: tuple(
                (
                    t.take(f"adam/layer{i}/weight/{m}", np.float32, 3),
                    t.take(f"adam/layer{i}/bias/{m}", np.float32, 2),
                )
                for i in range(meta.swarm_layers)
            )
            for m in _MOMENTS
        }
        step = t.take("adam/step", np.int64, 1)
        adam = AdamMoments(exp_avg=moments["exp_avg"], exp_avg_sq=moments["exp_avg_sq"], step=step)
    agent_ids = t.take("agents/id", np.int64, 1)
    fitness = t.take("agents/fitness", np.float64, 1)
    lineage = _lineage(t, meta.lineage_operators)
    columns = {name: t.take(f"history/{name}", np.float64, 1).tolist() for name in _HISTORY_FLOAT}
    columns.update({name: t.take(f"history/{name}", np.int64, 1).tolist() for name in _HISTORY_INT})
    g = len(columns["best_fitness"])
    if g > MAX_GENERATIONS:
        raise ValueError(
            f"the history has {g} generations, more than the limit of {MAX_GENERATIONS}"
        )
    if any(len(c) != g for c in columns.values()):
        raise ValueError("the history columns differ in length")
    history = tuple(
        GenerationStats(generation=i + 1, **{k: c[i] for k, c in columns.items()}) for i in range(g)
    )
    normalization = Normalization(
        mean=t.take("normalization/mean", np.float64, 1),
        std=t.take("normalization/std", np.float64, 1),
    )
    encoder = tuple(t.pair(f"vae/encoder/layer{k}", 2) for k in range(meta.vae.hidden_layers))
    mu = t.pair("vae/mu", 2)
    logvar = None  # optional: both tensors or neither
    if "vae/logvar/weight" in t.left or "vae/logvar/bias" in t.left:
        logvar = t.pair("vae/logvar", 2)
    losses = {name: t.take(f"vae/history/{name}", np.float64, 1).tolist() for name in _VAE_LOSSES}
    e = len(losses["train_loss"])
    if e > MAX_VAE_EPOCHS:
        raise ValueError(f"the VAE history has {e} epochs, more than the limit of {MAX_VAE_EPOCHS}")
    if any(len(c) != e for c in losses.values()):
        raise ValueError("the vae/history columns differ in length")
    vae = VAEState(
        layers=encoder,
        mu=mu,
        logvar=logvar,
        epochs_run=meta.vae.epochs_run,
        best_epoch=meta.vae.best_epoch,
        history=tuple(VAEEpoch(**{k: c[i] for k, c in losses.items()}) for i in range(e)),
    )
    weights = None
    if meta.validation is not None:
        weights = t.take("consensus/weights", np.float64, 2)
    t.done()
    return TrainingState(
        generation=meta.generation,
        layers=layers,
        agent_ids=agent_ids,
        fitness=fitness,
        next_agent_id=meta.next_agent_id,
        adam=adam,
        lineage=lineage,
        history=history,
        rng=rng,
        feature_names=meta.feature_names,
        normalization=normalization,
        regime=RegimeClassifier(
            config=meta.regime.config,
            volatility_threshold=meta.regime.volatility_threshold,
            trend_threshold=meta.regime.trend_threshold,
        ),
        vae=vae,
        consensus_weights=weights,
        validation=meta.validation,
        config=meta.config,
        execution=meta.execution,
        risk=meta.risk,
        data=meta.data,
        versions=meta.versions,
    )


def _decode(data: bytes | bytearray | memoryview, path: Path) -> TrainingState:
    """Parse and check a file's bytes; CheckpointError naming ``path`` for any problem (the
    contract the fuzz tests check: no other exception, whatever the bytes)."""

    def fail(reason: str) -> CheckpointError:
        return CheckpointError(reason, path=path)

    try:
        meta_json, tensors = _read_tensors(data, fail)
        text = meta_json.encode("utf-8", errors="surrogatepass")
        depth = _json_depth(text)
        if depth > MAX_JSON_DEPTH:
            raise fail(
                f"invalid state metadata: it nests {depth} levels deep, more than the limit of "
                f"{MAX_JSON_DEPTH}"
            )
        try:
            meta = msgspec.json.decode(text, type=_Meta)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise fail(f"invalid state metadata: {exc}") from None
        try:
            state = _state(meta, tensors)
        except ValueError as exc:
            raise fail(f"invalid state: {exc}") from None
    except (MemoryError, RecursionError) as exc:  # limits make these unreachable; belt and braces
        raise fail(f"the file needs more resources than are available to decode: {exc!r}") from None
    problems = state.problems()
    if problems:
        raise fail("inconsistent training state: " + "; ".join(problems))
    return state


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


def _sequence(path: Path) -> int | None:
    m = _FILE_RE.match(path.name)
    return int(m.group(1)) if m else None


def list_checkpoints(directory: str | os.PathLike[str]) -> list[Path]:
    """Checkpoint files in ``directory``, oldest first (by sequence number, not by time).

    Only names of the form ``checkpoint-{sequence}-gen{generation}.safetensors`` count; temporary
    files, the lock file and anything else are ignored. Nothing is opened or checked.

    Returns
    -------
    list of pathlib.Path
        Empty when the directory is missing or holds no checkpoint.
    """
    directory = Path(directory)
    try:
        names = os.listdir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return []
    found = [(seq, directory / n) for n in names if (seq := _sequence(Path(n))) is not None]
    return [p for _, p in sorted(found)]


@contextlib.contextmanager
def _directory_lock(directory: Path) -> Iterator[None]:
    """Exclusive lock on the directory for one writer; released by the kernel if it dies."""
    if sys.platform == "win32":
        yield
        return
    fd = os.open(directory / _LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _remove_stale_temporaries(directory: Path) -> None:
    for name in os.listdir(directory):
        if _TEMP_RE.match(name):
            with contextlib.suppress(FileNotFoundError):
                (directory / name).unlink()


#: The steps of :func:`save`, in order, as reported to its ``on_step`` callback.
SAVE_STEPS: Final = (
    "encoded",  # validated and serialised in memory; nothing touched yet
    "locked",  # the directory lock is held, stale temporary files removed
    "temporary_opened",  # the temporary file exists, empty
    "temporary_half_written",  # half of the bytes written and flushed
    "temporary_written",  # every byte written and flushed, not yet fsync'd
    "temporary_synced",  # fsync'd, not yet renamed
    "renamed",  # os.replace done: the new checkpoint is visible
    "directory_synced",  # the rename is durable
    "pruned",  # checkpoints beyond ``keep`` deleted
)


def save(
    directory: str | os.PathLike[str],
    state: TrainingState,
    *,
    keep: int = 5,
    on_step: Callable[[str], None] | None = None,
) -> Path:
    """Write ``state`` atomically as the newest file in ``directory``; keep the last ``keep``.

    The write protocol (temporary file, flush, fsync, ``os.replace``, directory fsync, and only
    then rotation) is described in the module docstring: a crash or power cut at any point
    leaves the previous newest checkpoint intact and never a partial file under a checkpoint name.
    One writer per directory at a time (an exclusive lock serialises concurrent saves).

    Parameters
    ----------
    directory : str or os.PathLike
        Folder of checkpoints; created (with parents) if missing.
    state : TrainingState
        What to save; checked with :meth:`TrainingState.validate` before anything is written.
    keep : int
        How many of the newest checkpoints to keep (>= 1); older ones are deleted after the new
        one is durable. Counted by sequence number, valid or not.
    on_step : callable, optional
        Called with the name of each step of the protocol as it completes (:data:`SAVE_STEPS`):
        progress, and the points where the power-cut test kills the writer.

    Returns
    -------
    pathlib.Path
        The new file, ``checkpoint-{sequence:08d}-gen{generation:06d}.safetensors``, whose
        sequence is one more than the highest in the directory.

    Raises
    ------
    TypeError
        If ``state`` is not a :class:`TrainingState`.
    ValueError
        If the state is invalid (naming every bad field), ``keep < 1``, or its file would
        exceed :data:`MAX_FILE_BYTES` or :data:`MAX_HEADER_BYTES`; nothing is written.
    OSError
        If the directory or file cannot be written; the temporary file is removed.
    """
    if not isinstance(state, TrainingState):
        raise TypeError(f"state must be a TrainingState, got {type(state).__name__}")
    if not isinstance(keep, int) or isinstance(keep, bool) or keep < 1:
        raise ValueError(f"keep must be an int >= 1, got {keep!r}")
    state.validate()
    data = _encode(state)
    header_size = int.from_bytes(data[:8], "little")
    if header_size > MAX_HEADER_BYTES or len(data) > MAX_FILE_BYTES:
        raise ValueError(
            f"the checkpoint would have a {header_size} byte header and {len(data)} bytes, more "
            f"than the limits of {MAX_HEADER_BYTES} and {MAX_FILE_BYTES} bytes that load reads; "
            "nothing was written"
        )

    def step(name: str) -> None:
        if on_step is not None:
            on_step(name)

    step("encoded")
    directory = Path(directory)
    if not directory.is_dir():
        directory.mkdir(parents=True, exist_ok=True)
        fsync_directory(directory.parent)
    with _directory_lock(directory):
        _remove_stale_temporaries(directory)
        existing = list_checkpoints(directory)
        sequence = max((_sequence(p) or 0 for p in existing), default=0) + 1
        final = directory / f"checkpoint-{sequence:08d}-gen{state.generation:06d}.safetensors"
        step("locked")

        def write_halves(fh: BinaryIO) -> None:
            half = len(data) // 2
            fh.write(data[:half])
            fh.flush()
            step("temporary_half_written")
            fh.write(data[half:])

        write_atomically(final, write_halves, on_step=step)

        old = [*existing, final][:-keep]
        for path in old:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        if old:
            fsync_directory(directory)
        step("pruned")
    return final


def _file_kind(mode: int) -> str:
    for test, kind in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return kind
    return "not a regular file"


def _check_file(info: os.stat_result, path: Path) -> None:
    """CheckpointError unless ``info`` is of a regular file within :data:`MAX_FILE_BYTES`."""
    if not stat.S_ISREG(info.st_mode):
        raise CheckpointError(
            f"{_file_kind(info.st_mode)}, not a regular file: only regular files are read as "
            "checkpoints",
            path=path,
        )
    if info.st_size > MAX_FILE_BYTES:
        raise CheckpointError(
            f"{info.st_size} bytes, more than the limit of {MAX_FILE_BYTES} bytes for a "
            "checkpoint file; not read",
            path=path,
        )


#: Flags of the read-only open: never block (a FIFO opened for reading waits for a writer
#: without O_NONBLOCK), never become the controlling terminal, not inherited by children.
_OPEN_FLAGS: Final = (
    os.O_RDONLY
    | getattr(os, "O_NONBLOCK", 0)
    | getattr(os, "O_NOCTTY", 0)
    | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_BINARY", 0)
)


def _read_file(path: Path) -> bytearray:
    """Every byte of the regular file ``path`` (a symbolic link is followed to its target, which
    must be a regular file too).

    ``stat`` refuses anything else before it is opened (a FIFO, a device such as
    ``/dev/zero``, a socket, a directory) and a file over :data:`MAX_FILE_BYTES`; the file is
    opened without blocking and ``fstat`` checks the opened file again (it may have been
    replaced in between); exactly its size is read, and a file that changed size meanwhile is
    refused.

    Raises
    ------
    CheckpointError
        Not a regular file, a symbolic link to a missing file, too large (or larger than the
        memory available), or changed while being read.
    OSError
        Missing, no permission, I/O error.
    """
    try:
        info = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise CheckpointError(
                f"a symbolic link to a missing file ({os.readlink(path)})", path=path
            ) from None
        raise
    _check_file(info, path)
    fd = os.open(path, _OPEN_FLAGS)
    with open(fd, "rb", buffering=0, closefd=True) as fh:
        info = os.fstat(fd)
        _check_file(info, path)
        size = info.st_size
        try:
            data = bytearray(size)
        except MemoryError:
            raise CheckpointError(
                f"{size} bytes: not enough memory to read the file", path=path
            ) from None
        view = memoryview(data)
        got = 0
        while got < size:
            n = fh.readinto(view[got:])
            if not n:
                break
            got += n
        if got != size or fh.read(1):
            raise CheckpointError(
                f"the file changed size while being read ({size} bytes when opened)", path=path
            )
    return data


def load(path: str | os.PathLike[str]) -> TrainingState:
    """Read one checkpoint file and check it completely.

    Checks, in order: that ``path`` is a regular file (or a symbolic link to one) of at most
    :data:`MAX_FILE_BYTES` (before reading it, without ever blocking on a FIFO), the safetensors
    framing (truncation, garbage, the header, tensor and nesting limits of the module
    docstring, offsets in integer arithmetic), the metadata (present, ours, format version),
    the SHA-256 checksum over header metadata and every tensor byte, the lineage and history
    limits, every field's presence and type, and :meth:`TrainingState.validate`. No pickle, no
    code from the file, no torch.

    Returns
    -------
    TrainingState
        Equal to the one saved; its arrays are read-only.

    Raises
    ------
    CheckpointError
        If the path is not a regular file (a FIFO, a device, a socket, a directory), the file
        exceeds a limit, is empty, truncated, not a safetensors file, lacks the metadata, has
        another format version (version 1: retrain), fails the checksum (bit flips), lacks a
        field or has one of the wrong type, or holds an inconsistent state; the message names
        the file and the problem (and the limit). No other exception comes from the bytes.
    OSError
        If the file cannot be read (missing, permissions, I/O error).
    """
    path = Path(path)
    return _decode(_read_file(path), path)


def load_latest(
    directory: str | os.PathLike[str], *, report: LoadReport | None = None
) -> TrainingState:
    """Load the newest valid checkpoint in ``directory``, passing over corrupt newer ones.

    Files are tried from the highest sequence number down. Each one that fails :func:`load`
    (or cannot be read) raises a :class:`CheckpointSkippedWarning` naming it and the reason,
    and the next older one is tried. A file deleted by a concurrent save's rotation while
    being tried is passed over silently and the directory is listed again.

    Parameters
    ----------
    directory : str or os.PathLike
        Folder written by :func:`save`.
    report : LoadReport, optional
        Filled in with the file loaded and the files skipped (newest first) with reasons.

    Returns
    -------
    TrainingState
        The newest state that passed every check.

    Raises
    ------
    NoCheckpointError
        If the directory is missing, holds no checkpoint, or none is valid (its ``skipped``
        lists every file tried and why it failed).
    """
    directory = Path(directory)
    skipped: list[SkippedCheckpoint] = []
    if report is not None:
        report.path, report.skipped = None, skipped
    if not directory.is_dir():
        raise NoCheckpointError("no such directory, so no checkpoint to load", path=directory)
    tried: set[Path] = set()
    for _ in range(3):  # list again if a concurrent rotation deleted what was listed
        vanished = False
        for path in reversed(list_checkpoints(directory)):
            if path in tried:
                continue
            tried.add(path)
            try:
                state = load(path)
            except FileNotFoundError:
                vanished = True
                continue
            except (CheckpointError, OSError) as exc:
                reason = exc.reason if isinstance(exc, CheckpointError) else f"unreadable: {exc}"
                skipped.append(SkippedCheckpoint(path, reason))
                warnings.warn(
                    CheckpointSkippedWarning(
                        f"skipping checkpoint {path}: {reason}; trying an older one",
                        path=path,
                        reason=reason,
                    ),
                    stacklevel=2,
                )
                continue
            if report is not None:
                report.path = path
            return state
        if not vanished:
            break
    if not skipped:
        raise NoCheckpointError("no checkpoint files in the directory", path=directory)
    reasons = "; ".join(f"{s.path.name}: {s.reason}" for s in skipped)
    raise NoCheckpointError(
        f"none of the {len(skipped)} checkpoint files is valid ({reasons})",
        path=directory,
        skipped=tuple(skipped),
    )


def load_path(path: str | os.PathLike[str], *, report: LoadReport | None = None) -> TrainingState:
    """A checkpoint file (:func:`load`), or a directory's newest valid one (:func:`load_latest`).

    Raises
    ------
    CheckpointError
        As :func:`load` or :func:`load_latest` (:class:`NoCheckpointError`).
    OSError
        If the path does not exist or cannot be read.
    """
    path = Path(path)
    if path.is_dir():
        return load_latest(path, report=report)
    state = load(path)
    if report is not None:
        report.path, report.skipped = path, []
    return state
