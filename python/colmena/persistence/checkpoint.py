"""Training checkpoints: the whole state of a swarm run in one crash-safe file.

A :class:`Checkpoint` holds the generation and epoch counters, every array of the run (agent
weights, each agent's Adam moments, fitness, the VAE encoder, feature normalisation, per-generation
history), the genetic lineage of every agent ever created, the training configuration and the
library versions. :func:`save` writes it atomically into a directory of numbered files;
:func:`load_latest` returns the newest file that passes every check, skipping (with a
:class:`CheckpointSkippedWarning`) any that do not.

File format
-----------
One `safetensors <https://github.com/huggingface/safetensors>`_ file per checkpoint, so one
rename publishes it atomically and no pair of files can disagree. Loading parses a length-prefixed
JSON header and copies raw little-endian bytes: no pickle, nothing in the file can run code, and
torch is never imported. The header's ``__metadata__`` (string to string) holds:

``format``
    ``"colmena-checkpoint"``.
``format_version``
    ``"1"`` (:data:`FORMAT_VERSION`), checked before anything else is interpreted.
``checkpoint``
    Canonical JSON (sorted keys, no spaces, ASCII): ``generation``, ``epoch``, ``config``,
    ``versions`` and ``lineage_operators`` (the operator names the lineage codes index).
``sha256``
    SHA-256, in hex, over the format name, the version, the ``checkpoint`` JSON and every tensor
    (sorted by name: name, dtype, shape, bytes, each length-prefixed). Any change to the header or
    the payload, a single flipped bit included, fails the check.

The lineage is stored column-wise as tensors under the reserved prefix ``__lineage__/``
(``agent_id``, ``generation``, ``operator`` codes, ``fitness`` with a ``has_fitness`` mask, and
the parents as ``parent_offsets`` [R + 1] into ``parent_ids``) rather than as JSON in the
header: a run creates N agents per generation for as long as it runs, the safetensors header is
capped at 100 MB, and columns take about 50 bytes per agent (two parents) and load without a
JSON parse.

Tensor names
------------
Names are ``/``-separated. These are checked by :meth:`Checkpoint.validate` (N agents, L swarm
layers, F features, G = ``generation``); any other name is allowed and round-trips untouched,
except names starting with ``__`` (reserved for the file format).

======================================================  ==========================  =========
name                                                    shape                       dtype
======================================================  ==========================  =========
``swarm/layer{i}/weight``, i = 0 .. L-1                 [N, in_i, out_i]            float32
``swarm/layer{i}/bias``                                 [N, out_i]                  float32
``adam/layer{i}/{weight,bias}/{exp_avg,exp_avg_sq}``    as the parameter            as it is
``adam/step``                                           [N]                         int64
``fitness``                                             [N]                         float64
``vae/encoder/layer{i}/weight``, i = 0 .. K-1           [in_i, out_i]               float32
``vae/encoder/layer{i}/bias``                           [out_i]                     float32
``vae/mu/weight``, ``vae/logvar/weight``                [out_{K-1} (or F), latent]  float32
``vae/mu/bias``, ``vae/logvar/bias``                    [latent]                    float32
``normalization/mean``, ``normalization/std``           [F], VAE input = k * F      float
``history/entropy``, ``history/best_fitness``,          [G]                         float
``history/median_fitness``
``history/*`` (any other)                               [G]                         any
======================================================  ==========================  =========

Layers chain (``in_{i+1} == out_i``), are numbered from 0 without gaps, and every weight has its
bias. Adam state is all or nothing: if any ``adam/layer...`` moment or ``adam/step`` is present,
both moments of every swarm parameter and ``adam/step`` must be. ``vae/logvar`` is optional; the
VAE input width equals F when ``normalization/*`` is present. Validation is structural (names,
dtypes, shapes); values are not checked, so a NaN weight round-trips.

Directory layout and the atomic-write protocol
----------------------------------------------
Files are named ``checkpoint-{sequence:08d}-gen{generation:06d}.safetensors``. The sequence number
grows by one with every save in the directory, so "newest" is decided by the name, never by
modification times (which clocks, copies and restores can reorder). :func:`save`:

1. validates the checkpoint and serialises it in memory (a bad checkpoint writes nothing);
2. takes an exclusive ``flock`` on ``.checkpoint.lock`` in the directory (one writer at a time;
   the kernel releases it if the writer dies), and deletes temporary files left by a writer that
   died mid-save;
3. writes ``.checkpoint-....safetensors.{pid}.tmp`` in the same directory (same filesystem, so the
   rename below is atomic), flushes it and calls ``os.fsync`` on it: the bytes are on disk before
   any name points at them;
4. renames it onto the final name with ``os.replace``: readers see either no file or the complete
   file, never a prefix of it;
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
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Final, NamedTuple, TypeVar

import numpy as np
import safetensors
import safetensors.numpy
from numpy.typing import NDArray

from colmena.atomic_write import fsync_directory, write_atomically
from colmena.versions import library_versions

if sys.platform != "win32":
    import fcntl

__all__ = [
    "FORMAT_VERSION",
    "OPERATORS",
    "SAVE_STEPS",
    "AdamState",
    "Checkpoint",
    "CheckpointError",
    "CheckpointSkippedWarning",
    "LineageRecord",
    "LoadReport",
    "NoCheckpointError",
    "SkippedCheckpoint",
    "library_versions",
    "list_checkpoints",
    "load",
    "load_latest",
    "save",
]

#: Version of the file layout this module writes and reads.
FORMAT_VERSION: Final = 1

#: How a lineage record's agent came to be.
OPERATORS: Final = ("init", "elite", "crossover", "mutation", "crossover+mutation")

FORMAT_NAME: Final = "colmena-checkpoint"

_FILE_RE: Final = re.compile(r"^checkpoint-([0-9]{8,})-gen([0-9]+)\.safetensors$")
_TEMP_RE: Final = re.compile(r"^\.checkpoint-.*\.tmp$")
_LOCK_NAME: Final = ".checkpoint.lock"
_RESERVED_PREFIX: Final = "__"
_LINEAGE: Final = "__lineage__/"
_MAX_HEADER_BYTES: Final = 100_000_000  # the safetensors limit
_INT64_MAX: Final = 2**63 - 1

#: dtypes a tensor may have, by the name the safetensors file uses.
_FILE_DTYPES: Final[Mapping[str, np.dtype[Any]]] = {
    "BOOL": np.dtype(np.bool_),
    "I8": np.dtype("<i1"),
    "I16": np.dtype("<i2"),
    "I32": np.dtype("<i4"),
    "I64": np.dtype("<i8"),
    "U8": np.dtype("<u1"),
    "U16": np.dtype("<u2"),
    "U32": np.dtype("<u4"),
    "U64": np.dtype("<u8"),
    "F16": np.dtype("<f2"),
    "F32": np.dtype("<f4"),
    "F64": np.dtype("<f8"),
}
_DTYPE_NAMES: Final = frozenset(dt.name for dt in _FILE_DTYPES.values())

_SWARM_RE: Final = re.compile(r"^swarm/layer(0|[1-9][0-9]*)/(weight|bias)$")
_ADAM_RE: Final = re.compile(r"^adam/layer(0|[1-9][0-9]*)/(weight|bias)/(exp_avg|exp_avg_sq)$")
_ENCODER_RE: Final = re.compile(r"^vae/encoder/layer(0|[1-9][0-9]*)/(weight|bias)$")
_HISTORY_FLOAT: Final = ("history/entropy", "history/best_fitness", "history/median_fitness")

Array = NDArray[Any]
Layer = tuple[NDArray[np.float32], NDArray[np.float32]]

_K = TypeVar("_K")
_V = TypeVar("_V")


# --------------------------------------------------------------------------------------------
# Errors and warnings
# --------------------------------------------------------------------------------------------


class CheckpointError(ValueError):
    """A checkpoint file cannot be used: corrupt, truncated, foreign or inconsistent.

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
# The checkpoint
# --------------------------------------------------------------------------------------------


