"""Run folders: what ``colmena backtest`` writes, read back, and never a user's file lost.

A run folder holds ``bars.parquet``, ``decisions.parquet``, ``orders.parquet``, ``fills.parquet``,
``equity.parquet``, ``events.parquet``, ``trades.parquet``, ``report.json``, ``report.html`` and
the marker :data:`RUN_MARKER` (which also holds the run's unique id, :func:`read_run_id`). It is
written to a temporary folder beside the target, every file fsync'd, then renamed into place and
the parent folder fsync'd (the protocol of :mod:`colmena.atomic_write`, for a folder): a reader
sees the old run or the new one, and colmena only ever replaces a folder that holds one of its
runs and nothing else.

Beside a run folder ``NAME`` (in its parent) a writer keeps, for the time it writes:

- ``.NAME.lock``: the :class:`colmena.atomic_write.FolderLock` (one writer per folder; a second
  one is refused, naming the holder's pid);
- ``.NAME.<random>.tmp``: the new run being written, with the owner file :data:`WRITER_FILE`
  naming the target and the writer's pid;
- ``.NAME.old-<pid>`` (or ``.NAME.old-<pid>-<n>``): when replacing, the earlier run, moved
  aside between the two renames.

A writer killed at any point (power cut, SIGKILL) leaves some of these; the next writer, or the
next :func:`load_run`, takes the lock (so no live writer owns them) and repairs the folder
(:func:`recover_run_folder`): an earlier run moved aside while ``NAME`` is missing is renamed
back (the interrupted run never happened); one left beside a complete new run is removed; a
dead writer's temporary folder is removed. Only entries that carry colmena's own marks are
touched, and within them only the files a run writes: never a user's file.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import socket
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

import msgspec
import numpy as np
import pyarrow.parquet as pq

from colmena.atomic_write import (
    FolderLock,
    FolderLockedError,
    UnwritableFolderError,
    check_free_space,
    check_writable,
    fsync_directory,
    fsync_file,
    report_step,
)
from colmena.backtest.engine import BacktestRun
from colmena.report.html import render_html

__all__ = [
    "RUN_FILES",
    "RUN_MARKER",
    "RUN_STEPS",
    "WRITER_FILE",
    "RunFolderError",
    "RunFolderLockedError",
    "RunFolderReservation",
    "check_run_folder",
    "estimate_run_bytes",
    "is_run_folder",
    "load_run",
    "read_run_id",
    "recover_run_folder",
    "reserve_run_folder",
    "write_run",
]


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise NotImplementedError(f"cannot encode {type(value).__name__} in report.json")


def load_run(run_dir: str | os.PathLike[str], *, repair: bool = True) -> BacktestRun:
    """Read a run folder written by :func:`write_run` back into a :class:`BacktestRun`.

    A folder left half-replaced by a writer that was killed is repaired first
    (:func:`recover_run_folder`, under the folder's lock) unless ``repair`` is False (for a
    caller that holds the lock and repaired it already).

    Raises
    ------
    RunFolderError
        If ``run_dir`` is not a colmena run folder or misses one of its files.
    RunFolderLockedError
        If it must be repaired while another process is writing it.
    """
    folder = Path(run_dir)
    if repair and not is_run_folder(folder) and _leftovers(folder):
        lock = _lock(folder)
        try:
            recover_run_folder(folder)
        finally:
            lock.release()
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


#: A file every run folder holds, so that colmena only ever replaces its own folders. JSON:
#: ``{"format": "colmena-run", "version": 2, "run_id": "<uuid4>"}`` (version 1 had no id).
RUN_MARKER: Final = ".colmena-run"
#: The owner file of a temporary run folder: JSON ``{"target": NAME, "pid": ..., "host": ...}``
#: (removed once the run is in place; a run folder may still hold it after a crash).
WRITER_FILE: Final = ".colmena-writer"
#: Every file a run folder may hold: what :func:`write_run` writes.
RUN_FILES: Final = (
    "bars.parquet", "decisions.parquet", "orders.parquet", "fills.parquet", "equity.parquet",
    "events.parquet", "trades.parquet", "report.json", "report.html", RUN_MARKER, WRITER_FILE,
)  # fmt: skip

#: The steps of :func:`write_run`, in order, as reported to its ``on_step`` callback and to
#: :func:`colmena.atomic_write.observe_steps` observers (with the run folder's path; for
#: ``"file_written"``, the file's path in the temporary folder, once per file).
RUN_STEPS: Final = (
    "reserved",  # locked, repaired, checked; nothing written yet
    "file_written",  # one file of the run is in the temporary folder (once per file)
    "temporary_synced",  # every file and the temporary folder fsync'd
    "old_moved_aside",  # only when replacing: the earlier run renamed to .NAME.old-<pid>
    "renamed",  # the new run is at NAME
    "old_removed",  # only when replacing: the earlier run's files deleted
    "directory_synced",  # the renames are durable
)

#: Free space :func:`estimate_run_bytes` asks for: a fixed part (report.html embeds plotly.js,
#: about 6 MB) and a part per bar (about 90 bytes a bar were measured for the Parquet files;
#: the estimate is generous).
RUN_FIXED_BYTES: Final = 16 * 2**20
RUN_BYTES_PER_BAR: Final = 256


class RunFolderError(ValueError):
    """``--out`` cannot receive a run (nothing was written or deleted)."""


class RunFolderLockedError(RunFolderError):
    """Another process is writing a run to the same folder (the message names it)."""


def estimate_run_bytes(n_bars: int) -> int:
    """A generous estimate of a run folder's size for ``n_bars`` candles, in bytes:
    :data:`RUN_FIXED_BYTES` + :data:`RUN_BYTES_PER_BAR` per bar."""
    return RUN_FIXED_BYTES + RUN_BYTES_PER_BAR * max(int(n_bars), 0)


def is_run_folder(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is a folder written by :func:`write_run` (it holds the run marker)."""
    return (Path(path) / RUN_MARKER).is_file()


