-- Whether a provisioning attempt may have created the environment's
-- database (or role, or file) on its engine. It starts true when an attempt
-- begins and is cleared only when the attempt provably reached nothing and no
-- earlier one could have made anything, so that deleting an environment whose
-- engine never saw it need not reach the engine. Rows from before this
-- migration may have anything behind them: true.

ALTER TABLE environments ADD COLUMN resources_may_exist INTEGER NOT NULL DEFAULT 1
    CHECK (resources_may_exist IN (0, 1));
