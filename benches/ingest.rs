//! `cargo bench --bench ingest`: hooksync's durable ingest against a bare hyper server, with
//! the same load, in one run.
//!
//! Both servers are child processes (this binary re-run with `--bare-server`, and the real
//! `hooksync` binary); the load generator is this process on a single-threaded runtime, so on
//! a 2-core machine the servers get about one core and a half. Load: unique signed GetBill
//! events (the documentation's debt.created, ~700 bytes) over N keep-alive HTTP/1.1
//! connections, plain HTTP for both so that the ratio measures what hooksync adds (signature,
//! envelope, durable group commit), not TLS.
//!
//! Two rows split the gap between them: (a2) the bare server also checking each signature and
//! reading each envelope with hooksync's own code (`--verify-server`), which bounds what the
//! HTTP side can reach; and (s), (t) hooksync's inbox driven in-process by the same number of
//! tasks, with no HTTP at all, which bounds what the durable store can reach on this machine
//! (SQLite, PostgreSQL).
//!
//! Then the projector: hooksync restarted with the projector on over the events just stored;
//! the time until none is queued gives events applied per second.
//!
//! Then the same on PostgreSQL: a local server started for the run (the test harness's, from
//! the machine's PostgreSQL binaries, default settings), on the same two cores, reached
//! through its Unix socket as libpq reaches a local server by default (over TCP where the
//! temporary directory's path is too long for a socket's).
//!
//! The ratios come from rounds: bare, hooksync on SQLite, and on PostgreSQL through its socket
//! and over TCP loopback (for comparison), back to back, the order reversed every other round,
//! and each round's ratios against its own bare run; the figure printed is their median. One
//! bare run at the start and PostgreSQL's a minute later would compare two different machines
//! on a day when this one's speed drifts by tens of percent within minutes.
//!
//! Then forwarding to the CRM, on each backend with the projector on: (g) ingest with no destination,
//! with two healthy ones (a stub answering at once: the bare server) and with one that answers
//! after 10 s, side by side in two rounds; (h) a stored backlog applied and delivered by a
//! restarted hooksync, then delivered again with no projection, beside the stub's own rate.
//!
//! Environment: BENCH_SECS (seconds per run, default 3), BENCH_ROUNDS (default 3),
//! BENCH_CONNECTIONS (default 32). `--drive PORT` sends only the load, to a server started by
//! hand (for profiling it); `--forwarding` runs only (g) and (h).

use std::convert::Infallible;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

// The PostgreSQL server the tests use; the bench needs only part of it.
#[path = "../tests/common/pg.rs"]
#[allow(dead_code)]
mod pg;

// Ports for the reference servers and PostgreSQL, clear of the ephemeral range.
#[path = "../tests/common/ports.rs"]
mod ports;
use ports::free_port;

// Each thread's nice value, to see that the store thread got its priority.
#[path = "../tests/common/threads.rs"]
mod threads;

const SECRET: &str = "bench-secret";

