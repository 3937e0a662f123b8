//! A realistic GetBill stream: every event type of docs/providers.md, whole debt lifecycles, ties at
//! the same second, deletes followed by late updates, re-creates, numeric ids and exact money.

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

#[derive(Clone, Debug)]
pub struct Event {
    pub id: String,
    pub body: Vec<u8>,
}

/// A JSON number with exactly these digits (money must never pass through f64).
pub fn num(text: &str) -> Value {
    serde_json::from_str(text).expect("number")
}

fn ts(secs: i64) -> String {
    OffsetDateTime::from_unix_timestamp(secs)
        .unwrap()
        .format(&Rfc3339)
        .unwrap()
}

struct Builder {
    events: Vec<(i64, i64, Event)>,
    counter: u64,
    prefix: u64,
}

impl Builder {
    fn push(&mut self, at: i64, ty: &str, data: Value, meta: Value) {
        self.counter += 1;
        let id = format!("evt_{:016x}{:016x}", self.prefix, self.counter);
        let mut metadata =
            json!({"source": "getbill", "version": "1.0", "company_id": "c5a8f3e1b9d2"});
        if let (Some(m), Some(extra)) = (metadata.as_object_mut(), meta.as_object()) {
            for (k, v) in extra {
                m.insert(k.clone(), v.clone());
            }
        }
        let body =
            json!({"id": id, "type": ty, "created_at": ts(at), "data": data, "metadata": metadata});
        let rank = hooksync::providers::lifecycle_rank(ty);
        self.events.push((
            at,
            rank,
            Event {
                id,
                body: serde_json::to_vec(&body).unwrap(),
            },
        ));
    }
}

fn debt(id: &Value, i: usize, status: &str, email: &str, phone: &str, created: i64) -> Value {
    json!({
        "id": id, "firstname": format!("First{i}"), "lastname": format!("Last{i}"),
        "phone": phone, "email": email,
        "amount": num(&format!("{}.{:02}", 100 + i * 7, i % 100)), "currency": "EUR",
        "status": status, "internal_id": format!("INV-2024-{i:04}"),
        "due_date": "2024-02-22", "invoice_date": "2024-01-22", "created_at": ts(created),
        "company_id": "c5a8f3e1b9d2", "metadata": {"crm_id": format!("CRM-{i}"), "source": "website"}
    })
}

