//! ECS's side of load balancing. A service's `loadBalancers` are checked against ELB's
//! records when it is created or updated; each of its tasks is registered in the target
//! groups once RUNNING (bridge and host mode: its instance and host port); its targets'
//! health is folded into what the service reconciler sees of it; and a task the reconciler
//! stops is first deregistered and drained, and only stopped once its targets are gone, so no
//! request is sent to a task that is going away.
//!
//! A service of task sets (the EXTERNAL and CODE_DEPLOY controllers) balances per set: each
//! task goes behind its own set's load balancers ([`Balancers`]), so a blue/green tool moves
//! traffic between sets by pointing a listener at another set's target group.
//!
//! What was registered for a task lives in its own record (`task-targets/CLUSTER/TASK_ID`),
//! written before the registration, so a crash between the two leaves a record the next
//! pass completes or undoes, never a target nobody will deregister.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use berth_api::ecs::{self, Service};
use berth_api::{elbv2, EcsError, ErrorKind};
use berth_reconcile::deploy;
use berth_store::{KeyValue, Txn};
use serde::{Deserialize, Serialize};

use crate::{decode, encode, keys, now_epoch, store_error, Control};

/// One target of a task: its group, id (instance id or IP) and port.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) struct TargetRef {
    pub group: String,
    pub id: String,
    pub port: i32,
}

/// What Berth registered for one task of a service, and, once the reconciler stopped it,
/// why and since when it drains.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct TaskTargets {
    pub service: String,
    pub targets: Vec<TargetRef>,
    #[serde(default)]
    pub drain: Option<Drain>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Drain {
    pub reason: String,
    pub since: f64,
}

/// A task's load-balancer health, as the reconciler takes it.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct TaskLb {
    /// Registered in every group, and healthy in each.
    pub healthy: bool,
    /// The first group that says it is unhealthy.
    pub unhealthy_in: Option<String>,
    /// Deregistered and draining: the reconciler already stopped it.
    pub draining: bool,
}

/// Which load balancers each task of a service goes behind: the service's own, or, for a
/// service of task sets, its set's (none for a set being deleted: its tasks only leave).
#[derive(Debug, Clone, Default)]
pub(crate) struct Balancers {
    own: Vec<ecs::LoadBalancer>,
    sets: Option<HashMap<String, Vec<ecs::LoadBalancer>>>,
}

impl Balancers {
    pub(crate) fn of(s: &Service) -> Self {
        if !crate::task_sets::uses_task_sets(s) {
            return Self {
                own: s.load_balancers.clone().unwrap_or_default(),
                sets: None,
            };
        }
        let sets = s
            .task_sets
            .iter()
            .flatten()
            .filter(|t| t.status.as_deref() != Some("DRAINING"))
            .map(|t| {
                (
                    t.id.clone().unwrap_or_default(),
                    t.load_balancers.clone().unwrap_or_default(),
                )
            })
            .collect();
        Self {
            own: Vec::new(),
            sets: Some(sets),
        }
    }

    /// The load balancers of the task a deployment (or task set) `started_by` started.
    pub(crate) fn of_task(&self, started_by: &str) -> &[ecs::LoadBalancer] {
        match &self.sets {
            None => &self.own,
            Some(sets) => sets.get(started_by).map(Vec::as_slice).unwrap_or_default(),
        }
    }

    pub(crate) fn any(&self) -> bool {
        match &self.sets {
            None => !self.own.is_empty(),
            Some(sets) => sets.values().any(|l| !l.is_empty()),
        }
    }
}

/// The stop reason ECS gives a task whose target failed its group's health checks.
pub(crate) fn elb_unhealthy_reason(group: &str) -> String {
    format!("Task failed ELB health checks in (target-group {group})")
}

/// How long past its groups' deregistration delay a drain may last before the task is
/// stopped anyway (the targets' sweep runs twice a second).
const DRAIN_SLACK: f64 = 5.0;

