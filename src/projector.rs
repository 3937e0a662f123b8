//! The projector: applies queued events in the order they happened, a bounded chunk at a
//! time. On SQLite it runs on the store thread between ingest batches, so a waiting sender is
//! never held up by more than one chunk; on PostgreSQL on a thread and connection of its own
//! ([`spawn_beside`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::sync::Arc;
use std::time::Duration;

use crate::inbox::{Background, Beside, Step};
use crate::metrics::Metrics;
use crate::outage::SharedOutage;
use crate::projection::{Mode, Outcome, ProjectError, QueuedEvent, RowCache, Tx};
use crate::providers::Provider;
use crate::stamp::Stamp;
use crate::store::{
    marks, rows_per_statement, Backend, Db, DbOptions, Durability, Sql, Stmt, StoreError,
};
use diesel::QueryableByName;

/// The chunk size: `projector.batch`, or one for the backend. On SQLite a chunk runs on the
/// store thread between ingest batches, so it bounds how long a waiting sender is held up: 32.
/// On PostgreSQL the projector has a thread and connection of its own and a chunk costs about
/// seven round trips whatever its size, so larger chunks drain a backlog faster: 128, where the
/// drain gains most of what larger chunks give while a sender's p99 under load stays as at 32
/// (docs/benchmarks.md).
pub fn chunk_size(cfg: &crate::config::ProjectorConfig, backend: Backend) -> usize {
    cfg.batch.unwrap_or(match backend {
        Backend::Sqlite => 32,
        Backend::Postgres => 128,
    })
}

pub struct Projector {
    providers: HashMap<String, Arc<dyn Provider>>,
    batch: i64,
    metrics: Arc<Metrics>,
    /// Told when projected events leave media to fetch, so the fetcher starts at once.
    media_wake: Option<Arc<tokio::sync::Notify>>,
    /// Events that cannot be applied, logged as a run: when a provider changes its format,
    /// every event of a backlog fails, thousands a second. Each keeps its reason in `events`.
    failing: SharedOutage,
    /// Chunks rolled back (the database away, a lock given up), on whichever thread runs them.
    chunks: SharedOutage,
    /// Failures of one event, with the database otherwise answering, before it is `failed`.
    max_attempts: i64,
    /// How many events are still to be applied one at a time after a chunk failed while the
    /// database answered (see [`Projector::isolated`]).
    isolating: AtomicUsize,
    /// The `[[forward]]` destinations: each applied event's deliveries are created in the
    /// chunk's own transaction.
    routes: Vec<crate::deliveries::Route>,
    /// Told when a chunk created deliveries, so the forwarder sends them at once.
    forward_wake: Option<Arc<tokio::sync::watch::Sender<()>>>,
    /// Events applied again (a rebuild) are delivered again.
    redeliver: bool,
}

/// What applying one event came to.
enum Applied {
    Done {
        outcome: Outcome,
        media: bool,
        touched: Vec<crate::projection::Touched>,
    },
    /// The event cannot be applied as it is; it is marked `failed` with this reason.
    Failed(String),
}

/// The next events in the order they happened. On PostgreSQL the chunk is claimed: its rows
/// stay locked until the chunk commits, and other instances' projectors skip them and take
/// the next ones, so no event is applied twice. The ORDER BY names the table's columns: a bare
/// `occurred_at` would mean the formatted output column on PostgreSQL and sort the whole queue.
pub(crate) fn next_queued_sql(b: Backend) -> &'static str {
    NEXT_QUEUED.get(b)
}

static NEXT_QUEUED: Sql = Sql::new(|b| {
    let claim = match b {
        Backend::Sqlite => "",
        Backend::Postgres => " FOR UPDATE SKIP LOCKED",
    };
    format!(
        "SELECT seq, source, event_id, event_type, {} AS occurred_at, {} AS received_at, rank, {} AS payload \
         FROM events WHERE status = 'queued' ORDER BY events.occurred_at, events.rank, events.seq LIMIT ?{claim}",
        b.time_text("occurred_at"),
        b.time_text("received_at"),
        b.json_text("payload")
    )
});

const MARK: &str = "UPDATE events SET status = ?, attempts = attempts + 1, last_error = ?, applied_at = ? WHERE seq = ?";

/// The first queued event, claimed on PostgreSQL, without reading its payload: whatever
/// reading or applying it does, the projector knows which event it was.
static NEXT_HEAD: Sql = Sql::new(|b| {
    let claim = match b {
        Backend::Sqlite => "",
        Backend::Postgres => " FOR UPDATE SKIP LOCKED",
    };
    format!(
        "SELECT seq, source, event_id FROM events WHERE status = 'queued' \
         ORDER BY events.occurred_at, events.rank, events.seq LIMIT 1{claim}"
    )
});

