//! Capacity providers: the built-in FARGATE and FARGATE_SPOT (both run on the pool of Fargate
//! capacity; FARGATE_SPOT tasks may be interrupted), Auto Scaling group providers (a group of
//! container instances: agents started with `--auto-scaling-group NAME` belong to the provider
//! whose `autoScalingGroupArn` names that group, and its tasks are placed only on them), a
//! cluster's providers and default strategy, and the split of new tasks by a strategy
//! ([`berth_scheduler::capacity`]).

use crate::clusters::BUILT_IN_PROVIDERS;
use crate::paging::{decode_token, max_results, page};
use crate::{keys, Control};
use berth_api::ecs::{self, CapacityProviderStrategyItem, Cluster};
use berth_api::error::check_enum;
use berth_api::{EcsError, ErrorKind};
use berth_model::arn::ResourceKind;
use berth_scheduler::capacity::{self as split, Item};
use berth_scheduler::query::{Expr, Field, Op, Value};
use berth_scheduler::Constraint;
use berth_store::Txn;

/// What a strategy names, checked against the cluster: the providers, their items, and the
/// launch type their tasks have (FARGATE for the built-in providers, EC2 for Auto Scaling
/// group providers; ECS refuses a strategy that mixes the two).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Strategy {
    pub providers: Vec<String>,
    pub items: Vec<Item>,
    pub launch_type: &'static str,
}

/// The launch type of a strategy's tasks, from the names of its providers.
pub(crate) fn launch_type_of(providers: &[String]) -> Result<&'static str, EcsError> {
    let built_in = providers
        .iter()
        .filter(|p| BUILT_IN_PROVIDERS.contains(&p.as_str()))
        .count();
    match built_in {
        0 => Ok("EC2"),
        n if n == providers.len() => Ok("FARGATE"),
        _ => Err(EcsError::invalid(
            "The capacity provider strategy cannot contain a mix of capacity providers using Auto Scaling groups and Fargate providers. Specify one or the other and try again.",
        )),
    }
}

impl Strategy {
    /// A stored strategy (a service's), checked when it was given.
    pub(crate) fn stored(items: &[CapacityProviderStrategyItem]) -> Option<Strategy> {
        let providers: Vec<String> = items
            .iter()
            .map(|i| i.capacity_provider.clone().unwrap_or_default())
            .collect();
        let s = Strategy {
            launch_type: launch_type_of(&providers).ok()?,
            providers,
            items: items
                .iter()
                .map(|i| Item {
                    base: i.base.unwrap_or(0).max(0) as u32,
                    weight: i.weight.unwrap_or(0).max(0) as u32,
                })
                .collect(),
        };
        split::check(&s.items).is_ok().then_some(s)
    }

    /// How many of `n` new tasks each provider gets, given the tasks each already has.
    pub(crate) fn split(&self, existing: &[u32], n: usize) -> Vec<(String, usize)> {
        let mut counts = vec![0usize; self.providers.len()];
        for i in split::split(&self.items, existing, n) {
            counts[i] += 1;
        }
        self.providers
            .iter()
            .cloned()
            .zip(counts)
            .filter(|(_, k)| *k > 0)
            .collect()
    }
}

/// A strategy as ECS checks it against the cluster's capacity providers.
pub(crate) fn strategy_of(
    cluster: &Cluster,
    items: &[CapacityProviderStrategyItem],
) -> Result<Strategy, EcsError> {
    let associated = cluster.capacity_providers.clone().unwrap_or_default();
    let mut providers = Vec::new();
    let mut out = Vec::new();
    for i in items {
        let name = i.capacity_provider.clone().unwrap_or_default();
        if !associated.contains(&name) {
            return Err(EcsError::invalid(
                "The specified capacity provider strategy cannot contain a capacity provider that is not associated with the cluster. Associate the capacity provider with the cluster or specify a valid capacity provider and try again.",
            ));
        }
        if providers.contains(&name) {
            return Err(EcsError::invalid(format!(
                "The capacity provider strategy names {name} more than once."
            )));
        }
        let (base, weight) = (i.base.unwrap_or(0), i.weight.unwrap_or(0));
        if base < 0 || weight < 0 {
            return Err(EcsError::invalid(split::StrategyError::Range.to_string()));
        }
        providers.push(name);
        out.push(Item {
            base: base as u32,
            weight: weight as u32,
        });
    }
    split::check(&out).map_err(|e| EcsError::invalid(e.to_string()))?;
    Ok(Strategy {
        launch_type: launch_type_of(&providers)?,
        providers,
        items: out,
    })
}

