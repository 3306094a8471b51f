"""The ``colmena`` command line (click + rich).

Commands: ``colmena features`` (market features of a candle file), ``colmena info`` (what this
build contains), ``colmena train``, ``colmena backtest``, ``colmena report``, ``colmena download``,
``colmena serve``, ``colmena up``, ``colmena replay-audit``, ``colmena backup``,
``colmena restore``.

Exit status (:data:`EXIT_USER_ERROR`, :data:`EXIT_OUTPUT_ERROR`): 0 done; 2 a user error found
before any work (a bad file, path, option or setting; an output folder that is not writable, has
too little free space for the command's estimate, or is locked by another colmena process): one
line on stderr, nothing written; 3 the work was done but its output could not be written (disk
full, read-only, I/O error, database down): one line saying what was kept and where, nothing
partial left; 1 anything else (a bug), except for ``colmena replay-audit``, where 1 means that
differences were found.
"""

from __future__ import annotations

import contextlib
import itertools
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click
import numpy as np
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from colmena import build_info
from colmena.atomic_write import (
    FolderLock,
    FolderLockedError,
    UnwritableFolderError,
    check_writable,
)
from colmena.features.fractional_diff import fracdiff, fracdiff_weights, log_returns, min_ffd_d

console = Console(stderr=True)


#: Exit status of a user error found before any work (see the module docstring).
EXIT_USER_ERROR = 2
_F = TypeVar("_F", bound=Callable[..., Any])

#: Exit status when the work was done but its output could not be written.
EXIT_OUTPUT_ERROR = 3


class UserError(click.ClickException):
    """A problem with what the user gave (a file, a path, an option, a missing prerequisite):
    one line on stderr, exit code 2, no traceback."""

    exit_code = EXIT_USER_ERROR


class OutputError(click.ClickException):
    """The work was done, but its output could not be written (disk full, read-only, I/O error,
    database down): one line saying what was kept and where, exit code 3, no traceback."""

    exit_code = EXIT_OUTPUT_ERROR


def _check_writable_folder(folder: Path, required_bytes: int = 0) -> None:
    """Before long work: ``folder`` is (or can become) a writable folder with room for
    ``required_bytes`` (a probe file is created and removed; see
    :func:`colmena.atomic_write.check_writable`)."""
    try:
        check_writable(folder, required_bytes=required_bytes)
    except UnwritableFolderError as exc:
        raise UserError(str(exc.strerror)) from exc


class _OneLineErrors(click.Group):
    """The command group, with every usage error (a bad option value, a missing argument, an
    unknown option) printed as one line, ``Error: colmena train: ... (see 'colmena train -h')``,
    instead of click's usage block; the exit status stays 2."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        try:
            super().main(args, prog_name, complete_var, False, **extra)
        except click.UsageError as exc:
            where = exc.ctx.command_path if exc.ctx is not None else "colmena"
            click.echo(f"Error: {where}: {exc.format_message()} (see '{where} -h')", err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click.exceptions.Exit as exc:
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)
        sys.exit(0)


@click.group(cls=_OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="colmena-swarm")
def main() -> None:
    """colmena: a swarm of neural trading agents for crypto markets."""


@main.command()
def info() -> None:
    """Print what this build contains (backends, SIMD variants, CUDA devices)."""
    table = Table(show_header=False)
    for key, value in build_info().items():
        table.add_row(key, str(value))
    Console().print(table)


@main.command()
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--d", "d", type=click.FloatRange(0.0, 2.0), help="Order of differentiation.")
@click.option("--auto-d", is_flag=True, help="Use the smallest d that passes an ADF test.")
@click.option(
    "--threshold",
    type=click.FloatRange(min=0.0, min_open=True),
    default=None,
    help="FFD weight cut |w_k| >= threshold (default 1e-4 unless --window is given).",
)
@click.option("--window", type=click.IntRange(min=1), default=None, help="FFD window in bars.")
@click.option(
    "--confidence",
    type=click.FloatRange(0.0, 1.0, min_open=True, max_open=True),
    default=0.95,
    show_default=True,
    help="ADF confidence for --auto-d.",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the features to this Parquet file.",
)
@click.option("--force", is_flag=True, help="Replace the --out file if it exists.")
def features(
    path: Path,
    d: float | None,
    auto_d: bool,
    threshold: float | None,
    window: int | None,
    confidence: float,
    out: Path | None,
    force: bool,
) -> None:
    """Load OHLCV candles from PATH (Parquet or CSV) and compute log returns and FFD.

    The FFD (fixed-width-window fractional differentiation, Lopez de Prado, AFML ch. 5) runs on
    log close prices. Output columns: ts (UTC), open, high, low, close, volume, after_gap (bar
    follows missing bars), log_return (from the previous bar; NaN on the first), ffd (NaN until
    the window is full). Gaps are reported, never filled.
    """
    from colmena.atomic_write import write_parquet_atomically
    from colmena.data.ohlcv import load_ohlcv

    if (d is None) == (not auto_d):
        raise click.UsageError("give exactly one of --d D and --auto-d")
    if out is not None:
        if out.exists() and not force:
            raise UserError(f"{out}: the file exists; pass --force to replace it")
        _check_writable_folder(out.parent)
    if threshold is not None and window is not None:
        raise click.UsageError("give at most one of --threshold and --window")
    if threshold is None and window is None:
        threshold = 1e-4
    started = time.perf_counter()
    adf: tuple[float, float] | None = None
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task("loading candles", total=4)
        try:
            candles = load_ohlcv(path)
        except (OSError, ValueError) as exc:
            raise UserError(str(exc)) from exc
        progress.update(task, advance=1, description="log returns")
        log_close = np.log(candles.close)
        returns = np.concatenate([[np.nan], log_returns(candles.close)])
        if auto_d:
            progress.update(task, advance=1, description="searching d (ADF)")
            try:
                found = min_ffd_d(
                    log_close, confidence=confidence, threshold=threshold, window=window
                )
            except ValueError as exc:
                raise UserError(str(exc)) from exc
            d = found.d
            adf = (found.adf_statistic, found.p_value)
        else:
            progress.update(task, advance=1)
        assert d is not None
        progress.update(task, advance=1, description="fractional differentiation")
        try:
            weights = fracdiff_weights(d, threshold=threshold, window=window)
        except ValueError as exc:  # a threshold or window beyond MAX_FFD_WEIGHTS
            raise UserError(f"{path}: {exc}") from exc
        if weights.size > len(candles):
            raise UserError(
                f"{path}: {len(candles)} candles are fewer than the FFD window of "
                f"{weights.size} weights (d={d:g}); use a longer file or a coarser --threshold"
            )
        ffd = np.full(len(candles), np.nan)
        ffd[weights.size - 1 :] = fracdiff(log_close, d, threshold=threshold, window=window)
        if adf is None:
            from colmena.features.fractional_diff import adf_test

            adf = adf_test(ffd[weights.size - 1 :], 1)
        if out is not None:
            progress.update(task, advance=1, description=f"writing {out}")
            import pyarrow as pa

            table = candles.to_arrow()
            after_gap = np.zeros(len(candles), dtype=bool)
            after_gap[candles.gaps.rows] = True
            table = table.append_column("after_gap", pa.array(after_gap))
            table = table.append_column("log_return", pa.array(returns))
            table = table.append_column("ffd", pa.array(ffd))
            try:
                write_parquet_atomically(table, out)
            except OSError as exc:
                raise OutputError(
                    f"the features were computed, but writing {out} failed ({_reason(exc)}); "
                    "nothing was written"
                ) from exc
        progress.update(task, completed=4)
    elapsed = time.perf_counter() - started

    gaps = candles.gaps
    summary = Table(title=f"features of {path.name}", show_header=False)
    summary.add_row("rows", f"{len(candles):,}")
    if len(candles):
        first = np.datetime64(int(candles.ts[0]), "ns")
        last = np.datetime64(int(candles.ts[-1]), "ns")
        summary.add_row("span", f"{first} .. {last} UTC")
    bar = candles.interval_seconds
    summary.add_row("bar", "unknown" if bar is None else f"{bar:g} s")
    summary.add_row(
        "gaps",
        f"{gaps.count:,} gaps, {gaps.missing_bars:,} bars missing "
        f"(longest {gaps.longest_missing_bars:,} bars); none filled",
    )
    summary.add_row("d", f"{d:.4g}" + (" (auto, ADF)" if auto_d else ""))
    summary.add_row("FFD window", f"{weights.size:,} weights")
    summary.add_row("ADF statistic", f"{adf[0]:.3f} (p-value {adf[1]:.3g})")
    if out is not None:
        summary.add_row("written", str(out))
    summary.add_row("time", f"{elapsed:.2f} s")
    Console().print(summary)


#: The largest ``--config`` file read (a BacktestConfig is a few kilobytes).
MAX_CONFIG_BYTES = 2**20


def _read_config(path: Path) -> bytes:
    """The bytes of a ``--config`` file: a regular file of at most :data:`MAX_CONFIG_BYTES`
    (never a FIFO or a device, which could block or never end).

    Raises
    ------
    UserError
        Naming the file and what is wrong with it.
    """
    import stat

    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise UserError(f"{path}: not a regular file (a JSON file is expected)")
        with path.open("rb") as fh:
            data = fh.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise UserError(f"{path}: cannot be read ({_reason(exc)})") from exc
    if len(data) > MAX_CONFIG_BYTES:
        raise UserError(f"{path}: larger than {MAX_CONFIG_BYTES:,} bytes; not a colmena config")
    return data


def _lock_until_done(ctx: click.Context, folder: Path) -> None:
    """Hold ``folder``'s :class:`~colmena.atomic_write.FolderLock` until the command ends,
    creating the missing parent folders it lives in (removed again at the end if still empty).

    Raises
    ------
    UserError
        Another colmena process holds it (naming it), or the lock cannot be created.
    """
    created = []
    parent = folder.absolute().parent
    while not parent.exists():
        created.append(parent)
        parent = parent.parent
    lock = FolderLock(folder)

    def release() -> None:
        lock.release()
        for path in created:  # innermost first
            with contextlib.suppress(OSError):
                path.rmdir()

    ctx.call_on_close(release)
    try:
        folder.absolute().parent.mkdir(parents=True, exist_ok=True)
        lock.acquire()
    except FolderLockedError as exc:
        raise UserError(str(exc.strerror)) from exc
    except OSError as exc:
        raise UserError(f"{folder}: cannot be locked ({_reason(exc)})") from exc


def _reason(exc: BaseException) -> str:
    """An OSError as one short phrase: "[Errno 28] No space left on device: 'path'" becomes
    "No space left on device"; other errors their message."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)