static EVENT_BY_SEQ: Sql = Sql::new(|b| {
    format!(
        "SELECT seq, source, event_id, event_type, {} AS occurred_at, {} AS received_at, rank, {} AS payload \
         FROM events WHERE seq = ?",
        b.time_text("occurred_at"),
        b.time_text("received_at"),
        b.json_text("payload")
    )
});

/// One more failed attempt at an event that is still queued; the last allowed one marks it
/// `failed`. Returns whether it did.
const FAILED_ATTEMPT: &str = "UPDATE events SET attempts = attempts + 1, last_error = ?, \
     status = CASE WHEN attempts + 1 >= ? THEN 'failed' ELSE status END, \
     applied_at = CASE WHEN attempts + 1 >= ? THEN ? ELSE applied_at END \
     WHERE seq = ? AND status = 'queued' RETURNING CAST(CASE WHEN status = 'failed' THEN 1 ELSE 0 END AS BIGINT) AS n";

impl Projector {
    /// `providers` maps each endpoint's `source` to its provider.
    pub fn new(
        providers: HashMap<String, Arc<dyn Provider>>,
        batch: usize,
        max_attempts: u32,
        metrics: Arc<Metrics>,
        media_wake: Option<Arc<tokio::sync::Notify>>,
    ) -> Self {
        // Every source's counts exist from the start, at 0, so a rate over them is 0.
        for source in providers.keys() {
            for outcome in ["applied", "stale", "failed"] {
                metrics
                    .applied
                    .with_label_values(&[source.as_str(), outcome]);
            }
        }
        Self {
            providers,
            batch: i64::try_from(batch).unwrap_or(i64::MAX),
            metrics,
            media_wake,
            failing: SharedOutage::new("applying events"),
            chunks: SharedOutage::new("projector"),
            max_attempts: i64::from(max_attempts.max(1)),
            isolating: AtomicUsize::new(0),
            routes: Vec::new(),
            forward_wake: None,
            redeliver: false,
        }
    }

    /// Delivers again the events it applies again (`hooksync rebuild --redeliver`).
    pub fn redelivering(mut self) -> Self {
        self.redeliver = true;
        self
    }

    /// Creates deliveries to `routes` for the events it applies, and tells `wake`.
    pub fn forwarding(
        mut self,
        routes: Vec<crate::deliveries::Route>,
        wake: Arc<tokio::sync::watch::Sender<()>>,
    ) -> Self {
        self.forward_wake = (!routes.is_empty()).then_some(wake);
        self.routes = routes;
        self
    }

    /// Applies the next chunk of queued events in one transaction; returns how many it took.
    /// A database error rolls the chunk back: the events stay queued for the next try.
    ///
    /// A chunk first runs without a savepoint per event: on PostgreSQL every savepoint is two
    /// more round trips, and nearly every event applies cleanly. If one does not, the chunk is
    /// rolled back and run again with savepoints, so the failing event alone is marked
    /// `failed` and leaves nothing behind.
    ///
    /// A chunk that fails while the database otherwise takes writes holds something the
    /// database will not take (a payload it cannot read back, a value a trigger refuses, an
    /// error that recurs for that event only). The events after it must not wait on it
    /// forever: the next chunk's worth is then applied one event at a time, and an event that
    /// fails `max_attempts` times is marked `failed` with its reason.
    pub fn run_chunk(&self, db: &mut Db) -> Result<usize, StoreError> {
        if self.isolating.load(Ordering::Relaxed) > 0 {
            return self.isolated(db);
        }
        let r = self.try_chunk(db);
        match &r {
            Ok(_) => self.chunks.recover(),
            Err(e) => {
                self.chunks.fail(e);
                self.metrics.db_error("project");
                if db.takes_writes(e) {
                    let n = usize::try_from(self.batch).unwrap_or(usize::MAX);
                    self.isolating.store(n, Ordering::Relaxed);
                }
            }
        }
        r
    }

