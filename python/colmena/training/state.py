"""The typed state of a training run: what a checkpoint holds and what a resume continues from.

:class:`TrainingState` is a frozen snapshot taken after every evolved generation (and, with the
selection and gate results added, at the end of the run). It holds everything
:func:`colmena.training.train` needs to continue the run bit for bit (the agents and their Adam
moments, the lineage, the history of every generation with its fitness window, the state of the
evolution's random generator, the trained VAE encoder, the normalization and the regime
classifier) and everything inference needs (:meth:`TrainingState.to_model`).

This module is pure data: it imports nothing that trains and nothing that writes files.
:mod:`colmena.persistence.checkpoint` encodes it into a checkpoint file and decodes it back.

Shapes: N agents, L swarm layers, F base features per bar (``len(feature_names)``), G completed
generations, E VAE epochs run, K encoder hidden layers, S consensus weight sets (1, or 5 with a
per-regime consensus: global, then one per :data:`colmena.features.regime.REGIME_NAMES`).
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec
import numpy as np
from numpy.typing import NDArray

from colmena.data.ohlcv import Candles
from colmena.execution.simulation import ExecutionSettings
from colmena.features.market_state import FeatureSpec, Normalization
from colmena.features.regime import REGIME_NAMES, RegimeClassifier
from colmena.model.decision import DecisionConfig
from colmena.model.swarm import GateResult, SwarmModel
from colmena.risk import RiskConfig
from colmena.training.config import TrainConfig
from colmena.versions import library_versions

__all__ = [
    "MAX_GENERATIONS",
    "MAX_LINEAGE_PARENTS",
    "MAX_LINEAGE_RECORDS",
    "MAX_VAE_EPOCHS",
    "NORMALIZATION_MEAN_LIMIT",
    "NORMALIZATION_STD_FLOOR",
    "OPERATORS",
    "AdamMoments",
    "DataProvenance",
    "GenerationStats",
    "LineageRecord",
    "RNGState",
    "RegimeVoters",
    "SelectionResult",
    "TrainingState",
    "VAEEpoch",
    "VAEState",
    "ValidationResult",
]

#: How a lineage record's agent came to be.
OPERATORS: Final = ("init", "elite", "crossover", "mutation", "crossover+mutation")

#: Most lineage records a state may hold (about 300 bytes each in memory: 0.6 GB at the limit;
#: a run of 1,000 agents over 1,000 generations creates 1,000,000). A checkpoint decoder checks
#: the limits before it builds a record, so a crafted file cannot make it allocate more.
MAX_LINEAGE_RECORDS: Final = 2_000_000
#: Most parent ids over all lineage records together (two per record on average).
MAX_LINEAGE_PARENTS: Final = 2 * MAX_LINEAGE_RECORDS
#: Most evolved generations (``history`` entries) a state may hold.
MAX_GENERATIONS: Final = 1_000_000
#: Most VAE epochs (``vae.history`` entries) a state may hold.
MAX_VAE_EPOCHS: Final = 1_000_000
#: Smallest feature standard deviation a normalization may divide by: the floor of
#: :meth:`colmena.features.market_state.Normalization.fit`. A smaller, zero, negative or
#: non-finite ``std`` (or a non-finite ``mean``) would make every standardized feature, and so
#: every signal, NaN or infinite.
NORMALIZATION_STD_FLOOR: Final = 1e-12
#: Largest ``|mean|`` of a feature normalization. The features (log returns, FFD of log prices,
#: volatility, relative log volume) have means of order 1; within this bound and above the
#: ``std`` floor a standardized feature stays far inside float32, the model's input type.
NORMALIZATION_MEAN_LIMIT: Final = 1e6

_INT64_MAX: Final = 2**63 - 1
_SHA256_RE: Final = re.compile(r"^[0-9a-f]{64}$")

#: One dense layer: (weight, bias).
Layer = tuple[NDArray[np.float32], NDArray[np.float32]]


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _sum_without_warning(weights: NDArray[np.float64]) -> NDArray[np.float64]:
    """Row sums, infinite (without a RuntimeWarning) where they overflow."""
    with np.errstate(over="ignore"):
        sums: NDArray[np.float64] = weights.sum(axis=1)
    return sums


def _is_int64(value: object) -> bool:
    return _is_int(value) and -(2**63) <= value <= _INT64_MAX  # type: ignore[operator]


def _frozen(a: Any) -> Any:
    """A read-only, C-contiguous, native-byte-order array (``a`` itself when it already is one);
    anything that is not an array is returned as is (:meth:`TrainingState.validate` names it)."""
    if not isinstance(a, np.ndarray):
        return a
    if not a.flags.writeable and a.flags.c_contiguous and a.dtype.isnative:
        return a
    dtype = a.dtype.newbyteorder("=") if a.dtype.byteorder in "<>" else a.dtype
    out = np.array(a, dtype=dtype, order="C", copy=True, subok=False)
    out.setflags(write=False)
    return out


def _canonical(value: Any) -> Any:
    """A msgspec struct as it reads back from its JSON (an int in a float field becomes a float),
    so that equal settings are equal in memory and in a checkpoint file, byte for byte; anything
    else (or a struct that does not validate) as is."""
    if not isinstance(value, msgspec.Struct):
        return value
    try:
        return msgspec.json.decode(msgspec.json.encode(value), type=type(value))
    except (msgspec.ValidationError, msgspec.DecodeError, TypeError):
        return value


def _frozen_layers(layers: Any) -> Any:
    if not isinstance(layers, (list, tuple)):
        return layers
    return tuple(
        tuple(_frozen(a) for a in layer) if isinstance(layer, (list, tuple)) else layer
        for layer in layers
    )


# --------------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class LineageRecord:
    """One agent ever created in a run, and where it came from.

    Attributes
    ----------
    agent_id : int
        Unique id of the agent within the run (0 <= agent_id < 2**63).
    parent_ids : tuple of int
        Ids of the agents it was made from: empty for ``"init"``, one or more otherwise (a list
        is accepted and stored as a tuple).
    generation : int
        Reproductions before the agent was created: 0 for the initial population, g for a child
        bred after the g-th evaluated generation.
    operator : str
        One of :data:`OPERATORS`: ``"init"`` (random initial agent), ``"elite"`` (copied
        unchanged), ``"crossover"``, ``"mutation"``, ``"crossover+mutation"``.
    fitness : float or None
        Its latest fitness (the annualised net daily Sharpe ratio, any float, NaN included), None
        while never evaluated.

    Notes
    -----
    Records compare equal when every field is equal, NaN fitness equal to NaN fitness.
    Construction converts NumPy scalars to Python numbers but checks nothing;
    :meth:`TrainingState.validate` does.
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
        fitness: object = self.fitness
        if isinstance(fitness, float) and math.isnan(fitness):
            fitness = "nan"
        return (self.agent_id, self.parent_ids, self.generation, self.operator, fitness)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LineageRecord):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def problems(self, where: str) -> list[str]:
        """What is wrong with this record, each message starting with ``where``."""
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


