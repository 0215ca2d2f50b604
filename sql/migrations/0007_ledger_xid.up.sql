-- 0007_ledger_xid: rollups and the query cache learn about ingest batches by transaction id, not by
-- the time a transaction began.
--
-- Why: until now a rollup refresh took in the ledger batches with ingested_at (= now(), the start of
-- the writing transaction) later than its previous refresh minus ten minutes, and the query cache
-- counted batches that began at most a minute before the cached query. A batch whose transaction
-- began before that window and committed after the refresh (or the cached query) was invisible to
-- both: a rollup could miss its points for good, a cached frame could hide them until it expired.
--
-- Now every ledger row carries the id of the transaction that wrote it (xid8: 64 bits, no
-- wraparound), and a refresh records the xmin of its snapshot: every transaction with a smaller
-- id had ended before the refresh looked, so a batch below the xmin was seen by that refresh or an
-- earlier one, and only batches at or above it are candidates for the next. The same rule makes the
-- cache exact. Exact in both directions: a transaction open for hours is still caught.
--
-- Existing rows: batches that every rollup has certainly seen under the old rule (begun more than
-- ten minutes before the rollups' oldest refresh) keep xid 0, below every xmin; the rest (found by
-- the ingested_at index, so a large ledger is not rewritten) get this migration's own xid, which
-- is above the xmin recorded here, so the next refresh looks at them once more.

ALTER TABLE agts.ingest_batches ADD COLUMN xid xid8 NOT NULL DEFAULT '0';
UPDATE agts.ingest_batches SET xid = pg_current_xact_id()
WHERE ingested_at > (SELECT min(coalesce(refreshed_at, '-infinity')) FROM agts.rollup_state)
                    - INTERVAL '10 minutes';
ALTER TABLE agts.ingest_batches ALTER COLUMN xid SET DEFAULT pg_current_xact_id();
CREATE INDEX ingest_batches_xid_idx ON agts.ingest_batches (xid);
COMMENT ON COLUMN agts.ingest_batches.xid IS
    'id of the transaction that wrote the batch (rollups and the query cache compare it with a snapshot xmin)';

-- The snapshot's xmin, not this transaction's id: a writer that got its id before this migration
-- and writes its ledger row after it stays at or above it.
ALTER TABLE agts.rollup_state ADD COLUMN seen_xmin xid8 NOT NULL DEFAULT '0';
UPDATE agts.rollup_state SET seen_xmin = pg_snapshot_xmin(pg_current_snapshot());
COMMENT ON COLUMN agts.rollup_state.seen_xmin IS
    'xmin of the last refresh''s snapshot: every batch with a smaller xid was taken in';

ALTER TABLE agts.rollup_seen_batches ADD COLUMN xid xid8 NOT NULL DEFAULT '0';
UPDATE agts.rollup_seen_batches AS x SET xid = b.xid
FROM agts.ingest_batches AS b WHERE b.batch_id = x.batch_id;
ALTER TABLE agts.rollup_seen_batches ALTER COLUMN xid DROP DEFAULT;
CREATE INDEX rollup_seen_batches_xid_idx ON agts.rollup_seen_batches (rollup, xid);
