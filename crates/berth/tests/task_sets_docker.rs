//! Task sets of a service with the EXTERNAL deployment controller, on the real Docker Engine,
//! driven through the AWS CLI as a blue/green tool drives them: a blue set at 100 %, a green
//! one at 50 % then 100 % and made PRIMARY, blue scaled to 0 and deleted, the service scaled
//! and deleted; each set keeps ceil(desiredCount × scale) tasks running. ECS's errors for the
//! rest. Needs Docker (BERTH_SKIP_DOCKER=1 skips it explicitly).

#![allow(clippy::unwrap_used)]

mod common;

use common::{
    aws_cli, aws_json, docker_available, docker_cleanup, wait_joined, TestAgent, TestServer,
    BUSYBOX,
};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

struct Cli<'a> {
    bin: String,
    s: &'a TestServer,
}

impl Cli<'_> {
    fn run(&self, args: &[&str]) -> Result<Value, String> {
        tokio::task::block_in_place(|| aws_json(&self.bin, self.s, &self.s.secret_key, "ecs", args))
    }

    fn ok(&self, args: &[&str]) -> Value {
        self.run(args)
            .unwrap_or_else(|e| panic!("aws ecs {args:?} failed: {e}"))
    }

    fn err(&self, args: &[&str], code: &str) -> String {
        let e = self.run(args).expect_err("an error");
        assert!(
            e.contains(code),
            "aws ecs {args:?}: expected {code}, got {e}"
        );
        e
    }

    fn sets(&self) -> Vec<Value> {
        let d = self.ok(&[
            "describe-task-sets",
            "--cluster",
            "default",
            "--service",
            "web",
        ]);
        d["taskSets"].as_array().unwrap().clone()
    }

    /// Polls DescribeTaskSets until `pred` holds, for at most `secs`.
    async fn wait_sets(
        &self,
        secs: u64,
        what: &str,
        pred: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let sets = self.sets();
            if pred(&sets) {
                return sets;
            }
            let brief: Vec<String> = sets
                .iter()
                .map(|t| {
                    format!(
                        "{} {} want {} running {} pending {} {}",
                        t["externalId"],
                        t["status"],
                        t["computedDesiredCount"],
                        t["runningCount"],
                        t["pendingCount"],
                        t["stabilityStatus"]
                    )
                })
                .collect();
            assert!(
                Instant::now() < deadline,
                "not '{what}' within {secs} s: {brief:?}"
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
}

fn set<'a>(sets: &'a [Value], external: &str) -> Option<&'a Value> {
    sets.iter().find(|t| t["externalId"] == external)
}

