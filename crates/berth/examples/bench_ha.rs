//! `bench/run ha`: Berth on one embedded server against three servers on a three-member etcd,
//! in the same run.
//!
//! 1. `bench_api` twice: one server on its embedded store, then `BENCH_SERVERS=3` (8 clients
//!    spread over the three). `register_ratio` and `describe_ratio` are etcd's rate over the
//!    embedded one; `api_ratio` is the lower of the two.
//! 2. `bench_scale`'s first phase (10,000 simulated agents, 1,000 services of 100 tasks and 100
//!    RunTask calls of 10; `BENCH_SCALE_*` are passed on, the million-task phase is skipped)
//!    twice the same way, the agents spread over the three servers, each run stopped at 300 s
//!    (`BENCH_SCALE_LIMIT_S`). `scale_ratio` is etcd's tasks placed per second over the
//!    embedded one's.
//! 3. Leader failover, 10 times: three servers on etcd (`--leader-ttl`, 5 s unless
//!    `BENCH_HA_TTL` says otherwise). Each round makes a service on a follower, kills the
//!    leader with SIGKILL, deletes the service (with `force`) through a survivor, and times
//!    from the kill until the service is INACTIVE, which only a leader's reconciler pass makes
//!    it; then the killed server is started again. All the while a writer registers task
//!    definitions through whichever server answers, and keeps every revision acknowledged.
//!    At the end every acknowledged revision is read back from every server: `lost` counts
//!    those missing (and revisions acknowledged twice). `duplicates` adds up the scale runs'
//!    tasks handed to two agents.
//!
//! Last line: `ha: api_ratio=N scale_ratio=N failover_p50_s=N lost=N duplicates=N`.
#![allow(clippy::unwrap_used)]

mod common;

use serde_json::{json, Value};
use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

const ROUNDS: usize = 10;
const SERVERS: usize = 3;

/// Runs a benchmark binary with `env`, echoing its output; the `key=value` pairs of its last
/// line.
fn run(bin: &str, berth: &str, env: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut child = Command::new(bin)
        .arg(berth)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{bin}: {e}"));
    let mut last = String::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        println!("  {line}");
        last = line;
    }
    let status = child.wait().unwrap();
    assert!(status.success(), "{bin} {env:?} failed: {status}");
    last.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn figure(m: &BTreeMap<String, String>, key: &str) -> f64 {
    m.get(key)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in {m:?}"))
}

/// One signed ECS call to `s`: the status and the answer (status 0 when unreachable).
async fn ecs(client: &common::Client, s: &common::Berth, op: &str, body: Value) -> (u16, Value) {
    let body = body.to_string();
    let call = common::call_raw_checked(client, &s.endpoint, &s.ak, &s.sk, op, &body);
    match tokio::time::timeout(Duration::from_secs(10), call).await {
        Ok(Some((status, bytes))) => (status, serde_json::from_slice(&bytes).unwrap_or_default()),
        _ => (0, Value::Null),
    }
}

/// The index of the server holding the leader key.
async fn leader(etcd: &berth_store::Etcd, servers: &[common::Berth]) -> Option<usize> {
    use berth_store::Store;
    let kv = etcd.get("leader").await.ok()??;
    let v = String::from_utf8(kv.value).ok()?;
    let addr = v.split(' ').next()?.to_string();
    servers.iter().position(|s| s.endpoint.ends_with(&addr))
}

/// The task definition the failover rounds register and name their services after.
fn acked_task_definition() -> Value {
    json!({"family": "acked", "containerDefinitions": [
        {"name": "app", "image": "busybox", "memory": 16}]})
}

