//! [`decide()`]: the circuit breaker and its rollback, the restart back-off, REPLICA or DAEMON,
//! stop reasons and placement strategies.

use super::{
    CircuitBreaker, Decision, DeploymentState, DeploymentStatus, Input, Placement, RolloutState,
    SchedulingStrategy, ServiceState, ServiceStatus, ServiceTask, Start, Stop, Strategy,
};
use crate::daemon::{self, Placed};
use crate::service::{self, circuit_breaker_threshold, restart_backoff, Deployment, StopWhy, Task};

/// What the rollout reconcilers returned, before the breaker and back-off have their say.
struct Plan {
    start: Start,
    stop: Vec<(String, StopWhy)>,
    retire: Vec<String>,
    steady: bool,
}

/// One pass of the service reconciler over `input`, at `now` (seconds since the epoch).
pub fn decide(input: &Input, now: f64) -> Decision {
    let s = &input.service;
    let mut deployments = input.deployments.clone();
    let mut events = Vec::new();
    let task_definition = trip_breaker(input, &mut deployments, &mut events, now);

    let primary = deployments.first();
    let primary_id = primary.map_or("", |d| d.id.as_str());
    let failed = primary.is_some_and(|d| d.rollout_state == Some(RolloutState::Failed));
    let view: Vec<Task> = input.tasks.iter().map(|t| t.view(now)).collect();
    let spec = spec(s, &deployments);
    let (plan, desired_count) = match s.scheduling {
        SchedulingStrategy::Replica => (replica(&spec, &view, now), None),
        SchedulingStrategy::Daemon => daemon(input, &spec, &view),
    };

    // Nothing starts without a PRIMARY, nor of a FAILED one; a PRIMARY whose tasks keep
    // failing backs off.
    let mut start = plan.start;
    if primary.is_none() || failed {
        start = start.nothing();
    } else if start.count() > 0 && backing_off(&input.tasks, primary_id, now) {
        start = start.nothing();
        events.push(format!(
            "(service {}) is unable to consistently start tasks successfully. For more information, see the Troubleshooting section of the Amazon ECS Developer Guide.",
            s.name
        ));
    }
    let stop = plan
        .stop
        .into_iter()
        .map(|(arn, why)| Stop {
            reason: stop_reason(why, primary_id),
            arn,
            why,
        })
        .collect();
    let placement = if s.has_placement_strategies || s.scheduling == SchedulingStrategy::Daemon {
        Placement::ServiceOwn
    } else {
        Placement::Default(default_strategies())
    };
    Decision {
        deployments,
        task_definition,
        desired_count,
        start,
        placement,
        stop,
        retire: plan.retire,
        steady: plan.steady,
        events,
    }
}

/// The strategies a REPLICA service without its own places with: spread across availability
/// zones, then across instances.
pub fn default_strategies() -> Vec<Strategy> {
    ["attribute:ecs.availability-zone", "instanceId"]
        .into_iter()
        .map(|field| Strategy {
            kind: "spread".into(),
            field: field.into(),
        })
        .collect()
}

/// A new PRIMARY deployment, IN_PROGRESS with no tasks yet (CreateService, UpdateService and
/// a rollback make them).
pub fn new_deployment(
    id: String,
    task_definition: String,
    desired: i32,
    launch_type: String,
    now: f64,
) -> DeploymentState {
    DeploymentState {
        rollout_state_reason: Some(format!("ECS deployment {id} in progress.")),
        id,
        status: Some(DeploymentStatus::Primary),
        task_definition: Some(task_definition),
        desired_count: Some(desired),
        pending_count: Some(0),
        running_count: Some(0),
        failed_tasks: Some(0),
        created_at: Some(now),
        updated_at: Some(now),
        launch_type: Some(launch_type),
        rollout_state: Some(RolloutState::InProgress),
    }
}

