//! The real binary: graceful stop on SIGTERM/SIGINT, `kill -9` under load loses no
//! acknowledged event, the CLI subcommands, and the systemd unit.

mod common;

use std::collections::HashSet;
use std::process::Command;
use std::time::Duration;

use common::{sign, Daemon, Load, Reader, Setup, SECRET};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_loses_no_acknowledged_event() {
    let dir = tempfile::tempdir().unwrap();
    let config = Daemon::write_config(dir.path(), &Setup::default());
    let mut d = config.spawn().await;
    let load = Load::start(&d.client, &d.url, 0..8);
    load.wait_acked(500).await;
    d.child.kill().unwrap(); // SIGKILL
    d.child.wait().unwrap();
    let acked = load.finish().await;

    let d2 = config.spawn().await;
    let mut db = Reader::open(dir.path());
    assert!(db.integrity_ok());
    db.assert_stored(&acked);

    common::wait_until(
        "projection to finish after restart",
        Duration::from_secs(60),
        || db.queued() == 0,
    )
    .await;
    assert_eq!(
        db.count("SELECT COUNT(*) AS n FROM events WHERE status NOT IN ('applied', 'stale')"),
        0
    );
    // No duplicate effects: one debt per created id, and each debt shows its newest event.
    let ids = db.payload_id("payload");
    let created: HashSet<String> = db
        .list(&ids, "FROM events WHERE event_type = 'debt.created'")
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    let debts = db.count("SELECT COUNT(*) AS n FROM debts");
    let touched = db.distinct_payload_ids();
    assert_eq!(debts, touched);
    assert!(created.len() as i64 <= debts);
    let id = db.payload_id("e.payload");
    assert_eq!(
        db.count(&format!(
            "SELECT COUNT(*) AS n FROM debts d WHERE last_event_id <> (SELECT e.event_id FROM events e \
             WHERE {id} = d.id ORDER BY e.occurred_at DESC, e.rank DESC, e.seq DESC LIMIT 1)"
        )),
        0,
        "every debt reflects its newest event"
    );
    drop(d2);
}

async fn graceful_stop(signal: &str) {
    let dir = tempfile::tempdir().unwrap();
    let config = Daemon::write_config(dir.path(), &Setup::default());
    let mut d = config.spawn().await;
    let load = Load::start(&d.client, &d.url, 0..4);
    load.wait_acked(100).await;
    d.signal(signal);
    let code = d.wait_exit(Duration::from_secs(30)).await;
    let acked = load.finish().await;
    assert_eq!(code, Some(0), "exit status after SIG{signal}");
    Reader::open(dir.path()).assert_stored(&acked);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_gracefully() {
    graceful_stop("TERM").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_stops_gracefully() {
    graceful_stop("INT").await;
}

fn hooksync(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hooksync"));
    cmd.args(args).env_remove("GETBILL_WEBHOOK_SECRET");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run hooksync");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn check_config_accepts_the_example_and_names_every_bad_key() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml.example");
    let (code, out) = hooksync(
        &["--config", example, "check-config"],
        &[("GETBILL_WEBHOOK_SECRET", "s3cret")],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("configuration OK"), "{out}");
    assert!(!out.contains("s3cret"));

    let (code, out) = hooksync(&["--config", example, "check-config"], &[]);
    assert_eq!(code, 2);
    assert!(
        out.contains(
            "endpoints[0].secrets[0]: environment variable GETBILL_WEBHOOK_SECRET is not set"
        ),
        "{out}"
    );

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[server]\nlisten = \"127.0.0.1:1\"\nmax_conections = 3\nmax_body_bytes = \"lots\"\nheader_timeout_ms = -1\n[databse]\nurl = \"x\"\n[[endpoints]]\nname = \"g\"\npath = \"/g\"\nprovider = \"getbil\"\nsecrets = [\"k\"]\n").unwrap();
    let (code, out) = hooksync(&["--config", bad.to_str().unwrap(), "check-config"], &[]);
    assert_eq!(code, 2);
    // A value of the wrong type does not hide the keys after it.
    for key in [
        "server.max_conections",
        "server.max_body_bytes",
        "server.header_timeout_ms",
        "databse",
        "endpoints[0].provider",
    ] {
        assert!(out.contains(key), "{key} not named in:\n{out}");
    }

    // Environment variables override the file.
    let (code, out) = hooksync(
        &["--config", example, "check-config"],
        &[
            ("GETBILL_WEBHOOK_SECRET", "x"),
            ("HOOKSYNC_DATABASE__URL", "mysql://nope"),
        ],
    );
    assert_eq!(code, 2);
    assert!(out.contains("database.url"), "{out}");
}

