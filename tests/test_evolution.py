"""Fitness, entropy, genetic operators and per-agent Adam against plain references."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from colmena.data.ohlcv import load_ohlcv
from colmena.execution.simulation import ExecutionSettings, day_end_rows, simulate_targets
from colmena.model.decision import DecisionConfig
from colmena.model.swarm import consensus
from colmena.training.evolution import (
    AdamState,
    EvolutionConfig,
    Population,
    behavioural_entropy,
    daily_sharpe,
    finetune_adam,
)

MIN = 60_000_000_000


def sharpe_reference(day_equity: list[float], initial: float) -> float:
    """The documented fitness formula for one agent, plain Python."""
    e = [initial, *day_equity]
    r = [b / a - 1 for a, b in itertools.pairwise(e)]
    if len(r) < 2:
        return 0.0
    mean = sum(r) / len(r)
    std = math.sqrt(sum((v - mean) ** 2 for v in r) / (len(r) - 1))
    return mean / std * math.sqrt(365) if std > 1e-12 else 0.0


@settings(max_examples=60, deadline=None)
@given(
    n_agents=st.integers(1, 4),
    n_days=st.integers(2, 40),
    seed=st.integers(0, 2**32 - 1),
)
def test_daily_sharpe_equals_plain_python(n_agents: int, n_days: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    equity = 1e5 * np.exp(np.cumsum(rng.normal(0, 0.02, size=(n_agents, n_days)), axis=1))
    got = daily_sharpe(equity, 1e5)
    for k in range(n_agents):
        assert got[k] == pytest.approx(sharpe_reference(list(equity[k]), 1e5), rel=1e-9, abs=1e-12)


@pytest.fixture(scope="module")
def week(shared_data_dir: Path):  # type: ignore[no-untyped-def]
    return load_ohlcv(shared_data_dir / "btcusd_bitfinex_1m_2018.parquet").slice(200_000, 215_000)


def test_always_long_agent_scores_buy_and_hold_net_and_flat_scores_zero(week) -> None:  # type: ignore[no-untyped-def]
    """The fitness trades through the executor: an agent that is always fully long scores the
    daily Sharpe of buying at the first fill and selling at the end, both with costs; an agent
    that is always flat scores 0. The reference is an independent NumPy ledger (full
    participation, so one fill each way)."""
    n = len(week)
    fee, slip = 10.0, 2.0
    execution = ExecutionSettings(fee_bps=fee, slippage_bps=slip, impact_bps=0.0,
                                  max_participation=1.0)  # fmt: skip
    close_ts = week.ts + MIN
    decide = np.zeros(n, dtype=bool)
    decide[::60] = True
    rows = day_end_rows(close_ts)
    signals = np.stack([np.ones(decide.sum()), np.zeros(decide.sum())]).astype(np.float32)
    band = DecisionConfig().no_trade_band  # what training uses: a full position never drifts
    deep = week.volume * 1e6  # one fill each way: no volume limit in the way
    sim = simulate_targets(week.ts, week.open, week.close, deep, decide, signals, rows,
                           bar_seconds=60, execution=execution, no_trade_band=band,
                           wind_down_bars=1)  # fmt: skip
    got = daily_sharpe(sim.equity, execution.initial_cash)
    # NumPy ledger: buy at the open of bar 1 (decided at the close of bar 0), sell at the open of
    # the last bar (the wind-down order at the close of bar n - 2).
    buy = week.open[1] * (1 + slip / 1e4)
    qty = execution.initial_cash * 1.0 / week.close[0]  # target 1.0 of equity at bar 0's close
    cash = execution.initial_cash - qty * buy * (1 + fee / 1e4)
    equity = cash + qty * week.close
    sell = week.open[-1] * (1 - slip / 1e4)
    equity[-1] = cash + qty * sell * (1 - fee / 1e4)
    equity[0] = execution.initial_cash
    expected = sharpe_reference(list(equity[rows]), execution.initial_cash)
    np.testing.assert_allclose(sim.equity[0], equity[rows], rtol=1e-12)
    assert got[0] == pytest.approx(expected, rel=1e-12)
    assert got[1] == 0.0
    np.testing.assert_array_equal(sim.equity[1], execution.initial_cash)


def test_costs_lower_the_fitness_of_a_busy_agent(week) -> None:  # type: ignore[no-untyped-def]
    n = len(week)
    decide = np.zeros(n, dtype=bool)
    decide[::15] = True
    flipper = np.tile(np.array([1.0, 0.0], dtype=np.float32), decide.sum() // 2 + 1)[None, :]
    flipper = np.ascontiguousarray(flipper[:, : decide.sum()])
    rows = day_end_rows(week.ts + MIN)
    scores = []
    for fee in (0.0, 10.0, 30.0):
        execution = ExecutionSettings(fee_bps=fee)
        sim = simulate_targets(week.ts, week.open, week.close, week.volume, decide, flipper, rows,
                               bar_seconds=60, execution=execution)  # fmt: skip
        scores.append(daily_sharpe(sim.equity, 1e5)[0])
        assert sim.fees[0] == pytest.approx(fee / 1e4 * sim.traded_notional[0], rel=1e-9)
    assert scores[0] > scores[1] > scores[2]


def test_entropy_is_zero_for_identical_and_one_for_even_spread() -> None:
    same = np.full((9, 50), 0.9, dtype=np.float32)
    assert behavioural_entropy(same) == 0.0
    spread = np.repeat(np.array([[-0.9], [0.0], [0.9]], dtype=np.float32), 3, axis=0)
    spread = np.repeat(spread, 50, axis=1)
    assert behavioural_entropy(spread) == pytest.approx(1.0)


def test_consensus_is_the_weighted_mean() -> None:
    s = np.array([[1.0, -1.0], [0.5, 0.5], [-1.0, 0.0]], dtype=np.float32)
    w = np.array([2.0, 1.0, 0.0])
    expected = [(2 * 1 + 0.5) / 3, (2 * -1 + 0.5) / 3]
    np.testing.assert_allclose(consensus(s, w), expected, rtol=1e-15)
    assert consensus(s[:, 0], w) == pytest.approx(expected[0])
    np.testing.assert_array_equal(consensus(s, np.zeros(3)), [0.0, 0.0])
    # One set per regime, chosen per bar; -1 is no signal.
    sets = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    np.testing.assert_array_equal(consensus(s, sets, np.array([1, 0])), [-1.0, -1.0])
    assert np.isnan(consensus(s, sets, np.array([-1, 0]))[0])
    with pytest.raises(ValueError, match="do not match"):
        consensus(s, np.ones(2))
    with pytest.raises(ValueError, match="finite"):
        consensus(s, np.array([1.0, np.nan, 1.0]))
    with pytest.raises(ValueError, match="outside"):
        consensus(s, sets, np.array([2, 0]))


def small_population(seed: int = 0, **overrides: object) -> tuple[Population, EvolutionConfig]:
    config = EvolutionConfig(agents=12, hidden=(5, 4), elite=3, **overrides)  # type: ignore[arg-type]
    pop = Population.initial(6, config, np.random.default_rng(seed))
    pop.record_fitness(np.random.default_rng(seed + 1).normal(size=12))
    return pop, config


def test_reproduce_keeps_elites_and_records_lineage() -> None:
    pop, config = small_population()
    before = [(w.copy(), b.copy()) for w, b in pop.layers]
    old_ids = pop.ids.copy()
    order = np.argsort(-pop.fitness)
    pop.reproduce(config, np.random.default_rng(5))
    assert pop.generation == 1
    for (w_old, b_old), (w_new, b_new) in zip(before, pop.layers, strict=True):
        np.testing.assert_array_equal(w_new[:3], w_old[order[:3]])
        np.testing.assert_array_equal(b_new[:3], b_old[order[:3]])
    np.testing.assert_array_equal(pop.ids[:3], old_ids[order[:3]])
    assert len(set(pop.ids.tolist())) == 12
    children = {rec.agent_id: rec for rec in pop.lineage if rec.generation == 1}
    assert set(children) == set(pop.ids[3:].tolist())
    for rec in children.values():
        assert set(rec.parent_ids) <= set(old_ids.tolist())
        assert rec.operator in {"crossover", "crossover+mutation", "mutation"}
        assert len(rec.parent_ids) == (2 if rec.operator.startswith("crossover") else 1)


def test_crossover_takes_every_unit_from_one_parent() -> None:
    pop, config = small_population(crossover_rate=1.0, mutation_rate=0.0)
    old = [(w.copy(), b.copy()) for w, b in pop.layers]
    index = {int(i): k for k, i in enumerate(pop.ids)}
    pop.reproduce(config, np.random.default_rng(9))
    lineage = {rec.agent_id: rec for rec in pop.lineage}
    for k in range(3, 12):
        a, b = (index[p] for p in lineage[int(pop.ids[k])].parent_ids)
        for (w_old, b_old), (w_new, b_new) in zip(old, pop.layers, strict=True):
            for unit in range(w_new.shape[2]):
                column = w_new[k, :, unit]
                from_a = (
                    np.array_equal(column, w_old[a, :, unit]) and b_new[k, unit] == b_old[a, unit]
                )
                from_b = (
                    np.array_equal(column, w_old[b, :, unit]) and b_new[k, unit] == b_old[b, unit]
                )
                assert from_a or from_b


def test_reproduce_is_deterministic_under_a_seed() -> None:
    results = []
    for _ in range(2):
        pop, config = small_population(seed=3)
        pop.reproduce(config, np.random.default_rng(11))
        results.append(pop)
    for (w1, b1), (w2, b2) in zip(results[0].layers, results[1].layers, strict=True):
        np.testing.assert_array_equal(w1, w2)
        np.testing.assert_array_equal(b1, b2)
    assert results[0].lineage == results[1].lineage


def test_config_reports_every_bad_field() -> None:
    import msgspec

    with pytest.raises(msgspec.ValidationError, match="elite") as info:
        EvolutionConfig(agents=4, elite=4, tournament_size=9)
    assert "tournament_size" in str(info.value)


def test_adam_state_moves_with_agents_and_resets_newborns() -> None:
    pop, config = small_population(finetune_steps=1)
    assert pop.adam is not None
    for pair in pop.adam.exp_avg:
        for a in pair:
            a[...] = np.arange(12).reshape((12,) + (1,) * (a.ndim - 1))
    pop.adam.step[:] = np.arange(12)
    order = np.argsort(-pop.fitness)
    pop.reproduce(config, np.random.default_rng(2))
    assert pop.adam.step[:3].tolist() == order[:3].tolist()
    assert pop.adam.step[3:].tolist() == [0] * 9
    assert np.all(pop.adam.exp_avg[0][0][3:] == 0)


def test_per_agent_adam_matches_torch_adam_for_each_agent() -> None:
    torch = pytest.importorskip("torch")
    config = EvolutionConfig(
        agents=3, hidden=(4,), elite=1, finetune_steps=3, finetune_learning_rate=1e-2
    )
    rng = np.random.default_rng(0)
    pop = Population.initial(5, config, rng)
    pop.adam = AdamState.zeros(pop.layers)
    pop.adam.step[1] = 7  # agent 1 is older: its bias correction must follow its own count
    x = rng.normal(size=(64, 5)).astype(np.float32)
    r = rng.normal(0, 1e-2, size=64)
    ok = np.ones(64, dtype=bool)
    initial = [(w.copy(), b.copy()) for w, b in pop.layers]
    finetune_adam(pop, x, r, ok, config, 8_760, cost_bps=12.0, long_only=False)

    for agent in (0, 2):  # fresh agents: torch.optim.Adam from step 0 is the reference
        params = [torch.tensor(w[agent], requires_grad=True) for pair in initial for w in pair]
        opt = torch.optim.Adam(params, lr=1e-2)
        xt = torch.from_numpy(x)
        rt = torch.from_numpy(r)
        for _ in range(3):
            h = torch.tanh(xt @ params[0] + params[1])
            out = torch.tanh(h @ params[2] + params[3]).squeeze(-1).double()
            dp = torch.abs(torch.diff(out, prepend=torch.zeros(1, dtype=out.dtype)))
            g = out * rt - 12 / 1e4 * dp
            loss = -(math.sqrt(8_760) * g.mean() / torch.sqrt(g.var() + 1e-12))
            opt.zero_grad()
            loss.backward()
            opt.step()
        got = [a[agent] for pair in pop.layers for a in pair]
        for mine, ref in zip(got, params, strict=True):
            np.testing.assert_allclose(mine, ref.detach().numpy(), rtol=1e-4, atol=1e-5)
    assert pop.adam.step.tolist() == [3, 10, 3]
