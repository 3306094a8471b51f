"""One account over several symbols: each symbol trades a sleeve of the account's capital, and the
account's kill switch watches the total.

Sleeves: each symbol's risk and execution stages run on its share of the account's starting
capital (``weight`` times ``initial_cash``; :meth:`colmena.services.config.LiveConfig.sleeve`),
exactly as a one-symbol account: sizing, the drawdown ladder, the daily loss pause and the kill
switch apply per sleeve. Capital no sleeve holds stays cash.

The account's kill switch (:class:`AccountGuard`): the core's risk manager, the same rule as a
sleeve's (SPEC: a fall of more than ``halt_drawdown`` below the highest equity of the last
``halt_window_seconds``: HALT, flatten, stay halted until a person resets it), observes the
account's total equity (every sleeve's equity at a bar's close, plus the unallocated cash) once
every symbol has closed that bar. A symbol not heard from for ``stale_after_seconds`` of wall
time while others go on (its feed is silent; it is reduce-only by its own rule) no longer holds
the others back: its last equity counts. (Wall time, not bar time: a fast replay runs hours of
bars in seconds, and a symbol that is merely processed later must be waited for.) When the total
trips the kill switch, every symbol is HALTED (:meth:`colmena.live.handlers.RiskHandler.halt`,
event ``account_kill_switch`` with the account's drawdown) from its next open.

Lock-step: a symbol's risk handler opens its next bar only once the account has observed the
total of that symbol's last close (:attr:`colmena.live.handlers.RiskHandler.may_open`), so a trip
at bar t reaches every symbol before its bar t + 1 opens, whatever the order in which the
services' messages arrive: the records are deterministic, in a fast replay as live. The price is
that every symbol waits for the slowest (at most ``stale_after_seconds`` for a silent one), and
symbols should start together.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Final

import msgspec

from colmena import _core
from colmena.execution.trading_loop import (
    RiskManagerSnapshot,
    _core_manager_state,
    _manager_snapshot,
)
from colmena.risk.config import RiskConfig
from colmena.units import NS_PER_SECOND

__all__ = ["ACCOUNT_STATE_VERSION", "AccountGuard", "AccountGuardState"]

#: Layout version of :class:`AccountGuardState`.
ACCOUNT_STATE_VERSION: Final = 1
_KILL_SWITCH: Final = 4  # DrawdownCode::kill_switch


class AccountGuardState(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What an :class:`AccountGuard` continues from (kept in the services' state bucket).

    Attributes
    ----------
    version : int
        :data:`ACCOUNT_STATE_VERSION`.
    symbols : tuple of str
        The account's symbols.
    risk : RiskConfig
        The rule's settings.
    evaluated_ts : int
        Open time of the newest bar whose total was observed, ns (0: none yet).
    first_ts : int
        Open time of the first close the account saw, ns (0: none yet).
    equities : dict
        Symbol -> ``[(ts, equity), ...]``: each symbol's closes not older than its last one at
        or before ``evaluated_ts`` (bar open times in ns; equity in the quote currency).
    manager : RiskManagerSnapshot
        The risk manager observing the total.
    halted_ts : int
        When the account's kill switch tripped, ns (0: it has not).
    halted_drawdown : float
        The account's drawdown when it tripped (a fraction; 0 when it has not).
    """

    version: int
    symbols: tuple[str, ...]
    risk: RiskConfig
    evaluated_ts: int
    first_ts: int
    equities: dict[str, list[tuple[int, float]]]
    manager: RiskManagerSnapshot
    halted_ts: int = 0
    halted_drawdown: float = 0.0


