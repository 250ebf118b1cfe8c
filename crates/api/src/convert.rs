//! Wire shapes to the domain model: type-level checks (enums, number ranges) happen here, the
//! semantic rules in [`berth_model`].

use crate::ecs::{self, enums, RegisterTaskDefinitionRequest};
use crate::error::check_enum;
use crate::EcsError;
use berth_model::task_definition::{
    Compatibility, ContainerSpec, Dependency, DependencyCondition, HealthCheck, NetworkMode,
    PortMapping, TaskDefinitionSpec, VolumeSpec,
};

fn port(field: &str, container: &str, v: Option<i32>) -> Result<Option<u16>, EcsError> {
    v.map(|p| {
        u16::try_from(p).map_err(|_| {
            EcsError::invalid(format!(
                "container '{container}': {field} {p} is out of range 0-65535"
            ))
        })
    })
    .transpose()
}

/// The typed view of a RegisterTaskDefinition request.
pub fn task_definition_spec(
    req: &RegisterTaskDefinitionRequest,
) -> Result<TaskDefinitionSpec, EcsError> {
    let network_mode = match &req.network_mode {
        Some(m) => {
            check_enum("networkMode", m, enums::NETWORK_MODE)?;
            NetworkMode::parse(m)
        }
        None => None,
    };
    let mut requires_compatibilities = Vec::new();
    for c in req.requires_compatibilities.iter().flatten() {
        check_enum("requiresCompatibilities", c, enums::COMPATIBILITY)?;
        requires_compatibilities.extend(Compatibility::parse(c));
    }
    if let Some(m) = &req.pid_mode {
        check_enum("pidMode", m, enums::PID_MODE)?;
    }
    if let Some(m) = &req.ipc_mode {
        check_enum("ipcMode", m, enums::IPC_MODE)?;
    }
    let mut containers = Vec::new();
    for (i, c) in req.container_definitions.iter().flatten().enumerate() {
        containers.push(container_spec(i, c)?);
    }
    let volumes = req
        .volumes
        .iter()
        .flatten()
        .map(|v| VolumeSpec {
            name: v.name.clone().unwrap_or_default(),
            host_source_path: v.host.as_ref().and_then(|h| h.source_path.clone()),
            docker_volume: v.docker_volume_configuration.is_some(),
            efs: v.efs_volume_configuration.is_some(),
        })
        .collect();
    Ok(TaskDefinitionSpec {
        family: req.family.clone().unwrap_or_default(),
        network_mode,
        requires_compatibilities,
        cpu: req.cpu.clone(),
        memory: req.memory.clone(),
        containers,
        volumes,
        task_role: req.task_role_arn.is_some(),
        execution_role: req.execution_role_arn.is_some(),
        pid_mode: req.pid_mode.clone(),
        ipc_mode: req.ipc_mode.clone(),
    })
}

fn container_spec(index: usize, c: &ecs::ContainerDefinition) -> Result<ContainerSpec, EcsError> {
    let name = c.name.clone().ok_or_else(|| {
        EcsError::client(format!(
            "containerDefinitions[{index}]: Container.name should not be null or empty."
        ))
    })?;
    let mut port_mappings = Vec::new();
    for p in c.port_mappings.iter().flatten() {
        if let Some(proto) = &p.protocol {
            check_enum(
                &format!("container '{name}': portMappings.protocol"),
                proto,
                enums::TRANSPORT_PROTOCOL,
            )?;
        }
        if let Some(app) = &p.app_protocol {
            check_enum(
                &format!("container '{name}': portMappings.appProtocol"),
                app,
                enums::APPLICATION_PROTOCOL,
            )?;
        }
        port_mappings.push(PortMapping {
            container_port: port("containerPort", &name, p.container_port)?,
            host_port: port("hostPort", &name, p.host_port)?,
            container_port_range: p.container_port_range.clone(),
        });
    }
    let mut depends_on = Vec::new();
    for d in c.depends_on.iter().flatten() {
        let cond = d.condition.clone().unwrap_or_default();
        check_enum(
            &format!("container '{name}': dependsOn.condition"),
            &cond,
            enums::CONTAINER_CONDITION,
        )?;
        depends_on.push(Dependency {
            container: d.container_name.clone().unwrap_or_default(),
            condition: DependencyCondition::parse(&cond).unwrap_or(DependencyCondition::Start),
        });
    }
    let health_check = c.health_check.as_ref().map(|h| HealthCheck {
        command: h.command.clone().unwrap_or_default(),
        interval: h.interval.map_or(HealthCheck::DEFAULT_INTERVAL, i64::from),
        timeout: h.timeout.map_or(HealthCheck::DEFAULT_TIMEOUT, i64::from),
        retries: h.retries.map_or(HealthCheck::DEFAULT_RETRIES, i64::from),
        start_period: h
            .start_period
            .map_or(HealthCheck::DEFAULT_START_PERIOD, i64::from),
    });
    let log_driver = c
        .log_configuration
        .as_ref()
        .and_then(|l| l.log_driver.clone());
    if let Some(d) = &log_driver {
        check_enum(
            &format!("container '{name}': logConfiguration.logDriver"),
            d,
            enums::LOG_DRIVER,
        )?;
    }
    for u in c.ulimits.iter().flatten() {
        check_enum(
            &format!("container '{name}': ulimits.name"),
            u.name.as_deref().unwrap_or(""),
            enums::ULIMIT_NAME,
        )?;
        if u.soft_limit > u.hard_limit {
            return Err(EcsError::client(format!(
                "container '{name}': ulimit {} softLimit {} exceeds hardLimit {}",
                u.name.as_deref().unwrap_or(""),
                u.soft_limit.unwrap_or_default(),
                u.hard_limit.unwrap_or_default()
            )));
        }
    }
    Ok(ContainerSpec {
        image: c.image.clone().unwrap_or_default(),
        cpu: c.cpu.map_or(0, i64::from),
        memory: c.memory.map(i64::from),
        memory_reservation: c.memory_reservation.map(i64::from),
        essential: c.essential.unwrap_or(true),
        port_mappings,
        depends_on,
        health_check,
        mount_volumes: c
            .mount_points
            .iter()
            .flatten()
            .filter_map(|m| m.source_volume.clone())
            .collect(),
        volumes_from: c
            .volumes_from
            .iter()
            .flatten()
            .filter_map(|v| v.source_container.clone())
            .collect(),
        links: c
            .links
            .iter()
            .flatten()
            .map(|l| l.split(':').next().unwrap_or_default().to_string())
            .collect(),
        log_driver,
        has_ulimits: c.ulimits.as_ref().is_some_and(|u| !u.is_empty()),
        has_docker_labels: c.docker_labels.as_ref().is_some_and(|l| !l.is_empty()),
        has_secrets: c.secrets.as_ref().is_some_and(|s| !s.is_empty()),
        has_environment_files: c.environment_files.as_ref().is_some_and(|f| !f.is_empty()),
        restart_policy: c
            .restart_policy
            .as_ref()
            .is_some_and(|r| r.enabled == Some(true)),
        name,
    })
}

