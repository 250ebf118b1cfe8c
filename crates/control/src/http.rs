//! The HTTP face of the control plane: ECS's, ECR's and CloudWatch Logs' JSON 1.1 protocols on
//! `POST /` (told apart by `X-Amz-Target`, each signed for its own service), CloudWatch's
//! Smithy RPC v2 CBOR on `POST /service/GraniteServiceVersion20100801/operation/OP` (and its
//! JSON 1.0 on `POST /`), plus `GET /healthz` and, in dev mode only, `POST /_berth/reset`.
//!
//! A request's path: size and time limits on the body → SigV4 → parse the target and body into
//! the service's typed request (an [`EcsRequest`](berth_api::ecs::EcsRequest), …) → its
//! handler ([`Control::handle`], …) → the answer or the service's error in its own wire format
//! (JSON, or CBOR for CloudWatch), always with an `x-amzn-RequestId`.

use crate::auth::AccessKey;
use crate::cloudwatch::Wire;
use crate::{Caller, Control};
use berth_agent_proto as agent_proto;
use berth_api::sigv4::{self, SignedRequest};
use berth_api::{
    parse_cloudwatch_request, parse_ecr_request, parse_ecs_request, parse_logs_request, EcsError,
    ErrorKind, CBOR_CONTENT_TYPE, CLOUDWATCH_NAMESPACE, CLOUDWATCH_SERVICE, ECR_TARGET_PREFIX,
    JSON_1_0_CONTENT_TYPE, JSON_CONTENT_TYPE, LOGS_TARGET_PREFIX,
};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::net::TcpListener;

/// Bounds on what one request may cost the server.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request body accepted; ECS's own documents are at most 64 KiB.
    pub max_body: usize,
    /// How long a client may take to send its headers.
    pub header_timeout: Duration,
    /// How long a client may take to send its body.
    pub body_timeout: Duration,
    /// How long shutdown waits for requests in flight.
    pub drain_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body: 1024 * 1024,
            header_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(10),
        }
    }
}

/// Berth's own call (not ECS's): `POST {"cluster": NAME}`, signed with a user's key, answers
/// `{"cluster", "token"}`: the registration token agents need to join that cluster.
pub const JOIN_TOKEN_PATH: &str = "/_berth/v1/join-token";
/// An operator reclaims Spot capacity: `{"cluster"?, "task"?, "count"?}` interrupts RUNNING
/// FARGATE_SPOT tasks (see [`Control::interrupt_spot`]).
pub const SPOT_INTERRUPT_PATH: &str = "/_berth/v1/spot/interrupt";
/// Fargate usage: `{"cluster"?}` answers [`crate::metering::Report`].
pub const USAGE_PATH: &str = "/_berth/v1/usage";

#[derive(Debug)]
struct State {
    /// Every region's handlers; a request goes to its signature's region.
    regions: Arc<crate::regions::Regions>,
    /// The web console's sessions.
    console: crate::console::Console,
    limits: Limits,
    /// Turns true when shutdown starts, so long polls answer at once.
    stopping: tokio::sync::watch::Receiver<bool>,
}

/// Serves the ECS API on `listener` until `shutdown` completes, then lets requests in flight
/// finish (up to `limits.drain_timeout`).
pub async fn serve(
    listener: TcpListener,
    regions: Arc<crate::regions::Regions>,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let (stop_tx, stopping) = tokio::sync::watch::channel(false);
    let state = Arc::new(State {
        regions,
        console: crate::console::Console::default(),
        limits,
        stopping,
    });
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _peer) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let st = state.clone();
                let svc = hyper::service::service_fn(move |req| {
                    let st = st.clone();
                    async move { Ok::<_, Infallible>(handle(st, req).await) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(state.limits.header_timeout)
                    .serve_connection(TokioIo::new(stream), svc);
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                });
            }
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(state.limits.drain_timeout) => tracing::warn!("shutdown: gave up waiting for requests in flight"),
    }
    Ok(())
}

