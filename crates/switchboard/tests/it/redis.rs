//! switchboard on Redis: several nodes sharing one `redis-server` of the test's own (free
//! loopback port, temp dir, `appendfsync always`), and Redis itself failing under them.
//! Node A runs in-process; a node that must die hard runs as the real binary.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use switchboard_client::{
    Ack, CancellationToken, Client, ConsumeRequest, Consumer, DeliveryStatus, NewApp, NewEvent,
};
use switchboard_store::redis::RedisStore;
use switchboard_store::testing::RedisServer;

use crate::harness::{ADMIN_KEY, Hub, event, lookup, publish};

async fn node(redis: &RedisServer) -> Hub {
    let store = RedisStore::connect(&redis.url()).await.unwrap();
    Hub::start_on(Arc::new(store)).await
}

/// Registers `id` on `hub` and returns its key.
async fn app_key(hub: &Hub, app: NewApp) -> String {
    hub.admin.create_app(&app).await.unwrap().api_key
}

fn quick_retries(app: NewApp) -> NewApp {
    NewApp {
        backoff: Some("100ms".into()),
        ..app
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_on_one_node_consume_on_another_ack_on_the_first() {
    let redis = RedisServer::start();
    let a = node(&redis).await;
    let b = node(&redis).await;
    let crm = Client::new(
        &a.url,
        app_key(&a, NewApp::new("crm", Vec::<String>::new())).await,
    );
    let hr_key = app_key(&a, NewApp::new("hr", ["user.*"])).await;
    let sent = publish(&crm, event("user.created", "acme")).await;

    // The key registered on A works on B: keys live in Redis.
    let hr_on_b = Client::new(&b.url, &hr_key);
    let got = hr_on_b
        .consume(&ConsumeRequest {
            max: 10,
            wait_ms: 10_000,
            lease_ms: 30_000,
        })
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].event.id, sent.id);

    let hr_on_a = Client::new(&a.url, &hr_key);
    assert_eq!(hr_on_a.ack(&[Ack::of(&got[0])]).await.unwrap(), 1);
    let seen_on_b = lookup(&b.admin, &sent.id).await;
    assert_eq!(seen_on_b.deliveries[0].status, DeliveryStatus::Acknowledged);
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_on_one_node_is_woken_by_a_publish_on_another() {
    let redis = RedisServer::start();
    // Told (keyspace notifications) when a lease call records the consumer, so the publish
    // below comes only once node B's long-poll is waiting.
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("notify-keyspace-events")
        .arg("Kh")
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    pubsub
        .subscribe("__keyspace@0__:sb:consumed")
        .await
        .unwrap();

    let a = node(&redis).await;
    let b = node(&redis).await;
    // Registered on A after B started: B learns of them through Redis.
    let crm_key = app_key(&a, NewApp::new("crm", Vec::<String>::new())).await;
    let crm = Client::new(&a.url, &crm_key);
    let hr = Client::new(&b.url, app_key(&a, NewApp::new("hr", ["user.*"])).await);
    const WAIT_MS: u64 = 30_000;
    let poll = tokio::spawn(async move {
        hr.consume(&ConsumeRequest {
            max: 1,
            wait_ms: WAIT_MS,
            lease_ms: 30_000,
        })
        .await
        .unwrap()
    });
    pubsub
        .on_message()
        .next()
        .await
        .expect("node B leased once");
    let published_at = Instant::now();
    let sent = publish(&crm, event("user.created", "acme")).await;
    let got = poll.await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].event.id, sent.id);
    // Woken by the publish on A, not by the end of its wait: a missed wake-up would hand
    // the delivery out only when the long-poll's 30 s are over.
    assert!(
        published_at.elapsed() < Duration::from_millis(WAIT_MS),
        "the long-poll on B was not woken by the publish on A"
    );
    // B handles Redis' messages in order: it reloaded the apps (told when hr was registered)
    // before the wake-up above, so its own routing now knows hr.
    let crm_on_b = Client::new(&b.url, &crm_key);
    let routed = publish(&crm_on_b, event("user.updated", "acme")).await;
    let targets: Vec<&str> = routed
        .deliveries
        .iter()
        .map(|d| d.target.as_str())
        .collect();
    assert_eq!(targets, ["hr"]);
    a.stop().await;
    b.stop().await;
}

