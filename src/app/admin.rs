//! `ragd user`: accounts managed from the command line, beside a running
//! server. No data dir lock is taken: the commands open the database with
//! a connection of their own (`Db::open_beside_server`), whose writes
//! SQLite serializes with the server's. They follow the API's rules (the
//! email and password rules, Argon2id, the token version), except the
//! registration mode and limits, which are for the public.
//!
//! Tokens stop working at once, since every request reads the user's token
//! version. What only the server holds (its open sockets) it learns of
//! from the `revocations` row each reset and delete writes with its change
//! (`super::notices`, within about a second).

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;
use std::sync::Arc;

use rand::Rng;

use crate::accounts::{valid_email, valid_password};
use crate::auth::password;
use crate::cli::UserCommand;
use crate::db::revocations::{self, Reason};
use crate::db::{self, Db};
use crate::files::Files;

/// Why a command failed; each maps to an exit code.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// Bad input: an email or password that breaks the rules, no database
    /// in the data dir, no way to confirm (exit 2).
    #[error("{0}")]
    Usage(String),
    /// It cannot be done: an unknown or taken email, a database that
    /// cannot be read or written (exit 1).
    #[error("{0}")]
    Failed(String),
}

impl AdminError {
    pub fn exit_code(&self) -> u8 {
        match self {
            AdminError::Usage(_) => 2,
            AdminError::Failed(_) => 1,
        }
    }
}

impl From<db::Error> for AdminError {
    fn from(err: db::Error) -> Self {
        AdminError::Failed(match err {
            db::Error::Busy => "the database stayed busy; retry".to_owned(),
            db::Error::DiskFull => "the disk is full: nothing was changed".to_owned(),
            other => format!("database error: {other}"),
        })
    }
}

/// Characters of a generated password (letters and digits: about 143 bits).
const GENERATED_LEN: usize = 24;

/// Runs `command` on the database of `data_dir`; returns what to print.
pub async fn user(data_dir: &Path, command: UserCommand) -> Result<String, AdminError> {
    match command {
        UserCommand::List { json } => {
            let db = open(data_dir).await?;
            let users = db.read(db::users::summaries).await;
            db.close().await;
            let users = users?;
            if json {
                let text =
                    serde_json::to_string_pretty(&users).map_err(|e| AdminError::Failed(e.to_string()))?;
                return Ok(format!("{text}\n"));
            }
            Ok(table(&users))
        }
        UserCommand::Create {
            email,
            password_stdin,
        } => {
            let (email, password, shown) = account_input(&email, password_stdin)?;
            let db = open(data_dir).await?;
            let created = create(&db, email.clone(), password).await;
            db.close().await;
            let id = created?;
            Ok(format!("created {email} (id {id})\n{shown}"))
        }
        UserCommand::ResetPassword {
            email,
            password_stdin,
        } => {
            let (email, password, shown) = account_input(&email, password_stdin)?;
            let db = open(data_dir).await?;
            let reset = reset_password(&db, email.clone(), password).await;
            db.close().await;
            reset?;
            Ok(format!(
                "reset the password of {email}: its tokens no longer work, and a running server closes its sockets within about a second\n{shown}"
            ))
        }
        UserCommand::Delete { email, yes } => {
            let email = valid_email(&email).map_err(|e| AdminError::Usage(e.to_string()))?;
            let db = open(data_dir).await?;
            let deleted = delete(&db, data_dir, email.clone(), yes).await;
            db.close().await;
            let (summary, removed) = deleted?;
            Ok(format!(
                "deleted {email} (id {}): {} documents ({removed} files removed), {} conversations\n",
                summary.id, summary.documents, summary.conversations
            ))
        }
    }
}

/// The email and new password of `create` and `reset-password`, checked as
/// the API checks them, and what to print of a generated password.
fn account_input(email: &str, password_stdin: bool) -> Result<(String, String, String), AdminError> {
    let email = valid_email(email).map_err(|e| AdminError::Usage(e.to_string()))?;
    let (password, generated) = new_password(password_stdin)?;
    let shown = shown(generated.then(|| password.clone()));
    Ok((email, password, shown))
}

/// Opens the data dir's database beside the server that may be running.
async fn open(data_dir: &Path) -> Result<Db, AdminError> {
    let path = super::existing_database(data_dir).map_err(AdminError::Usage)?;
    tokio::task::spawn_blocking(move || {
        // Nothing is published: no socket listens in this process.
        Db::open_beside_server(&path, Arc::new(|_| {}))
            .map_err(|e| AdminError::Failed(format!("cannot open the database {}: {e}", path.display())))
    })
    .await
    .map_err(|e| AdminError::Failed(format!("cannot open the database: {e}")))?
}

/// The password from stdin's first line, or a generated one (`true`).
fn new_password(from_stdin: bool) -> Result<(String, bool), AdminError> {
    if !from_stdin {
        let password: String = rand::rng()
            .sample_iter(rand::distr::Alphanumeric)
            .take(GENERATED_LEN)
            .map(char::from)
            .collect();
        return Ok((password, true));
    }
    let mut line = String::new();
    let read = std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| AdminError::Failed(format!("cannot read the password from stdin: {e}")))?;
    if read == 0 {
        return Err(AdminError::Usage(
            "--password-stdin: stdin is empty; give the password on its first line".into(),
        ));
    }
    let password = line.strip_suffix('\n').unwrap_or(&line);
    let password = password.strip_suffix('\r').unwrap_or(password).to_owned();
    valid_password(&password).map_err(|e| AdminError::Usage(e.to_string()))?;
    Ok((password, false))
}

