//! The real binary: first-start credentials, graceful SIGTERM, and `kill -9` losing nothing
//! that was acknowledged.
#![allow(clippy::unwrap_used)]

mod common;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use common::ha::call;
use common::process::{spawn, Proc};

fn start(dir: &std::path::Path) -> Proc {
    spawn(&["server", "--listen", "127.0.0.1:0"], dir)
}

#[tokio::test]
async fn kill_dash_nine_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = start(dir.path());
    let creds = std::fs::read_to_string(dir.path().join("credentials")).unwrap();
    assert!(
        creds.starts_with("[berth]\n")
            && creds.contains(&format!("aws_access_key_id = {}", p.ak))
            && creds.contains(&p.sk),
        "{creds}"
    );
    for i in 0..20 {
        let a = call(&p, "RegisterTaskDefinition", common::task_def("durable")).await;
        assert_eq!(a.status, 200);
        assert_eq!(a.body["taskDefinition"]["revision"], i + 1);
    }
    assert_eq!(
        call(&p, "CreateCluster", json!({"clusterName": "kept"}))
            .await
            .status,
        200
    );
    p.child.kill().unwrap(); // SIGKILL
    p.child.wait().unwrap();

    let mut p2 = start(dir.path());
    assert_eq!(
        (p2.ak.as_str(), p2.sk.as_str()),
        (p.ak.as_str(), p.sk.as_str()),
        "the admin key is kept across restarts"
    );
    let d = call(
        &p2,
        "DescribeTaskDefinition",
        json!({"taskDefinition": "durable"}),
    )
    .await;
    assert_eq!(d.body["taskDefinition"]["revision"], 20, "{}", d.body);
    let c = call(&p2, "DescribeClusters", json!({"clusters": ["kept"]})).await;
    assert_eq!(c.body["clusters"][0]["status"], "ACTIVE");
    assert_eq!(
        call(&p2, "RegisterTaskDefinition", common::task_def("durable"))
            .await
            .body["taskDefinition"]["revision"],
        21
    );

    // SIGTERM stops it cleanly.
    Command::new("kill")
        .args(["-TERM", &p2.child.id().to_string()])
        .status()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(status) = p2.child.try_wait().unwrap() {
            assert!(status.success(), "graceful shutdown exits 0, got {status}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "server did not stop within 15 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Concurrent writers share group commits: `kill -9` while 32 of them write, and every write
/// the server acknowledged is there after the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_dash_nine_during_group_commits_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = start(dir.path());
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..32 {
        let (endpoint, ak, sk) = (p.endpoint.clone(), p.ak.clone(), p.sk.clone());
        let (acked, stop) = (acked.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            for i in 0..10_000 {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    return;
                }
                let name = format!("c-{w}-{i}");
                let body = json!({"clusterName": name}).to_string();
                let a = common::signed_call(
                    &endpoint,
                    "CreateCluster",
                    &body,
                    &ak,
                    &sk,
                    SystemTime::now(),
                )
                .await;
                if a.status != 200 {
                    return; // the server is gone
                }
                acked.lock().unwrap().push(name);
            }
        }));
    }
    // Let the writers get going, then kill the server under them.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while acked.lock().unwrap().len() < 300 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    p.child.kill().unwrap(); // SIGKILL, writes in flight
    p.child.wait().unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in writers {
        let _ = tokio::time::timeout(Duration::from_secs(30), w).await;
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 300,
        "only {} writes acknowledged",
        acked.len()
    );

    let mut p2 = start(dir.path());
    for chunk in acked.chunks(100) {
        let d = call(&p2, "DescribeClusters", json!({"clusters": chunk})).await;
        assert_eq!(d.status, 200, "{}", d.body);
        let found = d.body["clusters"].as_array().unwrap().len();
        assert_eq!(
            found,
            chunk.len(),
            "acknowledged clusters lost after kill -9: {}",
            d.body["failures"]
        );
    }
    p2.child.kill().unwrap();
    p2.child.wait().unwrap();
}

