//! The one HTTP/1.1 serving loop, shared by the webhook and admin listeners: TLS when
//! configured, a bound on connections in all and per peer address, bounded header and handshake
//! time, bounded header size, and graceful shutdown.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio_rustls::TlsAcceptor;

use crate::outage::Outage;

pub type Body = Full<Bytes>;

pub fn full(s: impl Into<Bytes>) -> Body {
    Full::new(s.into())
}

/// The largest request head a listener takes: the request line and every header. A larger one
/// gets 431 from hyper before any handler sees it. `max_buf_size` alone is not that limit: one
/// read may bring more than it into the buffer, and a head that arrives whole in it is taken.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// What one listener serves: a handler from request (and the peer's address) to response.
pub trait Handler: Send + Sync + 'static {
    fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        peer: SocketAddr,
    ) -> impl Future<Output = Response<Body>> + Send;
}

/// Bounds on one listener's connections.
#[derive(Debug, Clone)]
pub struct ConnLimits {
    /// Connections served at once; further ones wait in the kernel's accept queue.
    pub max_connections: usize,
    /// Connections served at once from one peer address; further ones are closed at once, so
    /// one address that opens connections in a loop cannot keep other senders waiting.
    pub max_per_peer: usize,
    /// Time for a request's head, and for the next one on a kept-alive connection.
    pub header_timeout: Duration,
    pub tls_handshake_timeout: Duration,
    /// On shutdown, how long requests in progress get to finish.
    pub shutdown_grace: Duration,
}

/// Open connections per peer address.
#[derive(Default)]
struct Peers {
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// A connection's place in [`Peers`], given back when the connection ends.
struct PeerSlot {
    peers: Arc<Peers>,
    ip: IpAddr,
}

impl Peers {
    fn take(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<PeerSlot> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(PeerSlot {
            peers: self.clone(),
            ip,
        })
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut open = self.peers.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// Serves `handler` on `listener` until `shutdown` resolves, then stops accepting, lets the
/// requests in progress finish (up to the grace period) and returns. `on_peer_refused` is
/// called for each connection closed because its peer had its share. A connection is served
/// with the TLS configuration `tls` holds when it is accepted (`None`: plain HTTP), so a
/// reloaded certificate applies to new connections and those open keep theirs.
pub async fn serve<H: Handler>(
    name: &'static str,
    listener: TcpListener,
    tls: watch::Receiver<Option<TlsAcceptor>>,
    handler: Arc<H>,
    limits: ConnLimits,
    on_peer_refused: impl Fn() + Send + 'static,
    shutdown: impl Future<Output = ()>,
) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_header_size(MAX_HEAD_BYTES)
        .max_buf_size(MAX_HEAD_BYTES);
    let http = Arc::new(http);
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let peers = Arc::new(Peers::default());
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    let mut accepting = Outage::new(format!("accepting connections ({name})"));
    let mut refusing = Outage::every(
        format!("connections over the per-peer limit ({name})"),
        Duration::from_secs(60),
    );
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
        let Some(slot) = peers.take(peer.ip(), limits.max_per_peer) else {
            on_peer_refused();
            refusing.fail(&format_args!(
                "{} has {} open",
                peer.ip(),
                limits.max_per_peer
            ));
            continue;
        };
        refusing.recover();
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let http = http.clone();
        let tls = tls.borrow().clone();
        let watcher = graceful.watcher();
        let handshake = limits.tls_handshake_timeout;
        tokio::spawn(async move {
            let _places = (permit, slot);
            let service = service_fn(move |req| {
                let handler = handler.clone();
                async move { Ok::<_, Infallible>(handler.handle(req, peer).await) }
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
    tracing::info!(
        listener = name,
        "stopped accepting; finishing in-flight requests"
    );
    if tokio::time::timeout(limits.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            listener = name,
            "grace period over; closing remaining connections"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_gets_its_share_and_its_places_back() {
        let peers = Arc::new(Peers::default());
        let a: IpAddr = [127, 0, 0, 1].into();
        let b: IpAddr = [127, 0, 0, 2].into();
        let first = peers.take(a, 2).unwrap();
        let second = peers.take(a, 2).unwrap();
        assert!(peers.take(a, 2).is_none());
        assert!(
            peers.take(b, 2).is_some(),
            "another address is not held back"
        );
        drop(first);
        let third = peers.take(a, 2).unwrap();
        drop((second, third));
        assert!(peers.open.lock().unwrap().is_empty());
    }
}
