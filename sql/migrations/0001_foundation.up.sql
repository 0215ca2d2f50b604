-- The TimescaleDB extension. The agts schema and agts.schema_migrations are created by the
-- migration runner itself before any migration runs.
CREATE EXTENSION IF NOT EXISTS timescaledb;
