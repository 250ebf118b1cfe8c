//! Tasks on the real Docker Engine: a server and an agent in this process, containers made by
//! the engine, checked with `docker inspect` and over HTTP. Needs Docker (set
//! BERTH_SKIP_DOCKER=1 to skip explicitly); images come from scripts/build-test-images.

#![allow(clippy::unwrap_used)]

mod common;

use common::{
    docker_available, docker_cleanup, docker_inspect, wait_joined, wait_task, TestAgent,
    TestServer, BUSYBOX,
};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

struct Fixture {
    server: TestServer,
    agent: TestAgent,
    instance: String,
    _agent_dir: tempfile::TempDir,
}

impl Fixture {
    async fn start() -> Option<Fixture> {
        Self::start_with(|_| {}).await
    }

    async fn start_with(tune: impl FnOnce(&mut berth_agent::AgentConfig)) -> Option<Fixture> {
        if !docker_available() {
            return None;
        }
        let server = TestServer::start().await;
        server
            .ok("CreateCluster", json!({"clusterName": "default"}))
            .await;
        let agent_dir = tempfile::tempdir().unwrap();
        let mut cfg = TestAgent::config(&server, agent_dir.path());
        tune(&mut cfg);
        let agent = TestAgent::start(&server, cfg).await;
        let instance = wait_joined(&agent).await;
        Some(Fixture {
            server,
            agent,
            instance,
            _agent_dir: agent_dir,
        })
    }

    async fn register(&self, td: Value) -> String {
        let v = self.server.ok("RegisterTaskDefinition", td).await;
        v["taskDefinition"]["taskDefinitionArn"]
            .as_str()
            .unwrap()
            .to_string()
    }

    async fn run(&self, td: &str, extra: Value) -> Value {
        let mut body = json!({"cluster": "default", "taskDefinition": td});
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                b.insert(k.clone(), v.clone());
            }
        }
        self.server.ok("RunTask", body).await
    }

    async fn run_one(&self, td: &str) -> String {
        let v = self.run(td, json!({})).await;
        assert_eq!(v["failures"], json!([]), "RunTask failed: {v:#}");
        v["tasks"][0]["taskArn"].as_str().unwrap().to_string()
    }

    async fn wait(
        &self,
        task: &str,
        secs: u64,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        wait_task(&self.server, "default", task, secs, what, pred).await
    }

    async fn wait_status(&self, task: &str, status: &str) -> Value {
        self.wait(task, 60, status, |t| t["lastStatus"] == status)
            .await
    }

    async fn finish(self) {
        self.agent.stop().await;
        docker_cleanup(&self.instance);
        // A task loop caught mid-create when the agent stopped may still add a container.
        tokio::time::sleep(Duration::from_millis(500)).await;
        docker_cleanup(&self.instance);
        self.server.stop().await;
    }
}

fn container<'a>(task: &'a Value, name: &str) -> &'a Value {
    task["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name} in {task:#}"))
}