/// The strategy a RunTask or CreateService uses: the one given, else (with no launch type
/// either) the cluster's default, else none (the launch type, EC2 unless given).
pub(crate) fn chosen(
    cluster: &Cluster,
    given: Option<&[CapacityProviderStrategyItem]>,
    launch_type: Option<&str>,
) -> Result<Option<Strategy>, EcsError> {
    let given = given.filter(|g| !g.is_empty());
    if given.is_some() && launch_type.is_some() {
        return Err(EcsError::invalid(
            "Specifying both a launch type and capacity provider strategy is not supported.",
        ));
    }
    let items = match given {
        Some(g) => g.to_vec(),
        None if launch_type.is_none() => cluster
            .default_capacity_provider_strategy
            .clone()
            .unwrap_or_default(),
        None => Vec::new(),
    };
    if items.is_empty() {
        return Ok(None);
    }
    strategy_of(cluster, &items).map(Some)
}

/// What a RunTask or CreateService runs on: its strategy (if any) and its tasks' launch type.
pub(crate) struct Launch {
    pub strategy: Option<Strategy>,
    pub launch_type: String,
}

/// The strategy and launch type of a RunTask or CreateService, checked as ECS checks them:
/// the launch type's name, the platform version (FARGATE only), and no placement rules on
/// FARGATE (`placement_rules`: the request gives constraints or strategies).
pub(crate) fn launch(
    cluster: &Cluster,
    given: Option<&[CapacityProviderStrategyItem]>,
    launch_type: Option<&str>,
    platform_version: Option<&str>,
    placement_rules: bool,
) -> Result<Launch, EcsError> {
    let strategy = chosen(cluster, given, launch_type)?;
    let launch_type = match &strategy {
        Some(s) => s.launch_type.to_string(),
        None => launch_type.unwrap_or("EC2").to_string(),
    };
    check_enum("launchType", &launch_type, ecs::enums::LAUNCH_TYPE)?;
    crate::tasks::check_platform(&launch_type, platform_version)?;
    if launch_type == "FARGATE" && placement_rules {
        return Err(EcsError::invalid(
            "Task placement constraints and strategies are not supported with the FARGATE launch type.",
        ));
    }
    Ok(Launch {
        strategy,
        launch_type,
    })
}

/// The Auto Scaling group an `autoScalingGroupArn` names: the name after
/// `autoScalingGroupName/` in an ARN, or the name itself (ECS takes either).
pub(crate) fn group_name(arn_or_name: &str) -> Result<String, EcsError> {
    let invalid = || {
        EcsError::invalid(format!(
            "The specified Auto Scaling group ARN '{arn_or_name}' is not valid. Specify an Auto Scaling group ARN (arn:aws:autoscaling:REGION:ACCOUNT:autoScalingGroup:ID:autoScalingGroupName/NAME) or name."
        ))
    };
    let name = match arn_or_name.strip_prefix("arn:") {
        Some(rest) => {
            let parts: Vec<&str> = rest.splitn(7, ':').collect();
            match parts.as_slice() {
                [_, "autoscaling", _, _, "autoScalingGroup", _, tail] => tail
                    .strip_prefix("autoScalingGroupName/")
                    .ok_or_else(invalid)?,
                _ => return Err(invalid()),
            }
        }
        None => arn_or_name,
    };
    if name.is_empty() || name.len() > 255 || name.chars().any(char::is_control) {
        return Err(invalid());
    }
    Ok(name.to_string())
}

