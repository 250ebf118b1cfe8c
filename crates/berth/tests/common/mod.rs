//! Shared by the end-to-end tests: a real server on 127.0.0.1:0, a signed raw client, and the
//! contract check of every answer against botocore's ECS model.
#![allow(dead_code, clippy::unwrap_used)]

pub mod contract;
pub mod ha;
pub mod lb;
pub mod process;
pub mod vpc;

use berth_control::{http::Limits, server, Config, Control};
use berth_store::Embedded;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

pub const TARGET_PREFIX: &str = "AmazonEC2ContainerServiceV20141113.";

/// Whether the tests' servers keep their state on etcd (`BERTH_TEST_STORE=etcd`: a one-member
/// etcd of their own, started beside their data dir) rather than on the embedded store.
pub fn on_etcd() -> bool {
    std::env::var("BERTH_TEST_STORE").as_deref() == Ok("etcd")
}

/// The etcd clusters this test process started, by data dir: a restarted server finds its
/// state again. Each member dies with the process.
static ETCDS: std::sync::Mutex<Vec<(std::path::PathBuf, berth_store::local_etcd::LocalEtcd)>> =
    std::sync::Mutex::new(Vec::new());

/// The store of a server on `dir`: the embedded one in it, or (on etcd) the etcd cluster
/// started for it.
pub async fn test_store(dir: &std::path::Path) -> Arc<dyn berth_store::Store> {
    if !on_etcd() {
        return Arc::new(Embedded::open(&dir.join("state.redb")).unwrap());
    }
    let url = {
        let mut all = ETCDS.lock().unwrap();
        match all.iter().find(|(d, _)| d == dir) {
            Some((_, e)) => e.url(),
            None => {
                let data = dir.join("etcd");
                std::fs::create_dir_all(&data).unwrap();
                let e = berth_store::local_etcd::LocalEtcd::start(&data, 1)
                    .unwrap_or_else(|e| panic!("{e}"));
                let url = e.url();
                all.push((dir.to_path_buf(), e));
                url
            }
        }
    };
    Arc::new(
        berth_store::Etcd::connect(berth_store::EtcdOptions::parse(&url).unwrap())
            .await
            .unwrap(),
    )
}

