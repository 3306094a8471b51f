"""Decision interval parsing and the decision-bar rule against a plain-Python reference.

The rule (module docstring of :mod:`colmena.model.decision`): bar ``t`` is a decision bar when
``floor(close_t / I) > floor(close_{t-1} / I)``, boundaries being multiples of ``I`` since the
epoch.
"""

from __future__ import annotations

from pathlib import Path

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from colmena.data.ohlcv import load_ohlcv
from colmena.model.decision import DecisionConfig, decision_bars, interval_seconds

NS = 1_000_000_000
MIN = 60 * NS
HOUR = 60 * MIN
DAY = 24 * HOUR
T0 = 1_514_764_800 * NS  # 2018-01-01T00:00:00Z


def ns(text: str) -> int:
    return int(np.datetime64(text, "ns").astype(np.int64))


def reference_decisions(
    open_ts: np.ndarray, bar_seconds: int, interval_s: int, previous_close: int | None = None
) -> list[bool]:
    """The documented rule, one bar at a time, in Python integers."""
    step = interval_s * NS
    closes = [int(t) + bar_seconds * NS for t in open_ts]
    out = []
    for k, c in enumerate(closes):
        if k == 0:
            out.append(
                c % step == 0 if previous_close is None else c // step > previous_close // step
            )
        else:
            out.append(c // step > closes[k - 1] // step)
    return out


# ------------------------------------------------------------------ interval_seconds


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("15m", 900),
        ("1h", 3_600),
        ("4h", 14_400),
        ("1d", 86_400),
        ("30s", 30),
        ("1s", 1),
        ("90m", 5_400),
        ("7d", 604_800),
        ("168h", 604_800),
        ("604800s", 604_800),
    ],
)
def test_interval_seconds_parses(text: str, seconds: int) -> None:
    assert interval_seconds(text) == seconds


@pytest.mark.parametrize(
    "bad",
    ["0m", "1x", "", "1.5h", "8d", None, "h", "-1h", "1 h", " 1h", "1H", "169h", "604801s", "1hh"],
)
def test_bad_interval_raises_with_the_text(bad: object) -> None:
    with pytest.raises(ValueError, match="decision interval") as info:
        interval_seconds(bad)  # type: ignore[arg-type]
    assert repr(bad) in str(info.value)


def test_trailing_newline_is_not_an_interval() -> None:
    with pytest.raises(ValueError, match="decision interval"):
        interval_seconds("1h\n")


# ------------------------------------------------------------------ DecisionConfig


def test_decision_config_defaults_and_seconds() -> None:
    config = DecisionConfig()
    assert config.interval == "4h"  # chosen by bench/decision_interval.py
    assert config.seconds == 14_400
    assert config.no_trade_band == 0.05
    assert DecisionConfig(interval="15m").seconds == 900
    assert (
        msgspec.convert({"interval": "4h", "no_trade_band": 0.0}, DecisionConfig).seconds == 14_400
    )


@pytest.mark.parametrize("bad", ["0m", "1x", "", "1.5h", "8d"])
def test_decision_config_rejects_bad_interval(bad: str) -> None:
    with pytest.raises(msgspec.ValidationError, match="decision interval"):
        DecisionConfig(interval=bad)
    with pytest.raises(msgspec.ValidationError, match="decision interval"):
        msgspec.convert({"interval": bad}, DecisionConfig)


@pytest.mark.parametrize("band", [-0.01, 1.01, -1.0, 2.0])
def test_decision_config_rejects_band_out_of_unit_interval(band: float) -> None:
    with pytest.raises(msgspec.ValidationError, match="no_trade_band"):
        msgspec.convert({"no_trade_band": band}, DecisionConfig)


@pytest.mark.parametrize("band", [0.0, 0.5, 1.0])
def test_decision_config_accepts_band_bounds(band: float) -> None:
    assert msgspec.convert({"no_trade_band": band}, DecisionConfig).no_trade_band == band


def test_decision_config_forbids_unknown_fields_and_round_trips() -> None:
    with pytest.raises(msgspec.ValidationError, match="interval_"):
        msgspec.convert({"interval_": "1h"}, DecisionConfig)
    config = DecisionConfig(interval="15m", no_trade_band=0.2)
    assert msgspec.json.decode(msgspec.json.encode(config), type=DecisionConfig) == config
    assert msgspec.convert(msgspec.to_builtins(config), DecisionConfig) == config


# ------------------------------------------------------------------ decision_bars


