"""Genetic evolution of the agent swarm, with optional Adam fine-tuning.

Each agent is a small MLP (its own weights) mapping the market state at the close of a decision
bar to a signal ``s`` in [-1, 1], read as the target position, a signed fraction of equity (on a
spot market, where shorting is impossible, negative signals mean flat).

Fitness: the executor's own net result (documented formula). Every agent's signals at the
decision bars of an evaluation window are traded through the core's trading loop without risk
sizing (:func:`colmena.execution.simulate_targets`): next-open fills, fees, slippage, market
impact, volume-limited partial fills, borrow cost of shorts, the decision interval and the final
closing of the position, exactly as the backtest pays them. From the agent's equity ``E_d`` at
the end of each UTC day of the window (``E_0`` the starting cash)::

    r_d = E_d / E_{d-1} - 1
    fitness = mean(r) / std(r, ddof=1) * sqrt(365)

the annualised Sharpe ratio of daily net returns (Sharpe 1994; daily returns and calendar-day
annualisation as in :mod:`colmena.analysis.metrics`). An agent that never trades scores 0; an agent
that is always fully long scores the Sharpe ratio of buy-and-hold net of the same costs. The window
is drawn anew every generation from the training bars, so the fitness that drives selection is
never measured on one fixed window.

Genetic operators (Holland 1975; Goldberg 1989; for neural networks Montana & Davis 1989):
tournament selection (``tournament_size``), unit-wise uniform crossover (each output unit of each
layer, with its incoming weights and bias, comes from one parent), Gaussian mutation (each weight
with probability ``mutation_rate`` gets noise of ``mutation_scale`` times the layer's Glorot
standard deviation), and elitism (the ``elite`` best survive unchanged, keeping their ids).

System entropy (diversity). Every agent's signal at every decision bar is bucketed into short
(``s < -1/3``), flat or long (``s > 1/3``); the entropy of the population's distribution over
the three actions at a bar, divided by ``log 3``, is averaged over the window: 0 when all agents
act alike, 1 when their actions are spread evenly. It is recorded every generation.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from colmena.training.config import EvolutionConfig
from colmena.training.state import AdamMoments, GenerationStats, LineageRecord, TrainingState
from colmena.units import BPS_PER_UNIT, DAYS_PER_YEAR

__all__ = [
    "AdamState",
    "EvolutionConfig",
    "GenerationStats",
    "LineageRecord",
    "Population",
    "behavioural_entropy",
    "daily_sharpe",
]

Layers = list[tuple[NDArray[np.float32], NDArray[np.float32]]]


def daily_sharpe(day_equity: NDArray[np.float64], initial_equity: float) -> NDArray[np.float64]:
    """Annualised Sharpe ratio of daily returns for every row (the fitness formula).

    Parameters
    ----------
    day_equity : numpy.ndarray of float64, shape [n_agents, n_days]
        Equity at the end of each day, quote currency.
    initial_equity : float
        Equity before the first day (> 0).

    Returns
    -------
    numpy.ndarray of float64, shape [n_agents]
        ``mean(r) / std(r, ddof=1) * sqrt(365)``; 0 for a row whose returns do not vary (an
        agent that never traded) or with fewer than two days; -1000 for a row whose equity
        reached 0.
    """
    e = np.asarray(day_equity, dtype=np.float64)
    if e.ndim != 2:
        raise ValueError(f"day_equity must be [n_agents, n_days], got shape {e.shape}")
    k = e.shape[0]
    if e.shape[1] < 2:
        return np.zeros(k)
    previous = np.concatenate([np.full((k, 1), initial_equity), e[:, :-1]], axis=1)
    bankrupt = np.any(e <= 0.0, axis=1)
    r = np.divide(e, previous, out=np.zeros_like(e), where=previous > 0) - 1.0
    mean = r.mean(axis=1)
    std = r.std(axis=1, ddof=1)
    varies = std > 1e-12
    sharpe = np.where(varies, mean / np.where(varies, std, 1.0) * math.sqrt(DAYS_PER_YEAR), 0.0)
    result: NDArray[np.float64] = np.where(bankrupt, -1000.0, sharpe)
    return result


def behavioural_entropy(signals: NDArray[np.float32]) -> float:
    """Mean normalized entropy of the agents' short/flat/long actions per bar, in [0, 1].

    Parameters
    ----------
    signals : numpy.ndarray of float32, shape [n_agents, n_bars]
    """
    n_agents = signals.shape[0]
    long = (signals > 1.0 / 3.0).sum(axis=0)
    short = (signals < -1.0 / 3.0).sum(axis=0)
    counts = np.stack([short, n_agents - long - short, long]).astype(np.float64) / n_agents
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(counts > 0, -counts * np.log(counts), 0.0)
    return float(terms.sum(axis=0).mean() / math.log(3.0))


@dataclass
class AdamState:
    """Per-agent Adam moments (Kingma & Ba 2015) for stacked parameters.

    ``exp_avg[i]`` / ``exp_avg_sq[i]`` are [W, b] pairs shaped like the swarm's layer ``i``
    ([n_agents, in, out] and [n_agents, out]); ``step`` is int64 [n_agents], so each agent's bias
    correction follows its own number of updates (a newborn agent starts at 0).
    """

    exp_avg: list[list[NDArray[np.float32]]]
    exp_avg_sq: list[list[NDArray[np.float32]]]
    step: NDArray[np.int64]

    @classmethod
    def zeros(cls, layers: Layers) -> AdamState:
        return cls(
            exp_avg=[[np.zeros_like(w), np.zeros_like(b)] for w, b in layers],
            exp_avg_sq=[[np.zeros_like(w), np.zeros_like(b)] for w, b in layers],
            step=np.zeros(layers[0][0].shape[0], dtype=np.int64),
        )

    def take(self, rows: NDArray[np.int64], fresh: NDArray[np.bool_]) -> AdamState:
        """State for a new population: agent k gets old agent ``rows[k]``'s moments, or zeros
        where ``fresh[k]`` (a newborn)."""

        def pick(a: NDArray[np.float32]) -> NDArray[np.float32]:
            out: NDArray[np.float32] = a[rows].copy()
            out[fresh] = 0.0
            return out

        step = self.step[rows].copy()
        step[fresh] = 0
        return AdamState(
            exp_avg=[[pick(w), pick(b)] for w, b in self.exp_avg],
            exp_avg_sq=[[pick(w), pick(b)] for w, b in self.exp_avg_sq],
            step=step,
        )

    def moments(self) -> AdamMoments:
        """A frozen copy for the training state (:class:`AdamMoments` copies writable arrays)."""
        return AdamMoments(
            exp_avg=tuple((w, b) for w, b in self.exp_avg),
            exp_avg_sq=tuple((w, b) for w, b in self.exp_avg_sq),
            step=self.step,
        )

    @classmethod
    def from_moments(cls, moments: AdamMoments) -> AdamState:
        """A writable copy of a training state's moments."""
        return cls(
            exp_avg=[[np.array(w), np.array(b)] for w, b in moments.exp_avg],
            exp_avg_sq=[[np.array(w), np.array(b)] for w, b in moments.exp_avg_sq],
            step=np.array(moments.step),
        )


