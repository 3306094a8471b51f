"""Features: what the agents see, each value at bar ``t`` from candles up to ``t`` only.

- :mod:`colmena.features.fractional_diff`: log returns and fractional differentiation (FFD,
  expanding window, the streaming FFD, the minimum stationary order), AFML ch. 5.
- :mod:`colmena.features.market_state`: the per-bar market state (log return, FFD, realized
  volatility, relative volume), its validity and normalization, and the VAE input windows.
- :mod:`colmena.features.market_state_stream`: the same market state one candle at a time
  (live), equal to the batch bit for bit.
- :mod:`colmena.features.regime`: the market-regime classifier (trend up/down, range, high
  volatility), fitted on training bars only.
"""

from colmena.features.fractional_diff import (
    FracDiffStream,
    MinFfdResult,
    adf_test,
    fracdiff,
    fracdiff_expanding,
    fracdiff_fft_crossover,
    fracdiff_weights,
    log_returns,
    min_ffd_d,
)
from colmena.features.market_state import (
    FEATURE_NAMES,
    FeatureSpec,
    MarketState,
    Normalization,
    compute_market_state,
)
from colmena.features.market_state_stream import MarketStateStream
from colmena.features.regime import REGIME_NAMES, RegimeClassifier, RegimeConfig

__all__ = [
    "FEATURE_NAMES",
    "REGIME_NAMES",
    "FeatureSpec",
    "FracDiffStream",
    "MarketState",
    "MarketStateStream",
    "MinFfdResult",
    "Normalization",
    "RegimeClassifier",
    "RegimeConfig",
    "adf_test",
    "compute_market_state",
    "fracdiff",
    "fracdiff_expanding",
    "fracdiff_fft_crossover",
    "fracdiff_weights",
    "log_returns",
    "min_ffd_d",
]
