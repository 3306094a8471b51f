"""Every daemon's /health and /metrics (colmena.services.health) on a real nats-server, asked
with a real HTTP client; the shipped Prometheus alert rules under promtool; the Grafana
dashboard's queries against the metrics the services export."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

pytest.importorskip("aiohttp")
pytest.importorskip("prometheus_client")
pytest.importorskip("nats")

from prometheus_client.parser import text_string_to_metric_families

from colmena.execution import ExecutionSettings
from colmena.execution.trading_loop import Bar
from colmena.live import wire
from colmena.live.handlers import ExecutionHandler, RiskHandler, route
from colmena.risk import RiskConfig
from colmena.services.bus import Bus
from colmena.services.config import (
    ConfigError,
    HealthSettings,
    LiveConfig,
    SymbolSettings,
    load_config,
)
from colmena.services.daemons import ServiceError, run_role
from colmena.services.health import (
    Health,
    HealthError,
    ServiceMetrics,
    instrument_exchange_client,
    role_port,
)
from colmena.services.nats_server import EmbeddedNatsServer
from colmena.services.runner import ROLE_INPUTS

ROOT = Path(__file__).resolve().parents[1]
MONITORING = ROOT / "python" / "colmena" / "services" / "monitoring"
RULES = MONITORING / "prometheus" / "colmena-alerts.yml"
RULE_TESTS = MONITORING / "prometheus" / "colmena-alerts.test.yml"
DASHBOARD = MONITORING / "grafana" / "colmena-dashboard.json"

SYMBOL = "BTC/USDT"
SHA = "cd" * 32
T0 = 60_000_000_000 * 27_000_000  # a minute boundary, ns
EXECUTION = ExecutionSettings(market="margin", max_participation=0.05)
#: Full exposure; a crash of 1 % a bar trips the kill switch (3 %) and the drawdown alerts.
CRASH_RISK = RiskConfig(kelly_prior=1.0, kelly_multiplier=1.0, var_budget=1e9,
                        min_trade_fraction=0.0, halt_drawdown=0.03,
                        ladder_drawdown=(0.5, 0.6, 0.7), daily_loss_pause=-0.9)  # fmt: skip
HANG_SECONDS = 120.0  # hang detection only


def _crash_bars(n_flat: int, n_fall: int, fall: float) -> list[Bar]:
    bars = []
    previous = 100.0
    for i in range(n_flat + n_fall):
        close = previous * (1.0 - fall) if i >= n_flat else 100.0 * (1.0 + 0.001 * (i % 3 - 1))
        high, low = max(previous, close) * 1.0005, min(previous, close) * 0.9995
        bars.append(Bar(T0 + 60_000_000_000 * i, previous, high, low, close, 1e6))
        previous = close
    return bars


def _inputs(bars: list[Bar]) -> list[wire.WireMessage]:
    out: list[wire.WireMessage] = []
    for bar in bars:
        out.append(wire.CandleMessage(symbol=SYMBOL, ts=bar.ts, bar_seconds=60, bar=bar))
        out.append(wire.SignalMessage(symbol=SYMBOL, ts=bar.ts, action="decide", signal=1.0,
                                      valid=True, regime=0, model_sha256=SHA))  # fmt: skip
    return out


def _get(port: int, path: str) -> tuple[int, str, str]:
    """(status, content type, body) of ``GET http://127.0.0.1:port/path``."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as answer:
            return answer.status, answer.headers["Content-Type"], answer.read().decode()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.headers["Content-Type"], error.read().decode()


async def _aget(port: int, path: str) -> tuple[int, str, str]:
    # The server runs on this event loop: the blocking client goes to a thread.
    return await asyncio.to_thread(_get, port, path)


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


@pytest.fixture
def nats_url(tmp_path: Path) -> Iterator[str]:
    with EmbeddedNatsServer(tmp_path / "nats") as server:
        yield server.url