/// A server running in this process on its own data dir, started as `berth server` starts
/// one ([`server::Server::start`]), with the service loop left to the test.
pub struct TestServer {
    pub endpoint: String,
    pub addr: std::net::SocketAddr,
    /// The image registry's `/v2/` listener.
    pub registry_addr: std::net::SocketAddr,
    pub access_key: String,
    pub secret_key: String,
    /// The home region's handlers.
    pub control: Control,
    /// Every region's.
    pub regions: Arc<berth_control::regions::Regions>,
    pub dir: tempfile::TempDir,
    server: Option<server::Server>,
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(false, Limits::default()).await
    }

    pub async fn start_with(dev: bool, limits: Limits) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(dir, None, dev, limits).await
    }

    /// A server on `dir`'s store, on `addr` (or a fresh port).
    pub async fn start_in(
        dir: tempfile::TempDir,
        addr: Option<std::net::SocketAddr>,
        dev: bool,
        limits: Limits,
    ) -> TestServer {
        Self::start_config(
            dir,
            addr,
            limits,
            Config {
                dev,
                agent_timeout: Duration::from_secs(15),
                ..Config::default()
            },
        )
        .await
    }

    /// A server with the given configuration.
    pub async fn start_config(
        dir: tempfile::TempDir,
        addr: Option<std::net::SocketAddr>,
        limits: Limits,
        config: Config,
    ) -> TestServer {
        Self::start_serving(dir, addr, limits, config, server::Served::Aws).await
    }

    /// A server with the given configuration, serving `served` beside its home region.
    pub async fn start_serving(
        dir: tempfile::TempDir,
        addr: Option<std::net::SocketAddr>,
        limits: Limits,
        config: Config,
        served: server::Served,
    ) -> TestServer {
        let store = test_store(dir.path()).await;
        let registry_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let blob_key =
            berth_registry::blobs::load_or_create_key(&dir.path().join("registry.key")).unwrap();
        let listener = match addr {
            Some(a) => {
                let mut tries = 0;
                loop {
                    match tokio::net::TcpListener::bind(a).await {
                        Ok(l) => break l,
                        Err(e) if tries < 50 => {
                            tries += 1;
                            eprintln!("rebinding {a}: {e}");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        Err(e) => panic!("cannot rebind {a}: {e}"),
                    }
                }
            }
            None => tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        };
        let mut options = server::Options::new(config.clone());
        options.regions = served;
        options.limits = limits;
        options.service_interval = None;
        options.storage = Some(server::Storage {
            dir: dir.path().to_path_buf(),
            blobs_dir: None,
            blob_key,
            registry: berth_registry::Config {
                region: config.region.clone(),
                account_id: config.account_id.clone(),
                ..Default::default()
            },
            registry_listener,
        });
        // Load balancers' listeners on loopback, at the ports the tests choose.
        options.elb = Some(berth_elb::Options {
            address: std::net::IpAddr::from([127, 0, 0, 1]),
            ports: None,
        });
        // Container Insights every second, so a test need not wait for CloudWatch's minute.
        options.insights_interval = Duration::from_secs(1);
        let server = server::Server::start(store, listener, options)
            .await
            .unwrap();
        let control = server.control.clone();
        let regions = server.regions.clone();
        let (key, _) = control.ensure_admin_key().await.unwrap();
        let addr = server.addr;
        TestServer {
            endpoint: format!("http://{addr}"),
            addr,
            registry_addr: server.registry_addr.unwrap(),
            access_key: key.access_key_id,
            secret_key: key.secret_access_key,
            control,
            regions,
            dir,
            server: Some(server),
        }
    }

    /// Runs the service reconciler every 200 ms until the server stops.
    pub fn spawn_service_loop(&self) {
        if let Some(s) = self.server.as_ref() {
            s.spawn_service_loop(Duration::from_millis(200));
        }
    }

    /// Stops the server and starts another on the same store and port.
    pub async fn restart(self) -> TestServer {
        let (dir, addr) = self.shutdown().await;
        Self::start_in(dir, Some(addr), false, Limits::default()).await
    }

    /// Stops the server, handing back its data dir and address for a later [`start_in`].
    pub async fn shutdown(mut self) -> (tempfile::TempDir, std::net::SocketAddr) {
        let addr = self.addr;
        self.stop_server().await;
        let TestServer {
            dir,
            control,
            regions,
            ..
        } = self;
        drop((control, regions));
        // The store is closed when the last handle goes; give handlers in flight a moment.
        let path = dir.path().join("state.redb");
        for _ in 0..100 {
            if on_etcd() {
                break;
            }
            if Embedded::open(&path).is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        (dir, addr)
    }

    pub async fn stop(mut self) {
        self.stop_server().await;
    }

    async fn stop_server(&mut self) {
        if let Some(s) = self.server.take() {
            tokio::time::timeout(Duration::from_secs(15), s.shutdown())
                .await
                .expect("server stops within 15 s")
                .unwrap();
        }
    }

    /// A signed ECS call; success answers are checked against the operation's output shape and
    /// error answers against the error shape.
    pub async fn call(&self, op: &str, body: Value) -> Answer {
        let answer = self
            .call_as(
                op,
                &body.to_string(),
                &self.access_key.clone(),
                &self.secret_key.clone(),
                SystemTime::now(),
            )
            .await;
        contract::check_answer(op, &answer);
        answer
    }

    /// Like [`call`], but the answer must be a success.
    pub async fn ok(&self, op: &str, body: Value) -> Value {
        let a = self.call(op, body).await;
        assert_eq!(a.status, 200, "{op} failed: {}", a.body);
        a.body
    }

    /// Like [`call`], but the answer must be the named error; returns its message.
    pub async fn err(&self, op: &str, body: Value, error: &str) -> String {
        let a = self.call(op, body).await;
        assert_eq!(
            a.error_type().as_deref(),
            Some(error),
            "{op}: expected {error}, got {} {}",
            a.status,
            a.body
        );
        a.body["message"].as_str().unwrap_or_default().to_string()
    }

    pub async fn call_as(
        &self,
        op: &str,
        body: &str,
        ak: &str,
        sk: &str,
        when: SystemTime,
    ) -> Answer {
        signed_call(&self.endpoint, op, body, ak, sk, when).await
    }
}

/// A signed ECS call of `op` to any server at `endpoint`.
pub async fn signed_call(
    endpoint: &str,
    op: &str,
    body: &str,
    ak: &str,
    sk: &str,
    when: SystemTime,
) -> Answer {
    let headers = berth_api::sigv4::ecs_request_headers(
        &berth_api::sigv4::SigningKey {
            access_key: ak,
            secret: sk,
            region: "us-east-1",
            service: "ecs",
        },
        endpoint,
        op,
        body.as_bytes(),
        when,
    )
    .unwrap();
    raw_request(endpoint, "POST", "/", &headers, body.as_bytes().to_vec()).await
}

/// A signed ECR call of `op` (service `ecr`) to any server at `endpoint`.
pub async fn signed_ecr_call(endpoint: &str, op: &str, body: &Value, ak: &str, sk: &str) -> Answer {
    json_call(endpoint, "ecr", op, body, ak, sk).await
}

/// A signed JSON 1.1 call of `op` to `service` (`ecr` or `logs`), with the key `ak`/`sk`.
async fn json_call(
    endpoint: &str,
    service: &str,
    op: &str,
    body: &Value,
    ak: &str,
    sk: &str,
) -> Answer {
    let body = body.to_string();
    let key = berth_api::sigv4::SigningKey {
        access_key: ak,
        secret: sk,
        region: "us-east-1",
        service,
    };
    let sign = match service {
        "ecr" => berth_api::sigv4::ecr_request_headers,
        "logs" => berth_api::sigv4::logs_request_headers,
        other => panic!("no JSON call for service {other}"),
    };
    let headers = sign(&key, endpoint, op, body.as_bytes(), SystemTime::now()).unwrap();
    raw_request(endpoint, "POST", "/", &headers, body.into_bytes()).await
}

/// A signed CloudWatch Logs call of `op` (service `logs`) to a test server, with its admin key.
pub async fn signed_logs_call(s: &TestServer, op: &str, body: &Value) -> Answer {
    logs_call_to(&s.endpoint, &s.access_key, &s.secret_key, op, body).await
}

/// A signed CloudWatch Logs call of `op` to any server at `endpoint`.
pub async fn logs_call_to(endpoint: &str, ak: &str, sk: &str, op: &str, body: &Value) -> Answer {
    json_call(endpoint, "logs", op, body, ak, sk).await
}

/// One `/v2/` answer of the registry.
pub struct Resp {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    }
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
    /// The distribution spec's error code.
    pub fn code(&self) -> String {
        self.json()["errors"][0]["code"]
            .as_str()
            .unwrap_or("")
            .to_string()
    }
}

