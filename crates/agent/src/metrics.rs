//! The agent's figures for Prometheus at `GET /metrics` on `--metrics-listen`: Docker calls by
//! kind with their latency (a [`Timed`] runtime wraps the real one), containers of this
//! instance by state (asked of Docker at each scrape), tasks the engine runs, and log shipping
//! (events shipped, events waiting to be shipped).

use crate::runtime::{CreateSpec, Listed, Observed, OutputLines, Runtime, RuntimeError};
use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::Full;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    call: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

type CallFamily = Family<CallLabels, Histogram, fn() -> Histogram>;

fn call_histogram() -> Histogram {
    // 0.5 ms to about 65 s (pulls are slow).
    Histogram::new(exponential_buckets(0.000_5, 2.0, 18))
}

/// Every figure of one agent.
#[derive(Debug)]
pub struct AgentMetrics {
    registry: Registry,
    calls: CallFamily,
    containers: Family<StateLabels, Gauge>,
    pub tasks: Gauge,
    pub log_events_shipped: Counter,
    pub log_backlog: Gauge,
}

impl Default for AgentMetrics {
    fn default() -> Self {
        AgentMetrics::new()
    }
}

impl AgentMetrics {
    pub fn new() -> AgentMetrics {
        let mut registry = Registry::with_prefix("berth_agent");
        let calls: CallFamily = Family::new_with_constructor(call_histogram);
        registry.register(
            "docker_call_duration_seconds",
            "Docker Engine calls by kind and outcome, and how long they took",
            calls.clone(),
        );
        let containers = Family::<StateLabels, Gauge>::default();
        registry.register(
            "containers",
            "This instance's containers, by state",
            containers.clone(),
        );
        let tasks = Gauge::default();
        registry.register("tasks", "Tasks the engine runs", tasks.clone());
        let log_events_shipped = Counter::default();
        registry.register(
            "log_events_shipped",
            "awslogs events the server has taken",
            log_events_shipped.clone(),
        );
        let log_backlog = Gauge::default();
        registry.register(
            "log_backlog_events",
            "awslogs events handed for shipping and not yet taken by the server",
            log_backlog.clone(),
        );
        AgentMetrics {
            registry,
            calls,
            containers,
            tasks,
            log_events_shipped,
            log_backlog,
        }
    }

    fn observe(&self, call: &'static str, ok: bool, started: Instant) {
        self.calls
            .get_or_create(&CallLabels {
                call,
                outcome: if ok { "ok" } else { "error" },
            })
            .observe(started.elapsed().as_secs_f64());
    }

    /// The exposition text, with this instance's containers counted now.
    pub async fn render(&self, runtime: &dyn Runtime, instance_arn: &str) -> String {
        if let Ok(list) = runtime
            .list(berth_agent_proto::labels::INSTANCE, instance_arn)
            .await
        {
            let running = list.iter().filter(|c| c.running).count() as i64;
            for (state, n) in [
                ("running", running),
                ("stopped", list.len() as i64 - running),
            ] {
                self.containers.get_or_create(&StateLabels { state }).set(n);
            }
        }
        let mut out = String::new();
        if let Err(e) = encode(&mut out, &self.registry) {
            tracing::warn!(error = %e, "encoding the agent's metrics failed");
        }
        out
    }

    /// Serves `GET /metrics` on `addr` until the agent stops; the address bound.
    pub async fn serve(
        self: &Arc<Self>,
        addr: SocketAddr,
        runtime: Arc<dyn Runtime>,
        instance_arn: String,
    ) -> std::io::Result<SocketAddr> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let bound = listener.local_addr()?;
        let me = self.clone();
        crate::metadata::spawn_http(listener, move |req| {
            let (m, rt, arn) = (me.clone(), runtime.clone(), instance_arn.clone());
            async move {
                if req.uri().path() != "/metrics" {
                    let mut r = http::Response::new(Full::new(Bytes::from_static(b"not found\n")));
                    *r.status_mut() = http::StatusCode::NOT_FOUND;
                    return r;
                }
                let mut r = http::Response::new(Full::new(Bytes::from(m.render(&*rt, &arn).await)));
                r.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static(
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    ),
                );
                r
            }
        });
        Ok(bound)
    }
}

/// A runtime that times every call of the one it wraps.
#[derive(Debug)]
pub struct Timed {
    pub inner: Arc<dyn Runtime>,
    pub metrics: Arc<AgentMetrics>,
}

impl Timed {
    fn done<T>(
        &self,
        call: &'static str,
        started: Instant,
        r: Result<T, RuntimeError>,
    ) -> Result<T, RuntimeError> {
        self.metrics.observe(call, r.is_ok(), started);
        r
    }
}