    /// Applies the first queued event alone. When it fails and the database still takes
    /// writes, the failure is the event's: it is counted on the event (and the event `failed`
    /// at the last attempt), and the call succeeds, so the caller goes on.
    fn isolated(&self, db: &mut Db) -> Result<usize, StoreError> {
        let mut head = None;
        let e = match self.chunk_of(db, true, Some(&mut head)) {
            Ok(r) => {
                self.chunks.recover();
                let n = self.finish(r);
                let left = if n == 0 {
                    0
                } else {
                    self.isolating.load(Ordering::Relaxed).saturating_sub(1)
                };
                self.isolating.store(left, Ordering::Relaxed);
                return Ok(n);
            }
            Err(ChunkError::Store(e)) => e,
            Err(ChunkError::NeedsCare) => {
                StoreError::Query(diesel::result::Error::RollbackTransaction)
            }
        };
        let Some(Head {
            seq,
            source,
            event_id,
        }) = head.filter(|_| db.takes_writes(&e))
        else {
            self.chunks.fail(&e);
            return Err(e);
        };
        let why = format!("cannot be applied: {e}");
        let now = Stamp::now();
        let counted = db.transaction(Durability::Deferred, |db| {
            db.count(
                Stmt::new(FAILED_ATTEMPT)
                    .text(&why)
                    .int(self.max_attempts)
                    .int(self.max_attempts)
                    .time(now)
                    .int(seq),
            )
        });
        let failed = counted.inspect_err(|e| self.chunks.fail(e))?;
        self.chunks.recover();
        // A backlog of such events is one run in the log, as other failing events are.
        if failed == 1 {
            self.metrics
                .applied
                .with_label_values(&[source.as_str(), "failed"])
                .inc();
            self.failing.fail(&format_args!(
                "event {event_id} from {source} failed {} times; marked failed: {e}",
                self.max_attempts
            ));
        } else {
            self.failing.fail(&format_args!(
                "event {event_id} from {source} failed to apply; tried again: {e}"
            ));
        }
        Ok(1)
    }

    /// The thread that runs the chunks could not connect: a failure of the same run.
    pub fn cannot_connect(&self, e: &StoreError) {
        self.chunks.fail(e);
    }

    fn try_chunk(&self, db: &mut Db) -> Result<usize, StoreError> {
        let first = match self.chunk_of(db, false, None) {
            Err(ChunkError::NeedsCare) => {
                tracing::debug!("an event failed in the chunk; applying it again with savepoints");
                self.chunk_of(db, true, None)
            }
            other => other,
        };
        match first {
            Ok(r) => Ok(self.finish(r)),
            Err(ChunkError::Store(e)) => Err(e),
            // A careful run marks failing events instead of asking for care.
            Err(ChunkError::NeedsCare) => Err(StoreError::Query(
                diesel::result::Error::RollbackTransaction,
            )),
        }
    }

    fn finish(&self, fin: Finished) -> usize {
        if fin.media {
            if let Some(w) = &self.media_wake {
                w.notify_one();
            }
        }
        if fin.deliveries > 0 {
            if let Some(w) = &self.forward_wake {
                w.send_replace(());
            }
        }
        let now = Stamp::now();
        for (source, outcome, received_at) in &fin.outcomes {
            self.metrics
                .applied
                .with_label_values(&[source.as_str(), outcome])
                .inc();
            self.metrics
                .projection_lag
                .observe(received_at.until(now).as_secs_f64());
        }
        fin.taken
    }

