"""Run folders and the shared write helpers under faults: a full or read-only disk at every
reported step, a writer killed at every step (SIGKILL in a child process), stale temporary
folders of dead writers, two writers on one folder. Faults land at the points the writers report
(:func:`colmena.atomic_write.observe_steps`), never after a sleep."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from colmena.atomic_write import (
    WRITE_STEPS,
    FolderLock,
    FolderLockedError,
    UnwritableFolderError,
    check_free_space,
    check_writable,
    observe_steps,
    write_atomically,
)
from colmena.backtest.engine import BacktestRun, backtest
from colmena.data.ohlcv import load_ohlcv
from colmena.persistence.run_folder import (
    RUN_MARKER,
    RUN_STEPS,
    WRITER_FILE,
    RunFolderError,
    RunFolderLockedError,
    estimate_run_bytes,
    load_run,
    read_run_id,
    recover_run_folder,
    reserve_run_folder,
    write_run,
)

TESTS = Path(__file__).parent
sys.path.insert(0, str(TESTS))
from helpers import make_state, synthetic_candles  # noqa: E402

HARNESS = [sys.executable, str(TESTS / "step_harness.py")]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> BacktestRun:
    candles = load_ohlcv(synthetic_candles(tmp_path_factory.mktemp("candles")))
    return backtest(candles, state=make_state(finished=True))


@pytest.fixture(scope="module")
def source(run: BacktestRun, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder to copy from (written once)."""
    return write_run(run, tmp_path_factory.mktemp("src") / "run")


def entries(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def fail_at(step: str, err: int, glob: str = "*") -> object:
    """An observer raising OSError(err) the first time ``step`` is reported."""
    import fnmatch

    fired = False

    def observer(name: str, path: Path) -> None:
        nonlocal fired
        if not fired and name == step and fnmatch.fnmatch(path.name, glob):
            fired = True
            raise OSError(err, os.strerror(err), str(path))

    return observer


# ---------------------------------------------------------------- run ids


def test_every_write_draws_a_new_run_id_and_a_folder_keeps_its_id(
    run: BacktestRun, tmp_path: Path
) -> None:
    first = read_run_id(write_run(run, tmp_path / "a"))
    second = read_run_id(write_run(run, tmp_path / "b"))  # the same numbers, another run
    third = read_run_id(write_run(run, tmp_path / "a", replace=True))
    assert len({first, second, third}) == 3
    assert all(u.version == 4 for u in (first, second, third))
    assert read_run_id(tmp_path / "a") == third  # stable: recording it again is idempotent
    assert not (tmp_path / "a" / WRITER_FILE).exists()
    assert entries(tmp_path) == ["a", "b"]  # no lock file, no temporary folder left


def test_a_folder_of_an_older_colmena_gets_a_stable_name_based_id(
    source: Path, tmp_path: Path
) -> None:
    old = tmp_path / "old"
    shutil.copytree(source, old)
    (old / RUN_MARKER).write_text('{"format": "colmena-run", "version": 1}\n')
    assert read_run_id(old) == read_run_id(old)
    assert read_run_id(old).version == 5
    (old / "report.json").write_text("{}")
    assert read_run_id(old) != read_run_id(source)
    with pytest.raises(RunFolderError, match="not a readable colmena run folder"):
        read_run_id(tmp_path)


# ---------------------------------------------------------------- a full or read-only disk


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EROFS])
@pytest.mark.parametrize("step", WRITE_STEPS[:3])
def test_write_atomically_failing_before_the_rename_leaves_the_target_untouched(
    tmp_path: Path, step: str, err: int
) -> None:
    target = tmp_path / "file.bin"
    target.write_bytes(b"old")
    with observe_steps(fail_at(step, err)), pytest.raises(OSError, match=os.strerror(err)) as info:  # type: ignore[arg-type]
        write_atomically(target, lambda fh: fh.write(b"new"))
    assert info.value.errno == err
    assert target.read_bytes() == b"old"
    assert entries(tmp_path) == ["file.bin"]


def test_write_atomically_gives_a_normal_file_mode(tmp_path: Path) -> None:
    """Permissions follow the umask like any new file (mkstemp's private 0600 once leaked)."""
    mask = os.umask(0o027)
    try:
        path = write_atomically(tmp_path / "f.bin", lambda fh: fh.write(b"x"))
    finally:
        os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o640


BEFORE_RENAME = [s for s in RUN_STEPS if RUN_STEPS.index(s) < RUN_STEPS.index("renamed")]


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EROFS])
@pytest.mark.parametrize("step", BEFORE_RENAME)
def test_a_disk_fault_before_the_rename_keeps_the_earlier_run_and_leaves_nothing(
    run: BacktestRun, source: Path, tmp_path: Path, step: str, err: int
) -> None:
    out = tmp_path / "run"
    shutil.copytree(source, out)
    before = snapshot(out)
    with observe_steps(fail_at(step, err)), pytest.raises(OSError, match=os.strerror(err)) as info:  # type: ignore[arg-type]
        write_run(run, out, replace=True)
    assert info.value.errno == err
    assert snapshot(out) == before  # the earlier run, file for file
    assert entries(tmp_path) == ["run"]  # no temporary folder, no moved-aside run, no lock


