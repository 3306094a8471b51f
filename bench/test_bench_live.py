"""Candle-to-decision latency of the live path, next to recomputing the batch path per candle.

Run: ``pytest bench/test_bench_live.py --benchmark-only``. A swarm of the default size (100
agents of 32-32 tanh units on a 16-dim VAE latent; VAE encoder 128-64 on 16 bars x 4 features;
default FeatureSpec, FFD window 256; regime look-back one day) deciding every hour on a year of
synthetic one-minute candles.

- ``test_colmena_swarm_trader_decision_bar``: :meth:`colmena.live.SwarmTrader.on_candle` on a
  decision bar, in process: stream the market state, encode one VAE window, run the swarm on one
  state, the regime and the consensus, one trading-loop step (risk and execution). Each round is
  one decision bar; the hour of candles before it is fed in the (untimed) setup. ``extra_info``
  holds p50 and p99 over the rounds, in microseconds.
- ``test_peer_batch_path_per_decision``: what a live loop costs without the stream: the batch
  path (``SwarmModel.signals``: market state, VAE, swarm, consensus) over the candles the
  decision needs (its look-back), then the same trading-loop step.

``extra_info`` of the colmena row also gives the batch backtest's amortised cost per candle of
the same year (``batch_us_per_candle``: signals for every decision bar plus ``run_backtest``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from colmena import _core
from colmena.data.ohlcv import Candles, GapReport
from colmena.execution import ExecutionSettings
from colmena.execution.trading_loop import Bar, TradingLoop
from colmena.features.market_state import FeatureSpec, Normalization
from colmena.features.regime import RegimeClassifier, RegimeConfig
from colmena.live import SwarmTrader
from colmena.model import DecisionConfig, GateResult, Swarm, SwarmModel, VAEEncoder
from colmena.risk import RiskConfig

BARS = 525_600
MINUTE_NS = 60_000_000_000
ROUNDS = 600
RISK = RiskConfig(kelly_prior=1.0, kelly_multiplier=1.0, var_budget=1e9, min_trade_fraction=0.0)


@pytest.fixture(scope="module")
def year() -> Candles:
    rng = np.random.default_rng(11)
    close = 20_000.0 * np.exp(np.cumsum(rng.normal(0, 1e-3, BARS)))
    open_ = np.concatenate([[close[0]], close[:-1]])
    ts = np.arange(BARS, dtype=np.int64) * MINUTE_NS + 1_514_764_800 * 10**9
    return Candles(
        ts=ts, open=open_, high=np.maximum(open_, close) * 1.0005,
        low=np.minimum(open_, close) * 0.9995, close=close, volume=rng.uniform(1, 20, BARS),
        source=Path("synthetic"), interval_seconds=60.0, gaps=GapReport.from_timestamps(ts, 60.0),
    )  # fmt: skip


@pytest.fixture(scope="module")
def model(year: Candles) -> SwarmModel:
    rng = np.random.default_rng(5)

    def layer(n_in: int, n_out: int, agents: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        shape = (n_in, n_out) if agents is None else (agents, n_in, n_out)
        w = rng.normal(0, 1 / np.sqrt(n_in), shape).astype(np.float32)
        return w, np.zeros((*shape[:-2], n_out), dtype=np.float32)

    spec = FeatureSpec()
    latent = 16
    encoder = VAEEncoder(
        [layer(spec.state_size, 128), layer(128, 64)], layer(64, latent), layer(64, latent)
    )
    agents = 100
    swarm = Swarm(
        [layer(latent + 4, 32, agents), layer(32, 32, agents), layer(32, 1, agents)],
        activation="tanh",
    )
    regime_config = RegimeConfig()
    rows = np.arange(regime_config.lookback_bars, 100_000, 60, dtype=np.int64)
    return SwarmModel(
        feature_spec=spec,
        normalization=Normalization(mean=np.zeros(4), std=np.full(4, 1e-3)),
        encoder=encoder,
        swarm=swarm,
        weights=np.ones((1, agents)),
        decision=DecisionConfig(interval="1h"),
        regime=RegimeClassifier.fit(year.close, rows, regime_config),
        gate=GateResult(True, "bench", 0, 0, 0.0, 0.0, 0, 0, 0.0),
    )


def _bars(candles: Candles) -> Iterator[Bar]:
    columns = [c.tolist() for c in (candles.ts, candles.open, candles.high, candles.low,
                                     candles.close, candles.volume)]  # fmt: skip
    for ts, o, h, lo, c, v in zip(*columns, strict=True):
        yield Bar(ts=ts, open=o, high=h, low=lo, close=c, volume=v)


def _percentiles(benchmark: Any) -> None:
    if benchmark.stats is None:  # --benchmark-disable: nothing was timed
        return
    data = np.asarray(benchmark.stats.stats.data) * 1e6
    benchmark.extra_info["p50_us"] = round(float(np.percentile(data, 50)), 1)
    benchmark.extra_info["p99_us"] = round(float(np.percentile(data, 99)), 1)


@pytest.mark.benchmark(group="live: candle to decision (one decision bar)")
def test_colmena_swarm_trader_decision_bar(
    benchmark: Any, year: Candles, model: SwarmModel
) -> None:
    trader = SwarmTrader(model, RISK, ExecutionSettings())
    feed = _bars(year)
    warm = model.lookback_bars + 60
    for _ in range(warm):
        trader.on_candle(next(feed))

    def setup() -> tuple[tuple[Bar], dict[str, Any]]:
        # feed the candles up to the next decision bar (untimed); time that bar alone
        while True:
            bar = next(feed)
            if (bar.ts + MINUTE_NS) % (3_600 * 10**9) == 0:
                return (bar,), {}
            trader.on_candle(bar)

    def decide(bar: Bar) -> None:
        result = trader.on_candle(bar)
        assert result.decision_bar
        assert result.signal is not None

    benchmark.pedantic(decide, setup=setup, rounds=ROUNDS, iterations=1, warmup_rounds=5)
    _percentiles(benchmark)
    # the batch path's amortised cost per candle, the same year and model
    started = time.perf_counter()
    signals = model.signals(year)
    _core.run_backtest(
        year.ts, year.open, year.high, year.low, year.close, year.volume,
        np.where(signals.decision, signals.consensus, np.nan), MINUTE_NS, RISK.to_core(),
        ExecutionSettings().to_core(), None, None,
    )  # fmt: skip
    batch = time.perf_counter() - started
    benchmark.extra_info["batch_us_per_candle"] = round(batch / BARS * 1e6, 2)


@pytest.mark.benchmark(group="live: candle to decision (one decision bar)")
def test_peer_batch_path_per_decision(benchmark: Any, year: Candles, model: SwarmModel) -> None:
    loop = TradingLoop(ExecutionSettings(), RISK)
    look_back = model.lookback_bars + 1
    starts = iter(range(look_back + 60, BARS, 60))

    def setup() -> tuple[tuple[int], dict[str, Any]]:
        return (next(starts),), {}

    def decide(stop: int) -> None:
        window = year.slice(stop - look_back, stop)
        signals = model.signals(window)
        signal = float(signals.consensus[-1])
        t = int(year.ts[stop - 1])
        bar = Bar(ts=t, open=float(year.open[stop - 1]), high=float(year.high[stop - 1]),
                  low=float(year.low[stop - 1]), close=float(year.close[stop - 1]),
                  volume=float(year.volume[stop - 1]))  # fmt: skip
        loop.step(bar, "decide", None if np.isnan(signal) else signal)

    benchmark.pedantic(decide, setup=setup, rounds=ROUNDS // 3, iterations=1, warmup_rounds=2)
    _percentiles(benchmark)
