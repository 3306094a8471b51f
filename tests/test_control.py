"""Operator control (``colmena ctl``): the core's pause, resume, flatten, halt and reset, the
stale-data rule by receive time, the risk handler applying control actions at the next open
(checked against plain-Python properties of the positions and states, and bit for bit across a
restart), the risk service answering over NATS request/reply against a real nats-server, and the
command line."""

from __future__ import annotations

import asyncio
import math
import sys
from collections.abc import Iterator
from pathlib import Path

import msgspec
import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from colmena import _core
from colmena.cli import main
from colmena.execution.simulation import ExecutionSettings
from colmena.execution.trading_loop import AccountSnapshot, Bar, RiskStage
from colmena.live import wire
from colmena.live.handlers import ExecutionHandler, RiskHandler, route
from colmena.risk.config import RiskConfig
from colmena.services.bus import STREAM, Bus
from colmena.services.control import (
    ControlError,
    ControlResponder,
    ControlUnavailableError,
    send_control,
)
from colmena.services.nats_server import EmbeddedNatsServer
from colmena.services.runner import serve
from colmena.services.state import StateStore

sys.path.insert(0, str(Path(__file__).parent))

SYMBOL = "BTC/USDT"
MIN = 60_000_000_000
T0 = 27_000_000 * MIN
HOUR = 60 * MIN
# Trades at every bar (full Kelly from the start, no VaR cap), never trips a breaker on these bars.
RISK = RiskConfig(kelly_prior=1.0, kelly_multiplier=1.0, var_budget=1e9, min_trade_fraction=0.0)
EXECUTION = ExecutionSettings(market="margin", max_participation=0.5)
HANG = 60.0  # seconds: hang detection only


def _bars(n: int, seed: int = 3) -> list[Bar]:
    """A quiet random walk (0.05 % per bar: no drawdown breaker fires) with ample volume."""
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.0005, n)))
    out, previous = [], 100.0
    for i, c in enumerate(close.tolist()):
        out.append(Bar(T0 + i * MIN, previous, max(previous, c) * 1.0005,
                       min(previous, c) * 0.9995, c, 1e9))  # fmt: skip
        previous = c
    return out


def _signals(bars: list[Bar], seed: int = 4) -> list[wire.SignalMessage]:
    rng = np.random.default_rng(seed)
    return [
        wire.SignalMessage(symbol=SYMBOL, ts=b.ts, action="decide",
                           signal=float(np.clip(rng.normal(0.0, 0.7), -1.0, 1.0)), valid=True,
                           regime=1, model_sha256="ab" * 32)
        for b in bars
    ]  # fmt: skip


def _control(
    handler: RiskHandler, action: str, n: int, reason: str = "test"
) -> wire.ControlMessage:
    return wire.ControlMessage(
        symbol=SYMBOL, ts=handler.next_open_ts(), action=action,  # type: ignore[arg-type]
        request_id=f"req-{n}-{action}", operator="tester", reason=reason, requested_ns=n,
    )  # fmt: skip


