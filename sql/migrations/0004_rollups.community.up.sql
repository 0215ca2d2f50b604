-- Community edition: the rollups are continuous aggregates with refresh policies, same names and
-- columns as the Apache tables they replace. WITH NO DATA: materializing refuses to run in a
-- transaction; agts.refresh_rollups() and the policies fill them. materialized_only: a query reads
-- the materialization and computes the rest from raw points itself (see agts/query/_rollups.py).
DROP TABLE agts.rollup_1m;
DROP TABLE agts.rollup_1h;

CREATE MATERIALIZED VIEW agts.rollup_1m
WITH (timescaledb.continuous, timescaledb.materialized_only = true) AS
SELECT time_bucket(INTERVAL '1 minute', time) AS bucket, series_id,
       count(*) AS n, sum(value) AS total, min(value) AS mn, max(value) AS mx,
       var_pop(value) * count(*) AS m2,
       min(time) AS first_time, first(value, time) AS first_value,
       max(time) AS last_time, last(value, time) AS last_value
FROM agts.metric_points
GROUP BY 1, 2
WITH NO DATA;

CREATE MATERIALIZED VIEW agts.rollup_1h
WITH (timescaledb.continuous, timescaledb.materialized_only = true) AS
SELECT time_bucket(INTERVAL '1 hour', time) AS bucket, series_id,
       count(*) AS n, sum(value) AS total, min(value) AS mn, max(value) AS mx,
       var_pop(value) * count(*) AS m2,
       min(time) AS first_time, first(value, time) AS first_value,
       max(time) AS last_time, last(value, time) AS last_value
FROM agts.metric_points
GROUP BY 1, 2
WITH NO DATA;

SELECT add_continuous_aggregate_policy('agts.rollup_1m', start_offset => INTERVAL '1 day',
    end_offset => INTERVAL '1 minute', schedule_interval => INTERVAL '1 minute');
SELECT add_continuous_aggregate_policy('agts.rollup_1h', start_offset => INTERVAL '7 days',
    end_offset => INTERVAL '1 hour', schedule_interval => INTERVAL '30 minutes');
