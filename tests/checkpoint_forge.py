"""Crafted checkpoint files for the hardening tests (``test_checkpoint.py``,
``test_fuzz_checkpoint.py``).

* :func:`forged_bytes` / :func:`forge`: a state's file with its tensors or its metadata changed
  and the checksum computed again, so that the framing and the checksum pass and only the
  codec's own checks (types, limits, :meth:`TrainingState.validate`) can catch what is wrong.
* :func:`frame`, :func:`split`: raw safetensors framing (an 8-byte little-endian header length,
  the JSON header padded with spaces, the tensor bytes), for headers that no writer produces
  (``1e999`` offsets, deep nesting, repeated keys).
* :func:`synthetic_candles`, :func:`candle_csv`: a few hundred candles for a short backtest.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import safetensors.numpy

from colmena.data.ohlcv import Candles, GapReport
from colmena.persistence import checkpoint as checkpoint_module
from colmena.training.state import TrainingState

#: 2024-01-01 00:00 UTC, in ns since the epoch.
START_NS = 1_704_067_200_000_000_000

Tensors = dict[str, np.ndarray]
Meta = dict[str, Any]


def parts(state: TrainingState) -> tuple[Tensors, Meta]:
    """The tensors and the metadata (the ``state`` JSON parsed: dicts, lists, str, int, float,
    bool, None) a save would write."""
    tensors = dict(checkpoint_module._state_tensors(state))
    meta = json.loads(checkpoint_module._canonical_json(msgspec.to_builtins(
        checkpoint_module._state_meta(state)
    )))  # fmt: skip
    return tensors, meta


def signed(tensors: Tensors, meta: Meta | str) -> bytes:
    """A safetensors file of ``tensors`` whose metadata holds ``meta`` (builtins, or JSON text
    taken as is) and a checksum that matches both."""
    arrays = {k: np.ascontiguousarray(a) for k, a in tensors.items()}
    meta_json = meta if isinstance(meta, str) else checkpoint_module._canonical_json(meta)
    header = {
        "format": "colmena-checkpoint",
        "format_version": "2",
        "state": meta_json,
        "sha256": checkpoint_module._digest("2", meta_json, arrays),
    }
    return bytes(safetensors.numpy.save(arrays, metadata=header))


def forged_bytes(
    state: TrainingState,
    *,
    tensors: Callable[[Tensors], object] = lambda t: None,
    meta: Callable[[Meta], object] = lambda m: None,
    meta_json: Callable[[str], str] | None = None,
) -> bytes:
    """``state``'s file with ``tensors`` and ``meta`` applied in place to its parts (and
    ``meta_json`` to the JSON text), re-signed."""
    t, m = parts(state)
    tensors(t)
    meta(m)
    text = checkpoint_module._canonical_json(m)
    return signed(t, meta_json(text) if meta_json is not None else text)


def forge(path: Path, state: TrainingState, **changes: Any) -> Path:
    """Write :func:`forged_bytes` to ``path`` (parents created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(forged_bytes(state, **changes))
    return path


def split(data: bytes) -> tuple[dict[str, Any], bytes]:
    """The parsed JSON header and the tensor bytes of a well-formed file."""
    size = int.from_bytes(data[:8], "little")
    return json.loads(data[8 : 8 + size]), data[8 + size :]


def frame(header: dict[str, Any] | str | bytes, payload: bytes) -> bytes:
    """A file with this header (a dict, or JSON text taken as is) and these tensor bytes; the
    header is padded with spaces to a multiple of 8 bytes, as safetensors writes it."""
    if isinstance(header, dict):
        header = json.dumps(header, separators=(",", ":"))
    text = header.encode() if isinstance(header, str) else header
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + payload


def synthetic_candles(n: int, seed: int = 0) -> Candles:
    """``n`` one-minute candles of a random walk from 2024-01-01 (for short backtests)."""
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 2e-3, size=n)))
    open_ = np.concatenate([[close[0]], close[:-1]])
    ts = START_NS + np.arange(n, dtype=np.int64) * 60_000_000_000
    return Candles(
        ts=ts,
        open=open_,
        high=np.maximum(open_, close) * 1.001,
        low=np.minimum(open_, close) * 0.999,
        close=close,
        volume=rng.uniform(1, 10, size=n),
        source=Path("synthetic"),
        interval_seconds=60.0,
        gaps=GapReport.from_timestamps(ts, 60.0),
    )


def candle_csv(path: Path, candles: Candles) -> Path:
    """``candles`` as a CSV file that ``colmena backtest`` reads."""
    rows = ["open_time,open,high,low,close,volume"]
    for i, ts in enumerate(candles.ts.tolist()):
        when = datetime.fromtimestamp(ts / 1e9, tz=timezone.utc).isoformat(sep=" ")
        values = (candles.open, candles.high, candles.low, candles.close, candles.volume)
        rows.append(",".join([when, *(repr(float(column[i])) for column in values)]))
    path.write_text("\n".join(rows) + "\n")
    return path
