//! The task metadata endpoint, version 4: every container gets `ECS_CONTAINER_METADATA_URI_V4`
//! (`http://GATEWAY:PORT/v4/DOCKER_NAME`), and the agent answers there with ECS's shapes:
//! `/` the container, `/task` the task and its containers, `/stats` the container's Docker
//! stats, `/task/stats` every container's by Docker id. It listens on the Docker bridge's
//! gateway address, which bridge-mode containers reach and host-mode containers share.
//! A container is known by its deterministic Docker name, so the URI outlives agent restarts
//! (the agent listens on the same port each time; `--metadata-port`, 51679 as ECS's agent).
//!
//! `ECS_AGENT_URI` (`http://GATEWAY:PORT/api/DOCKER_NAME`) serves the task scale-in protection
//! endpoint, `task-protection/v1/state`: GET reads the task's protection, PUT
//! `{"ProtectionEnabled": true, "ExpiresInMinutes": 60}` sets it, through the server
//! (GetTaskProtection and UpdateTaskProtection for the container's own task), answering as the
//! ECS agent does: `{"protection": …}`, `{"failure": …}` or `{"error": …}` with ECS's status.

use crate::client::{Identity, ServerClient};
use crate::runtime::Runtime;
use berth_agent_proto::{DesiredTask, ProtectionRequest, ProtectionResponse, TaskReport};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use http_body_util::Full;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

/// What the engine knows of one container, beyond the plan and the report.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContainerView {
    pub docker_name: String,
    pub docker_id: Option<String>,
    pub image_id: Option<String>,
    pub labels: HashMap<String, String>,
    pub ip_address: Option<String>,
    pub started_at: Option<f64>,
    pub finished_at: Option<f64>,
}

/// One task as the endpoint shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskView {
    pub plan: DesiredTask,
    pub report: TaskReport,
    /// In the plan's container order.
    pub containers: Vec<ContainerView>,
    pub availability_zone: String,
}

fn rfc3339(epoch: Option<f64>) -> Option<String> {
    let t = epoch?;
    let t = time::OffsetDateTime::from_unix_timestamp_nanos((t * 1e9) as i128).ok()?;
    t.format(&time::format_description::well_known::Rfc3339)
        .ok()
}

fn cluster_name(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap_or(arn)
}

/// The v4 container object. Pure.
pub fn container_json(t: &TaskView, i: usize) -> Value {
    let (Some(plan), Some(view)) = (t.plan.containers.get(i), t.containers.get(i)) else {
        return Value::Null;
    };
    let report = t.report.containers.iter().find(|c| c.name == plan.name);
    let known = report.map_or("PENDING", |r| r.last_status.as_str());
    let mut o = Map::new();
    o.insert(
        "DockerId".into(),
        json!(view.docker_id.clone().unwrap_or_default()),
    );
    o.insert("Name".into(), json!(plan.name));
    o.insert("DockerName".into(), json!(view.docker_name));
    o.insert("Image".into(), json!(plan.image));
    o.insert(
        "ImageID".into(),
        json!(view.image_id.clone().unwrap_or_default()),
    );
    let labels: BTreeMap<&String, &String> = view.labels.iter().collect();
    o.insert("Labels".into(), json!(labels));
    o.insert("DesiredStatus".into(), json!(t.plan.desired_status));
    o.insert("KnownStatus".into(), json!(known));
    let mut limits = Map::new();
    limits.insert("CPU".into(), json!(plan.cpu.unwrap_or(0)));
    if let Some(m) = plan.memory.or(plan.memory_reservation) {
        limits.insert("Memory".into(), json!(m));
    }
    o.insert("Limits".into(), Value::Object(limits));
    if let Some(s) = rfc3339(view.started_at) {
        o.insert("StartedAt".into(), json!(s));
    }
    if let Some(s) = rfc3339(view.finished_at) {
        o.insert("FinishedAt".into(), json!(s));
    }
    if let Some(code) = report.and_then(|r| r.exit_code) {
        o.insert("ExitCode".into(), json!(code));
    }
    o.insert("Type".into(), json!("NORMAL"));
    if let Some(d) = &plan.log_driver {
        o.insert("LogDriver".into(), json!(d));
        o.insert("LogOptions".into(), json!(plan.log_options));
    }
    let ports: Vec<Value> = report
        .map(|r| {
            r.network_bindings
                .iter()
                .map(|b| {
                    json!({"ContainerPort": b.container_port, "Protocol": b.protocol,
                           "HostPort": b.host_port, "HostIp": b.bind_ip})
                })
                .collect()
        })
        .unwrap_or_default();
    if !ports.is_empty() {
        o.insert("Ports".into(), json!(ports));
    }
    let mut net = Map::new();
    net.insert("NetworkMode".into(), json!(t.plan.network_mode));
    if let Some(ip) = &view.ip_address {
        net.insert("IPv4Addresses".into(), json!([ip]));
    }
    // An awsvpc task's interface, as ECS describes it.
    if let Some(n) = &t.plan.network {
        net.insert("AttachmentIndex".into(), json!(0));
        net.insert("MACAddress".into(), json!(n.mac));
        net.insert("IPv4SubnetCIDRBlock".into(), json!(n.subnet_cidr));
        // ECS writes the gateway with the subnet's prefix length: `10.0.1.1/24`.
        let prefix = n.subnet_cidr.split_once('/').map_or("32", |(_, p)| p);
        net.insert(
            "SubnetGatewayIpv4Address".into(),
            json!(format!("{}/{prefix}", n.gateway)),
        );
    }
    o.insert("Networks".into(), json!([Value::Object(net)]));
    Value::Object(o)
}

