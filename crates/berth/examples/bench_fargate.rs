//! `bench/run fargate`: RunTask FARGATE → RUNNING latency of one busybox task (its own
//! network namespace, an address from its subnet, its security group's rules, a task cgroup)
//! under the release `berth server` and an agent started as Fargate capacity on the local
//! Docker Engine, against `docker run -d --network NET` of the same image and command on a
//! user-defined network, in the same run, interleaved; then 100 FARGATE tasks from 10 RunTask
//! calls → all RUNNING, wall time.
//! Last line: `fargate: runtask_p50_ms=N docker_p50_ms=N ratio=N hundred_s=N`.
#![allow(clippy::unwrap_used)]

mod common;

use common::{docker, p50};

use serde_json::{json, Value};
use std::process::Command;
use std::time::{Duration, Instant};

const IMAGE: &str = "berth-test/busybox:latest";
const SAMPLES: usize = 20;
/// Made up: dev mode makes it in the default VPC on first use.
const SUBNET: &str = "subnet-0be0c4000000000f1";
const NETWORK: &str = "berth-bench-fargate";

impl common::Api {
    async fn run_fargate(&self, count: i32) -> Vec<String> {
        let v: Value = self
            .call(
                "RunTask",
                json!({"cluster": "default", "taskDefinition": "bench", "launchType": "FARGATE",
                       "count": count,
                       "networkConfiguration": {"awsvpcConfiguration": {"subnets": [SUBNET]}}}),
            )
            .await;
        assert_eq!(v["failures"], json!([]), "{v}");
        v["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["taskArn"].as_str().unwrap().to_string())
            .collect()
    }
}

#[tokio::main]
async fn main() {
    let bin = std::env::args()
        .nth(1)
        .expect("usage: bench_fargate PATH_TO_BERTH");
    common::build_test_images();
    let dir = tempfile::tempdir().unwrap();
    let server = common::spawn(
        &bin,
        &["server", "--dev", "--listen", "127.0.0.1:0"],
        dir.path(),
    );
    let api = common::Api::new(&server);
    api.call("CreateCluster", json!({"clusterName": "default"}))
        .await;
    // Fargate capacity for 100 quarter-vCPU tasks: sizes are cgroup limits, not reservations
    // of this host's cores.
    let (mut agent, _agent_dir) = common::spawn_agent(
        &bin,
        &server,
        &[
            "--capacity",
            "fargate",
            "--cpu",
            "32768",
            "--memory",
            "65536",
            "--metadata-port",
            "0",
            "--container-cleanup-after",
            "5",
        ],
    );
    let pool = api.connected_instance("~fargate").await;
    api.call(
        "RegisterTaskDefinition",
        json!({"family": "bench", "requiresCompatibilities": ["FARGATE"], "networkMode": "awsvpc",
               "cpu": "256", "memory": "512",
               "containerDefinitions": [{"name": "app", "image": IMAGE, "command": ["sleep", "600"], "stopTimeout": 1}]}),
    )
    .await;
    let _ = Command::new("docker")
        .args(["network", "rm", NETWORK])
        .output();
    docker(&["network", "create", NETWORK]);

    // A first task makes the subnet's network and imports the pause image: not timed.
    let warm = api.run_fargate(1).await;
    api.wait_running(&warm).await;
    let mut all = warm;

    // Latency, interleaved so both see the same machine.
    let mut berth = Vec::new();
    let mut plain = Vec::new();
    let mut plain_ids = Vec::new();
    for _ in 0..SAMPLES {
        let t0 = Instant::now();
        let arns = api.run_fargate(1).await;
        api.wait_running(&arns).await;
        berth.push(t0.elapsed().as_secs_f64() * 1000.0);
        all.extend(arns);

        let t0 = Instant::now();
        let id = docker(&[
            "run",
            "-d",
            "--network",
            NETWORK,
            "--label",
            "io.berth.bench=1",
            IMAGE,
            "sleep",
            "600",
        ]);
        plain.push(t0.elapsed().as_secs_f64() * 1000.0);
        plain_ids.push(id);
    }
    let runtask_p50 = p50(&mut berth);
    let docker_p50 = p50(&mut plain);

    // 100 FARGATE tasks from 10 RunTask calls, all RUNNING.
    let t0 = Instant::now();
    let mut hundred = Vec::new();
    for _ in 0..10 {
        hundred.extend(api.run_fargate(10).await);
    }
    api.wait_running(&hundred).await;
    let hundred_s = t0.elapsed().as_secs_f64();
    all.extend(hundred);

    // Clean up: stop the tasks (their addresses come back), stop everything, remove the rest.
    for arn in &all {
        api.call("StopTask", json!({"cluster": "default", "task": arn}))
            .await;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let v = api
            .call(
                "ListTasks",
                json!({"cluster": "default", "desiredStatus": "RUNNING"}),
            )
            .await;
        let running = api
            .call("DescribeClusters", json!({"clusters": ["default"]}))
            .await;
        let busy = running["clusters"][0]["runningTasksCount"]
            .as_i64()
            .unwrap_or(0)
            + running["clusters"][0]["pendingTasksCount"]
                .as_i64()
                .unwrap_or(0);
        if (v["taskArns"].as_array().is_none_or(|a| a.is_empty()) && busy == 0)
            || Instant::now() > deadline
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = Command::new("kill")
        .args(["-TERM", &agent.id().to_string()])
        .status();
    let _ = agent.wait();
    server.stop();
    let mut leftovers: Vec<String> = docker(&[
        "ps",
        "-aq",
        "--filter",
        &format!("label=io.berth.container-instance-arn={pool}"),
    ])
    .split_whitespace()
    .map(str::to_string)
    .collect();
    leftovers.extend(plain_ids);
    if !leftovers.is_empty() {
        let mut args = vec!["rm", "-f"];
        args.extend(leftovers.iter().map(String::as_str));
        docker(&args);
    }
    let _ = Command::new("docker")
        .args(["network", "rm", NETWORK])
        .output();
    let _ = Command::new("docker")
        .args(["network", "rm", &format!("berth-{SUBNET}")])
        .output();
    println!(
        "samples={SAMPLES} runtask_p50_ms={runtask_p50:.1} (RunTask FARGATE to DescribeTasks showing RUNNING, polled every 10 ms) docker_p50_ms={docker_p50:.1} (docker run -d --network {NETWORK} returns)"
    );
    println!(
        "fargate: runtask_p50_ms={runtask_p50:.0} docker_p50_ms={docker_p50:.0} ratio={:.2} hundred_s={hundred_s:.1}",
        runtask_p50 / docker_p50
    );
}
