-- Whether a provisioning attempt may have created the environment's
-- database (or role) on its engine: the PostgreSQL twin of
-- migrations/sqlite/0006_resources_may_exist.sql. Each attempt's outcome sets
-- it unless the attempt provably reached nothing, and nothing clears it. Rows
-- from before this migration may have anything behind them: true.

ALTER TABLE environments
    ADD COLUMN resources_may_exist boolean NOT NULL DEFAULT true;
