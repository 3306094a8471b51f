"""The ingest service's candle feeds (colmena.services.feeds) on a real nats-server: the replay
of several symbols merged in time order and resumed after a restart, and the exchange feed
against a local Binance-format server through a real ccxt client, with the clock and the waits
in the test's hands (no network, no real waiting for a poll)."""

from __future__ import annotations

import asyncio
import logging
import math
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from colmena.execution.trading_loop import Bar
from colmena.live import wire
from colmena.services.bus import STREAM, Bus
from colmena.services.config import ConfigError, LiveConfig, load_config
from colmena.services.feeds import (
    ExchangeFeed,
    FeedError,
    PollReport,
    ReplayFeed,
    make_feed,
    screen_candles,
)
from colmena.services.nats_server import EmbeddedNatsServer
from colmena.units import NS_PER_MS
from fake_exchange import MINUTE_MS, FakeBinance, kline
from helpers import run_cli

T0_MS = 1_677_628_800_000  # 2023-03-01 00:00 UTC
MINUTE_NS = MINUTE_MS * NS_PER_MS
SYMBOLS = ("BTC/USDT", "ETH/USDT")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[EmbeddedNatsServer]:
    with EmbeddedNatsServer(tmp_path / "nats") as nats_server:
        yield nats_server


@pytest.fixture
def feed_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """The feed's log records (the handler on the module's logger itself, enabled: a library
    imported by another test may have configured logging with disable_existing_loggers), each
    record once."""
    logger = logging.getLogger("colmena.services.feeds")
    logger.addHandler(caplog.handler)
    was_disabled, logger.disabled = logger.disabled, False
    propagated, logger.propagate = logger.propagate, False  # each record once
    try:
        with caplog.at_level(logging.INFO, logger="colmena.services.feeds"):
            yield caplog
    finally:
        logger.removeHandler(caplog.handler)
        logger.disabled, logger.propagate = was_disabled, propagated


def _walk(n: int, seed: int, start_ms: int = T0_MS) -> list[tuple[int, float, float, float,
                                                                   float, float]]:  # fmt: skip
    """``n`` one-minute candles from ``start_ms`` on: (open ms, o, h, l, c, v), a random walk."""
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.001, n)))
    opens = np.concatenate([[100.0], close[:-1]])
    out = []
    for i in range(n):
        o, c = float(opens[i]), float(close[i])
        out.append((start_ms + i * MINUTE_MS, o, max(o, c) * 1.0005, min(o, c) * 0.9995, c,
                    float(rng.uniform(1, 10))))  # fmt: skip
    return out


def _bar(row: tuple[int, float, float, float, float, float]) -> Bar:
    return Bar(row[0] * NS_PER_MS, *row[1:])


async def _candles(url: str) -> list[wire.CandleMessage]:
    """Every candle in the stream, in stream order (a fresh ephemeral consumer)."""
    bus = await Bus.connect(url)
    try:
        total = await bus.stream_messages()
        if total == 0:
            return []
        sub = await bus.jetstream.pull_subscribe(wire.subject_filter("candle"), stream=STREAM)
        out: list[wire.CandleMessage] = []
        while len(out) < total:
            for raw in await sub.fetch(1_000, timeout=10.0):
                message = wire.decode("candle", raw.data)
                assert isinstance(message, wire.CandleMessage)
                out.append(message)
                await raw.ack()
        await sub.unsubscribe()
        return out
    finally:
        await bus.close()


def _config(**feed: Any) -> LiveConfig:
    symbols = feed.pop("symbols", [{"symbol": s, "checkpoint": "unused"} for s in SYMBOLS])
    return msgspec.convert({"bar_seconds": 60, "symbols": symbols, "feed": feed}, LiveConfig)


# ---------------------------------------------------------------- replay


def _write(path: Path, rows: list[tuple[int, float, float, float, float, float]]) -> Path:
    columns = list(zip(*rows, strict=True))
    pq.write_table(pa.table({
        "ts": pa.array(np.asarray(columns[0], dtype=np.int64) * NS_PER_MS, pa.timestamp("ns")),
        **{n: np.asarray(c) for n, c in zip(("open", "high", "low", "close", "volume"),
                                            columns[1:], strict=True)},
    }), path)  # fmt: skip
    return path


@pytest.fixture
def replay_files(tmp_path: Path) -> dict[str, list[tuple[int, float, float, float, float, float]]]:
    """BTC from minute 0 to 119, ETH from minute 40 to 179 with a gap of 10 minutes at 100."""
    btc = _walk(120, seed=1)
    eth = [r for r in _walk(140, seed=2, start_ms=T0_MS + 40 * MINUTE_MS)
           if not T0_MS + 100 * MINUTE_MS <= r[0] < T0_MS + 110 * MINUTE_MS]  # fmt: skip
    _write(tmp_path / "btc.parquet", btc)
    _write(tmp_path / "eth.parquet", eth)
    return {"BTC/USDT": btc, "ETH/USDT": eth}


