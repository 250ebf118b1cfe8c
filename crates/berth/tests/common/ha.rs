//! What the tests of several servers share: `berth server` processes on one etcd, calls to
//! them that survive a dead server, a TCP proxy the test can cut (a partition), simulated
//! agents that speak the agent protocol to any server, and a checker that records every
//! acknowledged write and every task an agent started, and gives its verdict.

use super::process::{spawn, Proc};
use berth_agent_proto as proto;
use berth_store::{Etcd, Store};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

/// A signed ECS call to a server process, checked against botocore's model.
pub async fn call(p: &Proc, op: &str, body: Value) -> super::Answer {
    let a = super::signed_call(
        &p.endpoint,
        op,
        &body.to_string(),
        &p.ak,
        &p.sk,
        SystemTime::now(),
    )
    .await;
    super::contract::check_answer(op, &a);
    a
}

/// A call that must succeed: its answer.
pub async fn ok(p: &Proc, op: &str, body: Value) -> Value {
    let a = call(p, op, body).await;
    assert_eq!(a.status, 200, "{op} on {}: {}", p.endpoint, a.body);
    a.body
}

/// Where to reach a server, and with which key.
#[derive(Debug, Clone)]
pub struct Node {
    pub endpoint: String,
    pub ak: String,
    pub sk: String,
}

impl From<&Proc> for Node {
    fn from(p: &Proc) -> Self {
        Node {
            endpoint: p.endpoint.clone(),
            ak: p.ak.clone(),
            sk: p.sk.clone(),
        }
    }
}

fn http() -> hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    http_body_util::Full<bytes::Bytes>,
> {
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http()
}

