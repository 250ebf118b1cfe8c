//! Services behind Berth's load balancer on the real Docker Engine, set up through the real
//! AWS CLI (`aws elbv2 …`): three bridge-mode tasks registered at their dynamic host ports and
//! answering through a listener; path and host rules splitting traffic between two services;
//! a rolling deployment under continuous load with zero failed requests; a killed task's
//! target deregistered and the task replaced. Needs Docker (BERTH_SKIP_DOCKER=1 skips).

#![allow(clippy::unwrap_used)]

mod common;

use common::lb::{client, get, wait_for, web_definition, Elb, Load};
use common::{
    aws_cli, docker_available, docker_cleanup, free_port, service_tasks, wait_joined, TestAgent,
    TestServer,
};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

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

    let lb = elb.load_balancer("web");
    let site = elb.target_group("site");
    let api = elb.target_group("api");
    let port = free_port();
    let listener = elb.listener(&lb, port, &site);
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
    let load = Load::start(port);
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
    let seen = load.stop().await;
    assert!(
        seen.ok > 100,
        "the load ran through the rollout ({} requests)",
        seen.ok
    );
    assert_eq!(
        seen.failures,
        Vec::<String>::new(),
        "requests failed during the rollout"
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