fn respond(
    status: u16,
    request_id: &str,
    body: Vec<u8>,
    content_type: &str,
) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let h = resp.headers_mut();
    if let Ok(v) = http::HeaderValue::from_str(request_id) {
        h.insert("x-amzn-requestid", v);
    }
    h.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_str(content_type)
            .unwrap_or(http::HeaderValue::from_static("application/json")),
    );
    resp
}

/// A web console page or action ([`crate::console`]): forms are read within
/// [`CONSOLE_MAX_BODY`].
async fn console_request(
    st: &State,
    req: Request<Incoming>,
    request_id: &str,
) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body = match read_body(st, &parts, body, CONSOLE_MAX_BODY).await {
        Ok(b) => b,
        Err(e) => {
            return respond(
                e.kind.http_status(),
                request_id,
                e.message.into_bytes(),
                "text/plain",
            )
        }
    };
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
    // The console shows the home region.
    let reply = st
        .regions
        .home()
        .console(
            &st.console,
            crate::console::Request {
                method: parts.method.as_str(),
                path: parts.uri.path(),
                query: parts.uri.query().unwrap_or_default(),
                cookie: header("cookie"),
                origin: header("origin"),
                host: header("host"),
                forwarded_host: header("x-forwarded-host"),
                https: header("x-forwarded-proto") == Some("https"),
                body: &body,
            },
        )
        .await;
    let mut resp = respond(reply.status, request_id, reply.body, reply.content_type);
    for (k, v) in reply.headers {
        if let Ok(v) = http::HeaderValue::from_str(&v) {
            resp.headers_mut().append(k, v);
        }
    }
    resp
}

/// The largest console form (a task definition typed into the wizard).
const CONSOLE_MAX_BODY: usize = 256 * 1024;

fn error_response(e: &EcsError, request_id: &str) -> Response<Full<Bytes>> {
    respond(
        e.kind.http_status(),
        request_id,
        e.to_json(),
        JSON_CONTENT_TYPE,
    )
}

