"""Hostile times, durations and costs never crash the core, wrap around or bypass a limit.

Timestamps within an hour of the int64 minimum once made ``ts - halt_window_ns`` overflow in the
risk manager, which then read an empty deque (signal 11); a ladder pause of 8e9 s made ``ts +
pause`` wrap, so the circuit breaker paused for one bar; a slippage of 20,000 bps gave negative
fill prices. The core now refuses times outside [1970, 2200] and durations over 10 years at its
boundary (ValueError), and every duration and cost setting is bounded where it is decoded.

The calls that once crashed run in a subprocess: a crash fails one test instead of killing
pytest.
"""

from __future__ import annotations

import math
import re
import sys
import textwrap
from pathlib import Path

import msgspec
import numpy as np
import pytest

from colmena import _core
from colmena.backtest.engine import BacktestConfig
from colmena.execution.simulation import MAX_COST_BPS, ExecutionSettings
from colmena.risk.config import MAX_DURATION_SECONDS, MAX_VAR_HORIZON_BARS, RiskConfig

sys.path.insert(0, str(Path(__file__).parent))
from helpers import run_python

MINUTE = 60 * 10**9
T0 = 1_677_628_800 * 10**9  # 2023-03-01T00:00:00Z

SETUP = """
import numpy as np
from colmena import _core
MIN, MAX = int(np.iinfo(np.int64).min), int(np.iinfo(np.int64).max)
M = 60 * 10**9
T0 = 1_677_628_800 * 10**9
risk, execution = _core.RiskConfig(), _core.ExecutionConfig()

def columns(ts):
    ts = np.asarray(ts, dtype=np.int64)
    price = np.full(ts.size, 100.0)
    return ts, price, np.full(ts.size, 10.0)

def backtest(ts, bar_ns=M):
    ts, p, v = columns(ts)
    _core.run_backtest(ts, p, p, p, p, v, np.full(ts.size, 0.5), bar_ns, risk, execution)

def simulate(ts, bar_ns=M):
    ts, p, v = columns(ts)
    decide = np.ones(ts.size, dtype=np.uint8)
    signals = np.full((1, ts.size), 0.5, dtype=np.float32)
    marks = np.arange(ts.size, dtype=np.int64)
    _core.simulate_targets(ts, p, p, v, decide, signals, marks, bar_ns, execution)

def bar(ts):
    return _core.Bar(ts, 100.0, 100.0, 100.0, 100.0, 10.0)
"""

RANGE = "outside the supported time range [1970-01-01T00:00:00Z, 2200-01-01T00:00:00Z]"

