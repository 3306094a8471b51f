"""The CUDA twins of the core against their CPU twins on the same inputs (faiss / ggml style).

GPU tests run only with a CUDA build (``COLMENA_CUDA=ON``) and a visible device; otherwise they
skip with the exact reason (``colmena.model.device.cuda_unavailable_reason()``). Set
``COLMENA_REQUIRE_GPU=1`` (bench/gpu_check.sh does) to make a missing device a failure instead.
They need neither CuPy nor torch: inputs go to the device through colmena's own
:class:`~colmena.model.device.DeviceNDArray`; the CuPy / torch interop tests skip without them.

Tolerances (cpp/include/colmena/device_ops.hpp): the forward passes repeat the CPU's float32
operations in the same order, so the tests expect the same bits; FracDiff 1e-9 times
``sum |w| * max |x|``; proxy scores 1e-9 relative.

The CPU-only tests at the end check the error paths every build has: a CUDA call in a build
without CUDA (or on a machine without a device) raises one clear error naming what is missing.
"""

from __future__ import annotations

import itertools
import os
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from colmena import _core
from colmena.cli import main
from colmena.features.fractional_diff import fracdiff as cpu_fracdiff
from colmena.features.fractional_diff import fracdiff_expanding as cpu_expanding
from colmena.features.fractional_diff import fracdiff_weights
from colmena.model import device as dv
from colmena.model.nn import MLP, Swarm, VAEEncoder
from fuzzing import fuzz_settings

REASON = dv.cuda_unavailable_reason()
REQUIRE_GPU = os.environ.get("COLMENA_REQUIRE_GPU") == "1"

if REASON is not None and REQUIRE_GPU:  # a device run must not skip silently
    raise RuntimeError(f"COLMENA_REQUIRE_GPU=1 but the GPU tests cannot run: {REASON}")

gpu = pytest.mark.skipif(REASON is not None, reason=f"no GPU run: {REASON}")
ACTIVATIONS = ("tanh", "relu", "gelu", "identity")
Layers = list[tuple[np.ndarray, np.ndarray]]


def make_layers(rng: np.random.Generator, sizes: list[int], n_agents: int | None) -> Layers:
    layers: Layers = []
    for n_in, n_out in itertools.pairwise(sizes):
        lead = () if n_agents is None else (n_agents,)
        w = rng.uniform(-1, 1, (*lead, n_in, n_out)) * (1.5 / np.sqrt(n_in))
        b = rng.uniform(-0.5, 0.5, (*lead, n_out))
        layers.append((w.astype(np.float32), b.astype(np.float32)))
    return layers


def on_device(x: np.ndarray) -> dv.DeviceNDArray:
    return dv.to_device(x)


host = dv.host_copy


# ---------------------------------------------------------------- swarm (GPU)
@gpu
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize(
    ("sizes", "n_rows"),
    [
        ([32, 64, 64, 1], 1),  # the live state: the state kernel
        ([32, 64, 64, 1], 5000),  # a series: the fused rows kernel
        ([7, 5, 1], 333),  # narrow layers, widths not multiples of 16
        ([20, 200, 1], 100),  # a width without a register path: dense_unit per output
        ([10, 300, 1], 100),  # wider than the rows kernel: the state kernel on a series
        ([11, 8, 16, 32, 64, 128, 1], 500),  # every register width
        ([3, 1], 64),
    ],
)
def test_swarm_forward_equals_cpu_bit_for_bit(
    activation: str, sizes: list[int], n_rows: int
) -> None:
    rng = np.random.default_rng(len(sizes) * 1000 + n_rows)
    layers = make_layers(rng, sizes, n_agents=9)
    x = rng.normal(0, 1.5, (n_rows, sizes[0])).astype(np.float32)
    cpu = Swarm(layers, activation)  # type: ignore[arg-type]
    gpu_swarm = dv.CudaSwarm(layers, activation)  # type: ignore[arg-type]
    expected = cpu.forward(x)
    got_host = gpu_swarm.forward(x)  # host in, host out
    got_device = host(gpu_swarm.forward(on_device(x)))  # device in, device out
    # The stated contract is 2e-6; the arithmetic is the CPU's, so the bits are expected.
    np.testing.assert_allclose(got_host, expected, rtol=0, atol=2e-6)
    np.testing.assert_array_equal(got_host, expected)
    np.testing.assert_array_equal(got_device, expected)