impl Control {
    /// ECS's checks of a service's `loadBalancers` against its task definition and ELB's
    /// records: a target group (Classic Load Balancers do not exist here) that a listener
    /// uses, of the target type the network mode needs, and a container that maps the port.
    pub(crate) async fn check_load_balancers(
        &self,
        lbs: &[ecs::LoadBalancer],
        td: &ecs::TaskDefinition,
    ) -> Result<(), EcsError> {
        if lbs.is_empty() {
            return Ok(());
        }
        if lbs.len() > 5 {
            return Err(EcsError::invalid(
                "A service can have at most 5 load balancers (target groups)",
            ));
        }
        let snap = self.elb_snapshot().await?;
        let mode = td.network_mode.as_deref().unwrap_or("bridge");
        let mut seen = BTreeSet::new();
        for lb in lbs {
            if lb.load_balancer_name.is_some() {
                return Err(EcsError::invalid(
                    "Classic Load Balancers (loadBalancerName) are not supported by Berth; give a targetGroupArn",
                ));
            }
            let Some(arn) = lb.target_group_arn.as_deref() else {
                return Err(EcsError::invalid(
                    "targetGroupArn is required for each load balancer",
                ));
            };
            let container = lb.container_name.as_deref().unwrap_or_default();
            let Some(port) = lb.container_port else {
                return Err(EcsError::invalid(format!(
                    "containerPort is required for the load balancer with target group {arn}"
                )));
            };
            if !seen.insert((arn.to_string(), container.to_string(), port)) {
                return Err(EcsError::invalid(format!(
                    "The load balancer with target group {arn} is given twice for container {container} port {port}"
                )));
            }
            let Some(tg) = snap.target_group(arn) else {
                return Err(EcsError::invalid(format!(
                    "The target group {arn} does not exist."
                )));
            };
            if tg.users.is_empty() {
                return Err(EcsError::invalid(format!(
                    "The target group with targetGroupArn {arn} does not have an associated load balancer."
                )));
            }
            let target_type = tg.tg.target_type.as_deref().unwrap_or("instance");
            match (mode, target_type) {
                ("bridge" | "host", "instance") | ("awsvpc", "ip") => {}
                _ => {
                    return Err(EcsError::invalid(format!(
                        "The provided target group {arn} has target type {target_type}, which is incompatible with the {mode} network mode specified in the task definition."
                    )))
                }
            }
            let maps = td.container_definitions.iter().flatten().any(|c| {
                c.name.as_deref() == Some(container)
                    && c.port_mappings
                        .iter()
                        .flatten()
                        .any(|m| m.container_port == Some(port))
            });
            if !maps {
                return Err(EcsError::invalid(format!(
                    "The container {container} did not have a container port {port} defined."
                )));
            }
        }
        Ok(())
    }

    /// The load-balancer view of a service's tasks (`None` for a service without load
    /// balancers and nothing left registered).
    pub(crate) async fn service_lb(
        &self,
        cluster: &str,
        s: &Service,
        tasks: &[deploy::ServiceTask],
    ) -> Result<Option<HashMap<String, TaskLb>>, EcsError> {
        let records = self.task_targets(cluster, s).await?;
        let balancers = Balancers::of(s);
        if !balancers.any() && records.is_empty() {
            return Ok(None);
        }
        let snap = self.elb_snapshot().await?;
        let mut out = HashMap::new();
        for t in tasks {
            let id = deploy::task_id(&t.arn);
            let Some((_, rec)) = records.get(id) else {
                // Without load balancers (any more), a task nothing registered is not held back.
                out.insert(
                    t.arn.clone(),
                    TaskLb {
                        healthy: balancers.of_task(&t.deployment).is_empty(),
                        ..TaskLb::default()
                    },
                );
                continue;
            };
            let mut lb = TaskLb {
                healthy: !rec.targets.is_empty(),
                unhealthy_in: None,
                draining: rec.drain.is_some(),
            };
            for r in &rec.targets {
                let state = match (&self.elb, snap.has_target(r)) {
                    (Some(proxy), true) => proxy.target_health(&r.group, &r.id, r.port as u16).0,
                    _ => berth_elb::health::State::Unavailable,
                };
                match state {
                    // A group no listener uses any more gets no traffic to wait for.
                    berth_elb::health::State::Healthy | berth_elb::health::State::Unused => {}
                    berth_elb::health::State::Unhealthy => {
                        lb.healthy = false;
                        lb.unhealthy_in.get_or_insert(r.group.clone());
                    }
                    _ => lb.healthy = false,
                }
            }
            out.insert(t.arn.clone(), lb);
        }
        Ok(Some(out))
    }

