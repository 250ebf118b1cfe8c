//! The real binary: first-start credentials, graceful SIGTERM, and `kill -9` losing nothing
//! that was acknowledged.
#![allow(clippy::unwrap_used)]

mod common;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime};

struct Proc {
    child: Child,
    endpoint: String,
    ak: String,
    sk: String,
}

fn start(dir: &std::path::Path) -> Proc {
    let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .env("BERTH_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut endpoint, mut ak, mut sk) = (String::new(), String::new(), String::new());
    for _ in 0..20 {
        let Some(Ok(line)) = lines.next() else { break };
        if let Some(v) = line.strip_prefix("export AWS_ACCESS_KEY_ID=") {
            ak = v.into();
        } else if let Some(v) = line.strip_prefix("export AWS_SECRET_ACCESS_KEY=") {
            sk = v.into();
        } else if let Some(v) = line.strip_prefix("export AWS_ENDPOINT_URL=") {
            endpoint = v.into();
            break;
        }
    }
    assert!(
        !endpoint.is_empty() && !ak.is_empty() && !sk.is_empty(),
        "the server printed its endpoint and credentials"
    );
    std::thread::spawn(move || lines.for_each(drop));
    Proc {
        child,
        endpoint,
        ak,
        sk,
    }
}

async fn call(p: &Proc, op: &str, body: Value) -> common::Answer {
    let a = common::signed_call(
        &p.endpoint,
        op,
        &body.to_string(),
        &p.ak,
        &p.sk,
        SystemTime::now(),
    )
    .await;
    common::contract::check_answer(op, &a);
    a
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
