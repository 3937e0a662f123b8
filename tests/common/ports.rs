//! Ports for a child process (the hooksync binary, PostgreSQL, a reference server) to bind.
//!
//! A port from `bind(127.0.0.1:0)` comes from the kernel's ephemeral range, the same range every
//! outgoing connection takes its local port from. Between releasing such a port and the child
//! binding it, any `connect()` in the test process (a client, a download, the database
//! connection) may be given it, and the child fails with "Address already in use" (seen in CI).
//! Ports under the ephemeral range are never handed out implicitly, so only an explicit bind
//! can take one: each candidate is probed, and one process never hands out a port twice.

use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};

/// The lowest port considered: clear of the well-known and commonly configured ones.
const LOW: u32 = 10_000;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A loopback port under the ephemeral range that nothing was listening on a moment ago.
pub fn free_port() -> u16 {
    let high = ephemeral_start();
    assert!(
        high > LOW + 1_000,
        "the ephemeral port range starts at {high}: no room under it for test ports"
    );
    let span = high - LOW;
    // Start where another test process (a concurrent `cargo test`) is unlikely to be.
    let start = std::process::id().wrapping_mul(7_919) % span;
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (LOW + (start + n) % span) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port between {LOW} and {high}");
}

/// The first port of the kernel's ephemeral range (Linux's default when it cannot be read).
fn ephemeral_start() -> u32 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}
