//! The task engine: one [`run_task`] loop owns each task, from pulling its images through
//! stopping its containers to removing them. Only that loop changes the task's observed state;
//! the server's wishes arrive on a watch channel, the observations leave through the
//! [`Reporter`].
//!
//! A container is found by its deterministic name before it is created, so a restarted agent
//! adopts what is running instead of starting it twice.
//!
//! An `awsvpc` task (one with a [`TaskNetwork`]) first gets a pause container on its subnet's
//! Docker network, at the task's address: its containers join the pause container's network
//! namespace, where the task's security groups are enforced ([`crate::firewall`]). The pause
//! container goes right after the task's containers have stopped and before the task is
//! reported STOPPED, because the server gives the address to another task when it records that.
//!
//! A task with a task-level `cpu` or `memory` first gets a cgroup of its own that every one of
//! its containers (the pause container too) is made in, capping them together
//! ([`crate::cgroup`]). It goes once they are removed, or when the task fails to start.

use crate::client::Reporter;
use crate::runtime::{CreateSpec, HealthcheckSpec, Observed, Runtime, RuntimeError};
use berth_agent_proto::{
    labels, subnet_network, ContainerPlan, ContainerReport, DesiredTask, SecurityPolicy,
    TaskNetwork, TaskReport,
};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

/// The stop reason of tasks stopped because their agent exits with `--stop-tasks-on-exit`.
pub const AGENT_EXIT_REASON: &str =
    "The container instance's agent stopped with --stop-tasks-on-exit";

/// The ECS agent's name for the pause container of an `awsvpc` task (its container-name label;
/// the Docker name leaves out the `~`, see [`container_name`]).
pub const PAUSE_NAME: &str = "~internal~ecs~pause";

/// The label of the Docker network the agent keeps for a subnet: the subnet's id.
pub const SUBNET_LABEL: &str = "io.berth.subnet";

/// What every task loop shares.
#[derive(Debug)]
pub struct EngineContext {
    pub runtime: Arc<dyn Runtime>,
    pub reporter: Arc<Reporter>,
    pub instance_arn: String,
    /// How long stopped containers stay before they are removed.
    pub cleanup_after: Duration,
    /// SIGTERM→SIGKILL grace when a container definition gives no `stopTimeout`.
    pub default_stop_timeout: i64,
    /// How often running containers are inspected.
    pub tick: Duration,
    /// The server registry's latest pull credentials, from the last poll.
    pub registry: std::sync::RwLock<Option<berth_agent_proto::RegistryCredentials>>,
    /// Ships awslogs containers' output; `None` where no server takes it (engine tests).
    pub logs: Option<Arc<crate::logship::Shipper>>,
    /// The task metadata endpoint; `None` when it could not listen.
    pub metadata: Option<Arc<crate::metadata::Metadata>>,
    /// The instance's zone, as the metadata endpoint shows it.
    pub availability_zone: String,
    /// The rules of the security groups of the instance's `awsvpc` tasks, by `sg-…` id, as
    /// the latest poll answer has them. Task loops watch it and re-apply their rules.
    pub security_groups: watch::Sender<BTreeMap<String, SecurityPolicy>>,
    /// The subnets' networks and their warm pause containers ([`crate::spares`]). Held while
    /// a task joins a network (made if missing) and while one leaves it (removed by the last):
    /// so no task removes a network another is joining.
    pub networks: tokio::sync::Mutex<crate::spares::Subnets>,
    /// Whether each subnet network keeps warm pause containers ([`crate::spares::SPARES`]).
    pub warm_spares: bool,
    /// The resolvers Docker's embedded DNS server forwards to (from inside each task's
    /// namespace): security groups always let DNS to them out ([`resolvers`]).
    pub dns_servers: Vec<std::net::Ipv4Addr>,
}

/// The IPv4 resolvers of `resolv_conf` (the host's `/etc/resolv.conf`) that Docker forwards
/// to: its nameservers but loopback ones, or Docker's fallbacks (8.8.8.8, 8.8.4.4) when none
/// is left. Pure.
pub fn resolvers(resolv_conf: &str) -> Vec<std::net::Ipv4Addr> {
    let found: Vec<std::net::Ipv4Addr> = resolv_conf
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|a| a.trim().parse::<std::net::Ipv4Addr>().ok())
        .filter(|a| !a.is_loopback())
        .collect();
    if found.is_empty() {
        vec![
            std::net::Ipv4Addr::new(8, 8, 8, 8),
            std::net::Ipv4Addr::new(8, 8, 4, 4),
        ]
    } else {
        found
    }
}

pub(crate) fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as f64 / 1000.0)
        .unwrap_or(0.0)
}

fn task_id(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap_or(arn)
}

fn cluster_name(cluster_arn: &str) -> &str {
    cluster_arn.rsplit('/').next().unwrap_or(cluster_arn)
}

/// The Docker name of a task's container: deterministic, so it identifies the container across
/// agent restarts, and Docker refuses a second one. Characters Docker does not allow in a name
/// are left out, as the ECS agent does (its pause container is `ecs-…-internalecspause-…`).
pub fn container_name(t: &DesiredTask, c: &str) -> String {
    let c: String = c
        .chars()
        .filter(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '_' | '.' | '-'))
        .collect();
    format!(
        "ecs-{}-{}-{}-{}",
        t.family,
        t.revision,
        c,
        task_id(&t.task_arn)
    )
}

fn volume_name(t: &DesiredTask, v: &str) -> String {
    format!(
        "ecs-{}-{}-{}-{}",
        t.family,
        t.revision,
        v,
        task_id(&t.task_arn)
    )
}

/// The container to create for `c` of task `t` on the instance `instance_arn`. Pure.
pub fn create_spec(t: &DesiredTask, c: &ContainerPlan, instance_arn: &str) -> CreateSpec {
    let mut lbls: HashMap<String, String> = c
        .docker_labels
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    lbls.insert(labels::TASK_ARN.into(), t.task_arn.clone());
    lbls.insert(labels::CLUSTER.into(), cluster_name(&t.cluster_arn).into());
    lbls.insert(labels::CONTAINER_NAME.into(), c.name.clone());
    lbls.insert(labels::FAMILY.into(), t.family.clone());
    lbls.insert(labels::VERSION.into(), t.revision.to_string());
    lbls.insert(labels::INSTANCE.into(), instance_arn.into());
    let binds = c
        .mount_points
        .iter()
        .filter_map(|m| {
            let v = t.volumes.iter().find(|v| v.name == m.source_volume)?;
            let source = match (&v.host_path, &v.docker) {
                (Some(path), _) => path.clone(),
                (None, Some(d)) if d.scope == "shared" => v.name.clone(),
                _ => volume_name(t, &v.name),
            };
            Some(format!(
                "{source}:{}{}",
                m.container_path,
                if m.read_only { ":ro" } else { "" }
            ))
        })
        .collect();
    // Links and volumesFrom name the task's containers; Docker knows them by its names.
    let mut host = c.host.clone();
    host.links = host
        .links
        .iter()
        .map(|l| match l.split_once(':') {
            Some((name, alias)) => format!("{}:{alias}", container_name(t, name)),
            None => format!("{}:{l}", container_name(t, l)),
        })
        .collect();
    host.volumes_from = host
        .volumes_from
        .iter()
        .map(|(name, ro)| (container_name(t, name), *ro))
        .collect();
    CreateSpec {
        name: container_name(t, &c.name),
        image: c.image.clone(),
        cmd: c.command.clone(),
        entrypoint: c.entry_point.clone(),
        env: c
            .environment
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect(),
        working_dir: c.working_directory.clone(),
        user: c.user.clone(),
        hostname: c.hostname.clone(),
        labels: lbls,
        // As the ECS agent does: CPU units are Docker's shares, at least 2.
        cpu_shares: Some(i64::from(c.cpu.unwrap_or(0)).max(2)),
        memory_bytes: c.memory.map(|m| i64::from(m) * 1024 * 1024),
        memory_reservation_bytes: c.memory_reservation.map(|m| i64::from(m) * 1024 * 1024),
        ulimits: c
            .ulimits
            .iter()
            .map(|u| (u.name.clone(), u.soft, u.hard))
            .collect(),
        readonly_rootfs: c.readonly_root_filesystem,
        privileged: c.privileged,
        binds,
        network_mode: t.network_mode.clone(),
        storage_gib: t.ephemeral_storage_gib,
        ipv4_address: None,
        mac_address: None,
        ports: c
            .port_mappings
            .iter()
            .map(|p| {
                let host = if t.network_mode == "host" {
                    Some(p.container_port)
                } else {
                    p.host_port
                };
                (p.container_port, p.protocol.clone(), host)
            })
            .collect(),
        publish_ip: None,
        healthcheck: c.health_check.as_ref().map(|h| HealthcheckSpec {
            test: h.command.clone(),
            interval_ns: h.interval_s * 1_000_000_000,
            timeout_ns: h.timeout_s * 1_000_000_000,
            retries: h.retries,
            start_period_ns: h.start_period_s * 1_000_000_000,
        }),
        stop_timeout: c.stop_timeout.map(i64::from),
        log_config: crate::logship::docker_log_config(c),
        host,
        // The task's cgroup, when it has one, is the engine's to give.
        cgroup_parent: None,
    }
}

/// The pause container of an `awsvpc` task: it holds the task's network namespace on the
/// subnet's network at the task's address and MAC, and with a public address publishes every
/// container port of the task there (host port = container port). Labelled as the task's
/// containers are. Pure.
pub fn pause_spec(t: &DesiredTask, n: &TaskNetwork, instance_arn: &str) -> CreateSpec {
    let plan = ContainerPlan {
        name: PAUSE_NAME.into(),
        image: crate::pause::IMAGE.into(),
        command: Some(vec![crate::pause::PATH.into()]),
        essential: true,
        ..Default::default()
    };
    let mut spec = create_spec(t, &plan, instance_arn);
    spec.storage_gib = None;
    spec.network_mode = subnet_network(&n.subnet_id);
    spec.ipv4_address = Some(n.private_ip.clone());
    spec.mac_address = Some(n.mac.clone());
    spec.publish_ip = n.public_ip.clone();
    if n.public_ip.is_some() {
        let mut ports: Vec<(u16, String, Option<u16>)> = t
            .containers
            .iter()
            .flat_map(|c| &c.port_mappings)
            .map(|p| (p.container_port, p.protocol.clone(), Some(p.container_port)))
            .collect();
        ports.sort();
        ports.dedup();
        spec.ports = ports;
    }
    spec
}

