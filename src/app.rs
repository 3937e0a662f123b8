//! Wiring: opens the store, starts the store thread, serves until shutdown, then drains.

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::admin::{self, Admin};
use crate::config::{Config, ConfigError};
use crate::inbox::{Inbox, InboxConfig};
use crate::metrics::Metrics;
use crate::projector::Projector;
use crate::providers::{Endpoint, Provider};
use crate::server::{self, Limits, Webhooks};
use crate::store::{self, DbOptions, DbUrl};
use crate::systemd::State;

/// The sockets the daemon serves on; tests bind port 0 and read the addresses back.
pub struct Listeners {
    pub webhooks: TcpListener,
    pub admin: Option<TcpListener>,
}

impl Listeners {
    pub async fn bind(cfg: &Config) -> anyhow::Result<Listeners> {
        let webhooks = TcpListener::bind(cfg.server.listen)
            .await
            .with_context(|| format!("cannot listen on {}", cfg.server.listen))?;
        let admin = match cfg.server.admin_listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen on {addr}"))?,
            ),
            None => None,
        };
        Ok(Listeners { webhooks, admin })
    }
}

pub fn db_options(cfg: &Config) -> anyhow::Result<DbOptions> {
    let url = DbUrl::parse(&cfg.database.url).map_err(|e| anyhow::anyhow!("database.url: {e}"))?;
    Ok(DbOptions {
        url,
        busy_timeout_ms: cfg.database.busy_timeout_ms,
    })
}

/// The configured endpoints, their secrets resolved; those a passthrough destination takes
/// keep each body and its signature headers as received.
pub fn endpoints(cfg: &Config) -> anyhow::Result<Vec<Endpoint>> {
    let mut endpoints: Vec<Endpoint> = cfg
        .endpoints
        .iter()
        .map(Endpoint::from_config)
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow::anyhow!(e))?;
    for ep in &mut endpoints {
        ep.keep_original = cfg.forward.iter().any(|f| {
            f.mode == crate::config::ForwardMode::Passthrough
                && (f.endpoints.is_empty() || f.endpoints.contains(&ep.name))
        });
    }
    Ok(endpoints)
}

/// Everything `check-config` checks beyond the file's own form, each by the module that owns
/// it: the database URL and batch size, the providers' settings and secrets, the media CA
/// file. `serve`, `rebuild` and `check-config` all go through it.
pub fn check(cfg: &Config) -> Vec<String> {
    let mut problems = Vec::new();
    if let Err(e) = DbUrl::parse(&cfg.database.url) {
        problems.push(format!("database.url: {e}"));
    }
    problems.extend(crate::inbox::check(&cfg.database));
    if let Some(ca) = &cfg.media.extra_ca_file {
        if let Err(e) = crate::tls::load_certs(ca) {
            problems.push(format!("media.extra_ca_file: {e}"));
        }
    }
    // Loaded exactly as `serve` loads them, so a certificate and key that do not belong
    // together are refused here, before a unit that checks first would restart in a loop.
    if let (Some(cert), Some(key)) = (&cfg.server.tls_cert, &cfg.server.tls_key) {
        if let Err(e) = crate::tls::server_config(cert, key) {
            problems.push(format!("server.tls_cert / server.tls_key: {e}"));
        }
    }
    problems.extend(crate::providers::check(&cfg.endpoints));
    problems.extend(crate::forwarder::check(&cfg.forward));
    problems
}

/// Reads the configuration (file and environment) and checks it whole.
pub fn load_config(path: Option<&std::path::Path>) -> Result<Config, ConfigError> {
    Config::load_checked(path, &check)
}

