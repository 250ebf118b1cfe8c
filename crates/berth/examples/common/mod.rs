//! What the benchmarks share: starting the release `berth` binary and reading its banner, and a
//! signed ECS client.
#![allow(dead_code, clippy::unwrap_used)]

pub mod browser;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

/// A running `berth` process and the endpoint and admin key its banner printed.
pub struct Berth {
    pub child: Child,
    pub endpoint: String,
    pub ak: String,
    pub sk: String,
    /// `host:port` of the image registry, from the banner's "Registry on" line.
    pub registry: String,
}

/// Runs `BIN ARGS --data-dir DIR` (quietly) and reads the `export` lines it prints.
pub fn spawn(bin: &str, args: &[&str], dir: &std::path::Path) -> Berth {
    // The registry on a port of its own unless the caller chose one.
    let registry_flag: &[&str] = if args.contains(&"--registry-listen") {
        &[]
    } else {
        &["--registry-listen", "127.0.0.1:0"]
    };
    let mut child = Command::new(bin)
        .args(args)
        .args(registry_flag)
        .arg("--data-dir")
        .arg(dir)
        .env("BERTH_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut endpoint, mut ak, mut sk) = (String::new(), String::new(), String::new());
    let mut registry = String::new();
    while endpoint.is_empty() {
        let line = lines.next().expect("berth's banner").unwrap();
        if let Some(v) = line.strip_prefix("Registry on ") {
            registry = v.split(':').take(2).collect::<Vec<_>>().join(":");
        }
        if let Some(v) = line.strip_prefix("export AWS_ACCESS_KEY_ID=") {
            ak = v.into()
        }
        if let Some(v) = line.strip_prefix("export AWS_SECRET_ACCESS_KEY=") {
            sk = v.into()
        }
        if let Some(v) = line.strip_prefix("export AWS_ENDPOINT_URL=") {
            endpoint = v.into()
        }
    }
    std::thread::spawn(move || lines.for_each(drop));
    Berth {
        child,
        endpoint,
        ak,
        sk,
        registry,
    }
}

/// A benchmark that panics (or returns early) leaves no server behind: what was not stopped
/// is killed when dropped.
impl Drop for Berth {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Berth {
    /// SIGTERM, then wait for the exit.
    pub fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

/// Starts `berth agent` for `server`'s cluster `default` (which must exist), or as Fargate
/// capacity when `extra` says `--capacity fargate`, joined with a token asked for as `berth
/// join-token` asks; `extra` flags are added. The agent and its
/// data dir, which must outlive it.
pub fn spawn_agent(bin: &str, server: &Berth, extra: &[&str]) -> (Child, tempfile::TempDir) {
    // Fargate capacity joins the pool with the pool's token.
    let capacity = match extra.windows(2).any(|w| w == ["--capacity", "fargate"]) {
        true => "fargate",
        false => "ec2",
    };
    let token = Command::new(bin)
        .args([
            "join-token",
            "--server",
            &server.endpoint,
            "--cluster",
            "default",
            "--capacity",
            capacity,
        ])
        .env("AWS_ACCESS_KEY_ID", &server.ak)
        .env("AWS_SECRET_ACCESS_KEY", &server.sk)
        .output()
        .unwrap();
    assert!(token.status.success(), "berth join-token failed");
    let token = String::from_utf8_lossy(&token.stdout).trim().to_string();
    let dir = tempfile::tempdir().unwrap();
    let agent = Command::new(bin)
        .args([
            "agent",
            "--server",
            &server.endpoint,
            "--cluster",
            "default",
        ])
        .args(["--token", &token])
        .args(extra)
        .arg("--data-dir")
        .arg(dir.path())
        .env("BERTH_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    (agent, dir)
}

pub type Client = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Full<Bytes>,
>;

pub fn client() -> Client {
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http()
}

/// One signed ECS call; the status and the body as sent back.
pub async fn call_raw(
    client: &Client,
    endpoint: &str,
    ak: &str,
    sk: &str,
    op: &str,
    body: &str,
) -> (u16, Bytes) {
    let headers = berth_api::sigv4::ecs_request_headers(
        &signing_key(ak, sk, "ecs"),
        endpoint,
        op,
        body.as_bytes(),
        SystemTime::now(),
    )
    .unwrap();
    post(client, endpoint, headers, body).await
}

/// One signed ECR call; the status and the body as sent back.
pub async fn ecr_call_raw(
    client: &Client,
    endpoint: &str,
    ak: &str,
    sk: &str,
    op: &str,
    body: &str,
) -> (u16, Bytes) {
    let headers = berth_api::sigv4::ecr_request_headers(
        &signing_key(ak, sk, "ecr"),
        endpoint,
        op,
        body.as_bytes(),
        SystemTime::now(),
    )
    .unwrap();
    post(client, endpoint, headers, body).await
}

fn signing_key<'a>(ak: &'a str, sk: &'a str, service: &'a str) -> berth_api::sigv4::SigningKey<'a> {
    berth_api::sigv4::SigningKey {
        access_key: ak,
        secret: sk,
        region: "us-east-1",
        service,
    }
}

/// One signed ECS call; `None` when the server cannot be reached or the answer breaks off.
pub async fn call_raw_checked(
    client: &Client,
    endpoint: &str,
    ak: &str,
    sk: &str,
    op: &str,
    body: &str,
) -> Option<(u16, Bytes)> {
    let headers = berth_api::sigv4::ecs_request_headers(
        &signing_key(ak, sk, "ecs"),
        endpoint,
        op,
        body.as_bytes(),
        SystemTime::now(),
    )
    .ok()?;
    let mut req = http::Request::post(format!("{endpoint}/"));
    for (k, v) in headers {
        req = req.header(k, v);
    }
    let req = req.body(Full::new(Bytes::from(body.to_string()))).ok()?;
    let resp = client.request(req).await.ok()?;
    let status = resp.status().as_u16();
    Some((status, resp.into_body().collect().await.ok()?.to_bytes()))
}

async fn post(
    client: &Client,
    endpoint: &str,
    headers: Vec<(String, String)>,
    body: &str,
) -> (u16, Bytes) {
    let mut req = http::Request::post(format!("{endpoint}/"));
    for (k, v) in headers {
        req = req.header(k, v);
    }
    let resp = client
        .request(req.body(Full::new(Bytes::from(body.to_string()))).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.into_body().collect().await.unwrap().to_bytes())
}

/// A signed ECS client for one `berth`.
pub struct Api {
    pub endpoint: String,
    ak: String,
    sk: String,
    client: Client,
}

impl Api {
    pub fn new(b: &Berth) -> Self {
        Api {
            endpoint: b.endpoint.clone(),
            ak: b.ak.clone(),
            sk: b.sk.clone(),
            client: client(),
        }
    }

    /// Calls `op`; the answer must be a success.
    pub async fn call(&self, op: &str, body: Value) -> Value {
        let (status, bytes) = call_raw(
            &self.client,
            &self.endpoint,
            &self.ak,
            &self.sk,
            op,
            &body.to_string(),
        )
        .await;
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(status, 200, "{op} failed: {v}");
        v
    }
}

/// `docker ARGS`: its output, trimmed; panics with Docker's error.
pub fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The median of `v` (sorted in place).
pub fn p50(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

impl Api {
    /// Waits until every task is RUNNING; panics on STOPPED or after 120 s.
    pub async fn wait_running(&self, arns: &[String]) {
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut left: Vec<String> = arns.to_vec();
        while !left.is_empty() {
            assert!(
                Instant::now() < deadline,
                "tasks not RUNNING within 120 s: {left:?}"
            );
            let mut still = Vec::new();
            for chunk in left.chunks(100) {
                let v = self
                    .call(
                        "DescribeTasks",
                        json!({"cluster": "default", "tasks": chunk}),
                    )
                    .await;
                for t in v["tasks"].as_array().unwrap() {
                    match t["lastStatus"].as_str().unwrap() {
                        "RUNNING" => {}
                        "STOPPED" => panic!("a benchmark task stopped: {t:#}"),
                        _ => still.push(t["taskArn"].as_str().unwrap().to_string()),
                    }
                }
            }
            left = still;
            if !left.is_empty() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Builds the test images (`scripts/build-test-images`); nothing is pulled.
pub fn build_test_images() {
    let images =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/build-test-images");
    assert!(
        Command::new(images).status().unwrap().success(),
        "building the test image failed"
    );
}

impl Api {
    /// The first container instance of `cluster` whose agent is connected, once there is one.
    pub async fn connected_instance(&self, cluster: &str) -> String {
        loop {
            let v = self
                .call("ListContainerInstances", json!({"cluster": cluster}))
                .await;
            if let Some(a) = v["containerInstanceArns"][0].as_str() {
                let d = self
                    .call(
                        "DescribeContainerInstances",
                        json!({"cluster": cluster, "containerInstances": [a]}),
                    )
                    .await;
                if d["containerInstances"][0]["agentConnected"] == true {
                    return a.to_string();
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The servers a benchmark runs against: one `berth server` on its embedded store, or
/// `BENCH_SERVERS` of them (more than 1) sharing a three-member etcd on loopback (Debian's
/// `etcd`, started here and killed with the plane). Every server prints the same admin key.
pub struct Plane {
    pub servers: Vec<Berth>,
    pub etcd: Option<berth_store::local_etcd::LocalEtcd>,
    dir: tempfile::TempDir,
}

/// `BENCH_SERVERS`, 1 when unset.
pub fn servers_wanted() -> usize {
    std::env::var("BENCH_SERVERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
        .max(1)
}

impl Plane {
    /// `berth server ARGS` once on the embedded store, or `n` times on a new etcd.
    pub fn start(bin: &str, args: &[&str], n: usize) -> Plane {
        let dir = tempfile::tempdir().unwrap();
        if n == 1 {
            let server = spawn(bin, args, &dir.path().join("server0"));
            return Plane {
                servers: vec![server],
                etcd: None,
                dir,
            };
        }
        let etcd = berth_store::local_etcd::LocalEtcd::start(&dir.path().join("etcd"), 3)
            .unwrap_or_else(|e| panic!("starting etcd: {e}"));
        let url = etcd.url();
        let servers = (0..n)
            .map(|i| Self::server(bin, args, &url, &dir.path().join(format!("server{i}"))))
            .collect();
        Plane {
            servers,
            etcd: Some(etcd),
            dir,
        }
    }

    fn server(bin: &str, args: &[&str], url: &str, dir: &std::path::Path) -> Berth {
        let mut all = args.to_vec();
        all.extend(["--store", url]);
        spawn(bin, &all, dir)
    }

    /// Starts server `i` again (after it was killed) in its own data directory.
    pub fn restart(&mut self, bin: &str, args: &[&str], i: usize) {
        let url = self.etcd.as_ref().expect("servers on etcd").url();
        let dir = self.dir.path().join(format!("server{i}"));
        self.servers[i] = Self::server(bin, args, &url, &dir);
    }

    /// What the plane is, for the benchmark's lines: `embedded` or `etcd3x3`.
    pub fn kind(&self) -> String {
        match &self.etcd {
            None => "embedded".into(),
            Some(_) => format!("etcd3x{}", self.servers.len()),
        }
    }

    pub fn stop(self) {
        for s in self.servers {
            s.stop();
        }
    }
}
