-- Whether a provisioning attempt may have created the environment's
-- database (or role) on its engine: the PostgreSQL twin of
-- migrations/sqlite/0006_resources_may_exist.sql. It starts true when an
-- attempt begins and is cleared only when the attempt provably reached
-- nothing and no earlier one could have made anything. Rows from before this
-- migration may have anything behind them: true.

ALTER TABLE environments
    ADD COLUMN resources_may_exist boolean NOT NULL DEFAULT true;
