//! What only PostgreSQL offers: several instances on one database, a database that goes away
//! and comes back, and migrations started by several instances at once. (The whole behaviour
//! suite also runs on PostgreSQL: `TEST_BACKEND=postgres`, see `scripts/test`.)
//!
//! Every test here is named `pg_*` and always runs on PostgreSQL, whatever the suite's backend.
//! Under `CI=true` a server that cannot be started fails the run; elsewhere the test says it
//! skipped and why.

mod common;

use std::time::Duration;

use common::pg::PgServer;
use common::stream::{contended, lifecycle, shuffled_with_duplicates, signed};
use common::{Daemon, Load, Reader, Setup, TestApp};

const TABLES: &[&str] = &["debts", "followups", "payments", "payment_plans", "notices"];

/// A fresh database on the shared server, or `None` (said aloud) where no server can run.
fn fresh_database(test: &str) -> Option<String> {
    match common::pg::shared() {
        Ok(server) => {
            let server = server.lock().unwrap_or_else(|p| p.into_inner());
            let name = format!("{test}_{}", std::process::id());
            server.ensure_database(&name);
            Some(server.url(&name))
        }
        Err(why) => {
            common::pg::skip(test, why);
            None
        }
    }
}

/// The database at `url`, migrated, on a connection of the library's own.
fn migrated(url: &str) -> hooksync::store::Db {
    use hooksync::store::{open_and_migrate, DbOptions, DbUrl};
    open_and_migrate(&DbOptions {
        url: DbUrl::parse(url).unwrap(),
        busy_timeout_ms: 1_000,
    })
    .unwrap()
}

fn on(url: &str) -> Setup {
    Setup {
        database_url: Some(url.to_owned()),
        ..Setup::default()
    }
}

async fn status(client: &reqwest::Client, url: String) -> u16 {
    match client.get(url).send().await {
        Ok(r) => r.status().as_u16(),
        Err(_) => 0,
    }
}

/// Both instances get every event, shuffled differently and with duplicates, at the same
/// time; the database must end with one `events` row per id and the same tables as a single
/// instance that got the stream in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_two_instances_on_one_database_end_like_one_in_order() {
    let (Some(shared), Some(reference)) = (
        fresh_database("pg_two_shared"),
        fresh_database("pg_two_reference"),
    ) else {
        return;
    };
    let events = lifecycle(120, 3);
    let distinct = events.len() as i64;

    let ordered = TestApp::start(on(&reference)).await;
    for ev in &events {
        assert_eq!(ordered.send(&ev.body).await, 200);
    }

    let a = TestApp::start(on(&shared)).await;
    let b = TestApp::start(on(&shared)).await;
    tokio::join!(
        common::send_concurrently(&a, signed(shuffled_with_duplicates(&events, 11)), 4),
        common::send_concurrently(&b, signed(shuffled_with_duplicates(&events, 12)), 4),
    );

    let (_, mut got) = common::assert_ends_like_in_order(&ordered, &a, distinct, TABLES).await;
    assert_eq!(
        got.count("SELECT COUNT(DISTINCT event_id) AS n FROM events"),
        distinct
    );
    // Both instances' projectors took part (each claims what the other has not locked).
    let (applied_a, applied_b) = (projected(&a).await, projected(&b).await);
    assert!(
        applied_a > 0 && applied_b > 0,
        "projected by a: {applied_a}, by b: {applied_b}"
    );
    ordered.stop().await;
    a.stop().await;
    b.stop().await;
}

