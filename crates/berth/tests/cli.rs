//! The human CLI (`berth cluster|service|task|instance|taskdef|repo|image|logs …`) run as the
//! real binary against a real server: its tables, `--output json|text`, exit codes and
//! errors with their fixes; and on the real Docker Engine, `task run` from an image alone,
//! `logs`, `service scale --wait`, `service ps` and `service deploy` following a live rollout.
//! The Docker test needs Docker (BERTH_SKIP_DOCKER=1 skips it explicitly).

#![allow(clippy::unwrap_used)]

mod common;

use common::{docker_available, docker_cleanup, TestServer, BUSYBOX};
use serde_json::{json, Value};

use std::time::{Duration, Instant};

/// What one run of `berth` did.
#[derive(Debug)]
struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Out {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout))
    }

    /// The table's rows, each split into its columns (two spaces or more apart).
    fn rows(&self) -> Vec<Vec<String>> {
        self.stdout
            .lines()
            .map(|l| {
                l.split("  ")
                    .map(str::trim)
                    .filter(|c| !c.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .collect()
    }
}

/// The environment a user of the CLI has: a home without AWS files, the server's key and
/// endpoint (unless `env` changes them), and a `berth up` data dir of its own.
struct User<'a> {
    s: &'a TestServer,
    home: tempfile::TempDir,
}

impl<'a> User<'a> {
    fn new(s: &'a TestServer) -> User<'a> {
        User {
            s,
            home: tempfile::tempdir().unwrap(),
        }
    }

    async fn berth(&self, args: &[&str]) -> Out {
        let env = [
            ("AWS_ACCESS_KEY_ID", self.s.access_key.as_str()),
            ("AWS_SECRET_ACCESS_KEY", self.s.secret_key.as_str()),
            ("AWS_ENDPOINT_URL", self.s.endpoint.as_str()),
        ];
        self.berth_env(args, &env).await
    }

    /// `berth ARGS` with only `env` of the AWS variables set.
    async fn berth_env(&self, args: &[&str], env: &[(&str, &str)]) -> Out {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_berth"));
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.home.path())
            .env("BERTH_DATA_DIR", self.home.path().join("berth"))
            .kill_on_drop(true);
        if let Some(host) = std::env::var_os("DOCKER_HOST") {
            cmd.env("DOCKER_HOST", host);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = tokio::time::timeout(Duration::from_secs(240), cmd.output())
            .await
            .unwrap_or_else(|_| panic!("berth {args:?} did not end within 240 s"))
            .unwrap();
        let out = Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        eprintln!("$ berth {}\n{}{}", args.join(" "), out.stdout, out.stderr);
        out
    }

    /// `berth ARGS`, which must succeed.
    async fn ok(&self, args: &[&str]) -> Out {
        let out = self.berth(args).await;
        assert_eq!(out.code, 0, "berth {args:?} failed: {out:?}");
        out
    }

    /// `berth ARGS`, which must fail with exit code `code` and say `words` on stderr.
    async fn fails(&self, args: &[&str], code: i32, words: &str) -> Out {
        let out = self.berth(args).await;
        assert_eq!(out.code, code, "berth {args:?}: exit code: {out:?}");
        assert!(
            out.stderr.contains(words),
            "berth {args:?} should say '{words}': {out:?}"
        );
        out
    }

    fn write(&self, path: &str, text: &str) {
        let p = self.home.path().join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
}

fn key_file(section: &str, s: &TestServer) -> String {
    format!(
        "[{section}]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
        s.access_key, s.secret_key
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clusters_task_definitions_and_repositories_as_tables_json_and_text_with_clear_errors() {
    let s = TestServer::start().await;
    let u = User::new(&s);

    // Clusters: create, ls in each output, describe, rm.
    let out = u.ok(&["cluster", "create", "blue"]).await;
    assert!(
        out.stdout.trim().ends_with(":cluster/blue"),
        "create prints the ARN: {out:?}"
    );
    let rows = u.ok(&["cluster", "ls"]).await.rows();
    assert_eq!(
        rows[0],
        [
            "NAME",
            "STATUS",
            "INSTANCES",
            "SERVICES",
            "RUNNING",
            "PENDING"
        ]
    );
    assert!(
        rows.contains(
            &["blue", "ACTIVE", "0", "0", "0", "0"]
                .map(String::from)
                .to_vec()
        ),
        "{rows:?}"
    );
    let clusters = u.ok(&["cluster", "ls", "-o", "json"]).await.json();
    assert!(
        clusters
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["clusterName"] == "blue" && c["status"] == "ACTIVE"),
        "json is the API's clusters: {clusters:#}"
    );
    let text = u.ok(&["cluster", "ls", "--output", "text"]).await.stdout;
    assert!(
        text.lines().any(|l| l == "blue\tACTIVE\t0\t0\t0\t0"),
        "{text}"
    );
    let c = u.ok(&["cluster", "describe", "blue"]).await.json();
    assert_eq!(c["clusterName"], "blue");
    u.fails(
        &["cluster", "describe", "nope"],
        1,
        "cluster not found: nope: MISSING",
    )
    .await;
    u.ok(&["cluster", "rm", "blue"]).await;

    // Errors name the service's exception and say what to do.
    let out = u
        .fails(
            &["service", "ls", "--cluster", "nope"],
            1,
            "ClusterNotFoundException: Cluster not found.",
        )
        .await;
    assert!(
        out.stderr.contains("hint: name the cluster with --cluster"),
        "{out:?}"
    );
    u.ok(&["cluster", "create", "default"]).await;
    u.fails(
        &["service", "ps", "nope"],
        1,
        "service not found: nope: MISSING",
    )
    .await;
    u.fails(&["service", "scale", "web"], 2, "COUNT").await;
    u.fails(&["task", "run"], 2, "IMAGE").await;
    u.fails(
        &["task", "run", "--task-definition", "web", "-e", "A=1"],
        2,
        "cannot be used with",
    )
    .await;
    let out = u
        .fails(
            &["cluster", "ls", "--endpoint-url", "http://127.0.0.1:1"],
            1,
            "cannot reach http://127.0.0.1:1",
        )
        .await;
    assert!(
        out.stderr.contains("hint: is the server running?"),
        "{out:?}"
    );
    let env = [
        ("AWS_ACCESS_KEY_ID", "AKIANOBODY0000000000"),
        ("AWS_SECRET_ACCESS_KEY", "wrong"),
        ("AWS_ENDPOINT_URL", s.endpoint.as_str()),
    ];
    let out = u.berth_env(&["cluster", "ls"], &env).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains(
            "UnrecognizedClientException: The security token included in the request is invalid."
        ) && out
            .stderr
            .contains("hint: the server does not know this key"),
        "{out:?}"
    );

    // Credentials from where the AWS CLI finds them, then from a local `berth up`'s data dir.
    let endpoint = [("AWS_ENDPOINT_URL", s.endpoint.as_str())];
    let out = u.berth_env(&["cluster", "ls"], &endpoint).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("no credentials"), "{out:?}");
    u.write("berth/credentials", &key_file("berth", &s));
    assert_eq!(u.berth_env(&["cluster", "ls"], &endpoint).await.code, 0);
    u.write(".aws/credentials", &key_file("prod", &s));
    u.write(
        ".aws/config",
        &format!(
            "[profile prod]\nregion = us-east-1\nendpoint_url = {}\n",
            s.endpoint
        ),
    );
    let out = u
        .berth_env(&["cluster", "ls", "--profile", "prod"], &[])
        .await;
    assert_eq!(
        out.code, 0,
        "the profile names the key and the endpoint: {out:?}"
    );
    let out = u
        .berth_env(&["cluster", "ls", "--profile", "gone"], &[])
        .await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("the profile 'gone'"), "{out:?}");

    // Task definitions: families and their latest revision; describe; deregister.
    for _ in 0..2 {
        s.ok("RegisterTaskDefinition", common::task_def("web"))
            .await;
    }
    let rows = u.ok(&["taskdef", "ls"]).await.rows();
    assert_eq!(rows, [["FAMILY", "LATEST", "REVISIONS"], ["web", "2", "2"]]);
    let td = u
        .ok(&["taskdef", "describe", "web:1", "-o", "json"])
        .await
        .json();
    assert_eq!(td["taskDefinition"]["revision"], 1);
    let out = u.ok(&["taskdef", "rm", "web:1"]).await;
    assert!(
        out.stdout.trim().ends_with("task-definition/web:1"),
        "{out:?}"
    );
    assert_eq!(
        u.ok(&["taskdef", "ls", "-o", "text"]).await.stdout,
        "web\t2\t1\n"
    );
    u.fails(&["taskdef", "describe", "nope:3"], 1, "ClientException")
        .await;

    // Repositories and images.
    let out = u.ok(&["repo", "create", "app"]).await;
    assert!(
        out.stdout.trim().ends_with("/app"),
        "create prints the URI: {out:?}"
    );
    let rows = u.ok(&["repo", "ls"]).await.rows();
    assert_eq!(rows[0], ["NAME", "URI", "TAG MUTABILITY", "AGE"]);
    assert_eq!(rows[1][0], "app");
    assert_eq!(rows[1][2], "MUTABLE");
    assert_eq!(
        u.ok(&["image", "ls", "app"]).await.rows(),
        [["TAGS", "DIGEST", "SIZE", "PUSHED"]]
    );
    assert_eq!(
        u.ok(&["image", "ls", "app", "-o", "json"]).await.json(),
        json!([])
    );
    u.fails(&["image", "ls", "nope"], 1, "RepositoryNotFoundException")
        .await;
    u.fails(&["image", "rm", "app", "v1"], 1, "ImageNotFound")
        .await;
    u.ok(&["repo", "rm", "app"]).await;

    // Instances: none yet, a header alone.
    assert_eq!(u.ok(&["instance", "ls"]).await.rows().len(), 1);
    u.fails(
        &["instance", "drain", "i-nope"],
        1,
        "no container instance i-nope",
    )
    .await;

    u.fails(&["top"], 1, "Container Insights is off for cluster default")
        .await;

    let out = u.ok(&["completions", "bash"]).await;
    assert!(
        out.stdout.contains("berth") && out.stdout.contains("deploy"),
        "{out:?}"
    );
    s.stop().await;
}

/// `berth lb` reads Elastic Load Balancing through its Query protocol (a form, an XML answer):
/// a load balancer, its listener and the health of a target, made with the SDK.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_balancers_their_listeners_and_target_health() {
    use aws_sdk_elasticloadbalancingv2 as elbv2;
    use elbv2::types::{Action, ActionTypeEnum, ProtocolEnum, TargetDescription, TargetTypeEnum};
    let s = TestServer::start().await;
    let u = User::new(&s);
    assert_eq!(u.ok(&["lb", "ls"]).await.rows().len(), 1, "a header alone");

    let c = common::sdk_client!(elbv2, &s);
    let lb = c.create_load_balancer().name("edge & co").send().await;
    assert!(lb.is_err(), "a name with '&' is refused by the API");
    let lb = c.create_load_balancer().name("edge").send().await.unwrap();
    let lb_arn = lb.load_balancers()[0]
        .load_balancer_arn()
        .unwrap()
        .to_string();
    let group = c
        .create_target_group()
        .name("web")
        .protocol(ProtocolEnum::Http)
        .port(80)
        .target_type(TargetTypeEnum::Ip)
        .send()
        .await
        .unwrap()
        .target_groups()[0]
        .target_group_arn()
        .unwrap()
        .to_string();
    let port = common::free_port();
    c.create_listener()
        .load_balancer_arn(&lb_arn)
        .protocol(ProtocolEnum::Http)
        .port(i32::from(port))
        .default_actions(
            Action::builder()
                .r#type(ActionTypeEnum::Forward)
                .target_group_arn(&group)
                .build(),
        )
        .send()
        .await
        .unwrap();
    // Nothing listens on 127.0.0.9:1, so the target is never healthy.
    c.register_targets()
        .target_group_arn(&group)
        .targets(TargetDescription::builder().id("127.0.0.9").port(1).build())
        .send()
        .await
        .unwrap();

    let rows = u.ok(&["lb", "ls"]).await.rows();
    assert_eq!(rows[0], ["NAME", "DNS NAME", "SCHEME", "STATE", "AGE"]);
    assert_eq!(rows[1][0], "edge", "{rows:?}");
    assert_eq!(rows.len(), 2, "{rows:?}");
    let json = u
        .ok(&["lb", "describe", &lb_arn, "-o", "json"])
        .await
        .json();
    assert_eq!(json["LoadBalancerName"], "edge", "{json}");
    assert_eq!(json["LoadBalancerArn"], lb_arn.as_str(), "{json}");

    let rows = u.ok(&["lb", "listeners", "edge"]).await.rows();
    assert_eq!(
        rows[1],
        [port.to_string().as_str(), "HTTP", "forward web"],
        "{rows:?}"
    );

    let rows = u.ok(&["lb", "targets", "edge"]).await.rows();
    assert_eq!(
        rows[0],
        ["TARGET GROUP", "TARGET", "PORT", "STATE", "REASON"]
    );
    assert_eq!(&rows[1][..3], ["web", "127.0.0.9", "1"], "{rows:?}");
    let health = u
        .ok(&["lb", "targets", "web", "--tg", "-o", "json"])
        .await
        .json();
    assert_eq!(health[0]["Target"]["Id"], "127.0.0.9", "{health}");
    assert!(health[0]["TargetHealth"]["State"].is_string(), "{health}");
    let text = u.ok(&["lb", "targets", &group, "--tg", "-o", "text"]).await;
    assert!(text.stdout.starts_with("web\t127.0.0.9\t1\t"), "{text:?}");

    // Errors are ELB's own, with the way out.
    let out = u
        .fails(&["lb", "describe", "nope"], 1, "LoadBalancerNotFound")
        .await;
    assert!(out.stderr.contains("berth lb ls"), "a hint: {out:?}");
    u.fails(&["lb", "targets", "nope", "--tg"], 1, "TargetGroupNotFound")
        .await;

    let out = u.ok(&["lb", "rm", "edge"]).await;
    assert_eq!(out.stdout.trim(), "deleted edge");
    assert_eq!(u.ok(&["lb", "ls"]).await.rows().len(), 1, "deleted");
    s.stop().await;
}

