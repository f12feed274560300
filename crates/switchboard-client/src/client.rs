//! The HTTP client: one method per endpoint of the switchboard API.
//! It must not retry, sleep or log; retry policy belongs to callers such as the consumer.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::header::HeaderValue;
use hyper::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::ClientConfig;

use crate::error::{Error, api_error};
use crate::query::{encode, events_query_string, query_string};
use crate::stream::ChangeStream;
use crate::transparency::{Matrix, Stats, TenantHealth};
use crate::transport::{DEFAULT_MAX_IN_FLIGHT, Outgoing, Tls, Transport};
use crate::types::{
    Ack, AckRequest, AckResponse, AppInfo, AppList, AppUpdate, ConsumeRequest, ConsumeResponse,
    CreatedApp, CreatedKey, DeadFilter, DeadLettersPage, Delivery, EventBatch, EventView,
    EventsPage, EventsQuery, Health, KeyInfo, Nack, NackOutcome, NewApp, NewEvent, PublishResponse,
    PublishedEvent, UnacknowledgedPage,
};

/// Extra time a consume request gets beyond its long-poll `wait_ms`.
const CONSUME_GRACE: Duration = Duration::from_secs(10);

/// A handle on one switchboard server, authenticated with one API key.
///
/// Cheap to clone: clones share the connection pool. There is no overall request timeout
/// (consume long-polls), only a 5 s connect timeout; `consume` sets its own per-request
/// timeout of `wait_ms` + 10 s.
///
/// At most [`DEFAULT_MAX_IN_FLIGHT`] requests (100) are on the wire at once, over as many
/// connections at most; more wait their turn (see [`Client::with_max_in_flight`]). A
/// long-poll holds its turn while it waits, and a change stream while it is open.
#[derive(Clone)]
pub struct Client {
    base_url: String,
    /// `Bearer {api_key}`, built once; `Err` (why) when the key cannot be a header value, and
    /// then each request fails with it.
    auth: Result<HeaderValue, String>,
    http: Arc<Transport>,
}

/// The `Authorization` header of `api_key`, marked sensitive.
fn bearer(api_key: &str) -> Result<HeaderValue, String> {
    let mut value = HeaderValue::try_from(format!("Bearer {api_key}")).map_err(|_| {
        "the API key cannot be sent: it must be visible ASCII characters only".to_owned()
    })?;
    value.set_sensitive(true);
    Ok(value)
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("base_url", &self.base_url)
            .field("api_key", &"<redacted>")
            .finish()
    }
}

impl Client {
    /// A client for the server at `base_url` (e.g. `http://localhost:8080`) using `api_key`.
    /// An `https://` server's certificate is checked against the system's trust roots; use
    /// [`Client::with_tls`] for others. A base URL that cannot be used makes each request fail
    /// with an [`Error::Transport`] that says why.
    pub fn new(base_url: impl Into<String>, api_key: impl Into<String>) -> Client {
        Client::build(base_url.into(), api_key.into(), Tls::System)
    }

    /// A client whose `https://` connections use `config` (its trust roots, say a private CA).
    pub fn with_tls(
        base_url: impl Into<String>,
        api_key: impl Into<String>,
        config: Arc<ClientConfig>,
    ) -> Client {
        let tls = Tls::Custom(TlsConnector::from(config));
        Client::build(base_url.into(), api_key.into(), tls)
    }

    fn build(mut base_url: String, api_key: String, tls: Tls) -> Client {
        while base_url.ends_with('/') {
            base_url.pop();
        }
        Client {
            http: Arc::new(Transport::new(&base_url, tls, DEFAULT_MAX_IN_FLIGHT)),
            base_url,
            auth: bearer(&api_key),
        }
    }

    /// The same server and key with at most `max` requests on the wire at once (at least 1),
    /// over a new connection pool of its own: clones made before keep the old pool and limit.
    /// Raise it when more than 100 long-polls (several consumers, apps with [`Client::with_key`])
    /// share one client; lower it to bound the connections one process opens.
    pub fn with_max_in_flight(self, max: usize) -> Client {
        Client {
            http: Arc::new(Transport::new(&self.base_url, self.http.tls().clone(), max)),
            ..self
        }
    }

    /// How many requests may be on the wire at once.
    pub fn max_in_flight(&self) -> usize {
        self.http.max_in_flight()
    }

