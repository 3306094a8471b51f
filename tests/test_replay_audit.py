"""`colmena replay-audit` against a real PostgreSQL (pgserver): a session of the services'
handlers recorded by the recorder (messages and ``live_strategies``) is reproduced identically
from the records; one tampered value (an order's verdict, an account's equity) is reported as
exactly that difference with exit status 1; every user error is one line with exit status 2;
an unreachable database exits 3."""

from __future__ import annotations

import asyncio
import hashlib
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest
from click.testing import CliRunner, Result

from colmena.cli import main
from colmena.live import wire
from colmena.live.handlers import ExecutionHandler, RiskHandler, StrategyHandler, route
from colmena.persistence import checkpoint as checkpoints
from colmena.services.audit import AuditError, format_ns, parse_time, replay_audit
from colmena.services.config import LiveConfig, SymbolSettings
from colmena.services.recorder import Recorder, live_settings, strategy_records

pytest.importorskip("torch")
pytest.importorskip("psycopg")
sys.path.insert(0, str(Path(__file__).parent))
import psycopg

from conftest import fresh_database
from test_live_handlers import EXECUTION, RISK, SYMBOL, _bars, _candle
from test_serve_cli import TRAIN_BARS, _write_inputs

LIVE_BARS = 600
#: The audited period: bars 300 to 450 of the replay, so the state at its start depends on the
#: 300 candles before it.
FIRST, LAST = 300, 450


class Session:
    def __init__(self, folder: Path, candles: list[wire.CandleMessage], config: LiveConfig):
        self.folder = folder
        self.candles = candles
        self.config = config
        (self.strategy,) = strategy_records(config)
        model = checkpoints.load_path(folder).to_model()
        handlers = (
            StrategyHandler(model, SYMBOL, self.strategy.model_sha256),
            RiskHandler(SYMBOL, RISK, EXECUTION),
            ExecutionHandler(SYMBOL, EXECUTION),
        )
        self.produced = route(handlers, candles)
        self.t0 = candles[FIRST].ts
        self.t1 = candles[LAST].ts


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Session:
    tmp = tmp_path_factory.mktemp("audit")
    folder, _feed, candles = _write_inputs(tmp, TRAIN_BARS, LIVE_BARS)
    config = LiveConfig(
        symbols=(SymbolSettings(SYMBOL, str(folder)),), risk=RISK, execution=EXECUTION
    )
    return Session(folder, [_candle(b) for b in _bars(candles, TRAIN_BARS)], config)


def _record(dsn: str, session: Session) -> None:
    messages = [*session.candles, *session.produced]

    async def run() -> None:
        recorder = await Recorder.connect(dsn)
        try:
            await recorder.record_strategies(session.config)
            await recorder.record(
                (m, wire.idempotency_key(m), i + 1, wire.encode(m)) for i, m in enumerate(messages)
            )
        finally:
            await recorder.close()

    asyncio.run(run())


@pytest.fixture
def dsn(postgres_server: str, session: Session, request: pytest.FixtureRequest) -> str:
    url = fresh_database(postgres_server, f"colmena_audit_{request.node.name[:40].lower()}")
    _record(url, session)
    return url


def _audit(dsn: str, session: Session, *extra: str, t0: int | None = None,
           t1: int | None = None) -> Result:  # fmt: skip
    args = ["replay-audit", "--db", dsn, "--from", format_ns(session.t0 if t0 is None else t0),
            "--to", format_ns(session.t1 if t1 is None else t1), *extra]  # fmt: skip
    return CliRunner().invoke(main, args)


def _execute(dsn: str, sql: str, params: tuple[Any, ...] = ()) -> None:
    with psycopg.connect(dsn) as conn:
        conn.execute(sql, params)


def test_live_strategies_are_recorded_once_with_their_settings(dsn: str, session: Session) -> None:
    _record(dsn, session)  # a restarted recorder records them again: nothing changes
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT model_sha256, checkpoint, symbols, settings, validation FROM live_strategies"
        ).fetchall()
    assert len(rows) == 1
    sha, data, symbols, settings, validation = rows[0]
    newest = checkpoints.list_checkpoints(session.folder)[-1]
    assert bytes(data) == newest.read_bytes()
    assert sha == hashlib.sha256(newest.read_bytes()).hexdigest()
    assert (
        sha == {m.model_sha256 for m in session.produced if isinstance(m, wire.SignalMessage)}.pop()
    )
    assert symbols == [SYMBOL]
    assert settings == live_settings(session.config)
    assert settings["risk"]["kelly_prior"] == RISK.kelly_prior
    assert settings["execution"]["market"] == "margin"
    state = checkpoints.load(newest)
    assert state.validation is not None
    assert validation["gate"]["passed"] == state.validation.gate.passed
    assert validation["gate"]["reason"] == state.validation.gate.reason


