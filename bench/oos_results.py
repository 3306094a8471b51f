"""Out-of-sample results of the default configuration on the three 2018 files, with baselines.

Run from the repository root (needs torch and the real candle files)::

    python bench/oos_results.py [--data ../shared/data] [--out bench/oos_results.json]

For each file it runs exactly what ``colmena backtest FILE`` runs (the default
:class:`colmena.backtest.BacktestConfig`: walk-forward, one fold, the last 30% of the year out of
sample), and the same with four folds, and keeps the swarm's metrics, every fold's gate, the
baselines and the training time. ``--markdown`` prints the table the README shows.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import msgspec

from colmena.backtest.engine import BacktestConfig, backtest
from colmena.data.ohlcv import load_ohlcv

FILES = (
    "btcusd_bitfinex_1m_2018.parquet",
    "ethusd_bitfinex_1m_2018.parquet",
    "xrpusd_bitfinex_1m_2018.parquet",
)
KEYS = (
    "total_return", "sharpe", "max_drawdown", "time_in_market", "mean_gross_exposure", "n_fills",
    "fees_paid", "slippage_paid",
)  # fmt: skip


def run_all(data: Path, folds: tuple[int, ...]) -> list[dict[str, Any]]:
    rows = []
    for name in FILES:
        candles = load_ohlcv(data / name)
        for k in folds:
            config = msgspec.structs.replace(BacktestConfig(), folds=k)
            run = backtest(candles, config)
            report = run.report
            rows.append(
                {
                    "file": name,
                    "folds": k,
                    "test": [report["data"]["first"], report["data"]["last"]],
                    "swarm": {key: report["metrics"].get(key) for key in KEYS},
                    "baselines": {
                        b: {key: m.get(key) for key in KEYS} for b, m in report["baselines"].items()
                    },
                    "gates": [
                        {
                            "fold": f["fold"],
                            "traded": f["traded"],
                            "reason": f["gate"]["reason"],
                            "validation_net_return": f["gate"]["net_return"],
                            "test_return": f["metrics"]["total_return"],
                        }
                        for f in report["folds"]
                    ],
                    "warnings": report["warnings"],
                    "training_seconds": report["timing"]["training_seconds"],
                    "total_seconds": report["timing"]["total_seconds"],
                }
            )
            print(json.dumps(rows[-1]["gates"]), flush=True)
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    def pct(v: float | None) -> str:
        return "n/a" if v is None else f"{v:+.1%}"

    lines = [
        "| file | folds | test segment | swarm | traded folds | flat | buy & hold | "
        "buy & hold at the swarm's exposure | momentum |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        b = r["baselines"]
        traded = sum(g["traded"] for g in r["gates"])
        lines.append(
            f"| {r['file'].split('_')[0]} | {r['folds']} | {r['test'][0][:10]} to "
            f"{r['test'][1][:10]} | {pct(r['swarm']['total_return'])} | {traded}/{r['folds']} | "
            f"{pct(b['flat']['total_return'])} | {pct(b['buy_and_hold']['total_return'])} | "
            f"{pct(b['buy_and_hold_exposure_matched']['total_return'])} | "
            f"{pct(b['momentum']['total_return'])} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--out", type=Path, default=Path("bench/oos_results.json"))
    parser.add_argument("--folds", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--markdown", action="store_true", help="print the README table of --out")
    args = parser.parse_args()
    if args.markdown:
        print(markdown(json.loads(args.out.read_text())["rows"]))
        return
    rows = run_all(args.data, tuple(args.folds))
    args.out.write_text(json.dumps({"rows": rows}, indent=1) + "\n")
    print(markdown(rows))


if __name__ == "__main__":
    main()
