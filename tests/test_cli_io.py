"""The CLI when the disk is full or read-only, when another run holds --out, and when a training
run is killed: one line and exit 2 before any work, exit 3 with what was kept after it, never a
traceback, a partial folder or a lost result. Faults are injected at the steps the writers report
(:func:`colmena.atomic_write.observe_steps`); the kill lands at a reported step too."""

from __future__ import annotations

import errno
import fnmatch
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from colmena.atomic_write import FolderLock, observe_steps
from colmena.cli import EXIT_OUTPUT_ERROR, EXIT_USER_ERROR, main
from colmena.persistence import checkpoint as checkpoints
from colmena.persistence.run_folder import WRITER_FILE, is_run_folder, read_run_id

TESTS = Path(__file__).parent
sys.path.insert(0, str(TESTS))
from helpers import make_state, synthetic_candles  # noqa: E402

BTC_2023 = "binanceus_btcusdt_1m_2023-03-01_2023-03-21.csv"


def invoke(args: list[str]) -> Result:
    return CliRunner().invoke(main, args)


def assert_one_line(result: Result, code: int, *words: str) -> str:
    """Exit ``code``, click's clean exit, one ``Error:`` line holding ``words``; the line."""
    assert result.exit_code == code, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1, result.output
    for word in words:
        assert word in errors[0], errors[0]
    return errors[0]


