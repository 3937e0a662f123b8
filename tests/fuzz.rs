//! Fuzzing on the stable toolchain, driven by proptest: the inputs an authentic but hostile
//! sender controls, generated at random (JSON of every shape, with envelope keys, odd numbers,
//! repeated keys and deep nesting; mutated real samples; raw bytes), through
//!
//! - each provider's envelope reader, behind a valid signature (everything after the check);
//! - each provider's signature-header parser, with headers the sender makes up;
//! - the JSON depth, NUL and number scanners, against what a number really prints as;
//! - the media file-name mapping: one-to-one, bounded, never a separator or a leading dot.
//!
//! Each target checks what must hold of its output, not only that nothing panics. CI runs
//! `FUZZ_CASES` (default 1,000) cases per target; a long run:
//! `FUZZ_CASES=1000000 cargo test --release --test fuzz`. A failure proptest finds is written
//! to `tests/fuzz.proptest-regressions` and tried first on every later run.

mod common;

use std::time::Duration;

use common::providers::{
    bigledger_req, bigledger_stream, bill_req, bill_stream, endpoints, standard_req,
    standard_stream, topic_req, topic_stream, TOPICS,
};
use common::stream::{lifecycle, signed};
use common::{sign, Req, PATH, SECRET};
use hooksync::event::EventStatus;
use hooksync::json::{
    canonical_number, json_depth_ok, json_keys_unique, json_storable, number_growth,
};
use hooksync::providers::{Endpoint, EventLimits};
use proptest::prelude::*;

fn cases() -> ProptestConfig {
    ProptestConfig {
        cases: common::env_count("FUZZ_CASES", 1_000) as u32,
        max_shrink_iters: 2_000,
        ..ProptestConfig::default()
    }
}

fn all_endpoints() -> Vec<Endpoint> {
    let toml = format!(
        "[database]\nurl = \"sqlite://unused.db\"\n\
         [[endpoints]]\nname = \"getbill\"\npath = \"{PATH}\"\nprovider = \"getbill\"\nsecrets = [\"{SECRET}\"]\n{}",
        endpoints(None)
    );
    let cfg = hooksync::config::Config::from_toml(&toml).unwrap();
    hooksync::app::endpoints(&cfg).unwrap()
}

fn header_map(headers: &[(String, String)]) -> http::HeaderMap {
    let mut map = http::HeaderMap::new();
    for (k, v) in headers {
        if let (Ok(k), Ok(v)) = (
            http::HeaderName::from_bytes(k.as_bytes()),
            http::HeaderValue::from_bytes(v.as_bytes()),
        ) {
            map.append(k, v);
        }
    }
    map
}

/// A provider kind, and how it signs a body as the tests' senders do.
type Signer = (&'static str, fn(Vec<u8>) -> Req);

fn signers() -> Vec<Signer> {
    vec![
        ("getbill", |b| Req {
            path: PATH.into(),
            headers: vec![("X-GetBill-Signature".into(), sign(SECRET, &b))],
            body: b,
        }),
        ("bill", bill_req),
        ("bigledger", bigledger_req),
        ("bigledger-topic", |b| topic_req(TOPICS[3], b)),
        ("standard", |b| standard_req("msg_fuzz", b)),
    ]
}

// ---- inputs ----

fn number() -> impl Strategy<Value = String> {
    prop_oneof![
        "-?(0|[1-9][0-9]{0,20})(\\.[0-9]{1,12})?([eE][+-]?[0-9]{1,5})?",
        "-?[0-9]{1,3}[eE][+-]?0{0,30}[0-9]{1,6}",
        Just("-0".to_string()),
        Just("1e9999".to_string()),
    ]
}

fn string() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,12}".prop_map(|s| serde_json::to_string(&s).unwrap()),
        Just("\"2026-01-01T00:00:00Z\"".to_string()),
        Just("\"9999-12-31T23:59:59Z\"".to_string()),
        Just("\"0000-01-01T00:00:00Z\"".to_string()),
        Just("\"x\\u0000y\"".to_string()),
        Just("\"\\ud800\"".to_string()),
    ]
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec![
            "id", "type", "created_at", "data", "metadata", "company_id", "amount", "status",
            "event", "eventType", "timestamp", "object", "guid", "updated_date", "organizationId",
            "updatedTime", "debt_id", "audio_url", "plan", "context", "companyId", "bill",
        ])
        .prop_map(|k| format!("\"{k}\"")),
        1 => string(),
    ]
}