class _ReadOnlyMap(Mapping[_K, _V]):
    """An immutable mapping over a private dict (picklable, unlike ``MappingProxyType``)."""

    __slots__ = ("_data",)

    def __init__(self, data: dict[_K, _V]) -> None:
        self._data = data

    def __getitem__(self, key: _K) -> _V:
        return self._data[key]

    def __iter__(self) -> Iterator[_K]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return repr(self._data)


class _TensorMap(_ReadOnlyMap[str, Array]):
    """Tensors already frozen by this module: read-only, C-contiguous, native byte order."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "{" + ", ".join(f"{k!r}: {_describe(a)}" for k, a in self._data.items()) + "}"


def _describe(a: object) -> str:
    if isinstance(a, np.ndarray):
        return f"{a.dtype.name}{list(a.shape)}"
    return type(a).__name__


def _frozen_array(a: Array) -> Array:
    """A read-only, C-contiguous, native-byte-order copy of ``a`` (same values and dtype kind)."""
    dtype = a.dtype.newbyteorder("=") if a.dtype.byteorder in "<>" else a.dtype
    out = np.array(a, dtype=dtype, order="C", copy=True, subok=False)
    out.setflags(write=False)
    return out


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _json_value(value: object, where: str) -> Any:
    """A plain-JSON copy of ``value``; ValueError naming the first offending item."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where} is {value!r}, but JSON holds only finite numbers")
        return float(value)
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{where} has the key {key!r}; JSON keys must be str")
            out[str(key)] = _json_value(item, f"{where}[{key!r}]")
        return out
    if isinstance(value, (list, tuple)):
        return [_json_value(item, f"{where}[{i}]") for i, item in enumerate(value)]
    raise ValueError(
        f"{where} is a {type(value).__module__}.{type(value).__qualname__}, which is not JSON "
        "(use str, int, float, bool, None, list or dict)"
    )


def _canonical_json(value: object) -> str:
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    )


@dataclass(frozen=True, eq=False)
class LineageRecord:
    """One agent ever created in a run, and where it came from.

    Parameters
    ----------
    agent_id : int
        Unique id of the agent within the run (0 <= agent_id < 2**63).
    parent_ids : tuple of int
        Ids of the agents it was made from: empty for ``"init"``, one or more otherwise. A list
        is accepted and stored as a tuple.
    generation : int
        Generation in which the agent was created (>= 0).
    operator : str
        One of :data:`OPERATORS`: ``"init"`` (random initial agent), ``"elite"`` (copied
        unchanged), ``"crossover"``, ``"mutation"``, ``"crossover+mutation"``.
    fitness : float or None
        Its fitness when evaluated (any float, NaN included), None if never evaluated.

    Notes
    -----
    Records compare equal when every field is equal, with NaN fitness equal to NaN fitness (so a
    record survives a save/load round trip equal). Construction converts NumPy scalars to Python
    numbers but checks nothing; :meth:`Checkpoint.validate` does.
    """

    agent_id: int
    parent_ids: tuple[int, ...]
    generation: int
    operator: str
    fitness: float | None

    def __post_init__(self) -> None:
        if isinstance(self.agent_id, np.integer):
            object.__setattr__(self, "agent_id", int(self.agent_id))
        if isinstance(self.generation, np.integer):
            object.__setattr__(self, "generation", int(self.generation))
        if isinstance(self.parent_ids, (list, tuple, np.ndarray)):
            parents = tuple(int(p) if isinstance(p, np.integer) else p for p in self.parent_ids)
            object.__setattr__(self, "parent_ids", parents)
        if isinstance(self.fitness, (float, np.floating)) or _is_int(self.fitness):
            object.__setattr__(self, "fitness", float(self.fitness))  # type: ignore[arg-type]

    def _key(self) -> tuple[object, ...]:
        fitness = self.fitness
        if isinstance(fitness, float) and math.isnan(fitness):
            return (self.agent_id, self.parent_ids, self.generation, self.operator, "nan")
        return (self.agent_id, self.parent_ids, self.generation, self.operator, fitness)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LineageRecord):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def _problems(self, where: str) -> list[str]:
        problems = []
        if not (_is_int(self.agent_id) and 0 <= self.agent_id <= _INT64_MAX):
            problems.append(f"{where}.agent_id must be an int in [0, 2**63), got {self.agent_id!r}")
        if not (_is_int(self.generation) and 0 <= self.generation <= _INT64_MAX):
            problems.append(
                f"{where}.generation must be an int in [0, 2**63), got {self.generation!r}"
            )
        if self.operator not in OPERATORS:
            problems.append(f"{where}.operator must be one of {OPERATORS}, got {self.operator!r}")
        if not isinstance(self.parent_ids, tuple) or not all(
            _is_int(p) and 0 <= p <= _INT64_MAX for p in self.parent_ids
        ):
            problems.append(
                f"{where}.parent_ids must be a tuple of ints in [0, 2**63), got {self.parent_ids!r}"
            )
        elif self.operator in OPERATORS:
            if self.operator == "init" and self.parent_ids:
                problems.append(f"{where}: an 'init' agent has no parents, got {self.parent_ids}")
            if self.operator != "init" and not self.parent_ids:
                problems.append(f"{where}: a {self.operator!r} agent needs at least one parent")
            if self.agent_id in self.parent_ids:
                problems.append(f"{where}: agent {self.agent_id} lists itself as a parent")
        if self.fitness is not None and not isinstance(self.fitness, float):
            problems.append(f"{where}.fitness must be a float or None, got {self.fitness!r}")
        return problems


