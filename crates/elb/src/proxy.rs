//! The listeners on this host and the health checkers behind them.
//!
//! [`Proxy::apply`] takes a whole [`Config`]: it binds the ports of new listeners, closes the
//! ports of removed ones, starts a health checker per new target and stops those of targets
//! gone, then swaps the routing table every connection reads. A target's health and in-flight
//! count live beside the table (keyed by group, id and port), so a new table keeps them.
//! Connections already accepted finish on the table they started with.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::JoinHandle;

use crate::balance::{self, Candidate};
use crate::config::{Action, Config, Group, HealthCheck, Listener, Protocol, Target};
use crate::health::{self, Matcher, Probe, Reason, State, Tracker};
use crate::rules::{self, RequestFacts};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Every answer's body: a target's, streamed, or the proxy's own.
pub type Body = BoxBody<Bytes, BoxError>;

/// How long a connection to a target may take before the request fails with 504.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client connection may wait to send its next request head.
const CLIENT_IDLE: Duration = Duration::from_secs(60);
/// The cookie of a target group's `lb_cookie` stickiness (ALB's name for it).
const STICKY_COOKIE: &str = "AWSALB";

/// Where listeners bind.
#[derive(Debug, Clone)]
pub struct Options {
    /// The address every listener binds (its port is the listener's).
    pub address: IpAddr,
    /// The ports listeners may use (`--lb-ports`); `None`: any.
    pub ports: Option<(u16, u16)>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            address: IpAddr::from([0, 0, 0, 0]),
            ports: None,
        }
    }
}

/// Why a listener cannot listen.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "port {port} is outside the ports this server's load balancers may use ({low}-{high})"
    )]
    PortOutOfRange { port: u16, low: u16, high: u16 },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct TargetKey {
    group: String,
    id: String,
    port: u16,
}

/// What outlives a routing table: a target's in-flight requests, its health (the tracker for
/// the API, two atomics for the hot path) and its idle keep-alive connections.
#[derive(Debug, Default)]
struct TargetState {
    in_flight: AtomicUsize,
    tracker: Mutex<Option<Tracker>>,
    healthy: AtomicBool,
    /// When it last became healthy, seconds since the epoch as `f64` bits.
    healthy_since: AtomicU64,
    idle: Mutex<Vec<SendRequest<Upload>>>,
    /// The registration its health belongs to (`f64` bits of `registered_at`).
    registered_at: AtomicU64,
}

/// How many idle connections a target keeps.
const MAX_IDLE: usize = 256;

impl TargetState {
    /// A new registration: no health known yet.
    fn reset(&self, registered_at: f64) {
        *self.tracker.lock().unwrap_or_else(|e| e.into_inner()) = None;
        self.healthy.store(false, Ordering::Relaxed);
        self.registered_at
            .store(registered_at.to_bits(), Ordering::Relaxed);
    }

    fn healthy(&self) -> (bool, Option<f64>) {
        if self.healthy.load(Ordering::Relaxed) {
            (
                true,
                Some(f64::from_bits(self.healthy_since.load(Ordering::Relaxed))),
            )
        } else {
            (false, None)
        }
    }

    /// Records a health check's outcome; whether the state changed.
    fn observe(&self, probe: &Probe, hc: &HealthCheck) -> bool {
        let mut t = self.tracker.lock().unwrap_or_else(|e| e.into_inner());
        let t = t.get_or_insert_with(Tracker::new);
        let before = t.state();
        t.observe(probe, hc.healthy_threshold, hc.unhealthy_threshold, now());
        let healthy = t.state() == State::Healthy;
        if let Some(since) = t.healthy_since() {
            self.healthy_since.store(since.to_bits(), Ordering::Relaxed);
        }
        self.healthy.store(healthy, Ordering::Relaxed);
        t.state() != before
    }

