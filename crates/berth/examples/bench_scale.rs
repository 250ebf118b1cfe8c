//! `bench/run scale`: the control plane under a large fleet, without Docker.
//!
//! Each phase starts the release `berth server` afresh (its own data dir, `--agent-timeout
//! 3600`), creates the cluster `scale`, reads its registration token (`POST
//! /_berth/v1/join-token`, signed with the admin key, as `berth join-token` does) and registers
//! a tiny task definition (one container, image `scale/none`, cpu 10, memory 16 MiB, EC2). Then
//! N simulated agents (default 10,000) join and speak the real agent protocol over HTTP on
//! loopback, many to a tokio runtime and one keep-alive connection pool: a held poll
//! (`known_version` from the last answer, `wait_ms` 20000), then a signed report for every
//! desired task not reported yet. They "run" a task the moment they see it: desired RUNNING is
//! reported RUNNING with every container RUNNING, desired STOPPED is reported STOPPED. Each
//! agent keeps every task it was handed (a hash of the ARN) and what it holds (cpu, memory).
//!
//! - Phase 1: 1,000 services of 100 tasks (CreateService, launchType EC2, from 8 concurrent
//!   clients) and 100 RunTask calls of count 10 (8 more clients, at the same time), with a
//!   background of DescribeServices / ListTasks at 4 per second. Measured: the time until every
//!   task is RUNNING as the agents see it (their RUNNING reports acknowledged), tasks/s, p50 and
//!   p99 of every ECS call made in that window, and the server's peak RSS (VmHWM).
//! - Phase 2 (`BENCH_SCALE_MILLION=0` skips it): a fresh server and fleet, 1,000,000 tasks as
//!   1,000 services of 1,000, measured the same way.
//!
//! Checked after each phase, with the agents stopped: no instance is over-committed (for each
//! instance from ListContainerInstances / DescribeContainerInstances, remaining CPU and MEMORY
//! are >= 0 and registered - remaining equals the sum of what the agent holds there), and no
//! task was handed to two instances (duplicates). A phase stops at its time limit (the joins
//! have the same limit of their own) and reports how far it got (tasks RUNNING at the limit)
//! instead of hanging; the over-commit check then only asks registered - remaining >= held,
//! since placements the agents never saw still hold resources.
//!
//! Environment (defaults in brackets): BENCH_SCALE_INSTANCES [10000], BENCH_SCALE_SERVICES
//! [1000], BENCH_SCALE_PER_SERVICE [100], BENCH_SCALE_RUNTASK_CALLS [100], BENCH_SCALE_MILLION
//! [1], BENCH_SCALE_TASKS [1000000, phase 2's total], BENCH_SCALE_LIMIT_S [900, per phase],
//! BENCH_SCALE_JOINS [64 joins at a time], BENCH_SCALE_CLI [0; 1: time the human CLI's `berth
//! service ps` of the first service and `berth service ls`, and the web console's pages in
//! headless Chromium, before the fleet stops, and end with `ui: page_p99_ms=… cli_ps_ms=…` —
//! what `bench/run ui` sets]. A smoke run: `BENCH_SCALE_INSTANCES=200
//! BENCH_SCALE_SERVICES=20 BENCH_SCALE_PER_SERVICE=10 BENCH_SCALE_MILLION=0 bench/run scale`.
//!
//! Every agent holds a connection, a file descriptor in the benchmark and one in the server:
//! `bench/run scale` raises the open-file limit (`ulimit -n`) before starting the benchmark,
//! which the server inherits; the benchmark warns when the limit is too low for N.
//!
//! With `BENCH_SERVERS=N` (N > 1) each phase runs N servers on a three-member etcd instead
//! (`bench/run ha` does): agent `i` joins and polls server `i % N`, the admin's calls go round
//! the servers, and `rss_mib` is the servers' peak RSS added up (etcd's not counted).
//!
//! Each phase prints its own line `phaseK: instances=…`; the last line is `scale: instances=N
//! tasks=N place_rps=N running_s=N api_p99_ms=N rss_mib=N overcommit=N duplicates=N` for the
//! last phase run.
#![allow(clippy::unwrap_used)]

mod common;

use berth_agent_proto::{
    ContainerReport, DesiredTask, HostInfo, JoinRequest, JoinResponse, PollRequest, PollResponse,
    ReportRequest, TaskReport, JOIN_PATH, POLL_PATH, REPORT_PATH,
};
use berth_api::sigv4::{self, SigningKey};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};
use sha2::Digest;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

const CLUSTER: &str = "scale";
/// The server's default region; the admin key signs for it.
const REGION: &str = "us-east-1";
/// Concurrent CreateService clients, and as many RunTask clients.
const CLIENTS: usize = 8;
const RUN_TASK_COUNT: usize = 10;
const TASK_CPU: i64 = 10;
const TASK_MEMORY: i64 = 16;
/// What each simulated host offers: room for 1,638 tasks of the benchmark's size.
const HOST_CPU: i32 = 1024 * 16;
const HOST_MEMORY_MIB: i32 = 1_000_000;
const ZONES: [&str; 3] = ["us-east-1a", "us-east-1b", "us-east-1c"];
const POLL_WAIT: Duration = Duration::from_secs(20);
const API_TIMEOUT: Duration = Duration::from_secs(120);
const JOIN_TIMEOUT: Duration = Duration::from_secs(60);
const REPORT_TIMEOUT: Duration = Duration::from_secs(60);
const JOIN_ATTEMPTS: usize = 5;
/// Reports per request at most.
const REPORT_BATCH: usize = 100;
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// One background call (DescribeServices or ListTasks) this often.
const SAMPLE_EVERY: Duration = Duration::from_millis(250);
const PROGRESS_EVERY: Duration = Duration::from_secs(10);
/// How long the stopped agents may take to hand back their state.
const COLLECT_LIMIT: Duration = Duration::from_secs(60);
/// How long the after-phase checks may take.
const AUDIT_LIMIT: Duration = Duration::from_secs(600);

// ---- settings ----

#[derive(Debug, Clone)]
struct Settings {
    instances: usize,
    services: usize,
    per_service: usize,
    run_task_calls: usize,
    million: bool,
    million_tasks: usize,
    limit: Duration,
    joins_at_once: usize,
    /// `bench/run ui`: time `berth service ps` and `berth service ls` against the phase's
    /// fleet before it stops.
    cli: bool,
}

fn env_usize(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v} is not a whole number")),
        Err(_) => default,
    }
}

impl Settings {
    fn from_env() -> Self {
        Settings {
            instances: env_usize("BENCH_SCALE_INSTANCES", 10_000),
            services: env_usize("BENCH_SCALE_SERVICES", 1_000),
            per_service: env_usize("BENCH_SCALE_PER_SERVICE", 100),
            run_task_calls: env_usize("BENCH_SCALE_RUNTASK_CALLS", 100),
            million: env_usize("BENCH_SCALE_MILLION", 1) != 0,
            million_tasks: env_usize("BENCH_SCALE_TASKS", 1_000_000),
            limit: Duration::from_secs(env_usize("BENCH_SCALE_LIMIT_S", 900) as u64),
            joins_at_once: env_usize("BENCH_SCALE_JOINS", 64).max(1),
            cli: env_usize("BENCH_SCALE_CLI", 0) != 0,
        }
    }
}

