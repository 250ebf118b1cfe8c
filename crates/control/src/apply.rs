//! The writes more than one handler makes: the plan applier that places and commits tasks
//! (RunTask, StartTask and services), stopping a task, folding an agent's report into a task
//! record and giving its resources back, and registering an instance (ECS's call and the
//! agent's join).
//!
//! Placement reads the cluster from the watch-fed state, asks its [`berth_scheduler::index::ClusterIndex`]
//! where each copy goes, and commits the new tasks together with the instances' new
//! `remainingResources` in one transaction guarded on the revisions it read (and on the
//! cluster record's), so concurrent placements never over-commit a host. A task that reaches
//! STOPPED gives its resources back in the same transaction that records the stop, exactly
//! once.

use crate::read::{attribute, launch_type_of, task_id_of};
use crate::resources::Resources;
use crate::state::{ClusterState, Placed, Pool};
use crate::{conflict_exhausted, encode, keys, now_epoch, store_error, Control, CAS_ATTEMPTS};
use berth_agent_proto::TaskReport;
use berth_api::ecs::{
    self, Attribute, Container, ContainerInstance, Tag, TaskDefinition, TaskOverride, VersionInfo,
};
use berth_api::EcsError;
use berth_model::status::{InstanceStatus, TaskStatus};
use berth_model::units;
use berth_scheduler::{Candidate, Demand, Rules};
use berth_store::{Compare, KeyValue, Txn, TxnOutcome};
use std::collections::{BTreeMap, BTreeSet, HashSet};

/// Who asked for the tasks, how to label them, and the request's placement rules.
#[derive(Default)]
pub(crate) struct Meta {
    /// Services keep running revisions that were deregistered since.
    pub(crate) allow_inactive: bool,
    pub(crate) constraints: Vec<ecs::PlacementConstraint>,
    pub(crate) strategies: Vec<ecs::PlacementStrategy>,
    pub(crate) started_by: Option<String>,
    pub(crate) group: Option<String>,
    pub(crate) tags: Vec<ecs::Tag>,
    /// `propagateTags`: whose tags the tasks also get.
    pub(crate) propagate: Propagate,
    /// `enableECSManagedTags`: `aws:ecs:clusterName` (and `aws:ecs:serviceName` with
    /// `service`).
    pub(crate) managed_tags: bool,
    /// The service launching the tasks, for its managed tag.
    pub(crate) service: Option<String>,
    pub(crate) overrides: TaskOverride,
    pub(crate) client_token: Option<String>,
    /// `networkConfiguration` as the request gave it.
    pub(crate) network: Option<ecs::NetworkConfiguration>,
    /// `awsvpc` tasks: their subnets, security groups and public address, resolved from
    /// `network` when the placement begins.
    pub(crate) awsvpc: Option<crate::ec2::Awsvpc>,
    /// The capacity provider the tasks run on (FARGATE when a FARGATE task names none).
    pub(crate) capacity_provider: Option<String>,
}

/// Where a task's tags also come from.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) enum Propagate {
    #[default]
    None,
    TaskDefinition,
    /// The service's tags, as they are when the task is launched.
    Service(Vec<ecs::Tag>),
}

/// A task's tags: the request's, then what is propagated (a key the request gave keeps the
/// request's value), then ECS's managed tags. Pure.
pub(crate) fn task_tags(
    given: &[ecs::Tag],
    propagated: &[ecs::Tag],
    managed: &[(&str, &str)],
) -> Vec<ecs::Tag> {
    let mut out = given.to_vec();
    for t in propagated.iter().chain(
        &managed
            .iter()
            .map(|(k, v)| ecs::Tag {
                key: Some(k.to_string()),
                value: Some(v.to_string()),
            })
            .collect::<Vec<_>>(),
    ) {
        if !out.iter().any(|o| o.key == t.key) {
            out.push(t.clone());
        }
    }
    out
}

/// The resources one copy of `td` with `overrides` needs on an instance.
pub(crate) fn demand(td: &TaskDefinition, overrides: &TaskOverride) -> Result<Demand, EcsError> {
    let containers = td.container_definitions.as_deref().unwrap_or_default();
    let co = |name: &str| {
        overrides
            .container_overrides
            .iter()
            .flatten()
            .find(|o| o.name.as_deref() == Some(name))
    };
    let cpu = match overrides.cpu.as_deref().or(td.cpu.as_deref()) {
        Some(s) => units::parse_cpu(s).map_err(EcsError::from)? as i64,
        None => containers
            .iter()
            .map(|c| {
                co(c.name.as_deref().unwrap_or(""))
                    .and_then(|o| o.cpu)
                    .or(c.cpu)
                    .unwrap_or(0) as i64
            })
            .sum(),
    };
    let memory = match overrides.memory.as_deref().or(td.memory.as_deref()) {
        Some(s) => units::parse_memory(s).map_err(EcsError::from)? as i64,
        None => containers
            .iter()
            .map(|c| {
                let o = co(c.name.as_deref().unwrap_or(""));
                // The scheduler reserves the soft limit when there is one, as ECS does.
                o.and_then(|o| o.memory_reservation)
                    .or(c.memory_reservation)
                    .or(o.and_then(|o| o.memory))
                    .or(c.memory)
                    .unwrap_or(0) as i64
            })
            .sum(),
    };
    let host_mode = td.network_mode.as_deref() == Some("host");
    // An awsvpc task has its own network namespace: it takes none of the host's ports.
    let awsvpc = td.network_mode.as_deref() == Some("awsvpc");
    let mut ports = Vec::new();
    let mut udp_ports = Vec::new();
    for c in containers.iter().filter(|_| !awsvpc) {
        for pm in c.port_mappings.iter().flatten() {
            let host = match pm.host_port {
                Some(p) if p > 0 => Some(p),
                _ if host_mode => pm.container_port,
                _ => None,
            };
            if let Some(p) = host.and_then(|p| u16::try_from(p).ok()) {
                if pm.protocol.as_deref() == Some("udp") {
                    udp_ports.push(p);
                } else {
                    ports.push(p);
                }
            }
        }
    }
    let mut required_attributes: Vec<String> = td
        .requires_attributes
        .iter()
        .flatten()
        .filter_map(|a| a.name.clone())
        .collect();
    if awsvpc && !required_attributes.iter().any(|a| a == TASK_ENI) {
        // Only agents that set up task interfaces can run it.
        required_attributes.push(TASK_ENI.into());
    }
    Ok(Demand {
        cpu,
        memory,
        ports,
        udp_ports,
        required_attributes,
    })
}

