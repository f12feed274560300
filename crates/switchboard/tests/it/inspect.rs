//! Inspection: filters and pagination of the event list.

use switchboard_client::{Ack, ConsumeRequest, DeliveryStatus, EventsQuery};

use crate::harness::{Hub, event, publish};

async fn ids(client: &switchboard_client::Client, q: EventsQuery) -> Vec<String> {
    let page = client.events(&q).await.unwrap();
    page.events.into_iter().map(|e| e.event.id).collect()
}

#[tokio::test]
async fn filters_by_tenant_type_source_target_and_status() {
    let hub = Hub::start().await;
    let crm = hub.app("crm", &[]).await;
    let shop = hub.app("shop", &[]).await;
    let hr = hub.app("hr", &["user.*"]).await;
    hub.app("billing", &["order.*"]).await;
    let a = publish(&crm, event("user.created", "acme")).await.id;
    let b = publish(&crm, event("user.created", "globex")).await.id;
    let c = publish(&shop, event("order.created", "acme")).await.id;
    let got = hr
        .consume(&ConsumeRequest {
            max: 1,
            wait_ms: 0,
            lease_ms: 30_000,
        })
        .await
        .unwrap();
    assert_eq!(got[0].event.id, a);
    hr.ack(&[Ack::of(&got[0])]).await.unwrap();
    let admin = &hub.admin;
    let q = |f: fn(&mut EventsQuery)| {
        let mut q = EventsQuery::default();
        f(&mut q);
        q
    };
    assert_eq!(
        ids(admin, q(|q| q.tenant = Some("acme".into()))).await,
        [c.clone(), a.clone()]
    );
    assert_eq!(
        ids(admin, q(|q| q.event_type = Some("order.*".into()))).await,
        std::slice::from_ref(&c)
    );
    assert_eq!(
        ids(admin, q(|q| q.source = Some("crm".into()))).await,
        [b.clone(), a.clone()]
    );
    assert_eq!(
        ids(admin, q(|q| q.target = Some("billing".into()))).await,
        std::slice::from_ref(&c)
    );
    assert_eq!(
        ids(admin, q(|q| q.status = Some(DeliveryStatus::Acknowledged))).await,
        std::slice::from_ref(&a)
    );
    assert_eq!(
        ids(admin, q(|q| q.status = Some(DeliveryStatus::Pending))).await,
        [c.clone(), b.clone()]
    );
    assert!(
        ids(admin, q(|q| q.since = Some("2100-01-01T00:00:00Z".into())))
            .await
            .is_empty()
    );
    assert_eq!(
        ids(admin, q(|q| q.until = Some("2100-01-01T00:00:00Z".into())))
            .await
            .len(),
        3
    );
    hub.stop().await;
}

#[tokio::test]
async fn pages_newest_first_with_a_cursor() {
    let hub = Hub::start().await;
    let crm = hub.app("crm", &[]).await;
    let mut published = Vec::new();
    for _ in 0..12 {
        published.push(publish(&crm, event("user.created", "acme")).await.id);
    }
    published.reverse();
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = hub
            .admin
            .events(&EventsQuery {
                limit: Some(5),
                cursor: cursor.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
        seen.extend(page.events.into_iter().map(|e| e.event.id));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, published);
    hub.stop().await;
}
