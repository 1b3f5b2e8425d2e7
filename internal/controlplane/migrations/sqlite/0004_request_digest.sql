-- The digest of the create request that carried request_id, computed by the
-- caller: a create with the same request id and the same digest is a retry,
-- with another digest the request id is reused. NULL when the create carried
-- no digest, which includes every row created before this migration; those
-- are still told apart by comparing their fields.

ALTER TABLE organizations ADD COLUMN request_digest TEXT NULL;
ALTER TABLE environments ADD COLUMN request_digest TEXT NULL;
ALTER TABLE tokens ADD COLUMN request_digest TEXT NULL;
