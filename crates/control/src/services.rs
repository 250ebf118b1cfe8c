//! Services: CreateService, UpdateService, DeleteService, DescribeServices, ListServices, and
//! the loop that reconciles every service against its tasks.
//!
//! A service record is ECS's `Service` with its deployments (PRIMARY first) and events (newest
//! first). Its tasks carry `group` `service:NAME` and `startedBy` the deployment id, so the
//! reconciler's inputs are all in the store: a restarted server carries on where it was.
//! [`berth_reconcile::service::reconcile`] decides; [`Control::reconcile_services`] reads,
//! decides, places and stops, and records counts, rollout state and events.

use crate::apply::{Meta, Target};
use crate::paging::{decode_token, max_results, page};
use crate::{
    conflict_exhausted, decode, encode, keys, now_epoch, store_error, Control, CAS_ATTEMPTS,
};
use berth_api::ecs::{self, Deployment, Service, ServiceEvent};
use berth_api::error::check_enum;
use berth_api::{EcsError, ErrorKind};
use berth_model::arn::{Arn, ResourceKind};
use berth_model::status::TaskStatus;
use berth_reconcile::service as rec;
use berth_store::{KeyValue, Txn};

/// ECS keeps the newest hundred events.
const MAX_EVENTS: usize = 100;