async fn handle(st: Arc<State>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let started = Instant::now();
    let request_id = uuid::Uuid::new_v4().to_string();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    match (method.clone(), path.as_str()) {
        (Method::GET, "/healthz") => {
            return respond(200, &request_id, b"ok\n".to_vec(), "text/plain")
        }
        (Method::GET, "/metrics") => {
            let text = st.regions.render_metrics().await;
            return respond(
                200,
                &request_id,
                text.into_bytes(),
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            );
        }
        // The common emulators' test harnesses call `/moto-api/reset`.
        (Method::POST, "/_berth/reset" | "/moto-api/reset") if st.regions.dev() => {
            let (status, body) = match st.regions.reset().await {
                Ok(n) => (
                    200,
                    serde_json::json!({ "deleted": n }).to_string().into_bytes(),
                ),
                Err(e) => (e.kind.http_status(), e.to_json()),
            };
            tracing::warn!(request_id, status, "dev mode: all state reset");
            return respond(status, &request_id, body, "application/json");
        }
        (Method::GET | Method::POST, p)
            if (p == "/" && method == Method::GET)
                || p == "/console"
                || p.starts_with("/console/") =>
        {
            return console_request(&st, req, &request_id).await;
        }
        (Method::POST, "/") => {}
        (Method::POST, p) if p.starts_with("/service/") => {
            let op = p
                .strip_prefix("/service/")
                .and_then(|r| r.strip_prefix(CLOUDWATCH_SERVICE))
                .and_then(|r| r.strip_prefix("/operation/"))
                .map(str::to_string);
            let result = match &op {
                Some(op) => cloudwatch_request(&st, req, op, Wire::Cbor).await,
                None => Err(EcsError::new(
                    ErrorKind::UnknownOperation,
                    format!("no such service or operation: {path}"),
                )),
            };
            return cloudwatch_response(
                &st,
                result,
                op.as_deref(),
                Wire::Cbor,
                &request_id,
                started,
            );
        }
        (Method::POST, p)
            if p == agent_proto::JOIN_PATH
                || p == agent_proto::POLL_PATH
                || p == agent_proto::REPORT_PATH
                || p == agent_proto::LOGS_PATH
                || p == agent_proto::STATS_PATH
                || p == agent_proto::PROTECTION_PATH
                || p == JOIN_TOKEN_PATH
                || p == SPOT_INTERRUPT_PATH
                || p == USAGE_PATH =>
        {
            let result = agent_request(&st, req).await;
            let status = match &result {
                Ok(_) => 200,
                Err(e) => e.kind.http_status(),
            };
            let operation = [
                agent_proto::JOIN_PATH,
                agent_proto::POLL_PATH,
                agent_proto::REPORT_PATH,
                agent_proto::LOGS_PATH,
                agent_proto::STATS_PATH,
                agent_proto::PROTECTION_PATH,
                JOIN_TOKEN_PATH,
                SPOT_INTERRUPT_PATH,
                USAGE_PATH,
            ]
            .into_iter()
            .find(|r| *r == path)
            .and_then(|r| r.rsplit('/').next())
            .unwrap_or("unknown");
            st.regions.metrics().request(
                "agent",
                operation,
                status,
                started.elapsed().as_secs_f64(),
            );
            if status >= 400 {
                tracing::warn!(request_id, path, status, error = ?result.as_ref().err(), "agent request refused");
            } else {
                tracing::debug!(request_id, path, "agent request");
            }
            return match result {
                Ok(body) => respond(200, &request_id, body, "application/json"),
                Err(e) => error_response(&e, &request_id),
            };
        }
        _ => {
            let e = EcsError::new(
                ErrorKind::UnknownOperation,
                format!("no such route: {method} {path}"),
            );
            let mut r = error_response(&e, &request_id);
            *r.status_mut() = StatusCode::NOT_FOUND;
            return r;
        }
    }
    // Query-protocol services (ELB, EC2) post forms and name the operation in the body.
    let form = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"));
    if form && !req.headers().contains_key("x-amz-target") {
        let service = QueryService::of(req.headers());
        let result = query_request(&st, service, req).await;
        return query_response(&st, service, result, &request_id, started);
    }
    let target = req
        .headers()
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let operation = target
        .as_deref()
        .and_then(|t| t.rsplit('.').next())
        .unwrap_or("-")
        .to_string();
    // Each service by its target prefix, signed for its own name.
    let t = target.as_deref().unwrap_or_default();
    if let Some(op) = t
        .strip_prefix(CLOUDWATCH_SERVICE)
        .and_then(|r| r.strip_prefix('.'))
    {
        let op = op.to_string();
        let result = cloudwatch_request(&st, req, &op, Wire::Json).await;
        return cloudwatch_response(&st, result, Some(&op), Wire::Json, &request_id, started);
    }
    let (service, result) = if let Some(op) = t.strip_prefix(ECR_TARGET_PREFIX) {
        let op = op.to_string();
        ("ecr", ecr_request(&st, req, &op).await)
    } else if let Some(op) = t.strip_prefix(LOGS_TARGET_PREFIX) {
        let op = op.to_string();
        ("logs", logs_request(&st, req, &op).await)
    } else {
        ("ecs", ecs_request(&st, req).await)
    };
    let (status, resp) = match result {
        Ok(body) => (200, respond(200, &request_id, body, JSON_CONTENT_TYPE)),
        Err(e) => (e.kind.http_status(), error_response(&e, &request_id)),
    };
    // Operations by name only when the service has them: the label stays bounded.
    let known = match service {
        "ecr" => berth_api::ecr::ALL_OPERATIONS,
        "logs" => berth_api::logs::ALL_OPERATIONS,
        _ => berth_api::ecs::ALL_OPERATIONS,
    };
    st.regions.metrics().request(
        service,
        known
            .iter()
            .copied()
            .find(|o| *o == operation)
            .unwrap_or("unknown"),
        resp.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    match resp.status().as_u16() {
        403 => tracing::warn!(
            request_id,
            operation,
            status,
            latency_ms,
            "request refused: not authenticated"
        ),
        500.. => tracing::error!(request_id, operation, status, latency_ms, "request failed"),
        _ => tracing::info!(request_id, operation, status, latency_ms, "request"),
    }
    resp
}

async fn ecs_request(st: &State, req: Request<Incoming>) -> Result<Vec<u8>, EcsError> {
    let (parts, body) = req.into_parts();
    let body = read_body(st, &parts, body, st.limits.max_body).await?;
    let (control, caller) = authenticate(st, &parts, &body, "ecs").await?;
    let target = parts
        .headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok());
    let request = parse_ecs_request(target, &body)?;
    // Run the handler on its own task: a bug that panics becomes a ServerException, not a
    // dropped connection.
    tokio::spawn(async move { control.handle(&caller, request).await })
        .await
        .map_err(|e| EcsError::server(format!("the request handler failed: {e}")))?
}

