//! The authorization matrix: every route of the server (`switchboard_server::routes::ROUTES`)
//! × every kind of caller, with the status each must get. A route without a row here fails
//! `every_route_has_a_row`, so a new endpoint cannot ship without deciding who may call it.

use std::sync::atomic::{AtomicUsize, Ordering};

use reqwest::Method;
use serde_json::{Value, json};
use switchboard_client::{Client, ConsumeRequest, Delivery, NewApp};
use switchboard_server::routes::ROUTES;

use crate::harness::{Hub, event, publish};

/// The callers of each column, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    NoKey,
    /// `Authorization: Basic ...`: not a bearer key at all.
    Malformed,
    /// A key of the right app, revoked.
    Revoked,
    Admin,
    /// The app the request is about (the publisher, the delivery's holder, a reader of
    /// what it received).
    RightApp,
    /// An app with nothing to do with the request.
    OtherApp,
    /// A tenant reader of the tenant the request is about (`acme`).
    Reader,
    /// A tenant reader of another tenant (`globex`).
    OtherReader,
}

const WHO: [Who; 8] = [
    Who::NoKey,
    Who::Malformed,
    Who::Revoked,
    Who::Admin,
    Who::RightApp,
    Who::OtherApp,
    Who::Reader,
    Who::OtherReader,
];

/// Expected status per caller, in the order of [`WHO`].
#[rustfmt::skip]
const MATRIX: &[(&str, &str, [u16; 8])] = &[
    //                                                  none  bad   revkd admin right other rdr   rdr2
    ("GET",    "/healthz",                              [200,  200,  200,  200,  200,  200,  200,  200]),
    ("GET",    "/metrics",                              [200,  200,  200,  200,  200,  200,  200,  200]),
    ("POST",   "/v1/apps",                              [401,  401,  401,  201,  403,  403,  403,  403]),
    ("GET",    "/v1/apps",                              [401,  401,  401,  200,  403,  403,  403,  403]),
    ("PATCH",  "/v1/apps/{id}",                         [401,  401,  401,  200,  403,  403,  403,  403]),
    ("POST",   "/v1/apps/{id}/keys",                    [401,  401,  401,  201,  403,  403,  403,  403]),
    ("GET",    "/v1/apps/{id}/keys",                    [401,  401,  401,  200,  403,  403,  403,  403]),
    ("DELETE", "/v1/apps/{id}/keys/{key_id}",           [401,  401,  401,  200,  403,  403,  403,  403]),
    ("POST",   "/v1/tenants/{tenant}/readers",          [401,  401,  401,  201,  403,  403,  403,  403]),
    ("GET",    "/v1/tenants/{tenant}/readers",          [401,  401,  401,  200,  403,  403,  403,  403]),
    ("DELETE", "/v1/tenants/{tenant}/readers/{key_id}", [401,  401,  401,  200,  403,  403,  403,  403]),
    // Any app may publish as itself; the admin key belongs to no app.
    ("POST",   "/v1/events",                            [401,  401,  401,  403,  201,  201,  403,  403]),
    // Readers are held to their tenant (403 when they ask for another).
    ("GET",    "/v1/events",                            [401,  401,  401,  200,  200,  200,  200,  403]),
    // Another app's or tenant's event looks missing.
    ("GET",    "/v1/events/{id}",                       [401,  401,  401,  200,  200,  404,  200,  404]),
    // Consuming nothing is fine; another app's delivery looks missing.
    ("POST",   "/v1/consume",                           [401,  401,  401,  403,  200,  200,  403,  403]),
    ("POST",   "/v1/ack",                               [401,  401,  401,  403,  200,  404,  403,  403]),
    ("POST",   "/v1/nack",                              [401,  401,  401,  403,  200,  404,  403,  403]),
    ("POST",   "/v1/deliveries/{id}/extend",            [401,  401,  401,  403,  200,  404,  403,  403]),
    ("GET",    "/v1/dead-letters",                      [401,  401,  401,  200,  200,  200,  200,  403]),
    ("POST",   "/v1/dead-letters/requeue",              [401,  401,  401,  200,  200,  200,  403,  403]),
    ("GET",    "/v1/tenants/{tenant}/unacknowledged",   [401,  401,  401,  200,  200,  200,  200,  403]),
    ("GET",    "/v1/tenants/{tenant}/matrix",           [401,  401,  401,  200,  200,  200,  200,  403]),
    ("GET",    "/v1/tenants/{tenant}/health",           [401,  401,  401,  200,  200,  200,  200,  403]),
    ("GET",    "/v1/matrix",                            [401,  401,  401,  200,  403,  403,  403,  403]),
    ("GET",    "/v1/stats",                             [401,  401,  401,  200,  200,  200,  200,  403]),
    ("GET",    "/v1/stream",                            [401,  401,  401,  200,  200,  200,  403,  403]),
];

