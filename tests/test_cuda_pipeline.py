"""``--device``: the training loop and the backtest run their forward passes where the device says.

The seam (colmena.model.device.ForwardBackend, chosen by ``forward_backend``) is the one place
that builds the VAE encoder's and the swarm's forward implementation; everything else in the
pipeline is the CPU core's whatever the device. Three kinds of test:

- On every machine, the seam itself: a test-only backend (:class:`HostTwin`) that runs the CPU
  core's compiled objects (``_core.Swarm``, ``_core.VAEEncoder``) on host arrays and counts every
  call, while :class:`colmena.Swarm` and :class:`colmena.VAEEncoder` are made to fail if
  anything calls their forward passes: training, the backtest (checkpoint and walk-forward) and
  the CLI's ``--device cuda`` must route every forward pass through the backend and give the
  CPU run's checkpoints and trades, byte for byte.
- On a GPU (a CUDA build and a visible device, else skipped with the reason; with
  ``COLMENA_REQUIRE_GPU=1`` a missing device is an error): the same runs with ``device="cuda"``
  against ``device="cpu"``. The tolerance the pipeline relies on is none: the fitness ranking,
  the selection thresholds and the trading loop's decisions are discontinuous in the signals, so
  identical trades need identical bits, which the CUDA forward passes are built to give (their
  per-operation contract is 2e-6 absolute; the test reports the largest difference if the bits
  differ).
- Without CUDA: ``device="cuda"`` raises one error naming what is missing before any work (the
  CLI's exit 2 is in tests/test_cuda_ops.py).

The candles are synthetic (tests/helpers.py), so the GPU run needs no data folder.
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from numpy.typing import NDArray

from colmena import _core
from colmena.backtest import engine
from colmena.backtest.engine import BacktestConfig, BacktestRun, backtest
from colmena.cli import main
from colmena.data.ohlcv import Candles, load_ohlcv
from colmena.model import device as dv
from colmena.model.decision import DecisionConfig
from colmena.model.nn import ActivationName, LayerWeights, Swarm, VAEEncoder
from colmena.persistence import checkpoint as checkpoints
from colmena.risk import RiskConfig
from colmena.training.state import TrainingState
from colmena.training.trainer import TrainResult, train

pytest.importorskip("torch")

sys.path.insert(0, str(Path(__file__).parent))
from helpers import every_agent_votes, tiny_training

REASON = dv.cuda_unavailable_reason()
if REASON is not None and os.environ.get("COLMENA_REQUIRE_GPU") == "1":
    raise RuntimeError(f"COLMENA_REQUIRE_GPU=1 but the GPU tests cannot run: {REASON}")
gpu = pytest.mark.skipif(REASON is not None, reason=f"no GPU run: {REASON}")
needs_no_cuda = pytest.mark.skipif(
    REASON is None, reason="CUDA is usable here; these tests cover machines without it"
)

# A model that decides every 5 minutes and trades whatever its gate says, so that there are
# trades to compare; permissive risk so that the signal drives the position.
TRAINING = tiny_training(
    interval="5m", eval_days=1, decision=DecisionConfig(interval="5m", no_trade_band=0.0),
    gate=False,
)  # fmt: skip
LOOSE = RiskConfig(kelly_prior=1.0, kelly_multiplier=1.0, var_budget=1e9, min_trade_fraction=0.0)
#: `colmena train` options for a run of a few seconds.
TRAIN_OPTIONS = ("--agents", "4", "--generations", "2", "--vae-epochs", "1", "--eval-days", "1",
                 "--decision-interval", "15m")  # fmt: skip
#: Two walk-forward folds, the second one trading (three voters, about 1,900 fills).
WALK_FORWARD = BacktestConfig(risk=LOOSE, training=TRAINING, train_fraction=0.75, folds=2, seed=1)
TABLES = ("bars", "decisions", "orders", "fills", "equity", "events")


@pytest.fixture(scope="module")
def candles_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """28 days of one-minute candles, a random walk around 100 with a volume of 50 to 150: long
    enough for walk-forward folds whose selection bars span several days (the daily Sharpe
    ratio that picks the voters needs them)."""
    n = 40_000
    rng = np.random.default_rng(7)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.001, n)))
    open_ = np.concatenate([[100.0], close[:-1]])
    ts = 1_677_628_800 * 10**9 + 60 * 10**9 * np.arange(n, dtype=np.int64)
    path = tmp_path_factory.mktemp("candles") / "candles.parquet"
    pq.write_table(pa.table({
        "ts": pa.array(ts, pa.timestamp("ns")), "open": open_,
        "high": np.maximum(open_, close) * 1.0005, "low": np.minimum(open_, close) * 0.9995,
        "close": close, "volume": rng.uniform(50, 150, n),
    }), path)  # fmt: skip
    return path


@pytest.fixture(scope="module")
def candles(candles_file: Path) -> Candles:
    return load_ohlcv(candles_file)


@pytest.fixture(scope="module")
def cpu_training(candles: Candles) -> TrainResult:
    return train(candles.slice(0, 3_000), TRAINING)


# ---------------------------------------------------------------- a test-only "device"
class HostTwin(dv.ForwardBackend):
    """A fake device: the CPU core's compiled networks behind the backend interface, on host
    arrays, counting every construction and call (``calls``) and the rows they ran."""

    name = "host-twin"

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()

    def swarm(self, layers: Sequence[LayerWeights], activation: ActivationName) -> dv.SwarmForward:
        self.calls["swarm"] += 1
        return _TwinSwarm(self, layers, activation)

    def encoder(
        self,
        layers: Sequence[LayerWeights],
        mu: LayerWeights,
        logvar: LayerWeights | None = None,
        activation: ActivationName = "relu",
    ) -> dv.EncoderForward:
        self.calls["encoder"] += 1
        return _TwinEncoder(self, _core.VAEEncoder(list(layers), mu, logvar, activation))


def _host_input(x: Any) -> NDArray[np.float32]:
    assert isinstance(x, np.ndarray), type(x)  # host memory, as the pipeline hands it over
    assert x.dtype == np.float32
    assert x.ndim == 2
    return x


class _TwinSwarm:
    def __init__(self, owner: HostTwin, layers: Sequence[LayerWeights], activation: str) -> None:
        self.owner = owner
        self.activation = activation
        self.core = _core.Swarm(list(layers), activation)

    @property
    def n_agents(self) -> int:
        return int(self.core.n_agents)

    def forward(self, x: NDArray[np.float32]) -> NDArray[np.float32]:
        self.owner.calls["swarm.forward"] += 1
        self.owner.calls["swarm.rows"] += int(x.shape[0])
        out: NDArray[np.float32] = np.array(self.core.forward(_host_input(x)))
        return out

    def set_weights(self, layers: Sequence[LayerWeights]) -> None:
        self.owner.calls["swarm.set_weights"] += 1
        self.core = _core.Swarm(list(layers), self.activation)


class _TwinEncoder:
    def __init__(self, owner: HostTwin, core: Any) -> None:
        self.owner = owner
        self.core = core

    def encode(self, x: NDArray[np.float32]) -> NDArray[np.float32]:
        self.owner.calls["encoder.encode"] += 1
        self.owner.calls["encoder.rows"] += int(x.shape[0])
        out: NDArray[np.float32] = np.array(self.core.encode(_host_input(x), False))
        return out


def _bypassed(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("a forward pass bypassed the device backend")


@pytest.fixture
def cpu_forwards_forbidden(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Any forward pass that does not go through the backend under test fails the test."""
    monkeypatch.setattr(Swarm, "forward", _bypassed)
    monkeypatch.setattr(VAEEncoder, "encode", _bypassed)
    return


