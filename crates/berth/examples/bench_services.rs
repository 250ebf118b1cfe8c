//! `bench/run services`: Berth's services against Docker Swarm on the same Docker Engine and
//! image (`berth-test/busybox`, `sleep 600`, 1 s stop grace in both), in the same run:
//! create → 50 replicas running; scale 50 → 100; a rolling update of 50 replicas to a new
//! image tag (Berth: minimumHealthyPercent 100, maximumPercent 200, so all 50 new tasks may start
//! before old ones stop; Swarm: `--update-parallelism 50 --update-order start-first`, the same).
//! The benchmark runs `docker swarm init` itself and leaves the swarm after.
//! Last line: `services: create_ratio=R scale_ratio=R update_ratio=R` (Berth time / Swarm time).
#![allow(clippy::unwrap_used)]

mod common;

use common::docker;

use serde_json::json;
use std::process::Command;
use std::time::{Duration, Instant};

const IMAGE: &str = "berth-test/busybox:latest";
const IMAGE_V2: &str = "berth-test/busybox:v2";
const LIMIT: Duration = Duration::from_secs(600);

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < LIMIT, "{what}: not done within {LIMIT:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Swarm's replicas `running/desired` for the service.
fn swarm_running(name: &str) -> (usize, usize) {
    let r = docker(&[
        "service",
        "ls",
        "--filter",
        &format!("name={name}"),
        "--format",
        "{{.Replicas}}",
    ]);
    let (a, b) = r.split_once('/').unwrap_or(("0", "0"));
    let b = b.split_whitespace().next().unwrap_or("0");
    (a.parse().unwrap_or(0), b.parse().unwrap_or(0))
}

fn swarm() -> (f64, f64, f64) {
    let state = docker(&["info", "--format", "{{.Swarm.LocalNodeState}}"]);
    assert_ne!(
        state, "active",
        "this Docker Engine is already in a swarm; the benchmark needs its own"
    );
    docker(&["swarm", "init", "--advertise-addr", "127.0.0.1"]);
    let name = "berth-bench";
    let t0 = Instant::now();
    docker(&[
        "service",
        "create",
        "--detach",
        "--no-resolve-image",
        "--name",
        name,
        "--replicas",
        "50",
        "--stop-grace-period",
        "1s",
        IMAGE,
        "sleep",
        "600",
    ]);
    wait_until("swarm create", || swarm_running(name) == (50, 50));
    let create = t0.elapsed().as_secs_f64();
    let t0 = Instant::now();
    docker(&["service", "scale", "--detach", &format!("{name}=100")]);
    wait_until("swarm scale", || swarm_running(name) == (100, 100));
    let scale = t0.elapsed().as_secs_f64();
    docker(&["service", "scale", "--detach", &format!("{name}=50")]);
    wait_until("swarm scale down", || swarm_running(name) == (50, 50));
    let t0 = Instant::now();
    docker(&[
        "service",
        "update",
        "--detach",
        "--no-resolve-image",
        "--image",
        IMAGE_V2,
        "--update-parallelism",
        "50",
        "--update-order",
        "start-first",
        name,
    ]);
    wait_until("swarm update", || {
        docker(&[
            "service",
            "inspect",
            "--format",
            "{{if .UpdateStatus}}{{.UpdateStatus.State}}{{end}}",
            name,
        ]) == "completed"
            && swarm_running(name) == (50, 50)
    });
    let update = t0.elapsed().as_secs_f64();
    docker(&["service", "rm", name]);
    docker(&["swarm", "leave", "--force"]);
    (create, scale, update)
}

