//! FARGATE on the real Docker Engine: capacity Berth manages (an agent started as Fargate
//! capacity) runs the FARGATE tasks of every cluster without being one of their container
//! instances; each task in its own namespace with an address from its subnet, a public address
//! when asked, its size a real limit on the whole task (a cgroup); a service of FARGATE tasks
//! spread over two subnets in two zones and rolled to a new revision. VPCs and subnets through
//! the real AWS CLI. Needs Docker (BERTH_SKIP_DOCKER=1 to skip explicitly).

#![allow(clippy::unwrap_used)]

mod common;

use common::vpc::{answers, detail, reachable, Fixture};
use common::{aws_cli, aws_json, docker_inspect, wait_task, TestServer, BUSYBOX};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// The clusters `default` and `other`, and an agent of the pool of Fargate capacity.
async fn fixture(public: &str) -> Option<Fixture> {
    Fixture::start(public, &["default", "other"], |cfg| {
        cfg.cpu = Some(4096);
        cfg.memory = Some(8192);
        cfg.cluster = berth_control::FARGATE_POOL.into();
        cfg.attributes
            .insert(berth_control::CAPACITY_ATTRIBUTE.into(), "FARGATE".into());
    })
    .await
}

impl Fixture {
    /// A VPC with a subnet per `(cidr, zone)`, and a group letting tcp 80 in from anywhere.
    fn network(&mut self, vpc_cidr: &str, subnets: &[(&str, &str)]) -> (Vec<String>, String) {
        let vpc = self.ec2(&["create-vpc", "--cidr-block", vpc_cidr]);
        let vpc = vpc["Vpc"]["VpcId"].as_str().unwrap().to_string();
        let mut ids = Vec::new();
        for (cidr, zone) in subnets {
            let s = self.ec2(&[
                "create-subnet",
                "--vpc-id",
                &vpc,
                "--cidr-block",
                cidr,
                "--availability-zone",
                zone,
            ]);
            ids.push(s["Subnet"]["SubnetId"].as_str().unwrap().to_string());
        }
        self.docker.subnets.extend(ids.clone());
        let g = self.ec2(&[
            "create-security-group",
            "--group-name",
            "web",
            "--description",
            "web",
            "--vpc-id",
            &vpc,
        ]);
        let g = g["GroupId"].as_str().unwrap().to_string();
        self.ec2(&[
            "authorize-security-group-ingress",
            "--group-id",
            &g,
            "--protocol",
            "tcp",
            "--port",
            "80",
            "--cidr",
            "0.0.0.0/0",
        ]);
        (ids, g)
    }
}

/// A FARGATE task definition: 0.25 vCPU, 512 MiB, busybox httpd answering `hello` (and
/// `version` at /v) on 80.
fn fargate_td(version: &str) -> Value {
    json!({
        "family": "web",
        "requiresCompatibilities": ["FARGATE"],
        "networkMode": "awsvpc",
        "cpu": "256",
        "memory": "512",
        "containerDefinitions": [{
            "name": "web",
            "image": BUSYBOX,
            "portMappings": [{"containerPort": 80}],
            "stopTimeout": 2,
            "command": ["sh", "-c", format!("mkdir -p /www && echo hello > /www/index.html && echo {version} > /www/v && exec httpd -f -p 80 -h /www")],
        }]
    })
}

