//! HTTP/1.1 to one switchboard server over a pool of keep-alive connections, plain or TLS.
//! It must not retry a request the server may have seen, follow redirects or know any endpoint.
//!
//! At most a set number of requests are on the wire at once ([`DEFAULT_MAX_IN_FLIGHT`]
//! unless configured); more wait for one to end. A connection is opened only when no idle
//! one is left, so there are never more connections than that either: a server that falls
//! behind an open-loop publisher sees its requests queue in the client, not thousands of new
//! connections (which ran a benchmark's client and its server out of file descriptors).
//!
//! Built on hyper's connection API rather than a general-purpose client: a request here is a
//! method, a path under the base URL and a body, so it needs no URL parsing, proxy lookup,
//! redirect policy or per-host pool map (a reqwest client spent about twice the CPU per
//! request on those; BENCHMARKS.md, session 6). No task is spawned: a connection is driven
//! by the request that uses it, and an idle one is not polled at all.

use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::ClientConfig;
use tokio_rustls::rustls::pki_types::ServerName;

use crate::error::Error;
use crate::query::push_encoded;

/// How long establishing a connection (TLS included) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an idle connection is kept: under the server's default 30 s idle cut-off, so the
/// client seldom reuses a connection the server is closing. Idle connections are not watched:
/// older ones are closed by the next request.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(20);
/// How many requests may be on the wire at once, unless configured otherwise.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 100;

/// Where requests go: the base URL taken apart once.
#[derive(Debug)]
struct Origin {
    /// The host to connect to (an IPv6 address without its brackets).
    host: String,
    port: u16,
    /// The `Host` header.
    authority: HeaderValue,
    /// The base URL's path, without trailing slash; request paths go under it.
    prefix: String,
    https: bool,
}

/// How `https` connections are made.
#[derive(Clone)]
pub(crate) enum Tls {
    /// With the system's trust roots, loaded on the first `https` connection.
    System,
    /// With the caller's configuration.
    Custom(TlsConnector),
}

/// The pool and what it connects to; shared by a client and its clones.
pub(crate) struct Transport {
    /// `Err` when the base URL does not parse: then every request fails with that message.
    origin: Result<Origin, String>,
    tls: Tls,
    idle: Mutex<Vec<Conn>>,
    /// One permit per request on the wire; as many as connections may be open.
    in_flight: Arc<Semaphore>,
    max_in_flight: usize,
}

/// A request of the client: `path` (with any query) is under the base URL.
pub(crate) struct Outgoing<'a> {
    pub method: Method,
    pub path: &'a str,
    pub auth: &'a HeaderValue,
    /// A JSON body.
    pub body: Option<Vec<u8>>,
    /// The `Accept` header, when not the default.
    pub accept: Option<&'static str>,
}

/// The future that runs a connection: it reads and writes the socket while it is polled.
type Driver = Pin<Box<dyn Future<Output = hyper::Result<()>> + Send>>;

/// One HTTP/1.1 connection.
struct Conn {
    sender: SendRequest<Full<Bytes>>,
    /// What runs it; `None` once it has finished (the connection is closed). Dropping it is
    /// what fails requests the connection can no longer answer.
    driver: Option<Driver>,
    idle_since: Instant,
}

/// A response whose body is read as it arrives ([`Transport::open`]), with its connection.
pub(crate) struct Streaming {
    body: Incoming,
    conn: Conn,
    /// The request is on the wire until its body is read or dropped.
    _in_flight: OwnedSemaphorePermit,
}

impl Streaming {
    /// The next piece of the body; `None` at its end.
    pub(crate) async fn chunk(&mut self) -> Option<Result<Bytes, Error>> {
        loop {
            let frame = drive(&mut self.conn.driver, self.body.frame()).await?;
            match frame {
                Ok(frame) => match frame.into_data() {
                    Ok(data) => return Some(Ok(data)),
                    Err(_trailers) => continue,
                },
                Err(e) => return Some(Err(transport(&e))),
            }
        }
    }
}

impl Transport {
    /// A transport with no connection yet; `max_in_flight` is at least 1.
    pub(crate) fn new(base_url: &str, tls: Tls, max_in_flight: usize) -> Transport {
        let max_in_flight = max_in_flight.max(1);
        Transport {
            origin: origin_of(base_url),
            tls,
            idle: Mutex::new(Vec::new()),
            in_flight: Arc::new(Semaphore::new(max_in_flight)),
            max_in_flight,
        }
    }