def _replay_config(tmp_path: Path, speed: float = 0.0) -> LiveConfig:
    symbols = [
        {"symbol": s, "checkpoint": "c", "candles": str(tmp_path / name)}
        for s, name in (("BTC/USDT", "btc.parquet"), ("ETH/USDT", "eth.parquet"))
    ]
    return _config(kind="replay", speed=speed, symbols=symbols)


def _merged(files: dict[str, list[tuple[int, float, float, float, float, float]]]
            ) -> list[tuple[int, int, str]]:  # fmt: skip
    """(open ns, symbol's position, symbol) of every candle, in the order they must come."""
    return sorted((r[0] * NS_PER_MS, k, s) for k, (s, rows) in enumerate(files.items())
                  for r in rows)  # fmt: skip


def test_replay_merges_the_symbols_in_time_order_and_resumes_after_a_restart(
    server: EmbeddedNatsServer,
    tmp_path: Path,
    replay_files: dict[str, list[tuple[int, float, float, float, float, float]]],
) -> None:
    expected = _merged(replay_files)
    waits: list[float] = []

    async def run() -> tuple[int, int, int]:
        # A crash left BTC 30 candles ahead of ETH (a feed stopped between two publishes).
        bus = await Bus.connect(server.url)
        for row in replay_files["BTC/USDT"][:30]:
            await bus.publish(wire.CandleMessage(symbol="BTC/USDT", ts=row[0] * NS_PER_MS,
                                                 bar_seconds=60, bar=_bar(row)))  # fmt: skip
        # The next run is stopped after 50 bars of waiting at speed 60 (1 s per bar).
        stop = asyncio.Event()

        async def sleep(seconds: float) -> None:
            waits.append(seconds)
            if len(waits) == 50:
                stop.set()

        first = await ReplayFeed(_replay_config(tmp_path, speed=60.0), sleep=sleep).run(bus, stop)
        # Restarted: it resumes after the stream's newest candle of each symbol.
        second = await ReplayFeed(_replay_config(tmp_path)).run(bus, asyncio.Event())
        third = await ReplayFeed(_replay_config(tmp_path)).run(bus, asyncio.Event())
        await bus.close()
        return first, second, third

    first, second, third = asyncio.run(run())
    assert third == 0  # the files are done: nothing is published twice
    got = asyncio.run(_candles(server.url))
    assert first + second + 30 == len(got) == len(expected) == 120 + 130
    # Time order across symbols, except that the 30 published before the crash came first.
    assert [(m.ts, m.symbol) for m in got[30:]] == [
        (ts, s) for ts, _, s in expected if not (s == "BTC/USDT" and ts < T0_MS * NS_PER_MS +
                                                 30 * MINUTE_NS)
    ]  # fmt: skip
    assert waits == [1.0] * 50  # bar_seconds / speed per bar, none within one bar
    for symbol, rows in replay_files.items():
        mine = [m for m in got if m.symbol == symbol]
        assert [m.bar for m in mine] == [_bar(r) for r in rows]  # every candle once, exact
        assert all(m.bar_seconds == 60 and m.ts == m.bar.ts for m in mine)
    keys = [wire.idempotency_key(m) for m in got]
    assert len(keys) == len(set(keys))


def test_replay_names_every_bad_field_at_once(tmp_path: Path) -> None:
    _write(tmp_path / "five.parquet", _walk(10, seed=3)[::5])  # five-minute candles
    (tmp_path / "broken.csv").write_text("ts,open,high,low,close,volume\n1,2,1,3,2,1\n")
    config = _config(kind="replay", symbols=[
        {"symbol": "BTC/USDT", "checkpoint": "c"},
        {"symbol": "ETH/USDT", "checkpoint": "c", "candles": str(tmp_path / "missing.parquet")},
        {"symbol": "SOL/USDT", "checkpoint": "c", "candles": str(tmp_path / "five.parquet")},
        {"symbol": "XRP/USDT", "checkpoint": "c", "candles": str(tmp_path / "broken.csv")},
    ])  # fmt: skip
    with pytest.raises(FeedError) as info:
        make_feed(config)
    message = str(info.value)
    assert "\n" not in message
    assert 'symbols[0].candles (BTC/USDT): no candle file to replay: give candles = "FILE"' in (
        message
    )
    assert "symbols[1].candles (ETH/USDT): " in message
    assert "missing.parquet: file not found" in (message)
    assert "symbols[2].candles (SOL/USDT): " in message
    assert "300 s candles, but bar_seconds is 60" in message
    assert "symbols[3].candles (XRP/USDT): " in message
    assert "column 'high'" in message
    single = _config(kind="replay", symbols=[{"symbol": "BTC/USDT", "checkpoint": "c"}])
    with pytest.raises(FeedError, match=r'give candles = "FILE" \(or \[feed\] path = "FILE"\)$'):
        make_feed(single)


