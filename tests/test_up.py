"""`colmena up`: supervision (restarts with a growing delay, a finished feed left alone), the
configuration built from options (equal to the equivalent file's, written to the data folder and
read back equal, every bad option one line before anything starts) and the whole system on one
machine (embedded NATS and PostgreSQL, every service, a clean stop), from a file or from options
alone, replaying a file or polling a local fake exchange."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest
from click.testing import CliRunner, Result
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from colmena.atomic_write import observe_steps
from colmena.cli import main
from colmena.data import load_ohlcv
from colmena.persistence import checkpoint as checkpoints
from colmena.services.config import ConfigError, LiveConfig, load_config
from colmena.services.up import (
    CONFIG_FILE,
    ENDPOINTS_FILE,
    Supervisor,
    UpOptions,
    config_toml,
    resolve_config,
    symbol_status,
    write_config,
)

sys.path.insert(0, str(Path(__file__).parent))
from helpers import make_state, synthetic_candles


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def _exit_with(code: int) -> list[str]:
    return [sys.executable, "-c", f"import sys; sys.exit({code})"]


def _wait_exited(supervisor: Supervisor, role: str) -> None:
    process = supervisor.children[role].process
    assert process is not None
    process.wait(timeout=60)  # the point the test waits on: the child has exited


def test_supervisor_restarts_with_a_growing_delay_and_leaves_a_finished_feed(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    supervisor = Supervisor(
        {"risk": _exit_with(3), "ingest": _exit_with(0)}, tmp_path / "logs", clock=clock
    )
    supervisor.start()
    delays = []
    for _ in range(4):
        _wait_exited(supervisor, "risk")
        exited = supervisor.poll()
        assert "risk" in exited
        child = supervisor.children["risk"]
        assert child.process is None  # waits for its delay
        delays.append(child.delay)
        clock.now += child.delay
        supervisor.poll()
        assert child.process is not None  # restarted
    assert delays == [0.5, 1.0, 2.0, 4.0]
    ingest = supervisor.children["ingest"]
    assert ingest.finished
    assert ingest.exits == [0]
    assert ingest.restarts == 0
    # A service that ran for a minute before dying restarts after the shortest delay again.
    _wait_exited(supervisor, "risk")
    clock.now += 120.0
    supervisor.poll()
    assert supervisor.children["risk"].delay == 0.5
    codes = supervisor.stop(timeout=10)
    assert codes["ingest"] == 0
    assert (tmp_path / "logs" / "risk.log").exists()


def test_supervisor_stop_terminates_running_services(tmp_path: Path) -> None:
    sleeper = [sys.executable, "-c", "import time; time.sleep(600)"]
    supervisor = Supervisor({"strategy": sleeper}, tmp_path / "logs")
    supervisor.start()
    codes = supervisor.stop(timeout=30)
    assert codes == {"strategy": -signal.SIGTERM}


@pytest.fixture(scope="module")
def live_inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Any]:
    """A trained checkpoint folder, the live candle file after its training candles, and all
    the candles (trained once for the end-to-end tests of this module)."""
    pytest.importorskip("torch")
    pytest.importorskip("psycopg")
    pytest.importorskip("pgserver")
    from test_serve_cli import LIVE_BARS, TRAIN_BARS, _write_inputs

    return _write_inputs(tmp_path_factory.mktemp("live-inputs"), TRAIN_BARS, LIVE_BARS)


def _paper_trade(args: list[str], data_dir: Path, last_ts: int, *, control: bool = False) -> str:
    """Run ``colmena up ARGS --data-dir DATA_DIR --quiet`` until BTC/USDT's candle ``last_ts``
    is decided and the recorder has every decision in PostgreSQL, then stop it with Ctrl-C;
    its stderr. ``control``: ask ``colmena ctl`` for the status and a halt first (recorded in
    live_control), and stop with ``colmena down``."""
    import psycopg

    from test_serve_cli import LIVE_BARS

    up = subprocess.Popen(
        [sys.executable, "-c", "from colmena.cli import main; main(prog_name='colmena')",
         "up", *args, "--data-dir", str(data_dir), "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        endpoints_file = data_dir / ENDPOINTS_FILE
        for _ in range(1_200):  # hang detection: until the system reports its addresses
            if endpoints_file.exists():
                break
            assert up.poll() is None, up.communicate()
            time.sleep(0.1)
        endpoints = json.loads(endpoints_file.read_text())
        for _ in range(3_000):  # until the last candle is decided
            (status,) = asyncio.run(symbol_status(endpoints["nats"], ["BTC/USDT"], 60))
            if status.candle_ts == last_ts and status.lag_bars == 0:
                break
            assert up.poll() is None, up.communicate()
            time.sleep(0.1)
        else:
            pytest.fail(f"not every candle was decided: {status}")
        assert status.equity is not None
        assert status.verdict is not None
        # The recorder writes every decision to the embedded PostgreSQL.
        for _ in range(600):
            with psycopg.connect(endpoints["db"]) as conn:
                orders = conn.execute("SELECT count(*) FROM live_orders").fetchone()[0]
            if orders == LIVE_BARS:
                break
            time.sleep(0.1)
        assert orders == LIVE_BARS
        if control:
            _control(data_dir, endpoints["db"])
            down = CliRunner().invoke(main, ["down", "--data-dir", str(data_dir)])
            assert down.exit_code == 0, down.output
            assert f"stopped `colmena up` (pid {up.pid})" in down.output
            again = CliRunner().invoke(main, ["down", "--data-dir", str(data_dir)])
            assert again.exit_code == 2, again.output
            assert "is not running" in again.output
    finally:
        if up.poll() is None:
            up.send_signal(signal.SIGINT)
        _out, err = up.communicate(timeout=120)
    assert up.returncode == 0, err
    assert "stopped: ingest 0, strategy 0, risk 0, execution 0, recorder 0" in err, err
    return err


def _control(data_dir: Path, dsn: str) -> None:
    """``colmena ctl`` against the running system, found through DATA_DIR."""
    import psycopg

    runner = CliRunner()
    status = runner.invoke(main, ["ctl", "status", "--data-dir", str(data_dir)])
    assert status.exit_code == 0, status.output
    assert "BTC/USDT: ACTIVE" in status.output
    halt = runner.invoke(main, ["ctl", "halt", "--data-dir", str(data_dir), "--operator",
                                "ops@desk", "--reason", "end of the test"])  # fmt: skip
    assert halt.exit_code == 0, halt.output
    assert "pending: halt" in halt.output  # no candle comes after the replay's last
    for _ in range(600):  # hang detection: until the recorder has written the action
        with psycopg.connect(dsn) as conn:
            rows = conn.execute("SELECT action, operator, reason FROM live_control").fetchall()
        if rows:
            break
        time.sleep(0.1)
    assert rows == [("halt", "ops@desk", "end of the test")]


def test_colmena_up_paper_trades_a_replay_end_to_end(
    tmp_path: Path, live_inputs: tuple[Path, Path, Any]
) -> None:
    from test_serve_cli import CONFIG

    folder, feed, candles = live_inputs
    config = tmp_path / "colmena.toml"
    # No [nats] url: colmena up starts its own server.
    config.write_text(CONFIG.replace('[nats]\nurl = "{url}"\n', "").format(
        checkpoints=folder, feed=feed))  # fmt: skip
    data_dir = tmp_path / "live"
    err = _paper_trade(["--config", str(config)], data_dir, int(candles.ts[-1]), control=True)
    assert not (data_dir / CONFIG_FILE).exists()  # a file alone: the services run with it
    assert "configuration:" not in err


def test_colmena_up_from_options_alone_replays_to_the_last_candle(
    tmp_path: Path, live_inputs: tuple[Path, Path, Any]
) -> None:
    folder, feed, candles = live_inputs
    data_dir = tmp_path / "live"
    options = ["--checkpoint", str(folder), "--symbol", "BTC/USDT", "--replay", str(feed)]
    err = _paper_trade(options, data_dir, int(candles.ts[-1]))
    written = data_dir / CONFIG_FILE
    assert f"configuration: {written} (edit it and start again with: colmena up --config " in err
    # The services ran with the written file: the options' configuration, the defaults' risk.
    expected = resolve_config(
        UpOptions(checkpoint=str(folder), symbols=("BTC/USDT",), replay=(str(feed),))
    )
    assert load_config(written) == expected
    assert expected.risk == LiveConfig().risk
    assert "dsn" not in written.read_text()  # the embedded database's DSN went by environment


def test_colmena_up_from_options_paper_trades_the_exchange_feed(
    tmp_path: Path, live_inputs: tuple[Path, Path, Any]
) -> None:
    """``--exchange binance`` against a local fake of Binance's REST API (its address from a
    --config file's ``[feed] api_url``, kept under the options): the first poll gets every
    closed candle, the services decide them all, Ctrl-C stops the feed during its wait."""
    pytest.importorskip("ccxt")
    from colmena.units import NS_PER_MS
    from fake_exchange import FakeBinance, kline

    folder, feed, candles = live_inputs
    tail = load_ohlcv(feed)
    rows = zip(tail.ts.tolist(), tail.open.tolist(), tail.high.tolist(), tail.low.tolist(),
               tail.close.tolist(), tail.volume.tolist(), strict=True)  # fmt: skip
    exchange = FakeBinance([kline(ts // NS_PER_MS, *ohlcv) for ts, *ohlcv in rows])
    try:
        base = tmp_path / "proxy.toml"
        base.write_text(f'[feed]\napi_url = "{exchange.url}"\n')
        options = ["--checkpoint", str(folder), "--symbol", "BTC/USDT", "--exchange", "binance"]
        data_dir = tmp_path / "live"
        _paper_trade(["--config", str(base), *options], data_dir, int(candles.ts[-1]))
    finally:
        exchange.close()
    assert exchange.requests  # the candles came from the fake exchange
    written = load_config(data_dir / CONFIG_FILE)
    assert written.feed.kind == "exchange"
    assert written.feed.api_url == exchange.url
    assert written == resolve_config(
        UpOptions(checkpoint=str(folder), symbols=("BTC/USDT",), exchange="binance"),
        load_config(base),
    )


def test_up_splits_the_strategy_over_the_configured_instances(tmp_path: Path) -> None:
    import msgspec

    from colmena.services.config import LiveConfig
    from colmena.services.up import _commands

    symbols = [{"symbol": s, "checkpoint": "c"} for s in ("A/B", "C/D", "E/F")]
    config = msgspec.convert({"strategy_instances": 2, "symbols": symbols}, LiveConfig)
    commands = _commands(config, tmp_path / "c.toml", "nats://x:1")
    assert list(commands) == ["ingest", "strategy-1", "strategy-2", "risk", "execution",
                              "recorder"]  # fmt: skip
    assert commands["strategy-2"][-2:] == ["--partition", "2/2"]
    single = _commands(msgspec.structs.replace(config, strategy_instances=1), tmp_path, "n://")
    assert "strategy" in single
    assert single["risk"][-1] == "1/1"


# ---------------------------------------------------------------- configuration from options

SYMBOL_NAMES = st.from_regex(r"[A-Z][A-Z0-9]{1,5}/[A-Z]{3,4}(:[A-Z]{3,4})?", fullmatch=True)
# Paths with what TOML must escape (quotes, backslashes), spaces and non-ASCII.
PATH_NAMES = st.text(alphabet=st.sampled_from("ab09 -_.\"\\'é日"), min_size=1, max_size=12)


def _basic(text: str) -> str:
    """``text`` as a TOML basic string: JSON's escapes are TOML's for these characters (the
    test's own writer, apart from the one under test)."""
    return json.dumps(text, ensure_ascii=False)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder for the checkpoint and candle paths the options name (they must exist)."""
    return tmp_path_factory.mktemp("up-options")


def _existing(folder: Path, name: str, *, is_dir: bool = False) -> str:
    path = folder / name
    if is_dir:
        path.mkdir(exist_ok=True)
    else:
        path.touch()
    return str(path)


@st.composite
def _options_and_file(draw: st.DrawFn, folder: Path) -> tuple[UpOptions, str]:
    """Options that need no file, and the TOML file that says the same (the reference)."""
    symbols = draw(st.lists(SYMBOL_NAMES, min_size=1, max_size=4, unique=True))
    is_dir = draw(st.booleans())  # a folder of checkpoints, or one checkpoint file
    checkpoint = _existing(folder, ("dir " if is_dir else "ck ") + draw(PATH_NAMES), is_dir=is_dir)
    toml = [
        f"[[symbols]]\nsymbol = {_basic(s)}\ncheckpoint = {_basic(checkpoint)}\n" for s in symbols
    ]
    if draw(st.booleans()):
        exchange = draw(st.sampled_from(["binance", "kraken", "gateio", "coinbase_advanced"]))
        options = UpOptions(checkpoint=checkpoint, symbols=tuple(symbols), exchange=exchange)
        feed = f'[feed]\nkind = "exchange"\nexchange = "{exchange}"\n'
    else:
        replay = [_existing(folder, "c " + draw(PATH_NAMES)) for _ in symbols]
        speed = draw(st.none() | st.floats(0.0, 1e6) | st.integers(0, 1_000).map(float))
        options = UpOptions(checkpoint=checkpoint, symbols=tuple(symbols), replay=tuple(replay),
                            speed=speed)  # fmt: skip
        toml = [t + f"candles = {_basic(r)}\n" for t, r in zip(toml, replay, strict=True)]
        feed = '[feed]\nkind = "replay"\n' + ("" if speed is None else f"speed = {speed!r}\n")
    return options, "".join(toml) + feed


@settings(max_examples=60, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(data=st.data())
def test_options_build_the_configuration_of_the_equivalent_file(
    data: st.DataObject, files: Path
) -> None:
    options, text = data.draw(_options_and_file(files))
    (files / "reference.toml").write_text(text, encoding="utf-8")
    config = resolve_config(options)
    assert config == load_config(files / "reference.toml")
    # What colmena up writes reads back equal: the services run this configuration.
    written = write_config(config, files / "data", source=None)
    assert load_config(written) == config
    written.unlink()


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(
    instances=st.integers(1, 3),
    fee_bps=st.floats(0.0, 1e3),
    var_budget=st.floats(1e-9, 1e12),
    ladder=st.lists(st.floats(0.01, 0.3), min_size=3, max_size=3, unique=True).map(sorted),
    max_age=st.floats(1.0, 365 * 86_400.0),
    symbols=st.lists(SYMBOL_NAMES, min_size=3, max_size=3, unique=True),
    name=PATH_NAMES,
    api_url=st.none() | st.sampled_from(["http://127.0.0.1:8080", "https://proxy.example"]),
    weight=st.none() | st.floats(1e-6, 1 / 3),
)
def test_the_written_configuration_reads_back_equal(
    instances: int, fee_bps: float, var_budget: float, ladder: list[float], max_age: float,
    symbols: list[str], name: str, api_url: str | None, weight: float | None,
) -> None:  # fmt: skip
    config = msgspec.convert(
        {
            "strategy_instances": instances,
            "stream": {"max_age_seconds": max_age},
            "symbols": [
                {"symbol": s, "checkpoint": name, "candles": name + s, "weight": weight}
                for s in symbols
            ],
            "feed": {"kind": "exchange", "api_url": api_url, "poll_seconds": 5.0},
            "risk": {"var_budget": var_budget, "ladder_drawdown": ladder},
            "execution": {"fee_bps": fee_bps, "market": "margin"},
        },
        LiveConfig,
    )
    text = config_toml(config)
    assert msgspec.toml.decode(text.encode(), type=LiveConfig) == config
    # Only what differs from the defaults is written (the rest follows the library's).
    assert "kelly_window" not in text
    assert "initial_cash" not in text


BASE = """
strategy_instances = 1

[[symbols]]
symbol = "BTC/USDT"
checkpoint = "{ck}"

[feed]
kind = "replay"
path = "{a}"
speed = 5.0

[risk]
var_budget = 1e9
"""


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        pytest.param(  # --speed: only [feed] speed
            UpOptions(speed=60.0), BASE.replace("speed = 5.0", "speed = 60.0"), id="speed"),
        pytest.param(  # --exchange: the feed; its other settings stay
            UpOptions(exchange="kraken"),
            BASE.replace('kind = "replay"', 'kind = "exchange"\nexchange = "kraken"'),
            id="exchange"),
        pytest.param(  # --checkpoint: every symbol's
            UpOptions(checkpoint="{ck2}"), BASE.replace('"{ck}"', '"{ck2}"'), id="checkpoint"),
        pytest.param(  # --symbol: the list; a symbol of the file keeps its checkpoint and file
            UpOptions(symbols=("BTC/USDT",)),
            BASE.replace('path = "{a}"\n', "").replace('"{ck}"\n', '"{ck}"\ncandles = "{a}"\n'),
            id="same-symbol"),
        pytest.param(  # --symbol and --replay: new symbols with their files; [feed] path goes
            UpOptions(symbols=("ETH/USDT", "BTC/USDT"), checkpoint="{ck2}", replay=("{b}", "{a}")),
            BASE.replace('symbol = "BTC/USDT"\ncheckpoint = "{ck}"\n',
                         'symbol = "ETH/USDT"\ncheckpoint = "{ck2}"\ncandles = "{b}"\n[[symbols]]'
                         '\nsymbol = "BTC/USDT"\ncheckpoint = "{ck2}"\ncandles = "{a}"\n')
            .replace('path = "{a}"\n', ""),
            id="symbols-and-replay"),
        pytest.param(  # --replay alone: the file's symbols' candle files, in order
            UpOptions(replay=("{b}",)),
            BASE.replace('path = "{a}"\n', "").replace('"{ck}"\n', '"{ck}"\ncandles = "{b}"\n'),
            id="replay"),
        pytest.param(  # an exchange for new symbols: no candle file needed
            UpOptions(symbols=("ETH/USDT",), checkpoint="{ck}", exchange="binance"),
            BASE.replace('"BTC/USDT"', '"ETH/USDT"').replace('kind = "replay"\npath = "{a}"',
                                                             'kind = "exchange"'),
            id="exchange-new-symbol"),
    ],
)  # fmt: skip
def test_options_override_exactly_their_settings_of_the_file(
    tmp_path: Path, options: UpOptions, expected: str
) -> None:
    paths = {"ck": _existing(tmp_path, "ck", is_dir=True), "ck2": _existing(tmp_path, "ck2"),
             "a": _existing(tmp_path, "a.pq"), "b": _existing(tmp_path, "b.pq")}  # fmt: skip
    base = tmp_path / "base.toml"
    base.write_text(BASE.format(**paths))
    options = UpOptions(
        checkpoint=None if options.checkpoint is None else options.checkpoint.format(**paths),
        symbols=options.symbols, exchange=options.exchange, speed=options.speed,
        replay=tuple(r.format(**paths) for r in options.replay),
    )  # fmt: skip
    reference = tmp_path / "expected.toml"
    reference.write_text(expected.format(**paths))
    config = resolve_config(options, load_config(base), base_name=str(base))
    assert config == load_config(reference)


def _up(args: list[str]) -> Result:
    return CliRunner().invoke(main, ["up", *args])


def _one_line(result: Result, *words: str) -> str:
    """Exit 2, click's clean exit, one ``Error:`` line holding ``words``; the line."""
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith("Error: "), lines
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def checkpoint_and_candles(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A valid checkpoint folder (not trained: random weights) and a candle file."""
    folder = tmp_path_factory.mktemp("inputs")
    checkpoints.save(folder / "ckpt", make_state())
    return folder / "ckpt", synthetic_candles(folder, n=100)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        ([], ["no --config FILE, so give --checkpoint PATH", "--symbol BASE/QUOTE",
              "--exchange ID (live candles, e.g. binance) or --replay FILE"]),
        (["--checkpoint", "{ck}", "--exchange", "binance"], ["give --symbol BASE/QUOTE"]),
        (["--checkpoint", "{ck}", "--symbol", "BTC/USDT"], ["give --exchange ID"]),
        (["--symbol", "BTC/USDT", "--exchange", "binance"], ["give --checkpoint PATH"]),
        (["--checkpoint", "{tmp}/nope", "--symbol", "BTC/USDT", "--exchange", "binance"],
         ["--checkpoint {tmp}/nope: no such file or folder"]),
        (["--checkpoint", "{tmp}", "--symbol", "BTC/USDT", "--exchange", "binance"],
         ["symbols[0].checkpoint (BTC/USDT): {tmp}: no checkpoint files in the directory"]),
        (["--checkpoint", "{ck}", "--symbol", "BTC USDT", "--exchange", "binance"],
         ["symbol 'BTC USDT' cannot be a subject token", "$.symbols[0]", "(--symbol 'BTC USDT')"]),
        (["--checkpoint", "{ck}", "--symbol", "BTCUSDT", "--exchange", "binance"],
         ["'BTCUSDT': the exchange feed needs ccxt's unified symbol BASE/QUOTE"]),
        (["--checkpoint", "{ck}", "--symbol", "BTC/USDT", "--symbol", "BTC/USDT", "--exchange",
          "binance"], ["symbols repeated: BTC/USDT"]),
        (["--checkpoint", "{ck}", "--symbol", "BTC/USDT", "--exchange", "binance", "--replay",
          "{candles}"], ["--exchange and --replay both name the feed: give one"]),
        (["--checkpoint", "{ck}", "--symbol", "BTC/USDT", "--exchange", "Binance"],
         ["exchange 'Binance' is not a ccxt exchange id", "(--exchange 'Binance')"]),
        (["--checkpoint", "{ck}", "--symbol", "BTC/USDT", "--exchange", "nosuchexchange"],
         ["feed.exchange: unknown exchange 'nosuchexchange'"]),
        (["--checkpoint", "{ck}", "--symbol", "BTC/USDT", "--exchange", "binance", "--speed",
          "60"], ["--speed is the pace of a replay, and the feed is an exchange (--exchange)"]),
        (["--checkpoint", "{ck}", "--symbol", "BTC/USDT", "--replay", "{candles}", "--speed",
          "-1"], ["Expected `float` >= 0.0 - at `$.feed.speed` (--speed -1.0)"]),
        (["--checkpoint", "{ck}", "--symbol", "BTC/USDT", "--symbol", "ETH/USDT", "--replay",
          "{candles}"], ["1 --replay files for 2 symbols: give one --replay FILE per symbol"]),
        (["--checkpoint", "{ck}", "--symbol", "BTC/USDT", "--replay", "{tmp}/no.parquet"],
         ["--replay {tmp}/no.parquet: no such file"]),
        (["--checkpoint", "{ck}", "--symbol", "BTC/USDT", "--replay", "{ck}/.."],
         ["--replay {ck}/..: not a file"]),
        (["--checkpoint", "{ck}", "--symbol", "BTC/USDT", "--replay", "{tmp}/bad.csv"],
         ["symbols[0].candles (BTC/USDT): "]),
        (["--config", "{tmp}/exchange.toml", "--symbol", "ETH/USDT"],
         ["--symbol ETH/USDT: no checkpoint ({tmp}/exchange.toml has none for it): give "
          "--checkpoint PATH"]),
        (["--config", "{tmp}/exchange.toml", "--speed", "2"],
         ["--speed is the pace of a replay, and the feed is an exchange ({tmp}/exchange.toml "
          "[feed] kind)"]),
        (["--config", "{tmp}/exchange.toml", "--symbol", "ETH/USDT", "--checkpoint", "{ck}",
          "--replay", "{candles}"],
         ["{tmp}/exchange.toml with the options: strategy_instances=2 is more than the 1 "
          "symbols"]),
        (["--config", "{tmp}/nats-password.toml", "--checkpoint", "{ck}"],
         ["[nats] url carries a password", "give that URL with --nats instead"]),
    ],
)  # fmt: skip
def test_bad_options_are_one_line_and_start_and_write_nothing(
    tmp_path: Path, checkpoint_and_candles: tuple[Path, Path], args: list[str], words: list[str]
) -> None:
    ck, candles = checkpoint_and_candles
    (tmp_path / "bad.csv").write_text("ts,open\n1,2\n")
    symbols = "".join(f'[[symbols]]\nsymbol = "{s}"\ncheckpoint = "{ck}"\n'
                      for s in ("BTC/USDT", "DOT/USDT", "ADA/USDT"))  # fmt: skip
    (tmp_path / "exchange.toml").write_text(
        f'strategy_instances = 2\n{symbols}[feed]\nkind = "exchange"\n'
    )
    (tmp_path / "nats-password.toml").write_text(
        f'[nats]\nurl = "nats://me:secret@127.0.0.1:4222"\n{symbols}[feed]\nkind = "exchange"\n'
    )
    fill = {"ck": str(ck), "candles": str(candles), "tmp": str(tmp_path)}
    data_dir = tmp_path / "live"
    result = _up([a.format(**fill) for a in args] + ["--data-dir", str(data_dir), "--quiet"])
    _one_line(result, *(w.format(**fill) for w in words))
    assert not data_dir.exists()  # nothing started, nothing written


def test_an_existing_configuration_is_replaced_only_if_the_same_or_the_source(
    tmp_path: Path, checkpoint_and_candles: tuple[Path, Path]
) -> None:
    ck, candles = checkpoint_and_candles
    options = UpOptions(checkpoint=str(ck), symbols=("BTC/USDT",), replay=(str(candles),))
    config = resolve_config(options)
    data_dir = tmp_path / "live"
    path = write_config(config, data_dir)
    assert path == data_dir / CONFIG_FILE
    assert f"# Edit it and start again with: colmena up --config {path}" in path.read_text()
    assert write_config(config, data_dir) == path  # the same configuration: replaced
    # The user edits it: another start with other options keeps it and says how to use it.
    edited = path.read_text().replace("[feed]", "[risk]\nvar_budget = 1e9\n\n[feed]")
    path.write_text(edited)
    with pytest.raises(
        ConfigError,
        match=r"holds another configuration, which is kept: start "
        r"from it with --config .*colmena.toml \(the options override it\)",
    ):
        write_config(config, data_dir)  # fmt: skip
    assert path.read_text() == edited
    result = _up(["--checkpoint", str(ck), "--symbol", "BTC/USDT", "--replay", str(candles),
                  "--data-dir", str(data_dir), "--quiet"])  # fmt: skip
    _one_line(result, "holds another configuration, which is kept")
    assert path.read_text() == edited
    # Passed back with --config and an option, it is the source: replaced by file + option.
    base = load_config(path)
    faster = resolve_config(UpOptions(speed=60.0), base, base_name=str(path))
    write_config(faster, data_dir, source=path)
    assert load_config(path) == msgspec.structs.replace(
        base, feed=msgspec.structs.replace(base.feed, speed=60.0)
    )
    assert load_config(path).risk.var_budget == 1e9
    # Not a configuration: kept too.
    path.write_text("not = [toml")
    with pytest.raises(ConfigError, match=r"not valid TOML.*: it is kept; start from it"):
        write_config(config, data_dir)
    assert path.read_text() == "not = [toml"


def test_a_failed_write_leaves_the_previous_configuration(
    tmp_path: Path, checkpoint_and_candles: tuple[Path, Path]
) -> None:
    ck, candles = checkpoint_and_candles
    config = resolve_config(
        UpOptions(checkpoint=str(ck), symbols=("BTC/USDT",), replay=(str(candles),))
    )
    path = write_config(config, tmp_path)
    before = path.read_bytes()
    faster = msgspec.structs.replace(config, feed=msgspec.structs.replace(config.feed, speed=9.0))

    def full_disk(step: str, target: Path) -> None:
        if step == "temporary_written" and target == path:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(target))

    with observe_steps(full_disk), pytest.raises(OSError, match="No space left"):
        write_config(faster, tmp_path, source=path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [CONFIG_FILE]


def test_down_stops_only_a_running_colmena_up(tmp_path: Path) -> None:
    """``colmena down`` signals the process named in endpoints.json only when it is colmena's,
    waits for it to exit, and says so; a missing file or a dead process is one line, exit 2."""
    runner = CliRunner()
    data_dir = tmp_path / "live"
    missing = runner.invoke(main, ["down", "--data-dir", str(data_dir)])
    assert missing.exit_code == 2
    assert "endpoints.json not found" in missing.output
    data_dir.mkdir()

    def endpoints(pid: int) -> None:
        (data_dir / ENDPOINTS_FILE).write_text(json.dumps({"nats": "nats://x", "pid": pid}))

    # Another program under that pid (a reused pid): refused, and left running.
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        endpoints(other.pid)
        refused = runner.invoke(main, ["down", "--data-dir", str(data_dir)])
        assert refused.exit_code == 2, refused.output
        assert "is not running" in refused.output
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()
    # A colmena process that stops on SIGTERM (the way `colmena up` does).
    script = ("import signal, sys, time\n"
              "signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))\n"
              "print('ready', flush=True)\n"
              "time.sleep(60)\n")  # fmt: skip
    colmena = subprocess.Popen([sys.executable, "-c", script, "colmena"], stdout=subprocess.PIPE,
                               text=True)  # fmt: skip
    try:
        assert colmena.stdout is not None
        assert colmena.stdout.readline().strip() == "ready"
        endpoints(colmena.pid)
        done = runner.invoke(main, ["down", "--data-dir", str(data_dir)])
        assert done.exit_code == 0, done.output
        assert f"stopped `colmena up` (pid {colmena.pid})" in done.output
        assert colmena.wait(timeout=10) == 0
    finally:
        if colmena.poll() is None:
            colmena.kill()
            colmena.wait()
        assert colmena.stdout is not None
        colmena.stdout.close()
    dead = runner.invoke(main, ["down", "--data-dir", str(data_dir)])
    assert dead.exit_code == 2
    assert "is not running" in dead.output
