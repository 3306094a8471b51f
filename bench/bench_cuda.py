"""GPU benchmarks of issue 13: colmena's CUDA twins next to torch CUDA, CuPy and the CPU core.

Run on a machine with a GPU and a CUDA build (bench/gpu_check.sh does both)::

    pytest bench/bench_cuda.py --benchmark-only --benchmark-json=out.json

Every row is skipped, with the reason, without a CUDA build or device; a peer is skipped when its
library is missing (torch without CUDA, no CuPy). Groups, each in the same run:

- ``swarm``: 100 agents x (32-64-64-1), tanh, over 1,000,000 steps (device in, device out);
  peer torch CUDA ``baddbmm`` on the stacked weights; the CPU core on 100,000 steps (its
  ``extra_info`` scales it to the same work).
- ``vae``: the encoder 64 -> 128 -> 64 -> mu(16) (relu) at batch 1 and 65,536; peer torch CUDA.
- ``ffd``: FFD of 10^7 points with a 1,000-weight window; peers CuPy ``cupyx.scipy.signal
  .oaconvolve`` and the CPU core.
- ``generation``: one generation's evaluation on a year of minute bars (525,600 decision states
  of 32 features, 100 agents of 32-32-32-1): the forward pass and the population's proxy scores
  (colmena.model.device.generation_scores) on the device; peers: torch CUDA (baddbmm and the same
  score in torch) and the CPU core (Swarm.forward and proxy_scores).

Each row stores in ``extra_info`` what it did (``flop``, ``bytes``: the minimum traffic) so the
report can set the measured time against the device's FLOP and memory-bandwidth limits
(bench/gpu_check.sh prints them for an H200: 67 TFLOP/s FP32, 4.8 TB/s HBM3e).
"""

from __future__ import annotations

import itertools
import os
from typing import Any

import numpy as np
import pytest

from colmena.features.fractional_diff import fracdiff as cpu_fracdiff
from colmena.features.fractional_diff import fracdiff_weights
from colmena.model import device as dv
from colmena.model.nn import Swarm, VAEEncoder

REASON = dv.cuda_unavailable_reason()
if REASON is not None and os.environ.get("COLMENA_REQUIRE_GPU") == "1":
    raise RuntimeError(f"COLMENA_REQUIRE_GPU=1 but the GPU benchmarks cannot run: {REASON}")
pytestmark = pytest.mark.skipif(REASON is not None, reason=f"no GPU run: {REASON}")

N_AGENTS = 100
SWARM_SIZES = [32, 64, 64, 1]
SWARM_STEPS = 1_000_000
CPU_SWARM_STEPS = 100_000
VAE_SIZES = [64, 128, 64]
LATENT = 16
FFD_POINTS = 10_000_000
FFD_WINDOW = 1_000
YEAR_OF_MINUTES = 525_600
GEN_SIZES = [32, 32, 32, 1]


def macs(sizes: list[int]) -> int:
    return sum(a * b for a, b in itertools.pairwise(sizes))


def make_layers(rng: np.random.Generator, sizes: list[int], lead: tuple[int, ...]) -> list[Any]:
    out = []
    for n_in, n_out in itertools.pairwise(sizes):
        w = rng.uniform(-1, 1, (*lead, n_in, n_out)) / np.sqrt(n_in)
        b = rng.uniform(-0.1, 0.1, (*lead, n_out))
        out.append((w.astype(np.float32), b.astype(np.float32)))
    return out


def torch_cuda() -> Any:
    torch = pytest.importorskip("torch", reason="torch is not installed")
    if not torch.cuda.is_available():
        pytest.skip("torch has no CUDA (a CPU wheel): the torch CUDA peer cannot run")
    return torch


def cupy_module() -> Any:
    return pytest.importorskip("cupy", reason="CuPy is not installed: the CuPy peer cannot run")


def torch_swarm(torch: Any, layers: list[Any], x: Any) -> Any:
    h = x.unsqueeze(0).expand(layers[0][0].shape[0], -1, -1)
    for w, b in layers:
        h = torch.tanh(torch.baddbmm(b.unsqueeze(1), h, w))  # hidden and output layers: tanh
    return h.squeeze(-1)


# ---------------------------------------------------------------- swarm
@pytest.fixture(scope="module")
def swarm_case() -> tuple[list[Any], np.ndarray]:
    rng = np.random.default_rng(0)
    layers = make_layers(rng, SWARM_SIZES, (N_AGENTS,))
    x = rng.standard_normal((SWARM_STEPS, SWARM_SIZES[0])).astype(np.float32)
    return layers, x


@pytest.mark.benchmark(group="swarm")
def test_colmena_cuda_swarm(benchmark: Any, swarm_case: tuple[list[Any], np.ndarray]) -> None:
    layers, x = swarm_case
    swarm = dv.CudaSwarm(layers)
    xd = dv.to_device(x)

    def run() -> Any:
        out = swarm.forward(xd)
        dv.synchronize()
        return out

    out = benchmark(run)
    flop = 2 * N_AGENTS * macs(SWARM_SIZES) * SWARM_STEPS
    benchmark.extra_info.update(
        flop=flop, bytes=x.nbytes + 4 * N_AGENTS * SWARM_STEPS, steps=SWARM_STEPS
    )
    # the same bits as the CPU core (checked on a slice, the full CPU run is the next row's)
    np.testing.assert_array_equal(dv.host_copy(out)[:, :2000], Swarm(layers).forward(x[:2000]))


