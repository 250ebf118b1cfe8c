//! `bench/run logs`: a busybox container writes 1,000,000 lines of 100 bytes as fast as it can.
//! Under Berth (release `berth server` and `berth agent`, separate processes) its task uses
//! awslogs, and the time is until the last line is readable through GetLogEvents; against the
//! same container under Docker's `json-file` driver in the same run, until `docker logs` has
//! every line. Then 10,000,000 events are stored through PutLogEvents and FilterLogEvents looks
//! for a term found in one event of a million (p50/p99 of 20).
//! Last line: `logs: lines_per_s=N json_file_lines_per_s=N ratio=N filter_p99_ms=N agent_rss_mib=N`.
//! `BENCH_LOGS_LINES` and `BENCH_LOGS_STORED` change the sizes.
#![allow(clippy::unwrap_used)]

mod common;

use common::docker;

use serde_json::{json, Value};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const IMAGE: &str = "berth-test/busybox:latest";

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The container's program: `n` lines of exactly 100 bytes (99 and the newline), numbered.
fn writer(n: usize) -> String {
    format!(
        "awk 'BEGIN {{ pad = sprintf(\"%90s\", \"\"); gsub(/ /, \"x\", pad); for (i = 1; i <= {n}; i++) printf \"%08d %s\\n\", i, pad }}'"
    )
}