/// The group an ASG provider record stands for.
fn provider_group(p: &ecs::CapacityProvider) -> Option<String> {
    p.auto_scaling_group_provider
        .as_ref()
        .and_then(|a| a.auto_scaling_group_arn.as_deref())
        .and_then(|a| group_name(a).ok())
}

/// Managed scaling as ECS fills it in: given members checked, the rest ECS's defaults.
fn managed_scaling(m: Option<&ecs::ManagedScaling>) -> Result<ecs::ManagedScaling, EcsError> {
    let m = m.cloned().unwrap_or_default();
    let status = m.status.unwrap_or_else(|| "DISABLED".into());
    check_enum(
        "managedScaling.status",
        &status,
        ecs::enums::MANAGED_SCALING_STATUS,
    )?;
    let in_range = |what: &str, v: Option<i32>, lo: i32, hi: i32, default: i32| match v {
        None => Ok(default),
        Some(v) if (lo..=hi).contains(&v) => Ok(v),
        Some(v) => Err(EcsError::invalid(format!(
            "managedScaling.{what} {v} must be between {lo} and {hi}."
        ))),
    };
    let target = in_range("targetCapacity", m.target_capacity, 1, 100, 100)?;
    let min = in_range(
        "minimumScalingStepSize",
        m.minimum_scaling_step_size,
        1,
        10_000,
        1,
    )?;
    let max = in_range(
        "maximumScalingStepSize",
        m.maximum_scaling_step_size,
        1,
        10_000,
        10_000,
    )?;
    let warmup = in_range(
        "instanceWarmupPeriod",
        m.instance_warmup_period,
        0,
        10_000,
        300,
    )?;
    if min > max {
        return Err(EcsError::invalid(
            "The managed scaling minimum scaling step size must be less than or equal to the maximum scaling step size.",
        ));
    }
    Ok(ecs::ManagedScaling {
        status: Some(status),
        target_capacity: Some(target),
        minimum_scaling_step_size: Some(min),
        maximum_scaling_step_size: Some(max),
        instance_warmup_period: Some(warmup),
    })
}

/// Termination protection and draining, checked; protection needs managed scaling.
fn protection_and_draining(
    scaling: &ecs::ManagedScaling,
    protection: Option<&str>,
    draining: Option<&str>,
) -> Result<(String, String), EcsError> {
    let protection = protection.unwrap_or("DISABLED").to_string();
    let draining = draining.unwrap_or("ENABLED").to_string();
    check_enum(
        "managedTerminationProtection",
        &protection,
        ecs::enums::MANAGED_TERMINATION_PROTECTION,
    )?;
    check_enum("managedDraining", &draining, ecs::enums::MANAGED_DRAINING)?;
    if protection == "ENABLED" && scaling.status.as_deref() != Some("ENABLED") {
        return Err(EcsError::invalid(
            "The managed termination protection setting for the capacity provider is invalid. To enable managed termination protection for a capacity provider, managed scaling must also be enabled.",
        ));
    }
    Ok((protection, draining))
}

/// A capacity provider's name as ECS allows it.
fn check_provider_name(name: &str) -> Result<(), EcsError> {
    let lower = name.to_ascii_lowercase();
    if ["aws", "ecs", "fargate"]
        .iter()
        .any(|p| lower.starts_with(p))
    {
        return Err(EcsError::invalid(
            "The specified capacity provider name is invalid. Capacity provider names cannot be prefixed with \"aws\", \"ecs\", or \"fargate\". Specify a valid name and try again.",
        ));
    }
    if name.is_empty()
        || name.len() > 255
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(EcsError::invalid(format!(
            "The specified capacity provider name '{name}' is invalid. Up to 255 letters (uppercase and lowercase), numbers, underscores, and hyphens are allowed."
        )));
    }
    Ok(())
}

/// The name a capacity provider identifier (name or ARN) stands for.
fn provider_ident(ident: &str) -> &str {
    match ident.strip_prefix("arn:") {
        Some(_) => ident.rsplit('/').next().unwrap_or_default(),
        None => ident,
    }
}

