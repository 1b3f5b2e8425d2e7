-- API tokens and their sessions: the PostgreSQL twin of
-- migrations/sqlite/0002_tokens.sql. Only the SHA-256 of a secret is stored.

CREATE TABLE tokens (
    id                    text COLLATE "C" PRIMARY KEY,
    name                  text NOT NULL,
    -- NULL for a platform-wide token.
    organization_id       text COLLATE "C"
        CONSTRAINT tokens_organization_id_fkey
        REFERENCES organizations (id) ON DELETE CASCADE,
    role                  text NOT NULL,
    platform_admin        boolean NOT NULL,
    -- The environments the token is limited to, in the order given; '{}'
    -- when the token is not limited. One dimension and no NULL ids; the CASE
    -- fixes the order, since array_position refuses other dimensions.
    environment_ids       text[] NOT NULL DEFAULT '{}'
        CONSTRAINT tokens_environment_ids_check
        CHECK (CASE array_ndims(environment_ids)
                   WHEN 1 THEN array_position(environment_ids, NULL) IS NULL
                   ELSE array_ndims(environment_ids) IS NULL -- empty
               END),
    secret_hash           bytea NOT NULL
        CONSTRAINT tokens_secret_hash_key UNIQUE
        CONSTRAINT tokens_secret_hash_check CHECK (length(secret_hash) > 0),
    secret_prefix         text NOT NULL,
    -- NULL when the create carried no idempotency key; NULLs never collide.
    request_id            text,
    -- '' for tokens made by bootstrap or the CLI.
    created_by            text NOT NULL,
    create_time           timestamptz NOT NULL,
    -- NULL: never expires, not revoked, never used, no active environment.
    expire_time           timestamptz,
    revoke_time           timestamptz,
    last_use_time         timestamptz,
    active_environment_id text COLLATE "C"
        CONSTRAINT tokens_active_environment_id_fkey
        REFERENCES environments (id) ON DELETE SET NULL
);

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