/// Puts a task's container into the pause container's network namespace. Docker refuses
/// ports, a hostname, links, DNS settings and extra hosts there (ECS refuses them for `awsvpc`
/// too).
fn join_pause(spec: &mut CreateSpec, pause_id: &str) {
    spec.network_mode = format!("container:{pause_id}");
    spec.ports.clear();
    spec.hostname = None;
    spec.host.links.clear();
    spec.host.dns_servers.clear();
    spec.host.dns_search_domains.clear();
    spec.host.extra_hosts.clear();
}

/// Stops and removes a pause container (giving its address back), retrying the removal.
pub(crate) async fn remove_pause(rt: &dyn Runtime, id: &str) {
    if let Err(e) = rt.stop(id, 0).await {
        tracing::warn!(container = id, error = %e, "stopping a pause container failed");
    }
    for attempt in 1..=5 {
        match rt.remove(id).await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(
                    container = id,
                    attempt,
                    error = %e,
                    "removing a pause container failed"
                );
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Removes a spare at once (Docker kills it): it runs under the network lock, which every
/// task's network setup waits for. One that stays keeps its network, said in the log.
async fn discard_spare(rt: &dyn Runtime, id: &str) {
    if let Err(e) = rt.remove(id).await {
        tracing::warn!(container = id, error = %e, "removing a spare pause container failed");
    }
}

/// A spare pause container on `network` at the reserved address `ip`.
pub fn spare_spec(network: &str, subnet_id: &str, ip: &str, instance_arn: &str) -> CreateSpec {
    let instance = instance_arn.rsplit('/').next().unwrap_or(instance_arn);
    CreateSpec {
        name: format!(
            "{}{subnet_id}-{}-{instance}",
            crate::spares::SPARE_NAME_PREFIX,
            ip.replace('.', "-")
        ),
        image: crate::pause::IMAGE.into(),
        cmd: Some(vec![crate::pause::PATH.into()]),
        labels: HashMap::from([
            (labels::INSTANCE.to_string(), instance_arn.to_string()),
            (
                crate::spares::SPARE_LABEL.to_string(),
                subnet_id.to_string(),
            ),
        ]),
        network_mode: network.to_string(),
        ipv4_address: Some(ip.to_string()),
        ..Default::default()
    }
}

/// Starts the spares `network` lacks (one refill at a time per network). A slot another
/// agent's spare holds fails to start and is left for later.
async fn refill_spares(ctx: Arc<EngineContext>, network: String, subnet_id: String, cidr: String) {
    let slots = crate::spares::spare_slots(&cidr);
    let free = ctx.networks.lock().await.to_refill(&network, &slots);
    if free.is_empty() {
        return;
    }
    let rt = &ctx.runtime;
    let mut made = Vec::new();
    for ip in free {
        // A spare still being moved to its task may hold the name yet (it is renamed last):
        // then this slot waits for the next refill. Earlier runs' spares went at the start.
        let spec = spare_spec(&network, &subnet_id, &ip, &ctx.instance_arn);
        let started = match rt.create(&spec).await {
            Ok(id) => match rt.start(&id).await {
                Ok(()) => Ok(id),
                Err(e) => {
                    remove_pause(rt.as_ref(), &id).await;
                    Err(e)
                }
            },
            Err(e) => Err(e),
        };
        match started {
            Ok(id) => made.push(crate::spares::Spare { id, ip }),
            Err(e) => {
                tracing::debug!(network, ip, error = %e, "no spare pause container on this address")
            }
        }
    }
    let mut nets = ctx.networks.lock().await;
    let (gone, extra) = nets.refilled(&network, made);
    for s in extra {
        discard_spare(rt.as_ref(), &s.id).await;
    }
    if gone {
        if let Err(e) = rt.remove_network(&network).await {
            tracing::debug!(network, error = %e, "the subnet's network stays");
        }
    }
}

/// What became of a container, as the engine tracks it.
#[derive(Debug, Clone, Default)]
struct Ctr {
    plan: ContainerPlan,
    id: Option<String>,
    obs: Option<Observed>,
    /// Why it never ran or why it stopped, in ECS's words.
    reason: Option<String>,
    failed_to_start: bool,
}

impl Ctr {
    fn exited(&self) -> bool {
        self.obs.as_ref().is_some_and(|o| o.started && !o.running)
    }

    fn running(&self) -> bool {
        self.obs.as_ref().is_some_and(|o| o.running)
    }

    fn status(&self) -> &'static str {
        if self.running() {
            "RUNNING"
        } else if self.exited() || self.failed_to_start {
            "STOPPED"
        } else {
            "PENDING"
        }
    }

    fn health(&self) -> Option<String> {
        self.plan.health_check.as_ref()?;
        Some(
            match self.obs.as_ref().and_then(|o| o.health.as_deref()) {
                Some("healthy") if self.running() => "HEALTHY",
                Some("unhealthy") => "UNHEALTHY",
                _ => "UNKNOWN",
            }
            .to_string(),
        )
    }
}

/// Whether a container may start, given its dependencies.
enum Readiness {
    Ready,
    Wait,
    Never(String),
}

/// `now` is seconds since the epoch: a dependency with a `startTimeout` that has not reached
/// its condition that long after it started is given up on, as the ECS agent does.
fn readiness(c: &Ctr, all: &[Ctr], now: f64) -> Readiness {
    for d in &c.plan.depends_on {
        let Some(dep) = all.iter().find(|x| x.plan.name == d.container_name) else {
            return Readiness::Never(format!(
                "dependency {} is not a container of the task",
                d.container_name
            ));
        };
        if dep.failed_to_start {
            return Readiness::Never(format!("dependency {} failed to start", dep.plan.name));
        }
        let obs = dep.obs.as_ref();
        let exit = obs.and_then(|o| o.exit_code).filter(|_| dep.exited());
        let ok = match d.condition.as_str() {
            "START" => obs.is_some_and(|o| o.started),
            "COMPLETE" => dep.exited(),
            "SUCCESS" => match exit {
                Some(0) => true,
                Some(code) => {
                    return Readiness::Never(format!(
                        "dependency {} exited with code {code}, not 0 (condition SUCCESS)",
                        dep.plan.name
                    ))
                }
                None => false,
            },
            "HEALTHY" => {
                if dep.exited() || dep.health().as_deref() == Some("UNHEALTHY") {
                    return Readiness::Never(format!(
                        "dependency {} did not become healthy (condition HEALTHY)",
                        dep.plan.name
                    ));
                }
                dep.health().as_deref() == Some("HEALTHY")
            }
            other => {
                return Readiness::Never(format!("unknown dependency condition {other}"));
            }
        };
        if !ok {
            let started = obs.and_then(|o| o.started_at);
            if let (Some(limit), Some(at)) = (dep.plan.start_timeout.filter(|t| *t > 0), started) {
                if now > at + f64::from(limit) {
                    return Readiness::Never(format!(
                        "dependency {} did not reach {} within its startTimeout of {limit} s",
                        dep.plan.name, d.condition
                    ));
                }
            }
            return Readiness::Wait;
        }
    }
    Readiness::Ready
}

/// One task, owned by one loop.
struct TaskRun {
    ctx: Arc<EngineContext>,
    plan: DesiredTask,
    ctrs: Vec<Ctr>,
    last_status: &'static str,
    pull_started_at: Option<f64>,
    pull_stopped_at: Option<f64>,
    started_at: Option<f64>,
    stopping_at: Option<f64>,
    execution_stopped_at: Option<f64>,
    stop_code: Option<String>,
    stopped_reason: Option<String>,
    last_sent: Option<TaskReport>,
    /// An `awsvpc` task's pause container, once created (or adopted).
    pause: Option<String>,
    /// The ruleset last applied to the pause container's namespace.
    firewall: Option<String>,
    /// The cgroup parent of the task's containers: the task's own cgroup, once made (or
    /// found after a restart), when the task has a task-level size and the host can.
    cgroup: Option<String>,
    /// Whether the task's cgroup was removed.
    cgroup_removed: bool,
    /// Whether the task is counted as a user of its subnet's network.
    joined: bool,
}

impl TaskRun {
    fn report(&self) -> TaskReport {
        let essentials_with_checks: Vec<String> = self
            .ctrs
            .iter()
            .filter(|c| c.plan.essential)
            .filter_map(|c| c.health())
            .collect();
        let health = if essentials_with_checks.iter().any(|h| h == "UNHEALTHY") {
            "UNHEALTHY"
        } else if !essentials_with_checks.is_empty()
            && essentials_with_checks.iter().all(|h| h == "HEALTHY")
        {
            "HEALTHY"
        } else {
            "UNKNOWN"
        };
        TaskReport {
            task_arn: self.plan.task_arn.clone(),
            last_status: self.last_status.to_string(),
            pull_started_at: self.pull_started_at,
            pull_stopped_at: self.pull_stopped_at,
            started_at: self.started_at,
            stopping_at: self.stopping_at,
            execution_stopped_at: self.execution_stopped_at,
            stop_code: self.stop_code.clone(),
            stopped_reason: self.stopped_reason.clone(),
            health_status: Some(health.to_string()),
            containers: self
                .ctrs
                .iter()
                .map(|c| ContainerReport {
                    name: c.plan.name.clone(),
                    runtime_id: c.id.clone(),
                    last_status: c.status().to_string(),
                    exit_code: c
                        .obs
                        .as_ref()
                        .filter(|_| c.exited())
                        .and_then(|o| o.exit_code)
                        .map(|e| e as i32),
                    reason: c.reason.clone(),
                    // An awsvpc task's ports are its interface's: no host bindings, as in ECS.
                    network_bindings: c
                        .obs
                        .as_ref()
                        .filter(|_| self.plan.network.is_none())
                        .map(|o| o.bindings.clone())
                        .unwrap_or_default(),
                    health_status: c.health(),
                    image_digest: c.obs.as_ref().and_then(|o| o.image_id.clone()),
                })
                .collect(),
        }
    }

    /// Shows the task on the metadata endpoint as it is now.
    fn show(&self, report: &TaskReport) {
        let Some(m) = &self.ctx.metadata else {
            return;
        };
        m.update(crate::metadata::TaskView {
            plan: self.plan.clone(),
            report: report.clone(),
            containers: self
                .ctrs
                .iter()
                .map(|c| crate::metadata::ContainerView {
                    docker_name: container_name(&self.plan, &c.plan.name),
                    docker_id: c.id.clone(),
                    image_id: c.obs.as_ref().and_then(|o| o.image_id.clone()),
                    labels: c.obs.as_ref().map(|o| o.labels.clone()).unwrap_or_default(),
                    // An awsvpc task's containers share its interface's address.
                    ip_address: match &self.plan.network {
                        Some(n) => Some(n.private_ip.clone()),
                        None => c.obs.as_ref().and_then(|o| o.ip_address.clone()),
                    },
                    started_at: c.obs.as_ref().and_then(|o| o.started_at),
                    finished_at: c.obs.as_ref().and_then(|o| o.finished_at),
                })
                .collect(),
            availability_zone: self.ctx.availability_zone.clone(),
        });
    }

    /// Sends the task's state if it changed since the last report (and shows it on the
    /// metadata endpoint).
    fn publish(&mut self) {
        let r = self.report();
        self.show(&r);
        if self.last_sent.as_ref() != Some(&r) {
            self.ctx.reporter.submit(r.clone());
            self.last_sent = Some(r);
        }
    }

    /// Decides the task must stop, keeping the first reason.
    fn must_stop(&mut self, code: &str, reason: String) {
        if self.stop_code.is_none() {
            self.stop_code = Some(code.into());
            self.stopped_reason = Some(reason);
            self.stopping_at = Some(now());
        }
    }

    /// Whether an `awsvpc` task's pause container stopped or went away (an inspection that
    /// fails says nothing: it is asked again next tick).
    async fn pause_lost(&self) -> bool {
        let Some(id) = &self.pause else {
            return false;
        };
        matches!(
            self.ctx.runtime.inspect(id).await,
            Ok(None) | Ok(Some(Observed { running: false, .. }))
        )
    }

    async fn observe(&mut self) -> Result<(), RuntimeError> {
        for c in &mut self.ctrs {
            if let Some(id) = &c.id {
                let seen = self.ctx.runtime.inspect(id).await?;
                if seen.is_none() && c.obs.is_some() {
                    // Removed behind our back (`docker rm -f`): it has stopped, code unknown.
                    c.reason = Some("the container was removed outside Berth".into());
                    c.obs = Some(Observed {
                        id: id.clone(),
                        started: true,
                        running: false,
                        ..Default::default()
                    });
                    continue;
                }
                c.obs = seen;
                if let Some(o) = &c.obs {
                    if o.oom_killed && c.exited() {
                        c.reason =
                            Some("OutOfMemoryError: Container killed due to memory usage".into());
                    } else if let (Some(err), true) = (&o.error, c.reason.is_none()) {
                        c.reason = Some(err.clone());
                    }
                }
            }
        }
        Ok(())
    }

    /// Finds containers a previous agent run created, and goes on shipping their output.
    async fn adopt(&mut self) -> Result<bool, RuntimeError> {
        let mut any = false;
        for c in &mut self.ctrs {
            let name = container_name(&self.plan, &c.plan.name);
            if let Some(o) = self.ctx.runtime.inspect(&name).await? {
                if o.labels.get(labels::TASK_ARN) == Some(&self.plan.task_arn) {
                    c.id = Some(o.id.clone());
                    c.obs = Some(o);
                    any = true;
                }
            }
        }
        for i in 0..self.ctrs.len() {
            self.follow_logs(i);
        }
        if self.plan.network.is_some() {
            let name = container_name(&self.plan, PAUSE_NAME);
            if let Some(o) = self.ctx.runtime.inspect(&name).await? {
                // Its own, or a spare moved to it (which keeps the spare's labels).
                if o.labels.get(labels::TASK_ARN) == Some(&self.plan.task_arn)
                    || o.labels.contains_key(crate::spares::SPARE_LABEL)
                {
                    self.pause = Some(o.id);
                }
            }
        }
        Ok(any)
    }

    /// For an `awsvpc` task, before any of its containers is created: the subnet's network,
    /// the pause container on it (a warm spare moved to the task's address, or one created
    /// for it, unless adopted; started unless running), and the task's security groups on its
    /// interface. The error is the task's stopped reason.
    async fn setup_network(&mut self) -> Result<(), String> {
        let Some(n) = self.plan.network.clone() else {
            return Ok(());
        };
        let ctx = self.ctx.clone();
        let rt = &ctx.runtime;
        let failed =
            |e: RuntimeError| format!("ResourceInitializationError: failed to configure ENI: {e}");
        rt.ensure_pause_image().await.map_err(failed)?;
        let network = subnet_network(&n.subnet_id);
        let spare = {
            let mut nets = ctx.networks.lock().await;
            let lbls = HashMap::from([(SUBNET_LABEL.to_string(), n.subnet_id.clone())]);
            rt.ensure_network(&network, &n.subnet_cidr, &n.gateway, &lbls)
                .await
                .map_err(failed)?;
            // Counted from here on, the network stays until the task leaves it.
            let want = ctx.warm_spares && self.pause.is_none() && n.public_ip.is_none();
            let spare = match self.joined {
                true => None,
                false => nets.join(&network, want),
            };
            self.joined = true;
            spare
        };
        let name = container_name(&self.plan, PAUSE_NAME);
        if let Some(spare) = spare {
            match rt
                .readdress(&spare.id, &network, &n.private_ip, &n.mac, &name)
                .await
            {
                // Docker takes a name wherever it takes an id.
                Ok(()) => self.pause = Some(name.clone()),
                Err(e) => {
                    tracing::warn!(container = spare.id, error = %e, "a spare pause container could not be moved; making one");
                    remove_pause(rt.as_ref(), &spare.id).await;
                }
            }
        }
        let id = match &self.pause {
            Some(id) => id.clone(),
            None => self.make_pause(&n, &network).await.map_err(failed)?,
        };
        let running = rt
            .inspect(&id)
            .await
            .map_err(failed)?
            .is_some_and(|o| o.running);
        if !running {
            rt.start(&id).await.map_err(failed)?;
        }
        if ctx.warm_spares {
            tokio::spawn(refill_spares(
                ctx.clone(),
                network,
                n.subnet_id.clone(),
                n.subnet_cidr.clone(),
            ));
        }
        self.enforce_firewall().await.map_err(failed)?;
        tracing::info!(
            task = self.plan.task_arn,
            eni = n.eni_id,
            ip = n.private_ip,
            "task network ready"
        );
        Ok(())
    }

    /// Creates and starts the task's own pause container. When that fails, it is removed,
    /// the subnet's network made again and the pause tried once more: another agent on this
    /// host may have removed the network just then (Docker keeps a network only while a
    /// running container is on it, and each agent counts only its own tasks).
    async fn make_pause(&mut self, n: &TaskNetwork, network: &str) -> Result<String, RuntimeError> {
        let rt = self.ctx.runtime.clone();
        let mut spec = pause_spec(&self.plan, n, &self.ctx.instance_arn);
        spec.cgroup_parent = self.cgroup.clone();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let made = match rt.create(&spec).await {
                Ok(id) => {
                    self.pause = Some(id.clone());
                    rt.start(&id).await.map(|()| id)
                }
                Err(e) => Err(e),
            };
            let e = match made {
                Ok(id) => return Ok(id),
                Err(e) if attempt >= 2 => return Err(e),
                Err(e) => e,
            };
            tracing::warn!(task = self.plan.task_arn, error = %e, "the pause container did not start; making the network and trying again");
            if let Some(id) = self.pause.take() {
                remove_pause(rt.as_ref(), &id).await;
            }
            let _held = self.ctx.networks.lock().await;
            let lbls = HashMap::from([(SUBNET_LABEL.to_string(), n.subnet_id.clone())]);
            rt.ensure_network(network, &n.subnet_cidr, &n.gateway, &lbls)
                .await?;
        }
    }

    /// The ruleset of the task's security groups as the latest poll has them (a group missing
    /// there adds no rules); `None` for a task without its own interface.
    fn wanted_ruleset(&self) -> Option<String> {
        let n = self.plan.network.as_ref()?;
        let all = self.ctx.security_groups.borrow();
        let groups: Vec<&SecurityPolicy> = n
            .security_groups
            .iter()
            .filter_map(|g| all.get(g))
            .collect();
        Some(crate::firewall::ruleset(&groups, &self.ctx.dns_servers))
    }

    /// Applies the task's security groups to its interface when their rules changed since
    /// they were last applied (or never were).
    async fn enforce_firewall(&mut self) -> Result<(), RuntimeError> {
        let (Some(pause), Some(rules)) = (self.pause.clone(), self.wanted_ruleset()) else {
            return Ok(());
        };
        if self.firewall.as_ref() == Some(&rules) {
            return Ok(());
        }
        self.ctx.runtime.apply_firewall(&pause, &rules).await?;
        self.firewall = Some(rules);
        Ok(())
    }

    /// Whether the task has a task-level size, and so a cgroup of its own.
    fn sized(&self) -> bool {
        crate::cgroup::wanted(self.plan.cpu, self.plan.memory)
    }

    /// For a task with a task-level size, before any of its containers is created: its cgroup
    /// (made, or found after an agent restart). A host that cannot runs the task without
    /// one. The error is the task's stopped reason.
    async fn setup_cgroup(&mut self) -> Result<(), String> {
        if !self.sized() {
            return Ok(());
        }
        let id = task_id(&self.plan.task_arn);
        match self
            .ctx
            .runtime
            .ensure_task_cgroup(id, self.plan.cpu, self.plan.memory)
            .await
        {
            Ok(parent) => {
                if let Some(p) = &parent {
                    tracing::info!(task = self.plan.task_arn, cgroup = p, "task cgroup ready");
                }
                self.cgroup = parent;
                Ok(())
            }
            Err(e) => Err(format!(
                "ResourceInitializationError: failed to create the task's cgroup: {e}"
            )),
        }
    }

    /// Removes the cgroup of a task with a task-level size (once), after its containers.
    async fn remove_cgroup(&mut self) {
        if !self.sized() || self.cgroup_removed {
            return;
        }
        self.ctx
            .runtime
            .remove_task_cgroup(task_id(&self.plan.task_arn))
            .await;
        self.cgroup = None;
        self.cgroup_removed = true;
    }

    /// Removes the pause container (giving the task's address back); the last task of the
    /// subnet's network on this agent then removes its warm spares and the network (which
    /// stays while another agent's containers use it). Runs after the task's containers have
    /// stopped.
    async fn teardown_network(&mut self) {
        let Some(n) = self.plan.network.clone() else {
            return;
        };
        let ctx = self.ctx.clone();
        let rt = &ctx.runtime;
        if let Some(id) = self.pause.take() {
            remove_pause(rt.as_ref(), &id).await;
        }
        let name = subnet_network(&n.subnet_id);
        let mut nets = ctx.networks.lock().await;
        let (last, spares) = match std::mem::take(&mut self.joined) {
            true => nets.leave(&name),
            // Never joined (it failed first, or was adopted): the network goes unless a task
            // of this agent is joining it (Docker keeps one other containers use).
            false => (!nets.in_use(&name), Vec::new()),
        };
        for s in spares {
            discard_spare(rt.as_ref(), &s.id).await;
        }
        if last {
            if let Err(e) = rt.remove_network(&name).await {
                // Other agents' containers on it: it stays.
                tracing::debug!(network = name, error = %e, "the subnet's network stays");
            }
        }
    }

    /// For an awslogs container, what Docker's driver checks when it starts: valid options
    /// and a log group that exists (or may be made).
    async fn prepare_logs(&self, i: usize) -> Result<(), String> {
        let c = &self.ctrs[i].plan;
        let Some(target) = crate::logship::target(&self.plan, c, "")
            .map_err(|e| format!("failed to initialize logging driver: {e}"))?
        else {
            return Ok(());
        };
        match &self.ctx.logs {
            Some(shipper) => shipper.prepare(&target).await,
            None => Err("failed to initialize logging driver: this agent ships no logs".into()),
        }
    }

    /// Starts shipping an awslogs container's output (once per container).
    fn follow_logs(&self, i: usize) {
        let c = &self.ctrs[i];
        let (Some(id), Some(shipper)) = (&c.id, &self.ctx.logs) else {
            return;
        };
        match crate::logship::target(&self.plan, &c.plan, id) {
            Ok(Some(target)) => shipper.follow(self.ctx.runtime.clone(), id, target),
            Ok(None) => {}
            Err(e) => tracing::warn!(container = id, error = e, "awslogs options are not valid"),
        }
    }

    async fn pull_and_prepare(&mut self) -> Result<(), String> {
        self.pull_started_at = Some(now());
        self.publish();
        let mut images: Vec<String> = self.ctrs.iter().map(|c| c.plan.image.clone()).collect();
        images.dedup();
        for image in images {
            let auth = self
                .ctx
                .registry
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
                .filter(|r| r.covers(&image));
            if let Err(e) = self.ctx.runtime.ensure_image(&image, auth.as_ref()).await {
                let msg = match e {
                    RuntimeError::Pull { image, message } => {
                        format!("CannotPullContainerError: pull image {image}: {message}")
                    }
                    other => format!("CannotPullContainerError: {other}"),
                };
                for c in self.ctrs.iter_mut().filter(|c| c.plan.image == image) {
                    c.reason = Some(msg.clone());
                    c.failed_to_start = true;
                }
                return Err(msg);
            }
        }
        self.pull_stopped_at = Some(now());
        for v in &self.plan.volumes {
            if v.host_path.is_some() {
                continue;
            }
            let (name, driver, opts, lbls) = match &v.docker {
                Some(d) if d.scope == "shared" && !d.autoprovision => continue,
                Some(d) => (
                    if d.scope == "shared" {
                        v.name.clone()
                    } else {
                        volume_name(&self.plan, &v.name)
                    },
                    d.driver.clone(),
                    d.driver_opts.clone().into_iter().collect(),
                    d.labels.clone().into_iter().collect(),
                ),
                None => (
                    volume_name(&self.plan, &v.name),
                    None,
                    HashMap::new(),
                    HashMap::new(),
                ),
            };
            self.ctx
                .runtime
                .ensure_volume(&name, driver.as_deref(), &opts, &lbls)
                .await
                .map_err(|e| format!("CannotCreateVolumeError: {e}"))?;
        }
        Ok(())
    }

    /// Creates and starts every container whose dependencies allow it.
    async fn start_ready(&mut self) {
        for i in 0..self.ctrs.len() {
            if self.ctrs[i].id.is_some() || self.ctrs[i].failed_to_start {
                continue;
            }
            let ready = readiness(&self.ctrs[i], &self.ctrs, now());
            match ready {
                Readiness::Wait => {}
                Readiness::Never(why) => {
                    self.ctrs[i].failed_to_start = true;
                    self.ctrs[i].reason = Some(format!("ContainerDependencyError: {why}"));
                    if self.ctrs[i].plan.essential {
                        self.must_stop(
                            "TaskFailedToStart",
                            format!("ContainerDependencyError: {why}"),
                        );
                    }
                }
                Readiness::Ready => {
                    let mut spec =
                        create_spec(&self.plan, &self.ctrs[i].plan, &self.ctx.instance_arn);
                    spec.cgroup_parent = self.cgroup.clone();
                    if let Some(pause) = &self.pause {
                        join_pause(&mut spec, pause);
                    }
                    if let Some(m) = &self.ctx.metadata {
                        spec.env.push(format!(
                            "ECS_CONTAINER_METADATA_URI_V4={}",
                            m.uri_for(&spec.name)
                        ));
                        spec.env
                            .push(format!("ECS_AGENT_URI={}", m.agent_uri_for(&spec.name)));
                    }
                    let created = match self.prepare_logs(i).await {
                        Err(msg) => Err(format!("CannotStartContainerError: {msg}")),
                        Ok(()) => match self.ctx.runtime.create(&spec).await {
                            Ok(id) => {
                                self.ctrs[i].id = Some(id.clone());
                                // Known to the metadata endpoint before it can ask.
                                self.show(&self.report());
                                let started = self
                                    .ctx
                                    .runtime
                                    .start(&id)
                                    .await
                                    .map_err(|e| format!("CannotStartContainerError: {e}"));
                                // Whatever it printed, even if it failed at once.
                                self.follow_logs(i);
                                started
                            }
                            Err(e) => Err(format!("CannotCreateContainerError: {e}")),
                        },
                    };
                    if let Err(msg) = created {
                        tracing::warn!(
                            task = self.plan.task_arn,
                            container = self.ctrs[i].plan.name,
                            error = msg,
                            "container failed to start"
                        );
                        self.ctrs[i].failed_to_start = true;
                        self.ctrs[i].reason = Some(msg.clone());
                        if self.ctrs[i].plan.essential {
                            self.must_stop("TaskFailedToStart", msg);
                        }
                    }
                }
            }
        }
    }

    /// Stops every running container (SIGTERM, `stopTimeout`, SIGKILL), all at once.
    async fn stop_all(&mut self) {
        let rt = self.ctx.runtime.clone();
        let stops = self.ctrs.iter().filter(|c| c.running()).filter_map(|c| {
            let id = c.id.clone()?;
            let t = c
                .plan
                .stop_timeout
                .map(i64::from)
                .unwrap_or(self.ctx.default_stop_timeout);
            let rt = rt.clone();
            Some(async move {
                if let Err(e) = rt.stop(&id, t).await {
                    tracing::warn!(container = id, error = %e, "stopping a container failed");
                }
            })
        });
        futures::future::join_all(stops).await;
    }
}

