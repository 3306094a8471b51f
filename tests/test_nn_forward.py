"""Swarm, MLP and VAEEncoder forward passes against a torch float32 reference of the same weights.

Property tests draw shapes, widths, activations and weights; the compiled forward must equal
torch (``torch.baddbmm`` on stacked weights for the swarm, ``nn.functional`` for the others) to
1e-5 absolute. Without torch those tests skip and the rest still run: exact equality
(``np.array_equal``) across SIMD levels, batch sizes and thread counts, in-place updates,
boundary checks, and a NumPy float64 reference within 1e-5.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.special import erf

import colmena
from colmena import _core
from colmena.model.nn import MLP, Swarm, VAEEncoder

ATOL = 1e-5
ACTIVATIONS = ("tanh", "relu", "gelu", "identity")
PROPERTY = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
)

Layers = list[tuple[np.ndarray, np.ndarray]]


# ---------------------------------------------------------------- weights and references
def make_layers(
    rng: np.random.Generator, sizes: list[int], n_agents: int | None, scale: float = 1.5
) -> Layers:
    """Layers ``(W, b)`` of the given widths; ``W ~ U(-1, 1) * scale / sqrt(n_in)``."""
    layers: Layers = []
    for n_in, n_out in itertools.pairwise(sizes):
        lead = () if n_agents is None else (n_agents,)
        w = rng.uniform(-1, 1, (*lead, n_in, n_out)) * (scale / np.sqrt(n_in))
        b = rng.uniform(-0.5, 0.5, (*lead, n_out))
        layers.append((w.astype(np.float32), b.astype(np.float32)))
    return layers


def numpy_activation(name: str) -> Callable[[np.ndarray], np.ndarray]:
    """Exact activations in float64."""
    table: dict[str, Callable[[np.ndarray], np.ndarray]] = {
        "tanh": np.tanh,
        "relu": lambda h: np.maximum(h, 0.0),
        "gelu": lambda h: 0.5 * h * (1.0 + erf(h / np.sqrt(2.0))),
        "identity": lambda h: h,
    }
    return table[name]


def numpy_swarm(layers: Layers, activation: str, x: np.ndarray) -> np.ndarray:
    """float64 reference: [n_agents, n_steps] (or [n_agents] for a 1-D x)."""
    act = numpy_activation(activation)
    h = np.broadcast_to(
        np.atleast_2d(x).astype(np.float64), (layers[0][0].shape[0], *np.atleast_2d(x).shape)
    )
    for i, (w, b) in enumerate(layers):
        h = h @ w.astype(np.float64) + b.astype(np.float64)[:, None, :]
        h = np.tanh(h) if i == len(layers) - 1 else act(h)
    out = h[..., 0]
    return out[:, 0] if x.ndim == 1 else out


def torch_activation(torch: Any, name: str) -> Any:
    functional = torch.nn.functional
    return {
        "tanh": torch.tanh,
        "relu": torch.relu,
        "gelu": functional.gelu,
        "identity": lambda h: h,
    }[name]


def torch_swarm(torch: Any, layers: Layers, activation: str, x: np.ndarray) -> np.ndarray:
    """The torch float32 swarm: baddbmm on the stacked weights, [n_agents, n_steps]."""
    act = torch_activation(torch, activation)
    n_agents = layers[0][0].shape[0]
    rows = torch.from_numpy(np.atleast_2d(x).copy())
    with torch.no_grad():
        h = rows.unsqueeze(0).expand(n_agents, -1, -1)
        for i, (w, b) in enumerate(layers):
            h = torch.baddbmm(torch.from_numpy(b).unsqueeze(1), h, torch.from_numpy(w))
            h = torch.tanh(h) if i == len(layers) - 1 else act(h)
        out = np.asarray(h[..., 0].numpy())
    return out[:, 0] if x.ndim == 1 else out


def torch_dense(
    torch: Any, layers: Layers, activation: str, output_activation: str, x: np.ndarray
) -> np.ndarray:
    """torch float32 MLP through nn.functional.linear (weights given as W [n_in, n_out])."""
    functional = torch.nn.functional
    act = torch_activation(torch, activation)
    out_act = torch_activation(torch, output_activation)
    with torch.no_grad():
        h = torch.from_numpy(x.copy())
        for i, (w, b) in enumerate(layers):
            h = functional.linear(h, torch.from_numpy(w.T.copy()), torch.from_numpy(b))
            h = out_act(h) if i == len(layers) - 1 else act(h)
        return np.asarray(h.numpy())


@pytest.fixture(scope="module")
def torch() -> Any:
    module = pytest.importorskip("torch")
    module.set_num_threads(1)
    return module


@pytest.fixture
def restore_threads() -> Iterator[None]:
    yield
    _core.set_max_threads(0)


@pytest.fixture
def restore_simd() -> Iterator[None]:
    selected = colmena.build_info()["simd_selected"]
    yield
    _core.set_simd_level(selected)


# ---------------------------------------------------------------- strategies
@st.composite
def network_shapes(draw: st.DrawFn, max_depth: int = 4) -> list[int]:
    """Widths (n_features, hidden..., last): narrow (< 8) and wide, aligned and ragged."""
    depth = draw(st.integers(1, max_depth))
    widths = st.one_of(st.integers(1, 20), st.sampled_from([16, 31, 32, 33, 48, 64, 70]))
    return [draw(widths) for _ in range(depth)]


# ---------------------------------------------------------------- Swarm against torch
@PROPERTY
@given(
    hidden=network_shapes(),
    n_agents=st.integers(1, 12),
    n_steps=st.integers(1, 150),
    activation=st.sampled_from(ACTIVATIONS),
    seed=st.integers(0, 2**32 - 1),
)
def test_swarm_matches_torch_baddbmm_for_series_and_single_state(
    torch: Any, hidden: list[int], n_agents: int, n_steps: int, activation: str, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    layers = make_layers(rng, [*hidden, 1], n_agents)
    swarm = Swarm(layers, activation=activation)  # type: ignore[arg-type]
    x = (rng.standard_normal((n_steps, hidden[0])) * 2).astype(np.float32)
    series = swarm.forward(x)
    assert series.dtype == np.float32
    assert series.shape == (n_agents, n_steps)
    np.testing.assert_allclose(series, torch_swarm(torch, layers, activation, x), rtol=0, atol=ATOL)
    single = swarm.forward(x[-1])
    assert single.shape == (n_agents,)
    np.testing.assert_allclose(single, torch_swarm(torch, layers, activation, x[-1]), atol=ATOL)
    # the live tick gives bit for bit what the same step gives inside the series
    np.testing.assert_array_equal(single, series[:, -1])
    assert np.all(np.abs(series) <= 1.0)


def test_default_swarm_shape_matches_torch(torch: Any) -> None:
    """The production shape: 100 agents of 32 -> 64 -> 64 -> 1, pooled threads, both inputs."""
    rng = np.random.default_rng(7)
    layers = make_layers(rng, [32, 64, 64, 1], 100)
    swarm = Swarm(layers)
    x = rng.standard_normal((500, 32)).astype(np.float32)
    np.testing.assert_allclose(swarm.forward(x), torch_swarm(torch, layers, "tanh", x), atol=ATOL)
    np.testing.assert_allclose(
        swarm.forward(x[3]), torch_swarm(torch, layers, "tanh", x[3]), atol=ATOL
    )


# ---------------------------------------------------------------- MLP and VAE against torch
@PROPERTY
@given(
    sizes=network_shapes(max_depth=5),
    n_rows=st.integers(1, 130),
    activation=st.sampled_from(ACTIVATIONS),
    output_activation=st.sampled_from(ACTIVATIONS),
    seed=st.integers(0, 2**32 - 1),
)
def test_mlp_matches_torch_functional(
    torch: Any,
    sizes: list[int],
    n_rows: int,
    activation: str,
    output_activation: str,
    seed: int,
) -> None:
    if len(sizes) < 2:
        sizes = [*sizes, 3]
    rng = np.random.default_rng(seed)
    layers = make_layers(rng, sizes, None)
    mlp = MLP(layers, activation=activation, output_activation=output_activation)  # type: ignore[arg-type]
    x = (rng.standard_normal((n_rows, sizes[0])) * 2).astype(np.float32)
    got = mlp.forward(x)
    assert got.shape == (n_rows, sizes[-1])
    expected = torch_dense(torch, layers, activation, output_activation, x)
    np.testing.assert_allclose(got, expected, rtol=0, atol=ATOL)
    np.testing.assert_array_equal(mlp.forward(x[0]), got[0])


@PROPERTY
@given(
    trunk=network_shapes(max_depth=4),
    latent=st.integers(1, 40),
    batch=st.integers(1, 200),
    activation=st.sampled_from(ACTIVATIONS),
    seed=st.integers(0, 2**32 - 1),
)
def test_vae_encoder_mu_and_logvar_match_torch(
    torch: Any, trunk: list[int], latent: int, batch: int, activation: str, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    layers = make_layers(rng, trunk, None)
    mu_head, logvar_head = make_layers(rng, [trunk[-1], latent], None) + make_layers(
        rng, [trunk[-1], latent], None
    )
    encoder = VAEEncoder(layers, mu_head, logvar_head, activation=activation)  # type: ignore[arg-type]
    x = (rng.standard_normal((batch, trunk[0])) * 2).astype(np.float32)
    mu, logvar = encoder.encode(x, return_logvar=True)
    ref_mu = torch_dense(torch, [*layers, mu_head], activation, "identity", x)
    ref_logvar = torch_dense(torch, [*layers, logvar_head], activation, "identity", x)
    np.testing.assert_allclose(mu, ref_mu, rtol=0, atol=ATOL)
    np.testing.assert_allclose(logvar, ref_logvar, rtol=0, atol=ATOL)
    np.testing.assert_array_equal(encoder.encode(x), mu)
    np.testing.assert_array_equal(encoder.encode(x[0]), mu[0])


def test_vae_encoder_of_the_benchmark_shape_matches_torch(torch: Any) -> None:
    """64 -> 128 -> 64 -> mu(16): batch 1 and a pooled batch of 1,024."""
    rng = np.random.default_rng(3)
    layers = make_layers(rng, [64, 128, 64], None)
    mu_head = make_layers(rng, [64, 16], None)[0]
    encoder = VAEEncoder(layers, mu_head)
    x = rng.standard_normal((1024, 64)).astype(np.float32)
    ref = torch_dense(torch, [*layers, mu_head], "relu", "identity", x)
    np.testing.assert_allclose(encoder.encode(x), ref, atol=ATOL)
    np.testing.assert_allclose(encoder.encode(x[:1]), ref[:1], atol=ATOL)
    assert encoder.latent_size == 16
    assert not encoder.has_logvar
    assert encoder.layer_sizes == (64, 128, 64)


def test_vae_encoder_without_trunk_is_the_linear_heads() -> None:
    rng = np.random.default_rng(4)
    mu_head = make_layers(rng, [10, 4], None)[0]
    encoder = VAEEncoder([], mu_head)
    x = rng.standard_normal((5, 10)).astype(np.float32)
    np.testing.assert_allclose(encoder.encode(x), x @ mu_head[0] + mu_head[1], atol=ATOL)


# ---------------------------------------------------------------- activations, SIMD levels
def simd_levels() -> list[str]:
    return ["baseline", "avx2", "avx512"]


def skip_unless_supported(level: str) -> None:
    supported = colmena.build_info()["simd_supported"]
    if level not in supported:
        pytest.skip(f"{level} kernels not usable on this CPU/build: {supported}")


@pytest.mark.parametrize("level", simd_levels())
@pytest.mark.parametrize("activation", ["tanh", "gelu", "relu"])
@pytest.mark.usefixtures("restore_simd")
def test_vectorised_activations_are_within_2e7_of_the_exact_function(
    level: str, activation: str
) -> None:
    """An identity layer (W = I, b = 0) passes x through exactly, so the output is act(x)."""
    skip_unless_supported(level)
    _core.set_simd_level(level)
    for width in (5, 16, 37):  # narrow (transposed) layout, whole vectors, ragged vectors
        identity = MLP(
            [(np.eye(width, dtype=np.float32), np.zeros(width, np.float32))],
            output_activation=activation,  # type: ignore[arg-type]
        )
        x = np.linspace(-12, 12, 240_000 // width * width, dtype=np.float32).reshape(-1, width)
        got = identity.forward(x).astype(np.float64)
        expected = numpy_activation(activation)(x.astype(np.float64))
        err = np.abs(got - expected) / np.maximum(1.0, np.abs(expected))
        assert err.max() < 2e-7, (width, float(err.max()))


# ---------------------------------------------------------------- determinism: exact equality
# The forward pass promises the same bits (np.array_equal, not a tolerance) at every SIMD level,
# for a row alone or inside any batch, and for any thread count (cpp/include/colmena/mlp.hpp).
def usable_levels() -> list[str]:
    supported = colmena.build_info()["simd_supported"]
    return [level for level in simd_levels() if level in supported]


Models = tuple[Swarm, MLP, VAEEncoder]


def make_models(rng: np.random.Generator, n_features: int, activation: str) -> Models:
    """A swarm, an MLP and a VAE encoder with logvar; narrow (< 8), wide and ragged layers."""
    swarm = Swarm(make_layers(rng, [n_features, 37, 64, 5, 1], 9), activation=activation)  # type: ignore[arg-type]
    mlp = MLP(
        make_layers(rng, [n_features, 37, 64, 5, 3], None),
        activation=activation,  # type: ignore[arg-type]
        output_activation=activation,  # type: ignore[arg-type]
    )
    trunk = make_layers(rng, [n_features, 37, 20], None)
    mu_head, logvar_head = make_layers(rng, [20, 6], None) + make_layers(rng, [20, 6], None)
    vae = VAEEncoder(trunk, mu_head, logvar_head, activation=activation)  # type: ignore[arg-type]
    return swarm, mlp, vae


def all_outputs(models: Models, x: np.ndarray) -> list[np.ndarray]:
    """Swarm signals, MLP outputs, VAE mu and logvar for the rows x (or the one row x)."""
    swarm, mlp, vae = models
    mu, logvar = vae.encode(x, return_logvar=True)
    return [swarm.forward(x), mlp.forward(x), mu, logvar]


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.usefixtures("restore_simd")
def test_every_simd_level_gives_bit_identical_outputs(activation: str) -> None:
    """Swarm, MLP and VAE (mu and logvar) outputs are np.array_equal at every usable level, for
    a batch and for one row; the swarm stays within 1e-5 of the NumPy float64 reference."""
    levels = usable_levels()
    if len(levels) < 2:
        pytest.skip(f"one SIMD level usable here, nothing to compare: {levels}")
    rng = np.random.default_rng(11)
    models = make_models(rng, 13, activation)
    x = (rng.standard_normal((97, 13)) * 2).astype(np.float32)
    got = {}
    for level in levels:
        _core.set_simd_level(level)
        got[level] = all_outputs(models, x) + all_outputs(models, x[50])
    for level in levels[1:]:
        for first, other in zip(got[levels[0]], got[level], strict=True):
            assert np.array_equal(first, other), (levels[0], level)
    swarm_layers = models[0].get_weights()
    expected = numpy_swarm(swarm_layers, activation, x)
    np.testing.assert_allclose(got[levels[0]][0], expected, rtol=0, atol=ATOL)


@settings(max_examples=60, deadline=None, database=None)
@given(
    hidden=network_shapes(),
    n_agents=st.integers(1, 5),
    n_rows=st.integers(1, 40),
    activation=st.sampled_from(ACTIVATIONS),
    seed=st.integers(0, 2**32 - 1),
)
def test_simd_levels_agree_bit_for_bit_on_drawn_shapes(
    hidden: list[int], n_agents: int, n_rows: int, activation: str, seed: int
) -> None:
    """Property: for drawn widths (narrow, wide, ragged), agents and rows, every usable level
    gives np.array_equal swarm signals."""
    levels = usable_levels()
    if len(levels) < 2:
        pytest.skip(f"one SIMD level usable here, nothing to compare: {levels}")
    rng = np.random.default_rng(seed)
    swarm = Swarm(make_layers(rng, [*hidden, 1], n_agents), activation=activation)  # type: ignore[arg-type]
    x = (rng.standard_normal((n_rows, hidden[0])) * 2).astype(np.float32)
    selected = colmena.build_info()["simd_selected"]
    try:
        results = []
        for level in levels:
            _core.set_simd_level(level)
            results.append(swarm.forward(x))
    finally:
        _core.set_simd_level(selected)
    for level, result in zip(levels[1:], results[1:], strict=True):
        assert np.array_equal(results[0], result), level


def test_a_row_alone_gives_the_bits_it_gives_in_a_million_row_batch() -> None:
    """Rows computed alone (the live path), in small batches at any offset and inside one
    1,000,000-row batch (the backtest) are np.array_equal, for the swarm, MLP and VAE."""
    rng = np.random.default_rng(21)
    models = make_models(rng, 8, "tanh")
    x = rng.standard_normal((1_000_000, 8)).astype(np.float32)
    whole = all_outputs(models, x)
    rows = [0, 1, 11, 12, 239, 240, 241, 500_000, 999_999, *rng.integers(0, 1_000_000, 12)]
    for t in rows:
        alone = all_outputs(models, x[t])
        assert np.array_equal(alone[0], whole[0][:, t]), t
        for got, batch in zip(alone[1:], whole[1:], strict=True):
            assert np.array_equal(got, batch[t]), t
    for start, n in [(0, 2), (5, 7), (123_457, 13), (999_000, 241), (400_000, 1000)]:
        part = all_outputs(models, x[start : start + n])
        assert np.array_equal(part[0], whole[0][:, start : start + n]), (start, n)
        for got, batch in zip(part[1:], whole[1:], strict=True):
            assert np.array_equal(got, batch[start : start + n]), (start, n)


@pytest.mark.usefixtures("restore_threads")
def test_every_thread_count_gives_the_same_bits() -> None:
    """max_threads 1, 2, 3 and the default give np.array_equal outputs: the production swarm
    (agent blocks, series and one state), a 3-agent swarm (row tiles), an MLP and a VAE with
    logvar. Counts above the pool size run as the pool size."""
    rng = np.random.default_rng(5)
    swarm = Swarm(make_layers(rng, [32, 64, 64, 1], 100))
    x = rng.standard_normal((400, 32)).astype(np.float32)
    small_swarm = Swarm(make_layers(rng, [32, 64, 1], 3))
    y = rng.standard_normal((700, 32)).astype(np.float32)
    models = make_models(rng, 64, "gelu")
    z = rng.standard_normal((1024, 64)).astype(np.float32)

    def run() -> list[np.ndarray]:
        fixed = [swarm.forward(x), swarm.forward(x[0]), small_swarm.forward(y)]
        return fixed + all_outputs(models, z)

    _core.set_max_threads(1)
    serial = run()
    for n in (2, 3, 0):
        _core.set_max_threads(n)
        for a, b in zip(serial, run(), strict=True):
            assert np.array_equal(a, b), n


def test_concurrent_forward_calls_from_python_threads_agree() -> None:
    rng = np.random.default_rng(6)
    swarm = Swarm(make_layers(rng, [32, 64, 64, 1], 100))
    x = rng.standard_normal((300, 32)).astype(np.float32)
    expected = swarm.forward(x)
    results: list[np.ndarray] = []

    def work() -> None:
        for _ in range(5):
            results.append(swarm.forward(x))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 20
    for r in results:
        np.testing.assert_array_equal(r, expected)


def test_forward_sees_a_whole_generation_while_another_thread_replaces_weights() -> None:
    """set_weights from one thread while others run forward: every result is exactly the
    output of one generation, never a mix (the core's lock, not the caller's)."""
    rng = np.random.default_rng(7)
    sizes = [16, 48, 48, 1]
    generations = [make_layers(rng, sizes, 40) for _ in range(2)]
    swarm = Swarm(generations[0])
    x = rng.standard_normal((200, 16)).astype(np.float32)
    expected = []
    for generation in generations:
        swarm.set_weights(generation)
        expected.append(swarm.forward(x))
    stop = threading.Event()
    results: list[np.ndarray] = []

    def write() -> None:
        i = 0
        while not stop.is_set():
            swarm.set_weights(generations[i % 2])
            i += 1

    def read() -> None:
        for _ in range(30):
            results.append(swarm.forward(x))

    writer = threading.Thread(target=write)
    readers = [threading.Thread(target=read) for _ in range(3)]
    writer.start()
    for t in readers:
        t.start()
    for t in readers:
        t.join()
    stop.set()
    writer.join()
    assert len(results) == 90
    for r in results:
        assert np.array_equal(r, expected[0]) or np.array_equal(r, expected[1])


# ---------------------------------------------------------------- in-place weight replacement
def test_set_layer_changes_outputs_in_place_without_reallocating() -> None:
    rng = np.random.default_rng(8)
    layers = make_layers(rng, [8, 16, 1], 6)
    swarm = Swarm(layers)
    x = rng.standard_normal((20, 8)).astype(np.float32)
    before = swarm.forward(x)
    address = swarm.storage_address
    new_hidden = make_layers(rng, [8, 16], 6)[0]
    swarm.set_layer(0, *new_hidden)
    after = swarm.forward(x)
    assert swarm.storage_address == address
    assert not np.allclose(before, after)
    np.testing.assert_allclose(after, numpy_swarm([new_hidden, layers[1]], "tanh", x), atol=ATOL)
    got_w, got_b = swarm.get_weights()[0]
    np.testing.assert_array_equal(got_w, new_hidden[0])
    np.testing.assert_array_equal(got_b, new_hidden[1])
    # get_weights returns copies: writing to them changes nothing
    got_w[:] = 0
    np.testing.assert_array_equal(swarm.forward(x), after)


def test_set_weights_replaces_a_generation_and_set_agent_one_slot() -> None:
    rng = np.random.default_rng(9)
    sizes = [6, 12, 7, 1]
    swarm = Swarm(make_layers(rng, sizes, 5), activation="relu")
    address = swarm.storage_address
    x = rng.standard_normal((30, 6)).astype(np.float32)
    generation = make_layers(rng, sizes, 5)
    swarm.set_weights(generation)
    np.testing.assert_allclose(swarm.forward(x), numpy_swarm(generation, "relu", x), atol=ATOL)
    before = swarm.forward(x)
    child = [(w[0], b[0]) for w, b in make_layers(rng, sizes, 1)]
    swarm.set_agent(3, child)
    after = swarm.forward(x)
    np.testing.assert_array_equal(np.delete(after, 3, axis=0), np.delete(before, 3, axis=0))
    assert not np.allclose(after[3], before[3])
    stacked_child = [(w[None], b[None]) for w, b in child]
    np.testing.assert_allclose(after[3], numpy_swarm(stacked_child, "relu", x)[0], atol=ATOL)
    for (w, b), (cw, cb) in zip(swarm.get_agent(3), child, strict=True):
        np.testing.assert_array_equal(w, cw)
        np.testing.assert_array_equal(b, cb)
    assert swarm.storage_address == address


def test_mlp_set_layer_and_set_weights_in_place() -> None:
    rng = np.random.default_rng(10)
    mlp = MLP(make_layers(rng, [4, 9, 3], None), activation="gelu", output_activation="tanh")
    address = mlp.storage_address
    x = rng.standard_normal((7, 4)).astype(np.float32)
    new = make_layers(rng, [4, 9, 3], None)
    mlp.set_weights(new)
    h = numpy_activation("gelu")(x.astype(np.float64) @ new[0][0] + new[0][1])
    np.testing.assert_allclose(mlp.forward(x), np.tanh(h @ new[1][0] + new[1][1]), atol=ATOL)
    mlp.set_layer(1, np.zeros((9, 3), np.float32), np.full(3, 0.25, np.float32))
    np.testing.assert_allclose(mlp.forward(x), np.tanh(0.25), atol=1e-7)
    assert mlp.storage_address == address
    assert [w.shape for w, _ in mlp.get_weights()] == [(4, 9), (9, 3)]


def test_failed_update_leaves_every_layer_unchanged() -> None:
    rng = np.random.default_rng(12)
    sizes = [5, 9, 1]
    swarm = Swarm(make_layers(rng, sizes, 4))
    x = rng.standard_normal((10, 5)).astype(np.float32)
    before = swarm.forward(x)
    generation = make_layers(rng, sizes, 4)
    generation[1][0][2, 4, 0] = np.nan
    with pytest.raises(ValueError, match=r"layers\[1\] W\[2, 4, 0\] is nan"):
        swarm.set_weights(generation)
    np.testing.assert_array_equal(swarm.forward(x), before)


def test_weights_given_as_transposed_views_are_accepted() -> None:
    """torch's nn.Linear weight is [n_out, n_in]; its .T is a non-contiguous view: copied in."""
    rng = np.random.default_rng(13)
    torch_style = rng.standard_normal((3, 4)).astype(np.float32)  # [n_out, n_in]
    b = np.zeros(3, np.float32)
    mlp = MLP([(torch_style.T, b)])
    x = rng.standard_normal((2, 4)).astype(np.float32)
    np.testing.assert_allclose(mlp.forward(x), x @ torch_style.T, atol=1e-6)