/// The environment carries text only: a number or a boolean is read out of it where a key wants
/// one, and a text key keeps text that looks like a number. A variable under the prefix that
/// names no section (here the secret's own) is left alone.
#[test]
fn environment_values_are_read_as_each_key_wants() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hooksync.toml");
    std::fs::write(
        &file,
        "[[endpoints]]\nname = \"getbill\"\npath = \"/webhooks/getbill\"\nprovider = \"getbill\"\nsecrets = [\"env:HOOKSYNC_GETBILL_SECRET\"]\n",
    )
    .unwrap();
    let file = file.to_str().unwrap();
    let (code, out) = hooksync(
        &["--config", file, "check-config"],
        &[
            ("HOOKSYNC_GETBILL_SECRET", "s3cret"),
            ("HOOKSYNC_DATABASE__URL", "12345"),
            ("HOOKSYNC_SERVER__MAX_BODY_BYTES", "2048"),
            ("HOOKSYNC_PROJECTOR__ENABLED", "false"),
            (
                "HOOKSYNC_MEDIA__ALLOWED_HOSTS",
                "cdn.example.com,files.example.org",
            ),
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("database 12345"), "{out}");

    let (code, out) = hooksync(
        &["--config", file, "check-config"],
        &[
            ("HOOKSYNC_GETBILL_SECRET", "s3cret"),
            ("HOOKSYNC_SERVER__MAX_BODY_BYTES", "lots"),
            ("HOOKSYNC_PROJECTOR__ENABLED", "maybe"),
            ("HOOKSYNC_LOG__LEVEL", "info,=="),
            ("HOOKSYNC_ENDPOINTS__0__TENANT", "c5a8f3e1b9d2"),
        ],
    );
    assert_eq!(code, 2, "{out}");
    for key in [
        "server.max_body_bytes",
        "projector.enabled",
        "log.level",
        "HOOKSYNC_ENDPOINTS__0__TENANT",
    ] {
        assert!(out.contains(key), "{key} not named in:\n{out}");
    }
    assert!(!out.contains("s3cret"), "{out}");
}

#[test]
fn migrate_creates_the_tables() {
    let dir = tempfile::tempdir().unwrap();
    let url = common::database_url(dir.path());
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml.example");
    let env = [
        ("GETBILL_WEBHOOK_SECRET", "x"),
        ("HOOKSYNC_DATABASE__URL", url.as_str()),
    ];
    let (code, out) = hooksync(&["--config", example, "migrate"], &env);
    assert_eq!(code, 0, "{out}");
    let mut r = Reader::open(dir.path());
    for t in [
        "events",
        "debts",
        "followups",
        "payments",
        "payment_plans",
        "notices",
    ] {
        assert!(r.table_exists(t), "{t}");
    }
    let (code, out) = hooksync(&["--config", example, "migrate"], &env);
    assert_eq!(code, 0);
    assert!(out.contains("0 migration(s) applied"), "{out}");
}

