"""Child process for the power-cut test in ``test_checkpoint.py``: saves, and stops where told.

Usage: ``python checkpoint_writer.py DIRECTORY KEEP``

1. imports colmena, prints ``imported`` and waits for one line on stdin naming a step of
   :data:`colmena.checkpoint.SAVE_STEPS` (so the parent can start children ahead of time and pay
   the import cost while another child runs);
2. resumes from ``load_latest(DIRECTORY)`` (generation 0 when there is none) and prints
   ``resumed {generation}``;
3. saves generation g + 1 with ``keep=KEEP``; when the save reports the named step it prints
   ``at {step}`` and waits there (for the parent's SIGKILL) instead of going on. No timing is
   involved: the kill lands exactly at that step of the protocol, on any machine.

Every state encodes its generation g everywhere (:func:`make_generation`), so a checkpoint
assembled from two saves fails :func:`check_generation`.
"""

from __future__ import annotations

import dataclasses
import sys
import time

import numpy as np

from colmena.persistence.checkpoint import NoCheckpointError, load_latest, save
from colmena.training.state import LineageRecord, TrainingState
from helpers import make_state

#: Swarm shape: enough megabytes that a kill often lands while the file is being written.
N_AGENTS = 32
HIDDEN = (64, 64, 64)


def make_generation(g: int) -> TrainingState:
    """A valid training state whose every number is g (float32 holds g exactly for g < 2**24)."""
    state = make_state(
        g, agents=N_AGENTS, hidden=HIDDEN, latent=4, fill=float(g),
        lineage=tuple(LineageRecord(i, (), 0, "init", float(g)) for i in range(max(g, N_AGENTS))),
    )  # fmt: skip
    return dataclasses.replace(state, versions={"writer": str(g)})


def check_generation(state: TrainingState) -> int:
    """Its generation g, after asserting that every part of it says g."""
    g = state.generation
    assert dict(state.versions) == {"writer": str(g)}
    assert len(state.history) == g
    assert all(r.fitness == g for r in state.lineage)
    assert len(state.lineage) == max(g, N_AGENTS)
    assert state.adam is not None
    arrays = {
        "fitness": state.fitness,
        "adam.step": state.adam.step,
        "normalization.mean": state.normalization.mean,
        "vae.mu": state.vae.mu[0],
    }
    for i, (w, b) in enumerate(state.layers):
        arrays[f"layers[{i}]"], arrays[f"layers[{i}] bias"] = w, b
        for moment in ("exp_avg", "exp_avg_sq"):
            mw, mb = getattr(state.adam, moment)[i]
            arrays[f"adam.{moment}[{i}]"], arrays[f"adam.{moment}[{i}] bias"] = mw, mb
    for name, array in arrays.items():
        assert np.all(array == g), f"{name} mixes generations"
    return g


def main() -> None:
    directory, keep = sys.argv[1], int(sys.argv[2])
    print("imported", flush=True)
    stop = sys.stdin.readline().strip()
    if not stop:
        return  # the parent closed our stdin without starting us
    try:
        g = check_generation(load_latest(directory))
    except NoCheckpointError:
        g = 0
    print(f"resumed {g}", flush=True)

    def on_step(name: str) -> None:
        if name == stop:
            print(f"at {name}", flush=True)
            sys.stdin.readline()  # wait here until killed
            time.sleep(60)

    save(directory, make_generation(g + 1), keep=keep, on_step=on_step)
    print("saved", flush=True)


if __name__ == "__main__":
    main()
