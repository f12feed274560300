//! The one error type of the storage layer. Messages are for the API caller: lowercase, no
//! trailing dot, never SQL or file paths.

use switchboard_core::{AppId, DeliveryId, DeliveryStatus};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("unknown app: {0}")]
    UnknownApp(AppId),
    #[error("app already exists: {0}")]
    AppExists(AppId),
    #[error("unknown key: {0}")]
    UnknownKey(String),
    #[error("unknown delivery: {0}")]
    UnknownDelivery(DeliveryId),
    #[error("delivery {id} is {status}, not in flight: it can no longer be acked or nacked")]
    NotInFlight {
        id: DeliveryId,
        status: DeliveryStatus,
    },
    #[error(
        "lease lost: delivery {id} is on attempt {current}, not {given}; its lease expired and it was handed out again"
    )]
    LeaseLost {
        id: DeliveryId,
        given: u32,
        current: u32,
    },
    #[error("delivery {id} is {status}, not dead: only dead deliveries can be requeued")]
    NotDead {
        id: DeliveryId,
        status: DeliveryStatus,
    },
    #[error("invalid cursor: pass the next_cursor of a previous page unchanged")]
    InvalidCursor,
    #[error("the store is closed")]
    Closed,
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    #[error("storage failure: {0}")]
    Internal(String),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        match e {
            rusqlite::Error::SqliteFailure(code, _)
                if matches!(
                    code.code,
                    rusqlite::ErrorCode::DatabaseBusy
                        | rusqlite::ErrorCode::DatabaseLocked
                        | rusqlite::ErrorCode::DiskFull
                        | rusqlite::ErrorCode::CannotOpen
                ) =>
            {
                StoreError::Unavailable(code.to_string())
            }
            other => StoreError::Internal(other.to_string()),
        }
    }
}
