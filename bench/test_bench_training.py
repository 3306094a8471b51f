"""Training throughput: generations per second for 100 agents on a year of one-minute candles.

One generation = every agent's signal over all 520,000 bars of BTC/USD 2018 (the core's swarm
forward pass), the fitness of each (colmena.evolution.fitness_scores), and breeding the next
population (tournament, crossover, mutation, elitism). Peer: the same generation with the
forward pass in torch (``baddbmm`` on stacked weights). The VAE and the feature pipeline are
computed once, outside the timing (their cost is in the backtest benchmark).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from colmena.data import load_ohlcv  # noqa: E402
from colmena.evolution import EvolutionConfig, Population, fitness_scores  # noqa: E402
from colmena.nn import Swarm  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "btcusd_bitfinex_1m_2018.parquet"
CONFIG = EvolutionConfig(agents=100, hidden=(32, 32))


@pytest.fixture(scope="module")
def year() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if not DATA.exists():
        pytest.skip(f"{DATA} not found")
    candles = load_ohlcv(DATA)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((len(candles), 20)).astype(np.float32)  # latent + features stand-in
    close = np.asarray(candles.close)
    nxt = np.zeros(close.size)
    nxt[:-1] = np.diff(np.log(close))
    ok = np.ones(close.size, dtype=bool)
    ok[-1] = False
    return x, nxt, ok


def generation(forward: Any, population: Population, data: Any, rng: np.random.Generator) -> None:
    x, nxt, ok = data
    signals = forward(population, x)
    fitness = fitness_scores(signals, nxt, ok, fee_bps=10, turnover_penalty=1.0,
                             bars_per_year=525_600)  # fmt: skip
    population.record_fitness(fitness)
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
            xt = torch.from_numpy(x)
            out = []
            for start in range(0, x.shape[0], 16_384):
                h = xt[start : start + 16_384].unsqueeze(0).expand(pop.n_agents, -1, -1)
                for w, b in pop.layers:
                    h = torch.baddbmm(torch.from_numpy(b).unsqueeze(1), h, torch.from_numpy(w))
                    h = torch.tanh(h)
                out.append(h.squeeze(-1))
            return torch.cat(out, dim=1).numpy()

    benchmark.pedantic(generation, args=(forward, population, year, rng), rounds=1, iterations=1)
    benchmark.extra_info["generations_per_second"] = round(1 / benchmark.stats.stats.median, 3)
