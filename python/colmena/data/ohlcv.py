"""Loading OHLCV candle files (Parquet, CSV) into validated NumPy columns, with a gap report.

Files are read with pyarrow and checked by the same compiled validator that guards
:class:`colmena.MarketBuffer` (``colmena._core.find_invalid_ohlcv``); nothing is re-implemented
here. Gaps (missing bars) are reported, never filled.

Units: timestamps are candle open times in nanoseconds since the Unix epoch (UTC); prices are in
the quote currency; volume is in the base currency.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from numpy.typing import NDArray

from colmena import _core
from colmena.units import NS_PER_MS, NS_PER_SECOND, NS_PER_US

__all__ = [
    "PRICE_COLUMNS",
    "TIMESTAMP_COLUMNS",
    "Candles",
    "DataValidationError",
    "GapReport",
    "load_ohlcv",
]

#: Accepted names of the timestamp column, in order of preference (matched case-insensitively).
TIMESTAMP_COLUMNS: Final[tuple[str, ...]] = ("ts", "timestamp", "open_time", "time", "date")
#: Required price and volume columns (matched case-insensitively).
PRICE_COLUMNS: Final[tuple[str, ...]] = ("open", "high", "low", "close", "volume")

_PARQUET_SUFFIXES: Final = (".parquet", ".pq")
_CSV_SUFFIXES: Final = (".csv", ".csv.gz", ".csv.bz2", ".csv.zst", ".csv.lz4")
_NS_PER_UNIT: Final = {"s": NS_PER_SECOND, "ms": NS_PER_MS, "us": NS_PER_US, "ns": 1}
_INT64_MAX: Final = int(np.iinfo(np.int64).max)
_Array = TypeVar("_Array", bound="np.ndarray[Any, Any]")


class DataValidationError(ValueError):
    """A candle file is missing, unreadable or holds invalid data.

    The message names the file and, where they apply, the 0-based data row (the header is not a
    row) and the column, e.g. ``data.csv: data row 17 (0-based), column 'high': high (101.5) <
    low (102.0)``.

    Attributes
    ----------
    path : pathlib.Path
        The file.
    row : int or None
        0-based data row index in the file, or None when the problem is not about one row.
    column : str or None
        Column name as spelled in the file, or None when the problem is not about one column.
    """

    def __init__(
        self, message: str, *, path: Path, row: int | None = None, column: str | None = None
    ) -> None:
        super().__init__(message)
        self.path = path
        self.row = row
        self.column = column

    def __reduce__(self) -> tuple[object, ...]:
        # Keyword-only arguments need help to survive pickling (multiprocessing).
        return (_rebuild_error, (str(self), self.path, self.row, self.column))


def _rebuild_error(
    message: str, path: Path, row: int | None, column: str | None
) -> DataValidationError:
    return DataValidationError(message, path=path, row=row, column=column)


@dataclass(frozen=True, slots=True, eq=False)
class GapReport:
    """Missing bars in a series of candles, found without filling anything.

    A gap is a step between consecutive candles longer than the bar interval. The bars missing
    from a gap are the grid times ``ts[i-1] + k * interval`` (k >= 1) strictly before ``ts[i]``,
    i.e. ``ceil(step / interval) - 1``: a step of 68 minutes on one-minute bars is one gap of 67
    missing bars.

    Attributes
    ----------
    count : int
        Number of gaps.
    missing_bars : int
        Bars missing over all gaps (for one-minute bars: missing minutes).
    longest_missing_bars : int
        Bars missing in the longest gap (0 without gaps).
    longest_gap_seconds : float
        Time between the open times of the two candles around the longest gap, in seconds
        (0.0 without gaps). For one-minute bars this is ``longest_missing_bars + 1`` minutes;
        the data README's "longest 68 min" is this figure.
    rows : numpy.ndarray of int64, shape [count]
        For each gap, the 0-based row of the first candle after it (the gap lies between rows
        ``rows[k] - 1`` and ``rows[k]``). Read-only.
    missing_per_gap : numpy.ndarray of int64, shape [count]
        Bars missing in each gap. Read-only.
    """

    count: int
    missing_bars: int
    longest_missing_bars: int
    longest_gap_seconds: float
    rows: NDArray[np.int64]
    missing_per_gap: NDArray[np.int64]

    @classmethod
    def from_timestamps(cls, ts: NDArray[np.int64], interval_seconds: float | None) -> GapReport:
        """Find the gaps in sorted timestamps.

        Parameters
        ----------
        ts : numpy.ndarray of int64, shape [n_rows]
            Candle open times, ns since epoch UTC, strictly increasing.
        interval_seconds : float or None
            Bar interval in seconds (> 0). None (unknown, e.g. fewer than 2 rows) gives an empty
            report.

        Returns
        -------
        GapReport
        """
        empty = np.zeros(0, dtype=np.int64)
        if interval_seconds is None or len(ts) < 2:
            return cls(0, 0, 0, 0.0, _frozen(empty), _frozen(empty.copy()))
        interval_ns = round(interval_seconds * NS_PER_SECOND)
        if interval_ns <= 0:
            raise ValueError(f"interval_seconds must be > 0, got {interval_seconds}")
        steps = np.diff(np.asarray(ts, dtype=np.int64))
        is_gap = steps > interval_ns
        rows = np.flatnonzero(is_gap).astype(np.int64) + 1
        gap_steps = steps[is_gap]
        missing = (gap_steps - 1) // interval_ns
        return cls(
            count=int(rows.size),
            missing_bars=int(missing.sum()),
            longest_missing_bars=int(missing.max()) if missing.size else 0,
            longest_gap_seconds=float(gap_steps.max()) / NS_PER_SECOND if gap_steps.size else 0.0,
            rows=_frozen(rows),
            missing_per_gap=_frozen(missing.astype(np.int64)),
        )


@dataclass(frozen=True, slots=True, eq=False)
class Candles:
    """Validated OHLCV candles loaded from a file, column-wise, oldest first.

    Every array has shape [n_rows] and is read-only. Rows satisfy the rules of
    ``colmena._core.find_invalid_ohlcv``: strictly increasing timestamps, finite prices > 0,
    finite volume >= 0, low <= open, close <= high.

    Attributes
    ----------
    ts : numpy.ndarray of int64, shape [n_rows]
        Candle open times, ns since epoch UTC.
    open, high, low, close : numpy.ndarray of float64, shape [n_rows]
        Prices in the quote currency.
    volume : numpy.ndarray of float64, shape [n_rows]
        Traded volume in the base currency.
    source : pathlib.Path
        The file the candles came from.
    interval_seconds : float or None
        Bar interval: the most common step between consecutive timestamps (the smallest one on
        a tie), in seconds. None when there are fewer than two rows.
    gaps : GapReport
        Missing bars relative to ``interval_seconds``.
    """

    ts: NDArray[np.int64]
    open: NDArray[np.float64]
    high: NDArray[np.float64]
    low: NDArray[np.float64]
    close: NDArray[np.float64]
    volume: NDArray[np.float64]
    source: Path
    interval_seconds: float | None
    gaps: GapReport

    def __len__(self) -> int:
        """Number of candles (n_rows)."""
        return int(self.ts.shape[0])

    def slice(self, start: int, stop: int) -> Candles:
        """Rows ``[start, stop)`` as new Candles (views, no copy); gaps recomputed for the slice.

        Raises
        ------
        ValueError
            If the range is empty or outside ``[0, len(self)]``.
        """
        n = len(self)
        if not (0 <= start < stop <= n):
            raise ValueError(f"slice [{start}, {stop}) is empty or outside [0, {n}]")
        ts = self.ts[start:stop]
        return Candles(
            ts=ts,
            open=self.open[start:stop],
            high=self.high[start:stop],
            low=self.low[start:stop],
            close=self.close[start:stop],
            volume=self.volume[start:stop],
            source=self.source,
            interval_seconds=self.interval_seconds,
            gaps=GapReport.from_timestamps(ts, self.interval_seconds),
        )

    def to_arrow(self) -> pa.Table:
        """The candles as an Arrow table, sharing memory with the arrays.

        Returns
        -------
        pyarrow.Table
            Columns ``ts`` (timestamp[ns, tz=UTC]), ``open``, ``high``, ``low``, ``close``,
            ``volume`` (float64), n_rows rows. ``MarketBuffer.extend_arrow`` accepts it.
        """
        return pa.table(
            {
                "ts": pa.array(self.ts).cast(pa.timestamp("ns", tz="UTC")),
                "open": pa.array(self.open),
                "high": pa.array(self.high),
                "low": pa.array(self.low),
                "close": pa.array(self.close),
                "volume": pa.array(self.volume),
            }
        )


def load_ohlcv(path: str | os.PathLike[str]) -> Candles:
    """Read and validate a file of OHLCV candles.

    Parameters
    ----------
    path : str or os.PathLike
        A Parquet file (``.parquet``, ``.pq``) or a CSV file with a header row (``.csv``, or
        compressed ``.csv.gz``, ``.csv.bz2``, ``.csv.zst``, ``.csv.lz4``). Columns, matched
        case-insensitively, extra columns ignored:

        - the timestamp, the first of ``ts``, ``timestamp``, ``open_time``, ``time``, ``date``
          present: the candle's open time, as an Arrow timestamp or date (any unit; a zone-less
          value is taken as UTC), an ISO 8601 string (``2023-03-01 00:00:00+00:00``,
          ``2023-03-01T00:00:00Z``, ``2023-03-01``; zone-less strings are taken as UTC), or an
          integer count since the Unix epoch whose unit is inferred from the largest absolute
          value: below 1e11 seconds, below 1e14 milliseconds, below 1e17 microseconds,
          otherwise nanoseconds. (So millisecond times before 1973-03-03 would be misread as
          seconds.)
        - ``open``, ``high``, ``low``, ``close``: prices in the quote currency; ``volume`` in
          the base currency. Numbers or numeric strings.

    Returns
    -------
    Candles
        Arrays of shape [n_rows]: ts as int64 ns since epoch UTC, prices and volume as float64;
        the inferred bar interval and the gap report. Gaps are reported, never filled.

    Raises
    ------
    DataValidationError
        (a ValueError) naming the file, and the 0-based data row and the column where they
        apply, when the file is missing or unreadable, has an unsupported extension, lacks a
        column, has no data rows, holds a missing (null/empty) or unparsable value, or breaks a
        candle rule: timestamps unsorted or duplicated, a price NaN, infinite or <= 0, volume
        NaN, infinite or < 0, high < low, open or close outside [low, high].
    """
    file = Path(path)
    table = _read_table(file)
    if table.num_rows == 0:
        raise DataValidationError(f"{file}: the file has no data rows", path=file)
    columns = {name.strip().lower(): name for name in table.column_names}
    ts_name = next((columns[c] for c in TIMESTAMP_COLUMNS if c in columns), None)
    if ts_name is None:
        raise DataValidationError(
            f"{file}: missing the timestamp column: expected one of "
            f"{', '.join(TIMESTAMP_COLUMNS)}; the file has {', '.join(table.column_names)}",
            path=file,
        )
    missing = [c for c in PRICE_COLUMNS if c not in columns]
    if missing:
        raise DataValidationError(
            f"{file}: missing column {missing[0]!r} (required: {', '.join(PRICE_COLUMNS)}); "
            f"the file has {', '.join(table.column_names)}",
            path=file,
            column=missing[0],
        )
    names = {"ts": ts_name, **{c: columns[c] for c in PRICE_COLUMNS}}
    ts = _timestamps_ns(_combined(table, ts_name), file, ts_name)
    values = {c: _float64(_combined(table, names[c]), file, names[c]) for c in PRICE_COLUMNS}

    violation = _core.find_invalid_ohlcv(
        ts, values["open"], values["high"], values["low"], values["close"], values["volume"]
    )
    if violation is not None:
        column = names[violation.field]
        detail = violation.detail
        if violation.rule == "ts_not_increasing":
            detail = "timestamps must be strictly increasing (sorted, no duplicates): " + detail
        raise DataValidationError(
            f"{file}: data row {violation.row} (0-based), column {column!r}: {detail}",
            path=file,
            row=violation.row,
            column=column,
        )

    interval_seconds = _most_common_step_seconds(ts)
    return Candles(
        ts=_frozen(ts),
        open=_frozen(values["open"]),
        high=_frozen(values["high"]),
        low=_frozen(values["low"]),
        close=_frozen(values["close"]),
        volume=_frozen(values["volume"]),
        source=file,
        interval_seconds=interval_seconds,
        gaps=GapReport.from_timestamps(ts, interval_seconds),
    )


# ---------------------------------------------------------------- reading


def _read_table(file: Path) -> pa.Table:
    name = file.name.lower()
    is_parquet = name.endswith(_PARQUET_SUFFIXES)
    is_csv = name.endswith(_CSV_SUFFIXES)
    if not (is_parquet or is_csv):
        raise DataValidationError(
            f"{file}: unsupported file type; expected one of "
            f"{', '.join(_PARQUET_SUFFIXES + _CSV_SUFFIXES)}",
            path=file,
        )
    if not file.exists():
        raise DataValidationError(f"{file}: file not found", path=file)
    if not file.is_file():
        raise DataValidationError(f"{file}: not a regular file", path=file)
    try:
        if is_parquet:
            return pq.read_table(file)
        return _read_csv(file)
    except DataValidationError:
        raise
    except (OSError, pa.ArrowException) as exc:
        kind = "Parquet" if is_parquet else "CSV"
        raise DataValidationError(f"{file}: cannot read as {kind}: {exc}", path=file) from exc


def _read_csv(file: Path) -> pa.Table:
    """Every column as strings: conversion (and its error reporting) is done per column after."""
    header = _csv_header(file)
    if header is None:
        raise DataValidationError(f"{file}: the file is empty (no header row)", path=file)
    convert = pacsv.ConvertOptions(
        column_types=dict.fromkeys(header, pa.string()), strings_can_be_null=False
    )
    try:
        return pacsv.read_csv(file, convert_options=convert)
    except pa.ArrowInvalid as exc:
        row = _first_malformed_csv_row(file, convert)
        if row is None:
            raise
        raise DataValidationError(
            f"{file}: data row {row} (0-based): malformed CSV row: {exc}", path=file, row=row
        ) from exc


def _csv_header(file: Path) -> list[str] | None:
    with pa.input_stream(str(file)) as stream:  # decompresses by extension
        head = b""
        while b"\n" not in head:
            chunk = stream.read(1 << 16)
            if not chunk:
                break
            head += chunk
    first_line = head.split(b"\n", 1)[0].decode("utf-8-sig").strip("\r")
    if not first_line.strip():
        return None
    return next(csv.reader(io.StringIO(first_line)))


def _first_malformed_csv_row(file: Path, convert: pacsv.ConvertOptions) -> int | None:
    """Re-read serially to learn which physical line broke the parser."""
    lines: list[int] = []

    def record(row: pacsv.InvalidRow) -> str:
        if row.number is not None:
            lines.append(int(row.number))
        return "error"

    with contextlib.suppress(pa.ArrowInvalid):
        pacsv.read_csv(
            file,
            read_options=pacsv.ReadOptions(use_threads=False),
            parse_options=pacsv.ParseOptions(invalid_row_handler=record),
            convert_options=convert,
        )
    return lines[0] - 2 if lines else None  # physical line 1 is the header


def _combined(table: pa.Table, name: str) -> pa.Array:
    column = table.column(name)
    return column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)


# ---------------------------------------------------------------- column conversion


def _first_null(array: pa.Array) -> int:
    return int(np.argmax(np.asarray(pc.is_null(array).to_numpy(zero_copy_only=False))))


def _first_failing_row(array: pa.Array, convert: Callable[[pa.Array], object]) -> int:
    """Bisect for the first element on which `convert` raises (linear total work)."""
    lo, hi = 0, len(array)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        try:
            convert(array.slice(lo, mid - lo))
        except (pa.ArrowInvalid, ValueError):
            hi = mid
        else:
            lo = mid
    return lo


def _cell_error(file: Path, row: int, column: str, what: str) -> DataValidationError:
    return DataValidationError(
        f"{file}: data row {row} (0-based), column {column!r}: {what}",
        path=file,
        row=row,
        column=column,
    )


def _float64(array: pa.Array, file: Path, column: str) -> NDArray[np.float64]:
    if array.null_count:
        row = _first_null(array)
        raise _cell_error(file, row, column, "missing value")
    kind = array.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        text = pc.utf8_trim_whitespace(array)

        def parse(part: pa.Array) -> pa.Array:
            return pc.cast(part, pa.float64())

        try:
            array = parse(text)
        except pa.ArrowInvalid:
            row = _first_failing_row(text, parse)
            cell = text[row].as_py()
            what = f"cannot parse {cell!r} as a number" if cell else "missing value"
            raise _cell_error(file, row, column, what) from None
    elif pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind):
        array = pc.cast(array, pa.float64(), safe=False)
    else:
        raise DataValidationError(
            f"{file}: column {column!r} has type {kind}; expected numbers",
            path=file,
            column=column,
        )
    return np.ascontiguousarray(array.to_numpy(zero_copy_only=False), dtype=np.float64)


def _timestamps_ns(array: pa.Array, file: Path, column: str) -> NDArray[np.int64]:
    if array.null_count:
        raise _cell_error(file, _first_null(array), column, "missing timestamp")
    kind = array.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        text = pc.utf8_trim_whitespace(array)
        if pc.all(pc.match_substring_regex(text, r"^[+-]?\d+$")).as_py():
            return _integer_timestamps_ns(pc.cast(text, pa.int64()), file, column)
        return _parse_iso_timestamps(text, file, column)
    if pa.types.is_integer(kind):
        try:
            ints = pc.cast(array, pa.int64())
        except pa.ArrowInvalid:
            row = _first_failing_row(array, lambda part: pc.cast(part, pa.int64()))
            raise _cell_error(
                file, row, column, f"timestamp {array[row].as_py()} is out of range"
            ) from None
        return _integer_timestamps_ns(ints, file, column)
    if pa.types.is_timestamp(kind) or pa.types.is_date(kind):
        target = pa.timestamp("ns", tz=getattr(kind, "tz", None))
        try:
            ns = pc.cast(array, target)
        except pa.ArrowInvalid:
            row = _first_failing_row(array, lambda part: pc.cast(part, target))
            raise _cell_error(
                file, row, column, f"timestamp {array[row]} is out of the int64 ns range"
            ) from None
        return _int64_numpy(pc.cast(ns, pa.int64()))
    raise DataValidationError(
        f"{file}: column {column!r} has type {kind}; expected timestamps (Arrow timestamp or "
        "date, ISO 8601 strings, or integers since the epoch)",
        path=file,
        column=column,
    )


def _integer_timestamps_ns(ints: pa.Array, file: Path, column: str) -> NDArray[np.int64]:
    values = _int64_numpy(ints)
    largest = int(np.abs(values.astype(np.float64)).max())
    unit = (
        "s"
        if largest < 10**11
        else "ms"
        if largest < 10**14
        else "us"
        if largest < 10**17
        else "ns"
    )
    factor = _NS_PER_UNIT[unit]
    if factor == 1:
        return values
    limit = _INT64_MAX // factor
    too_big = np.flatnonzero((values > limit) | (values < -limit))
    if too_big.size:
        row = int(too_big[0])
        raise _cell_error(
            file, row, column, f"timestamp {values[row]} {unit} does not fit in int64 nanoseconds"
        )
    scaled: NDArray[np.int64] = values * np.int64(factor)
    return scaled


def _parse_iso_timestamps(text: pa.Array, file: Path, column: str) -> NDArray[np.int64]:
    # Arrow parses strings with a zone offset only into zone-aware types and zone-less strings
    # only into zone-less ones. The first row decides; zone-less values are taken as UTC.
    zoned = pa.timestamp("ns", tz="UTC")
    target = zoned if _parses(text.slice(0, 1), zoned) else pa.timestamp("ns")

    def parse(part: pa.Array) -> pa.Array:
        return pc.cast(part, target)

    try:
        parsed = parse(text)
    except pa.ArrowInvalid:
        row = _first_failing_row(text, parse)
        cell = text[row].as_py()
        hint = "" if row == 0 else " (every timestamp must take the form of the first row's)"
        what = f"cannot parse {cell!r} as a timestamp{hint}" if cell else "missing timestamp"
        raise _cell_error(file, row, column, what) from None
    return _int64_numpy(pc.cast(parsed, pa.int64()))


def _parses(part: pa.Array, target: pa.DataType) -> bool:
    try:
        pc.cast(part, target)
    except pa.ArrowInvalid:
        return False
    return True


def _int64_numpy(array: pa.Array) -> NDArray[np.int64]:
    return np.ascontiguousarray(array.to_numpy(zero_copy_only=False), dtype=np.int64)


def _most_common_step_seconds(ts: NDArray[np.int64]) -> float | None:
    if len(ts) < 2:
        return None
    steps, counts = np.unique(np.diff(ts), return_counts=True)
    return float(steps[int(np.argmax(counts))]) / NS_PER_SECOND


def _frozen(array: _Array) -> _Array:
    array.setflags(write=False)
    return array
