"""Execution: orders to fills, one implementation for the backtest and live paper trading.

- :mod:`colmena.execution.simulation`: :class:`ExecutionSettings` (fees, slippage, impact,
  volume limit, spot or margin) and :func:`simulate_targets`, signal rows through the core's
  trading loop without risk sizing (the fitness and the baselines).
"""

from colmena.execution.simulation import (
    WIND_DOWN_BARS,
    ExecutionSettings,
    TargetSimulation,
    simulate_targets,
)

__all__ = ["WIND_DOWN_BARS", "ExecutionSettings", "TargetSimulation", "simulate_targets"]
