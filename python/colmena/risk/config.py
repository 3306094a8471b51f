"""The risk manager's configuration: sizing, limits and circuit breakers, converted for the core.

The bar-by-bar state machine (:class:`colmena._core.RiskManager`) runs in the compiled core; this
module documents and validates its settings. Sources: the design documents (BOT8000: drawdown
ladder, daily loss limit, kill switch); Kelly, "A new interpretation of information rate", 1956;
Thorp, "The Kelly criterion in blackjack, sports betting and the stock market", 2006.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from colmena import _core
from colmena.units import NS_PER_SECOND

__all__ = ["RiskConfig", "RiskManager"]

RiskManager = _core.RiskManager

Fraction = Annotated[float, msgspec.Meta(gt=0.0, lt=1.0)]
Seconds = Annotated[float, msgspec.Meta(ge=0.0)]


class RiskConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Risk limits and sizing (defaults: the design documents' thresholds).

    Attributes
    ----------
    kelly_multiplier : float
        Share of the Kelly fraction used (0.25 = quarter Kelly).
    kelly_window, kelly_min_trades : int
        Closed round-trip trades in the rolling win-rate / payoff estimate, and the minimum before
        it replaces ``kelly_prior``.
    kelly_prior : float
        Kelly fraction assumed before ``kelly_min_trades`` trades, and the value the estimate is
        shrunk toward, in [0, 1].
    kelly_prior_trades : float
        Weight of the prior in pseudo-trades (>= 0): f = (n f_hat + m f0) / (n + m) over the n
        trades of the window (a Bayesian-style shrinkage). The trades are the signal's own
        round trips at unit exposure (the shadow book of the trading loop), recorded whether
        or not the sized position traded, so the estimate keeps learning while the position is
        flat and a fraction of zero is never absorbing; with m > 0 and f0 > 0 it never reaches
        zero at all (f >= m f0 / (kelly_window + m), 0.083 with the defaults, so quarter Kelly
        sizes at least 2% of the signal). Why both: the shadow book alone removes the absorbing
        state, but a 50-trade estimate of a real but modest edge (55% wins at 1:1) is zero 28% of
        the time by chance; the prior keeps such a strategy trading small instead
        of idling while the estimate recovers.
    max_leverage : float
        Largest |position notional| / equity.
    var_budget : float
        Largest parametric VaR of the position at ``var_confidence`` over ``var_horizon_bars``,
        as a fraction of equity.
    ewma_lambda : float
        RiskMetrics decay of the per-bar variance estimate.
    min_trade_fraction : float
        Target changes smaller than this fraction of equity are skipped.
    halt_drawdown, halt_window_seconds
        Kill switch: a fall of more than ``halt_drawdown`` from the maximum equity of the last
        ``halt_window_seconds`` halts trading (manual reset only).
    ladder_drawdown, ladder_pause_seconds
        Circuit breakers on the drawdown from the ladder's reference equity: pause lengths per
        level; the last level (the drawdown stop) also flattens. The reference is the highest
        equity since the ladder was armed; it re-arms at a new high and when a drawdown stop's
        pause ends (reference = the equity then), so a slow bleed after a stop is caught again.
    stale_after_seconds : float
        Newest candle older than this: REDUCING (reduce-only) until fresh data.
    daily_loss_pause : float
        UTC-day PnL (against the previous day's last equity) below this pauses trading
        (reduce-only) until the next UTC midnight, in [-1, 0); -1 disables it. The design
        documents' -3%; the -2% warning is ``alert_daily_pnl_warning``.
    alert_* : float
        Alert thresholds (drawdown from peak, UTC-day PnL).
    """

    kelly_multiplier: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] = 0.25
    kelly_window: Annotated[int, msgspec.Meta(ge=1)] = 50
    kelly_min_trades: Annotated[int, msgspec.Meta(ge=0)] = 20
    kelly_prior: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] = 0.5
    kelly_prior_trades: Annotated[float, msgspec.Meta(ge=0.0, le=1e6)] = 10.0
    max_leverage: Annotated[float, msgspec.Meta(gt=0.0)] = 1.0
    var_budget: Annotated[float, msgspec.Meta(gt=0.0)] = 0.02
    var_confidence: Annotated[float, msgspec.Meta(gt=0.5, lt=1.0)] = 0.99
    var_horizon_bars: Annotated[float, msgspec.Meta(ge=1.0)] = 1440.0
    ewma_lambda: Fraction = 0.999
    min_trade_fraction: Annotated[float, msgspec.Meta(ge=0.0)] = 0.01
    halt_drawdown: Fraction = 0.20
    halt_window_seconds: Annotated[float, msgspec.Meta(gt=0.0)] = 3600.0
    ladder_drawdown: tuple[float, float, float] = (0.05, 0.10, 0.15)
    ladder_pause_seconds: tuple[float, float, float] = (3600.0, 4 * 3600.0, 24 * 3600.0)
    stale_after_seconds: Annotated[float, msgspec.Meta(gt=0.0)] = 300.0
    daily_loss_pause: Annotated[float, msgspec.Meta(ge=-1.0, lt=0.0)] = -0.03
    alert_drawdown_warning: Fraction = 0.10
    alert_drawdown_critical: Fraction = 0.15
    alert_daily_pnl_warning: float = -0.02
    alert_daily_pnl_critical: float = -0.03

    def __post_init__(self) -> None:
        errors = []
        if self.kelly_min_trades > self.kelly_window:
            errors.append("kelly_min_trades must be <= kelly_window")
        a, b, c = self.ladder_drawdown
        if not (0 < a < b < c < 1):
            errors.append(
                f"ladder_drawdown must increase within (0, 1), got {self.ladder_drawdown}"
            )
        if any(p < 0 for p in self.ladder_pause_seconds):
            errors.append("ladder_pause_seconds must be >= 0")
        if errors:
            raise msgspec.ValidationError("; ".join(errors))

    def to_core(self) -> _core.RiskConfig:
        """The core's RiskConfig with the same values."""
        core = _core.RiskConfig()
        for name in (
            "kelly_multiplier",
            "kelly_window",
            "kelly_min_trades",
            "kelly_prior",
            "kelly_prior_trades",
            "max_leverage",
            "var_budget",
            "var_confidence",
            "var_horizon_bars",
            "ewma_lambda",
            "min_trade_fraction",
            "halt_drawdown",
            "daily_loss_pause",
            "alert_drawdown_warning",
            "alert_drawdown_critical",
            "alert_daily_pnl_warning",
            "alert_daily_pnl_critical",
        ):
            setattr(core, name, getattr(self, name))
        core.halt_window_ns = round(self.halt_window_seconds * NS_PER_SECOND)
        core.ladder_drawdown = self.ladder_drawdown
        a, b, c = (round(s * NS_PER_SECOND) for s in self.ladder_pause_seconds)
        core.ladder_pause_ns = (a, b, c)
        core.stale_after_ns = round(self.stale_after_seconds * NS_PER_SECOND)
        core.validate()
        return core
