//! `hooksync rebuild`: the domain tables made again from the event log.
//!
//! The log is the source of truth (docs/architecture.md); the tables are what the projector made of it.
//! After a fix to how a provider maps its events, or after someone changed a table by hand,
//! the tables are emptied and every event that had been applied, found stale or failed is
//! queued again, in one transaction, with those kept `unhandled` that their provider handles
//! now (after an upgrade that knows more event types); the projector then applies them in the
//! order they happened, which gives the tables the rows they would have had all along.
//!
//! Downloaded media are not touched: the files cannot be fetched again (their URLs expired
//! long ago), and the `media` rows say where they are. Re-projected followups find their rows
//! unchanged (so nothing is downloaded twice) and get their file paths back from them.
//!
//! Only the configured endpoints' rows are rebuilt: events of a source no endpoint names any
//! more could not be applied again, so their rows stay as they are.
//!
//! It can run beside a serving daemon: on SQLite the two take turns at the write lock; on
//! PostgreSQL every instance's projector helps with the queued events, and this command waits
//! until all of them are applied.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use diesel::sql_types::{BigInt, Text};
use diesel::QueryableByName;

use crate::projector::Projector;
use crate::providers::Provider;
use crate::store::{marks, Db, DbOptions, Durability, Sql, Stmt, StoreError};

/// Every table the projector writes. `media` is not one of them: the fetcher fills it.
pub const DOMAIN_TABLES: &[&str] = &[
    "debts",
    "followups",
    "payments",
    "payment_plans",
    "notices",
    "invoices",
    "customers",
    "bills",
    "vendors",
    "records",
];

/// What a rebuild did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Rows removed from the domain tables.
    pub removed: u64,
    /// Events queued again.
    pub requeued: u64,
    /// Of those, events stored as `unhandled` that their provider handles now.
    pub now_handled: u64,
    /// How the events of the rebuilt sources stand afterwards, by status.
    pub statuses: Vec<(String, i64)>,
    /// Followups given back the path of a file downloaded before.
    pub relinked: u64,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let statuses: Vec<String> = self
            .statuses
            .iter()
            .map(|(s, n)| format!("{n} {s}"))
            .collect();
        write!(
            f,
            "rebuilt: {} rows removed, {} events applied again ({} of them kept unhandled before), \
             {} media paths restored; events now: {}",
            self.removed,
            self.requeued,
            self.now_handled,
            self.relinked,
            if statuses.is_empty() {
                "none".to_string()
            } else {
                statuses.join(", ")
            },
        )
    }
}

