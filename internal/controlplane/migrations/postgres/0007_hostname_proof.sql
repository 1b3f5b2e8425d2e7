-- Hostnames are owned, not claimed: the PostgreSQL twin of
-- migrations/sqlite/0007_hostname_proof.sql. A hostname routes only while its
-- environment holds it verified, and only one environment can; any number may
-- claim it pending. hostname loses its unique constraint to a unique index
-- over verified hostnames; hostname_state and hostname_next_check are columns
-- for that index and the check queue, the rest of the proof is JSON in
-- hostname_proof. Hostnames bound before ownership was checked keep routing
-- ('migrated'): the resolver refuses reserved names whatever the table holds.

ALTER TABLE environments DROP CONSTRAINT environments_hostname_key;

ALTER TABLE environments
    ADD COLUMN hostname_state text NOT NULL DEFAULT 'verified'
        CONSTRAINT environments_hostname_state_check
        CHECK (hostname_state IN ('verified', 'pending', 'lapsed')),
    ADD COLUMN hostname_next_check timestamptz,
    ADD COLUMN hostname_proof jsonb NOT NULL DEFAULT '{}';

UPDATE environments SET hostname_proof = '{"method":"migrated"}';

CREATE UNIQUE INDEX environments_verified_hostname
    ON environments (hostname)
    WHERE hostname_state = 'verified';

CREATE INDEX environments_hostname ON environments (hostname, id);

CREATE INDEX environments_hostname_next_check
    ON environments (hostname_next_check)
    WHERE hostname_next_check IS NOT NULL;
