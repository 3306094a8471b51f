"""``colmena backup`` / ``colmena restore``: the records (PostgreSQL) and the checkpoints, as one
folder with a manifest of checksums.

A backup folder holds

- ``records.dump``: ``pg_dump --format=custom`` of the records' database (one consistent
  snapshot: pg_dump reads in one repeatable-read transaction, so the live recorder may go on
  writing);
- ``checkpoints/<k>/...``: a byte copy of every regular file under the ``k``-th checkpoint
  folder given (sub-folders kept; a single checkpoint file is copied on its own);
- ``manifest.json``: ``format`` (``"colmena-backup"``), ``version``, the colmena version, the
  time (UTC), the database (name, host, server version; never the password), the checkpoint
  sources, and the size and SHA-256 of every other file of the folder.

Written atomically: everything goes into a temporary folder beside ``--out``
(``.NAME.<random>.tmp``), each file fsync'd, then the folder is renamed to ``NAME`` and its
parent fsync'd; a failure removes the temporary folder (which holds only what the backup wrote)
and leaves nothing at ``NAME``. ``--out`` must not exist or be an empty folder: an existing
backup is never replaced and a user's folder never written into. The folder is readable by its
owner only (0700: the records are the user's trading history).

Restore verifies every checksum of the manifest first (a tampered or damaged file is refused,
named, before anything is touched), checks that the target database is empty (no table outside
the system schemas; ``force`` restores over it, ``pg_restore --clean``) and that no checkpoint
file would overwrite a different existing file, then runs ``pg_restore`` in a single
transaction (all or nothing) and writes the checkpoint files atomically. A user's file is never
deleted or overwritten.

``pg_dump`` and ``pg_restore`` come from the ``pgserver`` package's PostgreSQL (the one
``colmena up`` embeds) or from ``PATH``: the first whose major version is at least the server's.
A DSN's password is handed to them in the environment (``PGPASSWORD``), never on their command
line (which ``ps`` shows).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from colmena.atomic_write import (
    FolderLock,
    UnwritableFolderError,
    check_free_space,
    check_writable,
    fsync_directory,
    fsync_file,
    write_atomically,
)

__all__ = [
    "BACKUP_FORMAT",
    "DUMP_FILE",
    "MANIFEST_FILE",
    "BackupDatabaseError",
    "BackupError",
    "BackupResult",
    "BackupToolError",
    "RestoreResult",
    "backup",
    "find_pg_tool",
    "restore",
    "verify_backup",
]

#: ``format`` of every manifest.
BACKUP_FORMAT: Final = "colmena-backup"
#: Manifest version this colmena writes and reads.
BACKUP_VERSION: Final = 1
#: The manifest's file name in a backup folder.
MANIFEST_FILE: Final = "manifest.json"
#: The database dump's file name in a backup folder.
DUMP_FILE: Final = "records.dump"
_CHECKPOINTS: Final = "checkpoints"
_CHUNK: Final = 1 << 20


class BackupError(ValueError):
    """What the user gave cannot be backed up or restored (a path, a tampered backup, a
    non-empty target); the message names it. Nothing was written."""


class BackupToolError(BackupError):
    """``pg_dump`` / ``pg_restore`` cannot be found (or none is recent enough for the server)."""


class BackupDatabaseError(ConnectionError):
    """PostgreSQL cannot be reached, or pg_dump / pg_restore failed there (the message names
    the host and database, never the password). Nothing partial is left behind."""


@dataclass(frozen=True)
class BackupResult:
    """What :func:`backup` wrote.

    Attributes
    ----------
    path : pathlib.Path
        The backup folder.
    files : int
        Files in it besides the manifest (the dump and the checkpoint files).
    bytes : int
        Their total size in bytes.
    tables : int
        Tables in the database dumped (outside the system schemas).
    """

    path: Path
    files: int
    bytes: int
    tables: int


@dataclass(frozen=True)
class RestoreResult:
    """What :func:`restore` did.

    Attributes
    ----------
    tables : int
        Tables in the target database afterwards (outside the system schemas).
    checkpoint_files : int
        Checkpoint files written (0 when no checkpoint folder was given).
    unchanged : int
        Checkpoint files already there with the same bytes (left as they were).
    """

    tables: int
    checkpoint_files: int
    unchanged: int


# ---------------------------------------------------------------- the database side


def _split_dsn(dsn: str) -> tuple[str, dict[str, str], str]:
    """``dsn`` without its password (for a command line), the environment carrying the
    password, and a name for messages (``dbname on host``)."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    try:
        params = {k: str(v) for k, v in conninfo_to_dict(dsn).items() if v is not None}
    except Exception as exc:  # psycopg.ProgrammingError: not a DSN
        raise BackupError(f"--db: not a PostgreSQL DSN: {_first_line(str(exc))}") from None
    env = {}
    password = params.pop("password", None)
    if password is not None:
        env["PGPASSWORD"] = password
    where = f"database {params.get('dbname', '?')} on {params.get('host', 'localhost')}"
    return make_conninfo(**params), env, where


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0] if lines else "no message"