/// What a phase times besides the placement: the human CLI or the console's pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Measure {
    Nothing,
    Cli,
    Pages,
}

/// What one phase asks of the server.
#[derive(Debug, Clone, Copy)]
struct PhaseSpec {
    name: &'static str,
    services: usize,
    per_service: usize,
    run_task_calls: usize,
    /// What `bench/run ui` times against the phase's fleet before it stops.
    measure: Measure,
}

impl PhaseSpec {
    fn expected_tasks(&self) -> usize {
        self.services * self.per_service + self.run_task_calls * RUN_TASK_COUNT
    }
}

/// A phase's spec and the task definition it places.
struct Job {
    spec: PhaseSpec,
    td: String,
}

fn service_name(i: usize) -> String {
    format!("s{i:05}")
}

// ---- HTTP ----

fn pooled_client() -> common::Client {
    let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(10)));
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build(connector)
}

/// One POST; the status and the whole answer, or why there is none within `timeout`.
async fn send(
    client: &common::Client,
    url: &str,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    timeout: Duration,
) -> Result<(u16, Bytes), String> {
    let mut req = http::Request::post(url);
    for (k, v) in headers {
        req = req.header(k, v);
    }
    let req = req
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| format!("{url}: {e}"))?;
    let exchange = async {
        let resp = client
            .request(req)
            .await
            .map_err(|e| format!("{url}: {e:?}"))?;
        let status = resp.status().as_u16();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("{url}: {e}"))?
            .to_bytes();
        Ok::<_, String>((status, bytes))
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| format!("{url}: no answer within {timeout:?}"))?
}

/// A JSON POST to one of Berth's own paths (agent protocol, join token), signed the way the
/// agent signs (`crates/agent/src/client.rs`) when a key is given. The answer must be a 200.
async fn signed_post(
    client: &common::Client,
    endpoint: &str,
    path: &str,
    body: Vec<u8>,
    key: Option<SigningKey<'_>>,
    timeout: Duration,
) -> Result<Bytes, String> {
    let url = format!("{endpoint}{path}");
    let host = endpoint
        .trim_start_matches("http://")
        .trim_start_matches("https://");
    let mut headers = vec![
        ("host".to_string(), host.to_string()),
        ("content-type".to_string(), "application/json".to_string()),
    ];
    if let Some(key) = key {
        let signed = sigv4::sign_request(
            &key,
            "POST",
            &url,
            &[("host", host), ("content-type", "application/json")],
            &body,
            SystemTime::now(),
        )
        .map_err(|e| format!("{path}: cannot sign: {e}"))?;
        headers.extend(signed);
    }
    let (status, bytes) = send(client, &url, headers, body, timeout).await?;
    if status != 200 {
        return Err(format!(
            "{path}: {status}: {}",
            String::from_utf8_lossy(&bytes)
        ));
    }
    Ok(bytes)
}

fn ms_since(t0: Instant) -> f64 {
    t0.elapsed().as_secs_f64() * 1000.0
}

fn epoch_now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// p50, p99 and max of `v`; zeros when empty.
fn percentiles(mut v: Vec<f64>) -> (f64, f64, f64) {
    if v.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let at = |p: f64| v[((v.len() as f64 * p) as usize).min(v.len() - 1)];
    (at(0.50), at(0.99), v[v.len() - 1])
}

/// How many times something failed, and the first failure's message.
#[derive(Debug, Default)]
struct Errors {
    count: AtomicUsize,
    first: Mutex<Option<String>>,
}

impl Errors {
    fn note(&self, e: String) {
        if self.count.fetch_add(1, Relaxed) == 0 {
            if let Ok(mut f) = self.first.lock() {
                *f = Some(e);
            }
        }
    }

    fn count(&self) -> usize {
        self.count.load(Relaxed)
    }

    fn summary(&self) -> String {
        match self.first.lock().ok().and_then(|f| f.clone()) {
            Some(first) => format!("{} (first: {first})", self.count()),
            None => "0".into(),
        }
    }
}

// ---- the admin's ECS client ----

/// One ECS call as made during the run: operation, milliseconds, whether it succeeded.
type Call = (&'static str, f64, bool);

/// The admin's signed ECS client; it times every call.
struct Admin {
    client: common::Client,
    /// Every server's endpoint; calls go round them.
    endpoints: Vec<String>,
    next: AtomicUsize,
    ak: String,
    sk: String,
    calls: Mutex<Vec<Call>>,
}

impl Admin {
    fn new(plane: &common::Plane) -> Self {
        let server = &plane.servers[0];
        Admin {
            client: pooled_client(),
            endpoints: plane.servers.iter().map(|s| s.endpoint.clone()).collect(),
            next: AtomicUsize::new(0),
            ak: server.ak.clone(),
            sk: server.sk.clone(),
            calls: Mutex::new(Vec::new()),
        }
    }

    /// The server the next call goes to.
    fn endpoint(&self) -> &str {
        &self.endpoints[self.next.fetch_add(1, Relaxed) % self.endpoints.len()]
    }

    fn key(&self) -> SigningKey<'_> {
        SigningKey {
            access_key: &self.ak,
            secret: &self.sk,
            region: REGION,
            service: "ecs",
        }
    }

    /// The calls made since the last take.
    fn take_calls(&self) -> Vec<Call> {
        self.calls
            .lock()
            .map(|mut c| std::mem::take(&mut *c))
            .unwrap_or_default()
    }

    /// One ECS call; the answer when it is a 200.
    async fn ecs(&self, op: &'static str, body: Value) -> Result<Value, String> {
        let body = body.to_string().into_bytes();
        let endpoint = self.endpoint();
        let headers =
            sigv4::ecs_request_headers(&self.key(), endpoint, op, &body, SystemTime::now())
                .map_err(|e| format!("{op}: cannot sign: {e}"))?;
        let t0 = Instant::now();
        let answer = send(
            &self.client,
            &format!("{endpoint}/"),
            headers,
            body,
            API_TIMEOUT,
        )
        .await;
        let ok = matches!(answer, Ok((200, _)));
        if let Ok(mut c) = self.calls.lock() {
            c.push((op, ms_since(t0), ok));
        }
        let (status, bytes) = answer.map_err(|e| format!("{op}: {e}"))?;
        let v: Value = serde_json::from_slice(&bytes)
            .map_err(|e| format!("{op}: {status}: the answer is not JSON: {e}"))?;
        if status != 200 {
            return Err(format!("{op}: {status}: {v}"));
        }
        Ok(v)
    }

    /// The cluster's registration token, as `berth join-token` asks for it.
    async fn join_token(&self) -> Result<String, String> {
        let body = json!({ "cluster": CLUSTER }).to_string().into_bytes();
        let bytes = signed_post(
            &self.client,
            self.endpoint(),
            berth_control::http::JOIN_TOKEN_PATH,
            body,
            Some(self.key()),
            API_TIMEOUT,
        )
        .await?;
        let v: Value = serde_json::from_slice(&bytes).map_err(|e| format!("join-token: {e}"))?;
        v["token"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("join-token: no token in {v}"))
    }
}

