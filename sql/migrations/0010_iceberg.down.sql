ALTER TABLE agts.archive_units DROP COLUMN IF EXISTS snapshot_id;
DROP TABLE IF EXISTS agts.iceberg_namespace_properties;
DROP TABLE IF EXISTS agts.iceberg_tables;
