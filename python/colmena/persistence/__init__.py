"""Persistence: what outlives a process, written atomically and read back with every check.

- :mod:`colmena.persistence.checkpoint`: the codec of :class:`colmena.training.TrainingState`
  (safetensors with a SHA-256 checksum, written atomically, newest valid file loaded, corrupt
  ones skipped).
- :mod:`colmena.persistence.run_folder`: backtest run folders (never a user's file replaced;
  one writer per folder; repaired after a writer is killed; a unique run id in each).
- :mod:`colmena.persistence.records`: run records in PostgreSQL (one row per run id, all or
  nothing; non-finite numbers stored as null with a warning).

The domain packages (data, features, model, risk, execution, training, backtest) never import
this package; it imports them.
"""
