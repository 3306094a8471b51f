"""Execution: orders to fills, one implementation for the backtest and live paper trading.

- :mod:`colmena.execution.simulation`: :class:`ExecutionSettings` (fees, slippage, impact,
  volume limit, spot or margin) and :func:`simulate_targets`, signal rows through the core's
  trading loop without risk sizing (the fitness and the baselines).
- :mod:`colmena.execution.trading_loop`: the core's bar-stepping :class:`TradingLoop` (fill at
  the open, mark at the close, observe, decide) and its two halves, :class:`RiskStage` (sizing,
  limits, breakers) and :class:`ExecutionStage` (the paper account), with the typed messages
  they exchange (orders, execution reports, account snapshots) for services that run them apart.
"""

from colmena.execution.simulation import (
    WIND_DOWN_BARS,
    ExecutionSettings,
    TargetSimulation,
    simulate_targets,
)
from colmena.execution.trading_loop import (
    AccountSnapshot,
    Bar,
    ExecutionReport,
    ExecutionStage,
    Order,
    RiskDecision,
    RiskStage,
    StepResult,
    TradingLoop,
)

__all__ = [
    "WIND_DOWN_BARS",
    "AccountSnapshot",
    "Bar",
    "ExecutionReport",
    "ExecutionSettings",
    "ExecutionStage",
    "Order",
    "RiskDecision",
    "RiskStage",
    "StepResult",
    "TargetSimulation",
    "TradingLoop",
    "simulate_targets",
]