def _checkpoint_bytes(config: Any) -> int:
    """Free space ``colmena train`` asks for before it starts: 6 checkpoints (the 5 kept and one
    being written), each about 4 bytes per agent weight three times over (weights and two Adam
    moments), 64 bytes of lineage per agent and generation, the VAE, and 1 MiB of headers."""
    from colmena.features.market_state import FEATURE_NAMES

    evolution, vae = config.evolution, config.vae
    widths = [vae.latent_dim + len(FEATURE_NAMES), *evolution.hidden, 1]
    per_agent = sum(a * b + b for a, b in itertools.pairwise(widths))
    vae_widths = [len(FEATURE_NAMES) * config.features.state_bars, *vae.hidden, vae.latent_dim]
    vae_weights = sum(a * b + b for a, b in itertools.pairwise(vae_widths))
    one = (
        12 * evolution.agents * per_agent
        + 64 * evolution.agents * evolution.generations
        + 4 * vae_weights
        + 2**20
    )
    return int(6 * one)


def _exchange_options(f: Any) -> Any:
    """The options that name an exchange source of candles (download, train and backtest)."""
    options = [
        click.option("--exchange", default=None, help="ccxt exchange id, e.g. binance."),
        click.option("--symbol", default="BTC/USDT", show_default=True),
        click.option("--timeframe", default="1m", show_default=True),
        click.option(
            "--days",
            type=click.FloatRange(min=0.0, min_open=True),
            default=365.0,
            show_default=True,
            help="How many days back from now (or --until).",
        ),
        click.option("--until", default=None, help="End of the window, ISO time (default: now)."),
        click.option(
            "--api-url",
            default=None,
            help="Send the exchange's REST calls here (a proxy or a local mirror).",
        ),
        click.option(
            "--cache-dir",
            type=click.Path(file_okay=False, path_type=Path),
            default=None,
            help="Candle cache (default: the user cache directory).",
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _device_option(f: Any) -> Any:
    """--device (train and backtest): where the swarm's numbers run."""
    return click.option(
        "--device",
        type=click.Choice(["cpu", "cuda"]),
        default="cpu",
        show_default=True,
        help="Where the neural forward passes (VAE encoder, swarm) run: the CPU core, or its "
        "CUDA twins on GPU 0 (needs a build with COLMENA_CUDA=ON and a visible GPU); the "
        "results are the same.",
    )(f)


def _check_device(device: str) -> None:
    """UserError (one line, exit 2) unless ``device`` can run the forward passes here
    (a CUDA build and a visible device for "cuda"); checked before any work."""
    if device == "cpu":
        return
    from colmena.model.device import cuda_unavailable_reason

    reason = cuda_unavailable_reason()
    if reason is not None:
        raise UserError(f"--device cuda: {reason}")


def _decision_options(f: Any) -> Any:
    """Decision interval and market type (shared by train and backtest)."""
    options = [
        click.option(
            "--decision-interval",
            default="4h",
            show_default=True,
            help="How often the agents decide (15m, 1h, 4h, 1d); orders fill at the next bar.",
        ),
        click.option(
            "--market",
            type=click.Choice(["spot", "margin"]),
            default="spot",
            show_default=True,
            help="spot: long only; margin: long and short, shorts pay a borrow cost.",
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return f


@main.command()
@click.argument("data", type=click.Path(dir_okay=False, path_type=Path), required=False)
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Checkpoint directory (created; the last checkpoints are kept).",
)
@click.option("--agents", type=click.IntRange(min=2), default=100, show_default=True)
@click.option("--generations", type=click.IntRange(min=1), default=30, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--eval-days",
    type=click.FloatRange(min=1.0),
    default=120.0,
    show_default=True,
    help="Calendar days in each generation's fitness window.",
)
@click.option("--vae-epochs", type=click.IntRange(min=1), default=20, show_default=True)
@click.option(
    "--fee-bps",
    type=click.FloatRange(min=0.0, max=1_000.0),
    default=10.0,
    show_default=True,
    help="Fee per fill in the fitness and the gate, basis points of traded notional.",
)
@_decision_options
@click.option(
    "--finetune-steps",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Adam fine-tuning steps per generation (needs torch).",
)
@click.option(
    "--resume",
    type=click.Path(path_type=Path),
    default=None,
    help="Continue the run in this checkpoint (a file, or a folder: its newest valid one) on "
    "the same DATA; options not given come from the checkpoint, --generations may grow.",
)
@_exchange_options
@_device_option
def train(
    data: Path | None,
    out_dir: Path,
    agents: int,
    generations: int,
    seed: int,
    eval_days: float,
    vae_epochs: int,
    fee_bps: float,
    decision_interval: str,
    market: str,
    finetune_steps: int,
    resume: Path | None,
    exchange: str | None,
    symbol: str,
    timeframe: str,
    days: float,
    until: str | None,
    api_url: str | None,
    cache_dir: Path | None,
    device: str,
) -> None:
    """Train the VAE and evolve a swarm of agents on the candles in DATA, checkpointing every
    generation into --out. DATA may be replaced by an exchange source (--exchange binance
    --symbol BTC/USDT --timeframe 1m --days N), downloaded and cached as `colmena download` does.

    The last part of DATA is held back: agents that beat flat on its first half vote, and the
    voted swarm must beat flat on its second half (the gate) to be traded. The same DATA,
    options and seed give the same checkpoints, byte for byte. A checkpoint is written after
    every generation (a killed run loses at most one) and at the end; --resume continues a run
    exactly as if it had never stopped.
    """
    import msgspec

    from colmena.data.ohlcv import load_ohlcv
    from colmena.execution.simulation import ExecutionSettings
    from colmena.model.decision import DecisionConfig
    from colmena.model.vae import VAEConfig, require_torch
    from colmena.persistence import checkpoint as checkpoints
    from colmena.training.config import EvolutionConfig, TrainConfig
    from colmena.training.state import TrainingState
    from colmena.training.trainer import train as run_training

    if data is not None and exchange is not None:
        raise click.UsageError("give a candle file DATA or --exchange, not both")
    if data is None and exchange is None:
        raise click.UsageError("give a candle file DATA (Parquet or CSV) or --exchange")
    _check_device(device)
    ctx = click.get_current_context()

    def given(name: str) -> bool:
        return ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT

    previous: TrainingState | None = None
    if resume is not None:
        if not resume.exists():
            raise UserError(f"{resume}: no such checkpoint file or folder")
        try:
            previous = checkpoints.load_path(resume)
        except (OSError, ValueError) as exc:
            raise UserError(str(exc)) from exc
    try:
        if previous is None:
            config = TrainConfig(
                seed=seed,
                vae=VAEConfig(epochs=vae_epochs),
                evolution=EvolutionConfig(
                    agents=agents,
                    generations=generations,
                    eval_days=eval_days,
                    finetune_steps=finetune_steps,
                    elite=min(5, agents - 1),
                    tournament_size=min(3, agents),
                ),
                decision=DecisionConfig(interval=decision_interval),
            )
            execution = ExecutionSettings(fee_bps=fee_bps, market=market)  # type: ignore[arg-type]
        else:
            # The checkpoint's settings; options given on the command line override them (and
            # training refuses any change but --generations, naming the field).
            config, execution = previous.config, previous.execution
            evolution = config.evolution
            changes = {
                name: value
                for name, value in (("agents", agents), ("generations", generations),
                                    ("eval_days", eval_days), ("finetune_steps", finetune_steps))
                if given(name)
            }  # fmt: skip
            if changes:
                evolution = msgspec.structs.replace(evolution, **changes)
            decision = config.decision
            if given("decision_interval"):
                decision = msgspec.structs.replace(decision, interval=decision_interval)
            vae = config.vae
            if given("vae_epochs"):
                vae = msgspec.structs.replace(vae, epochs=vae_epochs)
            config = msgspec.structs.replace(
                config, evolution=evolution, decision=decision, vae=vae,
                seed=seed if given("seed") else config.seed,
            )  # fmt: skip
            if given("fee_bps"):
                execution = msgspec.structs.replace(execution, fee_bps=fee_bps)
            if given("market"):
                execution = msgspec.structs.replace(execution, market=market)
            # re-run every validation of the nested structs on the final values
            config = msgspec.json.decode(msgspec.json.encode(config), type=TrainConfig)
            execution = msgspec.json.decode(msgspec.json.encode(execution), type=ExecutionSettings)
    except msgspec.ValidationError as exc:
        raise click.UsageError(str(exc)) from exc
    try:
        require_torch()
    except ImportError as exc:
        raise UserError(str(exc)) from exc
    _check_writable_folder(out_dir, _checkpoint_bytes(config))
    _lock_until_done(ctx, out_dir)  # one training per --out
    if data is None:
        assert exchange is not None
        data = _fetch(exchange, symbol, timeframe, days, until, api_url, cache_dir)
    started = time.perf_counter()
    try:
        candles = load_ohlcv(data)
    except (OSError, ValueError) as exc:
        raise UserError(str(exc)) from exc
    total = config.evolution.generations

    def saving_failed(exc: OSError, what: str) -> OutputError:
        """What was kept when a checkpoint cannot be written."""
        kept = checkpoints.list_checkpoints(out_dir)
        where = (
            f"the newest checkpoint saved is {kept[-1]}; free some space and continue with "
            f"`colmena train {data} --out {out_dir} --resume {out_dir}`"
            if kept
            else "no checkpoint of this run was saved"
        )
        return OutputError(f"{what}, but writing its checkpoint to {out_dir} failed "
                           f"({_reason(exc)}); {where}")  # fmt: skip

    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        vae_task = progress.add_task(
            "VAE epochs", total=config.vae.epochs, info="", visible=previous is None
        )
        gen_task = progress.add_task(
            "generations",
            total=total,
            completed=previous.generation if previous is not None else 0,
            info="",
        )

        def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
            progress.update(vae_task, completed=epoch, info=f"val loss {metrics['val_loss']:.4f}")

        def on_generation(state: TrainingState) -> None:
            # Checkpoint first: a run killed from here on loses nothing up to this generation.
            try:
                checkpoints.save(out_dir, state)
            except OSError as exc:
                raise saving_failed(exc, f"generation {state.generation} was trained") from exc
            if not progress.tasks[vae_task].finished:
                progress.update(vae_task, completed=config.vae.epochs)
            stats = state.history[-1]
            progress.update(
                gen_task,
                completed=stats.generation,
                info=f"best {stats.best_fitness:.2f}  median {stats.median_fitness:.2f}  "
                f"entropy {stats.entropy:.3f}",
            )

        try:
            result = run_training(
                candles,
                config,
                execution=execution,
                resume=previous,
                on_vae_epoch=on_epoch,
                on_generation=on_generation,
                device=device,
            )
        except (ValueError, ImportError) as exc:  # ImportError: training without torch
            raise UserError(str(exc)) from exc
    try:
        path = checkpoints.save(out_dir, result.state)
    except OSError as exc:
        raise saving_failed(exc, "training finished") from exc
    elapsed = time.perf_counter() - started
    history = result.state.history
    summary = Table(title=f"trained on {data.name}", show_header=False)
    summary.add_row("candles", f"{len(candles):,}")
    if previous is not None:
        summary.add_row("resumed", f"after generation {previous.generation} ({resume})")
    summary.add_row("VAE", f"{result.vae.epochs_run} epochs (best {result.vae.best_epoch})")
    summary.add_row("agents", f"{result.state.n_agents}")
    summary.add_row("generations", f"{len(history)}")
    summary.add_row(
        "fitness (last)",
        f"best {history[-1].best_fitness:.3f}, median {history[-1].median_fitness:.3f}",
    )
    summary.add_row("entropy (last)", f"{history[-1].entropy:.3f}")
    gate = result.model.gate
    if gate is not None:
        summary.add_row(
            "validation gate",
            f"{'passed' if gate.passed else 'FAILED (the model stays flat)'}: {gate.reason}, "
            f"net {gate.net_return:+.2%} on the gate bars (buy and hold "
            f"{gate.buy_and_hold_return:+.2%})",
        )
    summary.add_row("checkpoint", str(path))
    summary.add_row("time", f"{elapsed:.1f} s")
    Console().print(summary)


def _fetch(
    exchange: str,
    symbol: str,
    timeframe: str,
    days: float,
    until: str | None,
    api_url: str | None,
    cache_dir: Path | None,
) -> Path:
    from colmena.data.exchange import (
        ExchangeUnavailableError,
        cache_path,
        download_ohlcv,
        make_client,
    )

    try:
        cache = cache_path(exchange, symbol, timeframe, cache_dir)
    except (ValueError, ImportError) as exc:
        raise UserError(str(exc)) from exc
    _check_writable_folder(cache.parent)  # before any download
    until_ms = None
    if until is not None:
        try:
            until_ms = int(np.datetime64(until.rstrip("Z"), "ms").astype(np.int64))
        except ValueError as exc:
            raise click.UsageError(f"--until: not an ISO time: {until!r}") from exc
    with Progress(
        TextColumn(f"downloading {exchange} {symbol} {timeframe}"),
        BarColumn(),
        TextColumn("{task.completed:,} candles"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task("download", total=None)
        try:
            client = make_client(exchange, api_url=api_url)
            return download_ohlcv(
                exchange, symbol, timeframe, days, until_ms=until_ms, cache_dir=cache_dir,
                client=client,
                on_page=lambda done, total: progress.update(task, completed=done, total=total),
            )  # fmt: skip
        except (ExchangeUnavailableError, ValueError, ImportError) as exc:
            raise UserError(str(exc)) from exc
        except OSError as exc:  # the cache cannot be written (disk full, read-only, ...)
            raise OutputError(
                f"downloading {exchange} {symbol} {timeframe}: writing the candle cache {cache} "
                f"failed ({_reason(exc)}); the cache as it was before is intact"
            ) from exc


@main.command()
@click.argument("data", type=click.Path(dir_okay=False, path_type=Path), required=False)
@click.option(
    "--checkpoint",
    type=click.Path(path_type=Path),
    default=None,
    help="Trade the whole file with this trained swarm (a checkpoint file or directory).",
)
@click.option(
    "--train-frac",
    type=click.FloatRange(0.0, 1.0, min_open=True, max_open=True),
    default=0.7,
    show_default=True,
    help="Walk-forward: share of the bars in each training window.",
)
@click.option("--folds", type=click.IntRange(min=1, max=1_000), default=1, show_default=True)
@click.option("--agents", type=click.IntRange(min=2), default=100, show_default=True)
@click.option("--generations", type=click.IntRange(min=1), default=30, show_default=True)
@click.option("--vae-epochs", type=click.IntRange(min=1), default=20, show_default=True)
@click.option(
    "--fee-bps", type=click.FloatRange(min=0.0, max=1_000.0), default=10.0, show_default=True
)
@click.option(
    "--slippage-bps", type=click.FloatRange(min=0.0, max=1_000.0), default=2.0, show_default=True
)
@_decision_options
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("colmena-run"),
    show_default=True,
    help="Run folder (written atomically). A folder holding anything but an earlier colmena "
    "run is refused.",
)
@click.option(
    "--force", is_flag=True, help="Replace an earlier colmena run in --out (never other files)."
)
@click.option("--db", default=None, help="Also record the run in PostgreSQL (a libpq DSN).")
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="JSON file with every setting (BacktestConfig: risk limits, costs, training); "
    "options given on the command line override it.",
)
@_exchange_options
@_device_option
def backtest(
    data: Path | None,
    checkpoint: Path | None,
    train_frac: float,
    folds: int,
    agents: int,
    generations: int,
    vae_epochs: int,
    fee_bps: float,
    slippage_bps: float,
    decision_interval: str,
    market: str,
    seed: int,
    out_dir: Path,
    force: bool,
    db: str | None,
    config_file: Path | None,
    exchange: str | None,
    symbol: str,
    timeframe: str,
    days: float,
    until: str | None,
    api_url: str | None,
    cache_dir: Path | None,
    device: str,
) -> None:
    """Backtest the swarm on the candles in DATA, out of sample, with risk and paper execution.

    Without --checkpoint: walk-forward (train on the first --train-frac of the bars, trade the
    rest; with --folds K the rest is split into K segments, each traded by a swarm trained on
    the window just before it). Each training window holds back its last 30%: the agents that
    beat flat on its first half vote, and the voted swarm must beat flat on its second half to
    trade its fold; otherwise the fold stays flat and says why. The agents decide every
    --decision-interval; orders fill at the next bar's open. DATA may be replaced by an exchange
    source (--exchange binance --symbol BTC/USDT --timeframe 1m --days N), downloaded and cached
    first. Writes bars, decisions, orders, fills and equity as Parquet, report.json (metrics
    next to flat, buy-and-hold, exposure-matched buy-and-hold and momentum) and a self-contained
    report.html to --out.
    """
    import msgspec

    from colmena.backtest.engine import BacktestConfig
    from colmena.backtest.engine import backtest as run_backtest
    from colmena.data.ohlcv import load_ohlcv
    from colmena.model.vae import require_torch
    from colmena.persistence import checkpoint as checkpoints
    from colmena.persistence.run_folder import (
        RunFolderError,
        estimate_run_bytes,
        is_run_folder,
        read_run_id,
        reserve_run_folder,
        write_run,
    )
    from colmena.training.state import TrainingState

    if data is not None and exchange is not None:
        raise click.UsageError("give a candle file DATA or --exchange, not both")
    if data is None and exchange is None:
        raise click.UsageError("give a candle file DATA (Parquet or CSV) or --exchange")
    _check_device(device)
    ctx = click.get_current_context()

    def given(name: str) -> bool:
        return ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT

    try:
        if config_file is not None:
            # The file sets everything; options given on the command line override it.
            base = msgspec.json.decode(_read_config(config_file), type=BacktestConfig)
        else:
            base = BacktestConfig()  # the library's defaults: the CLI runs the same backtest
        evolution = base.training.evolution
        execution = base.execution
        if given("agents"):
            evolution = msgspec.structs.replace(
                evolution, agents=agents, elite=min(evolution.elite, agents - 1),
                tournament_size=min(evolution.tournament_size, agents),
            )  # fmt: skip
        if given("generations"):
            evolution = msgspec.structs.replace(evolution, generations=generations)
        if given("fee_bps"):
            execution = msgspec.structs.replace(execution, fee_bps=fee_bps)
        if given("market"):
            execution = msgspec.structs.replace(execution, market=market)
        if given("slippage_bps"):
            execution = msgspec.structs.replace(execution, slippage_bps=slippage_bps)
        vae = base.training.vae
        if given("vae_epochs"):
            vae = msgspec.structs.replace(vae, epochs=vae_epochs)
        decision = base.training.decision
        if given("decision_interval"):
            decision = msgspec.structs.replace(decision, interval=decision_interval)
        training = msgspec.structs.replace(
            base.training, evolution=evolution, vae=vae, decision=decision
        )
        changes: dict[str, Any] = {"training": training, "execution": execution}
        if given("train_frac"):
            changes["train_fraction"] = train_frac
        if given("folds"):
            changes["folds"] = folds
        if given("seed"):
            changes["seed"] = seed
            changes["training"] = msgspec.structs.replace(training, seed=seed)
        config = msgspec.structs.replace(base, **changes)
        # re-run every validation of the nested structs on the final values
        config = msgspec.json.decode(msgspec.json.encode(config), type=BacktestConfig)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        if config_file is not None:  # the file's content: one line, like any bad input file
            raise UserError(f"{config_file}: {exc}") from exc
        raise click.UsageError(str(exc)) from exc
    # Everything that can fail for a reason the user can fix is checked before any long work.
    # The run folder is locked from here until the run is written (a second colmena on the same
    # --out is refused), repaired if a killed run left it half-replaced, and checked.
    try:
        if checkpoint is None:
            require_torch()  # walk-forward trains
        reservation = ctx.with_resource(reserve_run_folder(out_dir, replace=force))
    except (RunFolderError, ImportError) as exc:
        raise UserError(str(exc)) from exc
    except OSError as exc:  # the parent folders or the lock file cannot be created
        raise UserError(f"{out_dir}: cannot be written ({_reason(exc)})") from exc
    for repair in reservation.repairs:
        console.print(f"[yellow]repaired[/yellow] {out_dir}: {repair} (left by a killed run)")
    if checkpoint is not None and not checkpoint.exists():
        raise UserError(f"{checkpoint}: no such checkpoint file or folder")
    if data is None:
        assert exchange is not None
        data = _fetch(exchange, symbol, timeframe, days, until, api_url, cache_dir)
    started = time.perf_counter()
    try:
        candles = load_ohlcv(data)
        ckpt = None
        if checkpoint is not None:
            ckpt = checkpoints.load_path(checkpoint)
    except (OSError, ValueError) as exc:
        raise UserError(str(exc)) from exc
    try:
        reservation.check_free_space(estimate_run_bytes(len(candles)))
    except RunFolderError as exc:
        raise UserError(str(exc)) from exc
    n_folds = 1 if ckpt is not None else config.folds
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description:<22}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    ) as progress:
        folds_task = progress.add_task("folds", total=n_folds, info="")
        vae_task = progress.add_task(
            "VAE epochs", total=config.training.vae.epochs, visible=False, info=""
        )
        gen_task = progress.add_task(
            "generations", total=config.training.evolution.generations, visible=False, info=""
        )
        stage = progress.add_task("starting", total=None, info="")
        fold = 0

        def on_stage(name: str) -> None:
            nonlocal fold
            progress.update(stage, description=name.split(" fold")[0])
            if name.startswith("training"):
                progress.update(folds_task, completed=fold, info=name.split("fold ")[-1])
                fold += 1
                progress.reset(vae_task, visible=True, info="")
                progress.reset(gen_task, visible=True, info="")
            elif name == "trading":
                progress.update(folds_task, completed=n_folds)

        def on_vae_epoch(epoch: int, metrics: dict[str, float]) -> None:
            progress.update(vae_task, completed=epoch, info=f"val loss {metrics['val_loss']:.4f}")

        def on_generation(state: TrainingState) -> None:
            stats = state.history[-1]
            if not progress.tasks[vae_task].finished:  # early stopping ended the VAE
                epochs = config.training.vae.epochs
                progress.update(vae_task, completed=epochs, info="early stop")
            progress.update(
                gen_task,
                completed=stats.generation,
                info=f"best {stats.best_fitness:.2f} median {stats.median_fitness:.2f} "
                f"entropy {stats.entropy:.2f}",
            )

        try:
            run = run_backtest(
                candles, config, state=ckpt, on_stage=on_stage,
                on_vae_epoch=on_vae_epoch, on_generation=on_generation, device=device,
            )  # fmt: skip
        except ImportError as exc:  # walk-forward training without torch
            raise UserError(str(exc)) from exc
        except ValueError as exc:
            raise UserError(f"{data}: {exc}") from exc
        progress.update(stage, description="writing the run directory")
        earlier = read_run_id(out_dir) if is_run_folder(out_dir) else None
        try:
            path = write_run(run, out_dir, reservation=reservation)
        except (OSError, RunFolderError) as exc:  # disk full, read-only, ...
            if is_run_folder(out_dir) and read_run_id(out_dir) != earlier:
                raise OutputError(  # failed after the rename: the directory fsync
                    f"the run was written to {out_dir}, but making it durable failed "
                    f"({_reason(exc)}); it may not survive a power cut"
                ) from exc
            raise OutputError(
                f"the backtest finished, but writing {out_dir} failed ({_reason(exc)}); "
                f"nothing was written{' and the earlier run is intact' if force else ''}: "
                "free some space or choose another --out and run it again"
            ) from exc
    if db is not None:
        from colmena.persistence.records import record_run

        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                run_id = record_run(db, run, run_id=read_run_id(path))
        except Exception as exc:  # a database error must not lose the run directory
            raise OutputError(
                f"the run is in {path}, but recording it in PostgreSQL failed: "
                f"{' '.join(str(exc).split())}"
            ) from exc
        for warning in caught:
            console.print(f"[yellow]warning:[/yellow] {warning.message}")
        console.print(f"recorded in PostgreSQL as run {run_id}")
    Console().print(_result_table(run.report, data.name))
    for warning in run.report["warnings"]:
        console.print(f"[yellow]warning:[/yellow] {warning}")
    console.print(
        f"run directory: {path}  (report: {path / 'report.html'})  "
        f"{time.perf_counter() - started:.1f} s"
    )


def _result_table(report: dict[str, Any], name: str) -> Table:
    """The swarm's out-of-sample metrics next to the baselines, with units."""
    data = report["data"]
    table = Table(
        title=f"{name}: {data['first'][:10]} to {data['last'][:10]}, {report['mode']}, "
        f"{'out of sample' if report['out_of_sample'] else 'NOT out of sample'}, decisions every "
        f"{report['decision_interval']}, {report['market']}"
    )
    columns = [("swarm", report["metrics"])] + [
        (key.replace("buy_and_hold", "buy & hold").replace("_exposure_matched", " (exp.)"), m)
        for key, m in report["baselines"].items()
    ]
    table.add_column("metric")
    for title, _ in columns:
        table.add_column(title, justify="right")

    def pct(v: object) -> str:
        return "n/a" if not isinstance(v, (int, float)) else f"{v:+.2%}"

    def share(v: object) -> str:
        return "n/a" if not isinstance(v, (int, float)) else f"{v:.2%}"

    def num(v: object) -> str:
        if not isinstance(v, (int, float)):
            return "n/a"
        return f"{v:,.0f}" if isinstance(v, int) or abs(v) >= 1_000 else f"{v:,.2f}"

    rows = [
        ("total return", "total_return", pct),
        ("Sharpe (daily, annualised)", "sharpe", num),
        ("Sortino (daily, annualised)", "sortino", num),
        ("max drawdown", "max_drawdown", share),
        ("time in market", "time_in_market", share),
        ("mean gross exposure", "mean_gross_exposure", share),
        ("fills", "n_fills", num),
        ("fees + slippage (quote)", "costs", num),
        ("net PnL (quote)", "net_pnl", num),
    ]
    for label, key, fmt in rows:
        cells = []
        for _, m in columns:
            value = (
                m["fees_paid"] + m["slippage_paid"] + m["borrow_paid"]
                if key == "costs"
                else m.get(key)
            )
            cells.append(fmt(value))
        table.add_row(label, *cells)
    gates = ", ".join(
        f"fold {f['fold']}: {'traded' if f['traded'] else 'gated flat'}" for f in report["folds"]
    )
    execution = report["config"]["execution"]
    table.caption = (
        f"starting capital {execution['initial_cash']:,.0f} (quote currency); fee "
        f"{execution['fee_bps']:g} bps, slippage {execution['slippage_bps']:g} bps + impact; "
        f"validation gate: {gates}"
    )
    return table


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--open", "open_browser", is_flag=True, help="Open report.html in a browser.")
def report(run_dir: Path, open_browser: bool) -> None:
    """Render report.html again from the run folder RUN_DIR (written by colmena backtest)."""
    from colmena.atomic_write import write_atomically
    from colmena.persistence.run_folder import RunFolderError, load_run, recover_run_folder
    from colmena.report.html import render_html

    lock = FolderLock(run_dir)  # not while a backtest replaces the run (its report would be stale)
    try:
        if run_dir.absolute().parent.is_dir():
            lock.acquire()
    except FolderLockedError as exc:
        raise UserError(str(exc.strerror)) from exc
    except OSError as exc:
        raise UserError(f"{run_dir}: cannot be locked ({_reason(exc)})") from exc
    try:
        if lock.held:
            recover_run_folder(run_dir)  # what a killed backtest left half-replaced
        run = load_run(run_dir, repair=False)
        html = render_html(run).encode("utf-8")
        path = write_atomically(run_dir / "report.html", lambda fh: fh.write(html))
    except RunFolderError as exc:
        raise UserError(str(exc)) from exc
    except OSError as exc:
        raise OutputError(
            f"writing {run_dir / 'report.html'} failed ({_reason(exc)}); the earlier "
            "report.html, if any, is intact"
        ) from exc
    finally:
        lock.release()
    console.print(f"report: {path}")
    if open_browser:
        import webbrowser

        if not webbrowser.open(path.resolve().as_uri()):
            console.print("no browser found: open the file above")


@main.command()
@_exchange_options
def download(
    exchange: str | None,
    symbol: str,
    timeframe: str,
    days: float,
    until: str | None,
    api_url: str | None,
    cache_dir: Path | None,
) -> None:
    """Download closed OHLCV candles from an exchange (ccxt) into the local Parquet cache.

    Paged and rate-limited, retried with backoff and jitter, resumed from the cache on the next
    call. Offline it fails at once: pass a candle file to the other commands instead.
    """
    from colmena.data.ohlcv import load_ohlcv

    if exchange is None:
        raise click.UsageError("--exchange is required (e.g. --exchange binance)")
    path = _fetch(exchange, symbol, timeframe, days, until, api_url, cache_dir)
    candles = load_ohlcv(path)
    summary = Table(title=f"{exchange} {symbol} {timeframe}", show_header=False)
    summary.add_row("candles", f"{len(candles):,}")
    summary.add_row("gaps", f"{candles.gaps.count:,} ({candles.gaps.missing_bars:,} bars missing)")
    summary.add_row("file", str(path))
    Console().print(summary)


#: The ``--config`` option of the live system's commands (``serve``, ``up``).
_live_config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="The live system's TOML configuration file.",
)


