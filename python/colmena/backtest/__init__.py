"""Backtest: the main job, a walk-forward, out-of-sample backtest of an evolved swarm.

- :mod:`colmena.backtest.engine`: :func:`backtest`, its :class:`BacktestConfig` and the
  :class:`BacktestRun` it returns (tables, report, baselines).
"""

from colmena.backtest.engine import (
    BacktestConfig,
    BacktestRun,
    FoldInfo,
    IncompatibleCheckpointError,
    backtest,
)

__all__ = ["BacktestConfig", "BacktestRun", "FoldInfo", "IncompatibleCheckpointError", "backtest"]
