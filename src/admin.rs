//! The admin listener (plain HTTP, loopback by default): `/healthz` while the process lives,
//! `/readyz` while the database takes writes, `/metrics` in Prometheus text format.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::inbox::Inbox;
use crate::metrics::Metrics;
use crate::server::bytes_util::{full, Body};

pub struct Admin {
    pub inbox: Inbox,
    pub metrics: Arc<Metrics>,
}

impl Admin {
    async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        let (status, body) = match req.uri().path() {
            "/healthz" => (StatusCode::OK, "ok\n".to_string()),
            "/readyz" => match self.inbox.ping().await {
                Ok(()) => (StatusCode::OK, "ready\n".to_string()),
                Err(e) => {
                    tracing::warn!(error = %e, "not ready");
                    (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {e}\n"))
                }
            },
            "/metrics" => (StatusCode::OK, self.metrics.render()),
            _ => (StatusCode::NOT_FOUND, "not found\n".to_string()),
        };
        let mut r = Response::new(full(body));
        *r.status_mut() = status;
        r
    }
}

/// Serves until `shutdown`, then closes its connections: they hold the inbox handle, and the
/// store thread only stops once every handle is gone.
pub async fn serve(listener: TcpListener, admin: Arc<Admin>, shutdown: impl Future<Output = ()>) {
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let admin = admin.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let admin = admin.clone();
                async move { Ok::<_, Infallible>(admin.handle(req).await) }
            });
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(5));
            let _ = watcher
                .watch(http.serve_connection(TokioIo::new(stream), svc))
                .await;
        });
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), graceful.shutdown()).await;
}