/// Fargate's ephemeral storage when a task asks for none, and the range it may ask for.
pub(crate) const FARGATE_STORAGE_GIB: i32 = 20;
const STORAGE_RANGE_GIB: std::ops::RangeInclusive<i32> = 21..=200;

/// `ephemeralStorage` (of a task definition or an override) as ECS takes it.
pub(crate) fn check_ephemeral_storage(e: Option<&ecs::EphemeralStorage>) -> Result<(), EcsError> {
    match e.map(|e| e.size_in_gi_b) {
        None => Ok(()),
        Some(Some(n)) if STORAGE_RANGE_GIB.contains(&n) => Ok(()),
        Some(n) => Err(EcsError::invalid(format!(
            "ephemeralStorage.sizeInGiB {} must be between 21 and 200 GiB.",
            n.map(|n| n.to_string()).unwrap_or_else(|| "null".into())
        ))),
    }
}

/// What a task shows of where it runs: a FARGATE task its platform, capacity provider
/// (FARGATE unless FARGATE_SPOT) and ephemeral storage (`storage_gib`); a task of an Auto
/// Scaling group provider that provider.
fn provider_fields(launch_type: &str, provider: Option<&str>, storage_gib: i32) -> ecs::Task {
    if launch_type != "FARGATE" {
        return ecs::Task {
            capacity_provider_name: provider.map(str::to_string),
            ..Default::default()
        };
    }
    ecs::Task {
        platform_version: Some(crate::FARGATE_PLATFORM_VERSION.into()),
        platform_family: Some("Linux".into()),
        capacity_provider_name: Some(provider.unwrap_or("FARGATE").into()),
        ephemeral_storage: Some(ecs::EphemeralStorage {
            size_in_gi_b: Some(storage_gib),
        }),
        fargate_ephemeral_storage: Some(ecs::TaskEphemeralStorage {
            size_in_gi_b: Some(storage_gib),
            kms_key_id: None,
        }),
        ..Default::default()
    }
}

/// The refusal of tasks and services in the pool of Fargate capacity itself.
pub(crate) fn pool_is_not_a_cluster() -> EcsError {
    EcsError::invalid(
        "The cluster ~fargate is Berth's pool of Fargate capacity: run tasks and services in your own clusters (their FARGATE tasks run on it).",
    )
}

/// How long a placement waits, in all, for other placements of this server to finish
/// committing to the instances it picked before it gives up with a conflict.
const LANDING_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// How long it waits for one landing before it places again anyway.
const LANDING_POLL: std::time::Duration = std::time::Duration::from_secs(1);

/// Where a placement's hosts are: the task's cluster, or the pool of Fargate capacity.
fn hosts<'a>(
    cs: &'a mut ClusterState,
    pool: &'a mut Option<tokio::sync::OwnedMutexGuard<ClusterState>>,
) -> &'a mut ClusterState {
    match pool {
        Some(p) => p,
        None => cs,
    }
}

/// The ECS agent's attribute for hosts that give tasks their own interfaces (`awsvpc`).
pub const TASK_ENI: &str = "ecs.capability.task-eni";

/// An instance record with its remaining resources set from a candidate.
pub(crate) fn with_remaining(mut ci: ContainerInstance, c: &Candidate) -> ContainerInstance {
    let r = Resources {
        cpu: c.cpu,
        memory: c.memory,
        ports: c.ports_used.clone(),
        ports_udp: c.udp_ports_used.clone(),
    };
    ci.remaining_resources = Some(r.to_ecs());
    ci.version = Some(ci.version.unwrap_or(0) + 1);
    ci
}

/// Marks a task STOPPED now (its containers too) when nobody is left to report it.
pub(crate) fn finish_stopped(t: &mut ecs::Task, now: f64) {
    t.last_status = Some("STOPPED".into());
    t.stopped_at = Some(now);
    t.execution_stopped_at.get_or_insert(now);
    for c in t.containers.iter_mut().flatten() {
        c.last_status = Some("STOPPED".into());
    }
}

/// `ci` with what task `t` (whose definition asks for `d`) held given back: the CPU and memory
/// the task record says placement reserved, and its static host ports. Pure.
pub(crate) fn give_back(
    mut ci: ContainerInstance,
    t: &ecs::Task,
    mut d: Demand,
) -> Result<ContainerInstance, EcsError> {
    let reg = Resources::from_ecs(ci.registered_resources.as_deref().unwrap_or_default())?;
    let mut rem = Resources::from_ecs(ci.remaining_resources.as_deref().unwrap_or_default())?;
    // The task record holds what placement reserved; it is the amount to give back.
    if let Some(cpu) = t.cpu.as_deref().and_then(|c| c.parse::<i64>().ok()) {
        d.cpu = cpu;
    }
    if let Some(memory) = t.memory.as_deref().and_then(|m| m.parse::<i64>().ok()) {
        d.memory = memory;
    }
    rem.cpu = (rem.cpu + d.cpu).min(reg.cpu);
    rem.memory = (rem.memory + d.memory).min(reg.memory);
    for p in d.ports {
        if !reg.ports.contains(&p) {
            rem.ports.remove(&p);
        }
    }
    for p in d.udp_ports {
        if !reg.ports_udp.contains(&p) {
            rem.ports_udp.remove(&p);
        }
    }
    ci.remaining_resources = Some(rem.to_ecs());
    ci.version = Some(ci.version.unwrap_or(0) + 1);
    Ok(ci)
}

