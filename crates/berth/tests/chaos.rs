//! Chaos on several servers: three etcd members and three `berth server` processes on
//! loopback, simulated agents on the real agent protocol (each knows every server and moves
//! on when its own does not answer), and a checker that records every acknowledged write
//! (task-definition revisions registered through whichever server answers, all along) and
//! every task an agent started and stopped. Each test kills, cuts off or restarts something,
//! checks that the service comes back to what was asked, and ends with the checker's verdict
//! (printed, then asserted): no acknowledged write lost, no task started twice, the service
//! never above its maximumPercent (or, for an agent cut off from every server, not for longer
//! than it was cut off). `BERTH_SKIP_ETCD=1` skips them; the suite's second run on etcd
//! skips them too, as they start etcd clusters of their own.

#![allow(clippy::unwrap_used)]

mod common;

use berth_store::local_etcd::LocalEtcd;
use berth_store::{Etcd, EtcdOptions};
use common::ha::{
    eventually, join_token, leader, ok, proxies, server, try_call, wait_leader, writer, Checker,
    Node, Proxy, SimAgent,
};
use common::process::Proc;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The servers' `--leader-ttl`. A leader must renew within it through whatever happens to
/// etcd meanwhile, a member's death and the election it may cause included; at 2 s a loaded
/// two-core CI machine (Docker tests beside these) sometimes did not, and the lead moved.
const TTL: u64 = 3;
const CLUSTER: &str = "chaos";

fn skip() -> bool {
    std::env::var("BERTH_SKIP_ETCD").as_deref() == Ok("1") || common::on_etcd()
}

/// Three etcd members, three servers (each through proxies of its own when asked), the
/// cluster, a task definition `web`, the agents and the checker.
/// Fields drop in order: the servers go before etcd, and etcd before its directory.
struct Plane {
    servers: Vec<Proc>,
    client: Etcd,
    etcd: LocalEtcd,
    /// Each server's etcd URL (through its proxies, if any).
    urls: Vec<String>,
    /// Per server, a proxy per etcd member (empty when the servers reach etcd directly).
    proxies: Vec<Vec<Proxy>>,
    nodes: Arc<Mutex<Vec<Node>>>,
    checker: Arc<Checker>,
    agent_timeout: u64,
    dir: tempfile::TempDir,
}

impl Plane {
    async fn start(agent_timeout: u64, through_proxies: bool) -> Plane {
        let dir = tempfile::tempdir().unwrap();
        let etcd = LocalEtcd::start(&dir.path().join("etcd"), 3).unwrap_or_else(|e| panic!("{e}"));
        let client = Etcd::connect(EtcdOptions::parse(&etcd.url()).unwrap())
            .await
            .unwrap();
        let (mut urls, mut all_proxies) = (Vec::new(), Vec::new());
        for _ in 0..3 {
            if through_proxies {
                let (p, url) = proxies(&etcd.endpoints()).await;
                all_proxies.push(p);
                urls.push(url);
            } else {
                all_proxies.push(Vec::new());
                urls.push(etcd.url());
            }
        }
        let servers: Vec<Proc> = (0..3)
            .map(|i| server(dir.path(), i, &urls[i], TTL, agent_timeout))
            .collect();
        let nodes = Arc::new(Mutex::new(servers.iter().map(Node::from).collect()));
        let plane = Plane {
            dir,
            etcd,
            client,
            servers,
            urls,
            proxies: all_proxies,
            nodes,
            checker: Arc::new(Checker::default()),
            agent_timeout,
        };
        let s = &plane.servers[0];
        ok(s, "CreateCluster", json!({ "clusterName": CLUSTER })).await;
        ok(
            s,
            "RegisterTaskDefinition",
            json!({"family": "web", "containerDefinitions": [
                {"name": "app", "image": "busybox", "memory": 64}]}),
        )
        .await;
        plane
    }

    /// `n` agents in zones a, b, c…; agent `k` tries server `k % 3` first.
    async fn agents(&self, n: usize) -> Vec<SimAgent> {
        let token = join_token(&Node::from(&self.servers[0]), CLUSTER).await;
        let mut out = Vec::new();
        for k in 0..n {
            let mut order = self.nodes.lock().unwrap().clone();
            order.rotate_left(k % 3);
            // Each agent keeps its own order, over the shared list as it changes.
            let list = Arc::new(Mutex::new(order));
            self.follow(list.clone(), k % 3);
            out.push(
                SimAgent::start(
                    &format!("{}-agent{k}", self.dir.path().display()),
                    &format!("zone-{}", (b'a' + k as u8 % 3) as char),
                    CLUSTER,
                    &token,
                    list,
                    self.checker.clone(),
                )
                .await,
            );
        }
        out
    }

