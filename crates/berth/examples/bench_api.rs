//! `bench/run api`: signed RegisterTaskDefinition, then DescribeTaskDefinition, from 8
//! concurrent clients on loopback against the release `berth server` (store fsync on).
//! With `BENCH_SERVERS=N` (N > 1), against N servers sharing a three-member etcd, client `c`
//! calling server `c % N` (`bench/run ha` runs it both ways).
//! Last line: `api: register_rps=N describe_rps=N describe_p99_ms=N`.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

const CLIENTS: usize = 8;
const PHASE: Duration = Duration::from_secs(10);

struct Target {
    endpoint: String,
    ak: String,
    sk: String,
}

async fn call(client: &common::Client, t: &Target, op: &str, body: &str) -> u16 {
    common::call_raw(client, &t.endpoint, &t.ak, &t.sk, op, body)
        .await
        .0
}

/// Runs `op` from CLIENTS clients for PHASE; returns (requests/s, p99 ms).
async fn phase(
    targets: std::sync::Arc<Vec<Target>>,
    op: &'static str,
    body: impl Fn(usize, usize) -> String + Send + Sync + 'static,
) -> (f64, f64) {
    let body = std::sync::Arc::new(body);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let (targets, body) = (targets.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            let t = &targets[c % targets.len()];
            let client = common::client();
            let mut lat = Vec::new();
            let mut i = 0;
            while start.elapsed() < PHASE {
                let t0 = Instant::now();
                let status = call(&client, t, op, &body(c, i)).await;
                assert_eq!(status, 200, "{op} failed");
                lat.push(t0.elapsed().as_secs_f64() * 1000.0);
                i += 1;
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    let secs = start.elapsed().as_secs_f64();
    all.sort_by(|a, b| a.total_cmp(b));
    let p99 = all[((all.len() as f64 * 0.99) as usize).min(all.len() - 1)];
    (all.len() as f64 / secs, p99)
}

#[tokio::main]
async fn main() {
    let bin = std::env::args()
        .nth(1)
        .expect("usage: bench_api PATH_TO_BERTH");
    let plane = common::Plane::start(
        &bin,
        &["server", "--listen", "127.0.0.1:0"],
        common::servers_wanted(),
    );
    let t: Vec<Target> = plane
        .servers
        .iter()
        .map(|s| Target {
            endpoint: s.endpoint.clone(),
            ak: s.ak.clone(),
            sk: s.sk.clone(),
        })
        .collect();
    let t = std::sync::Arc::new(t);
    let td = |c: usize, _i: usize| {
        format!(
            r#"{{"family":"bench{c}","containerDefinitions":[{{"name":"web","image":"busybox","memory":128,"portMappings":[{{"containerPort":80}}],"environment":[{{"name":"A","value":"1"}}]}}]}}"#
        )
    };
    let (register_rps, register_p99) = phase(t.clone(), "RegisterTaskDefinition", td).await;
    let (describe_rps, describe_p99) = phase(t.clone(), "DescribeTaskDefinition", |c, i| {
        format!(r#"{{"taskDefinition":"bench{c}:{}"}}"#, i % 50 + 1)
    })
    .await;
    let kind = plane.kind();
    plane.stop();
    println!(
        "store={kind} clients={CLIENTS} phase_s={} register_p99_ms={register_p99:.2}",
        PHASE.as_secs()
    );
    println!("api: register_rps={register_rps:.0} describe_rps={describe_rps:.0} describe_p99_ms={describe_p99:.2}");
}
