-- Organizations and their environments: the PostgreSQL twin of
-- migrations/sqlite/0001_init.sql. Uniqueness rules live here, in the schema,
-- so they hold under concurrent writers in any number of processes; every
-- constraint and unique index is named, because the store tells the rules
-- apart by the name PostgreSQL reports with a violation.
--
-- Ids collate as "C" so that "id > $after ORDER BY id" pages in byte order,
-- as SQLite and Go compare strings, whatever the database's default collation.
-- Times are timestamptz, which keeps microseconds; the store truncates to them.

CREATE TABLE organizations (
    id           text COLLATE "C" PRIMARY KEY,
    slug         text NOT NULL CONSTRAINT organizations_slug_key UNIQUE,
    display_name text NOT NULL,
    -- NULL when the create carried no idempotency key; NULLs never collide.
    request_id   text CONSTRAINT organizations_request_id_key UNIQUE,
    create_time  timestamptz NOT NULL,
    update_time  timestamptz NOT NULL
);

CREATE TABLE environments (
    id               text COLLATE "C" PRIMARY KEY,
    organization_id  text COLLATE "C" NOT NULL
        CONSTRAINT environments_organization_id_fkey
        REFERENCES organizations (id) ON DELETE RESTRICT,
    slug             text NOT NULL,
    display_name     text NOT NULL,
    type             text NOT NULL,
    driver           text NOT NULL,
    status           text NOT NULL,
    status_message   text NOT NULL,
    is_default       boolean NOT NULL,
    hostname         text NOT NULL CONSTRAINT environments_hostname_key UNIQUE,
    region           text NOT NULL,
    storage_limit_mb bigint NOT NULL,
    database_url     text NOT NULL,
    request_id       text,
    create_time      timestamptz NOT NULL,
    update_time      timestamptz NOT NULL,
    -- NULL until the environment is provisioned.
    provision_time   timestamptz,
    CONSTRAINT environments_organization_id_slug_key UNIQUE (organization_id, slug)
);

-- Idempotency keys of environment creates are scoped to the organization.
CREATE UNIQUE INDEX environments_organization_request_id
    ON environments (organization_id, request_id)
    WHERE request_id IS NOT NULL;

-- At most one default environment per organization.
CREATE UNIQUE INDEX environments_organization_default
    ON environments (organization_id)
    WHERE is_default;

-- Serves ListEnvironments: one organization's rows in id order.
CREATE INDEX environments_organization_id_id
    ON environments (organization_id, id);
