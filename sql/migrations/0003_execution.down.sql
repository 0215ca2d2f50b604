-- Drops the execution tables (their data too) in dependency order.
DROP VIEW IF EXISTS agts.order_state;
DROP TABLE IF EXISTS agts.market_quotes;
DROP TABLE IF EXISTS agts.risk_decisions;
DROP TABLE IF EXISTS agts.position_snapshots;
DROP TABLE IF EXISTS agts.fills;
DROP TABLE IF EXISTS agts.order_events;
DROP TABLE IF EXISTS agts.orders;
DROP TABLE IF EXISTS agts.order_ids;
