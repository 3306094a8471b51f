"""Exchange download against a local HTTP server speaking Binance's REST format (no network)."""

from __future__ import annotations

import asyncio
import csv
import json
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("ccxt")

from colmena.cli import main
from colmena.data.exchange import (
    CircuitOpenError,
    ExchangeCircuitBreaker,
    ExchangeUnavailableError,
    download_ohlcv,
    make_client,
)
from fake_exchange import FakeBinance

MINUTE = 60_000


@pytest.fixture(scope="module")
def candles(shared_data_dir: Path) -> list[list[object]]:
    """Binance kline rows built from the real March 2023 BTC/USDT file."""
    path = shared_data_dir / "binanceus_btcusdt_1m_2023-03-01_2023-03-21.csv"
    rows = []
    with path.open(newline="") as fh:
        for r in csv.DictReader(fh):
            t = int(np.datetime64(r["open_time"].replace("+00:00", ""), "ms").astype(np.int64))
            rows.append([t, r["open"], r["high"], r["low"], r["close"], r["volume"],
                         t + MINUTE - 1, "0", 1, "0", "0", "0"])  # fmt: skip
    return rows


@pytest.fixture
def server(candles: list[list[object]]) -> Iterator[FakeBinance]:
    fake = FakeBinance(candles)
    yield fake
    fake.close()


def load(path: Path) -> dict[str, np.ndarray]:
    t = pq.read_table(path)
    return {n: t.column(n).cast(pa.int64()).to_numpy() if n == "ts" else t.column(n).to_numpy()
            for n in t.column_names}  # fmt: skip


def test_download_pages_and_matches_the_source(
    server: FakeBinance, candles: list[list[object]], tmp_path: Path
) -> None:
    until = int(candles[10_000][0])
    client = make_client("binance", api_url=server.url)
    path = download_ohlcv("binance", "BTC/USDT", "1m", days=3, until_ms=until,
                          cache_dir=tmp_path, client=client, limit=1000)  # fmt: skip
    got = load(path)
    expected = [k for k in candles if until - 3 * 86_400_000 <= k[0] < until]
    assert len(got["ts"]) == len(expected) == 3 * 1440
    np.testing.assert_array_equal(got["ts"], [k[0] for k in expected])
    np.testing.assert_array_equal(got["close"], [float(k[4]) for k in expected])
    assert len(server.requests) == 5  # ceil(4320 / 1000) pages
    assert all(r["limit"] == "1000" for r in server.requests)


def test_second_call_resumes_from_the_cache(
    server: FakeBinance, candles: list[list[object]], tmp_path: Path
) -> None:
    client = make_client("binance", api_url=server.url)
    until = int(candles[10_000][0])
    download_ohlcv("binance", "BTC/USDT", "1m", days=1, until_ms=until, cache_dir=tmp_path,
                   client=client)  # fmt: skip
    server.requests.clear()
    later = until + 500 * MINUTE
    path = download_ohlcv("binance", "BTC/USDT", "1m", days=1, until_ms=later,
                          cache_dir=tmp_path, client=client)  # fmt: skip
    assert [int(r["startTime"]) for r in server.requests] == [until]  # only the new minutes
    got = load(path)
    assert got["ts"][0] == until - 86_400_000
    assert got["ts"][-1] == later - MINUTE
    assert np.all(np.diff(got["ts"]) == MINUTE)


@pytest.mark.parametrize("status", [500, 429, 503])
def test_transient_errors_are_retried_with_backoff(
    server: FakeBinance, candles: list[list[object]], tmp_path: Path, status: int
) -> None:
    server.fail_next = 2
    server.fail_status = status
    client = make_client("binance", api_url=server.url)
    until = int(candles[3_000][0])
    path = download_ohlcv("binance", "BTC/USDT", "1m", days=0.5, until_ms=until,
                          cache_dir=tmp_path, client=client, backoff_seconds=0.01)  # fmt: skip
    assert len(load(path)["ts"]) == 720
    assert len(server.requests) == 3  # two failures, then the page