/// Amazon ECS Managed Instances providers (and their `cluster` member), refused by name.
fn managed_instances_unsupported() -> EcsError {
    EcsError::new(
        ErrorKind::UnsupportedFeature,
        "Amazon ECS Managed Instances capacity providers (managedInstancesProvider, cluster) are not supported by Berth; its capacity providers are Auto Scaling group providers and FARGATE, FARGATE_SPOT.",
    )
}

/// The Auto Scaling group provider an Update or Delete names (by name or ARN): the built-in
/// ones cannot be `verb`, and Managed Instances members are refused.
fn custom_provider(
    ident: Option<&str>,
    verb: &str,
    managed_instances: bool,
) -> Result<String, EcsError> {
    let name = provider_ident(ident.unwrap_or_default()).to_string();
    if BUILT_IN_PROVIDERS.contains(&name.as_str()) {
        return Err(EcsError::invalid(format!(
            "The capacity provider {name} is built in and cannot be {verb}."
        )));
    }
    if managed_instances {
        return Err(managed_instances_unsupported());
    }
    Ok(name)
}

fn not_found_provider() -> EcsError {
    EcsError::client(
        "The specified capacity provider does not exist. Specify a valid name or ARN and try again.",
    )
}

impl Control {
    /// A built-in provider's description.
    fn built_in(&self, name: &str) -> ecs::CapacityProvider {
        ecs::CapacityProvider {
            name: Some(name.to_string()),
            capacity_provider_arn: Some(self.arn(ResourceKind::CapacityProvider, name)),
            status: Some("ACTIVE".into()),
            r#type: Some(name.to_string()),
            tags: Some(Vec::new()),
            ..Default::default()
        }
    }

    /// The placement constraint of an Auto Scaling group provider's tasks: its group's
    /// instances only (none for the built-in providers, or no provider).
    pub(crate) async fn provider_constraint(
        &self,
        provider: Option<&str>,
    ) -> Result<Option<Constraint>, EcsError> {
        let Some(name) = provider.filter(|p| !BUILT_IN_PROVIDERS.contains(p)) else {
            return Ok(None);
        };
        let (p, _) = self
            .get_record::<ecs::CapacityProvider>(&keys::capacity_provider(name))
            .await?
            .ok_or_else(not_found_provider)?;
        let group = provider_group(&p).ok_or_else(not_found_provider)?;
        Ok(Some(Constraint::MemberOf(Expr::Compare {
            field: Field::Attribute(crate::AUTO_SCALING_GROUP_ATTRIBUTE.into()),
            op: Op::Eq,
            value: Some(Value::One(group)),
        })))
    }

    /// The Auto Scaling group provider whose group is `group`, if any.
    pub(crate) async fn provider_of_group(&self, group: &str) -> Result<Option<String>, EcsError> {
        Ok(self
            .capacity_providers_all()
            .await?
            .into_iter()
            .find(|(p, _)| provider_group(p).as_deref() == Some(group))
            .and_then(|(p, _)| p.name))
    }