@main.command()
@click.argument("role", type=click.Choice(["ingest", "strategy", "risk", "execution", "recorder"]))
@_live_config_option
@click.option("--nats", "nats_url", default=None, help="NATS server URL (overrides [nats] url).")
@click.option("--db", default=None, help="PostgreSQL DSN for the recorder (else $COLMENA_DB_DSN).")
@click.option(
    "--partition",
    default="1/1",
    show_default=True,
    metavar="I/N",
    help="Strategy, risk or execution: handle only instance I's share of N of the symbols.",
)
@click.option(
    "--credentials",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The service's NATS credentials file (overrides [nats] credentials).",
)
def serve(
    role: str,
    config_path: Path,
    nats_url: str | None,
    db: str | None,
    partition: str,
    credentials: Path | None,
) -> None:
    """Run one service of the live system (paper trading on NATS) until SIGTERM or Ctrl-C.

    ROLE: ingest (replays the configured candle file, then exits), strategy, risk, execution or
    recorder. Each service reads and writes only the subjects of the wire contract
    (proto/asyncapi.json); a restarted service resumes where it stopped. A symbol is handled by
    one instance of a role at a time (a lease in NATS); --partition splits the symbols over
    instances, e.g. two strategy processes with --partition 1/2 and --partition 2/2.
    """
    import asyncio
    import signal

    from colmena.services.access import CredentialsError
    from colmena.services.config import ConfigError, load_config
    from colmena.services.daemons import ServiceError, run_role

    try:
        config = load_config(config_path)
    except ConfigError as exc:
        raise UserError(str(exc)) from None
    if credentials is not None:
        import msgspec

        nats = msgspec.structs.replace(config.nats, credentials=str(credentials))
        config = msgspec.structs.replace(config, nats=nats)
    url = nats_url or config.nats.url
    if url is None:
        raise UserError("no NATS server: give --nats URL or [nats] url in the configuration")
    index, _, of = partition.partition("/")
    if not (index.isdigit() and of.isdigit()):
        raise UserError(f"--partition {partition!r}: expected I/N, e.g. 1/2")
    share = (int(index), int(of))

    async def main_loop() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        return await run_role(role, config, url, stop, db_dsn=db, partition=share)

    try:
        count = asyncio.run(main_loop())
    except (ServiceError, CredentialsError) as exc:  # a bad credentials file: the user's
        raise UserError(str(exc)) from None
    except ConnectionError as exc:
        raise OutputError(str(exc)) from None
    click.echo(f"{role}: stopped after {count} messages", err=True)


