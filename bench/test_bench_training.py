"""Training throughput: generations per second for 100 agents on a year of one-minute candles.

One generation = every agent's signal at the hourly decision bars of all 520,000 bars of BTC/USD
2018 (the core's swarm forward pass, 8,760 decisions), the fitness of each (every agent traded
through the core's trading loop over all 520,000 bars: next-open fills, fees, slippage, partial
fills, then the daily Sharpe ratio, :mod:`colmena.training.evolution`), and breeding the next
population (tournament, crossover, mutation, elitism). Peer: the same generation with the forward
pass in torch (``baddbmm`` on stacked weights); the executor-based fitness is the same call in
both. The VAE and the feature pipeline are computed once, outside the timing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from colmena.data.ohlcv import load_ohlcv  # noqa: E402
from colmena.execution.simulation import ExecutionSettings, day_end_rows, simulate_targets  # noqa: E402
from colmena.model.decision import decision_bars  # noqa: E402
from colmena.model.nn import Swarm  # noqa: E402
from colmena.training.evolution import EvolutionConfig, Population, daily_sharpe  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "btcusd_bitfinex_1m_2018.parquet"
CONFIG = EvolutionConfig(agents=100, hidden=(32, 32))
EXECUTION = ExecutionSettings()


@pytest.fixture(scope="module")
def year() -> dict[str, Any]:
    if not DATA.exists():
        pytest.skip(f"{DATA} not found")
    candles = load_ohlcv(DATA)
    decide = decision_bars(candles.ts, 60.0, "1h")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((int(decide.sum()), 20)).astype(np.float32)  # latent + features
    return {
        "candles": candles,
        "decide": decide,
        "x": x,
        "days": day_end_rows(candles.ts + 60_000_000_000),
    }


def generation(forward: Any, population: Population, data: Any, rng: np.random.Generator) -> None:
    c = data["candles"]
    signals = forward(population, data["x"])
    sim = simulate_targets(c.ts, c.open, c.close, c.volume, data["decide"], signals, data["days"],
                           bar_seconds=60.0, execution=EXECUTION, no_trade_band=0.05)  # fmt: skip
    population.record_fitness(daily_sharpe(sim.equity, EXECUTION.initial_cash))
    population.reproduce(CONFIG, rng)


def test_colmena_generation_100_agents_year(benchmark: Any, year: Any) -> None:
    benchmark.group = "training: one generation, 100 agents x 520k bars"
    rng = np.random.default_rng(1)
    population = Population.initial(20, CONFIG, rng)
    swarm = Swarm(population.layers, activation="tanh")

    def forward(pop: Population, x: np.ndarray) -> np.ndarray:
        swarm.set_weights(pop.layers)
        return swarm.forward(x)  # type: ignore[no-any-return]

    benchmark.pedantic(generation, args=(forward, population, year, rng), rounds=3, iterations=1)
    benchmark.extra_info["generations_per_second"] = round(1 / benchmark.stats.stats.median, 3)


def test_peer_torch_baddbmm_generation(benchmark: Any, year: Any) -> None:
    benchmark.group = "training: one generation, 100 agents x 520k bars"
    rng = np.random.default_rng(1)
    population = Population.initial(20, CONFIG, rng)

    def forward(pop: Population, x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            h = torch.from_numpy(x).unsqueeze(0).expand(pop.n_agents, -1, -1)
            for w, b in pop.layers:
                h = torch.baddbmm(torch.from_numpy(b).unsqueeze(1), h, torch.from_numpy(w))
                h = torch.tanh(h)
            return np.ascontiguousarray(h.squeeze(-1).numpy())

    benchmark.pedantic(generation, args=(forward, population, year, rng), rounds=1, iterations=1)
    benchmark.extra_info["generations_per_second"] = round(1 / benchmark.stats.stats.median, 3)
