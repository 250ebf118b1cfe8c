//! The DAEMON service reconciler: exactly one task of the PRIMARY deployment on every
//! eligible instance (ACTIVE, agent connected, meeting the constraints), none elsewhere.
//! maximumPercent is 100: on an instance, a task of an older deployment stops before the new one
//! starts.

use crate::service::{Phase, StopWhy, Task};

/// A daemon task is a [`Task`] on an instance.
#[derive(Debug, Clone, PartialEq)]
pub struct Placed {
    pub task: Task,
    pub instance: String,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Actions {
    /// Instances that need a PRIMARY task started.
    pub start_on: Vec<String>,
    pub stop: Vec<(String, StopWhy)>,
    pub steady: bool,
}

fn live(p: &Placed) -> bool {
    matches!(p.task.phase, Phase::Pending | Phase::Running)
}

/// `eligible`: the instances that should run the daemon, in a stable order.
pub fn reconcile(primary: &str, eligible: &[String], tasks: &[Placed]) -> Actions {
    let mut out = Actions::default();
    for p in tasks.iter().filter(|p| live(p)) {
        if !eligible.contains(&p.instance) {
            out.stop.push((p.task.arn.clone(), StopWhy::ScaleDown));
        }
    }
    for instance in eligible {
        let here: Vec<&Placed> = tasks
            .iter()
            .filter(|p| live(p) && &p.instance == instance)
            .collect();
        let mut current: Vec<&&Placed> = here
            .iter()
            .filter(|p| p.task.deployment == primary)
            .collect();
        current.sort_by_key(|p| (p.task.phase != Phase::Running, p.task.arn.clone()));
        for extra in current.iter().skip(1) {
            out.stop.push((extra.task.arn.clone(), StopWhy::ScaleDown));
        }
        for old in here.iter().filter(|p| p.task.deployment != primary) {
            out.stop.push((old.task.arn.clone(), StopWhy::Replaced));
        }
        let stopping_here = tasks
            .iter()
            .any(|p| &p.instance == instance && p.task.phase == Phase::Stopping);
        let old_here = here.iter().any(|p| p.task.deployment != primary);
        if current.is_empty() && !old_here && !stopping_here {
            out.start_on.push(instance.clone());
        }
    }
    out.steady = out.stop.is_empty()
        && out.start_on.is_empty()
        && eligible.iter().all(|i| {
            tasks.iter().any(|p| {
                &p.instance == i
                    && p.task.deployment == primary
                    && p.task.phase == Phase::Running
                    && p.task.healthy
                    && !p.task.unhealthy
            })
        })
        && !tasks.iter().any(|p| p.task.phase == Phase::Stopping);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn placed(arn: &str, dep: &str, instance: &str, phase: Phase) -> Placed {
        Placed {
            task: Task {
                arn: arn.into(),
                deployment: dep.into(),
                phase,
                healthy: true,
                unhealthy: false,
                started_at: None,
                displaced: false,
                host: instance.into(),
                protected: false,
            },
            instance: instance.into(),
        }
    }

    #[test]
    fn one_per_eligible_instance_none_elsewhere() {
        let eligible = vec!["i1".to_string(), "i2".to_string()];
        let a = reconcile("d", &eligible, &[placed("t1", "d", "i1", Phase::Running)]);
        assert_eq!(a.start_on, ["i2"]);
        let a = reconcile(
            "d",
            &eligible,
            &[
                placed("t1", "d", "i1", Phase::Running),
                placed("t2", "d", "i2", Phase::Running),
                placed("t3", "d", "i3", Phase::Running),
            ],
        );
        assert_eq!(
            a.stop,
            [("t3".to_string(), StopWhy::ScaleDown)],
            "i3 is not eligible (drained)"
        );
        assert!(!a.steady);
    }

    #[test]
    fn a_new_deployment_replaces_stop_first() {
        let eligible = vec!["i1".to_string()];
        let a = reconcile(
            "new",
            &eligible,
            &[placed("t1", "old", "i1", Phase::Running)],
        );
        assert_eq!(a.stop, [("t1".to_string(), StopWhy::Replaced)]);
        assert!(a.start_on.is_empty(), "maximumPercent 100: stop first");
        let a = reconcile(
            "new",
            &eligible,
            &[placed("t1", "old", "i1", Phase::Stopping)],
        );
        assert!(a.start_on.is_empty(), "wait until it has stopped");
        let a = reconcile(
            "new",
            &eligible,
            &[placed("t1", "old", "i1", Phase::Stopped)],
        );
        assert_eq!(a.start_on, ["i1"]);
        let a = reconcile(
            "new",
            &eligible,
            &[placed("t2", "new", "i1", Phase::Running)],
        );
        assert!(a.steady);
    }
}
