//! The fetcher: downloads due media with bounded concurrency, through a client that can only
//! reach allowed hosts at allowed addresses, streaming to a temporary file that is hashed on
//! the way, synced and renamed, so memory stays flat and a reader never sees half a file.

mod guard;

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::Url;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;

use crate::config::MediaConfig;
use crate::inbox::Inbox;
use crate::media::{Job, Key, Outcome};
use crate::outage::Outage;
use crate::stamp::Stamp;
use guard::{forbidden, host_allowed, redact};

/// A refusal by the guards: final, retrying cannot change it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// Resolves names and refuses the lookup if any address is not public, so the connection
/// goes to an address that was checked (no second lookup to rebind).
struct GuardedResolver;

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if addrs.is_empty() {
                return Err(Box::new(Refused(format!("{host} has no address"))) as _);
            }
            if let Some(bad) = addrs.iter().find(|a| forbidden(a.ip())) {
                return Err(Box::new(Refused(format!(
                    "{host} resolves to a non-public address ({})",
                    bad.ip()
                ))) as _);
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// The checks every URL and every redirect hop passes before a connection is made.
#[derive(Clone)]
pub struct Policy {
    allowed_hosts: Vec<String>,
    allow_private: bool,
    allow_http: bool,
}

impl Policy {
    pub fn check(&self, url: &Url) -> Result<(), Refused> {
        match url.scheme() {
            "https" => {}
            "http" if self.allow_http => {}
            other => return Err(Refused(format!("scheme {other} is not allowed"))),
        }
        let host = url
            .host_str()
            .ok_or_else(|| Refused("URL has no host".into()))?;
        if !host_allowed(host, &self.allowed_hosts) {
            return Err(Refused(format!(
                "host {host} is not on media.allowed_hosts"
            )));
        }
        if !self.allow_private {
            let literal = host.trim_start_matches('[').trim_end_matches(']');
            if let Ok(ip) = literal.parse::<IpAddr>() {
                if forbidden(ip) {
                    return Err(Refused(format!("address {ip} is not public")));
                }
            }
        }
        Ok(())
    }
}

pub fn client(cfg: &MediaConfig) -> anyhow::Result<(reqwest::Client, Policy)> {
    let policy = Policy {
        allowed_hosts: cfg.allowed_hosts.clone(),
        allow_private: cfg.allow_private_networks,
        allow_http: cfg.allow_http,
    };
    let hops = policy.clone();
    let max = cfg.max_redirects;
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .no_proxy()
        .https_only(!cfg.allow_http)
        .connect_timeout(Duration::from_millis(cfg.connect_timeout_ms))
        .timeout(Duration::from_millis(cfg.timeout_ms))
        .redirect(reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() > max {
                return attempt.error(Refused(format!("more than {max} redirects")));
            }
            match hops.check(attempt.url()) {
                Ok(()) => attempt.follow(),
                Err(e) => attempt.error(Refused(format!("redirect refused: {e}"))),
            }
        }));
    if !cfg.allow_private_networks {
        b = b.dns_resolver(Arc::new(GuardedResolver));
    }
    if let Some(ca) = &cfg.extra_ca_file {
        for cert in crate::tls::load_certs(ca)? {
            b = b.add_root_certificate(reqwest::Certificate::from_der(&cert)?);
        }
    }
    Ok((b.build()?, policy))
}

/// Says what went wrong without the URL (reqwest puts it, query and all, in its messages).
fn describe(e: &reqwest::Error) -> (String, bool) {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(r) = s.downcast_ref::<Refused>() {
            return (r.to_string(), true);
        }
        source = s.source();
    }
    let what = if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        // The innermost cause (TLS, refused, unreachable); the chain below reqwest carries no URL.
        let mut cause: &dyn std::error::Error = e;
        while let Some(next) = cause.source() {
            cause = next;
        }
        format!("connection failed: {cause}")
    } else if e.is_redirect() {
        "redirect failed".to_string()
    } else {
        let mut msg = e.to_string();
        if let Some(u) = e.url() {
            msg = msg.replace(u.as_str(), &redact(u.as_str()));
        }
        msg
    };
    (what, false)
}

fn expired(job: &Job) -> bool {
    job.expires_at.is_some_and(|t| t <= Stamp::now())
}

/// Records how a download went, durably, on the single writer.
async fn record(
    inbox: &Inbox,
    key: Key,
    digest: String,
    outcome: Outcome,
) -> Result<(), crate::inbox::InboxError> {
    inbox
        .run(move |db| {
            db.transaction(crate::store::Durability::Synced, |db| {
                crate::media::record(db, &key, &digest, &outcome, Stamp::now())
            })
        })
        .await
}

