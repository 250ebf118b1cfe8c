//! The server's figures for Prometheus, in the text exposition format at `GET /metrics`:
//! API requests by service, operation and status with latency histograms, placements,
//! reconciler passes, log events and bytes ingested (counted where they happen), and at each
//! scrape the agents connected, tasks by status and the store's revision (every commit moves it).

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// One kind of request answered. Names come from fixed lists (the models' operations, the
/// agent routes), so counting a request allocates nothing and the labels stay bounded.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// ecs, ecr, logs or agent.
    pub service: &'static str,
    pub operation: &'static str,
    pub status: u16,
}

/// One operation, for its latency.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabels {
    pub service: &'static str,
    pub operation: &'static str,
}

/// A task status.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    pub status: String,
}

type LatencyFamily = Family<OperationLabels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 0.25 ms to about 8 s.
    Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
}

/// Every figure, registered once.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub latency: LatencyFamily,
    pub tasks_placed: Counter,
    pub placements_failed: Counter,
    pub reconciler_passes: Counter,
    pub log_events: Counter,
    pub log_bytes: Counter,
    agents_connected: Gauge,
    tasks: Family<StatusLabels, Gauge>,
    store_revision: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// What the server knows at a scrape.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub agents_connected: i64,
    pub running: i64,
    pub pending: i64,
    pub store_revision: i64,
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("berth");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "api_requests",
            "Requests answered, by service, operation and HTTP status",
            requests.clone(),
        );
        let latency: LatencyFamily = Family::new_with_constructor(latency_histogram);
        registry.register(
            "api_request_duration_seconds",
            "Time to answer a request, by service and operation",
            latency.clone(),
        );
        let tasks_placed = Counter::default();
        registry.register(
            "tasks_placed",
            "Tasks placed on container instances",
            tasks_placed.clone(),
        );
        let placements_failed = Counter::default();
        registry.register(
            "placement_failures",
            "Copies that could not be placed (reported in RunTask's failures or a service's events)",
            placements_failed.clone(),
        );
        let reconciler_passes = Counter::default();
        registry.register(
            "reconciler_passes",
            "Passes of the service reconciler",
            reconciler_passes.clone(),
        );
        let log_events = Counter::default();
        registry.register(
            "log_events_ingested",
            "Log events stored (PutLogEvents and agents' awslogs shipping)",
            log_events.clone(),
        );
        let log_bytes = Counter::default();
        registry.register(
            "log_bytes_ingested",
            "Bytes of log messages stored",
            log_bytes.clone(),
        );
        let agents_connected = Gauge::default();
        registry.register(
            "agents_connected",
            "Agents heard from within the agent timeout",
            agents_connected.clone(),
        );
        let tasks = Family::<StatusLabels, Gauge>::default();
        registry.register("tasks", "Tasks not yet stopped, by status", tasks.clone());
        let store_revision = Gauge::default();
        registry.register(
            "store_revision",
            "The store's revision: every committed write moves it by one",
            store_revision.clone(),
        );
        Metrics {
            registry,
            requests,
            latency,
            tasks_placed,
            placements_failed,
            reconciler_passes,
            log_events,
            log_bytes,
            agents_connected,
            tasks,
            store_revision,
        }
    }

    /// Counts one answered request.
    pub fn request(
        &self,
        service: &'static str,
        operation: &'static str,
        status: u16,
        seconds: f64,
    ) {
        self.requests
            .get_or_create(&RequestLabels {
                service,
                operation,
                status,
            })
            .inc();
        self.latency
            .get_or_create(&OperationLabels { service, operation })
            .observe(seconds);
    }

    /// The exposition text, with the scrape-time figures set from `now`.
    pub fn render(&self, now: &Snapshot) -> String {
        self.agents_connected.set(now.agents_connected);
        for (status, n) in [("RUNNING", now.running), ("PENDING", now.pending)] {
            self.tasks
                .get_or_create(&StatusLabels {
                    status: status.into(),
                })
                .set(n);
        }
        self.store_revision.set(now.store_revision);
        let mut out = String::new();
        if let Err(e) = encode(&mut out, &self.registry) {
            tracing::warn!(error = %e, "encoding the metrics failed");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_render_in_the_exposition_format() {
        let m = Metrics::new();
        m.request("ecs", "RunTask", 200, 0.002);
        m.request("ecs", "RunTask", 200, 0.004);
        m.request("logs", "PutLogEvents", 400, 0.001);
        m.tasks_placed.inc_by(3);
        let text = m.render(&Snapshot {
            agents_connected: 2,
            running: 5,
            pending: 1,
            store_revision: 42,
        });
        for line in [
            "berth_api_requests_total{service=\"ecs\",operation=\"RunTask\",status=\"200\"} 2",
            "berth_api_requests_total{service=\"logs\",operation=\"PutLogEvents\",status=\"400\"} 1",
            "berth_api_request_duration_seconds_count{service=\"ecs\",operation=\"RunTask\"} 2",
            "berth_tasks_placed_total 3",
            "berth_agents_connected 2",
            "berth_tasks{status=\"RUNNING\"} 5",
            "berth_store_revision 42",
        ] {
            assert!(text.contains(line), "missing `{line}` in:\n{text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