class AccountGuard:
    """The account's kill switch on the total equity of several symbols' sleeves (see the module
    docstring).

    Parameters
    ----------
    symbols : sequence of str
        Every symbol of the account (the risk service must hold them all).
    risk : RiskConfig
        The rule's settings (``halt_drawdown``, ``halt_window_seconds``,
        ``stale_after_seconds``): the account's, the same as the sleeves'.
    sleeves : dict
        Symbol -> the sleeve's starting equity (quote currency): its equity until its first
        close.
    unallocated_cash : float
        Capital no sleeve holds, quote currency (>= 0).
    bar_seconds : int
        Candle length; a bar's equity is observed at its close (open time + bar).
    clock : callable
        Monotonic wall time in seconds (tests pass their own).

    Raises
    ------
    ValueError
        No symbols, a symbol without a sleeve, or a negative or non-finite amount.
    """

    def __init__(
        self,
        symbols: Sequence[str],
        risk: RiskConfig,
        sleeves: dict[str, float],
        unallocated_cash: float,
        *,
        bar_seconds: int = 60,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not symbols:
            raise ValueError("an account needs at least one symbol")
        missing = sorted(set(symbols) - set(sleeves))
        if missing:
            raise ValueError(f"no sleeve for {', '.join(missing)}")
        amounts = [unallocated_cash, *(sleeves[s] for s in symbols)]
        if not all(a >= 0.0 and a < float("inf") for a in amounts):
            raise ValueError("sleeves and unallocated_cash must be finite and >= 0")
        self.symbols = tuple(symbols)
        self.risk = risk
        self._sleeves = {s: float(sleeves[s]) for s in symbols}
        self._unallocated = float(unallocated_cash)
        self._bar_ns = bar_seconds * NS_PER_SECOND
        self._stale_seconds = risk.stale_after_seconds
        self._clock = clock
        started = clock()
        self._heard = dict.fromkeys(symbols, started)  # wall time of each symbol's last close
        self._manager = _core.RiskManager(risk.to_core())
        self._equities: dict[str, list[tuple[int, float]]] = {s: [] for s in symbols}
        self._evaluated = 0
        self._first_ts = 0  # the first close the account saw
        self.halted_ts = 0
        self.halted_drawdown = 0.0

    @property
    def halted(self) -> bool:
        """The account's kill switch has tripped (a person resets each symbol)."""
        return self.halted_ts != 0

    @property
    def evaluated_ts(self) -> int:
        """Open time of the newest bar whose total was observed (0: none yet)."""
        return self._evaluated

    def total_equity(self, ts: int) -> float:
        """The account's equity at the close of bar ``ts``: each sleeve's newest equity at or
        before it (its starting equity before its first close) plus the unallocated cash,
        summed exactly rounded (``math.fsum``: the same bits in any order)."""
        parts = [self._unallocated]
        for symbol in self.symbols:
            equity = self._sleeves[symbol]
            for when, value in self._equities[symbol]:
                if when > ts:
                    break
                equity = value
            parts.append(equity)
        return math.fsum(parts)

    def on_close(self, symbol: str, ts: int, equity: float) -> tuple[int, float] | None:
        """A sleeve's equity at the close of bar ``ts`` (ns, open time); observes the total of
        every bar this completes. Returns ``(halt time in ns, the account's drawdown)`` when the
        kill switch trips (once), else None. A close already seen is ignored.

        Raises
        ------
        ValueError
            An unknown symbol or a non-finite equity.
        """
        if symbol not in self._equities:
            raise ValueError(f"{symbol!r} is not a symbol of this account")
        if not equity < float("inf") or equity != equity:
            raise ValueError(f"{symbol}: equity {equity} at {ts} is not finite")
        closes = self._equities[symbol]
        if (closes and ts <= closes[-1][0]) or ts <= self._evaluated:
            return None  # seen before (a redelivery or a replay)
        closes.append((ts, equity))
        if self._first_ts == 0:
            self._first_ts = ts
        self._heard[symbol] = self._clock()
        return self._evaluate()

    def refresh(self) -> tuple[int, float] | None:
        """Observe the bars that became complete because a silent symbol went stale (wall time
        passed since its last close); the same return as :meth:`on_close`. The risk service
        calls it every second, so a silent feed cannot hold the account back for ever."""
        return self._evaluate()

    def _evaluate(self) -> tuple[int, float] | None:
        if self._first_ts == 0:
            return None
        now = self._clock()
        # A symbol without a close yet counts as closed just before the account's first bar.
        before = self._first_ts - self._bar_ns
        newest = {s: c[-1][0] if c else before for s, c in self._equities.items()}
        holding = [t for s, t in newest.items() if now - self._heard[s] <= self._stale_seconds]
        frontier = min(holding) if holding else max(newest.values())
        bars = sorted({t for c in self._equities.values() for t, _ in c
                       if self._evaluated < t <= frontier})  # fmt: skip
        tripped: tuple[int, float] | None = None
        for bar in bars:
            close_ns = bar + self._bar_ns
            events = self._manager.observe(close_ns, self.total_equity(bar))
            self._evaluated = bar
            if not self.halted:
                for _ts, kind, code, value in events:
                    if kind == "drawdown_threshold" and code == _KILL_SWITCH:
                        self.halted_ts, self.halted_drawdown = close_ns, float(value)
                        tripped = (close_ns, float(value))
        self._prune()
        return tripped

    def reset(self) -> bool:
        """A person resets the account's kill switch (``colmena ctl reset`` without a symbol):
        the core risk manager's ``reset_halt`` at the newest total observed, so its window and
        peaks restart there. Each symbol's own HALT is reset by its risk handler (a control
        action per symbol). Returns False when the switch had not tripped (nothing changes)."""
        if not self.halted:
            return False
        close_ns = self._evaluated + self._bar_ns
        self._manager.reset_halt(close_ns, self.total_equity(self._evaluated))
        self.halted_ts = 0
        self.halted_drawdown = 0.0
        return True

    def _prune(self) -> None:
        """Drop each symbol's closes older than its last one at or before the evaluated bar."""
        for closes in self._equities.values():
            keep = 0
            for i, (when, _) in enumerate(closes):
                if when <= self._evaluated:
                    keep = i
            del closes[:keep]

    def state(self) -> AccountGuardState:
        """Everything this guard continues from."""
        manager = _manager_snapshot(self._manager.snapshot())
        assert manager is not None
        return AccountGuardState(
            version=ACCOUNT_STATE_VERSION,
            symbols=self.symbols,
            risk=self.risk,
            evaluated_ts=self._evaluated,
            first_ts=self._first_ts,
            equities={s: list(c) for s, c in self._equities.items()},
            manager=manager,
            halted_ts=self.halted_ts,
            halted_drawdown=self.halted_drawdown,
        )

    def restore(self, state: AccountGuardState) -> None:
        """Continue from ``state`` (of a guard over the same symbols and rule).

        Raises
        ------
        ValueError
            Another version, other symbols or settings, or a manager state the core refuses (the
            message names the field). Nothing changes.
        """
        if state.version != ACCOUNT_STATE_VERSION:
            raise ValueError(f"version: account state of layout {state.version}")
        if tuple(state.symbols) != self.symbols:
            raise ValueError(
                f"symbols: the saved account holds {', '.join(state.symbols)}, this one "
                f"{', '.join(self.symbols)}"
            )
        if state.risk != self.risk:
            raise ValueError("risk: the saved account ran under other risk settings")
        if set(state.equities) != set(self.symbols):
            raise ValueError("equities: not one list per symbol")
        core = _core_manager_state(state.manager)
        assert core is not None
        manager = _core.RiskManager(self.risk.to_core())
        manager.restore(core)  # checked by the core
        self._manager = manager
        self._equities = {s: [(int(t), float(e)) for t, e in state.equities[s]]
                          for s in self.symbols}  # fmt: skip
        self._evaluated = state.evaluated_ts
        self._first_ts = state.first_ts
        self.halted_ts = state.halted_ts
        self.halted_drawdown = state.halted_drawdown
