//! The test harness: a real hooksync on a real port (in-process via `hooksync::run`, or the
//! real binary as a child process), real TLS with a certificate made for the test, and a real
//! database read back through a second connection.
//!
//! One suite, two backends: `TEST_BACKEND=postgres` runs every test against a real
//! PostgreSQL server started by the harness (`pg`), one database per test directory;
//! otherwise each test directory holds an SQLite file. `scripts/test` runs both.
#![allow(dead_code)]

pub mod crm;
pub mod media_server;
pub mod pg;
pub mod ports;
pub mod providers;
pub mod stream;
pub mod threads;

pub use ports::free_port;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use diesel::sql_types::{Nullable, Text};
use diesel::QueryableByName;
use hooksync::store::{Backend, Db, DbOptions, DbUrl, Stmt};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const SECRET: &str = "whsk_test_current_0001";
pub const OLD_SECRET: &str = "whsk_test_previous_0000";
pub const PATH: &str = "/webhooks/getbill";

pub fn sign(secret: &str, body: &[u8]) -> String {
    hex::encode(hooksync::providers::hmac_sha256(secret.as_bytes(), &[body]))
}

/// A count a long run raises through the environment (`SOAK_CYCLES`, `PROPTEST_CASES`, ...).
pub fn env_count(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|v| v.parse().unwrap_or_else(|_| panic!("{name}={v}: a number")))
        .unwrap_or(default)
}

/// The backend this run of the suite tests.
pub fn backend() -> Backend {
    match std::env::var("TEST_BACKEND").as_deref() {
        Ok("postgres") => Backend::Postgres,
        Ok("sqlite") | Err(_) => Backend::Sqlite,
        Ok(other) => panic!("TEST_BACKEND={other}: use sqlite or postgres"),
    }
}

/// The database of a test directory: its SQLite file, or its own database on the shared
/// PostgreSQL server (named after the directory, so a restart on the same directory finds it).
pub fn database_url(dir: &Path) -> String {
    match backend() {
        Backend::Sqlite => format!("sqlite://{}", dir.join("hooksync.db").display()),
        Backend::Postgres => {
            let server = pg::shared()
                .unwrap_or_else(|e| panic!("TEST_BACKEND=postgres: {e}"))
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let name = database_name(dir);
            server.ensure_database(&name);
            server.url(&name)
        }
    }
}

pub fn database_name(dir: &Path) -> String {
    use sha2::Digest;
    let h = sha2::Sha256::digest(dir.as_os_str().as_encoded_bytes());
    format!("hs_{}", &hex::encode(h)[..20])
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
    /// Lines for the `[projector]` section.
    pub projector_extra: String,
    pub tls: bool,
    /// More `[[endpoints]]` tables, as TOML.
    pub extra_endpoints: String,
    /// Lines for the `[media]` section (its `dir` is the test's own).
    pub media_extra: String,
    /// Another directory's database instead of this one's (several instances, one database).
    pub database_url: Option<String>,
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            tenant: None,
            projector: true,
            server_extra: String::new(),
            database_extra: String::new(),
            projector_extra: String::new(),
            tls: true,
            extra_endpoints: String::new(),
            media_extra: String::new(),
            database_url: None,
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
             [database]\nurl = \"{}\"\n{}\n\
             [projector]\nenabled = {}\npoll_interval_ms = 200\n{}\n\
             [media]\ndir = \"{}\"\n{}\n\
             [log]\nlevel = \"warn\"\n\
             [[endpoints]]\nname = \"getbill\"\npath = \"{PATH}\"\nprovider = \"getbill\"\nsecrets = [\"{SECRET}\", \"{OLD_SECRET}\"]\n{tenant}",
            self.server_extra,
            self.database_url
                .clone()
                .unwrap_or_else(|| database_url(dir)),
            self.database_extra,
            self.projector,
            self.projector_extra,
            dir.join("media").display(),
            self.media_extra,
        ) + &self.extra_endpoints
    }
}

