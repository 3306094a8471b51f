"""The execution service at a real venue (colmena.live.venue), through a real ccxt client against
the local Binance-format server (tests/fake_exchange.py): each decision's order placed once, even
when the reply is lost and the handler is retried or restarted; partial fills and rejects in the
report; the account from the venue's balances; retries, the circuit breaker, the keys from the
environment; the same message kinds for the risk service as in paper mode."""

from __future__ import annotations

import collections
import re
from collections.abc import Iterator

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from colmena.execution import ExecutionSettings
from colmena.execution.trading_loop import Bar, Decision, Order, RiskDecision, RiskGate, RiskStage
from colmena.live import wire
from colmena.live.handlers import ExecutionHandler, RiskHandler, StrategyHandler, route
from colmena.live.venue import (
    VENUE_EVENT_CODES,
    VenueClient,
    VenueExecutionHandler,
    VenueSettings,
    client_order_id,
    make_venue_client,
)
from colmena.services.config import ConfigError, load_config

pytest.importorskip("ccxt")
pytest.importorskip("pybreaker")
pytest.importorskip("tenacity")

from checkpoint_forge import synthetic_candles
from fake_exchange import FakeBinance, kline
from helpers import every_agent_votes, make_state

SYMBOL = "BTC/USDT"
NS = 60 * 1_000_000_000
ENV = {"COLMENA_VENUE_API_KEY": "test-key", "COLMENA_VENUE_API_SECRET": "test-secret"}
EXECUTION = ExecutionSettings(initial_cash=10_000.0, fee_bps=0.0)
PRICE = 100.0


def fake_venue() -> Iterator[FakeBinance]:
    """The local venue: BTC/USDT at 100, 10,000 USDT and no BTC in the account."""
    server = FakeBinance([kline(0, PRICE, PRICE, PRICE, PRICE, 5.0)])
    server.balances = {"USDT": [10_000.0, 0.0], "BTC": [0.0, 0.0]}
    server.prices[SYMBOL] = PRICE
    server.hold_seconds = 5.0
    try:
        yield server
    finally:
        server.release.set()
        server.close()


@pytest.fixture
def fx() -> Iterator[FakeBinance]:
    yield from fake_venue()


def settings(fx: FakeBinance, **changes: object) -> VenueSettings:
    base = VenueSettings(
        mode="exchange", api_url=fx.url, timeout_seconds=0.5, max_order_age_seconds=None
    )
    return msgspec.structs.replace(base, **changes)


class Sleeps(list[float]):
    """A sleep that records the waits instead of waiting."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def venue(fx: FakeBinance, **changes: object) -> tuple[VenueClient, VenueSettings, Sleeps]:
    s = settings(fx, **changes)
    sleeps = Sleeps()
    ccxt_client = make_venue_client(s, environ=ENV)
    ccxt_client.enableRateLimit = False  # a local server: no need to space the requests
    client = VenueClient(
        ccxt_client,
        max_attempts=s.max_attempts,
        backoff_seconds=s.backoff_seconds,
        sleep=sleeps,
    )
    return client, s, sleeps


def handler(fx: FakeBinance, **changes: object) -> VenueExecutionHandler:
    client, s, _ = venue(fx, **changes)
    return VenueExecutionHandler(SYMBOL, EXECUTION, client, s)


def bar(i: int, price: float = PRICE) -> Bar:
    return Bar(i * NS, price, price, price, price, 10.0)


def candle(i: int) -> wire.CandleMessage:
    return wire.CandleMessage(symbol=SYMBOL, ts=i * NS, bar_seconds=60, bar=bar(i))


def gate(i: int) -> wire.GateMessage:
    return wire.GateMessage(symbol=SYMBOL, ts=i * NS, gate=RiskGate(ts=i * NS, state="ACTIVE"))


def order(i: int, quantity: float, *, reduce_only: bool = False) -> wire.OrderMessage:
    o = Order(i + 1, i, (i + 1) * NS, quantity, 0.5, "decision", reduce_only) if quantity else None
    decision = Decision(0.5, 0.5, "accepted", quantity != 0.0, 0.25, "ACTIVE")
    return wire.OrderMessage(symbol=SYMBOL, ts=i * NS, decided=RiskDecision(decision, o))


def bar_messages(i: int, quantity: float) -> list[wire.WireMessage]:
    """Bar ``i``'s inputs of the execution service: its candle, gate and order."""
    return [candle(i), gate(i), order(i, quantity)]


