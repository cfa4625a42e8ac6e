//! `ragd check`: reads a data dir, with or without a server running on
//! it, and reports what is wrong: the database (`integrity_check`,
//! `foreign_key_check`), the search index against the chunks, and
//! `files/` against the documents. It writes nothing and takes no lock.
//!
//! While a server runs, the three sources change between reads, so each
//! comparison reads them in the order that rules out a false alarm:
//! - index: the chunks are read before the index for "still indexed but
//!   deleted" (a delete leaves its queue entry until the index commit that
//!   applies it, and a chunk written after that read is skipped), and after
//!   it for "not indexed" (a chunk that still exists after the index's
//!   commit, with a rowid it had taken in, must be in it);
//! - a document without its file: the rows are read, then `files/` is
//!   listed, then the rows still missing a file are read again: a document
//!   there before and after the listing was not deleted meanwhile, and an
//!   upload's file is in place before its row commits;
//! - a file without a document: an upload's file waits for its row, and
//!   a deleted document's file goes just after its row, so a file is
//!   reported only if it still has no document a moment later.

use std::collections::HashSet;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use rusqlite::Connection;

use super::StartupError;
use crate::db::maintenance::ChunkSet;
use crate::db::{self, maintenance};
use crate::search::inspect::{self, Contents, Unusable};

/// How long a file without a document may be an upload or a delete in
/// progress.
const SETTLE: Duration = Duration::from_secs(1);
/// Examples named per kind of problem.
const EXAMPLES: usize = 5;

/// What a check found.
#[derive(Debug, Default)]
pub struct Report {
    /// What is wrong (the exit code is 1 when there is any).
    pub problems: Vec<String>,
    /// What is fine, or will be fixed by the server at start.
    pub notes: Vec<String>,
}

impl Report {
    pub fn healthy(&self) -> bool {
        self.problems.is_empty()
    }

    fn problem(&mut self, text: String) {
        self.problems.push(text);
    }

    fn note(&mut self, text: String) {
        self.notes.push(text);
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for note in &self.notes {
            writeln!(f, "ok: {note}")?;
        }
        for problem in &self.problems {
            writeln!(f, "PROBLEM: {problem}")?;
        }
        match self.problems.len() {
            0 => write!(f, "healthy"),
            1 => write!(f, "1 problem found"),
            n => write!(f, "{n} problems found"),
        }
    }
}

/// Checks `data_dir`. Blocking. `Err` only when there is nothing to check.
pub fn check(data_dir: &Path) -> Result<Report, StartupError> {
    let db_path = super::existing_database(data_dir).map_err(StartupError::Config)?;
    let mut report = Report::default();
    let conn = match maintenance::open_read_only(&db_path) {
        Ok(conn) => conn,
        Err(e) => {
            report.problem(format!("cannot open the database {}: {e}", db_path.display()));
            return Ok(report);
        }
    };
    if let Err(e) = check_all(data_dir, &conn, &mut report) {
        report.problem(format!("cannot read the database: {e}"));
    }
    Ok(report)
}

fn check_all(data_dir: &Path, conn: &Connection, report: &mut Report) -> db::Result<()> {
    // SQLite's own checks and the epoch (every schema version has it)
    // read any schema; the rest reads this version's.
    database(conn, report)?;
    leftovers(data_dir, report);
    let Some(epoch) = maintenance::epoch(conn)? else {
        report.problem("the database has no epoch: it is not a ragd database".into());
        return Ok(());
    };
    if let Err(e) = db::check_schema(conn) {
        let (version, newest) = db::schema_versions(conn)?;
        if version < newest {
            report.note(format!(
                "{e}; the search index and the files are checked once it is"
            ));
        } else {
            report.problem(e.to_string());
        }
        return Ok(());
    }
    index(data_dir, conn, &epoch, report)?;
    files(data_dir, conn, report)?;
    Ok(())
}

/// The database's own checks.
fn database(conn: &Connection, report: &mut Report) -> db::Result<()> {
    let damaged = maintenance::integrity_problems(conn)?;
    if !damaged.is_empty() {
        report.problem(format!(
            "the database is damaged (integrity_check): {}",
            examples(&damaged)
        ));
    }
    let orphans = maintenance::foreign_key_problems(conn)?;
    if !orphans.is_empty() {
        report.problem(format!(
            "{} rows refer to rows that are gone (foreign_key_check): {}",
            orphans.len(),
            examples(&orphans)
        ));
    }
    if damaged.is_empty() && orphans.is_empty() {
        report.note("database: integrity_check and foreign_key_check pass".into());
    }
    Ok(())
}

