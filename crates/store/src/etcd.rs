//! etcd as Berth's store, spoken through etcd's own JSON gateway (the gRPC API's HTTP/JSON
//! form that every etcd member serves under `/v3/` on its client URL), with hyper, which Berth
//! already has: no gRPC stack and no protobuf compiler in the build.
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

use crate::{Batch, Compare, Event, EventKind, KeyValue, Op, Revision, Store, StoreError, Txn};
use crate::{TxnOutcome, Watch, WATCH_QUEUE};
use async_trait::async_trait;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// Keys read per page of a range: a page is one gateway response, kept well under etcd's
/// message limits.
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

/// The etcd backend: cheap to clone (one connection pool).
#[derive(Clone)]
pub struct Etcd {
    inner: Arc<Inner>,
}

struct Inner {
    endpoints: Vec<String>,
    /// The member that answered last: requests go there first.
    preferred: AtomicUsize,
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
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
    /// etcd answered with an error.
    Answered { code: i64, message: String },
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
        // A member whose host dies without a word breaks its connections (a watch's too)
        // within about 11 s, and the watch resumes on another member.
        http.set_keepalive(Some(Duration::from_secs(5)));
        http.set_keepalive_interval(Some(Duration::from_secs(2)));
        http.set_keepalive_retries(Some(3));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(hyper_util::rt::TokioExecutor::new())
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

