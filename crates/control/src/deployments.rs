//! Service deployments and service revisions, as ECS reports them (ListServiceDeployments,
//! DescribeServiceDeployments, DescribeServiceRevisions) and StopServiceDeployment.
//!
//! Every deployment a service has ever had keeps a record `service-deployments/CLUSTER/SERVICE/ID`
//! holding its `ServiceDeployment` and the `ServiceRevision` it deploys (one revision per
//! deployment: the task definition, launch type or strategy, network and load balancers it was
//! made with). The records are written in the same transaction as the service record, by the
//! pure [`sync`], which follows the deployments the rolling reconciler keeps on the service:
//! IN_PROGRESS while PRIMARY and rolling, SUCCESSFUL once COMPLETED, STOPPED when a newer
//! deployment replaced it before it finished (or its circuit breaker tripped without a
//! rollback), ROLLBACK_IN_PROGRESS → ROLLBACK_SUCCESSFUL / ROLLBACK_FAILED while the deployment
//! rolled back to follows its course. A service keeps its newest [`KEPT`] records.

use crate::{decode, encode, keys, store_error, Control};
use berth_api::ecs::{self, Deployment, Service, ServiceDeployment, ServiceRevision};
use berth_api::error::{EcsError, ErrorKind};
use berth_model::arn::{Arn, ResourceKind};
use berth_store::Txn;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How many deployments of one service are remembered.
pub const KEPT: usize = 100;

/// What is kept of one deployment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub deployment: ServiceDeployment,
    pub revision: ServiceRevision,
}

/// The id a deployment's ARNs end in: the number of `ecs-svc/NUMBER`.
fn arn_id(deployment_id: &str) -> &str {
    deployment_id.rsplit('/').next().unwrap_or(deployment_id)
}

/// The ARNs of a deployment and of its revision, given how ARNs are made here.
pub struct Arns<'a> {
    pub make: &'a dyn Fn(ResourceKind, &str) -> String,
    pub cluster: &'a str,
    pub service: &'a str,
}

impl std::fmt::Debug for Arns<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Arns")
            .field("cluster", &self.cluster)
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

impl Arns<'_> {
    fn deployment(&self, id: &str) -> String {
        (self.make)(
            ResourceKind::ServiceDeployment,
            &format!("{}/{}/{}", self.cluster, self.service, arn_id(id)),
        )
    }
    fn revision(&self, id: &str) -> String {
        (self.make)(
            ResourceKind::ServiceRevision,
            &format!("{}/{}/{}", self.cluster, self.service, arn_id(id)),
        )
    }
}

