"""What determines a training run: the evolution's and the whole run's settings.

Both are plain, validated msgspec structs with no behaviour, defined here (and re-exported by
:mod:`colmena.training.evolution` and :mod:`colmena.training.trainer`) so that the typed training
state (:mod:`colmena.training.state`) can hold them without importing the code that trains.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from colmena.features.market_state import FeatureSpec
from colmena.features.regime import RegimeConfig
from colmena.model.decision import DecisionConfig
from colmena.model.vae import VAEConfig

__all__ = ["EvolutionConfig", "TrainConfig"]


class EvolutionConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Population, operators, fitness window and fine-tuning settings
    (:mod:`colmena.training.evolution`).

    Attributes
    ----------
    agents : int
        Population size (>= 2).
    hidden : tuple of int
        Hidden layer widths of every agent's MLP.
    activation : {"tanh", "relu", "gelu"}
        Hidden activation (the output is always tanh).
    generations : int
        Generations evolved.
    eval_days : float
        Length of each generation's evaluation window, calendar days of training bars (all of
        them when fewer).
    tournament_size, elite, crossover_rate, mutation_rate, mutation_scale
        Genetic operators.
    finetune_steps, finetune_learning_rate
        Adam fine-tuning steps per generation (0: none) and its learning rate.
    """

    agents: Annotated[int, msgspec.Meta(ge=2)] = 100
    hidden: tuple[int, ...] = (32, 32)
    activation: Literal["tanh", "relu", "gelu"] = "tanh"
    generations: Annotated[int, msgspec.Meta(ge=1)] = 30
    eval_days: Annotated[float, msgspec.Meta(ge=1.0)] = 120.0
    tournament_size: Annotated[int, msgspec.Meta(ge=1)] = 3
    elite: Annotated[int, msgspec.Meta(ge=0)] = 5
    crossover_rate: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] = 0.7
    mutation_rate: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] = 0.1
    mutation_scale: Annotated[float, msgspec.Meta(ge=0.0)] = 0.2
    finetune_steps: Annotated[int, msgspec.Meta(ge=0)] = 0
    finetune_learning_rate: Annotated[float, msgspec.Meta(gt=0.0)] = 1e-3

    def __post_init__(self) -> None:
        errors = []
        if self.elite >= self.agents:
            errors.append(f"elite ({self.elite}) must be smaller than agents ({self.agents})")
        if self.tournament_size > self.agents:
            errors.append(f"tournament_size ({self.tournament_size}) exceeds agents")
        if not self.hidden or any(h < 1 for h in self.hidden):
            errors.append(f"hidden must be one or more widths >= 1, got {self.hidden}")
        if errors:
            raise msgspec.ValidationError("; ".join(errors))


class TrainConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Everything that determines a training run (stored in the training state).

    Attributes
    ----------
    seed : int
    features : FeatureSpec
    vae : VAEConfig
    evolution : EvolutionConfig
    decision : DecisionConfig
        Decision interval and no-trade band (the fitness trades at this interval).
    regime : RegimeConfig
    regime_consensus : bool
        One set of voters and weights per market regime (True) or one for all bars (False, the
        default: on the selection and gate bars of the sample years the per-regime consensus did
        not beat the global one, see ``bench/decision_interval.py``). Per-regime performance is
        reported either way.
    validation_fraction : float
        Share of the training window held back for selection and the gate, in (0, 0.6].
    gate : bool
        Trade only a model that beats flat on the gate bars (default True). False trades every
        model and the report says so.
    """

    seed: int = 0
    features: FeatureSpec = msgspec.field(default_factory=FeatureSpec)
    vae: VAEConfig = msgspec.field(default_factory=VAEConfig)
    evolution: EvolutionConfig = msgspec.field(default_factory=EvolutionConfig)
    decision: DecisionConfig = msgspec.field(default_factory=DecisionConfig)
    regime: RegimeConfig = msgspec.field(default_factory=RegimeConfig)
    regime_consensus: bool = False
    validation_fraction: Annotated[float, msgspec.Meta(gt=0.0, le=0.6)] = 0.3
    gate: bool = True