# ---------------------------------------------------------------- inputs: layouts and NaN
def test_strided_rows_and_broadcast_rows_are_read_without_copying() -> None:
    rng = np.random.default_rng(14)
    swarm = Swarm(make_layers(rng, [6, 10, 1], 3))
    wide = rng.standard_normal((40, 9)).astype(np.float32)
    view = wide[::2, 2:8]  # rows 72 bytes apart, last axis contiguous
    np.testing.assert_array_equal(swarm.forward(view), swarm.forward(np.ascontiguousarray(view)))
    state = rng.standard_normal(6).astype(np.float32)
    repeated = np.broadcast_to(state, (5, 6))  # row stride 0
    np.testing.assert_array_equal(
        swarm.forward(repeated), np.repeat(swarm.forward(state)[:, None], 5, 1)
    )


def test_nan_input_gives_nan_in_that_step_only() -> None:
    rng = np.random.default_rng(15)
    swarm = Swarm(make_layers(rng, [8, 16, 1], 4))
    x = rng.standard_normal((12, 8)).astype(np.float32)
    clean = swarm.forward(x)
    x[5, 3] = np.nan
    got = swarm.forward(x)
    assert np.all(np.isnan(got[:, 5]))
    np.testing.assert_array_equal(np.delete(got, 5, axis=1), np.delete(clean, 5, axis=1))
    assert np.all(np.isnan(swarm.forward(x[5])))
    encoder = VAEEncoder(make_layers(rng, [8, 16], None), make_layers(rng, [16, 4], None)[0])
    assert np.all(np.isnan(encoder.encode(x)[5]))


