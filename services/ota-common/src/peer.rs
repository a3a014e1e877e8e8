//! How services reach each other. Every peer is called through its generated
//! tonic client over a [`Peer`]: when the peer runs in this process the
//! channel is the server itself (no socket, no HTTP/2 framing), otherwise a
//! lazily connected network channel. Callers cannot tell the difference, so
//! one code path serves the single-process default and a split deployment.

use std::convert::Infallible;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tonic::body::Body;
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceExt};

use crate::trace;

pub type Peer = BoxCloneSyncService<http::Request<Body>, http::Response<Body>, PeerError>;

/// A peer could not be reached. A concrete type rather than a boxed
/// `dyn Error`: handlers holding a boxed error in their futures trip a
/// higher-ranked lifetime limitation of rustc when axum checks them for Send.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct PeerError(#[from] tonic::transport::Error);

/// A peer served by `server` (a generated `...Server<T>`) in this process.
pub fn in_process<S>(server: S) -> Peer
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    BoxCloneSyncService::new(
        GrpcMetrics {
            inner: server,
            propagate: false,
        }
        .map_err(|e: Infallible| match e {}),
    )
}

/// A peer at `url` (e.g. `http://vehicle-store:50051`), connected on first use
/// and reconnected after failures.
pub fn remote(url: &str) -> Result<Peer, String> {
    let endpoint = tonic::transport::Endpoint::from_shared(url.to_owned())
        .map_err(|e| format!("invalid peer address {url:?}: {e}"))?
        .connect_timeout(Duration::from_secs(3))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30));
    let channel = endpoint.connect_lazy();
    Ok(BoxCloneSyncService::new(
        GrpcMetrics {
            inner: channel,
            propagate: true,
        }
        .map_err(PeerError::from),
    ))
}

/// Counts calls and their latency by service, method and gRPC status code
/// (`ota_grpc_requests_total`, `ota_grpc_request_duration_seconds`). Applied
/// to peers and to the gRPC server alike. Errors travel as trailers-only
/// responses whose status is in the headers; an absent status means OK (a
/// failure in the middle of a stream is not counted as one).
#[derive(Clone)]
pub struct GrpcMetrics<S> {
    inner: S,
    /// Remote peers only: carry the caller's trace in the request headers.
    propagate: bool,
}

#[derive(Clone, Copy)]
pub struct GrpcMetricsLayer;

impl<S> tower::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;
    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetrics {
            inner,
            propagate: false,
        }
    }
}

impl<S, B, RB> Service<http::Request<B>> for GrpcMetrics<S>
where
    S: Service<http::Request<B>, Response = http::Response<RB>> + Send,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = futures_util_box::BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        if self.propagate {
            inject_trace_context(req.headers_mut());
        }
        let path = req.uri().path().to_owned();
        let started = Instant::now();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let res = fut.await;
            let (service, method) = split_path(&path);
            let code = match &res {
                Ok(r) => r
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<i32>().ok())
                    .map(|c| format!("{:?}", tonic::Code::from(c)))
                    .unwrap_or_else(|| "Ok".to_owned()),
                Err(_) => "Unavailable".to_owned(),
            };
            metrics::counter!("ota_grpc_requests_total", "service" => service.clone(), "method" => method.clone(), "code" => code)
                .increment(1);
            metrics::histogram!("ota_grpc_request_duration_seconds", "service" => service, "method" => method)
                .record(started.elapsed().as_secs_f64());
            res
        })
    }
}

/// Carries the caller's trace into the request (W3C `traceparent`), so a
/// call to a peer in another process continues the same trace. A no-op when
/// tracing export is off.
fn inject_trace_context(headers: &mut http::HeaderMap) {
    if let Some(v) = trace::current().and_then(|v| http::HeaderValue::from_str(&v).ok()) {
        headers.insert(trace::TRACEPARENT, v);
    }
}

/// Starts the server-side span of a gRPC request as a child of the caller's
/// trace, when the request carries one.
pub fn grpc_request_span<B>(req: &http::Request<B>) -> tracing::Span {
    let span = tracing::info_span!("grpc.request", path = %req.uri().path());
    trace::continue_from(&span, trace::header(req.headers()), "grpc");
    span
}

mod futures_util_box {
    pub type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;
}

/// `/ota.v1.VehicleStore/Get` -> ("VehicleStore", "Get").
fn split_path(path: &str) -> (String, String) {
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let service = parts.next().unwrap_or_default();
    let method = parts.next().unwrap_or_default();
    let service = service.rsplit('.').next().unwrap_or(service);
    (service.to_owned(), method.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_grpc_paths() {
        assert_eq!(
            split_path("/ota.v1.VehicleStore/Get"),
            ("VehicleStore".to_owned(), "Get".to_owned())
        );
    }

    #[test]
    fn remote_rejects_bad_addresses_by_name() {
        let err = remote("not a url").err().unwrap();
        assert!(
            err.starts_with("invalid peer address \"not a url\""),
            "{err}"
        );
    }
}