/// The batch sizes of (r) and (u): the half of 32 senders that a commit settles into, and all
/// of them.
const COMMIT_SIZES: [usize; 2] = [16, 32];

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--bare-server") {
        let port: u16 = args.get(i + 1).and_then(|p| p.parse().ok()).expect("port");
        bare_server(port, false, Duration::ZERO);
        return;
    }
    if let Some(i) = args.iter().position(|a| a == "--verify-server") {
        let port: u16 = args.get(i + 1).and_then(|p| p.parse().ok()).expect("port");
        bare_server(port, true, Duration::ZERO);
        return;
    }
    if let Some(i) = args.iter().position(|a| a == "--slow-server") {
        let port: u16 = args.get(i + 1).and_then(|p| p.parse().ok()).expect("port");
        bare_server(port, false, SLOW_CRM);
        return;
    }
    let secs: u64 = std::env::var("BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let conns: usize = std::env::var("BENCH_CONNECTIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(32);
    let dur = Duration::from_secs(secs);
    // `--drive PORT`: only the load, against a server started by hand (for profiling).
    if let Some(i) = args.iter().position(|a| a == "--drive") {
        let port: u16 = args.get(i + 1).and_then(|p| p.parse().ok()).expect("port");
        let r = drive(port, conns, dur, std::process::id() as u64);
        row("server on the given port", &r, 0);
        return;
    }
    // `--forwarding`: only (g) and (h).
    if args.iter().any(|a| a == "--forwarding") {
        let dir = tempfile::tempdir().expect("tempdir");
        let server = pg::PgServer::start();
        forwarding_on_both(dir.path(), conns, dur, server.as_ref().ok());
        return;
    }
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3)
        .max(1);
    let dir = tempfile::tempdir().expect("tempdir");
    println!(
        "hooksync ingest benchmark: {} cores, load generator in this process (1 thread), {conns} keep-alive connections, {secs} s per run, {rounds} rounds, plain HTTP/1.1",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
    );

    // PostgreSQL through its Unix socket, as libpq reaches a local server by default; every
    // round also runs it over TCP loopback, for comparison (a separate database).
    let server = pg::PgServer::start();
    // Where the temporary directory's path is too long for a socket, (e) runs over TCP too.
    let local_url = |server: &pg::PgServer, db: &str| {
        server.ensure_database(db);
        server.socket_url(db).unwrap_or_else(|| server.url(db))
    };
    let through = match &server {
        Ok(s) if s.socket_url("bench").is_none() => "TCP: no room for a socket path here",
        _ => "Unix socket",
    };
    let pg_url = server
        .as_ref()
        .ok()
        .map(|server| local_url(server, "bench"));
    let pg_tcp_url = server.as_ref().ok().map(|server| {
        server.ensure_database("bench_tcp");
        server.url("bench_tcp")
    });

    // (a), (b), (e), (e2): the ratios. This machine's speed drifts by tens
    // of percent within minutes, so each round runs bare, SQLite and PostgreSQL back to back (the
    // order reversed every other round, so neither store is always the one further from its
    // reference), each round gives its own ratios, and the verdict is on their median.
    let db = format!("sqlite://{}", dir.path().join("bench.db").display());
    let mut played = Vec::new();
    for r in 0..rounds {
        let base = 10 * (r as u64 + 1);
        let mut order = [
            Target::Bare,
            Target::Sqlite,
            Target::Postgres,
            Target::PostgresTcp,
        ];
        if r % 2 == 1 {
            order.reverse();
        }
        let mut round = Round::default();
        for target in order {
            match target {
                Target::Bare => {
                    round.bare = Some(reference_server("--bare-server", conns, dur, base))
                }
                Target::Sqlite => {
                    round.sqlite =
                        Some(hooksync_run(dir.path(), &db, false, (conns, dur, base + 1)))
                }
                Target::Postgres => {
                    round.pg = pg_url
                        .as_ref()
                        .map(|url| hooksync_run(dir.path(), url, false, (conns, dur, base + 2)))
                }
                Target::PostgresTcp => {
                    round.pg_tcp = pg_tcp_url
                        .as_ref()
                        .map(|url| hooksync_run(dir.path(), url, false, (conns, dur, base + 3)))
                }
            }
        }
        played.push(round);
    }
    let (bare_res, bare_rss) = pool(&played, |r| r.bare.as_ref());
    let (hs_res, hs_rss_ingest) = pool(&played, |r| r.sqlite.as_ref());
    let sqlite_ratios: Vec<f64> = played.iter().filter_map(|r| r.ratio(&r.sqlite)).collect();
    let pg_ratios: Vec<f64> = played.iter().filter_map(|r| r.ratio(&r.pg)).collect();
    let pg_tcp_ratios: Vec<f64> = played.iter().filter_map(|r| r.ratio(&r.pg_tcp)).collect();

    // (a2) the bare server doing what hooksync does before the store (signature, envelope):
    // how much of the gap is the HTTP side.
    let (verify_res, verify_rss) = reference_server("--verify-server", conns, dur, 4);

    // (s) hooksync's inbox alone, in this process: 32 tasks verify signed bodies and submit
    // them, no HTTP. How fast the durable store goes when it has the machine to itself.
    let sqlite_alone = inbox_alone(
        &format!("sqlite://{}", dir.path().join("alone.db").display()),
        conns,
        dur,
    );
    // (r) the store's commits back to back on one thread, at the batch size 32 closed-loop
    // senders settle into (two halves: one committed while the other is answered and sends
    // again) and at all 32 at once: the store's own ceiling for this load, and its cost a commit.
    let sqlite_commits = commits_alone(
        &format!("sqlite://{}", dir.path().join("commits.db").display()),
        dur,
        6,
    );

    // (c) projector: restart with the projector on and time the drain of every round's events.
    let queued = hs_res.ok;
    let (proj_secs, proj_rss) = drain(dir.path(), &db);

    // (d) hooksync with the projector running during the load: what a sender sees in practice.
    let db2 = format!("sqlite://{}", dir.path().join("bench-mixed.db").display());
    let (mixed, mixed_rss) = hooksync_run(dir.path(), &db2, true, (conns, dur, 2));
    let mixed_projected = projected(&db2);

    // (b-log) SQLite ingest with the access log as the default writes it (a line per request
    // at info), to a file: what the log costs at full load.
    let db3 = format!("sqlite://{}", dir.path().join("bench-logged.db").display());
    let access_log = dir.path().join("access.log");
    let (hs, port) = spawn_hooksync_logging(dir.path(), &db3, false, Some(&access_log));
    let logged = drive(port, conns, dur, 7);
    stop(hs);
    let logged_lines = std::fs::read_to_string(&access_log)
        .map(|t| t.lines().filter(|l| l.contains("hooksync::access")).count())
        .unwrap_or(0);

    // (e) pooled over the rounds, then the projector's drain, (t) and (f).
    let pg_res = server
        .as_ref()
        .ok()
        .zip(pg_url.as_ref())
        .map(|(server, url)| {
            let (res, rss) = pool(&played, |r| r.pg.as_ref());
            let (tcp, tcp_rss) = pool(&played, |r| r.pg_tcp.as_ref());
            let (secs, drain_rss) = drain(dir.path(), url);
            let rss = rss.max(drain_rss);
            let alone = inbox_alone(&local_url(server, "alone"), conns, dur);
            let commits = commits_alone(&local_url(server, "commits"), dur, 6);
            // (f) with the projector running during the load, as (d).
            let mixed_url = local_url(server, "mixed");
            let (mixed, mixed_rss) = hooksync_run(dir.path(), &mixed_url, true, (conns, dur, 5));
            PgFigures {
                ingest: res,
                tcp,
                tcp_rss,
                rss,
                drain_secs: secs,
                alone,
                commits,
                mixed_projected: projected(&mixed_url),
                mixed,
                mixed_rss,
            }
        });

    println!();
    println!(
        "{:<8} {:>12} {:>22} {:>22} {:>22}",
        "round",
        "bare req/s",
        "sqlite req/s (/ bare)",
        "postgres req/s (/ bare)",
        "pg over tcp (/ bare)"
    );
    for (i, r) in played.iter().enumerate() {
        let cell = |run: &Option<(RunResult, u64)>| match (run, r.ratio(run)) {
            (Some((res, _)), Some(ratio)) => format!("{:.0} ({ratio:.3})", res.rps()),
            _ => "-".into(),
        };
        println!(
            "{:<8} {:>12.0} {:>22} {:>22} {:>22}",
            format!("{}{}", i + 1, if i % 2 == 1 { " (rev)" } else { "" }),
            r.bare.as_ref().map(|b| b.0.rps()).unwrap_or(0.0),
            cell(&r.sqlite),
            cell(&r.pg),
            cell(&r.pg_tcp),
        );
    }

    println!();
    println!(
        "{:<44} {:>10} {:>9} {:>9} {:>9} {:>10}",
        "server (a, b, e: every round pooled)", "req/s", "p50 ms", "p99 ms", "max ms", "peak RSS"
    );
    row("(a) bare hyper (read body, 200)", &bare_res, bare_rss);
    row(
        "(a2) bare hyper + signature and envelope",
        &verify_res,
        verify_rss,
    );
    row(
        "(b) hooksync sqlite durable, ingest only",
        &hs_res,
        hs_rss_ingest,
    );
    row(
        "(d) hooksync sqlite durable, projector on",
        &mixed,
        mixed_rss,
    );
    if let Some(pg) = &pg_res {
        row(
            "(e) hooksync postgres durable, ingest only",
            &pg.ingest,
            pg.rss,
        );
        row("(e2) the same over TCP loopback", &pg.tcp, pg.tcp_rss);
        row(
            "(f) hooksync postgres durable, projector on",
            &pg.mixed,
            pg.mixed_rss,
        );
    }
    let alone_row = |name: &str, a: &(f64, u64, f64)| {
        println!(
            "{name:<44} {:>10.0}   (events/s, no HTTP; {} commits, {:.1} events per commit)",
            a.0, a.1, a.2
        )
    };
    alone_row("(s) hooksync inbox alone, sqlite durable", &sqlite_alone);
    if let Some(pg) = &pg_res {
        alone_row("(t) hooksync inbox alone, postgres durable", &pg.alone);
    }
    let commits_row = |name: &str, c: &[(f64, f64); 2]| {
        println!(
            "{name:<44} {:>10.0}   (events/s, {} a commit: {:.0} µs; {} a commit: {:.0} events/s, {:.0} µs)",
            c[0].0, COMMIT_SIZES[0], c[0].1, COMMIT_SIZES[1], c[1].0, c[1].1
        )
    };
    commits_row(
        "(r) sqlite commits back to back, one thread",
        &sqlite_commits,
    );
    if let Some(pg) = &pg_res {
        commits_row("(u) postgres commits back to back", &pg.commits);
    }
    println!();
    println!(
        "signature and envelope / bare: {:.3}   (the HTTP side's own ceiling; bare pooled over the rounds)",
        verify_res.rps() / bare_res.rps()
    );
    println!(
        "inbox alone / bare:            {:.3}   (the store's own ceiling; bare pooled over the rounds)",
        sqlite_alone.0 / bare_res.rps()
    );
    println!(
        "commits of {} / bare:         {:.3}   (the store's ceiling at the batch size this load settles into)",
        COMMIT_SIZES[0],
        sqlite_commits[0].0 / bare_res.rps()
    );
    let ratio = median(&sqlite_ratios);
    println!("durable ingest / bare:     {ratio:.3}   (median of the rounds' ratios)");
    let p99 = hs_res.pct(0.99);
    println!("ack p99 (b):               {p99:.2} ms");
    println!(
        "with the access log / bare: {:.3}   (one run, a line per request at info to a file: {logged_lines} lines; p99 {:.2} ms)",
        logged.rps() / bare_res.rps(),
        logged.pct(0.99)
    );
    let drain = queued as f64 / proj_secs;
    println!(
        "projector:                 {queued} events in {proj_secs:.2} s = {drain:.0} events/s (includes process start)"
    );
    let during = |name: &str, r: &RunResult, done: i64| {
        println!(
            "projected during {name}:        {done} of {} events ({:.0} events/s)",
            r.ok,
            done as f64 / r.secs
        )
    };
    during("(d)", &mixed, mixed_projected);
    match (&pg_res, &server) {
        (Some(pg), _) => {
            let (r, secs) = (&pg.ingest, pg.drain_secs);
            let ratio = median(&pg_ratios);
            println!(
                "postgres ingest / bare:    {ratio:.3}   (median of the rounds' ratios, {through})"
            );
            println!(
                "  over TCP loopback:       {:.3}   (median of the rounds' ratios, for comparison)",
                median(&pg_tcp_ratios)
            );
            println!(
                "postgres inbox alone / bare: {:.3}   (the store's own ceiling; bare pooled)",
                pg.alone.0 / bare_res.rps()
            );
            println!(
                "postgres commits of {} / bare: {:.3}   (the store's ceiling at the batch size this load settles into)",
                COMMIT_SIZES[0],
                pg.commits[0].0 / bare_res.rps()
            );
            let p99 = r.pct(0.99);
            println!("postgres ack p99 (e):      {p99:.2} ms");
            let drain = r.ok as f64 / secs;
            println!(
                "postgres projector:        {} events in {secs:.2} s = {drain:.0} events/s (includes process start)",
                r.ok
            );
            during("(f)", &pg.mixed, pg.mixed_projected);
        }
        (_, Err(why)) => println!("postgres: not measured ({why})"),
        _ => {}
    }
    forwarding_on_both(dir.path(), conns, dur, server.as_ref().ok());
    let peak = hs_rss_ingest.max(proj_rss).max(mixed_rss) as f64 / 1024.0;
    println!("hooksync peak RSS:         {peak:.1} MiB");
    println!(
        "errors: bare {}, signature and envelope {}, hooksync {}, mixed {}{}",
        bare_res.errors,
        verify_res.errors,
        hs_res.errors,
        mixed.errors,
        pg_res
            .as_ref()
            .map(|pg| format!(
                ", postgres {}, postgres over tcp {}, postgres mixed {}",
                pg.ingest.errors, pg.tcp.errors, pg.mixed.errors
            ))
            .unwrap_or_default()
    );
}