def _data_dir_option(help_text: str) -> Callable[[_F], _F]:
    """--data-dir of the live commands (up, ctl, down): the folder `colmena up` works in."""
    option: Callable[[_F], _F] = click.option(
        "--data-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=Path("colmena-live"),
        show_default=True,
        help=help_text,
    )
    return option


@main.command()
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The live system's TOML configuration file (optional: the options below build one, "
    "and override the file's settings when both are given).",
)
@click.option(
    "--checkpoint",
    default=None,
    metavar="PATH",
    help="Checkpoint file, or folder (its newest valid checkpoint), that every symbol trades.",
)
@click.option(
    "--symbol",
    "symbols",
    multiple=True,
    metavar="BASE/QUOTE",
    help="Market to paper-trade, ccxt's unified symbol (e.g. BTC/USDT); repeat for several.",
)
@click.option(
    "--exchange",
    default=None,
    metavar="ID",
    help="Feed: live candles polled from this exchange through ccxt (e.g. binance).",
)
@click.option(
    "--replay",
    "replays",
    multiple=True,
    metavar="FILE",
    help="Feed: replay this candle file (Parquet or CSV); once per symbol, in the same order.",
)
@click.option(
    "--speed",
    type=float,
    default=None,
    help="Replay at this many times real time (default 0: as fast as the services go).",
)
@_data_dir_option("Embedded servers' data, the services' logs, endpoints.json and colmena.toml.")
@click.option("--nats", "nats_url", default=None, help="Use this NATS server (else embedded).")
@click.option("--db", default=None, help="Use this PostgreSQL DSN (else embedded).")
@click.option("--quiet", is_flag=True, help="No live console.")
def up(
    config_path: Path | None,
    checkpoint: str | None,
    symbols: tuple[str, ...],
    exchange: str | None,
    replays: tuple[str, ...],
    speed: float | None,
    data_dir: Path,
    nats_url: str | None,
    db: str | None,
    quiet: bool,
) -> None:
    """Paper-trade on one machine: embedded NATS and PostgreSQL (unless given), every service
    supervised and restarted on crash, a live console; Ctrl-C stops it all cleanly.

    \b
    With no configuration file, from a checkpoint (colmena train) and a feed:
      colmena up --checkpoint colmena-ckpt --symbol BTC/USDT --exchange binance
      colmena up --checkpoint colmena-ckpt --symbol BTC/USDT --replay candles.parquet

    --exchange polls the exchange's closed candles every 60 s; --replay publishes a file (at
    --speed times real time; 0, the default, as fast as the services go). Every symbol trades
    the one --checkpoint; --replay is given once per --symbol, in the same order. Risk limits and
    execution costs are the library's defaults. The configuration is written to
    DATA_DIR/colmena.toml, and the services run with it: edit it and start again with --config
    DATA_DIR/colmena.toml (an existing file there that holds another configuration is never
    overwritten). Given with --config FILE, each option replaces that one setting of the file
    and keeps the rest: --symbol the list of symbols (a symbol of the file keeps its checkpoint
    and candle file), --checkpoint every symbol's checkpoint, --replay every symbol's candle
    file (one per symbol, given or the file's, in order) and the feed, --exchange the feed (the
    file's other [feed] settings, such as api_url, are kept), --speed the replay's pace. --nats
    and --db are never written to the file.
    """
    import asyncio
    from datetime import datetime, timezone

    from rich.live import Live

    from colmena.services.config import ConfigError, load_config
    from colmena.services.nats_server import NatsServerError
    from colmena.services.up import (
        Supervisor,
        UpOptions,
        check_config,
        resolve_config,
        run_up,
        symbol_status,
        write_config,
    )

    options = UpOptions(checkpoint, symbols, exchange, replays, speed)
    try:
        base = load_config(config_path) if config_path is not None else None
        if base is not None and not options.given():
            config = base
        else:
            config = resolve_config(options, base, base_name=str(config_path))
    except ConfigError as exc:
        raise UserError(str(exc)) from None
    try:
        check_config(config)  # every checkpoint loads, the feed can be built
    except ConfigError as exc:
        where = f"{config_path}: " if config_path is not None and not options.given() else ""
        raise UserError(where + str(exc)) from None
    run_path = config_path
    if options.given():
        try:  # before anything else goes into DATA_DIR: an error here leaves nothing there
            run_path = write_config(config, data_dir, source=config_path)
        except ConfigError as exc:
            raise UserError(str(exc)) from None
        except OSError as exc:
            raise UserError(
                f"{data_dir}: cannot write colmena.toml: {exc.strerror or exc}"
            ) from None
        click.echo(
            f"configuration: {run_path} (edit it and start again with: colmena up --config "
            f"{run_path})",
            err=True,
        )
    _check_writable_folder(data_dir)
    assert run_path is not None
    names = [s.symbol for s in config.symbols]
    console = Console(stderr=True)

    def table(supervisor: Supervisor, endpoints: dict[str, Any]) -> Table:
        grid = Table(title=f"colmena up — NATS {endpoints['nats']}", expand=False)
        for column in ("symbol", "newest candle (UTC)", "equity", "position", "decision",
                       "state", "lag (bars)"):  # fmt: skip
            grid.add_column(column)
        try:
            operator = endpoints.get("operator_credentials")
            rows = asyncio.run(
                symbol_status(
                    endpoints["nats"],
                    names,
                    config.bar_seconds,
                    credentials=None if operator is None else Path(operator),
                )
            )
        except (ConnectionError, OSError):
            rows = []
        for r in rows:
            when = (datetime.fromtimestamp(r.candle_ts / 1e9, tz=timezone.utc).strftime(
                "%Y-%m-%d %H:%M") if r.candle_ts is not None else "-")  # fmt: skip
            equity = "-" if r.equity is None else f"{r.equity:,.2f}"
            position = "-" if r.position is None else f"{r.position:.6g}"
            lag = "-" if r.lag_bars is None else str(r.lag_bars)
            grid.add_row(r.symbol, when, equity, position, r.verdict or "-",
                         r.trading_state or "-", lag)  # fmt: skip
        services = ", ".join(
            f"{c.role} {'done' if c.finished else 'up' if c.process else 'restarting'}"
            + (f" ({c.restarts} restarts)" if c.restarts else "")
            for c in supervisor.children.values()
        )
        grid.caption = services
        return grid

    live = None if quiet else Live(console=console, auto_refresh=False)

    def on_tick(supervisor: Supervisor, endpoints: dict[str, Any]) -> None:
        if live is not None:
            live.update(table(supervisor, endpoints), refresh=True)

    try:
        if live is not None:
            live.start()
        codes = run_up(config, run_path, data_dir, nats_url=nats_url, db=db, on_tick=on_tick)
    except NatsServerError as exc:
        raise OutputError(str(exc)) from None
    finally:
        if live is not None:
            live.stop()
    bad = {role: code for role, code in codes.items() if code not in (0, None)}
    click.echo(
        "stopped: " + ", ".join(f"{r} {c}" for r, c in codes.items()) + f"; data in {data_dir}",
        err=True,
    )
    if bad:
        raise OutputError(f"services that did not stop cleanly: {bad}")