    pub async fn create_capacity_provider(
        &self,
        r: ecs::CreateCapacityProviderRequest,
    ) -> Result<ecs::CreateCapacityProviderResponse, EcsError> {
        let name = r.name.clone().unwrap_or_default();
        check_provider_name(&name)?;
        if r.managed_instances_provider.is_some() || r.cluster.is_some() {
            return Err(managed_instances_unsupported());
        }
        let Some(asg) = r.auto_scaling_group_provider.clone() else {
            return Err(EcsError::invalid(
                "autoScalingGroupProvider is required: a capacity provider stands for the container instances of an Auto Scaling group.",
            ));
        };
        let group_arn = asg.auto_scaling_group_arn.clone().unwrap_or_default();
        let group = group_name(&group_arn)?;
        let scaling = managed_scaling(asg.managed_scaling.as_ref())?;
        let (protection, draining) = protection_and_draining(
            &scaling,
            asg.managed_termination_protection.as_deref(),
            asg.managed_draining.as_deref(),
        )?;
        let tags = r.tags.clone().unwrap_or_default();
        crate::check_tags(&tags)?;
        let arn = self.arn(ResourceKind::CapacityProvider, &name);
        let provider = ecs::CapacityProvider {
            capacity_provider_arn: Some(arn.clone()),
            name: Some(name.clone()),
            status: Some("ACTIVE".into()),
            r#type: Some("EC2_AUTOSCALING".into()),
            auto_scaling_group_provider: Some(ecs::AutoScalingGroupProvider {
                auto_scaling_group_arn: Some(group_arn),
                managed_scaling: Some(scaling),
                managed_termination_protection: Some(protection),
                managed_draining: Some(draining),
            }),
            tags: Some(tags.clone()),
            ..Default::default()
        };
        for _ in 0..crate::CAS_ATTEMPTS {
            let all = self.capacity_providers_all().await?;
            if all.iter().any(|(p, _)| p.name.as_deref() == Some(&name)) {
                return Err(EcsError::client(
                    "The specified capacity provider already exists. To change the configuration of an existing capacity provider, update the capacity provider.",
                ));
            }
            if all
                .iter()
                .any(|(p, _)| provider_group(p).as_deref() == Some(&group))
            {
                return Err(EcsError::client(
                    "The specified Auto Scaling group ARN is already being used by another capacity provider. Specify a unique Auto Scaling group ARN and try again.",
                ));
            }
            // One provider per group, whatever was created meanwhile.
            let group_key = keys::capacity_provider_group(&group);
            let mut txn = Txn::new()
                .unchanged(&keys::capacity_provider(&name), None)
                .put(keys::capacity_provider(&name), crate::encode(&provider)?)
                .unchanged(&group_key, None)
                .put(group_key, crate::encode(&name)?);
            if !tags.is_empty() {
                txn = txn.put(keys::tags(&arn), crate::encode(&tags)?);
            }
            if self.commit(txn).await? {
                return Ok(ecs::CreateCapacityProviderResponse {
                    capacity_provider: Some(provider),
                });
            }
        }
        Err(crate::conflict_exhausted("creating the capacity provider"))
    }

    pub async fn update_capacity_provider(
        &self,
        r: ecs::UpdateCapacityProviderRequest,
    ) -> Result<ecs::UpdateCapacityProviderResponse, EcsError> {
        let name = custom_provider(
            r.name.as_deref(),
            "updated",
            r.managed_instances_provider.is_some() || r.cluster.is_some(),
        )?;
        let Some(update) = r.auto_scaling_group_provider.clone() else {
            return Err(EcsError::invalid(
                "autoScalingGroupProvider is required to update an Auto Scaling group capacity provider.",
            ));
        };
        for _ in 0..crate::CAS_ATTEMPTS {
            let Some((mut p, kv)) = self
                .get_record::<ecs::CapacityProvider>(&keys::capacity_provider(&name))
                .await?
            else {
                return Err(not_found_provider());
            };
            let mut asg = p.auto_scaling_group_provider.clone().unwrap_or_default();
            // Members not given keep their values; managed scaling is merged member by member.
            let mut scaling = asg.managed_scaling.clone().unwrap_or_default();
            if let Some(m) = &update.managed_scaling {
                scaling.status = m.status.clone().or(scaling.status);
                scaling.target_capacity = m.target_capacity.or(scaling.target_capacity);
                scaling.minimum_scaling_step_size = m
                    .minimum_scaling_step_size
                    .or(scaling.minimum_scaling_step_size);
                scaling.maximum_scaling_step_size = m
                    .maximum_scaling_step_size
                    .or(scaling.maximum_scaling_step_size);
                scaling.instance_warmup_period =
                    m.instance_warmup_period.or(scaling.instance_warmup_period);
            }
            let scaling = managed_scaling(Some(&scaling))?;
            let (protection, draining) = protection_and_draining(
                &scaling,
                update
                    .managed_termination_protection
                    .as_deref()
                    .or(asg.managed_termination_protection.as_deref()),
                update
                    .managed_draining
                    .as_deref()
                    .or(asg.managed_draining.as_deref()),
            )?;
            asg.managed_scaling = Some(scaling);
            asg.managed_termination_protection = Some(protection);
            asg.managed_draining = Some(draining);
            p.auto_scaling_group_provider = Some(asg);
            p.update_status = Some("UPDATE_COMPLETE".into());
            if self
                .commit(Txn::new().replace(&kv, crate::encode(&p)?))
                .await?
            {
                p.tags = None;
                return Ok(ecs::UpdateCapacityProviderResponse {
                    capacity_provider: Some(p),
                });
            }
        }
        Err(crate::conflict_exhausted("updating the capacity provider"))
    }