/// Folds an agent report into a task record. Statuses only move forward; timestamps are
/// set once; the server's own stop reason (StopTask) wins over the agent's.
pub(crate) fn merge_report(t: &mut ecs::Task, rep: &TaskReport, now: f64) {
    let was = t
        .last_status
        .as_deref()
        .and_then(TaskStatus::parse)
        .unwrap_or(TaskStatus::Pending);
    let next = TaskStatus::parse(&rep.last_status).unwrap_or(was);
    for c in t.containers.iter_mut().flatten() {
        let Some(cr) = rep
            .containers
            .iter()
            .find(|cr| Some(&cr.name) == c.name.as_ref())
        else {
            continue;
        };
        let cw = c
            .last_status
            .as_deref()
            .and_then(TaskStatus::parse)
            .unwrap_or(TaskStatus::Pending);
        if let Some(cn) = TaskStatus::parse(&cr.last_status) {
            if cw.can_become(cn) {
                c.last_status = Some(cn.as_str().into());
            }
        }
        if cr.runtime_id.is_some() {
            c.runtime_id = cr.runtime_id.clone();
        }
        if cr.exit_code.is_some() {
            c.exit_code = cr.exit_code;
        }
        if cr.reason.is_some() {
            c.reason = cr.reason.clone();
        }
        if cr.image_digest.is_some() {
            c.image_digest = cr.image_digest.clone();
        }
        if cr.health_status.is_some() {
            c.health_status = cr.health_status.clone();
        }
        if !cr.network_bindings.is_empty() {
            c.network_bindings = Some(
                cr.network_bindings
                    .iter()
                    .map(|b| ecs::NetworkBinding {
                        bind_ip: Some(b.bind_ip.clone()),
                        container_port: Some(i32::from(b.container_port)),
                        host_port: Some(i32::from(b.host_port)),
                        protocol: Some(b.protocol.clone()),
                        ..Default::default()
                    })
                    .collect(),
            );
        }
    }
    if t.pull_started_at.is_none() {
        t.pull_started_at = rep.pull_started_at;
    }
    if t.pull_stopped_at.is_none() {
        t.pull_stopped_at = rep.pull_stopped_at;
    }
    if rep.health_status.is_some() {
        t.health_status = rep.health_status.clone();
    }
    if rep.stop_code.is_some() && t.desired_status.as_deref() != Some("STOPPED") {
        t.desired_status = Some("STOPPED".into());
        t.stopping_at = rep.stopping_at.or(Some(now));
        t.stop_code = rep.stop_code.clone();
        t.stopped_reason = rep.stopped_reason.clone();
    }
    if was.can_become(next) {
        t.last_status = Some(next.as_str().into());
        if next >= TaskStatus::Running && t.started_at.is_none() {
            t.started_at = rep.started_at;
        }
        if next == TaskStatus::Running {
            t.connectivity = Some("CONNECTED".into());
            t.connectivity_at = rep.started_at;
        }
        if next == TaskStatus::Stopped {
            t.desired_status = Some("STOPPED".into());
            t.stopping_at.get_or_insert(now);
            t.execution_stopped_at = rep.execution_stopped_at.or(Some(now));
            t.stopped_at = Some(now);
            if t.stop_code.is_none() {
                t.stop_code = rep
                    .stop_code
                    .clone()
                    .or(Some("EssentialContainerExited".into()));
                t.stopped_reason = rep.stopped_reason.clone();
            }
        }
    }
    crate::ec2::follow_attachment(t);
}

/// What a host brings when it registers.
#[derive(Debug, Clone, Default)]
pub struct Registration {
    pub instance_id: String,
    pub cpu: i64,
    pub memory: i64,
    pub ports: BTreeSet<u16>,
    pub ports_udp: BTreeSet<u16>,
    pub attributes: BTreeMap<String, Option<String>>,
    pub version_info: Option<VersionInfo>,
    pub tags: Vec<Tag>,
}

pub(crate) fn check_attribute(name: &str, value: Option<&str>) -> Result<(), EcsError> {
    let name_ok = !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_/.".contains(c));
    if !name_ok {
        return Err(EcsError::invalid(format!(
            "attribute name '{name}' must be 1-128 letters, numbers, hyphens, underscores, slashes or periods"
        )));
    }
    if let Some(v) = value {
        let ok = !v.is_empty()
            && v.len() <= 128
            && v.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.@/: ".contains(c));
        if !ok {
            return Err(EcsError::invalid(format!(
                "attribute '{name}' value '{v}' must be 1-128 letters, numbers, hyphens, underscores, periods, at signs, slashes, colons or spaces"
            )));
        }
    }
    Ok(())
}

pub(crate) fn is_builtin_attribute(name: &str) -> bool {
    name.starts_with("ecs.") || name.starts_with("com.amazonaws.ecs.")
}

/// ECS allows ten custom attributes per resource.
pub(crate) const MAX_CUSTOM_ATTRIBUTES: usize = 10;

/// What one placement is about, for building its commit.
struct Placing<'a> {
    cluster: &'a str,
    cluster_arn: &'a str,
    td: &'a TaskDefinition,
    demand: &'a Demand,
    meta: &'a Meta,
}

/// The VPC records a placement of `awsvpc` tasks reads, and the addresses already given out.
struct Addresses {
    snap: crate::ec2::Snapshot,
}

/// A placement's transaction, and what it writes (for the state's write-through).
struct PlacementCommit {
    txn: Txn,
    /// `(task id, record)`.
    tasks: Vec<(String, ecs::Task)>,
    /// `(key, record)` of each instance whose remaining resources changed.
    instances: Vec<(String, ContainerInstance)>,
}

impl Control {
    pub(crate) fn check_overrides(td: &TaskDefinition, o: &TaskOverride) -> Result<(), EcsError> {
        for co in o.container_overrides.iter().flatten() {
            let name = co.name.as_deref().unwrap_or("");
            if !td
                .container_definitions
                .iter()
                .flatten()
                .any(|c| c.name.as_deref() == Some(name))
            {
                return Err(EcsError::invalid(format!(
                    "Override for container named {name} is not a container in the TaskDefinition."
                )));
            }
            for n in [co.cpu, co.memory, co.memory_reservation]
                .into_iter()
                .flatten()
            {
                if n < 0 {
                    return Err(EcsError::invalid(format!(
                        "override for container {name}: {n} must not be negative"
                    )));
                }
            }
        }
        if let Some(c) = o.cpu.as_deref() {
            units::parse_cpu(c)?;
        }
        if let Some(m) = o.memory.as_deref() {
            units::parse_memory(m)?;
        }
        check_ephemeral_storage(o.ephemeral_storage.as_ref())
    }

    /// A task definition's network mode against the `networkConfiguration` given, as ECS
    /// checks them; an `awsvpc` configuration resolved (its subnets and groups must exist).
    pub(crate) async fn check_network(
        &self,
        td: &TaskDefinition,
        network: Option<&ecs::NetworkConfiguration>,
    ) -> Result<Option<crate::ec2::Awsvpc>, EcsError> {
        let config = network.and_then(|n| n.awsvpc_configuration.as_ref());
        match (td.network_mode.as_deref() == Some("awsvpc"), config) {
            (true, Some(c)) => Ok(Some(self.resolve_awsvpc(c).await?)),
            (true, None) => Err(EcsError::invalid(
                "Network Configuration must be provided when networkMode 'awsvpc' is specified.",
            )),
            (false, Some(_)) => Err(EcsError::invalid(
                "Network Configuration is not valid for the given `networkMode` of this task definition.",
            )),
            (false, None) => Ok(None),
        }
    }

