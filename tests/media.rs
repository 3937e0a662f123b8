//! Media pre-fetch against a local HTTPS "CDN": downloads, retries, expiry, limits, and the
//! guards that keep a URL from the network away from places it must not reach.

mod common;

use std::time::Duration;

use common::media_server::{pattern_bytes, reaching, start_cdn, MediaServer};
use common::{Setup, TestApp};
use serde_json::json;
use sha2::{Digest, Sha256};
use time::format_description::well_known::Rfc3339;

fn at(offset_secs: i64) -> String {
    (time::OffsetDateTime::now_utc() + time::Duration::seconds(offset_secs))
        .format(&Rfc3339)
        .unwrap()
}

fn followup(
    event_id: &str,
    ty: &str,
    fid: &str,
    created: &str,
    audio: Option<&str>,
    pdf: Option<&str>,
    expires: &str,
) -> Vec<u8> {
    serde_json::to_vec(&json!({"id": event_id, "type": ty, "created_at": created,
        "data": {"id": fid, "debt_id": "d1", "type": "CALL", "status": "deal_found", "audio_url": audio, "pdf_url": pdf,
                 "media_urls_expire_at": expires, "company_id": "c1"},
        "metadata": {"source": "getbill", "version": "1.0", "company_id": "c1", "followup_id": fid}}))
    .unwrap()
}

async fn start(extra: &str) -> (TestApp, MediaServer) {
    let dir = tempfile::tempdir().unwrap();
    let (server, cert) = start_cdn(dir.path()).await;
    let setup = Setup {
        media_extra: format!(
            "{}retry_base_ms = 50\nretry_max_ms = 200\n{extra}",
            reaching(&cert)
        ),
        ..Setup::default()
    };
    (TestApp::start_in(dir, setup).await, server)
}

