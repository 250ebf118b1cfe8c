use super::super::fixtures::*;
use super::super::*;
use crate::service::StopWhy;
use RolloutState::{Completed, Failed, InProgress};

/// A rollout from `old` (COMPLETED, `good:1`) to `new` (`bad:2`), with `tasks`.
fn rollout(svc: ServiceState, tasks: Vec<ServiceTask>) -> Input {
    input(
        svc,
        deployments(&[("new", "bad:2", InProgress), ("old", "good:1", Completed)]),
        tasks,
    )
}

fn failures(n: usize) -> Vec<ServiceTask> {
    (0..n)
        .map(|i| failed(&format!("arn/f{i}"), "new", i as f64))
        .collect()
}

#[test]
fn failed_tasks_count_only_stops_nobody_asked_for() {
    let mut asked = failed("arn/s", "new", 1.0);
    asked.stop_code = Some("ServiceSchedulerInitiated".into());
    let mut user = failed("arn/u", "new", 1.0);
    user.stop_code = Some("UserInitiated".into());
    let mut no_code = failed("arn/n", "new", 1.0);
    no_code.stop_code = None;
    // Replaced by the scheduler for failed (container or load-balancer) health checks.
    let mut unhealthy = failed("arn/h", "new", 1.0);
    unhealthy.stop_code = Some("ServiceSchedulerInitiated".into());
    unhealthy.failed_health = true;
    let tasks = vec![
        failed("arn/a", "new", 1.0),
        failed("arn/b", "old", 1.0),
        asked,
        user,
        no_code,
        unhealthy,
        running("arn/r", "new"),
    ];
    let d = decide(&rollout(service("web", 2), tasks), 10.0);
    assert_eq!(
        d.deployments[0].failed_tasks,
        Some(3),
        "a, n and h: a task that failed its health checks is a failure"
    );
    assert_eq!(d.deployments[1].failed_tasks, Some(0), "untouched");
}

#[test]
fn the_breaker_trips_at_the_threshold() {
    let mut svc = service("web", 2);
    svc.circuit_breaker = breaker(false);
    // BOUNDED_PERCENT 50 of 2 is 1, at least 3.
    let d = decide(&rollout(svc.clone(), failures(2)), 10.0);
    assert_eq!(d.deployments[0].rollout_state, Some(InProgress));
    assert!(d.events.is_empty());
    let d = decide(&rollout(svc, failures(3)), 10.0);
    let p = &d.deployments[0];
    assert_eq!(p.rollout_state, Some(Failed));
    assert_eq!(
        p.rollout_state_reason.as_deref(),
        Some("ECS deployment circuit breaker: tasks failed to start.")
    );
    assert_eq!(p.updated_at, Some(10.0));
    assert_eq!(
        d.events,
        ["(service web) (deployment new) deployment failed: tasks failed to start."]
    );
    assert_eq!(
        d.start,
        Start::Replicas(0),
        "a FAILED deployment starts nothing"
    );
    assert_eq!(d.task_definition, None, "no rollback asked for");
    assert_eq!(d.deployments.len(), 2);
}

#[test]
fn the_breaker_follows_its_threshold_configuration() {
    let mut svc = service("web", 10);
    svc.circuit_breaker = breaker(false);
    svc.circuit_breaker.threshold_kind = Some("COUNT".into());
    svc.circuit_breaker.threshold_value = Some(1);
    let d = decide(&rollout(svc, failures(1)), 10.0);
    assert_eq!(d.deployments[0].rollout_state, Some(Failed));
}

#[test]
fn the_breaker_is_off_unless_enabled_and_in_progress() {
    let d = decide(&rollout(service("web", 1), failures(9)), 100.0);
    assert_eq!(d.deployments[0].rollout_state, Some(InProgress), "disabled");
    assert_eq!(
        d.deployments[0].failed_tasks,
        Some(9),
        "counted all the same"
    );

    let mut svc = service("web", 1);
    svc.circuit_breaker = breaker(true);
    let mut i = rollout(svc, failures(9));
    i.deployments[0].rollout_state = Some(Completed);
    let d = decide(&i, 100.0);
    assert_eq!(d.deployments[0].rollout_state, Some(Completed));
    assert!(d.events.iter().all(|e| !e.contains("deployment failed")));
}

