//! Container instances: RegisterContainerInstance (ECS's own call and the agent's join),
//! DeregisterContainerInstance, DescribeContainerInstances, ListContainerInstances,
//! UpdateContainerInstancesState, and the attribute calls PutAttributes, DeleteAttributes,
//! ListAttributes.
//!
//! An instance record keeps `registeredResources` as the host declared them and
//! `remainingResources` as placements leave them; the running/pending counts and
//! `agentConnected` are derived when the record is read.

use crate::apply::{check_attribute, is_builtin_attribute, Registration};
use crate::keys;
use crate::paging::{decode_token, max_results, page};
use crate::resources::Resources;
use crate::{conflict_exhausted, encode, Control, CAS_ATTEMPTS};
use berth_api::ecs::{self, Attribute};
use berth_api::{EcsError, ErrorKind};
use berth_model::status::InstanceStatus;
use berth_scheduler::Candidate;
use berth_store::Txn;
use std::collections::BTreeMap;

/// Reads `instanceId`, `instanceType` and `availabilityZone` from an EC2 instance identity
/// document, as ECS does.
fn identity_document(doc: &str) -> Result<(String, Option<String>, Option<String>), EcsError> {
    let v: serde_json::Value = serde_json::from_str(doc).map_err(|e| {
        EcsError::invalid(format!("instanceIdentityDocument is not valid JSON: {e}"))
    })?;
    let field = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
    let id = field("instanceId").ok_or_else(|| {
        EcsError::invalid("instanceIdentityDocument has no instanceId".to_string())
    })?;
    Ok((id, field("instanceType"), field("availabilityZone")))
}

impl Control {
    pub async fn register_container_instance(
        &self,
        r: ecs::RegisterContainerInstanceRequest,
    ) -> Result<ecs::RegisterContainerInstanceResponse, EcsError> {
        let cluster = self.cluster_name(r.cluster.as_deref())?;
        let resources = Resources::from_ecs(r.total_resources.as_deref().unwrap_or_default())?;
        let mut attributes = BTreeMap::new();
        for a in r.attributes.iter().flatten() {
            let name = a
                .name
                .clone()
                .ok_or_else(|| EcsError::invalid("every attribute needs a name".to_string()))?;
            attributes.insert(name, a.value.clone());
        }
        let instance_id = match r.instance_identity_document.as_deref() {
            Some(doc) => {
                let (id, itype, az) = identity_document(doc)?;
                if let Some(t) = itype {
                    attributes.insert("ecs.instance-type".into(), Some(t));
                }
                if let Some(az) = az {
                    attributes.insert("ecs.availability-zone".into(), Some(az));
                }
                id
            }
            None => format!("i-{}", &uuid::Uuid::new_v4().simple().to_string()[..17]),
        };
        attributes
            .entry("ecs.os-type".into())
            .or_insert(Some("linux".into()));
        let ci = self
            .register_instance(
                &cluster,
                Registration {
                    instance_id,
                    cpu: resources.cpu,
                    memory: resources.memory,
                    ports: resources.ports,
                    ports_udp: resources.ports_udp,
                    attributes,
                    version_info: r.version_info,
                    tags: r.tags.unwrap_or_default(),
                },
            )
            .await?;
        Ok(ecs::RegisterContainerInstanceResponse {
            container_instance: Some(ci),
        })
    }

    pub async fn deregister_container_instance(
        &self,
        r: ecs::DeregisterContainerInstanceRequest,
    ) -> Result<ecs::DeregisterContainerInstanceResponse, EcsError> {
        let (cluster, _) = self.active_cluster(r.cluster.as_deref()).await?;
        let cluster = cluster.cluster_name.unwrap_or_default();
        let ident = r.container_instance.as_deref().unwrap_or_default();
        for _ in 0..CAS_ATTEMPTS {
            let Some((mut ci, kv)) = self.find_instance(&cluster, ident).await? else {
                return Err(EcsError::invalid(format!(
                    "Container instance '{ident}' not found in cluster {cluster}"
                )));
            };
            let arn = ci.container_instance_arn.clone().unwrap_or_default();
            self.caught_up().await?;
            if ci.status.as_deref() == Some(InstanceStatus::Inactive.as_str()) {
                return Ok(ecs::DeregisterContainerInstanceResponse {
                    container_instance: Some(self.present_instance(&cluster, ci, false).await?),
                });
            }
            let (running, pending) = self.state.cluster(&cluster).await.task_counts(&arn);
            let mut live = running + pending;
            if cluster == crate::FARGATE_POOL {
                // Fargate capacity runs tasks of every cluster: count them all.
                for name in self.state.cluster_names() {
                    if name != cluster {
                        let (r, p) = self.state.cluster(&name).await.task_counts(&arn);
                        live += r + p;
                    }
                }
            }
            if live > 0 && !r.force.unwrap_or(false) {
                return Err(EcsError::invalid(format!(
                    "Found {live} running or pending tasks on container instance {arn}; stop them or deregister with force"
                )));
            }
            ci.status = Some(InstanceStatus::Inactive.as_str().into());
            ci.version = Some(ci.version.unwrap_or(0) + 1);
            // Its shared presence record goes with it (on a store several servers share).
            let txn = Txn::new()
                .replace(&kv, encode(&ci)?)
                .delete(keys::presence(&arn));
            if self.commit(txn).await? {
                // Its agent's key stops working: a deregistered host cannot report or poll.
                self.revoke_agent_keys(&arn).await?;
                return Ok(ecs::DeregisterContainerInstanceResponse {
                    container_instance: Some(self.present_instance(&cluster, ci, false).await?),
                });
            }
        }
        Err(conflict_exhausted("deregistering the container instance"))
    }

