//! Task scale-in protection (UpdateTaskProtection, GetTaskProtection): a service's task that
//! asks for it is left running by scale-in and by deployments until its protection is turned
//! off or expires (the service reconciler reads it through [`Control::protections`]).
//!
//! A protection is a record `protection/CLUSTER/TASK_ID` holding its expiration date; turning
//! it off deletes the record, and the service pass deletes records it finds expired, so none
//! outlives its 48-hour maximum by more than a pass.

use crate::{decode, encode, keys, store_error, Control};
use berth_api::ecs;
use berth_api::error::EcsError;
use berth_store::Txn;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// What UpdateTaskProtection takes at most in one call.
const MAX_TASKS: usize = 10;
/// Protection lasts two hours unless asked otherwise, and at most 48.
const DEFAULT_MINUTES: i32 = 120;
const MAX_MINUTES: i32 = 2880;

/// The stored protection of one task.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Protection {
    /// Seconds since the epoch.
    pub expires_at: f64,
}

impl Control {
    pub async fn update_task_protection(
        &self,
        r: ecs::UpdateTaskProtectionRequest,
    ) -> Result<ecs::UpdateTaskProtectionResponse, EcsError> {
        let (cluster_rec, _) = self.active_cluster(r.cluster.as_deref()).await?;
        let cluster = cluster_rec.cluster_name.unwrap_or_default();
        let idents = r.tasks.unwrap_or_default();
        if idents.is_empty() || idents.len() > MAX_TASKS {
            return Err(EcsError::invalid(format!(
                "tasks must name between 1 and {MAX_TASKS} tasks, not {}",
                idents.len()
            )));
        }
        let enabled = r.protection_enabled.unwrap_or(false);
        let minutes = match r.expires_in_minutes {
            Some(m) if !(1..=MAX_MINUTES).contains(&m) => {
                return Err(EcsError::invalid(format!(
                    "expiresInMinutes must be between 1 and {MAX_MINUTES}, not {m}"
                )))
            }
            Some(_) if !enabled => {
                return Err(EcsError::invalid(
                    "expiresInMinutes can only be given when protectionEnabled is true",
                ))
            }
            Some(m) => m,
            None => DEFAULT_MINUTES,
        };
        let now = crate::now_epoch();
        let expires_at = (now + f64::from(minutes) * 60.0).floor();
        let mut protected = Vec::new();
        let mut failures = Vec::new();
        'each: for ident in idents {
            // Written only while the task is as it was checked: never onto one that stopped
            // meanwhile.
            let mut written = None;
            for _ in 0..crate::CAS_ATTEMPTS {
                let (id, task_kv) = match self.protectable(&cluster, &ident).await? {
                    Ok(found) => found,
                    Err(failure) => {
                        failures.push(failure);
                        continue 'each;
                    }
                };
                let key = keys::protection(&cluster, &id);
                let txn = Txn::new().unchanged(&task_kv.key, Some(&task_kv));
                let txn = if enabled {
                    txn.put(key, encode(&Protection { expires_at })?)
                } else {
                    txn.delete(key)
                };
                if self.commit(txn).await? {
                    written = Some(id);
                    break;
                }
            }
            let Some(id) = written else {
                return Err(EcsError::server(
                    "the task kept changing while its protection was being written; try again",
                ));
            };
            protected.push(ecs::ProtectedTask {
                task_arn: Some(self.task_arn(&cluster, &id)),
                protection_enabled: Some(enabled),
                expiration_date: enabled.then_some(expires_at),
            });
        }
        Ok(ecs::UpdateTaskProtectionResponse {
            protected_tasks: Some(protected),
            failures: Some(failures),
        })
    }

    pub async fn get_task_protection(
        &self,
        r: ecs::GetTaskProtectionRequest,
    ) -> Result<ecs::GetTaskProtectionResponse, EcsError> {
        let (cluster_rec, _) = self.active_cluster(r.cluster.as_deref()).await?;
        let cluster = cluster_rec.cluster_name.unwrap_or_default();
        let now = crate::now_epoch();
        let protections = self.protections(&cluster, now).await?;
        let shown = |id: &str| {
            let until = protections.get(id).copied();
            ecs::ProtectedTask {
                task_arn: Some(self.task_arn(&cluster, id)),
                protection_enabled: Some(until.is_some()),
                expiration_date: until,
            }
        };
        let mut protected = Vec::new();
        let mut failures = Vec::new();
        match r.tasks {
            // Without a list: every protected task of the cluster that still runs.
            None => {
                let mut ids: Vec<&String> = protections.keys().collect();
                ids.sort();
                for id in ids {
                    if self.protectable(&cluster, id).await?.is_ok() {
                        protected.push(shown(id));
                    }
                }
            }
            Some(idents) => {
                if idents.is_empty() || idents.len() > 100 {
                    return Err(EcsError::invalid(format!(
                        "tasks must name between 1 and 100 tasks, not {}",
                        idents.len()
                    )));
                }
                for ident in idents {
                    match self.protectable(&cluster, &ident).await? {
                        Ok((id, _)) => protected.push(shown(&id)),
                        Err(failure) => failures.push(failure),
                    }
                }
            }
        }
        Ok(ecs::GetTaskProtectionResponse {
            protected_tasks: Some(protected),
            failures: Some(failures),
        })
    }

    /// A task's protection read or set by the agent of the instance it runs on, for one of its
    /// containers (the task metadata endpoint's `task-protection/v1/state`): ECS's answer,
    /// its failure or its error, as the ECS agent relays them.
    pub async fn agent_task_protection(
        &self,
        instance: &str,
        r: berth_agent_proto::ProtectionRequest,
    ) -> Result<berth_agent_proto::ProtectionResponse, EcsError> {
        use berth_agent_proto as p;
        let arn = berth_model::arn::Arn::parse(&r.task_arn)
            .map_err(|_| EcsError::invalid(format!("'{}' is not a task ARN", r.task_arn)))?;
        let cluster = arn
            .id
            .split_once('/')
            .map(|(c, _)| c.to_string())
            .unwrap_or_default();
        let task = match self.task_id(&cluster, &r.task_arn) {
            Some(id) => {
                self.get_record::<ecs::Task>(&keys::task(&cluster, &id))
                    .await?
            }
            None => None,
        };
        if task
            .as_ref()
            .and_then(|(t, _)| t.container_instance_arn.as_deref())
            != Some(instance)
        {
            return Err(EcsError::new(
                berth_api::ErrorKind::AccessDenied,
                format!("the task {} does not run on {instance}", r.task_arn),
            ));
        }
        let answer = match r.protection_enabled {
            Some(enabled) => self
                .update_task_protection(ecs::UpdateTaskProtectionRequest {
                    cluster: Some(cluster),
                    tasks: Some(vec![r.task_arn.clone()]),
                    protection_enabled: Some(enabled),
                    expires_in_minutes: r.expires_in_minutes,
                })
                .await
                .map(|a| (a.protected_tasks, a.failures)),
            None => self
                .get_task_protection(ecs::GetTaskProtectionRequest {
                    cluster: Some(cluster),
                    tasks: Some(vec![r.task_arn.clone()]),
                })
                .await
                .map(|a| (a.protected_tasks, a.failures)),
        };
        Ok(match answer {
            Ok((protected, failures)) => p::ProtectionResponse {
                failure: failures.unwrap_or_default().into_iter().next().map(|f| {
                    p::ProtectionFailure {
                        arn: f.arn.unwrap_or_default(),
                        reason: f.reason.unwrap_or_default(),
                        detail: f.detail,
                    }
                }),
                protection: protected.unwrap_or_default().into_iter().next().map(|t| {
                    p::TaskProtection {
                        task_arn: t.task_arn.unwrap_or_default(),
                        protection_enabled: t.protection_enabled.unwrap_or(false),
                        expiration_date: t.expiration_date,
                    }
                }),
                error: None,
            },
            Err(e) => p::ProtectionResponse {
                error: Some(p::ProtectionError {
                    code: e.kind.wire_name().to_string(),
                    message: e.message,
                    status: e.kind.http_status(),
                }),
                ..Default::default()
            },
        })
    }

    /// The id of the task `ident` names if it can be protected (a service's task that has not
    /// stopped), else the failure ECS reports: `MISSING` for no such task, `TASK_NOT_VALID`
    /// for a standalone or stopped one.
    async fn protectable(
        &self,
        cluster: &str,
        ident: &str,
    ) -> Result<Result<(String, berth_store::KeyValue), ecs::Failure>, EcsError> {
        let failure = |reason: &str, detail: Option<&str>| ecs::Failure {
            arn: Some(ident.to_string()),
            reason: Some(reason.to_string()),
            detail: detail.map(str::to_string),
        };
        let Some(id) = self.task_id(cluster, ident) else {
            return Ok(Err(failure("MISSING", None)));
        };
        let Some((task, task_kv)) = self
            .get_record::<ecs::Task>(&keys::task(cluster, &id))
            .await?
        else {
            return Ok(Err(failure("MISSING", None)));
        };
        if !task
            .group
            .as_deref()
            .unwrap_or_default()
            .starts_with("service:")
        {
            return Ok(Err(failure(
                "TASK_NOT_VALID",
                Some("The task is not part of a service: only a service's tasks can be protected."),
            )));
        }
        if task.desired_status.as_deref() == Some("STOPPED")
            || task.last_status.as_deref() == Some("STOPPED")
        {
            return Ok(Err(failure(
                "TASK_NOT_VALID",
                Some("The task is stopping or stopped."),
            )));
        }
        Ok(Ok((id, task_kv)))
    }

    /// The protections of `cluster`'s tasks still in force at `now`, by task id, each with
    /// its expiration date. Expired records are deleted on the way.
    pub(crate) async fn protections(
        &self,
        cluster: &str,
        now: f64,
    ) -> Result<HashMap<String, f64>, EcsError> {
        let prefix = keys::protections_of(cluster);
        let mut out = HashMap::new();
        for kv in self
            .store
            .range(&prefix, None, None)
            .await
            .map_err(store_error)?
        {
            let p: Protection = decode(&kv)?;
            let id = kv.key[prefix.len()..].to_string();
            if p.expires_at > now {
                out.insert(id, p.expires_at);
            } else {
                // Expired: gone, unless it was renewed meanwhile.
                let _ = self
                    .store
                    .txn(
                        Txn::new()
                            .unchanged(&kv.key, Some(&kv))
                            .delete(kv.key.clone()),
                    )
                    .await;
            }
        }
        Ok(out)
    }
}
