//! Tasks: RunTask, StartTask, StopTask, DescribeTasks, ListTasks, the agent's reports applied
//! to task records, and the purge of long-stopped tasks.
//!
//! Placement reads the cluster's instances, asks [`berth_scheduler::place`] where each copy
//! goes, and commits the new tasks together with the instances' new `remainingResources` in one
//! transaction guarded on the revisions it read (and on the cluster record's), so concurrent
//! RunTask calls never over-commit a host. A task that reaches STOPPED gives its resources
//! back in the same transaction that records the stop, exactly once.

use crate::apply::Meta;
use crate::paging::{decode_token, max_results};
use crate::state::Pool;
use crate::{keys, now_epoch, store_error, Control};
use berth_api::ecs::{self};
use berth_api::error::check_enum;
use berth_api::EcsError;
use berth_model::status::TaskStatus;
use berth_store::Txn;
use std::time::Duration;

/// A task as ECS shows it: a FARGATE task has no container instance (the capacity that runs
/// it is Berth's, not the user's).
pub(crate) fn shown(mut t: ecs::Task) -> ecs::Task {
    if t.launch_type.as_deref() == Some("FARGATE") {
        t.container_instance_arn = None;
    }
    t
}

/// `platformVersion` as ECS takes it: only for FARGATE, `LATEST` or the version Berth runs.
pub(crate) fn check_platform(launch_type: &str, version: Option<&str>) -> Result<(), EcsError> {
    match (launch_type, version) {
        (_, None) => Ok(()),
        ("FARGATE", Some("LATEST")) => Ok(()),
        ("FARGATE", Some(v)) if v == crate::FARGATE_PLATFORM_VERSION => Ok(()),
        ("FARGATE", Some(v)) => Err(EcsError::invalid(format!(
            "The specified platform version ({v}) does not exist; Berth's Fargate runs {} (LATEST).",
            crate::FARGATE_PLATFORM_VERSION
        ))),
        (_, Some(_)) => Err(EcsError::invalid(format!(
            "The platform version must be null when specifying an {launch_type} launch type."
        ))),
    }
}

/// RunTask starts at most ten copies per call.
const MAX_COUNT: i32 = 10;

impl Control {
    pub async fn run_task(&self, r: ecs::RunTaskRequest) -> Result<ecs::RunTaskResponse, EcsError> {
        let count = r.count.unwrap_or(1);
        if !(1..=MAX_COUNT).contains(&count) {
            return Err(EcsError::invalid(format!(
                "count {count} must be between 1 and {MAX_COUNT}"
            )));
        }
        let (cluster_rec, _) = self.active_cluster(r.cluster.as_deref()).await?;
        let crate::capacity::Launch {
            strategy,
            launch_type,
        } = crate::capacity::launch(
            &cluster_rec,
            r.capacity_provider_strategy.as_deref(),
            r.launch_type.as_deref(),
            r.platform_version.as_deref(),
            r.placement_constraints
                .as_ref()
                .is_some_and(|c| !c.is_empty())
                || r.placement_strategy.as_ref().is_some_and(|s| !s.is_empty()),
        )?;
        if let Some(t) = &r.client_token {
            if t.is_empty() || t.len() > 64 || !t.is_ascii() {
                return Err(EcsError::invalid(format!(
                    "clientToken '{t}' must be 1-64 ASCII characters"
                )));
            }
        }
        check_started_by(r.started_by.as_deref())?;
        check_group(r.group.as_deref())?;
        let propagate = propagate_of(r.propagate_tags.as_deref(), None)?;
        // Each provider's share of the copies (one group without a strategy).
        let groups: Vec<(Option<String>, usize)> = match &strategy {
            Some(s) => s
                .split(&[], count as usize)
                .into_iter()
                .map(|(p, k)| (Some(p), k))
                .collect(),
            None => vec![(None, count as usize)],
        };
        let (mut tasks, mut failures) = (Vec::new(), Vec::new());
        for (n, (provider, k)) in groups.into_iter().enumerate() {
            let (t, f) = self
                .start_tasks(
                    r.cluster.as_deref(),
                    r.task_definition.as_deref(),
                    Pool::LaunchType(launch_type.clone()),
                    k,
                    Meta {
                        allow_inactive: false,
                        constraints: r.placement_constraints.clone().unwrap_or_default(),
                        strategies: r.placement_strategy.clone().unwrap_or_default(),
                        started_by: r.started_by.clone(),
                        group: r.group.clone(),
                        tags: r.tags.clone().unwrap_or_default(),
                        propagate: propagate.clone(),
                        managed_tags: r.enable_ecs_managed_tags.unwrap_or(false),
                        service: None,
                        overrides: r.overrides.clone().unwrap_or_default(),
                        // A retry with the token answers with the first provider's tasks.
                        client_token: r.client_token.clone().filter(|_| n == 0),
                        network: r.network_configuration.clone(),
                        awsvpc: None,
                        capacity_provider: provider,
                    },
                )
                .await?;
            tasks.extend(t);
            failures.extend(f);
        }
        Ok(ecs::RunTaskResponse {
            tasks: Some(tasks.into_iter().map(shown).collect()),
            failures: Some(failures),
        })
    }

