//! `GET /metrics`, read by Prometheus's own exposition parser (the `prometheus_client` Python
//! package that scripts/test installs; BERTH_PYTHON names its interpreter), after real calls:
//! the figures move as the calls say.
#![allow(clippy::unwrap_used)]

mod common;
use common::TestServer;
use serde_json::{json, Value};
use std::io::Write;
use std::process::{Command, Stdio};

/// The families of an OpenMetrics text, as `{name: [{name, labels, value}]}`.
fn parse(text: &str) -> Value {
    let python = std::env::var("BERTH_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = r#"
import sys, json
from prometheus_client.openmetrics.parser import text_string_to_metric_families
out = {}
for f in text_string_to_metric_families(sys.stdin.read()):
    out[f.name] = [{"name": s.name, "labels": s.labels, "value": s.value} for s in f.samples]
print(json.dumps(out))
"#;
    let mut child = Command::new(&python)
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("running {python}: {e} (run scripts/test, or set BERTH_PYTHON)")
        });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "Prometheus's parser refused the exposition (is prometheus_client installed? run scripts/test): {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn sample(families: &Value, family: &str, labels: Value) -> f64 {
    named(families, family, family, labels)
}

/// The value of the sample called `name` (a histogram's `_count`, say) of `family`.
fn named(families: &Value, family: &str, name: &str, labels: Value) -> f64 {
    families[family]
        .as_array()
        .unwrap_or_else(|| panic!("no family {family} in {families:#}"))
        .iter()
        // A counter's sample is FAMILY_total.
        .filter(|s| s["name"] == name || s["name"] == format!("{name}_total"))
        .find(|s| {
            labels
                .as_object()
                .unwrap()
                .iter()
                .all(|(k, v)| s["labels"][k] == *v)
        })
        .unwrap_or_else(|| panic!("no {name} sample with {labels} in {:#}", families[family]))
        ["value"]
        .as_f64()
        .unwrap()
}

#[tokio::test]
async fn metrics_parse_and_move_with_the_calls() {
    let s = TestServer::start().await;
    s.ok("CreateCluster", json!({"clusterName": "m"})).await;
    s.ok("CreateCluster", json!({"clusterName": "m2"})).await;
    s.err(
        "DescribeServices",
        json!({"cluster": "nope", "services": ["x"]}),
        "ClusterNotFoundException",
    )
    .await;
    let logs = |op: &'static str, body: Value| {
        let s = &s;
        async move { common::signed_logs_call(s, op, &body).await }
    };
    logs("CreateLogGroup", json!({"logGroupName": "g"})).await;
    logs(
        "CreateLogStream",
        json!({"logGroupName": "g", "logStreamName": "s"}),
    )
    .await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let put = logs(
        "PutLogEvents",
        json!({"logGroupName": "g", "logStreamName": "s", "logEvents": [
            {"timestamp": now, "message": "hello"}, {"timestamp": now, "message": "world!"}]}),
    )
    .await;
    assert_eq!(put.status, 200, "{}", put.body);

    let a = common::raw_request(&s.endpoint, "GET", "/metrics", &[], Vec::new()).await;
    assert_eq!(a.status, 200);
    let text = a.body.as_str().unwrap_or_default().to_string();
    let families = parse(&text);
    assert_eq!(
        sample(
            &families,
            "berth_api_requests",
            json!({"service": "ecs", "operation": "CreateCluster", "status": "200"})
        ),
        2.0
    );
    assert_eq!(
        sample(
            &families,
            "berth_api_requests",
            json!({"service": "ecs", "operation": "DescribeServices", "status": "400"})
        ),
        1.0
    );
    assert_eq!(
        named(
            &families,
            "berth_api_request_duration_seconds",
            "berth_api_request_duration_seconds_count",
            json!({"service": "ecs", "operation": "CreateCluster"})
        ),
        2.0,
        "each request observed once in its latency histogram"
    );
    assert_eq!(
        sample(&families, "berth_log_events_ingested", json!({})),
        2.0
    );
    assert_eq!(
        sample(&families, "berth_log_bytes_ingested", json!({})),
        11.0
    );
    assert!(sample(&families, "berth_store_revision", json!({})) >= 2.0);
    assert_eq!(sample(&families, "berth_agents_connected", json!({})), 0.0);
    s.stop().await;
}
