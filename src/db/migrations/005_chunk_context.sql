-- Version 5: a chunk is indexed with its context, the title of its
-- document (`ingest::chunk`), so that a chunk of the body matches the words
-- of the title it falls under. The context is not part of the chunk's text:
-- snippets, citations and answers use the text alone.
--
-- Chunks made before this version keep an empty context; reprocessing a
-- document (POST /api/documents/{id}/reprocess) chunks it again with one.

ALTER TABLE chunks ADD COLUMN context TEXT NOT NULL DEFAULT '';

DROP TRIGGER chunks_fts_delete;
DROP TABLE chunks_fts;

-- BM25 over both columns with equal weights scores a chunk as if its
-- context were written in front of its text.
CREATE VIRTUAL TABLE chunks_fts USING fts5 (
    text,
    context,
    content = 'chunks',
    content_rowid = 'rowid',
    tokenize = 'porter unicode61 remove_diacritics 2'
);
INSERT INTO chunks_fts (chunks_fts) VALUES ('rebuild');
UPDATE fts_state SET indexed_through = (SELECT coalesce(max(rowid), 0) FROM chunks) WHERE id = 1;

-- As in version 4: only chunks that were indexed have entries to remove.
CREATE TRIGGER chunks_fts_delete AFTER DELETE ON chunks
WHEN old.rowid <= (SELECT indexed_through FROM fts_state WHERE id = 1)
BEGIN
    INSERT INTO chunks_fts (chunks_fts, rowid, text, context)
    VALUES ('delete', old.rowid, old.text, old.context);
END;

INSERT INTO chunks_fts (chunks_fts, rank) VALUES ('usermerge', 2);
