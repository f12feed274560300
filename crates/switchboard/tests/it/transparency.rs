//! Transparency: the matrix and health of known traffic, cell by cell; alerts raised and
//! cleared once; the live stream in order; Prometheus; the CLI.

use std::time::Duration;

use serde_json::json;
use switchboard_client::{Ack, Client, ConsumeRequest, Matrix, MatrixRow, Nack, NewApp, NewEvent};

use crate::harness::{ADMIN_KEY, Hub, event};

fn poll(max: u32, wait_ms: u64, lease_ms: u64) -> ConsumeRequest {
    ConsumeRequest {
        max,
        wait_ms,
        lease_ms,
    }
}

fn fast_retry(id: &str, patterns: &[&str], max_attempts: u32) -> NewApp {
    NewApp {
        max_attempts: Some(max_attempts),
        backoff: Some("0ms".into()),
        ..NewApp::new(id, patterns.iter().copied())
    }
}

fn row<'a>(m: &'a Matrix, source: &str, target: &str) -> &'a MatrixRow {
    m.channels
        .iter()
        .find(|r| r.source == source && r.target == target)
        .unwrap_or_else(|| panic!("no channel {source} → {target} in {m:#?}"))
}

/// (published, acknowledged, pending, in_flight, failed, dead, failed_attempts, died, health)
fn cells(r: &MatrixRow) -> (u64, u64, u64, u64, u64, u64, u64, u64, &str) {
    (
        r.published,
        r.acknowledged,
        r.pending,
        r.in_flight,
        r.failed,
        r.dead,
        r.failed_attempts,
        r.died,
        r.health.as_str(),
    )
}

/// Known traffic: see each step's comment. Returns the hub and the clients.
async fn known_traffic() -> (Hub, Client, Client) {
    let hub = Hub::start().await;
    let crm = hub.app("crm", &[]).await;
    let shop = hub.app("shop", &[]).await;
    let hr = hub.app_with(fast_retry("hr", &["user.*"], 2)).await;
    let billing = hub
        .app_with(fast_retry("billing", &["user.*", "order.*"], 8))
        .await;
    // acme: 4 user.created (crm → hr, billing), 2 order.created (shop → billing).
    let users: Vec<NewEvent> = (0..4)
        .map(|i| NewEvent::new("user.created", "acme", json!({"i": i})))
        .collect();
    crm.publish_batch(&users).await.unwrap();
    let orders: Vec<NewEvent> = (0..2)
        .map(|i| NewEvent::new("order.created", "acme", json!({"i": i})))
        .collect();
    shop.publish_batch(&orders).await.unwrap();
    // hr takes acme's 4.
    let got = hr.consume(&poll(4, 0, 30_000)).await.unwrap();
    assert!(got.iter().all(|d| d.event.tenant == "acme"));
    hr.ack(&[Ack::of(&got[0]), Ack::of(&got[1])]).await.unwrap();
    hr.nack(&Nack::of(&got[2], "db locked")).await.unwrap(); // back to pending, failing
    hr.nack(&Nack {
        permanent: true,
        ..Nack::of(&got[3], "bad payload")
    })
    .await
    .unwrap(); // dead

    // billing takes acme's 6 with a 100 ms lease and lets them expire, then takes them
    // again and acks the 4 user.created; the 2 orders stay in flight.
    let first = billing.consume(&poll(6, 0, 100)).await.unwrap();
    assert_eq!(first.len(), 6);
    let mut again = Vec::new();
    while again.len() < 6 {
        again.extend(
            billing
                .consume(&poll(6, 30_000, 60_000))
                .await
                .unwrap()
                .into_iter()
                .filter(|d| d.event.tenant == "acme"),
        );
    }
    assert!(again.iter().all(|d| d.attempt == 2));
    let acks: Vec<Ack> = again
        .iter()
        .filter(|d| d.event.event_type == "user.created")
        .map(Ack::of)
        .collect();
    assert_eq!(billing.ack(&acks).await.unwrap(), 4);
    // globex: 1 user.created, never consumed.
    crm.publish(&event("user.created", "globex")).await.unwrap();
    (hub, hr, billing)
}

