//! `GET /metrics`, read by Prometheus's own exposition parser (the `prometheus_client` Python
//! package that scripts/test installs; BERTH_PYTHON names its interpreter), after real calls:
//! the figures move as the calls say.
#![allow(clippy::unwrap_used)]

mod common;
use common::TestServer;
use serde_json::{json, Value};

fn sample(families: &Value, family: &str, labels: Value) -> f64 {
    common::metric(families, family, family, labels)
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
    let families = common::parse_openmetrics(&text);
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
        common::metric(
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
