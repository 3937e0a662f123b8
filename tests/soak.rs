//! The crash soak: the real binary killed with SIGKILL at random moments under concurrent
//! signed load, started again, and killed again, `SOAK_CYCLES` times (20 by default) on the
//! suite's backend. At the end every acknowledged event is stored once and applied, the tables
//! equal the same events applied in order by a daemon that never crashed, the database passes
//! its integrity check, and (SQLite) the write-ahead log stayed bounded.
//!
//! A long run: `SOAK_CYCLES=1000 cargo test --release --test soak -- --nocapture` (with
//! `TEST_BACKEND=postgres` for PostgreSQL); `SOAK_SEED` repeats a run's kill moments.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::{backend, load_event, sign, Daemon, Load, Reader, Req, Setup, TestApp, PATH, SECRET};
use hooksync::store::Backend;

/// Senders per cycle; each cycle's senders use worker numbers of their own, so every id is new.
const SENDERS: u64 = 4;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// The sender and sequence number a load event's id was made from (`load_event`).
fn origin(id: &str) -> (u64, u64) {
    let hex = id.strip_prefix("evt_").expect("a load event id");
    let worker = u64::from_str_radix(&hex[..8], 16).unwrap();
    let n = u64::from_str_radix(&hex[8..], 16).unwrap();
    (worker, n)
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_soak() {
    let cycles = common::env_count("SOAK_CYCLES", 20);
    let seed = common::env_count("SOAK_SEED", 0x5EED_0FC4);
    let mut rng = Rng(seed | 1);
    let dir = tempfile::tempdir().unwrap();
    let config = Daemon::write_config(dir.path(), &Setup::default());
    let wal = dir.path().join("hooksync.db-wal");
    let wal_len = || std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
    let started = Instant::now();

    let mut acked: Vec<String> = Vec::new();
    let mut starts = Vec::new();
    let (mut wal_at_start_max, mut wal_at_kill_max) = (0u64, 0u64);
    for cycle in 0..cycles {
        let t = Instant::now();
        let mut d = config.spawn().await;
        starts.push(t.elapsed());
        wal_at_start_max = wal_at_start_max.max(wal_len());
        let workers = cycle * SENDERS..(cycle + 1) * SENDERS;
        let load = Load::start(&d.client, &d.url, workers);
        // The moment of the kill: after a random number of acknowledgements (none: at once).
        let wait_for = (rng.next() % 400) as usize;
        if wait_for > 0 {
            load.wait_acked(wait_for).await;
        }
        d.child.kill().unwrap();
        d.child.wait().unwrap();
        wal_at_kill_max = wal_at_kill_max.max(wal_len());
        acked.extend(load.finish().await);
    }

    // One more start: everything acknowledged is there and gets applied.
    let d = config.spawn().await;
    let mut db = Reader::open_url(&common::database_url(dir.path()));
    assert!(db.integrity_ok(), "integrity check after {cycles} kills");
    db.assert_stored(&acked);
    common::wait_until(
        "the backlog to be applied",
        Duration::from_secs(300),
        || db.queued() == 0,
    )
    .await;
    assert_eq!(
        db.count("SELECT COUNT(*) AS n FROM events WHERE status NOT IN ('applied', 'stale')"),
        0
    );
    let stored: Vec<String> = db
        .list("event_id", "FROM events")
        .into_iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    let distinct: HashSet<&String> = stored.iter().collect();
    assert_eq!(distinct.len(), stored.len(), "an id stored twice");
    drop(d);

    // The same events, applied by a daemon that never crashed, give the same tables.
    let reference = TestApp::start(Setup::default()).await;
    let requests: Vec<Req> = stored
        .iter()
        .map(|id| {
            let (worker, n) = origin(id);
            let (_, body) = load_event(n, worker);
            Req {
                path: PATH.into(),
                headers: vec![("X-GetBill-Signature".into(), sign(SECRET, &body))],
                body,
            }
        })
        .collect();
    common::send_concurrently(&reference, requests, 8).await;
    reference.wait_projected().await;
    common::assert_same_tables(&mut reference.reader(), &mut db, &["debts"]);
    reference.stop().await;

    let (first, last) = {
        let k = (starts.len() / 4).max(1);
        let mut head = starts[..k].to_vec();
        let mut tail = starts[starts.len() - k..].to_vec();
        (median(&mut head), median(&mut tail))
    };
    println!(
        "crash soak ({:?}, seed {seed}): {cycles} kills in {:.0} s; {} events acknowledged, {} stored, \
         every one applied once; start to healthy: median {:.0} ms over the first quarter of the \
         cycles, {:.0} ms over the last; write-ahead log at start at most {} KiB, at a kill at most {} KiB",
        backend(),
        started.elapsed().as_secs_f64(),
        acked.len(),
        stored.len(),
        first.as_secs_f64() * 1e3,
        last.as_secs_f64() * 1e3,
        wal_at_start_max / 1024,
        wal_at_kill_max / 1024,
    );
    if backend() == Backend::Sqlite {
        // Emptied at every start and checkpointed while serving: it stays within the 64 MiB
        // SQLite is told to keep it to, however many crashes came before.
        let most = wal_at_start_max.max(wal_at_kill_max);
        assert!(most < 80 << 20, "the write-ahead log reached {most} bytes");
    }
}
