//! The switchboard server: HTTP handlers over the [`Store`] interface, API keys, long-poll
//! wake-ups and the background workers. Handlers never touch SQLite or Redis: all state goes
//! through the store.

mod api;
mod auth;
mod clock;
mod config;
mod error;
mod registry;
mod sweeper;
mod wake;

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
        shutdown: shutdown.clone(),
    });
    let mut workers = JoinSet::new();
    workers.spawn(sweeper::run(state.clone()));

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
