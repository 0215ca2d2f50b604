-- 0005_archive: the manifest of the Parquet cold tier.
--
-- The unit of archiving is one chunk's time range of one hypertable (agts.archive_units). A unit
-- moves through a small state machine, one committed step at a time, so a run that crashes between
-- any two steps is finished (or redone) by the next run without losing or duplicating a row:
--
--   exporting  a run has claimed the unit; its files may be missing, partial (temp names) or done
--   exported   every file is written under its final name; rows and sha256 recorded per file
--   verified   the files were read back: sha256, row counts and the hot row count all agree
--   dropped    the hot rows are gone; the files are the only copy (set in the transaction that
--              drops the chunk, after re-counting the hot rows under the chunk's lock)
--
-- A restore puts the rows back into the hot tier and moves the unit back to verified in the same
-- transaction. A unit with a metric_name holds only that metric's points of its range: per-metric
-- retention shorter than the table's archives and deletes those rows ahead of the whole chunk (the
-- chunk's own unit, archived later, then no longer contains them, so every row is in one file).
--
-- agts.archive_files holds one row per Parquet file (a unit spanning several UTC dates has one file
-- per date). File names derive from the unit's range, so a redone export overwrites, never adds.
-- The same rows are kept as JSON beside the data (table=<name>/_manifest.json).

CREATE TABLE agts.archive_units (
    unit_id        bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    table_name     text        NOT NULL,
    hypertable     text        NOT NULL,
    time_column    text        NOT NULL,
    range_start    timestamptz NOT NULL,
    range_end      timestamptz NOT NULL,
    root           text        NOT NULL,
    state          text        NOT NULL DEFAULT 'exporting',
    rows           bigint,
    schema_version integer     NOT NULL,
    metric_name    text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT archive_units_state_check
        CHECK (state IN ('exporting', 'exported', 'verified', 'dropped')),
    CONSTRAINT archive_units_range_check CHECK (range_start < range_end),
    CONSTRAINT archive_units_rows_check CHECK (rows >= 0),
    CONSTRAINT archive_units_key UNIQUE NULLS NOT DISTINCT (hypertable, range_start, range_end,
                                                           metric_name)
);
CREATE INDEX archive_units_table_range_idx ON agts.archive_units (table_name, range_start);
COMMENT ON TABLE agts.archive_units IS
    'cold tier: one row per archived chunk range, with its export -> verify -> drop state';

CREATE TABLE agts.archive_files (
    path           text        NOT NULL,
    unit_id        bigint      NOT NULL,
    table_name     text        NOT NULL,
    partition_date date        NOT NULL,
    rows           bigint      NOT NULL,
    min_time       timestamptz,
    max_time       timestamptz,
    bytes          bigint      NOT NULL,
    sha256         text        NOT NULL,
    schema_version integer     NOT NULL,
    written_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT archive_files_pkey PRIMARY KEY (unit_id, path),
    CONSTRAINT archive_files_unit_id_fkey FOREIGN KEY (unit_id)
        REFERENCES agts.archive_units (unit_id) ON DELETE CASCADE,
    CONSTRAINT archive_files_rows_check CHECK (rows >= 0),
    CONSTRAINT archive_files_sha256_check CHECK (sha256 ~ '^[0-9a-f]{64}$')
);
COMMENT ON TABLE agts.archive_files IS 'cold tier: one row per Parquet file, with its checksum';

CREATE VIEW agts.archive_manifest AS
SELECT f.path, f.table_name, u.hypertable, f.partition_date, f.rows, f.min_time, f.max_time,
       f.bytes, f.sha256, f.schema_version, u.state, u.root, u.range_start, u.range_end,
       u.metric_name, u.unit_id, f.written_at, u.updated_at
FROM agts.archive_files f
JOIN agts.archive_units u USING (unit_id);
COMMENT ON VIEW agts.archive_manifest IS 'cold tier manifest: every file with its unit''s state';