/// A `/v2/` client of the registry at `base`, with the given `Authorization` (or none).
pub struct Reg {
    pub base: String,
    pub auth: Option<String>,
}

impl Reg {
    /// Basic credentials of an access key, against the registry at `addr` (`host:port`).
    pub fn basic(addr: &str, ak: &str, sk: &str) -> Reg {
        use base64::Engine as _;
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("{ak}:{sk}"));
        Reg {
            base: format!("http://{addr}"),
            auth: Some(format!("Basic {basic}")),
        }
    }

    /// The admin key of a test server, against its registry.
    pub fn new(s: &TestServer) -> Reg {
        Reg::basic(&s.registry_addr.to_string(), &s.access_key, &s.secret_key)
    }

    /// `path` is under the registry, or a whole URL.
    pub async fn req(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Resp {
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<Full<Bytes>>();
        let uri = if path.starts_with("http") {
            path.to_string()
        } else {
            format!("{}{path}", self.base)
        };
        let mut req = http::Request::builder().method(method).uri(uri);
        if let Some(a) = &self.auth {
            req = req.header("authorization", a);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Full::new(Bytes::copy_from_slice(body))).unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(30), client.request(req))
            .await
            .expect("answer within 30 s")
            .unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        Resp {
            status,
            headers,
            body,
        }
    }
}

