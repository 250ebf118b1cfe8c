//! The server's side of the agent protocol ([`berth_agent_proto`]): joining with the
//! registration token, the long poll that hands an agent its desired tasks, and the reports
//! that record what the agent observed.
//!
//! Presence is kept in memory: every poll is a heartbeat, and an instance is `agentConnected`
//! while its last heartbeat is younger than [`Config::agent_timeout`](crate::Config).

use crate::apply::Registration;
use crate::auth::{random_secret, AccessKey};
use crate::{decode, encode, keys, plan, store_error, Control};
use berth_agent_proto::{
    DesiredTask, JoinRequest, JoinResponse, PollRequest, PollResponse, ReportRequest,
    ReportResponse,
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
/// per revision of the task, with a digest of its content, so a poll reads and plans only the
/// tasks that changed.
#[derive(Debug, Default)]
pub struct PlanCache(std::sync::Mutex<HashMap<String, BTreeMap<String, Planned>>>);

#[derive(Debug)]
struct Planned {
    rev: berth_store::Revision,
    plan: Option<DesiredTask>,
    digest: [u8; 32],
}

impl PlanCache {
    /// The ids of `live` (id, revision) whose plan is missing or older than the state's.
    fn stale(&self, instance: &str, live: &[(String, berth_store::Revision)]) -> Vec<String> {
        let m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let known = m.get(instance);
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
        let known = m.entry(instance.to_string()).or_default();
        for (id, rev, plan) in fresh {
            let digest = Sha256::digest(serde_json::to_vec(&plan).unwrap_or_default()).into();
            known.insert(id, Planned { rev, plan, digest });
        }
        if known.len() != live.len() || live.iter().any(|(id, _)| !known.contains_key(id)) {
            let ids: std::collections::HashSet<&str> =
                live.iter().map(|(id, _)| id.as_str()).collect();
            known.retain(|id, _| ids.contains(id.as_str()));
        }
        // An instance's tasks are of one cluster: id order is task ARN order.
        let mut h = Sha256::new();
        for p in known.values() {
            if let Some(t) = &p.plan {
                h.update(t.task_arn.as_bytes());
                h.update(p.digest);
            }
        }
        h.finalize().into()
    }

    /// The live plans of `instance` as [`PlanCache::update`] last left them, in ARN order.
    fn plans(&self, instance: &str) -> Vec<DesiredTask> {
        let m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        m.get(instance)
            .into_iter()
            .flat_map(|k| k.values())
            .filter_map(|p| p.plan.clone())
            .collect()
    }
}

fn denied(message: impl Into<String>) -> EcsError {
    EcsError::new(ErrorKind::AccessDenied, message)
}

/// `(cluster, instance id)` of a container instance ARN.
fn instance_parts(arn: &str) -> Result<(String, String), EcsError> {
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
        self.agents.heartbeat(&arn);
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

    /// The instance's status and the version of the set of tasks it should be running or
    /// stopping, whose plans are then in the plan cache. O(the instance's tasks) from the
    /// cluster state; only tasks whose plan changed since it was built are read from the store.
    async fn desired_version(
        &self,
        cluster: &str,
        instance_arn: &str,
    ) -> Result<(String, String), EcsError> {
        let (status, live) = {
            let cs = self.state.cluster(cluster).await;
            let status = cs
                .instance(instance_arn)
                .map(|e| e.record.status.clone().unwrap_or_default());
            (status, cs.live_tasks_at(instance_arn))
        };
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
        let keys: Vec<String> = stale.iter().map(|id| keys::task(cluster, id)).collect();
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
            let id = t
                .task_arn
                .as_deref()
                .and_then(|a| a.rsplit('/').next())
                .unwrap_or_default()
                .to_string();
            if t.container_instance_arn.as_deref() != Some(instance_arn)
                || t.last_status.as_deref() == Some("STOPPED")
            {
                fresh.push((id, kv.mod_revision, None));
                continue;
            }
            let td_arn = t.task_definition_arn.clone().unwrap_or_default();
            match self.task_definition_for_plan(&td_arn).await {
                Ok(td) => fresh.push((id, kv.mod_revision, Some(plan::desired_task(&t, &td)))),
                // One unreadable task must not keep the agent from all the others.
                Err(e) => {
                    tracing::error!(task = ?t.task_arn, error = %e, "task definition of a placed task is gone");
                    fresh.push((id, kv.mod_revision, None));
                }
            }
        }
        let digest = self.plans.update(instance_arn, &live, fresh);
        let mut h = Sha256::new();
        h.update(status.as_bytes());
        h.update(digest);
        Ok((status, hex::encode(&h.finalize()[..12])))
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
            self.agents.heartbeat(instance_arn);
            generation.borrow_and_update();
            let (instance_status, version) = self.desired_version(&cluster, instance_arn).await?;
            let answer = |unchanged: bool| PollResponse {
                tasks: if unchanged {
                    Vec::new()
                } else {
                    self.plans.plans(instance_arn)
                },
                version: version.clone(),
                instance_status: instance_status.clone(),
                registry: None,
                unchanged,
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

    /// Records the agent's reports; each is applied at most once in effect.
    pub async fn agent_report(
        &self,
        instance_arn: &str,
        r: ReportRequest,
    ) -> Result<ReportResponse, EcsError> {
        let (cluster, _) = instance_parts(instance_arn)?;
        self.agents.heartbeat(instance_arn);
        let mut applied = 0;
        for rep in &r.reports {
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
}
