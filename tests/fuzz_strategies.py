"""Hostile inputs of the fuzz suite and the property each must satisfy, shared by the fuzz tests
(``tests/test_fuzz_*.py``) and the reliability run (``bench/reliability.py``).

Three targets, each a hypothesis strategy of picklable inputs and a ``check_*`` function that runs
one input and returns how it ended (``"ok"`` or the name of the documented error it raised):

- ``loader``: mutated candle files (CSV, Parquet; :func:`candle_files`) through
  :func:`colmena.load_ohlcv` (:func:`check_candle_file`);
- ``config``: every setting a user can give, decoded from hostile documents
  (:func:`config_documents`, :func:`check_config_document`);
- ``core``: every public entry point of the compiled core with hostile arrays and scalars
  (:func:`core_calls`, :func:`check_core_call`).

A ``check_*`` function raises :class:`PropertyViolationError` when a result breaks the target's
property, and lets any undocumented exception escape: the callers count those as failures. An
input that crashes the interpreter can only be seen from another process: :func:`run_isolated`
runs inputs in a child process with a memory cap and a timeout per input.
"""

from __future__ import annotations

import bz2
import dataclasses
import gzip
import io
import math
import multiprocessing as mp
import os
import resource
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import strategies as st


class PropertyViolationError(AssertionError):
    """A call returned (or raised) something its documentation rules out."""


def under_asan() -> bool:
    """True when AddressSanitizer is loaded into this process (the sanitizer CI run)."""
    return "asan" in os.environ.get("LD_PRELOAD", "")


# ================================================================ loader: mutated candle files

NS = 1_000_000_000
T0 = 1_677_628_800  # 2023-03-01T00:00:00Z, in seconds
MIN_TS_NS = 0
MAX_TS_NS = 7_258_118_400 * NS  # 2200-01-01T00:00:00Z
UNIT_NS = {"s": NS, "ms": 10**6, "us": 10**3, "ns": 1}

HEADER = ("open_time", "open", "high", "low", "close", "volume")
HOSTILE_CELLS = (
    "",
    " ",
    "nan",
    "NaN",
    "-nan",
    "inf",
    "-inf",
    "Infinity",
    "1e309",
    "-1e309",
    "1e-320",
    "-1",
    "-0",
    "0",
    "0.0",
    "true",
    "False",
    "0x10",
    "1,5",
    " 7 ",
    "1_000",
    "null",
    "N/A",
    "NaT",
    "١٢٣",
    "99999999999999999999999999",
    "-9223372036854775809",
    "9223372036854775807",
    "-9223372036854775808",
    "1e18",
    '"5"',
    "'5'",
    "5 5",
    "+5",
    "\x00",
    "\ufeff1",
    "é",
    "2023-03-01",
    "2023-03-01T00:00:00Z",
    "1969-12-31 23:59:59",
    "2200-01-01 00:00:01",
    "0001-01-01",
    "9999-12-31T23:59:59Z",
    "2023-02-30",
    "24:00",
)
TIME_CELLS = (
    "2023-03-01 00:00:00+00:00",
    "2023-03-01T00:00:00Z",
    "2023-03-01",
    "2023-03-01 00:00:00",
    "1970-01-01T00:00:00Z",
    "1969-12-31T23:59:59Z",
    "2200-01-01T00:00:00Z",
    "2200-01-01T00:00:00.000000001Z",
    "2262-04-11T23:47:16Z",
    "1677-09-21T00:12:44Z",
    "0",
    "-1",
    "1",
    "99999999999",
    "100000000000",
    "99999999999999",
    "100000000000000",
    "99999999999999999",
    "100000000000000000",
    "9223372036854775807",
    "-9223372036854775808",
    "9223372036854775808",
    "1677628800",
    "1677628800000",
    "1677628800000000",
    "1677628800000000000",
    "1677628800.5",
    "2023-03-01T00:00:00+25:00",
    "2023-13-01",
)
HEADER_NAMES = (
    "ts",
    "timestamp",
    "open_time",
    "time",
    "date",
    "TS",
    "Timestamp",
    "OPEN_TIME",
    " time ",
    "open",
    "Open",
    "OPEN",
    "high",
    "High",
    "low",
    "LOW",
    "close",
    "Close",
    "volume",
    "Volume",
    "vol",
    "",
    '"close"',
    "close ",
    "extra",
    "open\x00",
    "ópen",
)


@dataclasses.dataclass(frozen=True)
class CandleFile:
    """One hostile candle file: its name (suffix chooses the reader) and its bytes; ``valid``
    tells that no mutation was applied (the file must then load exactly ``expected``)."""

    name: str
    data: bytes
    valid: bool
    expected: tuple[tuple[int, ...], tuple[float, ...], ...] | None = None
    mutations: tuple[str, ...] = ()

    def __repr__(self) -> str:
        return (
            f"CandleFile(name={self.name!r}, mutations={self.mutations!r}, "
            f"data={self.data[:2000]!r}{'...' if len(self.data) > 2000 else ''})"
        )


@st.composite
def _valid_candles(draw: st.DrawFn) -> dict[str, list[Any]]:
    n = draw(st.integers(1, 8))
    step = draw(st.sampled_from([1, 60, 300, 3600, 86400]))
    # from 1973-03-03: earlier millisecond times read as seconds (documented)
    start = draw(st.integers(10**8, 7_258_118_400 - 30 * 86400))
    ts = [start + i * step * draw(st.integers(1, 3)) for i in range(n)]
    ts = sorted(set(ts))
    for i in range(1, len(ts)):
        if ts[i] <= ts[i - 1]:
            ts[i] = ts[i - 1] + step
    price = st.floats(1e-6, 1e9, allow_nan=False, allow_infinity=False)
    rows: dict[str, list[Any]] = {c: [] for c in HEADER}
    for t in ts:
        a, b, c, d = sorted(draw(price) for _ in range(4))
        o, cl = draw(st.permutations([b, c]))
        rows["open_time"].append(t)
        rows["open"].append(o)
        rows["high"].append(d)
        rows["low"].append(a)
        rows["close"].append(cl)
        rows["volume"].append(draw(st.floats(0.0, 1e12, allow_nan=False, allow_infinity=False)))
    return rows


def _cell(value: Any) -> str:
    return repr(float(value)) if isinstance(value, float) else str(value)


