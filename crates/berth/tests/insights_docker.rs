//! Container Insights on the real Docker Engine: an agent samples Docker's stats of a
//! container that burns a CPU and of one that sleeps, and CloudWatch (read through
//! `aws-sdk-cloudwatch`) shows the difference under ECS's metric names, per service, family and
//! cluster; turning the cluster's `containerInsights` off stops `ECS/ContainerInsights` and
//! leaves `AWS/ECS`. Needs Docker (BERTH_SKIP_DOCKER=1 skips explicitly).

#![allow(clippy::unwrap_used)]

mod common;

use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{Dimension, Statistic};
use common::{docker_available, docker_cleanup, TestServer, BUSYBOX};
use serde_json::json;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn client(s: &TestServer) -> aws_sdk_cloudwatch::Client {
    common::sdk_client!(aws_sdk_cloudwatch, s)
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// One statistic of a metric over the last ten minutes, its periods merged (counts and sums
/// added, otherwise the largest); `None`: no data.
async fn stat(
    cw: &aws_sdk_cloudwatch::Client,
    namespace: &str,
    name: &str,
    dims: &[(&str, &str)],
    statistic: Statistic,
) -> Option<f64> {
    let out = cw
        .get_metric_statistics()
        .namespace(namespace)
        .metric_name(name)
        .set_dimensions(Some(
            dims.iter()
                .map(|(n, v)| Dimension::builder().name(*n).value(*v).build())
                .collect(),
        ))
        .start_time(DateTime::from_secs(now() - 600))
        .end_time(DateTime::from_secs(now() + 60))
        .period(600)
        .statistics(statistic.clone())
        .send()
        .await
        .unwrap();
    let points = out.datapoints();
    if points.is_empty() {
        return None;
    }
    let values = points.iter().filter_map(|p| match statistic {
        Statistic::Maximum => p.maximum(),
        Statistic::Minimum => p.minimum(),
        Statistic::SampleCount => p.sample_count(),
        Statistic::Sum => p.sum(),
        _ => p.average(),
    });
    Some(match statistic {
        Statistic::SampleCount | Statistic::Sum => values.sum(),
        _ => values.fold(f64::MIN, f64::max),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stats_move_with_cpu_use_and_follow_the_container_insights_setting() {
    if !docker_available() {
        return;
    }
    let s = TestServer::start().await;
    let (agent, instance, _agent_dir) = common::insights_agent(&s, "enabled").await;
    s.spawn_service_loop();
    s.ok(
        "RegisterTaskDefinition",
        json!({"family": "burn", "containerDefinitions": [{"name": "cpu", "image": BUSYBOX,
            "cpu": 512, "memory": 64, "command": ["sh", "-c", "while :; do :; done"],
            "stopTimeout": 1}]}),
    )
    .await;
    s.ok(
        "RegisterTaskDefinition",
        json!({"family": "idle", "containerDefinitions": [{"name": "sleep", "image": BUSYBOX,
            "memory": 32, "command": ["sleep", "600"], "stopTimeout": 1}]}),
    )
    .await;
    s.ok(
        "CreateService",
        json!({"cluster": "default", "serviceName": "burner", "taskDefinition": "burn",
               "desiredCount": 1}),
    )
    .await;
    let run = s
        .ok(
            "RunTask",
            json!({"cluster": "default", "taskDefinition": "idle"}),
        )
        .await;
    assert_eq!(run["failures"], json!([]), "{run:#}");

    let cw = client(&s);
    let ci = "ECS/ContainerInsights";
    let service = [("ClusterName", "default"), ("ServiceName", "burner")];
    let idle = [("ClusterName", "default"), ("TaskDefinitionFamily", "idle")];
    let deadline = Instant::now() + Duration::from_secs(90);
    let (busy, calm) = loop {
        let busy = stat(&cw, ci, "CpuUtilized", &service, Statistic::Maximum).await;
        let calm = stat(&cw, ci, "CpuUtilized", &idle, Statistic::Maximum).await;
        if let (Some(b), Some(c)) = (busy, calm) {
            if b > 300.0 {
                break (b, c);
            }
        }
        assert!(
            Instant::now() < deadline,
            "no CPU figure moved within 90 s: service {busy:?}, idle {calm:?}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    assert!(
        calm < busy / 3.0,
        "the sleeping task uses far less CPU ({calm}) than the burning one ({busy})"
    );
    let memory = stat(&cw, ci, "MemoryUtilized", &idle, Statistic::Maximum)
        .await
        .unwrap();
    assert!(
        memory > 0.0 && memory < 32.0,
        "a sleeping busybox uses some of its 32 MiB: {memory}"
    );
    let reserved = stat(&cw, ci, "CpuReserved", &service, Statistic::Maximum).await;
    assert_eq!(reserved, Some(512.0), "the task's reservation");
    let running = stat(&cw, ci, "RunningTaskCount", &service, Statistic::Maximum).await;
    assert_eq!(running, Some(1.0));
    let tasks = stat(
        &cw,
        ci,
        "TaskCount",
        &[("ClusterName", "default")],
        Statistic::Maximum,
    )
    .await;
    assert_eq!(tasks, Some(2.0), "the service's task and the idle one");
    let utilization = stat(
        &cw,
        "AWS/ECS",
        "CPUUtilization",
        &service,
        Statistic::Maximum,
    )
    .await
    .unwrap();
    assert!(
        utilization > 50.0,
        "a busy loop uses more than half of 512 units: {utilization}%"
    );
    // Rates need two samples.
    let deadline = Instant::now() + Duration::from_secs(30);
    while stat(&cw, ci, "NetworkRxBytes", &service, Statistic::SampleCount)
        .await
        .is_none()
    {
        assert!(Instant::now() < deadline, "no network rate within 30 s");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let names = cw
        .list_metrics()
        .namespace(ci)
        .send()
        .await
        .unwrap()
        .metrics()
        .iter()
        .filter_map(|m| m.metric_name().map(str::to_string))
        .collect::<std::collections::BTreeSet<_>>();
    for expected in [
        "CpuUtilized",
        "CpuReserved",
        "MemoryUtilized",
        "MemoryReserved",
        "NetworkRxBytes",
        "NetworkTxBytes",
        "StorageReadBytes",
        "StorageWriteBytes",
        "RunningTaskCount",
        "PendingTaskCount",
        "DesiredTaskCount",
        "DeploymentCount",
        "ServiceCount",
        "TaskCount",
        "ContainerInstanceCount",
    ] {
        assert!(names.contains(expected), "{expected} is listed: {names:?}");
    }

    // Enhanced: each container's own figures too.
    s.ok(
        "UpdateClusterSettings",
        json!({"cluster": "default",
               "settings": [{"name": "containerInsights", "value": "enhanced"}]}),
    )
    .await;
    let container = [
        ("ClusterName", "default"),
        ("ContainerName", "cpu"),
        ("ServiceName", "burner"),
    ];
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let cpu = stat(
            &cw,
            ci,
            "ContainerCpuUtilized",
            &container,
            Statistic::Maximum,
        )
        .await;
        if cpu.is_some_and(|c| c > 300.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no ContainerCpuUtilized for the burning container within 30 s: {cpu:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Off: ECS/ContainerInsights stops growing, AWS/ECS goes on.
    s.ok(
        "UpdateClusterSettings",
        json!({"cluster": "default",
               "settings": [{"name": "containerInsights", "value": "disabled"}]}),
    )
    .await;
    let cluster = [("ClusterName", "default")];
    tokio::time::sleep(Duration::from_secs(2)).await;
    let count = |ns: &'static str, name: &'static str| {
        let cw = cw.clone();
        async move {
            stat(&cw, ns, name, &cluster, Statistic::SampleCount)
                .await
                .unwrap_or(0.0)
        }
    };
    let (ci_before, ecs_before) = (
        count(ci, "TaskCount").await,
        count("AWS/ECS", "CPUReservation").await,
    );
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (ci_after, ecs_after) = (
        count(ci, "TaskCount").await,
        count("AWS/ECS", "CPUReservation").await,
    );
    assert_eq!(
        ci_after, ci_before,
        "nothing new once Container Insights is off"
    );
    assert!(ecs_after > ecs_before, "AWS/ECS is always published");

    agent.stop().await;
    docker_cleanup(&instance);
    s.stop().await;
}