@pytest.mark.benchmark(group="swarm")
def test_peer_torch_cuda_swarm_baddbmm(
    benchmark: Any, swarm_case: tuple[list[Any], np.ndarray]
) -> None:
    torch = torch_cuda()
    layers, x = swarm_case
    tl = [(torch.from_numpy(w).cuda(), torch.from_numpy(b).cuda()) for w, b in layers]
    xt = torch.from_numpy(x).cuda()

    def run() -> Any:
        with torch.no_grad():
            out = torch_swarm(torch, tl, xt)
        torch.cuda.synchronize()
        return out

    out = benchmark(run)
    benchmark.extra_info.update(flop=2 * N_AGENTS * macs(SWARM_SIZES) * SWARM_STEPS)
    np.testing.assert_allclose(
        out[:, :2000].cpu().numpy(), Swarm(layers).forward(x[:2000]), rtol=0, atol=1e-4
    )


@pytest.mark.benchmark(group="swarm")
def test_peer_cpu_core_swarm_100k_steps(
    benchmark: Any, swarm_case: tuple[list[Any], np.ndarray]
) -> None:
    layers, x = swarm_case
    swarm = Swarm(layers)
    xs = np.ascontiguousarray(x[:CPU_SWARM_STEPS])
    benchmark.pedantic(swarm.forward, args=(xs,), rounds=3, iterations=1)
    benchmark.extra_info.update(
        flop=2 * N_AGENTS * macs(SWARM_SIZES) * CPU_SWARM_STEPS,
        scale_to_1m_steps=SWARM_STEPS / CPU_SWARM_STEPS,
    )


# ---------------------------------------------------------------- VAE encoder
@pytest.fixture(scope="module")
def vae_case() -> tuple[list[Any], Any, Any]:
    rng = np.random.default_rng(2)
    trunk = [(w, b) for w, b in make_layers(rng, VAE_SIZES, ())]
    mu = make_layers(rng, [VAE_SIZES[-1], LATENT], ())[0]
    logvar = make_layers(rng, [VAE_SIZES[-1], LATENT], ())[0]
    return trunk, mu, logvar


@pytest.mark.benchmark(group="vae")
@pytest.mark.parametrize("batch", [1, 65_536])
def test_colmena_cuda_vae(benchmark: Any, vae_case: tuple[Any, Any, Any], batch: int) -> None:
    trunk, mu, logvar = vae_case
    enc = dv.CudaVAEEncoder(trunk, mu, logvar, "relu")
    x = np.random.default_rng(3).standard_normal((batch, VAE_SIZES[0])).astype(np.float32)
    xd = dv.to_device(x)

    def run() -> Any:
        out = enc.encode(xd, return_logvar=True)
        dv.synchronize()
        return out

    got_mu, _ = benchmark(run)
    benchmark.extra_info.update(flop=2 * batch * (macs(VAE_SIZES) + 2 * VAE_SIZES[-1] * LATENT))
    cpu = VAEEncoder(trunk, mu, logvar, "relu")
    np.testing.assert_array_equal(dv.host_copy(got_mu)[:256], cpu.encode(x[:256]))


@pytest.mark.benchmark(group="vae")
@pytest.mark.parametrize("batch", [1, 65_536])
def test_peer_torch_cuda_vae(benchmark: Any, vae_case: tuple[Any, Any, Any], batch: int) -> None:
    torch = torch_cuda()
    trunk, mu, logvar = vae_case
    tt = [(torch.from_numpy(w).cuda(), torch.from_numpy(b).cuda()) for w, b in trunk]
    tmu = [torch.from_numpy(a).cuda() for a in mu]
    tlv = [torch.from_numpy(a).cuda() for a in logvar]
    x = torch.from_numpy(
        np.random.default_rng(3).standard_normal((batch, VAE_SIZES[0])).astype(np.float32)
    ).cuda()

    def run() -> Any:
        with torch.no_grad():
            h = x
            for w, b in tt:
                h = torch.relu(torch.addmm(b, h, w))
            out = (torch.addmm(tmu[1], h, tmu[0]), torch.addmm(tlv[1], h, tlv[0]))
        torch.cuda.synchronize()
        return out

    benchmark(run)


# ---------------------------------------------------------------- FracDiff
@pytest.fixture(scope="module")
def ffd_series() -> np.ndarray:
    return np.cumsum(np.random.default_rng(4).standard_normal(FFD_POINTS)) * 1e-3 + 10.0