def test_ready_only_while_connected_to_nats(nats_url: str) -> None:
    async def run() -> None:
        health = Health("risk", HealthSettings(), [SYMBOL])
        async with health:
            assert health.port is not None
            assert health.port > 0
            status, kind, body = await _aget(health.port, "/health")
            report = json.loads(body)
            assert (status, kind.split(";")[0]) == (503, "application/json")
            assert report["ready"] is False
            assert report["nats_connected"] is False
            assert report["problems"] == ["not connected to NATS"]
            assert (await _aget(health.port, "/health/live"))[0] == 200  # alive all the same
            bus = await Bus.connect(nats_url)
            try:
                health.attach(bus)
                status, _, body = await _aget(health.port, "/health")
                report = json.loads(body)
                assert status == 200, report
                assert report["ready"] is True
                assert report["nats_connected"] is True
                assert report["problems"] == []
                assert report["newest_candle_age_seconds"] == {SYMBOL: None}
                samples = _samples((await _aget(health.port, "/metrics"))[2])
                assert _value(samples, "colmena_nats_connected") == 1.0
                assert _value(samples, "colmena_ready") == 1.0
            finally:
                await bus.close()
            status, _, body = await _aget(health.port, "/health")  # the connection closed
            assert status == 503
            assert json.loads(body)["nats_connected"] is False
            samples = _samples((await _aget(health.port, "/metrics"))[2])
            assert _value(samples, "colmena_nats_connected") == 0.0
            assert _value(samples, "colmena_ready") == 0.0
        with pytest.raises(urllib.error.URLError):  # stopped: nobody listens any more
            _get(health.port, "/health")

    asyncio.run(run())


def test_metrics_follow_the_messages_the_daemons_handle(nats_url: str, tmp_path: Path) -> None:
    """A crash driven through the risk and execution daemons (run_role) on the bus: the
    counters count what was handled, the risk gauges equal the last risk state message of the
    same inputs through the handlers in one process, and the lag drains to 0."""
    bars = _crash_bars(40, 12, 0.01)
    inputs = _inputs(bars)
    # The reference: the same inputs through the handlers in one process.
    produced = route((RiskHandler(SYMBOL, CRASH_RISK, EXECUTION),
                      ExecutionHandler(SYMBOL, EXECUTION)), inputs)  # fmt: skip
    states = [m for m in produced if isinstance(m, wire.RiskStateMessage)]
    last = states[-1]
    assert last.state == "HALTED"
    assert last.drawdown_from_high > 0.03
    kinds = {role: wire_kinds for role, wire_kinds in (
        ("risk", ("candle", "signal", "account", "execution")),
        ("execution", ("candle", "gate", "order")))}  # fmt: skip
    expected = {
        role: {k: sum(m.__struct_config__.tag == k for m in inputs + produced) for k in ks}
        for role, ks in kinds.items()
    }
    config = LiveConfig(symbols=(SymbolSettings(symbol=SYMBOL, checkpoint="unused"),),
                        risk=CRASH_RISK, execution=EXECUTION)  # fmt: skip

    async def run() -> None:
        healths = {role: Health(role, config.health, [SYMBOL]) for role in kinds}
        for h in healths.values():
            await h.start()
        stop = asyncio.Event()
        services = [asyncio.create_task(run_role(role, config, nats_url, stop, health=h))
                    for role, h in healths.items()]  # fmt: skip
        try:
            feed = await Bus.connect(nats_url)
            for message in inputs:
                await feed.publish(message)
            await feed.close()

            async def handled(role: str) -> float:
                text = (await _aget(healths[role].port or 0, "/metrics"))[2]
                return sum(v for (name, labels), v in _samples(text).items()
                           if name == "colmena_messages_handled_total")  # fmt: skip

            # Wait until every message is handled: the daemons' own counters (hang detection).
            async def settled() -> None:
                for role in kinds:
                    while await handled(role) < sum(expected[role].values()):
                        await asyncio.sleep(0.1)

            await asyncio.wait_for(settled(), HANG_SECONDS)
            for role, h in healths.items():
                status, _, body = await _aget(h.port or 0, "/health")
                assert status == 200, body
                report = json.loads(body)
                assert set(report["consumer_lag"].values()) == {0}
                assert len(report["consumer_lag"]) == len(ROLE_INPUTS[role])
                status, kind, text = await _aget(h.port or 0, "/metrics")
                assert status == 200
                assert kind.startswith("text/plain")
                samples = _samples(text)
                for k, n in expected[role].items():
                    assert _value(samples, "colmena_messages_handled_total",
                                  role=role, kind=k) == n, (role, k)  # fmt: skip
                    assert _value(samples, "colmena_consumer_lag_messages",
                                  role=role, kind=k, symbol=SYMBOL) == 0  # fmt: skip
                assert _value(samples, "colmena_decision_latency_seconds_count",
                              role=role) == sum(expected[role].values())  # fmt: skip
                assert _value(samples, "colmena_newest_candle_timestamp_seconds",
                              symbol=SYMBOL) == bars[-1].ts / 1e9 + 60  # fmt: skip
            risk = _samples((await _aget(healths["risk"].port or 0, "/metrics"))[2])
            assert _value(risk, "colmena_drawdown_ratio", symbol=SYMBOL) == last.drawdown_from_high
            assert _value(risk, "colmena_ladder_drawdown_ratio", symbol=SYMBOL) == last.drawdown
            assert _value(risk, "colmena_daily_pnl_ratio", symbol=SYMBOL) == last.daily_pnl
            assert _value(risk, "colmena_equity_quote", symbol=SYMBOL) == last.equity
            for state in ("ACTIVE", "REDUCING", "PAUSED", "HALTED"):
                assert _value(risk, "colmena_trading_state", symbol=SYMBOL,
                              state=state) == (state == "HALTED")  # fmt: skip
            assert _value(risk, "colmena_messages_published_total", role="risk",
                          kind="risk_state") == len(states)  # fmt: skip
        finally:
            stop.set()
            await asyncio.gather(*services)
            for h in healths.values():
                await h.stop()

    asyncio.run(run())


