//! Services: CreateService, UpdateService, DeleteService, DescribeServices, ListServices, and
//! the loop that reconciles every service against its tasks.
//!
//! A service record is ECS's `Service` with its deployments (PRIMARY first) and events (newest
//! first). Its tasks carry `group` `service:NAME` and `startedBy` the deployment id, so the
//! reconciler's inputs are all in the store: a restarted server carries on where it was.
//! [`berth_reconcile::service::reconcile`] decides; [`Control::reconcile_services`] reads,
//! decides, places and stops, and records counts, rollout state and events.

use crate::apply::Meta;
use crate::paging::{decode_token, max_results, page};
use crate::state::Pool;
use crate::{
    conflict_exhausted, decode, encode, keys, now_epoch, store_error, Control, CAS_ATTEMPTS,
};
use berth_api::ecs::{self, Deployment, Service, ServiceEvent};
use berth_api::error::check_enum;
use berth_api::{EcsError, ErrorKind};
use berth_model::arn::{Arn, ResourceKind};
use berth_reconcile::deploy;
use berth_store::{KeyValue, Txn};
use std::collections::HashMap;

/// The first member CreateService and UpdateService both take that is given a value Berth
/// cannot honour yet (refused by name, never dropped).
fn unsupported_member<G, V, L>(
    gateway_connectors: &Option<Vec<G>>,
    enable_execute_command: Option<bool>,
    service_connect: &Option<ecs::ServiceConnectConfiguration>,
    volume_configurations: &Option<Vec<V>>,
    vpc_lattice: &Option<Vec<L>>,
    az_rebalancing: Option<&str>,
    deployment: &Option<ecs::DeploymentConfiguration>,
) -> Option<&'static str> {
    let some = |given: bool, member: &'static str| given.then_some(member);
    some(
        gateway_connectors.as_ref().is_some_and(|g| !g.is_empty()),
        "gatewayConnectors",
    )
    .or(some(
        enable_execute_command == Some(true),
        "enableExecuteCommand",
    ))
    .or(some(
        service_connect
            .as_ref()
            .is_some_and(|c| c.enabled == Some(true)),
        "serviceConnectConfiguration",
    ))
    .or(some(
        volume_configurations
            .as_ref()
            .is_some_and(|v| !v.is_empty()),
        "volumeConfigurations",
    ))
    .or(some(
        vpc_lattice.as_ref().is_some_and(|v| !v.is_empty()),
        "vpcLatticeConfigurations",
    ))
    .or(some(
        az_rebalancing == Some("ENABLED"),
        "availabilityZoneRebalancing",
    ))
    .or(some(
        deployment
            .as_ref()
            .is_some_and(|d| d.early_success_criteria.is_some()),
        "deploymentConfiguration.earlySuccessCriteria",
    ))
}

/// How many services one pass reconciles at once.
const SIDE_BY_SIDE: usize = 16;

/// ECS's words for a service it cannot find.
fn not_found() -> EcsError {
    EcsError::new(ErrorKind::ServiceNotFound, "Service not found.")
}

fn check_name(name: &str) -> Result<(), EcsError> {
    let ok = !name.is_empty()
        && name.len() <= 255
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(EcsError::invalid(format!(
            "serviceName '{name}' must be 1-255 letters, numbers, hyphens or underscores, starting with a letter or number"
        )))
    }
}

pub(crate) fn deployment_id() -> String {
    let n: u64 = rand::random::<u64>() % 10_000_000_000_000_000_000;
    format!("ecs-svc/{n:019}")
}

/// Minimum/maximum percent with ECS's defaults, checked.
fn percents(c: Option<&ecs::DeploymentConfiguration>) -> Result<(i32, i32), EcsError> {
    let min = c.and_then(|c| c.minimum_healthy_percent).unwrap_or(100);
    let max = c.and_then(|c| c.maximum_percent).unwrap_or(200);
    if !(0..=100).contains(&min) {
        return Err(EcsError::invalid(format!(
            "minimumHealthyPercent {min} must be between 0 and 100"
        )));
    }
    if max < 100 {
        return Err(EcsError::invalid(format!(
            "maximumPercent {max} must be at least 100 for the REPLICA scheduling strategy"
        )));
    }
    if max <= min {
        return Err(EcsError::invalid(format!(
            "maximumPercent {max} must be greater than minimumHealthyPercent {min}, or deployments cannot progress"
        )));
    }
    Ok((min, max))
}

