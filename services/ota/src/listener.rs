//! The HTTP listener: the axum router on hyper connections, with the bounds
//! a public endpoint needs. `axum::serve` has none of them, so a client that
//! sends half a request head, or opens connections and never speaks, would
//! hold a task and a descriptor for as long as it likes.
//!
//! - A request head must arrive within `header_read_timeout` (HTTP/1; this
//!   also closes a kept-alive connection that waits that long for its next
//!   request).
//! - A connection on which no byte moved, in either direction, for
//!   `idle_timeout` is closed, whatever it is doing (a stalled upload, an
//!   HTTP/2 connection with nothing open).
//! - At most `max_connections` are open at once; the next one gets a short
//!   503 with `Retry-After` and is closed, rather than waiting unseen in the
//!   kernel's backlog.

use std::future::Future;
use std::io;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tower::ServiceExt;

#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

/// What a connection over the cap reads before it is closed.
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nretry-after: 1\r\ncontent-type: application/json\r\ncontent-length: 95\r\nconnection: close\r\n\r\n{\"error\":{\"code\":\"unavailable\",\"message\":\"the server holds its maximum of open connections\"}}";

/// Serves `app` until `shutdown` resolves, then lets open connections finish
/// their requests (the caller bounds how long it waits).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    // Every connection task holds a receiver; shutdown is signalled by
    // dropping the sender, and completion seen when no receiver is left.
    let (stop_tx, stop_rx) = watch::channel(());
    let mut shutdown = pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    // Out of descriptors or a connection reset before
                    // accept: keep serving the ones already open.
                    tracing::warn!(error = %e, "accepting an HTTP connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            metrics::counter!("ota_http_connections_refused_total").increment(1);
            tokio::spawn(refuse(stream));
            continue;
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            metrics::gauge!("ota_http_connections").increment(1.0);
            serve_connection(stream, app, limits, &mut stop).await;
            metrics::gauge!("ota_http_connections").decrement(1.0);
            drop(slot);
        });
    }
    drop(listener);
    drop(stop_rx);
    let waiting = stop_tx.receiver_count();
    if waiting > 0 {
        tracing::info!(connections = waiting, "waiting for open HTTP connections");
    }
    stop_tx.send_replace(());
    stop_tx.closed().await;
}

async fn refuse(mut stream: TcpStream) {
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        stream.write_all(BUSY).await?;
        stream.shutdown().await
    })
    .await;
}

async fn serve_connection(
    stream: TcpStream,
    app: Router,
    limits: HttpLimits,
    stop: &mut watch::Receiver<()>,
) {
    let activity = Arc::new(AtomicU64::new(now_ms()));
    let io = TokioIo::new(Tracked {
        inner: stream,
        last: activity.clone(),
    });
    let service = TowerToHyperService::new(
        app.map_request(|req: http::Request<hyper::body::Incoming>| req.map(axum::body::Body::new)),
    );
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(10))
        .max_concurrent_streams(256);
    let mut conn = pin!(builder.serve_connection(io, service));
    let mut draining = false;
    loop {
        let idle_for =
            Duration::from_millis(now_ms().saturating_sub(activity.load(Ordering::Relaxed)));
        let idle_left = limits.idle_timeout.saturating_sub(idle_for);
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "HTTP connection ended with an error");
                }
                return;
            }
            _ = stop.changed(), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = tokio::time::sleep(idle_left) => {
                let idle = now_ms().saturating_sub(activity.load(Ordering::Relaxed));
                if Duration::from_millis(idle) >= limits.idle_timeout {
                    metrics::counter!("ota_http_connections_idle_closed_total").increment(1);
                    tracing::debug!(idle_ms = idle, "closing an idle HTTP connection");
                    return;
                }
            }
        }
    }
}

/// Milliseconds on a monotonic clock shared by every connection.
fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// A socket that notes when a byte last moved through it.
struct Tracked {
    inner: TcpStream,
    last: Arc<AtomicU64>,
}

