//! `awsvpc` tasks on the real Docker Engine: each task in its own network namespace with an
//! address from its subnet (a Docker network the agent makes), its containers sharing it,
//! security groups enforced on its interface, a public address on this host, and the address
//! given back when it stops. VPCs, subnets and groups are made with the real AWS CLI; every
//! Docker network the tests make is removed at the end. Needs Docker (BERTH_SKIP_DOCKER=1 to
//! skip explicitly).

#![allow(clippy::unwrap_used)]

mod common;

use common::vpc::{answers, detail, reachable, wget_from, Fixture};
use common::{wait_task, BUSYBOX};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// The default cluster and an agent of it.
async fn fixture(public: &str) -> Option<Fixture> {
    Fixture::start(public, &["default"], |_| {}).await
}

impl Fixture {
    /// A VPC with one subnet in `us-east-1a`.
    fn subnet(&mut self, vpc_cidr: &str, cidr: &str) -> (String, String) {
        let vpc = self.ec2(&["create-vpc", "--cidr-block", vpc_cidr]);
        let vpc = vpc["Vpc"]["VpcId"].as_str().unwrap().to_string();
        let s = self.ec2(&[
            "create-subnet",
            "--vpc-id",
            &vpc,
            "--cidr-block",
            cidr,
            "--availability-zone",
            "us-east-1a",
        ]);
        let s = s["Subnet"]["SubnetId"].as_str().unwrap().to_string();
        self.docker.subnets.push(s.clone());
        (vpc, s)
    }

    /// A security group in `vpc` that lets tcp `ports` in from `from` (a CIDR or a group).
    fn group(&self, vpc: &str, name: &str, ports: &[u16], from: &str) -> String {
        let g = self.ec2(&[
            "create-security-group",
            "--group-name",
            name,
            "--description",
            name,
            "--vpc-id",
            vpc,
        ]);
        let id = g["GroupId"].as_str().unwrap().to_string();
        for p in ports {
            let source = if from.starts_with("sg-") {
                format!("UserIdGroupPairs=[{{GroupId={from}}}]")
            } else {
                format!("IpRanges=[{{CidrIp={from}}}]")
            };
            self.ec2(&[
                "authorize-security-group-ingress",
                "--group-id",
                &id,
                "--ip-permissions",
                &format!("IpProtocol=tcp,FromPort={p},ToPort={p},{source}"),
            ]);
        }
        id
    }

    async fn run(&self, td: &str, subnet: &str, groups: &[&str], public: bool) -> Value {
        let v = self
            .server
            .ok(
                "RunTask",
                json!({
                    "cluster": "default",
                    "taskDefinition": td,
                    "networkConfiguration": {"awsvpcConfiguration": {
                        "subnets": [subnet],
                        "securityGroups": groups,
                        "assignPublicIp": if public { "ENABLED" } else { "DISABLED" },
                    }},
                }),
            )
            .await;
        assert_eq!(v["failures"], json!([]), "RunTask failed: {v:#}");
        v["tasks"][0].clone()
    }

    async fn wait(&self, task: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        wait_task(&self.server, "default", task, 60, what, pred).await
    }
}