# ---------------------------------------------------------------- boundary errors
def small_swarm_layers() -> Layers:
    return make_layers(np.random.default_rng(16), [4, 8, 1], 3)


def test_forward_rejects_bad_inputs_with_clear_errors() -> None:
    swarm = Swarm(small_swarm_layers())
    with pytest.raises(TypeError, match=r"x must have dtype float32, got float64"):
        swarm.forward(np.zeros(4))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"x must be a numpy.ndarray of float32, got list"):
        swarm.forward([0.0, 0.0, 0.0, 0.0])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"n_features = 4 .* got shape \(10, 5\)"):
        swarm.forward(np.zeros((10, 5), np.float32))
    with pytest.raises(ValueError, match=r"x must be \[n_features\] or \[n_steps, n_features\]"):
        swarm.forward(np.zeros((2, 3, 4), np.float32))
    with pytest.raises(ValueError, match="contiguous along its last axis"):
        swarm.forward(np.zeros((4, 8), np.float32)[:, ::2])
    with pytest.raises(ValueError, match="increasing memory order"):
        swarm.forward(np.zeros((6, 4), np.float32)[::-1])
    assert swarm.forward(np.zeros((0, 4), np.float32)).shape == (3, 0)


def test_constructor_rejects_bad_layers_naming_the_layer() -> None:
    layers = small_swarm_layers()
    (w0, b0), (w1, b1) = layers
    with pytest.raises(ValueError, match="at least one"):
        Swarm([])
    with pytest.raises(TypeError, match=r"layers\[0\] must be a pair \(W, b\)"):
        Swarm([w0, (w1, b1)])  # type: ignore[list-item]
    with pytest.raises(TypeError, match=r"layers\[1\] W must have dtype float32, got float64"):
        Swarm([(w0, b0), (w1.astype(np.float64), b1)])
    with pytest.raises(ValueError, match=r"layers\[1\] W must have shape \(3, 8, n_out\)"):
        Swarm([(w0, b0), (w1[:, :5], b1)])
    with pytest.raises(ValueError, match=r"layers\[1\] W must have shape \(3, 8, n_out\)"):
        Swarm([(w0, b0), (w1[:2], b1[:2])])
    with pytest.raises(ValueError, match=r"layers\[0\] b must have shape \(3, 8\)"):
        Swarm([(w0, b0[:, :7]), (w1, b1)])
    with pytest.raises(ValueError, match=r"layers\[0\] W must be 3-D"):
        Swarm([(w0[0], b0), (w1, b1)])
    with pytest.raises(ValueError, match=r"output layer layers\[0\] must have n_out = 1"):
        Swarm([(w0, b0)])
    with pytest.raises(ValueError, match="activation must be 'tanh', 'relu', 'gelu' or 'identity'"):
        Swarm(layers, activation="sigmoid")  # type: ignore[arg-type]
    bad = w1.copy()
    bad[2, 6, 0] = np.inf
    with pytest.raises(ValueError, match=r"Swarm: layers\[1\] W\[2, 6, 0\] is inf"):
        Swarm([(w0, b0), (bad, b1)])
    bad_b = b0.copy()
    bad_b[1, 3] = np.nan
    with pytest.raises(ValueError, match=r"Swarm: layers\[0\] b\[1, 3\] is nan"):
        Swarm([(w0, bad_b), (w1, b1)])


