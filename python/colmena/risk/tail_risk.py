"""Tail risk: Value at Risk, expected shortfall and stress tests of a position.

The statistics run in the compiled core; this module documents them and checks the inputs.

Conventions: returns are fractions per period (log or simple) of one unit of exposure; VaR and
expected shortfall (ES, CVaR) are positive loss fractions at ``confidence`` (0.95, 0.99).
Sources: Jorion, *Value at Risk*, 3rd ed., 2006; Hull, *Risk Management and Financial
Institutions*, 5th ed., ch. 12-13; Cornish & Fisher, 1938; Acerbi & Tasche, "On the coherence of
expected shortfall", 2002; J.P. Morgan, *RiskMetrics Technical Document*, 1996.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Final, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from colmena import _core

__all__ = [
    "MAX_MONTE_CARLO_DRAWS",
    "MAX_MONTE_CARLO_HORIZON",
    "MAX_MONTE_CARLO_PATHS",
    "StressResult",
    "TailRisk",
    "stress_test",
    "tail_risk",
    "value_at_risk_report",
]

VaRMethod = Literal["historical", "gaussian", "cornish_fisher", "monte_carlo"]

#: Longest Monte Carlo horizon, in bars (about two years of one-minute bars).
MAX_MONTE_CARLO_HORIZON: Final[int] = _core.MAX_MONTE_CARLO_HORIZON
#: Most Monte Carlo paths.
MAX_MONTE_CARLO_PATHS: Final[int] = _core.MAX_MONTE_CARLO_PATHS
#: Most bootstrap draws, ``horizon * paths``: a Monte Carlo call ends within seconds.
MAX_MONTE_CARLO_DRAWS: Final[int] = _core.MAX_MONTE_CARLO_DRAWS


@dataclass(frozen=True)
class TailRisk:
    """VaR and expected shortfall of one method at one confidence (positive loss fractions)."""

    method: str
    confidence: float
    var: float
    expected_shortfall: float


def _returns(values: ArrayLike) -> NDArray[np.float64]:
    arr = np.ascontiguousarray(np.asarray(values, dtype=np.float64))
    if arr.ndim != 1:
        raise ValueError(f"returns must be 1-D, got shape {arr.shape}")
    return arr


def tail_risk(
    returns: ArrayLike,
    confidence: float = 0.99,
    method: VaRMethod = "historical",
    *,
    horizon: int = 1,
    paths: int = 10_000,
    seed: int = 0,
) -> TailRisk:
    """VaR and expected shortfall of a return sample.

    Parameters
    ----------
    returns : array_like, float64 [n]
        Per-period returns (fractions); non-finite values are skipped.
    confidence : float
        In (0, 1), e.g. 0.95 or 0.99.
    method : {"historical", "gaussian", "cornish_fisher", "monte_carlo"}
        ``historical``: empirical quantile (linear interpolation, as ``numpy.quantile``) and the
        mean of the returns at or below it. ``gaussian``: ``-(mu + sigma z)``, ES
        ``sigma phi(z) / (1 - confidence) - mu`` with sample mean and std (ddof 1).
        ``cornish_fisher``: the Gaussian quantile corrected by sample skewness and excess kurtosis
        (Cornish & Fisher 1938), ES by integrating the corrected quantile over the tail.
        ``monte_carlo``: ``paths`` horizon returns, each the sum of ``horizon`` returns drawn with
        replacement (i.i.d. bootstrap), then historical VaR/ES on those; seeded, deterministic.
    horizon, paths, seed : int
        Monte Carlo only: the horizon in bars, in [1, :data:`MAX_MONTE_CARLO_HORIZON`]
        (1,000,000); the number of paths, in [2, :data:`MAX_MONTE_CARLO_PATHS`] (10,000,000);
        ``horizon * paths`` at most :data:`MAX_MONTE_CARLO_DRAWS` (1e9), so a call always ends
        within seconds; the seed, in [0, 2**64).

    Returns
    -------
    TailRisk

    Raises
    ------
    ValueError
        Fewer than 2 finite returns, confidence outside (0, 1), unknown method, or a horizon,
        paths or seed outside the bounds above.
    """
    for name, value, low, high in (
        ("horizon", horizon, 1, MAX_MONTE_CARLO_HORIZON),
        ("paths", paths, 2, MAX_MONTE_CARLO_PATHS),
        ("seed", seed, 0, 2**64 - 1),
    ):
        try:
            number = None if isinstance(value, bool) else operator.index(value)
        except TypeError:
            number = None
        if number is None or not (low <= number <= high):
            raise ValueError(f"{name} must be an integer in [{low}, {high}], got {value!r}")
    if method == "monte_carlo" and horizon * paths > MAX_MONTE_CARLO_DRAWS:
        raise ValueError(
            f"horizon * paths must be at most {MAX_MONTE_CARLO_DRAWS} draws, "
            f"got {horizon} * {paths}"
        )
    var, es = _core.tail_risk(_returns(returns), float(confidence), method, horizon, paths, seed)
    return TailRisk(method=method, confidence=float(confidence), var=var, expected_shortfall=es)


def value_at_risk_report(returns: ArrayLike, *, horizon: int = 1, seed: int = 0) -> list[TailRisk]:
    """All four methods at 95% and 99% (the design documents' VaR set)."""
    out = []
    for confidence in (0.95, 0.99):
        methods: tuple[VaRMethod, ...] = ("historical", "gaussian", "cornish_fisher", "monte_carlo")
        for method in methods:
            out.append(tail_risk(returns, confidence, method, horizon=horizon, seed=seed))
    return out


@dataclass(frozen=True)
class StressResult:
    """PnL of a position under one shock.

    Attributes
    ----------
    scenario : str
        E.g. ``"fixed -20%"`` or ``"worst 60-bar move"``.
    shock : float
        Price change applied (fraction, -0.2 = -20%).
    pnl : float
        Position PnL in the quote currency (negative = loss).
    pnl_fraction : float
        PnL as a fraction of equity.
    """

    scenario: str
    shock: float
    pnl: float
    pnl_fraction: float


def stress_test(
    position: float,
    price: float,
    equity: float,
    close: ArrayLike,
    *,
    windows: tuple[int, ...] = (1, 60, 1440),
    fixed_shocks: tuple[float, ...] = (-0.3, -0.2, -0.1, 0.1, 0.2, 0.3),
) -> list[StressResult]:
    """Stress the current position against the worst historical moves and fixed shocks.

    Historical scenarios: for every window length ``w`` (bars), the largest fall and the largest
    rise of ``close[t] / close[t - w] - 1`` in the data; fixed scenarios: each shock in
    ``fixed_shocks``. PnL = ``position * price * shock``.

    Parameters
    ----------
    position : float
        Signed position in base units.
    price : float
        Current price (quote per base), > 0.
    equity : float
        Current equity in the quote currency, > 0.
    close : array_like, float64 [n_bars]
        Historical close prices (> 0).

    Returns
    -------
    list of StressResult
        Worst first.
    """
    if not (price > 0 and equity > 0):
        raise ValueError("price and equity must be > 0")
    c = _returns(close)
    scenarios: list[tuple[str, float]] = [(f"fixed {s:+.0%}", s) for s in fixed_shocks]
    for w in windows:
        if c.size > w:
            moves = c[w:] / c[:-w] - 1.0
            moves = moves[np.isfinite(moves)]
            if moves.size:
                scenarios.append((f"worst {w}-bar fall", float(moves.min())))
                scenarios.append((f"worst {w}-bar rise", float(moves.max())))
    results = [
        StressResult(name, shock, position * price * shock, position * price * shock / equity)
        for name, shock in scenarios
    ]
    return sorted(results, key=lambda r: r.pnl)
