//! A task record and its task definition turned into what an agent runs: the
//! [`DesiredTask`] of the agent protocol, overrides applied. Pure.

use berth_agent_proto::{
    ContainerPlan, Dependency, DesiredTask, DockerVolumePlan, HealthCheckPlan, HostOptions,
    MountPlan, PortPlan, UlimitPlan, VolumePlan,
};
use berth_api::ecs::{ContainerDefinition, Task, TaskDefinition};
use berth_model::units;

/// The longest `stopTimeout` Fargate allows, in seconds.
const FARGATE_MAX_STOP_TIMEOUT: i32 = 120;

/// The plan for `task`, a task of `td`.
pub fn desired_task(task: &Task, td: &TaskDefinition) -> DesiredTask {
    let overrides = task.overrides.clone().unwrap_or_default();
    let containers = td
        .container_definitions
        .iter()
        .flatten()
        .map(|c| {
            let o = overrides
                .container_overrides
                .iter()
                .flatten()
                .find(|o| o.name == c.name);
            let mut plan = container_plan(c, td);
            if let Some(o) = o {
                if let Some(cmd) = &o.command {
                    plan.command = Some(cmd.clone());
                }
                for kv in o.environment.iter().flatten() {
                    let (Some(k), v) = (kv.name.clone(), kv.value.clone().unwrap_or_default())
                    else {
                        continue;
                    };
                    match plan.environment.iter_mut().find(|(n, _)| *n == k) {
                        Some(e) => e.1 = v,
                        None => plan.environment.push((k, v)),
                    }
                }
                plan.cpu = o.cpu.or(plan.cpu);
                plan.memory = o.memory.or(plan.memory);
                plan.memory_reservation = o.memory_reservation.or(plan.memory_reservation);
            }
            plan
        })
        .collect();
    let volumes = td
        .volumes
        .iter()
        .flatten()
        .map(|v| VolumePlan {
            name: v.name.clone().unwrap_or_default(),
            host_path: v.host.as_ref().and_then(|h| h.source_path.clone()),
            docker: v
                .docker_volume_configuration
                .as_ref()
                .map(|d| DockerVolumePlan {
                    scope: d.scope.clone().unwrap_or_else(|| "task".into()),
                    autoprovision: d.autoprovision.unwrap_or(false),
                    driver: d.driver.clone(),
                    driver_opts: d.driver_opts.clone().unwrap_or_default(),
                    labels: d.labels.clone().unwrap_or_default(),
                }),
        })
        .collect();
    let mut containers: Vec<ContainerPlan> = containers;
    if task.launch_type.as_deref() == Some("FARGATE") {
        // Fargate gives containers at most two minutes between SIGTERM and SIGKILL.
        for c in &mut containers {
            c.stop_timeout = Some(c.stop_timeout.unwrap_or(30).min(FARGATE_MAX_STOP_TIMEOUT));
        }
    }
    DesiredTask {
        task_arn: task.task_arn.clone().unwrap_or_default(),
        cluster_arn: task.cluster_arn.clone().unwrap_or_default(),
        family: td.family.clone().unwrap_or_default(),
        revision: td.revision.unwrap_or(0),
        desired_status: task
            .desired_status
            .clone()
            .unwrap_or_else(|| "RUNNING".into()),
        network_mode: td.network_mode.clone().unwrap_or_else(|| "bridge".into()),
        containers,
        volumes,
        stop_reason: task.stopped_reason.clone(),
        cpu: task
            .cpu
            .as_deref()
            .or(td.cpu.as_deref())
            .and_then(|c| units::parse_cpu(c).ok()),
        memory: task
            .memory
            .as_deref()
            .or(td.memory.as_deref())
            .and_then(|m| units::parse_memory(m).ok()),
        ephemeral_storage_gib: task
            .ephemeral_storage
            .as_ref()
            .and_then(|e| e.size_in_gi_b)
            .and_then(|n| u32::try_from(n).ok()),
        // The interface comes from its own record (see `agents`).
        network: None,
    }
}

