//! The inbox: durable, deduplicated storage of authentic events with group commit.
//!
//! Requests hand their event to one store thread and wait. The thread takes everything that is
//! waiting (up to `batch_max`), inserts it in one transaction with one sync, and only then
//! answers each request, so a 2xx always follows a durable commit and the cost of the sync is
//! shared by the whole batch. On SQLite, which has one writer, the same thread runs the
//! projector a chunk at a time between batches, so the two never wait on each other's locks.
//! On PostgreSQL the projector has a thread and connection of its own: a chunk (a few
//! milliseconds) then never holds up a batch, and the store thread's wait for each commit's
//! flush is not the projector's.

use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::event::{EventStatus, NewEvent};
use crate::metrics::Metrics;
use crate::outage::Outage;
use crate::store::{Backend, Db, DbOptions, Durability, Stmt, StoreError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    New,
    Duplicate,
}

#[derive(Debug, thiserror::Error)]
pub enum InboxError {
    #[error("too many events waiting for a commit")]
    Overloaded,
    #[error("the store cannot commit: {0}")]
    Unavailable(String),
    #[error("no commit within the deadline")]
    Timeout,
    #[error("the inbox is shut down")]
    Closed,
}

type Reply = oneshot::Sender<Result<Stored, InboxError>>;

/// Work another module runs on the writer's connection (the media fetcher's reads and
/// writes); it hands its own result back and returns only whether the database failed.
type Task = Box<dyn FnOnce(&mut Db) -> Result<(), StoreError> + Send>;

enum Command {
    Ingest(Box<NewEvent>, Reply),
    Ping(oneshot::Sender<Result<(), InboxError>>),
    Task(Task, oneshot::Sender<Result<(), InboxError>>),
}

/// The request side of the inbox: cheap to clone, one per connection.
#[derive(Clone)]
pub struct Inbox {
    tx: SyncSender<Command>,
    commit_timeout: Duration,
}

pub struct InboxConfig {
    pub db: DbOptions,
    pub batch_max: usize,
    pub queue_capacity: usize,
    pub commit_timeout: Duration,
    pub poll_interval: Duration,
    /// The nice value the store thread asks for (`database.writer_nice`).
    pub writer_nice: i32,
}

impl Inbox {
    /// Starts the store thread on an open, migrated database. `work` is what the thread runs
    /// between batches (the projector on SQLite, which has one writer); `beside` is a thread
    /// that works on a connection of its own (the projector on PostgreSQL), woken when new events
    /// are stored and joined when this one stops.
    pub fn start(
        db: Db,
        cfg: InboxConfig,
        work: Option<Box<dyn Background>>,
        beside: Option<Beside>,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<(Inbox, JoinHandle<()>)> {
        let (tx, rx) = mpsc::sync_channel(cfg.queue_capacity);
        let worker = StoreThread {
            db: Some(db),
            opts: cfg.db,
            reconnect: Reconnect::new(cfg.poll_interval),
            writes: Outage::new("database writes"),
            rx,
            projector: work,
            beside,
            batch_max: cfg.batch_max,
            poll: cfg.poll_interval,
            metrics,
            commits: 0,
            commit_failed: None,
        };
        let nice = cfg.writer_nice;
        let handle = std::thread::Builder::new()
            .name("hooksync-store".into())
            .spawn(move || {
                set_own_nice(nice);
                worker.run()
            })?;
        Ok((
            Inbox {
                tx,
                commit_timeout: cfg.commit_timeout,
            },
            handle,
        ))
    }

    /// Stores one event; returns once it is durable (or known already).
    pub async fn submit(&self, event: NewEvent) -> Result<Stored, InboxError> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Ingest(Box::new(event), tx))?;
        self.wait(rx).await?
    }

    /// Runs `work` on the single writer's connection, between batches, and returns what it
    /// returned. On SQLite every write must go through this thread; `work` should be short,
    /// as the batches wait for it.
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Db) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, InboxError> {
        let (done_tx, done_rx) = oneshot::channel();
        let (tx, rx) = oneshot::channel();
        let task: Task = Box::new(move |db| {
            let _ = done_tx.send(work(db)?);
            Ok(())
        });
        self.send(Command::Task(task, tx))?;
        self.wait(rx).await??;
        done_rx.await.map_err(|_| InboxError::Closed)
    }

    /// Succeeds when the database takes a write now.
    pub async fn ping(&self) -> Result<(), InboxError> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Ping(tx))?;
        self.wait(rx).await?
    }

    fn send(&self, cmd: Command) -> Result<(), InboxError> {
        self.tx.try_send(cmd).map_err(|e| match e {
            TrySendError::Full(_) => InboxError::Overloaded,
            TrySendError::Disconnected(_) => InboxError::Closed,
        })
    }

    async fn wait<T>(&self, rx: oneshot::Receiver<T>) -> Result<T, InboxError> {
        match tokio::time::timeout(self.commit_timeout, rx).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(_)) => Err(InboxError::Closed),
            Err(_) => Err(InboxError::Timeout),
        }
    }
}

