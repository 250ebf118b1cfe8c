//! Several `berth server` processes on one three-member etcd: every server serves the API,
//! exactly one leads (holds the leader key and runs the reconcilers), and when the leader is
//! killed with SIGKILL another takes over within twice the lease's TTL and carries on the
//! reconcilers' work. On real Docker, an agent polling a follower is known to the leader
//! through the store (its task is never taken for lost), and when its server dies it moves to
//! the next it knows, keeps its task, and takes new ones from the leader. `BERTH_SKIP_ETCD=1` skips these explicitly (and
//! `BERTH_SKIP_DOCKER=1` the agent's).

#![allow(clippy::unwrap_used)]

mod common;

use berth_store::local_etcd::LocalEtcd;
use berth_store::{Etcd, EtcdOptions};
use common::ha::{self, leader, ok};
use common::process::{spawn, KillOnDrop, Proc};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const TTL_SECS: u64 = 2;

/// Skipped with `BERTH_SKIP_ETCD=1`, and in the suite's second run on etcd
/// (`BERTH_TEST_STORE=etcd`): these start etcd clusters of their own either way.
fn skip() -> bool {
    std::env::var("BERTH_SKIP_ETCD").as_deref() == Ok("1") || common::on_etcd()
}

/// `n` servers on `url`'s etcd, with a lease of `TTL_SECS` and agents gone after
/// `agent_timeout` seconds.
fn servers(dir: &std::path::Path, url: &str, n: usize, agent_timeout: u64) -> Vec<Proc> {
    ha::servers(dir, &vec![url.to_string(); n], TTL_SECS, agent_timeout)
}

async fn wait_leader(etcd: &Etcd, servers: &[Proc]) -> usize {
    ha::wait_leader(etcd, servers, Duration::from_secs(20)).await
}

