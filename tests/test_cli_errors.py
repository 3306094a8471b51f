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


# ---------------------------------------------------------------- hostile input (issue 10)

T0_S = 1_677_628_800  # 2023-03-01T00:00:00Z in seconds
HEADER = "open_time,open,high,low,close,volume"
INT64_MIN = -(2**63)


def _rows(stamps: list[int | str]) -> str:
    return "".join(f"{t},100,101,99,100,1\n" for t in stamps)


def _parquet(path: Path, ts: object, n: int = 1) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    ones = [1.0] * n
    pq.write_table(pa.table({"ts": ts, "open": ones, "high": ones, "low": ones, "close": ones,
                             "volume": ones}), path)  # fmt: skip


def _write_hostile(path: Path) -> None:
    import pyarrow as pa

    name = path.name
    if name == "nat.parquet":
        _parquet(path, pa.array([INT64_MIN], pa.timestamp("ns")))
    elif name == "year_1677.parquet":
        _parquet(path, pa.array([INT64_MIN + 60 * 10**9 * k for k in (1, 2)]), n=2)
    elif name == "far_date.parquet":
        _parquet(path, pa.array([-1_000_000], pa.date32()))
    elif name == "duplicate_close.csv":
        path.write_text(HEADER.replace("close", "close,Close") + "\n1677628800,1,1,1,1,1,1\n")
    elif name == "exact_duplicate.csv":
        path.write_text(HEADER.replace("close", "close,close") + "\n1677628800,1,1,1,1,1,1\n")
    elif name == "latin1_header.csv":
        path.write_bytes((HEADER + ",caf\xe9\n").encode("latin-1") + _rows([T0_S]).encode())
    elif name == "mixed_units.csv":
        path.write_text(HEADER + "\n" + _rows([T0_S, T0_S + 60, (T0_S + 120) * 1000]))
    elif name == "nanosecond_bars.csv":
        path.write_text(HEADER + "\n" + _rows([T0_S * 10**9 + k for k in range(3)]))
    elif name == "huge_integer.csv":
        path.write_text(HEADER + "\n" + _rows([10**30]))
    elif name == "wide_header.csv":
        path.write_text(HEADER + "," + ",".join(["x"] * 1_000_000) + "\n" + _rows([T0_S]))
    else:
        raise AssertionError(name)


HOSTILE = [
    ("nat.parquet", "NaT"),
    ("year_1677.parquet", "outside the supported range"),
    ("far_date.parquet", "out of the int64 ns range"),
    ("duplicate_close.csv", "column 'Close' duplicates column 'close'"),
    ("exact_duplicate.csv", "column 'close' duplicates column 'close'"),
    ("latin1_header.csv", "not UTF-8"),
    ("mixed_units.csv", "looks like milliseconds"),
    ("nanosecond_bars.csv", "less than one second apart"),
    ("huge_integer.csv", "out of the int64 range"),
    ("wide_header.csv", "longer than 65536 bytes"),
]


