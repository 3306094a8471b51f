"""Faults survived (tests/fault_harness.py): the live system of ``colmena up`` replaying real
candles while its daemons are killed with SIGKILL, the NATS server and PostgreSQL restarted,
records exactly what an undisturbed run records, with no duplicate and no lost message, and a
HALT set before a fault is still set after it; the exchange feed answered slowly, with 5xx, with
429 or not at all publishes what an undisturbed feed publishes, its circuit breaker opening after
3 failures and half-opening after 2 s, its retries backing off with jitter, every request timed
out.

The short versions run by default (about a minute on two cores); the long campaign
(:func:`fault_harness.campaign`, also ``python bench/faults.py``) runs with ``-m faults_long`` or
``COLMENA_FAULTS_LONG=1``.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytest.importorskip("pgserver")
pytest.importorskip("ccxt")
sys.path.insert(0, str(Path(__file__).parent))
import fault_harness as fh
from colmena.services.nats_server import EmbeddedNatsServer
from fake_exchange import FakeBinance

#: Environment variable that runs the ``faults_long`` campaign in a plain run.
FAULTS_LONG_ENV = "COLMENA_FAULTS_LONG"

SHORT_BARS = 300
# The kill switch trips at bar 230 of these candles: faults land before and after the HALT.
SHORT_HALT = 0.002
SHORT_SEED = 1
# The short run's faults: SIGKILL of each daemon. The restarts of NATS and PostgreSQL are in the
# long campaign (each takes the services' reconnection time); the recorder waiting them out is
# also tested on its own (tests/test_recorder.py).
SHORT_KINDS = tuple(k for k in fh.FAULT_KINDS if k.startswith("kill:"))


def test_the_system_records_under_faults_what_it_records_undisturbed(
    shared_data_dir: Path, tmp_path: Path
) -> None:
    """SIGKILL of each of the five daemons at seeded points of a replay of 300 real candles;
    the undisturbed run beside it."""
    inputs = fh.make_inputs(
        tmp_path, shared_data_dir, bars=SHORT_BARS, halt_drawdown=SHORT_HALT, speed=1_500.0
    )
    faults = fh.schedule(SHORT_SEED, len(SHORT_KINDS), SHORT_BARS, SHORT_KINDS)
    runs = {
        "undisturbed": fh.FaultRun(tmp_path / "undisturbed", inputs, hang_seconds=300.0),
        "disturbed": fh.FaultRun(tmp_path / "disturbed", inputs, hang_seconds=300.0),
    }
    with ThreadPoolExecutor(2) as pool:  # side by side: the faults' waits overlap the other run
        futures = {name: pool.submit(run.run, faults if name == "disturbed" else ())
                   for name, run in runs.items()}  # fmt: skip
        reference, disturbed = (futures[n].result() for n in ("undisturbed", "disturbed"))
    assert dict(disturbed.injected) == dict.fromkeys(SHORT_KINDS, 1)
    assert not reference.injected
    compared, differences = fh.compare(reference.records, disturbed.records)
    assert differences == []
    assert compared == sum(len(rows) for rows in reference.records.values())
    assert len(reference.records["live_orders"]) == SHORT_BARS
    assert len(reference.records["live_fills"]) > 10
    # No lost message: every message of the stream recorded once (the run's end condition),
    # and the stream holds what the undisturbed one holds.
    assert disturbed.stream_messages == reference.stream_messages
    assert fh.count_duplicates(disturbed) == fh.count_duplicates(reference) == 0
    # The killed daemons came back (the supervisor restarted each at least once).
    assert all(disturbed.restarts[role] >= 1 for role in fh.ROLES if role != "ingest")
    # A HALT set before a fault is still set after it.
    halted = fh.halted_from(disturbed.records)
    assert halted is not None
    assert halted == fh.halted_from(reference.records)
    # Faults injected once the HALT was recorded (the timeline's count of HALTED decisions).
    after_halt = [e for e in disturbed.timeline if e[2] in SHORT_KINDS and e[3] > 0]
    assert after_halt, "a fault must land after the HALT"
    assert halted[1] == SHORT_BARS - halted[0]  # every decision from the trip on is HALTED


def test_the_exchange_feed_publishes_under_faults_what_it_publishes_undisturbed(
    shared_data_dir: Path, tmp_path: Path
) -> None:
    """Slow answers, HTTP 5xx, HTTP 429 and silence at seeded polls of 30."""
    polls = 30
    market = fh.exchange_market(shared_data_dir, 60 + polls + 5)
    faults = fh.exchange_schedule(SHORT_SEED, 6, polls)
    results = {}
    for name, schedule in (("undisturbed", []), ("disturbed", faults)):
        fake = FakeBinance(market)
        try:
            with EmbeddedNatsServer(tmp_path / name) as server:
                results[name] = asyncio.run(fh.exchange_run(server.url, fake, schedule, polls))
        finally:
            fake.close()
    reference, disturbed = results["undisturbed"], results["disturbed"]
    assert set(disturbed.injected) == set(fh.EXCHANGE_FAULTS)
    # After recovery the feed has published what the undisturbed one did, each candle once.
    assert disturbed.candles == reference.candles
    for candles in reference.candles.values():
        # The first poll's window (50 candles, the newest still forming), then one a poll.
        assert len(candles) == 49 + polls - 1
        assert len({c[0] for c in candles}) == len(candles)
    failed = [r for r in disturbed.reports if any(s.error for s in r.symbols)]
    assert failed, "the faults must cost polls"
    checks = fh.check_exchange_events(disturbed.events)
    assert checks.problems == []
    assert checks.breaker_opened >= 1
    assert checks.half_opened >= 1
    assert checks.closed_again >= 1
    # Backoff with full jitter: waits spread within [0, 0.5 * 2**(try - 1)], not one value.
    firsts = [w for k, w in checks.backoff_waits if k == 1]
    assert len(firsts) >= 2
    assert len(set(firsts)) == len(firsts)
    # Every request has a timeout: the silent exchange's requests gave up after it, before
    # the answer came.
    assert disturbed.client_timeout_ms == fh.EXCHANGE_TIMEOUT_SECONDS * 1_000
    assert checks.timeouts
    assert all(fh.EXCHANGE_TIMEOUT_SECONDS <= s < fh.SILENT_SECONDS for s in checks.timeouts)
    assert fh.check_exchange_events(reference.events).problems == []


def test_a_5xx_with_binances_internal_error_code_is_retried(tmp_path: Path) -> None:
    from colmena.services.bus import Bus
    from colmena.services.feeds import ExchangeFeed
    from fake_exchange import kline

    start_ms = 1_677_628_800_000
    fake = FakeBinance([kline(start_ms + 60_000 * i, 1.0, 1.0, 1.0, 1.0, 1.0) for i in range(10)])
    fake.fail_next, fake.fail_status, fake.fail_code = 1, 500, -1001

    async def run() -> int:
        config = fh.exchange_config(fake.url, symbols=("BTC/USDT",))
        now_ns = (start_ms + 10 * 60_000) * 1_000_000

        async def sleep(seconds: float) -> None:
            pass

        feed = ExchangeFeed(config, clock=lambda: now_ns, sleep=sleep)
        with EmbeddedNatsServer(tmp_path / "nats") as server:
            bus = await Bus.connect(server.url)
            try:
                await feed.start(bus, asyncio.Event())
                return (await feed.poll()).symbols[0].attempts
            finally:
                await feed.close()
                await bus.close()

    try:
        attempts = asyncio.run(run())
    finally:
        fake.close()
    assert attempts == 2  # the failed try, then the retry


def _long_asked(config: pytest.Config) -> bool:
    return "faults_long" in (config.getoption("markexpr") or "") or os.environ.get(
        FAULTS_LONG_ENV, ""
    ) not in ("", "0")


@pytest.mark.faults_long
def test_the_long_fault_campaign(
    shared_data_dir: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """:func:`fault_harness.campaign` with the figures of the README (``bench/faults.py``)."""
    if not _long_asked(request.config):
        pytest.skip(f"long fault campaign: run with -m faults_long or {FAULTS_LONG_ENV}=1")
    figures = fh.campaign(tmp_path, shared_data_dir)
    assert figures["hung_runs"] == []
    assert figures["differences"] == []
    assert figures["duplicates_found"] == 0
    assert figures["lost_messages"] == 0
    assert figures["faults_injected"] >= figures["runs"]


STALL_FROM, STALL_POLLS = 5, 8  # the candles stop for 8 minutes: longer than stale_after (300 s)


def _humanize_duration(seconds: float) -> str:
    """Prometheus' ``humanizeDuration`` of a whole number of seconds in [60, 3600)."""
    m, s = divmod(int(seconds), 60)
    return f"{m}m {s}s"