def fail_at(step: str, err: int, glob: str = "*") -> Callable[[str, Path], None]:
    """An observer that raises OSError(err) the first time ``step`` is reported for a path
    whose name matches ``glob``: a full (ENOSPC) or read-only (EROFS) disk at that point."""
    fired = False

    def observer(name: str, path: Path) -> None:
        nonlocal fired
        if not fired and name == step and fnmatch.fnmatch(path.name, glob):
            fired = True
            raise OSError(err, os.strerror(err), str(path))

    return observer


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Candles and a finished checkpoint, for backtests that need no training."""
    folder = tmp_path_factory.mktemp("inputs")
    checkpoint = checkpoints.save(folder / "ck", make_state(finished=True))
    return synthetic_candles(folder), checkpoint


def backtest_args(inputs: tuple[Path, Path], out: Path, *extra: str) -> list[str]:
    data, checkpoint = inputs
    return ["backtest", str(data), "--checkpoint", str(checkpoint), "--out", str(out), *extra]


def entries(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


# ---------------------------------------------------------------- backtest


def test_backtest_on_a_read_only_disk_is_refused_before_any_work(
    inputs: tuple[Path, Path], tmp_path: Path
) -> None:
    with observe_steps(fail_at("probe", errno.EROFS)):
        result = invoke(backtest_args(inputs, tmp_path / "new" / "run"))
    assert_one_line(result, EXIT_USER_ERROR, str(tmp_path / "new" / "run"), "read-only file system")
    assert entries(tmp_path) == []


def test_backtest_without_room_for_its_estimate_is_refused_before_any_work(
    inputs: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = shutil.disk_usage

    def tiny(path: object) -> object:  # a disk with 1 MiB free: less than any run needs
        return real(path)._replace(free=2**20)  # type: ignore[arg-type]

    monkeypatch.setattr(shutil, "disk_usage", tiny)
    result = invoke(backtest_args(inputs, tmp_path / "run"))
    assert_one_line(result, EXIT_USER_ERROR, "only 1.0 MiB free", "needed")
    assert entries(tmp_path) == []


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EROFS])
def test_backtest_that_cannot_write_its_result_says_so_and_keeps_the_earlier_run(
    inputs: tuple[Path, Path], tmp_path: Path, err: int
) -> None:
    """The disk fills up (or turns read-only) after the backtest: exit 3, one line, nothing of
    the new run written, the earlier run in --out untouched, no lock or temporary folder."""
    out = tmp_path / "run"
    assert invoke(backtest_args(inputs, out)).exit_code == 0
    before = snapshot(out)
    with observe_steps(fail_at("file_written", err, "equity.parquet")):
        result = invoke(backtest_args(inputs, out, "--force"))
    line = assert_one_line(result, EXIT_OUTPUT_ERROR, "the backtest finished", str(out),
                           os.strerror(err), "nothing was written",
                           "the earlier run is intact")  # fmt: skip
    assert "Traceback" not in line
    assert snapshot(out) == before
    assert entries(tmp_path) == ["run"]


def test_backtest_whose_folder_cannot_be_made_durable_says_the_run_is_there(
    inputs: tuple[Path, Path], tmp_path: Path
) -> None:
    """An I/O error after the second rename (the parent folder's fsync) is not "nothing was
    written": the new run is in place, and the line says so."""
    out = tmp_path / "run"
    with observe_steps(fail_at("old_removed", errno.EIO, "run")):
        assert invoke(backtest_args(inputs, out)).exit_code == 0  # no earlier run: not reached
        result = invoke(backtest_args(inputs, out, "--force"))
    assert_one_line(result, EXIT_OUTPUT_ERROR, f"the run was written to {out}",
                    "Input/output error", "may not survive a power cut")  # fmt: skip
    assert is_run_folder(out)


def test_backtest_on_a_folder_another_run_holds_is_refused_naming_it(
    inputs: tuple[Path, Path], tmp_path: Path
) -> None:
    out = tmp_path / "run"
    with FolderLock(out):
        result = invoke(backtest_args(inputs, out))
        assert_one_line(result, EXIT_USER_ERROR, str(out), "another colmena process",
                        f"pid {os.getpid()}")  # fmt: skip
    assert entries(tmp_path) == []


def test_backtest_whose_database_is_down_keeps_the_run_folder_and_says_where(
    inputs: tuple[Path, Path], tmp_path: Path
) -> None:
    pytest.importorskip("psycopg")
    out = tmp_path / "run"
    dsn = f"postgresql://nobody@/none?host={tmp_path}&connect_timeout=2"
    result = invoke(backtest_args(inputs, out, "--db", dsn))
    assert_one_line(result, EXIT_OUTPUT_ERROR, f"the run is in {out}", "PostgreSQL failed")
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert is_run_folder(out)
    assert entries(tmp_path) == ["run"]


def test_backtest_removes_what_a_killed_run_left_and_says_so(
    inputs: tuple[Path, Path], tmp_path: Path
) -> None:
    out = tmp_path / "run"
    stale = tmp_path / ".run.k2x9.tmp"  # a dead writer's half-written run
    stale.mkdir()
    (stale / "bars.parquet").write_bytes(b"PAR1 half")
    (stale / WRITER_FILE).write_text(json.dumps({"target": "run", "pid": 999_999, "host": "h"}))
    result = invoke(backtest_args(inputs, out))
    assert result.exit_code == 0, result.output
    assert "repaired" in result.output
    assert entries(tmp_path) == ["run"]
    assert is_run_folder(out)
    assert read_run_id(out).version == 4


# ---------------------------------------------------------------- features and report


def test_features_that_cannot_write_its_file_exit_3_and_leave_nothing(tmp_path: Path) -> None:
    data = tmp_path / "candles.csv"
    data.write_text("open_time,open,high,low,close,volume\n" + "".join(
        f"{1_677_628_800 + 60 * k},100,103,99,{100 + k % 3},1\n" for k in range(300)))  # fmt: skip
    out = tmp_path / "features.parquet"
    with observe_steps(fail_at("temporary_written", errno.ENOSPC, "features.parquet")):
        result = invoke(["features", str(data), "--d", "0.4", "--window", "10", "--out", str(out)])
    assert_one_line(result, EXIT_OUTPUT_ERROR, str(out), "No space left", "nothing was written")
    assert entries(tmp_path) == ["candles.csv"]


# ---------------------------------------------------------------- train


TRAIN = ["--agents", "4", "--generations", "2", "--vae-epochs", "1", "--eval-days", "1",
         "--decision-interval", "5m", "--seed", "3"]  # fmt: skip


@pytest.fixture(scope="module")
def train_data(shared_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    import pyarrow.parquet as pq

    from colmena.data.ohlcv import load_ohlcv

    path = tmp_path_factory.mktemp("train") / "btc.parquet"
    pq.write_table(load_ohlcv(shared_data_dir / BTC_2023).slice(0, 4_000).to_arrow(), path)
    return path


@pytest.fixture(scope="module")
def uninterrupted(train_data: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The checkpoints of a training run that was never stopped."""
    pytest.importorskip("torch")
    out = tmp_path_factory.mktemp("uninterrupted") / "ck"
    result = invoke(["train", str(train_data), "--out", str(out), *TRAIN])
    assert result.exit_code == 0, result.output
    return checkpoints.list_checkpoints(out)


def assert_same_checkpoints(actual: list[Path], expected: list[Path]) -> None:
    assert [p.name for p in actual] == [p.name for p in expected]
    for a, b in zip(actual, expected, strict=True):
        assert a.read_bytes() == b.read_bytes(), f"{a} differs from {b}"


@pytest.mark.parametrize("failing", [0, 1, 2], ids=["generation 1", "generation 2", "final"])
def test_train_whose_checkpoint_cannot_be_written_says_where_the_model_is(
    train_data: Path, uninterrupted: list[Path], tmp_path: Path, failing: int
) -> None:
    """The disk fills up as a checkpoint is saved (after generation 1, after generation 2, or
    the finished run): exit 3, one line naming the newest checkpoint kept and the command that
    continues from it; that command gives the same checkpoints, byte for byte, as a run never
    stopped."""
    assert len(uninterrupted) == 3  # generations 1 and 2, then the finished run
    out = tmp_path / "ck"
    name = uninterrupted[failing].name
    with observe_steps(fail_at("temporary_written", errno.ENOSPC, name)):
        result = invoke(["train", str(train_data), "--out", str(out), *TRAIN])
    kept = checkpoints.list_checkpoints(out)
    assert [p.name for p in kept] == [p.name for p in uninterrupted[:failing]]
    what = "training finished" if failing == 2 else f"generation {failing + 1} was trained"
    where = (
        [f"the newest checkpoint saved is {kept[-1]}", f"--resume {out}"]
        if kept
        else ["no checkpoint of this run was saved"]
    )
    assert_one_line(result, EXIT_OUTPUT_ERROR, what, "No space left", *where)
    assert not any(name.endswith(".tmp") for name in entries(out))
    again = ["--resume", str(out)] if kept else TRAIN
    resumed = invoke(["train", str(train_data), "--out", str(out), *again])
    assert resumed.exit_code == 0, resumed.output
    assert_same_checkpoints(checkpoints.list_checkpoints(out), uninterrupted)
    assert entries(tmp_path) == ["ck"]  # the lock file went with the run


def test_train_on_a_read_only_disk_or_a_held_folder_is_refused_before_any_work(
    train_data: Path, tmp_path: Path
) -> None:
    pytest.importorskip("torch")
    out = tmp_path / "ck"
    with observe_steps(fail_at("probe", errno.EROFS)):
        result = invoke(["train", str(train_data), "--out", str(out), *TRAIN])
    assert_one_line(result, EXIT_USER_ERROR, str(out), "read-only file system")
    with FolderLock(out):
        result = invoke(["train", str(train_data), "--out", str(out), *TRAIN])
        assert_one_line(result, EXIT_USER_ERROR, str(out), f"pid {os.getpid()}")
    assert entries(tmp_path) == []
    bad = tmp_path / "bad.csv"
    bad.write_text("not,a,candle,file\n")
    result = invoke(["train", str(bad), "--out", str(tmp_path / "new" / "deep" / "ck"), *TRAIN])
    assert_one_line(result, EXIT_USER_ERROR, str(bad))
    assert entries(tmp_path) == ["bad.csv"]  # no parent folder or lock file left


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL (POSIX)")
def test_train_killed_after_a_checkpoint_resumes_to_the_same_result(
    train_data: Path, uninterrupted: list[Path], tmp_path: Path
) -> None:
    """``colmena train`` in a child process stops right after its first checkpoint is durable
    (the reported step ``directory_synced`` of that file) and is killed there (SIGKILL);
    ``--resume`` in a new process continues to checkpoints identical, byte for byte, to those
    of a run never stopped."""
    out = tmp_path / "ck"
    first = uninterrupted[0].name
    child = subprocess.Popen(
        [sys.executable, str(TESTS / "step_harness.py"), "directory_synced", first, "--", "cli",
         "train", str(train_data), "--out", str(out), *TRAIN],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        assert line.startswith("at directory_synced "), line + child.stdout.read()
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.communicate(timeout=60)
    assert child.returncode == -signal.SIGKILL
    assert [p.name for p in checkpoints.list_checkpoints(out)] == [first]
    resumed = subprocess.run(
        [sys.executable, "-c", "from colmena.cli import main; main()", "train", str(train_data),
         "--out", str(out), "--resume", str(out)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert_same_checkpoints(checkpoints.list_checkpoints(out), uninterrupted)


# ---------------------------------------------------------------- report


@pytest.fixture
def run_folder(inputs: tuple[Path, Path], tmp_path: Path) -> Path:
    out = tmp_path / "run"
    result = invoke(backtest_args(inputs, out))
    assert result.exit_code == 0, result.output
    return out


def test_report_is_refused_while_a_backtest_holds_the_folder(run_folder: Path) -> None:
    before = snapshot(run_folder)
    with FolderLock(run_folder):
        result = invoke(["report", str(run_folder)])
        assert_one_line(result, EXIT_USER_ERROR, str(run_folder), "another colmena process")
    assert snapshot(run_folder) == before


def test_report_restores_a_run_left_half_replaced_by_a_killed_backtest(run_folder: Path) -> None:
    """Killed between the two renames, a backtest leaves the earlier run hidden beside a
    missing --out; ``colmena report`` renames it back, then renders it."""
    run_id = read_run_id(run_folder)
    hidden = run_folder.with_name(".run.old-999999")
    run_folder.rename(hidden)
    (run_folder.parent / ".run.lock").write_text("{}")  # the dead writer's (unheld) lock file
    result = invoke(["report", str(run_folder)])
    assert result.exit_code == 0, result.output
    assert read_run_id(run_folder) == run_id
    assert entries(run_folder.parent) == ["run"]
    failed = invoke(["report", str(run_folder.parent / "missing")])
    assert_one_line(failed, EXIT_USER_ERROR, "not a colmena run folder")
