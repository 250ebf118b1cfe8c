//! Container Insights and `AWS/ECS` utilization: agents send each running task's resource use
//! ([`Control::agent_stats`]), the latest sample per task is kept in memory ([`Usage`]), and
//! every insights interval [`Control::publish_insights`] turns a snapshot of each cluster plus
//! those samples into CloudWatch datums ([`datums`], pure) in the metric store.
//!
//! What is published, with ECS's names:
//! - `ECS/ContainerInsights`, for clusters whose `containerInsights` setting is `enabled` or
//!   `enhanced`: per task (so `Sum` is the cluster's total and `Average` the task's mean)
//!   `CpuUtilized`, `CpuReserved`, `MemoryUtilized`, `MemoryReserved`, `NetworkRxBytes`,
//!   `NetworkTxBytes`, `StorageReadBytes`, `StorageWriteBytes` under `ClusterName`,
//!   `ClusterName,ServiceName` and `ClusterName,TaskDefinitionFamily` (and, `enhanced`,
//!   `ClusterName,TaskDefinitionFamily,TaskId`); counts `TaskCount`, `ServiceCount`,
//!   `ContainerInstanceCount` per cluster, `DesiredTaskCount`, `RunningTaskCount`,
//!   `PendingTaskCount`, `DeploymentCount` per service, `RunningTaskCount` per family; and,
//!   `enhanced`, each container's `ContainerCpuUtilized`, `ContainerMemoryUtilized`,
//!   `ContainerNetworkRxBytes`, `ContainerNetworkTxBytes`, `ContainerStorageReadBytes` and
//!   `ContainerStorageWriteBytes` under `ClusterName,ContainerName` with the family (and task)
//!   or the service.
//! - `AWS/ECS`, always: `CPUUtilization` and `MemoryUtilization` (used over reserved, percent)
//!   per cluster and per service, and `CPUReservation`/`MemoryReservation` (reserved over
//!   registered, percent) per cluster with container instances.
//! - `AWS/ECS/ManagedScaling`: `CapacityProviderReservation` under
//!   `CapacityProviderName,ClusterName` for each Auto Scaling group provider of the cluster with
//!   managed scaling enabled ([`reservation`]).

use crate::resources::Resources;
use crate::Control;
use berth_agent_proto::{StatsReport, TaskStats};
use berth_api::ecs::{self, ContainerInstance};
use berth_api::EcsError;
use berth_cloudwatch::{Datum, SeriesKey, Stats, Unit};
use berth_model::status::TaskStatus;
use std::collections::HashMap;
use std::sync::Mutex;

pub const INSIGHTS_NAMESPACE: &str = "ECS/ContainerInsights";
pub const ECS_NAMESPACE: &str = "AWS/ECS";

/// A sample older than this is not published (its task's agent has gone quiet).
const STALE_MS: i64 = 5 * 60 * 1000;

/// The cluster's `containerInsights` setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Disabled,
    Enabled,
    Enhanced,
}

impl Level {
    pub fn parse(value: Option<&str>) -> Level {
        match value {
            Some("enabled") => Level::Enabled,
            Some("enhanced") => Level::Enhanced,
            _ => Level::Disabled,
        }
    }
}