    /// One chunk: the next `batch` queued events, or with `head`, the first one alone, claimed
    /// by its seq (written to `head` with its source and id) before anything else is read.
    fn chunk_of(
        &self,
        db: &mut Db,
        careful: bool,
        head: Option<&mut Option<Head>>,
    ) -> Result<Finished, ChunkError> {
        let now = Stamp::now();
        // Projecting can be redone from the log: its commits ride on the next synced ingest commit.
        db.transaction(Durability::Deferred, |db| {
            let events: Vec<QueuedEvent> = match head {
                None => db.load(Stmt::new(NEXT_QUEUED.get(db.backend())).int(self.batch))?,
                Some(head) => {
                    let first: Vec<Head> = db.load(Stmt::new(NEXT_HEAD.get(db.backend())))?;
                    let Some(first) = first.into_iter().next() else {
                        return Ok(Finished::default());
                    };
                    let seq = first.seq;
                    *head = Some(first);
                    db.load(Stmt::new(EVENT_BY_SEQ.get(db.backend())).int(seq))?
                }
            };
            let mut fin = Finished {
                taken: events.len(),
                ..Finished::default()
            };
            let mut done: [Vec<i64>; 2] = [Vec::new(), Vec::new()];
            let mut forwarded = Vec::new();
            let mut cache = RowCache::default();
            if !careful {
                // A dry run names the rows the chunk will touch, to read them all at once.
                let mut wanted = Vec::new();
                for ev in &events {
                    if let Some(p) = self.providers.get(&ev.source) {
                        let _ = p.project(ev, &mut Tx::new(db, ev, now, Mode::Collect(&mut wanted)));
                    }
                }
                cache.prefetch(db, wanted).map_err(ChunkError::from_project)?;
            }
            for ev in &events {
                let cache = (!careful).then_some(&mut cache);
                match self.apply(db, ev, now, cache)? {
                    Applied::Done { outcome, media: m, touched } => {
                        self.failing.recover();
                        fin.media |= m;
                        if !self.routes.is_empty() {
                            forwarded.push(crate::deliveries::Finished {
                                seq: ev.seq,
                                source: &ev.source,
                                event_id: &ev.event_id,
                                event_type: ev.event_type.as_deref(),
                                outcome,
                                touched,
                            });
                        }
                        let slot = usize::from(outcome == Outcome::Stale);
                        fin.outcomes.push((ev.source.clone(), outcome.as_str(), ev.received_at));
                        done[slot].push(ev.seq);
                    }
                    Applied::Failed(why) => {
                        tracing::debug!(source = %ev.source, event_id = %ev.event_id, error = %why, "event cannot be applied");
                        self.failing.fail(&format_args!("event {} from {}: {why}", ev.event_id, ev.source));
                        fin.outcomes.push((ev.source.clone(), "failed", ev.received_at));
                        db.exec(Stmt::new(MARK).text("failed").opt_text(Some(&why)).time(now).int(ev.seq))?;
                    }
                }
            }
            cache.flush(db, now).map_err(ChunkError::from_project)?;
            fin.deliveries =
                crate::deliveries::plan(db, &self.routes, &forwarded, now, self.redeliver)?;
            // One statement per outcome for the whole chunk (per part of a chunk larger than a
            // statement can bind).
            for (outcome, seqs) in [Outcome::Applied, Outcome::Stale].iter().zip(&done) {
                for part in seqs.chunks(rows_per_statement(1, 2)) {
                    let sql = format!(
                        "UPDATE events SET status = ?, attempts = attempts + 1, last_error = NULL, applied_at = ? WHERE seq IN {}",
                        marks(part.len())
                    );
                    let mut stmt = Stmt::new(&sql).text(outcome.as_str()).time(now);
                    for seq in part {
                        stmt = stmt.int(*seq);
                    }
                    db.exec(stmt)?;
                }
            }
            Ok(fin)
        })
    }

    /// Applies one event. Through the chunk's row cache, a failing event asks for the careful
    /// run (`NeedsCare`); without one (careful), inside a savepoint, so an event that fails
    /// half-way leaves nothing behind.
    fn apply(
        &self,
        db: &mut Db,
        ev: &QueuedEvent,
        now: Stamp,
        cache: Option<&mut RowCache>,
    ) -> Result<Applied, ChunkError> {
        let careful = cache.is_none();
        let Some(provider) = self.providers.get(&ev.source) else {
            return Ok(Applied::Failed(format!(
                "no endpoint with source {:?} is configured",
                ev.source
            )));
        };
        if careful {
            db.batch("SAVEPOINT event")?;
        }
        let mode = match cache {
            Some(c) => Mode::Cached(c),
            None => Mode::Direct,
        };
        let mut tx = Tx::new(db, ev, now, mode);
        let result = provider.project(ev, &mut tx);
        let media = tx.media_touched();
        let touched = tx.into_touched();
        match result {
            Ok(outcome) => {
                if careful {
                    db.batch("RELEASE event")?;
                }
                Ok(Applied::Done {
                    outcome,
                    media,
                    touched,
                })
            }
            // Whether a database error is passing (a deadlock, a lost connection) or the
            // event's own (a value a column refuses) cannot be told from the error, so it rolls
            // the chunk back; `run_chunk` then counts the tries against the event alone.
            Err(ProjectError::Store(e)) => Err(ChunkError::Store(e)),
            Err(ProjectError::BadEvent(_)) if !careful => Err(ChunkError::NeedsCare),
            Err(ProjectError::BadEvent(why)) => {
                db.batch("ROLLBACK TO event; RELEASE event")?;
                Ok(Applied::Failed(why))
            }
        }
    }
}

#[derive(QueryableByName)]
struct Head {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    seq: i64,
    #[diesel(sql_type = diesel::sql_types::Text)]
    source: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    event_id: String,
}