/// Work the store thread does on its own connection between batches, a bounded step at a time
/// so that a waiting sender is held up by one step at most.
pub trait Background: Send {
    fn step(&mut self, db: &mut Db) -> Step;
    /// The thread could not open a connection for the step.
    fn cannot_connect(&mut self, e: &StoreError);
}

/// How one step of background work went.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Work was done; there may be more.
    More,
    /// Nothing to do.
    Idle,
    /// Rolled back: the connection is dropped and the step tried again at the next poll.
    Failed,
}

/// A thread working beside the store thread on a connection of its own: the sender that wakes
/// it, and the thread to join.
pub type Beside = (SyncSender<()>, JoinHandle<()>);

struct StoreThread {
    db: Option<Db>,
    opts: DbOptions,
    reconnect: Reconnect,
    /// Commits, pings and media reads and writes failing while the database is away.
    writes: Outage,
    rx: Receiver<Command>,
    /// What runs on this thread between batches (the projector, on SQLite).
    projector: Option<Box<dyn Background>>,
    /// A thread working beside this one (the projector, on PostgreSQL): told when new events
    /// are queued, and joined when this thread stops.
    beside: Option<Beside>,
    batch_max: usize,
    poll: Duration,
    metrics: Arc<Metrics>,
    commits: u64,
    /// When the last failed ingest commit failed, until one succeeds: readiness follows the
    /// commits senders wait for, not only the heartbeat's one-row write (on a full disk the
    /// heartbeat can still fit where a batch does not).
    commit_failed: Option<(Instant, String)>,
}

/// How long a failed ingest commit keeps `/readyz` failing when nothing commits after it: the
/// `Retry-After` a refused sender is given.
const NOT_READY_AFTER_FAILED_COMMIT: Duration = Duration::from_secs(5);

/// Spaces out connection attempts after one fails: 50 ms, doubling up to the poll interval.
/// While the database is away, events are answered 503 at once instead of every batch trying
/// to connect (thousands of attempts a second under load, each costing a PostgreSQL that is
/// starting up a process of its own).
struct Reconnect {
    max: Duration,
    wait: Duration,
    /// Until when no attempt is made, and why the last one failed.
    held: Option<(Instant, String)>,
}

impl Reconnect {
    const FIRST: Duration = Duration::from_millis(50);

    fn new(max: Duration) -> Self {
        Self {
            max: max.max(Self::FIRST),
            wait: Self::FIRST,
            held: None,
        }
    }

    fn connect(&mut self, opts: &DbOptions, now: Instant) -> Result<Db, StoreError> {
        if let Some((until, why)) = &self.held {
            if now < *until {
                return Err(StoreError::Connect(why.clone()));
            }
        }
        match Db::connect(opts) {
            Ok(db) => {
                self.held = None;
                self.wait = Self::FIRST;
                Ok(db)
            }
            Err(e) => {
                let why = match &e {
                    StoreError::Connect(m) => m.clone(),
                    other => other.to_string(),
                };
                self.held = Some((now + self.wait, why));
                self.wait = (self.wait * 2).min(self.max);
                Err(e)
            }
        }
    }
}

/// Commits between two checkpoints finished by the writer itself.
const CHECKPOINT_EVERY: u64 = 512;

