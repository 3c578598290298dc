//! HTTP listeners (plain and TLS) with graceful shutdown: on shutdown a listener stops
//! accepting, lets in-flight requests finish (up to a deadline), then returns.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::extract::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;
use tower_http::trace::TraceLayer;
use tracing::Span;

/// How long in-flight requests may run after shutdown begins.
pub const DRAIN_DEADLINE: Duration = Duration::from_secs(10);
/// How long a client may take to finish the TLS handshake.
const TLS_HANDSHAKE_DEADLINE: Duration = Duration::from_secs(10);

/// Wrap a router with per-request tracing: one span per request with method and path. The
/// query string (which may carry an access token) is never logged, and the client's address
/// only when the operator set `privacy.log_ips`.
pub fn with_tracing(router: Router, log_ips: bool) -> Router {
    router.layer(
        TraceLayer::new_for_http()
            .make_span_with(move |req: &Request| {
                let peer = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0);
                if log_ips {
                    tracing::info_span!("http", method = %req.method(), path = %req.uri().path(), peer = ?peer)
                } else {
                    tracing::info_span!("http", method = %req.method(), path = %req.uri().path())
                }
            })
            .on_request(|_: &Request, _: &Span| {})
            .on_response(|res: &axum::response::Response, latency: Duration, _: &Span| {
                tracing::debug!(
                    status = res.status().as_u16(),
                    latency_ms = latency.as_millis() as u64,
                    "response"
                );
            }),
    )
}

/// Resolves once shutdown has been requested (or the sender is gone).
async fn stopping(shutdown: &mut watch::Receiver<bool>) {
    // Drop the borrow guard at once: it must not live across an await.
    let _ = shutdown.wait_for(|stop| *stop).await.map(|_| ());
}

/// Serve `router` on `listener` until `shutdown` flips to true, then drain.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    router: Router,
    mut shutdown: watch::Receiver<bool>,
) {
    let tls = tls.map(TlsAcceptor::from);
    let graceful = GracefulShutdown::new();
    let builder = auto::Builder::new(TokioExecutor::new());
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(x) => x,
                Err(e) => {
                    // Typically EMFILE: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stopping(&mut shutdown) => break,
        };
        let service = router
            .clone()
            .map_request(move |mut req: Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                req
            });
        let service = TowerToHyperService::new(service);
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let tls = tls.clone();
        tokio::spawn(async move {
            let result = match tls {
                Some(acceptor) => {
                    let stream = match tokio::time::timeout(TLS_HANDSHAKE_DEADLINE, acceptor.accept(stream)).await {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!(error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!("TLS handshake timed out");
                            return;
                        }
                    };
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    watcher.watch(conn.into_owned()).await
                }
                None => {
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    watcher.watch(conn.into_owned()).await
                }
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(DRAIN_DEADLINE) => {
            tracing::warn!("requests still running after {DRAIN_DEADLINE:?}; closing them");
        }
    }
}
