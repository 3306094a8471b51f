"""Performance metrics of an equity curve and its trades (net of fees and slippage).

Definitions (per bar returns ``r_t = E_t / E_{t-1} - 1`` of the equity ``E`` at bar closes,
``A`` bars per year, risk-free rate 0):

- ``total_return`` = E_end / E_start - 1; ``cagr`` = (E_end / E_start)^(1 / years) - 1 with
  ``years`` = elapsed time / 365 days;
- ``annualized_volatility`` = std(r) * sqrt(A); ``sharpe`` = mean(r) / std(r) * sqrt(A)
  (Sharpe 1966); ``sortino`` = mean(r) / sqrt(mean(min(r, 0)^2)) * sqrt(A) (Sortino & Price
  1994); ``calmar`` = cagr / max_drawdown (Young 1991);
- ``max_drawdown`` = max over t of 1 - E_t / max_{s<=t} E_s; ``max_drawdown_duration_days``:
  longest time from a peak until equity is back at it (or the end), in days;
- ``win_rate``, ``profit_factor`` (gross profit / gross loss), ``expectancy`` (mean net PnL per
  closed round-trip trade, quote currency) over closed trades; ``n_trades`` closed trades;
- ``exposure``: share of bars holding a position; ``turnover``: traded notional / mean equity;
  ``fees_paid`` and ``slippage_paid`` in the quote currency.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["performance_metrics"]

SECONDS_PER_YEAR = 365.0 * 86_400.0


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def performance_metrics(
    ts: NDArray[np.int64],
    equity: NDArray[np.float64],
    *,
    initial_equity: float,
    bars_per_year: float,
    position: NDArray[np.float64] | None = None,
    trade_pnl: NDArray[np.float64] | None = None,
    traded_notional: float = 0.0,
    fees_paid: float = 0.0,
    slippage_paid: float = 0.0,
) -> dict[str, Any]:
    """Metrics of one equity curve (see the module docstring for every definition).

    Parameters
    ----------
    ts : numpy.ndarray of int64, shape [n_bars]
        Bar times, ns since epoch UTC.
    equity : numpy.ndarray of float64, shape [n_bars]
        Equity at each bar's close, quote currency.
    initial_equity : float
        Equity before the first bar (the starting cash).
    bars_per_year : float
        Annualization factor.
    position : numpy.ndarray of float64, shape [n_bars], optional
        Position held at each close (for ``exposure``).
    trade_pnl : numpy.ndarray of float64, shape [n_trades], optional
        Net PnL of each closed round-trip trade.
    traded_notional, fees_paid, slippage_paid : float
        Totals in the quote currency.

    Returns
    -------
    dict
        snake_case keys; undefined ratios (e.g. no losing trade) are ``None``.
    """
    e = np.concatenate([[initial_equity], np.asarray(equity, dtype=np.float64)])
    r = e[1:] / e[:-1] - 1.0
    years = max((int(ts[-1]) - int(ts[0])) / 1e9 / SECONDS_PER_YEAR, 1e-12) if len(ts) else 1e-12
    growth = e[-1] / e[0]
    total_return = growth - 1.0
    cagr = growth ** (1.0 / years) - 1.0 if growth > 0 else -1.0
    std = float(r.std()) if r.size else 0.0
    mean = float(r.mean()) if r.size else 0.0
    downside = math.sqrt(float(np.mean(np.minimum(r, 0.0) ** 2))) if r.size else 0.0
    peak = np.maximum.accumulate(e)
    drawdown = 1.0 - e / peak
    max_dd = float(drawdown.max())
    # Longest stretch below a previous peak (index of bars, converted to days).
    times = (
        np.concatenate([[int(ts[0])], np.asarray(ts, dtype=np.int64)]) if len(ts) else np.zeros(1)
    )
    longest = 0.0
    start: int | None = None
    for i in range(e.size):
        if e[i] < peak[i]:
            if start is None:
                start = i - 1
        elif start is not None:
            longest = max(longest, (times[i] - times[start]) / 1e9)
            start = None
    if start is not None:
        longest = max(longest, (times[-1] - times[start]) / 1e9)
    pnl = np.asarray(trade_pnl if trade_pnl is not None else [], dtype=np.float64)
    wins, losses = pnl[pnl > 0], pnl[pnl < 0]
    gross_loss = float(-losses.sum())
    return {
        "initial_equity": float(initial_equity),
        "final_equity": float(e[-1]),
        "total_return": float(total_return),
        "cagr": float(cagr),
        "annualized_volatility": std * math.sqrt(bars_per_year),
        "sharpe": _finite(mean / std * math.sqrt(bars_per_year)) if std > 0 else None,
        "sortino": _finite(mean / downside * math.sqrt(bars_per_year)) if downside > 0 else None,
        "calmar": _finite(cagr / max_dd) if max_dd > 0 else None,
        "max_drawdown": max_dd,
        "max_drawdown_duration_days": longest / 86_400.0,
        "n_trades": int(pnl.size),
        "win_rate": float(wins.size / pnl.size) if pnl.size else None,
        "profit_factor": float(wins.sum() / gross_loss) if gross_loss > 0 else None,
        "expectancy": float(pnl.mean()) if pnl.size else None,
        "exposure": float(np.mean(np.asarray(position) != 0.0)) if position is not None else None,
        "turnover": float(traded_notional / np.mean(e)) if e.size else 0.0,
        "fees_paid": float(fees_paid),
        "slippage_paid": float(slippage_paid),
        "n_bars": len(ts),
        "years": years,
    }
