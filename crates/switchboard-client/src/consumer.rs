//! The consume loop: long-poll, run a handler per delivery, ack or nack the results.
//! It must not drop errors silently (it logs them) and must not hold on after shutdown except
//! to finish handlers already started.

use std::any::Any;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde_json::Value;
use serde_json::value::RawValue;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::backoff::Backoff;
use crate::client::Client;
use crate::error::Error;
use crate::handler::HandlerError;
use crate::types::{Ack, ConsumeRequest, Delivery, Nack};

/// First delay after a failed request.
const BACKOFF_INITIAL: Duration = Duration::from_millis(100);
/// Longest delay between failed requests.
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Tries for one ack or nack call that fails in transport.
const SETTLE_TRIES: u32 = 5;
/// A consume that returns nothing faster than this is followed by a pause of this long, so a
/// server that does not long-poll (or `wait_ms` 0) does not turn the loop into a busy loop.
const MIN_EMPTY_POLL: Duration = Duration::from_millis(100);

/// A long-polling consumer that runs a handler for every delivery of the client's app.
///
/// Delivery is at least once: a delivery whose ack is lost (lease expired, network error) is
/// handed out again, so handlers should be idempotent.
#[derive(Debug, Clone)]
pub struct Consumer {
    client: Client,
    request: ConsumeRequest,
    concurrency: usize,
}

impl Consumer {
    /// A consumer with [`ConsumeRequest::default`] settings, running a whole batch at once.
    pub fn new(client: Client) -> Consumer {
        Consumer {
            client,
            request: ConsumeRequest::default(),
            concurrency: 0,
        }
    }

    /// Leases at most `n` deliveries per poll (at least 1).
    pub fn max(mut self, n: u32) -> Self {
        self.request.max = n.max(1);
        self
    }

    /// Lets the server hold each poll open for up to `ms` milliseconds.
    pub fn wait_ms(mut self, ms: u64) -> Self {
        self.request.wait_ms = ms;
        self
    }

    /// Leases each delivery for `ms` milliseconds; the whole batch, including its ack, should
    /// finish within that time.
    pub fn lease_ms(mut self, ms: u64) -> Self {
        self.request.lease_ms = ms;
        self
    }

