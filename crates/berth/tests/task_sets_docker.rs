//! Task sets on the real Docker Engine, driven through the AWS CLI as a blue/green tool drives
//! them.
//! - EXTERNAL: a blue set at 100 %, a green one at 50 % then 100 % and made PRIMARY, blue
//!   scaled to 0 and deleted, the service scaled and deleted; each set keeps
//!   ceil(desiredCount × scale) tasks running.
//! - CODE_DEPLOY behind Berth's load balancer: the service's own PRIMARY set on the blue target
//!   group, a green set on the green group checked through a test listener, traffic shifted
//!   by weights then wholly, green made PRIMARY and blue deleted, under continuous load with
//!   not one failed request.
//!
//! ECS's errors for the rest. Needs Docker (BERTH_SKIP_DOCKER=1 skips it explicitly).

#![allow(clippy::unwrap_used)]

mod common;

use common::lb::{client, get, wait_for, web_definition, Elb, Load};
use common::{
    aws_cli, aws_json, docker_available, docker_cleanup, free_port, wait_joined, TestAgent,
    TestServer, BUSYBOX,
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
            "ext",
            "--desired-count",
            "1",
            "--task-definition",
            "web:1",
            "--deployment-controller",
            "type=EXTERNAL",
        ],
        "taskDefinition belongs to the task sets",
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
        "Task sets are only supported for services that use the EXTERNAL or CODE_DEPLOY deployment controller.",
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
        "--propagate-tags",
        "SERVICE",
        "--tags",
        "key=team,value=web",
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
        "--include",
        "TAGS",
    ]);
    for t in described["tasks"].as_array().unwrap() {
        assert_eq!(
            t["tags"],
            json!([{"key": "team", "value": "web"}]),
            "a task set's task takes the service's tags (propagateTags SERVICE): {t}"
        );
    }
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