def _nats_url(nats_url: str | None, data_dir: Path) -> str:
    """The NATS server of ``--nats``, else the one ``colmena up`` wrote to DATA_DIR."""
    import json

    if nats_url is not None:
        return nats_url
    path = data_dir / "endpoints.json"
    try:
        endpoints = json.loads(path.read_text())
        return str(endpoints["nats"])
    except FileNotFoundError:
        raise UserError(
            f"no NATS server: give --nats URL, or the --data-dir of a running `colmena up` "
            f"({path} not found)"
        ) from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{path}: not a `colmena up` endpoints file ({_reason(exc)})") from None


@main.command("down")
@_data_dir_option("The data folder of the `colmena up` to stop.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=1.0),
    default=120.0,
    show_default=True,
    help="Seconds to wait for it to stop.",
)
def down(data_dir: Path, timeout: float) -> None:
    """Stop the `colmena up` running on --data-dir, gracefully: each service finishes the
    message in hand and saves its state, then the embedded servers stop (their data stay).
    Pause first (`colmena ctl pause`) to stop with no order in flight. Exit status: 0 stopped,
    2 none running, 3 still stopping after --timeout."""
    from colmena.services.up import UpNotRunningError, stop_up

    try:
        pid = stop_up(data_dir, timeout=timeout)
    except UpNotRunningError as exc:
        raise UserError(str(exc)) from None
    except TimeoutError as exc:
        raise OutputError(str(exc)) from None
    click.echo(f"stopped `colmena up` (pid {pid}); data in {data_dir}", err=True)


