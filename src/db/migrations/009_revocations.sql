-- Version 9: what `ragd user reset-password` and `ragd user delete` tell a
-- running server. They work beside it, through the database, with their
-- own connection: tokens stop working at once (every request reads the
-- user's token version), but the server's open sockets and its in-memory
-- work are its own. So each such change also appends a row here, in the
-- same transaction; the server remembers the last id it has seen, polls
-- for newer ones about once a second and closes the user's sockets
-- (src/app/notices.rs). Rows older than a day are pruned when one is
-- added: a server that starts later has nothing open to close.

CREATE TABLE revocations (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    -- No foreign key: the row must outlive a deleted account.
    user_id    TEXT NOT NULL,
    reason     TEXT NOT NULL CHECK (reason IN ('password_reset', 'deleted')),
    created_at INTEGER NOT NULL
) STRICT;

CREATE INDEX revocations_by_age ON revocations (created_at);