/// The services that speak a Query protocol (form-encoded requests, XML answers), told apart
/// by the service their signature is scoped to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum QueryService {
    /// Elastic Load Balancing v2, signed for `elasticloadbalancing`.
    Elb,
    /// EC2 (its VPC part), signed for `ec2`, in EC2's own variant of the protocol.
    Ec2,
}

impl QueryService {
    /// The service a request's `Authorization` credential scope names (ELB when it names
    /// neither: its answer then says what was wrong with the signature).
    fn of(headers: &http::HeaderMap) -> QueryService {
        let scope_service = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|a| a.split("Credential=").nth(1))
            .and_then(|c| c.split(['/', ',']).nth(3));
        match scope_service {
            Some("ec2") => QueryService::Ec2,
            _ => QueryService::Elb,
        }
    }

    fn signing_name(self) -> &'static str {
        match self {
            QueryService::Elb => "elasticloadbalancing",
            QueryService::Ec2 => "ec2",
        }
    }

    fn model(self) -> &'static serde_json::Value {
        match self {
            QueryService::Elb => berth_api::elbv2::model(),
            QueryService::Ec2 => berth_api::ec2::model(),
        }
    }

    fn code(self, kind: ErrorKind) -> &'static str {
        match self {
            QueryService::Elb => kind.xml_code(),
            QueryService::Ec2 => kind.ec2_code(),
        }
    }
}

/// A Query-protocol request: the operation and its answer as JSON, for [`query_response`] to
/// write as XML.
async fn query_request(
    st: &State,
    service: QueryService,
    req: Request<Incoming>,
) -> Result<(&'static str, serde_json::Value), EcsError> {
    let (parts, body) = req.into_parts();
    let body = read_body(st, &parts, body, st.limits.max_body).await?;
    let (control, caller) = authenticate(st, &parts, &body, service.signing_name()).await?;
    let (operation, answer) = match service {
        QueryService::Elb => {
            let request = berth_api::parse_elb_request(&body)?;
            let operation = request.operation();
            let answer =
                tokio::spawn(async move { control.handle_elb(&caller, request).await }).await;
            (operation, answer)
        }
        QueryService::Ec2 => {
            let request = berth_api::parse_ec2_request(&body)?;
            let operation = request.operation();
            let answer =
                tokio::spawn(async move { control.handle_ec2(&caller, request).await }).await;
            (operation, answer)
        }
    };
    let value =
        answer.map_err(|e| EcsError::server(format!("the request handler failed: {e}")))??;
    Ok((operation, value))
}

