-- 0010_iceberg: the cold tier becomes Apache Iceberg tables, catalogued in this database.
--
-- Why: engines past one machine (Spark, Trino, Flink) need a table to attach, not a folder layout
-- agts invented. Iceberg's JDBC catalog keeps one row per table pointing at its current metadata
-- file; pyiceberg's SQL catalog uses the same two tables, so agts (pyiceberg) and a Spark or Trino
-- cluster (the Java JDBC catalog, `currentSchema=agts`) share one catalog. Committing a new
-- metadata file and swapping this pointer is the atomic step that makes an archived range visible.
--
-- The column layout is the JDBC catalog's (version 1, with iceberg_type). agts names its catalog
-- 'agts' and its namespace 'agts'; each archived table is agts.<name> (metrics, orders, ...).

CREATE TABLE agts.iceberg_tables (
    catalog_name               varchar(255)  NOT NULL,
    table_namespace            varchar(255)  NOT NULL,
    table_name                 varchar(255)  NOT NULL,
    metadata_location          varchar(1000),
    previous_metadata_location varchar(1000),
    iceberg_type               varchar(5),
    CONSTRAINT iceberg_tables_pkey PRIMARY KEY (catalog_name, table_namespace, table_name)
);
COMMENT ON TABLE agts.iceberg_tables IS
    'Iceberg catalog (JDBC layout): the current metadata file of each cold-tier table';

CREATE TABLE agts.iceberg_namespace_properties (
    catalog_name   varchar(255)  NOT NULL,
    namespace      varchar(255)  NOT NULL,
    property_key   varchar(255)  NOT NULL,
    property_value varchar(1000),
    CONSTRAINT iceberg_namespace_properties_pkey PRIMARY KEY (catalog_name, namespace, property_key)
);
COMMENT ON TABLE agts.iceberg_namespace_properties IS 'Iceberg catalog (JDBC layout): namespaces';

-- The snapshot that made a unit's files visible (NULL: never committed; its files may then be
-- deleted when the unit is exported again, since no snapshot refers to them).
ALTER TABLE agts.archive_units ADD COLUMN snapshot_id bigint;
COMMENT ON COLUMN agts.archive_units.snapshot_id IS
    'the Iceberg snapshot that last committed this unit''s files (NULL: never committed)';