    /// A connection to the target: an idle one that is still open, or a new one.
    async fn connection(&self, addr: SocketAddr) -> Result<SendRequest<Upload>, String> {
        loop {
            let idle = lock(&self.idle).pop();
            let Some(mut sender) = idle else { break };
            if sender.is_closed() {
                continue;
            }
            if sender.is_ready() {
                return Ok(sender);
            }
            // A pooled connection is idle; one that is not ready soon is not reused.
            let ready = tokio::time::timeout(Duration::from_millis(100), sender.ready()).await;
            if matches!(ready, Ok(Ok(()))) {
                return Ok(sender);
            }
        }
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| format!("connecting to {addr} timed out"))?
            .map_err(|e| format!("connecting to {addr}: {e}"))?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) = hyper::client::conn::http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP handshake with {addr}: {e}"))?;
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        Ok(sender)
    }

    /// Keeps a connection whose exchange ended for the next request.
    fn give_back(&self, sender: SendRequest<Upload>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = lock(&self.idle);
        if idle.len() < MAX_IDLE {
            idle.push(sender);
        }
    }
}

/// A client's request body on its way to a target; `sent` once it has all been read, so a
/// connection goes back to the pool only when its request, too, has ended.
struct Upload {
    inner: Incoming,
    /// `None`: there was no body to send.
    sent: Option<Arc<AtomicBool>>,
}

impl Upload {
    fn new(inner: Incoming) -> Self {
        let sent =
            (!hyper::body::Body::is_end_stream(&inner)).then(|| Arc::new(AtomicBool::new(false)));
        Upload { inner, sent }
    }
}

