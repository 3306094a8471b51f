-- The checkpoints the live services trade, recorded by the recorder service at its start
-- (colmena.services.recorder.Recorder.record_strategies) for every configured symbol, so that
-- `colmena replay-audit` can rebuild a recorded period's decisions from the records alone.
-- model_sha256 is the SHA-256 (hex) of the checkpoint file's bytes, the same digest every
-- recorded signal and decision audit carries (live_signals.model_sha256). Recording is
-- idempotent: a checkpoint already recorded keeps its row (its settings are those of its first
-- recording); a symbol it was not yet recorded for is added to symbols.
CREATE TABLE live_strategies (
    model_sha256    TEXT PRIMARY KEY CHECK (model_sha256 ~ '^[0-9a-f]{64}$'),
    checkpoint      BYTEA NOT NULL,              -- the checkpoint file, byte for byte
    symbols         TEXT[] NOT NULL,             -- the symbols it trades
    -- The live settings it ran under: {"risk": RiskConfig, "execution": ExecutionSettings,
    -- "bar_seconds": int} (the configuration file's [risk], [execution] and bar_seconds).
    settings        JSONB NOT NULL,
    -- The checkpoint's validation: fit bars, selection and gate records (ValidationResult's JSON
    -- form; non-finite numbers as null; {} for a checkpoint without one).
    validation      JSONB NOT NULL,
    first_recorded  TIMESTAMPTZ NOT NULL DEFAULT now()
);