@dataclass(frozen=True)
class GenerationStats:
    """One evolved generation: fitness spread, diversity and the window it was scored on.

    Attributes
    ----------
    generation : int
        1-based number of the generation.
    best_fitness, median_fitness : float
        Highest and median fitness of the population (annualised net daily Sharpe ratio).
    entropy : float
        Behavioural entropy of the agents' actions over the window, in [0, 1]
        (:func:`colmena.training.evolution.behavioural_entropy`).
    window_start, window_stop : int
        The fitness window drawn for this generation: bars [start, stop) of the training
        candles (row indices).
    """

    generation: int
    best_fitness: float
    median_fitness: float
    entropy: float
    window_start: int
    window_stop: int


@dataclass(frozen=True, eq=False)
class AdamMoments:
    """Every agent's Adam optimizer state (Kingma & Ba 2015), stacked over agents.

    Attributes
    ----------
    exp_avg : tuple of (weight, bias)
        First moments per swarm layer i: float32 [N, in_i, out_i] and float32 [N, out_i].
    exp_avg_sq : tuple of (weight, bias)
        Second moments, shaped like ``exp_avg``.
    step : numpy.ndarray of int64, shape [N]
        Updates each agent has taken (its own bias correction; a newborn starts at 0).
    """

    exp_avg: tuple[Layer, ...]
    exp_avg_sq: tuple[Layer, ...]
    step: NDArray[np.int64]

    def __post_init__(self) -> None:
        object.__setattr__(self, "exp_avg", _frozen_layers(self.exp_avg))
        object.__setattr__(self, "exp_avg_sq", _frozen_layers(self.exp_avg_sq))
        object.__setattr__(self, "step", _frozen(self.step))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, AdamMoments):
            return NotImplemented
        return _equal(self, other)

    __hash__ = None  # type: ignore[assignment]


@dataclass(frozen=True)
class RNGState:
    """The state of the evolution's random generator (NumPy's PCG64, ``default_rng(seed)``).

    Attributes
    ----------
    state, inc : int
        The 128-bit LCG state and increment, in [0, 2**128).
    has_uint32 : int
        1 when a buffered 32-bit half is pending, else 0.
    uinteger : int
        The buffered 32-bit half, in [0, 2**32).
    """

    state: int
    inc: int
    has_uint32: int
    uinteger: int

    @classmethod
    def of(cls, rng: np.random.Generator) -> RNGState:
        """The current state of ``rng`` (a PCG64 generator)."""
        raw = rng.bit_generator.state
        if raw.get("bit_generator") != "PCG64":
            raise ValueError(f"the evolution's generator must be PCG64, got {raw['bit_generator']}")
        return cls(
            state=int(raw["state"]["state"]),
            inc=int(raw["state"]["inc"]),
            has_uint32=int(raw["has_uint32"]),
            uinteger=int(raw["uinteger"]),
        )

    def generator(self) -> np.random.Generator:
        """A new generator in exactly this state: its draws continue the original's."""
        bit_generator = np.random.PCG64()
        bit_generator.state = {
            "bit_generator": "PCG64",
            "state": {"state": self.state, "inc": self.inc},
            "has_uint32": self.has_uint32,
            "uinteger": self.uinteger,
        }
        return np.random.Generator(bit_generator)

    def problems(self) -> list[str]:
        problems = []
        for name in ("state", "inc"):
            value = getattr(self, name)
            if not (_is_int(value) and 0 <= value < 2**128):
                problems.append(f"rng.{name} must be an int in [0, 2**128), got {value!r}")
        if self.has_uint32 not in (0, 1) or not _is_int(self.has_uint32):
            problems.append(f"rng.has_uint32 must be 0 or 1, got {self.has_uint32!r}")
        if not (_is_int(self.uinteger) and 0 <= self.uinteger < 2**32):
            problems.append(f"rng.uinteger must be an int in [0, 2**32), got {self.uinteger!r}")
        return problems


@dataclass(frozen=True)
class VAEEpoch:
    """Losses of one VAE training epoch (per sample, the loss of :mod:`colmena.model.vae`).

    Attributes
    ----------
    train_loss : float
        Mean training loss (reconstruction + beta * KL) over the epoch's samples.
    val_loss : float
        Loss on the held-out samples (early stopping watches it).
    reconstruction, kl : float
        The two terms of the validation loss (squared error summed over inputs; KL in nats).
    """

    train_loss: float
    val_loss: float
    reconstruction: float
    kl: float


@dataclass(frozen=True, eq=False)
class VAEState:
    """The trained VAE's encoder (weights of the best epoch) and its training record.

    Attributes
    ----------
    layers : tuple of (weight, bias)
        Hidden layers k = 0 .. K-1, ReLU: weight float32 [in_k, out_k], bias float32 [out_k];
        ``in_0 = state_bars * F`` (one standardized window of the market state), ``out_k`` =
        ``config.vae.hidden[k]``.
    mu : (weight, bias)
        Mean head: weight float32 [out_{K-1}, latent], bias float32 [latent]; the latent state
        the agents see.
    logvar : (weight, bias) or None
        Log-variance head, shaped like ``mu``; optional (inference reads only ``mu``; training
        stores it).
    epochs_run : int
        Epochs trained (early stopping may end before ``VAEConfig.epochs``), E.
    best_epoch : int
        Epoch (1-based) whose weights were kept.
    history : tuple of VAEEpoch
        The losses of every epoch run (E entries).
    """

    layers: tuple[Layer, ...]
    mu: Layer
    logvar: Layer | None
    epochs_run: int
    best_epoch: int
    history: tuple[VAEEpoch, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", _frozen_layers(self.layers))
        for name in ("mu", "logvar"):
            pair = getattr(self, name)
            if isinstance(pair, (list, tuple)):
                object.__setattr__(self, name, tuple(_frozen(a) for a in pair))
        if isinstance(self.history, list):
            object.__setattr__(self, "history", tuple(self.history))

    @property
    def latent_dim(self) -> int:
        """Size of the latent state (columns of ``mu``'s weight)."""
        return int(self.mu[0].shape[-1])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, VAEState):
            return NotImplemented
        return _equal(self, other)

    __hash__ = None  # type: ignore[assignment]


@dataclass(frozen=True)
class RegimeVoters:
    """The voters of one market regime (per-regime consensus).

    Attributes
    ----------
    regime : str
        A name of :data:`colmena.features.regime.REGIME_NAMES`.
    decisions : int
        Selection decisions taken in that regime.
    voters : int or None
        Agents voting in it; None when there were too few decisions (the global weights apply).
    """

    regime: str
    decisions: int
    voters: int | None