/// `berth up` (server and agent in one process) killed with `kill -9` mid-flight: after a
/// restart the task is still RUNNING in the same container, nothing is duplicated, and a stop
/// still works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn berth_up_killed_with_dash_nine_adopts_its_tasks_on_restart() {
    if !common::docker_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let up = |dir: &std::path::Path| spawn(&["up", "--listen", &listen], dir);
    let wait_status = |p: &Proc, arn: &str, want: &'static str| {
        let (p_endpoint, ak, sk, arn) = (
            p.endpoint.clone(),
            p.ak.clone(),
            p.sk.clone(),
            arn.to_string(),
        );
        async move {
            for _ in 0..300 {
                let a = common::signed_call(
                    &p_endpoint,
                    "DescribeTasks",
                    &json!({"tasks": [arn]}).to_string(),
                    &ak,
                    &sk,
                    SystemTime::now(),
                )
                .await;
                let t = a.body["tasks"][0].clone();
                if t["lastStatus"] == want {
                    return t;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            panic!("task {arn} did not reach {want} within 30 s");
        }
    };

    let mut p = up(dir.path());
    let td = json!({"family": "upkill", "containerDefinitions": [{"name": "app",
        "image": common::BUSYBOX, "memory": 16, "command": ["sleep", "600"], "stopTimeout": 1}]});
    assert_eq!(call(&p, "RegisterTaskDefinition", td).await.status, 200);
    // The agent joins right after the server starts; RunTask may race it.
    let mut arn = String::new();
    for _ in 0..100 {
        let r = call(&p, "RunTask", json!({"taskDefinition": "upkill"})).await;
        if let Some(a) = r.body["tasks"][0]["taskArn"].as_str() {
            arn = a.to_string();
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        !arn.is_empty(),
        "RunTask placed the task once the agent joined"
    );
    let t = wait_status(&p, &arn, "RUNNING").await;
    let id = t["containers"][0]["runtimeId"]
        .as_str()
        .unwrap()
        .to_string();
    let instance = t["containerInstanceArn"].as_str().unwrap().to_string();

    p.child.kill().unwrap();
    p.child.wait().unwrap();
    let out = Command::new("docker")
        .args([
            "inspect",
            "-f",
            "{{.State.Running}} {{.State.StartedAt}}",
            &id,
        ])
        .output()
        .unwrap();
    let before = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        before.starts_with("true"),
        "the container outlives a killed berth: {before}"
    );

    let mut p = up(dir.path());
    let t = wait_status(&p, &arn, "RUNNING").await;
    assert_eq!(
        t["containers"][0]["runtimeId"],
        id.as_str(),
        "adopted, not recreated"
    );
    assert_eq!(
        t["containerInstanceArn"],
        instance.as_str(),
        "the same instance"
    );
    // Give the agent a moment to (wrongly) start a duplicate, then look.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = Command::new("docker")
        .args([
            "inspect",
            "-f",
            "{{.State.Running}} {{.State.StartedAt}}",
            &id,
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&after.stdout).trim(),
        before,
        "not restarted"
    );
    let ps = Command::new("docker")
        .args([
            "ps",
            "-q",
            "--filter",
            &format!("label=com.amazonaws.ecs.task-arn={arn}"),
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&ps.stdout)
            .split_whitespace()
            .count(),
        1,
        "no duplicate"
    );
    let listed = call(&p, "ListContainerInstances", json!({})).await;
    assert_eq!(listed.body["containerInstanceArns"], json!([instance]));

    assert_eq!(call(&p, "StopTask", json!({"task": arn})).await.status, 200);
    wait_status(&p, &arn, "STOPPED").await;
    let _ = Command::new("kill")
        .args(["-TERM", &p.child.id().to_string()])
        .status();
    let status = p.child.wait().unwrap();
    assert!(status.success(), "berth up exits 0 on SIGTERM: {status}");
    common::docker_cleanup(&instance);
}

