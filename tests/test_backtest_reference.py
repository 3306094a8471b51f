"""The compiled trading loop against the plain-Python reference model, bar for bar, on real candles.

Every scenario runs ``colmena._core.run_backtest`` (or ``simulate_targets``) and the independent
model of tests/reference_backtest.py on the same minute candles of BTC/USD (Bitfinex, 2018) and
compares verdicts, states, equity, cash, positions, Kelly fractions, orders with their origins,
fills, closed trades, events and cost totals. Each scenario also asserts that the feature it is
about actually happened, so a comparison never passes by exercising nothing.

The configurations are built on the core's config objects (``_core.RiskConfig`` and
``_core.ExecutionConfig``, the core's defaults plus the fields a scenario sets), so fields the
Python settings may not expose yet (kelly_prior_trades, daily_loss_pause, allow_short,
borrow_bps_per_day) are covered too; the plain model copies its limits from the same objects.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from colmena import _core
from colmena.data.ohlcv import Candles, load_ohlcv

sys.path.insert(0, str(Path(__file__).parent))
from reference_backtest import (
    DAILY_LOSS,
    KILL_SWITCH,
    LADDER_REARMED,
    LADDER_STOP,
    PlainExecutor,
    PlainRisk,
    assert_matches_core,
    plain_backtest,
    plain_simulate_targets,
)

MIN = 60_000_000_000
HOUR = 60 * MIN
DAY = 24 * HOUR
HOLD, DECIDE, GATED_FLAT, END_OF_RUN = 0, 1, 2, 3
DRAWDOWN_THRESHOLD = 2  # event type code


@pytest.fixture(scope="module")
def btc_2018(shared_data_dir: Path) -> Candles:
    return load_ohlcv(shared_data_dir / "btcusd_bitfinex_1m_2018.parquet")


def risk_config(**fields: Any) -> Any:
    """The core's RiskConfig: its defaults with `fields` set."""
    config = _core.RiskConfig()
    for name, value in fields.items():
        setattr(config, name, value)
    config.validate()
    return config


def execution_config(**fields: Any) -> Any:
    """The core's ExecutionConfig: its defaults with `fields` set."""
    config = _core.ExecutionConfig()
    for name, value in fields.items():
        setattr(config, name, value)
    config.validate()
    return config


#: Full Kelly from a prior of 1, no VaR cap to speak of: exposures near 1, breakers fire.
LEVERAGED = {
    "kelly_prior": 1.0,
    "kelly_multiplier": 1.0,
    "max_leverage": 3.0,
    "var_budget": 5.0,
    "kelly_min_trades": 5,
    "kelly_window": 10,
}


def random_signal(
    n: int, seed: int, phi: float = 1.0, bias: float = 0.0, nan_share: float = 0.02
) -> Any:
    """tanh of a Gaussian AR(1) walk x_t = phi x_(t-1) + e_t (phi 1: a random walk), plus bias;
    NaN (no valid market state) at a share of the bars."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(0.0, 0.15, n)
    if phi == 1.0:
        x = np.cumsum(noise)
    else:
        x = np.empty(n)
        level = 0.0
        for t in range(n):
            level = phi * level + noise[t]
            x[t] = level
    signal = np.tanh(x) + bias
    signal[rng.random(n) < nan_share] = np.nan
    return signal


def hourly_actions(ts: Any, wind_down: int = 1) -> Any:
    """decide on bars whose close time is a whole hour, hold elsewhere; end_of_run on the last
    `wind_down` bars an order can follow (bars n - 1 - wind_down .. n - 2)."""
    n = len(ts)
    action = np.where((ts + MIN) % HOUR == 0, DECIDE, HOLD).astype(np.uint8)
    action[n - 1 - wind_down : n - 1] = END_OF_RUN
    return action


def run_both(
    c: Candles,
    signal: Any,
    risk: Any,
    execution: Any,
    action: Any = None,
    model: Any = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The core's backtest and the plain model's on the same inputs, asserted equal bar for bar."""
    cols = [np.ascontiguousarray(getattr(c, k)) for k in ("ts", "open", "high", "low", "close")]
    core = _core.run_backtest(
        *cols, np.ascontiguousarray(c.volume), signal, MIN, risk, execution, action, model
    )
    ref = plain_backtest(
        c.ts.tolist(),
        c.open.tolist(),
        c.close.tolist(),
        c.volume.tolist(),
        signal.tolist(),
        MIN,
        PlainRisk.from_config(risk),
        PlainExecutor.from_config(execution),
        None if action is None else action.tolist(),
        None if model is None else model.tolist(),
    )
    assert_matches_core(core, ref)
    return core, ref


