"""How the default decision interval and consensus mode were chosen: measurements on training data.

Run from the repository root (needs torch and the real candle files)::

    python bench/decision_interval.py [--data ../shared/data] [--out bench/decision_interval.json]

Only the training window of the default walk-forward run is read (the first 70% of each 2018
file); the out-of-sample test segments are never looked at. For each file and each decision
interval it measures:

1. **Move against cost**: the median absolute log return from one decision to the next, in basis
   points, next to the round-trip cost of the default execution (fees and fixed slippage on both
   sides, 24 bps). An interval whose typical move is not several times the round trip is one where
   costs swamp whatever a signal knows.
2. **Validation result**: ``colmena.training.train`` with the default configuration at that
   interval, on that training window: the number of agents that beat flat on the selection bars,
   and the voted swarm's net return on the gate bars through the full engine (its buy-and-hold
   return over the same bars next to it), once with the global consensus and once with one weight
   set per market regime.

The rule, fixed before looking at the numbers: the default interval is the shortest one whose
median move is at least :data:`MIN_MOVE_OVER_COST` times the round-trip cost on every file (a
shorter interval pays the spread on moves that cannot cover it), unless a longer one has a
better validation result (a higher mean gate net return over all files and seeds); the
per-regime consensus is the default only if its mean gate net return over all intervals, files
and seeds beats the global one. The printed table and choice are what ``DecisionConfig.interval``
and ``TrainConfig.regime_consensus`` were set from; the JSON keeps every number.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from colmena.backtest.engine import BacktestConfig
from colmena.data.ohlcv import load_ohlcv
from colmena.model.decision import DecisionConfig, decision_bars
from colmena.training.trainer import train

FILES = (
    "btcusd_bitfinex_1m_2018.parquet",
    "ethusd_bitfinex_1m_2018.parquet",
    "xrpusd_bitfinex_1m_2018.parquet",
)
INTERVALS = ("5m", "15m", "1h", "4h")
#: An interval qualifies when its median move is at least this many round-trip costs.
MIN_MOVE_OVER_COST = 2.0


def measure(data: Path, intervals: tuple[str, ...], seeds: tuple[int, ...]) -> list[dict[str, Any]]:
    base = BacktestConfig()
    rows: list[dict[str, Any]] = []
    cost = base.execution.round_trip_cost_bps
    for name in FILES:
        candles = load_ohlcv(data / name)
        train_len = int(len(candles) * base.train_fraction)
        window = candles.slice(0, train_len)
        close = np.asarray(window.close)
        for interval in intervals:
            decide = np.flatnonzero(decision_bars(window.ts, 60.0, interval))
            moves = np.abs(np.diff(np.log(close[decide]))) * 1e4
            row: dict[str, Any] = {
                "file": name,
                "interval": interval,
                "median_move_bps": float(np.median(moves)),
                "round_trip_cost_bps": cost,
                "move_over_cost": float(np.median(moves) / cost),
            }
            for per_regime in (False, True):
                gates = []
                for seed in seeds:
                    config = msgspec.structs.replace(
                        base.training,
                        seed=seed,
                        decision=DecisionConfig(interval=interval),
                        regime_consensus=per_regime,
                    )
                    started = time.perf_counter()
                    result = train(window, config, execution=base.execution, risk=base.risk)
                    gate = result.model.gate
                    assert gate is not None
                    assert result.state.validation is not None
                    selection = result.state.validation.selection
                    gates.append(
                        {
                            "seed": seed,
                            "voters": selection.voters,
                            "passed": gate.passed,
                            "reason": gate.reason,
                            "net_return": gate.net_return,
                            "buy_and_hold_return": gate.buy_and_hold_return,
                            "time_in_market": gate.time_in_market,
                            "seconds": time.perf_counter() - started,
                        }
                    )
                key = "per_regime" if per_regime else "global"
                row[key] = gates
                row[f"{key}_mean_net_return"] = float(np.mean([g["net_return"] for g in gates]))
                row[f"{key}_passed"] = int(sum(g["passed"] for g in gates))
            rows.append(row)
            print(
                f"{name:34s} {interval:>4s}  move {row['median_move_bps']:7.1f} bps "
                f"({row['move_over_cost']:4.1f}x cost)  gate net: global "
                f"{row['global_mean_net_return']:+.3%} ({row['global_passed']}/{len(seeds)} pass)"
                f"  per-regime {row['per_regime_mean_net_return']:+.3%} "
                f"({row['per_regime_passed']}/{len(seeds)} pass)",
                flush=True,
            )
    return rows


def summary(rows: list[dict[str, Any]], intervals: tuple[str, ...]) -> str:
    lines = [
        "| interval | median move / round-trip cost (mean, lowest file) | "
        "gate net return, global | gate net return, per regime | "
        "gates passed (global / per regime) |",
        "|---|---|---|---|---|",
    ]
    for interval in intervals:
        sel = [r for r in rows if r["interval"] == interval]
        ratio = np.mean([r["move_over_cost"] for r in sel])
        lowest = min(r["move_over_cost"] for r in sel)
        g = np.mean([r["global_mean_net_return"] for r in sel])
        p = np.mean([r["per_regime_mean_net_return"] for r in sel])
        gp = sum(r["global_passed"] for r in sel)
        pp = sum(r["per_regime_passed"] for r in sel)
        n = sum(len(r["global"]) for r in sel)
        lines.append(
            f"| {interval} | {ratio:.2f}x, {lowest:.2f}x | {g:+.3%} | {p:+.3%} | "
            f"{gp}/{n} / {pp}/{n} |"
        )
    return "\n".join(lines)


def choose(rows: list[dict[str, Any]], intervals: tuple[str, ...]) -> dict[str, Any]:
    """The documented rule (module docstring) applied to the measurements."""

    def mean(interval: str, key: str) -> float:
        return float(np.mean([r[key] for r in rows if r["interval"] == interval]))

    qualified = [
        i
        for i in intervals
        if min(r["move_over_cost"] for r in rows if r["interval"] == i) >= MIN_MOVE_OVER_COST
    ]
    interval = qualified[0] if qualified else intervals[-1]
    for longer in qualified[1:]:
        if mean(longer, "global_mean_net_return") > mean(interval, "global_mean_net_return"):
            interval = longer
    per_regime = float(np.mean([r["per_regime_mean_net_return"] for r in rows]))
    global_ = float(np.mean([r["global_mean_net_return"] for r in rows]))
    return {
        "interval": interval,
        "qualified": qualified,
        "regime_consensus": per_regime > global_,
        "mean_gate_net_return": {"global": global_, "per_regime": per_regime},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--out", type=Path, default=Path("bench/decision_interval.json"))
    parser.add_argument("--seeds", type=int, default=2, help="training seeds per setting")
    parser.add_argument("--intervals", nargs="+", default=list(INTERVALS))
    parser.add_argument(
        "--from", dest="saved", type=Path, default=None, help="re-read a saved --out file"
    )
    args = parser.parse_args()
    intervals = tuple(args.intervals)
    if args.saved is not None:
        rows = json.loads(args.saved.read_text())["rows"]
        intervals = tuple(i for i in intervals if any(r["interval"] == i for r in rows))
    else:
        rows = measure(args.data, intervals, tuple(range(args.seeds)))
    table = summary(rows, intervals)
    chosen = choose(rows, intervals)
    print(table)
    print(f"chosen: decision interval {chosen['interval']}, regime_consensus "
          f"{chosen['regime_consensus']} ({chosen})")  # fmt: skip
    if args.saved is None:
        args.out.write_text(
            json.dumps({"rows": rows, "table": table, "chosen": chosen}, indent=1) + "\n"
        )


if __name__ == "__main__":
    main()
