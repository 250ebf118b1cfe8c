//! Shared by the end-to-end tests: a real server on 127.0.0.1:0, a signed raw client, and the
//! contract check of every answer against botocore's ECS model.
#![allow(dead_code, clippy::unwrap_used)]

pub mod contract;

use berth_control::{http::Limits, Config, Control};
use berth_store::Embedded;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

pub const TARGET_PREFIX: &str = "AmazonEC2ContainerServiceV20141113.";

/// A server running in this process on its own data dir.
pub struct TestServer {
    pub endpoint: String,
    pub addr: std::net::SocketAddr,
    pub access_key: String,
    pub secret_key: String,
    pub control: Control,
    pub dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(false, Limits::default()).await
    }

    pub async fn start_with(dev: bool, limits: Limits) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let store = Embedded::open(&dir.path().join("state.redb")).unwrap();
        let control = Control::new(
            Arc::new(store),
            Config {
                dev,
                ..Config::default()
            },
        );
        let (key, created) = control.ensure_admin_key().await.unwrap();
        assert!(created);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(berth_control::http::serve(
            listener,
            control.clone(),
            limits,
            async {
                let _ = rx.await;
            },
        ));
        TestServer {
            endpoint: format!("http://{addr}"),
            addr,
            access_key: key.access_key_id,
            secret_key: key.secret_access_key,
            control,
            dir,
            stop: Some(tx),
            task: Some(task),
        }
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(15), t)
                .await
                .expect("server stops within 15 s")
                .unwrap()
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
