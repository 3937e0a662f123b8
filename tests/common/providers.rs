//! Realistic streams for BILL, BigLedger (both modes) and Standard Webhooks, each as the
//! provider puts it on the wire, with every event type docs/providers.md lists for it.

use base64::Engine;
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::stream::num;
pub use super::Req;

pub const BILL_KEY: &str = "test-security-key-0001";
pub const BILL_ORG: &str = "00802DEVKGROHKDIY4zyx";
pub const BL_SECRET: &str = "bigledger-secret-1";
pub const BL_COMPANY: &str = "company_abc123";
pub const BL_TOKEN: &str = "static-token-for-bigledger";
pub const BL_HEADER: &str = "X-BL-Token";
pub const WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
pub const TOPICS: &[&str] = &[
    "CUSTOMER_CREATED",
    "CUSTOMER_UPDATED",
    "CUSTOMER_DELETED",
    "INTERNAL_SALES_INVOICE_CREATED",
    "INTERNAL_SALES_INVOICE_UPDATED",
    "INTERNAL_SALES_INVOICE_DELETED",
    "INVENTORY_UPDATED",
];

pub fn topic_path(topic: &str) -> String {
    format!("/webhooks/bl/{}", topic.to_ascii_lowercase())
}

/// The `[[endpoints]]` tables for every provider of this file.
pub fn endpoints(bill_tenant: Option<&str>) -> String {
    let mut t = format!(
        "[[endpoints]]\nname = \"bill\"\npath = \"/webhooks/bill\"\nprovider = \"bill\"\nsecrets = [\"{BILL_KEY}\"]\n{}\n\
         [[endpoints]]\nname = \"bigledger\"\npath = \"/webhooks/bigledger\"\nprovider = \"bigledger\"\nsecrets = [\"{BL_SECRET}\"]\ntenant = \"{BL_COMPANY}\"\n\
         [[endpoints]]\nname = \"standard\"\npath = \"/webhooks/standard\"\nprovider = \"standard\"\nsecrets = [\"{WHSEC}\"]\n",
        bill_tenant.map(|t| format!("tenant = \"{t}\"")).unwrap_or_default()
    );
    for topic in TOPICS {
        t.push_str(&format!(
            "[[endpoints]]\nname = \"bl-{}\"\nsource = \"bl-topic\"\npath = \"{}\"\nprovider = \"bigledger-topic\"\ntopic = \"{topic}\"\n\
             auth_header = {{ name = \"{BL_HEADER}\", value = \"{BL_TOKEN}\" }}\n",
            topic.to_ascii_lowercase(),
            topic_path(topic)
        ));
    }
    t
}

fn iso(secs: i64) -> String {
    OffsetDateTime::from_unix_timestamp(secs)
        .unwrap()
        .format(&Rfc3339)
        .unwrap()
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    hooksync::providers::hmac_sha256(key, parts)
}

pub fn bill_req(body: Vec<u8>) -> Req {
    let sig = base64::engine::general_purpose::STANDARD.encode(hmac(BILL_KEY.as_bytes(), &[&body]));
    Req {
        path: "/webhooks/bill".into(),
        body,
        headers: vec![("x-bill-sha-signature".into(), sig)],
    }
}

pub fn bigledger_req(body: Vec<u8>) -> Req {
    let sig = format!(
        "sha256={}",
        hex::encode(hmac(BL_SECRET.as_bytes(), &[&body]))
    );
    Req {
        path: "/webhooks/bigledger".into(),
        body,
        headers: vec![("X-Signature".into(), sig)],
    }
}

pub fn topic_req(topic: &str, body: Vec<u8>) -> Req {
    Req {
        path: topic_path(topic),
        body,
        headers: vec![(BL_HEADER.into(), BL_TOKEN.into())],
    }
}

pub fn standard_req(id: &str, body: Vec<u8>) -> Req {
    let key = hooksync::providers::standard::decode_secret(WHSEC.as_bytes()).unwrap();
    let ts = OffsetDateTime::now_utc().unix_timestamp().to_string();
    let sig = base64::engine::general_purpose::STANDARD.encode(hmac(
        &key,
        &[id.as_bytes(), b".", ts.as_bytes(), b".", &body],
    ));
    Req {
        path: "/webhooks/standard".into(),
        body,
        headers: vec![
            ("webhook-id".into(), id.into()),
            ("webhook-timestamp".into(), ts),
            ("webhook-signature".into(), format!("v1,{sig}")),
        ],
    }
}