def checkpoint_bytes(state: TrainingState, folder: Path) -> bytes:
    return checkpoints.save(folder, state).read_bytes()


def same_table(a: Any, b: Any) -> bool:
    """Equal column by column, NaN equal to NaN, bit for bit otherwise."""
    if a.column_names != b.column_names or a.num_rows != b.num_rows:
        return False
    for name in a.column_names:
        x = a.column(name).to_numpy(zero_copy_only=False)
        y = b.column(name).to_numpy(zero_copy_only=False)
        if x.dtype.kind == "f":
            if x.tobytes() != y.tobytes():
                return False
        elif not np.array_equal(x, y):
            return False
    return True


def assert_same_run(a: BacktestRun, b: BacktestRun) -> None:
    for name in TABLES:
        assert same_table(getattr(a, name), getattr(b, name)), name
    assert a.trades is not None
    assert b.trades is not None
    assert same_table(a.trades, b.trades)
    strip = ("timing", "versions")
    assert {k: v for k, v in a.report.items() if k not in strip} == {
        k: v for k, v in b.report.items() if k not in strip
    }


def training_forwards(config: Any) -> Counter[str]:
    """The forward calls one training run makes: every generation (twice with fine-tuning),
    the selection and the gate; one encoder pass; one weight refresh per reproduction and per
    fine-tuning."""
    g = config.evolution.generations
    per_generation = 2 if config.evolution.finetune_steps > 0 else 1
    return Counter(
        {
            "encoder": 1,
            "encoder.encode": 1,
            "swarm": 1,
            "swarm.forward": g * per_generation + 2,
            "swarm.set_weights": (g - 1) + (g if per_generation == 2 else 0),
        }
    )


