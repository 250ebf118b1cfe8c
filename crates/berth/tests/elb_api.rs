//! Elastic Load Balancing v2 over the wire: the API and its errors through the real AWS CLI,
//! and through `aws-sdk-elasticloadbalancingv2` the proxy it configures — rules, fixed
//! responses, redirects, weights, health checks that keep traffic off a failing target,
//! draining, a TCP listener, and listeners that listen again after a server restart. The
//! targets are small HTTP and TCP servers in this process.

#![allow(clippy::unwrap_used)]

mod common;

use aws_sdk_elasticloadbalancingv2 as elbv2;
use common::{aws_cli, aws_json, free_port, TestServer};
use elbv2::types::{
    Action, ActionTypeEnum, FixedResponseActionConfig, ForwardActionConfig, ProtocolEnum,
    RedirectActionConfig, RedirectActionStatusCodeEnum, RuleCondition, TargetDescription,
    TargetGroupTuple, TargetHealthStateEnum,
};
use http_body_util::{BodyExt, Empty, Full};
use serde_json::Value;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// An HTTP target answering `status` and `name`, and echoing the X-Forwarded-* headers it got.
async fn backend(name: &'static str, status: u16) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    move |req: http::Request<hyper::body::Incoming>| async move {
                        let mut resp = http::Response::new(Full::new(bytes::Bytes::from(name)));
                        *resp.status_mut() = http::StatusCode::from_u16(status).unwrap();
                        for h in ["x-forwarded-for", "x-forwarded-proto", "x-forwarded-port"] {
                            if let Some(v) = req.headers().get(h) {
                                resp.headers_mut().insert(
                                    http::HeaderName::from_bytes(format!("seen-{h}").as_bytes())
                                        .unwrap(),
                                    v.clone(),
                                );
                            }
                        }
                        Ok::<_, std::convert::Infallible>(resp)
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

/// A TCP target that writes `name` and closes.
async fn tcp_backend(name: &'static str) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            use tokio::io::AsyncWriteExt;
            let _ = stream.write_all(name.as_bytes()).await;
        }
    });
    addr
}

type Client = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Empty<bytes::Bytes>,
>;

fn client() -> Client {
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http()
}

