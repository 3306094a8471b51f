"""Data: OHLCV candles in, validated; the market buffer; the exchange download.

- :mod:`colmena.data.ohlcv`: :func:`load_ohlcv` reads CSV or Parquet candles, validates every
  row (OHLC order, finite positive prices, non-negative volume, increasing timestamps) and
  reports gaps; :class:`Candles` is the validated series.
- :mod:`colmena.data.buffer`: :class:`MarketBuffer`, the core's ring buffer of candles.
- :mod:`colmena.data.exchange`: one-minute candles from an exchange through ccxt, cached.
"""

from colmena.data.buffer import CandleWindow, MarketBuffer
from colmena.data.ohlcv import (
    PRICE_COLUMNS,
    TIMESTAMP_COLUMNS,
    Candles,
    DataValidationError,
    GapReport,
    load_ohlcv,
)

__all__ = [
    "PRICE_COLUMNS",
    "TIMESTAMP_COLUMNS",
    "CandleWindow",
    "Candles",
    "DataValidationError",
    "GapReport",
    "MarketBuffer",
    "load_ohlcv",
]