def test_persistent_failure_raises_and_keeps_the_old_cache(
    server: FakeBinance, candles: list[list[object]], tmp_path: Path
) -> None:
    client = make_client("binance", api_url=server.url)
    until = int(candles[3_000][0])
    path = download_ohlcv("binance", "BTC/USDT", "1m", days=0.5, until_ms=until,
                          cache_dir=tmp_path, client=client)  # fmt: skip
    before = path.read_bytes()
    server.fail_next = 100
    with pytest.raises(ExchangeUnavailableError, match="kept failing"):
        download_ohlcv("binance", "BTC/USDT", "1m", days=0.5, until_ms=until + 600 * MINUTE,
                       cache_dir=tmp_path, client=client, max_attempts=3,
                       backoff_seconds=0.01)  # fmt: skip
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_offline_fails_fast_and_says_to_pass_a_file(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = make_client("binance", api_url=f"http://127.0.0.1:{port}", timeout_ms=2_000)
    started = time.monotonic()
    with pytest.raises(ExchangeUnavailableError, match="candle file"):
        download_ohlcv("binance", "BTC/USDT", "1m", days=1, cache_dir=tmp_path, client=client)
    assert time.monotonic() - started < 10
    assert list(tmp_path.iterdir()) == []


def test_download_cli(server: FakeBinance, candles: list[list[object]], tmp_path: Path) -> None:
    until = int(candles[5_000][0])
    args = ["download", "--exchange", "binance", "--symbol", "BTC/USDT", "--timeframe", "1m",
            "--days", "1", "--api-url", server.url, "--cache-dir", str(tmp_path),
            "--until", str(np.datetime64(until, "ms")) + "Z"]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "1,440" in result.output


def test_backtest_cli_on_the_exchange_source(
    server: FakeBinance, candles: list[list[object]], tmp_path: Path
) -> None:
    pytest.importorskip("torch")
    until = int(candles[8_000][0])
    out = tmp_path / "run"
    args = ["backtest", "--exchange", "binance", "--symbol", "BTC/USDT", "--timeframe", "1m",
            "--days", "3", "--until", str(np.datetime64(until, "ms")) + "Z",
            "--api-url", server.url, "--cache-dir", str(tmp_path / "cache"), "--out", str(out),
            "--agents", "4", "--generations", "1", "--vae-epochs", "1",
            "--decision-interval", "15m"]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["data"]["rows"] == 3 * 1440
    assert report["data"]["file"].endswith("binance_BTCUSDT_1m.parquet")
    assert report["out_of_sample"] is True


def test_train_cli_on_the_exchange_source(
    server: FakeBinance, candles: list[list[object]], tmp_path: Path
) -> None:
    pytest.importorskip("torch")
    from colmena.persistence import checkpoint as checkpoints

    until = int(candles[8_000][0])
    out = tmp_path / "ckpt"
    source = ["--exchange", "binance", "--symbol", "BTC/USDT", "--timeframe", "1m", "--days", "3",
              "--until", str(np.datetime64(until, "ms")) + "Z", "--api-url", server.url,
              "--cache-dir", str(tmp_path / "cache")]  # fmt: skip
    args = ["train", *source, "--out", str(out), "--agents", "4", "--generations", "1",
            "--vae-epochs", "1", "--decision-interval", "15m"]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    state = checkpoints.load_latest(out)
    # Trained on the downloaded file, 3 days of the source's candles up to --until.
    (cached,) = (tmp_path / "cache").rglob("*.parquet")
    assert state.data.source == str(cached)
    assert state.data.rows == 3 * 1440
    assert state.data.last_ts == (until - 60_000) * 1_000_000
    both = CliRunner().invoke(main, ["train", "x.parquet", *source, "--out", str(out)])
    assert both.exit_code == 2
    assert "give a candle file DATA or --exchange, not both" in both.output
    neither = CliRunner().invoke(main, ["train", "--out", str(out)])
    assert neither.exit_code == 2
    assert "give a candle file DATA (Parquet or CSV) or --exchange" in neither.output


def test_download_cli_on_a_read_only_or_full_cache(
    server: FakeBinance, candles: list[list[object]], tmp_path: Path
) -> None:
    """A read-only cache folder is refused before any request (exit 2); a disk that fills up as
    the downloaded candles are cached is exit 3, one line, and no partial cache file."""
    import errno
    import os

    from colmena.atomic_write import observe_steps

    until = int(candles[5_000][0])
    args = ["download", "--exchange", "binance", "--symbol", "BTC/USDT", "--timeframe", "1m",
            "--days", "1", "--api-url", server.url, "--cache-dir", str(tmp_path / "cache"),
            "--until", str(np.datetime64(until, "ms")) + "Z"]  # fmt: skip

    def fail(step: str, err: int):  # type: ignore[no-untyped-def]
        def observer(name: str, path: Path) -> None:
            if name == step:
                raise OSError(err, os.strerror(err), str(path))

        return observer

    with observe_steps(fail("probe", errno.EROFS)):
        result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert "read-only file system" in result.output
    assert server.requests == []  # refused before any download
    with observe_steps(fail("temporary_written", errno.ENOSPC)):
        result = CliRunner().invoke(main, args)
    assert result.exit_code == 3, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert "writing the candle cache" in lines[0]
    assert "No space left on device" in lines[0]
    assert server.requests  # the download happened
    assert list((tmp_path / "cache").iterdir()) == []


# ---------------------------------------------------------------- the circuit breaker


class _Clock:
    def __init__(self) -> None:
        self.ns = 1_000 * 10**9

    def __call__(self) -> int:
        return self.ns


class _TransientError(Exception):
    """An error the breaker counts (an exchange failure)."""


class _AnswerError(Exception):
    """An error the breaker does not count (the exchange answered: e.g. an unknown symbol)."""


@given(steps=st.lists(st.tuples(st.integers(0, 3_000), st.sampled_from(["ok", "fail", "other"])),
                      max_size=40))  # fmt: skip
@settings(max_examples=150, deadline=None)
def test_circuit_breaker_follows_the_design_documents_state_machine(
    steps: list[tuple[int, str]],
) -> None:
    """Against a reference model of SPEC "Resilience": 3 consecutive failures open it; while
    open nothing is called; 2 s after opening one trial call (half-open), whose success closes
    it and whose failure opens it again; an error that is not a failure resets the count."""
    clock = _Clock()
    changes: list[tuple[str, str]] = []
    breaker = ExchangeCircuitBreaker(
        "fake", clock=clock, is_failure=lambda exc: isinstance(exc, _TransientError),
        on_change=lambda old, new: changes.append((old, new)),
    )  # fmt: skip
    state, count, opened_ns = "closed", 0, 0
    expected_changes: list[tuple[str, str]] = []

    def move(new: str) -> None:
        nonlocal state
        expected_changes.append((state, new))
        state = new

    async def run() -> None:
        nonlocal count, opened_ns
        for advance_ms, outcome in steps:
            clock.ns += advance_ms * 1_000_000
            called: list[bool] = []

            async def call(outcome: str = outcome, called: list[bool] = called) -> str:
                called.append(True)
                if outcome == "fail":
                    raise _TransientError("503")
                if outcome == "other":
                    raise _AnswerError("bad symbol")
                return "candles"

            if state == "open" and clock.ns - opened_ns < 2 * 10**9:
                with pytest.raises(CircuitOpenError, match="circuit breaker open after 3"):
                    await breaker.call(call)
                assert called == []  # fails fast: the exchange is not called
                assert breaker.state == "open"
                continue
            if state == "open":
                assert breaker.state == "half-open"  # the trial is due
                move("half-open")
            if outcome == "ok":
                assert await breaker.call(call) == "candles"
            else:
                with pytest.raises(_TransientError if outcome == "fail" else _AnswerError):
                    await breaker.call(call)
            assert called == [True]
            if outcome == "fail":
                count += 1
                if state == "half-open" or count >= 3:
                    move("open")
                    opened_ns = clock.ns
            else:
                count = 0
                if state == "half-open":
                    move("closed")
            assert breaker.state == state

    asyncio.run(run())
    assert changes == expected_changes