/// User and system CPU seconds and peak RSS (MiB) of a process, from /proc.
fn usage(pid: u32) -> (f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, r)| r.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = 100.0; // USER_HZ on Linux
    let cpu = fields
        .get(11)
        .zip(fields.get(12))
        .map(|(u, s)| (u.parse::<f64>().unwrap_or(0.0) + s.parse::<f64>().unwrap_or(0.0)) / ticks)
        .unwrap_or(0.0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(0.0);
    (cpu, hwm / 1024.0)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

struct Logs {
    client: common::Client,
    endpoint: String,
    ak: String,
    sk: String,
}

impl Logs {
    async fn call(&self, op: &str, body: &Value) -> Value {
        let (status, v) = self.try_call(op, body).await;
        assert_eq!(status, 200, "{op}: {v}");
        v
    }

    async fn try_call(&self, op: &str, body: &Value) -> (u16, Value) {
        let body = body.to_string();
        let headers = berth_api::sigv4::logs_request_headers(
            &berth_api::sigv4::SigningKey {
                access_key: &self.ak,
                secret: &self.sk,
                region: "us-east-1",
                service: "logs",
            },
            &self.endpoint,
            op,
            body.as_bytes(),
            SystemTime::now(),
        )
        .unwrap();
        let mut req = http::Request::post(format!("{}/", self.endpoint));
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let resp = self
            .client
            .request(
                req.body(http_body_util::Full::new(bytes::Bytes::from(body)))
                    .unwrap(),
            )
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let bytes = http_body_util::BodyExt::collect(resp.into_body())
            .await
            .unwrap()
            .to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }
}

#[tokio::main]
async fn main() {
    let bin = std::env::args()
        .nth(1)
        .expect("usage: bench_logs PATH_TO_BERTH");
    let lines = env_usize("BENCH_LOGS_LINES", 1_000_000);
    let stored = env_usize("BENCH_LOGS_STORED", 10_000_000);
    common::build_test_images();
    let dir = tempfile::tempdir().unwrap();
    let server = common::spawn(&bin, &["server", "--listen", "127.0.0.1:0"], dir.path());
    let api = common::Api::new(&server);
    api.call("CreateCluster", json!({"clusterName": "default"}))
        .await;
    let (mut agent, _agent_dir) =
        common::spawn_agent(&bin, &server, &["--container-cleanup-after", "5"]);
    // Wait for the agent.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let v = api
            .call("ListContainerInstances", json!({"cluster": "default"}))
            .await;
        if v["containerInstanceArns"][0].is_string() {
            break;
        }
        assert!(Instant::now() < deadline, "the agent did not join");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let logs = Logs {
        client: common::client(),
        endpoint: server.endpoint.clone(),
        ak: server.ak.clone(),
        sk: server.sk.clone(),
    };
    api.call(
        "RegisterTaskDefinition",
        json!({"family": "writer", "containerDefinitions": [{
            "name": "app", "image": IMAGE, "memory": 256, "essential": true,
            "command": ["sh", "-c", writer(lines)],
            "logConfiguration": {"logDriver": "awslogs", "options": {
                "awslogs-group": "/bench/writer", "awslogs-region": "us-east-1",
                "awslogs-stream-prefix": "ecs", "awslogs-create-group": "true"}}}]}),
    )
    .await;

    // json-file first, then Berth; the machine is the same for both.
    // The same json-file rotation as Berth's awslogs containers keep (the daemon's default
    // may be smaller), and the time until `docker logs` gives every line: Docker goes on
    // writing the file for a while after the container has exited.
    let t0 = Instant::now();
    let id = docker(&[
        "run",
        "-d",
        "--log-driver",
        "json-file",
        "--log-opt",
        "max-size=100m",
        "--log-opt",
        "max-file=5",
        "--label",
        "io.berth.bench=1",
        IMAGE,
        "sh",
        "-c",
        &writer(lines),
    ]);
    docker(&["wait", &id]);
    let deadline = Instant::now() + Duration::from_secs(600);
    let json_file_s = loop {
        let out = Command::new("docker")
            .args(["logs", &id])
            .stdout(Stdio::piped())
            .output()
            .unwrap();
        let counted = out.stdout.iter().filter(|b| **b == b'\n').count();
        if counted == lines {
            break t0.elapsed().as_secs_f64();
        }
        assert!(
            Instant::now() < deadline,
            "docker logs never gave every line ({counted})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    docker(&["rm", "-f", &id]);

    let last = format!("{lines:08} ");
    let t0 = Instant::now();
    let v = api
        .call(
            "RunTask",
            json!({"cluster": "default", "taskDefinition": "writer"}),
        )
        .await;
    let arn = v["tasks"][0]["taskArn"].as_str().unwrap().to_string();
    let stream = format!("ecs/app/{}", arn.rsplit('/').next().unwrap());
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let body = json!({"logGroupName": "/bench/writer", "logStreamName": &stream, "limit": 1});
        let got = match tokio::time::timeout(Duration::from_secs(30), async {
            // The group and stream appear when the container starts.
            let (status, v) = logs.try_call("GetLogEvents", &body).await;
            if status == 200 {
                v
            } else {
                Value::Null
            }
        })
        .await
        {
            Ok(v) => v,
            Err(_) => Value::Null,
        };
        if got["events"][0]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with(&last))
        {
            break;
        }
        assert!(Instant::now() < deadline, "the last line never arrived");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let berth_s = t0.elapsed().as_secs_f64();
    let (agent_cpu, agent_rss) = usage(agent.id());
    let (server_cpu, server_rss) = usage(server.child.id());

    // Every line is there, once: page through the stream (not timed).
    let mut count = 0usize;
    let mut token: Option<String> = None;
    for _ in 0..(lines / 1000 + 10) {
        let mut body = json!({"logGroupName": "/bench/writer", "logStreamName": &stream, "startFromHead": true});
        if let Some(t) = &token {
            body["nextToken"] = t.clone().into();
        }
        let v = logs.call("GetLogEvents", &body).await;
        count += v["events"].as_array().unwrap().len();
        let next = v["nextForwardToken"].as_str().map(str::to_string);
        if next == token {
            break;
        }
        token = next;
    }
    assert_eq!(count, lines, "GetLogEvents holds every line exactly once");
    println!(
        "shipping {lines} lines: berth {berth_s:.2} s, json-file {json_file_s:.2} s; agent {agent_cpu:.1} CPU s, peak {agent_rss:.0} MiB; server {server_cpu:.1} CPU s, peak {server_rss:.0} MiB"
    );

    // FilterLogEvents over `stored` events in 8 streams, a term in one of a million.
    logs.call("CreateLogGroup", &json!({"logGroupName": "/bench/stored"}))
        .await;
    for s in 0..8 {
        logs.call(
            "CreateLogStream",
            &json!({"logGroupName": "/bench/stored", "logStreamName": format!("s{s}")}),
        )
        .await;
    }
    let t0 = Instant::now();
    let base = now_ms() - 3_600_000;
    let batch = 8_000; // 8,000 events of ~100 bytes: within the 1 MiB a batch may hold
    let pad = "y".repeat(80);
    let mut written = 0usize;
    let mut n = 0usize;
    while written < stored {
        let stream = format!("s{}", n % 8);
        let events: Vec<Value> = (0..batch)
            .map(|i| {
                let k = written + i;
                let word = if k % 1_000_000 == 500_000 { "needle" } else { "straw" };
                json!({"timestamp": base + (k / 8000) as i64, "message": format!("{k:010} {word} {pad}")})
            })
            .collect();
        logs.call(
            "PutLogEvents",
            &json!({"logGroupName": "/bench/stored", "logStreamName": stream, "logEvents": events}),
        )
        .await;
        written += batch;
        n += 1;
    }
    let load_s = t0.elapsed().as_secs_f64();
    let mut times = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        let v = logs
            .call(
                "FilterLogEvents",
                &json!({"logGroupName": "/bench/stored", "filterPattern": "needle"}),
            )
            .await;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(
            v["events"].as_array().unwrap().len(),
            stored / 1_000_000,
            "every needle, and only needles"
        );
    }
    times.sort_by(|a, b| a.total_cmp(b));
    let p50 = times[times.len() / 2];
    let p99 = times[(times.len() * 99 / 100).min(times.len() - 1)];
    let (_, server_rss_after) = usage(server.child.id());
    println!(
        "stored {stored} events in {load_s:.1} s ({:.0}/s); FilterLogEvents p50 {p50:.0} ms p99 {p99:.0} ms; server peak {server_rss_after:.0} MiB",
        stored as f64 / load_s
    );

    let _ = agent.kill();
    let _ = agent.wait();
    let _ = Command::new("sh")
        .args(["-c", "docker rm -f $(docker ps -aq --filter label=com.amazonaws.ecs.task-definition-family=writer) >/dev/null 2>&1"])
        .status();
    server.stop();
    let lps = lines as f64 / berth_s;
    let jps = lines as f64 / json_file_s;
    println!(
        "logs: lines_per_s={lps:.0} json_file_lines_per_s={jps:.0} ratio={:.2} filter_p50_ms={p50:.0} filter_p99_ms={p99:.0} agent_rss_mib={agent_rss:.0} agent_cpu_s={agent_cpu:.1} server_cpu_s={server_cpu:.1} server_rss_mib={server_rss:.0}",
        lps / jps
    );
}
