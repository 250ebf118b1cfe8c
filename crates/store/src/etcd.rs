//! etcd as Berth's store, spoken in etcd's own v3 gRPC API over HTTP/2 (hyper, which Berth
//! already has, and the messages of [`crate::etcd_rpc`]): one multiplexed connection per
//! member carries every request and watch.
//!
//! The mapping is one to one: etcd's store-wide revision is [`Revision`], a transaction's
//! compares are etcd's (`CREATE = 0` for an absent key, `MOD = r`), a prefix range is etcd's
//! `[prefix, prefix_end)` read in pages at one revision, and a watch is etcd's watch from
//! `after + 1`, its events cut into one [`Batch`] per revision. Several endpoints (the members
//! of one cluster) are tried in turn: any request moves on when a member cannot be reached, a
//! read also when a member fails it; a write whose outcome is unknown (the member went away
//! after it was sent) is reported as an error, never retried, so it is never applied twice.
//! A watch whose connection breaks resumes from the last revision it delivered, on the next
//! member.

use crate::etcd_rpc as pb;
use crate::{Batch, Compare, Event, EventKind, KeyValue, Op, Revision, Store, StoreError, Txn};
use crate::{TxnOutcome, Watch, WATCH_QUEUE};
use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::Frame;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use std::collections::HashSet;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::mpsc;

/// Keys read per page of a range: a page is one answer, kept well under etcd's message
/// limits.
const PAGE: usize = 1000;
/// Reads per transaction of a [`Store::get_many`]: under etcd's default `--max-txn-ops` (128).
const GETS_PER_TXN: usize = 100;
/// How long one request may take before the member is given up on.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Where etcd is and how to log in to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdOptions {
    /// The members' client addresses, `host:port`.
    pub endpoints: Vec<String>,
    /// A user and password, when etcd's authentication is on.
    pub user: Option<(String, String)>,
    /// The URL said `etcds://` (or `https://`): the members are reached over TLS, which
    /// needs `tls`.
    pub secure: bool,
    /// The certificates for TLS.
    pub tls: Option<EtcdTls>,
}

/// TLS to etcd: the CA that signed the members' certificates (PEM), and a client
/// certificate and its key (PEM) when etcd checks clients' (`--client-cert-auth`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdTls {
    pub ca: std::path::PathBuf,
    pub client: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

impl EtcdOptions {
    /// `etcd://host:port,host:port,…` (also `http://`, or bare addresses), or `etcds://…`
    /// (also `https://`) for TLS.
    pub fn parse(url: &str) -> Result<Self, StoreError> {
        let secure = url.starts_with("https://") || url.starts_with("etcds://");
        let rest = url
            .strip_prefix("etcd://")
            .or_else(|| url.strip_prefix("http://"))
            .or_else(|| url.strip_prefix("etcds://"))
            .or_else(|| url.strip_prefix("https://"))
            .unwrap_or(url);
        let endpoints: Vec<String> = rest
            .split(',')
            .map(|e| e.trim().trim_end_matches('/').to_string())
            .filter(|e| !e.is_empty())
            .collect();
        if endpoints.is_empty() {
            return Err(StoreError::Backend(format!(
                "{url:?} names no etcd endpoint: give etcd://host:port[,host:port…]"
            )));
        }
        for e in &endpoints {
            let ok = e
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !ok || e.contains('/') {
                return Err(StoreError::Backend(format!(
                    "{e:?} is not an etcd endpoint: give host:port"
                )));
            }
        }
        Ok(EtcdOptions {
            endpoints,
            user: None,
            secure,
            tls: None,
        })
    }
}

fn tls_error(what: &str, path: &std::path::Path, e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("etcd TLS: {what} {}: {e}", path.display()))
}