#[test]
fn systemd_unit_verifies() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "systemd-analyze is required under CI"
        );
        eprintln!("SKIPPED systemd_unit_verifies: systemd-analyze is not installed");
        return;
    }
    // Verify the units as shipped, with their binary the one just built.
    let unit = |name: &str| {
        std::fs::read_to_string(format!("{}/systemd/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    };
    let (service, rebuild) = (unit("hooksync.service"), unit("hooksync-rebuild.service"));
    for u in [&service, &rebuild] {
        assert!(u.contains("ProtectSystem=strict") && u.contains("NoNewPrivileges=yes"));
        // The same user on the same state directory: the files SQLite creates for one can be
        // opened by the other; its group reads the configuration and the TLS key.
        assert!(
            u.contains("\nUser=hooksync\nGroup=hooksync\n")
                && u.contains("StateDirectory=hooksync")
        );
        assert!(!u.contains("DynamicUser=yes"));
    }
    assert!(service.contains("Restart=on-failure"));
    for line in [
        "Type=notify",
        "WatchdogSec=30s",
        "ExecReload=/bin/kill -HUP $MAINPID",
    ] {
        assert!(service.contains(&format!("\n{line}\n")), "{line}");
    }
    // The store thread calls setpriority at start: a filter without it would kill the daemon.
    assert!(
        service.contains("\nLimitNICE=-10\n")
            && service.contains("\nSystemCallFilter=setpriority\n")
    );
    assert!(rebuild.contains("Type=oneshot"));
    assert!(rebuild.contains("/etc/hooksync/config.toml rebuild"));
    let dir = tempfile::tempdir().unwrap();
    let mut paths = Vec::new();
    for (name, text) in [
        ("hooksync.service", &service),
        ("hooksync-rebuild.service", &rebuild),
    ] {
        let path = dir.path().join(name);
        std::fs::write(
            &path,
            text.replace("/usr/local/bin/hooksync", env!("CARGO_BIN_EXE_hooksync")),
        )
        .unwrap();
        paths.push(path);
    }
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args(&paths)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains(".service"),
        "systemd-analyze complained: {stderr}"
    );
}

/// While the database cannot take writes, every event is answered 503; while a sender signs
/// with the wrong secret, every event is answered 401; events the projector cannot apply are
/// marked failed. The log says so when it starts and when it ends, with how many there were,
/// not once per request or event: under load a line each was hundreds of thousands of lines
/// for a few seconds' restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_is_logged_when_it_starts_and_ends_not_once_per_request() {
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup {
        database_extra: "busy_timeout_ms = 100\n".into(),
        ..Setup::default()
    };
    let config = Daemon::write_config(dir.path(), &setup);
    let log = dir.path().join("hooksync.log");
    let mut d = config.spawn_logging(Some(&log)).await;
    let (_, first) = common::load_event(0, 99);
    for _ in 0..3 {
        assert_eq!(d.post(first.clone(), &"0".repeat(64)).await, 401);
    }
    assert_eq!(d.send(first).await, 200);
    // Applied before the bad plans arrive: applied in a chunk with them, it would end their
    // run after the first failure (a race this test once lost).
    let mut reader = Reader::open(dir.path());
    common::wait_until(
        "the first event to be applied",
        Duration::from_secs(30),
        || reader.queued() == 0,
    )
    .await;
    // Three plans the projector cannot apply (an installment without an id), older than
    // every other event, so they fail before the next one applies.
    for n in 0..3 {
        let bad = format!(
            r#"{{"id":"bad_plan_{n}","type":"payment_plan.created","created_at":"2023-12-31T00:00:0{n}Z","data":{{"debt_id":"d9","plan_months":1,"installments":[{{"amount":2}}]}}}}"#
        );
        assert_eq!(d.send(bad.into_bytes()).await, 200);
    }

    // Another process holds the write lock while six senders send ten events each.
    let mut locker = Reader::open(dir.path());
    locker.lock_writes();
    let mut senders = tokio::task::JoinSet::new();
    for worker in 0..6 {
        let (client, url) = (d.client.clone(), format!("{}{}", d.url, common::PATH));
        senders.spawn(async move {
            let mut statuses = Vec::new();
            for n in 0..10 {
                let (_, body) = common::load_event(n, worker);
                let sig = sign(SECRET, &body);
                let r = client
                    .post(&url)
                    .header("X-GetBill-Signature", sig)
                    .body(body);
                statuses.push(r.send().await.expect("request").status().as_u16());
            }
            statuses
        });
    }
    let statuses: Vec<u16> = senders.join_all().await.into_iter().flatten().collect();
    assert!(statuses.iter().all(|&s| s == 503), "{statuses:?}");
    locker.unlock_writes();
    let (_, after) = common::load_event(1, 99);
    assert_eq!(d.send(after).await, 200, "stored once the lock is gone");
    let mut db = Reader::open(dir.path());
    common::wait_until("projection to finish", Duration::from_secs(30), || {
        db.queued() == 0
    })
    .await;
    assert_eq!(
        db.count("SELECT COUNT(*) AS n FROM events WHERE status = 'failed'"),
        3
    );
    d.signal("TERM");
    assert_eq!(d.wait_exit(Duration::from_secs(30)).await, Some(0));

    let text = std::fs::read_to_string(&log).unwrap();
    let lines = |needle: &str| text.lines().filter(|l| l.contains(needle)).count();
    let refused = statuses.len();
    for (needle, want) in [
        (
            r#"hooksync::outage: failing what="signatures on getbill" error=signature does not match"#
                .to_owned(),
            1,
        ),
        (
            r#"working again what="signatures on getbill" failures=3 "#.to_owned(),
            1,
        ),
        (
            r#"hooksync::outage: failing what="requests answered 503""#.to_owned(),
            1,
        ),
        (
            format!(r#"working again what="requests answered 503" failures={refused} "#),
            1,
        ),
        (
            r#"hooksync::outage: failing what="database writes""#.to_owned(),
            1,
        ),
        (r#"working again what="database writes""#.to_owned(), 1),
        (
            r#"hooksync::outage: failing what="applying events" error=event bad_plan_"#.to_owned(),
            1,
        ),
        (
            r#"working again what="applying events" failures=3 "#.to_owned(),
            1,
        ),
    ] {
        assert_eq!(lines(&needle), want, "lines with {needle}:\n{text}");
    }
    let other: Vec<&str> = text
        .lines()
        .filter(|l| {
            (l.contains(" WARN ") || l.contains(" ERROR ")) && !l.contains("hooksync::outage")
        })
        .collect();
    assert!(
        other.is_empty(),
        "warnings besides the outage's: {other:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_signatures_and_presigned_queries_never_reach_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let (cdn, cdn_cert) = common::media_server::start_cdn(dir.path()).await;
    let media =
        common::media_server::reaching(&cdn_cert).replace("\"localhost\"", "\"*.cloudfront.net\"");
    let setup = Setup {
        media_extra: media,
        ..Setup::default()
    };
    let config = Daemon::write_config(dir.path(), &setup);
    let log = dir.path().join("hooksync.log");
    let mut d = config.spawn_logging(Some(&log)).await;

    // A good event, and a bad signature.
    let (_, good) = common::load_event(0, 99);
    let good_sig = sign(SECRET, &good);
    assert_eq!(d.send(good).await, 200);
    let bad_sig = "ab".repeat(32);
    let (_, other) = common::load_event(1, 99);
    assert_eq!(d.post(other, &bad_sig).await, 401);
    // Two presigned URLs: one downloads through a redirect, one cannot be reached.
    let unreachable = "https://d1.cloudfront.net/audio/call.mp3?X-Amz-Signature=QUERYSECRET77&X-Amz-Credential=CREDSECRET88";
    let fetched = cdn
        .url("/redirect-in")
        .replace("SECRETSIG0123", "QUERYSECRET99");
    let followup = serde_json::to_vec(&serde_json::json!({"id": "evt_media_log", "type": "followup.completed",
        "created_at": "2024-01-23T15:45:00+00:00", "data": {"id": "f1", "audio_url": unreachable, "pdf_url": fetched,
        "media_urls_expire_at": "2099-01-01T00:00:00+00:00"}}))
    .unwrap();
    assert_eq!(d.send(followup).await, 200);
    let mut db = Reader::open(dir.path());
    common::wait_until("the pdf fetched", Duration::from_secs(30), || {
        db.count("SELECT COUNT(*) AS n FROM media WHERE status = 'fetched' AND kind = 'pdf'") == 1
    })
    .await;
    common::wait_until(
        "a failed attempt at the audio",
        Duration::from_secs(30),
        || {
            db.count(
                "SELECT COUNT(*) AS n FROM media WHERE kind = 'audio' AND last_error IS NOT NULL",
            ) == 1
        },
    )
    .await;
    d.signal("TERM");
    assert_eq!(d.wait_exit(Duration::from_secs(30)).await, Some(0));

    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("DEBUG"),
        "the log ran at debug level:\n{text}"
    );
    assert!(
        text.contains("signature does not match"),
        "the refusal is logged, without its value"
    );
    assert!(text.contains("media fetched"), "the download is logged");
    assert!(
        text.contains("d1.cloudfront.net"),
        "the failing host is logged"
    );
    for secret in [
        SECRET,
        common::OLD_SECRET,
        good_sig.as_str(),
        bad_sig.as_str(),
        "QUERYSECRET77",
        "QUERYSECRET99",
        "CREDSECRET88",
        "AKIDSECRET",
        "X-Amz-",
    ] {
        assert!(
            !text.contains(secret),
            "{secret:?} reached the log:\n{text}"
        );
    }
}

/// The store thread, which every acknowledgement waits for, runs at `database.writer_nice`;
/// the other threads keep the process's value. Lowering a priority is always allowed; a raise
/// needs `LimitNICE=` or `CAP_SYS_NICE`, and where it is refused the thread keeps the
/// process's value and the log says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_thread_runs_at_the_configured_nice_value() {
    for nice in [5, -10] {
        let dir = tempfile::tempdir().unwrap();
        let setup = Setup {
            database_extra: format!("writer_nice = {nice}"),
            ..Setup::default()
        };
        let config = Daemon::write_config(dir.path(), &setup);
        let log = dir.path().join("hooksync.log");
        let d = config.spawn_logging(Some(&log)).await;
        let (set, kept) = (
            "store thread priority set",
            "store thread keeps the process's priority",
        );
        common::wait_until(
            "the store thread to report its priority",
            Duration::from_secs(20),
            || {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                text.contains(set) || text.contains(kept)
            },
        )
        .await;
        let text = std::fs::read_to_string(&log).unwrap();
        let threads = common::threads::thread_nice(d.pid());
        let base = threads
            .iter()
            .find(|(name, _)| name == "hooksync")
            .map(|(_, n)| *n)
            .unwrap();
        let store: Vec<i32> = threads
            .iter()
            .filter(|(name, _)| name == "hooksync-store")
            .map(|(_, n)| *n)
            .collect();
        assert_eq!(store.len(), 1, "{threads:?}");
        assert!(
            threads
                .iter()
                .filter(|(name, _)| name != "hooksync-store")
                .all(|(_, n)| *n == base),
            "{threads:?}"
        );
        if text.contains(set) {
            assert_eq!(store[0], nice, "{threads:?}");
        } else {
            assert!(nice < base, "a lower priority is never refused:\n{text}");
            assert_eq!(store[0], base, "{threads:?}");
        }
        drop(d);
    }
}