#[tokio::test]
async fn the_matrix_and_health_of_known_traffic() {
    let (hub, _hr, _billing) = known_traffic().await;
    let acme = hub.admin.matrix("acme", None).await.unwrap();
    assert_eq!(acme.window, "24h");
    assert_eq!(acme.channels.len(), 3);
    assert_eq!(
        cells(row(&acme, "crm", "hr")),
        (4, 2, 1, 0, 1, 1, 2, 1, "degraded")
    );
    assert_eq!(
        cells(row(&acme, "crm", "billing")),
        (4, 4, 0, 0, 0, 0, 4, 0, "degraded")
    );
    assert_eq!(
        cells(row(&acme, "shop", "billing")),
        (2, 0, 0, 2, 2, 0, 2, 0, "unhealthy")
    );
    assert_eq!(row(&acme, "crm", "hr").failure_rate, Some(0.5));
    assert!(row(&acme, "crm", "hr").latency_ms.p50.is_some());
    assert_eq!(row(&acme, "shop", "billing").latency_ms.p50, None);
    assert_eq!(
        row(&acme, "shop", "billing").reasons[0].rule,
        "success_rate"
    );
    let globex = hub.admin.matrix("globex", Some("1h")).await.unwrap();
    assert_eq!(globex.channels.len(), 2);
    assert_eq!(
        cells(row(&globex, "crm", "hr")),
        (1, 0, 1, 0, 0, 0, 0, 0, "healthy")
    );
    assert_eq!(
        cells(row(&globex, "crm", "billing")),
        (1, 0, 1, 0, 0, 0, 0, 0, "healthy")
    );
    // The suite sums tenants.
    let suite = hub.admin.suite_matrix(Some("all")).await.unwrap();
    assert_eq!(cells(row(&suite, "crm", "hr")).0, 5);
    assert_eq!(cells(row(&suite, "crm", "hr")).2, 2);

    let health = hub.admin.health_of("acme", None).await.unwrap();
    assert_eq!(health.status, "unhealthy");
    assert_eq!(health.counts.published, 10);
    assert_eq!(health.counts.acknowledged, 6);
    assert_eq!(health.counts.dead, 1);
    assert_eq!(health.reasons[0].status, "unhealthy", "worst first");
    assert!(health.reasons.iter().all(|r| r.message.contains(&r.target)));
    assert_eq!(
        hub.admin.health_of("globex", None).await.unwrap().status,
        "healthy"
    );
    assert_eq!(
        hub.admin.health_of("nobody", None).await.unwrap().status,
        "healthy"
    );

    // An app sees its own channels only.
    let shop_view = hub
        .admin
        .with_key(ADMIN_KEY)
        .matrix("acme", None)
        .await
        .unwrap();
    assert_eq!(shop_view.channels.len(), 3);
    let stats = hub
        .admin
        .stats(Some("acme"), "target", None, None)
        .await
        .unwrap();
    let keys: Vec<(&str, u64)> = stats
        .rows
        .iter()
        .map(|r| (r.key.as_str(), r.published))
        .collect();
    assert_eq!(keys, [("billing", 6), ("hr", 4)]);
    let by_type = hub
        .admin
        .stats(Some("acme"), "type", None, None)
        .await
        .unwrap();
    assert_eq!(by_type.rows.len(), 2);
    let (status, reply) = hub
        .admin
        .raw(
            reqwest::Method::GET,
            "/v1/tenants/acme/matrix?window=2w",
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, 400, "{reply}");
    hub.stop().await;
}

#[tokio::test]
async fn an_app_sees_only_its_channels() {
    let (hub, hr, _billing) = known_traffic().await;
    let view = hr.matrix("acme", None).await.unwrap();
    let channels: Vec<(&str, &str)> = view
        .channels
        .iter()
        .map(|r| (r.source.as_str(), r.target.as_str()))
        .collect();
    assert_eq!(channels, [("crm", "hr")]);
    let (status, _) = hr
        .raw(reqwest::Method::GET, "/v1/matrix", None)
        .await
        .unwrap();
    assert_eq!(status, 403);
    hub.stop().await;
}

#[tokio::test]
async fn alerts_are_raised_once_and_cleared_once() {
    let mut config = switchboard_server::Config::new(ADMIN_KEY);
    config.alert_interval = Some(Duration::from_millis(20));
    let hub = Hub::start_with(config).await;
    let crm = hub.app("crm", &[]).await;
    let ops = hub.app("ops", &["switchboard.alert.*"]).await;
    let hr = hub.app("hr", &["user.*"]).await;
    // ops is listening before anything happens.
    let ops_poll = |wait_ms| {
        let ops = ops.clone();
        async move { ops.consume(&poll(10, wait_ms, 30_000)).await.unwrap() }
    };
    assert!(ops_poll(0).await.is_empty());
    // hr has never consumed and now has work waiting: consumer_silent fires.
    crm.publish(&event("user.created", "acme")).await.unwrap();
    let raised = ops_poll(30_000).await;
    assert_eq!(raised.len(), 1);
    let alert = &raised[0].event;
    assert_eq!(alert.event_type, "switchboard.alert.raised");
    assert_eq!(alert.source, "switchboard");
    assert_eq!(alert.tenant, "acme");
    assert_eq!(alert.data["rule"], "consumer_silent");
    assert_eq!(
        alert.data["channel"],
        json!({"source": "crm", "target": "hr"})
    );
    assert!(
        alert.data["message"]
            .as_str()
            .unwrap()
            .contains("start the hr consumer")
    );
    ops.ack(&[Ack::of(&raised[0])]).await.unwrap();
    // While the condition holds, over many check intervals, nothing repeats.
    assert!(ops_poll(300).await.is_empty());
    // hr consumes and acks: the alert clears, once.
    let got = hr.consume(&poll(10, 0, 30_000)).await.unwrap();
    hr.ack(&[Ack::of(&got[0])]).await.unwrap();
    let cleared = ops_poll(30_000).await;
    assert_eq!(cleared.len(), 1);
    assert_eq!(cleared[0].event.event_type, "switchboard.alert.cleared");
    assert_eq!(cleared[0].event.data["rule"], "consumer_silent");
    ops.ack(&[Ack::of(&cleared[0])]).await.unwrap();
    assert!(ops_poll(300).await.is_empty());
    hub.stop().await;
}