/// Starts the projector on a thread and connection of its own (PostgreSQL), beside the store
/// thread: a chunk (a few milliseconds) then never holds up a batch. Returns the sender that
/// wakes it when new events are stored, and the thread to join; it stops when that sender is
/// dropped.
pub fn spawn_beside(
    projector: Projector,
    opts: DbOptions,
    poll: Duration,
) -> std::io::Result<Beside> {
    let (wake, woken) = std::sync::mpsc::sync_channel(1);
    let thread = ProjectorThread {
        projector,
        opts,
        woken,
        poll,
    };
    let handle = std::thread::Builder::new()
        .name("hooksync-project".into())
        .spawn(move || thread.run())?;
    Ok((wake, handle))
}

/// The projector on a thread and connection of its own (PostgreSQL).
struct ProjectorThread {
    projector: Projector,
    opts: DbOptions,
    woken: Receiver<()>,
    poll: Duration,
}

impl ProjectorThread {
    /// Runs chunks while there is work, then waits to be told of new events (or for the
    /// poll interval: other instances queue events too). Stops when the store thread does.
    fn run(self) {
        let mut conn: Option<Db> = None;
        loop {
            let db = match conn.take() {
                Some(db) => Ok(db),
                None => Db::connect(&self.opts),
            };
            let more = match db {
                Ok(mut db) => match run_chunk(&self.projector, &mut db) {
                    Step::Failed => false,
                    done => {
                        conn = Some(db);
                        done == Step::More
                    }
                },
                Err(e) => {
                    self.projector.cannot_connect(&e);
                    false
                }
            };
            let stopped = if more {
                matches!(self.woken.try_recv(), Err(TryRecvError::Disconnected))
            } else {
                matches!(
                    self.woken.recv_timeout(self.poll),
                    Err(RecvTimeoutError::Disconnected)
                )
            };
            if stopped {
                break;
            }
        }
        tracing::info!("projector stopped");
    }
}

/// Runs one chunk; a failed one is rolled back (and logged by the projector) and tried again
/// at the next poll.
fn run_chunk(projector: &Projector, db: &mut Db) -> Step {
    match projector.run_chunk(db) {
        Ok(0) => Step::Idle,
        Ok(_) => Step::More,
        Err(_) => Step::Failed,
    }
}

/// On SQLite the projector runs on the store thread between ingest batches, a chunk a step.
impl Background for Projector {
    fn step(&mut self, db: &mut Db) -> Step {
        run_chunk(self, db)
    }

    fn cannot_connect(&mut self, e: &StoreError) {
        Projector::cannot_connect(self, e)
    }
}

/// What a committed chunk did: events taken, each finished one's (source, outcome, arrival),
/// and whether any left media to fetch.
#[derive(Default)]
struct Finished {
    taken: usize,
    outcomes: Vec<(String, &'static str, Stamp)>,
    media: bool,
    /// Deliveries created.
    deliveries: usize,
}

/// Why a chunk's transaction was rolled back.
enum ChunkError {
    Store(StoreError),
    /// An event failed outside a savepoint: run the chunk again, carefully.
    NeedsCare,
}

impl ChunkError {
    fn from_project(e: ProjectError) -> ChunkError {
        match e {
            ProjectError::Store(e) => ChunkError::Store(e),
            ProjectError::BadEvent(_) => ChunkError::NeedsCare,
        }
    }
}

impl From<StoreError> for ChunkError {
    fn from(e: StoreError) -> Self {
        ChunkError::Store(e)
    }
}

#[cfg(test)]
mod tests {
    use diesel::sql_types::Text;
    use diesel::QueryableByName;

    use crate::store::{open_and_migrate, DbOptions, DbUrl, Stmt};

    #[derive(QueryableByName)]
    struct Plan {
        #[diesel(sql_type = Text)]
        detail: String,
    }

    /// The next chunk must come from the ordered partial index, not from a sort of every
    /// queued event: with a backlog the latter makes each chunk cost the whole queue.
    #[test]
    fn next_chunk_reads_the_queue_index() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = open_and_migrate(&DbOptions {
            url: DbUrl::Sqlite(dir.path().join("p.db")),
            busy_timeout_ms: 100,
        })
        .unwrap();
        let sql = format!(
            "EXPLAIN QUERY PLAN {}",
            super::NEXT_QUEUED.get(crate::store::Backend::Sqlite)
        );
        let plan: Vec<Plan> = db.load(Stmt::new(&sql).int(128)).unwrap();
        let text: Vec<&str> = plan.iter().map(|p| p.detail.as_str()).collect();
        assert!(
            text.iter().any(|d| d.contains("USING INDEX events_queued")),
            "{text:?}"
        );
        assert!(!text.iter().any(|d| d.contains("TEMP B-TREE")), "{text:?}");
    }
}