def feed(
    h: VenueExecutionHandler | ExecutionHandler, messages: list[wire.WireMessage]
) -> list[wire.WireMessage]:
    out: list[wire.WireMessage] = []
    for m in messages:
        out.extend(h.handle(m))
    return out


def reports(out: list[wire.WireMessage]) -> list[wire.ExecutionMessage]:
    return [m for m in out if isinstance(m, wire.ExecutionMessage)]


def accounts(out: list[wire.WireMessage]) -> list[wire.AccountMessage]:
    return [m for m in out if isinstance(m, wire.AccountMessage)]


# ---------------------------------------------------------------- client order ids


@given(st.text(min_size=0, max_size=300), st.from_regex(r"[A-Za-z0-9_-]{1,10}", fullmatch=True))
def test_client_order_ids_keep_binances_rules(key: str, prefix: str) -> None:
    cid = client_order_id(prefix, key)
    assert len(cid) <= 36
    assert re.fullmatch(r"[.A-Z:/a-z0-9_-]{1,36}", cid)
    assert cid == client_order_id(prefix, key)  # a function of the key only
    assert cid.startswith(prefix + "-")
    assert client_order_id(prefix, key + "x") != cid


def test_client_order_id_of_an_order_message_is_its_keys() -> None:
    message = order(3, 1.0)
    key = wire.idempotency_key(message)
    assert client_order_id("colmena", key) == client_order_id(
        "colmena", wire.idempotency_key(msgspec.structs.replace(message))
    )
    assert client_order_id("colmena", key) != client_order_id(
        "colmena", wire.idempotency_key(order(4, 1.0))
    )
    with pytest.raises(ValueError, match="prefix"):
        client_order_id("bad prefix!", key)


# ---------------------------------------------------------------- placed once


def test_orders_fill_and_the_account_comes_from_the_balances(fx: FakeBinance) -> None:
    fx.balances["BTC"] = [2.0, 0.0]  # 0.5 of them are not the sleeve's
    h = handler(fx, reserves={"BTC": 0.5})
    out = feed(h, bar_messages(0, -1.0) + bar_messages(1, 0.25) + [candle(2), gate(2)])
    first, second = reports(out)
    assert first.report.fill is not None
    assert first.report.fill.quantity == pytest.approx(-1.0)
    assert first.report.fill.price == pytest.approx(PRICE)
    assert second.report.fill is not None
    assert second.report.fill.quantity == pytest.approx(0.25)
    assert [e.type for e in first.report.events] == ["trade_executed"]
    snapshots = [a.snapshot for a in accounts(out)]
    # position: the venue's BTC less the reserve; cash: the sleeve's own flows
    assert [s.position for s in snapshots] == pytest.approx([1.5, 0.5, 0.75])
    assert snapshots[-1].cash == pytest.approx(10_000.0 + 100.0 - 25.0)
    assert snapshots[-1].ts == 3 * NS
    assert snapshots[-1].mark == PRICE
    assert snapshots[-1].equity == pytest.approx(snapshots[-1].cash + 0.75 * PRICE)
    assert fx.balance("BTC") == pytest.approx(1.25)
    assert len(fx.placed) == 2
    assert h.records.position == pytest.approx(-0.75)  # the fills this handler made


@pytest.mark.parametrize("mode", ["drop", "delay"])
def test_a_lost_reply_places_the_order_once_also_after_a_restart(
    fx: FakeBinance, mode: str
) -> None:
    fx.lose_next, fx.lose_mode = 1, mode  # type: ignore[assignment]
    messages = [*bar_messages(0, 1.5), candle(1), gate(1)]
    h = handler(fx)
    out = feed(h, messages)
    if mode == "delay":
        fx.release.set()
    assert len(fx.placed) == 1
    assert fx.order_posts == 1
    (report,) = reports(out)
    assert report.report.fill is not None
    assert report.report.fill.quantity == pytest.approx(1.5)
    # The same messages again (a redelivery to the same handler): nothing happens.
    assert feed(h, messages) == []
    # A restart: a fresh handler replays the same inputs, finds the order, places nothing.
    again = feed(handler(fx), messages)
    assert fx.order_posts == 1
    assert len(fx.placed) == 1
    assert reports(again)[0].report == report.report
    assert fx.balance("BTC") == pytest.approx(1.5)


def test_a_duplicate_refusal_is_taken_as_placed(fx: FakeBinance) -> None:
    messages = [*bar_messages(0, 1.0), candle(1), gate(1)]
    feed(handler(fx), messages)
    assert fx.order_posts == 1
    fx.hide_next_lookups = 1  # the restart's lookup does not see it: it tries to place
    out = feed(handler(fx), messages)
    assert fx.order_posts == 2
    assert len(fx.placed) == 1
    (report,) = reports(out)
    assert report.report.fill is not None
    assert report.report.fill.quantity == pytest.approx(1.0)