class AdamState(NamedTuple):
    """Each agent's Adam optimizer state, as returned by :meth:`Checkpoint.adam_state`.

    ``step`` is int64 [N] (updates taken per agent); ``exp_avg`` and ``exp_avg_sq`` hold, per
    swarm layer, the (weight, bias) first and second moments, shaped as the parameters.
    """

    step: NDArray[np.int64]
    exp_avg: list[Layer]
    exp_avg_sq: list[Layer]


@dataclass(frozen=True, eq=False, repr=False)
class Checkpoint:
    """The full state of a training run at one moment.

    Parameters
    ----------
    generation : int
        Evolution generations completed (>= 0); G, the length of every ``history/*`` tensor.
    epoch : int
        VAE training epochs completed (>= 0).
    tensors : mapping of str to numpy.ndarray
        Every array of the run by name; see the module docstring for the names that are checked
        and their shapes and dtypes (bool, int8..int64, uint8..uint64, float16/32/64 allowed).
    lineage : tuple of LineageRecord
        Every agent ever created, agent ids unique (a list is accepted).
    config : mapping
        Training configuration: JSON data (str keys; str, int, finite float, bool, None, list,
        dict). Stored as a read-only mapping of a JSON copy (tuples become lists).
    versions : mapping of str to str
        Library versions at save time; defaults to :func:`library_versions`.
    format_version : int
        File layout version; must be :data:`FORMAT_VERSION` to save.

    Notes
    -----
    Construction copies every array into a read-only, C-contiguous, native-byte-order array
    (take ``numpy.array(a)`` for a writable copy, e.g. before ``torch.from_numpy``), so later
    changes to the caller's arrays do not leak in. It does not check consistency:
    :meth:`validate` does, and :func:`save` and :func:`load` call it.

    Equality is exact: same counters, lineage, config, versions, format version, tensor names,
    and per tensor the same dtype, shape and bytes (so NaN equals the same NaN, and 0.0 differs
    from -0.0). Checkpoints are not hashable.
    """

    generation: int
    epoch: int
    tensors: Mapping[str, Array]
    lineage: tuple[LineageRecord, ...]
    config: Mapping[str, Any]
    versions: Mapping[str, str] = field(default_factory=library_versions)
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        tensors: object = self.tensors
        if isinstance(tensors, Mapping) and not isinstance(tensors, _TensorMap):
            frozen = {
                name: _frozen_array(a) if isinstance(a, np.ndarray) else a
                for name, a in tensors.items()
            }
            object.__setattr__(self, "tensors", _TensorMap(frozen))
        lineage: object = self.lineage
        if isinstance(lineage, (list, tuple)):
            object.__setattr__(self, "lineage", tuple(lineage))
        config: object = self.config
        if isinstance(config, Mapping) and not isinstance(config, _ReadOnlyMap):
            with contextlib.suppress(ValueError):  # validate() reports it
                object.__setattr__(self, "config", _ReadOnlyMap(_json_value(config, "config")))
        versions: object = self.versions
        if isinstance(versions, Mapping) and not isinstance(versions, _ReadOnlyMap):
            object.__setattr__(self, "versions", _ReadOnlyMap(dict(versions)))

    # ---- equality and display ----------------------------------------------------------

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Checkpoint):
            return NotImplemented
        if (
            self.generation != other.generation
            or self.epoch != other.epoch
            or self.format_version != other.format_version
            or self.lineage != other.lineage
            or dict(self.versions) != dict(other.versions)
            or set(self.tensors) != set(other.tensors)
        ):
            return False
        try:
            if _canonical_json(_json_value(self.config, "config")) != _canonical_json(
                _json_value(other.config, "config")
            ):
                return False
        except ValueError:
            return self.config is other.config
        return all(_same_array(self.tensors[k], other.tensors[k]) for k in self.tensors)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"Checkpoint(generation={self.generation!r}, epoch={self.epoch!r}, "
            f"tensors=<{len(self.tensors)} tensors, {_nbytes(self.tensors)} bytes>, "
            f"lineage=<{len(self.lineage)} records>, format_version={self.format_version!r})"
        )

    # ---- validation ----------------------------------------------------------------------

    def validate(self) -> None:
        """Check every field and the tensor rules of the module docstring.

        Raises
        ------
        ValueError
            Listing every problem found, each naming the field or tensor, e.g.
            ``swarm/layer1/weight has 32 inputs but swarm/layer0/weight has 64 outputs``.
        """
        problems = self._problems()
        if problems:
            raise ValueError(
                f"invalid checkpoint ({len(problems)} problem{'s' if len(problems) > 1 else ''}): "
                + "; ".join(problems)
            )

    def _problems(self) -> list[str]:
        problems: list[str] = []
        for name in ("generation", "epoch"):
            value = getattr(self, name)
            if not (_is_int(value) and 0 <= value <= _INT64_MAX):
                problems.append(f"{name} must be an int >= 0, got {value!r}")
        if self.format_version != FORMAT_VERSION:
            problems.append(
                f"format_version must be {FORMAT_VERSION} (the version this colmena writes), "
                f"got {self.format_version!r}"
            )
        if not isinstance(self.versions, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in self.versions.items()
        ):
            problems.append(f"versions must map str to str, got {self.versions!r}")
        if not isinstance(self.config, Mapping):
            problems.append(f"config must be a mapping, got {type(self.config).__name__}")
        else:
            try:
                _json_value(self.config, "config")
            except ValueError as exc:
                problems.append(str(exc))
        problems.extend(self._lineage_problems())
        if not isinstance(self.tensors, Mapping):
            problems.append(f"tensors must be a mapping, got {type(self.tensors).__name__}")
        else:
            problems.extend(_tensor_problems(self.tensors, self.generation))
        return problems

    def _lineage_problems(self) -> list[str]:
        if not isinstance(self.lineage, tuple):
            return [f"lineage must be a tuple of LineageRecord, got {type(self.lineage).__name__}"]
        problems: list[str] = []
        seen: dict[object, int] = {}
        for i, record in enumerate(self.lineage):
            if not isinstance(record, LineageRecord):
                problems.append(f"lineage[{i}] is a {type(record).__name__}, not a LineageRecord")
                continue
            problems.extend(record._problems(f"lineage[{i}]"))
            if _is_int(record.agent_id):
                if record.agent_id in seen:
                    problems.append(
                        f"lineage[{i}].agent_id {record.agent_id} repeats "
                        f"lineage[{seen[record.agent_id]}]"
                    )
                else:
                    seen[record.agent_id] = i
        return problems

    # ---- accessors ----------------------------------------------------------------------

    @property
    def n_agents(self) -> int:
        """N: agents in the swarm (leading dimension of ``swarm/layer0/weight``, else of
        ``fitness`` or ``adam/step``); 0 when none of them is present."""
        for name in ("swarm/layer0/weight", "fitness", "adam/step"):
            a = self.tensors.get(name)
            if isinstance(a, np.ndarray) and a.ndim >= 1:
                return int(a.shape[0])
        return 0

    def swarm_layers(self) -> list[Layer]:
        """The agents' MLP layers, input first.

        Returns
        -------
        list of (weight, bias)
            Per layer i, ``swarm/layer{i}/weight`` float32 [N, in_i, out_i] and
            ``swarm/layer{i}/bias`` float32 [N, out_i] (read-only); empty without a swarm.
        """
        return _layers(self.tensors, "swarm/layer{}/weight", "swarm/layer{}/bias")

    def adam_state(self) -> AdamState | None:
        """Each agent's Adam state, or None when the checkpoint holds none.

        Returns
        -------
        AdamState or None
            ``step`` int64 [N] and the moments per swarm layer, shaped as
            :meth:`swarm_layers`.
        """
        step = self.tensors.get("adam/step")
        if step is None:
            return None
        moments = [
            _layers(self.tensors, f"adam/layer{{}}/weight/{m}", f"adam/layer{{}}/bias/{m}")
            for m in ("exp_avg", "exp_avg_sq")
        ]
        return AdamState(step, moments[0], moments[1])

    def vae_layers(self) -> list[Layer]:
        """The VAE encoder's hidden layers, input first.

        Returns
        -------
        list of (weight, bias)
            ``vae/encoder/layer{i}/weight`` float32 [in_i, out_i] and ``.../bias`` float32
            [out_i]; the heads are in :meth:`vae_heads`.
        """
        return _layers(self.tensors, "vae/encoder/layer{}/weight", "vae/encoder/layer{}/bias")

    def vae_heads(self) -> dict[str, Layer]:
        """The VAE output heads: ``"mu"`` and, when stored, ``"logvar"``.

        Returns
        -------
        dict of str to (weight, bias)
            Weight float32 [hidden, latent], bias float32 [latent]; empty without a VAE.
        """
        heads = {}
        for head in ("mu", "logvar"):
            w = self.tensors.get(f"vae/{head}/weight")
            b = self.tensors.get(f"vae/{head}/bias")
            if w is not None and b is not None:
                heads[head] = (w, b)
        return heads

    def history(self) -> dict[str, Array]:
        """Per-generation history, keyed without the ``history/`` prefix (each [G])."""
        return {
            k[len("history/") :]: a for k, a in self.tensors.items() if k.startswith("history/")
        }

    def summary(self) -> str:
        """A few human-readable lines: counters, swarm and VAE shapes, lineage, sizes."""
        lines = [
            f"checkpoint (format {self.format_version}): generation {self.generation}, "
            f"epoch {self.epoch}"
        ]
        swarm = self.swarm_layers()
        if swarm:
            widths = [swarm[0][0].shape[1]] + [w.shape[2] for w, _ in swarm]
            params = sum(w[0].size + b[0].size for w, b in swarm)
            lines.append(
                f"  swarm: {self.n_agents} agents, layers {'-'.join(map(str, widths))}, "
                f"{params} parameters per agent"
            )
        adam = self.adam_state()
        if adam is not None and adam.step.size:
            lines.append(f"  adam: steps {int(adam.step.min())}..{int(adam.step.max())}")
        fitness = self.tensors.get("fitness")
        if fitness is not None and fitness.size and np.isfinite(fitness).any():
            finite = fitness[np.isfinite(fitness)]
            lines.append(
                f"  fitness: best {float(finite.max()):.6g}, median {float(np.median(finite)):.6g}"
            )
        heads = self.vae_heads()
        if "mu" in heads:
            encoder = self.vae_layers()
            first = encoder[0][0] if encoder else heads["mu"][0]
            widths = [first.shape[0]] + [w.shape[1] for w, _ in encoder]
            lines.append(
                f"  vae: encoder {'-'.join(map(str, widths))}, latent {heads['mu'][0].shape[1]}"
                f"{', with logvar' if 'logvar' in heads else ''}"
            )
        history = self.history()
        if history:
            lines.append(f"  history: {', '.join(sorted(history))} over {self.generation} gens")
        lines.append(f"  lineage: {len(self.lineage)} agents ever created")
        lines.append(f"  tensors: {len(self.tensors)}, {_nbytes(self.tensors)} bytes")
        if self.versions:
            lines.append(
                "  versions: " + ", ".join(f"{k} {v}" for k, v in sorted(self.versions.items()))
            )
        return "\n".join(lines)


