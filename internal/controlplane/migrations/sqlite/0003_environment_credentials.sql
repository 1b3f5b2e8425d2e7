-- Environments whose database the user brought, and the sealed secret of
-- each environment's database. The credential columns are all NULL when the
-- environment has no credential; otherwise the key id and a non-empty
-- ciphertext are both set (the rotate time may still be NULL).

ALTER TABLE environments ADD COLUMN external_database INTEGER NOT NULL DEFAULT 0
    CHECK (external_database IN (0, 1));
ALTER TABLE environments ADD COLUMN credential_key_id TEXT;
ALTER TABLE environments ADD COLUMN credential_ciphertext BLOB;
ALTER TABLE environments ADD COLUMN credential_rotate_time TEXT
    CHECK (CASE WHEN credential_ciphertext IS NULL
                THEN credential_key_id IS NULL AND credential_rotate_time IS NULL
                ELSE credential_key_id IS NOT NULL AND length(credential_ciphertext) > 0
           END);