/// The v4 task object. Pure.
pub fn task_json(t: &TaskView) -> Value {
    let mut o = Map::new();
    o.insert("Cluster".into(), json!(cluster_name(&t.plan.cluster_arn)));
    o.insert("TaskARN".into(), json!(t.plan.task_arn));
    o.insert("Family".into(), json!(t.plan.family));
    o.insert("Revision".into(), json!(t.plan.revision.to_string()));
    o.insert("DesiredStatus".into(), json!(t.plan.desired_status));
    o.insert("KnownStatus".into(), json!(t.report.last_status));
    for (key, at) in [
        ("PullStartedAt", t.report.pull_started_at),
        ("PullStoppedAt", t.report.pull_stopped_at),
        ("ExecutionStoppedAt", t.report.execution_stopped_at),
    ] {
        if let Some(s) = rfc3339(at) {
            o.insert(key.into(), json!(s));
        }
    }
    o.insert(
        "Containers".into(),
        json!((0..t.plan.containers.len())
            .map(|i| container_json(t, i))
            .collect::<Vec<_>>()),
    );
    o.insert("AvailabilityZone".into(), json!(t.availability_zone));
    o.insert("LaunchType".into(), json!("EC2"));
    Value::Object(o)
}

/// The endpoint's state: the latest view of every task the engine runs.
#[derive(Debug)]
pub struct Metadata {
    /// `http://GATEWAY:PORT`, what containers are told.
    pub base: String,
    tasks: Mutex<HashMap<String, TaskView>>,
    /// Where task protection is read and set.
    server: (ServerClient, Identity),
}