/// The records of `service`'s deployments after it was written at `now`, given the records
/// it had (by deployment id): the new and changed ones, and the ids of records to drop (beyond
/// the newest [`KEPT`]).
pub fn sync(
    service: &Service,
    arns: &Arns<'_>,
    prior: &BTreeMap<String, Record>,
    now: f64,
) -> (Vec<(String, Record)>, Vec<String>) {
    let current: &[Deployment] = service.deployments.as_deref().unwrap_or_default();
    let primary = current.first();
    let summary = |d: &Deployment| ecs::ServiceRevisionSummary {
        arn: Some(arns.revision(d.id.as_deref().unwrap_or_default())),
        requested_task_count: d.desired_count,
        running_task_count: d.running_count,
        pending_task_count: d.pending_count,
        ..Default::default()
    };
    let mut out = Vec::new();
    // The deployments the service holds now.
    for (i, d) in current.iter().enumerate() {
        let id = d.id.clone().unwrap_or_default();
        let mut rec = match prior.get(&id) {
            Some(r) => r.clone(),
            None => new_record(service, d, current, arns, now),
        };
        rec.deployment.target_service_revision = Some(summary(d));
        let (status, reason) = match (i, d.rollout_state.as_deref()) {
            (_, Some("COMPLETED")) => ("SUCCESSFUL", None),
            (0, Some("FAILED")) => ("STOPPED", d.rollout_state_reason.clone()),
            // Failed and replaced: the newer PRIMARY is the rollback.
            (_, Some("FAILED")) => match primary.and_then(|p| p.rollout_state.as_deref()) {
                Some("COMPLETED") => ("ROLLBACK_SUCCESSFUL", d.rollout_state_reason.clone()),
                Some("FAILED") => ("ROLLBACK_FAILED", d.rollout_state_reason.clone()),
                _ => ("ROLLBACK_IN_PROGRESS", d.rollout_state_reason.clone()),
            },
            (0, _) => ("IN_PROGRESS", None),
            (_, _) => (
                "STOPPED",
                Some("A newer deployment of the service replaced it before it completed.".into()),
            ),
        };
        if status.starts_with("ROLLBACK")
            && rec.deployment.rollback.is_none()
            && !is_final(rec.deployment.status.as_deref())
        {
            rec.deployment.rollback = primary.map(|p| ecs::Rollback {
                reason: d.rollout_state_reason.clone(),
                started_at: p.created_at,
                service_revision_arn: Some(arns.revision(p.id.as_deref().unwrap_or_default())),
            });
        }
        settle(&mut rec, status, reason, now);
        rec.deployment.deployment_circuit_breaker = breaker(service, d, status);
        if prior.get(&id) != Some(&rec) {
            rec.deployment.updated_at = Some(now);
            out.push((id, rec));
        }
    }
    // Those the service let go: a rollout that was still going is over; a rollback follows
    // the deployment it rolled back to.
    for (id, r) in prior {
        if current.iter().any(|d| d.id.as_deref() == Some(id.as_str())) {
            continue;
        }
        let mut rec = r.clone();
        let status = rec.deployment.status.clone().unwrap_or_default();
        let target = rec
            .deployment
            .rollback
            .as_ref()
            .and_then(|r| r.service_revision_arn.clone());
        let rolled_to = current
            .iter()
            .find(|d| Some(arns.revision(d.id.as_deref().unwrap_or_default())) == target);
        match status.as_str() {
            "IN_PROGRESS" | "PENDING" => settle(
                &mut rec,
                "STOPPED",
                Some("A newer deployment of the service replaced it before it completed.".into()),
                now,
            ),
            "ROLLBACK_IN_PROGRESS" => {
                let next = match rolled_to.and_then(|d| d.rollout_state.as_deref()) {
                    Some("COMPLETED") => "ROLLBACK_SUCCESSFUL",
                    Some("FAILED") | None => "ROLLBACK_FAILED",
                    _ => "ROLLBACK_IN_PROGRESS",
                };
                let reason = rec.deployment.status_reason.clone();
                settle(&mut rec, next, reason, now);
            }
            _ => {}
        }
        if rec != *r {
            rec.deployment.updated_at = Some(now);
            out.push((id.clone(), rec));
        }
    }
    // The newest KEPT, by creation.
    let mut all: Vec<(f64, &String)> = prior
        .iter()
        .map(|(id, r)| (r.deployment.created_at.unwrap_or(0.0), id))
        .collect();
    for (id, r) in &out {
        if !prior.contains_key(id) {
            all.push((r.deployment.created_at.unwrap_or(0.0), id));
        }
    }
    all.sort_by(|a, b| b.0.total_cmp(&a.0));
    let dropped = all.iter().skip(KEPT).map(|(_, id)| (*id).clone()).collect();
    (out, dropped)
}