def test_a_daemon_serves_its_own_health_from_the_config(nats_url: str) -> None:
    """run_role without a health server given: it starts one from [health] (127.0.0.1, a free
    port) and stops it when the role stops."""
    config = LiveConfig(symbols=(SymbolSettings(symbol=SYMBOL, checkpoint="unused"),))
    seen: list[tuple[str, int]] = []
    original = Health.start

    async def start(self: Health) -> int:
        port = await original(self)
        assert self.address is not None
        seen.append(self.address)
        # Asked while the daemon is up: an answer from its own server.
        status, _, body = await _aget(port, "/health/live")
        assert status == 200
        assert json.loads(body)["role"] == "execution"
        stop.set()
        return port

    stop = asyncio.Event()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Health, "start", start)
        asyncio.run(run_role("execution", config, nats_url, stop))
    ((host, port),) = seen
    assert host == "127.0.0.1"
    assert port > 0
    with pytest.raises(urllib.error.URLError):
        _get(port, "/health")


def test_binds_loopback_by_default_and_a_taken_port_is_a_named_error() -> None:
    assert HealthSettings().host == "127.0.0.1"

    async def run() -> None:
        health = Health("ingest", HealthSettings(), [SYMBOL])
        async with health:
            assert health.address is not None
            assert health.address[0] == "127.0.0.1"
            taken = health.port
            assert taken is not None
            other = Health("ingest", HealthSettings(port=taken), [SYMBOL])
            with pytest.raises(HealthError, match=rf"127\.0\.0\.1 port {taken}.*\[health\] port"):
                await other.start()

    asyncio.run(run())


def test_role_ports_follow_the_base_port() -> None:
    base = HealthSettings(port=9400)
    ports = {r: role_port(base, r) for r in ("ingest", "risk", "execution", "recorder")}
    assert ports == {"ingest": 9400, "risk": 9401, "execution": 9402, "recorder": 9403}
    assert [role_port(base, "strategy", i) for i in (1, 2, 3)] == [9404, 9405, 9406]
    assert role_port(HealthSettings(), "risk") == 0  # 0: a free port each
    with pytest.raises(HealthError, match="past 65535"):
        role_port(HealthSettings(port=65_534), "execution")
    with pytest.raises(HealthError, match="unknown role"):
        role_port(base, "trader")


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ('host = "localhost"', r"host must be an IP address.*\$\.health"),
        ("port = 70000", r"<= 65535.*\$\.health\.port"),
        ("port = -1", r">= 0.*\$\.health\.port"),
        ("max_consumer_lag = -5", r"\$\.health\.max_consumer_lag"),
        ("max_candle_age_seconds = 0", r"\$\.health\.max_candle_age_seconds"),
        ("bind = 1", r"unknown field `bind`.*\$\.health"),
        ('enabled = "yes"', r"Expected `bool`.*\$\.health\.enabled"),
    ],
)
def test_a_bad_health_section_is_a_named_error(tmp_path: Path, section: str, message: str) -> None:
    path = tmp_path / "colmena.toml"
    path.write_text(f"[health]\n{section}\n")
    with pytest.raises(ConfigError, match=message) as caught:
        load_config(path)
    assert str(path) in str(caught.value)