/// The configuration as a rebuild needs it: checked whole except for secrets, which it does
/// not use (each that does not resolve has a stand-in).
pub fn load_config_without_secrets(path: Option<&std::path::Path>) -> Result<Config, ConfigError> {
    fn without(cfg: &Config) -> Config {
        let mut cfg = cfg.clone();
        cfg.endpoints = cfg
            .endpoints
            .iter()
            .map(crate::providers::without_secrets)
            .collect();
        for f in &mut cfg.forward {
            if !f.secrets.is_empty() {
                f.secrets = vec![crate::forwarder::STAND_IN_SECRET.to_owned()];
            }
        }
        cfg
    }
    let cfg = Config::load_checked(path, &|cfg: &Config| check(&without(cfg)))?;
    Ok(without(&cfg))
}

/// A configuration in TOML, checked whole (for tests and tools).
pub fn config_from_toml(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml_checked(text, &check)
}

/// The `[[forward]]` destinations, each with the sources of the endpoints it takes.
pub fn routes(cfg: &Config) -> Vec<crate::deliveries::Route> {
    let sources: HashMap<String, String> = cfg
        .endpoints
        .iter()
        .map(|e| (e.name.clone(), e.source().to_owned()))
        .collect();
    cfg.forward
        .iter()
        .map(|f| crate::deliveries::Route::new(f, &sources))
        .collect()
}

/// What the projector applies each source's events with.
pub fn providers(endpoints: &[Endpoint]) -> HashMap<String, Arc<dyn Provider>> {
    endpoints
        .iter()
        .map(|e| (e.source.to_string(), e.provider.clone()))
        .collect()
}

/// How a running daemon is asked to read its configuration again (SIGHUP): the file it came
/// from, a message per request, and how to change the log's level.
pub struct Reloads {
    pub path: Option<PathBuf>,
    pub requests: tokio::sync::mpsc::Receiver<()>,
    pub set_log: SetLog,
}

/// Replaces the log's level filter (a `RUST_LOG`-style spec) and its format (`text`, `json`),
/// each when given.
pub type SetLog = Box<dyn Fn(Option<&str>, Option<&str>) -> Result<(), String> + Send + Sync>;

/// Runs the daemon until `shutdown` resolves: migrations, store thread, listeners. Returns
/// after in-flight requests are answered and the last commit is done.
pub async fn run(
    cfg: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    run_reloadable(cfg, listeners, shutdown, None).await
}

