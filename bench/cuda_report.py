"""The GPU benchmarks' table (bench/bench_cuda.py's pytest-benchmark JSON) with the arithmetic
against the device's limits.

Usage: ``python bench/cuda_report.py results.json [--tflops 67] [--tbps 4.8]`` (defaults: an H200,
67 TFLOP/s FP32 without tensor cores, 4.8 TB/s HBM3e). For every row: the median time, the
achieved GFLOP/s, the floor that the FLOP and the memory-traffic limits set (``flop / peak``,
``bytes / bandwidth``), which of them binds, how far the row is from it, and within each group
the ratio to the torch CUDA peer.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("results", type=Path)
    parser.add_argument("--tflops", type=float, default=67.0, help="FP32 peak, TFLOP/s")
    parser.add_argument("--tbps", type=float, default=4.8, help="memory bandwidth, TB/s")
    args = parser.parse_args()
    data = json.loads(args.results.read_text())
    machine = data.get("machine_info", {})
    print(f"device run: {machine.get('node', '?')}, {machine.get('cpu', {}).get('brand_raw', '')}")
    groups: dict[str, list[dict[str, Any]]] = {}
    for bench in data["benchmarks"]:
        groups.setdefault(bench.get("group") or "", []).append(bench)
    for group, rows in groups.items():
        print(f"\n### {group}\n")
        print(
            "| row | median ms | GFLOP/s | FLOP floor ms | memory floor ms | binds | x floor "
            "| vs torch CUDA |"
        )
        print("| --- | ---: | ---: | ---: | ---: | --- | ---: | ---: |")

        def param(name: str) -> str:
            return name[name.index("[") :] if "[" in name else ""

        for row in rows:
            peers = [
                r for r in rows if "torch" in r["name"] and param(r["name"]) == param(row["name"])
            ]
            torch_median = peers[0]["stats"]["median"] if len(peers) == 1 else None
            median = row["stats"]["median"]
            info = row.get("extra_info", {})
            flop = float(info.get("flop", 0.0))
            traffic = float(info.get("bytes", 0.0))
            flop_floor = flop / (args.tflops * 1e12)
            mem_floor = traffic / (args.tbps * 1e12)
            floor = max(flop_floor, mem_floor)
            binds = "FLOP" if flop_floor >= mem_floor else "memory"
            ratio = (
                f"{torch_median / median:.2f}x"
                if torch_median and "torch" not in row["name"]
                else ""
            )
            print(
                f"| {row['name']} | {median * 1e3:.3f} | {flop / median / 1e9:.0f} "
                f"| {flop_floor * 1e3:.3f} | {mem_floor * 1e3:.3f} | {binds if floor else ''} "
                f"| {median / floor if floor else float('nan'):.1f} | {ratio} |"
            )


if __name__ == "__main__":
    main()