CASES = {
    # the signal 11 of issue 10: times within an hour of the int64 minimum (year 1677)
    "run_backtest_int64_min": ("backtest(MIN + np.arange(5) * M)", "row 0: bar time"),
    "run_backtest_nat_row": ("backtest([T0, T0 + M, MIN, T0 + 3 * M])", "row 2: bar time"),
    "run_backtest_int64_max": ("backtest(MAX - 5 * M + np.arange(5) * M)", RANGE),
    "run_backtest_huge_bar": ("backtest(T0 + np.arange(5) * M, bar_ns=MAX)", "bar length bar_ns"),
    "simulate_targets_int64_max": ("simulate(MAX - 5 * M + np.arange(5) * M)", RANGE),
    "simulate_targets_int64_min": ("simulate(MIN + np.arange(5) * M)", RANGE),
    "loop_step_int64_min": (
        "_core.TradingLoop(execution, risk, M).step(bar(MIN), 'decide', 0.5)",
        "TradingLoop.step: bar time",
    ),
    "loop_step_int64_max": (
        "loop = _core.TradingLoop(execution, risk, M)\n"
        "loop.step(bar(T0), 'decide', 0.5)\n"
        "loop.step(bar(MAX - 1), 'decide', 0.5)",
        RANGE,
    ),
    "loop_huge_bar": ("_core.TradingLoop(execution, risk, MAX)", "bar length bar_ns"),
    "risk_stage_open": ("_core.RiskStage(execution, risk, M).open(bar(MIN))", "RiskStage.open"),
    "execution_stage_open": (
        "_core.ExecutionStage(execution, M).open(bar(MAX), 'ACTIVE')",
        "ExecutionStage.open",
    ),
    "risk_manager_observe": ("_core.RiskManager(risk).observe(MIN, 1e5)", "RiskManager.observe"),
    "risk_manager_data_age": (
        "_core.RiskManager(risk).observe_data_age(MAX, MIN)",
        "RiskManager.observe_data_age",
    ),
    "risk_manager_reset_halt": (
        "_core.RiskManager(risk).reset_halt(MIN, 1.0)",
        "RiskManager.reset_halt",
    ),
    "halt_window_int64_max": (
        "risk.halt_window_ns = MAX\n_core.RiskManager(risk)",
        "halt_window_ns must be in (0, 315360000000000000]",
    ),
    "ladder_pause_8e18": (  # 8e9 s: `ts + pause` wrapped, the pause lasted one bar
        "risk.ladder_pause_ns = (3_600 * 10**9, 8 * 10**18, 86_400 * 10**9)\n"
        "_core.RiskManager(risk)",
        "ladder_pause_ns must each be in [0, 315360000000000000]",
    ),
    "stale_after_int64_max": (
        "risk.stale_after_ns = MAX\nrisk.validate()",
        "stale_after_ns must be in (0, 315360000000000000]",
    ),
    "slippage_20000_bps": (  # negative fill prices
        "execution.slippage_bps = 20_000\n_core.PaperExecutor(execution)",
        "slippage_bps must be in [0, 1000]",
    ),
    "impact_20000_bps": (
        "execution.impact_bps = 20_000\n_core.TradingLoop(execution, risk, M)",
        "impact_bps must be in [0, 1000]",
    ),
}


@pytest.mark.parametrize(("code", "fragment"), CASES.values(), ids=CASES.keys())
def test_the_core_refuses_out_of_range_times_and_durations_without_crashing(
    code: str, fragment: str
) -> None:
    script = (
        SETUP
        + "try:\n"
        + textwrap.indent(code, "    ")
        + "\nexcept ValueError as exc:\n    print('ValueError:', exc)\n"
        + "else:\n    raise SystemExit('no ValueError')\n"
    )
    done = run_python(["-c", script], timeout=120)
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"exit status {done.returncode} (negative: a signal)\n{output}"
    assert output.startswith("ValueError:"), output
    assert fragment in output, output


def test_the_limits_of_the_range_work_without_wrapping() -> None:
    """A ladder pause of the longest duration at the latest time really pauses."""
    risk = _core.RiskConfig()
    longest = _core.MAX_DURATION_NS
    risk.halt_window_ns = longest
    risk.ladder_pause_ns = (longest, longest, longest)
    risk.stale_after_ns = longest
    manager = _core.RiskManager(risk)
    ts = _core.MAX_TIMESTAMP_NS - 10 * MINUTE
    manager.observe(ts, 100.0)
    manager.observe(ts + MINUTE, 94.0)  # 6% drawdown: the first ladder level
    assert manager.state == "PAUSED"
    assert manager.paused_until == ts + MINUTE + longest
    manager.observe(_core.MAX_TIMESTAMP_NS, 94.0)
    assert manager.state == "PAUSED"
    manager.observe_data_age(_core.MAX_TIMESTAMP_NS, _core.MIN_TIMESTAMP_NS)  # 230 years old
    # the earliest time with the longest window: the window start is before 1970, no wrap
    early = _core.RiskManager(risk)
    early.observe(_core.MIN_TIMESTAMP_NS, 100.0)
    early.observe(_core.MIN_TIMESTAMP_NS + MINUTE, 70.0)
    assert early.state == "HALTED"


def test_backtest_at_the_edges_of_the_range() -> None:
    for first in (_core.MIN_TIMESTAMP_NS, _core.MAX_TIMESTAMP_NS - 99 * MINUTE):
        ts = first + np.arange(100, dtype=np.int64) * MINUTE
        price = np.full(100, 100.0)
        out = _core.run_backtest(
            ts, price, price, price, price, np.full(100, 10.0), np.full(100, 0.5), MINUTE,
            _core.RiskConfig(), _core.ExecutionConfig(),
        )  # fmt: skip
        assert np.isfinite(out["equity"]).all()