/// Reads the database the way another application would: a second connection.
///
/// Rows come back as JSON with every value in SQLite's text form on both backends (instants
/// as stored text, NUMERIC and jsonb as text, booleans as 0/1), so one assertion serves both.
pub struct Reader {
    db: Db,
    backend: Backend,
}

#[derive(QueryableByName)]
struct JsonRow {
    #[diesel(sql_type = Nullable<Text>)]
    j: Option<String>,
}

impl Reader {
    /// The database of the test directory `dir` (see [`database_url`]).
    pub fn open(dir: &Path) -> Reader {
        Self::open_url(&database_url(dir))
    }

    pub fn open_url(url: &str) -> Reader {
        let url = DbUrl::parse(url).expect("database url");
        let backend = match url {
            DbUrl::Sqlite(_) => Backend::Sqlite,
            DbUrl::Postgres(_) => Backend::Postgres,
        };
        let db = Db::connect(&DbOptions {
            url,
            busy_timeout_ms: 5_000,
        })
        .expect("open db");
        Reader { db, backend }
    }

    pub fn backend(&self) -> Backend {
        self.backend
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

    /// A JSON array of `expr` over the rows of the rest of the query.
    fn agg(&self, expr: &str) -> String {
        match self.backend {
            Backend::Sqlite => format!("json_group_array({expr})"),
            Backend::Postgres => format!("COALESCE(json_agg({expr}), '[]')::text"),
        }
    }

    /// The columns of `table` in order, with the expression that reads each as SQLite would.
    fn typed_columns(&mut self, table: &str) -> Vec<(String, String)> {
        match self.backend {
            Backend::Sqlite => {
                let v = self.json(&format!(
                    "SELECT json_group_array(name) AS j FROM pragma_table_info('{table}')"
                ));
                names(&v)
                    .into_iter()
                    .map(|c| (c.clone(), format!("\"{c}\"")))
                    .collect()
            }
            Backend::Postgres => {
                let v = self.json(&format!(
                    "SELECT json_agg(json_build_array(column_name, data_type) ORDER BY ordinal_position)::text AS j \
                     FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = '{table}'"
                ));
                v.as_array()
                    .expect("columns")
                    .iter()
                    .map(|c| {
                        let name = c[0].as_str().unwrap().to_owned();
                        let q = format!("\"{name}\"");
                        let expr = match c[1].as_str().unwrap() {
                            "timestamp with time zone" => Backend::Postgres.time_text(&q),
                            "numeric" | "jsonb" => format!("{q}::text"),
                            "boolean" => format!("{q}::int"),
                            "bytea" => format!("encode({q}, 'escape')"),
                            _ => q,
                        };
                        (name, expr)
                    })
                    .collect()
            }
        }
    }

    /// One row of `table` as a JSON object, or Null.
    pub fn row(&mut self, table: &str, key_col: &str, key: &str) -> serde_json::Value {
        let cond = format!("\"{key_col}\" = '{}'", key.replace('\'', "''"));
        self.rows_where(table, &cond)
            .into_iter()
            .next()
            .unwrap_or(serde_json::Value::Null)
    }

    /// The rows of `table` matching `cond` (which may end in ORDER BY), as JSON objects.
    pub fn rows_where(&mut self, table: &str, cond: &str) -> Vec<serde_json::Value> {
        let cols = self.typed_columns(table);
        let obj: Vec<String> = cols.iter().map(|(c, e)| format!("'{c}', {e}")).collect();
        let f = match self.backend {
            Backend::Sqlite => "json_object",
            Backend::Postgres => "json_build_object",
        };
        let sql = format!(
            "SELECT {} AS j FROM (SELECT {f}({}) AS o FROM {table} WHERE {cond}) AS t",
            self.agg("o"),
            obj.join(", "),
        );
        match self.json(&sql) {
            serde_json::Value::Array(rows) => rows
                .into_iter()
                .map(|r| match r {
                    // SQLite's json_group_array nests the objects as text.
                    serde_json::Value::String(t) => serde_json::from_str(&t).expect("row"),
                    other => other,
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    /// `expr` over the rows that `rest` (FROM ... WHERE ... ORDER BY ...) selects, as a list.
    pub fn list(&mut self, expr: &str, rest: &str) -> Vec<serde_json::Value> {
        let sql = format!(
            "SELECT {} AS j FROM (SELECT {expr} AS v {rest}) AS t",
            self.agg("v")
        );
        match self.json(&sql) {
            serde_json::Value::Array(v) => v,
            _ => Vec::new(),
        }
    }

    pub fn columns(&mut self, table: &str) -> Vec<String> {
        self.typed_columns(table)
            .into_iter()
            .map(|(c, _)| c)
            .collect()
    }

    fn primary_key(&mut self, table: &str) -> Vec<String> {
        let v = match self.backend {
            Backend::Sqlite => self.json(&format!(
                "SELECT json_group_array(name) AS j FROM (SELECT name FROM pragma_table_info('{table}') WHERE pk > 0 ORDER BY pk)"
            )),
            Backend::Postgres => self.json(&format!(
                "SELECT json_agg(a.attname ORDER BY array_position(i.indkey, a.attnum))::text AS j \
                 FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) \
                 WHERE i.indrelid = '{table}'::regclass AND i.indisprimary"
            )),
        };
        names(&v)
    }

    /// The whole table as other applications see it, in key order, without the columns that
    /// record when and in what sequence hooksync wrote it.
    pub fn snapshot(&mut self, table: &str) -> serde_json::Value {
        let cols: Vec<String> = self
            .typed_columns(table)
            .into_iter()
            .filter(|(c, _)| !matches!(c.as_str(), "versions" | "synced_at"))
            .map(|(_, e)| e)
            .collect();
        let order: Vec<String> = self
            .primary_key(table)
            .iter()
            .map(|c| format!("\"{c}\""))
            .collect();
        let sql = match self.backend {
            Backend::Sqlite => format!(
                "SELECT json_group_array(json_array({})) AS j FROM (SELECT * FROM {table} ORDER BY {})",
                cols.join(", "),
                order.join(", ")
            ),
            Backend::Postgres => format!(
                "SELECT COALESCE(json_agg(json_build_array({}) ORDER BY {}), '[]')::text AS j FROM {table}",
                cols.join(", "),
                order.join(", ")
            ),
        };
        self.json(&sql)
    }

    pub fn status_of(&mut self, event_id: &str) -> Option<String> {
        let sql = format!(
            "SELECT {} AS j FROM events WHERE event_id = '{}'",
            self.agg("status"),
            event_id.replace('\'', "''")
        );
        self.json(&sql)
            .as_array()
            .and_then(|a| a.first())
            .and_then(|s| s.as_str().map(str::to_owned))
    }

    /// Every id in `acked` (events answered 2xx) is stored.
    pub fn assert_stored(&mut self, acked: &[String]) {
        let stored = self.event_ids();
        let lost: Vec<&String> = acked.iter().filter(|id| !stored.contains(*id)).collect();
        assert!(
            lost.is_empty(),
            "{} of {} acknowledged events lost, e.g. {:?}",
            lost.len(),
            acked.len(),
            lost.first()
        );
    }

    pub fn event_ids(&mut self) -> std::collections::HashSet<String> {
        let sql = format!("SELECT {} AS j FROM events", self.agg("event_id"));
        names(&self.json(&sql)).into_iter().collect()
    }

    /// The SQL expression for `data.id` in the payload column `payload` (e.g. `e.payload`).
    pub fn payload_id(&self, payload: &str) -> String {
        match self.backend {
            Backend::Sqlite => format!("json_extract({payload}, '$.data.id')"),
            Backend::Postgres => format!("{payload} #>> '{{data,id}}'"),
        }
    }

    /// How many different `data.id`s the stored events carry.
    pub fn distinct_payload_ids(&mut self) -> i64 {
        let sql = format!(
            "SELECT COUNT(DISTINCT {}) AS n FROM events",
            self.payload_id("payload")
        );
        self.count(&sql)
    }

    /// The database's own consistency check: SQLite's `integrity_check` of the file; on
    /// PostgreSQL amcheck's check of every index of `events` against the table, which fails
    /// the query at the first inconsistency (true when all three indexes were checked).
    pub fn integrity_ok(&mut self) -> bool {
        match self.backend {
            Backend::Sqlite => {
                self.json(
                    "SELECT json_group_array(integrity_check) AS j FROM pragma_integrity_check",
                )[0] == "ok"
            }
            Backend::Postgres => {
                self.db
                    .batch("CREATE EXTENSION IF NOT EXISTS amcheck")
                    .expect("amcheck (PostgreSQL's contrib modules)");
                let indexes = self.count(
                    "SELECT COUNT(*) AS n FROM pg_index WHERE indrelid = 'events'::regclass",
                );
                indexes > 0
                    && self.count(
                        "SELECT COUNT(bt_index_check(indexrelid, true)::text) AS n FROM pg_index \
                         WHERE indrelid = 'events'::regclass",
                    ) == indexes
            }
        }
    }

    /// An SQL literal of `text`'s bytes, to compare with `raw_body`.
    pub fn bytes_literal(&self, text: &str) -> String {
        let t = text.replace('\'', "''");
        match self.backend {
            Backend::Sqlite => format!("CAST('{t}' AS BLOB)"),
            Backend::Postgres => format!("convert_to('{t}', 'UTF8')"),
        }
    }

    pub fn table_exists(&mut self, table: &str) -> bool {
        let sql = match self.backend {
            Backend::Sqlite => format!("SELECT COUNT(*) AS n FROM sqlite_master WHERE type = 'table' AND name = '{table}'"),
            Backend::Postgres => format!(
                "SELECT COUNT(*) AS n FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = '{table}'"
            ),
        };
        self.count(&sql) == 1
    }

    /// Takes every write lock hooksync needs and holds it until [`Reader::unlock_writes`].
    pub fn lock_writes(&mut self) {
        let sql = match self.backend {
            Backend::Sqlite => "BEGIN EXCLUSIVE",
            Backend::Postgres => {
                "BEGIN; LOCK TABLE events, hooksync_health IN ACCESS EXCLUSIVE MODE"
            }
        };
        self.db.batch(sql).expect("lock");
    }

    pub fn unlock_writes(&mut self) {
        self.db.batch("ROLLBACK").expect("unlock");
    }

    pub fn queued(&mut self) -> i64 {
        self.count("SELECT COUNT(*) AS n FROM events WHERE status = 'queued'")
    }

    pub fn raw(&mut self) -> &mut Db {
        &mut self.db
    }
}

fn names(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .expect("a JSON array")
        .iter()
        .filter_map(|c| c.as_str().map(str::to_owned))
        .collect()
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

/// The end of every "delivered shuffled and duplicated, ends like in order" test: once both
/// have projected everything, `got` holds one `events` row per id (`distinct`), neither has an
/// event left unapplied, and `tables` are the same. Returns both readers for further checks.
pub async fn assert_ends_like_in_order(
    ordered: &TestApp,
    got: &TestApp,
    distinct: i64,
    tables: &[&str],
) -> (Reader, Reader) {
    ordered.wait_projected().await;
    got.wait_projected().await;
    let (mut want, mut have) = (ordered.reader(), got.reader());
    assert_eq!(
        have.count("SELECT COUNT(*) AS n FROM events"),
        distinct,
        "one row per event id"
    );
    for db in [&mut want, &mut have] {
        assert_eq!(
            db.count("SELECT COUNT(*) AS n FROM events WHERE status NOT IN ('applied', 'stale')"),
            0
        );
    }
    assert_same_tables(&mut want, &mut have, tables);
    (want, have)
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

/// Every file below `dir`, at any depth.
pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.path().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

/// Polls `cond` until it holds; panics with `what` after `limit`.
pub async fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    eventually(what, limit, async || cond()).await
}

/// Polls `probe` (which may await, e.g. an HTTP call) until it says yes; panics with `what`
/// after `limit`.
pub async fn eventually(what: &str, limit: Duration, mut probe: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while !probe().await {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether hooksync's admin listener at `admin` answers `/healthz` with 200.
async fn healthy(client: &reqwest::Client, admin: &str) -> bool {
    client
        .get(format!("{admin}/healthz"))
        .send()
        .await
        .is_ok_and(|r| r.status() == 200)
}

/// The sum of the samples named by `selector` (`name` or `name{label="value",...}`, the labels
/// a subset of the sample's), scraped from the admin listener at `admin` and read with a
/// Prometheus text-format parser. Panics when no sample matches, or the scrape lacks the
/// content type Prometheus requires.
pub async fn metric(client: &reqwest::Client, admin: &str, selector: &str) -> u64 {
    let r = client.get(format!("{admin}/metrics")).send().await.unwrap();
    let kind = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(
        kind.as_deref(),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let text = r.text().await.unwrap();
    sample_sum(&text, selector).unwrap_or_else(|| panic!("no metric {selector} in:\n{text}")) as u64
}

/// The sum of the samples `selector` names in a scrape's `text`; `None` if none.
pub fn sample_sum(text: &str, selector: &str) -> Option<f64> {
    let selector = selector.trim();
    let (name, labels) = match selector.split_once('{') {
        Some((n, rest)) => (n, rest.trim_end_matches('}')),
        None => (selector, ""),
    };
    let want: Vec<(&str, &str)> = labels
        .split(',')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').expect("label=value");
            (k.trim(), v.trim().trim_matches('"'))
        })
        .collect();
    let scrape =
        prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("parse");
    let values: Vec<f64> = scrape
        .samples
        .iter()
        .filter(|s| s.metric == name && want.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .filter_map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => Some(v),
            _ => None,
        })
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

/// hooksync running in this process on ports chosen by the kernel.
pub struct TestApp {
    pub dir: tempfile::TempDir,
    pub url: String,
    pub admin: String,
    pub client: reqwest::Client,
    pub cert: TestCert,
    pub database_url: String,
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
            database_url: setup
                .database_url
                .clone()
                .unwrap_or_else(|| database_url(dir.path())),
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
        eventually("hooksync to come up", Duration::from_secs(20), async || {
            healthy(&self.client, &self.admin).await
        })
        .await;
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
        Reader::open_url(&self.database_url)
    }

    pub async fn wait_projected(&self) {
        let mut r = self.reader();
        wait_until("projection to finish", Duration::from_secs(60), || {
            r.queued() == 0
        })
        .await;
    }

    pub async fn metric(&self, line_prefix: &str) -> u64 {
        metric(&self.client, &self.admin, line_prefix).await
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

/// The real `hooksync` binary running as a child process.
pub struct Daemon {
    pub child: Child,
    pub url: String,
    pub admin: String,
    pub client: reqwest::Client,
}

/// A config file written for the real binary, with the certificate and ports a client needs
/// to reach it; a test that restarts the daemon spawns it again from the same one.
pub struct DaemonConfig {
    pub path: PathBuf,
    pub cert: TestCert,
    pub port: u16,
    pub admin: u16,
}

impl DaemonConfig {
    pub async fn spawn(&self) -> Daemon {
        self.spawn_logging(None).await
    }

    /// Like `spawn`, with the log at debug level written to `log`.
    pub async fn spawn_logging(&self, log: Option<&Path>) -> Daemon {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_hooksync"));
        cmd.arg("--config")
            .arg(&self.path)
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
        let mut d = Daemon {
            child: cmd.spawn().expect("spawn hooksync"),
            url: format!("https://127.0.0.1:{}", self.port),
            admin: format!("http://127.0.0.1:{}", self.admin),
            client: client(&self.cert),
        };
        eventually(
            "the hooksync binary to come up",
            Duration::from_secs(20),
            async || {
                if let Ok(Some(status)) = d.child.try_wait() {
                    panic!("hooksync binary exited at start: {status}");
                }
                healthy(&d.client, &d.admin).await
            },
        )
        .await;
        d
    }
}

impl Daemon {
    /// Writes `config.toml` for `setup` in `dir`, on two free ports, with a fresh certificate.
    pub fn write_config(dir: &Path, setup: &Setup) -> DaemonConfig {
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
        DaemonConfig {
            path,
            cert,
            port,
            admin,
        }
    }

    /// Posts a body to the GetBill endpoint with the given signature; returns the status.
    pub async fn post(&self, body: Vec<u8>, signature: &str) -> u16 {
        self.client
            .post(format!("{}{PATH}", self.url))
            .header("X-GetBill-Signature", signature)
            .body(body)
            .send()
            .await
            .expect("request")
            .status()
            .as_u16()
    }

    /// Posts a body signed with the current secret; returns the status.
    pub async fn send(&self, body: Vec<u8>) -> u16 {
        let sig = sign(SECRET, &body);
        self.post(body, &sig).await
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

/// A debt event for the load generator: worker `worker`'s `n`th. Each debt is created, then
/// updated: two effects per debt to check for duplicates.
pub fn load_event(n: u64, worker: u64) -> (String, Vec<u8>) {
    let id = format!("evt_{worker:08x}{n:024x}");
    let debt = format!("d{worker}_{}", n / 2);
    let (ty, at) = if n % 2 == 0 {
        ("debt.created", "2024-01-01T00:00:00Z")
    } else {
        ("debt.updated", "2024-01-01T00:01:00Z")
    };
    let body = format!(
        r#"{{"id":"{id}","type":"{ty}","created_at":"{at}","data":{{"id":"{debt}","amount":10.50,"status":"status.default.pending","seq":{n}}},"metadata":{{"company_id":"c1"}}}}"#
    );
    (id, body.into_bytes())
}

/// Senders posting unique events as fast as they can, one connection each, until stopped or
/// until their server goes away; they remember which ids were answered 2xx.
pub struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    acked: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    /// Answers of 503 so far.
    pub unavailable: std::sync::Arc<std::sync::atomic::AtomicU64>,
    tasks: Vec<JoinHandle<()>>,
}

impl Load {
    /// Starts one sender per worker number (different numbers send different ids).
    pub fn start(client: &reqwest::Client, base: &str, workers: std::ops::Range<u64>) -> Load {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let unavailable = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let tasks = workers
            .map(|w| {
                let client = client.clone();
                let url = format!("{base}{PATH}");
                let (stop, acked, unavailable) = (stop.clone(), acked.clone(), unavailable.clone());
                tokio::spawn(async move {
                    let mut n = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let (id, body) = load_event(n, w);
                        n += 1;
                        let sig = sign(SECRET, &body);
                        match client
                            .post(&url)
                            .header("X-GetBill-Signature", sig)
                            .body(body)
                            .send()
                            .await
                        {
                            Ok(r) if r.status().is_success() => acked.lock().unwrap().push(id),
                            Ok(r) => {
                                assert_eq!(r.status(), 503, "only 503 may refuse a signed event");
                                unavailable.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(_) => break,
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            acked,
            unavailable,
            tasks,
        }
    }

    pub fn acked(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    pub async fn wait_acked(&self, n: usize) {
        wait_until(
            &format!("{n} acknowledged events"),
            Duration::from_secs(60),
            || self.acked() >= n,
        )
        .await;
    }

    /// Stops the senders; returns every id answered 2xx.
    pub async fn finish(self) -> Vec<String> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in self.tasks {
            t.await.expect("sender");
        }
        let acked = self.acked.lock().unwrap().clone();
        acked
    }
}

/// Runs the binary on `config` with `args`; returns (exit code, stdout, stderr).
pub fn hooksync(
    config: &std::path::Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hooksync"))
        .arg("--config")
        .arg(config)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub fn json_of(config: &std::path::Path, args: &[&str]) -> serde_json::Value {
    let (code, out, err) = hooksync(config, args, &[]);
    assert_eq!(code, 0, "{args:?}: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?} printed no JSON ({e}): {out}"))
}
