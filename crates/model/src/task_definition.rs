//! The typed view of a task definition that ECS's rules (and later placement) reason about.
//!
//! The API layer builds a [`TaskDefinitionSpec`] from the request (checking types, enums and
//! number ranges on the way); [`TaskDefinitionSpec::validate`] then applies ECS's semantic rules
//! and returns the first one broken, as ECS does.

use crate::{fargate, names, units, Invalid};
use std::collections::HashSet;

/// ECS counts the serialized task definition against this limit.
pub const MAX_TASK_DEFINITION_BYTES: usize = 64 * 1024;
pub const MAX_CONTAINERS: usize = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetworkMode {
    Bridge,
    Host,
    Awsvpc,
    None,
}

impl NetworkMode {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "bridge" => NetworkMode::Bridge,
            "host" => NetworkMode::Host,
            "awsvpc" => NetworkMode::Awsvpc,
            "none" => NetworkMode::None,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            NetworkMode::Bridge => "bridge",
            NetworkMode::Host => "host",
            NetworkMode::Awsvpc => "awsvpc",
            NetworkMode::None => "none",
        }
    }
}

/// Where a task definition may run (`requiresCompatibilities`, `compatibilities`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compatibility {
    Ec2,
    Fargate,
    External,
    ManagedInstances,
}

