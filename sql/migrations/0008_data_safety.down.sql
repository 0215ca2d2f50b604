-- Back to 0007. Fails if a label set is too large for the b-tree key of 0002 (a series that could
-- not have been registered before 0008): delete or shorten those series first.
DROP TABLE IF EXISTS agts.locks;
ALTER TABLE agts.order_ids DROP COLUMN IF EXISTS filled_size;
ALTER TABLE agts.order_ids DROP COLUMN IF EXISTS size;
DROP INDEX IF EXISTS agts.series_metric_name_idx;
ALTER TABLE agts.series ADD CONSTRAINT series_metric_name_labels_key UNIQUE (metric_name, labels);
ALTER TABLE agts.series DROP CONSTRAINT IF EXISTS series_key;
DROP FUNCTION IF EXISTS agts.series_key(text, jsonb);
