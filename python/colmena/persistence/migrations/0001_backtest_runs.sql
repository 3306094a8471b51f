-- Backtest runs, their metrics and their executed trades.
CREATE TABLE backtest_runs (
    id               BIGSERIAL PRIMARY KEY,
    idempotency_key  TEXT NOT NULL UNIQUE,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    mode             TEXT NOT NULL,
    out_of_sample    BOOLEAN NOT NULL,
    seed             BIGINT NOT NULL,
    data_file        TEXT NOT NULL,
    data_sha256      TEXT,
    first_bar        TIMESTAMPTZ NOT NULL,
    last_bar         TIMESTAMPTZ NOT NULL,
    config           JSONB NOT NULL,
    metrics          JSONB NOT NULL,
    buy_and_hold     JSONB NOT NULL,
    report           JSONB NOT NULL
);

CREATE TABLE backtest_fills (
    run_id          BIGINT NOT NULL REFERENCES backtest_runs (id) ON DELETE CASCADE,
    seq             INTEGER NOT NULL,
    ts              TIMESTAMPTZ NOT NULL,
    side            TEXT NOT NULL CHECK (side IN ('buy', 'sell')),
    quantity        DOUBLE PRECISION NOT NULL CHECK (quantity > 0),
    price           DOUBLE PRECISION NOT NULL CHECK (price > 0),
    fee             DOUBLE PRECISION NOT NULL CHECK (fee >= 0),
    slippage_cost   DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (run_id, seq)
);

CREATE INDEX backtest_fills_ts ON backtest_fills (ts);
