//! BILL, BigLedger (signed envelope and topic mode) and Standard Webhooks over HTTPS on a real
//! port: verification, tenants, dedup, and order-independent projection of realistic streams.

mod common;

use common::providers::*;
use common::{Setup, TestApp};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

async fn app() -> TestApp {
    TestApp::start(Setup {
        extra_endpoints: endpoints(Some(BILL_ORG)),
        // The providers' documented samples are dated as they are, some of them ahead of the
        // day the tests run: their own times must order them, not the time of receipt.
        server_extra: "max_future_skew_ms = 3153600000000".into(),
        ..Setup::default()
    })
    .await
}

async fn send(app: &TestApp, r: &Req) -> u16 {
    app.post_with(&r.path, &r.body, &r.headers).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_provider_ends_the_same_whatever_the_order() {
    let mut all = bill_stream(40);
    all.extend(bigledger_stream(30));
    all.extend(topic_stream(30));
    all.extend(standard_stream(20));
    let distinct = all.len() as i64;

    let ordered = app().await;
    for r in &all {
        assert_eq!(
            send(&ordered, r).await,
            200,
            "{} {}",
            r.path,
            String::from_utf8_lossy(&r.body)
        );
    }

    let shuffled = app().await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let mut mixed = all.clone();
    for r in &all {
        if rng.random_ratio(1, 4) {
            mixed.push(r.clone());
        }
    }
    mixed.shuffle(&mut rng);
    common::send_concurrently(&shuffled, mixed, 6).await;

    let (mut a, _) = common::assert_ends_like_in_order(
        &ordered,
        &shuffled,
        distinct,
        &[
            "invoices",
            "customers",
            "bills",
            "vendors",
            "payments",
            "records",
        ],
    )
    .await;

    // What each provider's rules leave behind.
    let bill = a.row("bills", "id", "bill0");
    assert_eq!(bill["source"], "bill");
    assert_eq!(bill["archived"], 0, "archived then restored");
    assert!(bill["deleted_at"].is_null(), "archiving is not a delete");
    assert_eq!(bill["amount"], "300.00");
    assert_eq!(bill["invoice_number"], "202600");
    assert_eq!(bill["invoice_date"], "2026-12-15T00:00:00.000000Z");
    assert_eq!(a.row("bills", "id", "bill2")["archived"], 1);
    assert_eq!(
        a.count("SELECT COUNT(*) AS n FROM records WHERE source = 'bill' AND kind = 'bankAccount'"),
        7
    );
    let inv = a.row("invoices", "id", "inv_0");
    assert_eq!(
        (
            inv["source"].as_str(),
            inv["status"].as_str(),
            inv["total"].as_str()
        ),
        (Some("bigledger"), Some("cancelled"), Some("2567.50"))
    );
    assert_eq!(a.row("invoices", "id", "inv_1")["status"], "overdue");
    assert_eq!(a.row("customers", "id", "cust_1")["status"], "inactive");
    assert_eq!(
        a.count(
            "SELECT COUNT(*) AS n FROM records WHERE source = 'bigledger' AND kind = 'sales_order'"
        ),
        30
    );
    let si = a.row("invoices", "id", "si-1");
    assert_eq!(
        (
            si["source"].as_str(),
            si["number"].as_str(),
            si["total"].as_str()
        ),
        (Some("bl-topic"), Some("SI-00001"), Some("175.25"))
    );
    assert!(
        a.row("invoices", "id", "si-0")["deleted_at"].is_string(),
        "the delete topic tombstones"
    );
    assert!(a.row("customers", "id", "c-3")["deleted_at"].is_string());
    assert_eq!(a.row("customers", "id", "c-1")["name"], "Renamed");
    assert_eq!(
        a.count(
            "SELECT COUNT(*) AS n FROM records WHERE source = 'bl-topic' AND kind = 'inventory'"
        ),
        15
    );
    assert_eq!(
        a.count("SELECT COUNT(*) AS n FROM records WHERE source = 'standard' AND kind = 'invoice'"),
        20
    );
    ordered.stop().await;
    shuffled.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bill_sample_verifies_as_object_and_as_escaped_string() {
    let app = app().await;
    let sample = hooksync_sample();
    // Exactly the bytes and signature printed in docs/providers.md.
    let printed = Req {
        path: "/webhooks/bill".into(),
        body: sample.clone().into_bytes(),
        headers: vec![(
            "x-bill-sha-signature".into(),
            "emqFVljorzffarPtFViHfXjMmoyqfe+4Ev/gd0oFxJ8=".into(),
        )],
    };
    assert_eq!(send(&app, &printed).await, 200);
    let escaped = bill_req(serde_json::to_vec(&sample).unwrap());
    let r = app
        .client
        .post(format!("{}{}", app.url, escaped.path))
        .body(escaped.body.clone())
        .header("x-bill-sha-signature", &escaped.headers[0].1)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.text().await.unwrap(),
        r#"{"status":"duplicate"}"#,
        "same eventId, whatever the wrapping"
    );

    // Signature over other bytes, a truncated signature, none: 401.
    let mut tampered = printed.clone();
    tampered.body = serde_json::to_vec(&sample).unwrap();
    assert_eq!(send(&app, &tampered).await, 401);
    let mut short = printed.clone();
    short.headers[0].1.truncate(20);
    assert_eq!(send(&app, &short).await, 401);
    let mut none = printed.clone();
    none.headers.clear();
    assert_eq!(send(&app, &none).await, 401);

    // Another organization: refused, not stored.
    let other = bill_req(
        sample
            .replace(BILL_ORG, "00802OTHERORG0000000")
            .replace("625947c4", "725947c4")
            .into_bytes(),
    );
    assert_eq!(send(&app, &other).await, 403);

    app.wait_projected().await;
    let mut db = app.reader();
    assert_eq!(db.count("SELECT COUNT(*) AS n FROM events"), 1);
    let row = db.row("bills", "id", "00n02JZNIEYMNPY99iz9");
    assert_eq!(row["amount"], "228.99");
    assert_eq!(row["payment_status"], "UNPAID");
    assert_eq!(
        db.rows_where("events", "true")[0]["occurred_at"],
        "2026-12-15T23:15:23.127000Z"
    );
    assert_eq!(db.list("tenant", "FROM events")[0], BILL_ORG);
    app.stop().await;
}

fn hooksync_sample() -> String {
    r#"{"metadata":{"eventId":"625947c4-8e6b-48f0-ae72-ea9c9375ec27","subscriptionId":"f6d06930-e3e2-4509-be37-4dbda29efc6i","organizationId":"00802DEVKGROHKDIY4zyx","eventType":"bill.created","version":"1"},"bill":{"id":"00n02JZNIEYMNPY99iz9","vendorId":"00902BILKFECNEV2oji1","invoice":{"invoiceNumber":"202601","invoiceDate":"2026-12-15T00:00:00.000Z"},"amount":228.99,"createdTime":"2026-12-15T23:15:23.127+00:00","updatedTime":"2026-12-15T23:15:23.127+00:00","archived":false,"paymentStatus":"UNPAID"}}"#.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bigledger_signed_refuses_bad_signatures_and_other_companies() {
    let app = app().await;
    let good = bigledger_stream(1).remove(0);
    let mut bare = good.clone();
    bare.headers[0].1 = bare.headers[0].1.trim_start_matches("sha256=").to_string();
    let mut wrong = good.clone();
    wrong.headers[0].1 = format!("sha256={}", "0".repeat(64));
    let mut prefix_only = good.clone();
    prefix_only.headers[0].1 = "sha256=".into();
    assert_eq!(send(&app, &wrong).await, 401);
    assert_eq!(send(&app, &prefix_only).await, 401);
    let other = bigledger_req(
        String::from_utf8(good.body.clone())
            .unwrap()
            .replace(BL_COMPANY, "company_other")
            .replace("evt_000001", "evt_x")
            .into_bytes(),
    );
    assert_eq!(send(&app, &other).await, 403);
    assert_eq!(app.reader().count("SELECT COUNT(*) AS n FROM events"), 0);
    assert_eq!(send(&app, &bare).await, 200, "the prefix is optional");
    assert_eq!(send(&app, &good).await, 200);
    assert_eq!(app.reader().count("SELECT COUNT(*) AS n FROM events"), 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bigledger_topic_stores_what_it_cannot_read_and_refuses_a_wrong_header() {
    let app = app().await;
    let mut db = app.reader();
    let record = topic_stream(1).remove(0);
    let mut wrong = record.clone();
    wrong.headers[0].1 = "not-the-token".into();
    assert_eq!(send(&app, &wrong).await, 401);
    let mut missing = record.clone();
    missing.headers.clear();
    assert_eq!(send(&app, &missing).await, 401);
    assert_eq!(db.count("SELECT COUNT(*) AS n FROM events"), 0);

    assert_eq!(send(&app, &record).await, 200);
    let r = app
        .client
        .post(format!("{}{}", app.url, record.path))
        .header(BL_HEADER, BL_TOKEN)
        .body(record.body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.text().await.unwrap(),
        r#"{"status":"duplicate"}"#,
        "an identical re-delivery is a duplicate"
    );

    // The sender never retries: odd bodies are stored, never refused.
    assert_eq!(
        send(&app, &topic_req("CUSTOMER_DELETED", b"true".to_vec())).await,
        200
    );
    assert_eq!(
        send(
            &app,
            &topic_req(
                "INTERNAL_SALES_INVOICE_DELETED",
                b"The document has been deleted.".to_vec()
            )
        )
        .await,
        200
    );
    assert_eq!(
        send(
            &app,
            &topic_req(
                "CUSTOMER_UPDATED",
                b"Customer updated successfully".to_vec()
            )
        )
        .await,
        200
    );
    app.wait_projected().await;
    let statuses = serde_json::Value::Array(db.list(
        "COALESCE(event_type, '-') || ' ' || status",
        "FROM events ORDER BY seq",
    ));
    assert_eq!(
        statuses,
        serde_json::json!([
            "CUSTOMER_CREATED applied",
            "CUSTOMER_DELETED unhandled",
            "INTERNAL_SALES_INVOICE_DELETED unhandled",
            "- invalid"
        ])
    );
    assert_eq!(db.count("SELECT COUNT(*) AS n FROM events WHERE status = 'unhandled' AND last_error LIKE 'deletion notice%'"), 2);
    let body = db.bytes_literal("Customer updated successfully");
    assert_eq!(
        db.count(&format!(
            "SELECT COUNT(*) AS n FROM events WHERE status = 'invalid' AND raw_body = {body}"
        )),
        1
    );
    assert_eq!(
        db.count("SELECT COUNT(*) AS n FROM events WHERE event_id LIKE 'CUSTOMER_DELETED:%'"),
        1
    );
    assert_eq!(db.row("customers", "id", "c-0")["name"], "First");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standard_webhooks_refuse_stale_timestamps_and_dedup_on_webhook_id() {
    let app = app().await;
    let r = standard_stream(1).remove(0);
    assert_eq!(send(&app, &r).await, 200);
    let again = app
        .client
        .post(format!("{}{}", app.url, r.path))
        .body(r.body.clone());
    let again = r
        .headers
        .iter()
        .fold(again, |q, (k, v)| q.header(k.as_str(), v.as_str()))
        .send()
        .await
        .unwrap();
    assert_eq!(again.text().await.unwrap(), r#"{"status":"duplicate"}"#);

    // Re-signed ten minutes in the past: refused.
    let key = hooksync::providers::standard::decode_secret(WHSEC.as_bytes()).unwrap();
    let old = (time::OffsetDateTime::now_utc().unix_timestamp() - 600).to_string();
    let sig = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        hooksync::providers::hmac_sha256(&key, &[b"msg_old", b".", old.as_bytes(), b".", &r.body]),
    );
    let stale = vec![
        ("webhook-id".to_string(), "msg_old".to_string()),
        ("webhook-timestamp".to_string(), old),
        ("webhook-signature".to_string(), format!("v1,{sig}")),
    ];
    assert_eq!(app.post_with(&r.path, &r.body, &stale).await, 401);
    let mut v1_only = r.headers.clone();
    v1_only[2].1 = "v1,".into();
    v1_only[0].1 = "msg_other".into();
    assert_eq!(app.post_with(&r.path, &r.body, &v1_only).await, 401);

    app.wait_projected().await;
    let mut db = app.reader();
    assert_eq!(db.count("SELECT COUNT(*) AS n FROM events"), 1);
    let row = &db.rows_where("records", "true")[0];
    assert_eq!(row["kind"], "invoice");
    assert_eq!(row["id"], "in_0");
    app.stop().await;
}