#[derive(QueryableByName)]
struct StatusCount {
    #[diesel(sql_type = Text)]
    status: String,
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// Steps failed in a row (a lock, a lost connection, a restarting server) before the command
/// gives up; the events stay queued either way, for the daemon's projector or the next run.
const MAX_RETRIES: u32 = 10;

/// Where the rebuild stands after one step of applying the log.
enum Step {
    /// A chunk was applied; there may be more at once.
    Applied,
    /// Nothing to take, but events other instances hold are not applied yet.
    Waiting,
    /// Every event queued by the rebuild is applied.
    Done,
}

fn with_sources<'a>(mut s: Stmt<'a>, sources: &'a [String]) -> Stmt<'a> {
    for source in sources {
        s = s.text(source);
    }
    s
}

/// Empties the domain tables of the sources in `providers`, queues their events again (and
/// the `unhandled` ones their provider now handles), applies them with `projector` (waiting
/// for other instances' projectors to finish what they took), and puts back the paths of
/// files downloaded before.
pub fn rebuild(
    db: &mut Db,
    opts: &DbOptions,
    projector: &Projector,
    providers: &HashMap<String, Arc<dyn Provider>>,
    poll: Duration,
) -> Result<Summary, StoreError> {
    let mut summary = Summary::default();
    let mut sources: Vec<String> = providers.keys().cloned().collect();
    sources.sort();
    let sources = sources.as_slice();
    if sources.is_empty() {
        return Ok(summary);
    }
    let among = marks(sources.len());
    // Every step below is one transaction or one read, so a try cut short leaves nothing
    // behind, and the counts reported are those of the try that succeeded.
    let (removed, requeued, now_handled, last_seq) = retrying(db, opts, poll, |db| {
        db.transaction(Durability::Synced, |db| {
            let mut removed = 0;
            for table in DOMAIN_TABLES {
                let sql = format!("DELETE FROM {table} WHERE source IN {among}");
                removed += db.exec(with_sources(Stmt::new(&sql), sources))? as u64;
            }
            let sql = format!(
                "UPDATE events SET status = 'queued', attempts = 0, last_error = NULL, applied_at = NULL \
                 WHERE status IN ('applied', 'stale', 'failed') AND source IN {among}"
            );
            let requeued = db.exec(with_sources(Stmt::new(&sql), sources))? as u64;
            let now_handled = requeue_now_handled(db, providers)?;
            let last_seq = db.count("SELECT COALESCE(MAX(seq), 0) AS n FROM events")?;
            Ok::<_, StoreError>((removed, requeued, now_handled, last_seq))
        })
    })?;
    summary.removed = removed;
    summary.now_handled = now_handled;
    summary.requeued = requeued + now_handled;
    tracing::info!(
        removed = summary.removed,
        requeued = summary.requeued,
        "domain tables emptied; applying the event log again"
    );

    // Everything queued up to now, including events that were queued already: another
    // instance may hold some of them in a chunk of its own.
    let waiting_sql = format!(
        "SELECT COUNT(*) AS n FROM events WHERE status = 'queued' AND seq <= ? AND source IN {among}"
    );
    loop {
        let step = retrying(db, opts, poll, |db| match projector.run_chunk(db)? {
            0 => db
                .count(with_sources(Stmt::new(&waiting_sql).int(last_seq), sources))
                .map(|n| if n == 0 { Step::Done } else { Step::Waiting }),
            _ => Ok(Step::Applied),
        })?;
        match step {
            Step::Done => break,
            Step::Waiting => std::thread::sleep(poll),
            Step::Applied => {}
        }
    }

    // The fetcher writes a followup's file path when a download completes; the followups just
    // made again do not have it, and the media rows (unchanged) still do.
    summary.relinked = retrying(db, opts, poll, |db| {
        db.transaction(Durability::Synced, |db| {
            let mut n = 0;
            for (kind, _, column) in crate::media::KINDS {
                let file = "SELECT m.path FROM media m WHERE m.source = followups.source \
                            AND m.followup_id = followups.id AND m.kind = ? AND m.path IS NOT NULL";
                let sql = format!(
                    "UPDATE followups SET {column} = ({file}) \
                     WHERE {column} IS NULL AND source IN {among} AND EXISTS ({file})"
                );
                let stmt = with_sources(Stmt::new(&sql).text(kind), sources).text(kind);
                n += db.exec(stmt)? as u64;
            }
            Ok::<_, StoreError>(n)
        })
    })?;
    // On SQLite the projector's commits are made durable by the next synced one, and there
    // may be none after this command: a checkpoint syncs them now.
    if let Err(e) = db.finish_checkpoint() {
        tracing::warn!(error = %e, "checkpoint after the rebuild failed; the daemon's next commit will sync");
    }

    let sql = format!(
        "SELECT status, COUNT(*) AS n FROM events WHERE source IN {among} GROUP BY status ORDER BY status"
    );
    summary.statuses = retrying(db, opts, poll, |db| {
        db.load::<StatusCount>(with_sources(Stmt::new(&sql), sources))
    })?
    .into_iter()
    .map(|r| (r.status, r.n))
    .collect();
    Ok(summary)
}

/// Runs `step` until it succeeds. After an error it tries again a poll interval later on a
/// fresh connection: a lock a serving daemon held a while or a deadlock with its projector
/// clears by itself, a lost connection or a restarting server needs the fresh connection, and
/// an error does not say which it was. Every step is one transaction or one read, so a try
/// again is always safe. At most [`MAX_RETRIES`] failures in a row; a reconnection that fails
/// counts as the next try's failure.
fn retrying<T>(
    db: &mut Db,
    opts: &DbOptions,
    poll: Duration,
    mut step: impl FnMut(&mut Db) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let mut failures = 0;
    loop {
        match step(db) {
            Ok(v) => return Ok(v),
            Err(e) if failures < MAX_RETRIES => {
                failures += 1;
                tracing::warn!(error = %e, attempt = failures, "rebuild step failed; trying again on a fresh connection");
                std::thread::sleep(poll);
                match Db::connect(opts) {
                    Ok(fresh) => *db = fresh,
                    Err(e) => tracing::debug!(error = %e, "no connection yet"),
                }
            }
            Err(e) => return Err(e),
        }
    }
}

#[derive(QueryableByName)]
struct UnhandledRow {
    #[diesel(sql_type = BigInt)]
    seq: i64,
    #[diesel(sql_type = Text)]
    source: String,
    #[diesel(sql_type = Text)]
    event_id: String,
    #[diesel(sql_type = diesel::sql_types::Nullable<Text>)]
    payload: Option<String>,
}

static UNHANDLED: Sql = Sql::new(|b| {
    format!(
        "SELECT seq, source, event_id, {} AS payload FROM events \
         WHERE status = 'unhandled' AND seq > ? ORDER BY seq LIMIT ?",
        b.json_text("payload")
    )
});

/// Rows read at a time while looking through the `unhandled` events.
const PAGE: i64 = 1_000;

/// Queues again the `unhandled` events of `providers`' sources that their provider, reading the
/// stored payload as a body, now handles: an upgrade may know event types an older version
/// kept aside. A provider that needs the request's headers to read an event (and so cannot
/// read the stored payload alone, or reads another id from it) leaves the event as it is.
fn requeue_now_handled(
    db: &mut Db,
    providers: &HashMap<String, Arc<dyn Provider>>,
) -> Result<u64, StoreError> {
    let headers = http::HeaderMap::new();
    let (mut after, mut found) = (0i64, 0u64);
    loop {
        let rows: Vec<UnhandledRow> =
            db.load(Stmt::new(UNHANDLED.get(db.backend())).int(after).int(PAGE))?;
        let Some(last) = rows.last() else {
            return Ok(found);
        };
        after = last.seq;
        let handled: Vec<i64> = rows
            .iter()
            .filter(|r| {
                let (Some(provider), Some(payload)) = (providers.get(&r.source), &r.payload) else {
                    return false;
                };
                provider
                    .envelope(&headers, payload.as_bytes())
                    .is_ok_and(|env| env.handled && env.event_id == r.event_id)
            })
            .map(|r| r.seq)
            .collect();
        if !handled.is_empty() {
            let sql = format!(
                "UPDATE events SET status = 'queued', attempts = 0, last_error = NULL, applied_at = NULL \
                 WHERE status = 'unhandled' AND seq IN {}",
                marks(handled.len())
            );
            let mut stmt = Stmt::new(&sql);
            for seq in &handled {
                stmt = stmt.int(*seq);
            }
            found += db.exec(stmt)? as u64;
        }
    }
}