    pub(crate) fn tls(&self) -> &Tls {
        &self.tls
    }

    pub(crate) fn max_in_flight(&self) -> usize {
        self.max_in_flight
    }

    /// Waits for a request's turn on the wire.
    async fn turn(&self) -> OwnedSemaphorePermit {
        self.in_flight
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed")
    }

    /// Sends the request and reads the whole response.
    pub(crate) async fn exchange(
        &self,
        request: Outgoing<'_>,
    ) -> Result<(StatusCode, Bytes), Error> {
        let _in_flight = self.turn().await;
        let (response, mut conn) = self.send(request).await?;
        let status = response.status();
        let body = drive(&mut conn.driver, response.into_body().collect())
            .await
            .map_err(|e| transport(&e))?
            .to_bytes();
        let mut idle = self.idle.lock().expect("pool lock");
        if conn.driver.is_some() {
            conn.idle_since = Instant::now();
            idle.push(conn);
        }
        Ok((status, body))
    }

    /// Sends the request and returns the status, with the body to be read as it comes.
    pub(crate) async fn open(
        &self,
        request: Outgoing<'_>,
    ) -> Result<(StatusCode, Streaming), Error> {
        let in_flight = self.turn().await;
        let (response, conn) = self.send(request).await?;
        let status = response.status();
        let body = response.into_body();
        let streaming = Streaming {
            body,
            conn,
            _in_flight: in_flight,
        };
        Ok((status, streaming))
    }

    /// Sends on an idle connection, or a new one; a request that an idle connection could not
    /// take (the server had closed it) goes again on another: the server never saw it.
    async fn send(&self, request: Outgoing<'_>) -> Result<(Response<Incoming>, Conn), Error> {
        let origin = self
            .origin
            .as_ref()
            .map_err(|e| Error::Transport(e.clone()))?;
        let mut request = build(origin, request)?;
        loop {
            let (mut conn, reused) = match self.take() {
                Some(conn) => (conn, true),
                None => (self.connect(origin).await?, false),
            };
            if let Err(e) = drive(&mut conn.driver, conn.sender.ready()).await {
                match reused {
                    true => continue,
                    false => return Err(transport(&e)),
                }
            }
            let sent = drive(&mut conn.driver, conn.sender.try_send_request(request)).await;
            match sent {
                Ok(response) => return Ok((response, conn)),
                Err(mut e) => match (reused, e.take_message()) {
                    (true, Some(unsent)) => request = unsent,
                    _ => return Err(transport(e.error())),
                },
            }
        }
    }

    /// The most recently used idle connection, once those idle too long are closed.
    fn take(&self) -> Option<Conn> {
        let now = Instant::now();
        let mut idle = self.idle.lock().expect("pool lock");
        // Pushed in the order they went idle (under this lock): the stale ones lead.
        let stale = idle.partition_point(|c| now.duration_since(c.idle_since) >= POOL_IDLE_TIMEOUT);
        idle.drain(..stale);
        idle.pop()
    }

    async fn connect(&self, origin: &Origin) -> Result<Conn, Error> {
        let authority = origin.authority.to_str().unwrap_or("the server");
        let connecting = async {
            let tcp = TcpStream::connect((origin.host.as_str(), origin.port))
                .await
                .map_err(|e| Error::Transport(format!("cannot connect to {authority}: {e}")))?;
            tcp.set_nodelay(true)
                .map_err(|e| Error::Transport(format!("cannot set TCP_NODELAY: {e}")))?;
            match origin.https {
                false => handshake(tcp).await,
                true => {
                    let name = ServerName::try_from(origin.host.clone()).map_err(|e| {
                        Error::Transport(format!("{} is not a TLS server name: {e}", origin.host))
                    })?;
                    let tls = self
                        .tls
                        .connector()?
                        .connect(name, tcp)
                        .await
                        .map_err(|e| {
                            Error::Transport(format!("TLS handshake with {authority} failed: {e}"))
                        })?;
                    handshake(tls).await
                }
            }
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
            Ok(conn) => conn,
            Err(_) => Err(Error::Transport(format!(
                "connecting to {authority} timed out after {} s",
                CONNECT_TIMEOUT.as_secs()
            ))),
        }
    }
}

