//! CloudWatch Logs on Berth's port, through the real AWS CLI and `aws-sdk-cloudwatchlogs`:
//! groups, streams, events in pages both ways, filter patterns, retention, tags, and Logs' own
//! errors; and a request signed for the wrong service refused.
#![allow(clippy::unwrap_used)]

mod common;
use aws_sdk_cloudwatchlogs::error::ProvideErrorMetadata;
use aws_sdk_cloudwatchlogs::types::{InputLogEvent, OrderBy};
use common::{aws_cli, aws_json, TestServer};
use serde_json::{json, Value};
use std::time::{SystemTime, UNIX_EPOCH};

fn client(s: &TestServer) -> aws_sdk_cloudwatchlogs::Client {
    common::sdk_client!(aws_sdk_cloudwatchlogs, s)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn event(ts: i64, msg: &str) -> InputLogEvent {
    InputLogEvent::builder()
        .timestamp(ts)
        .message(msg)
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_aws_cli_drives_groups_streams_and_events() {
    let Some(cli) = aws_cli() else { return };
    let s = TestServer::start().await;
    let aws = |args: &[&str]| aws_json(&cli, &s, &s.secret_key, "logs", args);

    aws(&[
        "create-log-group",
        "--log-group-name",
        "/ecs/web",
        "--tags",
        "team=a",
    ])
    .unwrap();
    aws(&["create-log-group", "--log-group-name", "/ecs/worker"]).unwrap();
    let e = aws(&["create-log-group", "--log-group-name", "/ecs/web"]).unwrap_err();
    assert!(
        e.contains("ResourceAlreadyExistsException")
            && e.contains("The specified log group already exists"),
        "a second create says so in Logs' words: {e}"
    );
    let e = aws(&["create-log-group", "--log-group-name", "bad name"]).unwrap_err();
    assert!(e.contains("InvalidParameterException"), "{e}");

    // Pages of one, followed by the CLI itself.
    let groups = aws(&[
        "describe-log-groups",
        "--log-group-name-prefix",
        "/ecs/",
        "--page-size",
        "1",
    ])
    .unwrap();
    let names: Vec<&str> = groups["logGroups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["logGroupName"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["/ecs/web", "/ecs/worker"]);
    assert_eq!(
        groups["logGroups"][0]["arn"],
        "arn:aws:logs:us-east-1:000000000000:log-group:/ecs/web:*"
    );
    let tags = aws(&[
        "list-tags-for-resource",
        "--resource-arn",
        "arn:aws:logs:us-east-1:000000000000:log-group:/ecs/web",
    ])
    .unwrap();
    assert_eq!(tags["tags"]["team"], "a");

    aws(&[
        "create-log-stream",
        "--log-group-name",
        "/ecs/web",
        "--log-stream-name",
        "ecs/app/1",
    ])
    .unwrap();
    let now = now_ms();
    let events = serde_json::json!([
        {"timestamp": now, "message": "INFO started"},
        {"timestamp": now + 1, "message": "ERROR boom"},
        {"timestamp": now + 2, "message": "INFO done"},
    ])
    .to_string();
    let put = aws(&[
        "put-log-events",
        "--log-group-name",
        "/ecs/web",
        "--log-stream-name",
        "ecs/app/1",
        "--log-events",
        &events,
    ])
    .unwrap();
    assert!(put.get("rejectedLogEventsInfo").is_none(), "{put}");

    let got = aws(&[
        "get-log-events",
        "--log-group-name",
        "/ecs/web",
        "--log-stream-name",
        "ecs/app/1",
        "--start-from-head",
    ])
    .unwrap();
    let messages: Vec<&str> = got["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["message"].as_str().unwrap())
        .collect();
    assert_eq!(messages, ["INFO started", "ERROR boom", "INFO done"]);

    let filtered = aws(&[
        "filter-log-events",
        "--log-group-name",
        "/ecs/web",
        "--filter-pattern",
        "ERROR",
    ])
    .unwrap();
    assert_eq!(
        filtered["events"].as_array().unwrap().len(),
        1,
        "{filtered}"
    );
    assert_eq!(filtered["events"][0]["logStreamName"], "ecs/app/1");

    let e = aws(&[
        "filter-log-events",
        "--log-group-name",
        "/ecs/web",
        "--filter-pattern",
        "\"unclosed",
    ])
    .unwrap_err();
    assert!(
        e.contains("InvalidParameterException"),
        "a malformed pattern is refused: {e}"
    );

    let e = aws(&[
        "put-retention-policy",
        "--log-group-name",
        "/ecs/web",
        "--retention-in-days",
        "2",
    ])
    .unwrap_err();
    assert!(e.contains("InvalidParameterException"), "{e}");
    aws(&[
        "put-retention-policy",
        "--log-group-name",
        "/ecs/web",
        "--retention-in-days",
        "7",
    ])
    .unwrap();
    let g = aws(&["describe-log-groups", "--log-group-name-prefix", "/ecs/web"]).unwrap();
    assert_eq!(g["logGroups"][0]["retentionInDays"], 7);

    let streams = aws(&["describe-log-streams", "--log-group-name", "/ecs/web"]).unwrap();
    let st = &streams["logStreams"][0];
    assert_eq!(st["logStreamName"], "ecs/app/1");
    assert_eq!(st["firstEventTimestamp"], Value::from(now));
    assert_eq!(st["lastEventTimestamp"], Value::from(now + 2));

    let e = aws(&[
        "get-log-events",
        "--log-group-name",
        "/ecs/nope",
        "--log-stream-name",
        "x",
    ])
    .unwrap_err();
    assert!(
        e.contains("ResourceNotFoundException")
            && e.contains("The specified log group does not exist."),
        "{e}"
    );
    aws(&[
        "delete-log-stream",
        "--log-group-name",
        "/ecs/web",
        "--log-stream-name",
        "ecs/app/1",
    ])
    .unwrap();
    let e = aws(&[
        "get-log-events",
        "--log-group-name",
        "/ecs/web",
        "--log-stream-name",
        "ecs/app/1",
    ])
    .unwrap_err();
    assert!(
        e.contains("The specified log stream does not exist."),
        "{e}"
    );
    aws(&["delete-log-group", "--log-group-name", "/ecs/web"]).unwrap();
    let left = aws(&["describe-log-groups"]).unwrap();
    assert_eq!(left["logGroups"].as_array().unwrap().len(), 1);
    s.stop().await;
}

#[tokio::test]
async fn the_sdk_reads_every_event_once_in_pages_both_ways() {
    let s = TestServer::start().await;
    let logs = client(&s);
    logs.create_log_group()
        .log_group_name("g")
        .send()
        .await
        .unwrap();
    logs.create_log_stream()
        .log_group_name("g")
        .log_stream_name("s")
        .send()
        .await
        .unwrap();
    // 25,000 events in three batches.
    let base = now_ms() - 60_000;
    let mut n = 0;
    for size in [10_000, 10_000, 5_000] {
        let batch: Vec<InputLogEvent> = (0..size)
            .map(|i| {
                event(
                    base + n + i,
                    &format!(
                        "line {:05} {}",
                        n + i,
                        if (n + i) % 1000 == 7 { "needle" } else { "hay" }
                    ),
                )
            })
            .collect();
        n += size;
        let r = logs
            .put_log_events()
            .log_group_name("g")
            .log_stream_name("s")
            .set_log_events(Some(batch))
            .send()
            .await
            .unwrap();
        assert!(r.rejected_log_events_info().is_none());
    }

    // Forward from the head, following nextForwardToken until it comes back unchanged.
    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    for _ in 0..20 {
        let r = logs
            .get_log_events()
            .log_group_name("g")
            .log_stream_name("s")
            .start_from_head(true)
            .set_next_token(token.clone())
            .send()
            .await
            .unwrap();
        seen.extend(r.events().iter().map(|e| e.message().unwrap().to_string()));
        let next = r.next_forward_token().map(str::to_string);
        if next == token {
            break;
        }
        token = next;
    }
    assert_eq!(seen.len(), 25_000, "every event, once");
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "in order");

    // Backward from the tail, 1,000 at a time.
    let mut back = Vec::new();
    let mut token: Option<String> = None;
    for _ in 0..40 {
        let r = logs
            .get_log_events()
            .log_group_name("g")
            .log_stream_name("s")
            .limit(1000)
            .set_next_token(token.clone())
            .send()
            .await
            .unwrap();
        let mut page: Vec<String> = r
            .events()
            .iter()
            .map(|e| e.message().unwrap().to_string())
            .collect();
        page.extend(back);
        back = page;
        let next = r.next_backward_token().map(str::to_string);
        if next == token {
            break;
        }
        token = next;
    }
    assert_eq!(back, seen, "backward pages give the same events");

    // The paginator of FilterLogEvents over a rare term.
    let mut found = Vec::new();
    let mut pages = logs
        .filter_log_events()
        .log_group_name("g")
        .filter_pattern("needle")
        .limit(10)
        .into_paginator()
        .send();
    while let Some(p) = pages.next().await {
        found.extend(
            p.unwrap()
                .events()
                .iter()
                .map(|e| e.message().unwrap().to_string()),
        );
    }
    assert_eq!(found.len(), 25, "{found:?}");
    assert!(found.iter().all(|m| m.ends_with("needle")));

    // A time window.
    let w = logs
        .filter_log_events()
        .log_group_name("g")
        .start_time(base + 100)
        .end_time(base + 110)
        .send()
        .await
        .unwrap();
    assert_eq!(
        w.events().len(),
        10,
        "startTime is inclusive, endTime exclusive"
    );

    let d = logs
        .describe_log_streams()
        .log_group_name("g")
        .order_by(OrderBy::LastEventTime)
        .descending(true)
        .send()
        .await
        .unwrap();
    assert_eq!(
        d.log_streams()[0].last_event_timestamp(),
        Some(base + 24_999)
    );
    s.stop().await;
}

#[tokio::test]
async fn bad_batches_are_refused_whole_and_odd_events_reported() {
    let s = TestServer::start().await;
    let logs = client(&s);
    logs.create_log_group()
        .log_group_name("g")
        .send()
        .await
        .unwrap();
    logs.create_log_stream()
        .log_group_name("g")
        .log_stream_name("s")
        .send()
        .await
        .unwrap();
    let now = now_ms();
    let put = |events: Vec<InputLogEvent>| {
        logs.put_log_events()
            .log_group_name("g")
            .log_stream_name("s")
            .set_log_events(Some(events))
            .send()
    };
    let e = put(vec![event(now, "b"), event(now - 1, "a")])
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("InvalidParameterException"));
    assert_eq!(
        e.message(),
        Some("Log events in a single PutLogEvents request must be in chronological order.")
    );
    let big = "x".repeat(200_000);
    let e = put((0..6).map(|_| event(now, &big)).collect())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("InvalidParameterException"), "{e:?}");
    let e = put(vec![
        event(now - 30 * 3600 * 1000, "old"),
        event(now, "new"),
    ])
    .await
    .unwrap_err();
    assert!(e.message().unwrap().contains("24 hours"));

    let r = put(vec![
        event(now - 15 * 86_400_000, "too old"),
        event(now - 15 * 86_400_000 + 1, "too old too"),
    ])
    .await
    .unwrap();
    let info = r
        .rejected_log_events_info()
        .expect("rejections are reported");
    assert_eq!(info.too_old_log_event_end_index(), Some(1));
    let r = put(vec![
        event(now - 1000, "kept"),
        event(now + 3 * 3_600_000, "too new"),
    ])
    .await
    .unwrap();
    let info = r
        .rejected_log_events_info()
        .expect("rejections are reported");
    assert_eq!(info.too_new_log_event_start_index(), Some(1));
    assert_eq!(info.too_old_log_event_end_index(), None);

    let all = logs
        .get_log_events()
        .log_group_name("g")
        .log_stream_name("s")
        .start_from_head(true)
        .send()
        .await
        .unwrap();
    let messages: Vec<&str> = all.events().iter().map(|e| e.message().unwrap()).collect();
    assert_eq!(
        messages,
        ["kept"],
        "refused batches stored nothing; rejected events are not stored"
    );

    let e = logs
        .put_log_events()
        .log_group_name("g")
        .log_stream_name("nope")
        .log_events(event(now, "x"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("ResourceNotFoundException"));
    let e = logs
        .describe_log_streams()
        .log_group_name("g")
        .log_stream_name_prefix("s")
        .order_by(OrderBy::LastEventTime)
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        e.message(),
        Some("Cannot order by LastEventTime with a logStreamNamePrefix.")
    );
    s.stop().await;
}

#[tokio::test]
async fn retention_makes_old_events_disappear() {
    let s = TestServer::start().await;
    let logs = client(&s);
    logs.create_log_group()
        .log_group_name("r")
        .send()
        .await
        .unwrap();
    logs.create_log_stream()
        .log_group_name("r")
        .log_stream_name("s")
        .send()
        .await
        .unwrap();
    let now = now_ms();
    let day = 86_400_000;
    logs.put_log_events()
        .log_group_name("r")
        .log_stream_name("s")
        .log_events(event(now - 3 * day, "three days old"))
        .log_events(event(now - 1000, "fresh"))
        .send()
        .await
        .unwrap_err(); // spans more than a day: refused whole
    for (ts, m) in [(now - 3 * day, "three days old"), (now - 1000, "fresh")] {
        logs.put_log_events()
            .log_group_name("r")
            .log_stream_name("s")
            .log_events(event(ts, m))
            .send()
            .await
            .unwrap();
    }
    logs.put_retention_policy()
        .log_group_name("r")
        .retention_in_days(1)
        .send()
        .await
        .unwrap();
    let got = logs
        .filter_log_events()
        .log_group_name("r")
        .send()
        .await
        .unwrap();
    let messages: Vec<&str> = got.events().iter().map(|e| e.message().unwrap()).collect();
    assert_eq!(messages, ["fresh"], "events past retention are gone");
    s.stop().await;
}

#[tokio::test]
async fn requests_signed_for_another_service_are_refused() {
    let s = TestServer::start().await;
    // A Logs target signed for `ecs`.
    let body = r#"{"logGroupName":"x"}"#;
    let headers = berth_api::sigv4::sign_request(
        &berth_api::sigv4::SigningKey {
            access_key: &s.access_key,
            secret: &s.secret_key,
            region: "us-east-1",
            service: "ecs",
        },
        "POST",
        &format!("{}/", s.endpoint),
        &[
            ("host", &s.addr.to_string()),
            ("content-type", "application/x-amz-json-1.1"),
            ("x-amz-target", "Logs_20140328.CreateLogGroup"),
        ],
        body.as_bytes(),
        SystemTime::now(),
    )
    .unwrap();
    let mut all: Vec<(String, String)> = vec![
        ("content-type".into(), "application/x-amz-json-1.1".into()),
        ("x-amz-target".into(), "Logs_20140328.CreateLogGroup".into()),
    ];
    all.extend(headers);
    let a = common::raw_request(&s.endpoint, "POST", "/", &all, body.as_bytes().to_vec()).await;
    assert_eq!(a.status, 403, "{}", a.body);
    assert!(
        a.body["message"]
            .as_str()
            .unwrap()
            .contains("Credential should be scoped to correct service: 'logs'"),
        "{}",
        a.body
    );
    // The same, signed for `logs`, works.
    let logs = client(&s);
    logs.create_log_group()
        .log_group_name("x")
        .send()
        .await
        .unwrap();
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metric_filters_turn_matching_events_into_cloudwatch_metrics() {
    let Some(cli) = aws_cli() else { return };
    let s = TestServer::start().await;
    let aws = |service: &str, args: &[&str]| aws_json(&cli, &s, &s.secret_key, service, args);
    let logs = |args: &[&str]| aws("logs", args);
    logs(&["create-log-group", "--log-group-name", "/app"]).unwrap();
    logs(&[
        "create-log-stream",
        "--log-group-name",
        "/app",
        "--log-stream-name",
        "s",
    ])
    .unwrap();
    let e = logs(&[
        "put-metric-filter",
        "--log-group-name",
        "/nope",
        "--filter-name",
        "f",
        "--filter-pattern",
        "ERROR",
        "--metric-transformations",
        "metricName=Errors,metricNamespace=App,metricValue=1",
    ])
    .unwrap_err();
    assert!(e.contains("ResourceNotFoundException"), "{e}");
    let e = logs(&[
        "put-metric-filter",
        "--log-group-name",
        "/app",
        "--filter-name",
        "f",
        "--filter-pattern",
        "[ip, status",
        "--metric-transformations",
        "metricName=Errors,metricNamespace=App,metricValue=1",
    ])
    .unwrap_err();
    assert!(
        e.contains("InvalidParameterException") && e.contains("position"),
        "a malformed pattern is refused with its position: {e}"
    );
    let e = logs(&[
        "put-metric-filter",
        "--log-group-name",
        "/app",
        "--filter-name",
        "f",
        "--filter-pattern",
        "[ip, status, bytes]",
        "--metric-transformations",
        "metricName=Bytes,metricNamespace=App,metricValue=$size",
    ])
    .unwrap_err();
    assert!(e.contains("unknown field '$size'"), "{e}");
    // Errors counted (0 for other events), and bytes by status from space-delimited fields.
    logs(&[
        "put-metric-filter",
        "--log-group-name",
        "/app",
        "--filter-name",
        "errors",
        "--filter-pattern",
        "ERROR",
        "--metric-transformations",
        "metricName=Errors,metricNamespace=App,metricValue=1,defaultValue=0",
    ])
    .unwrap();
    logs(&[
        "put-metric-filter",
        "--log-group-name",
        "/app",
        "--filter-name",
        "bytes",
        "--filter-pattern",
        "[ip, status, bytes]",
        "--metric-transformations",
        r#"[{"metricName":"Bytes","metricNamespace":"App","metricValue":"$bytes","dimensions":{"Status":"$status"},"unit":"Bytes"}]"#,
    ])
    .unwrap();
    let described = logs(&["describe-metric-filters", "--log-group-name", "/app"]).unwrap();
    let filters = described["metricFilters"].as_array().unwrap();
    assert_eq!(filters.len(), 2, "{described:#}");
    assert_eq!(filters[0]["filterName"], "bytes");
    assert_eq!(
        filters[0]["metricTransformations"][0]["dimensions"]["Status"],
        "$status"
    );
    let by_metric = logs(&[
        "describe-metric-filters",
        "--metric-name",
        "Errors",
        "--metric-namespace",
        "App",
    ])
    .unwrap();
    assert_eq!(by_metric["metricFilters"].as_array().unwrap().len(), 1);
    let groups = logs(&["describe-log-groups", "--log-group-name-prefix", "/app"]).unwrap();
    assert_eq!(groups["logGroups"][0]["metricFilterCount"], 2);
    let count = |args: &[&str]| {
        let mut all = vec!["describe-log-groups"];
        all.extend_from_slice(args);
        logs(&all).unwrap()["logGroups"].as_array().unwrap().len()
    };
    assert_eq!(
        count(&["--log-group-class", "INFREQUENT_ACCESS"]),
        0,
        "every group is STANDARD"
    );
    assert_eq!(count(&["--log-group-class", "STANDARD"]), 1);
    assert_eq!(count(&["--account-identifiers", "000000000000"]), 1);
    assert_eq!(
        count(&["--account-identifiers", "111111111111"]),
        0,
        "another account's"
    );

    let now = now_ms();
    let minute_start = now - now % 60_000;
    let ts = minute_start.max(now - 30_000);
    let events = json!([
        {"timestamp": ts, "message": "10.0.0.1 200 512"},
        {"timestamp": ts, "message": "10.0.0.2 404 20"},
        {"timestamp": ts + 1, "message": "ERROR disk full"},
        {"timestamp": ts + 2, "message": "10.0.0.1 200 100"}
    ])
    .to_string();
    logs(&[
        "put-log-events",
        "--log-group-name",
        "/app",
        "--log-stream-name",
        "s",
        "--log-events",
        &events,
    ])
    .unwrap();
    let cw = |args: &[&str]| aws("cloudwatch", args);
    let start = ((ts / 1000) - 120).to_string();
    let end = ((ts / 1000) + 120).to_string();
    let stat = |name: &str, dims: &[&str], statistic: &str| {
        let mut args = vec![
            "get-metric-statistics",
            "--namespace",
            "App",
            "--metric-name",
            name,
            "--start-time",
            &start,
            "--end-time",
            &end,
            "--period",
            "300",
            "--statistics",
            statistic,
        ];
        if !dims.is_empty() {
            args.push("--dimensions");
            args.extend_from_slice(dims);
        }
        let v = cw(&args).unwrap();
        v["Datapoints"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p[statistic].as_f64().unwrap())
            .sum::<f64>()
    };
    assert_eq!(stat("Errors", &[], "Sum"), 1.0, "one ERROR event");
    assert_eq!(
        stat("Errors", &[], "SampleCount"),
        4.0,
        "every event reports: 1 for the match, the default 0 for the rest"
    );
    assert_eq!(
        stat("Bytes", &["Name=Status,Value=200"], "Sum"),
        612.0,
        "bytes of the 200s, by the Status dimension"
    );
    assert_eq!(stat("Bytes", &["Name=Status,Value=404"], "Sum"), 20.0);

    // TestMetricFilter shows what a pattern extracts.
    let tested = logs(&[
        "test-metric-filter",
        "--filter-pattern",
        "[ip, status = 4*, bytes]",
        "--log-event-messages",
        "10.0.0.2 404 20",
        "10.0.0.1 200 512",
    ])
    .unwrap();
    assert_eq!(
        tested["matches"],
        json!([{"eventNumber": 1, "eventMessage": "10.0.0.2 404 20",
                "extractedValues": {"$ip": "10.0.0.2", "$status": "404", "$bytes": "20"}}])
    );

    logs(&[
        "delete-metric-filter",
        "--log-group-name",
        "/app",
        "--filter-name",
        "errors",
    ])
    .unwrap();
    let e = logs(&[
        "delete-metric-filter",
        "--log-group-name",
        "/app",
        "--filter-name",
        "errors",
    ])
    .unwrap_err();
    assert!(
        e.contains("ResourceNotFoundException")
            && e.contains("The specified metric filter does not exist."),
        "{e}"
    );
    // Filters survive a restart, and keep counting.
    let s = s.restart().await;
    let after = aws_json(
        &cli,
        &s,
        &s.secret_key,
        "logs",
        &["describe-metric-filters", "--log-group-name", "/app"],
    )
    .unwrap();
    assert_eq!(
        after["metricFilters"].as_array().unwrap().len(),
        1,
        "{after:#}"
    );
    s.stop().await;
}

#[tokio::test]
async fn filter_log_events_reads_newest_first_when_asked() {
    let s = TestServer::start().await;
    let call = |op: &'static str, body: Value| {
        let s = &s;
        async move { common::signed_logs_call(s, op, &body).await }
    };
    call("CreateLogGroup", json!({"logGroupName": "/n"})).await;
    call(
        "CreateLogStream",
        json!({"logGroupName": "/n", "logStreamName": "s"}),
    )
    .await;
    let t0 = now_ms() - 60_000;
    let events: Vec<Value> = (0..5)
        .map(|i| json!({"timestamp": t0 + i, "message": format!("e{i}")}))
        .collect();
    let a = call(
        "PutLogEvents",
        json!({"logGroupName": "/n", "logStreamName": "s", "logEvents": events}),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let messages = |v: &Value| -> Vec<String> {
        v["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["message"].as_str().unwrap().to_string())
            .collect()
    };
    let p1 = call(
        "FilterLogEvents",
        json!({"logGroupName": "/n", "startFromHead": false, "limit": 2, "startTime": t0}),
    )
    .await;
    assert_eq!(
        messages(&p1.body),
        ["e4", "e3"],
        "newest first: {}",
        p1.body
    );
    let p2 = call(
        "FilterLogEvents",
        json!({"logGroupName": "/n", "limit": 2, "startTime": t0,
               "nextToken": p1.body["nextToken"]}),
    )
    .await;
    assert_eq!(
        messages(&p2.body),
        ["e2", "e1"],
        "the token keeps the direction"
    );
    let head = call(
        "FilterLogEvents",
        json!({"logGroupName": "/n", "limit": 2, "startTime": t0}),
    )
    .await;
    assert_eq!(
        messages(&head.body),
        ["e0", "e1"],
        "oldest first by default"
    );
    let old = call(
        "FilterLogEvents",
        json!({"logGroupName": "/n", "startFromHead": false, "startTime": 1_600_000_000_000i64}),
    )
    .await;
    assert_eq!(
        old.error_type().as_deref(),
        Some("InvalidParameterException"),
        "{}",
        old.body
    );
    s.stop().await;
}