/// Polls `check` once a second until it answers, for at most `secs`.
async fn eventually<T, F, Fut>(secs: u64, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "{what}: not within {secs} s"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn task_id(rows: &[Vec<String>]) -> String {
    rows[1][0].clone()
}

/// `berth image push` through the real Docker Engine into Berth's registry: each layer
/// reported, the digest ECR then lists, the engine left without the push's tag, and the errors
/// of a missing image, repository or engine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_push_reports_each_layer_and_lands_in_the_registry() {
    if !docker_available() {
        return;
    }
    let s = TestServer::start().await;
    let u = User::new(&s);
    let local = "berth-test/cli-push:v1";
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("big"), vec![b'x'; 400_000]).unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!("FROM {BUSYBOX}\nCOPY big /big\nCMD [\"ls\", \"-l\", \"/big\"]\n"),
    )
    .unwrap();
    let build = std::process::Command::new("docker")
        .args(["build", "-q", "-t", local])
        .arg(ctx.path())
        .env("DOCKER_BUILDKIT", "0")
        .output()
        .unwrap();
    assert!(build.status.success(), "docker build: {build:?}");

    u.fails(
        &["image", "push", local, "app:v1"],
        1,
        "RepositoryNotFoundException",
    )
    .await;
    u.ok(&["repo", "create", "app"]).await;
    let registry = s.registry_addr.to_string();
    let out = u.ok(&["image", "push", local, "app:v1"]).await;
    let remote = format!("{registry}/app:v1@sha256:");
    assert!(out.stdout.starts_with(&remote), "{out:?}");
    let digest = out
        .stdout
        .split('@')
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .to_string();
    let layers: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.ends_with(": Pushed"))
        .collect();
    assert!(
        layers.len() >= 2,
        "a line per pushed layer (busybox's and ours): {out:?}"
    );

    let images = u.ok(&["image", "ls", "app", "-o", "json"]).await.json();
    assert_eq!(images[0]["imageTags"], json!(["v1"]), "{images}");
    assert_eq!(images[0]["imageDigest"], digest.as_str(), "{images}");
    let inspect = std::process::Command::new("docker")
        .args(["image", "inspect", &format!("{registry}/app:v1")])
        .output()
        .unwrap();
    assert!(!inspect.status.success(), "the push's tag is removed again");

    // Again under another tag, by the image's own name: the layers are already there.
    let out = u
        .ok(&["image", "push", local, "app:v2", "-o", "json"])
        .await;
    assert_eq!(out.json()["imageDigest"], digest.as_str(), "{out:?}");
    assert!(out.stderr.contains(": Layer already exists"), "{out:?}");
    let out = u
        .ok(&["image", "push", local, "app:v2", "-o", "text"])
        .await;
    let (image, size) = out.stdout.trim().split_once('\t').unwrap();
    assert_eq!(image, format!("{registry}/app:v2@{digest}"), "{out:?}");
    assert!(size.parse::<u64>().unwrap() > 400_000, "{out:?}");

    u.fails(
        &["image", "push", "berth-test/no-such-image:1", "app:v3"],
        1,
        "cannot tag",
    )
    .await;
    u.fails(
        &["image", "push", "../etc", "app:v3"],
        1,
        "not an image reference",
    )
    .await;
    // A name the user gave the image for the registry is pushed as it is, and kept.
    let own = format!("{registry}/app:v4");
    let tag = std::process::Command::new("docker")
        .args(["tag", local, &own])
        .output()
        .unwrap();
    assert!(tag.status.success(), "{tag:?}");
    let out = u.ok(&["image", "push", &own]).await;
    assert!(out.stdout.starts_with(&format!("{own}@sha256:")), "{out:?}");
    let kept = std::process::Command::new("docker")
        .args(["image", "inspect", &own])
        .output()
        .unwrap();
    assert!(kept.status.success(), "the user's own tag stays");
    // A registry name that already means another image is not overwritten.
    let other = std::process::Command::new("docker")
        .args(["tag", BUSYBOX, &format!("{registry}/app:v5")])
        .output()
        .unwrap();
    assert!(other.status.success(), "{other:?}");
    u.fails(
        &["image", "push", local, "app:v5"],
        1,
        "already names another local image",
    )
    .await;
    let _ = std::process::Command::new("docker")
        .args(["rmi", &own, &format!("{registry}/app:v5")])
        .output();
    let out = u
        .berth_env(
            &["image", "push", local, "app:v3"],
            &[
                ("AWS_ACCESS_KEY_ID", s.access_key.as_str()),
                ("AWS_SECRET_ACCESS_KEY", s.secret_key.as_str()),
                ("AWS_ENDPOINT_URL", s.endpoint.as_str()),
                ("DOCKER_HOST", "unix:///nonexistent/docker.sock"),
            ],
        )
        .await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains("cannot reach the Docker Engine"),
        "{out:?}"
    );
    let _ = std::process::Command::new("docker")
        .args(["rmi", local])
        .output();
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_scale_deploy_and_logs_on_docker() {
    if !docker_available() {
        return;
    }
    let s = TestServer::start().await;
    s.spawn_service_loop();
    let (agent, instance, _dir) = common::insights_agent(&s, "enhanced").await;
    let u = User::new(&s);

    // A task of an image alone, its logs, and stopping it.
    let out = u
        .ok(&[
            "task",
            "run",
            BUSYBOX,
            "--name",
            "hello",
            "--wait",
            "--",
            "sh",
            "-c",
            "echo hello from berth; sleep 600",
        ])
        .await;
    let rows = out.rows();
    assert_eq!(
        rows[0],
        [
            "TASK",
            "TASK DEFINITION",
            "STATUS",
            "INSTANCE",
            "IP",
            "PORTS",
            "HEALTH",
            "AGE"
        ]
    );
    assert_eq!(rows[1][1], "hello:1");
    assert_eq!(rows[1][2], "RUNNING");
    assert!(
        rows[1][3].starts_with("i-"),
        "the instance's EC2 id: {rows:?}"
    );
    let hello = task_id(&rows);
    eventually(60, "the task's line through `berth logs`", || async {
        let out = u.ok(&["logs", &hello]).await;
        out.stdout.contains("hello from berth").then_some(())
    })
    .await;
    let out = u.ok(&["task", "stop", &hello]).await;
    assert!(out.stdout.trim().ends_with(&hello), "{out:?}");
    u.fails(
        &["logs", &hello, "--container", "nope"],
        1,
        "sends its logs",
    )
    .await;

    // A service: create, scale and wait, its tasks with their ports.
    u.ok(&[
        "task", "run", BUSYBOX, "--name", "web", "-p", "8080", "--wait", "--", "httpd", "-f", "-p",
        "8080",
    ])
    .await;
    u.ok(&[
        "service",
        "create",
        "web",
        "--task-definition",
        "web",
        "--desired-count",
        "1",
    ])
    .await;
    let out = u
        .ok(&["service", "scale", "web", "2", "--wait", "--timeout", "120"])
        .await;
    assert!(
        out.stdout.contains("web: desired count 2") && out.stderr.contains("web: 2 running"),
        "the change on stdout, the wait on stderr: {out:?}"
    );
    let rows = u.ok(&["service", "ps", "web"]).await.rows();
    assert_eq!(rows.len(), 3, "a header and two tasks: {rows:?}");
    for r in &rows[1..] {
        assert_eq!(r[1], "web:1");
        assert_eq!(r[2], "RUNNING");
        assert!(r[5].ends_with("->8080/tcp"), "the published port: {r:?}");
    }
    let arn = "arn:aws:ecs:us-east-1:000000000000:service/default/web";
    assert_eq!(
        u.ok(&["service", "ps", arn]).await.rows().len(),
        3,
        "a service named by its ARN lists its tasks too"
    );
    let tasks = u.ok(&["service", "ps", "web", "-o", "json"]).await.json();
    assert_eq!(tasks.as_array().unwrap().len(), 2);
    assert!(tasks
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["lastStatus"] == "RUNNING" && t["group"] == "service:web"));

    // Its tasks' CPU and memory, from Container Insights.
    let usage = eventually(90, "both tasks' figures in `berth top`", || async {
        let rows = u.ok(&["top", "-o", "json"]).await.json();
        let rows = rows.as_array().unwrap().clone();
        let measured = rows
            .iter()
            .filter(|r| r["group"] == "service:web" && r["memoryUtilized"].as_f64() > Some(0.0))
            .count();
        (measured == 2).then_some(rows)
    })
    .await;
    assert!(
        usage
            .iter()
            .filter(|r| r["group"] == "service:web")
            .all(|r| r["cpuReserved"].as_f64().is_some() && r["memoryReserved"] == 128.0),
        "reservations are the task definition's: {usage:?}"
    );
    let rows = u.ok(&["top"]).await.rows();
    assert_eq!(
        rows[0],
        ["TASK", "GROUP", "CPU", "CPU %", "MEMORY", "MEMORY %"]
    );

    // Deploy a new image: the rollout is followed to its end.
    let out = u
        .ok(&[
            "service",
            "deploy",
            "web",
            "--image",
            BUSYBOX,
            "--timeout",
            "180",
        ])
        .await;
    assert!(out.stderr.contains("registered web:2"), "{out:?}");
    assert!(
        out.stdout.contains("completed: 2 tasks of web:2"),
        "the rollout is followed to steady state: {out:?}"
    );
    assert!(
        out.stderr.contains("has reached a steady state"),
        "the service's events are shown as they come, on stderr: {out:?}"
    );
    let text = u.ok(&["service", "ls", "-o", "text"]).await.stdout;
    let row: Vec<&str> = text.trim().split('\t').collect();
    assert_eq!(
        &row[..8],
        ["web", "ACTIVE", "2", "2", "0", "web:2", "EC2", "COMPLETED"],
        "{text}"
    );
    let rows = u.ok(&["service", "events", "web", "-n", "3"]).await.rows();
    assert_eq!(rows.len(), 4, "{rows:?}");
    assert!(
        rows[3][1].contains("has reached a steady state"),
        "newest last: {rows:?}"
    );

    // A deploy that cannot be made, and one that is not awaited long enough.
    u.fails(
        &["service", "deploy", "web", "--task-definition", "nope:1"],
        1,
        "ClientException",
    )
    .await;
    u.fails(
        &[
            "service",
            "deploy",
            "web",
            "--image",
            BUSYBOX,
            "--container",
            "nope",
        ],
        1,
        "no container 'nope'",
    )
    .await;
    u.fails(
        &["service", "deploy", "web", "--force", "--timeout", "0"],
        3,
        "still in progress",
    )
    .await;

    let rows = u.ok(&["instance", "ls"]).await.rows();
    assert_eq!(rows[1][2], "ACTIVE");
    assert_eq!(rows[1][3], "connected");
    u.ok(&["service", "rm", "web", "--force"]).await;
    agent.stop().await;
    docker_cleanup(&instance);
    s.stop().await;
}