def test_updates_reject_bad_shapes_indices_and_nan() -> None:
    swarm = Swarm(small_swarm_layers())
    (w0, b0), (w1, b1) = small_swarm_layers()
    with pytest.raises(IndexError, match=r"layer index 2 is outside \[0, 2\)"):
        swarm.set_layer(2, w1, b1)
    with pytest.raises(ValueError, match=r"set_layer: layers\[1\] W must have shape \(3, 8, 1\)"):
        swarm.set_layer(1, w0, b0)
    with pytest.raises(IndexError, match=r"agent index 3 is outside \[0, 3\)"):
        swarm.set_agent(3, [(w0[0], b0[0]), (w1[0], b1[0])])
    nan_w = w1[0].copy()
    nan_w[4, 0] = np.nan
    with pytest.raises(ValueError, match=r"set_agent: layers\[1\] W\[4, 0\] is nan"):
        swarm.set_agent(0, [(w0[0], b0[0]), (nan_w, b1[0])])
    with pytest.raises(ValueError, match=r"must hold 2 \(W, b\) pairs, got 1"):
        swarm.set_weights([(w0, b0)])
    with pytest.raises(IndexError, match="agent index -1"):
        swarm.get_agent(-1)


def test_vae_encoder_rejects_bad_heads_and_logvar_request() -> None:
    rng = np.random.default_rng(17)
    layers = make_layers(rng, [6, 10], None)
    mu_head = make_layers(rng, [10, 3], None)[0]
    with pytest.raises(ValueError, match=r"VAEEncoder: mu W must have shape \(10, n_out\)"):
        VAEEncoder(layers, make_layers(rng, [9, 3], None)[0])
    with pytest.raises(ValueError, match=r"VAEEncoder: logvar W must have shape \(10, 3\)"):
        VAEEncoder(layers, mu_head, make_layers(rng, [10, 4], None)[0])
    nan_mu = (mu_head[0], mu_head[1].copy())
    nan_mu[1][2] = np.nan
    with pytest.raises(ValueError, match=r"VAEEncoder: mu b\[2\] is nan"):
        VAEEncoder(layers, nan_mu)
    encoder = VAEEncoder(layers, mu_head)
    with pytest.raises(ValueError, match="return_logvar=True needs the logvar head"):
        encoder.encode(np.zeros((2, 6), np.float32), return_logvar=True)
    with pytest.raises(TypeError, match="dtype float32"):
        encoder.encode(np.zeros((2, 6), np.float16))


def test_properties_and_repr() -> None:
    swarm = Swarm(small_swarm_layers(), activation="gelu")
    assert swarm.n_agents == 3
    assert swarm.n_features == 4
    assert swarm.layer_sizes == (4, 8, 1)
    assert swarm.activation == "gelu"
    assert repr(swarm) == "Swarm(n_agents=3, layers=4 -> 8 -> 1, activation='gelu')"
    mlp = MLP(make_layers(np.random.default_rng(1), [3, 2], None), output_activation="tanh")
    assert (mlp.layer_sizes, mlp.activation, mlp.output_activation) == ((3, 2), "tanh", "tanh")
