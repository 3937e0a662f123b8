//! Property tests of the row guard, through the library's own ingest and projector on real
//! SQLite files: for every provider, a stream of its events permuted at random, with events
//! repeated at random, delivered in batches cut at random, with the projector catching up
//! between batches, ends in the same tables as the same stream delivered once and in order.
//!
//! `PROPTEST_CASES` sets the cases per provider (32 by default); a long run:
//! `PROPTEST_CASES=2000 cargo test --release --test properties`.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::providers::{bigledger_stream, bill_stream, endpoints, standard_stream, topic_stream};
use common::stream::{lifecycle, signed};
use common::{Reader, Req, PATH, SECRET};
use hooksync::config::Config;
use hooksync::event::NewEvent;
use hooksync::metrics::Metrics;
use hooksync::projector::Projector;
use hooksync::providers::EventLimits;
use proptest::prelude::*;

/// Every table the projector writes.
const TABLES: &[&str] = hooksync::rebuild::DOMAIN_TABLES;

fn config(db: &Path) -> Config {
    let toml = format!(
        "[database]\nurl = \"sqlite://{}\"\n\
         [[endpoints]]\nname = \"getbill\"\npath = \"{PATH}\"\nprovider = \"getbill\"\nsecrets = [\"{SECRET}\"]\n{}",
        db.display(),
        endpoints(None)
    );
    Config::from_toml(&toml).unwrap_or_else(|e| panic!("{e}\n{toml}"))
}

/// Stores `batches` one after another, the projector applying everything queued after each;
/// returns the database's directory (kept while read) and a reader on it.
fn deliver(batches: &[Vec<&Req>]) -> (tempfile::TempDir, Reader) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&dir.path().join("p.db"));
    let endpoints = hooksync::app::endpoints(&cfg).unwrap();
    let mut db =
        hooksync::store::open_and_migrate(&hooksync::app::db_options(&cfg).unwrap()).unwrap();
    let projector = Projector::new(
        hooksync::app::providers(&endpoints),
        32,
        5,
        Arc::new(Metrics::default()),
        None,
    );
    let limits = EventLimits {
        max_json_depth: 64,
        max_future_skew: Duration::from_secs(300),
    };
    for batch in batches {
        let events: Vec<NewEvent> = batch
            .iter()
            .map(|r| {
                let ep = endpoints
                    .iter()
                    .find(|e| e.path == r.path)
                    .expect("a route");
                let mut headers = http::HeaderMap::new();
                for (k, v) in &r.headers {
                    headers.insert(
                        http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                        v.parse().unwrap(),
                    );
                }
                let verified = ep.verify(&headers, &r.body).expect("authentic");
                verified
                    .into_event(hooksync::stamp::Stamp::now(), &limits)
                    .expect("stored")
            })
            .collect();
        let refs: Vec<&NewEvent> = events.iter().collect();
        hooksync::testkit::store_batch(&mut db, &refs).unwrap();
        while projector.run_chunk(&mut db).unwrap() > 0 {}
    }
    let reader = Reader::open_url(&cfg.database.url);
    (dir, reader)
}

/// `stream` in order, and `stream` as `order` (indices, repeats allowed) cut before each of
/// `cuts`, end in the same tables with every event applied or stale.
fn same_tables(stream: &[Req], order: &[usize], cuts: &[usize]) -> Result<(), TestCaseError> {
    let (_a, mut want) = deliver(&[stream.iter().collect()]);
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % order.len().max(1)).collect();
    cuts.sort_unstable();
    cuts.dedup();
    let mut batches = Vec::new();
    let mut from = 0;
    for &c in cuts.iter().chain([order.len()].iter()) {
        if c > from {
            batches.push(order[from..c].iter().map(|&i| &stream[i]).collect());
            from = c;
        }
    }
    let (_b, mut have) = deliver(&batches);
    for db in [&mut want, &mut have] {
        prop_assert_eq!(
            db.count("SELECT COUNT(*) AS n FROM events WHERE status NOT IN ('applied', 'stale', 'unhandled')"),
            0
        );
    }
    prop_assert_eq!(
        have.count("SELECT COUNT(*) AS n FROM events"),
        want.count("SELECT COUNT(*) AS n FROM events")
    );
    for table in TABLES {
        prop_assert_eq!(want.snapshot(table), have.snapshot(table), "{}", table);
    }
    Ok(())
}

/// A permutation of the stream's indices with some repeated, and where to cut it into batches.
fn deliveries(len: usize) -> impl Strategy<Value = (Vec<usize>, Vec<usize>)> {
    let order = Just((0..len).collect::<Vec<usize>>()).prop_shuffle();
    let repeats = prop::collection::vec(0..len, 0..=len / 3);
    let cuts = prop::collection::vec(0..len, 0..6);
    (order, repeats, cuts).prop_flat_map(|(order, repeats, cuts)| {
        let mut all = order;
        all.extend(repeats);
        (Just(all).prop_shuffle(), Just(cuts))
    })
}

fn cases() -> ProptestConfig {
    ProptestConfig {
        cases: common::env_count("PROPTEST_CASES", 32) as u32,
        ..ProptestConfig::default()
    }
}

/// Runs the property over streams of `make(n)` for `n` in `sizes`.
fn check(make: fn(usize) -> Vec<Req>, sizes: std::ops::RangeInclusive<usize>) {
    let strategy = sizes.prop_flat_map(move |n| {
        let stream = make(n);
        let len = stream.len();
        (Just(stream), deliveries(len))
    });
    proptest!(cases(), |((stream, (order, cuts)) in strategy)| {
        same_tables(&stream, &order, &cuts)?;
    });
}

fn getbill(n: usize) -> Vec<Req> {
    signed(lifecycle(n, 7))
}

#[test]
fn getbill_streams_end_alike_in_any_order() {
    check(getbill, 1..=6);
}

#[test]
fn bill_streams_end_alike_in_any_order() {
    check(bill_stream, 1..=8);
}

#[test]
fn bigledger_streams_end_alike_in_any_order() {
    check(bigledger_stream, 1..=8);
}

#[test]
fn bigledger_topic_streams_end_alike_in_any_order() {
    check(topic_stream, 1..=8);
}

#[test]
fn standard_webhooks_streams_end_alike_in_any_order() {
    check(standard_stream, 1..=8);
}
