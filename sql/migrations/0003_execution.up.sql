-- 0003_execution: orders, their lifecycle, fills, position snapshots, risk decisions and market
-- quotes, keeping the seed's column names (`timestamp` is the time column of every table).
--
-- Why not the seed's SQL: on TimescaleDB a unique index of a hypertable must include the
-- partitioning column, so `id uuid PRIMARY KEY` + create_hypertable fails, and a hypertable cannot
-- be the target of a foreign key from another hypertable. The design here:
--
-- * agts.order_ids is a small PLAIN table, one row per order: it holds the global uniqueness of
--   order ids and client_order_ids, and is what fills and order events reference by foreign key.
--   agts.orders (the full, immutable order as placed) is a hypertable whose (id, timestamp,
--   client_order_id, venue, market, side) must match its registry row (composite foreign key), and
--   (id, timestamp) is unique, so there is exactly one orders row per registered id.
-- * A fill must reference a registered order with the same venue, market and side (composite foreign
--   key fills_order_fkey). Fill ids and risk decision ids are unique per (id, timestamp) in the
--   database; that an id is not reused at another timestamp is checked by agts at write time, inside
--   the writing transaction, under a transaction-scoped advisory lock per table (so concurrent agts
--   writers cannot both pass the check).
-- * Status changes are rows of agts.order_events (history); the current state of an order is its
--   latest event (view agts.order_state). agts.orders.status keeps the status the order was stored
--   with.
-- * Vocabularies, positive sizes and prices, non-negative fees and finite numbers are CHECK
--   constraints. ('NaN' compares greater than every number in PostgreSQL, so `x < 'Infinity'` also
--   refuses NaN.)
-- * Market data lives in its own hypertable agts.market_quotes(timestamp, venue, market, bid, ask,
--   mid): a quote is three aligned values at one instant that marks and markouts read together by
--   market and time, so one narrow row per quote beats three metric points joined back together.
--
-- Chunk intervals: 7 days for execution tables (modest volume, one chunk per week keeps retention by
-- drop_chunks cheap), 1 day for quotes.

CREATE TABLE agts.order_ids (
    id              uuid        NOT NULL,
    timestamp       timestamptz NOT NULL,
    client_order_id text        NOT NULL,
    venue           text        NOT NULL,
    market          text        NOT NULL,
    side            text        NOT NULL,
    CONSTRAINT order_ids_pkey PRIMARY KEY (id),
    CONSTRAINT order_ids_client_order_id_key UNIQUE (client_order_id),
    CONSTRAINT order_ids_order_key UNIQUE (id, timestamp, client_order_id, venue, market, side),
    CONSTRAINT order_ids_fill_key UNIQUE (id, venue, market, side)
);
COMMENT ON TABLE agts.order_ids IS
    'one row per order: global uniqueness of id and client_order_id; target of foreign keys';

CREATE TABLE agts.orders (
    id              uuid             NOT NULL,
    timestamp       timestamptz      NOT NULL,
    venue           text             NOT NULL,
    market          text             NOT NULL,
    side            text             NOT NULL,
    order_type      text             NOT NULL,
    price           double precision,
    size            double precision NOT NULL,
    status          text             NOT NULL,
    client_order_id text             NOT NULL,
    CONSTRAINT orders_side_check CHECK (side IN ('buy', 'sell')),
    CONSTRAINT orders_order_type_check CHECK (order_type IN
        ('market', 'limit', 'stop', 'stop_limit', 'take_profit', 'take_profit_limit')),
    CONSTRAINT orders_status_check CHECK (status IN ('pending_new', 'new', 'partially_filled',
        'filled', 'pending_cancel', 'cancelled', 'rejected', 'expired')),
    CONSTRAINT orders_price_check CHECK (price > 0 AND price < 'Infinity'),
    CONSTRAINT orders_limit_price_check CHECK (
        price IS NOT NULL OR order_type NOT IN ('limit', 'stop_limit', 'take_profit_limit')),
    CONSTRAINT orders_size_check CHECK (size > 0 AND size < 'Infinity'),
    CONSTRAINT orders_id_timestamp_key UNIQUE (id, timestamp),
    CONSTRAINT orders_registry_fkey FOREIGN KEY (id, timestamp, client_order_id, venue, market, side)
        REFERENCES agts.order_ids (id, timestamp, client_order_id, venue, market, side)
);
SELECT create_hypertable('agts.orders', by_range('timestamp', INTERVAL '7 days'));
CREATE INDEX orders_market_time_idx ON agts.orders (market, timestamp DESC);

CREATE TABLE agts.order_events (
    timestamp   timestamptz      NOT NULL,
    order_id    uuid             NOT NULL,
    status      text             NOT NULL,
    filled_size double precision,
    reason      text,
    CONSTRAINT order_events_filled_size_check CHECK (filled_size >= 0 AND filled_size < 'Infinity'),
    CONSTRAINT order_events_status_check CHECK (status IN ('pending_new', 'new',
        'partially_filled', 'filled', 'pending_cancel', 'cancelled', 'rejected', 'expired')),
    CONSTRAINT order_events_key UNIQUE (order_id, timestamp, status),
    CONSTRAINT order_events_order_id_fkey FOREIGN KEY (order_id) REFERENCES agts.order_ids (id)
);
SELECT create_hypertable('agts.order_events', by_range('timestamp', INTERVAL '7 days'));
COMMENT ON TABLE agts.order_events IS
    'order status history; the latest event by timestamp is the current state';