def test_a_taken_port_stops_the_daemon_with_a_service_error(nats_url: str) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        # The risk daemon listens on the base port + 1.
        config = LiveConfig(symbols=(SymbolSettings(symbol=SYMBOL, checkpoint="unused"),),
                            health=HealthSettings(port=port - 1))  # fmt: skip
        with pytest.raises(ServiceError, match=f"port {port}"):
            asyncio.run(run_role("risk", config, nats_url, asyncio.Event()))


def test_exchange_calls_are_timed_and_a_network_error_disconnects() -> None:
    ccxt = pytest.importorskip("ccxt")
    answers: list[Callable[[], Any]] = []

    class Client:
        async def fetch(self, url: str, method: str = "GET") -> Any:
            return answers.pop(0)()

    def fail(error: type[Exception]) -> Callable[[], Any]:
        def raise_it() -> Any:
            raise error("simulated")

        return raise_it

    metrics = ServiceMetrics("ingest")
    client = Client()
    instrument_exchange_client(client, metrics, "binance")

    def sample(name: str) -> float:
        value = metrics.registry.get_sample_value(name, {"exchange": "binance"})
        assert value is not None
        return value

    answers[:] = [lambda: [1, 2], fail(ccxt.RequestTimeout), fail(ccxt.BadSymbol), lambda: []]
    assert asyncio.run(client.fetch("u")) == [1, 2]  # passed through
    assert sample("colmena_exchange_connected") == 1.0
    with pytest.raises(ccxt.RequestTimeout):
        asyncio.run(client.fetch("u"))
    assert sample("colmena_exchange_connected") == 0.0
    with pytest.raises(ccxt.BadSymbol):  # an answer, even if an error: connected
        asyncio.run(client.fetch("u"))
    assert sample("colmena_exchange_connected") == 1.0
    asyncio.run(client.fetch("u"))
    assert sample("colmena_exchange_api_latency_seconds_count") == 4
    assert (
        metrics.registry.get_sample_value(
            "colmena_exchange_api_latency_seconds_bucket", {"exchange": "binance", "le": "+Inf"}
        )
        == 4
    )


def test_the_ingest_daemon_reports_the_exchange(nats_url: str) -> None:
    """The exchange feed against a local Binance-format server (tests/fake_exchange.py): the
    calls are timed, the candles published counted, and an exchange that answers HTTP 500 shows
    as disconnected."""
    pytest.importorskip("ccxt")
    sys.path.insert(0, str(Path(__file__).parent))
    from fake_exchange import MINUTE_MS, FakeBinance, kline

    start_ms = 1_677_628_800_000  # long closed on the real clock
    fake = FakeBinance([kline(start_ms + i * MINUTE_MS, 100.0, 101.0, 99.0, 100.5, 5.0)
                        for i in range(30)])  # fmt: skip
    config = msgspec.convert({
        "symbols": [{"symbol": SYMBOL, "checkpoint": "unused"}],
        "feed": {"kind": "exchange", "exchange": "binance", "api_url": fake.url, "limit": 30,
                 "poll_seconds": 1.0, "max_attempts": 1},
    }, LiveConfig)  # fmt: skip

    async def run() -> None:
        health = Health("ingest", config.health, [SYMBOL])
        sample = health.metrics.registry.get_sample_value
        async with health:
            stop = asyncio.Event()
            service = asyncio.create_task(run_role("ingest", config, nats_url, stop, health=health))
            try:

                async def until(condition: Callable[[], bool]) -> None:
                    while not condition():  # the daemon's own counters (hang detection)
                        assert not service.done(), service
                        await asyncio.sleep(0.05)

                labels = {"role": "ingest", "kind": "candle"}
                await asyncio.wait_for(until(lambda: sample(
                    "colmena_messages_published_total", labels) == 30), HANG_SECONDS)  # fmt: skip
                samples = _samples((await _aget(health.port or 0, "/metrics"))[2])
                assert _value(samples, "colmena_exchange_connected", exchange="binance") == 1
                calls = _value(samples, "colmena_exchange_api_latency_seconds_count",
                               exchange="binance")  # fmt: skip
                assert calls >= 2  # the markets, then the candles
                assert _value(samples, "colmena_newest_candle_timestamp_seconds",
                              symbol=SYMBOL) == (start_ms + 30 * MINUTE_MS) / 1e3  # fmt: skip
                fake.fail_always = True  # HTTP 500 from now on
                exchange = {"exchange": "binance"}
                down = lambda: sample("colmena_exchange_connected", exchange) == 0  # noqa: E731
                await asyncio.wait_for(until(down), HANG_SECONDS)
                samples = _samples((await _aget(health.port or 0, "/metrics"))[2])
                assert _value(samples, "colmena_exchange_connected", exchange="binance") == 0
                assert _value(samples, "colmena_exchange_api_latency_seconds_count",
                              exchange="binance") > calls  # fmt: skip
            finally:
                stop.set()
                await service

    try:
        asyncio.run(run())
    finally:
        fake.close()


