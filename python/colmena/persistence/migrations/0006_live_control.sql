-- Control actions and reconciliations (colmena.live.wire.ControlMessage, kind control, and
-- ReconciliationMessage, kind reconciliation), recorded like every message of the wire contract
-- (migration 0003): one row per idempotency key, with the message's MessagePack bytes (payload).
-- live_control is the audit of every control action: who (operator), when (requested_ns, the
-- requester's clock; recorded_at, the recorder's), why (reason), and the bar it applies from
-- (ts_ns, that bar's open time). Times in ns since the epoch (UTC).
CREATE TABLE live_control (
    msg_key          TEXT PRIMARY KEY,
    symbol           TEXT NOT NULL,
    ts_ns            BIGINT NOT NULL,
    bar_open_time    TIMESTAMPTZ GENERATED ALWAYS AS (to_timestamp(ts_ns / 1e9)) STORED,
    action           TEXT NOT NULL,             -- pause, resume, flatten, halt or reset
    request_id       TEXT NOT NULL,             -- shared by the symbols of one request
    operator         TEXT NOT NULL,             -- who; "reconciliation" for its pauses
    reason           TEXT NOT NULL,             -- why
    requested_ns     BIGINT NOT NULL,           -- when
    requested_at     TIMESTAMPTZ GENERATED ALWAYS AS (to_timestamp(requested_ns / 1e9)) STORED,
    account          BOOLEAN NOT NULL,          -- a reset of the account's kill switch
    stream_seq       BIGINT NOT NULL,
    recorded_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    payload          BYTEA NOT NULL
);

CREATE INDEX live_control_symbol_ts ON live_control (symbol, ts_ns);

-- The reconciliations of a real venue: positions (signed base units) and open orders at the
-- venue and in the records, and whether they differ beyond the tolerance.
CREATE TABLE live_reconciliation (
    msg_key               TEXT PRIMARY KEY,
    symbol                TEXT NOT NULL,
    ts_ns                 BIGINT NOT NULL,     -- the newest bar finished at the check
    checked_ns            BIGINT NOT NULL,     -- when the venue was asked
    checked_at            TIMESTAMPTZ GENERATED ALWAYS AS (to_timestamp(checked_ns / 1e9)) STORED,
    venue_position        DOUBLE PRECISION NOT NULL,
    recorded_position     DOUBLE PRECISION NOT NULL,
    venue_open_orders     INTEGER NOT NULL,
    recorded_open_orders  INTEGER NOT NULL,
    difference            BOOLEAN NOT NULL,
    detail                TEXT NOT NULL,
    stream_seq            BIGINT NOT NULL,
    recorded_at           TIMESTAMPTZ NOT NULL DEFAULT now(),
    payload               BYTEA NOT NULL
);

CREATE INDEX live_reconciliation_symbol_ts ON live_reconciliation (symbol, ts_ns);
CREATE INDEX live_reconciliation_difference ON live_reconciliation (symbol, checked_ns)
    WHERE difference;
