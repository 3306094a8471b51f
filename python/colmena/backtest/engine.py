"""The main job: an honest, out-of-sample backtest of an evolved swarm on real candles.

Pipeline (one implementation, reused by the live daemons): market state (core FracDiff) -> VAE
latent (core) -> swarm signals, batched over time (core) -> consensus of the validated voters
(core, fixed order) -> at each decision bar: RiskManager -> PaperExecutor -> portfolio and
metrics (the core's :class:`TradingLoop`, stepped bar by bar by :func:`colmena._core.run_backtest`).

Honesty rules: a decision at the close of bar ``t`` fills no earlier than the open of bar
``t + 1``; every feature at ``t`` reads only candles up to ``t``; walk-forward folds train,
select and gate on the bars before their test segment only; fees, slippage, market impact,
volume-limited partial fills and (margin) borrow are charged; the position is closed at the end
with its costs; the same inputs and seed give the same trades, bit for bit.

Where the forward passes run: ``device`` ("cpu", the default, "cuda", "cuda:N", or a
:class:`colmena.model.device.ForwardBackend`) chooses the implementation of the VAE encoder and
the swarm that compute the traded signals (:func:`_on_backend`, the one place) and is handed to
every fold's training. The market state, the consensus, risk, execution and the trading loop are
the CPU core's whatever the device; the CUDA forward passes give the CPU's bits, so the trades
are identical (tests/test_cuda_pipeline.py).

Walk-forward folds are independent experiments: each fold's model starts with a fresh Kelly
window and shadow book (model-bound estimators), while the account carries over from fold to fold
(equity, its peaks and the circuit-breaker ladder, a running pause, a HALT: a kill switch in one
fold keeps the account halted, as it would live, and the report says so). The market's EWMA
volatility behind the VaR budget is a property of the market, not of the model, and carries too.
"""

from __future__ import annotations

import hashlib
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, Final

import msgspec
import numpy as np
import pyarrow as pa
from numpy.typing import NDArray

from colmena import _core
from colmena.analysis.metrics import performance_metrics
from colmena.analysis.tearsheet import (
    benchmark_relative,
    daily_returns,
    drawdown_periods,
    monthly_returns,
    trade_statistics,
    trades_table,
)
from colmena.data.ohlcv import Candles
from colmena.execution.simulation import WIND_DOWN_BARS, ExecutionSettings, simulate_targets
from colmena.features.market_state import FEATURE_NAMES
from colmena.features.regime import REGIME_NAMES
from colmena.model.decision import decision_bars
from colmena.model.device import ForwardBackend, forward_backend
from colmena.model.swarm import GateResult, SwarmModel
from colmena.risk import RiskConfig, stress_test, value_at_risk_report
from colmena.training.config import TrainConfig
from colmena.training.state import GenerationStats, TrainingState
from colmena.training.trainer import train
from colmena.units import NS_PER_DAY, NS_PER_SECOND
from colmena.versions import library_versions

__all__ = [
    "TIME_COLUMNS",
    "BacktestConfig",
    "BacktestRun",
    "ExecutionSettings",
    "FoldInfo",
    "IncompatibleCheckpointError",
    "backtest",
]

#: verdict code -> (verdict, reason) as written to decisions.parquet; a gated fold's reason is
#: its gate's reason.
VERDICTS: Final[dict[str, tuple[str, str]]] = {
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
    "zero_kelly": ("zero_kelly", "kelly_fraction_zero"),
    "hold": ("hold", "working_remainder"),
    "gated_flat": ("gated_flat", "gated"),
    "end_of_run": ("flatten", "end_of_run"),
}
ACTION_HOLD, ACTION_DECIDE, ACTION_GATED, ACTION_END = 0, 1, 2, 3
#: Look-back of the time-series momentum baseline (Moskowitz, Ooi & Pedersen, "Time series
#: momentum", 2012, used 12 months on monthly data; crypto studies use weeks).
MOMENTUM_LOOKBACK_DAYS: Final = 30.0
#: Below this share of bars in the market the report warns that the result is mostly "flat".
MIN_TIME_IN_MARKET: Final = 0.1
#: Below this behavioural entropy (0..1) the swarm's agents all act alike.
MIN_ENTROPY: Final = 0.05
#: A median notional per bar above this (quote units, e.g. USD a minute) is more than the whole
#: market trades: the volume column is probably in the quote currency, not the base.
MAX_PLAUSIBLE_NOTIONAL_PER_BAR: Final = 1e9


class IncompatibleCheckpointError(ValueError):
    """The training state was trained on another feature set than this version computes."""


class BacktestConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Everything that determines a backtest (written into report.json).

    Attributes
    ----------
    train_fraction : float
        Walk-forward: length of each training window as a share of all bars, in (0, 1). The
        last ``training.validation_fraction`` of each window is held back for selection and the
        gate.
    folds : int
        Walk-forward folds: the bars after the first training window are split into ``folds``
        consecutive test segments; each is traded by a swarm trained on the ``train_fraction``
        bars just before it (a rolling window).
    seed : int
        Seeds training (each fold uses ``seed + fold``).
    execution : ExecutionSettings
        Costs and market type; the training's fitness and gate use the same.
    risk : RiskConfig
    training : colmena.training.TrainConfig
    """

    train_fraction: Annotated[float, msgspec.Meta(gt=0.0, lt=1.0)] = 0.7
    folds: Annotated[int, msgspec.Meta(ge=1, le=1_000)] = 1
    seed: int = 0
    execution: ExecutionSettings = msgspec.field(default_factory=ExecutionSettings)
    risk: RiskConfig = msgspec.field(default_factory=RiskConfig)
    training: TrainConfig = msgspec.field(default_factory=TrainConfig)


@dataclass(frozen=True)
class FoldInfo:
    """One walk-forward fold: bar ranges [start, stop) of the file, and its gate."""

    fold: int
    train_start: int
    train_stop: int
    test_start: int
    test_stop: int
    generations: list[GenerationStats] = field(default_factory=list)
    gate: GateResult | None = None
    validation: dict[str, Any] = field(default_factory=dict)

    @property
    def traded(self) -> bool:
        """True when the fold's model passed its gate."""
        return self.gate is not None and self.gate.passed


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
    baseline_equity: dict[str, NDArray[np.float64]] = field(default_factory=dict)
    trades: pa.Table | None = None


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


def _check_state(state: TrainingState) -> None:
    if not isinstance(state, TrainingState):
        raise TypeError(f"state must be a TrainingState, got {type(state).__name__}")
    if list(state.feature_names) != list(FEATURE_NAMES):
        raise IncompatibleCheckpointError(
            f"checkpoint features {list(state.feature_names)} differ from this version's "
            f"{list(FEATURE_NAMES)}: retrain with `colmena train`"
        )


def _on_backend(model: SwarmModel, state: TrainingState, backend: ForwardBackend) -> SwarmModel:
    """``model`` (built from ``state``) with its encoder and swarm on ``backend``: the same
    weights, so the same signals; consensus weights, regime and gate unchanged."""
    vae = state.vae
    return replace(
        model,
        encoder=backend.encoder(list(vae.layers), vae.mu, vae.logvar),
        swarm=backend.swarm(list(state.layers), state.config.evolution.activation),
    )