@gpu
def test_swarm_nan_row_spoils_only_its_column() -> None:
    rng = np.random.default_rng(3)
    layers = make_layers(rng, [6, 16, 1], n_agents=4)
    x = rng.normal(size=(100, 6)).astype(np.float32)
    x[17, 2] = np.nan
    got = dv.CudaSwarm(layers).forward(x)
    assert np.isnan(got[:, 17]).all()
    np.testing.assert_array_equal(
        np.delete(got, 17, axis=1), np.delete(Swarm(layers).forward(x), 17, axis=1)
    )


@gpu
def test_swarm_weights_round_trip_and_update_in_place() -> None:
    rng = np.random.default_rng(4)
    layers = make_layers(rng, [5, 12, 1], n_agents=3)
    swarm = dv.CudaSwarm(layers)
    address = swarm._core.storage_address
    for (w, b), (gw, gb) in zip(layers, swarm.get_weights(), strict=True):
        np.testing.assert_array_equal(gw, w)
        np.testing.assert_array_equal(gb, b)
    new = make_layers(rng, [5, 12, 1], n_agents=3)
    swarm.set_weights(new)
    assert swarm._core.storage_address == address
    x = rng.normal(size=(70, 5)).astype(np.float32)
    np.testing.assert_array_equal(swarm.forward(x), Swarm(new).forward(x))


@gpu
def test_mlp_shape_through_the_swarm_kernel_equals_cpu() -> None:
    """A one-network stack with a wide head (the MLP's path on the backend)."""
    rng = np.random.default_rng(5)
    layers = make_layers(rng, [10, 32, 1], n_agents=None)
    x = rng.normal(size=(300, 10)).astype(np.float32)
    stacked = [(w[None], b[None]) for w, b in layers]
    np.testing.assert_array_equal(
        dv.CudaSwarm(stacked).forward(x)[0], MLP(layers, "tanh", "tanh").forward(x)[:, 0]
    )


# ---------------------------------------------------------------- VAE encoder (GPU)
@gpu
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("batch", [1, 4096])
def test_vae_encoder_equals_cpu_bit_for_bit(activation: str, batch: int) -> None:
    rng = np.random.default_rng(batch)
    trunk = make_layers(rng, [24, 64, 32], n_agents=None)
    mu = make_layers(rng, [32, 8], n_agents=None)[0]
    logvar = make_layers(rng, [32, 8], n_agents=None)[0]
    x = rng.normal(size=(batch, 24)).astype(np.float32)
    cpu = VAEEncoder(trunk, mu, logvar, activation)  # type: ignore[arg-type]
    gpu_enc = dv.CudaVAEEncoder(trunk, mu, logvar, activation)  # type: ignore[arg-type]
    exp_mu, exp_lv = cpu.encode(x, return_logvar=True)
    got_mu, got_lv = gpu_enc.encode(x, return_logvar=True)
    np.testing.assert_array_equal(got_mu, exp_mu)
    np.testing.assert_array_equal(got_lv, exp_lv)
    dev_mu, dev_lv = gpu_enc.encode(on_device(x), return_logvar=True)
    np.testing.assert_array_equal(host(dev_mu), exp_mu)
    np.testing.assert_array_equal(host(dev_lv), exp_lv)
    np.testing.assert_array_equal(host(gpu_enc.encode(on_device(x))), exp_mu)