/// The cluster, its token and the task definition; returns (task definition ARN, token).
async fn setup(admin: &Admin) -> (String, String) {
    admin
        .ecs("CreateCluster", json!({ "clusterName": CLUSTER }))
        .await
        .expect("CreateCluster");
    let token = admin.join_token().await.expect("the join token");
    let td = admin
        .ecs(
            "RegisterTaskDefinition",
            json!({
                "family": "scale",
                "requiresCompatibilities": ["EC2"],
                "containerDefinitions": [{
                    "name": "app", "image": "scale/none", "essential": true,
                    "cpu": TASK_CPU, "memory": TASK_MEMORY
                }]
            }),
        )
        .await
        .expect("RegisterTaskDefinition");
    let arn = td["taskDefinition"]["taskDefinitionArn"]
        .as_str()
        .expect("the task definition's ARN")
        .to_string();
    (arn, token)
}

// ---- the simulated agents ----

/// What one agent got from its join.
struct Joined {
    /// The server this agent joined and polls.
    endpoint: String,
    arn: String,
    access_key: String,
    secret: String,
    region: String,
}

impl Joined {
    fn key(&self) -> SigningKey<'_> {
        SigningKey {
            access_key: &self.access_key,
            secret: &self.secret,
            region: &self.region,
            service: "ecs",
        }
    }
}

/// Told to every agent when to stop: a signal, or the fleet's deadline.
struct Stop {
    rx: watch::Receiver<bool>,
    deadline: Instant,
}

impl Stop {
    fn is_set(&self) -> bool {
        *self.rx.borrow() || Instant::now() >= self.deadline
    }

    /// Completes when the signal comes (or its sender is gone) or the deadline passes.
    async fn wait(&mut self) {
        let deadline = self.deadline;
        let rx = &mut self.rx;
        let signalled = async move {
            loop {
                if *rx.borrow_and_update() {
                    return;
                }
                if rx.changed().await.is_err() {
                    return;
                }
            }
        };
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => {}
            _ = signalled => {}
        }
    }

    /// Sleeps `d` unless stopped first; true when stopped.
    async fn sleep(&mut self, d: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(d) => {}
            _ = self.wait() => {}
        }
        self.is_set()
    }
}

/// What every agent shares: the connection pool, the stop signal and the counters.
struct Fleet {
    client: common::Client,
    /// Every server's endpoint: agent `i` uses the `i % N`th.
    endpoints: Vec<String>,
    stop: watch::Receiver<bool>,
    deadline: Instant,
    /// Tasks whose RUNNING report was acknowledged and that were not stopped since.
    running: AtomicUsize,
    /// Distinct tasks handed to agents.
    handed: AtomicUsize,
    polls: AtomicUsize,
    reports: AtomicUsize,
    report_ms: Mutex<Vec<f64>>,
    join_errors: Errors,
    poll_errors: Errors,
    report_errors: Errors,
}

impl Fleet {
    fn new(endpoints: Vec<String>, stop: watch::Receiver<bool>, deadline: Instant) -> Self {
        Fleet {
            client: pooled_client(),
            endpoints,
            stop,
            deadline,
            running: AtomicUsize::new(0),
            handed: AtomicUsize::new(0),
            polls: AtomicUsize::new(0),
            reports: AtomicUsize::new(0),
            report_ms: Mutex::new(Vec::new()),
            join_errors: Errors::default(),
            poll_errors: Errors::default(),
            report_errors: Errors::default(),
        }
    }

    fn stopper(&self) -> Stop {
        Stop {
            rx: self.stop.clone(),
            deadline: self.deadline,
        }
    }
}

/// The host agent `i` says it is.
fn host_info(i: usize) -> HostInfo {
    let mut attributes: BTreeMap<String, Option<String>> = berth_agent::CAPABILITIES
        .iter()
        .map(|c| (c.to_string(), None))
        .collect();
    for (k, v) in [
        ("ecs.os-type", "linux"),
        ("ecs.os-family", "LINUX"),
        ("ecs.cpu-architecture", "x86_64"),
        ("ecs.instance-type", "bench.scale"),
        ("ecs.availability-zone", ZONES[i % ZONES.len()]),
    ] {
        attributes.insert(k.to_string(), Some(v.to_string()));
    }
    HostInfo {
        // `i-` and 17 hex digits, as EC2's; unique within the fleet.
        instance_id: format!("i-{:017x}", 0x0005_ca1e_0000_0000_u64 + i as u64),
        cpu: HOST_CPU,
        memory_mib: HOST_MEMORY_MIB,
        reserved_ports: Vec::new(),
        attributes,
        agent_version: "bench-scale".into(),
        docker_version: "none".into(),
    }
}

async fn join(fleet: &Fleet, token: &str, i: usize) -> Result<Joined, String> {
    let body = serde_json::to_vec(&JoinRequest {
        cluster: CLUSTER.into(),
        token: token.into(),
        host: host_info(i),
        region: None,
    })
    .map_err(|e| e.to_string())?;
    let endpoint = &fleet.endpoints[i % fleet.endpoints.len()];
    let bytes = signed_post(&fleet.client, endpoint, JOIN_PATH, body, None, JOIN_TIMEOUT).await?;
    let r: JoinResponse =
        serde_json::from_slice(&bytes).map_err(|e| format!("the join answer: {e}"))?;
    Ok(Joined {
        endpoint: endpoint.clone(),
        arn: r.container_instance_arn,
        access_key: r.access_key_id,
        secret: r.secret_access_key,
        region: r.region,
    })
}

async fn poll(
    fleet: &Fleet,
    me: &Joined,
    known_version: Option<String>,
) -> Result<PollResponse, String> {
    let body = serde_json::to_vec(&PollRequest {
        known_version,
        wait_ms: POLL_WAIT.as_millis() as u64,
        accepts_unchanged: true,
        accepts_changes: true,
    })
    .map_err(|e| e.to_string())?;
    let bytes = signed_post(
        &fleet.client,
        &me.endpoint,
        POLL_PATH,
        body,
        Some(me.key()),
        POLL_WAIT + Duration::from_secs(15),
    )
    .await?;
    fleet.polls.fetch_add(1, Relaxed);
    serde_json::from_slice(&bytes).map_err(|e| format!("the poll answer: {e}"))
}

async fn report(fleet: &Fleet, me: &Joined, reports: Vec<TaskReport>) -> Result<(), String> {
    let body = serde_json::to_vec(&ReportRequest { reports }).map_err(|e| e.to_string())?;
    let t0 = Instant::now();
    signed_post(
        &fleet.client,
        &me.endpoint,
        REPORT_PATH,
        body,
        Some(me.key()),
        REPORT_TIMEOUT,
    )
    .await?;
    fleet.reports.fetch_add(1, Relaxed);
    if let Ok(mut v) = fleet.report_ms.lock() {
        v.push(ms_since(t0));
    }
    Ok(())
}

