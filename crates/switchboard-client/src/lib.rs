//! Rust client SDK for switchboard, a self-hosted event hub: publish events, consume and
//! acknowledge deliveries, and inspect events and their delivery history over HTTP.
//! It must not depend on other switchboard crates: applications embed it alone.
//!
//! [`Client`] has one method per endpoint; [`Consumer`] runs a long-polling loop that calls
//! your handler for each delivery and acks (or nacks) the outcome. [`Client::consume`] reads
//! each event's `data` into a JSON `Value`; [`Client::consume_as`] into a type of yours.
//!
//! ```no_run
//! use serde_json::json;
//! use switchboard_client::{CancellationToken, Client, Consumer, HandlerError, NewEvent};
//!
//! #[tokio::main]
//! async fn main() -> Result<(), switchboard_client::Error> {
//!     let client = Client::new("http://localhost:8080", "app-api-key");
//!
//!     let event = NewEvent::new("user.created", "acme", json!({"user_id": 42}))
//!         .entity("42")
//!         .id("user-42-created");
//!     let published = client.publish(&event).await?;
//!     println!("published {} to {} apps", published.id, published.deliveries.len());
//!
//!     let shutdown = CancellationToken::new();
//!     Consumer::new(client)
//!         .max(20)
//!         .run(shutdown, |delivery| async move {
//!             match delivery.event.data.get("user_id") {
//!                 Some(id) => Ok(Some(json!({"welcomed": id}))),
//!                 None => Err(HandlerError::permanent("no user_id")),
//!             }
//!         })
//!         .await
//! }
//! ```

mod backoff;
mod client;
mod consumer;
mod error;
mod handler;
mod query;
mod stream;
mod transparency;
mod transport;
mod types;

pub use client::Client;
pub use consumer::Consumer;
pub use error::{Error, FieldError};
pub use handler::HandlerError;
pub use stream::ChangeStream;
pub use transparency::{
    ChannelHealth, HealthCounts, Matrix, MatrixRow, Percentiles, Reason, Stats, StatsRow,
    StreamChange, TenantHealth,
};
pub use transport::DEFAULT_MAX_IN_FLIGHT;
pub use types::{
    Ack, AppInfo, AppUpdate, AttemptView, ConsumeRequest, CreatedApp, CreatedKey, DeadFilter,
    DeadLettersPage, Delivery, DeliveryRecord, DeliveryStatus, DeliveryView, Event, EventView,
    EventsPage, EventsQuery, KeyInfo, Nack, NackOutcome, NewApp, NewEvent, PublishedDelivery,
    PublishedEvent, Subscription, Target, UnacknowledgedPage,
};

/// The HTTP method type taken by [`Client::raw`].
pub use hyper::Method;
/// The TLS library whose `ClientConfig` [`Client::with_tls`] takes.
pub use tokio_rustls::rustls;
/// The shutdown signal taken by [`Consumer::run`].
pub use tokio_util::sync::CancellationToken;