def _same_array(a: object, b: object) -> bool:
    if not (isinstance(a, np.ndarray) and isinstance(b, np.ndarray)):
        return a is b
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    return bool(np.array_equal(_raw_bytes(a), _raw_bytes(b)))


def _raw_bytes(a: Array) -> NDArray[np.uint8]:
    return np.ascontiguousarray(a).reshape(-1).view(np.uint8)


def _nbytes(tensors: Mapping[str, object]) -> int:
    return sum(a.nbytes for a in tensors.values() if isinstance(a, np.ndarray))


def _layers(tensors: Mapping[str, Array], weight: str, bias: str) -> list[Layer]:
    layers = []
    i = 0
    while weight.format(i) in tensors and bias.format(i) in tensors:
        layers.append((tensors[weight.format(i)], tensors[bias.format(i)]))
        i += 1
    return layers


# --------------------------------------------------------------------------------------------
# Tensor rules
# --------------------------------------------------------------------------------------------


def _tensor_problems(tensors: Mapping[str, object], generation: object) -> list[str]:
    problems: list[str] = []
    ok: dict[str, Array] = {}
    for name, a in tensors.items():
        if not isinstance(name, str) or not name:
            problems.append(f"tensor name {name!r} must be a non-empty str")
            continue
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            problems.append(f"tensor name {name!r} is not valid Unicode")
            continue
        if name.startswith(_RESERVED_PREFIX):
            problems.append(f"tensor name {name!r}: names starting with '__' are reserved")
        elif not isinstance(a, np.ndarray):
            problems.append(f"tensor {name!r} must be a numpy.ndarray, got {type(a).__name__}")
        elif a.dtype.name not in _DTYPE_NAMES:
            problems.append(
                f"tensor {name!r} has dtype {a.dtype}; allowed: bool, int8..int64, "
                "uint8..uint64, float16, float32, float64"
            )
        else:
            ok[name] = a
    rules = _Rules(ok, problems)
    rules.swarm()
    rules.adam()
    rules.per_agent("fitness", np.float64)
    rules.vae()
    rules.normalization()
    rules.history(generation)
    return problems