/// The client's TLS configuration: `tls`'s CA as the only root, and its client certificate.
fn tls_config(tls: Option<&EtcdTls>) -> Result<rustls::ClientConfig, StoreError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StoreError::Backend(format!("etcd TLS: {e}")))?;
    let mut roots = rustls::RootCertStore::empty();
    if let Some(t) = tls {
        let certs = CertificateDer::pem_file_iter(&t.ca)
            .map_err(|e| tls_error("reading the CA", &t.ca, e))?;
        for c in certs {
            let c = c.map_err(|e| tls_error("reading the CA", &t.ca, e))?;
            roots
                .add(c)
                .map_err(|e| tls_error("the CA certificate in", &t.ca, e))?;
        }
        if roots.is_empty() {
            return Err(tls_error("no certificate in", &t.ca, "give the CA in PEM"));
        }
    }
    let builder = builder.with_root_certificates(roots);
    match tls.and_then(|t| t.client.as_ref()) {
        None => Ok(builder.with_no_client_auth()),
        Some((cert, key)) => {
            let certs = CertificateDer::pem_file_iter(cert)
                .map_err(|e| tls_error("reading the client certificate", cert, e))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| tls_error("reading the client certificate", cert, e))?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| tls_error("reading the client key", key, e))?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| tls_error("the client certificate", cert, e))
        }
    }
}

/// A request's body: one message (a unary call), or the messages sent on a stream for as long
/// as its sender lives (a watch).
enum Outgoing {
    Once(Option<Bytes>),
    Stream(mpsc::Receiver<Bytes>),
}

impl hyper::body::Body for Outgoing {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            Outgoing::Once(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Outgoing::Stream(rx) => rx.poll_recv(cx).map(|m| m.map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, Outgoing::Once(None))
    }
}

/// The etcd backend: cheap to clone (one connection per member, shared).
#[derive(Clone)]
pub struct Etcd {
    inner: Arc<Inner>,
}

struct Inner {
    endpoints: Vec<String>,
    /// The member that answered last: requests go there first.
    preferred: AtomicUsize,
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Outgoing>,
    /// `http` or `https`.
    scheme: &'static str,
    user: Option<(String, String)>,
    token: Mutex<Option<String>>,
}

impl std::fmt::Debug for Etcd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Etcd")
            .field("endpoints", &self.inner.endpoints)
            .field("user", &self.inner.user.as_ref().map(|(u, _)| u))
            .finish()
    }
}

/// Why a login failed.
enum Login {
    /// The member could not be reached (or is unavailable): another may log us in.
    Unreached(String),
    /// etcd refused the user or password.
    Refused(StoreError),
}

/// What a request's failure says about it.
enum Failed {
    /// Not sent (the member could not be reached): safe to send to another member.
    Unsent(String),
    /// Sent, with no answer: it may or may not have been applied.
    Unknown(String),
    /// etcd answered with a gRPC error.
    Answered { code: u32, message: String },
}

