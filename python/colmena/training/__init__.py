"""Training: evolve the swarm on the training bars, select voters, gate on validation.

- :mod:`colmena.training.config`: :class:`TrainConfig` and :class:`EvolutionConfig`.
- :mod:`colmena.training.state`: :class:`TrainingState`, the typed state of a run (what a
  checkpoint holds and a resume continues from) and its records (lineage, history, ...).
- :mod:`colmena.training.evolution`: the population, its genetic operators and Adam refinement,
  and the fitness (net daily Sharpe through the trading loop).
- :mod:`colmena.training.trainer`: :func:`train`, the whole pipeline from candles to a gated
  :class:`colmena.model.SwarmModel`, resumable from a :class:`TrainingState`.
"""

from colmena.training.config import EvolutionConfig, TrainConfig
from colmena.training.state import GenerationStats, LineageRecord, TrainingState
from colmena.training.trainer import ResumeError, TrainResult, train

__all__ = [
    "EvolutionConfig",
    "GenerationStats",
    "LineageRecord",
    "ResumeError",
    "TrainConfig",
    "TrainResult",
    "TrainingState",
    "train",
]