/// A task as the publisher sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskView {
    pub id: String,
    pub family: String,
    /// `service:NAME` for a service's task.
    pub group: String,
    pub status: TaskStatus,
    /// Its latest sample, and the one published before it (for rates and amounts).
    pub sample: Option<TaskStats>,
    pub previous: Option<TaskStats>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ServiceView {
    pub name: String,
    pub desired: i32,
    pub deployments: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ClusterView {
    pub name: String,
    pub level: Level,
    /// Registered (not INACTIVE) instances: (registered CPU, remaining CPU, registered MiB,
    /// remaining MiB).
    pub instances: Vec<(f64, f64, f64, f64)>,
    pub services: Vec<ServiceView>,
    pub tasks: Vec<TaskView>,
    /// The cluster's Auto Scaling group providers with managed scaling enabled.
    pub providers: Vec<ProviderView>,
    /// Each registered instance of a group: (its group, whether it runs or is starting a task).
    pub grouped: Vec<(String, bool)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProviderView {
    pub name: String,
    pub group: String,
    /// The services whose strategy names the provider.
    pub services: Vec<String>,
}

pub const MANAGED_SCALING_NAMESPACE: &str = "AWS/ECS/ManagedScaling";

/// ECS's `CapacityProviderReservation`: M / N × 100 with N the group's instances and M the
/// instances its tasks need; 100 when both are 0, 200 when only N is (capacity is needed and
/// there is none). Pure.
pub fn reservation(n: usize, m: usize) -> f64 {
    match (n, m) {
        (0, 0) => 100.0,
        (0, _) => 200.0,
        (n, m) => m as f64 * 100.0 / n as f64,
    }
}

/// The reservation datums of a cluster's providers. M counts the group's instances that run
/// or start a task, plus one when a service on the provider has fewer tasks than it wants
/// (Berth does not hold tasks waiting for capacity, so that one is the least it needs).
fn reservation_datums(c: &ClusterView) -> Vec<(String, f64)> {
    c.providers
        .iter()
        .map(|p| {
            let mine = c.grouped.iter().filter(|(g, _)| *g == p.group);
            let n = mine.clone().count();
            let busy = mine.filter(|(_, b)| *b).count();
            let short = c.services.iter().any(|s| {
                let group = format!("service:{}", s.name);
                let live = c
                    .tasks
                    .iter()
                    .filter(|t| t.group == group && t.status != TaskStatus::Stopped)
                    .count();
                p.services.contains(&s.name) && live < s.desired.max(0) as usize
            });
            (p.name.clone(), reservation(n, busy + usize::from(short)))
        })
        .collect()
}

fn dims(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// What one task's two samples say, per period: rates per second, amounts since the last.
struct TaskFigures {
    cpu: f64,
    cpu_reserved: f64,
    memory_mib: f64,
    memory_reserved: f64,
    rates: Option<(f64, f64, f64, f64)>,
}

fn figures(cur: &TaskStats, prev: Option<&TaskStats>) -> TaskFigures {
    // A sample that missed one of the task's containers would read as a counter reset.
    let rates = prev
        .filter(|p| cur.at_ms > p.at_ms && cur.containers == p.containers)
        .map(|p| {
            let secs = cur.at_ms.saturating_sub(p.at_ms) as f64 / 1000.0;
            // A counter that went down was reset (a container restarted): count from zero.
            let delta = |c: u64, p: u64| if c >= p { c - p } else { c } as f64;
            (
                delta(cur.network_rx_bytes, p.network_rx_bytes) / secs,
                delta(cur.network_tx_bytes, p.network_tx_bytes) / secs,
                delta(cur.storage_read_bytes, p.storage_read_bytes),
                delta(cur.storage_write_bytes, p.storage_write_bytes),
            )
        });
    TaskFigures {
        cpu: cur.cpu_units,
        cpu_reserved: f64::from(cur.cpu_reserved),
        memory_mib: cur.memory_bytes as f64 / (1024.0 * 1024.0),
        memory_reserved: f64::from(cur.memory_reserved_mib),
        rates,
    }
}

/// The datums for one cluster at `now_ms`. Pure.
pub fn datums(c: &ClusterView, now_ms: i64) -> Vec<Datum> {
    let mut out = Vec::new();
    let mut put = |ns: &str, name: &str, d: &[(&str, &str)], unit: Unit, v: f64| {
        out.push(Datum {
            key: SeriesKey::new(ns, name, dims(d)),
            timestamp_ms: now_ms,
            unit,
            stats: Stats::from_value(v),
            high_resolution: false,
        });
    };
    let cluster = c.name.as_str();
    for (provider, v) in reservation_datums(c) {
        put(
            MANAGED_SCALING_NAMESPACE,
            "CapacityProviderReservation",
            &[
                ("CapacityProviderName", &provider),
                ("ClusterName", cluster),
            ],
            Unit::Percent,
            v,
        );
    }
    let fresh = |t: &&TaskView| {
        t.status == TaskStatus::Running
            && t.sample
                .as_ref()
                .is_some_and(|s| now_ms.saturating_sub(s.at_ms) <= STALE_MS)
    };
    // Used and reserved per service, and for the cluster, for AWS/ECS.
    let mut totals: HashMap<&str, [f64; 4]> = HashMap::new();
    for t in c.tasks.iter().filter(fresh) {
        let Some(s) = &t.sample else { continue };
        let f = figures(s, t.previous.as_ref());
        let service = t.group.strip_prefix("service:");
        for key in std::iter::once("").chain(service) {
            let e = totals.entry(key).or_default();
            e[0] += f.cpu;
            e[1] += f.cpu_reserved;
            e[2] += f.memory_mib;
            e[3] += f.memory_reserved;
        }
        if c.level == Level::Disabled {
            continue;
        }
        let mut sets: Vec<Vec<(&str, &str)>> = vec![
            vec![("ClusterName", cluster)],
            vec![
                ("ClusterName", cluster),
                ("TaskDefinitionFamily", &t.family),
            ],
        ];
        if let Some(s) = service {
            sets.push(vec![("ClusterName", cluster), ("ServiceName", s)]);
        }
        if c.level == Level::Enhanced {
            sets.push(vec![
                ("ClusterName", cluster),
                ("TaskDefinitionFamily", &t.family),
                ("TaskId", &t.id),
            ]);
        }
        if c.level == Level::Enhanced {
            for cs in &s.per_container {
                let before = t
                    .previous
                    .as_ref()
                    .and_then(|p| p.per_container.iter().find(|c| c.name == cs.name))
                    .map(|p| (p, t.previous.as_ref().map_or(0, |p| p.at_ms)));
                let name = cs.name.as_str();
                let mut csets: Vec<Vec<(&str, &str)>> = vec![
                    vec![
                        ("ClusterName", cluster),
                        ("ContainerName", name),
                        ("TaskDefinitionFamily", &t.family),
                    ],
                    vec![
                        ("ClusterName", cluster),
                        ("ContainerName", name),
                        ("TaskDefinitionFamily", &t.family),
                        ("TaskId", &t.id),
                    ],
                ];
                if let Some(svc) = service {
                    csets.push(vec![
                        ("ClusterName", cluster),
                        ("ContainerName", name),
                        ("ServiceName", svc),
                    ]);
                }
                let memory = cs.memory_bytes as f64 / (1024.0 * 1024.0);
                let rates = before.filter(|(_, at)| s.at_ms > *at).map(|(p, at)| {
                    let secs = s.at_ms.saturating_sub(at) as f64 / 1000.0;
                    let delta = |c: u64, p: u64| if c >= p { c - p } else { c } as f64;
                    (
                        delta(cs.network_rx_bytes, p.network_rx_bytes) / secs,
                        delta(cs.network_tx_bytes, p.network_tx_bytes) / secs,
                        delta(cs.storage_read_bytes, p.storage_read_bytes),
                        delta(cs.storage_write_bytes, p.storage_write_bytes),
                    )
                });
                for d in &csets {
                    let ns = INSIGHTS_NAMESPACE;
                    let cpu = if cs.cpu_units.is_finite() {
                        cs.cpu_units
                    } else {
                        0.0
                    };
                    put(ns, "ContainerCpuUtilized", d, Unit::None, cpu);
                    put(ns, "ContainerMemoryUtilized", d, Unit::Megabytes, memory);
                    if let Some((rx, tx, read, write)) = rates {
                        put(ns, "ContainerNetworkRxBytes", d, Unit::BytesPerSecond, rx);
                        put(ns, "ContainerNetworkTxBytes", d, Unit::BytesPerSecond, tx);
                        put(ns, "ContainerStorageReadBytes", d, Unit::Bytes, read);
                        put(ns, "ContainerStorageWriteBytes", d, Unit::Bytes, write);
                    }
                }
            }
        }
        for d in &sets {
            let ns = INSIGHTS_NAMESPACE;
            put(ns, "CpuUtilized", d, Unit::None, f.cpu);
            put(ns, "CpuReserved", d, Unit::None, f.cpu_reserved);
            put(ns, "MemoryUtilized", d, Unit::Megabytes, f.memory_mib);
            put(ns, "MemoryReserved", d, Unit::Megabytes, f.memory_reserved);
            if let Some((rx, tx, read, write)) = f.rates {
                put(ns, "NetworkRxBytes", d, Unit::BytesPerSecond, rx);
                put(ns, "NetworkTxBytes", d, Unit::BytesPerSecond, tx);
                put(ns, "StorageReadBytes", d, Unit::Bytes, read);
                put(ns, "StorageWriteBytes", d, Unit::Bytes, write);
            }
        }
    }
    let percent = |used: f64, of: f64| (of > 0.0).then(|| 100.0 * used / of);
    // A service's use is measured against what its tasks reserve; a cluster's against what
    // its container instances registered, as ECS measures them.
    let registered_cpu: f64 = c.instances.iter().map(|i| i.0).sum();
    let registered_mem: f64 = c.instances.iter().map(|i| i.2).sum();
    for (service, [cpu, cpu_r, mem, mem_r]) in &totals {
        let (d, cpu_r, mem_r): (Vec<(&str, &str)>, &f64, &f64) = if service.is_empty() {
            (
                vec![("ClusterName", cluster)],
                &registered_cpu,
                &registered_mem,
            )
        } else {
            (
                vec![("ClusterName", cluster), ("ServiceName", service)],
                cpu_r,
                mem_r,
            )
        };
        if let Some(p) = percent(*cpu, *cpu_r) {
            put(ECS_NAMESPACE, "CPUUtilization", &d, Unit::Percent, p);
        }
        if let Some(p) = percent(*mem, *mem_r) {
            put(ECS_NAMESPACE, "MemoryUtilization", &d, Unit::Percent, p);
        }
    }
    if !c.instances.is_empty() {
        let d = [("ClusterName", cluster)];
        let (mut cpu, mut cpu_left, mut mem, mut mem_left) = (0.0, 0.0, 0.0, 0.0);
        for (a, b, m, n) in &c.instances {
            cpu += a;
            cpu_left += b;
            mem += m;
            mem_left += n;
        }
        if let Some(p) = percent(cpu - cpu_left, cpu) {
            put(ECS_NAMESPACE, "CPUReservation", &d, Unit::Percent, p);
        }
        if let Some(p) = percent(mem - mem_left, mem) {
            put(ECS_NAMESPACE, "MemoryReservation", &d, Unit::Percent, p);
        }
    }
    if c.level == Level::Disabled {
        return out;
    }
    let ns = INSIGHTS_NAMESPACE;
    let running = |group: Option<&str>, family: Option<&str>, status: fn(TaskStatus) -> bool| {
        c.tasks
            .iter()
            .filter(|t| status(t.status))
            .filter(|t| group.is_none_or(|g| t.group == g))
            .filter(|t| family.is_none_or(|f| t.family == f))
            .count() as f64
    };
    let is_running = |s: TaskStatus| s == TaskStatus::Running;
    let is_pending = |s: TaskStatus| s < TaskStatus::Running;
    let d = [("ClusterName", cluster)];
    put(
        ns,
        "TaskCount",
        &d,
        Unit::Count,
        running(None, None, is_running),
    );
    put(ns, "ServiceCount", &d, Unit::Count, c.services.len() as f64);
    put(
        ns,
        "ContainerInstanceCount",
        &d,
        Unit::Count,
        c.instances.len() as f64,
    );
    for s in &c.services {
        let group = format!("service:{}", s.name);
        let d = [("ClusterName", cluster), ("ServiceName", s.name.as_str())];
        put(
            ns,
            "DesiredTaskCount",
            &d,
            Unit::Count,
            f64::from(s.desired),
        );
        let r = running(Some(&group), None, is_running);
        put(ns, "RunningTaskCount", &d, Unit::Count, r);
        let p = running(Some(&group), None, is_pending);
        put(ns, "PendingTaskCount", &d, Unit::Count, p);
        put(ns, "DeploymentCount", &d, Unit::Count, s.deployments as f64);
    }
    let mut families: Vec<&str> = c.tasks.iter().map(|t| t.family.as_str()).collect();
    families.sort_unstable();
    families.dedup();
    for f in families {
        let d = [("ClusterName", cluster), ("TaskDefinitionFamily", f)];
        let r = running(None, Some(f), is_running);
        put(ns, "RunningTaskCount", &d, Unit::Count, r);
    }
    out
}

/// The latest sample of each running task, by task ARN, with the one published before it.
#[derive(Debug, Default)]
pub struct Usage(Mutex<HashMap<String, (TaskStats, Option<TaskStats>)>>);

impl Usage {
    fn record(&self, s: TaskStats) {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        // Tasks no publisher asked about for long (their samples stale) are forgotten here too.
        if m.len() >= 1024 && !m.contains_key(&s.task_arn) {
            let oldest = s.at_ms.saturating_sub(2 * STALE_MS);
            m.retain(|_, e| e.0.at_ms >= oldest);
        }
        match m.get_mut(&s.task_arn) {
            Some(e) if s.at_ms > e.0.at_ms => e.0 = s,
            Some(_) => {}
            None => {
                m.insert(s.task_arn.clone(), (s, None));
            }
        }
    }

    /// The latest and previously published samples of these tasks; the latest becomes the
    /// previous for the next period. Tasks not named are forgotten.
    fn take(&self, arns: &[String]) -> HashMap<String, (TaskStats, Option<TaskStats>)> {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let keep: std::collections::HashSet<&String> = arns.iter().collect();
        m.retain(|k, _| keep.contains(k));
        let out = m.clone();
        for e in m.values_mut() {
            e.1 = Some(e.0.clone());
        }
        out
    }

    pub fn clear(&self) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

/// An agent's sample as the server keeps it: stamped with the server's clock (so staleness
/// and rates do not depend on the agent's), CPU units bounded by what any host could have.
fn sanitized(mut s: TaskStats, now_ms: i64) -> TaskStats {
    const MAX_CPU_UNITS: f64 = 1024.0 * 4096.0;
    s.at_ms = now_ms;
    let bounded = |v: f64| {
        if v.is_finite() {
            v.clamp(0.0, MAX_CPU_UNITS)
        } else {
            0.0
        }
    };
    s.cpu_units = bounded(s.cpu_units);
    // A task has at most ten containers.
    s.per_container.truncate(10);
    s.per_container.retain(|c| !c.name.is_empty());
    for c in &mut s.per_container {
        c.cpu_units = bounded(c.cpu_units);
        if let Some((at, _)) = c.name.char_indices().nth(255) {
            c.name.truncate(at);
        }
    }
    s
}

/// An instance's registered and remaining resources (nothing, for an unreadable record).
fn resources(ci: &ContainerInstance) -> (Resources, Resources) {
    let of = |list: &Option<Vec<berth_api::ecs::Resource>>| {
        Resources::from_ecs(list.as_deref().unwrap_or_default()).unwrap_or_default()
    };
    (of(&ci.registered_resources), of(&ci.remaining_resources))
}

impl Control {
    /// An agent's sample of its tasks' resource use. Samples of tasks that are not this
    /// instance's are ignored, so an agent speaks only for its own tasks.
    pub async fn agent_stats(
        &self,
        instance_arn: &str,
        report: StatsReport,
    ) -> Result<usize, EcsError> {
        if self.cloudwatch.is_none() {
            return Ok(0);
        }
        let mut accepted = 0;
        for s in report.tasks {
            let Some(id) = crate::read::task_id_of(&s.task_arn) else {
                continue;
            };
            // A task lives in the cluster its ARN names (for Fargate capacity, not the host's).
            let Some(cluster) = s.task_arn.rsplit('/').nth(1) else {
                continue;
            };
            let ours = self
                .state
                .cluster(cluster)
                .await
                .task(id)
                .is_some_and(|t| t.instance.as_deref() == Some(instance_arn));
            if ours {
                self.usage.record(sanitized(s, crate::now_millis()));
                accepted += 1;
            }
        }
        Ok(accepted)
    }

    /// A snapshot of every cluster as [`datums`] reads it, with the samples of its tasks.
    async fn cluster_views(&self) -> Result<Vec<ClusterView>, EcsError> {
        let mut views = Vec::new();
        let mut live_arns = Vec::new();
        let clusters = self.clusters_all().await?;
        let scaled: Vec<(String, String)> = self
            .capacity_providers_all()
            .await?
            .into_iter()
            .filter_map(|(p, _)| {
                let asg = p.auto_scaling_group_provider?;
                let on = asg.managed_scaling?.status.as_deref() == Some("ENABLED");
                let group = crate::capacity::group_name(&asg.auto_scaling_group_arn?).ok()?;
                on.then_some((p.name?, group))
            })
            .collect();
        for (cluster, _) in clusters {
            let Some(name) = cluster.cluster_name.clone() else {
                continue;
            };
            if cluster.status.as_deref() != Some("ACTIVE") {
                continue;
            }
            let level = Level::parse(
                cluster
                    .settings
                    .iter()
                    .flatten()
                    .find(|s| s.name.as_deref() == Some("containerInsights"))
                    .and_then(|s| s.value.as_deref()),
            );
            let services: Vec<ecs::Service> = self
                .services_in(&name)
                .await?
                .into_iter()
                .map(|(s, _)| s)
                .filter(|s| s.status.as_deref() == Some("ACTIVE"))
                .collect();
            let daemon_groups: std::collections::HashSet<String> = services
                .iter()
                .filter(|s| s.scheduling_strategy.as_deref() == Some("DAEMON"))
                .filter_map(|s| s.service_name.as_ref().map(|n| format!("service:{n}")))
                .collect();
            let providers = scaled
                .iter()
                .filter(|(p, _)| cluster.capacity_providers.iter().flatten().any(|x| x == p))
                .map(|(p, group)| ProviderView {
                    name: p.clone(),
                    group: group.clone(),
                    services: services
                        .iter()
                        .filter(|s| {
                            s.capacity_provider_strategy
                                .iter()
                                .flatten()
                                .any(|i| i.capacity_provider.as_deref() == Some(p))
                        })
                        .filter_map(|s| s.service_name.clone())
                        .collect(),
                })
                .collect();
            let services = services
                .into_iter()
                .map(|s| ServiceView {
                    name: s.service_name.unwrap_or_default(),
                    desired: s.desired_count.unwrap_or(0),
                    deployments: s.deployments.map(|d| d.len()).unwrap_or(0),
                })
                .collect();
            let state = self.state.cluster(&name).await;
            let instances = state
                .instances()
                .filter(|e| e.record.status.as_deref() != Some("INACTIVE"))
                .map(|e| {
                    let (all, left) = resources(&e.record);
                    (
                        all.cpu as f64,
                        left.cpu as f64,
                        all.memory as f64,
                        left.memory as f64,
                    )
                })
                .collect();
            // An instance is busy with a task that needs it there: daemon tasks do not count
            // (every instance runs them), as in ECS's reservation.
            let busy: std::collections::HashSet<String> = state
                .tasks_after(None, usize::MAX, |t| {
                    t.last_status != TaskStatus::Stopped && !daemon_groups.contains(&*t.group)
                })
                .into_iter()
                .filter_map(|t| t.instance.as_deref().map(str::to_string))
                .collect();
            let grouped = state
                .instances()
                .filter(|e| e.record.status.as_deref() != Some("INACTIVE"))
                .filter_map(|e| {
                    let group =
                        crate::read::attribute(&e.record, crate::AUTO_SCALING_GROUP_ATTRIBUTE)?;
                    let arn = e
                        .record
                        .container_instance_arn
                        .as_deref()
                        .unwrap_or_default();
                    Some((group.to_string(), busy.contains(arn)))
                })
                .collect();
            let tasks: Vec<TaskView> = state
                .tasks_after(None, usize::MAX, |t| t.last_status != TaskStatus::Stopped)
                .into_iter()
                .map(|t| TaskView {
                    id: t.id.clone(),
                    family: t.family.to_string(),
                    group: t.group.to_string(),
                    status: t.last_status,
                    sample: None,
                    previous: None,
                })
                .collect();
            drop(state);
            live_arns.extend(tasks.iter().map(|t| self.task_arn(&name, &t.id)));
            views.push(ClusterView {
                name,
                level,
                instances,
                services,
                tasks,
                providers,
                grouped,
            });
        }
        let mut samples = self.usage.take(&live_arns);
        for v in &mut views {
            for t in &mut v.tasks {
                if let Some((cur, prev)) = samples.remove(&self.task_arn(&v.name, &t.id)) {
                    t.sample = Some(cur);
                    t.previous = prev;
                }
            }
        }
        Ok(views)
    }

    /// Publishes every cluster's figures into the metric store (no-op without one).
    pub async fn publish_insights(&self) -> Result<usize, EcsError> {
        let Some(store) = self.cloudwatch.clone() else {
            return Ok(0);
        };
        let now = crate::now_millis();
        let data: Vec<Datum> = self
            .cluster_views()
            .await?
            .iter()
            .flat_map(|c| datums(c, now))
            .filter(|d| berth_cloudwatch::check(d, now).is_ok())
            .collect();
        let n = data.len();
        // Written and fsynced every period, so a crash loses at most the last one.
        tokio::task::spawn_blocking(move || {
            store.put(&data, now, false).and_then(|()| store.flush())
        })
        .await
        .map_err(|e| EcsError::server(format!("publishing metrics failed: {e}")))?
        .map_err(|e| EcsError::server(format!("publishing metrics failed: {e}")))?;
        Ok(n)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn sample(at_ms: i64, cpu: f64, rx: u64) -> TaskStats {
        TaskStats {
            task_arn: "t".into(),
            at_ms,
            cpu_units: cpu,
            memory_bytes: 64 << 20,
            cpu_reserved: 256,
            memory_reserved_mib: 128,
            network_rx_bytes: rx,
            ..Default::default()
        }
    }

    fn task(id: &str, group: &str, status: TaskStatus, s: Option<TaskStats>) -> TaskView {
        TaskView {
            id: id.into(),
            family: "web".into(),
            group: group.into(),
            status,
            sample: s,
            previous: None,
        }
    }

    fn find<'a>(out: &'a [Datum], ns: &str, name: &str, d: &[(&str, &str)]) -> Vec<&'a Datum> {
        let key = SeriesKey::new(ns, name, dims(d));
        out.iter().filter(|x| x.key == key).collect()
    }

    fn view(level: Level) -> ClusterView {
        ClusterView {
            name: "c".into(),
            level,
            instances: vec![(2048.0, 1536.0, 4096.0, 3840.0)],
            services: vec![ServiceView {
                name: "api".into(),
                desired: 3,
                deployments: 1,
            }],
            tasks: vec![
                task(
                    "a",
                    "service:api",
                    TaskStatus::Running,
                    Some(sample(1000, 512.0, 0)),
                ),
                task(
                    "b",
                    "service:api",
                    TaskStatus::Running,
                    Some(sample(1000, 128.0, 0)),
                ),
                task("c", "service:api", TaskStatus::Pending, None),
                task("d", "family:web", TaskStatus::Running, None),
            ],
            providers: Vec::new(),
            grouped: Vec::new(),
        }
    }

    #[test]
    fn capacity_provider_reservation_is_needed_over_registered() {
        assert_eq!(reservation(0, 0), 100.0);
        assert_eq!(reservation(0, 2), 200.0);
        assert_eq!(reservation(4, 1), 25.0);
        let mut v = view(Level::Disabled);
        v.providers = vec![ProviderView {
            name: "cp".into(),
            group: "asg".into(),
            services: vec!["api".into()],
        }];
        v.grouped = vec![
            ("asg".into(), true),
            ("asg".into(), false),
            ("asg".into(), false),
            ("asg".into(), false),
            ("other".into(), true),
        ];
        let series = |out: &[Datum]| {
            let found = find(
                out,
                MANAGED_SCALING_NAMESPACE,
                "CapacityProviderReservation",
                &[("CapacityProviderName", "cp"), ("ClusterName", "c")],
            );
            assert_eq!(found.len(), 1, "one reservation datum: {out:?}");
            found[0].stats.sum
        };
        // api wants 3 and has 3 (a, b, c): one busy instance of four.
        assert_eq!(series(&datums(&v, 2000)), 25.0);
        // Wanting a fourth it cannot place: one more instance is needed.
        v.services[0].desired = 4;
        assert_eq!(series(&datums(&v, 2000)), 50.0);
        // No instance at all, tasks wanted: 200.
        v.grouped.clear();
        assert_eq!(series(&datums(&v, 2000)), 200.0);
    }

    #[test]
    fn per_task_figures_aggregate_into_cluster_and_service_series() {
        let out = datums(&view(Level::Enabled), 2000);
        let cpu = find(
            &out,
            INSIGHTS_NAMESPACE,
            "CpuUtilized",
            &[("ClusterName", "c")],
        );
        assert_eq!(cpu.len(), 2, "one datum per sampled running task");
        let total: f64 = cpu.iter().map(|d| d.stats.sum).sum();
        assert_eq!(total, 640.0, "the cluster's Sum is every task's CPU");
        let svc = find(
            &out,
            INSIGHTS_NAMESPACE,
            "RunningTaskCount",
            &[("ClusterName", "c"), ("ServiceName", "api")],
        );
        assert_eq!(svc[0].stats.sum, 2.0, "two of the service's tasks run");
        let pending = find(
            &out,
            INSIGHTS_NAMESPACE,
            "PendingTaskCount",
            &[("ClusterName", "c"), ("ServiceName", "api")],
        );
        assert_eq!(pending[0].stats.sum, 1.0);
        let util = find(
            &out,
            ECS_NAMESPACE,
            "CPUUtilization",
            &[("ClusterName", "c"), ("ServiceName", "api")],
        );
        assert_eq!(util[0].stats.sum, 125.0, "640 used of 512 reserved");
        let mem = find(
            &out,
            ECS_NAMESPACE,
            "MemoryUtilization",
            &[("ClusterName", "c")],
        );
        assert_eq!(
            mem[0].stats.sum, 3.125,
            "a cluster's use is against what its instances registered: 128 MiB of 4096"
        );
        let svc_mem = find(
            &out,
            ECS_NAMESPACE,
            "MemoryUtilization",
            &[("ClusterName", "c"), ("ServiceName", "api")],
        );
        assert_eq!(
            svc_mem[0].stats.sum, 50.0,
            "a service's: 128 MiB of the 256 reserved"
        );
        let res = find(
            &out,
            ECS_NAMESPACE,
            "CPUReservation",
            &[("ClusterName", "c")],
        );
        assert_eq!(res[0].stats.sum, 25.0, "512 of 2048 units reserved");
        assert!(
            find(
                &out,
                INSIGHTS_NAMESPACE,
                "NetworkRxBytes",
                &[("ClusterName", "c")]
            )
            .is_empty(),
            "no rate from a single sample"
        );
    }

    #[test]
    fn enhanced_adds_each_containers_figures() {
        let mut v = view(Level::Enhanced);
        let mut cur = sample(10_000, 300.0, 0);
        cur.per_container = vec![berth_agent_proto::ContainerStats {
            name: "web".into(),
            cpu_units: 300.0,
            memory_bytes: 32 << 20,
            network_rx_bytes: 3000,
            ..Default::default()
        }];
        let mut prev = cur.clone();
        prev.at_ms = 0;
        prev.per_container[0].network_rx_bytes = 1000;
        v.tasks[0].sample = Some(cur);
        v.tasks[0].previous = Some(prev);
        let out = datums(&v, 10_000);
        let d = [
            ("ClusterName", "c"),
            ("ContainerName", "web"),
            ("TaskDefinitionFamily", "web"),
            ("TaskId", "a"),
        ];
        let cpu = find(&out, INSIGHTS_NAMESPACE, "ContainerCpuUtilized", &d);
        assert_eq!(cpu[0].stats.sum, 300.0);
        let rx = find(&out, INSIGHTS_NAMESPACE, "ContainerNetworkRxBytes", &d);
        assert_eq!(rx[0].stats.sum, 200.0, "2000 bytes over 10 s");
        let by_service = find(
            &out,
            INSIGHTS_NAMESPACE,
            "ContainerMemoryUtilized",
            &[
                ("ClusterName", "c"),
                ("ContainerName", "web"),
                ("ServiceName", "api"),
            ],
        );
        assert_eq!(by_service[0].stats.sum, 32.0);
        let plain = datums(&view(Level::Enabled), 10_000);
        assert!(
            plain
                .iter()
                .all(|d| !d.key.dimensions.iter().any(|(n, _)| n == "ContainerName")),
            "container figures only when enhanced"
        );
    }

    #[test]
    fn disabled_publishes_only_aws_ecs() {
        let out = datums(&view(Level::Disabled), 2000);
        assert!(
            out.iter().all(|d| d.key.namespace == ECS_NAMESPACE),
            "{out:?}"
        );
        assert!(!out.is_empty());
    }

    #[test]
    fn rates_come_from_two_samples_and_stale_samples_are_skipped() {
        let mut v = view(Level::Enhanced);
        v.tasks[0].previous = Some(sample(0, 0.0, 1000));
        v.tasks[0].sample = Some(sample(10_000, 1.0, 6000));
        let out = datums(&v, 10_000);
        let rx = find(
            &out,
            INSIGHTS_NAMESPACE,
            "NetworkRxBytes",
            &[
                ("ClusterName", "c"),
                ("TaskDefinitionFamily", "web"),
                ("TaskId", "a"),
            ],
        );
        assert_eq!(rx[0].stats.sum, 500.0, "5000 bytes over 10 s");
        assert_eq!(rx[0].unit, Unit::BytesPerSecond);
        let out = datums(&v, 10_000 + STALE_MS + 1);
        assert!(
            find(
                &out,
                INSIGHTS_NAMESPACE,
                "CpuUtilized",
                &[("ClusterName", "c")]
            )
            .is_empty(),
            "a sample older than {STALE_MS} ms is not published"
        );
    }

    #[test]
    fn a_sample_missing_a_container_gives_no_rate_and_agents_cannot_skew_clocks() {
        let mut v = view(Level::Enabled);
        let mut cur = sample(10_000, 1.0, 10);
        cur.containers = 1;
        let mut prev = sample(0, 0.0, 1_000_000);
        prev.containers = 2;
        v.tasks[0].sample = Some(cur);
        v.tasks[0].previous = Some(prev);
        let out = datums(&v, 10_000);
        assert!(
            find(
                &out,
                INSIGHTS_NAMESPACE,
                "NetworkRxBytes",
                &[("ClusterName", "c")]
            )
            .is_empty(),
            "a container short is not a counter reset"
        );
        let s = sanitized(
            TaskStats {
                at_ms: i64::MAX,
                cpu_units: f64::INFINITY,
                ..sample(0, 0.0, 0)
            },
            5,
        );
        assert_eq!(
            (s.at_ms, s.cpu_units),
            (5, 0.0),
            "the server's clock, a finite figure"
        );
        let s = sanitized(sample(0, 1e300, 0), 5);
        assert!(s.cpu_units <= 1024.0 * 4096.0, "bounded: {}", s.cpu_units);
    }

    #[test]
    fn usage_keeps_the_newest_and_forgets_stopped_tasks() {
        let u = Usage::default();
        u.record(sample(2000, 2.0, 0));
        u.record(sample(1000, 1.0, 0));
        let got = u.take(&["t".into()]);
        assert_eq!(
            got["t"].0.at_ms, 2000,
            "an older sample never replaces a newer one"
        );
        assert!(got["t"].1.is_none());
        u.record(sample(3000, 3.0, 0));
        let got = u.take(&["t".into()]);
        assert_eq!(
            got["t"].1.as_ref().map(|s| s.at_ms),
            Some(2000),
            "the previous published"
        );
        assert!(
            u.take(&[]).is_empty() && u.take(&["t".into()]).is_empty(),
            "forgotten"
        );
    }
}
