"""load_ohlcv on the real candle files and on small bad files, one per error kind."""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from colmena.data.buffer import MarketBuffer
from colmena.data.ohlcv import Candles, DataValidationError, GapReport, load_ohlcv

CSV_2023 = "binanceus_btcusdt_1m_2023-03-01_2023-03-21.csv"
T0 = 1_677_628_800_000_000_000  # 2023-03-01T00:00:00Z in ns
MINUTE = 60_000_000_000
HEADER = "open_time,open,high,low,close,volume"


def ns(text: str) -> int:
    return int(np.datetime64(text, "ns").astype(np.int64))


# ---------------------------------------------------------------- the real files


def test_loads_the_2023_csv_completely(shared_data_dir: Path) -> None:
    candles = load_ohlcv(shared_data_dir / CSV_2023)
    assert isinstance(candles, Candles)
    assert len(candles) == 30_240
    assert candles.source == shared_data_dir / CSV_2023
    assert candles.ts[0] == ns("2023-03-01T00:00")
    assert candles.ts[-1] == ns("2023-03-21T23:59")
    assert candles.interval_seconds == 60.0
    assert candles.gaps.count == 0
    assert candles.gaps.missing_bars == 0
    assert candles.gaps.rows.shape == (0,)
    # The first data line: 2023-03-01 00:00:00+00:00,23140.48,23150.77,23128.52,23142.31,2.131777
    first = [candles.open[0], candles.high[0], candles.low[0], candles.close[0], candles.volume[0]]
    assert first == [23140.48, 23150.77, 23128.52, 23142.31, 2.131777]
    assert candles.ts.dtype == np.int64
    for array in (candles.ts, candles.open, candles.high, candles.low, candles.close):
        assert not array.flags.writeable
        assert array.shape == (30_240,)


# rows, missing minutes, gaps (None: not published), longest gap in minutes, from the README
REAL_PARQUET = [
    ("btcusd_bitfinex_1m_2018.parquet", 520_499, 5_101, 3_992, 68),
    ("ethusd_bitfinex_1m_2018.parquet", 508_048, 17_552, None, 107),
    ("xrpusd_bitfinex_1m_2018.parquet", 488_815, 36_785, None, 182),
]


