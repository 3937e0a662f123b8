//! Wiring: opens the store, starts the store thread, serves until shutdown, then drains.

use std::collections::HashMap;
use std::future::Future;
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

/// The configured endpoints, their secrets resolved.
pub fn endpoints(cfg: &Config) -> anyhow::Result<Vec<Endpoint>> {
    cfg.endpoints
        .iter()
        .map(Endpoint::from_config)
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow::anyhow!(e))
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
    problems.extend(crate::providers::check(&cfg.endpoints));
    problems
}

/// Reads the configuration (file and environment) and checks it whole.
pub fn load_config(path: Option<&std::path::Path>) -> Result<Config, ConfigError> {
    Config::load_checked(path, &check)
}

/// A configuration in TOML, checked whole (for tests and tools).
pub fn config_from_toml(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml_checked(text, &check)
}

/// What the projector applies each source's events with.
pub fn providers(endpoints: &[Endpoint]) -> HashMap<String, Arc<dyn Provider>> {
    endpoints
        .iter()
        .map(|e| (e.source.to_string(), e.provider.clone()))
        .collect()
}

/// Runs the daemon until `shutdown` resolves: migrations, store thread, listeners. Returns
/// after in-flight requests are answered and the last commit is done.
pub async fn run(
    cfg: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send,
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
        Metrics::inc(&checkpoint_failures.checkpoint_failures)
    })?;
    let media_wake = Arc::new(tokio::sync::Notify::new());
    let projector = cfg.projector.enabled.then(|| {
        Projector::new(
            providers(&endpoints),
            crate::projector::chunk_size(&cfg.projector, opts.url.backend()),
            cfg.projector.max_attempts,
            metrics.clone(),
            cfg.media.enabled.then(|| media_wake.clone()),
        )
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

    let tls = match (&cfg.server.tls_cert, &cfg.server.tls_key) {
        (Some(cert), Some(key)) => Some(tokio_rustls::TlsAcceptor::from(
            crate::tls::server_config(cert, key)?,
        )),
        _ => {
            tracing::warn!("no TLS certificate configured: serving plain HTTP (only behind a TLS-terminating proxy)");
            None
        }
    };
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
            backlog: admin::BacklogReader::new(opts.clone()),
        });
        let mut rx = stop_rx.clone();
        tokio::spawn(admin::serve(l, admin, async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }))
    });

    tracing::info!(
        addr = %listeners.webhooks.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        tls = tls.is_some(),
        endpoints = cfg.endpoints.len(),
        "listening for webhooks"
    );
    let app = Arc::new(Webhooks::new(endpoints, inbox, limits, metrics));
    server::serve(listeners.webhooks, tls, app, shutdown).await;

    let _ = stop_tx.send(true);
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
