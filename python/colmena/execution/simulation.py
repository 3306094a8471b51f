"""Paper execution settings, and target exposures run through the core's trading loop.

The compiled :class:`colmena._core.PaperExecutor` fills a market order decided at the close of
bar ``t`` at the open of bar ``t + 1``: at most ``max_participation`` of that bar's volume (the rest
keeps working bar by bar until the next decision), at ``open * (1 + side * (slippage_bps +
impact_bps * participation) / 1e4)`` (a linear volume-participation impact, Almgren et al.,
"Direct estimation of equity market impact", 2005), paying ``fee_bps`` of the notional. A short
position pays ``borrow_bps_per_day`` of its notional per day held.

:func:`simulate_targets` runs signal rows through the same loop without risk sizing: the
evolution's fitness (every agent scored with the executor's own accounting) and the report's
baselines use it, so they pay exactly what the backtest pays.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Final, Literal

import msgspec
import numpy as np
from numpy.typing import NDArray

from colmena import _core
from colmena.analysis.metrics import day_end_rows  # re-exported: the day marks of the fitness
from colmena.units import NS_PER_SECOND

__all__ = [
    "MAX_COST_BPS",
    "MAX_INITIAL_CASH",
    "WIND_DOWN_BARS",
    "ExecutionSettings",
    "TargetSimulation",
    "day_end_rows",
    "simulate_targets",
]

#: A run (a backtest, a fitness window, a baseline) ends by targeting flat at each of its last
#: 30 bars an order can follow, so a position larger than one bar's volume limit still closes,
#: with its costs, before the end. Whatever the volume limit leaves open is reported.
WIND_DOWN_BARS: Final = 30

#: Largest fee, slippage, impact or borrow rate, in basis points (10%; the core's
#: ``MAX_COST_BPS``). Slippage plus impact is then at most 2,000 bps, so a sell fills at no less
#: than 80% of the open: a fill price is always > 0.
MAX_COST_BPS: Final[float] = _core.MAX_COST_BPS
#: Largest starting equity, in the quote currency (the core's ``MAX_INITIAL_CASH``).
MAX_INITIAL_CASH: Final[float] = _core.MAX_INITIAL_CASH

CostBps = Annotated[float, msgspec.Meta(ge=0.0, le=MAX_COST_BPS)]


class ExecutionSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Paper execution costs and the market type (see the module docstring).

    Attributes
    ----------
    initial_cash : float
        Starting equity, quote currency, in (0, 1e15] (:data:`MAX_INITIAL_CASH`).
    fee_bps : float
        Fee per fill, basis points of the filled notional, in [0, 1000] (:data:`MAX_COST_BPS`).
    slippage_bps : float
        Fixed slippage per fill, basis points of the open price, in [0, 1000].
    impact_bps : float
        Extra slippage at 100% participation in the bar's volume, basis points, in [0, 1000].
        With ``slippage_bps`` at most 2,000 bps in all: a fill price stays above 80% of the open
        (never <= 0).
    max_participation : float
        Largest share of a bar's volume one order may take, in (0, 1].
    market : {"spot", "margin"}
        ``"spot"`` (the default): long only; a sell never goes below a flat position. Most crypto
        users trade spot, where shorting is not available, and the bundled and sample data are
        spot markets, so a short-selling result would not be one they could run. ``"margin"``:
        long and short, shorts paying ``borrow_bps_per_day``.
    borrow_bps_per_day : float
        Cost of holding a short position, basis points of its notional per day (margin borrow or
        perpetual funding; default 3 bps/day, about a perpetual's 0.01% per 8 h), in [0, 1000].
        Ignored on spot.

    Raises
    ------
    msgspec.ValidationError
        (a ValueError) naming the field, on decoding and on construction, when a value is
        outside its range above (NaN included).
    """

    initial_cash: Annotated[float, msgspec.Meta(gt=0.0, le=MAX_INITIAL_CASH)] = 100_000.0
    fee_bps: CostBps = 10.0
    slippage_bps: CostBps = 2.0
    impact_bps: CostBps = 10.0
    max_participation: Annotated[float, msgspec.Meta(gt=0.0, le=1.0)] = 0.1
    market: Literal["spot", "margin"] = "spot"
    borrow_bps_per_day: CostBps = 3.0

    def __post_init__(self) -> None:
        # Decoding checks the Meta bounds; plain construction does not: check them here too.
        errors = [
            f"{name} must be in [0, {MAX_COST_BPS:g}] bps, got {value!r}"
            for name, value in (
                ("fee_bps", self.fee_bps),
                ("slippage_bps", self.slippage_bps),
                ("impact_bps", self.impact_bps),
                ("borrow_bps_per_day", self.borrow_bps_per_day),
            )
            if not (0.0 <= value <= MAX_COST_BPS)
        ]
        if not (0.0 < self.initial_cash <= MAX_INITIAL_CASH):
            errors.insert(0, f"initial_cash must be in (0, {MAX_INITIAL_CASH:g}], got "
                          f"{self.initial_cash!r}")  # fmt: skip
        if not (0.0 < self.max_participation <= 1.0):
            errors.append(f"max_participation must be in (0, 1], got {self.max_participation!r}")
        if self.market not in ("spot", "margin"):
            errors.append(f"market must be 'spot' or 'margin', got {self.market!r}")
        if errors:
            raise msgspec.ValidationError("; ".join(errors))

    @property
    def allow_short(self) -> bool:
        """True on a margin market."""
        return self.market == "margin"

    @property
    def round_trip_cost_bps(self) -> float:
        """Fees and fixed slippage of one buy and one sell, basis points (impact excluded)."""
        return 2.0 * (self.fee_bps + self.slippage_bps)

    def to_core(self) -> Any:
        """The core's ExecutionConfig with these values."""
        core = _core.ExecutionConfig()
        for name in ("initial_cash", "fee_bps", "slippage_bps", "impact_bps", "max_participation"):
            setattr(core, name, getattr(self, name))
        core.allow_short = self.allow_short
        core.borrow_bps_per_day = self.borrow_bps_per_day if self.allow_short else 0.0
        core.validate()
        return core