# -- the alert rules -------------------------------------------------------------------------

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not installed (Debian's prometheus package ships it)"
)


@needs_promtool
def test_the_alert_rules_pass_promtool_check() -> None:
    assert PROMTOOL is not None
    done = subprocess.run([PROMTOOL, "check", "rules", str(RULES)], capture_output=True,
                          text=True, timeout=60, check=False)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 9 rules found" in done.stdout


@needs_promtool
def test_the_alert_rules_pass_their_promtool_unit_tests() -> None:
    assert PROMTOOL is not None
    done = subprocess.run([PROMTOOL, "test", "rules", str(RULE_TESTS)], capture_output=True,
                          text=True, timeout=60, check=False, cwd=RULE_TESTS.parent)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


@needs_promtool
def test_the_rule_tests_fail_when_a_threshold_moves(tmp_path: Path) -> None:
    """The unit tests bite: the drawdown warning at 12 % instead of 10 % fails them."""
    assert PROMTOOL is not None
    rules = RULES.read_text()
    moved = rules.replace("(colmena_drawdown_ratio) > 0.10", "(colmena_drawdown_ratio) > 0.12")
    assert moved != rules
    (tmp_path / RULES.name).write_text(moved)
    shutil.copy(RULE_TESTS, tmp_path / RULE_TESTS.name)
    done = subprocess.run([PROMTOOL, "test", "rules", RULE_TESTS.name], capture_output=True,
                          text=True, timeout=60, check=False, cwd=tmp_path)  # fmt: skip
    assert done.returncode != 0
    assert "ColmenaDrawdownWarning" in done.stdout + done.stderr


def _exported_names() -> set[str]:
    """Every sample name the services' registry can export (a histogram's _bucket, _sum,
    _count; a counter's _total)."""
    names: set[str] = set()
    for family in ServiceMetrics("risk").registry.collect():
        suffixes = {"histogram": ("_bucket", "_sum", "_count", "_created"),
                    "counter": ("_total", "_created")}.get(family.type, ("",))  # fmt: skip
        names.update(family.name + s for s in suffixes)
    return names


_METRIC = re.compile(r"\b(?:colmena|process|python)_[a-z0-9_]+\b")


def test_the_alert_rules_use_only_exported_metrics() -> None:
    used = set(_METRIC.findall(RULES.read_text()))
    assert used
    assert used <= _exported_names(), used - _exported_names()


# -- the dashboard ---------------------------------------------------------------------------


def test_the_dashboard_queries_only_exported_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["schemaVersion"] == 39
    assert dashboard["uid"] == "colmena-overview"
    assert dashboard["title"] == "colmena"
    assert [v["type"] for v in dashboard["templating"]["list"]] == ["datasource"]
    panels = dashboard["panels"]
    rows = [p["title"] for p in panels if p["type"] == "row"]
    assert rows == ["Overview", "Trading", "Risk", "System"]
    assert len({p["id"] for p in panels}) == len(panels)
    exported = _exported_names()
    used: set[str] = set()
    row = None
    per_row: dict[str, int] = {}
    for p in panels:
        grid = p["gridPos"]
        assert grid["x"] >= 0
        assert grid["x"] + grid["w"] <= 24
        assert grid["h"] > 0
        if p["type"] == "row":
            row = p["title"]
            continue
        assert row is not None, f"panel {p['title']!r} before the first row"
        per_row[row] = per_row.get(row, 0) + 1
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert p["targets"], p["title"]
        for target in p["targets"]:
            names = set(_METRIC.findall(target["expr"]))
            assert names, (p["title"], target["expr"])
            assert names <= exported, (p["title"], names - exported)
            used |= names
    assert set(per_row) == set(rows)  # no empty row
    required = {"colmena_drawdown_ratio", "colmena_daily_pnl_ratio",
                "colmena_newest_candle_timestamp_seconds", "colmena_exchange_connected",
                "colmena_exchange_api_latency_seconds_bucket", "colmena_trading_state",
                "colmena_decision_latency_seconds_bucket", "colmena_consumer_lag_messages",
                "colmena_messages_handled_total"}  # fmt: skip
    assert required <= used, required - used
