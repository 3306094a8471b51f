"""Fitness, entropy, genetic operators and per-agent Adam against plain references."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from colmena.evolution import (
    AdamState,
    EvolutionConfig,
    Population,
    behavioural_entropy,
    finetune_adam,
    fitness_scores,
)
from colmena.swarm import consensus


def fitness_reference(signal, returns, tradable, fee_bps, penalty, bars_per_year):  # type: ignore[no-untyped-def]
    """The documented formula, one agent, plain Python."""
    g, dps, prev = [], [], 0.0
    for s, r, ok in zip(signal, returns, tradable, strict=True):
        p = float(s) if ok else 0.0
        dp = abs(p - prev)
        g.append(p * r - fee_bps / 1e4 * dp)
        dps.append(dp)
        prev = p
    mean = sum(g) / len(g)
    std = math.sqrt(sum((v - mean) ** 2 for v in g) / len(g))
    sharpe = mean / std * math.sqrt(bars_per_year) if std > 1e-15 else 0.0
    return sharpe - penalty * sum(dps) / len(dps)


@settings(max_examples=40, deadline=None)
@given(
    n_agents=st.integers(1, 5),
    n_bars=st.integers(2, 60),
    fee=st.floats(0, 50),
    penalty=st.floats(0, 2),
    seed=st.integers(0, 2**32 - 1),
)
def test_fitness_equals_plain_python(
    n_agents: int, n_bars: int, fee: float, penalty: float, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    signals = rng.uniform(-1, 1, size=(n_agents, n_bars)).astype(np.float32)
    returns = rng.normal(0, 1e-3, size=n_bars)
    tradable = rng.random(n_bars) < 0.8
    got = fitness_scores(
        signals, returns, tradable, fee_bps=fee, turnover_penalty=penalty, bars_per_year=525_600
    )
    for k in range(n_agents):
        expected = fitness_reference(signals[k], returns, tradable, fee, penalty, 525_600)
        assert got[k] == pytest.approx(expected, rel=1e-9, abs=1e-9)


def test_flat_agent_scores_zero_and_costs_lower_fitness() -> None:
    returns = np.random.default_rng(0).normal(0, 1e-3, size=500)
    tradable = np.ones(500, dtype=bool)
    flat = np.zeros((1, 500), dtype=np.float32)
    assert (
        fitness_scores(
            flat, returns, tradable, fee_bps=10, turnover_penalty=1, bars_per_year=525_600
        )[0]
        == 0.0
    )
    flipper = np.tile(np.array([1.0, -1.0], dtype=np.float32), 250)[None, :]
    cheap, dear = (
        fitness_scores(flipper, returns, tradable, fee_bps=f, turnover_penalty=0, bars_per_year=1)
        for f in (0.0, 20.0)
    )
    assert dear[0] < cheap[0]


def test_entropy_is_zero_for_identical_and_one_for_even_spread() -> None:
    same = np.full((9, 50), 0.9, dtype=np.float32)
    assert behavioural_entropy(same) == 0.0
    spread = np.repeat(np.array([[-0.9], [0.0], [0.9]], dtype=np.float32), 3, axis=0)
    spread = np.repeat(spread, 50, axis=1)
    assert behavioural_entropy(spread) == pytest.approx(1.0)


def test_consensus_is_fitness_weighted_mean() -> None:
    s = np.array([[1.0, -1.0], [0.5, 0.5], [-1.0, 0.0]], dtype=np.float32)
    w = np.array([2.0, 1.0, -1.0])
    expected = [(2 * 1 + 0.5 + 1.0) / 4, (2 * -1 + 0.5 - 0.0) / 4]
    np.testing.assert_allclose(consensus(s, w), expected)
    assert consensus(s[:, 0], w) == pytest.approx(expected[0])
    np.testing.assert_array_equal(consensus(s, np.zeros(3)), [0.0, 0.0])
    with pytest.raises(ValueError, match="do not match"):
        consensus(s, np.ones(2))
    with pytest.raises(ValueError, match="finite"):
        consensus(s, np.array([1.0, np.nan, 1.0]))


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
    r = rng.normal(0, 1e-3, size=64)
    ok = np.ones(64, dtype=bool)
    initial = [(w.copy(), b.copy()) for w, b in pop.layers]
    finetune_adam(pop, x, r, ok, config, bars_per_year=525_600)

    for agent in (0, 2):  # fresh agents: torch.optim.Adam from step 0 is the reference
        params = [torch.tensor(w[agent], requires_grad=True) for pair in initial for w in pair]
        opt = torch.optim.Adam(params, lr=1e-2)
        xt = torch.from_numpy(x)
        rt = torch.from_numpy(r)
        for _ in range(3):
            h = torch.tanh(xt @ params[0] + params[1])
            out = torch.tanh(h @ params[2] + params[3]).squeeze(-1).double()
            dp = torch.abs(torch.diff(out, prepend=torch.zeros(1, dtype=out.dtype)))
            g = out * rt - 10 / 1e4 * dp
            score = math.sqrt(525_600) * g.mean() / torch.sqrt(g.var() + 1e-12)
            loss = -(score - 1.0 * dp.mean())
            opt.zero_grad()
            loss.backward()
            opt.step()
        got = [a[agent] for pair in pop.layers for a in pair]
        for mine, ref in zip(got, params, strict=True):
            np.testing.assert_allclose(mine, ref.detach().numpy(), rtol=1e-4, atol=1e-5)
    assert pop.adam.step.tolist() == [3, 10, 3]
