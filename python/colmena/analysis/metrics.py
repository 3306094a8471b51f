"""Performance metrics of an equity curve and its trades, net of fees, slippage and borrow.

Returns for risk-adjusted ratios are **daily**: the equity at the last bar close of every UTC
calendar day, a day without any bar carrying the previous day's equity (crypto trades every day,
so a calendar year has 365 of them), and ``r_d = E_d / E_{d-1} - 1`` with ``E_0`` the initial
equity. Per-bar returns would make the ratios depend on the bar length and on gaps in the data
(a gap is one long bar: per-row annualisation overstates the Sharpe ratio on data with holes).

Definitions (risk-free rate 0):

- ``total_return`` = E_end / E_0 - 1; ``net_pnl`` = E_end - E_0; ``gross_pnl`` = net_pnl + fees +
  slippage + borrow (the result at open prices, before every cost);
- ``cagr`` = (E_end / E_0)^(365 / days) - 1, reported only when the span covers at least
  :data:`MIN_DAYS_FOR_CAGR` days (GIPS: returns of periods under a year are not annualised);
  otherwise ``None`` with a warning;
- ``sharpe`` = mean(r) / std(r, ddof=1) * sqrt(365) (Sharpe 1966, 1994; annualisation as in Lo,
  "The statistics of Sharpe ratios", 2002); ``sortino`` = mean(r) / sqrt(mean(min(r, 0)^2)) *
  sqrt(365) (Sortino & Price 1994); ``annualized_volatility`` = std(r, ddof=1) * sqrt(365); all
  ``None`` with a warning below :data:`MIN_DAILY_RETURNS` daily returns;
- ``calmar`` = cagr / max_drawdown (Young 1991), when ``cagr`` is reported;
- ``max_drawdown`` = max over bars of 1 - E_t / max_{s<=t} E_s (bar closes, the finest view);
  ``max_drawdown_duration_days``: the longest time from a peak until equity is back at it (or
  the end);
- ``n_trades``, ``win_rate``, ``profit_factor`` (gross profit / gross loss), ``expectancy``
  (mean net PnL per closed round trip, quote currency);
- ``time_in_market``: share of bars holding a position; ``mean_gross_exposure``: mean over bars
  of |position * close| / equity (a strategy in the market 90% of the time at 5% of equity has
  time_in_market 0.9 and mean_gross_exposure 0.045);
- ``turnover``: traded notional / mean equity over the span; ``annual_turnover``: the same per
  365 days.
"""

from __future__ import annotations

import math
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from colmena.units import DAYS_PER_YEAR, NS_PER_DAY

__all__ = [
    "DAYS_PER_YEAR",
    "MIN_DAILY_RETURNS",
    "MIN_DAYS_FOR_CAGR",
    "NS_PER_DAY",
    "daily_equity",
    "day_end_rows",
    "performance_metrics",
]

#: Calendar days per year: crypto markets trade every day.
#: Below this many calendar days the compound annual growth rate is not reported.
MIN_DAYS_FOR_CAGR: Final = 365.0
#: Below this many daily returns Sharpe, Sortino and volatility are not reported.
MIN_DAILY_RETURNS: Final = 30


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def day_end_rows(close_ts: NDArray[np.int64]) -> NDArray[np.int64]:
    """Index of the last bar of every UTC day present in ``close_ts``.

    Parameters
    ----------
    close_ts : numpy.ndarray of int64, shape [n_bars]
        Bar close times, ns since the epoch UTC, increasing. A close exactly at midnight belongs
        to the day it ends.

    Returns
    -------
    numpy.ndarray of int64, shape [n_days_present]
    """
    day = (np.asarray(close_ts, dtype=np.int64) - 1) // NS_PER_DAY
    if day.size == 0:
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero(np.diff(day, append=day[-1] + 1) != 0).astype(np.int64)