@dataclass(frozen=True)
class TargetSimulation:
    """Result of :func:`simulate_targets` for K signal rows.

    Attributes
    ----------
    equity : numpy.ndarray of float64, shape [K, n_marks]
        Equity at the close of each mark row, quote currency.
    position : numpy.ndarray of float64, shape [K, n_marks]
        Position held after each mark row, signed base units.
    fees, slippage, borrow, traded_notional, final_position : numpy.ndarray of float64, shape [K]
        Totals (quote currency) and the position left at the end (base units; nonzero only when
        the final order could not fill completely).
    n_fills : numpy.ndarray of int64, shape [K]
    """

    equity: NDArray[np.float64]
    position: NDArray[np.float64]
    fees: NDArray[np.float64]
    slippage: NDArray[np.float64]
    borrow: NDArray[np.float64]
    traded_notional: NDArray[np.float64]
    final_position: NDArray[np.float64]
    n_fills: NDArray[np.int64]


def simulate_targets(
    open_ts: NDArray[np.int64],
    open_: NDArray[np.float64],
    close: NDArray[np.float64],
    volume: NDArray[np.float64],
    decide: NDArray[np.bool_],
    signals: NDArray[np.float32],
    mark_rows: NDArray[np.int64],
    *,
    bar_seconds: float,
    execution: ExecutionSettings,
    no_trade_band: float = 0.0,
    wind_down_bars: int = WIND_DOWN_BARS,
) -> TargetSimulation:
    """Run K target-exposure rows through the core's trading loop without risk sizing.

    At each decision bar the target is the row's signal clamped to [-1, 1] (to [0, 1] on spot)
    as a signed fraction of equity; changes under ``no_trade_band`` are not traded; everything
    else (next-open fills, fees, slippage, impact, partial fills that keep working, borrow) is
    the backtest's own loop (:class:`colmena._core` ``TradingLoop``). The last
    ``wind_down_bars`` bars an order can follow target flat (:data:`WIND_DOWN_BARS`).

    Parameters
    ----------
    open_ts : numpy.ndarray of int64, shape [n_bars]
        Bar open times, ns since the epoch UTC, increasing.
    open_, close, volume : numpy.ndarray of float64, shape [n_bars]
    decide : numpy.ndarray of bool, shape [n_bars]
        Decision bars.
    signals : numpy.ndarray of float32, shape [K, n_decisions]
        Target of each row at each decision bar, in order.
    mark_rows : numpy.ndarray of int64, shape [n_marks]
        Increasing bar indices at whose close equity is recorded.
    bar_seconds : float
        Bar length.
    execution : ExecutionSettings
    no_trade_band : float
        Fraction of equity (>= 0).
    wind_down_bars : int
        Bars at the end that target flat (>= 0; 0 leaves the position open).

    Returns
    -------
    TargetSimulation

    Raises
    ------
    ValueError
        On mismatched lengths, a signal count that differs from the decision bars, or mark rows
        that do not increase within the bars.
    """
    raw = _core.simulate_targets(
        np.ascontiguousarray(open_ts, dtype=np.int64),
        np.ascontiguousarray(open_, dtype=np.float64),
        np.ascontiguousarray(close, dtype=np.float64),
        np.ascontiguousarray(volume, dtype=np.float64),
        np.ascontiguousarray(decide, dtype=np.uint8),
        np.ascontiguousarray(signals, dtype=np.float32),
        np.ascontiguousarray(mark_rows, dtype=np.int64),
        round(bar_seconds * NS_PER_SECOND),
        execution.to_core(),
        float(no_trade_band),
        int(wind_down_bars),
    )
    return TargetSimulation(**raw)