@pytest.mark.parametrize(("name", "fragment"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_backtest_refuses_a_hostile_candle_file_in_one_line(
    tmp_path: Path, name: str, fragment: str
) -> None:
    path = tmp_path / name
    _write_hostile(path)
    before = sorted(p.name for p in tmp_path.iterdir())
    result = run(["backtest", str(path), "--out", str(tmp_path / "run")])
    assert_user_error(result, name, fragment)
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written


def test_a_file_from_1677_with_a_checkpoint_is_refused_not_a_crash(tmp_path: Path) -> None:
    """Times within an hour of the int64 minimum once killed ``colmena backtest FILE
    --checkpoint CK`` with signal 11 (the risk manager's window overflowed). Run as a separate
    process, so that a crash fails this test instead of pytest."""
    import sys

    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    sys.path.insert(0, str(Path(__file__).parent))
    from colmena.persistence import checkpoint as checkpoints
    from helpers import make_state, run_cli

    checkpoint = checkpoints.save(tmp_path / "ck", make_state(finished=True))
    n = 3_000
    close = 100 * np.exp(np.cumsum(np.random.default_rng(0).normal(0, 0.001, n)))
    ts = INT64_MIN + 60 * 10**9 * np.arange(1, n + 1, dtype=np.int64)
    data = tmp_path / "y1677.parquet"
    pq.write_table(pa.table({"ts": pa.array(ts, pa.timestamp("ns")), "open": close,
                             "high": close * 1.001, "low": close * 0.999, "close": close,
                             "volume": np.ones(n)}), data)  # fmt: skip
    before = sorted(p.name for p in tmp_path.iterdir())
    done = run_cli(["backtest", str(data), "--checkpoint", str(checkpoint), "--out",
                    str(tmp_path / "run")])  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 2, f"exit status {done.returncode} (negative: a signal)\n{output}"
    assert "Traceback" not in output
    assert output.strip().splitlines() == [
        f"Error: {data}: data row 0 (0-based), column 'ts': timestamp "
        f"{INT64_MIN + 60 * 10**9} ns (1677-09-21T00:13:43.145224192Z) is outside the "
        "supported range 1970-01-01T00:00:00Z .. 2200-01-01T00:00:00Z"
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == before


BAD_SETTINGS = [
    ({"risk": {"halt_window_seconds": 1e300}}, "$.risk.halt_window_seconds"),
    ({"risk": {"ladder_pause_seconds": [3600, 8e9, 86400]}}, "$.risk.ladder_pause_seconds[1]"),
    ({"risk": {"stale_after_seconds": 1e12}}, "$.risk.stale_after_seconds"),
    ({"risk": {"var_horizon_bars": 1e12}}, "$.risk.var_horizon_bars"),
    ({"execution": {"slippage_bps": 20000}}, "$.execution.slippage_bps"),
    ({"execution": {"impact_bps": 20000}}, "$.execution.impact_bps"),
]


@pytest.mark.parametrize(("settings", "field"), BAD_SETTINGS, ids=[b[1] for b in BAD_SETTINGS])
def test_backtest_refuses_an_out_of_range_setting_before_any_work(
    tmp_path: Path, data: Path, settings: dict[str, object], field: str
) -> None:
    """A window of 1e300 s once failed only after training; a pause of 8e9 s once wrapped
    around int64 and lasted one bar; 20,000 bps of slippage gave negative fill prices."""
    import json

    config = tmp_path / "bad.json"
    config.write_text(json.dumps(settings))
    before = sorted(p.name for p in tmp_path.iterdir())
    result = run(["backtest", str(data), "--config", str(config), "--out", str(tmp_path / "run")])
    assert_user_error(result, str(config), field)
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written


def test_features_refuses_a_tiny_threshold_instead_of_exhausting_memory(tmp_path: Path) -> None:
    """``--threshold 1e-300`` once built FFD weights without bound. A separate process with
    2 GiB of address space, so that a regression fails this test, not the machine."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from helpers import run_cli

    data = tmp_path / "candles.csv"
    data.write_text(HEADER + "\n" + _rows([T0_S + 60 * k for k in range(100)]))
    done = run_cli(["features", str(data), "--d", "0.4", "--threshold", "1e-300"], timeout=60)
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert "Traceback" not in output
    assert output.strip().splitlines() == [
        f"Error: {data}: fracdiff_weights: the threshold 1e-300 keeps more than 1000000 weights "
        "at d = 0.4 (|w_k| falls like k^-(1+d)); use a larger threshold or a fixed window"
    ]


@pytest.mark.parametrize("kind", ["device", "fifo"])
def test_a_config_that_is_not_a_regular_file_is_refused_not_read_forever(
    tmp_path: Path, data: Path, kind: str
) -> None:
    """``--config /dev/zero`` once read without end, and a FIFO without a writer blocked for
    ever. A child process with a time and memory limit (hang and bomb detection)."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from helpers import run_cli

    if kind == "fifo":
        config = tmp_path / "config.json"
        os.mkfifo(config)
    else:
        config = Path("/dev/zero")
        if not config.exists():
            pytest.skip("no /dev/zero")
    out = tmp_path / "run"
    done = run_cli(["backtest", str(data), "--config", str(config), "--out", str(out)],
                   timeout=60)  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert output.strip().splitlines() == [
        f"Error: {config}: not a regular file (a JSON file is expected)"
    ]
    assert not out.exists()


def test_a_huge_config_is_refused_in_one_line(tmp_path: Path, data: Path) -> None:
    config = tmp_path / "big.json"
    config.write_text('{"seed": 1' + " " * 2**20 + "}")
    result = run(["backtest", str(data), "--config", str(config), "--out", str(tmp_path / "r")])
    assert_user_error(result, str(config), "larger than 1,048,576 bytes")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.json", "candles.csv"]


@pytest.mark.parametrize(
    ("content", "fragment"),
    [("not json", "JSON is malformed"),
     ('{"seed": "x"}', "Expected `int`, got `str` - at `$.seed`"),
     ('{"sede": 1}', "unknown field `sede`")],
    ids=["malformed", "wrong type", "unknown field"],
)  # fmt: skip
def test_a_bad_config_file_is_one_line_naming_the_file(
    tmp_path: Path, data: Path, content: str, fragment: str
) -> None:
    config = tmp_path / "config.json"
    config.write_text(content)
    result = run(["backtest", str(data), "--config", str(config), "--out", str(tmp_path / "r")])
    assert_user_error(result, str(config), fragment)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith(f"Error: {config}: "), lines
    assert sorted(p.name for p in tmp_path.iterdir()) == ["candles.csv", "config.json"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "x.csv", "--agents", "1"],
         "Error: colmena train: Invalid value for '--agents': 1 is not in the range x>=2. "
         "(see 'colmena train -h')"),
        (["backtest", "--folds", "zero"], "Error: colmena backtest: Invalid value for '--folds'"),
        (["features"], "Error: colmena features: Missing argument 'PATH'."),
        (["report", "run", "--bogus"], "Error: colmena report: No such option '--bogus'"),
        (["nosuch"], "Error: colmena: No such command 'nosuch'. (see 'colmena -h')"),
    ],
)  # fmt: skip
def test_a_usage_error_is_one_line_and_exit_2(args: list[str], message: str) -> None:
    """A bad option value, a missing argument, an unknown option or command: one line on
    stderr (no usage block), exit status 2, in a real child process as a user runs it."""
    from helpers import run_cli

    done = run_cli(args, timeout=60)
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(message)