pub struct Downloader {
    client: reqwest::Client,
    policy: Policy,
    dir: PathBuf,
    max_bytes: u64,
    retry_base: Duration,
    retry_max: Duration,
    /// How old a temporary file must be before no download can still be writing it.
    stale_tmp: Duration,
}

/// Margin over the request timeout before a temporary file counts as abandoned: the time
/// between the last body chunk and the rename (sync included).
const TMP_MARGIN: Duration = Duration::from_secs(60);

impl Downloader {
    pub fn new(cfg: &MediaConfig) -> anyhow::Result<Downloader> {
        let (client, policy) = client(cfg)?;
        Ok(Downloader {
            client,
            policy,
            dir: cfg.dir.clone(),
            max_bytes: cfg.max_bytes,
            retry_base: Duration::from_millis(cfg.retry_base_ms),
            retry_max: Duration::from_millis(cfg.retry_max_ms),
            stale_tmp: Duration::from_millis(cfg.timeout_ms).saturating_add(TMP_MARGIN),
        })
    }

    /// Removes temporary files that a killed run left behind; returns how many.
    ///
    /// Only files older than the request timeout (plus a margin) go: every download ends by
    /// then, so a younger file may be another instance's download in flight when several
    /// instances share `media.dir`. Runs at start and then once per `stale_tmp`.
    pub fn clean(&self) -> usize {
        let Ok(sources) = std::fs::read_dir(&self.dir) else {
            return 0;
        };
        let mut removed = 0;
        for dir in sources.flatten() {
            let Ok(files) = std::fs::read_dir(dir.path()) else {
                continue;
            };
            for f in files.flatten() {
                if !f.file_name().to_string_lossy().starts_with(".tmp-") {
                    continue;
                }
                let age = f
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok());
                if age.is_some_and(|a| a >= self.stale_tmp)
                    && std::fs::remove_file(f.path()).is_ok()
                {
                    removed += 1;
                }
            }
        }
        if removed > 0 {
            tracing::info!(removed, "removed abandoned temporary media files");
        }
        removed
    }

    fn retry(&self, job: &Job, error: String) -> Outcome {
        let exp = self
            .retry_base
            .saturating_mul(1u32 << job.attempts.clamp(0, 20));
        let delay = exp
            .min(self.retry_max)
            .mul_f64(rand::rng().random_range(0.5..1.0));
        let now = Stamp::now();
        let mut next = time::Duration::try_from(delay).map_or(now, |d| now.plus(d));
        if let Some(exp_at) = job.expires_at {
            if exp_at <= now {
                return Outcome::Expired {
                    error: format!("URL expired; last error: {error}"),
                };
            }
            next = next.min(exp_at);
        }
        Outcome::Retry {
            error,
            next_at: next,
        }
    }

    /// One attempt at one job.
    pub async fn attempt(&self, job: &Job) -> Outcome {
        if expired(job) {
            let error = match &job.last_error {
                Some(e) => format!("URL expired; last error: {e}"),
                None => "URL expired before it could be fetched".to_string(),
            };
            return Outcome::Expired { error };
        }
        let url = match Url::parse(&job.url) {
            Ok(u) => u,
            Err(_) => {
                return Outcome::Failed {
                    error: "not a URL".into(),
                }
            }
        };
        if let Err(e) = self.policy.check(&url) {
            return Outcome::Failed {
                error: e.to_string(),
            };
        }
        match self.download(job, url).await {
            Ok(o) => o,
            Err((error, true)) => Outcome::Failed { error },
            Err((error, false)) => self.retry(job, error),
        }
    }

    async fn download(&self, job: &Job, url: Url) -> Result<Outcome, (String, bool)> {
        let mut resp = self
            .client
            .get(url.clone())
            .send()
            .await
            .map_err(|e| describe(&e))?;
        let status = resp.status();
        if !status.is_success() {
            let error = format!("HTTP {}", status.as_u16());
            if matches!(status.as_u16(), 403 | 404) && expired(job) {
                return Ok(Outcome::Expired {
                    error: format!("{error} after the URL expired"),
                });
            }
            return Err((error, false));
        }
        if resp.content_length().is_some_and(|n| n > self.max_bytes) {
            return Err((
                format!(
                    "larger than media.max_bytes ({} > {})",
                    resp.content_length().unwrap_or(0),
                    self.max_bytes
                ),
                true,
            ));
        }
        let content_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let dir = self.dir.join(crate::media::name_part(&job.key.source));
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| (format!("cannot create {}: {e}", dir.display()), false))?;
        let ext = Path::new(url.path()).extension().and_then(|e| e.to_str());
        let name = crate::media::file_name(&job.key.followup_id, &job.key.kind, ext);
        let tmp = dir.join(format!(".tmp-{name}-{:016x}", rand::rng().random::<u64>()));
        let result = async {
            let mut file = tokio::fs::File::create(&tmp)
                .await
                .map_err(|e| (format!("cannot write: {e}"), false))?;
            let mut hasher = Sha256::new();
            let mut bytes: u64 = 0;
            while let Some(chunk) = resp.chunk().await.map_err(|e| describe(&e))? {
                bytes += chunk.len() as u64;
                if bytes > self.max_bytes {
                    return Err((
                        format!("larger than media.max_bytes ({})", self.max_bytes),
                        true,
                    ));
                }
                hasher.update(&chunk);
                file.write_all(&chunk)
                    .await
                    .map_err(|e| (format!("cannot write: {e}"), false))?;
            }
            file.sync_all()
                .await
                .map_err(|e| (format!("cannot sync: {e}"), false))?;
            Ok((hex::encode(hasher.finalize()), bytes))
        }
        .await;
        let (sha256, bytes) = match result {
            Ok(v) => v,
            Err(e) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                return Err(e);
            }
        };
        let path = dir.join(&name);
        tokio::fs::rename(&tmp, &path)
            .await
            .map_err(|e| (format!("cannot rename: {e}"), false))?;
        if let Ok(d) = tokio::fs::File::open(&dir).await {
            let _ = d.sync_all().await;
        }
        Ok(Outcome::Fetched {
            path: path.to_string_lossy().into_owned(),
            sha256,
            bytes: i64::try_from(bytes).unwrap_or(i64::MAX),
            content_type,
        })
    }
}