def verdicts(core: dict[str, Any]) -> list[str]:
    names = _core.verdict_names()
    return [names[v] for v in core["verdict"]]


def origins(core: dict[str, Any]) -> list[str]:
    names = _core.order_origin_names()
    return [names[o] for o in core["order_origin"]]


def drawdown_events(core: dict[str, Any]) -> tuple[Any, Any]:
    """(ts, code) of the drawdown_threshold events."""
    mask = core["event_type"] == DRAWDOWN_THRESHOLD
    return core["event_ts"][mask], core["event_code"][mask]


@pytest.mark.parametrize("case", ["defaults", "no_prior_weight"])
def test_every_bar_a_decision(btc_2018: Candles, case: str) -> None:
    """action=None: decide at every bar, around the longest gap of the year (stale data)."""
    gaps = btc_2018.gaps
    g = int(gaps.rows[np.argmax(gaps.missing_per_gap)])
    c = btc_2018.slice(g - 15_000, g + 15_000)
    signal = random_signal(len(c), seed=0)
    if case == "defaults":
        risk = risk_config()
    else:  # no shrinkage: the estimate alone, which reaches 0 when the signal has no edge
        risk = risk_config(kelly_prior_trades=0.0, kelly_window=10, kelly_min_trades=5)
    core, _ = run_both(c, signal, risk, execution_config())

    seen = set(verdicts(core))
    assert {"accepted", "skipped_small_change", "no_signal", "resized_var"} <= seen
    kelly = core["kelly"]
    assert len(np.unique(kelly)) > 1  # the shadow book's trades move the estimate
    if case == "defaults":
        # With the prior's weight, f >= m f0 / (window + m) > 0: never zero_kelly.
        assert "zero_kelly" not in seen
        assert kelly.min() >= 10 * 0.5 / (50 + 10)
        assert len(core["fill_bar"]) > 100
    else:
        # The estimate reaches 0 (flat, zero_kelly) and, fed by the shadow book, recovers.
        assert "zero_kelly" in seen
        first_zero = int(np.argmax(kelly == 0.0))
        assert kelly[first_zero] == 0.0
        assert np.any(kelly[first_zero:] > 0.0)
        assert np.any(core["fill_bar"] > first_zero + 1)
    # Gaps over 5 minutes make the fill at the next open reduce-only (REDUCING until the candle).
    assert int((c.gaps.missing_per_gap >= 5).sum()) > 0
    to_reducing = (core["event_type"] == 1) & (core["event_code"] == 1)
    assert int(to_reducing.sum()) >= 1


