-- 0004_rollups: 1-minute and 1-hour rollups of agts.metric_points, the same columns on both editions.
--
-- One row per (bucket, series_id): n (points), total (sum), mn, mx, m2 (sum of squared deviations
-- from the row's mean: var_pop * n, which combines exactly into coarser buckets and keeps stddev
-- accurate where a sum of squares would cancel), and the first/last value with their times.
-- Buckets are time_bucket(width, time): aligned to UTC midnight, so also to the Unix epoch.
--
-- Apache edition (this file): plain hypertables that agts refreshes incrementally
-- (StorageEngine.refresh_rollups): everything from the watermark up to the current bucket, plus the
-- buckets touched by ingest batches (agts.ingest_batches, the ledger) that the rollup has not seen
-- yet, i.e. late-arriving points. Community edition (0004_rollups.community.up.sql): the same names
-- become continuous aggregates with refresh policies; agts refreshes the ledger's ranges the same way.
--
-- agts.rollup_state: per rollup, the watermark (buckets before it were materialized) and when the
-- last refresh ran. agts.rollup_seen_batches: the ledger batches a rollup has taken in; a query
-- computes the buckets of unseen batches (and everything after the watermark) from raw points, so
-- a rollup-backed answer always equals the raw computation.

CREATE TABLE agts.rollup_1m (
    bucket      timestamptz      NOT NULL,
    series_id   integer          NOT NULL,
    n           bigint           NOT NULL,
    total       double precision NOT NULL,
    mn          double precision NOT NULL,
    mx          double precision NOT NULL,
    m2          double precision NOT NULL,
    first_time  timestamptz      NOT NULL,
    first_value double precision NOT NULL,
    last_time   timestamptz      NOT NULL,
    last_value  double precision NOT NULL
);
SELECT create_hypertable('agts.rollup_1m', by_range('bucket', INTERVAL '7 days'));
CREATE UNIQUE INDEX rollup_1m_series_id_bucket_key ON agts.rollup_1m (series_id, bucket);
COMMENT ON TABLE agts.rollup_1m IS 'per (1-minute bucket, series): count, sum, min, max, m2, first, last';

CREATE TABLE agts.rollup_1h (LIKE agts.rollup_1m);
SELECT create_hypertable('agts.rollup_1h', by_range('bucket', INTERVAL '90 days'));
CREATE UNIQUE INDEX rollup_1h_series_id_bucket_key ON agts.rollup_1h (series_id, bucket);
COMMENT ON TABLE agts.rollup_1h IS 'per (1-hour bucket, series): count, sum, min, max, m2, first, last';

CREATE TABLE agts.rollup_state (
    rollup       text        PRIMARY KEY,
    width        interval    NOT NULL,
    watermark    timestamptz,
    refreshed_at timestamptz,
    CONSTRAINT rollup_state_rollup_check CHECK (rollup IN ('rollup_1m', 'rollup_1h'))
);
INSERT INTO agts.rollup_state (rollup, width) VALUES
    ('rollup_1m', INTERVAL '1 minute'), ('rollup_1h', INTERVAL '1 hour');
COMMENT ON TABLE agts.rollup_state IS 'per rollup: buckets before watermark are materialized';

CREATE TABLE agts.rollup_seen_batches (
    rollup      text        NOT NULL REFERENCES agts.rollup_state (rollup),
    batch_id    uuid        NOT NULL,
    ingested_at timestamptz NOT NULL,
    PRIMARY KEY (rollup, batch_id)
);
CREATE INDEX rollup_seen_batches_ingested_at_idx ON agts.rollup_seen_batches (ingested_at);
COMMENT ON TABLE agts.rollup_seen_batches IS 'ledger batches already taken into each rollup';
