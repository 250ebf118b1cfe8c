//! The one way to start a server: the control plane over a store, its cluster state loaded and
//! followed, the ECS listener, the registry's listener if there is one, and the background
//! loops (services, the purge of long-stopped tasks, the registry's housekeeping). `berth
//! server`, `berth up` and the tests all start [`Server::start`] and stop [`Server::shutdown`].

use crate::http::Limits;
use crate::{Config, Control};
use berth_api::EcsError;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The image registry a server runs beside the ECS API.
#[derive(Debug)]
pub struct RegistryOptions {
    pub blobs: Arc<dyn berth_registry::BlobStore>,
    /// Its `endpoint` is set from `listener`'s address.
    pub config: berth_registry::Config,
    /// Where the OCI distribution protocol (`docker push`/`pull`) is served.
    pub listener: TcpListener,
}

#[derive(Debug)]
pub struct Options {
    pub config: Config,
    pub limits: Limits,
    /// How often the service reconciler runs when no change wakes it; `None`: not started
    /// (tests that drive [`Control::reconcile_services`] by hand start it later, if at all).
    pub service_interval: Option<Duration>,
    /// How often long-stopped tasks are purged and the registry's housekeeping runs.
    pub housekeeping_interval: Duration,
    pub registry: Option<RegistryOptions>,
    /// CloudWatch Logs' store (retention is enforced on the housekeeping interval).
    pub logs: Option<Arc<berth_logs::LogStore>>,
    /// CloudWatch's metric store (retention is enforced on the housekeeping interval).
    pub cloudwatch: Option<Arc<berth_cloudwatch::MetricStore>>,
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
            limits: Limits::default(),
            // Changes wake it at once; the sweep is for what time alone moves.
            service_interval: Some(Duration::from_secs(5)),
            housekeeping_interval: Duration::from_secs(60),
            registry: None,
            logs: None,
            cloudwatch: None,
            insights_interval: Duration::from_secs(60),
            elb: None,
            spot_interruption_rate: 0.0,
        }
    }
}

/// A running server.
#[derive(Debug)]
pub struct Server {
    pub control: Control,
    pub addr: SocketAddr,
    pub registry_addr: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    http: JoinHandle<std::io::Result<()>>,
    background: std::sync::Mutex<Vec<JoinHandle<()>>>,
}

/// Completes when `rx` turns true (or its sender is gone).
pub async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

impl Server {
    /// Loads the cluster state, then serves on `listener` and starts the background loops.
    pub async fn start(
        store: Arc<dyn berth_store::Store>,
        listener: TcpListener,
        opts: Options,
    ) -> Result<Server, EcsError> {
        let addr = listener
            .local_addr()
            .map_err(|e| EcsError::server(format!("the listener has no address: {e}")))?;
        let mut control = Control::new(store, opts.config);
        control.logs = opts.logs;
        control.cloudwatch = opts.cloudwatch;
        control.elb = opts.elb.map(berth_elb::Proxy::new);
        let mut registry_listener = None;
        let mut registry_addr = None;
        if let Some(mut r) = opts.registry {
            let a = r
                .listener
                .local_addr()
                .map_err(|e| EcsError::server(format!("the registry listener: {e}")))?;
            r.config.endpoint = a.to_string();
            control = control.with_registry(r.blobs, r.config);
            registry_listener = Some(r.listener);
            registry_addr = Some(a);
        }
        let from = control.load_state().await?;
        let (stop, stop_rx) = watch::channel(false);
        let mut background = Vec::new();
        {
            let (c, rx) = (control.clone(), stop_rx.clone());
            background.push(tokio::spawn(async move { c.run_state(from, rx).await }));
        }
        {
            let (c, rx) = (control.clone(), stop_rx.clone());
            let every = opts.housekeeping_interval;
            background.push(tokio::spawn(housekeeping(c, every, rx)));
        }
        if control.elb.is_some() {
            // The listeners the records hold listen again, then drained targets are swept.
            control.sync_elb().await;
            let (c, rx) = (control.clone(), stop_rx.clone());
            background.push(tokio::spawn(sweep_drained(c, rx)));
            let (c, mut rx) = (control.clone(), stop_rx.clone());
            background.push(tokio::spawn(async move {
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
        if opts.spot_interruption_rate > 0.0 {
            let (c, rx) = (control.clone(), stop_rx.clone());
            background.push(tokio::spawn(spot_chaos(c, opts.spot_interruption_rate, rx)));
        }
        if control.cloudwatch.is_some() {
            let (c, rx) = (control.clone(), stop_rx.clone());
            background.push(tokio::spawn(publish_insights(
                c,
                opts.insights_interval,
                rx,
            )));
        }
        if let (Some(registry), Some(l)) = (control.registry.clone(), registry_listener) {
            let r = registry.clone();
            let (every, rx) = (opts.housekeeping_interval, stop_rx.clone());
            background.push(tokio::spawn(async move {
                r.run_housekeeping(every, stopped(rx)).await
            }));
            let rx = stop_rx.clone();
            background.push(tokio::spawn(async move {
                if let Err(e) = berth_registry::http::serve(l, registry, stopped(rx)).await {
                    tracing::error!(error = %e, "the registry stopped");
                }
            }));
        }
        let http = tokio::spawn(crate::http::serve(
            listener,
            control.clone(),
            opts.limits,
            stopped(stop_rx),
        ));
        let server = Server {
            control,
            addr,
            registry_addr,
            stop,
            http,
            background: std::sync::Mutex::new(background),
        };
        if let Some(every) = opts.service_interval {
            server.spawn_service_loop(every);
        }
        Ok(server)
    }

    /// Runs the service reconciler at least every `every` (and on every change) until the
    /// server stops.
    pub fn spawn_service_loop(&self, every: Duration) {
        let c = self.control.clone();
        let rx = self.stop.subscribe();
        let t = tokio::spawn(async move { c.run_service_loop(every, stopped(rx)).await });
        self.background
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(t);
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
        if let Some(proxy) = &self.control.elb {
            proxy.close();
        }
        let served = self
            .http
            .await
            .map_err(|e| std::io::Error::other(format!("the server task failed: {e}")))?;
        let background =
            std::mem::take(&mut *self.background.lock().unwrap_or_else(|e| e.into_inner()));
        for t in background {
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
async fn sweep_drained(control: Control, mut stop: watch::Receiver<bool>) {
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
async fn spot_chaos(control: Control, rate: f64, mut stop: watch::Receiver<bool>) {
    const EVERY: Duration = Duration::from_secs(5);
    let p = (rate * EVERY.as_secs_f64() / 60.0).clamp(0.0, 1.0);
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(EVERY) => {}
        }
        if let Err(e) = control.spot_chaos(p).await {
            tracing::warn!(error = %e, "interrupting Spot tasks failed");
        }
    }
}

/// Purges tasks stopped longer than the retention and log segments past their group's
/// retention, every `every`, until `stop`.
async fn housekeeping(control: Control, every: Duration, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        match control
            .purge_stopped_tasks(control.config.task_retention)
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::info!(purged = n, "purged stopped tasks"),
            Err(e) => tracing::warn!(error = %e, "purging stopped tasks failed"),
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
async fn publish_insights(control: Control, every: Duration, mut stop: watch::Receiver<bool>) {
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