fn runtime_id(task: &Value, name: &str) -> String {
    container(task, name)["runtimeId"]
        .as_str()
        .unwrap_or_else(|| panic!("container {name} has no runtimeId: {task:#}"))
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_task_runs_with_its_limits_environment_and_labels_then_stops_on_request() {
    let Some(f) = Fixture::start().await else {
        return;
    };
    let td = f
        .register(json!({
            "family": "limits",
            "containerDefinitions": [{
                "name": "app", "image": BUSYBOX, "cpu": 256, "memory": 96, "memoryReservation": 64,
                "command": ["sleep", "600"],
                "environment": [{"name": "GREETING", "value": "hello"}],
                "workingDirectory": "/tmp", "user": "1000",
                "ulimits": [{"name": "nofile", "softLimit": 1024, "hardLimit": 2048}],
                "dockerLabels": {"team": "berth"},
                "readonlyRootFilesystem": true,
                "stopTimeout": 2
            }]
        }))
        .await;
    let v = f
        .run(
            &td,
            json!({"overrides": {"containerOverrides": [{"name": "app",
                "environment": [{"name": "EXTRA", "value": "1"}]}]},
                "startedBy": "tester"}),
        )
        .await;
    let task = v["tasks"][0]["taskArn"].as_str().unwrap().to_string();
    assert_eq!(v["tasks"][0]["lastStatus"], "PENDING");
    assert_eq!(v["tasks"][0]["desiredStatus"], "RUNNING");
    assert_eq!(v["tasks"][0]["containerInstanceArn"], f.instance.as_str());

    let t = f.wait_status(&task, "RUNNING").await;
    for stamp in ["createdAt", "pullStartedAt", "pullStoppedAt", "startedAt"] {
        assert!(
            t[stamp].is_number(),
            "{stamp} missing on a RUNNING task: {t:#}"
        );
    }
    assert_eq!(t["stoppedAt"], Value::Null);
    assert_eq!(container(&t, "app")["lastStatus"], "RUNNING");

    let d = docker_inspect(&runtime_id(&t, "app"));
    let hc = &d["HostConfig"];
    assert_eq!(hc["CpuShares"], 256);
    assert_eq!(hc["Memory"], 96 * 1024 * 1024);
    assert_eq!(hc["MemoryReservation"], 64 * 1024 * 1024);
    assert_eq!(hc["ReadonlyRootfs"], true);
    assert_eq!(hc["Ulimits"][0]["Name"], "nofile");
    assert_eq!(hc["Ulimits"][0]["Hard"], 2048);
    assert_eq!(d["Config"]["WorkingDir"], "/tmp");
    assert_eq!(d["Config"]["User"], "1000");
    let env: Vec<&str> = d["Config"]["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    assert!(
        env.contains(&"GREETING=hello") && env.contains(&"EXTRA=1"),
        "{env:?}"
    );
    let labels = &d["Config"]["Labels"];
    assert_eq!(labels["com.amazonaws.ecs.task-arn"], task.as_str());
    assert_eq!(labels["com.amazonaws.ecs.cluster"], "default");
    assert_eq!(labels["com.amazonaws.ecs.container-name"], "app");
    assert_eq!(labels["com.amazonaws.ecs.task-definition-family"], "limits");
    assert_eq!(labels["com.amazonaws.ecs.task-definition-version"], "1");
    assert_eq!(labels["team"], "berth");

    // The instance shows what the task holds.
    let ci = f
        .server
        .ok(
            "DescribeContainerInstances",
            json!({"cluster": "default", "containerInstances": [f.instance]}),
        )
        .await;
    let ci = &ci["containerInstances"][0];
    assert_eq!(ci["agentConnected"], true);
    assert_eq!(ci["runningTasksCount"], 1);
    let remaining = |ci: &Value, name: &str| {
        ci["remainingResources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .unwrap()["integerValue"]
            .as_i64()
            .unwrap()
    };
    assert_eq!(remaining(ci, "CPU"), 2048 - 256);
    assert_eq!(
        remaining(ci, "MEMORY"),
        2048 - 64,
        "the soft limit is what is reserved"
    );

    let listed = f
        .server
        .ok(
            "ListTasks",
            json!({"cluster": "default", "startedBy": "tester"}),
        )
        .await;
    assert_eq!(listed["taskArns"], json!([task]));

    f.server
        .ok(
            "StopTask",
            json!({"cluster": "default", "task": task, "reason": "done testing"}),
        )
        .await;
    let t = f.wait_status(&task, "STOPPED").await;
    assert_eq!(t["desiredStatus"], "STOPPED");
    assert_eq!(t["stopCode"], "UserInitiated");
    assert_eq!(t["stoppedReason"], "done testing");
    for stamp in ["stoppingAt", "executionStoppedAt", "stoppedAt"] {
        assert!(
            t[stamp].is_number(),
            "{stamp} missing on a STOPPED task: {t:#}"
        );
    }
    // sleep as PID 1 ignores SIGTERM, so the stop ended in SIGKILL: 137.
    assert_eq!(container(&t, "app")["exitCode"], 137);
    let ci = f
        .server
        .ok(
            "DescribeContainerInstances",
            json!({"cluster": "default", "containerInstances": [f.instance]}),
        )
        .await;
    assert_eq!(
        remaining(&ci["containerInstances"][0], "MEMORY"),
        2048,
        "resources come back"
    );
    f.finish().await;
}

async fn http_get(port: u16) -> Result<String, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
        .await
        .map_err(|_| "timeout".to_string())?
        .map_err(|e| e.to_string())?;
    Ok(String::from_utf8_lossy(&buf).to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_tasks_with_dynamic_ports_both_answer_http() {
    let Some(f) = Fixture::start().await else {
        return;
    };
    let td = f
        .register(json!({
            "family": "web",
            "containerDefinitions": [{
                "name": "httpd", "image": BUSYBOX, "memory": 32,
                "command": ["sh", "-c", "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 80 -h /www"],
                "portMappings": [{"containerPort": 80, "hostPort": 0}]
            }]
        }))
        .await;
    let v = f.run(&td, json!({"count": 2})).await;
    assert_eq!(v["tasks"].as_array().unwrap().len(), 2, "{v:#}");
    let mut ports = Vec::new();
    for t in v["tasks"].as_array().unwrap() {
        let arn = t["taskArn"].as_str().unwrap();
        let t = f.wait_status(arn, "RUNNING").await;
        let b = &container(&t, "httpd")["networkBindings"];
        let port = b
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["containerPort"] == 80 && b["bindIP"] == "0.0.0.0")
            .unwrap_or_else(|| panic!("no IPv4 binding for port 80: {b:#}"))["hostPort"]
            .as_u64()
            .unwrap() as u16;
        assert!(
            port >= 1024,
            "a dynamic port from the ephemeral range, got {port}"
        );
        ports.push(port);
    }
    assert_ne!(ports[0], ports[1], "each task gets its own host port");
    for port in ports {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match http_get(port).await {
                Ok(body) if body.starts_with("HTTP/1.") && body.contains("200") => break,
                other if Instant::now() > deadline => {
                    panic!("port {port} did not answer HTTP: {other:?}")
                }
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }
    f.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_essential_exit_stops_the_task_a_non_essential_one_does_not() {
    let Some(f) = Fixture::start().await else {
        return;
    };
    let td = f
        .register(json!({
            "family": "exits",
            "containerDefinitions": [
                {"name": "main", "image": BUSYBOX, "memory": 32, "command": ["sh", "-c", "sleep 3; exit 3"]},
                {"name": "side", "image": BUSYBOX, "memory": 32, "essential": false, "command": ["sh", "-c", "exit 5"]}
            ]
        }))
        .await;
    let task = f.run_one(&td).await;
    // The side container exits at once; the task still reaches RUNNING and stays there.
    let t = f
        .wait(&task, 30, "side exited while main runs", |t| {
            container(t, "side")["exitCode"] == 5 && t["lastStatus"] == "RUNNING"
        })
        .await;
    assert_eq!(t["desiredStatus"], "RUNNING");
    let t = f.wait_status(&task, "STOPPED").await;
    assert_eq!(t["stopCode"], "EssentialContainerExited");
    assert_eq!(t["stoppedReason"], "Essential container in task exited");
    assert_eq!(container(&t, "main")["exitCode"], 3);
    assert_eq!(container(&t, "main")["lastStatus"], "STOPPED");
    f.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn depends_on_orders_the_containers() {
    let Some(f) = Fixture::start().await else {
        return;
    };
    let td = f
        .register(json!({
            "family": "ordered",
            "volumes": [{"name": "shared"}],
            "containerDefinitions": [
                {"name": "app", "image": BUSYBOX, "memory": 32,
                 "command": ["sh", "-c", "cat /shared/ready && sleep 600"],
                 "mountPoints": [{"sourceVolume": "shared", "containerPath": "/shared"}],
                 "dependsOn": [{"containerName": "init", "condition": "SUCCESS"},
                               {"containerName": "db", "condition": "HEALTHY"}]},
                {"name": "init", "image": BUSYBOX, "memory": 32, "essential": false,
                 "command": ["sh", "-c", "sleep 1; echo yes > /shared/ready"],
                 "mountPoints": [{"sourceVolume": "shared", "containerPath": "/shared"}]},
                {"name": "db", "image": BUSYBOX, "memory": 32, "command": ["sleep", "600"],
                 "healthCheck": {"command": ["CMD-SHELL", "true"], "interval": 5, "timeout": 2, "retries": 1}}
            ]
        }))
        .await;
    let task = f.run_one(&td).await;
    let t = f.wait_status(&task, "RUNNING").await;
    let started = |name: &str| -> String {
        docker_inspect(&runtime_id(&t, name))["State"]["StartedAt"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let init = docker_inspect(&runtime_id(&t, "init"));
    assert_eq!(init["State"]["ExitCode"], 0);
    let init_finished = init["State"]["FinishedAt"].as_str().unwrap().to_string();
    // RFC 3339 strings of the same zone compare in time order.
    assert!(
        started("app") > init_finished,
        "app started before init finished"
    );
    assert!(started("app") > started("db"), "app started before db");
    assert_eq!(container(&t, "db")["healthStatus"], "HEALTHY");
    assert_eq!(t["healthStatus"], "HEALTHY");
    // app read the file init wrote, so it is still running.
    assert_eq!(container(&t, "app")["lastStatus"], "RUNNING");
    f.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_health_check_makes_the_task_unhealthy() {
    let Some(f) = Fixture::start().await else {
        return;
    };
    let td = f
        .register(json!({
            "family": "sick",
            "containerDefinitions": [{"name": "app", "image": BUSYBOX, "memory": 32,
                "command": ["sleep", "600"],
                "healthCheck": {"command": ["CMD-SHELL", "exit 1"], "interval": 5, "timeout": 2, "retries": 1}}]
        }))
        .await;
    let task = f.run_one(&td).await;
    let t = f
        .wait(&task, 30, "UNHEALTHY", |t| t["healthStatus"] == "UNHEALTHY")
        .await;
    assert_eq!(container(&t, "app")["healthStatus"], "UNHEALTHY");
    f.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_oom_kill_and_a_missing_image_are_reported_as_ecs_does() {
    let Some(f) = Fixture::start().await else {
        return;
    };
    let hog = f
        .register(json!({
            "family": "hog",
            "containerDefinitions": [{"name": "app", "image": BUSYBOX, "memory": 16,
                "command": ["sh", "-c", "x=a; while true; do x=\"$x$x\"; done"]}]
        }))
        .await;
    let missing = f
        .register(json!({
            "family": "ghost",
            "containerDefinitions": [{"name": "app", "image": "berth-test/no-such-image:1", "memory": 16}]
        }))
        .await;
    let t1 = f.run_one(&hog).await;
    let t2 = f.run_one(&missing).await;
    let t = f.wait_status(&t1, "STOPPED").await;
    assert_eq!(t["stopCode"], "EssentialContainerExited");
    assert_eq!(
        container(&t, "app")["reason"],
        "OutOfMemoryError: Container killed due to memory usage"
    );
    assert_eq!(container(&t, "app")["exitCode"], 137);
    let t = f.wait_status(&t2, "STOPPED").await;
    assert_eq!(t["stopCode"], "TaskFailedToStart");
    let reason = container(&t, "app")["reason"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        reason.starts_with("CannotPullContainerError:") && reason.contains("no-such-image"),
        "{reason}"
    );
    assert!(t["stoppedReason"]
        .as_str()
        .unwrap()
        .starts_with("CannotPullContainerError"));
    f.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stop_task_honours_stop_timeout_for_a_container_that_ignores_sigterm() {
    let Some(f) = Fixture::start().await else {
        return;
    };
    let td = f
        .register(json!({
            "family": "stubborn",
            "containerDefinitions": [{"name": "app", "image": BUSYBOX, "memory": 32,
                "command": ["sh", "-c", "trap '' TERM; while true; do sleep 1; done"],
                "stopTimeout": 4}]
        }))
        .await;
    let task = f.run_one(&td).await;
    f.wait_status(&task, "RUNNING").await;
    let asked = Instant::now();
    f.server
        .ok("StopTask", json!({"cluster": "default", "task": task}))
        .await;
    let t = f.wait_status(&task, "STOPPED").await;
    let took = asked.elapsed();
    assert!(
        took >= Duration::from_secs(4) && took < Duration::from_secs(20),
        "SIGTERM, 4 s, SIGKILL: took {took:?}"
    );
    assert_eq!(container(&t, "app")["exitCode"], 137);
    f.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn run_task_beyond_capacity_reports_failures() {
    let Some(f) = Fixture::start_with(|c| c.memory = Some(300)).await else {
        return;
    };
    let td = f
        .register(json!({
            "family": "big",
            "containerDefinitions": [{"name": "app", "image": BUSYBOX, "memory": 128,
                "command": ["sleep", "600"],
                "portMappings": [{"containerPort": 80, "hostPort": 18080}]}]
        }))
        .await;
    let v = f.run(&td, json!({"count": 3})).await;
    assert_eq!(v["tasks"].as_array().unwrap().len(), 1, "{v:#}");
    assert_eq!(v["failures"][0]["reason"], "RESOURCE:PORTS");
    assert_eq!(v["failures"][0]["arn"], f.instance.as_str());
    let td2 = f
        .register(json!({
            "family": "big2",
            "containerDefinitions": [{"name": "app", "image": BUSYBOX, "memory": 128, "command": ["sleep", "600"]}]
        }))
        .await;
    let v = f.run(&td2, json!({"count": 3})).await;
    assert_eq!(
        v["tasks"].as_array().unwrap().len(),
        1,
        "300 MiB - 128 leaves room for one: {v:#}"
    );
    assert_eq!(v["failures"][0]["reason"], "RESOURCE:MEMORY");
    f.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_agent_comes_back_and_adopts_its_containers() {
    let Some(f) = Fixture::start().await else {
        return;
    };
    let td = f
        .register(json!({
            "family": "survivor",
            "containerDefinitions": [{"name": "app", "image": BUSYBOX, "memory": 32, "command": ["sleep", "600"]}]
        }))
        .await;
    let task = f.run_one(&td).await;
    let t = f.wait_status(&task, "RUNNING").await;
    let id = runtime_id(&t, "app");
    let started_at = docker_inspect(&id)["State"]["StartedAt"].clone();

    let Fixture {
        server,
        agent,
        instance,
        _agent_dir,
    } = f;
    let cfg = TestAgent::config(&server, &agent.data_dir);
    agent.abort();
    // While the agent is away the container keeps running.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(docker_inspect(&id)["State"]["Running"], true);
    // Work queued while it is away is done when it is back.
    let second = {
        let v = server
            .ok(
                "RunTask",
                json!({"cluster": "default", "taskDefinition": td}),
            )
            .await;
        v["tasks"][0]["taskArn"].as_str().unwrap().to_string()
    };

    let agent = TestAgent::start(&server, cfg).await;
    let f = Fixture {
        server,
        agent,
        instance,
        _agent_dir,
    };
    f.wait_status(&second, "RUNNING").await;
    let t = f.wait_status(&task, "RUNNING").await;
    assert_eq!(runtime_id(&t, "app"), id, "the same container, adopted");
    assert_eq!(
        docker_inspect(&id)["State"]["StartedAt"],
        started_at,
        "not restarted"
    );
    let out = std::process::Command::new("docker")
        .args([
            "ps",
            "-q",
            "--filter",
            &format!("label=com.amazonaws.ecs.task-arn={task}"),
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .count(),
        1,
        "no duplicate container"
    );
    let ci = f
        .server
        .ok("ListContainerInstances", json!({"cluster": "default"}))
        .await;
    assert_eq!(
        ci["containerInstanceArns"],
        json!([f.instance]),
        "the same instance, not a new one"
    );
    f.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_server_restart_loses_nothing_and_the_agent_reconnects() {
    let Some(f) = Fixture::start().await else {
        return;
    };
    let td = f
        .register(json!({
            "family": "durable",
            "containerDefinitions": [{"name": "app", "image": BUSYBOX, "memory": 32, "command": ["sleep", "600"], "stopTimeout": 2}]
        }))
        .await;
    let task = f.run_one(&td).await;
    f.wait_status(&task, "RUNNING").await;
    let Fixture {
        server,
        agent,
        instance,
        _agent_dir,
    } = f;
    let server = server.restart().await;
    let f = Fixture {
        server,
        agent,
        instance,
        _agent_dir,
    };
    let t = f.wait_status(&task, "RUNNING").await;
    assert_eq!(t["containerInstanceArn"], f.instance.as_str());
    // The agent is back on the new server: a stop goes through.
    f.server
        .ok("StopTask", json!({"cluster": "default", "task": task}))
        .await;
    f.wait_status(&task, "STOPPED").await;
    f.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_agent_cut_off_from_the_server_reports_what_happened_once_it_is_back() {
    let Some(f) = Fixture::start().await else {
        return;
    };
    let td = f
        .register(json!({
            "family": "brief",
            "containerDefinitions": [{"name": "app", "image": BUSYBOX, "memory": 16,
                "command": ["sh", "-c", "sleep 3; exit 7"]}]
        }))
        .await;
    let task = f.run_one(&td).await;
    let t = f.wait_status(&task, "RUNNING").await;
    let id = runtime_id(&t, "app");
    let Fixture {
        server,
        agent,
        instance,
        _agent_dir,
    } = f;
    // The server goes away; the container exits while nobody can be told.
    let (dir, addr) = server.shutdown().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while docker_inspect(&id)["State"]["Running"] == true {
        assert!(Instant::now() < deadline, "the container did not exit");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Let the agent try (and fail) to report a few times.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let server = TestServer::start_in(dir, Some(addr), false, Default::default()).await;
    let f = Fixture {
        server,
        agent,
        instance,
        _agent_dir,
    };
    let t = f.wait_status(&task, "STOPPED").await;
    assert_eq!(container(&t, "app")["exitCode"], 7);
    assert_eq!(t["stopCode"], "EssentialContainerExited");
    f.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stopped_containers_are_removed_after_the_delay_and_stopped_tasks_purged_after_retention() {
    let Some(f) = Fixture::start_with(|c| c.cleanup_after = Duration::from_secs(1)).await else {
        return;
    };
    let td = f
        .register(json!({
            "family": "short",
            "containerDefinitions": [{"name": "app", "image": BUSYBOX, "memory": 16, "command": ["true"]}]
        }))
        .await;
    let task = f.run_one(&td).await;
    let t = f.wait_status(&task, "STOPPED").await;
    let id = runtime_id(&t, "app");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let out = std::process::Command::new("docker")
            .args(["inspect", &id])
            .output()
            .unwrap();
        if !out.status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the stopped container was not removed after 1 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Still describable within the retention ...
    let kept = f
        .server
        .control
        .purge_stopped_tasks(Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!(kept, 0);
    f.wait_status(&task, "STOPPED").await;
    // ... and gone after it.
    let purged = f
        .server
        .control
        .purge_stopped_tasks(Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(purged, 1);
    let d = f
        .server
        .ok(
            "DescribeTasks",
            json!({"cluster": "default", "tasks": [task]}),
        )
        .await;
    assert_eq!(d["failures"][0]["reason"], "MISSING");
    f.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn start_task_host_and_none_networks_and_host_volumes() {
    let Some(f) = Fixture::start().await else {
        return;
    };
    let host_dir = tempfile::tempdir().unwrap();
    std::fs::write(host_dir.path().join("greeting"), "from the host").unwrap();
    let td = f
        .register(json!({
            "family": "hostnet",
            "networkMode": "host",
            "volumes": [{"name": "h", "host": {"sourcePath": host_dir.path()}}],
            "containerDefinitions": [{"name": "app", "image": BUSYBOX, "memory": 16,
                "command": ["sh", "-c", "grep -q 'from the host' /h/greeting && sleep 600"],
                "mountPoints": [{"sourceVolume": "h", "containerPath": "/h", "readOnly": true}],
                "portMappings": [{"containerPort": 18181}]}]
        }))
        .await;
    let v = f
        .server
        .ok(
            "StartTask",
            json!({"cluster": "default", "taskDefinition": td, "containerInstances": [f.instance]}),
        )
        .await;
    assert_eq!(v["failures"], json!([]), "{v:#}");
    let task = v["tasks"][0]["taskArn"].as_str().unwrap().to_string();
    let t = f.wait_status(&task, "RUNNING").await;
    let d = docker_inspect(&runtime_id(&t, "app"));
    assert_eq!(d["HostConfig"]["NetworkMode"], "host");
    assert_eq!(d["Mounts"][0]["Source"], host_dir.path().to_str().unwrap());
    assert_eq!(d["Mounts"][0]["RW"], false);
    // Host mode reserves the container port on the instance: a second copy does not fit.
    let again = f
        .server
        .ok(
            "StartTask",
            json!({"cluster": "default", "taskDefinition": td, "containerInstances": [f.instance, "0000ffff"]}),
        )
        .await;
    assert_eq!(again["tasks"], json!([]));
    let reasons: Vec<&str> = again["failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["reason"].as_str().unwrap())
        .collect();
    assert_eq!(reasons, ["MISSING", "RESOURCE:PORTS"]);

    let none = f
        .register(json!({
            "family": "nonet",
            "networkMode": "none",
            "containerDefinitions": [{"name": "app", "image": BUSYBOX, "memory": 16, "command": ["sleep", "600"]}]
        }))
        .await;
    let t2 = f.run_one(&none).await;
    let t = f.wait_status(&t2, "RUNNING").await;
    assert_eq!(
        docker_inspect(&runtime_id(&t, "app"))["HostConfig"]["NetworkMode"],
        "none"
    );
    f.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stop_tasks_on_exit_stops_and_reports_before_the_agent_leaves() {
    let Some(f) = Fixture::start_with(|c| c.stop_tasks_on_exit = true).await else {
        return;
    };
    let td = f
        .register(json!({
            "family": "leaver",
            "containerDefinitions": [{"name": "app", "image": BUSYBOX, "memory": 16,
                "command": ["sleep", "600"], "stopTimeout": 1}]
        }))
        .await;
    let task = f.run_one(&td).await;
    let t = f.wait_status(&task, "RUNNING").await;
    let id = runtime_id(&t, "app");
    let Fixture {
        server,
        agent,
        instance,
        _agent_dir,
    } = f;
    agent.stop().await;
    // Once the agent has returned, the server already knows.
    let d = server
        .ok(
            "DescribeTasks",
            json!({"cluster": "default", "tasks": [task]}),
        )
        .await;
    let t = &d["tasks"][0];
    assert_eq!(t["lastStatus"], "STOPPED", "{t:#}");
    assert_eq!(t["stopCode"], "TerminationNotice");
    assert_eq!(docker_inspect(&id)["State"]["Running"], false);
    docker_cleanup(&instance);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_service_replaces_a_killed_container_and_the_cli_waiter_sees_it_stable() {
    let Some(f) = Fixture::start().await else {
        return;
    };
    f.server.spawn_service_loop();
    f.register(json!({
        "family": "svc",
        "containerDefinitions": [{"name": "app", "image": BUSYBOX, "memory": 16,
            "command": ["sleep", "600"], "stopTimeout": 1}]
    }))
    .await;
    f.server
        .ok(
            "CreateService",
            json!({"cluster": "default", "serviceName": "svc", "taskDefinition": "svc", "desiredCount": 2}),
        )
        .await;
    stable(&f.server).await;
    let arns = f
        .server
        .ok(
            "ListTasks",
            json!({"cluster": "default", "serviceName": "svc"}),
        )
        .await["taskArns"]
        .clone();
    let victim = arns[0].as_str().unwrap().to_string();
    let t = f.wait_status(&victim, "RUNNING").await;
    let out = std::process::Command::new("docker")
        .args(["kill", &runtime_id(&t, "app")])
        .output()
        .unwrap();
    assert!(out.status.success());
    f.wait_status(&victim, "STOPPED").await;
    // A replacement, not the old task, brings it back to two.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = f
            .server
            .ok(
                "ListTasks",
                json!({"cluster": "default", "serviceName": "svc"}),
            )
            .await["taskArns"]
            .clone();
        let list = now.as_array().unwrap();
        if list.len() == 2 && !list.contains(&json!(victim)) {
            break;
        }
        assert!(Instant::now() < deadline, "no replacement: {now}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let svc = stable(&f.server).await;
    let messages: Vec<&str> = svc["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["message"].as_str().unwrap())
        .collect();
    assert!(
        messages
            .iter()
            .filter(|m| m.contains("has started 1 tasks"))
            .count()
            >= 1,
        "{messages:#?}"
    );
    // The AWS CLI's own waiter agrees (when the CLI is there).
    if let Ok(cli) = std::env::var("BERTH_AWS_CLI") {
        let out = common::aws_command(&cli, &f.server, &f.server.secret_key)
            .args([
                "ecs",
                "wait",
                "services-stable",
                "--cluster",
                "default",
                "--services",
                "svc",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "aws ecs wait services-stable: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    f.server
        .ok(
            "DeleteService",
            json!({"cluster": "default", "service": "svc", "force": true}),
        )
        .await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let v = f
            .server
            .ok(
                "DescribeServices",
                json!({"cluster": "default", "services": ["svc"]}),
            )
            .await;
        if v["services"][0]["status"] == "INACTIVE" {
            break;
        }
        assert!(Instant::now() < deadline, "service not INACTIVE: {v:#}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    f.finish().await;
}

/// Waits until the service `svc` runs its two tasks under a single deployment.
async fn stable(s: &TestServer) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let v = s
            .ok(
                "DescribeServices",
                json!({"cluster": "default", "services": ["svc"]}),
            )
            .await;
        let svc = &v["services"][0];
        if svc["runningCount"] == 2 && svc["deployments"].as_array().unwrap().len() == 1 {
            return svc.clone();
        }
        assert!(Instant::now() < deadline, "service not stable: {svc:#}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `docker logs` of a container, until it holds `n` lines (or 30 s pass).
fn docker_logs(id: &str, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = std::process::Command::new("docker")
            .args(["logs", id])
            .output()
            .unwrap();
        let lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect();
        if lines.len() >= n || Instant::now() > deadline {
            eprintln!("stderr of {id}: {}", String::from_utf8_lossy(&out.stderr));
            return lines;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn containers_read_the_task_metadata_endpoint_v4() {
    let Some(f) = Fixture::start().await else {
        return;
    };
    let td = f
        .register(json!({
            "family": "meta",
            "containerDefinitions": [{
                "name": "app", "image": BUSYBOX, "memory": 32, "cpu": 128,
                "portMappings": [{"containerPort": 8080}],
                "command": ["sh", "-c", "wget -qO- $ECS_CONTAINER_METADATA_URI_V4/task; echo; wget -qO- $ECS_CONTAINER_METADATA_URI_V4; echo; wget -qO- $ECS_CONTAINER_METADATA_URI_V4/stats; echo; sleep 600"],
            }],
        }))
        .await;
    let arn = f.run_one(&td).await;
    let t = f
        .wait(&arn, 60, "RUNNING", |t| t["lastStatus"] == "RUNNING")
        .await;
    let id = runtime_id(&t, "app");
    let lines = docker_logs(&id, 3);
    assert_eq!(
        lines.len(),
        3,
        "three answers from inside the container: {lines:?}"
    );
    let task: Value = serde_json::from_str(&lines[0])
        .unwrap_or_else(|e| panic!("the /task answer is JSON ({e}): {}", lines[0]));
    assert_eq!(task["TaskARN"], arn.as_str());
    assert_eq!(task["Cluster"], "default");
    assert_eq!(task["Family"], "meta");
    assert_eq!(task["Revision"], "1");
    assert_eq!(task["LaunchType"], "EC2");
    assert_eq!(task["Containers"][0]["DockerId"], id.as_str());
    let me: Value = serde_json::from_str(&lines[1]).unwrap();
    assert_eq!(me["Name"], "app");
    assert_eq!(me["Limits"]["CPU"], 128);
    assert_eq!(me["Limits"]["Memory"], 32);
    assert_eq!(me["Networks"][0]["NetworkMode"], "bridge");
    assert!(
        me["Networks"][0]["IPv4Addresses"][0]
            .as_str()
            .is_some_and(|ip| !ip.is_empty()),
        "the container's own address: {me:#}"
    );
    assert_eq!(me["Labels"]["com.amazonaws.ecs.task-arn"], arn.as_str());
    let stats: Value = serde_json::from_str(&lines[2]).unwrap();
    assert!(
        stats["memory_stats"].is_object() && stats["cpu_stats"].is_object(),
        "Docker's stats shape: {stats:#}"
    );
    f.server
        .ok("StopTask", json!({"cluster": "default", "task": &arn}))
        .await;
    f.finish().await;
}

/// The container-definition members that are Docker host options reach Docker, and links,
/// volumesFrom and extraHosts work from inside the container.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn linux_parameters_links_dns_and_the_other_host_options_reach_docker() {
    let Some(f) = Fixture::start().await else {
        return;
    };
    let td = f
        .register(json!({
            "family": "hostopts",
            "pidMode": "host",
            "containerDefinitions": [
                {"name": "db", "image": BUSYBOX, "memory": 32, "essential": false,
                 "command": ["sh", "-c", "mkdir -p /data && echo shared > /data/x; sleep 600"],
                 "stopTimeout": 1},
                {"name": "app", "image": BUSYBOX, "memory": 64, "stopTimeout": 1,
                 "command": ["sleep", "600"],
                 "links": ["db:database"],
                 "volumesFrom": [{"sourceContainer": "db", "readOnly": true}],
                 "extraHosts": [{"hostname": "berth.test", "ipAddress": "10.1.2.3"}],
                 "dnsServers": ["10.0.0.2"],
                 "dnsSearchDomains": ["svc.local"],
                 "linuxParameters": {
                     "capabilities": {"add": ["NET_ADMIN"], "drop": ["MKNOD"]},
                     "initProcessEnabled": true,
                     "sharedMemorySize": 32,
                     "tmpfs": [{"containerPath": "/scratch", "size": 16, "mountOptions": ["noexec"]}],
                     "maxSwap": 0,
                     "swappiness": 10
                 },
                 "dockerSecurityOptions": ["no-new-privileges"],
                 "systemControls": [{"namespace": "net.core.somaxconn", "value": "512"}],
                 "pseudoTerminal": true,
                 "interactive": true},
                {"name": "offline", "image": BUSYBOX, "memory": 16, "essential": false,
                 "command": ["sleep", "600"], "disableNetworking": true, "stopTimeout": 1}
            ],
            "volumes": []
        }))
        .await;
    let task = f.run_one(&td).await;
    let t = f.wait_status(&task, "RUNNING").await;
    let app = docker_inspect(&runtime_id(&t, "app"));
    let db = docker_inspect(&runtime_id(&t, "db"));
    let hc = &app["HostConfig"];
    let db_name = db["Name"]
        .as_str()
        .unwrap()
        .trim_start_matches('/')
        .to_string();
    let links: Vec<&str> = hc["Links"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert!(
        links
            .iter()
            .any(|l| l.starts_with(&format!("/{db_name}:")) && l.ends_with("/database")),
        "links name the task's db container: {links:?}"
    );
    assert_eq!(hc["VolumesFrom"], json!([format!("{db_name}:ro")]));
    assert_eq!(hc["ExtraHosts"], json!(["berth.test:10.1.2.3"]));
    assert_eq!(hc["Dns"], json!(["10.0.0.2"]));
    assert_eq!(hc["DnsSearch"], json!(["svc.local"]));
    assert_eq!(hc["CapAdd"], json!(["NET_ADMIN"]));
    assert_eq!(hc["CapDrop"], json!(["MKNOD"]));
    assert_eq!(hc["Init"], true);
    assert_eq!(hc["ShmSize"], 32 * 1024 * 1024);
    assert_eq!(hc["Tmpfs"], json!({"/scratch": "size=16m,noexec"}));
    assert_eq!(
        hc["MemorySwap"],
        64 * 1024 * 1024,
        "maxSwap 0: memory and no swap"
    );
    assert_eq!(hc["MemorySwappiness"], 10);
    assert!(
        hc["SecurityOpt"]
            .as_array()
            .unwrap()
            .contains(&json!("no-new-privileges")),
        "Docker adds its own (label=disable with pidMode host): {}",
        hc["SecurityOpt"]
    );
    assert_eq!(hc["Sysctls"], json!({"net.core.somaxconn": "512"}));
    assert_eq!(hc["PidMode"], "host");
    assert_eq!(app["Config"]["Tty"], true);
    assert_eq!(app["Config"]["OpenStdin"], true);
    let offline = docker_inspect(&runtime_id(&t, "offline"));
    assert_eq!(offline["Config"]["NetworkDisabled"], true);
    // From inside: the link and the extra host resolve, db's volume is there read-only.
    let exec = |args: &[&str]| {
        let out = std::process::Command::new("docker")
            .arg("exec")
            .arg(runtime_id(&t, "app"))
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let hosts = exec(&["cat", "/etc/hosts"]);
    assert!(
        hosts.contains("database") && hosts.contains("10.1.2.3\tberth.test"),
        "{hosts}"
    );
    let mounts = exec(&["cat", "/proc/mounts"]);
    assert!(mounts.contains("/scratch tmpfs"), "{mounts}");
    f.server
        .ok("StopTask", json!({"cluster": "default", "task": task}))
        .await;
    f.wait_status(&task, "STOPPED").await;
    f.finish().await;
}