def test_replay_config_errors_are_named_and_one_line_in_the_cli(tmp_path: Path) -> None:
    config = tmp_path / "colmena.toml"
    config.write_text(
        "[[symbols]]\nsymbol = 'BTC/USDT'\ncheckpoint = 'c'\n"
        "[[symbols]]\nsymbol = 'ETH/USDT'\ncheckpoint = 'c'\ncandles = ''\n"
        "[feed]\nkind = 'replay'\npath = 'x.parquet'\n"
    )
    with pytest.raises(
        ConfigError, match=r"candles must name a candle file .* at `\$.symbols\[1\]`"
    ):
        load_config(config)
    config.write_text(config.read_text().replace("candles = ''", "candles = 'eth.parquet'"))
    two = r"feed.path names the candle file of a single symbol, and there are 2: give each "
    with pytest.raises(ConfigError, match=two + r"\[\[symbols\]\] entry its own candles"):
        load_config(config)
    # A file the feed cannot use: exit 2 with one line, before any NATS server is needed.
    config.write_text(
        f"[[symbols]]\nsymbol = 'BTC/USDT'\ncheckpoint = 'c'\ncandles = '{tmp_path / 'no.csv'}'\n"
    )
    done = run_cli(["serve", "ingest", "--config", str(config), "--nats", "nats://127.0.0.1:9"],
                   timeout=60)  # fmt: skip
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "symbols[0].candles (BTC/USDT): " in lines[0]
    assert "no.csv: file not found" in lines[0]


@pytest.mark.parametrize(
    ("feed", "message"),
    [
        ({"kind": "websocket"}, r"Invalid enum value 'websocket' - at `\$.feed.kind`"),
        ({"limit": 1}, r"Expected `int` >= 2 - at `\$.feed.limit`"),
        ({"poll_seconds": 0.5}, r"Expected `float` >= 1.0 - at `\$.feed.poll_seconds`"),
        ({"max_attempts": 0}, r"at `\$.feed.max_attempts`"),
        ({"timeout_seconds": 0}, r"at `\$.feed.timeout_seconds`"),
        ({"backoff_seconds": -1}, r"at `\$.feed.backoff_seconds`"),
        ({"exchange": "Binance US"}, r"exchange 'Binance US' is not a ccxt exchange id"),
        ({"api_url": "ftp://h"}, r"api_url must be http\(s\)://host\[:port\]"),
        ({"api_url": "http://u:hunter2@h"}, r"api_url carries credentials"),
        ({"path": "", "exchange": "?"},
         r"path must name a candle file \(or be left out\); exchange '\?' is not a ccxt"),
        ({"surprise": 1}, r"unknown field `surprise` - at `\$.feed`"),
    ],
)  # fmt: skip
def test_feed_settings_name_every_bad_field(
    tmp_path: Path, feed: dict[str, Any], message: str
) -> None:
    path = tmp_path / "colmena.toml"
    path.write_text("[feed]\n" + "".join(f"{k} = {v!r}\n" for k, v in feed.items()))
    with pytest.raises(ConfigError, match=message) as info:
        load_config(path)
    assert "hunter2" not in str(info.value)


def test_feed_settings_defaults_follow_the_design_documents() -> None:
    feed = LiveConfig().feed
    assert (feed.kind, feed.poll_seconds, feed.limit) == ("replay", 60.0, 1000)
    assert (feed.timeout_seconds, feed.max_attempts, feed.api_url) == (10.0, 5, None)


# ---------------------------------------------------------------- exchange


@st.composite
def _candle_rows(draw: st.DrawFn) -> list[Any]:
    """A ccxt row: mostly a valid candle, at times one field broken (NaN, inf, <= 0, high and
    low swapped), at times half a minute off the bar grid."""
    ms = T0_MS + draw(st.integers(0, 10)) * MINUTE_MS + draw(st.sampled_from([0, 0, 0, 30_000]))
    lo = draw(st.sampled_from([1.0, 2.0]))
    o, c = draw(st.sampled_from([lo, lo + 0.5, lo + 1.0])), draw(st.sampled_from([lo, lo + 1.0]))
    h = max(o, c) + draw(st.sampled_from([0.0, 0.5]))
    row: list[Any] = [ms, o, h, lo, c, draw(st.sampled_from([0.0, 1.0, 7.5]))]
    if draw(st.integers(0, 3)) == 0:
        field = draw(st.integers(1, 5))
        row[field] = draw(st.sampled_from([float("nan"), float("inf"), -1.0, 0.0]))
    elif draw(st.integers(0, 5)) == 0:
        row[2], row[3] = row[3] - 0.25, row[2]
    return row


_ROWS = st.one_of(
    _candle_rows(),
    _candle_rows(),
    _candle_rows(),
    st.sampled_from([None, [], [T0_MS], [T0_MS, None, 1.0, 1.0, 1.0, 1.0], [True, 1, 1, 1, 1, 1],
                     [T0_MS + 0.5, 1.0, 1.0, 1.0, 1.0, 1.0], {"ts": T0_MS}]),
)  # fmt: skip