@dataclass(frozen=True)
class SelectionResult:
    """What the selection bars (the first half of the held-back part) chose.

    Attributes
    ----------
    first_ts, last_ts : int
        First and last selection bar (open time, ns since the epoch UTC).
    agents : int
        Agents scored (N).
    voters : int
        Agents that beat flat (positive net result and daily Sharpe ratio): the global voters.
    best_sharpe, median_sharpe : float or None
        Highest and median annualised daily Sharpe ratio of the agents (None without agents).
    regimes : tuple of RegimeVoters or None
        Per-regime voters, in the order of ``REGIME_NAMES``; None with a global consensus.
    """

    first_ts: int
    last_ts: int
    agents: int
    voters: int
    best_sharpe: float | None
    median_sharpe: float | None
    regimes: tuple[RegimeVoters, ...] | None = None


@dataclass(frozen=True)
class ValidationResult:
    """Selection and gate of a finished run (the held-back part of the training window).

    Attributes
    ----------
    fit_first_ts, fit_last_ts : int
        First and last bar the normalization, the VAE, the regime thresholds and the evolution
        were fitted on (open time, ns since the epoch UTC).
    selection : SelectionResult
    gate : colmena.model.swarm.GateResult
        Did the voted swarm beat flat on the gate bars (through the full engine)?
    regime_consensus : bool
        One weight set per regime (True) or one for all bars.
    """

    fit_first_ts: int
    fit_last_ts: int
    selection: SelectionResult
    gate: GateResult
    regime_consensus: bool

    def to_dict(self) -> dict[str, Any]:
        """JSON form for reports: ``fit`` [first, last], ``selection``, ``gate``,
        ``regime_consensus`` (``selection.regimes`` only with a per-regime consensus)."""
        selection: dict[str, Any] = {
            k: v for k, v in dataclasses.asdict(self.selection).items() if k != "regimes"
        }
        if self.selection.regimes is not None:
            selection["regimes"] = [dataclasses.asdict(r) for r in self.selection.regimes]
        return {
            "fit": [self.fit_first_ts, self.fit_last_ts],
            "selection": selection,
            "gate": self.gate.to_dict(),
            "regime_consensus": self.regime_consensus,
        }


@dataclass(frozen=True)
class DataProvenance:
    """Which candles a run was trained on.

    Attributes
    ----------
    source : str
        Where the candles came from (a path, or a description).
    rows : int
        Candles in the training window.
    first_ts, last_ts : int
        Open time of the first and the last candle (ns since the epoch UTC).
    candles_sha256 : str
        SHA-256 (lowercase hex) of the ts, open, high, low, close and volume columns' bytes, in
        that order: a resume on other data is refused.
    """

    source: str
    rows: int
    first_ts: int
    last_ts: int
    candles_sha256: str

    @classmethod
    def of(cls, candles: Candles) -> DataProvenance:
        """The provenance of ``candles`` (at least one row)."""
        import hashlib

        digest = hashlib.sha256()
        for column in (
            candles.ts,
            candles.open,
            candles.high,
            candles.low,
            candles.close,
            candles.volume,
        ):
            digest.update(np.ascontiguousarray(column).tobytes())
        return cls(
            source=str(candles.source),
            rows=len(candles),
            first_ts=int(candles.ts[0]),
            last_ts=int(candles.ts[-1]),
            candles_sha256=digest.hexdigest(),
        )