class _Rules:
    """The checks of one tensor mapping; each appends messages to ``problems``."""

    def __init__(self, tensors: Mapping[str, Array], problems: list[str]) -> None:
        self.t = tensors
        self.problems = problems
        self.n_agents: int | None = None
        self.swarm_layers = 0
        self.params: dict[str, Array] = {}  # swarm parameters that passed, for adam
        self.vae_input: int | None = None  # inputs of the first VAE layer, when known

    def add(self, message: str) -> None:
        self.problems.append(message)

    def expect(self, name: str, ndim: int, dtype: type[np.generic] | None) -> Array | None:
        """The tensor if present with that ndim and dtype; otherwise None (and a problem)."""
        a = self.t.get(name)
        if a is None:
            return None
        if a.ndim != ndim:
            self.add(f"{name} must be {ndim}-D, got shape {list(a.shape)}")
            return None
        if dtype is not None and a.dtype != np.dtype(dtype):
            self.add(f"{name} must be {np.dtype(dtype).name}, got {a.dtype.name}")
            return None
        return a

    def indices(self, pattern: re.Pattern[str], what: str) -> list[int]:
        found = sorted({int(m.group(1)) for k in self.t if (m := pattern.match(k))})
        if found != list(range(len(found))):
            self.add(
                f"{what} layers must be numbered 0..{len(found) - 1} without gaps, got {found}"
            )
            return []
        return found

    def agents(self, name: str, n: int) -> None:
        if self.n_agents is None:
            self.n_agents = n
        elif n != self.n_agents:
            self.add(f"{name} is for {n} agents, other tensors for {self.n_agents}")

    def swarm(self) -> None:
        prev_out: tuple[str, int] | None = None
        for i in self.indices(_SWARM_RE, "swarm"):
            wn, bn = f"swarm/layer{i}/weight", f"swarm/layer{i}/bias"
            for name in (wn, bn):
                if name not in self.t:
                    self.add(f"{name} is missing (every swarm layer has a weight and a bias)")
            w = self.expect(wn, 3, np.float32)
            b = self.expect(bn, 2, np.float32)
            self.swarm_layers = i + 1
            if w is None:
                prev_out = None
                continue
            self.agents(wn, w.shape[0])
            if prev_out is not None and w.shape[1] != prev_out[1]:
                self.add(
                    f"{wn} has {w.shape[1]} inputs but {prev_out[0]} has {prev_out[1]} outputs"
                )
            prev_out = (wn, w.shape[2])
            self.params[wn] = w
            if b is not None:
                if b.shape != (w.shape[0], w.shape[2]):
                    self.add(
                        f"{bn} must have shape [N, out] = {[w.shape[0], w.shape[2]]} "
                        f"to match {wn}, got {list(b.shape)}"
                    )
                else:
                    self.params[bn] = b

    def adam(self) -> None:
        present = sorted(k for k in self.t if _ADAM_RE.match(k))
        if not present and "adam/step" not in self.t:
            return
        for k in present:
            m = _ADAM_RE.match(k)
            assert m is not None
            if int(m.group(1)) >= self.swarm_layers:
                self.add(f"{k} has no parameter swarm/layer{m.group(1)}/{m.group(2)}")
        for i in range(self.swarm_layers):
            for kind in ("weight", "bias"):
                param_name = f"swarm/layer{i}/{kind}"
                param = self.params.get(param_name)
                for moment in ("exp_avg", "exp_avg_sq"):
                    name = f"adam/layer{i}/{kind}/{moment}"
                    a = self.t.get(name)
                    if a is None:
                        self.add(f"{name} is missing (Adam state is all or nothing)")
                    elif param is not None and (a.shape != param.shape or a.dtype != param.dtype):
                        self.add(
                            f"{name} is {a.dtype.name}{list(a.shape)} but its parameter "
                            f"{param_name} is {param.dtype.name}{list(param.shape)}"
                        )
        if "adam/step" not in self.t:
            self.add("adam/step is missing (Adam state is all or nothing)")
        else:
            self.per_agent("adam/step", np.int64)

    def per_agent(self, name: str, dtype: type[np.generic]) -> None:
        a = self.expect(name, 1, dtype)
        if a is not None:
            self.agents(name, a.shape[0])

    def vae(self) -> None:
        encoder = self.indices(_ENCODER_RE, "vae/encoder")
        heads = [k for k in ("vae/mu/weight", "vae/mu/bias") if k in self.t]
        logvar = [k for k in ("vae/logvar/weight", "vae/logvar/bias") if k in self.t]
        if not (encoder or heads or logvar):
            return
        prev: tuple[str, int] | None = None
        for i in encoder:
            wn, bn = f"vae/encoder/layer{i}/weight", f"vae/encoder/layer{i}/bias"
            prev = self.dense(wn, bn, prev, first=i == 0)
        for head in ("mu", "logvar"):
            wn, bn = f"vae/{head}/weight", f"vae/{head}/bias"
            if head == "logvar" and not logvar:
                continue
            self.dense(wn, bn, prev, first=not encoder)
        mu_w, lv_w = self.t.get("vae/mu/weight"), self.t.get("vae/logvar/weight")
        if mu_w is not None and lv_w is not None and mu_w.shape != lv_w.shape:
            self.add(
                f"vae/logvar/weight has shape {list(lv_w.shape)} but vae/mu/weight has "
                f"{list(mu_w.shape)}"
            )

    def dense(
        self, wn: str, bn: str, prev: tuple[str, int] | None, *, first: bool
    ) -> tuple[str, int] | None:
        """Check one [in, out] layer after ``prev`` (name, outputs); return this one's."""
        for name in (wn, bn):
            if name not in self.t:
                self.add(f"{name} is missing")
        w = self.expect(wn, 2, np.float32)
        b = self.expect(bn, 1, np.float32)
        if w is None:
            return None
        if first:
            self.vae_input = w.shape[0]
        if prev is not None and w.shape[0] != prev[1]:
            self.add(f"{wn} has {w.shape[0]} inputs but {prev[0]} has {prev[1]} outputs")
        if b is not None and b.shape != (w.shape[1],):
            self.add(f"{bn} must have shape [{w.shape[1]}] to match {wn}, got {list(b.shape)}")
        return (wn, w.shape[1])

    def normalization(self) -> None:
        names = ("normalization/mean", "normalization/std")
        present = [k for k in names if k in self.t]
        if not present:
            return
        if len(present) == 1:
            self.add(f"{present[0]} is present without its pair ({' and '.join(names)})")
        arrays = {k: self.expect(k, 1, None) for k in present}
        for k, a in arrays.items():
            if a is not None and a.dtype.kind != "f":
                self.add(f"{k} must be a float array, got {a.dtype.name}")
        mean, std = arrays.get(names[0]), arrays.get(names[1])
        if (
            mean is not None
            and std is not None
            and (mean.shape != std.shape or mean.dtype != std.dtype)
        ):
            self.add(
                f"normalization/std is {std.dtype.name}{list(std.shape)} but "
                f"normalization/mean is {mean.dtype.name}{list(mean.shape)}"
            )
        # The VAE input is a window of bars, each bar normalized with the same [F] statistics:
        # its length must be a whole number of bars.
        if (
            mean is not None
            and self.vae_input is not None
            and mean.ndim == 1
            and (mean.shape[0] == 0 or self.vae_input % mean.shape[0] != 0)
        ):
            self.add(
                f"normalization/mean has {mean.shape[0]} features but the VAE encoder "
                f"takes {self.vae_input} inputs, not a whole number of bars of them"
            )

    def history(self, generation: object) -> None:
        for name in sorted(k for k in self.t if k.startswith("history/")):
            a = self.expect(name, 1, None)
            if a is None:
                continue
            if name in _HISTORY_FLOAT and a.dtype.kind != "f":
                self.add(f"{name} must be a float array, got {a.dtype.name}")
            if _is_int(generation) and a.shape[0] != generation:
                self.add(
                    f"{name} has {a.shape[0]} entries but generation is {generation} "
                    "(one entry per completed generation)"
                )


