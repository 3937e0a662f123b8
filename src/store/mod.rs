//! The database: which backend the URL names, connecting with durable settings, the embedded
//! migrations, and the few statements the inbox and the projector run.
//!
//! Everything above this module speaks to `Db`; backends differ only inside it.

pub mod rows;
mod stmt;

use std::path::PathBuf;

use diesel::connection::SimpleConnection;
use diesel::pg::{Pg, PgConnection};
use diesel::sqlite::{Sqlite, SqliteConnection};
use diesel::{Connection, QueryableByName, RunQueryDsl};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

pub use crate::config::redact_url;
pub use stmt::{marks, rows_per_statement, Bind, Stmt, MAX_BINDS};

const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");
const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");

/// The advisory lock that serialises migrations when several instances start at once.
const MIGRATION_LOCK: i64 = 0x686f_6f6b_7379_6e63; // "hooksync"

/// libpq's messages run over several lines ("connection refused\n\tIs the server running
/// ..."); one error is one log line.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot connect to the database: {}", one_line(.0))]
    Connect(String),
    #[error("database error: {}", one_line(&.0.to_string()))]
    Query(#[from] diesel::result::Error),
    #[error("migration failed: {0}")]
    Migration(String),
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

impl StoreError {
    /// True when the connection is gone (or was never made): the work may succeed on a fresh
    /// one, and nothing can be learnt about the work from this one. This is the one class
    /// diesel's error kinds name; a deadlock or a full disk is `Unknown` (diesel keeps no
    /// other SQLSTATE), so callers that must tell a passing failure from one the work causes
    /// ask the database for a write afterwards ([`Db::takes_writes`]), or bound their tries,
    /// and never read the message.
    pub fn connection_lost(&self) -> bool {
        use diesel::result::{DatabaseErrorKind as K, Error};
        matches!(
            self,
            StoreError::Connect(_)
                | StoreError::Query(Error::DatabaseError(
                    K::ClosedConnection | K::UnableToSendCommand,
                    _
                ))
        )
    }
}

/// Which SQL dialect a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// An expression reading the instant `expr` back as stored text (see `stamp`): SQLite keeps
    /// that text as it is; PostgreSQL formats its `timestamptz` the same way, so positions built
    /// from it compare alike on both.
    pub fn time_text(self, expr: &str) -> String {
        match self {
            Backend::Sqlite => expr.to_owned(),
            Backend::Postgres => {
                format!("to_char({expr} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")
            }
        }
    }

    /// An expression reading a JSON column back as text.
    pub fn json_text(self, expr: &str) -> String {
        match self {
            Backend::Sqlite => expr.to_owned(),
            Backend::Postgres => format!("{expr}::text"),
        }
    }
}

/// A statement text that depends on the backend, built once per backend on first use.
pub struct Sql {
    build: fn(Backend) -> String,
    texts: [std::sync::OnceLock<String>; 2],
}

impl Sql {
    pub const fn new(build: fn(Backend) -> String) -> Self {
        Self {
            build,
            texts: [std::sync::OnceLock::new(), std::sync::OnceLock::new()],
        }
    }

    pub fn get(&self, backend: Backend) -> &str {
        self.texts[backend as usize].get_or_init(|| (self.build)(backend))
    }
}

/// Where the data lives, read from `database.url`.
#[derive(Clone, PartialEq, Eq)]
pub enum DbUrl {
    Sqlite(PathBuf),
    /// A libpq connection URL; it may hold a password, so it is never printed as it is.
    Postgres(String),
}

impl std::fmt::Debug for DbUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DbUrl::Sqlite(p) => f.debug_tuple("Sqlite").field(p).finish(),
            DbUrl::Postgres(u) => f.debug_tuple("Postgres").field(&redact_url(u)).finish(),
        }
    }
}

impl DbUrl {
    pub fn parse(url: &str) -> Result<DbUrl, String> {
        let url = url.trim();
        if url.is_empty() {
            return Err("must not be empty".into());
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(DbUrl::Postgres(with_connect_timeout(url)));
        }
        let path = if let Some(rest) = url.strip_prefix("sqlite://") {
            rest
        } else if let Some(rest) = url.strip_prefix("sqlite:") {
            rest
        } else if url.contains("://") {
            return Err(format!(
                "unknown scheme in {url:?}: use sqlite://PATH or postgres://..."
            ));
        } else {
            url
        };
        let path = path.split('?').next().unwrap_or_default();
        if path.is_empty() || path == ":memory:" {
            return Err("an SQLite URL needs a file path (events must survive a restart)".into());
        }
        Ok(DbUrl::Sqlite(PathBuf::from(path)))
    }

    pub fn backend(&self) -> Backend {
        match self {
            DbUrl::Sqlite(_) => Backend::Sqlite,
            DbUrl::Postgres(_) => Backend::Postgres,
        }
    }
}

