//! The forwarder: delivers events on to the CRM's own webhook handlers (`[[forward]]`).
//!
//! One task per destination claims due deliveries (`deliveries::claim`, one per object at a
//! time), sends up to `concurrency` at once, and records each attempt with the next claim in
//! one call on the store. A failed attempt is tried again after an exponential backoff with
//! jitter (or the `Retry-After` of a 429 or 503) until `give_up_after`; a 410 pauses the
//! destination until `hooksync forward resume`. Nothing here is on the path of a sender's
//! acknowledgement: deliveries are created by the projector, after the event is applied.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::config::{ForwardConfig, ForwardMode};
use crate::deliveries::{self, Attempt, Job, Route, Verdict};
use crate::inbox::Inbox;
use crate::metrics::Metrics;
use crate::outage::Outage;
use crate::providers::{standard::Standard, Provider};
use crate::secret::Secret;
use crate::stamp::Stamp;

/// The most of an answer's body read; the rest is not waited for.
const RESPONSE_READ_MAX: usize = 64 << 10;
/// The most of it kept with the attempt.
const RESPONSE_KEPT: usize = 1 << 10;
/// How long after its request's timeout a claim still holds: past it, the process that made
/// it is taken for dead and another may send the delivery.
const LEASE_MARGIN: Duration = Duration::from_secs(15);
/// A `Retry-After` longer than this is taken as this.
const RETRY_AFTER_MAX: Duration = Duration::from_secs(86_400);

/// What stands for a destination's secret where nothing is signed (`rebuild`).
pub const STAND_IN_SECRET: &str = "whsec_c3RhbmQtaW4=";

/// Checks what a destination needs beyond the file's form: its secrets resolve and are
/// Standard Webhooks secrets.
pub fn check(forward: &[ForwardConfig]) -> Vec<String> {
    let mut problems = Vec::new();
    for (i, f) in forward.iter().enumerate() {
        if let Err(e) = signer(f) {
            problems.push(format!("forward[{i}].secrets: {e}"));
        }
    }
    problems
}

