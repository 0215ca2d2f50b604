DROP INDEX IF EXISTS agts.metric_points_time_brin;
CREATE INDEX IF NOT EXISTS metric_points_time_idx ON agts.metric_points (time DESC);