@pytest.mark.benchmark(group="ffd")
@pytest.mark.parametrize("method", ["auto", "direct"])
def test_colmena_cuda_ffd(benchmark: Any, ffd_series: np.ndarray, method: str) -> None:
    from colmena import _core

    if method == "auto" and not _core.cuda_has_cufft():
        pytest.skip("this CUDA build has no cuFFT: 'auto' would run the direct kernel")
    xd = dv.to_device(ffd_series)

    def run() -> Any:
        out = dv.fracdiff(xd, 0.4, window=FFD_WINDOW, method=method)  # type: ignore[arg-type]
        dv.synchronize()
        return out

    out = benchmark(run)
    benchmark.extra_info.update(
        flop=2 * FFD_WINDOW * (FFD_POINTS - FFD_WINDOW + 1), bytes=2 * 8 * FFD_POINTS
    )
    head = dv.host_copy(out)[:100_000]
    expected = cpu_fracdiff(ffd_series[: 100_000 + FFD_WINDOW - 1], 0.4, window=FFD_WINDOW)
    w = fracdiff_weights(0.4, window=FFD_WINDOW)
    tol = 1e-9 * float(np.abs(w).sum()) * float(np.abs(ffd_series).max())
    np.testing.assert_allclose(head, expected, rtol=0, atol=tol)


@pytest.mark.benchmark(group="ffd")
def test_peer_cupy_oaconvolve_ffd(benchmark: Any, ffd_series: np.ndarray) -> None:
    cupy = cupy_module()
    from cupyx.scipy import signal  # type: ignore[import-not-found, unused-ignore]

    x = cupy.asarray(ffd_series)
    w = cupy.asarray(fracdiff_weights(0.4, window=FFD_WINDOW))

    def run() -> Any:
        out = signal.oaconvolve(x, w, mode="valid")
        cupy.cuda.get_current_stream().synchronize()
        return out

    benchmark(run)


@pytest.mark.benchmark(group="ffd")
def test_peer_cpu_core_ffd(benchmark: Any, ffd_series: np.ndarray) -> None:
    benchmark.pedantic(
        cpu_fracdiff, args=(ffd_series, 0.4), kwargs={"window": FFD_WINDOW}, rounds=3
    )


# ---------------------------------------------------------------- one generation
@pytest.fixture(scope="module")
def generation_case() -> dict[str, Any]:
    rng = np.random.default_rng(5)
    return {
        "layers": make_layers(rng, GEN_SIZES, (N_AGENTS,)),
        "x": rng.standard_normal((YEAR_OF_MINUTES, GEN_SIZES[0])).astype(np.float32),
        "r": rng.normal(0, 1e-3, YEAR_OF_MINUTES),
        "tradable": np.ones(YEAR_OF_MINUTES, dtype=np.uint8),
        "kwargs": {"cost": 12e-4, "long_only": False, "periods_per_year": float(YEAR_OF_MINUTES)},
    }


@pytest.mark.benchmark(group="generation")
def test_colmena_cuda_generation(benchmark: Any, generation_case: dict[str, Any]) -> None:
    c = generation_case
    swarm = dv.CudaSwarm(c["layers"])
    xd, rd, td = dv.to_device(c["x"]), dv.to_device(c["r"]), dv.to_device(c["tradable"])

    def run() -> Any:
        _signals, scores = dv.generation_scores(swarm, xd, rd, td, **c["kwargs"])
        dv.synchronize()
        return scores

    scores = benchmark(run)
    benchmark.extra_info.update(flop=2 * N_AGENTS * macs(GEN_SIZES) * YEAR_OF_MINUTES)
    cpu_signals = Swarm(c["layers"]).forward(c["x"])
    expected = dv.proxy_scores(cpu_signals, c["r"], c["tradable"], **c["kwargs"])
    np.testing.assert_allclose(dv.host_copy(scores), expected, rtol=1e-9, atol=1e-12)


@pytest.mark.benchmark(group="generation")
def test_peer_torch_cuda_generation(benchmark: Any, generation_case: dict[str, Any]) -> None:
    torch = torch_cuda()
    c = generation_case
    tl = [(torch.from_numpy(w).cuda(), torch.from_numpy(b).cuda()) for w, b in c["layers"]]
    x = torch.from_numpy(c["x"]).cuda()
    r = torch.from_numpy(c["r"]).cuda()
    cost = c["kwargs"]["cost"]
    scale = float(np.sqrt(c["kwargs"]["periods_per_year"]))

    def run() -> Any:
        with torch.no_grad():
            p = torch_swarm(torch, tl, x).to(torch.float64)
            dp = torch.abs(torch.diff(p, dim=1, prepend=torch.zeros_like(p[:, :1])))
            g = p * r - cost * dp
            out = scale * g.mean(dim=1) / torch.sqrt(g.var(dim=1) + 1e-12)
        torch.cuda.synchronize()
        return out

    benchmark(run)


@pytest.mark.benchmark(group="generation")
def test_peer_cpu_core_generation(benchmark: Any, generation_case: dict[str, Any]) -> None:
    c = generation_case
    swarm = Swarm(c["layers"])

    def run() -> Any:
        return dv.proxy_scores(swarm.forward(c["x"]), c["r"], c["tradable"], **c["kwargs"])

    benchmark.pedantic(run, rounds=2, iterations=1)