impl Metadata {
    /// Serves the endpoint on `addr` (port 0: any) until the agent stops.
    pub async fn serve(
        addr: SocketAddr,
        runtime: Arc<dyn Runtime>,
        server: (ServerClient, Identity),
    ) -> std::io::Result<Arc<Metadata>> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let bound = listener.local_addr()?;
        let me = Arc::new(Metadata {
            base: format!("http://{bound}"),
            tasks: Mutex::new(HashMap::new()),
            server,
        });
        let m = me.clone();
        spawn_http(listener, move |req| {
            let (m, rt) = (m.clone(), runtime.clone());
            async move { m.answer(req, &*rt).await }
        });
        Ok(me)
    }

    /// The URI a container is given.
    pub fn uri_for(&self, docker_name: &str) -> String {
        format!("{}/v4/{docker_name}", self.base)
    }

    /// The agent API's URI a container is given (`ECS_AGENT_URI`).
    pub fn agent_uri_for(&self, docker_name: &str) -> String {
        format!("{}/api/{docker_name}", self.base)
    }

    pub fn update(&self, view: TaskView) {
        let mut m = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        m.insert(view.plan.task_arn.clone(), view);
    }

    pub fn forget(&self, task_arn: &str) {
        let mut m = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        m.remove(task_arn);
    }

    /// The task holding the container named `docker_name`, and its index.
    fn find(&self, docker_name: &str) -> Option<(TaskView, usize)> {
        let m = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        m.values().find_map(|t| {
            let i = t
                .containers
                .iter()
                .position(|c| c.docker_name == docker_name)?;
            Some((t.clone(), i))
        })
    }

    async fn answer(
        &self,
        req: Request<hyper::body::Incoming>,
        rt: &dyn Runtime,
    ) -> Response<Full<Bytes>> {
        let path = req.uri().path().trim_end_matches('/').to_string();
        if let Some(rest) = path.strip_prefix("/api/") {
            return self.protection(req, rest).await;
        }
        let mut parts = path.trim_start_matches('/').splitn(3, '/');
        let (Some("v4"), Some(name)) = (parts.next(), parts.next()) else {
            return reply(StatusCode::NOT_FOUND, json!({"error": "unknown path"}));
        };
        let Some((mut task, i)) = self.find(name) else {
            return reply(
                StatusCode::NOT_FOUND,
                json!({"error": format!("no container '{name}' on this instance")}),
            );
        };
        // What Docker says now: the engine's own view may be a tick behind a container that
        // asks the moment it starts.
        for c in &mut task.containers {
            if let Some(id) = &c.docker_id {
                if let Ok(Some(o)) = rt.inspect(id).await {
                    // An awsvpc task's containers have no address of their own in Docker.
                    c.ip_address = o.ip_address.or(c.ip_address.take());
                    c.started_at = o.started_at;
                    c.finished_at = o.finished_at;
                    c.image_id = o.image_id;
                    c.labels = o.labels;
                }
            }
        }
        match parts.next() {
            None => reply(StatusCode::OK, container_json(&task, i)),
            Some("task") => reply(StatusCode::OK, task_json(&task)),
            Some("stats") => {
                let id = task.containers[i].docker_id.clone().unwrap_or_default();
                match rt.stats(&id).await {
                    Ok(v) => reply(StatusCode::OK, v),
                    Err(e) => reply(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        json!({"error": e.to_string()}),
                    ),
                }
            }
            Some("task/stats") => {
                let mut all = Map::new();
                for c in &task.containers {
                    if let Some(id) = &c.docker_id {
                        let v = rt.stats(id).await.unwrap_or(Value::Null);
                        all.insert(id.clone(), v);
                    }
                }
                reply(StatusCode::OK, Value::Object(all))
            }
            Some(_) => reply(StatusCode::NOT_FOUND, json!({"error": "unknown path"})),
        }
    }
}

