"""Fault figures: the long fault campaign of tests/fault_harness.py, counts written to JSON.

    COLMENA_DATA_DIR=/path/to/data python bench/faults.py          # the committed figures
    COLMENA_DATA_DIR=/path/to/data python bench/faults.py --runs 1 --faults 7 --bars 300

The live system (every daemon its own ``colmena serve`` process under the supervisor of
``colmena up``, a real nats-server, a real PostgreSQL) replays real BTC/USDT candles ``--runs``
times, each run with ``--faults`` faults (SIGKILL of each daemon, a restart of the NATS server,
of PostgreSQL, in turn) at points drawn from a seeded RNG, and its records are compared table by
table with an undisturbed run's. The exchange feed runs ``--exchange-runs`` times against the
local Binance-format server answering slowly, with HTTP 5xx, with 429 or not at all, and what it
publishes is compared with an undisturbed feed's; its circuit breaker, backoff and timeouts are
checked on every request. Writes ``bench/faults.json``: faults injected (in all and by kind),
runs, records compared, duplicates found, lost messages, differences, the breaker's openings,
the timeouts and waits seen, and the seconds taken. Exits 1 when a run differs or hangs, or a
duplicate or a lost message is found.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import fault_harness as fh


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="disturbed runs of the system")
    parser.add_argument("--faults", type=int, default=14, help="faults per run")
    parser.add_argument("--bars", type=int, default=600, help="candles replayed per run")
    parser.add_argument("--exchange-runs", type=int, default=3)
    parser.add_argument("--exchange-faults", type=int, default=8, help="faults per exchange run")
    parser.add_argument("--polls", type=int, default=60, help="polls per exchange run")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("faults.json"))
    args = parser.parse_args()
    data_dir = Path(os.environ.get("COLMENA_DATA_DIR", ""))
    if not (data_dir / fh.CANDLE_FILE).is_file():
        print(f"bench/faults.py: set COLMENA_DATA_DIR to the folder with {fh.CANDLE_FILE}")
        return 2
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="colmena-faults-bench-") as folder:
        figures = fh.campaign(
            Path(folder), data_dir, runs=args.runs, faults_per_run=args.faults, bars=args.bars,
            exchange_runs=args.exchange_runs, exchange_faults=args.exchange_faults,
            polls=args.polls, seed=args.seed,
        )  # fmt: skip
    figures["command"] = "python bench/faults.py " + " ".join(sys.argv[1:])
    figures["seconds"] = round(time.monotonic() - started, 1)
    figures["machine"] = (
        f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    )
    args.out.write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))
    failed = (
        figures["differences"]
        or figures["hung_runs"]
        or figures["duplicates_found"]
        or figures["lost_messages"]
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
