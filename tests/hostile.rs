//! What an authentic but absurd sender, a hostile client, or a failing disk does to a running
//! hooksync: numbers that grow when printed, repeated keys, clocks far ahead, money that is not
//! money, an event the database keeps refusing, a write-ahead log left by crashes, commits that
//! fail while the heartbeat still works, clients that write whole oversized bodies before
//! reading, one address opening connections in a loop, and request heads past the limit.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::{eventually, sign, Setup, TestApp, SECRET};
use time::format_description::well_known::Rfc3339;

fn at(offset_secs: i64) -> String {
    (time::OffsetDateTime::now_utc() + time::Duration::seconds(offset_secs))
        .format(&Rfc3339)
        .unwrap()
}

/// A GetBill debt event as text, so that it can hold what a JSON library would not write:
/// repeated keys, numbers of any form. `data_extra` follows the debt's id inside `data`.
fn debt(event_id: &str, ty: &str, debt_id: &str, created_at: &str, data_extra: &str) -> Vec<u8> {
    format!(
        r#"{{"id":"{event_id}","type":"{ty}","created_at":"{created_at}","data":{{"id":"{debt_id}","company_id":"c1"{data_extra}}},"metadata":{{"source":"getbill","version":"1.0","company_id":"c1"}}}}"#
    )
    .into_bytes()
}

/// The id an authentic body that cannot be stored as an event is kept under.
fn invalid_id(body: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(body)))
}

/// An invalid event's status and reason (its raw body is no JSON value to read back).
fn kept_as(db: &mut common::Reader, event_id: &str) -> serde_json::Value {
    let rest = format!("FROM events WHERE event_id = '{event_id}'");
    serde_json::json!({
        "status": db.list("status", &rest).pop(),
        "last_error": db.list("last_error", &rest).pop(),
    })
}