impl Metadata {
    /// `ECS_AGENT_URI/task-protection/v1/state` for the container named in `rest`.
    async fn protection(
        &self,
        req: Request<hyper::body::Incoming>,
        rest: &str,
    ) -> Response<Full<Bytes>> {
        let error = |status: StatusCode, arn: &str, code: &str, message: &str| {
            let mut e = Map::new();
            if !arn.is_empty() {
                e.insert("Arn".into(), json!(arn));
            }
            e.insert("Code".into(), json!(code));
            e.insert("Message".into(), json!(message));
            reply(status, json!({ "error": Value::Object(e) }))
        };
        let Some((name, "task-protection/v1/state")) = rest.split_once('/') else {
            return reply(StatusCode::NOT_FOUND, json!({"error": "unknown path"}));
        };
        let update = match *req.method() {
            http::Method::GET => false,
            http::Method::PUT => true,
            _ => {
                return reply(
                    StatusCode::METHOD_NOT_ALLOWED,
                    json!({"error": "GET or PUT"}),
                )
            }
        };
        let body = match tokio::time::timeout(
            std::time::Duration::from_secs(10),
            http_body_util::Limited::new(req.into_body(), 64 * 1024).collect(),
        )
        .await
        {
            Ok(Ok(b)) => b.to_bytes(),
            _ => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "",
                    "InvalidParameterException",
                    "UpdateTaskProtection: failed to decode request",
                )
            }
        };
        let Some((task, _)) = self.find(name) else {
            return error(
                StatusCode::NOT_FOUND,
                "",
                "ResourceNotFoundException",
                "Failed to find a task for the request",
            );
        };
        let arn = task.plan.task_arn.clone();
        let mut request = ProtectionRequest {
            task_arn: arn.clone(),
            protection_enabled: None,
            expires_in_minutes: None,
        };
        if update {
            #[derive(serde::Deserialize)]
            #[serde(deny_unknown_fields)]
            #[allow(non_snake_case)]
            struct Put {
                ProtectionEnabled: Option<bool>,
                ExpiresInMinutes: Option<i32>,
            }
            let Ok(put) = serde_json::from_slice::<Put>(&body) else {
                return error(
                    StatusCode::BAD_REQUEST,
                    "",
                    "InvalidParameterException",
                    "UpdateTaskProtection: failed to decode request",
                );
            };
            let Some(enabled) = put.ProtectionEnabled else {
                return error(
                    StatusCode::BAD_REQUEST,
                    &arn,
                    "InvalidParameterException",
                    "Invalid request: does not contain 'ProtectionEnabled' field",
                );
            };
            request.protection_enabled = Some(enabled);
            request.expires_in_minutes = put.ExpiresInMinutes;
        }
        let (client, id) = &self.server;
        match client.task_protection(id, &request).await {
            Ok(answer) => protection_reply(&arn, answer),
            Err(e) => error(
                StatusCode::INTERNAL_SERVER_ERROR,
                &arn,
                "ServerException",
                &e.to_string(),
            ),
        }
    }
}

/// The ECS agent's answer for what the server said. Pure.
pub fn protection_reply(arn: &str, answer: ProtectionResponse) -> Response<Full<Bytes>> {
    if let Some(e) = answer.error {
        let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return reply(
            status,
            json!({"error": {"Arn": arn, "Code": e.code, "Message": e.message}}),
        );
    }
    if let Some(f) = answer.failure {
        return reply(
            StatusCode::OK,
            json!({"failure": {"Arn": f.arn, "Detail": f.detail, "Reason": f.reason}}),
        );
    }
    match answer.protection {
        Some(p) => {
            let mut o = Map::new();
            if let Some(at) = rfc3339(p.expiration_date) {
                o.insert("ExpirationDate".into(), json!(at));
            }
            o.insert("ProtectionEnabled".into(), json!(p.protection_enabled));
            o.insert("TaskArn".into(), json!(p.task_arn));
            reply(StatusCode::OK, json!({ "protection": Value::Object(o) }))
        }
        None => reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"error": {"Arn": arn, "Code": "ServerException", "Message": "Unexpected error occurred"}}),
        ),
    }
}

