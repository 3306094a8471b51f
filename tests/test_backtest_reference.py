"""The compiled backtest loop against a plain-Python model of the same rules, on real candles."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from colmena import _core
from colmena.backtest import ExecutionSettings
from colmena.data import load_ohlcv
from colmena.risk import RiskConfig

sys.path.insert(0, str(Path(__file__).parent))
from reference_backtest import PlainExecutor, PlainRisk, plain_backtest

MIN = 60_000_000_000


@pytest.fixture(scope="module")
def btc_2018(shared_data_dir: Path):  # type: ignore[no-untyped-def]
    return load_ohlcv(shared_data_dir / "btcusd_bitfinex_1m_2018.parquet")


@pytest.mark.parametrize(
    ("risk", "plain"),
    [
        (RiskConfig(), PlainRisk()),
        (
            RiskConfig(
                kelly_prior=1.0,
                kelly_multiplier=1.0,
                max_leverage=3.0,
                var_budget=5.0,
                kelly_min_trades=5,
                kelly_window=10,
            ),
            PlainRisk(
                kelly_prior=1.0,
                kelly_multiplier=1.0,
                max_leverage=3.0,
                var_budget=5.0,
                kelly_min_trades=5,
                kelly_window=10,
            ),
        ),
    ],
    ids=["defaults", "leveraged"],
)
def test_core_loop_equals_plain_python_model(btc_2018, risk, plain) -> None:  # type: ignore[no-untyped-def]
    gaps = btc_2018.gaps
    g = int(gaps.rows[np.argmax(gaps.missing_per_gap)])  # around the longest gap of the year
    c = btc_2018.slice(g - 15_000, g + 15_000)
    n = len(c)
    rng = np.random.default_rng(0)
    signal = np.tanh(np.cumsum(rng.normal(0, 0.15, n)))
    signal[rng.random(n) < 0.02] = np.nan  # some bars without a valid state
    cols = [
        np.ascontiguousarray(getattr(c, k))
        for k in ("ts", "open", "high", "low", "close", "volume")
    ]
    core = _core.run_backtest(*cols, signal, MIN, risk.to_core(), ExecutionSettings().to_core())
    ref = plain_backtest(
        c.ts.tolist(), c.open.tolist(), c.close.tolist(), c.volume.tolist(), signal.tolist(), MIN,
        plain, PlainExecutor(),
    )  # fmt: skip
    names = _core.verdict_names()
    states = _core.trading_state_names()
    assert [names[v] for v in core["verdict"]] == ref["verdict"]
    assert [states[s] for s in core["state"]] == ref["state"]
    np.testing.assert_allclose(core["equity"], ref["equity"], rtol=1e-12)
    np.testing.assert_allclose(core["position"], ref["position"], rtol=1e-12, atol=1e-12)
    fills = np.array(ref["fills"])
    np.testing.assert_array_equal(core["fill_bar"], fills[:, 0].astype(np.int64))
    np.testing.assert_allclose(core["fill_quantity"], fills[:, 1], rtol=1e-12)
    np.testing.assert_allclose(core["fill_price"], fills[:, 2], rtol=1e-12)
    np.testing.assert_allclose(core["fill_fee"], fills[:, 3], rtol=1e-12)
    assert len(core["fill_bar"]) > 100
    seen = set(ref["state"])
    assert ref["state"] == [states[s] for s in core["state"]]
    if risk.max_leverage > 1:
        assert "PAUSED" in seen  # the leveraged run exercises the circuit breakers
    # Gaps over 5 minutes make the fill at the next open reduce-only (REDUCING until the candle).
    long_gaps = int((c.gaps.missing_per_gap >= 5).sum())
    to_reducing = (core["event_type"] == 1) & (core["event_code"] == 1)
    assert long_gaps > 0
    assert int(to_reducing.sum()) >= 1