def test_a_candle_feed_that_stops_makes_the_risk_service_reduce_only_until_fresh(
    shared_data_dir: Path, tmp_path: Path
) -> None:
    """The exchange's candles stop for 8 polls (it answers, nothing new) and then come back:
    the feed catches up, stamping each candle with when it came. Through the strategy, risk and
    execution handlers, the catch-up bars received over ``stale_after_seconds`` (300 s) after
    their close are decided reduce-only (REDUCING) with a ``data_feed_silent`` alert, the fresh
    ones after them ACTIVE again; the shipped ColmenaNoCandle rule fires on the newest-candle
    series of the run during the stall and not after (``promtool test rules``)."""
    import dataclasses
    import shutil
    import subprocess

    import msgspec

    from colmena.execution.simulation import ExecutionSettings
    from colmena.execution.trading_loop import Bar
    from colmena.live import wire
    from colmena.live.handlers import ExecutionHandler, RiskHandler, StrategyHandler, route
    from colmena.model.decision import DecisionConfig
    from colmena.risk import RiskConfig
    from helpers import make_state

    polls = 20
    market = fh.exchange_market(shared_data_dir, 60 + polls + 5)
    fake = FakeBinance(market)
    stall = fh.ExchangeFault("stall", STALL_FROM, STALL_POLLS)
    try:
        with EmbeddedNatsServer(tmp_path / "nats") as server:
            run = asyncio.run(fh.exchange_run(server.url, fake, [stall], polls))
    finally:
        fake.close()
    assert run.injected == {"stall": 1}
    symbol = "BTC/USDT"
    bar_ns = 60 * 10**9
    candles = [
        wire.CandleMessage(symbol=symbol, ts=c[0], bar_seconds=60, bar=Bar(*c), received_ns=r)
        for c, r in zip(run.candles[symbol], run.received_ns[symbol], strict=True)
    ]
    lateness = {m.ts: (m.received_ns - (m.ts + bar_ns)) / 1e9 for m in candles}
    # The first window (its old candles count as fresh: the feed had no newest one yet) aside,
    # every candle came within a minute of its close but the catch-up's oldest.
    stale_after = RiskConfig().stale_after_seconds
    late = sorted(ts for ts, s in lateness.items() if s > stale_after)
    first_poll_ts = {m.ts for m in candles if m.received_ns == run.poll_ns[0]}
    late = [ts for ts in late if ts not in first_poll_ts]
    assert len(late) >= 2, lateness

    state = make_state(finished=True, seed=3)
    config = msgspec.structs.replace(state.config, decision=DecisionConfig(interval="5m"))
    model = dataclasses.replace(state, config=config).to_model()
    risk = RiskConfig(kelly_prior=1.0, kelly_multiplier=1.0, var_budget=1e9,
                      min_trade_fraction=0.0)  # fmt: skip
    execution = ExecutionSettings(market="margin", max_participation=0.05)
    handlers = [StrategyHandler(model, symbol, "ab" * 32, bar_seconds=60),
                RiskHandler(symbol, risk, execution, bar_seconds=60),
                ExecutionHandler(symbol, execution, bar_seconds=60)]  # fmt: skip
    # The first window's candles carry the first poll's stamp: replayed as history (no stamp).
    fresh_history = [msgspec.structs.replace(m, received_ns=0) if m.ts in first_poll_ts else m
                     for m in candles]  # fmt: skip
    produced = route(handlers, fresh_history)
    states = {m.ts: m.decided.decision.state for m in produced if isinstance(m, wire.OrderMessage)}
    assert len(states) == len(candles)
    alerts = [m for m in produced if isinstance(m, wire.EventMessage)
              and m.event.code_name == "data_feed_silent"]  # fmt: skip
    assert alerts, "the stale data must raise the data_feed_silent alert"
    assert all(a.event.value > stale_after for a in alerts)
    # Reduce-only exactly at the bars whose candle came over 300 s after its close (the
    # catch-up's oldest: 421, 361 and 301 s late); ACTIVE before, and again from the first
    # fresh one on.
    reducing = sorted(ts for ts, s in states.items() if s == "REDUCING")
    assert reducing == late
    ordered = [states[ts] for ts in sorted(states)]
    assert ordered[-1] == "ACTIVE"
    assert set(ordered) == {"ACTIVE", "REDUCING"}
    assert ordered.index("REDUCING") > 0

    # The newest-candle series the ingest daemon serves, sampled at each poll (minute i from
    # the first poll), through the shipped rules: firing in the stall, resolved after.
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian's prometheus package ships it)")
    t0 = run.poll_ns[0]
    values = []
    for polled in run.poll_ns:
        newest = max(m.ts for m in candles if m.received_ns <= polled)
        values.append((newest + bar_ns - t0) / 1e9)
    firing_at = STALL_FROM + STALL_POLLS - 1  # the last poll of the stall
    age = firing_at * 60 - values[firing_at]
    assert age > 300
    after = STALL_FROM + STALL_POLLS + 1
    rules = (Path(fh.__file__).parents[1] / "python" / "colmena" / "services" / "monitoring"
             / "prometheus" / "colmena-alerts.yml")  # fmt: skip
    test_file = tmp_path / "stall.test.yml"
    test_file.write_text(json.dumps({
        "rule_files": [str(rules)],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": [{
                "series": 'colmena_newest_candle_timestamp_seconds{symbol="BTC/USDT"}',
                "values": " ".join(f"{v:g}" for v in values),
            }],
            "alert_rule_test": [
                {"eval_time": f"{firing_at}m", "alertname": "ColmenaNoCandle",
                 "exp_alerts": [{"exp_labels": {"severity": "critical", "symbol": symbol},
                                 "exp_annotations": {"summary": f"{symbol}: no candle for "
                                     f"{_humanize_duration(age)} (over 5 minutes)"}}]},
                {"eval_time": f"{STALL_FROM - 1}m", "alertname": "ColmenaNoCandle",
                 "exp_alerts": []},
                {"eval_time": f"{after}m", "alertname": "ColmenaNoCandle", "exp_alerts": []},
            ],
        }],
    }))  # fmt: skip
    result = subprocess.run([promtool, "test", "rules", str(test_file)], capture_output=True,
                            text=True, timeout=60, check=False)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
