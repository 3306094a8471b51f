"""The main job: an honest, out-of-sample backtest of an evolved swarm on real candles.

Pipeline (one implementation, reused by the live daemons): market state (core FracDiff) -> VAE
latent (core) -> swarm signals, batched over time (core) -> fitness-weighted consensus ->
RiskManager -> PaperExecutor -> portfolio and metrics (the last three in the core's bar-by-bar
loop, :func:`colmena._core.run_backtest`).

Honesty rules: a decision at the close of bar ``t`` fills no earlier than the open of bar
``t + 1``; every feature at ``t`` reads only candles up to ``t``; walk-forward folds train on the
bars before their test segment only; fees, slippage and volume-limited partial fills are
included; the same inputs and seed give the same trades, bit for bit.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from numpy.typing import NDArray

from colmena import _core
from colmena.checkpoint import library_versions
from colmena.data import Candles
from colmena.evolution import GenerationStats
from colmena.metrics import performance_metrics
from colmena.risk import RiskConfig, stress_test, value_at_risk_report
from colmena.state import FEATURE_NAMES
from colmena.swarm import SwarmModel
from colmena.training import TrainConfig, train

__all__ = [
    "BacktestConfig",
    "BacktestRun",
    "FoldInfo",
    "IncompatibleCheckpointError",
    "backtest",
    "write_run",
]

SECONDS_PER_YEAR = 365.0 * 86_400.0

#: verdict code -> (verdict, reason) as written to decisions.parquet
VERDICTS: dict[str, tuple[str, str]] = {
    "accepted": ("accepted", "within_limits"),
    "resized_leverage": ("resized", "max_leverage"),
    "resized_var": ("resized", "var_budget"),
    "reduce_only_paused": ("resized", "paused_reduce_only"),
    "reduce_only_stale": ("resized", "stale_data_reduce_only"),
    "flatten_halted": ("flatten", "kill_switch_halted"),
    "flatten_stop": ("flatten", "drawdown_stop"),
    "rejected_halted": ("rejected", "halted"),
    "no_signal": ("rejected", "no_valid_market_state"),
    "skipped_small_change": ("rejected", "below_min_trade"),
}


class IncompatibleCheckpointError(ValueError):
    """The checkpoint was trained on another feature set than this version computes."""


class ExecutionSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Paper execution costs (see colmena._core.PaperExecutor)."""

    initial_cash: Annotated[float, msgspec.Meta(gt=0.0)] = 100_000.0
    fee_bps: Annotated[float, msgspec.Meta(ge=0.0)] = 10.0
    slippage_bps: Annotated[float, msgspec.Meta(ge=0.0)] = 2.0
    impact_bps: Annotated[float, msgspec.Meta(ge=0.0)] = 10.0
    max_participation: Annotated[float, msgspec.Meta(gt=0.0, le=1.0)] = 0.1

    def to_core(self) -> Any:
        core = _core.ExecutionConfig()
        for name in ("initial_cash", "fee_bps", "slippage_bps", "impact_bps", "max_participation"):
            setattr(core, name, getattr(self, name))
        core.validate()
        return core


class BacktestConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Everything that determines a backtest (written into report.json).

    Attributes
    ----------
    train_fraction : float
        Walk-forward: length of each training window as a share of all bars, in (0, 1).
    folds : int
        Walk-forward folds: the bars after the first training window are split into ``folds``
        consecutive test segments; each is traded by a swarm trained on the ``train_fraction``
        bars just before it (a rolling window).
    seed : int
        Seeds training (each fold uses ``seed + fold``).
    execution : ExecutionSettings
    risk : RiskConfig
    training : colmena.training.TrainConfig
    """

    train_fraction: Annotated[float, msgspec.Meta(gt=0.0, lt=1.0)] = 0.7
    folds: Annotated[int, msgspec.Meta(ge=1)] = 1
    seed: int = 0
    execution: ExecutionSettings = msgspec.field(default_factory=ExecutionSettings)
    risk: RiskConfig = msgspec.field(default_factory=RiskConfig)
    training: TrainConfig = msgspec.field(default_factory=TrainConfig)


@dataclass(frozen=True)
class FoldInfo:
    """One walk-forward fold: bar ranges [start, stop) of the file."""

    fold: int
    train_start: int
    train_stop: int
    test_start: int
    test_stop: int
    generations: list[GenerationStats] = field(default_factory=list)


@dataclass
class BacktestRun:
    """The tables and the report of one backtest (see :func:`write_run`)."""

    bars: pa.Table
    decisions: pa.Table
    orders: pa.Table
    fills: pa.Table
    equity: pa.Table
    events: pa.Table
    report: dict[str, Any]
    folds: list[FoldInfo]


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes (hex)."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fold_plan(n: int, config: BacktestConfig, lookback: int) -> list[tuple[int, int, int, int]]:
    train_len = int(n * config.train_fraction)
    test_total = n - train_len
    if train_len < lookback * 2 or test_total < config.folds * 2:
        raise ValueError(
            f"{n} candles are too few for a {config.train_fraction:.0%} training window of at "
            f"least {2 * lookback} bars and {config.folds} test fold(s)"
        )
    bounds = np.linspace(train_len, n, config.folds + 1).astype(int)
    return [(int(a) - train_len, int(a), int(a), int(b)) for a, b in itertools.pairwise(bounds)]


def _check_checkpoint(checkpoint: Any) -> None:
    names = checkpoint.config.get("feature_names") if hasattr(checkpoint, "config") else None
    if names is None or list(names) != list(FEATURE_NAMES):
        raise IncompatibleCheckpointError(
            f"checkpoint features {names} differ from this version's {list(FEATURE_NAMES)}: "
            "retrain with `colmena train`"
        )


def backtest(
    candles: Candles,
    config: BacktestConfig | None = None,
    *,
    checkpoint: Any = None,
    on_stage: Callable[[str], None] | None = None,
    on_vae_epoch: Callable[[int, dict[str, float]], None] | None = None,
    on_generation: Callable[[GenerationStats], None] | None = None,
) -> BacktestRun:
    """Run the whole pipeline on ``candles``.

    With ``checkpoint`` (a :class:`colmena.checkpoint.Checkpoint` from ``colmena train``) the
    fixed swarm trades every bar of the file after its warm-up (the report marks it
    ``out_of_sample: false`` when the checkpoint's training data overlaps the file). Without one,
    walk-forward: train on each fold's window, trade its test segment out of sample.

    Raises
    ------
    IncompatibleCheckpointError
        If the checkpoint was trained on another feature set.
    ValueError
        If the data is too short for the windows.
    """
    config = config or BacktestConfig()
    started = time.perf_counter()
    n = len(candles)
    signal = np.full(n, np.nan)
    fold_of_bar = np.full(n, -1, dtype=np.int64)
    features = np.full((n, len(FEATURE_NAMES)), np.nan)
    valid = np.zeros(n, dtype=bool)
    folds: list[FoldInfo] = []
    training_seconds = 0.0
    out_of_sample = True
    if checkpoint is not None:
        _check_checkpoint(checkpoint)
        model = SwarmModel.from_checkpoint(checkpoint)
        if on_stage:
            on_stage("signals")
        sig = model.signals(candles)
        signal[:] = np.where(sig.valid, sig.consensus, np.nan)
        features[:] = sig.state.features
        valid[:] = sig.valid
        fold_of_bar[:] = 0
        trade_start = int(np.argmax(sig.valid)) if sig.valid.any() else n
        history = [
            GenerationStats(g + 1, float(best), float(median), float(entropy), -1, -1)
            for g, (best, median, entropy) in enumerate(
                zip(
                    checkpoint.tensors.get("history/best_fitness", []),
                    checkpoint.tensors.get("history/median_fitness", []),
                    checkpoint.tensors.get("history/entropy", []),
                    strict=False,
                )
            )
        ]
        folds.append(FoldInfo(0, -1, -1, trade_start, n, history))
        data = checkpoint.config.get("data", {})
        first, last = data.get("first_ts"), data.get("last_ts")
        if first is None or last is None or not (last < candles.ts[0] or first > candles.ts[-1]):
            out_of_sample = False
    else:
        lookback = config.training.features.lookback_bars
        plan = _fold_plan(n, config, lookback)
        for k, (train_start, train_stop, test_start, test_stop) in enumerate(plan):
            if on_stage:
                on_stage(f"training fold {k + 1}/{len(plan)}")
            t0 = time.perf_counter()
            training = msgspec.structs.replace(config.training, seed=config.seed + k)
            result = train(
                candles.slice(train_start, train_stop),
                training,
                on_vae_epoch=on_vae_epoch,
                on_generation=on_generation,
            )
            training_seconds += time.perf_counter() - t0
            if on_stage:
                on_stage(f"signals fold {k + 1}/{len(plan)}")
            # Warm-up history before the test segment is read, never anything after it.
            warm = max(0, test_start - lookback)
            sig = result.model.signals(candles.slice(warm, test_stop))
            offset = test_start - warm
            part = slice(test_start, test_stop)
            signal[part] = np.where(sig.valid[offset:], sig.consensus[offset:], np.nan)
            features[part] = sig.state.features[offset:]
            valid[part] = sig.valid[offset:]
            fold_of_bar[part] = k
            folds.append(
                FoldInfo(
                    k,
                    train_start,
                    train_stop,
                    test_start,
                    test_stop,
                    list(result.population.history),
                )
            )

    if on_stage:
        on_stage("trading")
    t0 = time.perf_counter()
    first = folds[0].test_start if checkpoint is None else 0
    rows = slice(first, n)
    ts = np.ascontiguousarray(candles.ts[rows])
    cols = {
        name: np.ascontiguousarray(getattr(candles, name)[rows], dtype=np.float64)
        for name in ("open", "high", "low", "close", "volume")
    }
    bar_ns = round((candles.interval_seconds or 60.0) * 1e9)
    raw = _core.run_backtest(
        ts,
        cols["open"],
        cols["high"],
        cols["low"],
        cols["close"],
        cols["volume"],
        np.ascontiguousarray(signal[rows]),
        bar_ns,
        config.risk.to_core(),
        config.execution.to_core(),
    )
    trading_seconds = time.perf_counter() - t0
    run = _assemble(candles, rows, raw, signal, features, valid, fold_of_bar, config, bar_ns)
    run.folds = folds
    bars_per_year = SECONDS_PER_YEAR * 1e9 / bar_ns
    run.report = _report(
        candles,
        rows,
        raw,
        config,
        folds,
        bars_per_year,
        checkpoint is not None,
        out_of_sample,
        timing={
            "training_seconds": training_seconds,
            "trading_seconds": trading_seconds,
            "total_seconds": time.perf_counter() - started,
        },
    )
    return run


def _ts_array(values: NDArray[np.int64]) -> pa.Array:
    return pa.array(np.asarray(values, dtype=np.int64)).cast(pa.timestamp("ns", tz="UTC"))


def _assemble(
    candles: Candles,
    rows: slice,
    raw: dict[str, Any],
    signal: NDArray[np.float64],
    features: NDArray[np.float64],
    valid: NDArray[np.bool_],
    fold_of_bar: NDArray[np.int64],
    config: BacktestConfig,
    bar_ns: int,
) -> BacktestRun:
    ts = candles.ts[rows]
    verdict_names = _core.verdict_names()
    state_names = _core.trading_state_names()
    event_names = _core.event_type_names()
    bars = {
        "timestamp": _ts_array(ts),
        **{
            c: pa.array(getattr(candles, c)[rows])
            for c in ("open", "high", "low", "close", "volume")
        },
        **{name: pa.array(features[rows, i]) for i, name in enumerate(FEATURE_NAMES)},
        "valid": pa.array(valid[rows]),
        "signal": pa.array(signal[rows]),
        "fold": pa.array(fold_of_bar[rows]),
    }
    codes = [verdict_names[v] for v in raw["verdict"]]
    decisions = {
        "timestamp": _ts_array(ts + bar_ns),  # decided at the bar's close
        "bar_open": _ts_array(ts),
        "signal": pa.array(signal[rows]),
        "requested": pa.array(raw["requested"]),
        "target": pa.array(raw["target"]),
        "verdict": pa.array([VERDICTS[c][0] for c in codes]),
        "reason": pa.array([VERDICTS[c][1] for c in codes]),
        "code": pa.array(codes),
        "trading_state": pa.array([state_names[s] for s in raw["state"]]),
    }
    ob = raw["order_bar"]
    filled = raw["order_filled"]
    quantity = raw["order_quantity"]
    status = np.where(
        filled == 0.0,
        "cancelled",
        np.where(np.abs(filled) < np.abs(quantity) - 1e-12, "partial", "filled"),
    )
    orders = {
        "timestamp": _ts_array(ts[ob] + bar_ns),
        "fill_bar_open": _ts_array(ts[np.minimum(ob + 1, len(ts) - 1)]),
        "side": pa.array(np.where(quantity > 0, "buy", "sell")),
        "quantity": pa.array(np.abs(quantity)),
        "target": pa.array(raw["order_target"]),
        "filled_quantity": pa.array(np.abs(filled)),
        "status": pa.array(status),
    }
    fq = raw["fill_quantity"]
    fills = {
        "timestamp": _ts_array(ts[raw["fill_bar"]]),
        "side": pa.array(np.where(fq > 0, "buy", "sell")),
        "quantity": pa.array(np.abs(fq)),
        "price": pa.array(raw["fill_price"]),
        "fee": pa.array(raw["fill_fee"]),
        "slippage_cost": pa.array(raw["fill_slippage_cost"]),
    }
    equity = {
        "timestamp": _ts_array(ts + bar_ns),
        "cash": pa.array(raw["cash"]),
        "position": pa.array(raw["position"]),
        "equity": pa.array(raw["equity"]),
        "trading_state": pa.array([state_names[s] for s in raw["state"]]),
    }
    events = {
        "timestamp": _ts_array(raw["event_ts"]),
        "type": pa.array([event_names[t] for t in raw["event_type"]]),
        "code": pa.array(raw["event_code"].astype(np.int64)),
        "value": pa.array(raw["event_value"]),
    }
    return BacktestRun(
        bars=pa.table(bars),
        decisions=pa.table(decisions),
        orders=pa.table(orders),
        fills=pa.table(fills),
        equity=pa.table(equity),
        events=pa.table(events),
        report={},
        folds=[],
    )


def buy_and_hold_equity(
    open_: NDArray[np.float64], close: NDArray[np.float64], execution: ExecutionSettings
) -> NDArray[np.float64]:
    """Equity of buying at the open of the second bar (the first fill possible) with the same
    fee and fixed slippage, then holding: [n_bars] at each close."""
    cash = execution.initial_cash
    price = open_[1] * (1 + execution.slippage_bps / 1e4)
    quantity = cash / (price * (1 + execution.fee_bps / 1e4))
    equity = np.full(close.size, cash)
    equity[1:] = cash - quantity * price * (1 + execution.fee_bps / 1e4) + quantity * close[1:]
    return equity


def _report(
    candles: Candles,
    rows: slice,
    raw: dict[str, Any],
    config: BacktestConfig,
    folds: list[FoldInfo],
    bars_per_year: float,
    from_checkpoint: bool,
    out_of_sample: bool,
    timing: dict[str, float],
) -> dict[str, Any]:
    ts = candles.ts[rows]
    close = np.asarray(candles.close[rows], dtype=np.float64)
    open_ = np.asarray(candles.open[rows], dtype=np.float64)
    equity = raw["equity"]
    traded = float(np.sum(np.abs(raw["fill_quantity"]) * raw["fill_price"]))
    metrics = performance_metrics(
        ts,
        equity,
        initial_equity=config.execution.initial_cash,
        bars_per_year=bars_per_year,
        position=raw["position"],
        trade_pnl=raw["trade_pnl"],
        traded_notional=traded,
        fees_paid=float(raw["fees_paid"]),
        slippage_paid=float(np.sum(raw["fill_slippage_cost"])),
    )
    bh = buy_and_hold_equity(open_, close, config.execution)
    bh_pnl = np.array([bh[-1] - config.execution.initial_cash])
    bh_metrics = performance_metrics(
        ts,
        bh,
        initial_equity=config.execution.initial_cash,
        bars_per_year=bars_per_year,
        position=np.concatenate([[0.0], np.ones(close.size - 1)]),
        trade_pnl=bh_pnl,
        traded_notional=float(config.execution.initial_cash),
        fees_paid=config.execution.initial_cash * config.execution.fee_bps / 1e4,
    )
    strategy_returns = equity[1:] / equity[:-1] - 1.0
    var = (
        [
            {
                "method": t.method,
                "confidence": t.confidence,
                "var": t.var,
                "expected_shortfall": t.expected_shortfall,
            }
            for t in value_at_risk_report(strategy_returns, horizon=1440)
        ]
        if strategy_returns.size > 2
        else []
    )
    stress = [
        {"scenario": s.scenario, "shock": s.shock, "pnl": s.pnl, "pnl_fraction": s.pnl_fraction}
        for s in stress_test(
            float(raw["position"][-1]),
            float(close[-1]),
            float(max(equity[-1], 1e-9)),
            candles.close,
        )
    ]
    event_names = _core.event_type_names()
    counts: dict[str, int] = {}
    for t in raw["event_type"]:
        counts[event_names[t]] = counts.get(event_names[t], 0) + 1
    source = candles.source
    return {
        "metrics": metrics,
        "buy_and_hold": bh_metrics,
        "out_of_sample": out_of_sample,
        "mode": "checkpoint" if from_checkpoint else "walk_forward",
        "folds": [
            {
                "fold": f.fold,
                "train": [f.train_start, f.train_stop],
                "test": [f.test_start, f.test_stop],
                "generations": [vars(g) for g in f.generations],
            }
            for f in folds
        ],
        "value_at_risk": var,
        "stress_tests": stress,
        "events": counts,
        "config": msgspec.to_builtins(config),
        "seed": config.seed,
        "data": {
            "file": str(source),
            "sha256": file_sha256(source) if source.is_file() else None,
            "rows": len(candles),
            "traded_rows": len(ts),
            "first": str(np.datetime64(int(ts[0]), "ns")) + "Z",
            "last": str(np.datetime64(int(ts[-1]), "ns")) + "Z",
            "gaps": candles.gaps.count,
            "missing_bars": candles.gaps.missing_bars,
        },
        "timing": timing,
        "versions": library_versions(),
    }


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise NotImplementedError(f"cannot encode {type(value).__name__} in report.json")


def write_run(run: BacktestRun, out_dir: str | os.PathLike[str], *, html: bool = True) -> Path:
    """Write the run directory atomically: a temp directory beside ``out_dir``, then a rename.

    Files: ``bars.parquet``, ``decisions.parquet``, ``orders.parquet``, ``fills.parquet``,
    ``equity.parquet``, ``events.parquet``, ``report.json`` and (with ``html``) a self-contained
    ``report.html``. An existing ``out_dir`` is replaced only once the new one is complete; on
    any error nothing is left behind.
    """
    from colmena.report import render_html

    target = Path(out_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        for name in ("bars", "decisions", "orders", "fills", "equity", "events"):
            pq.write_table(getattr(run, name), tmp / f"{name}.parquet", compression="zstd")
        encoded = msgspec.json.encode(run.report, enc_hook=_json_default)
        (tmp / "report.json").write_bytes(msgspec.json.format(encoded))
        if html:
            (tmp / "report.html").write_text(render_html(run), encoding="utf-8")
        for path in tmp.iterdir():
            with path.open("rb") as fh:
                os.fsync(fh.fileno())
        old = None
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, old)
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target