def test_transient_failures_are_retried_with_jittered_backoff(fx: FakeBinance) -> None:
    client, s, sleeps = venue(fx, backoff_seconds=0.5, max_attempts=5)
    h = VenueExecutionHandler(SYMBOL, EXECUTION, client, s)
    fx.fail_orders_next = 2  # the first lookup and its first retry answer 503
    out = feed(h, [*bar_messages(0, 1.0), candle(1), gate(1)])
    assert len(fx.placed) == 1
    assert reports(out)[0].report.fill is not None
    assert len(sleeps) == 2
    # tenacity's full jitter: uniform in [0, min(30, 0.5 * 2**n)]
    assert 0.0 <= sleeps[0] <= 0.5
    assert 0.0 <= sleeps[1] <= 1.0


def test_the_circuit_breaker_opens_after_three_failures(fx: FakeBinance) -> None:
    client, s, _ = venue(fx, max_attempts=10)
    h = VenueExecutionHandler(SYMBOL, EXECUTION, client, s)
    before = len(fx.signed_requests)
    fx.fail_orders_next = 1_000
    out = feed(h, bar_messages(0, 1.0))
    assert client.breaker.current_state == "open"
    assert len(fx.signed_requests) - before == 3  # then it failed fast, the venue not called
    # The order's fate is unknown: reported with nothing attempted and the reason.
    fx.fail_orders_next = 0
    client.breaker.close()
    fx.balances["BTC"] = [0.0, 0.0]
    out += feed(h, [candle(1), gate(1)])
    (report,) = reports(out)
    assert report.report.attempted == 0.0
    assert report.report.fill is None
    assert [e.code_name for e in report.report.events] == ["venue_unreachable"]
    assert not fx.placed


def test_a_venue_down_for_the_placement_is_asked_again_at_the_report(fx: FakeBinance) -> None:
    client, s, _ = venue(fx, max_attempts=1)
    h = VenueExecutionHandler(SYMBOL, EXECUTION, client, s)
    feed(h, [candle(0), gate(0)])
    fx.lose_next = 1  # placed, the reply lost, and no second try
    feed(h, [order(0, 1.0)])
    assert len(h.records.unresolved) == 1
    assert len(fx.placed) == 1
    out = feed(h, [candle(1), gate(1)])
    (report,) = reports(out)
    assert report.report.fill is not None
    assert report.report.fill.quantity == pytest.approx(1.0)
    assert not h.records.unresolved


# ---------------------------------------------------------------- partial fills and rejects


@pytest.mark.parametrize("leave_open", [False, True])
def test_a_partial_fill_reports_what_filled_and_the_rest_goes_on(
    fx: FakeBinance, leave_open: bool
) -> None:
    fx.fill_ratio, fx.leave_open = 0.4, leave_open
    h = handler(fx)
    out = feed(h, [*bar_messages(0, 2.0), candle(1), gate(1)])
    (report,) = reports(out)
    r = report.report
    assert r.attempted == pytest.approx(2.0)
    assert r.fill is not None
    assert r.fill.quantity == pytest.approx(0.8)
    assert [(e.type, e.code_name) for e in r.events] == [
        ("trade_executed", ""),
        ("alert", "partial_fill"),
    ]
    assert r.events[1].value == pytest.approx(1.2)
    assert not fx.open_orders()  # an order left open was cancelled at the report
    assert fx.balances["USDT"] == pytest.approx([10_000.0 - 80.0, 0.0])
    assert h.records.open_orders == 0
    # The risk stage takes it: the unfilled 1.2 is its remainder.
    stage = RiskStage(EXECUTION, None)
    stage.open(bar(0))
    stage.close(bar(0), accounts(out)[0].snapshot, "decide", 1.0)
    stage.open(bar(1))
    stage.on_execution(msgspec.structs.replace(r, order_id=stage.snapshot().outstanding.id))  # type: ignore[union-attr]
    assert stage.snapshot().remainder == pytest.approx(1.2)