/// Two projectors drain one backlog side by side: consecutive chunks go to different
/// instances at the same moment and touch the same rows, which the row locks must serialise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_two_projectors_on_one_backlog_end_like_one_in_order() {
    let (Some(shared), Some(reference)) = (
        fresh_database("pg_backlog_shared"),
        fresh_database("pg_backlog_reference"),
    ) else {
        return;
    };
    let events = contended(8, 1200, 5);
    let ordered = TestApp::start(on(&reference)).await;
    for ev in &events {
        assert_eq!(ordered.send(&ev.body).await, 200);
    }
    let ingest = TestApp::start(Setup {
        projector: false,
        ..on(&shared)
    })
    .await;
    common::send_concurrently(&ingest, signed(shuffled_with_duplicates(&events, 21)), 4).await;
    ingest.stop().await;

    let (a, b) = tokio::join!(TestApp::start(on(&shared)), TestApp::start(on(&shared)));
    ordered.wait_projected().await;
    a.wait_projected().await;
    let (mut want, mut got) = (ordered.reader(), a.reader());
    assert_eq!(
        got.count("SELECT COUNT(*) AS n FROM events WHERE status NOT IN ('applied', 'stale')"),
        0
    );
    common::assert_same_tables(&mut want, &mut got, &["debts"]);
    let fields = got
        .count("SELECT COUNT(*) AS n FROM debts, jsonb_object_keys(data) AS k WHERE k LIKE 'f%'");
    assert_eq!(fields, 1200, "every update's field is in its row");
    let (pa, pb) = (projected(&a).await, projected(&b).await);
    assert!(pa > 0 && pb > 0, "projected by a: {pa}, by b: {pb}");
    ordered.stop().await;
    a.stop().await;
    b.stop().await;
}

/// `kill -9` of one of two instances under load: every event either instance acknowledged is
/// stored, and the survivor finishes the projection, including what the dead one had claimed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_kill_9_of_one_instance_loses_nothing_and_the_other_finishes() {
    let Some(url) = fresh_database("pg_kill") else {
        return;
    };
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut a = Daemon::write_config(dir_a.path(), &on(&url)).spawn().await;
    let b = Daemon::write_config(dir_b.path(), &on(&url)).spawn().await;
    let load_a = Load::start(&a.client, &a.url, 0..4);
    let load_b = Load::start(&b.client, &b.url, 4..8);
    load_a.wait_acked(300).await;
    a.child.kill().unwrap(); // SIGKILL
    a.child.wait().unwrap();
    let after = load_b.acked();
    load_b.wait_acked(after + 200).await;
    let mut acked = load_a.finish().await;
    acked.extend(load_b.finish().await);

    let mut db = Reader::open_url(&url);
    db.assert_stored(&acked);
    common::wait_until("the survivor to finish", Duration::from_secs(60), || {
        db.queued() == 0
    })
    .await;
    assert_eq!(
        db.count("SELECT COUNT(*) AS n FROM events WHERE status NOT IN ('applied', 'stale')"),
        0
    );
    assert_eq!(
        db.count("SELECT COUNT(*) AS n FROM debts"),
        db.distinct_payload_ids()
    );
    drop(b);
}

/// PostgreSQL stops under load: senders get 503 and `/readyz` fails while it is down; it
/// comes back and hooksync carries on by itself; nothing acknowledged is missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_restart_under_load_gives_503_then_recovers_without_loss() {
    let mut server = match PgServer::start() {
        Ok(s) => s,
        Err(why) => {
            common::pg::skip("pg_restart_under_load", &why);
            return;
        }
    };
    server.ensure_database("restart");
    let url = server.url("restart");
    let app = TestApp::start(on(&url)).await;
    let ready = || status(&app.client, format!("{}/readyz", app.admin));
    assert_eq!(ready().await, 200);

    let load = Load::start(&app.client, &app.url, 0..4);
    load.wait_acked(200).await;
    tokio::task::block_in_place(|| server.stop());
    let down_at = load.acked();
    let refused = || load.unavailable.load(std::sync::atomic::Ordering::Relaxed);
    common::wait_until(
        "503s while the database is down",
        Duration::from_secs(30),
        || refused() >= 20,
    )
    .await;
    assert_eq!(ready().await, 503, "/readyz while the database is down");
    assert!(
        load.acked() <= down_at + 4,
        "at most the commits in flight at the stop may be acknowledged after it"
    );

    tokio::task::block_in_place(|| server.restart());
    common::eventually("ready again", Duration::from_secs(30), async || {
        ready().await == 200
    })
    .await;
    let back_at = load.acked();
    load.wait_acked(back_at + 200).await;
    let acked = load.finish().await;

    let mut db = Reader::open_url(&url);
    db.assert_stored(&acked);
    app.wait_projected().await;
    assert_eq!(
        db.count("SELECT COUNT(*) AS n FROM events WHERE status NOT IN ('applied', 'stale')"),
        0
    );
    drop(db);
    app.stop().await;
}