# ---------------------------------------------------------------- FracDiff (GPU)
def ffd_tolerance(x: np.ndarray, w: np.ndarray) -> float:
    return 1e-9 * float(np.abs(w).sum()) * float(np.nanmax(np.abs(x[np.isfinite(x)])))


@gpu
@pytest.mark.parametrize("method", ["direct", "fft", "auto"])
@pytest.mark.parametrize(("n", "window"), [(1000, 1), (5000, 20), (200_000, 700), (3000, 3000)])
def test_ffd_equals_cpu(method: str, n: int, window: int) -> None:
    if method == "fft" and not _core.cuda_has_cufft():
        pytest.skip("this CUDA build has no cuFFT (CUDA::cufft was not found at build time)")
    rng = np.random.default_rng(n + window)
    x = np.cumsum(rng.normal(size=n)) + 100.0
    w = fracdiff_weights(0.4, window=window)
    expected = cpu_fracdiff(x, 0.4, window=window, method="direct")
    got = host(dv.fracdiff(on_device(x), 0.4, window=window, method=method))
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=ffd_tolerance(x, w))


@gpu
@pytest.mark.parametrize("method", ["direct", "auto"])
def test_ffd_non_finite_spoils_only_its_windows(method: str) -> None:
    rng = np.random.default_rng(8)
    x = np.cumsum(rng.normal(size=4000))
    x[100] = np.nan
    x[2500] = np.inf
    expected = cpu_fracdiff(x, 0.3, window=80, method="direct")
    got = host(dv.fracdiff(on_device(x), 0.3, window=80, method=method))
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    good = ~np.isnan(expected)
    w = fracdiff_weights(0.3, window=80)
    np.testing.assert_allclose(got[good], expected[good], rtol=0, atol=ffd_tolerance(x, w))


@gpu
@pytest.mark.parametrize("method", ["direct", "auto"])
@pytest.mark.parametrize("n", [1, 50, 3000])
def test_expanding_equals_cpu(method: str, n: int) -> None:
    rng = np.random.default_rng(n)
    x = np.cumsum(rng.normal(size=n)) + 10.0
    if n > 100:
        x[n // 2] = np.nan
    expected = cpu_expanding(x, 0.35, threshold=0.01, method="direct")
    got = host(dv.fracdiff_expanding(on_device(x), 0.35, threshold=0.01, method=method))
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    good = ~np.isnan(expected)
    w = fracdiff_weights(0.35, window=n)
    np.testing.assert_allclose(got[good], expected[good], rtol=0, atol=ffd_tolerance(x, w))


# ---------------------------------------------------------------- fitness (GPU)
@gpu
@pytest.mark.parametrize("long_only", [False, True])
def test_proxy_scores_equal_cpu_and_generation_stays_on_device(long_only: bool) -> None:
    rng = np.random.default_rng(9)
    layers = make_layers(rng, [12, 32, 1], n_agents=50)
    x = rng.normal(size=(2000, 12)).astype(np.float32)
    r = rng.normal(0, 1e-3, 2000)
    tradable = rng.random(2000) > 0.1
    kwargs: dict[str, Any] = {"cost": 12e-4, "long_only": long_only, "periods_per_year": 8760.0}
    signals_cpu = Swarm(layers).forward(x)
    expected = dv.proxy_scores(signals_cpu, r, tradable, **kwargs)
    swarm = dv.CudaSwarm(layers)
    signals, scores = dv.generation_scores(
        swarm, on_device(x), on_device(r), on_device(tradable.astype(np.uint8)), **kwargs
    )
    np.testing.assert_array_equal(host(signals), signals_cpu)
    np.testing.assert_allclose(host(scores), expected, rtol=1e-9, atol=1e-12)


@gpu
def test_trades_identical_for_a_backtest_on_gpu_signals() -> None:
    """The signals decide the trades: identical signals give identical trades (the backtest
    through the core's executor on the GPU's signals against the CPU's)."""
    from colmena.execution.simulation import ExecutionSettings, simulate_targets

    rng = np.random.default_rng(10)
    n = 3000
    layers = make_layers(rng, [8, 32, 32, 1], n_agents=20)
    x = rng.normal(size=(n, 8)).astype(np.float32)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0, 1e-3, n)))
    ts = np.arange(n, dtype=np.int64) * 60_000_000_000
    decide = np.zeros(n, dtype=bool)
    decide[::15] = True
    rows = np.flatnonzero(decide)
    cpu_signals = Swarm(layers).forward(x[rows])
    gpu_signals = dv.CudaSwarm(layers).forward(x[rows])
    marks = np.arange(n, dtype=np.int64)  # every bar: the position after each one
    settings = ExecutionSettings()
    runs = [
        simulate_targets(
            ts,
            close,
            close,
            np.full(n, 1e6),
            decide,
            s,
            marks,
            bar_seconds=60.0,
            execution=settings,
        )
        for s in (cpu_signals, gpu_signals)
    ]
    np.testing.assert_array_equal(gpu_signals, cpu_signals)
    np.testing.assert_array_equal(runs[1].position, runs[0].position)  # the same trades
    np.testing.assert_array_equal(runs[1].equity, runs[0].equity)
    np.testing.assert_array_equal(runs[1].n_fills, runs[0].n_fills)