#[derive(Clone, Copy)]
enum Target {
    Bare,
    Sqlite,
    Postgres,
    PostgresTcp,
}

/// One round of the interleaved runs: each with the server's peak RSS.
#[derive(Default)]
struct Round {
    bare: Option<(RunResult, u64)>,
    sqlite: Option<(RunResult, u64)>,
    pg: Option<(RunResult, u64)>,
    pg_tcp: Option<(RunResult, u64)>,
}

impl Round {
    /// A store's throughput over this round's bare server's; `None` when either was not run.
    fn ratio(&self, run: &Option<(RunResult, u64)>) -> Option<f64> {
        match (run, &self.bare) {
            (Some((r, _)), Some((bare, _))) => Some(r.rps() / bare.rps()),
            _ => None,
        }
    }
}

/// One target's runs over every round as one, and its peak RSS over them.
fn pool(played: &[Round], run: impl Fn(&Round) -> Option<&(RunResult, u64)>) -> (RunResult, u64) {
    let runs: Vec<&(RunResult, u64)> = played.iter().filter_map(run).collect();
    let results: Vec<&RunResult> = runs.iter().map(|r| &r.0).collect();
    let rss = runs.iter().map(|r| r.1).max().unwrap_or(0);
    (RunResult::pooled(&results), rss)
}

fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

struct RunResult {
    ok: u64,
    errors: u64,
    secs: f64,
    lat_us: Vec<u32>,
}

impl RunResult {
    /// Several runs of one target as one: every request, every second, every latency.
    fn pooled(runs: &[&RunResult]) -> RunResult {
        let mut lat_us: Vec<u32> = runs.iter().flat_map(|r| r.lat_us.iter().copied()).collect();
        lat_us.sort_unstable();
        RunResult {
            ok: runs.iter().map(|r| r.ok).sum(),
            errors: runs.iter().map(|r| r.errors).sum(),
            secs: runs.iter().map(|r| r.secs).sum(),
            lat_us,
        }
    }

    fn rps(&self) -> f64 {
        self.ok as f64 / self.secs
    }
    fn pct(&self, p: f64) -> f64 {
        if self.lat_us.is_empty() {
            return 0.0;
        }
        let i = ((self.lat_us.len() as f64 - 1.0) * p).round() as usize;
        self.lat_us[i] as f64 / 1000.0
    }
}

fn row(name: &str, r: &RunResult, rss_kib: u64) {
    println!(
        "{:<44} {:>10.0} {:>9.2} {:>9.2} {:>9.2} {:>7.1} MiB",
        name,
        r.rps(),
        r.pct(0.50),
        r.pct(0.99),
        r.pct(1.0),
        rss_kib as f64 / 1024.0
    );
}

/// Runs this binary as a reference server (`--bare-server` or `--verify-server`) on a free port
/// and drives it; returns the run and the server's peak RSS.
fn reference_server(flag: &str, conns: usize, dur: Duration, run: u64) -> (RunResult, u64) {
    let (server, port) = spawn_reference(flag);
    let res = drive(port, conns, dur, run);
    let rss = peak_rss(&server);
    stop(server);
    (res, rss)
}

fn wait_port(port: u16) {
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "server on {port} did not come up"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn spawn_hooksync(dir: &std::path::Path, db_url: &str, projector: bool) -> (Child, u16) {
    spawn_hooksync_logging(dir, db_url, projector, None)
}

/// `spawn_hooksync`, with the log at info (an access line per request) written to `log`.
fn spawn_hooksync_logging(
    dir: &std::path::Path,
    db_url: &str,
    projector: bool,
    log: Option<&std::path::Path>,
) -> (Child, u16) {
    spawn_hooksync_with(dir, db_url, projector, log, "").0
}

/// `spawn_hooksync_logging` with `extra` appended to its configuration (`[[forward]]` tables);
/// returns the configuration file too.
fn spawn_hooksync_with(
    dir: &std::path::Path,
    db_url: &str,
    projector: bool,
    log: Option<&std::path::Path>,
    extra: &str,
) -> ((Child, u16), std::path::PathBuf) {
    let port = free_port();
    let level = if log.is_some() { "info" } else { "error" };
    let cfg = dir.join(format!("bench-{port}.toml"));
    std::fs::write(
        &cfg,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\nadmin_listen = \"\"\n[database]\nurl = \"{}\"\n\
             [projector]\nenabled = {projector}\n[log]\nlevel = \"{level}\"\n\
             [[endpoints]]\nname = \"getbill\"\npath = \"/webhooks/getbill\"\nprovider = \"getbill\"\nsecrets = [\"{SECRET}\"]\n{extra}",
            db_url
        ),
    )
    .unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hooksync"));
    cmd.arg("--config")
        .arg(&cfg)
        .arg("serve")
        .stdout(Stdio::null());
    if let Some(path) = log {
        cmd.stderr(std::fs::File::create(path).expect("log file"));
    }
    let child = cmd.spawn().expect("spawn hooksync");
    wait_port(port);
    ((child, port), cfg)
}