def read_run_id(run_dir: str | os.PathLike[str]) -> uuid.UUID:
    """The unique id of the run in ``run_dir``, drawn (UUID4) when :func:`write_run` wrote it.

    Two runs are two ids even when every number in them is equal; the same folder always gives
    the same id (recording it again is idempotent). A folder of an older colmena (marker
    version 1, without an id) gets a name-based UUID5 of its ``report.json`` bytes.

    Raises
    ------
    RunFolderError
        If ``run_dir`` is not a run folder or its marker cannot be read.
    """
    folder = Path(run_dir)
    try:
        marker = msgspec.json.decode((folder / RUN_MARKER).read_bytes())
        run_id = marker.get("run_id") if isinstance(marker, dict) else None
        if run_id is None:
            digest = hashlib.sha256((folder / "report.json").read_bytes()).hexdigest()
            return uuid.uuid5(uuid.NAMESPACE_URL, f"colmena-run:{digest}")
        return uuid.UUID(str(run_id))
    except (OSError, msgspec.DecodeError, ValueError) as exc:
        raise RunFolderError(f"{folder}: not a readable colmena run folder: {exc}") from exc


def check_run_folder(
    out_dir: str | os.PathLike[str], *, replace: bool = False, required_bytes: int = 0
) -> Path:
    """Check, before any work, that a run may be written to ``out_dir``.

    Allowed: a path that does not exist yet (its parents are created), an empty folder, or, with
    ``replace``, a folder holding an earlier colmena run and nothing else. Never a folder with any
    other file in it: colmena does not delete files it did not write. The folder it would be
    written in must take a new entry (:func:`colmena.atomic_write.check_writable`: a probe file,
    not permission bits) and have ``required_bytes`` free.

    Returns
    -------
    pathlib.Path
        ``out_dir`` as a Path.

    Raises
    ------
    RunFolderError
        Naming the path and the reason: it is a file; it is the current folder or one above it;
        it holds files that are not a colmena run (also beside an earlier run); it holds an
        earlier run and ``replace`` is False; the folder it would be written in is not
        writable (permission denied, read-only file system, ...) or has too little free space.
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
    try:
        check_writable(resolved.parent, required_bytes=required_bytes)
    except UnwritableFolderError as exc:
        raise RunFolderError(f"{target}: {exc.strerror}") from exc
    return target


# ---------------------------------------------------------------- the writer's lock and repair


def _lock(target: Path) -> FolderLock:
    """The target's lock, acquired; RunFolderLockedError when another process holds it."""
    lock = FolderLock(target)
    try:
        return lock.acquire()
    except FolderLockedError as exc:
        raise RunFolderLockedError(exc.strerror) from None


def _old_re(name: str) -> re.Pattern[str]:
    return re.compile(rf"\.{re.escape(name)}\.old-\d+(?:-\d+)?")


def _tmp_re(name: str) -> re.Pattern[str]:
    return re.compile(rf"\.{re.escape(name)}\.[^/]+\.tmp")