class Run:
    """The risk and execution handlers over ``bars``, with control actions taken before the
    bars named in ``schedule`` (index -> actions), optionally restarted from their saved states
    before bar ``restart``."""

    def __init__(self, bars: list[Bar], schedule: dict[int, list[str]],
                 restart: int | None = None) -> None:  # fmt: skip
        signals = _signals(bars)
        risk, execution = self._fresh()
        self.produced: list[wire.WireMessage] = []
        self.taken: list[wire.ControlMessage] = []
        for i, (bar, signal) in enumerate(zip(bars, signals, strict=True)):
            if restart is not None and i == restart:
                saved_risk, saved_execution = risk.state(), execution.state()
                assert saved_risk is not None
                assert saved_execution is not None
                risk, execution = self._fresh()
                risk.restore(saved_risk)
                execution.restore(saved_execution)
                for old in self.taken:  # the stream delivers them again: each is applied once
                    assert risk.handle(old) == []
            for action in schedule.get(i, []):
                control = _control(risk, action, len(self.taken))
                self.taken.append(control)
                assert risk.handle(control) == []
                assert risk.handle(control) == []  # the copy from the stream: nothing new
            candle = wire.CandleMessage(symbol=SYMBOL, ts=bar.ts, bar_seconds=60, bar=bar)
            self.produced += route((risk, execution), [candle, signal])
        self.states = {m.ts: m for m in self.produced if isinstance(m, wire.RiskStateMessage)}
        self.accounts = {m.ts: m.snapshot for m in self.produced
                         if isinstance(m, wire.AccountMessage)}  # fmt: skip
        self.orders = {m.ts: m.decided for m in self.produced if isinstance(m, wire.OrderMessage)}
        self.bars = bars

    @staticmethod
    def _fresh() -> tuple[RiskHandler, ExecutionHandler]:
        risk = RiskHandler(SYMBOL, RISK, EXECUTION)
        execution = ExecutionHandler(SYMBOL, EXECUTION)
        risk.keep_state = execution.keep_state = True
        return risk, execution

    def state(self, i: int) -> str:
        return self.states[self.bars[i].ts].state

    def position(self, i: int) -> float:
        return self.accounts[self.bars[i].ts].position

    def events(self, i: int) -> list[str]:
        return [m.event.code_name for m in self.produced
                if isinstance(m, wire.EventMessage) and m.ts == self.bars[i].ts]  # fmt: skip


BARS = _bars(120)


def test_without_control_the_run_trades_in_both_directions() -> None:
    run = Run(BARS, {})
    positions = [run.position(i) for i in range(len(BARS))]
    assert max(positions) > 0 > min(positions)
    assert {run.state(i) for i in range(len(BARS))} == {"ACTIVE"}


def test_pause_is_reduce_only_until_resume() -> None:
    run = Run(BARS, {40: ["pause"], 80: ["resume"]})
    assert run.events(40)[:2] == ["paused_by_operator", "PAUSED"]
    for i in range(40, 80):
        assert run.state(i) == "PAUSED"
        # Reduce-only: from one close to the next, the position never grows or changes side.
        before, after = run.position(i), run.position(i + 1)
        assert abs(after) <= abs(before) + 1e-12
        assert before * after >= 0.0
    assert "resumed_by_operator" in run.events(80)
    assert {run.state(i) for i in range(80, len(BARS))} == {"ACTIVE"}
    assert any(abs(run.position(i + 1)) > abs(run.position(i)) for i in range(80, len(BARS) - 1))
    # Before the pause, the same as a run without control.
    free = Run(BARS, {})
    assert [run.position(i) for i in range(41)] == [free.position(i) for i in range(41)]


def test_flatten_closes_the_position_and_holds_it_flat() -> None:
    # A bar whose close (after its open's reduce-only fill) holds a position.
    for k in range(30, 90):
        run = Run(BARS, {k: ["flatten"], 100: ["resume"]})
        if run.position(k) != 0.0:
            break
    assert run.position(k) != 0.0
    assert run.orders[BARS[k].ts].decision.verdict == "flatten_stop"
    assert run.orders[BARS[k].ts].order is not None
    assert run.orders[BARS[k].ts].order.origin == "risk"  # type: ignore[union-attr]
    # Filled at the next open: flat from then on, until the person resumes.
    assert all(run.position(i) == 0.0 for i in range(k + 1, 100))
    assert any(run.position(i) != 0.0 for i in range(101, len(BARS)))


def test_halt_holds_until_a_reset_and_resume_does_not_end_it() -> None:
    run = Run(BARS, {30: ["halt"], 50: ["resume"], 70: ["reset"]})
    assert "halted_by_operator" in run.events(30)
    assert all(run.state(i) == "HALTED" for i in range(30, 70))
    assert all(run.position(i) == 0.0 for i in range(31, 70))
    assert run.events(70)[:2] == ["halt_reset", "ACTIVE"]
    assert run.state(70) == "ACTIVE"


def test_a_reset_under_a_pause_stays_paused() -> None:
    run = Run(BARS, {20: ["pause", "halt"], 40: ["reset"], 60: ["resume"]})
    assert run.state(39) == "HALTED"
    assert run.state(40) == "PAUSED"
    assert run.state(60) == "ACTIVE"


