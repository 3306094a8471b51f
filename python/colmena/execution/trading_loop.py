"""The trading loop, stepped one bar at a time, whole or in the two halves the live services run.

The compiled core's trading loop (``colmena._core.TradingLoop``) is the one implementation of the
path from a decision signal to fills: :func:`colmena._core.run_backtest` and
:func:`colmena.execution.simulate_targets` loop over it, and this module steps it from Python,
bar by bar, as a live service does. Each call returns frozen :class:`msgspec.Struct` values, so a
result can be recorded or sent over a message bus as it is (``msgspec.msgpack.encode``). Decoding
ignores fields it does not know, so a consumer keeps reading the messages of a newer producer (the
compatibility rule of the wire contract, :mod:`colmena.live.wire`).

One bar ``t`` (its open time ``ts``; decisions at the close of bar ``t`` fill no earlier than the
open of bar ``t + 1``, SPEC "Honesty rules"):

1. open: the risk state at the open (a gap in the data longer than ``stale_after_seconds`` turns
   ACTIVE into REDUCING); the order decided at the previous close fills at this bar's open, at most
   ``max_participation`` of its volume, reduce-only while PAUSED, REDUCING or HALTED, never below a
   flat position on a spot market;
2. close: the borrow cost of a short position, the mark at the close; the risk manager observes
   equity, drawdowns and volatility (kill switch, circuit-breaker ladder, daily-loss pause);
3. decision for bar ``t + 1``: ``"decide"`` sizes the signal (quarter Kelly from the signal's own
   unit-exposure round trips, leverage and VaR caps); ``"hold"`` keeps the position and resubmits
   the unfilled remainder of the last order; ``"gated_flat"`` and ``"end_of_run"`` target flat; a
   halt or a drawdown stop flattens whatever the action.

The halves (the live risk service and the live execution service of SPEC "The live system"):

- :class:`RiskStage` holds the risk manager, the shadow book of the Kelly estimate and the
  remainder; it reads the account only from the execution's messages;
- :class:`ExecutionStage` holds the paper account and the pending order.

Per bar they exchange, in this order (exactly what :meth:`TradingLoop.step` does in one call)::

    gate    = risk.open(bar)                   # RiskGate: the risk state at the open
    report  = execution.open(bar, gate.state)  # ExecutionReport | None (an order was pending)
    risk.on_execution(report)                  # when there is a report
    account = execution.close(bar)             # AccountSnapshot
    decided = risk.close(bar, account, action, signal)   # RiskDecision, with an Order or None
    execution.submit(decided.order)            # when there is an order

Restarts (SPEC "The live system": risk state in a key-value bucket, a HALT survives the restart of
everything): :meth:`RiskStage.snapshot` and :meth:`ExecutionStage.snapshot` return frozen Structs
(:class:`RiskStageSnapshot`, :class:`ExecutionStageSnapshot`) with everything the stage's future
behaviour depends on (trading state, peak equities, the kill switch's window, pause deadlines,
HALT, the Kelly window, the shadow book, the outstanding or pending order, the account) and the
settings it runs under. A service stores one after each message it handles (MessagePack, via
``msgspec.msgpack.encode``); after a restart, ``restore`` on a stage built with the same settings
continues bit for bit where the old one stopped, without replaying the history, also between a
bar's open and its close. ``restore`` refuses (ValueError naming the field, the stage unchanged) a
snapshot of another layout version, of other settings, or with a state no stage could reach.
:meth:`RiskStage.halt` is the operator's HALT.

Units everywhere: timestamps ``ts`` in ns since the epoch (UTC); prices in the quote currency per
base unit; quantities (position, order and fill quantities) in signed base units, > 0 buys or
long; cash, equity, fees and PnL in the quote currency; targets and exposures as signed fractions
of equity; the signal in [-1, 1] (on a spot market values below 0 mean flat).

Sources: the design documents' execution layer (seeds/001: "RiskManager: Kelly 1/4, VaR 95%/99%,
CVaR"; "OrderExecutor: gestión de órdenes, slippage") and their thresholds (SPEC.md "Rules from
the design documents"); the rules themselves are documented in the core's headers
(cpp/include/colmena/risk_stage.hpp, execution_stage.hpp, risk_manager.hpp, paper_executor.hpp).
"""

from __future__ import annotations

import math
from typing import Annotated, Final, Literal, cast

import msgspec

from colmena import _core
from colmena.execution.simulation import ExecutionSettings
from colmena.risk.config import RiskConfig
from colmena.units import NS_PER_SECOND

__all__ = [
    "SNAPSHOT_VERSION",
    "AccountSnapshot",
    "Action",
    "Bar",
    "ClosedTrade",
    "ControlActionName",
    "Decision",
    "ExecutionReport",
    "ExecutionStage",
    "ExecutionStageSnapshot",
    "Fill",
    "Order",
    "PaperExecutorSnapshot",
    "RiskDecision",
    "RiskEvent",
    "RiskGate",
    "RiskManagerSnapshot",
    "RiskStage",
    "RiskStageSnapshot",
    "StepResult",
    "TradingLoop",
]

#: What the caller asks at a bar's close.
Action = Literal["hold", "decide", "gated_flat", "end_of_run"]
TradingStateName = Literal["ACTIVE", "REDUCING", "PAUSED", "HALTED"]
VerdictName = Literal[
    "accepted",
    "resized_leverage",
    "resized_var",
    "reduce_only_paused",
    "reduce_only_stale",
    "flatten_halted",
    "flatten_stop",
    "rejected_halted",
    "no_signal",
    "skipped_small_change",
    "zero_kelly",
    "hold",
    "gated_flat",
    "end_of_run",
]
OrderOriginName = Literal["decision", "remainder", "risk", "end_of_run"]
#: A person's control action (:meth:`RiskStage.control`).
ControlActionName = Literal["pause", "resume", "flatten", "halt", "reset"]
EventTypeName = Literal["trade_executed", "regime_changed", "drawdown_threshold", "alert", "error"]
ExecutionErrorName = Literal["no_volume", "non_finite_price"]


class Bar(msgspec.Struct, frozen=True):
    """One OHLCV candle.

    Attributes
    ----------
    ts : int
        Open time, ns since the epoch (UTC); strictly increasing from bar to bar.
    open, high, low, close : float
        Prices in the quote currency, finite and > 0, ``low <= open, close <= high``.
    volume : float
        Traded volume in base units, finite and >= 0 (0: nothing can fill at this bar).
    """

    ts: int
    open: float
    high: float
    low: float
    close: float
    volume: float


