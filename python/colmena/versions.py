"""Versions of Python and of the libraries behind a result (recorded in checkpoints and reports)."""

from __future__ import annotations

import contextlib
import importlib.metadata
import platform

__all__ = ["library_versions"]


def library_versions() -> dict[str, str]:
    """Versions of Python and of the libraries a checkpoint depends on, for provenance records.

    Returns
    -------
    dict of str to str
        ``python``, ``colmena``, ``numpy``, ``safetensors``, and ``torch`` when installed (read
        from the package metadata; torch is not imported).
    """
    versions = {"python": platform.python_version()}
    # key -> distribution name (colmena is distributed as colmena-swarm)
    for name, distribution in (
        ("colmena", "colmena-swarm"),
        ("numpy", "numpy"),
        ("safetensors", "safetensors"),
        ("torch", "torch"),
    ):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[name] = importlib.metadata.version(distribution)
    return versions
