"""Units and time constants used across colmena, defined once.

Conventions everywhere in the package:

- timestamps are ``int64`` nanoseconds since the Unix epoch, UTC; a bar's timestamp is its open
  time, and a decision made at a bar's close is stamped ``open time + bar length``;
- prices are in quote currency per base unit; quantities in signed base units; equity and PnL in
  quote currency;
- fractions are plain ratios (0.01 is 1%); costs are given in basis points (1 bp = 1e-4);
- annualisation uses calendar days (crypto trades every day): ``sqrt(365)`` for daily returns.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "BPS",
    "BPS_PER_UNIT",
    "DAYS_PER_YEAR",
    "NS_PER_DAY",
    "NS_PER_HOUR",
    "NS_PER_MINUTE",
    "NS_PER_MS",
    "NS_PER_SECOND",
    "NS_PER_US",
    "SECONDS_PER_DAY",
    "SECONDS_PER_HOUR",
    "SECONDS_PER_MINUTE",
    "SECONDS_PER_YEAR",
]

NS_PER_US: Final = 1_000
NS_PER_MS: Final = 1_000_000
NS_PER_SECOND: Final = 1_000_000_000
SECONDS_PER_MINUTE: Final = 60
SECONDS_PER_HOUR: Final = 3_600
SECONDS_PER_DAY: Final = 86_400
NS_PER_MINUTE: Final = SECONDS_PER_MINUTE * NS_PER_SECOND
NS_PER_HOUR: Final = SECONDS_PER_HOUR * NS_PER_SECOND
NS_PER_DAY: Final = SECONDS_PER_DAY * NS_PER_SECOND
DAYS_PER_YEAR: Final = 365.0
"""Calendar days per year: the annualisation of daily returns (crypto markets never close)."""
SECONDS_PER_YEAR: Final = DAYS_PER_YEAR * SECONDS_PER_DAY
BPS: Final = 1e-4
"""One basis point as a fraction."""
BPS_PER_UNIT: Final = 10_000.0
"""Basis points in a fraction of 1.0 (``cost_bps / BPS_PER_UNIT`` is the cost as a fraction)."""