/// The circuit breaker's watch over a deployment, when the service has one: its failures
/// against the threshold the reconciler applies.
fn breaker(
    service: &Service,
    d: &Deployment,
    status: &str,
) -> Option<ecs::ServiceDeploymentCircuitBreaker> {
    let b = service
        .deployment_configuration
        .as_ref()
        .and_then(|c| c.deployment_circuit_breaker.as_ref())
        .filter(|b| b.enable.unwrap_or(false))?;
    let threshold = b.threshold_configuration.as_ref();
    let state = match (d.rollout_state.as_deref(), status) {
        (Some("FAILED"), _) => "TRIGGERED",
        (_, "IN_PROGRESS") => "MONITORING",
        _ => "MONITORING_COMPLETE",
    };
    Some(ecs::ServiceDeploymentCircuitBreaker {
        status: Some(state.into()),
        failure_count: Some(d.failed_tasks.unwrap_or(0)),
        threshold: Some(berth_reconcile::service::circuit_breaker_threshold(
            d.desired_count.unwrap_or(0).max(0) as u32,
            threshold.and_then(|t| t.r#type.as_deref()),
            threshold.and_then(|t| t.value).map(|v| v.max(0) as u32),
        ) as i32),
    })
}

/// Statuses a deployment keeps once it has them.
fn is_final(status: Option<&str>) -> bool {
    matches!(
        status,
        Some("SUCCESSFUL" | "STOPPED" | "ROLLBACK_SUCCESSFUL" | "ROLLBACK_FAILED")
    )
}

/// Sets a status, and when it ends the deployment, when it did; a final status stays.
fn settle(rec: &mut Record, status: &str, reason: Option<String>, now: f64) {
    let d = &mut rec.deployment;
    if d.status.as_deref() == Some(status) || is_final(d.status.as_deref()) {
        return;
    }
    d.status = Some(status.to_string());
    d.status_reason = reason;
    match status {
        "SUCCESSFUL" | "ROLLBACK_SUCCESSFUL" | "ROLLBACK_FAILED" => {
            d.finished_at.get_or_insert(now);
        }
        "STOPPED" => {
            d.stopped_at.get_or_insert(now);
        }
        _ => {}
    }
}

fn new_record(
    service: &Service,
    d: &Deployment,
    current: &[Deployment],
    arns: &Arns<'_>,
    now: f64,
) -> Record {
    let id = d.id.clone().unwrap_or_default();
    let created = d.created_at.unwrap_or(now);
    let sources = current
        .iter()
        .filter(|o| o.id != d.id && o.status.as_deref() != Some("INACTIVE"))
        .map(|o| ecs::ServiceRevisionSummary {
            arn: Some(arns.revision(o.id.as_deref().unwrap_or_default())),
            requested_task_count: o.desired_count,
            running_task_count: o.running_count,
            pending_task_count: o.pending_count,
            ..Default::default()
        })
        .collect();
    Record {
        deployment: ServiceDeployment {
            service_deployment_arn: Some(arns.deployment(&id)),
            service_arn: service.service_arn.clone(),
            cluster_arn: service.cluster_arn.clone(),
            created_at: Some(created),
            started_at: Some(created),
            updated_at: Some(now),
            source_service_revisions: Some(sources),
            status: Some("IN_PROGRESS".into()),
            deployment_configuration: service.deployment_configuration.clone(),
            ..Default::default()
        },
        revision: ServiceRevision {
            service_revision_arn: Some(arns.revision(&id)),
            service_arn: service.service_arn.clone(),
            cluster_arn: service.cluster_arn.clone(),
            task_definition: d.task_definition.clone(),
            launch_type: d.launch_type.clone(),
            capacity_provider_strategy: d.capacity_provider_strategy.clone(),
            platform_version: service.platform_version.clone(),
            platform_family: service.platform_family.clone(),
            load_balancers: service.load_balancers.clone(),
            service_registries: service.service_registries.clone(),
            network_configuration: d
                .network_configuration
                .clone()
                .or_else(|| service.network_configuration.clone()),
            created_at: Some(created),
            ..Default::default()
        },
    }
}

impl Control {
    /// Adds to `txn` the history records of `service` as it is about to be written.
    pub(crate) async fn with_history(
        &self,
        mut txn: Txn,
        cluster: &str,
        service: &Service,
        now: f64,
    ) -> Result<Txn, EcsError> {
        let name = service.service_name.clone().unwrap_or_default();
        let prefix = keys::service_deployments_of(cluster, &name);
        let mut prior = BTreeMap::new();
        for kv in self
            .store
            .range(&prefix, None, None)
            .await
            .map_err(store_error)?
        {
            let r: Record = decode(&kv)?;
            prior.insert(kv.key[prefix.len()..].to_string(), r);
        }
        let make = |kind, id: &str| self.arn(kind, id);
        let arns = Arns {
            make: &make,
            cluster,
            service: &name,
        };
        let (changed, dropped) = sync(service, &arns, &prior, now);
        for (id, rec) in changed {
            txn = txn.put(format!("{prefix}{id}"), encode(&rec)?);
        }
        for id in dropped {
            txn = txn.delete(format!("{prefix}{id}"));
        }
        Ok(txn)
    }

    pub async fn list_service_deployments(
        &self,
        r: ecs::ListServiceDeploymentsRequest,
    ) -> Result<ecs::ListServiceDeploymentsResponse, EcsError> {
        let (cluster_rec, _) = self.active_cluster(r.cluster.as_deref()).await?;
        let cluster = cluster_rec.cluster_name.unwrap_or_default();
        let (service, _) = self
            .service_record(&cluster, r.service.as_deref().unwrap_or_default())
            .await?;
        let name = service.service_name.unwrap_or_default();
        let limit = crate::paging::max_results(r.max_results, 20)?;
        let statuses = r.status.unwrap_or_default();
        for s in &statuses {
            berth_api::error::check_enum("status", s, ecs::enums::SERVICE_DEPLOYMENT_STATUS)?;
        }
        let (after, before) = match &r.created_at {
            Some(c) => (c.after, c.before),
            None => (None, None),
        };
        let mut records = self.history(&cluster, &name).await?;
        records.retain(|rec| {
            let d = &rec.deployment;
            let at = d.created_at.unwrap_or(0.0);
            (statuses.is_empty() || statuses.iter().any(|s| Some(s) == d.status.as_ref()))
                && after.is_none_or(|a| at >= a)
                && before.is_none_or(|b| at <= b)
        });
        // Newest first.
        records.sort_by(|a, b| {
            b.deployment
                .created_at
                .unwrap_or(0.0)
                .total_cmp(&a.deployment.created_at.unwrap_or(0.0))
        });
        let start = match crate::paging::decode_token(r.next_token.as_deref())? {
            Some(t) => t
                .parse::<usize>()
                .map_err(|_| EcsError::invalid("nextToken is not a token this server issued"))?,
            None => 0,
        };
        let page: Vec<ecs::ServiceDeploymentBrief> = records
            .iter()
            .skip(start)
            .take(limit)
            .map(|rec| {
                let d = &rec.deployment;
                ecs::ServiceDeploymentBrief {
                    service_deployment_arn: d.service_deployment_arn.clone(),
                    service_arn: d.service_arn.clone(),
                    cluster_arn: d.cluster_arn.clone(),
                    created_at: d.created_at,
                    started_at: d.started_at,
                    finished_at: d.finished_at,
                    status: d.status.clone(),
                    status_reason: d.status_reason.clone(),
                    target_service_revision_arn: rec.revision.service_revision_arn.clone(),
                }
            })
            .collect();
        let next = (start + limit < records.len())
            .then(|| crate::paging::token_for(&(start + limit).to_string()));
        Ok(ecs::ListServiceDeploymentsResponse {
            service_deployments: Some(page),
            next_token: next,
        })
    }

    pub async fn describe_service_deployments(
        &self,
        r: ecs::DescribeServiceDeploymentsRequest,
    ) -> Result<ecs::DescribeServiceDeploymentsResponse, EcsError> {
        let arns = r.service_deployment_arns.unwrap_or_default();
        check_count("serviceDeploymentArns", arns.len())?;
        let mut found = Vec::new();
        let mut failures = Vec::new();
        for arn in arns {
            match self
                .record_of(&arn, ResourceKind::ServiceDeployment)
                .await?
            {
                Some(rec) => found.push(rec.deployment),
                None => failures.push(missing(arn)),
            }
        }
        Ok(ecs::DescribeServiceDeploymentsResponse {
            service_deployments: Some(found),
            failures: Some(failures),
        })
    }

    pub async fn describe_service_revisions(
        &self,
        r: ecs::DescribeServiceRevisionsRequest,
    ) -> Result<ecs::DescribeServiceRevisionsResponse, EcsError> {
        let arns = r.service_revision_arns.unwrap_or_default();
        check_count("serviceRevisionArns", arns.len())?;
        let mut found = Vec::new();
        let mut failures = Vec::new();
        for arn in arns {
            match self.record_of(&arn, ResourceKind::ServiceRevision).await? {
                Some(rec) => found.push(rec.revision),
                None => failures.push(missing(arn)),
            }
        }
        Ok(ecs::DescribeServiceRevisionsResponse {
            service_revisions: Some(found),
            failures: Some(failures),
        })
    }

    /// Stops a deployment that is still rolling out by rolling the service back to the
    /// revision it replaced (the `ROLLBACK` stop type, ECS's default).
    pub async fn stop_service_deployment(
        &self,
        r: ecs::StopServiceDeploymentRequest,
    ) -> Result<ecs::StopServiceDeploymentResponse, EcsError> {
        let arn = r.service_deployment_arn.unwrap_or_default();
        let stop_type = r.stop_type.unwrap_or_else(|| "ROLLBACK".into());
        berth_api::error::check_enum(
            "stopType",
            &stop_type,
            ecs::enums::STOP_SERVICE_DEPLOYMENT_STOP_TYPE,
        )?;
        if stop_type != "ROLLBACK" {
            return Err(EcsError::invalid(format!(
                "stopType {stop_type} is not supported by Berth: its deployments have no lifecycle hooks to abort; use ROLLBACK"
            )));
        }
        let not_found = || {
            EcsError::new(
                ErrorKind::ServiceDeploymentNotFound,
                format!("The service deployment {arn} does not exist."),
            )
        };
        let (cluster, service, id) = self
            .parse_history_arn(&arn, ResourceKind::ServiceDeployment)
            .ok_or_else(not_found)?;
        let now = crate::now_epoch();
        for _ in 0..crate::CAS_ATTEMPTS {
            let (mut s, kv) = self
                .service_record(&cluster, &service)
                .await
                .map_err(|_| not_found())?;
            let history = self.history(&cluster, &service).await?;
            let rec = history
                .iter()
                .find(|rec| rec.deployment.service_deployment_arn.as_deref() == Some(arn.as_str()))
                .ok_or_else(not_found)?;
            let deployments = s.deployments.get_or_insert_with(Vec::new);
            let rolling = deployments.first().is_some_and(|p| {
                p.id.as_deref().map(arn_id) == Some(id.as_str())
                    && p.rollout_state.as_deref() == Some("IN_PROGRESS")
            });
            if !rolling {
                return Err(EcsError::new(
                    ErrorKind::Conflict,
                    format!(
                        "The service deployment {arn} is {}: only a deployment in progress can be stopped.",
                        rec.deployment.status.as_deref().unwrap_or("over")
                    ),
                ));
            }
            // Back to the newest deployment that completed before it, as the circuit breaker's
            // rollback goes (its task definition, which is what the breaker restores too).
            let started = rec.deployment.created_at.unwrap_or(0.0);
            let source_rec = history
                .iter()
                .filter(|r| {
                    r.deployment.status.as_deref() == Some("SUCCESSFUL")
                        && r.deployment.created_at.unwrap_or(0.0) < started
                })
                .max_by(|a, b| {
                    a.deployment
                        .created_at
                        .unwrap_or(0.0)
                        .total_cmp(&b.deployment.created_at.unwrap_or(0.0))
                })
                .ok_or_else(|| {
                    EcsError::invalid(format!(
                        "The service deployment {arn} has no earlier successful deployment to roll back to."
                    ))
                })?;
            let source_id = source_rec
                .revision
                .service_revision_arn
                .as_deref()
                .and_then(|a| a.rsplit('/').next())
                .unwrap_or_default()
                .to_string();
            let td = source_rec
                .revision
                .task_definition
                .clone()
                .unwrap_or_default();
            let desired = s.desired_count.unwrap_or(0);
            let launch_type = s.launch_type.clone().unwrap_or_else(|| "EC2".into());
            let deployments = s.deployments.get_or_insert_with(Vec::new);
            for d in deployments.iter_mut() {
                d.status = Some("ACTIVE".into());
                d.updated_at = Some(now);
            }
            if let Some(p) = deployments.first_mut() {
                p.rollout_state = Some("FAILED".into());
                p.rollout_state_reason = Some(format!(
                    "Service deployment stopped by StopServiceDeployment: rolling back to service revision {source_id}."
                ));
            }
            let strategy = s.capacity_provider_strategy.clone();
            let d = self.new_deployment(&td, desired, &launch_type, strategy.as_deref(), now);
            let deployments = s.deployments.get_or_insert_with(Vec::new);
            deployments.insert(0, d);
            s.task_definition = Some(td);
            let txn = Txn::new().replace(&kv, encode(&s)?);
            let txn = self.with_history(txn, &cluster, &s, now).await?;
            if self.commit(txn).await? {
                return Ok(ecs::StopServiceDeploymentResponse {
                    service_deployment_arn: Some(arn),
                });
            }
        }
        Err(EcsError::server(
            "the service kept changing while the deployment was being stopped; try again",
        ))
    }

    /// Every kept record of a service's deployments.
    async fn history(&self, cluster: &str, service: &str) -> Result<Vec<Record>, EcsError> {
        let prefix = keys::service_deployments_of(cluster, service);
        self.store
            .range(&prefix, None, None)
            .await
            .map_err(store_error)?
            .iter()
            .map(decode)
            .collect()
    }

    /// `(cluster, service, id)` of a deployment's or revision's ARN of this region and account.
    fn parse_history_arn(&self, arn: &str, kind: ResourceKind) -> Option<(String, String, String)> {
        let a = Arn::parse(arn).ok()?;
        if a.kind != kind || a.region != self.config.region || a.account != self.config.account_id {
            return None;
        }
        let mut parts = a.id.splitn(3, '/');
        let (c, s, id) = (parts.next()?, parts.next()?, parts.next()?);
        Some((c.to_string(), s.to_string(), id.to_string()))
    }

    async fn record_of(&self, arn: &str, kind: ResourceKind) -> Result<Option<Record>, EcsError> {
        let Some((cluster, service, id)) = self.parse_history_arn(arn, kind) else {
            return Ok(None);
        };
        let key = format!(
            "{}{}",
            keys::service_deployments_of(&cluster, &service),
            deployment_key(&id)
        );
        Ok(self.get_record::<Record>(&key).await?.map(|(r, _)| r))
    }
}

/// The record key's last segment for an ARN's id: records are keyed by the deployment's id
/// (`ecs-svc/NUMBER`), ARNs end in NUMBER.
fn deployment_key(arn_id: &str) -> String {
    format!("ecs-svc/{arn_id}")
}

fn missing(arn: String) -> ecs::Failure {
    ecs::Failure {
        arn: Some(arn),
        reason: Some("MISSING".into()),
        detail: None,
    }
}

fn check_count(what: &str, n: usize) -> Result<(), EcsError> {
    if n == 0 || n > 20 {
        return Err(EcsError::invalid(format!(
            "{what} must name between 1 and 20 ARNs, not {n}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn make(kind: ResourceKind, id: &str) -> String {
        format!("arn:aws:ecs:us-east-1:000000000000:{}/{id}", kind.as_str())
    }

    fn dep(id: &str, td: &str, status: &str, rollout: &str, at: f64) -> Deployment {
        Deployment {
            id: Some(format!("ecs-svc/{id}")),
            status: Some(status.into()),
            task_definition: Some(td.into()),
            desired_count: Some(2),
            running_count: Some(1),
            rollout_state: Some(rollout.into()),
            created_at: Some(at),
            ..Default::default()
        }
    }

    fn service(deployments: Vec<Deployment>) -> Service {
        Service {
            service_arn: Some("arn:svc".into()),
            service_name: Some("web".into()),
            deployments: Some(deployments),
            ..Default::default()
        }
    }

    /// Runs `sync` and folds its answer into `prior`, as the store would.
    fn step(s: &Service, prior: &mut BTreeMap<String, Record>, now: f64) -> Vec<String> {
        let arns = Arns {
            make: &make,
            cluster: "c",
            service: "web",
        };
        let (changed, dropped) = sync(s, &arns, prior, now);
        let ids = changed.iter().map(|(id, _)| id.clone()).collect();
        for (id, r) in changed {
            prior.insert(id, r);
        }
        for id in dropped {
            prior.remove(&id);
        }
        ids
    }

    fn status(prior: &BTreeMap<String, Record>, id: &str) -> String {
        prior[&format!("ecs-svc/{id}")]
            .deployment
            .status
            .clone()
            .unwrap_or_default()
    }

    #[test]
    fn a_rollout_is_in_progress_then_successful_and_names_what_it_replaced() {
        let mut h = BTreeMap::new();
        step(
            &service(vec![dep("1", "web:1", "PRIMARY", "IN_PROGRESS", 10.0)]),
            &mut h,
            10.0,
        );
        assert_eq!(status(&h, "1"), "IN_PROGRESS");
        let first = &h["ecs-svc/1"];
        assert_eq!(first.deployment.source_service_revisions, Some(vec![]));
        assert_eq!(
            first.revision.service_revision_arn.as_deref(),
            Some("arn:aws:ecs:us-east-1:000000000000:service-revision/c/web/1")
        );
        assert_eq!(
            first.deployment.service_deployment_arn.as_deref(),
            Some("arn:aws:ecs:us-east-1:000000000000:service-deployment/c/web/1")
        );
        step(
            &service(vec![dep("1", "web:1", "PRIMARY", "COMPLETED", 10.0)]),
            &mut h,
            20.0,
        );
        assert_eq!(status(&h, "1"), "SUCCESSFUL");
        assert_eq!(h["ecs-svc/1"].deployment.finished_at, Some(20.0));
        // Nothing changed: nothing written.
        let again = step(
            &service(vec![dep("1", "web:1", "PRIMARY", "COMPLETED", 10.0)]),
            &mut h,
            30.0,
        );
        assert!(again.is_empty(), "{again:?}");

        let s = service(vec![
            dep("2", "web:2", "PRIMARY", "IN_PROGRESS", 40.0),
            dep("1", "web:1", "ACTIVE", "COMPLETED", 10.0),
        ]);
        step(&s, &mut h, 40.0);
        let second = &h["ecs-svc/2"];
        assert_eq!(second.revision.task_definition.as_deref(), Some("web:2"));
        let sources = second
            .deployment
            .source_service_revisions
            .clone()
            .unwrap_or_default();
        assert_eq!(sources.len(), 1);
        assert_eq!(sources[0].arn, h["ecs-svc/1"].revision.service_revision_arn);
        assert_eq!(
            status(&h, "1"),
            "SUCCESSFUL",
            "the replaced one stays successful"
        );
        // Replaced before it completed: stopped.
        let s = service(vec![
            dep("3", "web:3", "PRIMARY", "IN_PROGRESS", 50.0),
            dep("2", "web:2", "ACTIVE", "IN_PROGRESS", 40.0),
        ]);
        step(&s, &mut h, 50.0);
        assert_eq!(status(&h, "2"), "STOPPED");
        assert_eq!(h["ecs-svc/2"].deployment.stopped_at, Some(50.0));
    }

    #[test]
    fn a_failed_deployment_follows_its_rollback() {
        let mut h = BTreeMap::new();
        step(
            &service(vec![dep("1", "web:1", "PRIMARY", "COMPLETED", 1.0)]),
            &mut h,
            1.0,
        );
        step(
            &service(vec![
                dep("2", "web:2", "PRIMARY", "IN_PROGRESS", 2.0),
                dep("1", "web:1", "ACTIVE", "COMPLETED", 1.0),
            ]),
            &mut h,
            2.0,
        );
        // The breaker trips: a rollback deployment of web:1 becomes PRIMARY.
        let mut failed = dep("2", "web:2", "ACTIVE", "FAILED", 2.0);
        failed.rollout_state_reason =
            Some("ECS deployment circuit breaker: tasks failed to start.".into());
        step(
            &service(vec![
                dep("3", "web:1", "PRIMARY", "IN_PROGRESS", 3.0),
                failed.clone(),
            ]),
            &mut h,
            3.0,
        );
        assert_eq!(status(&h, "2"), "ROLLBACK_IN_PROGRESS");
        let rollback = h["ecs-svc/2"]
            .deployment
            .rollback
            .clone()
            .expect("a rollback");
        assert_eq!(
            rollback.service_revision_arn,
            h["ecs-svc/3"].revision.service_revision_arn
        );
        assert_eq!(
            h["ecs-svc/2"].deployment.status_reason.as_deref(),
            Some("ECS deployment circuit breaker: tasks failed to start.")
        );
        // The failed deployment leaves the service; the rollback completes after.
        step(
            &service(vec![dep("3", "web:1", "PRIMARY", "IN_PROGRESS", 3.0)]),
            &mut h,
            4.0,
        );
        assert_eq!(status(&h, "2"), "ROLLBACK_IN_PROGRESS");
        step(
            &service(vec![dep("3", "web:1", "PRIMARY", "COMPLETED", 3.0)]),
            &mut h,
            5.0,
        );
        assert_eq!(status(&h, "2"), "ROLLBACK_SUCCESSFUL");
        assert_eq!(h["ecs-svc/2"].deployment.finished_at, Some(5.0));
        assert_eq!(status(&h, "3"), "SUCCESSFUL");
    }

    #[test]
    fn a_stopped_deployment_stays_stopped() {
        let mut h = BTreeMap::new();
        let mut failed = dep("1", "web:1", "PRIMARY", "FAILED", 1.0);
        failed.rollout_state_reason =
            Some("ECS deployment circuit breaker: tasks failed to start.".into());
        step(&service(vec![failed.clone()]), &mut h, 1.0);
        assert_eq!(status(&h, "1"), "STOPPED", "tripped without a rollback");
        // The user deploys again: the failed one is not a rollback.
        failed.status = Some("ACTIVE".into());
        step(
            &service(vec![
                dep("2", "web:2", "PRIMARY", "IN_PROGRESS", 2.0),
                failed,
            ]),
            &mut h,
            2.0,
        );
        assert_eq!(status(&h, "1"), "STOPPED");
        assert!(h["ecs-svc/1"].deployment.rollback.is_none());
    }

    #[test]
    fn only_the_newest_deployments_are_kept() {
        let mut h = BTreeMap::new();
        for i in 0..(KEPT + 5) {
            let at = i as f64;
            step(
                &service(vec![dep(
                    &i.to_string(),
                    "web:1",
                    "PRIMARY",
                    "COMPLETED",
                    at,
                )]),
                &mut h,
                at,
            );
        }
        assert_eq!(h.len(), KEPT);
        assert!(!h.contains_key("ecs-svc/0") && h.contains_key(&format!("ecs-svc/{}", KEPT + 4)));
    }
}