/// The search index against the chunks (see the module's order).
fn index(data_dir: &Path, conn: &Connection, epoch: &str, report: &mut Report) -> db::Result<()> {
    let before = maintenance::chunk_set(conn)?;
    let dir = data_dir.join("index");
    // A merge may remove a segment between listing and opening it: once more.
    let contents = inspect::read(&dir).or_else(|e| match e {
        Unusable::Damaged(_) => {
            std::thread::sleep(Duration::from_millis(200));
            inspect::read(&dir)
        }
        other => Err(other),
    });
    let contents = match contents {
        Ok(contents) => contents,
        Err(Unusable::Missing) => {
            report.note(format!(
                "search index: none yet in {} (a server builds it at start)",
                dir.display()
            ));
            return Ok(());
        }
        Err(Unusable::Stale(why)) => {
            report.note(format!(
                "search index: out of date, {why} (a server rebuilds it at start)"
            ));
            return Ok(());
        }
        Err(Unusable::Damaged(why)) => {
            report.problem(format!(
                "the search index in {} cannot be read ({why}); restart the server (it rebuilds a damaged index) or, with it stopped, run `ragd reindex`",
                dir.display()
            ));
            return Ok(());
        }
    };
    if contents.epoch != epoch {
        report.note("search index: built from another database (a server rebuilds it at start)".into());
        return Ok(());
    }
    let after = maintenance::chunk_set(conn)?;
    let (not_indexed, stale) = compare(&before, &contents, &after);
    // A server keeps an index it can open: only a rebuild repairs this.
    let repair = "stop the server and run `ragd reindex`";
    if !not_indexed.is_empty() {
        report.problem(format!(
            "{} chunks are missing from the search index (chunk rowids {}); {repair}",
            not_indexed.len(),
            examples(&not_indexed)
        ));
    }
    if !stale.is_empty() {
        report.problem(format!(
            "{} deleted chunks are still in the search index (chunk rowids {}); {repair}",
            stale.len(),
            examples(&stale)
        ));
    }
    if not_indexed.is_empty() && stale.is_empty() {
        let waiting = after.rowids.iter().filter(|r| **r > contents.through).count();
        report.note(format!(
            "search index: holds the {} chunks it has taken in ({waiting} newer ones to index)",
            contents.rowids.len()
        ));
    }
    Ok(())
}

/// The chunks missing from the index, and the deleted chunks still in it,
/// sorted: `before` was read before the index, `after` after it.
fn compare(before: &ChunkSet, index: &Contents, after: &ChunkSet) -> (Vec<i64>, Vec<i64>) {
    // Taken in by the index, and not deleted since (it is still there).
    let mut not_indexed: Vec<i64> = after
        .rowids
        .iter()
        .copied()
        .filter(|r| *r <= index.through && !index.rowids.contains(r))
        .collect();
    // Written before `before` and gone by then, with its delete applied.
    let mut stale: Vec<i64> = index
        .rowids
        .iter()
        .copied()
        .filter(|r| {
            *r <= before.last_rowid && !before.rowids.contains(r) && !before.pending_deletes.contains(r)
        })
        .collect();
    not_indexed.sort_unstable();
    stale.sort_unstable();
    (not_indexed, stale)
}

/// `files/` against the documents (see the module's order).
fn files(data_dir: &Path, conn: &Connection, report: &mut Report) -> db::Result<()> {
    let dir = data_dir.join("files");
    let documents = maintenance::document_ids(conn)?;
    let listed = match list(&dir) {
        Ok(listed) => listed,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && documents.is_empty() => {
            report.note("files: none (no documents)".into());
            return Ok(());
        }
        Err(e) => {
            report.problem(format!("cannot list {}: {e}", dir.display()));
            return Ok(());
        }
    };
    let unsure: Vec<String> = documents.difference(&listed.names).cloned().collect();
    let mut without_file: Vec<String> = maintenance::existing_documents(conn, &unsure)?
        .into_iter()
        .collect();
    without_file.sort();
    if !without_file.is_empty() {
        report.problem(format!(
            "{} documents have no file in {}: {} (their originals are lost; delete the documents or restore them from a backup)",
            without_file.len(),
            dir.display(),
            examples(&without_file)
        ));
    }
    let mut unowned: Vec<String> = listed.names.difference(&documents).cloned().collect();
    if !unowned.is_empty() {
        std::thread::sleep(SETTLE);
        unowned.retain(|name| dir.join(name).exists());
        let owned = maintenance::existing_documents(conn, &unowned)?;
        unowned.retain(|name| !owned.contains(name));
        unowned.sort();
    }
    if !unowned.is_empty() {
        report.problem(format!(
            "{} files in {} belong to no document: {} (a server removes them at start)",
            unowned.len(),
            dir.display(),
            examples(&unowned)
        ));
    }
    if !listed.other.is_empty() {
        report.problem(format!(
            "{} entries in {} are not files: {}",
            listed.other.len(),
            dir.display(),
            examples(&listed.other)
        ));
    }
    if without_file.is_empty() && unowned.is_empty() && listed.other.is_empty() {
        report.note(format!(
            "files: each of the {} documents has its file, and no file is left over",
            documents.len()
        ));
    }
    if listed.uploads > 0 {
        report.note(format!(
            "files: {} temporary uploads (in progress, or left by a crash: a server removes those at start)",
            listed.uploads
        ));
    }
    Ok(())
}

