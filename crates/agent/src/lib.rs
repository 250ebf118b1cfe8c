//! The berth agent: makes one host a container instance of a cluster and runs the tasks the
//! server places there on the local Docker Engine.
//!
//! Start at [`run`]: join (or reuse the identity in the data dir), then a long-poll loop that
//! receives the instance's desired tasks and hands each to its own loop in [`engine`], and a
//! report loop that sends what the engine observed until the server acknowledges it
//! ([`client::Reporter`]). Docker sits behind [`runtime::Runtime`]; [`docker`] is the real one.
//! `awsvpc` tasks get a pause container holding their network namespace ([`pause`]) and their
//! security groups as iptables rules in it ([`firewall`]). Tasks with a task-level `cpu` or
//! `memory` run in a cgroup of their own that caps their containers together ([`cgroup`]).

pub mod cgroup;
pub mod client;
pub mod docker;
pub mod engine;
pub mod firewall;
pub mod jsonfile;
pub mod logship;
pub mod metadata;
pub mod metrics;
pub mod multiline;
pub mod pause;
pub mod runtime;
pub mod spares;
pub mod stats;

use berth_agent_proto::{labels, DesiredTask, HostInfo, JoinRequest};
use client::{Identity, Reporter, ServerClient};
use engine::EngineContext;
use runtime::Runtime;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Where the task metadata endpoint listens by default: the ECS agent's own port for it.
pub const METADATA_PORT: u16 = 51679;

/// Ports the ECS agent reserves on every host: SSH, Docker's API, and its own.
pub const RESERVED_PORTS: &[u16] = &[22, 2375, 2376, 51678, 51679];

/// The `ecs.capability.*` and `com.amazonaws.ecs.capability.*` attributes this agent
/// supports; a task definition that requires another one is not placed here.
pub const CAPABILITIES: &[&str] = &[
    "com.amazonaws.ecs.capability.docker-remote-api.1.17",
    "com.amazonaws.ecs.capability.docker-remote-api.1.18",
    "com.amazonaws.ecs.capability.docker-remote-api.1.19",
    "com.amazonaws.ecs.capability.docker-remote-api.1.20",
    "com.amazonaws.ecs.capability.docker-remote-api.1.21",
    "com.amazonaws.ecs.capability.docker-remote-api.1.22",
    "com.amazonaws.ecs.capability.docker-remote-api.1.23",
    "com.amazonaws.ecs.capability.docker-remote-api.1.24",
    "com.amazonaws.ecs.capability.docker-remote-api.1.25",
    "com.amazonaws.ecs.capability.docker-remote-api.1.29",
    "com.amazonaws.ecs.capability.docker-remote-api.1.32",
    "com.amazonaws.ecs.capability.docker-remote-api.1.35",
    "com.amazonaws.ecs.capability.docker-remote-api.1.38",
    "com.amazonaws.ecs.capability.docker-remote-api.1.39",
    "com.amazonaws.ecs.capability.docker-remote-api.1.40",
    "ecs.capability.task-cpu-mem-limit",
    "ecs.capability.container-health-check",
    "ecs.capability.container-ordering",
    "ecs.capability.docker-plugin.local",
    // The agent ships awslogs output itself (see `logship`).
    "com.amazonaws.ecs.capability.logging-driver.awslogs",
];

/// The attribute of instances that can run `awsvpc` tasks (the ECS agent's name).
pub const TASK_ENI_CAPABILITY: &str = "ecs.capability.task-eni";

/// Whether this host can run `awsvpc` tasks: the pause image is x86_64 Linux only, and the
/// security groups need `nsenter` and `iptables-restore` on the PATH.
pub fn awsvpc_supported() -> bool {
    let on_path = |name: &str| {
        std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|dir| dir.join(name).is_file()))
    };
    cfg!(all(target_arch = "x86_64", target_os = "linux"))
        && on_path("nsenter")
        && on_path("iptables-restore")
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("the server: {0}")]
    Server(String),
    #[error("the server refused the agent: {0}")]
    Refused(String),
    #[error("the agent protocol: {0}")]
    Protocol(String),
    #[error(transparent)]
    Runtime(#[from] runtime::RuntimeError),
    #[error("the agent's data dir {path}: {message}")]
    DataDir { path: PathBuf, message: String },
    #[error("container instance {0} was deregistered")]
    Deregistered(String),
}