def _reference(rows: list[Any], newest: int | None, now: int) -> list[Bar]:
    """What must be published, by the rules written out directly (not the feed's code)."""

    def readable(row: Any) -> bool:
        return (isinstance(row, list) and len(row) == 6 and type(row[0]) is int
                and all(isinstance(x, float) for x in row[1:]))  # fmt: skip

    first: dict[int, list[Any]] = {}
    for row in sorted((r for r in rows if readable(r)), key=lambda r: r[0]):  # stable
        first.setdefault(row[0], row)
    out = []
    for ms, (_, o, h, lo, c, v) in sorted(first.items()):
        ts = ms * NS_PER_MS
        prices = np.array([o, h, lo, c])
        if (
            (newest is None or ts > newest)
            and ts + MINUTE_NS <= now
            and ts % MINUTE_NS == 0
            and np.isfinite(prices).all() and (prices > 0).all()
            and np.isfinite(v) and v >= 0
            and lo <= min(o, c) and max(o, c) <= h
        ):  # fmt: skip
            out.append(Bar(ts, o, h, lo, c, v))
    return out


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(
    rows=st.lists(_ROWS, min_size=8, max_size=40),
    newest=st.none() | st.integers(0, 8).map(lambda k: (T0_MS + k * MINUTE_MS) * NS_PER_MS),
    now=st.integers(0, 25).map(lambda k: (T0_MS + k * 30_000) * NS_PER_MS),
)
def test_screening_publishes_exactly_the_closed_new_unique_valid_candles(
    rows: list[Any], newest: int | None, now: int
) -> None:
    screened = screen_candles(rows, newest_ts=newest, now_ns=now, bar_seconds=60)
    assert list(screened.bars) == _reference(rows, newest, now)
    assert [b.ts for b in screened.bars] == sorted({b.ts for b in screened.bars})
    # Every row is accounted for, once.
    assert screened.fetched == len(rows) == (
        len(screened.bars) + screened.forming + screened.already_published
        + len(screened.duplicates) + len(screened.rejected)
    )  # fmt: skip


@pytest.fixture
def market() -> dict[str, list[tuple[int, float, float, float, float, float]]]:
    """1,500 one-minute candles of each symbol from T0 on."""
    return {s: _walk(1_500, seed=10 + k) for k, s in enumerate(SYMBOLS)}


@pytest.fixture
def exchange(
    market: dict[str, list[tuple[int, float, float, float, float, float]]],
) -> Iterator[FakeBinance]:
    pytest.importorskip("ccxt")
    fake = FakeBinance({s: [kline(*r) for r in rows] for s, rows in market.items()})
    yield fake
    fake.close()


class Driver:
    """The exchange feed's clock and sleep in the test's hands: ``now_ms`` is the clock of
    both the feed and the fake exchange; ``sleep`` records the seconds asked for and returns."""

    def __init__(self, exchange: FakeBinance, now_ms: int) -> None:
        self.exchange = exchange
        self.now_ms = now_ms
        self.waits: list[float] = []

    @property
    def now_ms(self) -> int:
        return self._now_ms

    @now_ms.setter
    def now_ms(self, value: int) -> None:
        self._now_ms = value
        self.exchange.now_ms = value

    def clock(self) -> int:
        return self._now_ms * NS_PER_MS

    async def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)


def _exchange_config(fake: FakeBinance, **feed: Any) -> LiveConfig:
    settings = {"kind": "exchange", "exchange": "binance", "api_url": fake.url, "limit": 50,
                "backoff_seconds": 0.5, "max_attempts": 3} | feed  # fmt: skip
    return _config(**settings)


def _minute(i: int, seconds: int = 0) -> int:
    """The time ``i`` minutes and ``seconds`` after T0, in ms."""
    return T0_MS + i * MINUTE_MS + seconds * 1_000


def _forming_rewrite(driver: Driver) -> Any:
    """A rewrite that sends the newest candle, while it is forming, with a different close (as
    an exchange does mid-minute)."""

    def rewrite(symbol: str, rows: list[list[object]]) -> list[list[object]]:
        last = rows[-1]
        if int(str(last[0])) + MINUTE_MS > driver.now_ms:
            rows[-1] = [*last[:4], last[3], *last[5:]]  # close at the low so far
        return rows

    return rewrite


