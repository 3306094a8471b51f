"""The out-of-sample pass of the main job on a year of minute candles, against a plain peer.

colmena: ``colmena.backtest.backtest`` with a fixed 100-agent swarm (market state, VAE latent,
swarm, consensus, risk, execution, metrics, all of it; training excluded). Peer: the same pipeline
written plainly: NumPy features, torch encoder and ``baddbmm`` swarm, NumPy consensus, and the
plain-Python risk and execution loop of tests/reference_backtest.py.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from colmena.analysis.metrics import performance_metrics  # noqa: E402
from colmena.backtest.engine import BacktestConfig, backtest  # noqa: E402
from colmena.data.ohlcv import load_ohlcv  # noqa: E402
from colmena.model.decision import decision_bars  # noqa: E402
from colmena.model.vae import VAEConfig  # noqa: E402
from colmena.training.evolution import EvolutionConfig  # noqa: E402
from colmena.training.trainer import TrainConfig, train  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from reference_backtest import PlainExecutor, plain_backtest  # noqa: E402

#: The candle folder: $COLMENA_DATA_DIR (as in tests/conftest.py), else shared/data beside the repo.
DATA = (
    Path(
        os.environ.get("COLMENA_DATA_DIR")
        or Path(__file__).resolve().parents[2] / "shared" / "data"
    )
    / "btcusd_bitfinex_1m_2018.parquet"
)


@pytest.fixture(scope="module")
def setup() -> tuple[Any, Any]:
    if not DATA.exists():
        pytest.skip(f"{DATA} not found")
    candles = load_ohlcv(DATA)
    config = TrainConfig(
        vae=VAEConfig(epochs=1, max_samples_per_epoch=5_000),
        evolution=EvolutionConfig(agents=100, generations=2, eval_days=10),
        gate=False,  # the timing needs a swarm that trades
    )
    trained = train(candles.slice(0, 40_000), config).state  # untimed
    assert trained.consensus_weights is not None
    state = dataclasses.replace(  # every agent votes
        trained, consensus_weights=np.ones_like(trained.consensus_weights)
    )
    return candles, state


def plain_pipeline(candles: Any, state: Any) -> dict[str, Any]:
    """The same steps with NumPy, torch and a Python loop (no colmena core)."""
    from numpy.lib.stride_tricks import sliding_window_view

    spec = state.feature_spec
    close = np.asarray(candles.close)
    n = close.size
    feats = np.full((n, 4), np.nan)
    r = np.diff(np.log(close))
    feats[1:, 0] = r
    w = [1.0]
    for k in range(1, spec.ffd_window):
        w.append(-w[-1] / k * (spec.ffd_d - k + 1))
    feats[spec.ffd_window - 1 :, 1] = np.convolve(np.log(close), w, mode="valid")
    feats[spec.volatility_bars :, 2] = sliding_window_view(r, spec.volatility_bars).std(axis=1)
    lv = np.log1p(np.asarray(candles.volume))
    mean = np.full(n, np.nan)
    mean[spec.volume_bars - 1 :] = sliding_window_view(lv, spec.volume_bars).mean(axis=1)
    feats[:, 3] = lv - mean
    valid = np.all(np.isfinite(feats), axis=1)
    valid[: spec.lookback_bars - 1] = False
    z = (feats - state.normalization.mean) / state.normalization.std
    win = np.zeros((n, spec.state_size), np.float32)
    view = sliding_window_view(np.nan_to_num(z), (spec.state_bars, 4))[:, 0].reshape(
        -1, spec.state_size
    )
    win[spec.state_bars - 1 :] = view
    with torch.no_grad():
        h = torch.from_numpy(win)
        for weight, bias in state.vae.layers:
            h = torch.relu(
                h @ torch.from_numpy(np.array(weight)) + torch.from_numpy(np.array(bias))
            )
        mu_weight, mu_bias = state.vae.mu
        mu = h @ torch.from_numpy(np.array(mu_weight)) + torch.from_numpy(np.array(mu_bias))
        current = torch.from_numpy(np.where(valid[:, None], z, 0.0).astype(np.float32))
        x = torch.cat([mu, current], dim=1)
        layers = [
            (torch.from_numpy(np.array(w)), torch.from_numpy(np.array(b))) for w, b in state.layers
        ]
        signals = []
        for start in range(0, n, 8192):
            hb = x[start : start + 8192].unsqueeze(0).expand(layers[0][0].shape[0], -1, -1)
            for _j, (wj, bj) in enumerate(layers):
                hb = torch.baddbmm(bj.unsqueeze(1), hb, wj)
                hb = torch.tanh(hb)
            signals.append(hb.squeeze(-1))
        agent = torch.cat(signals, dim=1).numpy()
    weights = np.asarray(state.consensus_weights)[0]
    consensus = np.where(valid, weights @ agent / np.abs(weights).sum(), np.nan)
    decide = decision_bars(candles.ts, 60.0, "1h")
    action = np.where(decide, 1, 0)
    action[-31:-1] = 3
    out = plain_backtest(
        candles.ts.tolist(), candles.open.tolist(), close.tolist(), candles.volume.tolist(),
        np.where(decide, consensus, np.nan).tolist(), 60_000_000_000,
        execution=PlainExecutor(allow_short=False), action=action.tolist(),
    )  # fmt: skip
    out["metrics"] = performance_metrics(
        candles.ts + 60_000_000_000, np.array(out["equity"]), initial_equity=100_000.0
    )
    out["consensus"] = consensus
    return out


def test_colmena_oos_pass_year_100_agents(benchmark: Any, setup: tuple[Any, Any]) -> None:
    benchmark.group = "backtest: out-of-sample pass, 520k candles, 100 agents"
    candles, state = setup
    run = benchmark.pedantic(backtest, args=(candles, BacktestConfig()),
                             kwargs={"state": state}, rounds=3, iterations=1,
                             warmup_rounds=1)  # fmt: skip
    benchmark.extra_info["candles_per_second"] = round(len(candles) / benchmark.stats.stats.median)
    peer = plain_pipeline(candles.slice(0, 20_000), state)
    ours = run.bars.column("signal").to_numpy()[:20_000]
    both = ~np.isnan(ours)
    np.testing.assert_allclose(ours[both], peer["consensus"][both], atol=1e-4)


def test_peer_numpy_torch_python_loop(benchmark: Any, setup: tuple[Any, Any]) -> None:
    benchmark.group = "backtest: out-of-sample pass, 520k candles, 100 agents"
    candles, state = setup
    benchmark.pedantic(plain_pipeline, args=(candles, state), rounds=1, iterations=1)
    benchmark.extra_info["candles_per_second"] = round(len(candles) / benchmark.stats.stats.median)
    assert math.isfinite(benchmark.stats.stats.median)


# ---------------------------------------------------------------- the trading loop alone
# The compiled loops that everything above ends in, timed apart from the swarm: run_backtest
# (risk mode, one TradingLoop over the year) and simulate_targets (pass-through mode, one loop
# per agent, the evolution's fitness). Peers: the plain-Python loop of tests/reference_backtest.py.

LOOP_GROUP = "trading loop: run_backtest, 520k candles, hourly decisions"
FITNESS_GROUP = "trading loop: simulate_targets, 10 days x 100 rows, hourly decisions"
MIN_NS = 60_000_000_000


@pytest.fixture(scope="module")
def year_inputs() -> dict[str, Any]:
    """The year of candles, a deterministic signal and hourly decide / hold actions."""
    if not DATA.exists():
        pytest.skip(f"{DATA} not found")
    from colmena import _core

    c = load_ohlcv(DATA)
    n = len(c)
    rng = np.random.default_rng(0)
    signal = np.tanh(np.cumsum(rng.normal(0.0, 0.15, n)))
    ts = np.ascontiguousarray(c.ts)
    decide = (ts + MIN_NS) % (60 * MIN_NS) == 0
    action = decide.astype(np.uint8)
    action[-31:-1] = 3  # end_of_run
    execution = _core.ExecutionConfig()
    execution.allow_short = False
    cols = {k: np.ascontiguousarray(getattr(c, k)) for k in ("open", "high", "low", "close")}
    return {
        "ts": ts, **cols, "volume": np.ascontiguousarray(c.volume),
        "signal": np.where(decide, signal, np.nan), "action": action, "decide": decide,
        "risk": _core.RiskConfig(), "execution": execution,
    }  # fmt: skip


def _core_backtest(x: dict[str, Any]) -> dict[str, Any]:
    from colmena import _core

    cols = [x[k] for k in ("ts", "open", "high", "low", "close", "volume", "signal")]
    return _core.run_backtest(*cols, MIN_NS, x["risk"], x["execution"], x["action"])


def _fitness_inputs(x: dict[str, Any], rows: int = 100, bars: int = 14_400) -> dict[str, Any]:
    decide = x["decide"][:bars].astype(np.uint8)
    d = int(decide.sum())
    walk = np.cumsum(np.random.default_rng(1).normal(0.0, 0.4, (rows, d)), axis=1)
    return {
        "ts": x["ts"][:bars], "open": x["open"][:bars], "close": x["close"][:bars],
        "volume": x["volume"][:bars], "decide": decide,
        "signals": np.ascontiguousarray(np.tanh(walk), dtype=np.float32),
        "marks": np.arange(59, bars, 60, dtype=np.int64),
    }  # fmt: skip


def test_colmena_run_backtest_year(benchmark: Any, year_inputs: dict[str, Any]) -> None:
    benchmark.group = LOOP_GROUP
    out = benchmark.pedantic(_core_backtest, args=(year_inputs,), rounds=15, iterations=1,
                             warmup_rounds=1)  # fmt: skip
    benchmark.extra_info["candles_per_second"] = round(
        len(year_inputs["ts"]) / benchmark.stats.stats.median
    )
    assert len(out["fill_bar"]) > 0


def test_peer_plain_python_loop(benchmark: Any, year_inputs: dict[str, Any]) -> None:
    benchmark.group = LOOP_GROUP
    x = year_inputs
    args = [x[k].tolist() for k in ("ts", "open", "close", "volume", "signal")]
    out = benchmark.pedantic(plain_backtest, args=(*args, MIN_NS),
                             kwargs={"execution": PlainExecutor(allow_short=False),
                                     "action": x["action"].tolist()},
                             rounds=1, iterations=1)  # fmt: skip
    assert len(out["fills"]) > 0


def test_colmena_simulate_targets_fitness(benchmark: Any, year_inputs: dict[str, Any]) -> None:
    from colmena import _core

    benchmark.group = FITNESS_GROUP
    f = _fitness_inputs(year_inputs)
    args = [f[k] for k in ("ts", "open", "close", "volume", "decide", "signals", "marks")]
    out = benchmark.pedantic(_core.simulate_targets, args=(*args, MIN_NS, year_inputs["execution"]),
                             rounds=15, iterations=1, warmup_rounds=1)  # fmt: skip
    steps = f["signals"].shape[0] * len(f["ts"])
    benchmark.extra_info["row_bars_per_second"] = round(steps / benchmark.stats.stats.median)
    assert out["n_fills"].sum() > 0


def test_peer_plain_python_simulate_targets(benchmark: Any, year_inputs: dict[str, Any]) -> None:
    from reference_backtest import plain_simulate_targets

    benchmark.group = FITNESS_GROUP
    f = _fitness_inputs(year_inputs)
    bars = [f[k].tolist() for k in ("ts", "open", "close", "volume", "decide")]
    plain = PlainExecutor(allow_short=False)

    def run() -> list[dict[str, Any]]:
        return [
            plain_simulate_targets(*bars, row.tolist(), f["marks"].tolist(), MIN_NS, plain.fresh())
            for row in f["signals"]
        ]

    out = benchmark.pedantic(run, rounds=1, iterations=1)
    assert len(out) == f["signals"].shape[0]