@pytest.mark.parametrize(("interval", "seconds"), [("15m", 900), ("1h", 3_600), ("4h", 14_400)])
@pytest.mark.parametrize("start_minute", [0, 7, 59])
def test_contiguous_minutes_decide_exactly_on_the_boundaries(
    interval: str, seconds: int, start_minute: int
) -> None:
    ts = T0 + start_minute * MIN + MIN * np.arange(3 * 1440, dtype=np.int64)
    got = decision_bars(ts, 60, interval)
    close = ts + MIN
    assert got.dtype == np.bool_
    assert got.shape == ts.shape
    np.testing.assert_array_equal(got, close % (seconds * NS) == 0)
    np.testing.assert_array_equal(got, reference_decisions(ts, 60, seconds))
    assert got.sum() == (close[-1] // (seconds * NS)) - (close[0] - 1) // (seconds * NS)


def test_hourly_decisions_close_at_the_full_hour() -> None:
    ts = T0 + 13 * MIN + MIN * np.arange(600, dtype=np.int64)  # 00:13 .. 10:12 opens
    got = decision_bars(ts, 60.0, "1h")
    closes = (ts[got] + MIN).astype("datetime64[ns]")
    assert [str(c)[11:16] for c in closes] == [f"{h:02d}:00" for h in range(1, 11)]


def test_daily_decisions_at_utc_midnight() -> None:
    ts = T0 + HOUR * np.arange(24 * 5, dtype=np.int64)  # hourly bars
    got = decision_bars(ts, 3_600, "1d")
    np.testing.assert_array_equal(ts[got] + HOUR, T0 + DAY * np.arange(1, 6))


def test_interval_as_integer_seconds() -> None:
    ts = T0 + 3 * MIN + MIN * np.arange(500, dtype=np.int64)
    np.testing.assert_array_equal(decision_bars(ts, 60, 900), decision_bars(ts, 60, "15m"))
    np.testing.assert_array_equal(decision_bars(ts, 60, 3_600), decision_bars(ts, 60, "1h"))


def test_gap_across_a_boundary_decides_on_the_first_bar_after_it() -> None:
    opens = [ns(f"2018-01-01T13:{m:02d}") for m in range(40, 55)]  # closes 13:41 .. 13:55
    opens += [ns("2018-01-01T14:30"), ns("2018-01-01T14:31")]  # gap over 14:00
    opens += [ns(f"2018-01-01T{h}") for h in ("14:59", "15:00")]  # 15:00 close decides
    opens += [ns("2018-01-01T18:07"), ns("2018-01-01T18:08")]  # gap over three boundaries
    opens += [ns("2018-01-01T18:20")]  # gap inside the hour: no decision
    ts = np.array(opens, dtype=np.int64)
    got = decision_bars(ts, 60, "1h")
    closes = [str((t + MIN).astype("datetime64[ns]"))[11:16] for t in ts[got]]
    assert closes == ["14:31", "15:00", "18:08"]
    np.testing.assert_array_equal(got, reference_decisions(ts, 60, 3_600))


def test_gap_spanning_several_boundaries_is_one_decision() -> None:
    ts = np.array([T0 + 5 * MIN, T0 + 3 * DAY + 5 * MIN], dtype=np.int64)
    np.testing.assert_array_equal(decision_bars(ts, 60, "1h"), [False, True])
    np.testing.assert_array_equal(decision_bars(ts, 60, "1d"), [False, True])


@pytest.mark.parametrize(
    ("first_open", "expected"),
    [
        ("2018-01-01T13:59", True),  # close 14:00: on the boundary
        ("2018-01-01T14:00", False),  # close 14:01
        ("2018-01-01T13:30", False),
    ],
)
def test_first_bar_without_previous_close(first_open: str, expected: bool) -> None:
    ts = ns(first_open) + MIN * np.arange(3, dtype=np.int64)
    assert bool(decision_bars(ts, 60, "1h")[0]) is expected


@pytest.mark.parametrize(
    ("previous_close", "expected"),
    [
        ("2018-01-01T13:58", True),  # the hour changed between that close and 14:01
        ("2018-01-01T13:59:59.999999999", True),
        ("2018-01-01T14:00", False),  # 14:00 was already decided by the previous bar
        ("2018-01-01T11:10", True),
    ],
)
def test_first_bar_with_previous_close(previous_close: str, expected: bool) -> None:
    ts = ns("2018-01-01T14:00") + MIN * np.arange(3, dtype=np.int64)  # first close 14:01
    got = decision_bars(ts, 60, "1h", previous_close_ts=ns(previous_close))
    assert bool(got[0]) is expected
    assert not got[1:].any()


def test_empty_input() -> None:
    got = decision_bars(np.zeros(0, dtype=np.int64), 60, "1h")
    assert got.shape == (0,)
    assert got.dtype == np.bool_


@pytest.mark.parametrize(
    ("bar_seconds", "interval"),
    [(3_600, "15m"), (300, "1m"), (86_400, "4h"), (60, "30s"), (60, 59), (60, 0), (60, -60)],
)
def test_interval_shorter_than_the_bar_raises(bar_seconds: int, interval: str | int) -> None:
    ts = T0 + bar_seconds * NS * np.arange(10, dtype=np.int64)
    with pytest.raises(ValueError, match="shorter"):
        decision_bars(ts, bar_seconds, interval)


def test_interval_equal_to_the_bar_decides_every_aligned_bar() -> None:
    ts = T0 + MIN * np.arange(100, dtype=np.int64)
    assert decision_bars(ts, 60, "1m").all()
    assert decision_bars(ts, 60, 60).all()


@pytest.mark.parametrize("bad", ["1x", "", "1.5h", "8d"])
def test_malformed_interval_raises(bad: str) -> None:
    with pytest.raises(ValueError, match="decision interval"):
        decision_bars(T0 + MIN * np.arange(5, dtype=np.int64), 60, bad)


# ------------------------------------------------------------------ properties

INTERVALS = {"1m": 60, "5m": 300, "15m": 900, "1h": 3_600, "4h": 14_400, "1d": 86_400}

opens_strategy = st.builds(
    lambda start, steps: (
        T0
        + start * MIN
        + np.concatenate([[0], np.cumsum(np.array(steps, dtype=np.int64))]).astype(np.int64) * MIN
    ),
    st.integers(0, 2_000),
    st.lists(
        st.one_of(st.just(1), st.integers(1, 5), st.integers(1, 3_000)), min_size=0, max_size=200
    ),
)


@settings(max_examples=150, deadline=None)
@given(
    ts=opens_strategy,
    interval=st.sampled_from(sorted(INTERVALS)),
    data=st.data(),
)
def test_decisions_equal_reference_and_are_causal(
    ts: np.ndarray, interval: str, data: st.DataObject
) -> None:
    full = decision_bars(ts, 60, interval)
    np.testing.assert_array_equal(full, reference_decisions(ts, 60, INTERVALS[interval]))

    k = data.draw(st.integers(1, ts.size), label="k")
    # later bars removed
    np.testing.assert_array_equal(decision_bars(ts[:k], 60, interval), full[:k])
    # later bars altered (still increasing)
    new_steps = data.draw(st.lists(st.integers(1, 5_000), min_size=0, max_size=50), label="tail")
    tail = ts[k - 1] + MIN * np.cumsum(np.array(new_steps, dtype=np.int64))
    altered = np.concatenate([ts[:k], tail]).astype(np.int64)
    np.testing.assert_array_equal(decision_bars(altered, 60, interval)[:k], full[:k])
    # streaming: the rest, given the close of the bar before it, continues the same schedule
    rest = decision_bars(ts[k:], 60, interval, previous_close_ts=int(ts[k - 1]) + MIN)
    np.testing.assert_array_equal(rest, full[k:])


@settings(max_examples=100, deadline=None)
@given(
    offsets=st.lists(st.integers(0, 10 * DAY), min_size=1, max_size=100, unique=True),
    bar_seconds=st.sampled_from([1, 30, 60, 300, 3_600]),
    interval=st.sampled_from(sorted(INTERVALS)),
    previous=st.one_of(st.none(), st.integers(-2 * DAY, 0)),
)
def test_nanosecond_opens_equal_reference(
    offsets: list[int], bar_seconds: int, interval: str, previous: int | None
) -> None:
    seconds = INTERVALS[interval]
    ts = T0 + np.array(sorted(offsets), dtype=np.int64)
    prev = None if previous is None else int(ts[0]) + bar_seconds * NS + previous
    if seconds < bar_seconds:
        with pytest.raises(ValueError, match="shorter"):
            decision_bars(ts, bar_seconds, interval, previous_close_ts=prev)
        return
    got = decision_bars(ts, bar_seconds, interval, previous_close_ts=prev)
    np.testing.assert_array_equal(got, reference_decisions(ts, bar_seconds, seconds, prev))


# ------------------------------------------------------------------ real candles


def test_hourly_decisions_on_btcusd_2018(shared_data_dir: Path) -> None:
    candles = load_ohlcv(shared_data_dir / "btcusd_bitfinex_1m_2018.parquet")
    assert candles.interval_seconds == 60.0
    ts = np.asarray(candles.ts)
    got = decision_bars(ts, candles.interval_seconds, "1h")

    close = ts + MIN
    # independent derivation: every clock hour entered by some close gets exactly one decision,
    # at its first close; the first bar (close 00:01, off the boundary) is not one
    hours = close.astype("datetime64[ns]").astype("datetime64[h]")
    distinct, first = np.unique(hours, return_index=True)
    assert close[0] % HOUR != 0
    expected = first[1:]
    np.testing.assert_array_equal(np.flatnonzero(got), expected)
    assert int(got.sum()) == distinct.size - 1
    # closes run from 2018-01-01 00:01 to 2019-01-01 00:00 and no gap (68 minutes at most) empties
    # a whole clock hour: one decision for each of the 8,760 hour boundaries of the year
    assert distinct.size == distinct[-1].astype(np.int64) - distinct[0].astype(np.int64) + 1
    assert int(got.sum()) == 8_760

    # contiguous decisions close exactly on the hour; off-hour ones follow a gap over the hour
    idx = np.flatnonzero(got)
    contiguous = ts[idx] - ts[idx - 1] == MIN
    assert np.all(close[idx[contiguous]] % HOUR == 0)
    assert np.all(close[idx[~contiguous]] // HOUR > close[idx[~contiguous] - 1] // HOUR)
    assert (~contiguous).sum() > 0  # the data do have gaps across hour boundaries
    assert np.any(close[idx[~contiguous]] % HOUR != 0)  # decided late, after the gap, not skipped
    # and every bar whose close is on the hour is a decision bar
    assert np.all(got[close % HOUR == 0])