/// Several instances starting at once on an empty database: one migrates, the others wait
/// for the lock and find nothing left to do.
#[test]
fn pg_migrations_from_several_instances_at_once() {
    let Some(url) = fresh_database("pg_migrate") else {
        return;
    };
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml.example");
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || {
                std::process::Command::new(env!("CARGO_BIN_EXE_hooksync"))
                    .args(["--config", example, "migrate"])
                    .env("GETBILL_WEBHOOK_SECRET", "x")
                    .env("HOOKSYNC_DATABASE__URL", url)
                    .output()
                    .expect("run hooksync migrate")
            })
        })
        .collect();
    let mut idle = 0;
    for h in handles {
        let out = h.join().unwrap();
        let text = String::from_utf8_lossy(&out.stderr).to_string()
            + &String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{text}");
        idle += usize::from(text.contains("0 migration(s) applied"));
    }
    assert_eq!(idle, 3, "exactly one instance migrates");
    let mut db = Reader::open_url(&url);
    for t in ["events", "debts", "media", "invoices", "records"] {
        assert!(db.table_exists(t), "{t}");
    }
    let folders = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/postgres"))
        .unwrap()
        .count();
    assert_eq!(
        db.count("SELECT COUNT(*) AS n FROM __diesel_schema_migrations"),
        folders as i64
    );
}

#[derive(diesel::QueryableByName)]
struct IndexColumn {
    #[diesel(sql_type = diesel::sql_types::Text)]
    index: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    column: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    collation: String,
}

/// Every text key compares byte by byte, as on SQLite, whatever the database's default
/// collation: ids are opaque, and a linguistic collation would put `strcoll()` on every
/// comparison of the dedup index (ingest ~18% slower on an en_US.UTF-8 database).
#[test]
fn pg_text_keys_compare_in_byte_order() {
    use hooksync::store::Stmt;
    let Some(url) = fresh_database("pg_collation") else {
        return;
    };
    let mut db = migrated(&url);
    let columns: Vec<IndexColumn> = db
        .load(Stmt::new(
            "SELECT ic.relname::text AS index, a.attname::text AS column, \
             a.attcollation::regcollation::text AS collation \
             FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid \
             JOIN pg_class tc ON tc.oid = i.indrelid JOIN pg_attribute a ON a.attrelid = ic.oid \
             WHERE tc.relnamespace = current_schema()::regnamespace \
             AND a.atttypid = 'text'::regtype ORDER BY 1, 2",
        ))
        .unwrap();
    let keys: Vec<String> = columns
        .iter()
        .map(|c| format!("{}.{}", c.index, c.column))
        .collect();
    for want in [
        "events_source_event_id_key.event_id",
        "debts_pkey.id",
        "media_pkey.kind",
    ] {
        assert!(keys.iter().any(|k| k == want), "{want} in {keys:?}");
    }
    let linguistic: Vec<String> = columns
        .iter()
        .filter(|c| c.collation != "\"C\"")
        .map(|c| format!("{}.{} {}", c.index, c.column, c.collation))
        .collect();
    assert!(linguistic.is_empty(), "{linguistic:?}");
}

#[derive(diesel::QueryableByName)]
struct PlanLine {
    #[diesel(sql_type = diesel::sql_types::Text, column_name = "QUERY PLAN")]
    line: String,
}

