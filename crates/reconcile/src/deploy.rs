//! One pass of the service reconciler, as two pure functions around the control plane's IO.
//!
//! The control plane reads a service record, its tasks and (for DAEMON) the eligible
//! instances into an [`Input`]; [`decide()`] returns a [`Decision`]: the deployments after the
//! circuit breaker (and a rollback), what to start and stop (with ECS's stop reasons), the
//! placement strategies, and the events so far. The control plane applies it (stops, then
//! starts) and hands what happened, as an [`Outcome`], with the tasks as they are now, to
//! [`record()`], which returns the deployments, counts, rollout state and events to write
//! ([`Record`]); [`push_events`] writes the events as ECS keeps them.
//!
//! These types mirror the service record field by field (`Option` where the record has one),
//! so the control plane maps them to and from its wire types and decides nothing itself.
//! The rolling-update arithmetic stays in [`crate::service::reconcile`] (REPLICA) and
//! [`crate::daemon::reconcile`] (DAEMON); this module is what surrounds it.

mod decide;
#[cfg(test)]
mod fixtures;
mod record;
#[cfg(test)]
mod simulation;

pub use decide::{backing_off, decide, default_strategies, new_deployment};
pub use record::{push_events, record, task_id, why_unplaced};

use crate::service::{Phase, StopWhy, Task};

/// The launch type of a service that names none.
pub const DEFAULT_LAUNCH_TYPE: &str = "EC2";
/// The `stopCode` the control plane gives the tasks it stops for a [`Decision`]: such stops
/// are not failures of the deployment.
pub const STOP_CODE: &str = "ServiceSchedulerInitiated";
/// ECS keeps the newest hundred events of a service.
pub const MAX_EVENTS: usize = 100;

/// A service is reconciled while ACTIVE or DRAINING (deleted, its tasks stopping); an
/// INACTIVE one is not read at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceStatus {
    Active,
    Draining,
}

impl ServiceStatus {
    /// The record's `status`: DRAINING is draining, anything else is reconciled as ACTIVE.
    pub fn parse(status: Option<&str>) -> Self {
        match status {
            Some("DRAINING") => ServiceStatus::Draining,
            _ => ServiceStatus::Active,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchedulingStrategy {
    /// `desiredCount` tasks, rolled from deployment to deployment within the percentages.
    Replica,
    /// One task on every eligible instance.
    Daemon,
}

impl SchedulingStrategy {
    /// The record's `schedulingStrategy`: DAEMON, or REPLICA (the default).
    pub fn parse(strategy: Option<&str>) -> Self {
        match strategy {
            Some("DAEMON") => SchedulingStrategy::Daemon,
            _ => SchedulingStrategy::Replica,
        }
    }
}

/// `deploymentConfiguration.deploymentCircuitBreaker`, absent fields false or `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CircuitBreaker {
    /// Failing deployments are marked FAILED, after which they start nothing more.
    pub enable: bool,
    /// A FAILED deployment rolls back to the last COMPLETED one.
    pub rollback: bool,
    /// `thresholdConfiguration.type`: COUNT, BOUNDED_PERCENT (the default) or UNBOUNDED_PERCENT.
    pub threshold_kind: Option<String>,
    /// `thresholdConfiguration.value`, negative values read as 0.
    pub threshold_value: Option<u32>,
}

/// What the reconciler needs of the service record besides its deployments.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceState {
    /// `serviceName`: events name the service.
    pub name: String,
    pub status: ServiceStatus,
    pub scheduling: SchedulingStrategy,
    /// `desiredCount` (0 when absent). Kept signed as the record has it: a rollback deployment
    /// copies it as it is; the reconcilers read negative values as 0.
    pub desired_count: i32,
    /// `deploymentConfiguration.minimumHealthyPercent`; 100 when absent.
    pub minimum_healthy_percent: Option<i32>,
    /// `deploymentConfiguration.maximumPercent`; 200 when absent.
    pub maximum_percent: Option<i32>,
    /// `healthCheckGracePeriodSeconds`; 0 when absent.
    pub health_check_grace_period_seconds: Option<i32>,
    pub circuit_breaker: CircuitBreaker,
    /// `launchType`; [`DEFAULT_LAUNCH_TYPE`] when absent (see [`ServiceState::launch_type`]).
    pub launch_type: Option<String>,
    /// The service has a non-empty `placementStrategy` of its own: it is used as given.
    pub has_placement_strategies: bool,
}

impl ServiceState {
    /// The launch type its tasks start with, and a rollback deployment records; for DAEMON,
    /// the launch type of the instances it runs on.
    pub fn launch_type(&self) -> &str {
        self.launch_type.as_deref().unwrap_or(DEFAULT_LAUNCH_TYPE)
    }
}

/// A deployment's `status`: the newest is PRIMARY, the ones it replaces ACTIVE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeploymentStatus {
    Primary,
    Active,
}