fn host_options(c: &ContainerDefinition, td: &TaskDefinition) -> HostOptions {
    let linux = c.linux_parameters.clone().unwrap_or_default();
    let caps = linux.capabilities.clone().unwrap_or_default();
    let host_mode = |m: &Option<String>| m.clone().filter(|m| m == "host" || m == "none");
    HostOptions {
        links: c.links.clone().unwrap_or_default(),
        volumes_from: c
            .volumes_from
            .iter()
            .flatten()
            .filter_map(|v| Some((v.source_container.clone()?, v.read_only.unwrap_or(false))))
            .collect(),
        extra_hosts: c
            .extra_hosts
            .iter()
            .flatten()
            .filter_map(|h| {
                Some(format!(
                    "{}:{}",
                    h.hostname.as_deref()?,
                    h.ip_address.as_deref()?
                ))
            })
            .collect(),
        dns_servers: c.dns_servers.clone().unwrap_or_default(),
        dns_search_domains: c.dns_search_domains.clone().unwrap_or_default(),
        cap_add: caps.add.unwrap_or_default(),
        cap_drop: caps.drop.unwrap_or_default(),
        devices: linux
            .devices
            .iter()
            .flatten()
            .filter_map(|d| {
                let host = d.host_path.clone()?;
                let perms = d.permissions.clone().unwrap_or_default();
                let rwm: String = [("read", 'r'), ("write", 'w'), ("mknod", 'm')]
                    .iter()
                    .filter(|(p, _)| perms.is_empty() || perms.iter().any(|x| x == p))
                    .map(|(_, c)| *c)
                    .collect();
                Some((host.clone(), d.container_path.clone().unwrap_or(host), rwm))
            })
            .collect(),
        init: linux.init_process_enabled.unwrap_or(false),
        shm_size_mib: linux.shared_memory_size.map(i64::from),
        tmpfs: linux
            .tmpfs
            .iter()
            .flatten()
            .filter_map(|t| {
                let mut opts = vec![format!("size={}m", t.size.unwrap_or(0))];
                opts.extend(t.mount_options.iter().flatten().cloned());
                Some((t.container_path.clone()?, opts.join(",")))
            })
            .collect(),
        max_swap_mib: linux.max_swap.map(i64::from),
        swappiness: linux.swappiness.map(i64::from),
        disable_networking: c.disable_networking.unwrap_or(false),
        security_options: c.docker_security_options.clone().unwrap_or_default(),
        sysctls: c
            .system_controls
            .iter()
            .flatten()
            .filter_map(|s| Some((s.namespace.clone()?, s.value.clone().unwrap_or_default())))
            .collect(),
        tty: c.pseudo_terminal.unwrap_or(false),
        open_stdin: c.interactive.unwrap_or(false),
        pid_mode: host_mode(&td.pid_mode),
        ipc_mode: host_mode(&td.ipc_mode),
    }
}