#[test]
fn a_rollback_makes_a_primary_deployment_of_the_last_completed_one() {
    let mut svc = service("web", 3);
    svc.circuit_breaker = breaker(true);
    svc.launch_type = Some("EXTERNAL".into());
    let mut i = input(
        svc,
        deployments(&[
            ("new", "bad:3", InProgress),
            ("mid", "meh:2", Failed),
            ("old", "good:1", Completed),
            ("older", "good:0", Completed),
        ]),
        failures(3),
    );
    i.deployments[0].launch_type = Some("EC2".into());
    let d = decide(&i, 50.0);
    assert_eq!(d.task_definition.as_deref(), Some("good:1"));
    let ids: Vec<&str> = d.deployments.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, ["fresh", "new", "mid", "old", "older"]);
    let back = &d.deployments[0];
    assert_eq!(
        back,
        &DeploymentState {
            id: "fresh".into(),
            status: Some(DeploymentStatus::Primary),
            task_definition: Some("good:1".into()),
            desired_count: Some(3),
            pending_count: Some(0),
            running_count: Some(0),
            failed_tasks: Some(0),
            created_at: Some(50.0),
            updated_at: Some(50.0),
            launch_type: Some("EXTERNAL".into()),
            rollout_state: Some(InProgress),
            rollout_state_reason: Some("ECS deployment fresh in progress.".into()),
        },
        "the service's launch type"
    );
    assert!(d.deployments[1..]
        .iter()
        .all(|d| d.status == Some(DeploymentStatus::Active)));
    assert_eq!(d.deployments[1].rollout_state, Some(Failed));
    assert_eq!(d.deployments[1].failed_tasks, Some(3));
    assert_eq!(
        d.events,
        [
            "(service web) (deployment new) deployment failed: tasks failed to start.",
            "(service web) rolling back to deployment old.",
        ]
    );
    assert_eq!(
        d.start,
        Start::Replicas(3),
        "the rollback deployment starts"
    );
}

#[test]
fn no_completed_deployment_means_no_rollback() {
    let mut svc = service("web", 1);
    svc.circuit_breaker = breaker(true);
    let i = input(
        svc,
        deployments(&[("new", "bad:2", InProgress), ("old", "good:1", Failed)]),
        failures(3),
    );
    let d = decide(&i, 10.0);
    assert_eq!(d.task_definition, None);
    assert_eq!(d.deployments.len(), 2);
    assert_eq!(d.deployments[1].status, Some(DeploymentStatus::Active));
    assert_eq!(
        d.events,
        [
            "(service web) (deployment new) deployment failed: tasks failed to start.",
            "(service web) has no completed deployment to roll back to.",
        ]
    );
    assert_eq!(d.start, Start::Replicas(0));
}

#[test]
fn a_failed_primary_starts_nothing_and_says_nothing() {
    let mut i = rollout(service("web", 2), Vec::new());
    i.deployments[0].rollout_state = Some(Failed);
    let d = decide(&i, 10.0);
    assert_eq!(d.start, Start::Replicas(0));
    assert!(d.events.is_empty());
}

#[test]
fn restarts_back_off_after_the_third_failure() {
    let svc = service("web", 1);
    // Two failures: no back-off.
    let d = decide(&rollout(svc.clone(), failures(2)), 1.0);
    assert_eq!(d.start, Start::Replicas(1));
    // Three, the last stopped at 2: not before 7.
    let d = decide(&rollout(svc.clone(), failures(3)), 6.9);
    assert_eq!(d.start, Start::Replicas(0));
    assert_eq!(
        d.events,
        ["(service web) is unable to consistently start tasks successfully. For more information, see the Troubleshooting section of the Amazon ECS Developer Guide."]
    );
    let d = decide(&rollout(svc.clone(), failures(3)), 7.0);
    assert_eq!(d.start, Start::Replicas(1));
    assert!(d.events.is_empty());
    // Four, the last at 3: 10 s.
    assert_eq!(
        decide(&rollout(svc.clone(), failures(4)), 12.9).start,
        Start::Replicas(0)
    );
    assert_eq!(
        decide(&rollout(svc, failures(4)), 13.0).start,
        Start::Replicas(1)
    );
}