/// Serves HTTP/1.1 on `listener` until the runtime stops, answering each request with
/// `handle` (the agent's small listeners: metadata and metrics).
pub(crate) fn spawn_http<F, Fut>(listener: tokio::net::TcpListener, handle: F)
where
    F: Fn(Request<hyper::body::Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let handle = handle.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let answer = handle(req);
                    async move { Ok::<_, Infallible>(answer.await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
}

fn reply(status: StatusCode, v: Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

#[cfg(test)]
mod tests {

    #[test]
    fn protection_answers_read_as_the_ecs_agent_writes_them() {
        use berth_agent_proto::{ProtectionError, ProtectionFailure, TaskProtection};
        use http_body_util::BodyExt as _;
        let body = |r: Response<Full<Bytes>>| -> (u16, Value) {
            let status = r.status().as_u16();
            let bytes = block_on(r.into_body().collect())
                .unwrap_or_else(|e| match e {})
                .to_bytes();
            (status, serde_json::from_slice(&bytes).expect("JSON"))
        };
        let ok = protection_reply(
            "arn:t",
            ProtectionResponse {
                protection: Some(TaskProtection {
                    task_arn: "arn:t".into(),
                    protection_enabled: true,
                    expiration_date: Some(1_700_000_000.0),
                }),
                ..Default::default()
            },
        );
        assert_eq!(
            body(ok),
            (
                200,
                json!({"protection": {"ExpirationDate": "2023-11-14T22:13:20Z", "ProtectionEnabled": true, "TaskArn": "arn:t"}})
            )
        );
        let failed = protection_reply(
            "arn:t",
            ProtectionResponse {
                failure: Some(ProtectionFailure {
                    arn: "arn:t".into(),
                    reason: "TASK_NOT_VALID".into(),
                    detail: None,
                }),
                ..Default::default()
            },
        );
        assert_eq!(
            body(failed),
            (
                200,
                json!({"failure": {"Arn": "arn:t", "Detail": null, "Reason": "TASK_NOT_VALID"}})
            )
        );
        let refused = protection_reply(
            "arn:t",
            ProtectionResponse {
                error: Some(ProtectionError {
                    code: "InvalidParameterException".into(),
                    message: "no".into(),
                    status: 400,
                }),
                ..Default::default()
            },
        );
        assert_eq!(
            body(refused),
            (
                400,
                json!({"error": {"Arn": "arn:t", "Code": "InvalidParameterException", "Message": "no"}})
            )
        );
    }

    /// Runs a future that completes without waiting (a full body) to its end.
    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime")
            .block_on(f)
    }

    use super::*;
    use berth_agent_proto::{Binding, ContainerPlan, ContainerReport};

    fn view() -> TaskView {
        TaskView {
            plan: DesiredTask {
                task_arn: "arn:aws:ecs:us-east-1:000000000000:task/prod/abc".into(),
                cluster_arn: "arn:aws:ecs:us-east-1:000000000000:cluster/prod".into(),
                family: "web".into(),
                revision: 7,
                desired_status: "RUNNING".into(),
                network_mode: "bridge".into(),
                containers: vec![ContainerPlan {
                    name: "app".into(),
                    image: "nginx:1".into(),
                    cpu: Some(256),
                    memory: Some(128),
                    ..Default::default()
                }],
                volumes: vec![],
                stop_reason: None,
                cpu: None,
                memory: None,
                ephemeral_storage_gib: None,
                network: None,
            },
            report: TaskReport {
                task_arn: "arn:aws:ecs:us-east-1:000000000000:task/prod/abc".into(),
                last_status: "RUNNING".into(),
                pull_started_at: Some(1_700_000_000.5),
                containers: vec![ContainerReport {
                    name: "app".into(),
                    last_status: "RUNNING".into(),
                    network_bindings: vec![Binding {
                        bind_ip: "0.0.0.0".into(),
                        container_port: 80,
                        host_port: 32768,
                        protocol: "tcp".into(),
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            },
            containers: vec![ContainerView {
                docker_name: "ecs-web-7-app-abc".into(),
                docker_id: Some("d0c".into()),
                ip_address: Some("172.17.0.5".into()),
                started_at: Some(1_700_000_001.0),
                ..Default::default()
            }],
            availability_zone: "local-1a".into(),
        }
    }

    #[test]
    fn task_and_container_in_ecs_shapes() {
        let t = task_json(&view());
        assert_eq!(t["Cluster"], "prod");
        assert_eq!(t["Revision"], "7", "v4 gives the revision as a string");
        assert_eq!(t["KnownStatus"], "RUNNING");
        assert_eq!(t["PullStartedAt"], "2023-11-14T22:13:20.5Z");
        assert_eq!(t["LaunchType"], "EC2");
        let c = &t["Containers"][0];
        assert_eq!(c["DockerName"], "ecs-web-7-app-abc");
        assert_eq!(c["Limits"], json!({"CPU": 256, "Memory": 128}));
        assert_eq!(
            c["Networks"][0],
            json!({"NetworkMode": "bridge", "IPv4Addresses": ["172.17.0.5"]})
        );
        assert_eq!(c["Ports"][0]["HostPort"], 32768);
        assert!(c.get("ExitCode").is_none(), "no exit code while running");
        assert_eq!(container_json(&view(), 0), *c);
    }
}