fn container_plan(c: &ContainerDefinition, td: &TaskDefinition) -> ContainerPlan {
    let host = host_options(c, td);
    // Links and volumesFrom need their containers first, as the ECS agent orders them.
    let mut depends_on: Vec<Dependency> = c
        .depends_on
        .iter()
        .flatten()
        .filter_map(|d| {
            Some(Dependency {
                container_name: d.container_name.clone()?,
                condition: d.condition.clone().unwrap_or_else(|| "START".into()),
            })
        })
        .collect();
    let implied = host
        .links
        .iter()
        .map(|l| l.split(':').next().unwrap_or_default().to_string())
        .chain(host.volumes_from.iter().map(|(c, _)| c.clone()));
    for name in implied {
        let own = c.name.as_deref() == Some(name.as_str());
        if !own && !depends_on.iter().any(|d| d.container_name == name) {
            depends_on.push(Dependency {
                container_name: name,
                condition: "START".into(),
            });
        }
    }
    ContainerPlan {
        name: c.name.clone().unwrap_or_default(),
        image: c.image.clone().unwrap_or_default(),
        command: c.command.clone(),
        entry_point: c.entry_point.clone(),
        environment: c
            .environment
            .iter()
            .flatten()
            .filter_map(|kv| Some((kv.name.clone()?, kv.value.clone().unwrap_or_default())))
            .collect(),
        working_directory: c.working_directory.clone(),
        user: c.user.clone(),
        cpu: c.cpu,
        memory: c.memory,
        memory_reservation: c.memory_reservation,
        ulimits: c
            .ulimits
            .iter()
            .flatten()
            .map(|u| UlimitPlan {
                name: u.name.clone().unwrap_or_default(),
                soft: i64::from(u.soft_limit.unwrap_or(0)),
                hard: i64::from(u.hard_limit.unwrap_or(0)),
            })
            .collect(),
        docker_labels: c.docker_labels.clone().unwrap_or_default(),
        readonly_root_filesystem: c.readonly_root_filesystem.unwrap_or(false),
        privileged: c.privileged.unwrap_or(false),
        hostname: c.hostname.clone(),
        mount_points: c
            .mount_points
            .iter()
            .flatten()
            .map(|m| MountPlan {
                source_volume: m.source_volume.clone().unwrap_or_default(),
                container_path: m.container_path.clone().unwrap_or_default(),
                read_only: m.read_only.unwrap_or(false),
            })
            .collect(),
        port_mappings: c
            .port_mappings
            .iter()
            .flatten()
            .filter_map(|p| {
                Some(PortPlan {
                    container_port: u16::try_from(p.container_port?).ok()?,
                    host_port: p
                        .host_port
                        .and_then(|h| u16::try_from(h).ok())
                        .filter(|h| *h > 0),
                    protocol: p.protocol.clone().unwrap_or_else(|| "tcp".into()),
                })
            })
            .collect(),
        essential: c.essential.unwrap_or(true),
        depends_on,
        health_check: c.health_check.as_ref().map(|h| HealthCheckPlan {
            command: h.command.clone().unwrap_or_default(),
            interval_s: i64::from(h.interval.unwrap_or(30)),
            timeout_s: i64::from(h.timeout.unwrap_or(5)),
            retries: i64::from(h.retries.unwrap_or(3)),
            start_period_s: i64::from(h.start_period.unwrap_or(0)),
        }),
        stop_timeout: c.stop_timeout,
        log_driver: c
            .log_configuration
            .as_ref()
            .and_then(|l| l.log_driver.clone()),
        log_options: c
            .log_configuration
            .as_ref()
            .and_then(|l| l.options.clone())
            .unwrap_or_default(),
        start_timeout: c.start_timeout,
        host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_replace_command_and_merge_environment() {
        let td: TaskDefinition = serde_json::from_value(serde_json::json!({
            "family": "web", "revision": 3,
            "containerDefinitions": [{
                "name": "app", "image": "busybox", "memory": 64,
                "command": ["sleep", "1"],
                "environment": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                "portMappings": [{"containerPort": 80, "hostPort": 0}],
                "healthCheck": {"command": ["CMD-SHELL", "true"]}
            }]
        }))
        .unwrap();
        let task: Task = serde_json::from_value(serde_json::json!({
            "taskArn": "arn:aws:ecs:us-east-1:0:task/c/1",
            "desiredStatus": "RUNNING",
            "overrides": {"containerOverrides": [{
                "name": "app", "command": ["sleep", "2"], "memory": 128,
                "environment": [{"name": "B", "value": "3"}, {"name": "C", "value": "4"}]
            }]}
        }))
        .unwrap();
        let d = desired_task(&task, &td);
        let c = &d.containers[0];
        assert_eq!((d.family.as_str(), d.revision), ("web", 3));
        assert_eq!(
            c.command.as_deref(),
            Some(&["sleep".to_string(), "2".to_string()][..])
        );
        assert_eq!(c.memory, Some(128));
        assert_eq!(
            c.environment,
            [
                ("A".into(), "1".into()),
                ("B".into(), "3".into()),
                ("C".into(), "4".into())
            ]
        );
        assert_eq!(
            c.port_mappings[0].host_port, None,
            "hostPort 0 means dynamic"
        );
        let h = c.health_check.as_ref().unwrap();
        assert_eq!((h.interval_s, h.timeout_s, h.retries), (30, 5, 3));
        assert!(c.essential);
    }
}