def _leftovers(target: Path) -> list[Path]:
    """What a killed writer may have left beside ``target`` (candidates, not yet checked)."""
    parent = target.absolute().parent
    try:
        names = os.listdir(parent)
    except OSError:
        return []
    old, tmp = _old_re(target.name), _tmp_re(target.name)
    return sorted(parent / n for n in names if old.fullmatch(n) or tmp.fullmatch(n))


def _writer_of(folder: Path) -> dict[str, Any] | None:
    try:
        info = msgspec.json.decode((folder / WRITER_FILE).read_bytes())
    except (OSError, msgspec.DecodeError):
        return None
    return info if isinstance(info, dict) else None


def _remove_run_files(folder: Path) -> bool:
    """Delete what a run writes in ``folder``, then the folder if empty; True when it is gone.
    Anything else in it (a user's file) stays, and so does the folder."""
    for name in RUN_FILES:
        with contextlib.suppress(FileNotFoundError):
            (folder / name).unlink()
    try:
        folder.rmdir()
    except OSError:
        return False
    return True


def recover_run_folder(out_dir: str | os.PathLike[str]) -> list[str]:
    """Repair what a writer killed mid-way left beside ``out_dir``; returns what was done.

    The caller must hold the folder's lock (:func:`write_run` and :func:`load_run` do), so that
    no live writer owns what is found. Then:

    - ``.NAME.old-<pid>``, a run folder, with ``NAME`` missing (killed between the two renames):
      renamed back to ``NAME``, the earlier run restored;
    - ``.NAME.old-<pid>`` with ``NAME`` a run folder (killed after the second rename): its run
      files deleted, then the folder if empty;
    - ``.NAME.<random>.tmp`` whose :data:`WRITER_FILE` names ``NAME`` (a dead writer's
      unfinished run): its run files and owner file deleted, then the folder if empty.

    Entries without colmena's marks, and files a run does not write, are left alone.

    Returns
    -------
    list of str
        One line per repair, e.g. ``"restored run from .run.old-123"``.
    """
    target = Path(out_dir)
    done: list[str] = []
    old_re = _old_re(target.name)
    for entry in _leftovers(target):
        if not entry.is_dir() or entry.is_symlink():
            continue
        if old_re.fullmatch(entry.name):
            if not is_run_folder(entry):
                continue
            if not target.exists():
                os.replace(entry, target)
                done.append(f"restored {target.name} from {entry.name}")
            elif is_run_folder(target) and _remove_run_files(entry):
                done.append(f"removed {entry.name}")
        else:
            writer = _writer_of(entry)
            if writer is None or writer.get("target") != target.name:
                continue
            if _remove_run_files(entry):
                done.append(f"removed {entry.name} (pid {writer.get('pid')})")
    if done:
        fsync_directory(target.absolute().parent)
    return done


class RunFolderReservation:
    """``out_dir`` locked for this process, repaired and checked (see :func:`reserve_run_folder`).

    Attributes
    ----------
    path : pathlib.Path
        The run folder.
    replace : bool
        Whether an earlier run there may be replaced.
    repairs : list of str
        What :func:`recover_run_folder` repaired when the reservation was taken.
    """

    def __init__(self, path: Path, replace: bool, repairs: list[str]) -> None:
        self.path = path
        self.replace = replace
        self.repairs = repairs

    def check_free_space(self, required_bytes: int) -> None:
        """Check that the folder's file system has ``required_bytes`` free.

        Raises
        ------
        RunFolderError
            Naming the folder, the free and the needed space.
        """
        try:
            check_free_space(self.path.absolute().parent, required_bytes)
        except UnwritableFolderError as exc:
            raise RunFolderError(f"{self.path}: {exc.strerror}") from exc


@contextlib.contextmanager
def reserve_run_folder(
    out_dir: str | os.PathLike[str], *, replace: bool = False, required_bytes: int = 0
) -> Iterator[RunFolderReservation]:
    """Hold ``out_dir`` for one run, from before the work until the run is written.

    Creates the missing parent folders (removed again on exit if they stay empty), takes the
    folder's lock, repairs what a killed writer left (:func:`recover_run_folder`) and runs
    :func:`check_run_folder`. Pass the reservation to :func:`write_run`.

    Raises
    ------
    RunFolderLockedError
        Another process is writing a run to ``out_dir``: the message names its pid and host.
    RunFolderError
        See :func:`check_run_folder`.
    """
    target = Path(out_dir)
    check_run_folder(target, replace=replace, required_bytes=required_bytes)
    created: list[Path] = []
    parent = target.absolute().parent
    while not parent.exists():
        created.append(parent)
        parent = parent.parent
    try:
        target.absolute().parent.mkdir(parents=True, exist_ok=True)
        lock = _lock(target)
        try:
            repairs = recover_run_folder(target)
            check_run_folder(target, replace=replace)  # again, under the lock
            yield RunFolderReservation(target, replace, repairs)
        finally:
            lock.release()
    finally:
        for folder in created:  # the parents created here, innermost first, if still empty
            with contextlib.suppress(OSError):
                folder.rmdir()


