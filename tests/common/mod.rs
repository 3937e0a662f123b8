//! The test harness: a real hooksync on a real port (in-process via `hooksync::run`, or the
//! real binary as a child process), real TLS with a certificate made for the test, and a real
//! SQLite file read back through a second connection.
#![allow(dead_code)]

pub mod media_server;
pub mod providers;
pub mod stream;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use diesel::sql_types::{Nullable, Text};
use diesel::QueryableByName;
use hooksync::store::{Db, DbOptions, DbUrl, Stmt};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const SECRET: &str = "whsk_test_current_0001";
pub const OLD_SECRET: &str = "whsk_test_previous_0000";
pub const PATH: &str = "/webhooks/getbill";

pub fn sign(secret: &str, body: &[u8]) -> String {
    hex::encode(hooksync::providers::hmac_sha256(secret.as_bytes(), &[body]))
}

/// A certificate for 127.0.0.1 and localhost, written next to the test's database.
pub struct TestCert {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub pem: Vec<u8>,
}

pub fn make_cert(dir: &Path) -> TestCert {
    let ck =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .expect("cert");
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    let pem = ck.cert.pem();
    std::fs::write(&cert, &pem).expect("write cert");
    std::fs::write(&key, ck.signing_key.serialize_pem()).expect("write key");
    TestCert {
        cert,
        key,
        pem: pem.into_bytes(),
    }
}

pub fn client(cert: &TestCert) -> reqwest::Client {
    reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&cert.pem).expect("pem"))
        .pool_max_idle_per_host(64)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

/// What a test changes in the configuration.
#[derive(Clone)]
pub struct Setup {
    pub tenant: Option<String>,
    pub projector: bool,
    pub server_extra: String,
    pub database_extra: String,
    pub tls: bool,
    /// More `[[endpoints]]` tables, as TOML.
    pub extra_endpoints: String,
    /// Lines for the `[media]` section (its `dir` is the test's own).
    pub media_extra: String,
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            tenant: None,
            projector: true,
            server_extra: String::new(),
            database_extra: String::new(),
            tls: true,
            extra_endpoints: String::new(),
            media_extra: String::new(),
        }
    }
}

impl Setup {
    pub fn toml(
        &self,
        dir: &Path,
        cert: &TestCert,
        listen: SocketAddr,
        admin: SocketAddr,
    ) -> String {
        let tls = if self.tls {
            format!("tls_cert = {:?}\ntls_key = {:?}\n", cert.cert, cert.key)
        } else {
            String::new()
        };
        let tenant = self
            .tenant
            .as_ref()
            .map(|t| format!("tenant = {t:?}\n"))
            .unwrap_or_default();
        format!(
            "[server]\nlisten = \"{listen}\"\nadmin_listen = \"{admin}\"\n{tls}{}\n\
             [database]\nurl = \"sqlite://{}\"\n{}\n\
             [projector]\nenabled = {}\npoll_interval_ms = 200\n\
             [media]\ndir = \"{}\"\n{}\n\
             [log]\nlevel = \"warn\"\n\
             [[endpoints]]\nname = \"getbill\"\npath = \"{PATH}\"\nprovider = \"getbill\"\nsecrets = [\"{SECRET}\", \"{OLD_SECRET}\"]\n{tenant}",
            self.server_extra,
            dir.join("hooksync.db").display(),
            self.database_extra,
            self.projector,
            dir.join("media").display(),
            self.media_extra,
        ) + &self.extra_endpoints
    }
}

/// Reads the database the way another application would: a second connection to the file.
pub struct Reader {
    db: Db,
}

#[derive(QueryableByName)]
struct JsonRow {
    #[diesel(sql_type = Nullable<Text>)]
    j: Option<String>,
}

impl Reader {
    pub fn open(path: &Path) -> Reader {
        let db = Db::connect(&DbOptions {
            url: DbUrl::Sqlite(path.to_path_buf()),
            busy_timeout_ms: 5_000,
        })
        .expect("open db");
        Reader { db }
    }

    pub fn count(&mut self, sql: &str) -> i64 {
        self.db.count(sql).expect(sql)
    }

    /// Runs a query whose single column `j` is JSON text.
    pub fn json(&mut self, sql: &str) -> serde_json::Value {
        let rows: Vec<JsonRow> = self.db.load(Stmt::new(sql)).expect(sql);
        rows.into_iter()
            .next()
            .and_then(|r| r.j)
            .map(|t| serde_json::from_str(&t).expect("json"))
            .unwrap_or(serde_json::Value::Null)
    }

    /// One row of `table` as a JSON object, or Null.
    pub fn row(&mut self, table: &str, key_col: &str, key: &str) -> serde_json::Value {
        let cols = self.columns(table);
        let obj: Vec<String> = cols.iter().map(|c| format!("'{c}', \"{c}\"")).collect();
        self.json(&format!(
            "SELECT json_object({}) AS j FROM {table} WHERE \"{key_col}\" = '{}'",
            obj.join(", "),
            key.replace('\'', "''")
        ))
    }

