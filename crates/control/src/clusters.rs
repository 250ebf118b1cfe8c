//! CreateCluster, DescribeClusters, ListClusters, UpdateCluster, UpdateClusterSettings,
//! DeleteCluster.

use crate::paging::{decode_token, max_results, page};
use crate::read::not_found;
use crate::{conflict_exhausted, encode, keys, store_error, Control, CAS_ATTEMPTS};
use berth_api::ecs::{self, enums, Cluster, ClusterSetting, KeyValuePair};
use berth_api::error::check_enum;
use berth_api::{EcsError, ErrorKind};
use berth_model::arn::{Arn, ResourceKind};
use berth_model::names;
use berth_model::status::ClusterStatus;
use berth_store::Txn;

/// The capacity providers every account has without creating them.
pub(crate) const BUILT_IN_PROVIDERS: &[&str] = &["FARGATE", "FARGATE_SPOT"];

/// What a cluster holds right now.
#[derive(Debug, Default, Clone, Copy)]
pub struct ClusterCounts {
    pub instances: usize,
    /// Tasks not yet STOPPED (running + pending).
    pub tasks: usize,
    pub running: usize,
    pub pending: usize,
    pub services: usize,
}

impl Control {
    /// Registered (ACTIVE or DRAINING) instances, tasks not yet STOPPED, and services.
    pub async fn cluster_counts(&self, name: &str) -> Result<ClusterCounts, EcsError> {
        self.caught_up().await?;
        let (instances, running, pending) = self.state.cluster(name).await.counts();
        let mut services = 0;
        for kv in self
            .store
            .range(&keys::services_of(name), None, None)
            .await
            .map_err(store_error)?
        {
            let s: ecs::Service = crate::decode(&kv)?;
            if s.status.as_deref() != Some("INACTIVE") {
                services += 1;
            }
        }
        Ok(ClusterCounts {
            instances,
            tasks: running + pending,
            running,
            pending,
            services,
        })
    }

    /// The cluster as ECS answers: counts filled in, optional parts only when asked for.
    async fn present(&self, mut c: Cluster, include: &[String]) -> Result<Cluster, EcsError> {
        let name = c.cluster_name.clone().unwrap_or_default();
        let counts = self.cluster_counts(&name).await?;
        c.registered_container_instances_count = Some(counts.instances as i32);
        c.running_tasks_count = Some(counts.running as i32);
        c.pending_tasks_count = Some(counts.pending as i32);
        c.active_services_count = Some(counts.services as i32);
        let has = |f: &str| include.iter().any(|i| i == f);
        if has("STATISTICS") {
            let stat = |name: &str, v: usize| KeyValuePair {
                name: Some(name.into()),
                value: Some(v.to_string()),
            };
            c.statistics = Some(vec![
                stat("runningEC2TasksCount", counts.running),
                stat("runningFargateTasksCount", 0),
                stat("pendingEC2TasksCount", counts.pending),
                stat("pendingFargateTasksCount", 0),
                stat("activeEC2ServiceCount", counts.services),
                stat("activeFargateServiceCount", 0),
                stat("drainingEC2ServiceCount", 0),
                stat("drainingFargateServiceCount", 0),
            ]);
        }
        if has("TAGS") {
            c.tags = Some(
                self.tags_of(c.cluster_arn.as_deref().unwrap_or_default())
                    .await?,
            );
        } else {
            c.tags = None;
        }
        if !has("SETTINGS") {
            c.settings = None;
        }
        if !has("CONFIGURATIONS") {
            c.configuration = None;
        }
        if has("ATTACHMENTS") {
            c.attachments.get_or_insert_with(Vec::new);
        }
        Ok(c)
    }

    /// The response form of CreateCluster and the mutating operations: everything stored.
    async fn present_all(&self, c: Cluster) -> Result<Cluster, EcsError> {
        let all = ["SETTINGS", "CONFIGURATIONS", "TAGS"].map(String::from);
        let mut out = self.present(c, &all).await?;
        if out.tags.as_ref().is_some_and(Vec::is_empty) {
            out.tags = None;
        }
        Ok(out)
    }