# --------------------------------------------------------------------------------------------
# Encoding and decoding
# --------------------------------------------------------------------------------------------


def _little_endian(a: Array) -> Array:
    # Not np.ascontiguousarray: it turns a 0-d array into shape (1,).
    return np.asarray(a, dtype=a.dtype.newbyteorder("<"), order="C")


def _lineage_tensors(lineage: tuple[LineageRecord, ...]) -> dict[str, Array]:
    codes = {op: i for i, op in enumerate(OPERATORS)}
    parents = [p for r in lineage for p in r.parent_ids]
    offsets = np.zeros(len(lineage) + 1, dtype="<i8")
    np.cumsum([len(r.parent_ids) for r in lineage], out=offsets[1:])
    fitness = [r.fitness for r in lineage]
    return {
        f"{_LINEAGE}agent_id": np.array([r.agent_id for r in lineage], dtype="<i8"),
        f"{_LINEAGE}generation": np.array([r.generation for r in lineage], dtype="<i8"),
        f"{_LINEAGE}operator": np.array([codes[r.operator] for r in lineage], dtype=np.uint8),
        f"{_LINEAGE}fitness": np.array(
            [math.nan if f is None else f for f in fitness], dtype="<f8"
        ),
        f"{_LINEAGE}has_fitness": np.array([f is not None for f in fitness], dtype=np.bool_),
        f"{_LINEAGE}parent_offsets": offsets,
        f"{_LINEAGE}parent_ids": np.array(parents, dtype="<i8"),
    }