    /// A new task record for `td` on `ci`.
    pub(crate) fn new_task(
        &self,
        (cluster, cluster_arn): (&str, &str),
        td: &TaskDefinition,
        ci: &ContainerInstance,
        d: &Demand,
        meta: &Meta,
    ) -> ecs::Task {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let task_arn = self.task_arn(cluster, &id);
        let containers = td
            .container_definitions
            .iter()
            .flatten()
            .map(|c| Container {
                container_arn: Some(format!(
                    "arn:aws:ecs:{}:{}:container/{cluster}/{id}/{}",
                    self.config.region,
                    self.config.account_id,
                    uuid::Uuid::new_v4()
                )),
                task_arn: Some(task_arn.clone()),
                name: c.name.clone(),
                image: c.image.clone(),
                last_status: Some("PENDING".into()),
                network_bindings: Some(Vec::new()),
                network_interfaces: Some(Vec::new()),
                cpu: Some(c.cpu.unwrap_or(0).to_string()),
                memory: c.memory.map(|m| m.to_string()),
                memory_reservation: c.memory_reservation.map(|m| m.to_string()),
                health_status: c.health_check.as_ref().map(|_| "UNKNOWN".to_string()),
                ..Default::default()
            })
            .collect();
        let family = td.family.clone().unwrap_or_default();
        ecs::Task {
            task_arn: Some(task_arn),
            cluster_arn: Some(cluster_arn.to_string()),
            task_definition_arn: td.task_definition_arn.clone(),
            container_instance_arn: ci.container_instance_arn.clone(),
            availability_zone: attribute(ci, "ecs.availability-zone").map(str::to_string),
            overrides: Some(TaskOverride {
                container_overrides: Some(
                    meta.overrides
                        .container_overrides
                        .clone()
                        .unwrap_or_default(),
                ),
                inference_accelerator_overrides: Some(Vec::new()),
                ..meta.overrides.clone()
            }),
            last_status: Some(TaskStatus::Pending.as_str().into()),
            desired_status: Some("RUNNING".into()),
            cpu: Some(d.cpu.to_string()),
            memory: Some(d.memory.to_string()),
            containers: Some(containers),
            created_at: Some(now_epoch()),
            version: Some(1),
            launch_type: Some(launch_type_of(ci).into()),
            started_by: meta.started_by.clone(),
            group: Some(
                meta.group
                    .clone()
                    .unwrap_or_else(|| format!("family:{family}")),
            ),
            health_status: Some("UNKNOWN".into()),
            enable_execute_command: Some(false),
            attachments: Some(Vec::new()),
            attributes: Some(vec![ecs::Attribute {
                name: Some("ecs.cpu-architecture".into()),
                value: attribute(ci, "ecs.cpu-architecture").map(str::to_string),
                ..Default::default()
            }]),
            tags: Some(meta.tags.clone()),
            ..provider_fields(
                launch_type_of(ci),
                meta.capacity_provider.as_deref(),
                meta.overrides
                    .ephemeral_storage
                    .as_ref()
                    .or(td.ephemeral_storage.as_ref())
                    .and_then(|e| e.size_in_gi_b)
                    .unwrap_or(FARGATE_STORAGE_GIB),
            )
        }
    }

    /// Places and commits tasks; the heart of RunTask, StartTask and services.
    pub(crate) async fn start_tasks(
        &self,
        cluster_ident: Option<&str>,
        td_ident: Option<&str>,
        pool: Pool,
        count: usize,
        meta: Meta,
    ) -> Result<(Vec<ecs::Task>, Vec<ecs::Failure>), EcsError> {
        let placed = self
            .place_and_commit(cluster_ident, td_ident, pool, count, meta)
            .await;
        if let Ok((tasks, failures)) = &placed {
            self.metrics.tasks_placed.inc_by(tasks.len() as u64);
            self.metrics.placements_failed.inc_by(failures.len() as u64);
        }
        placed
    }

