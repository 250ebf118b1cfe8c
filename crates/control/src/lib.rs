//! Berth's control plane: ECS's operations over the [`Store`], and the HTTP server that speaks
//! ECS's JSON 1.1 protocol in front of them.
//!
//! Read [`http`] for a request's path (body → SigV4 → [`berth_api::ecs::EcsRequest`] →
//! [`Control::handle`] → JSON), then one file per resource: [`clusters`], [`task_definitions`],
//! [`tags`], [`settings`]. [`keys`] says where each record lives in the store.

pub mod agents;
pub mod apply;
pub mod auth;
pub mod capacity;
pub mod cloudwatch;
pub mod clusters;
pub mod console;
pub mod deployments;
pub mod ec2;
pub mod elb;
pub mod http;
pub mod insights;
pub mod instances;
pub mod keys;
pub mod leader;
pub mod logs;
pub mod metering;
pub mod metrics;
pub mod mirror;
pub mod placement;
pub mod plan;
pub mod presence;
pub mod protection;
pub mod read;
pub mod regions;
pub mod resources;
pub mod server;
pub mod services;
pub mod settings;
pub mod state;
pub mod tags;
pub mod targets;
pub mod task_definitions;
pub mod task_sets;
pub mod tasks;

mod paging;

use berth_api::ecs::EcsRequest;
use berth_api::{EcsError, ErrorKind};
use berth_store::{Store, StoreError, Txn, TxnOutcome};
use serde::{de::DeserializeOwned, Serialize};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What a server is, as its flags say.
#[derive(Debug, Clone)]
pub struct Config {
    pub region: String,
    pub account_id: String,
    /// Accept any well-formed SigV4 credentials and serve `POST /_berth/reset`.
    pub dev: bool,
    /// An instance whose agent has not polled for this long is `agentConnected: false`.
    pub agent_timeout: Duration,
    /// How long a STOPPED task stays describable before it is purged.
    pub task_retention: Duration,
    /// The host addresses `awsvpc` tasks with `assignPublicIp ENABLED` get, one each: the
    /// agent publishes the task's ports on it.
    pub public_ips: berth_model::cidr::Cidr,
    /// On a store several servers share (etcd), the TTL of the leader's lease: a leader that
    /// dies is replaced within about this long.
    pub leader_ttl: Duration,
    /// Whether a placement lets its cluster's lock go while it commits. `None`: when the
    /// store is shared by several servers (etcd), whose commits are replicated and slow enough
    /// (hundreds of milliseconds under load) that readers and agents' polls queued behind them
    /// for seconds. On the embedded store a commit is one local fsync shared by a group, and
    /// holding the lock through it costs readers little while agents' polls gather what
    /// several placements gave them (fewer, larger reports: the scale benchmark placed 1.8x
    /// faster so).
    pub placement_lets_go: Option<bool>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            region: "us-east-1".into(),
            account_id: "000000000000".into(),
            dev: false,
            agent_timeout: Duration::from_secs(60),
            task_retention: Duration::from_secs(3600),
            public_ips: berth_model::cidr::Cidr::parse(DEFAULT_PUBLIC_IPS).expect("a valid block"),
            leader_ttl: Duration::from_secs(5),
            placement_lets_go: None,
        }
    }
}

/// The pool of Fargate capacity: agents started with `--capacity fargate` join this cluster
/// (a name no user cluster can have), which ListClusters does not show. Its instances run the
/// FARGATE tasks of every cluster; the tasks themselves live in their own clusters.
pub const FARGATE_POOL: &str = "~fargate";

/// The container-instance attribute that makes an instance Fargate capacity (value `FARGATE`).
pub const CAPACITY_ATTRIBUTE: &str = "berth.capacity";

/// The container-instance attribute naming the Auto Scaling group an instance belongs to
/// (`berth agent --auto-scaling-group NAME`): the capacity provider whose
/// `autoScalingGroupArn` names that group places its tasks on those instances.
pub const AUTO_SCALING_GROUP_ATTRIBUTE: &str = "berth.auto-scaling-group";

/// The platform version Berth's Fargate runs, what `LATEST` means.
pub const FARGATE_PLATFORM_VERSION: &str = "1.4.0";

/// Where public addresses come from unless the operator says otherwise: loopback addresses,
/// every one of which is this host's own.
pub const DEFAULT_PUBLIC_IPS: &str = "127.100.0.0/16";

