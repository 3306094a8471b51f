"""Reliability figures: the fuzz targets driven with a big budget, every input in a child process.

    python bench/reliability.py --examples 20000 --uninitialized-examples 1000 --timeout 20
                                                            # the committed figures
    python bench/reliability.py --examples 500 --targets core

Each input of each target (``tests/fuzz_strategies.py``: mutated candle files through
``load_ohlcv``, hostile settings documents, hostile calls of every compiled-core entry point, and
calls on core objects whose ``__init__`` never ran) runs in a spawned child process with a 4 GiB
address-space cap and a timeout, so that a crash (a signal) or a hang (no answer in time) is seen
and counted instead of ending the run. Each input ends as one of:

- ``ok`` or a documented error (counted by name: DataValidationError, ValidationError,
  ValueError, TypeError, ...): the target's property holds;
- ``violations``: a result or error message the documentation rules out;
- ``tracebacks``: an exception other than the documented error classes;
- ``crashes``: the child died (the signal is recorded);
- ``hangs``: no answer within ``--timeout`` seconds.

Inputs are counted per target and per input class (file kind, settings struct, core entry
point). Writes ``bench/reliability.json`` with the counts, the wall time and the reproducers of
failures (a Python script for core calls, the file bytes or document otherwise). The inputs are
derandomized: the same command gives the same inputs.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import fuzz_strategies as fz  # noqa: E402

FAILURES = ("violation", "traceback", "crash", "hang")
#: Reproducers kept per target and failure kind (the first ones found).
KEEP_REPRODUCERS = 5


def _targets() -> dict[str, tuple[str, st.SearchStrategy[Any]]]:
    """Target name -> (check name in fuzz_strategies.CHECKS, strategy of inputs)."""
    return {
        "loader": ("loader", fz.candle_files()),
        "config": ("config", fz.config_documents()),
        "core": ("core", fz.core_calls()),
        "core_uninitialized": (
            "core",
            fz.core_calls(uninitialized=True).filter(lambda c: c.uninitialized),
        ),
    }


def input_class(value: Any) -> str:
    """The class an input is counted under."""
    if isinstance(value, fz.CandleFile):
        parquet = value.name.lower().endswith((".parquet", ".pq"))
        kind = "parquet" if parquet else "csv"
        return f"{kind}/{'valid' if value.valid else 'mutated'}"
    if isinstance(value, fz.ConfigDocument):
        return value.cls_name
    if isinstance(value, fz.CoreCall):
        return value.target
    return type(value).__name__


def run_target(
    name: str, examples: int, timeout: float, runner: fz.IsolatedRunner
) -> dict[str, Any]:
    """Drive one target with ``examples`` inputs; its counts and reproducers."""
    check, strategy = _targets()[name]
    outcomes: collections.Counter[str] = collections.Counter()
    classes: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    reproducers: list[dict[str, Any]] = []
    kept: collections.Counter[str] = collections.Counter()
    started = time.monotonic()

    @settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def drive(value: Any) -> None:
        outcome = runner.run(check, value)
        kind = outcome.kind
        label = outcome.detail if kind == "done" else kind
        outcomes[label] += 1
        classes[input_class(value)][label] += 1
        if kind in FAILURES and kept[kind] < KEEP_REPRODUCERS:
            kept[kind] += 1
            reproducers.append(
                {
                    "kind": kind,
                    "class": input_class(value),
                    "detail": outcome.detail[-1500:],
                    "reproducer": fz.reproducer(check, value)[-6000:],
                }
            )

    drive()
    tried = sum(outcomes.values())
    failures = {kind: 0 for kind in FAILURES}
    for label, count in outcomes.items():
        if label in FAILURES:
            failures[label] = count
    return {
        "inputs": tried,
        "crashes": failures["crash"],
        "hangs": failures["hang"],
        "tracebacks": failures["traceback"],
        "violations": failures["violation"],
        "outcomes": dict(sorted(outcomes.items())),
        "classes": {k: dict(sorted(v.items())) for k, v in sorted(classes.items())},
        "wall_seconds": round(time.monotonic() - started, 1),
        "timeout_seconds": timeout,
        "reproducers": reproducers,
    }


def main(argv: list[str] | None = None) -> int:
    """Run the targets and write the JSON; exit code 1 when any input failed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=1000, help="inputs per target")
    parser.add_argument(
        "--targets",
        default=",".join(_targets()),
        help=f"comma-separated, from: {', '.join(_targets())}",
    )
    parser.add_argument(
        "--uninitialized-examples",
        type=int,
        default=300,
        help="inputs of core_uninitialized (most crash: each costs a new child process)",
    )
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per input (hang)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "reliability.json")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.targets.split(",") if n.strip()]
    unknown = sorted(set(names) - set(_targets()))
    if unknown or args.examples < 1:
        parser.error(f"unknown targets {unknown}" if unknown else "--examples must be >= 1")

    import hypothesis

    import colmena

    started = time.monotonic()
    results: dict[str, Any] = {}
    for name in names:
        with fz.IsolatedRunner(timeout=args.timeout) as runner:
            n = args.uninitialized_examples if name == "core_uninitialized" else args.examples
            results[name] = run_target(name, n, args.timeout, runner)
        r = results[name]
        print(
            f"{name}: {r['inputs']} inputs, {r['crashes']} crashes, {r['hangs']} hangs, "
            f"{r['tracebacks']} tracebacks, {r['violations']} violations "
            f"({r['wall_seconds']} s)",
            flush=True,
        )
    report = {
        "command": "python bench/reliability.py " + " ".join(argv or sys.argv[1:]),
        "examples_per_target": args.examples,
        "uninitialized_examples": args.uninitialized_examples,
        "wall_seconds": round(time.monotonic() - started, 1),
        "environment": {
            "colmena": colmena.__version__,
            "hypothesis": hypothesis.__version__,
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "child_memory_bytes": fz.CHILD_MEMORY_BYTES,
        },
        "totals": {
            key: sum(r[key] for r in results.values())
            for key in ("inputs", "crashes", "hangs", "tracebacks", "violations")
        },
        "targets": results,
    }
    args.out.write_text(json.dumps(report, indent=2, sort_keys=False) + "\n")
    print(f"wrote {args.out}")
    totals = report["totals"]
    return 1 if any(totals[k] for k in ("crashes", "hangs", "tracebacks", "violations")) else 0


if __name__ == "__main__":
    sys.exit(main())
