"""Misuse of the compiled core's classes fails with a clear error, never a crash (issue 10)."""

from __future__ import annotations

import os
import textwrap

import numpy as np
import pytest

from colmena import _core
from helpers import run_python

T0 = 1_600_000_000_000_000_000
CORE_CLASSES = sorted(name for name in dir(_core) if isinstance(getattr(_core, name), type))


@pytest.mark.parametrize("name", CORE_CLASSES)
def test_bare_new_without_the_constructor_is_refused(name: str) -> None:
    cls = getattr(_core, name)
    with pytest.raises(TypeError, match=rf"{name}\.__new__\({name}\) makes no usable object"):
        cls.__new__(cls)


def test_bare_new_in_a_child_never_crashes() -> None:
    # The reported crash: Swarm.__new__(Swarm) then a method call. Run it in a child so that a
    # regression fails this test instead of killing pytest.
    script = """
    from colmena import _core
    for name in dir(_core):
        cls = getattr(_core, name)
        if isinstance(cls, type):
            try:
                obj = cls.__new__(cls)
            except TypeError:
                continue
            raise SystemExit(f"{name}.__new__ gave an object")
    print("refused")
    """
    done = run_python(["-c", textwrap.dedent(script)])
    assert done.returncode == 0, done.stderr[-2000:]
    assert "refused" in done.stdout


def test_construction_still_works_after_the_new_guard() -> None:
    buffer = _core.MarketBuffer(4)
    buffer.push(T0, 1.0, 2.0, 0.5, 1.5, 3.0)
    assert len(buffer) == 1
    assert _core.Bar(T0, 1.0, 2.0, 0.5, 1.5, 3.0).ts == T0


@pytest.mark.parametrize("field", range(6))
def test_push_refuses_a_bool_for_any_field(field: int) -> None:
    names = ["ts", "open", "high", "low", "close", "volume"]
    args: list[object] = [T0, 1.0, 2.0, 0.5, 1.5, 3.0]
    args[field] = True
    buffer = _core.MarketBuffer(4)
    with pytest.raises(
        TypeError, match=rf"MarketBuffer\.push: {names[field]} must be .*not a bool"
    ):
        buffer.push(*args)  # type: ignore[arg-type]
    assert len(buffer) == 0


def swarm() -> _core.Swarm:
    return _core.Swarm([(np.ones((3, 2, 1), np.float32), np.zeros((3, 1), np.float32))])


def spec() -> _core.MarketStateSpec:
    return _core.MarketStateSpec(np.array([1.0, -0.4]), 3, 3, 2, 0, 60_000_000_000)


@pytest.mark.parametrize(
    ("call", "argument"),
    [
        (lambda: _core.MarketBuffer(True), "MarketBuffer: capacity"),
        (lambda: _core.MarketBuffer(4).last(True), "MarketBuffer.last: n"),
        (lambda: _core.Bar(True, 1.0, 2.0, 0.5, 1.5, 3.0), "Bar: ts"),
        (lambda: _core.Bar(T0, 1.0, 2.0, 0.5, 1.5, False), "Bar: volume"),
        (lambda: _core.Fill(T0, True, 1.0, 0.0, 0.0, 1.0), "Fill: quantity"),
        (lambda: _core.AccountSnapshot(True, 1.0, 1.0, 0.0, 1.0), "AccountSnapshot: ts"),
        (lambda: _core.Order(1, True, T0, 1.0, 1.0, "model", False), "Order: bar"),
        (lambda: _core.FracDiffStream(0.4, window=3).update(True), "FracDiffStream.update: x"),
        (lambda: swarm().get_agent(True), "Swarm.get_agent: agent"),
        (lambda: swarm().set_layer(False, *swarm().get_weights()[0]), "Swarm.set_layer: layer"),
        (
            lambda: _core.TradingLoop(_core.ExecutionConfig(), _core.RiskConfig(), True),
            "TradingLoop: bar_ns",
        ),
        (lambda: _core.ExecutionStage(_core.ExecutionConfig(), True), "ExecutionStage: bar_ns"),
        (lambda: _core.MarketStateStream(spec()).update(True, 1.0, 1.0), "update: ts"),
        (lambda: _core.MarketStateStream(spec()).update(T0, True, 1.0), "update: close"),
        (
            lambda: _core.MarketStateStream(spec()).update_candle(T0, 1.0, 1.0, 1.0, 1.0, True),
            "update_candle: volume",
        ),
    ],
)
def test_bools_are_refused_where_a_number_is_expected(call: object, argument: str) -> None:
    with pytest.raises(TypeError, match=rf"{argument} must be .*, not a bool"):
        call()  # type: ignore[operator]