/// The authenticated caller of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub access_key: String,
    /// The IAM-style ARN of the caller, as ECS reports it in `registeredBy` and `principalArn`.
    pub principal_arn: String,
    /// For an agent: the container instance it speaks for.
    pub instance: Option<String>,
}

/// The ECS handlers. Cheap to clone; all state is in the store.
#[derive(Debug, Clone)]
pub struct Control {
    /// This region's records: a view of [`Control::root`] under `regions/REGION/`.
    pub store: Arc<dyn Store>,
    /// The whole store: users' access keys live at its root, shared by every region.
    pub root: Arc<dyn Store>,
    pub config: Arc<Config>,
    /// Which agents are connected (in memory: every poll is a heartbeat).
    pub agents: Arc<presence::Presence>,
    /// The cluster state placement, polls and the service reconciler read, kept current by
    /// the store's watch ([`Control::run_state`] applies it).
    pub state: Arc<state::State>,
    /// One service reconciliation pass at a time in this process.
    pub(crate) reconciling: Arc<tokio::sync::Mutex<()>>,
    /// The image registry whose ECR API this server also answers, if it runs one.
    pub registry: Option<berth_registry::Registry>,
    /// CloudWatch Logs' events; `None` for a server started without a log store.
    pub logs: Option<Arc<berth_logs::LogStore>>,
    /// CloudWatch's metrics (PutMetricData, Container Insights); `None` for a server started
    /// without a metric store.
    pub cloudwatch: Option<Arc<berth_cloudwatch::MetricStore>>,
    /// The latest resource-use sample of each running task, from its agent.
    pub usage: Arc<insights::Usage>,
    /// Prometheus figures (`GET /metrics`).
    pub metrics: Arc<metrics::Metrics>,
    /// The load balancers' data plane; `None` for a server without one (ELB's API still
    /// answers, and nothing listens).
    pub elb: Option<berth_elb::Proxy>,
    /// One ELB write at a time in this process.
    pub(crate) elb_lock: Arc<tokio::sync::Mutex<()>>,
    /// One EC2 (VPC) write or address allocation at a time in this process.
    pub(crate) ec2_lock: Arc<tokio::sync::Mutex<()>>,
    /// One rebuild of the data plane's configuration at a time, so an older one never lands
    /// after a newer one.
    pub(crate) elb_sync: Arc<tokio::sync::Mutex<()>>,
    /// The plans agents were last handed, per instance and task.
    pub(crate) plans: Arc<agents::PlanCache>,
    /// Task definitions agents' plans were built from, by ARN.
    pub(crate) plan_definitions: Arc<read::DefinitionCache>,
    /// Whether this server runs the reconcilers and housekeeping (see [`leader`]).
    pub leadership: leader::Leadership,
    /// Access keys and task definitions in memory, kept current by the store's watch.
    pub mirrors: mirror::Mirrors,
}

/// The container-instance attribute that holds the address its agent advertises: where
/// load balancers send an `instance` target's traffic.
pub const ADDRESS_ATTRIBUTE: &str = "berth.address";

/// How many times a read-modify-write is retried when another writer got there first.
const CAS_ATTEMPTS: usize = 64;

impl Control {
    /// The handlers over `store`. Their cluster state is empty until loaded and followed:
    /// start a server with [`server::Server::start`], which does both.
    pub(crate) fn new(root: Arc<dyn Store>, config: Config) -> Self {
        let agents = Arc::new(presence::Presence::new(config.agent_timeout));
        let mirrors = mirror::Mirrors::default();
        Control {
            store: Arc::new(berth_store::Prefixed::new(
                root.clone(),
                keys::region_prefix(&config.region),
            )),
            root,
            state: Arc::new(
                state::State::new(agents.clone())
                    .mirroring(mirrors.regional().into_iter().cloned().collect()),
            ),
            agents,
            reconciling: Arc::new(tokio::sync::Mutex::new(())),
            config: Arc::new(config),
            registry: None,
            logs: None,
            cloudwatch: None,
            usage: Arc::default(),
            metrics: Arc::default(),
            plan_definitions: Arc::default(),
            plans: Arc::default(),
            elb: None,
            elb_lock: Arc::default(),
            ec2_lock: Arc::default(),
            elb_sync: Arc::default(),
            leadership: leader::Leadership::sole(),
            mirrors,
        }
    }