const BASE: i64 = 1_767_225_600; // 2026-01-01

/// BILL: bills, vendors, invoices, payments, autopay, bank and card accounts, risk
/// verification and spend events; every other body JSON-escaped into a string.
pub fn bill_stream(n: usize) -> Vec<Req> {
    let mut out = Vec::new();
    let mut k = 0;
    let mut push = |ty: &str, key: &str, entity: Value| {
        k += 1;
        let event = json!({"metadata": {"eventId": format!("{:08x}-0000-4000-8000-{:012x}", k, k), "subscriptionId": "sub-1",
            "organizationId": BILL_ORG, "eventType": ty, "version": "1"}, key: entity});
        let text = event.to_string();
        let body = if k % 2 == 0 {
            serde_json::to_string(&text).unwrap()
        } else {
            text
        };
        out.push(bill_req(body.into_bytes()));
    };
    for i in 0..n {
        let t = BASE + i as i64 * 3600;
        let at = |d: i64| format!("{}.{:03}+00:00", iso(t + d).trim_end_matches('Z'), i % 1000);
        let bill = |d: i64, amount: &str, archived: bool| {
            json!({"id": format!("bill{i}"), "vendorId": format!("vnd{i}"),
            "invoice": {"invoiceNumber": format!("2026{i:02}"), "invoiceDate": "2026-12-15T00:00:00.000Z"}, "amount": num(amount),
            "dueDate": "2027-01-15", "createdTime": at(0), "updatedTime": at(d), "archived": archived, "paymentStatus": "UNPAID"})
        };
        push("bill.created", "bill", bill(0, "228.99", false));
        push(
            "bill.updated",
            "bill",
            bill(60, &format!("{}.{:02}", 300 + i, i % 100), false),
        );
        if i % 2 == 0 {
            push(
                "bill.archived",
                "bill",
                bill(120, &format!("{}.{:02}", 300 + i, i % 100), true),
            );
        }
        if i % 4 == 0 {
            push(
                "bill.restored",
                "bill",
                bill(180, &format!("{}.{:02}", 300 + i, i % 100), false),
            );
        }
        let vendor = |d: i64, email: &str, archived: bool| {
            json!({"id": format!("vnd{i}"), "name": format!("Vendor {i}"),
            "email": email, "createdTime": at(0), "updatedTime": at(d), "archived": archived})
        };
        push("vendor.created", "vendor", vendor(10, "a@v.example", false));
        push("vendor.updated", "vendor", vendor(70, "b@v.example", false));
        if i % 3 == 0 {
            push(
                "vendor.archived",
                "vendor",
                vendor(130, "b@v.example", true),
            );
            push(
                "vendor.restored",
                "vendor",
                vendor(190, "b@v.example", false),
            );
        }
        let invoice = |d: i64, status: &str| {
            json!({"id": format!("inv{i}"), "invoiceNumber": format!("INV-{i}"),
            "customerId": format!("cus{i}"), "totalAmount": num("1000.10"), "dueAmount": num("1000.10"), "status": status,
            "invoiceDate": "2026-01-02", "dueDate": "2026-02-02", "createdTime": at(0), "updatedTime": at(d), "archived": false})
        };
        push("invoice.created", "invoice", invoice(20, "OPEN"));
        push("invoice.updated", "invoice", invoice(80, "PARTIAL"));
        if i % 5 == 0 {
            push("invoice.archived", "invoice", invoice(140, "PARTIAL"));
            push("invoice.restored", "invoice", invoice(200, "PARTIAL"));
        }
        push(
            "payment.updated",
            "payment",
            json!({"id": format!("pay{i}"), "billId": format!("bill{i}"), "amount": num("99.95"),
            "status": "SCHEDULED", "processDate": "2026-01-05", "createdTime": at(0), "updatedTime": at(90)}),
        );
        if i % 5 == 1 {
            push(
                "payment.failed",
                "payment",
                json!({"id": format!("pay{i}"), "billId": format!("bill{i}"), "amount": num("99.95"),
                "status": "FAILED", "failureReason": "insufficient funds", "createdTime": at(0), "updatedTime": at(150)}),
            );
        }
        if i % 6 == 0 {
            push(
                "autopay.failed",
                "autopay",
                json!({"id": format!("ap{i}"), "reason": "limit", "updatedTime": at(160)}),
            );
            push(
                "bank-account.created",
                "bankAccount",
                json!({"id": format!("ba{i}"), "name": "Main", "updatedTime": at(30)}),
            );
            push(
                "bank-account.updated",
                "bankAccount",
                json!({"id": format!("ba{i}"), "name": "Main 2", "updatedTime": at(100)}),
            );
            push(
                "card-account.created",
                "cardAccount",
                json!({"id": format!("ca{i}"), "last4": "4242", "updatedTime": at(40)}),
            );
            push(
                "card-account.updated",
                "cardAccount",
                json!({"id": format!("ca{i}"), "last4": "4343", "updatedTime": at(110)}),
            );
            push(
                "risk-verification.updated",
                "riskVerification",
                json!({"id": format!("rv{i}"), "status": "VERIFIED", "updatedTime": at(50)}),
            );
            push(
                "spend.transaction.created",
                "spendTransaction",
                json!({"id": format!("st{i}"), "amount": num("12.30"), "updatedTime": at(55)}),
            );
        }
    }
    out
}

