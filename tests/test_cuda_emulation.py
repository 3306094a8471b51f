"""The CUDA kernels' arithmetic, run on the host, against the CPU core bit for bit.

The fused swarm / VAE kernels compute every output with ``dense_unit`` and the activations of
``cuda/activations.cuh``, written once for nvcc and for a plain C++ compiler. Here that header is
compiled by the host compiler (``-ffp-contract=off``, as the CPU kernels) together with the rows
kernel's loop (``tests/cuda_emulation.cpp``), and its outputs must equal the CPU core's
(``colmena.Swarm``, ``colmena.VAEEncoder``) bit for bit. This checks, on any machine, that the GPU
twins repeat the CPU's operation order; what it cannot check is the device itself (nvcc's
intrinsics and the launch code): tests/test_cuda_ops.py does that on a GPU.
"""

from __future__ import annotations

import ctypes
import itertools
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from colmena import _core
from colmena.model.nn import Swarm, VAEEncoder

ROOT = Path(__file__).resolve().parents[1]
CXX = shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")
ACTIVATIONS = {"identity": 0, "tanh": 1, "relu": 2, "gelu": 3}

pytestmark = pytest.mark.skipif(CXX is None, reason="no C++ compiler (c++, g++ or clang++) on PATH")

FloatPtr = ctypes.POINTER(ctypes.c_float)


@pytest.fixture(scope="module")
def emu(tmp_path_factory: pytest.TempPathFactory) -> ctypes.CDLL:
    assert CXX is not None
    lib = tmp_path_factory.mktemp("emu") / "libcuda_emulation.so"
    subprocess.run(
        [
            CXX, "-std=c++20", "-O2", "-ffp-contract=off", "-fPIC", "-shared",
            "-I", str(ROOT / "cpp" / "include"), "-I", str(ROOT / "cuda"),
            str(ROOT / "tests" / "cuda_emulation.cpp"), "-o", str(lib),
        ],
        check=True,
        timeout=300,
    )  # fmt: skip
    return ctypes.CDLL(str(lib))


def ptr(a: np.ndarray) -> FloatPtr:
    return a.ctypes.data_as(FloatPtr)


def emulate(
    emu: ctypes.CDLL,
    layers: list[tuple[np.ndarray, np.ndarray]],
    acts: list[int],
    heads: list[int],
    x: np.ndarray,
) -> list[np.ndarray]:
    n_nets = layers[0][0].shape[0]
    n_rows = x.shape[0]
    n = len(layers)
    ints = ctypes.c_int * n
    ws = [np.ascontiguousarray(w) for w, _ in layers]
    bs = [np.ascontiguousarray(b) for _, b in layers]
    outs = [
        np.full((n_nets, n_rows, w.shape[2]), np.nan, np.float32)
        for w, h in zip(ws, heads, strict=True)
        if h >= 0
    ]
    rc = emu.emu_forward(
        n,
        ints(*[w.shape[1] for w in ws]),
        ints(*[w.shape[2] for w in ws]),
        ints(*acts),
        ints(*heads),
        (FloatPtr * n)(*[ptr(w) for w in ws]),
        (FloatPtr * n)(*[ptr(b) for b in bs]),
        n_nets,
        ptr(np.ascontiguousarray(x)),
        ctypes.c_longlong(n_rows),
        (FloatPtr * len(outs))(*[ptr(o) for o in outs]),
    )
    assert rc == 0
    return outs


