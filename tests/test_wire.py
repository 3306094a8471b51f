"""The wire contract (colmena.live.wire, proto/asyncapi.json): messages produced by the real
trading-loop halves round-trip through MessagePack, validate against the generated JSON Schemas
(checked by the jsonschema library, an independent implementation), and the checked-in contract
equals what the code generates."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from colmena.execution import ExecutionSettings
from colmena.execution.trading_loop import Bar, ExecutionStage, RiskEvent, RiskStage
from colmena.live import contract, wire
from colmena.risk import RiskConfig

REPO = Path(__file__).resolve().parents[1]
CONTRACT_FILE = REPO / "proto" / "asyncapi.json"
SHA = "ab" * 32


def _bars(n: int, seed: int) -> list[Bar]:
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, n)))
    bars = []
    previous = 100.0
    for i, c in enumerate(close):
        high = max(previous, float(c)) * 1.002
        low = min(previous, float(c)) * 0.998
        bars.append(Bar(60_000_000_000 * (27_000_000 + i), previous, high, low, float(c), 10.0))
        previous = float(c)
    return bars


def _session(n: int = 120, seed: int = 7) -> list[wire.WireMessage]:
    """Every message one symbol's services exchange over ``n`` bars, from the real halves."""
    execution_settings = ExecutionSettings(market="margin", max_participation=0.5)
    risk = RiskStage(execution_settings, RiskConfig(), bar_seconds=60.0)
    execution = ExecutionStage(execution_settings, bar_seconds=60.0)
    rng = np.random.default_rng(seed)
    out: list[wire.WireMessage] = []
    sym = "BTC/USDT"
    for bar in _bars(n, seed):
        events: list[RiskEvent] = []
        out.append(wire.CandleMessage(symbol=sym, ts=bar.ts, bar_seconds=60, bar=bar))
        gate = risk.open(bar)
        out.append(wire.GateMessage(symbol=sym, ts=bar.ts, gate=gate))
        events += gate.events
        report = execution.open(bar, gate.state)
        if report is not None:
            risk.on_execution(report)
            out.append(wire.ExecutionMessage(symbol=sym, ts=bar.ts, report=report))
            events += report.events
        account = execution.close(bar)
        out.append(wire.AccountMessage(symbol=sym, ts=bar.ts, snapshot=account))
        signal = float(np.clip(rng.normal(0.0, 0.6), -1.0, 1.0))
        out.append(
            wire.SignalMessage(
                symbol=sym,
                ts=bar.ts,
                action="decide",
                signal=signal,
                valid=True,
                regime=1,
                model_sha256=SHA,
            )
        )
        decided = risk.close(bar, account, "decide", signal)
        out.append(wire.OrderMessage(symbol=sym, ts=bar.ts, decided=decided))
        out.append(
            wire.DecisionAudit(
                symbol=sym,
                ts=bar.ts,
                model_sha256=SHA,
                candle=bar,
                agent_signals=(signal, -signal),
                regime=1,
                action="decide",
                signal=signal,
                decision=decided.decision,
                order=decided.order,
            )
        )
        manager = risk.snapshot().risk_manager
        assert manager is not None
        out.append(wire.risk_state_message(sym, bar.ts, manager, decided.decision))
        events += decided.events
        for seq, event in enumerate(events):
            out.append(wire.EventMessage(symbol=sym, ts=bar.ts, seq=seq, event=event))
        if decided.order is not None:
            execution.submit(decided.order)
    last = out[-1].ts
    out.append(
        wire.ControlMessage(
            symbol=sym, ts=last + 60_000_000_000, action="reset", request_id="r1",
            operator="ops@desk", reason="drawdown understood", requested_ns=last + 61_000_000_000,
            account=True,
        )
    )  # fmt: skip
    out.append(
        wire.ReconciliationMessage(
            symbol=sym, ts=last, checked_ns=last + 90_000_000_000, venue_position=0.5,
            recorded_position=0.0, venue_open_orders=1, recorded_open_orders=0, difference=True,
            detail="position 0.5 at the venue, 0 in the records",
        )
    )  # fmt: skip
    return out


@pytest.fixture(scope="module")
def session() -> list[wire.WireMessage]:
    return _session()


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return contract.contract()


def _validator(document: dict[str, Any], name: str) -> Draft202012Validator:
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$ref": f"#/components/schemas/{name}",
        "components": {"schemas": document["components"]["schemas"]},
    }
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def test_session_covers_every_kind(session: list[wire.WireMessage]) -> None:
    kinds = {msg.__struct_config__.tag for msg in session}
    assert kinds == set(wire.MESSAGE_TYPES)


def test_round_trip_and_schema(session: list[wire.WireMessage], document: dict[str, Any]) -> None:
    validators = {k: _validator(document, t.__name__) for k, t in wire.MESSAGE_TYPES.items()}
    for msg in session:
        kind = msg.__struct_config__.tag
        assert isinstance(kind, str)
        data = wire.encode(msg)
        assert wire.decode(kind, data) == msg  # type: ignore[arg-type]
        assert wire.decode_any(data) == msg
        # The MessagePack map is the JSON document the schema describes.
        payload = msgspec.msgpack.decode(data)
        assert payload["kind"] == kind
        validators[kind].validate(payload)  # type: ignore[index]


