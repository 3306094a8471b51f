"""Tear-sheet statistics of a backtest: round trips, monthly returns, drawdown periods, and the
swarm against its benchmark.

Return statistics come from daily returns (:func:`colmena.metrics.daily_equity`: equity at each UTC
day's last close, calendar days). Monthly compounding and the benchmark-relative figures (alpha,
beta, capture ratios) use ``empyrical-reloaded`` (the maintained fork of Quantopian's empyrical,
the statistics behind pyfolio tear sheets), so they mean what quants already know them to mean;
the drawdown periods and the trade statistics are computed here from the bar-level equity and the
core's round trips.
"""

from __future__ import annotations

import math
from typing import Any, Final

import numpy as np
import pandas as pd
import pyarrow as pa
from numpy.typing import NDArray

from colmena.analysis.metrics import daily_equity
from colmena.units import DAYS_PER_YEAR, NS_PER_DAY, NS_PER_HOUR, SECONDS_PER_DAY

__all__ = [
    "EXIT_REASONS",
    "benchmark_relative",
    "daily_returns",
    "drawdown_periods",
    "monthly_returns",
    "trade_statistics",
    "trades_table",
]

#: Order origin of the order that closed a round trip -> its exit reason.
EXIT_REASONS: Final = {
    "decision": "signal",
    "remainder": "signal",
    "risk": "risk_limit",
    "end_of_run": "end_of_run",
}


def daily_returns(
    close_ts: NDArray[np.int64], equity: NDArray[np.float64], initial_equity: float
) -> pd.Series:
    """Daily net returns over calendar days, indexed by UTC date (float64 fractions)."""
    days, day_equity = daily_equity(close_ts, equity)
    previous = np.concatenate([[initial_equity], day_equity[:-1]])
    index = pd.to_datetime(days * SECONDS_PER_DAY, unit="s", utc=True)
    return pd.Series(day_equity / previous - 1.0, index=index, name="returns")


def monthly_returns(returns: pd.Series) -> list[dict[str, Any]]:
    """Compounded return of each calendar month (a partial first or last month as it is).

    Returns
    -------
    list of dict
        ``year``, ``month`` (1-12), ``return`` (fraction), oldest first.
    """
    import empyrical

    if returns.empty:
        return []
    monthly = empyrical.aggregate_returns(returns, "monthly")
    return [
        {"year": int(year), "month": int(month), "return": float(value)}
        for (year, month), value in monthly.items()
    ]


def drawdown_periods(
    close_ts: NDArray[np.int64], equity: NDArray[np.float64], initial_equity: float, top: int = 5
) -> list[dict[str, Any]]:
    """The ``top`` deepest drawdowns of the bar-level equity curve.

    Returns
    -------
    list of dict
        ``peak``, ``trough`` and ``recovery`` (ISO times of the bar closes; ``recovery`` None while
        still under water), ``depth`` (fraction below the peak), ``days`` (peak to recovery, or
        to the end), deepest first.
    """
    ts = np.concatenate([[int(close_ts[0])], np.asarray(close_ts, dtype=np.int64)])
    e = np.concatenate([[initial_equity], np.asarray(equity, dtype=np.float64)])
    peak = np.maximum.accumulate(e)
    under = e < peak
    periods: list[dict[str, Any]] = []
    i = 0
    while i < e.size:
        if not under[i]:
            i += 1
            continue
        start = i - 1  # the peak
        j = i
        while j < e.size and under[j]:
            j += 1
        trough = start + int(np.argmin(e[start:j]))
        recovered = j < e.size
        end = j if recovered else e.size - 1
        periods.append(
            {
                "peak": _iso(ts[start]),
                "trough": _iso(ts[trough]),
                "recovery": _iso(ts[j]) if recovered else None,
                "depth": float(1.0 - e[trough] / e[start]),
                "days": float((ts[end] - ts[start]) / NS_PER_DAY),
            }
        )
        i = j
    periods.sort(key=lambda p: -p["depth"])
    return periods[:top]


def benchmark_relative(returns: pd.Series, benchmark: pd.Series) -> dict[str, float | None]:
    """The swarm's daily returns against a benchmark's (buy-and-hold), with empyrical.

    Returns
    -------
    dict
        ``alpha`` (annualised, 365 days) and ``beta`` of the CAPM regression, ``correlation``,
        ``tracking_error`` (annualised std of the active return), ``information_ratio`` (annualised
        mean active return over tracking error), ``up_capture`` and ``down_capture``; None where
        undefined (a flat swarm has no beta to speak of).
    """
    import empyrical

    if returns.size < 2 or float(returns.std()) == 0.0 or float(benchmark.std()) == 0.0:
        return dict.fromkeys(
            ("alpha", "beta", "correlation", "tracking_error", "information_ratio",
             "up_capture", "down_capture"),
            None,
        )  # fmt: skip
    alpha, beta = empyrical.alpha_beta(returns, benchmark, annualization=DAYS_PER_YEAR)
    active = returns - benchmark
    tracking = float(active.std(ddof=1) * math.sqrt(DAYS_PER_YEAR))
    return {
        "alpha": _finite(alpha),
        "beta": _finite(beta),
        "correlation": _finite(float(np.corrcoef(returns, benchmark)[0, 1])),
        "tracking_error": _finite(tracking),
        "information_ratio": _finite(float(active.mean()) * DAYS_PER_YEAR / tracking)
        if tracking > 0
        else None,
        "up_capture": _finite(empyrical.up_capture(returns, benchmark)),
        "down_capture": _finite(empyrical.down_capture(returns, benchmark)),
    }


