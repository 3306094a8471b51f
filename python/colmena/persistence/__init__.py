"""Persistence: what outlives a process, written atomically and read back with every check.

- :mod:`colmena.persistence.checkpoint`: the codec of :class:`colmena.training.TrainingState`
  (safetensors with a SHA-256 checksum, written atomically, newest valid file loaded, corrupt
  ones skipped).
- :mod:`colmena.persistence.run_folder`: backtest run folders (never a user's file replaced).
- :mod:`colmena.persistence.records`: run records in PostgreSQL (idempotent, all or nothing).

The domain packages (data, features, model, risk, execution, training, backtest) never import
this package; it imports them.
"""