impl Etcd {
    /// Connects to etcd and checks that a member answers.
    pub async fn connect(options: EtcdOptions) -> Result<Self, StoreError> {
        match (options.secure, &options.tls) {
            (true, None) => {
                return Err(StoreError::Backend(
                    "etcds:// needs the CA that signed etcd's certificates (--etcd-ca)".into(),
                ))
            }
            (false, Some(_)) => {
                return Err(StoreError::Backend(
                    "TLS certificates were given for etcd:// (plain HTTP): give etcds://".into(),
                ))
            }
            _ => {}
        }
        let tls = tls_config(options.tls.as_ref())?;
        let mut http = HttpConnector::new();
        // The TLS layer takes https:// URLs.
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(Duration::from_secs(3)));
        // A member whose host dies without a word breaks its connection (a watch's too)
        // within about 11 s, and the watch resumes on another member.
        http.set_keepalive(Some(Duration::from_secs(5)));
        http.set_keepalive_interval(Some(Duration::from_secs(2)));
        http.set_keepalive_retries(Some(3));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http2()
            .wrap_connector(http);
        // gRPC is HTTP/2 only (prior knowledge on plain connections, ALPN on TLS). A
        // connection that stops answering while a request waits (a member partitioned away
        // behind something that keeps the TCP connection open) is found by a ping and closed,
        // so the next request opens a new one. Pings come no more often than etcd's
        // `--grpc-keepalive-min-time` (5 s) allows, and only while requests are open.
        let client = Client::builder(hyper_util::rt::TokioExecutor::new())
            .http2_only(true)
            .timer(hyper_util::rt::TokioTimer::new())
            .http2_keep_alive_interval(Some(Duration::from_secs(6)))
            .http2_keep_alive_timeout(Duration::from_secs(4))
            .pool_idle_timeout(Duration::from_secs(30))
            .build(https);
        let etcd = Etcd {
            inner: Arc::new(Inner {
                endpoints: options.endpoints,
                preferred: AtomicUsize::new(0),
                client,
                scheme: if options.secure { "https" } else { "http" },
                user: options.user,
                token: Mutex::new(None),
            }),
        };
        etcd.revision().await?;
        Ok(etcd)
    }

    fn token(&self) -> Option<String> {
        self.inner
            .token
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn forget_token(&self) {
        *self.inner.token.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// A gRPC request to `path` at `endpoint` carrying `body`, with the login token.
    fn request(
        &self,
        endpoint: &str,
        path: &str,
        body: Outgoing,
        token: bool,
    ) -> Result<http::Request<Outgoing>, String> {
        let mut req = http::Request::post(format!("{}://{endpoint}{path}", self.inner.scheme))
            .header(http::header::CONTENT_TYPE, "application/grpc")
            .header(http::header::TE, "trailers");
        if let Some(t) = self.token().filter(|_| token) {
            req = req.header("token", t);
        }
        req.body(body).map_err(|e| e.to_string())
    }

    /// One unary call to one member.
    async fn unary<A: prost::Message + Default>(
        &self,
        endpoint: &str,
        path: &str,
        msg: &impl prost::Message,
        token: bool,
    ) -> Result<A, Failed> {
        let req = self
            .request(endpoint, path, Outgoing::Once(Some(pb::frame(msg))), token)
            .map_err(Failed::Unsent)?;
        let resp = match tokio::time::timeout(REQUEST_TIMEOUT, self.inner.client.request(req)).await
        {
            Err(_) => {
                return Err(Failed::Unknown(format!(
                    "{endpoint} did not answer in time"
                )))
            }
            Ok(Err(e)) if e.is_connect() => return Err(Failed::Unsent(format!("{endpoint}: {e}"))),
            Ok(Err(e)) => return Err(Failed::Unknown(format!("{endpoint}: {e}"))),
            Ok(Ok(r)) => r,
        };
        if !resp.status().is_success() {
            return Err(Failed::Unknown(format!(
                "{endpoint} answered HTTP {}",
                resp.status()
            )));
        }
        // An answer that is only headers carries its status in them.
        if let Some((code, message)) = pb::status(resp.headers()).filter(|(c, _)| *c != 0) {
            return Err(Failed::Answered { code, message });
        }
        let collected = tokio::time::timeout(REQUEST_TIMEOUT, resp.into_body().collect())
            .await
            .map_err(|_| Failed::Unknown(format!("{endpoint}: the answer stalled")))?
            .map_err(|e| Failed::Unknown(format!("{endpoint}: {e}")))?;
        let status = collected.trailers().and_then(pb::status);
        match status {
            Some((0, _)) => {}
            Some((code, message)) => return Err(Failed::Answered { code, message }),
            None => {
                return Err(Failed::Unknown(format!(
                    "{endpoint}: the answer ended without a gRPC status"
                )))
            }
        }
        let mut buf = BytesMut::from(collected.to_bytes().as_ref());
        pb::unframe::<A>(&mut buf)
            .map_err(|e| Failed::Unknown(format!("{endpoint}: {e}")))?
            .into_iter()
            .next()
            .ok_or_else(|| Failed::Unknown(format!("{endpoint}: the answer held no message")))
    }

    /// A request to the cluster: the preferred member first, then the others. `repeatable`
    /// requests (reads) move on after any failure of a member; others only when they were
    /// certainly not sent.
    async fn call<A: prost::Message + Default>(
        &self,
        path: &str,
        msg: &impl prost::Message,
        repeatable: bool,
    ) -> Result<A, StoreError> {
        let n = self.inner.endpoints.len();
        let first = self.inner.preferred.load(Ordering::Relaxed);
        let mut last = String::new();
        let mut logged_in = false;
        let mut i = 0;
        while i < n {
            let at = (first + i) % n;
            let endpoint = &self.inner.endpoints[at];
            if self.inner.user.is_some() && self.token().is_none() {
                match self.authenticate(endpoint).await {
                    Ok(()) => {}
                    // This member cannot log us in now: another may.
                    Err(Login::Unreached(m)) => {
                        last = m;
                        i += 1;
                        continue;
                    }
                    Err(Login::Refused(e)) => return Err(e),
                }
            }
            match self.unary(endpoint, path, msg, true).await {
                Ok(answer) => {
                    self.inner.preferred.store(at, Ordering::Relaxed);
                    return Ok(answer);
                }
                // An expired token: log in again, once, and resend (it was refused unapplied).
                Err(Failed::Answered { code, message })
                    if (code == pb::UNAUTHENTICATED || message.contains("invalid auth token"))
                        && self.inner.user.is_some()
                        && !logged_in =>
                {
                    logged_in = true;
                    match self.authenticate(endpoint).await {
                        // Resent to the same member with the new token.
                        Ok(()) => continue,
                        Err(Login::Unreached(m)) => last = format!("{message}; {m}"),
                        Err(Login::Refused(e)) => return Err(e),
                    }
                }
                Err(Failed::Answered { code, message }) => {
                    // Unavailable is worth another member for a read; for a write only when
                    // etcd refused it before proposing it (this member has no leader, or is
                    // not able to serve yet), never when its outcome is unknown ("leader
                    // changed", "request timed out"). Any other answer is etcd's verdict.
                    let unproposed =
                        message.contains("no leader") || message.contains("not capable");
                    if !(code == pb::UNAVAILABLE && (repeatable || unproposed)) {
                        return Err(answered(path, &message));
                    }
                    last = message;
                }
                Err(Failed::Unsent(m)) => last = m,
                Err(Failed::Unknown(m)) if repeatable => last = m,
                Err(Failed::Unknown(m)) => {
                    return Err(StoreError::Backend(format!(
                        "etcd did not confirm {path} ({m}); it may or may not have been applied"
                    )))
                }
            }
            i += 1;
        }
        Err(StoreError::Backend(format!(
            "no etcd member answered {path}: {last}"
        )))
    }

    /// Logs in at `endpoint`; the token it had stays in use until a new one replaces it.
    async fn authenticate(&self, endpoint: &str) -> Result<(), Login> {
        let Some((user, password)) = &self.inner.user else {
            return Ok(());
        };
        let msg = pb::AuthenticateRequest {
            name: user.clone(),
            password: password.clone(),
        };
        let r: pb::AuthenticateResponse =
            match self.unary(endpoint, pb::AUTHENTICATE, &msg, false).await {
                Ok(r) => r,
                Err(Failed::Answered {
                    code: pb::UNAVAILABLE,
                    message,
                }) => return Err(Login::Unreached(format!("{endpoint}: {message}"))),
                Err(Failed::Answered { message, .. }) => {
                    return Err(Login::Refused(StoreError::Backend(format!(
                        "etcd refused the login of {user:?}: {message}"
                    ))))
                }
                Err(Failed::Unsent(m) | Failed::Unknown(m)) => return Err(Login::Unreached(m)),
            };
        *self.inner.token.lock().unwrap_or_else(|e| e.into_inner()) = Some(r.token);
        Ok(())
    }

    /// One page of `[key, end)` at `revision` (0: the newest).
    async fn range_page(
        &self,
        key: &[u8],
        end: &[u8],
        limit: usize,
        revision: Revision,
    ) -> Result<pb::RangeResponse, StoreError> {
        let msg = pb::RangeRequest {
            key: key.to_vec(),
            range_end: end.to_vec(),
            limit: limit as i64,
            revision: revision as i64,
        };
        self.call(pb::RANGE, &msg, true).await
    }
}

/// etcd's refusal, named as a store error; the limits Berth can run into say what to raise.
fn answered(path: &str, message: &str) -> StoreError {
    let hint = if message.contains("too many operations in txn request") {
        " (start etcd with a larger --max-txn-ops)"
    } else if message.contains("request is too large") {
        " (start etcd with a larger --max-request-bytes)"
    } else {
        ""
    };
    StoreError::Backend(format!("etcd refused {path}: {message}{hint}"))
}

/// The first key after every key that starts with `prefix` (etcd's `range_end` for a
/// prefix); `\0` (to the end) when there is none.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// `[start, end)` of the keys under `prefix` (all keys for `""`, which etcd calls `\0..\0`).
fn bounds(prefix: &str) -> (Vec<u8>, Vec<u8>) {
    if prefix.is_empty() {
        (vec![0], vec![0])
    } else {
        (prefix.as_bytes().to_vec(), prefix_end(prefix.as_bytes()))
    }
}

/// etcd's revisions are signed and never negative.
fn rev(r: i64) -> Revision {
    r.max(0) as Revision
}

fn header_revision(h: &Option<pb::ResponseHeader>) -> Revision {
    rev(h.as_ref().map_or(0, |h| h.revision))
}

/// etcd's key-value as Berth's: keys are UTF-8.
fn kv(raw: pb::KeyValue) -> Result<KeyValue, StoreError> {
    let key = String::from_utf8(raw.key).map_err(|e| StoreError::Codec {
        key: String::from_utf8_lossy(e.as_bytes()).into_owned(),
        message: "etcd holds a key that is not UTF-8".into(),
    })?;
    Ok(KeyValue {
        key,
        value: raw.value,
        create_revision: rev(raw.create_revision),
        mod_revision: rev(raw.mod_revision),
    })
}

/// The ops of `txn` with only the last one of each key: etcd refuses a transaction that
/// names a key twice, and applying ops in order leaves exactly what the last one says.
fn last_op_per_key(ops: Vec<Op>) -> Vec<Op> {
    let mut seen = HashSet::new();
    let mut out: Vec<Op> = ops
        .into_iter()
        .rev()
        .filter(|op| {
            let key = match op {
                Op::Put { key, .. } | Op::Delete { key } => key.clone(),
            };
            seen.insert(key)
        })
        .collect();
    out.reverse();
    out
}

fn get_op(key: &str, revision: Revision) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(pb::Request::Range(pb::RangeRequest {
            key: key.as_bytes().to_vec(),
            revision: revision as i64,
            ..Default::default()
        })),
    }
}