def test_exchange_feed_publishes_closed_candles_once_each(
    server: EmbeddedNatsServer,
    exchange: FakeBinance,
    market: dict[str, list[tuple[int, float, float, float, float, float]]],
) -> None:
    driver = Driver(exchange, _minute(100, 30))  # candle 100 is forming
    exchange.rewrite = _forming_rewrite(driver)
    reports: list[PollReport] = []

    async def run() -> None:
        bus = await Bus.connect(server.url)
        feed = ExchangeFeed(_exchange_config(exchange), clock=driver.clock, sleep=driver.sleep)
        try:
            await feed.start(bus, asyncio.Event())
            assert feed.timeframe == "1m"
            reports.append(await feed.poll())  # candles 51..99 closed, 100 forming
            driver.now_ms = _minute(100, 59)
            reports.append(await feed.poll())  # still forming: nothing new
            driver.now_ms = _minute(101, 0)
            reports.append(await feed.poll())  # 100 has closed, 101 forming
            driver.now_ms = _minute(103, 1)
            reports.append(await feed.poll())  # 101 and 102 closed
            assert feed.newest("BTC/USDT") == _minute(102) * NS_PER_MS
        finally:
            await feed.close()
            await bus.close()

    asyncio.run(run())
    for symbol in SYMBOLS:
        counts = [(r.of(symbol).fetched, r.of(symbol).published, r.of(symbol).forming,
                   r.of(symbol).already_published) for r in reports]  # fmt: skip
        assert counts == [(50, 49, 1, 0), (50, 0, 1, 49), (50, 1, 1, 48), (50, 2, 1, 47)]
        assert all(r.of(symbol).attempts == 1 and r.of(symbol).error is None for r in reports)
    got = asyncio.run(_candles(server.url))
    for symbol, rows in market.items():
        mine = [m.bar for m in got if m.symbol == symbol]
        # Exactly the closed candles, each once, with their final values (not the forming ones).
        assert mine == [_bar(r) for r in rows[51:103]]
    # Both symbols advance together, poll by poll.
    assert [m.symbol for m in got[:98]] == ["BTC/USDT"] * 49 + ["ETH/USDT"] * 49
    assert all(m.bar_seconds == 60 for m in got)


def test_bad_and_repeated_candles_are_skipped_with_a_warning(
    server: EmbeddedNatsServer,
    exchange: FakeBinance,
    market: dict[str, list[tuple[int, float, float, float, float, float]]],
    feed_log: pytest.LogCaptureFixture,
) -> None:
    driver = Driver(exchange, _minute(200))
    bad_ms, repeated_ms = _minute(180), _minute(190)

    def rewrite(symbol: str, rows: list[list[object]]) -> list[list[object]]:
        out = []
        for row in rows:
            if symbol == "BTC/USDT" and row[0] == bad_ms:
                row = [row[0], row[1], row[3], row[2], *row[4:]]  # high and low swapped
            if symbol == "ETH/USDT" and row[0] == repeated_ms + MINUTE_MS:
                row = [repeated_ms, "1.0", "1.0", "1.0", "1.0", "1.0", *row[6:]]  # a second copy
            out.append(row)
        return out

    exchange.rewrite = rewrite

    async def run() -> list[PollReport]:
        bus = await Bus.connect(server.url)
        feed = ExchangeFeed(_exchange_config(exchange), clock=driver.clock, sleep=driver.sleep)
        try:
            await feed.start(bus, asyncio.Event())
            first = await feed.poll()
            driver.now_ms = _minute(201)
            return [first, await feed.poll()]
        finally:
            await feed.close()
            await bus.close()

    reports = asyncio.run(run())
    btc, eth = reports[0].of("BTC/USDT"), reports[0].of("ETH/USDT")
    assert (btc.fetched, btc.published, btc.invalid, btc.missing_bars) == (50, 48, 1, 1)
    assert (eth.fetched, eth.published, eth.duplicates, eth.invalid) == (50, 48, 1, 0)
    # The next poll does not warn again about what lies before the newest published candle.
    assert (reports[1].of("BTC/USDT").published, reports[1].of("BTC/USDT").invalid) == (1, 0)
    assert reports[1].of("ETH/USDT").duplicates == 0
    got = asyncio.run(_candles(server.url))
    btc_bars = [m.bar for m in got if m.symbol == "BTC/USDT"]
    assert btc_bars == [_bar(r) for r in market["BTC/USDT"][151:201] if r[0] != bad_ms]
    assert [m.bar for m in got if m.symbol == "ETH/USDT"] == [
        _bar(r) for r in market["ETH/USDT"][151:201] if r[0] != repeated_ms + MINUTE_MS
    ]
    text = feed_log.text
    assert "binance BTC/USDT: candle 2023-03-01T03:00:00Z skipped: high (" in text
    assert "binance BTC/USDT: gap of 1 bars between 2023-03-01T02:59:00Z and " \
        "2023-03-01T03:01:00Z" in text  # fmt: skip
    assert "binance ETH/USDT: candle 2023-03-01T03:10:00Z repeated in one answer" in text
    assert text.count("skipped") == 1
    assert text.count("repeated") == 1


