-- Version 8: full-text search leaves SQLite for an index of its own
-- (tantivy, under <data-dir>/index/, src/search/). FTS5 capped ingest at
-- what one writer thread could index (docs/BENCHMARKS.md, rounds 4-5) and
-- opened every segment for every query term. SQLite stays the truth: the
-- index is derived from `chunks` and rebuilt from it when missing, which
-- it is right after this migration.
--
-- The per-user FTS5 tables (chunks_fts_<n>) are dropped by the migration
-- code, which knows their names (db/migrate.rs).

DROP TRIGGER chunks_fts_delete;
DROP TABLE fts_deleted;
DROP TABLE fts_state;

-- `n` stays: it is the user's key in the index, the prefix of each of
-- their terms (never reused, so a deleted account's leftovers match no
-- one). Merging is the index's own business now.
ALTER TABLE user_indexes DROP COLUMN merged;

-- A document's live chunk set, the rowids first..last: a new set is
-- written next to the old one, indexed, and only then made live (with the
-- document `ready`) in another transaction, which deletes the old set.
-- Searches serve a chunk only while it is in its document's live set.
-- NULL: no live chunks. Sets written before this version were written in
-- one transaction each, so their rowids are consecutive.
ALTER TABLE documents ADD COLUMN chunks_first INTEGER;
ALTER TABLE documents ADD COLUMN chunks_last INTEGER;
UPDATE documents
SET chunks_first = s.first, chunks_last = s.last
FROM (SELECT document_id, min(rowid) AS first, max(rowid) AS last FROM chunks GROUP BY document_id) AS s
WHERE s.document_id = documents.id;

-- Chunks deleted since the index last took in its deletes, in order
-- (`id` only grows, so the index can clear exactly what it has applied).
CREATE TABLE index_deletes (
    id    INTEGER PRIMARY KEY AUTOINCREMENT,
    chunk INTEGER NOT NULL
) STRICT;

CREATE TRIGGER chunks_index_delete AFTER DELETE ON chunks
BEGIN
    INSERT INTO index_deletes (chunk) VALUES (old.rowid);
END;