    fn check_settings(settings: &[ClusterSetting]) -> Result<(), EcsError> {
        for s in settings {
            check_enum(
                "settings.name",
                s.name.as_deref().unwrap_or(""),
                enums::CLUSTER_SETTING_NAME,
            )?;
            let v = s.value.as_deref().unwrap_or("");
            if !["enabled", "disabled", "enhanced"].contains(&v) {
                return Err(EcsError::invalid(format!(
                    "settings.value '{v}' for containerInsights must be one of: enabled, disabled, enhanced"
                )));
            }
        }
        Ok(())
    }

    /// `txn` with what associating `cluster`'s capacity providers takes: each Auto Scaling group
    /// provider of `new` exists (guarded) and serves no other cluster (its owner record, set
    /// to this cluster, guarded); each of `old` no longer in `new` is released.
    pub(crate) async fn associate(
        &self,
        cluster: &str,
        old: &[String],
        new: &[String],
        mut txn: Txn,
    ) -> Result<Txn, EcsError> {
        let custom = |list: &'_ [String]| -> Vec<String> {
            list.iter()
                .filter(|p| !BUILT_IN_PROVIDERS.contains(&p.as_str()))
                .cloned()
                .collect()
        };
        let (old, new) = (custom(old), custom(new));
        for p in &new {
            let key = keys::capacity_provider(p);
            let Some(kv) = self.store.get(&key).await.map_err(store_error)? else {
                return Err(EcsError::invalid(format!(
                    "The specified capacity provider {p} does not exist. Specify a valid capacity provider and try again."
                )));
            };
            let owner_key = keys::capacity_provider_owner(p);
            let owner = self.get_record::<String>(&owner_key).await?;
            if let Some((other, _)) = owner.as_ref().filter(|(o, _)| o != cluster) {
                return Err(EcsError::client(format!(
                    "The specified capacity provider {p} is already associated with cluster {other}. An Auto Scaling group capacity provider can be associated with one cluster only."
                )));
            }
            txn = txn
                .unchanged(&key, Some(&kv))
                .unchanged(&owner_key, owner.as_ref().map(|(_, kv)| kv))
                .put(owner_key.clone(), encode(&cluster.to_string())?);
        }
        for p in old.iter().filter(|p| !new.contains(p)) {
            let owner_key = keys::capacity_provider_owner(p);
            let owner = self.get_record::<String>(&owner_key).await?;
            txn = txn
                .unchanged(&owner_key, owner.as_ref().map(|(_, kv)| kv))
                .delete(owner_key);
        }
        Ok(txn)
    }

    /// A cluster's capacity providers and default strategy, as ECS checks them: each provider
    /// built in or created, an Auto Scaling group provider in no other cluster, the strategy's
    /// providers among them and not mixing Fargate with Auto Scaling groups.
    pub(crate) async fn check_capacity(
        &self,
        cluster: &str,
        providers: &[String],
        strategy: &[ecs::CapacityProviderStrategyItem],
    ) -> Result<(), EcsError> {
        let custom: Vec<&String> = providers
            .iter()
            .filter(|p| !BUILT_IN_PROVIDERS.contains(&p.as_str()))
            .collect();
        // Checked again in the transaction that associates them (`associate`).
        self.associate(
            cluster,
            &[],
            &custom.into_iter().cloned().collect::<Vec<_>>(),
            Txn::new(),
        )
        .await?;
        let named: Vec<String> = strategy
            .iter()
            .map(|i| i.capacity_provider.clone().unwrap_or_default())
            .collect();
        crate::capacity::launch_type_of(&named)?;
        for item in strategy {
            let p = item.capacity_provider.as_deref().unwrap_or("");
            if !providers.iter().any(|x| x == p) {
                return Err(EcsError::invalid(format!(
                    "defaultCapacityProviderStrategy names capacity provider '{p}', which is not in the cluster's capacityProviders"
                )));
            }
            if let Some(b) = item.base {
                if !(0..=100_000).contains(&b) {
                    return Err(EcsError::invalid(format!(
                        "defaultCapacityProviderStrategy.base {b} must be between 0 and 100000"
                    )));
                }
            }
            if let Some(w) = item.weight {
                if !(0..=1000).contains(&w) {
                    return Err(EcsError::invalid(format!(
                        "defaultCapacityProviderStrategy.weight {w} must be between 0 and 1000"
                    )));
                }
            }
        }
        Ok(())
    }

    pub async fn create_cluster(
        &self,
        caller: &crate::Caller,
        r: ecs::CreateClusterRequest,
    ) -> Result<ecs::CreateClusterResponse, EcsError> {
        let name = r.cluster_name.clone().unwrap_or_else(|| "default".into());
        names::cluster_name(&name)?;
        Self::check_settings(r.settings.as_deref().unwrap_or_default())?;
        self.check_capacity(
            &name,
            r.capacity_providers.as_deref().unwrap_or_default(),
            r.default_capacity_provider_strategy
                .as_deref()
                .unwrap_or_default(),
        )
        .await?;
        let tags = r.tags.clone().unwrap_or_default();
        crate::check_tags(&tags)?;
        let arn = self.arn(ResourceKind::Cluster, &name);
        let key = keys::cluster(&name);
        // A cluster made without settings takes the caller's containerInsights account setting.
        let insights = self
            .effective_setting(&caller.principal_arn, "containerInsights")
            .await?;
        for _ in 0..CAS_ATTEMPTS {
            let existing = self.get_record::<Cluster>(&key).await?;
            if let Some((c, _)) = &existing {
                if c.status.as_deref() == Some(ClusterStatus::Active.as_str()) {
                    // Idempotent on name, as ECS is: the existing cluster comes back unchanged.
                    return Ok(ecs::CreateClusterResponse {
                        cluster: Some(self.present_all(c.clone()).await?),
                    });
                }
            }
            let cluster = Cluster {
                cluster_arn: Some(arn.clone()),
                cluster_name: Some(name.clone()),
                status: Some(ClusterStatus::Active.as_str().into()),
                settings: Some({
                    let mut settings = r.settings.clone().unwrap_or_default();
                    if !settings
                        .iter()
                        .any(|s| s.name.as_deref() == Some("containerInsights"))
                    {
                        settings.push(ClusterSetting {
                            name: Some("containerInsights".into()),
                            value: Some(insights.clone()),
                        });
                    }
                    settings
                }),
                configuration: r.configuration.clone(),
                capacity_providers: Some(r.capacity_providers.clone().unwrap_or_default()),
                default_capacity_provider_strategy: Some(
                    r.default_capacity_provider_strategy
                        .clone()
                        .unwrap_or_default(),
                ),
                service_connect_defaults: r.service_connect_defaults.as_ref().map(|d| {
                    ecs::ClusterServiceConnectDefaults {
                        namespace: d.namespace.clone(),
                    }
                }),
                ..Default::default()
            };
            let txn = Txn::new()
                .unchanged(&key, existing.as_ref().map(|(_, kv)| kv))
                .put(key.clone(), encode(&cluster)?);
            let mut txn = self
                .associate(
                    &name,
                    &[],
                    cluster.capacity_providers.as_deref().unwrap_or_default(),
                    txn,
                )
                .await?;
            // A re-created cluster starts with only the tags of this request.
            txn = if tags.is_empty() {
                txn.delete(keys::tags(&arn))
            } else {
                txn.put(keys::tags(&arn), encode(&tags)?)
            };
            if self.commit(txn).await? {
                tracing::info!(cluster = %name, "cluster created");
                return Ok(ecs::CreateClusterResponse {
                    cluster: Some(self.present_all(cluster).await?),
                });
            }
        }
        Err(conflict_exhausted("CreateCluster"))
    }

    pub async fn describe_clusters(
        &self,
        r: ecs::DescribeClustersRequest,
    ) -> Result<ecs::DescribeClustersResponse, EcsError> {
        let include = r.include.clone().unwrap_or_default();
        for i in &include {
            check_enum("include", i, enums::CLUSTER_FIELD)?;
        }
        let idents = r.clusters.clone().unwrap_or_else(|| vec!["default".into()]);
        if idents.len() > 100 {
            return Err(EcsError::invalid(format!(
                "clusters holds {} entries; at most 100 are allowed",
                idents.len()
            )));
        }
        let (mut clusters, mut failures) = (Vec::new(), Vec::new());
        for ident in idents {
            let missing = || ecs::Failure {
                arn: Some(if Arn::looks_like_arn(&ident) {
                    ident.clone()
                } else {
                    self.arn(ResourceKind::Cluster, &ident)
                }),
                reason: Some("MISSING".into()),
                detail: None,
            };
            let Ok(name) = self.cluster_name(Some(&ident)) else {
                failures.push(missing());
                continue;
            };
            match self.get_record::<Cluster>(&keys::cluster(&name)).await? {
                Some((c, _)) => clusters.push(self.present(c, &include).await?),
                None => failures.push(missing()),
            }
        }
        Ok(ecs::DescribeClustersResponse {
            clusters: Some(clusters),
            failures: Some(failures),
        })
    }

    pub async fn list_clusters(
        &self,
        r: ecs::ListClustersRequest,
    ) -> Result<ecs::ListClustersResponse, EcsError> {
        let limit = max_results(r.max_results, 100)?;
        let token = decode_token(r.next_token.as_deref())?;
        let all = self
            .store
            .range(keys::CLUSTERS, None, None)
            .await
            .map_err(store_error)?;
        let mut items = Vec::new();
        for kv in all {
            let c: Cluster = crate::decode(&kv)?;
            let pool = c.cluster_name.as_deref() == Some(crate::FARGATE_POOL);
            if c.status.as_deref() == Some(ClusterStatus::Active.as_str()) && !pool {
                items.push((kv.key, c.cluster_arn.unwrap_or_default()));
            }
        }
        let (arns, next) = page(items, token.as_deref(), limit, false);
        Ok(ecs::ListClustersResponse {
            cluster_arns: Some(arns),
            next_token: next,
        })
    }

    /// Read-modify-write of an ACTIVE cluster.
    async fn modify_cluster(
        &self,
        ident: &str,
        f: impl Fn(&mut Cluster) -> Result<(), EcsError>,
    ) -> Result<Cluster, EcsError> {
        for _ in 0..CAS_ATTEMPTS {
            let (mut c, kv) = self.active_cluster(Some(ident)).await?;
            f(&mut c)?;
            if self.commit(Txn::new().replace(&kv, encode(&c)?)).await? {
                return self.present_all(c).await;
            }
        }
        Err(conflict_exhausted("updating the cluster"))
    }

    pub async fn update_cluster(
        &self,
        r: ecs::UpdateClusterRequest,
    ) -> Result<ecs::UpdateClusterResponse, EcsError> {
        let ident = r.cluster.clone().unwrap_or_default();
        Self::check_settings(r.settings.as_deref().unwrap_or_default())?;
        let c = self
            .modify_cluster(&ident, |c| {
                if let Some(s) = &r.settings {
                    merge_settings(c, s);
                }
                if let Some(conf) = &r.configuration {
                    c.configuration = Some(conf.clone());
                }
                if let Some(d) = &r.service_connect_defaults {
                    c.service_connect_defaults = Some(ecs::ClusterServiceConnectDefaults {
                        namespace: d.namespace.clone(),
                    });
                }
                Ok(())
            })
            .await?;
        Ok(ecs::UpdateClusterResponse { cluster: Some(c) })
    }

    pub async fn update_cluster_settings(
        &self,
        r: ecs::UpdateClusterSettingsRequest,
    ) -> Result<ecs::UpdateClusterSettingsResponse, EcsError> {
        let ident = r.cluster.clone().unwrap_or_default();
        let settings = r.settings.clone().unwrap_or_default();
        Self::check_settings(&settings)?;
        let c = self
            .modify_cluster(&ident, |c| {
                merge_settings(c, &settings);
                Ok(())
            })
            .await?;
        Ok(ecs::UpdateClusterSettingsResponse { cluster: Some(c) })
    }

    pub async fn delete_cluster(
        &self,
        r: ecs::DeleteClusterRequest,
    ) -> Result<ecs::DeleteClusterResponse, EcsError> {
        let ident = r.cluster.clone().unwrap_or_default();
        if self.cluster_name(Some(&ident)).ok().as_deref() == Some(crate::FARGATE_POOL) {
            return Err(EcsError::invalid(
                "The cluster ~fargate is Berth's pool of Fargate capacity and cannot be deleted.",
            ));
        }
        for _ in 0..CAS_ATTEMPTS {
            let (mut c, kv) = self.active_cluster(Some(&ident)).await?;
            let name = c.cluster_name.clone().unwrap_or_default();
            self.check_empty(&name).await?;
            // Two steps, so nothing can slip in between the emptiness check and the delete:
            // mark the cluster DEPROVISIONING (every placement guards on the cluster record's
            // revision, so none commits after this), count again, then finish or undo.
            c.status = Some("DEPROVISIONING".into());
            let marked = Txn::new().replace(&kv, encode(&c)?);
            if !self.commit(marked).await? {
                continue;
            }
            let Some(marked_kv) = self.store.get(&kv.key).await.map_err(store_error)? else {
                return Err(not_found());
            };
            let still_empty = self.check_empty(&name).await;
            c.status = Some(
                if still_empty.is_ok() {
                    ClusterStatus::Inactive
                } else {
                    ClusterStatus::Active
                }
                .as_str()
                .into(),
            );
            let mut finish = Txn::new()
                .unchanged(&kv.key, Some(&marked_kv))
                .put(kv.key.clone(), encode(&c)?);
            if still_empty.is_ok() {
                // Its Auto Scaling group providers are free for another cluster.
                for p in c.capacity_providers.iter().flatten() {
                    if !BUILT_IN_PROVIDERS.contains(&p.as_str()) {
                        finish = finish.delete(keys::capacity_provider_owner(p));
                    }
                }
            }
            if !self.commit(finish).await? {
                return Err(conflict_exhausted("DeleteCluster"));
            }
            still_empty?;
            tracing::info!(cluster = %name, "cluster deleted");
            return Ok(ecs::DeleteClusterResponse {
                cluster: Some(self.present_all(c).await?),
            });
        }
        Err(conflict_exhausted("DeleteCluster"))
    }

    /// ECS's refusals for a cluster that still holds services, instances or tasks.
    async fn check_empty(&self, name: &str) -> Result<(), EcsError> {
        let counts = self.cluster_counts(name).await?;
        if counts.services > 0 {
            return Err(EcsError::new(
                ErrorKind::ClusterContainsServices,
                "The Cluster cannot be deleted while Services are active.",
            ));
        }
        if counts.instances > 0 {
            return Err(EcsError::new(
                ErrorKind::ClusterContainsContainerInstances,
                "The Cluster cannot be deleted while Container Instances are active or draining.",
            ));
        }
        if counts.tasks > 0 {
            return Err(EcsError::new(
                ErrorKind::ClusterContainsTasks,
                "The Cluster cannot be deleted while Tasks are active.",
            ));
        }
        Ok(())
    }
}

fn merge_settings(c: &mut Cluster, new: &[ClusterSetting]) {
    let settings = c.settings.get_or_insert_with(Vec::new);
    for s in new {
        match settings.iter_mut().find(|x| x.name == s.name) {
            Some(x) => x.value = s.value.clone(),
            None => settings.push(s.clone()),
        }
    }
}