/// The PRIMARY's `failedTasks`, and the circuit breaker: an IN_PROGRESS PRIMARY with at least
/// the threshold of failed tasks becomes FAILED and, if asked, rolls back to the newest
/// COMPLETED deployment. Returns the service's new task definition when it rolled back.
fn trip_breaker(
    input: &Input,
    deployments: &mut Vec<DeploymentState>,
    events: &mut Vec<String>,
    now: f64,
) -> Option<String> {
    let s = &input.service;
    let p = deployments.first_mut()?;
    let failures = input.tasks.iter().filter(|t| t.failed_in(&p.id)).count();
    p.failed_tasks = Some(failures as i32);
    let cb = &s.circuit_breaker;
    if !cb.enable || p.rollout_state != Some(RolloutState::InProgress) {
        return None;
    }
    if (failures as u32) < threshold(s.desired_count, cb) {
        return None;
    }
    p.rollout_state = Some(RolloutState::Failed);
    p.rollout_state_reason = Some("ECS deployment circuit breaker: tasks failed to start.".into());
    p.updated_at = Some(now);
    events.push(format!(
        "(service {}) (deployment {}) deployment failed: tasks failed to start.",
        s.name, p.id
    ));
    if !cb.rollback {
        return None;
    }
    let completed = deployments
        .iter()
        .skip(1)
        .find(|d| d.rollout_state == Some(RolloutState::Completed));
    let Some(good) = completed.cloned() else {
        events.push(format!(
            "(service {}) has no completed deployment to roll back to.",
            s.name
        ));
        return None;
    };
    let td = good.task_definition.unwrap_or_default();
    for d in deployments.iter_mut() {
        d.status = Some(DeploymentStatus::Active);
    }
    let back = new_deployment(
        input.fresh_deployment_id.clone(),
        td.clone(),
        s.desired_count,
        s.launch_type().to_string(),
        now,
    );
    events.push(format!(
        "(service {}) rolling back to deployment {}.",
        s.name, good.id
    ));
    deployments.insert(0, back);
    Some(td)
}

fn threshold(desired: i32, cb: &CircuitBreaker) -> u32 {
    circuit_breaker_threshold(
        desired.max(0) as u32,
        cb.threshold_kind.as_deref(),
        cb.threshold_value,
    )
}

/// The PRIMARY's tasks keep failing: no start until [`restart_backoff`] (of how many failed)
/// after the last one stopped.
/// Whether `primary`'s restarts wait: its tasks keep failing, and the back-off since the
/// last failure ([`crate::service::restart_backoff`]) has not passed.
pub fn backing_off(tasks: &[ServiceTask], primary: &str, now: f64) -> bool {
    let failures: Vec<&ServiceTask> = tasks.iter().filter(|t| t.failed_in(primary)).collect();
    let last = failures
        .iter()
        .filter_map(|t| t.stopped_at)
        .fold(f64::MIN, f64::max);
    now < last + restart_backoff(failures.len() as u32)
}

fn stop_reason(why: StopWhy, primary: &str) -> String {
    match why {
        StopWhy::Unhealthy => "Task failed container health checks".to_string(),
        StopWhy::ScaleDown | StopWhy::Replaced => {
            format!("Scaling activity initiated by (deployment {primary})")
        }
    }
}

/// What the rollout reconcilers take of the service, with ECS's defaults.
fn spec(s: &ServiceState, deployments: &[DeploymentState]) -> service::Service {
    service::Service {
        desired: s.desired_count.max(0) as u32,
        minimum_healthy_percent: s.minimum_healthy_percent.unwrap_or(100).max(0) as u32,
        maximum_percent: s.maximum_percent.unwrap_or(200).max(0) as u32,
        health_check_grace_period: f64::from(s.health_check_grace_period_seconds.unwrap_or(0)),
        deployments: deployments
            .iter()
            .map(|d| Deployment { id: d.id.clone() })
            .collect(),
    }
}

fn replica(spec: &service::Service, view: &[Task], now: f64) -> Plan {
    let a = service::reconcile(spec, view, now);
    Plan {
        start: Start::Replicas(a.start),
        stop: a.stop,
        retire: a.retire,
        steady: a.steady,
    }
}

/// DAEMON: one task per eligible instance (none while DRAINING), and the desired count follows
/// the eligible instances (not while DRAINING: it stays as DeleteService left it).
fn daemon(input: &Input, spec: &service::Service, view: &[Task]) -> (Plan, Option<i32>) {
    let draining = input.service.status == ServiceStatus::Draining;
    let eligible = if draining {
        Vec::new()
    } else {
        input.eligible.clone()
    };
    let placed: Vec<Placed> = view
        .iter()
        .map(|t| Placed {
            task: t.clone(),
            instance: t.host.clone(),
        })
        .collect();
    let primary = spec.deployments.first().map_or("", |d| d.id.as_str());
    let d = daemon::reconcile(primary, &eligible, &placed);
    let plan = Plan {
        start: Start::OnInstances(d.start_on),
        stop: d.stop,
        retire: service::retired(&spec.deployments, view),
        steady: d.steady,
    };
    let desired = (!draining).then_some(eligible.len() as i32);
    (plan, desired)
}

#[cfg(test)]
mod tests;