    async fn place_and_commit(
        &self,
        cluster_ident: Option<&str>,
        td_ident: Option<&str>,
        pool: Pool,
        count: usize,
        meta: Meta,
    ) -> Result<(Vec<ecs::Task>, Vec<ecs::Failure>), EcsError> {
        let (cluster_rec, _) = self.active_cluster(cluster_ident).await?;
        let cluster = cluster_rec.cluster_name.clone().unwrap_or_default();
        let cluster_arn = cluster_rec.cluster_arn.clone().unwrap_or_default();
        if cluster == crate::FARGATE_POOL {
            return Err(pool_is_not_a_cluster());
        }
        let launch_type = match &pool {
            Pool::LaunchType(l) => l.clone(),
            Pool::Instances(_) => "EC2".to_string(),
        };
        let td = self
            .runnable_definition(td_ident, &launch_type, meta.allow_inactive)
            .await?;
        Self::check_overrides(&td, &meta.overrides)?;
        crate::check_tags(&meta.tags)?;
        let mut meta = meta;
        meta.awsvpc = self.check_network(&td, meta.network.as_ref()).await?;
        let propagated = match &meta.propagate {
            Propagate::None => Vec::new(),
            Propagate::TaskDefinition => {
                self.tags_of(td.task_definition_arn.as_deref().unwrap_or_default())
                    .await?
            }
            Propagate::Service(tags) => tags.clone(),
        };
        let mut managed: Vec<(&str, &str)> = Vec::new();
        if meta.managed_tags {
            managed.push(("aws:ecs:clusterName", cluster.as_str()));
            if let Some(svc) = meta.service.as_deref() {
                managed.push(("aws:ecs:serviceName", svc));
            }
        }
        meta.tags = task_tags(&meta.tags, &propagated, &managed);
        crate::check_tag_count(&meta.tags)?;
        let d = demand(&td, &meta.overrides)?;
        if matches!(&pool, Pool::LaunchType(l) if l == "FARGATE") {
            let fits = u32::try_from(d.cpu)
                .ok()
                .zip(u32::try_from(d.memory).ok())
                .is_some_and(|(c, m)| berth_model::fargate::is_valid_size(c, m));
            if !fits {
                return Err(EcsError::invalid(format!(
                    "No Fargate configuration exists for given values: {} CPU, {} memory. See the Amazon ECS documentation for the valid values.",
                    d.cpu, d.memory
                )));
            }
        }
        let family = td.family.clone().unwrap_or_default();
        let mut constraints = crate::placement::constraints(
            &meta.constraints,
            td.placement_constraints.as_deref().unwrap_or_default(),
        )?;
        // An Auto Scaling group provider's tasks go only on its group's instances.
        if let Some(only) = self
            .provider_constraint(meta.capacity_provider.as_deref())
            .await?
        {
            constraints.push(only);
        }
        let rules = Rules {
            constraints,
            // ECS's default for standalone tasks is random placement.
            strategies: match crate::placement::strategies(&meta.strategies)? {
                s if s.is_empty() => vec![berth_scheduler::Strategy::Random],
                s => s,
            },
            group: meta
                .group
                .clone()
                .unwrap_or_else(|| format!("family:{family}")),
            seed: rand::random(),
        };

        if let Some(token) = &meta.client_token {
            if let Some((arns, _)) = self
                .get_record::<Vec<String>>(&keys::run_token(&cluster, token))
                .await?
            {
                let mut tasks = Vec::new();
                for arn in arns {
                    if let Some(id) = task_id_of(&arn) {
                        if let Some((t, _)) = self.get_record(&keys::task(&cluster, id)).await? {
                            tasks.push(t);
                        }
                    }
                }
                return Ok((tasks, Vec::new()));
            }
        }

        let fargate = matches!(&pool, Pool::LaunchType(l) if l == "FARGATE");
        let ctx = Placing {
            cluster: &cluster,
            cluster_arn: &cluster_arn,
            td: &td,
            demand: &d,
            meta: &meta,
        };
        // Where the hosts are: FARGATE's in the pool.
        let host_cluster = match fargate {
            true => crate::FARGATE_POOL,
            false => cluster.as_str(),
        };
        let flights = self.state.flights(host_cluster);
        // On a shared store a placement lets the cluster's lock go while it commits (readers,
        // agents' polls and the other placements of the cluster need not wait for etcd;
        // `Config::placement_lets_go`), except an awsvpc one: each rewrites its subnet's
        // record, so two of them committing at once would conflict.
        let lets_go = self
            .config
            .placement_lets_go
            .unwrap_or_else(|| self.root.leases().is_some());
        let hold = !lets_go || meta.awsvpc.is_some();
        let waiting_since = std::time::Instant::now();
        let mut conflicts = 0;
        while conflicts < CAS_ATTEMPTS {
            let (_, cluster_kv) = self.active_cluster(Some(&cluster)).await?;
            let addresses = match &meta.awsvpc {
                Some(_) => Some(Addresses {
                    snap: self.ec2_snapshot().await?,
                }),
                None => None,
            };
            let landed = flights.landed.notified();
            tokio::pin!(landed);
            landed.as_mut().enable();
            let (mut cs, mut pool_hosts) = self.lock_placement(&cluster, fargate).await;
            // Around the instances other placements of this server are committing to, if
            // every copy fits elsewhere; else as if they were not in flight (and then, if it
            // picks one of them, it waits for it to land).
            let busy = match hold {
                true => HashSet::new(),
                false => self.state.in_flight(host_cluster),
            };
            let mut placed = hosts(&mut cs, &mut pool_hosts).place(
                &pool,
                &d,
                &rules,
                count,
                self.state.presence(),
                &busy,
            );
            if let Some(p) = placed.as_ref().filter(|p| {
                !busy.is_empty() && matches!(pool, Pool::LaunchType(_)) && p.copies.len() < count
            }) {
                hosts(&mut cs, &mut pool_hosts).undo(&p.touched, self.state.presence());
                placed = hosts(&mut cs, &mut pool_hosts).place(
                    &pool,
                    &d,
                    &rules,
                    count,
                    self.state.presence(),
                    &HashSet::new(),
                );
            }
            let Some(placed) = placed else {
                return Err(EcsError::invalid(if fargate {
                    "No Fargate capacity is available: start an agent with --capacity fargate (berth up starts one)."
                } else {
                    "No Container Instances were found in your cluster."
                }));
            };
            let mut failures: Vec<ecs::Failure> = placed
                .failures
                .iter()
                .map(|(arn, reason)| ecs::Failure {
                    arn: Some(arn.clone()),
                    reason: Some(
                        reason
                            .as_ref()
                            .map(|r| r.ecs_reason())
                            .unwrap_or_else(|| "MISSING".into()),
                    ),
                    detail: reason.as_ref().and_then(|r| r.detail()),
                })
                .collect();
            // ECS lists failures in instance order.
            failures.sort_by(|a, b| a.arn.cmp(&b.arn));
            if placed.copies.is_empty() {
                hosts(&mut cs, &mut pool_hosts).undo(&placed.touched, self.state.presence());
                return Ok((Vec::new(), failures));
            }
            let flight = match hold {
                true => None,
                false => match self.state.take_off(host_cluster, &placed.touched) {
                    Some(f) => Some(f),
                    None => {
                        // Another placement of this server is committing to one of these
                        // instances: place again once it has landed.
                        hosts(&mut cs, &mut pool_hosts)
                            .undo(&placed.touched, self.state.presence());
                        drop(pool_hosts);
                        drop(cs);
                        if waiting_since.elapsed() > LANDING_WAIT {
                            break;
                        }
                        let _ = tokio::time::timeout(LANDING_POLL, landed).await;
                        continue;
                    }
                },
            };
            let commit = match self.placement_txn(
                hosts(&mut cs, &mut pool_hosts),
                &ctx,
                &placed,
                &cluster_kv,
                addresses.as_ref(),
            ) {
                Ok(c) => c,
                Err(e) => {
                    hosts(&mut cs, &mut pool_hosts).undo(&placed.touched, self.state.presence());
                    return Err(e);
                }
            };
            let outcome = match &flight {
                None => self.store.txn(commit.txn).await,
                Some(_) => {
                    drop(pool_hosts);
                    drop(cs);
                    let outcome = self.store.txn(commit.txn).await;
                    (cs, pool_hosts) = self.lock_placement(&cluster, fargate).await;
                    outcome
                }
            };
            match outcome {
                Ok(TxnOutcome::Committed(rev)) => {
                    let let_go = flight.as_ref().map(|_| self.state.presence());
                    let woken = match pool_hosts.as_mut() {
                        Some(pool_state) => {
                            let mut w = pool_state.committed(rev, commit.instances, &[], let_go);
                            w.extend(cs.committed(rev, Vec::new(), &commit.tasks, let_go));
                            w
                        }
                        None => cs.committed(rev, commit.instances, &commit.tasks, let_go),
                    };
                    if let Some(f) = flight {
                        f.land();
                    }
                    drop(pool_hosts);
                    let dirty = cs.take_dirty_services();
                    drop(cs);
                    for name in dirty {
                        self.state.mark_dirty(&format!("{cluster}/{name}"));
                    }
                    self.state.wake(woken.iter().map(String::as_str));
                    if meta.awsvpc.is_some() {
                        // New members of the tasks' groups: other agents' rules may name them.
                        self.members_changed();
                    }
                    tracing::debug!(cluster, count = commit.tasks.len(), "tasks placed");
                    return Ok((commit.tasks.into_iter().map(|(_, t)| t).collect(), failures));
                }
                Ok(TxnOutcome::Conflict) => {
                    hosts(&mut cs, &mut pool_hosts).undo(&placed.touched, self.state.presence());
                    if let Some(f) = flight {
                        f.land();
                    }
                    drop(pool_hosts);
                    drop(cs);
                    // Someone wrote an instance or the cluster since the state saw it.
                    self.caught_up().await?;
                    conflicts += 1;
                }
                Err(e) => {
                    hosts(&mut cs, &mut pool_hosts).undo(&placed.touched, self.state.presence());
                    if let Some(f) = flight {
                        f.land();
                    }
                    return Err(store_error(e));
                }
            }
        }
        Err(conflict_exhausted("placing tasks"))
    }