/// What `files/` holds.
struct Listing {
    /// Regular files with plain names.
    names: HashSet<String>,
    /// Temporary `.upload-*` files.
    uploads: usize,
    /// Anything else.
    other: Vec<String>,
}

fn list(dir: &Path) -> std::io::Result<Listing> {
    let mut listing = Listing {
        names: HashSet::new(),
        uploads: 0,
        other: Vec::new(),
    };
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_file = entry.file_type().map(|t| t.is_file()).unwrap_or(false);
        if is_file && name.starts_with(".upload-") {
            listing.uploads += 1;
        } else if is_file && super::backup::is_plain_name(&name) {
            listing.names.insert(name);
        } else {
            listing.other.push(name);
        }
    }
    listing.other.sort();
    Ok(listing)
}

/// Staging dirs of backups that did not finish (or are running).
fn leftovers(data_dir: &Path, report: &mut Report) {
    let Ok(entries) = std::fs::read_dir(data_dir) else {
        return;
    };
    let staging = entries
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(super::backup::STAGING_PREFIX)
        })
        .count();
    if staging > 0 {
        report.note(format!(
            "{staging} .backup-* staging dirs in {}: a backup is running, or one was interrupted (the next backup removes those)",
            data_dir.display()
        ));
    }
}

/// The first few items, and how many more.
fn examples<T: fmt::Display>(items: &[T]) -> String {
    let mut text = items
        .iter()
        .take(EXAMPLES)
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    if items.len() > EXAMPLES {
        text.push_str(&format!(" and {} more", items.len() - EXAMPLES));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(rowids: &[i64], pending: &[i64], last: i64) -> ChunkSet {
        ChunkSet {
            rowids: rowids.iter().copied().collect(),
            pending_deletes: pending.iter().copied().collect(),
            last_rowid: last,
        }
    }

    fn index(rowids: &[i64], through: i64) -> Contents {
        Contents {
            epoch: "e".into(),
            through,
            rowids: rowids.iter().copied().collect(),
        }
    }

    #[test]
    fn an_index_in_step_or_merely_behind_is_fine() {
        // 4 and 5 are newer than the index's commit; 2 was deleted, and its
        // delete waits in the queue.
        let before = chunks(&[1, 3, 4], &[2], 4);
        let after = chunks(&[1, 3, 4, 5], &[2], 5);
        assert_eq!(compare(&before, &index(&[1, 2, 3], 3), &after), (vec![], vec![]));
    }

    #[test]
    fn changes_while_reading_raise_no_alarm() {
        // 3 deleted and its delete applied between the reads: gone from
        // the index, still in `before`; 6 written and indexed after `before`.
        let before = chunks(&[1, 2, 3], &[], 3);
        let after = chunks(&[1, 2, 6], &[], 6);
        assert_eq!(compare(&before, &index(&[1, 2, 6], 6), &after), (vec![], vec![]));
    }

    #[test]
    fn missing_and_stale_chunks_are_found() {
        // 2 was taken in (through 9) but is not there; 9 was deleted and
        // its delete applied (not queued), yet the index still has it.
        let before = chunks(&[1, 2, 3, 4], &[], 9);
        let after = chunks(&[1, 2, 3, 4], &[], 9);
        assert_eq!(
            compare(&before, &index(&[1, 3, 4, 9], 9), &after),
            (vec![2], vec![9])
        );
    }
}
