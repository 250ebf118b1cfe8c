use super::super::fixtures::*;
use super::super::*;
use RolloutState::{Completed, InProgress};

fn decision(deployments: Vec<DeploymentState>) -> Decision {
    Decision {
        deployments,
        task_definition: None,
        desired_count: None,
        start: Start::Replicas(0),
        placement: Placement::ServiceOwn,
        stop: Vec::new(),
        retire: Vec::new(),
        steady: false,
        events: Vec::new(),
    }
}

fn two() -> Vec<DeploymentState> {
    deployments(&[("new", "web:2", InProgress), ("old", "web:1", Completed)])
}

#[test]
fn counts_tasks_that_should_run_by_their_last_status() {
    let tasks = vec![
        running("a", "new"),
        task("b", "new", "PENDING", "RUNNING"),
        task("c", "new", "PROVISIONING", "RUNNING"),
        task("d", "new", "RUNNING", "STOPPED"),
        running("e", "old"),
        task("f", "old", "PENDING", "RUNNING"),
        failed("g", "new", 0.0),
    ];
    let r = record(
        &service("web", 4),
        &decision(two()),
        &Outcome::default(),
        &tasks,
        0.0,
    );
    let counts: Vec<_> = r
        .deployments
        .iter()
        .map(|d| (d.running_count, d.pending_count, d.desired_count))
        .collect();
    assert_eq!(
        counts,
        [(Some(1), Some(1), Some(4)), (Some(1), Some(1), Some(1)),],
        "the PRIMARY's desired count is the service's"
    );
    assert_eq!((r.running_count, r.pending_count), (2, 2));
}

#[test]
fn retired_deployments_leave_and_a_daemons_desired_count_is_the_new_one() {
    let mut d = decision(two());
    d.retire = vec!["old".into()];
    d.desired_count = Some(5);
    let r = record(&service("web", 4), &d, &Outcome::default(), &[], 0.0);
    assert_eq!(r.deployments.len(), 1);
    assert_eq!(r.deployments[0].id, "new");
    assert_eq!(r.deployments[0].desired_count, Some(5));
}

#[test]
fn events_of_the_outcome_follow_the_decisions_in_order() {
    let mut d = decision(two());
    d.events = vec!["(service web) earlier.".into()];
    let outcome = Outcome {
        stopped: vec!["arn:aws:ecs:r:1:task/c/s1".into(), "s2".into()],
        started: vec!["arn:aws:ecs:r:1:task/c/n1".into()],
        unplaced: Some(why_unplaced(Some(("RESOURCE:MEMORY", "arn/ci")))),
    };
    let r = record(&service("web", 1), &d, &outcome, &[], 0.0);
    assert_eq!(
        r.events,
        [
            "(service web) earlier.",
            "(service web) has stopped 2 running tasks: (task s1) (task s2).",
            "(service web) has started 1 tasks: (task n1).",
            "(service web) was unable to place a task because no container instance met all of its requirements. Reason: RESOURCE:MEMORY on container instance arn/ci.",
        ]
    );
    assert_eq!(
        why_unplaced(None),
        "no container instance met all of its requirements"
    );
}

#[test]
fn a_steady_service_completes_its_primary_once() {
    let mut d = decision(two());
    d.steady = true;
    d.retire = vec!["old".into()];
    let r = record(&service("web", 1), &d, &Outcome::default(), &[], 42.0);
    let p = &r.deployments[0];
    assert_eq!(p.rollout_state, Some(Completed));
    assert_eq!(
        p.rollout_state_reason.as_deref(),
        Some("ECS deployment new completed.")
    );
    assert_eq!(p.updated_at, Some(42.0));
    assert_eq!(
        r.events,
        [
            "(service web) deployment new deployment completed.",
            "(service web) has reached a steady state.",
        ]
    );
    let mut again = decision(r.deployments.clone());
    again.steady = true;
    let r2 = record(&service("web", 1), &again, &Outcome::default(), &[], 50.0);
    assert_eq!(r2.deployments[0].updated_at, Some(42.0), "unchanged");
    assert_eq!(r2.events, ["(service web) has reached a steady state."]);
}

#[test]
fn a_draining_service_is_inactive_once_every_task_stopped() {
    let mut draining = service("web", 0);
    draining.status = ServiceStatus::Draining;
    let d = decision(two());
    let o = Outcome::default();
    let stopped = [failed("a", "new", 0.0)];
    assert!(record(&draining, &d, &o, &stopped, 0.0).inactive);
    assert!(
        record(&draining, &d, &o, &[], 0.0).inactive,
        "no task at all"
    );
    let stopping = [task("b", "new", "RUNNING", "STOPPED")];
    assert!(!record(&draining, &d, &o, &stopping, 0.0).inactive);
    assert!(!record(&service("web", 0), &d, &o, &stopped, 0.0).inactive);
}

type Event = (String, f64);

fn push(events: &mut Option<Vec<Event>>, messages: &[&str], now: f64) {
    push_events(
        events,
        messages.iter().map(|m| m.to_string()),
        |e: &Event| Some(e.0.as_str()),
        |m| (m, now),
    );
}

#[test]
fn a_repeat_of_the_newest_event_is_not_written() {
    let mut events = None;
    push(&mut events, &[], 1.0);
    assert_eq!(events, None, "no message, no list");
    push(&mut events, &["a", "a", "b"], 1.0);
    push(&mut events, &["b", "a"], 2.0);
    assert_eq!(
        events.unwrap(),
        [("a".to_string(), 2.0), ("b".into(), 1.0), ("a".into(), 1.0)],
        "newest first"
    );
}

#[test]
fn only_the_newest_hundred_events_are_kept() {
    let mut events = Some(Vec::new());
    let messages: Vec<String> = (0..150).map(|i| format!("m{i}")).collect();
    let refs: Vec<&str> = messages.iter().map(String::as_str).collect();
    push(&mut events, &refs, 0.0);
    let events = events.unwrap();
    assert_eq!(events.len(), MAX_EVENTS);
    assert_eq!(events[0].0, "m149");
    assert_eq!(events[99].0, "m50");
}

#[test]
fn task_ids_end_the_arn() {
    assert_eq!(task_id("arn:aws:ecs:us-east-1:1:task/default/abc"), "abc");
    assert_eq!(task_id("abc"), "abc");
}
