//! Media with the real binary: a 100 MiB recording downloads with flat memory (the resident set
//! read from /proc before and at the peak), and a download in flight at `kill -9` completes
//! after a restart.

mod common;

use std::path::Path;
use std::time::Duration;

use common::media_server::{pattern_bytes, reaching, start_cdn, MediaServer};
use common::{Daemon, DaemonConfig, Reader, Setup};
use sha2::{Digest, Sha256};

const SIZE: u64 = 100 * 1024 * 1024;

fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// A local CDN, and a config for the real binary that downloads from it.
async fn with_cdn(dir: &Path) -> (MediaServer, DaemonConfig) {
    let (cdn, cdn_cert) = start_cdn(dir).await;
    let setup = Setup {
        media_extra: reaching(&cdn_cert),
        ..Setup::default()
    };
    (cdn, Daemon::write_config(dir, &setup))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100_mib_download_keeps_memory_flat() {
    let dir = tempfile::tempdir().unwrap();
    let (cdn, config) = with_cdn(dir.path()).await;
    let d = config.spawn().await;
    let before = status_kib(d.pid(), "VmRSS:");

    let url = cdn.url(&format!("/stream/{SIZE}/big.mp3"));
    let body = serde_json::to_vec(&serde_json::json!({"id": "evt_big", "type": "followup.completed",
        "created_at": time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap(),
        "data": {"id": "f1", "audio_url": url, "pdf_url": null,
                 "media_urls_expire_at": (time::OffsetDateTime::now_utc() + time::Duration::hours(1)).format(&time::format_description::well_known::Rfc3339).unwrap()}}))
    .unwrap();
    assert_eq!(d.send(body).await, 200);

    let mut db = Reader::open(dir.path());
    common::wait_until("the 100 MiB file", Duration::from_secs(120), || {
        db.count("SELECT COUNT(*) AS n FROM media WHERE status IN ('fetched', 'failed', 'expired')")
            == 1
    })
    .await;
    let peak = status_kib(d.pid(), "VmHWM:");
    let row = db.rows_where("media", "true").pop().unwrap_or_default();
    assert_eq!(row["status"], "fetched", "{row}");
    assert_eq!(row["bytes"], SIZE);
    let mut h = Sha256::new();
    let mut off = 0;
    while off < SIZE {
        let n = (SIZE - off).min(1 << 20);
        h.update(pattern_bytes(off, n as usize));
        off += n;
    }
    assert_eq!(row["sha256"], hex::encode(h.finalize()));
    let growth_mib = peak.saturating_sub(before) as f64 / 1024.0;
    println!(
        "resident before {:.1} MiB, peak {:.1} MiB, growth {growth_mib:.1} MiB",
        before as f64 / 1024.0,
        peak as f64 / 1024.0
    );
    assert!(
        growth_mib < 20.0,
        "resident memory grew by {growth_mib:.1} MiB for a 100 MiB download"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_in_flight_at_kill_9_completes_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (cdn, config) = with_cdn(dir.path()).await;
    let mut d = config.spawn().await;
    let now = time::OffsetDateTime::now_utc();
    let fmt = &time::format_description::well_known::Rfc3339;
    let body = serde_json::to_vec(&serde_json::json!({"id": "evt_k9", "type": "followup.completed", "created_at": now.format(fmt).unwrap(),
        "data": {"id": "f9", "audio_url": cdn.url("/hang-once/k9.mp3"), "pdf_url": null,
                 "media_urls_expire_at": (now + time::Duration::hours(1)).format(fmt).unwrap()}}))
    .unwrap();
    assert_eq!(d.send(body).await, 200);
    common::wait_until(
        "the download to be in flight",
        Duration::from_secs(30),
        || cdn.requests_to("/hang-once") == 1,
    )
    .await;
    d.child.kill().unwrap(); // SIGKILL, mid-download
    d.child.wait().unwrap();

    let _d2 = config.spawn().await;
    let mut db = Reader::open(dir.path());
    common::wait_until("the download to complete after restart", Duration::from_secs(30), || {
        db.count("SELECT COUNT(*) AS n FROM media WHERE followup_id = 'f9' AND status = 'fetched' AND bytes = 5000") == 1
    })
    .await;
    assert_eq!(cdn.requests_to("/hang-once"), 2);
    let leftovers = common::walk(&dir.path().join("media"));
    assert_eq!(
        leftovers.len(),
        1,
        "only the finished file, no temporary one: {leftovers:?}"
    );
}
