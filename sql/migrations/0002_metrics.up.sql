-- 0002_metrics: metric points stored as series + narrow points, and the seed's `metrics` as a view.
--
-- Why not the seed's table (timestamp, metric_name, value, labels jsonb + GIN index): every point
-- then carries and parses its own JSONB and feeds a GIN index, which caps ingest near 90k points/s on
-- the server alone. Here labels are stored once per series (agts.series) and each point is a narrow
-- row (time, series_id, value): the server takes ~200k points/s through COPY with the (series_id,
-- time) index, ~330k/s when a batch arrives sorted by (series_id, time).
--
-- * agts.series: one row per (metric_name, labels). New series are registered in bulk by agts
--   before their points are copied. The GIN index serves label filters ("labels @> '{...}'").
-- * agts.metric_points: a hypertable on time (1-day chunks; ingestion.chunk_interval from the
--   config is applied by agts on first use). The unique (series_id, time) index is the point key
--   that makes retries idempotent (one value per series and microsecond), and the index that serves
--   "one series, a time range". There is no foreign key to agts.series: it would cost a lookup per
--   point during COPY, and agts only writes series ids it has just read from agts.series.
-- * agts.ingest_batches: the ledger, one row per committed batch, written in the same transaction
--   as the batch's points by every write path. A batch id found here was stored: sending it again is
--   a no-op. min_time/max_time/ingested_at also tell rollups which time ranges changed.
-- * agts.metrics: the seed's columns as a view, for ad-hoc SQL.

CREATE TABLE agts.series (
    series_id   integer     GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    metric_name text        NOT NULL,
    labels      jsonb       NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT series_metric_name_labels_key UNIQUE (metric_name, labels),
    CONSTRAINT series_metric_name_check CHECK (metric_name <> ''),
    CONSTRAINT series_labels_check CHECK (jsonb_typeof(labels) = 'object')
);
CREATE INDEX series_labels_idx ON agts.series USING gin (labels jsonb_path_ops);
COMMENT ON TABLE agts.series IS 'one row per (metric_name, labels): labels are stored once per series';

CREATE TABLE agts.metric_points (
    time      timestamptz      NOT NULL,
    series_id integer          NOT NULL,
    value     double precision NOT NULL
);
SELECT create_hypertable('agts.metric_points', by_range('time', INTERVAL '1 day'));
CREATE UNIQUE INDEX metric_points_series_id_time_key ON agts.metric_points (series_id, time);
COMMENT ON TABLE agts.metric_points IS 'metric points: one value per (series_id, time)';

CREATE TABLE agts.ingest_batches (
    batch_id    uuid        PRIMARY KEY,
    rows        integer     NOT NULL,
    duplicates  integer     NOT NULL DEFAULT 0,
    min_time    timestamptz,
    max_time    timestamptz,
    method      text        NOT NULL DEFAULT 'copy',
    ingested_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT ingest_batches_method_check CHECK (method IN ('copy', 'merge')),
    CONSTRAINT ingest_batches_time_check CHECK (min_time <= max_time)
);
CREATE INDEX ingest_batches_ingested_at_idx ON agts.ingest_batches (ingested_at);
COMMENT ON TABLE agts.ingest_batches IS
    'ingest ledger: one row per committed batch of metric points (idempotency and rollup invalidation)';

CREATE VIEW agts.metrics AS
SELECT p.time AS "timestamp", s.metric_name, p.value, s.labels
FROM agts.metric_points AS p
JOIN agts.series AS s USING (series_id);
COMMENT ON VIEW agts.metrics IS 'the seed''s metrics table: (timestamp, metric_name, value, labels)';