fn steady(sets: &[Value], external: &str, running: i64) -> bool {
    set(sets, external).is_some_and(|t| {
        t["runningCount"] == running
            && t["computedDesiredCount"] == running
            && t["stabilityStatus"] == "STEADY_STATE"
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_external_service_runs_its_task_sets_blue_to_green() {
    if !docker_available() {
        return;
    }
    let Some(bin) = aws_cli() else { return };
    let s = TestServer::start().await;
    s.spawn_service_loop();
    let cli = Cli { bin, s: &s };
    cli.ok(&["create-cluster", "--cluster-name", "default"]);
    let dir = tempfile::tempdir().unwrap();
    let agent = TestAgent::start(&s, TestAgent::config(&s, dir.path())).await;
    let instance = wait_joined(&agent).await;
    let defs = format!(
        r#"[{{"name":"app","image":"{BUSYBOX}","memory":16,"command":["sleep","600"],"stopTimeout":1}}]"#
    );
    for _ in 0..2 {
        cli.ok(&[
            "register-task-definition",
            "--family",
            "web",
            "--container-definitions",
            &defs,
        ]);
    }

    // ECS's refusals around the controller.
    cli.err(
        &[
            "create-service",
            "--cluster",
            "default",
            "--service-name",
            "cd",
            "--desired-count",
            "1",
            "--task-definition",
            "web:1",
            "--deployment-controller",
            "type=CODE_DEPLOY",
        ],
        "UnsupportedFeatureException",
    );
    cli.ok(&[
        "create-service",
        "--cluster",
        "default",
        "--service-name",
        "plain",
        "--desired-count",
        "0",
        "--task-definition",
        "web:1",
    ]);
    cli.err(
        &[
            "create-task-set",
            "--cluster",
            "default",
            "--service",
            "plain",
            "--task-definition",
            "web:1",
        ],
        "EXTERNAL deployment controller",
    );

    let created = cli.ok(&[
        "create-service",
        "--cluster",
        "default",
        "--service-name",
        "web",
        "--desired-count",
        "2",
        "--deployment-controller",
        "type=EXTERNAL",
    ]);
    assert_eq!(
        created["service"]["deploymentController"]["type"],
        "EXTERNAL"
    );
    assert_eq!(created["service"]["deployments"], json!([]), "{created}");
    assert_eq!(created["service"]["taskSets"], json!([]));
    cli.err(
        &[
            "update-service",
            "--cluster",
            "default",
            "--service",
            "web",
            "--task-definition",
            "web:2",
        ],
        "InvalidParameterException",
    );

    // Blue: every task the service wants.
    let blue = cli.ok(&[
        "create-task-set",
        "--cluster",
        "default",
        "--service",
        "web",
        "--task-definition",
        "web:1",
        "--external-id",
        "blue",
        "--scale",
        "value=100,unit=PERCENT",
    ]);
    let blue = &blue["taskSet"];
    assert_eq!(blue["status"], "ACTIVE");
    assert_eq!(blue["computedDesiredCount"], 2);
    let blue_id = blue["id"].as_str().unwrap().to_string();
    let blue_arn = blue["taskSetArn"].as_str().unwrap().to_string();
    assert!(
        blue_arn.starts_with("arn:aws:ecs:us-east-1:000000000000:task-set/default/web/ecs-svc/"),
        "{blue_arn}"
    );
    cli.wait_sets(60, "blue steady at 2", |sets| steady(sets, "blue", 2))
        .await;

    // Green at 50 %: ceil(2 × 0.5) = 1 task beside blue's 2.
    let green = cli.ok(&[
        "create-task-set",
        "--cluster",
        "default",
        "--service",
        "web",
        "--task-definition",
        "web:2",
        "--external-id",
        "green",
        "--scale",
        "value=50,unit=PERCENT",
    ]);
    let green_id = green["taskSet"]["id"].as_str().unwrap().to_string();
    assert_eq!(green["taskSet"]["computedDesiredCount"], 1);
    cli.wait_sets(60, "green steady at 1", |sets| {
        steady(sets, "green", 1) && steady(sets, "blue", 2)
    })
    .await;
    let tasks = cli.ok(&[
        "list-tasks",
        "--cluster",
        "default",
        "--service-name",
        "web",
    ]);
    assert_eq!(tasks["taskArns"].as_array().unwrap().len(), 3, "{tasks}");
    let described = cli.ok(&[
        "describe-tasks",
        "--cluster",
        "default",
        "--tasks",
        tasks["taskArns"][0].as_str().unwrap(),
        tasks["taskArns"][1].as_str().unwrap(),
        tasks["taskArns"][2].as_str().unwrap(),
    ]);
    let mut started_by: Vec<String> = described["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["startedBy"].as_str().unwrap().to_string())
        .collect();
    started_by.sort();
    let mut want = vec![blue_id.clone(), blue_id.clone(), green_id.clone()];
    want.sort();
    assert_eq!(started_by, want, "each task is started by its task set");

    // Green becomes PRIMARY and takes the whole service.
    let primary = cli.ok(&[
        "update-service-primary-task-set",
        "--cluster",
        "default",
        "--service",
        "web",
        "--primary-task-set",
        &green_id,
    ]);
    assert_eq!(primary["taskSet"]["status"], "PRIMARY");
    let svc = cli.ok(&[
        "describe-services",
        "--cluster",
        "default",
        "--services",
        "web",
    ]);
    let svc = &svc["services"][0];
    assert!(
        svc["taskDefinition"]
            .as_str()
            .unwrap()
            .ends_with("task-definition/web:2"),
        "{svc}"
    );
    let statuses: Vec<(&str, &str)> = svc["taskSets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["externalId"].as_str().unwrap(),
                t["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert!(
        statuses.contains(&("blue", "ACTIVE")) && statuses.contains(&("green", "PRIMARY")),
        "{statuses:?}"
    );
    cli.ok(&[
        "update-task-set",
        "--cluster",
        "default",
        "--service",
        "web",
        "--task-set",
        &green_id,
        "--scale",
        "value=100,unit=PERCENT",
    ]);
    cli.wait_sets(60, "green steady at 2", |sets| steady(sets, "green", 2))
        .await;

    // Blue: refused while scaled, then scaled to 0 and deleted; it leaves once its tasks stop.
    cli.err(
        &[
            "delete-task-set",
            "--cluster",
            "default",
            "--service",
            "web",
            "--task-set",
            &blue_id,
        ],
        "scaled above 0",
    );
    cli.ok(&[
        "update-task-set",
        "--cluster",
        "default",
        "--service",
        "web",
        "--task-set",
        &blue_arn,
        "--scale",
        "value=0,unit=PERCENT",
    ]);
    cli.wait_sets(60, "blue at 0", |sets| steady(sets, "blue", 0))
        .await;
    let deleted = cli.ok(&[
        "delete-task-set",
        "--cluster",
        "default",
        "--service",
        "web",
        "--task-set",
        &blue_id,
    ]);
    assert_eq!(deleted["taskSet"]["status"], "DRAINING");
    cli.wait_sets(60, "blue gone", |sets| {
        sets.len() == 1 && set(sets, "green").is_some()
    })
    .await;
    let missing = cli.ok(&[
        "describe-task-sets",
        "--cluster",
        "default",
        "--service",
        "web",
        "--task-sets",
        &blue_id,
    ]);
    assert_eq!(missing["failures"][0]["reason"], "MISSING", "{missing}");
    cli.err(
        &[
            "update-task-set",
            "--cluster",
            "default",
            "--service",
            "web",
            "--task-set",
            &blue_id,
            "--scale",
            "value=10,unit=PERCENT",
        ],
        "TaskSetNotFoundException",
    );
    cli.err(
        &[
            "update-task-set",
            "--cluster",
            "default",
            "--service",
            "web",
            "--task-set",
            &green_id,
            "--scale",
            "value=150,unit=PERCENT",
        ],
        "InvalidParameterException",
    );

    // The service's desired count moves every set's computed count.
    cli.ok(&[
        "update-service",
        "--cluster",
        "default",
        "--service",
        "web",
        "--desired-count",
        "1",
    ]);
    cli.wait_sets(60, "green steady at 1", |sets| steady(sets, "green", 1))
        .await;
    let svc = cli.ok(&[
        "describe-services",
        "--cluster",
        "default",
        "--services",
        "web",
    ]);
    assert_eq!(svc["services"][0]["runningCount"], 1, "{svc}");

    // A set whose tasks keep failing restarts them with ECS's back-off, and says so.
    let crashing = format!(
        r#"[{{"name":"app","image":"{BUSYBOX}","memory":16,"command":["sh","-c","exit 3"]}}]"#
    );
    cli.ok(&[
        "register-task-definition",
        "--family",
        "crash",
        "--container-definitions",
        &crashing,
    ]);
    let broken = cli.ok(&[
        "create-task-set",
        "--cluster",
        "default",
        "--service",
        "web",
        "--task-definition",
        "crash:1",
        "--external-id",
        "broken",
    ]);
    let broken_id = broken["taskSet"]["id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let svc = cli.ok(&[
            "describe-services",
            "--cluster",
            "default",
            "--services",
            "web",
        ]);
        let said = svc["services"][0]["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| {
                e["message"]
                    .as_str()
                    .unwrap()
                    .contains("unable to consistently start tasks")
            });
        if said {
            break;
        }
        assert!(Instant::now() < deadline, "no back-off event: {svc}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let stopped = cli.ok(&[
        "list-tasks",
        "--cluster",
        "default",
        "--started-by",
        &broken_id,
        "--desired-status",
        "STOPPED",
    ]);
    let n = stopped["taskArns"].as_array().unwrap().len();
    assert!(
        (3..=4).contains(&n),
        "three failures start the back-off (5 s before the fourth try), not a tight loop: {n} stopped"
    );
    cli.ok(&[
        "delete-task-set",
        "--cluster",
        "default",
        "--service",
        "web",
        "--task-set",
        &broken_id,
        "--force",
    ]);

    // Deleting the service stops its task sets' tasks; it ends INACTIVE.
    cli.ok(&[
        "delete-service",
        "--cluster",
        "default",
        "--service",
        "web",
        "--force",
    ]);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let svc = cli.ok(&[
            "describe-services",
            "--cluster",
            "default",
            "--services",
            "web",
        ]);
        if svc["services"][0]["status"] == "INACTIVE" {
            assert_eq!(svc["services"][0]["taskSets"], json!([]));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the service did not end INACTIVE: {svc}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    agent.stop().await;
    docker_cleanup(&instance);
    s.stop().await;
}
