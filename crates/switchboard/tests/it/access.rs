//! Access rules: the key decides the app; an app sees and acks only its own.

use reqwest::Method;
use switchboard_client::{Ack, Client, ConsumeRequest, DeliveryStatus, EventsQuery, NewApp};

use crate::harness::{Hub, assert_rejected, event, lookup, publish};

#[tokio::test]
async fn no_key_or_a_wrong_key_is_401() {
    let hub = Hub::start().await;
    let nobody = Client::new(&hub.url, "sb_not_a_key");
    assert_rejected(
        nobody.publish(&event("user.created", "acme")).await,
        401,
        "unauthorized",
        None,
    );
    assert_rejected(nobody.list_apps().await, 401, "unauthorized", None);
    let http = reqwest::Client::new();
    let res = http
        .get(format!("{}/v1/events", hub.url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 401);
    let res = http
        .get(format!("{}/v1/events", hub.url))
        .header("Authorization", "Basic abc")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 401);
    let health = http
        .get(format!("{}/healthz", hub.url))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status().as_u16(), 200);
    hub.stop().await;
}

#[tokio::test]
async fn keys_have_their_roles() {
    let hub = Hub::start().await;
    let crm = hub.app("crm", &[]).await;
    // The admin key belongs to no app: it cannot publish or consume.
    assert_rejected(
        hub.admin.publish(&event("user.created", "acme")).await,
        403,
        "forbidden",
        None,
    );
    let (status, _) = hub
        .admin
        .raw(Method::POST, "/v1/consume", Some(b"{}".to_vec()))
        .await
        .unwrap();
    assert_eq!(status, 403);
    // An app key cannot manage apps.
    assert_rejected(
        crm.create_app(&NewApp::new("evil", ["*"])).await,
        403,
        "forbidden",
        None,
    );
    assert_rejected(crm.list_apps().await, 403, "forbidden", None);
    hub.stop().await;
}

#[tokio::test]
async fn an_app_sees_only_what_it_published_or_received() {
    let hub = Hub::start().await;
    let crm = hub.app("crm", &[]).await;
    let hr = hub.app("hr", &["user.*"]).await;
    let billing = hub.app("billing", &["order.*"]).await;
    let to_hr = publish(&crm, event("user.created", "acme")).await;
    let to_billing = publish(&crm, event("order.created", "acme")).await;

    assert_eq!(lookup(&hr, &to_hr.id).await.event.id, to_hr.id);
    assert_rejected(hr.event(&to_billing.id).await, 404, "unknown_event", None);
    assert_rejected(billing.event(&to_hr.id).await, 404, "unknown_event", None);
    let ids = |page: switchboard_client::EventsPage| -> Vec<String> {
        page.events.into_iter().map(|e| e.event.id).collect()
    };
    assert_eq!(
        ids(hr.events(&EventsQuery::default()).await.unwrap()),
        std::slice::from_ref(&to_hr.id)
    );
    assert_eq!(
        ids(billing.events(&EventsQuery::default()).await.unwrap()),
        std::slice::from_ref(&to_billing.id)
    );
    assert_eq!(
        ids(crm.events(&EventsQuery::default()).await.unwrap()),
        [to_billing.id.clone(), to_hr.id.clone()]
    );
    assert_eq!(
        ids(hub.admin.events(&EventsQuery::default()).await.unwrap()).len(),
        2
    );
    hub.stop().await;
}

#[tokio::test]
async fn an_app_cannot_consume_or_ack_another_apps_deliveries() {
    let hub = Hub::start().await;
    let crm = hub.app("crm", &[]).await;
    let hr = hub.app("hr", &["*"]).await;
    let billing = hub.app("billing", &[]).await;
    let p = publish(&crm, event("user.created", "acme")).await;
    let poll = ConsumeRequest {
        max: 10,
        wait_ms: 0,
        lease_ms: 30_000,
    };
    assert!(billing.consume(&poll).await.unwrap().is_empty());
    let got = hr.consume(&poll).await.unwrap();
    assert_rejected(
        billing.ack(&[Ack::of(&got[0])]).await,
        404,
        "unknown_delivery",
        None,
    );
    assert_rejected(
        crm.ack(&[Ack::of(&got[0])]).await,
        404,
        "unknown_delivery",
        None,
    );
    assert_eq!(
        lookup(&crm, &p.id).await.deliveries[0].status,
        DeliveryStatus::InFlight
    );
    hub.stop().await;
}