def test_a_recorded_period_replays_identically(dsn: str, session: Session) -> None:
    result = replay_audit(dsn, session.t0, session.t1)
    assert result.identical, result.differences[:5]
    (audit,) = result.symbols
    assert audit.replay_from == session.candles[0].ts  # from the first recorded candle
    assert audit.candles == LAST + 1
    bars = LAST - FIRST + 1
    assert audit.compared["order"] == audit.compared["account"] == audit.compared["signal"] == bars
    assert audit.compared["audit"] == audit.compared["risk_state"] == bars
    assert audit.compared["execution"] > 0  # the period has fills to compare
    assert audit.compared["event"] > 0
    done = _audit(dsn, session)
    assert done.exit_code == 0, done.output
    assert "0 differences" in done.stdout
    assert "replay-audit: identical" in done.stderr
    # --symbol, and a time with an offset that means the same instant
    done = _audit(dsn, session, "--symbol", SYMBOL)
    assert done.exit_code == 0, done.output


def test_a_tampered_verdict_and_equity_are_exactly_the_differences(
    dsn: str, session: Session
) -> None:
    orders = [m for m in session.produced if isinstance(m, wire.OrderMessage)
              and session.t0 <= m.ts <= session.t1]  # fmt: skip
    order = next(m for m in orders if m.decided.decision.verdict != "zero_kelly")
    account = [m for m in session.produced if isinstance(m, wire.AccountMessage)][FIRST + 7]
    _execute(dsn, "UPDATE live_orders SET verdict = 'zero_kelly' WHERE msg_key = %s",
             (wire.idempotency_key(order),))  # fmt: skip
    _execute(dsn, "UPDATE live_accounts SET equity = equity + 0.01 WHERE msg_key = %s",
             (wire.idempotency_key(account),))  # fmt: skip
    result = replay_audit(dsn, session.t0, session.t1)
    found = sorted((d.kind, d.ts, d.field, d.recorded, d.reproduced) for d in result.differences)
    assert found == sorted([
        ("order", order.ts, "verdict", "zero_kelly", order.decided.decision.verdict),
        ("account", account.ts, "equity", account.snapshot.equity + 0.01,
         account.snapshot.equity),
    ])  # fmt: skip
    done = _audit(dsn, session)
    assert done.exit_code == 1, done.output
    assert "2 differences" in done.stdout
    assert "verdict" in done.stdout
    assert "equity" in done.stdout
    # Outside the period the tampered rows are not compared.
    done = _audit(dsn, session, t0=account.ts + 60 * 10**9, t1=session.t1)
    assert (done.exit_code, order.ts > account.ts) in ((0, False), (1, True)), done.output


def test_a_tampered_risk_state_is_reported(dsn: str, session: Session) -> None:
    """A risk state's column (halted) and the drawdown in another's bytes: exactly those two."""
    states = [m for m in session.produced if isinstance(m, wire.RiskStateMessage)
              and session.t0 <= m.ts <= session.t1]  # fmt: skip
    assert len(states) == LAST - FIRST + 1
    flipped, forged = states[5], states[40]
    _execute(dsn, "UPDATE live_risk_state SET halted = NOT halted WHERE msg_key = %s",
             (wire.idempotency_key(flipped),))  # fmt: skip
    drawdown = forged.drawdown + 0.25
    _execute(dsn, "UPDATE live_risk_state SET payload = %s WHERE msg_key = %s",
             (wire.encode(msgspec.structs.replace(forged, drawdown=drawdown)),
              wire.idempotency_key(forged)))  # fmt: skip
    result = replay_audit(dsn, session.t0, session.t1)
    found = sorted((d.kind, d.ts, d.field, d.recorded, d.reproduced) for d in result.differences)
    assert found == sorted([
        ("risk_state", flipped.ts, "halted", not flipped.halted, flipped.halted),
        ("risk_state", forged.ts, "payload.drawdown", drawdown, forged.drawdown),
    ])  # fmt: skip
    done = _audit(dsn, session)
    assert done.exit_code == 1, done.output
    assert "2 differences" in done.stdout
    assert "risk_state" in done.stdout