/// The line that shows a generated password (the only time it is shown).
fn shown(generated: Option<String>) -> String {
    generated.map_or_else(String::new, |p| format!("password: {p}\n"))
}

async fn create(db: &Db, email: String, password: String) -> Result<String, AdminError> {
    let hash = password::hash(password)
        .await
        .map_err(|e| AdminError::Failed(e.to_string()))?;
    let now = db::now_ms();
    let taken = email.clone();
    let created = db
        .write(move |tx| db::users::create(tx, &email, &hash, now))
        .await?;
    let account = created
        .ok_or_else(|| AdminError::Failed(format!("an account with the email {taken} already exists")))?;
    Ok(account.user.id)
}

async fn reset_password(db: &Db, email: String, password: String) -> Result<(), AdminError> {
    let hash = password::hash(password)
        .await
        .map_err(|e| AdminError::Failed(e.to_string()))?;
    let now = db::now_ms();
    let unknown = no_account(&email);
    db.write(move |tx| {
        let account = db::users::by_email(tx, &email)?.ok_or(db::Error::NotFound)?;
        db::users::reset_password(tx, &account.user.id, &hash)?;
        revocations::record(tx, &account.user.id, Reason::PasswordReset, now)
    })
    .await
    .map_err(|err| match err {
        db::Error::NotFound => unknown,
        other => other.into(),
    })
}

/// Deletes the account as `DELETE /api/auth/me` does (its search index,
/// rows, events and files); returns what it owned and how many files were
/// removed.
async fn delete(
    db: &Db,
    data_dir: &Path,
    email: String,
    yes: bool,
) -> Result<(db::users::Summary, usize), AdminError> {
    let lookup = email.clone();
    let summary = db
        .read(move |conn| db::users::summary_by_email(conn, &lookup))
        .await?
        .ok_or_else(|| no_account(&email))?;
    if !yes {
        confirm(&summary)?;
    }
    let (id, now, unknown) = (summary.id.clone(), db::now_ms(), no_account(&email));
    let documents = db
        .write(move |tx| {
            let documents = db::documents::ids_of_user(tx, &id)?;
            db::chunks::forget_user(tx, &id)?;
            db::users::delete(tx, &id)?;
            revocations::record(tx, &id, Reason::Deleted, now)?;
            Ok(documents)
        })
        .await
        .map_err(|err| match err {
            db::Error::NotFound => unknown,
            other => other.into(),
        })?;
    // After the commit; a file left behind (it is logged) is removed by
    // the server's next start-up sweep.
    let files = Files::new(data_dir);
    let mut removed = 0;
    for document_id in &documents {
        let path = files.path(document_id);
        if path.exists() {
            files.remove(document_id).await;
            if !path.exists() {
                removed += 1;
            }
        }
    }
    tracing::info!(user_id = %summary.id, "account deleted by an administrator");
    Ok((summary, removed))
}

/// Asks on the terminal; without one, `--yes` is required.
fn confirm(summary: &db::users::Summary) -> Result<(), AdminError> {
    if !std::io::stdin().is_terminal() {
        return Err(AdminError::Usage(
            "stdin is not a terminal to confirm on: pass --yes to delete without asking".into(),
        ));
    }
    let mut stderr = std::io::stderr();
    let _ = write!(
        stderr,
        "Delete {} (id {}) with its {} documents and {} conversations? This cannot be undone. Type the email to confirm: ",
        summary.email, summary.id, summary.documents, summary.conversations
    );
    let _ = stderr.flush();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|e| AdminError::Failed(format!("cannot read the confirmation: {e}")))?;
    if answer.trim().to_lowercase() != summary.email {
        return Err(AdminError::Failed("not confirmed: nothing was deleted".into()));
    }
    Ok(())
}

fn no_account(email: &str) -> AdminError {
    AdminError::Failed(format!("no account with the email {email}"))
}

/// The accounts as an aligned table (emails hold no whitespace or control
/// characters: the email rule).
fn table(users: &[db::users::Summary]) -> String {
    let header = ["EMAIL", "ID", "CREATED", "DOCUMENTS", "CONVERSATIONS"];
    let rows: Vec<[String; 5]> = users
        .iter()
        .map(|u| {
            [
                u.email.clone(),
                u.id.clone(),
                u.created_at.clone(),
                u.documents.to_string(),
                u.conversations.to_string(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; 5]| {
        let [email, id, created, documents, conversations] = cells;
        let [w0, w1, w2, w3, w4] = widths;
        format!("{email:<w0$}  {id:<w1$}  {created:<w2$}  {documents:>w3$}  {conversations:>w4$}\n")
    };
    let mut out = line(header);
    for row in &rows {
        out.push_str(&line(row.each_ref().map(String::as_str)));
    }
    if rows.is_empty() {
        out.push_str("(no accounts)\n");
    }
    out
}
