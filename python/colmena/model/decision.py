"""When the swarm decides: the decision interval on one-minute candles.

Input stays one-minute (or any bar) candles; the agents decide only at a coarser, configurable
interval, so that the moves they trade are large against the round-trip cost (fees and slippage
on both sides, about 24 basis points by default). The median one-minute move of BTC/USD in 2018
was a few basis points, an hour's move several tens (``bench/decision_interval.py`` measures it
on the candle files and shows how the default was chosen). Orders still fill at the open of the
bar after the decision, and unfilled remainders keep working bar by bar in between.

A bar is a decision bar when its close reaches a new interval boundary (boundaries are multiples
of the interval since the Unix epoch, UTC): ``floor(close_t / I) > floor(close_{t-1} / I)``. Without
gaps that is the bar whose close is on the boundary (the 14:00 close for an hourly interval); after
a gap across a boundary it is the first bar after the gap, so a decision is never skipped. The rule
reads only bar ``t`` and the bar before it.
"""

from __future__ import annotations

import re
from typing import Annotated, Final

import msgspec
import numpy as np
from numpy.typing import NDArray

from colmena.units import NS_PER_SECOND, SECONDS_PER_DAY, SECONDS_PER_HOUR, SECONDS_PER_MINUTE

__all__ = ["DecisionConfig", "decision_bars", "interval_seconds"]

_UNITS: Final = {"s": 1, "m": SECONDS_PER_MINUTE, "h": SECONDS_PER_HOUR, "d": SECONDS_PER_DAY}
_INTERVAL: Final = re.compile(r"([1-9][0-9]{0,5})([smhd])")


def interval_seconds(interval: str) -> int:
    """Seconds in an interval written like ``"15m"``, ``"1h"``, ``"4h"`` or ``"1d"``.

    Raises
    ------
    ValueError
        If the text is not a positive whole number followed by one of ``s``, ``m``, ``h``, ``d``,
        or the interval is longer than 7 days.
    """
    match = _INTERVAL.fullmatch(interval) if isinstance(interval, str) else None
    if match is None:
        raise ValueError(
            f"decision interval {interval!r}: expected a number and a unit s, m, h or d, "
            "e.g. '15m', '1h', '4h'"
        )
    seconds = int(match.group(1)) * _UNITS[match.group(2)]
    if seconds > 7 * SECONDS_PER_DAY:
        raise ValueError(f"decision interval {interval!r} is longer than 7 days")
    return seconds


class DecisionConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """When agents decide and which changes are worth trading.

    Attributes
    ----------
    interval : str
        Decision interval, e.g. ``"15m"``, ``"1h"``, ``"4h"``. The default, ``"4h"``, comes from
        ``bench/decision_interval.py`` on the training windows of the sample years: it is the
        shortest interval whose median move is at least twice the 24 bps round trip on every
        file (BTC/USD 2018: 11 bps at 5 minutes, 35 at 1 hour, 72 at 4 hours); no interval showed
        a validation edge. Must be at least the candle interval.
    no_trade_band : float
        Target changes smaller than this (fraction of equity at unit exposure) are not traded
        in the agents' fitness and the baselines; the sized position has its own
        ``RiskConfig.min_trade_fraction``. In [0, 1].
    """

    interval: str = "4h"
    no_trade_band: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] = 0.05

    def __post_init__(self) -> None:
        try:
            interval_seconds(self.interval)
        except ValueError as exc:
            raise msgspec.ValidationError(str(exc)) from exc

    @property
    def seconds(self) -> int:
        """The interval in seconds."""
        return interval_seconds(self.interval)


def decision_bars(
    open_ts: NDArray[np.int64],
    bar_seconds: float,
    interval: str | int,
    *,
    previous_close_ts: int | None = None,
) -> NDArray[np.bool_]:
    """Which bars are decision bars (rule in the module docstring).

    Parameters
    ----------
    open_ts : numpy.ndarray of int64, shape [n_bars]
        Bar open times, ns since the epoch UTC, increasing.
    bar_seconds : float
        Bar length in seconds (the close of bar t is ``open_ts[t] + bar_seconds``).
    interval : str or int
        Decision interval (``"1h"``) or its length in seconds.
    previous_close_ts : int, optional
        Close time of the bar before ``open_ts[0]`` (ns). Without it, the first bar is a decision
        bar only when its close lies exactly on a boundary.

    Returns
    -------
    numpy.ndarray of bool, shape [n_bars]

    Raises
    ------
    ValueError
        If the interval is malformed or shorter than one bar.
    """
    seconds = interval_seconds(interval) if isinstance(interval, str) else int(interval)
    if seconds < bar_seconds or seconds <= 0:
        raise ValueError(
            f"decision interval of {seconds} s is shorter than the {bar_seconds:g} s bars"
        )
    step = seconds * NS_PER_SECOND
    close = np.asarray(open_ts, dtype=np.int64) + round(bar_seconds * NS_PER_SECOND)
    bucket = close // step
    out = np.empty(close.size, dtype=bool)
    if close.size == 0:
        return out
    out[1:] = bucket[1:] > bucket[:-1]
    out[0] = (
        bool(close[0] % step == 0)
        if previous_close_ts is None
        else bool(bucket[0] > previous_close_ts // step)
    )
    return out
