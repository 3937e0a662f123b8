//! Forwarding to the CRM (`[[forward]]`): what each mode sends and how the CRM verifies it;
//! order per object and at-least-once delivery through failures, restarts, `kill -9` and
//! several instances; retries, `Retry-After`, 410, giving up; the commands and metrics.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::crm::{overlapping, Check, Crm, Provider, Received};
use common::providers::{self as p, Req};
use common::stream::{lifecycle, shuffled_with_duplicates, signed};
use common::{Setup, TestApp, SECRET};

/// A `[[forward]]` table.
fn forward(name: &str, url: &str, mode: &str, extra: &str) -> String {
    let secrets = if mode == "passthrough" {
        String::new()
    } else {
        format!("secrets = [\"{DEST_WHSEC}\"]\n")
    };
    format!(
        "[[forward]]\nname = \"{name}\"\nurl = \"{url}\"\nmode = \"{mode}\"\n{secrets}{extra}\n"
    )
}

/// The destination's own Standard Webhooks secret.
const DEST_WHSEC: &str = "whsec_dGhlIENSTSdzIG93biBzZWNyZXQgZm9yIGhvb2tzeW5j";

/// How the CRM verifies a passthrough request from each provider of the test configuration.
fn providers() -> HashMap<String, Provider> {
    HashMap::from([
        ("getbill".into(), Provider::GetBill(SECRET.into())),
        ("bill".into(), Provider::Bill(p::BILL_KEY.into())),
        ("bigledger".into(), Provider::BigLedger(p::BL_SECRET.into())),
        (
            "bl-topic".into(),
            Provider::Header(p::BL_HEADER.into(), p::BL_TOKEN.into()),
        ),
        ("standard".into(), Provider::Standard(p::WHSEC.into())),
    ])
}

