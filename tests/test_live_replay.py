"""One candle in, one decision out: a replay through :class:`colmena.live.SwarmTrader`, candle by
candle, equals the batch backtest bit for bit.

Every real candle file in ``../shared/data`` (a year of one-minute candles per 2018 file) is
replayed one candle at a time through the live path (streaming market state, VAE on one window,
swarm on one state, fixed-order consensus, the trading loop's step) and compared with
``backtest(candles, state=...)`` (the batch market state, the VAE and the swarm batched over
time, the consensus over all decision bars, ``run_backtest``): the account at every bar, every
fill, order, decision and risk event must be identical, not close. The model is a small trained
swarm whose every agent votes and whose gate is forced open, so that it trades; the risk limits
are loose enough for sizing to matter and the breakers stay armed.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from colmena.backtest import BacktestConfig, BacktestRun, backtest
from colmena.data import Candles, load_ohlcv
from colmena.execution import ExecutionSettings
from colmena.execution.trading_loop import Bar
from colmena.live import CandleResult, SwarmTrader
from colmena.model.swarm import GateResult
from colmena.risk import RiskConfig
from colmena.training import train
from colmena.training.state import TrainingState

pytest.importorskip("torch")
sys.path.insert(0, str(Path(__file__).parent))
from helpers import every_agent_votes, tiny_training

OPEN_GATE = GateResult(True, "forced open for the test", 0, 0, 0.0, 0.0, 0, 0, 0.0)
CLOSED_GATE = GateResult(False, "no_agent_beat_flat", 0, 0, 0.0, 0.0, 0, 0, 0.0)
RISK = RiskConfig(kelly_prior=1.0, kelly_multiplier=1.0, var_budget=1e9, min_trade_fraction=0.0)
TRAIN_BARS = 10 * 1_440


def real_files() -> list[Path]:
    from conftest import shared_data_path

    folder = shared_data_path()
    files = sorted([*folder.glob("*.parquet"), *folder.glob("*.csv")]) if folder.is_dir() else []
    return files or [folder / "missing"]


def trained(candles: Candles, **changes: Any) -> TrainingState:
    """A small swarm trained on the first ten days, every agent voting."""
    result = train(candles.slice(0, TRAIN_BARS), tiny_training(interval="1h", **changes))
    return every_agent_votes(result.state, gate=OPEN_GATE)


def replay(trader: SwarmTrader, candles: Candles) -> list[CandleResult]:
    """Every candle through ``trader.on_candle`` in order, winding down over the last bars as
    the backtest does (``end_of_run`` for the 30 bars before the last; no order after it)."""
    n = len(candles)
    wind_down = min(30, n - 1)
    columns = [c.tolist() for c in (candles.ts, candles.open, candles.high, candles.low,
                                     candles.close, candles.volume)]  # fmt: skip
    out = []
    for i, (ts, o, h, lo, c, v) in enumerate(zip(*columns, strict=True)):
        bar = Bar(ts=ts, open=o, high=h, low=lo, close=c, volume=v)
        out.append(trader.on_candle(bar, flatten=n - 1 - wind_down <= i < n - 1, last=i == n - 1))
    return out


def ns(run_table: Any, column: str) -> list[int]:
    return [int(x) for x in run_table.column(column).cast("int64").to_pylist()]


def assert_identical(run: BacktestRun, live: list[CandleResult], bar_ns: int) -> None:
    steps = [r.step for r in live]
    # the account at every bar's close
    for column in ("cash", "position", "equity"):
        batch = np.asarray(run.equity.column(column).to_numpy())
        assert np.array_equal(batch, np.array([getattr(s, column) for s in steps])), column
    assert run.equity.column("trading_state").to_pylist() == [s.decision.state for s in steps]
    # fills: time, size, price and costs
    fills = [s.fill for s in steps if s.fill is not None]
    batch_fills = run.fills.to_pydict()
    assert ns(run.fills, "fill_time") == [f.ts for f in fills]
    assert batch_fills["quantity"] == [abs(f.quantity) for f in fills]
    assert batch_fills["side"] == ["buy" if f.quantity > 0 else "sell" for f in fills]
    for column in ("price", "fee", "slippage_cost"):
        assert batch_fills[column] == [getattr(f, column) for f in fills], column
    # orders: when, why, how much
    orders = [s.order for s in steps if s.order is not None]
    batch_orders = run.orders.to_pydict()
    assert ns(run.orders, "decision_time") == [o.ts for o in orders]
    assert batch_orders["origin"] == [o.origin for o in orders]
    assert batch_orders["quantity"] == [abs(o.quantity) for o in orders]
    assert batch_orders["target"] == [o.target for o in orders]
    # decisions: every row the backtest reports, with its verdict, Kelly fraction and targets
    at = {t: k for k, t in enumerate(r.ts + bar_ns for r in live)}
    rows = [at[t] for t in ns(run.decisions, "decision_time")]
    decided = [live[k].step.decision for k in rows]
    batch_decisions = run.decisions.to_pydict()
    assert batch_decisions["code"] == [d.verdict for d in decided]
    assert batch_decisions["requested"] == [d.requested for d in decided]
    assert batch_decisions["target"] == [d.target for d in decided]
    kelly = np.array([np.nan if d.kelly is None else d.kelly for d in decided])
    assert np.array_equal(np.asarray(batch_decisions["kelly_fraction"]), kelly, equal_nan=True)
    signal = np.array([np.nan if live[k].signal is None else live[k].signal for k in rows])
    decision_rows = np.array([live[k].action == "decide" for k in rows])
    batch_signal = np.asarray(batch_decisions["signal"])
    assert np.array_equal(batch_signal[decision_rows], signal[decision_rows], equal_nan=True)
    # risk events, in order
    events = [e for s in steps for e in s.events]
    assert ns(run.events, "event_time") == [e.ts for e in events]
    assert run.events.column("type").to_pylist() == [e.type for e in events]
    assert run.events.column("value").to_pylist() == [e.value for e in events]


@pytest.mark.parametrize("path", real_files(), ids=lambda p: p.name)
def test_replay_one_candle_at_a_time_equals_the_batch_backtest(path: Path) -> None:
    if not path.is_file():
        pytest.skip(f"no real candle files in {path.parent} (see ../shared/data/README.md)")
    candles = load_ohlcv(path)
    state = trained(candles)
    config = BacktestConfig(risk=RISK)
    run = backtest(candles, config, state=state)
    bar_seconds = float(candles.interval_seconds or 60.0)
    trader = SwarmTrader(state.to_model(), config.risk, config.execution, bar_seconds=bar_seconds)
    live = replay(trader, candles)
    assert run.fills.num_rows > 20  # the model trades: the comparison is not of two flat books
    assert sum(r.action == "decide" and r.signal is not None for r in live) > 20
    assert_identical(run, live, round(bar_seconds * 1e9))


@pytest.fixture(scope="module")
def march_2023(shared_data_dir: Path) -> Candles:
    return load_ohlcv(shared_data_dir / "binanceus_btcusdt_1m_2023-03-01_2023-03-21.csv")


def test_replay_on_margin_with_a_per_regime_consensus(march_2023: Candles) -> None:
    """Shorts with borrow and one set of voters per regime: still bit for bit."""
    state = trained(march_2023, regime_consensus=True)
    config = BacktestConfig(risk=RISK, execution=ExecutionSettings(market="margin"))
    run = backtest(march_2023, config, state=state)
    trader = SwarmTrader(state.to_model(), config.risk, config.execution)
    live = replay(trader, march_2023)
    assert any(r.step.position < 0 for r in live)  # it went short
    assert len({r.regime for r in live if r.regime >= 0}) > 1
    assert_identical(run, live, 60 * 10**9)


def test_a_gated_model_stays_flat_live_as_in_the_backtest(march_2023: Candles) -> None:
    state = trained(march_2023)
    state = every_agent_votes(state, gate=CLOSED_GATE)
    config = BacktestConfig(risk=RISK)
    run = backtest(march_2023, config, state=state)
    live = replay(SwarmTrader(state.to_model(), config.risk, config.execution), march_2023)
    assert run.fills.num_rows == 0
    assert {r.action for r in live} == {"hold", "gated_flat", "end_of_run"}
    assert_identical(run, live, 60 * 10**9)


def test_a_bad_candle_is_refused_and_changes_nothing(march_2023: Candles) -> None:
    """A candle that breaks the OHLCV rules, goes back in time or lies beyond 2200 raises
    ValueError naming the problem; the trader then continues exactly as if it had never been
    offered."""
    state = trained(march_2023)
    config = BacktestConfig(risk=RISK)
    clean = SwarmTrader(state.to_model(), config.risk, config.execution)
    hit = SwarmTrader(state.to_model(), config.risk, config.execution)
    candles = march_2023.slice(0, 3 * 1_440)
    expected = replay(clean, candles)
    columns = [c.tolist() for c in (candles.ts, candles.open, candles.high, candles.low,
                                     candles.close, candles.volume)]  # fmt: skip
    n = len(candles)
    out = []
    for i, (ts, o, h, lo, c, v) in enumerate(zip(*columns, strict=True)):
        if i == 2_000:
            with pytest.raises(ValueError, match="high"):
                hit.on_candle(Bar(ts=ts, open=o, high=lo * 0.5, low=lo, close=c, volume=v))
            with pytest.raises(ValueError, match="ts"):
                hit.on_candle(Bar(ts=ts - 120 * 10**9, open=o, high=h, low=lo, close=c, volume=v))
            # after the previous candle, but beyond the core's time range (issue 10)
            with pytest.raises(ValueError, match="outside the supported time range"):
                hit.on_candle(Bar(ts=2**63 - 1, open=o, high=h, low=lo, close=c, volume=v))
        bar = Bar(ts=ts, open=o, high=h, low=lo, close=c, volume=v)
        out.append(hit.on_candle(bar, flatten=n - 31 <= i < n - 1, last=i == n - 1))
    assert [r.step for r in out] == [r.step for r in expected]
    assert all(
        np.array_equal(a.agent_signals, b.agent_signals) for a, b in zip(out, expected, strict=True)
    )
