"""The risk manager's configuration: sizing, limits and circuit breakers, converted for the core.

The bar-by-bar state machine (:class:`colmena._core.RiskManager`) runs in the compiled core; this
module documents and validates its settings. Sources: the design documents (BOT8000: drawdown
ladder, daily loss limit, kill switch); Kelly, "A new interpretation of information rate", 1956;
Thorp, "The Kelly criterion in blackjack, sports betting and the stock market", 2006.
"""

from __future__ import annotations

from typing import Annotated, Final

import msgspec

from colmena import _core
from colmena.units import NS_PER_SECOND

__all__ = ["MAX_DURATION_SECONDS", "MAX_VAR_HORIZON_BARS", "RiskConfig", "RiskManager"]

RiskManager = _core.RiskManager

#: Longest duration any setting may take, in seconds: 3650 days ("10 years"), the core's
#: ``MAX_DURATION_NS``. Every candle time lies in 1970..2200, so a time plus or minus such a
#: duration always fits in int64 nanoseconds.
MAX_DURATION_SECONDS: Final[float] = _core.MAX_DURATION_NS / NS_PER_SECOND
#: Shortest nonzero duration, in seconds: one nanosecond, the core's time unit (a shorter one
#: would round to 0 ns).
MIN_DURATION_SECONDS: Final[float] = 1e-9
#: Longest VaR horizon, in bars: 10 years of one-second bars (the core's ``MAX_VAR_HORIZON_BARS``).
MAX_VAR_HORIZON_BARS: Final[float] = _core.MAX_VAR_HORIZON_BARS

Fraction = Annotated[float, msgspec.Meta(gt=0.0, lt=1.0)]
Duration = Annotated[float, msgspec.Meta(ge=MIN_DURATION_SECONDS, le=MAX_DURATION_SECONDS)]
Pause = Annotated[float, msgspec.Meta(ge=0.0, le=MAX_DURATION_SECONDS)]


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
    var_horizon_bars : float
        VaR horizon in bars, in [1, :data:`MAX_VAR_HORIZON_BARS`] (10 years of one-second bars).
    ewma_lambda : float
        RiskMetrics decay of the per-bar variance estimate.
    min_trade_fraction : float
        Target changes smaller than this fraction of equity are skipped.
    halt_drawdown, halt_window_seconds
        Kill switch: a fall of more than ``halt_drawdown`` from the maximum equity of the last
        ``halt_window_seconds`` halts trading (manual reset only). The window is in seconds, in
        (0, :data:`MAX_DURATION_SECONDS`] (10 years).
    ladder_drawdown, ladder_pause_seconds
        Circuit breakers on the drawdown from the ladder's reference equity: pause lengths per
        level, in seconds, each in [0, :data:`MAX_DURATION_SECONDS`] (10 years); the last level
        (the drawdown stop) also flattens. The reference is the highest
        equity since the ladder was armed; it re-arms at a new high and when a drawdown stop's
        pause ends (reference = the equity then), so a slow bleed after a stop is caught again.
    stale_after_seconds : float
        Newest candle older than this many seconds: REDUCING (reduce-only) until fresh data. In
        (0, :data:`MAX_DURATION_SECONDS`] (10 years).
    daily_loss_pause : float
        UTC-day PnL (against the previous day's last equity) below this pauses trading
        (reduce-only) until the next UTC midnight, in [-1, 0); -1 disables it. The design
        documents' -3%; the -2% warning is ``alert_daily_pnl_warning``.
    alert_* : float
        Alert thresholds (drawdown from peak, UTC-day PnL).

    Raises
    ------
    msgspec.ValidationError
        (a ValueError) naming the field, when a value is outside its range: on decoding (JSON,
        ``msgspec.convert``) for every field, and on construction for the durations (the bounds
        above) and the cross-field rules. Every other rule is checked by :meth:`to_core` (the
        core's ``validate``). The duration bounds keep the core's time arithmetic (``ts +
        pause``, ``ts - window``) far from int64 overflow, so no setting can shorten a pause or
        window by wrapping around.
    """

    kelly_multiplier: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] = 0.25
    kelly_window: Annotated[int, msgspec.Meta(ge=1)] = 50
    kelly_min_trades: Annotated[int, msgspec.Meta(ge=0)] = 20
    kelly_prior: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] = 0.5
    kelly_prior_trades: Annotated[float, msgspec.Meta(ge=0.0, le=1e6)] = 10.0
    max_leverage: Annotated[float, msgspec.Meta(gt=0.0)] = 1.0
    var_budget: Annotated[float, msgspec.Meta(gt=0.0)] = 0.02
    var_confidence: Annotated[float, msgspec.Meta(gt=0.5, lt=1.0)] = 0.99
    var_horizon_bars: Annotated[float, msgspec.Meta(ge=1.0, le=MAX_VAR_HORIZON_BARS)] = 1440.0
    ewma_lambda: Fraction = 0.999
    min_trade_fraction: Annotated[float, msgspec.Meta(ge=0.0)] = 0.01
    halt_drawdown: Fraction = 0.20
    halt_window_seconds: Duration = 3600.0
    ladder_drawdown: tuple[float, float, float] = (0.05, 0.10, 0.15)
    ladder_pause_seconds: tuple[Pause, Pause, Pause] = (3600.0, 4 * 3600.0, 24 * 3600.0)
    stale_after_seconds: Duration = 300.0
    daily_loss_pause: Annotated[float, msgspec.Meta(ge=-1.0, lt=0.0)] = -0.03
    alert_drawdown_warning: Fraction = 0.10
    alert_drawdown_critical: Fraction = 0.15
    alert_daily_pnl_warning: float = -0.02
    alert_daily_pnl_critical: float = -0.03

    def __post_init__(self) -> None:
        errors = []
        # Decoding checks the Meta bounds first; plain construction does not, so the bounds
        # that guard the core's time arithmetic are checked here too.
        for name, value, zero_ok in (
            ("halt_window_seconds", self.halt_window_seconds, False),
            *(
                (f"ladder_pause_seconds[{k}]", pause, True)
                for k, pause in enumerate(self.ladder_pause_seconds)
            ),
            ("stale_after_seconds", self.stale_after_seconds, False),
        ):
            # At least one nanosecond (the core's unit: a shorter one would round to 0).
            low_ok = value >= MIN_DURATION_SECONDS or (zero_ok and value == 0.0)
            if not (low_ok and value <= MAX_DURATION_SECONDS):
                lowest = "0" if zero_ok else "1e-09"
                errors.append(
                    f"{name} must be in [{lowest}, {MAX_DURATION_SECONDS:.0f}] seconds "
                    f"(10 years; a nonzero duration at least 1 ns), got {value!r}"
                )
        if not (1.0 <= self.var_horizon_bars <= MAX_VAR_HORIZON_BARS):
            errors.append(
                f"var_horizon_bars must be in [1, {MAX_VAR_HORIZON_BARS:.0f}], "
                f"got {self.var_horizon_bars!r}"
            )
        if self.kelly_min_trades > self.kelly_window:
            errors.append("kelly_min_trades must be <= kelly_window")
        a, b, c = self.ladder_drawdown
        if not (0 < a < b < c < 1):
            errors.append(
                f"ladder_drawdown must increase within (0, 1), got {self.ladder_drawdown}"
            )
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
