"""The trading loop's rules on hand-made bars, each run also checked against the plain model.

Prices are round numbers and costs are zero where a test follows quantities exactly: with a price
of 100, 100 of cash and max_participation 0.5 of a volume of 0.5, every fill is exactly 0.25
units, so orders, fills and positions compare with ``==``.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from colmena import _core

sys.path.insert(0, str(Path(__file__).parent))
from reference_backtest import (
    PlainExecutor,
    PlainRisk,
    assert_matches_core,
    plain_backtest,
)

MIN = 60_000_000_000
T0 = 1_514_764_800_000_000_000  # 2018-01-01 00:00 UTC
HOLD, DECIDE = 0, 1
#: The first bar with 30 bar returns: the VaR cap trusts the volatility from here on (with a flat
#: price the volatility is 0 and the cap never binds).
FIRST_DECISION = 32


def risk_config(**fields: Any) -> Any:
    config = _core.RiskConfig()
    values = {"kelly_prior": 1.0, "kelly_multiplier": 1.0, "var_budget": 1e6, **fields}
    for name, value in values.items():
        setattr(config, name, value)
    config.validate()
    return config


def execution_config(**fields: Any) -> Any:
    config = _core.ExecutionConfig()
    values = {
        "initial_cash": 100.0,
        "fee_bps": 0.0,
        "slippage_bps": 0.0,
        "impact_bps": 0.0,
        "max_participation": 0.5,
        **fields,
    }
    for name, value in values.items():
        setattr(config, name, value)
    config.validate()
    return config


def flat_bars(n: int, price: float = 100.0, volume: float = 1e6) -> dict[str, Any]:
    """n one-minute bars at a constant price (open = high = low = close)."""
    return {
        "ts": T0 + MIN * np.arange(n, dtype=np.int64),
        "open": np.full(n, price),
        "high": np.full(n, price),
        "low": np.full(n, price),
        "close": np.full(n, price),
        "volume": np.full(n, volume),
    }


def set_close(bars: dict[str, Any], t: int, price: float) -> None:
    """Bar t closes at `price` and the price stays there (later bars open and close at it)."""
    bars["close"][t:] = price
    bars["open"][t + 1 :] = price
    bars["high"][t:] = np.maximum(bars["open"][t:], bars["close"][t:])
    bars["low"][t:] = np.minimum(bars["open"][t:], bars["close"][t:])


def run_both(
    bars: dict[str, Any], signal: Any, action: Any, risk: Any, execution: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    cols = [bars[k] for k in ("ts", "open", "high", "low", "close", "volume")]
    core = _core.run_backtest(*cols, signal, MIN, risk, execution, action)
    ref = plain_backtest(
        bars["ts"].tolist(),
        bars["open"].tolist(),
        bars["close"].tolist(),
        bars["volume"].tolist(),
        signal.tolist(),
        MIN,
        PlainRisk.from_config(risk),
        PlainExecutor.from_config(execution),
        None if action is None else action.tolist(),
    )
    assert_matches_core(core, ref)
    return core, ref


def orders(core: dict[str, Any]) -> list[tuple[int, float, str, float]]:
    """(bar, quantity, origin, filled) of each order."""
    names = _core.order_origin_names()
    return [
        (int(b), float(q), names[o], float(f))
        for b, q, o, f in zip(
            core["order_bar"],
            core["order_quantity"],
            core["order_origin"],
            core["order_filled"],
            strict=True,
        )
    ]


def verdict(core: dict[str, Any], t: int) -> str:
    return str(_core.verdict_names()[core["verdict"][t]])


def one_decision(n: int, signal_value: float = 1.0, at: int = FIRST_DECISION) -> tuple[Any, Any]:
    signal = np.full(n, np.nan)
    signal[at] = signal_value
    action = np.full(n, HOLD, dtype=np.uint8)
    action[at] = DECIDE
    return signal, action


def test_volume_limited_order_is_resubmitted_as_remainder_until_filled() -> None:
    n = 40
    bars = flat_bars(n)
    bars["volume"][FIRST_DECISION + 1 :] = 0.5  # 0.25 units per bar
    signal, action = one_decision(n)
    core, _ = run_both(bars, signal, action, risk_config(), execution_config())

    assert verdict(core, FIRST_DECISION) == "accepted"
    assert orders(core) == [
        (32, 1.0, "decision", 0.25),
        (33, 0.75, "remainder", 0.25),
        (34, 0.5, "remainder", 0.25),
        (35, 0.25, "remainder", 0.25),
    ]
    assert core["fill_bar"].tolist() == [33, 34, 35, 36]
    assert core["position"][32:38].tolist() == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    assert all(verdict(core, t) == "hold" for t in range(33, n))


def test_bar_without_volume_keeps_the_whole_remainder() -> None:
    n = 40
    bars = flat_bars(n)
    bars["volume"][FIRST_DECISION + 1 :] = 0.5
    bars["volume"][34] = 0.0
    signal, action = one_decision(n)
    core, _ = run_both(bars, signal, action, risk_config(), execution_config())

    assert orders(core) == [
        (32, 1.0, "decision", 0.25),
        (33, 0.75, "remainder", 0.0),  # bar 34 traded nothing
        (34, 0.75, "remainder", 0.25),
        (35, 0.5, "remainder", 0.25),
        (36, 0.25, "remainder", 0.25),
    ]
    errors = core["event_type"] == 4
    assert core["event_ts"][errors].tolist() == [int(bars["ts"][34])]
    assert core["event_code"][errors].tolist() == [0]  # no_volume
    assert core["event_value"][errors].tolist() == [0.75]
    assert core["position"][-1] == 1.0


def test_a_decision_replaces_the_remainder() -> None:
    n = 40
    bars = flat_bars(n)
    bars["volume"][FIRST_DECISION + 1 :] = 0.5
    signal, action = one_decision(n)
    signal[34], action[34] = 0.5, DECIDE  # target 0.5 = the position by then: nothing to do
    core, _ = run_both(bars, signal, action, risk_config(), execution_config())

    assert verdict(core, 34) == "skipped_small_change"
    assert orders(core) == [(32, 1.0, "decision", 0.25), (33, 0.75, "remainder", 0.25)]
    assert core["position"][-1] == 0.5


def test_remainder_that_adds_exposure_waits_out_a_pause() -> None:
    """A daily loss below -3% pauses trading: the buy's remainder is not resubmitted."""
    n = 40
    bars = flat_bars(n)
    bars["volume"][FIRST_DECISION + 1 :] = 0.5
    set_close(bars, 34, 86.0)  # equity 100 - 0.5 * 14 = 93: -7% on the day
    signal, action = one_decision(n)
    core, ref = run_both(bars, signal, action, risk_config(), execution_config())

    codes = core["event_code"][core["event_type"] == 2].tolist()
    assert 5 in codes  # daily_loss
    assert ref["state"][34:] == ["PAUSED"] * (n - 34)
    assert orders(core) == [(32, 1.0, "decision", 0.25), (33, 0.75, "remainder", 0.25)]
    assert core["position"][-1] == 0.5