    /// Deletes an Auto Scaling group provider that no cluster uses any more.
    pub async fn delete_capacity_provider(
        &self,
        r: ecs::DeleteCapacityProviderRequest,
    ) -> Result<ecs::DeleteCapacityProviderResponse, EcsError> {
        let name = custom_provider(
            r.capacity_provider.as_deref(),
            "deleted",
            r.cluster.is_some(),
        )?;
        for _ in 0..crate::CAS_ATTEMPTS {
            let Some((mut p, kv)) = self
                .get_record::<ecs::CapacityProvider>(&keys::capacity_provider(&name))
                .await?
            else {
                return Err(not_found_provider());
            };
            // Its owner record says which cluster it serves; one associating it meanwhile
            // makes this a conflict.
            let owner_key = keys::capacity_provider_owner(&name);
            if let Some((cluster, _)) = self.get_record::<String>(&owner_key).await? {
                return Err(EcsError::client(format!(
                    "The capacity provider cannot be deleted because it is associated with cluster: {cluster}. Remove the capacity provider from the cluster and try again."
                )));
            }
            let arn = p.capacity_provider_arn.clone().unwrap_or_default();
            let mut txn = Txn::new()
                .unchanged(&kv.key, Some(&kv))
                .unchanged(&owner_key, None)
                .delete(keys::capacity_provider(&name))
                .delete(keys::tags(&arn));
            if let Some(group) = provider_group(&p) {
                txn = txn.delete(keys::capacity_provider_group(&group));
            }
            if self.commit(txn).await? {
                p.status = Some("INACTIVE".into());
                p.update_status = Some("DELETE_COMPLETE".into());
                p.tags = None;
                return Ok(ecs::DeleteCapacityProviderResponse {
                    capacity_provider: Some(p),
                });
            }
        }
        Err(crate::conflict_exhausted("deleting the capacity provider"))
    }

    pub async fn describe_capacity_providers(
        &self,
        r: ecs::DescribeCapacityProvidersRequest,
    ) -> Result<ecs::DescribeCapacityProvidersResponse, EcsError> {
        if r.cluster.is_some() {
            return Err(managed_instances_unsupported());
        }
        for i in r.include.iter().flatten() {
            check_enum("include", i, ecs::enums::CAPACITY_PROVIDER_FIELD)?;
        }
        let with_tags = r.include.iter().flatten().any(|i| i == "TAGS");
        let names = r.capacity_providers.clone().unwrap_or_default();
        let limit = max_results(r.max_results, 10)?;
        let after = decode_token(r.next_token.as_deref())?;
        let stored = self.capacity_providers_all().await?;
        // Every provider in name order (built-in first), keyed by name for the pages.
        let mut all: Vec<(String, ecs::CapacityProvider)> = BUILT_IN_PROVIDERS
            .iter()
            .map(|n| (n.to_string(), self.built_in(n)))
            .chain(
                stored
                    .into_iter()
                    .map(|(p, _)| (p.name.clone().unwrap_or_default(), p)),
            )
            .collect();
        // Pages go by name: the built-in ones sort among the rest.
        all.sort_by(|a, b| a.0.cmp(&b.0));
        let mut failures = Vec::new();
        let (mut providers, next_token) = if names.is_empty() {
            page(all, after.as_deref(), limit, false)
        } else {
            let mut found = Vec::new();
            for n in names {
                match all.iter().position(|(k, _)| k == provider_ident(&n)) {
                    Some(i) => found.push(all.remove(i).1),
                    None => failures.push(ecs::Failure {
                        arn: Some(n),
                        reason: Some("MISSING".into()),
                        detail: None,
                    }),
                }
            }
            (found, None)
        };
        for p in &mut providers {
            p.tags = match with_tags {
                true => Some(
                    self.tags_of(p.capacity_provider_arn.as_deref().unwrap_or_default())
                        .await?,
                ),
                false => None,
            };
        }
        Ok(ecs::DescribeCapacityProvidersResponse {
            capacity_providers: Some(providers),
            failures: Some(failures),
            next_token,
        })
    }

