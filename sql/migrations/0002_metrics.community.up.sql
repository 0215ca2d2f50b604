-- Columnstore (compression) for metric points on the Community edition: one segment per series,
-- ordered by time, so a compressed chunk still answers "one series, a time range" by segment.
-- The compression policy itself (compress after retention.compression_after_days) is set by agts'
-- retention code from the config.
ALTER TABLE agts.metric_points SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'series_id',
    timescaledb.compress_orderby = 'time DESC'
);