# ---------------------------------------------------------------- CuPy / torch interop (GPU)
@gpu
def test_cupy_in_cupy_out_on_the_current_stream() -> None:
    cupy = pytest.importorskip("cupy", reason="CuPy is not installed")
    rng = np.random.default_rng(11)
    layers = make_layers(rng, [6, 16, 1], n_agents=5)
    x = rng.normal(size=(500, 6)).astype(np.float32)
    stream = cupy.cuda.Stream(non_blocking=True)
    with stream:
        out = dv.CudaSwarm(layers).forward(cupy.asarray(x))
        assert isinstance(out, cupy.ndarray)
        series = dv.fracdiff(cupy.asarray(np.cumsum(x[:, 0]).astype(np.float64)), 0.4, window=30)
        assert isinstance(series, cupy.ndarray)
    stream.synchronize()
    np.testing.assert_array_equal(out.get(), Swarm(layers).forward(x))


@gpu
def test_torch_cuda_in_torch_out_and_dlpack() -> None:
    torch = pytest.importorskip("torch", reason="torch is not installed")
    if not torch.cuda.is_available():
        pytest.skip("torch was built without CUDA (a CPU wheel)")
    rng = np.random.default_rng(12)
    layers = make_layers(rng, [6, 16, 1], n_agents=5)
    x = rng.normal(size=(500, 6)).astype(np.float32)
    xt = torch.from_numpy(x).cuda()
    out = dv.CudaSwarm(layers).forward(xt)
    assert isinstance(out, torch.Tensor)
    assert out.device == xt.device
    torch.cuda.synchronize()
    np.testing.assert_array_equal(out.cpu().numpy(), Swarm(layers).forward(x))
    with pytest.raises(TypeError, match="dtype float32"):
        dv.CudaSwarm(layers).forward(xt.double())
    with pytest.raises(ValueError, match="C-contiguous"):
        dv.CudaSwarm(layers).forward(xt.t().contiguous().t())  # Fortran order


@gpu
def test_wrong_dtype_and_cpu_swarm_on_device_input_are_refused() -> None:
    rng = np.random.default_rng(13)
    layers = make_layers(rng, [4, 8, 1], n_agents=2)
    swarm = dv.CudaSwarm(layers)
    with pytest.raises(TypeError, match="dtype float32, got float64"):
        swarm.forward(on_device(rng.normal(size=(10, 4))))
    with pytest.raises(ValueError, match=r"host memory; move them with CudaSwarm\.from_swarm"):
        dv.swarm_forward(Swarm(layers), on_device(rng.normal(size=(10, 4)).astype(np.float32)))
    with pytest.raises(TypeError, match="dtype float64"):
        dv.fracdiff(on_device(np.ones(100, np.float32)), 0.4, window=10)


