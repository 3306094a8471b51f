"""Atomic, durable file writes: the one implementation every writer in colmena uses.

A reader never sees half a file, and a file reported written survives a power cut. The protocol
(the classic one of SQLite's and PostgreSQL's documentation, and of ``man 2 rename``):

1. create a temporary file in the target's own directory (a rename is atomic only within one
   file system);
2. write it, flush it and ``fsync`` it: its bytes are on disk;
3. ``os.replace`` it onto the target name: readers see the old file or the new one, never a mix;
4. ``fsync`` the directory, so the rename itself is on disk.

On any error the temporary file is removed and the target is untouched.

Also here, for every writer: :func:`check_writable` (before long work: the output folder can be
created, written, and has room for an estimate), :class:`FolderLock` (one writer per output
folder, the holder named to the others), and :func:`observe_steps`, the test hook through which
every writer of colmena reports the steps of its protocol (tests inject faults there: a full or
read-only disk, a kill at a known point).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Final

if sys.platform != "win32":
    import fcntl

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = [
    "WRITE_STEPS",
    "FolderLock",
    "FolderLockedError",
    "StepObserver",
    "UnwritableFolderError",
    "check_free_space",
    "check_writable",
    "fsync_directory",
    "fsync_file",
    "observe_steps",
    "report_step",
    "write_atomically",
    "write_parquet_atomically",
]

#: ``observer(step, path)``: a step name of some writer's protocol and the file or folder it is
#: writing.
StepObserver = Callable[[str, Path], None]

_observers: list[StepObserver] = []


@contextlib.contextmanager
def observe_steps(observer: StepObserver) -> Iterator[None]:
    """Call ``observer(step, path)`` at every step every colmena writer reports, while inside.

    The writers and their steps: :func:`write_atomically` (:data:`WRITE_STEPS`, with the target
    file; checkpoints and Parquet files go through it), :func:`check_writable` (``"probe"``,
    with the probe file it just created), :class:`FolderLock` (``"locked"``, with the folder)
    and :func:`colmena.persistence.run_folder.write_run` (its ``RUN_STEPS``, with the run
    folder). An exception the observer raises propagates from that point exactly as if the
    operation itself had failed there: tests raise ``OSError(errno.ENOSPC)`` or
    ``OSError(errno.EROFS)`` to stand for a full or read-only disk, or block to be killed
    at a known point. Not thread-local: observers see every thread's writes.
    """
    _observers.append(observer)
    try:
        yield
    finally:
        _observers.remove(observer)


def report_step(step: str, path: Path, on_step: Callable[[str], None] | None = None) -> None:
    """Report ``step`` of a writer's protocol: to ``on_step`` (the writer's own callback), then
    to every observer of :func:`observe_steps`. For writers; see :func:`observe_steps`."""
    if on_step is not None:
        on_step(step)
    for observer in list(_observers):
        observer(step, path)


#: The steps of :func:`write_atomically`, in order, as reported to its ``on_step`` callback.
WRITE_STEPS: Final = (
    "temporary_opened",  # the temporary file exists, empty
    "temporary_written",  # every byte written and flushed, not yet fsync'd
    "temporary_synced",  # fsync'd, not yet renamed
    "renamed",  # os.replace done: the new file is visible
    "directory_synced",  # the rename is durable
)


def fsync_directory(directory: str | os.PathLike[str]) -> None:
    """Make a directory's entries (creations, renames, deletions) durable.

    A no-op on Windows, which has no directory handles to fsync (NTFS journals renames).

    Raises
    ------
    OSError
        If the directory cannot be opened.
    """
    if sys.platform == "win32":
        return
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: str | os.PathLike[str]) -> None:
    """Flush a written file's bytes to disk (``fsync``)."""
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def write_atomically(
    path: str | os.PathLike[str],
    write: Callable[[BinaryIO], object],
    *,
    on_step: Callable[[str], None] | None = None,
) -> Path:
    """Write ``path`` atomically and durably (see the module docstring for the protocol).

    Parameters
    ----------
    path : str or os.PathLike
        The target file; its directory is created if missing.
    write : callable
        ``write(fh)`` fills the temporary file, opened ``"wb"``.
    on_step : callable, optional
        Called with each name of :data:`WRITE_STEPS` as the protocol passes it (tests use it to
        interrupt the writer at every step); :func:`observe_steps` observers see them too.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    OSError
        If the directory cannot be written (the disk is full, read-only, ...): nothing is left
        behind and ``path`` is untouched. Whatever ``write`` raises propagates, likewise.
    """

    out = Path(path)

    def step(name: str) -> None:
        report_step(name, out, on_step)

    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh:
            if sys.platform != "win32":  # a normal file (mkstemp makes it private: 0600)
                os.fchmod(fh.fileno(), 0o666 & ~_umask())
            step("temporary_opened")
            write(fh)
            fh.flush()
            step("temporary_written")
            os.fsync(fh.fileno())
        step("temporary_synced")
        os.replace(tmp, out)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    step("renamed")
    fsync_directory(out.parent)
    step("directory_synced")
    return out