def _connect(dsn: str, where: str) -> Any:
    import psycopg

    try:
        return psycopg.connect(dsn, connect_timeout=10)
    except psycopg.OperationalError as exc:
        raise BackupDatabaseError(
            f"cannot connect to PostgreSQL ({where}): {_first_line(str(exc))}"
        ) from None


def _user_tables(conn: Any) -> list[str]:
    rows = conn.execute(
        "SELECT schemaname || '.' || tablename FROM pg_tables "
        "WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1"
    ).fetchall()
    return [str(r[0]) for r in rows]


def _major(version_text: str) -> int | None:
    """Major version of ``pg_dump --version``'s answer, ``pg_dump (PostgreSQL) 16.2`` (a
    distribution may add its own note after it)."""
    match = re.search(r"\(PostgreSQL\)\s+(\d+)", version_text)
    return int(match.group(1)) if match else None


def _candidates(tool: str) -> Iterator[Path]:
    # pgserver's own PostgreSQL, found without importing the package (its import warns about
    # runtime folders on some machines).
    with contextlib.suppress(ImportError, ValueError):
        spec = importlib.util.find_spec("pgserver")
        if spec is not None and spec.origin is not None:
            yield Path(spec.origin).parent / "pginstall" / "bin" / tool
    found = shutil.which(tool)
    if found:
        yield Path(found)


def find_pg_tool(tool: str, server_major: int | None = None) -> Path:
    """The ``pg_dump`` or ``pg_restore`` to use: from the ``pgserver`` package's PostgreSQL,
    else from ``PATH``; the first whose major version is at least ``server_major``.

    Raises
    ------
    BackupToolError
        None found, or none recent enough (the message names what was found and how to get
        one: ``pip install 'colmena-swarm[live]'`` or the PostgreSQL client package).
    """
    seen: list[str] = []
    for path in _candidates(tool):
        if not path.is_file():
            continue
        try:
            out = subprocess.run(
                [str(path), "--version"], capture_output=True, text=True, timeout=30, check=True
            ).stdout
        except (OSError, subprocess.SubprocessError):
            continue
        major = _major(out)
        if server_major is None or (major is not None and major >= server_major):
            return path
        seen.append(f"{path} (version {major})")
    if seen:
        raise BackupToolError(
            f"{tool}: only {', '.join(seen)} found, older than the server (version "
            f"{server_major}); install a {tool} of version {server_major} or newer"
        )
    raise BackupToolError(
        f"{tool} not found: neither the pgserver package (pip install 'colmena-swarm[live]') "
        "nor PATH (the PostgreSQL client package, e.g. apt install postgresql-client) has it"
    )


def _run_tool(args: list[str], env: dict[str, str], what: str) -> None:
    try:
        done = subprocess.run(
            args, capture_output=True, text=True, env={**os.environ, **env}, check=False
        )
    except OSError as exc:
        raise BackupDatabaseError(f"{what}: cannot run {args[0]}: {exc}") from None
    if done.returncode != 0:
        raise BackupDatabaseError(
            f"{what}: {Path(args[0]).name} failed: {_first_line(done.stderr)}"
        )


# ---------------------------------------------------------------- files


