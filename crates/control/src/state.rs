//! The cluster state: every cluster's instances (their records, remaining resources and
//! attributes), the tasks on each instance and each task group's tasks, in memory, kept current
//! by one applier that follows the store's watch — the blueprint's snapshot.
//!
//! - Placement locks a cluster, places through its [`ClusterIndex`] (one per launch type, kept
//!   for the cluster's life and updated as instances and tasks change), and commits guarded on
//!   the revisions the state holds; on success it writes the result through (so the next
//!   placement needs no wait), on a conflict it puts the instances it touched back as the
//!   records say and waits for the applier to catch up. On a shared store it lets the lock go
//!   while it commits ([`crate::Config::placement_lets_go`]): the instances it picked are in
//!   flight ([`Flights`]) until it has written its outcome through under the lock again, other
//!   placements go around them, and one that must pick one of them waits for it to land and
//!   places again. (awsvpc placements keep the lock through the commit: each rewrites its
//!   subnet's record.)
//! - An agent's held poll waits on its own instance's generation, which moves only when that
//!   instance or one of its tasks changes: a task write wakes one agent, not all of them.
//! - The service reconciler reads a service's tasks by group, without reading the cluster.
//!
//! Every change carries the revision that made it; a change older than what the state holds for
//! that key is ignored, so replays (after a reload, or of a write already written through) are
//! harmless, and the state equals a fresh read of the store once it has applied the store's
//! revision (property-tested).

use crate::mirror::Mirror;
use crate::placement::candidate;
use crate::presence::Presence;
use crate::read::launch_type_of;
use berth_api::ecs::{self, ContainerInstance};
use berth_model::status::{InstanceStatus, TaskStatus};
use berth_scheduler::index::ClusterIndex;
use berth_scheduler::{Candidate, Demand, Reason, Rules};
use berth_store::{Batch, EventKind, KeyValue, Revision, Store, StoreError};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{watch, OwnedMutexGuard};

/// What the state keeps of a task: enough to count task groups, to find an instance's tasks
/// and to feed the service reconciler. The whole record stays in the store.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskSummary {
    pub id: String,
    /// The container instance ARN.
    pub instance: Option<Arc<str>>,
    pub group: Arc<str>,
    /// The task definition's family.
    pub family: Arc<str>,
    pub launch_type: Option<Arc<str>>,
    pub started_by: Option<Arc<str>>,
    pub last_status: TaskStatus,
    pub desired_stopped: bool,
    /// Every container with a health check says HEALTHY (true when none has one).
    pub all_healthy: bool,
    /// A container's health check says UNHEALTHY.
    pub any_unhealthy: bool,
    pub started_at: Option<f64>,
    pub stopped_at: Option<f64>,
    pub stop_code: Option<String>,
    /// Stopped for failed container or load-balancer health checks.
    pub health_failed: bool,
    pub mod_revision: Revision,
    /// The revision at which what its agent is handed last changed (placement, its
    /// desiredStatus): a report of RUNNING leaves it as it was.
    pub plan_revision: Revision,
}

impl TaskSummary {
    fn of(t: &ecs::Task, id: &str, rev: Revision, names: &mut Names) -> TaskSummary {
        let checks: Vec<&str> = t
            .containers
            .iter()
            .flatten()
            .filter_map(|c| c.health_status.as_deref())
            .collect();
        TaskSummary {
            id: id.to_string(),
            instance: t.container_instance_arn.as_deref().map(|a| names.get(a)),
            group: names.get(t.group.as_deref().unwrap_or_default()),
            family: names.get(
                t.task_definition_arn
                    .as_deref()
                    .and_then(|a| a.rsplit('/').next())
                    .and_then(|fr| fr.rsplit_once(':'))
                    .map(|(f, _)| f)
                    .unwrap_or_default(),
            ),
            launch_type: t.launch_type.as_deref().map(|l| names.get(l)),
            started_by: t.started_by.as_deref().map(|s| names.get(s)),
            last_status: t
                .last_status
                .as_deref()
                .and_then(TaskStatus::parse)
                .unwrap_or(TaskStatus::Pending),
            desired_stopped: t.desired_status.as_deref() == Some("STOPPED"),
            all_healthy: checks.iter().all(|h| *h == "HEALTHY"),
            any_unhealthy: checks.contains(&"UNHEALTHY"),
            started_at: t.started_at,
            stopped_at: t.stopped_at,
            stop_code: t.stop_code.clone(),
            health_failed: t.stopped_reason.as_deref().is_some_and(|r| {
                r.starts_with("Task failed container health checks")
                    || r.starts_with("Task failed ELB health checks")
            }),
            mod_revision: rev,
            plan_revision: rev,
        }
    }

    fn live(&self) -> bool {
        self.last_status != TaskStatus::Stopped
    }
}

/// Strings many tasks share (instance ARNs, groups, deployment ids), kept once.
#[derive(Debug, Default)]
struct Names(HashSet<Arc<str>>);

impl Names {
    fn get(&mut self, s: &str) -> Arc<str> {
        if let Some(a) = self.0.get(s) {
            return a.clone();
        }
        let a: Arc<str> = Arc::from(s);
        self.0.insert(a.clone());
        a
    }
}

/// An instance record as last seen, with where and at which revision it is stored.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceEntry {
    pub record: ContainerInstance,
    pub key: String,
    pub mod_revision: Revision,
}

/// Where the copies of one placement went, and why the rest could not go anywhere.
#[derive(Debug, Default)]
pub(crate) struct Placed {
    /// The instance ARN of each copy placed.
    pub copies: Vec<String>,
    /// For copies that fit nowhere: each instance's reason, or `None` for one that is missing.
    pub failures: Vec<(String, Option<Reason>)>,
    /// Instances whose remaining resources changed.
    pub touched: BTreeSet<String>,
}

/// Where a placement may go.
#[derive(Debug, Clone)]
pub(crate) enum Pool {
    /// Any instance of the launch type (RunTask, REPLICA services).
    LaunchType(String),
    /// Exactly these instances (by ARN), one copy each (StartTask, DAEMON services).
    Instances(Vec<String>),
}

/// One cluster's part of the state.
#[derive(Debug, Default)]
pub struct ClusterState {
    /// By container instance ARN; INACTIVE instances too (they are in no index).
    instances: HashMap<String, InstanceEntry>,
    /// Instance record key → the revision the state holds it at.
    key_revisions: HashMap<String, Revision>,
    /// By task id, in id (so key) order.
    tasks: BTreeMap<String, TaskSummary>,
    /// Instance ARN → ids of its tasks not yet STOPPED, with their plan revisions.
    live_on: HashMap<Arc<str>, BTreeMap<String, Revision>>,
    /// Task group → ids of its tasks (STOPPED ones too, until purged).
    by_group: HashMap<Arc<str>, BTreeSet<String>>,
    /// By launch type (`EC2`, `EXTERNAL`): the instances that are not INACTIVE.
    index: HashMap<&'static str, ClusterIndex>,
    names: Names,
    /// When each index's `agentConnected` flags were last brought up to date.
    presence_refreshed: HashMap<String, (std::time::Instant, u64)>,
    /// Services whose tasks or record changed since the service loop last looked.
    dirty_services: BTreeSet<String>,
    /// An instance joined, left or changed status since the service loop last looked.
    instances_changed: bool,
}

impl ClusterState {
    pub fn instance(&self, arn: &str) -> Option<&InstanceEntry> {
        self.instances.get(arn)
    }

