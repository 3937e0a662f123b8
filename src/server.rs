//! The webhook listener: a raw hyper 1 accept loop with TLS, bounded connections, bounded
//! header and body time, bounded body size, and graceful shutdown. Requests are routed by path
//! to their endpoint; every failure maps to its status code in one place (`Reject::status`).

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes_util::{full, Body};
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

use crate::inbox::{Inbox, InboxError, Stored};
use crate::metrics::Metrics;
use crate::outage::{Outage, SharedOutage};
use crate::providers::{AuthError, Endpoint, EventLimits, Refusal};

/// Limits that protect the listener from hostile peers.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub max_connections: usize,
    pub max_connections_per_peer: usize,
    pub events: EventLimits,
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub tls_handshake_timeout: Duration,
    pub shutdown_grace: Duration,
}

pub struct Webhooks {
    endpoints: HashMap<String, Route>,
    inbox: Inbox,
    limits: Limits,
    metrics: Arc<Metrics>,
    /// 503s are counted in the metrics and logged as a run, not one line per request.
    refusing: SharedOutage,
}

/// An endpoint, and its run of refused signatures: a sender with an old secret has every
/// event refused, which the log should say without a line per request (or per probe).
struct Route {
    endpoint: Arc<Endpoint>,
    refused: SharedOutage,
}

pub(crate) mod bytes_util {
    use http_body_util::Full;
    use hyper::body::Bytes;

    pub type Body = Full<Bytes>;

    pub fn full(s: impl Into<Bytes>) -> Body {
        Full::new(s.into())
    }
}

/// Why a request was not stored, and the status it gets.
#[derive(Debug)]
enum Reject {
    NotFound,
    Method,
    TooLarge,
    BodyTimeout,
    BadBody,
    Auth(AuthError),
    Refused(Refusal),
    Inbox(InboxError),
}