impl hyper::body::Body for Upload {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, hyper::Error>>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        let done = match &polled {
            std::task::Poll::Ready(None) => true,
            std::task::Poll::Ready(Some(Ok(_))) => self.inner.is_end_stream(),
            _ => false,
        };
        if done {
            if let Some(sent) = &self.sent {
                sent.store(true, Ordering::Release);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// A connection to give back, its target, and its request's "body sent" flag (`None`: no
/// body).
type Pooled = (
    SendRequest<Upload>,
    Arc<TargetState>,
    Option<Arc<AtomicBool>>,
);

/// A target's response body on its way to the client: counted in flight until it ends (or
/// is dropped), and its connection given back to the target's pool once both it and the
/// request's body have ended.
struct Tracked {
    inner: Incoming,
    pooled: Option<Pooled>,
    _in_flight: InFlight,
}

impl Tracked {
    fn ended(&mut self) {
        if let Some((sender, state, sent)) = self.pooled.take() {
            if sent.is_none_or(|s| s.load(Ordering::Acquire)) {
                state.give_back(sender);
            }
        }
    }
}

impl hyper::body::Body for Tracked {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, hyper::Error>>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            std::task::Poll::Ready(None) => self.ended(),
            std::task::Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => self.ended(),
            std::task::Poll::Ready(Some(Err(_))) => self.pooled = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// Counts a request (or TCP connection) in flight to a target while it lives.
struct InFlight(Arc<TargetState>);

impl InFlight {
    fn new(s: Arc<TargetState>) -> Self {
        s.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(s)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A target's state and the health checker that feeds it.
type Checked = (Arc<TargetState>, JoinHandle<()>);

#[derive(Debug)]
struct GroupRt {
    group: Group,
    states: Vec<Arc<TargetState>>,
    ticket: Arc<AtomicU64>,
    in_use: bool,
}

#[derive(Debug, Default)]
struct Table {
    listeners: HashMap<u16, Listener>,
    groups: HashMap<String, GroupRt>,
}

#[derive(Debug)]
struct Bound {
    arn: String,
    protocol: Protocol,
    accept: JoinHandle<()>,
}

#[derive(Debug)]
struct Inner {
    options: Options,
    table: RwLock<Arc<Table>>,
    listeners: Mutex<HashMap<u16, Bound>>,
    targets: Mutex<HashMap<TargetKey, Checked>>,
    tickets: Mutex<HashMap<String, Arc<AtomicU64>>>,
    /// Turns for weighted forwards' choice of group.
    forwards: AtomicU64,
    /// Told whenever a target's health state changes.
    health_changed: tokio::sync::Notify,
    /// One [`Proxy::apply`] at a time, so targets, table and listeners come from one
    /// configuration.
    applying: Mutex<()>,
}

/// The data plane: cheap to clone, one per server.
#[derive(Debug, Clone)]
pub struct Proxy {
    inner: Arc<Inner>,
}

impl Proxy {
    /// A proxy with nothing configured.
    pub fn new(options: Options) -> Self {
        Proxy {
            inner: Arc::new(Inner {
                options,
                table: RwLock::default(),
                listeners: Mutex::default(),
                targets: Mutex::default(),
                tickets: Mutex::default(),
                forwards: AtomicU64::new(0),
                health_changed: tokio::sync::Notify::new(),
                applying: Mutex::new(()),
            }),
        }
    }

    /// Whether a listener could use `port`: within `--lb-ports`, and free unless one of this
    /// proxy's own listeners holds it.
    pub fn check_port(&self, port: u16) -> Result<(), Error> {
        self.in_range(port)?;
        let ours = lock(&self.inner.listeners).contains_key(&port);
        if ours {
            return Ok(());
        }
        bind(SocketAddr::new(self.inner.options.address, port)).map(drop)
    }

    fn in_range(&self, port: u16) -> Result<(), Error> {
        match self.inner.options.ports {
            Some((low, high)) if port < low || port > high => {
                Err(Error::PortOutOfRange { port, low, high })
            }
            _ => Ok(()),
        }
    }

    /// Makes the data plane what `config` says. Must run inside a Tokio runtime. Returns the
    /// listeners that could not listen (each keeps trying at the next apply).
    pub fn apply(&self, config: Config) -> Vec<(String, Error)> {
        let inner = &self.inner;
        let _one_at_a_time = lock(&inner.applying);
        // Targets: keep the state of those still configured, start checkers for new ones.
        let mut states: HashMap<TargetKey, Arc<TargetState>> = HashMap::new();
        {
            let mut targets = lock(&inner.targets);
            let mut live = HashSet::new();
            for g in config.groups.values() {
                for t in &g.targets {
                    let key = TargetKey {
                        group: g.arn.clone(),
                        id: t.id.clone(),
                        port: t.port,
                    };
                    live.insert(key.clone());
                    // Registered again (after a deregistration): its health starts over.
                    if let Some((state, _)) = targets.get(&key) {
                        if state.registered_at.load(Ordering::Relaxed) != t.registered_at.to_bits()
                        {
                            state.reset(t.registered_at);
                        }
                    }
                    let entry = targets.entry(key.clone()).or_insert_with(|| {
                        let state = Arc::new(TargetState::default());
                        state.reset(t.registered_at);
                        let checker = tokio::spawn(check_loop(
                            Arc::downgrade(&self.inner),
                            key.clone(),
                            state.clone(),
                        ));
                        (state, checker)
                    });
                    states.insert(key, entry.0.clone());
                }
            }
            targets.retain(|k, (_, checker)| {
                let keep = live.contains(k);
                if !keep {
                    checker.abort();
                }
                keep
            });
        }
        let used: HashSet<&str> = config
            .listeners
            .iter()
            .flat_map(|l| l.rules.iter())
            .flat_map(|r| match &r.action {
                Action::Forward { groups, .. } => groups.iter().map(|(g, _)| g.as_str()).collect(),
                _ => Vec::new(),
            })
            .collect();
        let mut tickets = lock(&inner.tickets);
        tickets.retain(|arn, _| config.groups.contains_key(arn));
        let groups = config
            .groups
            .iter()
            .map(|(arn, g)| {
                let states = g
                    .targets
                    .iter()
                    .map(|t| {
                        states
                            .get(&TargetKey {
                                group: arn.clone(),
                                id: t.id.clone(),
                                port: t.port,
                            })
                            .cloned()
                            .unwrap_or_default()
                    })
                    .collect();
                let rt = GroupRt {
                    group: g.clone(),
                    states,
                    ticket: tickets.entry(arn.clone()).or_default().clone(),
                    in_use: used.contains(arn.as_str()),
                };
                (arn.clone(), rt)
            })
            .collect();
        drop(tickets);
        let table = Table {
            listeners: config
                .listeners
                .iter()
                .map(|l| (l.port, l.clone()))
                .collect(),
            groups,
        };
        *inner.table.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(table);

        // Listeners: close removed or changed ones, bind new ones.
        let mut failed = Vec::new();
        let mut bound = lock(&inner.listeners);
        bound.retain(|port, b| {
            let keep = config
                .listeners
                .iter()
                .any(|l| l.port == *port && l.arn == b.arn && l.protocol == b.protocol);
            if !keep {
                b.accept.abort();
                tracing::info!(port, listener = b.arn, "listener closed");
            }
            keep
        });
        for l in &config.listeners {
            if bound.contains_key(&l.port) {
                continue;
            }
            let addr = SocketAddr::new(inner.options.address, l.port);
            let listener = match self.in_range(l.port).and_then(|()| bind(addr)) {
                Ok(listener) => listener,
                Err(e) => {
                    tracing::warn!(listener = l.arn, error = %e, "listener cannot listen");
                    failed.push((l.arn.clone(), e));
                    continue;
                }
            };
            let weak = Arc::downgrade(&self.inner);
            let accept = match l.protocol {
                Protocol::Http => tokio::spawn(serve_http(weak, listener, l.port)),
                Protocol::Tcp => tokio::spawn(serve_tcp(weak, listener, l.port)),
            };
            tracing::info!(port = l.port, listener = l.arn, "listener listening");
            bound.insert(
                l.port,
                Bound {
                    arn: l.arn.clone(),
                    protocol: l.protocol,
                    accept,
                },
            );
        }
        failed
    }

    /// What DescribeTargetHealth shows of a target of `group`.
    pub fn target_health(&self, group: &str, id: &str, port: u16) -> (State, Option<Reason>) {
        let table = self.table();
        let Some(g) = table.groups.get(group) else {
            return (State::Unavailable, Some(Reason::NotRegistered));
        };
        let Some(i) = g
            .group
            .targets
            .iter()
            .position(|t| t.id == id && t.port == port)
        else {
            return (State::Unavailable, Some(Reason::NotRegistered));
        };
        let t = &g.group.targets[i];
        let tracker = g.states[i]
            .tracker
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        health::view(
            tracker.as_ref(),
            t.deregistered_at.is_some(),
            g.group.health.enabled,
            g.in_use,
        )
    }

    /// Requests (or TCP connections) in flight to a target of `group`.
    pub fn in_flight(&self, group: &str, id: &str, port: u16) -> usize {
        lock(&self.inner.targets)
            .get(&TargetKey {
                group: group.to_string(),
                id: id.to_string(),
                port,
            })
            .map(|(s, _)| s.in_flight.load(Ordering::SeqCst))
            .unwrap_or(0)
    }

    /// Closes every listener and stops every health checker (a server shutting down).
    /// Connections already accepted finish on their own.
    pub fn close(&self) {
        for (_, b) in lock(&self.inner.listeners).drain() {
            b.accept.abort();
        }
        for (_, (_, checker)) in lock(&self.inner.targets).drain() {
            checker.abort();
        }
    }

    /// Completes when a target's health state has changed since the last call.
    pub async fn health_changed(&self) {
        self.inner.health_changed.notified().await
    }

    /// The ports listening now.
    pub fn listening(&self) -> Vec<u16> {
        let mut ports: Vec<u16> = lock(&self.inner.listeners).keys().copied().collect();
        ports.sort_unstable();
        ports
    }

    fn table(&self) -> Arc<Table> {
        self.inner.table()
    }
}

impl Inner {
    fn table(&self) -> Arc<Table> {
        self.table.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        for b in lock(&self.listeners).values() {
            b.accept.abort();
        }
        for (_, checker) in lock(&self.targets).values() {
            checker.abort();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn bind(addr: SocketAddr) -> Result<TcpListener, Error> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    };
    let err = |source| Error::Bind { addr, source };
    let socket = socket.map_err(err)?;
    socket.set_reuseaddr(true).map_err(err)?;
    socket.bind(addr).map_err(err)?;
    socket.listen(1024).map_err(err)
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

// ---- HTTP ----

async fn serve_http(inner: std::sync::Weak<Inner>, listener: TcpListener, port: u16) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::debug!(port, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let Some(inner) = inner.upgrade() else { return };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let inner = inner.clone();
                async move { Ok::<_, Infallible>(route(&inner, req, peer, port).await) }
            });
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            // A client that sends no (complete) request head within ELB's idle timeout is
            // disconnected, idle keep-alive connections included.
            builder
                .http1()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(CLIENT_IDLE);
            if let Err(e) = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                .await
            {
                tracing::debug!(port, error = %e, "client connection ended with an error");
            }
        });
    }
}

fn own(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()).map_err(|e| match e {}).boxed());
    *r.status_mut() = status;
    if let Ok(v) = HeaderValue::from_str(content_type) {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r.headers_mut()
        .insert(header::SERVER, HeaderValue::from_static("awselb/2.0"));
    r
}

/// ELB's own error pages.
fn error_page(status: StatusCode) -> Response<Body> {
    let text = format!(
        "<html>\r\n<head><title>{0}</title></head>\r\n<body>\r\n<center><h1>{0}</h1></center>\r\n</body>\r\n</html>\r\n",
        status
    );
    own(status, "text/html", text)
}

enum Decision {
    Respond(Response<Body>),
    Forward(String),
}

fn decide(listener: &Listener, req: &Request<Incoming>, peer: SocketAddr, ticket: u64) -> Decision {
    // Headers are gathered only for listeners whose rules look at them.
    let needs_headers = listener.rules.iter().any(|r| {
        r.conditions
            .iter()
            .any(|c| matches!(c, crate::config::Condition::HttpHeader { .. }))
    });
    let headers: Vec<(&str, &str)> = if needs_headers {
        req.headers()
            .iter()
            .filter_map(|(k, v)| Some((k.as_str(), v.to_str().ok()?)))
            .collect()
    } else {
        Vec::new()
    };
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()));
    let facts = RequestFacts {
        method: req.method().as_str(),
        host,
        path: req.uri().path(),
        query: req.uri().query(),
        headers: &headers,
        client: peer.ip(),
    };
    let Some(rule) = rules::first_match(&listener.rules, &facts) else {
        return Decision::Respond(error_page(StatusCode::SERVICE_UNAVAILABLE));
    };
    match &rule.action {
        Action::FixedResponse {
            status,
            content_type,
            body,
        } => Decision::Respond(own(
            StatusCode::from_u16(*status).unwrap_or(StatusCode::OK),
            content_type
                .as_deref()
                .unwrap_or("text/plain; charset=utf-8"),
            body.clone().unwrap_or_default(),
        )),
        Action::Redirect {
            protocol,
            host,
            port,
            path,
            query,
            status,
        } => {
            let location = rules::redirect_location(
                protocol,
                host,
                port,
                path,
                query,
                &facts,
                "HTTP",
                listener.port,
            );
            let mut r = own(
                StatusCode::from_u16(*status).unwrap_or(StatusCode::FOUND),
                "text/html",
                Bytes::new(),
            );
            if let Ok(v) = HeaderValue::from_str(&location) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            Decision::Respond(r)
        }
        Action::Forward { groups, .. } => match balance::pick_group(groups, ticket) {
            Some(i) => Decision::Forward(groups[i].0.clone()),
            None => Decision::Respond(error_page(StatusCode::SERVICE_UNAVAILABLE)),
        },
    }
}