/// An agent's flags.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// `http://host:port` of a berth server, or of several sharing one store, separated by
    /// commas: the agent moves to the next when its server cannot be reached.
    pub server: String,
    pub cluster: String,
    /// The cluster's region; `None`: the server's home region.
    pub region: Option<String>,
    /// The cluster registration token; needed only to join the first time.
    pub token: Option<String>,
    pub data_dir: PathBuf,
    pub attributes: BTreeMap<String, String>,
    pub availability_zone: Option<String>,
    pub instance_type: Option<String>,
    /// MiB of the host's memory kept away from tasks.
    pub reserved_memory: i64,
    /// Register as an EXTERNAL (ECS Anywhere style) instance, id `mi-…`.
    pub external: bool,
    /// Override the CPU units and MiB the host offers (default: what it has).
    pub cpu: Option<i32>,
    pub memory: Option<i32>,
    pub cleanup_after: Duration,
    pub default_stop_timeout: i64,
    pub poll_wait: Duration,
    pub tick: Duration,
    /// Stop this instance's containers when the agent exits (default: leave them running).
    pub stop_tasks_on_exit: bool,
    /// The task metadata endpoint's port (0: any free one; `None`: no endpoint).
    pub metadata_port: Option<u16>,
    /// Where to serve the agent's Prometheus `/metrics` (`None`: not served).
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// How often running tasks' resource use is sampled and sent (`None`: never).
    pub stats_interval: Option<Duration>,
    /// Keep warm pause containers on the subnets of `awsvpc` tasks ([`spares`]).
    pub warm_spares: bool,
}

impl AgentConfig {
    pub fn new(server: &str, cluster: &str, data_dir: PathBuf) -> Self {
        AgentConfig {
            server: server.into(),
            cluster: cluster.into(),
            region: None,
            token: None,
            data_dir,
            attributes: BTreeMap::new(),
            availability_zone: None,
            instance_type: None,
            reserved_memory: 0,
            external: false,
            cpu: None,
            memory: None,
            cleanup_after: Duration::from_secs(3 * 3600),
            default_stop_timeout: 30,
            poll_wait: Duration::from_secs(20),
            tick: Duration::from_millis(500),
            stop_tasks_on_exit: false,
            metadata_port: Some(METADATA_PORT),
            metrics_listen: None,
            stats_interval: Some(Duration::from_secs(20)),
            warm_spares: true,
        }
    }
}

fn host_memory_mib() -> i64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<i64>().ok())
        })
        .map(|kb| kb / 1024)
        .unwrap_or(1024)
}

fn random_hex(n: usize) -> String {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    (0..n)
        .map(|_| char::from_digit(rng.gen_range(0..16), 16).unwrap_or('0'))
        .collect()
}

/// The container-instance attribute holding the address load balancers send this host's
/// `instance` targets' traffic to.
pub const ADDRESS_ATTRIBUTE: &str = "berth.address";

/// The local address this host uses to reach `server` (a URL): a UDP socket "connected" to
/// it, which sends nothing, knows which of the host's addresses the route leaves from.
fn local_address(server: &str) -> Option<std::net::IpAddr> {
    use std::net::ToSocketAddrs;
    let rest = server.split_once("://").map_or(server, |(_, r)| r);
    let authority = rest.split('/').next()?;
    let with_port = if authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let target = with_port.to_socket_addrs().ok()?.next()?;
    let bind = if target.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    let socket = std::net::UdpSocket::bind(bind).ok()?;
    socket.connect(target).ok()?;
    Some(socket.local_addr().ok()?.ip())
}