class Fill(msgspec.Struct, frozen=True):
    """A fill at a bar's open.

    Attributes
    ----------
    ts : int
        Open time of the fill bar, ns since the epoch.
    quantity : float
        Signed base units filled (> 0 bought): at most ``max_participation`` of the bar's volume.
    price : float
        Quote currency per base unit: ``open * (1 + side * (slippage_bps + impact_bps *
        participation) / 1e4)``.
    fee : float
        Quote currency, ``fee_bps / 1e4`` of the filled notional.
    slippage_cost : float
        Quote currency paid over the open price.
    requested : float
        Signed base units asked for after the reduce-only and spot clips.
    """

    ts: int
    quantity: float
    price: float
    fee: float
    slippage_cost: float
    requested: float


class Order(msgspec.Struct, frozen=True):
    """Risk to execution: a market order for the next bar's open.

    Attributes
    ----------
    id : int
        1, 2, ... in the order the :class:`RiskStage` issued them.
    bar : int
        Decision bar, counted from 0 in the stage's bar stream (the order fills at ``bar + 1``).
    ts : int
        Decision time: the close of the decision bar (its ``ts`` plus the bar length), ns.
    quantity : float
        Signed base units requested (finite, nonzero).
    target : float
        Target exposure the quantity moves to, signed fraction of equity.
    origin : {"decision", "remainder", "risk", "end_of_run"}
        Why the order exists: a decision's target, the unfilled rest of the previous order, the
        risk state (halt or drawdown stop: flatten), the final flattening of a run.
    reduce_only : bool
        The risk state at the decision was not ACTIVE: the fill may only reduce the position.
    """

    id: int
    bar: int
    ts: int
    quantity: float
    target: float
    origin: OrderOriginName
    reduce_only: bool


class RiskEvent(msgspec.Struct, frozen=True):
    """An event of the trading loop (SPEC "Events": trade executed, regime changed, drawdown
    threshold crossed, error; plus alerts).

    Attributes
    ----------
    ts : int
        When it happened, ns since the epoch (a bar's open for fills and stale data, its close
        for the risk manager's observations).
    type : {"trade_executed", "regime_changed", "drawdown_threshold", "alert", "error"}
    code : int
        The core's code for the type (see ``code_name``).
    code_name : str
        The code by name: the new trading state (regime_changed); ``"ladder_pause_1"``,
        ``"ladder_pause_2"``, ``"ladder_stop"``, ``"kill_switch"``, ``"daily_loss"``,
        ``"ladder_rearmed"``, ``"halted_by_operator"``, ``"account_kill_switch"``
        (drawdown_threshold); ``"drawdown_warning"``, ``"drawdown_critical"``,
        ``"daily_pnl_warning"``, ``"daily_pnl_critical"``, ``"data_feed_silent"`` (alert);
        ``"no_volume"``, ``"non_finite_price"`` (error); ``""`` for trade_executed.
    value : float
        Signed base units filled (trade_executed), the drawdown fraction (regime_changed,
        ladder levels, kill_switch, halted_by_operator; the account's for
        account_kill_switch), the UTC-day PnL fraction (daily_loss, daily PnL alerts), the
        reference equity in quote currency (ladder_rearmed), the data age in seconds
        (data_feed_silent), the attempted base units (error).
    """

    ts: int
    type: EventTypeName
    code: int
    code_name: str
    value: float


class ClosedTrade(msgspec.Struct, frozen=True):
    """A round trip of the account: from leaving a flat position to returning to it (or flipping).

    Attributes
    ----------
    open_ts, close_ts : int
        Its first fill and the fill that closed it, ns since the epoch.
    side : int
        +1 long, -1 short.
    pnl : float
        Realized, net of fees and borrow paid while it was open, quote currency.
    quantity : float
        Largest absolute position held, base units.
    entry_price, exit_price : float
        Average entry (average-cost basis) and average closing price, quote per base unit.
    fees, borrow : float
        Paid while it was open, quote currency.
    exit_origin : {"decision", "remainder", "risk", "end_of_run"}
        Origin of the order that closed it (a remainder keeps the origin of the order it
        continues).
    """

    open_ts: int
    close_ts: int
    side: int
    pnl: float
    quantity: float
    entry_price: float
    exit_price: float
    fees: float
    borrow: float
    exit_origin: OrderOriginName


class ExecutionReport(msgspec.Struct, frozen=True):
    """Execution to risk, at the open of the bar after an order's decision bar: what became of it.

    Sent for every order, filled or not.

    Attributes
    ----------
    order_id : int
        The :attr:`Order.id` it answers.
    ts : int
        Open time of the fill bar, ns since the epoch.
    attempted : float
        Signed base units sent to the market: the order's quantity after the reduce-only clip and,
        on a spot market, the clip at a flat position (0 when clipped away).
    fill : Fill or None
        What filled.
    error : {"no_volume", "non_finite_price"} or None
        Why nothing filled of a nonzero ``attempted``; None otherwise. After ``"no_volume"`` the
        whole quantity stays as the remainder; after a bad price it is dropped.
    cash : float
        Account cash after the fill, quote currency.
    position : float
        Account position after the fill, signed base units.
    events : tuple of RiskEvent
        The execution's events: ``trade_executed`` or ``error``.
    closed_trades : tuple of ClosedTrade
        Round trips the fill closed.
    """

    order_id: int
    ts: int
    attempted: float
    fill: Fill | None
    error: ExecutionErrorName | None
    cash: float
    position: float
    events: tuple[RiskEvent, ...] = ()
    closed_trades: tuple[ClosedTrade, ...] = ()


class AccountSnapshot(msgspec.Struct, frozen=True):
    """Execution to risk, at a bar's close: the account after the borrow charge, marked.

    Attributes
    ----------
    ts : int
        Mark time: the bar's close (its ``ts`` plus the bar length), ns since the epoch.
    mark : float
        The bar's close price, quote per base unit.
    cash : float
        Quote currency.
    position : float
        Signed base units.
    equity : float
        ``cash + position * mark``, quote currency.
    """

    ts: int
    mark: float
    cash: float
    position: float
    equity: float


