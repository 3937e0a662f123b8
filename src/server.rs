//! The webhook routes: a request is routed by path to its endpoint, its body read within
//! bounds of size and time, verified, and handed to the inbox; every failure maps to its
//! status code in one place (`Reject::status`). Connections are `listener`'s.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use http::{header, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::{Bytes, Incoming};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::inbox::{Inbox, InboxError, Stored};
use crate::listener::{full, Body, ConnLimits, Handler};
use crate::metrics::Metrics;
use crate::outage::SharedOutage;
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
    /// One info line per request (`log.access`).
    access_log: bool,
    /// Replaced whole on a reload; a request keeps the routes it started with.
    endpoints: RwLock<Arc<Routes>>,
    inbox: Inbox,
    limits: Limits,
    metrics: Arc<Metrics>,
    /// 503s are counted in the metrics and logged as a run, not one line per request.
    refusing: SharedOutage,
}

type Routes = HashMap<String, Route>;

/// An endpoint, and its run of refused signatures: a sender with an old secret has every
/// event refused, which the log should say without a line per request (or per probe).
struct Route {
    endpoint: Arc<Endpoint>,
    refused: SharedOutage,
}

/// After answering 413 or 408, how long and how much more of the body is read and thrown
/// away before the connection closes: a client that writes its whole body before reading the
/// answer (as many HTTP libraries do) would otherwise have its connection reset under its
/// writes, and see a broken connection instead of the status.
const LINGER_TIME: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 16 << 20;

/// Reads a request body of at most `max_body_bytes` within `body_timeout`.
async fn read_body(
    headers: &http::HeaderMap,
    mut body: Incoming,
    limits: &Limits,
) -> Result<Bytes, Reject> {
    let max = limits.max_body_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let outcome = if declared.is_some_and(|n| n > max as u64) {
        Err(Reject::TooLarge)
    } else {
        let mut buf = Vec::with_capacity(declared.map_or(0, |n| n as usize));
        let read = async {
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|_| Reject::BadBody)?;
                if let Ok(data) = frame.into_data() {
                    if buf.len() + data.len() > max {
                        return Err(Reject::TooLarge);
                    }
                    buf.extend_from_slice(&data);
                }
            }
            Ok(())
        };
        match tokio::time::timeout(limits.body_timeout, read).await {
            Err(_) => Err(Reject::BodyTimeout),
            Ok(r) => r.map(|()| Bytes::from(buf)),
        }
    };
    if let Err(Reject::TooLarge | Reject::BodyTimeout) = &outcome {
        // A client waiting for `100 Continue` sends nothing more: it reads the answer.
        let waits = headers
            .get(header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        if !waits {
            linger(&mut body).await;
        }
    }
    outcome
}

async fn linger(body: &mut Incoming) {
    let mut read = 0usize;
    let _ = tokio::time::timeout(LINGER_TIME, async {
        while let Some(Ok(frame)) = body.frame().await {
            read += frame.data_ref().map_or(0, Bytes::len);
            if read > LINGER_BYTES {
                break;
            }
        }
    })
    .await;
}

impl Handler for Webhooks {
    async fn handle(self: Arc<Self>, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
        self.respond(req, peer).await
    }
}

