"""`colmena up`: supervision (restarts with a growing delay, a finished feed left alone) and the
whole system on one machine (embedded NATS and PostgreSQL, every service, a clean stop)."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from colmena.services.up import ENDPOINTS_FILE, Supervisor, symbol_status

sys.path.insert(0, str(Path(__file__).parent))


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


def test_colmena_up_paper_trades_a_replay_end_to_end(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    psycopg = pytest.importorskip("psycopg")
    pytest.importorskip("pgserver")
    from test_serve_cli import CONFIG, LIVE_BARS, TRAIN_BARS, _write_inputs

    folder, feed, candles = _write_inputs(tmp_path, TRAIN_BARS, LIVE_BARS)
    last_ts = int(candles.ts[-1])
    config = tmp_path / "colmena.toml"
    # No [nats] url: colmena up starts its own server.
    config.write_text(CONFIG.replace('[nats]\nurl = "{url}"\n', "").format(
        checkpoints=folder, feed=feed))  # fmt: skip
    data_dir = tmp_path / "live"
    up = subprocess.Popen(
        [sys.executable, "-c", "from colmena.cli import main; main(prog_name='colmena')",
         "up", "--config", str(config), "--data-dir", str(data_dir), "--quiet"],
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
    finally:
        up.send_signal(signal.SIGINT)
        _out, err = up.communicate(timeout=120)
    assert up.returncode == 0, err
    assert "stopped: ingest 0, strategy 0, risk 0, execution 0, recorder 0" in err


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