def trades_table(raw: dict[str, Any], fold_of: NDArray[np.int64] | None = None) -> pa.Table:
    """The round trips of a backtest as ``trades.parquet``.

    Parameters
    ----------
    raw : dict
        The core's ``run_backtest`` result (``trade_*`` arrays).
    fold_of : numpy.ndarray of int64, shape [n_trades], optional
        Walk-forward fold of each trade (by its close).

    Returns
    -------
    pyarrow.Table
        ``entry_time``, ``exit_time`` (fills, UTC), ``side`` (long/short), ``quantity`` (largest
        position, base units), ``entry_price``, ``exit_price`` (average fill prices, quote),
        ``pnl`` (net of fees and borrow, quote), ``return`` (pnl over entry notional),
        ``fees``, ``borrow`` (quote), ``holding_hours``, ``exit_reason`` (signal, risk_limit,
        end_of_run) and ``fold``.
    """
    from colmena import _core

    origins = _core.order_origin_names()
    opened = np.asarray(raw["trade_open_ts"], dtype=np.int64)
    closed = np.asarray(raw["trade_close_ts"], dtype=np.int64)
    quantity = np.asarray(raw["trade_quantity"], dtype=np.float64)
    entry = np.asarray(raw["trade_entry_price"], dtype=np.float64)
    pnl = np.asarray(raw["trade_pnl"], dtype=np.float64)
    notional = quantity * entry
    fold = np.full(opened.size, -1, np.int64) if fold_of is None else fold_of
    sides = np.where(np.asarray(raw["trade_side"]) > 0, "long", "short").tolist()
    returns = np.divide(pnl, notional, out=np.zeros_like(pnl), where=notional > 0)

    def ts(values: NDArray[np.int64]) -> pa.Array:
        return pa.array(values).cast(pa.timestamp("ns", tz="UTC"))

    return pa.table(
        {
            "entry_time": ts(opened),
            "exit_time": ts(closed),
            "side": pa.array(sides, pa.string()),
            "quantity": pa.array(quantity),
            "entry_price": pa.array(entry),
            "exit_price": pa.array(np.asarray(raw["trade_exit_price"], dtype=np.float64)),
            "pnl": pa.array(pnl),
            "return": pa.array(returns),
            "fees": pa.array(np.asarray(raw["trade_fees"], dtype=np.float64)),
            "borrow": pa.array(np.asarray(raw["trade_borrow"], dtype=np.float64)),
            "holding_hours": pa.array((closed - opened) / NS_PER_HOUR),
            "exit_reason": pa.array(
                [EXIT_REASONS[origins[o]] for o in raw["trade_exit_origin"]], pa.string()
            ),
            "fold": pa.array(fold),
        }
    )


def trade_statistics(trades: pa.Table) -> dict[str, Any]:
    """Round-trip statistics: overall and per side.

    Returns
    -------
    dict
        ``count``, ``win_rate``, ``average_pnl``, ``best`` and ``worst`` (pnl, quote),
        ``average_holding_hours``, ``max_consecutive_losses``, ``exit_reasons`` (count per
        reason), and ``long`` / ``short`` blocks with ``count``, ``win_rate``, ``pnl``.
    """
    pnl = trades.column("pnl").to_numpy()
    sides = np.array(trades.column("side").to_pylist(), dtype=object)
    hours = trades.column("holding_hours").to_numpy()
    reasons = trades.column("exit_reason").to_pylist()

    def side(name: str) -> dict[str, Any]:
        mine = pnl[sides == name]
        return {
            "count": int(mine.size),
            "win_rate": float(np.mean(mine > 0)) if mine.size else None,
            "pnl": float(mine.sum()),
        }

    streak = longest = 0
    for value in pnl:
        streak = streak + 1 if value < 0 else 0
        longest = max(longest, streak)
    return {
        "count": int(pnl.size),
        "win_rate": float(np.mean(pnl > 0)) if pnl.size else None,
        "average_pnl": float(pnl.mean()) if pnl.size else None,
        "best": float(pnl.max()) if pnl.size else None,
        "worst": float(pnl.min()) if pnl.size else None,
        "average_holding_hours": float(hours.mean()) if hours.size else None,
        "max_consecutive_losses": longest,
        "exit_reasons": {r: reasons.count(r) for r in sorted(set(reasons))},
        "long": side("long"),
        "short": side("short"),
    }


def _finite(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def _iso(ns: int | np.integer[Any]) -> str:
    return str(np.datetime64(int(ns), "ns").astype("datetime64[s]")) + "Z"