@main.command("ctl")
@click.argument("action", type=click.Choice(["status", "pause", "resume", "flatten", "halt",
                                             "reset"]))  # fmt: skip
@click.option("--symbol", default=None, help="One symbol (default: every symbol).")
@click.option("--reason", default="", help="Why (recorded; required for reset).")
@click.option("--operator", default=None, help="Who asks (recorded; default: user@host).")
@_data_dir_option("The data folder of `colmena up` (its endpoints.json names the NATS server).")
@click.option("--nats", "nats_url", default=None, help="The NATS server (else from --data-dir).")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.1, max=600.0),
    default=5.0,
    show_default=True,
    help="Seconds to wait for the risk service's answer (3 tries, the same request id).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the risk service's reply as JSON.")
def ctl(
    action: str,
    symbol: str | None,
    reason: str,
    operator: str | None,
    data_dir: Path,
    nats_url: str | None,
    timeout: float,
    as_json: bool,
) -> None:
    """Control the running system: status, pause, resume, flatten, halt or reset (of a HALT).

    The risk service answers and applies the action from the next bar's open, for --symbol or
    every symbol: pause (reduce-only until resume), resume, flatten (close the position, then
    pause), halt (flatten and stay HALTED until reset), reset (needs --reason; without --symbol
    it also resets the account's kill switch). Each action is recorded with who, when and why
    (the records' live_control table). Exit status: 0 done, 2 refused or a user error, 3 no
    risk service answered.
    """
    import asyncio
    import os
    from datetime import datetime, timezone

    import msgspec

    from colmena.services import access
    from colmena.services.control import ControlError, ControlUnavailableError, send_control

    url = _nats_url(nats_url, data_dir)
    # The operator's NATS identity: $COLMENA_NATS_CREDENTIALS, else the one `colmena up` made.
    named = os.environ.get(access.CREDENTIALS_ENV)
    credentials = Path(named) if named else access.operator_credentials(data_dir)
    try:
        options = access.client_options(credentials) if named or credentials.exists() else {}
    except access.CredentialsError as exc:
        raise UserError(f"ctl {action}: {exc}") from None
    try:
        reply = asyncio.run(
            send_control(url, action, symbol=symbol, reason=reason, operator=operator,
                         timeout=timeout, connect_options=options)
        )  # fmt: skip
    except ControlError as exc:
        raise UserError(f"ctl {action}: {exc}") from None
    except ControlUnavailableError as exc:
        raise OutputError(f"ctl {action}: {exc}") from None
    if as_json:
        click.echo(msgspec.json.encode(reply).decode())
        return
    out = Console()

    def when(ts: int | None) -> str:
        if not ts:
            return "-"
        return datetime.fromtimestamp(ts / 1e9, tz=timezone.utc).strftime("%Y-%m-%d %H:%M")

    out.print(f"colmena ctl {action} — NATS {url}", highlight=False)
    for st in reply.symbols:
        line = (
            f"{st.symbol}: {st.trading_state}"
            + (" (a person's pause)" if st.operator_paused else "")
            + f", newest bar {when(st.closed_ts)} UTC, equity {st.equity:,.2f}, drawdown "
            f"{st.drawdown:.2%}, open order: {st.open_order:.8g}, pending: "
            f"{', '.join(st.pending) or '-'}"
            + (f", applies from {when(st.applies_from_ts)} UTC" if st.applies_from_ts else "")
        )
        out.print(line, highlight=False, soft_wrap=True)
    if reply.account is not None:
        a = reply.account
        out.print(
            f"account kill switch: {'HALTED at ' + when(a.halted_ts) if a.halted else 'armed'}"
            + (f" (drawdown {a.drawdown:.2%})" if a.halted else "")
        )
    if action != "status":
        out.print(
            f"{action}: {'accepted' if reply.accepted else 'already accepted'} "
            f"(request {reply.request_id}); applies from the next bar's open"
        )