impl Tls {
    fn connector(&self) -> Result<TlsConnector, Error> {
        static SYSTEM: OnceLock<Result<TlsConnector, String>> = OnceLock::new();
        match self {
            Tls::Custom(connector) => Ok(connector.clone()),
            Tls::System => SYSTEM
                .get_or_init(system_connector)
                .clone()
                .map_err(Error::Transport),
        }
    }
}

/// A connector trusting the system's roots (as curl does).
fn system_connector() -> Result<TlsConnector, String> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        return Err(format!(
            "cannot verify TLS servers: no trusted root certificates found on this system \
             ({} errors); use Client::with_tls",
            found.errors.len()
        ));
    }
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("cannot configure TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

async fn handshake<S>(stream: S) -> Result<Conn, Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| transport(&e))?;
    Ok(Conn {
        sender,
        driver: Some(Box::pin(connection)),
        idle_since: Instant::now(),
    })
}

/// Awaits `work` while running the connection, which `work` needs to make progress. Once the
/// connection has closed, `work` runs alone (and fails, unless it already has what it needs).
async fn drive<F: Future>(driver: &mut Option<Driver>, work: F) -> F::Output {
    let mut work = pin!(work);
    if let Some(running) = driver {
        tokio::select! {
            biased;
            out = &mut work => return out,
            _ = running.as_mut() => *driver = None,
        }
    }
    work.await
}

/// The base URL taken apart: `http(s)://host[:port][/prefix]`.
fn origin_of(base_url: &str) -> Result<Origin, String> {
    let uri: Uri = base_url
        .parse()
        .map_err(|e| format!("the base URL {base_url:?} does not parse: {e}"))?;
    let https = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => {
            return Err(format!(
                "the base URL {base_url:?} must start with http:// or https://"
            ));
        }
    };
    let authority = uri
        .authority()
        .ok_or_else(|| format!("the base URL {base_url:?} names no host"))?;
    let host = authority.host();
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    Ok(Origin {
        host: host.to_owned(),
        port: authority.port_u16().unwrap_or(if https { 443 } else { 80 }),
        authority: HeaderValue::from_str(authority.as_str())
            .map_err(|e| format!("the base URL's host is not a header value: {e}"))?,
        prefix: uri.path().trim_end_matches('/').to_owned(),
        https,
    })
}

fn build(origin: &Origin, out: Outgoing<'_>) -> Result<Request<Full<Bytes>>, Error> {
    let target = request_target(&origin.prefix, out.path);
    let mut request = Request::builder()
        .method(out.method)
        .uri(target)
        .header(header::HOST, origin.authority.clone())
        .header(header::AUTHORIZATION, out.auth.clone());
    if let Some(accept) = out.accept {
        request = request.header(header::ACCEPT, accept);
    }
    let body = match out.body {
        Some(body) => {
            request = request.header(header::CONTENT_TYPE, "application/json");
            Bytes::from(body)
        }
        None => Bytes::new(),
    };
    request
        .body(Full::new(body))
        .map_err(|e| Error::Transport(format!("cannot build the request: {e}")))
}

/// `prefix` + `path`, with every byte a request target may not hold percent-encoded.
fn request_target(prefix: &str, path: &str) -> String {
    let mut target = String::with_capacity(prefix.len() + path.len());
    let allowed = |b: u8| {
        matches!(b, b'!'..=b'~')
            && !matches!(
                b,
                b'"' | b'<' | b'>' | b'\\' | b'^' | b'`' | b'{' | b'|' | b'}'
            )
    };
    push_encoded(&mut target, prefix, allowed);
    push_encoded(&mut target, path, allowed);
    target
}