#[async_trait]
impl Store for Etcd {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let msg = pb::RangeRequest {
            key: key.as_bytes().to_vec(),
            ..Default::default()
        };
        let r: pb::RangeResponse = self.call(pb::RANGE, &msg, true).await?;
        r.kvs.into_iter().next().map(kv).transpose()
    }

    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<KeyValue>>, StoreError> {
        let mut out = Vec::with_capacity(keys.len());
        // Every chunk reads at the first one's revision: one consistent view.
        let mut at: Revision = 0;
        for chunk in keys.chunks(GETS_PER_TXN) {
            let msg = pb::TxnRequest {
                compare: Vec::new(),
                success: chunk.iter().map(|k| get_op(k, at)).collect(),
            };
            let r: pb::TxnResponse = self.call(pb::TXN, &msg, true).await?;
            if at == 0 {
                at = header_revision(&r.header);
            }
            if r.responses.len() != chunk.len() {
                return Err(StoreError::Backend(format!(
                    "etcd answered {} of {} reads",
                    r.responses.len(),
                    chunk.len()
                )));
            }
            for resp in r.responses {
                let found = match resp.response {
                    Some(pb::Response::Range(rr)) => rr.kvs.into_iter().next(),
                    _ => None,
                };
                out.push(found.map(kv).transpose()?);
            }
        }
        Ok(out)
    }

    async fn range(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: Option<usize>,
    ) -> Result<Vec<KeyValue>, StoreError> {
        let (mut start, end) = bounds(prefix);
        if let Some(after) = start_after.filter(|a| a.as_bytes() >= start.as_slice()) {
            start = after.as_bytes().to_vec();
            start.push(0);
        }
        let mut out = Vec::new();
        let mut at: Revision = 0;
        loop {
            let want = limit.map_or(PAGE, |l| (l - out.len()).min(PAGE));
            if want == 0 {
                break;
            }
            let r = self.range_page(&start, &end, want, at).await?;
            if at == 0 {
                at = header_revision(&r.header);
            }
            let more = r.more;
            for raw in r.kvs {
                out.push(kv(raw)?);
            }
            match out.last() {
                Some(last) if more => {
                    start = last.key.as_bytes().to_vec();
                    start.push(0);
                }
                _ => break,
            }
        }
        Ok(out)
    }

    async fn txn(&self, txn: Txn) -> Result<TxnOutcome, StoreError> {
        let compare = txn
            .compares
            .iter()
            .map(|c| match c {
                Compare::Absent(key) => pb::Compare {
                    result: 0,
                    target: pb::TARGET_CREATE,
                    key: key.as_bytes().to_vec(),
                    target_union: Some(pb::TargetUnion::CreateRevision(0)),
                },
                Compare::ModRevision(key, r) => pb::Compare {
                    result: 0,
                    target: pb::TARGET_MOD,
                    key: key.as_bytes().to_vec(),
                    target_union: Some(pb::TargetUnion::ModRevision(*r as i64)),
                },
            })
            .collect();
        let success = last_op_per_key(txn.ops)
            .into_iter()
            .map(|op| pb::RequestOp {
                request: Some(match op {
                    Op::Put { key, value } => pb::Request::Put(pb::PutRequest {
                        key: key.into_bytes(),
                        value,
                        lease: 0,
                    }),
                    Op::Delete { key } => pb::Request::DeleteRange(pb::DeleteRangeRequest {
                        key: key.into_bytes(),
                        range_end: Vec::new(),
                    }),
                }),
            })
            .collect();
        let msg = pb::TxnRequest { compare, success };
        let r: pb::TxnResponse = self.call(pb::TXN, &msg, false).await?;
        Ok(match r.succeeded {
            true => TxnOutcome::Committed(header_revision(&r.header)),
            false => TxnOutcome::Conflict,
        })
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<Watch, StoreError> {
        let (tx, rx) = mpsc::channel(WATCH_QUEUE);
        let etcd = self.clone();
        let prefix = prefix.to_string();
        tokio::spawn(async move {
            let mut from = after;
            let mut failures = 0u32;
            let mut at = etcd.inner.preferred.load(Ordering::Relaxed);
            loop {
                let endpoint = etcd.inner.endpoints[at % etcd.inner.endpoints.len()].clone();
                let ended = tokio::select! {
                    e = etcd.follow(&endpoint, &prefix, &mut from, &tx) => e,
                    _ = tx.closed() => return,
                };
                match ended {
                    Followed::Delivered => failures = 0,
                    Followed::Final(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                    Followed::Gone => return,
                    Followed::Broken(why) => {
                        failures += 1;
                        tracing::debug!(endpoint, why, "an etcd watch resumes on another member");
                    }
                }
                at += 1;
                // Back off while no member streams: 100 ms doubling to 2 s.
                let pause =
                    Duration::from_millis(100 << failures.min(5)).min(Duration::from_secs(2));
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = tx.closed() => return,
                }
            }
        });
        Ok(Watch { rx })
    }

    async fn revision(&self) -> Result<Revision, StoreError> {
        // A keys-only count would do; one key at most is as cheap.
        let r = self.range_page(&[0], &[0], 1, 0).await?;
        Ok(header_revision(&r.header))
    }

    fn leases(&self) -> Option<&dyn crate::Leases> {
        Some(self)
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<usize, StoreError> {
        let (key, range_end) = bounds(prefix);
        let msg = pb::DeleteRangeRequest { key, range_end };
        let r: pb::DeleteRangeResponse = self.call(pb::DELETE_RANGE, &msg, false).await?;
        Ok(r.deleted.max(0) as usize)
    }
}

#[async_trait]
impl crate::Leases for Etcd {
    async fn grant(&self, ttl: Duration) -> Result<crate::LeaseId, StoreError> {
        let msg = pb::LeaseGrantRequest {
            ttl: ttl.as_secs().max(1) as i64,
        };
        let r: pb::LeaseGrantResponse = self.call(pb::LEASE_GRANT, &msg, false).await?;
        if r.id == 0 || !r.error.is_empty() {
            return Err(StoreError::Backend(format!(
                "etcd granted no lease: {}",
                r.error
            )));
        }
        Ok(r.id)
    }

    async fn keep_alive(&self, lease: crate::LeaseId) -> Result<bool, StoreError> {
        // etcd's keep-alive is a stream; one request on it, and its one answer, is a renewal.
        let r: pb::LeaseKeepAliveResponse = self
            .call(pb::LEASE_KEEP_ALIVE, &pb::LeaseId { id: lease }, true)
            .await?;
        Ok(r.ttl > 0)
    }

    async fn revoke(&self, lease: crate::LeaseId) -> Result<(), StoreError> {
        match self
            .call::<pb::Empty>(pb::LEASE_REVOKE, &pb::LeaseId { id: lease }, true)
            .await
        {
            Ok(_) => Ok(()),
            // Already gone is what was wanted.
            Err(StoreError::Backend(m)) if m.contains("lease not found") => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn create_leased(
        &self,
        key: &str,
        value: Vec<u8>,
        lease: crate::LeaseId,
    ) -> Result<Option<Revision>, StoreError> {
        let msg = pb::TxnRequest {
            compare: vec![pb::Compare {
                result: 0,
                target: pb::TARGET_CREATE,
                key: key.as_bytes().to_vec(),
                target_union: Some(pb::TargetUnion::CreateRevision(0)),
            }],
            success: vec![pb::RequestOp {
                request: Some(pb::Request::Put(pb::PutRequest {
                    key: key.as_bytes().to_vec(),
                    value,
                    lease,
                })),
            }],
        };
        let r: pb::TxnResponse = self.call(pb::TXN, &msg, false).await?;
        Ok(r.succeeded.then_some(header_revision(&r.header)))
    }
}

/// How one watch stream ended.
enum Followed {
    /// It delivered something before it broke: resume at once.
    Delivered,
    /// It broke before delivering anything.
    Broken(String),
    /// It can never resume (history compacted, or etcd refused it for good).
    Final(StoreError),
    /// The watcher went away.
    Gone,
}

impl Etcd {
    /// Streams one etcd watch from one member into `tx`, advancing `from` past every revision
    /// delivered.
    async fn follow(
        &self,
        endpoint: &str,
        prefix: &str,
        from: &mut Revision,
        tx: &mpsc::Sender<Result<Arc<Batch>, StoreError>>,
    ) -> Followed {
        let (key, range_end) = bounds(prefix);
        let create = pb::WatchRequest {
            request_union: Some(pb::WatchRequestUnion::Create(pb::WatchCreateRequest {
                key,
                range_end,
                start_revision: (*from + 1) as i64,
            })),
        };
        if self.inner.user.is_some() && self.token().is_none() {
            match self.authenticate(endpoint).await {
                Ok(()) => {}
                Err(Login::Unreached(m)) => return Followed::Broken(m),
                // A refused login stays refused: the watcher hears of it.
                Err(Login::Refused(e)) => return Followed::Final(e),
            }
        }
        // The request stream stays open while the watch lives: etcd ends a watch whose
        // client has stopped sending.
        let (requests, outgoing) = mpsc::channel(1);
        let _ = requests.try_send(pb::frame(&create));
        let Ok(mut req) = self.request(endpoint, pb::WATCH, Outgoing::Stream(outgoing), true)
        else {
            return Followed::Broken("the watch request".into());
        };
        // Cancelled by a member that loses its leader, so a partitioned member's silence is
        // never taken for a quiet store.
        req.headers_mut()
            .insert("hasleader", http::HeaderValue::from_static("true"));
        let resp = match tokio::time::timeout(REQUEST_TIMEOUT, self.inner.client.request(req)).await
        {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return Followed::Broken(e.to_string()),
            Err(_) => return Followed::Broken("no answer".into()),
        };
        if !resp.status().is_success() {
            return Followed::Broken(format!("HTTP {}", resp.status()));
        }
        if let Some((code, message)) = pb::status(resp.headers()).filter(|(c, _)| *c != 0) {
            if code == pb::UNAUTHENTICATED {
                self.forget_token();
            }
            return Followed::Broken(message);
        }
        let mut body = resp.into_body();
        let mut buf = BytesMut::new();
        let mut delivered = false;
        let broken = |delivered: bool, why: String| match delivered {
            true => Followed::Delivered,
            false => Followed::Broken(why),
        };
        loop {
            let frame = match body.frame().await {
                None => break,
                Some(Err(e)) => return broken(delivered, e.to_string()),
                Some(Ok(f)) => f,
            };
            let data = match frame.into_data() {
                Ok(d) => d,
                Err(frame) => {
                    // The trailers: the stream is over, and say why.
                    let status = frame.trailers_ref().and_then(pb::status);
                    if let Some((pb::UNAUTHENTICATED, _)) = status {
                        self.forget_token();
                    }
                    let why = status.map_or_else(|| "the stream ended".into(), |(_, m)| m);
                    return broken(delivered, why);
                }
            };
            buf.extend_from_slice(&data);
            let answers = match pb::unframe::<pb::WatchResponse>(&mut buf) {
                Ok(a) => a,
                Err(e) => return broken(delivered, e),
            };
            for w in answers {
                if w.canceled {
                    if w.compact_revision > 0 {
                        return Followed::Final(StoreError::Compacted {
                            requested: *from + 1,
                            oldest: rev(w.compact_revision),
                        });
                    }
                    return broken(delivered, format!("cancelled: {}", w.cancel_reason));
                }
                match batches(w.events) {
                    Err(e) => return Followed::Final(e),
                    Ok(list) => {
                        for b in list {
                            if b.revision <= *from {
                                continue;
                            }
                            *from = b.revision;
                            delivered = true;
                            if tx.send(Ok(Arc::new(b))).await.is_err() {
                                return Followed::Gone;
                            }
                        }
                    }
                }
            }
        }
        broken(delivered, "the stream ended".into())
    }
}

/// etcd's events (one answer may hold several revisions) as one batch per revision.
fn batches(events: Vec<pb::Event>) -> Result<Vec<Batch>, StoreError> {
    let mut out: Vec<Batch> = Vec::new();
    for e in events {
        let kind = match e.r#type {
            pb::EVENT_DELETE => EventKind::Delete,
            _ => EventKind::Put,
        };
        let mut kv = kv(e.kv.unwrap_or_default())?;
        if kind == EventKind::Delete {
            kv.value.clear();
        }
        let event = Event { kind, kv };
        match out.last_mut() {
            Some(b) if b.revision == event.kv.mod_revision => b.events.push(event),
            _ => out.push(Batch {
                revision: event.kv.mod_revision,
                events: vec![event],
            }),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ends_are_etcds() {
        assert_eq!(prefix_end(b"a/"), b"a0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
        assert_eq!(bounds(""), (vec![0], vec![0]), "everything");
    }

    #[test]
    fn endpoints_parse_and_bad_ones_are_named() {
        let o = EtcdOptions::parse("etcd://127.0.0.1:2379,10.0.0.2:2379").unwrap();
        assert_eq!(o.endpoints, ["127.0.0.1:2379", "10.0.0.2:2379"]);
        assert!(EtcdOptions::parse("etcd://").is_err());
        let e = EtcdOptions::parse("etcd://host").unwrap_err().to_string();
        assert!(e.contains("\"host\" is not an etcd endpoint"), "{e}");
        assert!(!o.secure);
        let tls = EtcdOptions::parse("etcds://h:1,h:2").unwrap();
        assert!(tls.secure, "etcds:// is TLS");
        assert_eq!(tls.endpoints, ["h:1", "h:2"]);
        assert!(EtcdOptions::parse("https://h:1").unwrap().secure);
    }

    #[test]
    fn only_the_last_op_of_a_key_is_sent() {
        let ops = Txn::new()
            .put("a", vec![1])
            .put("b", vec![2])
            .delete("a")
            .ops;
        assert_eq!(
            last_op_per_key(ops),
            vec![
                Op::Put {
                    key: "b".into(),
                    value: vec![2]
                },
                Op::Delete { key: "a".into() }
            ]
        );
    }

    #[test]
    fn one_response_of_several_revisions_is_a_batch_each() {
        let event = |kind: i32, key: &[u8], rev: i64, value: &[u8]| pb::Event {
            r#type: kind,
            kv: Some(pb::KeyValue {
                key: key.to_vec(),
                create_revision: 2,
                mod_revision: rev,
                value: value.to_vec(),
            }),
        };
        let b = batches(vec![
            event(0, b"a", 2, b"1"),
            event(0, b"b", 2, b"2"),
            event(pb::EVENT_DELETE, b"a", 4, b"stale"),
        ])
        .unwrap();
        assert_eq!(b.len(), 2);
        assert_eq!((b[0].revision, b[0].events.len()), (2, 2));
        assert_eq!(b[0].events[1].kv.value, b"2");
        assert_eq!(b[1].events[0].kind, EventKind::Delete);
        assert_eq!(b[1].events[0].kv.key, "a");
        assert!(
            b[1].events[0].kv.value.is_empty(),
            "a delete carries no value"
        );
        assert_eq!(b[1].revision, 4);
    }

    #[test]
    fn a_key_that_is_not_utf8_is_a_codec_error() {
        let e = kv(pb::KeyValue {
            key: vec![0xff, b'a'],
            ..Default::default()
        })
        .unwrap_err();
        assert!(matches!(e, StoreError::Codec { .. }), "{e}");
    }
}