fn event_id(r: &Received) -> String {
    r.header("hooksync-event-id").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_mode_is_verified_by_the_crm_as_its_sender_documents() {
    let crm = Crm::start().await;
    crm.check("/pass", Check::Passthrough(providers()));
    crm.check("/std", Check::Standard(DEST_WHSEC.into()));
    crm.check("/rows", Check::Standard(DEST_WHSEC.into()));
    let fast = "retry_base_ms = 50\nretry_max_ms = 200\n";
    let setup = Setup {
        extra_endpoints: p::endpoints(None)
            + &forward("pass", &crm.url("/pass"), "passthrough", fast)
            + &forward("std", &crm.url("/std"), "standard", &format!("{fast}endpoints = [\"getbill\", \"bill\"]\nevents = [\"debt.*\", \"bill.*\"]\n"))
            + &forward("rows", &crm.url("/rows"), "rows", fast),
        ..Setup::default()
    };
    let app = TestApp::start(setup).await;
    let mut reqs: Vec<Req> = Vec::new();
    reqs.extend(signed(lifecycle(3, 1)));
    reqs.extend(p::bill_stream(2));
    reqs.extend(p::bigledger_stream(2));
    reqs.extend(p::topic_stream(2));
    reqs.extend(p::standard_stream(2));
    // A body a provider signed that hooksync cannot read: passthrough still forwards it.
    let broken = b"{not json".to_vec();
    reqs.push(p::bill_req(broken.clone()));
    for r in &reqs {
        assert_eq!(
            app.post_with(&r.path, &r.body, &r.headers).await,
            200,
            "{}",
            r.path
        );
    }
    app.wait_projected().await;
    let mut db = app.reader();
    let forwarded = db.count(
        "SELECT COUNT(*) AS n FROM events WHERE status IN ('applied', 'unhandled', 'invalid')",
    );
    crm.wait("every passthrough delivery", Duration::from_secs(60), |r| {
        r.iter().filter(|r| r.path == "/pass" && r.ok()).count() as i64 >= forwarded
    })
    .await;
    let pending = || {
        common::Reader::open_url(&app.database_url)
            .count("SELECT COUNT(*) AS n FROM hooksync_deliveries WHERE status <> 'delivered'")
    };
    common::wait_until("every delivery", Duration::from_secs(60), || pending() == 0).await;
    crm.assert_all_verified();

    // Passthrough: the provider's own bytes and signature, hooksync's headers beside them.
    let pass = crm.delivered("/pass");
    assert_eq!(pass.len() as i64, forwarded);
    let sent: HashSet<Vec<u8>> = reqs.iter().map(|r| r.body.clone()).collect();
    for r in &pass {
        assert!(
            sent.contains(&r.body),
            "a body hooksync did not receive: {:?}",
            String::from_utf8_lossy(&r.body)
        );
        assert_eq!(r.header("hooksync-attempt"), "1");
        assert!(!r.header("hooksync-occurred-at").is_empty());
    }
    assert!(
        pass.iter().any(|r| r.body == broken),
        "the unreadable body is forwarded too"
    );
    for source in ["getbill", "bill", "bigledger", "bl-topic", "standard"] {
        assert!(
            pass.iter().any(|r| r.header("hooksync-source") == source),
            "{source}"
        );
    }

    // Standard: only the filtered endpoints and types, the stored payload as `data`.
    let std = crm.delivered("/std");
    let expected = db.count(
        "SELECT COUNT(*) AS n FROM events WHERE status = 'applied' AND source IN ('getbill', 'bill') \
         AND (event_type LIKE 'debt.%' OR event_type LIKE 'bill.%')",
    );
    assert!(expected > 0);
    assert_eq!(std.len() as i64, expected);
    for r in &std {
        let v = r.json();
        assert!(
            v["type"].as_str().unwrap().starts_with("debt.")
                || v["type"].as_str().unwrap().starts_with("bill."),
            "{v}"
        );
        assert_eq!(v["event_id"].as_str().unwrap(), event_id(r));
        assert!(v["data"].is_object(), "{v}");
        assert!(r.header("webhook-id").starts_with("hsd_"));
    }

    // Rows: the rows as they stand, one request per row change; the last of each row is the
    // row in the table.
    let mut last: HashMap<(String, String, String), serde_json::Value> = HashMap::new();
    for r in crm.delivered("/rows") {
        let v = r.json();
        let key = (
            v["table"].as_str().unwrap().to_string(),
            v["source"].as_str().unwrap().to_string(),
            v["key"].to_string(),
        );
        last.insert(key, v);
    }
    assert!(last.keys().any(|k| k.0 == "debts") && last.keys().any(|k| k.0 == "bills"));
    for ((table, source, _), v) in &last {
        let key = v["key"].as_object().unwrap();
        let cond = key
            .iter()
            .map(|(k, val)| format!("{k} = '{}'", val.as_str().unwrap()))
            .collect::<Vec<_>>()
            .join(" AND ");
        let rows = db.rows_where(table, &format!("source = '{source}' AND {cond}"));
        assert_eq!(rows.len(), 1, "{table} {cond}");
        let data: serde_json::Value =
            serde_json::from_str(rows[0]["data"].as_str().unwrap()).unwrap();
        assert_eq!(v["row"], data, "{table} {cond}");
        assert_eq!(v["deleted"], !rows[0]["deleted_at"].is_null());
        assert_eq!(v["event_id"], rows[0]["last_event_id"]);
    }
    app.stop().await;
}

/// Deliveries of `destination` per object, in the order hooksync made them (the projector's).
fn planned(
    db: &mut common::Reader,
    destination: &str,
) -> (HashMap<String, Vec<String>>, HashMap<String, String>) {
    let rows = db.rows_where(
        "hooksync_deliveries",
        &format!("destination = '{destination}' ORDER BY id"),
    );
    let mut by_object: HashMap<String, Vec<String>> = HashMap::new();
    let mut object_of: HashMap<String, String> = HashMap::new();
    for r in rows {
        let (object, event) = (
            r["object"].as_str().unwrap().to_string(),
            r["event_id"].as_str().unwrap().to_string(),
        );
        by_object
            .entry(object.clone())
            .or_default()
            .push(event.clone());
        object_of.insert(event, object);
    }
    (by_object, object_of)
}

fn row_key(v: &serde_json::Value) -> String {
    format!("{}/{}/{}", v["table"], v["source"], v["key"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shuffled_stream_reaches_a_failing_crm_in_order_per_object() {
    let events = lifecycle(240, 1);
    let crm = Crm::start().await;
    crm.check("/pass", Check::Passthrough(providers()));
    crm.check("/rows", Check::Standard(DEST_WHSEC.into()));
    crm.fail_ratio(1.0 / 3.0);
    let fast = "retry_base_ms = 10\nretry_max_ms = 100\nconcurrency = 8\n";
    let setup = Setup {
        extra_endpoints: forward("pass", &crm.url("/pass"), "passthrough", fast)
            + &forward("rows", &crm.url("/rows"), "rows", fast),
        ..Setup::default()
    };
    let app = TestApp::start(setup).await;
    common::send_concurrently(&app, signed(shuffled_with_duplicates(&events, 7)), 6).await;
    app.wait_projected().await;
    let mut db = app.reader();
    common::wait_until("every delivery", Duration::from_secs(300), || {
        db.count("SELECT COUNT(*) AS n FROM hooksync_deliveries WHERE status <> 'delivered'") == 0
    })
    .await;
    crm.assert_all_verified();
    let received = crm.received();
    let failed = received.iter().filter(|r| r.status == 500).count();
    assert!(
        failed * 5 > received.len(),
        "a third fails: {failed} of {}",
        received.len()
    );

    // Passthrough: every applied event, none of the stale ones, each object's in the
    // projector's order, never two at once.
    let applied: HashSet<String> = db
        .list("event_id", "FROM events WHERE status = 'applied'")
        .into_iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    let stale = db.count("SELECT COUNT(*) AS n FROM events WHERE status = 'stale'");
    assert!(stale > 0, "the shuffled stream has late events");
    let pass = crm.delivered("/pass");
    let got: HashSet<String> = pass.iter().map(event_id).collect();
    assert_eq!(got.len(), pass.len(), "an event delivered twice");
    assert_eq!(got, applied);
    let (order, object_of) = planned(&mut db, "pass");
    let all_pass: Vec<Received> = received
        .iter()
        .filter(|r| r.path == "/pass")
        .cloned()
        .collect();
    assert_eq!(
        overlapping(&all_pass, |r| object_of.get(&event_id(r)).cloned()),
        None
    );
    let mut seen: HashMap<String, Vec<String>> = HashMap::new();
    for r in &pass {
        seen.entry(object_of[&event_id(r)].clone())
            .or_default()
            .push(event_id(r));
    }
    assert!(
        order.values().any(|v| v.len() > 3),
        "objects with several events"
    );
    assert_eq!(seen, order);

    // Rows: never two requests for one row at once, and the CRM ends with exactly the rows of
    // the domain tables.
    let all_rows: Vec<Received> = received
        .iter()
        .filter(|r| r.path == "/rows")
        .cloned()
        .collect();
    assert_eq!(overlapping(&all_rows, |r| Some(row_key(&r.json()))), None);
    let mut crm_rows: HashMap<String, serde_json::Value> = HashMap::new();
    for r in crm.delivered("/rows") {
        let v = r.json();
        crm_rows.insert(row_key(&v), v);
    }
    let mut tables = 0;
    for (table, key) in [
        ("debts", "id"),
        ("followups", "id"),
        ("payments", "id"),
        ("payment_plans", "debt_id"),
        ("notices", "id"),
    ] {
        for row in db.rows_where(table, "1 = 1") {
            tables += 1;
            let k = format!(
                "\"{table}\"/\"getbill\"/{}",
                serde_json::json!({ key: row[key] })
            );
            let Some(v) = crm_rows.get(&k) else {
                panic!("the CRM never received {k}");
            };
            let data: serde_json::Value =
                serde_json::from_str(row["data"].as_str().unwrap()).unwrap();
            assert_eq!(v["row"], data, "{k}");
            assert_eq!(v["deleted"], !row["deleted_at"].is_null(), "{k}");
            assert_eq!(v["event_id"], row["last_event_id"], "{k}");
        }
    }
    assert_eq!(crm_rows.len(), tables, "the CRM has rows the tables do not");
    app.stop().await;
}

/// A destination for the real binary, and the GetBill events of `debts` debts.
fn daemon_with(dir: &std::path::Path, forward_tables: String) -> common::DaemonConfig {
    common::Daemon::write_config(
        dir,
        &Setup {
            extra_endpoints: forward_tables,
            ..Setup::default()
        },
    )
}

/// A CRM verifying Standard Webhooks requests at `/std`, and the real binary's configuration
/// with one `standard` destination there (`extra`: its other keys).
async fn standard_destination(extra: &str) -> (Crm, tempfile::TempDir, common::DaemonConfig) {
    let crm = Crm::start().await;
    crm.check("/std", Check::Standard(DEST_WHSEC.into()));
    let dir = tempfile::tempdir().unwrap();
    let config = daemon_with(
        dir.path(),
        forward("std", &crm.url("/std"), "standard", extra),
    );
    (crm, dir, config)
}

fn deliveries_left(db: &mut common::Reader) -> i64 {
    db.count("SELECT COUNT(*) AS n FROM hooksync_deliveries WHERE status <> 'delivered'")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_built_while_the_crm_is_down_is_delivered_in_order_when_it_is_back() {
    let (crm, dir, config) =
        standard_destination("retry_base_ms = 100\nretry_max_ms = 400\nconcurrency = 4\n").await;
    crm.down().await;
    let d = config.spawn().await;
    for ev in lifecycle(6, 2) {
        assert_eq!(d.send(ev.body).await, 200);
    }
    let mut db = common::Reader::open(dir.path());
    // Down past the schedule's first steps: some delivery has failed three times.
    common::wait_until("three failed attempts", Duration::from_secs(60), || {
        db.count("SELECT COUNT(*) AS n FROM hooksync_deliveries WHERE attempts >= 3") > 0
    })
    .await;
    let waiting = common::json_of(
        &config.path,
        &[
            "deliveries",
            "--destination",
            "std",
            "--status",
            "pending",
            "--json",
        ],
    );
    let waiting = waiting.as_array().unwrap();
    assert!(!waiting.is_empty());
    assert!(
        waiting.iter().any(|l| l["last_error"]
            .as_str()
            .unwrap_or("")
            .contains("connection")),
        "{waiting:?}"
    );
    let st = common::json_of(&config.path, &["status", "--json"]);
    let dest = &st["destinations"][0];
    assert_eq!(dest["destination"], "std");
    assert!(dest["pending"].as_i64().unwrap() > 0, "{st}");
    assert!(
        dest["oldest_pending"].is_string() && dest["last_delivered"].is_null(),
        "{st}"
    );
    let (code, table, _) = common::hooksync(&config.path, &["status"], &[]);
    assert_eq!(code, 0);
    assert!(
        table.contains("forward std: ") && table.contains("last delivered never"),
        "{table}"
    );
    assert!(
        common::metric(
            &d.client,
            &d.admin,
            "hooksync_delivery_backlog{destination=\"std\"}"
        )
        .await
            > 0
    );
    assert!(
        common::metric(
            &d.client,
            &d.admin,
            "hooksync_deliveries_total{destination=\"std\",outcome=\"failed\"}"
        )
        .await
            > 0
    );

    crm.up();
    common::wait_until("the backlog delivered", Duration::from_secs(60), || {
        deliveries_left(&mut db) == 0
    })
    .await;
    crm.assert_all_verified();
    let (order, object_of) = planned(&mut db, "std");
    let mut seen: HashMap<String, Vec<String>> = HashMap::new();
    for r in crm.delivered("/std") {
        seen.entry(object_of[&event_id(&r)].clone())
            .or_default()
            .push(event_id(&r));
    }
    assert_eq!(seen, order);
    assert_eq!(
        overlapping(&crm.received(), |r| object_of.get(&event_id(r)).cloned()),
        None
    );
    let st = common::json_of(&config.path, &["status", "--json"]);
    assert_eq!(st["destinations"][0]["pending"], 0);
    assert!(st["destinations"][0]["last_delivered"].is_string());
    assert_eq!(
        common::metric(
            &d.client,
            &d.admin,
            "hooksync_delivery_backlog{destination=\"std\"}"
        )
        .await,
        0
    );
}

fn debt_event(id: &str, ty: &str, at: &str, debt: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({"id": id, "type": ty, "created_at": at,
        "data": {"id": debt, "status": "status.default.pending"}, "metadata": {"company_id": "c1"}}))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_timeouts_410_and_giving_up_are_kept_per_attempt() {
    let (crm, dir, config) = standard_destination(
        "retry_base_ms = 100\nretry_max_ms = 200\nconcurrency = 1\ntimeout_ms = 500\ngive_up_after = \"3s\"\n",
    )
    .await;
    let d = config.spawn().await;
    let mut db = common::Reader::open(dir.path());
    let delivered = |db: &mut common::Reader, id: &str| {
        db.count(&format!("SELECT COUNT(*) AS n FROM hooksync_deliveries WHERE event_id = '{id}' AND status = 'delivered'")) == 1
    };
    let attempts_of = |id: &str| {
        crm.received()
            .into_iter()
            .filter(|r| event_id(r) == id)
            .collect::<Vec<_>>()
    };

    // 429 with Retry-After: 2 s, where the backoff alone would wait 50 to 100 ms.
    crm.then_answer(429, &[("retry-after", "2")], Duration::ZERO);
    assert_eq!(
        d.send(debt_event(
            "e1",
            "debt.created",
            "2024-01-01T00:00:00Z",
            "d1"
        ))
        .await,
        200
    );
    common::wait_until("e1 delivered", Duration::from_secs(30), || {
        delivered(&mut db, "e1")
    })
    .await;
    let tries = attempts_of("e1");
    assert_eq!(
        tries.iter().map(|r| r.status).collect::<Vec<_>>(),
        [429, 200]
    );
    assert!(tries[1].start.duration_since(tries[0].end) >= Duration::from_millis(1900));
    assert_eq!(tries[1].header("webhook-id"), tries[0].header("webhook-id"));
    assert_eq!(tries[1].header("hooksync-attempt"), "2");

    // An answer later than timeout_ms: the attempt times out and the next one delivers.
    crm.then_answer(200, &[], Duration::from_millis(1500));
    assert_eq!(
        d.send(debt_event(
            "e2",
            "debt.updated",
            "2024-01-02T00:00:00Z",
            "d1"
        ))
        .await,
        200
    );
    common::wait_until("e2 delivered", Duration::from_secs(30), || {
        delivered(&mut db, "e2")
    })
    .await;
    let kept = db.rows_where(
        "hooksync_delivery_attempts",
        "delivery_id = (SELECT id FROM hooksync_deliveries WHERE event_id = 'e2') ORDER BY attempt",
    );
    assert_eq!(kept.len(), 2, "{kept:?}");
    assert_eq!(kept[0]["error"], "timed out");
    assert!(kept[0]["http_status"].is_null());
    assert_eq!(kept[1]["http_status"].to_string().trim_matches('"'), "200");
    assert_eq!(kept[1]["response"], "answer 200\n");

    // 410 Gone pauses the destination: nothing is sent until `forward resume`.
    crm.then_answer(410, &[], Duration::ZERO);
    assert_eq!(
        d.send(debt_event(
            "e3",
            "debt.created",
            "2024-01-03T00:00:00Z",
            "d3"
        ))
        .await,
        200
    );
    common::wait_until("the pause", Duration::from_secs(30), || {
        db.count("SELECT COUNT(*) AS n FROM hooksync_destinations WHERE paused_at IS NOT NULL") == 1
    })
    .await;
    assert_eq!(
        d.send(debt_event(
            "e4",
            "debt.created",
            "2024-01-04T00:00:00Z",
            "d4"
        ))
        .await,
        200
    );
    common::wait_until("e4 planned", Duration::from_secs(30), || {
        db.count("SELECT COUNT(*) AS n FROM hooksync_deliveries WHERE event_id = 'e4'") == 1
    })
    .await;
    let (_, table, _) = common::hooksync(&config.path, &["status"], &[]);
    assert!(
        table.contains("PAUSED since") && table.contains("hooksync forward resume std"),
        "{table}"
    );
    assert_eq!(
        common::metric(
            &d.client,
            &d.admin,
            "hooksync_destination_paused{destination=\"std\"}"
        )
        .await,
        1
    );
    let resumed_at = std::time::Instant::now();
    let (code, out, err) = common::hooksync(&config.path, &["forward", "resume", "std"], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("std resumed"), "{out}");
    common::wait_until("e3 and e4 delivered", Duration::from_secs(30), || {
        delivered(&mut db, "e3") && delivered(&mut db, "e4")
    })
    .await;
    for r in attempts_of("e4") {
        assert!(
            r.start > resumed_at,
            "e4 was sent while the destination was paused"
        );
    }
    assert_eq!(
        attempts_of("e3")
            .iter()
            .map(|r| r.status)
            .collect::<Vec<_>>(),
        [410, 200]
    );

    // A delivery that keeps failing is given up after give_up_after; the object's next event
    // goes on; `redeliver --status dead` sends it again.
    crm.always_fail("e5");
    assert_eq!(
        d.send(debt_event(
            "e5",
            "debt.updated",
            "2024-01-05T00:00:00Z",
            "d1"
        ))
        .await,
        200
    );
    assert_eq!(
        d.send(debt_event(
            "e6",
            "debt.updated",
            "2024-01-06T00:00:00Z",
            "d1"
        ))
        .await,
        200
    );
    common::wait_until(
        "e6 delivered after e5 is dead",
        Duration::from_secs(30),
        || delivered(&mut db, "e6"),
    )
    .await;
    let dead = common::json_of(
        &config.path,
        &[
            "deliveries",
            "--destination",
            "std",
            "--status",
            "dead",
            "--json",
        ],
    );
    assert_eq!(dead.as_array().unwrap().len(), 1, "{dead}");
    assert_eq!(dead[0]["event_id"], "e5");
    assert!(dead[0]["attempts"].as_i64().unwrap() >= 2);
    let e5_last = attempts_of("e5").last().unwrap().end;
    assert!(
        attempts_of("e6")[0].start >= e5_last,
        "e6 went before e5 was given up"
    );
    assert_eq!(
        common::metric(
            &d.client,
            &d.admin,
            "hooksync_deliveries_total{destination=\"std\",outcome=\"dead\"}"
        )
        .await,
        1
    );
    crm.stop_failing();
    let (code, out, err) = common::hooksync(
        &config.path,
        &["redeliver", "--destination", "std", "--status", "dead"],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("1 delivery"), "{out}");
    common::wait_until("e5 delivered again", Duration::from_secs(30), || {
        delivered(&mut db, "e5")
    })
    .await;
    crm.assert_all_verified();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_acknowledging_commit_writes_no_delivery() {
    let crm = Crm::start().await;
    let setup = Setup {
        projector: false,
        extra_endpoints: forward("std", &crm.url("/std"), "standard", "")
            + &forward("pass", &crm.url("/pass"), "passthrough", ""),
        ..Setup::default()
    };
    let app = TestApp::start(setup).await;
    for ev in lifecycle(2, 3) {
        assert_eq!(app.send(&ev.body).await, 200);
    }
    let mut db = app.reader();
    assert!(db.count("SELECT COUNT(*) AS n FROM events") > 10);
    // The row holds the bytes and signature a passthrough destination needs, and nothing else
    // was written: the projector has not applied the events, so no delivery exists.
    assert_eq!(
        db.count("SELECT COUNT(*) AS n FROM events WHERE raw_body IS NULL OR headers IS NULL"),
        0
    );
    assert_eq!(db.count("SELECT COUNT(*) AS n FROM hooksync_deliveries"), 0);
    assert!(crm.received().is_empty());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_delivers_again_only_when_asked() {
    let crm = Crm::start().await;
    crm.check("/rows", Check::Standard(DEST_WHSEC.into()));
    let dir = tempfile::tempdir().unwrap();
    let config = daemon_with(dir.path(), forward("rows", &crm.url("/rows"), "rows", ""));
    let d = config.spawn().await;
    for ev in lifecycle(3, 4) {
        assert_eq!(d.send(ev.body).await, 200);
    }
    let mut db = common::Reader::open(dir.path());
    common::wait_until("every delivery", Duration::from_secs(60), || {
        db.queued() == 0
            && db.count("SELECT COUNT(*) AS n FROM hooksync_deliveries") > 0
            && deliveries_left(&mut db) == 0
    })
    .await;
    let (planned_before, received_before) = (
        db.count("SELECT COUNT(*) AS n FROM hooksync_deliveries"),
        crm.received().len(),
    );
    // Beside the serving daemon, whose projector applies some of the events again too.
    let (code, out, err) = common::hooksync(&config.path, &["rebuild"], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("rebuilt"), "{out}");
    common::wait_until("the rebuild applied", Duration::from_secs(60), || {
        db.queued() == 0
    })
    .await;
    assert_eq!(
        db.count("SELECT COUNT(*) AS n FROM hooksync_deliveries"),
        planned_before
    );
    assert_eq!(deliveries_left(&mut db), 0);
    assert_eq!(crm.received().len(), received_before);

    // Unless asked: every delivery is made again.
    let (code, _, err) = common::hooksync(&config.path, &["rebuild", "--redeliver"], &[]);
    assert_eq!(code, 0, "{err}");
    crm.wait("every delivery made again", Duration::from_secs(60), |r| {
        r.len() == received_before + planned_before as usize
    })
    .await;
    common::wait_until("recorded", Duration::from_secs(30), || {
        deliveries_left(&mut db) == 0
    })
    .await;
    assert_eq!(
        db.count("SELECT COUNT(*) AS n FROM hooksync_deliveries"),
        planned_before
    );
    crm.assert_all_verified();
    drop(d);
}

#[test]
fn check_config_names_each_bad_destination_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    let head = format!(
        "[database]\nurl = {:?}\n[[endpoints]]\nname = \"getbill\"\npath = \"/g\"\nprovider = \"getbill\"\nsecrets = [\"k\"]\n",
        dir.path().join("x.db").display()
    );
    std::fs::write(
        &path,
        format!(
            "{head}\n[[forward]]\nname = \"a\"\nurl = \"not a url\"\nmode = \"passthrough\"\n\
             [[forward]]\nname = \"b\"\nurl = \"http://127.0.0.1:9/\"\nmode = \"standard\"\nendpoints = [\"nope\"]\n\
             [[forward]]\nname = \"c\"\nurl = \"https://crm.example/h\"\nmode = \"rows\"\nsecrets = [\"{DEST_WHSEC}\"]\nconcurrency = 0\n\
             [[forward]]\nname = \"d\"\nurl = \"https://crm.example/h\"\nmode = \"sideways\"\n"
        ),
    )
    .unwrap();
    let (code, _, err) = common::hooksync(&path, &["check-config"], &[]);
    assert_eq!(code, 2, "{err}");
    for needle in [
        "forward[0].url: does not parse",
        "forward[1].endpoints: no endpoint is named \"nope\"",
        "forward[1].secrets: a standard destination signs its requests and needs a secret",
        "forward[2].concurrency: must be greater than 0",
        "forward[3].mode: expected \"passthrough\", \"standard\" or \"rows\", found \"sideways\"",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_in_the_middle_of_deliveries_loses_none_and_repeats_only_those_in_flight() {
    let concurrency = 4;
    let (crm, dir, config) =
        standard_destination(&format!("concurrency = {concurrency}\ntimeout_ms = 1000\n")).await;
    crm.delay(Duration::from_millis(50));
    let d = config.spawn().await;
    let events = lifecycle(12, 5);
    for ev in &events {
        assert_eq!(d.send(ev.body.clone()).await, 200);
    }
    let mut db = common::Reader::open(dir.path());
    crm.wait("some deliveries", Duration::from_secs(60), |r| {
        r.iter().filter(|r| r.ok()).count() >= 30
    })
    .await;
    let mut d = d;
    d.signal("KILL");
    d.wait_exit(Duration::from_secs(10)).await;
    let killed_at = std::time::Instant::now();
    let before = crm.received().len();
    assert!(before < events.len(), "the kill came after every delivery");
    let d = config.spawn().await;
    common::wait_until(
        "every delivery after the restart",
        Duration::from_secs(120),
        || db.queued() == 0 && deliveries_left(&mut db) == 0,
    )
    .await;
    crm.assert_all_verified();
    let planned: HashSet<String> = db
        .list("id", "FROM hooksync_deliveries")
        .into_iter()
        .map(|v| {
            format!(
                "hsd_{}",
                v.as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| v.to_string())
            )
        })
        .collect();
    let delivered = crm.delivered("/std");
    let got: HashSet<String> = delivered
        .iter()
        .map(|r| r.header("webhook-id").to_string())
        .collect();
    assert_eq!(got, planned, "a delivery is missing");
    let mut times: HashMap<String, Vec<&Received>> = HashMap::new();
    for r in &delivered {
        times
            .entry(r.header("webhook-id").to_string())
            .or_default()
            .push(r);
    }
    let repeats: Vec<&Vec<&Received>> = times.values().filter(|v| v.len() > 1).collect();
    assert!(
        repeats.len() <= concurrency,
        "{} repeats with {concurrency} in flight at most",
        repeats.len()
    );
    for rs in repeats {
        assert_eq!(rs.len(), 2);
        assert!(
            rs[0].start < killed_at,
            "a repeat of a delivery that was not in flight at the kill"
        );
        assert_eq!(rs[0].json()["event_id"], rs[1].json()["event_id"]);
    }
    drop(d);
}