def test_reset_needs_a_reason_and_a_control_for_another_symbol_is_refused() -> None:
    risk = RiskHandler(SYMBOL, RISK, EXECUTION)
    with pytest.raises(ValueError, match="reason"):
        risk.handle(_control(risk, "reset", 0, reason=" "))
    other = wire.ControlMessage(symbol="ETH/USDT", ts=0, action="pause", request_id="x",
                                operator="o", reason="", requested_ns=0)  # fmt: skip
    with pytest.raises(ValueError, match="ETH/USDT"):
        risk.handle(other)
    assert risk.pending_controls == ()


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.dictionaries(st.integers(1, 58), st.lists(st.sampled_from(
        ["pause", "resume", "flatten", "halt", "reset"]), min_size=1, max_size=2), max_size=4),
    st.integers(1, 59),
)  # fmt: skip
def test_a_restart_continues_bit_for_bit_with_the_controls(
    schedule: dict[int, list[str]], restart: int
) -> None:
    bars = BARS[:60]
    once = Run(bars, schedule)
    again = Run(bars, schedule, restart=restart)
    assert again.produced[-200:] == once.produced[-200:]
    assert again.states == once.states
    assert again.accounts == once.accounts


def test_operator_pause_outlasts_a_ladder_pause_in_the_core() -> None:
    # No daily-loss pause here: only the ladder's.
    manager = _core.RiskManager(msgspec.structs.replace(RISK, daily_loss_pause=-0.99).to_core())
    t = T0
    manager.observe(t, 10_000.0)
    manager.observe(t + MIN, 9_400.0)  # a 6 % drawdown: ladder level 1, PAUSED for an hour
    assert manager.state == "PAUSED"
    assert manager.paused_until == t + MIN + HOUR
    events = manager.pause(t + 2 * MIN)
    assert [e[1:3] for e in events] == [("drawdown_threshold", 9)]  # already PAUSED: no change
    manager.observe(t + 2 * HOUR, 9_400.0)  # the ladder's pause is over: the person's holds
    assert manager.state == "PAUSED"
    assert manager.operator_paused
    manager.resume(t + 2 * HOUR + MIN)
    assert manager.state == "ACTIVE"
    assert not manager.operator_paused
    # Resumed while a ladder pause runs: PAUSED until its end, as without the person's pause.
    manager.observe(t + 3 * HOUR, 8_800.0)  # 12 %: ladder level 2, PAUSED for 4 hours
    assert manager.state == "PAUSED"
    assert manager.paused_until == t + 7 * HOUR
    manager.pause(t + 3 * HOUR + MIN)
    manager.resume(t + 3 * HOUR + 2 * MIN)
    assert manager.state == "PAUSED"
    manager.observe(t + 7 * HOUR - MIN, 8_800.0)
    assert manager.state == "PAUSED"
    manager.observe(t + 7 * HOUR, 8_800.0)
    assert manager.state == "ACTIVE"


def test_operator_pause_is_part_of_the_snapshot_and_checked_on_restore() -> None:
    manager = _core.RiskManager(RISK.to_core())
    manager.observe(T0, 10_000.0)
    manager.pause(T0 + MIN)
    state = manager.snapshot()
    assert state.operator_paused
    other = _core.RiskManager(RISK.to_core())
    other.restore(state)
    assert other.operator_paused
    assert other.state == "PAUSED"
    state.state = "ACTIVE"
    with pytest.raises(ValueError, match=r"state.*operator_paused"):
        other.restore(state)