/// [`run`], reading the configuration again at each of `reloads`' requests.
pub async fn run_reloadable(
    cfg: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send,
    reloads: Option<Reloads>,
) -> anyhow::Result<()> {
    let endpoints = endpoints(&cfg)?;
    let opts = db_options(&cfg)?;
    let db = {
        let opts = opts.clone();
        tokio::task::spawn_blocking(move || store::open_and_migrate(&opts)).await??
    };
    let metrics = Arc::new(Metrics::default());
    let checkpoint_failures = metrics.clone();
    let checkpointer = store::Checkpointer::start(&opts, store::CHECKPOINT_INTERVAL, move || {
        checkpoint_failures.db_error("checkpoint")
    })?;
    let media_wake = Arc::new(tokio::sync::Notify::new());
    let routes = routes(&cfg);
    // Each source's provider: what the projector applies events with, and what a passthrough
    // destination re-signs an event kept without its headers with.
    let by_source = providers(&endpoints);
    // Told by the projector when it created deliveries; kept here until the forwarders stop.
    let forward_wake = Arc::new(tokio::sync::watch::Sender::new(()));
    let projector = cfg.projector.enabled.then(|| {
        Projector::new(
            by_source.clone(),
            crate::projector::chunk_size(&cfg.projector, opts.url.backend()),
            cfg.projector.max_attempts,
            metrics.clone(),
            cfg.media.enabled.then(|| media_wake.clone()),
        )
        .forwarding(routes.clone(), forward_wake.clone())
    });
    // PostgreSQL takes the projector's writes beside ingest's on a connection of its own, so a
    // chunk never holds up a batch; SQLite has one writer, so there they share the store thread.
    let (work, beside): (Option<Box<dyn crate::inbox::Background>>, _) =
        match (projector, opts.url.backend()) {
            (Some(p), store::Backend::Postgres) => {
                let poll = Duration::from_millis(cfg.projector.poll_interval_ms);
                let beside = crate::projector::spawn_beside(p, opts.clone(), poll)
                    .context("cannot start the projector thread")?;
                (None, Some(beside))
            }
            (Some(p), store::Backend::Sqlite) => (Some(Box::new(p)), None),
            (None, _) => (None, None),
        };
    let (inbox, store_thread) = Inbox::start(
        db,
        InboxConfig {
            db: opts.clone(),
            batch_max: cfg.database.batch_max,
            queue_capacity: cfg.database.queue_capacity,
            commit_timeout: Duration::from_millis(cfg.database.commit_timeout_ms),
            poll_interval: Duration::from_millis(cfg.projector.poll_interval_ms),
            writer_nice: cfg.database.writer_nice,
        },
        work,
        beside,
        metrics.clone(),
    )
    .context("cannot start the store thread")?;

    let tls = tls_acceptor(&cfg)?;
    if tls.is_none() {
        tracing::warn!("no TLS certificate configured: serving plain HTTP (only behind a TLS-terminating proxy)");
    }
    let s = &cfg.server;
    let limits = Limits {
        max_body_bytes: s.max_body_bytes,
        max_connections: s.max_connections,
        max_connections_per_peer: s.max_connections_per_peer,
        events: crate::providers::EventLimits {
            max_json_depth: s.max_json_depth,
            max_future_skew: Duration::from_millis(s.max_future_skew_ms),
        },
        header_timeout: Duration::from_millis(s.header_timeout_ms),
        body_timeout: Duration::from_millis(s.body_timeout_ms),
        tls_handshake_timeout: Duration::from_millis(s.header_timeout_ms),
        shutdown_grace: Duration::from_millis(s.shutdown_grace_ms),
    };

    let media_stop = Arc::new(tokio::sync::Notify::new());
    let fetcher = cfg.media.enabled.then(|| {
        tokio::spawn(crate::fetcher::run(
            inbox.clone(),
            cfg.media.clone(),
            metrics.clone(),
            media_wake.clone(),
            media_stop.clone(),
        ))
    });

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let admin_task = listeners.admin.map(|l| {
        tracing::info!(addr = %l.local_addr().map(|a| a.to_string()).unwrap_or_default(), "admin listening");
        let admin = Arc::new(Admin {
            inbox: inbox.clone(),
            metrics: metrics.clone(),
            backlog: admin::BacklogReader::new(
                opts.clone(),
                cfg.forward.iter().map(|f| f.name.clone()).collect(),
            ),
        });
        let mut rx = stop_rx.clone();
        tokio::spawn(admin::serve(l, admin, async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }))
    });

    let addr = listeners
        .webhooks
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    tracing::info!(%addr, tls = tls.is_some(), endpoints = cfg.endpoints.len(), "listening for webhooks");
    let (tls_tx, tls_rx) = tokio::sync::watch::channel(tls);
    let metrics_for_forwarding = metrics.clone();
    let app = Arc::new(Webhooks::new(
        endpoints,
        inbox.clone(),
        limits,
        metrics,
        cfg.log.access,
    ));
    let reloader = reloads.map(|r| tokio::spawn(reload_loop(r, cfg.clone(), app.clone(), tls_tx)));
    let watchdog = crate::systemd::watchdog_interval().map(|every| {
        let mut rx = stop_rx.clone();
        tokio::spawn(feed_watchdog(inbox.clone(), every, async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }))
    });
    // This process's row in hooksync_runs, kept alive while it serves: `status` reports the
    // gaps between such rows as downtime.
    let run_id = format!("{:016x}", rand::random::<u64>());
    {
        let id = run_id.clone();
        inbox
            .run(move |db| crate::runs::start(db, &id, crate::stamp::Stamp::now()))
            .await
            .context("cannot record this run")?;
    }
    if opts.url.backend() == store::Backend::Sqlite && !routes.is_empty() {
        // One process serves a SQLite file: a claim left there is a killed run's.
        inbox
            .run(crate::deliveries::release_all)
            .await
            .context("cannot give back the deliveries a killed run claimed")?;
    }
    let mut forwarders = Vec::new();
    for route in routes {
        let dest = crate::forwarder::Destination::new(route, by_source.clone())
            .context("cannot start forwarding")?;
        forwarders.push(tokio::spawn(crate::forwarder::run(
            Arc::new(dest),
            crate::forwarder::Store::new(&inbox, &opts),
            Arc::from(run_id.as_str()),
            metrics_for_forwarding.clone(),
            forward_wake.subscribe(),
            stop_rx.clone(),
        )));
    }
    let beats = {
        let (inbox, id, mut rx) = (inbox.clone(), run_id.clone(), stop_rx.clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = tokio::time::sleep(crate::runs::BEAT) => {}
                    _ = rx.wait_for(|stop| *stop) => return inbox,
                }
                let id = id.clone();
                // A beat that fails is a beat missed; the store's own outage log says why.
                let _ = inbox
                    .run(move |db| crate::runs::beat(db, &id, crate::stamp::Stamp::now()))
                    .await;
            }
        })
    };
    drop(inbox);
    // Both listeners are bound and the store is migrated: connections are accepted from here.
    let status = format!("serving {} endpoint(s) on {addr}", cfg.endpoints.len());
    crate::systemd::notify(&[State::Ready, State::Status(&status)]);
    server::serve(listeners.webhooks, tls_rx, app, async {
        shutdown.await;
        crate::systemd::notify(&[State::Stopping]);
    })
    .await;

    let _ = stop_tx.send(true);
    for f in forwarders {
        let _ = f.await;
    }
    drop(forward_wake);
    if let Ok(inbox) = beats.await {
        let id = run_id.clone();
        if let Err(e) = inbox
            .run(move |db| crate::runs::stop(db, &id, crate::stamp::Stamp::now()))
            .await
        {
            tracing::warn!(error = %e, "cannot record the end of this run");
        }
    }
    if let Some(r) = reloader {
        r.abort();
        let _ = r.await;
    }
    if let Some(w) = watchdog {
        let _ = w.await;
    }
    // Downloads in flight are dropped; their rows stay pending and resume at the next start.
    media_stop.notify_one();
    if let Some(f) = fetcher {
        let _ = f.await;
    }
    if let Some(t) = admin_task {
        let _ = t.await;
    }
    // The last `Inbox` handle is gone with the server and the admin: the store thread finishes
    // the commit in progress, stops the projector and exits.
    tokio::task::spawn_blocking(move || store_thread.join())
        .await?
        .map_err(|_| anyhow::anyhow!("store thread panicked"))?;
    if let Some(c) = checkpointer {
        tokio::task::spawn_blocking(move || c.stop()).await?;
    }
    tracing::info!("stopped");
    Ok(())
}