    /// The same server (and connection pool) with another API key.
    pub fn with_key(&self, api_key: impl Into<String>) -> Client {
        Client {
            base_url: self.base_url.clone(),
            auth: bearer(&api_key.into()),
            http: self.http.clone(),
        }
    }

    /// The server's base URL, without trailing slash.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// `GET /healthz`: `Ok` when the server answers `{"status":"ok"}`.
    pub async fn health(&self) -> Result<(), Error> {
        let health: Health = self.send(Method::GET, "/healthz", None).await?;
        if health.status == "ok" {
            Ok(())
        } else {
            Err(Error::Decode(format!(
                "unexpected health status {:?}",
                health.status
            )))
        }
    }

    /// `POST /v1/apps` (admin key): registers an app and returns its new API key.
    pub async fn create_app(&self, app: &NewApp) -> Result<CreatedApp, Error> {
        self.send_json(Method::POST, "/v1/apps", app).await
    }

    /// `GET /v1/apps` (admin key): every registered app.
    pub async fn list_apps(&self) -> Result<Vec<AppInfo>, Error> {
        let list: AppList = self.send(Method::GET, "/v1/apps", None).await?;
        Ok(list.apps)
    }

    /// `PATCH /v1/apps/{id}` (admin key): changes the `Some` fields of `update`.
    pub async fn update_app(&self, id: &str, update: &AppUpdate) -> Result<AppInfo, Error> {
        let path = format!("/v1/apps/{}", encode(id));
        self.send_json(Method::PATCH, &path, update).await
    }

    /// `POST /v1/apps/{id}/keys` (admin key): another live key for the app, shown this once
    /// (rotation: hand out the new key, then revoke the old one).
    pub async fn add_app_key(&self, app: &str) -> Result<CreatedKey, Error> {
        let path = format!("/v1/apps/{}/keys", encode(app));
        self.send(Method::POST, &path, None).await
    }

    /// `GET /v1/apps/{id}/keys` (admin key): the app's live keys, ids and times only.
    pub async fn app_keys(&self, app: &str) -> Result<Vec<KeyInfo>, Error> {
        #[derive(serde::Deserialize)]
        struct Reply {
            keys: Vec<KeyInfo>,
        }
        let path = format!("/v1/apps/{}/keys", encode(app));
        let reply: Reply = self.send(Method::GET, &path, None).await?;
        Ok(reply.keys)
    }

    /// `DELETE /v1/apps/{id}/keys/{key_id}` (admin key): revokes one key of the app at once.
    pub async fn revoke_app_key(&self, app: &str, key_id: &str) -> Result<(), Error> {
        let path = format!("/v1/apps/{}/keys/{}", encode(app), encode(key_id));
        let _: Value = self.send(Method::DELETE, &path, None).await?;
        Ok(())
    }

    /// `POST /v1/tenants/{tenant}/readers` (admin key): a read-only key for one tenant's
    /// events, deliveries, matrix, health and stats, shown this once.
    pub async fn add_tenant_reader(&self, tenant: &str) -> Result<CreatedKey, Error> {
        let path = format!("/v1/tenants/{}/readers", encode(tenant));
        self.send(Method::POST, &path, None).await
    }

    /// `GET /v1/tenants/{tenant}/readers` (admin key): the tenant's live reader keys.
    pub async fn tenant_readers(&self, tenant: &str) -> Result<Vec<KeyInfo>, Error> {
        #[derive(serde::Deserialize)]
        struct Reply {
            readers: Vec<KeyInfo>,
        }
        let path = format!("/v1/tenants/{}/readers", encode(tenant));
        let reply: Reply = self.send(Method::GET, &path, None).await?;
        Ok(reply.readers)
    }

    /// `DELETE /v1/tenants/{tenant}/readers/{key_id}` (admin key): revokes a reader key.
    pub async fn revoke_tenant_reader(&self, tenant: &str, key_id: &str) -> Result<(), Error> {
        let path = format!("/v1/tenants/{}/readers/{}", encode(tenant), encode(key_id));
        let _: Value = self.send(Method::DELETE, &path, None).await?;
        Ok(())
    }

    /// `POST /v1/events` (app key) with a single event.
    pub async fn publish(&self, event: &NewEvent) -> Result<PublishedEvent, Error> {
        let response: PublishResponse = self.send_json(Method::POST, "/v1/events", event).await?;
        response
            .events
            .into_iter()
            .next()
            .ok_or_else(|| Error::Decode("publish response holds no event".to_owned()))
    }