@st.composite
def _csv_file(draw: st.DrawFn, mutate: bool = True) -> CandleFile:
    rows = draw(_valid_candles())
    n = len(rows["open_time"])
    unit = draw(st.sampled_from(["s", "ms", "us", "ns", "iso"]))
    scale = {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}
    times: list[str]
    if unit == "iso":
        times = [str(np.datetime64(t, "s")).replace("T", " ") + "+00:00" for t in rows["open_time"]]
    else:
        times = [str(t * scale[unit]) for t in rows["open_time"]]
    header = list(HEADER)
    table = [times] + [[_cell(v) for v in rows[c]] for c in HEADER[1:]]
    mutations: list[str] = []
    cells = [[table[c][r] for c in range(len(header))] for r in range(n)]

    # structural mutations (on the table of text cells)
    for _ in range(draw(st.integers(0, 3)) if mutate else 0):
        kind = draw(
            st.sampled_from(
                [
                    "cell",
                    "time",
                    "header",
                    "drop_col",
                    "extra_col",
                    "swap_rows",
                    "dup_row",
                    "short_row",
                    "long_row",
                    "mixed_units",
                    "delete_row",
                    "quote",
                ]
            )
        )
        if not cells:
            break
        r = draw(st.integers(0, len(cells) - 1))
        row = cells[r]
        c = draw(st.integers(0, max(len(header), 1) - 1))
        if kind == "cell" and c < len(row):
            row[c] = draw(st.sampled_from(HOSTILE_CELLS) | st.text(max_size=12))
        elif kind == "time" and row:
            row[0] = draw(st.sampled_from(TIME_CELLS))
        elif kind == "header" and c < len(header):
            header[c] = draw(st.sampled_from(HEADER_NAMES) | st.text(max_size=8))
        elif kind == "drop_col" and c < len(header):
            del header[c]
            for other in cells:
                if c < len(other):
                    del other[c]
        elif kind == "extra_col":
            header.insert(c, draw(st.sampled_from(HEADER_NAMES)))
            for other in cells:
                other.insert(c, draw(st.sampled_from(HOSTILE_CELLS)))
        elif kind == "swap_rows" and len(cells) > 1:
            cells[0], cells[-1] = cells[-1], cells[0]
        elif kind == "dup_row":
            cells.insert(r, list(row))
        elif kind == "short_row" and row:
            cells[r] = row[: draw(st.integers(0, len(row) - 1))]
        elif kind == "long_row":
            cells[r] = [
                *row,
                *draw(st.lists(st.sampled_from(HOSTILE_CELLS), min_size=1, max_size=3)),
            ]
        elif kind == "mixed_units" and unit != "iso" and row:
            other_unit = draw(st.sampled_from(["s", "ms", "us", "ns"]))
            if other_unit == unit:
                continue
            row[0] = str(rows["open_time"][min(r, n - 1)] * scale[other_unit])
        elif kind == "delete_row":
            del cells[r]
        elif kind == "quote" and c < len(row):
            row[c] = '"' + row[c] + '"'
        else:
            continue
        mutations.append(kind)
    eol = draw(st.sampled_from(["\n", "\r\n", "\r", "mixed"]))
    lines = [",".join(header)] + [",".join(row) for row in cells]
    if eol == "mixed":
        text = "".join(line + draw(st.sampled_from(["\n", "\r\n", "\r"])) for line in lines)
    else:
        text = eol.join(lines) + draw(st.sampled_from([eol, ""]))
    # One-line files read the same with or without a newline; the others keep "\n" as valid.
    if eol in ("\r", "mixed"):
        pass  # documented: lines may end in \r; kept as valid
    encoding = draw(
        st.sampled_from(["utf-8", "utf-8", "utf-8-sig", *(["utf-16", "latin-1"] if mutate else [])])
    )
    try:
        data = text.encode(encoding)
    except UnicodeEncodeError:
        data = text.encode("utf-8", "surrogatepass")
    if encoding in ("utf-16",) or (encoding == "latin-1" and data != text.encode("utf-8")):
        mutations.append(f"encoding={encoding}")
    if mutate:
        data, byte_mutations = draw(_byte_mutations(data))
        mutations.extend(byte_mutations)
    suffixes = [".csv", ".csv", ".csv", ".CSV", ".csv.gz", ".csv.bz2"] + [".txt"] * mutate
    suffix = draw(st.sampled_from(suffixes))
    if suffix == ".csv.gz":
        data = gzip.compress(data, mtime=0)
    elif suffix == ".csv.bz2":
        data = bz2.compress(data)
    elif suffix == ".txt":
        mutations.append("suffix=.txt")
    if mutate and draw(st.booleans()) and draw(st.booleans()):
        data, more = draw(_byte_mutations(data, force=True))
        mutations.extend(f"compressed:{m}" for m in more)
    valid = not mutations
    expected = None
    if valid:
        expected = (
            tuple(t * NS for t in rows["open_time"]),
            *(tuple(float(v) for v in rows[c]) for c in HEADER[1:]),
        )
    return CandleFile("candles" + suffix, data, valid, expected, tuple(mutations))


@st.composite
def _byte_mutations(draw: st.DrawFn, data: bytes, force: bool = False) -> tuple[bytes, list[str]]:
    done: list[str] = []
    count = draw(st.integers(1 if force else 0, 3)) if force or draw(st.booleans()) else 0
    for _ in range(count):
        kind = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "bom", "nul"]))
        pos = draw(st.integers(0, len(data)))
        if kind == "flip" and data:
            pos = min(pos, len(data) - 1)
            data = data[:pos] + bytes([data[pos] ^ draw(st.integers(1, 255))]) + data[pos + 1 :]
        elif kind == "insert":
            data = data[:pos] + draw(st.binary(min_size=1, max_size=4)) + data[pos:]
        elif kind == "delete" and data:
            data = data[:pos] + data[pos + draw(st.integers(1, 4)) :]
        elif kind == "truncate":
            data = data[:pos]
        elif kind == "bom":
            data = b"\xef\xbb\xbf" + data
        elif kind == "nul":
            data = data[:pos] + b"\x00" + data[pos:]
        else:
            continue
        done.append(kind)
    return data, done