def test_a_gap_longer_than_the_window_is_reported_after_a_restart(
    server: EmbeddedNatsServer,
    exchange: FakeBinance,
    market: dict[str, list[tuple[int, float, float, float, float, float]]],
    feed_log: pytest.LogCaptureFixture,
) -> None:
    driver = Driver(exchange, _minute(100))

    async def run() -> list[PollReport]:
        reports = []
        for now in (_minute(100), _minute(100), _minute(400)):  # restarted twice
            driver.now_ms = now
            bus = await Bus.connect(server.url)
            feed = ExchangeFeed(_exchange_config(exchange), clock=driver.clock, sleep=driver.sleep)
            try:
                await feed.start(bus, asyncio.Event())
                reports.append(await feed.poll())
            finally:
                await feed.close()
                await bus.close()
        return reports

    first, again, later = asyncio.run(run())
    assert first.published == 2 * 49
    assert again.published == 0
    assert later.of("BTC/USDT").missing_bars == later.of("ETH/USDT").missing_bars == 251
    got = asyncio.run(_candles(server.url))
    assert [m.bar for m in got if m.symbol == "BTC/USDT"] == [
        _bar(r) for r in market["BTC/USDT"][51:100] + market["BTC/USDT"][351:400]
    ]
    assert (
        "binance BTC/USDT: 251 bars missing between 2023-03-01T01:39:00Z (the newest published) "
        "and 2023-03-01T05:51:00Z (the oldest fetched): longer than the window of 50 candles, "
        "the gap cannot be filled"
    ) in feed_log.text


def test_the_stream_drops_what_a_second_feed_publishes_again(
    server: EmbeddedNatsServer,
    exchange: FakeBinance,
    market: dict[str, list[tuple[int, float, float, float, float, float]]],
) -> None:
    """Two feeds started on the same stream (each sees it empty): the second one's candles are
    dropped by the stream's Nats-Msg-Id dedupe, the guard behind the feed's own."""
    driver = Driver(exchange, _minute(100))

    async def run() -> list[PollReport]:
        bus = await Bus.connect(server.url)
        feeds = [ExchangeFeed(_exchange_config(exchange), clock=driver.clock, sleep=driver.sleep)
                 for _ in range(2)]  # fmt: skip
        try:
            for feed in feeds:
                await feed.start(bus, asyncio.Event())
            return [await feed.poll() for feed in feeds]
        finally:
            for feed in feeds:
                await feed.close()
            await bus.close()

    first, second = asyncio.run(run())
    assert [(s.published, s.stream_duplicates) for s in first.symbols] == [(49, 0)] * 2
    assert [(s.published, s.stream_duplicates) for s in second.symbols] == [(0, 49)] * 2
    got = asyncio.run(_candles(server.url))
    for symbol, rows in market.items():
        assert [m.bar for m in got if m.symbol == symbol] == [_bar(r) for r in rows[51:100]]


@pytest.mark.parametrize("status", [500, 429, 503])
def test_transient_errors_are_retried_with_backoff(
    server: EmbeddedNatsServer, exchange: FakeBinance, status: int
) -> None:
    driver = Driver(exchange, _minute(100))
    exchange.fail_next, exchange.fail_status = 2, status

    async def run() -> PollReport:
        bus = await Bus.connect(server.url)
        feed = ExchangeFeed(_exchange_config(exchange), clock=driver.clock, sleep=driver.sleep)
        try:
            await feed.start(bus, asyncio.Event())  # markets load: not a kline request
            return await feed.poll()
        finally:
            await feed.close()
            await bus.close()

    report = asyncio.run(run())
    assert report.of("BTC/USDT").attempts == 3
    assert report.of("ETH/USDT").attempts == 1
    assert report.published == 98
    assert all(s.error is None for s in report.symbols)
    assert len(exchange.requests) == 4
    # Exponential backoff with full jitter: waits in [0, 0.5 * 2**k].
    assert len(driver.waits) == 2
    assert 0 <= driver.waits[0] <= 0.5
    assert 0 <= driver.waits[1] <= 1.0


