//! Capacity providers: the built-in FARGATE and FARGATE_SPOT (both run on the pool of Fargate
//! capacity; FARGATE_SPOT tasks may be interrupted), a cluster's providers and default
//! strategy, and the split of new tasks by a strategy ([`berth_scheduler::capacity`]).

use crate::clusters::BUILT_IN_PROVIDERS;
use crate::{keys, Control};
use berth_api::ecs::{self, CapacityProviderStrategyItem, Cluster};
use berth_api::EcsError;
use berth_scheduler::capacity::{self as split, Item};

/// What a strategy names, checked against the cluster: the providers and their items.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Strategy {
    pub providers: Vec<String>,
    pub items: Vec<Item>,
}

impl Strategy {
    /// A stored strategy (a service's), checked when it was given.
    pub(crate) fn stored(items: &[CapacityProviderStrategyItem]) -> Option<Strategy> {
        let s = Strategy {
            providers: items
                .iter()
                .map(|i| i.capacity_provider.clone().unwrap_or_default())
                .collect(),
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
        providers,
        items: out,
    })
}

/// The strategy a RunTask or CreateService uses: the one given, else (with no launch type
/// either) the cluster's default, else none (the EC2 launch type).
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

/// A built-in provider's description (Berth has no Auto Scaling group providers yet).
fn built_in(name: &str) -> ecs::CapacityProvider {
    ecs::CapacityProvider {
        name: Some(name.to_string()),
        capacity_provider_arn: Some(format!("arn:aws:ecs:::capacity-provider/{name}")),
        status: Some("ACTIVE".into()),
        tags: Some(Vec::new()),
        ..Default::default()
    }
}

impl Control {
    pub async fn describe_capacity_providers(
        &self,
        r: ecs::DescribeCapacityProvidersRequest,
    ) -> Result<ecs::DescribeCapacityProvidersResponse, EcsError> {
        let names = r.capacity_providers.clone().unwrap_or_default();
        let mut providers = Vec::new();
        let mut failures = Vec::new();
        if names.is_empty() {
            providers.extend(BUILT_IN_PROVIDERS.iter().map(|n| built_in(n)));
        }
        for n in names {
            let short = n.rsplit('/').next().unwrap_or_default().to_string();
            if BUILT_IN_PROVIDERS.contains(&short.as_str()) {
                providers.push(built_in(&short));
            } else {
                failures.push(ecs::Failure {
                    arn: Some(n),
                    reason: Some("MISSING".into()),
                    detail: None,
                });
            }
        }
        Ok(ecs::DescribeCapacityProvidersResponse {
            capacity_providers: Some(providers),
            failures: Some(failures),
            next_token: None,
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
        Self::check_capacity(&providers, &strategy)?;
        for _ in 0..crate::CAS_ATTEMPTS {
            let (mut c, kv) = self.active_cluster(r.cluster.as_deref()).await?;
            if c.cluster_name.as_deref() == Some(crate::FARGATE_POOL) {
                return Err(EcsError::invalid(
                    "The cluster ~fargate is Berth's pool of Fargate capacity.",
                ));
            }
            c.capacity_providers = Some(providers.clone());
            c.default_capacity_provider_strategy = Some(strategy.clone());
            if !strategy.is_empty() {
                strategy_of(&c, &strategy)?;
            }
            if self
                .commit(berth_store::Txn::new().replace(&kv, crate::encode(&c)?))
                .await?
            {
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
        for c in clusters {
            if out.len() >= count || c == crate::FARGATE_POOL {
                continue;
            }
            let records = self
                .store
                .range(&keys::tasks_of(&c), None, None)
                .await
                .map_err(crate::store_error)?;
            for kv in records {
                if out.len() >= count {
                    break;
                }
                let t: ecs::Task = crate::decode(&kv)?;
                let arn = t.task_arn.clone().unwrap_or_default();
                let spot = t.capacity_provider_name.as_deref() == Some("FARGATE_SPOT")
                    && t.last_status.as_deref() == Some("RUNNING")
                    && t.desired_status.as_deref() == Some("RUNNING");
                if !spot
                    || task.is_some_and(|want| want != arn && !arn.ends_with(&format!("/{want}")))
                {
                    continue;
                }
                let id = arn.rsplit('/').next().unwrap_or_default().to_string();
                if self
                    .stop_task_as(&c, &id, SPOT_STOP_CODE, SPOT_STOP_REASON)
                    .await?
                    .is_some()
                {
                    tracing::info!(task = arn, "Spot capacity reclaimed: task interrupted");
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
            let records = self
                .store
                .range(&keys::tasks_of(&c), None, None)
                .await
                .map_err(crate::store_error)?;
            for kv in records {
                let t: ecs::Task = crate::decode(&kv)?;
                let spot = t.capacity_provider_name.as_deref() == Some("FARGATE_SPOT")
                    && t.last_status.as_deref() == Some("RUNNING")
                    && t.desired_status.as_deref() == Some("RUNNING");
                if spot && rand::random::<f64>() < p {
                    let arn = t.task_arn.unwrap_or_default();
                    n += self.interrupt_spot(Some(&c), Some(&arn), 1).await?.len();
                }
            }
        }
        Ok(n)
    }
}
