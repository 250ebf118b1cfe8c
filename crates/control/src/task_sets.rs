//! Task sets, for services with the `EXTERNAL` and `CODE_DEPLOY` deployment controllers: a
//! blue/green tool creates task sets, each with its own revision, network and load balancers,
//! scales each as a share of the service's desired count, moves traffic between their target
//! groups (ELB's listeners: a forward or weighted forward), picks the PRIMARY one and deletes
//! old ones. ECS — here, the service pass — keeps each set's `computedDesiredCount` tasks
//! running (ceil(desiredCount × scale%)), registered in its set's target groups and
//! replaced when they stop or fail their (container or target) health checks, by the same
//! pure reconciler REPLICA services use, with the set as its one deployment. A DRAINING set
//! (deleted) is scaled to 0: its tasks are deregistered, drained and stopped, and the set
//! leaves the service once they have.
//!
//! A `CODE_DEPLOY` service starts with one PRIMARY task set made from its own task
//! definition, network and load balancers. On AWS, CodeDeploy is the tool that then drives
//! the task sets; Berth has no CodeDeploy, so the task-set operations are open to the tool a
//! user runs, for both controllers.
//!
//! Task sets live in their service's record (`taskSets`), so every change to one is guarded by
//! the service's revision, and DescribeServices shows them as ECS does.

use crate::apply::Meta;
use crate::state::Pool;
use crate::{encode, keys, now_epoch, Control, CAS_ATTEMPTS};
use berth_api::ecs::{self, Service, TaskSet};
use berth_api::{EcsError, ErrorKind};
use berth_model::arn::{Arn, ResourceKind};
use berth_reconcile::{deploy, service as rs};
use berth_store::{KeyValue, Txn};

/// ECS's quota of task sets per service.
const MAX_TASK_SETS: usize = 5;