/// The projector's next chunk must come from the ordered partial index, not from a sort of
/// every queued event: with a backlog the latter makes every chunk cost the whole queue.
#[test]
fn pg_next_chunk_reads_the_queue_index() {
    use hooksync::store::{Backend, Stmt};
    let Some(url) = fresh_database("pg_plan") else {
        return;
    };
    let mut db = migrated(&url);
    db.batch(
        "INSERT INTO events (source, provider, event_id, event_type, occurred_at, received_at, payload, status) \
         SELECT 'getbill', 'getbill', 'e' || i, 'debt.created', now() - i * interval '1 second', now(), '{}', \
         CASE WHEN i % 10 = 0 THEN 'queued' ELSE 'applied' END FROM generate_series(1, 20000) AS i; ANALYZE events",
    )
    .unwrap();
    let sql = format!(
        "EXPLAIN {}",
        hooksync::testkit::next_queued_sql(Backend::Postgres)
    );
    let plan: Vec<PlanLine> = db.load(Stmt::new(&sql).int(32)).unwrap();
    let text: Vec<&str> = plan.iter().map(|p| p.line.as_str()).collect();
    assert!(
        text.iter()
            .any(|l| l.contains("Index Scan using events_queued")),
        "{text:#?}"
    );
    assert!(!text.iter().any(|l| l.contains("Sort")), "{text:#?}");
}

/// Events an instance's projector finished (applied or stale).
async fn projected(app: &TestApp) -> u64 {
    app.metric("hooksync_events_applied_total{outcome=\"applied\"}")
        .await
        + app
            .metric("hooksync_events_applied_total{outcome=\"stale\"}")
            .await
}

/// While the database does not answer the scrape's counts in time (a lock held by another
/// session), a scrape neither waits nor shows a false 0: the gauges keep the last values read
/// and `hooksync_database_up` says 0, so an alert on them does not silently stop matching;
/// once the lock goes, they are read again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_backlog_gauges_stay_marked_stale_while_the_database_does_not_answer() {
    let Some(url) = fresh_database("pg_backlog_gauges") else {
        return;
    };
    // Lock waits outlast the scrape's limit, so the limit is what answers.
    let app = TestApp::start(Setup {
        database_extra: "busy_timeout_ms = 30000\n".into(),
        ..on(&url)
    })
    .await;
    let scrape = || async {
        let text = app
            .client
            .get(format!("{}/metrics", app.admin))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .expect("a scrape answered within 10 s")
            .text()
            .await
            .expect("body");
        let value = |name: &str| common::sample_sum(&text, name);
        (
            value("hooksync_events_queued"),
            value("hooksync_database_up"),
            value("hooksync_requests_total"),
        )
    };
    assert_eq!(scrape().await, (Some(0.0), Some(1.0), Some(0.0)));

    let mut holder = Reader::open_url(&url);
    holder
        .raw()
        .batch("BEGIN; LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
        .unwrap();
    // The first scrape waits for its limit; the next finds that count still waiting.
    for _ in 0..2 {
        assert_eq!(scrape().await, (Some(0.0), Some(0.0), Some(0.0)));
    }
    holder.raw().batch("COMMIT").unwrap();
    common::eventually(
        "the gauges to be read again",
        Duration::from_secs(20),
        async || scrape().await.1 == Some(1.0),
    )
    .await;
}

/// `hooksync rebuild` loses its connection half-way (a restarted server, a proxy's idle cut:
/// here the server ends the session): it goes on over a fresh connection and finishes, with
/// every event applied again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_rebuild_goes_on_after_its_connection_is_cut() {
    let Some(url) = fresh_database("pg_rebuild_cut") else {
        return;
    };
    // Enough events that the rebuild is still applying when it is cut (seconds, against a
    // check every few milliseconds).
    const EVENTS: i64 = 20_000;
    seed_applied_log(&url, EVENTS);
    let dir = tempfile::tempdir().unwrap();
    let rebuild = start_rebuild(dir.path(), &url);

    let mut db = Reader::open_url(&url);
    common::wait_until("the rebuild to be applying the log", Duration::from_secs(60), || {
        db.count(
            "SELECT COUNT(*) AS n FROM debts WHERE EXISTS (SELECT 1 FROM events WHERE status = 'queued')",
        ) > 0
    })
    .await;
    // Only while events are still queued: a cut after the last chunk would show nothing.
    let cut = db.count(
        "SELECT COUNT(*) FILTER (WHERE pg_terminate_backend(pid)) AS n FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid() \
         AND backend_type = 'client backend' \
         AND EXISTS (SELECT 1 FROM events WHERE status = 'queued')",
    );
    assert_eq!(
        cut, 1,
        "the rebuild's session, cut while events were queued"
    );

    let stderr = rebuilt(rebuild, &mut db, EVENTS).await;
    assert!(
        stderr.contains("trying again on a fresh connection"),
        "the cut was seen and survived: {stderr}"
    );
}

