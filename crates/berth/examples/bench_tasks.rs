//! `bench/run tasks`: RunTask → RUNNING latency of a busybox task under the release `berth up`
//! (server and agent on the local Docker Engine), against `docker run -d` of the same image
//! and command in the same run, interleaved; then 100 tasks from 10 RunTask calls → all
//! RUNNING, wall time.
//! Last line: `tasks: runtask_p50_ms=N docker_run_p50_ms=N ratio=R hundred_tasks_s=N`.
#![allow(clippy::unwrap_used)]

mod common;

use common::{docker, p50};

use serde_json::json;
use std::time::Instant;

const IMAGE: &str = "berth-test/busybox:latest";
const SAMPLES: usize = 20;

#[tokio::main]
async fn main() {
    let bin = std::env::args()
        .nth(1)
        .expect("usage: bench_tasks PATH_TO_BERTH");
    common::build_test_images();
    let dir = tempfile::tempdir().unwrap();
    let server = common::spawn(
        &bin,
        &[
            "up",
            "--listen",
            "127.0.0.1:0",
            "--container-cleanup-after",
            "5",
        ],
        dir.path(),
    );
    let api = common::Api::new(&server);
    // Wait for the agent to join.
    let instance = api.connected_instance("default").await;
    api.call(
        "RegisterTaskDefinition",
        json!({"family": "bench", "containerDefinitions": [{
            "name": "app", "image": IMAGE, "memory": 16, "command": ["sleep", "600"], "stopTimeout": 1}]}),
    )
    .await;

    // Latency, interleaved so both see the same machine.
    let mut berth = Vec::new();
    let mut plain = Vec::new();
    let mut all = Vec::new();
    let mut plain_ids = Vec::new();
    for _ in 0..SAMPLES {
        let t0 = Instant::now();
        let v = api
            .call(
                "RunTask",
                json!({"cluster": "default", "taskDefinition": "bench"}),
            )
            .await;
        let arn = v["tasks"][0]["taskArn"].as_str().unwrap().to_string();
        api.wait_running(std::slice::from_ref(&arn)).await;
        berth.push(t0.elapsed().as_secs_f64() * 1000.0);
        all.push(arn);

        let t0 = Instant::now();
        let id = docker(&[
            "run",
            "-d",
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

    // 100 tasks from 10 RunTask calls, all RUNNING.
    let t0 = Instant::now();
    let mut hundred = Vec::new();
    for _ in 0..10 {
        let v = api
            .call(
                "RunTask",
                json!({"cluster": "default", "taskDefinition": "bench", "count": 10}),
            )
            .await;
        assert_eq!(v["failures"], json!([]), "{v}");
        for t in v["tasks"].as_array().unwrap() {
            hundred.push(t["taskArn"].as_str().unwrap().to_string());
        }
    }
    api.wait_running(&hundred).await;
    let hundred_s = t0.elapsed().as_secs_f64();
    all.extend(hundred);

    // Clean up: stop the tasks, stop berth up, remove what is left.
    for arn in &all {
        api.call("StopTask", json!({"cluster": "default", "task": arn}))
            .await;
    }
    server.stop();
    let mut leftovers: Vec<String> = docker(&[
        "ps",
        "-aq",
        "--filter",
        &format!("label=io.berth.container-instance-arn={instance}"),
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
    println!(
        "samples={SAMPLES} runtask_p50_ms={runtask_p50:.1} (RunTask call to DescribeTasks showing RUNNING, polled every 10 ms) docker_run_p50_ms={docker_p50:.1} (docker run -d returns)"
    );
    println!(
        "tasks: runtask_p50_ms={runtask_p50:.0} docker_run_p50_ms={docker_p50:.0} ratio={:.2} hundred_tasks_s={hundred_s:.1}",
        runtask_p50 / docker_p50
    );
}