/// A Query service's XML answer, or its error document.
fn query_response(
    st: &State,
    service: QueryService,
    result: Result<(&'static str, serde_json::Value), EcsError>,
    request_id: &str,
    started: Instant,
) -> Response<Full<Bytes>> {
    let model = service.model();
    let (operation, result) = match result {
        Ok((op, value)) => (
            op,
            berth_api::query::write_response(model, op, &value, request_id)
                .map_err(|e| EcsError::server(format!("encoding the answer: {e}"))),
        ),
        Err(e) => ("unknown", Err(e)),
    };
    let resp = match &result {
        Ok(xml) => respond(200, request_id, xml.clone().into_bytes(), "text/xml"),
        Err(e) => {
            let status = e.kind.http_status();
            let xml = berth_api::query::write_error(
                model,
                service.code(e.kind),
                &e.message,
                status < 500,
                request_id,
            );
            respond(status, request_id, xml.into_bytes(), "text/xml")
        }
    };
    let status = resp.status().as_u16();
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    st.regions.metrics().request(
        service.signing_name(),
        operation,
        status,
        latency_ms / 1000.0,
    );
    match &result {
        Err(e) if status >= 500 => {
            tracing::error!(request_id, operation, status, latency_ms, error = %e, "request failed")
        }
        Err(e) => {
            tracing::info!(request_id, operation, status, latency_ms, error = %e, "request refused")
        }
        Ok(_) => tracing::info!(request_id, operation, status, latency_ms, "request"),
    }
    resp
}

/// CloudWatch Logs' JSON API, signed for service `logs`.
async fn logs_request(
    st: &State,
    req: Request<Incoming>,
    operation: &str,
) -> Result<Vec<u8>, EcsError> {
    let (parts, body) = req.into_parts();
    // A PutLogEvents batch is up to 1 MiB of messages, more once escaped as JSON.
    let body = read_body(st, &parts, body, st.limits.max_body.max(LOGS_MAX_BODY)).await?;
    let (control, caller) = authenticate(st, &parts, &body, "logs").await?;
    let request = parse_logs_request(operation, &body)?;
    tokio::spawn(async move { control.handle_logs(&caller, request).await })
        .await
        .map_err(|e| EcsError::server(format!("the request handler failed: {e}")))?
}

/// CloudWatch, signed for service `monitoring`, in CBOR or JSON 1.0.
async fn cloudwatch_request(
    st: &State,
    req: Request<Incoming>,
    operation: &str,
    wire: Wire,
) -> Result<Vec<u8>, EcsError> {
    let (parts, body) = req.into_parts();
    if wire == Wire::Cbor
        && parts
            .headers
            .get("smithy-protocol")
            .and_then(|v| v.to_str().ok())
            != Some("rpc-v2-cbor")
    {
        return Err(EcsError::new(
            ErrorKind::Serialization,
            "a Smithy RPC v2 request must carry the header smithy-protocol: rpc-v2-cbor",
        ));
    }
    // PutMetricData takes up to 1 MiB of payload.
    let body = read_body(st, &parts, body, st.limits.max_body.max(2 * 1024 * 1024)).await?;
    let (control, caller) = authenticate(st, &parts, &body, "monitoring").await?;
    let request = parse_cloudwatch_request(operation, &body, wire == Wire::Cbor)?;
    tokio::spawn(async move { control.handle_cloudwatch(&caller, request, wire).await })
        .await
        .map_err(|e| {
            EcsError::new(
                ErrorKind::InternalServiceFault,
                format!("the request handler failed: {e}"),
            )
        })?
}

/// A CloudWatch answer: CBOR or JSON 1.0, errors with their Query-protocol code in
/// `x-amzn-query-error` (CloudWatch is `awsQueryCompatible`).
fn cloudwatch_response(
    st: &State,
    result: Result<Vec<u8>, EcsError>,
    operation: Option<&str>,
    wire: Wire,
    request_id: &str,
    started: Instant,
) -> Response<Full<Bytes>> {
    let content_type = match wire {
        Wire::Cbor => CBOR_CONTENT_TYPE,
        Wire::Json => JSON_1_0_CONTENT_TYPE,
    };
    let error = result.as_ref().err().cloned();
    let (status, mut resp) = match result {
        Ok(body) => (200, respond(200, request_id, body, content_type)),
        Err(e) => {
            let body = match wire {
                Wire::Cbor => e.to_cbor(CLOUDWATCH_NAMESPACE),
                Wire::Json => e.to_json(),
            };
            let mut r = respond(e.kind.http_status(), request_id, body, content_type);
            let fault = if e.kind.http_status() >= 500 {
                "Receiver"
            } else {
                "Sender"
            };
            if let Ok(v) = http::HeaderValue::from_str(&format!("{};{fault}", e.kind.query_code()))
            {
                r.headers_mut().insert("x-amzn-query-error", v);
            }
            (e.kind.http_status(), r)
        }
    };
    if wire == Wire::Cbor {
        resp.headers_mut().insert(
            "smithy-protocol",
            http::HeaderValue::from_static("rpc-v2-cbor"),
        );
    }
    let known = operation
        .and_then(|op| {
            berth_api::cloudwatch::ALL_OPERATIONS
                .iter()
                .copied()
                .find(|o| *o == op)
        })
        .unwrap_or("unknown");
    let latency = started.elapsed().as_secs_f64();
    st.regions
        .metrics()
        .request("monitoring", known, status, latency);
    match (status, &error) {
        (500.., Some(e)) => {
            tracing::error!(request_id, operation = known, status, error = %e, "request failed")
        }
        (400.., Some(e)) => {
            tracing::info!(request_id, operation = known, status, error = %e, "request refused")
        }
        _ => tracing::info!(
            request_id,
            operation = known,
            status,
            latency_ms = latency * 1000.0,
            "request"
        ),
    }
    resp
}

/// Largest Logs request body (and agent log batch).
const LOGS_MAX_BODY: usize = 8 * 1024 * 1024;

/// Largest ECR request body: UploadLayerPart carries up to 10 MiB of layer as base64.
const ECR_MAX_BODY: usize = 16 * 1024 * 1024;

/// ECR's JSON API, signed for service `ecr`, answered by the registry.
async fn ecr_request(
    st: &State,
    req: Request<Incoming>,
    operation: &str,
) -> Result<Vec<u8>, EcsError> {
    let (parts, body) = req.into_parts();
    let body = read_body(st, &parts, body, st.limits.max_body.max(ECR_MAX_BODY)).await?;
    let (control, caller, key) = authenticate_key(st, &parts, &body, "ecr").await?;
    let request = parse_ecr_request(operation, &body)?;
    let Some(registry) = control.registry.clone() else {
        return Err(EcsError::new(
            ErrorKind::UnknownOperation,
            "this server runs no image registry",
        ));
    };
    let principal = match key {
        Some(key) => key.into(),
        // Only dev mode lets unknown keys in; their registry passwords carry an empty secret,
        // which no registry check accepts.
        None => berth_registry::Principal {
            access_key_id: caller.access_key.clone(),
            secret_access_key: String::new(),
            principal_arn: caller.principal_arn,
            instance: caller.instance,
        },
    };
    tokio::spawn(async move { registry.handle_ecr(&principal, request).await })
        .await
        .map_err(|e| EcsError::server(format!("the request handler failed: {e}")))?
}

/// The agent protocol: join with the registration token; poll and report signed with the
/// agent's own key.
async fn agent_request(st: &State, req: Request<Incoming>) -> Result<Vec<u8>, EcsError> {
    fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, EcsError> {
        serde_json::from_slice(body).map_err(|e| {
            EcsError::new(
                ErrorKind::Serialization,
                format!("the agent request is not valid: {e}"),
            )
        })
    }
    let (parts, body) = req.into_parts();
    let max = if parts.uri.path() == agent_proto::LOGS_PATH {
        st.limits.max_body.max(LOGS_MAX_BODY)
    } else {
        st.limits.max_body
    };
    let body = read_body(st, &parts, body, max).await?;
    let path = parts.uri.path().to_string();
    if path == agent_proto::JOIN_PATH {
        let r: agent_proto::JoinRequest = parse(&body)?;
        // A join token belongs to a cluster of a region that has started (it made the token).
        let region = r
            .region
            .clone()
            .unwrap_or_else(|| st.regions.home_name().to_string());
        st.regions.check(&region)?;
        let Some(control) = st.regions.started(&region) else {
            return Err(EcsError::new(
                ErrorKind::AccessDenied,
                format!("region {region} has no cluster {} to join", r.cluster),
            ));
        };
        return crate::json(control.agent_join(r).await?);
    }
    let (control, caller, key) = authenticate_key(st, &parts, &body, "ecs").await?;
    if path == JOIN_TOKEN_PATH {
        if let Some(instance) = caller.instance {
            return Err(EcsError::new(
                ErrorKind::AccessDenied,
                format!("the key of the agent of {instance} cannot read registration tokens"),
            ));
        }
        #[derive(serde::Deserialize)]
        struct Req {
            cluster: String,
        }
        let r: Req = parse(&body)?;
        let token = control.ensure_join_token(&r.cluster).await?;
        return crate::json(serde_json::json!({"cluster": r.cluster, "token": token}));
    }
    if path == USAGE_PATH {
        if let Some(instance) = caller.instance {
            return Err(EcsError::new(
                ErrorKind::AccessDenied,
                format!("the key of the agent of {instance} cannot read usage"),
            ));
        }
        #[derive(serde::Deserialize)]
        struct Req {
            cluster: Option<String>,
        }
        let r: Req = parse(&body)?;
        return crate::json(control.usage(r.cluster.as_deref()).await?);
    }
    if path == SPOT_INTERRUPT_PATH {
        if let Some(instance) = caller.instance {
            return Err(EcsError::new(
                ErrorKind::AccessDenied,
                format!("the key of the agent of {instance} cannot reclaim capacity"),
            ));
        }
        #[derive(serde::Deserialize)]
        struct Req {
            cluster: Option<String>,
            task: Option<String>,
            count: Option<usize>,
        }
        let r: Req = parse(&body)?;
        let count = r.count.unwrap_or(1);
        let interrupted = control
            .interrupt_spot(r.cluster.as_deref(), r.task.as_deref(), count)
            .await?;
        return crate::json(serde_json::json!({"interrupted": interrupted}));
    }
    let Some(instance) = caller.instance else {
        return Err(EcsError::new(
            ErrorKind::AccessDenied,
            "the agent protocol needs an agent's key, not a user's",
        ));
    };
    if path == agent_proto::POLL_PATH {
        let r: agent_proto::PollRequest = parse(&body)?;
        let mut stopping = st.stopping.clone();
        let stop = async move {
            let _ = stopping.wait_for(|s| *s).await;
        };
        let mut resp = control.agent_poll(&instance, r, stop).await?;
        // A fresh pull-only password for the registry, made from the agent's own key.
        if let Some(registry) = &control.registry {
            if let Some(key) = key {
                let (password, _) = registry.issue_password(&key.into());
                resp.registry = Some(agent_proto::RegistryCredentials {
                    server: registry.config.endpoint.clone(),
                    username: "AWS".into(),
                    password,
                });
            }
        }
        crate::json(resp)
    } else if path == agent_proto::LOGS_PATH {
        let r: agent_proto::LogBatch = parse(&body)?;
        // `awslogs-region` may name another region: the events go to its log store, as
        // the awslogs driver sends them to that region's endpoint.
        let logs = match r.region.as_deref() {
            Some(region) if region != control.config.region => {
                st.regions.check(region)?;
                st.regions.get(region).await?
            }
            _ => control,
        };
        crate::json(logs.agent_logs(&instance, r).await?)
    } else if path == agent_proto::PROTECTION_PATH {
        let r: agent_proto::ProtectionRequest = parse(&body)?;
        crate::json(control.agent_task_protection(&instance, r).await?)
    } else if path == agent_proto::STATS_PATH {
        let r: agent_proto::StatsReport = parse(&body)?;
        let applied = control.agent_stats(&instance, r).await?;
        crate::json(agent_proto::ReportResponse { applied })
    } else {
        let r: agent_proto::ReportRequest = parse(&body)?;
        crate::json(control.agent_report(&instance, r).await?)
    }
}

async fn read_body(
    st: &State,
    parts: &http::request::Parts,
    body: Incoming,
    max: usize,
) -> Result<Bytes, EcsError> {
    let too_large = |n: Option<u64>| {
        EcsError::new(
            ErrorKind::RequestEntityTooLarge,
            match n {
                Some(n) => {
                    format!("the request body of {n} bytes exceeds the limit of {max} bytes")
                }
                None => format!("the request body exceeds the limit of {max} bytes"),
            },
        )
    };
    if let Some(len) = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        if len > max as u64 {
            return Err(too_large(Some(len)));
        }
    }
    let body = match tokio::time::timeout(st.limits.body_timeout, Limited::new(body, max).collect())
        .await
    {
        Err(_) => {
            return Err(EcsError::new(
                ErrorKind::RequestTimeout,
                format!(
                    "the request body did not arrive within {} seconds",
                    st.limits.body_timeout.as_secs()
                ),
            ))
        }
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => return Err(too_large(None)),
        Ok(Err(e)) => {
            return Err(EcsError::new(
                ErrorKind::Serialization,
                format!("the request body could not be read: {e}"),
            ))
        }
        Ok(Ok(collected)) => collected.to_bytes(),
    };
    Ok(body)
}