    /// The `task-targets/` records of a service's tasks, by task id.
    async fn task_targets(
        &self,
        cluster: &str,
        s: &Service,
    ) -> Result<BTreeMap<String, (KeyValue, TaskTargets)>, EcsError> {
        let name = s.service_name.as_deref().unwrap_or_default();
        let kvs = self
            .store
            .range(&keys::task_targets_of(cluster), None, None)
            .await
            .map_err(store_error)?;
        let mut out = BTreeMap::new();
        for kv in kvs {
            let rec: TaskTargets = decode(&kv)?;
            if rec.service == name {
                let id = kv.key.rsplit('/').next().unwrap_or_default().to_string();
                out.insert(id, (kv, rec));
            }
        }
        Ok(out)
    }

    /// Starts draining a task the reconciler stops: deregisters its targets and notes why it
    /// stops. `None` when it has no targets (stop it at once); else the groups it left.
    pub(crate) async fn begin_drain(
        &self,
        cluster: &str,
        task_arn: &str,
        reason: &str,
    ) -> Result<Option<Vec<String>>, EcsError> {
        let id = deploy::task_id(task_arn);
        let key = keys::task_targets(cluster, id);
        let Some((mut rec, kv)) = self.get_record::<TaskTargets>(&key).await? else {
            return Ok(None);
        };
        if rec.drain.is_some() {
            return Ok(Some(Vec::new()));
        }
        if rec.targets.is_empty() {
            return Ok(None);
        }
        let left = self.deregister_refs(&rec.targets).await?;
        rec.drain = Some(Drain {
            reason: reason.to_string(),
            since: now_epoch(),
        });
        if !self.commit(Txn::new().replace(&kv, encode(&rec)?)).await? {
            return Err(EcsError::server(format!(
                "the targets of task {id} changed while it began draining"
            )));
        }
        Ok(Some(left.into_iter().map(|r| r.group).collect()))
    }

    /// ECS's events for targets deregistered from each group.
    pub(crate) fn deregistered_events(service: &str, groups: &[String]) -> Vec<String> {
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for g in groups {
            *counts.entry(g).or_default() += 1;
        }
        counts
            .into_iter()
            .map(|(g, n)| {
                format!("(service {service}) deregistered {n} targets in (target-group {g})")
            })
            .collect()
    }