/// Drives a fresh hooksync on `db_url` with the load `(connections, duration, run)`; returns the
/// run and hooksync's peak RSS.
fn hooksync_run(
    dir: &std::path::Path,
    db_url: &str,
    projector: bool,
    (conns, dur, run): (usize, Duration, u64),
) -> (RunResult, u64) {
    let (hs, port) = spawn_hooksync(dir, db_url, projector);
    let res = drive(port, conns, dur, run);
    let rss = peak_rss(&hs);
    warn_if_store_not_raised(&hs);
    stop(hs);
    (res, rss)
}

/// Says once if hooksync's store thread did not run at `database.writer_nice`'s default (a user
/// that may not raise a priority, say): its figures, PostgreSQL's above all, are then lower than
/// a systemd install gives, and a reader comparing runs should know.
fn warn_if_store_not_raised(child: &Child) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    let want = hooksync::config::DatabaseConfig::default().writer_nice;
    let store = threads::thread_nice(child.id())
        .into_iter()
        .find(|(name, _)| name == "hooksync-store");
    if let Some((_, nice)) = store.filter(|&(_, n)| n != want) {
        ONCE.call_once(|| {
            println!(
                "note: hooksync's store thread ran at nice {nice}, not {want} (database.writer_nice's \
                 default): set so in the environment, or refused to this user (ulimit -e, CAP_SYS_NICE); \
                 its figures are then lower than under the systemd unit"
            )
        });
    }
}

/// (g) and (h) on SQLite, then on PostgreSQL when a server runs.
fn forwarding_on_both(
    dir: &std::path::Path,
    conns: usize,
    dur: Duration,
    server: Option<&pg::PgServer>,
) {
    let sqlite = |name: &str| format!("sqlite://{}", dir.join(format!("{name}.db")).display());
    print_forwarding("sqlite", &forwarding(dir, conns, dur, &sqlite), conns);
    if let Some(server) = server {
        let postgres = |name: &str| {
            server.ensure_database(name);
            server.socket_url(name).unwrap_or_else(|| server.url(name))
        };
        print_forwarding("postgres", &forwarding(dir, conns, dur, &postgres), conns);
    }
}

fn print_forwarding(backend: &str, fw: &ForwardFigures, conns: usize) {
    println!();
    println!(
        "{:<44} {:>10} {:>9} {:>9} {:>9} {:>10}",
        format!("forwarding, {backend}, projector on (g)"),
        "req/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "peak RSS"
    );
    row("(g0) no destination", &fw.none, fw.none_rss);
    row("(g2) two healthy destinations", &fw.healthy, fw.healthy_rss);
    row(
        "(g1) one destination answering after 10 s",
        &fw.dead,
        fw.dead_rss,
    );
    println!(
        "ingest with two healthy / none: {:.3}, with one dead / none: {:.3}   (p99 {:.2} / {:.2} / {:.2} ms)",
        fw.healthy.rps() / fw.none.rps(),
        fw.dead.rps() / fw.none.rps(),
        fw.none.pct(0.99),
        fw.healthy.pct(0.99),
        fw.dead.pct(0.99)
    );
    println!(
        "delivered during (g2):     {} of {} events to each destination",
        fw.healthy_delivered, fw.healthy.ok
    );
    println!(
        "applied and delivered (h): {} events in {:.2} s = {:.0} events/s (one standard destination, concurrency 32; includes process start)",
        fw.events,
        fw.first_secs,
        fw.events as f64 / fw.first_secs
    );
    println!(
        "delivered again (h2):      {} deliveries in {:.2} s = {:.0} deliveries/s (redeliver; no projection)",
        fw.events,
        fw.again_secs,
        fw.events as f64 / fw.again_secs
    );
    println!(
        "the CRM stub alone:        {:.0} req/s from this load generator ({conns} connections): the HTTP side's ceiling",
        fw.stub.rps()
    );
}

/// (g) and (h): forwarding, on SQLite with the projector on.
struct ForwardFigures {
    none: RunResult,
    none_rss: u64,
    healthy: RunResult,
    healthy_rss: u64,
    /// Deliveries made to one of the healthy destinations by the end of (g2)'s runs.
    healthy_delivered: i64,
    dead: RunResult,
    dead_rss: u64,
    /// (h): events stored, then applied and delivered after a restart, then delivered again.
    events: i64,
    first_secs: f64,
    again_secs: f64,
    /// The CRM stub driven by this process's load, for the ceiling.
    stub: RunResult,
}

/// The destinations' Standard Webhooks secret.
const DEST_WHSEC: &str = "whsec_dGhlIENSTSdzIG93biBzZWNyZXQgZm9yIGhvb2tzeW5j";

fn destination(name: &str, port: u16, mode: &str) -> String {
    format!(
        "[[forward]]\nname = \"{name}\"\nurl = \"http://127.0.0.1:{port}/{name}\"\nmode = \"{mode}\"\n\
         secrets = [\"{DEST_WHSEC}\"]\nconcurrency = 32\n"
    )
}

fn spawn_reference(flag: &str) -> (Child, u16) {
    let port = free_port();
    let child = Command::new(std::env::current_exe().expect("current exe"))
        .arg(flag)
        .arg(port.to_string())
        .stdout(Stdio::null())
        .spawn()
        .expect("reference server");
    wait_port(port);
    (child, port)
}

