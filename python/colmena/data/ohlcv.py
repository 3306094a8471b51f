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
    "MAX_CSV_COLUMNS",
    "MAX_HEADER_BYTES",
    "MAX_TIMESTAMP_NS",
    "MIN_BAR_NS",
    "MIN_TIMESTAMP_NS",
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
#: Longest CSV header line, in bytes: a longer one is refused before it is parsed.
MAX_HEADER_BYTES: Final = 65_536
#: Most columns a CSV header may have.
MAX_CSV_COLUMNS: Final = 512
#: Earliest candle time accepted, ns since the epoch: 1970-01-01T00:00:00Z (the core's range).
MIN_TIMESTAMP_NS: Final[int] = _core.MIN_TIMESTAMP_NS
#: Latest candle time accepted, ns since the epoch: 2200-01-01T00:00:00Z (the core's range).
MAX_TIMESTAMP_NS: Final[int] = _core.MAX_TIMESTAMP_NS
#: Shortest step between consecutive candles, ns: one second.
MIN_BAR_NS: Final = NS_PER_SECOND

_NS_PER_UNIT: Final = {"s": NS_PER_SECOND, "ms": NS_PER_MS, "us": NS_PER_US, "ns": 1}
_UNIT_NAMES: Final = {
    "s": "seconds",
    "ms": "milliseconds",
    "us": "microseconds",
    "ns": "nanoseconds",
}
#: Integer timestamps below these magnitudes are seconds, milliseconds, microseconds; above, ns.
_UNIT_LIMITS: Final = (1e11, 1e14, 1e17)
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
        compressed ``.csv.gz``, ``.csv.bz2``, ``.csv.zst``, ``.csv.lz4``; lines may end in
        ``\\n``, ``\\r\\n`` or ``\\r``; the header line is at most :data:`MAX_HEADER_BYTES`
        bytes of UTF-8 text with at most :data:`MAX_CSV_COLUMNS` columns). Columns, matched
        case-insensitively (two columns that match the same name, e.g. ``close`` and ``Close``,
        are refused as ambiguous), extra columns ignored:

        - the timestamp, the first of ``ts``, ``timestamp``, ``open_time``, ``time``, ``date``
          present: the candle's open time, as an Arrow timestamp or date (any unit; a zone-less
          value is taken as UTC), an ISO 8601 string (``2023-03-01 00:00:00+00:00``,
          ``2023-03-01T00:00:00Z``, ``2023-03-01``; zone-less strings are taken as UTC), or an
          integer count since the Unix epoch whose unit is inferred from its size: below 1e11
          seconds, below 1e14 milliseconds, below 1e17 microseconds, otherwise nanoseconds.
          Every integer of the column must fall in the same size class (a file in seconds with
          one row in milliseconds is refused, naming that row). (So millisecond times before
          1973-03-03 would be misread as seconds.) Times must lie in [1970-01-01, 2200-01-01]
          (:data:`MIN_TIMESTAMP_NS`, :data:`MAX_TIMESTAMP_NS`: the core's range; a NaT, stored
          as the smallest int64, is outside it), and consecutive candles must be at least one
          second apart (:data:`MIN_BAR_NS`).
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
        apply, when the file is missing or unreadable, has an unsupported extension, a CSV
        header that is too long, has too many columns or is not UTF-8, lacks a column or has
        an ambiguous one, has no data rows, holds a missing (null/empty), unparsable or
        non-UTF-8 value, or breaks a candle rule: timestamps unsorted, duplicated, outside
        1970..2200, in mixed units or less than one second apart, a price NaN, infinite or
        <= 0, volume NaN, infinite or < 0, high < low, open or close outside [low, high]. No
        other exception escapes for a bad file (anything pyarrow or NumPy raises on one is
        turned into a DataValidationError naming the file).
    """
    file = Path(path)
    try:
        return _load(file)
    except DataValidationError:
        raise
    except (OSError, ValueError, ArithmeticError, LookupError, csv.Error, pa.ArrowException) as exc:
        # Whatever a hostile file may still provoke deeper down: one line naming the file.
        raise DataValidationError(
            f"{file}: cannot read the candles: {type(exc).__name__}: {_one_line(exc)}", path=file
        ) from exc


def _load(file: Path) -> Candles:
    is_parquet = _check_file(file)
    names = _parquet_columns(file) if is_parquet else _csv_header(file)
    column = _resolve_columns(file, names)
    table = _read_columns(file, is_parquet, list(dict.fromkeys(column.values())))
    if table.num_rows == 0:
        raise DataValidationError(f"{file}: the file has no data rows", path=file)
    ts_name = column["ts"]
    ts = _timestamps_ns(_combined(table, ts_name), file, ts_name)
    values = {c: _float64(_combined(table, column[c]), file, column[c]) for c in PRICE_COLUMNS}

    violation = _core.find_invalid_ohlcv(
        ts, values["open"], values["high"], values["low"], values["close"], values["volume"]
    )
    if violation is not None:
        name = column[violation.field]
        detail = violation.detail
        if violation.rule == "ts_not_increasing":
            detail = "timestamps must be strictly increasing (sorted, no duplicates): " + detail
        raise DataValidationError(
            f"{file}: data row {violation.row} (0-based), column {name!r}: {detail}",
            path=file,
            row=violation.row,
            column=name,
        )
    _check_bar_lengths(ts, file, ts_name)

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


def _one_line(exc: BaseException) -> str:
    """The exception's text on one line (pyarrow's messages span several), at most 300 chars."""
    text = " ".join(str(exc).split())
    return text if len(text) <= 300 else text[:297] + "..."


def _check_file(file: Path) -> bool:
    """True for Parquet, False for CSV; DataValidationError when the path is not a candle file."""
    name = file.name.lower()
    is_parquet = name.endswith(_PARQUET_SUFFIXES)
    if not (is_parquet or name.endswith(_CSV_SUFFIXES)):
        raise DataValidationError(
            f"{file}: unsupported file type; expected one of "
            f"{', '.join(_PARQUET_SUFFIXES + _CSV_SUFFIXES)}",
            path=file,
        )
    if not file.exists():
        raise DataValidationError(f"{file}: file not found", path=file)
    if not file.is_file():
        raise DataValidationError(f"{file}: not a regular file", path=file)
    return is_parquet


def _parquet_columns(file: Path) -> list[str]:
    try:
        return list(pq.read_schema(file).names)
    except (OSError, pa.ArrowException) as exc:
        raise DataValidationError(
            f"{file}: cannot read as Parquet: {_one_line(exc)}", path=file
        ) from exc


def _resolve_columns(file: Path, names: list[str]) -> dict[str, str]:
    """The file's column for "ts" and each of PRICE_COLUMNS (names as spelled in the file)."""
    spellings: dict[str, list[str]] = {}
    for name in names:
        spellings.setdefault(name.strip().lower(), []).append(name)
    ts_key = next((c for c in TIMESTAMP_COLUMNS if c in spellings), None)
    if ts_key is None:
        raise DataValidationError(
            f"{file}: missing the timestamp column: expected one of "
            f"{', '.join(TIMESTAMP_COLUMNS)}; the file has {', '.join(names)}",
            path=file,
        )
    missing = [c for c in PRICE_COLUMNS if c not in spellings]
    if missing:
        raise DataValidationError(
            f"{file}: missing column {missing[0]!r} (required: {', '.join(PRICE_COLUMNS)}); "
            f"the file has {', '.join(names)}",
            path=file,
            column=missing[0],
        )
    for key in (ts_key, *PRICE_COLUMNS):
        found = spellings[key]
        if len(found) > 1:
            raise DataValidationError(
                f"{file}: column {found[1]!r} duplicates column {found[0]!r} (names are matched "
                f"case-insensitively: both name the {key!r} column); keep one of them",
                path=file,
                column=found[1],
            )
    return {"ts": spellings[ts_key][0], **{c: spellings[c][0] for c in PRICE_COLUMNS}}


