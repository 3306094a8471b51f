"""VaR / ES against SciPy, and the risk state machine on hand-made equity paths."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, stats

from colmena import _core
from colmena.risk import RiskConfig, RiskManager, stress_test, tail_risk, value_at_risk_report

MIN = 60 * 1_000_000_000
HOUR = 60 * MIN
T0 = 1_700_000_000 * 1_000_000_000 - (1_700_000_000 * 1_000_000_000) % (86_400 * 10**9)


def test_normal_quantile_matches_scipy_over_the_whole_range() -> None:
    low = np.logspace(-300, -1, 300)
    ps = np.concatenate([low, np.linspace(0.01, 0.99, 99), 1 - low[low > 1e-15]])
    got = np.array([_core.normal_quantile(p) for p in ps])
    np.testing.assert_allclose(got, stats.norm.ppf(ps), rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("confidence", [0.95, 0.99])
def test_gaussian_var_and_es_equal_closed_form_of_the_sample(confidence: float) -> None:
    x = np.random.default_rng(0).normal(0.0005, 0.02, size=5_000)
    mu, sigma = x.mean(), x.std(ddof=1)
    z = stats.norm.ppf(1 - confidence)
    got = tail_risk(x, confidence, "gaussian")
    assert got.var == pytest.approx(-(mu + sigma * z), rel=1e-12)
    es = -stats.norm(mu, sigma).expect(lambda v: v, ub=mu + sigma * z) / (1 - confidence)
    assert got.expected_shortfall == pytest.approx(es, rel=1e-7)


@pytest.mark.parametrize("confidence", [0.95, 0.99])
def test_historical_var_is_numpy_quantile_and_converges_to_the_distribution(
    confidence: float,
) -> None:
    x = stats.t(df=4).rvs(size=400_000, random_state=np.random.default_rng(1)) * 0.01
    got = tail_risk(x, confidence, "historical")
    q = np.quantile(x, 1 - confidence)
    assert got.var == pytest.approx(-q, rel=1e-12)
    assert got.expected_shortfall == pytest.approx(-x[x <= q].mean(), rel=1e-12)
    true_q = stats.t(df=4).ppf(1 - confidence) * 0.01
    assert got.var == pytest.approx(-true_q, rel=0.02)
    true_es = -integrate.quad(lambda v: v * stats.t(df=4).pdf(v), -np.inf, true_q / 0.01)[0]
    assert got.expected_shortfall == pytest.approx(true_es * 0.01 / (1 - confidence), rel=0.03)


def test_cornish_fisher_equals_the_expansion_with_scipy_moments_and_sees_fat_tails() -> None:
    fat = stats.t(df=5).rvs(size=200_000, random_state=np.random.default_rng(2)) * 0.01
    _, _, skew, kurt, _ = _core.sample_moments(fat)
    s, k = stats.skew(fat), stats.kurtosis(fat)
    assert skew == pytest.approx(s, rel=1e-9, abs=1e-12)
    assert kurt == pytest.approx(k, rel=1e-9)
    z = stats.norm.ppf(0.01)
    z_cf = z + (z**2 - 1) * s / 6 + (z**3 - 3 * z) * k / 24 - (2 * z**3 - 5 * z) * s**2 / 36
    cf = tail_risk(fat, 0.99, "cornish_fisher")
    assert cf.var == pytest.approx(-(fat.mean() + fat.std(ddof=1) * z_cf), rel=1e-9)
    assert cf.var > tail_risk(fat, 0.99, "gaussian").var  # fat tails: a larger VaR
    assert cf.expected_shortfall > cf.var


def test_monte_carlo_bootstrap_is_seeded_and_scales_with_horizon() -> None:
    x = np.random.default_rng(3).normal(0, 0.01, size=10_000)
    a = tail_risk(x, 0.99, "monte_carlo", horizon=16, paths=20_000, seed=5)
    b = tail_risk(x, 0.99, "monte_carlo", horizon=16, paths=20_000, seed=5)
    assert a == b
    # Sum of 16 i.i.d. N(0, 0.01^2): VaR99 = 2.326 * 0.01 * 4
    assert a.var == pytest.approx(stats.norm.ppf(0.99) * 0.04, rel=0.05)
    assert len(value_at_risk_report(x)) == 8


def test_tail_risk_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        tail_risk([0.01], 0.99)
    with pytest.raises(ValueError, match="confidence"):
        tail_risk([0.01, 0.02], 1.5)
    with pytest.raises(ValueError, match="method"):
        tail_risk([0.01, 0.02], 0.9, "magic")  # type: ignore[arg-type]


def test_stress_test_uses_worst_historical_moves() -> None:
    close = np.array([100.0, 90.0, 95.0, 120.0, 60.0])
    results = stress_test(2.0, 60.0, 1_000.0, close, windows=(1,), fixed_shocks=(-0.1,))
    worst = results[0]
    assert worst.scenario == "worst 1-bar fall"
    assert worst.shock == pytest.approx(-0.5)
    assert worst.pnl == pytest.approx(2.0 * 60.0 * -0.5)
    assert {r.scenario for r in results} == {"fixed -10%", "worst 1-bar fall", "worst 1-bar rise"}


# ------------------------------------------------------------------------ the state machine


def manager(**overrides: object) -> RiskManager:
    return RiskManager(RiskConfig(**overrides).to_core())  # type: ignore[arg-type]


def drive(rm: RiskManager, equities: list[float], step: int = MIN) -> list[tuple]:  # type: ignore[type-arg]
    events = []
    for i, e in enumerate(equities):
        events += rm.observe(T0 + i * step, e, float("nan"))
    return events


def test_halts_when_equity_falls_over_20_percent_within_an_hour() -> None:
    rm = manager()
    events = drive(rm, [100.0] * 10 + [90.0, 85.0, 79.0])
    assert rm.state == "HALTED"
    assert ("drawdown_threshold", 4) in [(e[1], e[2]) for e in events]
    _, target, verdict, place = rm.decide(0.5, 0.3)
    assert (target, verdict, place) == (0.0, "flatten_halted", True)
    # Still halted a day later: only a person can reset it.
    rm.observe(T0 + 30 * HOUR, 100.0, float("nan"))
    assert rm.state == "HALTED"
    rm.reset_halt(T0 + 30 * HOUR, 79.0)
    assert rm.state == "ACTIVE"


def test_slow_decline_does_not_trip_the_one_hour_kill_switch() -> None:
    rm = manager(ladder_drawdown=(0.5, 0.6, 0.7), daily_loss_pause=-1.0)
    drive(rm, list(np.linspace(100, 70, 300)), step=HOUR // 10)  # -30% over 30 hours
    assert rm.state == "ACTIVE"


@pytest.mark.parametrize(
    ("drop", "pause_hours", "flatten"),
    [(0.06, 1, False), (0.11, 4, False), (0.16, 24, True)],
)
def test_drawdown_ladder_pauses_for_its_time(drop: float, pause_hours: int, flatten: bool) -> None:
    rm = manager(daily_loss_pause=-1.0)
    drive(rm, [100.0, 100.0 * (1 - drop)], step=HOUR)  # one hour apart: not the kill switch
    assert rm.state == "PAUSED"
    assert rm.paused_until == T0 + HOUR + pause_hours * HOUR
    assert rm.flatten_requested is flatten
    rm.observe(T0 + HOUR + pause_hours * HOUR - 1, 100.0 * (1 - drop), float("nan"))
    assert rm.state == "PAUSED"
    rm.observe(T0 + HOUR + pause_hours * HOUR, 100.0 * (1 - drop), float("nan"))
    assert rm.state == "ACTIVE"


def test_ladder_level_fires_once_until_a_new_peak() -> None:
    rm = manager(daily_loss_pause=-1.0)
    drive(rm, [100.0, 94.0], step=HOUR)
    rm.observe(T0 + 3 * HOUR, 94.0, float("nan"))
    assert rm.state == "ACTIVE"
    rm.observe(T0 + 4 * HOUR, 93.0, float("nan"))
    assert rm.state == "ACTIVE"  # same level: no new pause
    rm.observe(T0 + 5 * HOUR, 89.0, float("nan"))
    assert rm.state == "PAUSED"  # next level


def test_stale_data_reduces_until_fresh() -> None:
    rm = manager()
    drive(rm, [100.0])
    events = rm.observe_data_age(T0 + 10 * MIN, T0)
    assert rm.state == "REDUCING"
    assert any(e[1] == "alert" for e in events)
    assert rm.allowed_quantity(1.0, 2.0) == 0.0
    assert rm.allowed_quantity(-5.0, 2.0) == -2.0
    rm.observe_data_age(T0 + 11 * MIN, T0 + 11 * MIN)
    assert rm.state == "ACTIVE"


def test_daily_pnl_and_drawdown_alerts() -> None:
    rm = manager(ladder_drawdown=(0.5, 0.6, 0.7), halt_drawdown=0.9, daily_loss_pause=-1.0)
    events = drive(rm, [100.0, 97.5, 96.5, 88.0], step=HOUR)
    codes = [e[2] for e in events if e[1] == "alert"]
    assert codes == [2, 3, 0]  # daily -2%, daily -3%, drawdown 10%


def test_quarter_kelly_from_closed_trades() -> None:
    rm = manager(kelly_min_trades=4, kelly_window=4, var_budget=10.0, kelly_prior_trades=0.0)
    for pnl in (2.0, 2.0, 2.0, -1.0):  # W = 0.75, R = 2: f = 0.75 - 0.25 / 2 = 0.625
        rm.record_trade(pnl)
    assert rm.kelly_fraction == pytest.approx(0.625)
    for i in range(40):  # the volatility estimate warms up on flat prices: VaR 0
        rm.observe(T0 + i * MIN, 100.0, 0.0)
    requested, target, verdict, _ = rm.decide(0.8, 0.0)
    assert requested == pytest.approx(0.8 * 0.25 * 0.625)
    assert target == pytest.approx(requested)
    assert verdict == "accepted"


def test_var_budget_caps_the_position() -> None:
    rm = manager(
        kelly_prior=1.0, kelly_multiplier=1.0, max_leverage=5.0, var_horizon_bars=1, ewma_lambda=0.9
    )
    returns = np.random.default_rng(0).normal(0, 0.02, size=200)
    for i, r in enumerate(returns):
        rm.observe(T0 + i * MIN, 100.0, float(r))
    _, target, verdict, _ = rm.decide(1.0, 0.0)
    unit = stats.norm.ppf(0.99) * rm.bar_volatility
    assert unit > 0.02  # one unit of exposure would exceed the 2% budget
    assert verdict == "resized_var"
    assert target == pytest.approx(0.02 / unit)


@settings(max_examples=200, deadline=None)
@given(
    equities=st.lists(st.floats(50.0, 150.0), min_size=2, max_size=40),
    minutes=st.lists(st.integers(1, 120), min_size=40, max_size=40),
    signal=st.floats(-1.0, 1.0),
    current=st.floats(-1.0, 1.0),
    stale=st.booleans(),
)
def test_never_adds_exposure_while_paused_halted_or_reducing(
    equities: list[float], minutes: list[int], signal: float, current: float, stale: bool
) -> None:
    rm = manager(kelly_prior=1.0, kelly_multiplier=1.0, var_budget=100.0)
    ts = T0
    for e, m in zip(equities, minutes, strict=False):
        ts += m * MIN
        rm.observe(ts, e, 0.001)
    if stale:
        rm.observe_data_age(ts + 10 * MIN, ts)
    _, target, _, _place = rm.decide(signal, current)
    if rm.state in ("PAUSED", "HALTED", "REDUCING"):
        assert abs(target) <= abs(current) + 1e-15
        assert target == 0.0 or math.copysign(1, target) == math.copysign(1, current)
        for q, pos in ((1.0, 0.0), (1.0, 2.0), (-3.0, 2.0), (-1.0, -2.0)):
            allowed = rm.allowed_quantity(q, pos)
            assert abs(pos + allowed) <= abs(pos) + 1e-12
    if rm.state == "HALTED":
        assert target == 0.0


def kelly_reference(trades: list[float], prior: float, weight: float, min_trades: int) -> float:
    """The documented estimate: W - (1 - W) / R over the window, shrunk toward the prior."""
    n = len(trades)
    if n == 0 or n < min_trades:
        return prior
    wins = [t for t in trades if t > 0]
    losses = [-t for t in trades if t < 0]
    if not losses:
        estimate = 1.0 if wins else 0.0
    elif not wins:
        estimate = 0.0
    else:
        w = len(wins) / n
        payoff = (sum(wins) / len(wins)) / (sum(losses) / len(losses))
        estimate = min(max(w - (1 - w) / payoff, 0.0), 1.0)
    return (n * estimate + weight * prior) / (n + weight)


@settings(max_examples=100, deadline=None)
@given(
    trades=st.lists(st.floats(-5, 5).filter(lambda x: x != 0), max_size=80),
    prior=st.floats(0, 1),
    weight=st.floats(0, 40),
    window=st.integers(1, 60),
)
def test_kelly_is_the_windowed_estimate_shrunk_toward_the_prior(
    trades: list[float], prior: float, weight: float, window: int
) -> None:
    rm = manager(kelly_prior=prior, kelly_prior_trades=weight, kelly_window=window,
                 kelly_min_trades=min(5, window))  # fmt: skip
    for t in trades:
        rm.record_trade(t)
    expected = kelly_reference(trades[-window:], prior, weight, min(5, window))
    assert rm.kelly_fraction == pytest.approx(expected, rel=1e-12, abs=1e-15)
    assert rm.kelly_trades == min(len(trades), window)


@settings(max_examples=50, deadline=None)
@given(
    win_rate=st.floats(0.5, 0.7),
    payoff=st.floats(0.8, 2.0),
    seed=st.integers(0, 2**32 - 1),
)
def test_sizer_is_never_stuck_at_zero_for_trades_with_an_edge(
    win_rate: float, payoff: float, seed: int
) -> None:
    """i.i.d. trades with a known positive edge (Kelly f* = W - (1 - W) / R > 0): with the
    default prior weight the fraction never reaches zero at all; the stated bound is
    f >= m f0 / (window + m). The trades come from the signal's shadow book, which trades
    whatever the sizing, so the estimate also keeps moving (it is not frozen at any value)."""
    if win_rate - (1 - win_rate) / payoff <= 0.01:
        return  # no edge to speak of
    config = RiskConfig()
    bound = (
        config.kelly_prior_trades
        * config.kelly_prior
        / (config.kelly_window + config.kelly_prior_trades)
    )
    rm = manager()
    rng = np.random.default_rng(seed)
    seen = []
    for _ in range(600):
        rm.record_trade(payoff if rng.random() < win_rate else -1.0)
        seen.append(rm.kelly_fraction)
        assert rm.kelly_fraction >= bound - 1e-15
    assert len(set(seen[-200:])) > 1
    assert np.mean(seen[100:]) > bound


def test_without_a_prior_weight_zero_has_its_own_verdict_and_recovers() -> None:
    rm = manager(kelly_prior_trades=0.0, kelly_min_trades=5, kelly_window=10, var_budget=100.0)
    for i in range(40):
        rm.observe(T0 + i * MIN, 100.0, 0.0)
    for _ in range(10):
        rm.record_trade(-1.0)
    assert rm.kelly_fraction == 0.0
    requested, target, verdict, place = rm.decide(0.8, 0.2)
    assert (requested, target, verdict, place) == (0.0, 0.0, "zero_kelly", True)  # flatten
    _, _, verdict, place = rm.decide(0.8, 0.0)
    assert (verdict, place) == ("zero_kelly", False)
    for _ in range(10):  # the shadow book's trades keep coming while flat: the edge returns
        rm.record_trade(2.0)
    assert rm.kelly_fraction == 1.0
    assert rm.decide(0.8, 0.0)[2] == "accepted"


def test_a_new_model_restarts_the_kelly_window_but_not_the_account() -> None:
    rm = manager(kelly_min_trades=2, daily_loss_pause=-1.0)
    drive(rm, [100.0, 94.0], step=HOUR)  # 6% down: paused for an hour
    for _ in range(5):
        rm.record_trade(-1.0)
    assert rm.kelly_fraction < RiskConfig().kelly_prior
    rm.reset_model_estimates()
    assert rm.kelly_trades == 0
    assert rm.kelly_fraction == RiskConfig().kelly_prior
    assert rm.state == "PAUSED"  # account state carries over
    assert rm.peak_equity == 100.0


def test_ladder_rearms_after_a_drawdown_stop_and_catches_a_slow_bleed() -> None:
    """After the 15% stop's 24-hour pause the ladder's reference is the equity then (84), so a
    further 6% bleed pauses again; before, the ladder stayed silent until a new high."""
    rm = manager(daily_loss_pause=-1.0)
    events = drive(rm, [100.0, 84.0], step=HOUR)
    assert rm.state == "PAUSED"
    assert rm.flatten_requested
    rm.clear_flatten()
    end = T0 + HOUR + 24 * HOUR
    events += rm.observe(end, 84.0, float("nan"))
    assert rm.state == "ACTIVE"
    assert (2, 6) in [(_core.event_type_names().index(e[1]), e[2]) for e in events]
    assert rm.peak_equity == 84.0
    assert rm.drawdown == 0.0
    assert rm.drawdown_from_high == pytest.approx(0.16)
    rm.observe(end + 2 * HOUR, 80.5, float("nan"))  # 4.2% below 84: nothing yet
    assert rm.state == "ACTIVE"
    rm.observe(end + 20 * HOUR, 78.9, float("nan"))  # 6.1% below 84: the first level again
    assert rm.state == "PAUSED"
    assert rm.paused_until == end + 20 * HOUR + HOUR


def test_daily_loss_pauses_until_the_next_utc_midnight() -> None:
    rm = manager(ladder_drawdown=(0.5, 0.6, 0.7))
    day = 86_400 * 10**9
    events = rm.observe(T0 + 23 * HOUR, 100.0, float("nan"))  # last close of the day before
    events += rm.observe(T0 + day + 2 * HOUR, 98.5, float("nan"))  # -1.5%: nothing
    assert rm.state == "ACTIVE"
    events += rm.observe(T0 + day + 5 * HOUR, 97.5, float("nan"))  # -2.5%: warning only
    assert rm.state == "ACTIVE"
    events += rm.observe(T0 + day + 6 * HOUR, 96.9, float("nan"))  # -3.1%: pause
    assert rm.state == "PAUSED"
    assert rm.paused_until == T0 + 2 * day
    assert rm.daily_pnl == pytest.approx(-0.031)
    assert rm.decide(0.5, 0.0)[1] == 0.0  # no new exposure while paused
    codes = [(e[1], e[2]) for e in events]
    for code in (("alert", 2), ("alert", 3), ("drawdown_threshold", 5)):
        assert code in codes
    rm.observe(T0 + 2 * day - 1, 95.0, float("nan"))
    assert rm.state == "PAUSED"
    rm.observe(T0 + 2 * day, 95.0, float("nan"))  # the new day: trading again, PnL from 95
    assert rm.state == "ACTIVE"
    assert rm.daily_pnl == 0.0
    rm.observe(T0 + 2 * day + HOUR, 94.0, float("nan"))  # -1.05% today: fine
    assert rm.state == "ACTIVE"


def test_bad_risk_config_names_every_field() -> None:
    import msgspec

    with pytest.raises(msgspec.ValidationError, match="kelly_min_trades") as info:
        RiskConfig(kelly_min_trades=80, ladder_drawdown=(0.2, 0.1, 0.3))
    assert "ladder_drawdown" in str(info.value)
    for bad in ({"daily_loss_pause": 0.01}, {"daily_loss_pause": -2.0},
                {"kelly_prior_trades": -1.0}):  # fmt: skip
        with pytest.raises(msgspec.ValidationError, match=next(iter(bad))):
            msgspec.convert(bad, RiskConfig)


# ---------------------------------------------------------------- bounded work (issue 10)


MC = "tail_risk(x, 0.99, 'monte_carlo', "
CORE_MC = "_core.tail_risk(x, 0.99, 'monte_carlo', "
MONTE_CARLO_BOUNDS = [
    (MC + "horizon=10**15)", "horizon must be an integer in [1, 1000000]"),
    (MC + "horizon=0)", "horizon must be an integer in [1, 1000000]"),
    (MC + "horizon=2.5)", "horizon must be an integer"),
    (MC + "paths=10**12)", "paths must be an integer in [2, 10000000]"),
    (MC + "seed=-1)", "seed must be an integer"),
    (MC + "horizon=10**6, paths=10**4)", "horizon * paths must be at most 1000000000"),
    (CORE_MC + "10**15, 10_000, 0)", "horizon must be at most 1000000 bars"),
    (CORE_MC + "1, 10**9, 0)", "paths must be at most 10000000"),
    (CORE_MC + "100_000, 100_000, 0)", "horizon * paths must be at most 1000000000 draws"),
]


@pytest.mark.parametrize(("call", "message"), MONTE_CARLO_BOUNDS)
def test_monte_carlo_work_is_bounded(call: str, message: str) -> None:
    """A huge horizon once ran forever: each call runs in a child process with a time limit."""
    sys.path.insert(0, str(Path(__file__).parent))
    from helpers import run_python

    script = (
        "import numpy as np\nfrom colmena import _core\n"
        "from colmena.risk.tail_risk import tail_risk\n"
        "x = np.random.default_rng(0).normal(0, 0.01, 1000)\n"
        f"try:\n    {call}\nexcept ValueError as exc:\n    print('ValueError:', exc)\n"
    )
    done = run_python(["-c", script], timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ValueError:"), done.stdout + done.stderr
    assert message in done.stdout


def test_the_monte_carlo_bounds_are_the_cores() -> None:
    from colmena.risk.tail_risk import (
        MAX_MONTE_CARLO_DRAWS,
        MAX_MONTE_CARLO_HORIZON,
        MAX_MONTE_CARLO_PATHS,
    )

    assert (
        (MAX_MONTE_CARLO_HORIZON, MAX_MONTE_CARLO_PATHS, MAX_MONTE_CARLO_DRAWS)
        == (
            _core.MAX_MONTE_CARLO_HORIZON,
            _core.MAX_MONTE_CARLO_PATHS,
            _core.MAX_MONTE_CARLO_DRAWS,
        )
        == (1_000_000, 10_000_000, 1_000_000_000)
    )
    x = np.random.default_rng(0).normal(0, 0.01, 100)
    at_the_limit = tail_risk(x, 0.99, "monte_carlo", horizon=100_000, paths=10_000)
    assert math.isfinite(at_the_limit.var)
