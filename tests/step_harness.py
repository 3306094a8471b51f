"""Run a colmena writer in a child process that stops at a reported step, for kill tests.

Usage::

    python step_harness.py STEP NAME_GLOB -- cli ARGS...        # colmena ARGS
    python step_harness.py STEP NAME_GLOB -- rewrite SRC DST    # write_run(load_run(SRC), DST)

Through :func:`colmena.atomic_write.observe_steps`, the first time a writer reports ``STEP`` for
a path whose name matches ``NAME_GLOB`` (fnmatch), the child prints ``at STEP PATH`` and waits
for a line on stdin: the parent kills it there (SIGKILL, a power cut at a known point), or runs
something else meanwhile and then writes a line to let it go on. No timing is involved.
``rewrite`` replaces DST (``replace=True``) and prints ``run id UUID`` of what it wrote.
"""

from __future__ import annotations

import fnmatch
import sys
from pathlib import Path

from colmena.atomic_write import observe_steps


def main(argv: list[str]) -> None:
    step, glob, sep, mode, *rest = argv
    assert sep == "--", argv
    stopped = False

    def observer(name: str, path: Path) -> None:
        nonlocal stopped
        if not stopped and name == step and fnmatch.fnmatch(path.name, glob):
            stopped = True
            print(f"at {name} {path}", flush=True)
            sys.stdin.readline()

    with observe_steps(observer):
        if mode == "cli":
            from colmena.cli import main as cli

            cli(rest)
        elif mode == "rewrite":
            from colmena.persistence.run_folder import load_run, read_run_id, write_run

            src, dst = rest
            path = write_run(load_run(src), dst, replace=True)
            print(f"run id {read_run_id(path)}", flush=True)
        else:
            raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
