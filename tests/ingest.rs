//! Ingest behaviour over HTTPS on a real port: signatures, status codes, dedup, limits,
//! invalid and unhandled events, tenant, group commit and a store that cannot commit.

mod common;

use std::time::Duration;

use common::{sign, Setup, TestApp, OLD_SECRET, SECRET};

/// The debt.created example from GetBill's documentation.
const SEED_EVENT: &str = r#"{"id":"evt_a1b2c3d4e5f60718293a4b5c6d7e8f90","type":"debt.created","created_at":"2024-01-22T10:30:00+00:00","data":{"id":"d4b7e9f2a1c8","firstname":"John","lastname":"Doe","phone":"+33612345678","email":"john.doe@example.com","amount":1250.00,"currency":"EUR","status":"status.default.in_progress","internal_id":"INV-2024-001","due_date":"2024-02-22","invoice_date":"2024-01-22","created_at":"2024-01-22T10:30:00+00:00","company_id":"c5a8f3e1b9d2","metadata":{"crm_id":"CRM-123","source":"website"}},"metadata":{"source":"getbill","version":"1.0","company_id":"c5a8f3e1b9d2","debt_id":"d4b7e9f2a1c8"}}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_event_is_stored_once_and_projected_into_debts() {
    let app = TestApp::start(Setup::default()).await;
    let r = app
        .post(
            SEED_EVENT.as_bytes(),
            Some(&sign(SECRET, SEED_EVENT.as_bytes())),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), r#"{"status":"stored"}"#);
    let mut db = app.reader();
    // The 200 came after the commit: the row is there without waiting.
    let status = db.status_of("evt_a1b2c3d4e5f60718293a4b5c6d7e8f90");
    assert!(
        matches!(status.as_deref(), Some("queued" | "applied")),
        "{status:?}"
    );

    let r = app
        .post(
            SEED_EVENT.as_bytes(),
            Some(&sign(SECRET, SEED_EVENT.as_bytes())),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), r#"{"status":"duplicate"}"#);
    assert_eq!(db.count("SELECT COUNT(*) AS n FROM events"), 1);

    app.wait_projected().await;
    assert_eq!(
        db.status_of("evt_a1b2c3d4e5f60718293a4b5c6d7e8f90")
            .as_deref(),
        Some("applied")
    );
    let row = db.row("debts", "id", "d4b7e9f2a1c8");
    assert_eq!(row["source"], "getbill");
    assert_eq!(row["amount"], "1250.00", "money keeps its exact digits");
    assert_eq!(
        row["status"], "status.default.in_progress",
        "status keys are stored verbatim"
    );
    assert_eq!(row["firstname"], "John");
    assert_eq!(row["created_at"], "2024-01-22T10:30:00.000000Z");
    assert_eq!(row["due_date"], "2024-02-22");
    assert_eq!(row["last_event_id"], "evt_a1b2c3d4e5f60718293a4b5c6d7e8f90");
    assert_eq!(row["deleted_at"], serde_json::Value::Null);
    let metadata: serde_json::Value =
        serde_json::from_str(row["metadata"].as_str().unwrap()).unwrap();
    assert_eq!(metadata["crm_id"], "CRM-123");
    let data: serde_json::Value = serde_json::from_str(row["data"].as_str().unwrap()).unwrap();
    assert_eq!(data["phone"], "+33612345678");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_signatures_get_401_and_store_nothing() {
    let app = TestApp::start(Setup::default()).await;
    let body = SEED_EVENT.as_bytes();
    let good = sign(SECRET, body);
    let cases: Vec<(&str, Option<String>)> = vec![
        ("missing", None),
        ("empty", Some(String::new())),
        ("truncated", Some(good[..63].to_string())),
        ("half length", Some(good[..32].to_string())),
        ("too long", Some(format!("{good}00"))),
        ("non-hex", Some("g".repeat(64))),
        ("wrong secret", Some(sign("not-the-secret", body))),
        ("other body", Some(sign(SECRET, b"{}"))),
        ("prefix", Some(format!("sha256={good}"))),
    ];
    for (what, sig) in cases {
        let r = app.post(body, sig.as_deref()).await;
        assert_eq!(r.status(), 401, "{what}");
    }
    assert_eq!(app.reader().count("SELECT COUNT(*) AS n FROM events"), 0);
    assert_eq!(
        app.metric("hooksync_requests_total{outcome=\"unauthorized\"}")
            .await,
        9
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uppercase_hex_and_rotated_secrets_are_accepted() {
    let app = TestApp::start(Setup::default()).await;
    let a = br#"{"id":"evt_upper","type":"debt.updated","data":{"id":"d1"}}"#;
    assert_eq!(
        app.post(a, Some(&sign(SECRET, a).to_uppercase()))
            .await
            .status(),
        200
    );
    let b = br#"{"id":"evt_old","type":"debt.updated","data":{"id":"d1"}}"#;
    assert_eq!(app.post(b, Some(&sign(OLD_SECRET, b))).await.status(), 200);
    assert_eq!(app.reader().count("SELECT COUNT(*) AS n FROM events"), 2);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_method_and_size_limits() {
    let app = TestApp::start(Setup {
        server_extra: "max_body_bytes = 2048\n".into(),
        ..Setup::default()
    })
    .await;
    let body = SEED_EVENT.as_bytes();
    let sig = sign(SECRET, body);
    assert_eq!(
        app.post_to("/webhooks/unknown", body, Some(&sig))
            .await
            .status(),
        404
    );
    let r = app
        .client
        .get(format!("{}{}", app.url, common::PATH))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers().get("allow").unwrap(), "POST");

    // Declared too large: refused before the body is read.
    let big = vec![b' '; 4096];
    let r = app.post(&big, Some(&sign(SECRET, &big))).await;
    assert_eq!(r.status(), 413);
    // Too large without a declared length (chunked): refused once the limit is crossed.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..8).map(|_| Ok(vec![b' '; 1024])).collect();
    let r = app
        .client
        .post(format!("{}{}", app.url, common::PATH))
        .header("X-GetBill-Signature", &sig)
        .body(reqwest::Body::wrap_stream(futures_stream(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(app.reader().count("SELECT COUNT(*) AS n FROM events"), 0);
    // A body within the limit still works on the same server.
    assert_eq!(app.post(body, Some(&sig)).await.status(), 200);
    app.stop().await;
}

fn futures_stream(
    items: Vec<Result<Vec<u8>, std::io::Error>>,
) -> impl futures_core::Stream<Item = Result<Vec<u8>, std::io::Error>> + Send + 'static {
    struct Iter(std::vec::IntoIter<Result<Vec<u8>, std::io::Error>>);
    impl futures_core::Stream for Iter {
        type Item = Result<Vec<u8>, std::io::Error>;
        fn poll_next(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Self::Item>> {
            std::task::Poll::Ready(self.0.next())
        }
    }
    Iter(items.into_iter())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authentic_but_unusable_bodies_are_kept() {
    let app = TestApp::start(Setup::default()).await;
    let mut db = app.reader();
    for (body, why) in [
        (&b"this is not json"[..], "not JSON"),
        (br#"{"type":"debt.created","data":{}}"#, "no id"),
        (br#"{"id":"evt_notype","data":{}}"#, "no type"),
        (br#"[1,2,3]"#, "not an object"),
    ] {
        assert_eq!(app.send(body).await, 200, "{why}");
        let id = format!(
            "sha256:{}",
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(body))
        );
        assert_eq!(db.status_of(&id).as_deref(), Some("invalid"), "{why}");
        // The same bytes again are a duplicate, not a second row.
        assert_eq!(app.send(body).await, 200);
    }
    let deep = format!("{}{}", "[".repeat(100), "]".repeat(100));
    assert_eq!(app.send(deep.as_bytes()).await, 200);
    assert_eq!(
        db.count("SELECT COUNT(*) AS n FROM events WHERE status = 'invalid'"),
        5
    );
    assert_eq!(
        db.count("SELECT COUNT(*) AS n FROM events WHERE status = 'invalid' AND raw_body IS NOT NULL AND last_error IS NOT NULL"),
        5
    );

    let unknown = br#"{"id":"evt_unknown_type","type":"debt.teleported","created_at":"2024-01-22T10:30:00Z","data":{"id":"x"}}"#;
    assert_eq!(app.send(unknown).await, 200);
    assert_eq!(
        db.status_of("evt_unknown_type").as_deref(),
        Some("unhandled")
    );
    assert_eq!(
        app.metric("hooksync_events_stored_total{status=\"invalid\"}")
            .await,
        5
    );
    assert_eq!(
        app.metric("hooksync_events_stored_total{status=\"unhandled\"}")
            .await,
        1
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numeric_ids_are_stored_as_decimal_text() {
    let app = TestApp::start(Setup::default()).await;
    // The shape of the seed's own test script.
    let body = br#"{"id":"evt_numeric","type":"debt.created","created_at":"2024-01-22T10:30:00.000Z","data":{"id":789,"firstname":"John","lastname":"Doe","amount":1000.00,"currency":"EUR","status":"active","company_id":123},"metadata":{"source":"getbill","version":"1.0","company_id":123,"debt_id":789}}"#;
    assert_eq!(app.send(body).await, 200);
    app.wait_projected().await;
    let mut db = app.reader();
    let row = db.row("debts", "id", "789");
    assert_eq!(row["company_id"], "123");
    assert_eq!(row["amount"], "1000.00");
    assert_eq!(db.list("tenant", "FROM events")[0], "123");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_for_another_tenant_get_403_and_are_not_stored() {
    let app = TestApp::start(Setup {
        tenant: Some("c5a8f3e1b9d2".into()),
        ..Setup::default()
    })
    .await;
    assert_eq!(app.send(SEED_EVENT.as_bytes()).await, 200);
    let other = SEED_EVENT
        .replace("c5a8f3e1b9d2", "ffffffffffff")
        .replace("evt_a1b2", "evt_ffff");
    assert_eq!(app.send(other.as_bytes()).await, 403);
    let no_tenant = br#"{"id":"evt_no_tenant","type":"debt.updated","data":{"id":"d1"}}"#;
    assert_eq!(app.send(no_tenant).await, 403);
    assert_eq!(app.reader().count("SELECT COUNT(*) AS n FROM events"), 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_share_commits() {
    let app = TestApp::start(Setup {
        projector: false,
        ..Setup::default()
    })
    .await;
    let n = 200;
    let mut tasks = Vec::new();
    for i in 0..n {
        let client = app.client.clone();
        let url = format!("{}{}", app.url, common::PATH);
        tasks.push(tokio::spawn(async move {
            let body =
                format!(r#"{{"id":"evt_gc_{i}","type":"debt.created","data":{{"id":"d{i}"}}}}"#);
            client
                .post(url)
                .header("X-GetBill-Signature", sign(SECRET, body.as_bytes()))
                .body(body)
                .send()
                .await
                .unwrap()
                .status()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    assert_eq!(app.reader().count("SELECT COUNT(*) AS n FROM events"), n);
    let commits = app.metric("hooksync_commit_batch_events_count").await;
    assert!(
        commits < n as u64,
        "{n} events took {commits} commits: batches were not shared"
    );
    app.stop().await;
}

/// The backlog gauge is read from the database when scraped: what waits for the projector
/// (on a shared PostgreSQL database, every instance's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_the_events_waiting_for_the_projector() {
    let app = TestApp::start(Setup {
        projector: false,
        ..Setup::default()
    })
    .await;
    assert_eq!(app.metric("hooksync_events_queued ").await, 0);
    for n in 0..3 {
        let (_, body) = common::load_event(n, 5);
        assert_eq!(app.send(&body).await, 200);
    }
    assert_eq!(app.metric("hooksync_events_queued ").await, 3);
    let dir = app.stop().await;
    // The same database with the projector on: nothing left waiting.
    let app = TestApp::start_in(dir, Setup::default()).await;
    app.wait_projected().await;
    assert_eq!(app.metric("hooksync_events_queued ").await, 0);
    assert_eq!(app.metric("hooksync_media_pending ").await, 0);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_cannot_commit_gets_503_and_readyz_fails() {
    let app = TestApp::start(Setup {
        database_extra: "busy_timeout_ms = 100\n".into(),
        ..Setup::default()
    })
    .await;
    let ready = |app: &TestApp| {
        let c = app.client.clone();
        let url = format!("{}/readyz", app.admin);
        async move { c.get(url).send().await.unwrap().status().as_u16() }
    };
    assert_eq!(ready(&app).await, 200);
    assert_eq!(
        app.client
            .get(format!("{}/healthz", app.admin))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // Another process holds the write lock: hooksync cannot commit.
    let mut locker = app.reader();
    locker.lock_writes();
    let r = app
        .post(
            SEED_EVENT.as_bytes(),
            Some(&sign(SECRET, SEED_EVENT.as_bytes())),
        )
        .await;
    assert_eq!(r.status(), 503);
    assert!(r.headers().get("retry-after").is_some());
    assert_eq!(ready(&app).await, 503);
    assert_eq!(
        app.client
            .get(format!("{}/healthz", app.admin))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    locker.unlock_writes();

    // The lock is gone: the retry is stored, and it is the first time. Readiness follows the
    // commits: ready again once one succeeded.
    let r = app
        .post(
            SEED_EVENT.as_bytes(),
            Some(&sign(SECRET, SEED_EVENT.as_bytes())),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), r#"{"status":"stored"}"#);
    assert_eq!(ready(&app).await, 200);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_are_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = TestApp::start(Setup {
        tls: false,
        server_extra: "header_timeout_ms = 300\n".into(),
        ..Setup::default()
    })
    .await;
    let addr = app.url.trim_start_matches("http://").to_string();
    // A client that never finishes its headers is disconnected.
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    slow.write_all(b"POST /webhooks/getbill HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), slow.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the server kept a stalled connection open");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_body_is_answered_408_and_not_stored() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = TestApp::start(Setup {
        tls: false,
        server_extra: "body_timeout_ms = 300\n".into(),
        ..Setup::default()
    })
    .await;
    let addr = app.url.trim_start_matches("http://").to_string();
    // Correctly signed, but only the first half of the body ever arrives.
    let body = SEED_EVENT.as_bytes();
    let head = format!(
        "POST /webhooks/getbill HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         X-GetBill-Signature: {}\r\nContent-Length: {}\r\n\r\n",
        sign(SECRET, body),
        body.len()
    );
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    slow.write_all(head.as_bytes()).await.unwrap();
    slow.write_all(&body[..body.len() / 2]).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), slow.read_to_end(&mut answer))
        .await
        .expect("the stalled request was neither answered nor closed")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
    assert_eq!(app.reader().count("SELECT COUNT(*) AS n FROM events"), 0);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_bounded() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = TestApp::start(Setup {
        tls: false,
        server_extra: "max_connections = 1\n".into(),
        ..Setup::default()
    })
    .await;
    let addr = app.url.trim_start_matches("http://").to_string();
    // With one connection allowed, a second client is not served while the first is open...
    let mut first = tokio::net::TcpStream::connect(&addr).await.unwrap();
    first
        .write_all(b"GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut head = [0u8; 12];
    first.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 404");
    let second = reqwest::Client::new();
    let url = format!("{}/nothing", app.url);
    let blocked = tokio::time::timeout(Duration::from_millis(500), second.get(&url).send()).await;
    assert!(
        blocked.is_err(),
        "a connection beyond max_connections was served"
    );
    // ...and is served as soon as the first one goes away.
    drop(first);
    let r = tokio::time::timeout(Duration::from_secs(10), second.get(&url).send())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.status(), 404);
    app.stop().await;
}

/// A connection that holds its place and sends nothing (never a first request, or no next one
/// on a kept-alive connection) is cut after `header_timeout_ms`, so idlers cannot keep the
/// senders out of a bounded listener.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_give_their_place_back() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = TestApp::start(Setup {
        tls: false,
        server_extra: "max_connections = 1\nheader_timeout_ms = 300\n".into(),
        ..Setup::default()
    })
    .await;
    let addr = app.url.trim_start_matches("http://").to_string();
    let url = format!("{}/nothing", app.url);
    let client = reqwest::Client::new();

    // Kept alive after one request, then silent.
    let mut kept = tokio::net::TcpStream::connect(&addr).await.unwrap();
    kept.write_all(b"GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut head = [0u8; 12];
    kept.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 404");
    let r = tokio::time::timeout(Duration::from_secs(10), client.get(&url).send())
        .await
        .expect("an idle kept-alive connection held the only place")
        .unwrap();
    assert_eq!(r.status(), 404);
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), kept.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the idle connection was not closed");

    // Connected, and never a byte.
    let _silent = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let fresh = reqwest::Client::new();
    let r = tokio::time::timeout(Duration::from_secs(10), fresh.get(&url).send())
        .await
        .expect("a silent connection held the only place")
        .unwrap();
    assert_eq!(r.status(), 404);
    app.stop().await;
}

/// On HTTPS the same bound holds before any HTTP: a peer that connects and never starts, or
/// never finishes, its TLS handshake is cut after `header_timeout_ms`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_tls_handshakes_give_their_place_back() {
    use tokio::io::AsyncWriteExt;
    let app = TestApp::start(Setup {
        server_extra: "max_connections = 1\nheader_timeout_ms = 300\n".into(),
        ..Setup::default()
    })
    .await;
    assert!(app.url.starts_with("https://"));
    let addr = app.url.trim_start_matches("https://").to_string();
    let url = format!("{}/nothing", app.url);
    // Never a byte; then the first bytes of a ClientHello and no more.
    let _silent = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut partial = tokio::net::TcpStream::connect(&addr).await.unwrap();
    partial
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .await
        .unwrap();
    let r = tokio::time::timeout(Duration::from_secs(10), app.client.get(&url).send())
        .await
        .expect("stalled handshakes held the only place")
        .unwrap();
    assert_eq!(r.status(), 404);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_1_2_and_1_3_are_both_served() {
    let app = TestApp::start(Setup::default()).await;
    for version in [
        reqwest::tls::Version::TLS_1_2,
        reqwest::tls::Version::TLS_1_3,
    ] {
        let client = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&app.cert.pem).unwrap())
            .min_tls_version(version)
            .max_tls_version(version)
            .build()
            .unwrap();
        let body =
            format!(r#"{{"id":"evt_tls_{version:?}","type":"debt.updated","data":{{"id":"d1"}}}}"#);
        let r = client
            .post(format!("{}{}", app.url, common::PATH))
            .header("X-GetBill-Signature", sign(SECRET, body.as_bytes()))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{version:?}");
    }
    app.stop().await;
}