    /// One POST to one member.
    async fn post(&self, endpoint: &str, path: &str, body: &Value) -> Result<Bytes, Failed> {
        let mut req = http::Request::post(format!("{}://{endpoint}{path}", self.inner.scheme))
            .header(http::header::CONTENT_TYPE, "application/json");
        if let Some(t) = self.token() {
            req = req.header(http::header::AUTHORIZATION, t);
        }
        let req = req
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| Failed::Unsent(e.to_string()))?;
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
        let status = resp.status();
        let body = tokio::time::timeout(REQUEST_TIMEOUT, resp.into_body().collect())
            .await
            .map_err(|_| Failed::Unknown(format!("{endpoint}: the answer stalled")))?
            .map_err(|e| Failed::Unknown(format!("{endpoint}: {e}")))?
            .to_bytes();
        if status.is_success() {
            return Ok(body);
        }
        let e: GatewayError = serde_json::from_slice(&body).unwrap_or_default();
        Err(Failed::Answered {
            code: e.code,
            message: if e.message.is_empty() {
                format!("HTTP {status}")
            } else {
                e.message
            },
        })
    }

    /// A request to the cluster: the preferred member first, then the others. `repeatable`
    /// requests (reads) move on after any failure of a member; others only when they were
    /// certainly not sent.
    async fn call<T: DeserializeOwned>(
        &self,
        path: &str,
        body: Value,
        repeatable: bool,
    ) -> Result<T, StoreError> {
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
            match self.post(endpoint, path, &body).await {
                Ok(bytes) => {
                    self.inner.preferred.store(at, Ordering::Relaxed);
                    return serde_json::from_slice(&bytes).map_err(|e| {
                        StoreError::Backend(format!("etcd's answer to {path} did not parse: {e}"))
                    });
                }
                // An expired token: log in again, once, and resend (it was refused unapplied).
                Err(Failed::Answered { code, message })
                    if (code == 16 || message.contains("invalid auth token"))
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
                    if !(code == 14 && (repeatable || unproposed)) {
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
        let body = json!({"name": user, "password": password});
        let bytes = match self.post(endpoint, "/v3/auth/authenticate", &body).await {
            Ok(b) => b,
            Err(Failed::Answered { code: 14, message }) => {
                return Err(Login::Unreached(format!("{endpoint}: {message}")))
            }
            Err(Failed::Answered { message, .. }) => {
                return Err(Login::Refused(StoreError::Backend(format!(
                    "etcd refused the login of {user:?}: {message}"
                ))))
            }
            Err(Failed::Unsent(m) | Failed::Unknown(m)) => return Err(Login::Unreached(m)),
        };
        let r: AuthResponse = serde_json::from_slice(&bytes).map_err(|e| {
            Login::Refused(StoreError::Backend(format!("etcd's login answer: {e}")))
        })?;
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
    ) -> Result<RangeResponse, StoreError> {
        let mut body = json!({
            "key": B64.encode(key),
            "range_end": B64.encode(end),
            "limit": limit.to_string(),
        });
        if revision > 0 {
            body["revision"] = json!(revision.to_string());
        }
        self.call("/v3/kv/range", body, true).await
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

#[derive(Debug, Default, Deserialize)]
struct GatewayError {
    #[serde(default)]
    code: i64,
    #[serde(default)]
    message: String,
}

#[derive(Debug, Deserialize)]
struct AuthResponse {
    token: String,
}

#[derive(Debug, Default, Deserialize)]
struct Header {
    #[serde(default, deserialize_with = "num")]
    revision: u64,
}

#[derive(Debug, Default, Deserialize)]
struct RawKv {
    #[serde(default)]
    key: String,
    #[serde(default)]
    value: String,
    #[serde(default, deserialize_with = "num")]
    create_revision: u64,
    #[serde(default, deserialize_with = "num")]
    mod_revision: u64,
}

impl RawKv {
    fn decode(self) -> Result<KeyValue, StoreError> {
        let key = B64
            .decode(&self.key)
            .ok()
            .and_then(|k| String::from_utf8(k).ok())
            .ok_or_else(|| StoreError::Codec {
                key: self.key.clone(),
                message: "etcd holds a key that is not UTF-8 base64".into(),
            })?;
        let value = B64.decode(&self.value).map_err(|e| StoreError::Codec {
            key: key.clone(),
            message: format!("etcd's value is not base64: {e}"),
        })?;
        Ok(KeyValue {
            key,
            value,
            create_revision: self.create_revision,
            mod_revision: self.mod_revision,
        })
    }
}

#[derive(Debug, Default, Deserialize)]
struct RangeResponse {
    #[serde(default)]
    header: Header,
    #[serde(default)]
    kvs: Vec<RawKv>,
    #[serde(default)]
    more: bool,
}

#[derive(Debug, Default, Deserialize)]
struct TxnResponse {
    #[serde(default)]
    header: Header,
    #[serde(default)]
    succeeded: bool,
    #[serde(default)]
    responses: Vec<ResponseOp>,
}

#[derive(Debug, Default, Deserialize)]
struct ResponseOp {
    #[serde(default)]
    response_range: Option<RangeResponse>,
}

#[derive(Debug, Default, Deserialize)]
struct DeleteResponse {
    #[serde(default, deserialize_with = "num")]
    deleted: u64,
}

#[derive(Debug, Default, Deserialize)]
struct WatchLine {
    #[serde(default)]
    result: Option<WatchResponse>,
    #[serde(default)]
    error: Option<GatewayError>,
}

#[derive(Debug, Default, Deserialize)]
struct WatchResponse {
    #[serde(default)]
    canceled: bool,
    #[serde(default, deserialize_with = "num")]
    compact_revision: u64,
    #[serde(default)]
    cancel_reason: String,
    #[serde(default)]
    events: Vec<RawEvent>,
}

#[derive(Debug, Default, Deserialize)]
struct RawEvent {
    /// `PUT` is proto3's default, left out of the JSON.
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    kv: RawKv,
}

/// etcd's JSON writes 64-bit numbers as strings.
fn num<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum N {
        S(String),
        U(u64),
    }
    match N::deserialize(d)? {
        N::U(n) => Ok(n),
        N::S(s) => s.parse().map_err(serde::de::Error::custom),
    }
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

#[async_trait]
impl Store for Etcd {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let body = json!({"key": B64.encode(key)});
        let r: RangeResponse = self.call("/v3/kv/range", body, true).await?;
        r.kvs.into_iter().next().map(RawKv::decode).transpose()
    }

    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<KeyValue>>, StoreError> {
        let mut out = Vec::with_capacity(keys.len());
        // Every chunk reads at the first one's revision: one consistent view.
        let mut at: Revision = 0;
        for chunk in keys.chunks(GETS_PER_TXN) {
            let success: Vec<Value> = chunk
                .iter()
                .map(|k| {
                    let mut r = json!({"key": B64.encode(k)});
                    if at > 0 {
                        r["revision"] = json!(at.to_string());
                    }
                    json!({"request_range": r})
                })
                .collect();
            let r: TxnResponse = self
                .call("/v3/kv/txn", json!({"success": success}), true)
                .await?;
            if at == 0 {
                at = r.header.revision;
            }
            if r.responses.len() != chunk.len() {
                return Err(StoreError::Backend(format!(
                    "etcd answered {} of {} reads",
                    r.responses.len(),
                    chunk.len()
                )));
            }
            for resp in r.responses {
                let kv = resp
                    .response_range
                    .and_then(|rr| rr.kvs.into_iter().next())
                    .map(RawKv::decode)
                    .transpose()?;
                out.push(kv);
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
                at = r.header.revision;
            }
            let more = r.more;
            for kv in r.kvs {
                out.push(kv.decode()?);
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
        let compare: Vec<Value> = txn
            .compares
            .iter()
            .map(|c| match c {
                Compare::Absent(key) => json!({
                    "key": B64.encode(key), "target": "CREATE", "create_revision": "0"
                }),
                Compare::ModRevision(key, rev) => json!({
                    "key": B64.encode(key), "target": "MOD", "mod_revision": rev.to_string()
                }),
            })
            .collect();
        let success: Vec<Value> = last_op_per_key(txn.ops)
            .into_iter()
            .map(|op| match op {
                Op::Put { key, value } => json!({"request_put": {
                    "key": B64.encode(key), "value": B64.encode(value)
                }}),
                Op::Delete { key } => json!({"request_delete_range": {"key": B64.encode(key)}}),
            })
            .collect();
        let r: TxnResponse = self
            .call(
                "/v3/kv/txn",
                json!({"compare": compare, "success": success}),
                false,
            )
            .await?;
        Ok(match r.succeeded {
            true => TxnOutcome::Committed(r.header.revision),
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
        let r = self.range_page(&[0], &[0], 1, 0).await;
        // A keys-only count would do; one key at most is as cheap.
        Ok(r?.header.revision)
    }

    fn leases(&self) -> Option<&dyn crate::Leases> {
        Some(self)
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<usize, StoreError> {
        let (start, end) = bounds(prefix);
        let r: DeleteResponse = self
            .call(
                "/v3/kv/deleterange",
                json!({"key": B64.encode(start), "range_end": B64.encode(end)}),
                false,
            )
            .await?;
        Ok(r.deleted as usize)
    }
}

#[derive(Debug, Default, Deserialize)]
struct LeaseResponse {
    #[serde(default, rename = "ID", deserialize_with = "num_i64")]
    id: i64,
    #[serde(default, rename = "TTL", deserialize_with = "num_i64")]
    ttl: i64,
}

#[derive(Debug, Default, Deserialize)]
struct KeepAliveLine {
    #[serde(default)]
    result: Option<LeaseResponse>,
    #[serde(default)]
    error: Option<GatewayError>,
}

/// etcd's JSON writes 64-bit numbers (here: signed lease ids) as strings.
fn num_i64<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum N {
        S(String),
        I(i64),
    }
    match N::deserialize(d)? {
        N::I(n) => Ok(n),
        N::S(s) => s.parse().map_err(serde::de::Error::custom),
    }
}

#[async_trait]
impl crate::Leases for Etcd {
    async fn grant(&self, ttl: Duration) -> Result<crate::LeaseId, StoreError> {
        let secs = ttl.as_secs().max(1);
        let r: LeaseResponse = self
            .call("/v3/lease/grant", json!({"TTL": secs.to_string()}), false)
            .await?;
        if r.id == 0 {
            return Err(StoreError::Backend("etcd granted no lease".into()));
        }
        Ok(r.id)
    }

    async fn keep_alive(&self, lease: crate::LeaseId) -> Result<bool, StoreError> {
        // The gateway's keep-alive stream answers one line per request and ends with it.
        let line: KeepAliveLine = self
            .call(
                "/v3/lease/keepalive",
                json!({"ID": lease.to_string()}),
                true,
            )
            .await?;
        if let Some(e) = line.error {
            return Err(answered("/v3/lease/keepalive", &e.message));
        }
        Ok(line.result.is_some_and(|r| r.ttl > 0))
    }

    async fn revoke(&self, lease: crate::LeaseId) -> Result<(), StoreError> {
        match self
            .call::<Value>("/v3/lease/revoke", json!({"ID": lease.to_string()}), true)
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
        let body = json!({
            "compare": [{"key": B64.encode(key), "target": "CREATE", "create_revision": "0"}],
            "success": [{"request_put": {
                "key": B64.encode(key), "value": B64.encode(value), "lease": lease.to_string()
            }}],
        });
        let r: TxnResponse = self.call("/v3/kv/txn", body, false).await?;
        Ok(r.succeeded.then_some(r.header.revision))
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
        let (key, end) = bounds(prefix);
        let body = json!({"create_request": {
            "key": B64.encode(key),
            "range_end": B64.encode(end),
            "start_revision": (*from + 1).to_string(),
        }});
        let mut req = http::Request::post(format!("{}://{endpoint}/v3/watch", self.inner.scheme))
            .header(http::header::CONTENT_TYPE, "application/json")
            // Cancelled by a member that loses its leader, so a partitioned member's silence
            // is never taken for a quiet store.
            .header("grpc-metadata-hasleader", "true");
        if self.inner.user.is_some() && self.token().is_none() {
            match self.authenticate(endpoint).await {
                Ok(()) => {}
                Err(Login::Unreached(m)) => return Followed::Broken(m),
                // A refused login stays refused: the watcher hears of it.
                Err(Login::Refused(e)) => return Followed::Final(e),
            }
        }
        if let Some(t) = self.token() {
            req = req.header(http::header::AUTHORIZATION, t);
        }
        let Ok(req) = req.body(Full::new(Bytes::from(body.to_string()))) else {
            return Followed::Broken("the watch request".into());
        };
        let resp = match tokio::time::timeout(REQUEST_TIMEOUT, self.inner.client.request(req)).await
        {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return Followed::Broken(e.to_string()),
            Err(_) => return Followed::Broken("no answer".into()),
        };
        if !resp.status().is_success() {
            return Followed::Broken(format!("HTTP {}", resp.status()));
        }
        let mut body = resp.into_body();
        let mut buf: Vec<u8> = Vec::new();
        let mut delivered = false;
        loop {
            let frame = match body.frame().await {
                None => break,
                Some(Err(e)) => {
                    return match delivered {
                        true => Followed::Delivered,
                        false => Followed::Broken(e.to_string()),
                    }
                }
                Some(Ok(f)) => f,
            };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            buf.extend_from_slice(&data);
            while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = buf.drain(..=nl).collect();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let parsed: WatchLine = match serde_json::from_slice(&line) {
                    Ok(p) => p,
                    Err(e) => return Followed::Broken(format!("a watch answer: {e}")),
                };
                if let Some(e) = parsed.error {
                    if e.code == 16 || e.message.contains("auth") {
                        *self.inner.token.lock().unwrap_or_else(|e| e.into_inner()) = None;
                    }
                    return Followed::Broken(e.message);
                }
                let Some(w) = parsed.result else { continue };
                if w.canceled {
                    if w.compact_revision > 0 {
                        return Followed::Final(StoreError::Compacted {
                            requested: *from + 1,
                            oldest: w.compact_revision,
                        });
                    }
                    return match delivered {
                        true => Followed::Delivered,
                        false => Followed::Broken(format!("cancelled: {}", w.cancel_reason)),
                    };
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
        match delivered {
            true => Followed::Delivered,
            false => Followed::Broken("the stream ended".into()),
        }
    }
}

/// etcd's events (one response may hold several revisions) as one batch per revision.
fn batches(events: Vec<RawEvent>) -> Result<Vec<Batch>, StoreError> {
    let mut out: Vec<Batch> = Vec::new();
    for e in events {
        let kind = match e.kind.as_deref() {
            Some("DELETE") => EventKind::Delete,
            _ => EventKind::Put,
        };
        let mut kv = e.kv.decode()?;
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
        let line = r#"{"result":{"header":{"revision":"4"},"events":[
            {"kv":{"key":"YQ==","create_revision":"2","mod_revision":"2","version":"1","value":"MQ=="}},
            {"kv":{"key":"Yg==","create_revision":"2","mod_revision":"2","version":"1","value":"Mg=="}},
            {"type":"DELETE","kv":{"key":"YQ==","mod_revision":"4"}}]}}"#;
        let w: WatchLine = serde_json::from_str(line).unwrap();
        let b = batches(w.result.unwrap().events).unwrap();
        assert_eq!(b.len(), 2);
        assert_eq!((b[0].revision, b[0].events.len()), (2, 2));
        assert_eq!(b[1].events[0].kind, EventKind::Delete);
        assert_eq!(b[1].events[0].kv.key, "a");
        assert_eq!(b[1].revision, 4);
    }
}