def backtest(
    candles: Candles,
    config: BacktestConfig | None = None,
    *,
    state: TrainingState | None = None,
    on_stage: Callable[[str], None] | None = None,
    on_vae_epoch: Callable[[int, dict[str, float]], None] | None = None,
    on_generation: Callable[[TrainingState], None] | None = None,
    device: str | ForwardBackend = "cpu",
) -> BacktestRun:
    """Run the whole pipeline on ``candles``.

    With ``state`` (a finished :class:`colmena.training.TrainingState`, e.g. from
    ``colmena.checkpoint.load_latest``) the fixed swarm trades every bar of the file after its
    warm-up, if its validation gate passed (the report marks it ``out_of_sample: false`` when
    the state's training data overlaps the file). Without one, walk-forward: train, select and
    gate on each fold's window, trade its test segment out of sample. ``device`` chooses where
    the encoder's and the swarm's forward passes run, in training and trading (module
    docstring); the run does not depend on it.

    Raises
    ------
    IncompatibleCheckpointError
        If the state was trained on another feature set.
    ValueError
        If the data is too short for the windows, or the state is invalid or unfinished.
    ImportError
        Walk-forward without torch.
    colmena.model.device.CudaUnavailableError
        For a CUDA ``device`` without a CUDA build or a visible device (before any work).
    """
    backend = forward_backend(device)
    config = config or BacktestConfig()
    started = time.perf_counter()
    n = len(candles)
    signal = np.full(n, np.nan)
    fold_of_bar = np.full(n, -1, dtype=np.int64)
    features = np.full((n, len(FEATURE_NAMES)), np.nan)
    valid = np.zeros(n, dtype=bool)
    decide = np.zeros(n, dtype=bool)
    regime = np.full(n, -1, dtype=np.int64)
    folds: list[FoldInfo] = []
    training_seconds = 0.0
    out_of_sample = True
    interval = config.training.decision.interval

    def take(model: SwarmModel, warm: int, start: int, stop: int, k: int) -> None:
        sig = model.signals(candles.slice(warm, stop))
        offset = start - warm
        part = slice(start, stop)
        signal[part] = sig.consensus[offset:]
        features[part] = sig.state.features[offset:]
        valid[part] = sig.valid[offset:]
        decide[part] = sig.decision[offset:]
        regime[part] = sig.regime[offset:]
        fold_of_bar[part] = k

    if state is not None:
        _check_state(state)
        model = state.to_model()
        interval = model.decision.interval
        if on_stage:
            on_stage("signals")
        take(_on_backend(model, state, backend), 0, 0, n, 0)
        gate = model.gate or GateResult(False, "not_validated", 0, 0, 0.0, 0.0, 0, 0, 0.0)
        validation = state.validation.to_dict() if state.validation is not None else {}
        folds.append(FoldInfo(0, -1, -1, 0, n, list(state.history), gate, validation))
        first, last = state.data.first_ts, state.data.last_ts
        if not (last < candles.ts[0] or first > candles.ts[-1]):
            out_of_sample = False
    else:
        lookback = max(
            config.training.features.lookback_bars, config.training.regime.lookback_bars + 1
        )
        plan = _fold_plan(n, config, lookback)
        for k, (train_start, train_stop, test_start, test_stop) in enumerate(plan):
            if on_stage:
                on_stage(f"training fold {k + 1}/{len(plan)}")
            t0 = time.perf_counter()
            training = msgspec.structs.replace(config.training, seed=config.seed + k)
            result = train(
                candles.slice(train_start, train_stop),
                training,
                execution=config.execution,
                risk=config.risk,
                on_vae_epoch=on_vae_epoch,
                on_generation=on_generation,
                device=backend,
            )
            training_seconds += time.perf_counter() - t0
            if on_stage:
                on_stage(f"signals fold {k + 1}/{len(plan)}")
            # Warm-up history before the test segment is read, never anything after it.
            model = _on_backend(result.model, result.state, backend)
            take(model, max(0, test_start - model.lookback_bars), test_start, test_stop, k)
            folds.append(
                FoldInfo(
                    k, train_start, train_stop, test_start, test_stop,
                    list(result.state.history), model.gate,
                    result.state.validation.to_dict() if result.state.validation else {},
                )
            )  # fmt: skip

    if on_stage:
        on_stage("trading")
    t0 = time.perf_counter()
    first = folds[0].test_start
    rows = slice(first, n)
    m = n - first
    action = np.zeros(m, dtype=np.uint8)
    for f in folds:
        part = slice(f.test_start - first, f.test_stop - first)
        action[part] = np.where(
            decide[f.test_start : f.test_stop], ACTION_DECIDE if f.traded else ACTION_GATED, 0
        )
    wind_down = min(WIND_DOWN_BARS, m - 1)
    action[m - 1 - wind_down : m - 1] = ACTION_END  # close the position over the last bars
    core_signal = np.where(action == ACTION_DECIDE, signal[rows], np.nan)
    ts = np.ascontiguousarray(candles.ts[rows])
    cols = {
        name: np.ascontiguousarray(getattr(candles, name)[rows], dtype=np.float64)
        for name in ("open", "high", "low", "close", "volume")
    }
    bar_seconds = float(candles.interval_seconds or 60.0)
    bar_ns = round(bar_seconds * NS_PER_SECOND)
    raw = _core.run_backtest(
        ts, cols["open"], cols["high"], cols["low"], cols["close"], cols["volume"],
        np.ascontiguousarray(core_signal), bar_ns, config.risk.to_core(),
        config.execution.to_core(), action, np.ascontiguousarray(fold_of_bar[rows]),
    )  # fmt: skip
    trading_seconds = time.perf_counter() - t0
    run = _assemble(
        candles, rows, raw, signal, features, valid, decide, regime, fold_of_bar, action, folds,
        bar_ns,
    )  # fmt: skip
    run.folds = folds
    schedule = decision_bars(ts, bar_seconds, interval)
    baselines, baseline_equity = _baselines(
        candles, rows, raw, schedule, config.execution, bar_seconds
    )
    run.baseline_equity = baseline_equity
    for name, curve in baseline_equity.items():
        run.equity = run.equity.append_column(f"baseline_{name}", pa.array(curve))
    trade_fold = fold_of_bar[rows][
        np.clip(np.searchsorted(ts, raw["trade_close_ts"], side="right") - 1, 0, ts.size - 1)
    ]
    run.trades = trades_table(raw, trade_fold)
    run.report = _report(
        candles, rows, raw, config, folds, regime, action, baselines, baseline_equity,
        run.trades, state is not None, out_of_sample, interval, bar_ns,
        timing={
            "training_seconds": training_seconds,
            "trading_seconds": trading_seconds,
            "total_seconds": time.perf_counter() - started,
        },
    )  # fmt: skip
    return run