@pytest.mark.parametrize(
    ("status", "code", "error", "tries"),
    [(500, -1003, "RateLimitExceeded", 3), (400, -1121, "BadSymbol", 1)],
)
def test_a_persistent_failure_keeps_the_feed_polling(
    server: EmbeddedNatsServer,
    exchange: FakeBinance,
    feed_log: pytest.LogCaptureFixture,
    status: int,
    code: int,
    error: str,
    tries: int,
) -> None:
    """An exchange that keeps failing (transient errors retried until the tries run out, or an
    error that is not worth retrying) costs polls, never the service. Transient errors open the
    circuit breaker after 3 failed requests: the other symbol is not asked, and each later poll
    sends one trial request; an answer such as an unknown symbol never opens it."""
    driver = Driver(exchange, _minute(100))
    exchange.fail_status, exchange.fail_code = status, code
    reports: list[PollReport] = []
    stop = asyncio.Event()

    def on_poll(report: PollReport) -> None:
        reports.append(report)
        if len(reports) == 3:
            exchange.fail_always = False  # the exchange is back for the fourth poll
        if len(reports) == 4:
            stop.set()

    async def sleep(seconds: float) -> None:
        driver.waits.append(seconds)
        # Every wait takes the time asked for on the test's clock, in whole seconds and at
        # least one (each backoff wait, below 2 s here, takes one).
        driver.now_ms += 1_000 * max(1, math.ceil(seconds))

    async def run() -> int:
        bus = await Bus.connect(server.url)
        feed = ExchangeFeed(_exchange_config(exchange, poll_seconds=60.0), clock=driver.clock,
                            sleep=sleep, on_poll=on_poll)  # fmt: skip
        exchange.fail_always = True
        try:
            return await feed.run(bus, stop)
        finally:
            await bus.close()

    published = asyncio.run(run())
    assert [r.published for r in reports] == [0, 0, 0, 98]
    polled = [[(s.attempts, (s.error or "").split(":")[0], s.circuit_open) for s in r.symbols]
              for r in reports[:3]]  # fmt: skip
    if error == "BadSymbol":  # an answer: the breaker stays closed, every symbol is asked
        assert polled == [[(1, error, False)] * 2] * 3
        assert feed_log.text.count(f"poll failed after 1 tries: {error}") == 3 * 2
        assert "circuit breaker" not in feed_log.text
    else:  # three tries of BTC open it; later polls: one trial each, ETH never asked
        opened = [(0, "CircuitOpenError", True)]
        assert polled == [[(3, error, False), *opened]] + [[(1, error, False), *opened]] * 2
        assert feed_log.text.count(f"poll failed after 3 tries: {error}") == 1
        assert feed_log.text.count(f"poll failed after 1 tries: {error}") == 2
        assert feed_log.text.count("circuit breaker open: ETH/USDT not polled") == 3
        assert "circuit breaker closed: the exchange answers again" in feed_log.text
    assert [s.error for s in reports[3].symbols] == [None, None]
    assert published == 98
    # poll_seconds from the start of one poll to the start of the next: the backoff's waits
    # (a second each on this clock; BTC's in the first poll, before the breaker opened) are
    # deducted.
    backoff = tries - 1
    assert len(driver.waits) == 3 + backoff
    # After the first poll the open breaker stops the retries: no backoff, a full minute.
    assert [w for w in driver.waits if w > 2] == [60.0 - backoff, 60.0, 60.0]


def test_the_circuit_breaker_opens_after_3_failures_and_half_opens_after_2_s(
    server: EmbeddedNatsServer, exchange: FakeBinance, feed_log: pytest.LogCaptureFixture
) -> None:
    """The design documents' breaker on the exchange's calls, on the feed's clock: 3 failed
    requests in a row open it; while open no request reaches the exchange; 2 s after opening
    one trial request (half-open): a failure opens it again, a success closes it."""
    driver = Driver(exchange, _minute(100))

    async def run() -> None:
        bus = await Bus.connect(server.url)
        feed = ExchangeFeed(_exchange_config(exchange, max_attempts=1), clock=driver.clock,
                            sleep=driver.sleep)  # fmt: skip
        try:
            await feed.start(bus, asyncio.Event())
            exchange.fail_always = True
            first = await feed.poll()  # BTC and ETH fail: 2 in a row
            assert [s.attempts for s in first.symbols] == [1, 1]
            assert (feed.breaker.state, feed.breaker.consecutive_failures) == ("closed", 2)
            second = await feed.poll()  # BTC fails: the third, it opens; ETH is not asked
            assert len(exchange.requests) == 3
            assert [(s.attempts, s.circuit_open) for s in second.symbols] == [(1, False), (0, True)]
            assert feed.breaker.state == "open"
            opened_ms = driver.now_ms
            driver.now_ms = opened_ms + 1_999  # not yet: every request fails fast
            third = await feed.poll()
            assert [(s.attempts, s.circuit_open) for s in third.symbols] == [(0, True)] * 2
            assert len(exchange.requests) == 3
            assert "trial call in 0.0 s" in (third.of("BTC/USDT").error or "")
            driver.now_ms = opened_ms + 2_000  # half-open: one trial, which fails: open again
            assert feed.breaker.state == "half-open"
            fourth = await feed.poll()
            assert [(s.attempts, s.circuit_open) for s in fourth.symbols] == [(1, False), (0, True)]
            assert len(exchange.requests) == 4
            assert feed.breaker.state == "open"
            exchange.fail_always = False  # the exchange is back, the breaker still open
            driver.now_ms = opened_ms + 3_999
            fifth = await feed.poll()
            assert [s.circuit_open for s in fifth.symbols] == [True, True]
            assert len(exchange.requests) == 4
            driver.now_ms = opened_ms + 4_000  # the trial succeeds: closed, ETH asked again
            sixth = await feed.poll()
            assert feed.breaker.state == "closed"
            assert [(s.attempts, s.circuit_open, s.error) for s in sixth.symbols] == [
                (1, False, None)
            ] * 2
            assert sixth.published == 2 * 49
            assert len(exchange.requests) == 6
        finally:
            await feed.close()
            await bus.close()

    asyncio.run(run())
    assert driver.waits == []  # one try per request: no backoff
    text = feed_log.text
    assert text.count("binance: circuit breaker open (3 consecutive failures): requests fail "
                      "fast without calling the exchange; one trial call in 2 s") == 1  # fmt: skip
    assert text.count("binance: circuit breaker half-open: one trial call") == 2
    assert text.count("binance: circuit breaker open (the trial call failed)") == 1
    assert text.count("binance: circuit breaker closed: the exchange answers again") == 1
    assert text.count("circuit breaker open: ETH/USDT not polled") == 2
    assert text.count("circuit breaker open: BTC/USDT, ETH/USDT not polled") == 2


