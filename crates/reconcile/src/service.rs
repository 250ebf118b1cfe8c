//! The REPLICA service reconciler: keep `desired` tasks of the primary deployment running,
//! replace tasks that stop or turn unhealthy, and roll from older deployments to the primary
//! one without going below `minimumHealthyPercent` (rounded up) of `desired` healthy tasks nor
//! above `maximumPercent` (rounded down) of it in live tasks, as ECS does. Protected tasks
//! (task scale-in protection) are left running by scale-in and by deployments, which wait
//! for their protection to end.

/// One deployment of a service; the first of [`Service::deployments`] is the PRIMARY.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployment {
    pub id: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    pub desired: u32,
    pub minimum_healthy_percent: u32,
    pub maximum_percent: u32,
    /// Seconds after a task starts during which a failing health check is not acted on.
    pub health_check_grace_period: f64,
    /// PRIMARY first, then older ones.
    pub deployments: Vec<Deployment>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Placed, not running yet.
    Pending,
    Running,
    /// Asked to stop (desiredStatus STOPPED) but not stopped yet.
    Stopping,
    Stopped,
}

/// A task of the service as the reconciler sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    pub arn: String,
    pub deployment: String,
    pub phase: Phase,
    /// Health checks pass (or there are none).
    pub healthy: bool,
    /// A health check says UNHEALTHY.
    pub unhealthy: bool,
    /// Seconds since the epoch, when it started running.
    pub started_at: Option<f64>,
    /// Its instance is DRAINING, or its agent has been gone too long: it is replaced like a
    /// task of an older deployment (a healthy one only as the floor allows).
    pub displaced: bool,
    /// The container instance it runs on: scaling in takes from the instance holding the
    /// most, so the tasks left stay spread as they were placed.
    pub host: String,
    /// Scale-in protection is on (UpdateTaskProtection, not expired): neither scaling in nor a
    /// deployment stops it (a failed health check still does), as ECS does.
    pub protected: bool,
}

impl Task {
    pub(crate) fn live(&self) -> bool {
        matches!(self.phase, Phase::Pending | Phase::Running)
    }

    pub(crate) fn counts_healthy(&self) -> bool {
        self.phase == Phase::Running && self.healthy && !self.unhealthy
    }
}

/// What to do now.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Actions {
    /// How many tasks of the PRIMARY deployment to start.
    pub start: u32,
    /// Tasks to stop, with why.
    pub stop: Vec<(String, StopWhy)>,
    /// Older deployments with no task left: they become INACTIVE.
    pub retire: Vec<String>,
    /// The service is where it should be: only the PRIMARY, `desired` healthy tasks.
    pub steady: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopWhy {
    /// Health checks failed after the grace period.
    Unhealthy,
    /// More tasks than desired.
    ScaleDown,
    /// Replaced by the PRIMARY deployment.
    Replaced,
}

/// `ceil(desired * percent / 100)`.
pub fn minimum_healthy(desired: u32, percent: u32) -> u32 {
    (u64::from(desired) * u64::from(percent)).div_ceil(100) as u32
}

/// `floor(desired * percent / 100)`.
pub fn maximum_live(desired: u32, percent: u32) -> u32 {
    (u64::from(desired) * u64::from(percent) / 100) as u32
}

