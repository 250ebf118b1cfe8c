//! Services on the real Docker Engine with two agents (distinct container instances sharing the
//! host's engine): scaling, a killed container, rolling updates sampled all through, a broken
//! image tripping the circuit breaker, DAEMON, draining and a lost agent. Needs Docker (set
//! BERTH_SKIP_DOCKER=1 to skip explicitly).

#![allow(clippy::unwrap_used)]

mod common;

use berth_control::http::Limits;
use berth_control::Config;
use common::{
    docker_available, docker_cleanup, service_tasks, wait_joined, TestAgent, TestServer, BUSYBOX,
};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn running(ts: &[Value]) -> usize {
    ts.iter().filter(|t| t["lastStatus"] == "RUNNING").count()
}

fn on(ts: &[Value], instance: &str) -> usize {
    ts.iter()
        .filter(|t| t["containerInstanceArn"] == instance && t["lastStatus"] == "RUNNING")
        .count()
}

fn of_revision(ts: &[Value], rev: &str) -> usize {
    ts.iter()
        .filter(|t| {
            t["lastStatus"] == "RUNNING"
                && t["taskDefinitionArn"]
                    .as_str()
                    .unwrap()
                    .ends_with(&format!(":{rev}"))
        })
        .count()
}

/// Polls the service's tasks until `pred` holds; panics with what it last saw after `secs`.
async fn wait_tasks(
    s: &TestServer,
    name: &str,
    secs: u64,
    what: &str,
    pred: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let ts = service_tasks(s, name, None).await;
        if pred(&ts) {
            return ts;
        }
        if Instant::now() > deadline {
            let brief: Vec<(String, String, String)> = ts
                .iter()
                .map(|t| {
                    (
                        t["taskDefinitionArn"]
                            .as_str()
                            .unwrap_or("")
                            .rsplit('/')
                            .next()
                            .unwrap_or("")
                            .to_string(),
                        t["lastStatus"].as_str().unwrap_or("").to_string(),
                        t["containerInstanceArn"]
                            .as_str()
                            .unwrap_or("")
                            .rsplit('/')
                            .next()
                            .unwrap_or("")
                            .to_string(),
                    )
                })
                .collect();
            let svc = describe(s, name).await;
            panic!(
                "service {name}: not '{what}' within {secs} s; tasks {brief:?}; events {:#}",
                svc["events"]
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn describe(s: &TestServer, name: &str) -> Value {
    s.ok(
        "DescribeServices",
        json!({"cluster": "default", "services": [name]}),
    )
    .await["services"][0]
        .clone()
}

/// Samples a rollout of `name` to revision `rev` every 200 ms until it completes: never fewer
/// than `floor` tasks RUNNING, never more than `ceiling` wanted.
async fn sample_rollout(s: &TestServer, name: &str, rev: &str, floor: usize, ceiling: usize) {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut samples = 0;
    loop {
        let ts = service_tasks(s, name, None).await;
        samples += 1;
        assert!(
            ts.len() <= ceiling,
            "sample {samples}: {} tasks wanted > ceiling {ceiling}",
            ts.len()
        );
        assert!(
            running(&ts) >= floor,
            "sample {samples}: {} RUNNING < floor {floor}",
            running(&ts)
        );
        let svc = describe(s, name).await;
        if svc["deployments"].as_array().unwrap().len() == 1 && of_revision(&ts, rev) == 4 {
            assert!(samples > 3, "the rollout was sampled ({samples} samples)");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "rollout to :{rev} did not finish; events {:#}",
            svc["events"]
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_on_two_docker_agents_scale_heal_roll_out_trip_the_breaker_and_drain() {
    if !docker_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start_config(
        dir,
        None,
        Limits::default(),
        Config {
            agent_timeout: Duration::from_secs(6),
            ..Config::default()
        },
    )
    .await;
    s.spawn_service_loop();
    s.ok("CreateCluster", json!({"clusterName": "default"}))
        .await;
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let mut agents = Vec::new();
    let mut instances = Vec::new();
    for d in &dirs {
        let a = TestAgent::start(&s, TestAgent::config(&s, d.path())).await;
        instances.push(wait_joined(&a).await);
        agents.push(Some(a));
    }
    let (ia, ib) = (instances[0].clone(), instances[1].clone());
    let td = |image: &str| {
        json!({"family": "web", "containerDefinitions": [{"name": "app", "image": image, "memory": 32,
               "command": ["sleep", "600"], "stopTimeout": 1}]})
    };
    for image in [BUSYBOX, BUSYBOX, "berth-test/does-not-exist:1"] {
        s.ok("RegisterTaskDefinition", td(image)).await;
    }

    // 0 → 3 → 5 → 2, spread over both instances.
    s.ok(
        "CreateService",
        json!({"cluster": "default", "serviceName": "web", "taskDefinition": "web:1", "desiredCount": 0,
               "deploymentConfiguration": {"minimumHealthyPercent": 50, "maximumPercent": 100}}),
    )
    .await;
    for n in [3usize, 5, 2] {
        s.ok(
            "UpdateService",
            json!({"cluster": "default", "service": "web", "desiredCount": n}),
        )
        .await;
        let ts = wait_tasks(&s, "web", 60, &format!("{n} running"), |ts| {
            ts.len() == n && running(ts) == n
        })
        .await;
        if n >= 2 {
            assert!(
                on(&ts, &ia) >= 1 && on(&ts, &ib) >= 1,
                "{n} tasks spread over both instances"
            );
        }
    }

    // `docker kill` of a task's container: a replacement runs.
    let ts = service_tasks(&s, "web", None).await;
    let victim = ts[0]["taskArn"].as_str().unwrap().to_string();
    let container = ts[0]["containers"][0]["runtimeId"]
        .as_str()
        .unwrap()
        .to_string();
    let out = std::process::Command::new("docker")
        .args(["kill", &container])
        .output()
        .unwrap();
    assert!(out.status.success(), "docker kill {container}");
    wait_tasks(&s, "web", 60, "a replacement", |ts| {
        ts.len() == 2 && running(ts) == 2 && ts.iter().all(|t| t["taskArn"] != victim.as_str())
    })
    .await;

    // Rolling update of 4 tasks at 50/100, sampled all through: floor 2, ceiling 4.
    s.ok(
        "UpdateService",
        json!({"cluster": "default", "service": "web", "desiredCount": 4}),
    )
    .await;
    wait_tasks(&s, "web", 60, "4 running", |ts| {
        running(ts) == 4 && ts.len() == 4
    })
    .await;
    s.ok(
        "UpdateService",
        json!({"cluster": "default", "service": "web", "taskDefinition": "web:2"}),
    )
    .await;
    sample_rollout(&s, "web", "2", 2, 4).await;
    // And back to web:1 at 100/200: floor 4, ceiling 8.
    s.ok(
        "UpdateService",
        json!({"cluster": "default", "service": "web", "taskDefinition": "web:1",
               "deploymentConfiguration": {"minimumHealthyPercent": 100, "maximumPercent": 200}}),
    )
    .await;
    sample_rollout(&s, "web", "1", 4, 8).await;

    // A broken image: the circuit breaker trips and rolls back to web:1, the floor held all
    // along.
    s.ok(
        "UpdateService",
        json!({"cluster": "default", "service": "web", "taskDefinition": "web:3",
               "deploymentConfiguration": {"minimumHealthyPercent": 50, "maximumPercent": 100,
                   "deploymentCircuitBreaker": {"enable": true, "rollback": true}}}),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let ts = service_tasks(&s, "web", None).await;
        assert!(
            running(&ts) >= 2,
            "below the floor during the broken rollout"
        );
        let svc = describe(&s, "web").await;
        let deployments = svc["deployments"].as_array().unwrap();
        let events: Vec<&str> = svc["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["message"].as_str().unwrap())
            .collect();
        if deployments.len() == 1
            && deployments[0]["taskDefinition"]
                .as_str()
                .unwrap()
                .ends_with("web:1")
            && of_revision(&ts, "1") == 4
            && events.iter().any(|e| e.contains("deployment failed"))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the breaker did not roll back: deployments {:#}, events {events:#?}",
            svc["deployments"]
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // DAEMON: one task on each instance.
    s.ok(
        "RegisterTaskDefinition",
        json!({"family": "mon", "containerDefinitions": [{"name": "app", "image": BUSYBOX, "memory": 16,
               "command": ["sleep", "600"], "stopTimeout": 1}]}),
    )
    .await;
    s.ok(
        "CreateService",
        json!({"cluster": "default", "serviceName": "mon", "taskDefinition": "mon", "schedulingStrategy": "DAEMON"}),
    )
    .await;
    wait_tasks(&s, "mon", 60, "one per instance", |ts| {
        on(ts, &ia) == 1 && on(ts, &ib) == 1 && ts.len() == 2
    })
    .await;

    // Draining A: web moves to B, mon leaves A, a standalone task on A stays.
    s.ok(
        "RegisterTaskDefinition",
        json!({"family": "solo", "containerDefinitions": [{"name": "app", "image": BUSYBOX, "memory": 16,
               "command": ["sleep", "600"], "stopTimeout": 1}]}),
    )
    .await;
    let solo = s
        .ok(
            "StartTask",
            json!({"cluster": "default", "taskDefinition": "solo", "containerInstances": [ia]}),
        )
        .await["tasks"][0]["taskArn"]
        .as_str()
        .unwrap()
        .to_string();
    common::wait_task(&s, "default", &solo, 60, "RUNNING", |t| {
        t["lastStatus"] == "RUNNING"
    })
    .await;
    s.ok(
        "UpdateContainerInstancesState",
        json!({"cluster": "default", "containerInstances": [ia], "status": "DRAINING"}),
    )
    .await;
    wait_tasks(&s, "web", 90, "all on B", |ts| {
        on(ts, &ib) == 4 && ts.len() == 4
    })
    .await;
    wait_tasks(&s, "mon", 60, "only on B", |ts| {
        on(ts, &ib) == 1 && ts.len() == 1
    })
    .await;
    let t = s
        .ok(
            "DescribeTasks",
            json!({"cluster": "default", "tasks": [solo]}),
        )
        .await;
    assert_eq!(
        t["tasks"][0]["lastStatus"], "RUNNING",
        "standalone tasks stay"
    );

    // A back to ACTIVE; B's agent stops: after the agent timeout its web tasks run on A.
    s.ok(
        "UpdateContainerInstancesState",
        json!({"cluster": "default", "containerInstances": [ia], "status": "ACTIVE"}),
    )
    .await;
    agents[1].take().unwrap().stop().await;
    wait_tasks(&s, "web", 90, "all on A after B's agent is gone", |ts| {
        on(ts, &ia) == 4 && ts.len() == 4
    })
    .await;

    if let Some(a) = agents[0].take() {
        a.stop().await;
    }
    docker_cleanup(&ia);
    docker_cleanup(&ib);
}