#[test]
fn backing_off_with_nothing_to_start_says_nothing() {
    let d = decide(
        &rollout(
            service("web", 1),
            [failures(3), vec![running("arn/r", "new")]].concat(),
        ),
        2.0,
    );
    assert_eq!(d.start, Start::Replicas(0));
    assert!(d.events.is_empty());
}

#[test]
fn back_off_counts_the_current_primarys_failures_only() {
    let old: Vec<ServiceTask> = (0..5)
        .map(|i| failed(&format!("arn/o{i}"), "old", 9.0))
        .collect();
    let d = decide(&rollout(service("web", 1), old), 10.0);
    assert_eq!(d.start, Start::Replicas(1));
}

#[test]
fn stop_reasons_are_worded_as_ecs_words_them() {
    let mut sick = running("arn/sick", "new");
    sick.unhealthy = true;
    sick.healthy = false;
    let tasks = vec![
        sick,
        running("arn/a", "new"),
        running("arn/b", "new"),
        running("arn/c", "new"),
    ];
    let d = decide(&rollout(service("web", 2), tasks), 10.0);
    let stops: Vec<(&str, StopWhy, &str)> = d
        .stop
        .iter()
        .map(|s| (s.arn.as_str(), s.why, s.reason.as_str()))
        .collect();
    assert_eq!(
        stops,
        [
            (
                "arn/sick",
                StopWhy::Unhealthy,
                "Task failed container health checks"
            ),
            (
                "arn/a",
                StopWhy::ScaleDown,
                "Scaling activity initiated by (deployment new)"
            ),
        ]
    );
    let old = vec![running("arn/o", "old")];
    let mut svc = service("web", 1);
    svc.minimum_healthy_percent = Some(0);
    let d = decide(&rollout(svc, old), 10.0);
    assert_eq!(d.stop[0].why, StopWhy::Replaced);
    assert_eq!(
        d.stop[0].reason,
        "Scaling activity initiated by (deployment new)"
    );
}

#[test]
fn replica_services_without_strategies_spread_over_zones_then_instances() {
    let d = decide(&rollout(service("web", 1), Vec::new()), 0.0);
    let fields: Vec<(&str, &str)> = match &d.placement {
        Placement::Default(st) => st
            .iter()
            .map(|s| (s.kind.as_str(), s.field.as_str()))
            .collect(),
        Placement::ServiceOwn => Vec::new(),
    };
    assert_eq!(
        fields,
        [
            ("spread", "attribute:ecs.availability-zone"),
            ("spread", "instanceId")
        ]
    );
    let mut own = service("web", 1);
    own.has_placement_strategies = true;
    let d = decide(&rollout(own, Vec::new()), 0.0);
    assert_eq!(d.placement, Placement::ServiceOwn);
    let mut daemon = service("web", 1);
    daemon.scheduling = SchedulingStrategy::Daemon;
    let d = decide(&rollout(daemon, Vec::new()), 0.0);
    assert_eq!(d.placement, Placement::ServiceOwn, "none for DAEMON");
}

#[test]
fn a_daemon_runs_one_task_per_eligible_instance() {
    let mut svc = service("agent", 7);
    svc.scheduling = SchedulingStrategy::Daemon;
    let mut here = running("arn/t1", "d1");
    here.host = "i1".into();
    let mut i = input(
        svc,
        deployments(&[("d1", "agent:1", InProgress)]),
        vec![here],
    );
    i.eligible = vec!["i1".into(), "i2".into(), "i3".into()];
    let d = decide(&i, 0.0);
    assert_eq!(d.desired_count, Some(3), "desired follows the instances");
    assert_eq!(d.start, Start::OnInstances(vec!["i2".into(), "i3".into()]));
    assert!(d.stop.is_empty() && !d.steady);
}

