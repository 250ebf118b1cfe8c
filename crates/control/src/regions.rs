//! Every region one server serves. A region is a [`Control`] of its own: its records under
//! `regions/NAME/` in the one store (a [`berth_store::Prefixed`] view), its cluster state,
//! agents, log and metric stores, registry (blobs and `/v2/` listener) and load balancers'
//! data plane, and its own background loops. A request's region is its signature's; a region
//! starts at the first authenticated request for it, or when the server starts if the store
//! holds records of it. Access keys are the one thing every region shares (`auth/` at the
//! store's root); agents' keys belong to their instance's region.

use crate::server::{self, stopped};
use crate::{keys, store_error, Config, Control};
use berth_api::{EcsError, ErrorKind};
use berth_store::{Store, Txn};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The regions of AWS's commercial partition (`aws`): what a server serves unless the operator
/// names its own set (`--regions`).
pub const AWS_REGIONS: &[&str] = &[
    "af-south-1",
    "ap-east-1",
    "ap-east-2",
    "ap-northeast-1",
    "ap-northeast-2",
    "ap-northeast-3",
    "ap-south-1",
    "ap-south-2",
    "ap-southeast-1",
    "ap-southeast-2",
    "ap-southeast-3",
    "ap-southeast-4",
    "ap-southeast-5",
    "ap-southeast-6",
    "ap-southeast-7",
    "ca-central-1",
    "ca-west-1",
    "eu-central-1",
    "eu-central-2",
    "eu-north-1",
    "eu-south-1",
    "eu-south-2",
    "eu-west-1",
    "eu-west-2",
    "eu-west-3",
    "il-central-1",
    "me-central-1",
    "me-south-1",
    "mx-central-1",
    "sa-east-1",
    "us-east-1",
    "us-east-2",
    "us-west-1",
    "us-west-2",
];

/// Whether `name` has a region's shape: `xx-name-N` (`eu-west-1`, `ap-southeast-7`).
pub fn well_formed(name: &str) -> bool {
    let parts: Vec<&str> = name.split('-').collect();
    parts.len() >= 3
        && parts[0].len() == 2
        && parts[..parts.len() - 1]
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
        && parts[parts.len() - 1]
            .parse::<u8>()
            .is_ok_and(|n| n > 0 && !parts[parts.len() - 1].starts_with('0'))
}

/// The regions a server serves; the home region (`--region`) is always one of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Served {
    /// [`AWS_REGIONS`] and the home region.
    Aws,
    /// Only these (`--regions`).
    Only(Vec<String>),
}

/// Where each region's own stores live on disk: `logs/REGION`, `metrics/REGION` and
/// `blobs/REGION` under `dir`.
#[derive(Debug)]
pub struct Storage {
    pub dir: PathBuf,
    /// Where every region's registry blobs live (`REGION/` under it), when not under `dir`:
    /// a directory several servers on one store all reach.
    pub blobs_dir: Option<PathBuf>,
    /// The key every region's blobs are sealed with.
    pub blob_key: berth_registry::seal::Key,
    /// What every region's registry is; its region and endpoint are set per region.
    pub registry: berth_registry::Config,
    /// The home region's `/v2/` listener. Other regions' bind on its address, each at the
    /// port it had before if that is free (repository URIs keep working across restarts).
    pub registry_listener: TcpListener,
}

impl std::fmt::Debug for Regions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Regions")
            .field("home", &self.home)
            .field("started", &self.names())
            .finish()
    }
}

/// Every region's [`Control`], started on demand. Cheap to share (`Arc`).
pub struct Regions {
    root: Arc<dyn Store>,
    home: String,
    served: Served,
    options: RegionOptions,
    /// The home region's registry listener until the home region takes it.
    home_registry: Mutex<Option<TcpListener>>,
    storage: Option<StorageTemplate>,
    started: std::sync::RwLock<BTreeMap<String, Region>>,
    /// One region starts at a time.
    starting: tokio::sync::Mutex<()>,
    /// `Some` once services are reconciled on an interval (every region then runs the loop).
    service_interval: Mutex<Option<Duration>>,
    stop: watch::Receiver<bool>,
    background: Mutex<Vec<JoinHandle<()>>>,
    metrics: Arc<crate::metrics::Metrics>,
    /// This set itself, for the registries' replication to reach the other regions.
    me: std::sync::OnceLock<std::sync::Weak<Regions>>,
    /// Users' access keys in memory, shared by every region's handlers.
    users: Arc<crate::mirror::Mirror>,
}

