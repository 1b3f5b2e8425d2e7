-- Environments whose database the user brought, and the sealed secret of
-- each environment's database: the PostgreSQL twin of
-- migrations/sqlite/0003_environment_credentials.sql. The credential columns
-- are all NULL when the environment has no credential; otherwise the key id
-- and a non-empty ciphertext are both set (the rotate time may still be NULL).

ALTER TABLE environments
    ADD COLUMN external_database      boolean NOT NULL DEFAULT false,
    ADD COLUMN credential_key_id      text,
    ADD COLUMN credential_ciphertext  bytea,
    ADD COLUMN credential_rotate_time timestamptz,
    ADD CONSTRAINT environments_credential_check
        CHECK (CASE WHEN credential_ciphertext IS NULL
                    THEN credential_key_id IS NULL AND credential_rotate_time IS NULL
                    ELSE credential_key_id IS NOT NULL AND length(credential_ciphertext) > 0
               END);