/// JSON text of any shape, with the keys providers look for; keys may repeat.
fn json() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("null".to_string()),
        Just("true".to_string()),
        number(),
        string(),
    ];
    leaf.prop_recursive(8, 96, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(|v| format!("[{}]", v.join(","))),
            prop::collection::vec((key(), inner), 0..8).prop_map(|kv| {
                let fields: Vec<String> = kv.iter().map(|(k, v)| format!("{k}:{v}")).collect();
                format!("{{{}}}", fields.join(","))
            }),
        ]
    })
}

/// Real events of the provider `signers()[which]` names, as it puts them on the wire.
fn samples(which: usize) -> Vec<Vec<u8>> {
    let reqs = match which {
        0 => signed(lifecycle(3, 3)),
        1 => bill_stream(3),
        2 => bigledger_stream(3),
        3 => topic_stream(3),
        _ => standard_stream(3),
    };
    reqs.into_iter().map(|r| r.body).collect()
}

/// Every place in a JSON value, as a list of steps (object keys and array positions).
fn places(v: &serde_json::Value, at: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    out.push(at.clone());
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                at.push(k.clone());
                places(x, at, out);
                at.pop();
            }
        }
        serde_json::Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                at.push(i.to_string());
                places(x, at, out);
                at.pop();
            }
        }
        _ => {}
    }
}

/// A real event with one value anywhere in it replaced by generated JSON: the envelope stays
/// readable while what it holds is made up.
fn sample_with_a_value_replaced(which: usize) -> impl Strategy<Value = Vec<u8>> {
    (
        prop::sample::select(samples(which)),
        any::<prop::sample::Index>(),
        json(),
    )
        .prop_map(|(body, at, value)| {
            let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(&body) else {
                return body;
            };
            let Ok(new) = serde_json::from_str::<serde_json::Value>(&value) else {
                return body;
            };
            let mut all = Vec::new();
            places(&v, &mut Vec::new(), &mut all);
            let path = &all[at.index(all.len())];
            let mut cur = &mut v;
            for step in path {
                cur = match cur {
                    serde_json::Value::Object(m) => m.get_mut(step).unwrap(),
                    serde_json::Value::Array(a) => &mut a[step.parse::<usize>().unwrap()],
                    _ => unreachable!(),
                };
            }
            *cur = new;
            serde_json::to_vec(&v).unwrap()
        })
}

/// A real event with `"key": value,` written in after one of its opening braces: a key
/// repeated, or a new one, as raw text.
fn sample_with_a_field_written_in(which: usize) -> impl Strategy<Value = Vec<u8>> {
    (
        prop::sample::select(samples(which)),
        any::<prop::sample::Index>(),
        key(),
        json(),
    )
        .prop_map(|(body, at, key, value)| {
            let braces: Vec<usize> = body
                .iter()
                .enumerate()
                .filter(|(_, b)| **b == b'{')
                .map(|(i, _)| i)
                .collect();
            if braces.is_empty() {
                return body;
            }
            let i = braces[at.index(braces.len())] + 1;
            let mut out = body[..i].to_vec();
            out.extend_from_slice(format!("{key}:{value},").as_bytes());
            out.extend_from_slice(&body[i..]);
            out
        })
}

