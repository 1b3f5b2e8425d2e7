-- Object definitions of each environment, opaque to the store (the metadata
-- service encodes them), versioned for optimistic concurrency, and the
-- migration steps each version applied. Definitions go with their
-- environment, and migrations with their definition, through the foreign
-- keys. Names compare in byte order (BINARY, SQLite's default), so
-- "name > ? ORDER BY name" pages as Go compares strings.

CREATE TABLE object_definitions (
    environment_id TEXT NOT NULL REFERENCES environments (id) ON DELETE CASCADE,
    name           TEXT NOT NULL,
    definition     BLOB NOT NULL CHECK (length(definition) > 0),
    -- 1 for a new object, one more with every change.
    version        INTEGER NOT NULL CHECK (version > 0),
    create_time    TEXT NOT NULL,
    update_time    TEXT NOT NULL,
    PRIMARY KEY (environment_id, name)
) STRICT;

CREATE TABLE object_migrations (
    environment_id TEXT NOT NULL,
    name           TEXT NOT NULL,
    version        INTEGER NOT NULL CHECK (version > 0),
    -- The encoded steps (JSON); empty when the version recorded none.
    steps          BLOB NOT NULL,
    apply_time     TEXT NOT NULL,
    PRIMARY KEY (environment_id, name, version),
    FOREIGN KEY (environment_id, name)
        REFERENCES object_definitions (environment_id, name) ON DELETE CASCADE
) STRICT;
