"""Market state: the per-bar features the VAE and the agents see, computed causally.

Every value at bar ``t`` uses candles up to and including bar ``t`` (its close) and nothing
later, so a decision made at the close of bar ``t`` never reads the future.

Base features, one row per bar, in this column order (:data:`FEATURE_NAMES`):

``log_return``
    ``log(close[t] / close[t-1])`` (NaN on the first bar).
``ffd``
    Fixed-width-window fractional differentiation of log close (AFML ch. 5) with
    ``FeatureSpec.ffd_d`` and ``FeatureSpec.ffd_window`` weights.
``volatility``
    Realized volatility: population standard deviation of the last ``volatility_bars`` log
    returns (per bar, not annualized).
``relative_volume``
    ``log1p(volume[t])`` minus the mean of ``log1p(volume)`` over the last ``volume_bars``.

Gaps are never filled: a bar whose look-back window spans a gap of more than
``max_gap_bars`` missing bars is invalid until the whole look-back lies after the gap again.

The numbers come from one per-window kernel in the compiled core (``cpp/src/market_state.cpp``)
that :func:`compute_market_state` runs on every bar and
:class:`colmena.features.market_state_stream.MarketStateStream` runs on each new candle, so the
batch and the stream agree bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Final

import msgspec
import numpy as np
from numpy.typing import NDArray

from colmena import _core
from colmena.data.ohlcv import Candles
from colmena.features.fractional_diff import fracdiff_weights
from colmena.units import NS_PER_SECOND

__all__ = [
    "FEATURE_NAMES",
    "FeatureSpec",
    "MarketState",
    "Normalization",
    "compute_market_state",
]

FEATURE_NAMES: Final[tuple[str, ...]] = ("log_return", "ffd", "volatility", "relative_volume")

PositiveInt = Annotated[int, msgspec.Meta(ge=1)]


class FeatureSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """How the market state is computed (stored in checkpoints; must match to reuse a model).

    Attributes
    ----------
    ffd_d : float
        FFD order in [0, 2].
    ffd_window : int
        FFD weights (bars), >= 1.
    volatility_bars : int
        Log returns in the realized-volatility window, >= 2.
    volume_bars : int
        Bars in the relative-volume mean, >= 1.
    state_bars : int
        Bars in one VAE input window; the VAE sees ``state_bars * 4`` numbers.
    max_gap_bars : int
        Largest gap (missing bars) a look-back window may span; 0 means any gap invalidates.
    """

    ffd_d: Annotated[float, msgspec.Meta(ge=0.0, le=2.0)] = 0.4
    ffd_window: PositiveInt = 256
    volatility_bars: Annotated[int, msgspec.Meta(ge=2)] = 30
    volume_bars: PositiveInt = 60
    state_bars: PositiveInt = 16
    max_gap_bars: Annotated[int, msgspec.Meta(ge=0)] = 5

    @property
    def n_features(self) -> int:
        """Base features per bar (4)."""
        return len(FEATURE_NAMES)

    @property
    def state_size(self) -> int:
        """Length of one VAE input vector: ``state_bars * n_features``."""
        return self.state_bars * self.n_features

    @property
    def lookback_bars(self) -> int:
        """Bars of history one valid state needs (the warm-up), including bar ``t`` itself."""
        per_bar = max(self.ffd_window, self.volatility_bars + 1, self.volume_bars)
        return per_bar + self.state_bars - 1


@dataclass(frozen=True)
class Normalization:
    """Per-feature standardization fitted on training bars only.

    Attributes
    ----------
    mean, std : numpy.ndarray of float64, shape [n_features]
        ``(x - mean) / std``; ``std`` is floored at 1e-12.
    """

    mean: NDArray[np.float64]
    std: NDArray[np.float64]

    @classmethod
    def fit(cls, features: NDArray[np.float64], valid: NDArray[np.bool_]) -> Normalization:
        """Mean and standard deviation of the valid rows of ``features`` [n_bars, n_features].

        Raises
        ------
        ValueError
            If fewer than two rows are valid.
        """
        rows = features[valid]
        if rows.shape[0] < 2:
            raise ValueError(
                f"only {rows.shape[0]} valid bars to fit the normalization; need at least 2 "
                "(the data is shorter than the feature warm-up or full of gaps)"
            )
        return cls(mean=rows.mean(axis=0), std=np.maximum(rows.std(axis=0), 1e-12))

    def apply(self, features: NDArray[np.float64]) -> NDArray[np.float64]:
        """Standardized copy of ``features`` [n_bars, n_features]."""
        return (features - self.mean) / self.std


@dataclass(frozen=True)
class MarketState:
    """Base features of a candle series and which bars have a complete, gap-free history.

    Attributes
    ----------
    features : numpy.ndarray of float64, shape [n_bars, n_features]
        Columns as in :data:`FEATURE_NAMES`; NaN during warm-up.
    valid : numpy.ndarray of bool, shape [n_bars]
        True where the state at the bar is complete (warm-up done, no large gap in the
        look-back).
    spec : FeatureSpec
    """

    features: NDArray[np.float64]
    valid: NDArray[np.bool_]
    spec: FeatureSpec

    def __len__(self) -> int:
        return int(self.features.shape[0])

    def windows(
        self, normalization: Normalization, rows: NDArray[np.int64] | None = None
    ) -> NDArray[np.float32]:
        """VAE inputs: the standardized last ``state_bars`` rows at every bar, oldest first.

        Parameters
        ----------
        normalization : Normalization
        rows : numpy.ndarray of int64, shape [n_rows], optional
            Only these bars (default: all bars).

        Returns
        -------
        numpy.ndarray of float32, shape [n_rows, state_bars * n_features]
            Row for bar ``t`` is ``standardized[t - state_bars + 1 : t + 1].ravel()``; bars that
            are not ``valid`` give zeros (never used for training or trading).
        """
        spec = self.spec
        index = np.arange(len(self)) if rows is None else np.asarray(rows, dtype=np.int64)
        out = np.zeros((index.size, spec.state_size), dtype=np.float32)
        ok = self.valid[index]
        if ok.any():
            want = index[ok]
            offsets = np.arange(-(spec.state_bars - 1), 1)
            block = self.features[want[:, None] + offsets[None, :]]  # [k, state_bars, F]
            z = (block - normalization.mean) / normalization.std
            out[ok] = z.reshape(want.size, spec.state_size)
        return out

    def current(
        self, normalization: Normalization, rows: NDArray[np.int64] | None = None
    ) -> NDArray[np.float32]:
        """Standardized features of bar ``t`` itself, float32 [n_rows, n_features] (all bars by
        default, or ``rows``); 0 where not ``valid``."""
        index = slice(None) if rows is None else np.asarray(rows, dtype=np.int64)
        z = normalization.apply(self.features[index]).astype(np.float32)
        z[~self.valid[index]] = 0.0
        return z


def _core_spec(
    spec: FeatureSpec, interval_seconds: float | None, regime_lookback: int | None = None
) -> _core.MarketStateSpec:
    """``spec`` in core terms, with the bar length (None: unknown, no gap detection, as in
    :class:`colmena.data.ohlcv.GapReport`) and the regime look-back (None: no regime features)."""
    bar_ns = 0
    if interval_seconds is not None:
        bar_ns = round(interval_seconds * NS_PER_SECOND)
        if bar_ns <= 0:
            raise ValueError(f"interval_seconds must be > 0, got {interval_seconds}")
    if regime_lookback is not None and regime_lookback < 1:
        raise ValueError(f"regime_lookback must be >= 1, got {regime_lookback}")
    return _core.MarketStateSpec(
        fracdiff_weights(spec.ffd_d, window=spec.ffd_window),
        spec.volatility_bars,
        spec.volume_bars,
        spec.state_bars,
        spec.max_gap_bars,
        bar_ns,
        regime_lookback or 0,
    )


def compute_market_state(candles: Candles, spec: FeatureSpec | None = None) -> MarketState:
    """Base features and validity of every bar of ``candles``.

    Parameters
    ----------
    candles : Candles
        Validated candles (``colmena.data.load_ohlcv``), oldest first.
    spec : FeatureSpec, optional
        Defaults to ``FeatureSpec()``.

    Returns
    -------
    MarketState

    Raises
    ------
    ValueError
        If there are fewer candles than ``spec.lookback_bars`` (no bar could be valid).
    """
    spec = spec or FeatureSpec()
    n = len(candles)
    if n < spec.lookback_bars:
        raise ValueError(
            f"{candles.source}: {n} candles, fewer than the {spec.lookback_bars} bars of "
            "history one market state needs (FFD window, volatility and volume windows, state "
            "window); use more data or smaller windows"
        )
    # FFD sums every output in one fixed order (the direct method's): each value is a function
    # of its own window only, bit for bit, so a later candle never changes an earlier feature.
    features, valid = _core.market_state_batch(
        np.ascontiguousarray(candles.ts, dtype=np.int64),
        np.ascontiguousarray(candles.close, dtype=np.float64),
        np.ascontiguousarray(candles.volume, dtype=np.float64),
        _core_spec(spec, candles.interval_seconds),
    )
    return MarketState(features=features, valid=valid, spec=spec)
