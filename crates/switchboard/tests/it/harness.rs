//! Starts a real switchboard (in-process, port 0, temp data dir) and hands out SDK clients.

use std::sync::Arc;

use serde_json::json;
use switchboard_client::{Client, Error, EventView, NewApp, NewEvent, PublishedEvent};
use switchboard_server::Config;
use switchboard_store::Store;
use switchboard_store::sqlite::SqliteStore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const ADMIN_KEY: &str = "sb_test_admin_key";

pub struct Hub {
    pub url: String,
    pub admin: Client,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Hub {
    pub async fn start() -> Hub {
        Hub::start_with(Config::new(ADMIN_KEY)).await
    }

    pub async fn start_with(config: Config) -> Hub {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        Hub::serve(config, Arc::new(store), dir).await
    }

    /// Starts a hub on a store of the caller's (several hubs may share one Redis).
    pub async fn start_on(store: Arc<dyn Store>) -> Hub {
        let dir = tempfile::tempdir().unwrap();
        Hub::serve(Config::new(ADMIN_KEY), store, dir).await
    }

    async fn serve(config: Config, store: Arc<dyn Store>, dir: tempfile::TempDir) -> Hub {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(switchboard_server::run(
            config,
            listener,
            store,
            shutdown.clone(),
        ));
        let task = tokio::spawn(async move { task.await.unwrap().unwrap() });
        Hub {
            admin: Client::new(&url, ADMIN_KEY),
            url,
            shutdown,
            task,
            _dir: dir,
        }
    }

    /// Registers `id` subscribed to `patterns` and returns a client with its key.
    pub async fn app(&self, id: &str, patterns: &[&str]) -> Client {
        self.app_with(NewApp::new(id, patterns.iter().copied()))
            .await
    }

    pub async fn app_with(&self, app: NewApp) -> Client {
        let created = self.admin.create_app(&app).await.unwrap();
        Client::new(&self.url, created.api_key)
    }

    /// Stops the server: in-flight requests finish, the store is closed.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.unwrap();
    }
}

pub fn event(ty: &str, tenant: &str) -> NewEvent {
    NewEvent::new(ty, tenant, json!({"n": 1}))
}

pub async fn publish(client: &Client, ev: NewEvent) -> PublishedEvent {
    client.publish(&ev).await.unwrap()
}

pub async fn lookup(client: &Client, id: &str) -> EventView {
    client.event(id).await.unwrap()
}

/// Asserts a 4xx naming `field` (in the details) with `status` and `code`.
pub fn assert_rejected(
    result: Result<impl std::fmt::Debug, Error>,
    status: u16,
    code: &str,
    field: Option<&str>,
) {
    let err = result.expect_err("the request should be refused");
    let Error::Api {
        status: got,
        code: got_code,
        message,
        details,
    } = &err
    else {
        panic!("expected an API error, got {err:?}");
    };
    assert_eq!((*got, got_code.as_str()), (status, code), "{message}");
    assert!(!message.is_empty());
    if let Some(field) = field {
        assert!(
            details.iter().any(|d| d.field == field),
            "expected a problem with `{field}`, got {details:?} ({message})"
        );
    }
}

/// Every event stored, as the admin sees them.
pub async fn stored_count(hub: &Hub) -> usize {
    let page = hub
        .admin
        .events(&switchboard_client::EventsQuery {
            limit: Some(1000),
            ..Default::default()
        })
        .await
        .unwrap();
    page.events.len()
}
