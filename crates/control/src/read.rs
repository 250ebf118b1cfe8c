//! The read layer: every typed read of the store that more than one handler needs, in one
//! place. Handler files call these and the pure crates, never each other; a read needed twice
//! moves here, not sideways. The watch-fed cluster state ([`crate::state`]) is read through
//! here too.

use crate::{decode, keys, store_error, Control};
use berth_api::ecs::{self, Cluster, ContainerInstance, Tag, TaskDefinition};
use berth_api::{EcsError, ErrorKind};
use berth_model::arn::{Arn, ResourceKind};
use berth_model::names;
use berth_model::status::{ClusterStatus, TaskDefinitionStatus};
use berth_scheduler::Candidate;
use berth_store::KeyValue;
use std::collections::{BTreeMap, HashMap};

/// EXTERNAL instances are ECS Anywhere's, whose ids start `mi-`.
pub(crate) fn launch_type_of(ci: &ContainerInstance) -> &'static str {
    if attribute(ci, crate::CAPACITY_ATTRIBUTE) == Some("FARGATE") {
        "FARGATE"
    } else if ci
        .ec2_instance_id
        .as_deref()
        .is_some_and(|i| i.starts_with("mi-"))
    {
        "EXTERNAL"
    } else {
        "EC2"
    }
}

pub(crate) fn attribute<'a>(ci: &'a ContainerInstance, name: &str) -> Option<&'a str> {
    ci.attributes
        .iter()
        .flatten()
        .find(|a| a.name.as_deref() == Some(name))
        .and_then(|a| a.value.as_deref())
}

pub(crate) fn task_id_of(arn: &str) -> Option<&str> {
    arn.rsplit('/').next()
}

/// `family`, `family:revision` or an ARN, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskDefinitionRef {
    pub family: String,
    pub revision: Option<i32>,
}

/// ECS's words for a task definition it cannot find.
pub(crate) fn unable() -> EcsError {
    EcsError::client("Unable to describe task definition.")
}

/// ECS's words for a cluster it cannot find.
pub(crate) fn not_found() -> EcsError {
    EcsError::new(ErrorKind::ClusterNotFound, "Cluster not found.")
}

/// Task definitions by ARN, at most [`DefinitionCache::MAX`] of them (then it starts over).
#[derive(Debug, Default)]
pub(crate) struct DefinitionCache(
    std::sync::Mutex<HashMap<String, std::sync::Arc<TaskDefinition>>>,
);

impl DefinitionCache {
    /// Forgets every definition (a reset: `family:1` may be registered again, differently).
    pub(crate) fn clear(&self) {
        if let Ok(mut m) = self.0.lock() {
            m.clear();
        }
    }

    const MAX: usize = 4096;

    fn get(&self, arn: &str) -> Option<std::sync::Arc<TaskDefinition>> {
        self.0.lock().ok()?.get(arn).cloned()
    }

    fn put(&self, arn: &str, td: TaskDefinition) -> std::sync::Arc<TaskDefinition> {
        let td = std::sync::Arc::new(td);
        if let Ok(mut m) = self.0.lock() {
            if m.len() >= Self::MAX {
                m.clear();
            }
            m.insert(arn.to_string(), td.clone());
        }
        td
    }
}

impl Control {
    /// The cluster name an identifier (name or ARN; absent means `default`) refers to.
    pub fn cluster_name(&self, ident: Option<&str>) -> Result<String, EcsError> {
        let ident = ident.unwrap_or("default");
        if Arn::looks_like_arn(ident) {
            let arn = Arn::parse(ident)?;
            if arn.kind != ResourceKind::Cluster
                || arn.region != self.config.region
                || arn.account != self.config.account_id
            {
                return Err(not_found());
            }
            return Ok(arn.id);
        }
        if ident == crate::FARGATE_POOL {
            // Berth's own pool of Fargate capacity, by its reserved name.
            return Ok(ident.to_string());
        }
        names::cluster_name(ident)?;
        Ok(ident.to_string())
    }