    /// The locks a placement takes: its cluster's part of the state and, for FARGATE tasks
    /// (which go on the pool's capacity and live in their own cluster), the pool's. Every
    /// placement takes them in this order.
    async fn lock_placement(
        &self,
        cluster: &str,
        fargate: bool,
    ) -> (
        tokio::sync::OwnedMutexGuard<ClusterState>,
        Option<tokio::sync::OwnedMutexGuard<ClusterState>>,
    ) {
        let cs = self.state.cluster(cluster).await;
        let pool = match fargate {
            true => Some(self.state.cluster(crate::FARGATE_POOL).await),
            false => None,
        };
        (cs, pool)
    }

    /// The transaction that commits a placement: the new tasks (and their tags and client
    /// token), and each touched instance's new remaining resources, guarded on the revision the
    /// state holds for each and on the cluster record.
    fn placement_txn(
        &self,
        cs: &ClusterState,
        ctx: &Placing<'_>,
        placed: &Placed,
        cluster_kv: &KeyValue,
        addresses: Option<&Addresses>,
    ) -> Result<PlacementCommit, EcsError> {
        let mut txn = Txn::new().unchanged(&keys::cluster(ctx.cluster), Some(cluster_kv));
        let mut tasks = Vec::new();
        let mut taken = addresses.map(|a| a.snap.ips.clone()).unwrap_or_default();
        let mut taken_public = addresses
            .map(|a| a.snap.public_ips.clone())
            .unwrap_or_default();
        for (index, arn) in placed.copies.iter().enumerate() {
            let ci = &cs
                .instance(arn)
                .ok_or_else(|| EcsError::server(format!("placed on unknown instance {arn}")))?
                .record;
            let mut t = self.new_task(
                (ctx.cluster, ctx.cluster_arn),
                ctx.td,
                ci,
                ctx.demand,
                ctx.meta,
            );
            let arn = t.task_arn.clone().unwrap_or_default();
            if let (Some(net), Some(a)) = (&ctx.meta.awsvpc, addresses) {
                let (eni, with) = self.allocate_eni(
                    &a.snap,
                    net,
                    index,
                    &mut taken,
                    &mut taken_public,
                    &arn,
                    txn,
                )?;
                txn = with;
                crate::ec2::attach(&mut t, &eni);
                if t.launch_type.as_deref() == Some("FARGATE") {
                    // Fargate's zone is its subnet's.
                    t.availability_zone = Some(eni.availability_zone.clone());
                }
            }
            let id = task_id_of(&arn).unwrap_or_default().to_string();
            txn = txn.put(keys::task(ctx.cluster, &id), encode(&t)?);
            if !ctx.meta.tags.is_empty() {
                txn = txn.put(keys::tags(&arn), encode(&ctx.meta.tags)?);
            }
            tasks.push((id, t));
        }
        let mut instances = Vec::new();
        for arn in &placed.touched {
            let (Some(e), Some(c)) = (cs.instance(arn), cs.placed_candidate(arn)) else {
                return Err(EcsError::server(format!(
                    "placed on unknown instance {arn}"
                )));
            };
            let record = with_remaining(e.record.clone(), c);
            txn = txn
                .when(Compare::ModRevision(e.key.clone(), e.mod_revision))
                .put(e.key.clone(), encode(&record)?);
            instances.push((e.key.clone(), record));
        }
        if let Some(token) = &ctx.meta.client_token {
            let key = keys::run_token(ctx.cluster, token);
            let arns: Vec<String> = tasks
                .iter()
                .filter_map(|(_, t)| t.task_arn.clone())
                .collect();
            txn = txn.unchanged(&key, None).put(key, encode(&arns)?);
        }
        Ok(PlacementCommit {
            txn,
            tasks,
            instances,
        })
    }

    /// Sets a task's desiredStatus to STOPPED with `code` and `reason` (the agent does the
    /// stopping); `None` when there is no such task.
    pub(crate) async fn stop_task_as(
        &self,
        cluster: &str,
        id: &str,
        code: &str,
        reason: &str,
    ) -> Result<Option<ecs::Task>, EcsError> {
        let key = keys::task(cluster, id);
        for _ in 0..CAS_ATTEMPTS {
            let Some((mut t, kv)) = self.get_record::<ecs::Task>(&key).await? else {
                return Ok(None);
            };
            if t.desired_status.as_deref() == Some("STOPPED") {
                return Ok(Some(t));
            }
            let now = now_epoch();
            t.desired_status = Some("STOPPED".into());
            t.stopping_at = Some(now);
            t.stop_code = Some(code.into());
            t.stopped_reason = Some(reason.into());
            t.version = Some(t.version.unwrap_or(0) + 1);
            // A task whose host is gone has nobody to stop it: it stops now.
            let instance = match t.container_instance_arn.as_deref() {
                Some(arn) => {
                    let (host_cluster, _) = crate::agents::instance_parts(arn)
                        .unwrap_or_else(|_| (cluster.to_string(), String::new()));
                    self.find_instance(&host_cluster, arn).await?
                }
                None => None,
            };
            let host_gone = instance.as_ref().is_none_or(|(ci, _)| {
                ci.status.as_deref() == Some(InstanceStatus::Inactive.as_str())
            });
            let mut txn = Txn::new();
            if host_gone {
                finish_stopped(&mut t, now);
                for key in crate::ec2::release_keys(&t) {
                    txn = txn.delete(key);
                }
                if let Some((key, usage)) = crate::metering::on_stop(cluster, &t) {
                    txn = txn.put(key, encode(&usage)?);
                }
            }
            crate::ec2::follow_attachment(&mut t);
            let released = host_gone && !crate::ec2::release_keys(&t).is_empty();
            if self.commit(txn.replace(&kv, encode(&t)?)).await? {
                if released {
                    self.members_changed();
                }
                return Ok(Some(t));
            }
        }
        Err(conflict_exhausted("stopping the task"))
    }