/// The container definitions as ECS returns them: defaults filled in (essential, cpu 0, empty
/// lists, tcp, health-check timings, and host ports equal to container ports where the network
/// mode requires it).
pub fn normalize_containers(
    defs: &[ecs::ContainerDefinition],
    mode: NetworkMode,
) -> Vec<ecs::ContainerDefinition> {
    defs.iter()
        .cloned()
        .map(|mut c| {
            c.cpu.get_or_insert(0);
            c.essential.get_or_insert(true);
            c.environment.get_or_insert_with(Vec::new);
            c.mount_points.get_or_insert_with(Vec::new);
            c.volumes_from.get_or_insert_with(Vec::new);
            c.system_controls.get_or_insert_with(Vec::new);
            for p in c.port_mappings.get_or_insert_with(Vec::new) {
                p.protocol.get_or_insert_with(|| "tcp".into());
                if matches!(mode, NetworkMode::Awsvpc | NetworkMode::Host) && p.host_port.is_none()
                {
                    p.host_port = p.container_port;
                }
            }
            if let Some(h) = &mut c.health_check {
                h.interval
                    .get_or_insert(HealthCheck::DEFAULT_INTERVAL as i32);
                h.timeout.get_or_insert(HealthCheck::DEFAULT_TIMEOUT as i32);
                h.retries.get_or_insert(HealthCheck::DEFAULT_RETRIES as i32);
            }
            c
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(json: &str) -> RegisterTaskDefinitionRequest {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn builds_spec_and_checks_enums() {
        let r = req(
            r#"{"family":"web","networkMode":"bridge","containerDefinitions":[{"name":"a","image":"busybox","memory":64,
            "portMappings":[{"containerPort":80}],"dependsOn":[],"healthCheck":{"command":["CMD","true"]}}]}"#,
        );
        let s = task_definition_spec(&r).unwrap();
        assert_eq!(s.containers[0].health_check.as_ref().unwrap().interval, 30);
        assert!(s.containers[0].essential);
        let bad = req(r#"{"family":"web","networkMode":"bridged","containerDefinitions":[]}"#);
        let e = task_definition_spec(&bad).unwrap_err();
        assert!(e.message.contains("networkMode 'bridged'"), "{}", e.message);
        let bad = req(
            r#"{"family":"web","containerDefinitions":[{"name":"a","portMappings":[{"containerPort":70000}]}]}"#,
        );
        assert!(task_definition_spec(&bad)
            .unwrap_err()
            .message
            .contains("containerPort 70000"));
        let bad = req(
            r#"{"family":"web","containerDefinitions":[{"name":"a","logConfiguration":{"logDriver":"loki"}}]}"#,
        );
        assert!(task_definition_spec(&bad)
            .unwrap_err()
            .message
            .contains("logDriver 'loki'"));
    }

    #[test]
    fn normalizes_like_ecs() {
        let r = req(
            r#"{"family":"web","containerDefinitions":[{"name":"a","portMappings":[{"containerPort":80}]}]}"#,
        );
        let out = normalize_containers(
            r.container_definitions.as_deref().unwrap(),
            NetworkMode::Awsvpc,
        );
        assert_eq!(out[0].essential, Some(true));
        assert_eq!(
            out[0].port_mappings.as_ref().unwrap()[0].host_port,
            Some(80)
        );
        assert_eq!(
            out[0].port_mappings.as_ref().unwrap()[0]
                .protocol
                .as_deref(),
            Some("tcp")
        );
    }
}