/// A region's registry's way to the other regions' registries (ECR replication).
#[derive(Debug)]
struct Peers {
    regions: std::sync::Weak<Regions>,
}

#[async_trait::async_trait]
impl berth_registry::replication::Peers for Peers {
    fn serves(&self, region: &str) -> bool {
        self.regions
            .upgrade()
            .is_some_and(|r| r.check(region).is_ok())
    }

    fn spawn(&self, work: futures::future::BoxFuture<'static, ()>) {
        match self.regions.upgrade() {
            Some(r) => r.spawn_work(work),
            None => tracing::warn!("the server is stopping: a replication is dropped"),
        }
    }

    async fn registry(
        &self,
        region: &str,
    ) -> Result<berth_registry::Registry, berth_registry::Error> {
        let gone = || berth_registry::Error::Internal("the server is stopping".into());
        let regions = self.regions.upgrade().ok_or_else(gone)?;
        let control = regions
            .get(region)
            .await
            .map_err(berth_registry::Error::Ecr)?;
        control.registry.clone().ok_or_else(|| {
            berth_registry::Error::Internal(format!("region {region} runs no registry"))
        })
    }
}

#[derive(Debug, Clone)]
struct Region {
    control: Control,
    registry_addr: Option<SocketAddr>,
}

#[derive(Debug)]
struct StorageTemplate {
    dir: PathBuf,
    /// Every region's blobs, `REGION/` under it.
    blobs: PathBuf,
    blob_key: berth_registry::seal::Key,
    registry: berth_registry::Config,
    registry_ip: std::net::IpAddr,
}

/// What every region is started with (from [`server::Options`]).
#[derive(Debug, Clone)]
pub(crate) struct RegionOptions {
    pub config: Config,
    pub housekeeping_interval: Duration,
    pub insights_interval: Duration,
    pub elb: Option<berth_elb::Options>,
    pub spot_interruption_rate: f64,
    /// Whether this server leads (runs the loops that change state on their own).
    pub leadership: crate::leader::Leadership,
}

/// Where the registry of a region other than the home one last listened.
const REGISTRY_PORT: &str = "registry-port";

impl Regions {
    pub(crate) fn new(
        root: Arc<dyn Store>,
        served: Served,
        options: RegionOptions,
        storage: Option<Storage>,
        stop: watch::Receiver<bool>,
    ) -> Result<Regions, EcsError> {
        let (home_registry, storage) = match storage {
            Some(s) => {
                let ip = s
                    .registry_listener
                    .local_addr()
                    .map_err(|e| EcsError::server(format!("the registry listener: {e}")))?
                    .ip();
                (
                    Some(s.registry_listener),
                    Some(StorageTemplate {
                        blobs: s.blobs_dir.unwrap_or_else(|| s.dir.join("blobs")),
                        dir: s.dir,
                        blob_key: s.blob_key,
                        registry: s.registry,
                        registry_ip: ip,
                    }),
                )
            }
            None => (None, None),
        };
        Ok(Regions {
            root,
            home: options.config.region.clone(),
            served,
            options,
            home_registry: Mutex::new(home_registry),
            storage,
            started: Default::default(),
            starting: Default::default(),
            service_interval: Mutex::new(None),
            stop,
            background: Mutex::new(Vec::new()),
            metrics: Arc::default(),
            me: std::sync::OnceLock::new(),
            users: Arc::new(crate::mirror::Mirror::new(keys::ACCESS_KEYS)),
        })
    }

    /// Lets the regions' registries reach each other; before any region starts.
    pub(crate) fn link(self: &Arc<Self>) {
        let _ = self.me.set(Arc::downgrade(self));
    }

    pub fn home_name(&self) -> &str {
        &self.home
    }