def forward_calls(calls: Counter[str]) -> Counter[str]:
    return Counter({k: v for k, v in calls.items() if not k.endswith(".rows")})


# ---------------------------------------------------------------- the seam, on every machine
@pytest.mark.parametrize("finetune_steps", [0, 2])
def test_training_routes_every_forward_through_the_backend_and_gives_the_same_checkpoint(
    candles: Candles, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, finetune_steps: int
) -> None:
    config = msgspec.structs.replace(
        TRAINING,
        evolution=msgspec.structs.replace(TRAINING.evolution, finetune_steps=finetune_steps),
    )
    window = candles.slice(0, 3_000)
    cpu = train(window, config)
    expected = checkpoint_bytes(cpu.state, tmp_path / "cpu")
    twin = HostTwin()
    with monkeypatch.context() as patch:
        patch.setattr(Swarm, "forward", _bypassed)
        patch.setattr(VAEEncoder, "encode", _bypassed)
        seen: list[int] = []
        result = train(
            window, config, device=twin, on_generation=lambda s: seen.append(s.generation)
        )
    assert seen == [1, 2]
    assert forward_calls(twin.calls) == training_forwards(config)
    assert twin.calls["encoder.rows"] > 0
    assert twin.calls["swarm.rows"] > 0
    assert checkpoint_bytes(result.state, tmp_path / "twin") == expected
    # the returned model holds host weights only, whatever the device
    assert isinstance(result.model.swarm, Swarm)
    assert isinstance(result.model.encoder, VAEEncoder)


