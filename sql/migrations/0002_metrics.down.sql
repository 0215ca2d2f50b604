DROP VIEW IF EXISTS agts.metrics;
DROP TABLE IF EXISTS agts.ingest_batches;
DROP TABLE IF EXISTS agts.metric_points;
DROP TABLE IF EXISTS agts.series;