/// The steps before and after applying the log (emptying the tables and queueing the log
/// again; putting back the paths of downloaded files) are retried on a fresh connection too.
/// Each is held on a table lock the test takes, so that the server ends the rebuild's session
/// exactly while that step waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_rebuild_goes_on_when_cut_before_and_after_applying() {
    let Some(url) = fresh_database("pg_rebuild_cut_ends") else {
        return;
    };
    const EVENTS: i64 = 2_000;
    seed_applied_log(&url, EVENTS);
    let mut tables = migrated(&url);
    tables
        .batch("BEGIN; LOCK TABLE debts IN ACCESS EXCLUSIVE MODE")
        .unwrap();
    let mut files = migrated(&url);
    files
        .batch("BEGIN; LOCK TABLE media IN ACCESS EXCLUSIVE MODE")
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut rebuild = start_rebuild(dir.path(), &url);

    let mut db = Reader::open_url(&url);
    for (table, held) in [("debts", &mut tables), ("media", &mut files)] {
        let waiting = format!(
            "FROM pg_locks WHERE NOT granted AND relation = '{table}'::regclass \
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        );
        common::wait_until(
            &format!("the rebuild to wait for the lock on {table}"),
            Duration::from_secs(60),
            || {
                rebuild.try_wait().expect("try_wait").is_some()
                    || db.count(&format!("SELECT COUNT(*) AS n {waiting}")) == 1
            },
        )
        .await;
        if rebuild.try_wait().expect("try_wait").is_some() {
            // Shows how it ended if it failed.
            rebuilt(rebuild, &mut db, EVENTS).await;
            panic!("the rebuild ended before it waited on {table}");
        }
        let cut = db.count(&format!(
            "SELECT COUNT(*) FILTER (WHERE pg_terminate_backend(pid)) AS n {waiting}"
        ));
        assert_eq!(
            cut, 1,
            "the rebuild's session, cut while it waited on {table}"
        );
        held.batch("COMMIT").unwrap();
    }

    let stderr = rebuilt(rebuild, &mut db, EVENTS).await;
    assert_eq!(
        stderr.matches("trying again on a fresh connection").count(),
        2,
        "both cuts were seen and survived: {stderr}"
    );
}

/// `events` applied events (one debt each) in a fresh database's log, and no domain rows.
fn seed_applied_log(url: &str, events: i64) {
    migrated(url)
        .batch(&format!(
            "INSERT INTO events (source, provider, event_id, event_type, occurred_at, received_at, payload, status) \
             SELECT 'getbill', 'getbill', 'evt_cut_' || i, 'debt.created', \
                    timestamptz '2024-01-01 00:00:00+00' + i * interval '1 second', now(), \
                    jsonb_build_object('id', 'evt_cut_' || i, 'type', 'debt.created', \
                        'created_at', '2024-01-01T00:00:00Z', \
                        'data', jsonb_build_object('id', 'd' || i, 'status', 'status.default.pending', 'amount', 10.5), \
                        'metadata', jsonb_build_object('source', 'getbill', 'version', '1.0', 'company_id', 'c1')), \
                    'applied' \
             FROM generate_series(1, {events}) AS i"
        ))
        .unwrap();
}

/// The real binary's `rebuild` on `url`, its output captured.
fn start_rebuild(dir: &std::path::Path, url: &str) -> std::process::Child {
    let config = Daemon::write_config(dir, &on(url));
    std::process::Command::new(env!("CARGO_BIN_EXE_hooksync"))
        .arg("--config")
        .arg(&config.path)
        .arg("rebuild")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start hooksync rebuild")
}