/// A real event of some provider, with a few bytes changed, removed or added.
fn mutated_sample(which: usize) -> impl Strategy<Value = Vec<u8>> {
    (
        prop::sample::select(samples(which)),
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..6),
    )
        .prop_map(|(mut body, edits)| {
            for (at, byte, how) in edits {
                if body.is_empty() {
                    body.push(byte);
                    continue;
                }
                let i = at.index(body.len());
                match how {
                    0 => body[i] = byte,
                    1 => {
                        body.remove(i);
                    }
                    _ => body.insert(i, byte),
                }
            }
            body
        })
}

/// A body for the provider `signers()[which]` names.
fn body(which: usize) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => sample_with_a_value_replaced(which),
        2 => sample_with_a_field_written_in(which),
        2 => json().prop_map(String::into_bytes),
        2 => mutated_sample(which),
        1 => prop::collection::vec(any::<u8>(), 0..256),
        1 => (0usize..200).prop_map(|n| format!("{}{}", "[".repeat(n), "]".repeat(n)).into_bytes()),
    ]
}

// ---- targets ----

proptest! {
    #![proptest_config(cases())]

    /// Behind a valid signature, any body becomes a stored event or is kept as `invalid`,
    /// never a panic; what is queued is JSON every backend stores as it is.
    #[test]
    fn envelope_readers_take_any_authentic_body(
        (which, body) in (0usize..5).prop_flat_map(|w| (Just(w), body(w)))
    ) {
        let endpoints = all_endpoints();
        let (kind, signer) = signers()[which];
        let req = signer(body.clone());
        let ep = endpoints.iter().find(|e| e.path == req.path).unwrap();
        let headers = header_map(&req.headers);
        let verified = ep.verify(&headers, &req.body);
        prop_assert!(verified.is_ok(), "{kind}: own signature refused");
        let received = hooksync::stamp::Stamp::now();
        let limits = EventLimits { max_json_depth: 64, max_future_skew: Duration::from_secs(300) };
        let Ok(event) = verified.unwrap().into_event(received, &limits) else {
            return Ok(()); // another tenant's
        };
        prop_assert!(!event.event_id.is_empty());
        prop_assert!(event.occurred_at <= received.plus(time::Duration::seconds(300)));
        match event.status {
            EventStatus::Invalid => {
                prop_assert_eq!(event.raw_body.as_deref(), Some(body.as_slice()));
                prop_assert!(event.last_error.is_some());
            }
            EventStatus::Queued | EventStatus::Unhandled => {
                let payload = event.payload.as_deref().unwrap();
                prop_assert!(serde_json::from_str::<serde_json::Value>(payload).is_ok());
                prop_assert!(json_storable(payload).is_ok());
                prop_assert!(json_keys_unique(payload).is_ok());
                prop_assert!(json_depth_ok(payload.as_bytes(), 64));
            }
        }
    }

    /// Made-up signature headers never pass, and never panic the parser.
    #[test]
    fn signature_headers_made_up_never_pass(
        which in 0usize..5,
        body in prop::collection::vec(any::<u8>(), 0..64),
        values in prop::collection::vec(
            prop_oneof![
                ".{0,80}",
                "sha256=[0-9a-fA-F]{0,70}",
                "[0-9a-f]{64}",
                "[A-Za-z0-9+/=]{0,60}",
                "(v1,[A-Za-z0-9+/=]{0,50} ?){0,4}",
                "-?[0-9]{1,20}",
            ],
            4,
        ),
    ) {
        let endpoints = all_endpoints();
        let (kind, signer) = signers()[which];
        let genuine = signer(body.clone());
        let ep = endpoints.iter().find(|e| e.path == genuine.path).unwrap();
        // The genuine header names, with made-up values; the standard timestamp kept valid
        // half the time so the signature list itself is parsed.
        let mut headers: Vec<(String, String)> = genuine
            .headers
            .iter()
            .zip(values.iter().cycle())
            .map(|((k, _), v)| (k.clone(), v.clone()))
            .collect();
        if kind == "standard" && values[3].len() % 2 == 0 {
            headers[1].1 = hooksync::stamp::Stamp::now().unix_timestamp().to_string();
        }
        if kind == "bigledger-topic" {
            return Ok(()); // a static token: any other value is simply unequal
        }
        prop_assert!(ep.verify(&header_map(&headers), &body).is_err(), "{}: {:?}", kind, headers);
    }

    /// The scanners take any text; the number bound never lets through a number that prints
    /// longer than it counted.
    #[test]
    fn scanners_bound_what_numbers_print_as(text in prop_oneof![json(), ".{0,200}"], lit in number()) {
        let _ = json_storable(&text);
        let _ = json_depth_ok(text.as_bytes(), 8);
        let _ = json_keys_unique(&text);
        let printed = canonical_number(&lit);
        let grew = printed.len().saturating_sub(lit.len());
        match number_growth(lit.as_bytes()) {
            Some(counted) => prop_assert!(counted >= grew, "{} prints as {} chars", lit, printed.len()),
            None => prop_assert!(json_storable(&lit).is_err()),
        }
        if json_storable(&format!("[{lit}]")).is_ok() {
            prop_assert!(grew <= hooksync::json::NUMBER_GROWTH_MAX);
        }
    }

    /// Different ids never share a file; a name is bounded and never a path.
    #[test]
    fn media_names_are_one_to_one_and_bounded(
        a in ".{0,400}",
        edit in prop_oneof![
            Just("/".to_string()), Just("_".to_string()), Just(".".to_string()),
            Just("%2F".to_string()), Just("~".to_string()), Just("%".to_string()), ".{1,3}",
        ],
        at in any::<prop::sample::Index>(),
        kind in prop::sample::select(vec!["audio", "pdf"]),
    ) {
        let cut = a.char_indices().map(|(i, _)| i).chain([a.len()]).nth(at.index(a.chars().count() + 1)).unwrap_or(0);
        let b = format!("{}{edit}{}", &a[..cut], &a[cut..]);
        let c = format!(".{a}");
        for id in [&a, &b, &c] {
            let name = hooksync::media::file_name(id, kind, Some("mp3"));
            prop_assert!(name.len() <= 150, "{}", name.len());
            prop_assert!(!name.starts_with('.'));
            prop_assert!(!name.contains(['/', '\\', '\0']));
        }
        let na = hooksync::media::file_name(&a, kind, Some("mp3"));
        prop_assert_ne!(&na, &hooksync::media::file_name(&b, kind, Some("mp3")));
        prop_assert_ne!(&na, &hooksync::media::file_name(&c, kind, Some("mp3")));
        let other = if kind == "audio" { "pdf" } else { "audio" };
        prop_assert_ne!(&na, &hooksync::media::file_name(&a, other, Some("mp3")));
    }
}