@pytest.mark.parametrize(
    ("setup", "quantity"),
    [
        (lambda fx: None, 500.0),  # 50,000 USDT asked of 10,000: insufficient balance
        (lambda fx: setattr(fx, "min_notional", 10.0), 0.05),  # 5 USDT: under the minimum
    ],
    ids=["insufficient_balance", "min_notional"],
)
def test_a_rejected_order_reports_nothing_attempted_and_why(
    fx: FakeBinance, setup: object, quantity: float
) -> None:
    setup(fx)  # type: ignore[operator]
    h = handler(fx)
    out = feed(h, [*bar_messages(0, quantity), candle(1), gate(1)])
    (report,) = reports(out)
    r = report.report
    assert r.attempted == 0.0
    assert r.fill is None
    assert r.error is None
    (event,) = r.events
    assert (event.type, event.code_name, event.code) == (
        "error",
        "venue_rejected",
        VENUE_EVENT_CODES["venue_rejected"],
    )
    assert not fx.placed
    assert fx.order_posts == 1
    assert fx.balances["USDT"] == [10_000.0, 0.0]


def test_sells_are_clipped_at_flat_and_reduce_only_orders_never_add(fx: FakeBinance) -> None:
    fx.balances["BTC"] = [1.0, 0.0]
    h = handler(fx)
    out = feed(h, [*bar_messages(0, -3.0), candle(1), gate(1)])
    assert reports(out)[0].report.attempted == pytest.approx(-1.0)  # spot: never below flat
    out = feed(h, [order(1, 1.0, reduce_only=True), candle(2), gate(2)])
    r = reports(out)[0].report
    assert r.attempted == 0.0
    assert r.fill is None
    assert r.events == ()
    assert len(fx.placed) == 1


def test_an_order_too_old_is_not_placed(fx: FakeBinance) -> None:
    client, s, _ = venue(fx, max_order_age_seconds=120.0)
    now = [0]
    h = VenueExecutionHandler(SYMBOL, EXECUTION, client, s, clock=lambda: now[0])
    feed(h, [candle(0), gate(0)])
    now[0] = NS + 121 * 1_000_000_000  # decided at 1 min, now 121 s later
    out = feed(h, [order(0, 1.0), candle(1), gate(1)])
    assert [e.code_name for e in reports(out)[0].report.events] == ["order_expired"]
    assert not fx.placed


# ---------------------------------------------------------------- settings and keys


def test_keys_come_from_the_environment_only(fx: FakeBinance) -> None:
    s = settings(fx)
    with pytest.raises(ValueError, match=r"\$COLMENA_VENUE_API_SECRET") as info:
        make_venue_client(s, environ={"COLMENA_VENUE_API_KEY": "k-secret-value"})
    assert "k-secret-value" not in str(info.value)
    with pytest.raises(ValueError, match="environment variable"):
        VenueSettings(api_key_env="my key")
    with pytest.raises(ValueError, match="credentials"):
        VenueSettings(api_url="https://user:pw@example.com")


def test_the_venue_section_of_the_configuration(tmp_path: object) -> None:
    from pathlib import Path

    path = Path(str(tmp_path)) / "live.toml"
    path.write_text(
        '[venue]\nmode = "exchange"\nsandbox = true\nreserves = { BTC = 0.5 }\n'
        "reconcile_seconds = 30.0\n"
    )
    config = load_config(path)
    assert config.venue.mode == "exchange"
    assert config.venue.reserves == {"BTC": 0.5}
    path.write_text('[venue]\nmode = "real"\n')
    with pytest.raises(ConfigError, match=r"venue\.mode"):
        load_config(path)
    path.write_text("[venue]\nreserves = { BTC = -1.0 }\n")
    with pytest.raises(ConfigError, match=r"venue\.reserves"):
        load_config(path)


# ---------------------------------------------------------------- through the handlers