def test_a_candle_received_late_makes_the_decision_reduce_only() -> None:
    stage = RiskStage(EXECUTION, RISK, bar_seconds=60)
    stale = int(RISK.stale_after_seconds * 1e9)
    opens, states, alerts = [], [], []
    for i, bar in enumerate(BARS[:6]):
        close = bar.ts + MIN
        received = close + stale + 7 * 10**9 if i in (2, 3) else close + 10**9
        gate = stage.open(bar, received_ts=received)
        opens.append(gate.state)
        snap = AccountSnapshot(ts=close, mark=bar.close, cash=10_000.0, position=0.0,
                               equity=10_000.0)  # fmt: skip
        decided = stage.close(bar, snap, "decide", 0.8, can_order=False, received_ts=received)
        states.append(decided.decision.state)
        alerts += [(i, e.value) for e in (*gate.events, *decided.events)
                   if e.code_name == "data_feed_silent"]  # fmt: skip
    # Stale from the late candle's open (its fill reduce-only) to the first fresh candle.
    assert opens == ["ACTIVE", "ACTIVE", "REDUCING", "REDUCING", "ACTIVE", "ACTIVE"]
    assert states == ["ACTIVE", "ACTIVE", "REDUCING", "REDUCING", "ACTIVE", "ACTIVE"]
    assert len(alerts) == 1
    assert alerts[0][0] == 2
    assert math.isclose(alerts[0][1], RISK.stale_after_seconds + 7.0)
    stage.open(BARS[6])
    late = AccountSnapshot(ts=BARS[6].ts + MIN, mark=1.0, cash=1.0, position=0.0, equity=1.0)
    with pytest.raises(ValueError, match="received_ts"):
        stage.close(BARS[6], late, "hold", None, received_ts=-1)


# --- the risk service over NATS ------------------------------------------------------------


@pytest.fixture
def nats_url(tmp_path: Path) -> Iterator[str]:
    with EmbeddedNatsServer(tmp_path / "nats") as server:
        yield server.url


async def _services(url: str, stop: asyncio.Event) -> tuple[list[asyncio.Task[int]],
                                                             dict[str, RiskHandler]]:  # fmt: skip
    risk = {SYMBOL: RiskHandler(SYMBOL, RISK, EXECUTION)}

    async def role(name: str, handlers: dict[str, object]) -> int:
        bus = await Bus.connect(url, name=name)
        try:
            store = await StateStore.open(bus)
            return await serve(bus, name, handlers, stop, state=store)  # type: ignore[arg-type]
        finally:
            await bus.close()

    tasks = [asyncio.create_task(role("risk", risk)),  # type: ignore[arg-type]
             asyncio.create_task(role("execution",
                                      {SYMBOL: ExecutionHandler(SYMBOL, EXECUTION)}))]  # fmt: skip
    return tasks, risk


async def _until(condition: object) -> None:
    async def wait() -> None:
        while not condition():  # type: ignore[operator]
            await asyncio.sleep(0.02)

    await asyncio.wait_for(wait(), HANG)


async def _publish(url: str, bars: list[Bar]) -> None:
    bus = await Bus.connect(url, name="feed")
    try:
        for bar, signal in zip(bars, _signals(BARS)[BARS.index(bars[0]) :], strict=False):
            await bus.publish(wire.CandleMessage(symbol=SYMBOL, ts=bar.ts, bar_seconds=60,
                                                 bar=bar))  # fmt: skip
            await bus.publish(signal)
    finally:
        await bus.close()


async def _stream(url: str, kind: wire.MessageKind) -> list[wire.WireMessage]:
    bus = await Bus.connect(url, name="reader")
    try:
        sub = await bus.jetstream.subscribe(wire.subject(kind, SYMBOL), stream=STREAM,
                                            ordered_consumer=True)  # fmt: skip
        out: list[wire.WireMessage] = []
        pending = (await sub.consumer_info()).num_pending
        for _ in range(pending or 0):
            msg = await sub.next_msg(timeout=HANG)
            out.append(wire.decode(kind, msg.data))
        await sub.unsubscribe()
        return out
    finally:
        await bus.close()


