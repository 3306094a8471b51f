"""Risk: position sizing, limits and circuit breakers, and tail-risk measures.

- :mod:`colmena.risk.config`: :class:`RiskConfig`, the settings of the core's bar-by-bar
  :class:`RiskManager` (Kelly fraction, VaR budget, drawdown ladder, daily loss limit, kill
  switch).
- :mod:`colmena.risk.tail_risk`: Value at Risk, expected shortfall and stress tests.
"""

from colmena.risk.config import RiskConfig, RiskManager
from colmena.risk.tail_risk import (
    StressResult,
    TailRisk,
    stress_test,
    tail_risk,
    value_at_risk_report,
)

__all__ = [
    "RiskConfig",
    "RiskManager",
    "StressResult",
    "TailRisk",
    "stress_test",
    "tail_risk",
    "value_at_risk_report",
]
