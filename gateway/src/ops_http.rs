//! The HTTP side of the operations listener (`/metrics`, `/healthz`,
//! `/readyz`). What the metrics say and what readiness means are the
//! caller's: each mode of the binary knows which parts it runs.

use axum::http::{StatusCode, header};
use axum::routing::get;
use std::net::SocketAddr;
use std::sync::Arc;
use tracing::{info, warn};

/// Renders the Prometheus text exposition at scrape time.
pub type Render = Arc<dyn Fn() -> String + Send + Sync>;
/// Says whether the node can take work, or why not.
pub type Ready = Arc<dyn Fn() -> Result<(), &'static str> + Send + Sync>;

/// Binds `address` and serves the operations endpoints until `shutdown`
/// resolves.
pub async fn serve(
    address: SocketAddr,
    render: Render,
    ready: Ready,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(address).await?;
    info!(ops = %listener.local_addr()?, "serving operations endpoints");
    let metrics = move || {
        let body = render();
        async move { ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body) }
    };
    let readiness = move || {
        let verdict = ready();
        async move {
            match verdict {
                Ok(()) => (StatusCode::OK, "ready\n".to_owned()),
                Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {reason}\n")),
            }
        }
    };
    let app = axum::Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readiness));
    Ok(tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
            warn!(%error, "operations listener failed");
        }
    }))
}