def _digest(version: str, meta_json: str, tensors: Mapping[str, Array]) -> str:
    """SHA-256 over the format name, version, metadata JSON and every tensor, length-prefixed."""
    h = hashlib.sha256()

    def frame(data: bytes | memoryview) -> None:
        view = memoryview(data)
        h.update(view.nbytes.to_bytes(8, "little"))
        h.update(view)

    frame(FORMAT_NAME.encode())
    frame(version.encode())
    frame(meta_json.encode())
    for name in sorted(tensors):
        a = _little_endian(tensors[name])
        frame(name.encode())
        frame(a.dtype.name.encode())
        frame(json.dumps(list(a.shape)).encode())
        frame(a.data)
    return h.hexdigest()


def _encode(checkpoint: Checkpoint) -> bytes:
    """The file's bytes for ``checkpoint`` (no validation: :func:`save` validates first)."""
    tensors = {name: _little_endian(a) for name, a in checkpoint.tensors.items()}
    tensors.update(_lineage_tensors(checkpoint.lineage))
    meta = {
        "generation": checkpoint.generation,
        "epoch": checkpoint.epoch,
        "config": _json_value(checkpoint.config, "config"),
        "versions": dict(checkpoint.versions),
        "lineage_operators": list(OPERATORS),
    }
    meta_json = _canonical_json(meta)
    version = str(checkpoint.format_version)
    header = {
        "format": FORMAT_NAME,
        "format_version": version,
        "checkpoint": meta_json,
        "sha256": _digest(version, meta_json, tensors),
    }
    return _canonical_header(bytes(safetensors.numpy.save(tensors, metadata=header)))


