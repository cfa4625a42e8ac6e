-- Version 4: new chunks enter the full-text index once per write batch, not
-- row by row. FTS5 writes its pending terms as a new index segment at every
-- savepoint, and every write in a batch has its own savepoint; indexing by
-- trigger therefore wrote one small segment per document and merged them
-- again and again. The writer now indexes all chunks above the watermark
-- just before it commits a batch (`db::chunks::index_pending`).

CREATE TABLE fts_state (
    id              INTEGER PRIMARY KEY CHECK (id = 1),
    -- Every chunk with a rowid up to this one is in `chunks_fts`. Rowids
    -- only grow (AUTOINCREMENT), so the chunks above it are the new ones.
    indexed_through INTEGER NOT NULL
) STRICT;

INSERT INTO fts_state (id, indexed_through) VALUES (1, (SELECT coalesce(max(rowid), 0) FROM chunks));

DROP TRIGGER chunks_fts_insert;
DROP TRIGGER chunks_fts_delete;

-- A chunk deleted before it was indexed (in the batch that made it) has no
-- index entry to remove: removing one that does not exist would corrupt an
-- external-content FTS5 index.
CREATE TRIGGER chunks_fts_delete AFTER DELETE ON chunks
WHEN old.rowid <= (SELECT indexed_through FROM fts_state WHERE id = 1)
BEGIN
    INSERT INTO chunks_fts (chunks_fts, rowid, text) VALUES ('delete', old.rowid, old.text);
END;

-- Background merges (`db::chunks::merge_index_step`, run by the periodic
-- sweep) combine any two index segments of a level, so that a search
-- opens few segments per term; FTS5's own merges during writes keep their
-- defaults.
INSERT INTO chunks_fts (chunks_fts, rank) VALUES ('usermerge', 2);