def _read_columns(file: Path, is_parquet: bool, columns: list[str]) -> pa.Table:
    try:
        if is_parquet:
            return pq.read_table(file, columns=columns)
        return _read_csv(file, columns)
    except DataValidationError:
        raise
    except (OSError, pa.ArrowException) as exc:
        kind = "Parquet" if is_parquet else "CSV"
        raise DataValidationError(
            f"{file}: cannot read as {kind}: {_one_line(exc)}", path=file
        ) from exc


def _read_csv(file: Path, columns: list[str]) -> pa.Table:
    """The needed columns as raw bytes: decoding, conversion and their errors come per column."""
    convert = pacsv.ConvertOptions(
        column_types=dict.fromkeys(columns, pa.binary()),
        include_columns=columns,
        strings_can_be_null=False,
    )
    try:
        return pacsv.read_csv(file, convert_options=convert)
    except pa.ArrowInvalid as exc:
        row = _first_malformed_csv_row(file, convert)
        if row is None:
            raise
        raise DataValidationError(
            f"{file}: data row {row} (0-based): malformed CSV row: {_one_line(exc)}",
            path=file,
            row=row,
        ) from exc


def _csv_header(file: Path) -> list[str]:
    """The column names of the first line, reading at most MAX_HEADER_BYTES + 1 bytes."""
    chunks: list[bytes] = []
    size = 0
    with pa.input_stream(str(file)) as stream:  # decompresses by extension
        while size <= MAX_HEADER_BYTES:
            chunk = stream.read(MAX_HEADER_BYTES + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
            if b"\n" in chunk or b"\r" in chunk:
                break
    head = b"".join(chunks)
    ends = [i for i in (head.find(b"\n"), head.find(b"\r")) if i >= 0]
    end = min(ends) if ends else len(head)
    if end > MAX_HEADER_BYTES:
        raise DataValidationError(
            f"{file}: the header line is longer than {MAX_HEADER_BYTES} bytes; a candle file "
            f"has at most {MAX_CSV_COLUMNS} columns with short names",
            path=file,
        )
    try:
        first_line = head[:end].decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataValidationError(
            f"{file}: the header line is not UTF-8 text ({exc.reason} at byte {exc.start})",
            path=file,
        ) from None
    if not first_line.strip():
        raise DataValidationError(f"{file}: the file is empty (no header row)", path=file)
    try:
        names = next(csv.reader([first_line]))
    except csv.Error as exc:
        raise DataValidationError(
            f"{file}: cannot parse the header line: {exc}", path=file
        ) from None
    if len(names) > MAX_CSV_COLUMNS:
        raise DataValidationError(
            f"{file}: the header has {len(names)} columns; at most {MAX_CSV_COLUMNS} are supported",
            path=file,
        )
    return names


def _first_non_utf8_line(file: Path) -> int | None:
    """1-based physical line of the first line that is not UTF-8 (any line-ending style), or
    None. Reads the whole file: only on the error path."""
    with pa.input_stream(str(file)) as stream:  # decompresses by extension
        data = stream.read()
    for number, line in enumerate(data.splitlines(), start=1):
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            return number
    return None


def _first_malformed_csv_row(file: Path, convert: pacsv.ConvertOptions) -> int | None:
    """Re-read serially to learn which physical line broke the parser."""
    # pyarrow decodes a bad row's text before it calls the handler, so a row that is not UTF-8
    # would raise inside pyarrow (printed as an ignored exception) and name no row: find it first.
    non_utf8 = _first_non_utf8_line(file)
    if non_utf8 is not None:
        return non_utf8 - 2  # physical line 1 is the header
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


def _as_text(array: pa.Array, file: Path, column: str) -> pa.Array:
    """Binary cells (how CSV columns are read) decoded as UTF-8; other types unchanged."""
    if not (pa.types.is_binary(array.type) or pa.types.is_large_binary(array.type)):
        return array

    def decode(part: pa.Array) -> pa.Array:
        return pc.cast(part, pa.string())

    try:
        return decode(array)
    except pa.ArrowInvalid:
        row = _first_failing_row(array, decode)
        cell = array[row].as_py()
        raise _cell_error(file, row, column, f"not UTF-8 text: {cell[:40]!r}") from None


def _float64(array: pa.Array, file: Path, column: str) -> NDArray[np.float64]:
    if array.null_count:
        row = _first_null(array)
        raise _cell_error(file, row, column, "missing value")
    array = _as_text(array, file, column)
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
    """The column as int64 ns since the epoch, each in [MIN_TIMESTAMP_NS, MAX_TIMESTAMP_NS]."""
    if array.null_count:
        raise _cell_error(file, _first_null(array), column, "missing timestamp")
    array = _as_text(array, file, column)
    ns = _converted_timestamps_ns(array, file, column)
    outside = np.flatnonzero((ns < MIN_TIMESTAMP_NS) | (ns > MAX_TIMESTAMP_NS))
    if outside.size:
        row = int(outside[0])
        value = int(ns[row])
        raise _cell_error(
            file,
            row,
            column,
            f"timestamp {value} ns ({_utc_text(value)}) is outside the supported range "
            "1970-01-01T00:00:00Z .. 2200-01-01T00:00:00Z",
        )
    return ns


def _utc_text(ns: int) -> str:
    if ns == np.iinfo(np.int64).min:
        return "NaT, not a time"
    unit = "s" if ns % 1_000_000_000 == 0 else "ns"
    return f"{np.datetime64(ns, 'ns').astype(f'datetime64[{unit}]')}Z"


def _converted_timestamps_ns(array: pa.Array, file: Path, column: str) -> NDArray[np.int64]:
    kind = array.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        text = pc.utf8_trim_whitespace(array)
        if pc.all(pc.match_substring_regex(text, r"^[+-]?\d+$")).as_py():

            def parse(part: pa.Array) -> pa.Array:
                return pc.cast(part, pa.int64())

            try:
                ints = parse(text)
            except pa.ArrowInvalid:
                row = _first_failing_row(text, parse)
                raise _cell_error(
                    file, row, column, f"timestamp {text[row].as_py()} is out of the int64 range"
                ) from None
            return _integer_timestamps_ns(ints, file, column)
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
                file,
                row,
                column,
                f"timestamp {_raw_time(array, row)} is out of the int64 ns range",
            ) from None
        return _int64_numpy(pc.cast(ns, pa.int64()))
    raise DataValidationError(
        f"{file}: column {column!r} has type {kind}; expected timestamps (Arrow timestamp or "
        "date, ISO 8601 strings, or integers since the epoch)",
        path=file,
        column=column,
    )