class RiskGate(msgspec.Struct, frozen=True):
    """Risk to execution, at a bar's open: the trading state the fill's reduce-only clip reads.

    Attributes
    ----------
    ts : int
        Open time of the bar, ns since the epoch.
    state : {"ACTIVE", "REDUCING", "PAUSED", "HALTED"}
        Only ACTIVE lets an order add exposure.
    events : tuple of RiskEvent
        Events at the open (stale data: a ``data_feed_silent`` alert and the turn to REDUCING).
    """

    ts: int
    state: TradingStateName
    events: tuple[RiskEvent, ...] = ()


class Decision(msgspec.Struct, frozen=True):
    """The decision at a bar's close.

    Attributes
    ----------
    requested : float
        Signal times the Kelly fraction (risk mode) or the signal (pass-through), before limits,
        signed fraction of equity; 0 when nothing was sized.
    target : float
        Final target exposure, signed fraction of equity (the current exposure when holding).
    verdict : str
        Why the target came out as it did (the reason): ``"accepted"``, ``"resized_leverage"``,
        ``"resized_var"``, ``"reduce_only_paused"``, ``"reduce_only_stale"``,
        ``"flatten_halted"``, ``"flatten_stop"``, ``"rejected_halted"``, ``"no_signal"``,
        ``"skipped_small_change"``, ``"zero_kelly"``, ``"hold"``, ``"gated_flat"``,
        ``"end_of_run"``.
    place_order : bool
        False: hold the current position (a remainder may still be resubmitted).
    kelly : float or None
        Kelly fraction used, in [0, 1]; None in pass-through mode.
    state : {"ACTIVE", "REDUCING", "PAUSED", "HALTED"}
        Trading state after observing the close.
    """

    requested: float
    target: float
    verdict: VerdictName
    place_order: bool
    kelly: float | None
    state: TradingStateName


class RiskDecision(msgspec.Struct, frozen=True):
    """What :meth:`RiskStage.close` decided.

    Attributes
    ----------
    decision : Decision
    order : Order or None
        For the next bar's open; None when the position stays (or on the last bar).
    events : tuple of RiskEvent
        The risk manager's events at this close (regime changes, drawdown thresholds, alerts).
    """

    decision: Decision
    order: Order | None
    events: tuple[RiskEvent, ...] = ()


class StepResult(msgspec.Struct, frozen=True):
    """What one :meth:`TradingLoop.step` did.

    Attributes
    ----------
    fill : Fill or None
        The fill at this bar's open.
    cash : float
        After the bar, quote currency.
    position : float
        After the bar, signed base units.
    equity : float
        At the bar's close, quote currency.
    decision : Decision
        The decision at the bar's close.
    order : Order or None
        Submitted for the next bar's open.
    events : tuple of RiskEvent
        In the order they happened: the open's (stale data, then the fill's), then the close's.
    closed_trades : tuple of ClosedTrade
        Round trips of the account that this bar's fill closed.
    """

    fill: Fill | None
    cash: float
    position: float
    equity: float
    decision: Decision
    order: Order | None
    events: tuple[RiskEvent, ...]
    closed_trades: tuple[ClosedTrade, ...]


# ---------------------------------------------------------------- snapshots of the halves

#: Layout version of :class:`RiskStageSnapshot` and :class:`ExecutionStageSnapshot` written by
#: this build; ``restore`` refuses any other.
SNAPSHOT_VERSION: Final[int] = _core.STAGE_STATE_VERSION

Count = Annotated[int, msgspec.Meta(ge=0)]


class RiskManagerSnapshot(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The risk manager's state (cpp/include/colmena/risk_manager.hpp, ``RiskManagerState``).

    Everything its future decisions depend on besides its configuration. Equities in the quote
    currency, drawdowns and PnL as fractions, times in ns since the epoch (UTC).

    Attributes
    ----------
    state : {"ACTIVE", "REDUCING", "PAUSED", "HALTED"}
        The trading state.
    stale : bool
        The data was stale at the last data-age check (REDUCING requires it).
    flatten_requested : bool
        A drawdown stop waits for the position to be flat: decisions flatten until then.
    started : bool
        The manager has observed at least one close.
    peak_equity : float
        The circuit-breaker ladder's reference equity (highest since the ladder was last armed).
    drawdown : float
        Drawdown from ``peak_equity`` at the last close, >= 0.
    high_equity : float
        All-time high of equity (the drawdown alerts' reference).
    drawdown_from_high : float
        Drawdown from ``high_equity`` at the last close, >= 0.
    ladder_level : int
        Ladder levels fired in this excursion, 0..3.
    stopped : bool
        A drawdown stop's pause is running: the ladder re-arms when it ends.
    drawdown_warned, drawdown_critical : bool
        The drawdown alerts given since the last all-time high.
    paused_until : int
        End of the current or last pause, ns (0: none yet).
    last_ts : int
        Time of the last close observed, ns.
    day : int
        UTC day of ``last_ts``, days since the epoch.
    day_start_equity : float
        The previous UTC day's last equity (the daily PnL's reference).
    last_equity : float
        Equity at the last close.
    daily_pnl : float
        UTC-day PnL at the last close, fraction of ``day_start_equity``.
    daily_pnl_warned, daily_pnl_critical, daily_loss_paused : bool
        The daily PnL alerts and the daily-loss pause fired this UTC day.
    window_ts, window_equity : tuple of int, tuple of float
        The kill switch's window, oldest first, equal lengths: times (ns) and equities of the
        running maxima within the last ``halt_window_seconds`` (equities strictly decreasing;
        the first is the window's maximum).
    ewma_variance : float
        RiskMetrics EWMA variance of bar log returns (finite, >= 0).
    ewma_count : int
        Finite bar log returns seen (the volatility is used from 30 on).
    kelly_trades : tuple of float
        Net PnL of the Kelly window's round trips (the shadow book's), oldest first, at most
        ``kelly_window``.
    operator_paused : bool, default False
        A person's pause holds (:meth:`RiskStage.control` ``pause`` or ``flatten`` without a
        ``resume`` since): the state is PAUSED (or HALTED, the pause kept for after the
        reset). Added with a default, so a state saved before it reads as not paused.
    """

    state: TradingStateName
    stale: bool
    flatten_requested: bool
    started: bool
    peak_equity: float
    drawdown: float
    high_equity: float
    drawdown_from_high: float
    ladder_level: int
    stopped: bool
    drawdown_warned: bool
    drawdown_critical: bool
    paused_until: int
    last_ts: int
    day: int
    day_start_equity: float
    last_equity: float
    daily_pnl: float
    daily_pnl_warned: bool
    daily_pnl_critical: bool
    daily_loss_paused: bool
    window_ts: tuple[int, ...]
    window_equity: tuple[float, ...]
    ewma_variance: float
    ewma_count: Count
    kelly_trades: tuple[float, ...]
    operator_paused: bool = False


class PaperExecutorSnapshot(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A paper account's state (cpp/include/colmena/paper_executor.hpp, ``PaperExecutorState``).

    Amounts in the quote currency, quantities in signed base units, times in ns since the epoch.

    Attributes
    ----------
    cash : float
        Cash, short-sale proceeds included.
    position : float
        Signed base units (>= 0 on a spot market).
    average_price : float
        Average-cost entry price of the position, quote per base unit; 0 when flat.
    realized_pnl : float
        Realized PnL so far, gross of fees.
    fees_paid, slippage_paid, borrow_paid, traded_notional : float
        Totals so far (>= 0).
    n_fills : int
        Fills so far.
    trade_open_ts : int
        First fill of the open round trip (the one the position belongs to), ns.
    trade_pnl : float
        The open round trip's net PnL so far (fees and borrow included).
    trade_size : float
        Largest absolute position of the open round trip, base units.
    trade_fees, trade_borrow : float
        Fees and borrow paid during the open round trip.
    trade_exit_notional, trade_exit_size : float
        The open round trip's closing fills so far: sum of price times size (quote currency)
        and of size (base units), for its average exit price.
    """

    cash: float
    position: float
    average_price: float
    realized_pnl: float
    fees_paid: float
    slippage_paid: float
    borrow_paid: float
    traded_notional: float
    n_fills: Count
    trade_open_ts: int
    trade_pnl: float
    trade_size: float
    trade_fees: float
    trade_borrow: float
    trade_exit_notional: float
    trade_exit_size: float