@main.command("replay-audit")
@click.option(
    "--db",
    "dsn",
    required=True,
    envvar="COLMENA_DB_DSN",
    help="PostgreSQL DSN of the recorder's database (else $COLMENA_DB_DSN).",
)
@click.option("--from", "start", required=True, help="First bar (open time), ISO-8601; UTC.")
@click.option("--to", "end", required=True, help="Last bar (open time), ISO-8601; UTC.")
@click.option("--symbol", default=None, help="Audit this symbol only (default: every one).")
def replay_audit(dsn: str, start: str, end: str, symbol: str | None) -> None:
    """Reproduce the recorded decisions of a period from the recorded candles, checkpoint and
    settings with the services' own handlers, and compare every recorded signal, gate, order,
    decision audit, execution report, account and event of the period bit for bit.

    The state at --from depends on history, so each symbol is replayed from its first recorded
    candle. Exit status: 0 identical, 1 differences found (each listed), 2 a user error, 3 the
    database cannot be reached.
    """
    from colmena.services.audit import (
        AuditError,
        DatabaseUnreachableError,
        format_ns,
        parse_time,
    )
    from colmena.services.audit import replay_audit as run_audit

    started = time.perf_counter()
    try:
        t0, t1 = parse_time(start, "--from"), parse_time(end, "--to")
        result = run_audit(dsn, t0, t1, symbol=symbol)
    except AuditError as exc:
        raise UserError(str(exc)) from None
    except DatabaseUnreachableError as exc:
        raise OutputError(str(exc)) from None
    out = Console()

    def shown(value: object) -> str:
        text = repr(value) if isinstance(value, float) else str(value)
        return text if len(text) <= 60 else text[:57] + "..."

    for s in result.symbols:
        counts = ", ".join(f"{n} {kind}" for kind, n in s.compared.items())
        out.print(
            f"{s.symbol}: replayed {s.candles} candles from the first recorded one "
            f"({format_ns(s.replay_from)}; the state at {format_ns(t0)} depends on them) with "
            f"checkpoint {s.model_sha256[:16]}; compared {counts} of {format_ns(t0)} to "
            f"{format_ns(t1)}: {len(s.differences)} differences"
        )
    differences = result.differences
    if differences:
        table = Table(title=f"{len(differences)} differences between the records and the replay")
        for column in ("kind", "bar (UTC)", "which", "field", "recorded", "reproduced"):
            table.add_column(column, overflow="fold")
        for d in differences:
            # The part of the key after the bar: the order id of an execution report, the
            # sequence number of an event, the round trip of a fill.
            which = d.key.split(f".{d.ts}", 1)[-1].lstrip(".")
            table.add_row(d.kind, format_ns(d.ts).replace("T", " ").rstrip("Z"), which, d.field,
                          shown(d.recorded), shown(d.reproduced))  # fmt: skip
        out.print(table)
    verdict = "identical" if result.identical else f"{len(differences)} differences"
    console.print(f"replay-audit: {verdict}  {time.perf_counter() - started:.1f} s")
    if differences:
        sys.exit(1)