/// The service's deployment controller (`ECS` when none was given).
pub(crate) fn controller(s: &Service) -> &str {
    s.deployment_controller
        .as_ref()
        .and_then(|c| c.r#type.as_deref())
        .unwrap_or("ECS")
}

/// Whether the service's tasks belong to task sets (EXTERNAL and CODE_DEPLOY) rather than to
/// deployments ECS runs.
pub(crate) fn uses_task_sets(s: &Service) -> bool {
    matches!(controller(s), "EXTERNAL" | "CODE_DEPLOY")
}

fn not_of_task_sets() -> EcsError {
    EcsError::invalid(
        "Task sets are only supported for services that use the EXTERNAL or CODE_DEPLOY deployment controller.",
    )
}

/// What a new task set runs, checked.
pub(crate) struct NewSet {
    pub task_definition: String,
    pub launch_type: String,
    pub platform_version: Option<String>,
    pub network: Option<ecs::NetworkConfiguration>,
    pub load_balancers: Vec<ecs::LoadBalancer>,
    pub scale: ecs::Scale,
    pub external_id: Option<String>,
    pub status: &'static str,
}

/// A new task set of service `s` in `cluster`, made from `n`, as ECS shows it at creation.
pub(crate) fn new_task_set(
    region: &str,
    account: &str,
    cluster: &str,
    s: &Service,
    n: NewSet,
    now: f64,
) -> TaskSet {
    let id = crate::services::deployment_id();
    let name = s.service_name.as_deref().unwrap_or_default();
    let fargate = n.launch_type == "FARGATE";
    TaskSet {
        task_set_arn: Some(
            Arn::new(
                region,
                account,
                ResourceKind::TaskSet,
                format!("{cluster}/{name}/{id}"),
            )
            .to_string(),
        ),
        id: Some(id),
        service_arn: s.service_arn.clone(),
        cluster_arn: s.cluster_arn.clone(),
        external_id: n.external_id,
        status: Some(n.status.into()),
        task_definition: Some(n.task_definition),
        computed_desired_count: Some(computed(
            s.desired_count.unwrap_or(0),
            n.scale.value.unwrap_or(100.0),
        )),
        pending_count: Some(0),
        running_count: Some(0),
        created_at: Some(now),
        updated_at: Some(now),
        launch_type: Some(n.launch_type),
        platform_version: fargate.then(|| n.platform_version.unwrap_or_else(|| "LATEST".into())),
        platform_family: fargate.then(|| "Linux".into()),
        network_configuration: n.network,
        load_balancers: Some(n.load_balancers),
        service_registries: Some(Vec::new()),
        scale: Some(n.scale),
        stability_status: Some("STABILIZING".into()),
        stability_status_at: Some(now),
        ..Default::default()
    }
}

fn not_found(ident: &str) -> EcsError {
    EcsError::new(
        ErrorKind::TaskSetNotFound,
        format!("The specified task set does not exist: '{ident}'"),
    )
}

/// `ceil(desired × scale / 100)`, ECS's computedDesiredCount.
pub(crate) fn computed(desired: i32, scale: f64) -> i32 {
    ((f64::from(desired.max(0)) * scale / 100.0) - 1e-9)
        .ceil()
        .max(0.0) as i32
}

fn check_scale(scale: Option<&ecs::Scale>) -> Result<ecs::Scale, EcsError> {
    let s = scale.cloned().unwrap_or(ecs::Scale {
        value: Some(100.0),
        unit: Some("PERCENT".into()),
    });
    let unit = s.unit.clone().unwrap_or_else(|| "PERCENT".into());
    berth_api::error::check_enum("scale.unit", &unit, ecs::enums::SCALE_UNIT)?;
    let value = s.value.unwrap_or(100.0);
    if !(0.0..=100.0).contains(&value) {
        return Err(EcsError::invalid(format!(
            "scale.value {value} must be between 0 and 100"
        )));
    }
    Ok(ecs::Scale {
        value: Some(value),
        unit: Some(unit),
    })
}

/// The id part a task set is named by: its id, or the id at the end of its ARN.
fn set_id(ident: &str) -> &str {
    match ident.find("/ecs-svc/") {
        Some(i) if ident.starts_with("arn:") => &ident[i + 1..],
        _ => ident,
    }
}

impl Control {
    /// The service (ACTIVE, of task sets) a task-set call names, with its record.
    async fn task_set_service(
        &self,
        cluster: Option<&str>,
        service: Option<&str>,
    ) -> Result<(String, Service, KeyValue), EcsError> {
        let (cluster_rec, _) = self.active_cluster(cluster).await?;
        let cluster = cluster_rec.cluster_name.unwrap_or_default();
        let ident = service.unwrap_or_default();
        let (s, kv) = self.service_record(&cluster, ident).await?;
        if s.status.as_deref() != Some("ACTIVE") {
            return Err(EcsError::new(
                ErrorKind::ServiceNotActive,
                "Service was not ACTIVE.",
            ));
        }
        if !uses_task_sets(&s) {
            return Err(not_of_task_sets());
        }
        Ok((cluster, s, kv))
    }

    async fn commit_service(
        &self,
        cluster: &str,
        kv: &KeyValue,
        s: &Service,
    ) -> Result<bool, EcsError> {
        let txn = Txn::new().replace(kv, encode(s)?);
        let txn = self.with_history(txn, cluster, s, now_epoch()).await?;
        self.commit(txn).await
    }

    pub async fn create_task_set(
        &self,
        r: ecs::CreateTaskSetRequest,
    ) -> Result<ecs::CreateTaskSetResponse, EcsError> {
        for (given, member) in [
            (
                r.service_registries.as_ref().is_some_and(|l| !l.is_empty()),
                "serviceRegistries",
            ),
            (
                r.capacity_provider_strategy
                    .as_ref()
                    .is_some_and(|l| !l.is_empty()),
                "capacityProviderStrategy",
            ),
        ] {
            if given {
                return Err(EcsError::new(
                    ErrorKind::UnsupportedFeature,
                    format!("a task set's {member} is not supported by Berth yet"),
                ));
            }
        }
        let scale = check_scale(r.scale.as_ref())?;
        let launch_type = r.launch_type.clone().unwrap_or_else(|| "EC2".into());
        berth_api::error::check_enum("launchType", &launch_type, &["EC2", "FARGATE", "EXTERNAL"])?;
        crate::tasks::check_platform(&launch_type, r.platform_version.as_deref())?;
        let td = self
            .runnable_definition(r.task_definition.as_deref(), &launch_type, false)
            .await?;
        self.check_network(&td, r.network_configuration.as_ref())
            .await?;
        let load_balancers = r.load_balancers.clone().unwrap_or_default();
        self.check_load_balancers(&load_balancers, &td).await?;
        let tags = r.tags.clone().unwrap_or_default();
        crate::check_tags(&tags)?;
        for _ in 0..CAS_ATTEMPTS {
            let (cluster, mut s, kv) = self
                .task_set_service(r.cluster.as_deref(), r.service.as_deref())
                .await?;
            let name = s.service_name.clone().unwrap_or_default();
            // The same clientToken is the same request: its task set again.
            let token_key = r
                .client_token
                .as_deref()
                .map(|t| format!("{}{cluster}/{name}/{t}", keys::TASK_SET_TOKENS));
            if let Some(k) = &token_key {
                if let Some((id, _)) = self.get_record::<String>(k).await? {
                    if let Some(t) = s
                        .task_sets
                        .as_deref()
                        .unwrap_or_default()
                        .iter()
                        .find(|t| t.id.as_deref() == Some(id.as_str()))
                    {
                        let mut shown = t.clone();
                        shown.tags = Some(
                            self.tags_of(t.task_set_arn.as_deref().unwrap_or_default())
                                .await?,
                        );
                        return Ok(ecs::CreateTaskSetResponse {
                            task_set: Some(shown),
                        });
                    }
                }
            }
            if s.task_sets.as_deref().unwrap_or_default().len() >= MAX_TASK_SETS {
                return Err(EcsError::new(
                    ErrorKind::Client,
                    format!("A service has at most {MAX_TASK_SETS} task sets."),
                ));
            }
            let now = now_epoch();
            let t = new_task_set(
                &self.config.region,
                &self.config.account_id,
                &cluster,
                &s,
                NewSet {
                    task_definition: td.task_definition_arn.clone().unwrap_or_default(),
                    launch_type: launch_type.clone(),
                    platform_version: r.platform_version.clone(),
                    network: r.network_configuration.clone(),
                    load_balancers: load_balancers.clone(),
                    scale: scale.clone(),
                    external_id: r.external_id.clone(),
                    status: "ACTIVE",
                },
                now,
            );
            let id = t.id.clone().unwrap_or_default();
            let arn = t.task_set_arn.clone().unwrap_or_default();
            let sets = s.task_sets.get_or_insert_with(Vec::new);
            sets.push(t.clone());
            let mut txn = Txn::new().replace(&kv, encode(&s)?);
            txn = self.with_history(txn, &cluster, &s, now).await?;
            if !tags.is_empty() {
                txn = txn.put(keys::tags(&arn), encode(&tags)?);
            }
            if let Some(k) = &token_key {
                txn = txn.put(k.clone(), encode(&id)?);
            }
            if self.commit(txn).await? {
                tracing::info!(cluster, service = name, task_set = id, "task set created");
                let mut shown = t;
                if !tags.is_empty() {
                    shown.tags = Some(tags);
                }
                return Ok(ecs::CreateTaskSetResponse {
                    task_set: Some(shown),
                });
            }
        }
        Err(crate::conflict_exhausted("creating the task set"))
    }

    pub async fn describe_task_sets(
        &self,
        r: ecs::DescribeTaskSetsRequest,
    ) -> Result<ecs::DescribeTaskSetsResponse, EcsError> {
        let (cluster_rec, _) = self.active_cluster(r.cluster.as_deref()).await?;
        let cluster = cluster_rec.cluster_name.unwrap_or_default();
        let (s, _) = self
            .service_record(&cluster, r.service.as_deref().unwrap_or_default())
            .await?;
        if !uses_task_sets(&s) {
            return Err(not_of_task_sets());
        }
        let include_tags = r
            .include
            .as_deref()
            .unwrap_or_default()
            .iter()
            .any(|i| i == "TAGS");
        let all = s.task_sets.clone().unwrap_or_default();
        let mut sets = Vec::new();
        let mut failures = Vec::new();
        match r.task_sets.filter(|l| !l.is_empty()) {
            None => sets = all,
            Some(idents) => {
                for ident in idents {
                    match all.iter().find(|t| t.id.as_deref() == Some(set_id(&ident))) {
                        Some(t) => sets.push(t.clone()),
                        None => failures.push(ecs::Failure {
                            arn: Some(ident),
                            reason: Some("MISSING".into()),
                            detail: None,
                        }),
                    }
                }
            }
        }
        if include_tags {
            for t in &mut sets {
                t.tags = Some(
                    self.tags_of(t.task_set_arn.as_deref().unwrap_or_default())
                        .await?,
                );
            }
        }
        Ok(ecs::DescribeTaskSetsResponse {
            task_sets: Some(sets),
            failures: Some(failures),
        })
    }

    /// Applies `change` to one task set of a service of task sets (guarded, retried).
    async fn change_task_set(
        &self,
        cluster: Option<&str>,
        service: Option<&str>,
        ident: &str,
        change: impl Fn(&mut Service, usize) -> Result<(), EcsError>,
    ) -> Result<TaskSet, EcsError> {
        for _ in 0..CAS_ATTEMPTS {
            let (cluster, mut s, kv) = self.task_set_service(cluster, service).await?;
            let i = s
                .task_sets
                .as_deref()
                .unwrap_or_default()
                .iter()
                .position(|t| t.id.as_deref() == Some(set_id(ident)))
                .ok_or_else(|| not_found(ident))?;
            change(&mut s, i)?;
            let shown = s.task_sets.as_deref().unwrap_or_default()[i].clone();
            if self.commit_service(&cluster, &kv, &s).await? {
                return Ok(shown);
            }
        }
        Err(crate::conflict_exhausted("changing the task set"))
    }

    pub async fn update_task_set(
        &self,
        r: ecs::UpdateTaskSetRequest,
    ) -> Result<ecs::UpdateTaskSetResponse, EcsError> {
        let scale = check_scale(r.scale.as_ref())?;
        let ident = r.task_set.clone().unwrap_or_default();
        let t = self
            .change_task_set(
                r.cluster.as_deref(),
                r.service.as_deref(),
                &ident,
                |s, i| {
                    let desired = s.desired_count.unwrap_or(0);
                    let t = &mut s.task_sets.get_or_insert_with(Vec::new)[i];
                    if t.status.as_deref() == Some("DRAINING") {
                        return Err(EcsError::invalid("The task set is being deleted."));
                    }
                    t.scale = Some(scale.clone());
                    t.computed_desired_count =
                        Some(computed(desired, scale.value.unwrap_or(100.0)));
                    t.updated_at = Some(now_epoch());
                    Ok(())
                },
            )
            .await?;
        Ok(ecs::UpdateTaskSetResponse { task_set: Some(t) })
    }

    pub async fn update_service_primary_task_set(
        &self,
        r: ecs::UpdateServicePrimaryTaskSetRequest,
    ) -> Result<ecs::UpdateServicePrimaryTaskSetResponse, EcsError> {
        let ident = r.primary_task_set.clone().unwrap_or_default();
        let t = self
            .change_task_set(
                r.cluster.as_deref(),
                r.service.as_deref(),
                &ident,
                |s, i| {
                    let now = now_epoch();
                    let sets = s.task_sets.get_or_insert_with(Vec::new);
                    if sets[i].status.as_deref() == Some("DRAINING") {
                        return Err(EcsError::invalid("The task set is being deleted."));
                    }
                    for (j, t) in sets.iter_mut().enumerate() {
                        let status = match (j == i, t.status.as_deref()) {
                            (true, _) => "PRIMARY",
                            (false, Some("PRIMARY")) => "ACTIVE",
                            (false, other) => other.unwrap_or("ACTIVE"),
                        };
                        if t.status.as_deref() != Some(status) {
                            t.status = Some(status.into());
                            t.updated_at = Some(now);
                        }
                    }
                    // The service shows what its primary task set runs.
                    let primary = sets[i].clone();
                    s.task_definition = primary.task_definition.clone();
                    s.launch_type = primary.launch_type.clone();
                    s.network_configuration = primary.network_configuration.clone();
                    s.platform_version = primary.platform_version.clone();
                    s.load_balancers = primary.load_balancers.clone();
                    Ok(())
                },
            )
            .await?;
        Ok(ecs::UpdateServicePrimaryTaskSetResponse { task_set: Some(t) })
    }

    pub async fn delete_task_set(
        &self,
        r: ecs::DeleteTaskSetRequest,
    ) -> Result<ecs::DeleteTaskSetResponse, EcsError> {
        let ident = r.task_set.clone().unwrap_or_default();
        let force = r.force.unwrap_or(false);
        let t = self
            .change_task_set(
                r.cluster.as_deref(),
                r.service.as_deref(),
                &ident,
                |s, i| {
                    let t = &mut s.task_sets.get_or_insert_with(Vec::new)[i];
                    if t.status.as_deref() == Some("DRAINING") {
                        return Ok(());
                    }
                    if t.scale.as_ref().and_then(|x| x.value).unwrap_or(100.0) > 0.0 && !force {
                        return Err(EcsError::invalid(
                            "The task set cannot be deleted while it is scaled above 0; scale it to 0 first, or use force.",
                        ));
                    }
                    t.status = Some("DRAINING".into());
                    t.computed_desired_count = Some(0);
                    t.updated_at = Some(now_epoch());
                    Ok(())
                },
            )
            .await?;
        Ok(ecs::DeleteTaskSetResponse { task_set: Some(t) })
    }

    /// The service pass of a service of task sets: each task set's tasks reconciled to its
    /// computed count, behind its load balancers; DRAINING sets (and every set of a DRAINING
    /// service) to none, their tasks drained first, leaving once their tasks have stopped;
    /// the counts written back. Returns whether it changed.
    pub(crate) async fn reconcile_task_sets(
        &self,
        cluster: &str,
        mut s: Service,
        kv: KeyValue,
    ) -> Result<bool, EcsError> {
        let before = s.clone();
        let now = now_epoch();
        let draining_service = s.status.as_deref() == Some("DRAINING");
        let desired = s.desired_count.unwrap_or(0);
        let grace = f64::from(s.health_check_grace_period_seconds.unwrap_or(0));
        let name = s.service_name.clone().unwrap_or_default();
        let group = format!("service:{name}");
        let mut all = self.service_tasks(cluster, &s).await?;
        // Behind a load balancer, a task is healthy only once its targets are, and one that
        // drains is already stopping.
        let lb = self.service_lb(cluster, &s, &all).await?;
        if let Some(lb) = &lb {
            crate::services::fold_lb(&mut all, lb);
        }
        let mut acted = false;
        let mut events = Vec::new();
        let mut left = Vec::new();
        let strategies = crate::services::replica_strategies(&s);
        let propagate = self.service_propagate(&s).await;
        for t in s.task_sets.get_or_insert_with(Vec::new).iter_mut() {
            let id = t.id.clone().unwrap_or_default();
            let drains = draining_service || t.status.as_deref() == Some("DRAINING");
            let want = if drains {
                0
            } else {
                computed(
                    desired,
                    t.scale.as_ref().and_then(|x| x.value).unwrap_or(100.0),
                )
            };
            let mine: Vec<rs::Task> = all
                .iter()
                .filter(|x| x.deployment == id)
                .map(|x| x.view(now))
                .collect();
            let actions = rs::reconcile(
                &rs::Service {
                    desired: want as u32,
                    minimum_healthy_percent: 100,
                    maximum_percent: 200,
                    health_check_grace_period: grace,
                    deployments: vec![rs::Deployment { id: id.clone() }],
                },
                &mine,
                now,
            );
            for (arn, why) in &actions.stop {
                let lb_task = lb.as_ref().and_then(|lb| lb.get(arn));
                let reason = match (why, lb_task.and_then(|l| l.unhealthy_in.as_deref())) {
                    (rs::StopWhy::Unhealthy, Some(group)) => {
                        crate::targets::elb_unhealthy_reason(group)
                    }
                    (rs::StopWhy::Unhealthy, None) => {
                        "Task failed container health checks".to_string()
                    }
                    (rs::StopWhy::ScaleDown | rs::StopWhy::Replaced, _) => {
                        format!("Scaling activity initiated by (deployment {id})")
                    }
                };
                acted = true;
                // Behind a load balancer the task drains first; it stops once its targets
                // are gone.
                if lb_task.is_some() {
                    if let Some(groups) = self.begin_drain(cluster, arn, &reason).await? {
                        left.extend(groups);
                        continue;
                    }
                }
                self.stop_task_as(cluster, deploy::task_id(arn), deploy::STOP_CODE, &reason)
                    .await?;
            }
            // A set whose tasks keep failing restarts them with ECS's back-off.
            if actions.start > 0 && deploy::backing_off(&all, &id, now) {
                let failing =
                    format!("(service {name}) is unable to consistently start tasks successfully.");
                if !events.contains(&failing) {
                    events.push(failing);
                }
            } else if actions.start > 0 {
                acted = true;
                let placed = self
                    .start_tasks(
                        Some(cluster),
                        t.task_definition.as_deref(),
                        Pool::LaunchType(t.launch_type.clone().unwrap_or_else(|| "EC2".into())),
                        actions.start as usize,
                        Meta {
                            allow_inactive: true,
                            constraints: s.placement_constraints.clone().unwrap_or_default(),
                            strategies: strategies.clone(),
                            started_by: Some(id.clone()),
                            group: Some(group.clone()),
                            propagate: propagate.clone(),
                            managed_tags: s.enable_ecs_managed_tags.unwrap_or(false),
                            service: s.service_name.clone(),
                            network: t.network_configuration.clone(),
                            ..Default::default()
                        },
                    )
                    .await;
                let why = match placed {
                    Ok((tasks, _)) if tasks.len() >= actions.start as usize => None,
                    Ok((_, failures)) => Some(deploy::why_unplaced(failures.first().map(|f| {
                        (
                            f.reason.as_deref().unwrap_or(""),
                            f.arn.as_deref().unwrap_or(""),
                        )
                    }))),
                    Err(e) => Some(e.message),
                };
                if let Some(why) = why {
                    events.push(format!(
                        "(service {name}) was unable to place a task because no container instance met all of its requirements. Reason: {why}."
                    ));
                }
            }
            t.computed_desired_count = Some(want);
        }
        events.extend(Self::deregistered_events(&name, &left));
        let tasks = if acted {
            self.caught_up().await?;
            let mut tasks = self.service_tasks(cluster, &s).await?;
            if let Some(lb) = self.service_lb(cluster, &s, &tasks).await? {
                crate::services::fold_lb(&mut tasks, &lb);
            }
            tasks
        } else {
            all
        };
        let (mut running, mut pending) = (0, 0);
        let mut gone = Vec::new();
        let sets = s.task_sets.get_or_insert_with(Vec::new);
        sets.retain(|t| {
            let id = t.id.as_deref().unwrap_or_default();
            let live = tasks
                .iter()
                .any(|x| x.deployment == id && x.last_status.as_deref() != Some("STOPPED"));
            // A deleted set (every set of a deleted service) leaves once nothing of it runs.
            let drains = draining_service || t.status.as_deref() == Some("DRAINING");
            let keep = !drains || live;
            if !keep {
                gone.extend(t.task_set_arn.clone());
            }
            keep
        });
        for t in sets.iter_mut() {
            let id = t.id.clone().unwrap_or_default();
            let counted = |status: &str| {
                tasks
                    .iter()
                    .filter(|x| {
                        x.deployment == id
                            && x.last_status.as_deref() == Some(status)
                            && x.desired_status.as_deref() == Some("RUNNING")
                    })
                    .count() as i32
            };
            let (r, p) = (counted("RUNNING"), counted("PENDING"));
            running += r;
            pending += p;
            let stopping = tasks.iter().any(|x| {
                x.deployment == id
                    && x.desired_status.as_deref() == Some("STOPPED")
                    && x.last_status.as_deref() != Some("STOPPED")
            });
            // Steady: the count is met by healthy tasks on ACTIVE instances, nothing moving.
            let sound = tasks
                .iter()
                .filter(|x| x.deployment == id && x.last_status.as_deref() == Some("RUNNING"))
                .all(|x| x.healthy && !x.unhealthy && !x.displaced);
            let steady = r == t.computed_desired_count.unwrap_or(0) && p == 0 && !stopping && sound;
            let stability = if steady {
                "STEADY_STATE"
            } else {
                "STABILIZING"
            };
            if t.running_count != Some(r)
                || t.pending_count != Some(p)
                || t.stability_status.as_deref() != Some(stability)
            {
                t.running_count = Some(r);
                t.pending_count = Some(p);
                if t.stability_status.as_deref() != Some(stability) {
                    t.stability_status = Some(stability.into());
                    t.stability_status_at = Some(now);
                }
                t.updated_at = Some(now);
            }
        }
        s.running_count = Some(running);
        s.pending_count = Some(pending);
        if lb.is_some() {
            // Registers the sets' RUNNING tasks, and stops those whose draining is over.
            let lb_events = self.sync_targets(cluster, &s, &tasks).await?;
            events.extend(lb_events);
        }
        let sets = s.task_sets.get_or_insert_with(Vec::new);
        if draining_service && sets.is_empty() {
            s.status = Some("INACTIVE".into());
        }
        crate::services::push_service_events(&mut s, events, now);
        if s == before {
            return Ok(false);
        }
        // A set that left takes its tags with it.
        let mut txn = Txn::new().replace(&kv, encode(&s)?);
        for arn in gone {
            txn = txn.delete(keys::tags(&arn));
        }
        let txn = self.with_history(txn, cluster, &s, now).await?;
        self.commit(txn).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_computed_count_rounds_up() {
        assert_eq!(computed(10, 50.0), 5);
        assert_eq!(computed(3, 50.0), 2, "1.5 rounds up");
        assert_eq!(computed(5, 100.0), 5);
        assert_eq!(computed(5, 0.0), 0);
        assert_eq!(computed(0, 100.0), 0);
        assert_eq!(
            computed(6, 20.0),
            2,
            "1.2 rounds up to 2, as ECS's example says"
        );
    }

    #[test]
    fn task_sets_are_named_by_id_or_arn() {
        assert_eq!(set_id("ecs-svc/123"), "ecs-svc/123");
        assert_eq!(
            set_id("arn:aws:ecs:us-east-1:000000000000:task-set/c/web/ecs-svc/123"),
            "ecs-svc/123"
        );
    }
}
