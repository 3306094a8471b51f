"""`colmena backup` / `colmena restore` against a real PostgreSQL (pgserver, or the server of
$COLMENA_TEST_POSTGRES_DSN) with the real pg_dump / pg_restore: records of a live session and
a checkpoint folder backed up, restored into a fresh database and folder, and compared with the
originals row for row and byte for byte; a tampered backup, a non-empty target, an existing
folder and an unreachable database refused with one line, nothing written."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from colmena.live import wire
from colmena.services import backup as backup_module
from colmena.services.backup import (
    DUMP_FILE,
    MANIFEST_FILE,
    BackupToolError,
    find_pg_tool,
)
from colmena.services.recorder import Recorder
from conftest import fresh_database
from helpers import run_cli
from test_wire import _session

psycopg = pytest.importorskip("psycopg")


@pytest.fixture(scope="module")
def source(postgres_server: str) -> str:
    """A database holding the records of a 40-bar live session (every kind of message)."""
    dsn = fresh_database(postgres_server, "colmena_backup_source")
    messages = _session(40)

    async def record() -> None:
        recorder = await Recorder.connect(dsn)
        try:
            await recorder.record(
                (m, wire.idempotency_key(m), i + 1, wire.encode(m)) for i, m in enumerate(messages)
            )
        finally:
            await recorder.close()

    asyncio.run(record())
    return dsn


@pytest.fixture
def checkpoints(tmp_path: Path) -> Path:
    """A checkpoint folder: two files and one in a sub-folder, arbitrary bytes."""
    folder = tmp_path / "ckpt"
    (folder / "older").mkdir(parents=True)
    rng = np.random.default_rng(3)
    for name in ("gen-0001.ckpt", "gen-0002.ckpt", "older/gen-0000.ckpt"):
        (folder / name).write_bytes(rng.bytes(10_000 + len(name)))
    return folder


def _tables(dsn: str) -> dict[str, list[str]]:
    """Every table outside the system schemas, its rows as text, sorted; and every sequence's
    last value."""
    with psycopg.connect(dsn) as conn:
        names = [r[0] for r in conn.execute(
            "SELECT quote_ident(schemaname) || '.' || quote_ident(tablename) FROM pg_tables "
            "WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1"
        )]  # fmt: skip
        out = {n: sorted(r[0] for r in conn.execute(f"SELECT t::text FROM {n} AS t"))
               for n in names}  # fmt: skip
        for name, value in conn.execute(
            "SELECT schemaname || '.' || sequencename, last_value::text FROM pg_sequences"
        ):
            out[f"sequence {name}"] = [str(value)]
    return out


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}  # fmt: skip


def _one_line_error(result: Any, code: int) -> str:
    assert result.returncode == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return str(lines[0])


def test_backup_and_restore_round_trip_row_for_row_and_byte_for_byte(
    source: str, postgres_server: str, checkpoints: Path, tmp_path: Path
) -> None:
    out = tmp_path / "backups" / "monday"
    made = run_cli(["backup", "--db", source, "--checkpoints", str(checkpoints), "--out", str(out)])
    assert made.returncode == 0, made.stderr
    assert "backup: " in made.stderr
    # Nothing but the backup beside it (the temporary folder was renamed, the lock released).
    assert sorted(p.name for p in out.parent.iterdir()) == ["monday"]
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    assert manifest["format"] == "colmena-backup"
    assert manifest["colmena_version"]
    assert manifest["created_utc"].endswith("Z")
    assert "password" not in json.dumps(manifest["database"])
    listed = set(manifest["files"])
    assert listed == {DUMP_FILE} | {f"checkpoints/0/{n}" for n in _files(checkpoints)}
    assert set(_files(out)) == listed | {MANIFEST_FILE}
    for rel, entry in manifest["files"].items():
        data = (out / rel).read_bytes()
        assert entry == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}

    target = fresh_database(postgres_server, "colmena_backup_target")
    restored_ckpt = tmp_path / "restored" / "ckpt"
    done = run_cli(["restore", str(out), "--db", target, "--checkpoints", str(restored_ckpt)])
    assert done.returncode == 0, done.stderr
    original = _tables(source)
    assert sum(len(rows) for rows in original.values()) > 200  # the session's records are there
    assert len([t for t in original if t.startswith("public.live_")]) >= 10
    assert _tables(target) == original
    assert _files(restored_ckpt) == _files(checkpoints)

    # Again into the same folder: the identical files are left as they are; the database,
    # now holding the tables, is refused without --force and replaced with it.
    again = run_cli(["restore", str(out), "--db", target, "--checkpoints", str(restored_ckpt)])
    line = _one_line_error(again, 2)
    assert "is not empty" in line
    assert "--force" in line
    forced = run_cli(["restore", str(out), "--db", target, "--checkpoints", str(restored_ckpt),
                      "--force"])  # fmt: skip
    assert forced.returncode == 0, forced.stderr
    assert "0 checkpoint files written" in forced.stderr
    assert "(3 already there)" in forced.stderr
    assert _tables(target) == original


def test_a_tampered_backup_is_refused_naming_the_file(
    source: str, postgres_server: str, checkpoints: Path, tmp_path: Path
) -> None:
    out = tmp_path / "backup"
    assert run_cli(["backup", "--db", source, "--checkpoints", str(checkpoints),
                    "--out", str(out)]).returncode == 0  # fmt: skip
    target = fresh_database(postgres_server, "colmena_backup_tampered")
    restored = tmp_path / "restored"
    # An unreachable target: one line, exit 3, the password not in it, nothing restored.
    unreachable = "postgresql://colmena:s3cret-pw@127.0.0.1:1/records?connect_timeout=5"
    line = _one_line_error(
        run_cli(["restore", str(out), "--db", unreachable, "--checkpoints", str(restored)]), 3
    )
    assert "cannot connect to PostgreSQL (database records on 127.0.0.1)" in line
    assert "s3cret" not in line
    assert not restored.exists()
    victim = out / "checkpoints" / "0" / "older" / "gen-0000.ckpt"
    original = victim.read_bytes()
    data = bytearray(original)
    data[5000] ^= 1  # one bit
    victim.write_bytes(bytes(data))
    result = run_cli(["restore", str(out), "--db", target, "--checkpoints", str(restored)])
    line = _one_line_error(result, 2)
    assert str(victim) in line
    assert "SHA-256 differs" in line
    assert not restored.exists()
    assert _tables(target) == {}  # nothing restored
    # A damaged dump likewise, and a removed file is named as missing.
    victim.write_bytes(original)
    with (out / DUMP_FILE).open("ab") as fh:
        fh.write(b"\0")
    assert str(out / DUMP_FILE) in _one_line_error(
        run_cli(["restore", str(out), "--db", target]), 2
    )
    (out / DUMP_FILE).unlink()
    assert "missing from the backup" in _one_line_error(
        run_cli(["restore", str(out), "--db", target]), 2
    )


def test_existing_folders_are_refused_and_never_written_into(
    source: str, checkpoints: Path, tmp_path: Path
) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    line = _one_line_error(run_cli(["backup", "--db", source, "--out", str(mine)]), 2)
    assert "not a colmena backup" in line
    assert _files(mine) == {"notes.txt": b"keep me"}
    earlier = tmp_path / "earlier"
    assert run_cli(["backup", "--db", source, "--out", str(earlier)]).returncode == 0
    before = _files(earlier)
    line = _one_line_error(run_cli(["backup", "--db", source, "--out", str(earlier)]), 2)
    assert "holds an earlier backup" in line
    assert _files(earlier) == before
    # An empty folder is taken; a missing checkpoint folder is named before any work.
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run_cli(["backup", "--db", source, "--out", str(empty)]).returncode == 0
    assert (empty / MANIFEST_FILE).is_file()
    missing = ["backup", "--db", source, "--checkpoints", str(tmp_path / "nope"), "--out",
               str(tmp_path / "b")]  # fmt: skip
    line = _one_line_error(run_cli(missing), 2)
    assert "nope: no such file or folder" in line
    assert not (tmp_path / "b").exists()
    # A restored checkpoint never replaces a different file of the user's.
    made = tmp_path / "with-ckpt"
    assert run_cli(["backup", "--db", source, "--checkpoints", str(checkpoints),
                    "--out", str(made)]).returncode == 0  # fmt: skip
    (checkpoints / "gen-0002.ckpt").write_bytes(b"the user's own")
    line = _one_line_error(run_cli(["restore", str(made), "--db", source, "--checkpoints",
                                    str(checkpoints), "--force"]), 2)  # fmt: skip
    assert "gen-0002.ckpt exists with other contents" in line
    assert (checkpoints / "gen-0002.ckpt").read_bytes() == b"the user's own"


def test_an_unreachable_database_is_one_line_without_the_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dsn = "postgresql://colmena:s3cret-pw@127.0.0.1:1/records?connect_timeout=5"
    out = tmp_path / "backup"
    line = _one_line_error(run_cli(["backup", "--db", dsn, "--out", str(out)]), 3)
    assert "cannot connect to PostgreSQL (database records on 127.0.0.1)" in line
    assert "s3cret" not in line
    # The DSN may come from the environment instead (off colmena's own command line too).
    monkeypatch.setenv("COLMENA_DB_DSN", dsn)
    assert _one_line_error(run_cli(["backup", "--out", str(out)]), 3) == line
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_the_password_reaches_pg_dump_in_its_environment_only(
    source: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pg_dump and pg_restore get the DSN's password as PGPASSWORD, never in their arguments
    (which ps shows). The test server trusts local connections, so any password is accepted."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    with_password = make_conninfo(**(conninfo_to_dict(source) | {"password": "s3cret-pw"}))
    calls: list[tuple[list[str], dict[str, str]]] = []
    real_run = backup_module.subprocess.run

    def spy(args: list[str], **kwargs: Any) -> Any:
        calls.append((list(args), dict(kwargs.get("env") or {})))
        return real_run(args, **kwargs)

    monkeypatch.setattr(backup_module.subprocess, "run", spy)
    result = backup_module.backup(with_password, [], tmp_path / "b")
    assert result.tables >= 10
    dumps = [(args, env) for args, env in calls if Path(args[0]).name == "pg_dump"
             and "--version" not in args]  # fmt: skip
    assert len(dumps) == 1
    args, env = dumps[0]
    assert not any("s3cret" in a for a in args)
    assert env["PGPASSWORD"] == "s3cret-pw"
    assert os.environ.get("PGPASSWORD") != "s3cret-pw"  # set for the child only


def test_no_pg_dump_anywhere_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backup_module, "_candidates", lambda tool: iter(()))
    with pytest.raises(BackupToolError, match=r"pg_dump not found: neither the pgserver package"):
        find_pg_tool("pg_dump", 16)


def test_a_backup_that_fails_midway_leaves_nothing(
    source: str, checkpoints: Path, tmp_path: Path
) -> None:
    """The disk fills while the manifest is written (the last file, after the dump and the
    checkpoint copies): the error propagates, and neither the backup folder nor its temporary
    folder nor the lock file is left."""
    import errno

    from colmena.atomic_write import observe_steps

    out = tmp_path / "backups" / "b"

    def full_disk(step: str, path: Path) -> None:
        if step == "temporary_opened" and path.name == MANIFEST_FILE:
            assert (path.parent / DUMP_FILE).is_file()  # the dump was written by then
            raise OSError(errno.ENOSPC, "No space left on device")

    with observe_steps(full_disk), pytest.raises(OSError, match="No space left"):
        backup_module.backup(source, [checkpoints], out)
    assert list((tmp_path / "backups").iterdir()) == []
