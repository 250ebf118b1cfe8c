//! A tick-by-tick simulation of the control plane around [`decide()`] and [`record()`], with `now`
//! advancing: each tick decides, applies (stops, then starts), records and writes events as
//! the control plane does; between ticks, stopping tasks stop, and pending tasks run, or
//! fail if their task definition is broken.

use super::fixtures::*;
use super::*;
use crate::service::{maximum_live, minimum_healthy, restart_backoff, Phase};
use proptest::prelude::*;
use std::collections::HashMap;
use RolloutState::{Completed, Failed, InProgress};

const HOSTS: [&str; 3] = ["i1", "i2", "i3"];
const GOOD: &str = "web:1";
const BAD: &str = "web:2";

type Event = (String, f64);

struct Sim {
    service: ServiceState,
    task_definition: String,
    deployments: Vec<DeploymentState>,
    tasks: Vec<ServiceTask>,
    /// Task ARN → its task definition.
    defs: HashMap<String, String>,
    events: Option<Vec<Event>>,
    now: f64,
    /// Every start: when, and the task's ARN.
    starts: Vec<(f64, String)>,
}

impl Sim {
    /// A service running `desired` tasks of `old` (COMPLETED, [`GOOD`]) rolling out `new`
    /// with `td`.
    fn rollout(service: ServiceState, td: &str) -> Sim {
        let mut sim = Sim {
            task_definition: td.into(),
            deployments: deployments(&[("new", td, InProgress), ("old", GOOD, Completed)]),
            tasks: Vec::new(),
            defs: HashMap::new(),
            events: None,
            now: 1000.0,
            starts: Vec::new(),
            service,
        };
        for i in 0..sim.service.desired_count {
            let arn = format!("arn:aws:ecs:r:1:task/c/old{i}");
            let mut t = running(&arn, "old");
            t.host = HOSTS[i as usize % HOSTS.len()].into();
            sim.defs.insert(arn, GOOD.into());
            sim.tasks.push(t);
        }
        sim
    }

    fn tick(&mut self) -> Decision {
        let input = Input {
            service: self.service.clone(),
            deployments: self.deployments.clone(),
            tasks: self.tasks.clone(),
            eligible: HOSTS.iter().map(|h| h.to_string()).collect(),
            fresh_deployment_id: format!("rollback{}", self.now),
        };
        let d = decide(&input, self.now);
        let outcome = self.apply(&d);
        let r = record(&self.service, &d, &outcome, &self.tasks, self.now);
        self.deployments = r.deployments;
        let now = self.now;
        push_events(
            &mut self.events,
            r.events,
            |e: &Event| Some(e.0.as_str()),
            |m| (m, now),
        );
        assert!(!r.inactive, "an ACTIVE service stays ACTIVE");
        d
    }

    fn apply(&mut self, d: &Decision) -> Outcome {
        if let Some(td) = &d.task_definition {
            self.task_definition = td.clone();
        }
        if let Some(n) = d.desired_count {
            self.service.desired_count = n;
        }
        let mut out = Outcome::default();
        for s in &d.stop {
            let Some(t) = self.tasks.iter_mut().find(|t| t.arn == s.arn) else {
                continue;
            };
            if t.desired_status.as_deref() != Some("STOPPED") {
                t.desired_status = Some("STOPPED".into());
                t.stop_code = Some(STOP_CODE.into());
            }
            out.stopped.push(s.arn.clone());
        }
        let Some(p) = d.deployments.first() else {
            return out;
        };
        let hosts: Vec<String> = match &d.start {
            Start::Replicas(n) => (0..*n as usize)
                .map(|i| HOSTS[(self.starts.len() + i) % HOSTS.len()].into())
                .collect(),
            Start::OnInstances(on) => on.clone(),
        };
        for host in hosts {
            let arn = format!("arn:aws:ecs:r:1:task/c/t{}", self.starts.len());
            let mut t = task(&arn, &p.id, "PENDING", "RUNNING");
            t.host = host;
            t.started_at = None;
            let td = p.task_definition.clone().unwrap_or_default();
            self.defs.insert(arn.clone(), td);
            self.tasks.push(t);
            self.starts.push((self.now, arn.clone()));
            out.started.push(arn);
        }
        out
    }