fn wait_delivered(db_url: &str) {
    let start = Instant::now();
    wait_drained(db_url, Duration::from_secs(600));
    let mut c = connect(db_url);
    // Whether any is left, through the index of unfinished deliveries, on one connection: a
    // count of the whole table, or a connection, every few milliseconds would take the CPU
    // from what is measured.
    while c
        .count(
            "SELECT COUNT(*) AS n FROM (SELECT 1 FROM hooksync_deliveries \
             WHERE destination = 'std' AND status IN ('pending', 'failed') LIMIT 1) AS q",
        )
        .unwrap_or(1)
        > 0
    {
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "deliveries did not drain"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// (g): ingest with no destination, two healthy ones (a stub answering at once) and one that
/// answers after 10 s, in two rounds (the second in reverse order), each on a fresh database.
/// (h): a stored backlog applied and delivered by a restarted hooksync, then delivered again.
fn forwarding(
    dir: &std::path::Path,
    conns: usize,
    dur: Duration,
    url: &dyn Fn(&str) -> String,
) -> ForwardFigures {
    let (crm, crm_port) = spawn_reference("--bare-server");
    let (slow, slow_port) = spawn_reference("--slow-server");
    let healthy =
        destination("pass", crm_port, "passthrough") + &destination("std", crm_port, "standard");
    let dead = format!(
        "[[forward]]\nname = \"dead\"\nurl = \"http://127.0.0.1:{slow_port}/dead\"\nmode = \"standard\"\nsecrets = [\"{DEST_WHSEC}\"]\n"
    );
    let setups = [("", 0usize), (healthy.as_str(), 1), (dead.as_str(), 2)];
    let mut runs: [Vec<(RunResult, u64)>; 3] = Default::default();
    let mut healthy_delivered = 0;
    for round in 0..2u64 {
        let mut order = setups;
        if round == 1 {
            order.reverse();
        }
        for (extra, i) in order {
            let db = url(&format!("fw_{round}_{i}"));
            let ((hs, port), _) = spawn_hooksync_with(dir, &db, true, None, extra);
            let res = drive(port, conns, dur, 100 + round * 10 + i as u64);
            let rss = peak_rss(&hs);
            if i == 1 {
                healthy_delivered += connect(&db)
                    .count("SELECT COUNT(*) AS n FROM hooksync_deliveries WHERE destination = 'std' AND status = 'delivered'")
                    .unwrap_or(0);
            }
            stop(hs);
            runs[i].push((res, rss));
        }
    }
    let pooled = |i: usize| {
        let rs: Vec<&RunResult> = runs[i].iter().map(|(r, _)| r).collect();
        (
            RunResult::pooled(&rs),
            runs[i].iter().map(|(_, m)| *m).max().unwrap_or(0),
        )
    };
    let ((none, none_rss), (healthy_res, healthy_rss), (dead_res, dead_rss)) =
        (pooled(0), pooled(1), pooled(2));

    let one = destination("std", crm_port, "standard");
    let db = url("fw_backlog");
    let ((hs, port), _) = spawn_hooksync_with(dir, &db, false, None, &one);
    let stored = drive(port, conns, dur, 200);
    stop(hs);
    let start = Instant::now();
    let ((hs, _), cfg) = spawn_hooksync_with(dir, &db, true, None, &one);
    wait_delivered(&db);
    let first_secs = start.elapsed().as_secs_f64();
    stop(hs);
    let again = Command::new(env!("CARGO_BIN_EXE_hooksync"))
        .arg("--config")
        .arg(&cfg)
        .args(["redeliver", "--destination", "std", "--since", "1d"])
        .stdout(Stdio::null())
        .status()
        .expect("redeliver");
    assert!(again.success(), "redeliver failed");
    let start = Instant::now();
    let ((hs, _), _) = spawn_hooksync_with(dir, &db, true, None, &one);
    wait_delivered(&db);
    let again_secs = start.elapsed().as_secs_f64();
    stop(hs);
    let stub = drive(crm_port, conns, dur, 300);
    stop(crm);
    stop(slow);
    ForwardFigures {
        none,
        none_rss,
        healthy: healthy_res,
        healthy_rss,
        healthy_delivered,
        dead: dead_res,
        dead_rss,
        events: i64::try_from(stored.ok).unwrap_or(i64::MAX),
        first_secs,
        again_secs,
        stub,
    }
}

/// What was measured on PostgreSQL: (e), its drain, (t) and (f).
struct PgFigures {
    ingest: RunResult,
    /// (e2): (e)'s load over TCP loopback instead of the Unix socket, and its peak RSS.
    tcp: RunResult,
    tcp_rss: u64,
    /// Peak RSS over (e) and the drain.
    rss: u64,
    drain_secs: f64,
    alone: (f64, u64, f64),
    /// (u): commits of 16 and of 32 events back to back.
    commits: [(f64, f64); 2],
    mixed: RunResult,
    mixed_rss: u64,
    /// Events the projector had finished by the end of (f).
    mixed_projected: i64,
}

/// A connection of the bench's own, to look at what hooksync stored.
fn connect(db_url: &str) -> hooksync::store::Db {
    hooksync::store::Db::connect(&db_options(db_url)).unwrap()
}

fn db_options(db_url: &str) -> hooksync::store::DbOptions {
    hooksync::store::DbOptions {
        url: hooksync::store::DbUrl::parse(db_url).unwrap(),
        busy_timeout_ms: 5000,
    }
}

/// A migrated database as `serve` opens it: with the checkpointer beside it on SQLite, so the
/// WAL is copied back and restarted as it is under `serve`.
fn open_store(
    db_url: &str,
) -> (
    hooksync::store::DbOptions,
    hooksync::store::Db,
    Option<hooksync::store::Checkpointer>,
) {
    let opts = db_options(db_url);
    let db = hooksync::store::open_and_migrate(&opts).expect("open");
    let checkpointer =
        hooksync::store::Checkpointer::start(&opts, hooksync::store::CHECKPOINT_INTERVAL, || {})
            .expect("checkpointer");
    (opts, db, checkpointer)
}

/// Event `n` of sender `conn` in `run`, signed, verified and read as hooksync's endpoint does.
fn signed_event(
    endpoint: &hooksync::providers::Endpoint,
    headers: &mut hyper::HeaderMap,
    run: u64,
    conn: usize,
    n: u64,
) -> hooksync::event::NewEvent {
    let (sig, b) = body(run, conn, n);
    headers.insert("x-getbill-signature", sig.parse().unwrap());
    let verified = endpoint.verify(headers, &b).expect("signed");
    verified
        .into_event(hooksync::stamp::Stamp::now(), &event_limits())
        .expect("event")
}

/// How many stored events the projector has finished (applied, stale, ...).
fn projected(db_url: &str) -> i64 {
    connect(db_url)
        .count("SELECT COUNT(*) AS n FROM events WHERE status <> 'queued'")
        .unwrap()
}

/// Starts hooksync with the projector on over a stored backlog and times it until nothing is
/// queued (process start included); returns the seconds and hooksync's peak RSS.
fn drain(dir: &std::path::Path, db_url: &str) -> (f64, u64) {
    let start = Instant::now();
    let (hs, _) = spawn_hooksync(dir, db_url, true);
    wait_drained(db_url, Duration::from_secs(600));
    let secs = start.elapsed().as_secs_f64();
    let rss = peak_rss(&hs);
    stop(hs);
    (secs, rss)
}

fn wait_drained(db_url: &str, limit: Duration) {
    let mut c = connect(db_url);
    let start = Instant::now();
    loop {
        let n = c
            // Whether any is left, not how many: counting a large queue every few
            // milliseconds would take CPU from the projector being measured.
            .count("SELECT COUNT(*) AS n FROM (SELECT 1 FROM events WHERE status = 'queued' LIMIT 1) AS q")
            .unwrap_or(i64::MAX);
        if n == 0 {
            return;
        }
        assert!(start.elapsed() < limit, "projector did not drain");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Peak resident set size (VmHWM) of a live child, in KiB.
fn peak_rss(child: &Child) -> u64 {
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn stop(mut child: Child) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let _ = child.wait();
}

fn body(run: u64, conn: usize, n: u64) -> (String, Vec<u8>) {
    let id = format!("evt_{run:04x}{conn:04x}{n:024x}");
    let body = format!(
        r#"{{"id":"{id}","type":"debt.created","created_at":"2024-01-22T10:30:00+00:00","data":{{"id":"d{conn}_{n}","firstname":"John","lastname":"Doe","phone":"+33612345678","email":"john.doe@example.com","amount":1250.00,"currency":"EUR","status":"status.default.in_progress","internal_id":"INV-2024-001","due_date":"2024-02-22","invoice_date":"2024-01-22","created_at":"2024-01-22T10:30:00+00:00","company_id":"c5a8f3e1b9d2","metadata":{{"crm_id":"CRM-123","source":"website"}}}},"metadata":{{"source":"getbill","version":"1.0","company_id":"c5a8f3e1b9d2","debt_id":"d{conn}_{n}"}}}}"#
    );
    let sig = hex::encode(hooksync::providers::hmac_sha256(
        SECRET.as_bytes(),
        &[body.as_bytes()],
    ));
    (sig, body.into_bytes())
}

fn drive(port: u16, conns: usize, dur: Duration, run: u64) -> RunResult {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let errors = Arc::new(AtomicU64::new(0));
        let deadline = Instant::now() + dur;
        let mut tasks = Vec::new();
        for c in 0..conns {
            let errors = errors.clone();
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::new();
                let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .expect("connect");
                stream.set_nodelay(true).ok();
                let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                    .await
                    .expect("handshake");
                tokio::spawn(conn);
                let mut n = 0u64;
                while Instant::now() < deadline {
                    let (sig, b) = body(run, c, n);
                    n += 1;
                    let req = hyper::Request::post("/webhooks/getbill")
                        .header("host", "127.0.0.1")
                        .header("content-type", "application/json")
                        .header("x-getbill-signature", sig)
                        .body(Full::new(Bytes::from(b)))
                        .unwrap();
                    let t = Instant::now();
                    match send.send_request(req).await {
                        Ok(resp) => {
                            let ok = resp.status().is_success();
                            let _ = resp.into_body().collect().await;
                            if ok {
                                lat.push(t.elapsed().as_micros().min(u32::MAX as u128) as u32);
                            } else {
                                errors.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Err(_) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                    }
                }
                lat
            }));
        }
        let start = Instant::now();
        let mut lat_us = Vec::new();
        for t in tasks {
            lat_us.extend(t.await.unwrap());
        }
        let secs = start.elapsed().as_secs_f64();
        lat_us.sort_unstable();
        RunResult {
            ok: lat_us.len() as u64,
            errors: errors.load(Ordering::Relaxed),
            secs,
            lat_us,
        }
    })
}

/// hooksync's GetBill endpoint as configured in `spawn_hooksync`.
fn bench_endpoint() -> hooksync::providers::Endpoint {
    let cfg = hooksync::config::EndpointConfig {
        name: "getbill".into(),
        source: None,
        path: "/webhooks/getbill".into(),
        provider: "getbill".into(),
        secrets: vec![SECRET.into()],
        tenant: None,
        topic: None,
        auth_header: None,
    };
    hooksync::providers::Endpoint::from_config(&cfg).expect("endpoint")
}

/// Submits signed events straight to an inbox from `conns` tasks for `dur`; returns events/s,
/// commits and events per commit.
fn inbox_alone(db_url: &str, conns: usize, dur: Duration) -> (f64, u64, f64) {
    use hooksync::inbox::{Inbox, InboxConfig};
    let (opts, db, checkpointer) = open_store(db_url);
    let metrics = Arc::new(hooksync::metrics::Metrics::default());
    let (inbox, thread) = Inbox::start(
        db,
        InboxConfig {
            db: opts,
            batch_max: 512,
            queue_capacity: 8192,
            commit_timeout: Duration::from_secs(5),
            poll_interval: Duration::from_millis(100),
            writer_nice: hooksync::config::DatabaseConfig::default().writer_nice,
        },
        None,
        None,
        metrics.clone(),
    )
    .expect("inbox");
    let endpoint = Arc::new(bench_endpoint());
    // The same runtime shape as the daemon's (one worker per core).
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let stored = rt.block_on(async move {
        let deadline = Instant::now() + dur;
        let start = Instant::now();
        let mut tasks = Vec::new();
        for c in 0..conns {
            let inbox = inbox.clone();
            let endpoint = endpoint.clone();
            tasks.push(tokio::spawn(async move {
                let mut n = 0u64;
                let mut headers = hyper::HeaderMap::new();
                while Instant::now() < deadline {
                    let event = signed_event(&endpoint, &mut headers, 5, c, n);
                    n += 1;
                    inbox.submit(event).await.expect("stored");
                }
                n
            }));
        }
        let mut total = 0;
        for t in tasks {
            total += t.await.unwrap();
        }
        (total, total as f64 / start.elapsed().as_secs_f64())
    });
    // The store thread ends once the last handle to the inbox is gone.
    let _ = thread.join();
    if let Some(c) = checkpointer {
        c.stop();
    }
    let commits = metrics.commit_batch.get_sample_count();
    (stored.1, commits, stored.0 as f64 / commits.max(1) as f64)
}

/// Commits batches of each of `COMMIT_SIZES` signed events back to back on one connection with
/// the store thread's own commit (`hooksync::testkit::store_batch`), nothing else running: how many
/// events a second the store takes at each batch size, and the time of one commit. The sizes
/// take turns in slices of a quarter second, `dur` each in all, so both see the same disk (its
/// speed moves within seconds here). Only the commits are timed (with the checkpoint the store
/// thread finishes every so often); each batch is verified and read before its commit starts.
/// On SQLite the daemon's checkpointer runs beside it.
fn commits_alone(db_url: &str, dur: Duration, run: u64) -> [(f64, f64); 2] {
    let (_, mut db, checkpointer) = open_store(db_url);
    let endpoint = bench_endpoint();
    let mut headers = hyper::HeaderMap::new();
    let mut busy = [Duration::ZERO; 2];
    let mut counts = [0u64; 2];
    let mut commits = 0u64;
    let slice = Duration::from_millis(250);
    let start = Instant::now();
    while start.elapsed() < 2 * dur {
        for (k, &size) in COMMIT_SIZES.iter().enumerate() {
            let slice_start = Instant::now();
            while slice_start.elapsed() < slice {
                // As 32 senders' events arrive: one from each of `size` of them.
                let events: Vec<hooksync::event::NewEvent> = (0..size)
                    .map(|i| signed_event(&endpoint, &mut headers, run, i, commits))
                    .collect();
                let refs: Vec<&hooksync::event::NewEvent> = events.iter().collect();
                let t = Instant::now();
                let stored = hooksync::testkit::store_batch(&mut db, &refs).expect("committed");
                commits += 1;
                hooksync::testkit::checkpoint_if_due(&mut db, commits).expect("checkpoint");
                busy[k] += t.elapsed();
                counts[k] += 1;
                assert!(stored.iter().all(|&new| new), "every event is new");
            }
        }
    }
    if let Some(c) = checkpointer {
        c.stop();
    }
    std::array::from_fn(|k| {
        let per_commit = busy[k].as_secs_f64() / counts[k].max(1) as f64;
        (COMMIT_SIZES[k] as f64 / per_commit, per_commit * 1e6)
    })
}

/// How long the dead destination of (g) takes to answer: past hooksync's default timeout.
const SLOW_CRM: Duration = Duration::from_secs(10);

fn bare_server(port: u16, verify: bool, delay: Duration) {
    let endpoint = Arc::new(bench_endpoint());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(s) => s,
                Err(_) => continue,
            };
            stream.set_nodelay(true).ok();
            let endpoint = endpoint.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let endpoint = endpoint.clone();
                        async move {
                            if !delay.is_zero() {
                                tokio::time::sleep(delay).await;
                            }
                            let (parts, body) = req.into_parts();
                            let body = body.collect().await.map(|b| b.to_bytes());
                            let mut status = hyper::StatusCode::OK;
                            if let (true, Ok(body)) = (verify, &body) {
                                let event =
                                    endpoint.verify(&parts.headers, body).ok().and_then(|v| {
                                        v.into_event(hooksync::stamp::Stamp::now(), &event_limits())
                                            .ok()
                                    });
                                if std::hint::black_box(event).is_none() {
                                    status = hyper::StatusCode::UNAUTHORIZED;
                                }
                            }
                            let mut resp = hyper::Response::new(Full::new(Bytes::from_static(
                                b"{\"status\":\"stored\"}",
                            )));
                            *resp.status_mut() = status;
                            Ok::<_, Infallible>(resp)
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
}

/// The daemon's default bounds on how a body becomes an event.
fn event_limits() -> hooksync::providers::EventLimits {
    hooksync::providers::EventLimits {
        max_json_depth: 64,
        max_future_skew: std::time::Duration::from_secs(300),
    }
}