#[async_trait]
impl Runtime for Timed {
    async fn version(&self) -> Result<String, RuntimeError> {
        let t = Instant::now();
        let r = self.inner.version().await;
        self.done("version", t, r)
    }
    async fn ensure_image(
        &self,
        image: &str,
        auth: Option<&berth_agent_proto::RegistryCredentials>,
    ) -> Result<(), RuntimeError> {
        let t = Instant::now();
        let r = self.inner.ensure_image(image, auth).await;
        self.done("ensure_image", t, r)
    }
    async fn ensure_volume(
        &self,
        name: &str,
        driver: Option<&str>,
        opts: &HashMap<String, String>,
        labels: &HashMap<String, String>,
    ) -> Result<(), RuntimeError> {
        let t = Instant::now();
        let r = self.inner.ensure_volume(name, driver, opts, labels).await;
        self.done("ensure_volume", t, r)
    }
    async fn remove_volume(&self, name: &str) -> Result<(), RuntimeError> {
        let t = Instant::now();
        let r = self.inner.remove_volume(name).await;
        self.done("remove_volume", t, r)
    }
    async fn create(&self, spec: &CreateSpec) -> Result<String, RuntimeError> {
        let t = Instant::now();
        let r = self.inner.create(spec).await;
        self.done("create", t, r)
    }
    async fn start(&self, id: &str) -> Result<(), RuntimeError> {
        let t = Instant::now();
        let r = self.inner.start(id).await;
        self.done("start", t, r)
    }
    async fn inspect(&self, name_or_id: &str) -> Result<Option<Observed>, RuntimeError> {
        let t = Instant::now();
        let r = self.inner.inspect(name_or_id).await;
        self.done("inspect", t, r)
    }
    async fn stop(&self, id: &str, timeout_s: i64) -> Result<(), RuntimeError> {
        let t = Instant::now();
        let r = self.inner.stop(id, timeout_s).await;
        self.done("stop", t, r)
    }
    async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        let t = Instant::now();
        let r = self.inner.remove(id).await;
        self.done("remove", t, r)
    }
    async fn list(&self, label: &str, value: &str) -> Result<Vec<Listed>, RuntimeError> {
        let t = Instant::now();
        let r = self.inner.list(label, value).await;
        self.done("list", t, r)
    }
    async fn output(
        &self,
        id: &str,
        since_ns: i64,
        follow: bool,
    ) -> Result<OutputLines, RuntimeError> {
        let t = Instant::now();
        let r = self.inner.output(id, since_ns, follow).await;
        self.done("logs", t, r)
    }
    async fn log_drivers(&self) -> Result<Vec<String>, RuntimeError> {
        let t = Instant::now();
        let r = self.inner.log_drivers().await;
        self.done("info", t, r)
    }
    async fn stats(&self, id: &str) -> Result<serde_json::Value, RuntimeError> {
        let t = Instant::now();
        let r = self.inner.stats(id).await;
        self.done("stats", t, r)
    }
    async fn bridge_gateway(&self) -> Result<Option<String>, RuntimeError> {
        let t = Instant::now();
        let r = self.inner.bridge_gateway().await;
        self.done("inspect_network", t, r)
    }
    async fn ensure_pause_image(&self) -> Result<(), RuntimeError> {
        let t = Instant::now();
        let r = self.inner.ensure_pause_image().await;
        self.done("import_image", t, r)
    }
    async fn ensure_network(
        &self,
        name: &str,
        subnet: &str,
        gateway: &str,
        labels: &HashMap<String, String>,
    ) -> Result<(), RuntimeError> {
        let t = Instant::now();
        let r = self
            .inner
            .ensure_network(name, subnet, gateway, labels)
            .await;
        self.done("create_network", t, r)
    }
    async fn readdress(
        &self,
        id: &str,
        network: &str,
        ip: &str,
        mac: &str,
        name: &str,
    ) -> Result<(), RuntimeError> {
        let t = Instant::now();
        let r = self.inner.readdress(id, network, ip, mac, name).await;
        self.done("readdress", t, r)
    }
    async fn remove_network(&self, name: &str) -> Result<(), RuntimeError> {
        let t = Instant::now();
        let r = self.inner.remove_network(name).await;
        self.done("remove_network", t, r)
    }
    async fn apply_firewall(&self, container_id: &str, ruleset: &str) -> Result<(), RuntimeError> {
        let t = Instant::now();
        let r = self.inner.apply_firewall(container_id, ruleset).await;
        self.done("iptables_restore", t, r)
    }
    // The cgroup filesystem, not Docker: not timed.
    async fn ensure_task_cgroup(
        &self,
        task_id: &str,
        cpu_units: Option<u32>,
        memory_mib: Option<u32>,
    ) -> Result<Option<String>, RuntimeError> {
        self.inner
            .ensure_task_cgroup(task_id, cpu_units, memory_mib)
            .await
    }
    async fn remove_task_cgroup(&self, task_id: &str) {
        self.inner.remove_task_cgroup(task_id).await
    }
}