/// The Standard Webhooks signer of a `standard` or `rows` destination.
fn signer(f: &ForwardConfig) -> Result<Option<Standard>, String> {
    if f.mode == ForwardMode::Passthrough {
        return Ok(None);
    }
    let keys = f
        .secrets
        .iter()
        .map(|s| {
            let secret = Secret::resolve(s)?;
            crate::providers::standard::decode_secret(secret.expose())
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(Standard::from_keys(keys)))
}

/// A destination ready to send to.
pub struct Destination {
    route: Route,
    client: reqwest::Client,
    url: reqwest::Url,
    signer: Option<Standard>,
    /// Each source's provider: re-signs a passthrough body kept without its headers.
    providers: HashMap<String, Arc<dyn Provider>>,
}

impl Destination {
    pub fn new(
        route: Route,
        providers: HashMap<String, Arc<dyn Provider>>,
    ) -> anyhow::Result<Destination> {
        let cfg = &route.cfg;
        let url = reqwest::Url::parse(&cfg.url)?;
        let client = reqwest::Client::builder()
            .use_rustls_tls()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_millis(cfg.timeout_ms))
            .build()?;
        let signer = signer(cfg).map_err(|e| anyhow::anyhow!("forward {}: {e}", cfg.name))?;
        Ok(Destination {
            route,
            client,
            url,
            signer,
            providers,
        })
    }

    /// The request's body and headers.
    fn request(&self, job: &Job, now: Stamp) -> (Vec<u8>, Vec<(String, String)>) {
        let d = &job.d;
        let webhook_id = format!("hsd_{}", d.id);
        let mut headers: Vec<(String, String)> = Vec::new();
        let body = match self.route.cfg.mode {
            ForwardMode::Passthrough => {
                let body = d
                    .raw_body
                    .clone()
                    .or_else(|| d.payload.clone().map(String::into_bytes))
                    .unwrap_or_default();
                match d.headers.as_deref().map(serde_json::from_str::<Value>) {
                    Some(Ok(Value::Object(kept))) if d.raw_body.is_some() => {
                        for (k, v) in kept {
                            if let Value::String(v) = v {
                                headers.push((k, v));
                            }
                        }
                    }
                    // Received before a passthrough destination took the endpoint: signed
                    // now, as the provider signs, with the endpoint's first secret.
                    _ => {
                        headers.push(("content-type".into(), "application/json".into()));
                        if let Some(p) = self.providers.get(&d.source) {
                            headers.extend(p.sign(&body, &d.event_id, now.unix_timestamp()));
                        }
                    }
                }
                body
            }
            ForwardMode::Standard => {
                let data = d
                    .payload
                    .as_deref()
                    .and_then(|p| serde_json::from_str::<Value>(p).ok())
                    .unwrap_or(Value::Null);
                json!({
                    "source": d.source,
                    "provider": d.provider,
                    "event_id": d.event_id,
                    "type": d.event_type,
                    "occurred_at": d.occurred_at.to_string(),
                    "data": data,
                })
                .to_string()
                .into_bytes()
            }
            ForwardMode::Rows => {
                let row = job.row.clone().unwrap_or_default();
                let data = row
                    .data
                    .as_deref()
                    .and_then(|p| serde_json::from_str::<Value>(p).ok())
                    .unwrap_or(Value::Null);
                let key: serde_json::Map<String, Value> = row
                    .key
                    .iter()
                    .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                    .collect();
                json!({
                    "table": row.table,
                    "source": d.source,
                    "id": row.key.last().map(|(_, v)| v.clone()),
                    "key": key,
                    "row": data,
                    "deleted": row.deleted,
                    "event_id": row.last_event_id,
                })
                .to_string()
                .into_bytes()
            }
        };
        if let Some(s) = &self.signer {
            headers.push(("content-type".into(), "application/json".into()));
            headers.extend(s.sign(&body, &webhook_id, now.unix_timestamp()));
        }
        headers.extend([
            ("hooksync-event-id".into(), header_text(&d.event_id)),
            ("hooksync-source".into(), header_text(&d.source)),
            ("hooksync-occurred-at".into(), d.occurred_at.to_string()),
            ("hooksync-attempt".into(), (d.attempts + 1).to_string()),
        ]);
        (body, headers)
    }

    /// One attempt at one delivery.
    async fn attempt(&self, job: &Job) -> Attempt {
        let at = Stamp::now();
        let started = Instant::now();
        let (body, headers) = self.request(job, at);
        let mut req = self.client.post(self.url.clone()).body(body);
        for (k, v) in &headers {
            req = req.header(k.as_str(), v.as_str());
        }
        let answer = match req.send().await {
            Ok(mut resp) => {
                let status = resp.status().as_u16();
                let retry_after = resp
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(retry_after);
                let mut kept = Vec::new();
                let mut read = 0usize;
                let mut error = None;
                loop {
                    match resp.chunk().await {
                        Ok(Some(c)) => {
                            read += c.len();
                            let room = RESPONSE_KEPT.saturating_sub(kept.len());
                            kept.extend_from_slice(&c[..c.len().min(room)]);
                            if read >= RESPONSE_READ_MAX {
                                break;
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            error = Some(describe(&e));
                            break;
                        }
                    }
                }
                Ok((
                    status,
                    retry_after,
                    String::from_utf8_lossy(&kept).into_owned(),
                    error,
                ))
            }
            Err(e) => Err(describe(&e)),
        };
        let duration_ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
        let attempt = job.d.attempts + 1;
        let first = job.d.first_attempt_at.unwrap_or(at);
        let (http_status, error, response, verdict) = match answer {
            Ok((s, _, body, None)) if (200..300).contains(&s) => {
                (Some(s), None, Some(body), Verdict::Delivered)
            }
            Ok((410, _, body, _)) => (
                Some(410),
                Some("HTTP 410: the destination is gone; paused".to_string()),
                Some(body),
                Verdict::Paused,
            ),
            Ok((s, after, body, err)) => {
                let wait = after.filter(|_| matches!(s, 429 | 503));
                let why = match err {
                    Some(e) if (200..300).contains(&s) => format!("HTTP {s}, then {e}"),
                    _ => format!("HTTP {s}"),
                };
                (
                    Some(s),
                    Some(why),
                    Some(body),
                    self.after_failure(attempt, first, at, wait),
                )
            }
            Err(e) => (
                None,
                Some(e),
                None,
                self.after_failure(attempt, first, at, None),
            ),
        };
        Attempt {
            id: job.d.id,
            attempt,
            at,
            duration_ms,
            http_status: http_status.map(i64::from),
            error,
            response: response.filter(|r| !r.is_empty()),
            verdict,
        }
    }

    /// When a failed delivery is tried again, or that it is given up.
    fn after_failure(
        &self,
        attempt: i64,
        first: Stamp,
        now: Stamp,
        wait: Option<Duration>,
    ) -> Verdict {
        let cfg = &self.route.cfg;
        let give_up = cfg.give_up();
        let delay = wait.unwrap_or_else(|| {
            let exp = Duration::from_millis(cfg.retry_base_ms)
                .saturating_mul(1u32 << (attempt - 1).clamp(0, 20));
            exp.min(Duration::from_millis(cfg.retry_max_ms))
                .mul_f64(rand::rng().random_range(0.5..1.0))
        });
        let next = now.plus(time::Duration::try_from(delay).unwrap_or(time::Duration::MAX));
        if first.until(next) > give_up {
            Verdict::Dead
        } else {
            Verdict::Retry(next)
        }
    }
}

/// Text as a header value: visible ASCII and spaces as they are, every other byte as `%XX` (and
/// `%` itself), so an event id of any characters still makes a valid request.
fn header_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `Retry-After` as seconds or an HTTP date.
fn retry_after(v: &str) -> Option<Duration> {
    let d = match v.trim().parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => httpdate::parse_http_date(v.trim())
            .ok()?
            .duration_since(std::time::SystemTime::now())
            .unwrap_or_default(),
    };
    Some(d.min(RETRY_AFTER_MAX))
}