def _raw_time(array: pa.Array, row: int) -> str:
    """An Arrow timestamp or date cell as its stored count and unit (Python's datetime cannot
    hold every such value)."""
    kind = array.type
    if pa.types.is_date32(kind):
        return f"{pc.cast(array.slice(row, 1), pa.int32())[0].as_py()} days since the epoch"
    unit = "ms" if pa.types.is_date64(kind) else kind.unit
    return f"{pc.cast(array.slice(row, 1), pa.int64())[0].as_py()} {unit} since the epoch"


def _integer_timestamps_ns(ints: pa.Array, file: Path, column: str) -> NDArray[np.int64]:
    values = _int64_numpy(ints)
    units = list(_NS_PER_UNIT)
    # The size class of every value: 0 seconds, 1 milliseconds, 2 microseconds, 3 nanoseconds.
    classes = np.searchsorted(_UNIT_LIMITS, np.abs(values.astype(np.float64)), side="right")
    counts = np.bincount(classes, minlength=len(units))
    common = int(np.argmax(counts))
    if counts[common] != len(values):
        row = int(np.flatnonzero(classes != common)[0])
        raise _cell_error(
            file,
            row,
            column,
            f"timestamp {values[row]} looks like {_UNIT_NAMES[units[int(classes[row])]]} but "
            f"the column's other timestamps look like {_UNIT_NAMES[units[common]]}: every "
            "integer timestamp must have the same unit",
        )
    unit = units[common]
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


def _check_bar_lengths(ts: NDArray[np.int64], file: Path, column: str) -> None:
    """Consecutive candles (already strictly increasing) at least MIN_BAR_NS apart."""
    short = np.flatnonzero(np.diff(ts) < MIN_BAR_NS)
    if short.size:
        row = int(short[0]) + 1
        raise _cell_error(
            file,
            row,
            column,
            f"timestamp {_utc_text(int(ts[row]))} is only {int(ts[row] - ts[row - 1])} ns after "
            "the previous row's; candles less than one second apart are not supported (a "
            "timestamp in the wrong unit?)",
        )


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
