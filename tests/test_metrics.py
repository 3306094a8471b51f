"""performance_metrics and daily_equity against plain-Python / NumPy references of the docstring.

The module docstring of :mod:`colmena.analysis.metrics` is the specification: daily equity is the
last bar close of every UTC calendar day (a close at midnight ends the previous day, a day without
bars carries the equity before it), risk ratios come from daily returns, CAGR only over >= 365
days.
"""

from __future__ import annotations

import math
import statistics
from datetime import date, datetime, timedelta, timezone

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from colmena.analysis.metrics import (
    DAYS_PER_YEAR,
    MIN_DAILY_RETURNS,
    MIN_DAYS_FOR_CAGR,
    daily_equity,
    performance_metrics,
)

NS = 1_000_000_000
MIN = 60 * NS
HOUR = 60 * MIN
DAY = 24 * HOUR
T0 = 1_514_764_800 * NS  # 2018-01-01T00:00:00Z
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def ns(text: str) -> int:
    """Nanoseconds since the epoch of an ISO time written in UTC."""
    return int(np.datetime64(text, "ns").astype(np.int64))


def day_number(d: date) -> int:
    return (d - date(1970, 1, 1)).days


# ------------------------------------------------------------------ plain references


def reference_daily_equity(ts: np.ndarray, equity: np.ndarray) -> tuple[list[int], list[float]]:
    """Plain loop over calendar days: day D holds the closes in (D 00:00, D+1 00:00]."""
    times = [int(t) for t in ts]

    def bounds(d: date) -> tuple[int, int]:
        start = datetime(d.year, d.month, d.day, tzinfo=timezone.utc)
        s = int((start - EPOCH).total_seconds()) * NS
        return s, s + DAY

    def holds(d: date, t: int) -> bool:
        s, e = bounds(d)
        return s < t <= e

    def day_of(t: int) -> date:
        stamp = (EPOCH + timedelta(microseconds=t // 1000)).date()
        return next(d for d in (stamp - timedelta(days=1), stamp) if holds(d, t))

    first, last = day_of(times[0]), day_of(times[-1])
    days: list[int] = []
    values: list[float] = []
    previous = math.nan
    d = first
    while d <= last:
        s, e = bounds(d)
        inside = [i for i, t in enumerate(times) if s < t <= e]
        value = float(equity[inside[-1]]) if inside else previous
        days.append(day_number(d))
        values.append(value)
        previous = value
        d += timedelta(days=1)
    return days, values


def reference_ratios(daily: list[float], initial: float) -> dict[str, float]:
    """Sharpe, Sortino and volatility of daily returns with NumPy (ddof=1, sqrt(365))."""
    levels = np.array([initial, *daily])
    r = levels[1:] / levels[:-1] - 1.0
    std = r.std(ddof=1)
    downside = np.sqrt(np.mean(np.minimum(r, 0.0) ** 2))
    return {
        "sharpe": r.mean() / std * np.sqrt(365.0),
        "sortino": r.mean() / downside * np.sqrt(365.0),
        "annualized_volatility": std * np.sqrt(365.0),
    }


def reference_drawdown(ts: np.ndarray, equity: np.ndarray, initial: float) -> tuple[float, float]:
    """Max drawdown and longest peak-to-recovery time (days), plain loop.

    E_0 (the initial equity) stands at the open of the first bar, one bar before its close.
    """
    peak, peak_time = initial, int(ts[0]) - (int(ts[1]) - int(ts[0]))
    max_dd = 0.0
    longest = 0
    underwater = False
    for t, e in zip(ts.tolist(), equity.tolist(), strict=True):
        if e >= peak:
            if underwater:
                longest = max(longest, t - peak_time)
                underwater = False
            peak, peak_time = e, t
        else:
            underwater = True
            max_dd = max(max_dd, 1.0 - e / peak)
    if underwater:
        longest = max(longest, int(ts[-1]) - peak_time)
    return max_dd, longest / DAY


def hourly_path(daily: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Hourly bars from T0 whose day-end closes (at midnight) are ``daily``, noise in between."""
    n_days = daily.size
    ts = T0 + HOUR * np.arange(1, 24 * n_days + 1, dtype=np.int64)
    eq = np.repeat(daily, 24) * np.exp(rng.normal(0.0, 0.01, 24 * n_days))
    eq[23::24] = daily
    return ts, eq


def random_daily(n: int, seed: int, initial: float = 1_000.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return initial * np.exp(np.cumsum(rng.normal(0.0005, 0.02, n)))


# ------------------------------------------------------------------ constants


def test_documented_constants() -> None:
    assert DAYS_PER_YEAR == 365.0
    assert MIN_DAYS_FOR_CAGR == 365.0
    assert MIN_DAILY_RETURNS == 30


# ------------------------------------------------------------------ daily_equity


def test_daily_equity_hand_made_midnight_and_carry() -> None:
    ts = np.array(
        [
            ns("2018-01-01T12:00"),
            ns("2018-01-02T00:00"),  # exactly midnight: ends 1 January
            ns("2018-01-02T00:00") + 1,  # one nanosecond later: 2 January
            ns("2018-01-02T23:59"),
            ns("2018-01-05T06:00"),  # 3 and 4 January have no bar
            ns("2018-01-06T00:00"),  # ends 5 January
        ],
        dtype=np.int64,
    )
    eq = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    days, got = daily_equity(ts, eq)
    first = day_number(date(2018, 1, 1))
    np.testing.assert_array_equal(days, np.arange(first, first + 5))
    np.testing.assert_array_equal(got, [2.0, 4.0, 4.0, 4.0, 6.0])
    assert days.dtype == np.int64


def test_daily_equity_single_bar_and_empty() -> None:
    days, got = daily_equity(np.array([ns("2018-03-04T00:00")]), np.array([7.0]))
    np.testing.assert_array_equal(days, [day_number(date(2018, 3, 3))])
    np.testing.assert_array_equal(got, [7.0])
    days, got = daily_equity(np.zeros(0, dtype=np.int64), np.zeros(0))
    assert days.shape == (0,)
    assert got.shape == (0,)


@settings(max_examples=80, deadline=None)
@given(
    start=st.sampled_from([0, 1, DAY - 1, DAY, 5 * HOUR]),
    steps=st.lists(
        st.one_of(
            st.sampled_from([1, MIN, HOUR, 6 * HOUR, DAY, 2 * DAY, 3 * DAY + 1, DAY - 1]),
            st.integers(1, 4 * DAY),
        ),
        min_size=0,
        max_size=60,
    ),
    seed=st.integers(0, 2**32 - 1),
)
def test_daily_equity_matches_plain_loop_over_calendar_days(
    start: int, steps: list[int], seed: int
) -> None:
    ts = T0 + start + np.concatenate([[0], np.cumsum(np.array(steps, dtype=np.int64))])
    ts = ts.astype(np.int64)
    eq = np.random.default_rng(seed).uniform(50.0, 150.0, ts.size)
    days, got = daily_equity(ts, eq)
    ref_days, ref_values = reference_daily_equity(ts, eq)
    np.testing.assert_array_equal(days, ref_days)
    np.testing.assert_array_equal(got, ref_values)


# ------------------------------------------------------------------ risk-adjusted ratios


def test_sharpe_sortino_volatility_equal_numpy_on_daily_returns() -> None:
    rng = np.random.default_rng(1)
    daily = random_daily(60, seed=2)
    ts, eq = hourly_path(daily, rng)
    m = performance_metrics(ts, eq, initial_equity=1_000.0)
    ref = reference_ratios(list(daily), 1_000.0)
    for key, value in ref.items():
        assert m[key] == pytest.approx(value, rel=1e-12), key
    assert m["n_daily_returns"] == 60
    assert m["days"] == 60.0
    # the per-bar figure is something else: the daily one is not an accident of the bars
    bar_r = np.diff(np.concatenate([[1_000.0], eq])) / np.concatenate([[1_000.0], eq[:-1]])
    per_bar = bar_r.mean() / bar_r.std(ddof=1) * np.sqrt(365.0 * 24)
    assert abs(per_bar - m["sharpe"]) > 1e-3


def test_first_daily_return_is_from_initial_equity() -> None:
    daily = random_daily(40, seed=3)
    ts = T0 + DAY * np.arange(1, 41, dtype=np.int64)
    m = performance_metrics(ts, daily, initial_equity=900.0)
    ref = reference_ratios(list(daily), 900.0)
    assert m["sharpe"] == pytest.approx(ref["sharpe"], rel=1e-12)
    assert m["sortino"] == pytest.approx(ref["sortino"], rel=1e-12)


def _one_minute_bars(daily: np.ndarray, rng: np.random.Generator, step_minutes: int):
    per_day = 1440 // step_minutes
    n = daily.size * per_day
    ts = T0 + step_minutes * MIN * np.arange(1, n + 1, dtype=np.int64)
    eq = np.repeat(daily, per_day) * np.exp(rng.normal(0.0, 0.02, n))
    eq[per_day - 1 :: per_day] = daily  # the close at midnight ends each day
    return ts, eq


def test_sharpe_does_not_depend_on_bar_length_or_gaps() -> None:
    rng = np.random.default_rng(4)
    daily = random_daily(45, seed=5)
    ts1, eq1 = _one_minute_bars(daily, rng, 1)
    ts5, eq5 = _one_minute_bars(daily, rng, 5)
    # holes: drop 40% of the one-minute bars at random, but keep each day's last bar
    keep = rng.random(ts1.size) > 0.4
    keep[1439::1440] = True
    # and a long hole inside one day (hours without any bar)
    keep[1440 * 10 + 100 : 1440 * 10 + 1000] = False
    ts_h, eq_h = ts1[keep], eq1[keep]
    assert ts_h.size < 0.65 * ts1.size

    runs = [
        performance_metrics(ts, eq, initial_equity=1_000.0)
        for ts, eq in ((ts1, eq1), (ts5, eq5), (ts_h, eq_h))
    ]
    ref = reference_ratios(list(daily), 1_000.0)
    for key in ("sharpe", "sortino", "annualized_volatility"):
        values = [m[key] for m in runs]
        assert values[1] == pytest.approx(values[0], rel=1e-12, abs=0), key
        assert values[2] == pytest.approx(values[0], rel=1e-12, abs=0), key
        assert values[0] == pytest.approx(ref[key], rel=1e-12), key
    # the bar-level view does see the intraday noise and the bar count
    assert runs[0]["n_bars"] != runs[1]["n_bars"] != runs[2]["n_bars"]


@settings(max_examples=60, deadline=None)
@given(
    returns=st.lists(
        st.floats(-0.2, 0.2, allow_nan=False, allow_infinity=False), min_size=30, max_size=120
    ),
    bars_per_day=st.sampled_from([1, 2, 3, 4, 6, 24]),
    initial=st.floats(1.0, 1e6),
    seed=st.integers(0, 2**32 - 1),
)
def test_sharpe_of_random_daily_paths_equals_plain_statistics(
    returns: list[float], bars_per_day: int, initial: float, seed: int
) -> None:
    assume(statistics.pstdev(returns) > 1e-6)
    levels = [initial]
    for r in returns:
        levels.append(levels[-1] * (1.0 + r))
    daily = np.array(levels[1:])
    step = DAY // bars_per_day
    n = daily.size * bars_per_day
    ts = T0 + step * np.arange(1, n + 1, dtype=np.int64)
    eq = np.repeat(daily, bars_per_day) * np.random.default_rng(seed).uniform(0.5, 1.5, n)
    eq[bars_per_day - 1 :: bars_per_day] = daily

    m = performance_metrics(ts, eq, initial_equity=initial)
    realised = [levels[i + 1] / levels[i] - 1.0 for i in range(len(returns))]
    mean = statistics.fmean(realised)
    sharpe = mean / statistics.stdev(realised) * math.sqrt(365)
    downside = math.sqrt(statistics.fmean(min(r, 0.0) ** 2 for r in realised))
    assert m["n_daily_returns"] == len(returns)
    assert m["sharpe"] == pytest.approx(sharpe, rel=1e-9, abs=1e-12)
    if downside > 0:
        assert m["sortino"] == pytest.approx(mean / downside * math.sqrt(365), rel=1e-9, abs=1e-12)
    assert m["annualized_volatility"] == pytest.approx(
        statistics.stdev(realised) * math.sqrt(365), rel=1e-9
    )


@pytest.mark.parametrize(("n_days", "reported"), [(29, False), (30, True), (31, True)])
def test_sharpe_needs_thirty_daily_returns(n_days: int, reported: bool) -> None:
    daily = random_daily(n_days, seed=6)
    ts = T0 + DAY * np.arange(1, n_days + 1, dtype=np.int64)  # closes at midnight
    m = performance_metrics(ts, daily, initial_equity=1_000.0)
    assert m["n_daily_returns"] == n_days
    if reported:
        assert m["sharpe"] is not None
        assert m["sortino"] is not None
        assert m["annualized_volatility"] is not None
        assert not any("Sharpe" in w for w in m["warnings"])
    else:
        assert m["sharpe"] is None
        assert m["sortino"] is None
        assert m["annualized_volatility"] is None
        assert any("Sharpe" in w and str(n_days) in w for w in m["warnings"])


def test_undefined_sharpe_is_explained_in_warnings() -> None:
    ts = T0 + DAY * np.arange(1, 41, dtype=np.int64)
    m = performance_metrics(ts, np.full(40, 100.0), initial_equity=100.0)
    assert m["sharpe"] is None
    assert any("Sharpe" in w or "sharpe" in w for w in m["warnings"])


# ------------------------------------------------------------------ CAGR and Calmar


@pytest.mark.parametrize("n_days", [365, 400, 730])
def test_cagr_over_a_year_or_more(n_days: int) -> None:
    rng = np.random.default_rng(n_days)
    daily = random_daily(n_days, seed=7)
    ts, eq = hourly_path(daily, rng)  # n_days full calendar days, first open at midnight
    m = performance_metrics(ts, eq, initial_equity=1_000.0)
    assert m["days"] == float(n_days)
    growth = daily[-1] / 1_000.0
    assert m["cagr"] == pytest.approx(growth ** (365.0 / n_days) - 1.0, rel=1e-12)
    assert m["total_return"] == pytest.approx(growth - 1.0, rel=1e-12)
    max_dd, _ = reference_drawdown(ts, eq, 1_000.0)
    assert m["calmar"] == pytest.approx(m["cagr"] / max_dd, rel=1e-12)
    assert not any("CAGR" in w for w in m["warnings"])
    if n_days == 365:
        assert m["cagr"] == pytest.approx(m["total_return"], rel=1e-12)


@pytest.mark.parametrize("n_days", [1, 30, 364])
def test_no_cagr_under_a_year(n_days: int) -> None:
    rng = np.random.default_rng(n_days)
    ts, eq = hourly_path(random_daily(n_days, seed=8), rng)
    m = performance_metrics(ts, eq, initial_equity=1_000.0)
    assert m["days"] == float(n_days)
    assert m["cagr"] is None
    assert m["calmar"] is None
    assert any("CAGR" in w and "365" in w for w in m["warnings"])


def test_cagr_of_a_total_loss_is_minus_one() -> None:
    ts = T0 + DAY * np.arange(1, 401, dtype=np.int64)
    eq = np.linspace(1_000.0, 0.0, 400)
    m = performance_metrics(ts, eq, initial_equity=1_000.0)
    assert m["cagr"] == -1.0
    assert m["max_drawdown"] == 1.0


# ------------------------------------------------------------------ drawdown


def test_drawdown_hand_made() -> None:
    ts = T0 + HOUR * np.arange(1, 9, dtype=np.int64)
    eq = np.array([100.0, 110.0, 99.0, 105.0, 110.0, 120.0, 90.0, 95.0])
    m = performance_metrics(ts, eq, initial_equity=100.0)
    assert m["max_drawdown"] == pytest.approx(0.25, rel=1e-15)
    # 110 at bar 1 is back at bar 4 (3 hours); 120 at bar 5 is never regained (2 hours to the end)
    assert m["max_drawdown_duration_days"] == pytest.approx(3 / 24, rel=1e-15)


def test_drawdown_from_the_initial_equity_counts() -> None:
    ts = T0 + HOUR * np.arange(1, 5, dtype=np.int64)
    eq = np.array([90.0, 95.0, 100.0, 101.0])
    m = performance_metrics(ts, eq, initial_equity=100.0)
    assert m["max_drawdown"] == pytest.approx(0.1, rel=1e-15)
    # from the open of the first bar (E_0) to the close of bar 2, where 100 is back
    assert m["max_drawdown_duration_days"] == pytest.approx(3 / 24, rel=1e-15)


def test_no_drawdown_on_a_rising_curve() -> None:
    ts = T0 + HOUR * np.arange(1, 50, dtype=np.int64)
    m = performance_metrics(ts, np.linspace(100.0, 200.0, 49), initial_equity=100.0)
    assert m["max_drawdown"] == 0.0
    assert m["max_drawdown_duration_days"] == 0.0


@pytest.mark.parametrize("seed", range(5))
def test_drawdown_equals_plain_loop_on_random_paths(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 3_000
    ts = T0 + 15 * MIN * np.arange(1, n + 1, dtype=np.int64)
    eq = 1_000.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, n)))
    ties = rng.random(n) < 0.02
    peak = 1_000.0
    for i in range(n):  # some bars come back exactly to the running peak
        if ties[i]:
            eq[i] = peak
        peak = max(peak, eq[i])
    m = performance_metrics(ts, eq, initial_equity=1_000.0)
    max_dd, duration = reference_drawdown(ts, eq, 1_000.0)
    assert m["max_drawdown"] == pytest.approx(max_dd, rel=1e-14, abs=1e-15)
    assert m["max_drawdown_duration_days"] == pytest.approx(duration, rel=1e-14)


def test_drawdown_with_irregular_bars_equals_plain_loop() -> None:
    rng = np.random.default_rng(11)
    steps = rng.choice([MIN, 7 * MIN, HOUR, 5 * HOUR, 2 * DAY], size=2_000)
    ts = T0 + np.cumsum(steps).astype(np.int64)
    eq = 1_000.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, ts.size)))
    eq[0] = 1_000.0  # the first close at E_0: the time of E_0 does not matter
    m = performance_metrics(ts, eq, initial_equity=1_000.0)
    max_dd, duration = reference_drawdown(ts, eq, 1_000.0)
    assert m["max_drawdown"] == pytest.approx(max_dd, rel=1e-14)
    assert m["max_drawdown_duration_days"] == pytest.approx(duration, rel=1e-14)


# ------------------------------------------------------------------ PnL and costs


def test_pnl_and_costs() -> None:
    ts = T0 + HOUR * np.arange(1, 4, dtype=np.int64)
    eq = np.array([1_000.0, 990.0, 1_012.5])
    m = performance_metrics(
        ts,
        eq,
        initial_equity=1_000.0,
        fees_paid=3.25,
        slippage_paid=1.5,
        borrow_paid=0.125,
    )
    assert m["initial_equity"] == 1_000.0
    assert m["final_equity"] == 1_012.5
    assert m["net_pnl"] == 12.5
    assert m["total_return"] == pytest.approx(0.0125, rel=1e-15)
    assert m["gross_pnl"] == pytest.approx(12.5 + 3.25 + 1.5 + 0.125, rel=1e-15)
    assert (m["fees_paid"], m["slippage_paid"], m["borrow_paid"]) == (3.25, 1.5, 0.125)
    assert m["n_bars"] == 3


# ------------------------------------------------------------------ exposure and turnover


def test_docstring_example_of_time_in_market_and_exposure() -> None:
    rng = np.random.default_rng(12)
    n = 1_000
    ts = T0 + MIN * np.arange(1, n + 1, dtype=np.int64)
    equity = np.full(n, 10_000.0)
    close = rng.uniform(3_000.0, 20_000.0, n)
    held = np.zeros(n, dtype=bool)
    held[rng.choice(n, 900, replace=False)] = True
    sign = rng.choice([-1.0, 1.0], n)
    position = np.where(held, sign * 0.05 * equity / close, 0.0)
    m = performance_metrics(ts, equity, initial_equity=10_000.0, position=position, close=close)
    assert m["time_in_market"] == pytest.approx(0.9, rel=1e-15)
    assert m["mean_gross_exposure"] == pytest.approx(0.045, rel=1e-12)


def test_time_in_market_and_exposure_equal_numpy() -> None:
    rng = np.random.default_rng(13)
    n = 5_000
    ts = T0 + MIN * np.arange(1, n + 1, dtype=np.int64)
    equity = 1_000.0 * np.exp(np.cumsum(rng.normal(0, 0.001, n)))
    close = 10_000.0 * np.exp(np.cumsum(rng.normal(0, 0.001, n)))
    position = rng.normal(0.0, 0.05, n) * (rng.random(n) < 0.6)
    m = performance_metrics(ts, equity, initial_equity=1_000.0, position=position, close=close)
    assert m["time_in_market"] == pytest.approx(np.count_nonzero(position) / n, rel=1e-15)
    assert m["mean_gross_exposure"] == pytest.approx(
        np.mean(np.abs(position * close) / equity), rel=1e-12
    )
    # without close prices the exposure is not known; without positions neither is reported
    only_pos = performance_metrics(ts, equity, initial_equity=1_000.0, position=position)
    assert only_pos["time_in_market"] == m["time_in_market"]
    assert only_pos["mean_gross_exposure"] is None
    neither = performance_metrics(ts, equity, initial_equity=1_000.0)
    assert neither["time_in_market"] is None
    assert neither["mean_gross_exposure"] is None


@pytest.mark.parametrize(("n_pos", "n_close"), [(9, None), (1, 10)])
def test_position_of_another_length_is_rejected(n_pos: int, n_close: int | None) -> None:
    ts = T0 + HOUR * np.arange(1, 11, dtype=np.int64)
    close = None if n_close is None else np.full(n_close, 100.0)
    with pytest.raises(ValueError, match="position"):
        performance_metrics(
            ts, np.full(10, 100.0), initial_equity=100.0, position=np.ones(n_pos), close=close
        )


def test_turnover_on_constant_equity() -> None:
    n_days = 73
    ts = T0 + HOUR * np.arange(1, 24 * n_days + 1, dtype=np.int64)
    m = performance_metrics(
        ts, np.full(ts.size, 2_000.0), initial_equity=2_000.0, traded_notional=50_000.0
    )
    assert m["turnover"] == pytest.approx(25.0, rel=1e-15)
    assert m["annual_turnover"] == pytest.approx(25.0 / (n_days / 365.0), rel=1e-12)


def test_turnover_uses_mean_equity_over_the_span() -> None:
    rng = np.random.default_rng(14)
    daily = random_daily(100, seed=15)
    ts, eq = hourly_path(daily, rng)
    m = performance_metrics(ts, eq, initial_equity=1_000.0, traded_notional=123_456.0)
    mean_equity = np.mean(np.concatenate([[1_000.0], eq]))  # E_0 starts the span
    assert m["turnover"] == pytest.approx(123_456.0 / mean_equity, rel=1e-12)
    assert m["annual_turnover"] == pytest.approx(m["turnover"] * 365.0 / 100.0, rel=1e-12)
    assert performance_metrics(ts, eq, initial_equity=1_000.0)["turnover"] == 0.0


# ------------------------------------------------------------------ trade statistics


def test_trade_statistics() -> None:
    ts = T0 + HOUR * np.arange(1, 3, dtype=np.int64)
    pnl = np.array([10.0, -5.0, 0.0, 20.0, -15.0])
    m = performance_metrics(ts, np.array([100.0, 110.0]), initial_equity=100.0, trade_pnl=pnl)
    assert m["n_trades"] == 5
    assert m["win_rate"] == pytest.approx(2 / 5, rel=1e-15)
    assert m["profit_factor"] == pytest.approx(30.0 / 20.0, rel=1e-15)
    assert m["expectancy"] == pytest.approx(2.0, rel=1e-15)


def test_trade_statistics_equal_numpy_on_random_trades() -> None:
    rng = np.random.default_rng(16)
    pnl = rng.normal(0.5, 10.0, 777)
    ts = T0 + HOUR * np.arange(1, 3, dtype=np.int64)
    m = performance_metrics(ts, np.array([100.0, 101.0]), initial_equity=100.0, trade_pnl=pnl)
    assert m["n_trades"] == 777
    assert m["win_rate"] == pytest.approx(np.mean(pnl > 0), rel=1e-15)
    assert m["profit_factor"] == pytest.approx(pnl[pnl > 0].sum() / -pnl[pnl < 0].sum(), rel=1e-12)
    assert m["expectancy"] == pytest.approx(pnl.mean(), rel=1e-12)


def test_trade_statistics_without_trades_or_losses() -> None:
    ts = T0 + HOUR * np.arange(1, 3, dtype=np.int64)
    eq = np.array([100.0, 101.0])
    none = performance_metrics(ts, eq, initial_equity=100.0)
    assert none["n_trades"] == 0
    assert none["win_rate"] is None
    assert none["profit_factor"] is None
    assert none["expectancy"] is None
    winners = performance_metrics(ts, eq, initial_equity=100.0, trade_pnl=np.array([1.0, 2.0]))
    assert winners["win_rate"] == 1.0
    assert winners["profit_factor"] is None  # no gross loss: undefined
    assert winners["expectancy"] == 1.5


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    ("ts", "eq", "words"),
    [
        (np.arange(1, 4) * HOUR, np.ones(2), ("close_ts", "equity")),
        (np.zeros(0, dtype=np.int64), np.zeros(0), ("non-empty",)),
        (np.arange(1, 5).reshape(2, 2) * HOUR, np.ones((2, 2)), ("1-D",)),
    ],
    ids=["mismatched", "empty", "two-dimensional"],
)
def test_bad_arrays_raise_value_error(ts: np.ndarray, eq: np.ndarray, words: tuple) -> None:
    with pytest.raises(ValueError, match="close_ts") as info:
        performance_metrics(ts, eq, initial_equity=100.0)
    for word in words:
        assert word in str(info.value)


@pytest.mark.parametrize("initial", [0.0, -1.0, math.nan])
def test_non_positive_initial_equity_raises(initial: float) -> None:
    ts = T0 + HOUR * np.arange(1, 3, dtype=np.int64)
    with pytest.raises(ValueError, match="initial_equity"):
        performance_metrics(ts, np.ones(2), initial_equity=initial)


def test_result_is_json_friendly_and_complete() -> None:
    ts = T0 + HOUR * np.arange(1, 3, dtype=np.int64)
    m = performance_metrics(ts, np.array([100.0, 101.0]), initial_equity=100.0)
    expected = {
        "initial_equity", "final_equity", "total_return", "net_pnl", "gross_pnl", "fees_paid",
        "slippage_paid", "borrow_paid", "cagr", "sharpe", "sortino", "annualized_volatility",
        "calmar", "max_drawdown", "max_drawdown_duration_days", "n_trades", "win_rate",
        "profit_factor", "expectancy", "time_in_market", "mean_gross_exposure", "turnover",
        "annual_turnover", "n_bars", "days", "n_daily_returns", "warnings",
    }  # fmt: skip
    assert set(m) == expected
    for key, value in m.items():
        if key == "warnings":
            assert all(isinstance(w, str) for w in value)
        else:
            assert value is None or type(value) in (int, float), key