/// `switchboard serve --store <redis>` as a child process, on a free port.
struct Node {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

fn spawn_node(redis: &RedisServer) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env("SWITCHBOARD_STORE", redis.url())
        .env("SWITCHBOARD_ADMIN_KEY", ADMIN_KEY)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the switchboard binary starts");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = lines.next().expect("the node logs before exiting").unwrap();
        if let Some(rest) = line.split("addr=").nth(1) {
            break rest.split_whitespace().next().unwrap().to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    Node {
        child,
        url: format!("http://{addr}"),
        _dir: dir,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_lease_has_its_deliveries_redelivered_by_another() {
    let redis = RedisServer::start();
    let a = node(&redis).await;
    let crm = Client::new(
        &a.url,
        app_key(&a, NewApp::new("crm", Vec::<String>::new())).await,
    );
    let hr_key = app_key(&a, quick_retries(NewApp::new("hr", ["user.*"]))).await;
    let mut sent = HashSet::new();
    for _ in 0..3 {
        sent.insert(publish(&crm, event("user.created", "acme")).await.id);
    }

    let mut b = spawn_node(&redis);
    let leased = Client::new(&b.url, &hr_key)
        .consume(&ConsumeRequest {
            max: 10,
            wait_ms: 10_000,
            lease_ms: 500,
        })
        .await
        .unwrap();
    assert_eq!(leased.len(), 3);
    b.child.kill().unwrap(); // SIGKILL, holding three leases
    b.child.wait().unwrap();

    // A's sweeper expires B's leases; A's consumers get every delivery again, attempt 2.
    let hr_on_a = Client::new(&a.url, &hr_key);
    let mut again = HashSet::new();
    while again.len() < 3 {
        let got = hr_on_a
            .consume(&ConsumeRequest {
                max: 10,
                wait_ms: 20_000,
                lease_ms: 30_000,
            })
            .await
            .unwrap();
        assert!(
            !got.is_empty(),
            "the expired leases came back before wait_ms"
        );
        for d in &got {
            assert_eq!(d.attempt, 2);
            assert!(leased.iter().any(|l| l.delivery_id == d.delivery_id));
            again.insert(d.event.id.clone());
        }
        let acks: Vec<Ack> = got.iter().map(Ack::of).collect();
        hr_on_a.ack(&acks).await.unwrap();
    }
    assert_eq!(again, sent);
    a.stop().await;
}

/// Retries `f` while the hub answers 503 (Redis coming back), for at most 30 s.
async fn until_redis_is_back<T, F, Fut>(mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, switchboard_client::Error>>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match f().await {
            Ok(v) => return v,
            Err(switchboard_client::Error::Api { status: 503, .. })
                if Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("the hub did not recover: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_redis_loses_no_publish_that_got_a_2xx() {
    let mut redis = RedisServer::start();
    let hub = node(&redis).await;
    let crm = Client::new(
        &hub.url,
        app_key(&hub, NewApp::new("crm", Vec::<String>::new())).await,
    );
    app_key(&hub, NewApp::new("hr", ["user.*"])).await;

    let (acked_tx, mut acked_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut publishers = tokio::task::JoinSet::new();
    for p in 0..4 {
        let crm = crm.clone();
        let acked = acked_tx.clone();
        publishers.spawn(async move {
            // Publish until Redis goes away under us (or 2000 events, a bound).
            for i in 0..500 {
                let ev = NewEvent::new("user.created", "acme", serde_json::json!({"p": p, "i": i}));
                match crm.publish(&ev).await {
                    Ok(done) => acked.send(done.id).unwrap(),
                    Err(switchboard_client::Error::Api { status: 503, .. }) => return,
                    Err(e) => panic!("publish failed otherwise than with a 503: {e}"),
                }
            }
        });
    }
    drop(acked_tx);
    let mut acked = Vec::new();
    while acked.len() < 100 {
        acked.push(acked_rx.recv().await.expect("publishers run"));
    }
    redis.kill(); // SIGKILL mid-load
    while publishers.join_next().await.is_some() {}
    while let Some(id) = acked_rx.recv().await {
        acked.push(id);
    }
    redis.restart();

    for id in &acked {
        let view = until_redis_is_back(|| crm.event(id)).await;
        assert_eq!(view.deliveries.len(), 1, "event {id} has its delivery");
    }
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_polling_consumers_recover_from_a_redis_restart() {
    let mut redis = RedisServer::start();
    let hub = node(&redis).await;
    let crm = Client::new(
        &hub.url,
        app_key(&hub, NewApp::new("crm", Vec::<String>::new())).await,
    );
    let hr = Client::new(&hub.url, app_key(&hub, NewApp::new("hr", ["user.*"])).await);
    let (got_tx, mut got_rx) = tokio::sync::mpsc::unbounded_channel();
    let stop = CancellationToken::new();
    let consumer = tokio::spawn(
        Consumer::new(hr)
            .wait_ms(2_000)
            .run(stop.clone(), move |d| {
                let got = got_tx.clone();
                async move {
                    got.send(d.event.id.clone()).unwrap();
                    Ok(None)
                }
            }),
    );

    let first = publish(&crm, event("user.created", "acme")).await;
    assert_eq!(got_rx.recv().await.unwrap(), first.id);

    redis.kill();
    redis.restart();
    let ev = event("user.created", "acme");
    let second = until_redis_is_back(|| crm.publish(&ev)).await;
    // The same consumer loop, the same switchboard: it gets the next one.
    loop {
        let id = got_rx.recv().await.unwrap();
        if id == second.id {
            break;
        }
        // The first may come again if its ack was lost in the restart: at least once.
        assert_eq!(id, first.id);
    }
    stop.cancel();
    consumer.await.unwrap().unwrap();
    hub.stop().await;
}
