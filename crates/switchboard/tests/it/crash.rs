//! The durability promise: run `switchboard serve` as a child process, publish under load,
//! kill -9 it, restart on the same data directory. Every event whose publish got a 2xx is
//! there with all its deliveries, and leases held at the crash come back after expiry.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use switchboard_client::{Ack, Client, ConsumeRequest, DeliveryStatus, NewApp, NewEvent};

use crate::harness::ADMIN_KEY;

struct Serve {
    child: Child,
    url: String,
}

/// Starts the binary on a free port and waits for its "listening" log line.
fn serve(data_dir: &Path) -> Serve {
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .env("SWITCHBOARD_ADMIN_KEY", ADMIN_KEY)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the switchboard binary starts");
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("the server logs before exiting")
            .unwrap();
        if let Some(rest) = line.split("addr=").nth(1) {
            break rest.split_whitespace().next().unwrap().to_owned();
        }
    };
    // Keep draining the log so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Serve {
        child,
        url: format!("http://{addr}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_nothing_that_was_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = serve(dir.path());
    let admin = Client::new(&server.url, ADMIN_KEY);
    let crm = Client::new(
        &server.url,
        admin
            .create_app(&NewApp::new("crm", Vec::<String>::new()))
            .await
            .unwrap()
            .api_key,
    );
    let hr_key = admin
        .create_app(&NewApp::new("hr", ["user.*"]))
        .await
        .unwrap()
        .api_key;
    let audit_key = admin
        .create_app(&NewApp::new("audit", ["*"]))
        .await
        .unwrap()
        .api_key;
    let hr = Client::new(&server.url, &hr_key);

    // A few deliveries are leased (not acked) when the crash comes.
    let first = crm
        .publish_batch(&[NewEvent::new(
            "user.created",
            "acme",
            serde_json::json!({"leased": true}),
        )])
        .await
        .unwrap();
    let leased = hr
        .consume(&ConsumeRequest {
            max: 10,
            wait_ms: 0,
            lease_ms: 1_000,
        })
        .await
        .unwrap();
    assert_eq!(leased.len(), 1);

    // Eight publishers; after 400 acknowledged publishes, kill -9 while they keep going.
    let acknowledged = Arc::new(std::sync::Mutex::new(Vec::new()));
    let count = Arc::new(AtomicUsize::new(0));
    let (enough_tx, enough_rx) = tokio::sync::oneshot::channel::<()>();
    let enough_tx = Arc::new(std::sync::Mutex::new(Some(enough_tx)));
    let mut publishers = tokio::task::JoinSet::new();
    for p in 0..8 {
        let crm = crm.clone();
        let acknowledged = acknowledged.clone();
        let count = count.clone();
        let enough_tx = enough_tx.clone();
        publishers.spawn(async move {
            for i in 0.. {
                let ev = NewEvent::new("user.created", "acme", serde_json::json!({"p": p, "i": i}));
                let batch = if i % 3 == 0 {
                    vec![ev.clone(), ev]
                } else {
                    vec![ev]
                };
                match crm.publish_batch(&batch).await {
                    Ok(published) => {
                        acknowledged
                            .lock()
                            .unwrap()
                            .extend(published.into_iter().map(|e| e.id));
                        if count.fetch_add(1, Ordering::SeqCst) + 1 == 400
                            && let Some(tx) = enough_tx.lock().unwrap().take()
                        {
                            let _ = tx.send(());
                        }
                    }
                    // The server is gone: stop.
                    Err(_) => return,
                }
            }
        });
    }
    enough_rx.await.unwrap();
    server.child.kill().unwrap(); // SIGKILL
    server.child.wait().unwrap();
    while publishers.join_next().await.is_some() {}
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(acknowledged.len() >= 400);

    let mut server = serve(dir.path());
    let admin = Client::new(&server.url, ADMIN_KEY);
    for id in &acknowledged {
        let ev = admin
            .event(id)
            .await
            .unwrap_or_else(|e| panic!("event {id} acknowledged before the crash is lost: {e}"));
        let targets: Vec<&str> = ev.deliveries.iter().map(|d| d.target.as_str()).collect();
        assert_eq!(targets, ["audit", "hr"], "{id}");
    }
    // The lease held at the crash comes back once it expires, to any consumer of hr.
    let hr = Client::new(&server.url, &hr_key);
    let before = admin.event(&first[0].id).await.unwrap();
    let hr_delivery = before.deliveries.iter().find(|d| d.target == "hr").unwrap();
    assert!(matches!(
        hr_delivery.status,
        DeliveryStatus::InFlight | DeliveryStatus::Pending
    ));
    let mut again = Vec::new();
    while again.is_empty() {
        let got = hr
            .consume(&ConsumeRequest {
                max: 1000,
                wait_ms: 10_000,
                lease_ms: 30_000,
            })
            .await
            .unwrap();
        again.extend(
            got.into_iter()
                .filter(|d| d.delivery_id == leased[0].delivery_id),
        );
    }
    assert_eq!(again[0].attempt, 2);
    hr.ack(&[Ack::of(&again[0])]).await.unwrap();
    let audit = Client::new(&server.url, &audit_key);
    assert!(
        !audit
            .consume(&ConsumeRequest {
                max: 1,
                wait_ms: 0,
                lease_ms: 30_000
            })
            .await
            .unwrap()
            .is_empty()
    );

    // A clean stop (SIGTERM) exits 0.
    let pid = server.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    assert!(server.child.wait().unwrap().success());
}
