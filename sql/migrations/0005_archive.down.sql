DROP VIEW IF EXISTS agts.archive_manifest;
DROP TABLE IF EXISTS agts.archive_files;
DROP TABLE IF EXISTS agts.archive_units;