/// The generated bodies are worth fuzzing with: for every provider some become events and
/// some are kept as invalid, so both sides of the envelope target are checked.
#[test]
fn generated_bodies_reach_both_outcomes_for_every_provider() {
    use proptest::strategy::ValueTree;
    let endpoints = all_endpoints();
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let limits = EventLimits {
        max_json_depth: 64,
        max_future_skew: Duration::from_secs(300),
    };
    for (which, (kind, signer)) in signers().into_iter().enumerate() {
        let strategy = body(which);
        let (mut stored, mut invalid) = (0, 0);
        for _ in 0..400 {
            let req = signer(strategy.new_tree(&mut runner).unwrap().current());
            let ep = endpoints.iter().find(|e| e.path == req.path).unwrap();
            let headers = header_map(&req.headers);
            let Ok(verified) = ep.verify(&headers, &req.body) else {
                panic!("{kind}: own signature refused");
            };
            match verified.into_event(hooksync::stamp::Stamp::now(), &limits) {
                Ok(e) if e.status == EventStatus::Invalid => invalid += 1,
                Ok(_) => stored += 1,
                Err(_) => {}
            }
        }
        assert!(
            stored >= 20 && invalid >= 20,
            "{kind}: {stored} stored, {invalid} invalid"
        );
    }
}
