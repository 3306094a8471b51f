"""colmena: a swarm of neural trading agents for crypto markets, with a compiled C++/CUDA core.

The compiled core lives in the private module ``colmena._core``; the most used names are
re-exported here. See ``build_info()`` for what this build contains.

The package mirrors the pipeline, one subpackage per stage, each importing only the ones above it
in this list: ``units`` and ``atomic_write`` (shared helpers) -> ``data`` (candles) ->
``features`` (market state, FFD, regimes) -> ``model`` (VAE, agents, consensus) -> ``risk``
(sizing, limits, breakers) -> ``execution`` (orders to fills) -> ``analysis`` (metrics) ->
``training`` (evolution, validation gate) -> ``backtest`` (walk-forward) -> ``report`` (tear
sheet) -> ``persistence`` (checkpoints, run folders, records) -> ``cli``.
"""

from __future__ import annotations

from typing import Any

from colmena import _core
from colmena.data import (
    Candles,
    CandleWindow,
    DataValidationError,
    GapReport,
    MarketBuffer,
    load_ohlcv,
)
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
from colmena.model import MLP, Swarm, SwarmModel, VAEEncoder, consensus
from colmena.persistence import checkpoint

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