def test_a_tampered_message_is_found_in_its_bytes(dsn: str, session: Session) -> None:
    """The payload (the exact message sent) is compared too, field by field."""
    signal = next(m for m in session.produced if isinstance(m, wire.SignalMessage)
                  and m.ts >= session.t0 and m.signal is not None)  # fmt: skip
    forged = wire.SignalMessage(**{**{f: getattr(signal, f) for f in signal.__struct_fields__},
                                   "signal": -signal.signal})  # fmt: skip
    _execute(dsn, "UPDATE live_signals SET payload = %s WHERE msg_key = %s",
             (wire.encode(forged), wire.idempotency_key(signal)))  # fmt: skip
    (difference,) = replay_audit(dsn, session.t0, session.t1).differences
    assert (difference.kind, difference.ts, difference.field) == ("signal", signal.ts,
                                                                 "payload.signal")  # fmt: skip
    assert (difference.recorded, difference.reproduced) == (-signal.signal, signal.signal)


def test_a_missing_row_is_a_difference(dsn: str, session: Session) -> None:
    event = next(m for m in session.produced if isinstance(m, wire.EventMessage)
                 and session.t0 <= m.ts <= session.t1)  # fmt: skip
    _execute(dsn, "DELETE FROM live_events WHERE msg_key = %s", (wire.idempotency_key(event),))
    (difference,) = replay_audit(dsn, session.t0, session.t1).differences
    assert (difference.kind, difference.field, difference.recorded, difference.reproduced) == (
        "event", "row", "absent", "present")  # fmt: skip


def _one_line_error(done: Result, code: int, text: str) -> None:
    assert done.exit_code == code, done.output
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert text in lines[0], lines[0]


def test_user_errors_are_one_line(dsn: str, session: Session) -> None:
    minute = 60 * 10**9
    before = session.candles[0].ts - 100 * minute
    _one_line_error(_audit(dsn, session, t0=before, t1=before + minute), 2, "no such period")
    _one_line_error(_audit(dsn, session, t0=session.t1, t1=session.t0), 2, "the period is empty")
    _one_line_error(_audit(dsn, session, "--symbol", "ETH/USDT"), 2,
                    "ETH/USDT: no recorded candles")  # fmt: skip
    done = CliRunner().invoke(main, ["replay-audit", "--db", dsn, "--from", "yesterday",
                                     "--to", "2023-03-01"])  # fmt: skip
    _one_line_error(done, 2, "--from: not an ISO-8601 time: 'yesterday'")
    # Several checkpoints in the replayed period: both named.
    other = "ab" * 32
    signal = next(m for m in session.produced if isinstance(m, wire.SignalMessage))
    _execute(dsn, "UPDATE live_signals SET model_sha256 = %s WHERE msg_key = %s",
             (other, wire.idempotency_key(signal)))  # fmt: skip
    done = _audit(dsn, session)
    _one_line_error(done, 2, "several checkpoints")
    assert other in done.stderr
    assert session.strategy.model_sha256 in done.stderr
    _execute(dsn, "UPDATE live_signals SET model_sha256 = %s WHERE msg_key = %s",
             (session.strategy.model_sha256, wire.idempotency_key(signal)))  # fmt: skip
    # The checkpoint missing from the records.
    _execute(dsn, "DELETE FROM live_strategies")
    _one_line_error(_audit(dsn, session), 2,
                    f"checkpoint {session.strategy.model_sha256} of the recorded signals is "
                    "missing from the records")  # fmt: skip


def test_an_empty_database_and_an_unreachable_one(postgres_server: str, session: Session) -> None:
    empty = fresh_database(postgres_server, "colmena_audit_empty")
    _one_line_error(_audit(empty, session), 2, "no records of the live services")
    down = "postgresql://nobody@127.0.0.1:9/none?connect_timeout=2"
    _one_line_error(_audit(down, session), 3, "cannot connect to PostgreSQL")


def test_parse_time() -> None:
    assert parse_time("2023-03-01") == 1_677_628_800 * 10**9
    assert parse_time("2023-03-01T00:01Z") == parse_time("2023-03-01T02:01+02:00")
    assert parse_time("2023-03-01T00:01:00.5") == 1_677_628_860_500_000_000
    with pytest.raises(AuditError, match="--to: not an ISO-8601 time"):
        parse_time("3 pm", "--to")
    assert format_ns(parse_time("2023-03-01T12:34:56Z")) == "2023-03-01T12:34:56Z"


def test_a_candle_whose_columns_disagree_with_its_bytes(dsn: str, session: Session) -> None:
    """The replay takes a candle's message bytes; a column that says otherwise is reported."""
    candle = session.candles[FIRST + 3]
    _execute(dsn, "UPDATE live_candles SET close = close * 2 WHERE msg_key = %s",
             (wire.idempotency_key(candle),))  # fmt: skip
    result = replay_audit(dsn, session.t0, session.t1)
    (difference,) = result.differences
    assert (difference.kind, difference.ts, difference.field) == ("candle", candle.ts, "close")
    assert (difference.recorded, difference.reproduced) == (2 * candle.bar.close, candle.bar.close)
    assert result.symbols[0].compared["candle"] == LAST - FIRST + 1


