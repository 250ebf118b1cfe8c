//! Service deployments and revisions on the real Docker Engine, through the AWS CLI: a service's
//! rolling deployments reported as ECS reports them (IN_PROGRESS → SUCCESSFUL, the revision each
//! replaced), and StopServiceDeployment rolling a stuck deployment back (ROLLBACK_IN_PROGRESS →
//! ROLLBACK_SUCCESSFUL), with ECS's errors. Needs Docker (BERTH_SKIP_DOCKER=1 skips it).

#![allow(clippy::unwrap_used)]

mod common;

use common::{
    aws_cli, aws_json, docker_available, docker_cleanup, wait_joined, TestAgent, TestServer,
    BUSYBOX,
};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// `aws ecs ARGS` as JSON, which must succeed.
fn ecs(cli: &str, s: &TestServer, args: &[&str]) -> Value {
    aws_json(cli, s, &s.secret_key, "ecs", args).unwrap_or_else(|e| panic!("aws ecs {args:?}: {e}"))
}

/// The service's deployments, newest first, until `pred` holds (at most `secs`).
async fn wait_deployments(
    cli: &str,
    s: &TestServer,
    secs: u64,
    what: &str,
    pred: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let list = tokio::task::block_in_place(|| {
            ecs(
                cli,
                s,
                &[
                    "list-service-deployments",
                    "--cluster",
                    "default",
                    "--service",
                    "web",
                ],
            )
        });
        let items = list["serviceDeployments"].as_array().unwrap().clone();
        if pred(&items) {
            return items;
        }
        assert!(
            Instant::now() < deadline,
            "not '{what}' within {secs} s: {items:#?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn statuses(items: &[Value]) -> Vec<&str> {
    items
        .iter()
        .map(|d| d["status"].as_str().unwrap_or(""))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployments_are_reported_and_a_stuck_one_is_rolled_back() {
    if !docker_available() {
        return;
    }
    let Some(cli) = aws_cli() else { return };
    let s = TestServer::start().await;
    s.spawn_service_loop();
    s.ok("CreateCluster", json!({"clusterName": "default"}))
        .await;
    let dir = tempfile::tempdir().unwrap();
    let agent = TestAgent::start(&s, TestAgent::config(&s, dir.path())).await;
    let instance = wait_joined(&agent).await;
    for image in [BUSYBOX, BUSYBOX, "berth-test/does-not-exist:1"] {
        s.ok(
            "RegisterTaskDefinition",
            json!({"family": "web", "containerDefinitions": [{"name": "app", "image": image,
                   "memory": 16, "command": ["sleep", "600"], "stopTimeout": 1}]}),
        )
        .await;
    }
    s.ok(
        "CreateService",
        json!({"cluster": "default", "serviceName": "web", "taskDefinition": "web:1", "desiredCount": 1,
               "deploymentConfiguration": {"minimumHealthyPercent": 100, "maximumPercent": 200}}),
    )
    .await;
    let first = wait_deployments(&cli, &s, 60, "the first deployment done", |d| {
        statuses(d) == ["SUCCESSFUL"]
    })
    .await;
    let first_arn = first[0]["serviceDeploymentArn"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        first_arn.starts_with("arn:aws:ecs:us-east-1:")
            && first_arn.contains(":service-deployment/default/web/"),
        "{first_arn}"
    );

    // A new revision: in progress, then successful, having replaced the first.
    s.ok(
        "UpdateService",
        json!({"cluster": "default", "service": "web", "taskDefinition": "web:2"}),
    )
    .await;
    let both = wait_deployments(&cli, &s, 60, "the second deployment done", |d| {
        statuses(d) == ["SUCCESSFUL", "SUCCESSFUL"]
    })
    .await;
    let second_arn = both[0]["serviceDeploymentArn"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(second_arn, first_arn, "newest first: {both:#?}");
    let described = tokio::task::block_in_place(|| {
        ecs(
            &cli,
            &s,
            &[
                "describe-service-deployments",
                "--service-deployment-arns",
                &second_arn,
                &format!("{first_arn}-nope"),
            ],
        )
    });
    let d = &described["serviceDeployments"][0];
    assert_eq!(d["status"], "SUCCESSFUL", "{described:#}");
    assert!(
        d["finishedAt"].is_number() || d["finishedAt"].is_string(),
        "{d:#}"
    );
    assert_eq!(
        described["failures"][0]["reason"], "MISSING",
        "{described:#}"
    );
    let source = d["sourceServiceRevisions"][0]["arn"]
        .as_str()
        .unwrap()
        .to_string();
    let target = d["targetServiceRevision"]["arn"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(d["targetServiceRevision"]["requestedTaskCount"], 1, "{d:#}");
    let revisions = tokio::task::block_in_place(|| {
        ecs(
            &cli,
            &s,
            &[
                "describe-service-revisions",
                "--service-revision-arns",
                &source,
                &target,
            ],
        )
    });
    let tds: Vec<&str> = revisions["serviceRevisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r["taskDefinition"]
                .as_str()
                .unwrap()
                .rsplit('/')
                .next()
                .unwrap()
        })
        .collect();
    assert_eq!(tds, ["web:1", "web:2"], "{revisions:#}");

    // A finished deployment cannot be stopped; an unknown one is not found.
    let e = aws_json(
        &cli,
        &s,
        &s.secret_key,
        "ecs",
        &[
            "stop-service-deployment",
            "--service-deployment-arn",
            &second_arn,
        ],
    )
    .unwrap_err();
    assert!(e.contains("ConflictException"), "{e}");
    let nope = second_arn.replace("/web/", "/nope/");
    let e = aws_json(
        &cli,
        &s,
        &s.secret_key,
        "ecs",
        &["stop-service-deployment", "--service-deployment-arn", &nope],
    )
    .unwrap_err();
    assert!(e.contains("ServiceDeploymentNotFoundException"), "{e}");

    // A revision whose image does not exist never completes: stopping it rolls back to web:2.
    s.ok(
        "UpdateService",
        json!({"cluster": "default", "service": "web", "taskDefinition": "web:3"}),
    )
    .await;
    let stuck = wait_deployments(&cli, &s, 30, "the third deployment in progress", |d| {
        statuses(d).first() == Some(&"IN_PROGRESS") && d.len() == 3
    })
    .await;
    let stuck_arn = stuck[0]["serviceDeploymentArn"]
        .as_str()
        .unwrap()
        .to_string();
    let e = aws_json(
        &cli,
        &s,
        &s.secret_key,
        "ecs",
        &[
            "stop-service-deployment",
            "--service-deployment-arn",
            &stuck_arn,
            "--stop-type",
            "ABORT",
        ],
    )
    .unwrap_err();
    assert!(
        e.contains("InvalidParameterException") && e.contains("ROLLBACK"),
        "{e}"
    );
    let stopped = tokio::task::block_in_place(|| {
        ecs(
            &cli,
            &s,
            &[
                "stop-service-deployment",
                "--service-deployment-arn",
                &stuck_arn,
            ],
        )
    });
    assert_eq!(stopped["serviceDeploymentArn"], stuck_arn.as_str());
    let after = wait_deployments(&cli, &s, 60, "the rollback done", |d| {
        d.iter().any(|x| {
            x["serviceDeploymentArn"] == stuck_arn.as_str() && x["status"] == "ROLLBACK_SUCCESSFUL"
        })
    })
    .await;
    assert_eq!(
        after.len(),
        4,
        "the rollback is a deployment of its own: {after:#?}"
    );
    assert_eq!(after[0]["status"], "SUCCESSFUL", "{after:#?}");
    let svc = s
        .ok(
            "DescribeServices",
            json!({"cluster": "default", "services": ["web"]}),
        )
        .await;
    assert!(
        svc["services"][0]["taskDefinition"]
            .as_str()
            .unwrap()
            .ends_with("web:2"),
        "{svc:#}"
    );
    let rolled = tokio::task::block_in_place(|| {
        ecs(
            &cli,
            &s,
            &[
                "describe-service-deployments",
                "--service-deployment-arns",
                &stuck_arn,
            ],
        )
    });
    let r = &rolled["serviceDeployments"][0];
    assert_eq!(
        r["rollback"]["serviceRevisionArn"], after[0]["targetServiceRevisionArn"],
        "{r:#}"
    );
    assert!(
        r["statusReason"]
            .as_str()
            .unwrap_or("")
            .contains("StopServiceDeployment"),
        "{r:#}"
    );
    // Filters: by status.
    let only = tokio::task::block_in_place(|| {
        ecs(
            &cli,
            &s,
            &[
                "list-service-deployments",
                "--cluster",
                "default",
                "--service",
                "web",
                "--status",
                "ROLLBACK_SUCCESSFUL",
            ],
        )
    });
    assert_eq!(
        only["serviceDeployments"].as_array().unwrap().len(),
        1,
        "{only:#}"
    );
    let e = aws_json(
        &cli,
        &s,
        &s.secret_key,
        "ecs",
        &[
            "list-service-deployments",
            "--cluster",
            "default",
            "--service",
            "nope",
        ],
    )
    .unwrap_err();
    assert!(e.contains("ServiceNotFoundException"), "{e}");

    s.ok(
        "UpdateService",
        json!({"cluster": "default", "service": "web", "desiredCount": 0}),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    agent.stop().await;
    docker_cleanup(&instance);
    s.stop().await;
}