# --------------------------------------------------------------------------------------------
# The training state
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class TrainingState:
    """A training run after ``generation`` evolved generations (module docstring for N, L, F,
    G, S).

    Attributes
    ----------
    generation : int
        Generations evolved and scored, G (0 <= G <= ``config.evolution.generations``). The
        population is the one scored in generation G, before it reproduces.
    layers : tuple of (weight, bias)
        The agents' MLPs, input first: layer i has weight float32 [N, in_i, out_i] and bias
        float32 [N, out_i]; widths ``[latent + F, *config.evolution.hidden, 1]``; hidden
        activation ``config.evolution.activation``, output tanh (a signal in [-1, 1]).
    agent_ids : numpy.ndarray of int64, shape [N]
        Lineage id of each agent (row of ``layers``).
    fitness : numpy.ndarray of float64, shape [N]
        Each agent's fitness in generation G (annualised net daily Sharpe ratio on that
        generation's window; NaN before the first generation).
    next_agent_id : int
        The id the next agent created will get (greater than every id in ``lineage``).
    adam : AdamMoments or None
        Each agent's Adam moments and step count; present exactly when
        ``config.evolution.finetune_steps > 0``.
    lineage : tuple of LineageRecord
        Every agent ever created, in creation order, ids unique.
    history : tuple of GenerationStats
        One record per evolved generation (G of them, numbered 1 .. G), with the window each
        was scored on.
    rng : RNGState
        The evolution's random generator after generation G's draws: continuing from it
        reproduces the next windows, tournaments, crossovers and mutations.
    feature_names : tuple of str
        The F base features per bar the model was trained on
        (:data:`colmena.features.market_state.FEATURE_NAMES` of the version that trained it).
    normalization : colmena.features.market_state.Normalization
        ``mean``, ``std``: float64 [F], fitted on the fit bars.
    regime : colmena.features.regime.RegimeClassifier
        The regime classifier fitted on the fit bars (its ``config`` is ``config.regime``).
    vae : VAEState
        The trained VAE encoder and its training record.
    consensus_weights : numpy.ndarray of float64, shape [S, N], or None
        Non-negative, finite voting weights from the selection bars (row 0 global, row 1 + k for
        regime k with a per-regime consensus); None until the run finished.
    validation : ValidationResult or None
        The selection and gate results; None until the run finished (exactly when
        ``consensus_weights`` is None).
    config : TrainConfig
        The run's settings; the feature spec is ``config.features`` (:attr:`feature_spec`), the
        decision settings ``config.decision`` (:attr:`decision`).
    execution : colmena.execution.ExecutionSettings
        Costs and market type the fitness, the selection and the gate traded with.
    risk : colmena.risk.RiskConfig
        Risk limits the gate traded with.
    data : DataProvenance
        The training candles.
    versions : mapping of str to str
        Versions of Python and the libraries that produced the state
        (:func:`colmena.versions.library_versions`).

    Notes
    -----
    Arrays are stored read-only (writable arrays are copied at construction, so later changes
    to the caller's arrays do not leak in); the settings are stored as they read back from JSON
    (``eval_days=4`` becomes ``4.0``). Construction checks nothing: :meth:`validate` does,
    and the checkpoint codec calls it on save and load. Equality is exact: every array by dtype,
    shape and bytes, every float by value and sign (NaN equal to NaN); :meth:`differences`
    names what differs.
    """

    generation: int
    layers: tuple[Layer, ...]
    agent_ids: NDArray[np.int64]
    fitness: NDArray[np.float64]
    next_agent_id: int
    adam: AdamMoments | None
    lineage: tuple[LineageRecord, ...]
    history: tuple[GenerationStats, ...]
    rng: RNGState
    feature_names: tuple[str, ...]
    normalization: Normalization
    regime: RegimeClassifier
    vae: VAEState
    consensus_weights: NDArray[np.float64] | None
    validation: ValidationResult | None
    config: TrainConfig
    execution: ExecutionSettings
    risk: RiskConfig
    data: DataProvenance
    versions: Mapping[str, str] = field(default_factory=library_versions)

    def __post_init__(self) -> None:
        for name in ("config", "execution", "risk"):
            object.__setattr__(self, name, _canonical(getattr(self, name)))
        if isinstance(self.regime, RegimeClassifier):
            regime_config = _canonical(self.regime.config)
            if regime_config is not self.regime.config:
                object.__setattr__(
                    self, "regime", dataclasses.replace(self.regime, config=regime_config)
                )
        object.__setattr__(self, "layers", _frozen_layers(self.layers))
        for name in ("agent_ids", "fitness", "consensus_weights"):
            object.__setattr__(self, name, _frozen(getattr(self, name)))
        for name in ("lineage", "history", "feature_names"):
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
        norm = self.normalization
        if isinstance(norm, Normalization):
            mean, std = _frozen(norm.mean), _frozen(norm.std)
            if mean is not norm.mean or std is not norm.std:
                object.__setattr__(self, "normalization", Normalization(mean=mean, std=std))
        if isinstance(self.versions, Mapping) and not isinstance(
            self.versions, types.MappingProxyType
        ):
            object.__setattr__(self, "versions", types.MappingProxyType(dict(self.versions)))

    # ---- derived -------------------------------------------------------------------------

    @property
    def n_agents(self) -> int:
        """N, the population size."""
        return int(self.agent_ids.shape[0])

    @property
    def finished(self) -> bool:
        """True when selection and the gate ran (the state holds a tradable model)."""
        return self.validation is not None and self.consensus_weights is not None

    @property
    def feature_spec(self) -> FeatureSpec:
        """How the market state is computed (``config.features``)."""
        return self.config.features

    @property
    def decision(self) -> DecisionConfig:
        """When the model decides (``config.decision``)."""
        return self.config.decision

    def to_model(self) -> SwarmModel:
        """The trained swarm as an inference pipeline (core encoder, swarm and consensus).

        Raises
        ------
        ValueError
            If the run has not finished (no selection and gate yet: resume it with
            ``colmena train --resume``) or the state is invalid.
        """
        from colmena.model.nn import Swarm, VAEEncoder

        self.validate()
        if self.validation is None or self.consensus_weights is None:
            raise ValueError(
                f"the training run stopped after generation {self.generation} of "
                f"{self.config.evolution.generations}, before selection and the gate: it holds "
                "no tradable model (finish it with `colmena train --resume`)"
            )
        encoder = VAEEncoder(
            list(self.vae.layers),
            self.vae.mu,
            self.vae.logvar,
            activation="relu",
        )
        return SwarmModel(
            feature_spec=self.config.features,
            normalization=self.normalization,
            encoder=encoder,
            swarm=Swarm(list(self.layers), activation=self.config.evolution.activation),
            weights=self.consensus_weights,
            decision=self.config.decision,
            regime=self.regime,
            gate=self.validation.gate,
        )

    # ---- equality ------------------------------------------------------------------------

    def differences(self, other: TrainingState) -> list[str]:
        """The fields where ``other`` differs, as paths (e.g. ``layers[1][0]``, ``rng.state``,
        ``lineage[12].fitness``); empty when the states are identical."""
        out: list[str] = []
        _diff(self, other, "", out)
        return out

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TrainingState):
            return NotImplemented
        return _equal(self, other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"TrainingState(generation={self.generation!r} of "
            f"{self.config.evolution.generations!r}, agents={self.n_agents}, "
            f"lineage=<{len(self.lineage)} records>, finished={self.finished})"
        )

    # ---- validation ----------------------------------------------------------------------

    def validate(self) -> None:
        """Check every field against the others (shapes, dtypes, counts, settings) and against
        what inference needs, so that a valid finished state can always be traded
        (:meth:`to_model`): finite weights without an empty dimension, a normalization with a
        finite ``mean`` within :data:`NORMALIZATION_MEAN_LIMIT` and a ``std`` of at least
        :data:`NORMALIZATION_STD_FLOOR`, look-back windows within ``data.rows``, selection, gate
        and per-regime records consistent with the agents; and the size limits
        (:data:`MAX_LINEAGE_RECORDS`, :data:`MAX_LINEAGE_PARENTS`, :data:`MAX_GENERATIONS`,
        :data:`MAX_VAE_EPOCHS`).

        Raises
        ------
        ValueError
            Listing every problem, each naming the field, e.g. ``layers[1] weight has 7 inputs
            but layers[0] has 8 outputs`` or ``history has 2 entries but generation is 3``.
        """
        problems = self.problems()
        if problems:
            raise ValueError(
                f"invalid training state ({len(problems)} problem"
                f"{'s' if len(problems) > 1 else ''}): " + "; ".join(problems)
            )

    def problems(self) -> list[str]:
        """Every inconsistency :meth:`validate` would report (empty when valid)."""
        return _Checks(self).run()


# --------------------------------------------------------------------------------------------
# Equality
# --------------------------------------------------------------------------------------------


def _equal(a: object, b: object) -> bool:
    out: list[str] = []
    _diff(a, b, "", out, first_only=True)
    return not out


def _same_float(a: float, b: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)