/// The targets of `g` as the balancer sees them.
fn candidates(g: &GroupRt) -> Vec<Candidate> {
    g.group
        .targets
        .iter()
        .zip(&g.states)
        .enumerate()
        .map(|(index, (t, s))| {
            let (healthy, healthy_since) = s.healthy();
            Candidate {
                index,
                healthy: healthy || !g.group.health.enabled,
                in_flight: s.in_flight.load(Ordering::Relaxed),
                healthy_since,
                draining: t.deregistered_at.is_some(),
            }
        })
        .collect()
}

fn choose(g: &GroupRt, skip: Option<usize>) -> Option<usize> {
    let mut cands = candidates(g);
    if let Some(skip) = skip {
        if cands.len() > 1 {
            cands.retain(|c| c.index != skip);
        }
    }
    let ticket = g.ticket.fetch_add(1, Ordering::Relaxed);
    balance::pick(g.group.algorithm, &cands, g.group.slow_start, now(), ticket)
}

async fn route(
    inner: &Arc<Inner>,
    req: Request<Incoming>,
    peer: SocketAddr,
    port: u16,
) -> Response<Body> {
    let table = inner.table();
    let Some(listener) = table.listeners.get(&port) else {
        return error_page(StatusCode::SERVICE_UNAVAILABLE);
    };
    let ticket = inner.forwards.fetch_add(1, Ordering::Relaxed);
    let group = match decide(listener, &req, peer, ticket) {
        Decision::Respond(r) => return r,
        Decision::Forward(g) => g,
    };
    let Some(g) = table.groups.get(&group) else {
        return error_page(StatusCode::SERVICE_UNAVAILABLE);
    };
    forward(g, req, peer, port, listener.idle_timeout).await
}