impl DeploymentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeploymentStatus::Primary => "PRIMARY",
            DeploymentStatus::Active => "ACTIVE",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [DeploymentStatus::Primary, DeploymentStatus::Active]
            .into_iter()
            .find(|d| d.as_str() == s)
    }
}

/// A deployment's `rolloutState`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RolloutState {
    InProgress,
    /// It reached a steady state once: a rollback goes back to the newest such deployment.
    Completed,
    /// The circuit breaker tripped: it starts no more tasks.
    Failed,
}

impl RolloutState {
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutState::InProgress => "IN_PROGRESS",
            RolloutState::Completed => "COMPLETED",
            RolloutState::Failed => "FAILED",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            RolloutState::InProgress,
            RolloutState::Completed,
            RolloutState::Failed,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
    }
}

/// One deployment of the service record, field by field. The control plane writes every field
/// back (matching by `id`; a deployment it does not know is new: a rollback).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeploymentState {
    /// `id` (empty when absent).
    pub id: String,
    pub status: Option<DeploymentStatus>,
    pub task_definition: Option<String>,
    pub desired_count: Option<i32>,
    pub pending_count: Option<i32>,
    pub running_count: Option<i32>,
    pub failed_tasks: Option<i32>,
    /// Seconds since the epoch.
    pub created_at: Option<f64>,
    /// Seconds since the epoch.
    pub updated_at: Option<f64>,
    pub launch_type: Option<String>,
    pub rollout_state: Option<RolloutState>,
    pub rollout_state_reason: Option<String>,
}

/// One task of the service (group `service:NAME`) as the control plane knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceTask {
    pub arn: String,
    /// `startedBy`: the id of the deployment that started it (empty when absent).
    pub deployment: String,
    /// `lastStatus`, as recorded.
    pub last_status: Option<String>,
    /// `desiredStatus`, as recorded.
    pub desired_status: Option<String>,
    /// Every container's health status is HEALTHY (or it has none), and its agent is not
    /// gone: nobody can vouch for a task whose agent is gone.
    pub healthy: bool,
    /// A container's health status is UNHEALTHY.
    pub unhealthy: bool,
    /// `startedAt`, seconds since the epoch.
    pub started_at: Option<f64>,
    /// `stoppedAt`, seconds since the epoch: the restart back-off counts from the last one.
    pub stopped_at: Option<f64>,
    /// `stopCode`: a stop the scheduler or a user asked for is not a failure.
    pub stop_code: Option<String>,
    /// `containerInstanceArn` (empty when absent).
    pub host: String,
    /// Its instance is not ACTIVE, or its agent has been gone too long.
    pub displaced: bool,
    /// The scheduler stopped it because its health checks (a container's, or a load
    /// balancer's) failed: a failure all the same, for the circuit breaker and the back-off.
    pub failed_health: bool,
    /// Until when (seconds since the epoch) its scale-in protection holds, if it has any.
    pub protected_until: Option<f64>,
}

impl ServiceTask {
    /// Where it is in its life, as the rollout reconcilers see it: stopped once its
    /// `lastStatus` is STOPPED, stopping once asked to, running once RUNNING, pending before.
    pub fn phase(&self) -> Phase {
        match (self.last_status.as_deref(), self.desired_status.as_deref()) {
            (Some("STOPPED"), _) => Phase::Stopped,
            (_, Some("STOPPED")) => Phase::Stopping,
            (Some("RUNNING"), _) => Phase::Running,
            _ => Phase::Pending,
        }
    }

    /// The view [`crate::service::reconcile`] and [`crate::daemon::reconcile`] take, at `now`.
    pub fn view(&self, now: f64) -> Task {
        Task {
            protected: self.protected_until.is_some_and(|until| until > now),
            arn: self.arn.clone(),
            deployment: self.deployment.clone(),
            phase: self.phase(),
            healthy: self.healthy,
            unhealthy: self.unhealthy,
            started_at: self.started_at,
            displaced: self.displaced,
            host: self.host.clone(),
        }
    }

    /// A task of `deployment` that stopped without the scheduler or a user asking it to, or
    /// that the scheduler stopped because it failed its health checks.
    pub fn failed_in(&self, deployment: &str) -> bool {
        self.deployment == deployment
            && self.last_status.as_deref() == Some("STOPPED")
            && (self.failed_health
                || !matches!(
                    self.stop_code.as_deref(),
                    Some("ServiceSchedulerInitiated" | "UserInitiated")
                ))
    }

