//! The admin listener (plain HTTP, loopback by default): `/healthz` while the process lives,
//! `/readyz` while the database takes writes, `/metrics` in Prometheus text format.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use tokio::net::TcpListener;

use crate::inbox::Inbox;
use crate::listener::{full, Body, ConnLimits, Handler};
use crate::metrics::{Backlog, Metrics};
use crate::store::{Db, DbOptions, StoreError};

pub struct Admin {
    pub inbox: Inbox,
    pub metrics: Arc<Metrics>,
    pub backlog: BacklogReader,
}

/// Reads the backlog on a connection of its own, kept between scrapes, on a blocking thread:
/// a count over a large backlog takes a while, and on the store thread it would hold up the
/// commits senders are waiting for.
pub struct BacklogReader {
    opts: DbOptions,
    conn: Arc<std::sync::Mutex<Option<Db>>>,
    /// The `[[forward]]` destinations whose deliveries are counted.
    destinations: Arc<Vec<String>>,
}

impl BacklogReader {
    /// How long a scrape waits for the counts before it leaves them out.
    const LIMIT: Duration = Duration::from_secs(2);

    pub fn new(opts: DbOptions, destinations: Vec<String>) -> Self {
        Self {
            opts,
            conn: Arc::default(),
            destinations: Arc::new(destinations),
        }
    }

    /// `None` while the database cannot answer in time.
    async fn read(&self) -> Option<Backlog> {
        let (opts, conn) = (self.opts.clone(), self.conn.clone());
        let destinations = self.destinations.clone();
        let task = tokio::task::spawn_blocking(move || {
            // A count still waiting from an earlier scrape holds the connection: this one is
            // left out too, rather than one more blocking thread queueing behind it.
            let mut conn = conn.try_lock().ok()?;
            if conn.is_none() {
                *conn = Db::connect(&opts).ok();
            }
            let counted = count(conn.as_mut()?, &destinations);
            if counted.is_err() {
                *conn = None;
            }
            counted.ok()
        });
        tokio::time::timeout(Self::LIMIT, task).await.ok()?.ok()?
    }
}

fn count(db: &mut Db, destinations: &[String]) -> Result<Backlog, StoreError> {
    let oldest = crate::ops::oldest_queued(db)?;
    Ok(Backlog {
        oldest_queued_seconds: oldest
            .map_or(0.0, |t| t.until(crate::stamp::Stamp::now()).as_secs_f64()),
        events_queued: db.count("SELECT COUNT(*) AS n FROM events WHERE status = 'queued'")?,
        media_pending: db.count("SELECT COUNT(*) AS n FROM media WHERE status = 'pending'")?,
        deliveries: crate::deliveries::summary(db, destinations)?,
    })
}

impl Admin {
    async fn respond(&self, req: Request<Incoming>) -> Response<Body> {
        const TEXT: &str = "text/plain; charset=utf-8";
        let (status, body, kind) = match req.uri().path() {
            "/healthz" => (StatusCode::OK, "ok\n".to_string(), TEXT),
            // A failed ping is counted in the store's own outage log, not once per probe.
            "/readyz" => match self.inbox.ping().await {
                Ok(()) => (StatusCode::OK, "ready\n".to_string(), TEXT),
                Err(e) => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("not ready: {e}\n"),
                    TEXT,
                ),
            },
            "/metrics" => {
                // While the database cannot answer, the gauges keep their last values and
                // `hooksync_database_up` says 0, so an alert on them does not silently stop.
                self.metrics.set_backlog(self.backlog.read().await);
                // Prometheus refuses a scrape without its content type.
                (
                    StatusCode::OK,
                    self.metrics.render(),
                    crate::metrics::CONTENT_TYPE,
                )
            }
            _ => (StatusCode::NOT_FOUND, "not found\n".to_string(), TEXT),
        };
        let mut r = Response::new(full(body));
        *r.status_mut() = status;
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static(kind),
        );
        r
    }
}

/// Connections the admin listener serves at once: a scraper, a probe or two, an operator.
const ADMIN_CONNECTIONS: usize = 64;

impl Handler for Admin {
    async fn handle(self: Arc<Self>, req: Request<Incoming>, _peer: SocketAddr) -> Response<Body> {
        self.respond(req).await
    }
}

/// Serves until `shutdown`, then closes its connections: they hold the inbox handle, and the
/// store thread only stops once every handle is gone.
pub async fn serve(listener: TcpListener, admin: Arc<Admin>, shutdown: impl Future<Output = ()>) {
    let limits = ConnLimits {
        max_connections: ADMIN_CONNECTIONS,
        max_per_peer: ADMIN_CONNECTIONS,
        header_timeout: Duration::from_secs(5),
        tls_handshake_timeout: Duration::from_secs(5),
        shutdown_grace: Duration::from_secs(5),
    };
    let (_plain, tls) = tokio::sync::watch::channel(None);
    crate::listener::serve("admin", listener, tls, admin, limits, || {}, shutdown).await;
}