    /// `POST /v1/events` (app key) with `{"events":[..]}`; results in the same order.
    pub async fn publish_batch(&self, events: &[NewEvent]) -> Result<Vec<PublishedEvent>, Error> {
        let body = EventBatch { events };
        let response: PublishResponse = self.send_json(Method::POST, "/v1/events", &body).await?;
        Ok(response.events)
    }

    /// `POST /v1/events` (app key) with a body that is JSON already: one event, or
    /// `{"events":[..]}`. For callers holding events as JSON (a relay, a replay from a log),
    /// which would otherwise parse and serialize them again; results in the body's order.
    pub async fn publish_json(&self, body: Vec<u8>) -> Result<Vec<PublishedEvent>, Error> {
        let response: PublishResponse = self.send(Method::POST, "/v1/events", Some(body)).await?;
        Ok(response.events)
    }

    /// `POST /v1/consume` (app key): leases up to `req.max` deliveries, waiting up to
    /// `req.wait_ms` for some to become available. An empty result means none came.
    pub async fn consume(&self, req: &ConsumeRequest) -> Result<Vec<Delivery>, Error> {
        self.consume_as(req).await
    }

    /// [`consume`](Self::consume) with each event's `data` read straight into `D` (a struct of
    /// the fields the consumer needs; `serde::de::IgnoredAny` for none) instead of a JSON
    /// `Value`. Data that does not fit `D` fails the whole call with [`Error::Decode`], and
    /// its deliveries come back once their lease expires: use a `D` every publisher's data
    /// fits, or `Value`.
    pub async fn consume_as<D: DeserializeOwned>(
        &self,
        req: &ConsumeRequest,
    ) -> Result<Vec<Delivery<D>>, Error> {
        let timeout = Duration::from_millis(req.wait_ms).saturating_add(CONSUME_GRACE);
        let body = encode_json(req)?;
        let (status, bytes) = tokio::time::timeout(
            timeout,
            self.exchange(Method::POST, "/v1/consume", Some(body)),
        )
        .await
        .map_err(|_| Error::Transport(format!("no answer within {} ms", timeout.as_millis())))??;
        let response: ConsumeResponse<D> = decode(status, &bytes)?;
        Ok(response.deliveries)
    }

    /// `POST /v1/ack` (app key): acknowledges deliveries; returns how many the server took.
    pub async fn ack(&self, acks: &[Ack]) -> Result<u64, Error> {
        let response: AckResponse = self
            .send_json(Method::POST, "/v1/ack", &AckRequest { acks })
            .await?;
        Ok(response.acknowledged)
    }

    /// `POST /v1/nack` (app key): reports a failed delivery.
    pub async fn nack(&self, nack: &Nack) -> Result<NackOutcome, Error> {
        self.send_json(Method::POST, "/v1/nack", nack).await
    }

    /// `POST /v1/deliveries/{id}/extend` (app key): pushes the lease of a delivery this
    /// consumer holds to `lease_ms` from now; returns the new deadline (RFC 3339).
    pub async fn extend<D>(&self, delivery: &Delivery<D>, lease_ms: u64) -> Result<String, Error> {
        #[derive(Serialize)]
        struct Body {
            lease_ms: u64,
            attempt: u32,
        }
        #[derive(serde::Deserialize)]
        struct Reply {
            lease_expires_at: String,
        }
        let path = format!("/v1/deliveries/{}/extend", encode(&delivery.delivery_id));
        let body = Body {
            lease_ms,
            attempt: delivery.attempt,
        };
        let reply: Reply = self.send_json(Method::POST, &path, &body).await?;
        Ok(reply.lease_expires_at)
    }

    /// `GET /v1/dead-letters`: one page of dead deliveries matching `filter`, newest first.
    pub async fn dead_letters(
        &self,
        filter: &DeadFilter,
        limit: Option<u32>,
        cursor: Option<&str>,
    ) -> Result<DeadLettersPage, Error> {
        let limit = limit.map(|n| n.to_string());
        let query = query_string(&[
            ("tenant", filter.tenant.as_deref()),
            ("target", filter.target.as_deref()),
            ("type", filter.event_type.as_deref()),
            ("since", filter.since.as_deref()),
            ("until", filter.until.as_deref()),
            ("limit", limit.as_deref()),
            ("cursor", cursor),
        ]);
        let path = format!("/v1/dead-letters{query}");
        self.send(Method::GET, &path, None).await
    }