def test_stop_ends_the_loop_during_the_wait_and_during_a_request(
    server: EmbeddedNatsServer, exchange: FakeBinance
) -> None:
    arrived, release = threading.Event(), threading.Event()
    polls: list[PollReport] = []

    async def run() -> tuple[int, int]:
        bus = await Bus.connect(server.url)
        try:
            # Stopped while it waits an hour for the next poll (the default, stop-aware wait).
            stop = asyncio.Event()

            def on_poll(report: PollReport) -> None:
                polls.append(report)
                asyncio.get_running_loop().call_soon(stop.set)

            config = _exchange_config(exchange, poll_seconds=3600.0)
            waited = await asyncio.wait_for(ExchangeFeed(config, on_poll=on_poll).run(bus, stop),
                                            timeout=60)  # hang detection only  # fmt: skip
            # Stopped while a request hangs at the exchange.
            stop = asyncio.Event()
            feed = ExchangeFeed(config)
            await feed.start(bus, stop)
            exchange.rewrite = _hang(arrived, release)
            task = asyncio.create_task(feed.run(bus, stop))
            assert await asyncio.to_thread(arrived.wait, 60)
            stop.set()
            in_flight = await asyncio.wait_for(task, timeout=60)  # hang detection only
            return waited, in_flight
        finally:
            release.set()
            await bus.close()

    waited, in_flight = asyncio.run(run())
    assert len(polls) == 1
    assert waited == polls[0].published == 100
    assert in_flight == 0


def _hang(arrived: threading.Event, release: threading.Event) -> Any:
    def rewrite(symbol: str, rows: list[list[object]]) -> list[list[object]]:
        arrived.set()
        release.wait(60)
        return rows

    return rewrite


def test_an_exchange_without_the_symbol_is_a_named_error(
    server: EmbeddedNatsServer, exchange: FakeBinance
) -> None:
    config = _exchange_config(
        exchange, symbols=[{"symbol": s, "checkpoint": "c"} for s in ("BTC/USDT", "DOGE/USDT")]
    )

    async def run() -> None:
        bus = await Bus.connect(server.url)
        try:
            with pytest.raises(FeedError, match=r"symbols: binance has no market DOGE/USDT"):
                await ExchangeFeed(config).run(bus, asyncio.Event())
        finally:
            await bus.close()

    asyncio.run(run())
    assert exchange.requests == []  # refused before any candle was asked for
    with pytest.raises(FeedError, match=r"feed.exchange: unknown exchange 'nosuchexchange'"):
        make_feed(_exchange_config(exchange, exchange="nosuchexchange"))
    with pytest.raises(FeedError, match=r"binance has no 7 s candles \(bar_seconds\)"):
        make_feed(msgspec.structs.replace(_exchange_config(exchange), bar_seconds=7))


def test_serve_ingest_polls_the_exchange_until_sigterm(
    server: EmbeddedNatsServer, exchange: FakeBinance, tmp_path: Path
) -> None:
    """`colmena serve ingest` as a user starts it, on the real clock (every candle of the fake
    is long closed): the first poll publishes, SIGTERM ends the hour's wait cleanly."""
    config = tmp_path / "colmena.toml"
    config.write_text(
        f'[nats]\nurl = "{server.url}"\n'
        + "".join(f'[[symbols]]\nsymbol = "{s}"\ncheckpoint = "unused"\n' for s in SYMBOLS)
        + f'[feed]\nkind = "exchange"\nexchange = "binance"\napi_url = "{exchange.url}"\n'
        "limit = 50\npoll_seconds = 3600\n"
    )

    async def published() -> int:
        bus = await Bus.connect(server.url)
        try:
            return await bus.stream_messages()
        finally:
            await bus.close()

    process = subprocess.Popen(
        [sys.executable, "-c", "from colmena.cli import main; main(prog_name='colmena')",
         "serve", "ingest", "--config", str(config)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        for _ in range(1_200):  # hang detection only: until the first poll is in the stream
            if asyncio.run(published()) == 100 or process.poll() is not None:
                break
            time.sleep(0.1)
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err
    assert "ingest: stopped after 100 messages" in err
    assert "Unclosed" not in err, err
    assert "Traceback" not in err, err