def test_the_risk_service_answers_and_applies_at_the_next_bar_through_a_restart(
    nats_url: str,
) -> None:
    """ctl pause between bars 40 and 41 of a replay; the services are stopped and started
    again before bar 41 comes (the pause only in the stream and their saved state): the
    records equal the handlers' run with the pause taken before bar 41."""
    first, total = 41, 80

    async def run() -> None:
        stop = asyncio.Event()
        tasks, risk = await _services(nats_url, stop)
        await _publish(nats_url, BARS[:first])
        await _until(lambda: risk[SYMBOL].closed_ts == BARS[first - 1].ts)
        with pytest.raises(ControlError, match="reason"):
            await send_control(nats_url, "reset", reason="", operator="ops")
        with pytest.raises(ControlError, match="ETH/USDT"):
            await send_control(nats_url, "pause", symbol="ETH/USDT", operator="ops")
        reply = await send_control(nats_url, "pause", reason="news at 14:00", operator="ops")
        assert reply.accepted
        (status,) = reply.symbols
        assert status.applies_from_ts == BARS[first].ts
        assert status.pending == ("pause",)
        assert status.trading_state == "ACTIVE"
        assert status.closed_ts == BARS[first - 1].ts
        stop.set()
        await asyncio.gather(*tasks)
        # Started again: the pause comes back from the stream, before bar 41 opens.
        stop = asyncio.Event()
        tasks, risk = await _services(nats_url, stop)
        await _until(lambda: risk[SYMBOL].pending_controls)
        await _publish(nats_url, BARS[first:total])
        await _until(lambda: risk[SYMBOL].closed_ts == BARS[total - 1].ts)
        status = (await send_control(nats_url, "status")).symbols[0]
        assert status.trading_state == "PAUSED"
        assert status.operator_paused
        assert status.pending == ()
        stop.set()
        await asyncio.gather(*tasks)
        controls = await _stream(nats_url, "control")
        assert len(controls) == 1
        control = controls[0]
        assert isinstance(control, wire.ControlMessage)
        assert (control.action, control.operator, control.reason) == (
            "pause", "ops", "news at 14:00")  # fmt: skip
        assert control.ts == BARS[first].ts
        assert control.requested_ns > 0
        orders = await _stream(nats_url, "order")
        reference = Run(BARS[:total], {first: ["pause"]})
        assert [m for m in orders if isinstance(m, wire.OrderMessage)] == [
            m for m in reference.produced if isinstance(m, wire.OrderMessage)
        ]

    asyncio.run(run())


def test_ctl_on_the_command_line(nats_url: str, tmp_path: Path) -> None:
    async def serve_for(check: object) -> None:
        stop = asyncio.Event()
        tasks, risk = await _services(nats_url, stop)
        try:
            await _publish(nats_url, BARS[:5])
            await _until(lambda: risk[SYMBOL].closed_ts == BARS[4].ts)
            await asyncio.to_thread(check)  # type: ignore[arg-type]
        finally:
            stop.set()
            await asyncio.gather(*tasks)

    runner = CliRunner()
    results = {}

    def check() -> None:
        results["status"] = runner.invoke(main, ["ctl", "status", "--nats", nats_url])
        results["halt"] = runner.invoke(
            main, ["ctl", "halt", "--nats", nats_url, "--reason", "r", "--operator", "ops"]
        )
        results["reset"] = runner.invoke(main, ["ctl", "reset", "--nats", nats_url])
        results["json"] = runner.invoke(main, ["ctl", "status", "--nats", nats_url, "--json"])

    asyncio.run(serve_for(check))
    assert results["status"].exit_code == 0, results["status"].output
    assert SYMBOL in results["status"].output
    assert "ACTIVE" in results["status"].output
    assert results["halt"].exit_code == 0
    assert "halt: accepted" in results["halt"].output
    assert results["reset"].exit_code == 2
    assert "reason" in results["reset"].output
    assert len(results["reset"].output.splitlines()) == 1
    assert '"pending":["halt"]' in results["json"].output
    # No risk service: exit 3, one line; no endpoints file: exit 2, one line.
    gone = runner.invoke(main, ["ctl", "status", "--nats", nats_url, "--timeout", "0.5"])
    assert gone.exit_code == 3
    assert "no risk service" in gone.output
    missing = runner.invoke(main, ["ctl", "status", "--data-dir", str(tmp_path / "none")])
    assert missing.exit_code == 2
    assert "endpoints.json" in missing.output


def test_no_nats_server_is_a_clear_error() -> None:
    with pytest.raises(ControlUnavailableError, match="cannot connect"):
        asyncio.run(send_control("nats://127.0.0.1:9", "status", timeout=0.5))


def test_a_bad_request_is_refused_by_name() -> None:
    responder = ControlResponder(None, {}, {}, None)  # type: ignore[arg-type]
    reply = asyncio.run(responder.answer(b'{"action": "explode"}'))
    assert not reply.ok
    assert "bad request" in reply.error
