"""Model: the networks and the trained swarm as one inference pipeline.

- :mod:`colmena.model.nn`: the core's forward passes (:class:`MLP`, :class:`Swarm` of agent
  MLPs, :class:`VAEEncoder` giving mu/logvar).
- :mod:`colmena.model.vae`: the beta-VAE trained in torch and exported to the core encoder.
- :mod:`colmena.model.decision`: when the swarm decides (the decision interval).
- :mod:`colmena.model.swarm`: :class:`SwarmModel`, candles -> market state -> VAE latent ->
  agents -> consensus, and the validation gate's result.
"""

from colmena.model.decision import DecisionConfig, decision_bars
from colmena.model.nn import MLP, Swarm, VAEEncoder
from colmena.model.swarm import GateResult, SwarmModel, SwarmSignals, consensus

__all__ = [
    "MLP",
    "DecisionConfig",
    "GateResult",
    "Swarm",
    "SwarmModel",
    "SwarmSignals",
    "VAEEncoder",
    "consensus",
    "decision_bars",
]
