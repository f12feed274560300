//! The pure domain of switchboard: ids, events, routing, the delivery state machine, retry
//! policy and time formatting. No IO, no clock, no randomness source: callers pass `now` and
//! entropy in, so everything here is deterministic and unit-tested.

pub mod delivery;
pub mod event;
pub mod health;
pub mod histogram;
pub mod ids;
pub mod retry;
pub mod routing;
pub mod time;

pub use delivery::{AfterFailure, AttemptOutcome, DeliveryStatus, Failure};
pub use event::{AppSettings, Subscription};
pub use ids::{AppId, DeliveryId, EventId, EventType, InvalidValue, TenantId};
pub use retry::RetryPolicy;
pub use routing::{Route, TypePattern};
pub use time::Timestamp;
