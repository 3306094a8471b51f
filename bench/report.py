"""Turn a pytest-benchmark JSON file into the README's table of ratios.

Usage::

    pytest bench --benchmark-only --benchmark-json=.benchmarks/raw.json
    python bench/report.py .benchmarks/raw.json --summary bench/results.json

The raw file (every round of every benchmark, megabytes) stays out of the repository;
``--summary`` writes the small file the README table is built from (each benchmark's group,
name, median and round statistics, extra figures, and the machine), and ``python
bench/report.py bench/results.json`` prints the table again from it. In every group the rows named
``test_colmena_*`` are colmena and the ``test_peer_*`` rows are its peers; each line gives both
median times and the ratio colmena / peer (below 1 means colmena is faster); a parametrized
row (``[10]``) is paired with the peer of the same parameter. Extra figures a
benchmark stored in ``extra_info`` (for example GB/s) are printed next to its row.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any


def _fmt_time(seconds: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6), ("ns", 1e-9)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def _extra(bench: dict[str, Any]) -> str:
    info = bench.get("extra_info") or {}
    return ", ".join(f"{k} {v}" for k, v in sorted(info.items()))


def _param(name: str) -> str:
    """The parameter id of a parametrized benchmark (``test_x[10]`` -> ``10``; "" if none)."""
    return name[name.index("[") :] if "[" in name else ""


def render(data: dict[str, Any]) -> str:
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for bench in data["benchmarks"]:
        groups[bench.get("group") or bench["name"]].append(bench)
    machine = data.get("machine_info", {})
    lines = [
        f"Machine: {machine.get('cpu', {}).get('brand_raw', 'unknown CPU')}, "
        f"{machine.get('cpu', {}).get('count', '?')} cores; "
        f"Python {machine.get('python_version', '?')}; median of each benchmark.",
        "",
        "| benchmark | colmena | peer | peer time | colmena / peer |",
        "|---|---|---|---|---|",
    ]
    for group in sorted(groups):
        rows = groups[group]
        ours = [b for b in rows if b["name"].startswith("test_colmena")]
        peers = [b for b in rows if b["name"].startswith("test_peer")]
        pairs = [
            (m, p)
            for m in ours
            for p in sorted(peers, key=lambda b: b["stats"]["median"])
            if _param(m["name"]) == _param(p["name"])  # a parametrized case with its own peer
        ]
        for mine, peer in pairs:
            t_mine = mine["stats"]["median"]
            t_peer = peer["stats"]["median"]
            peer_name = peer["name"].removeprefix("test_peer_").replace("_", " ")
            mine_txt = _fmt_time(t_mine) + (f" ({_extra(mine)})" if _extra(mine) else "")
            peer_txt = _fmt_time(t_peer) + (f" ({_extra(peer)})" if _extra(peer) else "")
            if len(ours) > 1:
                mine_txt = f"{mine['name'].removeprefix('test_colmena_').replace('_', ' ')}: "
                mine_txt += _fmt_time(t_mine) + (f" ({_extra(mine)})" if _extra(mine) else "")
            lines.append(
                f"| {group} | {mine_txt} | {peer_name} | {peer_txt} | {t_mine / t_peer:.2f} |"
            )
    return "\n".join(lines)


def summary(data: dict[str, Any]) -> dict[str, Any]:
    """The part of a pytest-benchmark file the table needs (no per-round data)."""
    machine = data.get("machine_info", {})
    keep = ("min", "max", "mean", "median", "stddev", "rounds", "iterations")
    return {
        "machine_info": {
            "cpu": {k: machine.get("cpu", {}).get(k) for k in ("brand_raw", "count")},
            "python_version": machine.get("python_version"),
        },
        "datetime": data.get("datetime"),
        "commit": (data.get("commit_info") or {}).get("id"),
        "benchmarks": [
            {
                "group": b.get("group"),
                "name": b["name"],
                "stats": {k: b["stats"].get(k) for k in keep},
                "extra_info": b.get("extra_info") or {},
            }
            for b in data["benchmarks"]
        ],
    }


def main(argv: list[str]) -> int:
    args = argv[1:]
    out: Path | None = None
    if "--summary" in args:
        i = args.index("--summary")
        if i + 1 >= len(args):
            print(__doc__, file=sys.stderr)
            return 2
        out = Path(args[i + 1])
        del args[i : i + 2]
    if len(args) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    data = json.loads(Path(args[0]).read_text())
    if out is not None:
        data = summary(data)
        out.write_text(json.dumps(data, indent=1) + "\n")
    print(render(data))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