CREATE TABLE agts.fills (
    id           uuid             NOT NULL,
    timestamp    timestamptz      NOT NULL,
    order_id     uuid             NOT NULL,
    venue        text             NOT NULL,
    market       text             NOT NULL,
    side         text             NOT NULL,
    price        double precision NOT NULL,
    size         double precision NOT NULL,
    fee          double precision NOT NULL,
    fee_currency text             NOT NULL,
    CONSTRAINT fills_side_check CHECK (side IN ('buy', 'sell')),
    CONSTRAINT fills_price_check CHECK (price > 0 AND price < 'Infinity'),
    CONSTRAINT fills_size_check CHECK (size > 0 AND size < 'Infinity'),
    CONSTRAINT fills_fee_check CHECK (fee >= 0 AND fee < 'Infinity'),
    CONSTRAINT fills_id_timestamp_key UNIQUE (id, timestamp),
    CONSTRAINT fills_order_fkey FOREIGN KEY (order_id, venue, market, side)
        REFERENCES agts.order_ids (id, venue, market, side)
);
SELECT create_hypertable('agts.fills', by_range('timestamp', INTERVAL '7 days'));
CREATE INDEX fills_order_id_idx ON agts.fills (order_id);
CREATE INDEX fills_market_time_idx ON agts.fills (market, timestamp DESC);

CREATE TABLE agts.position_snapshots (
    timestamp       timestamptz      NOT NULL,
    market          text             NOT NULL,
    size            double precision NOT NULL,
    avg_entry_price double precision NOT NULL,
    unrealized_pnl  double precision,
    realized_pnl    double precision,
    CONSTRAINT position_snapshots_size_check CHECK (size > '-Infinity' AND size < 'Infinity'),
    CONSTRAINT position_snapshots_avg_entry_price_check
        CHECK (avg_entry_price >= 0 AND avg_entry_price < 'Infinity'),
    CONSTRAINT position_snapshots_key UNIQUE (market, timestamp)
);
SELECT create_hypertable('agts.position_snapshots', by_range('timestamp', INTERVAL '7 days'));

CREATE TABLE agts.risk_decisions (
    id        uuid        NOT NULL,
    timestamp timestamptz NOT NULL,
    policy    text        NOT NULL,
    decision  text        NOT NULL,
    reason    text,
    details   jsonb,
    market    text,
    order_id  uuid,
    CONSTRAINT risk_decisions_decision_check CHECK (decision IN ('allow', 'deny', 'reduce', 'halt')),
    CONSTRAINT risk_decisions_id_timestamp_key UNIQUE (id, timestamp)
);
SELECT create_hypertable('agts.risk_decisions', by_range('timestamp', INTERVAL '7 days'));
CREATE INDEX risk_decisions_policy_time_idx ON agts.risk_decisions (policy, timestamp DESC);
-- order_id has no foreign key on purpose: a risk check runs before the order exists, and a denied
-- order is never stored.

CREATE TABLE agts.market_quotes (
    timestamp timestamptz      NOT NULL,
    venue     text             NOT NULL,
    market    text             NOT NULL,
    bid       double precision,
    ask       double precision,
    mid       double precision NOT NULL,
    CONSTRAINT market_quotes_bid_check CHECK (bid > 0 AND bid < 'Infinity'),
    CONSTRAINT market_quotes_ask_check CHECK (ask > 0 AND ask < 'Infinity'),
    CONSTRAINT market_quotes_mid_check CHECK (mid > 0 AND mid < 'Infinity'),
    CONSTRAINT market_quotes_crossed_check CHECK (bid <= ask),
    CONSTRAINT market_quotes_key UNIQUE (market, venue, timestamp)
);
SELECT create_hypertable('agts.market_quotes', by_range('timestamp', INTERVAL '1 day'));

-- Current state of every order: the order as placed, its latest status event, and its fills.
CREATE VIEW agts.order_state AS
SELECT o.id, o.timestamp, o.venue, o.market, o.side, o.order_type, o.price, o.size,
       coalesce(e.status, o.status) AS status,
       coalesce(e.timestamp, o.timestamp) AS status_time,
       o.client_order_id,
       coalesce(f.filled_size, 0) AS filled_size,
       f.avg_fill_price,
       coalesce(f.fill_count, 0) AS fill_count
FROM agts.orders o
LEFT JOIN LATERAL (
    SELECT ev.status, ev.timestamp FROM agts.order_events ev
    WHERE ev.order_id = o.id ORDER BY ev.timestamp DESC, ev.status DESC LIMIT 1
) e ON true
LEFT JOIN LATERAL (
    SELECT sum(fl.size) AS filled_size, sum(fl.price * fl.size) / sum(fl.size) AS avg_fill_price,
           count(*) AS fill_count
    FROM agts.fills fl WHERE fl.order_id = o.id
) f ON true;