    /// `dt` seconds pass: stopping tasks stop, pending ones run, or fail if broken.
    fn advance(&mut self, dt: f64) {
        self.now += dt;
        for t in &mut self.tasks {
            match t.phase() {
                Phase::Stopping => {
                    t.last_status = Some("STOPPED".into());
                    t.stopped_at = Some(self.now);
                }
                Phase::Pending if self.defs[&t.arn] == BAD => {
                    t.last_status = Some("STOPPED".into());
                    t.desired_status = Some("STOPPED".into());
                    t.stop_code = Some("EssentialContainerExited".into());
                    t.stopped_at = Some(self.now);
                }
                Phase::Pending => {
                    t.last_status = Some("RUNNING".into());
                    t.started_at = Some(self.now);
                }
                Phase::Running | Phase::Stopped => {}
            }
        }
    }

    /// Oldest first.
    fn messages(&self) -> Vec<&str> {
        let events = self.events.iter().flatten();
        events.rev().map(|e| e.0.as_str()).collect()
    }

    fn deployment(&self, id: &str) -> Option<&DeploymentState> {
        self.deployments.iter().find(|d| d.id == id)
    }

    fn failures_of(&self, id: &str) -> u32 {
        self.tasks.iter().filter(|t| t.failed_in(id)).count() as u32
    }

    fn healthy(&self) -> u32 {
        let views = self.tasks.iter().map(|t| t.view(self.now));
        views.filter(|t| t.counts_healthy()).count() as u32
    }

    fn live(&self) -> Vec<&ServiceTask> {
        let live = |t: &&ServiceTask| matches!(t.phase(), Phase::Pending | Phase::Running);
        self.tasks.iter().filter(live).collect()
    }

    /// Ticks until steady (or the PRIMARY is FAILED: nothing more happens), checking the floor on healthy tasks after stops and the ceiling on
    /// live ones after starts, and that the breaker trips exactly when the failures of the
    /// rolling-out deployment reach its threshold. Returns the tick it tripped at, if it did.
    fn run(&mut self, ticks: u32) -> Result<Option<u32>, String> {
        let desired = self.service.desired_count as u32;
        let min = self.service.minimum_healthy_percent.unwrap_or(100) as u32;
        let max = self.service.maximum_percent.unwrap_or(200) as u32;
        let floor = minimum_healthy(desired, min);
        let ceiling = maximum_live(desired, max).max(desired);
        let cb = self.service.circuit_breaker.clone();
        let threshold = crate::service::circuit_breaker_threshold(
            desired,
            cb.threshold_kind.as_deref(),
            cb.threshold_value,
        );
        let mut tripped = None;
        for tick in 0..ticks {
            let failures = self.failures_of("new");
            let was = self.deployment("new").and_then(|d| d.rollout_state);
            let d = self.tick();
            let is = d.deployments.iter().find(|d| d.id == "new");
            let is = is.and_then(|d| d.rollout_state);
            let should_trip = cb.enable && was == Some(InProgress) && failures >= threshold;
            if should_trip != (was != is && is == Some(Failed)) {
                return Err(format!(
                    "tick {tick}: {failures} failures, threshold {threshold}: {was:?} → {is:?}"
                ));
            }
            if should_trip {
                tripped = Some(tick);
            }
            let healthy = self.healthy();
            if healthy < floor {
                return Err(format!("tick {tick}: {healthy} healthy, floor {floor}"));
            }
            let live = self.live().len() as u32;
            if live > ceiling {
                return Err(format!("tick {tick}: {live} live, ceiling {ceiling}"));
            }
            let failed = self.deployments.first().and_then(|p| p.rollout_state) == Some(Failed);
            if d.steady || failed {
                return Ok(tripped);
            }
            self.advance(1.0);
        }
        Err(format!("never steady: {:?}", self.messages()))
    }