/// A task's ARN as 128 bits: a million of them fit in the benchmark's memory.
fn task_key(arn: &str) -> u128 {
    let d = sha2::Sha256::digest(arn.as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    u128::from_le_bytes(b)
}

/// CPU units and MiB one task of `t` takes, as the scheduler reserves them (the soft memory
/// limit when there is one). The benchmark's task definition has no task-level size.
fn plan_demand(t: &DesiredTask) -> (i64, i64) {
    t.containers.iter().fold((0, 0), |(cpu, memory), c| {
        (
            cpu + i64::from(c.cpu.unwrap_or(0)),
            memory + i64::from(c.memory_reservation.or(c.memory).unwrap_or(0)),
        )
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Acked {
    Nothing,
    Running,
    Stopped,
}

/// One task an agent was handed.
#[derive(Debug, Clone, Copy)]
struct Handed {
    cpu: i64,
    memory: i64,
    /// In the latest desired set.
    in_set: bool,
    acked: Acked,
}

/// The report that tells the server `t` is now `status` (RUNNING or STOPPED).
fn report_for(t: &DesiredTask, status: Acked, now: f64) -> TaskReport {
    let stopped = status == Acked::Stopped;
    let last_status = if stopped { "STOPPED" } else { "RUNNING" };
    TaskReport {
        task_arn: t.task_arn.clone(),
        last_status: last_status.into(),
        pull_started_at: (!stopped).then_some(now),
        pull_stopped_at: (!stopped).then_some(now),
        started_at: (!stopped).then_some(now),
        execution_stopped_at: stopped.then_some(now),
        containers: t
            .containers
            .iter()
            .map(|c| ContainerReport {
                name: c.name.clone(),
                last_status: last_status.into(),
                exit_code: stopped.then_some(0),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

/// One agent's record of its tasks, handed back when it stops.
struct AgentState {
    arn: String,
    tasks: HashMap<u128, Handed>,
}

impl AgentState {
    /// Takes in a poll's desired set (or, with `removed`, what changed in it); returns the
    /// reports it calls for.
    fn take(
        &mut self,
        fleet: &Fleet,
        desired: &[DesiredTask],
        removed: Option<&[String]>,
    ) -> Vec<(u128, TaskReport)> {
        match removed {
            None => {
                for h in self.tasks.values_mut() {
                    h.in_set = false;
                }
            }
            Some(arns) => {
                for arn in arns {
                    if let Some(h) = self.tasks.get_mut(&task_key(arn)) {
                        h.in_set = false;
                    }
                }
            }
        }
        let now = epoch_now();
        let mut out = Vec::new();
        for t in desired {
            let key = task_key(&t.task_arn);
            let h = self.tasks.entry(key).or_insert_with(|| {
                fleet.handed.fetch_add(1, Relaxed);
                let (cpu, memory) = plan_demand(t);
                Handed {
                    cpu,
                    memory,
                    in_set: false,
                    acked: Acked::Nothing,
                }
            });
            h.in_set = true;
            let wanted = if t.desired_status == "STOPPED" {
                Acked::Stopped
            } else {
                Acked::Running
            };
            if h.acked != Acked::Stopped && h.acked != wanted {
                out.push((key, report_for(t, wanted, now)));
            }
        }
        out
    }

    /// Records what the server acknowledged.
    fn acknowledge(&mut self, fleet: &Fleet, sent: &[(u128, TaskReport)]) {
        for (key, r) in sent {
            let Some(h) = self.tasks.get_mut(key) else {
                continue;
            };
            let now = if r.last_status == "STOPPED" {
                Acked::Stopped
            } else {
                Acked::Running
            };
            match (h.acked, now) {
                (Acked::Nothing, Acked::Running) => {
                    fleet.running.fetch_add(1, Relaxed);
                }
                (Acked::Running, Acked::Stopped) => {
                    fleet.running.fetch_sub(1, Relaxed);
                }
                _ => {}
            }
            h.acked = now;
        }
    }

    /// CPU and memory the server should hold for this instance: the tasks of the latest
    /// desired set not acknowledged STOPPED.
    fn held(&self) -> (i64, i64) {
        self.tasks
            .values()
            .filter(|h| h.in_set && h.acked != Acked::Stopped)
            .fold((0, 0), |(c, m), h| (c + h.cpu, m + h.memory))
    }

    fn running(&self) -> usize {
        self.tasks
            .values()
            .filter(|h| h.acked == Acked::Running)
            .count()
    }
}

/// Sends `reports` in batches, each until acknowledged; false when stopped first.
async fn send_reports(
    fleet: &Fleet,
    me: &Joined,
    st: &mut AgentState,
    reports: Vec<(u128, TaskReport)>,
    stop: &mut Stop,
) -> bool {
    for chunk in reports.chunks(REPORT_BATCH) {
        let mut backoff = BACKOFF_MIN;
        loop {
            let batch: Vec<TaskReport> = chunk.iter().map(|(_, r)| r.clone()).collect();
            let sent = tokio::select! {
                r = report(fleet, me, batch) => r,
                _ = stop.wait() => return false,
            };
            match sent {
                Ok(()) => {
                    st.acknowledge(fleet, chunk);
                    break;
                }
                Err(e) => {
                    fleet.report_errors.note(e);
                    if stop.sleep(backoff).await {
                        return false;
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }
    true
}

/// One agent: held polls, and reports for what they bring, until told to stop.
async fn run_agent(fleet: Arc<Fleet>, me: Joined) -> AgentState {
    let mut stop = fleet.stopper();
    let mut st = AgentState {
        arn: me.arn.clone(),
        tasks: HashMap::new(),
    };
    let mut known: Option<String> = None;
    let mut backoff = BACKOFF_MIN;
    while !stop.is_set() {
        let answer = tokio::select! {
            a = poll(&fleet, &me, known.clone()) => a,
            _ = stop.wait() => break,
        };
        let resp = match answer {
            Ok(r) => r,
            Err(e) => {
                fleet.poll_errors.note(e);
                if stop.sleep(backoff).await {
                    break;
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        backoff = BACKOFF_MIN;
        known = Some(resp.version.clone());
        if resp.unchanged {
            continue;
        }
        let reports = st.take(
            &fleet,
            &resp.tasks,
            resp.changes.then_some(&resp.removed[..]),
        );
        if !reports.is_empty() && !send_reports(&fleet, &me, &mut st, reports, &mut stop).await {
            break;
        }
        if resp.instance_status == "INACTIVE" {
            break;
        }
    }
    st
}

/// Joins agent `i`, retrying a few times; `ms` gets the successful join's latency.
async fn join_with_retries(
    fleet: &Fleet,
    token: &str,
    i: usize,
    deadline: Instant,
    ms: &mut Vec<f64>,
) -> Option<Joined> {
    let mut backoff = Duration::from_millis(500);
    for _ in 0..JOIN_ATTEMPTS {
        let t0 = Instant::now();
        match join(fleet, token, i).await {
            Ok(me) => {
                ms.push(ms_since(t0));
                return Some(me);
            }
            Err(e) => fleet.join_errors.note(e),
        }
        if Instant::now() + backoff >= deadline {
            break;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
    None
}

/// Joins agents off a shared counter, starting each one's loop as soon as it joined (so the
/// polls' connections open at the pace of the joins, not all at once).
async fn join_worker(
    fleet: Arc<Fleet>,
    token: Arc<str>,
    next: Arc<AtomicUsize>,
    n: usize,
    deadline: Instant,
) -> (Vec<JoinHandle<AgentState>>, Vec<f64>) {
    let (mut agents, mut ms) = (Vec::new(), Vec::new());
    loop {
        let i = next.fetch_add(1, Relaxed);
        if i >= n || Instant::now() >= deadline {
            return (agents, ms);
        }
        if let Some(me) = join_with_retries(&fleet, &token, i, deadline, &mut ms).await {
            agents.push(tokio::spawn(run_agent(fleet.clone(), me)));
        }
    }
}

/// Joins the whole fleet, `at_once` joins at a time; the running agents and join latencies.
async fn join_fleet(
    fleet: &Arc<Fleet>,
    token: &str,
    n: usize,
    at_once: usize,
    deadline: Instant,
) -> (Vec<JoinHandle<AgentState>>, Vec<f64>) {
    let next = Arc::new(AtomicUsize::new(0));
    let token: Arc<str> = Arc::from(token);
    let workers: Vec<_> = (0..at_once)
        .map(|_| {
            tokio::spawn(join_worker(
                fleet.clone(),
                token.clone(),
                next.clone(),
                n,
                deadline,
            ))
        })
        .collect();
    let (mut agents, mut ms) = (Vec::new(), Vec::new());
    for w in workers {
        let (a, m) = w.await.unwrap();
        agents.extend(a);
        ms.extend(m);
    }
    (agents, ms)
}

/// The stopped agents' state; agents that do not stop within COLLECT_LIMIT are aborted.
async fn collect(agents: Vec<JoinHandle<AgentState>>) -> Vec<AgentState> {
    let deadline = Instant::now() + COLLECT_LIMIT;
    let mut out = Vec::with_capacity(agents.len());
    let mut lost = 0;
    for mut h in agents {
        let stopped = tokio::time::timeout_at(deadline, &mut h).await;
        match stopped {
            Ok(Ok(st)) => out.push(st),
            Ok(Err(e)) => {
                eprintln!("an agent failed: {e}");
                lost += 1;
            }
            Err(_) => {
                h.abort();
                lost += 1;
            }
        }
    }
    if lost > 0 {
        eprintln!("{lost} agents handed back no state; their instances are checked for remaining >= 0 only");
    }
    out
}

// ---- the measured run ----

/// What the API clients got done.
#[derive(Debug, Default)]
struct Progress {
    services: AtomicUsize,
    run_task_calls: AtomicUsize,
    run_task_failures: AtomicUsize,
    /// Tasks the server accepted to run: desiredCount of each created service, plus the tasks
    /// RunTask answered with.
    target: AtomicUsize,
    api_errors: Errors,
}

async fn create_services(
    admin: Arc<Admin>,
    job: Arc<Job>,
    progress: Arc<Progress>,
    client: usize,
    deadline: Instant,
) {
    for i in (client..job.spec.services).step_by(CLIENTS) {
        if Instant::now() >= deadline {
            return;
        }
        let body = json!({
            "cluster": CLUSTER,
            "serviceName": service_name(i),
            "taskDefinition": job.td,
            "desiredCount": job.spec.per_service,
            "launchType": "EC2",
        });
        match admin.ecs("CreateService", body).await {
            Ok(_) => {
                progress.services.fetch_add(1, Relaxed);
                progress.target.fetch_add(job.spec.per_service, Relaxed);
            }
            Err(e) => progress.api_errors.note(e),
        }
    }
}

async fn run_tasks(
    admin: Arc<Admin>,
    job: Arc<Job>,
    progress: Arc<Progress>,
    client: usize,
    deadline: Instant,
) {
    for _ in (client..job.spec.run_task_calls).step_by(CLIENTS) {
        if Instant::now() >= deadline {
            return;
        }
        let body = json!({
            "cluster": CLUSTER,
            "taskDefinition": job.td,
            "count": RUN_TASK_COUNT,
            "launchType": "EC2",
            "startedBy": "bench-scale",
        });
        match admin.ecs("RunTask", body).await {
            Ok(v) => {
                let started = v["tasks"].as_array().map_or(0, Vec::len);
                let failed = v["failures"].as_array().map_or(0, Vec::len);
                progress.run_task_calls.fetch_add(1, Relaxed);
                progress.target.fetch_add(started, Relaxed);
                progress.run_task_failures.fetch_add(failed, Relaxed);
            }
            Err(e) => progress.api_errors.note(e),
        }
    }
}

/// Cheap reads all through the run, to sample the API's latency under load.
async fn sample(admin: Arc<Admin>, job: Arc<Job>, progress: Arc<Progress>, mut stop: Stop) {
    let services = job.spec.services;
    let per_call = services.clamp(1, 10);
    let mut k = 0usize;
    while !stop.sleep(SAMPLE_EVERY).await {
        let call = async {
            if k.is_multiple_of(2) && services > 0 {
                let names: Vec<String> = (0..per_call)
                    .map(|j| service_name((k / 2 * per_call + j) % services))
                    .collect();
                admin
                    .ecs(
                        "DescribeServices",
                        json!({ "cluster": CLUSTER, "services": names }),
                    )
                    .await
            } else {
                admin
                    .ecs(
                        "ListTasks",
                        json!({ "cluster": CLUSTER, "maxResults": 100 }),
                    )
                    .await
            }
        };
        tokio::select! {
            r = call => {
                if let Err(e) = r {
                    progress.api_errors.note(e);
                }
            }
            _ = stop.wait() => return,
        }
        k += 1;
    }
}

/// The measured window's outcome.
struct Run {
    complete: bool,
    running_s: f64,
    tasks: usize,
    target: usize,
    progress: Arc<Progress>,
}

fn note_progress(name: &str, t0: Instant, fleet: &Fleet, p: &Progress, job: &Job) {
    eprintln!(
        "{name}: {:6.1} s: {}/{} RUNNING, {} handed to agents, {}/{} services, {}/{} RunTask calls; errors: api {}, poll {}, report {}",
        t0.elapsed().as_secs_f64(),
        fleet.running.load(Relaxed),
        p.target.load(Relaxed),
        fleet.handed.load(Relaxed),
        p.services.load(Relaxed),
        job.spec.services,
        p.run_task_calls.load(Relaxed),
        job.spec.run_task_calls,
        p.api_errors.count(),
        fleet.poll_errors.count(),
        fleet.report_errors.count(),
    );
}

/// Creates the services and runs the tasks, until every accepted task is RUNNING or `limit`.
async fn drive(admin: &Arc<Admin>, fleet: &Fleet, job: &Arc<Job>, limit: Duration) -> Run {
    let progress = Arc::new(Progress::default());
    let t0 = Instant::now();
    let deadline = t0 + limit;
    let mut loops = Vec::new();
    for c in 0..CLIENTS {
        let (a, j, p) = (admin.clone(), job.clone(), progress.clone());
        loops.push(tokio::spawn(create_services(a, j, p, c, deadline)));
        let (a, j, p) = (admin.clone(), job.clone(), progress.clone());
        loops.push(tokio::spawn(run_tasks(a, j, p, c, deadline)));
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let sampler = tokio::spawn(sample(
        admin.clone(),
        job.clone(),
        progress.clone(),
        Stop {
            rx: stop_rx,
            deadline,
        },
    ));
    let mut next_note = t0 + PROGRESS_EVERY;
    let complete = loop {
        let issued = loops.iter().all(|h| h.is_finished());
        if issued && fleet.running.load(Relaxed) >= progress.target.load(Relaxed) {
            break true;
        }
        let now = Instant::now();
        if now >= deadline {
            break false;
        }
        if now >= next_note {
            note_progress(job.spec.name, t0, fleet, &progress, job);
            next_note += PROGRESS_EVERY;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let running_s = t0.elapsed().as_secs_f64();
    let tasks = fleet.running.load(Relaxed);
    let _ = stop_tx.send(true);
    for h in &loops {
        h.abort();
    }
    let _ = sampler.await;
    Run {
        complete,
        running_s,
        tasks,
        target: progress.target.load(Relaxed),
        progress,
    }
}

// ---- the checks ----

fn peak_rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Every container instance ARN of the cluster, page by page.
async fn instance_arns(admin: &Admin, deadline: Instant) -> Result<Vec<String>, String> {
    let mut arns = Vec::new();
    let mut token: Option<String> = None;
    while Instant::now() < deadline {
        let mut body = json!({ "cluster": CLUSTER, "maxResults": 100 });
        if let Some(t) = &token {
            body["nextToken"] = json!(t);
        }
        let v = admin.ecs("ListContainerInstances", body).await?;
        arns.extend(
            v["containerInstanceArns"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|a| a.as_str().map(str::to_string)),
        );
        match v["nextToken"].as_str() {
            Some(t) if !t.is_empty() => token = Some(t.to_string()),
            _ => return Ok(arns),
        }
    }
    Err(format!(
        "ListContainerInstances: not through the pages within {AUDIT_LIMIT:?}"
    ))
}

/// An INTEGER resource (CPU, MEMORY) of `list` (registeredResources, remainingResources).
fn resource(ci: &Value, list: &str, name: &str) -> Option<i64> {
    ci[list].as_array()?.iter().find(|r| r["name"] == name)?["integerValue"].as_i64()
}

#[derive(Debug, Default)]
struct Audit {
    listed: usize,
    checked: usize,
    /// Instances with remaining < 0, or whose registered - remaining is not what their agent
    /// holds.
    overcommit: usize,
    /// Instances without an agent state to compare with (checked for remaining >= 0 only).
    unknown: usize,
    /// The sum of DescribeContainerInstances' runningTasksCount.
    running_tasks_count: i64,
    error: Option<String>,
}

/// Why the instance `ci` is over-committed, given what its agent holds (if known); `None` when
/// it is not. `exact`: the run completed, so nothing is placed that the agent has not seen, and
/// registered - remaining must equal what the agent holds; otherwise (stopped at the time limit)
/// it must be at least that.
fn overcommitted(ci: &Value, held: Option<(i64, i64)>, exact: bool) -> Option<String> {
    let get = |list: &str, name: &str| resource(ci, list, name);
    let (Some(reg_cpu), Some(rem_cpu), Some(reg_mem), Some(rem_mem)) = (
        get("registeredResources", "CPU"),
        get("remainingResources", "CPU"),
        get("registeredResources", "MEMORY"),
        get("remainingResources", "MEMORY"),
    ) else {
        return Some("no CPU/MEMORY resources".into());
    };
    if rem_cpu < 0 || rem_mem < 0 {
        return Some(format!("remaining cpu {rem_cpu}, memory {rem_mem}"));
    }
    let (reserved_cpu, reserved_mem) = (reg_cpu - rem_cpu, reg_mem - rem_mem);
    let wrong = |reserved: i64, holds: i64| {
        if exact {
            reserved != holds
        } else {
            reserved < holds
        }
    };
    match held {
        Some((cpu, memory)) if wrong(reserved_cpu, cpu) || wrong(reserved_mem, memory) => {
            Some(format!(
                "reserved cpu {reserved_cpu}, memory {reserved_mem}; the agent holds cpu {cpu}, memory {memory}"
            ))
        }
        _ => None,
    }
}

/// DescribeContainerInstances over every instance, 100 at a time, against the agents' records
/// (`exact` as for [`overcommitted`]).
async fn audit(
    admin: &Admin,
    held: &HashMap<String, (i64, i64)>,
    exact: bool,
    deadline: Instant,
) -> Audit {
    let mut a = Audit::default();
    let arns = match instance_arns(admin, deadline).await {
        Ok(arns) => arns,
        Err(e) => {
            a.error = Some(e);
            return a;
        }
    };
    a.listed = arns.len();
    for batch in arns.chunks(100) {
        if Instant::now() >= deadline {
            a.error = Some(format!("not all instances checked within {AUDIT_LIMIT:?}"));
            break;
        }
        let v = match admin
            .ecs(
                "DescribeContainerInstances",
                json!({ "cluster": CLUSTER, "containerInstances": batch }),
            )
            .await
        {
            Ok(v) => v,
            Err(e) => {
                a.error = Some(e);
                break;
            }
        };
        for ci in v["containerInstances"].as_array().into_iter().flatten() {
            a.checked += 1;
            a.running_tasks_count += ci["runningTasksCount"].as_i64().unwrap_or(0);
            let arn = ci["containerInstanceArn"].as_str().unwrap_or_default();
            let mine = held.get(arn).copied();
            if mine.is_none() {
                a.unknown += 1;
            }
            if let Some(why) = overcommitted(ci, mine, exact) {
                a.overcommit += 1;
                if a.overcommit <= 5 {
                    eprintln!("over-committed: {arn}: {why}");
                }
            }
        }
    }
    a
}

/// Tasks handed to more than one instance.
fn duplicates(states: &[AgentState]) -> usize {
    let mut seen: HashSet<u128> = HashSet::new();
    let mut twice: HashSet<u128> = HashSet::new();
    for st in states {
        for k in st.tasks.keys() {
            if !seen.insert(*k) {
                twice.insert(*k);
            }
        }
    }
    twice.len()
}

// ---- a phase ----

/// The figures of the last line.
#[derive(Debug, Clone)]
struct Figures {
    instances: usize,
    tasks: usize,
    place_rps: f64,
    running_s: f64,
    api_p99_ms: f64,
    rss_mib: f64,
    overcommit: usize,
    duplicates: usize,
    cli: Option<CliFigures>,
    pages: Option<PageFigures>,
}

impl std::fmt::Display for Figures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "instances={} tasks={} place_rps={:.0} running_s={:.1} api_p99_ms={:.1} rss_mib={:.0} overcommit={} duplicates={}",
            self.instances,
            self.tasks,
            self.place_rps,
            self.running_s,
            self.api_p99_ms,
            self.rss_mib,
            self.overcommit,
            self.duplicates
        )
    }
}

/// Per operation: count, errors, p50/p99/max; and the p50/p99 of all calls.
fn api_summary(calls: &[Call]) -> (String, f64, f64) {
    let mut by_op: BTreeMap<&str, (Vec<f64>, usize)> = BTreeMap::new();
    for (op, ms, ok) in calls {
        let e = by_op.entry(*op).or_default();
        e.0.push(*ms);
        if !*ok {
            e.1 += 1;
        }
    }
    let parts: Vec<String> = by_op
        .into_iter()
        .map(|(op, (ms, errors))| {
            let n = ms.len();
            let (p50, p99, max) = percentiles(ms);
            format!("{op} {n} calls ({errors} failed) p50 {p50:.1} p99 {p99:.1} max {max:.1} ms")
        })
        .collect();
    let (p50, p99, _) = percentiles(calls.iter().map(|c| c.1).collect());
    (parts.join("; "), p50, p99)
}

async fn run_phase(bin: &str, s: &Settings, spec: PhaseSpec) -> Figures {
    let name = spec.name;
    eprintln!(
        "{name}: {} instances, {} services of {}, {} RunTask calls of {RUN_TASK_COUNT}: {} tasks; limit {} s",
        s.instances,
        spec.services,
        spec.per_service,
        spec.run_task_calls,
        spec.expected_tasks(),
        s.limit.as_secs()
    );
    let capacity = s.instances as i64 * (i64::from(HOST_CPU) / TASK_CPU);
    if spec.expected_tasks() as i64 > capacity {
        eprintln!(
            "{name}: warning: {} tasks do not fit on {} instances ({capacity} at most)",
            spec.expected_tasks(),
            s.instances
        );
    }
    let plane = common::Plane::start(
        bin,
        &[
            "server",
            "--listen",
            "127.0.0.1:0",
            "--agent-timeout",
            "3600",
        ],
        common::servers_wanted(),
    );
    let server = &plane.servers[0];
    let pids: Vec<u32> = plane.servers.iter().map(|s| s.child.id()).collect();
    let admin = Arc::new(Admin::new(&plane));
    let (td, token) = setup(&admin).await;

    // The fleet: agents run until told to stop; the deadline only bounds a runaway.
    let (stop_tx, stop_rx) = watch::channel(false);
    let fleet_deadline = Instant::now() + s.limit * 2 + AUDIT_LIMIT;
    let endpoints = plane.servers.iter().map(|s| s.endpoint.clone()).collect();
    let fleet = Arc::new(Fleet::new(endpoints, stop_rx, fleet_deadline));
    let t_join = Instant::now();
    let (agents, join_ms) = join_fleet(
        &fleet,
        &token,
        s.instances,
        s.joins_at_once,
        t_join + s.limit,
    )
    .await;
    let join_s = t_join.elapsed().as_secs_f64();
    let instances = agents.len();
    let (jp50, jp99, _) = percentiles(join_ms);
    println!(
        "{name}: joined {instances}/{} instances in {join_s:.1} s ({:.0} joins/s, {} at a time, p50 {jp50:.1} ms, p99 {jp99:.1} ms; join errors {})",
        s.instances,
        instances as f64 / join_s.max(1e-9),
        s.joins_at_once,
        fleet.join_errors.summary()
    );

    admin.take_calls(); // the setup's calls are not part of the run
    let job = Arc::new(Job { spec, td });
    let run = drive(&admin, &fleet, &job, s.limit).await;
    let calls = admin.take_calls();
    let rss_mib: f64 = pids.iter().map(|p| peak_rss_mib(*p)).sum();
    let (cli, pages) = match spec.measure {
        Measure::Cli => (Some(time_cli(bin, server, &service_name(0)).await), None),
        Measure::Pages => (None, Some(time_pages(server).await)),
        Measure::Nothing => (None, None),
    };

    let _ = stop_tx.send(true);
    let states = collect(agents).await;
    let held: HashMap<String, (i64, i64)> = states
        .iter()
        .map(|st| (st.arn.clone(), st.held()))
        .collect();
    let agents_running: usize = states.iter().map(AgentState::running).sum();
    let checks = audit(&admin, &held, run.complete, Instant::now() + AUDIT_LIMIT).await;
    let twice = duplicates(&states);
    let kind = plane.kind();
    plane.stop();

    let p = &run.progress;
    println!(
        "{name}: {}/{} tasks RUNNING in {:.1} s{}; {}/{} services created, {}/{} RunTask calls answered ({} placement failures); api errors {}",
        run.tasks,
        run.target,
        run.running_s,
        if run.complete { "" } else { " (TIME LIMIT: not all running)" },
        p.services.load(Relaxed),
        job.spec.services,
        p.run_task_calls.load(Relaxed),
        job.spec.run_task_calls,
        p.run_task_failures.load(Relaxed),
        p.api_errors.summary()
    );
    let (ops, api_p50, api_p99) = api_summary(&calls);
    println!("{name}: api p50 {api_p50:.1} ms p99 {api_p99:.1} ms: {ops}");
    let report_ms = fleet
        .report_ms
        .lock()
        .map(|v| v.clone())
        .unwrap_or_default();
    let (rp50, rp99, _) = percentiles(report_ms);
    println!(
        "{name}: agents: {} polls (errors {}), {} reports p50 {rp50:.1} ms p99 {rp99:.1} ms (errors {}), {} tasks handed",
        fleet.polls.load(Relaxed),
        fleet.poll_errors.summary(),
        fleet.reports.load(Relaxed),
        fleet.report_errors.summary(),
        fleet.handed.load(Relaxed)
    );
    println!(
        "{name}: checks: {}/{} instances described{}, {} without agent state, {} over-committed{}, {twice} tasks on two instances; RUNNING by the agents {agents_running}, runningTasksCount sum {}; server peak RSS {rss_mib:.0} MiB",
        checks.checked,
        checks.listed,
        checks.error.as_deref().map(|e| format!(" (INCOMPLETE: {e})")).unwrap_or_default(),
        checks.unknown,
        checks.overcommit,
        if run.complete { "" } else { " (at the limit: reserved >= held, not ==)" },
        checks.running_tasks_count
    );
    let figures = Figures {
        instances,
        tasks: run.tasks,
        place_rps: run.tasks as f64 / run.running_s.max(1e-9),
        running_s: run.running_s,
        api_p99_ms: api_p99,
        rss_mib,
        overcommit: checks.overcommit,
        duplicates: twice,
        cli,
        pages,
    };
    println!("{name}: store={kind} {figures}");
    figures
}

/// The CLI's figures: p50 and p99 of `berth service ps` and `berth service ls`.
#[derive(Debug, Clone, Copy)]
struct CliFigures {
    ps_p50_ms: f64,
    ps_max_ms: f64,
    ls_p50_ms: f64,
    ps_rows: usize,
}

/// The console's figures in headless Chromium: p50 and p99 of time to first byte and to a
/// complete page (the load event), over every timed load.
#[derive(Debug, Clone, Copy)]
struct PageFigures {
    ttfb_p50_ms: f64,
    page_p50_ms: f64,
    page_p99_ms: f64,
    loads: usize,
}

/// Loads the console's pages of the phase's cluster in headless Chromium, logged in with the
/// admin key: the clusters list, the cluster (100 services, 100 tasks and 100 instances a
/// section), a service, one of its tasks and the task definitions; each 10 times after one
/// untimed load.
async fn time_pages(server: &common::Berth) -> PageFigures {
    let (endpoint, ak, sk) = (
        server.endpoint.clone(),
        server.ak.clone(),
        server.sk.clone(),
    );
    tokio::task::spawn_blocking(move || {
        let mut b = common::browser::Browser::start();
        b.login(&endpoint, &ak, &sk);
        let service = service_name(0);
        b.goto(&format!("{endpoint}/console/c/{CLUSTER}/s/{service}"));
        let task = b
            .eval("(function(){var a=document.querySelector('a[href*=\"/t/\"]');return a?a.getAttribute('href'):''})()")
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(!task.is_empty(), "the service page lists a task: {}", b.text());
        let pages = [
            "/console/".to_string(),
            format!("/console/c/{CLUSTER}"),
            format!("/console/c/{CLUSTER}/s/{service}"),
            task,
            "/console/taskdefs".to_string(),
        ];
        let (mut ttfb, mut done) = (Vec::new(), Vec::new());
        for page in &pages {
            b.goto(&format!("{endpoint}{page}"));
            let mut mine = Vec::new();
            for _ in 0..10 {
                b.goto(&format!("{endpoint}{page}"));
                let (t, d) = b.load_times();
                ttfb.push(t);
                done.push(d);
                mine.push(d);
            }
            let (p50, p99, _) = percentiles(mine);
            println!("ui: page {page}: complete p50 {p50:.1} ms p99 {p99:.1} ms");
        }
        let loads = done.len();
        let (ttfb_p50_ms, _, _) = percentiles(ttfb);
        let (page_p50_ms, page_p99_ms, _) = percentiles(done);
        PageFigures {
            ttfb_p50_ms,
            page_p50_ms,
            page_p99_ms,
            loads,
        }
    })
    .await
    .expect("the browser's walk")
}

/// Runs the human CLI (the same release binary) against the server 20 times each, as a person
/// would: a new process per command, its key and endpoint in the environment.
async fn time_cli(bin: &str, server: &common::Berth, service: &str) -> CliFigures {
    let run = |args: Vec<String>| {
        let mut cmd = tokio::process::Command::new(bin);
        cmd.args(&args)
            .args(["--cluster", CLUSTER])
            .env_clear()
            .env("HOME", "/nonexistent")
            .env("AWS_ACCESS_KEY_ID", &server.ak)
            .env("AWS_SECRET_ACCESS_KEY", &server.sk)
            .env("AWS_ENDPOINT_URL", &server.endpoint)
            .env("AWS_REGION", REGION)
            .kill_on_drop(true);
        async move {
            let t0 = Instant::now();
            let out = tokio::time::timeout(API_TIMEOUT, cmd.output())
                .await
                .expect("the CLI answers within the API timeout")
                .expect("the CLI runs");
            assert!(
                out.status.success(),
                "berth {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            (
                ms_since(t0),
                String::from_utf8_lossy(&out.stdout).lines().count(),
            )
        }
    };
    let (mut ps, mut ls, mut rows) = (Vec::new(), Vec::new(), 0);
    for _ in 0..20 {
        let (ms, lines) = run(vec!["service".into(), "ps".into(), service.into()]).await;
        ps.push(ms);
        rows = lines.saturating_sub(1);
        ls.push(run(vec!["service".into(), "ls".into()]).await.0);
    }
    let (ps_p50_ms, _, ps_max_ms) = percentiles(ps);
    let (ls_p50_ms, _, _) = percentiles(ls);
    println!(
        "cli: `berth service ps` of {rows} tasks p50 {ps_p50_ms:.1} ms max {ps_max_ms:.1} ms (20 runs); `berth service ls` p50 {ls_p50_ms:.1} ms"
    );
    CliFigures {
        ps_p50_ms,
        ps_max_ms,
        ls_p50_ms,
        ps_rows: rows,
    }
}

/// Warns when the open-file limit cannot hold a connection per agent (and the server's).
fn check_open_files(instances: usize) {
    let soft = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3))
                .and_then(|v| v.parse::<u64>().ok())
        });
    let need = instances as u64 + 1024;
    if let Some(soft) = soft.filter(|soft| *soft < need) {
        eprintln!(
            "warning: the open-file limit is {soft}, {instances} agents need about {need} (run through bench/run, or `ulimit -n {need}`)"
        );
    }
}

#[tokio::main]
async fn main() {
    let bin = std::env::args()
        .nth(1)
        .expect("usage: bench_scale PATH_TO_BERTH");
    let s = Settings::from_env();
    check_open_files(s.instances);
    if s.cli {
        // `bench/run ui`: the CLI on one service of 1,000 tasks, then the console's pages on a
        // cluster of 1,000 services and 10,000 tasks, each on a fresh server and fleet.
        let cli = run_phase(
            &bin,
            &s,
            PhaseSpec {
                name: "cli",
                services: 1,
                per_service: 1_000,
                run_task_calls: 0,
                measure: Measure::Cli,
            },
        )
        .await;
        let pages = run_phase(
            &bin,
            &s,
            PhaseSpec {
                name: "pages",
                services: 1_000,
                per_service: 9,
                run_task_calls: 100,
                measure: Measure::Pages,
            },
        )
        .await;
        let (c, p) = (
            cli.cli.expect("the CLI's figures"),
            pages.pages.expect("the pages' figures"),
        );
        println!(
            "ui: page_p99_ms={:.1} page_p50_ms={:.1} ttfb_p50_ms={:.1} page_loads={} page_tasks={} cli_ps_ms={:.1} cli_ps_max_ms={:.1} cli_ls_ms={:.1} ps_tasks={}",
            p.page_p99_ms, p.page_p50_ms, p.ttfb_p50_ms, p.loads, pages.tasks, c.ps_p50_ms, c.ps_max_ms, c.ls_p50_ms, c.ps_rows
        );
        return;
    }
    let phase1 = PhaseSpec {
        name: "phase1",
        services: s.services,
        per_service: s.per_service,
        run_task_calls: s.run_task_calls,
        measure: Measure::Nothing,
    };
    let mut last = run_phase(&bin, &s, phase1).await;
    if s.million {
        let services = s.services.max(1);
        let phase2 = PhaseSpec {
            name: "phase2",
            services,
            per_service: (s.million_tasks / services).max(1),
            run_task_calls: 0,
            measure: Measure::Nothing,
        };
        last = run_phase(&bin, &s, phase2).await;
    }
    println!("scale: {last}");
}