@pytest.mark.usefixtures("cpu_forwards_forbidden")
def test_a_checkpoint_backtest_routes_every_forward_through_the_backend(
    candles: Candles, cpu_training: TrainResult, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = every_agent_votes(cpu_training.state)
    config = BacktestConfig(risk=LOOSE, training=TRAINING)
    twin = HostTwin()
    run = backtest(candles, config, state=state, device=twin)
    assert forward_calls(twin.calls) == Counter(
        {"encoder": 1, "encoder.encode": 1, "swarm": 1, "swarm.forward": 1}
    )
    monkeypatch.undo()  # the CPU run, with the CPU core's own classes
    cpu = backtest(candles, config, state=state)
    assert cpu.fills.num_rows > 10  # trades to compare
    assert_same_run(run, cpu)


@pytest.mark.usefixtures("cpu_forwards_forbidden")
def test_a_walk_forward_backtest_routes_training_and_trading_through_the_backend(
    candles: Candles, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = WALK_FORWARD
    twin = HostTwin()
    run = backtest(candles, config, device=twin)
    per_fold = training_forwards(TRAINING) + Counter(
        {"encoder": 1, "encoder.encode": 1, "swarm": 1, "swarm.forward": 1}
    )
    assert forward_calls(twin.calls) == Counter({k: 2 * v for k, v in per_fold.items()})
    monkeypatch.undo()
    cpu = backtest(candles, config)
    assert cpu.fills.num_rows > 100  # trades to compare
    assert_same_run(run, cpu)


def test_the_backend_builds_the_model_with_the_states_weights(
    candles: Candles, cpu_training: TrainResult
) -> None:
    """engine._on_backend: the swarm and encoder of the state, consensus and gate unchanged."""
    state = every_agent_votes(cpu_training.state)
    model = state.to_model()
    twin = HostTwin()
    moved = engine._on_backend(model, state, twin)
    assert isinstance(moved.swarm, _TwinSwarm)
    assert isinstance(moved.encoder, _TwinEncoder)
    assert moved.swarm.activation == state.config.evolution.activation
    np.testing.assert_array_equal(moved.weights, model.weights)
    assert moved.gate == model.gate
    assert moved.regime is model.regime
    a, b = moved.signals(candles), model.signals(candles)
    assert a.agent_signals.tobytes() == b.agent_signals.tobytes()
    assert a.consensus.tobytes() == b.consensus.tobytes()


def test_forward_backend_selects_by_name() -> None:
    assert dv.forward_backend() is dv.CPU_BACKEND
    assert dv.forward_backend("cpu") is dv.CPU_BACKEND
    twin = HostTwin()
    assert dv.forward_backend(twin) is twin
    for bad in ("gpu", "cuda:", "cuda:x", "CUDA", ""):
        with pytest.raises(ValueError, match="device must be 'cpu', 'cuda' or 'cuda:N'"):
            dv.forward_backend(bad)
    rng = np.random.default_rng(0)
    layers = [(rng.normal(size=(3, 4, 1)).astype(np.float32), np.zeros((3, 1), np.float32))]
    assert isinstance(dv.CPU_BACKEND.swarm(layers, "tanh"), Swarm)


def _config_file(folder: Path, config: BacktestConfig) -> Path:
    path = folder / "config.json"
    path.write_bytes(msgspec.json.encode(config))
    return path


@pytest.mark.usefixtures("cpu_forwards_forbidden")
def test_cli_device_cuda_reaches_the_engine_and_the_trainer(
    candles_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`colmena backtest --device cuda` and `colmena train --device cuda`, with the CUDA check
    answered yes and the CUDA backend replaced by the host twin: the runs go through it and
    write what `--device cpu` writes."""
    twin = HostTwin()
    monkeypatch.setattr(dv, "cuda_unavailable_reason", lambda device=0: None)
    monkeypatch.setattr(dv, "_CudaBackend", lambda device: twin)
    config = _config_file(tmp_path, WALK_FORWARD)
    runner = CliRunner()
    args = ["backtest", str(candles_file), "--config", str(config), "--out"]
    gpu_run = runner.invoke(main, [*args, str(tmp_path / "cuda"), "--device", "cuda"])
    assert gpu_run.exit_code == 0, gpu_run.output
    assert twin.calls["swarm.forward"] > 0
    assert twin.calls["encoder.encode"] > 0
    train_args = ["train", str(candles_file), *TRAIN_OPTIONS]
    forwards = twin.calls["swarm.forward"]
    trained = runner.invoke(main, [*train_args, "--out", str(tmp_path / "tc"), "--device", "cuda"])
    assert trained.exit_code == 0, trained.output
    assert twin.calls["swarm.forward"] == forwards + 2 + 2  # two generations, selection, gate
    monkeypatch.undo()
    cpu_run = runner.invoke(main, [*args, str(tmp_path / "cpu"), "--device", "cpu"])
    assert cpu_run.exit_code == 0, cpu_run.output
    for name in ("decisions", "orders", "fills", "equity", "trades"):
        a = pq.read_table(tmp_path / "cuda" / f"{name}.parquet")
        b = pq.read_table(tmp_path / "cpu" / f"{name}.parquet")
        assert same_table(a, b), name
    assert pq.read_table(tmp_path / "cpu" / "fills.parquet").num_rows > 100
    trained_cpu = runner.invoke(main, [*train_args, "--out", str(tmp_path / "tp")])
    assert trained_cpu.exit_code == 0, trained_cpu.output
    [a] = checkpoints.list_checkpoints(tmp_path / "tc")[-1:]
    [b] = checkpoints.list_checkpoints(tmp_path / "tp")[-1:]
    assert a.read_bytes() == b.read_bytes()


# ---------------------------------------------------------------- without CUDA
@needs_no_cuda
def test_device_cuda_without_cuda_raises_before_any_work(candles: Candles) -> None:
    assert REASON is not None
    with pytest.raises(dv.CudaUnavailableError, match="device 'cuda:0'") as caught:
        dv.forward_backend("cuda")
    assert REASON.split(";")[0] in str(caught.value)
    stages: list[str] = []
    with pytest.raises(dv.CudaUnavailableError):
        train(
            candles.slice(0, 3_000),
            TRAINING,
            device="cuda",
            on_vae_epoch=lambda *a: stages.append("vae"),
        )
    with pytest.raises(dv.CudaUnavailableError):
        backtest(
            candles, BacktestConfig(training=TRAINING), device="cuda:0", on_stage=stages.append
        )
    assert stages == []


# ---------------------------------------------------------------- on a GPU
def _first_difference(a: NDArray[Any], b: NDArray[Any]) -> str:
    diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
    return f"max |cuda - cpu| = {np.nanmax(diff):.3g} (contract 2e-6)"


@gpu
def test_gpu_training_gives_the_cpu_checkpoint_byte_for_byte(
    candles: Candles, cpu_training: TrainResult, tmp_path: Path
) -> None:
    result = train(candles.slice(0, 3_000), TRAINING, device="cuda")
    assert checkpoint_bytes(result.state, tmp_path / "cuda") == checkpoint_bytes(
        cpu_training.state, tmp_path / "cpu"
    )


@gpu
@pytest.mark.parametrize("finetune_steps", [2])
def test_gpu_training_with_finetuning_gives_the_cpu_checkpoint(
    candles: Candles, tmp_path: Path, finetune_steps: int
) -> None:
    config = msgspec.structs.replace(
        TRAINING,
        evolution=msgspec.structs.replace(TRAINING.evolution, finetune_steps=finetune_steps),
    )
    window = candles.slice(0, 3_000)
    a = train(window, config, device="cuda").state
    b = train(window, config).state
    assert checkpoint_bytes(a, tmp_path / "cuda") == checkpoint_bytes(b, tmp_path / "cpu")


@gpu
def test_gpu_signals_are_the_cpu_bits(candles: Candles, cpu_training: TrainResult) -> None:
    state = every_agent_votes(cpu_training.state)
    model = state.to_model()
    on_gpu = engine._on_backend(model, state, dv.forward_backend("cuda"))
    assert isinstance(on_gpu.swarm, dv.CudaSwarm)
    a, b = on_gpu.signals(candles), model.signals(candles)
    assert a.agent_signals.tobytes() == b.agent_signals.tobytes(), _first_difference(
        a.agent_signals, b.agent_signals
    )
    assert a.consensus.tobytes() == b.consensus.tobytes()


@gpu
def test_gpu_checkpoint_backtest_gives_the_cpu_trades(
    candles: Candles, cpu_training: TrainResult
) -> None:
    state = every_agent_votes(cpu_training.state)
    config = BacktestConfig(risk=LOOSE, training=TRAINING)
    cpu = backtest(candles, config, state=state)
    assert cpu.fills.num_rows > 10
    assert_same_run(backtest(candles, config, state=state, device="cuda"), cpu)


@gpu
def test_gpu_walk_forward_backtest_gives_the_cpu_trades(candles: Candles) -> None:
    config = WALK_FORWARD
    assert_same_run(backtest(candles, config, device="cuda"), backtest(candles, config))


@gpu
def test_gpu_cli_backtest_and_train_write_what_the_cpu_writes(
    candles_file: Path, tmp_path: Path
) -> None:
    config = _config_file(tmp_path, WALK_FORWARD)
    runner = CliRunner()
    args = ["backtest", str(candles_file), "--config", str(config), "--out"]
    for device in ("cuda", "cpu"):
        result = runner.invoke(main, [*args, str(tmp_path / device), "--device", device])
        assert result.exit_code == 0, result.output
    for name in ("decisions", "orders", "fills", "equity", "trades"):
        a = pq.read_table(tmp_path / "cuda" / f"{name}.parquet")
        b = pq.read_table(tmp_path / "cpu" / f"{name}.parquet")
        assert same_table(a, b), name
    train_args = ["train", str(candles_file), *TRAIN_OPTIONS]
    for device in ("cuda", "cpu"):
        out = tmp_path / f"train-{device}"
        result = runner.invoke(main, [*train_args, "--out", str(out), "--device", device])
        assert result.exit_code == 0, result.output
    a = checkpoints.list_checkpoints(tmp_path / "train-cuda")[-1]
    b = checkpoints.list_checkpoints(tmp_path / "train-cpu")[-1]
    assert a.read_bytes() == b.read_bytes()