    /// Steady on `td`: one COMPLETED deployment, `desired` running tasks, all of it and `td`.
    fn assert_steady_on(&self, td: &str) {
        assert_eq!(self.deployments.len(), 1, "{:?}", self.deployments);
        let p = &self.deployments[0];
        assert_eq!(p.rollout_state, Some(Completed));
        assert_eq!(p.task_definition.as_deref(), Some(td));
        assert_eq!(self.task_definition, td);
        let live = self.live();
        assert_eq!(live.len() as i32, self.service.desired_count);
        for t in live {
            assert_eq!(
                (t.deployment.as_str(), self.defs[&t.arn].as_str()),
                (p.id.as_str(), td)
            );
        }
        let last = self.messages().pop();
        assert_eq!(last, Some("(service web) has reached a steady state."));
    }
}

#[test]
fn a_broken_rollout_trips_the_breaker_and_rolls_back_to_steady() {
    let mut svc = service("web", 1);
    svc.circuit_breaker = breaker(true);
    let mut sim = Sim::rollout(svc, BAD);
    let tripped = sim.run(100).unwrap().expect("tripped");
    // One task at a time fails; the threshold is 3 (50% of 1, at least 3).
    let new = sim.tasks.iter().filter(|t| t.deployment == "new").count();
    assert_eq!(new, 3, "the breaker trips at the third failure");
    let rollback = format!("rollback{}", 1000.0 + f64::from(tripped));
    let m = sim.messages();
    let at = m
        .iter()
        .position(|e| e.contains("deployment failed"))
        .unwrap();
    assert_eq!(
        m[at..at + 2],
        [
            "(service web) (deployment new) deployment failed: tasks failed to start.",
            "(service web) rolling back to deployment old.",
        ]
    );
    let completed = format!("(service web) deployment {rollback} deployment completed.");
    assert!(m.contains(&completed.as_str()), "{m:?}");
    sim.assert_steady_on(GOOD);
    assert_eq!(sim.deployments[0].id, rollback);
    assert_eq!(
        sim.deployments[0].rollout_state_reason,
        Some(format!("ECS deployment {rollback} completed."))
    );
}

#[test]
fn without_rollback_a_failed_rollout_stays_failed_and_starts_nothing() {
    let mut svc = service("web", 2);
    svc.circuit_breaker = breaker(false);
    let mut sim = Sim::rollout(svc, BAD);
    let mut tripped_at = None;
    for _ in 0..200 {
        let before = sim.deployment("new").and_then(|d| d.rollout_state);
        let d = sim.tick();
        if before == Some(InProgress) && d.deployments[0].rollout_state == Some(Failed) {
            tripped_at = Some(sim.now);
        }
        assert!(!d.steady);
        sim.advance(1.0);
    }
    let tripped_at = tripped_at.expect("tripped");
    assert!(sim.starts.iter().all(|(at, _)| *at < tripped_at));
    let new = sim.deployment("new").unwrap();
    assert_eq!(new.rollout_state, Some(Failed));
    assert_eq!(
        new.failed_tasks,
        Some(4),
        "two starts of two: 2, then 4 ≥ 3"
    );
    assert_eq!(sim.task_definition, BAD, "no rollback");
    let failed: Vec<&str> = sim
        .messages()
        .into_iter()
        .filter(|m| m.contains("deployment failed"))
        .collect();
    assert_eq!(failed.len(), 1);
    let old_running = sim.live().iter().filter(|t| t.deployment == "old").count();
    assert_eq!(old_running, 2, "the floor keeps the old tasks");
}