def make_layers(
    rng: np.random.Generator, sizes: list[int], n_nets: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    out = []
    for n_in, n_out in itertools.pairwise(sizes):
        w = rng.uniform(-1, 1, (n_nets, n_in, n_out)) * (2.0 / np.sqrt(n_in))
        b = rng.uniform(-0.5, 0.5, (n_nets, n_out))
        out.append((w.astype(np.float32), b.astype(np.float32)))
    return out


def cpu_levels() -> list[str]:
    return list(_core.build_info()["simd_supported"])


def at_every_level(fn: Callable[[], np.ndarray]) -> list[np.ndarray]:
    """fn() at every SIMD level this CPU runs (the CPU core promises the same bits at each)."""
    selected = _core.build_info()["simd_selected"]
    results = []
    try:
        for level in cpu_levels():
            _core.set_simd_level(level)
            results.append(fn())
    finally:
        _core.set_simd_level(selected)
    return results


@pytest.mark.parametrize("activation", list(ACTIVATIONS))
def test_activations_equal_the_cpu_kernels_bit_for_bit(emu: ctypes.CDLL, activation: str) -> None:
    """A 1 -> 1 layer with W = 1, b = 0 is the activation itself on the CPU (narrow path:
    x * 1 + 0 + ... + 0 + 0)."""
    rng = np.random.default_rng(0)
    x = np.concatenate(
        [
            np.linspace(-12, 12, 200_001, dtype=np.float32),
            rng.normal(0, 3, 100_000).astype(np.float32),
            np.float32([0.5, 1.0, 4.0, 9.0, 1e-30, 1e-45, 3e38, -3e38, np.inf, -np.inf]),
        ]
    )
    x = x[x != 0]  # -0 + 0 is +0: the identity would differ in the sign of zero only
    layers = [(np.ones((1, 1, 1), np.float32), np.zeros((1, 1), np.float32))]
    cpu = Swarm(layers)  # the output layer is tanh; use the core's MLP stack for the others
    if activation == "tanh":
        expected = at_every_level(lambda: cpu.forward(x[:, None])[0])
    else:
        from colmena.model.nn import MLP

        mlp = MLP([(layers[0][0][0], layers[0][1][0])], "tanh", activation)  # type: ignore[arg-type]
        expected = at_every_level(lambda: mlp.forward(x[:, None])[:, 0])
    got = np.empty_like(x)
    emu.emu_activate(ACTIVATIONS[activation], ptr(x), ptr(got), ctypes.c_longlong(x.size))
    for e in expected:
        np.testing.assert_array_equal(got, e)


@settings(
    max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(
    widths=st.lists(st.integers(1, 70), min_size=1, max_size=3),
    n_in=st.integers(1, 40),
    n_nets=st.integers(1, 5),
    n_rows=st.integers(1, 40),
    activation=st.sampled_from(list(ACTIVATIONS)),
    seed=st.integers(0, 2**32 - 1),
)
def test_swarm_rows_loop_equals_cpu_bit_for_bit(
    emu: ctypes.CDLL,
    widths: list[int],
    n_in: int,
    n_nets: int,
    n_rows: int,
    activation: str,
    seed: int,
) -> None:
    rng = np.random.default_rng(seed)
    sizes = [n_in, *widths, 1]
    layers = make_layers(rng, sizes, n_nets)
    x = rng.normal(0, 2, (n_rows, n_in)).astype(np.float32)
    acts = [ACTIVATIONS[activation]] * (len(layers) - 1) + [ACTIVATIONS["tanh"]]
    heads = [-1] * (len(layers) - 1) + [0]
    (got,) = emulate(emu, layers, acts, heads, x)
    expected = Swarm(layers, activation).forward(x)  # type: ignore[arg-type]
    np.testing.assert_array_equal(got[:, :, 0], expected)
    # one state alone (the live path) equals its row of the series, as on the CPU
    np.testing.assert_array_equal(Swarm(layers, activation).forward(x[0]), got[:, 0, 0])  # type: ignore[arg-type]


def test_issue_swarm_shape_equals_cpu_bit_for_bit(emu: ctypes.CDLL) -> None:
    """The benchmark's 100 x (32-64-64-1) swarm on 300 steps of real-looking inputs."""
    rng = np.random.default_rng(1)
    layers = make_layers(rng, [32, 64, 64, 1], 100)
    x = rng.normal(0, 1, (300, 32)).astype(np.float32)
    (got,) = emulate(emu, layers, [1, 1, 1], [-1, -1, 0], x)
    for expected in at_every_level(lambda: Swarm(layers, "tanh").forward(x)):
        np.testing.assert_array_equal(got[:, :, 0], expected)


@pytest.mark.parametrize("activation", list(ACTIVATIONS))
def test_every_register_width_equals_cpu_bit_for_bit(emu: ctypes.CDLL, activation: str) -> None:
    """Trunk widths 8, 16, 32, 64 and 128 (the register path, wide_layer) and 5, 48 (one
    dense_unit per output), before a narrow head."""
    rng = np.random.default_rng(7)
    sizes = [11, 8, 16, 5, 32, 64, 48, 128, 1]
    layers = make_layers(rng, sizes, 3)
    x = rng.normal(0, 2, (50, 11)).astype(np.float32)
    act = ACTIVATIONS[activation]
    (got,) = emulate(
        emu, layers, [act] * (len(layers) - 1) + [1], [-1] * (len(layers) - 1) + [0], x
    )
    for expected in at_every_level(lambda: Swarm(layers, activation).forward(x)):  # type: ignore[arg-type]
        np.testing.assert_array_equal(got[:, :, 0], expected)


@pytest.mark.parametrize("latent", [3, 8, 16])
@pytest.mark.parametrize("activation", list(ACTIVATIONS))
def test_vae_encoder_heads_equal_cpu_bit_for_bit(
    emu: ctypes.CDLL, latent: int, activation: str
) -> None:
    rng = np.random.default_rng(latent)
    trunk = make_layers(rng, [24, 64, 32], 1)
    mu, logvar = make_layers(rng, [32, latent], 1)[0], make_layers(rng, [32, latent], 1)[0]
    x = rng.normal(size=(257, 24)).astype(np.float32)
    layers = [*trunk, mu, logvar]
    act = ACTIVATIONS[activation]
    got_mu, got_lv = emulate(emu, layers, [act, act, 0, 0], [-1, -1, 0, 1], x)
    enc = VAEEncoder(
        [(w[0], b[0]) for w, b in trunk],
        (mu[0][0], mu[1][0]),
        (logvar[0][0], logvar[1][0]),
        activation,  # type: ignore[arg-type]
    )
    exp_mu, exp_lv = enc.encode(x, return_logvar=True)
    np.testing.assert_array_equal(got_mu[0], exp_mu)
    np.testing.assert_array_equal(got_lv[0], exp_lv)