def _diff(a: object, b: object, path: str, out: list[str], *, first_only: bool = False) -> None:
    """Append to ``out`` the paths where ``a`` and ``b`` differ (exact comparison)."""
    if first_only and out:
        return
    where = path or "<root>"
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        if not (
            isinstance(a, np.ndarray)
            and isinstance(b, np.ndarray)
            and a.dtype == b.dtype
            and a.shape == b.shape
            and a.tobytes() == b.tobytes()
        ):
            out.append(where)
        return
    if type(a) is not type(b):
        out.append(where)
        return
    if dataclasses.is_dataclass(a) and not isinstance(a, type):
        for f in dataclasses.fields(a):
            _diff(
                getattr(a, f.name), getattr(b, f.name), f"{path}.{f.name}".lstrip("."), out,
                first_only=first_only,
            )  # fmt: skip
        return
    if isinstance(a, msgspec.Struct):
        if msgspec.json.encode(a) != msgspec.json.encode(b):
            out.append(where)
        return
    if isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple))
        if len(a) != len(b):
            out.append(f"{where} (length {len(a)} != {len(b)})")
            return
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _diff(x, y, f"{path}[{i}]", out, first_only=first_only)
        return
    if isinstance(a, Mapping):
        assert isinstance(b, Mapping)
        if set(a) != set(b):
            out.append(where)
            return
        for key in a:
            _diff(a[key], b[key], f"{path}[{key!r}]", out, first_only=first_only)
        return
    if isinstance(a, float):
        assert isinstance(b, float)
        if not _same_float(a, b):
            out.append(where)
        return
    if a != b:
        out.append(where)


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


def _describe(a: object) -> str:
    if isinstance(a, np.ndarray):
        return f"{a.dtype.name}{list(a.shape)}"
    return type(a).__name__