/// Finishes a checkpoint from the writer's connection after every [`CHECKPOINT_EVERY`]th
/// commit (`commits` counts them, the one just made included), as the store thread does (the
/// benchmark's commits follow the same rule, through `testkit`).
pub(crate) fn checkpoint_if_due(db: &mut Db, commits: u64) -> Result<(), StoreError> {
    if commits % CHECKPOINT_EVERY == 0 {
        db.finish_checkpoint()
    } else {
        Ok(())
    }
}

const INSERT_EVENTS: &str = "INSERT INTO events (source, provider, event_id, event_type, \
     occurred_at, rank, received_at, tenant, payload, raw_body, headers, status, last_error, time_note) VALUES ";
/// The values one event binds: one for each column `INSERT_EVENTS` names, in `bind_event` order.
pub const EVENT_WIDTH: usize = 14;

/// One event's row of placeholders in a `VALUES` list.
fn event_row() -> &'static str {
    static ROW: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ROW.get_or_init(|| crate::store::marks(EVENT_WIDTH))
}

/// The largest batch PostgreSQL takes in its one statement (`database.batch_max` may not be
/// more).
pub const MAX_BATCH: usize = crate::store::rows_per_statement(EVENT_WIDTH, 0);
const _: () = assert!(MAX_BATCH * EVENT_WIDTH <= crate::store::MAX_BINDS && MAX_BATCH >= 2_000);
const ON_CONFLICT: &str = " ON CONFLICT (source, event_id) DO NOTHING";

/// What the configuration asks of the inbox that it cannot give.
pub fn check(cfg: &crate::config::DatabaseConfig) -> Vec<String> {
    let mut problems = Vec::new();
    if cfg.batch_max > MAX_BATCH {
        problems.push(format!(
            "database.batch_max: at most {MAX_BATCH} (on PostgreSQL a batch is one statement of {EVENT_WIDTH} values per event)"
        ));
    }
    problems
}

/// Binds one event's values in `INSERT_EVENTS`' column order.
fn bind_event<'a>(s: Stmt<'a>, ev: &'a NewEvent) -> Stmt<'a> {
    s.text(&ev.source)
        .text(ev.provider)
        .text(&ev.event_id)
        .opt_text(ev.event_type.as_deref())
        .time(ev.occurred_at)
        .int(ev.rank)
        .time(ev.received_at)
        .opt_text(ev.tenant.as_deref())
        .opt_json(ev.payload.as_deref())
        .opt_blob(ev.raw_body.as_deref())
        .opt_text(ev.headers.as_deref())
        .text(ev.status.as_str())
        .opt_text(ev.last_error.as_deref())
        .opt_text(ev.time_note.as_deref())
}

#[derive(diesel::QueryableByName)]
struct Inserted {
    #[diesel(sql_type = diesel::sql_types::Text)]
    source: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    event_id: String,
}

/// What becomes of an event the database refused outright (it should never happen: the
/// envelope already keeps out what a backend cannot store). It is kept the way an unreadable
/// body is, so the sender is answered and the bytes are not lost.
fn refused(ev: &NewEvent, why: &StoreError) -> NewEvent {
    let bytes = ev
        .raw_body
        .clone()
        .or_else(|| ev.payload.as_ref().map(|p| p.clone().into_bytes()))
        .unwrap_or_default();
    NewEvent::invalid(
        ev.source.clone(),
        ev.provider,
        bytes,
        ev.received_at,
        format!("the database refused the event: {why}"),
    )
}

/// Asks for `nice` for the calling thread (Linux keeps a nice value per thread).
///
/// The store thread is on the path of every acknowledgement, and under load it waited for a
/// CPU behind the HTTP side that feeds it (on PostgreSQL ~22% of the time against ~14% on a
/// CPU). A negative value needs `LimitNICE=` (the systemd unit sets it) or `CAP_SYS_NICE`;
/// refused, the thread keeps the process's priority, which only costs throughput.
fn set_own_nice(nice: i32) {
    if nice == 0 {
        return;
    }
    match rustix::process::setpriority_process(None, nice) {
        Ok(()) => tracing::debug!(nice, "store thread priority set"),
        Err(e) => tracing::info!(
            nice,
            error = %e,
            "store thread keeps the process's priority (allow it with LimitNICE= or CAP_SYS_NICE)"
        ),
    }
}

