"""Fuzzing the candle loader: mutated CSV and Parquet files load as valid candles or raise a
DataValidationError naming the file; nothing else escapes, nothing crashes or hangs.

The inputs and the property are in ``tests/fuzz_strategies.py`` (shared with
``bench/reliability.py``): small valid files mutated in their header (names, case, duplicates),
column counts, cells (NaN, inf, huge, negative, bool, empty), timestamps (s/ms/us/ns, mixed,
years out of range, unsorted, duplicated), line endings, BOM, encodings, bytes and truncation.
A file with no mutation must load exactly the values it holds.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from hypothesis import given

sys.path.insert(0, str(Path(__file__).parent))
from colmena.data.ohlcv import DataValidationError, load_ohlcv
from fuzz_strategies import CandleFile, IsolatedRunner, candle_files, check_candle_file, reproducer
from fuzzing import fuzz_settings


@pytest.mark.fuzz
@fuzz_settings()
@given(candle_files())
def test_mutated_candle_files_load_or_raise_data_validation_error(file: CandleFile) -> None:
    assert check_candle_file(file) in ("ok", "DataValidationError")


@pytest.mark.fuzz
@fuzz_settings(default=50)
@given(candle_files(mutate=False))
def test_unmutated_files_load_exactly_their_values(file: CandleFile) -> None:
    if file.valid:  # a date column collapses times within a day: not valid
        assert check_candle_file(file) == "ok"


@pytest.fixture(scope="module")
def runner() -> IsolatedRunner:
    with IsolatedRunner(timeout=60) as r:
        yield r  # type: ignore[misc]


@pytest.mark.fuzz
@pytest.mark.fuzz_long
@fuzz_settings(default=100)
@given(file=candle_files())
def test_loader_in_a_child_process_never_crashes_or_hangs(
    runner: IsolatedRunner, file: CandleFile
) -> None:
    outcome = runner.run("loader", file)
    assert outcome.kind == "done", (
        f"{outcome.kind}: {outcome.detail}\nreproducer: {reproducer('loader', file)}"
    )


def test_a_malformed_row_that_is_not_utf8_is_named_without_a_stray_traceback(
    tmp_path: Path,
) -> None:
    path = tmp_path / "candles.csv"
    path.write_bytes(
        b"open_time,open,high,low,close,volume\n1677628800,1,1,1,1,1\n214748365\xa5]\n"
    )
    ignored: list[object] = []
    hook, sys.unraisablehook = sys.unraisablehook, ignored.append
    try:
        with pytest.raises(DataValidationError, match="data row 1"):
            load_ohlcv(path)
    finally:
        sys.unraisablehook = hook
    assert not ignored