/// A deployment whose tasks always fail, with no breaker: (when each task failed, when the
/// next one started), `dt` seconds a tick.
fn restarts(dt: f64, ticks: u32) -> (Sim, Vec<(f64, f64)>) {
    let mut sim = Sim::rollout(service("web", 1), BAD);
    sim.deployments.truncate(1);
    sim.tasks.clear();
    for _ in 0..ticks {
        sim.tick();
        sim.advance(dt);
    }
    let mut failed: Vec<f64> = sim.tasks.iter().filter_map(|t| t.stopped_at).collect();
    failed.sort_by(f64::total_cmp);
    let gaps = failed
        .iter()
        .zip(sim.starts.iter().skip(1))
        .map(|(f, (s, _))| (*f, *s))
        .collect();
    (sim, gaps)
}

#[test]
fn restart_back_off_doubles_from_five_seconds() {
    let (sim, restarts) = restarts(1.0, 200);
    let waits: Vec<f64> = restarts.iter().map(|(f, s)| s - f).collect();
    assert_eq!(waits[..7], [0.0, 0.0, 5.0, 10.0, 20.0, 40.0, 80.0]);
    let m = sim.messages();
    let unable = "(service web) is unable to consistently start tasks successfully. For more information, see the Troubleshooting section of the Amazon ECS Developer Guide.";
    assert!(m.contains(&unable));
    assert!(
        m.windows(2).all(|w| w[0] != w[1]),
        "no repeat of the newest"
    );
}

proptest! {
    /// Whatever the tick, no task starts before the back-off deadline of the failures so far,
    /// and one starts on the first tick at or after it.
    #[test]
    fn no_task_starts_before_its_back_off_deadline(dt in 0.1f64..4.0) {
        let (_, restarts) = restarts(dt, 600);
        prop_assert!(restarts.len() >= 5);
        for (k, (failed, started)) in restarts.iter().enumerate() {
            let deadline = failed + restart_backoff(k as u32 + 1);
            prop_assert!(*started >= deadline, "failure {}: {} < {}", k + 1, started, deadline);
            prop_assert!(*started < deadline + dt + 1e-9, "failure {}: {} late", k + 1, started);
        }
    }

    /// Rolling out a good task definition reaches a steady state on it; rolling out a broken
    /// one with the breaker and rollback trips it and reaches a steady state on the old one;
    /// neither goes below the floor of healthy tasks nor above the ceiling of live ones.
    #[test]
    fn every_rollout_stays_between_floor_and_ceiling(
        desired in 0i32..12,
        min in 0i32..=100,
        extra in 0i32..=100,
        broken: bool,
    ) {
        let max = (min + extra).clamp(100, 200);
        let (d, mn, mx) = (desired as u32, min as u32, max as u32);
        prop_assume!(d == 0 || minimum_healthy(d, mn) < maximum_live(d, mx).max(d));
        let mut svc = service("web", desired);
        svc.minimum_healthy_percent = Some(min);
        svc.maximum_percent = Some(max);
        svc.circuit_breaker = breaker(true);
        let mut sim = Sim::rollout(svc, if broken { BAD } else { GOOD });
        let tripped = sim.run(300);
        prop_assert!(tripped.is_ok(), "{:?}", tripped);
        let tripped = tripped.unwrap_or_default();
        prop_assert_eq!(tripped.is_some(), broken && desired > 0);
        if sim.deployments[0].rollout_state == Some(Failed) {
            // With a floor of 0 the old tasks may all go before the breaker trips: the old
            // deployment retires with them, and there is nothing left to roll back to.
            prop_assert!(sim.deployment("old").is_none());
            let last = sim.messages().pop();
            prop_assert_eq!(last, Some("(service web) has no completed deployment to roll back to."));
            prop_assert_eq!(minimum_healthy(d, mn), 0);
        } else {
            // A service of none has nothing to fail: its rollout completes at once.
            sim.assert_steady_on(if broken && desired == 0 { BAD } else { GOOD });
        }
    }
}