    /// `POST /v1/dead-letters/requeue` with ids: all must be dead, or nothing moves.
    pub async fn requeue(&self, delivery_ids: &[String]) -> Result<u64, Error> {
        self.requeue_body(&serde_json::json!({ "delivery_ids": delivery_ids }))
            .await
    }

    /// `POST /v1/dead-letters/requeue` with a filter: every matching dead delivery, moved
    /// in bounded batches; returns how many moved.
    pub async fn requeue_matching(&self, filter: &DeadFilter) -> Result<u64, Error> {
        self.requeue_body(&serde_json::json!({ "filter": filter }))
            .await
    }

    async fn requeue_body(&self, body: &Value) -> Result<u64, Error> {
        #[derive(serde::Deserialize)]
        struct Reply {
            requeued: u64,
        }
        let reply: Reply = self
            .send_json(Method::POST, "/v1/dead-letters/requeue", body)
            .await?;
        Ok(reply.requeued)
    }

    /// `GET /v1/tenants/{tenant}/unacknowledged`: deliveries not yet acknowledged nor dead,
    /// oldest first, created at least `older_than_ms` ago.
    pub async fn unacknowledged(
        &self,
        tenant: &str,
        older_than_ms: u64,
        limit: Option<u32>,
        cursor: Option<&str>,
    ) -> Result<UnacknowledgedPage, Error> {
        let older = older_than_ms.to_string();
        let limit = limit.map(|n| n.to_string());
        let query = query_string(&[
            ("older_than_ms", Some(older.as_str())),
            ("limit", limit.as_deref()),
            ("cursor", cursor),
        ]);
        let path = format!("/v1/tenants/{}/unacknowledged{query}", encode(tenant));
        self.send(Method::GET, &path, None).await
    }

    /// `GET /v1/tenants/{tenant}/matrix?window=`: one row per channel (window `1h`, `24h`,
    /// `7d` or `all`; `None` for the server's default, 24h).
    pub async fn matrix(&self, tenant: &str, window: Option<&str>) -> Result<Matrix, Error> {
        let query = query_string(&[("window", window)]);
        let path = format!("/v1/tenants/{}/matrix{query}", encode(tenant));
        self.send(Method::GET, &path, None).await
    }

    /// `GET /v1/matrix?window=` (admin): one row per channel, summed over tenants.
    pub async fn suite_matrix(&self, window: Option<&str>) -> Result<Matrix, Error> {
        let query = query_string(&[("window", window)]);
        self.send(Method::GET, &format!("/v1/matrix{query}"), None)
            .await
    }

    /// `GET /v1/tenants/{tenant}/health?window=`: the verdict and its reasons.
    pub async fn health_of(
        &self,
        tenant: &str,
        window: Option<&str>,
    ) -> Result<TenantHealth, Error> {
        let query = query_string(&[("window", window)]);
        let path = format!("/v1/tenants/{}/health{query}", encode(tenant));
        self.send(Method::GET, &path, None).await
    }

    /// `GET /v1/stats`: counts grouped by `type`, `source`, `target` or `hour`.
    pub async fn stats(
        &self,
        tenant: Option<&str>,
        group_by: &str,
        since: Option<&str>,
        until: Option<&str>,
    ) -> Result<Stats, Error> {
        let query = query_string(&[
            ("tenant", tenant),
            ("group_by", Some(group_by)),
            ("since", since),
            ("until", until),
        ]);
        self.send(Method::GET, &format!("/v1/stats{query}"), None)
            .await
    }

    /// `GET /v1/stream`: the live feed of changes, optionally for one tenant and a type
    /// pattern. The stream stays open until the server closes it or it is dropped.
    pub async fn stream(
        &self,
        tenant: Option<&str>,
        event_type: Option<&str>,
    ) -> Result<ChangeStream, Error> {
        let query = query_string(&[("tenant", tenant), ("type", event_type)]);
        let path = format!("/v1/stream{query}");
        let auth = self.auth()?;
        let outgoing = Outgoing {
            method: Method::GET,
            path: &path,
            auth,
            body: None,
            accept: Some("text/event-stream"),
        };
        let (status, mut body) = self.http.open(outgoing).await?;
        if !status.is_success() {
            let mut bytes = Vec::new();
            while let Some(chunk) = body.chunk().await {
                bytes.extend_from_slice(&chunk?);
            }
            return Err(api_error(status.as_u16(), &bytes));
        }
        Ok(ChangeStream::new(body))
    }