    pub fn columns(&mut self, table: &str) -> Vec<String> {
        let v = self.json(&format!(
            "SELECT json_group_array(name) AS j FROM pragma_table_info('{table}')"
        ));
        v.as_array()
            .expect("columns")
            .iter()
            .filter_map(|c| c.as_str().map(str::to_owned))
            .collect()
    }

    /// The whole table as other applications see it, in key order, without the columns that
    /// record when and in what sequence hooksync wrote it.
    pub fn snapshot(&mut self, table: &str) -> serde_json::Value {
        let cols: Vec<String> = self
            .columns(table)
            .into_iter()
            .filter(|c| !matches!(c.as_str(), "versions" | "synced_at"))
            .collect();
        let pk = self.json(&format!(
            "SELECT json_group_array(name) AS j FROM pragma_table_info('{table}') WHERE pk > 0"
        ));
        let order: Vec<String> = pk
            .as_array()
            .unwrap()
            .iter()
            .map(|c| format!("\"{}\"", c.as_str().unwrap()))
            .collect();
        let arr: Vec<String> = cols.iter().map(|c| format!("\"{c}\"")).collect();
        self.json(&format!(
            "SELECT json_group_array(json_array({})) AS j FROM (SELECT * FROM {table} ORDER BY {})",
            arr.join(", "),
            order.join(", ")
        ))
    }

    pub fn status_of(&mut self, event_id: &str) -> Option<String> {
        self.json(&format!(
            "SELECT json_group_array(status) AS j FROM events WHERE event_id = '{}'",
            event_id.replace('\'', "''")
        ))
        .as_array()
        .and_then(|a| a.first())
        .and_then(|s| s.as_str().map(str::to_owned))
    }

    pub fn event_ids(&mut self) -> std::collections::HashSet<String> {
        let v = self.json("SELECT json_group_array(event_id) AS j FROM events");
        v.as_array()
            .unwrap()
            .iter()
            .filter_map(|s| s.as_str().map(str::to_owned))
            .collect()
    }

    pub fn queued(&mut self) -> i64 {
        self.count("SELECT COUNT(*) AS n FROM events WHERE status = 'queued'")
    }

    pub fn raw(&mut self) -> &mut Db {
        &mut self.db
    }
}

/// One request as a sender puts it on the wire.
#[derive(Clone, Debug)]
pub struct Req {
    pub path: String,
    pub body: Vec<u8>,
    pub headers: Vec<(String, String)>,
}