#[test]
fn every_route_has_a_row_and_every_row_a_route() {
    let routes: Vec<(&str, &str)> = ROUTES.iter().map(|r| (r.method, r.path)).collect();
    let rows: Vec<(&str, &str)> = MATRIX.iter().map(|(m, p, _)| (*m, *p)).collect();
    for route in &routes {
        assert!(
            rows.contains(route),
            "{} {} has no row in the authorization matrix: add one",
            route.0,
            route.1
        );
    }
    for row in &rows {
        assert!(routes.contains(row), "{} {} is not a route", row.0, row.1);
    }
    assert_eq!(routes.len(), rows.len(), "a route is listed twice");
}

/// What the requests need: apps, keys, an event of tenant `acme` from crm to hr, and hr's
/// client to lease deliveries with.
struct Fixture {
    hub: Hub,
    http: reqwest::Client,
    crm: Client,
    hr: Client,
    keys: Keys,
    event_id: String,
    held: Delivery,
    seq: AtomicUsize,
}

struct Keys {
    revoked_hr: String,
    crm: String,
    hr: String,
    billing: String,
    acme_reader: String,
    globex_reader: String,
}

impl Fixture {
    async fn new() -> Fixture {
        let hub = Hub::start().await;
        let create = |id: &str, patterns: &[&str]| {
            let app = NewApp::new(id, patterns.iter().copied());
            let admin = hub.admin.clone();
            async move { admin.create_app(&app).await.unwrap().api_key }
        };
        let crm_key = create("crm", &[]).await;
        let hr_key = create("hr", &["user.*"]).await;
        let billing_key = create("billing", &[]).await;
        let revoked = hub.admin.add_app_key("hr").await.unwrap();
        hub.admin
            .revoke_app_key("hr", &revoked.key_id)
            .await
            .unwrap();
        let acme_reader = hub.admin.add_tenant_reader("acme").await.unwrap().api_key;
        let globex_reader = hub.admin.add_tenant_reader("globex").await.unwrap().api_key;
        let crm = Client::new(&hub.url, &crm_key);
        let hr = Client::new(&hub.url, &hr_key);
        let event_id = publish(&crm, event("user.created", "acme")).await.id;
        Fixture {
            http: reqwest::Client::new(),
            keys: Keys {
                revoked_hr: revoked.api_key,
                crm: crm_key,
                hr: hr_key,
                billing: billing_key,
                acme_reader,
                globex_reader,
            },
            held: lease_one(&hr).await,
            crm,
            hr,
            event_id,
            hub,
            seq: AtomicUsize::new(0),
        }
    }

    fn unique(&self) -> usize {
        self.seq.fetch_add(1, Ordering::Relaxed)
    }

    /// The key `who` sends to `path` (the right app depends on the route).
    fn key(&self, who: Who, method: &str, path: &str) -> Option<String> {
        let publishing = method == "POST" && path == "/v1/events";
        match who {
            Who::NoKey | Who::Malformed => None,
            Who::Revoked => Some(self.keys.revoked_hr.clone()),
            Who::Admin => Some(crate::harness::ADMIN_KEY.to_owned()),
            Who::RightApp if publishing => Some(self.keys.crm.clone()),
            Who::RightApp => Some(self.keys.hr.clone()),
            Who::OtherApp => Some(self.keys.billing.clone()),
            Who::Reader => Some(self.keys.acme_reader.clone()),
            Who::OtherReader => Some(self.keys.globex_reader.clone()),
        }
    }

