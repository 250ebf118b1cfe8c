//! The agent protocol: what a `berth agent` and the `berth server` say to each other.
//!
//! Three HTTP calls on the server's own port, JSON bodies:
//! - [`JOIN_PATH`]: once per host, with the cluster's registration token (no SigV4): the server
//!   registers the container instance and hands back the agent's own access key.
//! - [`POLL_PATH`] (SigV4-signed with that key): a long poll. The answer is the *whole* desired
//!   set of the instance's tasks with a version; the server holds the request until the set
//!   differs from the version the agent already has, or until `wait_ms`. Every poll is also the
//!   agent's heartbeat.
//! - [`REPORT_PATH`] (signed): task and container state changes. The agent resends a report
//!   until it is acknowledged; the server applies reports idempotently (statuses only move
//!   forward), so duplicates are harmless.
//!
//! Everything is keyed by task ARN, so reconnects and restarts on either side are harmless.
//! This crate is the only place these shapes are defined; server and agent share it.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const JOIN_PATH: &str = "/_berth/agent/v1/join";
pub const POLL_PATH: &str = "/_berth/agent/v1/poll";
pub const REPORT_PATH: &str = "/_berth/agent/v1/report";
/// Where agents ship containers' output (the awslogs driver).
pub const LOGS_PATH: &str = "/_berth/agent/v1/logs";
/// Resource use of the instance's running tasks, sampled every `--stats-interval`.
pub const STATS_PATH: &str = "/_berth/agent/v1/stats";
/// A task's scale-in protection, read or set on behalf of one of its containers (the task
/// metadata endpoint's `task-protection/v1/state`).
pub const PROTECTION_PATH: &str = "/_berth/agent/v1/protection";

/// Read (`protection_enabled` absent) or set a task's scale-in protection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProtectionRequest {
    pub task_arn: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protection_enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in_minutes: Option<i32>,
}

/// What ECS answered: the task's protection, or its failure, or the error (with the
/// exception's name and HTTP status) of the call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ProtectionResponse {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protection: Option<TaskProtection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<ProtectionFailure>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ProtectionError>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskProtection {
    pub task_arn: String,
    pub protection_enabled: bool,
    /// Seconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration_date: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProtectionFailure {
    pub arn: String,
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProtectionError {
    pub code: String,
    pub message: String,
    pub status: u16,
}

/// What the agent knows about its host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostInfo {
    /// `i-…` (or `mi-…` for EXTERNAL instances), chosen by the agent once and kept in its data dir.
    pub instance_id: String,
    /// CPU units, 1024 per core.
    pub cpu: i32,
    /// Memory in MiB available to tasks (after `--reserved-memory`).
    pub memory_mib: i32,
    /// Host ports no task may take.
    pub reserved_ports: Vec<u16>,
    /// `ecs.os-type`, `ecs.availability-zone`, capabilities and custom attributes; a `None`
    /// value is an attribute without a value, as the `ecs.capability.*` ones are.
    pub attributes: BTreeMap<String, Option<String>>,
    pub agent_version: String,
    pub docker_version: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JoinRequest {
    pub cluster: String,
    pub token: String,
    pub host: HostInfo,
    /// The cluster's region; `None`: the server's home region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JoinResponse {
    pub container_instance_arn: String,
    pub cluster_arn: String,
    /// The region the agent signs its requests for.
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PollRequest {
    /// The version of the desired set the agent holds; `None` on the first poll.
    pub known_version: Option<String>,
    /// How long the server may hold the request when nothing changed.
    pub wait_ms: u64,
    /// The agent understands [`PollResponse::unchanged`]: when the set is still
    /// `known_version` at the end of the wait, the server may say so instead of sending it again.
    #[serde(default)]
    pub accepts_unchanged: bool,
    /// The agent understands [`PollResponse::changes`]: the server may answer with what
    /// changed since `known_version` instead of the whole set.
    #[serde(default)]
    pub accepts_changes: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PollResponse {
    pub version: String,
    /// ACTIVE, DRAINING or INACTIVE (deregistered: the agent should stop polling).
    pub instance_status: String,
    /// The whole desired set, unless `unchanged`.
    pub tasks: Vec<DesiredTask>,
    /// The set is still the agent's `known_version`: `tasks` is empty and the agent keeps
    /// what it has. Sent only to agents that set [`PollRequest::accepts_unchanged`].
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unchanged: bool,
    /// `tasks` holds only the tasks added or changed since the agent's `known_version`, and
    /// `removed` the ARNs of those no longer in the set; the agent applies both to the set it
    /// holds. Sent only to agents that set [`PollRequest::accepts_changes`].
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub changes: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<String>,
    /// Credentials for the server's image registry, renewed on every poll (outside `version`,
    /// so a new password never looks like a change of the desired set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<RegistryCredentials>,
    /// The rules of every security group the instance's `awsvpc` tasks are in, by `sg-…` id.
    /// Part of `version`: a change of a group's rules or members answers the poll. Sent with
    /// every answer that is not `unchanged`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub security_groups: BTreeMap<String, SecurityPolicy>,
}

/// A pull-only login for the server's registry: images named `SERVER/...` are pulled with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryCredentials {
    /// `host:port`, as image names start.
    pub server: String,
    pub username: String,
    pub password: String,
}

impl RegistryCredentials {
    /// Whether `image` lives in this registry.
    pub fn covers(&self, image: &str) -> bool {
        image
            .strip_prefix(self.server.as_str())
            .is_some_and(|rest| rest.starts_with('/'))
    }
}

/// A task the server wants on this instance, with everything needed to run it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DesiredTask {
    pub task_arn: String,
    pub cluster_arn: String,
    pub family: String,
    pub revision: i32,
    /// RUNNING or STOPPED.
    pub desired_status: String,
    /// bridge, host or none.
    pub network_mode: String,
    pub containers: Vec<ContainerPlan>,
    pub volumes: Vec<VolumePlan>,
    /// The reason the server will record when it asked for the stop (StopTask).
    pub stop_reason: Option<String>,
    /// The task-level size, in CPU units and MiB (the task's `cpu` and `memory`).
    #[serde(default)]
    pub cpu: Option<u32>,
    #[serde(default)]
    pub memory: Option<u32>,
    /// A FARGATE task's ephemeral storage, GiB: each of its containers' writable layer is
    /// limited to it where the host's storage driver can limit one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ephemeral_storage_gib: Option<u32>,
    /// For `awsvpc` tasks: the task's own network interface. Its containers share one network
    /// namespace (held by a pause container) on the subnet's network, at this address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<TaskNetwork>,
}