    /// Keeps `list` the servers' current nodes rotated by `by` (a restarted server has a new
    /// port).
    fn follow(&self, list: Arc<Mutex<Vec<Node>>>, by: usize) {
        let nodes = self.nodes.clone();
        tokio::spawn(async move {
            // Ends with the test's runtime.
            loop {
                let mut now = nodes.lock().unwrap().clone();
                now.rotate_left(by);
                *list.lock().unwrap() = now;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
    }

    fn node(&self, i: usize) -> Node {
        Node::from(&self.servers[i])
    }

    /// Kills server `i` with SIGKILL.
    fn kill(&mut self, i: usize) {
        self.servers[i].child.kill().unwrap();
        self.servers[i].child.wait().unwrap();
    }

    /// Starts server `i` again on its own data, and tells the agents and writer.
    fn restart(&mut self, i: usize) {
        self.servers[i] = server(self.dir.path(), i, &self.urls[i], TTL, self.agent_timeout);
        self.nodes.lock().unwrap()[i] = Node::from(&self.servers[i]);
    }

    async fn leader(&self) -> usize {
        wait_leader(&self.client, &self.servers, Duration::from_secs(30)).await
    }

    /// Waits until a server other than `old` leads: which, and how long it took from `since`.
    async fn next_leader(&self, old: &str, since: Instant, within: Duration) -> (usize, Duration) {
        let deadline = since + within;
        loop {
            if let Some(l) = leader(&self.client).await.filter(|l| l != old) {
                if let Some(i) = self.servers.iter().position(|p| p.endpoint.ends_with(&l)) {
                    return (i, since.elapsed());
                }
            }
            assert!(
                Instant::now() < deadline,
                "no new leader within {within:?} (the old one: {old})"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn leader_addr(&self, i: usize) -> String {
        self.servers[i]
            .endpoint
            .trim_start_matches("http://")
            .to_string()
    }

    fn writer(&self, stop: &Arc<AtomicBool>) -> tokio::task::JoinHandle<usize> {
        writer(self.nodes.clone(), self.checker.clone(), stop.clone())
    }

    /// The checker's verdict over the servers in `alive`, printed, then asserted.
    async fn verdict(&self, alive: &[usize]) -> common::ha::Verdict {
        let nodes: Vec<Node> = alive.iter().map(|i| self.node(*i)).collect();
        let v = self.checker.verdict(&nodes).await;
        eprintln!("{v}");
        assert!(v.holds(), "{v}");
        assert!(v.acked > 0, "the writer had writes acknowledged");
        v
    }
}

async fn describe(n: &Node, service: &str) -> Option<Value> {
    match try_call(
        n,
        "DescribeServices",
        &json!({"cluster": CLUSTER, "services": [service]}),
    )
    .await
    {
        Some((200, v)) => Some(v["services"][0].clone()),
        _ => None,
    }
}

/// The service as the first server that answers describes it.
async fn service(p: &Plane, name: &str) -> Value {
    for i in 0..p.servers.len() {
        if let Some(v) = describe(&p.node(i), name).await {
            return v;
        }
    }
    panic!("no server describes {name}");
}

/// Sends `op` to the servers in turn until one acknowledges it.
async fn call_any(p: &Plane, op: &str, body: Value) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        for i in 0..p.servers.len() {
            if let Some((200, v)) = try_call(&p.node(i), op, &body).await {
                return v;
            }
        }
        assert!(Instant::now() < deadline, "no server took {op} {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until the agents run exactly `n` tasks of `web` and the service says the same, with
/// one deployment on `revision`.
async fn steady(p: &Plane, n: usize, revision: u32, within: Duration) {
    let checker = p.checker.clone();
    eventually(within, &format!("web steady at {n} on :{revision}"), || {
        let checker = checker.clone();
        async move {
            let s = service(p, "web").await;
            let running = checker.running("web");
            let deployments = s["deployments"].as_array().cloned().unwrap_or_default();
            let on = s["taskDefinition"]
                .as_str()
                .is_some_and(|t| t.ends_with(&format!("web:{revision}")));
            if running == n && s["runningCount"] == n && deployments.len() == 1 && on {
                Ok(())
            } else {
                let each: Vec<String> = deployments
                    .iter()
                    .map(|d| {
                        format!(
                            "{} {} {} desired {} running {} pending {} failed {}",
                            d["status"],
                            d["taskDefinition"],
                            d["rolloutState"],
                            d["desiredCount"],
                            d["runningCount"],
                            d["pendingCount"],
                            d["failedTasks"]
                        )
                    })
                    .collect();
                Err(format!(
                    "agents run {running}; service runningCount {} on {}, deployments {each:?}",
                    s["runningCount"], s["taskDefinition"],
                ))
            }
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_killed_during_a_rolling_deployment_is_followed_by_one_that_finishes_it() {
    if skip() {
        return;
    }
    let mut p = Plane::start(60, false).await;
    let agents = p.agents(4).await;
    let s0 = p.node(0);
    ok(
        &p.servers[0],
        "CreateService",
        json!({"cluster": CLUSTER, "serviceName": "web", "taskDefinition": "web:1",
               "desiredCount": 6,
               "deploymentConfiguration": {"minimumHealthyPercent": 100, "maximumPercent": 150}}),
    )
    .await;
    steady(&p, 6, 1, Duration::from_secs(60)).await;

    let stop = Arc::new(AtomicBool::new(false));
    let writing = p.writer(&stop);
    ok(
        &p.servers[0],
        "RegisterTaskDefinition",
        json!({"family": "web", "containerDefinitions": [
            {"name": "app", "image": "busybox", "memory": 64, "environment": [{"name": "V", "value": "2"}]}]}),
    )
    .await;
    // The rollout is held part way: the agents start three tasks of the new revision (the
    // first step, maximumPercent 150 of 6) and leave the next three PENDING.
    p.checker.hold("web", 2, 3);
    let li = p.leader().await;
    let old = p.leader_addr(li);
    call_any(
        &p,
        "UpdateService",
        json!({"cluster": CLUSTER, "service": "web", "taskDefinition": "web:2"}),
    )
    .await;
    eventually(
        Duration::from_secs(30),
        "the rollout held part way",
        || async {
            let s = describe(&s0, "web").await.unwrap_or_default();
            let primary = s["deployments"]
                .as_array()
                .and_then(|d| d.iter().find(|d| d["status"] == "PRIMARY").cloned())
                .unwrap_or_default();
            let (running, pending) = (
                primary["runningCount"].as_i64().unwrap_or(0),
                primary["pendingCount"].as_i64().unwrap_or(0),
            );
            if running == 3 && pending == 3 {
                Ok(())
            } else {
                Err(format!("primary running {running}, pending {pending}"))
            }
        },
    )
    .await;
    let killed = Instant::now();
    p.kill(li);
    let (ni, took) = p
        .next_leader(&old, killed, Duration::from_secs(TTL * 2 + 5))
        .await;
    eprintln!("leader {li} killed mid-rollout; server {ni} leads after {took:?} (TTL {TTL} s)");
    assert!(
        took <= Duration::from_secs(TTL * 2),
        "a new leader within twice the TTL, not {took:?}"
    );
    // The held tasks start; the new leader finishes the rollout.
    p.checker.release();
    steady(&p, 6, 2, Duration::from_secs(60)).await;
    let s = service(&p, "web").await;
    assert_eq!(s["deployments"][0]["rolloutState"], "COMPLETED", "{s}");

    stop.store(true, SeqCst);
    let failed = writing.await.unwrap();
    let alive: Vec<usize> = (0..3).filter(|i| *i != li).collect();
    let v = p.verdict(&alive).await;
    eprintln!("writes refused or unanswered (the killed server's among them): {failed}");
    assert!(
        v.peak["web"] <= 9,
        "never above maximumPercent 150% of 6: {v}"
    );
    for a in agents {
        a.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_etcd_is_replaced_and_an_etcd_member_dies_without_a_lost_write() {
    if skip() {
        return;
    }
    let mut p = Plane::start(60, true).await;
    let agents = p.agents(3).await;
    ok(
        &p.servers[0],
        "CreateService",
        json!({"cluster": CLUSTER, "serviceName": "web", "taskDefinition": "web",
               "desiredCount": 3}),
    )
    .await;
    steady(&p, 3, 1, Duration::from_secs(60)).await;
    let stop = Arc::new(AtomicBool::new(false));
    let writing = p.writer(&stop);

    // The leader loses etcd (every member): its lease runs out and another server leads.
    let li = p.leader().await;
    let old = p.leader_addr(li);
    let cut = Instant::now();
    for x in &p.proxies[li] {
        x.cut();
    }
    let (ni, took) = p
        .next_leader(&old, cut, Duration::from_secs(TTL * 2 + 5))
        .await;
    eprintln!("leader {li} cut off from etcd; server {ni} leads after {took:?}");
    assert!(
        took <= Duration::from_secs(TTL * 2),
        "within twice the TTL, not {took:?}"
    );
    // The new leader reconciles what a server that still reaches etcd was told.
    ok(
        &p.servers[ni],
        "UpdateService",
        json!({"cluster": CLUSTER, "service": "web", "desiredCount": 5}),
    )
    .await;
    steady(&p, 5, 1, Duration::from_secs(60)).await;

    // Healed, the old leader serves again (as a follower), and an etcd member dies.
    for x in &p.proxies[li] {
        x.heal();
    }
    p.etcd.kill(0);
    eventually(
        Duration::from_secs(30),
        "the healed server answers",
        || async {
            match describe(&p.node(li), "web").await {
                Some(s) if s["desiredCount"] == 5 => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    ok(
        &p.servers[li],
        "UpdateService",
        json!({"cluster": CLUSTER, "service": "web", "desiredCount": 4}),
    )
    .await;
    steady(&p, 4, 1, Duration::from_secs(60)).await;
    assert_eq!(
        leader(&p.client).await.as_deref(),
        Some(p.leader_addr(ni).as_str()),
        "the new leader kept the lead through the heal and the member's death"
    );
    stop.store(true, SeqCst);
    let failed = writing.await.unwrap();
    eprintln!("writes refused or unanswered (the cut-off server's among them): {failed}");
    let v = p.verdict(&[0, 1, 2]).await;
    assert!(v.peak["web"] <= 5, "never above the 5 asked for: {v}");
    for a in agents {
        a.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_server_restarted_in_turn_under_load_loses_nothing() {
    if skip() {
        return;
    }
    let mut p = Plane::start(60, false).await;
    let agents = p.agents(3).await;
    ok(
        &p.servers[0],
        "CreateService",
        json!({"cluster": CLUSTER, "serviceName": "web", "taskDefinition": "web",
               "desiredCount": 3}),
    )
    .await;
    steady(&p, 3, 1, Duration::from_secs(60)).await;
    let stop = Arc::new(AtomicBool::new(false));
    let writing = p.writer(&stop);
    for i in 0..3 {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &p.servers[i].child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while p.servers[i].child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = p.servers[i].child.kill();
                panic!("server {i} did not stop within 30 s of SIGTERM");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        p.restart(i);
        let want = if i % 2 == 0 { 4 } else { 3 };
        call_any(
            &p,
            "UpdateService",
            json!({"cluster": CLUSTER, "service": "web", "desiredCount": want}),
        )
        .await;
        steady(&p, want, 1, Duration::from_secs(60)).await;
        eprintln!("server {i} restarted; the service is steady at {want}");
    }
    stop.store(true, SeqCst);
    let failed = writing.await.unwrap();
    eprintln!("writes refused or unanswered (to the stopping servers): {failed}");
    let v = p.verdict(&[0, 1, 2]).await;
    assert!(v.peak["web"] <= 4, "never above the 4 asked for: {v}");
    for a in agents {
        a.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposed_leader_that_wakes_up_late_starts_nothing() {
    if skip() {
        return;
    }
    let p = Plane::start(60, false).await;
    let agents = p.agents(3).await;
    ok(
        &p.servers[0],
        "CreateService",
        json!({"cluster": CLUSTER, "serviceName": "web", "taskDefinition": "web",
               "desiredCount": 2,
               "deploymentConfiguration": {"minimumHealthyPercent": 50, "maximumPercent": 100}}),
    )
    .await;
    steady(&p, 2, 1, Duration::from_secs(60)).await;
    let stop = Arc::new(AtomicBool::new(false));
    let writing = p.writer(&stop);
    let li = p.leader().await;
    let old = p.leader_addr(li);
    let pid = p.servers[li].child.id().to_string();
    // The leader freezes (SIGSTOP) just after it was asked to scale: its pass may be half
    // done, and it holds what it read.
    let other = (li + 1) % 3;
    ok(
        &p.servers[other],
        "UpdateService",
        json!({"cluster": CLUSTER, "service": "web", "desiredCount": 4}),
    )
    .await;
    let _ = std::process::Command::new("kill")
        .args(["-STOP", &pid])
        .status();
    let frozen = Instant::now();
    let (ni, took) = p
        .next_leader(&old, frozen, Duration::from_secs(TTL * 2 + 5))
        .await;
    eprintln!("leader {li} frozen; server {ni} leads after {took:?}");
    // The new leader scales the service down again, then the old one wakes up.
    ok(
        &p.servers[ni],
        "UpdateService",
        json!({"cluster": CLUSTER, "service": "web", "desiredCount": 3}),
    )
    .await;
    steady(&p, 3, 1, Duration::from_secs(60)).await;
    let starts = p.checker.starts();
    let _ = std::process::Command::new("kill")
        .args(["-CONT", &pid])
        .status();
    // Twice the TTL awake: whatever it had begun, none of its writes may land.
    tokio::time::sleep(Duration::from_secs(TTL * 2)).await;
    steady(&p, 3, 1, Duration::from_secs(30)).await;
    assert_eq!(
        p.checker.starts(),
        starts,
        "the woken server placed a task (the service was steady at 3 before it woke)"
    );
    assert_eq!(
        leader(&p.client).await.as_deref(),
        Some(p.leader_addr(ni).as_str()),
        "the woken server did not take the lead back"
    );
    // It serves again, as a follower that sees the new leader's work.
    let s = describe(&p.node(li), "web")
        .await
        .expect("the woken server answers");
    assert_eq!(s["desiredCount"], 3, "{s}");
    stop.store(true, SeqCst);
    writing.await.unwrap();
    let v = p.verdict(&[0, 1, 2]).await;
    assert!(v.peak["web"] <= 4, "never above the most asked for: {v}");
    for a in agents {
        a.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_cut_off_from_every_server_has_its_replaced_task_stopped_at_its_first_poll() {
    if skip() {
        return;
    }
    const AGENT_TIMEOUT: u64 = 4;
    let p = Plane::start(AGENT_TIMEOUT, false).await;
    let agents = p.agents(3).await;
    ok(
        &p.servers[0],
        "CreateService",
        json!({"cluster": CLUSTER, "serviceName": "web", "taskDefinition": "web",
               "desiredCount": 3,
               "placementStrategy": [{"type": "spread", "field": "attribute:ecs.availability-zone"}]}),
    )
    .await;
    steady(&p, 3, 1, Duration::from_secs(60)).await;
    let stop = Arc::new(AtomicBool::new(false));
    let writing = p.writer(&stop);

    // Agent 0 loses every server. Past the agent timeout its task is replaced elsewhere; it
    // still runs its copy (it cannot know).
    let cut = Instant::now();
    agents[0].cut();
    let checker = p.checker.clone();
    let plane = &p;
    eventually(
        Duration::from_secs(AGENT_TIMEOUT + 30),
        "the cut-off agent's task replaced",
        || {
            let checker = checker.clone();
            async move {
                let s = service(plane, "web").await;
                let running = checker.running("web");
                if running == 4 && s["runningCount"] == 3 {
                    Ok(())
                } else {
                    Err(format!(
                        "agents run {running}, service runningCount {}",
                        s["runningCount"]
                    ))
                }
            }
        },
    )
    .await;
    // The agent was last heard at its last poll, held up to a second; a server that heard
    // it shares that at most every quarter of the timeout, so the leader may know it that
    // much older.
    let quiet = agents[0].last_sent().elapsed();
    eprintln!(
        "replaced {quiet:?} after the agent's last poll, {:?} after it was cut off (agent timeout {AGENT_TIMEOUT} s)",
        cut.elapsed()
    );
    assert!(
        quiet + Duration::from_secs(AGENT_TIMEOUT) / 4 >= Duration::from_secs(AGENT_TIMEOUT),
        "nothing replaced before the agent timeout: {quiet:?} after its last poll"
    );
    let d = call_any(
        &p,
        "DescribeContainerInstances",
        json!({"cluster": CLUSTER, "containerInstances": [agents[0].arn]}),
    )
    .await;
    assert_eq!(d["containerInstances"][0]["agentConnected"], false, "{d}");

    // Back: the copy that was replaced stops at its first poll.
    let healed = Instant::now();
    agents[0].heal();
    eventually(
        Duration::from_secs(20),
        "the agent's first poll",
        || async {
            match agents[0].polls_since_heal() {
                0 => Err("no poll yet".into()),
                _ => Ok(()),
            }
        },
    )
    .await;
    assert_eq!(
        p.checker.running("web"),
        3,
        "the replaced copy stopped at the agent's first poll"
    );
    let longest = p.checker.longest_above("web", 3);
    let cut_for = healed - cut;
    eprintln!("above 3 tasks for {longest:?}; cut off for {cut_for:?}");
    assert!(
        longest <= cut_for + Duration::from_secs(2),
        "above the desired count only while the agent was cut off: {longest:?} > {cut_for:?}"
    );
    steady(&p, 3, 1, Duration::from_secs(30)).await;
    stop.store(true, SeqCst);
    writing.await.unwrap();
    p.verdict(&[0, 1, 2]).await;
    for a in agents {
        a.stop().await;
    }
}
