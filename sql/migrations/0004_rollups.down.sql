DROP TABLE IF EXISTS agts.rollup_seen_batches;
DROP TABLE IF EXISTS agts.rollup_state;
DROP TABLE IF EXISTS agts.rollup_1h;
DROP TABLE IF EXISTS agts.rollup_1m;