class _Checks:
    """The checks of :meth:`TrainingState.validate`; each appends messages to ``problems``."""

    def __init__(self, state: TrainingState) -> None:
        self.s = state
        self.problems: list[str] = []
        self.n_agents: int | None = None

    def add(self, message: str) -> None:
        self.problems.append(message)

    def array(self, name: str, a: object, dtype: type[np.generic], ndim: int) -> bool:
        """True when ``a`` is an ndarray of that dtype and ndim (else a problem)."""
        if not isinstance(a, np.ndarray):
            self.add(f"{name} must be a numpy.ndarray, got {type(a).__name__}")
            return False
        if a.dtype != np.dtype(dtype) or a.ndim != ndim:
            self.add(f"{name} must be a {ndim}-D {np.dtype(dtype).name} array, got {_describe(a)}")
            return False
        return True

    def run(self) -> list[str]:
        s = self.s
        config_ok = isinstance(s.config, TrainConfig)
        if not config_ok:
            self.add(f"config must be a TrainConfig, got {type(s.config).__name__}")
        for name, cls in (
            ("execution", ExecutionSettings),
            ("risk", RiskConfig),
            ("normalization", Normalization),
            ("regime", RegimeClassifier),
            ("vae", VAEState),
            ("rng", RNGState),
            ("data", DataProvenance),
        ):
            if not isinstance(getattr(s, name), cls):
                self.add(f"{name} must be a {cls.__name__}, got {type(getattr(s, name)).__name__}")
        if not (_is_int(s.generation) and s.generation >= 0):
            self.add(f"generation must be an int >= 0, got {s.generation!r}")
        elif config_ok and s.generation > s.config.evolution.generations:
            self.add(
                f"generation {s.generation} exceeds config.evolution.generations "
                f"({s.config.evolution.generations})"
            )
        self.agents()
        self.swarm()
        self.adam()
        self.lineage_and_history()
        if isinstance(s.rng, RNGState):
            self.problems.extend(s.rng.problems())
        self.features_and_vae()
        self.regime()
        self.validation()
        self.data()
        if not isinstance(s.versions, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in s.versions.items()
        ):
            self.add(f"versions must map str to str, got {s.versions!r}")
        return self.problems

    # ---- agents ----------------------------------------------------------------------------

    def agents(self) -> None:
        s = self.s
        if self.array("agent_ids", s.agent_ids, np.int64, 1):
            self.n_agents = int(s.agent_ids.shape[0])
            if np.unique(s.agent_ids).size != s.agent_ids.size:
                self.add("agent_ids must be unique")
            if isinstance(s.config, TrainConfig) and self.n_agents != s.config.evolution.agents:
                self.add(
                    f"agent_ids has {self.n_agents} agents but config.evolution.agents is "
                    f"{s.config.evolution.agents}"
                )
        if (
            self.array("fitness", s.fitness, np.float64, 1)
            and self.n_agents is not None
            and s.fitness.shape[0] != self.n_agents
        ):
            self.add(f"fitness has {s.fitness.shape[0]} entries for {self.n_agents} agents")

    def _widths(self) -> list[int] | None:
        """Expected swarm widths from the config and the VAE (None when unknown)."""
        s = self.s
        if not (isinstance(s.config, TrainConfig) and isinstance(s.vae, VAEState)):
            return None
        try:
            latent = s.vae.latent_dim
        except (AttributeError, IndexError, TypeError):
            return None
        if not isinstance(s.feature_names, tuple):
            return None
        return [latent + len(s.feature_names), *s.config.evolution.hidden, 1]

    def finite_layer(self, name: str, w: NDArray[Any], b: NDArray[Any]) -> None:
        """Problems when a layer has an empty dimension or a non-finite number: the core's
        forward passes (:class:`colmena.Swarm`, :class:`colmena.VAEEncoder`) refuse both."""
        if 0 in w.shape:
            self.add(f"{name} weight {list(w.shape)} has an empty dimension")
        for kind, a in (("weight", w), ("bias", b)):
            if not np.isfinite(a).all():
                self.add(f"{name} {kind} holds NaN or infinity (the weights must be finite)")

    def layer_list(self, name: str, layers: object, agents: bool) -> list[Layer] | None:
        """The layers if they are a sequence of (weight, bias) ndarray pairs of the right ndim
        and dtype (float32), chained; problems otherwise (also for an empty dimension or a
        non-finite weight, which leave the layers usable for the other checks)."""
        if not isinstance(layers, tuple) or not all(
            isinstance(p, tuple) and len(p) == 2 for p in layers
        ):
            self.add(f"{name} must be a tuple of (weight, bias) pairs")
            return None
        ok = True
        w_dim = 3 if agents else 2
        for i, (w, b) in enumerate(layers):
            ok &= self.array(f"{name}[{i}] weight", w, np.float32, w_dim)
            ok &= self.array(f"{name}[{i}] bias", b, np.float32, w_dim - 1)
        if not ok:
            return None
        for i, (w, b) in enumerate(layers):
            expected_bias = (w.shape[0], w.shape[2]) if agents else (w.shape[1],)
            if b.shape != expected_bias:
                self.add(
                    f"{name}[{i}] bias has shape {list(b.shape)}, expected "
                    f"{list(expected_bias)} to match its weight {list(w.shape)}"
                )
                ok = False
            if i > 0:
                prev_out = layers[i - 1][0].shape[-1]
                n_in = w.shape[-2]
                if n_in != prev_out:
                    self.add(
                        f"{name}[{i}] weight has {n_in} inputs but {name}[{i - 1}] has "
                        f"{prev_out} outputs"
                    )
                    ok = False
            self.finite_layer(f"{name}[{i}]", w, b)
        return list(layers) if ok else None

    def swarm(self) -> None:
        s = self.s
        layers = self.layer_list("layers", s.layers, agents=True)
        if layers is None:
            return
        widths = [layers[0][0].shape[1]] + [w.shape[2] for w, _ in layers] if layers else []
        expected = self._widths()
        if expected is not None and widths != expected:
            self.add(
                f"layers have widths {widths}, expected {expected} (latent + features, "
                "config.evolution.hidden, 1 output)"
            )
        for i, (w, _) in enumerate(layers):
            if self.n_agents is not None and w.shape[0] != self.n_agents:
                self.add(f"layers[{i}] weight is for {w.shape[0]} agents, agent_ids for "
                         f"{self.n_agents}")  # fmt: skip

    def adam(self) -> None:
        s = self.s
        wanted = isinstance(s.config, TrainConfig) and s.config.evolution.finetune_steps > 0
        if s.adam is None:
            if wanted:
                self.add("adam is missing but config.evolution.finetune_steps > 0")
            return
        if not isinstance(s.adam, AdamMoments):
            self.add(f"adam must be an AdamMoments or None, got {type(s.adam).__name__}")
            return
        if isinstance(s.config, TrainConfig) and not wanted:
            self.add("adam is present but config.evolution.finetune_steps is 0")
        if self.array("adam.step", s.adam.step, np.int64, 1):
            if self.n_agents is not None and s.adam.step.shape[0] != self.n_agents:
                self.add(f"adam.step has {s.adam.step.shape[0]} entries for {self.n_agents} agents")
            if np.any(s.adam.step < 0):
                self.add("adam.step must be >= 0")
        params = s.layers if isinstance(s.layers, tuple) else ()
        for moment in ("exp_avg", "exp_avg_sq"):
            moments = getattr(s.adam, moment)
            if not isinstance(moments, tuple) or len(moments) != len(params):
                self.add(f"adam.{moment} must hold one (weight, bias) pair per swarm layer")
                continue
            for i, (pair, param) in enumerate(zip(moments, params, strict=True)):
                if not isinstance(pair, tuple) or len(pair) != 2:
                    self.add(f"adam.{moment}[{i}] must be a (weight, bias) pair")
                    continue
                if not isinstance(param, tuple) or len(param) != 2:
                    continue  # layers[i] is reported already
                for kind, a, p in zip(("weight", "bias"), pair, param, strict=True):
                    if not (
                        isinstance(a, np.ndarray)
                        and isinstance(p, np.ndarray)
                        and a.dtype == p.dtype
                        and a.shape == p.shape
                    ):
                        self.add(
                            f"adam.{moment}[{i}] {kind} is {_describe(a)} but its parameter "
                            f"layers[{i}] {kind} is {_describe(p)}"
                        )

    def lineage_and_history(self) -> None:
        s = self.s
        if not isinstance(s.lineage, tuple):
            self.add(f"lineage must be a tuple of LineageRecord, got {type(s.lineage).__name__}")
        elif len(s.lineage) > MAX_LINEAGE_RECORDS:
            self.add(f"lineage has {len(s.lineage)} records, more than the limit of "
                     f"{MAX_LINEAGE_RECORDS}")  # fmt: skip
        else:
            parents = sum(
                len(r.parent_ids)
                for r in s.lineage
                if isinstance(r, LineageRecord) and isinstance(r.parent_ids, tuple)
            )
            if parents > MAX_LINEAGE_PARENTS:
                self.add(f"lineage lists {parents} parent ids, more than the limit of "
                         f"{MAX_LINEAGE_PARENTS}")  # fmt: skip
            seen: dict[int, int] = {}
            for i, record in enumerate(s.lineage):
                if not isinstance(record, LineageRecord):
                    self.add(f"lineage[{i}] is a {type(record).__name__}, not a LineageRecord")
                    continue
                self.problems.extend(record.problems(f"lineage[{i}]"))
                if _is_int(record.agent_id):
                    if record.agent_id in seen:
                        self.add(
                            f"lineage[{i}].agent_id {record.agent_id} repeats "
                            f"lineage[{seen[record.agent_id]}]"
                        )
                    else:
                        seen[record.agent_id] = i
            if not (_is_int(s.next_agent_id) and 0 <= s.next_agent_id <= 2**63):
                self.add(f"next_agent_id must be an int in [0, 2**63], got {s.next_agent_id!r}")
            elif seen and max(seen) >= s.next_agent_id:
                self.add(
                    f"next_agent_id {s.next_agent_id} is not above every lineage id "
                    f"(max {max(seen)})"
                )
            if isinstance(s.agent_ids, np.ndarray) and s.agent_ids.dtype == np.int64:
                missing = [int(a) for a in s.agent_ids.tolist() if int(a) not in seen]
                if missing:
                    self.add(f"agent_ids {missing[:5]} have no lineage record")
        if not isinstance(s.history, tuple):
            self.add(f"history must be a tuple of GenerationStats, got {type(s.history).__name__}")
            return
        if len(s.history) > MAX_GENERATIONS:
            self.add(f"history has {len(s.history)} entries, more than the limit of "
                     f"{MAX_GENERATIONS}")  # fmt: skip
            return
        if _is_int(s.generation) and len(s.history) != s.generation:
            self.add(
                f"history has {len(s.history)} entries but generation is {s.generation} "
                "(one per evolved generation)"
            )
        for i, h in enumerate(s.history):
            if not isinstance(h, GenerationStats):
                self.add(f"history[{i}] is a {type(h).__name__}, not GenerationStats")
                continue
            if h.generation != i + 1:
                self.add(f"history[{i}].generation must be {i + 1}, got {h.generation!r}")
            if not all(_is_int(v) for v in (h.window_start, h.window_stop)) or not all(
                isinstance(v, float) for v in (h.best_fitness, h.median_fitness, h.entropy)
            ):
                self.add(f"history[{i}] must hold float fitness and entropy and int windows")

    # ---- features, VAE, regime ---------------------------------------------------------------

    def features_and_vae(self) -> None:
        s = self.s
        names = s.feature_names
        n_features: int | None = None
        if not (isinstance(names, tuple) and names and all(isinstance(n, str) for n in names)):
            self.add(f"feature_names must be a non-empty tuple of str, got {names!r}")
        else:
            n_features = len(names)
        self.normalization(n_features)
        config = s.config if isinstance(s.config, TrainConfig) else None
        if config is not None:
            self.windows(config)
        vae = s.vae
        if not isinstance(vae, VAEState):
            return
        layers = self.layer_list("vae.layers", vae.layers, agents=False)
        heads: dict[str, Layer] = {}
        for head in ("mu", "logvar"):
            pair = getattr(vae, head)
            if head == "logvar" and pair is None:
                continue  # optional: inference reads only mu
            if not (isinstance(pair, tuple) and len(pair) == 2):
                self.add(
                    f"vae.{head} must be a (weight, bias) pair" + " or None" * (head == "logvar")
                )
                continue
            w, b = pair
            if self.array(f"vae.{head} weight", w, np.float32, 2) & self.array(
                f"vae.{head} bias", b, np.float32, 1
            ):
                if b.shape != (w.shape[1],):
                    self.add(f"vae.{head} bias has shape {list(b.shape)}, expected [{w.shape[1]}]")
                self.finite_layer(f"vae.{head}", w, b)
                heads[head] = pair
        if len(heads) == 2 and heads["mu"][0].shape != heads["logvar"][0].shape:
            self.add(
                f"vae.logvar weight is {list(heads['logvar'][0].shape)} but vae.mu weight is "
                f"{list(heads['mu'][0].shape)}"
            )
        expected_inputs = None
        if config is not None and n_features is not None:
            expected_inputs = config.features.state_bars * n_features
        if layers is not None:
            if config is not None:
                widths = [w.shape[1] for w, _ in layers]
                if widths != list(config.vae.hidden):
                    self.add(f"vae.layers have widths {widths}, config.vae.hidden is "
                             f"{list(config.vae.hidden)}")  # fmt: skip
            if layers and expected_inputs is not None and layers[0][0].shape[0] != expected_inputs:
                self.add(
                    f"vae.layers[0] takes {layers[0][0].shape[0]} inputs, expected "
                    f"state_bars * F = {expected_inputs}"
                )
            if "mu" in heads and layers and heads["mu"][0].shape[0] != layers[-1][0].shape[1]:
                self.add(
                    f"vae.mu weight has {heads['mu'][0].shape[0]} inputs but vae.layers"
                    f"[{len(layers) - 1}] has {layers[-1][0].shape[1]} outputs"
                )
            if (
                "mu" in heads
                and not layers
                and expected_inputs is not None
                and heads["mu"][0].shape[0] != expected_inputs
            ):
                self.add(
                    f"vae.mu weight has {heads['mu'][0].shape[0]} inputs but the encoder has no "
                    f"hidden layer, so it reads the state_bars * F = {expected_inputs} inputs"
                )
        if (
            "mu" in heads
            and config is not None
            and heads["mu"][0].shape[1] != config.vae.latent_dim
        ):
            self.add(
                f"vae.mu has {heads['mu'][0].shape[1]} latent outputs, config.vae.latent_dim is "
                f"{config.vae.latent_dim}"
            )
        if not (_is_int(vae.epochs_run) and vae.epochs_run >= 0):
            self.add(f"vae.epochs_run must be an int >= 0, got {vae.epochs_run!r}")
        elif not (_is_int(vae.best_epoch) and 0 <= vae.best_epoch <= vae.epochs_run):
            self.add(f"vae.best_epoch must be in [0, epochs_run], got {vae.best_epoch!r}")
        if not isinstance(vae.history, tuple) or not all(
            isinstance(e, VAEEpoch) for e in vae.history
        ):
            self.add("vae.history must be a tuple of VAEEpoch")
        elif len(vae.history) > MAX_VAE_EPOCHS:
            self.add(f"vae.history has {len(vae.history)} epochs, more than the limit of "
                     f"{MAX_VAE_EPOCHS}")  # fmt: skip
        elif _is_int(vae.epochs_run) and len(vae.history) != vae.epochs_run:
            self.add(f"vae.history has {len(vae.history)} epochs but epochs_run is "
                     f"{vae.epochs_run}")  # fmt: skip

    def normalization(self, n_features: int | None) -> None:
        """Shapes and values: a finite mean within the limit, a finite std at or above the
        floor."""
        norm = self.s.normalization
        if not isinstance(norm, Normalization):
            return
        for part in ("mean", "std"):
            a = getattr(norm, part)
            if not self.array(f"normalization.{part}", a, np.float64, 1):
                continue
            if n_features is not None and a.shape[0] != n_features:
                self.add(
                    f"normalization.{part} has {a.shape[0]} features but feature_names "
                    f"has {n_features}"
                )
            if part == "mean":
                ok, rule = (
                    np.abs(a) <= NORMALIZATION_MEAN_LIMIT,
                    f"within ±{NORMALIZATION_MEAN_LIMIT:g}",
                )
            else:
                ok, rule = a >= NORMALIZATION_STD_FLOOR, f"at least {NORMALIZATION_STD_FLOOR:g}"
            bad = ~(ok & np.isfinite(a))  # NaN compares False
            if bad.any():
                where = int(np.flatnonzero(bad)[0])
                self.add(
                    f"normalization.{part}[{where}] is {float(a[where])!r}; it must be finite and "
                    f"{rule} (else the standardized features, float32 model inputs, are NaN or "
                    "infinite, and so is every signal)"
                )

    def windows(self, config: TrainConfig) -> None:
        """The look-back windows fit the core's int64 and the training candles (the run could
        not have trained otherwise)."""
        spec = config.features
        for name in ("ffd_window", "volatility_bars", "volume_bars", "state_bars", "max_gap_bars"):
            value = getattr(spec, name)
            if value > _INT64_MAX // 4:
                self.add(
                    f"config.features.{name} is {value}, more than the limit {_INT64_MAX // 4}"
                )
        if config.regime.lookback_bars > _INT64_MAX // 4:
            self.add(f"config.regime.lookback_bars is {config.regime.lookback_bars}, more than "
                     f"the limit {_INT64_MAX // 4}")  # fmt: skip
        rows = self.s.data.rows if isinstance(self.s.data, DataProvenance) else None
        if not _is_int(rows):
            return
        lookback = max(spec.lookback_bars, config.regime.lookback_bars + 1)
        if lookback > rows:
            self.add(
                f"the look-back of config.features and config.regime ({lookback} bars) is longer "
                f"than the {rows} training candles of data.rows"
            )

    def regime(self) -> None:
        s = self.s
        if not isinstance(s.regime, RegimeClassifier) or not isinstance(s.config, TrainConfig):
            return
        if s.regime.config != s.config.regime:
            self.add("regime.config differs from config.regime")
        for name in ("volatility_threshold", "trend_threshold"):
            value = getattr(s.regime, name)
            if not (isinstance(value, float) and math.isfinite(value)):
                self.add(f"regime.{name} must be a finite float, got {value!r}")

    # ---- results and provenance ------------------------------------------------------------

    def validation(self) -> None:
        s = self.s
        weights, validation = s.consensus_weights, s.validation
        if (weights is None) != (validation is None):
            self.add(
                "consensus_weights and validation must both be present (a finished run) or "
                "both be None"
            )
            return
        if weights is None or validation is None:
            return
        config = s.config if isinstance(s.config, TrainConfig) else None
        if config is not None and s.generation != config.evolution.generations:
            self.add(
                f"a finished run must have evolved every generation: generation is "
                f"{s.generation}, config.evolution.generations {config.evolution.generations}"
            )
        if self.array("consensus_weights", weights, np.float64, 2):
            sets = 1 + len(REGIME_NAMES) if config is not None and config.regime_consensus else 1
            if config is not None and weights.shape[0] != sets:
                self.add(
                    f"consensus_weights has {weights.shape[0]} weight sets, expected {sets} "
                    f"(config.regime_consensus is {config.regime_consensus})"
                )
            if self.n_agents is not None and weights.shape[1] != self.n_agents:
                self.add(f"consensus_weights is for {weights.shape[1]} agents, agent_ids for "
                         f"{self.n_agents}")  # fmt: skip
            if not np.all(np.isfinite(weights)) or np.any(weights < 0):
                self.add("consensus_weights must be finite and non-negative")
            elif not np.all(np.isfinite(_sum_without_warning(weights))):
                self.add("consensus_weights: a weight set sums to infinity (the consensus "
                         "divides by the sum)")  # fmt: skip
        if not isinstance(validation, ValidationResult):
            self.add(f"validation must be a ValidationResult, got {type(validation).__name__}")
            return
        if config is not None and validation.regime_consensus != config.regime_consensus:
            self.add("validation.regime_consensus differs from config.regime_consensus")
        if not isinstance(validation.gate, GateResult):
            self.add(f"validation.gate must be a GateResult, got {type(validation.gate).__name__}")
        else:
            self.gate(validation.gate)
        first, last = validation.fit_first_ts, validation.fit_last_ts
        if not (_is_int64(first) and _is_int64(last) and first <= last):
            self.add(
                "validation.fit_first_ts and fit_last_ts must be int64 times, first <= last, "
                f"got {first!r}, {last!r}"
            )
        selection = validation.selection
        if not isinstance(selection, SelectionResult):
            self.add(f"validation.selection must be a SelectionResult, got "
                     f"{type(selection).__name__}")  # fmt: skip
            return
        self.selection(selection)
        for name in ("best_sharpe", "median_sharpe"):
            value = getattr(selection, name)
            if value is not None and not (isinstance(value, float) and math.isfinite(value)):
                self.add(f"validation.selection.{name} must be a finite float or None, "
                         f"got {value!r}")  # fmt: skip
        if config is not None and (selection.regimes is None) == config.regime_consensus:
            self.add("validation.selection.regimes must be present exactly with a per-regime "
                     "consensus")  # fmt: skip

    def gate(self, gate: GateResult) -> None:
        for name in ("net_return", "buy_and_hold_return", "time_in_market"):
            value = getattr(gate, name)
            if not (isinstance(value, float) and math.isfinite(value)):
                self.add(f"validation.gate.{name} must be a finite float, got {value!r}")
        share = gate.time_in_market
        if isinstance(share, float) and not 0.0 <= share <= 1.0:
            self.add(f"validation.gate.time_in_market must be in [0, 1], got {share!r}")
        if not isinstance(gate.passed, bool) or not isinstance(gate.reason, str):
            self.add(
                "validation.gate.passed must be a bool and reason a str, got "
                f"{gate.passed!r}, {gate.reason!r}"
            )
        start, stop = gate.start_ts, gate.stop_ts
        if not (_is_int64(start) and _is_int64(stop) and start <= stop):
            self.add(
                "validation.gate.start_ts and stop_ts must be int64 times, start <= stop, got "
                f"{start!r}, {stop!r}"
            )
        for name in ("n_fills", "n_trades"):
            value = getattr(gate, name)
            if not (_is_int64(value) and value >= 0):
                self.add(f"validation.gate.{name} must be an int >= 0, got {value!r}")

    def selection(self, selection: SelectionResult) -> None:
        first, last = selection.first_ts, selection.last_ts
        if not (_is_int64(first) and _is_int64(last) and first <= last):
            self.add(
                "validation.selection.first_ts and last_ts must be int64 times, first <= last, "
                f"got {first!r}, {last!r}"
            )
        agents = selection.agents
        if self.n_agents is not None and agents != self.n_agents:
            self.add(f"validation.selection.agents is {agents!r}, agent_ids has {self.n_agents}")
        if not (_is_int(selection.voters) and _is_int(agents) and 0 <= selection.voters <= agents):
            self.add(
                f"validation.selection.voters must be an int in [0, agents], got "
                f"{selection.voters!r}"
            )
        regimes = selection.regimes
        if regimes is None:
            return
        names = [r.regime if isinstance(r, RegimeVoters) else None for r in regimes]
        if names != list(REGIME_NAMES):
            self.add(
                "validation.selection.regimes must be one RegimeVoters per regime of "
                f"{list(REGIME_NAMES)}, in that order, got {names}"
            )
            return
        for r in regimes:
            voters_ok = r.voters is None or (
                _is_int(r.voters) and _is_int(agents) and 0 <= r.voters <= agents
            )
            if not (_is_int64(r.decisions) and r.decisions >= 0 and voters_ok):
                self.add(
                    f"validation.selection.regimes {r.regime!r}: decisions must be an int >= 0 "
                    f"and voters None or an int in [0, agents], got {r.decisions!r}, "
                    f"{r.voters!r}"
                )

    def data(self) -> None:
        d = self.s.data
        if not isinstance(d, DataProvenance):
            return
        if not (_is_int64(d.rows) and d.rows >= 1):
            self.add(f"data.rows must be an int in [1, 2**63), got {d.rows!r}")
        if not (_is_int64(d.first_ts) and _is_int64(d.last_ts) and d.first_ts <= d.last_ts):
            self.add(f"data.first_ts and data.last_ts must be int64 times, first <= last, got "
                     f"{d.first_ts!r}, {d.last_ts!r}")  # fmt: skip
        if not (isinstance(d.candles_sha256, str) and _SHA256_RE.match(d.candles_sha256)):
            self.add(f"data.candles_sha256 must be 64 lowercase hex digits, got "
                     f"{d.candles_sha256!r}")  # fmt: skip
        if not isinstance(d.source, str):
            self.add(f"data.source must be a str, got {d.source!r}")
        for i, h in enumerate(self.s.history if isinstance(self.s.history, tuple) else ()):
            if (
                isinstance(h, GenerationStats)
                and _is_int(h.window_start)
                and _is_int(h.window_stop)
                and _is_int(d.rows)
                and not (0 <= h.window_start < h.window_stop <= d.rows)
            ):
                self.add(
                    f"history[{i}] window [{h.window_start}, {h.window_stop}) is not inside the "
                    f"{d.rows} training candles"
                )
