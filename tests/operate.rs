//! Operating the real binary: SIGHUP reloads what can change live (secrets, the TLS
//! certificate, endpoints) and refuses a broken file whole; systemd hears READY, WATCHDOG,
//! RELOADING, STOPPING at the right moments; `check-config` refuses a certificate and key that
//! do not belong together.

mod common;

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{client, eventually, hooksync, json_of, make_cert, sign, Daemon, Setup, SECRET};

const NEW_SECRET: &str = "whsk_test_rotated_0002";

fn body(n: u64) -> Vec<u8> {
    format!(
        r#"{{"id":"evt_op_{n}","type":"debt.created","created_at":"2024-01-01T00:00:00Z","data":{{"id":"d{n}","company_id":1}}}}"#
    )
    .into_bytes()
}

fn rewrite(path: &std::path::Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{from} not in the config");
    std::fs::write(path, text.replace(from, to)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_rotates_a_secret_and_refuses_a_broken_file_whole() {
    let dir = tempfile::tempdir().unwrap();
    let config = Daemon::write_config(dir.path(), &Setup::default());
    let log = dir.path().join("daemon.log");
    let d = config.spawn_logging(Some(&log)).await;
    assert_eq!(d.post(body(1), &sign(SECRET, &body(1))).await, 200);
    assert_eq!(d.post(body(2), &sign(NEW_SECRET, &body(2))).await, 401);

    rewrite(&config.path, SECRET, NEW_SECRET);
    rewrite(
        &config.path,
        "level = \"warn\"",
        "level = \"warn\"\nformat = \"json\"",
    );
    d.signal("HUP");
    let mut n = 10;
    eventually(
        "the rotated secret to be accepted",
        Duration::from_secs(20),
        async || {
            n += 1;
            d.post(body(n), &sign(NEW_SECRET, &body(n))).await == 200
        },
    )
    .await;
    assert_eq!(
        d.post(body(3), &sign(SECRET, &body(3))).await,
        401,
        "the replaced secret still works"
    );
    // The log's format changed with it: the reload's own line is JSON.
    eventually(
        "the log to turn to JSON",
        Duration::from_secs(20),
        async || {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .lines()
                .any(|l| l.starts_with('{') && l.contains("\"configuration reloaded\""))
        },
    )
    .await;

    // A broken file: refused whole, the daemon serves on with what it had.
    let good = std::fs::read_to_string(&config.path).unwrap();
    std::fs::write(
        &config.path,
        good.replace(NEW_SECRET, "x")
            .replace("[server]", "[server]\nno_such_key = 1"),
    )
    .unwrap();
    let text = refused_reload(&d, &log).await;
    assert!(
        text.contains("server.no_such_key: unknown key"),
        "the log names what was wrong"
    );
    assert!(
        !text.contains(NEW_SECRET) && !text.contains(SECRET),
        "a secret reached the log"
    );
    assert_eq!(d.post(body(4), &sign(NEW_SECRET, &body(4))).await, 200);
    let mut d = d;
    assert!(
        d.child.try_wait().unwrap().is_none(),
        "SIGHUP ended the daemon"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_serves_a_new_certificate_to_new_connections_while_requests_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let config = Daemon::write_config(dir.path(), &Setup::default());
    let log = dir.path().join("daemon.log");
    let d = config.spawn_logging(Some(&log)).await;
    let other = tempfile::tempdir().unwrap();
    let new_cert = make_cert(other.path());

    // A client that trusts both certificates sends all along; none of its requests may fail.
    let both = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&config.cert.pem).unwrap())
        .add_root_certificate(reqwest::Certificate::from_pem(&new_cert.pem).unwrap())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let load = {
        let (stop, sent, failed, url) = (stop.clone(), sent.clone(), failed.clone(), d.url.clone());
        tokio::spawn(async move {
            let mut n = 1000;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let b = body(n);
                let ok = both
                    .post(format!("{url}{}", common::PATH))
                    .header("X-GetBill-Signature", sign(SECRET, &b))
                    .body(b)
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == 200);
                sent.fetch_add(1, Ordering::Relaxed);
                if !ok {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    eventually("the load to run", Duration::from_secs(20), async || {
        sent.load(Ordering::Relaxed) > 20
    })
    .await;

    std::fs::copy(&new_cert.cert, &config.cert.cert).unwrap();
    std::fs::copy(&new_cert.key, &config.cert.key).unwrap();
    d.signal("HUP");
    let url = format!("{}/healthz-not-a-route", d.url);
    eventually(
        "new connections to get the new certificate",
        Duration::from_secs(20),
        async || {
            // A fresh client per try: a new connection, trusting only the new certificate.
            client(&new_cert).get(&url).send().await.is_ok()
        },
    )
    .await;
    assert!(
        client(&config.cert).get(&url).send().await.is_err(),
        "a new connection still gets the old certificate"
    );
    let before = sent.load(Ordering::Relaxed);
    eventually(
        "more requests after the reload",
        Duration::from_secs(20),
        async || sent.load(Ordering::Relaxed) > before + 20,
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "requests failed across the reload"
    );

    // A broken certificate file: refused, logged, and the certificate in use stays.
    std::fs::write(&config.cert.cert, "not a certificate").unwrap();
    let text = refused_reload(&d, &log).await;
    assert!(
        text.contains("holds no certificate"),
        "the log says what was wrong"
    );
    assert!(
        client(&new_cert).get(&url).send().await.is_ok(),
        "the certificate in use was dropped"
    );
}

/// Sends SIGHUP and waits for the log to say the new configuration was refused; returns the log.
async fn refused_reload(d: &Daemon, log: &std::path::Path) -> String {
    d.signal("HUP");
    eventually(
        "the reload to be refused",
        Duration::from_secs(20),
        async || {
            std::fs::read_to_string(log)
                .unwrap_or_default()
                .contains("configuration not reloaded")
        },
    )
    .await;
    std::fs::read_to_string(log).unwrap()
}

/// A child process killed when the test ends, however it ends.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Reads what the daemon tells systemd, one datagram at a time.
struct Systemd {
    socket: UnixDatagram,
}

impl Systemd {
    fn bind(dir: &std::path::Path) -> (Systemd, std::path::PathBuf) {
        let path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        (Systemd { socket }, path)
    }

    /// The next message within `limit`, if any.
    fn next(&self, limit: Duration) -> Option<String> {
        let start = std::time::Instant::now();
        let mut buf = [0u8; 4096];
        while start.elapsed() < limit {
            if let Ok(n) = self.socket.recv(&mut buf) {
                return Some(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
        None
    }

    /// Waits for a message with `line`; returns the messages before it.
    fn wait_for(&self, line: &str, limit: Duration) -> Vec<String> {
        let start = std::time::Instant::now();
        let mut seen = Vec::new();
        while start.elapsed() < limit {
            if let Some(m) = self.next(Duration::from_millis(200)) {
                if m.lines().any(|l| l == line) {
                    return seen;
                }
                seen.push(m);
            }
        }
        panic!("no {line} within {limit:?}; saw {seen:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_hears_ready_watchdog_reloading_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let config = Daemon::write_config(dir.path(), &Setup::default());
    let (systemd, sock) = Systemd::bind(dir.path());
    let mut child = Killed(
        Command::new(env!("CARGO_BIN_EXE_hooksync"))
            .arg("--config")
            .arg(&config.path)
            .arg("serve")
            .env("NOTIFY_SOCKET", &sock)
            .env("WATCHDOG_USEC", "1000000")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let http = client(&config.cert);
    let admin = format!("http://127.0.0.1:{}", config.admin);

    systemd.wait_for("READY=1", Duration::from_secs(20));
    // READY=1 is sent once both listeners accept and the store is migrated.
    let ready = http.get(format!("{admin}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);

    // Keep-alives at about half of WATCHDOG_USEC.
    systemd.wait_for("WATCHDOG=1", Duration::from_secs(3));
    let start = std::time::Instant::now();
    systemd.wait_for("WATCHDOG=1", Duration::from_secs(3));
    assert!(
        start.elapsed() < Duration::from_millis(900),
        "keep-alives too far apart"
    );

    // While the store thread is stuck behind a lock it cannot take, the keep-alives stop.
    let mut reader = common::Reader::open(dir.path());
    reader.lock_writes();
    // What was on its way before the lock is drained first.
    while systemd.next(Duration::from_millis(700)).is_some() {}
    let quiet = systemd.next(Duration::from_millis(1500));
    assert!(
        quiet.is_none(),
        "the watchdog was fed while the store thread was blocked: {quiet:?}"
    );
    reader.unlock_writes();
    systemd.wait_for("WATCHDOG=1", Duration::from_secs(10));

    Command::new("kill")
        .arg("-HUP")
        .arg(child.0.id().to_string())
        .status()
        .unwrap();
    systemd.wait_for("RELOADING=1", Duration::from_secs(10));
    systemd.wait_for("READY=1", Duration::from_secs(10));

    Command::new("kill")
        .arg("-TERM")
        .arg(child.0.id().to_string())
        .status()
        .unwrap();
    systemd.wait_for("STOPPING=1", Duration::from_secs(10));
    let status = child.0.wait().unwrap();
    assert!(status.success(), "{status}");
}

#[test]
fn check_config_refuses_a_certificate_and_key_that_do_not_belong_together() {
    let dir = tempfile::tempdir().unwrap();
    let config = Daemon::write_config(dir.path(), &Setup::default());
    let other = tempfile::tempdir().unwrap();
    let foreign = make_cert(other.path());
    std::fs::copy(&foreign.key, &config.cert.key).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_hooksync"))
        .arg("--config")
        .arg(&config.path)
        .arg("check-config")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "accepted a key of another certificate"
    );
    assert!(err.contains("server.tls_cert / server.tls_key"), "{err}");
}

#[test]
fn an_unreadable_configuration_says_permission_denied() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let config = Daemon::write_config(dir.path(), &Setup::default());
    std::fs::set_permissions(&config.path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let uid = Command::new("id").arg("-u").output().unwrap();
    let root = String::from_utf8_lossy(&uid.stdout).trim() == "0";
    // Root reads any file: the binary runs as nobody instead, as a service user would.
    let mut cmd = if root {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(env!("CARGO_BIN_EXE_hooksync"));
        c
    } else {
        std::fs::set_permissions(&config.path, std::fs::Permissions::from_mode(0o000)).unwrap();
        Command::new(env!("CARGO_BIN_EXE_hooksync"))
    };
    let out = cmd
        .arg("--config")
        .arg(&config.path)
        .arg("check-config")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("cannot read configuration file"), "{err}");
    assert!(
        err.contains("Permission denied") && !err.contains("not found"),
        "{err}"
    );
}

/// A configuration with an endpoint of every provider kind beside GetBill's.
fn every_provider(dir: &std::path::Path) -> common::DaemonConfig {
    let setup = Setup {
        extra_endpoints: common::providers::endpoints(None),
        ..Setup::default()
    };
    Daemon::write_config(dir, &setup)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_events_show_and_retry_against_a_running_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let config = Daemon::write_config(dir.path(), &Setup::default());
    let d = config.spawn().await;
    for n in 1..=3 {
        assert_eq!(d.send(body(n)).await, 200);
    }
    // An authentic event the projector cannot apply: its debt has no id.
    let bad =
        br#"{"id":"evt_bad","type":"debt.created","created_at":"2024-01-01T00:00:00Z","data":{"company_id":1}}"#
            .to_vec();
    assert_eq!(d.send(bad).await, 200);
    let mut db = common::Reader::open(dir.path());
    common::wait_until("the projector to finish", Duration::from_secs(30), || {
        db.queued() == 0
    })
    .await;

    let st = json_of(&config.path, &["status", "--json"]);
    let g = &st["sources"][0];
    assert_eq!(g["source"], "getbill");
    assert_eq!(g["received"], 4);
    assert_eq!(g["received_24h"], 4);
    assert_eq!(g["by_status"]["applied"], 3, "{st}");
    assert_eq!(g["by_status"]["failed"], 1, "{st}");
    assert_eq!(g["by_status"]["queued"], 0);
    assert_eq!(g["last"]["event_id"], "evt_bad");
    assert_eq!(st["queued"], 0);
    let (code, table, _) = hooksync(&config.path, &["status"], &[]);
    assert_eq!(code, 0);
    assert!(
        table.contains("getbill") && table.contains("queue: 0 event(s) queued"),
        "{table}"
    );

    let failed = json_of(&config.path, &["events", "--status", "failed", "--json"]);
    assert_eq!(failed.as_array().unwrap().len(), 1, "{failed}");
    assert_eq!(failed[0]["event_id"], "evt_bad");
    assert!(
        failed[0]["last_error"]
            .as_str()
            .unwrap()
            .contains("data.id is missing"),
        "{failed}"
    );
    let all = json_of(
        &config.path,
        &["events", "--endpoint", "getbill", "--since", "1h", "--json"],
    );
    let ids: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        ["evt_bad", "evt_op_3", "evt_op_2", "evt_op_1"],
        "newest first"
    );
    let limited = json_of(
        &config.path,
        &["events", "--limit", "2", "--type", "debt.created", "--json"],
    );
    assert_eq!(limited.as_array().unwrap().len(), 2);

    let one = json_of(
        &config.path,
        &["events", "show", "getbill", "evt_op_2", "--json"],
    );
    assert_eq!(one["status"], "applied");
    assert_eq!(one["attempts"], 1);
    assert!(one["applied_at"].is_string());
    assert!(one["payload"].as_str().unwrap().contains("\"d2\""));
    assert_eq!(one["rows"][0][0], "debts");
    assert_eq!(one["rows"][0][1]["id"], "d2", "{one}");
    let (code, _, err) = hooksync(
        &config.path,
        &["events", "show", "getbill", "evt_none"],
        &[],
    );
    assert_ne!(code, 0);
    assert!(err.contains("no event \"evt_none\""), "{err}");

    let retried = json_of(&config.path, &["retry", "--endpoint", "getbill", "--json"]);
    assert_eq!(retried["queued"], 1);
    // Applied again by the running daemon, and failed again on its own.
    common::eventually(
        "the retried event to be applied again",
        Duration::from_secs(30),
        async || {
            let f = json_of(&config.path, &["events", "--status", "failed", "--json"]);
            f.as_array().is_some_and(|a| {
                a.len() == 1 && a[0]["attempts"] == 1 && a[0]["event_id"] == "evt_bad"
            })
        },
    )
    .await;
    let (code, out, _) = hooksync(&config.path, &["retry", "--status", "unhandled"], &[]);
    assert_eq!((code, out.trim()), (0, "0 unhandled event(s) queued again"));

    // A database that cannot be reached: a one-line reason and a failing exit.
    let url = match reader_backend(&mut db) {
        hooksync::store::Backend::Sqlite => "sqlite:///nonexistent-dir/x/hooksync.db".to_owned(),
        hooksync::store::Backend::Postgres => format!(
            "postgres://nobody@127.0.0.1:{}/none",
            common::ports::free_port()
        ),
    };
    let (code, out, err) = hooksync(
        &config.path,
        &["status"],
        &[("HOOKSYNC_DATABASE__URL", url.as_str())],
    );
    assert_ne!(code, 0);
    assert!(out.is_empty());
    let reason: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("hooksync: "))
        .collect();
    assert_eq!(reason.len(), 1, "{err}");
    drop(d);
}

fn reader_backend(r: &mut common::Reader) -> hooksync::store::Backend {
    r.backend()
}

#[test]
fn sign_prints_the_headers_each_provider_sends() {
    use base64::Engine;
    use hmac::{Hmac, Mac};
    fn mac(key: &[u8], msg: &[u8]) -> Vec<u8> {
        let mut m = Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
        m.update(msg);
        m.finalize().into_bytes().to_vec()
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    let dir = tempfile::tempdir().unwrap();
    let config = every_provider(dir.path());
    let file = dir.path().join("body.json");
    let body = br#"{"id":"evt_1","type":"debt.created"}"#;
    std::fs::write(&file, body).unwrap();
    let file = file.to_str().unwrap();
    let sign = |args: &[&str]| {
        let mut all = vec!["sign"];
        all.extend_from_slice(args);
        all.push(file);
        let (code, out, err) = hooksync(&config.path, &all, &[]);
        assert_eq!(code, 0, "{err}");
        out.lines().map(str::to_owned).collect::<Vec<_>>()
    };
    use common::providers::{BILL_KEY, BL_HEADER, BL_SECRET, BL_TOKEN, WHSEC};
    assert_eq!(
        sign(&["--endpoint", "getbill"]),
        [format!(
            "X-GetBill-Signature: {}",
            hex::encode(mac(SECRET.as_bytes(), body))
        )]
    );
    assert_eq!(
        sign(&["--endpoint", "bill"]),
        [format!(
            "X-Bill-Sha-Signature: {}",
            b64.encode(mac(BILL_KEY.as_bytes(), body))
        )]
    );
    assert_eq!(
        sign(&["--endpoint", "bigledger"]),
        [format!(
            "X-Signature: sha256={}",
            hex::encode(mac(BL_SECRET.as_bytes(), body))
        )]
    );
    let topic = sign(&["--endpoint", "bl-customer_created"]);
    assert_eq!(topic.len(), 1);
    assert!(
        topic[0].eq_ignore_ascii_case(&format!("{BL_HEADER}: {BL_TOKEN}")),
        "{topic:?}"
    );
    // Standard Webhooks signs with the decoded bytes of the secret after `whsec_`.
    let key = b64.decode(&WHSEC["whsec_".len()..]).unwrap();
    let signed = [b"msg_1.1700000000.".as_slice(), body].concat();
    assert_eq!(
        sign(&[
            "--endpoint",
            "standard",
            "--id",
            "msg_1",
            "--timestamp",
            "1700000000"
        ]),
        [
            "webhook-id: msg_1".to_owned(),
            "webhook-timestamp: 1700000000".to_owned(),
            format!("webhook-signature: v1,{}", b64.encode(mac(&key, &signed))),
        ]
    );
    let fresh = sign(&["--endpoint", "standard"]);
    assert!(
        fresh[0].starts_with("webhook-id: msg_") && fresh.len() == 3,
        "{fresh:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_served_as_prometheus_text() {
    let dir = tempfile::tempdir().unwrap();
    let config = Daemon::write_config(dir.path(), &Setup::default());
    let d = config.spawn().await;
    // Two requests with the first secret, three with the second (the one being retired), one
    // with neither.
    for n in 1..=5u64 {
        let secret = if n <= 2 { SECRET } else { common::OLD_SECRET };
        assert_eq!(d.post(body(n), &sign(secret, &body(n))).await, 200);
    }
    assert_eq!(d.post(body(9), &sign("wrong", &body(9))).await, 401);
    let scrape = |sel: &'static str| {
        let (client, admin) = (d.client.clone(), d.admin.clone());
        async move { common::metric(&client, &admin, sel).await }
    };
    assert_eq!(
        scrape("hooksync_signature_matches_total{endpoint=\"getbill\",secret=\"0\"}").await,
        2
    );
    assert_eq!(
        scrape("hooksync_signature_matches_total{endpoint=\"getbill\",secret=\"1\"}").await,
        3
    );
    assert_eq!(
        scrape("hooksync_requests_total{endpoint=\"getbill\",outcome=\"stored\"}").await,
        5
    );
    assert_eq!(
        scrape("hooksync_requests_total{endpoint=\"getbill\",outcome=\"unauthorized\"}").await,
        1
    );
    // Every request to the endpoint is in the acknowledgement histogram, once.
    assert_eq!(
        scrape("hooksync_ack_duration_seconds_count{endpoint=\"getbill\"}").await,
        6
    );
    assert_eq!(
        scrape("hooksync_events_stored_total{status=\"queued\"}").await,
        5
    );
    assert_eq!(scrape("hooksync_build_info").await, 1);
    assert!(scrape("process_resident_memory_bytes").await > 0);
    assert!(scrape("process_open_fds").await > 0);
    common::eventually(
        "the projection to be counted",
        Duration::from_secs(20),
        async || {
            common::metric(
                &d.client,
                &d.admin,
                "hooksync_events_applied_total{source=\"getbill\",outcome=\"applied\"}",
            )
            .await
                == 5
        },
    )
    .await;
    assert_eq!(scrape("hooksync_projection_lag_seconds_count").await, 5);
    assert_eq!(scrape("hooksync_events_queued").await, 0);
    assert_eq!(scrape("hooksync_database_up").await, 1);
    let text = d
        .client
        .get(format!("{}/metrics", d.admin))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for family in [
        "hooksync_requests_total",
        "hooksync_ack_duration_seconds",
        "hooksync_queue_oldest_age_seconds",
        "hooksync_db_errors_total",
        "hooksync_media_pending",
    ] {
        assert!(
            text.contains(&format!("# HELP {family} ")),
            "no HELP for {family}"
        );
        assert!(
            text.contains(&format!("# TYPE {family} ")),
            "no TYPE for {family}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reports_downtime_after_kill_9_against_each_providers_resending() {
    let dir = tempfile::tempdir().unwrap();
    let config = every_provider(dir.path());
    let mut d = config.spawn().await;
    assert_eq!(d.send(body(1)).await, 200);
    d.child.kill().unwrap(); // SIGKILL: no stop recorded
    d.child.wait().unwrap();
    let d = config.spawn().await;

    // Until three beats (15 s) have passed, a process that stopped beating may be serving
    // still (several instances can share a database); then its last beat is its end.
    let mut st = serde_json::Value::Null;
    common::eventually(
        "the killed run to count as stopped",
        Duration::from_secs(40),
        async || {
            st = json_of(&config.path, &["status", "--json"]);
            !st["downtime"].as_array().unwrap().is_empty()
        },
    )
    .await;
    let down = st["downtime"].as_array().unwrap();
    assert_eq!(down.len(), 1, "{st}");
    assert_eq!(
        st["sources"].as_array().unwrap().len(),
        5,
        "one line per source"
    );
    let gap = &down[0];
    assert!(gap["to"].is_string(), "a process serves again: {gap}");
    assert!(gap["seconds"].as_u64().unwrap() < 60, "{gap}");
    let exposure = |name: &str| {
        gap["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["endpoint"] == name)
            .unwrap_or_else(|| panic!("no {name} in {gap}"))
            .clone()
    };
    // A gap of seconds: GetBill resends for about 36 minutes, BigLedger's topic mode never.
    assert_eq!(exposure("getbill")["covered"], true);
    let topic = exposure("bl-customer_created");
    assert_eq!(topic["covered"], false);
    assert_eq!(topic["lost_from"], gap["from"]);
    assert_eq!(topic["lost_to"], gap["to"]);
    assert!(
        exposure("bill")["covered"].is_null(),
        "BILL publishes no span"
    );

    // A run that ended 90 minutes ago, before the first: longer than GetBill resends.
    let mut db = common::Reader::open(dir.path());
    let first_start = db.list(
        match db.backend() {
            hooksync::store::Backend::Sqlite => "started_at",
            hooksync::store::Backend::Postgres => {
                "to_char(started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"
            }
        },
        "FROM hooksync_runs ORDER BY started_at LIMIT 1",
    )[0]
    .as_str()
    .unwrap()
    .to_owned();
    let cast = if db.backend() == hooksync::store::Backend::Postgres {
        "::timestamptz"
    } else {
        ""
    };
    db.raw()
        .batch(&format!(
            "INSERT INTO hooksync_runs (id, started_at, seen_at, stopped_at) VALUES ('old', \
             '{a}'{cast}, '{b}'{cast}, '{b}'{cast})",
            a = hooksync::stamp::Stamp::now().plus(time::Duration::minutes(-200)),
            b = hooksync::stamp::Stamp::now().plus(time::Duration::minutes(-90)),
        ))
        .unwrap();
    let st = json_of(&config.path, &["status", "--json"]);
    let down = st["downtime"].as_array().unwrap();
    assert_eq!(down.len(), 2, "{st}");
    let long = &down[0];
    assert_eq!(long["to"], first_start);
    let getbill = long["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["endpoint"] == "getbill")
        .unwrap()
        .clone();
    assert_eq!(getbill["covered"], false, "{long}");
    assert_eq!(getbill["lost_from"], long["from"]);
    // Lost: what was first sent more than 36 minutes before the gap ended.
    let lost_to = hooksync::stamp::Stamp::parse(getbill["lost_to"].as_str().unwrap()).unwrap();
    let to = hooksync::stamp::Stamp::parse(long["to"].as_str().unwrap()).unwrap();
    assert_eq!(lost_to.until(to), Duration::from_secs(36 * 60));
    let (code, table, _) = hooksync(&config.path, &["status"], &[]);
    assert_eq!(code, 0);
    assert!(table.contains("getbill: events first sent from"), "{table}");
    assert!(table.contains("getbill: covered"), "{table}");
    drop(d);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_test_posts_a_signed_sample_of_every_provider_and_shows_its_row() {
    let dir = tempfile::tempdir().unwrap();
    let config = every_provider(dir.path());
    let d = config.spawn().await;
    for (endpoint, table) in [
        ("getbill", "debts"),
        ("bill", "bills"),
        ("bigledger", "invoices"),
        ("bl-customer_created", "customers"),
        ("standard", "records"),
    ] {
        let (code, out, err) = hooksync(&config.path, &["send-test", "--endpoint", endpoint], &[]);
        assert_eq!(code, 0, "{endpoint}: {err}{out}");
        assert!(out.contains("answered 200 OK"), "{endpoint}: {out}");
        assert!(out.contains(" is applied"), "{endpoint}: {out}");
        let row = out
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{table}: ")))
            .unwrap_or_else(|| panic!("{endpoint}: no {table} row in {out}"));
        let row: serde_json::Value = serde_json::from_str(row).unwrap();
        // The row is the sample's object, under a fresh id.
        let id = row["id"]
            .as_str()
            .or(row["guid"].as_str())
            .unwrap_or_default()
            .to_owned();
        assert!(id.starts_with("test-test_"), "{endpoint}: {row}");
    }
    let (code, out, _) = hooksync(
        &config.path,
        &["send-test", "--endpoint", "getbill", "--list-types"],
        &[],
    );
    assert_eq!(code, 0);
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["debt.created", "payment.received"]
    );
    let (code, _, err) = hooksync(
        &config.path,
        &["send-test", "--endpoint", "getbill", "--type", "nope"],
        &[],
    );
    assert_ne!(code, 0);
    assert!(err.contains("no sample of type \"nope\""), "{err}");
    drop(d);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuild_of_one_endpoint_needs_no_secret_and_leaves_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let config = every_provider(dir.path());
    let d = config.spawn().await;
    for n in 1..=3 {
        assert_eq!(d.send(body(n)).await, 200);
    }
    let (code, _, err) = hooksync(&config.path, &["send-test", "--endpoint", "bill"], &[]);
    assert_eq!(code, 0, "{err}");
    let mut db = common::Reader::open(dir.path());
    common::wait_until("the projector to finish", Duration::from_secs(30), || {
        db.queued() == 0
    })
    .await;
    db.raw()
        .batch("DELETE FROM debts; DELETE FROM bills")
        .unwrap();

    // The same configuration with every secret in variables this process does not have.
    let unset = dir.path().join("unset.toml");
    let text = std::fs::read_to_string(&config.path).unwrap();
    let text = text
        .replace(&format!("\"{SECRET}\""), "\"env:HOOKSYNC_TEST_UNSET_A\"")
        .replace(
            &format!("\"{}\"", common::providers::BILL_KEY),
            "\"env:HOOKSYNC_TEST_UNSET_B\"",
        )
        .replace(
            &format!("\"{}\"", common::providers::WHSEC),
            "\"env:HOOKSYNC_TEST_UNSET_C\"",
        );
    std::fs::write(&unset, text).unwrap();
    let (code, _, err) = hooksync(&unset, &["status"], &[]);
    assert_ne!(code, 0, "other commands still need the secrets");
    assert!(err.contains("HOOKSYNC_TEST_UNSET_A is not set"), "{err}");

    let (code, out, err) = hooksync(&unset, &["rebuild", "--endpoint", "getbill"], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("3 events applied again"), "{out}");
    assert_eq!(db.count("SELECT COUNT(*) AS n FROM debts"), 3);
    assert_eq!(
        db.count("SELECT COUNT(*) AS n FROM bills"),
        0,
        "another endpoint's table was rebuilt"
    );
    let (code, _, err) = hooksync(&unset, &["rebuild", "--endpoint", "nope"], &[]);
    assert_ne!(code, 0);
    assert!(err.contains("no endpoint named \"nope\""), "{err}");
    drop(d);
}
