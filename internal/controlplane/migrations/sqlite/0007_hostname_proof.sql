-- envplane: foreign_keys off
-- Hostnames are owned, not claimed: a hostname routes only while its
-- environment holds it verified, and only one environment can; any number may
-- claim it pending (an organization proving a domain it bought must not learn
-- who else asked for it). hostname therefore loses its UNIQUE constraint to a
-- unique index over verified hostnames. SQLite cannot drop a column
-- constraint, so the table is rebuilt (https://sqlite.org/lang_altertable.html,
-- "other kinds of table schema changes"), with foreign keys off so that
-- dropping the old table does not cascade to tokens and object definitions;
-- the runner checks them before committing.
--
-- hostname_state and hostname_next_check are columns for the index and the
-- check queue; the rest of the proof (method, challenge token, times of the
-- last proof and check, failures, message) is JSON in hostname_proof.
-- Hostnames bound before ownership was checked keep routing ('migrated'):
-- the resolver refuses reserved names whatever the table holds.

CREATE TABLE environments_0007 (
    id                     TEXT PRIMARY KEY,
    organization_id        TEXT NOT NULL REFERENCES organizations (id) ON DELETE RESTRICT,
    slug                   TEXT NOT NULL,
    display_name           TEXT NOT NULL,
    type                   TEXT NOT NULL,
    driver                 TEXT NOT NULL,
    status                 TEXT NOT NULL,
    status_message         TEXT NOT NULL,
    is_default             INTEGER NOT NULL CHECK (is_default IN (0, 1)),
    hostname               TEXT NOT NULL,
    region                 TEXT NOT NULL,
    storage_limit_mb       INTEGER NOT NULL,
    database_url           TEXT NOT NULL,
    request_id             TEXT,
    create_time            TEXT NOT NULL,
    update_time            TEXT NOT NULL,
    provision_time         TEXT,
    external_database      INTEGER NOT NULL DEFAULT 0 CHECK (external_database IN (0, 1)),
    credential_key_id      TEXT,
    credential_ciphertext  BLOB,
    credential_rotate_time TEXT,
    request_digest         TEXT NULL,
    resources_may_exist    INTEGER NOT NULL DEFAULT 1 CHECK (resources_may_exist IN (0, 1)),
    hostname_state         TEXT NOT NULL DEFAULT 'verified'
        CHECK (hostname_state IN ('verified', 'pending', 'lapsed')),
    hostname_next_check    TEXT,
    hostname_proof         TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(hostname_proof)),
    UNIQUE (organization_id, slug),
    CHECK (CASE WHEN credential_ciphertext IS NULL
                THEN credential_key_id IS NULL AND credential_rotate_time IS NULL
                ELSE credential_key_id IS NOT NULL AND length(credential_ciphertext) > 0
           END)
) STRICT;

INSERT INTO environments_0007
    (id, organization_id, slug, display_name, type, driver, status, status_message,
     is_default, hostname, region, storage_limit_mb, database_url, request_id,
     create_time, update_time, provision_time, external_database,
     credential_key_id, credential_ciphertext, credential_rotate_time, request_digest,
     resources_may_exist, hostname_state, hostname_next_check, hostname_proof)
SELECT id, organization_id, slug, display_name, type, driver, status, status_message,
       is_default, hostname, region, storage_limit_mb, database_url, request_id,
       create_time, update_time, provision_time, external_database,
       credential_key_id, credential_ciphertext, credential_rotate_time, request_digest,
       resources_may_exist, 'verified', NULL, '{"method":"migrated"}'
FROM environments;

DROP TABLE environments;
ALTER TABLE environments_0007 RENAME TO environments;

CREATE UNIQUE INDEX environments_organization_request_id
    ON environments (organization_id, request_id)
    WHERE request_id IS NOT NULL;

CREATE UNIQUE INDEX environments_organization_default
    ON environments (organization_id)
    WHERE is_default = 1;

CREATE INDEX environments_organization_id_id
    ON environments (organization_id, id);

-- At most one environment holds a hostname verified; it is the one that routes.
CREATE UNIQUE INDEX environments_verified_hostname
    ON environments (hostname)
    WHERE hostname_state = 'verified';

-- Serves ListHostnameClaims.
CREATE INDEX environments_hostname ON environments (hostname, id);

-- Serves ListHostnameChecks: the claims whose check is due, oldest first.
CREATE INDEX environments_hostname_next_check
    ON environments (hostname_next_check)
    WHERE hostname_next_check IS NOT NULL;
