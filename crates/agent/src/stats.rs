//! Resource use of the instance's running tasks, for Container Insights and `AWS/ECS`'s
//! utilization metrics: every `--stats-interval` the agent reads Docker's stats of each
//! running container it owns, sums them per task ([`task_stats`], pure) and sends one
//! [`StatsReport`] to the server. A report that cannot be sent is dropped: the next one carries
//! cumulative counters, so nothing but one sample's CPU and memory figures is lost.

use crate::client::{Identity, ServerClient};
use crate::runtime::Runtime;
use berth_agent_proto::{labels, ContainerStats, StatsReport, TaskStats};
use futures::StreamExt;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// At most this many Docker stats calls at once (each waits about a second for Docker's
/// second CPU sample).
const CONCURRENT: usize = 8;

/// One container's figures, from one Docker stats sample.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ContainerUsage {
    pub cpu_units: f64,
    pub memory_bytes: u64,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub read_bytes: u64,
    pub write_bytes: u64,
}

fn u64_at(v: &Value, path: &[&str]) -> Option<u64> {
    let mut cur = v;
    for p in path {
        cur = cur.get(*p)?;
    }
    cur.as_u64()
}

/// Reads Docker's stats shape (`GET /containers/ID/stats?stream=false`, cgroup v1 or v2).
/// CPU units are Docker's CPU percentage scaled to 1024 units a core; memory is usage less
/// the inactive page cache, as `docker stats` shows it.
pub fn container_usage(stats: &Value) -> ContainerUsage {
    let total = u64_at(stats, &["cpu_stats", "cpu_usage", "total_usage"]).unwrap_or(0);
    let pre_total = u64_at(stats, &["precpu_stats", "cpu_usage", "total_usage"]).unwrap_or(0);
    let system = u64_at(stats, &["cpu_stats", "system_cpu_usage"]).unwrap_or(0);
    let pre_system = u64_at(stats, &["precpu_stats", "system_cpu_usage"]).unwrap_or(0);
    let online = u64_at(stats, &["cpu_stats", "online_cpus"])
        .filter(|n| *n > 0)
        .or_else(|| {
            stats["cpu_stats"]["cpu_usage"]["percpu_usage"]
                .as_array()
                .map(|a| a.len() as u64)
                .filter(|n| *n > 0)
        })
        .unwrap_or(1);
    let cpu_units = if system > pre_system && total >= pre_total && pre_system > 0 {
        (total - pre_total) as f64 / (system - pre_system) as f64 * online as f64 * 1024.0
    } else {
        0.0
    };
    let usage = u64_at(stats, &["memory_stats", "usage"]).unwrap_or(0);
    let m = &stats["memory_stats"]["stats"];
    let cache = m["total_inactive_file"]
        .as_u64()
        .or_else(|| m["inactive_file"].as_u64())
        .or_else(|| m["cache"].as_u64())
        .unwrap_or(0);
    let (mut rx_bytes, mut tx_bytes) = (0, 0);
    if let Some(nets) = stats["networks"].as_object() {
        for n in nets.values() {
            rx_bytes += n["rx_bytes"].as_u64().unwrap_or(0);
            tx_bytes += n["tx_bytes"].as_u64().unwrap_or(0);
        }
    }
    let (mut read_bytes, mut write_bytes) = (0, 0);
    for e in stats["blkio_stats"]["io_service_bytes_recursive"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let v = e["value"].as_u64().unwrap_or(0);
        match e["op"].as_str().map(str::to_ascii_lowercase).as_deref() {
            Some("read") => read_bytes += v,
            Some("write") => write_bytes += v,
            _ => {}
        }
    }
    ContainerUsage {
        cpu_units,
        memory_bytes: usage.saturating_sub(cache),
        rx_bytes,
        tx_bytes,
        read_bytes,
        write_bytes,
    }
}

/// One sampled container: its task's ARN, its name in the task definition, its usage.
pub type Sampled = (String, String, ContainerUsage);