    /// Adds the image registry on `blobs`: its ECR API is then served beside ECS, with the
    /// same access keys.
    pub(crate) fn with_registry(
        mut self,
        blobs: Arc<dyn berth_registry::BlobStore>,
        config: berth_registry::Config,
    ) -> Self {
        let keys = Arc::new(auth::StoreKeys {
            root: self.root.clone(),
            store: self.store.clone(),
            mirrors: self.mirrors.clone(),
        });
        self.registry = Some(berth_registry::Registry::new(
            self.store.clone(),
            blobs,
            keys,
            config,
        ));
        self
    }

    /// Runs one ECS operation; the answer is the operation's output shape as JSON.
    pub async fn handle(&self, caller: &Caller, req: EcsRequest) -> Result<Vec<u8>, EcsError> {
        if let Some(instance) = &caller.instance {
            return Err(EcsError::new(
                ErrorKind::AccessDenied,
                format!("the key of the agent of {instance} may only speak the agent protocol"),
            ));
        }
        match req {
            EcsRequest::CreateCluster(r) => json(self.create_cluster(caller, r).await?),
            EcsRequest::DescribeClusters(r) => json(self.describe_clusters(r).await?),
            EcsRequest::ListClusters(r) => json(self.list_clusters(r).await?),
            EcsRequest::UpdateCluster(r) => json(self.update_cluster(r).await?),
            EcsRequest::CreateCapacityProvider(r) => json(self.create_capacity_provider(r).await?),
            EcsRequest::UpdateCapacityProvider(r) => json(self.update_capacity_provider(r).await?),
            EcsRequest::DeleteCapacityProvider(r) => json(self.delete_capacity_provider(r).await?),
            EcsRequest::DescribeCapacityProviders(r) => {
                json(self.describe_capacity_providers(r).await?)
            }
            EcsRequest::PutClusterCapacityProviders(r) => {
                json(self.put_cluster_capacity_providers(r).await?)
            }
            EcsRequest::UpdateClusterSettings(r) => json(self.update_cluster_settings(r).await?),
            EcsRequest::DeleteCluster(r) => json(self.delete_cluster(r).await?),
            EcsRequest::RegisterTaskDefinition(r) => {
                json(self.register_task_definition(caller, r).await?)
            }
            EcsRequest::DescribeTaskDefinition(r) => json(self.describe_task_definition(r).await?),
            EcsRequest::ListTaskDefinitions(r) => json(self.list_task_definitions(r).await?),
            EcsRequest::ListTaskDefinitionFamilies(r) => {
                json(self.list_task_definition_families(r).await?)
            }
            EcsRequest::DeregisterTaskDefinition(r) => {
                json(self.deregister_task_definition(r).await?)
            }
            EcsRequest::DeleteTaskDefinitions(r) => json(self.delete_task_definitions(r).await?),
            EcsRequest::TagResource(r) => json(self.tag_resource(r).await?),
            EcsRequest::UntagResource(r) => json(self.untag_resource(r).await?),
            EcsRequest::ListTagsForResource(r) => json(self.list_tags_for_resource(r).await?),
            EcsRequest::PutAccountSetting(r) => json(self.put_account_setting(caller, r).await?),
            EcsRequest::PutAccountSettingDefault(r) => {
                json(self.put_account_setting_default(r).await?)
            }
            EcsRequest::DeleteAccountSetting(r) => {
                json(self.delete_account_setting(caller, r).await?)
            }
            EcsRequest::ListAccountSettings(r) => {
                json(self.list_account_settings(caller, r).await?)
            }
            EcsRequest::RegisterContainerInstance(r) => {
                json(self.register_container_instance(r).await?)
            }
            EcsRequest::DeregisterContainerInstance(r) => {
                json(self.deregister_container_instance(r).await?)
            }
            EcsRequest::DescribeContainerInstances(r) => {
                json(self.describe_container_instances(r).await?)
            }
            EcsRequest::ListContainerInstances(r) => json(self.list_container_instances(r).await?),
            EcsRequest::UpdateContainerInstancesState(r) => {
                json(self.update_container_instances_state(r).await?)
            }
            EcsRequest::PutAttributes(r) => json(self.put_attributes(r).await?),
            EcsRequest::DeleteAttributes(r) => json(self.delete_attributes(r).await?),
            EcsRequest::ListAttributes(r) => json(self.list_attributes(r).await?),
            EcsRequest::RunTask(r) => json(self.run_task(r).await?),
            EcsRequest::StartTask(r) => json(self.start_task(r).await?),
            EcsRequest::StopTask(r) => json(self.stop_task(r).await?),
            EcsRequest::DescribeTasks(r) => json(self.describe_tasks(r).await?),
            EcsRequest::ListTasks(r) => json(self.list_tasks(r).await?),
            EcsRequest::UpdateTaskProtection(r) => json(self.update_task_protection(r).await?),
            EcsRequest::GetTaskProtection(r) => json(self.get_task_protection(r).await?),
            EcsRequest::CreateService(r) => json(self.create_service(caller, r).await?),
            EcsRequest::UpdateService(r) => json(self.update_service(r).await?),
            EcsRequest::DeleteService(r) => json(self.delete_service(r).await?),
            EcsRequest::DescribeServices(r) => json(self.describe_services(r).await?),
            EcsRequest::ListServices(r) => json(self.list_services(r).await?),
            EcsRequest::ListServiceDeployments(r) => json(self.list_service_deployments(r).await?),
            EcsRequest::DescribeServiceDeployments(r) => {
                json(self.describe_service_deployments(r).await?)
            }
            EcsRequest::DescribeServiceRevisions(r) => {
                json(self.describe_service_revisions(r).await?)
            }
            EcsRequest::StopServiceDeployment(r) => json(self.stop_service_deployment(r).await?),
            EcsRequest::CreateTaskSet(r) => json(self.create_task_set(r).await?),
            EcsRequest::DescribeTaskSets(r) => json(self.describe_task_sets(r).await?),
            EcsRequest::UpdateTaskSet(r) => json(self.update_task_set(r).await?),
            EcsRequest::DeleteTaskSet(r) => json(self.delete_task_set(r).await?),
            EcsRequest::UpdateServicePrimaryTaskSet(r) => {
                json(self.update_service_primary_task_set(r).await?)
            }
        }
    }

