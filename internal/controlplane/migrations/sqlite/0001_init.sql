-- Organizations and their environments. Uniqueness rules live here, in the
-- schema, so they hold under concurrent writers. Times are UTC text with a
-- fixed nine-digit fraction, so they round-trip exactly and sort as text.

CREATE TABLE organizations (
    id           TEXT PRIMARY KEY,
    slug         TEXT NOT NULL UNIQUE,
    display_name TEXT NOT NULL,
    -- NULL when the create carried no idempotency key; NULLs never collide.
    request_id   TEXT UNIQUE,
    create_time  TEXT NOT NULL,
    update_time  TEXT NOT NULL
) STRICT;

CREATE TABLE environments (
    id               TEXT PRIMARY KEY,
    organization_id  TEXT NOT NULL REFERENCES organizations (id) ON DELETE RESTRICT,
    slug             TEXT NOT NULL,
    display_name     TEXT NOT NULL,
    type             TEXT NOT NULL,
    driver           TEXT NOT NULL,
    status           TEXT NOT NULL,
    status_message   TEXT NOT NULL,
    is_default       INTEGER NOT NULL CHECK (is_default IN (0, 1)),
    hostname         TEXT NOT NULL UNIQUE,
    region           TEXT NOT NULL,
    storage_limit_mb INTEGER NOT NULL,
    database_url     TEXT NOT NULL,
    request_id       TEXT,
    create_time      TEXT NOT NULL,
    update_time      TEXT NOT NULL,
    -- NULL until the environment is provisioned.
    provision_time   TEXT,
    UNIQUE (organization_id, slug)
) STRICT;

-- Idempotency keys of environment creates are scoped to the organization.
CREATE UNIQUE INDEX environments_organization_request_id
    ON environments (organization_id, request_id)
    WHERE request_id IS NOT NULL;

-- At most one default environment per organization.
CREATE UNIQUE INDEX environments_organization_default
    ON environments (organization_id)
    WHERE is_default = 1;

-- Serves ListEnvironments: one organization's rows in id order.
CREATE INDEX environments_organization_id_id
    ON environments (organization_id, id);