    pub fn instances(&self) -> impl Iterator<Item = &InstanceEntry> {
        self.instances.values()
    }

    /// The instance that is not INACTIVE with this EC2 (or `mi-`) instance id.
    pub fn instance_by_host_id(&self, host_id: &str) -> Option<&InstanceEntry> {
        self.instances.values().find(|e| {
            e.record.ec2_instance_id.as_deref() == Some(host_id)
                && e.record.status.as_deref() != Some(InstanceStatus::Inactive.as_str())
        })
    }

    /// Registered (not INACTIVE) instances, and the running and pending (not yet RUNNING, nor
    /// STOPPED) tasks, as DescribeClusters counts them.
    pub fn counts(&self) -> (usize, usize, usize) {
        let instances = self
            .instances
            .values()
            .filter(|e| e.record.status.as_deref() != Some(InstanceStatus::Inactive.as_str()))
            .count();
        let (mut running, mut pending) = (0, 0);
        for t in self.tasks.values() {
            match t.last_status {
                TaskStatus::Stopped => {}
                TaskStatus::Running => running += 1,
                _ => pending += 1,
            }
        }
        (instances, running, pending)
    }

    /// Running and pending counts of the instance's tasks, as DescribeContainerInstances shows.
    pub fn task_counts(&self, instance_arn: &str) -> (i32, i32) {
        let mut out = (0, 0);
        for id in self.live_on.get(instance_arn).into_iter().flatten() {
            match self.tasks.get(id.0).map(|t| t.last_status) {
                Some(TaskStatus::Running) => out.0 += 1,
                Some(s) if s < TaskStatus::Running => out.1 += 1,
                _ => {}
            }
        }
        out
    }

    /// Ids and plan revisions of the tasks on `instance_arn` that are not STOPPED, in id order.
    pub fn live_tasks_at(&self, instance_arn: &str) -> Vec<(String, Revision)> {
        self.live_on
            .get(instance_arn)
            .into_iter()
            .flatten()
            .map(|(id, rev)| (id.clone(), *rev))
            .collect()
    }