def test_a_halt_of_the_accounts_kill_switch_is_replayed_where_it_happened(
    postgres_server: str, session: Session
) -> None:
    """The account's kill switch over several symbols halts a symbol between two bars (the
    services move in lock-step); the audit applies the recorded halt at the same point."""
    model = checkpoints.load_path(session.folder).to_model()
    risk = RiskHandler(SYMBOL, RISK, EXECUTION)
    handlers = (StrategyHandler(model, SYMBOL, session.strategy.model_sha256), risk,
                ExecutionHandler(SYMBOL, EXECUTION))  # fmt: skip
    halt_at = FIRST + 50
    produced: list[wire.WireMessage] = []
    for i, candle in enumerate(session.candles):
        if i == halt_at:  # what AccountGuard does when the total trips at the bar before
            risk.halt(candle.ts, account_drawdown=0.21)
        produced.extend(route(handlers, [candle]))
    events = [m for m in produced if isinstance(m, wire.EventMessage)
              and m.event.code_name == "account_kill_switch"]  # fmt: skip
    assert [m.ts for m in events] == [session.candles[halt_at].ts]
    url = fresh_database(postgres_server, "colmena_audit_account_halt")

    async def run() -> None:
        recorder = await Recorder.connect(url)
        try:
            await recorder.record_strategies(session.config)
            messages = [*session.candles, *produced]
            await recorder.record(
                (m, wire.idempotency_key(m), i + 1, wire.encode(m)) for i, m in enumerate(messages)
            )
        finally:
            await recorder.close()

    asyncio.run(run())
    result = replay_audit(url, session.t0, session.t1)
    assert result.identical, result.differences[:5]
    # The halt changed the decisions: a replay without it would not be identical.
    halted = [m for m in produced if isinstance(m, wire.OrderMessage)
              and m.decided.decision.state == "HALTED"]  # fmt: skip
    assert len(halted) == len(session.candles) - halt_at


def test_recorded_control_actions_are_replayed_at_their_bars(
    postgres_server: str, session: Session
) -> None:
    """A session with a person's pause, halt and reset (colmena ctl) inside the audited period:
    the audit applies the recorded live_control rows at the same bars and finds it identical;
    without those rows every decision they changed is a difference."""
    model = checkpoints.load_path(session.folder).to_model()
    risk = RiskHandler(SYMBOL, RISK, EXECUTION)
    handlers = (StrategyHandler(model, SYMBOL, session.strategy.model_sha256), risk,
                ExecutionHandler(SYMBOL, EXECUTION))  # fmt: skip
    schedule = {FIRST + 10: "pause", FIRST + 40: "halt", FIRST + 70: "reset",
                FIRST + 90: "resume"}  # fmt: skip
    produced: list[wire.WireMessage] = []
    for i, candle in enumerate(session.candles):
        if i in schedule:
            control = wire.ControlMessage(
                symbol=SYMBOL, ts=risk.next_open_ts(), action=schedule[i],  # type: ignore[arg-type]
                request_id=f"r{i}", operator="ops@desk", reason="audit test", requested_ns=i,
            )  # fmt: skip
            produced.append(control)
            risk.handle(control)
        produced += route(handlers, [candle])
    states = {m.ts: m.state for m in produced if isinstance(m, wire.RiskStateMessage)}
    assert states[session.candles[FIRST + 20].ts] == "PAUSED"
    assert states[session.candles[FIRST + 50].ts] == "HALTED"
    assert states[session.candles[FIRST + 100].ts] != "HALTED"
    url = fresh_database(postgres_server, "colmena_audit_controls")
    controlled = Session.__new__(Session)
    controlled.__dict__.update(session.__dict__, produced=produced)
    _record(url, controlled)
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT action, operator, reason, ts_ns FROM live_control ORDER BY ts_ns"
        ).fetchall()
    assert [r[0] for r in rows] == ["pause", "halt", "reset", "resume"]
    assert rows[0][1:3] == ("ops@desk", "audit test")
    assert rows[0][3] == session.candles[FIRST + 10].ts
    result = replay_audit(url, session.t0, session.t1)
    assert result.identical, result.differences[:5]
    _execute(url, "DELETE FROM live_control")
    assert len(replay_audit(url, session.t0, session.t1).differences) > 50
