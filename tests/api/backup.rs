//! `ragd backup`, `ragd restore` and `ragd check` (the real binary) on the
//! data dir of a running server: a backup taken under write load restores
//! everything acknowledged before it began, with a new epoch; a restore
//! refuses a non-empty dir and an archive that would write outside it;
//! `check` passes a healthy dir and names each kind of damage.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use reqwest::StatusCode;
use serde_json::json;

use crate::cli::run;
use crate::doc_helpers::{Api, id};
use crate::helpers::TestApp;
use crate::ws_helpers::{Cred, connect_at};

/// What the load acknowledged, and when.
#[derive(Debug, Clone)]
enum Ack {
    /// A reply (200) to a question with this content.
    Message { question: String, reply: String },
    /// An upload (201).
    Document { id: String, bytes: Vec<u8> },
    /// A delete (204) of a document, and when it was sent.
    Deleted { id: String, sent: Instant },
}

/// Posts questions, uploads documents and deletes every other one until
/// `stop`; returns what was acknowledged, with the instant of each answer.
async fn load(api: Api, token: String, conversation: String, stop: Arc<AtomicBool>) -> Vec<(Instant, Ack)> {
    let mut acks = Vec::new();
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let question = format!("load question {n} about quokka{n}");
        let reply = api
            .post_json(
                &format!("/api/conversations/{conversation}/messages"),
                Some(&token),
                &json!({ "content": question }),
            )
            .await;
        let reply = reply.expect(StatusCode::OK)["id"]
            .as_str()
            .expect("an id")
            .to_owned();
        acks.push((Instant::now(), Ack::Message { question, reply }));

        let bytes = format!("Load document {n}: the wombat{n} digs a burrow.").into_bytes();
        let doc = api.upload_ok(&token, &format!("load-{n}.txt"), &bytes).await;
        acks.push((
            Instant::now(),
            Ack::Document {
                id: id(&doc).to_owned(),
                bytes,
            },
        ));
        if n % 2 == 0 {
            let sent = Instant::now();
            api.delete(&format!("/api/documents/{}", id(&doc)), &token)
                .await
                .expect(StatusCode::NO_CONTENT);
            acks.push((
                Instant::now(),
                Ack::Deleted {
                    id: id(&doc).to_owned(),
                    sent,
                },
            ));
        }
    }
    acks
}

