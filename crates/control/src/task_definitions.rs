//! RegisterTaskDefinition, DescribeTaskDefinition, ListTaskDefinitions,
//! ListTaskDefinitionFamilies, DeregisterTaskDefinition, DeleteTaskDefinitions.

use crate::paging::{decode_token, max_results, page};
use crate::read::{unable, TaskDefinitionRef};
use crate::{
    conflict_exhausted, decode, encode, keys, now_epoch, store_error, Caller, Control, CAS_ATTEMPTS,
};
use berth_api::convert::{normalize_containers, task_definition_spec};
use berth_api::ecs::{self, enums, TaskDefinition};
use berth_api::error::check_enum;
use berth_api::EcsError;
use berth_model::arn::ResourceKind;
use berth_model::status::TaskDefinitionStatus;
use berth_model::task_definition::MAX_TASK_DEFINITION_BYTES;
use berth_store::Txn;
use std::collections::BTreeMap;

impl Control {
    pub async fn register_task_definition(
        &self,
        caller: &Caller,
        r: ecs::RegisterTaskDefinitionRequest,
    ) -> Result<ecs::RegisterTaskDefinitionResponse, EcsError> {
        let spec = task_definition_spec(&r)?;
        let size = spec.validate()?;
        if r.trusted_execution_configuration.is_some() {
            return Err(EcsError::client(
                "trustedExecutionConfiguration is not supported by Berth: its agents run no trusted execution environment",
            ));
        }
        for c in r.container_definitions.iter().flatten() {
            if let Some(rr) = c
                .resource_requirements
                .iter()
                .flatten()
                .find(|rr| rr.r#type.is_some())
            {
                return Err(EcsError::client(format!(
                    "container '{}': resourceRequirements of type {} are not supported by Berth: its agents offer none",
                    c.name.as_deref().unwrap_or_default(),
                    rr.r#type.as_deref().unwrap_or_default()
                )));
            }
        }
        crate::apply::check_ephemeral_storage(r.ephemeral_storage.as_ref())?;
        let tags = r.tags.clone().unwrap_or_default();
        crate::check_tags(&tags)?;
        let mut untagged = r.clone();
        untagged.tags = None;
        let bytes = serde_json::to_vec(&untagged).map(|v| v.len()).unwrap_or(0);
        if bytes > MAX_TASK_DEFINITION_BYTES {
            return Err(EcsError::client(format!(
                "the task definition is {bytes} bytes; ECS allows at most {MAX_TASK_DEFINITION_BYTES} bytes (64 KiB)"
            )));
        }
        let family = spec.family.clone();
        let family_key = keys::family(&family);
        for attempt in 0..CAS_ATTEMPTS {
            // The family's counter as the mirror holds it the first time; after a conflict
            // (another server registered in between), as the store holds it.
            let mirrored = self
                .mirrors
                .families
                .get(&family_key)
                .filter(|_| attempt == 0);
            let last = match mirrored {
                Some(kv) => Some((decode::<i32>(&kv)?, kv)),
                None => self.get_record::<i32>(&family_key).await?,
            };
            let revision = last.as_ref().map_or(0, |(n, _)| *n) + 1;
            let arn = self.arn(
                ResourceKind::TaskDefinition,
                &format!("{family}:{revision}"),
            );
            let td = TaskDefinition {
                task_definition_arn: Some(arn.clone()),
                family: Some(family.clone()),
                revision: Some(revision),
                status: Some(TaskDefinitionStatus::Active.as_str().into()),
                container_definitions: Some(normalize_containers(
                    r.container_definitions.as_deref().unwrap_or_default(),
                    spec.effective_network_mode(),
                )),
                compatibilities: Some(
                    spec.compatibilities(size)
                        .iter()
                        .map(|c| c.as_str().to_string())
                        .collect(),
                ),
                requires_attributes: Some(
                    spec.required_attributes()
                        .into_iter()
                        .map(|name| ecs::Attribute {
                            name: Some(name),
                            ..Default::default()
                        })
                        .collect(),
                ),
                requires_compatibilities: r.requires_compatibilities.clone(),
                network_mode: r.network_mode.clone(),
                cpu: size.cpu.map(|c| c.to_string()),
                memory: size.memory.map(|m| m.to_string()),
                volumes: Some(r.volumes.clone().unwrap_or_default()),
                placement_constraints: Some(r.placement_constraints.clone().unwrap_or_default()),
                task_role_arn: r.task_role_arn.clone(),
                execution_role_arn: r.execution_role_arn.clone(),
                pid_mode: r.pid_mode.clone(),
                ipc_mode: r.ipc_mode.clone(),
                proxy_configuration: r.proxy_configuration.clone(),
                inference_accelerators: r.inference_accelerators.clone(),
                ephemeral_storage: r.ephemeral_storage.clone(),
                runtime_platform: r.runtime_platform.clone(),
                enable_fault_injection: r.enable_fault_injection,
                trusted_execution_configuration: None,
                registered_at: Some(now_epoch()),
                registered_by: Some(caller.principal_arn.clone()),
                deregistered_at: None,
                delete_requested_at: None,
            };
            let mut txn = Txn::new()
                .unchanged(&family_key, last.as_ref().map(|(_, kv)| kv))
                .put(family_key.clone(), encode(&revision)?)
                .put(keys::task_definition(&family, revision), encode(&td)?);
            if !tags.is_empty() {
                txn = txn.put(keys::tags(&arn), encode(&tags)?);
            }
            if self.commit(txn).await? {
                tracing::info!(task_definition = %arn, "task definition registered");
                return Ok(ecs::RegisterTaskDefinitionResponse {
                    task_definition: Some(td),
                    tags: if tags.is_empty() { None } else { Some(tags) },
                });
            }
        }
        Err(conflict_exhausted("RegisterTaskDefinition"))
    }

    pub async fn describe_task_definition(
        &self,
        r: ecs::DescribeTaskDefinitionRequest,
    ) -> Result<ecs::DescribeTaskDefinitionResponse, EcsError> {
        for i in r.include.iter().flatten() {
            check_enum("include", i, enums::TASK_DEFINITION_FIELD)?;
        }
        let (td, _) = self
            .find_task_definition(r.task_definition.as_deref().unwrap_or_default())
            .await?;
        let tags = if r.include.iter().flatten().any(|i| i == "TAGS") {
            Some(
                self.tags_of(td.task_definition_arn.as_deref().unwrap_or_default())
                    .await?,
            )
        } else {
            None
        };
        Ok(ecs::DescribeTaskDefinitionResponse {
            task_definition: Some(td),
            tags,
        })
    }

    async fn all_task_definitions(
        &self,
        family_prefix: Option<&str>,
    ) -> Result<Vec<(String, TaskDefinition)>, EcsError> {
        let prefix = format!("{}{}", keys::TASK_DEFINITIONS, family_prefix.unwrap_or(""));
        let kvs = self
            .store
            .range(&prefix, None, None)
            .await
            .map_err(store_error)?;
        kvs.into_iter()
            .map(|kv| Ok((kv.key.clone(), decode::<TaskDefinition>(&kv)?)))
            .collect()
    }

    pub async fn list_task_definitions(
        &self,
        r: ecs::ListTaskDefinitionsRequest,
    ) -> Result<ecs::ListTaskDefinitionsResponse, EcsError> {
        let limit = max_results(r.max_results, 100)?;
        let status = r.status.clone().unwrap_or_else(|| "ACTIVE".into());
        check_enum("status", &status, enums::TASK_DEFINITION_STATUS)?;
        let sort = r.sort.clone().unwrap_or_else(|| "ASC".into());
        check_enum("sort", &sort, enums::SORT_ORDER)?;
        let token = decode_token(r.next_token.as_deref())?;
        let mut items: Vec<(String, String)> = self
            .all_task_definitions(r.family_prefix.as_deref())
            .await?
            .into_iter()
            .filter(|(_, td)| td.status.as_deref() == Some(status.as_str()))
            .map(|(k, td)| (k, td.task_definition_arn.unwrap_or_default()))
            .collect();
        let descending = sort == "DESC";
        if descending {
            items.reverse();
        }
        let (arns, next) = page(items, token.as_deref(), limit, descending);
        Ok(ecs::ListTaskDefinitionsResponse {
            task_definition_arns: Some(arns),
            next_token: next,
        })
    }

    pub async fn list_task_definition_families(
        &self,
        r: ecs::ListTaskDefinitionFamiliesRequest,
    ) -> Result<ecs::ListTaskDefinitionFamiliesResponse, EcsError> {
        let limit = max_results(r.max_results, 100)?;
        let status = r.status.clone().unwrap_or_else(|| "ALL".into());
        check_enum("status", &status, enums::TASK_DEFINITION_FAMILY_STATUS)?;
        let token = decode_token(r.next_token.as_deref())?;
        // family → has an ACTIVE revision
        let mut families: BTreeMap<String, bool> = BTreeMap::new();
        for (_, td) in self
            .all_task_definitions(r.family_prefix.as_deref())
            .await?
        {
            let active = td.status.as_deref() == Some(TaskDefinitionStatus::Active.as_str());
            *families.entry(td.family.unwrap_or_default()).or_default() |= active;
        }
        let items: Vec<(String, String)> = families
            .into_iter()
            .filter(|(_, active)| match status.as_str() {
                "ACTIVE" => *active,
                "INACTIVE" => !*active,
                _ => true,
            })
            .map(|(f, _)| (f.clone(), f))
            .collect();
        let (families, next) = page(items, token.as_deref(), limit, false);
        Ok(ecs::ListTaskDefinitionFamiliesResponse {
            families: Some(families),
            next_token: next,
        })
    }

    /// Moves one revision to `next`, stamping the time; `Ok(Err(reason))` when not allowed.
    async fn transition(
        &self,
        ident: &str,
        next: TaskDefinitionStatus,
    ) -> Result<Result<TaskDefinition, String>, EcsError> {
        let r = self.parse_task_definition_ref(ident)?;
        let Some(rev) = r.revision else {
            return Err(EcsError::client(format!(
                "taskDefinition '{ident}' must name a revision: give family:revision or the full ARN"
            )));
        };
        let key = keys::task_definition(&r.family, rev);
        for _ in 0..CAS_ATTEMPTS {
            let Some((mut td, kv)) = self.get_record::<TaskDefinition>(&key).await? else {
                return Ok(Err("MISSING".into()));
            };
            let current = td
                .status
                .as_deref()
                .and_then(TaskDefinitionStatus::parse)
                .unwrap_or(TaskDefinitionStatus::Active);
            if current == next {
                return Ok(Ok(td));
            }
            if !current.can_become(next) {
                return Ok(Err(format!(
                    "The task definition is {} and cannot become {}",
                    current.as_str(),
                    next.as_str()
                )));
            }
            if next == TaskDefinitionStatus::DeleteInProgress
                && current == TaskDefinitionStatus::Active
            {
                return Ok(Err(
                    "The specified task definition is still in ACTIVE status. Please deregister the target and try again.".into(),
                ));
            }
            td.status = Some(next.as_str().into());
            match next {
                TaskDefinitionStatus::Inactive => td.deregistered_at = Some(now_epoch()),
                TaskDefinitionStatus::DeleteInProgress => {
                    td.delete_requested_at = Some(now_epoch())
                }
                TaskDefinitionStatus::Active => {}
            }
            if self
                .commit(
                    Txn::new()
                        .unchanged(&key, Some(&kv))
                        .put(key.clone(), encode(&td)?),
                )
                .await?
            {
                return Ok(Ok(td));
            }
        }
        Err(conflict_exhausted("changing the task definition's status"))
    }

    pub async fn deregister_task_definition(
        &self,
        r: ecs::DeregisterTaskDefinitionRequest,
    ) -> Result<ecs::DeregisterTaskDefinitionResponse, EcsError> {
        let ident = r.task_definition.unwrap_or_default();
        match self
            .transition(&ident, TaskDefinitionStatus::Inactive)
            .await?
        {
            Ok(td) => Ok(ecs::DeregisterTaskDefinitionResponse {
                task_definition: Some(td),
            }),
            Err(reason) if reason == "MISSING" => Err(unable()),
            Err(reason) => Err(EcsError::client(format!(
                "taskDefinition '{ident}': {reason}"
            ))),
        }
    }

    pub async fn delete_task_definitions(
        &self,
        r: ecs::DeleteTaskDefinitionsRequest,
    ) -> Result<ecs::DeleteTaskDefinitionsResponse, EcsError> {
        let idents = r.task_definitions.unwrap_or_default();
        if idents.is_empty() || idents.len() > 10 {
            return Err(EcsError::invalid(format!(
                "taskDefinitions holds {} entries; give 1 to 10",
                idents.len()
            )));
        }
        let (mut done, mut failures) = (Vec::new(), Vec::new());
        for ident in idents {
            let arn = match self.parse_task_definition_ref(&ident) {
                Ok(TaskDefinitionRef {
                    family,
                    revision: Some(rev),
                }) => self.arn(ResourceKind::TaskDefinition, &format!("{family}:{rev}")),
                _ => ident.clone(),
            };
            match self
                .transition(&ident, TaskDefinitionStatus::DeleteInProgress)
                .await
            {
                Ok(Ok(td)) => done.push(td),
                Ok(Err(reason)) => failures.push(ecs::Failure {
                    arn: Some(arn),
                    reason: Some(reason),
                    detail: None,
                }),
                Err(e) if e.kind != berth_api::ErrorKind::Server => failures.push(ecs::Failure {
                    arn: Some(arn),
                    reason: Some(e.message),
                    detail: None,
                }),
                Err(e) => return Err(e),
            }
        }
        Ok(ecs::DeleteTaskDefinitionsResponse {
            task_definitions: Some(done),
            failures: Some(failures),
        })
    }
}