/// Sums containers' usage per task, keeping each container's too. `reserved` is each task's
/// (CPU units, MiB). An `awsvpc` task's pause container is no container of the task, but its
/// network counters are the task's: every container in its namespace shows the same ones.
pub fn task_stats(
    containers: &[Sampled],
    reserved: &HashMap<String, (u32, u32)>,
    at_ms: i64,
) -> Vec<TaskStats> {
    let mut by_task: BTreeMap<&str, TaskStats> = BTreeMap::new();
    let mut shared_network: Vec<(&str, u64, u64)> = Vec::new();
    for (task, name, u) in containers {
        if name == crate::engine::PAUSE_NAME {
            shared_network.push((task.as_str(), u.rx_bytes, u.tx_bytes));
            continue;
        }
        let t = by_task.entry(task.as_str()).or_insert_with(|| {
            let (cpu, mem) = reserved.get(task).copied().unwrap_or((0, 0));
            TaskStats {
                task_arn: task.clone(),
                at_ms,
                cpu_reserved: cpu,
                memory_reserved_mib: mem,
                ..Default::default()
            }
        });
        t.cpu_units += u.cpu_units;
        t.memory_bytes += u.memory_bytes;
        t.network_rx_bytes += u.rx_bytes;
        t.network_tx_bytes += u.tx_bytes;
        t.storage_read_bytes += u.read_bytes;
        t.storage_write_bytes += u.write_bytes;
        t.containers += 1;
        t.per_container.push(ContainerStats {
            name: name.clone(),
            cpu_units: u.cpu_units,
            memory_bytes: u.memory_bytes,
            network_rx_bytes: u.rx_bytes,
            network_tx_bytes: u.tx_bytes,
            storage_read_bytes: u.read_bytes,
            storage_write_bytes: u.write_bytes,
        });
    }
    for (task, rx, tx) in shared_network {
        if let Some(t) = by_task.get_mut(task) {
            t.network_rx_bytes = rx;
            t.network_tx_bytes = tx;
        }
    }
    for t in by_task.values_mut() {
        t.per_container.sort_by(|a, b| a.name.cmp(&b.name));
    }
    by_task.into_values().collect()
}

/// One sample of every running container of `instance_arn` that belongs to a task.
pub async fn sample(
    runtime: &Arc<dyn Runtime>,
    instance_arn: &str,
    reserved: &HashMap<String, (u32, u32)>,
) -> Vec<TaskStats> {
    let listed = match runtime.list(labels::INSTANCE, instance_arn).await {
        Ok(l) => l,
        Err(e) => {
            tracing::debug!(error = %e, "stats: cannot list containers");
            return Vec::new();
        }
    };
    let at_ms = (crate::engine::now() * 1000.0) as i64;
    // A spare pause container a task took keeps the spare's labels: its name says the task.
    let arn_of: HashMap<String, String> = listed
        .iter()
        .filter_map(|c| c.labels.get(labels::TASK_ARN))
        .map(|arn| {
            (
                arn.rsplit('/').next().unwrap_or_default().to_string(),
                arn.clone(),
            )
        })
        .collect();
    let usage: Vec<Sampled> =
        futures::stream::iter(listed.into_iter().filter(|c| c.running).filter_map(|c| {
            if c.labels.contains_key(crate::spares::SPARE_LABEL) {
                let task = arn_of.get(crate::spares::taken_by(&c.name)?)?.clone();
                return Some((task, crate::engine::PAUSE_NAME.to_string(), c.id));
            }
            let task = c.labels.get(labels::TASK_ARN)?.clone();
            let name = c
                .labels
                .get(labels::CONTAINER_NAME)
                .cloned()
                .unwrap_or_default();
            Some((task, name, c.id))
        }))
        .map(|(task, name, id)| async move {
            match runtime.stats(&id).await {
                Ok(v) if !v.is_null() => Some((task, name, container_usage(&v))),
                Ok(_) => None,
                Err(e) => {
                    tracing::debug!(container = id, error = %e, "stats: no sample");
                    None
                }
            }
        })
        .buffer_unordered(CONCURRENT)
        .filter_map(futures::future::ready)
        .collect()
        .await;
    task_stats(&usage, reserved, at_ms)
}