/// A lost server must not hang a reconnect for the operating system's TCP timeout: libpq waits
/// forever unless told otherwise.
fn with_connect_timeout(url: &str) -> String {
    if url.contains("connect_timeout=") {
        return url.to_owned();
    }
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}connect_timeout=5")
}

#[derive(Debug, Clone)]
pub struct DbOptions {
    pub url: DbUrl,
    /// How long a statement waits for a lock held by another process.
    pub busy_timeout_ms: u64,
}

/// One open connection.
pub enum Db {
    Sqlite(SqliteConnection),
    Pg(PgConnection),
}

/// How a transaction must reach the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Synced before the commit returns: whatever a sender was told is stored.
    Synced,
    /// Written, synced with the next synced commit. Only for work that can be redone from the
    /// event log, such as projecting.
    Deferred,
}

#[derive(Debug, QueryableByName)]
pub struct CountRow {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub n: i64,
}

impl Db {
    /// Opens a connection with the settings durability depends on: WAL with `synchronous=FULL`
    /// makes a commit reach the disk before it returns.
    pub fn connect(opts: &DbOptions) -> Result<Db, StoreError> {
        match &opts.url {
            DbUrl::Sqlite(path) => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(|e| {
                        StoreError::Connect(format!("cannot create {}: {e}", dir.display()))
                    })?;
                }
                let url = path.to_string_lossy();
                let mut c = SqliteConnection::establish(&url)
                    .map_err(|e| StoreError::Connect(e.to_string()))?;
                // Checkpoints run on their own connection (`Checkpointer`), never inside a commit
                // a sender is waiting for.
                c.batch_execute(&format!(
                    "PRAGMA busy_timeout = {}; PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
                     PRAGMA foreign_keys = ON; PRAGMA temp_store = MEMORY; PRAGMA cache_size = -16384; \
                     PRAGMA wal_autocheckpoint = 0; PRAGMA journal_size_limit = 67108864;",
                    opts.busy_timeout_ms
                ))?;
                Ok(Db::Sqlite(c))
            }
            DbUrl::Postgres(url) => {
                let mut c =
                    PgConnection::establish(url).map_err(|e| StoreError::Connect(e.to_string()))?;
                // `synchronous_commit = on` is what makes an acknowledged event durable; it is
                // set here so a server default of `off` cannot weaken it.
                // Ingest statements are prepared once and run thousands of times: one generic
                // plan each (projector transactions plan afresh, see `transaction`).
                c.batch_execute(&format!(
                    "SET synchronous_commit = on; SET client_min_messages = warning; \
                     SET TIME ZONE 'UTC'; SET application_name = 'hooksync'; \
                     SET plan_cache_mode = force_generic_plan; SET lock_timeout = {}",
                    opts.busy_timeout_ms
                ))?;
                Ok(Db::Pg(c))
            }
        }
    }

    pub fn backend(&self) -> Backend {
        match self {
            Db::Sqlite(_) => Backend::Sqlite,
            Db::Pg(_) => Backend::Postgres,
        }
    }

    /// Applies the embedded migrations that are not applied yet. On PostgreSQL an advisory
    /// lock makes instances that start together take turns; the later ones find nothing to do.
    pub fn migrate(&mut self) -> Result<usize, StoreError> {
        let migration =
            |e: Box<dyn std::error::Error + Send + Sync>| StoreError::Migration(e.to_string());
        match self {
            Db::Sqlite(c) => c
                .run_pending_migrations(SQLITE_MIGRATIONS)
                .map(|v| v.len())
                .map_err(migration),
            Db::Pg(c) => {
                c.batch_execute(&format!("SELECT pg_advisory_lock({MIGRATION_LOCK})"))?;
                let applied = c
                    .run_pending_migrations(POSTGRES_MIGRATIONS)
                    .map(|v| v.len())
                    .map_err(migration);
                let unlocked =
                    c.batch_execute(&format!("SELECT pg_advisory_unlock({MIGRATION_LOCK})"));
                let applied = applied?;
                unlocked?;
                Ok(applied)
            }
        }
    }

    pub fn exec(&mut self, s: Stmt<'_>) -> Result<usize, StoreError> {
        Ok(match self {
            Db::Sqlite(c) => s.execute(c)?,
            Db::Pg(c) => s.execute(c)?,
        })
    }

    pub fn load<R>(&mut self, s: Stmt<'_>) -> Result<Vec<R>, StoreError>
    where
        R: QueryableByName<Sqlite> + QueryableByName<Pg> + 'static,
    {
        Ok(match self {
            Db::Sqlite(c) => s.load::<R>(c)?,
            Db::Pg(c) => s.load::<R>(c)?,
        })
    }

    pub fn batch(&mut self, sql: &str) -> Result<(), StoreError> {
        match self {
            Db::Sqlite(c) => c.batch_execute(sql)?,
            Db::Pg(c) => c.batch_execute(sql)?,
        }
        Ok(())
    }

    /// Runs `f` in one transaction; commits on `Ok`, rolls back on `Err`. SQLite takes the write
    /// lock up front (`BEGIN IMMEDIATE`) so a transaction never fails half-way on an upgrade.
    pub fn transaction<T, E>(
        &mut self,
        durability: Durability,
        f: impl FnOnce(&mut Db) -> Result<T, E>,
    ) -> Result<T, E>
    where
        E: From<StoreError>,
    {
        let begin = match (&self, durability) {
            (Db::Sqlite(_), Durability::Synced) => "PRAGMA synchronous = FULL; BEGIN IMMEDIATE",
            (Db::Sqlite(_), Durability::Deferred) => "PRAGMA synchronous = NORMAL; BEGIN IMMEDIATE",
            (Db::Pg(_), Durability::Synced) => "BEGIN",
            // Projector statements find rows by key in tables that may have been empty when
            // their generic plan was made (before any ANALYZE). For an empty table a scan of
            // the whole of it looks cheapest, and the table then grows by thousands of rows a
            // second; without sequential scans the plans stay index lookups.
            (Db::Pg(_), Durability::Deferred) => {
                "BEGIN; SET LOCAL synchronous_commit = off; SET LOCAL enable_seqscan = off"
            }
        };
        self.batch(begin)?;
        match f(self) {
            Ok(v) => match self.batch("COMMIT") {
                Ok(()) => Ok(v),
                Err(e) => {
                    let _ = self.batch("ROLLBACK");
                    Err(e.into())
                }
            },
            Err(e) => {
                let _ = self.batch("ROLLBACK");
                Err(e)
            }
        }
    }

    /// Completes a checkpoint from the writer's own connection, so the WAL can restart from its
    /// beginning at the next commit (see [`Checkpointer`]).
    pub fn finish_checkpoint(&mut self) -> Result<(), StoreError> {
        match self {
            Db::Sqlite(_) => self.batch("PRAGMA wal_checkpoint(PASSIVE)"),
            Db::Pg(_) => Ok(()),
        }
    }

    /// SQLite: copies the whole write-ahead log into the database and empties it. Run at start,
    /// before serving: a process killed before it checkpointed leaves its log behind, and
    /// under repeated crashes the log would only grow, and every start read more of it. True
    /// when the log is empty now (a reader in another process can hold it back).
    pub fn truncate_wal(&mut self) -> Result<bool, StoreError> {
        #[derive(QueryableByName)]
        struct Checkpoint {
            #[diesel(sql_type = diesel::sql_types::Integer)]
            busy: i32,
        }
        match self {
            Db::Sqlite(_) => {
                let r: Vec<Checkpoint> = self.load(Stmt::new("PRAGMA wal_checkpoint(TRUNCATE)"))?;
                Ok(r.first().is_some_and(|c| c.busy == 0))
            }
            Db::Pg(_) => Ok(true),
        }
    }

    /// Proves the database takes writes (for `/readyz`).
    /// Whether the database, after `e`, still takes a write (a heartbeat): then `e` came from
    /// what was being written, not from the database. A lost connection is the database's
    /// whatever a fresh one would say. Call it outside a failed transaction.
    pub fn takes_writes(&mut self, e: &StoreError) -> bool {
        !e.connection_lost() && self.heartbeat().is_ok()
    }

    pub fn heartbeat(&mut self) -> Result<(), StoreError> {
        let now = crate::stamp::Stamp::now();
        self.exec(Stmt::new("INSERT INTO hooksync_health (id, at) VALUES (1, ?) ON CONFLICT (id) DO UPDATE SET at = excluded.at").time(now))?;
        Ok(())
    }

    /// The `n` of a one-row count query (plain SQL, or a statement with binds).
    pub fn count<'a>(&mut self, query: impl Into<Stmt<'a>>) -> Result<i64, StoreError> {
        let rows: Vec<CountRow> = self.load(query.into())?;
        Ok(rows.first().map(|r| r.n).unwrap_or(0))
    }
}

