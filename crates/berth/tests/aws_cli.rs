//! The real AWS CLI (`pip install awscli`) against Berth. `.ci/run` installs it into a venv and
//! sets BERTH_AWS_CLI; without it this test fails loudly unless BERTH_SKIP_AWS_CLI=1.
#![allow(clippy::unwrap_used)]

mod common;
use common::{aws_cli, TestServer};
use serde_json::Value;

struct Cli<'a> {
    bin: String,
    s: &'a TestServer,
    secret: String,
}

impl Cli<'_> {
    /// Runs `aws ecs ARGS`; Ok(json) on success, Err(stderr) on failure.
    fn run(&self, args: &[&str]) -> Result<Value, String> {
        common::aws_json(&self.bin, self.s, &self.secret, "ecs", args)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_cli_main_path_and_errors() {
    let Some(bin) = aws_cli() else { return };
    let s = TestServer::start().await;
    let cli = Cli {
        bin: bin.clone(),
        s: &s,
        secret: s.secret_key.clone(),
    };
    let run = |args: &[&str]| cli.run(args);

    let c = tokio::task::block_in_place(|| {
        run(&[
            "create-cluster",
            "--cluster-name",
            "cli",
            "--tags",
            "key=team,value=web",
        ])
    })
    .unwrap();
    assert_eq!(c["cluster"]["status"], "ACTIVE");
    let d = tokio::task::block_in_place(|| {
        run(&[
            "describe-clusters",
            "--clusters",
            "cli",
            "ghost",
            "--include",
            "TAGS",
        ])
    })
    .unwrap();
    assert_eq!(d["clusters"][0]["tags"][0]["key"], "team");
    assert_eq!(d["failures"][0]["reason"], "MISSING");

    let file = s.dir.path().join("web.json");
    std::fs::write(&file, r#"{"family":"cliweb","networkMode":"bridge","containerDefinitions":[{"name":"web","image":"busybox","memory":64,
        "portMappings":[{"containerPort":80,"hostPort":0}],"environment":[{"name":"A","value":"1"}]}]}"#).unwrap();
    let input = format!("file://{}", file.display());
    let r = tokio::task::block_in_place(|| {
        run(&["register-task-definition", "--cli-input-json", &input])
    })
    .unwrap();
    assert_eq!(r["taskDefinition"]["revision"], 1);
    assert_eq!(
        r["taskDefinition"]["containerDefinitions"][0]["environment"][0]["name"],
        "A"
    );
    let r = tokio::task::block_in_place(|| {
        run(&[
            "describe-task-definition",
            "--task-definition",
            "cliweb:1",
            "--include",
            "TAGS",
        ])
    })
    .unwrap();
    assert_eq!(r["taskDefinition"]["family"], "cliweb");
    let l =
        tokio::task::block_in_place(|| run(&["list-task-definitions", "--family-prefix", "cli"]))
            .unwrap();
    assert_eq!(
        l["taskDefinitionArns"][0],
        "arn:aws:ecs:us-east-1:000000000000:task-definition/cliweb:1"
    );
    // The CLI's own paginator follows nextToken.
    for i in 0..3 {
        tokio::task::block_in_place(|| {
            run(&["create-cluster", "--cluster-name", &format!("p{i}")])
        })
        .unwrap();
    }
    let all = tokio::task::block_in_place(|| run(&["list-clusters", "--page-size", "1"])).unwrap();
    assert_eq!(all["clusterArns"].as_array().unwrap().len(), 4, "{all}");
    tokio::task::block_in_place(|| {
        run(&[
            "deregister-task-definition",
            "--task-definition",
            "cliweb:1",
        ])
    })
    .unwrap();
    let del = tokio::task::block_in_place(|| {
        run(&["delete-task-definitions", "--task-definitions", "cliweb:1"])
    })
    .unwrap();
    assert_eq!(del["taskDefinitions"][0]["status"], "DELETE_IN_PROGRESS");
    tokio::task::block_in_place(|| {
        run(&[
            "tag-resource",
            "--resource-arn",
            "arn:aws:ecs:us-east-1:000000000000:cluster/cli",
            "--tags",
            "key=a,value=b",
        ])
    })
    .unwrap();
    let t = tokio::task::block_in_place(|| {
        run(&[
            "list-tags-for-resource",
            "--resource-arn",
            "arn:aws:ecs:us-east-1:000000000000:cluster/cli",
        ])
    })
    .unwrap();
    assert_eq!(t["tags"].as_array().unwrap().len(), 2);
    let st = tokio::task::block_in_place(|| {
        run(&[
            "list-account-settings",
            "--effective-settings",
            "--name",
            "taskLongArnFormat",
        ])
    })
    .unwrap();
    assert_eq!(st["settings"][0]["value"], "enabled");
    let del = tokio::task::block_in_place(|| run(&["delete-cluster", "--cluster", "cli"])).unwrap();
    assert_eq!(del["cluster"]["status"], "INACTIVE");

    // Errors as the CLI reports them.
    let e =
        tokio::task::block_in_place(|| run(&["delete-cluster", "--cluster", "ghost"])).unwrap_err();
    assert!(e.contains("ClusterNotFoundException"), "{e}");
    let e = tokio::task::block_in_place(|| {
        run(&["describe-task-definition", "--task-definition", "ghost"])
    })
    .unwrap_err();
    assert!(
        e.contains("(ClientException)") && e.contains("Unable to describe task definition."),
        "{e}"
    );
    let bad = Cli {
        bin,
        s: &s,
        secret: "wrong".into(),
    };
    let e = tokio::task::block_in_place(|| bad.run(&["list-clusters"])).unwrap_err();
    assert!(e.contains("InvalidSignatureException"), "{e}");
    s.stop().await;
}