    pub async fn start_task(
        &self,
        r: ecs::StartTaskRequest,
    ) -> Result<ecs::StartTaskResponse, EcsError> {
        let cluster = self.cluster_name(r.cluster.as_deref())?;
        let idents = r.container_instances.unwrap_or_default();
        if idents.is_empty() || idents.len() > 10 {
            return Err(EcsError::invalid(format!(
                "containerInstances must name between 1 and 10 instances, not {}",
                idents.len()
            )));
        }
        let arns = idents
            .iter()
            .map(|i| Ok(self.instance_arn(&cluster, &self.instance_id(&cluster, i)?)))
            .collect::<Result<Vec<_>, EcsError>>()?;
        check_started_by(r.started_by.as_deref())?;
        check_group(r.group.as_deref())?;
        let n = arns.len();
        let (tasks, failures) = self
            .start_tasks(
                r.cluster.as_deref(),
                r.task_definition.as_deref(),
                Pool::Instances(arns),
                n,
                Meta {
                    started_by: r.started_by,
                    group: r.group,
                    tags: r.tags.unwrap_or_default(),
                    propagate: propagate_of(r.propagate_tags.as_deref(), None)?,
                    managed_tags: r.enable_ecs_managed_tags.unwrap_or(false),
                    overrides: r.overrides.unwrap_or_default(),
                    client_token: None,
                    network: r.network_configuration,
                    ..Default::default()
                },
            )
            .await?;
        Ok(ecs::StartTaskResponse {
            tasks: Some(tasks),
            failures: Some(failures),
        })
    }

    pub async fn stop_task(
        &self,
        r: ecs::StopTaskRequest,
    ) -> Result<ecs::StopTaskResponse, EcsError> {
        let (cluster_rec, _) = self.active_cluster(r.cluster.as_deref()).await?;
        let cluster = cluster_rec.cluster_name.unwrap_or_default();
        let ident = r.task.unwrap_or_default();
        if let Some(reason) = &r.reason {
            if reason.len() > 1024 {
                return Err(EcsError::invalid(format!(
                    "reason is {} characters; the limit is 1024",
                    reason.len()
                )));
            }
        }
        let missing = || EcsError::invalid("The referenced task was not found.");
        let id = self.task_id(&cluster, &ident).ok_or_else(missing)?;
        let reason = r.reason.unwrap_or_else(|| "Task stopped by user".into());
        self.stop_task_as(&cluster, &id, "UserInitiated", &reason)
            .await?
            .map(|t| ecs::StopTaskResponse {
                task: Some(shown(t)),
            })
            .ok_or_else(missing)
    }

    pub async fn describe_tasks(
        &self,
        r: ecs::DescribeTasksRequest,
    ) -> Result<ecs::DescribeTasksResponse, EcsError> {
        let (cluster_rec, _) = self.active_cluster(r.cluster.as_deref()).await?;
        let cluster = cluster_rec.cluster_name.unwrap_or_default();
        let idents = r.tasks.unwrap_or_default();
        if idents.is_empty() {
            return Err(EcsError::invalid("Tasks cannot be empty."));
        }
        if idents.len() > 100 {
            return Err(EcsError::invalid(format!(
                "tasks must name between 1 and 100 tasks, not {}",
                idents.len()
            )));
        }
        let include = r.include.unwrap_or_default();
        for i in &include {
            check_enum("include", i, ecs::enums::TASK_FIELD)?;
        }
        let with_tags = include.iter().any(|i| i == "TAGS");
        let mut tasks = Vec::new();
        let mut failures = Vec::new();
        for ident in idents {
            let hit = match self.task_id(&cluster, &ident) {
                Some(id) => {
                    self.get_record::<ecs::Task>(&keys::task(&cluster, &id))
                        .await?
                }
                None => None,
            };
            match hit {
                Some((mut t, _)) => {
                    t.tags = if with_tags {
                        Some(
                            self.tags_of(t.task_arn.as_deref().unwrap_or_default())
                                .await?,
                        )
                    } else {
                        None
                    };
                    tasks.push(shown(t));
                }
                None => failures.push(ecs::Failure {
                    arn: Some(ident),
                    reason: Some("MISSING".into()),
                    detail: None,
                }),
            }
        }
        Ok(ecs::DescribeTasksResponse {
            tasks: Some(tasks),
            failures: Some(failures),
        })
    }