/// A directory walk is blocking I/O; it stays off the runtime's workers.
fn clean_in_background(downloader: &Arc<Downloader>) {
    let d = downloader.clone();
    tokio::task::spawn_blocking(move || d.clean());
}

/// Runs until `stop` is notified: takes due jobs from the store, downloads them with at most
/// `concurrency` at once, reports each outcome, and sleeps until the next one is due or new
/// media are announced on `wake`.
pub async fn run(
    inbox: Inbox,
    cfg: MediaConfig,
    metrics: Arc<crate::metrics::Metrics>,
    wake: Arc<Notify>,
    stop: Arc<Notify>,
) {
    let downloader = match Downloader::new(&cfg) {
        Ok(d) => Arc::new(d),
        Err(e) => {
            tracing::error!(error = %e, "media fetcher cannot start");
            return;
        }
    };
    clean_in_background(&downloader);
    let mut next_clean = tokio::time::Instant::now() + downloader.stale_tmp;
    let permits = Arc::new(Semaphore::new(cfg.concurrency));
    let in_flight: Arc<Mutex<HashSet<Key>>> = Arc::default();
    let mut tasks = JoinSet::new();
    let poll = Duration::from_millis(cfg.poll_interval_ms);
    let mut outage = Outage::new("media queue");
    loop {
        let mut sleep_for = poll;
        let free = permits.available_permits();
        if free > 0 {
            let busy = in_flight.lock().map(|s| s.len()).unwrap_or(0);
            match inbox
                .run(move |db| crate::media::due(db, Stamp::now(), (free + busy) as i64))
                .await
            {
                Ok((jobs, next)) => {
                    outage.recover();
                    for job in jobs {
                        let Ok(permit) = permits.clone().try_acquire_owned() else {
                            break;
                        };
                        if !in_flight
                            .lock()
                            .map(|mut s| s.insert(job.key.clone()))
                            .unwrap_or(false)
                        {
                            continue;
                        }
                        let (d, inbox, in_flight, wake, metrics) = (
                            downloader.clone(),
                            inbox.clone(),
                            in_flight.clone(),
                            wake.clone(),
                            metrics.clone(),
                        );
                        tasks.spawn(async move {
                            let outcome = d.attempt(&job).await;
                            let name = match &outcome {
                                Outcome::Fetched { .. } => "fetched",
                                Outcome::Retry { .. } => "retry",
                                Outcome::Failed { .. } => "failed",
                                Outcome::Expired { .. } => "expired",
                            };
                            metrics.media_downloads.with_label_values(&[name]).inc();
                            let host = Url::parse(&job.url).ok().and_then(|u| u.host_str().map(str::to_owned)).unwrap_or_default();
                            match &outcome {
                                Outcome::Fetched { bytes, .. } => tracing::info!(source = %job.key.source, followup = %job.key.followup_id, kind = %job.key.kind, %host, bytes, "media fetched"),
                                Outcome::Retry { error, next_at } => tracing::warn!(source = %job.key.source, followup = %job.key.followup_id, kind = %job.key.kind, %host, %error, %next_at, "media download failed; will retry"),
                                Outcome::Failed { error } | Outcome::Expired { error } => tracing::warn!(source = %job.key.source, followup = %job.key.followup_id, kind = %job.key.kind, %host, %error, "media not fetched"),
                            }
                            if let Err(e) = record(&inbox, job.key.clone(), job.digest.clone(), outcome).await {
                                tracing::warn!(error = %e, "cannot record media outcome; it will be retried");
                            }
                            if let Ok(mut s) = in_flight.lock() {
                                s.remove(&job.key);
                            }
                            drop(permit);
                            wake.notify_one();
                        });
                    }
                    if let Some(next) = next {
                        let until = Stamp::now().until(next);
                        sleep_for = sleep_for.min(until.max(Duration::from_millis(10)));
                    }
                }
                Err(e) => outage.fail(&e),
            }
        }
        while tasks.try_join_next().is_some() {}
        if tokio::time::Instant::now() >= next_clean {
            clean_in_background(&downloader);
            next_clean = tokio::time::Instant::now() + downloader.stale_tmp;
        }
        tokio::select! {
            () = wake.notified() => {}
            () = tokio::time::sleep(sleep_for) => {}
            () = stop.notified() => break,
        }
    }
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_refuses_before_connecting() {
        let p = Policy {
            allowed_hosts: vec!["*.cloudfront.net".into(), "127.0.0.1".into(), "::1".into()],
            allow_private: false,
            allow_http: false,
        };
        assert!(p
            .check(&Url::parse("https://d1.cloudfront.net/a.mp3?sig=1").unwrap())
            .is_ok());
        for (url, why) in [
            ("http://d1.cloudfront.net/a.mp3", "scheme"),
            ("https://evil.example/a.mp3", "not on media.allowed_hosts"),
            ("https://127.0.0.1/a.mp3", "not public"),
            ("https://[::1]/a.mp3", "not public"),
            ("file:///etc/passwd", "scheme"),
        ] {
            let e = p.check(&Url::parse(url).unwrap()).unwrap_err().to_string();
            assert!(e.contains(why), "{url}: {e}");
            assert!(!e.contains("sig="));
        }
    }

    #[test]
    fn only_temporary_files_older_than_any_download_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = MediaConfig {
            dir: dir.path().to_path_buf(),
            timeout_ms: 1_000,
            ..MediaConfig::default()
        };
        let d = Downloader::new(&cfg).unwrap();
        let source = dir.path().join("getbill");
        std::fs::create_dir(&source).unwrap();
        let write = |name: &str, age: Duration| {
            let f = std::fs::File::create(source.join(name)).unwrap();
            f.set_modified(std::time::SystemTime::now() - age).unwrap();
        };
        assert_eq!(d.stale_tmp, Duration::from_secs(1) + TMP_MARGIN);
        let old = d.stale_tmp + Duration::from_secs(5);
        write(".tmp-f1-audio.mp3-00000000000000aa", old); // a killed run's leftover
        write(".tmp-f2-audio.mp3-00000000000000bb", Duration::ZERO); // a download in flight
        write("f3-audio.mp3", old); // a finished download, however old
        assert_eq!(d.clean(), 1);
        let mut left: Vec<String> = std::fs::read_dir(&source)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, [".tmp-f2-audio.mp3-00000000000000bb", "f3-audio.mp3"]);
    }

    #[test]
    fn file_names_are_one_to_one_and_bounded() {
        use crate::media::{file_name, name_part};
        assert_eq!(
            file_name("f8a3c7e2d9b1", "audio", Some("mp3")),
            "f8a3c7e2d9b1.audio.mp3"
        );
        assert_eq!(
            name_part("../../etc/passwd"),
            "%2E%2E%2F%2E%2E%2Fetc%2Fpasswd"
        );
        let ids = [
            "a/b", "a_b", "a%2Fb", ".hidden", "hidden", "", "~", "a b", "é",
        ];
        let names: std::collections::HashSet<String> =
            ids.iter().map(|i| file_name(i, "audio", None)).collect();
        assert_eq!(names.len(), ids.len(), "{names:?}");
        let long = "x".repeat(300);
        let longer = format!("{long}y");
        assert_ne!(
            file_name(&long, "pdf", Some("pdf")),
            file_name(&longer, "pdf", Some("pdf"))
        );
        assert!(file_name(&"/".repeat(10_000), "audio", Some("mp3")).len() <= 150);
    }
}
