"""Swarm and VAE-encoder forward passes against torch and NumPy peers, same weights, same run.

Run: ``pytest bench/test_bench_nn.py --benchmark-only``. The swarm is the production shape:
100 agents of 32 -> 64 -> 64 -> 1 (tanh); the encoder 64 -> 128 -> 64 -> mu(16) (relu). The
series rows store the achieved GFLOP/s (2 flops per multiply-add) in ``extra_info``. Peers use
torch's default thread count (all cores), as colmena does.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest

from colmena.model.nn import Swarm, VAEEncoder

N_AGENTS = 100
SWARM_SIZES = [32, 64, 64, 1]
N_STEPS = 1_000
VAE_SIZES = [64, 128, 64]
LATENT = 16
ATOL = 1e-5

SWARM_FLOPS_PER_STEP = 2 * N_AGENTS * sum(a * b for a, b in itertools.pairwise(SWARM_SIZES))


def _layers(rng: np.random.Generator, sizes: list[int], lead: tuple[int, ...]) -> list[Any]:
    out = []
    for n_in, n_out in itertools.pairwise(sizes):
        w = rng.uniform(-1, 1, (*lead, n_in, n_out)) / np.sqrt(n_in)
        b = rng.uniform(-0.1, 0.1, (*lead, n_out))
        out.append((w.astype(np.float32), b.astype(np.float32)))
    return out


@pytest.fixture(scope="module")
def swarm_layers() -> list[Any]:
    return _layers(np.random.default_rng(0), SWARM_SIZES, (N_AGENTS,))


@pytest.fixture(scope="module")
def states() -> np.ndarray:
    return np.random.default_rng(1).standard_normal((N_STEPS, SWARM_SIZES[0])).astype(np.float32)


@pytest.fixture(scope="module")
def vae_weights() -> tuple[list[Any], Any]:
    rng = np.random.default_rng(2)
    return _layers(rng, VAE_SIZES, ()), _layers(rng, [VAE_SIZES[-1], LATENT], ())[0]


@pytest.fixture(scope="module")
def vae_batch() -> np.ndarray:
    return np.random.default_rng(3).standard_normal((1024, VAE_SIZES[0])).astype(np.float32)


def record_gflops(benchmark: Any, flops: float) -> None:
    if benchmark.stats is not None:
        benchmark.extra_info["GFLOP/s"] = round(flops / benchmark.stats.stats.median / 1e9, 1)


# ---------------------------------------------------------------- peers
def torch_swarm(torch: Any, layers: list[Any]) -> Any:
    weights = [(torch.from_numpy(w), torch.from_numpy(b).unsqueeze(1)) for w, b in layers]

    def forward(x: Any) -> Any:  # x [n_agents, n_rows, n_features] (an expanded view)
        with torch.inference_mode():
            h = x
            for w, b in weights:
                h = torch.tanh(torch.baddbmm(b, h, w))
            return h[..., 0]

    return forward


def numpy_swarm_single(layers: list[Any]) -> Any:
    def forward(x: np.ndarray) -> np.ndarray:
        h = x
        for w, b in layers:
            h = np.tanh(np.matmul(h[..., None, :], w)[..., 0, :] + b)
        return h[:, 0]

    return forward


def torch_vae(torch: Any, layers: list[Any], mu: Any) -> Any:
    modules: list[Any] = []
    for w, b in layers:
        linear = torch.nn.Linear(*w.shape)
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(w.T.copy()))
            linear.bias.copy_(torch.from_numpy(b))
        modules += [linear, torch.nn.ReLU()]
    head = torch.nn.Linear(*mu[0].shape)
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(mu[0].T.copy()))
        head.bias.copy_(torch.from_numpy(mu[1]))
    net = torch.nn.Sequential(*modules, head).eval()

    def encode(x: Any) -> Any:
        with torch.inference_mode():
            return net(x)

    return encode


def numpy_vae(layers: list[Any], mu: Any) -> Any:
    def encode(x: np.ndarray) -> np.ndarray:
        h = x
        for w, b in layers:
            h = np.maximum(h @ w + b, 0)
        return np.asarray(h @ mu[0] + mu[1])

    return encode


# ---------------------------------------------------------------- swarm, one shared state
GROUP_SINGLE = "swarm 100 x (32-64-64-1) tanh, one state"


@pytest.mark.benchmark(group=GROUP_SINGLE)
def test_colmena_swarm_single_state(benchmark: Any, swarm_layers: Any, states: Any) -> None:
    swarm = Swarm(swarm_layers)
    x = states[0]
    got = benchmark(swarm.forward, x)
    expected = numpy_swarm_single(swarm_layers)(x.astype(np.float64))
    np.testing.assert_allclose(got, expected, atol=ATOL)


@pytest.mark.benchmark(group=GROUP_SINGLE)
def test_peer_torch_baddbmm_single_state(benchmark: Any, swarm_layers: Any, states: Any) -> None:
    torch = pytest.importorskip("torch")
    forward = torch_swarm(torch, swarm_layers)
    x = torch.from_numpy(states[:1]).unsqueeze(0).expand(N_AGENTS, 1, -1)
    benchmark(forward, x)


@pytest.mark.benchmark(group=GROUP_SINGLE)
def test_peer_numpy_matmul_single_state(benchmark: Any, swarm_layers: Any, states: Any) -> None:
    benchmark(numpy_swarm_single(swarm_layers), states[0])


# ---------------------------------------------------------------- swarm over a series
GROUP_SERIES = "swarm 100 x (32-64-64-1) tanh, 1000 steps"


@pytest.mark.benchmark(group=GROUP_SERIES)
def test_colmena_swarm_series(benchmark: Any, swarm_layers: Any, states: Any) -> None:
    swarm = Swarm(swarm_layers)
    got = benchmark.pedantic(swarm.forward, args=(states,), rounds=30, warmup_rounds=2)
    record_gflops(benchmark, SWARM_FLOPS_PER_STEP * N_STEPS)
    single = numpy_swarm_single(swarm_layers)(states[-1].astype(np.float64))
    np.testing.assert_allclose(got[:, -1], single, atol=ATOL)


@pytest.mark.benchmark(group=GROUP_SERIES)
def test_peer_torch_baddbmm_series(benchmark: Any, swarm_layers: Any, states: Any) -> None:
    torch = pytest.importorskip("torch")
    forward = torch_swarm(torch, swarm_layers)
    x = torch.from_numpy(states).unsqueeze(0).expand(N_AGENTS, -1, -1)
    benchmark.pedantic(forward, args=(x,), rounds=15, warmup_rounds=2)
    record_gflops(benchmark, SWARM_FLOPS_PER_STEP * N_STEPS)


# ---------------------------------------------------------------- VAE encoder
GROUP_VAE_1 = "vae encoder 64-128-64-mu16 relu, batch 1"
GROUP_VAE_1024 = "vae encoder 64-128-64-mu16 relu, batch 1024"


@pytest.mark.benchmark(group=GROUP_VAE_1)
def test_colmena_vae_encode_batch_1(benchmark: Any, vae_weights: Any, vae_batch: Any) -> None:
    encoder = VAEEncoder(*vae_weights)
    x = vae_batch[:1]
    got = benchmark(encoder.encode, x)
    np.testing.assert_allclose(got, numpy_vae(*vae_weights)(x.astype(np.float64)), atol=ATOL)


@pytest.mark.benchmark(group=GROUP_VAE_1)
def test_peer_numpy_vae_batch_1(benchmark: Any, vae_weights: Any, vae_batch: Any) -> None:
    benchmark(numpy_vae(*vae_weights), vae_batch[:1])


@pytest.mark.benchmark(group=GROUP_VAE_1)
def test_peer_torch_vae_batch_1(benchmark: Any, vae_weights: Any, vae_batch: Any) -> None:
    torch = pytest.importorskip("torch")
    benchmark(torch_vae(torch, *vae_weights), torch.from_numpy(vae_batch[:1]))


@pytest.mark.benchmark(group=GROUP_VAE_1024)
def test_colmena_vae_encode_batch_1024(benchmark: Any, vae_weights: Any, vae_batch: Any) -> None:
    encoder = VAEEncoder(*vae_weights)
    got = benchmark(encoder.encode, vae_batch)
    flops = 2 * vae_batch.shape[0] * sum(a * b for a, b in itertools.pairwise([*VAE_SIZES, LATENT]))
    record_gflops(benchmark, flops)
    np.testing.assert_allclose(
        got, numpy_vae(*vae_weights)(vae_batch.astype(np.float64)), atol=ATOL
    )


@pytest.mark.benchmark(group=GROUP_VAE_1024)
def test_peer_torch_vae_batch_1024(benchmark: Any, vae_weights: Any, vae_batch: Any) -> None:
    torch = pytest.importorskip("torch")
    benchmark(torch_vae(torch, *vae_weights), torch.from_numpy(vae_batch))
    flops = 2 * vae_batch.shape[0] * sum(a * b for a, b in itertools.pairwise([*VAE_SIZES, LATENT]))
    record_gflops(benchmark, flops)


@pytest.mark.benchmark(group=GROUP_VAE_1024)
def test_peer_numpy_vae_batch_1024(benchmark: Any, vae_weights: Any, vae_batch: Any) -> None:
    benchmark(numpy_vae(*vae_weights), vae_batch)