/// The task set whose status is `status`.
fn with_status<'a>(sets: &'a [Value], status: &str) -> Option<&'a Value> {
    sets.iter().find(|t| t["status"] == status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_code_deploy_service_shifts_traffic_from_blue_to_green_without_a_failed_request() {
    if !docker_available() {
        return;
    }
    let Some(bin) = aws_cli() else { return };
    let s = TestServer::start().await;
    s.spawn_service_loop();
    let cli = Cli {
        bin: bin.clone(),
        s: &s,
    };
    let elb = Elb { cli: bin, s: &s };
    cli.ok(&["create-cluster", "--cluster-name", "default"]);
    let dir = tempfile::tempdir().unwrap();
    let agent = TestAgent::start(&s, TestAgent::config(&s, dir.path())).await;
    let instance = wait_joined(&agent).await;
    for v in ["1", "2"] {
        s.ok("RegisterTaskDefinition", web_definition("web", v))
            .await;
    }
    // Production traffic on one listener, test traffic on another: CodeDeploy's layout.
    let lb = elb.load_balancer("web");
    let blue_group = elb.target_group("blue");
    let green_group = elb.target_group("green");
    let (prod_port, test_port) = (free_port(), free_port());
    let prod = elb.listener(&lb, prod_port, &blue_group);
    elb.listener(&lb, test_port, &green_group);

    // ECS's refusals: a CODE_DEPLOY service needs a revision, and is not a daemon.
    cli.err(
        &[
            "create-service",
            "--cluster",
            "default",
            "--service-name",
            "web",
            "--desired-count",
            "2",
            "--deployment-controller",
            "type=CODE_DEPLOY",
        ],
        "taskDefinition is required",
    );
    cli.err(
        &[
            "create-service",
            "--cluster",
            "default",
            "--service-name",
            "web",
            "--task-definition",
            "web:1",
            "--scheduling-strategy",
            "DAEMON",
            "--deployment-controller",
            "type=CODE_DEPLOY",
        ],
        "The CODE_DEPLOY deployment controller does not support the DAEMON scheduling strategy.",
    );

    let lb_of = |group: &str| format!("targetGroupArn={group},containerName=web,containerPort=80");
    let created = cli.ok(&[
        "create-service",
        "--cluster",
        "default",
        "--service-name",
        "web",
        "--desired-count",
        "2",
        "--task-definition",
        "web:1",
        "--health-check-grace-period-seconds",
        "30",
        "--load-balancers",
        &lb_of(&blue_group),
        "--deployment-controller",
        "type=CODE_DEPLOY",
    ]);
    let svc = &created["service"];
    assert_eq!(svc["deployments"], json!([]), "{svc}");
    let sets = svc["taskSets"].as_array().unwrap();
    assert_eq!(sets.len(), 1, "the service's own first task set: {svc}");
    let blue = &sets[0];
    assert_eq!(blue["status"], "PRIMARY");
    assert_eq!(blue["computedDesiredCount"], 2);
    assert_eq!(blue["taskDefinition"], svc["taskDefinition"]);
    assert_eq!(
        blue["loadBalancers"][0]["targetGroupArn"],
        blue_group.as_str()
    );
    let blue_id = blue["id"].as_str().unwrap().to_string();
    cli.wait_sets(90, "blue steady at 2", |sets| {
        with_status(sets, "PRIMARY")
            .is_some_and(|t| t["runningCount"] == 2 && t["stabilityStatus"] == "STEADY_STATE")
    })
    .await;
    assert_eq!(
        elb.healthy(&blue_group),
        2,
        "a set is steady once its targets are healthy"
    );
    let c = client();
    assert_eq!(
        get(&c, prod_port, "/", None).await.unwrap(),
        (200, "web-1".into())
    );

    // A new revision goes through a new task set, not UpdateService.
    let refused = cli.err(
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
    assert!(
        refused.contains("Unable to update task definition on services with a CODE_DEPLOY deployment controller. Use AWS CodeDeploy to trigger a new deployment."),
        "ECS's words first: {refused}"
    );

    let load = Load::start(prod_port);
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
        "--load-balancers",
        &lb_of(&green_group),
    ]);
    let green_id = green["taskSet"]["id"].as_str().unwrap().to_string();
    assert_eq!(green["taskSet"]["status"], "ACTIVE");
    cli.wait_sets(90, "green steady at 2", |sets| steady(sets, "green", 2))
        .await;
    assert_eq!(elb.healthy(&green_group), 2);
    assert_eq!(
        get(&c, test_port, "/", None).await.unwrap(),
        (200, "web-2".into()),
        "the test listener reaches green before any production traffic does"
    );

    // Shift: half (ELB hands each group its weight of every run of consecutive requests, so
    // 1:1 alternates), then all of production's traffic.
    let forward = |blue_weight: u32, green_weight: u32| {
        json!([{"Type": "forward", "ForwardConfig": {"TargetGroups": [
            {"TargetGroupArn": blue_group, "Weight": blue_weight},
            {"TargetGroupArn": green_group, "Weight": green_weight}]}}])
        .to_string()
    };
    elb.call(&[
        "modify-listener",
        "--listener-arn",
        &prod,
        "--default-actions",
        &forward(1, 1),
    ]);
    let mut answers = std::collections::BTreeSet::new();
    for _ in 0..50 {
        answers.insert(get(&c, prod_port, "/", None).await.unwrap().1);
    }
    assert_eq!(
        answers.into_iter().collect::<Vec<_>>(),
        ["web-1", "web-2"],
        "a 50/50 split reaches both sets"
    );
    elb.call(&[
        "modify-listener",
        "--listener-arn",
        &prod,
        "--default-actions",
        &forward(0, 100),
    ]);
    for _ in 0..6 {
        assert_eq!(
            get(&c, prod_port, "/", None).await.unwrap(),
            (200, "web-2".into())
        );
    }

    // Green becomes PRIMARY; blue is deleted (as CodeDeploy ends a deployment) and drains.
    cli.ok(&[
        "update-service-primary-task-set",
        "--cluster",
        "default",
        "--service",
        "web",
        "--primary-task-set",
        &green_id,
    ]);
    let deleted = cli.ok(&[
        "delete-task-set",
        "--cluster",
        "default",
        "--service",
        "web",
        "--task-set",
        &blue_id,
        "--force",
    ]);
    assert_eq!(deleted["taskSet"]["status"], "DRAINING");
    cli.wait_sets(90, "blue gone", |sets| {
        sets.len() == 1
            && with_status(sets, "PRIMARY").is_some_and(|t| t["id"] == green_id.as_str())
    })
    .await;
    assert!(
        elb.registered(&blue_group).is_empty(),
        "blue's targets left their group"
    );
    let seen = load.stop().await;
    assert!(
        seen.ok > 100,
        "the load ran through the shift ({} requests)",
        seen.ok
    );
    assert_eq!(
        seen.failures,
        Vec::<String>::new(),
        "requests failed during the blue/green shift"
    );
    assert!(
        seen.bodies.contains_key("web-1") && seen.bodies.contains_key("web-2"),
        "the load saw blue, then green: {:?}",
        seen.bodies
    );

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
        "the service shows what its PRIMARY set runs: {svc}"
    );
    assert_eq!(
        svc["loadBalancers"][0]["targetGroupArn"],
        green_group.as_str()
    );
    assert_eq!(svc["runningCount"], 2, "{svc}");

    // Deleting the service drains the last set's targets too.
    cli.ok(&[
        "delete-service",
        "--cluster",
        "default",
        "--service",
        "web",
        "--force",
    ]);
    wait_for("green's targets gone", 90, || {
        elb.registered(&green_group).is_empty()
    })
    .await;
    agent.stop().await;
    docker_cleanup(&instance);
    s.stop().await;
}
