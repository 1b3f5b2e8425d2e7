-- Whether a provisioning attempt may have created the environment's
-- database (or role, or file) on its engine. Each attempt's outcome sets it
-- unless the attempt provably reached nothing, and nothing clears it, so that
-- deleting an environment whose engine never saw it need not reach the
-- engine. Rows from before this migration may have anything behind them: true.

ALTER TABLE environments ADD COLUMN resources_may_exist INTEGER NOT NULL DEFAULT 1
    CHECK (resources_may_exist IN (0, 1));
