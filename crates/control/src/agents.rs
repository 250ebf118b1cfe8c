//! The server's side of the agent protocol ([`berth_agent_proto`]): joining with the
//! registration token, the long poll that hands an agent its desired tasks, and the reports
//! that record what the agent observed.
//!
//! Presence: every poll is a heartbeat, and an instance is `agentConnected` while its last
//! heartbeat is younger than [`Config::agent_timeout`](crate::Config) (see [`crate::presence`]
//! for how several servers share it).

use crate::apply::Registration;
use crate::auth::{random_secret, AccessKey};
use crate::read::task_id_of;
use crate::{decode, encode, keys, plan, store_error, Control};
use berth_agent_proto::{
    DesiredTask, JoinRequest, JoinResponse, PollRequest, PollResponse, ReportRequest,
    ReportResponse, SecurityPolicy,
};
use berth_api::ecs::{self};
use berth_api::{EcsError, ErrorKind};
use berth_model::arn::{Arn, ResourceKind};
use berth_model::status::InstanceStatus;
use berth_store::Txn;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::time::Duration;

/// The longest a poll is held, whatever the agent asks for.
const MAX_POLL_WAIT: Duration = Duration::from_secs(30);

/// How long a woken poll waits for more changes before it answers.
const COALESCE: Duration = Duration::from_millis(20);

/// The plan of each task an agent was last handed, by instance ARN then task id: built once
/// per plan revision of the task, with a digest of its content, so a poll reads and plans only
/// the tasks that changed; and what the agent was last sent, so an answer can carry only the
/// changes.
#[derive(Debug, Default)]
pub struct PlanCache(std::sync::Mutex<HashMap<String, InstancePlans>>);

#[derive(Debug, Default)]
struct InstancePlans {
    /// By task id: one cluster's tasks, so id order is task ARN order.
    plans: BTreeMap<String, Planned>,
    /// The version last answered with a set, and what it held.
    sent: Option<(String, Sent)>,
}

/// Each task's (ARN, plan digest) in a set sent to an agent, by task id.
type Sent = BTreeMap<String, (String, [u8; 32])>;

#[derive(Debug)]
struct Planned {
    rev: berth_store::Revision,
    plan: Option<DesiredTask>,
    digest: [u8; 32],
}

/// What one answer hands an agent.
struct Answer {
    tasks: Vec<DesiredTask>,
    removed: Vec<String>,
    changes: bool,
}

