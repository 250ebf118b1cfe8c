//! The one way to start a server: every region's control plane over one store (see
//! [`crate::regions`]: each region's cluster state loaded and followed, its registry listener
//! and background loops — services, the purge of long-stopped tasks, the registry's
//! housekeeping), and the one listener every region's API is served on. `berth server`,
//! `berth up` and the tests all start [`Server::start`] and stop [`Server::shutdown`].

use crate::http::Limits;
use crate::regions::{RegionOptions, Regions};
pub use crate::regions::{Served, Storage};
use crate::{Config, Control};
use berth_api::EcsError;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

#[derive(Debug)]
pub struct Options {
    /// Its `region` is the home region: what a request signed for no other region gets, and
    /// what Berth's own banner, CLI and agents use by default.
    pub config: Config,
    /// The regions served beside the home one.
    pub regions: Served,
    pub limits: Limits,
    /// How often the service reconciler runs when no change wakes it; `None`: not started
    /// (tests that drive [`Control::reconcile_services`] by hand start it later, if at all).
    pub service_interval: Option<Duration>,
    /// How often long-stopped tasks are purged and the registry's housekeeping runs.
    pub housekeeping_interval: Duration,
    /// Where each region's registry blobs, logs and metrics live; `None`: no registry, and
    /// CloudWatch's APIs answer that they have no store.
    pub storage: Option<Storage>,
    /// How often Container Insights and AWS/ECS figures are published (CloudWatch's one
    /// minute by default).
    pub insights_interval: Duration,
    /// Where load balancers' listeners bind; `None`: no data plane (the API still answers).
    pub elb: Option<berth_elb::Options>,
    /// Spot chaos: the share of RUNNING FARGATE_SPOT tasks interrupted per minute (0: none
    /// but those an operator reclaims).
    pub spot_interruption_rate: f64,
}

impl Options {
    pub fn new(config: Config) -> Self {
        Options {
            config,
            regions: Served::Aws,
            limits: Limits::default(),
            // Changes wake it at once; the sweep is for what time alone moves.
            service_interval: Some(Duration::from_secs(5)),
            housekeeping_interval: Duration::from_secs(60),
            storage: None,
            insights_interval: Duration::from_secs(60),
            elb: None,
            spot_interruption_rate: 0.0,
        }
    }
}

/// A running server.
#[derive(Debug)]
pub struct Server {
    /// The home region's handlers.
    pub control: Control,
    /// Every region's.
    pub regions: Arc<Regions>,
    pub addr: SocketAddr,
    /// The home region's registry's `/v2/` listener.
    pub registry_addr: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    http: JoinHandle<std::io::Result<()>>,
}

/// Completes when `rx` turns true (or its sender is gone).
pub async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

impl Server {
    /// Starts the home region and every region the store holds records of (each loads its
    /// cluster state and starts its loops), then serves on `listener`.
    pub async fn start(
        store: Arc<dyn berth_store::Store>,
        listener: TcpListener,
        opts: Options,
    ) -> Result<Server, EcsError> {
        let addr = listener
            .local_addr()
            .map_err(|e| EcsError::server(format!("the listener has no address: {e}")))?;
        let (stop, stop_rx) = watch::channel(false);
        // Several servers on one store (etcd) elect one to run the loops that change state on
        // their own; its passes' writes are fenced on its leadership.
        let store: Arc<dyn berth_store::Store> =
            Arc::new(berth_store::Fenced::new(store, crate::leader::LEADER_KEY));
        let me = format!("{addr} {}", uuid::Uuid::new_v4());
        let (leadership, campaign) =
            crate::leader::campaign(store.clone(), me, opts.config.leader_ttl, stop_rx.clone());
        let regions = Arc::new(Regions::new(
            store,
            opts.regions,
            RegionOptions {
                config: opts.config,
                housekeeping_interval: opts.housekeeping_interval,
                insights_interval: opts.insights_interval,
                elb: opts.elb,
                spot_interruption_rate: opts.spot_interruption_rate,
                leadership,
            },
            opts.storage,
            stop_rx.clone(),
        )?);
        regions.link();
        if let Some(c) = campaign {
            regions.adopt(c);
        }
        let control = regions.start_all().await?;
        let registry_addr = regions.registry_addr(regions.home_name());
        let http = tokio::spawn(crate::http::serve(
            listener,
            regions.clone(),
            opts.limits,
            stopped(stop_rx),
        ));
        let server = Server {
            control,
            regions,
            addr,
            registry_addr,
            stop,
            http,
        };
        if let Some(every) = opts.service_interval {
            server.spawn_service_loop(every);
        }
        Ok(server)
    }