fn mode_of(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backup_under_load_restores_everything_acknowledged_before_it_with_a_new_epoch() {
    let app = TestApp::spawn().await;
    let api = Api::of(&app);
    let token = api.register("backup@example.com").await;
    let conversation = app.create_conversation(&token, Some("before the backup")).await;
    let conversation = conversation["id"].as_str().expect("an id").to_owned();
    let ready = [
        ("harbour.txt", "The harbour master counts the herons at dawn."),
        (
            "orchard.md",
            "# Orchard\n\nThe orchard keeper grafts quince trees.",
        ),
    ];
    let mut ready_docs = Vec::new();
    for (name, text) in ready {
        let doc = api.upload_ready(&token, name, text.as_bytes()).await;
        ready_docs.push((id(&doc).to_owned(), text.as_bytes().to_vec()));
    }
    let gone = api.upload_ready(&token, "gone.txt", b"The pelican leaves.").await;
    api.delete(&format!("/api/documents/{}", id(&gone)), &token)
        .await
        .expect(StatusCode::NO_CONTENT);
    // What a client saw before the backup: the epoch and its last event.
    let ws = connect_at(&app.address, Cred::Bearer(&token), "").await;
    let (old_epoch, old_head) = (ws.hello["epoch"].clone(), ws.head());
    ws.close().await;
    assert!(old_head > 0, "events were written");

    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(load(
        Api::of(&app),
        token.clone(),
        conversation.clone(),
        Arc::clone(&stop),
    ));
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;

    let archive_dir = tempfile::tempdir().expect("a temp dir");
    let archive = archive_dir.path().join("ragd-backup.tar");
    let dir = app.data_dir().display().to_string();
    let started = Instant::now();
    let out = run(
        &[
            "backup",
            "--data-dir",
            &dir,
            "--out",
            &archive.display().to_string(),
        ],
        &[],
    )
    .await;
    let finished = Instant::now();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let acks = writer.await.expect("the load task");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "backup succeeds: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("backed up"), "{stdout}");
    assert!(
        acks.iter().any(|(at, _)| *at > started) && acks.iter().any(|(at, _)| *at < started),
        "the load ran before and after the backup began"
    );
    assert_eq!(mode_of(&archive), 0o600, "the archive holds user data");
    let leftovers: Vec<_> = std::fs::read_dir(app.data_dir())
        .expect("list the data dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".backup-"))
        .collect();
    assert!(leftovers.is_empty(), "the staging dir is removed: {leftovers:?}");
    let siblings = std::fs::read_dir(archive_dir.path()).expect("list").count();
    assert_eq!(siblings, 1, "no temporary archive is left beside it");
    app.stop().await;

    let restored_dir = tempfile::tempdir().expect("a temp dir");
    let target = restored_dir.path().display().to_string();
    let out = restore(&archive, &target).await;
    assert!(
        out.status.success(),
        "restore succeeds: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(mode_of(restored_dir.path()), 0o700);
    assert_eq!(mode_of(&restored_dir.path().join("secret.key")), 0o600);
    assert_eq!(mode_of(&restored_dir.path().join("files")), 0o700);
    assert!(
        !restored_dir.path().join("index").exists(),
        "the index is not in the archive"
    );

    let restored = TestApp::spawn_in(restored_dir, Vec::new()).await;
    let api = Api::of(&restored);
    // The archive holds secret.key: the old token is still valid.
    api.get("/api/auth/me", &token).await.expect(StatusCode::OK);

    let listed = api
        .get(
            &format!("/api/conversations/{conversation}/messages?limit=200"),
            &token,
        )
        .await;
    let messages = listed.expect(StatusCode::OK)["items"]
        .as_array()
        .expect("items")
        .clone();
    let contents: Vec<&str> = messages.iter().filter_map(|m| m["content"].as_str()).collect();
    let ids: Vec<&str> = messages.iter().filter_map(|m| m["id"].as_str()).collect();
    let before = |at: &Instant| *at < started;
    let mut checked = (0, 0);
    for (at, ack) in &acks {
        match ack {
            Ack::Message { question, reply } if before(at) => {
                assert!(
                    contents.contains(&question.as_str()),
                    "question {question:?} restored"
                );
                assert!(ids.contains(&reply.as_str()), "reply {reply} restored");
                checked.0 += 1;
            }
            Ack::Document { id: doc, bytes } if before(at) => {
                let deleted = acks.iter().find_map(|(done, a)| match a {
                    Ack::Deleted { id, sent } if id == doc => Some((*sent, *done)),
                    _ => None,
                });
                match deleted {
                    // Deleted and answered before the backup began: gone.
                    Some((_, done)) if done < started => {
                        api.get(&format!("/api/documents/{doc}"), &token)
                            .await
                            .expect_error(StatusCode::NOT_FOUND, "not_found");
                    }
                    // The delete may or may not be in the snapshot.
                    Some((sent, _)) if sent < finished => {}
                    _ => {
                        // Its original is there: the worker parses it.
                        api.wait_for_status(&token, doc, "ready").await;
                        let file = api.get_bytes(&format!("/api/documents/{doc}/file"), &token).await;
                        assert_eq!(&file, bytes, "document {doc}'s original is restored");
                        checked.1 += 1;
                    }
                }
            }
            _ => {}
        }
    }
    assert!(
        checked.0 > 0 && checked.1 > 0,
        "some load was checked: {checked:?}"
    );
    for (doc, bytes) in &ready_docs {
        let found = api.document(&token, doc).await;
        assert_eq!(found["status"], json!("ready"), "{found}");
        let file = api.get_bytes(&format!("/api/documents/{doc}/file"), &token).await;
        assert_eq!(&file, bytes);
    }
    assert_eq!(api.hits_for(&token, "herons", &ready_docs[0].0).await.len(), 1);
    assert_eq!(api.hits_for(&token, "quince", &ready_docs[1].0).await.len(), 1);
    api.get(&format!("/api/documents/{}", id(&gone)), &token)
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");

    // A client that comes back with its old position is told to resync.
    let mut ws = connect_at(
        &restored.address,
        Cred::Bearer(&token),
        &format!("since={old_head}&epoch={}", old_epoch.as_str().expect("a string")),
    )
    .await;
    assert_ne!(
        ws.hello["epoch"], old_epoch,
        "a restored database has a new epoch"
    );
    ws.next_control("resync_required").await;
}

/// A tar with a valid manifest and then `entry` (its name written raw, as
/// a crafted archive would).
fn crafted_archive(entry: &str) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let manifest = json!({
        "format": 1, "ragd_version": "0.1.0", "created_at": "2026-12-01T00:00:00.000Z",
        "epoch": "e", "documents": 0, "secret_key": false
    })
    .to_string();
    let mut header = tar::Header::new_gnu();
    header.set_size(manifest.len() as u64);
    header.set_mode(0o600);
    header.set_entry_type(tar::EntryType::Regular);
    builder
        .append_data(&mut header, "ragd-backup.json", manifest.as_bytes())
        .expect("append the manifest");
    let mut header = tar::Header::new_gnu();
    let name = &mut header.as_gnu_mut().expect("a GNU header").name;
    name[..entry.len()].copy_from_slice(entry.as_bytes());
    header.set_size(7);
    header.set_mode(0o600);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    builder
        .append(&header, &b"escaped"[..])
        .expect("append the entry");
    builder.into_inner().expect("finish the archive")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_refuses_a_non_empty_dir_and_paths_outside_it() {
    let app = TestApp::spawn().await;
    let api = Api::of(&app);
    let token = api.register("refuse@example.com").await;
    api.upload_ready(&token, "a.txt", b"An archive to restore: the kestrel hovers.")
        .await;
    let scratch = tempfile::tempdir().expect("a temp dir");
    let archive = scratch.path().join("good.tar").display().to_string();
    let dir = app.data_dir().display().to_string();
    let out = run(
        &["backup", "--data-dir", &dir, "--out", &archive, "--no-secret"],
        &[],
    )
    .await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let busy = scratch.path().join("busy");
    std::fs::create_dir(&busy).expect("mkdir");
    std::fs::write(busy.join("keep.txt"), b"mine").expect("write");
    let out = restore(&archive, &busy).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("not empty"), "{stderr}");
    let names: Vec<_> = std::fs::read_dir(&busy)
        .expect("list")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(names, vec!["keep.txt"], "nothing is written into it");

    // Into a dir that is missing, or empty, it works.
    let fresh = scratch.path().join("fresh");
    let out = restore(&archive, &fresh).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(fresh.join("ragd.db").is_file());
    assert!(
        !fresh.join("secret.key").exists(),
        "--no-secret leaves the key out"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("everyone signs in again"), "{stdout}");

    // A damaged original: the restore fails and leaves nothing behind.
    let mut bytes = std::fs::read(&archive).expect("read the archive");
    // The last copy of the word: the file (the database, with its chunks,
    // comes first).
    let at = bytes
        .windows(7)
        .rposition(|w| w == b"kestrel")
        .expect("the document's bytes are in the archive");
    bytes[at] = b'K';
    let damaged = scratch.path().join("damaged.tar");
    std::fs::write(&damaged, bytes).expect("write");
    let target = scratch.path().join("from-damaged");
    let out = restore(&damaged, &target).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("damaged") && stderr.contains("SHA-256"),
        "{stderr}"
    );
    assert!(!target.exists(), "a failed restore removes what it made");

    let outside = scratch.path().join("escaped");
    for entry in [
        "../escaped".to_owned(),
        "files/../../escaped".to_owned(),
        outside.display().to_string(),
    ] {
        let crafted = scratch.path().join("crafted.tar");
        std::fs::write(&crafted, crafted_archive(&entry)).expect("write the archive");
        let target = scratch.path().join("target");
        let out = restore(&crafted, &target).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{entry}: {stderr}");
        assert!(stderr.contains("unsafe path"), "{entry}: {stderr}");
        assert!(
            !outside.exists(),
            "{entry}: nothing is written outside the data dir"
        );
        assert!(!target.exists(), "{entry}: a failed restore removes what it made");
    }

    // A crafted database: a document id that is a path. The server would
    // read and delete `files/<id>`, so the restore refuses it.
    let crafted = scratch.path().join("crafted-id.tar");
    std::fs::write(&crafted, with_document_id(&archive, "../../escaped-id")).expect("write");
    let target = scratch.path().join("from-crafted-id");
    let out = restore(&crafted, &target).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("not a plain name"), "{stderr}");
    assert!(!target.exists(), "a failed restore removes what it made");

    // An archive written over the live database would destroy it.
    let db = app.data_dir().join("ragd.db");
    let before = std::fs::metadata(&db).expect("the database").len();
    let out = run(
        &["backup", "--data-dir", &dir, "--out", &db.display().to_string()],
        &[],
    )
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("inside the data dir"), "{stderr}");
    assert_eq!(std::fs::metadata(&db).expect("the database").len(), before);
    api.upload_ready(&token, "b.txt", b"Still serving after the refused backup.")
        .await;
}

