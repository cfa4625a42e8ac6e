-- Version 7: one full-text index per user instead of one for everybody.
--
-- With a shared index every search joined each matching chunk to `chunks`
-- to keep the caller's own: a third to half of a search's time (see
-- docs/BENCHMARKS.md, round 5). And BM25's statistics (how many chunks
-- hold a word, how long chunks are on average) mixed every user's
-- documents, so one user's uploads changed another's scores, which the API
-- returns. Each user's index is now `chunks_fts_<n>`, created with the
-- user's first indexed chunk (`db::chunks::index_pending`) and dropped with
-- the account.
--
-- The per-user tables are contentless (the text stays in `chunks`). A
-- trigger cannot name a table that depends on the row, so it queues each
-- deleted chunk, with the text FTS5 needs to remove its entries, in
-- `fts_deleted`, and the writer applies the queue in the same transaction,
-- just before it commits (as it indexes new chunks). (FTS5's
-- contentless_delete option would need only the rowid, but its deletes
-- leave the row count and total length that BM25 uses unchanged.)
--
-- The migration queues every chunk for indexing (watermark 0); the
-- migration runner indexes them before it commits.

DROP TRIGGER chunks_fts_delete;
DROP TABLE chunks_fts;

CREATE TABLE user_indexes (
    -- The index table is chunks_fts_<n>; never reused.
    n       INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id TEXT NOT NULL UNIQUE,
    -- Whether its segments were merged as far as background merges go
    -- since its last change: the sweep skips those (one statement per
    -- user each sweep would add up with many users).
    merged  INTEGER NOT NULL DEFAULT 0
) STRICT;

CREATE TABLE fts_deleted (
    rowid   INTEGER PRIMARY KEY,
    user_id TEXT NOT NULL,
    text    TEXT NOT NULL,
    context TEXT NOT NULL
) STRICT;

-- As in version 4: only chunks that were indexed have entries to remove;
-- and none when the user's index is gone (an account delete drops it
-- first).
CREATE TRIGGER chunks_fts_delete AFTER DELETE ON chunks
WHEN old.rowid <= (SELECT indexed_through FROM fts_state WHERE id = 1)
 AND EXISTS (SELECT 1 FROM user_indexes WHERE user_id = old.user_id)
BEGIN
    INSERT INTO fts_deleted (rowid, user_id, text, context)
    VALUES (old.rowid, old.user_id, old.text, old.context);
END;

UPDATE fts_state SET indexed_through = 0 WHERE id = 1;
