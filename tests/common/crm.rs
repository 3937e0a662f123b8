//! A CRM's webhook handlers, as a test stub on a real port: it verifies what hooksync forwards
//! the way each provider's documentation tells a receiver to (and Standard Webhooks requests
//! with its own verifier, written from the specification), answers as told (500 at random, a
//! status with headers, a hang, a refused connection), and records every request with when it
//! started and ended, so tests can check order and overlap.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Request, Response};
use rand::Rng;
use sha2::Sha256;
use tokio::task::JoinSet;

/// How a request to a path is verified.
#[derive(Clone, Debug)]
pub enum Check {
    /// The provider's own signature, chosen by the `hooksync-source` header.
    Passthrough(HashMap<String, Provider>),
    /// Standard Webhooks, with this `whsec_` secret.
    Standard(String),
}

/// A provider's signature, as its documentation verifies it.
#[derive(Clone, Debug)]
pub enum Provider {
    /// `X-GetBill-Signature`: HMAC-SHA256 of the raw body, hex.
    GetBill(String),
    /// `X-Bill-Sha-Signature`: HMAC-SHA256 of the raw body, base64.
    Bill(String),
    /// `X-Signature`: HMAC-SHA256 of the raw body, hex, with or without `sha256=`.
    BigLedger(String),
    /// A static header and its value.
    Header(String, String),
    /// Standard Webhooks with the endpoint's secret.
    Standard(String),
}