def test_the_risk_service_gets_the_same_message_kinds_as_in_paper_mode(fx: FakeBinance) -> None:
    candles = synthetic_candles(600, seed=3)
    fx.prices[SYMBOL] = float(candles.close[-1])
    model = every_agent_votes(make_state(finished=True, seed=3)).to_model()
    from test_live_replay import RISK

    rows = zip(*(c.tolist() for c in (candles.ts, candles.open, candles.high, candles.low,
                                      candles.close, candles.volume)), strict=True)  # fmt: skip
    messages = [
        wire.CandleMessage(symbol=SYMBOL, ts=b.ts, bar_seconds=60, bar=b)
        for b in (Bar(*r) for r in rows)
    ]

    def run(execution: ExecutionHandler | VenueExecutionHandler) -> list[wire.WireMessage]:
        risk = RiskHandler(SYMBOL, RISK, EXECUTION)
        return route([StrategyHandler(model, SYMBOL, "ab" * 32), risk, execution], messages)

    paper = run(ExecutionHandler(SYMBOL, EXECUTION))
    real = run(handler(fx))
    kinds_paper = collections.Counter(type(m).__name__ for m in paper)
    kinds_real = collections.Counter(type(m).__name__ for m in real)
    orders = [m for m in real if isinstance(m, wire.OrderMessage) and m.decided.order]
    assert len(orders) >= 2, "the strategy trades"
    assert len(fx.placed) == len({wire.idempotency_key(o) for o in orders})
    fills = [m.report.fill for m in real if isinstance(m, wire.ExecutionMessage)]
    held = sum(f.quantity for f in fills if f is not None)
    assert fx.balance("BTC") == pytest.approx(held)
    assert [m for m in real if isinstance(m, wire.AccountMessage)][-1].snapshot.position == (
        pytest.approx(held)
    )
    assert set(kinds_real) == set(kinds_paper)
    for kind in ("GateMessage", "AccountMessage", "OrderMessage", "SignalMessage",
                 "DecisionAudit", "RiskStateMessage"):  # fmt: skip
        assert kinds_real[kind] == kinds_paper[kind] == len(messages), kind
    # Every order got its report, and every report answers an order.
    assert kinds_real["ExecutionMessage"] == len(orders) - (orders[-1].ts == messages[-1].ts)


# ---------------------------------------------------------------- the records' accounting


class _Markets:
    """A venue client that only knows the market (the records need no request)."""

    name = "stub"

    def market(self, symbol: str) -> dict[str, object]:
        return {"spot": True, "base": "BTC", "quote": "USDT"}


@given(
    side=st.sampled_from(["buy", "sell"]),
    steps=st.lists(st.floats(0.0, 5.0), min_size=1, max_size=8),
    price=st.floats(1.0, 1e5),
    fee_base=st.booleans(),
    repeat=st.integers(1, 3),
)
def test_the_records_count_each_fill_once_however_often_it_is_seen(
    side: str, steps: list[float], price: float, fee_base: bool, repeat: int
) -> None:
    """Whatever the venue reports of one order, in any number of growing observations each
    seen ``repeat`` times, the records hold its final fill once: position and cash as one
    fill of the final quantity (fees in the quote or the base asset)."""
    h = VenueExecutionHandler(SYMBOL, EXECUTION, _Markets(), VenueSettings())  # type: ignore[arg-type]
    filled = 0.0
    for step in steps:
        filled += step
        fee = 1e-3 * (filled if fee_base else filled * price)
        seen = {
            "side": side, "filled": filled, "cost": filled * price, "status": "open",
            "fees": [{"cost": fee, "currency": "BTC" if fee_base else "USDT"}],
        }  # fmt: skip
        for _ in range(repeat):
            h.learn("cid", seen)
    sign = 1.0 if side == "buy" else -1.0
    fee = 1e-3 * (filled if fee_base else filled * price)
    expected_position = sign * filled - (fee if fee_base else 0.0)
    expected_cash = EXECUTION.initial_cash - sign * filled * price - (0.0 if fee_base else fee)
    assert h.records.position == pytest.approx(expected_position, rel=1e-9, abs=1e-9)
    assert h.records.cash == pytest.approx(expected_cash, rel=1e-9, abs=1e-6)
    assert h.records.open_orders == 1


def test_the_breaker_has_the_design_documents_numbers(fx: FakeBinance) -> None:
    client, _, _ = venue(fx)
    assert client.breaker.fail_max == 3
    assert client.breaker.reset_timeout == 2.0


def test_a_replay_of_old_bars_asks_only_for_the_orders(fx: FakeBinance) -> None:
    """A restart long after the bars: their accounts are the records' (no balance request),
    each order is looked up once and none is placed again."""
    messages = [*bar_messages(0, 1.0), *bar_messages(1, 0.5), *bar_messages(2, 0.0), candle(3)]
    messages.append(gate(3))
    feed(handler(fx), messages)  # the first life (no age limit)
    client, s, _ = venue(fx, max_order_age_seconds=300.0)
    late = VenueExecutionHandler(SYMBOL, EXECUTION, client, s, clock=lambda: 10**6 * NS)
    before, posts = client.requests, fx.order_posts
    out = feed(late, messages)
    assert client.requests - before == 2  # one lookup per order, no balance
    assert fx.order_posts == posts
    assert late.records.position == pytest.approx(1.5) == fx.balance("BTC")
    assert [a.snapshot.position for a in accounts(out)] == pytest.approx([0.0, 1.0, 1.5, 1.5])
