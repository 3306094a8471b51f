"""Market regimes: a causal classifier fitted on training data only (design document BOT8000).

Four regimes, in this code order (:data:`REGIME_NAMES`):

``trend_up`` (0) and ``trend_down`` (1)
    The trailing log return over ``lookback_bars`` bars, divided by its own scale
    (volatility * sqrt(lookback_bars)), is above ``+trend_threshold`` / below ``-trend_threshold``:
    a move that is large against the noise of the window.
``range`` (2)
    Neither, at ordinary volatility.
``high_volatility`` (3)
    The trailing volatility (root mean square of the last ``lookback_bars`` one-bar log returns)
    is at or above ``volatility_threshold``; it takes precedence over the trend.

Both thresholds are quantiles of the training bars only (``volatility_quantile`` of the
volatility; ``trend_quantile`` of |trend score| among the bars below the volatility threshold), so
nothing of the test data enters the classifier. The regime at bar ``t`` reads the closes of bars
``t - lookback_bars .. t`` only, each value from its own window (no running sums), so it is the
same whatever came before the window. Bars without a full window are ``-1`` (unknown).

The swarm uses the regime to weight its agents (:mod:`colmena.training.trainer`): with a per-regime
consensus, each regime has its own voters and weights, selected on the validation bars of that
regime ("activate the agents relevant to the regime, then combine their signals").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Final

import msgspec
import numpy as np
from numpy.typing import NDArray

from colmena import _core

__all__ = ["REGIME_NAMES", "UNKNOWN_REGIME", "RegimeClassifier", "RegimeConfig"]

REGIME_NAMES: Final[tuple[str, ...]] = ("trend_up", "trend_down", "range", "high_volatility")
UNKNOWN_REGIME: Final = -1


class RegimeConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """How regimes are measured and split.

    Attributes
    ----------
    lookback_bars : int
        Bars in the trailing window (default 1,440: one day of one-minute bars), >= 2.
    volatility_quantile : float
        Share of training bars below the high-volatility threshold, in (0, 1).
    trend_quantile : float
        Share of ordinary-volatility training bars whose |trend score| is below the trend
        threshold (range), in (0, 1).
    """

    lookback_bars: Annotated[int, msgspec.Meta(ge=2)] = 1_440
    volatility_quantile: Annotated[float, msgspec.Meta(gt=0.0, lt=1.0)] = 0.8
    trend_quantile: Annotated[float, msgspec.Meta(gt=0.0, lt=1.0)] = 0.5


def _features(
    close: NDArray[np.float64], rows: NDArray[np.int64], lookback: int
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Trend score and volatility at ``rows`` (NaN where the window is incomplete).

    Computed in the core (``_core.regime_features``) by the kernel that
    :class:`colmena.features.market_state_stream.MarketStateStream` runs on each new candle.
    """
    return _core.regime_features(
        np.ascontiguousarray(close, dtype=np.float64),
        np.ascontiguousarray(rows, dtype=np.int64),
        lookback,
    )


@dataclass(frozen=True)
class RegimeClassifier:
    """A fitted regime classifier (rules in the module docstring).

    Attributes
    ----------
    config : RegimeConfig
    volatility_threshold : float
        Per-bar log-return volatility at or above which the regime is ``high_volatility``.
    trend_threshold : float
        |trend score| at or above which an ordinary-volatility bar is a trend.
    """

    config: RegimeConfig
    volatility_threshold: float
    trend_threshold: float

    @classmethod
    def fit(
        cls, close: NDArray[np.float64], rows: NDArray[np.int64], config: RegimeConfig | None = None
    ) -> RegimeClassifier:
        """Fit the thresholds on the training bars ``rows`` of ``close``.

        Parameters
        ----------
        close : numpy.ndarray of float64, shape [n_bars]
            Close prices of the training candles (> 0).
        rows : numpy.ndarray of int64, shape [n_rows]
            Training bars to fit on (e.g. the decision bars before the validation part).
        config : RegimeConfig, optional

        Raises
        ------
        ValueError
            If fewer than 10 of ``rows`` have a full look-back window.
        """
        config = config or RegimeConfig()
        trend, vol = _features(close, np.asarray(rows, dtype=np.int64), config.lookback_bars)
        ok = np.isfinite(trend) & np.isfinite(vol)
        if ok.sum() < 10:
            raise ValueError(
                f"only {int(ok.sum())} training bars have the {config.lookback_bars}-bar regime "
                "look-back; use more data or a shorter RegimeConfig.lookback_bars"
            )
        vol_threshold = float(np.quantile(vol[ok], config.volatility_quantile))
        calm = ok & (vol < vol_threshold)
        scores = np.abs(trend[calm]) if calm.any() else np.abs(trend[ok])
        return cls(
            config=config,
            volatility_threshold=vol_threshold,
            trend_threshold=float(np.quantile(scores, config.trend_quantile)),
        )

    def classify(
        self, close: NDArray[np.float64], rows: NDArray[np.int64] | None = None
    ) -> NDArray[np.int64]:
        """Regime code of each bar in ``rows`` (all bars by default); -1 without a full window.

        Returns
        -------
        numpy.ndarray of int64, shape [n_rows]
            Codes indexing :data:`REGIME_NAMES`.
        """
        n = np.asarray(close).size
        index = np.arange(n, dtype=np.int64) if rows is None else np.asarray(rows, np.int64)
        trend, vol = _features(close, index, self.config.lookback_bars)
        return self.classify_features(trend, vol)

    def classify_features(
        self, trend: NDArray[np.float64], vol: NDArray[np.float64]
    ) -> NDArray[np.int64]:
        """Regime codes from the regime features themselves (the live path: the streaming market
        state gives them per candle, by the kernel :meth:`classify` uses).

        Parameters
        ----------
        trend, vol : numpy.ndarray of float64, shape [n]
            Trend score and volatility (NaN without a full window).

        Returns
        -------
        numpy.ndarray of int64, shape [n]
            Codes indexing :data:`REGIME_NAMES`; -1 where a value is NaN.
        """
        return _core.regime_codes(
            np.ascontiguousarray(trend, dtype=np.float64),
            np.ascontiguousarray(vol, dtype=np.float64),
            self.trend_threshold,
            self.volatility_threshold,
        )

    def classify_one(self, trend: float, vol: float) -> int:
        """Regime code of one bar from its trend score and volatility (the live path, one
        candle at a time; the rule of :meth:`classify_features`, in the core)."""
        return _core.regime_code(trend, vol, self.trend_threshold, self.volatility_threshold)

    def to_dict(self) -> dict[str, Any]:
        """JSON form (stored in checkpoints)."""
        return {
            "config": msgspec.to_builtins(self.config),
            "volatility_threshold": self.volatility_threshold,
            "trend_threshold": self.trend_threshold,
        }

    @classmethod
    def from_dict(cls, data: Any) -> RegimeClassifier:
        """Inverse of :meth:`to_dict`.

        Raises
        ------
        ValueError
            If a field is missing or invalid.
        """
        try:
            return cls(
                config=msgspec.convert(data["config"], RegimeConfig),
                volatility_threshold=float(data["volatility_threshold"]),
                trend_threshold=float(data["trend_threshold"]),
            )
        except (KeyError, TypeError, ValueError, msgspec.ValidationError) as exc:
            raise ValueError(f"invalid regime classifier: {exc}") from exc