/// The region the request is signed for (its handlers, started now if need be) and the caller.
async fn authenticate(
    st: &State,
    parts: &http::request::Parts,
    body: &[u8],
    service: &str,
) -> Result<(Control, Caller), EcsError> {
    let (control, caller, _) = authenticate_key(st, parts, body, service).await?;
    Ok((control, caller))
}

/// [`authenticate`], also handing back the caller's stored key (`None` only for dev mode's
/// made-up callers), for answers that need its secret. The region is checked and the
/// signature verified before a region that has not started is started.
async fn authenticate_key(
    st: &State,
    parts: &http::request::Parts,
    body: &[u8],
    service: &str,
) -> Result<(Control, Caller, Option<AccessKey>), EcsError> {
    let auth = sigv4::parse_authorization(&parts.headers)?;
    st.regions.check(&auth.region)?;
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let signed = SignedRequest {
        method: parts.method.as_str(),
        path_and_query,
        headers: &parts.headers,
        body,
    };
    let now = SystemTime::now();
    // A user's key works in every region; an agent's only in its own, once that has started.
    let known = match st.regions.started(&auth.region) {
        Some(c) => c.access_key(&auth.access_key).await?,
        None => st.regions.home().user_key(&auth.access_key).await?,
    };
    let caller = if st.regions.dev() {
        sigv4::check_well_formed(&signed, &auth, &auth.region, service, now)?;
        match &known {
            Some(k) => caller_of(k),
            None => st.regions.home().dev_caller(&auth.access_key),
        }
    } else {
        let Some(key) = &known else {
            return Err(EcsError::new(
                ErrorKind::UnrecognizedClient,
                "The security token included in the request is invalid.",
            ));
        };
        sigv4::verify(
            &signed,
            &auth,
            &key.secret_access_key,
            &auth.region,
            service,
            now,
        )?;
        caller_of(key)
    };
    let control = st.regions.get(&auth.region).await?;
    Ok((control, caller, known))
}

fn caller_of(key: &AccessKey) -> Caller {
    Caller::from(key)
}