    pub async fn list_tasks(
        &self,
        r: ecs::ListTasksRequest,
    ) -> Result<ecs::ListTasksResponse, EcsError> {
        let (cluster_rec, _) = self.active_cluster(r.cluster.as_deref()).await?;
        let cluster = cluster_rec.cluster_name.unwrap_or_default();
        let limit = max_results(r.max_results, 100)?;
        let token = decode_token(r.next_token.as_deref())?;
        let desired = r.desired_status.clone().unwrap_or_else(|| "RUNNING".into());
        check_enum("desiredStatus", &desired, ecs::enums::DESIRED_STATUS)?;
        if let Some(l) = r.launch_type.as_deref() {
            check_enum("launchType", l, ecs::enums::LAUNCH_TYPE)?;
        }
        if r.family.is_some() && r.service_name.is_some() {
            return Err(EcsError::invalid(
                "family and serviceName cannot be given together".to_string(),
            ));
        }
        let instance = match r.container_instance.as_deref() {
            Some(i) => Some(self.instance_arn(&cluster, &self.instance_id(&cluster, i)?)),
            None => None,
        };
        let service_group = r.service_name.as_deref().map(|s| format!("service:{s}"));
        // The token is the last key returned; the state is in id order, which is key order.
        let prefix = keys::tasks_of(&cluster);
        let after = token.as_deref().map(|t| {
            t.strip_prefix(prefix.as_str())
                .unwrap_or_default()
                .to_string()
        });
        self.caught_up().await?;
        let cs = self.state.cluster(&cluster).await;
        let page = cs.tasks_after(after.as_deref(), limit + 1, |t| {
            let desired_ok = if t.desired_stopped {
                "STOPPED"
            } else {
                "RUNNING"
            } == desired;
            desired_ok
                && r.family.as_deref().is_none_or(|f| &*t.family == f)
                && instance
                    .as_deref()
                    .is_none_or(|i| t.instance.as_deref() == Some(i))
                && r.started_by
                    .as_deref()
                    .is_none_or(|s| t.started_by.as_deref() == Some(s))
                && r.launch_type
                    .as_deref()
                    .is_none_or(|l| t.launch_type.as_deref() == Some(l))
                && service_group.as_deref().is_none_or(|g| &*t.group == g)
        });
        let more = page.len() > limit;
        let ids: Vec<String> = page.into_iter().take(limit).map(|t| t.id.clone()).collect();
        drop(cs);
        let next = match ids.last() {
            Some(last) if more => Some(crate::paging::token_for(&keys::task(&cluster, last))),
            _ => None,
        };
        Ok(ecs::ListTasksResponse {
            task_arns: Some(ids.iter().map(|id| self.task_arn(&cluster, id)).collect()),
            next_token: next,
        })
    }

    /// Deletes tasks that stopped more than `retention` ago, and their tags. Returns how many.
    pub async fn purge_stopped_tasks(&self, retention: Duration) -> Result<usize, EcsError> {
        let cutoff = now_epoch() - retention.as_secs_f64();
        let clusters: Vec<String> = self
            .store
            .range(keys::CLUSTERS, None, None)
            .await
            .map_err(store_error)?
            .into_iter()
            .map(|kv| kv.key.trim_start_matches(keys::CLUSTERS).to_string())
            .collect();
        let mut n = 0;
        for cluster in clusters {
            let old: Vec<(String, u64)> = self
                .state
                .cluster(&cluster)
                .await
                .tasks_after(None, usize::MAX, |t| {
                    t.last_status == TaskStatus::Stopped && t.stopped_at.is_some_and(|s| s < cutoff)
                })
                .into_iter()
                .map(|t| (t.id.clone(), t.mod_revision))
                .collect();
            for (id, rev) in old {
                let key = keys::task(&cluster, &id);
                let txn = Txn::new()
                    .when(berth_store::Compare::ModRevision(key.clone(), rev))
                    .delete(key)
                    .delete(keys::tags(&self.task_arn(&cluster, &id)));
                if self.commit(txn).await? {
                    n += 1;
                }
            }
        }
        Ok(n)
    }
}

fn check_started_by(s: Option<&str>) -> Result<(), EcsError> {
    if let Some(s) = s {
        let ok = !s.is_empty()
            && s.len() <= 128
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_".contains(c));
        if !ok {
            return Err(EcsError::invalid(format!(
                "startedBy '{s}' must be 1-128 letters, numbers, hyphens or underscores"
            )));
        }
    }
    Ok(())
}

fn check_group(s: Option<&str>) -> Result<(), EcsError> {
    if let Some(s) = s {
        if s.is_empty() || s.len() > 255 {
            return Err(EcsError::invalid(format!(
                "group '{s}' must be 1-255 characters"
            )));
        }
    }
    Ok(())
}

/// `propagateTags` of RunTask/StartTask (`service`: `None`) or of a service's tasks.
pub(crate) fn propagate_of(
    value: Option<&str>,
    service: Option<Vec<ecs::Tag>>,
) -> Result<crate::apply::Propagate, EcsError> {
    use crate::apply::Propagate;
    Ok(match value {
        None | Some("NONE") => Propagate::None,
        Some("TASK_DEFINITION") => Propagate::TaskDefinition,
        Some("SERVICE") => match service {
            Some(tags) => Propagate::Service(tags),
            None => {
                return Err(EcsError::invalid(
                    "propagateTags SERVICE applies only to tasks a service launches; use TASK_DEFINITION or NONE",
                ))
            }
        },
        Some(other) => {
            check_enum("propagateTags", other, ecs::enums::PROPAGATE_TAGS)?;
            Propagate::None
        }
    })
}
