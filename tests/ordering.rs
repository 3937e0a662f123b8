//! The projection is the same whatever order events arrive in: the required stream test, and
//! the row guard's rules shown one by one.

mod common;

use common::stream::{lifecycle, shuffled_with_duplicates, signed};
use common::{Setup, TestApp};

const TABLES: &[&str] = &["debts", "followups", "payments", "payment_plans", "notices"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shuffled_duplicated_concurrent_stream_ends_like_the_ordered_one() {
    let events = lifecycle(240, 1);
    let distinct = events.len() as i64;
    assert!(
        distinct > 2000,
        "the stream should be realistic in size, got {distinct}"
    );

    let ordered = TestApp::start(Setup::default()).await;
    for ev in &events {
        assert_eq!(ordered.send(&ev.body).await, 200);
    }
    let shuffled = TestApp::start(Setup::default()).await;
    common::send_concurrently(&shuffled, signed(shuffled_with_duplicates(&events, 7)), 6).await;

    let (mut a, _) = common::assert_ends_like_in_order(&ordered, &shuffled, distinct, TABLES).await;
    // The stream's own rules, seen in the result.
    let deleted = a.count("SELECT COUNT(*) AS n FROM debts WHERE deleted_at IS NOT NULL");
    let expected_deleted = (0..240).filter(|i| i % 4 == 0 && i % 16 != 0).count() as i64;
    assert_eq!(
        deleted, expected_deleted,
        "deleted debts stay deleted unless re-created"
    );
    let plans = serde_json::Value::Array(a.list("status", "FROM payment_plans ORDER BY debt_id"));
    for s in plans.as_array().unwrap() {
        assert!(
            matches!(s.as_str(), Some("active" | "completed" | "canceled")),
            "{s}"
        );
    }
    assert_eq!(
        a.count("SELECT COUNT(*) AS n FROM payments WHERE plan"),
        240 * 3
    );
    ordered.stop().await;
    shuffled.stop().await;
}

fn ev(id: &str, ty: &str, at: &str, data: serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(
        &serde_json::json!({"id": id, "type": ty, "created_at": at, "data": data,
        "metadata": {"source": "getbill", "version": "1.0", "company_id": "c1"}}),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_events_are_stale_and_tombstones_hold() {
    let app = TestApp::start(Setup::default()).await;
    let mut db = app.reader();
    let d = |email: &str| serde_json::json!({"id": "d1", "email": email, "status": "status.default.pending"});

    // Newest first: the delete, then the update it superseded, then the original create.
    assert_eq!(
        app.send(&ev(
            "e_del",
            "debt.deleted",
            "2024-01-03T00:00:00Z",
            serde_json::json!({"id": "d1", "deleted_at": "2024-01-03T00:00:00Z"})
        ))
        .await,
        200
    );
    app.wait_projected().await;
    assert_eq!(
        app.send(&ev(
            "e_upd",
            "debt.updated",
            "2024-01-02T00:00:00Z",
            d("late@x")
        ))
        .await,
        200
    );
    app.wait_projected().await;
    assert_eq!(
        app.send(&ev(
            "e_new",
            "debt.created",
            "2024-01-01T00:00:00Z",
            d("first@x")
        ))
        .await,
        200
    );
    app.wait_projected().await;
    let row = db.row("debts", "id", "d1");
    assert_eq!(
        row["deleted_at"], "2024-01-03T00:00:00.000000Z",
        "a late update or create must not resurrect"
    );
    assert_eq!(
        row["email"], "late@x",
        "the newest value of each field wins"
    );
    assert_eq!(row["last_event_id"], "e_del");
    assert_eq!(
        db.status_of("e_new").as_deref(),
        Some("stale"),
        "an event with nothing newer to say is stale"
    );

    // An update newer than the delete changes fields but does not resurrect.
    assert_eq!(
        app.send(&ev(
            "e_upd2",
            "debt.updated",
            "2024-01-04T00:00:00Z",
            d("after@x")
        ))
        .await,
        200
    );
    app.wait_projected().await;
    let row = db.row("debts", "id", "d1");
    assert_eq!(row["email"], "after@x");
    assert!(!row["deleted_at"].is_null());

    // A newer create does.
    assert_eq!(
        app.send(&ev(
            "e_new2",
            "debt.created",
            "2024-01-05T00:00:00Z",
            d("again@x")
        ))
        .await,
        200
    );
    app.wait_projected().await;
    let row = db.row("debts", "id", "d1");
    assert!(row["deleted_at"].is_null());
    assert_eq!(row["email"], "again@x");

    // Same second: the lifecycle rank orders them (updated after created), whatever the arrival.
    assert_eq!(
        app.send(&ev(
            "t_upd",
            "debt.updated",
            "2024-02-01T00:00:00Z",
            serde_json::json!({"id": "d2", "status": "status.default.paid"})
        ))
        .await,
        200
    );
    assert_eq!(
        app.send(&ev(
            "t_new",
            "debt.created",
            "2024-02-01T00:00:00Z",
            serde_json::json!({"id": "d2", "status": "status.default.pending"})
        ))
        .await,
        200
    );
    app.wait_projected().await;
    assert_eq!(db.row("debts", "id", "d2")["status"], "status.default.paid");

    // Absent fields keep their value; present ones (null included) overwrite.
    assert_eq!(
        app.send(&ev(
            "n1",
            "followup.created",
            "2024-03-01T00:00:00Z",
            serde_json::json!({"id": "f1", "summary": "s", "failure_reason": "x"})
        ))
        .await,
        200
    );
    assert_eq!(
        app.send(&ev(
            "n2",
            "followup.updated",
            "2024-03-02T00:00:00Z",
            serde_json::json!({"id": "f1", "failure_reason": null})
        ))
        .await,
        200
    );
    app.wait_projected().await;
    let row = db.row("followups", "id", "f1");
    assert_eq!(row["summary"], "s");
    assert!(row["failure_reason"].is_null());
    app.stop().await;
}

/// A plan's installments are rows of their own, as many as the provider sends: more than one
/// statement can bind (32,766 values on SQLite; 2 per key to lock a row on PostgreSQL, ~21 per
/// row to write it) must still apply, not fail the chunk at every try and stop the projector.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_with_more_installments_than_one_statement_binds_is_applied() {
    let app = TestApp::start(Setup::default()).await;
    const N: usize = 20_000;
    let installments: Vec<serde_json::Value> = (0..N)
        .map(|i| serde_json::json!({"id": format!("i{i}")}))
        .collect();
    let plan = ev(
        "big_plan",
        "payment_plan.created",
        "2024-01-01T00:00:00Z",
        serde_json::json!({"debt_id": "d1", "plan_months": 12, "installments": installments}),
    );
    assert!(plan.len() < 1024 * 1024, "{} bytes", plan.len());
    assert_eq!(app.send(&plan).await, 200);
    let after = ev(
        "after",
        "payment.received",
        "2024-01-02T00:00:00Z",
        serde_json::json!({"id": "p1", "debt_id": "d1", "amount": 5}),
    );
    assert_eq!(app.send(&after).await, 200);
    app.wait_projected().await;
    let mut db = app.reader();
    assert_eq!(db.status_of("big_plan").as_deref(), Some("applied"));
    assert_eq!(db.status_of("after").as_deref(), Some("applied"));
    assert_eq!(
        db.count("SELECT COUNT(*) AS n FROM payments WHERE plan AND debt_id = 'd1'"),
        N as i64
    );
    assert_eq!(
        db.count("SELECT COUNT(*) AS n FROM payment_plans WHERE debt_id = 'd1'"),
        1
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_event_fails_alone() {
    let app = TestApp::start(Setup::default()).await;
    // A plan whose second installment has no id: nothing of it may be applied.
    let bad = ev(
        "bad_plan",
        "payment_plan.created",
        "2024-01-01T00:00:00Z",
        serde_json::json!({
        "debt_id": "d9", "plan_months": 2, "installments": [{"id": "p1", "amount": 1}, {"amount": 2}]}),
    );
    assert_eq!(app.send(&bad).await, 200);
    let good = ev(
        "good",
        "payment.received",
        "2024-01-01T00:00:01Z",
        serde_json::json!({"id": "p7", "debt_id": "d9", "amount": 5.5}),
    );
    assert_eq!(app.send(&good).await, 200);
    app.wait_projected().await;
    let mut db = app.reader();
    assert_eq!(db.status_of("bad_plan").as_deref(), Some("failed"));
    assert_eq!(db.status_of("good").as_deref(), Some("applied"));
    assert_eq!(
        db.count("SELECT COUNT(*) AS n FROM payments WHERE id = 'p1'"),
        0,
        "a failed event leaves nothing behind"
    );
    assert_eq!(db.count("SELECT COUNT(*) AS n FROM payment_plans"), 0);
    assert_eq!(
        db.count("SELECT COUNT(*) AS n FROM events WHERE last_error LIKE '%missing%'"),
        1
    );
    assert_eq!(
        app.metric("hooksync_events_applied_total{outcome=\"failed\"}")
            .await,
        1
    );
    app.stop().await;
}