fn host_info(
    cfg: &AgentConfig,
    instance_id: &str,
    docker_version: &str,
    log_drivers: &[String],
) -> HostInfo {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get() as i32)
        .unwrap_or(1);
    let memory = cfg
        .memory
        .map(i64::from)
        .unwrap_or_else(|| host_memory_mib() - cfg.reserved_memory)
        .max(0);
    let mut attributes: BTreeMap<String, Option<String>> =
        CAPABILITIES.iter().map(|c| (c.to_string(), None)).collect();
    if awsvpc_supported() {
        attributes.insert(TASK_ENI_CAPABILITY.into(), None);
    }
    // Every log driver the local Docker has is passed to it as given.
    for d in log_drivers {
        attributes.insert(
            format!("com.amazonaws.ecs.capability.logging-driver.{d}"),
            None,
        );
    }
    attributes.insert("ecs.os-type".into(), Some("linux".into()));
    attributes.insert("ecs.os-family".into(), Some("LINUX".into()));
    let arch = match std::env::consts::ARCH {
        "aarch64" => "arm64",
        other => other,
    };
    attributes.insert("ecs.cpu-architecture".into(), Some(arch.into()));
    attributes.insert(
        "ecs.availability-zone".into(),
        Some(
            cfg.availability_zone
                .clone()
                .unwrap_or_else(|| "local-1a".into()),
        ),
    );
    attributes.insert(
        "ecs.instance-type".into(),
        Some(
            cfg.instance_type
                .clone()
                .unwrap_or_else(|| "berth.host".into()),
        ),
    );
    // Where load balancers reach this host's tasks: the address it uses toward the server,
    // unless `--attribute berth.address=IP` says otherwise.
    let first = cfg.server.split(',').next().unwrap_or(&cfg.server).trim();
    if let Some(ip) = local_address(first) {
        attributes.insert(ADDRESS_ATTRIBUTE.into(), Some(ip.to_string()));
    }
    for (k, v) in &cfg.attributes {
        attributes.insert(k.clone(), Some(v.clone()));
    }
    HostInfo {
        instance_id: instance_id.into(),
        cpu: cfg.cpu.unwrap_or(cores * 1024),
        memory_mib: i32::try_from(memory).unwrap_or(i32::MAX),
        reserved_ports: RESERVED_PORTS.to_vec(),
        attributes,
        agent_version: AGENT_VERSION.into(),
        docker_version: docker_version.into(),
    }
}

fn identity_path(cfg: &AgentConfig) -> PathBuf {
    cfg.data_dir.join("agent.json")
}

fn data_dir_error(cfg: &AgentConfig, e: impl std::fmt::Display) -> AgentError {
    AgentError::DataDir {
        path: cfg.data_dir.clone(),
        message: e.to_string(),
    }
}

/// The identity kept in the data dir, or a new one from joining with the token.
async fn identity(
    cfg: &AgentConfig,
    client: &ServerClient,
    docker_version: &str,
    log_drivers: &[String],
) -> Result<Identity, AgentError> {
    let path = identity_path(cfg);
    if let Ok(text) = std::fs::read_to_string(&path) {
        let mut id: Identity = serde_json::from_str(&text).map_err(|e| data_dir_error(cfg, e))?;
        if id.cluster == cfg.cluster {
            // The same server may have moved to another address; the key says who we are.
            id.server = cfg.server.clone();
            return Ok(id);
        }
        tracing::warn!(
            "the data dir's identity is for cluster {}; joining {} afresh",
            id.cluster,
            cfg.cluster
        );
    }
    let token = cfg.token.clone().ok_or_else(|| {
        AgentError::Refused(
            "this host has not joined yet: give the cluster registration token (--token or BERTH_JOIN_TOKEN)".into(),
        )
    })?;
    let instance_id = format!(
        "{}-{}",
        if cfg.external { "mi" } else { "i" },
        random_hex(17)
    );
    let resp = client
        .join(&JoinRequest {
            cluster: cfg.cluster.clone(),
            token,
            host: host_info(cfg, &instance_id, docker_version, log_drivers),
            region: cfg.region.clone(),
        })
        .await?;
    let id = Identity {
        server: cfg.server.clone(),
        cluster: cfg.cluster.clone(),
        instance_id,
        container_instance_arn: resp.container_instance_arn,
        cluster_arn: resp.cluster_arn,
        region: resp.region,
        access_key_id: resp.access_key_id,
        secret_access_key: resp.secret_access_key,
    };
    std::fs::create_dir_all(&cfg.data_dir).map_err(|e| data_dir_error(cfg, e))?;
    let tmp = path.with_extension("tmp");
    let text = serde_json::to_vec_pretty(&id).map_err(|e| data_dir_error(cfg, e))?;
    std::fs::write(&tmp, text).map_err(|e| data_dir_error(cfg, e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| data_dir_error(cfg, e))?;
    }
    std::fs::rename(&tmp, &path).map_err(|e| data_dir_error(cfg, e))?;
    tracing::info!(instance = id.container_instance_arn, "joined the cluster");
    Ok(id)
}