@pytest.mark.parametrize("schedule", ["hold_after_stop", "decide_every_bar"])
def test_drawdown_stop_flattens_a_volume_limited_position(schedule: str) -> None:
    """The 15% ladder level pauses 24 h and flattens (risk_manager.hpp); with only half the
    position's volume at the next open, the rest must go at the bar after."""
    n = 60
    bars = flat_bars(n)
    stop = 37
    set_close(bars, stop, 83.0)  # long 1 unit bought at 100: equity 83, a 17% drawdown
    bars["volume"][stop + 1] = 1.0  # 0.5 units can trade at the stop's fill bar
    signal = np.full(n, 1.0)  # the signal still says long
    action = None if schedule == "decide_every_bar" else one_decision(n)[1]
    core, ref = run_both(bars, signal, action, risk_config(), execution_config())

    codes = core["event_code"][core["event_type"] == 2].tolist()
    assert codes[:3] == [1, 2, 3]
    assert verdict(core, stop) == "flatten_stop"
    assert core["position"][stop] == 1.0
    assert core["position"][stop + 1] == 0.5
    assert set(ref["state"][stop:]) == {"PAUSED"}
    assert core["position"][stop + 2] == 0.0


def test_halt_flattens_a_position_that_wiped_out_the_equity() -> None:
    n = 40
    bars = flat_bars(n)
    set_close(bars, 35, 220.0)  # short 1 unit at 100: equity 200 - 220 < 0, kill switch
    signal, action = one_decision(n, -1.0)
    core, ref = run_both(bars, signal, action, risk_config(), execution_config())

    assert core["position"][35] == -1.0
    assert core["equity"][35] < 0.0
    assert ref["state"][35] == "HALTED"
    assert verdict(core, 35) == "flatten_halted"  # the documented rule: HALTED flattens
    assert core["position"][36] == 0.0


