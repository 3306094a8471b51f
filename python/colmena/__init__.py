"""colmena: a swarm of neural trading agents for crypto markets, with a compiled C++/CUDA core."""

from __future__ import annotations

from colmena import _core

__version__: str = _core.build_info()["version"]


def build_info() -> dict[str, object]:
    """What this build contains: backends, SIMD variants compiled and selected, CUDA toolkit."""
    return dict(_core.build_info())


def cuda_available() -> bool:
    """True only when colmena was built with CUDA (``COLMENA_CUDA=ON``) and a device is visible."""
    return "cuda" in _core.build_info()["backends"] and _core.cuda_device_count() > 0


__all__ = ["__version__", "build_info", "cuda_available"]