/// Waits for the rebuild to succeed with all `events` applied again and one debt each; returns
/// its log.
async fn rebuilt(mut rebuild: std::process::Child, db: &mut Reader, events: i64) -> String {
    common::wait_until("the rebuild to end", Duration::from_secs(120), || {
        rebuild.try_wait().expect("try_wait").is_some()
    })
    .await;
    let out = rebuild.wait_with_output().expect("rebuild output");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success(),
        "rebuild failed: {}\n{stdout}{stderr}",
        out.status
    );
    assert!(
        stdout.contains(&format!("{events} events applied again"))
            && stdout.contains(&format!("{events} applied")),
        "{stdout}"
    );
    assert_eq!(db.count("SELECT COUNT(*) AS n FROM debts"), events);
    assert_eq!(
        db.count("SELECT COUNT(*) AS n FROM events WHERE status <> 'applied'"),
        0
    );
    stderr.into_owned()
}

/// An event stored before numbers were bounded (or written by another tool) whose `jsonb`
/// payload prints as more than a gigabyte: reading it fails with "out of memory" every time.
/// It must end `failed` after its attempts, and the events after it be applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_a_payload_that_reads_back_huge_fails_alone_and_the_queue_goes_on() {
    let Some(url) = fresh_database("pg_huge_payload") else {
        return;
    };
    let mut db = migrated(&url);
    // 120,000 numbers that each print as 10,000 digits: 1.2 GB of text, past what one
    // PostgreSQL string may hold.
    db.batch(
        "INSERT INTO events (source, provider, event_id, event_type, occurred_at, rank, received_at, payload, status) \
         VALUES ('getbill', 'getbill', 'huge', 'debt.created', now() - interval '1 day', 0, now(), \
         ('{\"id\": \"huge\", \"type\": \"debt.created\", \"data\": {\"id\": \"d-huge\", \"n\": [' \
          || repeat('1e9999,', 120000) || '1]}}')::jsonb, 'queued')",
    )
    .unwrap();
    drop(db);
    let app = TestApp::start(Setup {
        projector_extra: "max_attempts = 2".into(),
        ..on(&url)
    })
    .await;
    let events = lifecycle(5, 41);
    for ev in &events {
        assert_eq!(app.send(&ev.body).await, 200);
    }
    app.wait_projected().await;
    let mut r = app.reader();
    // Its payload cannot be read back, so neither can the whole row: its columns one by one.
    let of_huge = |r: &mut Reader, col: &str| {
        r.list(col, "FROM events WHERE event_id = 'huge'")
            .pop()
            .unwrap()
    };
    let why = of_huge(&mut r, "last_error");
    assert_eq!(of_huge(&mut r, "status"), "failed", "{why}");
    assert_eq!(of_huge(&mut r, "attempts"), 2);
    assert!(why.as_str().unwrap().contains("memory"), "{why}");
    assert_eq!(
        r.count("SELECT COUNT(*) AS n FROM events WHERE status IN ('applied', 'stale')"),
        events.len() as i64
    );
    app.stop().await;
}