async fn wait_media(app: &TestApp, fid: &str, kind: &str, status: &str) -> serde_json::Value {
    let mut db = app.reader();
    let cond = format!("followup_id = '{fid}' AND kind = '{kind}'");
    let start = std::time::Instant::now();
    loop {
        let row = db
            .rows_where("media", &cond)
            .pop()
            .unwrap_or(serde_json::Value::Null);
        if row["status"] == status {
            return row;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "media {fid}/{kind} never became {status}; last seen: {row}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recording_is_downloaded_hashed_and_linked() {
    let (app, cdn) = start("").await;
    let url = cdn.url("/ok/audio/recordings/call_abc123.mp3");
    assert_eq!(
        app.send(&followup(
            "e1",
            "followup.completed",
            "f1",
            &at(0),
            Some(&url),
            None,
            &at(3600)
        ))
        .await,
        200
    );
    let row = wait_media(&app, "f1", "audio", "fetched").await;
    let expected = pattern_bytes(0, 300_000);
    let path = row["path"].as_str().unwrap();
    assert_eq!(std::fs::read(path).unwrap(), expected);
    assert_eq!(row["sha256"], hex::encode(Sha256::digest(&expected)));
    assert_eq!(row["bytes"], 300_000);
    assert_eq!(row["content_type"], "audio/mpeg");
    assert_eq!(row["url_host"], "127.0.0.1");
    assert_eq!(row["url_path"], "/ok/audio/recordings/call_abc123.mp3");
    assert!(
        path.starts_with(app.dir.path().join("media").to_str().unwrap()),
        "{path}"
    );
    let mut db = app.reader();
    assert_eq!(db.row("followups", "id", "f1")["audio_path"], path);
    // The presigned query string is a credential: not in the media table, not anywhere in it.
    assert_eq!(db.count("SELECT COUNT(*) AS n FROM media WHERE (COALESCE(url_host,'') || COALESCE(url_path,'') || COALESCE(path,'') || COALESCE(last_error,'')) LIKE '%SECRET%'"), 0);
    // No temporary file is left beside it.
    let leftovers: Vec<_> = std::fs::read_dir(std::path::Path::new(path).parent().unwrap())
        .unwrap()
        .flatten()
        .filter(|f| f.file_name().to_string_lossy().starts_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_retried_until_the_file_comes() {
    let (app, cdn) = start("").await;
    assert_eq!(
        app.send(&followup(
            "e1",
            "followup.completed",
            "f1",
            &at(0),
            None,
            Some(&cdn.url("/flaky/letter.pdf")),
            &at(3600)
        ))
        .await,
        200
    );
    let row = wait_media(&app, "f1", "pdf", "fetched").await;
    assert_eq!(row["attempts"], 3, "500, 500, then 200");
    assert_eq!(cdn.requests_to("/flaky"), 3);
    assert_eq!(
        app.reader().row("followups", "id", "f1")["pdf_path"],
        row["path"]
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_never_answers_times_out_then_the_url_expires() {
    let (app, cdn) = start("timeout_ms = 300\n").await;
    assert_eq!(
        app.send(&followup(
            "e1",
            "followup.completed",
            "f1",
            &at(0),
            Some(&cdn.url("/hang/a.mp3")),
            None,
            &at(2)
        ))
        .await,
        200
    );
    let row = wait_media(&app, "f1", "audio", "expired").await;
    assert!(
        cdn.requests_to("/hang") >= 2,
        "retried before expiring: {}",
        cdn.requests_to("/hang")
    );
    let err = row["last_error"].as_str().unwrap();
    assert!(err.contains("timed out"), "{err}");
    assert!(!err.contains("SECRET") && !err.contains("X-Amz"), "{err}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_on_arrival_is_not_requested_and_403_after_expiry_is_final() {
    let (app, cdn) = start("").await;
    assert_eq!(
        app.send(&followup(
            "e1",
            "followup.completed",
            "f1",
            &at(-7200),
            Some(&cdn.url("/ok/old.mp3")),
            None,
            &at(-3600)
        ))
        .await,
        200
    );
    let row = wait_media(&app, "f1", "audio", "expired").await;
    assert!(row["last_error"]
        .as_str()
        .unwrap()
        .contains("expired before"));
    assert_eq!(
        cdn.connections.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "no request for an expired URL"
    );
    // A URL that answers 403 and then expires: retried while valid, final once expired.
    assert_eq!(
        app.send(&followup(
            "e2",
            "followup.completed",
            "f2",
            &at(0),
            Some(&cdn.url("/gone/a.mp3")),
            None,
            &at(1)
        ))
        .await,
        200
    );
    let row = wait_media(&app, "f2", "audio", "expired").await;
    assert!(
        row["last_error"].as_str().unwrap().contains("HTTP 403"),
        "{row}"
    );
    assert!(cdn.requests_to("/gone") >= 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_files_fail_with_the_reason() {
    let (app, cdn) = start("max_bytes = 100000\n").await;
    // Announced too large, and too large without announcing it.
    assert_eq!(
        app.send(&followup(
            "e1",
            "followup.completed",
            "f1",
            &at(0),
            Some(&cdn.url("/sized/500000/a.mp3")),
            Some(&cdn.url("/stream/500000/b.pdf")),
            &at(3600)
        ))
        .await,
        200
    );
    for kind in ["audio", "pdf"] {
        let row = wait_media(&app, "f1", kind, "failed").await;
        assert!(
            row["last_error"].as_str().unwrap().contains("max_bytes"),
            "{row}"
        );
        assert!(row["path"].is_null());
    }
    let files: Vec<_> = common::walk(&app.dir.path().join("media"));
    assert!(
        files.is_empty(),
        "nothing of an oversize file is kept: {files:?}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_are_checked_hop_by_hop() {
    let (app, cdn) = start("").await;
    assert_eq!(
        app.send(&followup(
            "e1",
            "followup.completed",
            "f1",
            &at(0),
            Some(&cdn.url("/redirect-out")),
            Some(&cdn.url("/redirect-in")),
            &at(3600)
        ))
        .await,
        200
    );
    let row = wait_media(&app, "f1", "audio", "failed").await;
    let err = row["last_error"].as_str().unwrap();
    assert!(
        err.contains("redirect refused") && err.contains("not on media.allowed_hosts"),
        "{err}"
    );
    assert!(!err.contains("sig="), "{err}");
    let row = wait_media(&app, "f1", "pdf", "fetched").await;
    assert_eq!(
        row["bytes"], 300_000,
        "a redirect to an allowed host is followed"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_off_the_allowlist_and_private_addresses_are_refused_without_a_connection() {
    let dir = tempfile::tempdir().unwrap();
    let (cdn, cert) = start_cdn(dir.path()).await;
    let setup = Setup {
        media_extra: format!(
            "allowed_hosts = [\"127.0.0.1\", \"localhost\", \"::1\", \"::ffff:127.0.0.1\", \"::ffff:7f00:1\"]\nallow_private_networks = false\nextra_ca_file = {:?}\n",
            cert.cert
        ),
        ..Setup::default()
    };
    let app = TestApp::start_in(dir, setup).await;
    let p = cdn.port;
    let cases = [
        (
            "f1",
            format!("https://127.0.0.1:{p}/ok/a.mp3?sig=1"),
            "not public",
        ),
        (
            "f2",
            format!("https://[::1]:{p}/ok/a.mp3?sig=1"),
            "not public",
        ),
        (
            "f3",
            format!("https://[::ffff:127.0.0.1]:{p}/ok/a.mp3?sig=1"),
            "not public",
        ),
        (
            "f4",
            format!("https://localhost:{p}/ok/a.mp3?sig=1"),
            "non-public address",
        ),
        (
            "f5",
            format!("https://media.evil.example:{p}/ok/a.mp3?sig=1"),
            "not on media.allowed_hosts",
        ),
        (
            "f6",
            format!("http://127.0.0.1:{p}/ok/a.mp3?sig=1"),
            "scheme http",
        ),
    ];
    for (fid, url, _) in &cases {
        assert_eq!(
            app.send(&followup(
                &format!("e_{fid}"),
                "followup.completed",
                fid,
                &at(0),
                Some(url),
                None,
                &at(3600)
            ))
            .await,
            200
        );
    }
    for (fid, _, why) in &cases {
        let row = wait_media(&app, fid, "audio", "failed").await;
        let err = row["last_error"].as_str().unwrap();
        assert!(err.contains(why), "{fid}: {err}");
        assert!(!err.contains("sig="), "{err}");
    }
    assert_eq!(
        cdn.connections.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the local server saw no connection"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_url_replaces_one_not_fetched_yet() {
    let (app, cdn) = start("timeout_ms = 300\n").await;
    assert_eq!(
        app.send(&followup(
            "e1",
            "followup.created",
            "f1",
            &at(-60),
            Some(&cdn.url("/hang/old.mp3")),
            None,
            &at(3600)
        ))
        .await,
        200
    );
    let mut db = app.reader();
    common::wait_until("a first failed attempt", Duration::from_secs(30), || {
        db.count("SELECT COUNT(*) AS n FROM media WHERE followup_id = 'f1' AND attempts >= 1 AND status = 'pending'") == 1
    })
    .await;
    assert_eq!(
        app.send(&followup(
            "e2",
            "followup.completed",
            "f1",
            &at(0),
            Some(&cdn.url("/ok/fresh.mp3")),
            None,
            &at(3600)
        ))
        .await,
        200
    );
    let row = wait_media(&app, "f1", "audio", "fetched").await;
    assert_eq!(row["url_path"], "/ok/fresh.mp3");
    assert_eq!(row["bytes"], 300_000);
    // A renewed signature for the same object does not fetch it again.
    let before = cdn.requests_to("/ok/fresh.mp3");
    let renewed = cdn
        .url("/ok/fresh.mp3")
        .replace("SECRETSIG0123", "SECRETSIG9999");
    assert_eq!(
        app.send(&followup(
            "e3",
            "followup.updated",
            "f1",
            &at(10),
            Some(&renewed),
            None,
            &at(3600)
        ))
        .await,
        200
    );
    app.wait_projected().await;
    assert_eq!(db.status_of("e3").as_deref(), Some("applied"));
    assert_eq!(
        wait_media(&app, "f1", "audio", "fetched").await["bytes"],
        300_000
    );
    assert_eq!(cdn.requests_to("/ok/fresh.mp3"), before);
    // Another object (a new path) is the media changing: it is fetched again.
    assert_eq!(
        app.send(&followup(
            "e4",
            "followup.updated",
            "f1",
            &at(20),
            Some(&cdn.url("/ok/changed.mp3")),
            None,
            &at(3600)
        ))
        .await,
        200
    );
    let mut db2 = app.reader();
    common::wait_until("the changed recording", Duration::from_secs(30), || {
        db2.count("SELECT COUNT(*) AS n FROM media WHERE followup_id = 'f1' AND status = 'fetched' AND url_path = '/ok/changed.mp3'") == 1
    })
    .await;
    assert_eq!(cdn.requests_to("/ok/changed.mp3"), 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_downloads_resume_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (cdn, cert) = start_cdn(dir.path()).await;
    let media = |enabled: bool| {
        Setup {
        media_extra: format!("enabled = {enabled}\nallowed_hosts = [\"127.0.0.1\"]\nallow_private_networks = true\nextra_ca_file = {:?}\n", cert.cert),
        ..Setup::default()
    }
    };
    // First run: the fetcher is off, so the download stays pending.
    let app = TestApp::start_in(dir, media(false)).await;
    assert_eq!(
        app.send(&followup(
            "e1",
            "followup.completed",
            "f1",
            &at(0),
            Some(&cdn.url("/ok/a.mp3")),
            Some(&cdn.url("/ok/b.pdf")),
            &at(3600)
        ))
        .await,
        200
    );
    app.wait_projected().await;
    assert_eq!(
        app.reader()
            .count("SELECT COUNT(*) AS n FROM media WHERE status = 'pending'"),
        2
    );
    assert_eq!(app.metric("hooksync_media_pending ").await, 2);
    let dir = app.stop().await;
    assert_eq!(cdn.connections.load(std::sync::atomic::Ordering::SeqCst), 0);
    // Second run on the same files: both complete.
    let app = TestApp::start_in(dir, media(true)).await;
    wait_media(&app, "f1", "audio", "fetched").await;
    wait_media(&app, "f1", "pdf", "fetched").await;
    assert_eq!(app.metric("hooksync_media_pending ").await, 0);
    app.stop().await;
}

/// Followup ids that a lossy mapping would give one file name (a separator and its
/// replacement, a leading dot and none, an escape and what it stands for) and ids longer than
/// a file name may be: each gets its own file, with its own bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followups_whose_ids_differ_never_share_a_file() {
    let (app, cdn) = start("").await;
    let long = "x".repeat(300);
    let longer = format!("{long}y");
    let ids = [
        "a/b", "a_b", "a%2Fb", ".hidden", "hidden", "..", "a b", "a.b", &long, &longer,
    ];
    for (i, fid) in ids.iter().enumerate() {
        let url = cdn.url(&format!("/stream/{}/r.mp3", 1000 + i));
        let body = followup(
            &format!("e{i}"),
            "followup.completed",
            fid,
            &at(0),
            Some(&url),
            None,
            &at(3600),
        );
        assert_eq!(app.send(&body).await, 200, "{fid}");
    }
    let mut paths = std::collections::HashSet::new();
    for (i, fid) in ids.iter().enumerate() {
        let row = wait_media(&app, fid, "audio", "fetched").await;
        let path = row["path"].as_str().unwrap().to_string();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len(), 1000 + i, "{fid} -> {path}");
        assert_eq!(row["sha256"], hex::encode(Sha256::digest(&bytes)), "{fid}");
        let name = std::path::Path::new(&path)
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        assert!(!name.starts_with('.') && name.len() <= 150, "{name}");
        assert!(paths.insert(path), "{fid} shares a file");
    }
    app.stop().await;
}