    /// Counted as `status` (RUNNING or PENDING) in runningCount/pendingCount: its desired
    /// status is RUNNING and its last status is `status`.
    pub fn counts_as(&self, status: &str) -> bool {
        self.desired_status.as_deref() == Some("RUNNING")
            && self.last_status.as_deref() == Some(status)
    }
}

/// Everything one pass of the reconciler reads, for one service.
#[derive(Debug, Clone, PartialEq)]
pub struct Input {
    pub service: ServiceState,
    /// PRIMARY first, then older ones.
    pub deployments: Vec<DeploymentState>,
    pub tasks: Vec<ServiceTask>,
    /// DAEMON only: the ARNs of the instances it should run on (ACTIVE, agent connected, of
    /// its launch type, meeting its constraints), in a stable order. Ignored while DRAINING.
    pub eligible: Vec<String>,
    /// An id for a deployment this pass might create (a rollback); pure code makes no ids.
    pub fresh_deployment_id: String,
}

/// What to start, all of the PRIMARY deployment's task definition, started by its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// REPLICA: this many tasks, wherever placement puts them.
    Replicas(u32),
    /// DAEMON: one task on each of these instances (ARNs).
    OnInstances(Vec<String>),
}

impl Start {
    /// How many tasks.
    pub fn count(&self) -> usize {
        match self {
            Start::Replicas(n) => *n as usize,
            Start::OnInstances(on) => on.len(),
        }
    }

    /// Nothing, of the same kind.
    fn nothing(&self) -> Start {
        match self {
            Start::Replicas(_) => Start::Replicas(0),
            Start::OnInstances(_) => Start::OnInstances(Vec::new()),
        }
    }
}

/// A task to stop (desiredStatus STOPPED, stopCode [`STOP_CODE`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stop {
    pub arn: String,
    pub why: StopWhy,
    /// Its `stoppedReason`, as ECS words it.
    pub reason: String,
}

/// One placement strategy, `type` and `field`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Strategy {
    pub kind: String,
    pub field: String,
}

/// The placement strategies to start tasks with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// The service's own `placementStrategy` (a DAEMON service with none places with none).
    ServiceOwn,
    /// A REPLICA service that gave none: [`default_strategies`].
    Default(Vec<Strategy>),
}

/// What [`decide()`] decided.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The deployments, PRIMARY first, after the circuit breaker: `failedTasks` on the
    /// PRIMARY; FAILED if it tripped; a rollback deployment first if one was made.
    pub deployments: Vec<DeploymentState>,
    /// Some: the service's `taskDefinition` is now this (a rollback).
    pub task_definition: Option<String>,
    /// Some: the service's `desiredCount` is now this (DAEMON: its eligible instances).
    pub desired_count: Option<i32>,
    pub start: Start,
    /// How to place what [`Decision::start`] starts.
    pub placement: Placement,
    /// Stop these first: room under the ceiling comes from stops.
    pub stop: Vec<Stop>,
    /// Older deployments with no task left: [`record()`] removes them.
    pub retire: Vec<String>,
    /// Only the PRIMARY is left, with all its tasks healthy and nothing to do.
    pub steady: bool,
    /// Events so far, oldest first; [`record()`] adds the rest.
    pub events: Vec<String>,
}

impl Decision {
    /// It starts or stops something: the tasks have changed, and [`record()`] should be given
    /// them as they are after.
    pub fn acts(&self) -> bool {
        self.start.count() > 0 || !self.stop.is_empty()
    }
}

/// What happened when the control plane applied a [`Decision`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// The ARNs of the tasks it stopped (those that still existed), in order.
    pub stopped: Vec<String>,
    /// The ARNs of the tasks it started, in order.
    pub started: Vec<String>,
    /// Some tasks could not be placed: why (see [`why_unplaced`]); the last such reason.
    pub unplaced: Option<String>,
}

/// What [`record()`] returns: the rest of the service record to write.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// The deployments to write, retired ones gone, counts and rollout state set.
    pub deployments: Vec<DeploymentState>,
    /// The service's `runningCount`.
    pub running_count: i32,
    /// The service's `pendingCount`.
    pub pending_count: i32,
    /// Every event of this pass, oldest first (the [`Decision`]'s, then the outcome's): give
    /// them to [`push_events`].
    pub events: Vec<String>,
    /// A DRAINING service whose tasks have all stopped becomes INACTIVE.
    pub inactive: bool,
}

#[cfg(test)]
mod view_tests {
    use super::fixtures::running;

    #[test]
    fn protection_holds_until_it_expires() {
        let mut t = running("t", "d");
        assert!(!t.view(100.0).protected, "none asked for");
        t.protected_until = Some(200.0);
        assert!(t.view(199.0).protected);
        assert!(!t.view(200.0).protected, "expired at its expiration date");
    }
}