/// Every number the projector reads back from PostgreSQL's `jsonb` is the text
/// `canonical_number` makes of the literal as it arrived, which is what the projector reads on
/// SQLite: keys and columns come out the same on both backends.
#[test]
fn pg_numbers_read_back_as_the_projector_reads_them_on_sqlite() {
    let Some(url) = fresh_database("pg_numbers") else {
        return;
    };
    drop(migrated(&url));
    let mut literals: Vec<String> = [
        "0", "-0", "-0.0", "12.50", "1.5e3", "1.50e1", "1e-3", "-1.25E+2", "0.5e1", "123e-5",
        "1e99", "-0e5", "100", "1E0", "9.999e-7", "5e+0", "0.000",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    for _ in 0..500 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let int = (x % 100_000).to_string();
        let frac = ["", ".5", ".25", ".000", ".0101"][(x >> 20) as usize % 5];
        let exp = match (x >> 30) % 4 {
            0 => String::new(),
            1 => format!("e{}", (x >> 34) % 40),
            2 => format!("E-{}", (x >> 34) % 40),
            _ => format!("e+{}", (x >> 34) % 40),
        };
        let sign = if (x >> 40) % 3 == 0 { "-" } else { "" };
        literals.push(format!("{sign}{int}{frac}{exp}"));
    }
    let values: Vec<String> = literals
        .iter()
        .enumerate()
        .map(|(i, l)| format!("({i}, '{l}')"))
        .collect();
    let mut r = Reader::open_url(&url);
    let printed = r.json(&format!(
        "SELECT json_agg(x::jsonb::text ORDER BY i)::text AS j FROM (VALUES {}) v(i, x)",
        values.join(", ")
    ));
    for (lit, pg) in literals.iter().zip(printed.as_array().unwrap()) {
        assert_eq!(
            hooksync::json::canonical_number(lit),
            pg.as_str().unwrap(),
            "{lit}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_two_instances_share_a_destination_and_one_is_killed() {
    use common::crm::{overlapping, Check, Crm};
    let Some(url) = fresh_database("pg_two_instances_share_a_destination") else {
        return;
    };
    const WHSEC: &str = "whsec_dGhlIENSTSdzIG93biBzZWNyZXQgZm9yIGhvb2tzeW5j";
    let crm = Crm::start().await;
    crm.check("/std", Check::Standard(WHSEC.into()));
    // Slow enough that the kill comes with deliveries left: about 80 a second in all.
    crm.delay(Duration::from_millis(100));
    let forward = format!(
        "[[forward]]\nname = \"std\"\nurl = \"{}\"\nmode = \"standard\"\nsecrets = [\"{WHSEC}\"]\nconcurrency = 4\ntimeout_ms = 1000\n",
        crm.url("/std")
    );
    let setup = Setup {
        extra_endpoints: forward,
        ..on(&url)
    };
    let dir = tempfile::tempdir().unwrap();
    let config = Daemon::write_config(dir.path(), &setup);
    let mut killed = config.spawn().await;
    let survivor = TestApp::start(setup).await;
    let events = lifecycle(16, 6);
    let (first, second) = events.split_at(events.len() / 2);
    for ev in first {
        assert_eq!(killed.send(ev.body.clone()).await, 200);
    }
    for ev in second {
        assert_eq!(survivor.send(&ev.body).await, 200);
    }
    crm.wait("deliveries from both", Duration::from_secs(60), |r| {
        r.iter().filter(|r| r.ok()).count() >= 20
    })
    .await;
    killed.signal("KILL");
    killed.wait_exit(Duration::from_secs(10)).await;
    let mut db = Reader::open_url(&url);
    let left =
        db.count("SELECT COUNT(*) AS n FROM hooksync_deliveries WHERE status <> 'delivered'");
    let claimed =
        db.count("SELECT COUNT(*) AS n FROM hooksync_deliveries WHERE claimed_by IS NOT NULL");
    eprintln!("at the kill: {left} left, {claimed} claimed");
    assert!(left > 0, "the kill came after every delivery");
    common::wait_until(
        "every delivery by the survivor",
        Duration::from_secs(120),
        || {
            db.queued() == 0
                && db.count(
                    "SELECT COUNT(*) AS n FROM hooksync_deliveries WHERE status <> 'delivered'",
                ) == 0
        },
    )
    .await;
    crm.assert_all_verified();
    let planned = db.count("SELECT COUNT(*) AS n FROM hooksync_deliveries");
    assert_eq!(
        planned,
        db.count("SELECT COUNT(*) AS n FROM events WHERE status = 'applied'")
    );
    let received = crm.received();
    let ids: std::collections::HashSet<&str> = received
        .iter()
        .filter(|r| r.ok())
        .map(|r| r.header("webhook-id"))
        .collect();
    assert_eq!(ids.len() as i64, planned, "a delivery is missing");
    // One delivery is never in flight from both instances at once.
    assert_eq!(
        overlapping(&received, |r| Some(r.header("webhook-id").to_string())),
        None
    );
    survivor.stop().await;
}
