"""`colmena serve`: the ingest, strategy, risk and execution services as separate processes, as a
user starts them, on a real nats-server: the stream ends up with the one-process trader's
decisions, orders, fills and accounts bit for bit, and each service stops cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from colmena.data import Candles, load_ohlcv
from colmena.live import SwarmTrader, wire
from colmena.persistence import checkpoint as checkpoints
from colmena.services.bus import STREAM, Bus
from colmena.services.nats_server import EmbeddedNatsServer

pytest.importorskip("torch")
sys.path.insert(0, str(Path(__file__).parent))
from helpers import run_cli, synthetic_candles
from test_live_handlers import EXECUTION, RISK, SYMBOL, _bars, _compare
from test_live_replay import trained
from test_services import _stream_contents

TRAIN_BARS = 14 * 1_440
LIVE_BARS = 400

CONFIG = """
bar_seconds = 60

[nats]
url = "{url}"

[[symbols]]
symbol = "BTC/USDT"
checkpoint = "{checkpoints}"

[feed]
kind = "replay"
path = "{feed}"

[risk]
kelly_prior = 1.0
kelly_multiplier = 1.0
var_budget = 1e9
min_trade_fraction = 0.0

[execution]
market = "margin"
max_participation = 0.05
"""


def _start(args: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", "from colmena.cli import main; main(prog_name='colmena')", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


async def _last_order_ts(url: str) -> int | None:
    bus = await Bus.connect(url)
    try:
        raw = await bus.jetstream.get_last_msg(STREAM, wire.subject("order", SYMBOL))
        return wire.decode("order", raw.data or b"").ts
    except Exception:  # nothing yet
        return None
    finally:
        await bus.close()


def _write_inputs(tmp_path: Path, train_bars: int, live_bars: int) -> tuple[Path, Path, Candles]:
    """A trained checkpoint folder and the live candle file after its training candles."""
    candles = load_ohlcv(synthetic_candles(tmp_path, n=train_bars + live_bars, seed=5))
    folder = tmp_path / "checkpoints"
    checkpoints.save(folder, trained(candles))
    feed = tmp_path / "live.parquet"
    tail = slice(train_bars, None)
    pq.write_table(
        pa.table({
            "ts": pa.array(candles.ts[tail], pa.timestamp("ns")),
            "open": candles.open[tail], "high": candles.high[tail], "low": candles.low[tail],
            "close": candles.close[tail], "volume": candles.volume[tail],
        }),
        feed,
    )  # fmt: skip
    return folder, feed, candles


def test_services_as_processes_equal_the_trader(tmp_path: Path) -> None:
    folder, feed, candles = _write_inputs(tmp_path, TRAIN_BARS, LIVE_BARS)
    model = checkpoints.load_latest(folder).to_model()
    bars = _bars(candles, TRAIN_BARS)
    trader = SwarmTrader(model, RISK, EXECUTION)
    reference = [trader.on_candle(b) for b in bars]

    with EmbeddedNatsServer(tmp_path / "nats") as server:
        config = tmp_path / "colmena.toml"
        config.write_text(CONFIG.format(url=server.url, checkpoints=folder, feed=feed))
        ingest = run_cli(["serve", "ingest", "--config", str(config)], timeout=120)
        assert ingest.returncode == 0, ingest.stderr
        assert f"ingest: stopped after {LIVE_BARS} messages" in ingest.stderr
        services = [_start(["serve", role, "--config", str(config)])
                    for role in ("strategy", "risk", "execution")]  # fmt: skip
        try:
            for _ in range(3_000):  # hang detection: until the last bar is decided
                if asyncio.run(_last_order_ts(server.url)) == bars[-1].ts:
                    break
                time.sleep(0.1)
                assert all(p.poll() is None for p in services), [
                    p.communicate()[1] for p in services if p.poll() is not None
                ]
            else:
                pytest.fail("the services did not decide every bar")
        finally:
            for p in services:
                p.send_signal(signal.SIGTERM)
            outcomes = [p.communicate(timeout=60) for p in services]
        for p, (_, err) in zip(services, outcomes, strict=True):
            assert p.returncode == 0, err
            assert "stopped after" in err
        # A second ingest of the same file publishes nothing: it resumes after the stream's
        # newest candle.
        again = run_cli(["serve", "ingest", "--config", str(config)], timeout=120)
        assert "ingest: stopped after 0 messages" in again.stderr
        produced = [m for m in asyncio.run(_stream_contents(server.url))
                    if not isinstance(m, wire.CandleMessage)]  # fmt: skip
    _compare(reference, produced, min_fills=3)
    equity = [m.snapshot.equity for m in produced if isinstance(m, wire.AccountMessage)]
    assert np.isfinite(equity).all()


def test_serve_errors_are_one_line(tmp_path: Path) -> None:
    config = tmp_path / "colmena.toml"
    config.write_text("[risk]\nkelly_window = 'x'\n")
    done = run_cli(["serve", "risk", "--config", str(config)], timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip().endswith("at `$.risk.kelly_window`"), done.stderr
    config.write_text("")
    done = run_cli(["serve", "risk", "--config", str(config)], timeout=60)
    assert done.returncode == 2
    assert "no NATS server: give --nats URL" in done.stderr
    done = run_cli(["serve", "risk", "--config", str(config), "--nats", "nats://127.0.0.1:9"],
                   timeout=60)  # fmt: skip
    assert done.returncode == 2
    assert "no [[symbols]] in the configuration" in done.stderr
    config.write_text('[[symbols]]\nsymbol = "BTC/USDT"\ncheckpoint = "x"\n')
    for role, partition, message in [
        ("execution", "two", "--partition 'two': expected I/N"),
        ("execution", "3/2", "partition 3/2: need 1 <= index <= count"),
        ("execution", "2/2", "partition 2/2 of 1 symbols is empty"),
        ("recorder", "1/2", "splits the symbols of the strategy or execution service, not "
                            "recorder"),
        ("risk", "1/2", "not risk (it holds the account's kill switch over every symbol"),
    ]:  # fmt: skip
        done = run_cli(["serve", role, "--config", str(config), "--nats", "nats://127.0.0.1:9",
                        "--partition", partition], timeout=60)  # fmt: skip
        assert done.returncode == 2, done.stderr
        assert message in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1
    config.write_text(
        'strategy_instances = 2\n[[symbols]]\nsymbol = "BTC/USDT"\ncheckpoint = "x"\n'
    )
    done = run_cli(["serve", "risk", "--config", str(config)], timeout=60)
    assert done.returncode == 2
    assert "strategy_instances=2 is more than the 1 symbols" in done.stderr
