-- The digest of the create request that carried request_id: the PostgreSQL
-- twin of migrations/sqlite/0004_request_digest.sql. NULL when the create
-- carried no digest, which includes every row created before this migration;
-- those are still told apart by comparing their fields.

ALTER TABLE organizations ADD COLUMN request_digest text NULL;
ALTER TABLE environments ADD COLUMN request_digest text NULL;
ALTER TABLE tokens ADD COLUMN request_digest text NULL;