/// A client of the `aws-sdk-*` crate `$sdk` (its module path, e.g. `aws_sdk_ecs`) for a test
/// server, signing with its admin key (or the given secret, to test a wrong one).
#[allow(unused_macros)]
macro_rules! sdk_client {
    ($sdk:ident, $server:expr) => {{
        let s = $server;
        common::sdk_client!($sdk, s, &s.secret_key)
    }};
    ($sdk:ident, $server:expr, $secret:expr) => {{
        let s = $server;
        $sdk::Client::from_conf(
            $sdk::Config::builder()
                .behavior_version($sdk::config::BehaviorVersion::latest())
                .region($sdk::config::Region::new("us-east-1"))
                .endpoint_url(&s.endpoint)
                .credentials_provider($sdk::config::Credentials::new(
                    &s.access_key,
                    $secret,
                    None,
                    None,
                    "test",
                ))
                .build(),
        )
    }};
}
#[allow(unused_imports)]
pub(crate) use sdk_client;

/// The AWS CLI to run: `BERTH_AWS_CLI` (set by `scripts/test`) or `aws`. Fails loudly when it
/// is missing, unless `BERTH_SKIP_AWS_CLI=1` (then `None`).
pub fn aws_cli() -> Option<String> {
    if std::env::var("BERTH_SKIP_AWS_CLI").as_deref() == Ok("1") {
        eprintln!("BERTH_SKIP_AWS_CLI=1: skipping the AWS CLI test");
        return None;
    }
    let cli = std::env::var("BERTH_AWS_CLI").unwrap_or_else(|_| "aws".into());
    match std::process::Command::new(&cli).arg("--version").output() {
        Ok(o) if o.status.success() => Some(cli),
        _ => panic!("the AWS CLI ('{cli}') is not installed: run .ci/run, or set BERTH_AWS_CLI, or BERTH_SKIP_AWS_CLI=1 to opt out"),
    }
}

/// `aws` against `s` with its admin key id and `secret`, nothing from the user's own
/// configuration, and no retries; add the service, command and arguments.
pub fn aws_command(bin: &str, s: &TestServer, secret: &str) -> std::process::Command {
    aws_command_in(bin, s, secret, "us-east-1")
}

/// [`aws_command`] for `region`.
pub fn aws_command_in(
    bin: &str,
    s: &TestServer,
    secret: &str,
    region: &str,
) -> std::process::Command {
    let mut cmd = std::process::Command::new(bin);
    cmd.args(["--endpoint-url", &s.endpoint, "--region", region])
        .env("AWS_ACCESS_KEY_ID", &s.access_key)
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env("AWS_MAX_ATTEMPTS", "1")
        .env_remove("AWS_PROFILE");
    cmd
}

/// Runs `aws SERVICE ARGS` against `s`: Ok(its JSON; `Null` for no output) or Err(stderr).
pub fn aws_json(
    bin: &str,
    s: &TestServer,
    secret: &str,
    service: &str,
    args: &[&str],
) -> Result<Value, String> {
    aws_json_in(bin, s, secret, "us-east-1", service, args)
}

/// [`aws_json`] in `region`.
pub fn aws_json_in(
    bin: &str,
    s: &TestServer,
    secret: &str,
    region: &str,
    service: &str,
    args: &[&str],
) -> Result<Value, String> {
    let out = aws_command_in(bin, s, secret, region)
        .args(["--output", "json", service])
        .args(args)
        .output()
        .unwrap();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(if text.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap()
    })
}

/// A service's tasks in `default` whose desired status is `desired` (ListTasks' default,
/// RUNNING, when `None`), described.
pub async fn service_tasks(s: &TestServer, name: &str, desired: Option<&str>) -> Vec<Value> {
    let mut list = serde_json::json!({"cluster": "default", "serviceName": name});
    if let Some(d) = desired {
        list["desiredStatus"] = d.into();
    }
    let arns = s.ok("ListTasks", list).await["taskArns"]
        .as_array()
        .unwrap()
        .clone();
    if arns.is_empty() {
        return Vec::new();
    }
    s.ok(
        "DescribeTasks",
        serde_json::json!({"cluster": "default", "tasks": arns}),
    )
    .await["tasks"]
        .as_array()
        .unwrap()
        .clone()
}

/// One HTTP answer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub request_id: Option<String>,
    pub body: Value,
}