fn tls_acceptor(cfg: &Config) -> anyhow::Result<Option<tokio_rustls::TlsAcceptor>> {
    Ok(match (&cfg.server.tls_cert, &cfg.server.tls_key) {
        (Some(cert), Some(key)) => Some(tokio_rustls::TlsAcceptor::from(
            crate::tls::server_config(cert, key)?,
        )),
        _ => None,
    })
}

/// Keeps systemd's watchdog fed while the store thread answers: a ping that gets any answer
/// in time (even "the database is down") shows the thread alive; a wedged thread answers
/// nothing, the keep-alives stop, and systemd restarts the service.
async fn feed_watchdog(inbox: Inbox, every: Duration, stop: impl Future<Output = ()>) {
    tokio::pin!(stop);
    // Logged as a run (when it starts, while it lasts, when it ends), not at every interval.
    let mut unfed = crate::outage::Outage::new("feeding the systemd watchdog");
    loop {
        let answered = matches!(
            tokio::time::timeout(every, inbox.ping()).await,
            Ok(Ok(()) | Err(crate::inbox::InboxError::Unavailable(_)))
        );
        if answered {
            unfed.recover();
            crate::systemd::notify(&[State::Watchdog]);
        } else {
            unfed.fail(&format_args!(
                "the store thread did not answer within {every:?}"
            ));
        }
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = &mut stop => return,
        }
    }
}