impl Compatibility {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "EC2" => Compatibility::Ec2,
            "FARGATE" => Compatibility::Fargate,
            "EXTERNAL" => Compatibility::External,
            "MANAGED_INSTANCES" => Compatibility::ManagedInstances,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Compatibility::Ec2 => "EC2",
            Compatibility::Fargate => "FARGATE",
            Compatibility::External => "EXTERNAL",
            Compatibility::ManagedInstances => "MANAGED_INSTANCES",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DependencyCondition {
    Start,
    Complete,
    Success,
    Healthy,
}

impl DependencyCondition {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "START" => DependencyCondition::Start,
            "COMPLETE" => DependencyCondition::Complete,
            "SUCCESS" => DependencyCondition::Success,
            "HEALTHY" => DependencyCondition::Healthy,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DependencyCondition::Start => "START",
            DependencyCondition::Complete => "COMPLETE",
            DependencyCondition::Success => "SUCCESS",
            DependencyCondition::Healthy => "HEALTHY",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortMapping {
    pub container_port: Option<u16>,
    pub host_port: Option<u16>,
    /// `"start-end"`, as given.
    pub container_port_range: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dependency {
    pub container: String,
    pub condition: DependencyCondition,
}

/// A container health check, in seconds, with ECS's defaults already applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub command: Vec<String>,
    pub interval: i64,
    pub timeout: i64,
    pub retries: i64,
    pub start_period: i64,
}

impl HealthCheck {
    pub const DEFAULT_INTERVAL: i64 = 30;
    pub const DEFAULT_TIMEOUT: i64 = 5;
    pub const DEFAULT_RETRIES: i64 = 3;
    pub const DEFAULT_START_PERIOD: i64 = 0;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerSpec {
    pub name: String,
    pub image: String,
    /// CPU units; 0 when not given.
    pub cpu: i64,
    /// Hard limit, MiB.
    pub memory: Option<i64>,
    /// Soft limit, MiB.
    pub memory_reservation: Option<i64>,
    pub essential: bool,
    pub port_mappings: Vec<PortMapping>,
    pub depends_on: Vec<Dependency>,
    pub health_check: Option<HealthCheck>,
    /// `mountPoints[].sourceVolume`.
    pub mount_volumes: Vec<String>,
    /// `volumesFrom[].sourceContainer`.
    pub volumes_from: Vec<String>,
    /// The containers `links` name (the part before any `:alias`).
    pub links: Vec<String>,
    /// `logConfiguration.logDriver`.
    pub log_driver: Option<String>,
    pub has_ulimits: bool,
    pub has_docker_labels: bool,
    pub has_secrets: bool,
    /// `environmentFiles` (read from S3 by ECS).
    pub has_environment_files: bool,
    /// `restartPolicy.enabled`.
    pub restart_policy: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeSpec {
    pub name: String,
    /// `host.sourcePath`, a bind mount of a host directory.
    pub host_source_path: Option<String>,
    pub docker_volume: bool,
    pub efs: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskDefinitionSpec {
    pub family: String,
    /// `None` when the request left it out; ECS then uses bridge (awsvpc for FARGATE-only
    /// definitions is required, not defaulted).
    pub network_mode: Option<NetworkMode>,
    pub requires_compatibilities: Vec<Compatibility>,
    /// Task-level cpu as given, parsed to units by [`TaskDefinitionSpec::validate`].
    pub cpu: Option<String>,
    pub memory: Option<String>,
    pub containers: Vec<ContainerSpec>,
    pub volumes: Vec<VolumeSpec>,
    pub task_role: bool,
    pub execution_role: bool,
    /// `pidMode` and `ipcMode` as given (`host`, `task`, `none`).
    pub pid_mode: Option<String>,
    pub ipc_mode: Option<String>,
}

/// The task size after validation, in CPU units and MiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TaskSize {
    pub cpu: Option<u32>,
    pub memory: Option<u32>,
}

impl TaskDefinitionSpec {
    pub fn effective_network_mode(&self) -> NetworkMode {
        self.network_mode.unwrap_or(NetworkMode::Bridge)
    }

    /// Applies ECS's rules; the first broken one is the error, naming the field and value.
    pub fn validate(&self) -> Result<TaskSize, Invalid> {
        names::family(&self.family)?;
        if self.containers.is_empty() {
            return Err(Invalid::client("Container list cannot be empty."));
        }
        if self.containers.len() > MAX_CONTAINERS {
            return Err(Invalid::client(format!(
                "Too many containers. containerDefinitions holds {}; a task definition allows at most {MAX_CONTAINERS}",
                self.containers.len()
            )));
        }
        let size = TaskSize {
            cpu: self.cpu.as_deref().map(units::parse_cpu).transpose()?,
            memory: self
                .memory
                .as_deref()
                .map(units::parse_memory)
                .transpose()?,
        };
        let fargate = self
            .requires_compatibilities
            .contains(&Compatibility::Fargate);
        let ec2_like = self.requires_compatibilities.is_empty()
            || self.requires_compatibilities.iter().any(|c| {
                matches!(
                    c,
                    Compatibility::Ec2 | Compatibility::External | Compatibility::ManagedInstances
                )
            });

        let mut volume_names = HashSet::new();
        for v in &self.volumes {
            names::container_name(&v.name).map_err(|_| {
                Invalid::client(format!("volumes.name '{}' is invalid: up to 255 letters, numbers, hyphens and underscores are allowed", v.name))
            })?;
            if !volume_names.insert(v.name.as_str()) {
                return Err(Invalid::client(format!(
                    "volumes.name '{}' is declared more than once",
                    v.name
                )));
            }
            if fargate && v.host_source_path.is_some() {
                return Err(Invalid::client(format!(
                    "volume '{}' sets host.sourcePath, which FARGATE does not support",
                    v.name
                )));
            }
        }

        let mut seen = HashSet::new();
        for c in &self.containers {
            if c.name.is_empty() {
                return Err(Invalid::client(
                    "Container.name should not be null or empty.",
                ));
            }
            names::container_name(&c.name)?;
            if !seen.insert(c.name.as_str()) {
                return Err(Invalid::client(format!(
                    "containerDefinitions: the container name '{}' is used more than once",
                    c.name
                )));
            }
            if c.image.trim().is_empty() {
                return Err(Invalid::client(format!(
                    "Container.image should not be null or empty. (container '{}')",
                    c.name
                )));
            }
        }
        if !self.containers.iter().any(|c| c.essential) {
            return Err(Invalid::client(
                "at least one container in containerDefinitions must be essential",
            ));
        }

        let mode = self.effective_network_mode();
        let mut cpu_sum: i64 = 0;
        for c in &self.containers {
            self.validate_container(c, size, mode, ec2_like)?;
            cpu_sum += c.cpu;
        }
        if let Some(task_cpu) = size.cpu {
            if cpu_sum > i64::from(task_cpu) {
                return Err(Invalid::client(format!(
                    "The sum of all container 'cpu' values cannot be greater than the value of the task 'cpu'. ({cpu_sum} > {task_cpu})"
                )));
            }
        }
        if let Some(task_memory) = size.memory {
            let reserved: i64 = self
                .containers
                .iter()
                .filter_map(|c| c.memory_reservation)
                .sum();
            if reserved > i64::from(task_memory) {
                return Err(Invalid::client(format!(
                    "The sum of all container 'memoryReservation' values cannot be greater than the value of the task 'memory'. ({reserved} > {task_memory})"
                )));
            }
        }

        if fargate {
            if mode != NetworkMode::Awsvpc {
                return Err(Invalid::client(format!(
                    "Fargate only supports network mode \u{2018}awsvpc\u{2019}. (this task definition has '{}')",
                    mode.as_str()
                )));
            }
            let Some(cpu) = size.cpu else {
                return Err(Invalid::client(
                    "Fargate requires that 'cpu' be defined at the task level.",
                ));
            };
            let Some(memory) = size.memory else {
                return Err(Invalid::client(
                    "Fargate requires that 'memory' be defined at the task level.",
                ));
            };
            if !fargate::is_valid_size(cpu, memory) {
                return Err(Invalid::client(format!(
                    "No Fargate configuration exists for given values: {cpu} CPU, {memory} memory. See the Amazon ECS documentation for the valid values."
                )));
            }
        }
        Ok(size)
    }

    fn validate_container(
        &self,
        c: &ContainerSpec,
        size: TaskSize,
        mode: NetworkMode,
        ec2_like: bool,
    ) -> Result<(), Invalid> {
        let name = &c.name;
        if c.cpu < 0 {
            return Err(Invalid::client(format!(
                "container '{name}': cpu {} must not be negative",
                c.cpu
            )));
        }
        if let Some(m) = c.memory {
            if m < 6 {
                return Err(Invalid::client(format!(
                    "container '{name}': memory {m} MiB is below the minimum of 6 MiB"
                )));
            }
            if let Some(task_memory) = size.memory {
                if m > i64::from(task_memory) {
                    return Err(Invalid::client(format!(
                        "The 'memory' setting for container '{name}' is greater than for the task. ({m} > {task_memory} MiB)"
                    )));
                }
            }
        }
        if let Some(r) = c.memory_reservation {
            if r < 4 {
                return Err(Invalid::client(format!(
                    "container '{name}': memoryReservation {r} MiB is below the minimum of 4 MiB"
                )));
            }
            if let Some(m) = c.memory {
                if r > m {
                    return Err(Invalid::client(format!(
                        "container '{name}': memoryReservation {r} MiB must be less than or equal to memory {m} MiB"
                    )));
                }
            }
        }
        if ec2_like && size.memory.is_none() && c.memory.is_none() && c.memory_reservation.is_none()
        {
            return Err(Invalid::client(format!(
                "Invalid setting for container '{name}'. At least one of 'memory' or 'memoryReservation' must be specified."
            )));
        }

        for p in &c.port_mappings {
            if let Some(range) = &p.container_port_range {
                if p.container_port.is_some() || p.host_port.is_some() {
                    return Err(Invalid::client(format!(
                        "container '{name}': a port mapping with containerPortRange '{range}' must not also set containerPort or hostPort"
                    )));
                }
                parse_port_range(range).ok_or_else(|| {
                    Invalid::client(format!(
                        "container '{name}': containerPortRange '{range}' must be 'start-end' with 1 <= start < end <= 65535"
                    ))
                })?;
                continue;
            }
            let Some(cp) = p.container_port else {
                return Err(Invalid::client(format!(
                    "container '{name}': a port mapping needs containerPort or containerPortRange"
                )));
            };
            if cp == 0 {
                return Err(Invalid::client(format!(
                    "container '{name}': containerPort 0 is out of range 1-65535"
                )));
            }
            if matches!(mode, NetworkMode::Awsvpc | NetworkMode::Host) {
                if let Some(hp) = p.host_port {
                    if hp != cp {
                        return Err(Invalid::client(format!(
                            "When networkMode={}, the host ports and container ports in port mappings must match: container '{name}' maps hostPort {hp} to containerPort {cp}",
                            mode.as_str()
                        )));
                    }
                }
            }
        }

        if let Some(hc) = &c.health_check {
            if hc.command.is_empty() {
                return Err(Invalid::client(format!(
                    "container '{name}': healthCheck.command must not be empty"
                )));
            }
            for (field, value, lo, hi) in [
                ("interval", hc.interval, 5, 300),
                ("timeout", hc.timeout, 2, 120),
                ("retries", hc.retries, 1, 10),
                ("startPeriod", hc.start_period, 0, 300),
            ] {
                if !(lo..=hi).contains(&value) {
                    return Err(Invalid::client(format!(
                        "container '{name}': healthCheck.{field} {value} is out of range {lo}-{hi}"
                    )));
                }
            }
        }

        for d in &c.depends_on {
            let Some(target) = self.containers.iter().find(|t| t.name == d.container) else {
                return Err(Invalid::client(format!(
                    "container '{name}': dependsOn names container '{}', which is not in this task definition",
                    d.container
                )));
            };
            if target.name == *name {
                return Err(Invalid::client(format!(
                    "container '{name}': dependsOn must not name the container itself"
                )));
            }
            match d.condition {
                DependencyCondition::Complete | DependencyCondition::Success
                    if target.essential =>
                {
                    return Err(Invalid::client(format!(
                        "container '{name}': dependsOn condition {} on container '{}' is not allowed because that container is essential",
                        d.condition.as_str(),
                        target.name
                    )));
                }
                DependencyCondition::Healthy if target.health_check.is_none() => {
                    return Err(Invalid::client(format!(
                        "container '{name}': dependsOn condition HEALTHY on container '{}' needs that container to have a healthCheck",
                        target.name
                    )));
                }
                _ => {}
            }
        }
        if let Some(cycle) = self.dependency_cycle() {
            return Err(Invalid::client(format!(
                "dependsOn, links and volumesFrom form a cycle: {}",
                cycle.join(" -> ")
            )));
        }

        for v in &c.mount_volumes {
            if !self.volumes.iter().any(|d| &d.name == v) {
                return Err(Invalid::client(format!(
                    "container '{name}': mountPoints.sourceVolume '{v}' is not declared in volumes"
                )));
            }
        }
        for l in &c.links {
            if !self.containers.iter().any(|t| &t.name == l) || l == name {
                return Err(Invalid::client(format!(
                    "container '{name}': links names '{l}', which is not another container of this task definition"
                )));
            }
        }
        if !c.links.is_empty()
            && matches!(
                self.effective_network_mode(),
                NetworkMode::Host | NetworkMode::Awsvpc
            )
        {
            return Err(Invalid::client(format!(
                "container '{name}': links are not supported in network mode {}",
                self.effective_network_mode().as_str()
            )));
        }
        for s in &c.volumes_from {
            if !self.containers.iter().any(|t| &t.name == s) || s == name {
                return Err(Invalid::client(format!(
                    "container '{name}': volumesFrom.sourceContainer '{s}' is not another container of this task definition"
                )));
            }
        }
        Ok(())
    }

    /// A dependsOn cycle, as container names, if there is one.
    fn dependency_cycle(&self) -> Option<Vec<String>> {
        fn visit<'a>(
            spec: &'a TaskDefinitionSpec,
            name: &'a str,
            path: &mut Vec<&'a str>,
            done: &mut HashSet<&'a str>,
        ) -> Option<Vec<String>> {
            if let Some(pos) = path.iter().position(|p| *p == name) {
                let mut cycle: Vec<String> = path[pos..].iter().map(|s| s.to_string()).collect();
                cycle.push(name.to_string());
                return Some(cycle);
            }
            if done.contains(name) {
                return None;
            }
            path.push(name);
            if let Some(c) = spec.containers.iter().find(|c| c.name == name) {
                // links and volumesFrom order containers as dependsOn does.
                let targets = c
                    .depends_on
                    .iter()
                    .map(|d| d.container.as_str())
                    .chain(c.links.iter().map(String::as_str))
                    .chain(c.volumes_from.iter().map(String::as_str));
                for t in targets {
                    if let Some(cycle) = visit(spec, t, path, done) {
                        return Some(cycle);
                    }
                }
            }
            path.pop();
            done.insert(name);
            None
        }
        let mut done = HashSet::new();
        self.containers
            .iter()
            .find_map(|c| visit(self, &c.name, &mut Vec::new(), &mut done))
    }

    /// The launch types this definition can run on (`compatibilities` in ECS's answer).
    pub fn compatibilities(&self, size: TaskSize) -> Vec<Compatibility> {
        let mut out = vec![Compatibility::Ec2];
        let mode = self.effective_network_mode();
        if mode != NetworkMode::Awsvpc {
            out.insert(0, Compatibility::External);
        }
        let fargate_size =
            matches!((size.cpu, size.memory), (Some(c), Some(m)) if fargate::is_valid_size(c, m));
        if mode == NetworkMode::Awsvpc
            && fargate_size
            && self.volumes.iter().all(|v| v.host_source_path.is_none())
        {
            out.push(Compatibility::Fargate);
        }
        if self
            .requires_compatibilities
            .contains(&Compatibility::ManagedInstances)
        {
            out.push(Compatibility::ManagedInstances);
        }
        out
    }

    /// The container-instance attributes a host needs to run this definition, as ECS derives
    /// them (`requiresAttributes`); placement matches them against agents' attributes.
    pub fn required_attributes(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let mut add = |s: String| {
            if !out.contains(&s) {
                out.push(s);
            }
        };
        add("com.amazonaws.ecs.capability.docker-remote-api.1.17".into());
        if self.cpu.is_some() || self.memory.is_some() {
            add("ecs.capability.task-cpu-mem-limit".into());
        }
        if self.network_mode.is_some() {
            add("com.amazonaws.ecs.capability.docker-remote-api.1.18".into());
        }
        if self.effective_network_mode() == NetworkMode::Awsvpc {
            add("ecs.capability.task-eni".into());
        }
        if self.task_role {
            add("com.amazonaws.ecs.capability.task-iam-role".into());
        }
        // What an agent must implement for these members, by the ECS agent's own names: a
        // definition that uses one runs only where an agent advertises it, never with the
        // member quietly dropped.
        if self.volumes.iter().any(|v| v.efs) {
            add("ecs.capability.efs".into());
        }
        if [&self.pid_mode, &self.ipc_mode]
            .iter()
            .any(|m| m.as_deref() == Some("task"))
        {
            add("ecs.capability.pid-ipc-namespace-sharing".into());
        }
        for c in &self.containers {
            if c.memory_reservation.is_some() {
                add("com.amazonaws.ecs.capability.docker-remote-api.1.21".into());
            }
            if c.has_environment_files {
                add("ecs.capability.env-files.s3".into());
            }
            if c.restart_policy {
                add("ecs.capability.container-restart-policy".into());
            }
            if c.has_ulimits || c.has_docker_labels {
                add("com.amazonaws.ecs.capability.docker-remote-api.1.18".into());
            }
            if let Some(driver) = &c.log_driver {
                add(format!(
                    "com.amazonaws.ecs.capability.logging-driver.{driver}"
                ));
                if driver == "awslogs" && self.execution_role {
                    add("ecs.capability.execution-role-awslogs".into());
                }
            }
            if c.health_check.is_some() {
                add("ecs.capability.container-health-check".into());
            }
            if !c.depends_on.is_empty() {
                add("ecs.capability.container-ordering".into());
            }
            if c.has_secrets {
                add("ecs.capability.secrets.asm.environment-variables".into());
            }
        }
        out
    }
}

fn parse_port_range(s: &str) -> Option<(u16, u16)> {
    let (a, b) = s.split_once('-')?;
    let (a, b): (u16, u16) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
    (a >= 1 && a < b).then_some((a, b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(name: &str) -> ContainerSpec {
        ContainerSpec {
            name: name.into(),
            image: "busybox".into(),
            cpu: 0,
            memory: Some(128),
            memory_reservation: None,
            essential: true,
            port_mappings: vec![],
            depends_on: vec![],
            health_check: None,
            mount_volumes: vec![],
            volumes_from: vec![],
            log_driver: None,
            has_ulimits: false,
            has_docker_labels: false,
            has_secrets: false,
            has_environment_files: false,
            restart_policy: false,
            links: vec![],
        }
    }

    fn spec(containers: Vec<ContainerSpec>) -> TaskDefinitionSpec {
        TaskDefinitionSpec {
            family: "web".into(),
            network_mode: None,
            requires_compatibilities: vec![],
            cpu: None,
            memory: None,
            containers,
            volumes: vec![],
            task_role: false,
            execution_role: false,
            pid_mode: None,
            ipc_mode: None,
        }
    }

    /// Asserts the spec is rejected with a message containing `needle`.
    fn rejects(s: &TaskDefinitionSpec, needle: &str) {
        match s.validate() {
            Ok(_) => panic!("expected a rejection mentioning {needle:?}"),
            Err(e) => assert!(
                e.message.contains(needle),
                "message {:?} lacks {needle:?}",
                e.message
            ),
        }
    }

    #[test]
    fn minimal_definition_is_valid() {
        let s = spec(vec![container("app")]);
        assert_eq!(s.validate().unwrap(), TaskSize::default());
        assert_eq!(
            s.compatibilities(TaskSize::default()),
            vec![Compatibility::External, Compatibility::Ec2]
        );
    }

    #[test]
    fn container_count_and_names() {
        rejects(&spec(vec![]), "Container list cannot be empty.");
        rejects(
            &spec((0..11).map(|i| container(&format!("c{i}"))).collect()),
            "Too many containers.",
        );
        let mut c = container("a");
        c.name = String::new();
        rejects(
            &spec(vec![c]),
            "Container.name should not be null or empty.",
        );
        rejects(
            &spec(vec![container("a"), container("a")]),
            "'a' is used more than once",
        );
        rejects(&spec(vec![container("bad name")]), "'bad name'");
        let mut c = container("a");
        c.image = " ".into();
        rejects(
            &spec(vec![c]),
            "Container.image should not be null or empty.",
        );
    }

    #[test]
    fn essential_and_memory() {
        let mut c = container("a");
        c.essential = false;
        rejects(&spec(vec![c]), "must be essential");
        let mut c = container("a");
        c.memory = None;
        rejects(
            &spec(vec![c.clone()]),
            "At least one of 'memory' or 'memoryReservation'",
        );
        let mut s = spec(vec![c.clone()]);
        s.memory = Some("512".into());
        assert!(s.validate().is_ok(), "task-level memory satisfies the rule");
        c.memory = Some(4);
        rejects(&spec(vec![c.clone()]), "below the minimum of 6 MiB");
        c.memory = Some(100);
        c.memory_reservation = Some(200);
        rejects(
            &spec(vec![c]),
            "memoryReservation 200 MiB must be less than or equal to memory 100",
        );
    }

    #[test]
    fn task_size_strings_and_sums() {
        let mut s = spec(vec![container("a")]);
        s.cpu = Some("1 vCPU".into());
        s.memory = Some("2 GB".into());
        assert_eq!(
            s.validate().unwrap(),
            TaskSize {
                cpu: Some(1024),
                memory: Some(2048)
            }
        );
        s.cpu = Some("lots".into());
        rejects(&s, "Invalid 'cpu' setting for task. ('lots'");
        s.cpu = Some("256".into());
        s.containers[0].cpu = 512;
        rejects(
            &s,
            "The sum of all container 'cpu' values cannot be greater than the value of the task 'cpu'.",
        );
        s.cpu = None;
        s.containers[0].cpu = 0;
        s.memory = Some("512".into());
        s.containers[0].memory = None;
        s.containers[0].memory_reservation = Some(400);
        let mut b = container("b");
        b.memory = None;
        b.memory_reservation = Some(200);
        s.containers.push(b);
        rejects(
            &s,
            "The sum of all container 'memoryReservation' values cannot be greater than the value of the task 'memory'. (600 > 512)",
        );
    }

    #[test]
    fn fargate_rules() {
        let mut s = spec(vec![container("a")]);
        s.requires_compatibilities = vec![Compatibility::Fargate];
        s.cpu = Some("256".into());
        s.memory = Some("512".into());
        rejects(
            &s,
            "Fargate only supports network mode \u{2018}awsvpc\u{2019}.",
        );
        s.network_mode = Some(NetworkMode::Awsvpc);
        let size = s.validate().unwrap();
        assert!(s.compatibilities(size).contains(&Compatibility::Fargate));
        s.memory = Some("8192".into());
        s.containers[0].memory = None;
        rejects(
            &s,
            "No Fargate configuration exists for given values: 256 CPU, 8192 memory",
        );
        s.memory = None;
        rejects(
            &s,
            "Fargate requires that 'memory' be defined at the task level.",
        );
        s.memory = Some("512".into());
        s.cpu = None;
        rejects(
            &s,
            "Fargate requires that 'cpu' be defined at the task level.",
        );
    }

    #[test]
    fn ports() {
        let mut s = spec(vec![container("a")]);
        s.network_mode = Some(NetworkMode::Awsvpc);
        s.containers[0].port_mappings = vec![PortMapping {
            container_port: Some(80),
            host_port: Some(8080),
            container_port_range: None,
        }];
        rejects(
            &s,
            "host ports and container ports in port mappings must match",
        );
        s.network_mode = Some(NetworkMode::Bridge);
        assert!(s.validate().is_ok(), "bridge mode maps freely");
        s.containers[0].port_mappings = vec![PortMapping {
            container_port: None,
            host_port: None,
            container_port_range: Some("90-80".into()),
        }];
        rejects(&s, "containerPortRange '90-80'");
        s.containers[0].port_mappings[0].container_port_range = Some("80-90".into());
        assert!(s.validate().is_ok());
    }

    #[test]
    fn health_check_ranges() {
        let mut c = container("a");
        c.health_check = Some(HealthCheck {
            command: vec!["CMD".into(), "true".into()],
            interval: 4,
            timeout: 5,
            retries: 3,
            start_period: 0,
        });
        rejects(
            &spec(vec![c.clone()]),
            "healthCheck.interval 4 is out of range 5-300",
        );
        c.health_check.as_mut().unwrap().interval = 30;
        c.health_check.as_mut().unwrap().retries = 11;
        rejects(&spec(vec![c]), "healthCheck.retries 11");
    }

    #[test]
    fn depends_on_rules() {
        let mut a = container("a");
        let b = container("b");
        a.depends_on = vec![Dependency {
            container: "nope".into(),
            condition: DependencyCondition::Start,
        }];
        rejects(
            &spec(vec![a.clone(), b.clone()]),
            "'nope', which is not in this task definition",
        );
        a.depends_on = vec![Dependency {
            container: "b".into(),
            condition: DependencyCondition::Success,
        }];
        rejects(
            &spec(vec![a.clone(), b.clone()]),
            "because that container is essential",
        );
        let mut b2 = b.clone();
        b2.essential = false;
        assert!(spec(vec![a.clone(), b2]).validate().is_ok());
        a.depends_on = vec![Dependency {
            container: "b".into(),
            condition: DependencyCondition::Healthy,
        }];
        rejects(
            &spec(vec![a.clone(), b.clone()]),
            "needs that container to have a healthCheck",
        );
        let mut b3 = b;
        a.depends_on = vec![Dependency {
            container: "b".into(),
            condition: DependencyCondition::Start,
        }];
        b3.depends_on = vec![Dependency {
            container: "a".into(),
            condition: DependencyCondition::Start,
        }];
        rejects(&spec(vec![a, b3]), "cycle");
    }

    #[test]
    fn volumes() {
        let mut c = container("a");
        c.mount_volumes = vec!["data".into()];
        rejects(
            &spec(vec![c.clone()]),
            "sourceVolume 'data' is not declared",
        );
        let mut s = spec(vec![c]);
        s.volumes = vec![VolumeSpec {
            name: "data".into(),
            host_source_path: Some("/srv".into()),
            docker_volume: false,
            efs: false,
        }];
        assert!(s.validate().is_ok());
        s.volumes.push(s.volumes[0].clone());
        rejects(&s, "declared more than once");
    }

    #[test]
    fn required_attributes_follow_features() {
        let mut c = container("a");
        c.health_check = Some(HealthCheck {
            command: vec!["CMD".into(), "true".into()],
            interval: 30,
            timeout: 5,
            retries: 3,
            start_period: 0,
        });
        c.log_driver = Some("json-file".into());
        let attrs = spec(vec![c]).required_attributes();
        assert!(attrs.contains(&"ecs.capability.container-health-check".to_string()));
        assert!(
            attrs.contains(&"com.amazonaws.ecs.capability.logging-driver.json-file".to_string())
        );
    }
}