impl Answer {
    pub fn error_type(&self) -> Option<String> {
        self.body
            .get("__type")
            .and_then(Value::as_str)
            .map(str::to_string)
    }
}

pub async fn raw_request(
    endpoint: &str,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: Vec<u8>,
) -> Answer {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let mut req = http::Request::builder()
        .method(method)
        .uri(format!("{endpoint}{path}"));
    for (k, v) in headers {
        if k != "host" {
            req = req.header(k, v);
        }
    }
    let req = req.body(Full::new(Bytes::from(body))).unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(30), client.request(req))
        .await
        .expect("answer within 30 s")
        .unwrap();
    let status = resp.status().as_u16();
    let request_id = resp
        .headers()
        .get("x-amzn-requestid")
        .map(|v| v.to_str().unwrap().to_string());
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    Answer {
        status,
        request_id,
        body,
    }
}

/// A minimal valid EC2 task definition for `family`.
pub fn task_def(family: &str) -> Value {
    serde_json::json!({
        "family": family,
        "containerDefinitions": [{"name": "app", "image": "busybox", "memory": 64}]
    })
}

/// Fails loudly when the Docker Engine is missing, unless the tests are told to skip it with
/// `BERTH_SKIP_DOCKER=1` (then returns false).
pub fn docker_available() -> bool {
    if std::env::var("BERTH_SKIP_DOCKER").as_deref() == Ok("1") {
        eprintln!("BERTH_SKIP_DOCKER=1: skipping a test that needs the Docker Engine");
        return false;
    }
    let ok = std::process::Command::new("docker")
        .arg("info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "this test needs a Docker Engine (`docker info` failed); start one, or set BERTH_SKIP_DOCKER=1 to skip"
    );
    build_test_images();
    true
}

/// Builds berth-test/busybox:latest once per test process.
pub fn build_test_images() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../scripts/build-test-images");
        let status = std::process::Command::new(script).status().unwrap();
        assert!(status.success(), "scripts/build-test-images failed");
    });
}

pub const BUSYBOX: &str = "berth-test/busybox:latest";

/// A `berth agent` running in this process against a [`TestServer`], on the real Docker Engine.
pub struct TestAgent {
    pub data_dir: std::path::PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), berth_agent::AgentError>>>,
}

impl TestAgent {
    pub fn config(server: &TestServer, data_dir: &std::path::Path) -> berth_agent::AgentConfig {
        let mut cfg = berth_agent::AgentConfig::new(&server.endpoint, "default", data_dir.into());
        cfg.cpu = Some(2048);
        cfg.memory = Some(2048);
        cfg.cleanup_after = Duration::from_secs(3600);
        cfg.poll_wait = Duration::from_secs(5);
        cfg.tick = Duration::from_millis(200);
        // Tests run side by side: each agent's metadata endpoint on a port of its own.
        cfg.metadata_port = Some(0);
        // Docker stats cost a second of Docker's time per container: only the tests about
        // them sample.
        cfg.stats_interval = None;
        cfg
    }

    pub async fn start(server: &TestServer, cfg: berth_agent::AgentConfig) -> TestAgent {
        Self::start_reading(server, cfg, true).await
    }

    /// An agent that reads json-file output from disk (`log_files`) or through Docker's API.
    pub async fn start_reading(
        server: &TestServer,
        cfg: berth_agent::AgentConfig,
        log_files: bool,
    ) -> TestAgent {
        let mut cfg = cfg;
        if cfg.token.is_none() {
            cfg.token = Some(
                server
                    .control
                    .ensure_join_token(&cfg.cluster)
                    .await
                    .unwrap(),
            );
        }
        let runtime: Arc<dyn berth_agent::runtime::Runtime> = Arc::new(
            berth_agent::docker::Docker::connect()
                .await
                .unwrap()
                .with_log_files(log_files),
        );
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let data_dir = cfg.data_dir.clone();
        let task = tokio::spawn(berth_agent::run(cfg, runtime, async {
            let _ = rx.await;
        }));
        TestAgent {
            data_dir,
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// Stops the agent; its containers keep running.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            let r = tokio::time::timeout(Duration::from_secs(20), t)
                .await
                .expect("agent stops within 20 s")
                .unwrap();
            r.unwrap();
        }
    }