fn not_found(service: &str) -> EcsError {
    EcsError::new(
        ErrorKind::ServiceNotFound,
        format!("Service not found: '{service}'"),
    )
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

fn deployment_id() -> String {
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

fn push_event(s: &mut Service, message: String, now: f64) {
    let events = s.events.get_or_insert_with(Vec::new);
    // A repeat of the newest event is not written again.
    if events.first().and_then(|e| e.message.as_deref()) == Some(message.as_str()) {
        return;
    }
    events.insert(
        0,
        ServiceEvent {
            id: Some(uuid::Uuid::new_v4().to_string()),
            created_at: Some(now),
            message: Some(message),
        },
    );
    events.truncate(MAX_EVENTS);
}

fn task_id(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap_or(arn)
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

    fn new_deployment(
        &self,
        td_arn: &str,
        desired: i32,
        launch_type: &str,
        now: f64,
    ) -> Deployment {
        let id = deployment_id();
        Deployment {
            rollout_state_reason: Some(format!("ECS deployment {id} in progress.")),
            id: Some(id),
            status: Some("PRIMARY".into()),
            task_definition: Some(td_arn.into()),
            desired_count: Some(desired),
            pending_count: Some(0),
            running_count: Some(0),
            failed_tasks: Some(0),
            created_at: Some(now),
            updated_at: Some(now),
            launch_type: Some(launch_type.into()),
            rollout_state: Some("IN_PROGRESS".into()),
            ..Default::default()
        }
    }

    pub async fn create_service(
        &self,
        caller: &crate::Caller,
        r: ecs::CreateServiceRequest,
    ) -> Result<ecs::CreateServiceResponse, EcsError> {
        let (cluster_rec, _) = self.active_cluster(r.cluster.as_deref()).await?;
        let cluster = cluster_rec.cluster_name.clone().unwrap_or_default();
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
        if r.capacity_provider_strategy
            .as_ref()
            .is_some_and(|c| !c.is_empty())
        {
            return Err(EcsError::invalid(
                "capacityProviderStrategy is not supported by Berth yet; give launchType EC2 or EXTERNAL"
                    .to_string(),
            ));
        }
        let launch_type = r.launch_type.clone().unwrap_or_else(|| "EC2".into());
        check_enum("launchType", &launch_type, ecs::enums::LAUNCH_TYPE)?;
        if launch_type != "EC2" && launch_type != "EXTERNAL" {
            return Err(EcsError::invalid(format!(
                "launchType {launch_type} is not supported by Berth yet; use EC2 or EXTERNAL"
            )));
        }
        if let Some(c) = &r.deployment_controller {
            if c.r#type.as_deref().is_some_and(|t| t != "ECS") {
                return Err(EcsError::invalid(
                    "only the ECS deployment controller is supported by Berth".to_string(),
                ));
            }
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
        let td = self
            .runnable_definition(r.task_definition.as_deref(), &launch_type, false)
            .await?;
        let tags = r.tags.clone().unwrap_or_default();
        crate::check_tags(&tags)?;
        let td_arn = td.task_definition_arn.clone().unwrap_or_default();
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
            }
            let (_, cluster_kv) = self.active_cluster(Some(&cluster)).await?;
            let s = Service {
                service_arn: Some(arn.clone()),
                service_name: Some(name.clone()),
                cluster_arn: cluster_rec.cluster_arn.clone(),
                status: Some("ACTIVE".into()),
                desired_count: Some(desired),
                running_count: Some(0),
                pending_count: Some(0),
                launch_type: Some(launch_type.clone()),
                task_definition: Some(td_arn.clone()),
                deployment_configuration: Some(deployment_configuration.clone()),
                deployments: Some(vec![self.new_deployment(
                    &td_arn,
                    desired,
                    &launch_type,
                    now,
                )]),
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
                platform_version: r.platform_version.clone(),
                role_arn: r.role.clone(),
                ..Default::default()
            };
            let mut txn = Txn::new()
                .unchanged(&keys::cluster(&cluster), Some(&cluster_kv))
                .unchanged(&key, seen.as_ref().map(|(_, kv)| kv))
                .put(key.clone(), encode(&s)?);
            if !tags.is_empty() {
                txn = txn.put(keys::tags(&arn), encode(&tags)?);
            }
            if self.commit(txn).await? {
                tracing::info!(cluster, service = name, desired, "service created");
                return Ok(ecs::CreateServiceResponse { service: Some(s) });
            }
        }
        Err(conflict_exhausted("creating the service"))
    }

    async fn service_record(
        &self,
        cluster: &str,
        ident: &str,
    ) -> Result<(Service, KeyValue), EcsError> {
        let name = Self::service_name(ident);
        self.get_record::<Service>(&keys::service(cluster, &name))
            .await?
            .ok_or_else(|| not_found(ident))
    }

    pub async fn update_service(
        &self,
        r: ecs::UpdateServiceRequest,
    ) -> Result<ecs::UpdateServiceResponse, EcsError> {
        let (cluster_rec, _) = self.active_cluster(r.cluster.as_deref()).await?;
        let cluster = cluster_rec.cluster_name.unwrap_or_default();
        let ident = r.service.clone().unwrap_or_default();
        if let Some(d) = r.desired_count {
            if d < 0 {
                return Err(EcsError::invalid(format!(
                    "desiredCount {d} must not be negative"
                )));
            }
        }
        let new_td = match r.task_definition.as_deref() {
            Some(t) => Some(self.runnable_definition(Some(t), "EC2", false).await?),
            None => None,
        };
        if let Some(c) = &r.placement_constraints {
            crate::placement::constraints(c, &[])?;
        }
        if let Some(st) = &r.placement_strategy {
            crate::placement::strategies(st)?;
        }
        let now = now_epoch();
        for _ in 0..CAS_ATTEMPTS {
            let (mut s, kv) = self.service_record(&cluster, &ident).await?;
            if s.status.as_deref() != Some("ACTIVE") {
                return Err(EcsError::new(
                    ErrorKind::ServiceNotActive,
                    format!("Service was not ACTIVE: '{ident}'"),
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
            let desired = s.desired_count.unwrap_or(0);
            let td_arn = new_td
                .as_ref()
                .and_then(|t| t.task_definition_arn.clone())
                .or_else(|| s.task_definition.clone())
                .unwrap_or_default();
            let deployments = s.deployments.get_or_insert_with(Vec::new);
            let changed_td = s.task_definition.as_deref() != Some(td_arn.as_str());
            if changed_td || r.force_new_deployment.unwrap_or(false) {
                for d in deployments.iter_mut() {
                    d.status = Some("ACTIVE".into());
                    d.updated_at = Some(now);
                }
                let lt = s.launch_type.clone().unwrap_or_else(|| "EC2".into());
                deployments.insert(0, self.new_deployment(&td_arn, desired, &lt, now));
                s.task_definition = Some(td_arn);
            } else if let Some(p) = deployments.first_mut() {
                p.desired_count = Some(desired);
                p.updated_at = Some(now);
            }
            let txn = Txn::new().replace(&kv, encode(&s)?);
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
                    format!("Service was not ACTIVE: '{ident}'"),
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
                Err(_) => failures.push(ecs::Failure {
                    arn: Some(ident),
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
        let kvs = self
            .store
            .range("services/", None, None)
            .await
            .map_err(store_error)?;
        let mut changed = 0;
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
            match self.reconcile_service(&cluster, s, kv).await {
                Ok(true) => changed += 1,
                Ok(false) => {}
                Err(e) => tracing::warn!(cluster, error = %e, "reconciling a service failed"),
            }
        }
        Ok(changed)
    }

    async fn reconcile_service(
        &self,
        cluster: &str,
        mut s: Service,
        kv: KeyValue,
    ) -> Result<bool, EcsError> {
        let before = encode(&s)?;
        let name = s.service_name.clone().unwrap_or_default();
        let group = format!("service:{name}");
        let now = now_epoch();
        let deployments = s.deployments.clone().unwrap_or_default();
        let tasks: Vec<ecs::Task> = self
            .tasks_in(cluster)
            .await?
            .into_iter()
            .map(|(t, _)| t)
            .filter(|t| t.group.as_deref() == Some(group.as_str()))
            .collect();
        let draining: std::collections::HashSet<String> = self
            .instances_of(cluster)
            .await?
            .into_iter()
            .filter(|(ci, _)| ci.status.as_deref() != Some("ACTIVE"))
            .filter_map(|(ci, _)| ci.container_instance_arn)
            .collect();
        let view: Vec<rec::Task> = tasks
            .iter()
            .map(|t| {
                let host = t.container_instance_arn.as_deref().unwrap_or_default();
                let gone = self.agents.is_gone(host);
                let last = t
                    .last_status
                    .as_deref()
                    .and_then(TaskStatus::parse)
                    .unwrap_or(TaskStatus::Pending);
                let phase = if last == TaskStatus::Stopped {
                    rec::Phase::Stopped
                } else if t.desired_status.as_deref() == Some("STOPPED") {
                    rec::Phase::Stopping
                } else if last == TaskStatus::Running {
                    rec::Phase::Running
                } else {
                    rec::Phase::Pending
                };
                let checks: Vec<&str> = t
                    .containers
                    .iter()
                    .flatten()
                    .filter_map(|c| c.health_status.as_deref())
                    .collect();
                rec::Task {
                    arn: t.task_arn.clone().unwrap_or_default(),
                    deployment: t.started_by.clone().unwrap_or_default(),
                    phase,
                    // Nobody can vouch for a task whose agent is gone.
                    healthy: !gone && checks.iter().all(|h| *h == "HEALTHY"),
                    unhealthy: checks.contains(&"UNHEALTHY"),
                    started_at: t.started_at,
                    displaced: gone || draining.contains(host),
                    host: host.to_string(),
                }
            })
            .collect();
        let config = s.deployment_configuration.clone().unwrap_or_default();
        let mut events: Vec<String> = Vec::new();

        // Failures of the PRIMARY deployment: its tasks that stopped without being asked to.
        let failed_of = |dep: &str| -> Vec<&ecs::Task> {
            tasks
                .iter()
                .filter(|t| t.started_by.as_deref() == Some(dep))
                .filter(|t| t.last_status.as_deref() == Some("STOPPED"))
                .filter(|t| {
                    !matches!(
                        t.stop_code.as_deref(),
                        Some("ServiceSchedulerInitiated" | "UserInitiated")
                    )
                })
                .collect()
        };
        let mut deployments = deployments;
        let primary_id = deployments
            .first()
            .and_then(|d| d.id.clone())
            .unwrap_or_default();
        let failures = failed_of(&primary_id);
        if let Some(p) = deployments.first_mut() {
            p.failed_tasks = Some(failures.len() as i32);
        }
        let breaker = config
            .deployment_circuit_breaker
            .clone()
            .unwrap_or_default();
        let in_progress = deployments
            .first()
            .is_some_and(|d| d.rollout_state.as_deref() == Some("IN_PROGRESS"));
        if breaker.enable.unwrap_or(false) && in_progress {
            let threshold = rec::circuit_breaker_threshold(
                s.desired_count.unwrap_or(0).max(0) as u32,
                breaker
                    .threshold_configuration
                    .as_ref()
                    .and_then(|t| t.r#type.as_deref()),
                breaker
                    .threshold_configuration
                    .as_ref()
                    .and_then(|t| t.value)
                    .map(|v| v.max(0) as u32),
            );
            if failures.len() as u32 >= threshold {
                if let Some(p) = deployments.first_mut() {
                    p.rollout_state = Some("FAILED".into());
                    p.rollout_state_reason =
                        Some("ECS deployment circuit breaker: tasks failed to start.".into());
                    p.updated_at = Some(now);
                }
                events.push(format!(
                    "(service {name}) (deployment {primary_id}) deployment failed: tasks failed to start."
                ));
                let back_to = deployments
                    .iter()
                    .skip(1)
                    .find(|d| d.rollout_state.as_deref() == Some("COMPLETED"))
                    .cloned();
                match (breaker.rollback.unwrap_or(false), back_to) {
                    (true, Some(good)) => {
                        let td = good.task_definition.clone().unwrap_or_default();
                        let lt = s.launch_type.clone().unwrap_or_else(|| "EC2".into());
                        for d in deployments.iter_mut() {
                            d.status = Some("ACTIVE".into());
                        }
                        let rollback =
                            self.new_deployment(&td, s.desired_count.unwrap_or(0), &lt, now);
                        events.push(format!(
                            "(service {name}) rolling back to deployment {}.",
                            good.id.as_deref().unwrap_or("")
                        ));
                        deployments.insert(0, rollback);
                        s.task_definition = Some(td);
                    }
                    (true, None) => events.push(format!(
                        "(service {name}) has no completed deployment to roll back to."
                    )),
                    (false, _) => {}
                }
            }
        }
        // A FAILED PRIMARY starts nothing more; a PRIMARY whose tasks keep failing backs off.
        let primary_failed = deployments
            .first()
            .is_some_and(|d| d.rollout_state.as_deref() == Some("FAILED"));
        let current_failures = failed_of(
            deployments
                .first()
                .and_then(|d| d.id.as_deref())
                .unwrap_or_default(),
        );
        let last_failure = current_failures
            .iter()
            .filter_map(|t| t.stopped_at)
            .fold(f64::MIN, f64::max);
        let backing_off = now < last_failure + rec::restart_backoff(current_failures.len() as u32);
        let spec = rec::Service {
            desired: s.desired_count.unwrap_or(0).max(0) as u32,
            minimum_healthy_percent: config.minimum_healthy_percent.unwrap_or(100).max(0) as u32,
            maximum_percent: config.maximum_percent.unwrap_or(200).max(0) as u32,
            health_check_grace_period: f64::from(s.health_check_grace_period_seconds.unwrap_or(0)),
            deployments: deployments
                .iter()
                .map(|d| rec::Deployment {
                    id: d.id.clone().unwrap_or_default(),
                })
                .collect(),
        };
        let lt = s.launch_type.clone().unwrap_or_else(|| "EC2".into());
        let (mut actions, mut targets) = if s.scheduling_strategy.as_deref() == Some("DAEMON") {
            let eligible = if s.status.as_deref() == Some("DRAINING") {
                Vec::new()
            } else {
                self.daemon_instances(cluster, &s, &lt).await?
            };
            if s.status.as_deref() != Some("DRAINING") {
                s.desired_count = Some(eligible.len() as i32);
            }
            let placed: Vec<berth_reconcile::daemon::Placed> = view
                .iter()
                .zip(tasks.iter())
                .map(|(v, t)| berth_reconcile::daemon::Placed {
                    task: v.clone(),
                    instance: t.container_instance_arn.clone().unwrap_or_default(),
                })
                .collect();
            let d = berth_reconcile::daemon::reconcile(
                spec.deployments
                    .first()
                    .map(|d| d.id.as_str())
                    .unwrap_or(""),
                &eligible,
                &placed,
            );
            let retire = spec
                .deployments
                .iter()
                .skip(1)
                .filter(|d| {
                    !view
                        .iter()
                        .any(|t| t.deployment == d.id && t.phase != rec::Phase::Stopped)
                })
                .map(|d| d.id.clone())
                .collect();
            let targets: Vec<(Target, usize)> = d
                .start_on
                .iter()
                .map(|arn| (Target::Instances(vec![task_id(arn).to_string()]), 1))
                .collect();
            (
                rec::Actions {
                    start: d.start_on.len() as u32,
                    stop: d.stop,
                    retire,
                    steady: d.steady,
                },
                targets,
            )
        } else {
            let a = rec::reconcile(&spec, &view, now);
            let n = a.start as usize;
            (a, vec![(Target::LaunchType(lt.clone()), n)])
        };
        if primary_failed {
            actions.start = 0;
            targets.clear();
        } else if backing_off && actions.start > 0 {
            actions.start = 0;
            targets.clear();
            events.push(format!(
                "(service {name}) is unable to consistently start tasks successfully. For more information, see the Troubleshooting section of the Amazon ECS Developer Guide."
            ));
        }

        // Stop first, then start: room under the ceiling comes from stops.
        let mut stopped = Vec::new();
        for (arn, why) in &actions.stop {
            let reason = match why {
                rec::StopWhy::Unhealthy => "Task failed container health checks".to_string(),
                _ => format!(
                    "Scaling activity initiated by (deployment {})",
                    spec.deployments
                        .first()
                        .map(|d| d.id.as_str())
                        .unwrap_or("")
                ),
            };
            if self
                .stop_task_as(cluster, task_id(arn), "ServiceSchedulerInitiated", &reason)
                .await?
                .is_some()
            {
                stopped.push(format!("(task {})", task_id(arn)));
            }
        }
        if !stopped.is_empty() {
            events.push(format!(
                "(service {name}) has stopped {} running tasks: {}.",
                stopped.len(),
                stopped.join(" ")
            ));
        }
        if let Some(primary) = deployments.first().filter(|_| actions.start > 0) {
            let strategies = match s.placement_strategy.clone().unwrap_or_default() {
                st if st.is_empty() && s.scheduling_strategy.as_deref() != Some("DAEMON") => vec![
                    ecs::PlacementStrategy {
                        r#type: Some("spread".into()),
                        field: Some("attribute:ecs.availability-zone".into()),
                    },
                    ecs::PlacementStrategy {
                        r#type: Some("spread".into()),
                        field: Some("instanceId".into()),
                    },
                ],
                st => st,
            };
            let mut started = Vec::new();
            let mut unplaced: Option<String> = None;
            for (target, count) in targets.into_iter().filter(|(_, n)| *n > 0) {
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
                            started_by: primary.id.clone(),
                            group: Some(group.clone()),
                            ..Default::default()
                        },
                    )
                    .await;
                match placed {
                    Ok((tasks, failures)) => {
                        if tasks.len() < count {
                            unplaced = Some(
                                failures
                                    .first()
                                    .map(|f| {
                                        format!(
                                            "{} on container instance {}",
                                            f.reason.as_deref().unwrap_or(""),
                                            f.arn.as_deref().unwrap_or("")
                                        )
                                    })
                                    .unwrap_or_else(|| {
                                        "no container instance met all of its requirements".into()
                                    }),
                            );
                        }
                        started.extend(tasks);
                    }
                    Err(e) => unplaced = Some(e.message),
                }
            }
            if !started.is_empty() {
                let ids: Vec<String> = started
                    .iter()
                    .map(|t| {
                        format!(
                            "(task {})",
                            task_id(t.task_arn.as_deref().unwrap_or_default())
                        )
                    })
                    .collect();
                events.push(format!(
                    "(service {name}) has started {} tasks: {}.",
                    started.len(),
                    ids.join(" ")
                ));
            }
            if let Some(why) = unplaced {
                events.push(format!(
                    "(service {name}) was unable to place a task because no container instance met all of its requirements. Reason: {why}."
                ));
            }
        }

        // Record counts, retired deployments, rollout state and events on the record.
        let after: Vec<ecs::Task> = if actions.start > 0 || !actions.stop.is_empty() {
            self.tasks_in(cluster)
                .await?
                .into_iter()
                .map(|(t, _)| t)
                .filter(|t| t.group.as_deref() == Some(group.as_str()))
                .collect()
        } else {
            tasks
        };
        let count = |dep: Option<&str>, status: &str| -> i32 {
            after
                .iter()
                .filter(|t| dep.is_none_or(|d| t.started_by.as_deref() == Some(d)))
                .filter(|t| t.desired_status.as_deref() == Some("RUNNING"))
                .filter(|t| t.last_status.as_deref() == Some(status))
                .count() as i32
        };
        let desired = s.desired_count.unwrap_or(0);
        let mut deps = deployments;
        deps.retain(|d| {
            !actions
                .retire
                .contains(d.id.as_ref().unwrap_or(&String::new()))
        });
        for (i, d) in deps.iter_mut().enumerate() {
            let id = d.id.clone();
            d.running_count = Some(count(id.as_deref(), "RUNNING"));
            d.pending_count = Some(count(id.as_deref(), "PENDING"));
            if i == 0 {
                d.desired_count = Some(desired);
            }
        }
        if actions.steady {
            if let Some(p) = deps.first_mut() {
                if p.rollout_state.as_deref() != Some("COMPLETED") {
                    p.rollout_state = Some("COMPLETED".into());
                    p.rollout_state_reason = Some(format!(
                        "ECS deployment {} completed.",
                        p.id.as_deref().unwrap_or("")
                    ));
                    p.updated_at = Some(now);
                    events.push(format!(
                        "(service {name}) deployment {} deployment completed.",
                        p.id.as_deref().unwrap_or("")
                    ));
                }
            }
            events.push(format!("(service {name}) has reached a steady state."));
        }
        s.running_count = Some(count(None, "RUNNING"));
        s.pending_count = Some(count(None, "PENDING"));
        s.deployments = Some(deps);
        for e in events {
            push_event(&mut s, e, now);
        }
        if s.status.as_deref() == Some("DRAINING")
            && after
                .iter()
                .all(|t| t.last_status.as_deref() == Some("STOPPED"))
        {
            s.status = Some("INACTIVE".into());
        }
        if encode(&s)? == before {
            return Ok(false);
        }
        // A conflict means someone changed the service meanwhile: the next pass sees it.
        let txn = Txn::new().replace(&kv, encode(&s)?);
        self.commit(txn).await
    }

    /// The instances a DAEMON service should run on: ACTIVE, agent not gone, of its launch
    /// type, meeting its memberOf constraints.
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
        let mut groups = self.groups_by_instance(cluster).await?;
        let mut out = Vec::new();
        for (ci, _) in self.instances_of(cluster).await? {
            let arn = ci.container_instance_arn.clone().unwrap_or_default();
            if ci.status.as_deref() != Some("ACTIVE")
                || self.agents.is_gone(&arn)
                || crate::read::launch_type_of(&ci) != launch_type
            {
                continue;
            }
            let c =
                crate::placement::candidate(&ci, true, groups.remove(&arn).unwrap_or_default())?;
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

    /// Reconciles every service whenever a task or service record changes (50 ms apart at
    /// most) and at least every `interval`, until `stop` completes.
    pub async fn run_service_loop(
        &self,
        interval: std::time::Duration,
        stop: impl std::future::Future<Output = ()>,
    ) {
        let mut stop = std::pin::pin!(stop);
        loop {
            let rev = self.store.revision().await.unwrap_or(0);
            if let Err(e) = self.reconcile_services().await {
                tracing::warn!(error = %e, "service reconciliation failed");
            }
            let tasks = self.store.watch("tasks/", rev).await;
            let services = self.store.watch("services/", rev).await;
            let (Ok(mut tasks), Ok(mut services)) = (tasks, services) else {
                tokio::select! {
                    _ = tokio::time::sleep(interval) => continue,
                    _ = &mut stop => return,
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = tasks.rx.recv() => {}
                _ = services.rx.recv() => {}
                _ = &mut stop => return,
            }
            // Let a burst of changes (an agent reporting many tasks) land in one pass.
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}
