//! `berth plan`: the what-if report from a cluster file and a workload file, through the real
//! binary.
#![allow(clippy::unwrap_used)]

use std::process::Command;

fn plan(cluster: &str, workload: &str) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let c = dir.path().join("cluster.json");
    let w = dir.path().join("workload.json");
    std::fs::write(&c, cluster).unwrap();
    std::fs::write(&w, workload).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["plan", "--cluster"])
        .arg(&c)
        .arg("--workload")
        .arg(&w)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const CLUSTER: &str = r#"{"instances": [
  {"id": "i-a1", "cpu": 4096, "memory": 8192, "attributes": {"ecs.availability-zone": "zone-a", "ecs.instance-type": "m5.xlarge"}},
  {"id": "i-a2", "cpu": 4096, "memory": 8192, "attributes": {"ecs.availability-zone": "zone-a", "ecs.instance-type": "c5.xlarge"}},
  {"id": "i-b1", "cpu": 4096, "memory": 8192, "attributes": {"ecs.availability-zone": "zone-b", "ecs.instance-type": "m5.xlarge"}}
]}"#;

#[test]
fn plan_reports_where_tasks_go_and_what_does_not_fit() {
    let (ok, out, err) = plan(
        CLUSTER,
        r#"{"tasks": [
          {"name": "web", "count": 6, "cpu": 256, "memory": 512, "ports": [80],
           "placementStrategy": [{"type": "spread", "field": "attribute:ecs.availability-zone"}]},
          {"name": "batch", "count": 40, "cpu": 512, "memory": 1024,
           "placementConstraints": [{"type": "memberOf", "expression": "attribute:ecs.instance-type =~ m5.*"}],
           "placementStrategy": [{"type": "binpack", "field": "memory"}]}
        ]}"#,
    );
    assert!(ok, "{err}");
    assert!(out.contains("web: 3 of 6 placed on 3 instances"), "{out}");
    assert!(out.contains("3 do not fit: RESOURCE:PORTS on 3"), "{out}");
    // 4096 - 256 CPU left on each m5: seven 512-unit copies each.
    assert!(
        out.contains("batch: 14 of 40 placed on 2 instances"),
        "{out}"
    );
    assert!(
        out.contains("MemberOf placement constraint unsatisfied. on 1"),
        "{out}"
    );
    assert!(out.contains("not everything fits"), "{out}");
}

#[test]
fn plan_reads_a_live_snapshot_from_describe_container_instances() {
    let snapshot = r#"{"containerInstances": [{
        "containerInstanceArn": "arn:aws:ecs:us-east-1:0:container-instance/default/abc",
        "ec2InstanceId": "i-0abc", "status": "ACTIVE", "agentConnected": true,
        "remainingResources": [
            {"name": "CPU", "type": "INTEGER", "integerValue": 1024},
            {"name": "MEMORY", "type": "INTEGER", "integerValue": 1000},
            {"name": "PORTS", "type": "STRINGSET", "stringSetValue": ["22"]}],
        "attributes": [{"name": "ecs.availability-zone", "value": "us-east-1a"}]}], "failures": []}"#;
    let (ok, out, err) = plan(
        snapshot,
        r#"{"tasks": [{"name": "api", "count": 5, "cpu": 100, "memory": 300}]}"#,
    );
    assert!(ok, "{err}");
    assert!(out.contains("api: 3 of 5 placed on 1 instances"), "{out}");
    assert!(out.contains("RESOURCE:MEMORY on 1"), "{out}");
}

#[test]
fn plan_refuses_bad_input_with_a_clear_error() {
    let (ok, _, err) = plan("{}", r#"{"tasks": []}"#);
    assert!(!ok);
    assert!(err.contains("needs \"instances\""), "{err}");
    let (ok, _, err) = plan(
        CLUSTER,
        r#"{"tasks": [{"name": "x", "placementConstraints": [{"type": "memberOf", "expression": "attribute:a =="}]}]}"#,
    );
    assert!(!ok);
    assert!(
        err.contains("x: memberOf expression") && err.contains("position"),
        "{err}"
    );
    let (ok, _, err) = plan(CLUSTER, "not json");
    assert!(!ok);
    assert!(err.contains("is not valid JSON"), "{err}");
}
