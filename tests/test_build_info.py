"""build_info(), cuda_available(), SIMD dispatch and the stub file against the real module."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import numpy as np
import pytest

import colmena
from colmena import _core


def test_build_info_reports_backends_and_instruction_sets() -> None:
    info = colmena.build_info()
    assert info["version"] == colmena.__version__
    assert "cpu" in info["backends"]
    assert "baseline" in info["simd_compiled"]
    assert set(info["simd_supported"]) <= set(info["simd_compiled"])
    assert info["simd_selected"] in info["simd_supported"]
    assert info["max_threads"] >= 1
    if "cuda" not in info["backends"]:
        assert info["cuda_toolkit"] is None
        assert info["cuda_devices"] == []


def test_cuda_available_only_with_cuda_build_and_device() -> None:
    info = colmena.build_info()
    expected = "cuda" in info["backends"] and len(info["cuda_devices"]) > 0
    assert colmena.cuda_available() is expected


@pytest.mark.gpu
def test_gpu_device_is_present_when_required() -> None:
    """On a GPU job (COLMENA_REQUIRE_GPU=1) a missing device is a failure, not a skip."""
    required = os.environ.get("COLMENA_REQUIRE_GPU") == "1"
    if not colmena.cuda_available():
        if required:
            pytest.fail(f"COLMENA_REQUIRE_GPU=1 but no CUDA device: {colmena.build_info()}")
        pytest.skip("colmena was built without CUDA or no CUDA device is visible")
    devices = colmena.build_info()["cuda_devices"]
    assert devices[0]["total_memory_bytes"] > 0


@pytest.mark.parametrize("level", ["baseline", "avx2", "avx512"])
def test_fracdiff_at_every_simd_level_matches_numpy_within_1e9(level: str) -> None:
    """A tolerance, not bit identity: the FFT path's bits differ between levels. (The neural
    forward passes are bit-identical across levels: tests/test_nn_forward.py.)"""
    info = colmena.build_info()
    if level not in info["simd_supported"]:
        pytest.skip(f"{level} kernels not usable on this CPU/build: {info['simd_supported']}")
    x = np.random.default_rng(0).standard_normal(50_000)
    w = colmena.fracdiff_weights(0.4, window=700)
    expected = np.convolve(x, w, mode="valid")
    try:
        _core.set_simd_level(level)
        got_fft = colmena.fracdiff(x, 0.4, window=700, method="fft")
        got_direct = colmena.fracdiff(x, 0.4, window=700, method="direct")
        got_expanding = colmena.fracdiff_expanding(x[:5000], 0.4, threshold=1.0, method="fft")
    finally:
        _core.set_simd_level(info["simd_selected"])
    np.testing.assert_allclose(got_fft, expected, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(got_direct, expected, rtol=1e-9, atol=1e-11)
    reference = np.convolve(x[:5000], colmena.fracdiff_weights(0.4, window=5000))[:5000]
    np.testing.assert_allclose(got_expanding, reference, rtol=1e-9, atol=1e-10)


def test_single_thread_gives_same_numbers_as_pool() -> None:
    x = np.random.default_rng(1).standard_normal(300_000)
    pooled = colmena.fracdiff(x, 0.3, window=1000)
    try:
        _core.set_max_threads(1)
        serial = colmena.fracdiff(x, 0.3, window=1000)
    finally:
        _core.set_max_threads(0)
    np.testing.assert_array_equal(pooled, serial)


def test_unknown_simd_level_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown SIMD level"):
        _core.set_simd_level("sse9")


def test_stub_names_match_the_compiled_module() -> None:
    stub = Path(colmena.__file__).with_name("_core.pyi")
    tree = ast.parse(stub.read_text())
    stub_names = {
        node.name for node in tree.body if isinstance(node, (ast.FunctionDef, ast.ClassDef))
    } | {  # constants (MAX_DURATION_NS, ...)
        node.target.id
        for node in tree.body
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
    }
    module_names = {name for name in dir(_core) if not name.startswith("_")}
    assert stub_names == module_names
    for cls in (n for n in tree.body if isinstance(n, ast.ClassDef)):
        stub_members = {
            m.name
            for m in cls.body
            if isinstance(m, ast.FunctionDef) and not m.name.startswith("_")
        } | {
            m.target.id
            for m in cls.body
            if isinstance(m, ast.AnnAssign) and isinstance(m.target, ast.Name)
        }
        real_members = {m for m in dir(getattr(_core, cls.name)) if not m.startswith("_")}
        assert stub_members == real_members, cls.name