    /// Wipes every piece of this region's state (part of dev mode's reset, see
    /// [`regions::Regions::reset`]): its records (ECS's, the registry's, join tokens and
    /// agents' keys), the registry's blobs, logs and metrics. Returns how many records and
    /// blobs went.
    pub async fn reset(&self) -> Result<usize, EcsError> {
        let mut n = self.store.delete_prefix("").await.map_err(store_error)?;
        if let Some(registry) = &self.registry {
            n += registry
                .reset()
                .await
                .map_err(|e| EcsError::server(format!("resetting the registry failed: {e}")))?;
        }
        self.plans.clear();
        self.plan_definitions.clear();
        for m in self.mirrors.regional() {
            m.reload(&*self.store).await.map_err(store_error)?;
        }
        // Listeners of load balancers that no longer exist stop listening.
        self.sync_elb().await;
        if let Some(logs) = self.logs.clone() {
            tokio::task::spawn_blocking(move || logs.clear())
                .await
                .map_err(|e| EcsError::server(format!("the log store task failed: {e}")))?
                .map_err(|e| EcsError::server(format!("clearing the logs failed: {e}")))?;
        }
        if let Some(metrics) = self.cloudwatch.clone() {
            tokio::task::spawn_blocking(move || metrics.clear())
                .await
                .map_err(|e| EcsError::server(format!("the metric store task failed: {e}")))?
                .map_err(|e| EcsError::server(format!("clearing the metrics failed: {e}")))?;
        }
        self.usage.clear();
        Ok(n)
    }

    pub(crate) async fn get_record<T: DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<(T, berth_store::KeyValue)>, EcsError> {
        match self.store.get(key).await.map_err(store_error)? {
            Some(kv) => Ok(Some((decode(&kv)?, kv))),
            None => Ok(None),
        }
    }

    /// Loads the cluster state from the store, then keeps it current until `stop` says so.
    /// Nothing that places or polls works before the load; [`crate::server::Server`] starts it
    /// before it serves.
    /// `GET /metrics`: the counters, and what the state and store say now.
    /// This region's figures for Prometheus (the server sums them over its regions).
    pub async fn metrics_snapshot(&self) -> metrics::Snapshot {
        let mut now = metrics::Snapshot {
            agents_connected: self.agents.connected() as i64,
            store_revision: self.store.revision().await.unwrap_or(0) as i64,
            ..Default::default()
        };
        for name in self.state.cluster_names() {
            let (_, running, pending) = self.state.cluster(&name).await.counts();
            now.running += running as i64;
            now.pending += pending as i64;
        }
        now
    }

    pub async fn load_state(&self) -> Result<berth_store::Revision, EcsError> {
        self.state.load(&*self.store).await.map_err(store_error)
    }