/// `debts` whole lifecycles, in the order they happened.
pub fn lifecycle(debts: usize, prefix: u64) -> Vec<Event> {
    let mut b = Builder {
        events: Vec::new(),
        counter: 0,
        prefix,
    };
    let base = 1_704_067_200; // 2024-01-01T00:00:00Z
    for i in 0..debts {
        let t = base + (i as i64) * 3600;
        let id = if i % 10 == 0 {
            json!(100_000 + i)
        } else {
            json!(format!("d{i:06}"))
        };
        let ids = crate::common::stream::id_text(&id);
        let meta = json!({"debt_id": id});
        b.push(
            t,
            "debt.created",
            debt(
                &id,
                i,
                "status.default.pending",
                &format!("a{i}@example.com"),
                "+33600000000",
                t,
            ),
            meta.clone(),
        );
        if i % 5 == 0 {
            // Same second as the create: the lifecycle rank puts the update after it.
            b.push(
                t,
                "debt.updated",
                debt(
                    &id,
                    i,
                    "status.default.pending",
                    &format!("a{i}@example.com"),
                    "+33611111111",
                    t,
                ),
                meta.clone(),
            );
        }
        let f1 = format!("f{i}_1");
        let fmeta = json!({"debt_id": id, "followup_id": f1});
        b.push(t + 60, "followup.created", json!({"id": f1, "debt_id": ids, "type": "CALL", "status": "scheduled",
            "scheduled_at": ts(t + 100), "audio_url": null, "pdf_url": null, "company_id": "c5a8f3e1b9d2"}), fmeta.clone());
        b.push(
            t + 120,
            "debt.updated",
            debt(
                &id,
                i,
                "status.default.in_progress",
                &format!("b{i}@example.com"),
                "+33611111111",
                t,
            ),
            meta.clone(),
        );
        b.push(t + 180, "followup.completed", json!({"id": f1, "debt_id": ids, "type": "CALL", "status": "deal_found",
            "summary": format!("Customer {i} agreed"), "call_date": ts(t + 150), "scheduled_at": ts(t + 100),
            "processed_at": ts(t + 180), "duration_ms": 1000 + i, "provider": "retell", "audio_url": null, "pdf_url": null,
            "company_id": "c5a8f3e1b9d2"}), fmeta.clone());
        let status = if i % 9 == 0 {
            "status.custom.disputed"
        } else {
            "status.default.partial"
        };
        b.push(
            t + 240,
            "debt.status_changed",
            debt(
                &id,
                i,
                status,
                &format!("b{i}@example.com"),
                "+33611111111",
                t,
            ),
            meta.clone(),
        );
        let inst: Vec<Value> = (1..=3)
            .map(|k| json!({"id": format!("p{i}_{k}"), "debt_id": ids, "amount": num("250.10"),
                "payment_date": format!("2024-0{}-01", k + 1), "status": "pending", "paid_at": null, "created_at": ts(t + 300)}))
            .collect();
        b.push(
            t + 300,
            "payment_plan.created",
            json!({"debt_id": ids, "plan_months": 3, "plan_start_date": "2024-02-01",
            "first_payment_amount": num("250.10"), "installments": inst}),
            meta.clone(),
        );
        b.push(t + 360, "payment.received", json!({"id": format!("p{i}_1"), "debt_id": ids, "amount": num("250.10"),
            "payment_date": "2024-02-01", "status": "paid", "paid_at": ts(t + 360), "created_at": ts(t + 300)}), meta.clone());
        if i % 6 == 1 {
            b.push(t + 370, "payment.failed", json!({"id": format!("p{i}_2"), "debt_id": ids, "amount": num("250.10"),
                "payment_date": "2024-03-01", "status": "failed", "failure_reason": "card declined", "created_at": ts(t + 300)}), meta.clone());
        }
        match i % 3 {
            0 => b.push(
                t + 420,
                "payment_plan.completed",
                json!({"debt_id": ids, "completed_at": ts(t + 420)}),
                meta.clone(),
            ),
            1 => b.push(
                t + 420,
                "payment_plan.canceled",
                json!({"debt_id": ids, "canceled_at": ts(t + 420)}),
                meta.clone(),
            ),
            _ => {}
        }
        if i % 4 == 0 {
            b.push(
                t + 480,
                "debt.deleted",
                json!({"id": id, "deleted_at": ts(t + 480)}),
                meta.clone(),
            );
            if i % 8 == 0 {
                b.push(
                    t + 540,
                    "debt.updated",
                    debt(
                        &id,
                        i,
                        "status.default.archived",
                        &format!("c{i}@example.com"),
                        "+33622222222",
                        t,
                    ),
                    meta.clone(),
                );
            }
            if i % 16 == 0 {
                b.push(
                    t + 600,
                    "debt.created",
                    debt(
                        &id,
                        i,
                        "status.default.pending",
                        &format!("d{i}@example.com"),
                        "+33633333333",
                        t + 600,
                    ),
                    meta.clone(),
                );
            }
        }
        if i % 7 == 0 {
            let f2 = format!("f{i}_2");
            b.push(t + 660, "followup.failed", json!({"id": f2, "debt_id": ids, "type": "CALL", "status": "bad_behavior",
                "summary": "Call could not be completed", "failure_reason": "Phone number disconnected",
                "scheduled_at": ts(t + 630), "processed_at": ts(t + 660), "audio_url": null, "pdf_url": null}),
                json!({"debt_id": id, "followup_id": f2}));
        }
        if i % 25 == 0 {
            b.push(t + 30, "company.credits_low", json!({"company_id": "c5a8f3e1b9d2", "current_credits": num("15.50"), "threshold": num("20.00")}), json!({}));
        }
        if i % 50 == 0 {
            b.push(
                t + 90,
                "report.generated",
                json!({"company_id": "c5a8f3e1b9d2", "report_id": format!("r{i}")}),
                json!({}),
            );
        }
        if i % 40 == 0 {
            b.push(
                t + 95,
                "integration.error",
                json!({"company_id": "c5a8f3e1b9d2", "error": "CRM timeout"}),
                json!({}),
            );
        }
    }
    b.events.sort_by_key(|(at, rank, _)| (*at, *rank));
    b.events.into_iter().map(|(_, _, e)| e).collect()
}

pub fn id_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The same events shuffled, with about a fifth of them sent twice.
pub fn shuffled_with_duplicates(events: &[Event], seed: u64) -> Vec<Event> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut out = events.to_vec();
    for e in events {
        if rng.random_ratio(1, 5) {
            out.push(e.clone());
        }
    }
    out.shuffle(&mut rng);
    out
}

/// Each event as GetBill sends it: signed with the test secret.
pub fn signed(events: Vec<Event>) -> Vec<super::Req> {
    events
        .into_iter()
        .map(|e| super::Req {
            path: super::PATH.to_string(),
            headers: vec![(
                "X-GetBill-Signature".to_string(),
                super::sign(super::SECRET, &e.body),
            )],
            body: e.body,
        })
        .collect()
}

/// A few debts updated over and over, the updates of all of them interleaved in time, each
/// adding a field of its own: every chunk of a projector touches every row, and an update
/// lost by a merge shows as a missing field.
pub fn contended(debts: usize, updates: usize, prefix: u64) -> Vec<Event> {
    let mut b = Builder {
        events: Vec::new(),
        counter: 0,
        prefix,
    };
    let base = 1_704_067_200;
    for d in 0..debts {
        b.push(
            base,
            "debt.created",
            json!({"id": format!("c{d}"), "status": "status.default.pending", "amount": num("10.00")}),
            json!({}),
        );
    }
    for k in 0..updates {
        let d = k % debts;
        let mut data = serde_json::Map::new();
        data.insert("id".into(), json!(format!("c{d}")));
        data.insert(format!("f{k:05}"), json!(k));
        b.push(
            base + 1 + k as i64,
            "debt.updated",
            Value::Object(data),
            json!({}),
        );
    }
    b.events.into_iter().map(|(_, _, e)| e).collect()
}