impl Tracked {
    fn touch(&self) {
        self.last.store(now_ms(), Ordering::Relaxed);
    }
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.touch();
        }
        r
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use tokio::io::AsyncReadExt;

    async fn start(limits: HttpLimits) -> (std::net::SocketAddr, watch::Sender<bool>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new()
            .route("/healthz", get(|| async { "ok" }))
            .route(
                "/upload",
                axum::routing::post(|body: String| async move { body }),
            );
        let (tx, mut rx) = watch::channel(false);
        tokio::spawn(serve(listener, app, limits, async move {
            let _ = rx.wait_for(|v| *v).await;
        }));
        (addr, tx)
    }

    async fn healthz(addr: std::net::SocketAddr) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        tokio::time::timeout(Duration::from_secs(1), s.read_to_string(&mut out))
            .await
            .expect("healthz answered within a second")
            .unwrap();
        out
    }

    /// Reads until the server closes; fails when it does not within `within`.
    async fn closed_within(s: &mut TcpStream, within: Duration) -> Vec<u8> {
        let mut out = Vec::new();
        tokio::time::timeout(within, s.read_to_end(&mut out))
            .await
            .expect("the server closed the connection")
            .ok();
        out
    }

    const LIMITS: HttpLimits = HttpLimits {
        header_read_timeout: Duration::from_millis(300),
        idle_timeout: Duration::from_secs(60),
        max_connections: 1000,
    };

    #[tokio::test]
    async fn half_sent_request_heads_are_closed_and_others_are_served() {
        let (addr, _stop) = start(LIMITS).await;
        let mut slow = Vec::new();
        for _ in 0..200 {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-slow: ")
                .await
                .unwrap();
            slow.push(s);
        }
        assert!(healthz(addr).await.starts_with("HTTP/1.1 200"));
        for s in &mut slow {
            closed_within(s, Duration::from_secs(5)).await;
        }
    }

    #[tokio::test]
    async fn a_silent_connection_is_closed_after_the_idle_timeout() {
        let (addr, _stop) = start(HttpLimits {
            header_read_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_millis(300),
            ..LIMITS
        })
        .await;
        // A request whose body never comes: hyper waits on it, the handler
        // is in flight, and only the idle rule ends it.
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"POST /upload HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n0123")
            .await
            .unwrap();
        let started = Instant::now();
        let answer = closed_within(&mut s, Duration::from_secs(5)).await;
        assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));
        assert!(
            started.elapsed() >= Duration::from_millis(250),
            "closed by the idle rule, not at once"
        );
        assert!(healthz(addr).await.starts_with("HTTP/1.1 200"));
    }

    #[tokio::test]
    async fn connections_over_the_cap_get_503_and_a_freed_slot_is_reused() {
        let (addr, _stop) = start(HttpLimits {
            header_read_timeout: Duration::from_secs(60),
            max_connections: 3,
            ..LIMITS
        })
        .await;
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(TcpStream::connect(addr).await.unwrap());
        }
        // The accept loop takes the held ones first: it accepts in order.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut over = TcpStream::connect(addr).await.unwrap();
        let answer = closed_within(&mut over, Duration::from_secs(2)).await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
        assert!(answer.contains("retry-after: 1"), "{answer}");
        assert!(answer.contains("maximum of open connections"), "{answer}");
        drop(held.pop());
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(healthz(addr).await.starts_with("HTTP/1.1 200"));
    }

    #[tokio::test]
    async fn shutdown_lets_a_request_in_flight_finish() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new().route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(300)).await;
                "done"
            }),
        );
        let (tx, mut rx) = watch::channel(false);
        let server = tokio::spawn(serve(listener, app, LIMITS, async move {
            let _ = rx.wait_for(|v| *v).await;
        }));
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /slow HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        tx.send(true).unwrap();
        let answer = closed_within(&mut s, Duration::from_secs(3)).await;
        assert!(String::from_utf8_lossy(&answer).ends_with("done"));
        tokio::time::timeout(Duration::from_secs(3), server)
            .await
            .expect("the server returned after its last connection closed")
            .unwrap();
    }
}