def write_run(
    run: BacktestRun,
    out_dir: str | os.PathLike[str],
    *,
    html: bool = True,
    replace: bool = False,
    reservation: RunFolderReservation | None = None,
    on_step: Callable[[str], None] | None = None,
) -> Path:
    """Write the run directory atomically: a temp directory beside ``out_dir``, then a rename.

    Files: ``bars.parquet``, ``decisions.parquet``, ``orders.parquet``, ``fills.parquet``,
    ``equity.parquet`` (with the baselines' equity), ``events.parquet``, ``trades.parquet`` (round
    trips), ``report.json``, (with ``html``) a self-contained ``report.html``, and the marker
    :data:`RUN_MARKER` with a new run id (:func:`read_run_id`). ``out_dir`` must pass
    :func:`check_run_folder` (an earlier run is replaced only with ``replace``, and only once the
    new one is complete). On any error nothing is left behind and nothing is deleted; a writer
    killed at any step leaves what the next one repairs (see the module docstring).

    Parameters
    ----------
    reservation : RunFolderReservation, optional
        From :func:`reserve_run_folder` for ``out_dir``, taken before the work; without it,
        ``write_run`` takes one for the time it writes.
    on_step : callable, optional
        Called with each name of :data:`RUN_STEPS` as the protocol passes it.

    Raises
    ------
    RunFolderLockedError
        Another process is writing a run to ``out_dir``.
    RunFolderError
        See :func:`check_run_folder`.
    OSError
        If writing fails (the disk is full, ...); the previous content of ``out_dir`` is intact.
    """
    if reservation is None:
        with reserve_run_folder(out_dir, replace=replace) as held:
            return write_run(run, out_dir, html=html, reservation=held, on_step=on_step)
    target = Path(out_dir)
    if target.absolute() != reservation.path.absolute():
        raise ValueError(f"the reservation is for {reservation.path}, not {target}")

    def step(name: str, path: Path = target) -> None:
        report_step(name, path, on_step)

    check_run_folder(target, replace=reservation.replace)
    step("reserved")
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # a normal folder (mkdtemp makes it private)
    try:
        owner = {"target": target.name, "pid": os.getpid(), "host": socket.gethostname()}
        (tmp / WRITER_FILE).write_bytes(msgspec.json.encode(owner))
        for name in ("bars", "decisions", "orders", "fills", "equity", "events", "trades"):
            table = getattr(run, name)
            if table is not None:
                pq.write_table(table, tmp / f"{name}.parquet", compression="zstd")
                step("file_written", tmp / f"{name}.parquet")
        encoded = msgspec.json.encode(run.report, enc_hook=_json_default)
        (tmp / "report.json").write_bytes(msgspec.json.format(encoded))
        step("file_written", tmp / "report.json")
        if html:
            (tmp / "report.html").write_text(render_html(run), encoding="utf-8")
            step("file_written", tmp / "report.html")
        marker = {"format": "colmena-run", "version": 2, "run_id": str(uuid.uuid4())}
        (tmp / RUN_MARKER).write_bytes(msgspec.json.encode(marker) + b"\n")
        step("file_written", tmp / RUN_MARKER)
        for path in tmp.iterdir():
            fsync_file(path)
        fsync_directory(tmp)
        step("temporary_synced")
    except BaseException:
        _remove_run_files(tmp)
        raise
    old = None
    try:
        if target.exists():
            check_run_folder(target, replace=True)  # again: nothing foreign appeared meanwhile
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            n = 0
            while old.exists():  # one that recovery kept (it holds a user's file)
                n += 1
                old = target.with_name(f".{target.name}.old-{os.getpid()}-{n}")
            os.replace(target, old)
            step("old_moved_aside")
        os.replace(tmp, target)
    except BaseException:
        if old is not None and not target.exists():
            os.replace(old, target)  # put the earlier run back
        _remove_run_files(tmp)
        raise
    step("renamed")
    (target / WRITER_FILE).unlink()
    if old is not None:
        _remove_run_files(old)  # only what a run writes; then the (now empty) folder
        step("old_removed")
    fsync_directory(target.absolute().parent)
    step("directory_synced")
    return target