    pub async fn describe_container_instances(
        &self,
        r: ecs::DescribeContainerInstancesRequest,
    ) -> Result<ecs::DescribeContainerInstancesResponse, EcsError> {
        let (cluster, _) = self.active_cluster(r.cluster.as_deref()).await?;
        let cluster = cluster.cluster_name.unwrap_or_default();
        let idents = r.container_instances.unwrap_or_default();
        if idents.is_empty() || idents.len() > 100 {
            return Err(EcsError::invalid(format!(
                "containerInstances must name between 1 and 100 instances, not {}",
                idents.len()
            )));
        }
        let include = r.include.unwrap_or_default();
        for i in &include {
            berth_api::error::check_enum("include", i, ecs::enums::CONTAINER_INSTANCE_FIELD)?;
        }
        let with_tags = include.iter().any(|i| i == "TAGS");
        let mut found = Vec::new();
        let mut failures = Vec::new();
        self.caught_up().await?;
        for ident in idents {
            let hit = match self.instance_id(&cluster, &ident) {
                Ok(_) => self.find_instance(&cluster, &ident).await?,
                Err(_) => None,
            };
            match hit {
                Some((ci, _)) => found.push(self.present_instance(&cluster, ci, with_tags).await?),
                None => failures.push(ecs::Failure {
                    arn: Some(self.missing_instance_arn(&cluster, ident)),
                    reason: Some("MISSING".into()),
                    detail: None,
                }),
            }
        }
        Ok(ecs::DescribeContainerInstancesResponse {
            container_instances: Some(found),
            failures: Some(failures),
        })
    }

    pub async fn list_container_instances(
        &self,
        r: ecs::ListContainerInstancesRequest,
    ) -> Result<ecs::ListContainerInstancesResponse, EcsError> {
        let (cluster, _) = self.active_cluster(r.cluster.as_deref()).await?;
        let cluster = cluster.cluster_name.unwrap_or_default();
        let limit = max_results(r.max_results, 100)?;
        let token = decode_token(r.next_token.as_deref())?;
        if let Some(s) = r.status.as_deref() {
            berth_api::error::check_enum("status", s, ecs::enums::CONTAINER_INSTANCE_STATUS)?;
        }
        let filter = match r.filter.as_deref() {
            Some(f) => Some(crate::placement::expression("filter", f)?),
            None => None,
        };
        let instances: Vec<(
            ecs::ContainerInstance,
            berth_store::KeyValue,
            Option<Candidate>,
        )> = match filter {
            Some(_) => self
                .candidates(&cluster)
                .await?
                .into_iter()
                .map(|(ci, kv, c)| (ci, kv, Some(c)))
                .collect(),
            None => self
                .instances_of(&cluster)
                .await?
                .into_iter()
                .map(|(ci, kv)| (ci, kv, None))
                .collect(),
        };
        let mut items: Vec<(String, String)> = Vec::new();
        for (ci, kv, c) in instances {
            let st = ci.status.as_deref().unwrap_or("");
            let status_ok = match r.status.as_deref() {
                Some(want) => st == want,
                None => st != InstanceStatus::Inactive.as_str(),
            };
            if !status_ok {
                continue;
            }
            let arn = ci.container_instance_arn.clone().unwrap_or_default();
            if let (Some(f), Some(c)) = (&filter, &c) {
                if !f.matches(c) {
                    continue;
                }
            }
            items.push((kv.key, arn));
        }
        let (arns, next) = page(items, token.as_deref(), limit, false);
        Ok(ecs::ListContainerInstancesResponse {
            container_instance_arns: Some(arns),
            next_token: next,
        })
    }

