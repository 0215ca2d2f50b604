-- Nothing to undo here: 0002_metrics.down.sql drops agts.metric_points with its columnstore
-- settings (removing the settings first would fail once chunks are compressed).
SELECT 1;