/// A transport error with its chain of causes, which hyper's own `Display` omits.
pub(crate) fn transport(err: &(dyn std::error::Error + 'static)) -> Error {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    Error::Transport(text)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio::sync::Barrier;
    use tokio::task::JoinSet;

    use super::*;

    /// Connections a peer has open now, and the most it had at once.
    #[derive(Default)]
    struct Connections {
        open: AtomicUsize,
        most: AtomicUsize,
    }

    /// A peer answering every request on a connection with `{"status":"ok"}`, each answer
    /// held until `round` requests wait for theirs: requests the client lets on the wire
    /// together are all open at once.
    async fn holding_peer(listener: TcpListener, round: usize, seen: Arc<Connections>) {
        let round = Arc::new(Barrier::new(round));
        let mut connections = JoinSet::new();
        while let Ok((mut socket, _)) = listener.accept().await {
            let open = seen.open.fetch_add(1, Ordering::SeqCst) + 1;
            seen.most.fetch_max(open, Ordering::SeqCst);
            let (round, seen) = (round.clone(), seen.clone());
            connections.spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while let Ok(n @ 1..) = socket.read(&mut buf).await {
                    head.extend_from_slice(&buf[..n]);
                    if !head.ends_with(b"\r\n\r\n") {
                        continue;
                    }
                    head.clear();
                    round.wait().await;
                    let answer = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                                  content-length: 15\r\n\r\n{\"status\":\"ok\"}";
                    if socket.write_all(answer.as_bytes()).await.is_err() {
                        break;
                    }
                }
                seen.open.fetch_sub(1, Ordering::SeqCst);
            });
        }
    }

    /// Sends `requests` GETs at once through a transport allowing `max_in_flight`, to a
    /// peer answering them `round` at a time; returns the most connections it had at once.
    async fn check_in_flight(max_in_flight: usize, requests: usize, round: usize) -> usize {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let seen = Arc::new(Connections::default());
        let peer = tokio::spawn(holding_peer(listener, round, seen.clone()));
        let transport = Arc::new(Transport::new(&url, Tls::System, max_in_flight));
        let auth = HeaderValue::from_static("Bearer k");
        let mut sent = JoinSet::new();
        for _ in 0..requests {
            let (transport, auth) = (transport.clone(), auth.clone());
            sent.spawn(async move {
                let get = Outgoing {
                    method: Method::GET,
                    path: "/healthz",
                    auth: &auth,
                    body: None,
                    accept: None,
                };
                transport.exchange(get).await
            });
        }
        while let Some(answered) = sent.join_next().await {
            let (status, body) = answered.expect("joined").expect("answered");
            assert_eq!(
                (status, &body[..]),
                (StatusCode::OK, &b"{\"status\":\"ok\"}"[..])
            );
        }
        peer.abort();
        seen.most.load(Ordering::SeqCst)
    }

    #[tokio::test]
    async fn no_more_requests_go_on_the_wire_at_once_than_allowed() {
        // Two at a time, in three rounds over the same two connections.
        assert_eq!(check_in_flight(2, 6, 2).await, 2);
        // Up to the limit, all at once.
        assert_eq!(check_in_flight(DEFAULT_MAX_IN_FLIGHT, 6, 6).await, 6);
    }

    #[test]
    fn at_least_one_request_goes_on_the_wire() {
        assert_eq!(
            Transport::new("http://127.0.0.1:1", Tls::System, 0).max_in_flight(),
            1
        );
    }

    #[test]
    fn request_targets_are_under_the_prefix_and_escaped() {
        assert_eq!(request_target("", "/v1/events"), "/v1/events");
        assert_eq!(
            request_target("/switchboard", "/v1/events?tenant=acme&limit=5"),
            "/switchboard/v1/events?tenant=acme&limit=5"
        );
        assert_eq!(
            request_target("", "/v1/tenants/a b/matrix"),
            "/v1/tenants/a%20b/matrix"
        );
        assert_eq!(request_target("", "/v1/é\"{}"), "/v1/%C3%A9%22%7B%7D");
        assert!(request_target("", "/v1/a b\n\"é").parse::<Uri>().is_ok());
    }

    #[test]
    fn base_urls_give_host_port_prefix_and_scheme() {
        let o = origin_of("http://127.0.0.1:7800").unwrap();
        assert_eq!(
            (o.host.as_str(), o.port, o.prefix.as_str(), o.https),
            ("127.0.0.1", 7800, "", false)
        );
        assert_eq!(o.authority, "127.0.0.1:7800");
        let o = origin_of("https://hub.local/switchboard/").unwrap();
        assert_eq!(
            (o.host.as_str(), o.port, o.prefix.as_str(), o.https),
            ("hub.local", 443, "/switchboard", true)
        );
        let o = origin_of("http://[::1]:9000").unwrap();
        assert_eq!((o.host.as_str(), o.port), ("::1", 9000));
        assert_eq!(origin_of("http://hub.local").unwrap().port, 80);
    }

    #[test]
    fn base_urls_that_cannot_be_used_are_explained() {
        let err = origin_of("not a url").unwrap_err();
        assert!(err.contains("does not parse"), "{err}");
        let err = origin_of("ftp://hub.local").unwrap_err();
        assert!(err.contains("http:// or https://"), "{err}");
        let err = origin_of("/v1/events").unwrap_err();
        assert!(err.contains("http:// or https://"), "{err}");
    }
}