    pub async fn update_container_instances_state(
        &self,
        r: ecs::UpdateContainerInstancesStateRequest,
    ) -> Result<ecs::UpdateContainerInstancesStateResponse, EcsError> {
        let (cluster, _) = self.active_cluster(r.cluster.as_deref()).await?;
        let cluster = cluster.cluster_name.unwrap_or_default();
        let status = r.status.unwrap_or_default();
        let want = match InstanceStatus::parse(&status) {
            Some(s @ (InstanceStatus::Active | InstanceStatus::Draining)) => s,
            _ => {
                return Err(EcsError::invalid(format!(
                    "status '{status}' must be ACTIVE or DRAINING"
                )))
            }
        };
        let idents = r.container_instances.unwrap_or_default();
        if idents.is_empty() || idents.len() > 10 {
            return Err(EcsError::invalid(format!(
                "containerInstances must name between 1 and 10 instances, not {}",
                idents.len()
            )));
        }
        let mut done = Vec::new();
        let mut failures = Vec::new();
        self.caught_up().await?;
        'each: for ident in idents {
            for _ in 0..CAS_ATTEMPTS {
                let hit = match self.instance_id(&cluster, &ident) {
                    Ok(_) => self.find_instance(&cluster, &ident).await?,
                    Err(_) => None,
                };
                let Some((mut ci, kv)) = hit else {
                    failures.push(ecs::Failure {
                        arn: Some(self.missing_instance_arn(&cluster, ident.clone())),
                        reason: Some("MISSING".into()),
                        detail: None,
                    });
                    continue 'each;
                };
                if ci.status.as_deref() == Some(InstanceStatus::Inactive.as_str()) {
                    failures.push(ecs::Failure {
                        arn: ci.container_instance_arn.clone(),
                        reason: Some("INACTIVE".into()),
                        detail: Some("the container instance is deregistered".into()),
                    });
                    continue 'each;
                }
                if ci.status.as_deref() != Some(want.as_str()) {
                    ci.status = Some(want.as_str().into());
                    ci.version = Some(ci.version.unwrap_or(0) + 1);
                    let txn = Txn::new().replace(&kv, encode(&ci)?);
                    if !self.commit(txn).await? {
                        continue;
                    }
                }
                done.push(self.present_instance(&cluster, ci, false).await?);
                continue 'each;
            }
            return Err(conflict_exhausted("updating the container instance"));
        }
        Ok(ecs::UpdateContainerInstancesStateResponse {
            container_instances: Some(done),
            failures: Some(failures),
        })
    }

    /// Puts (or, with `put` false, deletes) each attribute on the instance it targets.
    async fn change_attributes(
        &self,
        cluster_ident: Option<&str>,
        attributes: Vec<Attribute>,
        put: bool,
    ) -> Result<Vec<Attribute>, EcsError> {
        let (cluster, _) = self.active_cluster(cluster_ident).await?;
        let cluster = cluster.cluster_name.unwrap_or_default();
        if attributes.is_empty() || attributes.len() > 10 {
            return Err(EcsError::invalid(format!(
                "attributes must hold between 1 and 10 attributes, not {}",
                attributes.len()
            )));
        }
        for a in &attributes {
            let name = a.name.as_deref().unwrap_or("");
            check_attribute(name, if put { a.value.as_deref() } else { None })?;
            if let Some(t) = a.target_type.as_deref() {
                berth_api::error::check_enum("targetType", t, ecs::enums::TARGET_TYPE)?;
            }
            if a.target_id.is_none() {
                return Err(EcsError::invalid(format!(
                    "attribute '{name}' needs a targetId (a container instance id or ARN)"
                )));
            }
        }
        let mut out = Vec::new();
        for a in attributes {
            let target = a.target_id.clone().unwrap_or_default();
            let not_found = || {
                EcsError::new(
                    ErrorKind::TargetNotFound,
                    format!("Could not find container instance '{target}' in cluster {cluster}"),
                )
            };
            let mut committed = false;
            for _ in 0..CAS_ATTEMPTS {
                let hit = match self.instance_id(&cluster, &target) {
                    Ok(_) => self.find_instance(&cluster, &target).await?,
                    Err(_) => None,
                };
                let Some((mut ci, kv)) = hit else {
                    return Err(not_found());
                };
                let name = a.name.clone().unwrap_or_default();
                let mut attrs = ci.attributes.take().unwrap_or_default();
                attrs.retain(|x| x.name.as_deref() != Some(&name));
                if put {
                    attrs.push(Attribute {
                        name: Some(name.clone()),
                        value: a.value.clone(),
                        ..Default::default()
                    });
                    let custom = attrs
                        .iter()
                        .filter(|x| !is_builtin_attribute(x.name.as_deref().unwrap_or("")))
                        .count();
                    if custom > crate::apply::MAX_CUSTOM_ATTRIBUTES {
                        return Err(EcsError::new(
                            ErrorKind::AttributeLimitExceeded,
                            format!(
                                "container instance {target} would have {custom} custom attributes; the limit is {}", crate::apply::MAX_CUSTOM_ATTRIBUTES
                            ),
                        ));
                    }
                }
                ci.attributes = Some(attrs);
                let txn = Txn::new().replace(&kv, encode(&ci)?);
                if self.commit(txn).await? {
                    out.push(Attribute {
                        name: Some(name),
                        value: if put { a.value.clone() } else { None },
                        target_id: ci.container_instance_arn.clone(),
                        target_type: Some("container-instance".into()),
                    });
                    committed = true;
                    break;
                }
            }
            if !committed {
                return Err(conflict_exhausted("changing attributes"));
            }
        }
        Ok(out)
    }

    pub async fn put_attributes(
        &self,
        r: ecs::PutAttributesRequest,
    ) -> Result<ecs::PutAttributesResponse, EcsError> {
        let attributes = self
            .change_attributes(r.cluster.as_deref(), r.attributes.unwrap_or_default(), true)
            .await?;
        Ok(ecs::PutAttributesResponse {
            attributes: Some(attributes),
        })
    }

    pub async fn delete_attributes(
        &self,
        r: ecs::DeleteAttributesRequest,
    ) -> Result<ecs::DeleteAttributesResponse, EcsError> {
        let attributes = self
            .change_attributes(
                r.cluster.as_deref(),
                r.attributes.unwrap_or_default(),
                false,
            )
            .await?;
        Ok(ecs::DeleteAttributesResponse {
            attributes: Some(attributes),
        })
    }

    pub async fn list_attributes(
        &self,
        r: ecs::ListAttributesRequest,
    ) -> Result<ecs::ListAttributesResponse, EcsError> {
        let (cluster, _) = self.active_cluster(r.cluster.as_deref()).await?;
        let cluster = cluster.cluster_name.unwrap_or_default();
        let target_type = r.target_type.unwrap_or_default();
        berth_api::error::check_enum("targetType", &target_type, ecs::enums::TARGET_TYPE)?;
        if r.attribute_value.is_some() && r.attribute_name.is_none() {
            return Err(EcsError::invalid(
                "attributeValue can only be given with attributeName".to_string(),
            ));
        }
        let limit = max_results(r.max_results, 100)?;
        let token = decode_token(r.next_token.as_deref())?;
        let mut items = Vec::new();
        for (ci, kv) in self.instances_of(&cluster).await? {
            if ci.status.as_deref() == Some(InstanceStatus::Inactive.as_str()) {
                continue;
            }
            for a in ci.attributes.iter().flatten() {
                if r.attribute_name.is_some() && a.name != r.attribute_name {
                    continue;
                }
                if r.attribute_value.is_some() && a.value != r.attribute_value {
                    continue;
                }
                items.push((
                    format!("{}\u{0}{}", kv.key, a.name.as_deref().unwrap_or("")),
                    Attribute {
                        name: a.name.clone(),
                        value: a.value.clone(),
                        target_id: ci.container_instance_arn.clone(),
                        target_type: Some("container-instance".into()),
                    },
                ));
            }
        }
        items.sort_by(|a, b| a.0.cmp(&b.0));
        let (attributes, next) = page(items, token.as_deref(), limit, false);
        Ok(ecs::ListAttributesResponse {
            attributes: Some(attributes),
            next_token: next,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::Resources;
    use berth_api::ecs::Resource;
    use std::collections::BTreeSet;

    #[test]
    fn resources_round_trip_through_ecs_shapes() {
        let r = Resources {
            cpu: 2048,
            memory: 3900,
            ports: [22, 2375, 2376, 51678].into(),
            ports_udp: BTreeSet::new(),
        };
        assert_eq!(Resources::from_ecs(&r.to_ecs()).unwrap(), r);
        let bad = vec![Resource {
            name: Some("PORTS".into()),
            string_set_value: Some(vec!["http".into()]),
            ..Default::default()
        }];
        assert!(Resources::from_ecs(&bad)
            .unwrap_err()
            .message
            .contains("'http' is not a port"));
    }

    #[test]
    fn identity_documents_give_id_type_and_zone() {
        let (id, t, az) = identity_document(
            r#"{"instanceId":"i-0abc","instanceType":"m5.large","availabilityZone":"us-east-1a"}"#,
        )
        .unwrap();
        assert_eq!(
            (id.as_str(), t.as_deref(), az.as_deref()),
            ("i-0abc", Some("m5.large"), Some("us-east-1a"))
        );
        assert!(identity_document("{}").is_err());
        assert!(identity_document("nope").is_err());
    }

    #[test]
    fn attribute_names_and_values_are_checked() {
        assert!(check_attribute("stack", Some("prod")).is_ok());
        assert!(check_attribute("ecs.capability.x", None).is_ok());
        assert!(check_attribute("bad name", Some("x")).is_err());
        assert!(check_attribute("ok", Some("semi;colon")).is_err());
    }
}