#[test]
fn a_draining_daemon_stops_everything_and_keeps_its_desired_count() {
    let mut svc = service("agent", 2);
    svc.scheduling = SchedulingStrategy::Daemon;
    svc.status = ServiceStatus::Draining;
    let mut i = input(
        svc,
        deployments(&[("d1", "agent:1", Completed)]),
        vec![running("arn/t1", "d1")],
    );
    i.eligible = vec!["i1".into()];
    let d = decide(&i, 0.0);
    assert_eq!(d.desired_count, None);
    assert_eq!(d.start, Start::OnInstances(Vec::new()));
    assert_eq!(d.stop.len(), 1);
    assert_eq!(
        d.stop[0].reason,
        "Scaling activity initiated by (deployment d1)"
    );
}

#[test]
fn a_daemon_retires_deployments_with_nothing_left() {
    let mut svc = service("agent", 1);
    svc.scheduling = SchedulingStrategy::Daemon;
    let mut i = input(
        svc,
        deployments(&[("d2", "agent:2", InProgress), ("d1", "agent:1", Completed)]),
        vec![running("arn/t2", "d2"), failed("arn/t1", "d1", 0.0)],
    );
    i.eligible = vec!["i1".into()];
    let d = decide(&i, 0.0);
    assert_eq!(d.retire, ["d1"]);
    assert!(d.steady);
}

#[test]
fn nothing_starts_without_a_deployment() {
    let mut svc = service("agent", 1);
    svc.scheduling = SchedulingStrategy::Daemon;
    let mut i = input(svc, Vec::new(), Vec::new());
    i.eligible = vec!["i1".into()];
    let d = decide(&i, 0.0);
    assert_eq!(d.start.count(), 0);
    assert!(!d.acts());
}

#[test]
fn phases_follow_last_then_desired_status() {
    let phase = |last: Option<&str>, desired: Option<&str>| {
        let mut t = running("arn/t", "d");
        t.last_status = last.map(Into::into);
        t.desired_status = desired.map(Into::into);
        t.phase()
    };
    use crate::service::Phase;
    assert_eq!(phase(Some("STOPPED"), Some("RUNNING")), Phase::Stopped);
    assert_eq!(phase(Some("RUNNING"), Some("STOPPED")), Phase::Stopping);
    assert_eq!(phase(Some("PENDING"), Some("STOPPED")), Phase::Stopping);
    assert_eq!(phase(Some("RUNNING"), Some("RUNNING")), Phase::Running);
    assert_eq!(phase(Some("RUNNING"), None), Phase::Running);
    assert_eq!(phase(Some("PROVISIONING"), Some("RUNNING")), Phase::Pending);
    assert_eq!(
        phase(Some("DEPROVISIONING"), Some("RUNNING")),
        Phase::Pending
    );
    assert_eq!(phase(None, None), Phase::Pending);
}

#[test]
fn statuses_parse_as_the_record_spells_them() {
    assert_eq!(
        ServiceStatus::parse(Some("DRAINING")),
        ServiceStatus::Draining
    );
    assert_eq!(ServiceStatus::parse(Some("ACTIVE")), ServiceStatus::Active);
    assert_eq!(ServiceStatus::parse(None), ServiceStatus::Active);
    assert_eq!(
        SchedulingStrategy::parse(Some("DAEMON")),
        SchedulingStrategy::Daemon
    );
    assert_eq!(SchedulingStrategy::parse(None), SchedulingStrategy::Replica);
    for r in [InProgress, Completed, Failed] {
        assert_eq!(RolloutState::parse(r.as_str()), Some(r));
    }
    for d in [DeploymentStatus::Primary, DeploymentStatus::Active] {
        assert_eq!(DeploymentStatus::parse(d.as_str()), Some(d));
    }
    assert_eq!(RolloutState::parse("in_progress"), None);
}
