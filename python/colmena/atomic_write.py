"""Atomic, durable file writes: the one implementation every writer in colmena uses.

A reader never sees half a file, and a file reported written survives a power cut. The protocol
(the classic one of SQLite's and PostgreSQL's documentation, and of ``man 2 rename``):

1. create a temporary file in the target's own directory (a rename is atomic only within one
   file system);
2. write it, flush it and ``fsync`` it: its bytes are on disk;
3. ``os.replace`` it onto the target name: readers see the old file or the new one, never a mix;
4. ``fsync`` the directory, so the rename itself is on disk.

On any error the temporary file is removed and the target is untouched.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Final

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = [
    "WRITE_STEPS",
    "fsync_directory",
    "fsync_file",
    "write_atomically",
    "write_parquet_atomically",
]

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
        interrupt the writer at every step).

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

    def step(name: str) -> None:
        if on_step is not None:
            on_step(name)

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh:
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


def write_parquet_atomically(table: pa.Table, path: str | os.PathLike[str]) -> Path:
    """Write ``table`` as zstd-compressed Parquet to ``path`` with :func:`write_atomically`.

    Raises
    ------
    OSError
        As :func:`write_atomically`.
    """
    import pyarrow.parquet as pq

    return write_atomically(path, lambda fh: pq.write_table(table, fh, compression="zstd"))