    /// Sets a cluster's capacity providers and default strategy (both replaced whole).
    pub async fn put_cluster_capacity_providers(
        &self,
        r: ecs::PutClusterCapacityProvidersRequest,
    ) -> Result<ecs::PutClusterCapacityProvidersResponse, EcsError> {
        let providers = r.capacity_providers.clone().unwrap_or_default();
        let strategy = r
            .default_capacity_provider_strategy
            .clone()
            .unwrap_or_default();
        for _ in 0..crate::CAS_ATTEMPTS {
            let (mut c, kv) = self.active_cluster(r.cluster.as_deref()).await?;
            let c_before = c.clone();
            let name = c.cluster_name.clone().unwrap_or_default();
            if name == crate::FARGATE_POOL {
                return Err(EcsError::invalid(
                    "The cluster ~fargate is Berth's pool of Fargate capacity.",
                ));
            }
            self.check_capacity(&name, &providers, &strategy).await?;
            // A provider a service's strategy or a task not yet stopped names stays.
            let removed: Vec<&String> = c
                .capacity_providers
                .iter()
                .flatten()
                .filter(|p| !providers.contains(p))
                .collect();
            if !removed.is_empty() {
                for kv in self
                    .store
                    .range(&keys::tasks_of(&name), None, None)
                    .await
                    .map_err(crate::store_error)?
                {
                    let t: ecs::Task = crate::decode(&kv)?;
                    let live = t.last_status.as_deref() != Some("STOPPED");
                    if live
                        && t.capacity_provider_name
                            .as_ref()
                            .is_some_and(|p| removed.contains(&p))
                    {
                        return Err(EcsError::new(
                            ErrorKind::ResourceInUse,
                            "The specified capacity provider is in use and cannot be removed.",
                        ));
                    }
                }
            }
            for (svc, _) in self.services_in(&name).await? {
                let used = svc.status.as_deref() != Some("INACTIVE")
                    && svc
                        .capacity_provider_strategy
                        .iter()
                        .flatten()
                        .filter_map(|i| i.capacity_provider.as_deref())
                        .any(|p| !providers.iter().any(|x| x == p));
                if used {
                    return Err(EcsError::new(
                        ErrorKind::ResourceInUse,
                        "The specified capacity provider is in use and cannot be removed.",
                    ));
                }
            }
            c.capacity_providers = Some(providers.clone());
            c.default_capacity_provider_strategy = Some(strategy.clone());
            if !strategy.is_empty() {
                strategy_of(&c, &strategy)?;
            }
            // Providers deleted or taken by another cluster meanwhile make this a conflict.
            let old = c_before.capacity_providers.clone().unwrap_or_default();
            let txn = self
                .associate(
                    &name,
                    &old,
                    &providers,
                    Txn::new().replace(&kv, crate::encode(&c)?),
                )
                .await?;
            if self.commit(txn).await? {
                return Ok(ecs::PutClusterCapacityProvidersResponse { cluster: Some(c) });
            }
        }
        Err(crate::conflict_exhausted(
            "setting the cluster's capacity providers",
        ))
    }