    /// The concrete request for a route pattern: path parameters filled in, a valid body.
    /// Requests that use something up (an ack, a revocation) get a fresh one each time.
    async fn request(&self, who: Who, method: &str, pattern: &str) -> (String, Option<Value>) {
        let n = self.unique();
        let (path, body) = match (method, pattern) {
            ("POST", "/v1/apps") => (pattern.to_owned(), Some(json!({"id": format!("app{n}")}))),
            ("PATCH", "/v1/apps/{id}") => ("/v1/apps/hr".into(), Some(json!({"max_attempts": 8}))),
            ("POST" | "GET", "/v1/apps/{id}/keys") => ("/v1/apps/hr/keys".into(), None),
            ("DELETE", "/v1/apps/{id}/keys/{key_id}") => {
                let key = self.hub.admin.add_app_key("hr").await.unwrap();
                (format!("/v1/apps/hr/keys/{}", key.key_id), None)
            }
            ("POST" | "GET", "/v1/tenants/{tenant}/readers") => {
                ("/v1/tenants/acme/readers".into(), None)
            }
            ("DELETE", "/v1/tenants/{tenant}/readers/{key_id}") => {
                let key = self.hub.admin.add_tenant_reader("acme").await.unwrap();
                (format!("/v1/tenants/acme/readers/{}", key.key_id), None)
            }
            ("POST", "/v1/events") => (
                pattern.to_owned(),
                Some(json!({"type": "audit.noted", "tenant": "acme", "data": {}})),
            ),
            ("GET", "/v1/events") => ("/v1/events?tenant=acme".into(), None),
            ("GET", "/v1/events/{id}") => (format!("/v1/events/{}", self.event_id), None),
            ("POST", "/v1/consume") => (pattern.to_owned(), Some(json!({"max": 1}))),
            ("POST", "/v1/ack") => {
                let d = self.delivery_for(who).await;
                let ack = json!({"delivery_id": d.delivery_id, "attempt": d.attempt});
                (pattern.to_owned(), Some(json!({ "acks": [ack] })))
            }
            ("POST", "/v1/nack") => {
                let d = self.delivery_for(who).await;
                let nack =
                    json!({"delivery_id": d.delivery_id, "attempt": d.attempt, "error": "x"});
                (pattern.to_owned(), Some(nack))
            }
            ("POST", "/v1/deliveries/{id}/extend") => (
                format!("/v1/deliveries/{}/extend", self.held.delivery_id),
                Some(json!({"lease_ms": 60_000})),
            ),
            ("GET", "/v1/dead-letters") => ("/v1/dead-letters?tenant=acme".into(), None),
            ("POST", "/v1/dead-letters/requeue") => (
                pattern.to_owned(),
                Some(json!({"filter": {"tenant": "acme"}})),
            ),
            ("GET", "/v1/stats") => ("/v1/stats?tenant=acme".into(), None),
            (_, p) => (p.replace("{tenant}", "acme"), None),
        };
        (path, body)
    }

    /// A delivery in flight: a fresh one when the right app will use it up, else the one
    /// held for the whole test.
    async fn delivery_for(&self, who: Who) -> Delivery {
        if who != Who::RightApp {
            return self.held.clone();
        }
        publish(&self.crm, event("user.updated", "acme")).await;
        lease_one(&self.hr).await
    }

    async fn status(&self, who: Who, method: &str, pattern: &str) -> u16 {
        let (path, body) = self.request(who, method, pattern).await;
        let key = self.key(who, method, pattern);
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self.http.request(method, format!("{}{path}", self.hub.url));
        if let Some(key) = key {
            req = req.bearer_auth(key);
        }
        if who == Who::Malformed {
            req = req.header("Authorization", "Basic YWRtaW46YWRtaW4=");
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        // Only the status: the live stream's body never ends.
        req.send().await.unwrap().status().as_u16()
    }
}

async fn lease_one(client: &Client) -> Delivery {
    let got = client
        .consume(&ConsumeRequest {
            max: 1,
            wait_ms: 5_000,
            lease_ms: 3_600_000,
        })
        .await
        .unwrap();
    got.into_iter().next().expect("a delivery to lease")
}

#[tokio::test]
async fn every_route_answers_every_caller_as_the_matrix_says() {
    let fx = Fixture::new().await;
    let mut wrong = Vec::new();
    for (method, pattern, expected) in MATRIX {
        for (who, want) in WHO.iter().zip(expected) {
            let got = fx.status(*who, method, pattern).await;
            if got != *want {
                wrong.push(format!(
                    "{method} {pattern} as {who:?}: got {got}, want {want}"
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    fx.hub.stop().await;
}
