//! The awslogs driver on the real Docker Engine: what a container prints is readable through
//! GetLogEvents (and the AWS CLI) while it still runs, multi-line events are grouped as
//! Docker's driver groups them, a missing group fails the container in Docker's words, and
//! neither a server restart nor an agent killed mid-stream loses or repeats a line. Needs
//! Docker (BERTH_SKIP_DOCKER=1 skips explicitly).

#![allow(clippy::unwrap_used)]

mod common;

use common::{
    aws_cli, aws_json, docker_available, docker_cleanup, wait_joined, wait_task, TestAgent,
    TestServer, BUSYBOX,
};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// An agent (serving its `/metrics`), its instance ARN and its metrics address.
async fn start(
    server: &TestServer,
    dir: &std::path::Path,
) -> (TestAgent, String, std::net::SocketAddr) {
    start_reading(server, dir, true).await
}

/// The same, reading containers' json-file output from disk (`log_files`) or through
/// Docker's API.
async fn start_reading(
    server: &TestServer,
    dir: &std::path::Path,
    log_files: bool,
) -> (TestAgent, String, std::net::SocketAddr) {
    let mut cfg = TestAgent::config(server, dir);
    let metrics = free_port();
    cfg.metrics_listen = Some(metrics);
    let agent = TestAgent::start_reading(server, cfg, log_files).await;
    let instance = wait_joined(&agent).await;
    (agent, instance, metrics)
}

/// A loopback address with a port nobody listens on now.
fn free_port() -> std::net::SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

fn container(name: &str, script: &str, options: Value) -> Value {
    json!({
        "name": name,
        "image": BUSYBOX,
        "memory": 32,
        "essential": name == "app",
        "command": ["sh", "-c", script],
        "logConfiguration": {"logDriver": "awslogs", "options": options},
    })
}

async fn run(s: &TestServer, family: &str, containers: Value) -> String {
    s.ok(
        "RegisterTaskDefinition",
        json!({"family": family, "containerDefinitions": containers}),
    )
    .await;
    let v = s
        .ok(
            "RunTask",
            json!({"cluster": "default", "taskDefinition": family}),
        )
        .await;
    assert_eq!(v["failures"], json!([]), "RunTask failed: {v:#}");
    v["tasks"][0]["taskArn"].as_str().unwrap().to_string()
}

fn task_id(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap()
}

/// Every message of a stream, from the head (empty while the stream does not exist yet).
async fn messages(s: &TestServer, group: &str, stream: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    for _ in 0..100 {
        let mut body =
            json!({"logGroupName": group, "logStreamName": stream, "startFromHead": true});
        if let Some(t) = &token {
            body["nextToken"] = t.clone().into();
        }
        let a = common::signed_logs_call(s, "GetLogEvents", &body).await;
        if a.status != 200 {
            return out;
        }
        for e in a.body["events"].as_array().unwrap() {
            out.push(e["message"].as_str().unwrap().to_string());
        }
        let next = a.body["nextForwardToken"].as_str().map(str::to_string);
        if next == token {
            break;
        }
        token = next;
    }
    out
}

