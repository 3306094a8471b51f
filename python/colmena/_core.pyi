"""Type stub of colmena's compiled core (private; use the colmena package)."""

from typing import Any

import numpy as np
from numpy.typing import NDArray

# ---------------------------------------------------------------- build and device information

def build_info() -> dict[str, Any]: ...
def cuda_device_count() -> int: ...
def cuda_devices() -> list[dict[str, Any]]: ...
def set_simd_level(name: str) -> None: ...
def set_max_threads(n: int) -> None: ...
def max_threads() -> int: ...

# ---------------------------------------------------------------- OHLCV validation

class OhlcvViolation:
    @property
    def row(self) -> int: ...
    @property
    def field(self) -> str: ...
    @property
    def rule(self) -> str: ...
    @property
    def value(self) -> int | float: ...
    @property
    def message(self) -> str: ...
    @property
    def detail(self) -> str: ...

def find_invalid_ohlcv(
    ts: NDArray[np.int64],
    open: NDArray[np.float64],
    high: NDArray[np.float64],
    low: NDArray[np.float64],
    close: NDArray[np.float64],
    volume: NDArray[np.float64],
    newest_timestamp: int | None = None,
) -> OhlcvViolation | None: ...

# ---------------------------------------------------------------- MarketBuffer

class MarketBuffer:
    def __init__(self, capacity: int, storage: str = "auto") -> None: ...
    @property
    def capacity(self) -> int: ...
    @property
    def ring_slots(self) -> int: ...
    @property
    def is_full(self) -> bool: ...
    @property
    def storage(self) -> str: ...
    @property
    def newest_timestamp(self) -> int | None: ...
    def __len__(self) -> int: ...
    def push(
        self, ts: int, open: float, high: float, low: float, close: float, volume: float
    ) -> None: ...
    def extend(
        self,
        ts: NDArray[np.int64],
        open: NDArray[np.float64],
        high: NDArray[np.float64],
        low: NDArray[np.float64],
        close: NDArray[np.float64],
        volume: NDArray[np.float64],
        *,
        caller: str = "MarketBuffer.extend",
    ) -> None: ...
    def last(
        self, n: int, copy: bool = False
    ) -> tuple[
        NDArray[np.int64],
        NDArray[np.float64],
        NDArray[np.float64],
        NDArray[np.float64],
        NDArray[np.float64],
        NDArray[np.float64],
    ]: ...
    def clear(self) -> None: ...