def _ts_array(values: NDArray[np.int64]) -> pa.Array:
    return pa.array(np.asarray(values, dtype=np.int64)).cast(pa.timestamp("ns", tz="UTC"))


#: What each time column of a run folder's tables means. Every time column is named for what it
#: is, so that a join never silently shifts one bar: a bar is stamped by its open time, a
#: decision by the close of its bar (open time + bar length), a fill by the open of the bar it
#: filled at. The descriptions are also stored in each Parquet field's metadata.
TIME_COLUMNS: Final[dict[str, str]] = {
    "bar_open_time": "open time of the bar (UTC); the bar's close is this plus the bar length",
    "decision_time": "close of the bar the decision was made at (UTC): bar_open_time + bar length",
    "fill_bar_open_time": "open of the bar the order fills at (UTC): the bar after its decision",
    "fill_time": "when the fill happened (UTC): the open of the bar it filled at",
    "mark_time": "close of the bar the account was marked at (UTC): bar_open_time + bar length",
    "event_time": (
        "when the event happened (UTC): a bar's open for fills and stale data seen at the open, "
        "a bar's close for marks and risk observations"
    ),
}


def _table(columns: dict[str, pa.Array]) -> pa.Table:
    """A table whose time columns carry their meaning (:data:`TIME_COLUMNS`) as field metadata."""
    fields = [
        pa.field(name, array.type, metadata={"description": TIME_COLUMNS[name]})
        if name in TIME_COLUMNS
        else pa.field(name, array.type)
        for name, array in columns.items()
    ]
    return pa.table(list(columns.values()), schema=pa.schema(fields))


def _regime_names(codes: NDArray[np.int64]) -> pa.Array:
    names = np.array([*REGIME_NAMES, "unknown"], dtype=object)
    return pa.array(names[np.where(codes >= 0, codes, len(REGIME_NAMES))].tolist(), pa.string())


