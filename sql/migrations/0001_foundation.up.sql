-- The TimescaleDB extension, in schema public so that every role finds time_bucket() and friends
-- on the default search path (without WITH SCHEMA it would land in "$user", which is the agts
-- schema when the migrating role is called agts). The agts schema and agts.schema_migrations are
-- created by the migration runner itself before any migration runs.
CREATE EXTENSION IF NOT EXISTS timescaledb WITH SCHEMA public;
