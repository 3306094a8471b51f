-- The account's risk state after every bar's close (colmena.live.wire.RiskStateMessage, kind
-- risk_state), recorded like every message of the wire contract (migration 0003): one row per
-- idempotency key (v1.risk_state.<symbol>.<ts>), so a message delivered twice is recorded once,
-- with the message's MessagePack bytes (payload) next to the columns for querying. Units as in
-- the message: equities in the quote currency, drawdowns and daily_pnl as fractions, times in ns
-- since the epoch (UTC); ts_ns is the bar's open time, the state is the one after its close.
CREATE TABLE live_risk_state (
    msg_key             TEXT PRIMARY KEY,
    symbol              TEXT NOT NULL,
    ts_ns               BIGINT NOT NULL,
    bar_open_time       TIMESTAMPTZ GENERATED ALWAYS AS (to_timestamp(ts_ns / 1e9)) STORED,
    trading_state       TEXT NOT NULL,             -- ACTIVE, REDUCING, PAUSED or HALTED
    halted              BOOLEAN NOT NULL,          -- the kill switch or an operator HALTED it
    equity              DOUBLE PRECISION NOT NULL, -- at the close
    peak_equity         DOUBLE PRECISION NOT NULL, -- the circuit-breaker ladder's reference
    drawdown            DOUBLE PRECISION NOT NULL, -- from peak_equity
    high_equity         DOUBLE PRECISION NOT NULL, -- all-time high
    drawdown_from_high  DOUBLE PRECISION NOT NULL,
    ladder_level        INTEGER NOT NULL,          -- 0..3
    paused_until_ns     BIGINT NOT NULL,           -- end of the current or last pause; 0: none
    daily_pnl           DOUBLE PRECISION NOT NULL, -- fraction of day_start_equity
    day_start_equity    DOUBLE PRECISION NOT NULL,
    bar_volatility      DOUBLE PRECISION NOT NULL, -- sqrt of the EWMA variance of bar log returns
    volatility_returns  BIGINT NOT NULL,           -- returns in that estimate
    kelly_fraction      DOUBLE PRECISION,          -- NULL: none (pass-through mode)
    kelly_round_trips   INTEGER NOT NULL,          -- round trips in the Kelly window
    stream_seq          BIGINT NOT NULL,
    recorded_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    payload             BYTEA NOT NULL
);

CREATE INDEX live_risk_state_symbol_ts ON live_risk_state (symbol, ts_ns);
-- Dashboards and alerts look for the bars of a HALT.
CREATE INDEX live_risk_state_halted ON live_risk_state (symbol, ts_ns) WHERE halted;