@dataclass
class Population:
    """The evolving agents: stacked weights, ids, fitness, lineage and optional Adam state.

    Attributes
    ----------
    layers : list of (W, b)
        ``W`` float32 [n_agents, in, out], ``b`` float32 [n_agents, out]; the master copy that
        the core :class:`colmena.Swarm` is refreshed from (in place) after every generation.
    ids : numpy.ndarray of int64, shape [n_agents]
    fitness : numpy.ndarray of float64, shape [n_agents]
        Latest fitness (NaN before the first evaluation).
    lineage : list of LineageRecord
        Every agent ever created, in creation order.
    generation : int
        Reproductions so far (the lineage generation of the newest children).
    adam : AdamState or None
        Each agent's Adam state (with fine-tuning only).
    next_id : int
        Id of the next agent created.
    history : list of GenerationStats
        One record per scored generation.
    """

    layers: Layers
    ids: NDArray[np.int64]
    fitness: NDArray[np.float64]
    lineage: list[LineageRecord]
    generation: int = 0
    adam: AdamState | None = None
    next_id: int = 0
    history: list[GenerationStats] = field(default_factory=list)

    @classmethod
    def initial(
        cls, n_inputs: int, config: EvolutionConfig, rng: np.random.Generator
    ) -> Population:
        """Glorot-uniform weights and zero biases for ``config.agents`` agents."""
        widths = [n_inputs, *config.hidden, 1]
        layers: Layers = []
        for fan_in, fan_out in itertools.pairwise(widths):
            bound = math.sqrt(6.0 / (fan_in + fan_out))
            w = rng.uniform(-bound, bound, size=(config.agents, fan_in, fan_out))
            layers.append(
                (w.astype(np.float32), np.zeros((config.agents, fan_out), dtype=np.float32))
            )
        ids = np.arange(config.agents, dtype=np.int64)
        lineage = [LineageRecord(int(i), (), 0, "init", None) for i in ids]
        return cls(
            layers=layers,
            ids=ids,
            fitness=np.full(config.agents, np.nan),
            lineage=lineage,
            next_id=config.agents,
            adam=AdamState.zeros(layers) if config.finetune_steps > 0 else None,
        )

    @property
    def n_agents(self) -> int:
        return int(self.ids.shape[0])

    def record_fitness(self, fitness: NDArray[np.float64]) -> None:
        """Store the latest fitness and write it into the lineage records of current agents."""
        self.fitness = np.asarray(fitness, dtype=np.float64).copy()
        index = {rec.agent_id: k for k, rec in enumerate(self.lineage)}
        for agent_id, value in zip(self.ids.tolist(), self.fitness.tolist(), strict=True):
            k = index[agent_id]
            rec = self.lineage[k]
            self.lineage[k] = LineageRecord(
                rec.agent_id, rec.parent_ids, rec.generation, rec.operator, float(value)
            )

    def reproduce(self, config: EvolutionConfig, rng: np.random.Generator) -> None:
        """Replace the population by the next generation (elites, then bred children)."""
        n = self.n_agents
        fitness = np.nan_to_num(self.fitness, nan=-np.inf)
        order = np.argsort(-fitness, kind="stable")
        n_children = n - config.elite

        def tournament(size: int) -> NDArray[np.int64]:
            entrants = rng.integers(0, n, size=(size, config.tournament_size))
            best = np.argmax(fitness[entrants], axis=1)
            winners: NDArray[np.int64] = entrants[np.arange(size), best].astype(np.int64)
            return winners

        p1 = tournament(n_children)
        p2 = tournament(n_children)
        crossed = rng.random(n_children) < config.crossover_rate
        new_layers: Layers = []
        mutated_any = np.zeros(n_children, dtype=bool)
        widths = [self.layers[0][0].shape[1]] + [w.shape[2] for w, _ in self.layers]
        for (w, b), fan_in, fan_out in zip(self.layers, widths[:-1], widths[1:], strict=True):
            take_second = (rng.random((n_children, fan_out)) < 0.5) & crossed[:, None]
            cw = np.where(take_second[:, None, :], w[p2], w[p1])
            cb = np.where(take_second, b[p2], b[p1])
            sigma = config.mutation_scale * math.sqrt(2.0 / (fan_in + fan_out))
            mask_w = rng.random(cw.shape) < config.mutation_rate
            mask_b = rng.random(cb.shape) < config.mutation_rate
            cw = cw + mask_w * rng.normal(0.0, sigma, size=cw.shape)
            cb = cb + mask_b * rng.normal(0.0, sigma, size=cb.shape)
            mutated_any |= mask_w.any(axis=(1, 2)) | mask_b.any(axis=1)
            elite = order[: config.elite]
            new_layers.append(
                (
                    np.concatenate([w[elite], cw.astype(np.float32)]),
                    np.concatenate([b[elite], cb.astype(np.float32)]),
                )
            )
        next_generation = self.generation + 1
        child_ids = np.arange(self.next_id, self.next_id + n_children, dtype=np.int64)
        for k in range(n_children):
            parents: tuple[int, ...]
            if crossed[k]:
                parents = (int(self.ids[p1[k]]), int(self.ids[p2[k]]))
                operator = "crossover+mutation" if mutated_any[k] else "crossover"
            else:
                parents = (int(self.ids[p1[k]]),)
                operator = "mutation"
            self.lineage.append(
                LineageRecord(int(child_ids[k]), parents, next_generation, operator, None)
            )
        elite = order[: config.elite]
        if self.adam is not None:
            rows = np.concatenate([elite, p1]).astype(np.int64)
            fresh = np.concatenate([np.zeros(config.elite, bool), np.ones(n_children, bool)])
            self.adam = self.adam.take(rows, fresh)
        self.layers = new_layers
        self.ids = np.concatenate([self.ids[elite], child_ids])
        self.fitness = np.concatenate([self.fitness[elite], np.full(n_children, np.nan)])
        self.next_id += n_children
        self.generation = next_generation

    @classmethod
    def from_state(cls, state: TrainingState) -> Population:
        """The population of a training state, with writable copies of its arrays, as it was
        when the state was taken (after scoring generation ``state.generation``, before
        reproducing)."""
        return cls(
            layers=[(np.array(w), np.array(b)) for w, b in state.layers],
            ids=np.array(state.agent_ids),
            fitness=np.array(state.fitness),
            lineage=list(state.lineage),
            generation=max(state.generation - 1, 0),
            adam=None if state.adam is None else AdamState.from_moments(state.adam),
            next_id=state.next_agent_id,
            history=list(state.history),
        )