    /// Applies one agent report to the task it names; `Ok(true)` when something changed.
    /// Reports for tasks that are not on `instance_arn` are ignored.
    pub async fn apply_report(
        &self,
        cluster: &str,
        instance_arn: &str,
        rep: &TaskReport,
    ) -> Result<bool, EcsError> {
        let Some(id) = self.task_id(cluster, &rep.task_arn) else {
            return Ok(false);
        };
        let key = keys::task(cluster, &id);
        for _ in 0..CAS_ATTEMPTS {
            let Some((mut t, kv)) = self.get_record::<ecs::Task>(&key).await? else {
                return Ok(false);
            };
            if t.container_instance_arn.as_deref() != Some(instance_arn) {
                tracing::warn!(
                    task = rep.task_arn,
                    instance_arn,
                    "report for a task on another instance ignored"
                );
                return Ok(false);
            }
            let before = encode(&t)?;
            let was = t
                .last_status
                .as_deref()
                .and_then(TaskStatus::parse)
                .unwrap_or(TaskStatus::Pending);
            merge_report(&mut t, rep, now_epoch());
            let now_status = t
                .last_status
                .as_deref()
                .and_then(TaskStatus::parse)
                .unwrap_or(was);
            let after = encode(&t)?;
            if before == after {
                return Ok(false);
            }
            t.version = Some(t.version.unwrap_or(0) + 1);
            let mut txn = Txn::new().replace(&kv, encode(&t)?);
            let mut released = false;
            if was != TaskStatus::Stopped && now_status == TaskStatus::Stopped {
                // Give the task's resources back, once, in the same transaction (to its host,
                // which for Fargate capacity is in the pool, not the task's cluster).
                let (host_cluster, _) = crate::agents::instance_parts(instance_arn)?;
                if let Some((ci, ikv)) = self.find_instance(&host_cluster, instance_arn).await? {
                    let ci = self.released(ci, &t).await?;
                    txn = txn.replace(&ikv, encode(&ci)?);
                }
                // And its interface and addresses; a Fargate task's use is metered.
                for key in crate::ec2::release_keys(&t) {
                    released = true;
                    txn = txn.delete(key);
                }
                if let Some((key, usage)) = crate::metering::on_stop(cluster, &t) {
                    txn = txn.put(key, encode(&usage)?);
                }
            }
            if self.commit(txn).await? {
                if released {
                    self.members_changed();
                }
                return Ok(true);
            }
        }
        Err(conflict_exhausted("recording the task's state"))
    }

    /// `ci` with task `t`'s resources given back.
    pub(crate) async fn released(
        &self,
        ci: ContainerInstance,
        t: &ecs::Task,
    ) -> Result<ContainerInstance, EcsError> {
        let td = self
            .find_task_definition(t.task_definition_arn.as_deref().unwrap_or_default())
            .await
            .ok()
            .map(|(td, _)| td);
        let d = match td {
            Some(td) => demand(&td, &t.overrides.clone().unwrap_or_default())?,
            None => Demand::default(),
        };
        give_back(ci, t, d)
    }

