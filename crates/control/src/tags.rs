//! TagResource, UntagResource, ListTagsForResource.

use crate::{conflict_exhausted, encode, keys, Control, CAS_ATTEMPTS};
use berth_api::ecs::{self, Tag};
use berth_api::{EcsError, ErrorKind};
use berth_model::arn::{Arn, ResourceKind};
use berth_model::tags as rules;
use berth_store::Txn;

impl Control {
    /// The resource an ARN names must exist; its canonical ARN comes back.
    async fn taggable(&self, resource_arn: &str) -> Result<String, EcsError> {
        let arn = Arn::parse(resource_arn)?;
        if arn.region != self.config.region || arn.account != self.config.account_id {
            return Err(EcsError::new(
                ErrorKind::ResourceNotFound,
                format!("The specified resource is not found: '{resource_arn}'"),
            ));
        }
        match arn.kind {
            ResourceKind::Cluster => {
                let name = arn.id.clone();
                match self.get_record::<ecs::Cluster>(&keys::cluster(&name)).await? {
                    Some((c, _)) if c.status.as_deref() == Some("ACTIVE") => {}
                    // ECS's words for a cluster that was deleted.
                    Some(_) => {
                        return Err(EcsError::invalid(
                            "The specified cluster is inactive. Specify an active cluster and try again.",
                        ))
                    }
                    None => {
                        self.active_cluster(Some(resource_arn)).await?;
                    }
                }
            }
            ResourceKind::TaskDefinition => {
                let r = self.parse_task_definition_ref(resource_arn)?;
                if r.revision.is_none() || self.find_task_definition(resource_arn).await.is_err() {
                    return Err(EcsError::new(
                        ErrorKind::ResourceNotFound,
                        format!("The specified resource is not found: '{resource_arn}'"),
                    ));
                }
            }
            ResourceKind::CapacityProvider => {
                let exists = self
                    .store
                    .get(&keys::capacity_provider(&arn.id))
                    .await
                    .map_err(crate::store_error)?
                    .is_some();
                if !exists {
                    return Err(EcsError::new(
                        ErrorKind::ResourceNotFound,
                        format!("The specified resource is not found: '{resource_arn}'"),
                    ));
                }
            }
            ResourceKind::Service => {
                let live = match arn.id.split_once('/') {
                    Some((cluster, name)) => self
                        .get_record::<ecs::Service>(&keys::service(cluster, name))
                        .await?
                        .is_some_and(|(svc, _)| svc.status.as_deref() != Some("INACTIVE")),
                    None => false,
                };
                if !live {
                    return Err(EcsError::new(
                        ErrorKind::ResourceNotFound,
                        format!("The specified resource is not found: '{resource_arn}'"),
                    ));
                }
            }
            ResourceKind::Task | ResourceKind::ContainerInstance => {
                let exists = match arn.id.split_once('/') {
                    Some((cluster, id)) => {
                        let key = if arn.kind == ResourceKind::Task {
                            keys::task(cluster, id)
                        } else {
                            keys::instance(cluster, id)
                        };
                        self.store
                            .get(&key)
                            .await
                            .map_err(crate::store_error)?
                            .is_some()
                    }
                    None => false,
                };
                if !exists {
                    return Err(EcsError::new(
                        ErrorKind::ResourceNotFound,
                        format!("The specified resource is not found: '{resource_arn}'"),
                    ));
                }
            }
            ResourceKind::TaskSet => {
                let mut parts = arn.id.splitn(3, '/');
                let live = match (parts.next(), parts.next(), parts.next()) {
                    (Some(cluster), Some(name), Some(id)) => self
                        .get_record::<ecs::Service>(&keys::service(cluster, name))
                        .await?
                        .is_some_and(|(svc, _)| {
                            svc.task_sets
                                .unwrap_or_default()
                                .iter()
                                .any(|t| t.id.as_deref() == Some(id))
                        }),
                    _ => false,
                };
                if !live {
                    return Err(EcsError::new(
                        ErrorKind::ResourceNotFound,
                        format!("The specified resource is not found: '{resource_arn}'"),
                    ));
                }
            }
            _ => {
                return Err(EcsError::new(
                    ErrorKind::ResourceNotFound,
                    format!("The specified resource is not found: '{resource_arn}'"),
                ));
            }
        }
        Ok(arn.to_string())
    }

    async fn modify_tags(
        &self,
        resource_arn: &str,
        f: impl Fn(&mut Vec<Tag>),
    ) -> Result<(), EcsError> {
        let arn = self.taggable(resource_arn).await?;
        let key = keys::tags(&arn);
        for _ in 0..CAS_ATTEMPTS {
            let seen = self.get_record::<Vec<Tag>>(&key).await?;
            let mut tags = seen.as_ref().map(|(t, _)| t.clone()).unwrap_or_default();
            f(&mut tags);
            // New tags were checked one by one; ECS's own (`aws:`) do not count.
            crate::check_tag_count(&tags)?;
            let txn = Txn::new().unchanged(&key, seen.as_ref().map(|(_, kv)| kv));
            let txn = if tags.is_empty() {
                txn.delete(key.clone())
            } else {
                txn.put(key.clone(), encode(&tags)?)
            };
            if self.commit(txn).await? {
                return Ok(());
            }
        }
        Err(conflict_exhausted("tagging"))
    }

    pub async fn tag_resource(
        &self,
        r: ecs::TagResourceRequest,
    ) -> Result<ecs::TagResourceResponse, EcsError> {
        let new = r.tags.unwrap_or_default();
        for t in &new {
            rules::check_tag(
                t.key.as_deref().unwrap_or(""),
                t.value.as_deref().unwrap_or(""),
            )?;
        }
        self.modify_tags(r.resource_arn.as_deref().unwrap_or_default(), |tags| {
            for t in &new {
                match tags.iter_mut().find(|x| x.key == t.key) {
                    Some(x) => x.value = t.value.clone(),
                    None => tags.push(t.clone()),
                }
            }
        })
        .await?;
        Ok(ecs::TagResourceResponse {})
    }

    pub async fn untag_resource(
        &self,
        r: ecs::UntagResourceRequest,
    ) -> Result<ecs::UntagResourceResponse, EcsError> {
        let remove = r.tag_keys.unwrap_or_default();
        self.modify_tags(r.resource_arn.as_deref().unwrap_or_default(), |tags| {
            tags.retain(|t| !remove.iter().any(|k| Some(k) == t.key.as_ref()));
        })
        .await?;
        Ok(ecs::UntagResourceResponse {})
    }

    pub async fn list_tags_for_resource(
        &self,
        r: ecs::ListTagsForResourceRequest,
    ) -> Result<ecs::ListTagsForResourceResponse, EcsError> {
        let arn = self
            .taggable(r.resource_arn.as_deref().unwrap_or_default())
            .await?;
        Ok(ecs::ListTagsForResourceResponse {
            tags: Some(self.tags_of(&arn).await?),
        })
    }
}