def finetune_adam(
    population: Population,
    inputs: NDArray[np.float32],
    next_returns: NDArray[np.float64],
    tradable: NDArray[np.bool_],
    config: EvolutionConfig,
    periods_per_year: float,
    *,
    cost_bps: float,
    long_only: bool,
) -> None:
    """Gradient fine-tuning of every agent with its own Adam state (torch, stacked weights).

    Maximizes a smooth proxy of the fitness at the decision bars: with ``p_k`` the agent's target
    at decision ``k`` (clamped at 0 when ``long_only``), ``r_k`` the log return from decision ``k``
    to decision ``k + 1`` and ``c = cost_bps / 1e4`` the one-way cost,
    ``g_k = p_k r_k - c |p_k - p_{k-1}|`` and the objective ``sqrt(A) * mean(g) / sqrt(var(g) +
    1e-12)`` (A = ``periods_per_year``), for ``config.finetune_steps`` steps, each agent on the same
    window ``inputs`` [n_decisions, n_inputs]. Partial fills and daily aggregation are left out
    of the proxy; the executor-based fitness of the next generation judges the result. Adam
    (Kingma & Ba 2015, lr ``finetune_learning_rate``, betas 0.9/0.999, eps 1e-8) runs per agent:
    the moments and the step count live in ``population.adam`` and follow the agent through
    generations. Updates ``population.layers`` in place.

    Raises
    ------
    ImportError
        Without torch.
    """
    import torch

    assert population.adam is not None
    activation = {"tanh": torch.tanh, "relu": torch.relu, "gelu": torch.nn.functional.gelu}[
        config.activation
    ]
    params = [
        (
            torch.from_numpy(w.copy()).requires_grad_(True),
            torch.from_numpy(b.copy()).requires_grad_(True),
        )
        for w, b in population.layers
    ]
    x = torch.from_numpy(np.ascontiguousarray(inputs))
    r = torch.from_numpy(np.where(tradable, next_returns, 0.0)).to(torch.float64)
    mask = torch.from_numpy(tradable)
    fee = cost_bps / BPS_PER_UNIT
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    adam = population.adam
    for _ in range(config.finetune_steps):
        h = x.unsqueeze(0).expand(population.n_agents, -1, -1)
        for i, (w, b) in enumerate(params):
            h = torch.baddbmm(b.unsqueeze(1), h, w)
            h = torch.tanh(h) if i == len(params) - 1 else activation(h)
        out = torch.clamp(h.squeeze(-1), min=0.0) if long_only else h.squeeze(-1)
        p = torch.where(mask, out, torch.zeros(())).to(torch.float64)
        dp = torch.abs(torch.diff(p, dim=1, prepend=torch.zeros(p.shape[0], 1, dtype=p.dtype)))
        g = p * r - fee * dp
        score = math.sqrt(periods_per_year) * g.mean(dim=1) / torch.sqrt(g.var(dim=1) + 1e-12)
        loss = -score.sum()
        for w, b in params:
            w.grad = None
            b.grad = None
        loss.backward()  # type: ignore[no-untyped-call]
        adam.step += 1
        t = torch.from_numpy(adam.step.astype(np.float64))
        with torch.no_grad():
            for i, pair in enumerate(params):
                for j, tensor in enumerate(pair):
                    grad = tensor.grad
                    assert grad is not None
                    m = torch.from_numpy(adam.exp_avg[i][j])
                    v = torch.from_numpy(adam.exp_avg_sq[i][j])
                    m.mul_(beta1).add_(grad, alpha=1 - beta1)
                    v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                    shape = (-1,) + (1,) * (tensor.dim() - 1)
                    c1 = (1 - beta1**t).reshape(shape).to(torch.float32)
                    c2 = (1 - beta2**t).reshape(shape).to(torch.float32)
                    tensor -= config.finetune_learning_rate * (m / c1) / (torch.sqrt(v / c2) + eps)
    population.layers = [(w.detach().numpy().copy(), b.detach().numpy().copy()) for w, b in params]