def test_schema_rejects_what_the_decoder_rejects(
    session: list[wire.WireMessage], document: dict[str, Any]
) -> None:
    order = next(m for m in session if isinstance(m, wire.OrderMessage))
    payload = msgspec.msgpack.decode(wire.encode(order))
    del payload["decided"]["decision"]["verdict"]
    assert not _validator(document, "OrderMessage").is_valid(payload)
    with pytest.raises(wire.WireError, match=r"verdict"):
        wire.decode("order", msgspec.msgpack.encode(payload))


def test_unknown_fields_of_a_newer_producer_are_ignored(session: list[wire.WireMessage]) -> None:
    candle = session[0]
    payload = msgspec.msgpack.decode(wire.encode(candle))
    payload["added_in_a_later_release"] = [1, 2, 3]
    payload["bar"]["trades"] = 17
    assert wire.decode("candle", msgspec.msgpack.encode(payload)) == candle


def test_wrong_kind_and_garbage_are_wire_errors(session: list[wire.WireMessage]) -> None:
    data = wire.encode(session[0])
    with pytest.raises(wire.WireError, match=r"bad signal message"):
        wire.decode("signal", data)
    with pytest.raises(wire.WireError, match=r"unknown message kind 'fills'"):
        wire.decode("fills", data)  # type: ignore[arg-type]
    with pytest.raises(wire.WireError):
        wire.decode_any(b"\xc1garbage")
    payload = msgspec.msgpack.decode(data)
    payload["kind"] = "quote"
    with pytest.raises(wire.WireError):
        wire.decode_any(msgspec.msgpack.encode(payload))


@pytest.mark.parametrize(
    "symbol", ["BTC.USDT", "BTC USDT", "*", ">", "", "-BTC", "B" * 65, "BTC/USDT\n", "ÉTH/USDT"]
)
def test_symbols_that_cannot_be_a_subject_token(
    session: list[wire.WireMessage], symbol: str
) -> None:
    with pytest.raises(wire.WireError, match=r"cannot be a subject token"):
        wire.subject("candle", symbol)
    candle = session[0]
    assert isinstance(candle, wire.CandleMessage)
    bad = msgspec.structs.replace(candle, symbol=symbol)
    with pytest.raises(wire.WireError):
        wire.encode(bad)
    with pytest.raises(wire.WireError):
        wire.decode("candle", msgspec.msgpack.encode(bad))


@pytest.mark.parametrize("symbol", ["BTC/USDT", "BTC/USDT:USDT", "BTC-PERP", "1INCH/USDT"])
def test_subjects(symbol: str) -> None:
    assert wire.subject("order", symbol) == f"colmena.v1.order.{symbol}"
    assert wire.subject_filter("order") == "colmena.v1.order.*"
    assert wire.subject_filter() == "colmena.v1.>"


def test_idempotency_keys_are_content_derived_and_unique(
    session: list[wire.WireMessage],
) -> None:
    keys = [wire.idempotency_key(m) for m in session]
    assert len(set(keys)) == len(keys)
    again = _session()  # the same session produced again: the same keys (a re-publish)
    assert [wire.idempotency_key(m) for m in again] == keys
    event = wire.EventMessage(
        symbol="ETH/USDT",
        ts=5,
        seq=2,
        event=RiskEvent(ts=5, type="alert", code=1, code_name="x", value=0.5),
    )
    assert wire.idempotency_key(event) == "v1.event.ETH/USDT.5.2"


@settings(max_examples=200, deadline=None)
@given(
    ts=st.integers(-(2**63), 2**63 - 1),
    signal=st.none() | st.floats(allow_nan=True, allow_infinity=True),
    regime=st.integers(-(2**63), 2**63 - 1),
    valid=st.booleans(),
    action=st.sampled_from(["hold", "decide", "gated_flat", "end_of_run"]),
)
def test_signal_round_trip_property(
    ts: int, signal: float | None, regime: int, valid: bool, action: Any
) -> None:
    msg = wire.SignalMessage(
        symbol="XRP/USDT",
        ts=ts,
        action=action,
        signal=signal,
        valid=valid,
        regime=regime,
        model_sha256=SHA,
    )
    back = wire.decode("signal", wire.encode(msg))
    assert isinstance(back, wire.SignalMessage)
    assert msgspec.structs.replace(back, signal=None) == msgspec.structs.replace(msg, signal=None)
    if signal is None:
        assert back.signal is None
    else:
        assert back.signal is not None
        assert np.array_equal(np.float64(back.signal), np.float64(signal), equal_nan=True)