def _assemble(
    candles: Candles,
    rows: slice,
    raw: dict[str, Any],
    signal: NDArray[np.float64],
    features: NDArray[np.float64],
    valid: NDArray[np.bool_],
    decide: NDArray[np.bool_],
    regime: NDArray[np.int64],
    fold_of_bar: NDArray[np.int64],
    action: NDArray[np.uint8],
    folds: list[FoldInfo],
    bar_ns: int,
) -> BacktestRun:
    ts = candles.ts[rows]
    verdict_names = _core.verdict_names()
    state_names = _core.trading_state_names()
    event_names = _core.event_type_names()
    origin_names = _core.order_origin_names()
    bars = {
        "bar_open_time": _ts_array(ts),
        **{
            c: pa.array(getattr(candles, c)[rows])
            for c in ("open", "high", "low", "close", "volume")
        },
        **{name: pa.array(features[rows, i]) for i, name in enumerate(FEATURE_NAMES)},
        "valid": pa.array(valid[rows]),
        "decision": pa.array(decide[rows]),
        "regime": _regime_names(regime[rows]),
        "signal": pa.array(signal[rows]),
        "fold": pa.array(fold_of_bar[rows]),
    }
    # A decision row: every decision bar, the end of the run, and any bar where the risk state
    # forced something or a working remainder was resubmitted.
    codes = np.array(verdict_names, dtype=object)[raw["verdict"]]
    ordered = np.zeros(ts.size, dtype=bool)
    ordered[raw["order_bar"]] = True
    keep = np.flatnonzero((action != ACTION_HOLD) | (codes != "hold") | ordered)
    gate_reason = {f.fold: (f.gate.reason if f.gate else "not_validated") for f in folds}
    fold_rows = fold_of_bar[rows][keep]
    verdict = [VERDICTS[c][0] for c in codes[keep]]
    reason = [
        gate_reason.get(int(k), "gated") if c == "gated_flat" else VERDICTS[c][1]
        for c, k in zip(codes[keep], fold_rows, strict=True)
    ]
    decisions = {
        "decision_time": _ts_array(ts[keep] + bar_ns),
        "bar_open_time": _ts_array(ts[keep]),
        "fold": pa.array(fold_rows),
        "regime": _regime_names(regime[rows][keep]),
        "signal": pa.array(signal[rows][keep]),
        "kelly_fraction": pa.array(raw["kelly"][keep]),
        "requested": pa.array(raw["requested"][keep]),
        "target": pa.array(raw["target"][keep]),
        "verdict": pa.array(verdict, pa.string()),
        "reason": pa.array(reason, pa.string()),
        "code": pa.array(codes[keep].tolist(), pa.string()),
        "trading_state": pa.array([state_names[s] for s in raw["state"][keep]], pa.string()),
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
        "decision_time": _ts_array(ts[ob] + bar_ns),
        "fill_bar_open_time": _ts_array(ts[np.minimum(ob + 1, len(ts) - 1)]),
        "origin": pa.array([origin_names[o] for o in raw["order_origin"]], pa.string()),
        "side": pa.array(np.where(quantity > 0, "buy", "sell")),
        "quantity": pa.array(np.abs(quantity)),
        "target": pa.array(raw["order_target"]),
        "filled_quantity": pa.array(np.abs(filled)),
        "status": pa.array(status),
    }
    fq = raw["fill_quantity"]
    fills = {
        "fill_time": _ts_array(ts[raw["fill_bar"]]),
        "side": pa.array(np.where(fq > 0, "buy", "sell")),
        "quantity": pa.array(np.abs(fq)),
        "price": pa.array(raw["fill_price"]),
        "fee": pa.array(raw["fill_fee"]),
        "slippage_cost": pa.array(raw["fill_slippage_cost"]),
    }
    equity = {
        "mark_time": _ts_array(ts + bar_ns),
        "cash": pa.array(raw["cash"]),
        "position": pa.array(raw["position"]),
        "equity": pa.array(raw["equity"]),
        "trading_state": pa.array([state_names[s] for s in raw["state"]], pa.string()),
    }
    events = {
        "event_time": _ts_array(raw["event_ts"]),
        "type": pa.array([event_names[t] for t in raw["event_type"]], pa.string()),
        "code": pa.array(raw["event_code"].astype(np.int64)),
        "value": pa.array(raw["event_value"]),
    }
    return BacktestRun(
        bars=_table(bars),
        decisions=_table(decisions),
        orders=_table(orders),
        fills=_table(fills),
        equity=_table(equity),
        events=_table(events),
        report={},
        folds=[],
    )


def momentum_signal(
    candles: Candles, rows: NDArray[np.int64], lookback_days: float = MOMENTUM_LOOKBACK_DAYS
) -> NDArray[np.float32]:
    """Time-series momentum (Moskowitz, Ooi & Pedersen 2012): the sign of the log return over
    the last ``lookback_days`` at each bar in ``rows`` (+1 long, -1 short, 0 without enough
    history or no move), reading closes up to the bar only.

    Returns
    -------
    numpy.ndarray of float32, shape [n_rows]
    """
    ts = np.asarray(candles.ts, dtype=np.int64)
    close = np.asarray(candles.close, dtype=np.float64)
    back = np.searchsorted(ts, ts[rows] - round(lookback_days * NS_PER_DAY), side="right") - 1
    out = np.zeros(rows.size, dtype=np.float32)
    ok = back >= 0
    out[ok] = np.sign(np.log(close[rows[ok]] / close[back[ok]])).astype(np.float32)
    return out


