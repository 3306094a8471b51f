-- Each run is identified by the UUID its run folder was written with (colmena.persistence.run_folder
-- .read_run_id), not by a hash of its report: two different runs with equal metrics are two rows,
-- and recording the same run folder again is a no-op. Rows recorded before this migration keep
-- their report-hash idempotency_key and have no run_uuid.
ALTER TABLE backtest_runs ADD COLUMN run_uuid UUID UNIQUE;
ALTER TABLE backtest_runs ALTER COLUMN idempotency_key DROP NOT NULL;
ALTER TABLE backtest_runs ADD CONSTRAINT backtest_runs_identified
    CHECK (run_uuid IS NOT NULL OR idempotency_key IS NOT NULL);
COMMENT ON COLUMN backtest_runs.run_uuid IS
    'The run''s id from its run folder (.colmena-run); unique per run, not per result';
COMMENT ON COLUMN backtest_runs.idempotency_key IS
    'Before migration 0002: SHA-256 of the report''s config, seed, data and metrics; NULL since';
