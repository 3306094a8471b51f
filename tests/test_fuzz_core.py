"""Fuzzing every public entry point of the compiled core (``python/colmena/_core.pyi``).

Functions, constructors and methods get hostile arrays (dtypes, shapes, memory layouts, NaN and
infinities, empty, huge zero-stride lengths that must be refused before allocating) and scalars
(bool, int and float extremes, None, strings): each call returns a result satisfying its
property or raises a clean TypeError, ValueError, OverflowError, MemoryError or IndexError (the
stages: RuntimeError for calls out of order), and the object stays usable. Inputs and checks:
``tests/fuzz_strategies.py``.

A crash kills the process that runs it: the in-process fuzzer covers the default run, the
``fuzz_long`` one runs each input in a child process and reports a crash with its reproducer.
Objects whose ``__init__`` never ran (``Cls.__new__(Cls)``) are tried in a child process each:
they crashed before the core refused them, so a regression takes down only that child.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given

sys.path.insert(0, str(Path(__file__).parent))
from fuzz_strategies import (
    CoreCall,
    IsolatedRunner,
    check_core_call,
    core_calls,
)
from fuzzing import fuzz_settings
from helpers import run_python


@pytest.mark.fuzz
@fuzz_settings(default=300)
@given(core_calls())
def test_core_entry_points_return_or_raise_a_documented_error(call: CoreCall) -> None:
    check_core_call(call)


@pytest.fixture(scope="module")
def runner() -> IsolatedRunner:
    with IsolatedRunner(timeout=60) as r:
        yield r  # type: ignore[misc]


@pytest.mark.fuzz
@pytest.mark.fuzz_long
@fuzz_settings(default=300)
@given(call=core_calls())
def test_core_in_a_child_process_never_crashes_or_hangs(
    runner: IsolatedRunner, call: CoreCall
) -> None:
    outcome = runner.run("core", call)
    assert outcome.kind == "done", f"{outcome.kind}: {outcome.detail}\nreproducer:\n{call.source()}"


#: Calls with well-formed arguments on each class (so that only the missing ``__init__`` can
#: make them fail): a property read starts with ".".
UNINITIALIZED_CALLS: dict[str, list[tuple[str, str]]] = {
    "MarketBuffer": [("__len__", "()"), ("clear", "()"), (".newest_timestamp", "")],
    "FracDiffStream": [(".count", ""), ("update", "(1.0,)"), ("reset", "()")],
    "MarketStateSpec": [(".lookback_bars", ""), (".bar_ns", "")],
    "MarketStateStream": [(".count", ""), ("reset", "()"), ("regime", "()")],
    "Swarm": [(".n_agents", ""), ("get_weights", "()")],
    "MLP": [("get_weights", "()"), ("forward", "(np.zeros((1, 4), np.float32),)")],
    "VAEEncoder": [("encode", "(np.zeros((1, 4), np.float32), False)")],
    "RiskManager": [(".state", ""), (".drawdown", ""), ("record_trade", "(1.0,)")],
    "PaperExecutor": [(".cash", ""), ("equity", "(100.0,)")],
    "TradingLoop": [(".bars", "")],
    "RiskStage": [(".bars", ""), (".outstanding", "")],
    "ExecutionStage": [(".bars", ""), (".account", "")],
    "Bar": [(".ts", ""), (".close", "")],
    "Fill": [(".ts", ""), (".price", "")],
    "Order": [(".ts", ""), (".origin", "")],
    "ExecutionReport": [(".ts", ""), (".error", "")],
    "AccountSnapshot": [(".ts", ""), (".equity", "")],
}

UNINITIALIZED_SCRIPT = """
import sys
import numpy as np
from colmena import _core
cls = _core.{name}
try:
    obj = cls.__new__(cls)
except TypeError:
    print("refused"); sys.exit(0)
print("{call}", flush=True)
try:
    obj{call}
except (TypeError, ValueError, RuntimeError) as exc:
    if "Invalid argument" in str(exc) or "nternal error" in str(exc):
        sys.exit(f"{call}: unclear error {{exc!r}}")
    sys.exit(0)