def _copy_hashed(source: Path, target: Path) -> tuple[int, str]:
    """Copy ``source`` to ``target`` (fsync'd); its size and SHA-256."""
    digest = hashlib.sha256()
    size = 0
    target.parent.mkdir(parents=True, exist_ok=True)
    with source.open("rb") as src, target.open("xb") as dst:
        while chunk := src.read(_CHUNK):
            digest.update(chunk)
            dst.write(chunk)
            size += len(chunk)
        dst.flush()
        os.fsync(dst.fileno())
    return size, digest.hexdigest()


def _sha256(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def _checkpoint_files(source: Path) -> list[tuple[Path, str]]:
    """(file, path relative to the source) of every regular file of a checkpoint folder or
    the one checkpoint file, sorted."""
    if source.is_file():
        return [(source, source.name)]
    out = []
    for root, dirs, names in os.walk(source):
        dirs.sort()
        for name in sorted(names):
            path = Path(root) / name
            if path.is_file():
                out.append((path, path.relative_to(source).as_posix()))
    return out


def _colmena_version() -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version("colmena-swarm")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - always installed
        return "unknown"


def _check_out(out: Path) -> None:
    if out.exists() or out.is_symlink():
        if not out.is_dir():
            raise BackupError(f"{out}: exists and is not a folder; choose another --out")
        if any(out.iterdir()):
            what = (
                "holds an earlier backup (backups are never replaced)"
                if (out / MANIFEST_FILE).is_file()
                else "is not empty and is not a colmena backup (colmena never writes into a "
                "user's folder)"
            )
            raise BackupError(f"{out}: {what}; choose another --out")


def backup(dsn: str, checkpoints: Sequence[Path], out: Path) -> BackupResult:
    """Back up the records' database and the checkpoint folders into the new folder ``out``.

    Parameters
    ----------
    dsn : str
        libpq DSN (URI or ``key=value``) of the records' database.
    checkpoints : sequence of pathlib.Path
        Checkpoint folders (or single checkpoint files), copied in this order to
        ``checkpoints/0``, ``checkpoints/1``, ...
    out : pathlib.Path
        The backup folder: must not exist, or be an empty folder.

    Returns
    -------
    BackupResult

    Raises
    ------
    BackupError
        ``out`` exists and is not empty (or is a file), its folder is not writable or has less
        free space than the database's size and the checkpoints', a checkpoint path is
        missing, the DSN is malformed; nothing written.
    BackupToolError
        No usable pg_dump.
    BackupDatabaseError
        The database cannot be reached, or pg_dump failed; nothing left at ``out``.
    colmena.atomic_write.FolderLockedError
        Another colmena process is writing ``out``.
    OSError
        The backup cannot be written (disk full, read-only, ...); nothing left at ``out``.
    """
    out = Path(out)
    _check_out(out)
    missing = [str(p) for p in checkpoints if not Path(p).exists()]
    if missing:
        raise BackupError(f"--checkpoints: {', '.join(missing)}: no such file or folder")
    try:
        check_writable(out.absolute().parent)
    except UnwritableFolderError as exc:
        raise BackupError(f"--out: {exc.strerror}") from None
    plain, env, where = _split_dsn(dsn)
    with _connect(dsn, where) as conn:
        server = int(conn.info.server_version)
        tables = _user_tables(conn)
        dbname = str(conn.info.dbname)
        host = str(conn.info.host)
        row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
        database_bytes = int(row[0]) if row is not None else 0
    major = server // 10_000
    pg_dump = find_pg_tool("pg_dump", major)
    # The dump is compressed: the database's size on disk is a generous estimate of it.
    needed = database_bytes + sum(
        path.stat().st_size for source in checkpoints for path, _ in _checkpoint_files(Path(source))
    )
    try:
        check_free_space(out.absolute().parent, needed)
    except UnwritableFolderError as exc:
        raise BackupError(f"--out: {exc.strerror}") from None
    out.absolute().parent.mkdir(parents=True, exist_ok=True)
    with FolderLock(out):
        _check_out(out)  # again, under the lock
        parent = out.absolute().parent
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=parent))
        try:
            files: dict[str, dict[str, Any]] = {}
            dump = tmp / DUMP_FILE
            _run_tool(
                [str(pg_dump), "--format=custom", "--no-password", f"--file={dump}",
                 f"--dbname={plain}"], env, f"pg_dump of {where}",
            )  # fmt: skip
            fsync_file(dump)
            size, sha = _sha256(dump)
            files[DUMP_FILE] = {"bytes": size, "sha256": sha}
            sources = []
            for k, source in enumerate(checkpoints):
                folder = f"{_CHECKPOINTS}/{k}"
                for path, rel in _checkpoint_files(Path(source)):
                    size, sha = _copy_hashed(path, tmp / folder / rel)
                    files[f"{folder}/{rel}"] = {"bytes": size, "sha256": sha}
                sources.append(
                    {"source": str(Path(source).absolute()), "folder": folder,
                     "kind": "file" if Path(source).is_file() else "folder"}
                )  # fmt: skip
            manifest = {
                "format": BACKUP_FORMAT,
                "version": BACKUP_VERSION,
                "colmena_version": _colmena_version(),
                "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "database": {
                    "file": DUMP_FILE,
                    "dbname": dbname,
                    "host": host,
                    "server_version": server,
                    "tables": tables,
                },
                "checkpoints": sources,
                "files": files,
            }
            data = json.dumps(manifest, indent=2, sort_keys=True).encode() + b"\n"
            write_atomically(tmp / MANIFEST_FILE, lambda fh: fh.write(data))
            for root, _, _ in os.walk(tmp):
                fsync_directory(root)
            if out.is_dir():
                out.rmdir()  # empty (checked under the lock): the rename takes its place
            os.rename(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)  # only what this backup wrote
            raise
        fsync_directory(out.absolute().parent)
    return BackupResult(
        path=out, files=len(files), bytes=sum(f["bytes"] for f in files.values()),
        tables=len(tables),
    )  # fmt: skip


