"""Analysis: performance measured the way a quant reads it.

- :mod:`colmena.analysis.metrics`: daily-return metrics (Sharpe, Sortino, drawdown, CAGR, ...)
  over calendar days.
- :mod:`colmena.analysis.tearsheet`: tear-sheet statistics (monthly returns, drawdown periods,
  benchmark-relative statistics, round-trip trades), with empyrical-reloaded.
"""

from colmena.analysis.metrics import daily_equity, day_end_rows, performance_metrics

__all__ = ["daily_equity", "day_end_rows", "performance_metrics"]