/// A task definition of one web container (busybox httpd on 80, answering `hello`, and on
/// 81) and a second container that only sleeps, sharing the task's namespace.
fn web_td(family: &str) -> Value {
    json!({
        "family": family,
        "networkMode": "awsvpc",
        "containerDefinitions": [
            {
                "name": "web",
                "image": BUSYBOX,
                "memory": 64,
                "portMappings": [{"containerPort": 80}, {"containerPort": 81}],
                // httpd as PID 1 ignores SIGTERM: do not wait 30 s for it.
                "stopTimeout": 2,
                "command": ["sh", "-c", "mkdir -p /www && echo hello > /www/index.html && httpd -p 81 -h /www && exec httpd -f -p 80 -h /www"],
            },
            {"name": "side", "image": BUSYBOX, "memory": 32, "command": ["sleep", "3600"]},
        ]
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_awsvpc_task_has_its_own_address_its_groups_ports_and_a_public_address() {
    let Some(mut f) = fixture("127.101.7.0/24").await else {
        return;
    };
    let attrs = f
        .server
        .ok(
            "DescribeContainerInstances",
            json!({"cluster": "default", "containerInstances": [f.instance]}),
        )
        .await;
    assert!(
        attrs["containerInstances"][0]["attributes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["name"] == "ecs.capability.task-eni"),
        "the agent advertises task ENIs: {attrs}"
    );
    let (vpc, subnet) = f.subnet("10.231.0.0/16", "10.231.1.0/24");
    let web = f.group(&vpc, "web", &[80], "0.0.0.0/0");
    let td = f.server.ok("RegisterTaskDefinition", web_td("web")).await;
    let td = td["taskDefinition"]["taskDefinitionArn"]
        .as_str()
        .unwrap()
        .to_string();

    // ECS's words for a missing or misplaced network configuration; nothing runs.
    let e = f
        .server
        .err(
            "RunTask",
            json!({"cluster": "default", "taskDefinition": td}),
            "InvalidParameterException",
        )
        .await;
    assert!(e.contains("Network Configuration must be provided"), "{e}");
    let e = f
        .server
        .err(
            "RunTask",
            json!({"cluster": "default", "taskDefinition": td, "networkConfiguration": {"awsvpcConfiguration": {"subnets": ["subnet-00000000000000000"]}}}),
            "InvalidParameterException",
        )
        .await;
    assert!(e.contains("subnet-00000000000000000"), "{e}");

    let t = f.run(&td, &subnet, &[&web], true).await;
    let arn = t["taskArn"].as_str().unwrap().to_string();
    assert_eq!(
        t["attachments"][0]["type"], "ElasticNetworkInterface",
        "{t:#}"
    );
    assert_eq!(t["attachments"][0]["status"], "PRECREATED");
    let t = f
        .wait(&arn, "RUNNING", |t| t["lastStatus"] == "RUNNING")
        .await;
    assert_eq!(t["attachments"][0]["status"], "ATTACHED", "{t:#}");
    assert_eq!(t["connectivity"], "CONNECTED");
    let ip = detail(&t, "privateIPv4Address").unwrap();
    assert_eq!(ip, "10.231.1.4", "the subnet's first address: {t:#}");
    assert_eq!(detail(&t, "subnetId").unwrap(), subnet);
    let public = detail(&t, "publicIPv4Address").unwrap();
    assert_eq!(public, "127.101.7.4");
    for c in t["containers"].as_array().unwrap() {
        assert_eq!(
            c["networkInterfaces"][0]["privateIpv4Address"],
            ip.as_str(),
            "{c}"
        );
        assert_eq!(
            c["networkBindings"],
            json!([]),
            "awsvpc has no host bindings: {c}"
        );
    }

    // The group lets 80 in and not 81, at the private and at the public address.
    reachable(&ip, 80, 20).await;
    reachable(&public, 80, 20).await;
    assert!(!answers(&ip, 81), "81 is not open to the host");
    assert!(
        !answers(&public, 81),
        "81 is not open at the public address"
    );
    // The task's containers share its namespace: the side container reaches 81 on localhost.
    let page = wget_from(&t, "side", "http://127.0.0.1:81/").unwrap();
    assert!(page.contains("hello"), "{page}");

    // The interface is EC2's too.
    let enis = f.ec2(&[
        "describe-network-interfaces",
        "--filters",
        &format!("Name=subnet-id,Values={subnet}"),
    ]);
    assert_eq!(
        enis["NetworkInterfaces"][0]["PrivateIpAddress"],
        ip.as_str(),
        "{enis}"
    );
    assert_eq!(
        enis["NetworkInterfaces"][0]["Association"]["PublicIp"],
        public.as_str()
    );
    assert_eq!(
        enis["NetworkInterfaces"][0]["Groups"][0]["GroupId"],
        web.as_str()
    );

    // Opening 81 reaches the running task.
    f.ec2(&[
        "authorize-security-group-ingress",
        "--group-id",
        &web,
        "--protocol",
        "tcp",
        "--port",
        "81",
        "--cidr",
        "0.0.0.0/0",
    ]);
    reachable(&ip, 81, 20).await;

    // Stopped: the interface is deleted and its address given back.
    f.server
        .ok("StopTask", json!({"cluster": "default", "task": arn}))
        .await;
    let t = f
        .wait(&arn, "STOPPED", |t| t["lastStatus"] == "STOPPED")
        .await;
    assert_eq!(t["attachments"][0]["status"], "DELETED", "{t:#}");
    let enis = f.ec2(&["describe-network-interfaces"]);
    assert_eq!(enis["NetworkInterfaces"], json!([]), "{enis}");
    let s = f.ec2(&["describe-subnets", "--subnet-ids", &subnet]);
    assert_eq!(s["Subnets"][0]["AvailableIpAddressCount"], 251, "{s}");
    assert!(!answers(&ip, 80), "the stopped task no longer answers");
    f.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tasks_in_one_subnet_reach_each_other_only_where_their_groups_allow() {
    let Some(mut f) = fixture("127.101.8.0/24").await else {
        return;
    };
    let (vpc, subnet) = f.subnet("10.232.0.0/16", "10.232.1.0/24");
    let client = f.group(&vpc, "client", &[], "");
    let server = f.group(&vpc, "server", &[80], &client);
    let td = f.server.ok("RegisterTaskDefinition", web_td("pair")).await;
    let td = td["taskDefinition"]["taskDefinitionArn"]
        .as_str()
        .unwrap()
        .to_string();
    let a = f.run(&td, &subnet, &[&server], false).await;
    let b = f.run(&td, &subnet, &[&client], false).await;
    let c = f.run(&td, &subnet, &[], false).await;
    let mut up = Vec::new();
    for t in [&a, &b, &c] {
        let arn = t["taskArn"].as_str().unwrap();
        up.push(
            f.wait(arn, "RUNNING", |t| t["lastStatus"] == "RUNNING")
                .await,
        );
    }
    let ips: Vec<String> = up
        .iter()
        .map(|t| detail(t, "privateIPv4Address").unwrap())
        .collect();
    assert_eq!(
        ips,
        ["10.232.1.4", "10.232.1.5", "10.232.1.6"],
        "addresses in order"
    );
    assert!(detail(&up[0], "publicIPv4Address").is_none());

    // B (in the client group) reaches A's 80; not A's 81; C (the VPC's default group) neither.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match wget_from(&up[1], "side", &format!("http://{}:80/", ips[0])) {
            Ok(body) if body.contains("hello") => break,
            other if Instant::now() > deadline => panic!("B cannot reach A:80: {other:?}"),
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    assert!(
        wget_from(&up[1], "side", &format!("http://{}:81/", ips[0])).is_err(),
        "A's group does not open 81"
    );
    assert!(
        wget_from(&up[2], "side", &format!("http://{}:80/", ips[0])).is_err(),
        "C is not in the client group"
    );
    // C's default group lets in only its own members: A is not one.
    assert!(
        wget_from(&up[0], "side", &format!("http://{}:80/", ips[2])).is_err(),
        "A is not in C's default group"
    );

    // The subnet keeps two pause containers started ahead, on EC2's reserved addresses.
    let spares = || {
        let out = std::process::Command::new("docker")
            .args([
                "ps",
                "--filter",
                &format!("label=io.berth.spare-pause={subnet}"),
                "--format",
                "{{.Names}}",
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|n| n.starts_with("berth-spare-"))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while spares().len() < 2 {
        assert!(Instant::now() < deadline, "no spares: {:?}", spares());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A fourth task takes one: its pause container is a spare moved to its address, and
    // its groups hold there (B reaches D's 80, not its 81).
    let d = f.run(&td, &subnet, &[&server], false).await;
    let d = f
        .wait(d["taskArn"].as_str().unwrap(), "RUNNING", |t| {
            t["lastStatus"] == "RUNNING"
        })
        .await;
    let d_ip = detail(&d, "privateIPv4Address").unwrap();
    assert_eq!(d_ip, "10.232.1.7");
    let d_id = d["taskArn"].as_str().unwrap().rsplit('/').next().unwrap();
    let pause = std::process::Command::new("docker")
        .args([
            "ps",
            "--filter",
            &format!("name=internalecspause-{d_id}"),
            "--format",
            "{{.Label \"io.berth.spare-pause\"}}",
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&pause.stdout).trim(),
        subnet,
        "D's pause container was a spare"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match wget_from(&up[1], "side", &format!("http://{d_ip}:80/")) {
            Ok(body) if body.contains("hello") => break,
            other if Instant::now() > deadline => panic!("B cannot reach D:80: {other:?}"),
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    assert!(
        wget_from(&up[1], "side", &format!("http://{d_ip}:81/")).is_err(),
        "D's group does not open 81"
    );

    // Without egress rules B reaches nobody, but its names still resolve: DNS to the
    // host's resolvers is never filtered (as a VPC's own DNS server is not).
    f.ec2(&[
        "revoke-security-group-egress",
        "--group-id",
        &client,
        "--ip-permissions",
        "IpProtocol=-1,IpRanges=[{CidrIp=0.0.0.0/0}]",
    ]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while wget_from(&up[1], "side", &format!("http://{d_ip}:80/")).is_ok() {
        assert!(Instant::now() < deadline, "B's egress is still open");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let side = up[1]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "side")
        .and_then(|c| c["runtimeId"].as_str())
        .unwrap()
        .to_string();
    let lookup = std::process::Command::new("docker")
        .args(["exec", &side, "timeout", "10", "nslookup", "example.com"])
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&lookup.stdout),
        String::from_utf8_lossy(&lookup.stderr)
    );
    assert!(
        said.contains("NXDOMAIN") || (said.contains("Address") && !said.contains("timed out")),
        "the resolver answered B: {said}"
    );

    // Once every task of the subnet has stopped, its spares and its network are gone.
    for t in up.iter().chain([&d]) {
        f.server
            .ok(
                "StopTask",
                json!({"cluster": "default", "task": t["taskArn"]}),
            )
            .await;
    }
    for t in up.iter().chain([&d]) {
        f.wait(t["taskArn"].as_str().unwrap(), "STOPPED", |t| {
            t["lastStatus"] == "STOPPED"
        })
        .await;
    }
    assert!(spares().is_empty(), "spares left: {:?}", spares());
    let net = std::process::Command::new("docker")
        .args(["network", "inspect", &format!("berth-{subnet}")])
        .output()
        .unwrap();
    assert!(!net.status.success(), "the subnet's network is gone");
    f.finish().await;
}