/// What the pure reconciler reads of a service record.
fn service_state(s: &Service) -> deploy::ServiceState {
    let config = s.deployment_configuration.clone().unwrap_or_default();
    let breaker = config
        .deployment_circuit_breaker
        .clone()
        .unwrap_or_default();
    let threshold = breaker.threshold_configuration.as_ref();
    deploy::ServiceState {
        name: s.service_name.clone().unwrap_or_default(),
        status: deploy::ServiceStatus::parse(s.status.as_deref()),
        scheduling: deploy::SchedulingStrategy::parse(s.scheduling_strategy.as_deref()),
        desired_count: s.desired_count.unwrap_or(0),
        minimum_healthy_percent: config.minimum_healthy_percent,
        maximum_percent: config.maximum_percent,
        health_check_grace_period_seconds: s.health_check_grace_period_seconds,
        circuit_breaker: deploy::CircuitBreaker {
            enable: breaker.enable.unwrap_or(false),
            rollback: breaker.rollback.unwrap_or(false),
            threshold_kind: threshold.and_then(|t| t.r#type.clone()),
            threshold_value: threshold.and_then(|t| t.value).map(|v| v.max(0) as u32),
        },
        launch_type: s.launch_type.clone(),
        has_placement_strategies: s.placement_strategy.as_ref().is_some_and(|p| !p.is_empty()),
    }
}

fn deployment_state(d: &Deployment) -> deploy::DeploymentState {
    deploy::DeploymentState {
        id: d.id.clone().unwrap_or_default(),
        status: d
            .status
            .as_deref()
            .and_then(deploy::DeploymentStatus::parse),
        task_definition: d.task_definition.clone(),
        desired_count: d.desired_count,
        pending_count: d.pending_count,
        running_count: d.running_count,
        failed_tasks: d.failed_tasks,
        created_at: d.created_at,
        updated_at: d.updated_at,
        launch_type: d.launch_type.clone(),
        rollout_state: d
            .rollout_state
            .as_deref()
            .and_then(deploy::RolloutState::parse),
        rollout_state_reason: d.rollout_state_reason.clone(),
    }
}

/// A deployment's members the reconciler keeps, written over the wire shape.
fn write_deployment(w: &mut Deployment, n: deploy::DeploymentState) {
    w.id = Some(n.id);
    w.status = n.status.map(|x| x.as_str().to_string());
    w.task_definition = n.task_definition;
    w.desired_count = n.desired_count;
    w.pending_count = n.pending_count;
    w.running_count = n.running_count;
    w.failed_tasks = n.failed_tasks;
    w.created_at = n.created_at;
    w.updated_at = n.updated_at;
    w.launch_type = n.launch_type;
    w.rollout_state = n.rollout_state.map(|x| x.as_str().to_string());
    w.rollout_state_reason = n.rollout_state_reason;
}

/// Writes what the reconciler decided and recorded onto the service record; a deployment
/// keeps the members the reconciler does not know of.
/// The reconciler's reason for a task whose container health checks failed.
const CONTAINER_UNHEALTHY: &str = "Task failed container health checks";

/// Folds what the target groups say into the tasks the reconciler sees.
/// The API's form of placement strategies the reconciler chose.
pub(crate) fn strategies_of(v: &[deploy::Strategy]) -> Vec<ecs::PlacementStrategy> {
    v.iter()
        .map(|st| ecs::PlacementStrategy {
            r#type: Some(st.kind.clone()),
            field: Some(st.field.clone()),
        })
        .collect()
}

/// The placement strategies a REPLICA service's tasks take: its own, or ECS's default spread.
pub(crate) fn replica_strategies(s: &Service) -> Vec<ecs::PlacementStrategy> {
    match s.placement_strategy.as_deref() {
        Some(own) if !own.is_empty() => own.to_vec(),
        _ => strategies_of(&deploy::default_strategies()),
    }
}

pub(crate) fn fold_lb(
    tasks: &mut [deploy::ServiceTask],
    lb: &HashMap<String, crate::targets::TaskLb>,
) {
    for t in tasks {
        let Some(l) = lb.get(&t.arn) else { continue };
        if l.draining && t.last_status.as_deref() != Some("STOPPED") {
            t.desired_status = Some("STOPPED".into());
        }
        if t.last_status.as_deref() == Some("RUNNING") {
            t.healthy = t.healthy && l.healthy;
            t.unhealthy = t.unhealthy || l.unhealthy_in.is_some();
        }
    }
}

/// Adds events to a service's, ECS's newest 100 without repeats.
pub(crate) fn push_service_events(s: &mut Service, events: Vec<String>, now: f64) {
    deploy::push_events(
        &mut s.events,
        events,
        |e: &ServiceEvent| e.message.as_deref(),
        |m| ServiceEvent {
            id: Some(uuid::Uuid::new_v4().to_string()),
            created_at: Some(now),
            message: Some(m),
        },
    );
}

fn write_back(s: &mut Service, d: &deploy::Decision, rec: deploy::Record, now: f64) {
    let old: Vec<Deployment> = s.deployments.take().unwrap_or_default();
    let deployments = rec
        .deployments
        .into_iter()
        .map(|n| {
            let mut w = old
                .iter()
                .find(|o| o.id.as_deref() == Some(n.id.as_str()))
                .cloned()
                .unwrap_or_default();
            write_deployment(&mut w, n);
            w
        })
        .collect();
    s.deployments = Some(deployments);
    if let Some(td) = &d.task_definition {
        s.task_definition = Some(td.clone());
    }
    if let Some(n) = d.desired_count {
        s.desired_count = Some(n);
    }
    s.running_count = Some(rec.running_count);
    s.pending_count = Some(rec.pending_count);
    deploy::push_events(
        &mut s.events,
        rec.events,
        |e: &ServiceEvent| e.message.as_deref(),
        |m| ServiceEvent {
            id: Some(uuid::Uuid::new_v4().to_string()),
            created_at: Some(now),
            message: Some(m),
        },
    );
    if rec.inactive {
        s.status = Some("INACTIVE".into());
    }
}

impl Control {
    fn service_arn(&self, cluster: &str, name: &str) -> String {
        self.arn(ResourceKind::Service, &format!("{cluster}/{name}"))
    }

    /// The service name an identifier (name or ARN) refers to.
    fn service_name(ident: &str) -> String {
        if Arn::looks_like_arn(ident) {
            ident.rsplit('/').next().unwrap_or(ident).to_string()
        } else {
            ident.to_string()
        }
    }

    /// A new PRIMARY deployment of `td_arn` (CreateService, UpdateService): on the service's
    /// capacity provider strategy when it has one (as ECS shows it: no launch type then),
    /// else on its launch type.
    pub(crate) fn new_deployment(
        &self,
        td_arn: &str,
        desired: i32,
        launch_type: &str,
        strategy: Option<&[ecs::CapacityProviderStrategyItem]>,
        now: f64,
    ) -> Deployment {
        let mut d = deploy::new_deployment(
            deployment_id(),
            td_arn.to_string(),
            desired,
            launch_type.to_string(),
            now,
        );
        let strategy = strategy.filter(|s| !s.is_empty());
        if strategy.is_some() {
            d.launch_type = None;
        }
        let mut w = Deployment::default();
        write_deployment(&mut w, d);
        w.capacity_provider_strategy = strategy.map(<[_]>::to_vec);
        w
    }

    pub async fn create_service(
        &self,
        caller: &crate::Caller,
        r: ecs::CreateServiceRequest,
    ) -> Result<ecs::CreateServiceResponse, EcsError> {
        let (cluster_rec, _) = self.active_cluster(r.cluster.as_deref()).await?;
        let cluster = cluster_rec.cluster_name.clone().unwrap_or_default();
        if cluster == crate::FARGATE_POOL {
            return Err(crate::apply::pool_is_not_a_cluster());
        }
        let name = r.service_name.clone().unwrap_or_default();
        check_name(&name)?;
        let strategy = r
            .scheduling_strategy
            .clone()
            .unwrap_or_else(|| "REPLICA".into());
        check_enum(
            "schedulingStrategy",
            &strategy,
            ecs::enums::SCHEDULING_STRATEGY,
        )?;
        let daemon = strategy == "DAEMON";
        if daemon && r.desired_count.is_some() {
            return Err(EcsError::invalid(
                "The daemon scheduling strategy does not support a desired count for services."
                    .to_string(),
            ));
        }
        if daemon && r.placement_strategy.as_ref().is_some_and(|p| !p.is_empty()) {
            return Err(EcsError::invalid(
                "The daemon scheduling strategy does not support placement strategies.".to_string(),
            ));
        }
        let desired = match r.desired_count {
            Some(d) => d,
            None if daemon => 0,
            None => {
                return Err(EcsError::invalid(
                    "desiredCount is required for the REPLICA scheduling strategy".to_string(),
                ))
            }
        };
        if desired < 0 {
            return Err(EcsError::invalid(format!(
                "desiredCount {desired} must not be negative"
            )));
        }
        let given = r
            .capacity_provider_strategy
            .as_deref()
            .filter(|s| !s.is_empty());
        if daemon && given.is_some() {
            return Err(EcsError::invalid(
                "Specifying a capacity provider strategy is not supported with the DAEMON scheduling strategy.",
            ));
        }
        // A daemon runs on every instance: the cluster's default strategy is not for it.
        let launch_type = match (daemon, r.launch_type.as_deref()) {
            (true, None) => Some("EC2"),
            (_, l) => l,
        };
        let crate::capacity::Launch {
            strategy: providers,
            launch_type,
        } = crate::capacity::launch(
            &cluster_rec,
            given,
            launch_type,
            r.platform_version.as_deref(),
            r.placement_constraints
                .as_ref()
                .is_some_and(|c| !c.is_empty())
                || r.placement_strategy.as_ref().is_some_and(|s| !s.is_empty()),
        )?;
        if launch_type == "FARGATE" && daemon {
            return Err(EcsError::invalid(
                "The DAEMON scheduling strategy does not support the FARGATE launch type.",
            ));
        }
        // The strategy the service keeps: the one given, or the cluster's default it took.
        let provider_items = providers.as_ref().map(|_| {
            given
                .map(<[_]>::to_vec)
                .or_else(|| cluster_rec.default_capacity_provider_strategy.clone())
                .unwrap_or_default()
        });
        if let Some(p) = r.propagate_tags.as_deref() {
            check_enum("propagateTags", p, ecs::enums::PROPAGATE_TAGS)?;
        }
        if let Some(member) = unsupported_member(
            &r.gateway_connectors,
            r.enable_execute_command,
            &r.service_connect_configuration,
            &r.volume_configurations,
            &r.vpc_lattice_configurations,
            r.availability_zone_rebalancing.as_deref(),
            &r.deployment_configuration,
        ) {
            return Err(EcsError::invalid(format!(
                "{member} is not supported by Berth yet"
            )));
        }
        let controller = r
            .deployment_controller
            .as_ref()
            .and_then(|c| c.r#type.clone())
            .unwrap_or_else(|| "ECS".into());
        check_enum(
            "deploymentController.type",
            &controller,
            ecs::enums::DEPLOYMENT_CONTROLLER_TYPE,
        )?;
        // EXTERNAL: task sets carry the revision, network and load balancers. CODE_DEPLOY:
        // the service's own make its first (PRIMARY) task set.
        let external = controller == "EXTERNAL";
        let code_deploy = controller == "CODE_DEPLOY";
        if (external || code_deploy) && daemon {
            return Err(EcsError::invalid(format!(
                "The {controller} deployment controller does not support the DAEMON scheduling strategy."
            )));
        }
        if external {
            let given = [
                (r.task_definition.is_some(), "taskDefinition"),
                (r.network_configuration.is_some(), "networkConfiguration"),
                (
                    r.load_balancers.as_ref().is_some_and(|l| !l.is_empty()),
                    "loadBalancers",
                ),
            ]
            .into_iter()
            .find_map(|(given, member)| given.then_some(member));
            if let Some(member) = given {
                return Err(EcsError::invalid(format!(
                    "{member} belongs to the task sets of a service that uses the EXTERNAL deployment controller: give it to CreateTaskSet"
                )));
            }
        }
        if code_deploy && r.task_definition.is_none() {
            return Err(EcsError::invalid(
                "taskDefinition is required for a service that uses the CODE_DEPLOY deployment controller",
            ));
        }
        if code_deploy && providers.is_some() {
            return Err(EcsError::new(
                ErrorKind::UnsupportedFeature,
                "a capacity provider strategy on a CODE_DEPLOY service's task sets is not supported by Berth yet: give a launchType",
            ));
        }
        let mut deployment_configuration = r.deployment_configuration.clone().unwrap_or_default();
        if daemon {
            // One task per instance: never two on one (maximumPercent 100).
            let min = deployment_configuration
                .minimum_healthy_percent
                .unwrap_or(0);
            if !(0..=100).contains(&min) {
                return Err(EcsError::invalid(format!(
                    "minimumHealthyPercent {min} must be between 0 and 100"
                )));
            }
            if deployment_configuration
                .maximum_percent
                .is_some_and(|m| m != 100)
            {
                return Err(EcsError::invalid(
                    "maximumPercent must be 100 for the DAEMON scheduling strategy".to_string(),
                ));
            }
            deployment_configuration.minimum_healthy_percent = Some(min);
            deployment_configuration.maximum_percent = Some(100);
        } else {
            let (min, max) = percents(Some(&deployment_configuration))?;
            deployment_configuration.minimum_healthy_percent = Some(min);
            deployment_configuration.maximum_percent = Some(max);
        }
        crate::placement::constraints(r.placement_constraints.as_deref().unwrap_or_default(), &[])?;
        crate::placement::strategies(r.placement_strategy.as_deref().unwrap_or_default())?;
        // An EXTERNAL service has no revision of its own: its task sets name theirs.
        let td = match external {
            true => None,
            false => Some(
                self.runnable_definition(r.task_definition.as_deref(), &launch_type, false)
                    .await?,
            ),
        };
        if let Some(td) = &td {
            self.check_load_balancers(r.load_balancers.as_deref().unwrap_or_default(), td)
                .await?;
            self.check_network(td, r.network_configuration.as_ref())
                .await?;
        }
        let tags = r.tags.clone().unwrap_or_default();
        crate::check_tags(&tags)?;
        let td_arn = td
            .as_ref()
            .and_then(|t| t.task_definition_arn.clone())
            .unwrap_or_default();
        let key = keys::service(&cluster, &name);
        let now = now_epoch();
        let arn = self.service_arn(&cluster, &name);
        for _ in 0..CAS_ATTEMPTS {
            let seen = self.get_record::<Service>(&key).await?;
            if let Some((s, _)) = &seen {
                if s.status.as_deref() != Some("INACTIVE") {
                    return Err(EcsError::invalid(
                        "Creation of service was not idempotent.".to_string(),
                    ));
                }
                // A new service of an old name starts with no deployments of the old one's.
                self.store
                    .delete_prefix(&keys::service_deployments_of(&cluster, &name))
                    .await
                    .map_err(store_error)?;
            }
            let (_, cluster_kv) = self.active_cluster(Some(&cluster)).await?;
            let mut s = Service {
                service_arn: Some(arn.clone()),
                service_name: Some(name.clone()),
                cluster_arn: cluster_rec.cluster_arn.clone(),
                status: Some("ACTIVE".into()),
                desired_count: Some(desired),
                running_count: Some(0),
                pending_count: Some(0),
                // A service on a capacity provider strategy shows the strategy, not a type.
                launch_type: providers.is_none().then(|| launch_type.clone()),
                capacity_provider_strategy: provider_items.clone(),
                task_definition: td.as_ref().map(|_| td_arn.clone()),
                deployment_configuration: Some(deployment_configuration.clone()),
                deployments: Some(match external || code_deploy {
                    true => Vec::new(),
                    false => vec![self.new_deployment(
                        &td_arn,
                        desired,
                        &launch_type,
                        provider_items.as_deref(),
                        now,
                    )],
                }),
                task_sets: (external || code_deploy).then(Vec::new),
                events: Some(Vec::new()),
                created_at: Some(now),
                created_by: Some(caller.principal_arn.clone()),
                placement_constraints: Some(r.placement_constraints.clone().unwrap_or_default()),
                placement_strategy: Some(r.placement_strategy.clone().unwrap_or_default()),
                load_balancers: Some(r.load_balancers.clone().unwrap_or_default()),
                service_registries: Some(r.service_registries.clone().unwrap_or_default()),
                network_configuration: r.network_configuration.clone(),
                health_check_grace_period_seconds: r.health_check_grace_period_seconds,
                scheduling_strategy: Some(strategy.clone()),
                deployment_controller: Some(r.deployment_controller.clone().unwrap_or(
                    ecs::DeploymentController {
                        r#type: Some("ECS".into()),
                    },
                )),
                enable_ecs_managed_tags: Some(r.enable_ecs_managed_tags.unwrap_or(false)),
                propagate_tags: r.propagate_tags.clone(),
                enable_execute_command: Some(r.enable_execute_command.unwrap_or(false)),
                platform_version: r
                    .platform_version
                    .clone()
                    .or_else(|| (launch_type == "FARGATE").then(|| "LATEST".into())),
                platform_family: (launch_type == "FARGATE").then(|| "Linux".into()),
                role_arn: r.role.clone(),
                ..Default::default()
            };
            if code_deploy {
                // Its first task set, PRIMARY, runs what the service was created with.
                let first = crate::task_sets::new_task_set(
                    &self.config.region,
                    &self.config.account_id,
                    &cluster,
                    &s,
                    crate::task_sets::NewSet {
                        task_definition: td_arn.clone(),
                        launch_type: launch_type.clone(),
                        platform_version: r.platform_version.clone(),
                        network: r.network_configuration.clone(),
                        load_balancers: r.load_balancers.clone().unwrap_or_default(),
                        scale: ecs::Scale {
                            value: Some(100.0),
                            unit: Some("PERCENT".into()),
                        },
                        external_id: None,
                        status: "PRIMARY",
                    },
                    now,
                );
                s.task_sets = Some(vec![first]);
            }
            let mut txn = Txn::new()
                .unchanged(&keys::cluster(&cluster), Some(&cluster_kv))
                .unchanged(&key, seen.as_ref().map(|(_, kv)| kv))
                .put(key.clone(), encode(&s)?);
            txn = self.with_history(txn, &cluster, &s, now).await?;
            if !tags.is_empty() {
                txn = txn.put(keys::tags(&arn), encode(&tags)?);
            }
            if self.commit(txn).await? {
                tracing::info!(cluster, service = name, desired, "service created");
                // ECS echoes the tags it was given.
                let mut shown = s;
                if !tags.is_empty() {
                    shown.tags = Some(tags);
                }
                return Ok(ecs::CreateServiceResponse {
                    service: Some(shown),
                });
            }
        }
        Err(conflict_exhausted("creating the service"))
    }

    pub(crate) async fn service_record(
        &self,
        cluster: &str,
        ident: &str,
    ) -> Result<(Service, KeyValue), EcsError> {
        let name = Self::service_name(ident);
        self.get_record::<Service>(&keys::service(cluster, &name))
            .await?
            .ok_or_else(not_found)
    }

    pub async fn update_service(
        &self,
        r: ecs::UpdateServiceRequest,
    ) -> Result<ecs::UpdateServiceResponse, EcsError> {
        let (cluster_rec, _) = self.active_cluster(r.cluster.as_deref()).await?;
        let cluster = cluster_rec.cluster_name.clone().unwrap_or_default();
        let ident = r.service.clone().unwrap_or_default();
        if let Some(d) = r.desired_count {
            if d < 0 {
                return Err(EcsError::invalid(format!(
                    "desiredCount {d} must not be negative"
                )));
            }
        }
        let (current, _) = self.service_record(&cluster, &ident).await?;
        // A service of task sets takes a new revision, network, load balancers or capacity
        // only through a new task set.
        if crate::task_sets::uses_task_sets(&current) {
            let given = [
                (
                    r.task_definition.is_some(),
                    "taskDefinition",
                    "update task definition",
                ),
                (
                    r.network_configuration.is_some(),
                    "networkConfiguration",
                    "update network parameters",
                ),
                (
                    r.load_balancers.is_some(),
                    "loadBalancers",
                    "update load balancers",
                ),
                (
                    r.capacity_provider_strategy.is_some(),
                    "capacityProviderStrategy",
                    "update capacity provider strategy",
                ),
                (
                    r.platform_version.is_some(),
                    "platformVersion",
                    "update platform version",
                ),
                (
                    r.force_new_deployment.unwrap_or(false),
                    "forceNewDeployment",
                    "force a new deployment",
                ),
            ]
            .into_iter()
            .find(|(given, _, _)| *given);
            if let Some((_, member, action)) = given {
                return Err(EcsError::invalid(
                    match crate::task_sets::controller(&current) {
                        "CODE_DEPLOY" => format!(
                            "Unable to {action} on services with a CODE_DEPLOY deployment controller. Use AWS CodeDeploy to trigger a new deployment. (Berth has no CodeDeploy: create a task set.)"
                        ),
                        _ => format!(
                            "{member} cannot be updated on a service that uses the EXTERNAL deployment controller: create a task set instead"
                        ),
                    },
                ));
            }
        }
        // A new strategy, checked against the cluster: its providers' launch type is the
        // service's from then on.
        let new_strategy = match r.capacity_provider_strategy.as_deref() {
            None => None,
            Some([]) => {
                return Err(EcsError::invalid(
                    "capacityProviderStrategy must name at least one capacity provider.",
                ))
            }
            Some(_) if current.scheduling_strategy.as_deref() == Some("DAEMON") => {
                return Err(EcsError::invalid(
                    "Specifying a capacity provider strategy is not supported with the DAEMON scheduling strategy.",
                ))
            }
            Some(items) => Some((
                items.to_vec(),
                crate::capacity::strategy_of(&cluster_rec, items)?,
            )),
        };
        let launch_type = match (&new_strategy, &current.capacity_provider_strategy) {
            (Some((_, st)), _) => st.launch_type.to_string(),
            (None, Some(items)) if !items.is_empty() => crate::capacity::Strategy::stored(items)
                .map(|s| s.launch_type)
                .unwrap_or("FARGATE")
                .to_string(),
            _ => current.launch_type.clone().unwrap_or_else(|| "EC2".into()),
        };
        let rules = |c: &Option<Vec<ecs::PlacementConstraint>>,
                     st: &Option<Vec<ecs::PlacementStrategy>>| {
            c.as_ref().is_some_and(|c| !c.is_empty()) || st.as_ref().is_some_and(|s| !s.is_empty())
        };
        let placement_rules = match (&r.placement_constraints, &r.placement_strategy) {
            (None, None) => rules(&current.placement_constraints, &current.placement_strategy),
            (c, st) => rules(
                &c.clone().or(current.placement_constraints.clone()),
                &st.clone().or(current.placement_strategy.clone()),
            ),
        };
        if launch_type == "FARGATE" && placement_rules {
            return Err(EcsError::invalid(
                "Task placement constraints and strategies are not supported with the FARGATE launch type.",
            ));
        }
        let new_td = match r.task_definition.as_deref() {
            Some(t) => Some(
                self.runnable_definition(Some(t), &launch_type, false)
                    .await?,
            ),
            None => None,
        };
        crate::tasks::check_platform(&launch_type, r.platform_version.as_deref())?;
        if let Some(c) = &r.placement_constraints {
            crate::placement::constraints(c, &[])?;
        }
        if let Some(st) = &r.placement_strategy {
            crate::placement::strategies(st)?;
        }
        if let Some(p) = r.propagate_tags.as_deref() {
            check_enum("propagateTags", p, ecs::enums::PROPAGATE_TAGS)?;
        }
        // Members UpdateService cannot apply here are refused by name, never dropped.
        let member = unsupported_member(
            &r.gateway_connectors,
            r.enable_execute_command,
            &r.service_connect_configuration,
            &r.volume_configurations,
            &r.vpc_lattice_configurations,
            r.availability_zone_rebalancing.as_deref(),
            &r.deployment_configuration,
        )
        .or_else(|| {
            let controller = r
                .deployment_controller
                .as_ref()
                .is_some_and(|c| c.r#type.as_deref().is_some_and(|t| t != "ECS"));
            [
                (controller, "deploymentController"),
                (r.monitoring.is_some(), "monitoring"),
            ]
            .into_iter()
            .find_map(|(given, member)| given.then_some(member))
        });
        if let Some(member) = member {
            return Err(EcsError::invalid(format!(
                "UpdateService's {member} is not supported by Berth yet"
            )));
        }
        let now = now_epoch();
        for _ in 0..CAS_ATTEMPTS {
            let (mut s, kv) = self.service_record(&cluster, &ident).await?;
            // Berth's Fargate has one platform version: LATEST and it are the same.
            if let Some(v) = &r.platform_version {
                s.platform_version = Some(v.clone());
            }
            if s.status.as_deref() != Some("ACTIVE") {
                return Err(EcsError::new(
                    ErrorKind::ServiceNotActive,
                    "Service was not ACTIVE.",
                ));
            }
            if let Some(d) = r.desired_count {
                s.desired_count = Some(d);
            }
            if let Some(c) = &r.deployment_configuration {
                let mut merged = s.deployment_configuration.clone().unwrap_or_default();
                if c.minimum_healthy_percent.is_some() {
                    merged.minimum_healthy_percent = c.minimum_healthy_percent;
                }
                if c.maximum_percent.is_some() {
                    merged.maximum_percent = c.maximum_percent;
                }
                if c.deployment_circuit_breaker.is_some() {
                    merged.deployment_circuit_breaker = c.deployment_circuit_breaker.clone();
                }
                percents(Some(&merged))?;
                s.deployment_configuration = Some(merged);
            }
            if let Some(c) = &r.placement_constraints {
                s.placement_constraints = Some(c.clone());
            }
            if let Some(st) = &r.placement_strategy {
                s.placement_strategy = Some(st.clone());
            }
            if let Some(g) = r.health_check_grace_period_seconds {
                s.health_check_grace_period_seconds = Some(g);
            }
            // Tasks launched from now on take these.
            if let Some(p) = &r.propagate_tags {
                s.propagate_tags = Some(p.clone());
            }
            if let Some(m) = r.enable_ecs_managed_tags {
                s.enable_ecs_managed_tags = Some(m);
            }
            // New load balancers take a new deployment: its tasks register in them.
            let mut lb_changed = false;
            if let Some(lb) = &r.load_balancers {
                let td = match &new_td {
                    Some(td) => td.clone(),
                    None => (*self
                        .task_definition_for_plan(s.task_definition.as_deref().unwrap_or_default())
                        .await?)
                        .clone(),
                };
                self.check_load_balancers(lb, &td).await?;
                lb_changed = s.load_balancers.as_ref() != Some(lb);
                s.load_balancers = Some(lb.clone());
            } else if let (Some(td), Some(lbs)) = (&new_td, &s.load_balancers) {
                self.check_load_balancers(lbs, td).await?;
            }
            if let Some(sr) = &r.service_registries {
                s.service_registries = Some(sr.clone());
            }
            let network_changed = r
                .network_configuration
                .as_ref()
                .is_some_and(|n| s.network_configuration.as_ref() != Some(n));
            if let Some(n) = &r.network_configuration {
                s.network_configuration = Some(n.clone());
            }
            // A new strategy takes a new deployment: its tasks go where it says.
            let strategy_changed = new_strategy
                .as_ref()
                .is_some_and(|(items, _)| s.capacity_provider_strategy.as_ref() != Some(items));
            if let (true, Some((items, _))) = (strategy_changed, &new_strategy) {
                s.capacity_provider_strategy = Some(items.clone());
                s.launch_type = None;
                let fargate = launch_type == "FARGATE";
                s.platform_family = fargate.then(|| "Linux".into());
                s.platform_version = match fargate {
                    true => s.platform_version.clone().or_else(|| Some("LATEST".into())),
                    false => None,
                };
            }
            let desired = s.desired_count.unwrap_or(0);
            let td_arn = new_td
                .as_ref()
                .and_then(|t| t.task_definition_arn.clone())
                .or_else(|| s.task_definition.clone())
                .unwrap_or_default();
            // The revision the service will run against its network configuration, as ECS
            // checks them (an awsvpc revision needs one, others may not have one).
            if new_td.is_some() || network_changed || strategy_changed {
                let td = match &new_td {
                    Some(td) => td.clone(),
                    None => {
                        self.runnable_definition(Some(&td_arn), &launch_type, true)
                            .await?
                    }
                };
                self.check_network(&td, s.network_configuration.as_ref())
                    .await?;
            }
            if crate::task_sets::uses_task_sets(&s) {
                // Its task sets follow the new desired count at the next pass.
                let txn = Txn::new().replace(&kv, encode(&s)?);
                let txn = self.with_history(txn, &cluster, &s, now).await?;
                if self.commit(txn).await? {
                    return Ok(ecs::UpdateServiceResponse { service: Some(s) });
                }
                continue;
            }
            let deployments = s.deployments.get_or_insert_with(Vec::new);
            let changed_td = s.task_definition.as_deref() != Some(td_arn.as_str());
            // New subnets or groups take a new deployment, as a new revision does.
            if changed_td
                || lb_changed
                || network_changed
                || strategy_changed
                || r.force_new_deployment.unwrap_or(false)
            {
                for d in deployments.iter_mut() {
                    d.status = Some("ACTIVE".into());
                    d.updated_at = Some(now);
                }
                let lt = launch_type.clone();
                let d = self.new_deployment(
                    &td_arn,
                    desired,
                    &lt,
                    s.capacity_provider_strategy.as_deref(),
                    now,
                );
                deployments.insert(0, d);
                s.task_definition = Some(td_arn);
            } else if let Some(p) = deployments.first_mut() {
                p.desired_count = Some(desired);
                p.updated_at = Some(now);
            }
            let txn = Txn::new().replace(&kv, encode(&s)?);
            let txn = self.with_history(txn, &cluster, &s, now).await?;
            if self.commit(txn).await? {
                return Ok(ecs::UpdateServiceResponse { service: Some(s) });
            }
        }
        Err(conflict_exhausted("updating the service"))
    }

    pub async fn delete_service(
        &self,
        r: ecs::DeleteServiceRequest,
    ) -> Result<ecs::DeleteServiceResponse, EcsError> {
        let (cluster_rec, _) = self.active_cluster(r.cluster.as_deref()).await?;
        let cluster = cluster_rec.cluster_name.unwrap_or_default();
        let ident = r.service.clone().unwrap_or_default();
        for _ in 0..CAS_ATTEMPTS {
            let (mut s, kv) = self.service_record(&cluster, &ident).await?;
            if s.status.as_deref() != Some("ACTIVE") {
                return Err(EcsError::new(
                    ErrorKind::ServiceNotActive,
                    "Service was not ACTIVE.",
                ));
            }
            if s.desired_count.unwrap_or(0) > 0 && !r.force.unwrap_or(false) {
                return Err(EcsError::invalid(
                    "The service cannot be stopped while it is scaled above 0.".to_string(),
                ));
            }
            s.status = Some("DRAINING".into());
            s.desired_count = Some(0);
            let txn = Txn::new().replace(&kv, encode(&s)?);
            let txn = self.with_history(txn, &cluster, &s, now_epoch()).await?;
            if self.commit(txn).await? {
                return Ok(ecs::DeleteServiceResponse { service: Some(s) });
            }
        }
        Err(conflict_exhausted("deleting the service"))
    }

    pub async fn describe_services(
        &self,
        r: ecs::DescribeServicesRequest,
    ) -> Result<ecs::DescribeServicesResponse, EcsError> {
        let (cluster_rec, _) = self.active_cluster(r.cluster.as_deref()).await?;
        let cluster = cluster_rec.cluster_name.unwrap_or_default();
        let idents = r.services.unwrap_or_default();
        if idents.is_empty() || idents.len() > 10 {
            return Err(EcsError::invalid(format!(
                "services must name between 1 and 10 services, not {}",
                idents.len()
            )));
        }
        let include = r.include.unwrap_or_default();
        for i in &include {
            check_enum("include", i, ecs::enums::SERVICE_FIELD)?;
        }
        let mut services = Vec::new();
        let mut failures = Vec::new();
        for ident in idents {
            match self.service_record(&cluster, &ident).await {
                Ok((mut s, _)) => {
                    if include.iter().any(|i| i == "TAGS") {
                        s.tags = Some(
                            self.tags_of(s.service_arn.as_deref().unwrap_or_default())
                                .await?,
                        );
                    }
                    services.push(s);
                }
                // ECS names a missing service by the ARN the name would have.
                Err(_) => failures.push(ecs::Failure {
                    arn: Some(if Arn::looks_like_arn(&ident) {
                        ident
                    } else {
                        self.service_arn(&cluster, &ident)
                    }),
                    reason: Some("MISSING".into()),
                    detail: None,
                }),
            }
        }
        Ok(ecs::DescribeServicesResponse {
            services: Some(services),
            failures: Some(failures),
        })
    }

    pub async fn list_services(
        &self,
        r: ecs::ListServicesRequest,
    ) -> Result<ecs::ListServicesResponse, EcsError> {
        let (cluster_rec, _) = self.active_cluster(r.cluster.as_deref()).await?;
        let cluster = cluster_rec.cluster_name.unwrap_or_default();
        let limit = max_results(r.max_results, 100)?;
        let token = decode_token(r.next_token.as_deref())?;
        if let Some(l) = r.launch_type.as_deref() {
            check_enum("launchType", l, ecs::enums::LAUNCH_TYPE)?;
        }
        if let Some(st) = r.scheduling_strategy.as_deref() {
            check_enum("schedulingStrategy", st, ecs::enums::SCHEDULING_STRATEGY)?;
        }
        let kvs = self
            .store
            .range(&keys::services_of(&cluster), None, None)
            .await
            .map_err(store_error)?;
        let mut items = Vec::new();
        for kv in kvs {
            let s: Service = decode(&kv)?;
            if s.status.as_deref() == Some("INACTIVE")
                || (r.launch_type.is_some() && s.launch_type != r.launch_type)
                || (r.scheduling_strategy.is_some()
                    && s.scheduling_strategy != r.scheduling_strategy)
            {
                continue;
            }
            items.push((kv.key, s.service_arn.unwrap_or_default()));
        }
        let (arns, next) = page(items, token.as_deref(), limit, false);
        Ok(ecs::ListServicesResponse {
            service_arns: Some(arns),
            next_token: next,
        })
    }

    /// One pass over every service of every cluster. Returns how many services changed.
    pub async fn reconcile_services(&self) -> Result<usize, EcsError> {
        let _one_at_a_time = self.reconciling.lock().await;
        // Read what every write acknowledged so far left, this pass's own included.
        self.caught_up().await?;
        let kvs = self
            .store
            .range("services/", None, None)
            .await
            .map_err(store_error)?;
        let mut work = Vec::new();
        for kv in kvs {
            let s: Service = decode(&kv)?;
            if s.status.as_deref() == Some("INACTIVE") {
                continue;
            }
            let cluster = kv
                .key
                .trim_start_matches("services/")
                .split('/')
                .next()
                .unwrap_or_default()
                .to_string();
            work.push((cluster, s, kv));
        }
        Ok(self.reconcile_all(work).await)
    }

    /// Reconciles services side by side (each one's reads, decisions and writes are its own;
    /// their commits share the store's group commits). Returns how many changed.
    async fn reconcile_all(&self, work: Vec<(String, Service, KeyValue)>) -> usize {
        use futures::StreamExt;
        futures::stream::iter(work)
            .map(|(cluster, s, kv)| async move {
                match self.reconcile_service(&cluster, s, kv).await {
                    Ok(changed) => changed,
                    Err(e) => {
                        tracing::warn!(cluster, error = %e, "reconciling a service failed");
                        false
                    }
                }
            })
            .buffer_unordered(SIDE_BY_SIDE)
            .filter(|changed| std::future::ready(*changed))
            .count()
            .await
    }

    /// Read, decide ([`deploy::decide`]), apply, record ([`deploy::record`]), write.
    async fn reconcile_service(
        &self,
        cluster: &str,
        mut s: Service,
        kv: KeyValue,
    ) -> Result<bool, EcsError> {
        self.metrics.reconciler_passes.inc();
        if crate::task_sets::uses_task_sets(&s) {
            return self.reconcile_task_sets(cluster, s, kv).await;
        }
        let before = s.clone();
        let now = now_epoch();
        let mut input = self.service_input(cluster, &s).await?;
        // Behind a load balancer, a task is healthy only once its targets are, and one that
        // drains is already stopping.
        let lb = self.service_lb(cluster, &s, &input.tasks).await?;
        if let Some(lb) = &lb {
            fold_lb(&mut input.tasks, lb);
        }
        let decision = deploy::decide(&input, now);
        let mut lb_events = Vec::new();
        let outcome = self
            .apply_decision(
                cluster,
                &s,
                input.service.launch_type(),
                &decision,
                lb.as_ref(),
                &mut lb_events,
            )
            .await?;
        let mut tasks = if decision.acts() {
            self.caught_up().await?;
            self.service_tasks(cluster, &s).await?
        } else {
            input.tasks
        };
        if decision.acts() {
            if let Some(lb) = self.service_lb(cluster, &s, &tasks).await? {
                fold_lb(&mut tasks, &lb);
            }
        }
        let rec = deploy::record(&input.service, &decision, &outcome, &tasks, now);
        write_back(&mut s, &decision, rec, now);
        if lb.is_some() {
            lb_events.extend(self.sync_targets(cluster, &s, &tasks).await?);
            push_service_events(&mut s, lb_events, now);
        }
        if s == before {
            return Ok(false);
        }
        // A conflict means someone changed the service meanwhile: the next pass sees it and
        // decides again. What this pass did (tasks started or stopped) is done, though, and
        // the next pass will not say so: its events go onto the service as it is now.
        let txn = Txn::new().replace(&kv, encode(&s)?);
        let txn = self.with_history(txn, cluster, &s, now).await?;
        let committed = self.commit(txn).await?;
        if committed || !decision.acts() {
            return Ok(committed);
        }
        let known: std::collections::HashSet<&str> = before
            .events
            .iter()
            .flatten()
            .filter_map(|e| e.id.as_deref())
            .collect();
        // Newest first in the record; pushed oldest first.
        let mut said: Vec<String> = s
            .events
            .iter()
            .flatten()
            .filter(|e| e.id.as_deref().is_some_and(|id| !known.contains(id)))
            .filter_map(|e| e.message.clone())
            .collect();
        said.reverse();
        for _ in 0..CAS_ATTEMPTS {
            let Some((mut now_s, now_kv)) = self.get_record::<Service>(&kv.key).await? else {
                return Ok(false);
            };
            push_service_events(&mut now_s, said.clone(), now);
            if self
                .commit(Txn::new().replace(&now_kv, encode(&now_s)?))
                .await?
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Everything [`deploy::decide`] needs of a service, from its record and the cluster state.
    async fn service_input(&self, cluster: &str, s: &Service) -> Result<deploy::Input, EcsError> {
        let service = service_state(s);
        let eligible = if service.scheduling == deploy::SchedulingStrategy::Daemon
            && service.status == deploy::ServiceStatus::Active
        {
            self.daemon_instances(cluster, s, service.launch_type())
                .await?
        } else {
            Vec::new()
        };
        Ok(deploy::Input {
            service,
            deployments: s
                .deployments
                .iter()
                .flatten()
                .map(deployment_state)
                .collect(),
            tasks: self.service_tasks(cluster, s).await?,
            eligible,
            fresh_deployment_id: deployment_id(),
        })
    }

    /// The service's tasks (group `service:NAME`) from the cluster state, with what their
    /// hosts say of them: a task whose agent is gone is not healthy, and one on a host that is
    /// not ACTIVE or whose agent is gone is displaced.
    pub(crate) async fn service_tasks(
        &self,
        cluster: &str,
        s: &Service,
    ) -> Result<Vec<deploy::ServiceTask>, EcsError> {
        let protections = self.protections(cluster, crate::now_epoch()).await?;
        let group = format!("service:{}", s.service_name.as_deref().unwrap_or_default());
        let not_active = |cs: &crate::state::ClusterState| -> std::collections::HashSet<String> {
            cs.instances()
                .filter(|e| e.record.status.as_deref() != Some("ACTIVE"))
                .filter_map(|e| e.record.container_instance_arn.clone())
                .collect()
        };
        // FARGATE tasks run on the pool of Fargate capacity: its draining hosts count too
        // (read first: placements lock the task's cluster, then the pool).
        let mut draining = not_active(&*self.state.cluster(crate::FARGATE_POOL).await);
        let cs = self.state.cluster(cluster).await;
        draining.extend(not_active(&cs));
        Ok(cs
            .group_tasks(&group)
            .into_iter()
            .map(|t| {
                let host = t.instance.as_deref().unwrap_or_default().to_string();
                let gone = self.agents.is_gone(&host);
                deploy::ServiceTask {
                    arn: self.task_arn(cluster, &t.id),
                    deployment: t.started_by.as_deref().unwrap_or_default().to_string(),
                    last_status: Some(t.last_status.as_str().to_string()),
                    desired_status: Some(
                        if t.desired_stopped {
                            "STOPPED"
                        } else {
                            "RUNNING"
                        }
                        .to_string(),
                    ),
                    healthy: !gone && t.all_healthy,
                    unhealthy: t.any_unhealthy,
                    started_at: t.started_at,
                    stopped_at: t.stopped_at,
                    stop_code: t.stop_code.clone(),
                    displaced: gone || draining.contains(&host),
                    failed_health: t.health_failed,
                    protected_until: protections.get(&t.id).copied(),
                    host,
                }
            })
            .collect())
    }

    /// Stops, then starts, what `d` says; what happened.
    async fn apply_decision(
        &self,
        cluster: &str,
        s: &Service,
        launch_type: &str,
        d: &deploy::Decision,
        lb: Option<&HashMap<String, crate::targets::TaskLb>>,
        lb_events: &mut Vec<String>,
    ) -> Result<deploy::Outcome, EcsError> {
        let mut left = Vec::new();
        let mut out = deploy::Outcome::default();
        for stop in &d.stop {
            let id = deploy::task_id(&stop.arn);
            let mut reason = stop.reason.clone();
            let lb_task = lb.and_then(|lb| lb.get(&stop.arn));
            // A task replaced for its targets' health says which group failed it.
            if let Some(group) = lb_task.and_then(|l| l.unhealthy_in.as_deref()) {
                if reason == CONTAINER_UNHEALTHY {
                    reason = crate::targets::elb_unhealthy_reason(group);
                }
            }
            // Behind a load balancer the task drains first; it stops once its targets are gone.
            if lb_task.is_some() {
                if let Some(groups) = self.begin_drain(cluster, &stop.arn, &reason).await? {
                    left.extend(groups);
                    out.stopped.push(stop.arn.clone());
                    continue;
                }
            }
            if self
                .stop_task_as(cluster, id, deploy::STOP_CODE, &reason)
                .await?
                .is_some()
            {
                out.stopped.push(stop.arn.clone());
            }
        }
        let name = s.service_name.as_deref().unwrap_or_default();
        lb_events.extend(Self::deregistered_events(name, &left));
        let Some(primary) = d.deployments.first().filter(|_| d.start.count() > 0) else {
            return Ok(out);
        };
        let group = format!("service:{}", s.service_name.as_deref().unwrap_or_default());
        let strategy = s
            .capacity_provider_strategy
            .as_deref()
            .filter(|i| !i.is_empty())
            .and_then(crate::capacity::Strategy::stored);
        let targets: Vec<(Pool, usize, Option<String>)> = match (&d.start, strategy) {
            // Each provider's share, the service's tasks on each counted.
            (deploy::Start::Replicas(n), Some(st)) => {
                let have = self.provider_counts(cluster, &group, &st.providers).await?;
                st.split(&have, *n as usize)
                    .into_iter()
                    .map(|(p, k)| (Pool::LaunchType(st.launch_type.into()), k, Some(p)))
                    .collect()
            }
            (deploy::Start::Replicas(n), None) => {
                vec![(Pool::LaunchType(launch_type.to_string()), *n as usize, None)]
            }
            (deploy::Start::OnInstances(arns), _) => arns
                .iter()
                .map(|a| (Pool::Instances(vec![a.clone()]), 1, None))
                .collect(),
        };
        let strategies = match &d.placement {
            deploy::Placement::ServiceOwn => s.placement_strategy.clone().unwrap_or_default(),
            deploy::Placement::Default(v) => strategies_of(v),
        };
        let propagate = self.service_propagate(s).await;
        for (target, count, provider) in targets {
            let placed = self
                .start_tasks(
                    Some(cluster),
                    primary.task_definition.as_deref(),
                    target,
                    count,
                    Meta {
                        allow_inactive: true,
                        constraints: s.placement_constraints.clone().unwrap_or_default(),
                        strategies: strategies.clone(),
                        started_by: Some(primary.id.clone()),
                        group: Some(group.clone()),
                        propagate: propagate.clone(),
                        managed_tags: s.enable_ecs_managed_tags.unwrap_or(false),
                        service: s.service_name.clone(),
                        network: s.network_configuration.clone(),
                        capacity_provider: provider,
                        ..Default::default()
                    },
                )
                .await;
            match placed {
                Ok((tasks, failures)) => {
                    if tasks.len() < count {
                        out.unplaced = Some(deploy::why_unplaced(failures.first().map(|f| {
                            (
                                f.reason.as_deref().unwrap_or(""),
                                f.arn.as_deref().unwrap_or(""),
                            )
                        })));
                    }
                    out.started
                        .extend(tasks.into_iter().filter_map(|t| t.task_arn));
                }
                Err(e) => out.unplaced = Some(e.message),
            }
        }
        Ok(out)
    }

    /// The tags a service's tasks take (its `propagateTags`).
    pub(crate) async fn service_propagate(&self, s: &Service) -> crate::apply::Propagate {
        let service_tags = match s.propagate_tags.as_deref() {
            Some("SERVICE") => Some(
                self.tags_of(s.service_arn.as_deref().unwrap_or_default())
                    .await
                    .unwrap_or_default(),
            ),
            _ => None,
        };
        crate::tasks::propagate_of(s.propagate_tags.as_deref(), service_tags).unwrap_or_default()
    }

    /// The instances a DAEMON service should run on, in instance order: ACTIVE, agent not
    /// gone, of its launch type, meeting its memberOf constraints.
    async fn daemon_instances(
        &self,
        cluster: &str,
        s: &Service,
        launch_type: &str,
    ) -> Result<Vec<String>, EcsError> {
        let constraints = crate::placement::constraints(
            s.placement_constraints.as_deref().unwrap_or_default(),
            &[],
        )?;
        let cs = self.state.cluster(cluster).await;
        let mut hosts: Vec<&crate::state::InstanceEntry> = cs.instances().collect();
        hosts.sort_by(|a, b| a.key.cmp(&b.key));
        let mut out = Vec::new();
        for e in hosts {
            let arn = e.record.container_instance_arn.clone().unwrap_or_default();
            if e.record.status.as_deref() != Some("ACTIVE")
                || self.agents.is_gone(&arn)
                || crate::read::launch_type_of(&e.record) != launch_type
            {
                continue;
            }
            let Some(mut c) = cs.candidate(&arn, &self.agents) else {
                continue;
            };
            c.agent_connected = true;
            let members = constraints.iter().all(|k| match k {
                berth_scheduler::Constraint::MemberOf(e) => e.matches(&c),
                berth_scheduler::Constraint::DistinctInstance => true,
            });
            if members {
                out.push(arn);
            }
        }
        Ok(out)
    }

    /// Reconciles the services whose tasks or record changed (50 ms apart at most), and every
    /// service at least every `interval` (time alone moves back-off deadlines, grace periods
    /// and agent timeouts), until `stop` completes.
    pub async fn run_service_loop(
        &self,
        interval: std::time::Duration,
        stop: impl std::future::Future<Output = ()>,
    ) {
        let mut stop = std::pin::pin!(stop);
        let mut next_full = tokio::time::Instant::now();
        loop {
            // Only the leader reconciles, its writes fenced on its leadership.
            let standing = self.leadership.standing();
            let result = if tokio::time::Instant::now() >= next_full {
                next_full = tokio::time::Instant::now() + interval;
                self.state.take_dirty();
                self.leadership.lead(self.reconcile_services()).await
            } else {
                let dirty = self.state.take_dirty();
                self.leadership.lead(self.reconcile_some(dirty)).await
            };
            if let Some(Err(e)) = result {
                tracing::warn!(error = %e, "service reconciliation failed");
            }
            tokio::select! {
                _ = tokio::time::sleep_until(next_full) => {}
                // A new leader starts with a full pass.
                _ = self.leadership.changed_from(standing) => next_full = tokio::time::Instant::now(),
                _ = self.state.dirty_changed() => {
                    // Let a burst of changes (an agent reporting many tasks) land in one pass.
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                _ = &mut stop => return,
            }
        }
    }

    /// Reconciles the services named `CLUSTER/NAME`. Returns how many changed.
    pub async fn reconcile_some(
        &self,
        services: std::collections::BTreeSet<String>,
    ) -> Result<usize, EcsError> {
        if services.is_empty() {
            return Ok(0);
        }
        let _one_at_a_time = self.reconciling.lock().await;
        self.caught_up().await?;
        let mut names: Vec<(String, String)> = Vec::new();
        for (c, n) in services.iter().filter_map(|k| k.split_once('/')) {
            if n.is_empty() {
                for kv in self
                    .store
                    .range(&keys::services_of(c), None, None)
                    .await
                    .map_err(store_error)?
                {
                    names.push((c.to_string(), kv.key));
                }
            } else {
                names.push((c.to_string(), keys::service(c, n)));
            }
        }
        names.sort();
        names.dedup();
        let keys: Vec<String> = names.iter().map(|(_, k)| k.clone()).collect();
        let records = self.store.get_many(&keys).await.map_err(store_error)?;
        let mut work = Vec::new();
        for ((cluster, _), kv) in names.into_iter().zip(records) {
            let Some(kv) = kv else { continue };
            let s: Service = decode(&kv)?;
            if s.status.as_deref() != Some("INACTIVE") {
                work.push((cluster, s, kv));
            }
        }
        Ok(self.reconcile_all(work).await)
    }
}