/// Samples and sends every `every` until `stop` turns true.
pub async fn run(
    runtime: Arc<dyn Runtime>,
    client: ServerClient,
    id: Identity,
    reserved: Arc<Mutex<HashMap<String, (u32, u32)>>>,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let reserved = reserved.lock().map(|r| r.clone()).unwrap_or_default();
        let tasks = sample(&runtime, &id.container_instance_arn, &reserved).await;
        if tasks.is_empty() {
            continue;
        }
        if let Err(e) = client.send_stats(&id, &StatsReport { tasks }).await {
            tracing::debug!(error = %e, "stats not sent; the next sample carries the counters");
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A cgroup v1 sample as Docker 20.10 returns it, trimmed.
    fn v1() -> Value {
        json!({
            "cpu_stats": {"cpu_usage": {"total_usage": 3_000_000_000u64, "percpu_usage": [1, 2]},
                          "system_cpu_usage": 20_000_000_000u64, "online_cpus": 2},
            "precpu_stats": {"cpu_usage": {"total_usage": 2_000_000_000u64},
                             "system_cpu_usage": 18_000_000_000u64},
            "memory_stats": {"usage": 50 << 20, "stats": {"total_inactive_file": 10 << 20, "cache": 12 << 20}},
            "networks": {"eth0": {"rx_bytes": 1000, "tx_bytes": 200}, "eth1": {"rx_bytes": 1, "tx_bytes": 2}},
            "blkio_stats": {"io_service_bytes_recursive": [
                {"major": 8, "minor": 0, "op": "Read", "value": 4096},
                {"major": 8, "minor": 0, "op": "Write", "value": 8192},
                {"major": 8, "minor": 0, "op": "Total", "value": 12288}]}
        })
    }

    #[test]
    fn reads_dockers_shape() {
        let u = container_usage(&v1());
        // 1 s of CPU over 2 s of (2-core) system time: one core's half, 1024 units.
        assert!(
            (u.cpu_units - 1024.0).abs() < 1e-6,
            "cpu units: {}",
            u.cpu_units
        );
        assert_eq!(u.memory_bytes, 40 << 20, "usage less inactive_file");
        assert_eq!((u.rx_bytes, u.tx_bytes), (1001, 202), "all interfaces");
        assert_eq!(
            (u.read_bytes, u.write_bytes),
            (4096, 8192),
            "Total not counted"
        );
    }

    #[test]
    fn first_sample_and_empty_shapes_are_zero_not_nonsense() {
        let mut s = v1();
        s["precpu_stats"] = json!({});
        assert_eq!(container_usage(&s).cpu_units, 0.0, "no previous sample");
        assert_eq!(container_usage(&json!({})), ContainerUsage::default());
        let v2 = json!({"memory_stats": {"usage": 100, "stats": {"inactive_file": 30}},
                        "blkio_stats": {"io_service_bytes_recursive": [{"op": "read", "value": 5}]}});
        let u = container_usage(&v2);
        assert_eq!((u.memory_bytes, u.read_bytes), (70, 5), "cgroup v2 names");
    }

    #[test]
    fn sums_per_task_with_its_reservation() {
        let a = ContainerUsage {
            cpu_units: 100.0,
            memory_bytes: 10,
            rx_bytes: 1,
            ..Default::default()
        };
        let rows = vec![
            ("t1".to_string(), "web".to_string(), a),
            ("t2".into(), "web".into(), a),
            ("t1".into(), "log".into(), a),
        ];
        let reserved = HashMap::from([("t1".to_string(), (256, 512))]);
        let out = task_stats(&rows, &reserved, 7);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].task_arn, "t1");
        assert_eq!(
            (out[0].cpu_units, out[0].memory_bytes, out[0].containers),
            (200.0, 20, 2)
        );
        assert_eq!(
            (out[0].cpu_reserved, out[0].memory_reserved_mib),
            (256, 512)
        );
        assert_eq!(
            (out[1].cpu_reserved, out[1].at_ms),
            (0, 7),
            "unknown reservation"
        );
    }

    #[test]
    fn an_awsvpc_task_counts_its_shared_network_once_and_not_its_pause() {
        let shared = ContainerUsage {
            cpu_units: 10.0,
            rx_bytes: 500,
            tx_bytes: 70,
            ..Default::default()
        };
        let pause = crate::engine::PAUSE_NAME.to_string();
        let rows = vec![
            ("t1".to_string(), "web".to_string(), shared),
            ("t1".into(), pause, shared),
            ("t1".into(), "log".into(), shared),
        ];
        let out = task_stats(&rows, &HashMap::new(), 7);
        assert_eq!(out.len(), 1);
        assert_eq!(
            (out[0].network_rx_bytes, out[0].network_tx_bytes),
            (500, 70)
        );
        assert_eq!((out[0].cpu_units, out[0].containers), (20.0, 2));
        assert_eq!(out[0].per_container.len(), 2);
    }
}
