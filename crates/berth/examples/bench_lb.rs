//! `bench/run lb`: HTTP keep-alive load through Berth's load balancer and through HAProxy
//! (Debian's `haproxy`) in front of the same three backends, in the same run and interleaved:
//! requests per second and p50/p99 latency; then the same kind of load through a listener in
//! front of a service of three busybox httpd tasks on Docker during a rolling deployment,
//! counting failed requests.
//!
//! The backends of the first part are small hyper servers in this process (keep-alive, a
//! short body), registered as `ip` targets, so the figures are the proxies' and not a forking
//! httpd's. Last line:
//! `lb: rps=N haproxy_rps=N ratio=N p99_ms=N haproxy_p99_ms=N deploy_failed=N`.

#![allow(clippy::unwrap_used)]

mod common;

use aws_sdk_elasticloadbalancingv2 as elbv2;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use serde_json::json;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const IMAGE: &str = "berth-test/busybox:latest";

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A keep-alive HTTP backend answering a short body.
async fn backend(name: &'static str) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |_req| async move {
                    Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                        Bytes::from_static(name.as_bytes()),
                    )))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

/// What one load run measured.
#[derive(Debug, Default)]
struct Load {
    ok: usize,
    failed: usize,
    failures: Vec<String>,
    micros: Vec<u32>,
    seconds: f64,
}

impl Load {
    fn rps(&self) -> f64 {
        self.ok as f64 / self.seconds
    }
    fn percentile_ms(&mut self, p: f64) -> f64 {
        if self.micros.is_empty() {
            return 0.0;
        }
        self.micros.sort_unstable();
        let i = ((self.micros.len() as f64 - 1.0) * p).round() as usize;
        f64::from(self.micros[i]) / 1000.0
    }
}

/// `connections` keep-alive connections to `port`, each sending GET / back to back until
/// `stop` (or `duration`). A connection that fails is counted and opened again.
async fn load(
    port: u16,
    connections: usize,
    duration: Option<Duration>,
    stop: Arc<AtomicBool>,
) -> Load {
    let started = Instant::now();
    let deadline = duration.map(|d| started + d);
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut out = Load::default();
            'outer: loop {
                if stop.load(Ordering::Relaxed) || deadline.is_some_and(|d| Instant::now() >= d) {
                    break;
                }
                let stream = match tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
                    Ok(s) => s,
                    Err(e) => {
                        out.failed += 1;
                        out.failures.push(format!("connect: {e}"));
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let Ok((mut sender, conn)) =
                    hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                        .await
                else {
                    out.failed += 1;
                    continue;
                };
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                loop {
                    if stop.load(Ordering::Relaxed) || deadline.is_some_and(|d| Instant::now() >= d)
                    {
                        break 'outer;
                    }
                    let req = http::Request::get("/")
                        .header("host", format!("127.0.0.1:{port}"))
                        .body(Empty::<Bytes>::new())
                        .unwrap();
                    let t = Instant::now();
                    let result = async {
                        sender.ready().await.map_err(|e| e.to_string())?;
                        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
                        let status = resp.status().as_u16();
                        let keep = !resp
                            .headers()
                            .get("connection")
                            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
                        resp.into_body()
                            .collect()
                            .await
                            .map_err(|e| e.to_string())?;
                        Ok::<_, String>((status, keep))
                    }
                    .await;
                    match result {
                        Ok((200, keep)) => {
                            out.ok += 1;
                            out.micros
                                .push(t.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                            if !keep {
                                continue 'outer;
                            }
                        }
                        Ok((status, _)) => {
                            out.failed += 1;
                            out.failures.push(format!("status {status}"));
                        }
                        Err(e) => {
                            out.failed += 1;
                            out.failures.push(e);
                            continue 'outer;
                        }
                    }
                }
            }
            out
        }));
    }
    let mut total = Load::default();
    for t in tasks {
        let l = t.await.unwrap();
        total.ok += l.ok;
        total.failed += l.failed;
        total.failures.extend(l.failures.into_iter().take(5));
        total.micros.extend(l.micros);
    }
    total.seconds = started.elapsed().as_secs_f64();
    total
}

