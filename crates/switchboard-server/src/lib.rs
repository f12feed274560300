//! The switchboard server: HTTP handlers over the [`Store`] interface, API keys, long-poll
//! wake-ups and the background workers. Handlers never touch SQLite or Redis: all state goes
//! through the store.

mod api;
mod auth;
mod clock;
mod config;
mod error;
mod figures;
mod observe;
mod registry;
mod sweeper;
mod wake;
mod watch;

use std::sync::Arc;

use switchboard_store::Store;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use auth::{generate_key, hash_key};
pub use config::{Config, Limits};
pub use error::ApiError;

use crate::registry::Registry;

/// Why the server stopped other than by being asked to.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("store failure at start: {0}")]
    Store(#[from] switchboard_store::StoreError),
    #[error("listener failure: {0}")]
    Io(#[from] std::io::Error),
}

/// Shared by every handler and worker.
pub(crate) struct State {
    pub config: Config,
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

    let router = api::router(state.clone());
    let served = axum::serve(listener, router)
        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
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
        // The reserved app id `switchboard`: the registered apps changed.
        if app.as_str() == "switchboard" {
            if let Err(e) = state.registry.reload(&*state.store).await {
                tracing::warn!(error = %e, "cannot reload the apps another node changed");
            }
            continue;
        }
        state.wake.wake([&app]);
    }
}