def test_hourly_schedule_model_changes_and_gated_fold(btc_2018: Candles) -> None:
    """Decisions on the hour, holds between (remainders worked), four models, the second gated."""
    c = btc_2018.slice(200_000, 245_000)
    n = len(c)
    signal = random_signal(n, seed=3, phi=0.995)
    action = hourly_actions(c.ts)
    bounds = [n // 4, n // 2, 3 * n // 4]
    model = np.full(n, 7, dtype=np.int64)
    for i, b in enumerate(bounds):
        model[b:] = 8 + i
    gated = model == 8
    action[gated & (action == DECIDE)] = GATED_FLAT
    prior = 0.6
    risk = risk_config(
        kelly_prior=prior,
        kelly_multiplier=1.0,
        max_leverage=2.0,
        var_budget=5.0,
        kelly_min_trades=5,
        kelly_window=20,
    )
    core, _ = run_both(c, signal, risk, execution_config(), action, model)

    v = verdicts(core)
    assert v[n - 2] == "end_of_run"
    assert v.count("hold") > 0.9 * n
    assert {"gated_flat", "accepted", "skipped_small_change"} <= set(v)
    assert {"decision", "remainder", "end_of_run"} <= set(origins(core))
    kelly = core["kelly"]
    for b in bounds:  # a new model: the Kelly window restarts (no trades: the prior)
        assert kelly[b] == prior
    assert kelly[bounds[0] - 1] != prior
    assert kelly[bounds[2] - 1] != prior
    # The gated model's shadow book stays flat, so its estimate never leaves the prior, and its
    # real position is closed (over several bars: volume-limited remainders).
    np.testing.assert_array_equal(kelly[bounds[0] : bounds[1]], prior)
    assert core["position"][bounds[0] - 1] != 0.0
    assert core["position"][bounds[1] - 1] == 0.0


@pytest.mark.parametrize(
    ("case", "start", "seed", "extra"),
    [
        ("ladder_stop_rearm_daily_loss", 0, 0, {}),
        ("kill_switch", 0, 0, {"halt_drawdown": 0.04}),
    ],
)
def test_leveraged_breakers(
    btc_2018: Candles, case: str, start: int, seed: int, extra: dict[str, Any]
) -> None:
    """Full-Kelly sizing: the ladder, the drawdown stop and its re-arm, the daily-loss pause."""
    c = btc_2018.slice(start, start + 30_000)
    signal = random_signal(len(c), seed=seed, nan_share=0.0)
    core, ref = run_both(c, signal, risk_config(**LEVERAGED, **extra), execution_config())

    ts, codes = drawdown_events(core)
    seen = set(verdicts(core))
    states = set(ref["state"])
    if case == "kill_switch":
        assert KILL_SWITCH in codes
        assert ref["state"][-1] == "HALTED"  # until a person resets it
        assert {"flatten_halted", "rejected_halted"} <= seen
        assert "risk" in origins(core)
        return
    assert {1, 2, LADDER_STOP, DAILY_LOSS, LADDER_REARMED} <= set(codes.tolist())
    assert KILL_SWITCH not in codes
    assert {"flatten_stop", "reduce_only_paused"} <= seen
    assert "risk" in origins(core)
    assert {"ACTIVE", "PAUSED"} <= states
    # Each stop's pause ends in a re-arm, after which the ladder fires again from the new
    # reference equity.
    stops = ts[codes == LADDER_STOP]
    rearms = ts[codes == LADDER_REARMED]
    assert len(rearms) >= 1
    assert all(stops[i] < rearms[i] for i in range(len(rearms)))
    assert np.any((codes == 1) & (ts > rearms[0]))
    # A daily-loss pause ends at the next UTC midnight (unless a longer pause is running).
    for t_loss in ts[codes == DAILY_LOSS]:
        midnight = (int(t_loss) // DAY + 1) * DAY
        close_ts = c.ts + MIN
        during = (close_ts >= t_loss) & (close_ts < midnight)
        assert np.all(core["state"][during] == 2)  # PAUSED


@pytest.mark.parametrize("schedule", ["every_bar", "hourly"])
def test_long_only_with_borrow(btc_2018: Candles, schedule: str) -> None:
    """Spot (allow_short false): signals below 0 mean flat, the position never goes short, and
    a borrow rate costs nothing."""
    c = btc_2018.slice(300_000, 330_000)
    signal = random_signal(len(c), seed=4)
    action = hourly_actions(c.ts) if schedule == "hourly" else None
    risk = risk_config(**{**LEVERAGED, "max_leverage": 1.5})
    execution = execution_config(allow_short=False, borrow_bps_per_day=3.0)
    core, _ = run_both(c, signal, risk, execution, action)

    assert core["position"].min() == 0.0
    assert core["position"].max() > 0.0
    assert core["borrow_paid"] == 0.0
    assert np.all(core["target"] >= 0.0)
    assert np.all(core["trade_side"] == 1)
    assert np.nanmin(signal) < -0.5  # short signals were there, and were clamped to flat
    if schedule == "hourly":
        assert "remainder" in origins(core)


def test_margin_shorts_pay_borrow(btc_2018: Candles) -> None:
    """A short-biased signal on margin pays borrow; it equals the plain model's and the rate
    applied to each bar's short notional for the time since the previous close."""
    c = btc_2018.slice(300_000, 330_000)
    signal = random_signal(len(c), seed=5, phi=0.995, bias=-0.5)
    bps = 5.0
    risk = risk_config(**{**LEVERAGED, "max_leverage": 1.5})
    action = hourly_actions(c.ts, wind_down=30)  # flatten over the last 30 bars
    core, ref = run_both(c, signal, risk, execution_config(borrow_bps_per_day=bps), action)

    assert core["borrow_paid"] > 0.0
    assert core["position"].min() < 0.0
    assert -1 in core["trade_side"].tolist()
    held = np.diff(c.ts, prepend=c.ts[0] - MIN) / DAY
    short_notional = np.maximum(-core["position"], 0.0) * c.close
    expected = float(np.sum(short_notional * bps / 1e4 * held))
    assert core["borrow_paid"] == pytest.approx(expected, rel=1e-9)
    assert ref["borrow_paid"] == pytest.approx(expected, rel=1e-9)
    assert {"remainder", "end_of_run"} <= set(origins(core))
    assert core["position"][-1] == 0.0  # wound down


@pytest.mark.parametrize(
    ("allow_short", "wind_down_bars", "min_trade_fraction"),
    [(True, 30, 0.0), (False, 0, 0.02), (True, 1, 0.01)],
)
def test_simulate_targets_matches_plain(
    btc_2018: Candles, allow_short: bool, wind_down_bars: int, min_trade_fraction: float
) -> None:
    """Pass-through mode: signal rows at decision bars every 30 minutes, partial fills (low
    max_participation) worked as remainders on the bars between, borrow on shorts."""
    c = btc_2018.slice(100_000, 120_000)
    n = len(c)
    ts = np.ascontiguousarray(c.ts)
    decide = ((ts + MIN) % (30 * MIN) == 0).astype(np.uint8)
    d = int(decide.sum())
    rng = np.random.default_rng(6)
    walk = np.tanh(np.cumsum(rng.normal(0.0, 0.4, d)))
    with_nan = walk.copy()
    with_nan[rng.random(d) < 0.2] = np.nan
    signals = np.ascontiguousarray(
        np.stack([walk, np.full(d, -1.0), np.full(d, 1.0), with_nan, np.sign(walk) * 0.5]),
        dtype=np.float32,
    )
    marks = np.unique(np.r_[np.arange(0, n, 97), n - 2, n - 1]).astype(np.int64)
    execution = execution_config(
        max_participation=0.02, borrow_bps_per_day=4.0, allow_short=allow_short
    )
    core = _core.simulate_targets(
        ts,
        np.ascontiguousarray(c.open),
        np.ascontiguousarray(c.close),
        np.ascontiguousarray(c.volume),
        decide,
        signals,
        marks,
        MIN,
        execution,
        min_trade_fraction=min_trade_fraction,
        wind_down_bars=wind_down_bars,
    )
    all_origins: list[str] = []
    for k in range(signals.shape[0]):
        ref = plain_simulate_targets(
            c.ts.tolist(),
            c.open.tolist(),
            c.close.tolist(),
            c.volume.tolist(),
            decide.tolist(),
            signals[k].tolist(),
            marks.tolist(),
            MIN,
            PlainExecutor.from_config(execution),
            min_trade_fraction,
            wind_down_bars,
        )
        np.testing.assert_allclose(core["equity"][k], ref["equity"], rtol=1e-12, err_msg=str(k))
        for name in ("fees", "slippage", "borrow", "traded_notional", "final_position"):
            np.testing.assert_allclose(
                core[name][k], ref[name], rtol=1e-12, atol=1e-12, err_msg=f"{name} row {k}"
            )
        assert core["n_fills"][k] == ref["n_fills"]
        all_origins += ref["origins"]
    assert "remainder" in all_origins
    assert ("end_of_run" in all_origins) == (wind_down_bars > 0)
    if allow_short:
        assert core["borrow"][1] > 0.0  # the all-short row
    else:
        assert np.all(core["borrow"] == 0.0)
        assert core["n_fills"][1] == 0  # all-short on spot: never trades