/// Waits until the stream holds `n` events, or panics with what it holds after `secs`.
async fn wait_for(s: &TestServer, group: &str, stream: &str, n: usize, secs: u64) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let got = messages(s, group, stream).await;
        if got.len() >= n || Instant::now() > deadline {
            assert!(
                got.len() >= n,
                "{group}/{stream} holds {} events after {secs} s, not {n}: {got:?}",
                got.len()
            );
            return got;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_is_readable_while_the_container_runs_and_grouped_as_docker_groups_it() {
    if !docker_available() {
        return;
    }
    let s = TestServer::start().await;
    s.ok("CreateCluster", json!({"clusterName": "default"}))
        .await;
    let dir = tempfile::tempdir().unwrap();
    let (agent, instance, metrics) = start(&s, dir.path()).await;
    let opts = json!({
        "awslogs-group": "/ecs/live", "awslogs-region": "us-east-1",
        "awslogs-stream-prefix": "ecs", "awslogs-create-group": "true",
    });
    let mut trace_opts = opts.clone();
    trace_opts["awslogs-datetime-format"] = "%Y-%m-%d %H:%M:%S".into();
    let task = run(
        &s,
        "live",
        json!([
            container(
                "app",
                "i=0; while [ $i -lt 30 ]; do i=$((i+1)); echo \"line $i\"; done; echo 'to stderr' >&2; sleep 600",
                opts
            ),
            container(
                "trace",
                "echo '2026-01-01 10:00:00 ERROR boom'; echo '  at a()'; echo '  at b()'; echo '2026-01-01 10:00:01 INFO next'",
                trace_opts
            ),
        ]),
    )
    .await;
    wait_task(&s, "default", &task, 60, "RUNNING", |t| {
        t["lastStatus"] == "RUNNING"
    })
    .await;
    let stream = format!("ecs/app/{}", task_id(&task));
    // Generous: on a loaded two-core machine the first batch has been seen to take long.
    let got = wait_for(&s, "/ecs/live", &stream, 31, 60).await;
    // Docker stamps stdout and stderr apart, so only stdout's own order is certain.
    let stdout: Vec<&String> = got.iter().filter(|m| m.starts_with("line ")).collect();
    let want: Vec<String> = (1..=30).map(|i| format!("line {i}")).collect();
    assert_eq!(
        stdout,
        want.iter().collect::<Vec<_>>(),
        "stdout in order, each line once: {got:?}"
    );
    assert_eq!(
        got.iter().filter(|m| *m == "to stderr").count(),
        1,
        "stderr too: {got:?}"
    );
    let t = s
        .ok(
            "DescribeTasks",
            json!({"cluster": "default", "tasks": [&task]}),
        )
        .await;
    assert_eq!(
        t["tasks"][0]["lastStatus"], "RUNNING",
        "read while the task still runs"
    );

    // The stack trace is one event under its timestamp line; the last event is flushed when
    // the container exits.
    let trace = wait_for(
        &s,
        "/ecs/live",
        &format!("ecs/trace/{}", task_id(&task)),
        2,
        30,
    )
    .await;
    assert_eq!(
        trace,
        [
            "2026-01-01 10:00:00 ERROR boom\n  at a()\n  at b()\n",
            "2026-01-01 10:00:01 INFO next\n"
        ]
    );

    // The real AWS CLI reads the same.
    if let Some(cli) = aws_cli() {
        let out = aws_json(
            &cli,
            &s,
            &s.secret_key,
            "logs",
            &[
                "get-log-events",
                "--log-group-name",
                "/ecs/live",
                "--log-stream-name",
                &stream,
                "--start-from-head",
            ],
        )
        .unwrap();
        assert_eq!(out["events"].as_array().unwrap().len(), 31, "{out}");
    }

    // The agent's own figures, read by Prometheus's parser.
    let a = common::raw_request(
        &format!("http://{metrics}"),
        "GET",
        "/metrics",
        &[],
        Vec::new(),
    )
    .await;
    assert_eq!(a.status, 200);
    let m = common::parse_openmetrics(a.body.as_str().unwrap_or_default());
    let shipped = common::metric(
        &m,
        "berth_agent_log_events_shipped",
        "berth_agent_log_events_shipped",
        json!({}),
    );
    assert!(
        shipped >= 33.0,
        "31 lines and 2 grouped events shipped, the agent says {shipped}"
    );
    let creates = common::metric(
        &m,
        "berth_agent_docker_call_duration_seconds",
        "berth_agent_docker_call_duration_seconds_count",
        json!({"call": "create", "outcome": "ok"}),
    );
    assert_eq!(creates, 2.0, "two containers created");
    assert!(
        common::metric(
            &m,
            "berth_agent_containers",
            "berth_agent_containers",
            json!({"state": "running"})
        ) >= 1.0
    );
    assert_eq!(
        common::metric(&m, "berth_agent_tasks", "berth_agent_tasks", json!({})),
        1.0
    );
    assert_eq!(
        common::metric(
            &m,
            "berth_agent_log_backlog_events",
            "berth_agent_log_backlog_events",
            json!({})
        ),
        0.0,
        "nothing left to ship"
    );

    s.ok("StopTask", json!({"cluster": "default", "task": &task}))
        .await;
    wait_task(&s, "default", &task, 60, "STOPPED", |t| {
        t["lastStatus"] == "STOPPED"
    })
    .await;
    agent.stop().await;
    docker_cleanup(&instance);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_group_fails_the_container_in_dockers_words() {
    if !docker_available() {
        return;
    }
    let s = TestServer::start().await;
    s.ok("CreateCluster", json!({"clusterName": "default"}))
        .await;
    let dir = tempfile::tempdir().unwrap();
    let (agent, instance, _) = start(&s, dir.path()).await;
    let task = run(
        &s,
        "nogroup",
        json!([container(
            "app",
            "echo hi; sleep 600",
            json!({"awslogs-group": "/ecs/none", "awslogs-region": "us-east-1", "awslogs-stream-prefix": "ecs"})
        )]),
    )
    .await;
    let t = wait_task(&s, "default", &task, 60, "STOPPED", |t| {
        t["lastStatus"] == "STOPPED"
    })
    .await;
    let reason = t["containers"][0]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("CannotStartContainerError")
            && reason
                .contains("ResourceNotFoundException: The specified log group does not exist."),
        "the container's reason: {t:#}"
    );
    assert_eq!(t["stopCode"], "TaskFailedToStart");
    agent.stop().await;
    docker_cleanup(&instance);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restart_and_a_killed_agent_lose_and_repeat_nothing() {
    restart_and_kill(true).await;
}

/// The same through Docker's log API, what an agent that cannot read Docker's files uses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_through_dockers_api_a_restart_and_a_killed_agent_lose_and_repeat_nothing() {
    restart_and_kill(false).await;
}

async fn restart_and_kill(log_files: bool) {
    if !docker_available() {
        return;
    }
    let s = TestServer::start().await;
    s.ok("CreateCluster", json!({"clusterName": "default"}))
        .await;
    let dir = tempfile::tempdir().unwrap();
    let (agent, instance, _) = start_reading(&s, dir.path(), log_files).await;
    // 600 lines over about six seconds.
    let task = run(
        &s,
        "steady",
        json!([container(
            "app",
            "i=0; while [ $i -lt 600 ]; do i=$((i+1)); echo \"line $i\"; usleep 10000; done; sleep 600",
            json!({"awslogs-group": "/ecs/steady", "awslogs-region": "us-east-1",
                   "awslogs-stream-prefix": "ecs", "awslogs-create-group": "true"})
        )]),
    )
    .await;
    wait_task(&s, "default", &task, 60, "RUNNING", |t| {
        t["lastStatus"] == "RUNNING"
    })
    .await;
    let stream = format!("ecs/app/{}", task_id(&task));
    wait_for(&s, "/ecs/steady", &stream, 20, 30).await;

    // The agent dies without a word, and the server goes away for a while; the container
    // keeps printing.
    agent.abort();
    let s = {
        let (d, addr) = s.shutdown().await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        TestServer::start_in(d, Some(addr), false, Default::default()).await
    };
    let (agent, _, _) = start_reading(&s, dir.path(), log_files).await;
    let got = wait_for(&s, "/ecs/steady", &stream, 600, 60).await;
    let want: Vec<String> = (1..=600).map(|i| format!("line {i}")).collect();
    assert_eq!(got, want, "every line exactly once, in order");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        messages(&s, "/ecs/steady", &stream).await.len(),
        600,
        "and nothing more later"
    );

    s.ok("StopTask", json!({"cluster": "default", "task": &task}))
        .await;
    wait_task(&s, "default", &task, 60, "STOPPED", |t| {
        t["lastStatus"] == "STOPPED"
    })
    .await;
    agent.stop().await;
    docker_cleanup(&instance);
    s.stop().await;
}