// The benchmark's own waits, beside the shared client's calls.
impl common::Api {
    /// Until the service runs `n` tasks under one deployment of `revision`.
    async fn wait_stable(&self, n: i64, revision: i64) {
        let start = Instant::now();
        loop {
            let v = self
                .call("DescribeServices", json!({"services": ["bench"]}))
                .await;
            let s = &v["services"][0];
            let deps = s["deployments"].as_array().unwrap();
            if s["runningCount"] == n
                && deps.len() == 1
                && deps[0]["taskDefinition"]
                    .as_str()
                    .unwrap()
                    .ends_with(&format!(":{revision}"))
            {
                return;
            }
            assert!(start.elapsed() < LIMIT, "berth: not stable: {s:#}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

async fn berth(bin: &str) -> (f64, f64, f64) {
    let dir = tempfile::tempdir().unwrap();
    let server = common::spawn(
        bin,
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
    let instance = loop {
        let v = api.call("ListContainerInstances", json!({})).await;
        if let Some(a) = v["containerInstanceArns"][0].as_str() {
            break a.to_string();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for image in [IMAGE, IMAGE_V2] {
        api.call(
            "RegisterTaskDefinition",
            json!({"family": "bench", "containerDefinitions": [{"name": "app", "image": image,
                "memory": 16, "command": ["sleep", "600"], "stopTimeout": 1}]}),
        )
        .await;
    }
    let t0 = Instant::now();
    api.call(
        "CreateService",
        json!({"serviceName": "bench", "taskDefinition": "bench:1", "desiredCount": 50}),
    )
    .await;
    api.wait_stable(50, 1).await;
    let create = t0.elapsed().as_secs_f64();
    let t0 = Instant::now();
    api.call(
        "UpdateService",
        json!({"service": "bench", "desiredCount": 100}),
    )
    .await;
    api.wait_stable(100, 1).await;
    let scale = t0.elapsed().as_secs_f64();
    api.call(
        "UpdateService",
        json!({"service": "bench", "desiredCount": 50}),
    )
    .await;
    api.wait_stable(50, 1).await;
    let t0 = Instant::now();
    api.call(
        "UpdateService",
        json!({"service": "bench", "taskDefinition": "bench:2"}),
    )
    .await;
    api.wait_stable(50, 2).await;
    let update = t0.elapsed().as_secs_f64();
    api.call("DeleteService", json!({"service": "bench", "force": true}))
        .await;
    server.stop();
    let left = docker(&[
        "ps",
        "-aq",
        "--filter",
        &format!("label=io.berth.container-instance-arn={instance}"),
    ]);
    let ids: Vec<&str> = left.split_whitespace().collect();
    if !ids.is_empty() {
        let mut args = vec!["rm", "-f"];
        args.extend(ids);
        docker(&args);
    }
    (create, scale, update)
}

/// How long the Docker Engine alone takes to create and start 50 containers like the
/// benchmark's (10 `docker run -d` at a time), then removes them.
fn engine_floor() -> f64 {
    let t0 = Instant::now();
    let status = Command::new("bash")
        .args([
            "-c",
            &format!("seq 1 50 | xargs -P 10 -I{{}} docker run -d --label io.berth.bench-floor=1 {IMAGE} sleep 600 >/dev/null"),
        ])
        .status()
        .unwrap();
    assert!(status.success(), "docker run for the engine floor failed");
    let floor = t0.elapsed().as_secs_f64();
    let ids = docker(&["ps", "-aq", "--filter", "label=io.berth.bench-floor=1"]);
    let ids: Vec<&str> = ids.split_whitespace().collect();
    if !ids.is_empty() {
        let mut args = vec!["rm", "-f"];
        args.extend(ids);
        docker(&args);
    }
    floor
}

#[tokio::main]
async fn main() {
    let bin = std::env::args()
        .nth(1)
        .expect("usage: bench_services PATH_TO_BERTH");
    common::build_test_images();
    docker(&["tag", IMAGE, IMAGE_V2]);
    let floor = tokio::task::spawn_blocking(engine_floor).await.unwrap();
    let (bc, bs, bu) = berth(&bin).await;
    let (sc, ss, su) = tokio::task::spawn_blocking(swarm).await.unwrap();
    println!(
        "engine floor: 50 `docker run -d` of the same image and command, 10 at a time, {floor:.1} s: the least any orchestrator on this engine can take to create 50 (ratio to swarm's create {:.2})",
        floor / sc
    );
    println!("berth: create 50 {bc:.1} s, scale to 100 {bs:.1} s, rolling update of 50 {bu:.1} s (min 100%, max 200%, stopTimeout 1 s)");
    println!("swarm: create 50 {sc:.1} s, scale to 100 {ss:.1} s, rolling update of 50 {su:.1} s (--update-parallelism 50 --update-order start-first, --stop-grace-period 1s)");
    println!(
        "services: create_ratio={:.2} scale_ratio={:.2} update_ratio={:.2}",
        bc / sc,
        bs / ss,
        bu / su
    );
}
