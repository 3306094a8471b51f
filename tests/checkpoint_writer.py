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

Every checkpoint encodes its generation g everywhere (:func:`make_generation`), so a checkpoint
assembled from two saves fails :func:`check_generation`.
"""

from __future__ import annotations

import itertools
import sys
import time

import numpy as np

from colmena.persistence.checkpoint import (
    Checkpoint,
    LineageRecord,
    NoCheckpointError,
    load_latest,
    save,
)

#: Swarm shape: enough megabytes that a kill often lands while the file is being written.
N_AGENTS = 32
WIDTHS = (64, 64, 64, 8)


def make_generation(g: int) -> Checkpoint:
    """A valid checkpoint whose every number is g (float32 holds g exactly for g < 2**24)."""
    tensors: dict[str, np.ndarray] = {}
    for i, (n_in, n_out) in enumerate(itertools.pairwise(WIDTHS)):
        for kind, shape in (("weight", (N_AGENTS, n_in, n_out)), ("bias", (N_AGENTS, n_out))):
            tensors[f"swarm/layer{i}/{kind}"] = np.full(shape, g, dtype=np.float32)
            for moment in ("exp_avg", "exp_avg_sq"):
                tensors[f"adam/layer{i}/{kind}/{moment}"] = np.full(shape, g, dtype=np.float32)
    tensors["adam/step"] = np.full(N_AGENTS, g, dtype=np.int64)
    tensors["fitness"] = np.full(N_AGENTS, g, dtype=np.float64)
    for name in ("entropy", "best_fitness", "median_fitness"):
        tensors[f"history/{name}"] = np.full(g, g, dtype=np.float64)
    lineage = tuple(LineageRecord(i, (), 0, "init", float(g)) for i in range(g))
    return Checkpoint(
        generation=g,
        epoch=g,
        tensors=tensors,
        lineage=lineage,
        config={"generation": g},
        versions={"writer": str(g)},
    )


def check_generation(checkpoint: Checkpoint) -> int:
    """Its generation g, after asserting that every part of it says g."""
    g = checkpoint.generation
    assert checkpoint.epoch == g
    assert checkpoint.config == {"generation": g}
    assert dict(checkpoint.versions) == {"writer": str(g)}
    assert len(checkpoint.lineage) == g
    assert all(r.fitness == g and r.agent_id == i for i, r in enumerate(checkpoint.lineage))
    assert set(checkpoint.tensors) == set(make_generation(0).tensors)
    for name, array in checkpoint.tensors.items():
        expected_size = g if name.startswith("history/") else array.size
        assert array.size == expected_size, name
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
