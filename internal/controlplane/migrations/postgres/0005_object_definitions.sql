-- Object definitions of each environment and the migration steps of each of
-- their versions: the PostgreSQL twin of
-- migrations/sqlite/0005_object_definitions.sql. Definitions go with their
-- environment, and migrations with their definition, through the foreign
-- keys. Names collate as "C" so that "name > $after ORDER BY name" pages in
-- byte order, as SQLite and Go compare strings.

CREATE TABLE object_definitions (
    environment_id text COLLATE "C" NOT NULL
        CONSTRAINT object_definitions_environment_id_fkey
        REFERENCES environments (id) ON DELETE CASCADE,
    name           text COLLATE "C" NOT NULL,
    definition     bytea NOT NULL
        CONSTRAINT object_definitions_definition_check CHECK (length(definition) > 0),
    -- 1 for a new object, one more with every change.
    version        bigint NOT NULL
        CONSTRAINT object_definitions_version_check CHECK (version > 0),
    create_time    timestamptz NOT NULL,
    update_time    timestamptz NOT NULL,
    CONSTRAINT object_definitions_pkey PRIMARY KEY (environment_id, name)
);

CREATE TABLE object_migrations (
    environment_id text COLLATE "C" NOT NULL,
    name           text COLLATE "C" NOT NULL,
    version        bigint NOT NULL
        CONSTRAINT object_migrations_version_check CHECK (version > 0),
    -- The encoded steps (JSON); empty when the version recorded none.
    steps          bytea NOT NULL,
    apply_time     timestamptz NOT NULL,
    CONSTRAINT object_migrations_pkey PRIMARY KEY (environment_id, name, version),
    CONSTRAINT object_migrations_definition_fkey FOREIGN KEY (environment_id, name)
        REFERENCES object_definitions (environment_id, name) ON DELETE CASCADE
);
