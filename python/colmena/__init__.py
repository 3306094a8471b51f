"""colmena: a swarm of neural trading agents for crypto markets, with a compiled C++/CUDA core.

The compiled core lives in the private module ``colmena._core``; everything public is re-exported
here. See ``build_info()`` for what this build contains.
"""

from __future__ import annotations

from typing import Any

from colmena import _core, checkpoint
from colmena.buffer import CandleWindow, MarketBuffer
from colmena.data import Candles, DataValidationError, GapReport, load_ohlcv
from colmena.features import (
    FracDiffStream,
    MinFfdResult,
    fracdiff,
    fracdiff_expanding,
    fracdiff_fft_crossover,
    fracdiff_weights,
    log_returns,
    min_ffd_d,
)
from colmena.nn import MLP, Swarm, VAEEncoder
from colmena.swarm import SwarmModel, consensus

__version__: str = str(_core.build_info()["version"])


def build_info() -> dict[str, Any]:
    """What this build of the core contains and what it runs on.

    Returns
    -------
    dict
        ``version``; ``compiler``; ``build_type``; ``backends`` (``["cpu"]``, plus ``"cuda"``
        when built with ``COLMENA_CUDA=ON``); ``simd_compiled`` (kernel variants compiled in:
        ``"baseline"``, ``"avx2"``, ``"avx512"``); ``simd_supported`` (those this CPU runs);
        ``simd_selected`` (the one in use; cap it with the environment variable
        ``COLMENA_SIMD``); ``native_build`` (built with ``COLMENA_NATIVE=ON``);
        ``cuda_toolkit`` and ``cuda_architectures`` (None without CUDA); ``hardware_threads``
        and ``max_threads`` (threads the core uses; cap with ``COLMENA_NUM_THREADS``);
        ``cuda_devices`` (list of dicts: name, compute capability, memory in bytes).
    """
    info = dict(_core.build_info())
    info["cuda_devices"] = list(_core.cuda_devices())
    return info


def cuda_available() -> bool:
    """True only when colmena was built with CUDA (``COLMENA_CUDA=ON``) and a device is visible."""
    return "cuda" in _core.build_info()["backends"] and _core.cuda_device_count() > 0


__all__ = [
    "MLP",
    "CandleWindow",
    "Candles",
    "DataValidationError",
    "FracDiffStream",
    "GapReport",
    "MarketBuffer",
    "MinFfdResult",
    "Swarm",
    "SwarmModel",
    "VAEEncoder",
    "__version__",
    "build_info",
    "checkpoint",
    "consensus",
    "cuda_available",
    "fracdiff",
    "fracdiff_expanding",
    "fracdiff_fft_crossover",
    "fracdiff_weights",
    "load_ohlcv",
    "log_returns",
    "min_ffd_d",
]