/// GET through a listener: status, headers and body.
async fn get(
    c: &Client,
    port: u16,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, http::HeaderMap, String) {
    let mut req = http::Request::get(format!("http://127.0.0.1:{port}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = tokio::time::timeout(
        Duration::from_secs(10),
        c.request(req.body(Empty::new()).unwrap()),
    )
    .await
    .expect("an answer within 10 s")
    .expect("the proxy answers");
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (
        parts.status.as_u16(),
        parts.headers,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

fn cli_error(r: Result<Value, String>, code: &str) -> String {
    let e = r.expect_err(&format!("expected {code}"));
    assert!(
        e.contains(&format!("({code})")),
        "expected {code}, got: {e}"
    );
    e
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_aws_cli_drives_elb_and_gets_elbs_errors_with_nothing_stored() {
    let Some(cli) = aws_cli() else { return };
    let s = TestServer::start().await;
    let elb = |args: &[&str]| aws_json(&cli, &s, &s.secret_key, "elbv2", args);

    // Bad names, sizes and types: refused, and nothing is left behind.
    cli_error(
        elb(&["create-load-balancer", "--name", "bad_name"]),
        "ValidationError",
    );
    cli_error(
        elb(&["create-load-balancer", "--name", "gw", "--type", "gateway"]),
        "InvalidConfigurationRequest",
    );
    cli_error(
        elb(&[
            "create-target-group",
            "--name",
            "t",
            "--protocol",
            "HTTP",
            "--port",
            "80",
            "--health-check-timeout-seconds",
            "30",
        ]),
        "ValidationError",
    );
    cli_error(
        elb(&[
            "create-target-group",
            "--name",
            "t",
            "--protocol",
            "HTTPS",
            "--port",
            "443",
        ]),
        "UnsupportedProtocol",
    );
    let none = elb(&["describe-load-balancers"]).unwrap();
    assert_eq!(
        none["LoadBalancers"],
        serde_json::json!([]),
        "nothing stored: {none}"
    );
    let none = elb(&["describe-target-groups"]).unwrap();
    assert_eq!(
        none["TargetGroups"],
        serde_json::json!([]),
        "nothing stored: {none}"
    );

    // Create, and create again: the same settings give the same load balancer back.
    let lb = elb(&[
        "create-load-balancer",
        "--name",
        "web",
        "--subnets",
        "subnet-a",
        "subnet-b",
        "--tags",
        "Key=team,Value=core",
    ])
    .unwrap();
    let lb_arn = lb["LoadBalancers"][0]["LoadBalancerArn"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(lb["LoadBalancers"][0]["State"]["Code"], "active");
    assert_eq!(lb["LoadBalancers"][0]["Type"], "application");
    assert_eq!(
        lb["LoadBalancers"][0]["AvailabilityZones"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let again = elb(&[
        "create-load-balancer",
        "--name",
        "web",
        "--subnets",
        "subnet-a",
    ])
    .unwrap();
    assert_eq!(
        again["LoadBalancers"][0]["LoadBalancerArn"],
        lb_arn.as_str(),
        "idempotent create"
    );
    cli_error(
        elb(&["create-load-balancer", "--name", "web", "--type", "network"]),
        "DuplicateLoadBalancerName",
    );
    let tags = elb(&["describe-tags", "--resource-arns", &lb_arn]).unwrap();
    assert_eq!(tags["TagDescriptions"][0]["Tags"][0]["Key"], "team");

    let tg = elb(&[
        "create-target-group",
        "--name",
        "api",
        "--protocol",
        "HTTP",
        "--port",
        "8080",
        "--health-check-path",
        "/health",
        "--matcher",
        "HttpCode=200-299",
    ])
    .unwrap();
    let tg_arn = tg["TargetGroups"][0]["TargetGroupArn"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        tg["TargetGroups"][0]["HealthCheckIntervalSeconds"], 30,
        "ELB's default interval"
    );
    assert_eq!(tg["TargetGroups"][0]["Matcher"]["HttpCode"], "200-299");
    cli_error(
        elb(&[
            "create-target-group",
            "--name",
            "api",
            "--protocol",
            "HTTP",
            "--port",
            "9090",
        ]),
        "DuplicateTargetGroupName",
    );
    let tcp = elb(&[
        "create-target-group",
        "--name",
        "raw",
        "--protocol",
        "TCP",
        "--port",
        "9000",
    ])
    .unwrap()["TargetGroups"][0]["TargetGroupArn"]
        .as_str()
        .unwrap()
        .to_string();
    let port = free_port().to_string();
    cli_error(
        elb(&[
            "create-listener",
            "--load-balancer-arn",
            &lb_arn,
            "--protocol",
            "HTTP",
            "--port",
            &port,
            "--default-actions",
            &format!("Type=forward,TargetGroupArn={tcp}"),
        ]),
        "IncompatibleProtocols",
    );
    cli_error(
        elb(&[
            "create-listener",
            "--load-balancer-arn",
            &lb_arn,
            "--protocol",
            "TCP",
            "--port",
            &port,
            "--default-actions",
            &format!("Type=forward,TargetGroupArn={tcp}"),
        ]),
        "UnsupportedProtocol",
    );
    let listener = elb(&[
        "create-listener",
        "--load-balancer-arn",
        &lb_arn,
        "--protocol",
        "HTTP",
        "--port",
        &port,
        "--default-actions",
        &format!("Type=forward,TargetGroupArn={tg_arn}"),
    ])
    .unwrap()["Listeners"][0]["ListenerArn"]
        .as_str()
        .unwrap()
        .to_string();
    cli_error(
        elb(&[
            "create-listener",
            "--load-balancer-arn",
            &lb_arn,
            "--protocol",
            "HTTP",
            "--port",
            &port,
            "--default-actions",
            &format!("Type=forward,TargetGroupArn={tg_arn}"),
        ]),
        "DuplicateListener",
    );
    let tg_now = elb(&["describe-target-groups", "--target-group-arns", &tg_arn]).unwrap();
    assert_eq!(
        tg_now["TargetGroups"][0]["LoadBalancerArns"][0],
        lb_arn.as_str(),
        "the group knows its load balancer"
    );
    // A group belongs to one load balancer.
    let other = elb(&["create-load-balancer", "--name", "other"]).unwrap()["LoadBalancers"][0]
        ["LoadBalancerArn"]
        .as_str()
        .unwrap()
        .to_string();
    cli_error(
        elb(&[
            "create-listener",
            "--load-balancer-arn",
            &other,
            "--protocol",
            "HTTP",
            "--port",
            &free_port().to_string(),
            "--default-actions",
            &format!("Type=forward,TargetGroupArn={tg_arn}"),
        ]),
        "TargetGroupAssociationLimit",
    );

    // Rules: priorities are unique, the default rule stays.
    let rule = |priority: &str| {
        elb(&[
            "create-rule",
            "--listener-arn",
            &listener,
            "--priority",
            priority,
            "--conditions",
            "Field=path-pattern,Values=/a/*",
            "--actions",
            "Type=fixed-response,FixedResponseConfig={StatusCode=200}",
        ])
    };
    rule("5").unwrap();
    cli_error(rule("5"), "PriorityInUse");
    cli_error(rule("50001"), "ValidationError");
    // A rule that forwards to a group ties it to the load balancer until the rule goes.
    let b = elb(&[
        "create-target-group",
        "--name",
        "b",
        "--protocol",
        "HTTP",
        "--port",
        "81",
    ])
    .unwrap()["TargetGroups"][0]["TargetGroupArn"]
        .as_str()
        .unwrap()
        .to_string();
    let to_b = elb(&[
        "create-rule",
        "--listener-arn",
        &listener,
        "--priority",
        "6",
        "--conditions",
        "Field=path-pattern,Values=/b/*",
        "--actions",
        &format!("Type=forward,TargetGroupArn={b}"),
    ])
    .unwrap()["Rules"][0]["RuleArn"]
        .as_str()
        .unwrap()
        .to_string();
    let lbs_of_b = |elb: &dyn Fn(&[&str]) -> Result<Value, String>| {
        elb(&["describe-target-groups", "--target-group-arns", &b]).unwrap()["TargetGroups"][0]
            ["LoadBalancerArns"]
            .clone()
    };
    assert_eq!(
        lbs_of_b(&elb),
        serde_json::json!([lb_arn]),
        "the rule ties b to the load balancer"
    );
    cli_error(
        elb(&["delete-target-group", "--target-group-arn", &b]),
        "ResourceInUse",
    );
    elb(&[
        "modify-rule",
        "--rule-arn",
        &to_b,
        "--actions",
        "Type=fixed-response,FixedResponseConfig={StatusCode=204}",
    ])
    .unwrap();
    assert_eq!(
        lbs_of_b(&elb),
        serde_json::json!([]),
        "the rule no longer forwards to b"
    );
    elb(&["delete-rule", "--rule-arn", &to_b]).unwrap();
    elb(&["delete-target-group", "--target-group-arn", &b]).unwrap();
    let rules = elb(&["describe-rules", "--listener-arn", &listener]).unwrap();
    let rules = rules["Rules"].as_array().unwrap().clone();
    assert_eq!(rules.len(), 2, "the rule and the default: {rules:?}");
    assert_eq!(
        rules[1]["Priority"], "default",
        "the default rule comes last"
    );
    cli_error(
        elb(&[
            "delete-rule",
            "--rule-arn",
            rules[1]["RuleArn"].as_str().unwrap(),
        ]),
        "OperationNotPermitted",
    );

    // What is in use cannot go; what does not exist is not found.
    cli_error(
        elb(&["delete-target-group", "--target-group-arn", &tg_arn]),
        "ResourceInUse",
    );
    cli_error(
        elb(&[
            "register-targets",
            "--target-group-arn",
            &tg_arn,
            "--targets",
            "Id=i-0123456789abcdef0",
        ]),
        "InvalidTarget",
    );
    cli_error(
        elb(&["describe-target-groups", "--names", "nope"]),
        "TargetGroupNotFound",
    );
    let gone = lb_arn.replace("/web/", "/gone/");
    cli_error(
        elb(&["describe-load-balancers", "--load-balancer-arns", &gone]),
        "LoadBalancerNotFound",
    );
    cli_error(
        elb(&["describe-listeners", "--listener-arns", "not-an-arn"]),
        "ValidationError",
    );

    // Attributes: ELB's keys, checked; deletion protection honoured.
    let attrs = elb(&[
        "describe-target-group-attributes",
        "--target-group-arn",
        &tg_arn,
    ])
    .unwrap();
    assert!(
        attrs["Attributes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["Key"] == "deregistration_delay.timeout_seconds" && a["Value"] == "300"),
        "ELB's default delay: {attrs}"
    );
    cli_error(
        elb(&[
            "modify-target-group-attributes",
            "--target-group-arn",
            &tg_arn,
            "--attributes",
            "Key=made.up,Value=1",
        ]),
        "ValidationError",
    );
    cli_error(
        elb(&[
            "modify-target-group-attributes",
            "--target-group-arn",
            &tg_arn,
            "--attributes",
            "Key=slow_start.duration_seconds,Value=30",
            "Key=load_balancing.algorithm.type,Value=least_outstanding_requests",
        ]),
        "InvalidConfigurationRequest",
    );
    cli_error(
        elb(&[
            "modify-target-group",
            "--target-group-arn",
            &tg_arn,
            "--no-health-check-enabled",
        ]),
        "ValidationError",
    );
    elb(&[
        "modify-load-balancer-attributes",
        "--load-balancer-arn",
        &lb_arn,
        "--attributes",
        "Key=deletion_protection.enabled,Value=true",
    ])
    .unwrap();
    cli_error(
        elb(&["delete-load-balancer", "--load-balancer-arn", &lb_arn]),
        "OperationNotPermitted",
    );
    elb(&[
        "modify-load-balancer-attributes",
        "--load-balancer-arn",
        &lb_arn,
        "--attributes",
        "Key=deletion_protection.enabled,Value=false",
    ])
    .unwrap();

    // Deleting the load balancer takes its listeners and rules, and frees its groups.
    elb(&["delete-load-balancer", "--load-balancer-arn", &lb_arn]).unwrap();
    cli_error(
        elb(&["describe-listeners", "--listener-arns", &listener]),
        "ListenerNotFound",
    );
    elb(&["delete-target-group", "--target-group-arn", &tg_arn]).unwrap();
    elb(&["delete-target-group", "--target-group-arn", &tcp]).unwrap();
    elb(&["delete-load-balancer", "--load-balancer-arn", &other]).unwrap();
    let all = s.control.store.range("elb/", None, None).await.unwrap();
    let left: Vec<&str> = all.iter().map(|kv| kv.key.as_str()).collect();
    assert!(
        left.is_empty(),
        "deleting everything leaves no ELB record: {left:?}"
    );
}

async fn wait_health(
    c: &elbv2::Client,
    group: &str,
    secs: u64,
    want: impl Fn(&[(String, i32, String, String)]) -> bool,
) -> Vec<(String, i32, String, String)> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let h = c
            .describe_target_health()
            .target_group_arn(group)
            .send()
            .await
            .unwrap();
        let seen: Vec<(String, i32, String, String)> = h
            .target_health_descriptions()
            .iter()
            .map(|d| {
                let t = d.target().unwrap();
                let th = d.target_health().unwrap();
                (
                    t.id().unwrap_or_default().to_string(),
                    t.port().unwrap_or(0),
                    th.state()
                        .map(|s| s.as_str().to_string())
                        .unwrap_or_default(),
                    th.reason()
                        .map(|r| r.as_str().to_string())
                        .unwrap_or_default(),
                )
            })
            .collect();
        if want(&seen) {
            return seen;
        }
        assert!(
            Instant::now() < deadline,
            "target health not as wanted within {secs} s: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// An `ip` target group checked every 5 s (2 s timeout, 2 checks either way); its ARN.
async fn ip_group(c: &elbv2::Client, name: &str, protocol: ProtocolEnum, port: u16) -> String {
    c.create_target_group()
        .name(name)
        .protocol(protocol)
        .port(i32::from(port))
        .target_type(elbv2::types::TargetTypeEnum::Ip)
        .health_check_interval_seconds(5)
        .health_check_timeout_seconds(2)
        .healthy_threshold_count(2)
        .unhealthy_threshold_count(2)
        .send()
        .await
        .unwrap()
        .target_groups()[0]
        .target_group_arn()
        .unwrap()
        .to_string()
}

fn forward(group: &str) -> Action {
    Action::builder()
        .r#type(ActionTypeEnum::Forward)
        .target_group_arn(group)
        .build()
}

/// A target that answers garbage, one that resets connections and one that never answers.
async fn misbehaving() -> Vec<SocketAddr> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut out = Vec::new();
    for kind in 0..3 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        out.push(listener.local_addr().unwrap());
        tokio::spawn(async move {
            let mut held = Vec::new();
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let mut buf = [0u8; 1024];
                let _ = stream.read(&mut buf).await;
                match kind {
                    0 => {
                        let _ = stream.write_all(b"this is not HTTP\r\n\r\n").await;
                    }
                    1 => {
                        // A zero linger makes the close a reset, which is the point here.
                        #[allow(deprecated)]
                        let _ = stream.set_linger(Some(Duration::ZERO));
                        drop(stream);
                    }
                    _ => held.push(stream),
                }
            }
        });
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn targets_that_answer_garbage_reset_or_hang_are_unhealthy_and_never_take_the_proxy_down() {
    let s = TestServer::start().await;
    let c = common::sdk_client!(elbv2, &s);
    let good = backend("good", 200).await;
    let bad = misbehaving().await;
    let lb = c
        .create_load_balancer()
        .name("rough")
        .send()
        .await
        .unwrap()
        .load_balancers()[0]
        .load_balancer_arn()
        .unwrap()
        .to_string();
    let group = ip_group(&c, "rough", ProtocolEnum::Http, 80).await;
    // A target that never answers fails a request after the idle timeout.
    c.modify_load_balancer_attributes()
        .load_balancer_arn(&lb)
        .attributes(
            elbv2::types::LoadBalancerAttribute::builder()
                .key("idle_timeout.timeout_seconds")
                .value("3")
                .build(),
        )
        .send()
        .await
        .unwrap();
    let port = free_port();
    c.create_listener()
        .load_balancer_arn(&lb)
        .protocol(ProtocolEnum::Http)
        .port(i32::from(port))
        .default_actions(forward(&group))
        .send()
        .await
        .unwrap();
    // Only the misbehaving ones first: with no healthy target, ELB tries them all, and the
    // client gets ELB's 502 (or 504), never a hung or dropped connection.
    let mut reg = c.register_targets().target_group_arn(&group);
    for a in &bad {
        reg = reg.targets(
            TargetDescription::builder()
                .id(a.ip().to_string())
                .port(i32::from(a.port()))
                .build(),
        );
    }
    reg.send().await.unwrap();
    let health = wait_health(&c, &group, 30, |h| {
        h.len() == 3 && h.iter().all(|t| t.2 == "unhealthy")
    })
    .await;
    for t in &health {
        assert!(
            ["Target.FailedHealthChecks", "Target.Timeout"].contains(&t.3.as_str()),
            "ELB's reason for a broken target: {t:?}"
        );
    }
    let http = client();
    for _ in 0..3 {
        let (status, _, _) = get(&http, port, "/", &[]).await;
        assert!(
            [502, 504].contains(&status),
            "a broken target is ELB's 502 (504 when it hangs): {status}"
        );
    }
    // A healthy target joins: from then on, every request goes to it.
    c.register_targets()
        .target_group_arn(&group)
        .targets(
            TargetDescription::builder()
                .id("127.0.0.1")
                .port(i32::from(good.port()))
                .build(),
        )
        .send()
        .await
        .unwrap();
    wait_health(&c, &group, 30, |h| h.iter().any(|t| t.2 == "healthy")).await;
    for _ in 0..20 {
        let (status, _, body) = get(&http, port, "/", &[]).await;
        assert_eq!(
            (status, body.as_str()),
            (200, "good"),
            "only the healthy target is routed to"
        );
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdk_sets_up_a_proxy_that_routes_checks_health_drains_and_survives_a_restart() {
    let s = TestServer::start().await;
    let c = common::sdk_client!(elbv2, &s);
    let (one, two, bad) = (
        backend("one", 200).await,
        backend("two", 200).await,
        backend("bad", 500).await,
    );
    let other = backend("other", 200).await;

    let lb = c.create_load_balancer().name("edge").send().await.unwrap();
    let lb_arn = lb.load_balancers()[0]
        .load_balancer_arn()
        .unwrap()
        .to_string();
    let main = ip_group(&c, "main", ProtocolEnum::Http, 80).await;
    let side = ip_group(&c, "side", ProtocolEnum::Http, 80).await;
    let port = free_port();
    let listener = c
        .create_listener()
        .load_balancer_arn(&lb_arn)
        .protocol(ProtocolEnum::Http)
        .port(i32::from(port))
        .default_actions(forward(&main))
        .send()
        .await
        .unwrap()
        .listeners()[0]
        .listener_arn()
        .unwrap()
        .to_string();
    let target = |a: SocketAddr| {
        TargetDescription::builder()
            .id(a.ip().to_string())
            .port(i32::from(a.port()))
            .build()
    };
    c.register_targets()
        .target_group_arn(&main)
        .targets(target(one))
        .targets(target(two))
        .targets(target(bad))
        .send()
        .await
        .unwrap();
    c.register_targets()
        .target_group_arn(&side)
        .targets(target(other))
        .send()
        .await
        .unwrap();
    let health = wait_health(&c, &main, 30, |h| {
        h.len() == 3
            && h.iter().filter(|t| t.2 == "healthy").count() == 2
            && h.iter().any(|t| t.2 == "unhealthy")
    })
    .await;
    let failing = health.iter().find(|t| t.2 == "unhealthy").unwrap();
    assert_eq!(
        failing.1,
        i32::from(bad.port()),
        "the 500 target is the unhealthy one"
    );
    assert_eq!(
        failing.3, "Target.ResponseCodeMismatch",
        "ELB's reason code"
    );

    // Round robin over the healthy targets only.
    let http = client();
    let mut seen = std::collections::BTreeMap::new();
    for _ in 0..40 {
        let (status, headers, body) = get(&http, port, "/", &[]).await;
        assert_eq!(status, 200, "body {body}");
        assert_eq!(
            headers["seen-x-forwarded-for"], "127.0.0.1",
            "X-Forwarded-For"
        );
        assert_eq!(headers["seen-x-forwarded-proto"], "http");
        assert_eq!(headers["seen-x-forwarded-port"], port.to_string().as_str());
        *seen.entry(body).or_insert(0) += 1;
    }
    assert_eq!(
        seen.get("bad"),
        None,
        "never routed to an unhealthy target: {seen:?}"
    );
    assert_eq!(seen.get("one"), Some(&20), "round robin: {seen:?}");
    assert_eq!(seen.get("two"), Some(&20), "round robin: {seen:?}");

    // Rules: fixed response, redirect, header, method, query string, weights.
    let condition = |field: &str, values: &[&str]| {
        RuleCondition::builder()
            .field(field)
            .set_values(Some(values.iter().map(|v| v.to_string()).collect()))
            .build()
    };
    let rule = |priority: i32, cond: RuleCondition, action: Action| {
        let c = c.clone();
        let listener = listener.clone();
        async move {
            c.create_rule()
                .listener_arn(listener)
                .priority(priority)
                .conditions(cond)
                .actions(action)
                .send()
                .await
                .unwrap()
        }
    };
    rule(
        1,
        condition("path-pattern", &["/teapot"]),
        Action::builder()
            .r#type(ActionTypeEnum::FixedResponse)
            .fixed_response_config(
                FixedResponseActionConfig::builder()
                    .status_code("418")
                    .content_type("text/plain")
                    .message_body("short and stout")
                    .build(),
            )
            .build(),
    )
    .await;
    rule(
        2,
        condition("path-pattern", &["/old/*"]),
        Action::builder()
            .r#type(ActionTypeEnum::Redirect)
            .redirect_config(
                RedirectActionConfig::builder()
                    .host("example.com")
                    .path("/new/#{path}")
                    .status_code(RedirectActionStatusCodeEnum::Http301)
                    .build(),
            )
            .build(),
    )
    .await;
    rule(
        3,
        RuleCondition::builder()
            .field("http-header")
            .http_header_config(
                elbv2::types::HttpHeaderConditionConfig::builder()
                    .http_header_name("X-Canary")
                    .values("yes")
                    .build(),
            )
            .build(),
        forward(&side),
    )
    .await;
    rule(
        4,
        RuleCondition::builder()
            .field("query-string")
            .query_string_config(
                elbv2::types::QueryStringConditionConfig::builder()
                    .values(
                        elbv2::types::QueryStringKeyValuePair::builder()
                            .key("v")
                            .value("2")
                            .build(),
                    )
                    .build(),
            )
            .build(),
        Action::builder()
            .r#type(ActionTypeEnum::Forward)
            .forward_config(
                ForwardActionConfig::builder()
                    .target_groups(
                        TargetGroupTuple::builder()
                            .target_group_arn(&main)
                            .weight(0)
                            .build(),
                    )
                    .target_groups(
                        TargetGroupTuple::builder()
                            .target_group_arn(&side)
                            .weight(5)
                            .build(),
                    )
                    .build(),
            )
            .build(),
    )
    .await;
    let (status, _, body) = get(&http, port, "/teapot", &[]).await;
    assert_eq!(
        (status, body.as_str()),
        (418, "short and stout"),
        "the fixed response"
    );
    let (status, headers, _) = get(&http, port, "/old/page?x=1", &[]).await;
    assert_eq!(status, 301, "the redirect");
    assert_eq!(
        headers["location"],
        format!("http://example.com:{port}/new/old/page?x=1").as_str(),
        "#{{port}} is the listener's, #{{path}} the request's without its '/'"
    );
    assert_eq!(
        get(&http, port, "/", &[("x-canary", "yes")]).await.2,
        "other",
        "the header rule"
    );
    assert_eq!(
        get(&http, port, "/?v=2", &[]).await.2,
        "other",
        "a weight of 0 gets nothing"
    );
    let rules = c
        .describe_rules()
        .listener_arn(&listener)
        .send()
        .await
        .unwrap();
    assert_eq!(rules.rules().len(), 5, "four rules and the default");

    // lb_cookie stickiness: the cookie the first answer sets keeps a client on its target.
    c.modify_target_group_attributes()
        .target_group_arn(&main)
        .attributes(
            elbv2::types::TargetGroupAttribute::builder()
                .key("stickiness.enabled")
                .value("true")
                .build(),
        )
        .attributes(
            elbv2::types::TargetGroupAttribute::builder()
                .key("stickiness.lb_cookie.duration_seconds")
                .value("60")
                .build(),
        )
        .send()
        .await
        .unwrap();
    let (_, headers, first) = get(&http, port, "/", &[]).await;
    let cookie = headers["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    assert!(
        cookie.starts_with("AWSALB="),
        "the stickiness cookie: {cookie}"
    );
    for _ in 0..6 {
        assert_eq!(
            get(&http, port, "/", &[("cookie", &cookie)]).await.2,
            first,
            "a sticky client stays"
        );
    }
    c.modify_target_group_attributes()
        .target_group_arn(&main)
        .attributes(
            elbv2::types::TargetGroupAttribute::builder()
                .key("stickiness.enabled")
                .value("false")
                .build(),
        )
        .send()
        .await
        .unwrap();

    // A target deregistered drains, then is gone; traffic stays on the rest.
    c.deregister_targets()
        .target_group_arn(&main)
        .targets(target(two))
        .send()
        .await
        .unwrap();
    for _ in 0..10 {
        assert_ne!(
            get(&http, port, "/", &[]).await.2,
            "two",
            "no new request to a draining target"
        );
    }
    wait_health(&c, &main, 10, |h| h.len() == 2).await;

    // A TCP listener of a network load balancer.
    let raw = tcp_backend("raw-bytes").await;
    let nlb = c
        .create_load_balancer()
        .name("tcp")
        .r#type(elbv2::types::LoadBalancerTypeEnum::Network)
        .send()
        .await
        .unwrap()
        .load_balancers()[0]
        .load_balancer_arn()
        .unwrap()
        .to_string();
    let tcp_group = ip_group(&c, "raw", ProtocolEnum::Tcp, raw.port()).await;
    c.register_targets()
        .target_group_arn(&tcp_group)
        .targets(target(raw))
        .send()
        .await
        .unwrap();
    let tcp_port = free_port();
    c.create_listener()
        .load_balancer_arn(&nlb)
        .protocol(ProtocolEnum::Tcp)
        .port(i32::from(tcp_port))
        .default_actions(forward(&tcp_group))
        .send()
        .await
        .unwrap();
    wait_health(&c, &tcp_group, 20, |h| {
        h.iter()
            .all(|t| t.2 == TargetHealthStateEnum::Healthy.as_str())
    })
    .await;
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", tcp_port))
        .await
        .unwrap();
    let mut got = String::new();
    use tokio::io::AsyncReadExt;
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, "raw-bytes", "bytes through the TCP listener");

    // A restart: the listeners listen again from the records.
    let s = s.restart().await;
    let (status, _, body) = get(&client(), port, "/teapot", &[]).await;
    assert_eq!(
        (status, body.as_str()),
        (418, "short and stout"),
        "the listener after a restart"
    );
    // Health starts over after a restart; until a target is healthy, ELB routes to all.
    let answer = get(&client(), port, "/", &[]).await;
    assert!(
        ["one", "bad"].contains(&answer.2.as_str()),
        "the registered targets are routed to after a restart: {answer:?}"
    );
    s.stop().await;
}

/// A target that answers 200 to plain requests and, to a WebSocket upgrade, 101 and then
/// echoes every byte.
async fn upgrading_backend() -> SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if stream.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
                if text.contains("upgrade: websocket") {
                    let _ = stream
                        .write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
                        .await;
                    let (mut r, mut w) = stream.into_split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                } else {
                    let _ = stream
                        .write_all(
                            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                        )
                        .await;
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_clients_and_websocket_upgrades_go_through_a_listener() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = TestServer::start().await;
    let c = common::sdk_client!(elbv2, &s);
    let target = upgrading_backend().await;
    let lb = c
        .create_load_balancer()
        .name("ws")
        .send()
        .await
        .unwrap()
        .load_balancers()[0]
        .load_balancer_arn()
        .unwrap()
        .to_string();
    let group = ip_group(&c, "ws", ProtocolEnum::Http, 80).await;
    c.register_targets()
        .target_group_arn(&group)
        .targets(
            TargetDescription::builder()
                .id("127.0.0.1")
                .port(i32::from(target.port()))
                .build(),
        )
        .send()
        .await
        .unwrap();
    let port = free_port();
    c.create_listener()
        .load_balancer_arn(&lb)
        .protocol(ProtocolEnum::Http)
        .port(i32::from(port))
        .default_actions(forward(&group))
        .send()
        .await
        .unwrap();
    wait_health(&c, &group, 20, |h| h.iter().all(|t| t.2 == "healthy")).await;

    // HTTP/2 with prior knowledge (h2c): answered in HTTP/2, from an HTTP/1.1 target.
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get(format!("http://127.0.0.1:{port}/"))
        .body(Empty::<bytes::Bytes>::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2, "answered in HTTP/2");
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"ok", "the target's body over HTTP/2");

    // A WebSocket upgrade: 101 through the proxy, then bytes both ways.
    let mut ws = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    ws.write_all(
        b"GET /chat HTTP/1.1\r\nHost: ws.example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), ws.read(&mut byte))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            n,
            1,
            "the proxy closed before answering the upgrade: {}",
            String::from_utf8_lossy(&head)
        );
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_string();
    assert!(
        head.starts_with("HTTP/1.1 101"),
        "the upgrade is answered 101: {head}"
    );
    ws.write_all(b"hello over the upgrade").await.unwrap();
    let mut echo = [0u8; 22];
    tokio::time::timeout(Duration::from_secs(5), ws.read_exact(&mut echo))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        &echo, b"hello over the upgrade",
        "bytes echoed through the upgraded connection"
    );
    s.stop().await;
}
