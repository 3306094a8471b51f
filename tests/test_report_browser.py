"""The tear sheet renders in a real headless browser (Debian's chromium) with no console error."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from colmena.backtest.engine import BacktestConfig, ExecutionSettings, backtest
from colmena.data.ohlcv import load_ohlcv
from colmena.model.decision import DecisionConfig
from colmena.persistence.run_folder import write_run
from colmena.training.trainer import train

sys.path.insert(0, str(Path(__file__).parent))
from helpers import every_agent_votes, tiny_training

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
SECTIONS = (
    "Read this first", "The swarm and the baselines", "Costs", "Against buy-and-hold",
    "Deepest drawdowns", "Monthly returns", "Round trips", "Walk-forward folds",
    "By market regime", "Value at Risk", "Stress tests", "Events",
)  # fmt: skip


def browser() -> str | None:
    named = os.environ.get("COLMENA_BROWSER")
    if named:
        return named
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


@pytest.fixture(scope="module")
def report_html(shared_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("torch")
    candles = load_ohlcv(shared_data_dir / "binanceus_btcusdt_1m_2023-03-01_2023-03-21.csv")
    config = tiny_training(decision=DecisionConfig(interval="15m", no_trade_band=0.0), gate=False)
    trained = train(candles.slice(0, 12_000), config, execution=ExecutionSettings(market="margin"))
    ckpt = every_agent_votes(trained.state)  # trades to show
    margin = BacktestConfig(execution=ExecutionSettings(market="margin"))
    run = backtest(candles.slice(12_000, len(candles)), margin, state=ckpt)
    assert run.fills.num_rows > 0
    out = write_run(run, tmp_path_factory.mktemp("report") / "run")
    return out / "report.html"


def test_tear_sheet_renders_in_headless_chromium_without_console_errors(
    report_html: Path, tmp_path: Path
) -> None:
    exe = browser()
    if exe is None:
        pytest.skip("no Chromium or Chrome installed (apt install chromium; .ci/run installs it)")
    result = subprocess.run(
        [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run",
         f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0",
         "--virtual-time-budget=15000", "--dump-dom", report_html.resolve().as_uri()],
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    console = [line for line in result.stderr.splitlines() if ":CONSOLE" in line]
    assert console == [], console
    dom = result.stdout
    charts = len(re.findall(r'class="plotly-graph-div', dom))
    assert charts >= 7
    assert dom.count('class="main-svg"') >= charts  # every chart was drawn by plotly.js
    for section in SECTIONS:
        assert section in dom, section
