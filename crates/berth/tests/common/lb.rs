//! Load-balancer helpers for the Docker tests: ELB set up through the real AWS CLI, a web
//! revision whose answer names it, GETs through a listener, and a continuous load that counts
//! every failed request.

use super::{aws_json, TestServer, BUSYBOX};
use http_body_util::{BodyExt, Empty};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A busybox httpd answering `NAME-V` at `/` and at `/api/`, stopping at SIGTERM.
pub fn web_definition(family: &str, version: &str) -> Value {
    let script = format!(
        "mkdir -p /www/api && echo {family}-{version} > /www/index.html && \
         echo {family}-{version} > /www/api/index.html && exec httpd -f -p 80 -h /www"
    );
    json!({
        "family": family,
        "containerDefinitions": [{
            "name": "web",
            "image": BUSYBOX,
            "memory": 32,
            "essential": true,
            "stopTimeout": 2,
            "entryPoint": ["sh", "-c"],
            "command": [script],
            "portMappings": [{"containerPort": 80, "hostPort": 0}]
        }]
    })
}

/// `aws elbv2` against a test server.
pub struct Elb<'a> {
    pub cli: String,
    pub s: &'a TestServer,
}

impl Elb<'_> {
    pub fn call(&self, args: &[&str]) -> Value {
        tokio::task::block_in_place(|| {
            aws_json(&self.cli, self.s, &self.s.secret_key, "elbv2", args)
                .unwrap_or_else(|e| panic!("aws elbv2 {args:?} failed: {e}"))
        })
    }

    /// A load balancer named `name`; its ARN.
    pub fn load_balancer(&self, name: &str) -> String {
        self.call(&["create-load-balancer", "--name", name])["LoadBalancers"][0]["LoadBalancerArn"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// An HTTP listener of `lb` on `port` forwarding to `group`; its ARN.
    pub fn listener(&self, lb: &str, port: u16, group: &str) -> String {
        self.call(&[
            "create-listener",
            "--load-balancer-arn",
            lb,
            "--protocol",
            "HTTP",
            "--port",
            &port.to_string(),
            "--default-actions",
            &format!("Type=forward,TargetGroupArn={group}"),
        ])["Listeners"][0]["ListenerArn"]
            .as_str()
            .unwrap()
            .to_string()
    }

    pub fn target_group(&self, name: &str) -> String {
        self.target_group_checking(name, "/")
    }

    /// A group checking `path` every 5 s (2 to turn), draining for 10 s.
    pub fn target_group_checking(&self, name: &str, path: &str) -> String {
        let v = self.call(&[
            "create-target-group",
            "--health-check-path",
            path,
            "--name",
            name,
            "--protocol",
            "HTTP",
            "--port",
            "80",
            "--vpc-id",
            "vpc-local",
            "--health-check-interval-seconds",
            "5",
            "--health-check-timeout-seconds",
            "2",
            "--healthy-threshold-count",
            "2",
            "--unhealthy-threshold-count",
            "2",
        ]);
        let arn = v["TargetGroups"][0]["TargetGroupArn"]
            .as_str()
            .unwrap()
            .to_string();
        self.call(&[
            "modify-target-group-attributes",
            "--target-group-arn",
            &arn,
            "--attributes",
            "Key=deregistration_delay.timeout_seconds,Value=10",
        ]);
        arn
    }

    pub fn healthy(&self, group: &str) -> usize {
        self.registered(group)
            .iter()
            .filter(|d| d["TargetHealth"]["State"] == "healthy")
            .count()
    }

    pub fn registered(&self, group: &str) -> Vec<Value> {
        let v = self.call(&["describe-target-health", "--target-group-arn", group]);
        v["TargetHealthDescriptions"].as_array().unwrap().clone()
    }
}

pub type Client = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Empty<bytes::Bytes>,
>;

pub fn client() -> Client {
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http()
}

/// GET through the listener on 127.0.0.1:`port`: (status, body), within 10 s.
pub async fn get(
    c: &Client,
    port: u16,
    path: &str,
    host: Option<&str>,
) -> Result<(u16, String), String> {
    let mut req = http::Request::get(format!("http://127.0.0.1:{port}{path}"));
    if let Some(h) = host {
        req = req.header("host", h);
    }
    let resp = tokio::time::timeout(
        Duration::from_secs(10),
        c.request(req.body(Empty::new()).unwrap()),
    )
    .await
    .map_err(|_| "timed out".to_string())?
    .map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).trim().to_string()))
}

/// Polls `check` every half second for at most `secs`.
pub async fn wait_for(what: &str, secs: u64, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !check() {
        assert!(Instant::now() < deadline, "not {what} within {secs} s");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Four clients GETting `/` through a listener without pause until stopped.
pub struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failures: Arc<Mutex<Vec<String>>>,
    /// Each answer's body, counted.
    bodies: Arc<Mutex<std::collections::BTreeMap<String, usize>>>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

/// What a load saw: requests answered 200, and every other outcome.
pub struct Seen {
    pub ok: usize,
    pub failures: Vec<String>,
    pub bodies: std::collections::BTreeMap<String, usize>,
}

impl Load {
    pub fn start(port: u16) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let bodies = Arc::new(Mutex::new(std::collections::BTreeMap::new()));
        let workers = (0..4)
            .map(|_| {
                let (stop, ok, failures, bodies) =
                    (stop.clone(), ok.clone(), failures.clone(), bodies.clone());
                let c = client();
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        match get(&c, port, "/", None).await {
                            Ok((200, body)) => {
                                ok.fetch_add(1, Ordering::Relaxed);
                                *bodies.lock().unwrap().entry(body).or_default() += 1;
                            }
                            other => failures.lock().unwrap().push(format!("{other:?}")),
                        }
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                })
            })
            .collect();
        Self {
            stop,
            ok,
            failures,
            bodies,
            workers,
        }
    }

    pub async fn stop(self) -> Seen {
        self.stop.store(true, Ordering::Relaxed);
        for w in self.workers {
            w.await.unwrap();
        }
        Seen {
            ok: self.ok.load(Ordering::Relaxed),
            failures: self.failures.lock().unwrap().clone(),
            bodies: self.bodies.lock().unwrap().clone(),
        }
    }
}
