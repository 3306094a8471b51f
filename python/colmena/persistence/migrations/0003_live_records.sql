-- Records of the live services (colmena.services.recorder): every message of the wire contract
-- (colmena.live.wire), one row per idempotency key (the Nats-Msg-Id it was published with), so a
-- message delivered twice is recorded once. Each row keeps the message's MessagePack bytes
-- (payload) next to its columns: the exact message, for replaying an incident. Times: ts_ns is
-- the bar's open time in ns since the epoch (exact); bar_open_time the same as a timestamp (us).
CREATE TABLE live_candles (
    msg_key        TEXT PRIMARY KEY,
    symbol         TEXT NOT NULL,
    ts_ns          BIGINT NOT NULL,
    bar_open_time  TIMESTAMPTZ GENERATED ALWAYS AS (to_timestamp(ts_ns / 1e9)) STORED,
    bar_seconds    INTEGER NOT NULL,
    open           DOUBLE PRECISION NOT NULL,
    high           DOUBLE PRECISION NOT NULL,
    low            DOUBLE PRECISION NOT NULL,
    close          DOUBLE PRECISION NOT NULL,
    volume         DOUBLE PRECISION NOT NULL,
    stream_seq     BIGINT NOT NULL,
    recorded_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    payload        BYTEA NOT NULL,
    UNIQUE (symbol, ts_ns)
);

CREATE TABLE live_signals (
    msg_key        TEXT PRIMARY KEY,
    symbol         TEXT NOT NULL,
    ts_ns          BIGINT NOT NULL,
    bar_open_time  TIMESTAMPTZ GENERATED ALWAYS AS (to_timestamp(ts_ns / 1e9)) STORED,
    action         TEXT NOT NULL,
    signal         DOUBLE PRECISION,
    valid          BOOLEAN NOT NULL,
    regime         BIGINT NOT NULL,
    model_sha256   TEXT NOT NULL,
    stream_seq     BIGINT NOT NULL,
    recorded_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    payload        BYTEA NOT NULL
);

-- The risk service's decisions: verdict (the reason), Kelly fraction, target, and the order.
CREATE TABLE live_orders (
    msg_key         TEXT PRIMARY KEY,
    symbol          TEXT NOT NULL,
    ts_ns           BIGINT NOT NULL,
    bar_open_time   TIMESTAMPTZ GENERATED ALWAYS AS (to_timestamp(ts_ns / 1e9)) STORED,
    verdict         TEXT NOT NULL,
    trading_state   TEXT NOT NULL,
    requested       DOUBLE PRECISION NOT NULL,
    target          DOUBLE PRECISION NOT NULL,
    kelly           DOUBLE PRECISION,
    place_order     BOOLEAN NOT NULL,
    order_id        BIGINT,
    order_quantity  DOUBLE PRECISION,
    order_origin    TEXT,
    reduce_only     BOOLEAN,
    stream_seq      BIGINT NOT NULL,
    recorded_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    payload         BYTEA NOT NULL
);

CREATE TABLE live_gates (
    msg_key        TEXT PRIMARY KEY,
    symbol         TEXT NOT NULL,
    ts_ns          BIGINT NOT NULL,
    trading_state  TEXT NOT NULL,
    stream_seq     BIGINT NOT NULL,
    recorded_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    payload        BYTEA NOT NULL
);

-- Execution reports: the fill of the pending order at a bar's open (quantity and price NULL when
-- nothing filled; error says why), and the account after it.
CREATE TABLE live_fills (
    msg_key        TEXT PRIMARY KEY,
    symbol         TEXT NOT NULL,
    ts_ns          BIGINT NOT NULL,
    bar_open_time  TIMESTAMPTZ GENERATED ALWAYS AS (to_timestamp(ts_ns / 1e9)) STORED,
    order_id       BIGINT NOT NULL,
    attempted      DOUBLE PRECISION NOT NULL,
    quantity       DOUBLE PRECISION,
    price          DOUBLE PRECISION,
    fee            DOUBLE PRECISION,
    slippage_cost  DOUBLE PRECISION,
    error          TEXT,
    cash           DOUBLE PRECISION NOT NULL,
    position       DOUBLE PRECISION NOT NULL,
    stream_seq     BIGINT NOT NULL,
    recorded_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    payload        BYTEA NOT NULL
);

-- Round trips closed by a fill (from the execution reports).
CREATE TABLE live_trades (
    msg_key        TEXT NOT NULL REFERENCES live_fills (msg_key) ON DELETE CASCADE,
    seq            INTEGER NOT NULL,
    symbol         TEXT NOT NULL,
    open_ts_ns     BIGINT NOT NULL,
    close_ts_ns    BIGINT NOT NULL,
    side           INTEGER NOT NULL,
    pnl            DOUBLE PRECISION NOT NULL,
    quantity       DOUBLE PRECISION NOT NULL,
    entry_price    DOUBLE PRECISION NOT NULL,
    exit_price     DOUBLE PRECISION NOT NULL,
    fees           DOUBLE PRECISION NOT NULL,
    borrow         DOUBLE PRECISION NOT NULL,
    exit_origin    TEXT NOT NULL,
    PRIMARY KEY (msg_key, seq)
);

CREATE TABLE live_accounts (
    msg_key        TEXT PRIMARY KEY,
    symbol         TEXT NOT NULL,
    ts_ns          BIGINT NOT NULL,
    bar_open_time  TIMESTAMPTZ GENERATED ALWAYS AS (to_timestamp(ts_ns / 1e9)) STORED,
    mark           DOUBLE PRECISION NOT NULL,
    cash           DOUBLE PRECISION NOT NULL,
    position       DOUBLE PRECISION NOT NULL,
    equity         DOUBLE PRECISION NOT NULL,
    stream_seq     BIGINT NOT NULL,
    recorded_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    payload        BYTEA NOT NULL
);

CREATE TABLE live_audit (
    msg_key        TEXT PRIMARY KEY,
    symbol         TEXT NOT NULL,
    ts_ns          BIGINT NOT NULL,
    model_sha256   TEXT NOT NULL,
    action         TEXT NOT NULL,
    signal         DOUBLE PRECISION,
    regime         BIGINT NOT NULL,
    agent_signals  DOUBLE PRECISION[] NOT NULL,
    verdict        TEXT NOT NULL,
    stream_seq     BIGINT NOT NULL,
    recorded_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    payload        BYTEA NOT NULL
);

CREATE TABLE live_events (
    msg_key        TEXT PRIMARY KEY,
    symbol         TEXT NOT NULL,
    ts_ns          BIGINT NOT NULL,
    seq            INTEGER NOT NULL,
    event_type     TEXT NOT NULL,
    code           INTEGER NOT NULL,
    code_name      TEXT NOT NULL,
    value          DOUBLE PRECISION NOT NULL,
    stream_seq     BIGINT NOT NULL,
    recorded_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    payload        BYTEA NOT NULL
);

CREATE INDEX live_signals_symbol_ts ON live_signals (symbol, ts_ns);
CREATE INDEX live_orders_symbol_ts ON live_orders (symbol, ts_ns);
CREATE INDEX live_fills_symbol_ts ON live_fills (symbol, ts_ns);
CREATE INDEX live_accounts_symbol_ts ON live_accounts (symbol, ts_ns);
CREATE INDEX live_audit_symbol_ts ON live_audit (symbol, ts_ns);
CREATE INDEX live_events_symbol_ts ON live_events (symbol, ts_ns);
