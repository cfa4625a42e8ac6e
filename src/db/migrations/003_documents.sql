-- Version 3: documents, their parse jobs and attempts, and the search index.

CREATE TABLE documents (
    id           TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    filename     TEXT NOT NULL,
    content_type TEXT NOT NULL,
    -- Which parser reads it: txt, md, html, pdf, docx, csv, json.
    kind         TEXT NOT NULL,
    size_bytes   INTEGER NOT NULL,
    sha256       TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('queued', 'parsing', 'ingesting', 'ready', 'failed')),
    error        TEXT,
    chunk_count  INTEGER NOT NULL DEFAULT 0,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
) STRICT;

CREATE INDEX documents_by_user ON documents (user_id, created_at DESC, id DESC);

CREATE TABLE jobs (
    id          TEXT PRIMARY KEY,
    document_id TEXT NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
    user_id     TEXT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    -- The fencing token: every claim bumps it, and every write of an
    -- attempt requires it unchanged, so a worker that lost its lease can
    -- never overwrite a newer attempt's result.
    attempt     INTEGER NOT NULL DEFAULT 0,
    retry_count INTEGER NOT NULL DEFAULT 0,
    max_retries INTEGER NOT NULL,
    -- Attempts whose parser process died or timed out; two fail the job.
    crash_count INTEGER NOT NULL DEFAULT 0,
    last_error  TEXT,
    run_after   INTEGER NOT NULL,
    lease_until INTEGER,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
) STRICT;

-- Claims look only at queued jobs, in run_after order.
CREATE INDEX jobs_claimable ON jobs (run_after) WHERE status = 'queued';
-- Sweeps find running jobs whose lease expired.
CREATE INDEX jobs_running ON jobs (lease_until) WHERE status = 'running';
CREATE INDEX jobs_by_document ON jobs (document_id, created_at DESC);

CREATE TABLE job_attempts (
    job_id      TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    n           INTEGER NOT NULL,
    started_at  INTEGER NOT NULL,
    finished_at INTEGER,
    error       TEXT,
    PRIMARY KEY (job_id, n)
) STRICT, WITHOUT ROWID;

-- Chunks of text with their place in the extracted text; the rowid is the
-- FTS5 content rowid and, as a string, the API's chunk_id.
CREATE TABLE chunks (
    rowid       INTEGER PRIMARY KEY AUTOINCREMENT,
    document_id TEXT NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
    user_id     TEXT NOT NULL,
    ordinal     INTEGER NOT NULL,
    start_char  INTEGER NOT NULL,
    end_char    INTEGER NOT NULL,
    text        TEXT NOT NULL
) STRICT;

CREATE INDEX chunks_by_document ON chunks (document_id, ordinal);

CREATE VIRTUAL TABLE chunks_fts USING fts5 (
    text,
    content = 'chunks',
    content_rowid = 'rowid',
    tokenize = 'porter unicode61 remove_diacritics 2'
);

-- The index follows the chunks in the same transactions.
CREATE TRIGGER chunks_fts_insert AFTER INSERT ON chunks BEGIN
    INSERT INTO chunks_fts (rowid, text) VALUES (new.rowid, new.text);
END;
CREATE TRIGGER chunks_fts_delete AFTER DELETE ON chunks BEGIN
    INSERT INTO chunks_fts (chunks_fts, rowid, text) VALUES ('delete', old.rowid, old.text);
END;