/// The multi-host path with the real binaries: `berth server`, `berth join-token`, and a
/// separate `berth agent` process that joins, runs a task, and comes back after `kill -9`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_separate_berth_agent_joins_with_its_clusters_token() {
    if !common::docker_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let agent_dir = tempfile::tempdir().unwrap();
    let mut p = start(dir.path());
    assert_eq!(
        call(&p, "CreateCluster", json!({"clusterName": "farm"}))
            .await
            .status,
        200
    );
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["join-token", "--server", &p.endpoint, "--cluster", "farm"])
        .env("AWS_ACCESS_KEY_ID", &p.ak)
        .env("AWS_SECRET_ACCESS_KEY", &p.sk)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(token.starts_with("bjt-"), "{token}");

    let agent = |token: Option<&str>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_berth"));
        cmd.args([
            "agent",
            "--server",
            &p.endpoint,
            "--cluster",
            "farm",
            "--data-dir",
        ])
        .arg(agent_dir.path())
        .args(["--attribute", "stack=blue", "--availability-zone", "zone-q"])
        .env("BERTH_LOG", "warn");
        if let Some(t) = token {
            cmd.args(["--token", t]);
        }
        cmd.spawn().unwrap()
    };
    // A wrong token is refused and the agent says why.
    let bad = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args([
            "agent",
            "--server",
            &p.endpoint,
            "--cluster",
            "farm",
            "--token",
            "bjt-nope",
            "--data-dir",
        ])
        .arg(tempfile::tempdir().unwrap().path())
        .env("BERTH_LOG", "error")
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("not valid for cluster farm"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );

    let mut a = agent(Some(&token));
    let mut instance = String::new();
    for _ in 0..100 {
        let l = call(&p, "ListContainerInstances", json!({"cluster": "farm", "filter": "attribute:stack == blue and attribute:ecs.availability-zone == zone-q"})).await;
        if let Some(arn) = l.body["containerInstanceArns"][0].as_str() {
            instance = arn.to_string();
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        !instance.is_empty(),
        "the agent registered with its attributes"
    );
    let td = json!({"family": "farmer", "containerDefinitions": [{"name": "app",
        "image": common::BUSYBOX, "memory": 16, "command": ["sleep", "600"], "stopTimeout": 1}]});
    assert_eq!(call(&p, "RegisterTaskDefinition", td).await.status, 200);
    let r = call(
        &p,
        "RunTask",
        json!({"cluster": "farm", "taskDefinition": "farmer"}),
    )
    .await;
    let arn = r.body["tasks"][0]["taskArn"].as_str().unwrap().to_string();
    let running = |p_endpoint: String, ak: String, sk: String, arn: String| async move {
        for _ in 0..300 {
            let a = common::signed_call(
                &p_endpoint,
                "DescribeTasks",
                &json!({"cluster": "farm", "tasks": [arn]}).to_string(),
                &ak,
                &sk,
                SystemTime::now(),
            )
            .await;
            if a.body["tasks"][0]["lastStatus"] == "RUNNING" {
                return a.body["tasks"][0].clone();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("task {arn} not RUNNING");
    };
    running(p.endpoint.clone(), p.ak.clone(), p.sk.clone(), arn.clone()).await;

    // kill -9 the agent; it comes back without the token (its key is in its data dir).
    a.kill().unwrap();
    a.wait().unwrap();
    let mut a = agent(None);
    let t = running(p.endpoint.clone(), p.ak.clone(), p.sk.clone(), arn.clone()).await;
    assert_eq!(t["containerInstanceArn"], instance.as_str());
    let l = call(&p, "ListContainerInstances", json!({"cluster": "farm"})).await;
    assert_eq!(l.body["containerInstanceArns"], json!([instance]));

    a.kill().unwrap();
    a.wait().unwrap();
    p.child.kill().unwrap();
    p.child.wait().unwrap();
    common::docker_cleanup(&instance);
}

/// `kill -9` between the chunks of an upload, and in the middle of one: the upload resumes
/// from what the registry acknowledged, and no half-written blob is ever visible.
#[tokio::test]
async fn kill_dash_nine_mid_upload_leaves_no_visible_blob_and_the_upload_resumes() {
    use sha2::Digest as _;
    let dir = tempfile::tempdir().unwrap();
    let mut p = start(dir.path());
    let a = common::signed_ecr_call(
        &p.endpoint,
        "CreateRepository",
        &json!({"repositoryName": "crash"}),
        &p.ak,
        &p.sk,
    )
    .await;
    assert_eq!(a.status, 200, "{:?}", a.body);

    let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 253) as u8).collect();
    let digest = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&data)));
    let reg = common::Reg::basic(&p.registry, &p.ak, &p.sk);
    let r = reg.req("POST", "/v2/crash/blobs/uploads/", &[], b"").await;
    assert_eq!(r.status, 202);
    let loc = r.header("location");
    let r = reg
        .req(
            "PATCH",
            &loc,
            &[("content-range", "0-399999")],
            &data[..400_000],
        )
        .await;
    assert_eq!((r.status, r.header("range").as_str()), (202, "0-399999"));

    // A second upload dies with the server in the middle of its body.
    let other: Vec<u8> = vec![9u8; 2_000_000];
    let other_digest = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&other)));
    {
        use tokio::io::AsyncWriteExt;
        let mut tcp = tokio::net::TcpStream::connect(&p.registry).await.unwrap();
        let head = format!(
            "POST /v2/crash/blobs/uploads/?digest={other_digest} HTTP/1.1\r\nhost: x\r\nauthorization: {}\r\ncontent-length: 2000000\r\n\r\n",
            reg.auth.as_ref().unwrap()
        );
        tcp.write_all(head.as_bytes()).await.unwrap();
        tcp.write_all(&other[..1_000_000]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        p.child.kill().unwrap(); // SIGKILL, with the body half sent
        p.child.wait().unwrap();
    }

    let p = start(dir.path());
    let reg = common::Reg::basic(&p.registry, &p.ak, &p.sk);
    for d in [&digest, &other_digest] {
        let r = reg
            .req("HEAD", &format!("/v2/crash/blobs/{d}"), &[], b"")
            .await;
        assert_eq!(r.status, 404, "{d} must not be visible");
    }
    let blobs = dir.path().join("registry/blobs/sha256");
    let files = walk(&blobs);
    assert!(files.is_empty(), "no blob file after the crash: {files:?}");
    // The first upload picks up where the registry said it was.
    let r = reg.req("GET", &loc, &[], b"").await;
    assert_eq!((r.status, r.header("range").as_str()), (204, "0-399999"));
    let r = reg
        .req(
            "PUT",
            &format!("{loc}?digest={digest}"),
            &[("content-range", "400000-999999")],
            &data[400_000..],
        )
        .await;
    assert_eq!(r.status, 201);
    let r = reg
        .req("GET", &format!("/v2/crash/blobs/{digest}"), &[], b"")
        .await;
    assert_eq!(r.status, 200);
    assert!(r.body[..] == data[..], "the resumed blob is the data sent");
    let mut p = p;
    p.child.kill().unwrap();
    p.child.wait().unwrap();
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let path = e.path();
            if path.is_dir() {
                out.extend(walk(&path));
            } else {
                out.push(path);
            }
        }
    }
    out
}