sys.exit("{call} ran on an object whose __init__ never ran")
"""


@pytest.mark.fuzz
@pytest.mark.parametrize(
    ("name", "call"),
    [(n, m + a) for n, calls in UNINITIALIZED_CALLS.items() for m, a in calls],
)
def test_an_object_whose_init_never_ran_is_refused(name: str, call: str) -> None:
    """``Cls.__new__(Cls)`` skips ``__init__``: creating it, or else the call, must raise a
    clean error; never crash, hang or read uninitialized memory."""
    call = call if call.startswith(".") else "." + call
    script = UNINITIALIZED_SCRIPT.format(name=name, call=call)
    try:
        result = run_python(["-W", "ignore", "-c", textwrap.dedent(script)], timeout=10)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{name}{call}: no answer ({exc})")
    assert result.returncode == 0, (
        f"{name}{call}: return code {result.returncode}\n{result.stderr[-2000:]}"
    )


@pytest.mark.fuzz
@pytest.mark.parametrize("cls", ["Swarm", "MLP"])
def test_a_huge_broadcast_weight_is_refused_cleanly(cls: str) -> None:
    from colmena import _core

    bias = np.broadcast_to(np.float32(0.5), (2**40,))  # 4 TiB if copied; nothing allocated here
    weights = np.ones((4, 1, 1) if cls == "Swarm" else (1, 1), np.float32)
    with pytest.raises((ValueError, MemoryError)):
        getattr(_core, cls)([(weights, bias)])


_BOOL_AS_TIME = {
    "MarketBuffer.push": "_core.MarketBuffer(4).push(True, 1.0, 1.0, 1.0, 1.0, 1.0)",
    "Bar": "_core.Bar(True, 1.0, 1.0, 1.0, 1.0, 1.0)",
    "RiskManager.observe": "_core.RiskManager(_core.RiskConfig()).observe(True, 1.0)",
    "PaperExecutor.execute": "_core.PaperExecutor(_core.ExecutionConfig())"
    ".execute(True, 1.0, 1.0, 1.0)",
    "MarketStateStream.update": "_core.MarketStateStream(_core.MarketStateSpec("
    "_core.fracdiff_weights(0.4, 0.0, 8), 5, 5, 3, 2, 60 * 10**9)).update(True, 1.0, 1.0)",
    "find_invalid_ohlcv": "_core.find_invalid_ohlcv(np.zeros(0, np.int64), *[np.zeros(0)] * 5, "
    "newest_timestamp=True)",
    "MarketBuffer capacity": "_core.MarketBuffer(True)",
    "fracdiff_weights window": "_core.fracdiff_weights(0.4, 0.0, True)",
    "tail_risk horizon": "_core.tail_risk(np.zeros(10), 0.95, 'historical', True)",
    "MarketStateSpec bar_ns": "_core.MarketStateSpec(_core.fracdiff_weights(0.4, 0.0, 8), 5, 5, "
    "3, 2, True)",
    "FracDiffStream window": "_core.FracDiffStream(0.4, window=True)",
    "set_max_threads": "_core.set_max_threads(True)",
}


@pytest.mark.fuzz
@pytest.mark.parametrize("call", list(_BOOL_AS_TIME.values()), ids=list(_BOOL_AS_TIME))
def test_a_bool_is_not_a_timestamp_or_size(call: str) -> None:
    from colmena import _core

    with pytest.raises(TypeError):
        eval(call, {"_core": _core, "np": np})


def test_a_window_over_the_weight_limit_is_refused() -> None:
    """Found by bench/reliability.py: a fixed window above MAX_FRACDIFF_WEIGHTS was kept."""
    from colmena import _core

    limit = _core.MAX_FRACDIFF_WEIGHTS
    assert len(_core.fracdiff_weights(0.0, 0.0, limit)) == limit
    with pytest.raises(ValueError, match=r"window must be at most 1000000 weights, got 1000001"):
        _core.fracdiff_weights(0.0, 0.0, limit + 1)
    with pytest.raises(ValueError, match=r"at most 1000000"):
        _core.fracdiff_weights(0.4, 0.0, 2**62)  # refused before reserving