def daily_equity(
    close_ts: NDArray[np.int64], equity: NDArray[np.float64]
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """Equity at the end of every UTC calendar day of the span.

    Parameters
    ----------
    close_ts : numpy.ndarray of int64, shape [n_bars]
        Bar close times, ns since the epoch UTC, increasing.
    equity : numpy.ndarray of float64, shape [n_bars]
        Equity at each bar close.

    Returns
    -------
    days : numpy.ndarray of int64, shape [n_days]
        Day numbers (days since 1970-01-01 UTC), every calendar day from the first bar's to the
        last bar's, none skipped.
    equity : numpy.ndarray of float64, shape [n_days]
        Equity at the last bar close of each day; a day without bars carries the previous one.
        A close exactly at midnight belongs to the day it ends.
    """
    ts = np.asarray(close_ts, dtype=np.int64)
    e = np.asarray(equity, dtype=np.float64)
    if ts.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    day = (ts - 1) // NS_PER_DAY  # a close at 00:00 ends the previous day
    days = np.arange(day[0], day[-1] + 1, dtype=np.int64)
    last_of_day = day_end_rows(ts)
    out = np.full(days.size, np.nan)
    out[day[last_of_day] - day[0]] = e[last_of_day]
    # carry the last known equity through days without bars
    idx = np.where(np.isfinite(out), np.arange(out.size), 0)
    np.maximum.accumulate(idx, out=idx)
    return days, out[idx]


def performance_metrics(
    close_ts: NDArray[np.int64],
    equity: NDArray[np.float64],
    *,
    initial_equity: float,
    position: NDArray[np.float64] | None = None,
    close: NDArray[np.float64] | None = None,
    trade_pnl: NDArray[np.float64] | None = None,
    traded_notional: float = 0.0,
    fees_paid: float = 0.0,
    slippage_paid: float = 0.0,
    borrow_paid: float = 0.0,
) -> dict[str, Any]:
    """Metrics of one equity curve (every definition is in the module docstring).

    Parameters
    ----------
    close_ts : numpy.ndarray of int64, shape [n_bars]
        Bar close times, ns since the epoch UTC, increasing.
    equity : numpy.ndarray of float64, shape [n_bars]
        Equity at each bar close, quote currency.
    initial_equity : float
        Equity before the first bar (the starting cash), > 0.
    position : numpy.ndarray of float64, shape [n_bars], optional
        Position held at each close, signed base units (for ``time_in_market``).
    close : numpy.ndarray of float64, shape [n_bars], optional
        Close prices (with ``position``, for ``mean_gross_exposure``).
    trade_pnl : numpy.ndarray of float64, shape [n_trades], optional
        Net PnL of each closed round trip, quote currency.
    traded_notional, fees_paid, slippage_paid, borrow_paid : float
        Totals in the quote currency.

    Returns
    -------
    dict
        snake_case keys; ratios that are undefined or would mislead are ``None``, and
        ``warnings`` (list of str) says why.

    Raises
    ------
    ValueError
        If the arrays differ in length, are empty, or ``initial_equity`` is not positive.
    """
    ts = np.asarray(close_ts, dtype=np.int64)
    e = np.asarray(equity, dtype=np.float64)
    if ts.shape != e.shape or ts.ndim != 1 or ts.size == 0:
        raise ValueError(f"close_ts {ts.shape} and equity {e.shape} must be 1-D, equal, non-empty")
    if not initial_equity > 0:
        raise ValueError(f"initial_equity must be > 0, got {initial_equity}")
    for name, values in (("position", position), ("close", close)):
        if values is not None and np.shape(values) != e.shape:
            raise ValueError(f"{name} has shape {np.shape(values)}, equity {e.shape}")
    warnings: list[str] = []
    days, day_equity = daily_equity(ts, e)
    span_days = float(days.size)
    r = np.diff(np.concatenate([[initial_equity], day_equity])) / np.concatenate(
        [[initial_equity], day_equity[:-1]]
    )
    growth = float(e[-1] / initial_equity)
    total_return = growth - 1.0
    cagr: float | None = None
    if span_days >= MIN_DAYS_FOR_CAGR:
        cagr = growth ** (DAYS_PER_YEAR / span_days) - 1.0 if growth > 0 else -1.0
    else:
        warnings.append(
            f"{span_days:.0f} days is under {MIN_DAYS_FOR_CAGR:.0f}: the return is not annualised "
            "(no CAGR, no Calmar)"
        )
    sharpe = sortino = volatility = None
    if r.size >= MIN_DAILY_RETURNS:
        std = float(r.std(ddof=1))
        mean = float(r.mean())
        downside = math.sqrt(float(np.mean(np.minimum(r, 0.0) ** 2)))
        scale = math.sqrt(DAYS_PER_YEAR)
        volatility = std * scale
        sharpe = _finite(mean / std * scale) if std > 0 else None
        sortino = _finite(mean / downside * scale) if downside > 0 else None
        if sharpe is None:
            warnings.append("the daily returns never varied (no trade moved equity): no Sharpe")
        if sortino is None and sharpe is not None:
            warnings.append("no day lost money: no Sortino (no downside deviation)")
    else:
        warnings.append(
            f"only {r.size} daily returns (under {MIN_DAILY_RETURNS}): no Sharpe, Sortino or "
            "volatility"
        )
    e0 = np.concatenate([[initial_equity], e])
    peak = np.maximum.accumulate(e0)
    drawdown = 1.0 - e0 / peak
    max_dd = float(drawdown.max())
    times = np.concatenate([[int(ts[0]) - (int(ts[1] - ts[0]) if ts.size > 1 else 0)], ts])
    below = e0 < peak
    longest = 0.0
    start: int | None = None
    for i in np.flatnonzero(np.diff(below.astype(np.int8), prepend=0, append=0)):
        if start is None:
            start = int(i) - 1
        else:
            longest = max(longest, float(times[min(int(i), times.size - 1)] - times[start]))
            start = None
    pnl = np.asarray(trade_pnl if trade_pnl is not None else [], dtype=np.float64)
    wins, losses = pnl[pnl > 0], pnl[pnl < 0]
    gross_loss = float(-losses.sum())
    time_in_market = exposure = None
    if position is not None:
        pos = np.asarray(position, dtype=np.float64)
        time_in_market = float(np.mean(pos != 0.0))
        if close is not None:
            gross = np.abs(pos * np.asarray(close, dtype=np.float64))
            exposure = float(np.mean(np.divide(gross, e, out=np.zeros_like(e), where=e > 0)))
    net_pnl = float(e[-1] - initial_equity)
    mean_equity = float(np.mean(e0))
    years = span_days / DAYS_PER_YEAR
    turnover = float(traded_notional / mean_equity) if mean_equity > 0 else 0.0
    return {
        "initial_equity": float(initial_equity),
        "final_equity": float(e[-1]),
        "total_return": float(total_return),
        "net_pnl": net_pnl,
        "gross_pnl": net_pnl + float(fees_paid) + float(slippage_paid) + float(borrow_paid),
        "fees_paid": float(fees_paid),
        "slippage_paid": float(slippage_paid),
        "borrow_paid": float(borrow_paid),
        "cagr": cagr,
        "sharpe": sharpe,
        "sortino": sortino,
        "annualized_volatility": volatility,
        "calmar": _finite(cagr / max_dd) if cagr is not None and max_dd > 0 else None,
        "max_drawdown": max_dd,
        "max_drawdown_duration_days": longest / NS_PER_DAY,
        "n_trades": int(pnl.size),
        "win_rate": float(wins.size / pnl.size) if pnl.size else None,
        "profit_factor": float(wins.sum() / gross_loss) if gross_loss > 0 else None,
        "expectancy": float(pnl.mean()) if pnl.size else None,
        "time_in_market": time_in_market,
        "mean_gross_exposure": exposure,
        "turnover": turnover,
        "annual_turnover": turnover / years if years > 0 else None,
        "n_bars": int(ts.size),
        "days": span_days,
        "n_daily_returns": int(r.size),
        "warnings": warnings,
    }