/// One request the stub received.
#[derive(Clone, Debug)]
pub struct Received {
    pub path: String,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
    pub start: Instant,
    pub end: Instant,
    pub status: u16,
    /// Why verification failed, if it did.
    pub refused: Option<String>,
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map(String::as_str).unwrap_or("")
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// A scripted answer: status, headers, and a delay first.
type Answer = (u16, Vec<(String, String)>, Duration);

#[derive(Default)]
struct Behaviour {
    checks: HashMap<String, Check>,
    /// Answers for the next requests, in order: status, headers, and a delay first.
    scripted: Vec<Answer>,
    /// The share of other requests answered 500.
    fail_ratio: f64,
    /// Every request waits this long first.
    delay: Duration,
    /// Requests to this object (`hooksync-event-id`) are always answered 500.
    always_fail: Vec<String>,
}

#[derive(Default)]
struct State {
    behaviour: Behaviour,
    received: Vec<Received>,
}

pub struct Crm {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    server: Mutex<Option<JoinSet<()>>>,
}

fn verify(check: &Check, headers: &HashMap<String, String>, body: &[u8]) -> Result<(), String> {
    let h = |n: &str| headers.get(n).cloned().unwrap_or_default();
    let mac = |key: &[u8], parts: &[&[u8]]| {
        let mut m = Hmac::<Sha256>::new_from_slice(key).expect("hmac key");
        for p in parts {
            m.update(p);
        }
        m.finalize().into_bytes().to_vec()
    };
    let b64 = base64::engine::general_purpose::STANDARD;
    let standard = |whsec: &str| -> Result<(), String> {
        let key = b64
            .decode(whsec.trim_start_matches("whsec_"))
            .map_err(|e| e.to_string())?;
        let (id, ts) = (h("webhook-id"), h("webhook-timestamp"));
        if id.is_empty() || ts.parse::<i64>().is_err() {
            return Err("webhook-id or webhook-timestamp missing".into());
        }
        let want = b64.encode(mac(&key, &[id.as_bytes(), b".", ts.as_bytes(), b".", body]));
        let sigs = h("webhook-signature");
        if sigs
            .split(' ')
            .any(|s| s.strip_prefix("v1,") == Some(want.as_str()))
        {
            Ok(())
        } else {
            Err(format!("no v1 signature matches: {sigs:?}"))
        }
    };
    match check {
        Check::Standard(whsec) => standard(whsec),
        Check::Passthrough(by_source) => {
            let source = h("hooksync-source");
            let p = by_source
                .get(&source)
                .ok_or_else(|| format!("no provider for source {source:?}"))?;
            let same = |got: String, want: String| {
                if got == want {
                    Ok(())
                } else {
                    Err(format!("signature {got:?} is not {want:?}"))
                }
            };
            match p {
                Provider::GetBill(s) => same(
                    h("x-getbill-signature"),
                    hex::encode(mac(s.as_bytes(), &[body])),
                ),
                Provider::Bill(s) => same(
                    h("x-bill-sha-signature"),
                    b64.encode(mac(s.as_bytes(), &[body])),
                ),
                Provider::BigLedger(s) => same(
                    h("x-signature").trim_start_matches("sha256=").to_string(),
                    hex::encode(mac(s.as_bytes(), &[body])),
                ),
                Provider::Header(name, value) => same(h(&name.to_ascii_lowercase()), value.clone()),
                Provider::Standard(whsec) => standard(whsec),
            }
        }
    }
}

async fn handle(
    state: Arc<Mutex<State>>,
    req: Request<hyper::body::Incoming>,
) -> Response<Full<Bytes>> {
    let start = Instant::now();
    let path = req.uri().path().to_string();
    let headers: HashMap<String, String> = req
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes().to_vec())
        .unwrap_or_default();
    let (check, (status, extra, delay)) = {
        let mut s = state.lock().unwrap();
        let b = &mut s.behaviour;
        let check = b.checks.get(&path).cloned();
        let event = headers
            .get("hooksync-event-id")
            .cloned()
            .unwrap_or_default();
        let answer = if !b.scripted.is_empty() {
            b.scripted.remove(0)
        } else if b.always_fail.contains(&event)
            || rand::rng().random_bool(b.fail_ratio.clamp(0.0, 1.0))
        {
            (500, Vec::new(), b.delay)
        } else {
            (200, Vec::new(), b.delay)
        };
        (check, answer)
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let refused = match &check {
        Some(c) => verify(c, &headers, &body).err(),
        None => Some(format!("no check configured for {path}")),
    };
    let status = if refused.is_some() { 401 } else { status };
    let mut resp = Response::new(Full::new(Bytes::from(format!("answer {status}\n"))));
    *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
    for (k, v) in extra {
        resp.headers_mut().insert(
            hyper::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    state.lock().unwrap().received.push(Received {
        path,
        headers,
        body,
        start,
        end: Instant::now(),
        status,
        refused,
    });
    resp
}

impl Crm {
    pub async fn start() -> Crm {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_reuseaddr(true).unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = socket.local_addr().unwrap();
        let crm = Crm {
            addr,
            state: Arc::default(),
            server: Mutex::new(None),
        };
        crm.up_on(socket);
        crm
    }

    fn up_on(&self, socket: tokio::net::TcpSocket) {
        let listener = socket.listen(128).unwrap();
        let state = self.state.clone();
        let mut set = JoinSet::new();
        set.spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = state.clone();
                conns.spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(handle(state, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        *self.server.lock().unwrap() = Some(set);
    }

    /// Stops listening and drops every open connection: requests are refused until `up`.
    pub async fn down(&self) {
        let set = self.server.lock().unwrap().take();
        if let Some(mut set) = set {
            set.shutdown().await;
        }
    }

    /// Listens again on the same port.
    pub fn up(&self) {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_reuseaddr(true).unwrap();
        socket.bind(self.addr).unwrap();
        self.up_on(socket);
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn check(&self, path: &str, check: Check) {
        self.state
            .lock()
            .unwrap()
            .behaviour
            .checks
            .insert(path.into(), check);
    }

    pub fn fail_ratio(&self, r: f64) {
        self.state.lock().unwrap().behaviour.fail_ratio = r;
    }

    pub fn delay(&self, d: Duration) {
        self.state.lock().unwrap().behaviour.delay = d;
    }

    /// The next request is answered `status` with `headers`, after `delay`.
    pub fn then_answer(&self, status: u16, headers: &[(&str, &str)], delay: Duration) {
        let h = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.state
            .lock()
            .unwrap()
            .behaviour
            .scripted
            .push((status, h, delay));
    }

    /// Requests for this event are answered 500 until told otherwise.
    pub fn always_fail(&self, event_id: &str) {
        self.state
            .lock()
            .unwrap()
            .behaviour
            .always_fail
            .push(event_id.into());
    }

    /// Forgets `always_fail`.
    pub fn stop_failing(&self) {
        self.state.lock().unwrap().behaviour.always_fail.clear();
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.lock().unwrap().received.clone()
    }

    /// The requests answered 2xx to `path`.
    pub fn delivered(&self, path: &str) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| r.path == path && r.ok())
            .collect()
    }

    /// Waits until `cond` holds of the requests received so far.
    pub async fn wait(&self, what: &str, limit: Duration, cond: impl Fn(&[Received]) -> bool) {
        let start = Instant::now();
        loop {
            if cond(&self.state.lock().unwrap().received) {
                return;
            }
            if start.elapsed() > limit {
                let n = self.state.lock().unwrap().received.len();
                panic!("timed out after {limit:?} waiting for {what} ({n} requests received)");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Every request passed its verification.
    pub fn assert_all_verified(&self) {
        for r in self.received() {
            assert!(r.refused.is_none(), "{} refused: {:?}", r.path, r.refused);
        }
    }
}

/// Requests of one key whose time in the stub overlaps another's: what "one in flight per
/// object" forbids. Returns the first such pair's key.
pub fn overlapping(
    received: &[Received],
    key: impl Fn(&Received) -> Option<String>,
) -> Option<String> {
    let mut by_key: HashMap<String, Vec<(Instant, Instant)>> = HashMap::new();
    for r in received {
        if let Some(k) = key(r) {
            by_key.entry(k).or_default().push((r.start, r.end));
        }
    }
    for (k, mut spans) in by_key {
        spans.sort();
        if spans.windows(2).any(|w| w[1].0 < w[0].1) {
            return Some(k);
        }
    }
    None
}