@gpu
def test_host_pointer_passed_as_device_memory_is_refused() -> None:
    host_array = np.ones((10, 4), np.float32)
    swarm = dv.CudaSwarm(make_layers(np.random.default_rng(14), [4, 8, 1], n_agents=2))
    out = dv.DeviceNDArray((2, 10), np.float32)
    with pytest.raises(ValueError, match="x is host memory, expected memory of CUDA device 0"):
        swarm._core.forward_ptr(host_array.ctypes.data, 10, 4, out._buffer.ptr, 0)


# ---------------------------------------------------------------- every build (CPU)
needs_no_cuda = pytest.mark.skipif(
    REASON is None, reason="CUDA is usable here; these tests cover machines without it"
)


@needs_no_cuda
def test_cuda_entry_points_name_what_is_missing() -> None:
    """Without a CUDA build: 'built without CUDA (COLMENA_CUDA=OFF)'; with a CUDA build and no
    device: 'no CUDA device is visible'. Every entry point says it the same way."""
    assert REASON is not None
    expected = "built without CUDA" if not _core.cuda_built() else "no CUDA device is visible"
    assert expected in REASON
    layers = make_layers(np.random.default_rng(0), [4, 8, 1], n_agents=2)
    calls = [
        lambda: dv.CudaSwarm(layers),
        lambda: dv.CudaVAEEncoder([], (layers[0][0][0], layers[0][1][0])),
        lambda: dv.DeviceNDArray((3,), np.float64),
        lambda: dv.to_device(np.ones(3)),
        lambda: dv.require_cuda("colmena train --device cuda"),
        lambda: dv.synchronize(),
    ]
    for call in calls:
        with pytest.raises(dv.CudaUnavailableError, match=expected):
            call()
    for raw in (
        lambda: _core.CudaSwarm(2, [4, 8, 1]),
        lambda: _core.CudaBuffer(16),
        lambda: _core.cuda_synchronize(0, 0),
        lambda: _core.cuda_fracdiff_ffd(0, 10, np.ones(3), 0, "auto", 0, 0),
        lambda: _core.cuda_fracdiff_expanding(0, 10, 0.4, 0.01, 0, "auto", 0, 0),
        lambda: _core.cuda_proxy_scores(0, 1, 2, 0, 0, 0.0, False, 1.0, 0, 0, 0),
    ):
        with pytest.raises(RuntimeError, match=expected):
            raw()


def test_host_arrays_take_the_cpu_path_unchanged() -> None:
    rng = np.random.default_rng(1)
    x = np.cumsum(rng.normal(size=500))
    np.testing.assert_array_equal(dv.fracdiff(x, 0.4, window=20), cpu_fracdiff(x, 0.4, window=20))
    np.testing.assert_array_equal(
        dv.fracdiff_expanding(x, 0.4), cpu_expanding(x, 0.4, threshold=0.01)
    )
    layers = make_layers(rng, [4, 8, 1], n_agents=3)
    xs = rng.normal(size=(20, 4)).astype(np.float32)
    np.testing.assert_array_equal(dv.swarm_forward(Swarm(layers), xs), Swarm(layers).forward(xs))
    assert dv.describe_array(xs) is None


def test_a_cpu_dlpack_array_takes_the_cpu_path() -> None:
    """A torch CPU tensor (DLPack device type 1, no __cuda_array_interface__) is host memory."""
    torch = pytest.importorskip("torch", reason="torch is not installed")
    x = np.cumsum(np.random.default_rng(3).normal(size=300))
    t = torch.from_numpy(x)
    assert dv.describe_array(t) is None
    np.testing.assert_array_equal(dv.fracdiff(t, 0.4, window=12), cpu_fracdiff(x, 0.4, window=12))


