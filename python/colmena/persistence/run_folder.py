"""Run folders: what ``colmena backtest`` writes, read back, and never a user's file lost.

A run folder holds ``bars.parquet``, ``decisions.parquet``, ``orders.parquet``, ``fills.parquet``,
``equity.parquet``, ``events.parquet``, ``trades.parquet``, ``report.json``, ``report.html`` and
the marker :data:`RUN_MARKER`. It is written to a temporary folder beside the target, every file
fsync'd, then renamed into place and the parent folder fsync'd (the protocol of
:mod:`colmena.atomic_write`, for a folder): a reader sees the old run or the new one, and colmena
only ever replaces a folder that holds one of its runs and nothing else.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Final

import msgspec
import numpy as np
import pyarrow.parquet as pq

from colmena.atomic_write import fsync_directory, fsync_file
from colmena.backtest.engine import BacktestRun
from colmena.report.html import render_html

__all__ = [
    "RUN_FILES",
    "RUN_MARKER",
    "RunFolderError",
    "check_run_folder",
    "is_run_folder",
    "load_run",
    "write_run",
]


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise NotImplementedError(f"cannot encode {type(value).__name__} in report.json")


def load_run(run_dir: str | os.PathLike[str]) -> BacktestRun:
    """Read a run folder written by :func:`write_run` back into a :class:`BacktestRun`.

    Raises
    ------
    RunFolderError
        If ``run_dir`` is not a colmena run folder or misses one of its files.
    """
    folder = Path(run_dir)
    if not is_run_folder(folder):
        raise RunFolderError(f"{folder}: not a colmena run folder (written by colmena backtest)")
    tables = {}
    for name in ("bars", "decisions", "orders", "fills", "equity", "events", "trades"):
        path = folder / f"{name}.parquet"
        if not path.is_file():
            raise RunFolderError(
                f"{folder}: {path.name} is missing (a run of an older colmena? run it again)"
            )
        tables[name] = pq.read_table(path)
    try:
        report = msgspec.json.decode((folder / "report.json").read_bytes())
    except (OSError, msgspec.DecodeError) as exc:
        raise RunFolderError(f"{folder / 'report.json'}: cannot be read: {exc}") from exc
    equity = tables["equity"]
    curves = {
        name.removeprefix("baseline_"): np.asarray(equity.column(name).to_numpy(), dtype=float)
        for name in equity.column_names
        if name.startswith("baseline_")
    }
    return BacktestRun(**tables, report=report, folds=[], baseline_equity=curves)


#: A file every run folder holds, so that colmena only ever replaces its own folders.
RUN_MARKER: Final = ".colmena-run"
RUN_FILES: Final = (
    "bars.parquet", "decisions.parquet", "orders.parquet", "fills.parquet", "equity.parquet",
    "events.parquet", "trades.parquet", "report.json", "report.html", RUN_MARKER,
)  # fmt: skip


class RunFolderError(ValueError):
    """``--out`` cannot receive a run (nothing was written or deleted)."""


def is_run_folder(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is a folder written by :func:`write_run` (it holds the run marker)."""
    return (Path(path) / RUN_MARKER).is_file()


def check_run_folder(out_dir: str | os.PathLike[str], *, replace: bool = False) -> Path:
    """Check, before any work, that a run may be written to ``out_dir``.

    Allowed: a path that does not exist yet (its parents are created), an empty folder, or, with
    ``replace``, a folder holding an earlier colmena run and nothing else. Never a folder with any
    other file in it: colmena does not delete files it did not write.

    Returns
    -------
    pathlib.Path
        ``out_dir`` as a Path.

    Raises
    ------
    RunFolderError
        Naming the path and the reason: it is a file; it is the current folder or one above it;
        it holds files that are not a colmena run (also beside an earlier run); it holds an
        earlier run and ``replace`` is False; or the folder it would be written in is not
        writable.
    """
    target = Path(out_dir)
    resolved = target.resolve()
    cwd = Path.cwd().resolve()
    if resolved == cwd or resolved in cwd.parents:
        raise RunFolderError(
            f"{target}: the run folder cannot be the current folder or one above it; "
            "name a new folder, e.g. --out colmena-run"
        )
    if target.exists() and not target.is_dir():
        raise RunFolderError(f"{target}: exists and is not a folder")
    if target.is_dir() and any(target.iterdir()):
        if not is_run_folder(target):
            raise RunFolderError(
                f"{target}: the folder is not empty and is not a colmena run folder; colmena "
                "never deletes files it did not write: choose another --out"
            )
        foreign = sorted(p.name for p in target.iterdir() if p.name not in RUN_FILES)
        if foreign:
            raise RunFolderError(
                f"{target}: an earlier run, with files colmena did not write "
                f"({', '.join(foreign[:3])}); colmena never deletes them: move them or choose "
                "another --out"
            )
        if not replace:
            raise RunFolderError(
                f"{target}: holds an earlier colmena run; pass --force to replace it, or choose "
                "another --out"
            )
    existing = resolved.parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise RunFolderError(f"{target}: cannot write in {existing} (permission denied)")
    return target


def write_run(
    run: BacktestRun, out_dir: str | os.PathLike[str], *, html: bool = True, replace: bool = False
) -> Path:
    """Write the run directory atomically: a temp directory beside ``out_dir``, then a rename.

    Files: ``bars.parquet``, ``decisions.parquet``, ``orders.parquet``, ``fills.parquet``,
    ``equity.parquet`` (with the baselines' equity), ``events.parquet``, ``trades.parquet`` (round
    trips), ``report.json``, (with ``html``) a self-contained
    ``report.html``, and the marker :data:`RUN_MARKER`. ``out_dir`` must pass
    :func:`check_run_folder` (an earlier run is replaced only with ``replace``, and only once the
    new one is complete). On any error nothing is left behind and nothing is deleted.

    Raises
    ------
    RunFolderError
        See :func:`check_run_folder`.
    OSError
        If writing fails (the disk is full, ...); the previous content of ``out_dir`` is intact.
    """
    target = check_run_folder(out_dir, replace=replace)
    created = []
    parent = target.resolve().parent
    while not parent.exists():
        created.append(parent)
        parent = parent.parent
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # a normal folder (mkdtemp makes it private)
    try:
        for name in ("bars", "decisions", "orders", "fills", "equity", "events", "trades"):
            table = getattr(run, name)
            if table is not None:
                pq.write_table(table, tmp / f"{name}.parquet", compression="zstd")
        encoded = msgspec.json.encode(run.report, enc_hook=_json_default)
        (tmp / "report.json").write_bytes(msgspec.json.format(encoded))
        if html:
            (tmp / "report.html").write_text(render_html(run), encoding="utf-8")
        (tmp / RUN_MARKER).write_text('{"format": "colmena-run", "version": 1}\n')
        for path in tmp.iterdir():
            fsync_file(path)
        old = None
        if target.exists():
            check_run_folder(target, replace=True)  # again: nothing foreign appeared meanwhile
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, old)
        os.replace(tmp, target)
        if old is not None:
            for name in RUN_FILES:  # only what a run writes; then the (now empty) folder
                (old / name).unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                old.rmdir()
        fsync_directory(target.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for folder in created:  # the parents this call created, innermost first, if empty
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    return target
