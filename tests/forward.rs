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
fn planned(db: &mut common::Reader, destination: &str) -> (HashMap<String, Vec<String>>, HashMap<String, String>) {
    let rows = db.rows_where(
        "hooksync_deliveries",
        &format!("destination = '{destination}' ORDER BY id"),
    );
    let mut by_object: HashMap<String, Vec<String>> = HashMap::new();
    let mut object_of: HashMap<String, String> = HashMap::new();
    for r in rows {
        let (object, event) = (r["object"].as_str().unwrap().to_string(), r["event_id"].as_str().unwrap().to_string());
        by_object.entry(object.clone()).or_default().push(event.clone());
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
    assert!(failed * 5 > received.len(), "a third fails: {failed} of {}", received.len());

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
    let all_pass: Vec<Received> = received.iter().filter(|r| r.path == "/pass").cloned().collect();
    assert_eq!(overlapping(&all_pass, |r| object_of.get(&event_id(r)).cloned()), None);
    let mut seen: HashMap<String, Vec<String>> = HashMap::new();
    for r in &pass {
        seen.entry(object_of[&event_id(r)].clone()).or_default().push(event_id(r));
    }
    assert!(order.values().any(|v| v.len() > 3), "objects with several events");
    assert_eq!(seen, order);

    // Rows: never two requests for one row at once, and the CRM ends with exactly the rows of
    // the domain tables.
    let all_rows: Vec<Received> = received.iter().filter(|r| r.path == "/rows").cloned().collect();
    assert_eq!(overlapping(&all_rows, |r| Some(row_key(&r.json()))), None);
    let mut crm_rows: HashMap<String, serde_json::Value> = HashMap::new();
    for r in crm.delivered("/rows") {
        let v = r.json();
        crm_rows.insert(row_key(&v), v);
    }
    let mut tables = 0;
    for (table, key) in [("debts", "id"), ("followups", "id"), ("payments", "id"), ("payment_plans", "debt_id"), ("notices", "id")] {
        for row in db.rows_where(table, "1 = 1") {
            tables += 1;
            let k = format!("\"{table}\"/\"getbill\"/{}", serde_json::json!({ key: row[key] }));
            let Some(v) = crm_rows.get(&k) else {
                panic!("the CRM never received {k}");
            };
            let data: serde_json::Value = serde_json::from_str(row["data"].as_str().unwrap()).unwrap();
            assert_eq!(v["row"], data, "{k}");
            assert_eq!(v["deleted"], !row["deleted_at"].is_null(), "{k}");
            assert_eq!(v["event_id"], row["last_event_id"], "{k}");
        }
    }
    assert_eq!(crm_rows.len(), tables, "the CRM has rows the tables do not");
    app.stop().await;
}
