//! `estuary serve`: lock the data directory, open the store, start the listeners, and on
//! SIGTERM/SIGINT drain in-flight requests and close the store cleanly.

use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::routing::get;
use estuary_core::{Config, Core};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::{http, lock, logging, tls};

pub async fn run(config: Config) -> anyhow::Result<()> {
    logging::init(&config.logging);
    crate::admin::create_data_dir(&config)?;
    let _lock = lock::acquire(&config.data_dir)?;

    let store = estuary_store::open(&config.database.url)
        .await
        .context("database: cannot open the store")?;
    tracing::info!(backend = %store.backend(), "store ready, migrations applied");
    let core = Arc::new(
        Core::new(config.clone(), store.clone())
            .await
            .context("starting the core")?,
    );

    // Listened for before anything serves: a signal that came before the handler would kill
    // the process without draining requests or closing the store.
    let shutdown = shutdown_signal();
    let (stop, stopped) = watch::channel(false);
    let mut listeners = JoinSet::new();
    let log_ips = config.privacy.log_ips;

    // The client listeners (which answer /health) start serving last: once /health answers,
    // every listener is bound.
    let mut client_listeners = Vec::new();
    for addr in &config.matrix.client_listen {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("matrix.client_listen: cannot listen on {addr}"))?;
        tracing::info!(%addr, "Matrix client API listening (HTTP)");
        client_listeners.push(listener);
    }

    let xmpp = &config.xmpp;
    let federation = config.federation.enabled && !config.matrix.federation_listen.is_empty();
    // One TLS configuration (certificate) for federation and XMPP.
    let tls = tls::server_config(&config)?;
    let c2s_state = estuary_xmpp::c2s::C2s::new(core.clone(), tls.clone()).context("xmpp: cannot set up c2s")?;
    // The client listener also carries XMPP over WebSocket (RFC 7395) and its discovery.
    let client_app = http::with_tracing(
        with_health(
            estuary_matrix::client_router(core.clone())
                .map_err(anyhow::Error::msg)?
                .merge(estuary_xmpp::websocket::router(c2s_state.clone())),
        ),
        log_ips,
    );

    if federation {
        let federation_app = http::with_tracing(with_health(estuary_federation::router(core.clone())), log_ips);
        for addr in &config.matrix.federation_listen {
            let listener = TcpListener::bind(addr)
                .await
                .with_context(|| format!("matrix.federation_listen: cannot listen on {addr}"))?;
            tracing::info!(%addr, "Matrix federation API listening (HTTPS)");
            listeners.spawn(http::serve(
                listener,
                Some(tls.clone()),
                federation_app.clone(),
                stopped.clone(),
            ));
        }
    }

    {
        use estuary_xmpp::c2s::{self, Mode};
        for (addrs, mode, key) in [
            (&xmpp.c2s_listen, Mode::StartTls, "xmpp.c2s_listen"),
            (&xmpp.c2s_tls_listen, Mode::DirectTls, "xmpp.c2s_tls_listen"),
        ] {
            for addr in addrs {
                let listener = TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("{key}: cannot listen on {addr}"))?;
                tracing::info!(%addr, ?mode, domain = %xmpp.domain, "XMPP client connections listening");
                listeners.spawn(c2s::serve(listener, mode, c2s_state.clone(), stopped.clone()));
            }
        }
    }
    if !xmpp.s2s_listen.is_empty() {
        tracing::info!("xmpp.s2s_listen is configured, but this build does not serve XMPP s2s yet; it stays closed");
    }

    for listener in client_listeners {
        listeners.spawn(http::serve(listener, None, client_app.clone(), stopped.clone()));
    }
    tracing::info!(server_name = %config.server_name, "Estuary is ready");
    shutdown.await;
    tracing::info!("shutting down: no new connections, draining requests in flight");
    // Receivers live as long as the listeners; a send error only means none is left.
    let _ = stop.send(true);
    while listeners.join_next().await.is_some() {}
    store.close().await;
    tracing::info!("shutdown complete");
    Ok(())
}

/// `GET /health`: 200 "OK" while the process serves requests (load balancers, compose).
fn with_health(router: Router) -> Router {
    Router::new().route("/health", get(|| async { "OK" })).merge(router)
}

/// Listen for SIGTERM and SIGINT from now on; the future ends at the first of them.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let signals = {
        use tokio::signal::unix::{SignalKind, signal};
        (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    };
    async move {
        #[cfg(unix)]
        match signals {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM received"),
                    _ = int.recv() => tracing::info!("SIGINT received"),
                }
                return;
            }
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM and SIGINT; only Ctrl-C stops the server")
            }
        }
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT either; the server must be killed to stop");
            std::future::pending::<()>().await;
        }
    }
}
