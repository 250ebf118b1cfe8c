//! Fargate metering: what each FARGATE task is billed for, as Fargate bills it — its vCPU and
//! memory sizes for the seconds from the start of its image pull (its creation when there was
//! none) to its stop, at least one minute. A task's figures are recorded when it stops
//! (`metering/CLUSTER/TASK_ID`, in the transaction that records the stop, so they outlive the
//! task record's purge); a running task's are computed up to now. Summed per task, service
//! (task group) and cluster by [`Control::usage`].

use crate::{keys, Control};
use berth_api::ecs;
use berth_api::EcsError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Fargate bills at least a minute.
const MINIMUM_SECONDS: f64 = 60.0;

/// One task's metered use.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskUsage {
    pub task_arn: String,
    pub cluster: String,
    /// The task's group: `service:NAME` for a service's tasks.
    pub group: String,
    pub capacity_provider: String,
    pub vcpu: f64,
    pub memory_gb: f64,
    pub seconds: f64,
    pub vcpu_seconds: f64,
    pub gb_seconds: f64,
    /// Still running: the figures run up to the time of the report.
    pub running: bool,
}

/// Sums of [`TaskUsage`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Totals {
    pub tasks: usize,
    pub vcpu_seconds: f64,
    pub gb_seconds: f64,
}

impl Totals {
    fn add(&mut self, u: &TaskUsage) {
        self.tasks += 1;
        self.vcpu_seconds += u.vcpu_seconds;
        self.gb_seconds += u.gb_seconds;
    }
}

/// A usage report.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub tasks: Vec<TaskUsage>,
    /// By `CLUSTER/GROUP`.
    pub groups: BTreeMap<String, Totals>,
    pub clusters: BTreeMap<String, Totals>,
    pub total: Totals,
}

/// What a FARGATE task is billed for up to `now` (its stop, once stopped). Pure.
pub fn task_usage(cluster: &str, t: &ecs::Task, now: f64) -> Option<TaskUsage> {
    if t.launch_type.as_deref() != Some("FARGATE") {
        return None;
    }
    let start = t.pull_started_at.or(t.created_at)?;
    let running = t.last_status.as_deref() != Some("STOPPED");
    let end = if running {
        now
    } else {
        t.stopped_at.or(t.execution_stopped_at).unwrap_or(now)
    };
    let seconds = (end - start).max(MINIMUM_SECONDS);
    let vcpu = t.cpu.as_deref()?.parse::<f64>().ok()? / 1024.0;
    let memory_gb = t.memory.as_deref()?.parse::<f64>().ok()? / 1024.0;
    Some(TaskUsage {
        task_arn: t.task_arn.clone().unwrap_or_default(),
        cluster: cluster.to_string(),
        group: t.group.clone().unwrap_or_default(),
        capacity_provider: t
            .capacity_provider_name
            .clone()
            .unwrap_or_else(|| "FARGATE".into()),
        vcpu,
        memory_gb,
        seconds,
        vcpu_seconds: vcpu * seconds,
        gb_seconds: memory_gb * seconds,
        running,
    })
}

/// Sums per group, cluster and in all. Pure.
pub fn report(tasks: Vec<TaskUsage>) -> Report {
    let mut r = Report::default();
    for u in &tasks {
        r.groups
            .entry(format!("{}/{}", u.cluster, u.group))
            .or_default()
            .add(u);
        r.clusters.entry(u.cluster.clone()).or_default().add(u);
        r.total.add(u);
    }
    r.tasks = tasks;
    r
}

impl Control {
    /// Fargate usage of `cluster` (every cluster's when `None`): stopped tasks' recorded
    /// figures and running ones' up to now.
    pub async fn usage(&self, cluster: Option<&str>) -> Result<Report, EcsError> {
        let clusters = match cluster {
            Some(c) => vec![self.cluster_name(Some(c))?],
            None => self.state.cluster_names(),
        };
        let now = crate::now_epoch();
        let mut tasks = Vec::new();
        for c in clusters.iter().filter(|c| *c != crate::FARGATE_POOL) {
            for kv in self
                .store
                .range(&keys::metering_of(c), None, None)
                .await
                .map_err(crate::store_error)?
            {
                tasks.push(crate::decode::<TaskUsage>(&kv)?);
            }
            for kv in self
                .store
                .range(&keys::tasks_of(c), None, None)
                .await
                .map_err(crate::store_error)?
            {
                let t: ecs::Task = crate::decode(&kv)?;
                if t.last_status.as_deref() == Some("STOPPED") {
                    continue; // recorded when it stopped
                }
                tasks.extend(task_usage(c, &t, now));
            }
        }
        tasks.sort_by(|a, b| a.task_arn.cmp(&b.task_arn));
        Ok(report(tasks))
    }
}

/// The record a FARGATE task's stop writes, if it is one.
pub(crate) fn on_stop(cluster: &str, t: &ecs::Task) -> Option<(String, TaskUsage)> {
    let u = task_usage(cluster, t, crate::now_epoch())?;
    let id = u.task_arn.rsplit('/').next()?.to_string();
    Some((keys::metering(cluster, &id), u))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(cpu: &str, memory: &str, start: f64, stop: Option<f64>) -> ecs::Task {
        ecs::Task {
            task_arn: Some("arn:aws:ecs:us-east-1:0:task/c/abc".into()),
            launch_type: Some("FARGATE".into()),
            group: Some("service:web".into()),
            cpu: Some(cpu.into()),
            memory: Some(memory.into()),
            pull_started_at: Some(start),
            created_at: Some(start - 5.0),
            last_status: Some(if stop.is_some() { "STOPPED" } else { "RUNNING" }.into()),
            stopped_at: stop,
            ..Default::default()
        }
    }

    #[test]
    fn billed_by_size_per_second_from_the_pull_with_a_minute_at_least() {
        let u = task_usage("c", &task("512", "1024", 1000.0, Some(1300.0)), 5000.0).unwrap();
        assert_eq!(u.seconds, 300.0);
        assert_eq!(u.vcpu_seconds, 150.0, "0.5 vCPU for 300 s");
        assert_eq!(u.gb_seconds, 300.0, "1 GB for 300 s");
        let short = task_usage("c", &task("256", "512", 1000.0, Some(1010.0)), 5000.0).unwrap();
        assert_eq!(short.seconds, 60.0, "a one-minute minimum");
        let running = task_usage("c", &task("1024", "2048", 1000.0, None), 1100.0).unwrap();
        assert!(running.running);
        assert_eq!(running.vcpu_seconds, 100.0, "up to now");
        let mut ec2 = task("256", "512", 1000.0, None);
        ec2.launch_type = Some("EC2".into());
        assert!(
            task_usage("c", &ec2, 1100.0).is_none(),
            "only Fargate is metered"
        );
    }

    #[test]
    fn reports_sum_per_group_and_cluster() {
        let a = task_usage("c", &task("1024", "2048", 0.0, Some(100.0)), 0.0).unwrap();
        let mut b = a.clone();
        b.group = "family:x".into();
        let r = report(vec![a.clone(), a, b]);
        assert_eq!(r.groups["c/service:web"].tasks, 2);
        assert_eq!(r.groups["c/service:web"].vcpu_seconds, 200.0);
        assert_eq!(r.clusters["c"].tasks, 3);
        assert_eq!(r.total.gb_seconds, 600.0);
    }
}
