//! Task scale-in protection on the real Docker Engine, driven by the `aws-sdk-ecs` crate, the
//! AWS CLI and the task itself through `ECS_AGENT_URI`: a protected task outlives a scale-in and
//! holds back a deployment until it turns its protection off; ECS's failures (MISSING,
//! TASK_NOT_VALID) and errors for the rest.
//! Needs Docker (BERTH_SKIP_DOCKER=1 skips it explicitly).

#![allow(clippy::unwrap_used)]

mod common;

use aws_sdk_ecs as ecs;
use common::{
    aws_cli, aws_json, docker_available, docker_cleanup, service_tasks, wait_joined, TestAgent,
    TestServer, BUSYBOX,
};
use serde_json::{json, Value};
use std::time::{Duration, Instant, SystemTime};

/// Polls the service's tasks every 200 ms until `pred` holds, for at most `secs`.
async fn wait_tasks(
    s: &TestServer,
    secs: u64,
    what: &str,
    pred: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let ts = service_tasks(s, "web", None).await;
        if pred(&ts) {
            return ts;
        }
        let brief: Vec<(&str, &str)> = ts
            .iter()
            .map(|t| {
                (
                    t["taskArn"].as_str().unwrap_or(""),
                    t["lastStatus"].as_str().unwrap_or(""),
                )
            })
            .collect();
        assert!(
            Instant::now() < deadline,
            "not '{what}' within {secs} s: {brief:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn running(ts: &[Value]) -> usize {
    ts.iter().filter(|t| t["lastStatus"] == "RUNNING").count()
}

fn arns(ts: &[Value]) -> Vec<String> {
    ts.iter()
        .map(|t| t["taskArn"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protected_tasks_outlive_scale_in_and_hold_back_a_deployment() {
    if !docker_available() {
        return;
    }
    let Some(cli) = aws_cli() else { return };
    let s = TestServer::start().await;
    s.spawn_service_loop();
    s.ok("CreateCluster", json!({"clusterName": "default"}))
        .await;
    let dir = tempfile::tempdir().unwrap();
    let agent = TestAgent::start(&s, TestAgent::config(&s, dir.path())).await;
    let instance = wait_joined(&agent).await;
    for _ in 0..2 {
        s.ok(
            "RegisterTaskDefinition",
            json!({"family": "web", "containerDefinitions": [{"name": "app", "image": BUSYBOX,
                   "memory": 16, "command": ["sleep", "600"], "stopTimeout": 1}]}),
        )
        .await;
    }
    s.ok(
        "CreateService",
        json!({"cluster": "default", "serviceName": "web", "taskDefinition": "web:1", "desiredCount": 3,
               "deploymentConfiguration": {"minimumHealthyPercent": 0, "maximumPercent": 200}}),
    )
    .await;
    let ts = wait_tasks(&s, 60, "3 running", |ts| running(ts) == 3 && ts.len() == 3).await;
    let all = arns(&ts);
    let kept = all[0].clone();

    // Protect one task through the SDK, for 60 minutes.
    let c = common::sdk_client!(ecs, &s);
    let before = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let out = c
        .update_task_protection()
        .cluster("default")
        .tasks(&kept)
        .protection_enabled(true)
        .expires_in_minutes(60)
        .send()
        .await
        .unwrap();
    let p = &out.protected_tasks()[0];
    assert_eq!(p.task_arn(), Some(kept.as_str()));
    assert!(p.protection_enabled());
    let expires = p.expiration_date().unwrap().as_secs_f64();
    assert!(
        (expires - before - 3600.0).abs() < 30.0,
        "expires an hour from now: {expires} vs {before}"
    );
    assert!(out.failures().is_empty(), "{:?}", out.failures());

    // The AWS CLI reads it back; the others are not protected; a task id works like an ARN.
    let id = kept.rsplit('/').next().unwrap();
    let got = aws_json(
        &cli,
        &s,
        &s.secret_key,
        "ecs",
        &[
            "get-task-protection",
            "--cluster",
            "default",
            "--tasks",
            id,
            &all[1],
        ],
    )
    .unwrap();
    assert_eq!(got["protectedTasks"][0]["protectionEnabled"], true, "{got}");
    assert_eq!(got["protectedTasks"][0]["taskArn"], kept.as_str(), "{got}");
    assert_eq!(
        got["protectedTasks"][1]["protectionEnabled"], false,
        "{got}"
    );
    assert!(
        got["protectedTasks"][1].get("expirationDate").is_none(),
        "{got}"
    );
    let every = aws_json(
        &cli,
        &s,
        &s.secret_key,
        "ecs",
        &["get-task-protection", "--cluster", "default"],
    )
    .unwrap();
    assert_eq!(
        every["protectedTasks"].as_array().unwrap().len(),
        1,
        "{every}"
    );

    // Failures and errors in ECS's words.
    let standalone = s
        .ok(
            "RunTask",
            json!({"cluster": "default", "taskDefinition": "web:1"}),
        )
        .await["tasks"][0]["taskArn"]
        .as_str()
        .unwrap()
        .to_string();
    let out = c
        .update_task_protection()
        .cluster("default")
        .tasks(&standalone)
        .tasks("0123456789abcdef0123456789abcdef")
        .protection_enabled(true)
        .send()
        .await
        .unwrap();
    assert!(out.protected_tasks().is_empty());
    let reasons: Vec<(&str, &str)> = out
        .failures()
        .iter()
        .map(|f| (f.arn().unwrap(), f.reason().unwrap()))
        .collect();
    assert_eq!(
        reasons,
        [
            (standalone.as_str(), "TASK_NOT_VALID"),
            ("0123456789abcdef0123456789abcdef", "MISSING")
        ]
    );
    let eleven: Vec<String> = (0..11).map(|i| format!("{i:032x}")).collect();
    for (body, code) in [
        (
            json!({"cluster": "default", "tasks": eleven, "protectionEnabled": true}),
            "InvalidParameterException",
        ),
        (
            json!({"cluster": "default", "tasks": [kept], "protectionEnabled": true, "expiresInMinutes": 0}),
            "InvalidParameterException",
        ),
        (
            json!({"cluster": "default", "tasks": [kept], "protectionEnabled": true, "expiresInMinutes": 2881}),
            "InvalidParameterException",
        ),
        (
            json!({"cluster": "nope", "tasks": [kept], "protectionEnabled": true}),
            "ClusterNotFoundException",
        ),
        (
            json!({"cluster": "default", "tasks": [kept]}),
            "InvalidParameterException",
        ),
    ] {
        s.err("UpdateTaskProtection", body, code).await;
    }

    // Scale in to 1: the protected task is the one left.
    s.ok(
        "UpdateService",
        json!({"cluster": "default", "service": "web", "desiredCount": 1}),
    )
    .await;
    wait_tasks(&s, 60, "only the protected task", |ts| {
        ts.len() == 1 && ts[0]["taskArn"] == kept.as_str()
    })
    .await;

    // A new revision: its task starts, the protected one stays, the rollout is not done.
    s.ok(
        "UpdateService",
        json!({"cluster": "default", "service": "web", "taskDefinition": "web:2"}),
    )
    .await;
    wait_tasks(&s, 60, "the new revision beside the protected task", |ts| {
        running(ts) == 2 && ts.iter().any(|t| t["taskArn"] == kept.as_str())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let ts = service_tasks(&s, "web", None).await;
    assert!(
        ts.iter().any(|t| t["taskArn"] == kept.as_str()),
        "the deployment waits for the protected task: {ts:?}"
    );
    let svc = s
        .ok(
            "DescribeServices",
            json!({"cluster": "default", "services": ["web"]}),
        )
        .await;
    assert_eq!(
        svc["services"][0]["deployments"].as_array().unwrap().len(),
        2,
        "two deployments while the protected task runs: {svc}"
    );

    // The task itself reads its protection at ECS_AGENT_URI, as with the ECS agent.
    let ts = service_tasks(&s, "web", None).await;
    let container = ts.iter().find(|t| t["taskArn"] == kept.as_str()).unwrap()["containers"][0]
        ["runtimeId"]
        .as_str()
        .unwrap()
        .to_string();
    let inside = std::process::Command::new("docker")
        .args([
            "exec",
            &container,
            "sh",
            "-c",
            "wget -qO- $ECS_AGENT_URI/task-protection/v1/state",
        ])
        .output()
        .unwrap();
    let state: Value =
        serde_json::from_slice(&inside.stdout).unwrap_or_else(|e| panic!("{e}: {inside:?}"));
    assert_eq!(state["protection"]["ProtectionEnabled"], true, "{state}");
    assert_eq!(state["protection"]["TaskArn"], kept.as_str(), "{state}");
    assert!(
        state["protection"]["ExpirationDate"]
            .as_str()
            .unwrap()
            .ends_with('Z'),
        "{state}"
    );
    let env = common::docker_inspect(&container)["Config"]["Env"].clone();
    let uri = env
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e.as_str()?.strip_prefix("ECS_AGENT_URI="))
        .next()
        .unwrap()
        .to_string();
    let (base, path) = uri.split_at(uri.find("/api/").unwrap());
    let state_path = format!("{path}/task-protection/v1/state");
    let put =
        |body: &str| common::raw_request(base, "PUT", &state_path, &[], body.as_bytes().to_vec());
    let bad = put(r#"{"ExpiresInMinutes": 5}"#).await;
    assert_eq!(bad.status, 400, "{:?}", bad.body);
    assert_eq!(
        bad.body["error"]["Message"],
        "Invalid request: does not contain 'ProtectionEnabled' field"
    );
    let bad = put(r#"{"ProtectionEnabled": true, "Forever": true}"#).await;
    assert_eq!(bad.status, 400, "{:?}", bad.body);
    assert_eq!(bad.body["error"]["Code"], "InvalidParameterException");
    let bad = put(r#"{"ProtectionEnabled": true, "ExpiresInMinutes": 0}"#).await;
    assert_eq!(bad.status, 400, "ECS's own error: {:?}", bad.body);
    assert_eq!(bad.body["error"]["Code"], "InvalidParameterException");
    let gone = common::raw_request(
        base,
        "GET",
        "/api/no-such-container/task-protection/v1/state",
        &[],
        Vec::new(),
    )
    .await;
    assert_eq!(gone.status, 404, "{:?}", gone.body);

    // Protection off, by the task through its endpoint: the rollout finishes.
    let off = put(r#"{"ProtectionEnabled": false}"#).await;
    assert_eq!(off.status, 200, "{:?}", off.body);
    assert_eq!(
        off.body["protection"]["ProtectionEnabled"], false,
        "{:?}",
        off.body
    );
    let out = c
        .get_task_protection()
        .cluster("default")
        .tasks(&kept)
        .send()
        .await
        .unwrap();
    assert!(!out.protected_tasks()[0].protection_enabled());
    assert!(out.protected_tasks()[0].expiration_date().is_none());
    wait_tasks(&s, 60, "one task of web:2", |ts| {
        ts.len() == 1
            && ts[0]["taskArn"] != kept.as_str()
            && ts[0]["taskDefinitionArn"]
                .as_str()
                .unwrap()
                .ends_with("web:2")
    })
    .await;

    s.ok(
        "UpdateService",
        json!({"cluster": "default", "service": "web", "desiredCount": 0}),
    )
    .await;
    s.ok(
        "StopTask",
        json!({"cluster": "default", "task": standalone}),
    )
    .await;
    wait_tasks(&s, 60, "none", |ts| ts.is_empty()).await;
    agent.stop().await;
    docker_cleanup(&instance);
    s.stop().await;
}
