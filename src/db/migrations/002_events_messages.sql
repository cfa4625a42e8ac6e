-- Version 2: the transactional outbox (events) and chat messages.

-- The last event id given to each user: ids run 1, 2, 3, ... with no hole
-- because they are taken inside the writing transaction (one writer).
ALTER TABLE users ADD COLUMN event_seq INTEGER NOT NULL DEFAULT 0;

CREATE TABLE events (
    user_id         TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    id              INTEGER NOT NULL,
    type            TEXT NOT NULL,
    -- The object the event is about, and its conversation, so deleting
    -- either can rewrite the stored events to tombstones.
    subject_id      TEXT NOT NULL,
    conversation_id TEXT,
    data            TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    PRIMARY KEY (user_id, id)
) STRICT, WITHOUT ROWID;

CREATE INDEX events_by_subject ON events (user_id, subject_id);
CREATE INDEX events_by_conversation ON events (user_id, conversation_id)
    WHERE conversation_id IS NOT NULL;
CREATE INDEX events_by_age ON events (created_at);

CREATE TABLE messages (
    id              TEXT PRIMARY KEY,
    conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    user_id         TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role            TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
    content         TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('pending', 'streaming', 'done', 'error', 'cancelled')),
    error           TEXT,
    sources         TEXT NOT NULL DEFAULT '[]',
    -- Bumped by every retry: a generation may only finish the reply it
    -- was started for, never a later retry of it.
    generation      INTEGER NOT NULL DEFAULT 0,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
) STRICT;

-- Listing a conversation in order; ids are UUIDv7, so (created_at, id)
-- is the insertion order.
CREATE INDEX messages_by_conversation ON messages (conversation_id, created_at, id);
-- The start-up sweep finds unfinished replies without a scan.
CREATE INDEX messages_unfinished ON messages (status) WHERE status IN ('pending', 'streaming');

-- Idempotency-Key records: a repeat of the same request answers with the
-- same messages instead of creating new ones.
CREATE TABLE idempotency_keys (
    user_id      TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    key          TEXT NOT NULL,
    method       TEXT NOT NULL,
    path         TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    status       INTEGER NOT NULL,
    -- What the repeat needs to rebuild the answer (ids of the messages).
    response     TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (user_id, key)
) STRICT, WITHOUT ROWID;

CREATE INDEX idempotency_by_age ON idempotency_keys (created_at);