pub fn reconcile(s: &Service, tasks: &[Task], now: f64) -> Actions {
    let mut out = Actions::default();
    let Some(primary) = s.deployments.first().map(|d| d.id.clone()) else {
        return out;
    };
    let min_healthy = minimum_healthy(s.desired, s.minimum_healthy_percent);
    // The ceiling never keeps the service below `desired` (maximumPercent is at least 100).
    let max_live = maximum_live(s.desired, s.maximum_percent).max(s.desired);
    let mut stopping: Vec<&str> = Vec::new();

    // 1. Tasks whose health checks failed after the grace period are replaced, whatever the
    //    floor: an unhealthy task does not count toward it anyway.
    for t in tasks.iter().filter(|t| t.live() && t.unhealthy) {
        let in_grace = t
            .started_at
            .is_some_and(|at| now - at < s.health_check_grace_period);
        if !in_grace {
            out.stop.push((t.arn.clone(), StopWhy::Unhealthy));
            stopping.push(&t.arn);
        }
    }
    let live = |t: &&Task| t.live() && !stopping.contains(&t.arn.as_str());

    // 2. Too many PRIMARY tasks: stop the extra, not-yet-running ones first, then healthy
    //    ones from whichever instance holds the most of them, so the rest stays spread.
    let primary_live: Vec<&Task> = tasks
        .iter()
        .filter(live)
        .filter(|t| t.deployment == primary && !t.displaced)
        .collect();
    let excess = primary_live.len().saturating_sub(s.desired as usize);
    let mut keep = primary_live.clone();
    for _ in 0..excess {
        let on_host = |h: &str| keep.iter().filter(|t| t.host == h).count();
        // A protected task is never the one taken: with too few unprotected ones the service
        // stays above its desired count until protection ends.
        let Some(at) = (0..keep.len())
            .filter(|&i| !keep[i].protected)
            .min_by_key(|&i| {
                let t = keep[i];
                (
                    t.phase == Phase::Running,
                    t.counts_healthy(),
                    std::cmp::Reverse(on_host(&t.host)),
                    t.arn.clone(),
                )
            })
        else {
            break;
        };
        let t = keep.remove(at);
        out.stop.push((t.arn.clone(), StopWhy::ScaleDown));
        stopping.push(&t.arn);
    }
    let primary_count = keep.len();

    // 3. Older deployments' tasks, and displaced ones, go while enough healthy tasks remain.
    let healthy_total = tasks
        .iter()
        .filter(|t| t.counts_healthy() && !stopping.contains(&t.arn.as_str()))
        .count() as u32;
    let mut can_stop_healthy = healthy_total.saturating_sub(min_healthy);
    let mut old: Vec<&Task> = tasks
        .iter()
        .filter(|t| {
            // Protection holds against scale-in and deployments, not against losing the host.
            t.live()
                && (t.deployment != primary || t.displaced)
                && (!t.protected || t.displaced)
                && !stopping.contains(&t.arn.as_str())
        })
        .collect();
    // Not-running or unhealthy old tasks first: stopping them costs no healthy capacity.
    old.sort_by_key(|t| (t.counts_healthy(), t.arn.clone()));
    for t in old {
        if !t.counts_healthy() {
            out.stop.push((t.arn.clone(), StopWhy::Replaced));
            stopping.push(&t.arn);
        } else if can_stop_healthy > 0 {
            can_stop_healthy -= 1;
            out.stop.push((t.arn.clone(), StopWhy::Replaced));
            stopping.push(&t.arn);
        }
    }

    // 4. Start PRIMARY tasks up to desired, within the ceiling on live tasks.
    let live_after = tasks
        .iter()
        .filter(|t| t.live() && !stopping.contains(&t.arn.as_str()))
        .count() as u32;
    let need = s.desired.saturating_sub(primary_count as u32);
    out.start = need.min(max_live.saturating_sub(live_after));

    // 5. Old deployments with nothing left retire; steady when only the PRIMARY remains with
    //    `desired` healthy tasks and nothing to do.
    out.retire = retired(&s.deployments, tasks);
    let primary_healthy = tasks
        .iter()
        .filter(|t| t.deployment == primary && t.counts_healthy())
        .count() as u32;
    out.steady = out.start == 0
        && out.stop.is_empty()
        && s.deployments.len() - out.retire.len() == 1
        && primary_healthy == s.desired
        && !tasks.iter().any(|t| t.phase == Phase::Stopping);
    out
}