/// Log batches from 8 writers: `kill -9` while they write, and after the restart every
/// acknowledged batch is there, whole, once; no batch is there in part.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_dash_nine_keeps_every_acknowledged_log_batch_whole() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = start(dir.path());
    let logs = |p: &Proc, op: &'static str, body: Value| {
        let (e, ak, sk) = (p.endpoint.clone(), p.ak.clone(), p.sk.clone());
        async move { common::logs_call_to(&e, &ak, &sk, op, &body).await }
    };
    assert_eq!(
        logs(&p, "CreateLogGroup", json!({"logGroupName": "g"}))
            .await
            .status,
        200
    );
    for w in 0..8 {
        let a = logs(
            &p,
            "CreateLogStream",
            json!({"logGroupName": "g", "logStreamName": format!("w{w}")}),
        )
        .await;
        assert_eq!(a.status, 200, "{}", a.body);
    }
    let now = SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let acked = std::sync::Arc::new(std::sync::Mutex::new(vec![0usize; 8]));
    let mut writers = Vec::new();
    for w in 0..8usize {
        let (endpoint, ak, sk) = (p.endpoint.clone(), p.ak.clone(), p.sk.clone());
        let acked = acked.clone();
        writers.push(tokio::spawn(async move {
            for b in 0..100_000usize {
                let events: Vec<Value> = (0..100)
                    .map(|i| json!({"timestamp": now + (b * 100 + i) as i64, "message": format!("w{w} b{b} e{i}")}))
                    .collect();
                let body = json!({"logGroupName": "g", "logStreamName": format!("w{w}"), "logEvents": events});
                let a = common::logs_call_to(&endpoint, &ak, &sk, "PutLogEvents", &body).await;
                if a.status != 200 {
                    return; // the server is gone
                }
                acked.lock().unwrap()[w] = b + 1;
            }
        }));
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while acked.lock().unwrap().iter().sum::<usize>() < 200 && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    p.child.kill().unwrap(); // SIGKILL, batches in flight
    p.child.wait().unwrap();
    for w in writers {
        let _ = tokio::time::timeout(Duration::from_secs(30), w).await;
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.iter().sum::<usize>() >= 200,
        "only {acked:?} batches acknowledged"
    );

    let mut p2 = start(dir.path());
    for (w, &n) in acked.iter().enumerate() {
        let mut messages = Vec::new();
        let mut token: Option<String> = None;
        for _ in 0..1000 {
            let mut body = json!({"logGroupName": "g", "logStreamName": format!("w{w}"), "startFromHead": true});
            if let Some(t) = &token {
                body["nextToken"] = t.clone().into();
            }
            let a = logs(&p2, "GetLogEvents", body).await;
            assert_eq!(a.status, 200, "{}", a.body);
            for e in a.body["events"].as_array().unwrap() {
                messages.push(e["message"].as_str().unwrap().to_string());
            }
            let next = a.body["nextForwardToken"].as_str().map(str::to_string);
            if next == token {
                break;
            }
            token = next;
        }
        assert_eq!(
            messages.len() % 100,
            0,
            "stream w{w} holds a batch in part: {} events",
            messages.len()
        );
        let batches = messages.len() / 100;
        assert!(
            batches >= n,
            "stream w{w}: {n} batches acknowledged, {batches} survived kill -9"
        );
        assert!(
            batches <= n + 1,
            "stream w{w}: at most the one batch in flight more"
        );
        let want: Vec<String> = (0..batches)
            .flat_map(|b| (0..100).map(move |i| format!("w{w} b{b} e{i}")))
            .collect();
        assert_eq!(messages, want, "stream w{w}: in order, each once");
    }
    p2.child.kill().unwrap();
    p2.child.wait().unwrap();
}