def _umask() -> int:
    """The process's umask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_parquet_atomically(table: pa.Table, path: str | os.PathLike[str]) -> Path:
    """Write ``table`` as zstd-compressed Parquet to ``path`` with :func:`write_atomically`.

    Raises
    ------
    OSError
        As :func:`write_atomically`.
    """
    import pyarrow.parquet as pq

    return write_atomically(path, lambda fh: pq.write_table(table, fh, compression="zstd"))


# --------------------------------------------------------------------------------------------
# Before long work: can the output be written at all?
# --------------------------------------------------------------------------------------------

_REASONS: Final = {
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
}


class UnwritableFolderError(OSError):
    """An output folder cannot be written: the message names the folder and the reason."""


def _nearest_existing(folder: Path) -> Path:
    existing = folder.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    return existing


def check_writable(folder: str | os.PathLike[str], *, required_bytes: int = 0) -> Path:
    """Check, before long work, that ``folder`` is or can become a folder that takes writes.

    The nearest existing folder at or above ``folder`` must take a new entry: a probe file is
    created in it and removed again (permission bits are not enough: root ignores them, and a
    read-only mount or a full disk shows only on a write). Then, when ``required_bytes`` is
    given, :func:`check_free_space`. Nothing is left behind.

    Returns
    -------
    pathlib.Path
        The nearest existing folder at or above ``folder`` (``folder`` itself if it exists).

    Raises
    ------
    UnwritableFolderError
        ``folder`` exists and is not a folder, or it cannot be written (the reason: read-only
        file system, permission denied, no space left, ...), or has too little free space.
    """
    target = Path(folder)
    if target.exists() and not target.is_dir():
        raise UnwritableFolderError(errno.ENOTDIR, f"{target}: exists and is not a folder")
    existing = _nearest_existing(target)
    if not existing.is_dir():
        raise UnwritableFolderError(errno.ENOTDIR, f"{target}: {existing} is not a folder")
    try:
        fd, name = tempfile.mkstemp(prefix=".colmena-probe-", dir=existing)
        try:
            os.close(fd)
            report_step("probe", Path(name))
        finally:
            with contextlib.suppress(OSError):
                os.unlink(name)
    except OSError as exc:
        reason = _REASONS.get(exc.errno or 0, exc.strerror or str(exc))
        raise UnwritableFolderError(
            exc.errno or errno.EIO, f"{target}: cannot write in {existing} ({reason})"
        ) from exc
    if required_bytes > 0:
        check_free_space(target, required_bytes)
    return existing


def check_free_space(folder: str | os.PathLike[str], required_bytes: int) -> None:
    """Check that the file system of ``folder`` (or of its nearest existing parent) has at least
    ``required_bytes`` free for this user (``shutil.disk_usage(...).free``).

    Raises
    ------
    UnwritableFolderError
        With errno ``ENOSPC``, naming the folder, the free and the needed space.
    """
    target = Path(folder)
    existing = _nearest_existing(target)
    free = shutil.disk_usage(existing).free
    if free < required_bytes:
        raise UnwritableFolderError(
            errno.ENOSPC,
            f"{target}: only {_size(free)} free in {existing}, about {_size(required_bytes)} "
            "needed; free some space or choose another folder",
        )


def _size(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:,} bytes" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    raise AssertionError  # pragma: no cover


# --------------------------------------------------------------------------------------------
# One writer per output folder
# --------------------------------------------------------------------------------------------


class FolderLockedError(OSError):
    """Another process holds the :class:`FolderLock` of a folder; the message names it."""


class FolderLock:
    """An exclusive, non-blocking lock on an output folder, held by one process at a time.

    The lock is ``flock`` on the file ``.{name}.lock`` *beside* the folder (in its parent, so
    that the folder itself may be renamed away and back while the lock is held). The holder
    writes its pid, host and start time into the file, so that a refused writer can say who
    holds it. The kernel releases the lock when the holder dies, however it dies (SIGKILL, power
    cut): a dead writer's lock never blocks the next one. Released, the file is removed (while
    still locked; an acquirer re-checks that the file it locked is still the one at the path).
    On Windows (no ``flock``) the lock is a no-op.

    Use as a context manager, or :meth:`acquire` / :meth:`release`. Not re-entrant: a second
    lock on the same folder, in the same process too, is refused.
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self.path = self.folder.absolute().parent / f".{self.folder.name}.lock"
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """True between :meth:`acquire` and :meth:`release`."""
        return self._fd is not None

    def acquire(self) -> FolderLock:
        """Take the lock (the parent folder must exist).

        Raises
        ------
        FolderLockedError
            Another process (or another lock in this one) holds it: the message names the
            folder and the holder's pid, host and start time.
        OSError
            The lock file cannot be created (read-only, ...).
        """
        if self._fd is not None:
            raise RuntimeError(f"{self.folder}: this lock is already held")
        if sys.platform == "win32":  # pragma: no cover - no flock
            self._fd = -1
            return self
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                raise FolderLockedError(
                    errno.EWOULDBLOCK,
                    f"{self.folder}: another colmena process is writing to it ({holder}); wait "
                    "for it to finish or choose another folder",
                ) from None
            except BaseException:
                os.close(fd)
                raise
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # the holder released (and removed) it meanwhile: lock the new file
        holder_info = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(holder_info).encode())
        self._fd = fd
        report_step("locked", self.folder)
        return self

    def release(self) -> None:
        """Release the lock and remove its file; a no-op when not held."""
        fd, self._fd = self._fd, None
        if fd is None or fd < 0:
            return
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
        finally:
            os.close(fd)

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
        since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(info["since"])))
        return f"pid {int(info['pid'])} on {info['host']}, since {since}"
    except (OSError, ValueError, KeyError, TypeError):
        return "holder unknown"
