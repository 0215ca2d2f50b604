-- The extension stays: other schemas in this database may use it, and dropping it would drop
-- their hypertables too. Nothing else to undo.
SELECT 1;