/// BigLedger's signed envelope: invoice, payment, customer, inventory, e-invoice and sales-order
/// events, `data.object` the full state.
pub fn bigledger_stream(n: usize) -> Vec<Req> {
    let mut out = Vec::new();
    let mut k = 0;
    let mut push = |ty: &str, at: i64, object: Value| {
        k += 1;
        let body = json!({"id": format!("evt_{k:06}"), "event": ty, "timestamp": iso(at), "livemode": true, "api_version": "v1",
            "data": {"object": object, "previous_attributes": {}},
            "context": {"companyId": BL_COMPANY, "userId": "user_789", "source": "api", "ip": "203.0.113.1"}});
        out.push(bigledger_req(serde_json::to_vec(&body).unwrap()));
    };
    for i in 0..n {
        let t = BASE + i as i64 * 3600;
        for (d, (ty, status)) in [
            ("invoice.created", "draft"),
            ("invoice.updated", "draft"),
            ("invoice.sent", "sent"),
            ("invoice.viewed", "viewed"),
            ("invoice.partially_paid", "partial"),
            ("invoice.paid", "paid"),
            ("invoice.overdue", "overdue"),
            ("invoice.cancelled", "cancelled"),
        ]
        .iter()
        .enumerate()
        {
            if *ty == "invoice.cancelled" && i % 3 != 0 {
                continue;
            }
            push(
                ty,
                t + d as i64 * 60,
                json!({"id": format!("inv_{i}"), "invoiceNumber": format!("INV-2024-{i:04}"),
                "customerId": format!("cust_{i}"), "customer": {"id": format!("cust_{i}"), "name": "Acme Corporation"},
                "invoiceDate": "2024-01-15", "dueDate": "2024-02-14", "status": status, "currency": "MYR",
                "total": num("2567.50"), "amountDue": num(if d >= 5 { "0.00" } else { "2567.50" }), "amountPaid": num(if d >= 5 { "2567.50" } else { "0.00" })}),
            );
        }
        for (d, ty) in [
            "payment.received",
            "payment.matched",
            "payment.unmatched",
            "payment.refunded",
        ]
        .iter()
        .enumerate()
        {
            push(
                ty,
                t + 1000 + d as i64 * 60,
                json!({"id": format!("pay_{i}"), "amount": num("2567.50"), "currency": "MYR",
                "paymentDate": "2024-01-20", "paymentMethod": "bank_transfer", "reference": format!("TXN-{i}"),
                "customerId": format!("cust_{i}"), "invoiceId": format!("inv_{i}"), "status": ty.split('.').nth(1).unwrap()}),
            );
        }
        for (d, ty) in [
            "customer.created",
            "customer.updated",
            "customer.credit_limit_exceeded",
            "customer.status_changed",
        ]
        .iter()
        .enumerate()
        {
            push(
                ty,
                t + 2000 + d as i64 * 60,
                json!({"id": format!("cust_{i}"), "name": format!("Customer {i}"), "email": format!("c{i}@acme.example"),
                "status": if d == 3 { "inactive" } else { "active" }, "currency": "MYR", "creditLimit": num("5000.00")}),
            );
        }
        for (d, ty) in [
            "inventory.low_stock",
            "inventory.out_of_stock",
            "inventory.adjustment",
            "inventory.transfer",
        ]
        .iter()
        .enumerate()
        {
            push(
                ty,
                t + 2500 + d as i64 * 60,
                json!({"id": format!("item_{i}"), "itemCode": format!("WDG-{i:03}"), "currentStock": 15 - d as i64 * 5,
                "unitCost": num("18.50")}),
            );
        }
        for (d, ty) in [
            "einvoice.created",
            "einvoice.validated",
            "einvoice.submitted",
            "einvoice.accepted",
            "einvoice.rejected",
            "einvoice.cancelled",
        ]
        .iter()
        .enumerate()
        {
            push(
                ty,
                t + 3000 + d as i64 * 60,
                json!({"id": format!("einv_{i}"), "invoiceId": format!("inv_{i}"), "status": ty.split('.').nth(1).unwrap()}),
            );
        }
        for (d, ty) in [
            "sales_order.created",
            "sales_order.confirmed",
            "sales_order.shipped",
            "sales_order.delivered",
            "sales_order.cancelled",
        ]
        .iter()
        .enumerate()
        {
            push(
                ty,
                t + 3400 + d as i64 * 30,
                json!({"id": format!("so_{i}"), "status": ty.split('.').nth(1).unwrap(), "total": num("120.00")}),
            );
        }
    }
    out
}