    /// Registers a host in `cluster`, or updates the ACTIVE/DRAINING instance that already has
    /// its instance id (a host that registers again keeps its ARN and its tasks).
    pub async fn register_instance(
        &self,
        cluster: &str,
        reg: Registration,
    ) -> Result<ContainerInstance, EcsError> {
        for (name, value) in &reg.attributes {
            check_attribute(name, value.as_deref())?;
        }
        crate::check_tags(&reg.tags)?;
        for _ in 0..CAS_ATTEMPTS {
            let (_, cluster_kv) = self.active_cluster(Some(cluster)).await?;
            self.caught_up().await?;
            let existing = self
                .state
                .cluster(cluster)
                .await
                .instance_by_host_id(&reg.instance_id)
                .map(|e| {
                    let seen = KeyValue {
                        key: e.key.clone(),
                        value: Vec::new(),
                        create_revision: 0,
                        mod_revision: e.mod_revision,
                    };
                    (e.record.clone(), seen)
                });
            let registered = Resources {
                cpu: reg.cpu,
                memory: reg.memory,
                ports: reg.ports.clone(),
                ports_udp: reg.ports_udp.clone(),
            };
            let attributes: Vec<Attribute> = reg
                .attributes
                .iter()
                .map(|(k, v)| Attribute {
                    name: Some(k.clone()),
                    value: v.clone(),
                    ..Default::default()
                })
                .collect();
            let (ci, key, seen) = match existing {
                Some((mut ci, kv)) => {
                    // Keep what tasks hold: remaining = new registered - (old registered - old remaining).
                    let old_reg = Resources::from_ecs(
                        ci.registered_resources.as_deref().unwrap_or_default(),
                    )?;
                    let old_rem =
                        Resources::from_ecs(ci.remaining_resources.as_deref().unwrap_or_default())?;
                    let in_use_ports: BTreeSet<u16> =
                        old_rem.ports.difference(&old_reg.ports).copied().collect();
                    let remaining = Resources {
                        cpu: registered.cpu - (old_reg.cpu - old_rem.cpu),
                        memory: registered.memory - (old_reg.memory - old_rem.memory),
                        ports: registered.ports.union(&in_use_ports).copied().collect(),
                        ports_udp: registered.ports_udp.clone(),
                    };
                    // Custom attributes set through PutAttributes survive a re-registration.
                    let mut merged = attributes.clone();
                    for a in ci.attributes.iter().flatten() {
                        let name = a.name.as_deref().unwrap_or("");
                        if !is_builtin_attribute(name) && !reg.attributes.contains_key(name) {
                            merged.push(a.clone());
                        }
                    }
                    ci.registered_resources = Some(registered.to_ecs());
                    ci.remaining_resources = Some(remaining.to_ecs());
                    ci.attributes = Some(merged);
                    ci.version_info = reg.version_info.clone().or(ci.version_info);
                    ci.version = Some(ci.version.unwrap_or(0) + 1);
                    let id = ci
                        .container_instance_arn
                        .as_deref()
                        .and_then(|a| a.rsplit('/').next())
                        .unwrap_or_default()
                        .to_string();
                    (ci, keys::instance(cluster, &id), Some(kv))
                }
                None => {
                    let id = uuid::Uuid::new_v4().simple().to_string();
                    let ci = ContainerInstance {
                        container_instance_arn: Some(self.instance_arn(cluster, &id)),
                        ec2_instance_id: Some(reg.instance_id.clone()),
                        version: Some(1),
                        version_info: reg.version_info.clone(),
                        registered_resources: Some(registered.to_ecs()),
                        remaining_resources: Some(registered.to_ecs()),
                        status: Some(InstanceStatus::Active.as_str().into()),
                        agent_connected: Some(false),
                        running_tasks_count: Some(0),
                        pending_tasks_count: Some(0),
                        attributes: Some(attributes),
                        registered_at: Some(now_epoch()),
                        ..Default::default()
                    };
                    (ci, keys::instance(cluster, &id), None)
                }
            };
            let arn = ci.container_instance_arn.clone().unwrap_or_default();
            let mut txn = Txn::new()
                .unchanged(&keys::cluster(cluster), Some(&cluster_kv))
                .unchanged(&key, seen.as_ref())
                .put(key.clone(), encode(&ci)?);
            if !reg.tags.is_empty() {
                txn = txn.put(keys::tags(&arn), encode(&reg.tags)?);
            }
            if self.commit(txn).await? {
                return self.present_instance(cluster, ci, false).await;
            }
        }
        Err(conflict_exhausted("registering the container instance"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_agent_proto::{Binding, ContainerReport};
    use berth_api::ecs::Container;

    fn task() -> ecs::Task {
        ecs::Task {
            last_status: Some("PENDING".into()),
            desired_status: Some("RUNNING".into()),
            containers: Some(vec![Container {
                name: Some("web".into()),
                last_status: Some("PENDING".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }
    }

    fn report(status: &str) -> TaskReport {
        TaskReport {
            task_arn: "t".into(),
            last_status: status.into(),
            started_at: Some(10.0),
            containers: vec![ContainerReport {
                name: "web".into(),
                last_status: status.into(),
                network_bindings: vec![Binding {
                    bind_ip: "0.0.0.0".into(),
                    container_port: 80,
                    host_port: 32768,
                    protocol: "tcp".into(),
                }],
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn reports_move_status_forward_only() {
        let mut t = task();
        merge_report(&mut t, &report("RUNNING"), 100.0);
        assert_eq!(t.last_status.as_deref(), Some("RUNNING"));
        assert_eq!(t.started_at, Some(10.0));
        let bindings = t.containers.as_ref().unwrap()[0]
            .network_bindings
            .clone()
            .unwrap();
        assert_eq!(bindings[0].host_port, Some(32768));
        // A late, duplicated PENDING report changes nothing.
        merge_report(&mut t, &report("PENDING"), 100.0);
        assert_eq!(t.last_status.as_deref(), Some("RUNNING"));
        assert_eq!(
            t.containers.as_ref().unwrap()[0].last_status.as_deref(),
            Some("RUNNING")
        );
    }

    #[test]
    fn the_agents_stop_reason_is_kept_unless_the_user_stopped_first() {
        let mut t = task();
        let mut r = report("STOPPED");
        r.stop_code = Some("EssentialContainerExited".into());
        r.stopped_reason = Some("Essential container in task exited".into());
        merge_report(&mut t, &r, 100.0);
        assert_eq!(t.desired_status.as_deref(), Some("STOPPED"));
        assert_eq!(t.stop_code.as_deref(), Some("EssentialContainerExited"));
        assert!(t.stopped_at.is_some() && t.execution_stopped_at.is_some());

        let mut t = task();
        t.desired_status = Some("STOPPED".into());
        t.stop_code = Some("UserInitiated".into());
        t.stopped_reason = Some("bye".into());
        merge_report(&mut t, &r, 100.0);
        assert_eq!(t.stop_code.as_deref(), Some("UserInitiated"));
        assert_eq!(t.stopped_reason.as_deref(), Some("bye"));
    }

    #[test]
    fn demand_reserves_soft_limits_task_sizes_and_static_ports() {
        let td: TaskDefinition = serde_json::from_value(serde_json::json!({
            "networkMode": "bridge",
            "containerDefinitions": [
                {"name": "a", "cpu": 128, "memory": 512, "memoryReservation": 128,
                 "portMappings": [{"containerPort": 80, "hostPort": 8080}, {"containerPort": 81}]},
                {"name": "b", "cpu": 256, "memory": 256,
                 "portMappings": [{"containerPort": 53, "hostPort": 53, "protocol": "udp"}]}
            ]
        }))
        .unwrap();
        let d = demand(&td, &TaskOverride::default()).unwrap();
        assert_eq!((d.cpu, d.memory), (384, 384));
        assert_eq!((d.ports, d.udp_ports), (vec![8080], vec![53]));
        let o = TaskOverride {
            cpu: Some("1 vCPU".into()),
            memory: Some("2GB".into()),
            ..Default::default()
        };
        let d = demand(&td, &o).unwrap();
        assert_eq!((d.cpu, d.memory), (1024, 2048));
    }

    #[test]
    fn giving_back_restores_what_the_task_held_and_never_more_than_registered() {
        let reg = Resources {
            cpu: 1024,
            memory: 2048,
            ports: [22].into(),
            ports_udp: Default::default(),
        };
        let held = Resources {
            cpu: 1024 - 256,
            memory: 2048 - 512,
            ports: [22, 8080].into(),
            ports_udp: Default::default(),
        };
        let ci = ContainerInstance {
            registered_resources: Some(reg.to_ecs()),
            remaining_resources: Some(held.to_ecs()),
            ..Default::default()
        };
        let t = ecs::Task {
            cpu: Some("256".into()),
            memory: Some("512".into()),
            ..Default::default()
        };
        let d = Demand {
            ports: vec![8080, 22],
            ..Default::default()
        };
        let back = give_back(ci, &t, d.clone()).unwrap();
        let rem = Resources::from_ecs(back.remaining_resources.as_deref().unwrap()).unwrap();
        assert_eq!(
            rem, reg,
            "the reserved port 22 stays taken; 8080 is free again"
        );
        // Twice (a duplicate) never gives more than was registered.
        let again = give_back(back, &t, d).unwrap();
        let rem = Resources::from_ecs(again.remaining_resources.as_deref().unwrap()).unwrap();
        assert_eq!(rem, reg);
    }
}
