"""Every user error of every command: one clear line, exit code 2, no traceback, nothing lost."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from colmena.cli import main
from colmena.persistence.run_folder import (
    RUN_MARKER,
    RunFolderError,
    check_run_folder,
    is_run_folder,
)

CSV = "open_time,open,high,low,close,volume\n2023-03-01 00:00:00+00:00,1,1,1,1,1\n"


def run(args: list[str], cwd: Path | None = None):  # type: ignore[no-untyped-def]
    runner = CliRunner()
    if cwd is None:
        return runner.invoke(main, args)
    old = Path.cwd()
    os.chdir(cwd)
    try:
        return runner.invoke(main, args)
    finally:
        os.chdir(old)


def assert_user_error(result, *words: str) -> None:  # type: ignore[no-untyped-def]
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)  # click's clean exit, not a crash
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1, result.output
    for word in words:
        assert word in result.output, result.output


@pytest.fixture
def data(tmp_path: Path) -> Path:
    path = tmp_path / "candles.csv"
    path.write_text(CSV)
    return path


def test_backtest_refuses_a_folder_with_a_users_file_before_any_work(
    tmp_path: Path, data: Path
) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    notes = out / "notes.txt"
    notes.write_text("my notes")
    result = run(["backtest", str(data), "--out", str(out)])
    assert_user_error(result, "not a colmena run folder", "never deletes")
    assert notes.read_text() == "my notes"
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    # --force does not change that: it only replaces an earlier colmena run
    result = run(["backtest", str(data), "--out", str(out), "--force"])
    assert_user_error(result, "not a colmena run folder")
    assert notes.read_text() == "my notes"


def test_backtest_refuses_the_current_folder(tmp_path: Path, data: Path) -> None:
    (tmp_path / "keep.txt").write_text("x")
    for out in (".", str(tmp_path), str(tmp_path.parent)):
        result = run(["backtest", str(data), "--out", out], cwd=tmp_path)
        assert_user_error(result, "current folder")
    assert (tmp_path / "keep.txt").read_text() == "x"


def test_an_earlier_run_needs_force(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "report.json").write_text("{}")
    (out / RUN_MARKER).write_text("{}")
    assert is_run_folder(out)
    with pytest.raises(RunFolderError, match="--force"):
        check_run_folder(out)
    assert check_run_folder(out, replace=True) == out


def test_an_earlier_run_with_a_users_file_is_never_replaced(tmp_path: Path) -> None:
    """A file the user put beside an earlier run stops the replacement, --force or not, and
    nothing is moved or deleted."""
    from colmena.persistence.run_folder import write_run

    out = tmp_path / "run"
    out.mkdir()
    (out / RUN_MARKER).write_text("{}")
    (out / "report.json").write_text("{}")
    (out / "user.txt").write_text("mine")
    for replace in (False, True):
        with pytest.raises(RunFolderError, match=r"did not write \(user.txt\)"):
            check_run_folder(out, replace=replace)
        with pytest.raises(RunFolderError, match=r"user\.txt"):
            write_run(object(), out, replace=replace)  # type: ignore[arg-type]
    assert (out / "user.txt").read_text() == "mine"
    assert sorted(p.name for p in out.iterdir()) == sorted([RUN_MARKER, "report.json", "user.txt"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_out_that_is_a_file_is_refused(tmp_path: Path, data: Path) -> None:
    out = tmp_path / "file"
    out.write_text("data")
    assert_user_error(run(["backtest", str(data), "--out", str(out)]), "is a file")
    assert out.read_text() == "data"


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere: no permission error")
def test_unwritable_out_is_refused_before_the_run(tmp_path: Path, data: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        result = run(["backtest", str(data), "--out", str(locked / "run")])
        assert_user_error(result, "permission denied")
    finally:
        locked.chmod(0o700)


@pytest.mark.parametrize(
    "args",
    [
        ["backtest", "{missing}"],
        ["backtest", "{data}", "--checkpoint", "{missing}"],
        ["backtest", "{bad}"],
        ["train", "{missing}", "--out", "{tmp}/ck"],
        ["train", "{bad}", "--out", "{tmp}/ck"],
        ["features", "{missing}", "--d", "0.4"],
        ["features", "{bad}", "--d", "0.4"],
        ["features", "{data}", "--d", "0.4", "--out", "{data}"],
        ["download"],
        ["download", "--exchange", "binance", "--until", "yesterday"],
        ["backtest", "{data}", "--config", "{missing}"],
        ["backtest", "{data}", "--decision-interval", "7x"],
        ["train", "{data}", "--out", "{data}"],
        ["train", "{data}", "--out", "{tmp}/ck", "--resume", "{missing}"],
        ["train", "{data}", "--out", "{tmp}/ck", "--resume", "{bad}"],
    ],
    ids=lambda a: " ".join(a)[:60],
)
def test_every_command_reports_bad_paths_in_one_line(
    tmp_path: Path, data: Path, args: list[str]
) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"\xff\xfe not a candle file")
    subs = {"{missing}": str(tmp_path / "nope.parquet"), "{data}": str(data), "{bad}": str(bad),
            "{tmp}": str(tmp_path)}  # fmt: skip
    argv = []
    for a in args:
        for k, v in subs.items():
            a = a.replace(k, v)
        argv.append(a)
    if argv[0] == "backtest" and "--out" not in argv:
        argv += ["--out", str(tmp_path / "run")]
    before = sorted(p.name for p in tmp_path.iterdir())
    result = run(argv)
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    assert [line for line in result.output.splitlines() if line.startswith("Error")]
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written
    assert data.read_text() == CSV