/// The archive at `path` with every document's id in its database set to
/// `id` (the other entries as they were, in their order).
fn with_document_id(path: &str, id: &str) -> Vec<u8> {
    let scratch = tempfile::tempdir().expect("a temp dir");
    let mut archive = tar::Archive::new(std::fs::File::open(path).expect("open the archive"));
    let mut builder = tar::Builder::new(Vec::new());
    for entry in archive.entries().expect("entries") {
        let mut entry = entry.expect("an entry");
        let name = entry.path().expect("a path").display().to_string();
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut bytes).expect("read");
        if name == "ragd.db" {
            let db = scratch.path().join("ragd.db");
            std::fs::write(&db, &bytes).expect("write");
            let conn = rusqlite::Connection::open(&db).expect("open");
            // The chunks and jobs that name the old id stay as they are.
            conn.execute_batch("PRAGMA foreign_keys = OFF").expect("pragma");
            conn.execute("UPDATE documents SET id = ?1", [id])
                .expect("rename");
            conn.close().expect("close");
            bytes = std::fs::read(&db).expect("read back");
        }
        let mut header = entry.header().clone();
        header.set_size(bytes.len() as u64);
        header.set_cksum();
        builder.append(&header, &bytes[..]).expect("append");
    }
    builder.into_inner().expect("the archive")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_passes_a_healthy_dir_while_serving_and_names_each_damage() {
    let app = TestApp::spawn().await;
    let api = Api::of(&app);
    let token = api.register("check@example.com").await;
    let kept = api
        .upload_ready(&token, "kept.txt", b"The lighthouse stands.")
        .await;
    let lost = api
        .upload_ready(&token, "lost.txt", b"The ferry sails at noon.")
        .await;
    let dir = app.data_dir().display().to_string();

    let out = run(&["check", "--data-dir", &dir], &[]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("healthy"), "{stdout}");
    assert!(!stdout.contains("PROBLEM"), "{stdout}");

    let (data, _) = app.stop().await;
    let files = data.path().join("files");
    std::fs::remove_file(files.join(id(&lost))).expect("remove a document's file");
    let orphan = "0190aaaa-0000-7000-8000-000000000000";
    std::fs::write(files.join(orphan), b"nobody's").expect("an orphan file");
    std::fs::write(data.path().join("index").join("meta.json"), b"{ not json").expect("damage the index");
    let conn = rusqlite::Connection::open(data.path().join("ragd.db")).expect("open the database");
    conn.execute_batch("PRAGMA foreign_keys = OFF; DELETE FROM users;")
        .expect("delete under the foreign keys");
    drop(conn);

    let out = run(&["check", "--data-dir", &dir], &[]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for needle in [
        format!("have no file in {}", files.display()),
        id(&lost).to_owned(),
        "belong to no document".to_owned(),
        orphan.to_owned(),
        "search index".to_owned(),
        "foreign_key_check".to_owned(),
        "4 problems found".to_owned(),
    ] {
        assert!(stdout.contains(&needle), "the report names {needle:?}:\n{stdout}");
    }
    assert!(!stdout.contains(&format!("no file in {}: {}", files.display(), id(&kept))));
    assert!(files.join(orphan).exists(), "check changes nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_of_an_older_schema_says_a_server_migrates_it_and_of_a_newer_one_fails() {
    let app = TestApp::spawn().await;
    let api = Api::of(&app);
    let token = api.register("schema@example.com").await;
    api.upload_ready(&token, "kept.txt", b"The lighthouse stands.")
        .await;
    let (data, _) = app.stop().await;
    let dir = data.path().display().to_string();
    let conn = rusqlite::Connection::open(data.path().join("ragd.db")).expect("open the database");
    let newest: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .expect("the version");

    // As a backup restored from an older ragd, before a server migrated it.
    conn.pragma_update(None, "user_version", newest - 1)
        .expect("set the version");
    let out = run(&["check", "--data-dir", &dir], &[]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("older than this ragd"), "{stdout}");
    assert!(
        stdout.contains("integrity_check"),
        "SQLite's own checks still ran:\n{stdout}"
    );
    assert!(!stdout.contains("cannot read"), "{stdout}");

    conn.pragma_update(None, "user_version", newest + 1)
        .expect("set the version");
    let out = run(&["check", "--data-dir", &dir], &[]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("PROBLEM") && stdout.contains("use a newer ragd"),
        "{stdout}"
    );

    // Another program's database (schema version 0) is not an older ragd's.
    let other = tempfile::tempdir().expect("a temp dir");
    rusqlite::Connection::open(other.path().join("ragd.db"))
        .expect("create")
        .execute_batch("CREATE TABLE notes (body TEXT)")
        .expect("a table");
    let out = run(&["check", "--data-dir", &other.path().display().to_string()], &[]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("not a ragd database"), "{stdout}");
    assert!(!stdout.contains("older than this ragd"), "{stdout}");
}

#[tokio::test]
async fn backup_and_check_of_a_dir_without_a_database_exit_2() {
    let empty = tempfile::tempdir().expect("a temp dir");
    let dir = empty.path().display().to_string();
    let out_file = empty.path().join("out.tar").display().to_string();
    for args in [
        vec!["backup", "--data-dir", &dir, "--out", &out_file],
        vec!["check", "--data-dir", &dir],
    ] {
        let out = run(&args, &[]).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("no ragd database"), "{stderr}");
    }
}

/// `ragd restore --from <from> --data-dir <to>`, run to completion.
async fn restore(from: impl AsRef<std::ffi::OsStr>, to: impl AsRef<std::ffi::OsStr>) -> std::process::Output {
    let (from, to) = (from.as_ref().to_string_lossy(), to.as_ref().to_string_lossy());
    run(&["restore", "--from", &from, "--data-dir", &to], &[]).await
}