    /// Ids of the tasks on `instance_arn` that are not STOPPED, in id order.
    pub fn live_tasks(&self, instance_arn: &str) -> Vec<String> {
        self.live_on
            .get(instance_arn)
            .map(|s| s.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// The tasks of a task group, in id order.
    pub fn group_tasks(&self, group: &str) -> Vec<TaskSummary> {
        self.by_group
            .get(group)
            .into_iter()
            .flatten()
            .filter_map(|id| self.tasks.get(id).cloned())
            .collect()
    }

    pub fn task(&self, id: &str) -> Option<&TaskSummary> {
        self.tasks.get(id)
    }

    /// Tasks in id order after `after`, those `keep` accepts, at most `limit` of them.
    pub fn tasks_after(
        &self,
        after: Option<&str>,
        limit: usize,
        keep: impl Fn(&TaskSummary) -> bool,
    ) -> Vec<&TaskSummary> {
        use std::ops::Bound::{Excluded, Unbounded};
        let from = match after {
            Some(a) => Excluded(a.to_string()),
            None => Unbounded,
        };
        self.tasks
            .range((from, Unbounded))
            .map(|(_, t)| t)
            .filter(|t| keep(t))
            .take(limit)
            .collect()
    }

    /// Task groups of the instance's tasks not yet STOPPED.
    fn groups_on(&self, arn: &str) -> BTreeMap<String, u32> {
        let mut out = BTreeMap::new();
        for id in self.live_on.get(arn).into_iter().flatten() {
            if let Some(t) = self.tasks.get(id.0) {
                *out.entry(t.group.to_string()).or_default() += 1;
            }
        }
        out
    }

    /// The instance as placement sees it, from its record and its tasks.
    pub fn candidate(&self, arn: &str, presence: &Presence) -> Option<Candidate> {
        let e = self.instances.get(arn)?;
        match candidate(&e.record, presence.is_connected(arn), self.groups_on(arn)) {
            Ok(c) => Some(c),
            Err(err) => {
                tracing::error!(instance = arn, error = %err.message, "unreadable instance record");
                None
            }
        }
    }

    /// The instances placement may use, each index's in its own order: the reference the
    /// property tests compare the index against.
    pub fn index_instances(&self, launch_type: &str) -> Vec<Candidate> {
        self.index
            .get(launch_type)
            .map(|i| i.instances().to_vec())
            .unwrap_or_default()
    }

    /// Puts instance `arn` into the index of its launch type as its record and tasks say, or
    /// takes it out when it is INACTIVE or gone.
    fn refile(&mut self, arn: &str, presence: &Presence) {
        let Some(e) = self.instances.get(arn) else {
            for idx in self.index.values_mut() {
                idx.remove(arn);
            }
            return;
        };
        let lt = launch_type_of(&e.record);
        let inactive = e.record.status.as_deref() == Some(InstanceStatus::Inactive.as_str());
        match self.candidate(arn, presence).filter(|_| !inactive) {
            Some(c) => {
                self.index
                    .entry(lt)
                    .or_insert_with(|| ClusterIndex::new(Vec::new()))
                    .upsert(c);
            }
            None => {
                if let Some(idx) = self.index.get_mut(lt) {
                    idx.remove(arn);
                }
            }
        }
    }

    /// Refreshes `agentConnected` of the index's instances (it changes with time, not with
    /// writes).
    pub(crate) fn refresh_presence(&mut self, launch_type: &str, presence: &Presence) {
        // A refresh costs a presence lookup per instance: not once per placement in a burst.
        // Agents leave on the scale of the agent timeout; arrivals are counted.
        let now = std::time::Instant::now();
        let arrivals = presence.arrivals();
        if self
            .presence_refreshed
            .get(launch_type)
            .is_some_and(|(t, a)| now.duration_since(*t) < PRESENCE_REFRESH && *a == arrivals)
        {
            return;
        }
        self.presence_refreshed
            .insert(launch_type.to_string(), (now, arrivals));
        let stale: Vec<String> = self
            .index
            .get(launch_type)
            .into_iter()
            .flat_map(|i| i.instances())
            .filter(|c| c.agent_connected != presence.is_connected(&c.arn))
            .map(|c| c.arn.clone())
            .collect();
        for arn in stale {
            self.refile(&arn, presence);
        }
    }

    /// Records an instance record at `rev`; `false` when the state already holds a newer one.
    fn put_instance(&mut self, kv: &KeyValue, record: ContainerInstance) -> Option<String> {
        let arn = record.container_instance_arn.clone().unwrap_or_default();
        if self
            .instances
            .get(&arn)
            .is_some_and(|e| e.mod_revision >= kv.mod_revision)
        {
            return None;
        }
        let status_changed = self
            .instances
            .get(&arn)
            .is_none_or(|e| e.record.status != record.status);
        if status_changed {
            // Joined, drained, reactivated or deregistered: DAEMON services and services
            // with tasks there have something to do.
            self.instances_changed = true;
        }
        self.key_revisions.insert(kv.key.clone(), kv.mod_revision);
        self.instances.insert(
            arn.clone(),
            InstanceEntry {
                record,
                key: kv.key.clone(),
                mod_revision: kv.mod_revision,
            },
        );
        Some(arn)
    }

    fn delete_instance(&mut self, key: &str, rev: Revision) -> Option<String> {
        let arn = self
            .instances
            .iter()
            .find(|(_, e)| e.key == key && e.mod_revision < rev)
            .map(|(a, _)| a.clone())?;
        self.instances.remove(&arn);
        self.key_revisions.remove(key);
        self.instances_changed = true;
        Some(arn)
    }

    /// Records task `id` as `t` at `rev`; the instances whose set of live tasks (and so task
    /// groups and agent's desired set) changed. A report that only moves a task from PENDING to
    /// RUNNING touches none: its agent's poll has nothing new to say.
    fn put_task(&mut self, id: &str, t: &ecs::Task, rev: Revision) -> Vec<Arc<str>> {
        let old = self.tasks.get(id);
        if old.is_some_and(|o| o.mod_revision >= rev) {
            return Vec::new();
        }
        let mut s = TaskSummary::of(t, id, rev, &mut self.names);
        let same_for_agent = old.is_some_and(|o| {
            o.instance == s.instance
                && o.live() == s.live()
                && o.desired_stopped == s.desired_stopped
        });
        if let Some(o) = old.filter(|_| same_for_agent) {
            s.plan_revision = o.plan_revision;
        }
        if let Some(cs) = s.group.strip_prefix("service:") {
            self.dirty_services.insert(cs.to_string());
        }
        let mut touched = self.drop_task(id);
        if let Some(i) = &s.instance {
            if s.live() {
                self.live_on
                    .entry(i.clone())
                    .or_default()
                    .insert(id.to_string(), s.plan_revision);
            }
            touched.push(i.clone());
        }
        if same_for_agent {
            touched.clear();
        }
        self.by_group
            .entry(s.group.clone())
            .or_default()
            .insert(id.to_string());
        self.tasks.insert(id.to_string(), s);
        touched
    }

    /// Forgets task `id`; the instance it was on.
    fn drop_task(&mut self, id: &str) -> Vec<Arc<str>> {
        let Some(old) = self.tasks.remove(id) else {
            return Vec::new();
        };
        if let Some(set) = self.by_group.get_mut(&old.group) {
            set.remove(id);
            if set.is_empty() {
                self.by_group.remove(&old.group);
            }
        }
        match old.instance {
            Some(i) => {
                if let Some(set) = self.live_on.get_mut(&i) {
                    set.remove(id);
                    if set.is_empty() {
                        self.live_on.remove(&i);
                    }
                }
                vec![i]
            }
            None => Vec::new(),
        }
    }

    /// Places `count` copies in `pool`, taking their resources in the index; nothing is
    /// committed. A launch type's copies go on instances other than those in `avoid` (an
    /// instance pool's named ones go where they are named). `None`: the pool has no instance
    /// at all.
    pub(crate) fn place(
        &mut self,
        pool: &Pool,
        d: &Demand,
        rules: &Rules,
        count: usize,
        presence: &Presence,
        avoid: &HashSet<String>,
    ) -> Option<Placed> {
        let mut out = Placed::default();
        match pool {
            Pool::LaunchType(lt) => {
                self.refresh_presence(lt, presence);
                let idx = self.index.get_mut(lt.as_str())?;
                if idx.instances().is_empty() {
                    return None;
                }
                let avoid: HashSet<usize> = avoid.iter().filter_map(|a| idx.position(a)).collect();
                let p = idx.place_avoiding(d, rules, count, &avoid);
                let arn = |i: usize| idx.instances()[i].arn.clone();
                out.copies = p.placed.iter().map(|&i| arn(i)).collect();
                out.failures = p
                    .failures
                    .into_iter()
                    .map(|(i, r)| (arn(i), Some(r)))
                    .collect();
            }
            Pool::Instances(arns) => {
                let mut seen = BTreeSet::new();
                for arn in arns {
                    if seen.insert(arn.as_str()) {
                        self.place_on(arn, d, rules, presence, &mut out);
                    } else {
                        // Named twice: one copy per instance, as before the state existed.
                        out.failures.push((arn.to_string(), None));
                    }
                }
            }
        }
        out.touched = out.copies.iter().cloned().collect();
        Some(out)
    }

    /// One copy on exactly `arn`, if it can take it.
    fn place_on(
        &mut self,
        arn: &str,
        d: &Demand,
        rules: &Rules,
        presence: &Presence,
        out: &mut Placed,
    ) {
        let Some(e) = self.instances.get(arn) else {
            out.failures.push((arn.to_string(), None));
            return;
        };
        let lt = launch_type_of(&e.record);
        self.refile(arn, presence);
        let indexed = self
            .index
            .get_mut(lt)
            .and_then(|idx| idx.position(arn).map(|i| (idx, i)));
        match indexed {
            Some((idx, i)) => match berth_scheduler::rejects(&idx.instances()[i], d, rules) {
                None => {
                    idx.take(i, d, &rules.group);
                    out.copies.push(arn.to_string());
                }
                Some(r) => out.failures.push((arn.to_string(), Some(r))),
            },
            // INACTIVE: in no index; say why as the full scan would.
            None => {
                let r = self
                    .candidate(arn, presence)
                    .and_then(|c| berth_scheduler::rejects(&c, d, rules));
                out.failures
                    .push((arn.to_string(), r.or(Some(Reason::Inactive))));
            }
        }
    }

    /// The index's view of instance `arn` (with what placements took from it).
    pub(crate) fn placed_candidate(&self, arn: &str) -> Option<&Candidate> {
        let e = self.instances.get(arn)?;
        let idx = self.index.get(launch_type_of(&e.record))?;
        idx.position(arn).map(|i| &idx.instances()[i])
    }

    /// Services of this cluster marked changed by writes written through, for
    /// [`State::mark_dirty`].
    pub(crate) fn take_dirty_services(&mut self) -> BTreeSet<String> {
        let mut out = std::mem::take(&mut self.dirty_services);
        if std::mem::take(&mut self.instances_changed) {
            // Every service of the cluster.
            out.insert(String::new());
        }
        out
    }

    /// A placement did not commit: the instances it touched go back to what their records say.
    pub(crate) fn undo(&mut self, touched: &BTreeSet<String>, presence: &Presence) {
        for arn in touched {
            self.refile(arn, presence);
        }
    }

    /// A placement committed at `rev`: its instance records and new tasks, written through.
    /// `let_go`: it let the lock go while it committed, so the index's view of the instances
    /// may have been refiled without its copies meanwhile; they are refiled as their records
    /// (newer ones, if the applier has seen any since) and tasks now say. A placement that
    /// held the lock needs none: the index took its copies when it placed them, and the lock
    /// kept every other change out in between.
    pub(crate) fn committed(
        &mut self,
        rev: Revision,
        instances: Vec<(String, ContainerInstance)>,
        tasks: &[(String, ecs::Task)],
        let_go: Option<&Presence>,
    ) -> Vec<String> {
        let mut touched = Vec::new();
        for (key, record) in instances {
            let kv = KeyValue {
                key,
                value: Vec::new(),
                create_revision: rev,
                mod_revision: rev,
            };
            touched.extend(self.put_instance(&kv, record));
        }
        for (id, t) in tasks {
            touched.extend(self.put_task(id, t, rev).iter().map(|a| a.to_string()));
        }
        touched.sort();
        touched.dedup();
        if let Some(presence) = let_go {
            for arn in &touched {
                self.refile(arn, presence);
            }
        }
        touched
    }
}

/// `(kind, cluster, id)` of a key the state follows.
fn parse_key(key: &str) -> Option<(&str, &str, &str)> {
    let (kind, rest) = key.split_once('/')?;
    if kind != "instances" && kind != "tasks" {
        return None;
    }
    let (cluster, id) = rest.split_once('/')?;
    Some((kind, cluster, id))
}

/// One cluster's part, the changes the applier left for it while its lock was held
/// ([`State::apply_batches`]), and the instances placements are committing to.
#[derive(Debug, Default, Clone)]
struct Slot {
    state: Arc<tokio::sync::Mutex<ClusterState>>,
    pending: Arc<Mutex<Pending>>,
    flights: Arc<Flights>,
}

#[derive(Debug, Default)]
struct Pending {
    /// In revision order.
    events: Vec<berth_store::Event>,
    /// A task is waiting for the lock to apply them.
    drainer: bool,
    /// Instances whose placement was dropped while it committed: the index may still hold
    /// its copies, so the next holder refiles them from their records.
    refile: BTreeSet<String>,
}

/// The instances of one cluster that placements of this server are committing to, outside
/// the cluster's lock ([`State::take_off`]). Other placements go around them; one that must
/// pick one of them waits for it to land and places again: its guard would compare the
/// instance's revision from before that commit and fail, and the index may have dropped the
/// other's copies meanwhile (a refile).
#[derive(Debug, Default)]
pub(crate) struct Flights {
    busy: Mutex<HashSet<String>>,
    /// Every flight of the cluster that lands wakes every placement waiting.
    pub(crate) landed: tokio::sync::Notify,
}

/// Instances taken by one placement while it commits; let go when it is dropped, with the
/// instances left for refiling unless [`Flight::land`] said the index is right again.
#[derive(Debug)]
pub(crate) struct Flight {
    slot: Slot,
    arns: Vec<String>,
    landed: bool,
}

impl Flight {
    /// The placement's outcome is in the index (written through and refiled, or undone),
    /// under the cluster's lock.
    pub(crate) fn land(mut self) {
        self.landed = true;
    }
}

impl Drop for Flight {
    fn drop(&mut self) {
        if !self.landed {
            let mut pending = self.slot.pending.lock().unwrap_or_else(|e| e.into_inner());
            pending.refile.extend(self.arns.iter().cloned());
        }
        let mut busy = self
            .slot
            .flights
            .busy
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for arn in &self.arns {
            busy.remove(arn);
        }
        drop(busy);
        self.slot.flights.landed.notify_waiters();
    }
}

/// The whole state, every cluster's part behind its own lock.
#[derive(Debug)]
pub struct State {
    clusters: Mutex<HashMap<String, Slot>>,
    /// The store revision the state has applied every change up to.
    applied: watch::Sender<Revision>,
    /// Instance ARN → its generation, moved by every change to it or its tasks.
    polls: Mutex<HashMap<String, watch::Sender<u64>>>,
    presence: Arc<Presence>,
    /// Services (`CLUSTER/NAME`) whose tasks or record changed, for the service loop.
    dirty: Mutex<BTreeSet<String>>,
    dirty_changed: tokio::sync::Notify,
    /// Records kept in memory beside the state ([`crate::mirror`]), loaded and fed by the
    /// same applier.
    mirrors: Vec<Arc<Mirror>>,
}

/// How stale an index's `agentConnected` flags may be when it places.
const PRESENCE_REFRESH: Duration = Duration::from_millis(500);

/// How long a reader waits for the applier to reach a revision before giving up.
const CATCH_UP: Duration = Duration::from_secs(30);

/// The most revisions the applier applies under one taking of each cluster's lock.
const APPLY_AT_ONCE: usize = 256;

impl State {
    pub fn new(presence: Arc<Presence>) -> Self {
        State {
            clusters: Mutex::new(HashMap::new()),
            applied: watch::channel(0).0,
            polls: Mutex::new(HashMap::new()),
            presence,
            dirty: Mutex::new(BTreeSet::new()),
            dirty_changed: tokio::sync::Notify::new(),
            mirrors: Vec::new(),
        }
    }

    /// The state, also loading and feeding `mirrors` (each of some prefix of the store the
    /// state follows).
    pub fn mirroring(mut self, mirrors: Vec<Arc<Mirror>>) -> Self {
        self.mirrors = mirrors;
        self
    }

    pub fn presence(&self) -> &Presence {
        &self.presence
    }

    fn slot(&self, cluster: &str) -> Slot {
        let mut m = self.clusters.lock().unwrap_or_else(|e| e.into_inner());
        m.entry(cluster.to_string()).or_default().clone()
    }

    /// The instances placements of this server are committing to in `cluster`: wait on its
    /// `landed` (enabled before [`State::take_off`] is tried) when they are in the way.
    pub(crate) fn flights(&self, cluster: &str) -> Arc<Flights> {
        self.slot(cluster).flights
    }

    /// The instances of `cluster` placements of this server are committing to.
    pub(crate) fn in_flight(&self, cluster: &str) -> HashSet<String> {
        let slot = self.slot(cluster);
        let busy = slot.flights.busy.lock().unwrap_or_else(|e| e.into_inner());
        busy.clone()
    }

    /// Takes `arns` (instances of `cluster`) for a placement that lets the cluster's lock go
    /// while it commits; `None` when a placement of this server is committing to one of them.
    pub(crate) fn take_off(&self, cluster: &str, arns: &BTreeSet<String>) -> Option<Flight> {
        let slot = self.slot(cluster);
        let mut busy = slot.flights.busy.lock().unwrap_or_else(|e| e.into_inner());
        if arns.iter().any(|a| busy.contains(a)) {
            return None;
        }
        busy.extend(arns.iter().cloned());
        drop(busy);
        Some(Flight {
            slot,
            arns: arns.iter().cloned().collect(),
            landed: false,
        })
    }

    /// The clusters the state holds.
    pub fn cluster_names(&self) -> Vec<String> {
        let m = self.clusters.lock().unwrap_or_else(|e| e.into_inner());
        m.keys().cloned().collect()
    }

    /// The cluster's part, locked: placement holds it while it decides and while it writes
    /// its outcome through (on the embedded store, from the one to the other). What the
    /// applier left pending for it is applied first.
    pub async fn cluster(&self, cluster: &str) -> OwnedMutexGuard<ClusterState> {
        let slot = self.slot(cluster);
        let mut cs = slot.state.clone().lock_owned().await;
        self.take_pending(cluster, &slot, &mut cs);
        cs
    }

    /// The generation of `instance_arn`: it moves whenever the instance or one of its tasks
    /// changes.
    pub fn subscribe(&self, instance_arn: &str) -> watch::Receiver<u64> {
        let mut m = self.polls.lock().unwrap_or_else(|e| e.into_inner());
        m.entry(instance_arn.to_string())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }

    /// How often `instance_arn`'s polls have been woken (0 if it never polled).
    pub fn generation(&self, instance_arn: &str) -> u64 {
        let m = self.polls.lock().unwrap_or_else(|e| e.into_inner());
        m.get(instance_arn).map(|tx| *tx.borrow()).unwrap_or(0)
    }

    pub(crate) fn wake<'a>(&self, instance_arns: impl IntoIterator<Item = &'a str>) {
        let m = self.polls.lock().unwrap_or_else(|e| e.into_inner());
        for arn in instance_arns {
            if let Some(tx) = m.get(arn) {
                tx.send_modify(|g| *g = g.wrapping_add(1));
            }
        }
    }

    /// Wakes every held poll: what every agent is sent changed (a security group's rules).
    pub(crate) fn wake_all(&self) {
        let m = self.polls.lock().unwrap_or_else(|e| e.into_inner());
        for tx in m.values() {
            tx.send_modify(|g| *g = g.wrapping_add(1));
        }
    }

    pub fn applied(&self) -> Revision {
        *self.applied.borrow()
    }

    /// Waits until every change up to `rev` is applied; `false` if that takes too long.
    pub async fn wait_applied(&self, rev: Revision) -> bool {
        let mut rx = self.applied.subscribe();
        tokio::time::timeout(CATCH_UP, rx.wait_for(|r| *r >= rev))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Reads every instance and task from the store and makes them the state; returns the
    /// revision to follow from.
    pub async fn load(&self, store: &dyn Store) -> Result<Revision, StoreError> {
        let rev = store.revision().await?;
        for kv in store.range(crate::keys::PRESENCE, None, None).await? {
            self.heard_elsewhere(&kv);
        }
        let mut fresh: HashMap<String, ClusterState> = HashMap::new();
        for prefix in ["instances/", "tasks/"] {
            for kv in store.range(prefix, None, None).await? {
                let Some((_, cluster, _)) = parse_key(&kv.key) else {
                    continue;
                };
                let cs = fresh.entry(cluster.to_string()).or_default();
                Self::apply_put(cs, &kv);
            }
        }
        // Every cluster once: those the state knows and those the store has.
        let names: BTreeSet<String> = {
            let m = self.clusters.lock().unwrap_or_else(|e| e.into_inner());
            m.keys().cloned().chain(fresh.keys().cloned()).collect()
        };
        for name in names {
            let mut cs = fresh.remove(&name).unwrap_or_default();
            let arns: Vec<String> = cs.instances.keys().cloned().collect();
            for arn in &arns {
                cs.refile(arn, &self.presence);
            }
            *self.cluster(&name).await = cs;
            self.wake(arns.iter().map(String::as_str));
        }
        // The mirrors read after `rev`: what the watch replays from it they hold already.
        for m in &self.mirrors {
            m.load(store, rev).await?;
        }
        self.applied.send_replace(rev);
        Ok(rev)
    }

    /// A `presence/` record: when some server last heard an agent.
    fn heard_elsewhere(&self, kv: &KeyValue) {
        let Some(arn) = crate::keys::presence_instance(&kv.key) else {
            return;
        };
        if let Ok(at) = serde_json::from_slice::<f64>(&kv.value) {
            self.presence.heard_at(arn, at, crate::now_epoch());
        }
    }

    /// Applies a put to a cluster's part; the instances it touched.
    fn apply_put(cs: &mut ClusterState, kv: &KeyValue) -> Vec<String> {
        let Some((kind, _, id)) = parse_key(&kv.key) else {
            return Vec::new();
        };
        // What the state already holds at this revision (written through) is not decoded again.
        let known = match kind {
            "instances" => cs.key_revisions.get(&kv.key).copied(),
            _ => cs.tasks.get(id).map(|t| t.mod_revision),
        };
        if known.is_some_and(|r| r >= kv.mod_revision) {
            return Vec::new();
        }
        match kind {
            "instances" => match serde_json::from_slice::<ContainerInstance>(&kv.value) {
                Ok(ci) => cs.put_instance(kv, ci).into_iter().collect(),
                Err(e) => {
                    tracing::error!(key = kv.key, error = %e, "unreadable instance record");
                    Vec::new()
                }
            },
            _ => match serde_json::from_slice::<ecs::Task>(&kv.value) {
                Ok(t) => cs
                    .put_task(id, &t, kv.mod_revision)
                    .iter()
                    .map(|a| a.to_string())
                    .collect(),
                Err(e) => {
                    tracing::error!(key = kv.key, error = %e, "unreadable task record");
                    Vec::new()
                }
            },
        }
    }

    /// Applies consecutive revisions' changes (in revision order) together. A cluster whose
    /// lock is free takes them at once; one whose lock is held (a placement holds it while it
    /// commits, which takes long when the store is busy) gets them as pending changes that
    /// whoever takes the lock next applies first ([`State::cluster`]), and a task that waits
    /// for the lock so that they are applied (and their polls woken) even if nobody else
    /// comes. Either way they count as applied at once: no holder of the lock from now on
    /// misses them. An applier that waited for each cluster's lock fell further behind the
    /// busier the cluster was, and readers waiting for it to catch up timed out.
    fn apply_batches(self: &Arc<Self>, batches: &[&Batch]) {
        let Some(last) = batches.last() else {
            return;
        };
        for m in &self.mirrors {
            for batch in batches {
                m.apply(batch);
            }
        }
        let mut by_cluster: BTreeMap<&str, Vec<&berth_store::Event>> = BTreeMap::new();
        for e in batches.iter().flat_map(|b| &b.events) {
            if let Some((_, cluster, _)) = parse_key(&e.kv.key) {
                by_cluster.entry(cluster).or_default().push(e);
            } else if let Some(key) = e.kv.key.strip_prefix("services/") {
                self.mark_dirty(key);
            } else if e.kind == EventKind::Put {
                self.heard_elsewhere(&e.kv);
            }
        }
        for (cluster, events) in by_cluster {
            let slot = self.slot(cluster);
            match slot.state.clone().try_lock_owned() {
                Ok(mut cs) => {
                    self.take_pending(cluster, &slot, &mut cs);
                    self.apply_events(cluster, &mut cs, events.into_iter());
                }
                Err(_) => {
                    let mut pending = slot.pending.lock().unwrap_or_else(|e| e.into_inner());
                    pending.events.extend(events.into_iter().cloned());
                    if !std::mem::replace(&mut pending.drainer, true) {
                        let (state, cluster) = (self.clone(), cluster.to_string());
                        tokio::spawn(async move {
                            let slot = state.slot(&cluster);
                            let mut cs = slot.state.clone().lock_owned().await;
                            slot.pending
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .drainer = false;
                            state.take_pending(&cluster, &slot, &mut cs);
                        });
                    }
                }
            }
        }
        self.applied.send_modify(|r| *r = (*r).max(last.revision));
    }

    /// Applies what the applier left for `cluster` while its lock was held; `cs` is that
    /// lock's guard.
    fn take_pending(&self, cluster: &str, slot: &Slot, cs: &mut ClusterState) {
        let (events, refile) = {
            let mut p = slot.pending.lock().unwrap_or_else(|e| e.into_inner());
            (std::mem::take(&mut p.events), std::mem::take(&mut p.refile))
        };
        if !events.is_empty() {
            self.apply_events(cluster, cs, events.iter());
        }
        for arn in &refile {
            cs.refile(arn, &self.presence);
        }
    }

    /// Applies changes to one cluster's part in revision order, refiles the instances they
    /// touched, marks the services they changed and wakes the polls of the instances.
    fn apply_events<'a>(
        &self,
        cluster: &str,
        cs: &mut ClusterState,
        events: impl Iterator<Item = &'a berth_store::Event>,
    ) {
        let mut touched = Vec::new();
        for e in events {
            match e.kind {
                EventKind::Put => touched.extend(Self::apply_put(cs, &e.kv)),
                EventKind::Delete => match parse_key(&e.kv.key) {
                    Some(("instances", _, _)) => {
                        touched.extend(cs.delete_instance(&e.kv.key, e.kv.mod_revision))
                    }
                    Some((_, _, id))
                        if cs
                            .tasks
                            .get(id)
                            .is_some_and(|t| t.mod_revision < e.kv.mod_revision) =>
                    {
                        touched.extend(cs.drop_task(id).iter().map(|a| a.to_string()));
                    }
                    _ => {}
                },
            }
        }
        touched.sort();
        touched.dedup();
        for arn in &touched {
            cs.refile(arn, &self.presence);
        }
        for name in cs.take_dirty_services() {
            self.mark_dirty(&format!("{cluster}/{name}"));
        }
        self.wake(touched.iter().map(String::as_str));
    }

    /// Marks the service `CLUSTER/NAME` (every service of the cluster for `CLUSTER/`) for the
    /// service loop and wakes it.
    pub(crate) fn mark_dirty(&self, service: &str) {
        self.dirty
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(service.to_string());
        self.dirty_changed.notify_one();
    }

    /// The services (`CLUSTER/NAME`, or `CLUSTER/` for all of a cluster's) whose tasks, record
    /// or instances changed since the last call.
    pub fn take_dirty(&self) -> BTreeSet<String> {
        std::mem::take(&mut *self.dirty.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Completes when a service is marked changed (or already was since the last wait).
    pub async fn dirty_changed(&self) {
        self.dirty_changed.notified().await
    }

    /// The applier: follows the store from `from` until `stop` says so; reloads when the watch
    /// falls behind or its history is gone. What the watch has ready is applied together
    /// ([`State::apply_batches`]), up to [`APPLY_AT_ONCE`] revisions at a time.
    pub async fn follow(
        self: &Arc<Self>,
        store: Arc<dyn Store>,
        mut from: Revision,
        mut stop: watch::Receiver<bool>,
    ) {
        loop {
            let mut w = match store.watch("", from).await {
                Ok(w) => w,
                Err(e) => {
                    tracing::warn!(error = %e, "the cluster state reloads");
                    for m in &self.mirrors {
                        m.stale();
                    }
                    from = self.reload(&*store, &mut stop).await;
                    continue;
                }
            };
            loop {
                let first = tokio::select! {
                    b = w.rx.recv() => b,
                    _ = stop.wait_for(|s| *s) => return,
                };
                let mut ready = Vec::new();
                let mut next = first;
                let failed = loop {
                    match next {
                        Some(Ok(batch)) => ready.push(batch),
                        Some(Err(e)) => break Some(e),
                        // The watch ended: what came before it is applied first.
                        None => break None,
                    }
                    if ready.len() == APPLY_AT_ONCE {
                        break None;
                    }
                    next = match w.rx.try_recv() {
                        Ok(b) => Some(b),
                        Err(_) => break None,
                    };
                };
                if !ready.is_empty() {
                    let batches: Vec<&Batch> = ready.iter().map(|b| &**b).collect();
                    self.apply_batches(&batches);
                }
                match failed {
                    Some(e) => {
                        tracing::warn!(error = %e, "the cluster state fell behind; reloading");
                        for m in &self.mirrors {
                            m.stale();
                        }
                        from = self.reload(&*store, &mut stop).await;
                        break;
                    }
                    None if ready.is_empty() => return,
                    None => {}
                }
            }
            if *stop.borrow() {
                return;
            }
        }
    }

    async fn reload(&self, store: &dyn Store, stop: &mut watch::Receiver<bool>) -> Revision {
        loop {
            match self.load(store).await {
                Ok(rev) => return rev,
                Err(e) => {
                    tracing::error!(error = %e, "reloading the cluster state failed");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = stop.wait_for(|s| *s) => return self.applied(),
                    }
                }
            }
        }
    }

    /// Every cluster's instances and tasks, for comparing with a fresh load.
    #[cfg(test)]
    pub async fn dump(&self) -> BTreeMap<String, (Vec<InstanceEntry>, Vec<TaskSummary>)> {
        let names: Vec<String> = {
            let m = self.clusters.lock().unwrap_or_else(|e| e.into_inner());
            m.keys().cloned().collect()
        };
        let mut out = BTreeMap::new();
        for name in names {
            let cs = self.cluster(&name).await;
            let mut instances: Vec<InstanceEntry> = cs.instances.values().cloned().collect();
            instances.sort_by(|a, b| a.key.cmp(&b.key));
            let mut tasks: Vec<TaskSummary> = cs.tasks.values().cloned().collect();
            tasks.sort_by(|a, b| a.id.cmp(&b.id));
            if !instances.is_empty() || !tasks.is_empty() {
                out.insert(name, (instances, tasks));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::{Meta, Registration};
    use crate::Control;
    use berth_agent_proto::TaskReport;
    use berth_store::Embedded;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Step {
        /// A host with this much memory (MiB) in this zone joins.
        Join(i64, u8),
        /// RunTask of `count` copies of a task of this memory, spread or binpacked.
        Run(usize, usize, bool),
        /// Two such RunTasks at once (each commits with the cluster's lock let go).
        RunTogether(usize, usize, bool),
        /// The agent reports task `n` (of those placed so far) STOPPED.
        Stop(usize),
        /// Instance `n` turns DRAINING.
        Drain(usize),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (256i64..4096, 0u8..3).prop_map(|(m, z)| Step::Join(m, z)),
            (1usize..6, 0usize..3, any::<bool>()).prop_map(|(c, m, b)| Step::Run(c, m, b)),
            (1usize..4, 0usize..3, any::<bool>()).prop_map(|(c, m, b)| Step::RunTogether(c, m, b)),
            (0usize..40).prop_map(Step::Stop),
            (0usize..8).prop_map(Step::Drain),
        ]
    }

    /// A control plane on an in-memory store whose placements let the cluster's lock go
    /// while they commit (as on etcd) or not (as on the embedded store).
    async fn control_with(lets_go: bool) -> (Control, watch::Sender<bool>) {
        control_on(Arc::new(Embedded::in_memory().unwrap()), lets_go).await
    }

    /// The same on `store`: the cluster `default` and the families small, medium and large
    /// (128, 512 and 1,024 MiB).
    async fn control_on(store: Arc<dyn Store>, lets_go: bool) -> (Control, watch::Sender<bool>) {
        let c = Control::new(
            store,
            crate::Config {
                placement_lets_go: Some(lets_go),
                ..Default::default()
            },
        );
        let from = c.load_state().await.unwrap();
        let (stop, rx) = watch::channel(false);
        let cc = c.clone();
        tokio::spawn(async move { cc.run_state(from, rx).await });
        let caller = crate::Caller {
            access_key: "AKIA".into(),
            principal_arn: "arn:aws:iam::000000000000:root".into(),
            instance: None,
        };
        c.create_cluster(
            &caller,
            ecs::CreateClusterRequest {
                cluster_name: Some("default".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        for (family, memory) in [("small", 128), ("medium", 512), ("large", 1024)] {
            let r: ecs::RegisterTaskDefinitionRequest = serde_json::from_value(serde_json::json!({
                "family": family,
                "containerDefinitions": [{"name": "app", "image": "busybox", "memory": memory}]
            }))
            .unwrap();
            c.register_task_definition(&caller, r).await.unwrap();
        }
        (c, stop)
    }

    async fn control() -> (Control, watch::Sender<bool>) {
        control_with(false).await
    }

    /// What a fresh read of the store gives, to compare the followed state with.
    async fn fresh(c: &Control) -> BTreeMap<String, (Vec<InstanceEntry>, Vec<TaskSummary>)> {
        let s = State::new(c.agents.clone());
        s.load(&*c.store).await.unwrap();
        s.dump().await
    }

    /// A change that arrives while a cluster's lock is held (a placement committing) is
    /// counted as applied at once, is there for the lock's next holder, and wakes the
    /// instance's polls once the lock is free even if nobody else takes it.
    #[test]
    fn changes_arriving_while_the_lock_is_held_wait_for_its_next_holder() {
        crate::test_runtime().block_on(async {
            let (c, _stop) = control().await;
            let ci = c
                .register_instance(
                    "default",
                    Registration {
                        instance_id: "i-00000000000000001".into(),
                        cpu: 1024,
                        memory: 1024,
                        ..Default::default()
                    },
                )
                .await
                .unwrap();
            let arn = ci.container_instance_arn.clone().unwrap();
            c.caught_up().await.unwrap();
            let mut polls = c.state.subscribe(&arn);
            polls.borrow_and_update();
            let held = c.state.cluster("default").await;
            let kv = c
                .store
                .range("instances/default/", None, None)
                .await
                .unwrap()
                .remove(0);
            let mut record: ContainerInstance = serde_json::from_slice(&kv.value).unwrap();
            record.status = Some("DRAINING".into());
            let txn = berth_store::Txn::new().replace(&kv, serde_json::to_vec(&record).unwrap());
            assert!(matches!(
                c.store.txn(txn).await.unwrap(),
                berth_store::TxnOutcome::Committed(_)
            ));
            tokio::time::timeout(Duration::from_secs(5), c.caught_up())
                .await
                .expect("the applier waited for the held lock")
                .unwrap();
            assert!(
                !polls.has_changed().unwrap(),
                "woken before the change was applied"
            );
            drop(held);
            tokio::time::timeout(Duration::from_secs(5), polls.changed())
                .await
                .expect("the instance's polls were not woken once the lock was free")
                .unwrap();
            let cs = c.state.cluster("default").await;
            assert_eq!(
                cs.instance(&arn).unwrap().record.status.as_deref(),
                Some("DRAINING"),
                "the lock's next holder does not see the change"
            );
        });
    }

    /// What every task definition requires of its host (`requiresAttributes`).
    const DOCKER_API: &str = "com.amazonaws.ecs.capability.docker-remote-api.1.17";

    /// A store whose next transaction that writes a task waits until it is let go: a
    /// placement caught in the middle of its commit.
    #[derive(Debug)]
    struct Gated {
        inner: Embedded,
        armed: std::sync::atomic::AtomicBool,
        held: tokio::sync::Notify,
        open: tokio::sync::Semaphore,
    }

    #[async_trait::async_trait]
    impl Store for Gated {
        async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
            self.inner.get(key).await
        }
        async fn range(
            &self,
            prefix: &str,
            start_after: Option<&str>,
            limit: Option<usize>,
        ) -> Result<Vec<KeyValue>, StoreError> {
            self.inner.range(prefix, start_after, limit).await
        }
        async fn txn(&self, txn: berth_store::Txn) -> Result<berth_store::TxnOutcome, StoreError> {
            let writes_task = txn.ops.iter().any(|op| {
                matches!(op, berth_store::Op::Put { key, .. } if key.starts_with("tasks/") || key.contains("/tasks/"))
            });
            if writes_task && self.armed.swap(false, std::sync::atomic::Ordering::SeqCst) {
                self.held.notify_one();
                self.open.acquire().await.unwrap().forget();
            }
            self.inner.txn(txn).await
        }
        async fn watch(
            &self,
            prefix: &str,
            after: Revision,
        ) -> Result<berth_store::Watch, StoreError> {
            self.inner.watch(prefix, after).await
        }
        async fn revision(&self) -> Result<Revision, StoreError> {
            self.inner.revision().await
        }
        async fn delete_prefix(&self, prefix: &str) -> Result<usize, StoreError> {
            self.inner.delete_prefix(prefix).await
        }
    }

    /// A placement lets the cluster's lock go while it commits: readers and a placement on
    /// another instance go on meanwhile, a placement that picks the same instance waits for it
    /// to land and then places on what is left, and nothing is over-committed.
    #[test]
    fn a_placement_committing_holds_its_instances_not_the_cluster() {
        crate::test_runtime().block_on(async {
            let gated = Arc::new(Gated {
                inner: Embedded::in_memory().unwrap(),
                armed: false.into(),
                held: tokio::sync::Notify::new(),
                open: tokio::sync::Semaphore::new(0),
            });
            let (c, _stop) = control_on(gated.clone(), true).await;
            let mut hosts = Vec::new();
            for (n, memory) in [(1, 2048), (2, 3072)] {
                let ci = c
                    .register_instance(
                        "default",
                        Registration {
                            instance_id: format!("i-{n:017x}"),
                            cpu: 2048,
                            memory,
                            attributes: [(DOCKER_API.to_string(), None)].into(),
                            ..Default::default()
                        },
                    )
                    .await
                    .unwrap();
                let arn = ci.container_instance_arn.unwrap();
                c.agents.heartbeat(&arn);
                hosts.push(arn);
            }
            c.caught_up().await.unwrap();
            let start_on = |host: &str| {
                let (c, host) = (c.clone(), host.to_string());
                tokio::spawn(async move {
                    c.start_tasks(
                        Some("default"),
                        Some("large"),
                        Pool::Instances(vec![host]),
                        1,
                        Meta::default(),
                    )
                    .await
                    .map(|(tasks, failures)| (tasks.len(), failures.len()))
                })
            };
            gated.armed.store(true, std::sync::atomic::Ordering::SeqCst);
            let first = start_on(&hosts[0]);
            if tokio::time::timeout(Duration::from_secs(5), gated.held.notified())
                .await
                .is_err()
            {
                panic!("the first placement never committed: {:?}", first.await);
            }

            // Its commit is held: a reader does not wait for it.
            let listed = tokio::time::timeout(
                Duration::from_secs(2),
                c.list_tasks(ecs::ListTasksRequest {
                    cluster: Some("default".into()),
                    ..Default::default()
                }),
            )
            .await
            .expect("ListTasks waited for a placement's commit")
            .unwrap();
            assert_eq!(
                listed.task_arns.unwrap_or_default().len(),
                0,
                "a task listed before its commit"
            );
            // Nor does a RunTask: binpacked, it would pick the first instance (1,024 MiB left
            // as the index sees it, against 3,072), and goes around it while it is in flight.
            let other = tokio::time::timeout(
                Duration::from_secs(2),
                c.start_tasks(
                    Some("default"),
                    Some("large"),
                    Pool::LaunchType("EC2".into()),
                    1,
                    Meta {
                        strategies: vec![ecs::PlacementStrategy {
                            r#type: Some("binpack".into()),
                            field: Some("memory".into()),
                        }],
                        ..Default::default()
                    },
                ),
            )
            .await
            .expect("a RunTask waited for the held commit although another instance had room")
            .unwrap();
            assert_eq!(
                other
                    .0
                    .iter()
                    .map(|t| t.container_instance_arn.clone().unwrap())
                    .collect::<Vec<_>>(),
                vec![hosts[1].clone()],
                "the RunTask did not go to the instance not in flight"
            );
            // One on the same instance waits for the first to land.
            let same = start_on(&hosts[0]);
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert!(
                !same.is_finished(),
                "a placement on the instance in flight did not wait for it"
            );

            gated.open.add_permits(1);
            let first = first.await.unwrap().unwrap();
            assert_eq!(first, (1, 0), "the held placement did not place its copy");
            let same = tokio::time::timeout(Duration::from_secs(5), same)
                .await
                .expect("the waiting placement was never let go")
                .unwrap()
                .unwrap();
            assert_eq!(
                same,
                (1, 0),
                "the second copy did not fit in what the first left"
            );
            // The first instance is now full.
            let full = start_on(&hosts[0]).await.unwrap().unwrap();
            assert_eq!(full, (0, 1), "a copy placed on a full instance");
            c.caught_up().await.unwrap();
            assert_eq!(
                c.state.dump().await,
                fresh(&c).await,
                "the state differs from the store"
            );
            for (ci, _) in c.instances_of("default").await.unwrap() {
                let memory = ci
                    .remaining_resources
                    .unwrap_or_default()
                    .into_iter()
                    .find(|r| r.name.as_deref() == Some("MEMORY"))
                    .and_then(|r| r.integer_value);
                let want = match ci.container_instance_arn.as_deref() == Some(hosts[0].as_str()) {
                    true => 0,
                    false => 2048,
                };
                assert_eq!(
                    memory,
                    Some(want),
                    "instance {:?}: remaining memory",
                    ci.ec2_instance_id
                );
            }
        });
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// After any sequence of joins, placements, stops and drains, the state kept by the
        /// watch equals a fresh read of the store; every instance's candidate in the index
        /// equals one built from the store's records; and placing through the index picks
        /// exactly what the full scan over the same instances picks.
        #[test]
        fn the_state_follows_the_store_and_places_as_the_full_scan(
            steps in prop::collection::vec(step(), 1..16),
            reload in any::<bool>(),
            contended in any::<bool>(),
            lets_go in any::<bool>(),
        ) {
            crate::test_runtime().block_on(async {
                let (c, _stop) = control_with(lets_go).await;
                // Something else holding the cluster's lock now and then, as placements and
                // polls do, so changes also reach the state as pending ones.
                let holder = contended.then(|| {
                    let state = c.state.clone();
                    tokio::spawn(async move {
                        loop {
                            let cs = state.cluster("default").await;
                            tokio::time::sleep(Duration::from_millis(2)).await;
                            drop(cs);
                            tokio::time::sleep(Duration::from_millis(1)).await;
                        }
                    })
                });
                let mut hosts: Vec<String> = Vec::new();
                let mut tasks: Vec<(String, String)> = Vec::new();
                for st in steps {
                    match st {
                        Step::Join(memory, zone) => {
                            let ci = c.register_instance("default", Registration {
                                instance_id: format!("i-{:017x}", hosts.len() + 1),
                                cpu: 2048,
                                memory,
                                attributes: [
                                    ("ecs.availability-zone".to_string(), Some(format!("z{zone}"))),
                                    (DOCKER_API.to_string(), None),
                                ].into(),
                                ..Default::default()
                            }).await.unwrap();
                            let arn = ci.container_instance_arn.unwrap();
                            c.agents.heartbeat(&arn);
                            hosts.push(arn);
                        }
                        Step::Run(count, size, binpack) => {
                            let family = ["small", "medium", "large"][size];
                            let strategy = if binpack { ("binpack", "memory") } else { ("spread", "instanceId") };
                            let strategies = vec![ecs::PlacementStrategy {
                                r#type: Some(strategy.0.into()),
                                field: Some(strategy.1.into()),
                            }];
                            // The index and the scan agree on the same instances first.
                            let rules = Rules {
                                strategies: crate::placement::strategies(&strategies).unwrap(),
                                group: format!("family:{family}"),
                                seed: 1,
                                ..Default::default()
                            };
                            let d = Demand { memory: [128, 512, 1024][size], ..Default::default() };
                            {
                                let mut cs = c.state.cluster("default").await;
                                cs.refresh_presence("EC2", &c.agents);
                                let mut scan = cs.index_instances("EC2");
                                let want = berth_scheduler::place(&mut scan, &d, &rules, count);
                                let want: Vec<String> = want.placed.iter().map(|&i| scan[i].arn.clone()).collect();
                                if let Some(got) = cs.place(&Pool::LaunchType("EC2".into()), &d, &rules, count, &c.agents, &HashSet::new()) {
                                    assert_eq!(got.copies, want, "the index and the full scan place differently");
                                    cs.undo(&got.touched, &c.agents);
                                }
                            }
                            let placed = c.start_tasks(Some("default"), Some(family), Pool::LaunchType("EC2".into()), count, Meta {
                                strategies,
                                ..Default::default()
                            }).await;
                            if let Ok((ts, _)) = placed {
                                for t in ts {
                                    tasks.push((t.task_arn.unwrap(), t.container_instance_arn.unwrap()));
                                }
                            }
                        }
                        Step::RunTogether(count, size, binpack) => {
                            let family = ["small", "medium", "large"][size];
                            let strategy = if binpack { ("binpack", "memory") } else { ("spread", "instanceId") };
                            let run = || c.start_tasks(Some("default"), Some(family), Pool::LaunchType("EC2".into()), count, Meta {
                                strategies: vec![ecs::PlacementStrategy {
                                    r#type: Some(strategy.0.into()),
                                    field: Some(strategy.1.into()),
                                }],
                                ..Default::default()
                            });
                            let (a, b) = tokio::join!(run(), run());
                            for (ts, _) in [a, b].into_iter().flatten() {
                                for t in ts {
                                    tasks.push((t.task_arn.unwrap(), t.container_instance_arn.unwrap()));
                                }
                            }
                        }
                        Step::Stop(n) if !tasks.is_empty() => {
                            let (task, host) = tasks[n % tasks.len()].clone();
                            c.apply_report("default", &host, &TaskReport {
                                task_arn: task,
                                last_status: "STOPPED".into(),
                                ..Default::default()
                            }).await.unwrap();
                        }
                        Step::Drain(n) if !hosts.is_empty() => {
                            c.update_container_instances_state(ecs::UpdateContainerInstancesStateRequest {
                                cluster: Some("default".into()),
                                container_instances: Some(vec![hosts[n % hosts.len()].clone()]),
                                status: Some("DRAINING".into()),
                            }).await.unwrap();
                        }
                        _ => {}
                    }
                    c.caught_up().await.unwrap();
                    assert_eq!(c.state.dump().await, fresh(&c).await, "the state differs from the store");
                    if reload {
                        // What the applier does when it falls behind: reload in place.
                        c.state.load(&*c.store).await.unwrap();
                        assert_eq!(c.state.dump().await, fresh(&c).await, "a reload lost state");
                    }
                    let cs = c.state.cluster("default").await;
                    let mut indexed: Vec<String> = cs.index_instances("EC2").into_iter().map(|c| c.arn).collect();
                    indexed.sort();
                    let mut placeable: Vec<String> = c.instances_of("default").await.unwrap().into_iter()
                        .filter(|(ci, _)| ci.status.as_deref() != Some("INACTIVE"))
                        .filter_map(|(ci, _)| ci.container_instance_arn)
                        .collect();
                    placeable.sort();
                    assert_eq!(indexed, placeable, "the index holds other instances than the store");
                    for (ci, _) in c.instances_of("default").await.unwrap() {
                        for r in ci.remaining_resources.iter().flatten() {
                            assert!(r.integer_value.unwrap_or(0) >= 0, "instance {:?} over-committed: {r:?}", ci.ec2_instance_id);
                        }
                    }
                    let reference = c.candidates("default").await.unwrap();
                    for mut got in cs.index_instances("EC2") {
                        // agentConnected changes with time, not writes: placement refreshes it.
                        got.agent_connected = c.agents.is_connected(&got.arn);
                        let want = reference.iter().find(|(_, _, w)| w.arn == got.arn).map(|(_, _, w)| w);
                        assert_eq!(Some(&got), want, "the index's instance differs from the store's record");
                    }
                }
                if let Some(h) = holder {
                    h.abort();
                }
            });
        }
    }
}