impl Reject {
    fn status(&self) -> StatusCode {
        match self {
            Reject::NotFound => StatusCode::NOT_FOUND,
            Reject::Method => StatusCode::METHOD_NOT_ALLOWED,
            Reject::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Reject::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Reject::BadBody => StatusCode::BAD_REQUEST,
            Reject::Auth(_) => StatusCode::UNAUTHORIZED,
            Reject::Refused(Refusal::Tenant) => StatusCode::FORBIDDEN,
            Reject::Inbox(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// What the sender is told: enough to act on, nothing about secrets or internals.
    fn message(&self) -> &'static str {
        match self {
            Reject::NotFound => "no endpoint at this path",
            Reject::Method => "only POST is accepted",
            Reject::TooLarge => "body too large",
            Reject::BodyTimeout => "body not received in time",
            Reject::BadBody => "body could not be read",
            Reject::Auth(AuthError::Missing) => "signature missing",
            Reject::Auth(_) => "signature invalid",
            Reject::Refused(Refusal::Tenant) => "event belongs to another tenant",
            Reject::Inbox(_) => "temporarily unable to store events; retry later",
        }
    }

    fn response(&self) -> Response<Body> {
        let mut r = json_response(
            self.status(),
            &format!("{{\"error\":\"{}\"}}", self.message()),
        );
        match self {
            Reject::Method => {
                r.headers_mut()
                    .insert(header::ALLOW, http::HeaderValue::from_static("POST"));
            }
            // The rest of an oversized or stalled body is not read: the connection cannot be
            // reused.
            Reject::TooLarge | Reject::BodyTimeout | Reject::BadBody => {
                r.headers_mut()
                    .insert(header::CONNECTION, http::HeaderValue::from_static("close"));
            }
            Reject::Inbox(_) => {
                r.headers_mut()
                    .insert(header::RETRY_AFTER, http::HeaderValue::from_static("5"));
            }
            _ => {}
        }
        r
    }
}

fn json_response(status: StatusCode, body: &str) -> Response<Body> {
    let mut r = Response::new(full(body.to_owned()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

impl Webhooks {
    pub fn new(
        endpoints: Vec<Endpoint>,
        inbox: Inbox,
        limits: Limits,
        metrics: Arc<Metrics>,
    ) -> Self {
        let endpoints = endpoints
            .into_iter()
            .map(|e| {
                let route = Route {
                    refused: SharedOutage::new(format!("signatures on {}", e.source)),
                    endpoint: Arc::new(e),
                };
                (route.endpoint.path.clone(), route)
            })
            .collect();
        Self {
            endpoints,
            inbox,
            limits,
            metrics,
            refusing: SharedOutage::new("requests answered 503"),
        }
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        match self.accept(req).await {
            Ok(Stored::New) => {
                self.refusing.recover();
                Metrics::inc(&self.metrics.stored);
                json_response(StatusCode::OK, "{\"status\":\"stored\"}")
            }
            Ok(Stored::Duplicate) => {
                self.refusing.recover();
                Metrics::inc(&self.metrics.duplicates);
                json_response(StatusCode::OK, "{\"status\":\"duplicate\"}")
            }
            Err(reject) => {
                let m = &self.metrics;
                match &reject {
                    Reject::Auth(_) => Metrics::inc(&m.unauthorized),
                    Reject::Refused(_) => Metrics::inc(&m.forbidden),
                    Reject::TooLarge => Metrics::inc(&m.too_large),
                    Reject::Inbox(e) => {
                        Metrics::inc(&m.unavailable);
                        self.refusing.fail(e);
                    }
                    _ => Metrics::inc(&m.bad_requests),
                }
                reject.response()
            }
        }
    }

    async fn accept(&self, req: Request<Incoming>) -> Result<Stored, Reject> {
        let route = self
            .endpoints
            .get(req.uri().path())
            .ok_or(Reject::NotFound)?;
        let endpoint = &route.endpoint;
        if req.method() != Method::POST {
            return Err(Reject::Method);
        }
        let max = self.limits.max_body_bytes;
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > max as u64) {
            return Err(Reject::TooLarge);
        }
        let (parts, body) = req.into_parts();
        let body =
            match tokio::time::timeout(self.limits.body_timeout, Limited::new(body, max).collect())
                .await
            {
                Err(_) => return Err(Reject::BodyTimeout),
                Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
                    return Err(Reject::TooLarge)
                }
                Ok(Err(_)) => return Err(Reject::BadBody),
                Ok(Ok(c)) => c.to_bytes(),
            };
        let received_at = crate::timefmt::now();
        let verified = endpoint.verify(&parts.headers, &body).map_err(|e| {
            tracing::debug!(endpoint = %endpoint.source, reason = %e, "signature refused");
            route.refused.fail(&e);
            Reject::Auth(e)
        })?;
        route.refused.recover();
        let event = verified
            .into_event(received_at, &self.limits.events)
            .map_err(Reject::Refused)?;
        tracing::debug!(endpoint = %endpoint.source, event_id = %event.event_id, status = event.status.as_str(), "authentic event");
        self.inbox.submit(event).await.map_err(Reject::Inbox)
    }
}

/// Serves webhooks on `listener` until `shutdown` resolves, then stops accepting, lets
/// in-flight requests finish (up to the grace period) and returns.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    app: Arc<Webhooks>,
    shutdown: impl Future<Output = ()>,
) {
    let limits = app.limits.clone();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(64 * 1024);
    let http = Arc::new(http);
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    let mut accepting = Outage::new("accepting connections");
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => {
                    accepting.recover();
                    s
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    accepting.fail(&e);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let http = http.clone();
        let tls = tls.clone();
        let watcher = graceful.watcher();
        let handshake = limits.tls_handshake_timeout;
        tokio::spawn(async move {
            let _permit = permit;
            let service = service_fn(move |req| {
                let app = app.clone();
                async move { Ok::<_, Infallible>(app.handle(req).await) }
            });
            let result = match tls {
                Some(acceptor) => {
                    match tokio::time::timeout(handshake, acceptor.accept(stream)).await {
                        Ok(Ok(s)) => {
                            watcher
                                .watch(http.serve_connection(TokioIo::new(s), service))
                                .await
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    }
                }
                None => {
                    watcher
                        .watch(http.serve_connection(TokioIo::new(stream), service))
                        .await
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tracing::info!("stopped accepting; finishing in-flight requests");
    if tokio::time::timeout(limits.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("grace period over; closing remaining connections");
    }
}
