//! Services behind Berth's load balancer on the real Docker Engine, set up through the real
//! AWS CLI (`aws elbv2 …`): three bridge-mode tasks registered at their dynamic host ports and
//! answering through a listener; path and host rules splitting traffic between two services;
//! a rolling deployment under continuous load with zero failed requests; a killed task's
//! target deregistered and the task replaced. Needs Docker (BERTH_SKIP_DOCKER=1 skips).

#![allow(clippy::unwrap_used)]

mod common;

use common::{
    aws_cli, aws_json, docker_available, docker_cleanup, free_port, service_tasks, wait_joined,
    TestAgent, TestServer, BUSYBOX,
};
use http_body_util::{BodyExt, Empty};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A busybox httpd answering `NAME-V` at `/` and at `/api/`, stopping at SIGTERM.
fn web_definition(family: &str, version: &str) -> Value {
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

struct Elb<'a> {
    cli: String,
    s: &'a TestServer,
}

impl Elb<'_> {
    fn call(&self, args: &[&str]) -> Value {
        aws_json(&self.cli, self.s, &self.s.secret_key, "elbv2", args)
            .unwrap_or_else(|e| panic!("aws elbv2 {args:?} failed: {e}"))
    }

    fn target_group(&self, name: &str) -> String {
        self.target_group_checking(name, "/")
    }

    fn target_group_checking(&self, name: &str, path: &str) -> String {
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

    fn healthy(&self, group: &str) -> usize {
        let v = self.call(&["describe-target-health", "--target-group-arn", group]);
        v["TargetHealthDescriptions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["TargetHealth"]["State"] == "healthy")
            .count()
    }

    fn registered(&self, group: &str) -> Vec<Value> {
        let v = self.call(&["describe-target-health", "--target-group-arn", group]);
        v["TargetHealthDescriptions"].as_array().unwrap().clone()
    }
}

type Client = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Empty<bytes::Bytes>,
>;

fn client() -> Client {
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http()
}

/// GET through the listener: (status, body).
async fn get(
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

async fn wait_for(what: &str, secs: u64, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !check() {
        assert!(Instant::now() < deadline, "not {what} within {secs} s");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn describe(s: &TestServer, name: &str) -> Value {
    s.ok(
        "DescribeServices",
        json!({"cluster": "default", "services": [name]}),
    )
    .await["services"][0]
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn services_behind_a_load_balancer_register_route_by_rule_and_roll_out_without_a_failed_request(
) {
    if !docker_available() {
        return;
    }
    let Some(cli) = aws_cli() else { return };
    let s = TestServer::start().await;
    s.ok("CreateCluster", json!({"clusterName": "default"}))
        .await;
    s.spawn_service_loop();
    let dir = tempfile::tempdir().unwrap();
    let agent = TestAgent::start(&s, TestAgent::config(&s, dir.path())).await;
    let instance = wait_joined(&agent).await;
    let elb = Elb { cli, s: &s };

    let lb = elb.call(&["create-load-balancer", "--name", "web"])["LoadBalancers"][0]
        ["LoadBalancerArn"]
        .as_str()
        .unwrap()
        .to_string();
    let site = elb.target_group("site");
    let api = elb.target_group("api");
    let port = free_port();
    let listener = elb.call(&[
        "create-listener",
        "--load-balancer-arn",
        &lb,
        "--protocol",
        "HTTP",
        "--port",
        &port.to_string(),
        "--default-actions",
        &format!("Type=forward,TargetGroupArn={site}"),
    ])["Listeners"][0]["ListenerArn"]
        .as_str()
        .unwrap()
        .to_string();
    elb.call(&[
        "create-rule",
        "--listener-arn",
        &listener,
        "--priority",
        "10",
        "--conditions",
        "Field=path-pattern,Values=/api/*",
        "--actions",
        &format!("Type=forward,TargetGroupArn={api}"),
    ]);
    elb.call(&[
        "create-rule",
        "--listener-arn",
        &listener,
        "--priority",
        "20",
        "--conditions",
        "Field=host-header,Values=api.*",
        "--actions",
        &format!("Type=forward,TargetGroupArn={api}"),
    ]);

    // A service naming a group with a container port its definition does not map is refused.
    s.ok("RegisterTaskDefinition", web_definition("site", "1"))
        .await;
    s.ok("RegisterTaskDefinition", web_definition("api", "1"))
        .await;
    let msg = s
        .err(
            "CreateService",
            json!({"serviceName": "bad", "taskDefinition": "site", "desiredCount": 1,
                   "loadBalancers": [{"targetGroupArn": site, "containerName": "web", "containerPort": 8080}]}),
            "InvalidParameterException",
        )
        .await;
    assert_eq!(
        msg,
        "The container web did not have a container port 8080 defined."
    );

    for (name, group, count) in [("site", &site, 3), ("api", &api, 1)] {
        s.ok(
            "CreateService",
            json!({"serviceName": name, "taskDefinition": name, "desiredCount": count,
                   "healthCheckGracePeriodSeconds": 30,
                   "deploymentConfiguration": {"minimumHealthyPercent": 100, "maximumPercent": 200},
                   "loadBalancers": [{"targetGroupArn": group, "containerName": "web", "containerPort": 80}]}),
        )
        .await;
    }
    wait_for("3 site and 1 api targets healthy", 90, || {
        elb.healthy(&site) == 3 && elb.healthy(&api) == 1
    })
    .await;
    // Each target is the task's instance at the host port Docker bound.
    let tasks = service_tasks(&s, "site", None).await;
    let ec2_id = s
        .ok(
            "DescribeContainerInstances",
            json!({"containerInstances": [instance]}),
        )
        .await["containerInstances"][0]["ec2InstanceId"]
        .as_str()
        .unwrap()
        .to_string();
    let mut bound: Vec<i64> = tasks
        .iter()
        .map(|t| {
            t["containers"][0]["networkBindings"][0]["hostPort"]
                .as_i64()
                .unwrap()
        })
        .collect();
    let mut targets: Vec<i64> = elb
        .registered(&site)
        .iter()
        .map(|d| {
            assert_eq!(
                d["Target"]["Id"],
                ec2_id.as_str(),
                "targets are the instance"
            );
            d["Target"]["Port"].as_i64().unwrap()
        })
        .collect();
    bound.sort();
    targets.sort();
    assert_eq!(targets, bound, "each task is registered at its host port");
    let events = describe(&s, "site").await["events"].to_string();
    assert!(
        events.contains("registered") && events.contains(&format!("(target-group {site})")),
        "ECS's registration event: {events}"
    );
    let svc = describe(&s, "site").await;
    assert_eq!(svc["loadBalancers"][0]["targetGroupArn"], site.as_str());

    // Rules: the default goes to the site, /api/* and api.* hosts to the api.
    let c = client();
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..6 {
        let (status, body) = get(&c, port, "/", None).await.unwrap();
        assert_eq!(
            (status, body.as_str()),
            (200, "site-1"),
            "the default action"
        );
        seen.insert(body);
    }
    assert_eq!(
        get(&c, port, "/api/", None).await.unwrap(),
        (200, "api-1".into()),
        "the path rule"
    );
    assert_eq!(
        get(&c, port, "/", Some("api.example.com")).await.unwrap(),
        (200, "api-1".into()),
        "the host rule"
    );

    // A rolling deployment under continuous load: not one request fails.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (stop, ok, failed, failures) =
            (stop.clone(), ok.clone(), failed.clone(), failures.clone());
        let c = client();
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match get(&c, port, "/", None).await {
                    Ok((200, _)) => ok.fetch_add(1, Ordering::Relaxed),
                    other => {
                        failures.lock().unwrap().push(format!("{other:?}"));
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }
    s.ok("RegisterTaskDefinition", web_definition("site", "2"))
        .await;
    s.ok(
        "UpdateService",
        json!({"service": "site", "taskDefinition": "site:2"}),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(150);
    loop {
        let svc = describe(&s, "site").await;
        let done = svc["deployments"].as_array().unwrap().len() == 1
            && svc["runningCount"] == 3
            && elb.healthy(&site) == 3
            && elb.registered(&site).len() == 3;
        if done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the rollout did not finish: {:#}",
            svc["events"]
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for _ in 0..6 {
        assert_eq!(
            get(&c, port, "/", None).await.unwrap(),
            (200, "site-2".into()),
            "only the new revision answers after the rollout"
        );
    }
    stop.store(true, Ordering::Relaxed);
    for l in load {
        l.await.unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert!(ok > 100, "the load ran through the rollout ({ok} requests)");
    assert_eq!(
        failed,
        0,
        "requests failed during the rollout: {:?}",
        failures.lock().unwrap()
    );
    let events = describe(&s, "site").await["events"].to_string();
    assert!(
        events.contains("deregistered"),
        "ECS's deregistration event: {events}"
    );

    // A task killed under Docker's feet: its target goes, a new task takes its place.
    let victim = service_tasks(&s, "site", None).await[0].clone();
    let victim_port = victim["containers"][0]["networkBindings"][0]["hostPort"]
        .as_i64()
        .unwrap();
    let cid = victim["containers"][0]["runtimeId"]
        .as_str()
        .unwrap()
        .to_string();
    let out = std::process::Command::new("docker")
        .args(["kill", &cid])
        .output()
        .unwrap();
    assert!(out.status.success(), "docker kill: {out:?}");
    wait_for(
        "the killed task's target gone and 3 healthy again",
        90,
        || {
            let targets = elb.registered(&site);
            targets.len() == 3
                && targets
                    .iter()
                    .all(|d| d["Target"]["Port"].as_i64() != Some(victim_port))
                && elb.healthy(&site) == 3
        },
    )
    .await;
    assert_eq!(get(&c, port, "/", None).await.unwrap().0, 200);

    // A task whose target fails its group's health checks is replaced, with ECS's reason.
    let sick = elb.target_group_checking("sick", "/missing");
    elb.call(&[
        "create-rule",
        "--listener-arn",
        &listener,
        "--priority",
        "30",
        "--conditions",
        "Field=path-pattern,Values=/sick/*",
        "--actions",
        &format!("Type=forward,TargetGroupArn={sick}"),
    ]);
    s.ok(
        "CreateService",
        json!({"serviceName": "sick", "taskDefinition": "api", "desiredCount": 1,
               "loadBalancers": [{"targetGroupArn": sick, "containerName": "web", "containerPort": 80}]}),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(90);
    let stopped = loop {
        let gone = service_tasks(&s, "sick", Some("STOPPED")).await;
        if let Some(t) = gone.iter().find(|t| t["lastStatus"] == "STOPPED") {
            break t.clone();
        }
        assert!(
            Instant::now() < deadline,
            "the unhealthy task was not replaced: {:#}",
            describe(&s, "sick").await["events"]
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(
        stopped["stoppedReason"],
        format!("Task failed ELB health checks in (target-group {sick})").as_str()
    );
    // The next pass of the service counts it.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let svc = describe(&s, "sick").await;
        if svc["deployments"][0]["failedTasks"].as_i64().unwrap() >= 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a task that failed its load balancer's health checks counts as failed: {svc:#}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // Taking a service off its load balancer rolls it out to tasks that are not registered;
    // the old one drains from the group.
    s.ok(
        "UpdateService",
        json!({"service": "api", "loadBalancers": []}),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let svc = describe(&s, "api").await;
        let done = svc["deployments"].as_array().unwrap().len() == 1
            && svc["runningCount"] == 1
            && elb.registered(&api).is_empty();
        if done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the service did not leave its load balancer: {:#}",
            svc["events"]
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Scaling to zero deregisters everything.
    for name in ["site", "api", "sick"] {
        s.ok("UpdateService", json!({"service": name, "desiredCount": 0}))
            .await;
    }
    wait_for("every target drained away", 60, || {
        elb.registered(&site).is_empty()
            && elb.registered(&api).is_empty()
            && elb.registered(&sick).is_empty()
    })
    .await;
    agent.stop().await;
    docker_cleanup(&instance);
}