class RiskStageSnapshot(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Everything a :class:`RiskStage` continues from, and the configuration it was taken under.

    Taken by :meth:`RiskStage.snapshot` at any point (also between ``open`` and ``close``) and
    given to :meth:`RiskStage.restore` of a stage built with the same settings; encode it with
    ``msgspec.msgpack.encode`` and decode it with ``msgspec.msgpack.decode(data,
    type=RiskStageSnapshot)``, which refuses unknown fields. Floats keep their bits through
    MessagePack, so the restored stage continues bit for bit as the original would have.

    Attributes
    ----------
    version : int
        Layout version (:data:`SNAPSHOT_VERSION`).
    execution : ExecutionSettings
        The stage's execution settings (market type, the shadow book's costs).
    risk : RiskConfig or None
        The risk settings; None: pass-through mode.
    min_trade_fraction : float
        Smallest traded change of exposure, fraction of equity (risk mode: the RiskConfig's).
    bar_ns : int
        Bar length, ns.
    risk_manager : RiskManagerSnapshot or None
        The risk manager (None in pass-through mode).
    shadow : PaperExecutorSnapshot
        The shadow book (unit starting cash, the signal at unit exposure) of the Kelly estimate.
    bars : int
        Bars closed.
    is_open : bool
        A bar was opened and not yet closed (``close`` comes next).
    open_ts : int
        Open time of the bar opened last, ns (0 before the first).
    last_ts : int
        Open time of the bar closed last, ns (0 before the first).
    last_close : float
        Close price of the bar closed last, quote per base unit (0 before the first): the next
        bar's log return is taken from it.
    last_order_id : int
        Order ids issued so far (the next order gets ``last_order_id + 1``).
    outstanding : Order or None
        The order sent and not yet reported on.
    remainder : float
        Unfilled part of the last order, signed base units (resubmitted on a hold bar).
    shadow_pending : float
        The shadow book's order for the next open, signed base units.
    """

    version: int
    execution: ExecutionSettings
    risk: RiskConfig | None
    min_trade_fraction: float
    bar_ns: int
    risk_manager: RiskManagerSnapshot | None
    shadow: PaperExecutorSnapshot
    bars: Count
    is_open: bool
    open_ts: int
    last_ts: int
    last_close: float
    last_order_id: Count
    outstanding: Order | None
    remainder: float
    shadow_pending: float


class ExecutionStageSnapshot(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Everything an :class:`ExecutionStage` continues from, and the configuration it was taken
    under (see :class:`RiskStageSnapshot` for encoding and use).

    Attributes
    ----------
    version : int
        Layout version (:data:`SNAPSHOT_VERSION`).
    execution : ExecutionSettings
        The account's execution settings.
    bar_ns : int
        Bar length, ns.
    executor : PaperExecutorSnapshot
        The paper account.
    bars : int
        Bars closed.
    is_open : bool
        A bar was opened and not yet closed.
    open_ts, last_ts : int
        Open time of the bar opened last and of the bar closed last, ns (0 before the first).
    pending : Order or None
        The order waiting for the next open.
    cause : {"decision", "risk", "end_of_run"}
        Origin of the last order that was not a remainder: the exit origin a remainder's fill
        gives the round trips it closes.
    account : AccountSnapshot
        The account at the last close (zeros before the first).
    """

    version: int
    execution: ExecutionSettings
    bar_ns: int
    executor: PaperExecutorSnapshot
    bars: Count
    is_open: bool
    open_ts: int
    last_ts: int
    pending: Order | None
    cause: OrderOriginName
    account: AccountSnapshot


# ---------------------------------------------------------------- conversions to and from the core


def _bar_ns(bar_seconds: float) -> int:
    ns = round(bar_seconds * NS_PER_SECOND)
    if not ns > 0:
        raise ValueError(f"bar_seconds must be > 0, got {bar_seconds}")
    return ns


def _core_bar(bar: Bar) -> _core.Bar:
    return _core.Bar(bar.ts, bar.open, bar.high, bar.low, bar.close, bar.volume)


def _core_signal(signal: float | None) -> float:
    """None (no signal) as the core's NaN; a NaN is refused, so that a NaN from a broken model
    never reads as a deliberate "no signal"."""
    if signal is None:
        return math.nan
    value = float(signal)
    if math.isnan(value):
        raise ValueError("signal is NaN; pass None when there is no valid signal")
    return value


def _fill(f: _core.Fill | None) -> Fill | None:
    if f is None:
        return None
    return Fill(f.ts, f.quantity, f.price, f.fee, f.slippage_cost, f.requested)


def _core_fill(f: Fill | None) -> _core.Fill | None:
    if f is None:
        return None
    return _core.Fill(f.ts, f.quantity, f.price, f.fee, f.slippage_cost, f.requested)


def _order(o: _core.Order | None) -> Order | None:
    if o is None:
        return None
    origin = cast(OrderOriginName, o.origin)
    return Order(o.id, o.bar, o.ts, o.quantity, o.target, origin, o.reduce_only)


def _core_order(o: Order) -> _core.Order:
    return _core.Order(o.id, o.bar, o.ts, o.quantity, o.target, o.origin, o.reduce_only)


def _events(events: list[_core.RiskEvent]) -> tuple[RiskEvent, ...]:
    return tuple(
        RiskEvent(e.ts, cast(EventTypeName, e.type), e.code, e.code_name, e.value) for e in events
    )


def _trades(trades: list[_core.ClosedTrade]) -> tuple[ClosedTrade, ...]:
    return tuple(
        ClosedTrade(
            t.open_ts,
            t.close_ts,
            t.side,
            t.pnl,
            t.quantity,
            t.entry_price,
            t.exit_price,
            t.fees,
            t.borrow,
            cast(OrderOriginName, t.exit_origin),
        )
        for t in trades
    )


def _decision(d: _core.Decision, kelly: float, state: str) -> Decision:
    return Decision(
        d.requested,
        d.target,
        cast(VerdictName, d.verdict),
        d.place_order,
        None if math.isnan(kelly) else kelly,
        cast(TradingStateName, state),
    )


def _account(a: _core.AccountSnapshot) -> AccountSnapshot:
    return AccountSnapshot(a.ts, a.mark, a.cash, a.position, a.equity)


def _core_account(a: AccountSnapshot) -> _core.AccountSnapshot:
    return _core.AccountSnapshot(a.ts, a.mark, a.cash, a.position, a.equity)


def _core_report(r: ExecutionReport) -> _core.ExecutionReport:
    return _core.ExecutionReport(
        r.order_id, r.ts, r.attempted, _core_fill(r.fill), r.error, r.cash, r.position
    )


def _fields(struct: type[msgspec.Struct]) -> tuple[str, ...]:
    return struct.__struct_fields__


def _manager_snapshot(m: _core.RiskManagerState | None) -> RiskManagerSnapshot | None:
    if m is None:
        return None
    return msgspec.convert(
        {f: getattr(m, f) for f in _fields(RiskManagerSnapshot)}, RiskManagerSnapshot
    )


def _executor_snapshot(e: _core.PaperExecutorState) -> PaperExecutorSnapshot:
    return PaperExecutorSnapshot(*(getattr(e, f) for f in _fields(PaperExecutorSnapshot)))


def _copy_fields(snapshot: msgspec.Struct, target: object, names: tuple[str, ...]) -> None:
    for name in names:
        setattr(target, name, getattr(snapshot, name))


def _core_manager_state(m: RiskManagerSnapshot | None) -> _core.RiskManagerState | None:
    if m is None:
        return None
    state = _core.RiskManagerState()
    _copy_fields(m, state, _fields(RiskManagerSnapshot))
    return state


def _core_executor_state(e: PaperExecutorSnapshot) -> _core.PaperExecutorState:
    state = _core.PaperExecutorState()
    _copy_fields(e, state, _fields(PaperExecutorSnapshot))
    return state


def _configs(
    execution: ExecutionSettings, risk: RiskConfig | None, min_trade_fraction: float | None
) -> tuple[_core.ExecutionConfig, _core.RiskConfig | None, float]:
    if risk is not None and min_trade_fraction is not None:
        raise ValueError(
            "min_trade_fraction is for pass-through mode; in risk mode it is "
            "RiskConfig.min_trade_fraction"
        )
    core_risk = risk.to_core() if risk is not None else None
    return execution.to_core(), core_risk, 0.0 if min_trade_fraction is None else min_trade_fraction


# ---------------------------------------------------------------- the loop and its halves


class TradingLoop:
    """The whole trading loop, one :meth:`step` per bar (see the module docstring).

    Parameters
    ----------
    execution : ExecutionSettings
        Costs, volume limit and market type (spot clamps signals to [0, 1]).
    risk : RiskConfig or None
        Risk mode: sizing, limits and breakers. None: pass-through mode (the fitness and the
        baselines of :func:`colmena.execution.simulate_targets`): the target is the clamped signal,
        no breaker, pause or Kelly sizing.
    bar_seconds : float
        Bar length in seconds (> 0); the data age and the borrow time are measured with it.
    min_trade_fraction : float, optional
        Pass-through mode only: target changes below this fraction of equity (>= 0) are skipped
        (default 0). In risk mode it is ``RiskConfig.min_trade_fraction``.

    Raises
    ------
    ValueError
        On an invalid configuration, ``bar_seconds <= 0``, or ``min_trade_fraction`` given in
        risk mode.

    Notes
    -----
    Stepping every bar of a series gives exactly what :func:`colmena._core.run_backtest` gives
    for it (risk mode): both run the core's ``TradingLoop``.
    """

    def __init__(
        self,
        execution: ExecutionSettings,
        risk: RiskConfig | None,
        *,
        bar_seconds: float = 60.0,
        min_trade_fraction: float | None = None,
    ) -> None:
        core_execution, core_risk, band = _configs(execution, risk, min_trade_fraction)
        bar_ns = _bar_ns(bar_seconds)
        if core_risk is not None:
            self._core = _core.TradingLoop(core_execution, core_risk, bar_ns)
        else:
            self._core = _core.TradingLoop.pass_through(core_execution, band, bar_ns)

    @classmethod
    def pass_through(
        cls,
        execution: ExecutionSettings,
        *,
        bar_seconds: float = 60.0,
        min_trade_fraction: float = 0.0,
    ) -> TradingLoop:
        """The loop without risk sizing: ``TradingLoop(execution, None, ...)``."""
        return cls(execution, None, bar_seconds=bar_seconds, min_trade_fraction=min_trade_fraction)

    def step(
        self,
        bar: Bar,
        action: Action,
        signal: float | None,
        new_model: bool = False,
        can_order: bool = True,
    ) -> StepResult:
        """Process one bar: fill the pending order at its open, mark at its close, decide.

        Parameters
        ----------
        bar : Bar
            The next bar; its ``ts`` must be after the previous bar's.
        action : {"hold", "decide", "gated_flat", "end_of_run"}
            ``"decide"`` sizes ``signal``; ``"hold"`` keeps the position (and works the unfilled
            remainder of the last order); ``"gated_flat"`` (the model failed validation) and
            ``"end_of_run"`` target flat.
        signal : float or None
            Target exposure signal in [-1, 1] (read only for ``"decide"``); None when there is no
            valid signal at this bar (verdict ``"no_signal"``: hold).
        new_model : bool
            A new model takes over at this bar (a walk-forward fold): the Kelly window and the
            shadow book restart before the fill. The account's risk state carries over.
        can_order : bool
            False on the last bar: nothing is submitted (no bar is left to fill it).

        Returns
        -------
        StepResult

        Raises
        ------
        ValueError
            Before anything changes: ``ts`` not after the previous bar's, a bar breaking the
            candle rules (non-finite or non-positive prices, negative volume, open or close
            outside [low, high]), a signal outside [-1, 1] or NaN, an unknown action.
        """
        result, events, closed = self._core.step(
            _core_bar(bar), action, _core_signal(signal), new_model, can_order
        )
        return StepResult(
            fill=_fill(result.fill),
            cash=result.cash,
            position=result.position,
            equity=result.equity,
            decision=_decision(result.decision, result.kelly, result.state),
            order=_order(result.order),
            events=_events(events),
            closed_trades=_trades(closed),
        )

    @property
    def executor(self) -> _core.PaperExecutor:
        """The account (read-only view): cash, position, fees_paid, slippage_paid, borrow_paid
        (quote currency) and so on."""
        return self._core.executor

    @property
    def risk_manager(self) -> _core.RiskManager | None:
        """The risk manager (None in pass-through mode); ``reset_halt`` is a person's reset."""
        return self._core.risk_manager

    @property
    def bars(self) -> int:
        """Bars stepped so far."""
        return self._core.bars


class RiskStage:
    """The sizing-and-risk half: what the live risk service runs (see the module docstring).

    Holds the risk manager, the shadow book that feeds the Kelly estimate (the signal's own round
    trips at unit exposure, so the estimate never depends on the position it sizes) and the
    unfilled remainder of the last order. Per bar: :meth:`open`, then :meth:`on_execution` when an
    order was outstanding, then :meth:`close`. Every call checks its input before anything
    changes: after a ValueError the stage is as it was.

    Parameters
    ----------
    execution : ExecutionSettings
        The market type (spot clamps signals to [0, 1]) and the shadow book's costs.
    risk : RiskConfig or None
        Risk mode; None: pass-through mode (see :class:`TradingLoop`).
    bar_seconds : float
        Bar length in seconds (> 0).
    min_trade_fraction : float, optional
        Pass-through mode only (see :class:`TradingLoop`).

    Raises
    ------
    ValueError
        As :class:`TradingLoop`.
    """

    def __init__(
        self,
        execution: ExecutionSettings,
        risk: RiskConfig | None,
        *,
        bar_seconds: float = 60.0,
        min_trade_fraction: float | None = None,
    ) -> None:
        core_execution, core_risk, band = _configs(execution, risk, min_trade_fraction)
        bar_ns = _bar_ns(bar_seconds)
        if core_risk is not None:
            self._core = _core.RiskStage(core_execution, core_risk, bar_ns)
        else:
            self._core = _core.RiskStage.pass_through(core_execution, band, bar_ns)
        self._execution = execution
        self._risk = risk

    @classmethod
    def pass_through(
        cls,
        execution: ExecutionSettings,
        *,
        bar_seconds: float = 60.0,
        min_trade_fraction: float = 0.0,
    ) -> RiskStage:
        """The stage without risk sizing: ``RiskStage(execution, None, ...)``."""
        return cls(execution, None, bar_seconds=bar_seconds, min_trade_fraction=min_trade_fraction)

    def open(self, bar: Bar, *, new_model: bool = False, received_ts: int = 0) -> RiskGate:
        """The open of ``bar``: data age, model change, the shadow book's fill.

        Parameters
        ----------
        bar : Bar
            The next bar; its ``ts`` must be after the previous bar's.
        new_model : bool
            A new model takes over: the Kelly window and the shadow book restart.
        received_ts : int, default 0
            When the candle of ``bar`` was received, ns since the epoch (0: not known), as in
            :meth:`close`: the data age at this open is its delay after the bar's close (or the
            gap since the previous bar, whichever is older).

        Returns
        -------
        RiskGate
            The trading state at this open, for :meth:`ExecutionStage.open`.

        Raises
        ------
        ValueError
            ``ts`` not after the previous bar's, a bar breaking the candle rules, or a negative
            ``received_ts``.
        RuntimeError
            The previous bar was opened and not closed.
        """
        state, events = self._core.open(_core_bar(bar), new_model, received_ts)
        return RiskGate(bar.ts, cast(TradingStateName, state), _events(events))

    def on_execution(self, report: ExecutionReport) -> None:
        """The execution's report on the outstanding order: its unfilled part becomes the
        remainder (all of it after a bar without volume; nothing after a bad price).

        Raises
        ------
        ValueError
            No order is outstanding, the report is for another order (unknown id) or another bar,
            or it is inconsistent (non-finite quantities; nothing filled of a nonzero attempted
            quantity and no error).
        RuntimeError
            No bar is open.
        """
        self._core.on_execution(_core_report(report))

    def close(
        self,
        bar: Bar,
        account: AccountSnapshot,
        action: Action,
        signal: float | None,
        *,
        can_order: bool = True,
        received_ts: int = 0,
    ) -> RiskDecision:
        """The close of the opened bar: observe the account, decide for the next open.

        Parameters
        ----------
        bar : Bar
            The bar passed to :meth:`open` (the same ``ts``; its close is read).
        account : AccountSnapshot
            :meth:`ExecutionStage.close`'s snapshot at this close.
        action, signal, can_order
            As :meth:`TradingLoop.step`.
        received_ts : int, default 0
            When the candle was received, ns since the epoch (UTC); 0: not known (a backtest,
            a replay). Received more than the risk config's ``stale_after_seconds`` after the
            bar's close, the data is stale at this decision: REDUCING (only exposure-reducing
            orders, verdict ``"reduce_only_stale"``) with a ``data_feed_silent`` alert (value:
            the age in seconds); the first fresh candle ends it (SPEC: stale data reduce-only).

        Returns
        -------
        RiskDecision
            The decision and the order for :meth:`ExecutionStage.submit` (or None).

        Raises
        ------
        ValueError
            The bar or account is not the opened bar's, an outstanding order was not reported,
            a signal outside [-1, 1] or NaN, an unknown action, a NaN equity (risk mode), a
            negative ``received_ts``.
        RuntimeError
            No bar is open.
        """
        decided, events = self._core.close(
            _core_bar(bar),
            _core_account(account),
            action,
            _core_signal(signal),
            can_order,
            received_ts,
        )
        return RiskDecision(
            decision=_decision(decided.decision, decided.kelly, decided.state),
            order=_order(decided.order),
            events=_events(events),
        )

    def halt(self, ts: int, *, account_drawdown: float | None = None) -> tuple[RiskEvent, ...]:
        """The operator's HALT (a person stops trading), exactly as the kill switch halts.

        From the next open the state is HALTED: fills may only reduce the position, every close
        flattens whatever the action (verdict ``"flatten_halted"``, an order of origin
        ``"risk"``), until a person calls ``risk_manager.reset_halt``. Callable between any two
        calls; a HALT is part of :meth:`snapshot`, so it survives a restart. Nothing happens
        when already HALTED.

        Parameters
        ----------
        ts : int
            When the person halted, ns since the epoch (UTC), in 1970..2200.
        account_drawdown : float, optional
            Given: the halt of the account's kill switch on its total equity over several
            symbols (:class:`colmena.live.account.AccountGuard`), this value (the account's
            drawdown, a fraction) its event's.

        Returns
        -------
        tuple of RiskEvent
            A ``drawdown_threshold`` event of code ``"halted_by_operator"`` (value: the drawdown
            from the ladder's reference equity) or ``"account_kill_switch"`` (value:
            ``account_drawdown``) and the ``regime_changed`` event to HALTED; empty when already
            HALTED.

        Raises
        ------
        ValueError
            ``ts`` outside the time range, or a non-finite ``account_drawdown``.
        RuntimeError
            A pass-through stage (no risk manager to halt).
        """
        return _events(self._core.halt(ts, account_drawdown))

    def control(self, action: ControlActionName, ts: int) -> tuple[RiskEvent, ...]:
        """A person's control action (``colmena ctl``), callable between any two calls.

        - ``"pause"``: PAUSED (the design documents' safe mode: only exposure-reducing orders)
          until ``"resume"``, whatever the end of a ladder or daily-loss pause; under a HALT
          it is kept for after the reset. Event ``paused_by_operator``.
        - ``"resume"``: ends the person's pause: ACTIVE (REDUCING on stale data), or PAUSED
          until a running ladder or daily-loss pause ends; a HALT stays. Event
          ``resumed_by_operator``.
        - ``"flatten"``: the pause and a flatten at the next close (verdict
          ``"flatten_stop"``, an order of origin ``"risk"``, repeated until the position is
          flat). Event ``flatten_by_operator``.
        - ``"halt"``: as :meth:`halt`.
        - ``"reset"``: ends a HALT (the risk manager's ``reset_halt`` at the equity of the last
          close): ACTIVE, or PAUSED under a person's pause; the ladder and the kill switch's
          window restart from that equity. Event ``halt_reset`` (value: the equity).

        Each is part of :meth:`snapshot` and survives a restart; repeating one changes nothing
        (no event) except ``flatten``, whose flatten is asked again.

        Parameters
        ----------
        action : {"pause", "resume", "flatten", "halt", "reset"}
        ts : int
            When it applies, ns since the epoch (UTC), in 1970..2200 (the live risk service
            passes the open time of the bar it applies from).

        Returns
        -------
        tuple of RiskEvent
            The ``drawdown_threshold`` event of the action and any ``regime_changed`` event.

        Raises
        ------
        ValueError
            An unknown action or ``ts`` outside the time range.
        RuntimeError
            A pass-through stage (no risk manager).
        """
        return _events(self._core.control(action, ts))

    def snapshot(self) -> RiskStageSnapshot:
        """The stage's state and the configuration it was taken under (see
        :class:`RiskStageSnapshot`): what a live risk service keeps in its key-value bucket.
        Allowed at any point, also between :meth:`open` and :meth:`close`."""
        s = self._core.snapshot()
        return RiskStageSnapshot(
            version=s.version,
            execution=self._execution,
            risk=self._risk,
            min_trade_fraction=s.min_trade_fraction,
            bar_ns=s.bar_ns,
            risk_manager=_manager_snapshot(s.risk_manager),
            shadow=_executor_snapshot(s.shadow),
            bars=s.bars,
            is_open=s.is_open,
            open_ts=s.open_ts,
            last_ts=s.last_ts,
            last_close=s.last_close,
            last_order_id=s.last_order_id,
            outstanding=_order(s.outstanding),
            remainder=s.remainder,
            shadow_pending=s.shadow_pending,
        )

    def restore(self, snapshot: RiskStageSnapshot) -> None:
        """Continue from ``snapshot`` (of a stage built with the same settings, usually after a
        restart): the stage then behaves bit for bit as the one it was taken from.

        Everything is checked before anything changes (in the core, RiskStage::restore): after a
        ValueError the stage is as it was.

        Raises
        ------
        ValueError
            Naming the field: another ``version``; settings that differ from this stage's
            (``execution.*``, ``risk.*`` in the core's units, e.g. ``risk.halt_window_ns``,
            ``min_trade_fraction``, ``bar_ns``; settings that run the same, such as the borrow
            rate of a spot market, count as equal); a risk manager in pass-through mode or none
            in risk mode; a state the stage could not have reached (a NaN or infinite amount
            where the stage keeps finite ones, an unknown state or origin, a ladder level
            outside 0..3, window lengths that differ, more Kelly trades than ``kelly_window``,
            times outside 1970..2200, an open bar not after the last closed one, an outstanding
            order that is not the last one issued at the last close, ...).
        """
        state = _core.RiskStageState()
        state.version = snapshot.version
        state.execution = snapshot.execution.to_core()
        state.risk = None if snapshot.risk is None else snapshot.risk.to_core()
        state.min_trade_fraction = snapshot.min_trade_fraction
        state.bar_ns = snapshot.bar_ns
        state.risk_manager = _core_manager_state(snapshot.risk_manager)
        state.shadow = _core_executor_state(snapshot.shadow)
        state.bars = snapshot.bars
        state.is_open = snapshot.is_open
        state.open_ts = snapshot.open_ts
        state.last_ts = snapshot.last_ts
        state.last_close = snapshot.last_close
        state.last_order_id = snapshot.last_order_id
        state.outstanding = (
            None if snapshot.outstanding is None else _core_order(snapshot.outstanding)
        )
        state.remainder = snapshot.remainder
        state.shadow_pending = snapshot.shadow_pending
        self._core.restore(state)

    @property
    def outstanding(self) -> Order | None:
        """The order sent and not yet reported on."""
        return _order(self._core.outstanding)

    @property
    def remainder(self) -> float:
        """Unfilled part of the last order, signed base units."""
        return self._core.remainder

    @property
    def risk_manager(self) -> _core.RiskManager | None:
        """The risk manager (None in pass-through mode); ``reset_halt`` is a person's reset."""
        return self._core.risk_manager

    @property
    def bars(self) -> int:
        """Bars closed so far."""
        return self._core.bars

    @property
    def is_open(self) -> bool:
        """A bar was opened and not yet closed."""
        return self._core.is_open


class ExecutionStage:
    """The execution half: what the live (paper) execution service runs (see the module
    docstring).

    Holds the account (fills with fees, slippage, volume-limited partial fills, the spot rule,
    borrow of short positions; :class:`colmena._core.PaperExecutor`) and the pending order. Per
    bar: :meth:`open` (the pending order fills), :meth:`close` (borrow, mark), then
    :meth:`submit` when the risk stage sends an order. Every call checks its input before anything
    changes: after a ValueError the stage is as it was.

    Parameters
    ----------
    execution : ExecutionSettings
    bar_seconds : float
        Bar length in seconds (> 0): the borrow time of the first bar.

    Raises
    ------
    ValueError
        On an invalid configuration or ``bar_seconds <= 0``.
    """

    def __init__(self, execution: ExecutionSettings, *, bar_seconds: float = 60.0) -> None:
        self._core = _core.ExecutionStage(execution.to_core(), _bar_ns(bar_seconds))
        self._execution = execution

    def open(self, bar: Bar, state: TradingStateName) -> ExecutionReport | None:
        """The open of ``bar``: the pending order fills.

        Parameters
        ----------
        bar : Bar
            The next bar; its ``ts`` must be after the previous bar's.
        state : {"ACTIVE", "REDUCING", "PAUSED", "HALTED"}
            The risk state at this open (:attr:`RiskGate.state`); anything but ACTIVE (or an
            order marked ``reduce_only``) lets the fill only reduce the position.

        Returns
        -------
        ExecutionReport or None
            None when no order was pending.

        Raises
        ------
        ValueError
            ``ts`` not after the previous bar's, a bar breaking the candle rules, an unknown
            state.
        RuntimeError
            The previous bar was opened and not closed.
        """
        report, events, closed = self._core.open(_core_bar(bar), state)
        if report is None:
            return None
        return ExecutionReport(
            order_id=report.order_id,
            ts=report.ts,
            attempted=report.attempted,
            fill=_fill(report.fill),
            error=cast("ExecutionErrorName | None", report.error),
            cash=report.cash,
            position=report.position,
            events=_events(events),
            closed_trades=_trades(closed),
        )

    def close(self, bar: Bar) -> AccountSnapshot:
        """The close of the opened bar: borrow for the time since the previous bar, mark.

        Raises
        ------
        ValueError
            ``bar`` is not the opened bar, or breaks the candle rules.
        RuntimeError
            No bar is open.
        """
        return _account(self._core.close(_core_bar(bar)))

    def submit(self, order: Order) -> None:
        """Queue ``order`` (decided at the close just processed) for the next open.

        Raises
        ------
        ValueError
            An order is already pending, the order was not decided at the last close, its
            quantity is not finite and nonzero, or its origin is unknown.
        RuntimeError
            A bar is open (orders come after a close).
        """
        self._core.submit(_core_order(order))

    def snapshot(self) -> ExecutionStageSnapshot:
        """The stage's state and the configuration it was taken under (see
        :class:`ExecutionStageSnapshot`). Allowed at any point, also between :meth:`open` and
        :meth:`close`."""
        s = self._core.snapshot()
        return ExecutionStageSnapshot(
            version=s.version,
            execution=self._execution,
            bar_ns=s.bar_ns,
            executor=_executor_snapshot(s.executor),
            bars=s.bars,
            is_open=s.is_open,
            open_ts=s.open_ts,
            last_ts=s.last_ts,
            pending=_order(s.pending),
            cause=cast(OrderOriginName, s.cause),
            account=_account(s.account),
        )

    def restore(self, snapshot: ExecutionStageSnapshot) -> None:
        """Continue from ``snapshot`` (of a stage built with the same settings): the stage then
        behaves bit for bit as the one it was taken from.

        Everything is checked before anything changes (in the core, ExecutionStage::restore):
        after a ValueError the stage is as it was.

        Raises
        ------
        ValueError
            Naming the field: another ``version``; settings that differ from this stage's
            (``execution.*`` in the core's units, ``bar_ns``); a state the stage could not have
            reached (a non-finite amount, a short position on a spot market, an average price
            that does not match the position, times outside 1970..2200, an open bar not after
            the last closed one, a pending order while a bar is open or not decided at the last
            close, a ``cause`` of ``"remainder"``, an account not marked at the last close).
        """
        state = _core.ExecutionStageState()
        state.version = snapshot.version
        state.execution = snapshot.execution.to_core()
        state.bar_ns = snapshot.bar_ns
        state.executor = _core_executor_state(snapshot.executor)
        state.bars = snapshot.bars
        state.is_open = snapshot.is_open
        state.open_ts = snapshot.open_ts
        state.last_ts = snapshot.last_ts
        state.pending = None if snapshot.pending is None else _core_order(snapshot.pending)
        state.cause = snapshot.cause
        state.account = _core_account(snapshot.account)
        self._core.restore(state)

    @property
    def pending(self) -> Order | None:
        """The order waiting for the next open."""
        return _order(self._core.pending)

    @property
    def account(self) -> AccountSnapshot:
        """The account at the last close (zeros before the first)."""
        return _account(self._core.account)

    @property
    def executor(self) -> _core.PaperExecutor:
        """The account (read-only view): cash, position and the cost totals."""
        return self._core.executor

    @property
    def bars(self) -> int:
        """Bars closed so far."""
        return self._core.bars

    @property
    def is_open(self) -> bool:
        """A bar was opened and not yet closed."""
        return self._core.is_open