@main.command("backup")
@click.option(
    "--db",
    "dsn",
    required=True,
    envvar="COLMENA_DB_DSN",
    help="PostgreSQL DSN of the records' database (else $COLMENA_DB_DSN; a password may also "
    "come from PGPASSWORD or ~/.pgpass).",
)
@click.option(
    "--checkpoints",
    "checkpoints",
    multiple=True,
    type=click.Path(path_type=Path),
    metavar="DIR",
    help="A checkpoint folder (or file) to back up; repeat for several.",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(path_type=Path),
    help="The backup folder to create (must not exist, or be empty).",
)
def backup_command(dsn: str, checkpoints: tuple[Path, ...], out: Path) -> None:
    """Back up the records (pg_dump, custom format) and the checkpoint files into a new folder
    with a manifest of SHA-256 checksums; written atomically (a temporary folder renamed at the
    end). The DSN's password is passed to pg_dump in its environment, never on its command line.
    """
    from colmena.atomic_write import FolderLockedError
    from colmena.services.backup import BackupDatabaseError, BackupError, backup

    started = time.perf_counter()
    try:
        result = backup(dsn, list(checkpoints), out)
    except (BackupError, FolderLockedError) as exc:
        raise UserError(str(exc) if not isinstance(exc, OSError) else str(exc.strerror)) from None
    except BackupDatabaseError as exc:
        raise OutputError(f"{exc}; nothing written to {out}") from None
    except OSError as exc:
        raise OutputError(
            f"{out}: the backup cannot be written ({exc.strerror or exc}); nothing left there"
        ) from None
    click.echo(
        f"backup: {result.path}: {result.tables} tables, {result.files} files, "
        f"{result.bytes:,} bytes  {time.perf_counter() - started:.1f} s",
        err=True,
    )


@main.command("restore")
@click.argument("backup_dir", type=click.Path(path_type=Path))
@click.option(
    "--db",
    "dsn",
    required=True,
    envvar="COLMENA_DB_DSN",
    help="PostgreSQL DSN of the target database, which must exist (else $COLMENA_DB_DSN; a "
    "password may also come from PGPASSWORD or ~/.pgpass).",
)
@click.option(
    "--checkpoints",
    type=click.Path(path_type=Path),
    default=None,
    metavar="DIR",
    help="Restore the checkpoint files into this folder (existing files are never replaced).",
)
@click.option("--force", is_flag=True, help="Restore into a database that already has tables.")
def restore_command(backup_dir: Path, dsn: str, checkpoints: Path | None, force: bool) -> None:
    """Restore a backup made by `colmena backup`: every checksum is verified first (a changed
    file is refused, named); the target database must be empty unless --force; the dump is
    restored in one transaction (all or nothing); checkpoint files never overwrite a user's.
    """
    from colmena.services.backup import BackupDatabaseError, BackupError, restore

    started = time.perf_counter()
    try:
        result = restore(backup_dir, dsn, checkpoints=checkpoints, force=force)
    except BackupError as exc:
        raise UserError(str(exc)) from None
    except BackupDatabaseError as exc:
        raise OutputError(str(exc)) from None
    except OSError as exc:
        raise OutputError(
            f"{checkpoints}: the database is restored, but a checkpoint file cannot be written "
            f"({exc.strerror or exc})"
        ) from None
    where = (
        f"; {result.checkpoint_files} checkpoint files written to {checkpoints}"
        + (f" ({result.unchanged} already there)" if result.unchanged else "")
        if checkpoints is not None
        else "; checkpoints not restored (no --checkpoints)"
    )
    click.echo(
        f"restore: {result.tables} tables{where}  {time.perf_counter() - started:.1f} s", err=True
    )