fn haproxy_config(port: u16, backends: &[SocketAddr]) -> String {
    let mut cfg = format!(
        "global\n  maxconn 4096\n\
         defaults\n  mode http\n  option http-keep-alive\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n\
         frontend fe\n  bind 127.0.0.1:{port}\n  default_backend be\n\
         backend be\n  balance roundrobin\n  option httpchk GET /\n"
    );
    for (i, b) in backends.iter().enumerate() {
        cfg.push_str(&format!("  server s{i} {b} check inter 5s\n"));
    }
    cfg
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    let bin = std::env::args()
        .nth(1)
        .expect("usage: bench_lb PATH_TO_BERTH");
    let connections = env_usize("BENCH_LB_CONNECTIONS", 32);
    let seconds = env_usize("BENCH_LB_SECONDS", 5) as u64;
    let rounds = env_usize("BENCH_LB_ROUNDS", 3);
    common::build_test_images();
    let dir = tempfile::tempdir().unwrap();
    let server = common::spawn(
        &bin,
        &[
            "server",
            "--listen",
            "127.0.0.1:0",
            "--lb-address",
            "127.0.0.1",
        ],
        dir.path(),
    );
    let api = common::Api::new(&server);
    let elb = elbv2::Client::from_conf(
        elbv2::Config::builder()
            .behavior_version(elbv2::config::BehaviorVersion::latest())
            .region(elbv2::config::Region::new("us-east-1"))
            .endpoint_url(&server.endpoint)
            .credentials_provider(elbv2::config::Credentials::new(
                &server.ak, &server.sk, None, None, "bench",
            ))
            .build(),
    );

    // Part 1: the same three backends behind Berth and behind HAProxy.
    let backends = vec![backend("a").await, backend("b").await, backend("c").await];
    let lb = elb
        .create_load_balancer()
        .name("bench")
        .send()
        .await
        .unwrap();
    let lb_arn = lb.load_balancers()[0]
        .load_balancer_arn()
        .unwrap()
        .to_string();
    let group = |name: &'static str, target_type: elbv2::types::TargetTypeEnum| {
        let elb = elb.clone();
        async move {
            let arn = elb
                .create_target_group()
                .name(name)
                .protocol(elbv2::types::ProtocolEnum::Http)
                .port(80)
                .target_type(target_type)
                .health_check_interval_seconds(5)
                .health_check_timeout_seconds(2)
                .healthy_threshold_count(2)
                .send()
                .await
                .unwrap()
                .target_groups()[0]
                .target_group_arn()
                .unwrap()
                .to_string();
            elb.modify_target_group_attributes()
                .target_group_arn(&arn)
                .attributes(
                    elbv2::types::TargetGroupAttribute::builder()
                        .key("deregistration_delay.timeout_seconds")
                        .value("5")
                        .build(),
                )
                .send()
                .await
                .unwrap();
            arn
        }
    };
    let forward = |g: &str| {
        elbv2::types::Action::builder()
            .r#type(elbv2::types::ActionTypeEnum::Forward)
            .target_group_arn(g)
            .build()
    };
    let ips = group("ips", elbv2::types::TargetTypeEnum::Ip).await;
    let mut reg = elb.register_targets().target_group_arn(&ips);
    for b in &backends {
        reg = reg.targets(
            elbv2::types::TargetDescription::builder()
                .id(b.ip().to_string())
                .port(i32::from(b.port()))
                .build(),
        );
    }
    reg.send().await.unwrap();
    let berth_port = free_port();
    elb.create_listener()
        .load_balancer_arn(&lb_arn)
        .protocol(elbv2::types::ProtocolEnum::Http)
        .port(i32::from(berth_port))
        .default_actions(forward(&ips))
        .send()
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let h = elb
            .describe_target_health()
            .target_group_arn(&ips)
            .send()
            .await
            .unwrap();
        let healthy = h
            .target_health_descriptions()
            .iter()
            .filter(|d| {
                d.target_health().and_then(|t| t.state())
                    == Some(&elbv2::types::TargetHealthStateEnum::Healthy)
            })
            .count();
        if healthy == 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the backends did not turn healthy"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let haproxy_port = free_port();
    let cfg_path = dir.path().join("haproxy.cfg");
    std::fs::write(&cfg_path, haproxy_config(haproxy_port, &backends)).unwrap();
    let mut haproxy = Command::new("haproxy")
        .arg("-f")
        .arg(&cfg_path)
        .stdout(Stdio::null())
        .spawn()
        .expect("haproxy (Debian's haproxy) runs");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        haproxy.try_wait().unwrap().is_none(),
        "haproxy exited at start (its complaint is above)"
    );
    // Warm both up.
    let never = Arc::new(AtomicBool::new(false));
    load(
        berth_port,
        connections,
        Some(Duration::from_secs(1)),
        never.clone(),
    )
    .await;
    load(
        haproxy_port,
        connections,
        Some(Duration::from_secs(1)),
        never.clone(),
    )
    .await;
    let (mut b_rps, mut h_rps, mut b_p50, mut h_p50, mut b_p99, mut h_p99) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    for round in 0..rounds {
        let mut b = load(
            berth_port,
            connections,
            Some(Duration::from_secs(seconds)),
            never.clone(),
        )
        .await;
        let mut h = load(
            haproxy_port,
            connections,
            Some(Duration::from_secs(seconds)),
            never.clone(),
        )
        .await;
        assert_eq!(
            b.failed, 0,
            "requests through Berth failed: {:?}",
            b.failures
        );
        assert_eq!(
            h.failed, 0,
            "requests through HAProxy failed: {:?}",
            h.failures
        );
        eprintln!(
            "round {round}: berth {:.0} req/s p50 {:.2} ms p99 {:.2} ms | haproxy {:.0} req/s p50 {:.2} ms p99 {:.2} ms",
            b.rps(),
            b.percentile_ms(0.5),
            b.percentile_ms(0.99),
            h.rps(),
            h.percentile_ms(0.5),
            h.percentile_ms(0.99)
        );
        b_rps.push(b.rps());
        h_rps.push(h.rps());
        b_p50.push(b.percentile_ms(0.5));
        h_p50.push(h.percentile_ms(0.5));
        b_p99.push(b.percentile_ms(0.99));
        h_p99.push(h.percentile_ms(0.99));
    }
    let _ = haproxy.kill();
    let _ = haproxy.wait();

    // Part 2: a service of three busybox httpd tasks, rolled out under load.
    api.call("CreateCluster", json!({"clusterName": "default"}))
        .await;
    let (mut agent, _agent_dir) = common::spawn_agent(&bin, &server, &[]);
    let tasks = group("tasks", elbv2::types::TargetTypeEnum::Instance).await;
    let deploy_port = free_port();
    elb.create_listener()
        .load_balancer_arn(&lb_arn)
        .protocol(elbv2::types::ProtocolEnum::Http)
        .port(i32::from(deploy_port))
        .default_actions(forward(&tasks))
        .send()
        .await
        .unwrap();
    let definition = |v: &str| {
        json!({"family": "web", "containerDefinitions": [{
            "name": "web", "image": IMAGE, "memory": 32, "essential": true, "stopTimeout": 2,
            "entryPoint": ["sh", "-c"],
            "command": [format!("mkdir -p /www && echo {v} > /www/index.html && exec httpd -f -p 80 -h /www")],
            "portMappings": [{"containerPort": 80, "hostPort": 0}]}]})
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while api
        .call("ListContainerInstances", json!({"cluster": "default"}))
        .await["containerInstanceArns"][0]
        .is_null()
    {
        assert!(Instant::now() < deadline, "the agent did not join");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    api.call("RegisterTaskDefinition", definition("one")).await;
    api.call(
        "CreateService",
        json!({"serviceName": "web", "taskDefinition": "web", "desiredCount": 3,
               "loadBalancers": [{"targetGroupArn": tasks, "containerName": "web", "containerPort": 80}]}),
    )
    .await;
    let steady = |want: usize| {
        let elb = elb.clone();
        let tasks = tasks.clone();
        let api = &api;
        async move {
            let deadline = Instant::now() + Duration::from_secs(180);
            loop {
                let svc = api
                    .call("DescribeServices", json!({"services": ["web"]}))
                    .await;
                let h = elb
                    .describe_target_health()
                    .target_group_arn(&tasks)
                    .send()
                    .await
                    .unwrap();
                let all = h.target_health_descriptions();
                let healthy = all
                    .iter()
                    .filter(|d| {
                        d.target_health().and_then(|t| t.state())
                            == Some(&elbv2::types::TargetHealthStateEnum::Healthy)
                    })
                    .count();
                if svc["services"][0]["deployments"].as_array().map(Vec::len) == Some(1)
                    && healthy == want
                    && all.len() == want
                {
                    return;
                }
                assert!(
                    Instant::now() < deadline,
                    "the service did not settle: {:#}",
                    svc["services"][0]["events"]
                );
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    };
    steady(3).await;
    let stop = Arc::new(AtomicBool::new(false));
    let during = tokio::spawn(load(deploy_port, 8, None, stop.clone()));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rollout = Instant::now();
    api.call("RegisterTaskDefinition", definition("two")).await;
    api.call(
        "UpdateService",
        json!({"service": "web", "taskDefinition": "web:2"}),
    )
    .await;
    steady(3).await;
    let rollout_s = rollout.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let d = during.await.unwrap();
    eprintln!(
        "rollout: {:.1} s, {} requests answered, {} failed {:?}",
        rollout_s, d.ok, d.failed, d.failures
    );
    api.call(
        "UpdateService",
        json!({"service": "web", "desiredCount": 0}),
    )
    .await;
    steady(0).await;
    let _ = agent.kill();
    let _ = agent.wait();
    server.stop();
    let _ = Command::new("sh")
        .args(["-c", "docker ps -aq --filter label=com.amazonaws.ecs.task-definition-family=web | xargs -r docker rm -f"])
        .output();

    let (rps, hrps) = (median(b_rps), median(h_rps));
    println!(
        "lb: rps={:.0} haproxy_rps={:.0} ratio={:.2} p99_ms={:.2} haproxy_p99_ms={:.2} deploy_failed={} p50_ms={:.2} haproxy_p50_ms={:.2} deploy_requests={} rollout_s={:.1}",
        rps,
        hrps,
        rps / hrps,
        median(b_p99),
        median(h_p99),
        d.failed,
        median(b_p50),
        median(h_p50),
        d.ok,
        rollout_s,
    );
}