@pytest.mark.parametrize("allow_short", [True, False])
def test_paper_executor_matches_plain(allow_short: bool) -> None:
    """Random orders through the core's PaperExecutor and the plain one: fills, closed round
    trips (net of fees and borrow), spot clipping and the borrow of short positions."""
    fields = {"borrow_bps_per_day": 7.0, "allow_short": allow_short, "max_participation": 0.3}
    config = execution_config(initial_cash=10_000.0, fee_bps=10.0, slippage_bps=2.0, **fields)
    config.impact_bps = 10.0
    core = _core.PaperExecutor(config)
    plain = PlainExecutor.from_config(config)
    rng = np.random.default_rng(11)
    price = 100.0
    for i in range(2_000):
        ts = T0 + i * MIN
        price *= math.exp(rng.normal(0.0, 0.01))
        quantity = float(rng.normal(0.0, 40.0)) if rng.random() < 0.7 else -plain.position
        volume = float(rng.choice([0.0, 5.0, 50.0, 1e6], p=[0.05, 0.3, 0.3, 0.35]))
        fill, closed = core.execute(ts, quantity, price, volume)
        plain_closed: list[tuple[int, int, int, float]] = []
        plain_fill, _ = plain.execute(ts, quantity, price, volume, plain_closed)
        assert (fill is None) == (plain_fill is None)
        if fill is not None and plain_fill is not None:
            for name in ("quantity", "price", "fee", "slippage_cost", "requested"):
                assert fill[name] == pytest.approx(getattr(plain_fill, name), rel=1e-12)
        assert len(closed) == len(plain_closed)
        for a, b in zip(closed, plain_closed, strict=True):
            assert a[:3] == b[:3]
            assert a[3] == pytest.approx(b[3], rel=1e-12, abs=1e-9)
        days = float(rng.choice([1 / 1440, 1 / 24, 1.0]))
        cost = core.accrue_borrow(price, days)
        assert cost == pytest.approx(plain.accrue_borrow(price, days), rel=1e-12)
        assert core.position == pytest.approx(plain.position, rel=1e-12, abs=1e-12)
        assert core.cash == pytest.approx(plain.cash, rel=1e-12)
        if not allow_short:
            assert core.position >= 0.0
    assert core.borrow_paid == pytest.approx(plain.borrow, rel=1e-12)
    assert core.fees_paid == pytest.approx(plain.fees, rel=1e-12)
    assert core.realized_pnl == pytest.approx(plain.realized, rel=1e-12, abs=1e-9)
    if allow_short:
        assert core.borrow_paid > 0.0
    else:
        assert core.borrow_paid == 0.0


def test_plain_defaults_are_the_core_defaults() -> None:
    """bench/ runs the plain model with its defaults as the peer of the core's."""
    assert PlainRisk() == PlainRisk.from_config(_core.RiskConfig())
    assert PlainExecutor() == PlainExecutor.from_config(_core.ExecutionConfig())
