DROP TRIGGER IF EXISTS series_added ON agts.series;
DROP FUNCTION IF EXISTS agts.series_added();
DROP TABLE IF EXISTS agts.series_epoch;
DROP TABLE IF EXISTS agts.series_latest;