/// An `awsvpc` task's elastic network interface, as the agent sets it up on this host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskNetwork {
    /// `eni-…`.
    pub eni_id: String,
    /// `subnet-…`; the agent keeps one Docker network per subnet (see [`subnet_network`]).
    pub subnet_id: String,
    /// The subnet's IPv4 CIDR block, e.g. `10.0.1.0/24`.
    pub subnet_cidr: String,
    /// The subnet's router (its first address after the network address), Docker's gateway.
    pub gateway: String,
    /// The task's private IPv4 address, inside `subnet_cidr`.
    pub private_ip: String,
    /// `02:xx:xx:xx:xx:xx`, the interface's MAC address.
    pub mac: String,
    /// A host address the task's container ports are published on (`assignPublicIp
    /// ENABLED`), reachable from this host; `None` when the task has no public address.
    #[serde(default)]
    pub public_ip: Option<String>,
    /// `sg-…`: the rules of each are in [`PollResponse::security_groups`].
    pub security_groups: Vec<String>,
}

/// The Docker network an agent keeps for a subnet.
pub fn subnet_network(subnet_id: &str) -> String {
    format!("berth-{subnet_id}")
}

/// A security group's rules as an agent enforces them on a task's interface, sources resolved
/// to CIDR blocks (a rule naming a security group as its source becomes the private addresses
/// of that group's interfaces now). Traffic is allowed when any rule of any of the task's
/// groups allows it; replies to allowed traffic are always allowed (groups are stateful).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecurityPolicy {
    pub ingress: Vec<SecurityRule>,
    pub egress: Vec<SecurityRule>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecurityRule {
    /// `tcp`, `udp`, `icmp` or `all`.
    pub protocol: String,
    /// The port range for tcp and udp (inclusive); `None` for every port.
    pub ports: Option<(u16, u16)>,
    /// IPv4 CIDR blocks of the peers (sources for ingress, destinations for egress).
    pub cidrs: Vec<String>,
}