/// Registers task definitions of family `acked` through the servers in turn until told to
/// stop; every acknowledged revision's ARN.
async fn writer(servers: Vec<(String, String, String)>, stop: Arc<AtomicBool>) -> Vec<String> {
    let client = common::client();
    let mut acked = Vec::new();
    let mut i = 0usize;
    let td = acked_task_definition().to_string();
    while !stop.load(Relaxed) {
        let (endpoint, ak, sk) = &servers[i % servers.len()];
        i += 1;
        let call =
            common::call_raw_checked(&client, endpoint, ak, sk, "RegisterTaskDefinition", &td);
        if let Ok(Some((200, bytes))) = tokio::time::timeout(Duration::from_secs(10), call).await {
            let v: Value = serde_json::from_slice(&bytes).unwrap();
            acked.push(
                v["taskDefinition"]["taskDefinitionArn"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    acked
}

/// The failover rounds: (seconds from each kill to the next reconciler pass, writes lost).
async fn failover(berth: &str) -> (Vec<f64>, usize) {
    let ttl = std::env::var("BENCH_HA_TTL").unwrap_or_else(|_| "5".into());
    let args = ["server", "--listen", "127.0.0.1:0", "--leader-ttl", &ttl];
    let mut plane = common::Plane::start(berth, &args, SERVERS);
    let url = plane.etcd.as_ref().unwrap().url();
    let etcd = berth_store::Etcd::connect(berth_store::EtcdOptions::parse(&url).unwrap())
        .await
        .unwrap();
    let client = common::client();
    let (status, _) = ecs(
        &client,
        &plane.servers[0],
        "CreateCluster",
        json!({"clusterName": "default"}),
    )
    .await;
    assert_eq!(status, 200, "CreateCluster");
    // The family each round's service names exists before the first round's writer starts
    // (its first registration would otherwise race the first CreateService).
    let (status, v) = ecs(
        &client,
        &plane.servers[0],
        "RegisterTaskDefinition",
        acked_task_definition(),
    )
    .await;
    assert_eq!(status, 200, "RegisterTaskDefinition: {v}");
    let mut times = Vec::new();
    let mut acked = vec![v["taskDefinition"]["taskDefinitionArn"]
        .as_str()
        .expect("the registered ARN")
        .to_string()];
    for round in 0..ROUNDS {
        let deadline = Instant::now() + Duration::from_secs(60);
        let li = loop {
            if let Some(i) = leader(&etcd, &plane.servers).await {
                break i;
            }
            assert!(Instant::now() < deadline, "no leader");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        // A writer for the round, on the servers as they are now (a restarted one has a new
        // port).
        let now: Vec<_> = plane
            .servers
            .iter()
            .map(|s| (s.endpoint.clone(), s.ak.clone(), s.sk.clone()))
            .collect();
        let stop = Arc::new(AtomicBool::new(false));
        let writing = tokio::spawn(writer(now, stop.clone()));
        let survivor = (li + 1) % SERVERS;
        let name = format!("s{round}");
        let (status, v) = ecs(
            &client,
            &plane.servers[survivor],
            "CreateService",
            json!({"cluster": "default", "serviceName": name, "taskDefinition": "acked",
                   "desiredCount": 0}),
        )
        .await;
        assert_eq!(status, 200, "CreateService: {v}");
        tokio::time::sleep(Duration::from_millis(500)).await;

        let killed = Instant::now();
        plane.servers[li].child.kill().unwrap();
        plane.servers[li].child.wait().unwrap();
        let deadline = killed + Duration::from_secs(60);
        loop {
            let (status, v) = ecs(
                &client,
                &plane.servers[survivor],
                "DeleteService",
                json!({"cluster": "default", "service": name, "force": true}),
            )
            .await;
            if status == 200 {
                break;
            }
            assert!(Instant::now() < deadline, "DeleteService: {status} {v}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let secs = loop {
            let (_, v) = ecs(
                &client,
                &plane.servers[survivor],
                "DescribeServices",
                json!({"cluster": "default", "services": [name]}),
            )
            .await;
            if v["services"][0]["status"] == "INACTIVE" {
                break killed.elapsed().as_secs_f64();
            }
            assert!(
                Instant::now() < deadline,
                "round {round}: no reconciler pass within 60 s of the kill"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        };
        println!("  failover round {round}: {secs:.2} s");
        times.push(secs);
        stop.store(true, Relaxed);
        acked.extend(writing.await.unwrap());
        plane.restart(berth, &args, li);
    }
    let unique: HashSet<&String> = acked.iter().collect();
    let mut lost = acked.len() - unique.len();
    for s in &plane.servers {
        for arn in &unique {
            let (status, v) = ecs(
                &client,
                s,
                "DescribeTaskDefinition",
                json!({ "taskDefinition": arn }),
            )
            .await;
            if status != 200 {
                eprintln!("lost: {arn} on {}: {status} {v}", s.endpoint);
                lost += 1;
            }
        }
    }
    println!(
        "  failover: {} acknowledged revisions read back from {SERVERS} servers, {lost} missing",
        unique.len()
    );
    plane.stop();
    (times, lost)
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let usage = "usage: bench_ha BERTH BENCH_API BENCH_SCALE";
    let berth = args.next().expect(usage);
    let bench_api = args.next().expect(usage);
    let bench_scale = args.next().expect(usage);
    let servers = SERVERS.to_string();

    println!("api, embedded:");
    let api1 = run(&bench_api, &berth, &[("BENCH_SERVERS", "1")]);
    println!("api, {SERVERS} servers on etcd:");
    let api3 = run(&bench_api, &berth, &[("BENCH_SERVERS", &servers)]);
    let register_ratio = figure(&api3, "register_rps") / figure(&api1, "register_rps");
    let describe_ratio = figure(&api3, "describe_rps") / figure(&api1, "describe_rps");
    let api_ratio = register_ratio.min(describe_ratio);

    // Each scale run stops at its limit (300 s unless BENCH_SCALE_LIMIT_S says otherwise) and
    // counts what was placed by then.
    let limit = std::env::var("BENCH_SCALE_LIMIT_S").unwrap_or_else(|_| "300".into());
    let scale_env = |n: &'static str| {
        [
            ("BENCH_SERVERS", n),
            ("BENCH_SCALE_MILLION", "0"),
            ("BENCH_SCALE_CLI", "0"),
            ("BENCH_SCALE_LIMIT_S", limit.as_str()),
        ]
    };
    println!("scale, embedded:");
    let scale1 = run(&bench_scale, &berth, &scale_env("1"));
    println!("scale, {SERVERS} servers on etcd:");
    let scale3 = run(&bench_scale, &berth, &scale_env("3"));
    let scale_ratio = figure(&scale3, "place_rps") / figure(&scale1, "place_rps");
    let duplicates = figure(&scale1, "duplicates") + figure(&scale3, "duplicates");

    println!("failover, {ROUNDS} rounds:");
    let (mut times, lost) = failover(&berth).await;
    times.sort_by(f64::total_cmp);
    let p50 = times[times.len() / 2];
    let max = times[times.len() - 1];
    println!(
        "register_ratio={register_ratio:.2} describe_ratio={describe_ratio:.2} scale_embedded_rps={:.0} scale_etcd_rps={:.0} scale_etcd_running_s={} failover_max_s={max:.2}",
        figure(&scale1, "place_rps"),
        figure(&scale3, "place_rps"),
        scale3["running_s"],
    );
    println!(
        "ha: api_ratio={api_ratio:.2} scale_ratio={scale_ratio:.2} failover_p50_s={p50:.2} lost={lost} duplicates={duplicates:.0}"
    );
}
