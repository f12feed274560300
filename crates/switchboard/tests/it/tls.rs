//! HTTPS: `switchboard serve --tls-cert --tls-key` (the real binary) with a certificate
//! made for the test, talked to by the SDK with a TLS configuration that trusts only it.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use switchboard_client::rustls::crypto::ring;
use switchboard_client::rustls::{ClientConfig, RootCertStore};
use switchboard_client::{Client, Error, NewApp};

use crate::harness::ADMIN_KEY;

struct Serve {
    child: Child,
    addr: String,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve_tls(dir: &std::path::Path, cert: &std::path::Path, key: &std::path::Path) -> Serve {
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .arg("--tls-cert")
        .arg(cert)
        .arg("--tls-key")
        .arg(key)
        .env("SWITCHBOARD_ADMIN_KEY", ADMIN_KEY)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the switchboard binary starts");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("the server logs before exiting")
            .unwrap();
        if let Some(rest) = line.split("addr=").nth(1) {
            assert!(line.contains("https"), "{line}");
            break rest.split_whitespace().next().unwrap().to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    Serve { child, addr }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_speaks_https_with_the_given_certificate_to_the_sdk() {
    let dir = tempfile::tempdir().unwrap();
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, made.cert.pem()).unwrap();
    std::fs::write(&key_path, made.signing_key.serialize_pem()).unwrap();
    let server = serve_tls(&dir.path().join("data"), &cert_path, &key_path);
    let port = server.addr.rsplit(':').next().unwrap();

    let mut roots = RootCertStore::empty();
    roots.add(made.cert.der().clone()).unwrap();
    let config = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let admin = Client::with_tls(
        format!("https://localhost:{port}"),
        ADMIN_KEY,
        Arc::new(config),
    );
    admin.health().await.expect("health over https");
    let created = admin
        .create_app(&NewApp::new("crm", ["user.*"]))
        .await
        .expect("an app registered over https");
    assert!(created.api_key.starts_with("sb_"), "{}", created.api_key);
    // A second request, on the pooled connection.
    assert_eq!(admin.list_apps().await.unwrap().len(), 1);

    // A client that does not trust the certificate is refused at the handshake.
    let untrusting = Client::new(format!("https://localhost:{port}"), ADMIN_KEY);
    let err = untrusting.health().await.expect_err("an unknown issuer");
    assert!(
        matches!(&err, Error::Transport(m) if m.contains("TLS")),
        "{err}"
    );

    // Plain HTTP on the TLS port gets no answer.
    let plain = Client::new(format!("http://{}", server.addr), ADMIN_KEY);
    assert!(plain.health().await.is_err());
}

#[test]
fn a_bad_key_file_is_refused_at_start_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, made.cert.pem()).unwrap();
    std::fs::write(&key_path, "not a key").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .arg("--tls-cert")
        .arg(&cert_path)
        .arg("--tls-key")
        .arg(&key_path)
        .env("SWITCHBOARD_ADMIN_KEY", ADMIN_KEY)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("key.pem") && stderr.contains("private key"),
        "{stderr}"
    );
}