def test_the_bounds_are_the_cores() -> None:
    assert MAX_DURATION_SECONDS == 3650 * 86_400 == _core.MAX_DURATION_NS / 10**9
    assert MAX_VAR_HORIZON_BARS == _core.MAX_VAR_HORIZON_BARS == 315_360_000
    assert MAX_COST_BPS == _core.MAX_COST_BPS == 1_000
    assert (_core.MIN_TIMESTAMP_NS, _core.MAX_TIMESTAMP_NS) == (0, 7_258_118_400 * 10**9)


# ---------------------------------------------------------------- settings, in Python

BAD_RISK = [
    ("halt_window_seconds", 1e300, "halt_window_seconds"),
    ("halt_window_seconds", math.nan, "halt_window_seconds"),
    ("stale_after_seconds", 1e12, "stale_after_seconds"),
    ("ladder_pause_seconds", (3600.0, 8e9, 86_400.0), "ladder_pause_seconds[1]"),
    ("ladder_pause_seconds", (-1.0, 3600.0, 86_400.0), "ladder_pause_seconds[0]"),
    ("var_horizon_bars", 1e12, "var_horizon_bars"),
]


@pytest.mark.parametrize(("field", "value", "name"), BAD_RISK)
def test_risk_config_bounds_every_duration_on_construction(
    field: str, value: object, name: str
) -> None:
    with pytest.raises(msgspec.ValidationError, match=re.escape(name) + " must be in"):
        RiskConfig(**{field: value})


@pytest.mark.parametrize(
    ("field", "value", "name"),
    [case for case in BAD_RISK if case[1] == case[1]],  # no NaN
)
def test_risk_config_bounds_every_duration_on_decoding(
    field: str, value: object, name: str
) -> None:
    text = msgspec.json.encode({"risk": {field: value}})
    with pytest.raises(msgspec.ValidationError) as info:
        msgspec.json.decode(text, type=BacktestConfig)
    assert f"$.risk.{name}" in str(info.value)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("slippage_bps", 20_000.0),
        ("impact_bps", 20_000.0),
        ("fee_bps", 1e6),
        ("borrow_bps_per_day", math.inf),
        ("slippage_bps", math.nan),
        ("initial_cash", 1e300),
        ("max_participation", 2.0),
    ],
)
def test_execution_settings_bound_every_cost(field: str, value: float) -> None:
    with pytest.raises(msgspec.ValidationError, match=f"{field} must be in"):
        ExecutionSettings(**{field: value})  # type: ignore[arg-type]
    if math.isfinite(value):
        text = msgspec.json.encode({"execution": {field: value}})
        with pytest.raises(msgspec.ValidationError, match=rf"\$\.execution\.{field}"):
            msgspec.json.decode(text, type=BacktestConfig)


def test_the_largest_costs_keep_fill_prices_positive() -> None:
    execution = ExecutionSettings(
        slippage_bps=MAX_COST_BPS, impact_bps=MAX_COST_BPS, max_participation=1.0, market="margin"
    )
    executor = _core.PaperExecutor(execution.to_core())
    fill, _ = executor.execute(T0, -10.0, 100.0, 10.0)  # a sell of the whole bar's volume
    assert fill is not None
    assert fill["price"] == pytest.approx(80.0)  # 2,000 bps below the open, > 0


def test_valid_settings_still_convert() -> None:
    longest = RiskConfig(
        halt_window_seconds=MAX_DURATION_SECONDS,
        ladder_pause_seconds=(0.0, MAX_DURATION_SECONDS, MAX_DURATION_SECONDS),
        stale_after_seconds=MAX_DURATION_SECONDS,
        var_horizon_bars=MAX_VAR_HORIZON_BARS,
    )
    core = longest.to_core()
    assert core.halt_window_ns == _core.MAX_DURATION_NS
    assert core.ladder_pause_ns == (0, _core.MAX_DURATION_NS, _core.MAX_DURATION_NS)
    ExecutionSettings(fee_bps=MAX_COST_BPS, borrow_bps_per_day=0.0).to_core()
