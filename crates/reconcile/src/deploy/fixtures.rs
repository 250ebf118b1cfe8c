//! Builders for the tests of [`super`].

use super::*;

pub fn service(name: &str, desired: i32) -> ServiceState {
    ServiceState {
        name: name.into(),
        status: ServiceStatus::Active,
        scheduling: SchedulingStrategy::Replica,
        desired_count: desired,
        minimum_healthy_percent: None,
        maximum_percent: None,
        health_check_grace_period_seconds: None,
        circuit_breaker: CircuitBreaker::default(),
        launch_type: None,
        has_placement_strategies: false,
    }
}

pub fn breaker(rollback: bool) -> CircuitBreaker {
    CircuitBreaker {
        enable: true,
        rollback,
        ..Default::default()
    }
}

/// A deployment as CreateService/UpdateService make it, in `state`; the first of a list is
/// PRIMARY, the rest ACTIVE (see [`deployments`]).
pub fn deployment(id: &str, td: &str, state: RolloutState) -> DeploymentState {
    let mut d = new_deployment(id.into(), td.into(), 1, "EC2".into(), 0.0);
    d.rollout_state = Some(state);
    d
}

/// PRIMARY first, the rest ACTIVE.
pub fn deployments(ds: &[(&str, &str, RolloutState)]) -> Vec<DeploymentState> {
    ds.iter()
        .enumerate()
        .map(|(i, (id, td, st))| {
            let mut d = deployment(id, td, *st);
            if i > 0 {
                d.status = Some(DeploymentStatus::Active);
            }
            d
        })
        .collect()
}

pub fn task(arn: &str, dep: &str, last: &str, desired: &str) -> ServiceTask {
    ServiceTask {
        arn: arn.into(),
        deployment: dep.into(),
        last_status: Some(last.into()),
        desired_status: Some(desired.into()),
        healthy: true,
        unhealthy: false,
        started_at: Some(0.0),
        stopped_at: None,
        stop_code: None,
        host: "i1".into(),
        displaced: false,
        failed_health: false,
        protected_until: None,
    }
}

pub fn running(arn: &str, dep: &str) -> ServiceTask {
    task(arn, dep, "RUNNING", "RUNNING")
}

/// A task that stopped by itself (its essential container exited) at `at`.
pub fn failed(arn: &str, dep: &str, at: f64) -> ServiceTask {
    let mut t = task(arn, dep, "STOPPED", "STOPPED");
    t.stopped_at = Some(at);
    t.stop_code = Some("EssentialContainerExited".into());
    t
}

pub fn input(
    service: ServiceState,
    deployments: Vec<DeploymentState>,
    tasks: Vec<ServiceTask>,
) -> Input {
    Input {
        service,
        deployments,
        tasks,
        eligible: Vec::new(),
        fresh_deployment_id: "fresh".into(),
    }
}