    /// Runs every region's service reconciler at least every `every` (and on every change)
    /// until the server stops.
    pub fn spawn_service_loop(&self, every: Duration) {
        self.regions.spawn_service_loops(every);
    }

    /// Completes when the server starts stopping.
    pub fn stopping(&self) -> impl Future<Output = ()> + Send + 'static {
        stopped(self.stop.subscribe())
    }

    /// Stops serving (requests in flight finish), ends every background loop and waits for
    /// them, so the store is no longer used when this returns.
    pub async fn shutdown(self) -> std::io::Result<()> {
        let _ = self.stop.send(true);
        // The listeners' ports are free for whatever starts next.
        self.regions.close_listeners();
        let served = self
            .http
            .await
            .map_err(|e| std::io::Error::other(format!("the server task failed: {e}")))?;
        for t in self.regions.take_background() {
            if tokio::time::timeout(Duration::from_secs(15), t)
                .await
                .is_err()
            {
                tracing::warn!("a background loop did not stop within 15 s");
            }
        }
        served
    }
}

/// Forgets drained load-balancer targets, every half second, and rebuilds the data plane's
/// configuration every 5 s (instances' addresses change without an ELB write; a listener
/// that could not bind tries again).
pub(crate) async fn sweep_drained(control: Control, mut stop: watch::Receiver<bool>) {
    let mut turn = 0u32;
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
        if let Err(e) = control.sweep_drained().await {
            tracing::warn!(error = %e, "sweeping drained targets failed");
        }
        turn += 1;
        if turn == 10 {
            turn = 0;
            control.sync_elb().await;
        }
    }
}

/// Interrupts RUNNING FARGATE_SPOT tasks at random, `rate` of them a minute on average, until
/// `stop`: Spot's reclaims, for testing what a service does about them.
pub(crate) async fn spot_chaos(control: Control, rate: f64, mut stop: watch::Receiver<bool>) {
    const EVERY: Duration = Duration::from_secs(5);
    let p = (rate * EVERY.as_secs_f64() / 60.0).clamp(0.0, 1.0);
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(EVERY) => {}
        }
        if let Some(Err(e)) = control.leadership.lead(control.spot_chaos(p)).await {
            tracing::warn!(error = %e, "interrupting Spot tasks failed");
        }
    }
}

/// Purges tasks stopped longer than the retention and log segments past their group's
/// retention, every `every`, until `stop`.
pub(crate) async fn housekeeping(
    control: Control,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        // The store's records are the leader's to purge; logs and metrics are this server's.
        match control
            .leadership
            .lead(control.purge_stopped_tasks(control.config.task_retention))
            .await
        {
            None | Some(Ok(0)) => {}
            Some(Ok(n)) => tracing::info!(purged = n, "purged stopped tasks"),
            Some(Err(e)) => tracing::warn!(error = %e, "purging stopped tasks failed"),
        }
        match control
            .leadership
            .lead(control.purge_stale_presence())
            .await
        {
            None | Some(Ok(0)) => {}
            Some(Ok(n)) => tracing::info!(purged = n, "purged deregistered agents' presence"),
            Some(Err(e)) => tracing::warn!(error = %e, "purging stale presence failed"),
        }
        if let Some(logs) = control.logs.clone() {
            let now = crate::now_millis();
            match tokio::task::spawn_blocking(move || logs.expire(now)).await {
                Ok(Ok(0)) => {}
                Ok(Ok(n)) => tracing::info!(segments = n, "dropped log segments past retention"),
                Ok(Err(e)) => tracing::warn!(error = %e, "log retention failed"),
                Err(e) => tracing::warn!(error = %e, "log retention task failed"),
            }
        }
        if let Some(metrics) = control.cloudwatch.clone() {
            let now = crate::now_millis();
            match tokio::task::spawn_blocking(move || metrics.expire(now)).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(buckets = n, "dropped metric data past retention"),
                Err(e) => tracing::warn!(error = %e, "metric retention task failed"),
            }
        }
    }
}

/// Publishes Container Insights and AWS/ECS figures every `every`, until `stop`.
pub(crate) async fn publish_insights(
    control: Control,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.wait_for(|s| *s) => break,
        }
        match control.publish_insights().await {
            Ok(n) => tracing::debug!(datums = n, "published cluster metrics"),
            Err(e) => tracing::warn!(error = %e, "publishing cluster metrics failed"),
        }
    }
    if let Some(m) = control.cloudwatch.clone() {
        let _ = tokio::task::spawn_blocking(move || m.flush()).await;
    }
}
