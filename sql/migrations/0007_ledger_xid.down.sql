DROP INDEX IF EXISTS agts.rollup_seen_batches_xid_idx;
ALTER TABLE agts.rollup_seen_batches DROP COLUMN IF EXISTS xid;
ALTER TABLE agts.rollup_state DROP COLUMN IF EXISTS seen_xmin;
DROP INDEX IF EXISTS agts.ingest_batches_xid_idx;
ALTER TABLE agts.ingest_batches DROP COLUMN IF EXISTS xid;