@pytest.mark.parametrize("step", [s for s in BEFORE_RENAME if s != "old_moved_aside"])
def test_a_disk_fault_on_a_new_folder_leaves_nothing_not_even_its_parents(
    run: BacktestRun, tmp_path: Path, step: str
) -> None:
    with (
        observe_steps(fail_at(step, errno.ENOSPC)),  # type: ignore[arg-type]
        pytest.raises(OSError, match="No space left"),
    ):
        write_run(run, tmp_path / "a" / "b" / "run")
    assert entries(tmp_path) == []


def test_a_read_only_folder_is_refused_before_any_work(tmp_path: Path) -> None:
    """Root ignores permission bits, so the check writes a probe; a read-only mount fails that
    write with EROFS (injected at the probe). Nothing is left behind."""
    with (
        observe_steps(fail_at("probe", errno.EROFS)),  # type: ignore[arg-type]
        pytest.raises(UnwritableFolderError, match=r"cannot write in .* \(read-only file system\)"),
    ):
        check_writable(tmp_path / "new" / "run")
    with (
        observe_steps(fail_at("probe", errno.EROFS)),  # type: ignore[arg-type]
        pytest.raises(RunFolderError, match="read-only file system"),
        reserve_run_folder(tmp_path / "run"),
    ):
        pass
    assert entries(tmp_path) == []
    assert check_writable(tmp_path / "new" / "run") == tmp_path


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores permission bits")
def test_a_folder_without_write_permission_is_refused(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        with pytest.raises(UnwritableFolderError, match="permission denied"):
            check_writable(locked / "run")
    finally:
        locked.chmod(0o700)


def test_too_little_free_space_is_refused_naming_both_sizes(tmp_path: Path) -> None:
    free = shutil.disk_usage(tmp_path).free
    check_free_space(tmp_path, free // 2)
    with pytest.raises(UnwritableFolderError, match=r"only .* free in .*, about .* needed") as info:
        check_free_space(tmp_path / "x" / "y", free + 2**30)  # a real shortage
    assert info.value.errno == errno.ENOSPC
    with pytest.raises(UnwritableFolderError, match="needed"):
        check_writable(tmp_path, required_bytes=free + 2**30)
    with reserve_run_folder(tmp_path / "run") as held, pytest.raises(RunFolderError, match="free"):
        held.check_free_space(free + 2**30)
    assert estimate_run_bytes(1_000_000) == 16 * 2**20 + 256 * 1_000_000
    assert entries(tmp_path) == []


# ---------------------------------------------------------------- one writer per folder


def test_a_second_writer_is_refused_naming_the_holder(run: BacktestRun, tmp_path: Path) -> None:
    out = tmp_path / "run"
    with reserve_run_folder(out) as held:
        with pytest.raises(RunFolderLockedError, match=rf"{out}: .*pid {os.getpid()} on "):
            write_run(run, out)
        with (
            pytest.raises(RunFolderLockedError, match="another colmena process"),
            reserve_run_folder(out),
        ):
            pass
        assert not out.exists()
        write_run(run, out, reservation=held)
    assert read_run_id(out)
    assert entries(tmp_path) == ["run"]


def test_a_lock_is_free_again_once_its_holder_is_killed(tmp_path: Path) -> None:
    folder = tmp_path / "out"
    code = (
        "import sys; from colmena.atomic_write import FolderLock; "
        f"lock = FolderLock({str(folder)!r}).acquire(); print('held', flush=True); "
        "sys.stdin.readline()"
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "held"
        with pytest.raises(FolderLockedError, match=f"pid {child.pid} on "):
            FolderLock(folder).acquire()
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.communicate(timeout=60)
    with FolderLock(folder) as lock:  # the kernel released it
        assert lock.held
    assert entries(tmp_path) == []


# ---------------------------------------------------------------- a writer killed at every step


@pytest.fixture
def killed_at() -> Iterator[object]:
    children: list[subprocess.Popen[str]] = []

    def start(step: str, glob: str, *args: str) -> subprocess.Popen[str]:
        child = subprocess.Popen(
            [*HARNESS, step, glob, "--", *args], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        children.append(child)
        assert child.stdout is not None
        line = child.stdout.readline()
        assert line.startswith(f"at {step} "), line + child.stdout.read()
        return child

    yield start
    for child in children:
        child.kill()
        child.communicate(timeout=60)


KILL_STEPS = [s for s in RUN_STEPS if s != "directory_synced"]


@pytest.mark.parametrize("step", KILL_STEPS)
def test_a_writer_killed_at_any_step_leaves_the_old_run_or_the_new_one(
    source: Path, tmp_path: Path, step: str, killed_at
) -> None:  # type: ignore[no-untyped-def]
    """SIGKILL at each step of replacing a run; ``load_run`` then finds the earlier run (killed
    before the second rename; between the renames the earlier run is renamed back) or the new
    one (after it), never a missing folder; the next write removes what the dead writer left."""
    out = tmp_path / "run"
    shutil.copytree(source, out)
    old_id, before = read_run_id(out), snapshot(out)
    child = killed_at(step, "run" if step != "file_written" else "*.parquet",
                      "rewrite", str(source), str(out))  # fmt: skip
    child.send_signal(signal.SIGKILL)
    assert child.wait(timeout=60) == -signal.SIGKILL
    if step == "old_moved_aside":
        assert not out.exists()  # the moment the report was about
    after_rename = RUN_STEPS.index(step) >= RUN_STEPS.index("renamed")
    loaded = load_run(out)  # repairs first
    assert loaded.report == load_run(source).report
    if after_rename:
        assert read_run_id(out) != old_id
    else:
        assert read_run_id(out) == old_id
        assert snapshot(out) == before
    # what may remain until the next writer: the (unheld) lock file, a temporary folder that
    # names the dead writer's pid, the earlier run moved aside by it (after the second rename)
    leftovers = [n for n in entries(tmp_path) if n not in ("run", ".run.lock")]
    for name in leftovers:
        if name == f".run.old-{child.pid}":
            assert after_rename
            continue
        assert name.startswith(".run."), leftovers
        assert name.endswith(".tmp"), leftovers
        owner = json.loads((tmp_path / name / WRITER_FILE).read_text())
        assert owner["pid"] == child.pid
    with reserve_run_folder(out, replace=True) as held:
        assert len(held.repairs) == len(leftovers)
    assert entries(tmp_path) == ["run"]


def test_the_next_run_finishes_the_repair_after_a_kill_between_the_renames(
    run: BacktestRun, source: Path, tmp_path: Path, killed_at
) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "run"
    shutil.copytree(source, out)
    old_id = read_run_id(out)
    child = killed_at("old_moved_aside", "run", "rewrite", str(source), str(out))
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=60)
    assert not out.exists()
    hidden = sorted(n for n in entries(tmp_path) if n.startswith(".run."))
    assert any(".old-" in n for n in hidden)
    assert any(n.endswith(".tmp") for n in hidden)
    with pytest.raises(RunFolderError, match="pass --force"):  # the earlier run is back first
        write_run(run, out)
    assert read_run_id(out) == old_id
    assert entries(tmp_path) == ["run"]


def test_only_colmenas_own_leftovers_are_removed_never_a_users_file(
    source: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    # a user's folder that merely looks like a temporary one: no owner file
    (tmp_path / ".run.mine.tmp").mkdir()
    (tmp_path / ".run.mine.tmp" / "notes.txt").write_text("mine")
    # a dead writer's temporary folder, where the user later put a file
    dead = tmp_path / ".run.abc123.tmp"
    shutil.copytree(source, dead)
    (dead / WRITER_FILE).write_text(json.dumps({"target": "run", "pid": 1, "host": "x"}))
    (dead / "keep.txt").write_text("keep")
    # another target's temporary folder, whose name also starts with ".run."
    other = tmp_path / ".run.x.abc.tmp"
    other.mkdir()
    (other / WRITER_FILE).write_text(json.dumps({"target": "run.x", "pid": 1, "host": "x"}))
    # a moved-aside folder that is not a run folder
    (tmp_path / ".run.old-7").mkdir()
    (tmp_path / ".run.old-7" / "data.csv").write_text("1,2")
    with FolderLock(out):
        repairs = recover_run_folder(out)
    assert repairs == []  # nothing could be removed whole
    assert (tmp_path / ".run.mine.tmp" / "notes.txt").read_text() == "mine"
    assert entries(dead) == ["keep.txt"]  # the run's files went, the user's file stayed
    assert (other / WRITER_FILE).exists()
    assert (tmp_path / ".run.old-7" / "data.csv").read_text() == "1,2"
    assert not out.exists()


def test_a_concurrent_cli_run_is_refused_while_the_first_holds_the_folder(
    source: Path, tmp_path: Path, killed_at
) -> None:  # type: ignore[no-untyped-def]
    """The first writer stops at the reported step ``locked`` (it holds the folder); a second
    one on the same folder is refused naming it; released, the first finishes its run."""
    out = tmp_path / "run"
    first = killed_at("locked", "run", "rewrite", str(source), str(out))
    with pytest.raises(RunFolderLockedError, match=rf"{out}: another colmena process .*pid "
                       rf"{first.pid} on "):  # fmt: skip
        write_run(load_run(source), out)
    assert first.stdin is not None
    assert first.stdout is not None
    first.stdin.write("go\n")
    first.stdin.flush()
    output, _ = first.communicate(timeout=120)
    assert first.returncode == 0, output
    assert uuid.UUID(output.split("run id ")[1].strip()) == read_run_id(out)
    assert entries(tmp_path) == ["run"]
