//! A real PostgreSQL server for the tests, started from the machine's server binaries on a free
//! loopback port with a throwaway data directory.
//!
//! PostgreSQL refuses to run as root, so as root the server runs as `nobody` (via `setpriv`,
//! which execs: the pid we hold is the postmaster's). Each server runs under a small shell
//! watchdog whose standard input is a pipe from this process: when the test process ends, in
//! whatever way, the pipe closes and the watchdog stops the server and removes its directory.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use hooksync::store::{Db, DbOptions, DbUrl};

/// The longest Unix socket path Linux takes (`sun_path` less its terminating NUL).
const SOCKET_PATH_MAX: usize = 107;

const WATCHDOG: &str = r#"dir=$1; shift
"$@" &
pid=$!
read -r line
kill -INT "$pid" 2>/dev/null
wait "$pid"
[ "$line" = keep ] || rm -rf "$dir"
"#;

pub struct PgServer {
    pub port: u16,
    /// The data directory's parent (removed with the server).
    root: PathBuf,
    data: PathBuf,
    /// The directory of its Unix socket (the tests connect over TCP; the benchmark over both);
    /// none where the temporary directory's path is too long to hold a socket's.
    sock: Option<PathBuf>,
    bin: PathBuf,
    as_nobody: bool,
    watchdog: Option<Child>,
}

/// Where the server binaries are: `HOOKSYNC_PG_BIN`, Debian's versioned directory, or PATH.
fn bin_dir() -> Option<PathBuf> {
    if let Ok(dir) = std::env::var("HOOKSYNC_PG_BIN") {
        return Some(PathBuf::from(dir));
    }
    let mut debian: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("postgres").exists())
        .collect();
    debian.sort();
    if let Some(dir) = debian.pop() {
        return Some(dir);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .find(|p| p.join("postgres").exists() && p.join("initdb").exists())
    })
}

fn running_as_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

impl PgServer {
    /// Initialises a cluster and starts it; `Err` says why a server cannot be had here.
    pub fn start() -> Result<PgServer, String> {
        let bin = bin_dir().ok_or("no PostgreSQL server binaries (postgres, initdb) found")?;
        static N: AtomicU32 = AtomicU32::new(0);
        let root = std::env::temp_dir().join(format!(
            "hooksync-pg-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let data = root.join("data");
        let sock = root.join("sock");
        let sock =
            (sock.join(".s.PGSQL.65535").as_os_str().len() <= SOCKET_PATH_MAX).then_some(sock);
        let dirs: Vec<&PathBuf> = std::iter::once(&data).chain(sock.as_ref()).collect();
        for dir in &dirs {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        let as_nobody = running_as_root();
        if as_nobody {
            std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755))
                .map_err(|e| e.to_string())?;
            // nobody:nogroup on Debian.
            for dir in &dirs {
                std::os::unix::fs::chown(dir, Some(65534), Some(65534))
                    .map_err(|e| e.to_string())?;
            }
        }
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| e.to_string())?;
        let mut s = PgServer {
            port: 0,
            root,
            data,
            sock,
            bin,
            as_nobody,
            watchdog: None,
        };
        let out = s
            .command("initdb")
            .args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
                "-D",
            ])
            .arg(&s.data)
            .output()
            .map_err(|e| format!("initdb: {e}"))?;
        if !out.status.success() {
            let _ = std::fs::remove_dir_all(&s.root);
            return Err(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        s.port = super::free_port();
        s.launch()?;
        Ok(s)
    }

    fn command(&self, program: &str) -> Command {
        let exe = self.bin.join(program);
        if self.as_nobody {
            let mut c = Command::new("setpriv");
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
                .arg(exe);
            c
        } else {
            Command::new(exe)
        }
    }

    /// Starts the server on its data directory and waits until it takes connections.
    fn launch(&mut self) -> Result<(), String> {
        let server = self.command("postgres");
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(WATCHDOG)
            .arg("watchdog")
            .arg(&self.root)
            .arg(server.get_program())
            .args(server.get_args())
            .arg("-D")
            .arg(&self.data)
            .args(["-h", "127.0.0.1", "-k"])
            .arg(self.sock.as_deref().unwrap_or(Path::new("")))
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-c", "max_connections=300", "-c", "log_min_messages=fatal"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null());
        let log = self.root.join("server.log");
        if let Ok(f) = std::fs::File::create(&log) {
            cmd.stderr(f);
        }
        self.watchdog = Some(cmd.spawn().map_err(|e| format!("postgres: {e}"))?);
        let start = Instant::now();
        loop {
            if Db::connect(&self.options("postgres")).is_ok() {
                return Ok(());
            }
            if start.elapsed() > Duration::from_secs(30) {
                return Err(format!(
                    "PostgreSQL did not accept connections within 30 s: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// The same server through its Unix socket, as libpq reaches a local server by default;
    /// `None` where it has no socket.
    pub fn socket_url(&self, database: &str) -> Option<String> {
        let sock = self.sock.as_ref()?;
        Some(format!(
            "postgres://postgres@localhost/{database}?host={}&port={}",
            sock.display(),
            self.port
        ))
    }

    pub fn options(&self, database: &str) -> DbOptions {
        DbOptions {
            url: DbUrl::parse(&self.url(database)).expect("postgres url"),
            busy_timeout_ms: 5_000,
        }
    }

    /// Creates `name` unless it exists.
    pub fn ensure_database(&self, name: &str) {
        let mut admin = Db::connect(&self.options("postgres")).expect("connect to postgres");
        let exists = admin
            .count(&format!(
                "SELECT COUNT(*) AS n FROM pg_database WHERE datname = '{name}'"
            ))
            .expect("pg_database");
        if exists == 0 {
            admin
                .batch(&format!("CREATE DATABASE \"{name}\""))
                .expect("create database");
        }
    }

    /// Stops the server (fast shutdown: sessions are cut, committed work stays) and keeps
    /// its data for [`PgServer::restart`].
    pub fn stop(&mut self) {
        if let Some(mut w) = self.watchdog.take() {
            if let Some(mut stdin) = w.stdin.take() {
                let _ = stdin.write_all(b"keep\n");
            }
            let _ = w.wait();
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.launch().expect("restart PostgreSQL");
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        // Closing the watchdog's stdin stops the server and removes its directory.
        if let Some(mut w) = self.watchdog.take() {
            drop(w.stdin.take());
            let _ = w.wait();
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// The server this test process shares between its tests, or why none can be started here.
pub fn shared() -> Result<&'static Mutex<PgServer>, &'static str> {
    static SERVER: OnceLock<Result<Mutex<PgServer>, String>> = OnceLock::new();
    SERVER
        .get_or_init(|| PgServer::start().map(Mutex::new))
        .as_ref()
        .map_err(String::as_str)
}

/// What a PostgreSQL test does when no server can be started: under `CI=true` it fails (there,
/// PostgreSQL tests never skip); elsewhere it says aloud that it is skipped.
pub fn skip(test: &str, why: &str) {
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI=true and no PostgreSQL server could be started for {test}: {why}"
    );
    eprintln!("SKIPPED {test}: no PostgreSQL server here ({why})");
}
