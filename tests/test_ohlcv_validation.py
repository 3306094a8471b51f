"""The compiled OHLCV validator: every rule, its message, the first-bad-row contract."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from colmena import _core

T0 = 1_677_628_800_000_000_000  # 2023-03-01T00:00:00Z in ns
MINUTE = 60_000_000_000


def good_columns(n: int) -> dict[str, np.ndarray]:
    """n valid one-minute candles."""
    rng = np.random.default_rng(n)
    close = 100.0 * np.exp(rng.standard_normal(n).cumsum() * 1e-3)
    open_ = np.concatenate([[100.0], close[:-1]])[:n]
    high = np.maximum(open_, close) + rng.random(n)
    low = np.minimum(open_, close) - rng.random(n)
    return {
        "ts": T0 + np.arange(n, dtype=np.int64) * MINUTE,
        "open": open_,
        "high": high,
        "low": low,
        "close": close,
        "volume": rng.random(n) * 10,
    }


def check(columns: dict[str, np.ndarray], newest: int | None = None) -> _core.OhlcvViolation | None:
    return _core.find_invalid_ohlcv(
        columns["ts"],
        columns["open"],
        columns["high"],
        columns["low"],
        columns["close"],
        columns["volume"],
        newest,
    )


def test_valid_columns_pass() -> None:
    assert check(good_columns(5000)) is None


def test_empty_columns_pass() -> None:
    assert check(good_columns(0)) is None
    assert check(good_columns(0), newest=T0) is None


# (field, value, rule, message fragment) for row 3 of 10 valid candles with low=100, high=110,
# open=close=105.
RULE_CASES = [
    ("open", math.nan, "price_not_finite", "open (nan) is not finite"),
    ("open", math.inf, "price_not_finite", "open (inf) is not finite"),
    ("high", -math.inf, "price_not_finite", "high (-inf) is not finite"),
    ("low", math.nan, "price_not_finite", "low (nan) is not finite"),
    ("close", math.nan, "price_not_finite", "close (nan) is not finite"),
    ("open", 0.0, "price_not_positive", "open (0.0) is not > 0"),
    ("low", -1.5, "price_not_positive", "low (-1.5) is not > 0"),
    ("close", -2.0, "price_not_positive", "close (-2.0) is not > 0"),
    ("volume", math.nan, "volume_not_finite", "volume (nan) is not finite"),
    ("volume", math.inf, "volume_not_finite", "volume (inf) is not finite"),
    ("volume", -0.5, "volume_negative", "volume (-0.5) is < 0"),
    ("high", 99.0, "high_below_low", "high (99.0) < low (100.0)"),
    ("open", 111.0, "open_outside_range", "open (111.0) is outside [low (100.0), high (110.0)]"),
    ("open", 99.5, "open_outside_range", "open (99.5) is outside [low (100.0), high (110.0)]"),
    ("close", 110.5, "close_outside_range", "close (110.5) is outside [low (100.0), high (110.0)]"),
    ("close", 99.9, "close_outside_range", "close (99.9) is outside [low (100.0), high (110.0)]"),
]


def flat_columns(n: int) -> dict[str, np.ndarray]:
    return {
        "ts": T0 + np.arange(n, dtype=np.int64) * MINUTE,
        "open": np.full(n, 105.0),
        "high": np.full(n, 110.0),
        "low": np.full(n, 100.0),
        "close": np.full(n, 105.0),
        "volume": np.full(n, 1.0),
    }


@pytest.mark.parametrize(("field", "value", "rule", "fragment"), RULE_CASES)
def test_each_rule_reports_field_row_value_and_message(
    field: str, value: float, rule: str, fragment: str
) -> None:
    columns = flat_columns(10)
    columns[field][3] = value
    violation = check(columns)
    assert violation is not None
    assert (violation.row, violation.field, violation.rule) == (3, field, rule)
    assert violation.detail == fragment
    assert violation.message == f"row 3: {fragment}"
    if math.isnan(value):
        assert math.isnan(violation.value)
    else:
        assert violation.value == value


def test_boundaries_are_valid() -> None:
    columns = flat_columns(4)
    columns["volume"][0] = 0.0  # volume may be zero
    columns["open"][1] = columns["low"][1]  # open on the low
    columns["close"][2] = columns["high"][2]  # close on the high
    columns["high"][3] = columns["low"][3] = columns["open"][3] = columns["close"][3] = 7.0
    assert check(columns) is None


def test_duplicate_timestamp_is_reported_as_duplicate() -> None:
    columns = flat_columns(10)
    columns["ts"][6] = columns["ts"][5]
    violation = check(columns)
    assert violation is not None
    assert (violation.row, violation.field, violation.rule) == (6, "ts", "ts_not_increasing")
    assert violation.value == columns["ts"][6]
    assert "duplicates the previous row's ts" in violation.detail
    assert "2023-03-01T00:05:00Z" in violation.detail


def test_decreasing_timestamp_names_both_times() -> None:
    columns = flat_columns(10)
    columns["ts"][4] = T0
    violation = check(columns)
    assert violation is not None
    assert (violation.row, violation.rule) == (4, "ts_not_increasing")
    assert violation.detail == (
        f"ts {T0} (2023-03-01T00:00:00Z) is not after the previous row's ts "
        f"{T0 + 3 * MINUTE} (2023-03-01T00:03:00Z)"
    )


def test_first_row_must_follow_newest_stored_timestamp() -> None:
    columns = flat_columns(3)
    assert check(columns, newest=T0 - 1) is None
    for newest in (T0, T0 + 1):
        violation = check(columns, newest=newest)
        assert violation is not None
        assert (violation.row, violation.field, violation.rule) == (0, "ts", "ts_not_after_stored")
        assert "is not after the newest stored ts" in violation.detail


def test_nanosecond_fraction_is_shown_in_times() -> None:
    columns = flat_columns(2)
    columns["ts"][1] = columns["ts"][0] - 1_500
    violation = check(columns)
    assert violation is not None
    assert "2023-02-28T23:59:59.9999985Z" in violation.detail


def test_timestamp_rule_is_checked_before_value_rules() -> None:
    columns = flat_columns(5)
    columns["ts"][2] = columns["ts"][1]
    columns["open"][2] = math.nan
    columns["high"][2] = 1.0
    violation = check(columns)
    assert violation is not None
    assert violation.rule == "ts_not_increasing"


def test_finite_and_sign_rules_come_before_range_rules() -> None:
    columns = flat_columns(5)
    columns["high"][2] = 50.0  # high < low ...
    columns["volume"][2] = -1.0  # ... but the volume rule is reported first
    violation = check(columns)
    assert violation is not None
    assert violation.rule == "volume_negative"


@pytest.mark.parametrize("row", [0, 1, 1023, 1024, 1025, 2047, 2048, 4999])
def test_first_bad_row_is_found_across_block_boundaries(row: int) -> None:
    columns = good_columns(5000)
    columns["close"][row] = -1.0
    columns["close"][min(row + 7, 4999)] = -1.0  # a later bad row must not be reported instead
    violation = check(columns)
    assert violation is not None
    assert (violation.row, violation.field, violation.rule) == (row, "close", "price_not_positive")


def test_extreme_timestamps_compare_without_overflow() -> None:
    columns = flat_columns(2)
    columns["ts"][:] = [np.iinfo(np.int64).max, np.iinfo(np.int64).min]
    violation = check(columns)
    assert violation is not None
    assert violation.rule == "ts_not_increasing"
    columns["ts"][:] = [np.iinfo(np.int64).min, np.iinfo(np.int64).max]
    assert check(columns) is None


def test_rejects_wrong_dtype_with_type_error() -> None:
    columns = flat_columns(3)
    columns["ts"] = columns["ts"].astype(np.float64)
    with pytest.raises(
        TypeError, match=r"find_invalid_ohlcv: ts must have dtype int64, got float64"
    ):
        check(columns)
    columns = flat_columns(3)
    columns["volume"] = columns["volume"].astype(np.float32)
    with pytest.raises(TypeError, match="volume must have dtype float64, got float32"):
        check(columns)
    columns = flat_columns(3)
    columns["open"] = columns["open"].astype(">f8")
    with pytest.raises(TypeError, match="open must have dtype float64"):
        check(columns)


def test_rejects_non_arrays_mismatched_lengths_and_shapes() -> None:
    columns = flat_columns(3)
    with pytest.raises(TypeError, match=r"high must be a numpy.ndarray, got list"):
        _core.find_invalid_ohlcv(
            columns["ts"], columns["open"], [1.0, 2.0, 3.0], columns["low"], columns["close"],
            columns["volume"],
        )  # fmt: skip
    columns["low"] = columns["low"][:2]
    with pytest.raises(ValueError, match="ts has 3 rows, low has 2"):
        check(columns)
    columns = flat_columns(4)
    columns["close"] = columns["close"].reshape(2, 2)
    with pytest.raises(ValueError, match="close must be 1-D, got 2 dimensions"):
        check(columns)
    columns = flat_columns(8)
    columns["open"] = columns["open"][::2]
    columns["ts"] = columns["ts"][:4]
    for name in ("high", "low", "close", "volume"):
        columns[name] = columns[name][:4]
    with pytest.raises(ValueError, match="open must be contiguous"):
        check(columns)


def test_finds_the_last_bad_row_of_a_million() -> None:
    columns = good_columns(1_000_000)
    assert check(columns) is None
    columns["high"][999_999] = 0.5 * columns["low"][999_999]
    violation = check(columns)
    assert violation is not None
    assert violation.row == 999_999


# ---------------------------------------------------------------- property: against an oracle


def reference_violation(
    rows: list[tuple[int, float, float, float, float, float]],
) -> tuple[int, str] | None:
    """Plain-Python statement of the rules (the test oracle): (row, rule) of the first failure."""
    previous = None
    for i, (ts, o, h, lo, c, v) in enumerate(rows):
        if previous is not None and not ts > previous:
            return i, "ts_not_increasing"
        previous = ts
        for x in (o, h, lo, c):
            if not math.isfinite(x):
                return i, "price_not_finite"
            if not x > 0:
                return i, "price_not_positive"
        if not math.isfinite(v):
            return i, "volume_not_finite"
        if v < 0:
            return i, "volume_negative"
        if h < lo:
            return i, "high_below_low"
        if not lo <= o <= h:
            return i, "open_outside_range"
        if not lo <= c <= h:
            return i, "close_outside_range"
    return None


price = st.one_of(
    st.floats(min_value=0.5, max_value=2.0),
    st.sampled_from([0.0, -1.0, math.nan, math.inf, -math.inf]),
)
candle_rows = st.lists(
    st.tuples(st.integers(0, 40), price, price, price, price, price), min_size=0, max_size=60
)


@settings(max_examples=300, deadline=None)
@given(candle_rows)
def test_matches_a_plain_python_statement_of_the_rules(
    rows: list[tuple[int, float, float, float, float, float]],
) -> None:
    # Timestamps as a running sum of steps 0..40 with occasional backward steps.
    ts = np.cumsum([step - 3 for step, *_ in rows], dtype=np.int64)
    table = [(int(t), *r[1:]) for t, r in zip(ts, rows, strict=True)]
    columns = {
        "ts": ts,
        **{
            name: np.array([r[k] for r in table], dtype=np.float64)
            for k, name in enumerate(["open", "high", "low", "close", "volume"], start=1)
        },
    }
    violation = check(columns)
    expected = reference_violation(table)
    if expected is None:
        assert violation is None
    else:
        assert violation is not None
        assert (violation.row, violation.rule) == expected