fn event_row(db: &mut common::Reader, event_id: &str) -> serde_json::Value {
    db.row("events", "event_id", event_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numbers_that_would_grow_when_stored_keep_the_event_invalid() {
    let app = TestApp::start(Setup::default()).await;
    let many_small = vec!["1e40"; 200].join(",");
    let huge_mantissa = format!("{}e5000", "9".repeat(990));
    let growing = [
        ("g1", ",\"amount\":1e9999".to_string()),
        ("g2", ",\"amount\":1e-9999".to_string()),
        ("g3", ",\"amount\":-1.5E+5000".to_string()),
        ("g4", format!(",\"list\":[{many_small}]")),
        (
            "g5",
            ",\"amount\":1e00000000000000000000000000000000009999".to_string(),
        ),
        ("g6", format!(",\"amount\":{huge_mantissa}")),
        ("g7", format!(",\"amount\":{}", "1".repeat(1001))),
    ];
    let mut kept = Vec::new();
    for (i, (id, extra)) in growing.iter().enumerate() {
        let body = debt(id, "debt.created", &format!("dg{i}"), &at(-60), extra);
        assert_eq!(app.send(&body).await, 200, "{id}: authentic bytes are kept");
        kept.push((id, invalid_id(&body)));
    }
    // Numbers that grow a little, or not at all, are stored and applied.
    let fine = debt(
        "ok1",
        "debt.created",
        "d-ok",
        &at(-60),
        ",\"amount\":1e99,\"rate\":1.5e-3",
    );
    assert_eq!(app.send(&fine).await, 200);
    app.wait_projected().await;
    let mut db = app.reader();
    for (id, stored_as) in &kept {
        let row = kept_as(&mut db, stored_as);
        assert_eq!(row["status"], "invalid", "{id}: {row}");
        assert!(
            row["last_error"].as_str().unwrap().contains("too large"),
            "{id}: {row}"
        );
    }
    assert_eq!(db.status_of("ok1").as_deref(), Some("applied"));
    // Every number reads as PostgreSQL's jsonb prints it, on both backends.
    let d = db.row("debts", "id", "d-ok");
    assert_eq!(
        d["amount"].as_str(),
        Some(format!("1{}", "0".repeat(99)).as_str())
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_key_anywhere_keeps_the_event_invalid() {
    let app = TestApp::start(Setup::default()).await;
    let bodies = [
        debt("k1", "debt.created", "dk1", &at(-60), r#","amount":10,"amount":20"#),
        debt("k2", "debt.created", "dk2", &at(-60), r#","amount":10,"\u0061mount":20"#),
        debt("k3", "debt.created", "dk3", &at(-60), r#","meta":{"a":1,"a":1}"#),
        debt("k4", "debt.created", "dk4", &at(-60), r#","list":[{"x":1},{"y":1,"y":2}]"#),
        format!(
            r#"{{"id":"k5","type":"debt.created","created_at":"{}","data":{{"id":"dk5"}},"metadata":{{"company_id":"c1","company_id":"c2"}}}}"#,
            at(-60)
        )
        .into_bytes(),
    ];
    for b in &bodies {
        assert_eq!(app.send(b).await, 200);
    }
    let kept: Vec<String> = bodies.iter().map(|b| invalid_id(b)).collect();
    // The same key in different objects is no repeat.
    let fine = debt(
        "k6",
        "debt.created",
        "dk6",
        &at(-60),
        r#","amount":10,"meta":{"amount":20}"#,
    );
    assert_eq!(app.send(&fine).await, 200);
    app.wait_projected().await;
    let mut db = app.reader();
    for (id, stored_as) in ["k1", "k2", "k3", "k4", "k5"].iter().zip(&kept) {
        let row = kept_as(&mut db, stored_as);
        assert_eq!(row["status"], "invalid", "{id}: {row}");
        let why = row["last_error"].as_str().unwrap();
        assert!(why.contains("twice") || why.contains("duplicate"), "{row}");
        assert!(db.row("debts", "id", &format!("d{id}")).is_null());
    }
    assert_eq!(db.status_of("k6").as_deref(), Some("applied"));
    assert_eq!(db.row("debts", "id", "dk6")["amount"], "10");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clock_errors_do_not_freeze_a_row() {
    let app = TestApp::start(Setup::default()).await;
    let sent = [
        ("t1", "d-far", "9999-12-31T23:59:59Z"),
        ("t2", "d-2099", "2099-01-01T00:00:00Z"),
        ("t3", "d-text", "not a time"),
        ("t4", "d-year0", "0000-06-01T00:00:00Z"),
    ];
    for (id, debt_id, when) in sent {
        let body = debt(
            id,
            "debt.created",
            debt_id,
            when,
            r#","status":"open","amount":"5""#,
        );
        assert_eq!(app.send(&body).await, 200);
    }
    // Within the allowed skew: ordered at its own time, no note.
    let soon = debt(
        "t5",
        "debt.created",
        "d-soon",
        &at(60),
        r#","status":"open""#,
    );
    assert_eq!(app.send(&soon).await, 200);
    app.wait_projected().await;
    // The real updates that follow are applied, not stale behind a time years ahead.
    for (i, (_, debt_id, _)) in sent.iter().enumerate() {
        let body = debt(
            &format!("u{i}"),
            "debt.updated",
            debt_id,
            &at(1),
            r#","status":"paid""#,
        );
        assert_eq!(app.send(&body).await, 200);
    }
    app.wait_projected().await;
    let mut db = app.reader();
    for (i, (id, debt_id, when)) in sent.iter().enumerate() {
        assert_eq!(
            db.status_of(&format!("u{i}")).as_deref(),
            Some("applied"),
            "{when}"
        );
        assert_eq!(db.row("debts", "id", debt_id)["status"], "paid", "{when}");
        let note = event_row(&mut db, id)["time_note"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let shown = when.split('T').next().unwrap();
        assert!(note.contains(shown), "{id}: {note}");
    }
    assert!(event_row(&mut db, "t5")["time_note"].is_null());
    assert_eq!(app.metric("hooksync_event_times_replaced_total").await, 4);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn money_columns_hold_plain_decimals_alike_on_both_backends() {
    let app = TestApp::start(Setup::default()).await;
    let cases = [
        ("m1", "1e+999", None),
        ("m2", "-0", Some("0")),
        ("m3", "\"007.50\"", Some("7.50")),
        ("m4", "12.50", Some("12.50")),
        ("m5", "\"-0.00\"", Some("0.00")),
        ("m6", "1.5e3", Some("1500")),
        ("m11", "\"1.5e3\"", None),
        ("m12", "1.50e1", Some("15.0")),
        ("m7", "\"NaN\"", None),
        ("m8", "\"12,50\"", None),
        (
            "m9",
            "-1234567890123456789.000001",
            Some("-1234567890123456789.000001"),
        ),
        ("m10", "\"+3\"", Some("3")),
    ];
    for (id, amount, _) in &cases {
        let extra = format!(",\"amount\":{amount}");
        let body = debt(id, "debt.created", &format!("d{id}"), &at(-60), &extra);
        assert_eq!(app.send(&body).await, 200);
    }
    app.wait_projected().await;
    let mut db = app.reader();
    for (id, amount, stored) in &cases {
        let row = db.row("debts", "id", &format!("d{id}"));
        assert_eq!(row["amount"].as_str(), *stored, "{amount}: {row}");
        // `data` keeps what arrived, whatever reached the column.
        let data: serde_json::Value = serde_json::from_str(row["data"].as_str().unwrap()).unwrap();
        assert!(!data["amount"].is_null(), "{amount}: {data}");
    }
    app.stop().await;
}

/// A database trigger that refuses one debt with an error that reads as passing (a deadlock on
/// PostgreSQL, a lock on SQLite), every time: the event must end `failed` after the configured
/// attempts, and every other event be applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_the_database_keeps_refusing_fails_alone() {
    let stopped = TestApp::start(Setup {
        projector: false,
        ..Setup::default()
    })
    .await;
    for i in 0..30 {
        let id = if i == 10 {
            "poison".to_string()
        } else {
            format!("p{i}")
        };
        let body = debt(
            &format!("e{i}"),
            "debt.created",
            &id,
            &at(-600 + i),
            r#","status":"open""#,
        );
        assert_eq!(stopped.send(&body).await, 200);
    }
    let mut db = stopped.reader();
    let trigger = match db.backend() {
        hooksync::store::Backend::Sqlite => {
            "CREATE TRIGGER poison BEFORE INSERT ON debts WHEN NEW.id = 'poison' \
             BEGIN SELECT RAISE(ABORT, 'database is locked'); END"
        }
        hooksync::store::Backend::Postgres => {
            "CREATE FUNCTION poison() RETURNS trigger AS $$ BEGIN \
             IF NEW.id = 'poison' THEN RAISE EXCEPTION 'deadlock detected' USING ERRCODE = '40P01'; END IF; \
             RETURN NEW; END $$ LANGUAGE plpgsql; \
             CREATE TRIGGER poison BEFORE INSERT OR UPDATE ON debts FOR EACH ROW EXECUTE FUNCTION poison()"
        }
    };
    db.raw().batch(trigger).unwrap();
    drop(db);
    let dir = stopped.stop().await;
    let app = TestApp::start_in(
        dir,
        Setup {
            projector_extra: "max_attempts = 3".into(),
            ..Setup::default()
        },
    )
    .await;
    app.wait_projected().await;
    let mut db = app.reader();
    let poison = event_row(&mut db, "e10");
    assert_eq!(poison["status"], "failed", "{poison}");
    assert_eq!(poison["attempts"], 3, "{poison}");
    let why = poison["last_error"].as_str().unwrap();
    assert!(why.contains("locked") || why.contains("deadlock"), "{why}");
    assert_eq!(
        db.count("SELECT COUNT(*) AS n FROM events WHERE status = 'applied'"),
        29
    );
    assert_eq!(db.count("SELECT COUNT(*) AS n FROM debts"), 29);
    assert_eq!(
        app.metric("hooksync_events_applied_total{outcome=\"failed\"}")
            .await,
        1
    );
    app.stop().await;
}

/// A trigger makes every commit of events fail while the heartbeat's table still takes writes
/// (as on a disk with room for one small write but not a batch): `/readyz` must say so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_fails_while_commits_fail() {
    let app = TestApp::start(Setup::default()).await;
    let ready = async || {
        app.client
            .get(format!("{}/readyz", app.admin))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(ready().await, 200);
    let mut db = app.reader();
    let (refuse, allow) = match db.backend() {
        hooksync::store::Backend::Sqlite => (
            "CREATE TRIGGER refuse BEFORE INSERT ON events \
             BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END",
            "DROP TRIGGER refuse",
        ),
        hooksync::store::Backend::Postgres => (
            "CREATE FUNCTION refuse() RETURNS trigger AS $$ BEGIN \
             RAISE EXCEPTION 'could not extend file: No space left on device' USING ERRCODE = '53100'; \
             END $$ LANGUAGE plpgsql; \
             CREATE TRIGGER refuse BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION refuse()",
            "DROP TRIGGER refuse ON events",
        ),
    };
    db.raw().batch(refuse).unwrap();
    let body = debt("r1", "debt.created", "dr1", &at(-60), "");
    assert_eq!(app.send(&body).await, 503);
    assert_eq!(ready().await, 503, "not ready while commits fail");
    db.raw().batch(allow).unwrap();
    assert_eq!(app.send(&body).await, 200);
    assert_eq!(ready().await, 200);
    app.stop().await;
}

/// SQLite's write-ahead log, left large by a process that never checkpointed (as one killed
/// under load does), is emptied before the daemon serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_ahead_log_left_behind_is_emptied_before_serving() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hooksync.db");
    let sqlite = Setup {
        database_url: Some(format!("sqlite://{}", file.display())),
        ..Setup::default()
    };
    let app = TestApp::start_in(dir, sqlite.clone()).await;
    let dir = app.stop().await;
    {
        use diesel::connection::SimpleConnection;
        use diesel::Connection;
        let mut c = diesel::SqliteConnection::establish(file.to_str().unwrap()).unwrap();
        c.batch_execute(
            "PRAGMA journal_mode = WAL; PRAGMA wal_autocheckpoint = 0; \
             CREATE TABLE filler (b BLOB); \
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000) \
             INSERT INTO filler SELECT randomblob(4096) FROM n;",
        )
        .unwrap();
        // A clean close would checkpoint and remove the log: leave as a killed process does.
        std::mem::forget(c);
    }
    let wal = dir.path().join("hooksync.db-wal");
    let left = std::fs::metadata(&wal).unwrap().len();
    assert!(left > 8 << 20, "the log left behind holds {left} bytes");
    let app = TestApp::start_in(dir, sqlite).await;
    let now = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
    assert!(now < 1 << 20, "the log holds {now} bytes after start");
    assert_eq!(app.reader().count("SELECT COUNT(*) AS n FROM filler"), 2000);
    let body = debt("w1", "debt.created", "dw1", &at(-60), "");
    assert_eq!(app.send(&body).await, 200);
    app.stop().await;
}

/// Writes a whole request, headers and body, before reading a byte of the answer (as Python's
/// `http.client` and many others do), then returns the answer's status line.
fn write_whole_then_read(addr: SocketAddr, tls: Option<&Path>, body_len: usize) -> String {
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         X-GetBill-Signature: {}\r\nContent-Length: {body_len}\r\n\r\n",
        common::PATH,
        "0".repeat(64)
    );
    let body = vec![b'x'; body_len];
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    tcp.set_write_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut stream: Box<dyn ReadWrite> = match tls {
        None => Box::new(tcp),
        Some(cert) => {
            let conn = rustls::ClientConnection::new(
                client_tls(cert),
                rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap(),
            )
            .unwrap();
            Box::new(rustls::StreamOwned::new(conn, tcp))
        }
    };
    let written = stream
        .write_all(head.as_bytes())
        .and_then(|()| stream.write_all(&body))
        .and_then(|()| stream.flush());
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                answer.extend_from_slice(&buf[..n]);
                if answer.windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
            Err(e) => {
                assert!(!answer.is_empty(), "no answer (write: {written:?}): {e}");
                break;
            }
        }
    }
    String::from_utf8_lossy(&answer)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

fn client_tls(cert: &Path) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(cert).unwrap();
    for c in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

fn addr_of(url: &str) -> SocketAddr {
    url.rsplit('/').next().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_body_written_before_reading_still_gets_its_413() {
    for tls in [true, false] {
        let app = TestApp::start(Setup {
            tls,
            ..Setup::default()
        })
        .await;
        let addr = addr_of(&app.url);
        let cert = app.cert.cert.clone();
        // Just over the limit, and several times it; each a few times, since a reset races
        // with the answer.
        for len in [(1 << 20) + 1, 3 << 20, 8 << 20] {
            for _ in 0..3 {
                let cert = cert.clone();
                let line = tokio::task::spawn_blocking(move || {
                    write_whole_then_read(addr, tls.then_some(cert.as_path()), len)
                })
                .await
                .unwrap();
                assert!(
                    line.starts_with("HTTP/1.1 413"),
                    "tls {tls}, {len} bytes: {line:?}"
                );
            }
        }
        app.stop().await;
    }
}

/// One address holding every connection it can (idle, and reopened as they close) must not
/// keep a sender on another address waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_opening_connections_cannot_keep_others_waiting() {
    let app = TestApp::start(Setup {
        tls: false,
        server_extra:
            "max_connections = 32\nmax_connections_per_peer = 8\nheader_timeout_ms = 60000".into(),
        ..Setup::default()
    })
    .await;
    let addr = addr_of(&app.url);
    // The flood: more idle connections than the listener serves in all.
    let flood: Vec<TcpStream> = (0..64).map(|_| TcpStream::connect(addr).unwrap()).collect();
    let refused = async || {
        app.metric("hooksync_connections_refused_total{reason=\"per_peer\"}")
            .await
    };
    eventually(
        "the flood's excess to be refused",
        Duration::from_secs(20),
        async || refused().await >= 56,
    )
    .await;
    // A sender on another loopback address is served while the flood holds its share.
    let other = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let body = debt("c1", "debt.created", "dc1", &at(-60), "");
    let r = other
        .post(format!("{}{}", app.url, common::PATH))
        .header("X-GetBill-Signature", sign(SECRET, &body))
        .body(body)
        .send()
        .await
        .expect("served despite the flood");
    assert_eq!(r.status(), 200);
    // The flood's refused connections were closed at once: reading them ends.
    let closed = tokio::task::spawn_blocking(move || {
        flood
            .into_iter()
            .filter_map(|mut s| {
                s.set_read_timeout(Some(Duration::from_millis(200))).ok()?;
                matches!(s.read(&mut [0u8; 1]), Ok(0)).then_some(())
            })
            .count()
    })
    .await
    .unwrap();
    assert_eq!(closed, 56);
    app.stop().await;
}

/// The admin listener serves a bounded number of connections: idle ones beyond it wait in the
/// kernel's queue instead of each taking a task and a buffer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_listener_bounds_its_connections() {
    let app = TestApp::start(Setup::default()).await;
    let addr = addr_of(&app.admin);
    let held: Vec<TcpStream> = (0..64).map(|_| TcpStream::connect(addr).unwrap()).collect();
    let probe = move || {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut buf = [0u8; 64];
        let got = s.read(&mut buf).map(|n| n > 0).unwrap_or(false);
        (s, got)
    };
    let (waiting, answered) = tokio::task::spawn_blocking(probe).await.unwrap();
    assert!(!answered, "a 65th connection was served while 64 were held");
    drop(held);
    let answered = tokio::task::spawn_blocking(move || {
        let mut s = waiting;
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = [0u8; 64];
        s.read(&mut buf).map(|n| n > 0).unwrap_or(false)
    })
    .await
    .unwrap();
    assert!(answered, "served once the held connections closed");
    app.stop().await;
}

/// A request head past 64 KiB gets 431 however it is made up; one within it is read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_heads_past_64_kib_get_431() {
    let app = TestApp::start(Setup {
        tls: false,
        ..Setup::default()
    })
    .await;
    let addr = addr_of(&app.url);
    let status = move |headers: Vec<(String, usize)>| {
        let mut head = format!(
            "POST {} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\n",
            common::PATH
        );
        for (name, len) in headers {
            head.push_str(&format!("{name}: {}\r\n", "a".repeat(len)));
        }
        head.push_str("\r\n{}");
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let _ = s.write_all(head.as_bytes());
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer);
        String::from_utf8_lossy(&answer)
            .lines()
            .next()
            .unwrap_or_default()
            .to_string()
    };
    let cases = [
        (vec![("X-Big".to_string(), 100 * 1024)], "431"),
        (vec![("X-Big".to_string(), 65 * 1024)], "431"),
        ((0..40).map(|i| (format!("X-H{i}"), 2000)).collect(), "431"),
        (vec![("X-Big".to_string(), 60 * 1024)], "401"),
        ((0..30).map(|i| (format!("X-H{i}"), 1000)).collect(), "401"),
    ];
    for (headers, want) in cases {
        let size: usize = headers.iter().map(|(n, l)| n.len() + l).sum();
        let line = tokio::task::spawn_blocking(move || status(headers))
            .await
            .unwrap();
        assert!(line.contains(want), "{size} bytes of headers: {line:?}");
    }
    app.stop().await;
}

/// A small tmpfs mounted for one test, unmounted when dropped.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    /// `None` where this process may not mount (not root): said aloud, and a failure under CI,
    /// whose runs are root.
    fn mount(at: &Path, size: &str) -> Option<SmallDisk> {
        std::fs::create_dir_all(at).unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .is_ok_and(|s| s.success());
        if mounted {
            return Some(SmallDisk(at.to_owned()));
        }
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true and a tmpfs cannot be mounted: the full-disk test cannot run"
        );
        eprintln!("SKIPPED: the full-disk test needs to mount a tmpfs (run as root)");
        None
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// A real full disk under the real binary: the write-ahead log holds pages the database file
/// must grow to take, and the disk has no room left. Every checkpoint (twenty a second) and
/// every commit fails; the log says so in one line per run, and `/readyz` answers 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_not_ready_and_one_line_in_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let Some(disk) = SmallDisk::mount(&dir.path().join("disk"), "16m") else {
        return;
    };
    let db_path = disk.0.join("hooksync.db");
    let setup = Setup {
        database_url: Some(format!("sqlite://{}", db_path.display())),
        ..Setup::default()
    };
    let config = common::Daemon::write_config(dir.path(), &setup);
    let log = dir.path().join("hooksync.log");
    let mut d = config.spawn_logging(Some(&log)).await;
    // A reader's snapshot keeps the checkpoints from copying what is committed after it.
    let mut reader = common::Reader::open_url(&format!("sqlite://{}", db_path.display()));
    reader
        .raw()
        .batch("BEGIN; SELECT COUNT(*) FROM events;")
        .unwrap();
    let padding = format!(",\"note\":\"{}\"", "n".repeat(2000));
    for i in 0..120 {
        let body = debt(
            &format!("f{i}"),
            "debt.created",
            &format!("df{i}"),
            &at(-60),
            &padding,
        );
        assert_eq!(d.send(body).await, 200);
    }
    // The rest of the disk, taken.
    {
        let mut filler = std::fs::File::create(disk.0.join("filler")).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        while filler.write_all(&chunk).is_ok() {}
        let _ = filler.write_all(&[0u8; 1]);
    }
    reader.raw().batch("ROLLBACK").unwrap();
    let mut refused = 0;
    eventually(
        "forty failed checkpoints",
        Duration::from_secs(60),
        async || {
            let body = debt(
                &format!("g{refused}"),
                "debt.created",
                "dg",
                &at(-60),
                &padding,
            );
            if d.send(body).await == 503 {
                refused += 1;
            }
            common::metric(
                &d.client,
                &d.admin,
                "hooksync_db_errors_total{operation=\"checkpoint\"}",
            )
            .await
                >= 40
        },
    )
    .await;
    assert!(refused > 0, "commits on a full disk were acknowledged");
    let ready = d
        .client
        .get(format!("{}/readyz", d.admin))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(ready, 503, "ready while the disk is full");
    d.signal("KILL");
    d.wait_exit(Duration::from_secs(10)).await;
    let text = std::fs::read_to_string(&log).unwrap();
    let lines = text
        .lines()
        .filter(|l| l.contains("WAL checkpoints"))
        .count();
    assert!(
        (1..=2).contains(&lines),
        "{lines} log lines about failing checkpoints:\n{text}"
    );
    drop(disk);
}
