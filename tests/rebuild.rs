//! `hooksync rebuild`: the domain tables made again from the event log, by the real binary,
//! beside a daemon that keeps serving.

mod common;

use std::process::Command;
use std::time::Duration;

use common::media_server::{reaching, start_cdn};
use common::stream::{lifecycle, signed};
use common::{Daemon, Setup, TestApp};
use serde_json::json;

const TABLES: &[&str] = &["debts", "followups", "payments", "payment_plans", "notices"];

fn recording(cdn_url: &str) -> Vec<u8> {
    let expires = (time::OffsetDateTime::now_utc() + time::Duration::hours(1))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    serde_json::to_vec(&json!({"id": "evt_recording", "type": "followup.completed",
        "created_at": "2024-03-01T10:00:00Z",
        "data": {"id": "f_rec", "debt_id": "d_rec", "type": "CALL", "status": "deal_found",
                 "audio_url": cdn_url, "pdf_url": null, "media_urls_expire_at": expires, "company_id": "c1"},
        "metadata": {"source": "getbill", "version": "1.0", "company_id": "c1", "followup_id": "f_rec"}}))
    .unwrap()
}

fn rebuild(config: &std::path::Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_hooksync"))
        .arg("--config")
        .arg(config)
        .arg("rebuild")
        .output()
        .expect("run hooksync rebuild");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success(),
        "rebuild failed: {}\n{stdout}{stderr}",
        out.status
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuild_gives_back_the_tables_and_keeps_downloaded_media() {
    let dir = tempfile::tempdir().unwrap();
    let (cdn, cdn_cert) = start_cdn(dir.path()).await;
    let setup = Setup {
        media_extra: reaching(&cdn_cert),
        ..Setup::default()
    };
    let app = TestApp::start_in(dir, setup.clone()).await;
    let events = lifecycle(40, 1);
    let stream_events = events.len() as i64;
    let first_created = events[0].id.clone();
    common::send_concurrently(&app, signed(events), 4).await;
    // A type no version handles: kept aside, and it stays so.
    let unknown = serde_json::to_vec(&json!({"id": "evt_unknown", "type": "company.renamed",
        "created_at": "2024-03-02T00:00:00Z", "data": {"id": "c1"},
        "metadata": {"source": "getbill", "version": "1.0", "company_id": "c1"}}))
    .unwrap();
    assert_eq!(app.send(&unknown).await, 200);
    let url = cdn.url("/ok/audio/recordings/rebuilt.mp3");
    assert_eq!(app.send(&recording(&url)).await, 200);
    app.wait_projected().await;
    let mut db = app.reader();
    common::wait_until(
        "the recording to be downloaded",
        Duration::from_secs(30),
        || db.count("SELECT COUNT(*) AS n FROM media WHERE status = 'fetched'") == 1,
    )
    .await;

    let before: Vec<serde_json::Value> = TABLES.iter().map(|t| db.snapshot(t)).collect();
    for (table, rows) in TABLES.iter().zip(&before) {
        assert!(
            rows.as_array().is_some_and(|r| !r.is_empty()),
            "{table} is empty"
        );
    }
    let media = db.snapshot("media");
    let file = db.row("followups", "id", "f_rec")["audio_path"].clone();
    assert!(file.is_string(), "the recording is linked: {file}");
    let downloads = cdn.requests_to("/ok/");

    // What a mapping bug or a hand edit leaves behind; and an event an older version did not
    // handle (its debt then never had the fields it creates).
    db.raw()
        .batch(&format!(
            "UPDATE debts SET amount = 0, email = NULL; DELETE FROM payments; \
             DELETE FROM notices; UPDATE followups SET audio_path = NULL; \
             UPDATE events SET status = 'unhandled' WHERE event_id = '{first_created}'"
        ))
        .unwrap();
    assert_ne!(db.snapshot("debts"), before[0]);
    assert_eq!(db.status_of(&first_created).as_deref(), Some("unhandled"));

    // The real binary, with the daemon still serving (and projecting) beside it.
    let config = Daemon::write_config(app.dir.path(), &setup);
    let said = rebuild(&config.path);
    let requeued = stream_events + 1;
    assert!(
        said.contains(&format!(
            "{requeued} events applied again (1 of them kept unhandled before), 1 media paths restored"
        )) && said.contains("1 unhandled"),
        "{said}"
    );

    for (table, rows) in TABLES.iter().zip(&before) {
        assert_eq!(&db.snapshot(table), rows, "{table} after the rebuild");
    }
    assert_eq!(db.row("followups", "id", "f_rec")["audio_path"], file);
    assert_eq!(db.snapshot("media"), media, "media rows untouched");
    assert_eq!(
        cdn.requests_to("/ok/"),
        downloads,
        "nothing downloaded again"
    );
    assert_eq!(
        db.count("SELECT COUNT(*) AS n FROM events WHERE status NOT IN ('applied', 'stale')"),
        1
    );
    assert_eq!(db.status_of("evt_unknown").as_deref(), Some("unhandled"));
    assert_eq!(db.status_of(&first_created).as_deref(), Some("applied"));

    // The daemon goes on as before: a new event is stored and projected.
    let next = serde_json::to_vec(&json!({"id": "evt_after", "type": "debt.created",
        "created_at": "2024-04-01T00:00:00Z", "data": {"id": "d_after", "amount": 12.5},
        "metadata": {"source": "getbill", "version": "1.0", "company_id": "c1"}}))
    .unwrap();
    assert_eq!(app.send(&next).await, 200);
    app.wait_projected().await;
    assert_eq!(db.row("debts", "id", "d_after")["amount"], "12.5");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuild_knows_every_table_the_projector_writes() {
    let app = TestApp::start(Setup::default()).await;
    let mut db = app.reader();
    let tables = match db.backend() {
        hooksync::store::Backend::Sqlite => db.list(
            "name",
            "FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name",
        ),
        hooksync::store::Backend::Postgres => db.list(
            "tablename::text",
            "FROM pg_tables WHERE schemaname = current_schema() ORDER BY tablename",
        ),
    };
    // The log, the fetcher's table, the readiness probe's row, the record of runs, the
    // deliveries to the CRM and diesel's bookkeeping are not projections; every other table
    // is, and a rebuild must empty it.
    let not_projected = [
        "events",
        "media",
        "hooksync_health",
        "hooksync_runs",
        "hooksync_deliveries",
        "hooksync_delivery_attempts",
        "hooksync_destinations",
        "__diesel_schema_migrations",
    ];
    let mut missing = Vec::new();
    for t in &tables {
        let t = t.as_str().unwrap();
        if !not_projected.contains(&t) && !hooksync::rebuild::DOMAIN_TABLES.contains(&t) {
            missing.push(t.to_owned());
        }
    }
    assert!(
        missing.is_empty(),
        "tables a rebuild would leave alone: {missing:?}"
    );
    for t in hooksync::rebuild::DOMAIN_TABLES {
        assert!(
            tables.iter().any(|x| x == t),
            "{t} is not in the schema: {tables:?}"
        );
    }
    app.stop().await;
}