/// Sends the reporter's batch whenever there is one, until `stop` turns true.
async fn report_loop(
    client: ServerClient,
    id: Identity,
    reporter: Arc<Reporter>,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(200);
    loop {
        let batch = reporter.batch();
        if !batch.is_empty() {
            let reports = batch.iter().map(|(_, r)| r.clone()).collect();
            match client.report(&id, reports).await {
                Ok(_) => {
                    reporter.acknowledge(&batch);
                    backoff = Duration::from_millis(200);
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "reporting failed; will resend");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.changed() => return,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            }
        }
        if *stop.borrow() {
            return;
        }
        tokio::select! {
            _ = reporter.notify.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            _ = stop.changed() => {
                // One last flush of what is pending.
                let batch = reporter.batch();
                if !batch.is_empty() {
                    let reports = batch.iter().map(|(_, r)| r.clone()).collect();
                    if client.report(&id, reports).await.is_ok() {
                        reporter.acknowledge(&batch);
                    }
                }
                return;
            }
        }
    }
}

/// The task loops this agent runs, by task ARN.
#[derive(Default)]
struct Tasks {
    running: HashMap<String, watch::Sender<DesiredTask>>,
    /// Tasks whose loop ended, so a stale desired set does not start them again.
    finished: HashMap<String, Instant>,
}

impl Tasks {
    fn sync(&mut self, ctx: &Arc<EngineContext>, desired: Vec<DesiredTask>) {
        let closed: Vec<String> = self
            .running
            .iter()
            .filter(|(_, tx)| tx.is_closed())
            .map(|(k, _)| k.clone())
            .collect();
        for k in closed {
            self.running.remove(&k);
            self.finished.insert(k, Instant::now());
        }
        self.finished
            .retain(|_, at| at.elapsed() < Duration::from_secs(3600));
        for t in desired {
            match self.running.get(&t.task_arn) {
                Some(tx) => {
                    tx.send_if_modified(|cur| {
                        if *cur != t {
                            *cur = t.clone();
                            true
                        } else {
                            false
                        }
                    });
                }
                None if self.finished.contains_key(&t.task_arn) => {}
                None => {
                    let arn = t.task_arn.clone();
                    let (tx, rx) = watch::channel(t);
                    tokio::spawn(engine::run_task(ctx.clone(), rx));
                    self.running.insert(arn, tx);
                }
            }
        }
    }
}

/// Stops and removes this instance's spare pause containers that no task has taken.
async fn remove_spares(runtime: &Arc<dyn Runtime>, instance_arn: &str) {
    let Ok(list) = runtime.list(labels::INSTANCE, instance_arn).await else {
        return;
    };
    for c in list {
        if c.labels.contains_key(spares::SPARE_LABEL) && spares::taken_by(&c.name).is_none() {
            engine::remove_pause(runtime.as_ref(), &c.id).await;
        }
    }
}

/// Stops and, after the cleanup delay, removes containers of this instance whose task no
/// loop owns and the server no longer wants (a spare pause container a task took goes with
/// the task: its name ends with the task's id).
async fn sweep(
    runtime: &Arc<dyn Runtime>,
    logs: Option<&logship::Shipper>,
    instance_arn: &str,
    owned: &HashSet<String>,
    cleanup_after: Duration,
) {
    let list = match runtime.list(labels::INSTANCE, instance_arn).await {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list containers");
            return;
        }
    };
    for c in list {
        if c.labels.contains_key(spares::SPARE_LABEL) {
            let gone = spares::taken_by(&c.name)
                .is_some_and(|id| !owned.iter().any(|t| t.ends_with(&format!("/{id}"))));
            if gone {
                tracing::info!(
                    container = c.id,
                    "removing the pause container of a task the server no longer has"
                );
                engine::remove_pause(runtime.as_ref(), &c.id).await;
            }
            continue;
        }
        let Some(task) = c.labels.get(labels::TASK_ARN) else {
            continue;
        };
        if owned.contains(task) {
            continue;
        }
        if c.running {
            tracing::info!(
                task,
                container = c.id,
                "stopping a container of a task the server no longer has"
            );
            let _ = runtime.stop(&c.id, 30).await;
        } else if let Ok(Some(o)) = runtime.inspect(&c.id).await {
            let old = o
                .finished_at
                .is_none_or(|f| engine::now() - f > cleanup_after.as_secs_f64());
            // Never while its output is still being shipped.
            if old && !logs.is_some_and(|l| l.busy(&c.id)) {
                let _ = runtime.remove(&c.id).await;
            }
        }
    }
}