impl PlanCache {
    /// Forgets every plan (a reset: the same ARNs may come back meaning something else).
    pub(crate) fn clear(&self) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// The ids of `live` (id, plan revision) whose plan is missing or older.
    fn stale(&self, instance: &str, live: &[(String, berth_store::Revision)]) -> Vec<String> {
        let m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let known = m.get(instance).map(|i| &i.plans);
        live.iter()
            .filter(|(id, rev)| known.and_then(|k| k.get(id)).is_none_or(|p| p.rev < *rev))
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Stores `fresh` plans, forgets tasks no longer live, and returns a digest of the live
    /// set (task ARNs and plan digests in ARN order).
    fn update(
        &self,
        instance: &str,
        live: &[(String, berth_store::Revision)],
        fresh: Vec<(String, berth_store::Revision, Option<DesiredTask>)>,
    ) -> [u8; 32] {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let known = &mut m.entry(instance.to_string()).or_default().plans;
        for (id, rev, plan) in fresh {
            let digest = Sha256::digest(serde_json::to_vec(&plan).unwrap_or_default()).into();
            known.insert(id, Planned { rev, plan, digest });
        }
        if known.len() != live.len() || live.iter().any(|(id, _)| !known.contains_key(id)) {
            let ids: std::collections::HashSet<&str> =
                live.iter().map(|(id, _)| id.as_str()).collect();
            known.retain(|id, _| ids.contains(id.as_str()));
        }
        let mut h = Sha256::new();
        for p in known.values() {
            if let Some(t) = &p.plan {
                h.update(t.task_arn.as_bytes());
                h.update(p.digest);
            }
        }
        h.finalize().into()
    }

    /// The security groups of the instance's `awsvpc` tasks.
    fn security_groups(&self, instance: &str) -> BTreeSet<String> {
        let m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        m.get(instance)
            .map(|i| {
                i.plans
                    .values()
                    .filter_map(|p| p.plan.as_ref()?.network.as_ref())
                    .flat_map(|n| n.security_groups.iter().cloned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The instances with an `awsvpc` task in any of `groups`.
    fn instances_in(&self, groups: &BTreeSet<String>) -> Vec<String> {
        let m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        m.iter()
            .filter(|(_, i)| {
                i.plans
                    .values()
                    .filter_map(|p| p.plan.as_ref()?.network.as_ref())
                    .any(|n| n.security_groups.iter().any(|g| groups.contains(g)))
            })
            .map(|(arn, _)| arn.clone())
            .collect()
    }

    /// The answer that takes an agent holding `known` to `version` (the set
    /// [`PlanCache::update`] last left): only the changes when the agent accepts them and holds
    /// the set last sent, the whole set otherwise.
    fn answer(
        &self,
        instance: &str,
        known: Option<&str>,
        version: &str,
        changes_ok: bool,
    ) -> Answer {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let entry = m.entry(instance.to_string()).or_default();
        let now: Sent = entry
            .plans
            .iter()
            .filter_map(|(id, p)| {
                p.plan
                    .as_ref()
                    .map(|t| (id.clone(), (t.task_arn.clone(), p.digest)))
            })
            .collect();
        let base = entry
            .sent
            .as_ref()
            .filter(|(v, _)| changes_ok && Some(v.as_str()) == known)
            .map(|(_, s)| s);
        let out = match base {
            Some(sent) => Answer {
                tasks: entry
                    .plans
                    .iter()
                    .filter(|(id, p)| sent.get(*id).is_none_or(|(_, d)| *d != p.digest))
                    .filter_map(|(_, p)| p.plan.clone())
                    .collect(),
                removed: sent
                    .iter()
                    .filter(|(id, _)| !now.contains_key(*id))
                    .map(|(_, (arn, _))| arn.clone())
                    .collect(),
                changes: true,
            },
            None => Answer {
                tasks: entry
                    .plans
                    .values()
                    .filter_map(|p| p.plan.clone())
                    .collect(),
                removed: Vec::new(),
                changes: false,
            },
        };
        entry.sent = Some((version.to_string(), now));
        out
    }
}

fn denied(message: impl Into<String>) -> EcsError {
    EcsError::new(ErrorKind::AccessDenied, message)
}

/// `(cluster, instance id)` of a container instance ARN.
pub(crate) fn instance_parts(arn: &str) -> Result<(String, String), EcsError> {
    let a = Arn::parse(arn)?;
    match (a.kind, a.id.split_once('/')) {
        (ResourceKind::ContainerInstance, Some((c, id))) => Ok((c.to_string(), id.to_string())),
        _ => Err(denied(format!("'{arn}' is not a container instance"))),
    }
}

/// Constant-time equality, so the token cannot be guessed byte by byte from timings.
fn same(a: &str, b: &str) -> bool {
    let (x, y) = (Sha256::digest(a.as_bytes()), Sha256::digest(b.as_bytes()));
    x.iter()
        .zip(y.iter())
        .fold(0u8, |acc, (p, q)| acc | (p ^ q))
        == 0
}

impl Control {
    /// The registration token of an ACTIVE cluster, created on first use. Each cluster has its
    /// own: a token lets a host join that cluster and no other.
    pub async fn ensure_join_token(&self, cluster: &str) -> Result<String, EcsError> {
        if cluster == crate::FARGATE_POOL {
            self.ensure_fargate_pool().await?;
        }
        let (c, _) = self.active_cluster(Some(cluster)).await?;
        let key = keys::join_token(&c.cluster_name.unwrap_or_default());
        for _ in 0..crate::CAS_ATTEMPTS {
            if let Some((t, _)) = self.get_record::<String>(&key).await? {
                return Ok(t);
            }
            let token = format!("bjt-{}", random_secret(40));
            let txn = Txn::new()
                .unchanged(&key, None)
                .put(key.clone(), encode(&token)?);
            if self.commit(txn).await? {
                return Ok(token);
            }
        }
        Err(crate::conflict_exhausted("creating the join token"))
    }

    /// The cluster record of the pool of Fargate capacity, made on first use.
    async fn ensure_fargate_pool(&self) -> Result<(), EcsError> {
        let key = keys::cluster(crate::FARGATE_POOL);
        if self.get_record::<ecs::Cluster>(&key).await?.is_some() {
            return Ok(());
        }
        let c = ecs::Cluster {
            cluster_name: Some(crate::FARGATE_POOL.into()),
            cluster_arn: Some(self.arn(ResourceKind::Cluster, crate::FARGATE_POOL)),
            status: Some("ACTIVE".into()),
            ..Default::default()
        };
        // Another request may have made it first: that one stands.
        self.commit(Txn::new().unchanged(&key, None).put(key, encode(&c)?))
            .await?;
        Ok(())
    }

    /// Registers the agent's host and hands back the agent's own key.
    pub async fn agent_join(&self, r: JoinRequest) -> Result<JoinResponse, EcsError> {
        let cluster = self.cluster_name(Some(&r.cluster))?;
        // Whether the cluster exists or not, the answer is the same: the token is not valid.
        let expected = self
            .get_record::<String>(&keys::join_token(&cluster))
            .await?
            .map(|(t, _)| t);
        if !expected.is_some_and(|t| same(&r.token, &t)) {
            return Err(denied(format!(
                "the cluster registration token is not valid for cluster {cluster}"
            )));
        }
        let h = r.host;
        if h.cpu < 0 || h.memory_mib <= 0 {
            return Err(EcsError::invalid(format!(
                "the host reports {} CPU units and {} MiB of memory",
                h.cpu, h.memory_mib
            )));
        }
        let id = &h.instance_id;
        if !(id.starts_with("i-") || id.starts_with("mi-"))
            || id.len() > 64
            || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            return Err(EcsError::invalid(format!(
                "instance id '{id}' must look like i-… or mi-…"
            )));
        }
        let ci = self
            .register_instance(
                &cluster,
                Registration {
                    instance_id: h.instance_id.clone(),
                    cpu: i64::from(h.cpu),
                    memory: i64::from(h.memory_mib),
                    ports: h.reserved_ports.iter().copied().collect(),
                    ports_udp: BTreeSet::new(),
                    attributes: h.attributes.clone(),
                    version_info: Some(ecs::VersionInfo {
                        agent_version: Some(h.agent_version.clone()),
                        agent_hash: None,
                        docker_version: Some(format!("DockerVersion: {}", h.docker_version)),
                    }),
                    tags: Vec::new(),
                },
            )
            .await?;
        let arn = ci.container_instance_arn.clone().unwrap_or_default();
        let key = AccessKey {
            access_key_id: format!("AKIA{}", random_secret(16).to_ascii_uppercase()),
            secret_access_key: random_secret(40),
            principal_arn: format!(
                "arn:aws:sts::{}:assumed-role/berth-agent/{}",
                self.config.account_id, h.instance_id
            ),
            instance: Some(arn.clone()),
        };
        let txn = Txn::new()
            .unchanged(&keys::access_key(&key.access_key_id), None)
            .put(keys::access_key(&key.access_key_id), encode(&key)?);
        if !self.commit(txn).await? {
            return Err(crate::conflict_exhausted("creating the agent's key"));
        }
        self.heard(&arn).await;
        tracing::info!(instance = arn, host = h.instance_id, "agent joined");
        let (cluster_rec, _) = self.active_cluster(Some(&cluster)).await?;
        Ok(JoinResponse {
            container_instance_arn: arn,
            cluster_arn: cluster_rec.cluster_arn.unwrap_or_default(),
            region: self.config.region.clone(),
            access_key_id: key.access_key_id,
            secret_access_key: key.secret_access_key,
        })
    }

    /// The instance's status, the version of the set of tasks it should be running or
    /// stopping (whose plans are then in the plan cache), and the rules of its `awsvpc` tasks'
    /// security groups (part of the version). O(the instance's tasks) from the cluster state;
    /// only tasks whose plan changed since it was built are read from the store.
    async fn desired_version(
        &self,
        cluster: &str,
        instance_arn: &str,
    ) -> Result<(String, String, BTreeMap<String, SecurityPolicy>), EcsError> {
        let (status, mut live) = {
            let cs = self.state.cluster(cluster).await;
            let status = cs
                .instance(instance_arn)
                .map(|e| e.record.status.clone().unwrap_or_default());
            (status, cs.live_tasks_at(instance_arn))
        };
        // Where each task lives: its host's cluster, but for Fargate capacity, whose tasks
        // live in their own clusters, each cluster that has some there.
        let mut home: HashMap<String, String> = HashMap::new();
        if cluster == crate::FARGATE_POOL {
            for name in self.state.cluster_names() {
                if name == crate::FARGATE_POOL {
                    continue;
                }
                let there = self.state.cluster(&name).await.live_tasks_at(instance_arn);
                for (id, _) in &there {
                    home.insert(id.clone(), name.clone());
                }
                live.extend(there);
            }
            live.sort();
        }
        let status = match status {
            Some(s) => s,
            None => {
                // Joined a moment ago, or deregistered: the store decides.
                let (_, id) = instance_parts(instance_arn)?;
                match self
                    .get_record::<ecs::ContainerInstance>(&keys::instance(cluster, &id))
                    .await?
                {
                    Some((ci, _)) => ci.status.unwrap_or_default(),
                    None => InstanceStatus::Inactive.as_str().to_string(),
                }
            }
        };
        let stale = self.plans.stale(instance_arn, &live);
        let keys: Vec<String> = stale
            .iter()
            .map(|id| keys::task(home.get(id).map_or(cluster, String::as_str), id))
            .collect();
        let mut fresh = Vec::with_capacity(keys.len());
        for kv in self
            .store
            .get_many(&keys)
            .await
            .map_err(store_error)?
            .into_iter()
            .flatten()
        {
            let t: ecs::Task = decode(&kv)?;
            let id = task_id_of(t.task_arn.as_deref().unwrap_or_default())
                .unwrap_or_default()
                .to_string();
            if t.container_instance_arn.as_deref() != Some(instance_arn)
                || t.last_status.as_deref() == Some("STOPPED")
            {
                fresh.push((id, kv.mod_revision, None));
                continue;
            }
            let td_arn = t.task_definition_arn.clone().unwrap_or_default();
            // An awsvpc task's interface, which the agent sets up.
            let network = match crate::ec2::eni_id(&t) {
                Some(eni) => self
                    .get_record::<crate::ec2::EniRecord>(&keys::ec2_eni(&eni))
                    .await?
                    .map(|(e, _)| e.plan()),
                None => None,
            };
            match self.task_definition_for_plan(&td_arn).await {
                Ok(td) => fresh.push((
                    id,
                    kv.mod_revision,
                    Some(DesiredTask {
                        network,
                        ..plan::desired_task(&t, &td)
                    }),
                )),
                // One unreadable task must not keep the agent from all the others.
                Err(e) => {
                    tracing::error!(task = ?t.task_arn, error = %e, "task definition of a placed task is gone");
                    fresh.push((id, kv.mod_revision, None));
                }
            }
        }
        let digest = self.plans.update(instance_arn, &live, fresh);
        let groups = self.plans.security_groups(instance_arn);
        let policies = if groups.is_empty() {
            BTreeMap::new()
        } else {
            self.ec2_snapshot().await?.policies(&groups)
        };
        let mut h = Sha256::new();
        h.update(status.as_bytes());
        h.update(digest);
        if !policies.is_empty() {
            h.update(serde_json::to_vec(&policies).unwrap_or_default());
        }
        Ok((status, hex::encode(&h.finalize()[..12]), policies))
    }

    /// Wakes the held polls of the agents whose tasks are in a security group with a rule
    /// whose source is a group: an `awsvpc` task placed or stopped changed some group's
    /// members, and so those rules' addresses. Each woken poll answers only if its own rules
    /// changed.
    pub(crate) async fn wake_group_sources(&self) -> Result<(), EcsError> {
        let referencing = self.ec2_snapshot().await?.groups_with_group_sources();
        if referencing.is_empty() {
            return Ok(());
        }
        let instances = self.plans.instances_in(&referencing);
        self.state.wake(instances.iter().map(String::as_str));
        Ok(())
    }

    /// [`Control::wake_group_sources`] in the background, after a commit that added or took
    /// away an `awsvpc` task's interface.
    pub(crate) fn members_changed(&self) {
        let c = self.clone();
        tokio::spawn(async move {
            if let Err(e) = c.wake_group_sources().await {
                tracing::warn!(error = %e, "cannot tell agents their groups' members changed");
            }
        });
    }

    /// The long poll: answers at once when the desired set differs from `known_version`,
    /// otherwise when it changes, when `wait_ms` has passed, or when `stop` completes. It
    /// waits on its own instance's generation in the cluster state, which only that instance's
    /// changes move.
    pub async fn agent_poll(
        &self,
        instance_arn: &str,
        r: PollRequest,
        stop: impl Future<Output = ()>,
    ) -> Result<PollResponse, EcsError> {
        let (cluster, _) = instance_parts(instance_arn)?;
        let deadline =
            tokio::time::Instant::now() + Duration::from_millis(r.wait_ms).min(MAX_POLL_WAIT);
        let mut stop = std::pin::pin!(stop);
        let mut generation = self.state.subscribe(instance_arn);
        loop {
            generation.borrow_and_update();
            let (instance_status, version, policies) =
                self.desired_version(&cluster, instance_arn).await?;
            // A deregistered instance's presence is not shared again (its record went with it).
            if instance_status != InstanceStatus::Inactive.as_str() {
                self.heard(instance_arn).await;
            }
            let answer = |unchanged: bool| {
                let a = if unchanged {
                    Answer {
                        tasks: Vec::new(),
                        removed: Vec::new(),
                        changes: false,
                    }
                } else {
                    self.plans.answer(
                        instance_arn,
                        r.known_version.as_deref(),
                        &version,
                        r.accepts_changes,
                    )
                };
                PollResponse {
                    tasks: a.tasks,
                    removed: a.removed,
                    changes: a.changes,
                    version: version.clone(),
                    instance_status: instance_status.clone(),
                    registry: None,
                    security_groups: if unchanged {
                        BTreeMap::new()
                    } else {
                        policies.clone()
                    },
                    unchanged,
                }
            };
            if r.known_version.as_deref() != Some(version.as_str())
                || instance_status == InstanceStatus::Inactive.as_str()
            {
                return Ok(answer(false));
            }
            // Nothing changed in the wait (or the server is stopping): an agent that accepts it
            // is told so instead of being sent the same set again.
            let at_end = || Ok(answer(r.accepts_unchanged));
            if tokio::time::Instant::now() >= deadline {
                return at_end();
            }
            tokio::select! {
                _ = generation.changed() => {
                    // Placements come in bursts: answer once for the burst, not per task.
                    tokio::time::sleep(COALESCE).await;
                }
                _ = tokio::time::sleep_until(deadline) => return at_end(),
                _ = &mut stop => return at_end(),
            }
        }
    }

    /// Deletes shared presence records of instances that are deregistered (or gone), which a
    /// poll in flight while its instance was deregistered can leave behind. Returns how many.
    pub async fn purge_stale_presence(&self) -> Result<usize, EcsError> {
        if self.root.leases().is_none() {
            return Ok(0);
        }
        let records = self
            .store
            .range(keys::PRESENCE, None, None)
            .await
            .map_err(store_error)?;
        let mut n = 0;
        for kv in records {
            // Judged only on a state that has seen everything up to the record.
            if self.state.applied() < kv.mod_revision {
                continue;
            }
            let Some(arn) = keys::presence_instance(&kv.key) else {
                continue;
            };
            let live = match instance_parts(arn) {
                Ok((cluster, _)) => self
                    .state
                    .cluster(&cluster)
                    .await
                    .instance(arn)
                    .is_some_and(|e| {
                        e.record.status.as_deref() != Some(InstanceStatus::Inactive.as_str())
                    }),
                Err(_) => false,
            };
            if live {
                continue;
            }
            let txn = Txn::new()
                .when(berth_store::Compare::ModRevision(
                    kv.key.clone(),
                    kv.mod_revision,
                ))
                .delete(kv.key.clone());
            if self.commit(txn).await? {
                n += 1;
            }
        }
        Ok(n)
    }

    /// A heartbeat from the agent; on a store several servers share, written for the others
    /// too (at most every quarter of the timeout; a failed write waits for the next).
    async fn heard(&self, instance_arn: &str) {
        self.agents.heartbeat(instance_arn);
        if self.root.leases().is_some() && self.agents.due_to_publish(instance_arn) {
            let Ok(at) = encode(&crate::now_epoch()) else {
                return;
            };
            let put = Txn::new().put(keys::presence(instance_arn), at);
            if let Err(e) = self.store.txn(put).await {
                tracing::warn!(instance = instance_arn, error = %e, "sharing the agent's presence failed");
            }
        }
    }

    /// Records the agent's reports; each is applied at most once in effect.
    pub async fn agent_report(
        &self,
        instance_arn: &str,
        r: ReportRequest,
    ) -> Result<ReportResponse, EcsError> {
        let (host_cluster, _) = instance_parts(instance_arn)?;
        self.heard(instance_arn).await;
        let mut applied = 0;
        for rep in &r.reports {
            // A task lives in its own cluster, which is its host's but for Fargate capacity.
            let cluster = match Arn::parse(&rep.task_arn) {
                Ok(a) if a.kind == ResourceKind::Task => {
                    a.id.split_once('/')
                        .map(|(c, _)| c.to_string())
                        .unwrap_or_else(|| host_cluster.clone())
                }
                _ => host_cluster.clone(),
            };
            if self.apply_report(&cluster, instance_arn, rep).await? {
                applied += 1;
            }
        }
        Ok(ReportResponse { applied })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole() {
        assert!(same("bjt-abc", "bjt-abc"));
        assert!(!same("bjt-abc", "bjt-abd"));
        assert!(!same("bjt-abc", "bjt-ab"));
    }

    fn plan(id: &str, desired: &str) -> DesiredTask {
        DesiredTask {
            task_arn: format!("arn:aws:ecs:us-east-1:0:task/c/{id}"),
            cluster_arn: "arn:aws:ecs:us-east-1:0:cluster/c".into(),
            family: "f".into(),
            revision: 1,
            desired_status: desired.into(),
            network_mode: "bridge".into(),
            containers: Vec::new(),
            volumes: Vec::new(),
            stop_reason: None,
            cpu: None,
            memory: None,
            ephemeral_storage_gib: None,
            network: None,
        }
    }

    #[test]
    fn answers_carry_only_the_changes_to_an_agent_holding_the_last_set() {
        let c = PlanCache::default();
        let live = |ids: &[(&str, u64)]| -> Vec<(String, u64)> {
            ids.iter().map(|(i, r)| (i.to_string(), *r)).collect()
        };
        let l1 = live(&[("a", 1), ("b", 1)]);
        assert_eq!(c.stale("i", &l1), ["a", "b"]);
        c.update(
            "i",
            &l1,
            vec![
                ("a".into(), 1, Some(plan("a", "RUNNING"))),
                ("b".into(), 1, Some(plan("b", "RUNNING"))),
            ],
        );
        let first = c.answer("i", None, "v1", true);
        assert!(!first.changes, "an agent with nothing gets the whole set");
        assert_eq!(first.tasks.len(), 2);

        // b is asked to stop, a is gone, c is new.
        let l2 = live(&[("b", 2), ("c", 2)]);
        assert_eq!(
            c.stale("i", &l2),
            ["b", "c"],
            "only what changed is planned again"
        );
        c.update(
            "i",
            &l2,
            vec![
                ("b".into(), 2, Some(plan("b", "STOPPED"))),
                ("c".into(), 2, Some(plan("c", "RUNNING"))),
            ],
        );
        let delta = c.answer("i", Some("v1"), "v2", true);
        assert!(delta.changes);
        let arns: Vec<&str> = delta.tasks.iter().map(|t| t.task_arn.as_str()).collect();
        assert_eq!(
            arns,
            [
                "arn:aws:ecs:us-east-1:0:task/c/b",
                "arn:aws:ecs:us-east-1:0:task/c/c"
            ]
        );
        assert_eq!(delta.removed, ["arn:aws:ecs:us-east-1:0:task/c/a"]);

        // An agent that holds another version, or does not take changes, gets the whole set.
        let full = c.answer("i", Some("v1"), "v2", true);
        assert!(!full.changes && full.tasks.len() == 2);
        let full = c.answer("i", Some("v2"), "v2", false);
        assert!(!full.changes && full.tasks.len() == 2);
    }
}
