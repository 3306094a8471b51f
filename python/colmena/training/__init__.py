"""Training: evolve the swarm on the training bars, select voters, gate on validation.

- :mod:`colmena.training.evolution`: the population, its genetic operators and Adam refinement,
  and the fitness (net daily Sharpe through the trading loop).
- :mod:`colmena.training.trainer`: :func:`train`, the whole pipeline from candles to a gated
  :class:`colmena.model.SwarmModel`.
"""

from colmena.training.evolution import EvolutionConfig, GenerationStats
from colmena.training.trainer import TrainConfig, TrainResult, train

__all__ = ["EvolutionConfig", "GenerationStats", "TrainConfig", "TrainResult", "train"]