    /// Registers the service's RUNNING tasks, deregisters the targets of tasks that stopped
    /// or stop, and stops the tasks whose draining is over. Returns ECS's events for what it
    /// did.
    pub(crate) async fn sync_targets(
        &self,
        cluster: &str,
        s: &Service,
        tasks: &[deploy::ServiceTask],
    ) -> Result<Vec<String>, EcsError> {
        let name = s.service_name.clone().unwrap_or_default();
        let balancers = Balancers::of(s);
        let records = self.task_targets(cluster, s).await?;
        let snap = self.elb_snapshot().await?;
        let by_id: HashMap<&str, &deploy::ServiceTask> =
            tasks.iter().map(|t| (deploy::task_id(&t.arn), t)).collect();
        let mut registered: BTreeMap<String, usize> = BTreeMap::new();
        let mut failures: BTreeSet<String> = BTreeSet::new();
        let mut deregistered: BTreeMap<String, usize> = BTreeMap::new();
        let now = now_epoch();

        // Records first: drains that ended, and tasks that stop or are gone.
        for (id, (kv, rec)) in &records {
            let task = by_id.get(id.as_str());
            if let Some(drain) = &rec.drain {
                let delay = rec
                    .targets
                    .iter()
                    .map(|r| snap.deregistration_delay(&r.group))
                    .fold(0.0, f64::max);
                let gone = rec.targets.iter().all(|r| !snap.has_target(r));
                if gone || now >= drain.since + delay + DRAIN_SLACK || task.is_none() {
                    if task.is_some() {
                        self.stop_task_as(cluster, id, deploy::STOP_CODE, &drain.reason)
                            .await?;
                    }
                    self.commit(Txn::new().replace(kv, Vec::new()).delete(kv.key.clone()))
                        .await?;
                }
                continue;
            }
            let live = task.is_some_and(|t| t.phase() == berth_reconcile::service::Phase::Running);
            if !live {
                // Stopped by someone else (or it died): nothing to drain for.
                for r in self.deregister_refs(&rec.targets).await? {
                    *deregistered.entry(r.group).or_default() += 1;
                }
                self.commit(Txn::new().replace(kv, Vec::new()).delete(kv.key.clone()))
                    .await?;
            }
        }

        // RUNNING tasks get their targets.
        if balancers.any() {
            let cs = self.state.cluster(cluster).await;
            let hosts: HashMap<String, String> = cs
                .instances()
                .filter_map(|e| {
                    Some((
                        e.record.container_instance_arn.clone()?,
                        e.record.ec2_instance_id.clone()?,
                    ))
                })
                .collect();
            drop(cs);
            for t in tasks.iter().filter(|t| {
                t.phase() == berth_reconcile::service::Phase::Running
                    && !balancers.of_task(&t.deployment).is_empty()
            }) {
                let id = deploy::task_id(&t.arn);
                if records.get(id).is_some_and(|(_, r)| r.drain.is_some()) {
                    continue;
                }
                // An awsvpc task is its own target (its address); others are their host's.
                let host = hosts.get(&t.host).map(String::as_str);
                let Some((task, _)) = self
                    .get_record::<ecs::Task>(&keys::task(cluster, id))
                    .await?
                else {
                    continue;
                };
                // A task keeps the targets it was registered with (ECS does not move a
                // running task to new load balancers: a new deployment brings them).
                let had: Vec<TargetRef> = records
                    .get(id)
                    .map(|(_, r)| r.targets.clone())
                    .unwrap_or_default();
                let wanted = if had.is_empty() {
                    targets_of(balancers.of_task(&t.deployment), &task, host)
                } else {
                    had.clone()
                };
                let missing: Vec<&TargetRef> = wanted
                    .iter()
                    .filter(|r| !had.contains(r) || !snap.has_target(r))
                    .collect();
                if missing.is_empty() {
                    continue;
                }
                // The record first: a crash after it leaves targets the next pass knows.
                let rec = TaskTargets {
                    service: name.clone(),
                    targets: wanted.clone(),
                    drain: None,
                };
                let key = keys::task_targets(cluster, id);
                let seen = records.get(id).map(|(kv, _)| kv);
                if !self
                    .commit(
                        Txn::new()
                            .unchanged(&key, seen)
                            .put(key.clone(), encode(&rec)?),
                    )
                    .await?
                {
                    continue;
                }
                for r in missing {
                    match self.register_refs(std::slice::from_ref(r)).await {
                        Ok(()) => *registered.entry(r.group.clone()).or_default() += 1,
                        Err(e) => {
                            tracing::warn!(task = %t.arn, group = r.group, error = %e, "registering a target failed");
                            failures.insert(format!(
                                "(service {name}) failed to register targets in (target-group {}) with (error {})",
                                r.group, e.message
                            ));
                        }
                    }
                }
            }
        }
        let mut events: Vec<String> = failures.into_iter().collect();
        for (g, n) in registered {
            events.push(format!(
                "(service {name}) registered {n} targets in (target-group {g})"
            ));
        }
        let left: Vec<String> = deregistered
            .into_iter()
            .flat_map(|(g, n)| std::iter::repeat_n(g, n))
            .collect();
        events.extend(Self::deregistered_events(&name, &left));
        Ok(events)
    }

    /// Wakes the service loop for every cluster with tasks behind load balancers: a target's
    /// health or draining moved.
    pub async fn wake_lb_services(&self) {
        let Ok(kvs) = self.store.range(keys::TASK_TARGETS, None, None).await else {
            return;
        };
        let clusters: BTreeSet<&str> = kvs
            .iter()
            .filter_map(|kv| kv.key.strip_prefix(keys::TASK_TARGETS)?.split('/').next())
            .collect();
        for c in clusters {
            self.state.mark_dirty(&format!("{c}/"));
        }
    }

    /// Registers targets through ELB's own path (its lock, its checks, the data plane).
    async fn register_refs(&self, refs: &[TargetRef]) -> Result<(), EcsError> {
        let _one_writer = self.elb_lock.lock().await;
        let snap = self.elb_snapshot().await?;
        for (group, targets) in group_refs(refs) {
            self.register_targets(&snap, &group, targets).await?;
        }
        drop(_one_writer);
        self.sync_elb().await;
        Ok(())
    }