impl DesiredTask {
    /// What the task reserves, in CPU units and MiB: its task-level size where it has one,
    /// else the sum of its containers' (`memory`, else `memoryReservation`).
    pub fn reserved(&self) -> (u32, u32) {
        let sum = |f: fn(&ContainerPlan) -> Option<i32>| -> u32 {
            self.containers
                .iter()
                .filter_map(f)
                .map(|v| v.max(0) as u32)
                .sum()
        };
        (
            self.cpu.unwrap_or_else(|| sum(|c| c.cpu)),
            self.memory
                .unwrap_or_else(|| sum(|c| c.memory.or(c.memory_reservation))),
        )
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ContainerPlan {
    pub name: String,
    pub image: String,
    pub command: Option<Vec<String>>,
    pub entry_point: Option<Vec<String>>,
    pub environment: Vec<(String, String)>,
    pub working_directory: Option<String>,
    pub user: Option<String>,
    /// CPU units; become Docker's cpu shares.
    pub cpu: Option<i32>,
    /// Hard limit, MiB.
    pub memory: Option<i32>,
    /// Soft limit, MiB.
    pub memory_reservation: Option<i32>,
    pub ulimits: Vec<UlimitPlan>,
    pub docker_labels: BTreeMap<String, String>,
    pub readonly_root_filesystem: bool,
    pub privileged: bool,
    pub hostname: Option<String>,
    pub mount_points: Vec<MountPlan>,
    pub port_mappings: Vec<PortPlan>,
    pub essential: bool,
    pub depends_on: Vec<Dependency>,
    pub health_check: Option<HealthCheckPlan>,
    /// Seconds between SIGTERM and SIGKILL.
    pub stop_timeout: Option<i32>,
    /// `logConfiguration.logDriver` (`None`: Docker's default) and its `options`.
    #[serde(default)]
    pub log_driver: Option<String>,
    #[serde(default)]
    pub log_options: BTreeMap<String, String>,
    /// `startTimeout`: seconds to wait for `dependsOn` before giving up on the container.
    #[serde(default)]
    pub start_timeout: Option<i32>,
    /// Docker host options from the container definition.
    #[serde(default)]
    pub host: HostOptions,
}

/// The container-definition members that become Docker host options, as the ECS agent maps
/// them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct HostOptions {
    /// `links`: `name[:alias]`, by the task's container names (the agent maps them to
    /// Docker's).
    pub links: Vec<String>,
    /// `volumesFrom`: (the task's container, read only).
    pub volumes_from: Vec<(String, bool)>,
    /// `extraHosts`: `hostname:ip`.
    pub extra_hosts: Vec<String>,
    pub dns_servers: Vec<String>,
    pub dns_search_domains: Vec<String>,
    /// `linuxParameters.capabilities`.
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    /// `linuxParameters.devices`: (host path, container path, `rwm` permissions).
    pub devices: Vec<(String, String, String)>,
    /// `linuxParameters.initProcessEnabled`.
    pub init: bool,
    /// `linuxParameters.sharedMemorySize`, MiB.
    pub shm_size_mib: Option<i64>,
    /// `linuxParameters.tmpfs`: (container path, Docker's mount options with the size).
    pub tmpfs: Vec<(String, String)>,
    /// `linuxParameters.maxSwap` (MiB) and `swappiness`.
    pub max_swap_mib: Option<i64>,
    pub swappiness: Option<i64>,
    pub disable_networking: bool,
    pub security_options: Vec<String>,
    /// `systemControls`: (namespace, value).
    pub sysctls: Vec<(String, String)>,
    pub tty: bool,
    pub open_stdin: bool,
    /// The task's `pidMode` / `ipcMode` when it is one Docker has as such (`host`, `none`).
    pub pid_mode: Option<String>,
    pub ipc_mode: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UlimitPlan {
    pub name: String,
    pub soft: i64,
    pub hard: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountPlan {
    pub source_volume: String,
    pub container_path: String,
    pub read_only: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortPlan {
    pub container_port: u16,
    /// `None` (or 0 from the user): a dynamic port in bridge mode.
    pub host_port: Option<u16>,
    /// tcp or udp.
    pub protocol: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dependency {
    pub container_name: String,
    /// START, COMPLETE, SUCCESS or HEALTHY.
    pub condition: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheckPlan {
    /// ECS's form: `["CMD-SHELL", "…"]` or `["CMD", …]`.
    pub command: Vec<String>,
    pub interval_s: i64,
    pub timeout_s: i64,
    pub retries: i64,
    pub start_period_s: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumePlan {
    pub name: String,
    /// A bind mount of this host path; `None` with `docker` also `None` means an empty
    /// task-scoped volume.
    pub host_path: Option<String>,
    pub docker: Option<DockerVolumePlan>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DockerVolumePlan {
    /// task or shared.
    pub scope: String,
    pub autoprovision: bool,
    pub driver: Option<String>,
    pub driver_opts: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
}

/// A batch of one container's output for one log stream. An empty batch only makes sure the
/// group (with `create_group`) and the stream exist, and asks for the cursor held; with an
/// empty `stream` it only checks (or makes) the group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogBatch {
    pub group: String,
    pub stream: String,
    /// `awslogs-create-group`: make the group when it is missing.
    #[serde(default)]
    pub create_group: bool,
    /// `awslogs-region`, which must be the server's.
    #[serde(default)]
    pub region: Option<String>,
    pub events: Vec<LogLine>,
}

/// One log event. `cursor` is the producer's position after it (the Docker log timestamp of
/// its last line, in ns), increasing within a stream: events at or before the stream's cursor
/// are already stored and are skipped, so resending a batch is safe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// Milliseconds since the epoch.
    pub timestamp: i64,
    pub message: String,
    pub cursor: i64,
}

/// The stream's cursor after the batch: where the agent resumes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogBatchResponse {
    pub cursor: i64,
}

/// One sample of every running task's resource use on an instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatsReport {
    pub tasks: Vec<TaskStats>,
}

/// A task's resource use: its containers' summed. Counters are cumulative since each
/// container started; the server turns them into rates and per-period amounts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct TaskStats {
    pub task_arn: String,
    /// When sampled, milliseconds since the epoch.
    pub at_ms: i64,
    /// CPU units in use (1024 per core), averaged over Docker's last sampling window.
    pub cpu_units: f64,
    /// Memory in use (without the page cache), bytes.
    pub memory_bytes: u64,
    /// What the task reserves: CPU units and MiB (see [`DesiredTask::reserved`]).
    pub cpu_reserved: u32,
    pub memory_reserved_mib: u32,
    pub network_rx_bytes: u64,
    pub network_tx_bytes: u64,
    pub storage_read_bytes: u64,
    pub storage_write_bytes: u64,
    /// How many of its containers were sampled.
    pub containers: u32,
    /// Each sampled container's own figures (Container Insights' `enhanced` level).
    #[serde(default)]
    pub per_container: Vec<ContainerStats>,
}

/// One container's resource use; counters cumulative since it started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ContainerStats {
    /// The task definition's name for it.
    pub name: String,
    pub cpu_units: f64,
    pub memory_bytes: u64,
    pub network_rx_bytes: u64,
    pub network_tx_bytes: u64,
    pub storage_read_bytes: u64,
    pub storage_write_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportRequest {
    pub reports: Vec<TaskReport>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportResponse {
    /// How many reports changed something (the rest were already known).
    pub applied: usize,
}

/// What the agent observed about one task. Times are seconds since the epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct TaskReport {
    pub task_arn: String,
    /// PENDING, RUNNING or STOPPED.
    pub last_status: String,
    pub pull_started_at: Option<f64>,
    pub pull_stopped_at: Option<f64>,
    pub started_at: Option<f64>,
    /// When the agent began stopping the task on its own (an essential container exited).
    pub stopping_at: Option<f64>,
    pub execution_stopped_at: Option<f64>,
    /// Set when the agent decided the task must stop (EssentialContainerExited, TaskFailedToStart).
    pub stop_code: Option<String>,
    pub stopped_reason: Option<String>,
    /// HEALTHY, UNHEALTHY or UNKNOWN.
    pub health_status: Option<String>,
    pub containers: Vec<ContainerReport>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ContainerReport {
    pub name: String,
    pub runtime_id: Option<String>,
    /// PENDING, RUNNING or STOPPED.
    pub last_status: String,
    pub exit_code: Option<i32>,
    pub reason: Option<String>,
    pub network_bindings: Vec<Binding>,
    /// HEALTHY, UNHEALTHY or UNKNOWN.
    pub health_status: Option<String>,
    pub image_digest: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binding {
    pub bind_ip: String,
    pub container_port: u16,
    pub host_port: u16,
    pub protocol: String,
}

/// Docker labels the agent puts on every container, the ECS agent's names first so existing
/// tooling recognises them.
pub mod labels {
    pub const TASK_ARN: &str = "com.amazonaws.ecs.task-arn";
    pub const CLUSTER: &str = "com.amazonaws.ecs.cluster";
    pub const CONTAINER_NAME: &str = "com.amazonaws.ecs.container-name";
    pub const FAMILY: &str = "com.amazonaws.ecs.task-definition-family";
    pub const VERSION: &str = "com.amazonaws.ecs.task-definition-version";
    /// Which agent owns the container: several agents may share one Docker Engine.
    pub const INSTANCE: &str = "io.berth.container-instance-arn";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_round_trip_through_json() {
        let r = TaskReport {
            task_arn: "arn:aws:ecs:us-east-1:0:task/c/1".into(),
            last_status: "RUNNING".into(),
            containers: vec![ContainerReport {
                name: "web".into(),
                last_status: "RUNNING".into(),
                network_bindings: vec![Binding {
                    bind_ip: "0.0.0.0".into(),
                    container_port: 80,
                    host_port: 32768,
                    protocol: "tcp".into(),
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<TaskReport>(&text).unwrap(), r);
    }
}