    /// Follows the store from `from` (what [`Control::load_state`] returned) until `stop`.
    pub async fn run_state(
        &self,
        from: berth_store::Revision,
        stop: tokio::sync::watch::Receiver<bool>,
    ) {
        self.state.follow(self.store.clone(), from, stop).await
    }

    /// Waits until the cluster state has applied every write acknowledged so far, so what a
    /// caller reads from it next includes its own writes.
    pub async fn caught_up(&self) -> Result<(), EcsError> {
        let rev = self.store.revision().await.map_err(store_error)?;
        if self.state.wait_applied(rev).await {
            Ok(())
        } else {
            Err(EcsError::server(format!(
                "the cluster state is behind the store (at {}, store at {rev})",
                self.state.applied()
            )))
        }
    }

    /// Commits `txn`, mapping a conflict to `Ok(false)` for the caller's retry loop. What it
    /// writes of the mirrored records is written through to the mirrors.
    pub(crate) async fn commit(&self, txn: Txn) -> Result<bool, EcsError> {
        let mirrored = |key: &str| {
            self.mirrors
                .regional()
                .iter()
                .any(|m| key.starts_with(m.prefix()))
        };
        let through: Vec<berth_store::Op> = txn
            .ops
            .iter()
            .filter(|op| match op {
                berth_store::Op::Put { key, .. } | berth_store::Op::Delete { key } => mirrored(key),
            })
            .cloned()
            .collect();
        match self.store.txn(txn).await.map_err(store_error)? {
            TxnOutcome::Committed(revision) => {
                if !through.is_empty() {
                    for m in self.mirrors.regional() {
                        m.wrote(revision, &through);
                    }
                }
                Ok(true)
            }
            TxnOutcome::Conflict => Ok(false),
        }
    }

    /// Starts following the users' keys' mirror (once; the region's follow the cluster
    /// state's watch).
    pub fn start_mirrors(&self, stop: &tokio::sync::watch::Receiver<bool>) {
        self.mirrors.users.start(self.root.clone(), stop.clone());
    }

    pub(crate) fn arn(&self, kind: berth_model::arn::ResourceKind, id: &str) -> String {
        berth_model::arn::Arn::new(&self.config.region, &self.config.account_id, kind, id)
            .to_string()
    }
}

/// The runtime the crate's property tests run each case on: two workers, as CI has cores.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) fn test_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Tags as ECS limits them (count, key and value length and characters).
pub(crate) fn check_tags(tags: &[berth_api::ecs::Tag]) -> Result<(), EcsError> {
    berth_model::tags::check_count(tags.len())?;
    for t in tags {
        berth_model::tags::check_tag(
            t.key.as_deref().unwrap_or(""),
            t.value.as_deref().unwrap_or(""),
        )?;
    }
    Ok(())
}

/// A resource's tags count against ECS's limit of 50 except those ECS itself adds (`aws:`).
pub(crate) fn check_tag_count(tags: &[berth_api::ecs::Tag]) -> Result<(), EcsError> {
    let users = tags
        .iter()
        .filter(|t| {
            !t.key
                .as_deref()
                .unwrap_or_default()
                .to_ascii_lowercase()
                .starts_with("aws:")
        })
        .count();
    berth_model::tags::check_count(users)?;
    Ok(())
}

pub(crate) fn json<T: Serialize>(value: T) -> Result<Vec<u8>, EcsError> {
    serde_json::to_vec(&value).map_err(|e| EcsError::server(format!("encoding the response: {e}")))
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, EcsError> {
    serde_json::to_vec(value).map_err(|e| EcsError::server(format!("encoding a record: {e}")))
}

pub(crate) fn decode<T: DeserializeOwned>(kv: &berth_store::KeyValue) -> Result<T, EcsError> {
    serde_json::from_slice(&kv.value)
        .map_err(|e| EcsError::server(format!("stored record {} is unreadable: {e}", kv.key)))
}

pub(crate) fn store_error(e: StoreError) -> EcsError {
    tracing::error!(error = %e, "store failure");
    EcsError::server(format!("the state store failed: {e}"))
}

pub(crate) fn conflict_exhausted(what: &str) -> EcsError {
    EcsError::new(
        ErrorKind::Server,
        format!("{what}: too many concurrent changes, try again"),
    )
}

/// Seconds since the epoch with millisecond precision, as ECS's timestamps are.
pub(crate) fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub(crate) fn now_epoch() -> f64 {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    (d.as_millis() as f64) / 1000.0
}