/// Owns one task until its containers are gone. Ends when the task has stopped and its
/// containers have been removed after `cleanup_after`.
pub async fn run_task(ctx: Arc<EngineContext>, mut desired: watch::Receiver<DesiredTask>) {
    let plan = desired.borrow_and_update().clone();
    let mut t = TaskRun {
        ctrs: plan
            .containers
            .iter()
            .map(|p| Ctr {
                plan: p.clone(),
                ..Default::default()
            })
            .collect(),
        plan,
        ctx,
        last_status: "PENDING",
        pull_started_at: None,
        pull_stopped_at: None,
        started_at: None,
        stopping_at: None,
        execution_stopped_at: None,
        stop_code: None,
        stopped_reason: None,
        last_sent: None,
        pause: None,
        firewall: None,
        cgroup: None,
        cgroup_removed: false,
        joined: false,
    };
    let arn = t.plan.task_arn.clone();
    tracing::info!(task = arn, "task engine: taking the task");

    // Adopt, or pull and prepare.
    let adopted = loop {
        match t.adopt().await {
            Ok(a) => break a,
            Err(e) => {
                tracing::warn!(task = arn, error = %e, "cannot inspect containers; retrying");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    };
    if !adopted && t.plan.desired_status == "RUNNING" {
        let prepared = match t.pull_and_prepare().await {
            Ok(()) => match t.setup_cgroup().await {
                Ok(()) => t.setup_network().await,
                Err(msg) => Err(msg),
            },
            Err(msg) => Err(msg),
        };
        if let Err(msg) = prepared {
            tracing::warn!(task = arn, reason = msg, "task failed to start");
            t.must_stop("TaskFailedToStart", msg);
        }
    } else if adopted && t.plan.desired_status == "RUNNING" {
        // Its containers run in the cgroup already; those still to create join them.
        if let Err(msg) = t.setup_cgroup().await {
            tracing::warn!(
                task = arn,
                reason = msg,
                "the task's containers still to start go without its cgroup"
            );
        }
    }
    // Security group changes wake the loop.
    let mut groups = t.ctx.security_groups.subscribe();

    // Run until something says stop.
    loop {
        if desired.borrow().desired_status == "STOPPED" {
            if desired.borrow().stop_reason.as_deref() == Some(AGENT_EXIT_REASON) {
                // The agent itself is going away (`--stop-tasks-on-exit`): say so.
                t.must_stop("TerminationNotice", AGENT_EXIT_REASON.into());
            } else if t.stopping_at.is_none() {
                // The server's reason (StopTask) is recorded by the server; ours stays empty.
                t.stopping_at = Some(now());
            }
            break;
        }
        if t.stop_code.is_some() {
            break;
        }
        if let Err(e) = t.enforce_firewall().await {
            tracing::warn!(
                task = arn,
                error = %e,
                "cannot apply the task's security groups; retrying"
            );
        }
        t.start_ready().await;
        if let Err(e) = t.observe().await {
            tracing::warn!(task = arn, error = %e, "cannot inspect containers");
        }
        if let Some(c) = t.ctrs.iter().find(|c| c.plan.essential && c.exited()) {
            let name = c.plan.name.clone();
            tracing::info!(task = arn, container = name, "essential container exited");
            t.must_stop(
                "EssentialContainerExited",
                "Essential container in task exited".into(),
            );
            break;
        }
        if t.ctrs.iter().all(|c| c.exited() || c.failed_to_start) {
            t.must_stop(
                "EssentialContainerExited",
                "Essential container in task exited".into(),
            );
            break;
        }
        if t.pause_lost().await {
            tracing::warn!(
                task = arn,
                "the task's pause container is gone, and its network with it"
            );
            t.must_stop(
                "EssentialContainerExited",
                "Essential container in task exited: the task's network namespace (its pause container) is gone".into(),
            );
            break;
        }
        let essentials_up = t
            .ctrs
            .iter()
            .filter(|c| c.plan.essential)
            .all(|c| c.running());
        let all_placed = t.ctrs.iter().all(|c| c.id.is_some() || c.failed_to_start);
        if t.last_status == "PENDING" && essentials_up && all_placed {
            t.last_status = "RUNNING";
            t.started_at = Some(now());
            tracing::info!(task = arn, "task running");
        }
        t.publish();
        let tick = t.ctx.tick;
        tokio::select! {
            changed = desired.changed() => {
                if changed.is_err() {
                    // The agent is shutting down: leave the containers as they are.
                    return;
                }
            }
            Ok(()) = groups.changed() => {}
            _ = tokio::time::sleep(tick) => {}
        }
    }

    // Stop.
    t.publish();
    t.stop_all().await;
    if let Err(e) = t.observe().await {
        tracing::warn!(task = arn, error = %e, "cannot inspect stopped containers");
    }
    for c in &mut t.ctrs {
        if c.id.is_none() && !c.failed_to_start {
            c.failed_to_start = true;
        }
    }
    t.teardown_network().await;
    if t.stop_code.as_deref() == Some("TaskFailedToStart") {
        // Nothing runs in it any more.
        t.remove_cgroup().await;
    }
    t.last_status = "STOPPED";
    t.execution_stopped_at = Some(now());
    t.publish();
    tracing::info!(task = arn, code = ?t.stop_code, "task stopped");

    // Clean up after the delay, and never before a container's output is all shipped.
    tokio::time::sleep(t.ctx.cleanup_after).await;
    for c in &t.ctrs {
        if let Some(id) = &c.id {
            while t.ctx.logs.as_ref().is_some_and(|l| l.busy(id)) {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            if let Err(e) = t.ctx.runtime.remove(id).await {
                tracing::warn!(container = id, error = %e, "removing a stopped container failed");
            }
        }
    }
    t.remove_cgroup().await;
    if let Some(m) = &t.ctx.metadata {
        m.forget(&t.plan.task_arn);
    }
    for v in &t.plan.volumes {
        let task_scoped =
            v.host_path.is_none() && v.docker.as_ref().is_none_or(|d| d.scope != "shared");
        if task_scoped {
            let _ = t
                .ctx
                .runtime
                .remove_volume(&volume_name(&t.plan, &v.name))
                .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_agent_proto::{Dependency, MountPlan, PortPlan, SecurityRule, VolumePlan};

    fn plan() -> DesiredTask {
        DesiredTask {
            task_arn: "arn:aws:ecs:us-east-1:0:task/prod/abc123".into(),
            cluster_arn: "arn:aws:ecs:us-east-1:0:cluster/prod".into(),
            family: "web".into(),
            revision: 4,
            desired_status: "RUNNING".into(),
            network_mode: "bridge".into(),
            containers: vec![ContainerPlan {
                name: "app".into(),
                image: "busybox".into(),
                command: None,
                entry_point: None,
                environment: vec![("A".into(), "1".into())],
                working_directory: None,
                user: None,
                cpu: Some(0),
                memory: Some(64),
                memory_reservation: Some(32),
                ulimits: vec![],
                docker_labels: [("team".to_string(), "x".to_string())].into(),
                readonly_root_filesystem: true,
                privileged: false,
                hostname: None,
                mount_points: vec![MountPlan {
                    source_volume: "data".into(),
                    container_path: "/data".into(),
                    read_only: true,
                }],
                port_mappings: vec![PortPlan {
                    container_port: 80,
                    host_port: None,
                    protocol: "tcp".into(),
                }],
                essential: true,
                depends_on: vec![],
                health_check: None,
                stop_timeout: None,
                log_driver: None,
                log_options: Default::default(),
                start_timeout: None,
                host: Default::default(),
            }],
            volumes: vec![VolumePlan {
                name: "data".into(),
                host_path: None,
                docker: None,
            }],
            stop_reason: None,
            cpu: None,
            memory: None,
            ephemeral_storage_gib: None,
            network: None,
        }
    }

    #[test]
    fn specs_carry_ecs_labels_limits_ports_and_volumes() {
        let p = plan();
        let s = create_spec(&p, &p.containers[0], "arn:ci");
        assert_eq!(s.name, "ecs-web-4-app-abc123");
        assert_eq!(s.labels[labels::TASK_ARN], p.task_arn);
        assert_eq!(s.labels[labels::CLUSTER], "prod");
        assert_eq!(s.labels[labels::VERSION], "4");
        assert_eq!(s.labels["team"], "x");
        assert_eq!(
            s.cpu_shares,
            Some(2),
            "cpu 0 becomes Docker's minimum of 2 shares"
        );
        assert_eq!(s.memory_bytes, Some(64 << 20));
        assert_eq!(s.memory_reservation_bytes, Some(32 << 20));
        assert_eq!(s.ports, [(80, "tcp".to_string(), None)]);
        assert_eq!(s.binds, ["ecs-web-4-data-abc123:/data:ro"]);
        assert_eq!(s.env, ["A=1"]);
        assert!(s.readonly_rootfs);
    }

    fn network() -> TaskNetwork {
        TaskNetwork {
            eni_id: "eni-1".into(),
            subnet_id: "subnet-1".into(),
            subnet_cidr: "10.0.1.0/24".into(),
            gateway: "10.0.1.1".into(),
            private_ip: "10.0.1.5".into(),
            mac: "02:00:0a:00:01:05".into(),
            public_ip: Some("192.0.2.10".into()),
            security_groups: vec!["sg-1".into(), "sg-missing".into()],
        }
    }

    #[test]
    fn the_pause_container_holds_the_address_and_publishes_on_the_public_ip() {
        let mut p = plan();
        p.network_mode = "awsvpc".into();
        let mut side = p.containers[0].clone();
        side.name = "side".into();
        side.port_mappings = vec![
            PortPlan {
                container_port: 53,
                host_port: None,
                protocol: "udp".into(),
            },
            PortPlan {
                container_port: 80,
                host_port: Some(80),
                protocol: "tcp".into(),
            },
        ];
        p.containers.push(side);
        let n = network();
        let s = pause_spec(&p, &n, "arn:ci");
        assert_eq!(
            s.name, "ecs-web-4-internalecspause-abc123",
            "no ~ in Docker names"
        );
        assert_eq!(s.labels[labels::CONTAINER_NAME], PAUSE_NAME);
        assert_eq!(s.labels[labels::TASK_ARN], p.task_arn);
        assert_eq!(s.labels[labels::INSTANCE], "arn:ci");
        assert_eq!(s.image, crate::pause::IMAGE);
        assert_eq!(s.cmd, Some(vec!["/pause".to_string()]));
        assert_eq!(s.network_mode, "berth-subnet-1");
        assert_eq!(s.ipv4_address.as_deref(), Some("10.0.1.5"));
        assert_eq!(s.mac_address.as_deref(), Some("02:00:0a:00:01:05"));
        assert_eq!(s.publish_ip.as_deref(), Some("192.0.2.10"));
        assert_eq!(
            s.ports,
            [
                (53, "udp".to_string(), Some(53)),
                (80, "tcp".to_string(), Some(80))
            ],
            "every container's ports, once, host port = container port"
        );
        assert!(s.hostname.is_none() && s.binds.is_empty() && s.env.is_empty());
        let private = TaskNetwork {
            public_ip: None,
            ..n
        };
        let s = pause_spec(&p, &private, "arn:ci");
        assert!(s.ports.is_empty() && s.publish_ip.is_none());
    }

    #[test]
    fn dns_goes_to_the_hosts_resolvers_or_dockers_fallbacks() {
        let conf = "# generated\nnameserver 127.0.0.53\nnameserver 10.255.255.53\nnameserver ::1\nsearch x\n";
        assert_eq!(resolvers(conf), [std::net::Ipv4Addr::new(10, 255, 255, 53)]);
        assert_eq!(
            resolvers("nameserver 127.0.0.53\n"),
            [
                std::net::Ipv4Addr::new(8, 8, 8, 8),
                std::net::Ipv4Addr::new(8, 8, 4, 4)
            ]
        );
    }

    #[test]
    fn a_fargate_tasks_ephemeral_storage_limits_its_containers_not_its_pause() {
        let mut t = plan();
        t.ephemeral_storage_gib = Some(30);
        t.network = Some(network());
        let c = t.containers[0].clone();
        assert_eq!(create_spec(&t, &c, "arn:ci").storage_gib, Some(30));
        assert_eq!(pause_spec(&t, &network(), "arn:ci").storage_gib, None);
    }

    #[test]
    fn task_containers_join_the_pause_namespace_without_ports_or_hostname() {
        let mut p = plan();
        p.network_mode = "awsvpc".into();
        p.containers[0].hostname = Some("web".into());
        p.containers[0].host.links = vec!["db".into()];
        let mut s = create_spec(&p, &p.containers[0], "arn:ci");
        join_pause(&mut s, "p1");
        assert_eq!(s.network_mode, "container:p1");
        assert!(s.ports.is_empty());
        assert_eq!(s.hostname, None);
        assert!(s.host.links.is_empty());
        assert_eq!(
            s.binds,
            ["ecs-web-4-data-abc123:/data:ro"],
            "volumes as ever"
        );
    }

    #[test]
    fn dependencies_wait_then_release_or_fail() {
        let p = plan();
        let base = Ctr {
            plan: p.containers[0].clone(),
            ..Default::default()
        };
        let mut init = base.clone();
        init.plan.name = "init".into();
        let mut app = base.clone();
        app.plan.depends_on = vec![Dependency {
            container_name: "init".into(),
            condition: "SUCCESS".into(),
        }];
        assert!(matches!(
            readiness(&app, &[init.clone(), app.clone()], now()),
            Readiness::Wait
        ));
        init.obs = Some(Observed {
            started: true,
            running: false,
            exit_code: Some(0),
            ..Default::default()
        });
        assert!(matches!(
            readiness(&app, &[init.clone(), app.clone()], now()),
            Readiness::Ready
        ));
        init.obs.as_mut().unwrap().exit_code = Some(3);
        assert!(
            matches!(readiness(&app, &[init, app.clone()], now()), Readiness::Never(m) if m.contains("code 3"))
        );
    }

    mod with_fake_runtime {
        use super::*;
        use crate::runtime::fake::FakeRuntime;
        use crate::runtime::Runtime;

        struct Harness {
            rt: Arc<FakeRuntime>,
            reporter: Arc<Reporter>,
            tx: watch::Sender<DesiredTask>,
            handle: tokio::task::JoinHandle<()>,
            ctx: Arc<EngineContext>,
        }

        fn ctr(name: &str, image: &str) -> ContainerPlan {
            ContainerPlan {
                name: name.into(),
                image: image.into(),
                essential: true,
                ..Default::default()
            }
        }

        fn task(containers: Vec<ContainerPlan>) -> DesiredTask {
            DesiredTask {
                containers,
                volumes: vec![],
                ..plan()
            }
        }

        fn start(rt: Arc<FakeRuntime>, t: DesiredTask) -> Harness {
            start_with_groups(rt, t, BTreeMap::new())
        }

        fn start_with_groups(
            rt: Arc<FakeRuntime>,
            t: DesiredTask,
            groups: BTreeMap<String, SecurityPolicy>,
        ) -> Harness {
            start_with(rt, t, groups, Duration::from_secs(3600))
        }

        fn start_with(
            rt: Arc<FakeRuntime>,
            t: DesiredTask,
            groups: BTreeMap<String, SecurityPolicy>,
            cleanup_after: Duration,
        ) -> Harness {
            start_ctx(rt, t, groups, cleanup_after, false)
        }

        fn start_ctx(
            rt: Arc<FakeRuntime>,
            t: DesiredTask,
            groups: BTreeMap<String, SecurityPolicy>,
            cleanup_after: Duration,
            warm_spares: bool,
        ) -> Harness {
            let reporter = Arc::new(Reporter::default());
            let ctx = Arc::new(EngineContext {
                runtime: rt.clone() as Arc<dyn Runtime>,
                reporter: reporter.clone(),
                instance_arn: "arn:ci".into(),
                cleanup_after,
                default_stop_timeout: 30,
                tick: Duration::from_millis(5),
                registry: Default::default(),
                logs: None,
                metadata: None,
                availability_zone: "local-1a".into(),
                security_groups: watch::Sender::new(groups),
                networks: Default::default(),
                warm_spares,
                dns_servers: Vec::new(),
            });
            let (tx, rx) = watch::channel(t);
            let handle = tokio::spawn(run_task(ctx.clone(), rx));
            Harness {
                rt,
                reporter,
                tx,
                handle,
                ctx,
            }
        }

        impl Harness {
            /// The position of `entry` in the runtime's log.
            fn at(&self, entry: &str) -> usize {
                let log = self.rt.log();
                log.iter()
                    .position(|l| l == entry)
                    .unwrap_or_else(|| panic!("no '{entry}' in {log:?}"))
            }

            /// The latest report once `pred` holds for it (bounded: 2 s).
            async fn until(&self, what: &str, pred: impl Fn(&TaskReport) -> bool) -> TaskReport {
                for _ in 0..400 {
                    // One report per task: any of them may be the one.
                    if let Some((_, r)) = self.reporter.batch().into_iter().find(|(_, r)| pred(r)) {
                        return r;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                panic!(
                    "no report '{what}'; log: {:?}; last: {:?}",
                    self.rt.log(),
                    self.reporter.batch()
                );
            }

            /// Waits (bounded: 2 s) until `entry` is in the runtime's log.
            async fn logged(&self, entry: &str) {
                for _ in 0..400 {
                    if self.rt.log().iter().any(|l| l == entry) {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                panic!("no '{entry}' in {:?}", self.rt.log());
            }
        }

        #[tokio::test]
        async fn containers_start_in_dependency_order() {
            let rt = Arc::new(FakeRuntime::with_images(&["img"]));
            let mut app = ctr("app", "img");
            app.depends_on = vec![Dependency {
                container_name: "db".into(),
                condition: "HEALTHY".into(),
            }];
            let mut db = ctr("db", "img");
            db.health_check = Some(berth_agent_proto::HealthCheckPlan {
                command: vec!["CMD".into(), "true".into()],
                interval_s: 5,
                timeout_s: 5,
                retries: 3,
                start_period_s: 0,
            });
            let h = start(rt.clone(), task(vec![app, db]));
            h.until("db started", |r| r.containers[1].last_status == "RUNNING")
                .await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            assert!(
                !rt.log().contains(&"create app".to_string()),
                "app waits for db to be healthy"
            );
            rt.set_health("-db-", "healthy");
            let r = h.until("RUNNING", |r| r.last_status == "RUNNING").await;
            assert_eq!(r.health_status.as_deref(), Some("HEALTHY"));
            let log = rt.log();
            let pos = |s: &str| log.iter().position(|x| x == s).unwrap();
            assert!(pos("start db") < pos("create app"), "{log:?}");
            h.handle.abort();
        }

        #[tokio::test]
        async fn a_dependency_not_met_within_start_timeout_fails_the_task() {
            let rt = Arc::new(FakeRuntime::with_images(&["img"]));
            let mut app = ctr("app", "img");
            app.depends_on = vec![Dependency {
                container_name: "db".into(),
                condition: "HEALTHY".into(),
            }];
            let mut db = ctr("db", "img");
            db.start_timeout = Some(1);
            db.essential = false;
            db.health_check = Some(berth_agent_proto::HealthCheckPlan {
                command: vec!["CMD".into(), "true".into()],
                interval_s: 5,
                timeout_s: 5,
                retries: 3,
                start_period_s: 0,
            });
            let h = start(rt.clone(), task(vec![app, db]));
            // db runs but never says healthy: app gives up after db's startTimeout.
            let r = h.until("STOPPED", |r| r.last_status == "STOPPED").await;
            assert_eq!(r.stop_code.as_deref(), Some("TaskFailedToStart"));
            assert!(
                r.stopped_reason
                    .as_deref()
                    .is_some_and(|m| m.contains("startTimeout of 1 s")),
                "{:?}",
                r.stopped_reason
            );
            assert!(!rt.log().contains(&"create app".to_string()));
            h.handle.abort();
        }

        #[tokio::test]
        async fn an_essential_exit_stops_the_rest_with_their_timeout() {
            let rt = Arc::new(FakeRuntime::with_images(&["img"]));
            let mut side = ctr("side", "img");
            side.stop_timeout = Some(7);
            let h = start(rt.clone(), task(vec![ctr("main", "img"), side]));
            h.until("RUNNING", |r| r.last_status == "RUNNING").await;
            rt.exit("-main-", 2);
            let r = h.until("STOPPED", |r| r.last_status == "STOPPED").await;
            assert_eq!(r.stop_code.as_deref(), Some("EssentialContainerExited"));
            assert_eq!(
                r.stopped_reason.as_deref(),
                Some("Essential container in task exited")
            );
            assert_eq!(r.containers[0].exit_code, Some(2));
            assert!(
                rt.log().contains(&"stop side 7".to_string()),
                "{:?}",
                rt.log()
            );
            assert!(r.execution_stopped_at.is_some() && r.stopping_at.is_some());
            h.handle.abort();
        }

        #[tokio::test]
        async fn a_pull_failure_fails_the_task_without_creating_anything() {
            let rt = Arc::new(FakeRuntime::with_images(&[]));
            let h = start(rt.clone(), task(vec![ctr("app", "ghost:1")]));
            let r = h.until("STOPPED", |r| r.last_status == "STOPPED").await;
            assert_eq!(r.stop_code.as_deref(), Some("TaskFailedToStart"));
            let reason = r.containers[0].reason.clone().unwrap();
            assert!(
                reason.starts_with("CannotPullContainerError: pull image ghost:1"),
                "{reason}"
            );
            assert!(!rt.log().iter().any(|l| l.starts_with("create")));
            h.handle.abort();
        }

        #[tokio::test]
        async fn running_containers_are_adopted_not_recreated_and_stop_on_request() {
            let rt = Arc::new(FakeRuntime::with_images(&["img"]));
            let t = task(vec![ctr("app", "img")]);
            // A previous agent run left the container running.
            let spec = create_spec(&t, &t.containers[0], "arn:ci");
            let id = rt.create(&spec).await.unwrap();
            rt.start(&id).await.unwrap();
            rt.log.lock().unwrap().clear();
            let h = start(rt.clone(), t.clone());
            h.until("RUNNING", |r| r.last_status == "RUNNING").await;
            assert!(
                rt.log().is_empty(),
                "adoption touches nothing: {:?}",
                rt.log()
            );
            h.tx.send_modify(|t| t.desired_status = "STOPPED".into());
            let r = h.until("STOPPED", |r| r.last_status == "STOPPED").await;
            assert_eq!(
                r.stop_code, None,
                "a stop the server asked for carries the server's reason"
            );
            assert_eq!(rt.log(), ["stop app 30"]);
            h.handle.abort();
        }

        fn awsvpc(containers: Vec<ContainerPlan>) -> DesiredTask {
            DesiredTask {
                network_mode: "awsvpc".into(),
                network: Some(network()),
                ..task(containers)
            }
        }

        /// `sg-1` allowing tcp `port` from anywhere.
        fn web_group(port: u16) -> BTreeMap<String, SecurityPolicy> {
            let rule = SecurityRule {
                protocol: "tcp".into(),
                ports: Some((port, port)),
                cidrs: vec!["0.0.0.0/0".into()],
            };
            BTreeMap::from([(
                "sg-1".to_string(),
                SecurityPolicy {
                    ingress: vec![rule],
                    egress: vec![],
                },
            )])
        }

        #[tokio::test]
        async fn an_awsvpc_task_gets_its_network_before_its_containers() {
            let rt = Arc::new(FakeRuntime::with_images(&["img"]));
            let mut app = ctr("app", "img");
            app.hostname = Some("web".into());
            app.port_mappings = vec![PortPlan {
                container_port: 8080,
                host_port: None,
                protocol: "tcp".into(),
            }];
            let h = start_with_groups(rt.clone(), awsvpc(vec![app]), web_group(8080));
            let r = h.until("RUNNING", |r| r.last_status == "RUNNING").await;
            assert!(r.containers[0].network_bindings.is_empty());
            let order = [
                "pull img",
                "pause-image",
                "network berth-subnet-1",
                "create internalecspause",
                "start internalecspause",
                "firewall internalecspause",
                "create app",
                "start app",
            ];
            let at: Vec<usize> = order.iter().map(|e| h.at(e)).collect();
            assert!(at.windows(2).all(|w| w[0] < w[1]), "{:?}", rt.log());
            let pause = rt.container("internalecspause").unwrap();
            assert_eq!(pause.spec.network_mode, "berth-subnet-1");
            assert_eq!(pause.spec.ipv4_address.as_deref(), Some("10.0.1.5"));
            assert_eq!(pause.spec.mac_address.as_deref(), Some("02:00:0a:00:01:05"));
            assert_eq!(pause.spec.publish_ip.as_deref(), Some("192.0.2.10"));
            assert_eq!(pause.spec.ports, [(8080, "tcp".to_string(), Some(8080))]);
            assert_eq!(pause.spec.labels[labels::TASK_ARN], h.tx.borrow().task_arn);
            let app = rt.container("app").unwrap();
            assert_eq!(app.spec.network_mode, format!("container:{}", pause.obs.id));
            assert!(app.spec.ports.is_empty());
            assert_eq!(app.spec.hostname, None);
            let (subnet, gateway, lbls) = rt.networks.lock().unwrap()["berth-subnet-1"].clone();
            assert_eq!(
                (subnet.as_str(), gateway.as_str()),
                ("10.0.1.0/24", "10.0.1.1")
            );
            assert_eq!(lbls[SUBNET_LABEL], "subnet-1");
            let rules = rt.rulesets.lock().unwrap()[&pause.obs.id].clone();
            assert!(
                rules.contains("\n-A INPUT -p tcp --dport 8080 -j ACCEPT\n"),
                "{rules}"
            );
            h.handle.abort();
        }

        #[tokio::test]
        async fn a_stopping_awsvpc_task_removes_its_pause_before_it_reports_stopped() {
            let rt = Arc::new(FakeRuntime::with_images(&["img"]));
            let h = start(rt.clone(), awsvpc(vec![ctr("app", "img")]));
            h.until("RUNNING", |r| r.last_status == "RUNNING").await;
            h.tx.send_modify(|t| t.desired_status = "STOPPED".into());
            h.until("STOPPED", |r| r.last_status == "STOPPED").await;
            assert!(
                rt.container("internalecspause").is_none(),
                "the address is free once the server hears STOPPED: {:?}",
                rt.log()
            );
            assert!(h.at("stop app 30") < h.at("stop internalecspause 0"));
            assert!(h.at("stop internalecspause 0") < h.at("remove internalecspause"));
            assert!(h.at("remove internalecspause") < h.at("remove-network berth-subnet-1"));
            assert!(
                rt.container("app").is_some(),
                "the task's containers stay until the cleanup delay"
            );
            h.handle.abort();
        }

        #[tokio::test]
        async fn a_pause_container_that_does_not_start_is_made_again_once_then_fails_the_task() {
            let rt = Arc::new(FakeRuntime::with_images(&["img"]));
            rt.failing.lock().unwrap().insert("start-pause");
            let h = start(rt.clone(), awsvpc(vec![ctr("app", "img")]));
            let r = h.until("STOPPED", |r| r.last_status == "STOPPED").await;
            assert_eq!(r.stop_code.as_deref(), Some("TaskFailedToStart"));
            let log = rt.log();
            let made = log
                .iter()
                .filter(|l| *l == "create internalecspause")
                .count();
            assert_eq!(made, 2, "{log:?}");
            let networks = log
                .iter()
                .filter(|l| *l == "network berth-subnet-1")
                .count();
            assert_eq!(
                networks, 2,
                "the network is made again before the second: {log:?}"
            );
            assert!(rt.container("internalecspause").is_none(), "{log:?}");
            h.handle.abort();
        }

        #[tokio::test]
        async fn a_task_whose_pause_container_dies_stops() {
            let rt = Arc::new(FakeRuntime::with_images(&["img"]));
            let h = start(rt.clone(), awsvpc(vec![ctr("app", "img")]));
            h.until("RUNNING", |r| r.last_status == "RUNNING").await;
            rt.exit("internalecspause", 137);
            let r = h.until("STOPPED", |r| r.last_status == "STOPPED").await;
            assert_eq!(r.stop_code.as_deref(), Some("EssentialContainerExited"));
            assert!(
                r.stopped_reason
                    .as_deref()
                    .is_some_and(|m| m.starts_with("Essential container in task exited")
                        && m.contains("pause container")),
                "{r:?}"
            );
            h.handle.abort();
        }

        #[tokio::test]
        async fn a_changed_policy_is_applied_again() {
            let rt = Arc::new(FakeRuntime::with_images(&["img"]));
            let h = start(rt.clone(), awsvpc(vec![ctr("app", "img")]));
            h.until("RUNNING", |r| r.last_status == "RUNNING").await;
            let applied = || {
                rt.log()
                    .iter()
                    .filter(|l| l.starts_with("firewall"))
                    .count()
            };
            assert_eq!(applied(), 1);
            let pause = rt.container("internalecspause").unwrap().obs.id;
            let rules = || rt.rulesets.lock().unwrap()[&pause].clone();
            assert!(!rules().contains("--dport"), "sg-1 is not known yet");
            h.ctx.security_groups.send_replace(web_group(443));
            for _ in 0..400 {
                if applied() == 2 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            assert!(rules().contains("--dport 443"), "{:?}", rt.log());
            // A group the task is not in changes nothing for it.
            h.ctx.security_groups.send_modify(|m| {
                m.insert("sg-other".into(), SecurityPolicy::default());
            });
            tokio::time::sleep(Duration::from_millis(50)).await;
            assert_eq!(applied(), 2, "{:?}", rt.log());
            h.handle.abort();
        }

        #[tokio::test]
        async fn a_network_failure_fails_the_task_and_leaves_nothing_behind() {
            for call in ["network", "firewall"] {
                let rt = Arc::new(FakeRuntime::with_images(&["img"]));
                rt.failing.lock().unwrap().insert(call);
                let h = start(rt.clone(), awsvpc(vec![ctr("app", "img")]));
                let r = h.until("STOPPED", |r| r.last_status == "STOPPED").await;
                assert_eq!(r.stop_code.as_deref(), Some("TaskFailedToStart"));
                let reason = r.stopped_reason.clone().unwrap_or_default();
                assert!(
                    reason.starts_with("ResourceInitializationError: failed to configure ENI: ")
                        && reason.contains(&format!("{call} failed")),
                    "{reason}"
                );
                assert_eq!(r.containers[0].last_status, "STOPPED");
                let log = rt.log();
                assert!(!log.contains(&"create app".to_string()), "{log:?}");
                assert!(
                    rt.container("internalecspause").is_none(),
                    "{call}: {log:?}"
                );
                if call == "firewall" {
                    assert!(h.at("create internalecspause") < h.at("remove internalecspause"));
                }
                h.handle.abort();
            }
        }

        #[tokio::test]
        async fn tasks_take_warm_pause_containers_and_the_last_one_out_removes_them() {
            let rt = Arc::new(FakeRuntime::with_images(&["img"]));
            let private = |arn: &str, ip: &str| {
                let mut t = awsvpc(vec![ctr("app", "img")]);
                t.task_arn = arn.into();
                let n = t.network.as_mut().unwrap();
                n.public_ip = None;
                n.private_ip = ip.into();
                t
            };
            fn spares(rt: &FakeRuntime) -> std::collections::BTreeSet<String> {
                rt.containers
                    .lock()
                    .unwrap()
                    .values()
                    .filter(|c| {
                        c.spec.labels.contains_key(crate::spares::SPARE_LABEL)
                            && c.renamed.is_none()
                    })
                    .map(|c| c.spec.ipv4_address.clone().unwrap_or_default())
                    .collect()
            }
            async fn until_spares(rt: &FakeRuntime, n: usize) {
                for _ in 0..400 {
                    if spares(rt).len() == n {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                panic!("expected {n} spares: {:?}", rt.log());
            }
            let first = private("arn:aws:ecs:us-east-1:0:task/prod/t1", "10.0.1.5");
            let h = start_ctx(
                rt.clone(),
                first,
                BTreeMap::new(),
                Duration::from_secs(3600),
                true,
            );
            h.until("RUNNING", |r| r.last_status == "RUNNING").await;
            // The first made its own; then the subnet's reserved addresses hold spares.
            assert!(h.at("create internalecspause") < h.at("start internalecspause"));
            until_spares(&rt, 2).await;
            assert_eq!(
                spares(&rt).into_iter().collect::<Vec<_>>(),
                ["10.0.1.2", "10.0.1.3"]
            );

            // The second takes one, moved to its address and name, and starts no pause.
            let second = private("arn:aws:ecs:us-east-1:0:task/prod/t2", "10.0.1.6");
            let name = container_name(&second, PAUSE_NAME);
            let (tx2, rx2) = watch::channel(second);
            let h2 = tokio::spawn(run_task(h.ctx.clone(), rx2));
            h.until("t2 RUNNING", |r| {
                r.task_arn.ends_with("/t2") && r.last_status == "RUNNING"
            })
            .await;
            let taken = rt
                .containers
                .lock()
                .unwrap()
                .values()
                .find(|c| c.renamed.as_deref() == Some(name.as_str()))
                .cloned()
                .unwrap_or_else(|| panic!("no spare renamed {name}: {:?}", rt.log()));
            assert_eq!(taken.spec.ipv4_address.as_deref(), Some("10.0.1.6"));
            // After the move: its firewall, then its app; no pause container made for it.
            let log = rt.log();
            let after: Vec<&str> = log[h.at("readdress 10.0.1.6")..]
                .iter()
                .map(String::as_str)
                // A refill's spares (`berth-spare-subnet-1-…`) may come between.
                .filter(|l| !matches!(*l, "create 1" | "start 1"))
                .take(3)
                .collect();
            assert_eq!(
                after,
                [
                    "readdress 10.0.1.6",
                    "firewall internalecspause",
                    "create app"
                ],
                "{log:?}"
            );
            let app2 = rt
                .containers
                .lock()
                .unwrap()
                .values()
                .find(|c| {
                    c.spec
                        .labels
                        .get(labels::TASK_ARN)
                        .is_some_and(|a| a.ends_with("/t2"))
                })
                .cloned()
                .unwrap();
            assert_eq!(
                app2.spec.network_mode,
                format!("container:{}", taken.obs.id)
            );
            // The slot it left is filled again.
            until_spares(&rt, 2).await;

            // The last task out removes the spares, then the network.
            tx2.send_modify(|t| t.desired_status = "STOPPED".into());
            h.until("t2 STOPPED", |r| {
                r.task_arn.ends_with("/t2") && r.last_status == "STOPPED"
            })
            .await;
            assert_eq!(spares(&rt).len(), 2, "another task still uses the subnet");
            assert!(!rt
                .log()
                .contains(&"remove-network berth-subnet-1".to_string()));
            h.tx.send_modify(|t| t.desired_status = "STOPPED".into());
            h.until("STOPPED", |r| {
                r.task_arn.ends_with("/t1") && r.last_status == "STOPPED"
            })
            .await;
            assert!(spares(&rt).is_empty(), "{:?}", rt.log());
            assert!(rt
                .log()
                .contains(&"remove-network berth-subnet-1".to_string()));
            h.handle.abort();
            h2.abort();
        }

        #[tokio::test]
        async fn a_restarted_agent_adopts_the_pause_container() {
            let rt = Arc::new(FakeRuntime::with_images(&["img"]));
            let t = awsvpc(vec![ctr("app", "img")]);
            // A previous agent run left the task running.
            let pause = rt
                .create(&pause_spec(&t, &network(), "arn:ci"))
                .await
                .unwrap();
            rt.start(&pause).await.unwrap();
            let mut spec = create_spec(&t, &t.containers[0], "arn:ci");
            join_pause(&mut spec, &pause);
            let app = rt.create(&spec).await.unwrap();
            rt.start(&app).await.unwrap();
            rt.log.lock().unwrap().clear();
            let h = start(rt.clone(), t);
            h.until("RUNNING", |r| r.last_status == "RUNNING").await;
            assert_eq!(
                rt.log(),
                ["firewall internalecspause"],
                "nothing created twice; the rules applied again"
            );
            h.handle.abort();
        }

        /// A task of 0.25 vCPU and 512 MiB.
        fn sized(t: DesiredTask) -> DesiredTask {
            DesiredTask {
                cpu: Some(256),
                memory: Some(512),
                ..t
            }
        }

        #[tokio::test]
        async fn a_sized_task_gets_its_cgroup_first_and_every_container_joins_it() {
            for t in [
                sized(task(vec![ctr("app", "img"), ctr("side", "img")])),
                sized(awsvpc(vec![ctr("app", "img"), ctr("side", "img")])),
            ] {
                let rt = Arc::new(FakeRuntime::with_images(&["img"]));
                let is_awsvpc = t.network.is_some();
                let h = start(rt.clone(), t);
                h.until("RUNNING", |r| r.last_status == "RUNNING").await;
                let log = rt.log();
                let cgroup = h.at("cgroup abc123");
                let first_create = log.iter().position(|l| l.starts_with("create")).unwrap();
                assert!(cgroup < first_create, "{log:?}");
                assert_eq!(
                    log.iter().filter(|l| l.starts_with("cgroup")).count(),
                    1,
                    "{log:?}"
                );
                assert_eq!(rt.cgroups.lock().unwrap()["abc123"], (Some(256), Some(512)));
                let specs: Vec<CreateSpec> = rt
                    .containers
                    .lock()
                    .unwrap()
                    .values()
                    .map(|c| c.spec.clone())
                    .collect();
                assert_eq!(specs.len(), if is_awsvpc { 3 } else { 2 });
                for s in &specs {
                    assert_eq!(
                        s.cgroup_parent.as_deref(),
                        Some("/berth/abc123"),
                        "{}",
                        s.name
                    );
                }
                assert_eq!(
                    rt.container("internalecspause").is_some(),
                    is_awsvpc,
                    "the pause container is one of them"
                );
                h.handle.abort();
            }
        }

        #[tokio::test]
        async fn a_task_without_task_level_sizes_gets_no_cgroup() {
            let rt = Arc::new(FakeRuntime::with_images(&["img"]));
            let h = start_with(
                rt.clone(),
                awsvpc(vec![ctr("app", "img")]),
                BTreeMap::new(),
                Duration::from_millis(10),
            );
            h.until("RUNNING", |r| r.last_status == "RUNNING").await;
            assert!(rt
                .containers
                .lock()
                .unwrap()
                .values()
                .all(|c| c.spec.cgroup_parent.is_none()));
            h.tx.send_modify(|t| t.desired_status = "STOPPED".into());
            h.logged("remove app").await;
            tokio::time::timeout(Duration::from_secs(2), h.handle)
                .await
                .expect("the loop ends after cleanup")
                .unwrap();
            assert!(
                !rt.log().iter().any(|l| l.contains("cgroup")),
                "{:?}",
                rt.log()
            );
        }

        #[tokio::test]
        async fn cleanup_removes_the_cgroup_after_the_containers() {
            let rt = Arc::new(FakeRuntime::with_images(&["img"]));
            let h = start_with(
                rt.clone(),
                sized(awsvpc(vec![ctr("app", "img")])),
                BTreeMap::new(),
                Duration::from_millis(10),
            );
            h.until("RUNNING", |r| r.last_status == "RUNNING").await;
            h.tx.send_modify(|t| t.desired_status = "STOPPED".into());
            let r = h.until("STOPPED", |r| r.last_status == "STOPPED").await;
            assert_eq!(r.stop_code, None);
            h.logged("remove-cgroup abc123").await;
            assert!(h.at("remove internalecspause") < h.at("remove-cgroup abc123"));
            assert!(h.at("remove app") < h.at("remove-cgroup abc123"));
            tokio::time::timeout(Duration::from_secs(2), h.handle)
                .await
                .expect("the loop ends after cleanup")
                .unwrap();
            assert_eq!(
                rt.log()
                    .iter()
                    .filter(|l| l.starts_with("remove-cgroup"))
                    .count(),
                1,
                "{:?}",
                rt.log()
            );
        }

        #[tokio::test]
        async fn a_task_that_fails_to_start_removes_its_cgroup_at_once() {
            let rt = Arc::new(FakeRuntime::with_images(&["img"]));
            rt.failing.lock().unwrap().insert("firewall");
            let h = start(rt.clone(), sized(awsvpc(vec![ctr("app", "img")])));
            let r = h.until("STOPPED", |r| r.last_status == "STOPPED").await;
            assert_eq!(r.stop_code.as_deref(), Some("TaskFailedToStart"));
            // Before the STOPPED report, not at the cleanup an hour later.
            assert!(h.at("cgroup abc123") < h.at("create internalecspause"));
            assert!(h.at("remove internalecspause") < h.at("remove-cgroup abc123"));
            h.handle.abort();
        }

        #[tokio::test]
        async fn a_cgroup_that_cannot_be_made_fails_the_task_before_any_container() {
            let rt = Arc::new(FakeRuntime::with_images(&["img"]));
            rt.failing.lock().unwrap().insert("cgroup");
            let h = start(rt.clone(), sized(task(vec![ctr("app", "img")])));
            let r = h.until("STOPPED", |r| r.last_status == "STOPPED").await;
            assert_eq!(r.stop_code.as_deref(), Some("TaskFailedToStart"));
            let reason = r.stopped_reason.unwrap_or_default();
            assert!(
                reason.starts_with(
                    "ResourceInitializationError: failed to create the task's cgroup: "
                ) && reason.contains("cgroup failed"),
                "{reason}"
            );
            assert!(!rt.log().iter().any(|l| l.starts_with("create")));
            assert!(rt.log().contains(&"remove-cgroup abc123".to_string()));
            h.handle.abort();
        }

        #[tokio::test]
        async fn a_restarted_agent_reuses_the_cgroup() {
            let rt = Arc::new(FakeRuntime::with_images(&["img"]));
            let mut app = ctr("app", "img");
            app.depends_on = vec![Dependency {
                container_name: "db".into(),
                condition: "START".into(),
            }];
            let t = sized(task(vec![ctr("db", "img"), app]));
            // A previous agent run started db; app was still to come.
            let mut spec = create_spec(&t, &t.containers[0], "arn:ci");
            spec.cgroup_parent = Some("/berth/abc123".into());
            let db = rt.create(&spec).await.unwrap();
            rt.start(&db).await.unwrap();
            rt.log.lock().unwrap().clear();
            let h = start(rt.clone(), t);
            h.until("RUNNING", |r| r.last_status == "RUNNING").await;
            assert_eq!(
                rt.log(),
                ["cgroup abc123", "create app", "start app"],
                "the cgroup asked for again, db left as it is"
            );
            let app = rt.container("app").unwrap();
            assert_eq!(app.spec.cgroup_parent.as_deref(), Some("/berth/abc123"));
            h.handle.abort();
        }
    }
}