/// What went wrong, without the URL (it may carry a token in its query).
fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return "timed out".into();
    }
    let mut cause: &dyn std::error::Error = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    if e.is_connect() {
        format!("connection failed: {cause}")
    } else {
        format!("request failed: {cause}")
    }
}

/// Where a destination's claims and records are written. SQLite has one writer, so they go
/// through it between ingest batches; PostgreSQL takes them on a connection of the
/// destination's own, as it takes the projector's, so they never wait in line with a batch.
pub enum Store {
    Writer(Inbox),
    Own {
        opts: crate::store::DbOptions,
        conn: Arc<std::sync::Mutex<Option<crate::store::Db>>>,
    },
}

type StoreResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

impl Store {
    pub fn new(inbox: &Inbox, opts: &crate::store::DbOptions) -> Store {
        match opts.url.backend() {
            crate::store::Backend::Sqlite => Store::Writer(inbox.clone()),
            crate::store::Backend::Postgres => Store::Own {
                opts: opts.clone(),
                conn: Arc::default(),
            },
        }
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut crate::store::Db) -> Result<T, crate::store::StoreError> + Send + 'static,
    ) -> StoreResult<T> {
        match self {
            Store::Writer(inbox) => Ok(inbox.run(work).await?),
            Store::Own { opts, conn } => {
                let (opts, conn) = (opts.clone(), conn.clone());
                tokio::task::spawn_blocking(move || -> StoreResult<T> {
                    let mut held = conn
                        .lock()
                        .map_err(|_| "the connection's lock is poisoned")?;
                    if held.is_none() {
                        *held = Some(crate::store::Db::connect(&opts)?);
                    }
                    let db = held.as_mut().ok_or("no connection")?;
                    let r = work(db);
                    if let Err(e) = &r {
                        if e.connection_lost() {
                            *held = None;
                        }
                    }
                    Ok(r?)
                })
                .await?
            }
        }
    }
}