    /// `GET /v1/events/{id}`: an event with its deliveries and their history.
    pub async fn event(&self, id: &str) -> Result<EventView, Error> {
        let path = format!("/v1/events/{}", encode(id));
        self.send(Method::GET, &path, None).await
    }

    /// `GET /v1/events`: one page of events matching `query`.
    pub async fn events(&self, query: &EventsQuery) -> Result<EventsPage, Error> {
        let path = format!("/v1/events{}", events_query_string(query));
        self.send(Method::GET, &path, None).await
    }

    /// Raw escape hatch for tests and malformed input: sends `body` as-is with content type
    /// JSON to `path` with `method` and this client's key. Any status is returned, not turned
    /// into an error; the body is parsed as JSON, or `Value::Null` when empty or not JSON.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(u16, Value), Error> {
        let (status, bytes) = self.exchange(method, path, body).await?;
        let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok((status.as_u16(), value))
    }

    /// One request to `path` (which may carry a query string) under the base URL, with this
    /// client's key and an optional JSON body; the whole response.
    async fn exchange(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Bytes), Error> {
        let auth = self.auth()?;
        let outgoing = Outgoing {
            method,
            path,
            auth,
            body,
            accept: None,
        };
        self.http.exchange(outgoing).await
    }

    /// The `Authorization` header, or why the key cannot be sent.
    fn auth(&self) -> Result<&HeaderValue, Error> {
        self.auth.as_ref().map_err(|e| Error::Transport(e.clone()))
    }

    async fn send_json<B, T>(&self, method: Method, path: &str, body: &B) -> Result<T, Error>
    where
        B: Serialize + ?Sized,
        T: DeserializeOwned,
    {
        self.send(method, path, Some(encode_json(body)?)).await
    }

    async fn send<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T, Error> {
        let (status, bytes) = self.exchange(method, path, body).await?;
        decode(status, &bytes)
    }
}

fn encode_json<B: Serialize + ?Sized>(body: &B) -> Result<Vec<u8>, Error> {
    serde_json::to_vec(body)
        .map_err(|e| Error::Transport(format!("cannot encode the request body: {e}")))
}

/// A 2xx response's body as `T`; any other status as the server's error.
fn decode<T: DeserializeOwned>(status: StatusCode, bytes: &[u8]) -> Result<T, Error> {
    if !status.is_success() {
        return Err(api_error(status.as_u16(), bytes));
    }
    serde_json::from_slice(bytes).map_err(|e| Error::Decode(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_keeps_its_key_and_server_with_another_in_flight_limit() {
        let client = Client::new("http://127.0.0.1:7800/", "sb_one");
        assert_eq!(client.max_in_flight(), DEFAULT_MAX_IN_FLIGHT);
        let narrow = client.with_max_in_flight(3);
        assert_eq!(narrow.max_in_flight(), 3);
        assert_eq!(narrow.base_url(), "http://127.0.0.1:7800");
        assert_eq!(narrow.auth.expect("a header value"), "Bearer sb_one");
    }

    #[test]
    fn requests_carry_the_clients_key_as_a_sensitive_bearer() {
        let client = Client::new("http://127.0.0.1:7800", "sb_one");
        let auth = client.auth.clone().expect("a header value");
        assert_eq!(auth, "Bearer sb_one");
        assert!(auth.is_sensitive());
        let other = client.with_key("sb_two").auth.expect("a header value");
        assert_eq!(other, "Bearer sb_two");
    }

    #[tokio::test]
    async fn a_key_that_cannot_be_a_header_fails_each_request_saying_so() {
        // Nothing listens on port 1: the key is refused before any connection is tried.
        let client = Client::new("http://127.0.0.1:1", "sb_bad\nkey");
        let err = client.health().await.expect_err("a bad key");
        assert!(
            matches!(&err, Error::Transport(m) if m.contains("API key")),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_base_url_that_cannot_be_used_fails_each_request_saying_so() {
        let err = Client::new("hub.local:7800", "sb_key")
            .health()
            .await
            .expect_err("no scheme");
        assert!(
            matches!(&err, Error::Transport(m) if m.contains("http://")),
            "{err}"
        );
    }
}