def _baselines(
    candles: Candles,
    rows: slice,
    raw: dict[str, Any],
    schedule: NDArray[np.bool_],
    execution: ExecutionSettings,
    bar_seconds: float,
) -> tuple[dict[str, dict[str, Any]], dict[str, NDArray[np.float64]]]:
    """Flat, buy-and-hold, exposure-matched buy-and-hold and time-series momentum, each through
    the same trading loop and costs as the swarm (pass-through sizing). The exposure-matched
    baseline holds the swarm's mean gross exposure over the whole period: a benchmark chosen
    with hindsight by construction, never a strategy."""
    ts = np.ascontiguousarray(candles.ts[rows])
    close_ts = ts + round(bar_seconds * NS_PER_SECOND)
    open_ = np.asarray(candles.open[rows], dtype=np.float64)
    close = np.asarray(candles.close[rows], dtype=np.float64)
    volume = np.asarray(candles.volume[rows], dtype=np.float64)
    n = ts.size
    equity = raw["equity"]
    gross = np.abs(raw["position"] * close)
    exposure = float(np.mean(np.divide(gross, equity, out=np.zeros(n), where=equity > 0)))
    marks = np.arange(n, dtype=np.int64)
    once = np.zeros(n, dtype=bool)
    once[0] = True
    hold = simulate_targets(
        ts, open_, close, volume, once, np.array([[0.0], [1.0], [exposure]], np.float32),
        marks, bar_seconds=bar_seconds, execution=execution,
    )  # fmt: skip
    decision_rows = np.flatnonzero(schedule).astype(np.int64)
    first = int(rows.start or 0)
    momentum = simulate_targets(
        ts, open_, close, volume, schedule,
        momentum_signal(candles, decision_rows + first)[None, :], marks,
        bar_seconds=bar_seconds, execution=execution,
    )  # fmt: skip
    out: dict[str, dict[str, Any]] = {}
    curves: dict[str, NDArray[np.float64]] = {}
    specs = [
        ("flat", hold, 0, {}),
        ("buy_and_hold", hold, 1, {}),
        ("buy_and_hold_exposure_matched", hold, 2, {"exposure": exposure}),
        ("momentum", momentum, 0, {"lookback_days": MOMENTUM_LOOKBACK_DAYS}),
    ]
    for name, sim, k, extra in specs:
        curve = sim.equity[k]
        metrics = performance_metrics(
            close_ts, curve, initial_equity=execution.initial_cash, position=sim.position[k],
            close=close, traded_notional=float(sim.traded_notional[k]),
            fees_paid=float(sim.fees[k]), slippage_paid=float(sim.slippage[k]),
            borrow_paid=float(sim.borrow[k]),
        )  # fmt: skip
        metrics["n_fills"] = int(sim.n_fills[k])
        out[name] = {**extra, **metrics}
        curves[name] = curve
    return out, curves


def _fold_report(
    f: FoldInfo,
    first: int,
    candles: Candles,
    raw: dict[str, Any],
    initial_cash: float,
    bar_ns: int,
) -> dict[str, Any]:
    a, b = f.test_start - first, f.test_stop - first
    ts = np.asarray(candles.ts, dtype=np.int64)
    close = np.asarray(candles.close, dtype=np.float64)
    equity = raw["equity"]
    start_equity = float(equity[a - 1]) if a > 0 else initial_cash
    fill_bar = raw["fill_bar"]
    in_fold = (fill_bar >= a) & (fill_bar < b)
    trade_close = raw["trade_close_ts"]
    closed = (trade_close >= ts[f.test_start]) & (trade_close <= ts[f.test_stop - 1])
    metrics = performance_metrics(
        ts[f.test_start : f.test_stop] + bar_ns, equity[a:b], initial_equity=start_equity,
        position=raw["position"][a:b], close=close[f.test_start : f.test_stop],
        trade_pnl=raw["trade_pnl"][closed],
        traded_notional=float(np.sum(np.abs(raw["fill_quantity"][in_fold])
                                     * raw["fill_price"][in_fold])),
        fees_paid=float(raw["fill_fee"][in_fold].sum()),
        slippage_paid=float(raw["fill_slippage_cost"][in_fold].sum()),
    )  # fmt: skip
    metrics["n_fills"] = int(in_fold.sum())

    def when(i: int) -> str | None:
        return _iso(int(ts[i])) if 0 <= i < ts.size else None

    return {
        "fold": f.fold,
        "traded": f.traded,
        "gate": f.gate.to_dict() if f.gate else None,
        "train": {"rows": [f.train_start, f.train_stop], "first": when(f.train_start),
                  "last": when(f.train_stop - 1)},
        "test": {"rows": [f.test_start, f.test_stop], "first": when(f.test_start),
                 "last": when(f.test_stop - 1)},
        "validation": f.validation,
        "metrics": metrics,
        "buy_and_hold_return": float(close[f.test_stop - 1] / close[f.test_start] - 1.0),
        "generations": [vars(g) for g in f.generations],
    }  # fmt: skip


def _regime_report(
    candles: Candles, rows: slice, raw: dict[str, Any], regime: NDArray[np.int64],
    action: NDArray[np.uint8],
) -> list[dict[str, Any]]:  # fmt: skip
    """Per regime in force: share of bars, the swarm's and buy-and-hold's log return there."""
    close = np.asarray(candles.close[rows], dtype=np.float64)
    equity = raw["equity"]
    codes = regime[rows]
    swarm_r = np.zeros(close.size)
    price_r = np.zeros(close.size)
    positive = (equity[1:] > 0) & (equity[:-1] > 0)
    swarm_r[1:] = np.log(np.where(positive, equity[1:], 1.0) / np.where(positive, equity[:-1], 1.0))
    price_r[1:] = np.log(close[1:] / close[:-1])
    out = []
    for k, name in [*enumerate(REGIME_NAMES), (-1, "unknown")]:
        mask = codes == k
        if not mask.any():
            continue
        out.append(
            {
                "regime": name,
                "share_of_bars": float(mask.mean()),
                "decisions": int(np.sum(mask & (action == ACTION_DECIDE))),
                "swarm_log_return": float(swarm_r[mask].sum()),
                "buy_and_hold_log_return": float(price_r[mask].sum()),
                "time_in_market": float(np.mean(raw["position"][mask] != 0.0)),
            }
        )
    return out