/// Starts the task metadata endpoint on the Docker bridge's gateway (or loopback when there is
/// none) at `--metadata-port`; `None`, said loudly, when it cannot listen.
async fn metadata_endpoint(
    cfg: &AgentConfig,
    runtime: &Arc<dyn Runtime>,
    client: &ServerClient,
    id: &Identity,
) -> Option<Arc<metadata::Metadata>> {
    let port = cfg.metadata_port?;
    let ip: std::net::IpAddr = match runtime.bridge_gateway().await {
        Ok(Some(ip)) => ip.parse().ok()?,
        _ => std::net::Ipv4Addr::LOCALHOST.into(),
    };
    let server = (client.clone(), id.clone());
    match metadata::Metadata::serve((ip, port).into(), runtime.clone(), server).await {
        Ok(m) => {
            tracing::info!(endpoint = m.base, "task metadata endpoint");
            Some(m)
        }
        Err(e) => {
            tracing::warn!(%ip, port, error = %e, "cannot serve the task metadata endpoint; containers get no ECS_CONTAINER_METADATA_URI_V4");
            None
        }
    }
}

/// Runs the agent until `shutdown` completes. Containers keep running when it returns.
pub async fn run(
    cfg: AgentConfig,
    runtime: Arc<dyn Runtime>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AgentError> {
    // Every Docker call is timed for /metrics.
    let metrics = Arc::new(metrics::AgentMetrics::new());
    let runtime: Arc<dyn Runtime> = Arc::new(metrics::Timed {
        inner: runtime,
        metrics: metrics.clone(),
    });
    let docker_version = runtime.version().await?;
    let log_drivers = runtime.log_drivers().await?;
    let client = ServerClient::new(&cfg.server);
    let mut shutdown = std::pin::pin!(shutdown);
    // Joining waits for the server to come up.
    let mut backoff = Duration::from_millis(200);
    let id = loop {
        match identity(&cfg, &client, &docker_version, &log_drivers).await {
            Ok(id) => break id,
            Err(e @ (AgentError::Refused(_) | AgentError::DataDir { .. })) => return Err(e),
            Err(e) => {
                tracing::warn!(error = %e, "cannot join yet; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = &mut shutdown => return Ok(()),
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    };
    let reporter = Arc::new(Reporter::default());
    let ctx = Arc::new(EngineContext {
        runtime: runtime.clone(),
        reporter: reporter.clone(),
        instance_arn: id.container_instance_arn.clone(),
        cleanup_after: cfg.cleanup_after,
        default_stop_timeout: cfg.default_stop_timeout,
        tick: cfg.tick,
        registry: Default::default(),
        logs: Some(Arc::new(logship::Shipper::new(
            client.clone(),
            id.clone(),
            metrics.clone(),
        ))),
        metadata: metadata_endpoint(&cfg, &runtime, &client, &id).await,
        availability_zone: cfg
            .availability_zone
            .clone()
            .unwrap_or_else(|| "local-1a".into()),
        security_groups: watch::Sender::new(BTreeMap::new()),
        networks: Default::default(),
        warm_spares: cfg.warm_spares,
        dns_servers: engine::resolvers(
            &std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
        ),
    });
    // Spares of an earlier run are nobody's: a task takes only those this run starts.
    remove_spares(&runtime, &id.container_instance_arn).await;
    if let Some(addr) = cfg.metrics_listen {
        match metrics
            .serve(addr, runtime.clone(), id.container_instance_arn.clone())
            .await
        {
            Ok(bound) => tracing::info!(%bound, "agent metrics on /metrics"),
            Err(e) => tracing::warn!(%addr, error = %e, "cannot serve the agent's /metrics"),
        }
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let reports = tokio::spawn(report_loop(
        client.clone(),
        id.clone(),
        reporter.clone(),
        stop_rx.clone(),
    ));
    // Each desired task's reservation, for the stats sampler.
    let reserved: Arc<std::sync::Mutex<HashMap<String, (u32, u32)>>> = Arc::default();
    let sampler = cfg.stats_interval.map(|every| {
        tokio::spawn(stats::run(
            runtime.clone(),
            client.clone(),
            id.clone(),
            reserved.clone(),
            every,
            stop_rx.clone(),
        ))
    });
    let mut tasks = Tasks::default();
    let mut known: Option<String> = None;
    // The desired set as of `known`, by task ARN: answers may carry only what changed.
    let mut desired: std::collections::BTreeMap<String, DesiredTask> = Default::default();
    let mut backoff = Duration::from_millis(200);
    let mut last_sweep: Option<Instant> = None;
    let result = loop {
        let poll = tokio::select! {
            r = client.poll(&id, known.clone(), cfg.poll_wait) => r,
            _ = &mut shutdown => break Ok(()),
        };
        match poll {
            Ok(resp) => {
                backoff = Duration::from_millis(200);
                if resp.instance_status == "INACTIVE" {
                    break Err(AgentError::Deregistered(id.container_instance_arn.clone()));
                }
                if known.is_none() {
                    tracing::info!(
                        instance = id.container_instance_arn,
                        tasks = resp.tasks.len(),
                        "connected to the server"
                    );
                }
                known = Some(resp.version);
                if resp.registry.is_some() {
                    *ctx.registry.write().unwrap_or_else(|e| e.into_inner()) = resp.registry;
                }
                let wanted: HashSet<String> = desired
                    .keys()
                    .chain(resp.tasks.iter().map(|t| &t.task_arn))
                    .cloned()
                    .collect();
                if !resp.unchanged {
                    // Before the tasks: a new awsvpc task applies its groups' rules at once.
                    let groups = resp.security_groups;
                    ctx.security_groups.send_if_modified(|cur| {
                        if *cur == groups {
                            false
                        } else {
                            *cur = groups;
                            true
                        }
                    });
                    if !resp.changes {
                        desired.clear();
                    }
                    for arn in &resp.removed {
                        desired.remove(arn);
                    }
                    for t in resp.tasks {
                        desired.insert(t.task_arn.clone(), t);
                    }
                    tasks.sync(&ctx, desired.values().cloned().collect());
                    if let Ok(mut r) = reserved.lock() {
                        *r = desired
                            .iter()
                            .map(|(k, t)| (k.clone(), t.reserved()))
                            .collect();
                    }
                    metrics.tasks.set(tasks.running.len() as i64);
                }
                if last_sweep.is_none_or(|t| t.elapsed() > Duration::from_secs(30)) {
                    let mut owned: HashSet<String> = tasks.running.keys().cloned().collect();
                    owned.extend(wanted);
                    sweep(
                        &runtime,
                        ctx.logs.as_deref(),
                        &id.container_instance_arn,
                        &owned,
                        cfg.cleanup_after,
                    )
                    .await;
                    last_sweep = Some(Instant::now());
                }
            }
            Err(AgentError::Refused(msg)) => {
                break Err(AgentError::Refused(msg));
            }
            Err(e) => {
                if known.is_some() {
                    tracing::warn!(error = %e, "lost the server; containers keep running, retrying");
                }
                known = None;
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = &mut shutdown => break Ok(()),
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    };
    if cfg.stop_tasks_on_exit {
        // Every task loop stops its containers and reports it, before the reports stop.
        for tx in tasks.running.values() {
            tx.send_modify(|t| {
                t.desired_status = "STOPPED".into();
                t.stop_reason = Some(engine::AGENT_EXIT_REASON.into());
            });
        }
        let deadline =
            Instant::now() + Duration::from_secs(cfg.default_stop_timeout.max(0) as u64 + 30);
        while Instant::now() < deadline
            && !tasks
                .running
                .keys()
                .all(|arn| reporter.stop_acknowledged(arn))
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    drop(tasks);
    // No refill adds spares from here on; those one is starting are found by their label.
    let drained = ctx.networks.lock().await.drain();
    for spare in drained {
        engine::remove_pause(runtime.as_ref(), &spare.id).await;
    }
    remove_spares(&runtime, &id.container_instance_arn).await;
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), reports).await;
    if let Some(s) = sampler {
        s.abort();
    }
    result
}