/// The target a request's stickiness cookie names, if it may still take requests.
fn sticky_target(g: &GroupRt, req: &Request<Incoming>) -> Option<usize> {
    let value = req
        .headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(STICKY_COOKIE)?.strip_prefix('='))?;
    let cands = candidates(g);
    let eligible = balance::eligible(&cands);
    eligible
        .into_iter()
        .find(|i| sticky_value(&g.group.targets[*i]) == value)
}

/// A target's cookie value: its address, which names it and no secret.
fn sticky_value(t: &Target) -> String {
    t.addr.to_string().replace(['.', ':', '[', ']'], "-")
}

fn is_upgrade(req: &Request<Incoming>) -> bool {
    req.headers().contains_key(header::UPGRADE)
        && req
            .headers()
            .get(header::CONNECTION)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.to_ascii_lowercase().contains("upgrade"))
}

const HOP_BY_HOP: [&str; 6] = [
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "proxy-authorization",
];

async fn forward(
    g: &GroupRt,
    mut req: Request<Incoming>,
    peer: SocketAddr,
    port: u16,
    idle_timeout: Duration,
) -> Response<Body> {
    let sticky = g.group.stickiness.map(|d| (sticky_target(g, &req), d));
    let Some(mut pick) = sticky.and_then(|(t, _)| t).or_else(|| choose(g, None)) else {
        return error_page(StatusCode::SERVICE_UNAVAILABLE);
    };
    let upgrade = is_upgrade(&req);
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    // The request, ready for any target: hop-by-hop headers out, X-Forwarded-* in, the URI
    // in origin form.
    let (mut parts, body) = req.into_parts();
    for h in HOP_BY_HOP {
        parts.headers.remove(h);
    }
    if !upgrade {
        parts.headers.remove(header::CONNECTION);
        parts.headers.remove(header::UPGRADE);
    }
    if !parts.headers.contains_key(header::HOST) {
        if let Some(a) = parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        {
            parts.headers.insert(header::HOST, a);
        }
    }
    if parts.uri.scheme().is_some() || parts.uri.authority().is_some() {
        let mut origin = http::uri::Parts::default();
        origin.path_and_query = parts.uri.path_and_query().cloned();
        if let Ok(uri) = http::Uri::from_parts(origin) {
            parts.uri = uri;
        }
    }
    let xff = match parts.headers.get("x-forwarded-for") {
        Some(prior) => HeaderValue::from_str(&format!(
            "{}, {}",
            prior.to_str().unwrap_or_default(),
            peer.ip()
        )),
        None => HeaderValue::from_str(&peer.ip().to_string()),
    };
    if let Ok(v) = xff {
        parts.headers.insert("x-forwarded-for", v);
    }
    parts
        .headers
        .insert("x-forwarded-proto", HeaderValue::from_static("http"));
    parts
        .headers
        .insert("x-forwarded-port", HeaderValue::from(port));
    let version = parts.version;
    parts.version = http::Version::HTTP_11;
    let upload = Upload::new(body);
    let uploaded = upload.sent.clone();
    let mut req = Some(Request::from_parts(parts, upload));
    // A request is sent at most once: another connection (or target) is tried only when the
    // connection could not be made or closed before the request was written.
    for _ in 0..3 {
        let target = &g.group.targets[pick];
        let state = g.states[pick].clone();
        let in_flight = InFlight::new(state.clone());
        let mut sender = match state.connection(target.addr).await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(target = %target.addr, error = e, "target unreachable");
                match choose(g, Some(pick)) {
                    Some(next) => {
                        pick = next;
                        continue;
                    }
                    None => return error_page(StatusCode::BAD_GATEWAY),
                }
            }
        };
        let Some(out) = req.take() else { break };
        let sent = tokio::time::timeout(idle_timeout, sender.try_send_request(out)).await;
        let mut resp = match sent {
            Err(_) => return error_page(StatusCode::GATEWAY_TIMEOUT),
            Ok(Ok(resp)) => resp,
            Ok(Err(mut e)) => match e.take_message() {
                // Never written: safe to send on another connection.
                Some(unsent) => {
                    req = Some(unsent);
                    continue;
                }
                None => {
                    tracing::debug!(target = %target.addr, error = %e.into_error(), "target request failed");
                    return error_page(StatusCode::BAD_GATEWAY);
                }
            },
        };
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            if let Some(client_upgrade) = client_upgrade {
                let target_upgrade = hyper::upgrade::on(&mut resp);
                tokio::spawn(async move {
                    let _in_flight = in_flight;
                    if let (Ok(a), Ok(b)) = (client_upgrade.await, target_upgrade.await) {
                        let (mut a, mut b) = (TokioIo::new(a), TokioIo::new(b));
                        let _ = tokio::io::copy_bidirectional(&mut a, &mut b).await;
                    }
                });
                return resp.map(|b| b.map_err(BoxError::from).boxed());
            }
        }
        for h in HOP_BY_HOP {
            resp.headers_mut().remove(h);
        }
        // The client's own version, whatever the target spoke.
        *resp.version_mut() = version;
        // A sticky group names the target in a cookie the client sends back.
        if let Some((_, duration)) = sticky {
            let cookie = format!(
                "{STICKY_COOKIE}={}; Max-Age={}; Path=/",
                sticky_value(target),
                duration.as_secs()
            );
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                resp.headers_mut().append(header::SET_COOKIE, v);
            }
        }
        let keep = !resp
            .headers()
            .get(header::CONNECTION)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
        resp.headers_mut().remove(header::CONNECTION);
        let pooled = keep.then_some((sender, state, uploaded.clone()));
        return resp.map(|body| {
            let mut tracked = Tracked {
                inner: body,
                pooled,
                _in_flight: in_flight,
            };
            if hyper::body::Body::is_end_stream(&tracked.inner) {
                tracked.ended();
            }
            tracked.map_err(BoxError::from).boxed()
        });
    }
    error_page(StatusCode::BAD_GATEWAY)
}