/// The task path through the CLI: an agent on the real Docker Engine, run-task, the CLI's own
/// waiters, stop-task.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn aws_cli_runs_and_stops_a_task_on_docker() {
    let Some(bin) = aws_cli() else { return };
    if !common::docker_available() {
        return;
    }
    let s = TestServer::start().await;
    s.ok(
        "CreateCluster",
        serde_json::json!({"clusterName": "default"}),
    )
    .await;
    let agent_dir = tempfile::tempdir().unwrap();
    let agent = common::TestAgent::start(&s, common::TestAgent::config(&s, agent_dir.path())).await;
    let instance = common::wait_joined(&agent).await;
    let cli = Cli {
        bin,
        s: &s,
        secret: s.secret_key.clone(),
    };
    let run = |args: &[&str]| tokio::task::block_in_place(|| cli.run(args));

    let listed = run(&["list-container-instances", "--cluster", "default"]).unwrap();
    assert_eq!(listed["containerInstanceArns"][0], instance.as_str());
    let defs = format!(
        r#"[{{"name":"app","image":"{}","memory":32,"command":["sleep","600"],"stopTimeout":2}}]"#,
        common::BUSYBOX
    );
    run(&[
        "register-task-definition",
        "--family",
        "clitask",
        "--container-definitions",
        &defs,
    ])
    .unwrap();
    let r = run(&[
        "run-task",
        "--cluster",
        "default",
        "--task-definition",
        "clitask",
        "--started-by",
        "cli",
    ])
    .unwrap();
    assert_eq!(r["failures"], serde_json::json!([]), "{r:#}");
    let arn = r["tasks"][0]["taskArn"].as_str().unwrap().to_string();
    run(&[
        "wait",
        "tasks-running",
        "--cluster",
        "default",
        "--tasks",
        &arn,
    ])
    .expect("aws ecs wait tasks-running");
    let d = run(&["describe-tasks", "--cluster", "default", "--tasks", &arn]).unwrap();
    assert_eq!(d["tasks"][0]["lastStatus"], "RUNNING");
    assert_eq!(d["tasks"][0]["containers"][0]["lastStatus"], "RUNNING");
    let ci = run(&[
        "describe-container-instances",
        "--cluster",
        "default",
        "--container-instances",
        &instance,
    ])
    .unwrap();
    assert_eq!(ci["containerInstances"][0]["runningTasksCount"], 1);
    assert_eq!(ci["containerInstances"][0]["agentConnected"], true);
    run(&[
        "stop-task",
        "--cluster",
        "default",
        "--task",
        &arn,
        "--reason",
        "cli says stop",
    ])
    .unwrap();
    run(&[
        "wait",
        "tasks-stopped",
        "--cluster",
        "default",
        "--tasks",
        &arn,
    ])
    .expect("aws ecs wait tasks-stopped");
    let d = run(&["describe-tasks", "--cluster", "default", "--tasks", &arn]).unwrap();
    assert_eq!(d["tasks"][0]["stoppedReason"], "cli says stop");
    let err = run(&[
        "run-task",
        "--cluster",
        "default",
        "--task-definition",
        "clitask",
        "--count",
        "11",
    ])
    .unwrap_err();
    assert!(err.contains("InvalidParameterException"), "{err}");
    agent.stop().await;
    common::docker_cleanup(&instance);
    s.stop().await;
}