async fn describe(p: &Proc, name: &str) -> Value {
    ok(
        p,
        "DescribeServices",
        json!({"cluster": "ha", "services": [name]}),
    )
    .await["services"][0]
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_is_killed_and_another_server_carries_on_within_twice_the_ttl() {
    if skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cluster = LocalEtcd::start(&dir.path().join("etcd"), 3).unwrap_or_else(|e| panic!("{e}"));
    let url = cluster.url();
    let etcd = Etcd::connect(EtcdOptions::parse(&url).unwrap())
        .await
        .unwrap();
    let mut servers = servers(dir.path(), &url, 3, 60);
    // They share one store: one admin key, printed by each.
    assert!(servers.iter().all(|p| p.sk == servers[0].sk));
    // Exactly one leads.
    let li = wait_leader(&etcd, &servers).await;
    let first = leader(&etcd).await.unwrap();

    // Any server serves the API; the leader's reconciler acts on what a follower was told.
    let follower = &servers[(li + 1) % 3];
    ok(follower, "CreateCluster", json!({"clusterName": "ha"})).await;
    ok(follower, "RegisterTaskDefinition", common::task_def("web")).await;
    ok(
        follower,
        "CreateService",
        json!({"cluster": "ha", "serviceName": "one", "taskDefinition": "web", "desiredCount": 1}),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let svc = describe(&servers[(li + 2) % 3], "one").await;
        if svc["events"].to_string().contains("unable to place a task") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the leader never reconciled the service: {svc}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // SIGKILL the leader: its lease runs out, another server takes the key.
    let killed = Instant::now();
    servers[li].child.kill().unwrap();
    servers[li].child.wait().unwrap();
    let next = loop {
        if let Some(l) = leader(&etcd).await.filter(|l| *l != first) {
            break l;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(TTL_SECS * 2 + 2),
            "no new leader within twice the TTL"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let failover = killed.elapsed();
    eprintln!(
        "failover: {:.2} s (lease TTL {TTL_SECS} s)",
        failover.as_secs_f64()
    );
    assert!(
        failover <= Duration::from_secs(TTL_SECS * 2),
        "a new leader within twice the TTL, not {failover:?}"
    );
    let ni = servers
        .iter()
        .position(|p| p.endpoint.ends_with(&next))
        .unwrap();
    assert_ne!(ni, li);

    // The new leader carries on: a deleted service is drained to INACTIVE by its reconciler.
    let asked = &servers[3 - li - ni];
    ok(
        asked,
        "DeleteService",
        json!({"cluster": "ha", "service": "one", "force": true}),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let svc = describe(&servers[ni], "one").await;
        if svc["status"] == "INACTIVE" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new leader did not reconcile: {svc}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A leader that stops hands over at once (it revokes its lease).
    let before = Instant::now();
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &servers[ni].child.id().to_string()])
        .status();
    servers[ni].child.wait().unwrap();
    let last = &servers[3 - li - ni];
    let deadline = before + Duration::from_secs(TTL_SECS);
    loop {
        if leader(&etcd)
            .await
            .is_some_and(|l| last.endpoint.ends_with(&l))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a stopping leader's successor waits out no TTL"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for p in &mut servers {
        let _ = p.child.kill();
        let _ = p.child.wait();
    }
}

async fn tasks(p: &Proc, status: &str) -> Vec<String> {
    let v = ok(
        p,
        "ListTasks",
        json!({"cluster": "default", "serviceName": "web", "desiredStatus": status}),
    )
    .await;
    v["taskArns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect()
}

async fn running(p: &Proc) -> Vec<String> {
    let arns = tasks(p, "RUNNING").await;
    if arns.is_empty() {
        return arns;
    }
    let d = ok(
        p,
        "DescribeTasks",
        json!({"cluster": "default", "tasks": arns}),
    )
    .await;
    d["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["lastStatus"] == "RUNNING")
        .map(|t| t["taskArn"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_on_a_follower_is_known_to_the_leader_and_moves_when_its_server_dies() {
    if skip() || !common::docker_available() {
        return;
    }
    // Longer than the agent's poll (20 s): a poll is a heartbeat.
    const AGENT_TIMEOUT: u64 = 25;
    let dir = tempfile::tempdir().unwrap();
    let cluster = LocalEtcd::start(&dir.path().join("etcd"), 3).unwrap_or_else(|e| panic!("{e}"));
    let url = cluster.url();
    let etcd = Etcd::connect(EtcdOptions::parse(&url).unwrap())
        .await
        .unwrap();
    let started = Instant::now();
    let mut servers = servers(dir.path(), &url, 2, AGENT_TIMEOUT);
    let li = wait_leader(&etcd, &servers).await;
    let fi = 1 - li;
    let (l, f) = (&servers[li], &servers[fi]);
    ok(l, "CreateCluster", json!({"clusterName": "default"})).await;

    // The agent knows both servers, the follower first: the leader never hears it itself.
    let token = std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
        .args([
            "join-token",
            "--server",
            &l.endpoint,
            "--cluster",
            "default",
        ])
        .env("AWS_ACCESS_KEY_ID", &l.ak)
        .env("AWS_SECRET_ACCESS_KEY", &l.sk)
        .output()
        .unwrap();
    assert!(token.status.success(), "berth join-token: {token:?}");
    let token = String::from_utf8_lossy(&token.stdout).trim().to_string();
    let agent_dir = tempfile::tempdir().unwrap();
    let both = format!("{},{}", f.endpoint, l.endpoint);
    let mut agent = KillOnDrop(
        std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
            .args([
                "agent",
                "--server",
                &both,
                "--cluster",
                "default",
                "--token",
                &token,
            ])
            .arg("--data-dir")
            .arg(agent_dir.path())
            .env(
                "BERTH_LOG",
                std::env::var("BERTH_TEST_SERVER_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let instance = loop {
        let v = ok(f, "ListContainerInstances", json!({"cluster": "default"})).await;
        if let Some(a) = v["containerInstanceArns"][0].as_str() {
            break a.to_string();
        }
        assert!(Instant::now() < deadline, "the agent did not join");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    ok(
        f,
        "RegisterTaskDefinition",
        json!({"family": "web", "containerDefinitions": [{
            "name": "app", "image": common::BUSYBOX, "memory": 16,
            "command": ["sleep", "600"], "stopTimeout": 1}]}),
    )
    .await;
    ok(
        f,
        "CreateService",
        json!({"cluster": "default", "serviceName": "web", "taskDefinition": "web", "desiredCount": 1}),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let task = loop {
        if let Some(t) = running(f).await.pop() {
            break t;
        }
        assert!(Instant::now() < deadline, "the task did not start");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    // Past the agent timeout since the leader started: only the store tells it that the
    // agent, which has only ever polled the follower, is alive.
    let since = started.elapsed();
    if since < Duration::from_secs(AGENT_TIMEOUT + 3) {
        tokio::time::sleep(Duration::from_secs(AGENT_TIMEOUT + 3) - since).await;
    }
    let d = ok(
        l,
        "DescribeContainerInstances",
        json!({"cluster": "default", "containerInstances": [instance]}),
    )
    .await;
    assert_eq!(
        d["containerInstances"][0]["agentConnected"], true,
        "the leader knows the follower's agent: {d}"
    );
    assert_eq!(
        running(l).await,
        vec![task.clone()],
        "the leader kept the task"
    );
    assert!(tasks(l, "STOPPED").await.is_empty(), "nothing was replaced");

    // The agent's server dies: it moves to the leader, its task stands.
    servers[fi].child.kill().unwrap();
    servers[fi].child.wait().unwrap();
    let f = &servers[li];
    tokio::time::sleep(Duration::from_secs(3)).await;
    let d = ok(
        f,
        "DescribeContainerInstances",
        json!({"cluster": "default", "containerInstances": [instance]}),
    )
    .await;
    assert_eq!(
        d["containerInstances"][0]["agentConnected"], true,
        "the agent moved to the surviving server: {d}"
    );
    assert_eq!(
        leader(&etcd).await.map(|l| f.endpoint.ends_with(&l)),
        Some(true),
        "the leader led throughout"
    );
    assert_eq!(running(f).await, vec![task.clone()], "the task was kept");
    assert!(
        tasks(f, "STOPPED").await.is_empty(),
        "nothing was stopped or started twice"
    );

    // The leader places on the agent that now polls it.
    ok(
        f,
        "UpdateService",
        json!({"cluster": "default", "service": "web", "desiredCount": 2}),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = running(f).await;
        if now.len() == 2 {
            assert!(now.contains(&task));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the leader's new task did not start: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &agent.0.id().to_string()])
        .status();
    let _ = agent.0.wait();
    common::docker_cleanup(&instance);

    // Deregistered, the instance leaves no presence record behind.
    let records = || async {
        use berth_store::Store;
        etcd.range("", None, None)
            .await
            .unwrap()
            .into_iter()
            .filter(|kv| kv.key.contains("presence/"))
            .collect::<Vec<_>>()
    };
    let presence = || async { records().await.len() };
    let shared = records().await;
    assert_eq!(shared.len(), 1, "the agent's presence is shared");
    ok(
        f,
        "DeregisterContainerInstance",
        json!({"cluster": "default", "containerInstance": instance, "force": true}),
    )
    .await;
    assert_eq!(
        presence().await,
        0,
        "deregistration removed the presence record"
    );
    // A poll in flight during the deregistration that shares the presence again leaves a
    // record of an INACTIVE instance: the leader's housekeeping (every 2 s here) removes it.
    {
        use berth_store::Store;
        etcd.txn(berth_store::Txn::new().put(shared[0].key.clone(), shared[0].value.clone()))
            .await
            .unwrap();
    }
    assert_eq!(presence().await, 1);
    ha::eventually(
        Duration::from_secs(30),
        "the leader's housekeeping purges a deregistered instance's presence",
        || async {
            match presence().await {
                0 => Ok(()),
                n => Err(format!("{n} presence records left")),
            }
        },
    )
    .await;
    for p in &mut servers {
        let _ = p.child.kill();
        let _ = p.child.wait();
    }
}

/// Two servers on one etcd with one blob directory (and one registry key): an image pushed
/// through one server's registry is pulled through the other's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_pushed_through_one_server_is_pulled_through_another() {
    use sha2::{Digest, Sha256};
    if skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cluster = LocalEtcd::start(&dir.path().join("etcd"), 1).unwrap_or_else(|e| panic!("{e}"));
    let url = cluster.url();
    let blobs = dir.path().join("blobs");
    let key = dir.path().join("registry.key");
    let servers: Vec<Proc> = (0..2)
        .map(|i| {
            spawn(
                &[
                    "server",
                    "--listen",
                    "127.0.0.1:0",
                    "--store",
                    &url,
                    "--blobs-dir",
                    blobs.to_str().unwrap(),
                    "--registry-key-file",
                    key.to_str().unwrap(),
                ],
                &dir.path().join(format!("server{i}")),
            )
        })
        .collect();
    let (a, b) = (&servers[0], &servers[1]);
    let created = common::signed_ecr_call(
        &a.endpoint,
        "CreateRepository",
        &json!({"repositoryName": "app"}),
        &a.ak,
        &a.sk,
    )
    .await;
    assert_eq!(created.status, 200, "{}", created.body);

    let push = common::Reg::basic(&a.registry, &a.ak, &a.sk);
    let digest = |b: &[u8]| format!("sha256:{}", hex::encode(Sha256::digest(b)));
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let layer = b"a layer of bytes pushed through server A".to_vec();
    for blob in [&config[..], &layer[..]] {
        let start = push.req("POST", "/v2/app/blobs/uploads/", &[], b"").await;
        assert_eq!(start.status, 202, "{:?}", start.body);
        let location = start.headers["location"].to_str().unwrap().to_string();
        let sep = if location.contains('?') { '&' } else { '?' };
        let put = push
            .req(
                "PUT",
                &format!("{location}{sep}digest={}", digest(blob)),
                &[("content-type", "application/octet-stream")],
                blob,
            )
            .await;
        assert_eq!(put.status, 201, "{:?}", put.body);
    }
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": digest(config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": digest(&layer), "size": layer.len()}]
    })
    .to_string();
    let put = push
        .req(
            "PUT",
            "/v2/app/manifests/v1",
            &[("content-type", "application/vnd.oci.image.manifest.v1+json")],
            manifest.as_bytes(),
        )
        .await;
    assert_eq!(put.status, 201, "{:?}", put.body);

    let pull = common::Reg::basic(&b.registry, &b.ak, &b.sk);
    let got = pull
        .req(
            "GET",
            "/v2/app/manifests/v1",
            &[("accept", "application/vnd.oci.image.manifest.v1+json")],
            b"",
        )
        .await;
    assert_eq!(got.status, 200, "{:?}", got.body);
    assert_eq!(&got.body[..], manifest.as_bytes());
    let got = pull
        .req(
            "GET",
            &format!("/v2/app/blobs/{}", digest(&layer)),
            &[],
            b"",
        )
        .await;
    assert_eq!(got.status, 200, "{:?}", got.body);
    assert_eq!(
        &got.body[..],
        &layer[..],
        "the layer, through the other server"
    );
}

/// `berth server` on an etcd that serves clients over TLS only and checks their certificates:
/// with `etcds://`, `--etcd-ca`, `--etcd-cert` and `--etcd-key` it serves the API; without a
/// CA it refuses to start, naming the flag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_reaches_etcd_over_tls_with_a_client_certificate() {
    if skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let certs = berth_store::local_etcd::Certs::make(dir.path()).unwrap_or_else(|e| panic!("{e}"));
    let cluster = LocalEtcd::start_with(&dir.path().join("etcd"), 1, Some(certs.member()))
        .unwrap_or_else(|e| panic!("{e}"));
    let url = cluster.url();
    assert!(url.starts_with("etcds://"), "{url}");
    let path = |p: &std::path::Path| p.to_str().unwrap().to_string();
    let (ca, cert, key) = (
        path(&certs.ca),
        path(&certs.client.0),
        path(&certs.client.1),
    );
    let server = spawn(
        &[
            "server",
            "--listen",
            "127.0.0.1:0",
            "--store",
            &url,
            "--etcd-ca",
            &ca,
            "--etcd-cert",
            &cert,
            "--etcd-key",
            &key,
        ],
        &dir.path().join("server"),
    );
    ok(&server, "CreateCluster", json!({"clusterName": "tls"})).await;
    let d = ok(&server, "DescribeClusters", json!({"clusters": ["tls"]})).await;
    assert_eq!(d["clusters"][0]["status"], "ACTIVE", "{d}");

    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["server", "--listen", "127.0.0.1:0", "--store", &url])
        .arg("--data-dir")
        .arg(dir.path().join("refused"))
        .output()
        .unwrap();
    assert!(!refused.status.success(), "no CA, no server");
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("--etcd-ca"), "{err}");
}
