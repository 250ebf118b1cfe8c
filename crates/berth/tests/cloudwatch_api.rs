//! CloudWatch's metrics API on Berth's port, through the real AWS CLI (which speaks Smithy RPC
//! v2 CBOR to CloudWatch), `aws-sdk-cloudwatch` (CBOR too) and a raw JSON 1.0 call:
//! PutMetricData in its three forms, GetMetricStatistics, GetMetricData in pages both ways,
//! ListMetrics' filters, CloudWatch's errors, and data that survives a restart.
#![allow(clippy::unwrap_used)]

mod common;
use aws_sdk_cloudwatch::error::ProvideErrorMetadata;
use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{
    Dimension, Metric, MetricDataQuery, MetricDatum, MetricStat, ScanBy, StandardUnit, StatisticSet,
};
use common::{aws_cli, aws_json, raw_request, TestServer};
use serde_json::{json, Value};
use std::time::{SystemTime, UNIX_EPOCH};

fn client(s: &TestServer) -> aws_sdk_cloudwatch::Client {
    common::sdk_client!(aws_sdk_cloudwatch, s)
}

/// The start of the minute `minutes_ago` minutes back, in seconds.
fn minute(minutes_ago: i64) -> i64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    now - now % 60 - minutes_ago * 60
}

fn iso(secs: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(secs).unwrap();
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_aws_cli_puts_and_reads_metrics_over_cbor() {
    let Some(cli) = aws_cli() else { return };
    let s = TestServer::start().await;
    let aws = |args: &[&str]| aws_json(&cli, &s, &s.secret_key, "cloudwatch", args);
    let (t0, t1) = (minute(10), minute(9));
    let data = json!([
        {"MetricName": "Latency", "Dimensions": [{"Name": "Route", "Value": "/"}],
         "Timestamp": t0, "Value": 10, "Unit": "Milliseconds"},
        {"MetricName": "Latency", "Dimensions": [{"Name": "Route", "Value": "/"}],
         "Timestamp": t0 + 30, "Value": 30, "Unit": "Milliseconds"},
        {"MetricName": "Latency", "Dimensions": [{"Name": "Route", "Value": "/"}],
         "Timestamp": t1, "Values": [100, 200], "Counts": [1, 3], "Unit": "Milliseconds"},
        {"MetricName": "Latency", "Dimensions": [{"Name": "Route", "Value": "/api"}],
         "Timestamp": t0, "Value": 5, "Unit": "Milliseconds"},
        {"MetricName": "Errors", "Timestamp": t0, "Value": 1, "Unit": "Count"}
    ])
    .to_string();
    let out = aws(&[
        "put-metric-data",
        "--namespace",
        "App",
        "--metric-data",
        &data,
    ])
    .unwrap();
    assert_eq!(out, Value::Null, "PutMetricData answers nothing");

    let stats = aws(&[
        "get-metric-statistics",
        "--namespace",
        "App",
        "--metric-name",
        "Latency",
        "--dimensions",
        "Name=Route,Value=/",
        "--start-time",
        &iso(t0),
        "--end-time",
        &iso(t1 + 60),
        "--period",
        "60",
        "--statistics",
        "Average",
        "Maximum",
        "SampleCount",
        "Sum",
    ])
    .unwrap();
    assert_eq!(stats["Label"], "Latency");
    let mut points = stats["Datapoints"].as_array().unwrap().clone();
    points.sort_by_key(|p| p["Timestamp"].as_f64().unwrap() as i64);
    assert_eq!(points.len(), 2, "one datapoint per minute: {stats:#}");
    assert_eq!(points[0]["Average"], 20.0, "10 and 30 in the first minute");
    assert_eq!(points[0]["SampleCount"], 2.0);
    assert_eq!(points[0]["Unit"], "Milliseconds");
    assert_eq!(points[1]["Sum"], 700.0, "100 once and 200 three times");
    assert_eq!(points[1]["Maximum"], 200.0);
    // AWS CLI v1 shows a timestamp as it was received: CBOR's tagged epoch seconds.
    assert_eq!(points[0]["Timestamp"], t0 as f64, "the period's start");

    // Five minutes at once, and another unit filters everything out.
    let five = aws(&[
        "get-metric-statistics",
        "--namespace=App",
        "--metric-name=Latency",
        "--dimensions=Name=Route,Value=/",
        &format!("--start-time={}", iso(minute(15))),
        &format!("--end-time={}", iso(minute(0))),
        "--period=300",
        "--statistics=SampleCount",
    ])
    .unwrap();
    let total: f64 = five["Datapoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["SampleCount"].as_f64().unwrap())
        .sum();
    assert_eq!(total, 6.0, "2 + 4 samples in 300-second periods: {five:#}");
    let none = aws(&[
        "get-metric-statistics",
        "--namespace=App",
        "--metric-name=Latency",
        "--dimensions=Name=Route,Value=/",
        &format!("--start-time={}", iso(t0)),
        &format!("--end-time={}", iso(t1 + 60)),
        "--period=60",
        "--statistics=Sum",
        "--unit=Seconds",
    ])
    .unwrap();
    assert_eq!(none["Datapoints"], json!([]), "no data in Seconds");

    let queries = json!([
        {"Id": "root", "MetricStat": {"Metric": {"Namespace": "App", "MetricName": "Latency",
            "Dimensions": [{"Name": "Route", "Value": "/"}]}, "Period": 60, "Stat": "Maximum"}},
        {"Id": "errors", "Label": "errs", "MetricStat": {"Metric": {"Namespace": "App",
            "MetricName": "Errors"}, "Period": 60, "Stat": "Sum"}}
    ])
    .to_string();
    let data = aws(&[
        "get-metric-data",
        "--metric-data-queries",
        &queries,
        "--start-time",
        &iso(t0),
        "--end-time",
        &iso(t1 + 60),
    ])
    .unwrap();
    let results = data["MetricDataResults"].as_array().unwrap();
    assert_eq!(results[0]["Id"], "root");
    assert_eq!(results[0]["Label"], "Latency", "the default label");
    assert_eq!(
        results[0]["Values"],
        json!([200.0, 30.0]),
        "newest first by default"
    );
    assert_eq!(results[0]["StatusCode"], "Complete");
    assert_eq!(results[1]["Label"], "errs");
    assert_eq!(results[1]["Values"], json!([1.0]));

    let listed = aws(&["list-metrics", "--namespace", "App"]).unwrap();
    let metrics = listed["Metrics"].as_array().unwrap();
    assert_eq!(
        metrics.len(),
        3,
        "Errors and two Latency series: {listed:#}"
    );
    let by_dim = aws(&[
        "list-metrics",
        "--namespace",
        "App",
        "--dimensions",
        "Name=Route",
    ])
    .unwrap();
    assert_eq!(
        by_dim["Metrics"].as_array().unwrap().len(),
        2,
        "a dimension name alone matches every value"
    );
    let exact = aws(&[
        "list-metrics",
        "--dimensions",
        "Name=Route,Value=/api",
        "--recently-active",
        "PT3H",
    ])
    .unwrap();
    assert_eq!(
        exact["Metrics"],
        json!([{"Namespace": "App", "MetricName": "Latency",
                "Dimensions": [{"Name": "Route", "Value": "/api"}]}])
    );

    // CloudWatch's errors, by their codes.
    let err = |args: &[&str]| aws(args).unwrap_err();
    let e = err(&[
        "put-metric-data",
        "--namespace",
        "AWS/ECS",
        "--metric-name",
        "x",
        "--value",
        "1",
    ]);
    assert!(
        e.contains("(InvalidParameterValue)") && e.contains("AWS/ECS"),
        "AWS/ namespaces are CloudWatch's own: {e}"
    );
    let e = err(&[
        "get-metric-statistics",
        "--namespace=App",
        "--metric-name=Latency",
        &format!("--start-time={}", iso(t0)),
        &format!("--end-time={}", iso(t1)),
        "--period=90",
        "--statistics=Sum",
    ]);
    assert!(
        e.contains("(InvalidParameterValue)") && e.contains("Period"),
        "{e}"
    );
    let e = err(&[
        "get-metric-statistics",
        "--namespace=App",
        "--metric-name=Latency",
        &format!("--start-time={}", iso(t1)),
        &format!("--end-time={}", iso(t0)),
        "--period=60",
        "--statistics=Sum",
    ]);
    assert!(e.contains("StartTime must be less than"), "{e}");
    let e = err(&[
        "get-metric-statistics",
        "--namespace=App",
        "--metric-name=Latency",
        &format!("--start-time={}", iso(minute(60 * 24 * 3))),
        &format!("--end-time={}", iso(t1)),
        "--period=60",
        "--statistics=Sum",
    ]);
    assert!(
        e.contains("(InvalidParameterCombination)") && e.contains("1,440"),
        "{e}"
    );
    let p99 = json!([{"Id": "a", "MetricStat": {"Metric": {"Namespace": "App",
        "MetricName": "Latency"}, "Period": 60, "Stat": "p99"}}])
    .to_string();
    let e = err(&[
        "get-metric-data",
        "--metric-data-queries",
        &p99,
        "--start-time",
        &iso(t0),
        "--end-time",
        &iso(t1),
    ]);
    assert!(
        e.contains("(InvalidParameterValue)") && e.contains("p99"),
        "{e}"
    );
    let e = err(&[
        "put-metric-data",
        "--namespace",
        "App",
        "--metric-data",
        r#"[{"MetricName":"x","Value":1,"StatisticValues":{"SampleCount":1,"Sum":1,"Minimum":1,"Maximum":1}}]"#,
    ]);
    assert!(e.contains("(InvalidParameterCombination)"), "{e}");
    let e = err(&["list-metrics", "--next-token", "garbage"]);
    assert!(e.contains("(InvalidNextToken)"), "{e}");

    // Acknowledged writes survive a restart.
    let s = s.restart().await;
    let aws = |args: &[&str]| aws_json(&cli, &s, &s.secret_key, "cloudwatch", args);
    let again = aws(&["list-metrics", "--namespace", "App"]).unwrap();
    assert_eq!(
        again["Metrics"].as_array().unwrap().len(),
        3,
        "after a restart: {again:#}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_sdk_reads_statistic_sets_high_resolution_and_pages() {
    let s = TestServer::start().await;
    let cw = client(&s);
    let t0 = minute(20);
    let dim = Dimension::builder().name("Host").value("a").build();
    let mut data = Vec::new();
    for i in 0..10 {
        data.push(
            MetricDatum::builder()
                .metric_name("Load")
                .dimensions(dim.clone())
                .timestamp(DateTime::from_secs(t0 + i * 60))
                .statistic_values(
                    StatisticSet::builder()
                        .sample_count(2.0)
                        .sum(i as f64 * 2.0)
                        .minimum(0.0)
                        .maximum(i as f64 * 2.0)
                        .build(),
                )
                .unit(StandardUnit::Percent)
                .build(),
        );
    }
    for i in 0..3 {
        data.push(
            MetricDatum::builder()
                .metric_name("Fast")
                .timestamp(DateTime::from_secs(t0 + i))
                .value(i as f64)
                .storage_resolution(1)
                .build(),
        );
    }
    cw.put_metric_data()
        .namespace("Sdk")
        .set_metric_data(Some(data))
        .send()
        .await
        .unwrap();

    let query = |id: &str, name: &str, period: i32, stat: &str| {
        MetricDataQuery::builder()
            .id(id)
            .metric_stat(
                MetricStat::builder()
                    .metric(
                        Metric::builder()
                            .namespace("Sdk")
                            .metric_name(name)
                            .set_dimensions((name == "Load").then(|| vec![dim.clone()]))
                            .build(),
                    )
                    .period(period)
                    .stat(stat)
                    .build(),
            )
            .build()
    };
    // Pages of four datapoints, oldest first.
    let mut values = Vec::new();
    let mut token = None;
    for page in 0.. {
        assert!(page < 10, "paging does not end");
        let out = cw
            .get_metric_data()
            .metric_data_queries(query("avg", "Load", 60, "Average"))
            .start_time(DateTime::from_secs(t0))
            .end_time(DateTime::from_secs(t0 + 600))
            .scan_by(ScanBy::TimestampAscending)
            .max_datapoints(4)
            .set_next_token(token.clone())
            .send()
            .await
            .unwrap();
        let r = &out.metric_data_results()[0];
        assert!(r.values().len() <= 4, "MaxDatapoints holds");
        values.extend_from_slice(r.values());
        let ts = r.timestamps();
        assert!(ts.windows(2).all(|w| w[0] < w[1]), "ascending: {ts:?}");
        token = out.next_token().map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    let expected: Vec<f64> = (0..10).map(|i| i as f64).collect();
    assert_eq!(
        values, expected,
        "each minute's Sum/SampleCount, all pages together"
    );

    let fast = cw
        .get_metric_statistics()
        .namespace("Sdk")
        .metric_name("Fast")
        .start_time(DateTime::from_secs(t0))
        .end_time(DateTime::from_secs(t0 + 60))
        .period(1)
        .statistics(aws_sdk_cloudwatch::types::Statistic::Sum)
        .send()
        .await
        .unwrap();
    assert_eq!(
        fast.datapoints().len(),
        3,
        "high-resolution data in one-second periods"
    );

    let err = cw
        .get_metric_data()
        .metric_data_queries(query("Bad", "Load", 60, "Average"))
        .start_time(DateTime::from_secs(t0))
        .end_time(DateTime::from_secs(t0 + 60))
        .send()
        .await
        .unwrap_err();
    let err = err.into_service_error();
    assert!(
        err.message().unwrap_or_default().contains("Id"),
        "an Id must start lowercase: {err:?}"
    );
    let err = cw
        .put_metric_data()
        .namespace("Sdk")
        .metric_data(
            MetricDatum::builder()
                .metric_name("x")
                .value(1.0)
                .storage_resolution(5)
                .build(),
        )
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert_eq!(err.code(), Some("InvalidParameterValue"), "{err:?}");
    s.stop().await;
}

#[tokio::test]
async fn json_1_0_is_served_too_and_the_wrong_service_is_refused() {
    let s = TestServer::start().await;
    let t0 = minute(5);
    let call = |op: &'static str, body: Value, service: &'static str| {
        let s = &s;
        async move {
            let body = body.to_string();
            let headers = berth_api::sigv4::cloudwatch_request_headers(
                &berth_api::sigv4::SigningKey {
                    access_key: &s.access_key,
                    secret: &s.secret_key,
                    region: "us-east-1",
                    service,
                },
                &s.endpoint,
                op,
                body.as_bytes(),
                SystemTime::now(),
            )
            .unwrap();
            raw_request(&s.endpoint, "POST", "/", &headers, body.into_bytes()).await
        }
    };
    let a = call(
        "PutMetricData",
        json!({"Namespace": "J", "MetricData": [{"MetricName": "m", "Value": 4, "Timestamp": t0}]}),
        "monitoring",
    )
    .await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    let a = call(
        "GetMetricStatistics",
        json!({"Namespace": "J", "MetricName": "m", "StartTime": t0, "EndTime": t0 + 60,
               "Period": 60, "Statistics": ["Sum"]}),
        "monitoring",
    )
    .await;
    assert_eq!(a.body["Datapoints"][0]["Sum"], 4.0, "{:?}", a.body);
    assert_eq!(
        a.body["Datapoints"][0]["Timestamp"], t0 as f64,
        "epoch seconds in JSON"
    );
    let a = call(
        "GetMetricStatistics",
        json!({"Namespace": "J", "StartTime": t0, "EndTime": t0 + 60, "Period": 60}),
        "monitoring",
    )
    .await;
    assert_eq!(a.status, 400);
    assert_eq!(
        a.error_type().as_deref(),
        Some("MissingRequiredParameterException"),
        "{:?}",
        a.body
    );
    let a = call("ListMetrics", json!({}), "logs").await;
    assert_eq!(a.status, 403, "signed for another service: {:?}", a.body);
    let a = call("DeleteAlarms", json!({"AlarmNames": ["x"]}), "monitoring").await;
    assert_eq!(a.error_type().as_deref(), Some("UnknownOperationException"));
    assert!(
        a.body["message"]
            .as_str()
            .unwrap()
            .contains("not implemented by Berth yet"),
        "{:?}",
        a.body
    );
    s.stop().await;
}
