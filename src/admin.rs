//! The admin listener (plain HTTP, loopback by default): `/healthz` while the process lives,
//! `/readyz` while the database takes writes, `/metrics` in Prometheus text format.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
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

pub async fn serve(listener: TcpListener, admin: Arc<Admin>, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r { Ok((s, _)) => s, Err(_) => continue },
            () = &mut shutdown => return,
        };
        let admin = admin.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let admin = admin.clone();
                async move { Ok::<_, Infallible>(admin.handle(req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}