impl StoreThread {
    fn run(mut self) {
        // Work left queued by a previous run is picked up at once.
        let mut project = self.projector.is_some();
        loop {
            let first = if project {
                match self.rx.try_recv() {
                    Ok(c) => Some(c),
                    Err(TryRecvError::Empty) => None,
                    Err(TryRecvError::Disconnected) => break,
                }
            } else {
                match self.rx.recv_timeout(self.poll) {
                    Ok(c) => Some(c),
                    Err(RecvTimeoutError::Timeout) => {
                        project = self.projector.is_some();
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            };
            match first {
                Some(cmd) => {
                    let mut batch = vec![cmd];
                    while batch.len() < self.batch_max {
                        match self.rx.try_recv() {
                            Ok(c) => batch.push(c),
                            Err(_) => break,
                        }
                    }
                    if self.handle(batch) {
                        project = self.projector.is_some();
                        if let Some((wake, _)) = &self.beside {
                            // Full means it has been told already.
                            let _ = wake.try_send(());
                        }
                    }
                }
                None => project = self.project_chunk(),
            }
        }
        if let Some((wake, handle)) = self.beside.take() {
            drop(wake);
            if handle.join().is_err() {
                tracing::error!("projector thread panicked");
            }
        }
        tracing::info!("store thread stopped");
    }

    /// Runs one projector chunk; true while there may be more to do.
    fn project_chunk(&mut self) -> bool {
        let Some(mut work) = self.projector.take() else {
            return false;
        };
        let chunk = match self.connection() {
            Ok(db) => work.step(db),
            Err(e) => {
                work.cannot_connect(&e);
                Step::Failed
            }
        };
        self.projector = Some(work);
        if chunk == Step::More {
            // The projector's commits grow the write-ahead log too.
            self.committed();
        }
        if chunk == Step::Failed {
            self.db = None;
        }
        chunk == Step::More
    }

    /// Commits one batch and answers its requests; true when new queued events were stored.
    fn handle(&mut self, batch: Vec<Command>) -> bool {
        let mut events = Vec::with_capacity(batch.len());
        let mut pings = Vec::new();
        let mut tasks = Vec::new();
        for cmd in batch {
            match cmd {
                Command::Ingest(ev, reply) => events.push((ev, reply)),
                Command::Ping(reply) => pings.push(reply),
                Command::Task(task, reply) => tasks.push((task, reply)),
            }
        }
        let mut queued_new = false;
        if !events.is_empty() {
            match self.commit(&events) {
                Ok(results) => {
                    self.writes.recover();
                    self.commit_failed = None;
                    self.metrics.commit_batch.observe(events.len() as f64);
                    for ((ev, reply), new) in events.into_iter().zip(results) {
                        if new {
                            queued_new |= ev.status == EventStatus::Queued;
                            if ev.time_note.is_some() {
                                self.metrics.time_replaced.inc();
                            }
                            self.metrics
                                .stored
                                .with_label_values(&[ev.status.as_str()])
                                .inc();
                        }
                        let _ = reply.send(Ok(if new { Stored::New } else { Stored::Duplicate }));
                    }
                }
                Err(e) => {
                    self.metrics.db_error("commit");
                    self.writes.fail(&e);
                    let msg = e.to_string();
                    self.commit_failed = Some((Instant::now(), msg.clone()));
                    for (_, reply) in events {
                        let _ = reply.send(Err(InboxError::Unavailable(msg.clone())));
                    }
                }
            }
        }
        for (task, reply) in tasks {
            let r = self.connection().and_then(task);
            let _ = reply.send(self.checked(r));
        }
        for reply in pings {
            let r = match &self.commit_failed {
                Some((at, why)) if at.elapsed() < NOT_READY_AFTER_FAILED_COMMIT => {
                    Err(InboxError::Unavailable(why.clone()))
                }
                _ => {
                    let r = self.connection().and_then(Db::heartbeat);
                    self.checked(r)
                }
            };
            let _ = reply.send(r);
        }
        queued_new
    }

    /// Turns a store error into the inbox's, dropping the connection: the next command opens
    /// a fresh one, which is how the thread recovers once the database is back.
    fn checked<T>(&mut self, r: Result<T, StoreError>) -> Result<T, InboxError> {
        match r {
            Ok(v) => {
                self.writes.recover();
                Ok(v)
            }
            Err(e) => {
                self.writes.fail(&e);
                self.db = None;
                Err(InboxError::Unavailable(e.to_string()))
            }
        }
    }

    fn connection(&mut self) -> Result<&mut Db, StoreError> {
        if self.db.is_none() {
            self.db = Some(self.reconnect.connect(&self.opts, Instant::now())?);
        }
        self.db
            .as_mut()
            .ok_or_else(|| StoreError::Connect("no connection".into()))
    }

    fn commit(&mut self, events: &[(Box<NewEvent>, Reply)]) -> Result<Vec<bool>, StoreError> {
        let db = self.connection()?;
        let evs: Vec<&NewEvent> = events.iter().map(|(ev, _)| ev.as_ref()).collect();
        let mut result = store_batch(db, &evs);
        if let Err(e) = &result {
            // A batch the database refused while it takes other writes holds an event it
            // will not take; stored one at a time, the others are not held back by it.
            if db.takes_writes(e) {
                tracing::warn!(error = %e, "batch refused; storing its events one at a time");
                result = db.transaction(Durability::Synced, |db| insert_one_by_one(db, &evs));
            }
        }
        match &result {
            // A fresh connection costs little next to a commit that failed; it also clears
            // whatever state the failure left behind on a PostgreSQL session.
            Err(_) => self.db = None,
            Ok(_) => self.committed(),
        }
        result
    }

    /// Counts a commit of this connection's, and finishes a checkpoint when one is due, so
    /// the write-ahead log stays bounded while serving.
    fn committed(&mut self) {
        self.commits += 1;
        let commits = self.commits;
        if let Some(Err(e)) = self.db.as_mut().map(|db| checkpoint_if_due(db, commits)) {
            tracing::debug!(error = %e, "checkpoint skipped");
        }
    }
}

/// Stores a batch durably in one commit, skipping known ids; says for each event whether it is
/// new. The store thread's commit (the benchmark times it on its own, through `testkit`).
pub(crate) fn store_batch(db: &mut Db, evs: &[&NewEvent]) -> Result<Vec<bool>, StoreError> {
    match db.backend() {
        // One statement is its own transaction, committed with `synchronous_commit = on`
        // before the server answers: one round trip instead of three.
        Backend::Postgres => insert_batch(db, evs),
        Backend::Sqlite => db.transaction(Durability::Synced, |db| insert_batch(db, evs)),
    }
}

/// Inserts a batch, skipping known ids; says for each event whether it is new.
///
/// SQLite takes one short statement per event (it runs in-process; what costs is the sync).
/// PostgreSQL takes the batch in one statement, in key order: two instances inserting
/// overlapping batches then wait on each other's rows in the same order and cannot deadlock,
/// and the one that waited sees the other's row and skips it once that commits.
fn insert_batch(db: &mut Db, evs: &[&NewEvent]) -> Result<Vec<bool>, StoreError> {
    match db.backend() {
        Backend::Sqlite => {
            let sql = insert_one_sql();
            let mut out = Vec::with_capacity(evs.len());
            for ev in evs {
                out.push(db.exec(bind_event(Stmt::new(sql), ev))? == 1);
            }
            Ok(out)
        }
        Backend::Postgres => {
            let mut order: Vec<usize> = (0..evs.len()).collect();
            order.sort_by(|&a, &b| {
                (&*evs[a].source, &evs[a].event_id).cmp(&(&*evs[b].source, &evs[b].event_id))
            });
            let rows = vec![event_row(); evs.len()].join(", ");
            let sql = format!("{INSERT_EVENTS}{rows}{ON_CONFLICT} RETURNING source, event_id");
            let mut stmt = Stmt::new(&sql);
            for &i in &order {
                stmt = bind_event(stmt, evs[i]);
            }
            let inserted: std::collections::HashSet<(String, String)> = db
                .load::<Inserted>(stmt)?
                .into_iter()
                .map(|r| (r.source, r.event_id))
                .collect();
            // The first of several equal ids in one batch is the one stored.
            let mut seen = std::collections::HashSet::new();
            Ok(evs
                .iter()
                .map(|ev| {
                    let key = (ev.source.to_string(), ev.event_id.clone());
                    inserted.contains(&key) && seen.insert(key)
                })
                .collect())
        }
    }
}

/// The slow path after a refused batch: each event in a savepoint of its own; one the
/// database refuses is stored as `invalid` (see [`refused`]).
fn insert_one_by_one(db: &mut Db, evs: &[&NewEvent]) -> Result<Vec<bool>, StoreError> {
    let sql = insert_one_sql();
    let mut out = Vec::with_capacity(evs.len());
    for ev in evs {
        db.batch("SAVEPOINT event")?;
        let n = match db.exec(bind_event(Stmt::new(sql), ev)) {
            Ok(n) => n,
            Err(e) if e.connection_lost() => return Err(e),
            // Tried once more first: a passing failure (a deadlock between two instances, a
            // lock) clears on a second try, and the error does not say which it was. A
            // database that takes no write at all fails the stand-in too, and so the batch.
            Err(_) => match db
                .batch("ROLLBACK TO event")
                .and_then(|()| db.exec(bind_event(Stmt::new(sql), ev)))
            {
                Ok(n) => n,
                Err(e) if e.connection_lost() => return Err(e),
                Err(e) => {
                    db.batch("ROLLBACK TO event")?;
                    tracing::error!(source = %ev.source, error = %e, "event refused by the database; kept as invalid");
                    let stand_in = refused(ev, &e);
                    db.exec(bind_event(Stmt::new(sql), &stand_in))?
                }
            },
        };
        db.batch("RELEASE event")?;
        out.push(n == 1);
    }
    Ok(out)
}

fn insert_one_sql() -> &'static str {
    static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SQL.get_or_init(|| format!("{INSERT_EVENTS}{}{ON_CONFLICT}", event_row()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::DbUrl;

    #[test]
    fn an_event_row_has_a_value_for_every_column() {
        let columns = INSERT_EVENTS
            .split_once('(')
            .and_then(|(_, rest)| rest.split_once(')'))
            .map(|(names, _)| names.split(',').count());
        assert_eq!(columns, Some(EVENT_WIDTH));
        assert_eq!(event_row().matches('?').count(), EVENT_WIDTH);
    }

    #[test]
    fn after_a_failed_connection_the_next_attempt_waits_and_the_wait_doubles() {
        let dir = tempfile::tempdir().unwrap();
        // A file where the database's directory should be: connecting fails until it goes.
        let blocker = dir.path().join("state");
        std::fs::write(&blocker, b"").unwrap();
        let opts = DbOptions {
            url: DbUrl::Sqlite(blocker.join("hooksync.db")),
            busy_timeout_ms: 100,
        };
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut r = Reconnect::new(Duration::from_millis(150));

        let first = r.connect(&opts, at(0)).err().expect("the path is blocked");
        assert!(first.to_string().contains("cannot create"), "{first}");
        assert!(r.connect(&opts, at(50)).is_err(), "tried again after 50 ms");
        // Two failures: the next attempt waits 100 ms, however soon the database is back.
        std::fs::remove_file(&blocker).unwrap();
        let held = r.connect(&opts, at(149)).err().expect("held back");
        assert_eq!(
            held.to_string(),
            first.to_string(),
            "the wait answers with the last failure"
        );
        assert!(r.connect(&opts, at(150)).is_ok(), "tried at 150 ms");

        // A success starts the waits over, and they stop doubling at the maximum.
        std::fs::remove_dir_all(&blocker).unwrap();
        std::fs::write(&blocker, b"").unwrap();
        assert!(r.connect(&opts, at(1_000)).is_err());
        assert!(r.connect(&opts, at(1_049)).is_err());
        assert!(r.connect(&opts, at(1_050)).is_err(), "50 ms again");
        assert!(r.connect(&opts, at(1_150)).is_err(), "then 100 ms");
        std::fs::remove_file(&blocker).unwrap();
        assert!(r.connect(&opts, at(1_299)).is_err(), "then 150 ms, not 200");
        assert!(r.connect(&opts, at(1_300)).is_ok());
    }
}