/// Every `outcome` a request can have: the stored ones and [`Reject::outcome`]'s.
const OUTCOMES: &[&str] = &[
    "stored",
    "duplicate",
    "not_found",
    "bad_request",
    "too_large",
    "timeout",
    "unauthorized",
    "forbidden",
    "unavailable",
];

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

    /// The `outcome` label of the request's metrics and log line (one of [`OUTCOMES`]).
    fn outcome(&self) -> &'static str {
        match self {
            Reject::NotFound => "not_found",
            Reject::Method | Reject::BadBody => "bad_request",
            Reject::TooLarge => "too_large",
            Reject::BodyTimeout => "timeout",
            Reject::Auth(_) => "unauthorized",
            Reject::Refused(_) => "forbidden",
            Reject::Inbox(_) => "unavailable",
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
            // What is left of an oversized or stalled body is not read beyond the linger: the
            // connection cannot be reused.
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
        access_log: bool,
    ) -> Self {
        // Counts that are 0 still exist, so a rate over them is 0, not absent.
        for outcome in OUTCOMES {
            metrics.requests.with_label_values(&["", outcome]);
        }
        Self {
            access_log,
            endpoints: RwLock::new(Arc::new(routes(endpoints))),
            inbox,
            limits,
            metrics,
            refusing: SharedOutage::new("requests answered 503"),
        }
    }

    /// Serves `endpoints` from the next request on (a reload).
    pub fn set_endpoints(&self, endpoints: Vec<Endpoint>) {
        let routes = Arc::new(routes(endpoints));
        match self.endpoints.write() {
            Ok(mut current) => *current = routes,
            Err(poisoned) => *poisoned.into_inner() = routes,
        }
    }

    fn routes(&self) -> Arc<Routes> {
        match self.endpoints.read() {
            Ok(r) => r.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    async fn respond(&self, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
        let start = std::time::Instant::now();
        let mut seen = Seen::default();
        let (outcome, response) = match self.accept(req, &mut seen).await {
            Ok(stored) => {
                self.refusing.recover();
                let outcome = match stored {
                    Stored::New => "stored",
                    Stored::Duplicate => "duplicate",
                };
                let body = format!("{{\"status\":\"{outcome}\"}}");
                (outcome, json_response(StatusCode::OK, &body))
            }
            Err(reject) => {
                if let Reject::Inbox(e) = &reject {
                    self.refusing.fail(e);
                }
                (reject.outcome(), reject.response())
            }
        };
        let endpoint = seen.endpoint.as_deref().map_or("", |e| e.name.as_str());
        let m = &self.metrics;
        m.requests.with_label_values(&[endpoint, outcome]).inc();
        let elapsed = start.elapsed();
        if !endpoint.is_empty() {
            m.ack_duration
                .with_label_values(&[endpoint])
                .observe(elapsed.as_secs_f64());
        }
        if let Some(secret) = seen.secret {
            m.signature_matches
                .with_label_values(&[endpoint, &secret.to_string()])
                .inc();
        }
        if self.access_log {
            tracing::info!(
                target: "hooksync::access",
                endpoint,
                event_id = seen.event_id.as_deref().unwrap_or("-"),
                outcome,
                status = response.status().as_u16(),
                latency_us = elapsed.as_micros() as u64,
                %peer,
                "request"
            );
        }
        response
    }

    async fn accept(&self, req: Request<Incoming>, seen: &mut Seen) -> Result<Stored, Reject> {
        let routes = self.routes();
        let route = routes.get(req.uri().path()).ok_or(Reject::NotFound)?;
        let endpoint = &route.endpoint;
        seen.endpoint = Some(endpoint.clone());
        if req.method() != Method::POST {
            return Err(Reject::Method);
        }
        let (parts, body) = req.into_parts();
        let body = read_body(&parts.headers, body, &self.limits).await?;
        let received_at = crate::stamp::Stamp::now();
        let verified = endpoint.verify(&parts.headers, &body).map_err(|e| {
            tracing::debug!(endpoint = %endpoint.name, reason = %e, "signature refused");
            route.refused.fail(&e);
            Reject::Auth(e)
        })?;
        route.refused.recover();
        seen.secret = Some(verified.secret);
        let event = verified
            .into_event(received_at, &self.limits.events)
            .map_err(Reject::Refused)?;
        if self.access_log {
            seen.event_id = Some(event.event_id.clone());
        }
        self.inbox.submit(event).await.map_err(Reject::Inbox)
    }
}

/// What a request showed of itself on its way, for its metrics and its access log line.
#[derive(Default)]
struct Seen {
    endpoint: Option<Arc<Endpoint>>,
    /// Kept only for the access log.
    event_id: Option<String>,
    secret: Option<usize>,
}

fn routes(endpoints: Vec<Endpoint>) -> Routes {
    endpoints
        .into_iter()
        .map(|e| {
            let route = Route {
                refused: SharedOutage::new(format!("signatures on {}", e.source)),
                endpoint: Arc::new(e),
            };
            (route.endpoint.path.clone(), route)
        })
        .collect()
}

/// Serves webhooks on `listener` until `shutdown` resolves, then stops accepting, lets
/// in-flight requests finish (up to the grace period) and returns. Each connection is
/// served with the TLS configuration `tls` holds when it is accepted.
pub async fn serve(
    listener: TcpListener,
    tls: watch::Receiver<Option<TlsAcceptor>>,
    app: Arc<Webhooks>,
    shutdown: impl Future<Output = ()>,
) {
    let l = &app.limits;
    let limits = ConnLimits {
        max_connections: l.max_connections,
        max_per_peer: l.max_connections_per_peer,
        header_timeout: l.header_timeout,
        tls_handshake_timeout: l.tls_handshake_timeout,
        shutdown_grace: l.shutdown_grace,
    };
    let metrics = app.metrics.clone();
    let refused = move || {
        metrics
            .connections_refused
            .with_label_values(&["per_peer"])
            .inc()
    };
    crate::listener::serve("webhooks", listener, tls, app, limits, refused, shutdown).await;
}