/// Delivers `dest`'s deliveries until `stop` turns true; then gives back what it claimed.
pub async fn run(
    dest: Arc<Destination>,
    store: Store,
    me: Arc<str>,
    metrics: Arc<Metrics>,
    mut wake: watch::Receiver<()>,
    mut stop: watch::Receiver<bool>,
) {
    let cfg = dest.route.cfg.clone();
    let name: Arc<str> = Arc::from(cfg.name.as_str());
    let concurrency = cfg.concurrency.max(1);
    let lease = Duration::from_millis(cfg.timeout_ms).saturating_add(LEASE_MARGIN);
    let poll = Duration::from_millis(cfg.retry_base_ms)
        .clamp(Duration::from_millis(50), Duration::from_secs(1));
    for outcome in ["delivered", "failed", "dead", "paused"] {
        metrics.deliveries.with_label_values(&[&cfg.name, outcome]);
    }
    let mut failing = Outage::new(format!("delivering to {}", cfg.name));
    let mut recording = Outage::new(format!("the deliveries of {}", cfg.name));
    let mut tasks: JoinSet<Attempt> = JoinSet::new();
    let mut done: Vec<Attempt> = Vec::new();
    let said_paused = std::sync::atomic::AtomicBool::new(false);
    let sources: Arc<Vec<String>> = Arc::new(dest.providers.keys().cloned().collect());
    let mut scan = deliveries::Scan::new(&dest.route, Stamp::now());
    // The scan for unhandled and invalid events runs at most once a second.
    let mut next_scan = Instant::now();
    // Counted and logged once each, when its request ends (a record that fails is kept and
    // recorded at the next step, not counted again).
    let mut ended = |a: Attempt, done: &mut Vec<Attempt>| {
        metrics
            .deliveries
            .with_label_values(&[&cfg.name, a.verdict.as_str()])
            .inc();
        metrics
            .delivery_duration
            .with_label_values(&[&cfg.name])
            .observe(a.duration_ms as f64 / 1000.0);
        match &a.verdict {
            Verdict::Delivered => failing.recover(),
            Verdict::Paused => {
                if !said_paused.swap(true, std::sync::atomic::Ordering::Relaxed) {
                    tracing::warn!(destination = %cfg.name, "the destination answered 410 Gone: paused until `hooksync forward resume {}`", cfg.name);
                }
            }
            v => failing.fail(&format_args!(
                "delivery {} attempt {}: {}{}",
                a.id,
                a.attempt,
                a.error.as_deref().unwrap_or("failed"),
                if *v == Verdict::Dead {
                    "; given up (dead)"
                } else {
                    ""
                }
            )),
        }
        done.push(a);
    };
    loop {
        while let Some(r) = tasks.try_join_next() {
            if let Ok(a) = r {
                ended(a, &mut done);
            }
        }
        let free = concurrency.saturating_sub(tasks.len());
        if free == 0 && done.is_empty() {
            // Nothing to record and no room to send more: the store is left to the senders.
            tokio::select! {
                Some(r) = tasks.join_next() => {
                    if let Ok(a) = r {
                        ended(a, &mut done);
                    }
                }
                _ = stop.wait_for(|s| *s) => break,
            }
            continue;
        }
        let (route, n, me2, recorded) = (
            dest.route.clone(),
            free as i64,
            me.clone(),
            std::mem::take(&mut done),
        );
        let kept = recorded.clone();
        let scanning = (Instant::now() >= next_scan).then_some(scan);
        if scanning.is_some() {
            next_scan = Instant::now() + Duration::from_secs(1);
        }
        let srcs = sources.clone();
        let step = store
            .run(move |db| {
                let now = Stamp::now();
                db.transaction(crate::store::Durability::Deferred, |db| {
                    deliveries::record(db, route.name(), &me2, &recorded, now)?;
                    let mut scanned = scanning;
                    if let Some(s) = &mut scanned {
                        deliveries::plan_unprojected(db, &route, &srcs, s, now)?;
                    }
                    let lease_until =
                        now.plus(time::Duration::try_from(lease).unwrap_or(time::Duration::MAX));
                    let paused = deliveries::paused(db, route.name())?.is_some();
                    let jobs = if paused {
                        Vec::new()
                    } else {
                        deliveries::claim(db, route.name(), n, now, lease_until, &me2)?
                    };
                    Ok((jobs, paused, scanned))
                })
            })
            .await;
        match step {
            Ok((jobs, paused, scanned)) => {
                recording.recover();
                if let Some(s) = scanned {
                    scan = s;
                }
                if !paused {
                    said_paused.store(false, std::sync::atomic::Ordering::Relaxed);
                }
                for job in jobs {
                    let d = dest.clone();
                    tasks.spawn(async move { d.attempt(&job).await });
                }
            }
            Err(e) => {
                // Kept to be recorded at the next step; the claims hold meanwhile.
                done = kept;
                recording.fail(&e);
            }
        }
        tokio::select! {
            Some(r) = tasks.join_next(), if !tasks.is_empty() => {
                if let Ok(a) = r {
                    ended(a, &mut done);
                }
            }
            _ = wake.changed() => {}
            () = tokio::time::sleep(poll) => {}
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    // Requests in flight are dropped: their deliveries are given back and sent again.
    tasks.shutdown().await;
    let recorded = std::mem::take(&mut done);
    let me2 = me.clone();
    let _ = store
        .run(move |db| {
            let now = Stamp::now();
            db.transaction(crate::store::Durability::Synced, |db| {
                deliveries::record(db, &name, &me2, &recorded, now)?;
                deliveries::release(db, &me2)
            })
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_event_id_makes_a_valid_header() {
        for id in ["evt_1", "a b", "é\n\u{0}%", "\r\nX-Injected: 1"] {
            let v = header_text(id);
            assert!(reqwest::header::HeaderValue::from_str(&v).is_ok(), "{v:?}");
            assert!(!v.contains('\n') && !v.contains('\r'));
        }
        assert_eq!(header_text("evt_1"), "evt_1");
        assert_eq!(header_text("50%\n"), "50%25%0A");
    }

    #[test]
    fn retry_after_takes_seconds_or_a_date_and_is_bounded() {
        assert_eq!(retry_after("2"), Some(Duration::from_secs(2)));
        assert_eq!(retry_after("999999999"), Some(RETRY_AFTER_MAX));
        assert_eq!(
            retry_after("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after("soon"), None);
    }
}