# ---------------------------------------------------------------- restore


def verify_backup(folder: Path) -> dict[str, Any]:
    """Read a backup's manifest and check the size and SHA-256 of every file it lists.

    Returns
    -------
    dict
        The manifest.

    Raises
    ------
    BackupError
        Not a colmena backup, a manifest that cannot be read, or a file missing, of another
        size or another SHA-256 (the first such file named: tampered or damaged).
    """
    folder = Path(folder)
    path = folder / MANIFEST_FILE
    if not folder.is_dir():
        raise BackupError(f"{folder}: no such backup folder")
    try:
        manifest = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise BackupError(f"{folder}: not a colmena backup (no {MANIFEST_FILE})") from None
    except (OSError, ValueError) as exc:
        raise BackupError(f"{path}: cannot be read: {_first_line(str(exc))}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != BACKUP_FORMAT:
        raise BackupError(f"{path}: not a colmena backup manifest")
    if manifest.get("version") != BACKUP_VERSION:
        raise BackupError(
            f"{path}: backup format version {manifest.get('version')!r}; this colmena reads "
            f"version {BACKUP_VERSION}"
        )
    files = manifest.get("files")
    if not isinstance(files, dict) or DUMP_FILE not in files:
        raise BackupError(f"{path}: lists no {DUMP_FILE}")
    sources = manifest.get("checkpoints", [])
    if not isinstance(sources, list) or not all(
        isinstance(c, dict) and isinstance(c.get("folder"), str)
        and isinstance(c.get("source"), str) for c in sources
    ):  # fmt: skip
        raise BackupError(f"{path}: its list of checkpoint folders cannot be read")
    root = folder.resolve()
    for rel, entry in sorted(files.items()):
        target = (folder / rel).resolve()
        if not isinstance(entry, dict) or root not in target.parents:
            raise BackupError(f"{path}: bad entry {rel!r}")
        if not target.is_file():
            raise BackupError(f"{folder / rel}: missing from the backup; nothing restored")
        size, sha = _sha256(target)
        if size != entry.get("bytes") or sha != entry.get("sha256"):
            raise BackupError(
                f"{folder / rel}: SHA-256 differs from the manifest (the file was changed or "
                "damaged); nothing restored"
            )
    return manifest


def _checkpoint_plan(manifest: dict[str, Any], folder: Path, target: Path
                     ) -> tuple[list[tuple[Path, Path]], int]:  # fmt: skip
    """(backup file, target file) to write, and how many are already there unchanged.

    One source restores into ``target`` itself; several into ``target/<k>-<source name>``."""
    sources = manifest.get("checkpoints") or []
    plan: list[tuple[Path, Path]] = []
    unchanged = 0
    conflicts: list[str] = []
    for k, source in enumerate(sources):
        prefix = f"{source['folder']}/"
        name = Path(str(source["source"])).name
        base = target if len(sources) == 1 else target / f"{k}-{name}"
        for rel, entry in sorted(manifest["files"].items()):
            if not rel.startswith(prefix):
                continue
            dest = base / rel[len(prefix) :]
            if dest.exists() or dest.is_symlink():
                if dest.is_file() and _sha256(dest) == (entry["bytes"], entry["sha256"]):
                    unchanged += 1
                    continue
                conflicts.append(str(dest))
                continue
            plan.append((folder / rel, dest))
    if conflicts:
        raise BackupError(
            f"--checkpoints: {conflicts[0]}"
            + (f" (and {len(conflicts) - 1} more)" if len(conflicts) > 1 else "")
            + " exists with other contents; colmena never overwrites a user's file: move it or "
            "choose another --checkpoints folder; nothing restored"
        )
    return plan, unchanged


def restore(
    folder: Path, dsn: str, *, checkpoints: Path | None = None, force: bool = False
) -> RestoreResult:
    """Restore a backup written by :func:`backup`.

    Every checksum is verified first (:func:`verify_backup`); then the target database must be
    reachable and empty (``force``: restored over, the dump's tables dropped and re-created),
    and no checkpoint file may stand where a different file exists. Only then is the dump
    restored (``pg_restore --single-transaction``: all or nothing) and are the checkpoint files
    written (each atomically; files already there with the same bytes are left alone).

    Parameters
    ----------
    folder : pathlib.Path
        The backup folder.
    dsn : str
        libpq DSN of the target database (which must exist).
    checkpoints : pathlib.Path, optional
        Where to restore the checkpoints (a backup of one folder restores into it; of several,
        into ``<k>-<name>`` sub-folders). None: the database only.
    force : bool
        Restore into a database that already holds tables.

    Raises
    ------
    BackupError
        Not a backup, a tampered or damaged file, a non-empty target database without
        ``force``, a checkpoint file in the way; nothing restored.
    BackupToolError
        No usable pg_restore.
    BackupDatabaseError
        The database cannot be reached, or pg_restore failed (its transaction rolled back).
    OSError
        A checkpoint file cannot be written (the database is restored by then).
    """
    folder = Path(folder)
    manifest = verify_backup(folder)
    plan: list[tuple[Path, Path]] = []
    unchanged = 0
    if checkpoints is not None:
        if checkpoints.exists() and not checkpoints.is_dir():
            raise BackupError(f"--checkpoints: {checkpoints}: exists and is not a folder")
        plan, unchanged = _checkpoint_plan(manifest, folder, Path(checkpoints))
    plain, env, where = _split_dsn(dsn)
    with _connect(dsn, where) as conn:
        server = int(conn.info.server_version)
        present = _user_tables(conn)
    if present and not force:
        raise BackupError(
            f"--db: {where} is not empty ({len(present)} tables, e.g. {present[0]}); restore "
            "into a new database, or pass --force to replace its tables; nothing restored"
        )
    pg_restore = find_pg_tool("pg_restore", server // 10_000)
    args = [str(pg_restore), "--no-password", "--single-transaction", "--exit-on-error",
            "--no-owner", "--no-privileges", f"--dbname={plain}"]  # fmt: skip
    if present:
        args += ["--clean", "--if-exists"]
    _run_tool([*args, str(folder / DUMP_FILE)], env, f"pg_restore into {where}")
    for source, dest in plan:
        data = source.read_bytes()
        write_atomically(dest, lambda fh: fh.write(data))  # noqa: B023 (called at once)
    with _connect(dsn, where) as conn:
        tables = len(_user_tables(conn))
    return RestoreResult(tables=tables, checkpoint_files=len(plan), unchanged=unchanged)
