//! The switchboard server: HTTP handlers over the [`Store`] interface, API keys, long-poll
//! wake-ups and the background workers. Handlers never touch SQLite or Redis: all state goes
//! through the store.

mod api;
mod auth;
mod clock;
mod config;
mod error;
mod figures;
mod listen;
mod observe;
mod ratelimit;
mod registry;
pub mod routes;
mod sweeper;
mod tls;
mod wake;
mod watch;

use std::sync::Arc;

use switchboard_store::Store;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use auth::{generate_key, hash_key};
pub use config::{Config, Limits, RateLimit};
pub use error::ApiError;
pub use tls::{Tls, TlsError};

use crate::registry::Registry;

/// Why the server stopped other than by being asked to.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("store failure at start: {0}")]
    Store(#[from] switchboard_store::StoreError),
    #[error("listener failure: {0}")]
    Io(#[from] std::io::Error),
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
}

/// Shared by every handler and worker.
pub(crate) struct State {
    pub config: Config,
    /// SHA-256 of the admin key, compared in constant time.
    pub admin_hash: switchboard_store::KeyHash,
    pub limiter: Option<ratelimit::Limiter>,
    pub store: Arc<dyn Store>,
    pub registry: Registry,
    pub wake: wake::Wake,
    pub sweeper: sweeper::Signal,
    pub observe: observe::Observer,
    pub shutdown: CancellationToken,
}

/// Serves the API on `listener` until `shutdown` is cancelled, then lets in-flight requests
/// finish (long-polls return early), stops the background workers and closes `store`.
pub async fn run(
    config: Config,
    listener: TcpListener,
    store: Arc<dyn Store>,
    shutdown: CancellationToken,
) -> Result<(), ServerError> {
    let registry = Registry::load(&*store).await?;
    let state = Arc::new(State {
        admin_hash: hash_key(&config.admin_key),
        limiter: config.limits.rate_limit.map(ratelimit::Limiter::new),
        config,
        store: store.clone(),
        registry,
        wake: wake::Wake::default(),
        sweeper: sweeper::Signal::default(),
        observe: observe::Observer::default(),
        shutdown: shutdown.clone(),
    });
    // Install the metrics recorder before anything records.
    observe::prometheus();
    let mut workers = JoinSet::new();
    workers.spawn(sweeper::run(state.clone()));
    if let Some(wakeups) = store.wakeups() {
        workers.spawn(forward_wakeups(state.clone(), wakeups));
    }
    workers.spawn(watch::run(state.clone()));
    workers.spawn(flush_key_uses(state.clone()));

    let app = api::app(state.clone());
    let served = listen::serve(
        listener,
        app,
        state.config.tls.clone(),
        &state.config.limits,
        shutdown.clone(),
    )
    .await;
    // However serving ended, stop the workers and close the store.
    shutdown.cancel();
    while let Some(result) = workers.join_next().await {
        if let Err(e) = result {
            tracing::error!(error = %e, "background worker failed");
        }
    }
    drop(state);
    store.close().await;
    served?;
    Ok(())
}

/// Writes the key uses the registry noted, every few seconds and once more at shutdown.
async fn flush_key_uses(state: Arc<State>) {
    loop {
        let stopping = tokio::select! {
            _ = state.shutdown.cancelled() => true,
            _ = tokio::time::sleep(std::time::Duration::from_secs(10)) => false,
        };
        if let Err(e) = state.registry.flush_uses(&*state.store).await {
            tracing::warn!(error = %e, "cannot record when keys were last used");
        }
        if stopping {
            return;
        }
    }
}

/// Wakes this node's long-polls for apps whose deliveries became ready on another node
/// sharing the store, and reloads the apps when another node changed them, until shutdown.
async fn forward_wakeups(
    state: Arc<State>,
    mut wakeups: tokio::sync::broadcast::Receiver<switchboard_core::AppId>,
) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        let app = tokio::select! {
            _ = state.shutdown.cancelled() => return,
            got = wakeups.recv() => match got {
                Ok(app) => app,
                // Missed some: they were only hints; long-polls still time out and look.
                Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => return,
            },
        };
        // The reserved app id `switchboard`: the registered apps or keys changed (a key may
        // have been revoked): reload the apps and forget the cached keys.
        if app.as_str() == "switchboard" {
            if let Err(e) = state.registry.reload(&*state.store).await {
                tracing::warn!(error = %e, "cannot reload the apps another node changed");
            }
            continue;
        }
        state.wake.wake([&app]);
    }
}
