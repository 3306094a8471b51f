"""The fuzz suite's shared budget: how many inputs each fuzzer tries.

Every fuzz test (``tests/test_fuzz_*.py``) decorates itself with :func:`fuzz_settings` and the
``fuzz`` marker. The default run keeps the whole suite to about a minute; ``COLMENA_FUZZ_EXAMPLES``
raises the budget (``COLMENA_FUZZ_EXAMPLES=20000 python -m pytest -m fuzz``), and tests marked
``fuzz_long`` (deselected unless ``-m fuzz_long`` or ``COLMENA_FUZZ_LONG=1``) run the inputs that
need a child process each (crashes, hangs).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

from hypothesis import HealthCheck, settings

#: Environment variable with the number of examples per fuzz test.
EXAMPLES_ENV = "COLMENA_FUZZ_EXAMPLES"
#: Examples per fuzz test in the default run.
DEFAULT_EXAMPLES = 200

F = TypeVar("F", bound=Callable[..., Any])


def fuzz_examples(default: int = DEFAULT_EXAMPLES) -> int:
    """Examples per fuzz test: ``$COLMENA_FUZZ_EXAMPLES`` when set, else ``default``.

    Raises:
        ValueError: the variable is set but is not a positive integer.
    """
    raw = os.environ.get(EXAMPLES_ENV)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{EXAMPLES_ENV}={raw!r} is not an integer") from None
    if value < 1:
        raise ValueError(f"{EXAMPLES_ENV}={raw!r} must be at least 1")
    return value


def fuzz_settings(default: int = DEFAULT_EXAMPLES) -> Callable[[F], F]:
    """Hypothesis settings of a fuzz test: the shared budget, no deadline (shared machines are
    noisy), derandomized so that CI runs the same inputs each time, no database writes."""
    return settings(
        max_examples=fuzz_examples(default),
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