    /// Kills the agent's loops without letting it say goodbye (what `kill -9` leaves).
    pub fn abort(mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

/// The container instance ARN the agent's data dir holds, once it has joined.
/// The `default` cluster with Container Insights at `level` (`enabled` or `enhanced`), and
/// one agent on the real Docker Engine sampling its tasks every second: the agent, its
/// instance ARN and its data dir (kept as long as the agent runs).
pub async fn insights_agent(s: &TestServer, level: &str) -> (TestAgent, String, tempfile::TempDir) {
    s.ok(
        "CreateCluster",
        serde_json::json!({"clusterName": "default",
               "settings": [{"name": "containerInsights", "value": level}]}),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = TestAgent::config(s, dir.path());
    cfg.stats_interval = Some(Duration::from_secs(1));
    let agent = TestAgent::start(s, cfg).await;
    let instance = wait_joined(&agent).await;
    (agent, instance, dir)
}

pub async fn wait_joined(agent: &TestAgent) -> String {
    for _ in 0..200 {
        if let Ok(text) = std::fs::read_to_string(agent.data_dir.join("agent.json")) {
            let v: Value = serde_json::from_str(&text).unwrap();
            return v["container_instance_arn"].as_str().unwrap().to_string();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the agent did not join within 10 s");
}

/// Polls DescribeTasks until `pred` holds for the task, or panics after `secs`.
pub async fn wait_task(
    server: &TestServer,
    cluster: &str,
    task_arn: &str,
    secs: u64,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    let mut last = Value::Null;
    while std::time::Instant::now() < deadline {
        let v = server
            .ok(
                "DescribeTasks",
                serde_json::json!({"cluster": cluster, "tasks": [task_arn]}),
            )
            .await;
        last = v["tasks"][0].clone();
        if pred(&last) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("task {task_arn} did not reach '{what}' within {secs} s; last seen: {last:#}");
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `docker inspect` of one container, as JSON.
pub fn docker_inspect(id: &str) -> Value {
    let out = std::process::Command::new("docker")
        .args(["inspect", id])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "docker inspect {id}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v[0].clone()
}

/// Removes every container an agent of this test server made (by the test's instance ARN).
pub fn docker_cleanup(instance_arn: &str) {
    let out = std::process::Command::new("docker")
        .args([
            "ps",
            "-aq",
            "--filter",
            &format!("label=io.berth.container-instance-arn={instance_arn}"),
        ])
        .output()
        .unwrap();
    let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect();
    if !ids.is_empty() {
        let _ = std::process::Command::new("docker")
            .arg("rm")
            .arg("-f")
            .args(&ids)
            .stdout(std::process::Stdio::null())
            .status();
    }
}

/// The families of an OpenMetrics text, as `{name: [{name, labels, value}]}`.
pub fn parse_openmetrics(text: &str) -> Value {
    use std::io::Write;
    let python = std::env::var("BERTH_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = r#"
import sys, json
from prometheus_client.openmetrics.parser import text_string_to_metric_families
out = {}
for f in text_string_to_metric_families(sys.stdin.read()):
    out[f.name] = [{"name": s.name, "labels": s.labels, "value": s.value} for s in f.samples]
print(json.dumps(out))
"#;
    let mut child = std::process::Command::new(&python)
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("running {python}: {e} (run scripts/test, or set BERTH_PYTHON)")
        });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "Prometheus's parser refused the exposition (is prometheus_client installed? run scripts/test): {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The value of the sample called `name` (a histogram's `_count`, say) of `family`.
pub fn metric(families: &Value, family: &str, name: &str, labels: Value) -> f64 {
    families[family]
        .as_array()
        .unwrap_or_else(|| panic!("no family {family} in {families:#}"))
        .iter()
        // A counter's sample is FAMILY_total.
        .filter(|s| s["name"] == name || s["name"] == format!("{name}_total"))
        .find(|s| {
            labels
                .as_object()
                .unwrap()
                .iter()
                .all(|(k, v)| s["labels"][k] == *v)
        })
        .unwrap_or_else(|| panic!("no {name} sample with {labels} in {:#}", families[family]))
        ["value"]
        .as_f64()
        .unwrap()
}