/// The older deployments (all but the first, the PRIMARY) with no task left that has not
/// stopped: they become INACTIVE and leave the service.
pub fn retired(deployments: &[Deployment], tasks: &[Task]) -> Vec<String> {
    deployments
        .iter()
        .skip(1)
        .filter(|d| {
            !tasks
                .iter()
                .any(|t| t.deployment == d.id && t.phase != Phase::Stopped)
        })
        .map(|d| d.id.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn svc(desired: u32, min: u32, max: u32, deployments: &[&str]) -> Service {
        Service {
            desired,
            minimum_healthy_percent: min,
            maximum_percent: max,
            health_check_grace_period: 0.0,
            deployments: deployments
                .iter()
                .map(|d| Deployment { id: d.to_string() })
                .collect(),
        }
    }

    fn running(arn: &str, dep: &str) -> Task {
        Task {
            arn: arn.into(),
            deployment: dep.into(),
            phase: Phase::Running,
            healthy: true,
            unhealthy: false,
            started_at: Some(0.0),
            displaced: false,
            host: "h".into(),
            protected: false,
        }
    }

    #[test]
    fn scaling_in_takes_from_the_fullest_instance() {
        let s = svc(2, 100, 200, &["d1"]);
        let mut ts = Vec::new();
        for (arn, host) in [
            ("a1", "A"),
            ("a2", "A"),
            ("a3", "A"),
            ("b1", "B"),
            ("b2", "B"),
        ] {
            let mut t = running(arn, "d1");
            t.host = host.into();
            ts.push(t);
        }
        let out = reconcile(&s, &ts, 0.0);
        let stopped: Vec<&str> = out.stop.iter().map(|(a, _)| a.as_str()).collect();
        let left: Vec<&Task> = ts
            .iter()
            .filter(|t| !stopped.contains(&t.arn.as_str()))
            .collect();
        assert_eq!(left.len(), 2, "{stopped:?}");
        assert_ne!(
            left[0].host, left[1].host,
            "one left on each instance: {stopped:?}"
        );
    }

    #[test]
    fn tasks_on_a_draining_host_are_replaced_before_they_stop() {
        let s = svc(2, 100, 200, &["d1"]);
        let mut a = running("a", "d1");
        a.displaced = true;
        let ts = vec![a.clone(), running("b", "d1")];
        let first = reconcile(&s, &ts, 0.0);
        assert_eq!(first.start, 1, "a replacement first");
        assert!(
            first.stop.is_empty(),
            "the floor of 2 healthy holds a in place"
        );
        let ts = vec![a, running("b", "d1"), running("c", "d1")];
        let second = reconcile(&s, &ts, 0.0);
        assert_eq!(second.stop, [("a".to_string(), StopWhy::Replaced)]);
        assert_eq!(second.start, 0);
    }

    #[test]
    fn starts_what_is_missing_and_is_steady_when_all_run() {
        let s = svc(3, 100, 200, &["d1"]);
        assert_eq!(reconcile(&s, &[], 0.0).start, 3);
        let ts = vec![running("a", "d1"), running("b", "d1")];
        assert_eq!(
            reconcile(&s, &ts, 0.0).start,
            1,
            "a stopped task is replaced"
        );
        let ts = vec![running("a", "d1"), running("b", "d1"), running("c", "d1")];
        let a = reconcile(&s, &ts, 0.0);
        assert!(a.steady && a.start == 0 && a.stop.is_empty());
    }

    #[test]
    fn scaling_down_stops_pending_tasks_first() {
        let s = svc(1, 100, 200, &["d1"]);
        let mut p = running("p", "d1");
        p.phase = Phase::Pending;
        let a = reconcile(&s, &[running("a", "d1"), p], 0.0);
        assert_eq!(a.stop, [("p".to_string(), StopWhy::ScaleDown)]);
    }

    #[test]
    fn unhealthy_tasks_are_replaced_after_the_grace_period() {
        let mut s = svc(1, 100, 200, &["d1"]);
        s.health_check_grace_period = 60.0;
        let mut t = running("a", "d1");
        t.unhealthy = true;
        t.healthy = false;
        t.started_at = Some(100.0);
        assert!(
            reconcile(&s, &[t.clone()], 130.0).stop.is_empty(),
            "still in grace"
        );
        let a = reconcile(&s, &[t], 161.0);
        assert_eq!(a.stop, [("a".to_string(), StopWhy::Unhealthy)]);
        assert_eq!(a.start, 1);
    }

    #[test]
    fn rounding_follows_ecs() {
        assert_eq!(minimum_healthy(3, 50), 2, "rounded up");
        assert_eq!(maximum_live(3, 150), 4, "rounded down");
    }

    /// A tick-by-tick simulation of a rolling update: started tasks run (healthy) the next
    /// tick, stopped ones are gone the next tick.
    fn roll(desired: u32, min: u32, max: u32) -> Result<u32, String> {
        let mut s = svc(desired, min, max, &["new", "old"]);
        let mut tasks: Vec<Task> = (0..desired)
            .map(|i| running(&format!("old{i}"), "old"))
            .collect();
        let floor = minimum_healthy(desired, min);
        let ceiling = maximum_live(desired, max).max(desired);
        let mut n = 0;
        for tick in 0..100 {
            let a = reconcile(&s, &tasks, tick as f64);
            if a.steady {
                return Ok(tick);
            }
            for (arn, _) in &a.stop {
                if let Some(t) = tasks.iter_mut().find(|t| &t.arn == arn) {
                    t.phase = Phase::Stopping;
                }
            }
            s.deployments.retain(|d| !a.retire.contains(&d.id));
            let healthy = tasks.iter().filter(|t| t.counts_healthy()).count() as u32;
            if healthy < floor {
                return Err(format!("tick {tick}: {healthy} healthy, floor {floor}"));
            }
            for _ in 0..a.start {
                n += 1;
                let mut t = running(&format!("new{n}"), "new");
                t.phase = Phase::Pending;
                tasks.push(t);
            }
            let live = tasks.iter().filter(|t| t.live()).count() as u32;
            if live > ceiling {
                return Err(format!("tick {tick}: {live} live, ceiling {ceiling}"));
            }
            // Next tick: pending runs, stopping stops.
            for t in tasks.iter_mut() {
                t.phase = match t.phase {
                    Phase::Pending => Phase::Running,
                    Phase::Stopping => Phase::Stopped,
                    p => p,
                };
            }
            tasks.retain(|t| t.phase != Phase::Stopped);
        }
        Err("never steady".into())
    }

    #[test]
    fn rolling_updates_respect_floor_and_ceiling() {
        assert!(roll(4, 100, 200).unwrap() <= 3);
        assert!(roll(4, 50, 100).unwrap() <= 5);
        assert!(roll(4, 0, 100).is_ok());
    }

    #[test]
    fn scaling_in_leaves_protected_tasks_running() {
        let s = svc(1, 100, 200, &["d1"]);
        let mut ts: Vec<Task> = ["a", "b", "c"].iter().map(|a| running(a, "d1")).collect();
        ts[0].protected = true;
        let out = reconcile(&s, &ts, 0.0);
        let stopped: Vec<&str> = out.stop.iter().map(|(a, _)| a.as_str()).collect();
        assert_eq!(stopped, ["b", "c"], "the unprotected ones go");
        // Two protected, one wanted: the service stays above its count, and is not steady.
        ts[1].protected = true;
        let out = reconcile(&s, &ts, 0.0);
        let stopped: Vec<&str> = out.stop.iter().map(|(a, _)| a.as_str()).collect();
        assert_eq!(stopped, ["c"], "only the unprotected one");
        assert_eq!(out.start, 0);
        let left: Vec<Task> = ts.iter().filter(|t| t.arn != "c").cloned().collect();
        let out = reconcile(&s, &left, 0.0);
        assert!(out.stop.is_empty() && out.start == 0, "{out:?}");
        assert!(
            !out.steady,
            "two running where one is desired is not steady"
        );
    }

    #[test]
    fn a_deployment_waits_for_protected_tasks_but_not_for_unhealthy_ones() {
        let s = svc(2, 100, 200, &["new", "old"]);
        let mut ts = vec![
            running("o1", "old"),
            running("o2", "old"),
            running("n1", "new"),
            running("n2", "new"),
        ];
        ts[0].protected = true;
        let out = reconcile(&s, &ts, 0.0);
        let stopped: Vec<&str> = out.stop.iter().map(|(a, _)| a.as_str()).collect();
        assert_eq!(stopped, ["o2"], "the protected old task stays");
        assert!(out.retire.is_empty(), "the old deployment keeps a task");
        assert!(!out.steady);
        // An unhealthy task is replaced even when protected.
        ts[0].unhealthy = true;
        let out = reconcile(&s, &ts, 0.0);
        assert!(
            out.stop.contains(&("o1".to_string(), StopWhy::Unhealthy)),
            "{out:?}"
        );
    }

    proptest! {
        /// Scaling in or rolling out never stops a protected task whose host is still there.
        #[test]
        fn protected_healthy_tasks_are_never_stopped(
            desired in 0u32..6,
            tasks in proptest::collection::vec((any::<bool>(), any::<bool>(), any::<bool>(), 0usize..3), 0..10),
        ) {
            let s = svc(desired, 50, 200, &["d1", "d0"]);
            let ts: Vec<Task> = tasks
                .iter()
                .enumerate()
                .map(|(i, (old, protected, displaced, host))| {
                    let mut t = running(&format!("t{i}"), if *old { "d0" } else { "d1" });
                    t.protected = *protected;
                    t.displaced = *displaced;
                    t.host = format!("h{host}");
                    t
                })
                .collect();
            let out = reconcile(&s, &ts, 0.0);
            for (arn, why) in &out.stop {
                let t = ts.iter().find(|t| &t.arn == arn).expect("a task of the input");
                prop_assert!(!t.protected || t.displaced, "{arn} is protected and was stopped ({why:?})");
            }
        }

        /// Whatever the counts and percentages, a rolling update finishes without going below
        /// the floor of healthy tasks or above the ceiling of live ones.
        #[test]
        fn every_rollout_stays_between_floor_and_ceiling(desired in 0u32..20, min in 0u32..=100, extra in 0u32..=100) {
            let max = (min + extra).clamp(100, 200);
            // With no room between floor and ceiling no rollout can move (ECS neither).
            prop_assume!(desired == 0 || minimum_healthy(desired, min) < maximum_live(desired, max).max(desired));
            prop_assert!(roll(desired, min, max).is_ok(), "{:?}", roll(desired, min, max));
        }
    }
}

/// How many failed tasks trip the deployment circuit breaker: ECS's `thresholdConfiguration`
/// (`COUNT`, `BOUNDED_PERCENT` — the default, 50 — or `UNBOUNDED_PERCENT`) of the desired count,
/// bounded to 3..=200 for `BOUNDED_PERCENT`.
pub fn circuit_breaker_threshold(desired: u32, kind: Option<&str>, value: Option<u32>) -> u32 {
    let value = value.unwrap_or(50);
    let percent = |v: u32| (u64::from(desired) * u64::from(v)).div_ceil(100) as u32;
    match kind.unwrap_or("BOUNDED_PERCENT") {
        "COUNT" => value.max(1),
        "UNBOUNDED_PERCENT" => percent(value).max(1),
        _ => percent(value).clamp(3, 200),
    }
}

/// Seconds to wait before starting another task of a deployment whose tasks keep failing:
/// none for the first two failures, then 5 s doubling up to 15 minutes.
pub fn restart_backoff(failures: u32) -> f64 {
    if failures <= 2 {
        0.0
    } else {
        (5.0 * 2f64.powi(failures.saturating_sub(3).min(20) as i32)).min(900.0)
    }
}

#[cfg(test)]
mod breaker_tests {
    use super::*;

    #[test]
    fn thresholds_follow_ecs() {
        assert_eq!(circuit_breaker_threshold(1, None, None), 3, "at least 3");
        assert_eq!(circuit_breaker_threshold(10, None, None), 5);
        assert_eq!(
            circuit_breaker_threshold(1000, None, None),
            200,
            "at most 200"
        );
        assert_eq!(
            circuit_breaker_threshold(1000, Some("UNBOUNDED_PERCENT"), Some(50)),
            500
        );
        assert_eq!(circuit_breaker_threshold(4, Some("COUNT"), Some(7)), 7);
    }

    #[test]
    fn backoff_doubles_to_fifteen_minutes() {
        assert_eq!(restart_backoff(2), 0.0);
        assert_eq!(restart_backoff(3), 5.0);
        assert_eq!(restart_backoff(4), 10.0);
        assert_eq!(restart_backoff(30), 900.0);
    }
}
