//! [`record()`]: after the control plane applied a [`Decision`], the counts, rollout state and
//! events to write; [`push_events`]: how ECS keeps a service's events.

use super::{
    Decision, DeploymentState, Outcome, Record, RolloutState, ServiceState, ServiceStatus,
    ServiceTask, MAX_EVENTS,
};

/// The rest of the service record after `decision` was applied with `outcome`; `tasks` are
/// the service's tasks as they are now (read again if [`Decision::acts`]).
pub fn record(
    service: &ServiceState,
    decision: &Decision,
    outcome: &Outcome,
    tasks: &[ServiceTask],
    now: f64,
) -> Record {
    let name = &service.name;
    let mut events = decision.events.clone();
    events.extend(outcome_events(name, outcome));

    let count = |deployment: Option<&str>, status: &str| -> i32 {
        tasks
            .iter()
            .filter(|t| deployment.is_none_or(|d| t.deployment == d))
            .filter(|t| t.counts_as(status))
            .count() as i32
    };
    let desired = decision.desired_count.unwrap_or(service.desired_count);
    let mut deployments: Vec<DeploymentState> = decision
        .deployments
        .iter()
        .filter(|d| !decision.retire.contains(&d.id))
        .cloned()
        .collect();
    for (i, d) in deployments.iter_mut().enumerate() {
        d.running_count = Some(count(Some(&d.id), "RUNNING"));
        d.pending_count = Some(count(Some(&d.id), "PENDING"));
        if i == 0 {
            d.desired_count = Some(desired);
        }
    }
    if decision.steady {
        if let Some(p) = deployments.first_mut() {
            if p.rollout_state != Some(RolloutState::Completed) {
                p.rollout_state = Some(RolloutState::Completed);
                p.rollout_state_reason = Some(format!("ECS deployment {} completed.", p.id));
                p.updated_at = Some(now);
                events.push(format!(
                    "(service {name}) deployment {} deployment completed.",
                    p.id
                ));
            }
        }
        events.push(format!("(service {name}) has reached a steady state."));
    }
    Record {
        deployments,
        running_count: count(None, "RUNNING"),
        pending_count: count(None, "PENDING"),
        events,
        inactive: service.status == ServiceStatus::Draining
            && tasks
                .iter()
                .all(|t| t.last_status.as_deref() == Some("STOPPED")),
    }
}

/// The events of what was stopped, started, and could not be placed, in that order.
fn outcome_events(name: &str, outcome: &Outcome) -> Vec<String> {
    let ids = |arns: &[String]| -> String {
        arns.iter()
            .map(|a| format!("(task {})", task_id(a)))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut events = Vec::new();
    if !outcome.stopped.is_empty() {
        events.push(format!(
            "(service {name}) has stopped {} running tasks: {}.",
            outcome.stopped.len(),
            ids(&outcome.stopped)
        ));
    }
    if !outcome.started.is_empty() {
        events.push(format!(
            "(service {name}) has started {} tasks: {}.",
            outcome.started.len(),
            ids(&outcome.started)
        ));
    }
    if let Some(why) = &outcome.unplaced {
        events.push(format!(
            "(service {name}) was unable to place a task because no container instance met all of its requirements. Reason: {why}."
        ));
    }
    events
}

/// Why placement came up short, for [`Outcome::unplaced`]: its first failure (`reason`, and
/// the container instance `arn`), if it reported one.
pub fn why_unplaced(first_failure: Option<(&str, &str)>) -> String {
    match first_failure {
        Some((reason, arn)) => format!("{reason} on container instance {arn}"),
        None => "no container instance met all of its requirements".into(),
    }
}

/// The task id an ARN ends with (events name tasks by id).
pub fn task_id(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap_or(arn)
}

/// Writes `messages` (oldest first) to a service's `events` (newest first) as ECS keeps them:
/// a repeat of the newest message is not written again, and only the newest [`MAX_EVENTS`]
/// are kept. An absent list is created by the first message written. `message_of` reads an
/// event's message; `event` makes the event for one (its id and time are the caller's).
pub fn push_events<E>(
    events: &mut Option<Vec<E>>,
    messages: impl IntoIterator<Item = String>,
    message_of: impl Fn(&E) -> Option<&str>,
    mut event: impl FnMut(String) -> E,
) {
    for message in messages {
        let list = events.get_or_insert_with(Vec::new);
        if list.first().and_then(&message_of) == Some(message.as_str()) {
            continue;
        }
        list.insert(0, event(message));
        list.truncate(MAX_EVENTS);
    }
}

#[cfg(test)]
mod tests;
