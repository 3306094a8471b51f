"""MarketStateStream: the market state of a live candle feed, one candle at a time.

Each new candle gives the bar's four base features
(:data:`colmena.features.market_state.FEATURE_NAMES`), its validity, the VAE input window and the
standardized current row, and optionally the regime features, in O(window) time without allocating
in the core. The numbers are those of :func:`colmena.features.market_state.compute_market_state` and
:meth:`colmena.features.market_state.MarketState.windows` /
:meth:`~colmena.features.market_state.MarketState.current` over the same candles, bit for bit: both
run the same per-window kernel of the compiled core (``cpp/src/market_state.cpp``). Gaps are handled
as in the batch: nothing is filled, and a gap of more than ``max_gap_bars`` missing bars makes the
next ``lookback_bars - 1`` bars invalid.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from colmena import _core
from colmena.data.ohlcv import Candles
from colmena.features.market_state import FeatureSpec, Normalization, _core_spec

__all__ = ["CandleLike", "MarketStateStream"]


class CandleLike(Protocol):
    """Anything with a candle's six fields (a NamedTuple, dataclass, msgspec Struct...)."""

    @property
    def ts(self) -> int:
        """Open time, ns since epoch UTC."""
        ...

    @property
    def open(self) -> float: ...
    @property
    def high(self) -> float: ...
    @property
    def low(self) -> float: ...
    @property
    def close(self) -> float: ...
    @property
    def volume(self) -> float: ...


class MarketStateStream:
    """Streaming market state, equal bit for bit to :func:`~colmena.features.compute_market_state`.

    Parameters
    ----------
    spec : FeatureSpec, optional
        How the features are computed (default ``FeatureSpec()``); must match the model's.
    normalization : Normalization, optional
        Standardization of the VAE inputs (from the checkpoint). Needed only for
        :attr:`window` and :attr:`current`.
    interval_seconds : float or None, default 60.0
        Bar length in seconds, for gap detection (None: no gap detection).
    regime_lookback : int, optional
        Bars of the regime features (``RegimeConfig.lookback_bars``); None: no regime features.

    Raises
    ------
    ValueError
        For ``interval_seconds <= 0``, ``regime_lookback < 1``, or normalization arrays that do
        not hold one value per feature.

    Notes
    -----
    Costs per candle: O(ffd_window + volatility_bars + volume_bars) in the core; the regime
    features are computed when read, O(regime_lookback). Not thread-safe: one stream per feed.
    """

    __slots__ = ("_core", "_mean", "_normalization", "_spec", "_std")

    def __init__(
        self,
        spec: FeatureSpec | None = None,
        normalization: Normalization | None = None,
        *,
        interval_seconds: float | None = 60.0,
        regime_lookback: int | None = None,
    ) -> None:
        self._spec = spec or FeatureSpec()
        self._core = _core.MarketStateStream(
            _core_spec(self._spec, interval_seconds, regime_lookback)
        )
        self._normalization = normalization
        self._mean = self._std = np.zeros(0)
        if normalization is not None:
            self._mean = np.ascontiguousarray(normalization.mean, dtype=np.float64)
            self._std = np.ascontiguousarray(normalization.std, dtype=np.float64)
            n = self._spec.n_features
            if self._mean.shape != (n,) or self._std.shape != (n,):
                raise ValueError(
                    f"normalization mean and std must have shape ({n},), got "
                    f"{self._mean.shape} and {self._std.shape}"
                )

    # ------------------------------------------------------------------ writing

    def update(
        self, ts_ns: int, open: float, high: float, low: float, close: float, volume: float
    ) -> bool:
        """Append one closed candle; returns whether the new bar's state is valid.

        Parameters
        ----------
        ts_ns : int
            Open time, ns since epoch UTC; must be after :attr:`newest_timestamp` and within
            1970-01-01 .. 2200-01-01 (the core's time range, which the trading loop that follows
            also requires).
        open, high, low, close : float
            Prices in the quote currency, finite and > 0, with low <= open, close <= high.
        volume : float
            Volume in the base currency, finite and >= 0.

        Raises
        ------
        ValueError
            The candle breaks a rule, e.g. ``MarketStateStream.update: ts ... is not after the
            newest stored ts ...``, or its time is outside 1970..2200; nothing changes.
        """
        return self._core.update_candle(ts_ns, open, high, low, close, volume)

    def update_candle(self, candle: CandleLike) -> bool:
        """:meth:`update` with the fields of ``candle``."""
        return self._core.update_candle(
            candle.ts, candle.open, candle.high, candle.low, candle.close, candle.volume
        )

    def extend(self, candles: Candles) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
        """Append validated candles (e.g. history to warm up), oldest first; all-or-nothing.

        Returns
        -------
        features : numpy.ndarray of float64, shape [n_rows, n_features]
        valid : numpy.ndarray of bool, shape [n_rows]
            Each appended bar's output, as :meth:`update` would give it.

        Raises
        ------
        ValueError
            The first candle is not after :attr:`newest_timestamp` (nothing changes).
        """
        return self._core.update_many(
            np.ascontiguousarray(candles.ts, dtype=np.int64),
            np.ascontiguousarray(candles.close, dtype=np.float64),
            np.ascontiguousarray(candles.volume, dtype=np.float64),
        )

    def reset(self) -> None:
        """Forget every candle (back to the state after construction)."""
        self._core.reset()

    # ------------------------------------------------------------------ reading

    @property
    def spec(self) -> FeatureSpec:
        return self._spec

    @property
    def normalization(self) -> Normalization | None:
        return self._normalization

    @property
    def count(self) -> int:
        """Candles received since construction or the last reset."""
        return self._core.count

    @property
    def newest_timestamp(self) -> int | None:
        """Open time of the newest candle, ns since epoch UTC; None before the first."""
        return self._core.newest_timestamp

    @property
    def features(self) -> NDArray[np.float64]:
        """Base features of the newest bar, float64 [n_features] (NaN during warm-up)."""
        return self._core.features

    @property
    def valid(self) -> bool:
        """True when the newest bar's state is complete (warm-up done, no large gap)."""
        return self._core.valid

    @property
    def window(self) -> NDArray[np.float32]:
        """VAE input of the newest bar, float32 [state_bars * n_features]: the last
        ``state_bars`` rows standardized, oldest first (``MarketState.windows``); zeros when
        the bar is not valid.

        Raises
        ------
        RuntimeError
            Without a normalization.
        """
        self._need_normalization()
        return self._core.window(self._mean, self._std)

    @property
    def current(self) -> NDArray[np.float32]:
        """Standardized features of the newest bar, float32 [n_features]
        (``MarketState.current``); zeros when it is not valid.

        Raises
        ------
        RuntimeError
            Without a normalization.
        """
        self._need_normalization()
        return self._core.current(self._mean, self._std)

    @property
    def regime_features(self) -> tuple[float, float]:
        """``(trend_score, volatility)`` of the newest bar (:mod:`colmena.features.regime`);
        NaN without a full window.

        Raises
        ------
        ValueError
            The stream was built without ``regime_lookback``.
        """
        return self._core.regime()

    def _need_normalization(self) -> None:
        if self._normalization is None:
            raise RuntimeError(
                "MarketStateStream was built without a normalization; pass the checkpoint's "
                "Normalization to read the VAE window or the current row"
            )