@st.composite
def _parquet_file(draw: st.DrawFn, mutate: bool = True) -> CandleFile:
    rows = draw(_valid_candles())
    n = len(rows["open_time"])
    mutations: list[str] = []
    ts_kinds = ["int_s", "int_ms", "int_ns", "ts_s", "ts_ms", "ts_ns_utc", "string"]
    ts_kind = draw(st.sampled_from(ts_kinds + ["date32", "float", "bool"] * mutate))
    t = rows["open_time"]
    if ts_kind == "int_s":
        ts = pa.array(t, pa.int64())
    elif ts_kind == "int_ms":
        ts = pa.array([v * 1000 for v in t], pa.int64())
    elif ts_kind == "int_ns":
        ts = pa.array([v * NS for v in t], pa.int64())
    elif ts_kind == "ts_s":
        ts = pa.array(t, pa.timestamp("s"))
    elif ts_kind == "ts_ms":
        ts = pa.array([v * 1000 for v in t], pa.timestamp("ms"))
    elif ts_kind == "ts_ns_utc":
        ts = pa.array([v * NS for v in t], pa.timestamp("ns", tz="UTC"))
    elif ts_kind == "date32":
        ts = pa.array([v // 86400 for v in t], pa.date32())
        if len(set(v // 86400 for v in t)) != n or any(v % 86400 for v in t):
            mutations.append("date32-collapses-times")
        rows["open_time"] = [v // 86400 * 86400 for v in t]
    elif ts_kind == "string":
        ts = pa.array([str(np.datetime64(v, "s")) + "Z" for v in t], pa.string())
    elif ts_kind == "float":
        ts = pa.array([float(v) for v in t], pa.float64())
        mutations.append("float-times")
    else:
        ts = pa.array([bool(v % 2) for v in t], pa.bool_())
        mutations.append("bool-times")
    columns: dict[str, pa.Array] = {"open_time": ts}
    for c in HEADER[1:]:
        kinds = ["f64", "f64", "string"] + ["f32", "decimal", "int", "bool"] * mutate
        kind = draw(st.sampled_from(kinds))
        values = rows[c]
        if kind == "f64":
            columns[c] = pa.array(values, pa.float64())
        elif kind == "f32":
            columns[c] = pa.array(values, pa.float32())
            mutations.append(f"{c}:float32")  # rounding may break high >= low etc.
        elif kind == "string":
            columns[c] = pa.array([repr(v) for v in values], pa.string())
        elif kind == "decimal" or kind == "int":
            columns[c] = pa.array([int(v) for v in values], pa.int64())
            mutations.append(f"{c}:int")
        else:
            columns[c] = pa.array([bool(v) for v in values], pa.bool_())
            mutations.append(f"{c}:bool")
    names = list(columns)
    arrays = list(columns.values())
    for _ in range(draw(st.integers(0, 3)) if mutate else 0):
        kind = draw(st.sampled_from(["null", "nan", "rename", "drop", "dup", "reverse", "value"]))
        c = draw(st.integers(0, len(names) - 1))
        r = draw(st.integers(0, n - 1))
        values = arrays[c].to_pylist()
        if kind == "null":
            values[r] = None
            arrays[c] = pa.array(values, arrays[c].type)
        elif kind == "nan" and pa.types.is_floating(arrays[c].type):
            values[r] = draw(st.sampled_from([math.nan, math.inf, -math.inf, -1.0, 0.0, 1e308]))
            arrays[c] = pa.array(values, arrays[c].type)
        elif kind == "value" and pa.types.is_integer(arrays[c].type):
            values[r] = draw(st.sampled_from([-(2**63), 2**63 - 1, -1, 0, 10**17, 10**11]))
            arrays[c] = pa.array(values, arrays[c].type)
        elif kind == "rename":
            names[c] = draw(st.sampled_from(HEADER_NAMES))
        elif kind == "drop" and len(names) > 1:
            del names[c], arrays[c]
        elif kind == "dup":
            names.append(names[c].upper())
            arrays.append(arrays[c])
        elif kind == "reverse" and n > 1:
            arrays = [a[::-1] for a in arrays]
        else:
            continue
        mutations.append(kind)
    table = pa.Table.from_arrays(arrays, names=names)
    sink = io.BytesIO()
    pq.write_table(table, sink, row_group_size=draw(st.integers(1, 8)))
    data = sink.getvalue()
    if mutate:
        data, byte_mutations = draw(_byte_mutations(data))
        mutations.extend(byte_mutations)
    valid = not mutations
    expected = None
    if valid:
        expected = (
            tuple(v * NS for v in rows["open_time"]),
            *(tuple(float(v) for v in rows[c]) for c in HEADER[1:]),
        )
    name = draw(st.sampled_from(["candles.parquet", "candles.pq", "candles.PARQUET"]))
    return CandleFile(name, data, valid, expected, tuple(mutations))


def candle_files(mutate: bool = True) -> st.SearchStrategy[CandleFile]:
    """Small valid CSV and Parquet candle files, mutated in their structure (header names, case
    and duplicates, column counts, hostile cells, timestamps in s/ms/us/ns, mixed units, years
    out of range, unsorted or duplicated rows), text (line endings, BOM, encodings) and bytes
    (flips, inserts, deletions, truncation, compression). ``mutate=False``: valid files only
    (CSV line endings and BOMs as documented, every timestamp form, compression)."""
    return st.one_of(_csv_file(mutate), _parquet_file(mutate))


def check_candle_file(file: CandleFile, folder: Path | None = None) -> str:
    """Write ``file`` and load it: valid candles (``"ok"``) or a DataValidationError naming the
    file (``"DataValidationError"``); anything else escapes or is a PropertyViolationError."""
    from colmena.data.ohlcv import DataValidationError, load_ohlcv

    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        path = Path(tmp) / file.name
        path.write_bytes(file.data)
        ignored: list[Any] = []
        hook, sys.unraisablehook = sys.unraisablehook, ignored.append
        try:
            candles = load_ohlcv(path)
        except DataValidationError as exc:
            _check_unraisable(ignored)
            if str(path) not in str(exc) or exc.path != path:
                raise PropertyViolationError(f"the error does not name the file: {exc}") from exc
            if file.valid:
                raise PropertyViolationError(f"a valid file was refused: {exc}") from exc
            return "DataValidationError"
        finally:
            sys.unraisablehook = hook
        _check_unraisable(ignored)
        _check_candles(candles, path)
        if file.expected is not None:
            got = (
                candles.ts,
                candles.open,
                candles.high,
                candles.low,
                candles.close,
                candles.volume,
            )
            for name, want, have in zip(("ts", *HEADER[1:]), file.expected, got, strict=True):
                if not np.array_equal(np.asarray(want), have):
                    raise PropertyViolationError(
                        f"{name}: loaded {have!r}, the file holds {want!r}"
                    )
        return "ok"


def is_known_unraisable(info: Any) -> bool:
    """The loader's known bug: a malformed CSV row that is not UTF-8 makes pyarrow's
    invalid-row callback raise UnicodeDecodeError, printed as "Exception ignored in
    _first_malformed_csv_row.<locals>.record" (tests/test_fuzz_loader.py, xfail)."""
    return isinstance(info.exc_value, UnicodeDecodeError) and "_first_malformed_csv_row" in str(
        getattr(info.object, "__qualname__", info.object)
    )


def _check_unraisable(ignored: list[Any]) -> None:
    """An exception the loader let escape into "Exception ignored in ..." on stderr."""
    for info in ignored:
        if not is_known_unraisable(info):
            raise PropertyViolationError(
                f"an exception printed as 'Exception ignored': {info.exc_type.__name__}: "
                f"{info.exc_value} in {info.object!r}"
            )


def _check_candles(candles: Any, path: Path) -> None:
    from colmena.data.ohlcv import MIN_BAR_NS

    n = len(candles)
    cols = (candles.ts, candles.open, candles.high, candles.low, candles.close, candles.volume)
    problems = []
    if n < 1:
        problems.append("no rows")
    for name, col, dtype in zip(("ts", *HEADER[1:]), cols, ("i8", *["f8"] * 5), strict=True):
        if col.shape != (n,) or col.dtype != np.dtype(dtype) or col.flags.writeable:
            problems.append(f"{name}: shape {col.shape} dtype {col.dtype} writeable")
    ts, o, h, lo, c, v = cols
    if n and not (ts[0] >= MIN_TS_NS and ts[-1] <= MAX_TS_NS):
        problems.append(f"times outside 1970..2200: {ts[0]}..{ts[-1]}")
    if n > 1 and not (np.diff(ts) >= MIN_BAR_NS).all():
        problems.append("times not increasing by at least one second")
    for name, col in (("open", o), ("high", h), ("low", lo), ("close", c)):
        if not (np.isfinite(col).all() and (col > 0).all()):
            problems.append(f"{name}: not finite and > 0")
    if not (np.isfinite(v).all() and (v >= 0).all()):
        problems.append("volume: not finite and >= 0")
    if not ((lo <= o) & (lo <= c) & (o <= h) & (c <= h)).all():
        problems.append("a row breaks low <= open, close <= high")
    if (candles.interval_seconds is None) != (n < 2):
        problems.append(f"interval_seconds {candles.interval_seconds} for {n} rows")
    if candles.source != path:
        problems.append(f"source {candles.source} is not {path}")
    if problems:
        raise PropertyViolationError("; ".join(problems))


# ================================================================ config: hostile settings


def config_classes() -> dict[str, type[msgspec.Struct]]:
    """Every settings struct a user can give, by name (the CLI's ``--config`` file is a
    BacktestConfig, which nests all the others)."""
    from colmena.backtest.engine import BacktestConfig
    from colmena.execution.simulation import ExecutionSettings
    from colmena.features.market_state import FeatureSpec
    from colmena.features.regime import RegimeConfig
    from colmena.model.decision import DecisionConfig
    from colmena.model.vae import VAEConfig
    from colmena.risk.config import RiskConfig
    from colmena.training.config import EvolutionConfig, TrainConfig

    classes: list[type[msgspec.Struct]] = [
        RiskConfig,
        ExecutionSettings,
        FeatureSpec,
        RegimeConfig,
        DecisionConfig,
        VAEConfig,
        EvolutionConfig,
        TrainConfig,
        BacktestConfig,
    ]
    return {c.__name__: c for c in classes}


@dataclasses.dataclass(frozen=True)
class ConfigDocument:
    """A settings document for ``cls_name``: a JSON-like object (``doc``), decoded with
    ``msgspec.convert`` or as JSON text (``via``); ``mutated`` lists the changed field paths."""

    cls_name: str
    doc: Any
    via: str
    mutated: tuple[tuple[str, ...], ...]


_SCALARS = st.one_of(
    st.booleans(),
    st.none(),
    st.integers(-(2**70), 2**70),
    st.sampled_from([0, 1, -1, 2, 2**31, 2**53 + 1, 2**63 - 1, 2**63, -(2**63), 2**64]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 5e-324, 1e-300, 0.5, 1.0, 1.0 - 1e-16, 1e308, math.nan, math.inf]),
    st.text(max_size=10),
    st.sampled_from(["", "1", "1.5", "nan", "inf", "4h", "0m", "15m", "spot", "margin", "tanh"]),
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)


def _near(value: float) -> st.SearchStrategy[Any]:
    """Values at and around a bound: both sides of it, as int and float."""
    out: list[Any] = [value, math.nextafter(value, math.inf), math.nextafter(value, -math.inf)]
    if float(value).is_integer() and abs(value) < 2**62:
        out += [int(value), int(value) - 1, int(value) + 1]
    return st.sampled_from(out)


def _field_values(field: Any) -> st.SearchStrategy[Any]:
    """Hostile values for one field, weighted toward its own type and bounds."""
    t = field.type
    near: list[st.SearchStrategy[Any]] = []
    inner = getattr(t, "item_type", None) or t
    for bound in ("ge", "gt", "le", "lt"):
        value = getattr(inner, bound, None)
        if value is not None:
            near.append(_near(float(value)))
    if isinstance(t, (msgspec.inspect.TupleType, msgspec.inspect.VarTupleType)):
        item = st.one_of(_SCALARS, *near) if near else _SCALARS
        near.append(st.lists(item, max_size=5))
        near.append(st.lists(st.integers(-3, 3) | st.integers(1, 2**40), max_size=4))
    if isinstance(t, msgspec.inspect.LiteralType):
        near.append(st.sampled_from(list(t.values)))
    return st.one_of(_VALUES, *near) if near else _VALUES


@st.composite
def config_documents(draw: st.DrawFn) -> ConfigDocument:
    """A settings document: the defaults of a random settings struct with up to three fields
    (nested ones too) replaced by hostile values of any type, sometimes an unknown field or a
    document of the wrong type altogether."""
    classes = config_classes()
    name = draw(st.sampled_from(sorted(classes)))
    cls = classes[name]
    via = draw(st.sampled_from(["convert", "json"]))
    if draw(st.integers(0, 19)) == 0:
        return ConfigDocument(name, draw(_VALUES), via, (("$",),))
    doc = msgspec.to_builtins(cls())
    mutated: list[tuple[str, ...]] = []
    for _ in range(draw(st.integers(1, 3))):
        info: Any = msgspec.inspect.type_info(cls)
        node = doc
        path: list[str] = []
        while True:
            field = draw(st.sampled_from(info.fields))
            path.append(field.name)
            if isinstance(field.type, msgspec.inspect.StructType) and draw(st.booleans()):
                node = node.setdefault(field.name, {}) if isinstance(node, dict) else {}
                if not isinstance(node, dict):
                    break
                info = field.type
                continue
            if not isinstance(node, dict):
                break
            if draw(st.integers(0, 9)) == 0:
                key = draw(st.text(min_size=1, max_size=8))
                path[-1] = key
                node[key] = draw(_VALUES)
            elif draw(st.integers(0, 14)) == 0:
                node.pop(field.name, None)  # a missing field takes its default
                path = []
            else:
                node[field.name] = draw(_field_values(field))
            break
        if path:
            mutated.append(tuple(path))
    return ConfigDocument(name, doc, via, tuple(mutated))


def _documented_problems(value: Any, info: Any, path: str) -> list[str]:
    """Where a decoded struct breaks its declared types and bounds (msgspec.inspect)."""
    problems: list[str] = []
    for field in info.fields:
        v = getattr(value, field.name)
        problems += _type_problems(v, field.type, f"{path}.{field.name}")
    return problems


def _type_problems(v: Any, t: Any, where: str) -> list[str]:
    mi = msgspec.inspect
    if isinstance(t, mi.StructType):
        if not isinstance(v, t.cls):
            return [f"{where}: {type(v).__name__} is not {t.cls.__name__}"]
        return _documented_problems(v, t, where)
    if isinstance(t, mi.TupleType):
        if not isinstance(v, tuple) or len(v) != len(t.item_types):
            return [f"{where}: {v!r} is not a tuple of {len(t.item_types)}"]
        return [
            p
            for k, (x, it) in enumerate(zip(v, t.item_types, strict=True))
            for p in _type_problems(x, it, f"{where}[{k}]")
        ]
    if isinstance(t, mi.VarTupleType):
        if not isinstance(v, tuple):
            return [f"{where}: {v!r} is not a tuple"]
        return [p for k, x in enumerate(v) for p in _type_problems(x, t.item_type, f"{where}[{k}]")]
    if isinstance(t, mi.LiteralType):
        return [] if v in t.values else [f"{where}: {v!r} not in {t.values}"]
    if isinstance(t, mi.BoolType):
        return [] if isinstance(v, bool) else [f"{where}: {v!r} is not a bool"]
    if isinstance(t, mi.StrType):
        return [] if isinstance(v, str) else [f"{where}: {v!r} is not a str"]
    if isinstance(t, (mi.IntType, mi.FloatType)):
        want: tuple[type, ...] = (int,) if isinstance(t, mi.IntType) else (float, int)
        if isinstance(v, bool) or not isinstance(v, want):
            return [f"{where}: {v!r} is not a {want[0].__name__}"]
        bounded = (t.ge, t.gt, t.le, t.lt) != (None,) * 4
        if isinstance(t, mi.FloatType) and bounded and not math.isfinite(v):
            return [f"{where}: {v!r} is not finite"]
        for bound, ok in (
            ("ge", v >= (t.ge or 0)),
            ("gt", v > (t.gt or 0)),
            ("le", v <= (t.le or 0)),
            ("lt", v < (t.lt or 0)),
        ):
            if getattr(t, bound) is not None and not ok:
                return [f"{where}: {v!r} breaks {bound} {getattr(t, bound)}"]
        return []
    return []


def _extra_rules(value: Any) -> list[str]:
    """Rules stated in the settings' docstrings beyond their declared types and bounds."""
    from colmena.backtest.engine import BacktestConfig
    from colmena.execution.simulation import ExecutionSettings
    from colmena.model.decision import DecisionConfig, interval_seconds
    from colmena.model.vae import VAEConfig
    from colmena.risk.config import RiskConfig
    from colmena.training.config import EvolutionConfig, TrainConfig

    problems: list[str] = []
    if isinstance(value, BacktestConfig):
        for part in (value.execution, value.risk, value.training):
            problems += _extra_rules(part)
    elif isinstance(value, TrainConfig):
        for part in (value.vae, value.evolution, value.decision):
            problems += _extra_rules(part)
    elif isinstance(value, VAEConfig):
        if any(h < 1 for h in value.hidden):
            problems.append(f"VAEConfig.hidden {value.hidden}: documented 'each >= 1'")
    elif isinstance(value, EvolutionConfig):
        if not value.hidden or any(h < 1 for h in value.hidden):
            problems.append(f"EvolutionConfig.hidden {value.hidden}")
        if value.elite >= value.agents or value.tournament_size > value.agents:
            problems.append("EvolutionConfig: elite or tournament_size vs agents")
    elif isinstance(value, DecisionConfig):
        if not 1 <= interval_seconds(value.interval) <= 7 * 86400:
            problems.append(f"DecisionConfig.interval {value.interval!r}")
    elif isinstance(value, ExecutionSettings):
        value.to_core()  # documented: no other rule; a ValueError here is a violation
    elif isinstance(value, RiskConfig):
        value.to_core()  # documented: checks the remaining rules (ValueError naming the field)
    return problems


def _names_a_field(message: str, mutated: tuple[tuple[str, ...], ...]) -> bool:
    """The message names one of the changed fields (or its stem: ``stale_after`` for
    ``stale_after_seconds``), or the whole document (``$``) was changed."""
    for path in mutated:
        name = path[-1]
        stem = name.removesuffix("_seconds")
        if name == "$" or name in message or (stem != name and stem in message):
            return True
    return False


def check_config_document(document: ConfigDocument) -> str:
    """Decode ``document``: settings within their documented ranges (``"ok"``) or a msgspec
    error (``"ValidationError"``; ``"DecodeError"`` for JSON text that is not JSON) naming a
    changed field."""
    import json

    cls = config_classes()[document.cls_name]
    try:
        if document.via == "json":
            try:
                text = json.dumps(document.doc).encode()
            except (ValueError, TypeError, RecursionError):
                return "unencodable"
            value = msgspec.json.decode(text, type=cls)
        else:
            value = msgspec.convert(document.doc, type=cls)
    except msgspec.ValidationError as exc:
        if not _names_a_field(str(exc), document.mutated):
            raise PropertyViolationError(
                f"the error names none of the changed fields {document.mutated}: {exc}"
            ) from exc
        return "ValidationError"
    except msgspec.DecodeError as exc:  # not JSON (NaN, Infinity): names the position
        if "byte" not in str(exc):
            raise PropertyViolationError(f"a JSON error without its position: {exc}") from exc
        return "DecodeError"
    problems = _documented_problems(value, msgspec.inspect.type_info(cls), "$")
    try:
        problems += _extra_rules(value)
    except ValueError as exc:
        # RiskConfig.to_core runs the core's validate, documented to check the rules decoding
        # does not, naming the core's field (halt_window_ns for halt_window_seconds).
        if str(exc).startswith("RiskConfig:") and _names_a_field(str(exc), document.mutated):
            return "ValueError"
        problems.append(f"accepted, then refused by to_core: {exc}")
    if problems:
        raise PropertyViolationError("accepted out of range: " + "; ".join(problems))
    return "ok"


# ================================================================ core: hostile calls

#: Exceptions the compiled core documents for bad arguments.
CORE_ERRORS: tuple[type[BaseException], ...] = (
    TypeError,
    ValueError,
    OverflowError,
    MemoryError,
    IndexError,  # IndexError: bad indexes
)

#: Classes whose methods raise RuntimeError when called out of order (documented in
#: colmena.execution.trading_loop).
STAGES = ("RiskStage", "RiskStage.pass_through", "ExecutionStage")

#: Lengths far beyond any machine's memory: must be refused before anything is allocated.
HUGE_LENGTHS = (2**40, 2**48, 2**62)
_DTYPES = (
    "float64",
    "float32",
    "int64",
    "int32",
    "uint8",
    "bool",
    "complex128",
    "float16",
    ">f8",
    ">i8",
    "<U3",
    "object",
    "uint64",
    "int8",
)
_LAYOUTS = ("c", "strided", "reversed", "fortran", "transposed", "readonly", "broadcast")


@dataclasses.dataclass(frozen=True)
class ArraySpec:
    """A NumPy argument, described so that it crosses a process boundary unchanged (a pickled
    view would arrive as a contiguous copy, a broadcast one fully materialized): contiguous
    ``data``, then ``layout`` (``broadcast`` repeats the first element ``length`` times with a
    zero stride, allocating nothing)."""

    data: np.ndarray[Any, Any]
    layout: str = "c"
    length: int = 0

    def build(self) -> np.ndarray[Any, Any]:
        a = self.data
        if self.layout == "strided":
            return np.stack([a, a], axis=-1)[..., 0] if a.ndim else a
        if self.layout == "reversed":
            return a[::-1] if a.ndim else a
        if self.layout == "fortran":
            return np.asfortranarray(a)
        if self.layout == "transposed":
            return a.T
        if self.layout == "readonly":
            b = a.view()
            b.setflags(write=False)
            return b
        if self.layout == "broadcast":
            first = a.reshape(-1)[:1] if a.size else np.zeros(1, a.dtype)
            return np.broadcast_to(first, (self.length,))
        return a

    def source(self) -> str:
        d = self.data
        body = f"np.array({_py(d.tolist())}, dtype={str(d.dtype)!r})"
        if d.ndim and d.size == 0:
            body = f"np.zeros({d.shape}, dtype={str(d.dtype)!r})"
        return {
            "c": body,
            "strided": f"np.stack([{body}] * 2, axis=-1)[..., 0]",
            "reversed": f"{body}[::-1]",
            "fortran": f"np.asfortranarray({body})",
            "transposed": f"{body}.T",
            "readonly": f"_readonly({body})",
            "broadcast": f"np.broadcast_to({body}.reshape(-1)[:1], ({self.length},))",
        }[self.layout]

    def __repr__(self) -> str:
        return self.source()


@dataclasses.dataclass(frozen=True)
class Obj:
    """An argument built in the process that runs the call: a core config or object from
    ``kind`` with ``changes`` (attribute values; a change the core refuses is skipped)."""

    kind: str
    changes: tuple[tuple[str, Any], ...] = ()

    def build(self) -> Any:
        from colmena import _core

        if self.kind == "risk":
            obj: Any = _core.RiskConfig()
        elif self.kind == "execution":
            obj = _core.ExecutionConfig()
        elif self.kind == "spec":
            obj = _core.MarketStateSpec(_core.fracdiff_weights(0.4, 0.0, 8), 5, 5, 3, 2, 60 * NS)
        elif self.kind == "bar":
            obj = _core.Bar(T0 * NS, 100.0, 101.0, 99.0, 100.5, 10.0)
        elif self.kind == "order":
            obj = _core.Order(1, 0, T0 * NS, 1.0, 0.5, "decision", False)
        elif self.kind == "report":
            obj = _core.ExecutionReport(1, T0 * NS, 1.0, None, None, 100_000.0, 0.0)
        elif self.kind == "account":
            obj = _core.AccountSnapshot(T0 * NS, 100.0, 100_000.0, 0.0, 100_000.0)
        else:
            raise KeyError(self.kind)
        for name, value in self.changes:
            try:
                setattr(obj, name, _value(value))
            except (*CORE_ERRORS, AttributeError):
                pass
        return obj

    def source(self) -> str:
        changes = ", ".join(f"({n!r}, {_py(v)})" for n, v in self.changes)
        return f"_obj({self.kind!r}, [{changes}])"

    def __repr__(self) -> str:
        return self.source()


@dataclasses.dataclass(frozen=True)
class Layers:
    """Network weights ``[(W, b), ...]`` as ArraySpecs (a junk entry stays as given)."""

    layers: tuple[Any, ...]

    def build(self) -> Any:
        return [_value(layer) for layer in self.layers]

    def source(self) -> str:
        return "[" + ", ".join(_py(layer) for layer in self.layers) + "]"

    def __repr__(self) -> str:
        return self.source()


def _value(v: Any) -> Any:
    if isinstance(v, (ArraySpec, Obj, Layers)):
        return v.build()
    if isinstance(v, tuple):
        return tuple(_value(x) for x in v)
    if isinstance(v, list):
        return [_value(x) for x in v]
    return v


def _py(v: Any) -> str:
    """Python source that rebuilds ``v`` (NaN and infinities included)."""
    if isinstance(v, (ArraySpec, Obj, Layers)):
        return v.source()
    if isinstance(v, float) and not math.isfinite(v):
        return f"float({str(v)!r})"
    if isinstance(v, np.generic):
        return f"np.{type(v).__name__}({_py(v.item())})"
    if isinstance(v, list):
        return "[" + ", ".join(_py(x) for x in v) + "]"
    if isinstance(v, tuple) and len(v) == 2 and v[0] == "Bar":
        return "_bar(" + ", ".join(_py(x) for x in v[1]) + ")"
    if isinstance(v, tuple):
        return "(" + "".join(_py(x) + ", " for x in v) + ")"
    return repr(v)


@dataclasses.dataclass(frozen=True)
class CoreCall:
    """A call of the core: ``target`` (a function, a class, or ``Class.staticmethod``) with
    ``args``, then, on the object it returns, each ``(method, args)`` of ``steps`` (a method
    name starting with ``.`` reads a property). ``uninitialized`` skips ``__init__``."""

    target: str
    args: tuple[Any, ...] = ()
    steps: tuple[tuple[str, tuple[Any, ...]], ...] = ()
    uninitialized: bool = False

    def source(self) -> str:
        """A Python script that replays this call (the reproducer of a failure)."""
        lines = [
            "import numpy as np",
            "from colmena import _core",
            "import sys; sys.path.insert(0, 'tests')",
            "from fuzz_strategies import CORE_ERRORS, Obj",
            "def _obj(kind, changes=()): return Obj(kind, tuple(changes)).build()",
            "def _bar(*a):",
            "    try: return _core.Bar(*a)",
            "    except CORE_ERRORS: return None",
            "def _readonly(a): a.setflags(write=False); return a",
        ]
        if self.uninitialized:
            lines.append(f"o = _core.{self.target}.__new__(_core.{self.target})")
        else:
            args = ", ".join(_py(a) for a in self.args)
            lines.append(f"o = _core.{self.target}({args})")
        for name, args in self.steps:
            if name.startswith("."):
                lines.append(f"o{name}")
            else:
                lines.append(f"o.{name}({', '.join(_py(a) for a in args)})")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.source()


# ---------------------------------------------------------------- argument strategies

_FLOATS = st.one_of(
    st.floats(-1e6, 1e6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 1.0, -1.0, 0.5, math.nan, math.inf, -math.inf, 5e-324, 1e308]),
)


def _elements(dtype: str) -> st.SearchStrategy[Any]:
    kind = np.dtype(dtype).kind
    if kind == "f" or kind == "c":
        return _FLOATS
    if kind in "iu":
        info = np.iinfo(np.dtype(dtype))
        return st.one_of(
            st.integers(0, 100),
            st.integers(int(info.min), int(info.max)),
            st.sampled_from([int(info.min), int(info.max), T0 * NS]),
        )
    if kind == "b":
        return st.booleans()
    return st.sampled_from(["a", "1", "", None, 1.5]) if kind == "O" else st.just("x")


@st.composite
def arrays(
    draw: st.DrawFn,
    dtype: str,
    ndim: int = 1,
    shape: tuple[int, ...] | None = None,
    values: st.SearchStrategy[Any] | None = None,
) -> Any:
    """A hostile array argument: usually ``dtype`` with ``ndim`` dimensions (``shape`` when
    given), sometimes another dtype, shape, memory layout, a huge zero-stride broadcast, or not
    an array at all."""
    roll = draw(st.integers(0, 99))
    if roll < 2:
        return draw(st.sampled_from([None, 1.5, "abc", [1.0, 2.0], (), 0, True]))
    if roll < 8:
        dtype = draw(st.sampled_from(_DTYPES))
    if roll >= 94:
        ndim = draw(st.integers(0, 3))
        shape = None
    if shape is None:
        shape = tuple(draw(st.integers(0, 12)) for _ in range(ndim))
    size = int(np.prod(shape)) if shape else 1
    elements = values if values is not None and roll >= 8 else _elements(dtype)
    flat = draw(st.lists(elements, min_size=size, max_size=size))
    with np.errstate(all="ignore"):
        try:
            data = np.array(flat, dtype=np.dtype(dtype)).reshape(shape)
        except (ValueError, TypeError, OverflowError):
            data = np.zeros(shape, dtype=np.dtype(dtype))
    layout = "c" if draw(st.integers(0, 9)) < 8 else draw(st.sampled_from(_LAYOUTS))
    length = draw(st.sampled_from(HUGE_LENGTHS)) if layout == "broadcast" else 0
    return ArraySpec(data, layout, length)


def _mostly(usual: st.SearchStrategy[Any], rare: st.SearchStrategy[Any], every: int = 10) -> Any:
    """``usual``, and ``rare`` about once in ``every`` draws."""
    return st.integers(0, every - 1).flatmap(lambda k: rare if k == 0 else usual)


def ints(lo: int = 0, hi: int = 64) -> st.SearchStrategy[Any]:
    """An integer argument: usually in [lo, hi], sometimes an extreme, a huge size, a bool, a
    float, None or a string."""
    return _mostly(
        st.integers(lo, hi),
        st.sampled_from(
            [
                -1,
                0,
                2**31,
                2**32 + 1,
                2**63 - 1,
                2**63,
                2**64,
                -(2**63),
                -(2**63) - 1,
                *HUGE_LENGTHS,
                10**6,
                10**6 + 1,
                10**7,
                True,
                False,
                1.5,
                math.nan,
                None,
                "3",
                np.int64(3),
                np.float64(2.0),
            ]
        ),
    )


def floats(lo: float = -1.0, hi: float = 1.0) -> st.SearchStrategy[Any]:
    """A float argument: usually in [lo, hi], sometimes any float, a huge int, a bool, None."""
    return _mostly(
        st.floats(lo, hi),
        st.one_of(
            _FLOATS,
            st.sampled_from(
                [
                    True,
                    2**1100,
                    -(2**70),
                    None,
                    "0.5",
                    np.float32(0.5),
                    np.int64(-1),
                ]
            ),
        ),
        every=6,
    )


def names(*valid: str) -> st.SearchStrategy[Any]:
    """A string argument: usually one of ``valid``, sometimes other text, None or a number."""
    return _mostly(
        st.sampled_from(valid),
        st.one_of(st.text(max_size=8), st.sampled_from([None, 1, b"auto", "AUTO", ""])),
    )


def times() -> st.SearchStrategy[Any]:
    """A timestamp argument (int ns since the epoch): around 2023, at the edges of the core's
    range, or hostile."""
    return _mostly(
        st.integers(T0 * NS, T0 * NS + 10**13),
        st.sampled_from(
            [
                0,
                -1,
                MAX_TS_NS,
                MAX_TS_NS + 1,
                2**63 - 1,
                -(2**63),
                True,
                1.5e18,
                None,
                np.int64(T0 * NS),
                np.uint64(2**63),
            ]
        ),
        every=6,
    )


@st.composite
def _layers(draw: st.DrawFn, agents: bool, final_one: bool) -> Any:
    n_layers = draw(st.integers(0 if not final_one else 1, 3))
    widths = [draw(st.integers(1, 6)) for _ in range(n_layers + 1)]
    if final_one:
        widths[-1] = 1
    a = draw(st.integers(1, 5))
    out: list[Any] = []
    for i in range(n_layers):
        w_shape = (a, widths[i], widths[i + 1]) if agents else (widths[i], widths[i + 1])
        b_shape = (a, widths[i + 1]) if agents else (widths[i + 1],)
        vals = st.floats(-2, 2, width=32)
        w = draw(arrays("float32", shape=w_shape, values=vals))
        b = draw(arrays("float32", shape=b_shape, values=vals))
        out.append((w, b) if draw(st.integers(0, 19)) else draw(st.sampled_from([(w,), [w, b], w])))
    if draw(st.integers(0, 19)) == 0:
        return draw(st.sampled_from([None, 3, "layers", [(1, 2)]]))
    return Layers(tuple(out))


def _obj(kind: str, fields: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[Obj]:
    changes = st.lists(st.sampled_from(sorted(fields)), max_size=3, unique=True).flatmap(
        lambda keys: st.tuples(*(st.tuples(st.just(k), fields[k]) for k in keys))
    )
    return changes.map(lambda c: Obj(kind, tuple(c)))


def _risk() -> st.SearchStrategy[Obj]:
    f = floats(0.0, 1.0)
    return _obj(
        "risk",
        {
            "kelly_multiplier": f,
            "kelly_window": ints(0, 100),
            "kelly_min_trades": ints(0, 100),
            "max_leverage": floats(0.0, 10.0),
            "var_confidence": f,
            "var_horizon_bars": floats(0, 1e9),
            "ewma_lambda": f,
            "halt_drawdown": f,
            "halt_window_ns": times(),
            "ladder_drawdown": st.tuples(f, f, f),
            "ladder_pause_ns": st.tuples(times(), times(), times()),
            "stale_after_ns": times(),
            "daily_loss_pause": floats(-1.0, 0.0),
        },
    )


def _execution() -> st.SearchStrategy[Obj]:
    bps = floats(0.0, 2000.0)
    return _obj(
        "execution",
        {
            "initial_cash": floats(0.0, 1e16),
            "fee_bps": bps,
            "slippage_bps": bps,
            "impact_bps": bps,
            "max_participation": floats(0.0, 2.0),
            "allow_short": st.booleans(),
            "borrow_bps_per_day": bps,
        },
    )


def _bar() -> st.SearchStrategy[Any]:
    p = floats(0.0, 200.0)
    return st.one_of(
        st.just(Obj("bar")),
        st.builds(lambda *a: ("Bar", a), times(), p, p, p, p, floats(0.0, 100.0)),
    )


F64 = arrays("float64")
I64 = arrays("int64", values=st.integers(T0 * NS, T0 * NS + 10**12))
U8 = arrays("uint8")
BAR_NS = st.one_of(st.just(60 * NS), ints(0, 10**12))
ACTIONS = names("hold", "decide", "gated_flat", "end_of_run")


def _ohlcv() -> st.SearchStrategy[tuple[Any, ...]]:
    """Six columns, usually of one length and plausible values, each possibly hostile."""
    return st.integers(0, 12).flatmap(
        lambda n: st.tuples(
            arrays("int64", shape=(n,), values=st.integers(T0 * NS, T0 * NS + 10**12)),
            *[arrays("float64", shape=(n,), values=st.floats(0.0, 200.0))] * 5,
        )
    )


#: Functions of the core: name -> strategy of its argument tuple.
CORE_FUNCTIONS: dict[str, st.SearchStrategy[tuple[Any, ...]]] = {
    "build_info": st.just(()),
    "cuda_device_count": st.just(()),
    "cuda_devices": st.just(()),
    "max_threads": st.just(()),
    "set_simd_level": st.tuples(names("baseline", "avx2", "avx512", "auto")),
    "set_max_threads": st.tuples(ints(0, 4)),
    "find_invalid_ohlcv": st.tuples(_ohlcv(), st.one_of(st.none(), times())).map(
        lambda t: (*t[0], t[1])
    ),
    "log_returns": st.tuples(F64),
    "fracdiff_weights": st.tuples(floats(-1.0, 3.0), floats(0.0, 0.1), ints(0, 64)),
    "fracdiff_ffd": st.tuples(F64, F64, names("auto", "direct", "fft")),
    "fracdiff_expanding": st.tuples(
        F64, floats(0.0, 2.0), floats(0.0, 0.1), names("auto", "direct", "fft")
    ),
    "expanding_skip": st.tuples(F64, floats(0.0, 0.1)),
    "fracdiff_fft_crossover": st.just(()),
    "market_state_batch": st.tuples(I64, F64, F64, st.just(Obj("spec"))),
    "regime_code": st.tuples(floats(), floats(), floats(), floats()),
    "regime_codes": st.tuples(F64, F64, floats(), floats()),
    "regime_features": st.tuples(F64, arrays("int64"), ints(0, 16)),
    "consensus": st.tuples(arrays("float32", 2), F64, st.one_of(st.none(), arrays("int64"))),
    "tail_risk": st.tuples(
        F64,
        floats(0.0, 1.0),
        names("historical", "parametric", "monte_carlo"),
        ints(0, 8),
        ints(0, 64),
        ints(0, 10),
    ),
    "normal_quantile": st.tuples(floats(0.0, 1.0)),
    "sample_moments": st.tuples(F64),
    "verdict_names": st.just(()),
    "trading_state_names": st.just(()),
    "event_type_names": st.just(()),
    "order_origin_names": st.just(()),
    "action_names": st.just(()),
    "run_backtest": st.tuples(
        _ohlcv(),
        F64,
        BAR_NS,
        _risk(),
        _execution(),
        st.one_of(st.none(), U8),
        st.one_of(st.none(), arrays("int64")),
    ).map(lambda t: (*t[0], *t[1:])),
    "simulate_targets": st.tuples(
        I64,
        F64,
        F64,
        F64,
        U8,
        arrays("float32", 2),
        arrays("int64"),
        BAR_NS,
        _execution(),
        floats(0.0, 1.0),
        ints(0, 40),
    ),
}

#: Classes of the core: name -> (strategy of constructor arguments, {method: argument strategy}).
#: A method name starting with "." is a property read.
CORE_CLASSES: dict[
    str, tuple[st.SearchStrategy[tuple[Any, ...]], dict[str, st.SearchStrategy[tuple[Any, ...]]]]
] = {
    "MarketBuffer": (
        st.tuples(ints(1, 16), names("auto", "mirrored", "plain")),
        {
            "push": st.tuples(times(), *[floats(0.0, 200.0)] * 5),
            "extend": _ohlcv(),
            "last": st.tuples(ints(0, 20), st.booleans()),
            "clear": st.just(()),
            ".newest_timestamp": st.just(()),
            "__len__": st.just(()),
        },
    ),
    "FracDiffStream": (
        st.tuples(floats(0.0, 2.0)).flatmap(
            lambda d: st.one_of(st.just(d), st.tuples(st.just(d[0]), ints(1, 32).map(lambda w: w)))
        ),
        {
            "update": st.tuples(floats(-10, 10)),
            "update_many": st.tuples(F64),
            "reset": st.just(()),
            ".weights": st.just(()),
            ".count": st.just(()),
        },
    ),
    "MarketStateSpec": (
        st.tuples(F64, ints(0, 8), ints(0, 8), ints(0, 8), ints(0, 8), BAR_NS, ints(0, 8)),
        {".lookback_bars": st.just(()), ".ffd_weights": st.just(())},
    ),
    "MarketStateStream": (
        st.tuples(st.just(Obj("spec"))),
        {
            "update": st.tuples(times(), floats(0.0, 200.0), floats(0.0, 100.0)),
            "update_candle": st.tuples(times(), *[floats(0.0, 200.0)] * 5),
            "update_many": st.tuples(I64, F64, F64),
            "reset": st.just(()),
            "regime": st.just(()),
            "raw_window": st.just(()),
            "window": st.tuples(F64, F64),
            "current": st.tuples(F64, F64),
            ".features": st.just(()),
        },
    ),
    "Swarm": (
        st.tuples(_layers(agents=True, final_one=True), names("tanh", "relu", "gelu", "identity")),
        {
            "forward": st.tuples(arrays("float32", st.integers(1, 2).example() if False else 2)),
            "set_layer": st.tuples(ints(0, 3), arrays("float32", 3), arrays("float32", 2)),
            "set_weights": st.tuples(_layers(agents=True, final_one=True)),
            "set_agent": st.tuples(ints(0, 5), _layers(agents=False, final_one=True)),
            "get_weights": st.just(()),
            "get_agent": st.tuples(ints(0, 5)),
            ".n_agents": st.just(()),
        },
    ),
    "MLP": (
        st.tuples(
            _layers(agents=False, final_one=False),
            names("tanh", "relu", "gelu", "identity"),
            names("identity", "tanh", "relu", "gelu"),
        ),
        {
            "forward": st.tuples(arrays("float32", 2)),
            "set_layer": st.tuples(ints(0, 3), arrays("float32", 2), arrays("float32")),
            "set_weights": st.tuples(_layers(agents=False, final_one=False)),
            "get_weights": st.just(()),
        },
    ),
    "VAEEncoder": (
        st.tuples(
            _layers(agents=False, final_one=False),
            st.tuples(arrays("float32", 2), arrays("float32")),
            st.one_of(st.none(), st.tuples(arrays("float32", 2), arrays("float32"))),
            names("relu", "tanh", "gelu", "identity"),
        ),
        {"encode": st.tuples(arrays("float32", 2), st.booleans())},
    ),
    "RiskManager": (
        st.tuples(_risk()),
        {
            "observe": st.tuples(times(), floats(0.0, 2e5), floats(-1.0, 1.0)),
            "observe_data_age": st.tuples(times(), times()),
            "decide": st.tuples(floats(), floats()),
            "decide_action": st.tuples(ACTIONS, floats(), floats()),
            "allowed_quantity": st.tuples(floats(-10, 10), floats(-10, 10)),
            "record_trade": st.tuples(floats(-1e4, 1e4)),
            "reset_halt": st.tuples(times(), floats(0.0, 2e5)),
            "reset_model_estimates": st.just(()),
            "clear_flatten": st.just(()),
            ".state": st.just(()),
            ".drawdown": st.just(()),
        },
    ),
    "PaperExecutor": (
        st.tuples(_execution()),
        {
            "execute": st.tuples(times(), floats(-10, 10), floats(0.0, 200.0), floats(0.0, 100.0)),
            "equity": st.tuples(floats(0.0, 200.0)),
            "unrealized_pnl": st.tuples(floats(0.0, 200.0)),
            "accrue_borrow": st.tuples(floats(0.0, 200.0), floats(0.0, 10.0)),
            ".cash": st.just(()),
            ".position": st.just(()),
        },
    ),
    "TradingLoop": (
        st.tuples(_execution(), _risk(), BAR_NS),
        {
            "step": st.tuples(_bar(), ACTIONS, floats(), st.booleans(), st.booleans()),
            ".bars": st.just(()),
        },
    ),
    "TradingLoop.pass_through": (
        st.tuples(_execution(), floats(0.0, 1.0), BAR_NS),
        {"step": st.tuples(_bar(), ACTIONS, floats(), st.booleans(), st.booleans())},
    ),
    "RiskStage": (
        st.tuples(_execution(), _risk(), BAR_NS),
        {
            "open": st.tuples(_bar(), st.booleans()),
            "close": st.tuples(_bar(), st.just(Obj("account")), ACTIONS, floats(), st.booleans()),
            "on_execution": st.tuples(st.one_of(st.just(Obj("report")), st.none())),
            ".outstanding": st.just(()),
        },
    ),
    "RiskStage.pass_through": (
        st.tuples(_execution(), floats(0.0, 1.0), BAR_NS),
        {"open": st.tuples(_bar(), st.booleans())},
    ),
    "ExecutionStage": (
        st.tuples(_execution(), BAR_NS),
        {
            "open": st.tuples(_bar(), names("ACTIVE", "REDUCING", "PAUSED", "HALTED")),
            "close": st.tuples(_bar()),
            "submit": st.tuples(st.one_of(st.just(Obj("order")), st.none())),
            ".account": st.just(()),
        },
    ),
    "Bar": (st.tuples(times(), *[floats(0.0, 200.0)] * 5), {".close": st.just(())}),
    "Fill": (st.tuples(times(), floats(), floats(), floats(), floats(), floats()), {}),
    "Order": (
        st.tuples(
            ints(),
            ints(),
            times(),
            floats(),
            floats(),
            names("decision", "remainder", "risk", "end_of_run"),
            st.booleans(),
        ),
        {},
    ),
    "ExecutionReport": (
        st.tuples(
            ints(),
            times(),
            floats(),
            st.none(),
            st.one_of(st.none(), st.text(max_size=5)),
            floats(),
            floats(),
        ),
        {},
    ),
    "AccountSnapshot": (st.tuples(times(), floats(), floats(), floats(), floats()), {}),
}

#: Classes whose objects may be created without ``__init__`` (``Cls.__new__(Cls)``).
UNINITIALIZED_CLASSES = tuple(name for name in CORE_CLASSES if "." not in name)


@st.composite
def core_calls(draw: st.DrawFn, uninitialized: bool = False) -> CoreCall:
    """A hostile call of the compiled core: a function, or a constructor followed by up to
    five method calls on the object. ``uninitialized`` also draws objects whose ``__init__``
    never ran (calls that crashed the interpreter: run those in a child process)."""
    if uninitialized and draw(st.integers(0, 9)) == 0:
        name = draw(st.sampled_from(UNINITIALIZED_CLASSES))
        methods = CORE_CLASSES[name][1]
        steps = []
        if methods:
            method = draw(st.sampled_from(sorted(methods)))
            steps.append((method, draw(methods[method])))
        return CoreCall(name, (), tuple(steps), uninitialized=True)
    if draw(st.booleans()):
        name = draw(st.sampled_from(sorted(CORE_FUNCTIONS)))
        return CoreCall(name, draw(CORE_FUNCTIONS[name]))
    name = draw(st.sampled_from(sorted(CORE_CLASSES)))
    ctor, methods = CORE_CLASSES[name]
    steps = []
    if methods:
        for _ in range(draw(st.integers(0, 5))):
            method = draw(st.sampled_from(sorted(methods)))
            steps.append((method, draw(methods[method])))
    return CoreCall(name, draw(ctor), tuple(steps))


def _resolve(target: str) -> Any:
    from colmena import _core

    obj: Any = _core
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def _args(args: tuple[Any, ...]) -> list[Any]:
    from colmena import _core

    out = []
    for a in args:
        if isinstance(a, tuple) and len(a) == 2 and a[0] == "Bar":
            try:
                a = _core.Bar(*a[1])
            except CORE_ERRORS:
                a = None  # a Bar the core refuses: the method then gets None
            out.append(a)
        else:
            out.append(_value(a))
    return out


def check_core_call(call: CoreCall) -> str:
    """Run ``call``: each step returns a result satisfying its property or raises one of
    :data:`CORE_ERRORS` (the object stays usable: the next steps still run). Returns
    ``"ok"`` when every step returned, else the names of the errors raised, e.g.
    ``"ValueError"``."""
    from colmena import _core

    outcomes: list[str] = []
    saved = (_core.build_info()["simd_selected"], _core.max_threads())
    try:
        if call.uninitialized:
            cls = _resolve(call.target)
            try:
                obj = cls.__new__(cls)
            except TypeError as exc:  # the core refuses to make an object it cannot use
                if "makes no usable object" not in str(exc):
                    raise
                return "TypeError"
        else:
            try:
                obj = _resolve(call.target)(*_args(call.args))
            except CORE_ERRORS as exc:
                _check_error(exc, call.target)
                return type(exc).__name__
            _check_result(call.target, call.args, obj)
        for name, args in call.steps:
            try:
                if name.startswith("."):
                    result = getattr(obj, name[1:])
                else:
                    result = getattr(obj, name)(*_args(args))
            except CORE_ERRORS as exc:
                _check_error(exc, f"{call.target}.{name}")
                outcomes.append(type(exc).__name__)
                continue
            except RuntimeError as exc:
                if call.target not in STAGES:
                    raise
                _check_error(exc, f"{call.target}.{name}")  # documented: calls out of order
                outcomes.append(type(exc).__name__)
                continue
            _check_result(f"{call.target}.{name}", args, result, obj)
            outcomes.append("ok")
    finally:
        if call.target in ("set_simd_level", "set_max_threads"):
            _core.set_simd_level(saved[0])
            _core.set_max_threads(saved[1])
    bad = sorted({o for o in outcomes if o != "ok"})
    return "ok" if not bad else "+".join(bad)


def _check_error(exc: BaseException, where: str) -> None:
    text = str(exc)
    if not text.strip():
        raise PropertyViolationError(f"{where}: {type(exc).__name__} with an empty message")
    if "internal error" in text.lower():
        raise PropertyViolationError(f"{where}: an 'Internal error' instead of a clear one: {text}")


def _check_result(where: str, args: tuple[Any, ...], result: Any, obj: Any = None) -> None:
    """Properties of successful calls (where one is cheap to state)."""
    from colmena import _core

    fn = where.rsplit(".", 1)[-1] if "." in where else where
    problems: list[str] = []
    if where == "log_returns":
        x = _value(args[0])
        if not (isinstance(result, np.ndarray) and result.shape == (max(len(x) - 1, 0),)):
            problems.append(f"shape {getattr(result, 'shape', None)} for {len(x)} prices")
        elif len(x) > 1 and (x > 0).all() and np.isfinite(x).all():
            want = np.diff(np.log(x))
            if not np.allclose(result, want, rtol=1e-12, atol=1e-12, equal_nan=True):
                problems.append("differs from numpy's diff(log(x))")
    elif where == "fracdiff_weights":
        if not (1 <= result.size <= _core.MAX_FRACDIFF_WEIGHTS and result[0] == 1.0):
            problems.append(f"{result.size} weights, first {result[:1]}")
    elif where == "fracdiff_ffd":
        x, w = _value(args[0]), _value(args[1])
        if result.shape != (max(len(x) - len(w) + 1, 0),):
            problems.append(f"shape {result.shape} for {len(x)} values and {len(w)} weights")
    elif where in ("regime_code", "regime_codes"):
        codes = np.atleast_1d(np.asarray(result))
        if not ((codes >= -1) & (codes <= 3)).all():
            problems.append(f"regime codes outside -1..3: {codes}")
    elif where == "normal_quantile":
        p = float(args[0])
        if 0 < p < 1 and not math.isfinite(result):
            problems.append(f"normal_quantile({p}) = {result}")
    elif where == "find_invalid_ohlcv" and result is not None:
        n = len(_value(args[0]))
        if not (0 <= result.row < max(n, 1)) or result.field not in ("ts", *HEADER[1:]):
            problems.append(f"violation row {result.row} field {result.field} for {n} rows")
    elif fn == "forward" and isinstance(obj, _core.Swarm):
        x = _value(args[0])
        want = (obj.n_agents,) if x.ndim == 1 else (obj.n_agents, x.shape[0])
        finite = result[np.isfinite(result)]
        if result.shape != want or not (np.abs(finite) <= 1.0).all():
            problems.append(f"shape {result.shape} (want {want}) or a signal outside [-1, 1]")
    elif fn in ("push", "extend", "clear") and isinstance(obj, _core.MarketBuffer):
        n = len(obj)
        ts = obj.last(n, True)[0]
        if not (0 <= n <= obj.capacity) or (n > 1 and not (np.diff(ts) > 0).all()):
            problems.append(f"{n} candles in a buffer of {obj.capacity}, or times not increasing")
    elif (
        fn == "last"
        and isinstance(obj, _core.MarketBuffer)
        and not all(len(c) == min(int(args[0]), len(obj)) for c in result)
    ):
        problems.append("last(n) returned columns of the wrong length")
    if problems:
        raise PropertyViolationError(f"{where}: " + "; ".join(problems))


# ================================================================ running inputs in a child process

#: Address space of a child that runs inputs: a runaway allocation is a MemoryError there.
CHILD_MEMORY_BYTES = 4 * 2**30
CHECKS: dict[str, Callable[[Any], str]] = {
    "loader": check_candle_file,
    "config": check_config_document,
    "core": check_core_call,
}


def _worker(conn: Any, memory_bytes: int) -> None:
    if not under_asan():  # AddressSanitizer reserves terabytes of address space up front
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    import colmena  # noqa: F401  (import once, before the first input)

    while True:
        try:
            target, value = conn.recv()
        except EOFError:
            return
        try:
            outcome = ("done", CHECKS[target](value))
        except PropertyViolationError as exc:
            outcome = ("violation", str(exc)[:2000])
        except BaseException as exc:
            outcome = ("traceback", "".join(traceback.format_exception(exc))[-4000:])
        conn.send(outcome)


@dataclasses.dataclass
class Outcome:
    """How one input ended in the child: ``kind`` is ``"done"`` (``detail``: the check's result),
    ``"violation"``, ``"traceback"``, ``"crash"`` (``detail``: the signal) or ``"hang"``."""

    kind: str
    detail: str
    seconds: float


class IsolatedRunner:
    """Runs inputs one by one in a child process (spawned, so nothing of the parent's state
    leaks in) with a memory cap and a timeout per input; a crash or a hang is reported as the
    input's outcome and the next input gets a fresh child."""

    def __init__(self, timeout: float = 60.0, memory_bytes: int = CHILD_MEMORY_BYTES) -> None:
        self.timeout = timeout
        self.memory_bytes = memory_bytes
        self._ctx = mp.get_context("spawn")
        self._proc: Any = None
        self._conn: Any = None

    def _start(self) -> None:
        parent, child = self._ctx.Pipe()
        self._proc = self._ctx.Process(target=_worker, args=(child, self.memory_bytes), daemon=True)
        self._proc.start()
        child.close()
        self._conn = parent

    def run(self, target: str, value: Any) -> Outcome:
        """Run ``CHECKS[target](value)`` in the child."""
        if self._proc is None or not self._proc.is_alive():
            self._start()
        started = time.monotonic()
        self._conn.send((target, value))
        try:
            ready = self._conn.poll(self.timeout)
            if ready:
                kind, detail = self._conn.recv()
                return Outcome(kind, detail, time.monotonic() - started)
        except (EOFError, OSError):
            ready = True
        if not ready:
            self.close()
            return Outcome("hang", f"no answer in {self.timeout:g} s", time.monotonic() - started)
        self._proc.join(5)
        code = self._proc.exitcode
        self._proc = None
        what = f"signal {signal.Signals(-code).name}" if code and code < 0 else f"exit code {code}"
        return Outcome("crash", what, time.monotonic() - started)

    def close(self) -> None:
        """Stop the child (killed if it does not answer)."""
        if self._proc is not None:
            self._proc.kill()
            self._proc.join(5)
            self._proc = None

    def __enter__(self) -> IsolatedRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def reproducer(target: str, value: Any) -> str:
    """Text that reproduces a failing input: a script for core calls, the file or document
    otherwise."""
    if isinstance(value, CoreCall):
        return value.source()
    return repr(value)