def _counts(codes: NDArray[np.uint8], names: list[str]) -> dict[str, int]:
    values, counts = np.unique(np.asarray(codes), return_counts=True)
    return {names[int(v)]: int(c) for v, c in zip(values, counts, strict=True)}


def _iso(ns: int) -> str:
    return str(np.datetime64(ns, "ns").astype("datetime64[s]")) + "Z"


def _warnings(
    metrics: dict[str, Any],
    folds: list[dict[str, Any]],
    raw: dict[str, Any],
    out_of_sample: bool,
) -> list[str]:
    """What would mislead a reader, in plain words, for the top of the report."""
    notes: list[str] = []
    gated = [f for f in folds if not f["traded"]]
    if gated and len(gated) == len(folds):
        notes.append(
            "every fold was gated flat: no validated swarm beat flat on its validation bars, so "
            "the swarm never traded and this result measures the gate, not a strategy"
        )
    else:
        for f in gated:
            notes.append(
                f"fold {f['fold']} ({f['test']['first']} to {f['test']['last']}) was gated flat: "
                f"{f['gate']['reason'] if f['gate'] else 'not validated'}"
            )
    for f in folds:
        if f["gate"] and str(f["gate"]["reason"]).startswith("gate_disabled"):
            notes.append(f"fold {f['fold']} traded without passing a validation gate (disabled)")
    tim = metrics.get("time_in_market")
    if tim is not None and tim < MIN_TIME_IN_MARKET and len(gated) < len(folds):
        notes.append(
            f"the swarm held a position in only {tim:.1%} of the bars: most of the result is "
            "being flat"
        )
    halted = np.flatnonzero((raw["event_type"] == 2) & (raw["event_code"] == 4))
    if halted.size:
        notes.append(
            f"the kill switch halted trading at {_iso(int(raw['event_ts'][halted[0]]))}; the "
            "account stayed flat from then on (a person must reset a HALT)"
        )
    gross = metrics.get("gross_pnl") or 0.0
    costs = metrics["fees_paid"] + metrics["slippage_paid"] + metrics["borrow_paid"]
    if costs > 0 and gross > 0 and costs > 0.5 * gross:
        notes.append(f"costs took {costs / gross:.0%} of the gross profit")
    if raw["position"].size and raw["position"][-1] != 0.0:
        notes.append(
            f"a position of {raw['position'][-1]:.6g} could not be closed at the end (volume "
            "limit); it is valued at the last close"
        )
    if not out_of_sample:
        notes.append("NOT out of sample: the checkpoint's training data overlaps these candles")
    for f in folds:
        generations = f["generations"]
        if not generations:
            continue
        last = generations[-1]
        if last["best_fitness"] <= 0:
            notes.append(
                f"fold {f['fold']}: no agent had a positive fitness in the last generation "
                f"(best {last['best_fitness']:.2f}): the evolution found nothing that beat flat"
            )
        if last["entropy"] < MIN_ENTROPY:
            notes.append(
                f"fold {f['fold']}: the swarm's diversity collapsed (entropy {last['entropy']:.3f})"
            )
    notes.extend(metrics.get("warnings", []))
    return notes


def _data_warnings(candles: Candles, rows: slice) -> list[str]:
    notional = np.asarray(candles.volume[rows]) * np.asarray(candles.close[rows])
    median = float(np.median(notional)) if notional.size else 0.0
    if median > MAX_PLAUSIBLE_NOTIONAL_PER_BAR:
        return [
            f"the median bar trades {median:,.0f} in the quote currency: the volume column looks "
            "quote-denominated (colmena expects base units); fills and impact are misjudged"
        ]
    return []


