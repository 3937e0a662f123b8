//! A local HTTPS server that plays a CDN: serves files, fails on demand, hangs, redirects,
//! streams large bodies without holding them, and counts every connection it accepts.

use std::collections::HashMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Bytes, Frame};
use hyper_util::rt::TokioIo;

use super::TestCert;

/// `n` bytes of a fixed pattern, produced 64 KiB at a time.
pub struct Pattern {
    left: u64,
    offset: u64,
}

pub fn pattern_bytes(offset: u64, n: usize) -> Vec<u8> {
    (0..n as u64)
        .map(|i| ((offset + i) * 31 % 251) as u8)
        .collect()
}

impl Body for Pattern {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let n = self.left.min(64 * 1024);
        let chunk = pattern_bytes(self.offset, n as usize);
        self.left -= n;
        self.offset += n;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(chunk)))))
    }
}

type BoxBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

pub struct MediaServer {
    pub port: u16,
    pub connections: Arc<AtomicUsize>,
    pub requests: Arc<Mutex<Vec<String>>>,
    hits: Arc<Mutex<HashMap<String, usize>>>,
}

/// A CDN with a certificate of its own, in `<dir>/cdn`, apart from the app's.
pub async fn start_cdn(dir: &std::path::Path) -> (MediaServer, TestCert) {
    let d = dir.join("cdn");
    std::fs::create_dir_all(&d).unwrap();
    let cert = super::make_cert(&d);
    (MediaServer::start(&cert).await, cert)
}

/// The `[media]` lines that let hooksync reach the CDN: 127.0.0.1 allowed, its certificate
/// trusted.
pub fn reaching(cert: &TestCert) -> String {
    format!(
        "allowed_hosts = [\"127.0.0.1\", \"localhost\"]\nallow_private_networks = true\nextra_ca_file = {:?}\n",
        cert.cert
    )
}

impl MediaServer {
    pub async fn start(cert: &TestCert) -> MediaServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let acceptor = tokio_rustls::TlsAcceptor::from(
            hooksync::tls::server_config(&cert.cert, &cert.key).unwrap(),
        );
        let server = MediaServer {
            port,
            connections: Arc::default(),
            requests: Arc::default(),
            hits: Arc::default(),
        };
        let (connections, requests, hits) = (
            server.connections.clone(),
            server.requests.clone(),
            server.hits.clone(),
        );
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                connections.fetch_add(1, Ordering::SeqCst);
                let (acceptor, requests, hits) = (acceptor.clone(), requests.clone(), hits.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let svc = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let (requests, hits) = (requests.clone(), hits.clone());
                            async move { Ok::<_, Infallible>(route(req, port, requests, hits).await) }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        server
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Signature=SECRETSIG0123&X-Amz-Credential=AKIDSECRET", self.port)
    }

    pub fn requests_to(&self, prefix: &str) -> usize {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|p| p.starts_with(prefix))
            .count()
    }
}

fn reply(status: u16, body: BoxBody) -> hyper::Response<BoxBody> {
    let mut r = hyper::Response::new(body);
    *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
    r
}

fn full(b: impl Into<Bytes>) -> BoxBody {
    Full::new(b.into()).boxed()
}

async fn route(
    req: hyper::Request<hyper::body::Incoming>,
    port: u16,
    requests: Arc<Mutex<Vec<String>>>,
    hits: Arc<Mutex<HashMap<String, usize>>>,
) -> hyper::Response<BoxBody> {
    let path = req.uri().path().to_string();
    requests.lock().unwrap().push(path.clone());
    let n = {
        let mut h = hits.lock().unwrap();
        let c = h.entry(path.clone()).or_default();
        *c += 1;
        *c
    };
    let seg: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match seg.first().copied().unwrap_or_default() {
        "ok" => {
            let mut r = reply(200, full(pattern_bytes(0, 300_000)));
            r.headers_mut()
                .insert("content-type", "audio/mpeg".parse().unwrap());
            r
        }
        "flaky" if n <= 2 => reply(500, full("try later")),
        "flaky" => reply(200, full(pattern_bytes(0, 1000))),
        // Hangs the first time (a download in flight when the daemon is killed), then serves.
        "hang-once" if n == 1 => {
            std::future::pending::<()>().await;
            reply(200, full(""))
        }
        "hang-once" => reply(200, full(pattern_bytes(0, 5000))),
        "hang" => {
            std::future::pending::<()>().await;
            reply(200, full(""))
        }
        "gone" => reply(403, full("expired")),
        "stream" => {
            // /stream/<bytes>: a body of that size, no Content-Length, never held in memory.
            let size: u64 = seg.get(1).and_then(|s| s.parse().ok()).unwrap_or(0);
            reply(
                200,
                Pattern {
                    left: size,
                    offset: 0,
                }
                .boxed(),
            )
        }
        "sized" => {
            let size: u64 = seg.get(1).and_then(|s| s.parse().ok()).unwrap_or(0);
            let mut r = reply(
                200,
                Pattern {
                    left: size,
                    offset: 0,
                }
                .boxed(),
            );
            r.headers_mut()
                .insert("content-length", size.to_string().parse().unwrap());
            r
        }
        "redirect-out" => {
            let mut r = reply(302, full(""));
            r.headers_mut().insert(
                "location",
                "https://media.not-allowed.example/x.mp3?sig=1"
                    .parse()
                    .unwrap(),
            );
            r
        }
        "redirect-in" => {
            let mut r = reply(302, full(""));
            r.headers_mut().insert(
                "location",
                format!("https://127.0.0.1:{port}/ok/redirected.mp3")
                    .parse()
                    .unwrap(),
            );
            r
        }
        _ => reply(404, full("no such file")),
    }
}
