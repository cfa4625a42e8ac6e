-- ragd schema, version 1. Released versions are never edited: later
-- changes are appended as new migrations in src/db/migrate.rs.
-- Timestamps are INTEGER milliseconds since the Unix epoch (UTC).

-- Facts about this database itself. `epoch` identifies it: a restored or
-- recreated database gets another, and event ids start over with it.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;

INSERT INTO meta (key, value) VALUES ('epoch', lower(hex(randomblob(16))));

CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    email         TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    -- Bumped by logout and password change: tokens carry the version they
    -- were issued under, and older versions stop working.
    token_version INTEGER NOT NULL DEFAULT 0,
    created_at    INTEGER NOT NULL
) STRICT;

CREATE TABLE conversations (
    id         TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    title      TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
) STRICT;

-- The list order: most recently updated first, id breaks ties.
CREATE INDEX conversations_by_user_updated
    ON conversations (user_id, updated_at DESC, id DESC);