/// Sends requests from `clients` senders, each with its own connection
/// pool as separate senders would have; every answer must be 200.
pub async fn send_concurrently(app: &TestApp, requests: Vec<Req>, clients: usize) {
    let queue = std::sync::Arc::new(std::sync::Mutex::new(requests));
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let client = client(&app.cert);
        let (url, queue) = (app.url.clone(), queue.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let Some(Req {
                    path,
                    body,
                    headers,
                }) = queue.lock().unwrap().pop()
                else {
                    break;
                };
                let mut req = client.post(format!("{url}{path}")).body(body);
                for (k, v) in &headers {
                    req = req.header(k.as_str(), v.as_str());
                }
                assert_eq!(req.send().await.unwrap().status(), 200, "{path}");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

/// Asserts that two databases hold the same rows in `tables`, naming the first difference.
pub fn assert_same_tables(a: &mut Reader, b: &mut Reader, tables: &[&str]) {
    for table in tables {
        let (sa, sb) = (a.snapshot(table), b.snapshot(table));
        assert!(
            sa.as_array().is_some_and(|r| !r.is_empty()),
            "{table} is empty"
        );
        if sa != sb {
            let (ra, rb) = (sa.as_array().unwrap(), sb.as_array().unwrap());
            let diff = ra.iter().zip(rb).find(|(x, y)| x != y);
            panic!(
                "{table} differs ({} vs {} rows); first difference:\n  in order: {:?}\n  shuffled: {:?}",
                ra.len(),
                rb.len(),
                diff.map(|d| d.0),
                diff.map(|d| d.1)
            );
        }
    }
}

/// Polls `cond` until it holds; panics with `what` after `limit`.
pub async fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// hooksync running in this process on ports chosen by the kernel.
pub struct TestApp {
    pub dir: tempfile::TempDir,
    pub url: String,
    pub admin: String,
    pub client: reqwest::Client,
    pub cert: TestCert,
    pub db_path: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestApp {
    pub async fn start(setup: Setup) -> TestApp {
        Self::start_in(tempfile::tempdir().expect("tempdir"), setup).await
    }

    /// Starts on an existing directory: the database and media of an earlier run.
    pub async fn start_in(dir: tempfile::TempDir, setup: Setup) -> TestApp {
        let cert = make_cert(dir.path());
        let listeners = hooksync::Listeners {
            webhooks: tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind"),
            admin: Some(
                tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind"),
            ),
        };
        let addr = listeners.webhooks.local_addr().unwrap();
        let admin = listeners.admin.as_ref().unwrap().local_addr().unwrap();
        let toml = setup.toml(dir.path(), &cert, addr, admin);
        let cfg =
            hooksync::config::Config::from_toml(&toml).unwrap_or_else(|e| panic!("{e}\n{toml}"));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(hooksync::run(cfg, listeners, async move {
            let _ = stopped.await;
        }));
        let scheme = if setup.tls { "https" } else { "http" };
        let app = TestApp {
            db_path: dir.path().join("hooksync.db"),
            url: format!("{scheme}://127.0.0.1:{}", addr.port()),
            admin: format!("http://127.0.0.1:{}", admin.port()),
            client: client(&cert),
            cert,
            dir,
            stop: Some(stop),
            task: Some(task),
        };
        app.wait_healthy().await;
        app
    }

    async fn wait_healthy(&self) {
        let start = Instant::now();
        loop {
            if let Ok(r) = self
                .client
                .get(format!("{}/healthz", self.admin))
                .send()
                .await
            {
                if r.status() == 200 {
                    return;
                }
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "hooksync did not come up"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn post(&self, body: &[u8], signature: Option<&str>) -> reqwest::Response {
        self.post_to(PATH, body, signature).await
    }

    pub async fn post_to(
        &self,
        path: &str,
        body: &[u8],
        signature: Option<&str>,
    ) -> reqwest::Response {
        let mut req = self
            .client
            .post(format!("{}{path}", self.url))
            .header("content-type", "application/json")
            .body(body.to_vec());
        if let Some(sig) = signature {
            req = req.header("X-GetBill-Signature", sig);
        }
        req.send().await.expect("request")
    }

    /// Posts a body with the given headers; returns the status.
    pub async fn post_with(&self, path: &str, body: &[u8], headers: &[(String, String)]) -> u16 {
        let mut req = self
            .client
            .post(format!("{}{path}", self.url))
            .body(body.to_vec());
        for (k, v) in headers {
            req = req.header(k.as_str(), v.as_str());
        }
        req.send().await.expect("request").status().as_u16()
    }

    /// Posts a body signed with the current secret; returns the status.
    pub async fn send(&self, body: &[u8]) -> u16 {
        self.post(body, Some(&sign(SECRET, body)))
            .await
            .status()
            .as_u16()
    }

    pub fn reader(&self) -> Reader {
        Reader::open(&self.db_path)
    }

    pub async fn wait_projected(&self) {
        let mut r = self.reader();
        wait_until("projection to finish", Duration::from_secs(60), || {
            r.queued() == 0
        })
        .await;
    }

    pub async fn metric(&self, line_prefix: &str) -> u64 {
        let text = self
            .client
            .get(format!("{}/metrics", self.admin))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find(|l| l.starts_with(line_prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no metric {line_prefix} in:\n{text}"))
    }

    pub async fn stop(mut self) -> tempfile::TempDir {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.expect("join").expect("hooksync::run failed");
        }
        std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap())
    }
}

/// A port the kernel just handed out and released, for a child process to bind.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The real `hooksync` binary running as a child process.
pub struct Daemon {
    pub child: Child,
    pub url: String,
    pub admin: String,
    pub client: reqwest::Client,
    pub config: PathBuf,
}

impl Daemon {
    pub fn write_config(dir: &Path, setup: &Setup) -> (PathBuf, TestCert, u16, u16) {
        let cert = make_cert(dir);
        let (port, admin) = (free_port(), free_port());
        let toml = setup.toml(
            dir,
            &cert,
            ([127, 0, 0, 1], port).into(),
            ([127, 0, 0, 1], admin).into(),
        );
        let path = dir.join("config.toml");
        std::fs::write(&path, toml).unwrap();
        (path, cert, port, admin)
    }

    pub async fn spawn(config: &Path, cert: &TestCert, port: u16, admin: u16) -> Daemon {
        Self::spawn_logging(config, cert, port, admin, None).await
    }

    /// Like `spawn`, with the log at debug level written to `log`.
    pub async fn spawn_logging(
        config: &Path,
        cert: &TestCert,
        port: u16,
        admin: u16,
        log: Option<&Path>,
    ) -> Daemon {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_hooksync"));
        cmd.arg("--config")
            .arg(config)
            .arg("serve")
            .stdout(Stdio::null());
        match log {
            Some(path) => {
                cmd.env("RUST_LOG", "debug")
                    .stderr(std::fs::File::create(path).expect("log file"));
            }
            None => {
                cmd.stderr(Stdio::inherit());
            }
        }
        let child = cmd.spawn().expect("spawn hooksync");
        let d = Daemon {
            child,
            url: format!("https://127.0.0.1:{port}"),
            admin: format!("http://127.0.0.1:{admin}"),
            client: client(cert),
            config: config.to_path_buf(),
        };
        let start = Instant::now();
        loop {
            if let Ok(r) = d.client.get(format!("{}/healthz", d.admin)).send().await {
                if r.status() == 200 {
                    break;
                }
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "hooksync binary did not come up"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        d
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .expect("kill");
        assert!(ok.success());
    }

    /// Waits for the process to exit; returns its exit code.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status.code();
            }
            assert!(
                start.elapsed() < limit,
                "hooksync did not exit within {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