/// BigLedger as it behaves today: one topic per endpoint, the record as the body, some
/// deletes as `true`.
pub fn topic_stream(n: usize) -> Vec<Req> {
    let mut out = Vec::new();
    let spaced = |secs: i64| {
        iso(secs)
            .replace('T', " ")
            .trim_end_matches('Z')
            .to_string()
    };
    for i in 0..n {
        let t = BASE + i as i64 * 3600;
        let customer = |d: i64, name: &str| {
            json!({"bl_fi_mst_entity_hdr": {"guid": format!("c-{i}"), "name": name,
            "email": format!("c{i}@example.com"), "status": "ACTIVE", "updated_date": spaced(t + d)}, "bl_fi_mst_entity_line": []})
        };
        out.push(topic_req(
            "CUSTOMER_CREATED",
            serde_json::to_vec(&customer(0, "First")).unwrap(),
        ));
        out.push(topic_req(
            "CUSTOMER_UPDATED",
            serde_json::to_vec(&customer(60, "Renamed")).unwrap(),
        ));
        if i % 3 == 0 {
            out.push(topic_req(
                "CUSTOMER_DELETED",
                serde_json::to_vec(&customer(120, "Renamed")).unwrap(),
            ));
        }
        let invoice = |d: i64, amount: &str| {
            json!({"bl_fi_generic_doc_hdr": {"guid": format!("si-{i}"), "server_doc_1": format!("SI-{i:05}"),
            "doc_ccy": "MYR", "amount_txn": num(amount), "date_txn": "2026-01-03", "status": "ACTIVE", "updated_date": spaced(t + d)},
            "bl_fi_generic_doc_line": [{"guid": format!("l-{i}"), "amount_txn": num(amount)}]})
        };
        out.push(topic_req(
            "INTERNAL_SALES_INVOICE_CREATED",
            serde_json::to_vec(&invoice(10, "150.00")).unwrap(),
        ));
        out.push(topic_req(
            "INTERNAL_SALES_INVOICE_UPDATED",
            serde_json::to_vec(&invoice(70, "175.25")).unwrap(),
        ));
        if i % 4 == 0 {
            out.push(topic_req(
                "INTERNAL_SALES_INVOICE_DELETED",
                serde_json::to_vec(&invoice(130, "175.25")).unwrap(),
            ));
        }
        if i % 2 == 0 {
            for d in [20, 80] {
                let item = json!({"bl_inv_mst_item_hdr": {"guid": format!("it-{i}"), "code": format!("IT{i}"), "qty": 100 - d, "updated_date": spaced(t + d)}});
                out.push(topic_req(
                    "INVENTORY_UPDATED",
                    serde_json::to_vec(&item).unwrap(),
                ));
            }
        }
    }
    out
}

/// Standard Webhooks: events land in `records` by the first segment of their type.
pub fn standard_stream(n: usize) -> Vec<Req> {
    let mut out = Vec::new();
    for i in 0..n {
        let t = BASE + i as i64 * 3600;
        for (d, ty, status) in [
            (0, "invoice.created", "open"),
            (60, "invoice.paid", "paid"),
            (120, "customer.updated", "active"),
        ] {
            let id = format!("msg_{i}_{d}");
            let obj = if ty.starts_with("customer") {
                format!("cus_{i}")
            } else {
                format!("in_{i}")
            };
            let body = json!({"type": ty, "timestamp": iso(t + d), "data": {"id": obj, "status": status, "amount": num("10.05")}});
            out.push(standard_req(&id, serde_json::to_vec(&body).unwrap()));
        }
    }
    out
}