def test_cpu_proxy_scores_equal_a_numpy_reference() -> None:
    rng = np.random.default_rng(2)
    s = rng.uniform(-1, 1, (7, 300)).astype(np.float32)
    s[3, 10] = np.nan
    r = rng.normal(0, 1e-2, 300)
    tradable = rng.random(300) > 0.2
    for long_only in (False, True):
        p = np.where(tradable, s.astype(np.float64), 0.0)
        if long_only:
            p = np.where(np.isnan(p), p, np.maximum(p, 0.0))
        dp = np.abs(np.diff(p, axis=1, prepend=0.0))
        g = p * r - 1e-3 * dp
        expected = np.sqrt(365.0) * g.mean(axis=1) / np.sqrt(g.var(axis=1, ddof=1) + 1e-12)
        got = dv.proxy_scores(
            s, r, tradable, cost=1e-3, long_only=long_only, periods_per_year=365.0
        )
        np.testing.assert_allclose(got, expected, rtol=1e-12)
        assert np.isnan(got[3])
    np.testing.assert_array_equal(
        dv.proxy_scores(s[:, :1], r[:1], tradable[:1], cost=0, long_only=False, periods_per_year=1),
        np.zeros(7),
    )
    with pytest.raises(ValueError, match="cost must be finite and >= 0"):
        dv.proxy_scores(s, r, tradable, cost=-1.0, long_only=False, periods_per_year=365.0)


def test_objects_that_are_no_arrays_are_refused_by_name() -> None:
    with pytest.raises(TypeError, match=r"signals must be a numpy\.ndarray or a CUDA array"):
        dv.describe_array([1.0, 2.0], "signals")

    class RocmArray:
        def __dlpack_device__(self) -> tuple[int, int]:
            return (10, 0)  # kDLROCM

    with pytest.raises(TypeError, match="DLPack device type 10; colmena runs on the CPU"):
        dv.describe_array(RocmArray())


@needs_no_cuda
@pytest.mark.parametrize("command", ["train", "backtest"])
def test_cli_device_cuda_without_cuda_is_one_line_and_exit_2(command: str, tmp_path: Any) -> None:
    data = tmp_path / "c.csv"
    data.write_text("open_time,open,high,low,close,volume\n2023-03-01 00:00:00+00:00,1,1,1,1,1\n")
    args = [command, str(data), "--device", "cuda", "--out", str(tmp_path / "out")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1, result.output
    assert "--device cuda:" in errors[0]
    assert REASON is not None
    assert REASON.split(";")[0] in errors[0]
    assert not (tmp_path / "out").exists()  # refused before any work


@pytest.mark.fuzz
@fuzz_settings()
@given(
    signals=st.one_of(
        hnp.arrays(
            st.sampled_from([np.float32, np.float64, np.int32]),
            hnp.array_shapes(min_dims=0, max_dims=3, max_side=6),
        ),
        st.just([[0.5]]),
        st.none(),
    ),
    returns=st.one_of(
        hnp.arrays(np.float64, hnp.array_shapes(min_dims=0, max_dims=2, max_side=6)),
        st.just("r"),
    ),
    tradable=st.one_of(
        hnp.arrays(st.sampled_from([np.bool_, np.uint8, np.float64]), st.integers(0, 6)),
        st.none(),
    ),
    cost=st.floats(allow_nan=True, allow_infinity=True),
    periods=st.floats(allow_nan=True, allow_infinity=True),
)
def test_cpu_proxy_scores_fuzz_return_or_raise_a_documented_error(
    signals: Any, returns: Any, tradable: Any, cost: float, periods: float
) -> None:
    try:
        out = _core.proxy_scores(signals, returns, tradable, cost, False, periods)
    except (TypeError, ValueError):
        return
    assert out.dtype == np.float64
    assert out.shape == (np.asarray(signals).shape[0],)
