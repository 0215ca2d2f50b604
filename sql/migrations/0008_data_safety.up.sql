-- 0008_data_safety: every label set agts accepts can be registered, fills cannot exceed their
-- order, and maintenance locks only writers can take.
--
-- Series key. The unique b-tree on (metric_name, labels) held each label set in full, and a b-tree
-- entry cannot pass 2,704 bytes: a label set of 3,000 characters passed agts' 4 KiB limit and then
-- made its whole batch fail ("index row size ... exceeds btree version 4 maximum 2704"). The key is
-- now an exclusion constraint over a hash index of one text (the quoted metric name followed by the
-- label set's canonical jsonb text, so no two series share it): a hash index keeps a 4-byte hash
-- per row whatever the size of the key, and the constraint still compares the keys themselves, so
-- two series are one only if name and labels are equal. INSERT ... ON CONFLICT DO NOTHING works
-- with it as with the unique index. A plain b-tree on metric_name serves "series of a metric".
CREATE FUNCTION agts.series_key(metric_name text, labels jsonb) RETURNS text
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    AS $$ SELECT pg_catalog.quote_literal(metric_name) || labels::text $$;
COMMENT ON FUNCTION agts.series_key(text, jsonb) IS
    'the identity of a series as one text: the quoted metric name, then the labels as jsonb text';
ALTER TABLE agts.series ADD CONSTRAINT series_key
    EXCLUDE USING hash (agts.series_key(metric_name, labels) WITH =);
ALTER TABLE agts.series DROP CONSTRAINT series_metric_name_labels_key;
CREATE INDEX series_metric_name_idx ON agts.series (metric_name);

-- Fills within their order. agts.order_ids (one row per order, kept when order chunks are dropped)
-- learns each order's size and the total size of the fills stored for it, so a fill that would take
-- the total above the size is refused inside the writing transaction, however old the order's other
-- fills are (also once they were archived). NULL size: an order registered before this migration
-- whose row in agts.orders is gone; its fills are not checked against a size.
ALTER TABLE agts.order_ids ADD COLUMN size double precision;
ALTER TABLE agts.order_ids ADD COLUMN filled_size double precision NOT NULL DEFAULT 0;
UPDATE agts.order_ids AS r SET size = o.size
FROM agts.orders AS o WHERE o.id = r.id AND o.timestamp = r.timestamp;
UPDATE agts.order_ids AS r SET filled_size = f.total
FROM (SELECT order_id, sum(size) AS total FROM agts.fills GROUP BY order_id) AS f
WHERE f.order_id = r.id;
COMMENT ON COLUMN agts.order_ids.size IS 'the order''s size (null: registered before 0008 and its order row is gone)';
COMMENT ON COLUMN agts.order_ids.filled_size IS 'total size of the fills stored for the order';

-- Maintenance locks. Archive runs and rollup refreshes took PostgreSQL advisory locks, and any role
-- may take any advisory lock: a login with only the reader role could hold one and block every
-- archive, retention run, rollup refresh and execution write. Now each is a row of agts.locks held
-- FOR UPDATE, which needs the UPDATE privilege (writers and owners have it, readers do not); like an
-- advisory lock it is released by the server when the holding session ends.
CREATE TABLE agts.locks (
    name text NOT NULL,
    CONSTRAINT locks_pkey PRIMARY KEY (name)
);
COMMENT ON TABLE agts.locks IS
    'one row per maintenance lock (archive:<hypertable>, rollups, execution:<table>), held FOR UPDATE';
INSERT INTO agts.locks (name) VALUES ('rollups'), ('execution:orders'), ('execution:order_events'),
    ('execution:fills'), ('execution:position_snapshots'), ('execution:risk_decisions'),
    ('execution:market_quotes');