def _canonical_header(data: bytes) -> bytes:
    """The same safetensors file with its JSON header's keys sorted at every level.

    safetensors writes the ``__metadata__`` entries in a per-process hash order, so the same
    checkpoint would differ byte for byte between processes; sorting the keys (the payload and
    every offset are unchanged, the header stays padded with spaces to a multiple of 8 bytes)
    makes the file a function of the checkpoint alone.
    """
    size = int.from_bytes(data[:8], "little")
    head = json.loads(data[8 : 8 + size])
    text = json.dumps(head, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + data[8 + size :]


def _decode(data: bytes, path: Path) -> Checkpoint:
    """Parse and check a file's bytes; CheckpointError naming ``path`` for any problem."""

    def fail(reason: str) -> CheckpointError:
        return CheckpointError(reason, path=path)

    size = len(data)
    if size == 0:
        raise fail("empty file (0 bytes)")
    if size < 8:
        raise fail(f"truncated or not a safetensors file: {size} bytes, less than the header size")
    header_size = int.from_bytes(data[:8], "little")
    if header_size > _MAX_HEADER_BYTES:
        raise fail(f"not a safetensors file: header size {header_size} is out of range")
    if 8 + header_size > size:
        raise fail(
            f"truncated or not a safetensors file: the header needs {8 + header_size} bytes, "
            f"the file has {size}"
        )
    try:
        header = json.loads(data[8 : 8 + header_size].decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise fail(f"not a safetensors file (or a corrupt header): {exc}") from None
    if not isinstance(header, dict):
        raise fail("not a safetensors file: the header is not a JSON object")
    meta = header.get("__metadata__")
    if meta is None:
        raise fail("missing metadata: the header has no __metadata__; not a colmena checkpoint")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise fail(f"not a colmena checkpoint: the metadata format is not {FORMAT_NAME!r}")
    version = meta.get("format_version")
    if version is None:
        raise fail("missing metadata: the header has no format_version")
    if version != str(FORMAT_VERSION):
        raise fail(
            f"format version {version!r} is not supported (this colmena reads version "
            f"{FORMAT_VERSION}; the file is newer, older or corrupt)"
        )
    stored, meta_json = meta.get("sha256"), meta.get("checkpoint")
    if not isinstance(stored, str) or not isinstance(meta_json, str):
        raise fail("missing metadata: 'sha256' or 'checkpoint' is absent from the header")

    end = 0
    try:
        for key, entry in header.items():
            if key != "__metadata__":
                end = max(end, int(entry["data_offsets"][1]))
    except (TypeError, KeyError, IndexError, ValueError):
        raise fail("corrupt header: a tensor entry has no valid data_offsets") from None
    if 8 + header_size + end > size:
        raise fail(
            f"truncated: the header describes {8 + header_size + end} bytes, the file has {size}"
        )
    try:
        entries = safetensors.deserialize(data)  # type: ignore[no-untyped-call]
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # SafetensorError, or a Rust panic (a BaseException in PyO3)
        raise fail(f"not a valid safetensors file: {exc}") from None

    tensors: dict[str, Array] = {}
    for name, entry in entries:
        dtype = _FILE_DTYPES.get(entry["dtype"])
        if dtype is None:
            raise fail(f"tensor {name!r} has the unsupported dtype {entry['dtype']}")
        try:
            a = np.frombuffer(entry["data"], dtype=dtype).reshape(tuple(entry["shape"]))
        except ValueError as exc:
            raise fail(f"tensor {name!r} does not match its shape: {exc}") from None
        a = a.astype(a.dtype.newbyteorder("="), copy=False)
        a.setflags(write=False)
        tensors[name] = a

    computed = _digest(version, meta_json, tensors)
    if computed != stored:
        raise fail(
            f"checksum mismatch (stored sha256 {stored[:16]}..., computed {computed[:16]}...): "
            "the file is corrupt"
        )

    try:
        fields = json.loads(meta_json)
        generation, epoch = fields["generation"], fields["epoch"]
        config, versions = fields["config"], fields["versions"]
        vocabulary = fields["lineage_operators"]
        if not (isinstance(vocabulary, list) and all(isinstance(v, str) for v in vocabulary)):
            raise TypeError("lineage_operators is not a list of str")
    except (ValueError, KeyError, TypeError) as exc:
        raise fail(f"corrupt metadata: {exc!r}") from None
    try:
        lineage = _decode_lineage(tensors, vocabulary)
    except ValueError as exc:
        raise fail(f"corrupt lineage: {exc}") from None

    checkpoint = Checkpoint(
        generation=generation,
        epoch=epoch,
        tensors=_TensorMap(tensors),
        lineage=lineage,
        config=config,
        versions=versions,
    )
    problems = checkpoint._problems()
    if problems:
        raise fail("inconsistent checkpoint: " + "; ".join(problems))
    return checkpoint


def _decode_lineage(tensors: dict[str, Array], vocabulary: list[str]) -> tuple[LineageRecord, ...]:
    """Pop the ``__lineage__/`` columns from ``tensors`` and rebuild the records."""
    expected = {
        "agent_id": np.int64,
        "generation": np.int64,
        "operator": np.uint8,
        "fitness": np.float64,
        "has_fitness": np.bool_,
        "parent_offsets": np.int64,
        "parent_ids": np.int64,
    }
    columns: dict[str, Array] = {}
    for key, dtype in expected.items():
        a = tensors.pop(_LINEAGE + key, None)
        if a is None or a.ndim != 1 or a.dtype != np.dtype(dtype):
            raise ValueError(f"{_LINEAGE}{key} is missing or not a 1-D {np.dtype(dtype).name}")
        columns[key] = a
    extra = [k for k in tensors if k.startswith(_RESERVED_PREFIX)]
    if extra:
        raise ValueError(f"unknown reserved tensors {extra}")
    n = columns["agent_id"].shape[0]
    offsets = columns["parent_offsets"]
    if any(columns[k].shape[0] != n for k in expected if k not in ("parent_offsets", "parent_ids")):
        raise ValueError("the lineage columns differ in length")
    if (
        offsets.shape[0] != n + 1
        or offsets[0] != 0
        or offsets[-1] != columns["parent_ids"].shape[0]
        or bool(np.any(np.diff(offsets) < 0))
    ):
        raise ValueError("parent_offsets do not index parent_ids")
    if n and int(columns["operator"].max()) >= len(vocabulary):
        raise ValueError("an operator code is outside lineage_operators")
    ids, gens, ops = (columns[k].tolist() for k in ("agent_id", "generation", "operator"))
    fitness, known = columns["fitness"].tolist(), columns["has_fitness"].tolist()
    parents, bounds = columns["parent_ids"].tolist(), offsets.tolist()
    return tuple(
        LineageRecord(
            agent_id=ids[i],
            parent_ids=tuple(parents[bounds[i] : bounds[i + 1]]),
            generation=gens[i],
            operator=vocabulary[ops[i]],
            fitness=fitness[i] if known[i] else None,
        )
        for i in range(n)
    )


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


def _remove_stale_temporaries(directory: Path) -> bool:
    removed = False
    for name in os.listdir(directory):
        if _TEMP_RE.match(name):
            with contextlib.suppress(FileNotFoundError):
                (directory / name).unlink()
                removed = True
    return removed


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
    checkpoint: Checkpoint,
    *,
    keep: int = 5,
    on_step: Callable[[str], None] | None = None,
) -> Path:
    """Write ``checkpoint`` atomically as the newest file in ``directory``; keep the last ``keep``.

    The write protocol (temporary file, flush, fsync, ``os.replace``, directory fsync, and only
    then rotation) is described in the module docstring: a crash or power cut at any point
    leaves the previous newest checkpoint intact and never a partial file under a checkpoint name.
    One writer per directory at a time (an exclusive lock serialises concurrent saves).

    Parameters
    ----------
    directory : str or os.PathLike
        Folder of checkpoints; created (with parents) if missing.
    checkpoint : Checkpoint
        What to save; checked with :meth:`Checkpoint.validate` before anything is written.
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
        If ``checkpoint`` is not a :class:`Checkpoint`.
    ValueError
        If the checkpoint is invalid (naming every bad field or tensor) or ``keep < 1``;
        nothing is written.
    OSError
        If the directory or file cannot be written; the temporary file is removed.
    """
    if not isinstance(checkpoint, Checkpoint):
        raise TypeError(f"checkpoint must be a Checkpoint, got {type(checkpoint).__name__}")
    if not _is_int(keep) or keep < 1:
        raise ValueError(f"keep must be an int >= 1, got {keep!r}")
    checkpoint.validate()
    data = _encode(checkpoint)

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
        final = directory / f"checkpoint-{sequence:08d}-gen{checkpoint.generation:06d}.safetensors"
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


def load(path: str | os.PathLike[str]) -> Checkpoint:
    """Read one checkpoint file and check it completely.

    Checks, in order: the safetensors framing (truncation, garbage), the metadata (present,
    ours, format version), the SHA-256 checksum over header metadata and every tensor byte,
    the lineage columns, and :meth:`Checkpoint.validate`. No pickle, no code from the file,
    no torch.

    Parameters
    ----------
    path : str or os.PathLike
        The file.

    Returns
    -------
    Checkpoint
        Equal to the one saved; its arrays are read-only.

    Raises
    ------
    CheckpointError
        If the file is empty, truncated, not a safetensors file, lacks the metadata, has another
        format version, fails the checksum (bit flips) or holds inconsistent tensors; the
        message names the file and the problem.
    OSError
        If the file cannot be read (missing, permissions, I/O error).
    """
    path = Path(path)
    with open(path, "rb") as fh:
        data = fh.read()
    return _decode(data, path)


def load_latest(
    directory: str | os.PathLike[str], *, report: LoadReport | None = None
) -> Checkpoint:
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
    Checkpoint
        The newest checkpoint that passed every check.

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
                checkpoint = load(path)
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
            return checkpoint
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