#[tokio::test]
async fn the_stream_tells_changes_in_order() {
    let hub = Hub::start().await;
    let crm = hub.app("crm", &[]).await;
    let hr = hub.app_with(fast_retry("hr", &["user.*"], 8)).await;
    let mut stream = hub
        .admin
        .stream(Some("acme"), Some("user.*"))
        .await
        .unwrap();
    crm.publish(&event("order.created", "acme")).await.unwrap(); // filtered out by type
    crm.publish(&event("user.created", "globex")).await.unwrap(); // filtered out by tenant
    let p = crm.publish(&event("user.created", "acme")).await.unwrap();
    let got = hr.consume(&poll(10, 0, 30_000)).await.unwrap();
    let mine = got.iter().find(|d| d.event.id == p.id).unwrap();
    hr.nack(&Nack::of(mine, "not yet")).await.unwrap();
    let again = hr.consume(&poll(10, 5_000, 30_000)).await.unwrap();
    let mine = again.iter().find(|d| d.event.id == p.id).unwrap();
    hr.ack(&[Ack::of(mine)]).await.unwrap();
    let mut kinds = Vec::new();
    while kinds.len() < 5 {
        let change = tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(change.tenant, "acme");
        assert_eq!(change.event_id, p.id);
        kinds.push(change.kind);
    }
    assert_eq!(
        kinds,
        [
            "event.published",
            "delivery.leased",
            "delivery.failed",
            "delivery.leased",
            "delivery.acknowledged"
        ]
    );
    hub.stop().await;
}

#[tokio::test]
async fn prometheus_metrics() {
    let hub = Hub::start().await;
    let crm = hub.app("metricscrm", &[]).await;
    let hr = hub.app("metricshr", &["user.*"]).await;
    let batch = vec![event("user.created", "acme"); 3];
    crm.publish_batch(&batch).await.unwrap();
    let got = hr.consume(&poll(10, 0, 30_000)).await.unwrap();
    assert_eq!(got.len(), 3);
    hr.ack(&[Ack::of(&got[0]), Ack::of(&got[1])]).await.unwrap();
    let dead = Nack {
        permanent: true,
        ..Nack::of(&got[2], "unknown user schema")
    };
    hr.nack(&dead).await.unwrap();
    let text = reqwest::get(format!("{}/metrics", hub.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for needle in [
        "switchboard_events_published_total{app=\"metricscrm\",type=\"user.created\"}",
        "switchboard_deliveries_leased_total{app=\"metricshr\"",
        "switchboard_deliveries_acknowledged_total{app=\"metricshr\"",
        "switchboard_publish_to_ack_seconds_bucket{app=\"metricshr\"",
        "switchboard_deliveries_pending{app=\"metricshr\"} 0",
        "switchboard_store_commit_seconds_bucket",
        "switchboard_store_group_size_bucket",
        "switchboard_store_commit_wal_pages_bucket{le=\"4096\"}",
        "switchboard_store_recent_events_total{found=\"yes\"}",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
    // Counted per batch, one count per delivery all the same (the apps are this test's own:
    // the recorder is the whole test binary's).
    for line in [
        "switchboard_events_published_total{app=\"metricscrm\",type=\"user.created\"} 3",
        "switchboard_deliveries_leased_total{app=\"metricshr\",type=\"user.created\"} 3",
        "switchboard_deliveries_acknowledged_total{app=\"metricshr\",type=\"user.created\"} 2",
        "switchboard_deliveries_nacked_total{app=\"metricshr\",type=\"user.created\"} 1",
        "switchboard_deliveries_dead_total{app=\"metricshr\",type=\"user.created\"} 1",
        "switchboard_publish_to_ack_seconds_count{app=\"metricshr\"} 2",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
    }
    assert!(!text.contains("acme"), "no tenant ids in labels");
    hub.stop().await;
}

// Multi-threaded: the CLI runs as a blocking child process while this runtime serves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_prints_the_matrix_and_health() {
    let (hub, _hr, _billing) = known_traffic().await;
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .args(args)
            .args(["--url", &hub.url, "--key", ADMIN_KEY])
            .env("NO_COLOR", "1")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let matrix = run(&["matrix", "--tenant", "acme"]);
    assert!(matrix.contains("shop → billing"), "{matrix}");
    assert!(matrix.contains("unhealthy"), "{matrix}");
    let health = run(&["health", "--tenant", "acme"]);
    assert!(health.contains("success_rate"), "{health}");
    let suite = run(&["matrix"]);
    assert!(suite.contains("the whole suite"), "{suite}");
    hub.stop().await;
}