/// How often the checkpointer copies WAL pages back while `serve` runs.
pub const CHECKPOINT_INTERVAL: std::time::Duration = std::time::Duration::from_millis(50);

/// Copies committed WAL pages back into an SQLite database file from a thread of its own.
///
/// A passive checkpoint never blocks the writer, so commits stay short. Under continuous
/// writes it can never finish on its own (new frames arrive while it copies), and SQLite only
/// restarts the WAL after a finished one; so the writer also calls [`Db::finish_checkpoint`]
/// every so often, which then only has the last few frames left to copy.
/// PostgreSQL needs none of this.
pub struct Checkpointer {
    stop: std::sync::mpsc::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Checkpointer {
    /// `on_failure` is called for every checkpoint that fails (for the metrics).
    pub fn start(
        opts: &DbOptions,
        interval: std::time::Duration,
        on_failure: impl Fn() + Send + 'static,
    ) -> Result<Option<Checkpointer>, StoreError> {
        if let DbUrl::Postgres(_) = opts.url {
            return Ok(None);
        }
        let mut db = Db::connect(opts)?;
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("hooksync-checkpoint".into())
            .spawn(move || {
                // A full disk fails every checkpoint, twenty a second: one line for the run.
                let mut failing = crate::outage::Outage::new("WAL checkpoints");
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(interval)
                {
                    match db.batch("PRAGMA wal_checkpoint(PASSIVE)") {
                        Ok(()) => failing.recover(),
                        Err(e) => {
                            on_failure();
                            failing.fail(&e);
                        }
                    }
                }
                // Leave a small WAL behind on a clean stop.
                let _ = db.batch("PRAGMA wal_checkpoint(TRUNCATE)");
            })
            .map_err(|e| StoreError::Connect(format!("cannot start the checkpoint thread: {e}")))?;
        Ok(Some(Checkpointer { stop, thread }))
    }

    pub fn stop(self) {
        drop(self.stop);
        let _ = self.thread.join();
    }
}

/// Opens the database and brings its schema up to date: what `migrate` and `serve` do first.
pub fn open_and_migrate(opts: &DbOptions) -> Result<Db, StoreError> {
    let mut db = Db::connect(opts)?;
    let n = db.migrate()?;
    if n > 0 {
        tracing::info!(applied = n, "database migrations applied");
    }
    if !db.truncate_wal()? {
        tracing::info!("the write-ahead log could not be emptied at start (another process reads the database); it is checkpointed while serving");
    }
    Ok(db)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_is_one_line() {
        // What libpq says when nothing listens on the port.
        let e = StoreError::Connect(
            "connection to server at \"127.0.0.1\", port 5432 failed: Connection refused\n\t\
             Is the server running on that host and accepting TCP/IP connections?\n"
                .into(),
        );
        assert_eq!(
            e.to_string(),
            "cannot connect to the database: connection to server at \"127.0.0.1\", port 5432 \
             failed: Connection refused Is the server running on that host and accepting TCP/IP \
             connections?"
        );
    }

    #[test]
    fn urls_pick_the_backend() {
        assert_eq!(
            DbUrl::parse("sqlite://hooksync.db").unwrap(),
            DbUrl::Sqlite("hooksync.db".into())
        );
        assert_eq!(
            DbUrl::parse("sqlite:///var/lib/h.db").unwrap(),
            DbUrl::Sqlite("/var/lib/h.db".into())
        );
        assert_eq!(
            DbUrl::parse("data/h.db").unwrap(),
            DbUrl::Sqlite("data/h.db".into())
        );
        assert_eq!(
            DbUrl::parse("postgres://h:pw@127.0.0.1:5432/db").unwrap(),
            DbUrl::Postgres("postgres://h:pw@127.0.0.1:5432/db?connect_timeout=5".into())
        );
        assert_eq!(
            DbUrl::parse("postgresql://127.0.0.1/db?sslmode=disable&connect_timeout=2").unwrap(),
            DbUrl::Postgres("postgresql://127.0.0.1/db?sslmode=disable&connect_timeout=2".into())
        );
        assert!(!format!(
            "{:?}",
            DbUrl::parse("postgres://h:pw@127.0.0.1/db").unwrap()
        )
        .contains("pw"));
        assert_eq!(
            redact_url("postgres://u:pw@h/db?password=x&sslmode=disable"),
            "postgres://***@h/db?password=***&sslmode=disable"
        );
        assert!(DbUrl::parse("sqlite://:memory:").is_err());
        assert!(DbUrl::parse("mysql://x").is_err());
        assert!(DbUrl::parse("").is_err());
    }

    #[test]
    fn statements_check_their_bind_count() {
        let dir = tempfile::tempdir().unwrap();
        let opts = DbOptions {
            url: DbUrl::Sqlite(dir.path().join("t.db")),
            busy_timeout_ms: 100,
        };
        let mut db = open_and_migrate(&opts).unwrap();
        assert!(db.exec(Stmt::new("SELECT ?")).is_err());
        assert!(db.exec(Stmt::new("SELECT 1").int(1)).is_err());
        assert_eq!(db.count("SELECT COUNT(*) AS n FROM events").unwrap(), 0);
        db.heartbeat().unwrap();
    }
}