/// What `berth --log-format FORMAT server` writes to a redirected stderr while it starts and
/// answers one request.
fn server_log(format: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("stderr");
    let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["--log-format", format, "server", "--listen", "127.0.0.1:0"])
        .args(["--registry-listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .env("BERTH_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut started = false;
    for _ in 0..30 {
        let Some(Ok(line)) = lines.next() else { break };
        if line.starts_with("export AWS_ENDPOINT_URL=") {
            started = true;
            break;
        }
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(&log).unwrap_or_default().is_empty()
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    assert!(started, "berth --log-format {format} server started");
    std::fs::read_to_string(&log).unwrap()
}

#[test]
fn redirected_logs_have_no_colour_and_json_logs_are_one_object_a_line() {
    let text = server_log("text");
    assert!(!text.trim().is_empty(), "the server logged something");
    assert!(
        !text.contains('\u{1b}'),
        "no colour escapes in a redirected log: {text:?}"
    );
    assert!(text.contains(" INFO "), "{text}");

    let json = server_log("json");
    let mut seen = 0;
    for line in json.lines() {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not one JSON object a line ({e}): {line:?}"));
        assert!(v["timestamp"].is_string(), "{line}");
        assert!(v["level"].is_string(), "{line}");
        assert!(v["message"].is_string(), "{line}");
        seen += 1;
    }
    assert!(seen > 0, "the server logged something: {json:?}");
    let bad = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["--log-format", "xml", "server"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("xml"),
        "the refusal names the value"
    );
}