    /// Deregisters those of `refs` still registered; returns them.
    async fn deregister_refs(&self, refs: &[TargetRef]) -> Result<Vec<TargetRef>, EcsError> {
        let _one_writer = self.elb_lock.lock().await;
        let snap = self.elb_snapshot().await?;
        let live: Vec<TargetRef> = refs
            .iter()
            .filter(|r| snap.has_live_target(r))
            .cloned()
            .collect();
        for (group, targets) in group_refs(&live) {
            match self.deregister_targets(&snap, &group, targets, false).await {
                Ok(()) => {}
                // A group deleted meanwhile took its targets with it.
                Err(e) if e.kind == ErrorKind::TargetGroupNotFound => {}
                Err(e) => return Err(e),
            }
        }
        drop(_one_writer);
        if !live.is_empty() {
            self.sync_elb().await;
        }
        Ok(live)
    }
}

fn group_refs(refs: &[TargetRef]) -> BTreeMap<String, Vec<elbv2::TargetDescription>> {
    let mut out: BTreeMap<String, Vec<elbv2::TargetDescription>> = BTreeMap::new();
    for r in refs {
        out.entry(r.group.clone())
            .or_default()
            .push(elbv2::TargetDescription {
                id: Some(r.id.clone()),
                port: Some(r.port),
                ..Default::default()
            });
    }
    out
}

/// A RUNNING task's targets: per load balancer, its instance and the host port Docker bound
/// to the container's port (bridge), or the container port itself (host); for an awsvpc task
/// (an `ip` target group), its own private address and the container port.
pub(crate) fn targets_of(
    lbs: &[ecs::LoadBalancer],
    task: &ecs::Task,
    instance_id: Option<&str>,
) -> Vec<TargetRef> {
    let mut out = Vec::new();
    let address = crate::ec2::private_ip(task);
    for lb in lbs {
        let (Some(group), Some(port)) = (&lb.target_group_arn, lb.container_port) else {
            continue;
        };
        if let Some(ip) = &address {
            out.push(TargetRef {
                group: group.clone(),
                id: ip.clone(),
                port,
            });
            continue;
        }
        let Some(instance_id) = instance_id else {
            continue;
        };
        let container = task
            .containers
            .iter()
            .flatten()
            .find(|c| c.name == lb.container_name);
        let host_port = container.and_then(|c| {
            c.network_bindings
                .iter()
                .flatten()
                .find(|b| {
                    b.container_port == Some(port)
                        && b.protocol.as_deref().unwrap_or("tcp") == "tcp"
                })
                .and_then(|b| b.host_port)
        });
        if let Some(host_port) = host_port {
            out.push(TargetRef {
                group: group.clone(),
                id: instance_id.to_string(),
                port: host_port,
            });
        }
    }
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task_with(bindings: Vec<ecs::NetworkBinding>) -> ecs::Task {
        ecs::Task {
            containers: Some(vec![ecs::Container {
                name: Some("web".into()),
                network_bindings: Some(bindings),
                ..Default::default()
            }]),
            ..Default::default()
        }
    }

    #[test]
    fn a_task_is_registered_at_the_host_port_docker_bound() {
        let lbs = vec![ecs::LoadBalancer {
            target_group_arn: Some("tg".into()),
            container_name: Some("web".into()),
            container_port: Some(80),
            ..Default::default()
        }];
        let task = task_with(vec![
            ecs::NetworkBinding {
                container_port: Some(80),
                host_port: Some(32768),
                protocol: Some("udp".into()),
                ..Default::default()
            },
            ecs::NetworkBinding {
                container_port: Some(80),
                host_port: Some(32769),
                protocol: Some("tcp".into()),
                ..Default::default()
            },
        ]);
        assert_eq!(
            targets_of(&lbs, &task, Some("i-1")),
            vec![TargetRef {
                group: "tg".into(),
                id: "i-1".into(),
                port: 32769
            }],
            "the TCP binding of the container port, on the task's instance"
        );
        let unbound = task_with(Vec::new());
        assert!(
            targets_of(&lbs, &unbound, Some("i-1")).is_empty(),
            "no binding yet: nothing to register"
        );
    }
}