def test_risk_state_subject_key_and_schema(
    session: list[wire.WireMessage], document: dict[str, Any]
) -> None:
    states = [m for m in session if isinstance(m, wire.RiskStateMessage)]
    orders = [m for m in session if isinstance(m, wire.OrderMessage)]
    assert [m.ts for m in states] == [m.ts for m in orders]  # one per close
    assert wire.subject("risk_state", "BTC/USDT") == "colmena.v1.risk_state.BTC/USDT"
    assert wire.subject_filter("risk_state") == "colmena.v1.risk_state.*"
    assert wire.idempotency_key(states[0]) == f"v1.risk_state.BTC/USDT.{states[0].ts}"
    assert document["channels"]["risk_state"]["address"] == "colmena.v1.risk_state.{symbol}"
    # The decision's values, and the session reaches a warm volatility and a Kelly window.
    for state, order in zip(states, orders, strict=True):
        assert (state.state, state.kelly_fraction) == (
            order.decided.decision.state,
            order.decided.decision.kelly,
        )
    assert states[-1].volatility_returns >= 30
    assert states[-1].bar_volatility > 0.0
    assert states[-1].kelly_round_trips > 0
    # A required field missing: the schema and the decoder both refuse it, naming it.
    payload = msgspec.msgpack.decode(wire.encode(states[-1]))
    del payload["halted"]
    assert not _validator(document, "RiskStateMessage").is_valid(payload)
    with pytest.raises(wire.WireError, match=r"halted"):
        wire.decode("risk_state", msgspec.msgpack.encode(payload))
    # A newer producer's field is ignored.
    payload = msgspec.msgpack.decode(wire.encode(states[-1]))
    payload["margin_ratio"] = 0.5
    assert wire.decode("risk_state", msgspec.msgpack.encode(payload)) == states[-1]
    # Units and meanings are documented in the schema the contract publishes.
    schema = document["components"]["schemas"]["RiskStateMessage"]
    assert "sqrt(ewma_variance)" in schema["description"]


_FLOATS = st.floats(allow_nan=True, allow_infinity=True)


@settings(max_examples=200, deadline=None)
@given(
    ts=st.integers(-(2**63), 2**63 - 1),
    state=st.sampled_from(["ACTIVE", "REDUCING", "PAUSED", "HALTED"]),
    values=st.lists(_FLOATS, min_size=9, max_size=9),
    counts=st.tuples(st.integers(0, 3), st.integers(0, 2**63 - 1), st.integers(0, 2**63 - 1)),
    paused_until=st.integers(0, 2**63 - 1),
    kelly=st.none() | _FLOATS,
)
def test_risk_state_round_trip_property(
    ts: int,
    state: Any,
    values: list[float],
    counts: tuple[int, int, int],
    paused_until: int,
    kelly: float | None,
) -> None:
    msg = wire.RiskStateMessage(
        symbol="BTC/USDT:USDT",
        ts=ts,
        state=state,
        halted=state == "HALTED",
        peak_equity=values[0],
        drawdown=values[1],
        high_equity=values[2],
        drawdown_from_high=values[3],
        ladder_level=counts[0],
        paused_until=paused_until,
        daily_pnl=values[4],
        day_start_equity=values[5],
        equity=values[6],
        bar_volatility=values[7],
        volatility_returns=counts[1],
        kelly_fraction=kelly,
        kelly_round_trips=counts[2],
    )
    back = wire.decode_any(wire.encode(msg))
    assert isinstance(back, wire.RiskStateMessage)
    # Every field keeps its value, floats their bits (NaN included).
    assert msgspec.msgpack.encode(back) == msgspec.msgpack.encode(msg)
    for name in msg.__struct_fields__:
        a, b = getattr(back, name), getattr(msg, name)
        if isinstance(b, float):
            assert np.array_equal(np.float64(a), np.float64(b), equal_nan=True), name
        else:
            assert a == b, name


def test_checked_in_contract_is_generated_from_the_code() -> None:
    assert CONTRACT_FILE.read_text(encoding="utf-8") == contract.contract_json(), (
        "proto/asyncapi.json is out of date: run python -m colmena.live.contract"
    )


def test_contract_refs_resolve_and_channels_match_subjects(document: dict[str, Any]) -> None:
    def refs(node: Any) -> list[str]:
        if isinstance(node, dict):
            found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
            return found + [r for v in node.values() for r in refs(v)]
        if isinstance(node, list):
            return [r for v in node for r in refs(v)]
        return []

    for ref in refs(document):
        node: Any = document
        for part in ref.removeprefix("#/").split("/"):
            node = node[part]
        assert isinstance(node, dict), ref
    for kind, channel in document["channels"].items():
        assert channel["address"] == wire.subject(kind, "SYMBOL").replace("SYMBOL", "{symbol}")
    assert set(document["channels"]) == set(wire.MESSAGE_TYPES)


def test_contract_cli_check_and_write(tmp_path: Path) -> None:
    target = tmp_path / "proto" / "asyncapi.json"
    assert contract.main(["--check", str(target)]) == 1  # missing
    assert contract.main([str(target)]) == 0
    assert contract.main(["--check", str(target)]) == 0
    text = target.read_text(encoding="utf-8")
    json.loads(text)
    target.write_text(text.replace('"3.0.0"', '"2.6.0"'), encoding="utf-8")
    assert contract.main(["--check", str(target)]) == 1