    /// An ACTIVE cluster by identifier, or ClusterNotFoundException.
    pub async fn active_cluster(
        &self,
        ident: Option<&str>,
    ) -> Result<(Cluster, berth_store::KeyValue), EcsError> {
        let name = self.cluster_name(ident)?;
        match self.get_record::<Cluster>(&keys::cluster(&name)).await? {
            Some((c, kv)) if c.status.as_deref() == Some(ClusterStatus::Active.as_str()) => {
                Ok((c, kv))
            }
            _ => Err(not_found()),
        }
    }

    /// How ECS names a container instance it did not find: by the ARN an id would have (an
    /// ARN or anything that is not an id as given).
    pub(crate) fn missing_instance_arn(&self, cluster: &str, ident: String) -> String {
        if Arn::looks_like_arn(&ident) {
            return ident;
        }
        match self.instance_id(cluster, &ident) {
            Ok(id) => self.instance_arn(cluster, &id),
            Err(_) => ident,
        }
    }

    /// The instance id an identifier (id or ARN) refers to in `cluster`.
    pub(crate) fn instance_id(&self, cluster: &str, ident: &str) -> Result<String, EcsError> {
        if Arn::looks_like_arn(ident) {
            let arn = Arn::parse(ident)?;
            if arn.kind != ResourceKind::ContainerInstance {
                return Err(EcsError::invalid(format!(
                    "'{ident}' is not a container instance ARN"
                )));
            }
            return Ok(match arn.id.split_once('/') {
                Some((c, id)) if c == cluster => id.to_string(),
                Some(_) => {
                    return Err(EcsError::invalid(format!(
                        "container instance '{ident}' is not in cluster {cluster}"
                    )))
                }
                None => arn.id,
            });
        }
        if ident.is_empty()
            || ident.len() > 64
            || !ident.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            return Err(EcsError::invalid(format!(
                "'{ident}' is not a container instance id or ARN"
            )));
        }
        Ok(ident.to_string())
    }

    pub(crate) fn instance_arn(&self, cluster: &str, id: &str) -> String {
        self.arn(ResourceKind::ContainerInstance, &format!("{cluster}/{id}"))
    }

    /// Every record under `prefix`, decoded, in key order.
    async fn records<T: serde::de::DeserializeOwned>(
        &self,
        prefix: &str,
    ) -> Result<Vec<(T, KeyValue)>, EcsError> {
        let kvs = self
            .store
            .range(prefix, None, None)
            .await
            .map_err(store_error)?;
        kvs.into_iter()
            .map(|kv| Ok((decode::<T>(&kv)?, kv)))
            .collect()
    }

    /// Every cluster record, in name order.
    pub(crate) async fn clusters_all(&self) -> Result<Vec<(Cluster, KeyValue)>, EcsError> {
        self.records(keys::CLUSTERS).await
    }

    /// Every Auto Scaling group capacity provider, in name order.
    pub(crate) async fn capacity_providers_all(
        &self,
    ) -> Result<Vec<(ecs::CapacityProvider, KeyValue)>, EcsError> {
        self.records(keys::CAPACITY_PROVIDERS).await
    }

    /// Every service record of `cluster`, in name order.
    pub(crate) async fn services_in(
        &self,
        cluster: &str,
    ) -> Result<Vec<(ecs::Service, KeyValue)>, EcsError> {
        self.records(&keys::services_of(cluster)).await
    }

    pub(crate) async fn instances_of(
        &self,
        cluster: &str,
    ) -> Result<Vec<(ContainerInstance, KeyValue)>, EcsError> {
        self.records(&keys::instances_of(cluster)).await
    }

    /// An instance record of `cluster` by identifier.
    pub(crate) async fn find_instance(
        &self,
        cluster: &str,
        ident: &str,
    ) -> Result<Option<(ContainerInstance, KeyValue)>, EcsError> {
        let id = self.instance_id(cluster, ident)?;
        self.get_record(&keys::instance(cluster, &id)).await
    }

    pub(crate) fn task_arn(&self, cluster: &str, id: &str) -> String {
        self.arn(ResourceKind::Task, &format!("{cluster}/{id}"))
    }

    /// The task id an identifier (id or ARN) names in `cluster`.
    pub(crate) fn task_id(&self, cluster: &str, ident: &str) -> Option<String> {
        if Arn::looks_like_arn(ident) {
            let arn = Arn::parse(ident).ok()?;
            if arn.kind != ResourceKind::Task {
                return None;
            }
            return match arn.id.split_once('/') {
                Some((c, id)) if c == cluster => Some(id.to_string()),
                Some(_) => None,
                None => Some(arn.id),
            };
        }
        (!ident.is_empty() && ident.len() <= 64 && ident.chars().all(|c| c.is_ascii_alphanumeric()))
            .then(|| ident.to_string())
    }

    pub(crate) async fn tasks_in(
        &self,
        cluster: &str,
    ) -> Result<Vec<(ecs::Task, KeyValue)>, EcsError> {
        self.records(&keys::tasks_of(cluster)).await
    }

    /// The task definition a run refers to, checked as runnable with this launch type.
    pub(crate) async fn runnable_definition(
        &self,
        ident: Option<&str>,
        launch_type: &str,
        allow_inactive: bool,
    ) -> Result<TaskDefinition, EcsError> {
        let ident = ident.unwrap_or_default();
        // ECS's words for a run: "TaskDefinition not found." (DescribeTaskDefinition says
        // "Unable to describe task definition.").
        let (td, _) = match self.find_task_definition(ident).await {
            Err(e) if e.kind == ErrorKind::Client && e.message == unable().message => {
                return Err(EcsError::client("TaskDefinition not found."))
            }
            found => found?,
        };
        let status = td.status.as_deref().unwrap_or("");
        let ok = status == TaskDefinitionStatus::Active.as_str()
            || (allow_inactive && status == TaskDefinitionStatus::Inactive.as_str());
        if !ok {
            return Err(EcsError::client(format!(
                "TaskDefinition is inactive: '{ident}' is {status} and cannot run new tasks"
            )));
        }
        let compat = td.compatibilities.clone().unwrap_or_default();
        if !compat.iter().any(|c| c == launch_type) {
            return Err(EcsError::invalid(format!(
                "Task definition does not support launch_type {launch_type}. ('{}' is compatible with {})",
                td.task_definition_arn.as_deref().unwrap_or(ident),
                compat.join(", ")
            )));
        }
        Ok(td)
    }

    /// Task groups of the tasks not yet stopped, per container instance ARN.
    /// Every instance of `cluster` (in key order) with how placement and the query language
    /// see it, from a fresh read of the store: `--filter` reads it, and it is the reference
    /// the cluster state is tested against.
    pub(crate) async fn candidates(
        &self,
        cluster: &str,
    ) -> Result<Vec<(ContainerInstance, KeyValue, Candidate)>, EcsError> {
        let mut groups = self.groups_by_instance(cluster).await?;
        self.instances_of(cluster)
            .await?
            .into_iter()
            .map(|(ci, kv)| {
                let arn = ci.container_instance_arn.clone().unwrap_or_default();
                let c = crate::placement::candidate(
                    &ci,
                    self.agents.is_connected(&arn),
                    groups.remove(&arn).unwrap_or_default(),
                )?;
                Ok((ci, kv, c))
            })
            .collect()
    }

    async fn groups_by_instance(
        &self,
        cluster: &str,
    ) -> Result<HashMap<String, BTreeMap<String, u32>>, EcsError> {
        let mut out: HashMap<String, BTreeMap<String, u32>> = HashMap::new();
        for (t, _) in self.tasks_in(cluster).await? {
            if t.last_status.as_deref() == Some("STOPPED") {
                continue;
            }
            if let Some(arn) = t.container_instance_arn {
                *out.entry(arn)
                    .or_default()
                    .entry(t.group.unwrap_or_default())
                    .or_default() += 1;
            }
        }
        Ok(out)
    }

    pub fn parse_task_definition_ref(&self, ident: &str) -> Result<TaskDefinitionRef, EcsError> {
        let id = if Arn::looks_like_arn(ident) {
            let arn = Arn::parse(ident)?;
            if arn.kind != ResourceKind::TaskDefinition {
                return Err(EcsError::invalid(format!(
                    "'{ident}' is not a task definition ARN"
                )));
            }
            if !arn.id.contains(':') {
                return Err(EcsError::invalid(format!(
                    "task definition ARN '{ident}' must end in family:revision"
                )));
            }
            arn.id
        } else {
            ident.to_string()
        };
        let (family, revision) = match id.split_once(':') {
            Some((f, r)) => {
                let rev: i32 = r.parse().ok().filter(|n| *n >= 1).ok_or_else(|| {
                    EcsError::invalid(format!("Invalid revision number. Number: {r}"))
                })?;
                (f.to_string(), Some(rev))
            }
            None => (id, None),
        };
        names::family(&family)
            .map_err(|e| EcsError::client(format!("taskDefinition '{ident}': {}", e.message)))?;
        Ok(TaskDefinitionRef { family, revision })
    }

    /// A task definition by reference: a given revision in any status (from the mirror when
    /// it holds it: a revision never changes but for its status), or a family's latest
    /// ACTIVE revision (from the store, so a revision just registered through another server
    /// is the one found).
    pub async fn find_task_definition(
        &self,
        ident: &str,
    ) -> Result<(TaskDefinition, KeyValue), EcsError> {
        let r = self.parse_task_definition_ref(ident)?;
        match r.revision {
            Some(rev) => {
                let key = keys::task_definition(&r.family, rev);
                if let Some(kv) = self.mirrors.task_definitions.get(&key) {
                    return Ok((decode(&kv)?, kv));
                }
                self.get_record::<TaskDefinition>(&key)
                    .await?
                    .ok_or_else(unable)
            }
            None => {
                let revs = self
                    .store
                    .range(&keys::task_definition_family_prefix(&r.family), None, None)
                    .await
                    .map_err(store_error)?;
                for kv in revs.into_iter().rev() {
                    let td: TaskDefinition = decode(&kv)?;
                    if td.status.as_deref() == Some(TaskDefinitionStatus::Active.as_str()) {
                        return Ok((td, kv));
                    }
                }
                Err(unable())
            }
        }
    }

    pub(crate) async fn tags_of(&self, arn: &str) -> Result<Vec<Tag>, EcsError> {
        Ok(self
            .get_record::<Vec<Tag>>(&keys::tags(arn))
            .await?
            .map(|(t, _)| t)
            .unwrap_or_default())
    }

    /// Derived members: agentConnected, running and pending counts (from the cluster state:
    /// callers catch it up once, before presenting one or many), tags when asked.
    pub(crate) async fn present_instance(
        &self,
        cluster: &str,
        mut ci: ContainerInstance,
        with_tags: bool,
    ) -> Result<ContainerInstance, EcsError> {
        let arn = ci.container_instance_arn.clone().unwrap_or_default();
        let (running, pending) = self.state.cluster(cluster).await.task_counts(&arn);
        ci.running_tasks_count = Some(running);
        ci.pending_tasks_count = Some(pending);
        ci.agent_connected = Some(self.agents.is_connected(&arn));
        if let Some(group) = attribute(&ci, crate::AUTO_SCALING_GROUP_ATTRIBUTE) {
            ci.capacity_provider_name = self.provider_of_group(group).await?;
        }
        if with_tags {
            ci.tags = Some(self.tags_of(&arn).await?);
        }
        Ok(ci)
    }

    /// A task definition by ARN for building an agent's plan, cached: what a plan uses of a
    /// revision (containers, volumes, network mode) never changes once registered.
    pub(crate) async fn task_definition_for_plan(
        &self,
        arn: &str,
    ) -> Result<std::sync::Arc<TaskDefinition>, EcsError> {
        if let Some(td) = self.plan_definitions.get(arn) {
            return Ok(td);
        }
        let (td, _) = self.find_task_definition(arn).await?;
        Ok(self.plan_definitions.put(arn, td))
    }
}