/// A signed POST of `body` to `path` with `headers`; `None` when the server cannot be
/// reached or does not answer within 10 s.
async fn post(
    endpoint: &str,
    path: &str,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
) -> Option<(u16, Value)> {
    use http_body_util::BodyExt;
    let mut req = http::Request::post(format!("{endpoint}{path}"));
    for (k, v) in headers {
        if k != "host" {
            req = req.header(k, v);
        }
    }
    let req = req
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .ok()?;
    let exchange = async {
        let resp = http().request(req).await.ok()?;
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await.ok()?.to_bytes();
        Some((
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        ))
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .ok()?
}

/// An ECS call that may find its server dead: `None` then.
pub async fn try_call(n: &Node, op: &str, body: &Value) -> Option<(u16, Value)> {
    let body = body.to_string();
    let headers = berth_api::sigv4::ecs_request_headers(
        &berth_api::sigv4::SigningKey {
            access_key: &n.ak,
            secret: &n.sk,
            region: "us-east-1",
            service: "ecs",
        },
        &n.endpoint,
        op,
        body.as_bytes(),
        SystemTime::now(),
    )
    .ok()?;
    post(&n.endpoint, "/", headers, body.into_bytes()).await
}

/// `n` `berth server` processes, server `i` on the etcd at `urls[i]`, with a lease of `ttl`
/// seconds and agents gone after `agent_timeout` seconds.
pub fn servers(dir: &std::path::Path, urls: &[String], ttl: u64, agent_timeout: u64) -> Vec<Proc> {
    (0..urls.len())
        .map(|i| server(dir, i, &urls[i], ttl, agent_timeout))
        .collect()
}

/// Server `i` (its data in `dir/server{i}`: a restart finds it again).
pub fn server(dir: &std::path::Path, i: usize, url: &str, ttl: u64, agent_timeout: u64) -> Proc {
    spawn(
        &[
            "server",
            "--listen",
            "127.0.0.1:0",
            "--store",
            url,
            "--leader-ttl",
            &ttl.to_string(),
            "--agent-timeout",
            &agent_timeout.to_string(),
            "--lb-address",
            "127.0.0.1",
            "--housekeeping-interval",
            "2",
        ],
        &dir.join(format!("server{i}")),
    )
}

/// Which server holds the leader key: its endpoint's `host:port`.
pub async fn leader(etcd: &Etcd) -> Option<String> {
    let kv = etcd.get("leader").await.ok()??;
    let v = String::from_utf8(kv.value).ok()?;
    v.split(' ').next().map(str::to_string)
}

/// The index of the server that leads, once one does (within `within`).
pub async fn wait_leader(etcd: &Etcd, servers: &[Proc], within: Duration) -> usize {
    let deadline = Instant::now() + within;
    loop {
        if let Some(l) = leader(etcd).await {
            if let Some(i) = servers.iter().position(|p| p.endpoint.ends_with(&l)) {
                return i;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no server took the lead within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `check` every 200 ms until it holds, for at most `within`; panics with `what`.
pub async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let deadline = Instant::now() + within;
    loop {
        match check().await {
            Ok(()) => return,
            Err(e) => assert!(Instant::now() < deadline, "{what} within {within:?}: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The registration token of `cluster`, as `berth join-token` asks for it.
pub async fn join_token(n: &Node, cluster: &str) -> String {
    let got = agent_post(
        n,
        berth_control::http::JOIN_TOKEN_PATH,
        &json!({ "cluster": cluster }),
        Some((&n.ak, &n.sk)),
    )
    .await;
    match got {
        Some((200, v)) => v["token"].as_str().unwrap().to_string(),
        other => panic!("join-token on {}: {other:?}", n.endpoint),
    }
}

// ---- a partition: a TCP proxy the test cuts and heals ----

/// Forwards connections on a loopback port to `target`. Cut, it forwards nothing in either
/// direction and answers no new connection (bytes wait, as on a network that drops packets);
/// healed, it carries on where it stopped.
pub struct Proxy {
    pub addr: SocketAddr,
    cut: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut cut: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if cut.wait_for(|c| !*c).await.is_err() {
            return;
        }
        let n = tokio::select! {
            r = from.read(&mut buf) => match r {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            },
            _ = cut.changed() => continue,
        };
        if cut.wait_for(|c| !*c).await.is_err() || to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
    let _ = to.shutdown().await;
}

impl Proxy {
    pub async fn start(target: SocketAddr) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (cut, rx) = watch::channel(false);
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((inbound, _)) = listener.accept().await else {
                    return;
                };
                let rx = rx.clone();
                conns.spawn(async move {
                    let mut wait = rx.clone();
                    if wait.wait_for(|c| !*c).await.is_err() {
                        return;
                    }
                    let Ok(outbound) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    let (ir, iw) = inbound.into_split();
                    let (or, ow) = outbound.into_split();
                    tokio::join!(pump(ir, ow, rx.clone()), pump(or, iw, rx));
                });
                while conns.try_join_next().is_some() {}
            }
        });
        Proxy { addr, cut, task }
    }

    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    pub fn heal(&self) {
        self.cut.send_replace(false);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A proxy in front of each of `members` (`host:port`); the etcd URL through them.
pub async fn proxies(members: &[String]) -> (Vec<Proxy>, String) {
    let mut all = Vec::new();
    for m in members {
        all.push(Proxy::start(m.parse().unwrap()).await);
    }
    let url = format!(
        "etcd://{}",
        all.iter()
            .map(|p| p.addr.to_string())
            .collect::<Vec<_>>()
            .join(",")
    );
    (all, url)
}

// ---- the checker ----

/// One task an agent started, as the checker saw it.
#[derive(Debug, Clone)]
struct Start {
    agent: String,
    family: String,
    at: Instant,
    stopped: Option<Instant>,
}

/// Records every acknowledged write and every task the agents start and stop, and checks
/// them: no write lost, no task started twice, no service above a bound for long.
#[derive(Default)]
pub struct Checker {
    /// Acknowledged task-definition revisions (ARNs), in order.
    acked: Mutex<Vec<String>>,
    starts: Mutex<HashMap<String, Vec<Start>>>,
    /// While set, agents start at most `.2` tasks of family `.0` at revision `.1`; the rest
    /// stay PENDING (an image still pulling) until `release`.
    hold: Mutex<Option<(String, i64, usize)>>,
}

/// What the checker found.
#[derive(Debug, Default)]
pub struct Verdict {
    pub acked: usize,
    pub lost: Vec<String>,
    pub started: usize,
    pub started_twice: Vec<String>,
    /// The most tasks of each family running at once, as the agents ran them.
    pub peak: BTreeMap<String, usize>,
}

impl Verdict {
    pub fn holds(&self) -> bool {
        self.lost.is_empty() && self.started_twice.is_empty()
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "checker: {} — {} acknowledged writes, {} lost; {} tasks started, {} started twice; peak running {:?}",
            if self.holds() { "OK" } else { "FAILED" },
            self.acked,
            self.lost.len(),
            self.started,
            self.started_twice.len(),
            self.peak
        )?;
        for l in self.lost.iter().take(5) {
            write!(f, "\n  lost: {l}")?;
        }
        for t in self.started_twice.iter().take(5) {
            write!(f, "\n  started twice: {t}")?;
        }
        Ok(())
    }
}

impl Checker {
    /// Agents start at most `allowed` tasks of `family`:`revision` until `release`: a
    /// rollout held part way, whatever the agents' speed.
    pub fn hold(&self, family: &str, revision: i64, allowed: usize) {
        *self.hold.lock().unwrap() = Some((family.to_string(), revision, allowed));
    }

    pub fn release(&self) {
        *self.hold.lock().unwrap() = None;
    }

    /// Whether an agent may start one more task of `family`:`revision` (and counts it).
    fn may_start(&self, family: &str, revision: i64) -> bool {
        let mut hold = self.hold.lock().unwrap();
        match hold.as_mut() {
            Some((f, r, allowed)) if f == family && *r == revision => {
                if *allowed == 0 {
                    return false;
                }
                *allowed -= 1;
                true
            }
            _ => true,
        }
    }

    pub fn acknowledged(&self, arn: &str) {
        self.acked.lock().unwrap().push(arn.to_string());
    }

    fn started(&self, task: &str, agent: &str, family: &str) {
        self.starts
            .lock()
            .unwrap()
            .entry(task.to_string())
            .or_default()
            .push(Start {
                agent: agent.to_string(),
                family: family.to_string(),
                at: Instant::now(),
                stopped: None,
            });
    }

    fn stopped(&self, task: &str, agent: &str) {
        if let Some(s) = self.starts.lock().unwrap().get_mut(task).and_then(|v| {
            v.iter_mut()
                .rev()
                .find(|s| s.agent == agent && s.stopped.is_none())
        }) {
            s.stopped = Some(Instant::now());
        }
    }

    /// How many times the agents started a task, in all.
    pub fn starts(&self) -> usize {
        self.starts.lock().unwrap().values().map(Vec::len).sum()
    }

    /// How many tasks of `family` the agents run now.
    pub fn running(&self, family: &str) -> usize {
        self.starts
            .lock()
            .unwrap()
            .values()
            .flatten()
            .filter(|s| s.family == family && s.stopped.is_none())
            .count()
    }

    /// The longest stretch during which more than `bound` tasks of `family` ran at once.
    pub fn longest_above(&self, family: &str, bound: usize) -> Duration {
        let now = Instant::now();
        let mut edges: Vec<(Instant, i64)> = Vec::new();
        for s in self.starts.lock().unwrap().values().flatten() {
            if s.family == family {
                edges.push((s.at, 1));
                edges.push((s.stopped.unwrap_or(now), -1));
            }
        }
        edges.sort_by_key(|e| (e.0, e.1));
        let (mut n, mut since, mut longest) = (0i64, None, Duration::ZERO);
        for (at, d) in edges {
            n += d;
            match (n > bound as i64, since) {
                (true, None) => since = Some(at),
                (false, Some(s)) => {
                    longest = longest.max(at - s);
                    since = None;
                }
                _ => {}
            }
        }
        longest
    }

    /// Reads every acknowledged revision back from every server in `nodes`, and looks for
    /// tasks started by two agents (or twice by one).
    pub async fn verdict(&self, nodes: &[Node]) -> Verdict {
        let acked = self.acked.lock().unwrap().clone();
        let mut v = Verdict {
            acked: acked.len(),
            ..Default::default()
        };
        let mut seen = std::collections::HashSet::new();
        for arn in &acked {
            if !seen.insert(arn) {
                v.lost.push(format!("{arn} was acknowledged twice"));
            }
        }
        for n in nodes {
            for arn in &acked {
                // A read that fails (a server still catching up after a heal) is asked again
                // before the write counts as lost; a 400 (not found) is final.
                let mut got = None;
                for _ in 0..3 {
                    got = try_call(
                        n,
                        "DescribeTaskDefinition",
                        &json!({ "taskDefinition": arn }),
                    )
                    .await;
                    if matches!(got, Some((200 | 400, _))) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                if !matches!(got, Some((200, _))) {
                    v.lost.push(format!("{arn} on {}: {got:?}", n.endpoint));
                }
            }
        }
        let starts = self.starts.lock().unwrap();
        v.started = starts.len();
        for (task, s) in starts.iter() {
            if s.len() > 1 {
                let by: Vec<&str> = s.iter().map(|s| s.agent.as_str()).collect();
                v.started_twice.push(format!("{task} by {by:?}"));
            }
        }
        drop(starts);
        let families: std::collections::BTreeSet<String> = self
            .starts
            .lock()
            .unwrap()
            .values()
            .flatten()
            .map(|s| s.family.clone())
            .collect();
        for f in families {
            let peak = self.peak(&f);
            v.peak.insert(f, peak);
        }
        v
    }

    fn peak(&self, family: &str) -> usize {
        let mut edges: Vec<(Instant, i64)> = Vec::new();
        for s in self.starts.lock().unwrap().values().flatten() {
            if s.family == family {
                edges.push((s.at, 1));
                if let Some(t) = s.stopped {
                    edges.push((t, -1));
                }
            }
        }
        edges.sort_by_key(|e| (e.0, e.1));
        let (mut n, mut peak) = (0i64, 0i64);
        for (_, d) in edges {
            n += d;
            peak = peak.max(n);
        }
        peak as usize
    }
}

/// Registers revisions of the family `acked` through the servers in turn (a dead one is
/// skipped) until `stop`, telling the checker of each one acknowledged.
pub fn writer(
    nodes: Arc<Mutex<Vec<Node>>>,
    checker: Arc<Checker>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<usize> {
    tokio::spawn(async move {
        let td = json!({"family": "acked", "containerDefinitions": [
            {"name": "app", "image": "busybox", "memory": 16}]});
        let (mut i, mut failed) = (0usize, 0usize);
        while !stop.load(SeqCst) {
            let n = {
                let all = nodes.lock().unwrap();
                all[i % all.len()].clone()
            };
            i += 1;
            match try_call(&n, "RegisterTaskDefinition", &td).await {
                Some((200, v)) => {
                    checker.acknowledged(v["taskDefinition"]["taskDefinitionArn"].as_str().unwrap())
                }
                _ => failed += 1,
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        failed
    })
}

// ---- simulated agents ----

/// A simulated agent: it joins, then polls (held for a second) and reports like `berth
/// agent`, through the first server of its list that answers, moving on when one does not.
/// It "runs" a task the moment it is asked to (telling the checker) and stops it when the
/// desired set says STOPPED or no longer holds it. Cut off, it sends nothing (its tasks run
/// on, as containers do on a host that lost the network).
pub struct SimAgent {
    pub arn: String,
    cut: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    /// Polls answered since the last heal.
    polls_since_heal: Arc<AtomicUsize>,
    /// When it last sent a poll.
    last_sent: Arc<Mutex<Instant>>,
    task: tokio::task::JoinHandle<()>,
}

fn host(name: &str, zone: &str) -> Value {
    let mut attributes: BTreeMap<String, Option<String>> = berth_agent::CAPABILITIES
        .iter()
        .map(|c| (c.to_string(), None))
        .collect();
    attributes.insert("ecs.os-type".into(), Some("linux".into()));
    attributes.insert("ecs.availability-zone".into(), Some(zone.into()));
    json!({
        "instance_id": format!("i-{:017x}", sha_prefix(name)),
        "cpu": 4096,
        "memory_mib": 4096,
        "reserved_ports": [22],
        "attributes": attributes,
        "agent_version": "sim",
        "docker_version": "none"
    })
}

fn sha_prefix(s: &str) -> u64 {
    use sha2::Digest;
    let d = sha2::Sha256::digest(s.as_bytes());
    u64::from_le_bytes(d[..8].try_into().unwrap()) >> 4
}

async fn agent_post(
    n: &Node,
    path: &str,
    body: &Value,
    key: Option<(&str, &str)>,
) -> Option<(u16, Value)> {
    let body = body.to_string();
    let host = n.endpoint.trim_start_matches("http://").to_string();
    let mut headers = vec![
        ("host".to_string(), host.clone()),
        ("content-type".to_string(), "application/json".to_string()),
    ];
    if let Some((ak, sk)) = key {
        let signed = berth_api::sigv4::sign_request(
            &berth_api::sigv4::SigningKey {
                access_key: ak,
                secret: sk,
                region: "us-east-1",
                service: "ecs",
            },
            "POST",
            &format!("{}{path}", n.endpoint),
            &[("host", &host), ("content-type", "application/json")],
            body.as_bytes(),
            SystemTime::now(),
        )
        .ok()?;
        headers.extend(signed);
    }
    post(&n.endpoint, path, headers, body.into_bytes()).await
}

impl SimAgent {
    /// Joins `cluster` through the first of `servers` that takes it, with `token`.
    pub async fn start(
        name: &str,
        zone: &str,
        cluster: &str,
        token: &str,
        servers: Arc<Mutex<Vec<Node>>>,
        checker: Arc<Checker>,
    ) -> SimAgent {
        let join = json!({"cluster": cluster, "token": token, "host": host(name, zone)});
        let mut joined = None;
        for attempt in 0..50 {
            let n = {
                let all = servers.lock().unwrap();
                all[attempt % all.len()].clone()
            };
            if let Some((200, v)) = agent_post(&n, proto::JOIN_PATH, &join, None).await {
                joined = Some(v);
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let v = joined.unwrap_or_else(|| panic!("agent {name} could not join"));
        let arn = v["container_instance_arn"].as_str().unwrap().to_string();
        let key = (
            v["access_key_id"].as_str().unwrap().to_string(),
            v["secret_access_key"].as_str().unwrap().to_string(),
        );
        let (cut, stop) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
        );
        let polls_since_heal = Arc::new(AtomicUsize::new(0));
        let last_sent = Arc::new(Mutex::new(Instant::now()));
        let task = tokio::spawn(run_sim(
            arn.clone(),
            key,
            servers,
            checker,
            (cut.clone(), stop.clone()),
            polls_since_heal.clone(),
            last_sent.clone(),
        ));
        SimAgent {
            arn,
            cut,
            stop,
            polls_since_heal,
            last_sent,
            task,
        }
    }

    /// Cuts the agent off from every server.
    pub fn cut(&self) {
        self.cut.store(true, SeqCst);
    }

    pub fn heal(&self) {
        self.polls_since_heal.store(0, SeqCst);
        self.cut.store(false, SeqCst);
    }

    /// When it last sent a poll (the last time any server can have heard from it).
    pub fn last_sent(&self) -> Instant {
        *self.last_sent.lock().unwrap()
    }

    /// Polls answered since the last heal.
    pub fn polls_since_heal(&self) -> usize {
        self.polls_since_heal.load(SeqCst)
    }

    pub async fn stop(mut self) {
        self.stop.store(true, SeqCst);
        let _ = tokio::time::timeout(Duration::from_secs(15), &mut self.task).await;
    }
}

impl Drop for SimAgent {
    fn drop(&mut self) {
        self.stop.store(true, SeqCst);
    }
}

async fn run_sim(
    arn: String,
    key: (String, String),
    servers: Arc<Mutex<Vec<Node>>>,
    checker: Arc<Checker>,
    (cut, stop): (Arc<AtomicBool>, Arc<AtomicBool>),
    polls: Arc<AtomicUsize>,
    last_sent: Arc<Mutex<Instant>>,
) {
    let key = (key.0.as_str(), key.1.as_str());
    // Tasks this agent runs, by ARN: their containers' names.
    let mut running: HashMap<String, (String, Vec<String>)> = HashMap::new();
    // Tasks it stopped: reported STOPPED again while the server still asks for the stop (a
    // report can be lost with the server it went to, as an agent's can).
    let mut stopped: std::collections::HashSet<String> = std::collections::HashSet::new();
    let mut known: Option<String> = None;
    let mut at = 0usize;
    while !stop.load(SeqCst) {
        if cut.load(SeqCst) {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        let n = {
            let all = servers.lock().unwrap();
            all[at % all.len()].clone()
        };
        let poll = json!({"known_version": known, "wait_ms": 1000,
                          "accepts_unchanged": true, "accepts_changes": false});
        *last_sent.lock().unwrap() = Instant::now();
        let answer = match agent_post(&n, proto::POLL_PATH, &poll, Some(key)).await {
            Some((200, v)) => v,
            _ => {
                // Its server is gone or failing: the next one.
                at += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // A poll answered while the agent was cut off (sent before) does not count.
        if cut.load(SeqCst) {
            continue;
        }
        if answer["unchanged"] == true {
            polls.fetch_add(1, SeqCst);
            continue;
        }
        known = answer["version"].as_str().map(str::to_string);
        let mut reports = Vec::new();
        let mut desired = std::collections::HashSet::new();
        let mut held = false;
        for t in answer["tasks"].as_array().cloned().unwrap_or_default() {
            let task = t["task_arn"].as_str().unwrap().to_string();
            let family = t["family"].as_str().unwrap_or_default().to_string();
            let names: Vec<String> = t["containers"]
                .as_array()
                .map(|cs| {
                    cs.iter()
                        .filter_map(|c| c["name"].as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            desired.insert(task.clone());
            match (t["desired_status"].as_str(), running.contains_key(&task)) {
                (Some("RUNNING"), false)
                    if !checker.may_start(&family, t["revision"].as_i64().unwrap_or(0)) =>
                {
                    held = true;
                }
                (Some("RUNNING"), false) => {
                    checker.started(&task, &arn, &family);
                    running.insert(task.clone(), (family, names.clone()));
                    reports.push(report(&task, &names, "RUNNING"));
                }
                (Some("RUNNING"), true) => reports.push(report(&task, &names, "RUNNING")),
                (Some("STOPPED"), true) => {
                    checker.stopped(&task, &arn);
                    running.remove(&task);
                    stopped.insert(task.clone());
                    reports.push(report(&task, &names, "STOPPED"));
                }
                (Some("STOPPED"), false) if stopped.contains(&task) => {
                    reports.push(report(&task, &names, "STOPPED"))
                }
                _ => {}
            }
        }
        // What the server no longer asks for does not run.
        let gone: Vec<String> = running
            .keys()
            .filter(|t| !desired.contains(*t))
            .cloned()
            .collect();
        for task in gone {
            checker.stopped(&task, &arn);
            running.remove(&task);
        }
        // What the server no longer lists, it knows stopped.
        stopped.retain(|t| desired.contains(t));
        // Counted once the answer is acted on: the checker already knows what it stopped.
        polls.fetch_add(1, SeqCst);
        if held {
            // The whole set again shortly, to start what was held once it is released.
            known = None;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        if reports.is_empty() {
            continue;
        }
        let body = json!({ "reports": reports });
        if !matches!(
            agent_post(&n, proto::REPORT_PATH, &body, Some(key)).await,
            Some((200, _))
        ) {
            // Reported again after the next poll (the set is asked for afresh).
            known = None;
            at += 1;
        }
    }
}

fn report(task: &str, containers: &[String], status: &str) -> Value {
    let stopped = status == "STOPPED";
    json!({
        "task_arn": task, "last_status": status, "started_at": 1.0,
        "containers": containers.iter().map(|c| json!({
            "name": c, "last_status": status,
            "exit_code": if stopped { Some(0) } else { None },
            "network_bindings": []
        })).collect::<Vec<_>>()
    })
}