@pytest.mark.parametrize(("name", "rows", "missing", "gaps", "longest"), REAL_PARQUET)
def test_gap_report_matches_the_published_figures(
    shared_data_dir: Path, name: str, rows: int, missing: int, gaps: int | None, longest: int
) -> None:
    candles = load_ohlcv(shared_data_dir / name)
    assert len(candles) == rows
    assert candles.ts[0] == ns("2018-01-01T00:00")
    assert candles.ts[-1] == ns("2018-12-31T23:59")
    assert candles.interval_seconds == 60.0
    report = candles.gaps
    assert report.missing_bars == missing
    assert report.missing_bars + rows == 365 * 24 * 60  # every minute of 2018 is accounted for
    if gaps is not None:
        assert report.count == gaps
    assert report.longest_gap_seconds == longest * 60
    assert report.longest_missing_bars == longest - 1
    assert report.rows.shape == report.missing_per_gap.shape == (report.count,)
    steps = np.diff(candles.ts)[report.rows - 1]
    np.testing.assert_array_equal(steps // MINUTE - 1, report.missing_per_gap)


def test_loaded_candles_round_trip_through_a_market_buffer(shared_data_dir: Path) -> None:
    candles = load_ohlcv(shared_data_dir / CSV_2023)
    buffer = MarketBuffer(1000)
    buffer.extend_arrow(candles.to_arrow())
    window = buffer.last()
    np.testing.assert_array_equal(window.ts, candles.ts[-1000:])
    np.testing.assert_array_equal(window.close, candles.close[-1000:])


# ---------------------------------------------------------------- gap report


def test_gap_report_positions_and_sizes() -> None:
    ts = T0 + np.array([0, 1, 2, 5, 6, 16, 17, 19], dtype=np.int64) * MINUTE
    report = GapReport.from_timestamps(ts, 60.0)
    assert report.count == 3
    assert report.rows.tolist() == [3, 5, 7]
    assert report.missing_per_gap.tolist() == [2, 9, 1]
    assert report.missing_bars == 12
    assert report.longest_missing_bars == 9
    assert report.longest_gap_seconds == 600.0


def test_gap_report_counts_grid_slots_for_off_grid_steps() -> None:
    ts = T0 + np.array([0, 60, 150, 210], dtype=np.int64) * 10**9  # a 90 s step
    report = GapReport.from_timestamps(ts, 60.0)
    assert (report.count, report.missing_bars) == (1, 1)


def test_gap_report_is_empty_without_an_interval() -> None:
    for report in (
        GapReport.from_timestamps(np.array([T0], dtype=np.int64), None),
        GapReport.from_timestamps(np.array([T0, T0 + 5 * MINUTE], dtype=np.int64), None),
    ):
        assert (report.count, report.missing_bars, report.longest_missing_bars) == (0, 0, 0)
    with pytest.raises(ValueError, match="interval_seconds must be > 0"):
        GapReport.from_timestamps(np.array([T0, T0 + 1], dtype=np.int64), 0.0)


# ---------------------------------------------------------------- formats


def write_csv(
    folder: Path, lines: list[str], name: str = "candles.csv", header: str = HEADER
) -> Path:
    path = folder / name
    path.write_text("\n".join([header, *lines]) + "\n")
    return path


def minute_lines(n: int, start: int = 0) -> list[str]:
    """n valid CSV lines, one minute apart, from 2023-03-01 00:00 + start minutes."""
    out = []
    for k in range(start, start + n):
        stamp = str(np.datetime64(T0 + k * MINUTE, "ns").astype("datetime64[s]")).replace("T", " ")
        out.append(f"{stamp}+00:00,100.0,101.0,99.0,100.5,{k + 1}.25")
    return out


@pytest.mark.parametrize(
    ("scale", "label"), [(1, "s"), (10**3, "ms"), (10**6, "us"), (10**9, "ns")]
)
def test_integer_timestamps_infer_their_unit(tmp_path: Path, scale: int, label: str) -> None:
    seconds = T0 // 10**9
    lines = [f"{(seconds + 60 * k) * scale},1,2,0.5,1.5,3" for k in range(5)]
    candles = load_ohlcv(write_csv(tmp_path, lines, header="ts,open,high,low,close,volume"))
    assert candles.ts.tolist() == [T0 + k * MINUTE for k in range(5)], label


def test_iso_timestamp_forms(tmp_path: Path) -> None:
    forms = {
        "zulu": ["2023-03-01T00:00:00Z", "2023-03-01T00:01:00Z"],
        "offset": ["2023-03-01 01:00:00+01:00", "2023-03-01 01:01:00+01:00"],
        "naive": ["2023-03-01 00:00:00", "2023-03-01 00:01:00"],
    }
    for label, stamps in forms.items():
        lines = [f"{s},1,2,0.5,1.5,3" for s in stamps]
        candles = load_ohlcv(write_csv(tmp_path, lines, name=f"{label}.csv"))
        assert candles.ts.tolist() == [T0, T0 + MINUTE], label


def test_daily_bars_with_dates(tmp_path: Path) -> None:
    lines = [f"2023-03-0{d},1,2,0.5,1.5,3" for d in (1, 2, 3, 5)]
    candles = load_ohlcv(write_csv(tmp_path, lines, header="date,open,high,low,close,volume"))
    assert candles.interval_seconds == 86_400.0
    assert (candles.gaps.count, candles.gaps.missing_bars) == (1, 1)


def test_headers_match_case_insensitively_and_extra_columns_are_ignored(tmp_path: Path) -> None:
    lines = [f"{line},BTC" for line in minute_lines(3)]
    header = "Open_Time, Open ,HIGH,Low,Close,Volume,symbol"
    candles = load_ohlcv(write_csv(tmp_path, lines, header=header))
    assert len(candles) == 3
    assert candles.volume.tolist() == [1.25, 2.25, 3.25]


def test_compressed_csv_and_byte_order_mark(tmp_path: Path) -> None:
    path = tmp_path / "candles.csv.gz"
    path.write_bytes(
        gzip.compress(("\ufeff" + HEADER + "\n" + "\n".join(minute_lines(4))).encode())
    )
    assert len(load_ohlcv(path)) == 4


def test_parquet_with_timestamp_and_integer_columns(tmp_path: Path) -> None:
    values = {"open": [1.0, 1.0], "high": [2, 2], "low": [0.5, 0.5], "close": [1.5, 1.5]}
    values["volume"] = [3.0, 0.0]
    for label, column in {
        "timestamp_s": pa.array([T0 // 10**9, T0 // 10**9 + 60]).cast(pa.timestamp("s")),
        "timestamp_us_tz": pa.array([T0 // 1000, T0 // 1000 + 60 * 10**6]).cast(
            pa.timestamp("us", tz="Asia/Tokyo")
        ),
        "int_ms": pa.array([T0 // 10**6, T0 // 10**6 + 60_000], pa.int64()),
    }.items():
        path = tmp_path / f"{label}.parquet"
        pq.write_table(pa.table({"timestamp": column, **values}), path)
        candles = load_ohlcv(path)
        assert candles.ts.tolist() == [T0, T0 + MINUTE], label
        assert candles.high.dtype == np.float64


# ---------------------------------------------------------------- errors


def assert_error(
    path: Path, row: int | None, column: str | None, *fragments: str
) -> DataValidationError:
    with pytest.raises(DataValidationError) as info:
        load_ohlcv(path)
    error = info.value
    message = str(error)
    assert isinstance(error, ValueError)
    assert error.path == path
    assert (error.row, error.column) == (row, column), message
    assert message.startswith(f"{path}: "), message
    if row is not None:
        assert f"data row {row} (0-based)" in message, message
    if column is not None:
        assert f"column {column!r}" in message, message
    for fragment in fragments:
        assert fragment in message, message
    return error


def test_missing_file(tmp_path: Path) -> None:
    assert_error(tmp_path / "nope.csv", None, None, "file not found")


def test_directory_instead_of_a_file(tmp_path: Path) -> None:
    folder = tmp_path / "folder.parquet"
    folder.mkdir()
    assert_error(folder, None, None, "not a regular file")


@pytest.mark.parametrize("name", ["candles.json", "candles.txt", "candles"])
def test_unsupported_extension(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_text("x")
    assert_error(path, None, None, "unsupported file type", ".parquet", ".csv")


def test_corrupt_parquet(tmp_path: Path) -> None:
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"PAR1 this is not parquet at all")
    assert_error(path, None, None, "cannot read as Parquet")


def test_empty_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert_error(empty, None, None, "empty")
    header_only = write_csv(tmp_path, [], name="header_only.csv")
    assert_error(header_only, None, None, "no data rows")
    no_rows = tmp_path / "empty.parquet"
    schema = pa.schema(
        [("ts", pa.timestamp("ms", tz="UTC"))] + [(c, pa.float64()) for c in HEADER.split(",")[1:]]
    )
    pq.write_table(schema.empty_table(), no_rows)
    assert_error(no_rows, None, None, "no data rows")


def test_missing_columns(tmp_path: Path) -> None:
    no_low = write_csv(tmp_path, ["2023-03-01 00:00:00+00:00,1,2,1.5,3"], "no_low.csv",
                       header="open_time,open,high,close,volume")  # fmt: skip
    assert_error(no_low, None, "low", "missing column 'low'", "open_time, open, high, close")
    no_time = write_csv(
        tmp_path, ["1,2,0.5,1.5,3"], "no_time.csv", header="open,high,low,close,volume"
    )
    assert_error(no_time, None, None, "missing the timestamp column", "ts, timestamp, open_time")


def test_unsorted_timestamps(tmp_path: Path) -> None:
    lines = minute_lines(6)
    lines[3], lines[4] = lines[4], lines[3]
    assert_error(write_csv(tmp_path, lines), 4, "open_time", "strictly increasing", "is not after")


def test_duplicate_timestamps(tmp_path: Path) -> None:
    lines = minute_lines(6)
    lines[2] = lines[1]
    assert_error(write_csv(tmp_path, lines), 2, "open_time", "duplicates the previous row's ts")


@pytest.mark.parametrize(
    ("column", "value", "fragment"),
    [
        ("close", "nan", "close (nan) is not finite"),
        ("open", "inf", "open (inf) is not finite"),
        ("low", "0", "low (0.0) is not > 0"),
        ("high", "-101", "high (-101.0) is not > 0"),
        ("volume", "-2", "volume (-2.0) is < 0"),
        ("high", "98.5", "high (98.5) < low (99.0)"),
        ("close", "101.5", "close (101.5) is outside [low (99.0), high (101.0)]"),
        ("open", "abc", "cannot parse 'abc' as a number"),
        ("volume", "", "missing value"),
        ("open_time", " ", "missing timestamp"),
        ("open_time", "2023-13-45 99:00:00+00:00", "cannot parse '2023-13-45 99:00:00+00:00'"),
        ("open_time", "2023-03-01 00:05:00", "every timestamp must take the form of the first"),
    ],
)
def test_bad_cells_name_file_row_and_column(
    tmp_path: Path, column: str, value: str, fragment: str
) -> None:
    lines = minute_lines(8)
    cells = lines[5].split(",")
    cells[HEADER.split(",").index(column)] = value
    lines[5] = ",".join(cells)
    assert_error(write_csv(tmp_path, lines), 5, column, fragment)


def test_unparsable_first_timestamp(tmp_path: Path) -> None:
    lines = ["yesterday,1,2,0.5,1.5,3", *minute_lines(2)]
    assert_error(
        write_csv(tmp_path, lines), 0, "open_time", "cannot parse 'yesterday' as a timestamp"
    )


def test_malformed_csv_row(tmp_path: Path) -> None:
    lines = minute_lines(5)
    lines[3] = "2023-03-01 00:03:00+00:00,100.0,101.0"
    assert_error(write_csv(tmp_path, lines), 3, None, "malformed CSV row", "Expected 6 columns")


def test_null_in_parquet(tmp_path: Path) -> None:
    path = tmp_path / "nulls.parquet"
    table = pa.table(
        {
            "ts": pa.array([T0 + k * MINUTE for k in range(4)]).cast(pa.timestamp("ns", tz="UTC")),
            "open": [1.0, 1.0, 1.0, 1.0],
            "high": [2.0, 2.0, 2.0, 2.0],
            "low": [0.5, 0.5, 0.5, 0.5],
            "close": [1.0, 1.0, None, 1.0],
            "volume": [1.0, 1.0, 1.0, 1.0],
        }
    )
    pq.write_table(table, path)
    assert_error(path, 2, "close", "missing value")


def test_nan_in_parquet(tmp_path: Path) -> None:
    path = tmp_path / "nan.parquet"
    pq.write_table(
        pa.table(
            {
                "ts": pa.array([1, 2, 3], pa.int64()),
                "open": [1.0, float("nan"), 1.0],
                "high": [2.0, 2.0, 2.0],
                "low": [0.5, 0.5, 0.5],
                "close": [1.0, 1.0, 1.0],
                "volume": [1.0, 1.0, 1.0],
            }
        ),
        path,
    )
    assert_error(path, 1, "open", "open (nan) is not finite")


def test_timestamp_that_does_not_fit_nanoseconds(tmp_path: Path) -> None:
    lines = ["9000000000,1,2,0.5,1.5,3", "9300000000,1,2,0.5,1.5,3"]  # seconds past 2262
    path = write_csv(tmp_path, lines, header="ts,open,high,low,close,volume")
    assert_error(path, 1, "ts", "does not fit in int64 nanoseconds")


def test_unusable_column_type(tmp_path: Path) -> None:
    path = tmp_path / "bools.parquet"
    table = pa.table({"ts": [1, 2], "open": [True, False], "high": [2.0, 2.0], "low": [0.5, 0.5],
                      "close": [1.0, 1.0], "volume": [1.0, 1.0]})  # fmt: skip
    pq.write_table(table, path)
    assert_error(path, None, "open", "has type bool; expected numbers")


def test_error_survives_pickling(tmp_path: Path) -> None:
    lines = minute_lines(3)
    lines[1] = lines[1].replace("101.0", "98.0")
    error = assert_error(write_csv(tmp_path, lines), 1, "high", "high (98.0) < low (99.0)")
    copy = pickle.loads(pickle.dumps(error))
    assert (str(copy), copy.path, copy.row, copy.column) == (
        str(error),
        error.path,
        error.row,
        error.column,
    )


# ---------------------------------------------------------------- hostile files (issue 10)

INT64_MIN = int(np.iinfo(np.int64).min)


def parquet_with_ts(path: Path, ts: pa.Array) -> Path:
    ones = [1.0] * len(ts)
    table = pa.table({"ts": ts, "open": ones, "high": ones, "low": ones, "close": ones,
                      "volume": ones})  # fmt: skip
    pq.write_table(table, path)
    return path


@pytest.mark.parametrize(
    ("label", "ts", "fragment"),
    [
        # a NaT stored as its int64 sentinel (not as a null): 1677-09-21
        ("nat_timestamp", pa.array([T0, INT64_MIN, T0 + MINUTE], pa.timestamp("ns")), "NaT"),
        ("nat_int", pa.array([INT64_MIN, INT64_MIN + MINUTE], pa.int64()), "NaT"),
        (
            "year_1677",
            pa.array([INT64_MIN + 3_600 * 10**9, INT64_MIN + 3_660 * 10**9]),
            "1677-09-21T01:12:43",
        ),
        ("before_1970", pa.array([-MINUTE, 0], pa.timestamp("ns")), "1969-12-31T23:59:00Z"),
        (
            "after_2200",
            pa.array([T0, 7_258_118_400 * 10**9 + MINUTE], pa.timestamp("ns")),
            "2200-01-01T00:01:00Z",
        ),
    ],
)
def test_timestamps_outside_1970_to_2200_are_refused(
    tmp_path: Path, label: str, ts: pa.Array, fragment: str
) -> None:
    """A time near the int64 minimum once crashed the core's risk manager (signal 11)."""
    path = parquet_with_ts(tmp_path / f"{label}.parquet", ts)
    row = next(i for i, t in enumerate(ts.cast(pa.int64()).to_pylist()) if not 0 <= t <= 7.2e18)
    assert_error(path, row, "ts", "outside the supported range", "1970-01-01", fragment)


def test_null_timestamp_in_parquet_is_refused(tmp_path: Path) -> None:
    path = parquet_with_ts(tmp_path / "null.parquet", pa.array([T0, None], pa.timestamp("ns")))
    assert_error(path, 1, "ts", "missing timestamp")


def test_the_time_range_is_the_cores() -> None:
    from colmena import _core
    from colmena.data.ohlcv import MAX_TIMESTAMP_NS, MIN_TIMESTAMP_NS

    assert (MIN_TIMESTAMP_NS, MAX_TIMESTAMP_NS) == (_core.MIN_TIMESTAMP_NS, _core.MAX_TIMESTAMP_NS)
    assert ns("1970-01-01T00:00") == MIN_TIMESTAMP_NS
    assert ns("2200-01-01T00:00") == MAX_TIMESTAMP_NS


@pytest.mark.parametrize(
    ("lines", "row", "fragments"),
    [
        # huge integers: once an ArrowInvalid without the file name
        (["99999999999999999999999,1,2,0.5,1.5,3"], 0, ("out of the int64 range",)),
        # seconds with one millisecond row: once shifted every other row to 1970
        (
            [f"{T0 // 10**9 + 60 * k},1,2,0.5,1.5,3" for k in range(3)]
            + [f"{(T0 // 10**9 + 180) * 1000},1,2,0.5,1.5,3"],
            3,
            ("looks like milliseconds", "look like seconds", "same unit"),
        ),
        (
            [f"{T0 // 10**6 + 60_000 * k},1,2,0.5,1.5,3" for k in range(3)]
            + ["1677628980,1,2,0.5,1.5,3"],
            3,
            ("looks like seconds", "milliseconds"),
        ),
        # one-nanosecond bars
        (
            [f"{T0 + k},1,2,0.5,1.5,3" for k in range(3)],
            1,
            ("only 1 ns after", "less than one second apart"),
        ),
        (
            [f"{T0 // 10**6 + k * 500},1,2,0.5,1.5,3" for k in range(3)],
            1,
            ("only 500000000 ns after",),
        ),
    ],
    ids=["int64_overflow", "seconds_then_ms", "ms_then_seconds", "ns_bars", "half_second_bars"],
)
def test_bad_integer_timestamps(
    tmp_path: Path, lines: list[str], row: int, fragments: tuple[str, ...]
) -> None:
    path = write_csv(tmp_path, lines, header="ts,open,high,low,close,volume")
    assert_error(path, row, "ts", *fragments)


def test_one_second_bars_are_accepted(tmp_path: Path) -> None:
    lines = [f"{T0 // 10**9 + k},1,2,0.5,1.5,3" for k in range(4)]
    candles = load_ohlcv(write_csv(tmp_path, lines, header="ts,open,high,low,close,volume"))
    assert candles.interval_seconds == 1.0


@pytest.mark.parametrize(
    ("label", "ts", "fragment"),
    [
        # once an OverflowError: Python's datetime cannot show these values
        ("date32_far", pa.array([-1_000_000], pa.date32()), "-1000000 days since the epoch"),
        ("ms_far", pa.array([10**18], pa.timestamp("ms")), "1000000000000000000 ms"),
    ],
)
def test_arrow_times_beyond_int64_ns_are_refused(
    tmp_path: Path, label: str, ts: pa.Array, fragment: str
) -> None:
    path = parquet_with_ts(tmp_path / f"{label}.parquet", ts)
    assert_error(path, 0, "ts", fragment, "out of the int64 ns range")


@pytest.mark.parametrize(
    ("header", "first", "second"),
    [
        ("open_time,open,high,low,close,Close,volume", "close", "Close"),
        ("open_time,open,high,low,close,close,volume", "close", "close"),  # once a KeyError
        ("ts,open,high,low,close,volume, TS", "ts", " TS"),
    ],
)
def test_ambiguous_duplicate_columns_are_refused(
    tmp_path: Path, header: str, first: str, second: str
) -> None:
    lines = [f"{T0 // 10**9},1,2,0.5,1.5,1.5,3"]
    path = write_csv(tmp_path, lines, header=header)
    assert_error(path, None, second, f"column {second!r} duplicates column {first!r}")


def test_duplicate_columns_in_parquet_are_refused(tmp_path: Path) -> None:
    one = pa.array([1.0])
    table = pa.Table.from_arrays(
        [pa.array([T0]), one, one, one, one, one, one],
        names=["ts", "open", "HIGH", "low", "close", "high", "volume"],
    )
    path = tmp_path / "dup.parquet"
    pq.write_table(table, path)
    assert_error(path, None, "high", "duplicates column 'HIGH'", "both name the 'high' column")


def test_duplicate_extra_columns_are_ignored(tmp_path: Path) -> None:
    lines = [f"{line},a,b" for line in minute_lines(2)]
    assert len(load_ohlcv(write_csv(tmp_path, lines, header=HEADER + ",x,X"))) == 2


def test_carriage_return_line_endings(tmp_path: Path) -> None:
    """Files with old Mac line endings (\\r only) once raised csv.Error."""
    path = tmp_path / "cr.csv"
    path.write_bytes("\r".join([HEADER, *minute_lines(3)]).encode() + b"\r")
    candles = load_ohlcv(path)
    assert candles.ts.tolist() == [T0, T0 + MINUTE, T0 + 2 * MINUTE]
    crlf = tmp_path / "crlf.csv"
    crlf.write_bytes("\r\n".join([HEADER, *minute_lines(3)]).encode() + b"\r\n")
    assert len(load_ohlcv(crlf)) == 3


def test_text_that_is_not_utf8(tmp_path: Path) -> None:
    header = tmp_path / "latin1_header.csv"  # once a UnicodeDecodeError without the file
    header.write_bytes((HEADER + ",caf\xe9\n").encode("latin-1") + b"x\n")
    assert_error(header, None, None, "the header line is not UTF-8 text")
    cell = write_csv(tmp_path, minute_lines(4), name="latin1_cell.csv")
    lines = cell.read_bytes().split(b"\n")
    lines[3] = lines[3].replace(b"100.0,", b"10\xe9,", 1)
    cell.write_bytes(b"\n".join(lines))
    assert_error(cell, 2, "open", "not UTF-8 text", "10\\xe9")
    # bytes that are not UTF-8 in a column that is not read change nothing
    extra = tmp_path / "latin1_extra.csv"
    extra.write_bytes(
        (HEADER + ",note\n").encode() + (minute_lines(1)[0] + ",caf\xe9\n").encode("latin-1")
    )
    assert len(load_ohlcv(extra)) == 1


def test_huge_header_is_refused_fast(tmp_path: Path) -> None:
    """A 10M-column header once took 193 s and 3.4 GB."""
    import time

    wide = tmp_path / "wide.csv"
    wide.write_text(HEADER + "," + ",".join(["x"] * 10_000_000) + "\n" + minute_lines(1)[0] + "\n")
    started = time.perf_counter()
    assert_error(wide, None, None, "the header line is longer than 65536 bytes")
    assert time.perf_counter() - started < 1.0
    no_newline = tmp_path / "no_newline.csv.gz"
    no_newline.write_bytes(gzip.compress(b"open_time" * 2_000_000))
    assert_error(no_newline, None, None, "longer than 65536 bytes")
    many = write_csv(tmp_path, [], name="many.csv",
                     header=HEADER + "," + ",".join(f"c{i}" for i in range(600)))  # fmt: skip
    assert_error(many, None, None, "the header has 606 columns; at most 512")


def test_no_other_exception_escapes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever pyarrow or NumPy still raises on a hostile file becomes a DataValidationError."""
    import colmena.data.ohlcv as ohlcv

    def explode(*args: object, **kwargs: object) -> None:
        raise OverflowError("something deep down")

    monkeypatch.setattr(ohlcv, "_most_common_step_seconds", explode)
    path = write_csv(tmp_path, minute_lines(2))
    assert_error(path, None, None, "cannot read the candles: OverflowError: something deep down")
