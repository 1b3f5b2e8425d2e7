-- API tokens and their sessions. Only the SHA-256 of a secret is stored.

CREATE TABLE tokens (
    id                    TEXT PRIMARY KEY,
    name                  TEXT NOT NULL,
    -- NULL for a platform-wide token.
    organization_id       TEXT REFERENCES organizations (id) ON DELETE CASCADE,
    role                  TEXT NOT NULL,
    platform_admin        INTEGER NOT NULL CHECK (platform_admin IN (0, 1)),
    -- The environments the token is limited to, as a JSON array of ids in
    -- the order given; '[]' when the token is not limited.
    environment_ids       TEXT NOT NULL DEFAULT '[]'
        CHECK (json_valid(environment_ids) AND json_type(environment_ids) = 'array'),
    secret_hash           BLOB NOT NULL UNIQUE CHECK (length(secret_hash) > 0),
    secret_prefix         TEXT NOT NULL,
    -- NULL when the create carried no idempotency key; NULLs never collide.
    request_id            TEXT,
    -- '' for tokens made by bootstrap or the CLI.
    created_by            TEXT NOT NULL,
    create_time           TEXT NOT NULL,
    -- NULL: never expires, not revoked, never used, no active environment.
    expire_time           TEXT,
    revoke_time           TEXT,
    last_use_time         TEXT,
    active_environment_id TEXT REFERENCES environments (id) ON DELETE SET NULL
) STRICT;

-- Idempotency keys of token creates are scoped to the organization, with
-- platform tokens ('' here) forming a scope of their own.
CREATE UNIQUE INDEX tokens_organization_request_id
    ON tokens (coalesce(organization_id, ''), request_id)
    WHERE request_id IS NOT NULL;

-- Serves ListTokens of one organization in id order, and the cascade when an
-- organization is deleted.
CREATE INDEX tokens_organization_id_id
    ON tokens (organization_id, id);

-- Serves ON DELETE SET NULL when an environment is deleted, which would
-- otherwise scan every token.
CREATE INDEX tokens_active_environment_id
    ON tokens (active_environment_id)
    WHERE active_environment_id IS NOT NULL;
