//! A 100 MiB recording downloads with flat memory: the real binary, its resident set read from
//! /proc before and at the peak. Its own test binary, so nothing else runs beside it.

mod common;

use std::time::Duration;

use common::media_server::{pattern_bytes, MediaServer};
use common::{sign, Daemon, Reader, Setup, PATH, SECRET};
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100_mib_download_keeps_memory_flat() {
    let dir = tempfile::tempdir().unwrap();
    let cdn_dir = dir.path().join("cdn");
    std::fs::create_dir_all(&cdn_dir).unwrap();
    let cdn_cert = common::make_cert(&cdn_dir);
    let cdn = MediaServer::start(&cdn_cert).await;
    let setup = Setup {
        media_extra: format!("allowed_hosts = [\"127.0.0.1\"]\nallow_private_networks = true\nextra_ca_file = {:?}\n", cdn_cert.cert),
        ..Setup::default()
    };
    let (config, cert, port, admin) = Daemon::write_config(dir.path(), &setup);
    let d = Daemon::spawn(&config, &cert, port, admin).await;
    let before = status_kib(d.pid(), "VmRSS:");

    let url = cdn.url(&format!("/stream/{SIZE}/big.mp3"));
    let body = serde_json::to_vec(&serde_json::json!({"id": "evt_big", "type": "followup.completed",
        "created_at": time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap(),
        "data": {"id": "f1", "audio_url": url, "pdf_url": null,
                 "media_urls_expire_at": (time::OffsetDateTime::now_utc() + time::Duration::hours(1)).format(&time::format_description::well_known::Rfc3339).unwrap()}}))
    .unwrap();
    let r = d
        .client
        .post(format!("{}{PATH}", d.url))
        .header("X-GetBill-Signature", sign(SECRET, &body))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let mut db = Reader::open(&dir.path().join("hooksync.db"));
    common::wait_until("the 100 MiB file", Duration::from_secs(120), || {
        db.count("SELECT COUNT(*) AS n FROM media WHERE status IN ('fetched', 'failed', 'expired')")
            == 1
    })
    .await;
    let peak = status_kib(d.pid(), "VmHWM:");
    let row = db.json("SELECT json_object('status', status, 'bytes', bytes, 'sha256', sha256, 'last_error', last_error) AS j FROM media");
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