/// A configuration read again and checked whole, ready to replace the running one.
struct Prepared {
    cfg: Config,
    endpoints: Vec<Endpoint>,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

fn prepare(path: Option<&std::path::Path>) -> anyhow::Result<Prepared> {
    let cfg = load_config(path)?;
    let endpoints = endpoints(&cfg)?;
    let tls = tls_acceptor(&cfg)?;
    Ok(Prepared {
        cfg,
        endpoints,
        tls,
    })
}

/// The keys that changed between `old` and `new` but apply only at the next start.
fn needs_restart(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut keys = Vec::new();
    let (o, n) = (&old.server, &new.server);
    if o.listen != n.listen {
        keys.push("server.listen");
    }
    if o.admin_listen != n.admin_listen {
        keys.push("server.admin_listen");
    }
    if o.tls_cert.is_some() != n.tls_cert.is_some() {
        keys.push("server.tls_cert (TLS on or off)");
    }
    let mut same_limits = n.clone();
    same_limits.listen = o.listen;
    same_limits.admin_listen = o.admin_listen;
    same_limits.tls_cert.clone_from(&o.tls_cert);
    same_limits.tls_key.clone_from(&o.tls_key);
    if &same_limits != o {
        keys.push("server (limits and timeouts)");
    }
    if old.database != new.database {
        keys.push("database");
    }
    if old.projector != new.projector {
        keys.push("projector");
    }
    if old.media != new.media {
        keys.push("media");
    }
    if old.log.access != new.log.access {
        keys.push("log.access");
    }
    if old.forward != new.forward {
        keys.push("forward");
    }
    keys
}

/// Applies each reload request: the file is read and checked whole on a blocking thread; a
/// file with any error is refused and the running configuration stays. What can change live
/// does (endpoints with their secrets, tenants, topics and headers; the TLS certificate and
/// key; the log level); the keys that need a restart are named.
async fn reload_loop(
    mut r: Reloads,
    mut running: Config,
    app: Arc<Webhooks>,
    tls: tokio::sync::watch::Sender<Option<tokio_rustls::TlsAcceptor>>,
) {
    while r.requests.recv().await.is_some() {
        crate::systemd::notify(&[State::Reloading]);
        let path = r.path.clone();
        let prepared = tokio::task::spawn_blocking(move || prepare(path.as_deref())).await;
        match prepared {
            Ok(Ok(next)) => {
                let restart = needs_restart(&running, &next.cfg);
                let endpoints = next.endpoints.len();
                app.set_endpoints(next.endpoints);
                running.endpoints = next.cfg.endpoints;
                if running.server.tls_cert.is_some() == next.cfg.server.tls_cert.is_some() {
                    tls.send_replace(next.tls);
                    running.server.tls_cert = next.cfg.server.tls_cert;
                    running.server.tls_key = next.cfg.server.tls_key;
                }
                if running.log.level != next.cfg.log.level {
                    if std::env::var_os("RUST_LOG").is_some() {
                        tracing::warn!("log.level not applied: RUST_LOG sets the level");
                    } else if let Err(e) = (r.set_log)(Some(&next.cfg.log.level), None) {
                        tracing::warn!(error = %e, "log.level not applied");
                    } else {
                        running.log.level = next.cfg.log.level;
                    }
                }
                if running.log.format != next.cfg.log.format {
                    match (r.set_log)(None, Some(&next.cfg.log.format)) {
                        Ok(()) => running.log.format = next.cfg.log.format,
                        Err(e) => tracing::warn!(error = %e, "log.format not applied"),
                    }
                }
                if restart.is_empty() {
                    tracing::info!(endpoints, "configuration reloaded");
                } else {
                    tracing::warn!(endpoints, not_applied = %restart.join(", "), "configuration reloaded; the keys named need a restart to apply");
                }
            }
            Ok(Err(e)) => {
                tracing::error!(
                    error = format!("{e:#}"),
                    "configuration not reloaded; the running one stays"
                )
            }
            Err(e) => tracing::error!(error = %e, "configuration not reloaded"),
        }
        crate::systemd::notify(&[State::Ready]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::ONE_ENDPOINT;

    #[test]
    fn chunk_and_batch_sizes_follow_the_backend_and_fit_a_statement() {
        use crate::store::Backend;
        let unset = config_from_toml(ONE_ENDPOINT).unwrap().projector;
        assert_eq!(crate::projector::chunk_size(&unset, Backend::Sqlite), 32);
        assert_eq!(crate::projector::chunk_size(&unset, Backend::Postgres), 128);
        let set = config_from_toml(&format!("[projector]\nbatch = 7\n{ONE_ENDPOINT}"))
            .unwrap()
            .projector;
        assert_eq!(crate::projector::chunk_size(&set, Backend::Sqlite), 7);
        assert_eq!(crate::projector::chunk_size(&set, Backend::Postgres), 7);
        let max = crate::inbox::MAX_BATCH;
        let big = config_from_toml(&format!(
            "[database]\nbatch_max = {}\n{ONE_ENDPOINT}",
            max + 1
        ));
        let said = format!("database.batch_max: at most {max}");
        assert!(
            matches!(&big, Err(crate::config::ConfigError::Invalid(p)) if p.iter().any(|p| p.starts_with(&said))),
            "{big:?}"
        );
        assert!(
            config_from_toml(&format!("[database]\nbatch_max = {max}\n{ONE_ENDPOINT}")).is_ok()
        );
        let zero = config_from_toml(&format!("[projector]\nbatch = 0\n{ONE_ENDPOINT}"));
        assert!(
            matches!(&zero, Err(crate::config::ConfigError::Invalid(p)) if p.iter().any(|p| p == "projector.batch: must be greater than 0")),
            "{zero:?}"
        );
    }

    #[test]
    fn names_every_bad_key() {
        let err = config_from_toml(
            r#"
            [server]
            listen = "127.0.0.1:0"
            max_body_byte = 10
            [database]
            url = "mysql://x"
            colour = "blue"
            [[endpoints]]
            name = "a"
            path = "no-slash"
            provider = "nope"
            secrets = ["env:HOOKSYNC_TEST_SURELY_UNSET_VAR"]
            "#,
        )
        .unwrap_err()
        .to_string();
        for needle in [
            "server.max_body_byte: unknown key",
            "database.colour: unknown key",
            "database.url",
            "endpoints[0].path",
            "endpoints[0].provider: unknown provider \"nope\"",
            "endpoints[0].secrets[0]: environment variable HOOKSYNC_TEST_SURELY_UNSET_VAR is not set",
        ] {
            assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
        }
    }

    #[test]
    fn provider_settings_are_checked() {
        let err = config_from_toml(
            r#"
            [[endpoints]]
            name = "a"
            path = "/a"
            provider = "bigledger-topic"
            [[endpoints]]
            name = "b"
            path = "/b"
            provider = "standard"
            secrets = ["whsec_%%%"]
            [[endpoints]]
            name = "c"
            path = "/c"
            provider = "standard"
            secrets = ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]
            tenant = "t1"
            [[endpoints]]
            name = "d"
            source = "c"
            path = "/d"
            provider = "bill"
            secrets = ["k"]
            [[endpoints]]
            name = "e"
            path = "/e"
            provider = "bill"
            "#,
        )
        .unwrap_err()
        .to_string();
        for needle in [
            "endpoints[0].topic: required",
            "endpoints[1].secrets[0]: not a whsec_<base64> secret",
            "endpoints[2].tenant: standard events carry no tenant",
            "endpoints[3].source: \"c\" is shared with a standard endpoint",
            "endpoints[4].secrets: at least one secret is needed",
        ] {
            assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
        }
    }
}