// ---- TCP ----

async fn serve_tcp(inner: std::sync::Weak<Inner>, listener: TcpListener, port: u16) {
    loop {
        let (mut client, _peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::debug!(port, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let Some(inner) = inner.upgrade() else { return };
        tokio::spawn(async move {
            let table = inner.table();
            let group = table.listeners.get(&port).and_then(|l| {
                l.rules.iter().find_map(|r| match &r.action {
                    Action::Forward { groups, .. } => {
                        let ticket = inner.forwards.fetch_add(1, Ordering::Relaxed);
                        balance::pick_group(groups, ticket).map(|i| groups[i].0.clone())
                    }
                    _ => None,
                })
            });
            let Some(g) = group.and_then(|g| table.groups.get(&g)) else {
                return;
            };
            let mut skip = None;
            for _ in 0..2 {
                let Some(i) = choose(g, skip) else { return };
                let _guard = InFlight::new(g.states[i].clone());
                let addr = g.group.targets[i].addr;
                match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
                    Ok(Ok(mut upstream)) => {
                        let _ = upstream.set_nodelay(true);
                        let _ = client.set_nodelay(true);
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                        return;
                    }
                    _ => skip = Some(i),
                }
            }
        });
    }
}

// ---- health checks ----

/// Checks one target every interval until it leaves the configuration (the checker is
/// aborted then) or the proxy is dropped.
async fn check_loop(inner: std::sync::Weak<Inner>, key: TargetKey, state: Arc<TargetState>) {
    // A small spread so targets registered together are not all checked at once.
    let jitter = Duration::from_millis(rand::random::<u64>() % 200);
    tokio::time::sleep(jitter).await;
    loop {
        let Some(inner_now) = inner.upgrade() else {
            return;
        };
        let current = lookup(&inner_now.table(), &key);
        drop(inner_now);
        // Not in the table (yet, or any more: an apply then aborts this loop): wait.
        let Some((hc, target)) = current else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        if hc.enabled && target.deregistered_at.is_none() {
            let probe = probe(&hc, target.addr).await;
            if state.observe(&probe, &hc) {
                if let Some(inner) = inner.upgrade() {
                    inner.health_changed.notify_one();
                }
            }
        }
        tokio::time::sleep(hc.interval.max(Duration::from_millis(100))).await;
    }
}

fn lookup(table: &Table, key: &TargetKey) -> Option<(HealthCheck, Target)> {
    let g = table.groups.get(&key.group)?;
    let t = g
        .group
        .targets
        .iter()
        .find(|t| t.id == key.id && t.port == key.port)?;
    Some((g.group.health.clone(), t.clone()))
}

/// One health check: a TCP connection, or an HTTP GET of the path whose status the matcher
/// accepts, within the timeout.
pub async fn probe(hc: &HealthCheck, target: SocketAddr) -> Probe {
    let addr = SocketAddr::new(target.ip(), hc.port.unwrap_or(target.port()));
    let check = async {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| Probe::Failed(e.to_string()))?;
        if hc.protocol == Protocol::Tcp {
            return Ok(Probe::Ok);
        }
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| Probe::Failed(e.to_string()))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let req = Request::get(hc.path.as_str())
            .header(header::HOST, addr.to_string())
            .header(header::USER_AGENT, "ELB-HealthChecker/2.0")
            .header(header::CONNECTION, "close")
            .body(Empty::<Bytes>::new())
            .map_err(|e| Probe::Failed(e.to_string()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| Probe::Failed(e.to_string()))?;
        let code = resp.status().as_u16();
        let ok = Matcher::parse(&hc.matcher)
            .map(|m| m.contains(code))
            .unwrap_or(code == 200);
        Ok::<_, Probe>(if ok { Probe::Ok } else { Probe::Code(code) })
    };
    match tokio::time::timeout(hc.timeout, check).await {
        Err(_) => Probe::Timeout,
        Ok(Ok(p)) | Ok(Err(p)) => p,
    }
}