    /// Prometheus' counters, shared by every region.
    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.metrics
    }

    pub fn dev(&self) -> bool {
        self.options.config.dev
    }

    /// The regions started so far.
    pub fn names(&self) -> Vec<String> {
        read(&self.started).keys().cloned().collect()
    }

    /// The home region's handlers (started by [`server::Server::start`]).
    pub fn home(&self) -> Control {
        self.started(&self.home)
            .expect("the home region starts with the server")
    }

    /// A region's handlers if it has started.
    pub fn started(&self, region: &str) -> Option<Control> {
        read(&self.started).get(region).map(|r| r.control.clone())
    }

    /// Where a started region's registry listens.
    pub fn registry_addr(&self, region: &str) -> Option<SocketAddr> {
        read(&self.started)
            .get(region)
            .and_then(|r| r.registry_addr)
    }

    /// Whether this server serves `region`; the error is SigV4's, as AWS words it.
    pub fn check(&self, region: &str) -> Result<(), EcsError> {
        let served = region == self.home
            || match &self.served {
                Served::Aws => AWS_REGIONS.contains(&region),
                Served::Only(list) => list.iter().any(|r| r == region),
            };
        if served {
            return Ok(());
        }
        Err(EcsError::new(
            ErrorKind::InvalidSignature,
            format!(
                "Credential should be scoped to a valid region, not '{region}'. This server serves {}.",
                match &self.served {
                    Served::Aws => format!("AWS's regions (home: '{}')", self.home),
                    Served::Only(list) => {
                        let mut all: Vec<&str> = list.iter().map(String::as_str).collect();
                        if !all.contains(&self.home.as_str()) {
                            all.insert(0, &self.home);
                        }
                        format!("'{}'", all.join("', '"))
                    }
                }
            ),
        ))
    }

    /// A served region's handlers, started now if they were not.
    pub async fn get(&self, region: &str) -> Result<Control, EcsError> {
        if let Some(c) = self.started(region) {
            return Ok(c);
        }
        self.check(region)?;
        if *self.stop.borrow() {
            return Err(EcsError::new(
                ErrorKind::ServiceUnavailable,
                format!("the server is stopping; region {region} is not started"),
            ));
        }
        // On a task of its own, so a caller that goes away (a client hanging up) never
        // leaves a region half started.
        let Some(me) = self.me.get().and_then(std::sync::Weak::upgrade) else {
            return Err(EcsError::server("the regions are not linked"));
        };
        let region = region.to_string();
        tokio::spawn(async move {
            let _one = me.starting.lock().await;
            if let Some(c) = me.started(&region) {
                return Ok(c);
            }
            me.start(&region).await
        })
        .await
        .map_err(|e| EcsError::server(format!("starting a region failed: {e}")))?
    }

    /// Starts the home region and every served region the store holds records of; moves a
    /// store from before regions (records at its root) under the home region first.
    pub(crate) async fn start_all(&self) -> Result<Control, EcsError> {
        self.adopt_unregioned().await?;
        let _one = self.starting.lock().await;
        let home = self.start(&self.home.clone()).await?;
        for name in self.regions_in_store().await? {
            if name == self.home {
                continue;
            }
            match self.check(&name) {
                Ok(()) => {
                    self.start(&name).await?;
                }
                Err(_) => tracing::warn!(
                    region = name,
                    "the store holds records of a region this server does not serve; they stay untouched"
                ),
            }
        }
        Ok(home)
    }

    /// The regions with records: one short range read per region.
    async fn regions_in_store(&self) -> Result<Vec<String>, EcsError> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        for _ in 0..1024 {
            let next = self
                .root
                .range(keys::REGIONS, after.as_deref(), Some(1))
                .await
                .map_err(store_error)?;
            let Some(kv) = next.into_iter().next() else {
                break;
            };
            let Some(name) = kv.key[keys::REGIONS.len()..].split('/').next() else {
                break;
            };
            out.push(name.to_string());
            // Every key of this region sorts before `regions/NAME0` ('0' follows '/').
            after = Some(format!("{}{name}0", keys::REGIONS));
        }
        Ok(out)
    }

    /// Records at the store's root other than access keys were written before regions
    /// existed: they are the home region's, and move under its prefix (in batches; a
    /// restart part way through moves the rest).
    async fn adopt_unregioned(&self) -> Result<(), EcsError> {
        // Page through the root, stepping over every region's records at once.
        let mut legacy = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = self
                .root
                .range("", after.as_deref(), Some(512))
                .await
                .map_err(store_error)?;
            let Some(last) = page.last().map(|kv| kv.key.clone()) else {
                break;
            };
            after = Some(last);
            for kv in page {
                if kv.key.starts_with(keys::REGIONS) {
                    // Every key under `regions/` sorts before `regions0` ('0' follows '/').
                    after = Some(format!("{}0", keys::REGIONS.trim_end_matches('/')));
                    break;
                }
                let moves = match kv.key.strip_prefix(keys::ACCESS_KEYS) {
                    // A user's key is every region's; an agent's is its instance's region's.
                    Some(_) => serde_json::from_slice::<crate::auth::AccessKey>(&kv.value)
                        .is_ok_and(|k| k.instance.is_some()),
                    // The admin key and the leader's key are the whole server's.
                    None => kv.key != keys::ADMIN_KEY && kv.key != crate::leader::LEADER_KEY,
                };
                if moves {
                    legacy.push(kv);
                }
            }
        }
        if let Some(s) = &self.storage {
            // The blobs of a data dir from before regions are the home region's. Moved first
            // and whenever they are still there, so a stop part way through never leaves the
            // records moved and their blobs behind.
            let (old, new) = (s.dir.join("registry"), s.blobs.join(&self.home));
            if old.is_dir() && !new.exists() {
                std::fs::create_dir_all(&s.blobs)
                    .and_then(|()| std::fs::rename(&old, &new))
                    .map_err(|e| {
                        EcsError::server(format!(
                            "moving {} to {}: {e}",
                            old.display(),
                            new.display()
                        ))
                    })?;
            }
        }
        if legacy.is_empty() {
            return Ok(());
        }
        tracing::info!(
            records = legacy.len(),
            region = self.home,
            "moving records from before regions under the home region"
        );
        let prefix = keys::region_prefix(&self.home);
        for chunk in legacy.chunks(256) {
            let mut txn = Txn::new();
            for kv in chunk {
                txn = txn
                    .unchanged(&kv.key, Some(kv))
                    .put(format!("{prefix}{}", kv.key), kv.value.clone())
                    .delete(kv.key.clone());
            }
            // Nothing else writes before the regions start: a conflict means another server
            // is using this store.
            if self.root.txn(txn).await.map_err(store_error)? == berth_store::TxnOutcome::Conflict {
                return Err(EcsError::server(
                    "moving records from before regions: the store changed underneath (is another server using it?)",
                ));
            }
        }
        Ok(())
    }

    /// Builds and starts one region: its stores, its state loaded and followed, its loops.
    async fn start(&self, region: &str) -> Result<Control, EcsError> {
        let o = &self.options;
        let config = Config {
            region: region.to_string(),
            ..o.config.clone()
        };
        let mut control = Control::new(self.root.clone(), config);
        control.leadership = o.leadership.clone();
        control.mirrors.users = self.users.clone();
        control.metrics = self.metrics.clone();
        let mut registry_listener = None;
        let mut registry_addr = None;
        if let Some(s) = &self.storage {
            let fail = |what: &str, e: String| {
                EcsError::server(format!("starting region {region}: {what}: {e}"))
            };
            let logs = berth_logs::LogStore::open(s.dir.join("logs").join(region))
                .map_err(|e| fail("the log store", e.to_string()))?;
            let metrics = berth_cloudwatch::MetricStore::open(&s.dir.join("metrics").join(region))
                .map_err(|e| fail("the metric store", e.to_string()))?;
            let blobs =
                berth_registry::blobs::FsBlobs::open(s.blobs.join(region), s.blob_key.clone())
                    .map_err(|e| fail("the blob store", e.to_string()))?;
            control.logs = Some(Arc::new(logs));
            control.cloudwatch = Some(Arc::new(metrics));
            let home_listener = match region == self.home {
                true => lock(&self.home_registry).take(),
                false => None,
            };
            let listener = match home_listener {
                Some(l) => l,
                None => self.bind_registry(&control, s.registry_ip).await?,
            };
            let addr = listener
                .local_addr()
                .map_err(|e| fail("the registry listener", e.to_string()))?;
            let config = berth_registry::Config {
                region: region.to_string(),
                endpoint: addr.to_string(),
                ..s.registry.clone()
            };
            control = control.with_registry(Arc::new(blobs), config);
            if let (Some(registry), Some(me)) = (control.registry.as_mut(), self.me.get()) {
                registry.peers = Some(Arc::new(Peers {
                    regions: me.clone(),
                }));
            }
            // Replications a stopped server left IN_PROGRESS fail, when no other server can
            // be running them.
            if let Some(registry) = control
                .registry
                .as_ref()
                .filter(|_| control.leadership.standing() == crate::leader::Standing::Sole)
            {
                registry
                    .fail_interrupted_replications()
                    .await
                    .map_err(|e| fail("the registry's replications", e.to_string()))?;
            }
            registry_listener = Some(listener);
            registry_addr = Some(addr);
        }
        control.elb = o.elb.clone().map(berth_elb::Proxy::new);
        let from = control.load_state().await?;
        let mut loops = Vec::new();
        let stop = self.stop.clone();
        control.start_mirrors(&stop);
        {
            let (c, rx) = (control.clone(), stop.clone());
            loops.push(tokio::spawn(async move { c.run_state(from, rx).await }));
        }
        {
            let (c, rx) = (control.clone(), stop.clone());
            loops.push(tokio::spawn(server::housekeeping(
                c,
                o.housekeeping_interval,
                rx,
            )));
        }
        if control.elb.is_some() {
            // The listeners the records hold listen again, then drained targets are swept.
            control.sync_elb().await;
            let (c, rx) = (control.clone(), stop.clone());
            loops.push(tokio::spawn(server::sweep_drained(c, rx)));
            let (c, mut rx) = (control.clone(), stop.clone());
            loops.push(tokio::spawn(async move {
                let Some(proxy) = c.elb.clone() else { return };
                loop {
                    tokio::select! {
                        _ = rx.wait_for(|s| *s) => return,
                        _ = proxy.health_changed() => {}
                    }
                    c.wake_lb_services().await;
                }
            }));
        }
        if o.spot_interruption_rate > 0.0 {
            let (c, rx) = (control.clone(), stop.clone());
            loops.push(tokio::spawn(server::spot_chaos(
                c,
                o.spot_interruption_rate,
                rx,
            )));
        }
        if control.cloudwatch.is_some() {
            let (c, rx) = (control.clone(), stop.clone());
            loops.push(tokio::spawn(server::publish_insights(
                c,
                o.insights_interval,
                rx,
            )));
        }
        if let (Some(registry), Some(l)) = (control.registry.clone(), registry_listener) {
            let (r, leadership) = (registry.clone(), control.leadership.clone());
            let (every, mut rx) = (o.housekeeping_interval, stop.clone());
            loops.push(tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = rx.wait_for(|s| *s) => return,
                        _ = tokio::time::sleep(every) => {}
                    }
                    leadership.lead(r.housekeeping_pass()).await;
                }
            }));
            let rx = stop.clone();
            loops.push(tokio::spawn(async move {
                if let Err(e) = berth_registry::http::serve(l, registry, stopped(rx)).await {
                    tracing::error!(error = %e, "the registry stopped");
                }
            }));
        }
        {
            // Under the interval's lock, so `spawn_service_loops` sees this region or this
            // region sees its interval: never neither.
            let interval = lock(&self.service_interval);
            if let Some(every) = *interval {
                loops.push(spawn_service_loop(&control, every, stop.clone()));
            }
            write(&self.started).insert(
                region.to_string(),
                Region {
                    control: control.clone(),
                    registry_addr,
                },
            );
        }
        lock(&self.background).extend(loops);
        if region != self.home {
            tracing::info!(region, registry = ?registry_addr, "region started");
        }
        Ok(control)
    }

    /// A `/v2/` listener for a region other than the home one: at the port it had before if
    /// that is free, else at a new one, remembered for next time.
    async fn bind_registry(
        &self,
        control: &Control,
        ip: std::net::IpAddr,
    ) -> Result<TcpListener, EcsError> {
        let before = control.get_record::<u16>(REGISTRY_PORT).await?;
        if let Some((port, _)) = &before {
            match TcpListener::bind((ip, *port)).await {
                Ok(l) => return Ok(l),
                Err(e) => tracing::warn!(
                    region = control.config.region,
                    port,
                    error = %e,
                    "the region's registry cannot listen where it did before; its repository URIs change"
                ),
            }
        }
        let l = TcpListener::bind((ip, 0)).await.map_err(|e| {
            EcsError::server(format!(
                "binding the registry of region {} on {ip}: {e}",
                control.config.region
            ))
        })?;
        let port = l
            .local_addr()
            .map_err(|e| EcsError::server(format!("the registry listener: {e}")))?
            .port();
        let seen = before.map(|(_, kv)| kv);
        control
            .commit(
                Txn::new()
                    .unchanged(REGISTRY_PORT, seen.as_ref())
                    .put(REGISTRY_PORT, crate::encode(&port)?),
            )
            .await?;
        Ok(l)
    }

    /// Runs every region's service reconciler at least every `every`, now and for regions
    /// that start later.
    pub(crate) fn spawn_service_loops(&self, every: Duration) {
        let mut interval = lock(&self.service_interval);
        *interval = Some(every);
        let controls: Vec<Control> = read(&self.started)
            .values()
            .map(|r| r.control.clone())
            .collect();
        let loops: Vec<_> = controls
            .iter()
            .map(|c| spawn_service_loop(c, every, self.stop.clone()))
            .collect();
        drop(interval);
        lock(&self.background).extend(loops);
    }

    /// Runs `work` (a replication) as one of the background tasks shutdown waits for.
    pub(crate) fn spawn_work(&self, work: impl std::future::Future<Output = ()> + Send + 'static) {
        let t = tokio::spawn(work);
        let mut bg = lock(&self.background);
        bg.retain(|t| !t.is_finished());
        bg.push(t);
    }

    /// A background task shutdown waits for (the leadership campaign, which revokes its
    /// lease as it ends).
    pub(crate) fn adopt(&self, task: JoinHandle<()>) {
        lock(&self.background).push(task);
    }

    /// The background loops, for shutdown to wait on.
    pub(crate) fn take_background(&self) -> Vec<JoinHandle<()>> {
        std::mem::take(&mut *lock(&self.background))
    }

    /// Every started region's load-balancer listeners stop listening.
    pub(crate) fn close_listeners(&self) {
        for r in read(&self.started).values() {
            if let Some(proxy) = &r.control.elb {
                proxy.close();
            }
        }
    }

    /// Prometheus' figures, summed over every region.
    pub async fn render_metrics(&self) -> String {
        let controls: Vec<Control> = read(&self.started)
            .values()
            .map(|r| r.control.clone())
            .collect();
        let mut total = crate::metrics::Snapshot::default();
        for c in &controls {
            let s = c.metrics_snapshot().await;
            total.agents_connected += s.agents_connected;
            total.running += s.running;
            total.pending += s.pending;
            total.store_revision = s.store_revision;
        }
        self.metrics.render(&total)
    }

    /// Dev mode's reset: every region's records, blobs, logs, metrics and listeners, and every
    /// access key but the admin's. Returns how many records and blobs went.
    pub async fn reset(&self) -> Result<usize, EcsError> {
        // No region starts half way through.
        let _one = self.starting.lock().await;
        let controls: Vec<Control> = read(&self.started)
            .values()
            .map(|r| r.control.clone())
            .collect();
        let mut n = 0;
        for c in &controls {
            n += c.reset().await?;
        }
        // Regions not started here hold records too.
        n += self
            .root
            .delete_prefix(keys::REGIONS)
            .await
            .map_err(store_error)?;
        let admin = self
            .root
            .get(keys::ADMIN_KEY)
            .await
            .map_err(store_error)?
            .and_then(|kv| serde_json::from_slice::<String>(&kv.value).ok())
            .map(|id| keys::access_key(&id));
        for kv in self.root.range("", None, None).await.map_err(store_error)? {
            // The leader's key is this server's standing, not state a reset wipes.
            if kv.key != keys::ADMIN_KEY
                && kv.key != crate::leader::LEADER_KEY
                && Some(&kv.key) != admin.as_ref()
            {
                self.root
                    .txn(Txn::new().delete(kv.key.clone()))
                    .await
                    .map_err(store_error)?;
                n += 1;
            }
        }
        self.users.reload(&*self.root).await.map_err(store_error)?;
        Ok(n)
    }
}

fn spawn_service_loop(c: &Control, every: Duration, rx: watch::Receiver<bool>) -> JoinHandle<()> {
    let c = c.clone();
    tokio::spawn(async move { c.run_service_loop(every, stopped(rx)).await })
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn read<T>(m: &std::sync::RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(m: &std::sync::RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_names_are_checked_for_their_shape() {
        for ok in [
            "us-east-1",
            "ap-southeast-7",
            "us-gov-west-1",
            "eu-central-2",
        ] {
            assert!(well_formed(ok), "{ok} is a region's shape");
        }
        for bad in [
            "",
            "us",
            "us-east",
            "us-east-0",
            "US-east-1",
            "u-east-1",
            "us--1",
            "us-east-01",
            "us-east-1/x",
        ] {
            assert!(!well_formed(bad), "{bad:?} is not a region's shape");
        }
        assert!(AWS_REGIONS.iter().all(|r| well_formed(r)));
    }
}