fn network_config(subnets: &[String], group: &str, public: bool) -> Value {
    json!({"awsvpcConfiguration": {
        "subnets": subnets,
        "securityGroups": [group],
        "assignPublicIp": if public { "ENABLED" } else { "DISABLED" },
    }})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fargate_tasks_of_two_clusters_run_on_managed_capacity_within_their_size() {
    let Some(mut f) = fixture("127.101.9.0/24").await else {
        return;
    };
    let (subnets, web) = f.network("10.233.0.0/16", &[("10.233.1.0/24", "us-east-1b")]);
    let td = register(&f.server, "v1").await;

    // The capacity is nobody's container instance.
    for c in ["default", "other"] {
        let l = f
            .server
            .ok("ListContainerInstances", json!({"cluster": c}))
            .await;
        assert_eq!(l["containerInstanceArns"], json!([]), "{c}: {l}");
    }
    let clusters = f.server.ok("ListClusters", json!({})).await;
    assert_eq!(
        clusters["clusterArns"].as_array().unwrap().len(),
        2,
        "the pool is not a cluster of the user's: {clusters}"
    );

    // ECS's refusals: sizes outside the table, placement rules, another platform version.
    let run = |cluster: &str, extra: Value| {
        let mut body = json!({
            "cluster": cluster,
            "taskDefinition": td,
            "launchType": "FARGATE",
            "networkConfiguration": network_config(&subnets, &web, true),
        });
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };
    let e = f
        .server
        .err(
            "RunTask",
            run(
                "default",
                json!({"overrides": {"cpu": "256", "memory": "4096"}}),
            ),
            "InvalidParameterException",
        )
        .await;
    assert!(e.contains("No Fargate configuration exists"), "{e}");
    let e = f
        .server
        .err(
            "RunTask",
            run(
                "default",
                json!({"placementStrategy": [{"type": "random"}]}),
            ),
            "InvalidParameterException",
        )
        .await;
    assert!(
        e.contains("not supported with the FARGATE launch type"),
        "{e}"
    );
    f.server
        .err(
            "RunTask",
            run("default", json!({"platformVersion": "1.3.0"})),
            "InvalidParameterException",
        )
        .await;

    // One task in each cluster, both on the pool.
    let mut tasks = Vec::new();
    for c in ["default", "other"] {
        // The second asks for more storage than Fargate's default.
        let extra = match c {
            "other" => json!({"platformVersion": "LATEST",
                              "overrides": {"ephemeralStorage": {"sizeInGiB": 30}}}),
            _ => json!({"platformVersion": "LATEST"}),
        };
        let v = f.server.ok("RunTask", run(c, extra)).await;
        assert_eq!(v["failures"], json!([]), "{v:#}");
        let t = &v["tasks"][0];
        assert_eq!(t["launchType"], "FARGATE");
        assert_eq!(t["platformVersion"], "1.4.0");
        assert!(t.get("containerInstanceArn").is_none(), "{t:#}");
        // Fargate's 20 GiB unless asked for more (this Docker's storage driver cannot
        // limit a container's disk: the agent makes the containers without the limit).
        let gib = if c == "other" { 30 } else { 20 };
        assert_eq!(t["ephemeralStorage"], json!({"sizeInGiB": gib}), "{t:#}");
        assert_eq!(t["fargateEphemeralStorage"], json!({"sizeInGiB": gib}));
        tasks.push((c, t["taskArn"].as_str().unwrap().to_string()));
    }
    let mut running = Vec::new();
    for (c, arn) in &tasks {
        let t = wait_task(&f.server, c, arn, 60, "RUNNING", |t| {
            t["lastStatus"] == "RUNNING"
        })
        .await;
        assert_eq!(
            t["availabilityZone"], "us-east-1b",
            "the subnet's zone: {t:#}"
        );
        assert_eq!(t["cpu"], "256");
        assert_eq!(t["memory"], "512");
        assert!(t.get("containerInstanceArn").is_none(), "{t:#}");
        running.push(t);
    }
    for t in &running {
        reachable(&detail(t, "publicIPv4Address").unwrap(), 80, 20).await;
        reachable(&detail(t, "privateIPv4Address").unwrap(), 80, 20).await;
    }
    let counts = f
        .server
        .ok("DescribeClusters", json!({"clusters": ["default"]}))
        .await;
    assert_eq!(counts["clusters"][0]["runningTasksCount"], 1, "{counts}");
    assert_eq!(
        counts["clusters"][0]["registeredContainerInstancesCount"],
        0
    );

    // The task's size is a cgroup over all of its containers.
    let id = running[0]["taskArn"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_string();
    let ctr = running[0]["containers"][0]["runtimeId"]
        .as_str()
        .unwrap()
        .to_string();
    let inspect = docker_inspect(&ctr);
    assert_eq!(
        inspect["HostConfig"]["CgroupParent"],
        format!("/berth/{id}"),
        "{}",
        inspect["HostConfig"]
    );
    let limit = std::fs::read_to_string(format!(
        "/sys/fs/cgroup/memory/berth/{id}/memory.limit_in_bytes"
    ))
    .or_else(|_| std::fs::read_to_string(format!("/sys/fs/cgroup/berth/{id}/memory.max")))
    .unwrap();
    assert_eq!(limit.trim(), (512u64 * 1024 * 1024).to_string());

    // Stopped: the address is free again.
    for (c, arn) in &tasks {
        f.server
            .ok("StopTask", json!({"cluster": c, "task": arn}))
            .await;
    }
    for (c, arn) in &tasks {
        wait_task(&f.server, c, arn, 60, "STOPPED", |t| {
            t["lastStatus"] == "STOPPED"
        })
        .await;
    }
    let public = detail(&running[0], "publicIPv4Address").unwrap();
    assert!(
        !answers(&public, 80),
        "a stopped task's public address answers nothing"
    );

    // Metered as Fargate bills: 0.25 vCPU and 0.5 GB, a minute at least, per cluster.
    let (key, _) = f.server.control.ensure_admin_key().await.unwrap();
    let usage = berth_agent::client::ServerClient::new(&f.server.endpoint)
        .admin_call(
            berth_control::http::USAGE_PATH,
            &json!({}),
            (&key.access_key_id, &key.secret_access_key, "us-east-1"),
        )
        .await
        .unwrap();
    for c in ["default", "other"] {
        let t = &usage["clusters"][c];
        assert_eq!(t["tasks"], 1, "{usage:#}");
        let (v, g) = (
            t["vcpu_seconds"].as_f64().unwrap(),
            t["gb_seconds"].as_f64().unwrap(),
        );
        assert!(v >= 15.0 && (g - 2.0 * v).abs() < 1e-6, "{c}: {t}");
    }
    assert_eq!(usage["tasks"][0]["running"], false, "{usage:#}");
    let enis = f.ec2(&["describe-network-interfaces"]);
    assert_eq!(enis["NetworkInterfaces"], json!([]), "{enis}");
    f.finish().await;
}

/// Waits until the service `web` has exactly 4 tasks, all RUNNING on `td`.
async fn steady(server: &TestServer, td: &str) -> Vec<Value> {
    steady_at(server, td, 4).await
}

/// Waits until the service `web` has exactly `n` tasks, all RUNNING on `td`.
/// Registers [`fargate_td`] of `version`: its ARN.
async fn register(server: &TestServer, version: &str) -> String {
    let td = server
        .ok("RegisterTaskDefinition", fargate_td(version))
        .await;
    td["taskDefinition"]["taskDefinitionArn"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Scales the service `web` of `default` to 0 and waits (at most `secs`) until its tasks are gone.
async fn scale_to_zero(server: &TestServer, secs: u64) {
    server
        .ok(
            "UpdateService",
            json!({"cluster": "default", "service": "web", "desiredCount": 0}),
        )
        .await;
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !common::service_tasks(server, "web", None).await.is_empty() {
        assert!(Instant::now() < deadline, "the service did not scale to 0");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

async fn steady_at(server: &TestServer, td: &str, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let tasks = common::service_tasks(server, "web", None).await;
        let on = tasks
            .iter()
            .filter(|t| t["lastStatus"] == "RUNNING" && t["taskDefinitionArn"] == td)
            .count();
        if on == n && tasks.len() == n {
            return tasks;
        }
        if Instant::now() > deadline {
            let svc = server
                .ok("DescribeServices", json!({"services": ["web"]}))
                .await;
            let stopped = common::service_tasks(server, "web", Some("STOPPED")).await;
            let why: Vec<&Value> = stopped.iter().map(|t| &t["stoppedReason"]).collect();
            panic!(
                "the service did not reach {n} RUNNING tasks of {td}: {tasks:#?}; events: {:#}; stopped ones: {why:?}",
                svc["services"][0]["events"]
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fargate_service_spreads_over_two_zones_and_rolls_to_a_new_revision() {
    let Some(mut f) = fixture("127.101.10.0/24").await else {
        return;
    };
    f.server.spawn_service_loop();
    let (subnets, web) = f.network(
        "10.234.0.0/16",
        &[
            ("10.234.1.0/24", "us-east-1a"),
            ("10.234.2.0/24", "us-east-1b"),
        ],
    );
    let v1 = register(&f.server, "v1").await;
    let e = f
        .server
        .err(
            "CreateService",
            json!({"cluster": "default", "serviceName": "web", "taskDefinition": v1, "desiredCount": 4, "launchType": "FARGATE"}),
            "InvalidParameterException",
        )
        .await;
    assert!(e.contains("Network Configuration must be provided"), "{e}");
    let svc = f
        .server
        .ok(
            "CreateService",
            json!({
                "cluster": "default",
                "serviceName": "web",
                "taskDefinition": v1,
                "desiredCount": 4,
                "launchType": "FARGATE",
                "networkConfiguration": network_config(&subnets, &web, false),
                "deploymentConfiguration": {"minimumHealthyPercent": 50, "maximumPercent": 150},
            }),
        )
        .await;
    assert_eq!(svc["service"]["launchType"], "FARGATE");
    assert_eq!(svc["service"]["platformVersion"], "LATEST");

    let tasks = steady(&f.server, &v1).await;
    let mut zones: Vec<String> = tasks
        .iter()
        .map(|t| t["availabilityZone"].as_str().unwrap().to_string())
        .collect();
    zones.sort();
    assert_eq!(
        zones,
        ["us-east-1a", "us-east-1a", "us-east-1b", "us-east-1b"],
        "spread over the subnets' zones"
    );
    for t in &tasks {
        reachable(&detail(t, "privateIPv4Address").unwrap(), 80, 20).await;
    }

    // A rolling update to a new revision: every task replaced, the service steady on it.
    let v2 = register(&f.server, "v2").await;
    f.server
        .ok(
            "UpdateService",
            json!({"cluster": "default", "service": "web", "taskDefinition": v2}),
        )
        .await;
    let tasks = steady(&f.server, &v2).await;
    let ip = detail(&tasks[0], "privateIPv4Address").unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match common::vpc::get_path(&ip, 80, "/v") {
            Ok(page) if page.contains("v2") => break,
            other => assert!(
                Instant::now() < deadline,
                "the new revision does not answer at {ip}: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    scale_to_zero(&f.server, 60).await;
    f.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fargate_without_capacity_says_how_to_get_some() {
    let s = TestServer::start().await;
    s.ok("CreateCluster", json!({"clusterName": "default"}))
        .await;
    let td = register(&s, "v1").await;
    let e = s
        .err(
            "RunTask",
            json!({
                "taskDefinition": td,
                "launchType": "FARGATE",
                "networkConfiguration": {"awsvpcConfiguration": {"subnets": []}},
            }),
            "InvalidParameterException",
        )
        .await;
    assert!(e.contains("subnets can not be empty"), "{e}");
    // A default subnet exists from the start: with it, the missing piece is capacity.
    let Some(cli) = aws_cli() else { return };
    let defaults = aws_json(
        &cli,
        &s,
        &s.secret_key,
        "ec2",
        &[
            "describe-subnets",
            "--filters",
            "Name=default-for-az,Values=true",
        ],
    )
    .unwrap();
    let snap = defaults["Subnets"][0]["SubnetId"]
        .as_str()
        .unwrap()
        .to_string();
    let e = s
        .err(
            "RunTask",
            json!({
                "taskDefinition": td,
                "launchType": "FARGATE",
                "networkConfiguration": {"awsvpcConfiguration": {"subnets": [snap]}},
            }),
            "InvalidParameterException",
        )
        .await;
    assert!(e.contains("--capacity fargate"), "{e}");
    // A task definition not made for FARGATE cannot run there.
    let ec2_only = s
        .ok("RegisterTaskDefinition", common::task_def("plain"))
        .await;
    let e = s
        .err(
            "RunTask",
            json!({"taskDefinition": ec2_only["taskDefinition"]["taskDefinitionArn"], "launchType": "FARGATE"}),
            "InvalidParameterException",
        )
        .await;
    assert!(
        e.contains("Task definition does not support launch_type FARGATE."),
        "{e}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn capacity_provider_strategies_split_tasks_and_spot_tasks_are_interrupted_and_replaced() {
    let Some(mut f) = fixture("127.101.11.0/24").await else {
        return;
    };
    f.server.spawn_service_loop();
    let (subnets, web) = f.network("10.235.0.0/16", &[("10.235.1.0/24", "us-east-1a")]);
    let td = register(&f.server, "v1").await;
    let providers = f.server.ok("DescribeCapacityProviders", json!({})).await;
    let names: Vec<&str> = providers["capacityProviders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["FARGATE", "FARGATE_SPOT"]);

    // A provider the cluster does not have: ECS's words.
    let e = f
        .server
        .err(
            "RunTask",
            json!({"taskDefinition": td, "capacityProviderStrategy": [{"capacityProvider": "FARGATE_SPOT", "weight": 1}],
                   "networkConfiguration": network_config(&subnets, &web, false)}),
            "InvalidParameterException",
        )
        .await;
    assert!(e.contains("not associated with the cluster"), "{e}");
    f.server
        .ok(
            "PutClusterCapacityProviders",
            json!({"cluster": "default", "capacityProviders": ["FARGATE", "FARGATE_SPOT"],
                   "defaultCapacityProviderStrategy": [
                       {"capacityProvider": "FARGATE", "base": 1, "weight": 1},
                       {"capacityProvider": "FARGATE_SPOT", "weight": 3}]}),
        )
        .await;
    f.server
        .err(
            "RunTask",
            json!({"taskDefinition": td, "capacityProviderStrategy": [
                       {"capacityProvider": "FARGATE", "base": 1, "weight": 1},
                       {"capacityProvider": "FARGATE_SPOT", "base": 1, "weight": 1}],
                   "networkConfiguration": network_config(&subnets, &web, false)}),
            "InvalidParameterException",
        )
        .await;

    // No launch type: the cluster's default strategy, base first, then 1:3.
    let v = f
        .server
        .ok(
            "RunTask",
            json!({"taskDefinition": td, "count": 5, "networkConfiguration": network_config(&subnets, &web, false)}),
        )
        .await;
    let tasks = v["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 5, "{v:#}");
    let spot = tasks
        .iter()
        .filter(|t| t["capacityProviderName"] == "FARGATE_SPOT")
        .count();
    assert_eq!(
        spot, 3,
        "base 1 on FARGATE, then the other 4 split 1:3: {v:#}"
    );
    for t in tasks {
        f.server.ok("StopTask", json!({"task": t["taskArn"]})).await;
    }

    // A service on Spot: an interrupted task stops as ECS says, and the service replaces it.
    f.server
        .ok(
            "CreateService",
            json!({"serviceName": "web", "taskDefinition": td, "desiredCount": 2,
                   "capacityProviderStrategy": [{"capacityProvider": "FARGATE_SPOT", "weight": 1}],
                   "networkConfiguration": network_config(&subnets, &web, false)}),
        )
        .await;
    let before = steady_at(&f.server, &td, 2).await;
    assert!(before
        .iter()
        .all(|t| t["capacityProviderName"] == "FARGATE_SPOT"));
    let victim = before[0]["taskArn"].as_str().unwrap().to_string();
    let (key, _) = f.server.control.ensure_admin_key().await.unwrap();
    let answer = berth_agent::client::ServerClient::new(&f.server.endpoint)
        .admin_call(
            berth_control::http::SPOT_INTERRUPT_PATH,
            &json!({"task": victim}),
            (&key.access_key_id, &key.secret_access_key, "us-east-1"),
        )
        .await
        .unwrap();
    assert_eq!(answer["interrupted"], json!([victim]), "{answer}");
    let stopped = wait_task(&f.server, "default", &victim, 60, "STOPPED", |t| {
        t["lastStatus"] == "STOPPED"
    })
    .await;
    assert_eq!(stopped["stopCode"], "SpotInterruption", "{stopped:#}");
    assert_eq!(stopped["stoppedReason"], "Your Spot Task was interrupted.");
    let after = steady_at(&f.server, &td, 2).await;
    assert!(
        after.iter().all(|t| t["taskArn"] != victim.as_str()),
        "the interrupted task was replaced: {after:#?}"
    );

    // Off Spot: a new strategy is a new deployment, whose tasks replace the Spot ones.
    let updated = f
        .server
        .ok(
            "UpdateService",
            json!({"service": "web",
                   "capacityProviderStrategy": [{"capacityProvider": "FARGATE", "weight": 1}]}),
        )
        .await;
    let svc = &updated["service"];
    assert_eq!(
        svc["capacityProviderStrategy"],
        json!([{"capacityProvider": "FARGATE", "weight": 1}])
    );
    let primary = &svc["deployments"][0];
    assert_eq!(
        primary["capacityProviderStrategy"][0]["capacityProvider"],
        "FARGATE"
    );
    assert!(primary.get("launchType").is_none(), "{primary:#}");
    assert_eq!(svc["deployments"].as_array().unwrap().len(), 2);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let tasks = steady_at(&f.server, &td, 2).await;
        if tasks.iter().all(|t| t["capacityProviderName"] == "FARGATE") {
            break;
        }
        assert!(Instant::now() < deadline, "still on Spot: {tasks:#?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    scale_to_zero(&f.server, 60).await;
    f.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fargate_service_behind_a_load_balancer_registers_its_tasks_addresses() {
    let Some(mut f) = fixture("127.101.12.0/24").await else {
        return;
    };
    f.server.spawn_service_loop();
    let (subnets, web) = f.network("10.236.0.0/16", &[("10.236.1.0/24", "us-east-1a")]);
    let elb = |args: &[&str]| {
        aws_json(&f.cli, &f.server, &f.server.secret_key, "elbv2", args)
            .unwrap_or_else(|e| panic!("aws elbv2 {args:?}: {e}"))
    };
    let lb = elb(&[
        "create-load-balancer",
        "--name",
        "web",
        "--subnets",
        &subnets[0],
    ]);
    let lb = lb["LoadBalancers"][0]["LoadBalancerArn"]
        .as_str()
        .unwrap()
        .to_string();
    let tg = elb(&[
        "create-target-group",
        "--name",
        "web",
        "--protocol",
        "HTTP",
        "--port",
        "80",
        "--target-type",
        "ip",
        "--health-check-interval-seconds",
        "5",
        "--health-check-timeout-seconds",
        "2",
        "--healthy-threshold-count",
        "2",
    ]);
    let tg = tg["TargetGroups"][0]["TargetGroupArn"]
        .as_str()
        .unwrap()
        .to_string();
    let port = common::free_port();
    elb(&[
        "create-listener",
        "--load-balancer-arn",
        &lb,
        "--protocol",
        "HTTP",
        "--port",
        &port.to_string(),
        "--default-actions",
        &format!("Type=forward,TargetGroupArn={tg}"),
    ]);
    let td = register(&f.server, "v1").await;
    f.server
        .ok(
            "CreateService",
            json!({"serviceName": "web", "taskDefinition": td, "desiredCount": 2, "launchType": "FARGATE",
                   "loadBalancers": [{"targetGroupArn": tg, "containerName": "web", "containerPort": 80}],
                   "networkConfiguration": network_config(&subnets, &web, false)}),
        )
        .await;
    let tasks = steady_at(&f.server, &td, 2).await;
    let mut ips: Vec<String> = tasks
        .iter()
        .map(|t| detail(t, "privateIPv4Address").unwrap())
        .collect();
    ips.sort();
    // Both addresses registered and healthy, and the load balancer answers from them.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let h = elb(&["describe-target-health", "--target-group-arn", &tg]);
        let mut healthy: Vec<String> = h["TargetHealthDescriptions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["TargetHealth"]["State"] == "healthy")
            .map(|d| d["Target"]["Id"].as_str().unwrap().to_string())
            .collect();
        healthy.sort();
        if healthy == ips {
            break;
        }
        assert!(Instant::now() < deadline, "targets not healthy: {h:#}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    reachable("127.0.0.1", port, 20).await;
    scale_to_zero(&f.server, 90).await;
    f.finish().await;
}