def _report(
    candles: Candles,
    rows: slice,
    raw: dict[str, Any],
    config: BacktestConfig,
    folds: list[FoldInfo],
    regime: NDArray[np.int64],
    action: NDArray[np.uint8],
    baselines: dict[str, dict[str, Any]],
    baseline_equity: dict[str, NDArray[np.float64]],
    trades: pa.Table,
    from_checkpoint: bool,
    out_of_sample: bool,
    interval: str,
    bar_ns: int,
    timing: dict[str, float],
) -> dict[str, Any]:
    ts = candles.ts[rows]
    close = np.asarray(candles.close[rows], dtype=np.float64)
    equity = raw["equity"]
    traded = float(np.sum(np.abs(raw["fill_quantity"]) * raw["fill_price"]))
    metrics = performance_metrics(
        ts + bar_ns, equity, initial_equity=config.execution.initial_cash,
        position=raw["position"], close=close, trade_pnl=raw["trade_pnl"],
        traded_notional=traded, fees_paid=float(raw["fees_paid"]),
        slippage_paid=float(raw["slippage_paid"]), borrow_paid=float(raw["borrow_paid"]),
    )  # fmt: skip
    metrics["n_fills"] = int(raw["fill_bar"].size)
    initial = config.execution.initial_cash
    swarm_daily = daily_returns(ts + bar_ns, equity, initial)
    day_returns = swarm_daily.to_numpy()
    var = (
        [
            {
                "method": t.method,
                "confidence": t.confidence,
                "var": t.var,
                "expected_shortfall": t.expected_shortfall,
            }
            for t in value_at_risk_report(day_returns, horizon=1)
        ]
        if day_returns.size > 2
        else []
    )
    # Stress tests of the largest position held (by notional), at its bar.
    notional = np.abs(raw["position"] * close)
    largest = int(np.argmax(notional)) if notional.size else 0
    stress = [
        {"scenario": s.scenario, "shock": s.shock, "pnl": s.pnl, "pnl_fraction": s.pnl_fraction}
        for s in stress_test(
            float(raw["position"][largest]),
            float(close[largest]),
            float(max(equity[largest], 1e-9)),
            candles.close,
        )
    ]
    bench_daily = daily_returns(ts + bar_ns, baseline_equity["buy_and_hold"], initial)
    costs = metrics["fees_paid"] + metrics["slippage_paid"] + metrics["borrow_paid"]
    tear_sheet = {
        "monthly_returns": monthly_returns(swarm_daily),
        "drawdown_periods": drawdown_periods(ts + bar_ns, equity, initial),
        "benchmark": {"name": "buy_and_hold", **benchmark_relative(swarm_daily, bench_daily)},
        "trades": trade_statistics(trades),
        "costs": {
            "gross_pnl": metrics["gross_pnl"],
            "costs": costs,
            "net_pnl": metrics["net_pnl"],
            "cost_share_of_gross": costs / abs(metrics["gross_pnl"])
            if metrics["gross_pnl"]
            else None,
        },
        "largest_position": {
            "time": _iso(int(ts[largest] + bar_ns)),
            "position": float(raw["position"][largest]),
            "exposure": float(notional[largest] / equity[largest]) if equity[largest] > 0 else None,
        },
        "verdicts": _counts(raw["verdict"], _core.verdict_names()),
        "trading_states": _counts(raw["state"], _core.trading_state_names()),
    }
    event_names = _core.event_type_names()
    counts: dict[str, int] = {}
    for t in raw["event_type"]:
        counts[event_names[t]] = counts.get(event_names[t], 0) + 1
    first = int(rows.start or 0)
    fold_reports = [
        _fold_report(f, first, candles, raw, config.execution.initial_cash, bar_ns) for f in folds
    ]
    source = candles.source
    return {
        "warnings": _warnings(metrics, fold_reports, raw, out_of_sample)
        + _data_warnings(candles, rows),
        "metrics": metrics,
        "baselines": baselines,
        "out_of_sample": out_of_sample,
        "mode": "checkpoint" if from_checkpoint else "walk_forward",
        "decision_interval": interval,
        "market": config.execution.market,
        "folds": fold_reports,
        "regimes": _regime_report(candles, rows, raw, regime, action),
        "tear_sheet": tear_sheet,
        "value_at_risk": var,
        "value_at_risk_horizon": "1 day",
        "stress_tests": stress,
        "events": counts,
        "config": msgspec.to_builtins(config),
        "seed": config.seed,
        "data": {
            "file": str(source),
            "sha256": file_sha256(source) if source.is_file() else None,
            "rows": len(candles),
            "traded_rows": len(ts),
            "first": _iso(int(ts[0])),
            "last": _iso(int(ts[-1])),
            "gaps": candles.gaps.count,
            "missing_bars": candles.gaps.missing_bars,
        },
        "timing": timing,
        "versions": library_versions(),
    }