    /// Runs at most `n` handlers of a batch at once; 0 (the default) runs the whole batch.
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n;
        self
    }

    /// Long-polls until `shutdown` is cancelled, running `handler` for each delivery, the
    /// deliveries of one batch concurrently as tokio tasks.
    ///
    /// `Ok(data)` acks the delivery with `data` as ack data; `Err(e)` nacks it with
    /// `e.to_string()` as the error and `e`'s retry hints. A panicking handler is nacked too.
    /// The acks of a batch go out together in one `/v1/ack` call once all its handlers have
    /// finished. Failed acks and nacks are logged (`tracing::warn`) and otherwise ignored: the
    /// delivery comes back.
    ///
    /// Transport and server errors on consume are logged and retried after a backoff (100 ms
    /// doubling to 5 s). A 401 or 403 ends the loop with that error. On shutdown, a poll in
    /// progress is abandoned (deliveries it may have leased come back after their lease),
    /// handlers already running finish and are acked, remaining ones of the batch are not
    /// started, and `run` returns `Ok(())`.
    pub async fn run<F, Fut>(self, shutdown: CancellationToken, handler: F) -> Result<(), Error>
    where
        F: Fn(Delivery) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<Option<Value>, HandlerError>> + Send + 'static,
    {
        self.run_as(shutdown, handler).await
    }

    /// [`run`](Self::run) with each event's `data` read into `D` (a struct of the fields the
    /// handler needs) before its handler runs. A delivery whose data does not fit `D` never
    /// reaches the handler: it is nacked permanently, with the reason as its error (`data
    /// does not fit the consumer's type: …`), so it goes to the dead letters, where it can be
    /// seen and requeued once a consumer that reads it runs. The other deliveries of its batch
    /// are handled as usual.
    pub async fn run_as<D, F, Fut>(
        self,
        shutdown: CancellationToken,
        handler: F,
    ) -> Result<(), Error>
    where
        D: DeserializeOwned + Send + 'static,
        F: Fn(Delivery<D>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<Option<Value>, HandlerError>> + Send + 'static,
    {
        let mut backoff = Backoff::new(BACKOFF_INITIAL, BACKOFF_MAX);
        loop {
            let started = Instant::now();
            let polled = tokio::select! {
                biased;
                () = shutdown.cancelled() => return Ok(()),
                polled = self.client.consume_as::<Box<RawValue>>(&self.request) => polled,
            };
            match polled {
                Ok(deliveries) if deliveries.is_empty() => {
                    backoff.reset();
                    if started.elapsed() < MIN_EMPTY_POLL && !pause(MIN_EMPTY_POLL, &shutdown).await
                    {
                        return Ok(());
                    }
                }
                Ok(deliveries) => {
                    backoff.reset();
                    self.process(deliveries, &handler, &shutdown).await;
                }
                Err(
                    err @ Error::Api {
                        status: 401 | 403, ..
                    },
                ) => return Err(err),
                Err(err) => {
                    let delay = backoff.next_delay();
                    warn!(
                        error = %err,
                        retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                        "switchboard consume failed"
                    );
                    if !pause(delay, &shutdown).await {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Runs the handlers of one batch, then acks and nacks their results.
    async fn process<D, F, Fut>(
        &self,
        deliveries: Vec<Delivery<Box<RawValue>>>,
        handler: &F,
        shutdown: &CancellationToken,
    ) where
        D: DeserializeOwned + Send + 'static,
        F: Fn(Delivery<D>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<Option<Value>, HandlerError>> + Send + 'static,
    {
        let mut nacks = Vec::new();
        let typed: Vec<Delivery<D>> = deliveries
            .into_iter()
            .filter_map(|d| match read_data(d) {
                Ok(d) => Some(d),
                Err(misfit) => {
                    warn!(
                        delivery_id = misfit.delivery_id,
                        error = %misfit.error,
                        "switchboard delivery's data does not fit the consumer's type"
                    );
                    nacks.push(misfit);
                    None
                }
            })
            .collect();
        let limit = match self.concurrency {
            0 => typed.len(),
            n => n,
        };
        let mut waiting = typed.into_iter();
        let mut running = JoinSet::new();
        let mut owners = HashMap::new();
        let mut acks = Vec::new();
        loop {
            while running.len() < limit && !shutdown.is_cancelled() {
                let Some(delivery) = waiting.next() else {
                    break;
                };
                let owner = (delivery.delivery_id.clone(), delivery.attempt);
                let handler = handler.clone();
                let task = running.spawn(async move { handler(delivery).await });
                owners.insert(task.id(), owner);
            }
            let Some(joined) = running.join_next_with_id().await else {
                break;
            };
            let (task, outcome) = match joined {
                Ok((task, outcome)) => (task, outcome),
                Err(err) => {
                    let task = err.id();
                    let message = match err.try_into_panic() {
                        Ok(payload) => format!("handler panicked: {}", panic_message(&*payload)),
                        Err(_) => "handler was cancelled".to_owned(),
                    };
                    warn!(error = %message, "switchboard handler did not finish");
                    (task, Err(HandlerError::new(message)))
                }
            };
            let Some((delivery_id, attempt)) = owners.remove(&task) else {
                continue;
            };
            match outcome {
                Ok(data) => acks.push(Ack {
                    delivery_id,
                    attempt: Some(attempt),
                    data,
                }),
                Err(err) => {
                    debug!(delivery_id, attempt, error = %err, "switchboard handler failed");
                    nacks.push(Nack {
                        delivery_id,
                        attempt: Some(attempt),
                        error: err.to_string(),
                        retry_in_ms: err.retry_in_ms,
                        permanent: err.permanent,
                    });
                }
            }
        }
        self.settle(&acks, &nacks, shutdown).await;
    }

    /// Sends the acks of a batch in one call and each nack, logging failures.
    async fn settle(&self, acks: &[Ack], nacks: &[Nack], shutdown: &CancellationToken) {
        if !acks.is_empty() {
            match retrying(shutdown, || self.client.ack(acks)).await {
                Ok(acknowledged) if acknowledged < acks.len() as u64 => debug!(
                    sent = acks.len(),
                    acknowledged, "switchboard accepted fewer acks than sent"
                ),
                Ok(_) => {}
                Err(err) => warn!(
                    error = %err,
                    count = acks.len(),
                    "switchboard ack failed; the deliveries will come back"
                ),
            }
        }
        for nack in nacks {
            if let Err(err) = retrying(shutdown, || self.client.nack(nack)).await {
                warn!(
                    error = %err,
                    delivery_id = nack.delivery_id,
                    "switchboard nack failed; the delivery will come back"
                );
            }
        }
    }
}

/// `delivery` with its data read into `D`, or the permanent nack of data that does not fit.
fn read_data<D: DeserializeOwned>(delivery: Delivery<Box<RawValue>>) -> Result<Delivery<D>, Nack> {
    let Delivery {
        delivery_id,
        attempt,
        lease_expires_at,
        event,
    } = delivery;
    let data = match serde_json::from_str::<D>(event.data.get()) {
        Ok(data) => data,
        Err(err) => {
            return Err(Nack {
                delivery_id,
                attempt: Some(attempt),
                error: format!("data does not fit the consumer's type: {err}"),
                retry_in_ms: None,
                permanent: true,
            });
        }
    };
    Ok(Delivery {
        delivery_id,
        attempt,
        lease_expires_at,
        event: event.with_data(data),
    })
}

/// Runs `call`, retrying transport errors with backoff up to [`SETTLE_TRIES`] times, but not
/// after `shutdown` is cancelled. The first try always happens.
async fn retrying<T, Fut>(
    shutdown: &CancellationToken,
    mut call: impl FnMut() -> Fut,
) -> Result<T, Error>
where
    Fut: Future<Output = Result<T, Error>>,
{
    let mut backoff = Backoff::new(BACKOFF_INITIAL, BACKOFF_MAX);
    let mut tries = 1;
    loop {
        match call().await {
            Err(Error::Transport(message)) if tries < SETTLE_TRIES && !shutdown.is_cancelled() => {
                let delay = backoff.next_delay();
                debug!(error = %message, "switchboard request failed; retrying");
                if !pause(delay, shutdown).await {
                    return Err(Error::Transport(message));
                }
                tries += 1;
            }
            result => return result,
        }
    }
}

/// The text of a panic payload, when it is a string.
fn panic_message(payload: &(dyn Any + Send)) -> &str {
    if let Some(text) = payload.downcast_ref::<&'static str>() {
        text
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text
    } else {
        "non-string panic payload"
    }
}

/// Sleeps for `delay`; false when `shutdown` was cancelled first.
async fn pause(delay: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        biased;
        () = shutdown.cancelled() => false,
        () = tokio::time::sleep(delay) => true,
    }
}