def test_numbers_of_every_kind_are_still_accepted() -> None:
    bar = _core.Bar(np.int64(T0), np.float32(1.0), 2, np.float64(0.5), 1.5, 3)
    assert (bar.ts, bar.open, bar.high, bar.volume) == (T0, 1.0, 2.0, 3.0)
    with pytest.raises(TypeError, match="Bar: ts must be an int"):
        _core.Bar(1.5, 1.0, 2.0, 0.5, 1.5, 3.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Bar: open must be a number"):
        _core.Bar(T0, "1", 2.0, 0.5, 1.5, 3.0)  # type: ignore[arg-type]


def physical_memory() -> int:
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGESIZE")


@pytest.mark.parametrize(("storage", "per_candle"), [("double_write", 96), ("auto", 48)])
def test_capacity_beyond_physical_memory_is_refused_before_allocating(
    storage: str, per_candle: int
) -> None:
    # double_write commits every slot twice (96 bytes a candle): half the memory is the limit.
    largest = physical_memory() // per_candle
    with pytest.raises(
        ValueError, match=rf"capacity {largest + 1} needs .*largest capacity that fits is {largest}"
    ):
        _core.MarketBuffer(largest + 1, storage=storage)


def test_double_write_at_more_than_half_the_memory_is_refused() -> None:
    capacity = physical_memory() // 96 + 1  # fits at 48 bytes a candle, not at 96
    with pytest.raises(ValueError, match="double_write storage"):
        _core.MarketBuffer(capacity, storage="double_write")


def test_allocation_failure_is_a_memory_error_naming_the_capacity() -> None:
    # A child limited to 2 GiB of address space asks for a 4.8 GB buffer: within physical
    # memory, so the check above passes, and the allocation itself fails.
    script = """
    from colmena import _core
    try:
        _core.MarketBuffer(50_000_000, storage="double_write")
    except MemoryError as e:
        print("MemoryError:", e)
    """
    done = run_python(["-c", textwrap.dedent(script)], memory_bytes=2 * 2**30)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "MemoryError: MarketBuffer: cannot allocate the storage of capacity 50000000" in (
        done.stdout
    )


@pytest.mark.parametrize(
    ("config", "field"),
    [
        (_core.RiskConfig, "max_leverage"),
        (_core.RiskConfig, "kelly_window"),
        (_core.RiskConfig, "halt_window_ns"),
        (_core.ExecutionConfig, "fee_bps"),
        (_core.ExecutionConfig, "initial_cash"),
    ],
)
def test_config_number_fields_refuse_bools(config: type, field: str) -> None:
    target = config()
    before = getattr(target, field)
    with pytest.raises(TypeError, match=rf"{config.__name__}\.{field} must be .*, not a bool"):
        setattr(target, field, True)
    assert getattr(target, field) == before
    setattr(target, field, 3)
    assert getattr(target, field) == 3


def test_unsigned_config_fields_refuse_negative_values() -> None:
    with pytest.raises(ValueError, match=r"RiskConfig\.kelly_window must be >= 0, got -1"):
        _core.RiskConfig().kelly_window = -1