    /// How many live tasks of `group` in `cluster` each of `providers` runs.
    pub(crate) async fn provider_counts(
        &self,
        cluster: &str,
        group: &str,
        providers: &[String],
    ) -> Result<Vec<u32>, EcsError> {
        let ids: Vec<String> = {
            let cs = self.state.cluster(cluster).await;
            cs.group_tasks(group)
                .into_iter()
                .filter(|t| !t.desired_stopped)
                .map(|t| keys::task(cluster, &t.id))
                .collect()
        };
        let mut counts = vec![0u32; providers.len()];
        for kv in self
            .store
            .get_many(&ids)
            .await
            .map_err(crate::store_error)?
            .into_iter()
            .flatten()
        {
            let t: ecs::Task = crate::decode(&kv)?;
            if let Some(i) = providers
                .iter()
                .position(|p| t.capacity_provider_name.as_deref() == Some(p.as_str()))
            {
                counts[i] += 1;
            }
        }
        Ok(counts)
    }
}

/// ECS's stop code and reason for a FARGATE_SPOT task whose capacity was reclaimed.
pub const SPOT_STOP_CODE: &str = "SpotInterruption";
pub const SPOT_STOP_REASON: &str = "Your Spot Task was interrupted.";

impl Control {
    /// The RUNNING FARGATE_SPOT tasks of `cluster` meant to keep running: their ARNs.
    async fn spot_tasks(&self, cluster: &str) -> Result<Vec<String>, EcsError> {
        let mut out = Vec::new();
        for kv in self
            .store
            .range(&keys::tasks_of(cluster), None, None)
            .await
            .map_err(crate::store_error)?
        {
            let t: ecs::Task = crate::decode(&kv)?;
            if t.capacity_provider_name.as_deref() == Some("FARGATE_SPOT")
                && t.last_status.as_deref() == Some("RUNNING")
                && t.desired_status.as_deref() == Some("RUNNING")
            {
                out.extend(t.task_arn);
            }
        }
        Ok(out)
    }

    /// Interrupts one Spot task of `cluster`: false when it was stopping already.
    async fn interrupt(&self, cluster: &str, arn: &str) -> Result<bool, EcsError> {
        let id = arn.rsplit('/').next().unwrap_or_default();
        let stopped = self
            .stop_task_as(cluster, id, SPOT_STOP_CODE, SPOT_STOP_REASON)
            .await?
            .is_some();
        if stopped {
            tracing::info!(task = arn, "Spot capacity reclaimed: task interrupted");
        }
        Ok(stopped)
    }

    /// Reclaims Spot capacity: interrupts RUNNING FARGATE_SPOT tasks (the one named, or up to
    /// `count` of those in `cluster` or in every cluster). Each gets ECS's two-minute warning:
    /// its containers get SIGTERM, then SIGKILL after their `stopTimeout` (at most 120 s on
    /// Fargate), and it stops with code SpotInterruption; a service replaces it.
    pub async fn interrupt_spot(
        &self,
        cluster: Option<&str>,
        task: Option<&str>,
        count: usize,
    ) -> Result<Vec<String>, EcsError> {
        let clusters = match cluster {
            Some(c) => vec![self.cluster_name(Some(c))?],
            None => self.state.cluster_names(),
        };
        let mut out = Vec::new();
        for c in clusters
            .iter()
            .filter(|c| c.as_str() != crate::FARGATE_POOL)
        {
            for arn in self.spot_tasks(c).await? {
                if out.len() >= count {
                    break;
                }
                if task.is_some_and(|want| want != arn && !arn.ends_with(&format!("/{want}"))) {
                    continue;
                }
                if self.interrupt(c, &arn).await? {
                    out.push(arn);
                }
            }
        }
        if let (Some(want), true) = (task, out.is_empty()) {
            return Err(EcsError::invalid(format!(
                "{want} is not a RUNNING FARGATE_SPOT task"
            )));
        }
        Ok(out)
    }

    /// One round of the Spot chaos: each RUNNING FARGATE_SPOT task is interrupted with
    /// probability `p`.
    pub async fn spot_chaos(&self, p: f64) -> Result<usize, EcsError> {
        let mut n = 0;
        for c in self.state.cluster_names() {
            if c == crate::FARGATE_POOL {
                continue;
            }
            for arn in self.spot_tasks(&c).await? {
                if rand::random::<f64>() < p && self.interrupt(&c, &arn).await? {
                    n += 1;
                }
            }
        }
        Ok(n)
    }
}
